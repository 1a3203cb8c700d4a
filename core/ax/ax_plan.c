/* core/ax: a collecting X action as a fixed list of memory reads (host side).
 *
 * The symbolic run follows the interpreter (ax_interp_sig.c) opcode by opcode over a
 * stack of abstract values: a constant, an address (a base plus a displacement: a
 * register, a value an earlier read loaded, or nothing for an absolute address), or an
 * opaque value (anything else: fine to compute, never to read memory at). A program
 * the run cannot follow exactly is refused with the reason. */
#include <string.h>

#include "ax/ax_internal.h"

enum kind { K_CONST, K_ADDR, K_OPAQUE };

struct val {
	enum kind kind;
	uint8_t base; /* K_ADDR: enum ns_ax_plan_base */
	uint8_t from; /* K_ADDR: register number, or the read whose value is the base */
	uint64_t c;   /* K_CONST: the value; K_ADDR: the displacement */
};

static bool refuse(const char **why, const char *text)
{
	*why = text;
	return false;
}

// A read at @a of @trace bytes recorded and (@ref != 0) loaded as a value of @ref
// bytes: its index, or -1 if the plan is full.
static int add_read(struct ns_ax_plan *p, const struct val *a, unsigned trace, unsigned ref)
{
	// A load where an earlier read was (traced, or loaded at the same size) is that
	// read: its value exists before any later read needs it.
	for (unsigned i = 0; ref && i < p->n; i++) {
		struct ns_ax_plan_read *r = &p->r[i];
		if (r->base == a->base && r->from == a->from && r->disp == a->c &&
		    (r->ref == 0 || r->ref == ref)) {
			r->ref = (uint8_t)ref;
			return (int)i;
		}
	}
	if (p->n == NS_AX_PLAN_MAX)
		return -1;
	struct ns_ax_plan_read *r = &p->r[p->n];
	r->base = a->base;
	r->from = a->from;
	r->disp = a->c;
	r->trace = (uint16_t)trace;
	r->ref = (uint8_t)ref;
	return (int)p->n++;
}

static struct val as_addr(struct val v)
{
	if (v.kind == K_CONST)
		return (struct val){K_ADDR, NS_AX_PLAN_ABS, 0, v.c};
	return v;
}

