/* Jump-pad tier: relocating the displaced window and generating the pad around it
 * (the layout and the collector contract are in arch.h). Host side or the agent's
 * control thread (decoding uses capstone). */
#include "arch/arch.h"

#include <string.h>

enum {
	RED_ZONE = 128,  // SysV x86-64 ABI 3.2.2: 128 bytes below rsp are the leaf's
	SAVE_AREA = 160, // register block (144) + raw flags (8) + padding (8)
	FRAME = RED_ZONE + SAVE_AREA,
	SLOT_RAW_FLAGS = 144, // lahf/seto result in the LAHF variant
};
_Static_assert((int)FRAME == (int)NS_ARCH_PAD_FRAME, "arch.h promises the frame size");

// GDB slot of each hardware register number (rax=0, rcx=1, ..., r15=15).
static const uint8_t gdb_slot[16] = {
        0, 2, 3, 1, 7, 6, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15,
};
enum { HW_RAX = 0, HW_RCX = 1, HW_RSP = 4 };

struct buf {
	uint8_t *p;
	size_t cap, n;
	bool overflow;
};

static void put(struct buf *b, const void *src, size_t len)
{
	if (b->n + len > b->cap) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->n, src, len);
	b->n += len;
}

static void put1(struct buf *b, uint8_t x)
{
	put(b, &x, 1);
}

static void put4(struct buf *b, uint32_t x)
{
	put(b, &x, 4);
}

static void put8(struct buf *b, uint64_t x)
{
	put(b, &x, 8);
}

static bool fits32(int64_t v)
{
	return v >= INT32_MIN && v <= INT32_MAX;
}

// jmp qword ptr [rip+0]; .quad target (14 bytes)
static void jmp_abs(struct buf *b, uint64_t target)
{
	static const uint8_t abs[6] = {0xff, 0x25, 0, 0, 0, 0};
	put(b, abs, sizeof(abs));
	put8(b, target);
}

// jmp @target from @here (the runtime address of b->n): rel32 or absolute.
static void jmp_to(struct buf *b, uint64_t here, uint64_t target)
{
	int64_t rel = (int64_t)(target - (here + 5));
	if (fits32(rel)) {
		put1(b, 0xe9);
		put4(b, (uint32_t)(int32_t)rel);
	} else {
		jmp_abs(b, target);
	}
}

static void jcc_to(struct buf *b, uint64_t here, unsigned cc, uint64_t target)
{
	int64_t rel = (int64_t)(target - (here + 6));
	if (fits32(rel)) {
		put1(b, 0x0f);
		put1(b, (uint8_t)(0x80 | cc));
		put4(b, (uint32_t)(int32_t)rel);
	} else {
		// j!cc over the 14-byte absolute jmp.
		put1(b, (uint8_t)(0x70 | (cc ^ 1)));
		put1(b, 14);
		jmp_abs(b, target);
	}
}

// Emit one pass; @offs (ninsns entries) gives the copy offsets for internal targets.
static struct ns_err *reloc_pass(const struct ns_arch_insn *insns, size_t ninsns,
                                 const uint8_t *code, uint64_t addr, size_t len, uint64_t dst_addr,
                                 const uint16_t *offs, struct buf *b, uint16_t *offs_out)
{
	size_t off = 0;
	bool falls_through = true;
	for (size_t i = 0; i < ninsns; i++) {
		const struct ns_arch_insn *in = &insns[i];
		uint64_t a = addr + off;
		uint64_t here = dst_addr + b->n;
		offs_out[i] = (uint16_t)b->n;
		uint64_t target = in->target;
		// A target strictly inside the window goes to its relocated copy.
		if ((in->kind == NS_INSN_JMP || in->kind == NS_INSN_JCC) && target > addr &&
		    target < addr + len) {
			uint64_t t = target;
			target = 0;
			size_t o = 0;
			for (size_t j = 0; j < ninsns; j++) {
				if (addr + o == t)
					target = dst_addr + offs[j];
				o += insns[j].len;
			}
			if (!target)
				return ns_err_create(NS_ERR_UNSUPPORTED,
				                     "'%s' at 0x%llx jumps into the middle of an "
				                     "instruction of the window",
				                     in->text, (unsigned long long)a);
		}
		falls_through = true;
		switch (in->kind) {
		case NS_INSN_PLAIN:
			put(b, code + off, in->len);
			// ff /4, ff /5 (indirect jmp) never fall through.
			if (strstr(in->text, "jmp") != NULL)
				falls_through = false;
			break;
		case NS_INSN_RIPREL: {
			uint8_t tmp[16];
			memcpy(tmp, code + off, in->len);
			int32_t d;
			memcpy(&d, tmp + in->disp_offset, 4);
			int64_t nd = (int64_t)d + (int64_t)(a - here);
			if (!fits32(nd))
				return ns_err_create(
				        NS_ERR_UNSUPPORTED,
				        "'%s' at 0x%llx references 0x%llx, out of range "
				        "of a copy at 0x%llx",
				        in->text, (unsigned long long)a,
				        (unsigned long long)(a + in->len + (int64_t)d),
				        (unsigned long long)here);
			int32_t d2 = (int32_t)nd;
			memcpy(tmp + in->disp_offset, &d2, 4);
			put(b, tmp, in->len);
			break;
		}
		case NS_INSN_JMP:
			jmp_to(b, here, target);
			falls_through = false;
			break;
		case NS_INSN_JCC:
			jcc_to(b, here, in->cc, target);
			break;
		case NS_INSN_CALL: {
			if (i + 1 != ninsns)
				return ns_err_create(NS_ERR_UNSUPPORTED,
				                     "'%s' at 0x%llx is not the window's last "
				                     "instruction: the callee would return into "
				                     "the patched bytes",
				                     in->text, (unsigned long long)a);
			// Push the original return address without touching flags or registers:
			// lea rsp,[rsp-8]; mov dword [rsp],lo; mov dword [rsp+4],hi; jmp target
			uint64_t ret = a + in->len;
			static const uint8_t lea[5] = {0x48, 0x8d, 0x64, 0x24, 0xf8};
			static const uint8_t mlo[3] = {0xc7, 0x04, 0x24};
			static const uint8_t mhi[4] = {0xc7, 0x44, 0x24, 0x04};
			put(b, lea, sizeof(lea));
			put(b, mlo, sizeof(mlo));
			put4(b, (uint32_t)ret);
			put(b, mhi, sizeof(mhi));
			put4(b, (uint32_t)(ret >> 32));
			jmp_to(b, dst_addr + b->n, target);
			falls_through = false;
			break;
		}
		case NS_INSN_RET:
			put(b, code + off, in->len);
			falls_through = false;
			break;
		default:
			return ns_err_create(NS_ERR_UNSUPPORTED, "'%s' at 0x%llx: %s", in->text,
			                     (unsigned long long)a,
			                     in->reason ? in->reason : "cannot be relocated");
		}
		if (!falls_through && i + 1 != ninsns && in->kind != NS_INSN_JMP)
			return ns_err_create(NS_ERR_UNSUPPORTED,
			                     "'%s' at 0x%llx does not return and is not the "
			                     "window's last instruction",
			                     in->text, (unsigned long long)a);
		off += in->len;
	}
	if (falls_through)
		jmp_to(b, dst_addr + b->n, addr + len);
	return NULL;
}

