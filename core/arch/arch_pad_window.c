/* Jump-pad tier: choosing the displaced window and proving that no branch of the
 * function lands strictly inside it. Linear sweep with capstone (allocates): host side
 * or the agent's control thread only. */
#include "arch/arch.h"

#include <capstone/capstone.h>
#include <cpuid.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

// Instructions kept for recognising a switch dispatch backwards from its "jmp reg".
enum { HIST = 32, MAX_TABLE_ENTRIES = 4096, JMP_REL32_LEN = 5 };

struct hop {
	x86_op_type type;
	x86_reg reg;
	x86_reg base, index;
	int scale;
	int64_t disp;
	int64_t imm;
};

struct hinsn {
	unsigned id;
	uint64_t addr;
	uint8_t size;
	uint8_t nops;
	struct hop op[2];
};

struct sweep {
	const struct ns_arch_pad_func *fn;
	uint64_t win_lo, win_hi; // targets in (win_lo, win_hi) make the site ineligible
	struct ns_arch_pad_window *out;
	struct hinsn hist[HIST];
	unsigned nhist; // total pushed; newest at (nhist-1) % HIST
};

static void set_reason(struct ns_arch_pad_window *out, const char *reason, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void set_reason(struct ns_arch_pad_window *out, const char *reason, const char *fmt, ...)
{
	if (!out->eligible)
		return; // keep the first reason
	out->eligible = false;
	out->reason = reason;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out->detail, sizeof(out->detail), fmt, ap);
	va_end(ap);
}

static bool in_ranges(const struct ns_arch_pad_func *fn, uint64_t a)
{
	if (a >= fn->range.lo && a < fn->range.hi)
		return true;
	for (size_t i = 0; i < fn->nmore; i++)
		if (a >= fn->more[i].lo && a < fn->more[i].hi)
			return true;
	return false;
}

static void add_target(struct sweep *s, uint64_t from, uint64_t target)
{
	s->out->ntargets++;
	if (target > s->win_lo && target < s->win_hi)
		set_reason(s->out, "a branch target lies inside the window", "0x%llx (from 0x%llx)",
		           (unsigned long long)target, (unsigned long long)from);
}

static const struct hinsn *hist_at(const struct sweep *s, unsigned back)
{
	if (back >= s->nhist || back >= HIST)
		return NULL;
	return &s->hist[(s->nhist - 1 - back) % HIST];
}

// Number of entries from the nearest "cmp x, imm; ja/jae" before the dispatch, or 0.
static unsigned table_bound(const struct sweep *s)
{
	for (unsigned b = 0; b + 1 < HIST; b++) {
		const struct hinsn *j = hist_at(s, b), *c = hist_at(s, b + 1);
		if (!j || !c)
			return 0;
		if ((j->id != X86_INS_JA && j->id != X86_INS_JAE) || c->id != X86_INS_CMP ||
		    c->nops != 2 || c->op[1].type != X86_OP_IMM)
			continue;
		int64_t n = c->op[1].imm + (j->id == X86_INS_JA ? 1 : 0);
		if (n <= 0 || n > MAX_TABLE_ENTRIES)
			return 0;
		return (unsigned)n;
	}
	return 0;
}

// Read the table at @table (entries of @esize bytes: 4 = int32 offsets from @table, 8 =
// absolute addresses) and add its targets. With no bound, stop at the first entry that
// is unreadable or leaves the function. Returns false if nothing could be read.
static bool read_table(struct sweep *s, uint64_t from, uint64_t table, unsigned esize,
                       unsigned bound)
{
	const struct ns_arch_pad_func *fn = s->fn;
	unsigned limit = bound ? bound : MAX_TABLE_ENTRIES;
	unsigned got = 0;
	for (unsigned k = 0; k < limit; k++) {
		uint64_t t;
		if (esize == 4) {
			int32_t e;
			if (fn->read_mem(fn->read_ctx, &e, table + 4ull * k, 4) != 0)
				return false;
			t = table + (uint64_t)(int64_t)e;
		} else {
			if (fn->read_mem(fn->read_ctx, &t, table + 8ull * k, 8) != 0)
				return false;
		}
		if (!in_ranges(fn, t)) {
			if (!bound)
				break;
			continue;
		}
		add_target(s, from, t);
		got++;
	}
	if (got == 0)
		return false;
	s->out->njump_tables++;
	return true;
}

