/* Collectors for arch_pad_test, built like the agent's: -mgeneral-regs-only. */
#include "arch_pad_funcs.h"

void pa_collect_count(void *ctx, const uint64_t *regs)
{
	struct pa_counter *c = ctx;
	c->hits++;
	for (int i = 0; i < 18; i++)
		c->last[i] = regs[i];
	// The SysV ABI: rsp + 8 is 16-byte aligned at function entry.
	c->rsp_mod16 = ((uint64_t)(uintptr_t)__builtin_frame_address(0) + 16) % 16;
}

void pa_collect_nop(void *ctx, const uint64_t *regs)
{
	(void)ctx;
	(void)regs;
}