struct ns_err *ns_arch_relocate_block(const uint8_t *code, uint64_t addr, size_t len,
                                      uint64_t dst_addr, uint8_t *dst, size_t cap,
                                      struct ns_arch_reloc *out)
{
	if (len == 0 || len > NS_ARCH_PAD_MAX_WINDOW)
		return ns_err_create(NS_ERR_INVALID, "bad window length %zu", len);
	struct ns_arch_insn insns[NS_ARCH_PAD_MAX_WINDOW];
	size_t n = 0, off = 0;
	while (off < len) {
		struct ns_err *err = ns_arch_decode(code + off, len - off, addr + off, &insns[n]);
		if (err)
			return ns_err_wrap(err, "window at 0x%llx", (unsigned long long)addr);
		off += insns[n].len;
		n++;
	}
	if (n > NS_ARCH_PAD_MAX_INSNS)
		return ns_err_create(NS_ERR_INVALID, "window of %zu instructions (max %d)", n,
		                     NS_ARCH_PAD_MAX_INSNS);
	// Pass 1 (scratch) finds each instruction's offset in the copy; pass 2 writes it
	// with internal targets resolved. Both passes choose the same encodings.
	uint8_t scratch[NS_ARCH_PAD_MAX_LEN];
	uint16_t offs[NS_ARCH_PAD_MAX_INSNS] = {0}, offs2[NS_ARCH_PAD_MAX_INSNS];
	struct buf b1 = {scratch, sizeof(scratch), 0, false};
	struct ns_err *err = reloc_pass(insns, n, code, addr, len, dst_addr, offs, &b1, offs);
	if (!err) {
		// In pass 1 internal targets resolve to offset 0 placeholders; fine.
		struct buf b2 = {dst, cap, 0, false};
		err = reloc_pass(insns, n, code, addr, len, dst_addr, offs, &b2, offs2);
		if (!err && b2.overflow)
			return ns_err_create(NS_ERR_INVALID,
			                     "relocation buffer too small (%zu bytes)", cap);
		if (!err) {
			out->len = b2.n;
			out->ninsns = n;
			off = 0;
			for (size_t i = 0; i < n; i++) {
				out->orig_off[i] = (uint8_t)off;
				out->new_off[i] = offs2[i];
				off += insns[i].len;
			}
		}
	}
	return err;
}

// mov [rsp+disp], reg (store) or mov reg, [rsp+disp] (load); reg is a hardware number.
static void mov_rsp(struct buf *b, bool store, unsigned reg, int32_t disp)
{
	put1(b, (uint8_t)(0x48 | (reg >= 8 ? 4 : 0)));
	put1(b, store ? 0x89 : 0x8b);
	bool d8 = disp >= -128 && disp <= 127;
	put1(b, (uint8_t)((d8 ? 0x40 : 0x80) | ((reg & 7) << 3) | 4));
	put1(b, 0x24);
	if (d8)
		put1(b, (uint8_t)(int8_t)disp);
	else
		put4(b, (uint32_t)disp);
}

// lea rsp, [rsp+disp32] / lea rax, [rsp+disp32]
static void lea_rsp(struct buf *b, unsigned reg, int32_t disp)
{
	put1(b, 0x48);
	put1(b, 0x8d);
	put1(b, (uint8_t)(0x84 | ((reg & 7) << 3)));
	put1(b, 0x24);
	put4(b, (uint32_t)disp);
}

static void mov_imm64(struct buf *b, unsigned reg, uint64_t imm)
{
	put1(b, (uint8_t)(0x48 | (reg >= 8 ? 1 : 0)));
	put1(b, (uint8_t)(0xb8 | (reg & 7)));
	put8(b, imm);
}

#define PUT(b, ...)                                        \
	do {                                               \
		static const uint8_t s_[] = {__VA_ARGS__}; \
		put(b, s_, sizeof(s_));                    \
	} while (0)

static void rel32_at(struct buf *b, size_t at, size_t target)
{
	if (b->overflow)
		return;
	int32_t rel = (int32_t)((int64_t)target - (int64_t)(at + 4));
	memcpy(b->p + at, &rel, 4);
}

