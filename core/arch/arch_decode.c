/* x86-64 instruction classification and out-of-line relocation for the trap tiers.
 * Uses capstone, which allocates: host side or the agent's control thread only. */
#include "arch/arch.h"

#include <capstone/capstone.h>
#include <string.h>

// Longest x86 instruction (Intel SDM vol. 2, 2.3.11).
enum { MAX_INSN_LEN = 15 };

static size_t append(char *dst, size_t at, size_t cap, const char *src)
{
	while (*src && at + 1 < cap)
		dst[at++] = *src++;
	dst[at] = 0;
	return at;
}

// "mnemonic op_str", truncated to fit.
static void set_text(struct ns_arch_insn *out, const cs_insn *ci)
{
	size_t n = append(out->text, 0, sizeof(out->text), ci->mnemonic);
	if (ci->op_str[0]) {
		n = append(out->text, n, sizeof(out->text), " ");
		append(out->text, n, sizeof(out->text), ci->op_str);
	}
}

// Index of the first opcode byte after legacy and REX prefixes, or -1.
static int opcode_index(const uint8_t *code, size_t len)
{
	size_t i = 0;
	while (i < len) {
		uint8_t b = code[i];
		if (b == 0x66 || b == 0x67 || b == 0xf0 || b == 0xf2 || b == 0xf3 || b == 0x2e ||
		    b == 0x3e || b == 0x26 || b == 0x36 || b == 0x64 || b == 0x65) {
			i++;
			continue;
		}
		break;
	}
	if (i < len && (code[i] & 0xf0) == 0x40)
		i++;
	return i < len ? (int)i : -1;
}

static bool has_prefix(const uint8_t *code, int op_at, uint8_t p)
{
	for (int i = 0; i < op_at; i++)
		if (code[i] == p)
			return true;
	return false;
}

static bool is_unsupported_id(unsigned id)
{
	switch (id) {
	case X86_INS_LOOP:
	case X86_INS_LOOPE:
	case X86_INS_LOOPNE:
	case X86_INS_JRCXZ:
	case X86_INS_JECXZ:
	case X86_INS_JCXZ:
	case X86_INS_SYSCALL:
	case X86_INS_SYSENTER:
	case X86_INS_SYSEXIT:
	case X86_INS_SYSRET:
	case X86_INS_INT:
	case X86_INS_INT1:
	case X86_INS_INT3:
	case X86_INS_INTO:
	case X86_INS_IRET:
	case X86_INS_IRETD:
	case X86_INS_IRETQ:
	case X86_INS_UD2:
	case X86_INS_UD2B:
	case X86_INS_UD0:
	case X86_INS_XBEGIN:
	case X86_INS_HLT:
		return true;
	default:
		return false;
	}
}

static struct ns_err *classify(const cs_insn *ci, const uint8_t *code, uint64_t addr,
                               struct ns_arch_insn *out, const char **why)
{
	const cs_x86 *x = &ci->detail->x86;
	int op_at = opcode_index(code, ci->size);
	*why = NULL;
	if (op_at < 0) {
		*why = "no opcode";
		out->kind = NS_INSN_UNSUPPORTED;
		return NULL;
	}
	const uint8_t *op = code + op_at;
	size_t rest = ci->size - (size_t)op_at;
	bool opsize = has_prefix(code, op_at, 0x66);

	if (is_unsupported_id(ci->id)) {
		*why = "the instruction cannot run out of line";
		out->kind = NS_INSN_UNSUPPORTED;
		return NULL;
	}

	// Relative branches: emulated by the trap handler. A 0x66 prefix on a branch
	// truncates the target to 16 bits on AMD: refuse rather than guess.
	bool rel8 = op[0] == 0xeb || (op[0] & 0xf0) == 0x70;
	bool rel32 = op[0] == 0xe9 || op[0] == 0xe8 ||
	             (op[0] == 0x0f && rest >= 2 && (op[1] & 0xf0) == 0x80);
	if (rel8 || rel32) {
		if (opsize) {
			*why = "operand-size prefix on a relative branch";
			out->kind = NS_INSN_UNSUPPORTED;
			return NULL;
		}
		int64_t rel;
		if (rel8) {
			rel = (int8_t)code[ci->size - 1];
		} else {
			int32_t r32;
			memcpy(&r32, code + ci->size - 4, 4);
			rel = r32;
		}
		out->target = addr + ci->size + (uint64_t)rel;
		if (op[0] == 0xeb || op[0] == 0xe9) {
			out->kind = NS_INSN_JMP;
		} else if (op[0] == 0xe8) {
			out->kind = NS_INSN_CALL;
		} else {
			out->kind = NS_INSN_JCC;
			out->cc = (op[0] == 0x0f ? op[1] : op[0]) & 0x0f;
		}
		return NULL;
	}

	// ret without immediate (0xc3, possibly with rep/bnd prefixes).
	if (op[0] == 0xc3) {
		out->kind = NS_INSN_RET;
		return NULL;
	}

	// Memory operands based on RIP (or EIP with 0x67).
	bool riprel = false;
	for (unsigned i = 0; i < x->op_count; i++) {
		const cs_x86_op *o = &x->operands[i];
		if (o->type != X86_OP_MEM)
			continue;
		if (o->mem.base == X86_REG_EIP) {
			*why = "EIP-relative operand";
			out->kind = NS_INSN_UNSUPPORTED;
			return NULL;
		}
		if (o->mem.base == X86_REG_RIP)
			riprel = true;
	}