// Latest instruction before @from_back whose first operand is register @r (written).
static int find_writer(const struct sweep *s, unsigned from_back, x86_reg r)
{
	for (unsigned b = from_back; b < HIST; b++) {
		const struct hinsn *h = hist_at(s, b);
		if (!h)
			return -1;
		if (h->id == X86_INS_CMP || h->id == X86_INS_TEST || h->id == X86_INS_PUSH)
			continue;
		if (h->nops >= 1 && h->op[0].type == X86_OP_REG && h->op[0].reg == r)
			return (int)b;
	}
	return -1;
}

// gcc/clang PIC switch: lea B, [rip+T]; movsxd E, dword [B + idx*4]; add X, Y; jmp X
// with {X, Y} = {E, B}. The jmp itself is hist_at(0).
static bool resolve_pic_table(struct sweep *s, x86_reg r)
{
	int ia = find_writer(s, 1, r);
	if (ia < 0)
		return false;
	const struct hinsn *add = hist_at(s, (unsigned)ia);
	if (add->id != X86_INS_ADD || add->nops != 2 || add->op[1].type != X86_OP_REG)
		return false;
	x86_reg other = add->op[1].reg;
	for (unsigned b = (unsigned)ia + 1; b < HIST; b++) {
		const struct hinsn *m = hist_at(s, b);
		if (!m)
			return false;
		if (m->id != X86_INS_MOVSXD || m->nops != 2 || m->op[0].type != X86_OP_REG ||
		    m->op[1].type != X86_OP_MEM)
			continue;
		x86_reg e = m->op[0].reg, base = m->op[1].base;
		if (!((e == r && base == other) || (e == other && base == r)))
			continue;
		if (m->op[1].index == X86_REG_INVALID || m->op[1].scale != 4 || m->op[1].disp != 0)
			return false;
		int il = find_writer(s, b + 1, base);
		if (il < 0)
			return false;
		const struct hinsn *lea = hist_at(s, (unsigned)il);
		if (lea->id != X86_INS_LEA || lea->op[1].type != X86_OP_MEM ||
		    lea->op[1].base != X86_REG_RIP || lea->op[1].index != X86_REG_INVALID)
			return false;
		uint64_t table = lea->addr + lea->size + (uint64_t)lea->op[1].disp;
		return read_table(s, hist_at(s, 0)->addr, table, 4, table_bound(s));
	}
	return false;
}

static void indirect_jmp(struct sweep *s, const cs_insn *ci)
{
	const struct ns_arch_pad_func *fn = s->fn;
	const cs_x86_op *o = &ci->detail->x86.operands[0];
	bool ok = false;
	if (fn->read_mem) {
		if (o->type == X86_OP_REG) {
			ok = resolve_pic_table(s, o->reg);
		} else if (o->type == X86_OP_MEM && o->mem.base == X86_REG_RIP &&
		           o->mem.index == X86_REG_INVALID) {
			// jmp [rip+slot]: a tail call through the GOT (-fno-plt).
			uint64_t t;
			uint64_t slot = ci->address + ci->size + (uint64_t)o->mem.disp;
			if (fn->read_mem(fn->read_ctx, &t, slot, 8) == 0) {
				if (in_ranges(fn, t))
					add_target(s, ci->address, t);
				ok = true;
			}
		} else if (o->type == X86_OP_MEM && o->mem.base == X86_REG_INVALID &&
		           o->mem.index != X86_REG_INVALID && o->mem.scale == 8 &&
		           o->mem.segment == X86_REG_INVALID) {
			// Non-PIC switch: jmp [idx*8 + T], absolute entries.
			ok = read_table(s, ci->address, (uint64_t)o->mem.disp, 8, table_bound(s));
		}
	}
	if (!ok)
		set_reason(s->out, "indirect jump in function: targets unknown", "%s %s at 0x%llx",
		           ci->mnemonic, ci->op_str, (unsigned long long)ci->address);
}

