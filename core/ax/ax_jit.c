/* core/ax JIT: verified agent-expression bytecode to x86-64 machine code (see ax.h).
 *
 * One pass over the reachable instructions in offset order. The stack depth at each
 * instruction is known statically (the verifier guarantees it does not depend on the
 * path), so stack item i always lives in the same place: r8..r11 for the bottom four,
 * [rsp + OFF_SLOTS + 8*(i-4)] above. rdi holds the register block and rsi the ctx for
 * the whole run; rax, rcx and rdx are scratch. Helpers (read_mem, read_reg, trace_mem)
 * are called with rdi, rsi and the live pool registers saved in the frame.
 *
 * Small peepholes do the work that matters for conditions: a constant (with its ext)
 * feeding an ALU op, compare or shift becomes an immediate operand; a compare (or
 * log_not) followed by log_nots and if_goto becomes cmp + jcc; swap before a compare
 * flips the condition code. None of them crosses a jump target.
 *
 * Rarely taken code (error exits, the out-of-line range checks and helper calls for
 * memory reads, the INT64_MIN / -1 division case) goes to a second "cold" section
 * appended after the main one, so the hot path falls through. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ax/ax_internal.h"

enum { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11 };
enum { REGS = RDI, CTX = RSI };
enum { NPOOL = 4 };
static const uint8_t pool[NPOOL] = {R8, R9, R10, R11};
/* Frame: [rsp+0] helper output, [rsp+8] rdi, [rsp+16] rsi, [rsp+24..56) r8..r11,
 * then the stack items above the pool. */
enum { OFF_SCRATCH = 0, OFF_SAVE_RDI = 8, OFF_SAVE_RSI = 16, OFF_SAVE_POOL = 24, OFF_SLOTS = 56 };

enum {
	CC_B = 0x2,
	CC_AE = 0x3,
	CC_E = 0x4,
	CC_NE = 0x5,
	CC_BE = 0x6,
	CC_A = 0x7,
	CC_L = 0xc,
	CC_G = 0xf,
};

_Static_assert(offsetof(struct ns_ax_jit_ctx, status) == offsetof(struct ns_ax_jit_ctx, pc) + 4,
               "END stores pc and status with one 64-bit store");

struct sec {
	uint8_t *p;
	size_t len, cap;
};

struct label {
	int sec;
	size_t off;
	bool bound;
};

struct fixup {
	int sec;
	size_t at; /* offset of a rel32 in section sec */
	unsigned label;
};

struct jit {
	const uint8_t *code;
	size_t len;
	const struct ns_ax_jit_options *opt;
	int16_t *depth; /* at each reachable instruction start, else -1 */
	uint8_t *target;
	struct sec s[2]; /* main, cold */
	int cur;
	struct label *labels; /* 0..len-1: bytecode offsets */
	size_t nlabels, caplabels;
	struct fixup *fix;
	size_t nfix, capfix;
	bool oom;
	bool has_frame;
	uint32_t frame;
	/* Guard mode (ax.h): the registers written (hardware numbers), the shared exit
	 * for "cannot tell" (cold, made on first use) and the fragment's end. */
	const struct ns_ax_jit_guard *guard;
	unsigned clobber_hw;
	unsigned bail, end;
	bool have_bail;
	size_t end_jmp_at, end_jmp_fix; /* the last "jmp end" in main (SIZE_MAX: none) */
};

/* ---- emission ---------------------------------------------------------------- */

static void b1(struct jit *j, uint8_t x)
{
	struct sec *s = &j->s[j->cur];
	if (s->len == s->cap) {
		size_t nc = s->cap ? 2 * s->cap : 512;
		uint8_t *p = realloc(s->p, nc);
		if (!p) {
			j->oom = true;
			return;
		}
		s->p = p;
		s->cap = nc;
	}
	s->p[s->len++] = x;
}

static void b32(struct jit *j, uint32_t x)
{
	for (int i = 0; i < 4; i++)
		b1(j, (uint8_t)(x >> (8 * i)));
}

static unsigned new_label(struct jit *j)
{
	if (j->nlabels == j->caplabels) {
		size_t nc = j->caplabels * 2 + 16;
		struct label *p = realloc(j->labels, nc * sizeof(*p));
		if (!p) {
			j->oom = true;
			return 0;
		}
		j->labels = p;
		j->caplabels = nc;
	}
	j->labels[j->nlabels] = (struct label){0, 0, false};
	return (unsigned)j->nlabels++;
}

static void bind(struct jit *j, unsigned l)
{
	if (j->oom)
		return;
	j->labels[l] = (struct label){j->cur, j->s[j->cur].len, true};
}

static void rel32_to(struct jit *j, unsigned l)
{
	if (j->nfix == j->capfix) {
		size_t nc = j->capfix * 2 + 16;
		struct fixup *p = realloc(j->fix, nc * sizeof(*p));
		if (!p) {
			j->oom = true;
			return;
		}
		j->fix = p;
		j->capfix = nc;
	}
	j->fix[j->nfix++] = (struct fixup){j->cur, j->s[j->cur].len, l};
	b32(j, 0);
}

static void jmp(struct jit *j, unsigned l)
{
	b1(j, 0xe9);
	rel32_to(j, l);
}

static void jcc(struct jit *j, unsigned cc, unsigned l)
{
	b1(j, 0x0f);
	b1(j, (uint8_t)(0x80 | cc));
	rel32_to(j, l);
}

/* A register or [base + disp] operand. */
struct rm {
	bool mem;
	uint8_t r; /* the register, or the base */
	int32_t disp;
};

static struct rm reg_(unsigned r)
{
	return (struct rm){false, (uint8_t)r, 0};
}

static struct rm mem_(unsigned base, int32_t disp)
{
	return (struct rm){true, (uint8_t)base, disp};
}

