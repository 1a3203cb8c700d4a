/* Fuzz target: the agent-expression verifier, then the interpreter on what verifies,
 * the disassembler and the read planner. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ax/ax.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

const char *const ns_fuzz_seeds[] = {
	"\x26\x00\x07\x22\x10\x02\x1a\x27",
	"\x22\x05\x22\x00\x05\x27",
	"\x22\x01\x20\x00\x07\x22\x02\x21\x00\x09\x22\x03\x27",
	"\x22\x40\x22\x10\x0c\x22\x08\x0d\x08\x2f\x27",
	"\x21\x00\x00",
};
const size_t ns_fuzz_nseeds = sizeof(ns_fuzz_seeds) / sizeof(ns_fuzz_seeds[0]);

static uint8_t mem[256];

static int read_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	(void)ctx;
	if (addr >= sizeof(mem) || len > sizeof(mem) - addr)
		return -1;
	memcpy(dst, mem + addr, len);
	return 0;
}

static int read_reg(void *ctx, unsigned regno, uint64_t *val)
{
	(void)ctx;
	*val = regno * 8;
	return regno < 17 ? 0 : -1;
}

static int trace_mem(void *ctx, uint64_t addr, size_t len, bool nul)
{
	(void)ctx;
	(void)addr;
	(void)nul;
	return len > 1000 ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned depth;
	struct ns_err *err = ns_ax_verify(data, size, &depth);
	int64_t tsv[4] = {0};
	struct ns_ax_env env = {read_mem, read_reg, trace_mem, tsv, 4, 1000, NULL};
	struct ns_ax_result r;
	if (!err)
		ns_ax_run(data, size, &env, &r);
	ns_err_destroy(err);
	// The interpreter must also survive unverified code (bounds stay checked).
	ns_ax_run(data, size, &env, &r);
	char *text = ns_ax_disasm(data, size);
	free(text);
	// The read planner refuses what it cannot follow, and plans only in bounds.
	struct ns_ax_plan plan;
	const char *why;
	if (ns_ax_plan_reads(data, size, 17, &plan, &why)) {
		if (plan.n > NS_AX_PLAN_MAX)
			abort();
		for (unsigned i = 0; i < plan.n; i++)
			if ((plan.r[i].base == NS_AX_PLAN_READ && plan.r[i].from >= i) ||
			    (plan.r[i].base == NS_AX_PLAN_REG && plan.r[i].from >= 17))
				abort();
	} else if (!why) {
		abort();
	}
	return 0;
}