	// Indirect calls (ff /2, ff /3): run out of line they would push the slot's
	// address as the return address, which unwinders (C++ exceptions) cannot
	// walk. Indirect jumps through RIP are refused too (the header's contract).
	if (op[0] == 0xff && rest >= 2) {
		unsigned reg = (op[1] >> 3) & 7;
		if (reg == 2 || reg == 3) {
			*why = "indirect call";
			out->kind = NS_INSN_UNSUPPORTED;
			return NULL;
		}
		if ((reg == 4 || reg == 5) && riprel) {
			*why = "indirect jump through a RIP-relative pointer";
			out->kind = NS_INSN_UNSUPPORTED;
			return NULL;
		}
	}
	if (op[0] == 0x9a || op[0] == 0xea || op[0] == 0xca || op[0] == 0xcb) {
		*why = "far control transfer";
		out->kind = NS_INSN_UNSUPPORTED;
		return NULL;
	}

	if (riprel) {
		// RIP-relative addressing is ModRM mod=00 rm=101 with a disp32 right after
		// the ModRM byte (Intel SDM vol. 2, 2.2.1.6), whatever the operand size.
		// capstone 4 reports disp_size 2 when a 0x66 prefix is present, so the
		// offset is derived from the ModRM position and cross-checked.
		unsigned m = x->encoding.modrm_offset;
		if (m == 0 || m + 5u > ci->size || (code[m] & 0xc7) != 0x05 ||
		    (x->encoding.disp_offset != 0 && x->encoding.disp_offset != m + 1)) {
			*why = "RIP-relative operand without a 32-bit displacement";
			out->kind = NS_INSN_UNSUPPORTED;
			return NULL;
		}
		out->kind = NS_INSN_RIPREL;
		out->disp_offset = (uint8_t)(m + 1);
		return NULL;
	}
	out->kind = NS_INSN_PLAIN;
	return NULL;
}

struct ns_err *ns_arch_decode(const uint8_t *code, size_t len, uint64_t addr,
                              struct ns_arch_insn *out)
{
	csh h;
	if (cs_open(CS_ARCH_X86, CS_MODE_64, &h) != CS_ERR_OK)
		return ns_err_create(NS_ERR_NOMEM, "cannot initialise capstone");
	cs_option(h, CS_OPT_DETAIL, CS_OPT_ON);
	cs_insn *ci = NULL;
	size_t n = cs_disasm(h, code, len < MAX_INSN_LEN ? len : MAX_INSN_LEN, addr, 1, &ci);
	if (n != 1) {
		cs_close(&h);
		return ns_err_create(NS_ERR_FORMAT, "cannot decode the instruction at 0x%llx",
		                     (unsigned long long)addr);
	}
	struct ns_arch_insn insn;
	memset(&insn, 0, sizeof(insn));
	insn.len = (uint8_t)ci->size;
	set_text(&insn, ci);
	const char *why;
	struct ns_err *err = classify(ci, code, addr, &insn, &why);
	cs_free(ci, n);
	cs_close(&h);
	if (err)
		return err;
	if (insn.kind == NS_INSN_UNSUPPORTED)
		insn.reason = why ? why : "the instruction cannot run out of line";
	*out = insn;
	return NULL;
}

struct ns_err *ns_arch_relocate(const struct ns_arch_insn *insn, const uint8_t *code, uint64_t addr,
                                uint64_t dst_addr, uint8_t *dst, size_t cap, size_t *len_out)
{
	if (insn->kind != NS_INSN_PLAIN && insn->kind != NS_INSN_RIPREL)
		return ns_err_create(NS_ERR_UNSUPPORTED,
		                     "instruction '%s' at 0x%llx is emulated, not relocated",
		                     insn->text, (unsigned long long)addr);
	size_t len = insn->len;
	if (len == 0 || len > MAX_INSN_LEN)
		return ns_err_create(NS_ERR_INVALID, "bad instruction length %zu", len);
	if (cap < len + 14)
		return ns_err_create(NS_ERR_INVALID, "relocation buffer too small (%zu bytes)",
		                     cap);
	memcpy(dst, code, len);
	if (insn->kind == NS_INSN_RIPREL) {
		if (insn->disp_offset == 0 || insn->disp_offset + 4u > len)
			return ns_err_create(NS_ERR_INVALID, "bad displacement offset %u",
			                     insn->disp_offset);
		int32_t old_disp;
		memcpy(&old_disp, code + insn->disp_offset, 4);
		// target = addr + len + old = dst_addr + len + new.
		int64_t new_disp = (int64_t)old_disp + (int64_t)(addr - dst_addr);
		if (new_disp < INT32_MIN || new_disp > INT32_MAX)
			return ns_err_create(NS_ERR_UNSUPPORTED,
			                     "'%s' at 0x%llx references 0x%llx, out of range "
			                     "of a copy at 0x%llx",
			                     insn->text, (unsigned long long)addr,
			                     (unsigned long long)(addr + len + (int64_t)old_disp),
			                     (unsigned long long)dst_addr);
		int32_t nd = (int32_t)new_disp;
		memcpy(dst + insn->disp_offset, &nd, 4);
	}
	uint64_t back = addr + len;
	int64_t rel = (int64_t)(back - (dst_addr + len + 5));
	if (rel >= INT32_MIN && rel <= INT32_MAX) {
		int32_t r = (int32_t)rel;
		dst[len] = 0xe9;
		memcpy(dst + len + 1, &r, 4);
		*len_out = len + 5;
	} else {
		// jmp qword ptr [rip + 0]; .quad back
		static const uint8_t jmp_abs[6] = {0xff, 0x25, 0, 0, 0, 0};
		memcpy(dst + len, jmp_abs, 6);
		memcpy(dst + len + 6, &back, 8);
		*len_out = len + 14;
	}
	return NULL;
}