// Opcode @opc (1 to 3 bytes, packed big-endian: 0x0faf) with ModRM reg field @reg and
// operand @m, REX as needed (W if @w).
static void op(struct jit *j, bool w, uint32_t opc, unsigned reg, struct rm m)
{
	uint8_t rex = (uint8_t)(0x40 | (w ? 8 : 0) | ((reg & 8) ? 4 : 0) | ((m.r & 8) ? 1 : 0));
	if (rex != 0x40)
		b1(j, rex);
	if (opc > 0xffff)
		b1(j, (uint8_t)(opc >> 16));
	if (opc > 0xff)
		b1(j, (uint8_t)(opc >> 8));
	b1(j, (uint8_t)opc);
	if (!m.mem) {
		b1(j, (uint8_t)(0xc0 | (reg & 7) << 3 | (m.r & 7)));
		return;
	}
	unsigned base = m.r & 7;
	unsigned mod = (m.disp == 0 && base != 5) ? 0 : (m.disp >= -128 && m.disp <= 127) ? 1 : 2;
	b1(j, (uint8_t)(mod << 6 | (reg & 7) << 3 | base));
	if (base == 4)
		b1(j, 0x24); // SIB: base rsp/r12, no index
	if (mod == 1)
		b1(j, (uint8_t)m.disp);
	else if (mod == 2)
		b32(j, (uint32_t)m.disp);
}

static void mov_r_rm(struct jit *j, unsigned r, struct rm m)
{
	if (!m.mem && m.r == r)
		return;
	op(j, true, 0x8b, r, m);
}

static void mov_rm_r(struct jit *j, struct rm m, unsigned r)
{
	if (!m.mem && m.r == r)
		return;
	op(j, true, 0x89, r, m);
}

static bool fits32(uint64_t v)
{
	return (int64_t)v == (int32_t)v;
}

// ALU group 1 (/@digit: add 0, or 1, and 4, sub 5, xor 6, cmp 7) on @m with a
// sign-extended immediate @v (fits32), the imm8 form when it fits.
static void alu_imm(struct jit *j, unsigned digit, struct rm m, uint64_t v)
{
	if ((int64_t)v == (int8_t)v) {
		op(j, true, 0x83, digit, m);
		b1(j, (uint8_t)v);
	} else {
		op(j, true, 0x81, digit, m);
		b32(j, (uint32_t)v);
	}
}

static void mov_imm(struct jit *j, unsigned r, uint64_t v)
{
	if (v == 0) {
		op(j, false, 0x33, r, reg_(r)); // xor r32, r32
	} else if (v <= 0xffffffffu) {
		if (r & 8)
			b1(j, 0x41);
		b1(j, (uint8_t)(0xb8 | (r & 7))); // mov r32, imm32 (zero-extends)
		b32(j, (uint32_t)v);
	} else if (fits32(v)) {
		op(j, true, 0xc7, 0, reg_(r)); // mov r64, simm32
		b32(j, (uint32_t)v);
	} else {
		b1(j, (uint8_t)(0x48 | ((r & 8) ? 1 : 0)));
		b1(j, (uint8_t)(0xb8 | (r & 7))); // movabs
		for (int i = 0; i < 8; i++)
			b1(j, (uint8_t)(v >> (8 * i)));
	}
}

// Zero-extending load of @n bytes from @m into @r.
static void load_sized(struct jit *j, unsigned r, struct rm m, unsigned n)
{
	if (n == 1)
		op(j, false, 0x0fb6, r, m);
	else if (n == 2)
		op(j, false, 0x0fb7, r, m);
	else
		op(j, n == 8, 0x8b, r, m);
}

static void epilogue(struct jit *j)
{
	if (j->has_frame) {
		op(j, true, 0x81, 0, reg_(RSP)); // add rsp, frame
		b32(j, j->frame);
	}
	b1(j, 0xc3);
}

/* ---- stack items ------------------------------------------------------------- */

static struct rm slot(unsigned i)
{
	if (i < NPOOL)
		return reg_(pool[i]);
	return mem_(RSP, (int32_t)(OFF_SLOTS + 8 * (i - NPOOL)));
}

static void load(struct jit *j, unsigned r, unsigned i)
{
	mov_r_rm(j, r, slot(i));
}

static void store(struct jit *j, unsigned i, unsigned r)
{
	mov_rm_r(j, slot(i), r);
}

static void copy(struct jit *j, unsigned dst, unsigned src)
{
	struct rm d = slot(dst), s = slot(src);
	if (dst == src)
		return;
	if (!d.mem) {
		mov_r_rm(j, d.r, s);
	} else if (!s.mem) {
		mov_rm_r(j, d, s.r);
	} else {
		mov_r_rm(j, RAX, s);
		mov_rm_r(j, d, RAX);
	}
}

static void set_imm(struct jit *j, unsigned i, uint64_t v)
{
	struct rm d = slot(i);
	if (!d.mem) {
		mov_imm(j, d.r, v);
	} else if (fits32(v)) {
		op(j, true, 0xc7, 0, d);
		b32(j, (uint32_t)v);
	} else {
		mov_imm(j, RAX, v);
		mov_rm_r(j, d, RAX);
	}
}

/* ---- exits and helper calls ---------------------------------------------------- */

// Cold exit: status @st at @pc with the fault address from item @fslot (if >= 0) or
// @fault. Returns its label.
static unsigned guard_bail(struct jit *j);

static unsigned stub(struct jit *j, enum ns_ax_status st, size_t pc, int fslot, uint64_t fault)
{
	if (j->guard)
		return guard_bail(j);
	unsigned l = new_label(j);
	int saved = j->cur;
	j->cur = 1;
	bind(j, l);
	op(j, false, 0xc7, 0, mem_(CTX, offsetof(struct ns_ax_jit_ctx, status)));
	b32(j, st);
	op(j, false, 0xc7, 0, mem_(CTX, offsetof(struct ns_ax_jit_ctx, pc)));
	b32(j, (uint32_t)pc);
	if (fslot >= 0)
		load(j, RAX, (unsigned)fslot);
	else
		mov_imm(j, RAX, fault);
	mov_rm_r(j, mem_(CTX, offsetof(struct ns_ax_jit_ctx, fault_addr)), RAX);
	mov_imm(j, RAX, 0);
	epilogue(j);
	j->cur = saved;
	return l;
}