// LAHF mode: rax and the raw flags saved, rsp lowered by FRAME.
static void lahf_entry(struct buf *b)
{
	lea_rsp(b, HW_RSP, -FRAME);
	mov_rsp(b, true, HW_RAX, 0);
	PUT(b, 0x9f);             // lahf: ah = SF ZF 0 AF 0 PF 1 CF
	PUT(b, 0x0f, 0x90, 0xc0); // seto al
	mov_rsp(b, true, HW_RAX, SLOT_RAW_FLAGS);
}

// LAHF mode: flags and rax back, rsp raised by FRAME.
static void lahf_tail(struct buf *b)
{
	mov_rsp(b, false, HW_RAX, SLOT_RAW_FLAGS);
	PUT(b, 0x04, 0x7f); // add al, 0x7f: OF = (al == 1)
	PUT(b, 0x9e);       // sahf: SF ZF AF PF CF from ah
	mov_rsp(b, false, HW_RAX, 0);
	lea_rsp(b, HW_RSP, FRAME);
}

// The call to the collector. On entry the pad's rsp is FRAME below the site's (the
// block at [rsp]); LAHF mode: rax and raw flags already saved, the other registers
// live; PUSHF mode: everything but the block's eflags slot live. Leaves every register
// but rax (and, PUSHF mode, the flags) as it was.
static void full_path(struct buf *b, const struct ns_arch_pad_spec *spec, bool lahf)
{
	if (!lahf)
		mov_rsp(b, true, HW_RAX, 0);
	for (unsigned r = 1; r < 16; r++)
		if (r != HW_RSP)
			mov_rsp(b, true, r, 8 * gdb_slot[r]);
	if (lahf) {
		// Block eflags from the lahf/seto form: ah & 0xd7 | OF << 11 | IF.
		mov_rsp(b, false, HW_RAX, SLOT_RAW_FLAGS);
		PUT(b, 0x0f, 0xb6, 0xcc);                   // movzx ecx, ah
		PUT(b, 0x81, 0xe1, 0xd7, 0x00, 0x00, 0x00); // and ecx, 0xd7
		PUT(b, 0x0f, 0xb6, 0xc0);                   // movzx eax, al
		PUT(b, 0xc1, 0xe0, 0x0b);                   // shl eax, 11
		PUT(b, 0x09, 0xc8);                         // or eax, ecx
		PUT(b, 0x0d, 0x00, 0x02, 0x00, 0x00);       // or eax, 0x200
		mov_rsp(b, true, HW_RAX, 8 * NS_ARCH_PAD_REG_EFLAGS);
	}
	lea_rsp(b, HW_RAX, FRAME); // the site's rsp
	mov_rsp(b, true, HW_RAX, 8 * NS_ARCH_PAD_REG_RSP);
	mov_imm64(b, HW_RAX, spec->site);
	mov_rsp(b, true, HW_RAX, 8 * NS_ARCH_PAD_REG_RIP);
	PUT(b, 0x48, 0x89, 0xe6); // mov rsi, rsp
	mov_imm64(b, 7, spec->ctx);
	PUT(b, 0x48, 0x89, 0xe3);       // mov rbx, rsp (callee-saved: survives the call)
	PUT(b, 0x48, 0x83, 0xe4, 0xf0); // and rsp, -16
	if (!lahf)
		PUT(b, 0xfc); // cld (restored by popfq)
	int64_t rel = (int64_t)(spec->collector - (spec->pad_addr + b->n + 5));
	if (fits32(rel)) {
		put1(b, 0xe8);
		put4(b, (uint32_t)(int32_t)rel);
	} else {
		mov_imm64(b, HW_RAX, spec->collector);
		PUT(b, 0xff, 0xd0); // call rax
	}
	PUT(b, 0x48, 0x89, 0xdc); // mov rsp, rbx
	for (unsigned r = 1; r < 16; r++)
		if (r != HW_RSP)
			mov_rsp(b, false, r, 8 * gdb_slot[r]);
}

// The guard's clobbered registers (GDB mask, rax excluded: it is saved anyway) stored
// into or loaded from their block slots.
static void clobbers(struct buf *b, uint32_t mask, bool store)
{
	for (unsigned r = 1; r < 16; r++)
		if (r != HW_RSP && (mask & (1u << gdb_slot[r])))
			mov_rsp(b, store, r, 8 * gdb_slot[r]);
}

/* ---- inline records ---- */

enum { HW_RDX = 2, HW_RSI = 6, HW_RDI = 7, HW_R8 = 8 };

// op with a memory operand: fs:[disp32] when @base < 0, else [base + disp32]; @reg is
// the ModRM reg field (a register or an opcode extension); @w sets REX.W.
static void op_mem(struct buf *b, bool w, const uint8_t *op, size_t oplen, unsigned reg,
                   int base, int32_t disp)
{
	if (base < 0)
		put1(b, 0x64); // fs:
	uint8_t rex = (uint8_t)(0x40 | (w ? 8 : 0) | (reg & 8 ? 4 : 0) |
	                        (base >= 0 && (base & 8) ? 1 : 0));
	if (rex != 0x40)
		put1(b, rex);
	put(b, op, oplen);
	if (base < 0) {
		put1(b, (uint8_t)(0x04 | ((reg & 7) << 3)));
		put1(b, 0x25); // SIB: no base, no index: absolute disp32
	} else {
		put1(b, (uint8_t)(0x80 | ((reg & 7) << 3) | (base & 7)));
		if ((base & 7) == HW_RSP)
			put1(b, 0x24);
	}
	put4(b, (uint32_t)disp);
}

#define OP_MEM(b, w, reg, base, disp, ...)                                 \
	do {                                                               \
		static const uint8_t o_[] = {__VA_ARGS__};                 \
		op_mem(b, w, o_, sizeof(o_), reg, base, disp);             \
	} while (0)

// jcc rel32 to a label resolved later: the fixup's position is recorded in @fix.
struct fixups {
	size_t at[40];
	size_t n;
};

