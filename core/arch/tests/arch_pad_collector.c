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

struct pa_reads pa_reads;

uint64_t pa_read_fn(void *dst, uint64_t addr, uint64_t len, uint64_t *state)
{
	struct pa_reads *r = &pa_reads;
	// *state: 0 at a hit's first call, then what the earlier calls left.
	if (*state != r->calls)
		r->bad_state++;
	if (((uint64_t)(uintptr_t)__builtin_frame_address(0) + 16) % 16)
		r->misaligned++;
	r->calls++;
	*state = r->calls;
	r->last_len = len;
	if (addr == r->fail_addr)
		return 0;
	volatile uint8_t *d = dst;
	const volatile uint8_t *s = (const volatile uint8_t *)(uintptr_t)addr;
	for (uint64_t i = 0; i < len; i++)
		d[i] = s[i];
	return 1;
}