// Guard mode: rax = 1 ("run the full path") and on to the end, in the cold section.
static unsigned guard_bail(struct jit *j)
{
	if (j->have_bail)
		return j->bail;
	j->have_bail = true;
	j->bail = new_label(j);
	int saved = j->cur;
	j->cur = 1;
	bind(j, j->bail);
	mov_imm(j, RAX, 1);
	jmp(j, j->end);
	j->cur = saved;
	return j->bail;
}

// opc reg, fs:[disp32] (an absolute address in the fs segment: ModRM rm=100, SIB 0x25).
static void op_fs(struct jit *j, uint8_t opc, unsigned reg, int32_t disp)
{
	b1(j, 0x64);
	b1(j, (uint8_t)(0x48 | ((reg & 8) ? 4 : 0)));
	b1(j, opc);
	b1(j, (uint8_t)((reg & 7) << 3 | 4));
	b1(j, 0x25);
	b32(j, (uint32_t)disp);
}

static void save_live(struct jit *j, unsigned live)
{
	mov_rm_r(j, mem_(RSP, OFF_SAVE_RDI), RDI);
	mov_rm_r(j, mem_(RSP, OFF_SAVE_RSI), RSI);
	for (unsigned i = 0; i < live && i < NPOOL; i++)
		mov_rm_r(j, mem_(RSP, (int32_t)(OFF_SAVE_POOL + 8 * i)), pool[i]);
}

static void restore_live(struct jit *j, unsigned live)
{
	mov_r_rm(j, RDI, mem_(RSP, OFF_SAVE_RDI));
	mov_r_rm(j, RSI, mem_(RSP, OFF_SAVE_RSI));
	for (unsigned i = 0; i < live && i < NPOOL; i++)
		mov_r_rm(j, pool[i], mem_(RSP, (int32_t)(OFF_SAVE_POOL + 8 * i)));
}

// rax = ctx->@field; jz @l if it is NULL.
static void load_fn(struct jit *j, size_t field, unsigned l)
{
	mov_r_rm(j, RAX, mem_(CTX, (int32_t)field));
	op(j, true, 0x85, RAX, reg_(RAX)); // test rax, rax
	jcc(j, CC_E, l);
}

static void call_rax(struct jit *j)
{
	op(j, false, 0xff, 2, reg_(RAX));
}

// Item @d-1 = n bytes at item @d-1, through read_mem (fault: jump to @flt).
static void slow_read(struct jit *j, unsigned d, unsigned n, unsigned flt)
{
	load_fn(j, offsetof(struct ns_ax_jit_ctx, read_mem), flt);
	save_live(j, d);
	load(j, RDX, d - 1);
	mov_r_rm(j, RDI, mem_(CTX, offsetof(struct ns_ax_jit_ctx, user)));
	op(j, true, 0x8d, RSI, mem_(RSP, OFF_SCRATCH)); // lea rsi, [rsp]
	mov_imm(j, RCX, n);
	call_rax(j);
	restore_live(j, d);
	op(j, false, 0x85, RAX, reg_(RAX)); // test eax, eax
	jcc(j, CC_NE, flt);
	load_sized(j, RAX, mem_(RSP, OFF_SCRATCH), n);
	store(j, d - 1, RAX);
}

// rcx = @r - fast[i].lo; cmp rcx, fast[i].limit
static void range_check(struct jit *j, unsigned r, unsigned i)
{
	int32_t base = (int32_t)(offsetof(struct ns_ax_jit_ctx, fast) +
	                         i * sizeof(struct ns_ax_jit_range));
	mov_r_rm(j, RCX, reg_(r));
	op(j, true, 0x2b, RCX, mem_(CTX, base + (int32_t)offsetof(struct ns_ax_jit_range, lo)));
	op(j, true, 0x3b, RCX, mem_(CTX, base + (int32_t)offsetof(struct ns_ax_jit_range, limit)));
}

static void emit_ref(struct jit *j, unsigned d, unsigned n, size_t pc)
{
	if (j->guard) {
		// Only this thread's stack range (TLS), else "cannot tell".
		unsigned bail = guard_bail(j);
		unsigned r = slot(d - 1).r;
		if (!j->guard->tls) {
			jmp(j, bail);
			return;
		}
		mov_r_rm(j, RCX, reg_(r));
		op_fs(j, 0x2b, RCX, j->guard->tls_lo);    // sub rcx, fs:[lo]
		op_fs(j, 0x3b, RCX, j->guard->tls_limit); // cmp rcx, fs:[limit]
		jcc(j, CC_AE, bail);
		load_sized(j, r, mem_(r, 0), n);
		return;
	}
	unsigned nfast = j->opt->nfast;
	// the exit first: it goes to the cold section too, and must not land at "cold"
	unsigned flt = stub(j, NS_AX_FAULT, pc, (int)d - 1, 0);
	if (nfast == 0) {
		slow_read(j, d, n, flt);
		return;
	}
	unsigned cold = new_label(j), fast = new_label(j), done = new_label(j);
	struct rm a = slot(d - 1);
	unsigned r = a.mem ? RAX : a.r; // the address, and then the value
	if (a.mem)
		load(j, RAX, d - 1);
	range_check(j, r, 0);
	jcc(j, CC_AE, cold);
	bind(j, fast);
	load_sized(j, r, mem_(r, 0), n);
	store(j, d - 1, r);
	bind(j, done);
	j->cur = 1;
	bind(j, cold);
	for (unsigned i = 1; i < nfast; i++) {
		range_check(j, r, i);
		jcc(j, CC_B, fast);
	}
	slow_read(j, d, n, flt);
	jmp(j, done);
	j->cur = 0;
}

// trace_mem(user, item @addr, item @lenslot or @len, @nz) with @d items live.
static void emit_trace(struct jit *j, unsigned d, unsigned addr, int lenslot, uint64_t len, bool nz,
                       size_t pc)
{
	unsigned skip = new_label(j);
	unsigned full = stub(j, NS_AX_TRACE_FULL, pc, -1, 0);
	load_fn(j, offsetof(struct ns_ax_jit_ctx, trace_mem), skip);
	save_live(j, d);
	mov_r_rm(j, RDI, mem_(CTX, offsetof(struct ns_ax_jit_ctx, user)));
	if (lenslot >= 0)
		load(j, RDX, (unsigned)lenslot);
	else
		mov_imm(j, RDX, len);
	load(j, RSI, addr);
	mov_imm(j, RCX, nz);
	call_rax(j);
	restore_live(j, d);
	op(j, false, 0x85, RAX, reg_(RAX));
	jcc(j, CC_NE, full);
	bind(j, skip);
}