static void jcc_fix(struct buf *b, uint8_t cc, struct fixups *f)
{
	put1(b, 0x0f);
	put1(b, (uint8_t)(0x80 | cc));
	if (f->n < sizeof(f->at) / sizeof(f->at[0]))
		f->at[f->n++] = b->n;
	else
		b->overflow = true;
	put4(b, 0);
}

static void resolve(struct buf *b, const struct fixups *f, size_t target)
{
	for (size_t i = 0; i < f->n; i++)
		rel32_at(b, f->at[i], target);
}

enum { CC_NE = 0x5, CC_E = 0x4, CC_A = 0x7, CC_AE = 0x3 };

// The registers the record path uses, saved into (and restored from) their block slots
// (rax is saved by the entry already): rcx rdx rsi rdi r8.
static const uint8_t rec_scratch[] = {HW_RCX, HW_RDX, HW_RSI, HW_RDI, HW_R8};

static void rec_scratch_io(struct buf *b, bool store)
{
	for (size_t i = 0; i < sizeof(rec_scratch); i++)
		mov_rsp(b, store, rec_scratch[i], 8 * gdb_slot[rec_scratch[i]]);
}

// rcx = GDB register @reg as the program had it at the site.
static void rec_reg_to_rcx(struct buf *b, unsigned reg, uint64_t site)
{
	if (reg == NS_ARCH_PAD_REG_RIP) {
		mov_imm64(b, HW_RCX, site);
		return;
	}
	unsigned hw = 0;
	while (hw < 15 && gdb_slot[hw] != reg)
		hw++;
	if (hw == HW_RSP) {
		lea_rsp(b, HW_RCX, FRAME);
		return;
	}
	bool saved = hw == HW_RAX;
	for (size_t i = 0; i < sizeof(rec_scratch); i++)
		saved |= rec_scratch[i] == hw;
	if (saved) {
		mov_rsp(b, false, HW_RCX, 8 * reg);
		return;
	}
	// mov rcx, hw
	put1(b, (uint8_t)(0x48 | (hw & 8 ? 4 : 0)));
	put1(b, 0x89);
	put1(b, (uint8_t)(0xc0 | ((hw & 7) << 3) | HW_RCX));
}

static struct ns_err *rec_check(const struct ns_arch_pad_record *r)
{
	if (!r->tmpl || r->len == 0 || r->len % 8 || r->len > NS_ARCH_PAD_REC_MAX)
		return ns_err_create(NS_ERR_INVALID, "inline record of %zu bytes", r->len);
	if (r->nfields > NS_ARCH_PAD_REC_FIELDS)
		return ns_err_create(NS_ERR_INVALID, "inline record with %zu fields", r->nfields);
	if (r->ring_size < r->len || (r->ring_size & (r->ring_size - 1)) ||
	    r->ring_size > (1ull << 30))
		return ns_err_create(NS_ERR_INVALID, "ring of %llu bytes for an inline record",
		                     (unsigned long long)r->ring_size);
	unsigned seqs = 0;
	for (size_t i = 0; i < r->nfields; i++) {
		const struct ns_arch_rec_field *f = &r->fields[i];
		unsigned size = f->kind == NS_ARCH_REC_TID ? 4 : 8;
		if (f->off % size || f->off + size > r->len || f->kind > NS_ARCH_REC_SEQ ||
		    (f->kind == NS_ARCH_REC_REG && f->reg > NS_ARCH_PAD_REG_RIP))
			return ns_err_create(NS_ERR_INVALID, "inline record field %zu (kind %u at %u)",
			                     i, f->kind, f->off);
		seqs += f->kind == NS_ARCH_REC_SEQ;
	}
	if (seqs > 1)
		return ns_err_create(NS_ERR_INVALID, "inline record with %u sequence fields", seqs);
	if (r->nreads > NS_ARCH_PAD_REC_READS || (r->nreads && !r->reads))
		return ns_err_create(NS_ERR_INVALID, "inline record with %zu reads", r->nreads);
	for (size_t i = 0; i < r->nreads; i++) {
		const struct ns_arch_rec_read *rd = &r->reads[i];
		bool ok = rd->base <= NS_ARCH_REC_AT_READ && rd->trace <= NS_ARCH_PAD_REC_TRACE_MAX &&
		          (rd->ref == 0 || rd->ref == 1 || rd->ref == 2 || rd->ref == 4 ||
		           rd->ref == 8) &&
		          (rd->trace || rd->ref) && (size_t)rd->data_off + rd->trace <= r->len &&
		          (rd->trace == 0 || rd->data_off >= 8) && rd->addr_off % 8 == 0 &&
		          (size_t)rd->addr_off + 8 <= r->len &&
		          (!rd->direct || rd->base == NS_ARCH_REC_ABS) &&
		          (rd->direct || r->read_fn) &&
		          (rd->base != NS_ARCH_REC_AT_REG || rd->from <= NS_ARCH_PAD_REG_RIP) &&
		          (rd->base != NS_ARCH_REC_AT_READ ||
		           (rd->from < i && r->reads[rd->from].ref));
		if (!ok)
			return ns_err_create(NS_ERR_INVALID,
			                     "inline record read %zu (base %u from %u, %u bytes at %u, "
			                     "ref %u)",
			                     i, rd->base, rd->from, rd->trace, rd->data_off, rd->ref);
	}
	return NULL;
}

/* ---- memory reads in inline records ---- */

// Slots of the register block the record path does not use (their registers stay live
// in it; the full path stores them from the live values): the values reads keep, and
// the read function's per-hit state.
static const uint8_t rd_val_slot[NS_ARCH_PAD_REC_READS] = {1, 6, 9, 10, 11, 12, 13, 14};
enum { RD_STATE = 8 * NS_ARCH_PAD_REG_EFLAGS };

