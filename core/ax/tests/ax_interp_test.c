/* Interpreter semantics, one opcode at a time, against values computed by hand from the
 * GDB manual's "Bytecode Descriptions" (top of stack on the right: "a b sub" = a-b). */
#include <stdlib.h>

#include "ax_test_util.h"

#define MEM_BASE 0x1000u

struct fake {
	uint8_t mem[32]; /* readable bytes at MEM_BASE..MEM_BASE+32 */
	uint64_t regs[NS_AX_NREGS];
	bool have_reg[NS_AX_NREGS];
	struct {
		uint64_t addr;
		size_t len;
		bool nz;
	} calls[8];
	int ncalls;
	int full_after; /* trace_mem fails once this many calls succeeded; -1: never */
	int64_t tsv[2];
};

static int fake_read_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	struct fake *f = ctx;
	if (addr < MEM_BASE || addr - MEM_BASE > sizeof(f->mem) ||
	    len > sizeof(f->mem) - (addr - MEM_BASE))
		return -1;
	memcpy(dst, f->mem + (addr - MEM_BASE), len);
	return 0;
}

static int fake_read_reg(void *ctx, unsigned regno, uint64_t *val)
{
	struct fake *f = ctx;
	if (regno >= NS_AX_NREGS || !f->have_reg[regno])
		return -1;
	*val = f->regs[regno];
	return 0;
}

static int fake_trace(void *ctx, uint64_t addr, size_t len, bool nul_stop)
{
	struct fake *f = ctx;
	if (f->full_after >= 0 && f->ncalls >= f->full_after)
		return -1;
	if (f->ncalls < 8)
		f->calls[f->ncalls] = (typeof(f->calls[0])){addr, len, nul_stop};
	f->ncalls++;
	return 0;
}

static struct fake fk;

static struct ns_ax_env env_for(struct fake *f)
{
	return (struct ns_ax_env){
	        .read_mem = fake_read_mem,
	        .read_reg = fake_read_reg,
	        .trace_mem = fake_trace,
	        .tsv = f->tsv,
	        .ntsv = 2,
	        .ctx = f,
	};
}

static void fake_reset(void)
{
	memset(&fk, 0, sizeof(fk));
	for (unsigned i = 0; i < sizeof(fk.mem); i++)
		fk.mem[i] = (uint8_t)(0x11 * (i + 1)); /* 11 22 33 44 55 66 77 88 99 aa ... */
	fk.mem[16] = 0xff;
	fk.full_after = -1;
}

/* Verify, then run @code; returns the result. */
static struct ns_ax_result run_env(const uint8_t *code, size_t len, const struct ns_ax_env *env)
{
	struct ns_ax_result r;
	memset(&r, 0xa5, sizeof(r));
	NS_CHECK_OK(ns_ax_verify(code, len, NULL));
	ns_ax_run(code, len, env, &r);
	return r;
}

static struct ns_ax_result run(const uint8_t *code, size_t len)
{
	fake_reset();
	struct ns_ax_env env = env_for(&fk);
	return run_env(code, len, &env);
}

/* Run and expect NS_AX_OK with @expect on top. */
#define CHECK_VAL(expect, ...)                                                             \
	do {                                                                               \
		struct ns_ax_result r_ = run(PROG(__VA_ARGS__));                           \
		NS_CHECK_INT(r_.status, NS_AX_OK);                                         \
		if (r_.value != (uint64_t)(expect))                                        \
			ns_test_fail(__FILE__, __LINE__,                                   \
			             "value 0x%" PRIx64 ", expected 0x%" PRIx64, r_.value, \
			             (uint64_t)(expect));                                  \
	} while (0)

NS_TEST(test_ax_interp__add_sub_mul_order)
{
	CHECK_VAL(10, OP_C8, 7, OP_C8, 3, OP_ADD, OP_END);
	CHECK_VAL(4, OP_C8, 7, OP_C8, 3, OP_SUB, OP_END);                     /* a b sub = a-b */
	CHECK_VAL(0xfffffffffffffffcull, OP_C8, 3, OP_C8, 7, OP_SUB, OP_END); /* 3-7 = -4 */
	CHECK_VAL(21, OP_C8, 7, OP_C8, 3, OP_MUL, OP_END);
	CHECK_VAL(0, C64(0xffffffffffffffffull), OP_C8, 1, OP_ADD, OP_END); /* wraps */
	CHECK_VAL(0xfffffffffffffffeull, C64(0xffffffffffffffffull), OP_C8, 2, OP_MUL, OP_END);
}