// GDB register number to hardware number (rax=0, rcx=1, rdx=2, rbx=3, rsp=4, ...).
static const uint8_t gdb_hw[16] = {0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15};

static void emit_reg(struct jit *j, unsigned d, unsigned regno, size_t pc)
{
	struct rm dst = slot(d);
	if (j->guard) { // depth <= NPOOL: dst is a register
		const struct ns_ax_jit_guard *g = j->guard;
		if (regno == 7) {
			op(j, true, 0x8d, dst.r, mem_(RSP, g->rsp_add)); // lea
		} else if (regno == 16) {
			mov_imm(j, dst.r, g->rip);
		} else if (j->clobber_hw & (1u << gdb_hw[regno])) {
			mov_r_rm(j, dst.r, mem_(RSP, g->block + (int32_t)(8 * regno)));
		} else {
			mov_r_rm(j, dst.r, reg_(gdb_hw[regno]));
		}
		return;
	}
	if (regno < j->opt->nregs) {
		struct rm src = mem_(REGS, (int32_t)(8 * regno));
		if (!dst.mem) {
			mov_r_rm(j, dst.r, src);
		} else {
			mov_r_rm(j, RAX, src);
			mov_rm_r(j, dst, RAX);
		}
		return;
	}
	unsigned bad = stub(j, NS_AX_BAD_REG, pc, -1, regno);
	load_fn(j, offsetof(struct ns_ax_jit_ctx, read_reg), bad);
	save_live(j, d);
	mov_r_rm(j, RDI, mem_(CTX, offsetof(struct ns_ax_jit_ctx, user)));
	mov_imm(j, RSI, regno);
	op(j, true, 0x8d, RDX, mem_(RSP, OFF_SCRATCH));
	call_rax(j);
	restore_live(j, d);
	op(j, false, 0x85, RAX, reg_(RAX));
	jcc(j, CC_NE, bad);
	mov_r_rm(j, RAX, mem_(RSP, OFF_SCRATCH));
	store(j, d, RAX);
}

// Checks ctx->tsv and ntsv for variable @n; leaves tsv in rax.
static void tsv_check(struct jit *j, uint64_t n, size_t pc)
{
	unsigned bad = stub(j, NS_AX_BAD_TSV, pc, -1, 0);
	load_fn(j, offsetof(struct ns_ax_jit_ctx, tsv), bad);
	op(j, false, 0x81, 7, mem_(CTX, offsetof(struct ns_ax_jit_ctx, ntsv))); // cmp dword, imm
	b32(j, (uint32_t)n);
	jcc(j, CC_BE, bad);
}

/* ---- instructions -------------------------------------------------------------- */

struct insn {
	uint8_t op;
	uint64_t imm;
	size_t next;
};

static void decode(const struct jit *j, size_t pc, struct insn *out)
{
	const struct ns_ax__op_info *oi = &ns_ax__ops[j->code[pc]];
	out->op = j->code[pc];
	out->imm = ns_ax__imm(j->code + pc + 1, oi->imm);
	out->next = pc + 1 + oi->imm;
}

// The instruction at @p if it can be fused into the one before it: reached only by
// falling through (not a jump target).
static bool peek(const struct jit *j, size_t p, struct insn *out)
{
	if (p >= j->len || j->depth[p] < 0 || j->target[p])
		return false;
	decode(j, p, out);
	return true;
}

static uint64_t sext(uint64_t v, uint64_t bits)
{
	if (bits == 0)
		return 0;
	if (bits >= 64)
		return v;
	uint64_t m = (uint64_t)1 << (bits - 1);
	v &= ((uint64_t)1 << bits) - 1;
	return (v ^ m) - m;
}

static uint64_t zext(uint64_t v, uint64_t bits)
{
	return bits >= 64 ? v : v & (((uint64_t)1 << bits) - 1);
}

static unsigned swap_cc(unsigned cc)
{
	switch (cc) {
	case CC_L:
		return CC_G;
	case CC_B:
		return CC_A;
	default:
		return cc; // CC_E
	}
}

static unsigned compare_cc(uint8_t o)
{
	return o == NS_AX_EQUAL ? CC_E : o == NS_AX_LESS_SIGNED ? CC_L : CC_B;
}

static bool is_compare(uint8_t o)
{
	return o == NS_AX_EQUAL || o == NS_AX_LESS_SIGNED || o == NS_AX_LESS_UNSIGNED;
}

// ALU opcode (r64, r/m64 form) and /digit of the imm32 form; 0 if not a simple ALU op.
static bool alu_info(uint8_t o, uint32_t *opc, unsigned *digit, bool *commutes)
{
	switch (o) {
	case NS_AX_ADD:
		*opc = 0x03, *digit = 0, *commutes = true;
		return true;
	case NS_AX_SUB:
		*opc = 0x2b, *digit = 5, *commutes = false;
		return true;
	case NS_AX_BIT_AND:
		*opc = 0x23, *digit = 4, *commutes = true;
		return true;
	case NS_AX_BIT_OR:
		*opc = 0x0b, *digit = 1, *commutes = true;
		return true;
	case NS_AX_BIT_XOR:
		*opc = 0x33, *digit = 6, *commutes = true;
		return true;
	case NS_AX_MUL:
		*opc = 0x0faf, *digit = 0, *commutes = true;
		return true;
	default:
		return false;
	}
}

// END at @pc with the result already in rax.
static void emit_end(struct jit *j, size_t pc)
{
	if (j->guard) {
		j->end_jmp_at = j->cur == 0 ? j->s[0].len : SIZE_MAX;
		j->end_jmp_fix = j->nfix;
		jmp(j, j->end);
		return;
	}
	op(j, true, 0xc7, 0, mem_(CTX, offsetof(struct ns_ax_jit_ctx, pc))); // pc, status 0
	b32(j, (uint32_t)pc);
	epilogue(j);
}

