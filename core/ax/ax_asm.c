/* core/ax assembler and disassembler (host side; allocates). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ax/ax_internal.h"
#include "base/strbuf.h"

void ns_ax_asm_init(struct ns_ax_asm *a)
{
	a->code = NULL;
	a->len = a->cap = 0;
	a->oom = false;
}

void ns_ax_asm_deinit(struct ns_ax_asm *a)
{
	free(a->code);
	ns_ax_asm_init(a);
}

static void put(struct ns_ax_asm *a, const uint8_t *bytes, size_t n)
{
	if (a->oom)
		return;
	if (a->cap - a->len < n) {
		size_t cap = a->cap ? a->cap : 64;
		while (cap - a->len < n) {
			if (__builtin_mul_overflow(cap, 2, &cap)) {
				a->oom = true;
				return;
			}
		}
		uint8_t *p = realloc(a->code, cap);
		if (!p) {
			a->oom = true;
			return;
		}
		a->code = p;
		a->cap = cap;
	}
	memcpy(a->code + a->len, bytes, n);
	a->len += n;
}

// Opcode followed by the low @n bytes of @imm, big-endian (GDB manual: every
// multi-byte operand is big-endian).
static void put_op(struct ns_ax_asm *a, enum ns_ax_op op, uint64_t imm, unsigned n)
{
	uint8_t buf[9];
	buf[0] = (uint8_t)op;
	for (unsigned i = 0; i < n; i++)
		buf[1 + i] = (uint8_t)(imm >> (8 * (n - 1 - i)));
	put(a, buf, 1 + n);
}

void ns_ax_emit(struct ns_ax_asm *a, enum ns_ax_op op)
{
	put_op(a, op, 0, 0);
}

void ns_ax_emit_u8(struct ns_ax_asm *a, enum ns_ax_op op, uint8_t imm)
{
	put_op(a, op, imm, 1);
}

void ns_ax_emit_u16(struct ns_ax_asm *a, enum ns_ax_op op, uint16_t imm)
{
	put_op(a, op, imm, 2);
}

void ns_ax_emit_const(struct ns_ax_asm *a, int64_t v)
{
	uint64_t u = (uint64_t)v;
	if (v >= 0) {
		// const8..const64 zero-extend, so a non-negative value needs no ext.
		if (u <= UINT8_MAX)
			put_op(a, NS_AX_CONST8, u, 1);
		else if (u <= UINT16_MAX)
			put_op(a, NS_AX_CONST16, u, 2);
		else if (u <= UINT32_MAX)
			put_op(a, NS_AX_CONST32, u, 4);
		else
			put_op(a, NS_AX_CONST64, u, 8);
		return;
	}
	// Negative: the narrowest two's-complement form plus "ext n" (sign-extend from bit
	// n-1), e.g. -1 = const8 0xff, ext 8 (4 bytes instead of const64's 9).
	static const struct {
		enum ns_ax_op op;
		unsigned bytes;
		int64_t min;
	} forms[] = {
	        {NS_AX_CONST8, 1, INT8_MIN},
	        {NS_AX_CONST16, 2, INT16_MIN},
	        {NS_AX_CONST32, 4, INT32_MIN},
	};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		if (v >= forms[i].min) {
			put_op(a, forms[i].op, u, forms[i].bytes);
			put_op(a, NS_AX_EXT, forms[i].bytes * 8, 1);
			return;
		}
	}
	put_op(a, NS_AX_CONST64, u, 8);
}

size_t ns_ax_emit_jump(struct ns_ax_asm *a, enum ns_ax_op op)
{
	size_t at = a->len;
	put_op(a, op, 0, 2);
	return at;
}

void ns_ax_patch_jump(struct ns_ax_asm *a, size_t at, size_t target)
{
	if (a->oom)
		return;
	// Jump targets are 16-bit offsets from the start of the code; a program that
	// needs a longer one cannot be encoded: mark the buffer failed (sticky).
	if (target > UINT16_MAX || at + 3 > a->len) {
		a->oom = true;
		return;
	}
	a->code[at + 1] = (uint8_t)(target >> 8);
	a->code[at + 2] = (uint8_t)target;
}

uint8_t *ns_ax_asm_steal(struct ns_ax_asm *a, size_t *len_out)
{
	uint8_t *code = a->code;
	size_t len = a->len;
	if (a->oom) {
		ns_ax_asm_deinit(a);
		*len_out = 0;
		return NULL;
	}
	if (!code)
		code = malloc(1); // an empty program is still a (non-NULL) result
	ns_ax_asm_init(a);
	*len_out = code ? len : 0;
	return code;
}

uint64_t ns_ax_reg_mask(const uint8_t *code, size_t len)
{
	uint64_t m = 0;
	for (size_t pc = 0; pc < len;) {
		const struct ns_ax__op_info *oi = &ns_ax__ops[code[pc]];
		if (len - pc - 1 < oi->imm)
			break;
		if (code[pc] == NS_AX_REG) {
			uint64_t r = ns_ax__imm(code + pc + 1, oi->imm);
			m |= (uint64_t)1 << (r < 64 ? r : 63);
		}
		pc += 1 + oi->imm;
	}
	return m;
}

bool ns_ax_is_inert(const uint8_t *code, size_t len, unsigned nregs)
{
	struct ns_err *err = ns_ax_verify(code, len, NULL);
	if (err) {
		ns_err_destroy(err);
		return false;
	}
	for (size_t pc = 0; pc < len;) {
		uint8_t op = code[pc];
		const struct ns_ax__op_info *oi = &ns_ax__ops[op];
		uint64_t imm = ns_ax__imm(code + pc + 1, oi->imm);
		switch (op) {
		case NS_AX_ADD: case NS_AX_SUB: case NS_AX_MUL: case NS_AX_LSH:
		case NS_AX_RSH_SIGNED: case NS_AX_RSH_UNSIGNED: case NS_AX_LOG_NOT:
		case NS_AX_BIT_AND: case NS_AX_BIT_OR: case NS_AX_BIT_XOR: case NS_AX_BIT_NOT:
		case NS_AX_EQUAL: case NS_AX_LESS_SIGNED: case NS_AX_LESS_UNSIGNED: case NS_AX_EXT:
		case NS_AX_ZERO_EXT: case NS_AX_CONST8: case NS_AX_CONST16: case NS_AX_CONST32:
		case NS_AX_CONST64: case NS_AX_END: case NS_AX_DUP: case NS_AX_POP: case NS_AX_SWAP:
		case NS_AX_PICK: case NS_AX_ROT:
			break;
		case NS_AX_REG:
			if (imm >= nregs)
				return false;
			break;
		case NS_AX_IF_GOTO:
		case NS_AX_GOTO:
			if (imm <= pc)
				return false;
			break;
		default:
			return false;
		}
		pc += 1 + oi->imm;
	}
	return true;
}

char *ns_ax_disasm(const uint8_t *code, size_t len)
{
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	size_t pc = 0;
	while (pc < len) {
		const struct ns_ax__op_info *oi = &ns_ax__ops[code[pc]];
		ns_strbuf_printf(&sb, "%04zu ", pc);
		if (!oi->name) {
			ns_strbuf_printf(&sb, ".byte 0x%02x\n", code[pc]);
			pc++;
			continue;
		}
		for (const char *p = oi->name; *p; p++)
			ns_strbuf_putc(&sb, (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p);
		if (len - pc - 1 < oi->imm) {
			ns_strbuf_puts(&sb, " <truncated>\n");
			break;
		}
		if (oi->imm)
			ns_strbuf_printf(&sb, " %" PRIu64, ns_ax__imm(code + pc + 1, oi->imm));
		ns_strbuf_putc(&sb, '\n');
		pc += 1 + oi->imm;
	}
	if (sb.oom) {
		ns_strbuf_deinit(&sb);
		return NULL;
	}
	return ns_strbuf_steal(&sb);
}