bool ns_ax_plan_reads(const uint8_t *code, size_t len, unsigned nregs, struct ns_ax_plan *out,
                      const char **why)
{
	memset(out, 0, sizeof(*out));
	*why = NULL;
	struct ns_err *err = ns_ax_verify(code, len, NULL);
	if (err) {
		ns_err_destroy(err);
		return refuse(why, "not verified");
	}
	if (len > NS_AX_DEFAULT_STEPS)
		return refuse(why, "longer than the step budget");
	struct val st[NS_AX_MAX_STACK + 1];
	unsigned sp = 0;
	for (size_t pc = 0; pc < len;) {
		uint8_t op = code[pc];
		const struct ns_ax__op_info *oi = &ns_ax__ops[op];
		uint64_t imm = ns_ax__imm(code + pc + 1, oi->imm);
		pc += 1 + oi->imm;
		// The verifier guarantees the depths; A and B as in the interpreter.
		struct val *A = sp >= 2 ? &st[sp - 2] : NULL, *B = sp >= 1 ? &st[sp - 1] : NULL;
		switch (op) {
		case NS_AX_END:
			return true;
		case NS_AX_CONST8:
		case NS_AX_CONST16:
		case NS_AX_CONST32:
		case NS_AX_CONST64:
			st[sp++] = (struct val){K_CONST, 0, 0, imm};
			break;
		case NS_AX_REG:
			if (imm >= nregs)
				return refuse(why, "a register the pad does not save");
			st[sp++] = (struct val){K_ADDR, NS_AX_PLAN_REG, (uint8_t)imm, 0};
			break;
		case NS_AX_ADD:
			if (A->kind == K_CONST && B->kind == K_CONST)
				A->c += B->c;
			else if (A->kind == K_ADDR && B->kind == K_CONST)
				A->c += B->c;
			else if (A->kind == K_CONST && B->kind == K_ADDR)
				*A = (struct val){K_ADDR, B->base, B->from, B->c + A->c};
			else
				A->kind = K_OPAQUE;
			sp--;
			break;
		case NS_AX_SUB:
			if (B->kind == K_CONST && A->kind != K_OPAQUE)
				A->c -= B->c;
			else
				A->kind = K_OPAQUE;
			sp--;
			break;
		case NS_AX_DIV_SIGNED:
		case NS_AX_DIV_UNSIGNED:
		case NS_AX_REM_SIGNED:
		case NS_AX_REM_UNSIGNED:
			return refuse(why, "a division (it can fail)");
		case NS_AX_MUL:
		case NS_AX_LSH:
		case NS_AX_RSH_SIGNED:
		case NS_AX_RSH_UNSIGNED:
		case NS_AX_BIT_AND:
		case NS_AX_BIT_OR:
		case NS_AX_BIT_XOR:
		case NS_AX_EQUAL:
		case NS_AX_LESS_SIGNED:
		case NS_AX_LESS_UNSIGNED:
			A->kind = K_OPAQUE;
			sp--;
			break;
		case NS_AX_LOG_NOT:
		case NS_AX_BIT_NOT:
		case NS_AX_EXT:
		case NS_AX_ZERO_EXT:
			B->kind = K_OPAQUE;
			break;
		case NS_AX_DUP:
			st[sp] = st[sp - 1];
			sp++;
			break;
		case NS_AX_POP:
			sp--;
			break;
		case NS_AX_SWAP: {
			struct val t = *A;
			*A = *B;
			*B = t;
			break;
		}
		case NS_AX_PICK:
			st[sp] = st[sp - 1 - imm];
			sp++;
			break;
		case NS_AX_ROT: {
			struct val c = st[sp - 1];
			st[sp - 1] = st[sp - 2];
			st[sp - 2] = st[sp - 3];
			st[sp - 3] = c;
			break;
		}
		case NS_AX_TRACE_QUICK:
		case NS_AX_TRACE16: {
			struct val a = as_addr(*B);
			if (a.kind != K_ADDR)
				return refuse(why, "a traced address computed beyond base + offset");
			if (imm == 0 || imm > NS_AX_PLAN_MAX_TRACE)
				return refuse(why, "a traced block of 0 or too many bytes");
			if (add_read(out, &a, (unsigned)imm, 0) < 0)
				return refuse(why, "too many memory reads");
			break;
		}
		case NS_AX_TRACE: {
			struct val a = as_addr(*A);
			if (a.kind != K_ADDR || B->kind != K_CONST)
				return refuse(why, "a traced block of computed address or size");
			if (B->c == 0 || B->c > NS_AX_PLAN_MAX_TRACE)
				return refuse(why, "a traced block of 0 or too many bytes");
			if (add_read(out, &a, (unsigned)B->c, 0) < 0)
				return refuse(why, "too many memory reads");
			sp -= 2;
			break;
		}
		case NS_AX_REF8:
		case NS_AX_REF16:
		case NS_AX_REF32:
		case NS_AX_REF64: {
			struct val a = as_addr(*B);
			if (a.kind != K_ADDR)
				return refuse(why, "a load from an address computed beyond base + offset");
			int i = add_read(out, &a, 0, 1u << (op - NS_AX_REF8));
			if (i < 0)
				return refuse(why, "too many memory reads");
			*B = (struct val){K_ADDR, NS_AX_PLAN_READ, (uint8_t)i, 0};
			break;
		}
		default:
			// Jumps, trace state variables, tracenz (a length found at run time).
			return refuse(why, "a jump, a trace state variable or tracenz");
		}
	}
	return refuse(why, "no end"); // unreachable: verified programs end with END
}
