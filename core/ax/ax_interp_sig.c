/* core/ax interpreter. Async-signal-safe: no malloc, stdio or locks; the stack lives on
 * the C stack; target memory is touched only through env->read_mem. Every check the
 * verifier makes is repeated cheaply here, so even unverified code never reads outside
 * code[0..len) and never overflows the stack array. Semantics follow the GDB manual,
 * appendix "Agent Expressions", section "Bytecode Descriptions" (and gdbserver's
 * ax.c where the manual is silent, e.g. rot: a b c => c a b). */
#include <assert.h>
#include <stdint.h>

#include "ax/ax_internal.h"

const struct ns_ax__op_info ns_ax__ops[256] = {
#define NS_AX_INFO(name_, code_, imm_, pops_, pushes_) \
	[code_] = {#name_, imm_, pops_, pushes_, (code_) != NS_AX_FLOAT},
        NS_AX_OPCODES(NS_AX_INFO)
#undef NS_AX_INFO
};

const char *ns_ax_status_name(enum ns_ax_status st)
{
	switch (st) {
	case NS_AX_OK:
		return "ok";
	case NS_AX_FAULT:
		return "cannot read memory";
	case NS_AX_DIV_ZERO:
		return "division by zero";
	case NS_AX_STACK_OVERFLOW:
		return "stack overflow";
	case NS_AX_STACK_UNDERFLOW:
		return "stack underflow";
	case NS_AX_STEP_LIMIT:
		return "step limit exceeded";
	case NS_AX_BAD_OPCODE:
		return "invalid opcode";
	case NS_AX_BAD_REG:
		return "register not available";
	case NS_AX_TRACE_FULL:
		return "trace frame full";
	case NS_AX_BAD_JUMP:
		return "jump outside the code";
	case NS_AX_BAD_TSV:
		return "unknown trace state variable";
	}
	return "unknown status";
}

// Sign-extend the low @bits bits of @v. GDB never emits ext 0 or ext >= 64; we define
// ext 0 as 0 and ext >= 64 as a no-op instead of shifting by an undefined amount.
static uint64_t sign_extend(uint64_t v, unsigned bits)
{
	if (bits == 0)
		return 0;
	if (bits >= 64)
		return v;
	uint64_t m = (uint64_t)1 << (bits - 1);
	v &= ((uint64_t)1 << bits) - 1;
	return (v ^ m) - m;
}

static uint64_t zero_extend(uint64_t v, unsigned bits)
{
	if (bits >= 64)
		return v;
	return v & (((uint64_t)1 << bits) - 1);
}

// Little-endian load of @n bytes (x86-64 target byte order), zero-extended.
static int load(const struct ns_ax_env *env, uint64_t addr, unsigned n, uint64_t *val)
{
	uint8_t b[8];
	if (!env->read_mem || env->read_mem(env->ctx, b, addr, n) != 0)
		return -1;
	uint64_t v = 0;
	for (unsigned i = n; i-- > 0;)
		v = (v << 8) | b[i];
	*val = v;
	return 0;
}

static int trace(const struct ns_ax_env *env, uint64_t addr, uint64_t len, bool nul_stop)
{
	if (!env->trace_mem)
		return 0;
	return env->trace_mem(env->ctx, addr, (size_t)len, nul_stop) == 0 ? 0 : -1;
}

void ns_ax_run(const uint8_t *code, size_t len, const struct ns_ax_env *env,
               struct ns_ax_result *out)
{
	uint64_t st[NS_AX_MAX_STACK];
	unsigned sp = 0; // number of items; the top is st[sp - 1]
	size_t pc = 0;
	unsigned steps = 0, max_steps = env->max_steps ? env->max_steps : NS_AX_DEFAULT_STEPS;
	enum ns_ax_status status = NS_AX_OK;
	uint64_t fault = 0;

	out->value = 0;
	for (;;) {
		if (pc >= len) {
			// Fell off the end (or jumped past it): no END on this path.
			status = NS_AX_BAD_JUMP;
			break;
		}
		if (steps >= max_steps) {
			status = NS_AX_STEP_LIMIT;
			break;
		}
		steps++;
		uint8_t op = code[pc];
		const struct ns_ax__op_info *oi = &ns_ax__ops[op];
		if (!oi->runnable || len - pc - 1 < oi->imm) {
			status = NS_AX_BAD_OPCODE; // unknown, float, or truncated immediate
			break;
		}
		uint64_t imm = ns_ax__imm(code + pc + 1, oi->imm);
		size_t next = pc + 1 + oi->imm;
		if (sp < oi->pops || (op == NS_AX_PICK && sp <= imm)) {
			status = NS_AX_STACK_UNDERFLOW;
			break;
		}
		if (sp - oi->pops + oi->pushes > NS_AX_MAX_STACK) {
			status = NS_AX_STACK_OVERFLOW;
			break;
		}
#ifndef NDEBUG
		unsigned sp_before = sp;
#endif
		// Shorthands: a is the second item, b the top (manual: "a b => ...").
#define B st[sp - 1]
#define A st[sp - 2]
		switch ((enum ns_ax_op)op) {
		case NS_AX_ADD: // a b => a+b
			A = A + B;
			sp--;
			break;
		case NS_AX_SUB: // a b => a-b
			A = A - B;
			sp--;
			break;
		case NS_AX_MUL: // a b => a*b
			A = A * B;
			sp--;
			break;
		case NS_AX_DIV_SIGNED: // a b => a/b, signed
		case NS_AX_REM_SIGNED: // a b => a%b, signed
			if (B == 0) {
				status = NS_AX_DIV_ZERO;
				goto stop;
			}
			if ((int64_t)A == INT64_MIN && (int64_t)B == -1) {
				// Overflows in C; two's-complement wrap gives INT64_MIN, rem 0.
				A = op == NS_AX_DIV_SIGNED ? A : 0;
			} else if (op == NS_AX_DIV_SIGNED) {
				A = (uint64_t)((int64_t)A / (int64_t)B);
			} else {
				A = (uint64_t)((int64_t)A % (int64_t)B);
			}
			sp--;
			break;
		case NS_AX_DIV_UNSIGNED: // a b => a/b, unsigned
		case NS_AX_REM_UNSIGNED: // a b => a%b, unsigned
			if (B == 0) {
				status = NS_AX_DIV_ZERO;
				goto stop;
			}
			A = op == NS_AX_DIV_UNSIGNED ? A / B : A % B;
			sp--;
			break;
		case NS_AX_LSH: // a b => a<<b; shifts of 64 or more give 0, not UB
			A = B >= 64 ? 0 : A << B;
			sp--;
			break;
		case NS_AX_RSH_SIGNED: // a b => a>>b, arithmetic
			A = (uint64_t)((int64_t)A >> (B >= 64 ? 63 : B));
			sp--;
			break;
		case NS_AX_RSH_UNSIGNED: // a b => a>>b, logical
			A = B >= 64 ? 0 : A >> B;
			sp--;
			break;
		case NS_AX_TRACE: // addr size => ; record size bytes at addr
			if (trace(env, A, B, false) != 0) {
				status = NS_AX_TRACE_FULL;
				goto stop;
			}
			sp -= 2;
			break;
		case NS_AX_TRACE_QUICK: // addr => addr; record imm8 bytes at addr
		case NS_AX_TRACE16:     // addr => addr; record imm16 bytes at addr
			if (trace(env, B, imm, false) != 0) {
				status = NS_AX_TRACE_FULL;
				goto stop;
			}
			break;
		case NS_AX_TRACENZ: // addr size => ; record up to size bytes, stop after NUL
			if (trace(env, A, B, true) != 0) {
				status = NS_AX_TRACE_FULL;
				goto stop;
			}
			sp -= 2;
			break;
		case NS_AX_LOG_NOT: // a => !a
			B = B == 0;
			break;
		case NS_AX_BIT_AND: // a b => a&b
			A = A & B;
			sp--;
			break;
		case NS_AX_BIT_OR: // a b => a|b
			A = A | B;
			sp--;
			break;
		case NS_AX_BIT_XOR: // a b => a^b
			A = A ^ B;
			sp--;
			break;
		case NS_AX_BIT_NOT: // a => ~a
			B = ~B;
			break;
		case NS_AX_EQUAL: // a b => a==b
			A = A == B;
			sp--;
			break;
		case NS_AX_LESS_SIGNED: // a b => a<b, signed
			A = (int64_t)A < (int64_t)B;
			sp--;
			break;
		case NS_AX_LESS_UNSIGNED: // a b => a<b, unsigned
			A = A < B;
			sp--;
			break;
		case NS_AX_EXT: // a => a sign-extended from bit imm-1
			B = sign_extend(B, (unsigned)imm);
			break;
		case NS_AX_ZERO_EXT: // a => a with bits imm..63 cleared
			B = zero_extend(B, (unsigned)imm);
			break;
		case NS_AX_REF8: // addr => *(uint8_t *)addr, through read_mem only
		case NS_AX_REF16:
		case NS_AX_REF32:
		case NS_AX_REF64: {
			unsigned n = 1u << (op - NS_AX_REF8);
			uint64_t v;
			if (load(env, B, n, &v) != 0) {
				status = NS_AX_FAULT;
				fault = B;
				goto stop;
			}
			B = v;
			break;
		}
		case NS_AX_IF_GOTO: // a => ; jump to imm16 (offset from code start) if a != 0
			sp--;
			if (st[sp] == 0)
				break;
			// fallthrough
		case NS_AX_GOTO:
			if (imm >= len) {
				status = NS_AX_BAD_JUMP;
				goto stop;
			}
			next = (size_t)imm;
			break;
		case NS_AX_CONST8: // => imm (zero-extended big-endian immediate)
		case NS_AX_CONST16:
		case NS_AX_CONST32:
		case NS_AX_CONST64:
			st[sp++] = imm;
			break;
		case NS_AX_REG: { // => value of register imm16 (GDB amd64 numbering)
			uint64_t v;
			if (imm >= NS_AX_NREGS || !env->read_reg ||
			    env->read_reg(env->ctx, (unsigned)imm, &v) != 0) {
				status = NS_AX_BAD_REG;
				fault = imm;
				goto stop;
			}
			st[sp++] = v;
			break;
		}
		case NS_AX_END: // stop; the result is the top of the stack
			out->value = sp ? B : 0;
			goto stop;
		case NS_AX_DUP: // a => a a
			st[sp] = B;
			sp++;
			break;
		case NS_AX_POP: // a =>
			sp--;
			break;
		case NS_AX_SWAP: { // a b => b a
			uint64_t t = A;
			A = B;
			B = t;
			break;
		}
		case NS_AX_PICK: // a ... => a ... a, a being imm items below the top (0: dup)
			st[sp] = st[sp - 1 - imm];
			sp++;
			break;
		case NS_AX_ROT: { // a b c => c a b
			uint64_t c = st[sp - 1];
			st[sp - 1] = st[sp - 2];
			st[sp - 2] = st[sp - 3];
			st[sp - 3] = c;
			break;
		}
		case NS_AX_GETV: // => tsv[imm16]
			if (!env->tsv || imm >= env->ntsv) {
				status = NS_AX_BAD_TSV;
				goto stop;
			}
			st[sp++] = (uint64_t)env->tsv[imm];
			break;
		case NS_AX_SETV: // v => v; tsv[imm16] = v
			if (!env->tsv || imm >= env->ntsv) {
				status = NS_AX_BAD_TSV;
				goto stop;
			}
			env->tsv[imm] = (int64_t)B;
			break;
		case NS_AX_TRACEV: // => ; the tsv is recorded by the collector, only checked here
			if (!env->tsv || imm >= env->ntsv) {
				status = NS_AX_BAD_TSV;
				goto stop;
			}
			break;
		case NS_AX_FLOAT:
		default:
			status = NS_AX_BAD_OPCODE;
			goto stop;
		}
#undef A
#undef B
		// The table's stack effect is the truth; every case above must agree with it.
		assert(sp == sp_before - oi->pops + oi->pushes);
		pc = next;
	}
stop:
	out->status = status;
	out->fault_addr = fault;
	out->pc = (uint32_t)pc;
}