// r8 = @n bytes at [@base + @disp], zero-extended (n = 1, 2, 4, 8).
static void load_r8(struct buf *b, unsigned n, int base, int32_t disp)
{
	if (n == 1)
		OP_MEM(b, false, HW_R8, base, disp, 0x0f, 0xb6); // movzx r8d, byte
	else if (n == 2)
		OP_MEM(b, false, HW_R8, base, disp, 0x0f, 0xb7); // movzx r8d, word
	else
		OP_MEM(b, n == 8, HW_R8, base, disp, 0x8b); // mov r8d / r8
}

// [@base + @disp] = the low @n bytes of r8.
static void store_r8(struct buf *b, unsigned n, int base, int32_t disp)
{
	if (n == 1) {
		OP_MEM(b, false, HW_R8, base, disp, 0x88);
		return;
	}
	if (n == 2)
		put1(b, 0x66);
	OP_MEM(b, n == 8, HW_R8, base, disp, 0x89);
}

// Call the read function (the subroutine at the end of the record path) for @n bytes
// from the address in rcx to [@base + @disp]; jump to @fail if it returns 0.
static void rd_call(struct buf *b, unsigned n, int base, int32_t disp, struct fixups *sub,
                    struct fixups *fail)
{
	OP_MEM(b, true, HW_R8, base, disp, 0x8d); // lea r8, [dst] (before the push moves rsp)
	put1(b, 0x68);                            // push len
	put4(b, n);
	put1(b, 0xe8); // call sub
	if (sub->n < sizeof(sub->at) / sizeof(sub->at[0]))
		sub->at[sub->n++] = b->n;
	else
		b->overflow = true;
	put4(b, 0);
	lea_rsp(b, HW_RSP, 8); // the length off again (lea: the flags stay)
	jcc_fix(b, CC_E, fail);
}

// Copy @n bytes from the address in rcx to [@base + @disp] (rdx: the record, rsp: a
// value slot), rcx kept. Jumps to @fail when the bytes cannot be read.
static void rd_copy(struct buf *b, const struct ns_arch_pad_record *r, bool direct, unsigned n,
                    int base, int32_t disp, struct fixups *sub, struct fixups *fail)
{
	if (direct) {
		// Always readable: plain loads, 8 bytes at a time, then the tail.
		unsigned off = 0;
		for (unsigned k = 8; k; k /= 2)
			for (; n - off >= k; off += k) {
				load_r8(b, k, HW_RCX, (int32_t)off);
				store_r8(b, k, base, disp + (int32_t)off);
			}
		return;
	}
	if (n != 1 && n != 2 && n != 4 && n != 8) {
		rd_call(b, n, base, disp, sub, fail);
		return;
	}
	// The hitting thread's stack (addr - lo < limit): a plain load.
	PUT(b, 0x49, 0x89, 0xc8);                           // mov r8, rcx
	OP_MEM(b, true, HW_R8, -1, r->tls_stk_lo, 0x2b);    // sub r8, fs:[lo]
	OP_MEM(b, true, HW_R8, -1, r->tls_stk_limit, 0x3b); // cmp r8, fs:[limit]
	put1(b, 0x73);                                      // jae slow
	size_t slow = b->n;
	put1(b, 0);
	load_r8(b, n, HW_RCX, 0);
	store_r8(b, n, base, disp);
	put1(b, 0xeb); // jmp done
	size_t done = b->n;
	put1(b, 0);
	b->p[slow] = (uint8_t)(b->n - slow - 1);
	rd_call(b, n, base, disp, sub, fail);
	b->p[done] = (uint8_t)(b->n - done - 1);
}

// The reads (arch.h "Memory reads"); jumps to @fail when one cannot be done.
static void rd_emit(struct buf *b, const struct ns_arch_pad_spec *spec, struct fixups *sub,
                    struct fixups *fail)
{
	const struct ns_arch_pad_record *r = spec->record;
	bool calls = false;
	for (size_t i = 0; i < r->nreads; i++)
		calls |= !r->reads[i].direct;
	if (calls) {
		OP_MEM(b, true, 0, HW_RSP, RD_STATE, 0xc7); // mov qword [state], 0
		put4(b, 0);
	}
	for (size_t i = 0; i < r->nreads; i++) {
		const struct ns_arch_rec_read *rd = &r->reads[i];
		// rcx = the address
		if (rd->base == NS_ARCH_REC_ABS) {
			mov_imm64(b, HW_RCX, rd->disp);
		} else {
			if (rd->base == NS_ARCH_REC_AT_REG)
				rec_reg_to_rcx(b, rd->from, spec->site);
			else
				mov_rsp(b, false, HW_RCX, 8 * rd_val_slot[rd->from]);
			int64_t d = (int64_t)rd->disp;
			if (d && fits32(d)) {
				PUT(b, 0x48, 0x81, 0xc1); // add rcx, imm32
				put4(b, (uint32_t)(int32_t)d);
			} else if (d) {
				mov_imm64(b, HW_R8, rd->disp);
				PUT(b, 0x4c, 0x01, 0xc1); // add rcx, r8
			}
		}
		if (rd->addr_off)
			OP_MEM(b, true, HW_RCX, HW_RDX, rd->addr_off, 0x89); // mov [rdx+off], rcx
		if (rd->trace)
			rd_copy(b, r, rd->direct, rd->trace, HW_RDX, rd->data_off, sub, fail);
		if (!rd->ref)
			continue;
		int32_t val = 8 * rd_val_slot[i];
		if (rd->ref <= rd->trace) {
			load_r8(b, rd->ref, HW_RDX, rd->data_off);
			mov_rsp(b, true, HW_R8, val);
		} else {
			OP_MEM(b, true, 0, HW_RSP, val, 0xc7); // mov qword [rsp+val], 0
			put4(b, 0);
			rd_copy(b, r, rd->direct, rd->ref, HW_RSP, val, sub, fail);
		}
	}
}