static void remember(struct sweep *s, const cs_insn *ci)
{
	struct hinsn *h = &s->hist[s->nhist % HIST];
	s->nhist++;
	memset(h, 0, sizeof(*h));
	h->id = ci->id;
	h->addr = ci->address;
	h->size = (uint8_t)ci->size;
	const cs_x86 *x = &ci->detail->x86;
	h->nops = x->op_count > 2 ? 2 : x->op_count;
	for (unsigned i = 0; i < h->nops; i++) {
		const cs_x86_op *o = &x->operands[i];
		h->op[i].type = o->type;
		if (o->type == X86_OP_REG)
			h->op[i].reg = o->reg;
		else if (o->type == X86_OP_IMM)
			h->op[i].imm = o->imm;
		else if (o->type == X86_OP_MEM) {
			h->op[i].base = o->mem.base;
			h->op[i].index = o->mem.index;
			h->op[i].scale = o->mem.scale;
			h->op[i].disp = o->mem.disp;
		}
	}
}

// Sweep one code range; @boundary (if not NULL) is set when @site starts an instruction.
static struct ns_err *sweep_range(struct sweep *s, csh h, const struct ns_arch_code_range *r,
                                  uint64_t site, bool *boundary)
{
	cs_insn *ci = cs_malloc(h);
	if (!ci)
		return ns_err_create(NS_ERR_NOMEM, "capstone: out of memory");
	const uint8_t *code = r->bytes;
	size_t left = r->hi - r->lo;
	uint64_t addr = r->lo;
	s->nhist = 0;
	while (left > 0) {
		if (!cs_disasm_iter(h, &code, &left, &addr, ci)) {
			set_reason(s->out, "cannot decode the function", "bytes at 0x%llx",
			           (unsigned long long)addr);
			break;
		}
		if (boundary && ci->address == site)
			*boundary = true;
		remember(s, ci);
		const cs_x86 *x = &ci->detail->x86;
		bool branch = cs_insn_group(h, ci, X86_GRP_JUMP) ||
		              cs_insn_group(h, ci, X86_GRP_CALL) || ci->id == X86_INS_XBEGIN;
		if (!branch || x->op_count < 1)
			continue;
		const cs_x86_op *o = &x->operands[0];
		if (o->type == X86_OP_IMM)
			add_target(s, ci->address, (uint64_t)o->imm);
		else if (ci->id == X86_INS_JMP)
			indirect_jmp(s, ci);
		// Indirect calls return to the next instruction: no target inside the function.
	}
	cs_free(ci, 1);
	return NULL;
}

// ff /4, ff /5: indirect jmp.
static bool is_indirect_jmp(const uint8_t *code, size_t len)
{
	size_t i = 0;
	while (i < len &&
	       (code[i] == 0x66 || code[i] == 0x67 || code[i] == 0xf2 || code[i] == 0xf3 ||
	        code[i] == 0x3e || code[i] == 0x2e || code[i] == 0x26 || code[i] == 0x36 ||
	        code[i] == 0x64 || code[i] == 0x65))
		i++;
	if (i < len && (code[i] & 0xf0) == 0x40)
		i++;
	if (i + 1 >= len || code[i] != 0xff)
		return false;
	unsigned reg = (code[i + 1] >> 3) & 7;
	return reg == 4 || reg == 5;
}

