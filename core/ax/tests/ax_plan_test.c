/* ns_ax_plan_reads against the interpreter: a planned program, run by ns_ax_run over a
 * memory where every address reads (bytes derived from the address), traces exactly
 * the blocks its plan's reads record, in order, at the addresses the plan computes
 * from the same registers and the same memory. Programs written out by hand (the
 * shapes nonstop-dap and gdb emit for collections, and ones a plan must refuse) and
 * generated at random. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ax_test_util.h"

enum { NREGS = 17, MAX_TRACES = 64 };

// Memory everywhere: byte a is a hash of a.
static uint8_t mem_byte(uint64_t a)
{
	uint64_t x = a * 0x9e3779b97f4a7c15ull;
	x ^= x >> 29;
	return (uint8_t)(x * 0xbf58476d1ce4e5b9ull >> 56);
}

static uint64_t mem_load(uint64_t a, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)mem_byte(a + i) << (8 * i);
	return v;
}

struct run {
	uint64_t regs[NREGS];
	uint64_t addr[MAX_TRACES], len[MAX_TRACES];
	unsigned n;
	bool overflow;
};

static int rd_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	(void)ctx;
	for (size_t i = 0; i < len; i++)
		((uint8_t *)dst)[i] = mem_byte(addr + i);
	return 0;
}

static int rd_reg(void *ctx, unsigned regno, uint64_t *val)
{
	struct run *r = ctx;
	if (regno >= NREGS)
		return -1;
	*val = r->regs[regno];
	return 0;
}

static int tr_mem(void *ctx, uint64_t addr, size_t len, bool nul_stop)
{
	struct run *r = ctx;
	(void)nul_stop;
	if (r->n == MAX_TRACES) {
		r->overflow = true;
		return 0;
	}
	r->addr[r->n] = addr;
	r->len[r->n++] = len;
	return 0;
}

// The plan run by hand: the blocks it records.
static void run_plan(const struct ns_ax_plan *p, struct run *r)
{
	uint64_t val[NS_AX_PLAN_MAX] = {0};
	for (unsigned i = 0; i < p->n; i++) {
		const struct ns_ax_plan_read *x = &p->r[i];
		uint64_t base = x->base == NS_AX_PLAN_REG    ? r->regs[x->from]
		                : x->base == NS_AX_PLAN_READ ? val[x->from]
		                                             : 0;
		uint64_t a = base + x->disp;
		if (x->trace)
			tr_mem(r, a, x->trace, false);
		if (x->ref)
			val[i] = mem_load(a, x->ref);
	}
}

// Both runs over the same registers: true if they trace the same blocks.
static bool same_as_interpreter(const uint8_t *code, size_t len, const struct ns_ax_plan *p,
                                uint64_t seed, bool verbose)
{
	struct run ri = {0}, rp = {0};
	for (unsigned i = 0; i < NREGS; i++)
		ri.regs[i] = rp.regs[i] = seed * (i + 1) * 0x100000001b3ull;
	struct ns_ax_env env = {rd_mem, rd_reg, tr_mem, NULL, 0, 0, &ri};
	struct ns_ax_result res;
	ns_ax_run(code, len, &env, &res);
	run_plan(p, &rp);
	bool same = res.status == NS_AX_OK && !ri.overflow && ri.n == rp.n;
	for (unsigned i = 0; same && i < ri.n; i++)
		same = ri.addr[i] == rp.addr[i] && ri.len[i] == rp.len[i];
	if (!same && verbose) {
		char *d = ns_ax_disasm(code, len);
		printf("differs (status %d, %u vs %u blocks):\n%s", (int)res.status, ri.n, rp.n,
		       d ? d : "");
		free(d);
		for (unsigned i = 0; i < p->n; i++)
			printf("  read %u: base %u from %u disp %#llx trace %u ref %u\n", i,
			       p->r[i].base, p->r[i].from, (unsigned long long)p->r[i].disp,
			       p->r[i].trace, p->r[i].ref);
	}
	return same;
}

#define CODE(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

static void check_plan(const uint8_t *code, size_t len, unsigned want_reads)
{
	struct ns_ax_plan p;
	const char *why = "";
	bool ok = ns_ax_plan_reads(code, len, NREGS, &p, &why);
	if (!ok) {
		ns_test_fail(__FILE__, __LINE__, "refused: %s", why);
		return;
	}
	NS_CHECK_INT(p.n, want_reads);
	for (uint64_t seed = 1; seed < 20; seed++)
		NS_CHECK(same_as_interpreter(code, len, &p, seed, seed == 1));
}

static void check_refused(const uint8_t *code, size_t len, const char *want_why)
{
	struct ns_ax_plan p;
	const char *why = NULL;
	NS_CHECK(!ns_ax_plan_reads(code, len, NREGS, &p, &why));
	if (!why || !strstr(why, want_why))
		ns_test_fail(__FILE__, __LINE__, "refused for \"%s\", not \"%s\"",
		             why ? why : "(nothing)", want_why);
}

NS_TEST(test_ax_plan__collect_shapes)
{
	// c->argc (reg 5 + 0x10, 4 bytes), as nonstop-dap's COLLECT programs trace it.
	check_plan(CODE(OP_REG, 0, 5, OP_C16, 0, 0x10, OP_ADD, OP_TRACE_QUICK, 4, OP_REF32,
	                OP_EXT, 32, OP_END),
	           1);
	// c->cmd->id: a pointer loaded, then a field of what it points to.
	check_plan(CODE(OP_REG, 0, 5, OP_C8, 0x28, OP_ADD, OP_TRACE_QUICK, 8, OP_REF64,
	                OP_C16, 0x01, 0x04, OP_ADD, OP_TRACE_QUICK, 4, OP_REF32, OP_EXT, 32,
	                OP_END),
	           2);
	// A global (absolute address) and a stack slot below the frame (rbp - 24).
	check_plan(CODE(OP_C32, 0, 0x40, 0x10, 0x00, OP_TRACE_QUICK, 8, OP_REF64, OP_POP,
	                OP_REG, 0, 6, OP_C8, 24, OP_SUB, OP_C8, 8, OP_TRACE, OP_END),
	           2);
	// A load that is not traced, used as the base of one that is.
	check_plan(CODE(OP_REG, 0, 3, OP_REF64, OP_C8, 8, OP_ADD, OP_TRACE16, 0, 200, OP_END),
	           2);
	// Stack shuffles and a loaded value used twice.
	check_plan(CODE(OP_REG, 0, 7, OP_DUP, OP_REF64, OP_SWAP, OP_C8, 16, OP_ADD,
	                OP_TRACE_QUICK, 2, OP_REF16, OP_PICK, 1, OP_C8, 8, OP_ADD, OP_TRACE_QUICK, 8,
	                OP_ROT, OP_POP, OP_POP, OP_END),
	           3);
}

NS_TEST(test_ax_plan__refusals)
{
	check_refused(CODE(OP_REG, 0, 5, OP_REG, 0, 6, OP_ADD, OP_REF64, OP_END), "beyond base");
	check_refused(CODE(OP_REG, 0, 5, OP_C8, 2, OP_MUL, OP_TRACE_QUICK, 4, OP_END),
	              "beyond base");
	check_refused(CODE(OP_REG, 0, 5, OP_C8, 3, OP_DIV_U, OP_END), "division");
	check_refused(CODE(OP_REG, 0, 5, OP_REG, 0, 4, OP_TRACE, OP_END), "computed");
	check_refused(CODE(OP_REG, 0, 5, OP_C8, 16, OP_TRACENZ, OP_END), "tracenz");
	check_refused(CODE(OP_REG, 0, 5, OP_IF_GOTO, 0, 9, OP_C8, 1, OP_END, OP_END), "jump");
	check_refused(CODE(OP_REG, 0, 20, OP_REF64, OP_END), "register");
	check_refused(CODE(OP_REG, 0, 5, OP_TRACE_QUICK, 0, OP_END), "0 or too many");
	check_refused(CODE(OP_REG, 0, 5, OP_REF64, OP_REF64, OP_REF64, OP_REF64, OP_REF64,
	                   OP_REF64, OP_REF64, OP_REF64, OP_REF64, OP_END),
	              "too many");
	check_refused(CODE(OP_REG, 0, 5, OP_REF64), "not verified");
}

// Random straight-line programs over the opcodes a plan may hold (and a few it must
// refuse): every program the plan accepts traces what the interpreter traces.
NS_TEST(test_ax_plan__random_programs_match_interpreter)
{
	static const uint8_t binops[] = {OP_ADD, OP_ADD, OP_ADD, OP_SUB, OP_MUL, OP_AND,
	                                 OP_LSH, OP_EQUAL, OP_LESS_U, OP_XOR};
	static const uint8_t unops[] = {OP_EXT, OP_ZERO_EXT, OP_NOT, OP_LOG_NOT};
	uint64_t x = 0x2545f4914f6cdd1dull;
	unsigned accepted = 0, refused = 0, with_reads = 0;
	for (int prog = 0; prog < 20000; prog++) {
		uint8_t code[256];
		size_t n = 0;
		int depth = 0;
		int steps = 2 + (int)(x % 24);
		for (int s = 0; s < steps && n < sizeof(code) - 16; s++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			unsigned pick = (unsigned)(x >> 40) % 16;
			if (depth == 0 || pick < 3) {
				if ((x >> 20) & 1) {
					code[n++] = OP_REG;
					code[n++] = 0;
					code[n++] = (uint8_t)(x % 18);
				} else {
					code[n++] = OP_C16;
					code[n++] = (uint8_t)(x >> 8);
					code[n++] = (uint8_t)x;
				}
				depth++;
			} else if (pick < 6 && depth >= 2) {
				code[n++] = binops[(x >> 24) % sizeof(binops)];
				depth--;
			} else if (pick < 7) {
				code[n++] = unops[(x >> 24) % sizeof(unops)];
				if (code[n - 1] == OP_EXT || code[n - 1] == OP_ZERO_EXT)
					code[n++] = (uint8_t)(8 << ((x >> 30) % 4));
			} else if (pick < 9) {
				code[n++] = OP_TRACE_QUICK;
				code[n++] = (uint8_t)(1 + (x >> 33) % 16);
			} else if (pick < 11) {
				code[n++] = (uint8_t)(OP_REF8 + (x >> 35) % 4);
			} else if (pick < 12) {
				code[n++] = OP_DUP;
				depth++;
			} else if (pick < 13 && depth >= 2) {
				code[n++] = OP_SWAP;
			} else if (pick < 14 && depth >= 3) {
				code[n++] = OP_ROT;
			} else if (pick < 15 && depth >= 2) {
				code[n++] = OP_POP;
				depth--;
			} else if (depth >= 1) {
				// trace with a constant size pushed just before
				code[n++] = OP_C8;
				code[n++] = (uint8_t)(1 + (x >> 37) % 40);
				code[n++] = OP_TRACE;
				depth--;
			}
		}
		code[n++] = OP_END;
		struct ns_ax_plan p;
		const char *why;
		if (!ns_ax_plan_reads(code, n, NREGS, &p, &why)) {
			refused++;
			continue;
		}
		accepted++;
		with_reads += p.n > 0;
		if (!same_as_interpreter(code, n, &p, x | 1, true)) {
			ns_test_fail(__FILE__, __LINE__, "program %d: the plan differs", prog);
			return;
		}
	}
	printf("random programs: %u planned (%u with reads), %u refused\n", accepted, with_reads,
	       refused);
	NS_CHECK(with_reads > 2000);
	NS_CHECK(refused > 1000);
}