// The subroutine the reads call: rcx = address, r8 = destination, [rsp+8] = length;
// returns with ZF set if read_fn returned 0, every register but the flags kept.
static void rd_sub(struct buf *b, const struct ns_arch_pad_record *r)
{
	PUT(b, 0x50, 0x51, 0x52, 0x56, 0x57, 0x41, 0x50, 0x41, 0x51, 0x41, 0x52, 0x41,
	    0x53);                      // push rax rcx rdx rsi rdi r8 r9 r10 r11
	PUT(b, 0x55);                   // push rbp
	PUT(b, 0x48, 0x89, 0xe5);       // mov rbp, rsp
	PUT(b, 0x48, 0x83, 0xe4, 0xf0); // and rsp, -16
	PUT(b, 0x4c, 0x89, 0xc7);       // mov rdi, r8
	PUT(b, 0x48, 0x89, 0xce);       // mov rsi, rcx
	// The caller's rsp (the register block) is rbp + 10 pushes + the return address
	// + the length.
	enum { CALLER = 8 * 10 + 16 };
	PUT(b, 0x48, 0x8b, 0x55, CALLER - 8); // mov rdx, [rbp+len]
	PUT(b, 0x48, 0x8d, 0x8d);             // lea rcx, [rbp+state]
	put4(b, CALLER + RD_STATE);
	mov_imm64(b, HW_RAX, r->read_fn);
	PUT(b, 0xff, 0xd0);       // call rax
	PUT(b, 0x48, 0x89, 0xec); // mov rsp, rbp
	PUT(b, 0x5d);             // pop rbp
	PUT(b, 0x48, 0x85, 0xc0); // test rax, rax
	PUT(b, 0x41, 0x5b, 0x41, 0x5a, 0x41, 0x59, 0x41, 0x58, 0x5f, 0x5e, 0x5a, 0x59,
	    0x58); // pop r11 r10 r9 r8 rdi rsi rdx rcx rax (flags kept)
	PUT(b, 0xc3); // ret
}

// One field of the record at rdx (r8: the TSC, rsi: the ring).
static void rec_field(struct buf *b, const struct ns_arch_pad_spec *spec,
                      const struct ns_arch_rec_field *f)
{
	const struct ns_arch_pad_record *r = spec->record;
	unsigned src = HW_RCX;
	switch (f->kind) {
	case NS_ARCH_REC_REG:
		rec_reg_to_rcx(b, f->reg, spec->site);
		break;
	case NS_ARCH_REC_TID:
		OP_MEM(b, false, HW_RCX, -1, r->tls + 28, 0x8b);  // mov ecx, fs:[T.tid]
		OP_MEM(b, false, HW_RCX, HW_RDX, f->off, 0x89); // mov [rdx+off], ecx
		return;
	case NS_ARCH_REC_TSC:
		src = HW_R8;
		break;
	case NS_ARCH_REC_SEQ:
		OP_MEM(b, true, HW_RCX, HW_RSI, (int32_t)r->seq_off, 0x8b); // mov rcx, [rsi+seq]
		break;
	}
	OP_MEM(b, true, src, HW_RDX, f->off, 0x89); // mov [rdx+off], src
	if (f->kind == NS_ARCH_REC_SEQ)
		OP_MEM(b, true, 0, HW_RSI, (int32_t)r->seq_off, 0xff); // inc qword [rsi+seq]
}