// Decode the window from @site; false with a reason set when it cannot be displaced.
static struct ns_err *choose_window(const struct ns_arch_pad_func *fn, uint64_t site,
                                    struct ns_arch_pad_window *out)
{
	const struct ns_arch_code_range *r = &fn->range;
	size_t len = 0;
	while (len < JMP_REL32_LEN) {
		uint64_t a = site + len;
		if (a >= r->hi) {
			set_reason(out, "function too short", "%zu bytes from 0x%llx to its end",
			           len, (unsigned long long)site);
			return NULL;
		}
		struct ns_arch_insn insn;
		struct ns_err *err =
		        ns_arch_decode(r->bytes + (a - r->lo), (size_t)(r->hi - a), a, &insn);
		if (err) {
			set_reason(out, "cannot decode the window", "%s", err->msg);
			ns_err_destroy(err);
			return NULL;
		}
		const uint8_t *ib = r->bytes + (a - r->lo);
		if (insn.kind == NS_INSN_UNSUPPORTED) {
			set_reason(out, insn.reason, "%s at 0x%llx", insn.text,
			           (unsigned long long)a);
			return NULL;
		}
		bool ends = insn.kind == NS_INSN_RET || insn.kind == NS_INSN_CALL ||
		            is_indirect_jmp(ib, insn.len);
		len += insn.len;
		out->ninsns++;
		if (ends && len < JMP_REL32_LEN) {
			set_reason(out,
			           insn.kind == NS_INSN_CALL
			                   ? "call inside the window"
			                   : "ret or indirect jump before the end of the window",
			           "%s at 0x%llx", insn.text, (unsigned long long)a);
			return NULL;
		}
		if (a + insn.len > r->hi) {
			set_reason(out, "function too short", "%s at 0x%llx crosses its end",
			           insn.text, (unsigned long long)a);
			return NULL;
		}
	}
	out->len = (uint8_t)len;
	return NULL;
}

struct ns_err *ns_arch_pad_window(const struct ns_arch_pad_func *fn, uint64_t site,
                                  struct ns_arch_pad_window *out)
{
	const struct ns_arch_code_range *r = &fn->range;
	if (!r->bytes || r->hi <= r->lo || site < r->lo || site >= r->hi)
		return ns_err_create(NS_ERR_INVALID,
		                     "site 0x%llx is outside the function [0x%llx, 0x%llx)",
		                     (unsigned long long)site, (unsigned long long)r->lo,
		                     (unsigned long long)r->hi);
	struct ns_arch_pad_window w;
	memset(&w, 0, sizeof(w));
	w.eligible = true;
	w.detail[0] = 0;
	struct ns_err *err = choose_window(fn, site, &w);
	if (err)
		return err;

	csh h;
	if (cs_open(CS_ARCH_X86, CS_MODE_64, &h) != CS_ERR_OK)
		return ns_err_create(NS_ERR_NOMEM, "cannot initialise capstone");
	cs_option(h, CS_OPT_DETAIL, CS_OPT_ON);
	struct sweep s;
	memset(&s, 0, sizeof(s));
	s.fn = fn;
	s.out = &w;
	s.win_lo = site;
	s.win_hi = w.eligible ? site + w.len : site; // empty: only count targets
	bool boundary = false;
	err = sweep_range(&s, h, r, site, &boundary);
	for (size_t i = 0; !err && i < fn->nmore; i++)
		if (fn->more[i].bytes && fn->more[i].hi > fn->more[i].lo)
			err = sweep_range(&s, h, &fn->more[i], site, NULL);
	cs_close(&h);
	if (err)
		return err;
	for (size_t i = 0; i < fn->nextra; i++)
		add_target(&s, fn->extra_targets[i], fn->extra_targets[i]);
	if (!boundary)
		set_reason(&w, "the site is not an instruction boundary",
		           "0x%llx in a linear sweep from 0x%llx", (unsigned long long)site,
		           (unsigned long long)r->lo);
	*out = w;
	return NULL;
}

bool ns_arch_have_lahf64(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(0x80000001u, &a, &b, &c, &d))
		return false;
	return c & 1u;
}