NS_TEST(test_ax_interp__div_rem_signed_unsigned)
{
	/* -7 / 2 = -3 and -7 % 2 = -1 (C99 truncation, as gdbserver computes in C) */
	CHECK_VAL(-3, C64(-7), OP_C8, 2, OP_DIV_S, OP_END);
	CHECK_VAL(-1, C64(-7), OP_C8, 2, OP_REM_S, OP_END);
	CHECK_VAL(3, C64(-7), C64(-2), OP_DIV_S, OP_END);
	CHECK_VAL(-1, C64(-7), C64(-2), OP_REM_S, OP_END);
	/* 0xfffffffffffffff9 / 2 = 0x7ffffffffffffffc rem 1 */
	CHECK_VAL(0x7ffffffffffffffcull, C64(-7), OP_C8, 2, OP_DIV_U, OP_END);
	CHECK_VAL(1, C64(-7), OP_C8, 2, OP_REM_U, OP_END);
	CHECK_VAL(3, OP_C8, 7, OP_C8, 2, OP_DIV_U, OP_END); /* operand order: a b div = a/b */
	CHECK_VAL(1, OP_C8, 7, OP_C8, 3, OP_REM_U, OP_END);
	/* INT64_MIN / -1 overflows in C: defined here as the two's-complement wrap */
	CHECK_VAL(0x8000000000000000ull, C64(0x8000000000000000ull), C64(-1), OP_DIV_S, OP_END);
	CHECK_VAL(0, C64(0x8000000000000000ull), C64(-1), OP_REM_S, OP_END);
}

NS_TEST(test_ax_interp__div_by_zero)
{
	static const uint8_t ops[] = {OP_DIV_S, OP_DIV_U, OP_REM_S, OP_REM_U};
	for (int i = 0; i < 4; i++) {
		struct ns_ax_result r = run(PROG(OP_C8, 1, OP_C8, 0, ops[i], OP_END));
		NS_CHECK_INT(r.status, NS_AX_DIV_ZERO);
		NS_CHECK_INT(r.pc, 4);
	}
}

NS_TEST(test_ax_interp__shifts)
{
	CHECK_VAL(16, OP_C8, 1, OP_C8, 4, OP_LSH, OP_END); /* a b lsh = a<<b */
	CHECK_VAL(-4, C64(-16), OP_C8, 2, OP_RSH_S, OP_END);
	CHECK_VAL(0x3ffffffffffffffcull, C64(-16), OP_C8, 2, OP_RSH_U, OP_END);
	CHECK_VAL(0x10, OP_C8, 0x80, OP_C8, 3, OP_RSH_U, OP_END);
	/* counts >= 64: 0, or all sign bits (not C's undefined behaviour) */
	CHECK_VAL(0, OP_C8, 1, OP_C8, 64, OP_LSH, OP_END);
	CHECK_VAL(0, C64(-1), OP_C8, 200, OP_RSH_U, OP_END);
	CHECK_VAL(-1, C64(-5), OP_C8, 64, OP_RSH_S, OP_END);
}

NS_TEST(test_ax_interp__compare_and_logic)
{
	CHECK_VAL(1, C64(-1), OP_C8, 1, OP_LESS_S, OP_END); /* -1 < 1 signed */
	CHECK_VAL(0, C64(-1), OP_C8, 1, OP_LESS_U, OP_END); /* 2^64-1 < 1 unsigned: no */
	CHECK_VAL(1, OP_C8, 1, C64(-1), OP_LESS_U, OP_END);
	CHECK_VAL(0, OP_C8, 5, OP_C8, 5, OP_LESS_S, OP_END);
	CHECK_VAL(1, OP_C8, 3, OP_C8, 5, OP_LESS_S, OP_END); /* a b less = a<b */
	CHECK_VAL(0, OP_C8, 5, OP_C8, 3, OP_LESS_S, OP_END);
	CHECK_VAL(1, OP_C8, 9, OP_C8, 9, OP_EQUAL, OP_END);
	CHECK_VAL(0, OP_C8, 9, OP_C8, 8, OP_EQUAL, OP_END);
	CHECK_VAL(1, OP_C8, 0, OP_LOG_NOT, OP_END);
	CHECK_VAL(0, OP_C8, 7, OP_LOG_NOT, OP_END);
	CHECK_VAL(0x0c, OP_C8, 0x3c, OP_C8, 0x0f, OP_AND, OP_END);
	CHECK_VAL(0x3f, OP_C8, 0x3c, OP_C8, 0x0f, OP_OR, OP_END);
	CHECK_VAL(0x33, OP_C8, 0x3c, OP_C8, 0x0f, OP_XOR, OP_END);
	CHECK_VAL(0xffffffffffffff00ull, OP_C8, 0xff, OP_NOT, OP_END);
}