// The record path (arch.h, "Inline records"). Entered after lahf_entry with the armed
// byte already seen set; jumps to *@full (scratch registers to restore, then the full
// path) when it cannot write the record, else falls through with every register but rax
// as the program had it. rax: the armed byte's rip-relative cmp is fixed up by the
// caller through *@armed.
static void rec_emit(struct buf *b, const struct ns_arch_pad_spec *spec, struct fixups *full,
                     struct fixups *armed)
{
	const struct ns_arch_pad_record *r = spec->record;
	struct fixups early = {.n = 0}, unbusy = {.n = 0}, unmark = {.n = 0}, sub = {.n = 0};
	int32_t T = r->tls;
	rec_scratch_io(b, true);
	OP_MEM(b, false, 7, -1, r->tls_busy, 0x80); // cmp byte fs:[busy], 0
	put1(b, 0);
	jcc_fix(b, CC_NE, &early);
	OP_MEM(b, true, HW_RSI, -1, T + 0, 0x8b); // mov rsi, fs:[T.ring]
	PUT(b, 0x48, 0x85, 0xf6);                 // test rsi, rsi
	jcc_fix(b, CC_E, &early);
	OP_MEM(b, true, HW_RDI, -1, T + 16, 0x8b); // mov rdi, fs:[T.slot]
	PUT(b, 0x48, 0x85, 0xff);                  // test rdi, rdi
	jcc_fix(b, CC_E, &early);
	OP_MEM(b, false, HW_RCX, -1, T + 24, 0x8b); // mov ecx, fs:[T.gen]
	mov_imm64(b, HW_RDX, r->gen_addr);
	PUT(b, 0x3b, 0x0a); // cmp ecx, [rdx]
	jcc_fix(b, CC_NE, &early);
	OP_MEM(b, false, 0, HW_RDI, (int32_t)r->busy_off, 0xff); // inc dword [rdi+busy]
	// The armed byte again, now that busy is visible (the control thread disarms,
	// serialises every core, then waits for busy == 0).
	PUT(b, 0x80, 0x3d); // cmp byte [rip+armed], 0
	if (armed->n < sizeof(armed->at) / sizeof(armed->at[0]))
		armed->at[armed->n++] = b->n;
	put4(b, 0);
	put1(b, 0);
	jcc_fix(b, CC_E, &unbusy);
	OP_MEM(b, false, 0, -1, r->tls_busy, 0xc6); // mov byte fs:[busy], 1
	put1(b, 1);
	bool tsc = false;
	for (size_t i = 0; i < r->nfields; i++)
		tsc |= r->fields[i].kind == NS_ARCH_REC_TSC;
	if (tsc) {
		PUT(b, 0x0f, 0x31);             // rdtsc
		PUT(b, 0x48, 0xc1, 0xe2, 0x20); // shl rdx, 32
		PUT(b, 0x48, 0x09, 0xc2);       // or rdx, rax
		PUT(b, 0x49, 0x89, 0xd0);       // mov r8, rdx
	}
	int32_t room = (int32_t)(r->ring_size - r->len);
	OP_MEM(b, true, HW_RAX, HW_RSI, (int32_t)r->head_off, 0x8b); // mov rax, [rsi+head]
	PUT(b, 0x48, 0x89, 0xc2);                                    // mov rdx, rax
	OP_MEM(b, true, HW_RDX, HW_RSI, (int32_t)r->tail_seen_off, 0x2b); // sub rdx, [rsi+seen]
	PUT(b, 0x48, 0x81, 0xfa);                                    // cmp rdx, room
	put4(b, (uint32_t)room);
	// No room by the tail last seen: read the consumer's (its cache line), keep it.
	put1(b, 0x76); // jbe roomy
	size_t roomy = b->n;
	put1(b, 0);
	OP_MEM(b, true, HW_RDX, HW_RSI, (int32_t)r->tail_off, 0x8b);      // mov rdx, [rsi+tail]
	OP_MEM(b, true, HW_RDX, HW_RSI, (int32_t)r->tail_seen_off, 0x89); // mov [rsi+seen], rdx
	PUT(b, 0x48, 0xf7, 0xda);                                         // neg rdx
	PUT(b, 0x48, 0x01, 0xc2);                                         // add rdx, rax
	PUT(b, 0x48, 0x81, 0xfa);                                         // cmp rdx, room
	put4(b, (uint32_t)room);
	jcc_fix(b, CC_A, &unmark);
	b->p[roomy] = (uint8_t)(b->n - roomy - 1);
	PUT(b, 0x48, 0x89, 0xc2); // mov rdx, rax
	PUT(b, 0x48, 0x81, 0xe2); // and rdx, size - 1
	put4(b, (uint32_t)(r->ring_size - 1));
	PUT(b, 0x48, 0x81, 0xfa); // cmp rdx, room
	put4(b, (uint32_t)room);
	jcc_fix(b, CC_A, &unmark);
	OP_MEM(b, true, HW_RDX, -1, T + 8, 0x03); // add rdx, fs:[T.data]
	// The template, then the fields over it: not the words an 8-byte field (a
	// register, the time stamp, the sequence number) writes whole anyway. Once the
	// record is begun, every field is written before head moves.
	uint64_t whole = 0; // bit off / 8
	for (size_t i = 0; i < r->nfields; i++)
		if (r->fields[i].kind != NS_ARCH_REC_TID)
			whole |= 1ull << (r->fields[i].off / 8);
	for (size_t off = 0; off < r->len; off += 8) {
		if (whole & (1ull << (off / 8)))
			continue;
		int64_t w;
		memcpy(&w, r->tmpl + off, 8);
		if (w >= INT32_MIN && w <= INT32_MAX) {
			OP_MEM(b, true, 0, HW_RDX, (int32_t)off, 0xc7); // mov qword [rdx+off], imm32
			put4(b, (uint32_t)(int32_t)w);
		} else {
			mov_imm64(b, HW_RCX, (uint64_t)w);
			OP_MEM(b, true, HW_RCX, HW_RDX, (int32_t)off, 0x89); // mov [rdx+off], rcx
		}
	}
	// The sequence number last, after the reads (which may abandon the record).
	for (size_t i = 0; i < r->nfields; i++)
		if (r->fields[i].kind != NS_ARCH_REC_SEQ)
			rec_field(b, spec, &r->fields[i]);
	if (r->nreads)
		rd_emit(b, spec, &sub, &unmark);
	for (size_t i = 0; i < r->nfields; i++)
		if (r->fields[i].kind == NS_ARCH_REC_SEQ)
			rec_field(b, spec, &r->fields[i]);
	PUT(b, 0x48, 0x05); // add rax, len
	put4(b, (uint32_t)r->len);
	OP_MEM(b, true, HW_RAX, HW_RSI, (int32_t)r->head_off, 0x89); // mov [rsi+head], rax
	OP_MEM(b, false, 0, -1, r->tls_busy, 0xc6);                  // mov byte fs:[busy], 0
	put1(b, 0);
	OP_MEM(b, true, 0, HW_RDI, (int32_t)r->hits_off, 0x83); // add qword [rdi+hits], 1
	put1(b, 1);
	OP_MEM(b, false, 1, HW_RDI, (int32_t)r->busy_off, 0xff); // dec dword [rdi+busy]
	rec_scratch_io(b, false);
	// Skip the way out to the full path.
	put1(b, 0xe9);
	size_t done_fix = b->n;
	put4(b, 0);
	resolve(b, &unmark, b->n);
	OP_MEM(b, false, 0, -1, r->tls_busy, 0xc6); // mov byte fs:[busy], 0
	put1(b, 0);
	resolve(b, &unbusy, b->n);
	OP_MEM(b, false, 1, HW_RDI, (int32_t)r->busy_off, 0xff); // dec dword [rdi+busy]
	// The full path saves every register from the live values: restore ours first.
	size_t full_here = b->n;
	rec_scratch_io(b, false);
	put1(b, 0xe9);
	if (full->n < sizeof(full->at) / sizeof(full->at[0]))
		full->at[full->n++] = b->n;
	put4(b, 0);
	if (sub.n) {
		resolve(b, &sub, b->n);
		rd_sub(b, r);
	}
	rel32_at(b, done_fix, b->n);
	resolve(b, &early, full_here);
}