// The flags hold a condition: the boolean result is @cc. Fold following log_nots and
// an if_goto into the branch, else store 0/1 into item @dst. Returns the next offset.
static size_t emit_cond(struct jit *j, unsigned cc, unsigned dst, size_t p)
{
	struct insn in;
	while (peek(j, p, &in)) {
		if (in.op == NS_AX_LOG_NOT) {
			cc ^= 1;
			p = in.next;
			continue;
		}
		if (in.op == NS_AX_IF_GOTO) {
			jcc(j, cc, (unsigned)in.imm);
			return in.next;
		}
		break;
	}
	op(j, false, 0x0f90 | cc, 0, reg_(RAX)); // setcc al
	op(j, false, 0x0fb6, RAX, reg_(RAX));    // movzx eax, al
	if (peek(j, p, &in) && in.op == NS_AX_END && (unsigned)j->depth[p] == dst + 1) {
		emit_end(j, p); // the result is the top: straight from rax
		return in.next;
	}
	store(j, dst, RAX);
	return p;
}

// cmp item @a, item @b (a - b).
static void cmp_items(struct jit *j, unsigned a, unsigned b)
{
	struct rm ra = slot(a), rb = slot(b);
	if (!ra.mem) {
		op(j, true, 0x3b, ra.r, rb);
	} else if (!rb.mem) {
		op(j, true, 0x39, rb.r, ra);
	} else {
		mov_r_rm(j, RAX, rb);
		op(j, true, 0x39, RAX, ra);
	}
}

// item @a = item @a OP item @b
static void alu_items(struct jit *j, uint32_t opc, unsigned a, unsigned b)
{
	struct rm ra = slot(a), rb = slot(b);
	if (!ra.mem) {
		op(j, true, opc, ra.r, rb);
	} else {
		mov_r_rm(j, RAX, ra);
		op(j, true, opc, RAX, rb);
		mov_rm_r(j, ra, RAX);
	}
}

// Shift item @a by the constant @n (lsh, rsh_signed, rsh_unsigned semantics).
static void shift_imm(struct jit *j, uint8_t o, unsigned a, uint64_t n)
{
	if (o == NS_AX_RSH_SIGNED) {
		op(j, true, 0xc1, 7, slot(a));
		b1(j, (uint8_t)(n >= 64 ? 63 : n));
	} else if (n >= 64) {
		set_imm(j, a, 0);
	} else if (n) {
		op(j, true, 0xc1, o == NS_AX_LSH ? 4 : 5, slot(a));
		b1(j, (uint8_t)n);
	}
}

// const (already folded to @v) at depth @d, followed by the instructions at @p.
// Returns the next offset.
static size_t emit_const(struct jit *j, unsigned d, uint64_t v, size_t p)
{
	struct insn in, in2;
	uint32_t opc;
	unsigned digit;
	bool commutes, swapped = false;
	// ns_ax_emit_const: const + ext for negative values
	while (peek(j, p, &in) && (in.op == NS_AX_EXT || in.op == NS_AX_ZERO_EXT)) {
		v = in.op == NS_AX_EXT ? sext(v, in.imm) : zext(v, in.imm);
		p = in.next;
	}
	if (d == 0 || !peek(j, p, &in))
		goto plain;
	if (in.op == NS_AX_SWAP && peek(j, in.next, &in2) &&
	    (is_compare(in2.op) || (alu_info(in2.op, &opc, &digit, &commutes) && commutes))) {
		in = in2;
		swapped = true;
	}
	unsigned a = d - 1;
	if (is_compare(in.op) && fits32(v)) {
		unsigned cc = compare_cc(in.op);
		alu_imm(j, 7, slot(a), v);
		return emit_cond(j, swapped ? swap_cc(cc) : cc, a, in.next);
	}
	if (alu_info(in.op, &opc, &digit, &commutes) && fits32(v)) {
		if (in.op == NS_AX_MUL) {
			struct rm ra = slot(a);
			unsigned r = ra.mem ? RAX : ra.r;
			op(j, true, 0x69, r, ra); // imul r, r/m, imm32
			b32(j, (uint32_t)v);
			if (ra.mem)
				mov_rm_r(j, ra, RAX);
		} else {
			alu_imm(j, digit, slot(a), v);
		}
		return in.next;
	}
	if (!swapped &&
	    (in.op == NS_AX_LSH || in.op == NS_AX_RSH_SIGNED || in.op == NS_AX_RSH_UNSIGNED)) {
		shift_imm(j, in.op, a, v);
		return in.next;
	}
plain:
	set_imm(j, d, v);
	return p;
}

static size_t emit_div(struct jit *j, uint8_t o, unsigned d, size_t pc, size_t next)
{
	unsigned a = d - 2, b = d - 1;
	bool sgn = o == NS_AX_DIV_SIGNED || o == NS_AX_REM_SIGNED;
	bool rem = o == NS_AX_REM_SIGNED || o == NS_AX_REM_UNSIGNED;
	unsigned dz = stub(j, NS_AX_DIV_ZERO, pc, -1, 0);
	load(j, RCX, b);
	load(j, RAX, a);
	op(j, true, 0x85, RCX, reg_(RCX));
	jcc(j, CC_E, dz);
	if (!sgn) {
		mov_imm(j, RDX, 0);
		op(j, true, 0xf7, 6, reg_(RCX)); // div rcx
		store(j, a, rem ? RDX : RAX);
		return next;
	}
	unsigned special = new_label(j), done = new_label(j);
	op(j, true, 0x83, 7, reg_(RCX)); // cmp rcx, -1
	b1(j, 0xff);
	jcc(j, CC_E, special);
	b1(j, 0x48);
	b1(j, 0x99);                     // cqo
	op(j, true, 0xf7, 7, reg_(RCX)); // idiv rcx
	store(j, a, rem ? RDX : RAX);
	bind(j, done);
	j->cur = 1;
	bind(j, special); // x / -1 = -x (INT64_MIN stays), x % -1 = 0
	if (rem)
		mov_imm(j, RAX, 0);
	else
		op(j, true, 0xf7, 3, reg_(RAX)); // neg rax
	store(j, a, RAX);
	jmp(j, done);
	j->cur = 0;
	return next;
}