NS_TEST(test_ax_interp__ext_and_zero_ext)
{
	CHECK_VAL(-128, OP_C8, 0x80, OP_EXT, 8, OP_END); /* ext 8 of 0x80 = -128 */
	CHECK_VAL(127, OP_C8, 0x7f, OP_EXT, 8, OP_END);
	CHECK_VAL(-1, C16(0x01ff), OP_EXT, 8, OP_END);   /* only the low 8 bits count */
	CHECK_VAL(0x7f, C16(0x017f), OP_EXT, 8, OP_END); /* and high bits are cleared */
	CHECK_VAL(-32768, C16(0x8000), OP_EXT, 16, OP_END);
	CHECK_VAL(0xffffffff80000000ull, OP_C32, 0x80, 0, 0, 0, OP_EXT, 32, OP_END);
	CHECK_VAL(-2, OP_C8, 0x02, OP_EXT, 2, OP_END); /* 0b10 as 2-bit signed */
	CHECK_VAL(0x34, C16(0x1234), OP_ZERO_EXT, 8, OP_END);
	CHECK_VAL(0xffffffffull, C64(-1), OP_ZERO_EXT, 32, OP_END);
	CHECK_VAL(0x1, C64(-1), OP_ZERO_EXT, 1, OP_END);
	CHECK_VAL(0xfedcba9876543210ull, C64(0xfedcba9876543210ull), OP_ZERO_EXT, 64, OP_END);
	CHECK_VAL(0xfedcba9876543210ull, C64(0xfedcba9876543210ull), OP_EXT, 64, OP_END);
}

NS_TEST(test_ax_interp__consts_are_big_endian_zero_extended)
{
	CHECK_VAL(0xff, OP_C8, 0xff, OP_END);
	CHECK_VAL(0x1234, OP_C16, 0x12, 0x34, OP_END);
	CHECK_VAL(0x89abcdefull, OP_C32, 0x89, 0xab, 0xcd, 0xef, OP_END);
	CHECK_VAL(0x0102030405060708ull, OP_C64, 1, 2, 3, 4, 5, 6, 7, 8, OP_END);
}

NS_TEST(test_ax_interp__stack_ops)
{
	CHECK_VAL(1, OP_C8, 1, OP_C8, 2, OP_SWAP, OP_SUB, OP_END); /* 1 2 swap => 2 1; 2-1 */
	CHECK_VAL(14, OP_C8, 7, OP_DUP, OP_ADD, OP_END);
	CHECK_VAL(7, OP_C8, 7, OP_C8, 9, OP_POP, OP_END);
	CHECK_VAL(30, OP_C8, 10, OP_C8, 20, OP_C8, 30, OP_PICK, 0, OP_END); /* pick 0 = dup */
	CHECK_VAL(10, OP_C8, 10, OP_C8, 20, OP_C8, 30, OP_PICK, 2, OP_END);
	CHECK_VAL(30, OP_C8, 10, OP_C8, 20, OP_C8, 30, OP_PICK, 2, OP_POP, OP_END);
	/* rot: a b c => c a b (top on the right) */
	CHECK_VAL(2, OP_C8, 1, OP_C8, 2, OP_C8, 3, OP_ROT, OP_END);
	CHECK_VAL(1, OP_C8, 1, OP_C8, 2, OP_C8, 3, OP_ROT, OP_POP, OP_END);
	CHECK_VAL(3, OP_C8, 1, OP_C8, 2, OP_C8, 3, OP_ROT, OP_POP, OP_POP, OP_END);
	CHECK_VAL(0, OP_END); /* empty stack at end: 0 */
	CHECK_VAL(0, OP_C8, 5, OP_POP, OP_END);
}