static struct ns_err *block(const struct ns_arch_pad_spec *spec, struct buf *b,
                            struct ns_arch_pad *out)
{
	if (b->overflow)
		return ns_err_create(NS_ERR_INVALID, "pad buffer too small (%zu bytes)", b->cap);
	size_t block_off = b->n;
	struct ns_arch_reloc rel_out;
	struct ns_err *err = ns_arch_relocate_block(spec->code, spec->site, spec->window_len,
	                                            spec->pad_addr + block_off, b->p + block_off,
	                                            b->cap - block_off, &rel_out);
	if (err)
		return ns_err_wrap(err, "jump pad for 0x%llx", (unsigned long long)spec->site);
	b->n += rel_out.len;
	out->block_off = block_off;
	out->reloc = rel_out;
	return NULL;
}

struct ns_err *ns_arch_pad_emit(const struct ns_arch_pad_spec *spec, uint8_t *dst, size_t cap,
                                struct ns_arch_pad *out)
{
	enum ns_arch_pad_flags_mode mode = spec->flags;
	if (mode == NS_ARCH_PAD_FLAGS_AUTO)
		mode = ns_arch_have_lahf64() ? NS_ARCH_PAD_FLAGS_LAHF : NS_ARCH_PAD_FLAGS_PUSHF;
	bool lahf = mode == NS_ARCH_PAD_FLAGS_LAHF;
	struct buf b = {dst, cap, 0, false};
	struct ns_err *err;
	out->armed_off = 0;
	out->record_armed_off = 0;
	out->flags = mode;

	if (!lahf) {
		lea_rsp(&b, HW_RSP, -(FRAME - 8 * NS_ARCH_PAD_REG_EFLAGS - 8));
		PUT(&b, 0x9c); // pushfq into the block's eflags slot
		lea_rsp(&b, HW_RSP, -(8 * NS_ARCH_PAD_REG_EFLAGS));
		full_path(&b, spec, false);
		mov_rsp(&b, false, HW_RAX, 0);
		lea_rsp(&b, HW_RSP, 8 * NS_ARCH_PAD_REG_EFLAGS);
		PUT(&b, 0x9d); // popfq
		lea_rsp(&b, HW_RSP, FRAME - 8 * NS_ARCH_PAD_REG_EFLAGS - 8);
		if ((err = block(spec, &b, out)))
			return err;
		out->len = b.n;
		return NULL;
	}
	lahf_entry(&b);
	if (spec->record) {
		if (spec->guard_len)
			return ns_err_create(NS_ERR_INVALID,
			                     "a pad has a guard or an inline record, not both");
		if ((err = rec_check(spec->record)))
			return err;
		struct fixups full = {.n = 0}, armed = {.n = 0};
		PUT(&b, 0x80, 0x3d); // cmp byte [rip+armed], 0
		armed.at[armed.n++] = b.n;
		put4(&b, 0);
		put1(&b, 0);
		jcc_fix(&b, CC_E, &full);
		rec_emit(&b, spec, &full, &armed);
		size_t tail = b.n;
		lahf_tail(&b);
		if ((err = block(spec, &b, out)))
			return err;
		resolve(&b, &full, b.n);
		full_path(&b, spec, true);
		put1(&b, 0xe9); // jmp tail
		put4(&b, (uint32_t)(int32_t)((int64_t)tail - (int64_t)(b.n + 4)));
		for (size_t i = 0; i < armed.n; i++)
			rel32_at(&b, armed.at[i], b.n - 1);
		out->record_armed_off = b.n;
		put1(&b, 1);
		if (b.overflow)
			return ns_err_create(NS_ERR_INVALID, "pad buffer too small (%zu bytes)", cap);
		out->len = b.n;
		return NULL;
	}
	if (!spec->guard_len) {
		full_path(&b, spec, true);
		lahf_tail(&b);
		if ((err = block(spec, &b, out)))
			return err;
		out->len = b.n;
		return NULL;
	}
	if (spec->guard_clobber & ~0x0f0du)
		return ns_err_create(NS_ERR_INVALID,
		                     "guard clobbers 0x%x: only rax rcx rdx r8-r11 may be",
		                     (unsigned)spec->guard_clobber);
	// With a guard: the condition first, on the program's live registers; the full
	// path only if it holds, cannot be decided, or the guard is disarmed.
	PUT(&b, 0x80, 0x3d); // cmp byte [rip+armed], 0
	size_t armed_fix = b.n;
	put4(&b, 0);
	put1(&b, 0);
	PUT(&b, 0x0f, 0x84); // je slow_entry
	size_t slow_entry_fix = b.n;
	put4(&b, 0);
	clobbers(&b, spec->guard_clobber, true);
	put(&b, spec->guard, spec->guard_len);
	PUT(&b, 0x48, 0x85, 0xc0); // test rax, rax
	PUT(&b, 0x0f, 0x85);       // jnz slow_restore
	size_t slow_restore_fix = b.n;
	put4(&b, 0);
	clobbers(&b, spec->guard_clobber, false);
	size_t tail = b.n;
	lahf_tail(&b);
	if ((err = block(spec, &b, out)))
		return err;
	rel32_at(&b, slow_restore_fix, b.n);
	clobbers(&b, spec->guard_clobber, false);
	rel32_at(&b, slow_entry_fix, b.n);
	full_path(&b, spec, true);
	put1(&b, 0xe9); // jmp tail
	put4(&b, (uint32_t)(int32_t)((int64_t)tail - (int64_t)(b.n + 4)));
	// The armed byte: cmp's rip-relative operand counts from the end of the
	// instruction (disp32 then imm8).
	rel32_at(&b, armed_fix, b.n - 1);
	out->armed_off = b.n;
	put1(&b, 1);
	if (b.overflow)
		return ns_err_create(NS_ERR_INVALID, "pad buffer too small (%zu bytes)", cap);
	out->len = b.n;
	return NULL;
}