static size_t emit_shift(struct jit *j, uint8_t o, unsigned d, size_t next)
{
	unsigned a = d - 2, b = d - 1;
	load(j, RCX, b);
	load(j, RAX, a);
	if (o == NS_AX_RSH_SIGNED) {
		mov_imm(j, RDX, 63);
		op(j, true, 0x3b, RCX, reg_(RDX));
		op(j, true, 0x0f47, RCX, reg_(RDX)); // cmova rcx, rdx
		op(j, true, 0xd3, 7, reg_(RAX));     // sar rax, cl
	} else {
		op(j, true, 0xd3, o == NS_AX_LSH ? 4 : 5, reg_(RAX)); // shl/shr rax, cl
		mov_imm(j, RDX, 0);
		op(j, true, 0x83, 7, reg_(RCX)); // cmp rcx, 63
		b1(j, 63);
		op(j, true, 0x0f47, RAX, reg_(RDX)); // cmova rax, rdx
	}
	store(j, a, RAX);
	return next;
}

static void emit_ext(struct jit *j, bool sgn, unsigned i, uint64_t bits)
{
	struct rm m = slot(i);
	if (bits >= 64)
		return;
	if (bits == 0) {
		set_imm(j, i, 0);
	} else if (sgn) {
		op(j, true, 0xc1, 4, m);
		b1(j, (uint8_t)(64 - bits));
		op(j, true, 0xc1, 7, m);
		b1(j, (uint8_t)(64 - bits));
	} else if (bits < 32) {
		op(j, true, 0x81, 4, m); // and r/m, imm32
		b32(j, (uint32_t)((1u << bits) - 1));
	} else if (bits == 32) {
		if (!m.mem) {
			op(j, false, 0x89, m.r, m); // mov r32, r32
		} else {
			m.disp += 4;
			op(j, false, 0xc7, 0, m); // mov dword [hi half], 0
			b32(j, 0);
		}
	} else {
		op(j, true, 0xc1, 4, m);
		b1(j, (uint8_t)(64 - bits));
		op(j, true, 0xc1, 5, m);
		b1(j, (uint8_t)(64 - bits));
	}
}

// Compile the instruction at @pc; returns the offset of the next one to compile.
static size_t emit_insn(struct jit *j, size_t pc)
{
	struct insn in, nx;
	decode(j, pc, &in);
	unsigned d = (unsigned)j->depth[pc];
	uint32_t opc;
	unsigned digit;
	bool commutes;

	switch ((enum ns_ax_op)in.op) {
	case NS_AX_ADD:
	case NS_AX_SUB:
	case NS_AX_MUL:
	case NS_AX_BIT_AND:
	case NS_AX_BIT_OR:
	case NS_AX_BIT_XOR:
		alu_info(in.op, &opc, &digit, &commutes);
		alu_items(j, opc, d - 2, d - 1);
		return in.next;
	case NS_AX_DIV_SIGNED:
	case NS_AX_DIV_UNSIGNED:
	case NS_AX_REM_SIGNED:
	case NS_AX_REM_UNSIGNED:
		return emit_div(j, in.op, d, pc, in.next);
	case NS_AX_LSH:
	case NS_AX_RSH_SIGNED:
	case NS_AX_RSH_UNSIGNED:
		return emit_shift(j, in.op, d, in.next);
	case NS_AX_TRACE:
	case NS_AX_TRACENZ:
		emit_trace(j, d, d - 2, (int)d - 1, 0, in.op == NS_AX_TRACENZ, pc);
		return in.next;
	case NS_AX_TRACE_QUICK:
	case NS_AX_TRACE16:
		emit_trace(j, d, d - 1, -1, in.imm, false, pc);
		return in.next;
	case NS_AX_LOG_NOT: {
		struct rm m = slot(d - 1);
		if (!m.mem) {
			op(j, true, 0x85, m.r, m); // test r, r
		} else {
			op(j, true, 0x83, 7, m); // cmp qword, 0
			b1(j, 0);
		}
		return emit_cond(j, CC_E, d - 1, in.next);
	}
	case NS_AX_BIT_NOT:
		op(j, true, 0xf7, 2, slot(d - 1));
		return in.next;
	case NS_AX_EQUAL:
	case NS_AX_LESS_SIGNED:
	case NS_AX_LESS_UNSIGNED:
		cmp_items(j, d - 2, d - 1);
		return emit_cond(j, compare_cc(in.op), d - 2, in.next);
	case NS_AX_EXT:
	case NS_AX_ZERO_EXT:
		emit_ext(j, in.op == NS_AX_EXT, d - 1, in.imm);
		return in.next;
	case NS_AX_REF8:
	case NS_AX_REF16:
	case NS_AX_REF32:
	case NS_AX_REF64:
		emit_ref(j, d, 1u << (in.op - NS_AX_REF8), pc);
		return in.next;
	case NS_AX_IF_GOTO: {
		struct rm m = slot(d - 1);
		if (!m.mem) {
			op(j, true, 0x85, m.r, m);
		} else {
			op(j, true, 0x83, 7, m);
			b1(j, 0);
		}
		jcc(j, CC_NE, (unsigned)in.imm);
		return in.next;
	}
	case NS_AX_GOTO:
		jmp(j, (unsigned)in.imm);
		return in.next;
	case NS_AX_CONST8:
	case NS_AX_CONST16:
	case NS_AX_CONST32:
	case NS_AX_CONST64:
		return emit_const(j, d, in.imm, in.next);
	case NS_AX_REG:
		emit_reg(j, d, (unsigned)in.imm, pc);
		return in.next;
	case NS_AX_END:
		if (d)
			load(j, RAX, d - 1);
		else
			mov_imm(j, RAX, 0);
		emit_end(j, pc);
		return in.next;
	case NS_AX_DUP:
		copy(j, d, d - 1);
		return in.next;
	case NS_AX_POP:
		return in.next;
	case NS_AX_SWAP:
		if (peek(j, in.next, &nx)) {
			if (is_compare(nx.op)) {
				cmp_items(j, d - 2, d - 1);
				return emit_cond(j, swap_cc(compare_cc(nx.op)), d - 2, nx.next);
			}
			if (alu_info(nx.op, &opc, &digit, &commutes) && commutes) {
				alu_items(j, opc, d - 2, d - 1);
				return nx.next;
			}
		}
		load(j, RCX, d - 2);
		copy(j, d - 2, d - 1);
		store(j, d - 1, RCX);
		return in.next;
	case NS_AX_PICK:
		copy(j, d, d - 1 - (unsigned)in.imm);
		return in.next;
	case NS_AX_ROT: // a b c => c a b
		load(j, RCX, d - 1);
		copy(j, d - 1, d - 2);
		copy(j, d - 2, d - 3);
		store(j, d - 3, RCX);
		return in.next;
	case NS_AX_GETV: {
		tsv_check(j, in.imm, pc);
		struct rm dst = slot(d), src = mem_(RAX, (int32_t)(8 * in.imm));
		if (!dst.mem) {
			mov_r_rm(j, dst.r, src);
		} else {
			mov_r_rm(j, RCX, src);
			mov_rm_r(j, dst, RCX);
		}
		return in.next;
	}
	case NS_AX_SETV:
		tsv_check(j, in.imm, pc);
		load(j, RCX, d - 1);
		mov_rm_r(j, mem_(RAX, (int32_t)(8 * in.imm)), RCX);
		return in.next;
	case NS_AX_TRACEV:
		tsv_check(j, in.imm, pc);
		return in.next;
	case NS_AX_FLOAT:
		break;
	}
	return in.next; // not reached: the analysis refuses everything else
}