NS_TEST(test_ax_interp__ref_little_endian_zero_extended)
{
	/* fake memory at 0x1000: 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff 10 ff 32 ... */
	CHECK_VAL(0x11, C16(0x1000), OP_REF8, OP_END);
	CHECK_VAL(0x2211, C16(0x1000), OP_REF16, OP_END);
	CHECK_VAL(0x55443322, C16(0x1001), OP_REF32, OP_END);
	CHECK_VAL(0x8877665544332211ull, C16(0x1000), OP_REF64, OP_END);
	CHECK_VAL(0xff, C16(0x1010), OP_REF8, OP_END); /* not sign-extended */
	CHECK_VAL(0xff10, C16(0x100f), OP_REF16, OP_END);
	/* last readable 8 bytes: mem[24..31] = 0x11 * (25..32) mod 256 */
	CHECK_VAL(0x200ffeeddccbbaa9ull, C16(0x1018), OP_REF64, OP_END);
}

NS_TEST(test_ax_interp__ref_fault_reports_address)
{
	/* 0x0ffe..0x1001 starts 2 bytes before the readable range */
	struct ns_ax_result r = run(PROG(OP_C8, 1, C16(0x0ffe), OP_REF32, OP_END));
	NS_CHECK_INT(r.status, NS_AX_FAULT);
	NS_CHECK_INT(r.fault_addr, 0x0ffe);
	NS_CHECK_INT(r.pc, 5);
	/* 0x101c..0x1023 ends past it */
	r = run(PROG(C16(0x101c), OP_REF64, OP_END));
	NS_CHECK_INT(r.status, NS_AX_FAULT);
	NS_CHECK_INT(r.fault_addr, 0x101c);
	r = run(PROG(C64(0xffffffffffffffffull), OP_REF8, OP_END));
	NS_CHECK_INT(r.status, NS_AX_FAULT);
	NS_CHECK(r.fault_addr == 0xffffffffffffffffull);
	/* no read_mem at all: every ref faults */
	fake_reset();
	struct ns_ax_env env = env_for(&fk);
	env.read_mem = NULL;
	r = run_env(PROG(C16(0x1000), OP_REF8, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_FAULT);
	NS_CHECK_INT(r.fault_addr, 0x1000);
}

NS_TEST(test_ax_interp__reg)
{
	fake_reset();
	fk.regs[7] = 0x7ffc12345678ull; /* rsp in GDB's amd64 numbering */
	fk.have_reg[7] = true;
	struct ns_ax_env env = env_for(&fk);
	struct ns_ax_result r = run_env(PROG(OP_REG, 0, 7, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_OK);
	NS_CHECK(r.value == 0x7ffc12345678ull);
	r = run_env(PROG(OP_REG, 0, 25, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_BAD_REG);
	NS_CHECK_INT(r.fault_addr, 25);
	NS_CHECK_INT(r.pc, 0);
	/* unverified: reg 0x0100 is out of range, the callback is not even asked */
	ns_ax_run(PROG(OP_REG, 1, 0, OP_END), &env, &r);
	NS_CHECK_INT(r.status, NS_AX_BAD_REG);
	NS_CHECK_INT(r.fault_addr, 256);
}

NS_TEST(test_ax_interp__if_goto_and_goto)
{
	/* 0: const8 c; 2: if_goto 8; 5: const8 1; 7: end; 8: const8 2; 10: end */
	CHECK_VAL(1, OP_C8, 0, OP_IF_GOTO, 0, 8, OP_C8, 1, OP_END, OP_C8, 2, OP_END);
	CHECK_VAL(2, OP_C8, 5, OP_IF_GOTO, 0, 8, OP_C8, 1, OP_END, OP_C8, 2, OP_END);
	CHECK_VAL(2, C64(0x100000000ull), OP_IF_GOTO, 0, 15, OP_C8, 1, OP_END, OP_C8, 2,
	          OP_END); /* any nonzero bit, not just the low 32 */
	/* 0: goto 4; 3: end; 4: const8 9; 6: goto 3 */
	CHECK_VAL(9, OP_GOTO, 0, 4, OP_END, OP_C8, 9, OP_GOTO, 0, 3);
	/* a counted loop: i = 5; do { i = i - 1 } while (i); result i == 0 after 5 rounds
	 * 0: const8 5; 2: const8 1; 4: sub; 5: dup; 6: if_goto 2; 9: end */
	CHECK_VAL(0, OP_C8, 5, OP_C8, 1, OP_SUB, OP_DUP, OP_IF_GOTO, 0, 2, OP_END);
}

NS_TEST(test_ax_interp__step_limit)
{
	fake_reset();
	struct ns_ax_env env = env_for(&fk);
	struct ns_ax_result r = run_env(PROG(OP_GOTO, 0, 0), &env); /* goto 0 forever */
	NS_CHECK_INT(r.status, NS_AX_STEP_LIMIT);
	NS_CHECK_INT(r.pc, 0);
	/* const8 1; pop; end is exactly 3 steps */
	env.max_steps = 3;
	r = run_env(PROG(OP_C8, 1, OP_POP, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_OK);
	env.max_steps = 2;
	r = run_env(PROG(OP_C8, 1, OP_POP, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_STEP_LIMIT);
	NS_CHECK_INT(r.pc, 3);
	/* the default budget: a loop of 3 instructions per round stops after 4096 steps;
	 * 0: const8 0; 2: const8 1; 4: add; 5: goto 2 -> the counter reaches 1365 rounds
	 * (1 + 3 * 1365 = 4096 steps) and the run stops at the next instruction. */
	env.max_steps = 0;
	r = run_env(PROG(OP_C8, 0, OP_C8, 1, OP_ADD, OP_GOTO, 0, 2), &env);
	NS_CHECK_INT(r.status, NS_AX_STEP_LIMIT);
	NS_CHECK_INT(r.pc, 2);
}

NS_TEST(test_ax_interp__trace_ops_pass_exact_ranges)
{
	fake_reset();
	struct ns_ax_env env = env_for(&fk);
	/* 0: const16 0x1000; 3: const8 16; 5: trace          -> (0x1000, 16)
	 * 6: const16 0x2000; 9: trace_quick 4                -> (0x2000, 4), addr stays
	 * 11: trace16 0x0102                                  -> (0x2000, 258), addr stays
	 * 14: const8 64; 16: tracenz                          -> (0x2000, 64, nul_stop)
	 * 17: tracev 1; 20: end */
	struct ns_ax_result r =
	        run_env(PROG(C16(0x1000), OP_C8, 16, OP_TRACE, C16(0x2000), OP_TRACE_QUICK, 4,
	                     OP_TRACE16, 1, 2, OP_C8, 64, OP_TRACENZ, OP_TRACEV, 0, 1, OP_END),
	                &env);
	NS_CHECK_INT(r.status, NS_AX_OK);
	NS_CHECK_INT(r.value, 0); /* everything was popped */
	NS_CHECK_INT(fk.ncalls, 4);
	NS_CHECK_INT(fk.calls[0].addr, 0x1000);
	NS_CHECK_INT(fk.calls[0].len, 16);
	NS_CHECK(!fk.calls[0].nz);
	NS_CHECK_INT(fk.calls[1].addr, 0x2000);
	NS_CHECK_INT(fk.calls[1].len, 4);
	NS_CHECK(!fk.calls[1].nz);
	NS_CHECK_INT(fk.calls[2].addr, 0x2000);
	NS_CHECK_INT(fk.calls[2].len, 258);
	NS_CHECK(!fk.calls[2].nz);
	NS_CHECK_INT(fk.calls[3].addr, 0x2000);
	NS_CHECK_INT(fk.calls[3].len, 64);
	NS_CHECK(fk.calls[3].nz); /* tracenz: stop at the first NUL */
	/* trace_quick leaves the address for the next op */
	r = run_env(PROG(C16(0x3000), OP_TRACE_QUICK, 8, OP_END), &env);
	NS_CHECK_INT(r.value, 0x3000);
}

NS_TEST(test_ax_interp__trace_full_and_no_callback)
{
	fake_reset();
	fk.full_after = 1;
	struct ns_ax_env env = env_for(&fk);
	struct ns_ax_result r =
	        run_env(PROG(C16(0x1000), OP_TRACE_QUICK, 4, OP_TRACE_QUICK, 8, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_TRACE_FULL);
	NS_CHECK_INT(r.pc, 5);
	/* no trace callback: the ops only pop their operands */
	env.trace_mem = NULL;
	r = run_env(PROG(OP_C8, 7, C16(0x1000), OP_C8, 4, OP_TRACE, C16(0x1000), OP_C8, 4,
	                 OP_TRACENZ, OP_END),
	            &env);
	NS_CHECK_INT(r.status, NS_AX_OK);
	NS_CHECK_INT(r.value, 7);
}

NS_TEST(test_ax_interp__tsv)
{
	fake_reset();
	fk.tsv[0] = 5;
	fk.tsv[1] = -3;
	struct ns_ax_env env = env_for(&fk);
	struct ns_ax_result r = run_env(PROG(OP_GETV, 0, 0, OP_END), &env);
	NS_CHECK_INT(r.value, 5);
	r = run_env(PROG(OP_GETV, 0, 1, OP_END), &env);
	NS_CHECK(r.value == (uint64_t)-3);
	r = run_env(PROG(OP_C8, 9, OP_SETV, 0, 1, OP_C8, 1, OP_ADD, OP_END), &env);
	NS_CHECK_INT(r.value, 10); /* setv leaves its value */
	NS_CHECK_INT(fk.tsv[1], 9);
	r = run_env(PROG(OP_GETV, 0, 2, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_BAD_TSV);
	r = run_env(PROG(OP_C8, 1, OP_SETV, 0, 2, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_BAD_TSV);
	r = run_env(PROG(OP_TRACEV, 0, 2, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_BAD_TSV);
	env.tsv = NULL;
	r = run_env(PROG(OP_GETV, 0, 0, OP_END), &env);
	NS_CHECK_INT(r.status, NS_AX_BAD_TSV);
}

NS_TEST(test_ax_interp__runtime_checks_on_unverified_code)
{
	fake_reset();
	struct ns_ax_env env = env_for(&fk);
	struct ns_ax_result r;
	ns_ax_run(PROG(OP_C8, 1, OP_ADD, OP_END), &env, &r);
	NS_CHECK_INT(r.status, NS_AX_STACK_UNDERFLOW);
	NS_CHECK_INT(r.pc, 2);
	ns_ax_run(PROG(OP_C8, 1, OP_PICK, 1, OP_END), &env, &r);
	NS_CHECK_INT(r.status, NS_AX_STACK_UNDERFLOW);
	/* 65 pushes: const8 1 then 64 dups; the 65th push fails at offset 2 + 63 */
	uint8_t code[80];
	code[0] = OP_C8;
	code[1] = 1;
	for (int i = 0; i < 64; i++)
		code[2 + i] = OP_DUP;
	code[66] = OP_END;
	ns_ax_run(code, 67, &env, &r);
	NS_CHECK_INT(r.status, NS_AX_STACK_OVERFLOW);
	NS_CHECK_INT(r.pc, 65);
	ns_ax_run(code + 2, 65, &env, &r); /* dup on an empty stack */
	NS_CHECK_INT(r.status, NS_AX_STACK_UNDERFLOW);
	ns_ax_run(PROG(OP_C8, 1), &env, &r); /* no end */
	NS_CHECK_INT(r.status, NS_AX_BAD_JUMP);
	NS_CHECK_INT(r.pc, 2);
	ns_ax_run(PROG(OP_GOTO, 0, 3), &env, &r); /* target == len */
	NS_CHECK_INT(r.status, NS_AX_BAD_JUMP);
	NS_CHECK_INT(r.pc, 0);
	ns_ax_run(PROG(OP_C8, 1, OP_C32, 0, 0), &env, &r); /* truncated immediate */
	NS_CHECK_INT(r.status, NS_AX_BAD_OPCODE);
	NS_CHECK_INT(r.pc, 2);
	static const uint8_t bad[] = {0x00,      OP_FLOAT, OP_REF_FLOAT, 0x1c, 0x1d, OP_L_TO_D,
	                              OP_D_TO_L, 0x31,     OP_PRINTF,    0x35, 0xff};
	for (size_t i = 0; i < sizeof(bad); i++) {
		ns_ax_run(&bad[i], 1, &env, &r);
		NS_CHECK_INT(r.status, NS_AX_BAD_OPCODE);
	}
	ns_ax_run(PROG(OP_END), &env, &r);
	NS_CHECK_INT(r.status, NS_AX_OK);
	ns_ax_run((const uint8_t *)"", 0, &env, &r);
	NS_CHECK_INT(r.status, NS_AX_BAD_JUMP);
}

NS_TEST(test_ax_interp__status_names)
{
	NS_CHECK_STR(ns_ax_status_name(NS_AX_OK), "ok");
	NS_CHECK_STR(ns_ax_status_name(NS_AX_FAULT), "cannot read memory");
	NS_CHECK_STR(ns_ax_status_name(NS_AX_DIV_ZERO), "division by zero");
	NS_CHECK_STR(ns_ax_status_name(NS_AX_STEP_LIMIT), "step limit exceeded");
	NS_CHECK_STR(ns_ax_status_name((enum ns_ax_status)99), "unknown status");
	for (int s = NS_AX_OK; s <= NS_AX_BAD_TSV; s++)
		NS_CHECK(strcmp(ns_ax_status_name((enum ns_ax_status)s), "unknown status") != 0);
}

/* xorshift64*: deterministic pseudo-random bytes */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static int trace_ok(void *ctx, uint64_t addr, size_t len, bool nz)
{
	(void)ctx, (void)addr, (void)len, (void)nz;
	return 0;
}

NS_TEST(test_ax_interp__random_programs_never_crash)
{
	/* Half pure random bytes, half random sequences of known opcodes with small
	 * immediates and in-range jump targets (so that many verify). Verified programs
	 * must never hit a failure the verifier rules out; unverified ones must still run
	 * safely (ASan builds check the bounds). */
	static const uint8_t known[] = {
	        OP_ADD,     OP_SUB,      OP_MUL,   OP_DIV_S, OP_DIV_U, OP_REM_S,
	        OP_REM_U,   OP_LSH,      OP_RSH_S, OP_RSH_U, OP_TRACE, OP_TRACE_QUICK,
	        OP_LOG_NOT, OP_AND,      OP_OR,    OP_XOR,   OP_NOT,   OP_EQUAL,
	        OP_LESS_S,  OP_LESS_U,   OP_EXT,   OP_REF8,  OP_REF16, OP_REF32,
	        OP_REF64,   OP_IF_GOTO,  OP_GOTO,  OP_C8,    OP_C8,    OP_C8,
	        OP_C16,     OP_C32,      OP_C64,   OP_REG,   OP_END,   OP_DUP,
	        OP_POP,     OP_ZERO_EXT, OP_SWAP,  OP_GETV,  OP_SETV,  OP_TRACEV,
	        OP_TRACENZ, OP_TRACE16,  OP_PICK,  OP_ROT,
	};
	int verified = 0, ok_runs = 0;
	fake_reset();
	struct ns_ax_env env = env_for(&fk);
	env.trace_mem = trace_ok;
	env.max_steps = 500;
	for (int iter = 0; iter < 4000; iter++) {
		uint8_t *code = malloc(48);
		size_t len = 1 + rnd() % 48;
		if (iter % 2 == 0) {
			for (size_t i = 0; i < len; i++)
				code[i] = (uint8_t)rnd();
		} else {
			size_t i = 0;
			while (i < len) {
				uint8_t op = known[rnd() % sizeof(known)];
				code[i++] = op;
				if (op == OP_IF_GOTO || op == OP_GOTO) {
					uint16_t t = (uint16_t)(rnd() % (len + 1));
					if (i < len)
						code[i++] = (uint8_t)(t >> 8);
					if (i < len)
						code[i++] = (uint8_t)t;
				} else if (op == OP_REG || op == OP_EXT || op == OP_ZERO_EXT ||
				           op == OP_PICK || op == OP_GETV || op == OP_SETV ||
				           op == OP_TRACEV) {
					/* small immediates: 1 byte for 8-bit ops; for 16-bit
					 * ones the high byte 0 then a small low byte */
					int two = op == OP_REG || op == OP_GETV || op == OP_SETV ||
					          op == OP_TRACEV;
					if (two && i < len)
						code[i++] = 0;
					if (i < len)
						code[i++] = (uint8_t)(rnd() % 30);
				}
				/* other immediates: whatever random opcode bytes follow */
			}
			code[len - 1] = OP_END;
		}
		struct ns_ax_result r;
		struct ns_err *err = ns_ax_verify(code, len, NULL);
		ns_ax_run(code, len, &env, &r); /* must be safe even unverified */
		if (!err) {
			verified++;
			NS_CHECK(r.status != NS_AX_STACK_OVERFLOW &&
			         r.status != NS_AX_STACK_UNDERFLOW &&
			         r.status != NS_AX_BAD_OPCODE && r.status != NS_AX_BAD_JUMP);
			if (r.status == NS_AX_OK)
				ok_runs++;
		} else {
			NS_CHECK_INT(err->code, NS_ERR_INVALID);
			NS_CHECK(strncmp(err->msg, "offset ", 7) == 0);
			ns_err_destroy(err);
		}
		free(code);
	}
	/* the generator must actually exercise the interpreter */
	NS_CHECK(verified > 100);
	NS_CHECK(ok_runs > 20);
}