/* ---- analysis ------------------------------------------------------------------ */

static struct ns_err *analyse(struct jit *j, unsigned max_depth)
{
	size_t len = j->len, ninsns = 0;
	uint32_t *work = malloc(len * sizeof(*work));
	size_t nwork = 0;
	bool calls = false;
	struct ns_err *err = NULL;
	if (!work)
		return &ns_err_nomem;
	for (size_t i = 0; i < len; i++)
		j->depth[i] = -1;
	j->depth[0] = 0;
	work[nwork++] = 0;
	while (nwork && !err) {
		size_t pc = work[--nwork];
		struct insn in;
		decode(j, pc, &in);
		const struct ns_ax__op_info *oi = &ns_ax__ops[in.op];
		unsigned nd = (unsigned)j->depth[pc] - oi->pops + oi->pushes;
		ninsns++;
		// Scratch registers beyond rax (guard mode saves only what is written):
		// rcx for range checks, swaps and rotations, rcx and rdx for divisions
		// and shifts.
		switch (in.op) {
		case NS_AX_REF8:
		case NS_AX_REF16:
		case NS_AX_REF32:
		case NS_AX_REF64:
		case NS_AX_SWAP:
		case NS_AX_ROT:
			j->clobber_hw |= 1u << RCX;
			break;
		case NS_AX_DIV_SIGNED:
		case NS_AX_DIV_UNSIGNED:
		case NS_AX_REM_SIGNED:
		case NS_AX_REM_UNSIGNED:
		case NS_AX_LSH:
		case NS_AX_RSH_SIGNED:
		case NS_AX_RSH_UNSIGNED:
			j->clobber_hw |= 1u << RCX | 1u << RDX;
			break;
		}
		switch (in.op) {
		case NS_AX_REF8:
		case NS_AX_REF16:
		case NS_AX_REF32:
		case NS_AX_REF64:
		case NS_AX_TRACE:
		case NS_AX_TRACENZ:
		case NS_AX_TRACE_QUICK:
		case NS_AX_TRACE16:
			calls = true;
			if (j->guard && in.op != NS_AX_REF8 && in.op != NS_AX_REF16 &&
			    in.op != NS_AX_REF32 && in.op != NS_AX_REF64)
				err = ns_err_create(NS_ERR_UNSUPPORTED, "offset %zu: trace in a guard",
				                    pc);
			break;
		case NS_AX_REG:
			if (j->guard && in.imm > 16)
				err = ns_err_create(NS_ERR_UNSUPPORTED,
				                    "offset %zu: register %llu is not read by a "
				                    "guard",
				                    pc, (unsigned long long)in.imm);
			if (in.imm >= j->opt->nregs)
				calls = true;
			break;
		case NS_AX_GETV:
		case NS_AX_SETV:
		case NS_AX_TRACEV:
			if (j->guard)
				err = ns_err_create(NS_ERR_UNSUPPORTED,
				                    "offset %zu: trace state variables in a guard", pc);
			break;
		case NS_AX_FLOAT:
			err = ns_err_create(NS_ERR_UNSUPPORTED, "offset %zu: float not compiled",
			                    pc);
			continue;
		}
		size_t succ[2];
		unsigned nsucc = 0;
		if (in.op == NS_AX_GOTO || in.op == NS_AX_IF_GOTO) {
			if (in.imm <= pc) {
				err = ns_err_create(
				        NS_ERR_UNSUPPORTED,
				        "offset %zu: %s back to offset %llu (a loop) is not "
				        "compiled to native code",
				        pc, in.op == NS_AX_GOTO ? "goto" : "if_goto",
				        (unsigned long long)in.imm);
				continue;
			}
			j->target[in.imm] = 1;
			succ[nsucc++] = (size_t)in.imm;
		}
		if (in.op != NS_AX_GOTO && in.op != NS_AX_END)
			succ[nsucc++] = in.next;
		for (unsigned k = 0; k < nsucc; k++) {
			if (j->depth[succ[k]] < 0) {
				j->depth[succ[k]] = (int16_t)nd;
				work[nwork++] = (uint32_t)succ[k];
			}
		}
	}
	free(work);
	if (err)
		return err;
	unsigned max_steps = j->opt->max_steps ? j->opt->max_steps : NS_AX_DEFAULT_STEPS;
	if (ninsns > max_steps)
		return ns_err_create(NS_ERR_UNSUPPORTED,
		                     "%zu instructions exceed the step budget of %u: not compiled "
		                     "to native code",
		                     ninsns, max_steps);
	if (j->guard) {
		if (max_depth > NPOOL)
			return ns_err_create(NS_ERR_UNSUPPORTED,
			                     "%u stack items: a guard keeps at most %d", max_depth,
			                     NPOOL);
		j->has_frame = false;
		j->clobber_hw |= 1u << RAX;
		for (unsigned i = 0; i < max_depth; i++)
			j->clobber_hw |= 1u << pool[i];
		return NULL;
	}
	j->has_frame = calls || max_depth > NPOOL;
	if (j->has_frame) {
		uint32_t f = OFF_SLOTS + 8 * (max_depth > NPOOL ? max_depth - NPOOL : 0);
		if (f % 16 != 8) // entry rsp is 8 mod 16; calls need 0 mod 16
			f += 8;
		j->frame = f;
	}
	return NULL;
}

/* ---- entry points ---------------------------------------------------------------- */

void ns_ax_jit_set_range(struct ns_ax_jit_ctx *ctx, unsigned i, uint64_t lo, uint64_t hi)
{
	if (i >= NS_AX_JIT_NRANGES)
		return;
	ctx->fast[i].lo = lo;
	ctx->fast[i].limit = (hi > lo && hi - lo >= 8) ? hi - lo - 7 : 0;
}

size_t ns_ax_jit_size_bound(size_t len)
{
	return 64 + 400 * len;
}

static struct ns_err *compile(const uint8_t *code, size_t len, const struct ns_ax_jit_options *opt,
                              const struct ns_ax_jit_guard *guard, void *mem, size_t cap,
                              size_t *used_out, uint32_t *clobber_out)
{
	unsigned max_depth = 0;
	struct ns_err *err;
	*used_out = 0;
	if (opt->nfast > NS_AX_JIT_NRANGES)
		return ns_err_create(NS_ERR_INVALID, "nfast %u > %d", opt->nfast,
		                     NS_AX_JIT_NRANGES);
	if ((err = ns_ax_verify(code, len, &max_depth)))
		return err;
	if (len > INT32_MAX)
		return ns_err_create(NS_ERR_UNSUPPORTED, "program too long to compile");

	struct jit j = {.code = code, .len = len, .opt = opt, .guard = guard,
	                .end_jmp_at = SIZE_MAX};
	j.depth = malloc(len * sizeof(*j.depth));
	j.target = calloc(len, 1);
	if (!j.depth || !j.target) {
		err = &ns_err_nomem;
		goto out;
	}
	if ((err = analyse(&j, max_depth)))
		goto out;
	for (size_t i = 0; i < len; i++)
		new_label(&j);
	j.end = new_label(&j);

	if (j.has_frame) {
		op(&j, true, 0x81, 5, reg_(RSP)); // sub rsp, frame
		b32(&j, j.frame);
	}
	for (size_t pc = 0; pc < len && !j.oom;) {
		if (j.depth[pc] < 0) {
			pc++;
			continue;
		}
		bind(&j, (unsigned)pc);
		pc = emit_insn(&j, pc);
	}
	size_t skip_fix = SIZE_MAX;
	if (guard) {
		// The fragment ends after the cold section; a "jmp end" that is the last
		// thing before an empty cold section is dropped (it would jump to the
		// next byte).
		j.cur = 1;
		bind(&j, j.end);
		j.cur = 0;
		if (j.s[1].len == 0 && j.end_jmp_at != SIZE_MAX && j.end_jmp_at + 5 == j.s[0].len) {
			j.s[0].len -= 5;
			skip_fix = j.end_jmp_fix;
		}
		if (clobber_out) {
			uint32_t m = 0;
			for (unsigned g = 0; g < 16; g++)
				if (j.clobber_hw & (1u << gdb_hw[g]))
					m |= 1u << g;
			*clobber_out = m;
		}
	}
	if (j.oom) {
		err = &ns_err_nomem;
		goto out;
	}

	size_t main_len = j.s[0].len, total = main_len + j.s[1].len;
	*used_out = total;
	if (total > cap) {
		err = ns_err_create(NS_ERR_INVALID, "native code needs %zu bytes, only %zu given",
		                    total, cap);
		goto out;
	}
	uint8_t *dst = mem;
	if (main_len)
		memcpy(dst, j.s[0].p, main_len);
	if (j.s[1].len)
		memcpy(dst + main_len, j.s[1].p, j.s[1].len);
	size_t base[2] = {0, main_len};
	for (size_t i = 0; i < j.nfix; i++) {
		if (i == skip_fix)
			continue;
		const struct fixup *f = &j.fix[i];
		const struct label *l = &j.labels[f->label];
		if (!l->bound) {
			err = ns_err_create(NS_ERR_INVALID, "internal error: unbound jump label %u",
			                    f->label);
			goto out;
		}
		size_t at = base[f->sec] + f->at;
		int64_t rel = (int64_t)(base[l->sec] + l->off) - (int64_t)(at + 4);
		uint32_t r = (uint32_t)(int32_t)rel;
		for (int k = 0; k < 4; k++)
			dst[at + k] = (uint8_t)(r >> (8 * k));
	}
out:
	free(j.depth);
	free(j.target);
	free(j.s[0].p);
	free(j.s[1].p);
	free(j.labels);
	free(j.fix);
	return err;
}

struct ns_err *ns_ax_jit_compile(const uint8_t *code, size_t len,
                                 const struct ns_ax_jit_options *opt, void *mem, size_t cap,
                                 size_t *used_out)
{
	return compile(code, len, opt, NULL, mem, cap, used_out, NULL);
}

struct ns_err *ns_ax_jit_compile_guard(const uint8_t *code, size_t len,
                                       const struct ns_ax_jit_guard *g, void *mem, size_t cap,
                                       size_t *used_out, uint32_t *clobber_out)
{
	static const struct ns_ax_jit_options opt = {.nregs = 0, .max_steps = 0, .nfast = 0};
	*clobber_out = 0;
	return compile(code, len, &opt, g, mem, cap, used_out, clobber_out);
}
