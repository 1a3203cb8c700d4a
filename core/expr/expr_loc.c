/* DWARF location expressions (DWARF 5 section 2.5/2.6) translated to agent-expression
 * bytecode. Only the operations gcc and clang emit for variables at a single pc are
 * supported; anything else means the value cannot be computed from a frame and is
 * reported as optimized out. Operands are read through a bounds-checked cursor. */
#include <string.h>

#include "expr/expr_internal.h"
#include "frame/frame.h"

/* DWARF opcodes used here (DWARF 5 section 7.7.1). */
enum {
	OP_addr = 0x03,
	OP_deref = 0x06,
	OP_const1u = 0x08,
	OP_const1s = 0x09,
	OP_const2u = 0x0a,
	OP_const2s = 0x0b,
	OP_const4u = 0x0c,
	OP_const4s = 0x0d,
	OP_const8u = 0x0e,
	OP_const8s = 0x0f,
	OP_constu = 0x10,
	OP_consts = 0x11,
	OP_dup = 0x12,
	OP_drop = 0x13,
	OP_over = 0x14,
	OP_pick = 0x15,
	OP_swap = 0x16,
	OP_and = 0x1a,
	OP_minus = 0x1c,
	OP_mul = 0x1e,
	OP_neg = 0x1f,
	OP_not = 0x20,
	OP_or = 0x21,
	OP_plus = 0x22,
	OP_plus_uconst = 0x23,
	OP_shl = 0x24,
	OP_shr = 0x25,
	OP_shra = 0x26,
	OP_xor = 0x27,
	OP_lit0 = 0x30,
	OP_lit31 = 0x4f,
	OP_reg0 = 0x50,
	OP_reg31 = 0x6f,
	OP_breg0 = 0x70,
	OP_breg31 = 0x8f,
	OP_regx = 0x90,
	OP_fbreg = 0x91,
	OP_bregx = 0x92,
	OP_piece = 0x93,
	OP_deref_size = 0x94,
	OP_nop = 0x96,
	OP_call_frame_cfa = 0x9c,
	OP_implicit_value = 0x9e,
	OP_stack_value = 0x9f,
};

int ns_expr__dwarf_reg(unsigned dwreg)
{
	return ns_frame_dwarf_to_gdb_reg(dwreg);
}

struct cursor {
	const uint8_t *p, *end;
	bool bad;
};

static uint64_t rd_fixed(struct cursor *c, unsigned n)
{
	if ((size_t)(c->end - c->p) < n) {
		c->bad = true;
		c->p = c->end;
		return 0;
	}
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)c->p[i] << (8 * i);
	c->p += n;
	return v;
}

static uint64_t rd_uleb(struct cursor *c)
{
	uint64_t v = 0;
	unsigned shift = 0;
	for (;;) {
		if (c->p >= c->end) {
			c->bad = true;
			return 0;
		}
		uint8_t b = *c->p++;
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
		if (!(b & 0x80))
			return v;
	}
}

static int64_t rd_sleb(struct cursor *c)
{
	uint64_t v = 0;
	unsigned shift = 0;
	uint8_t b;
	do {
		if (c->p >= c->end) {
			c->bad = true;
			return 0;
		}
		b = *c->p++;
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
	} while (b & 0x80);
	if (shift < 64 && (b & 0x40))
		v |= ~(uint64_t)0 << shift;
	return (int64_t)v;
}

static const char *vname(const char *name)
{
	return name ? name : "variable";
}

static struct ns_err *optimized_out(const char *name, const char *why)
{
	return ns_err_create(NS_ERR_OPTIMIZED_OUT, "'%s' is optimized out here%s%s", vname(name),
	                     why ? ": " : "", why ? why : "");
}

static struct ns_err *emit_reg(struct ns_ax_asm *a, unsigned dwreg, const char *name)
{
	int r = ns_expr__dwarf_reg(dwreg);
	if (r < 0)
		return ns_err_create(
		        NS_ERR_OPTIMIZED_OUT,
		        "'%s' is optimized out here: DWARF register %u is not available",
		        vname(name), dwreg);
	ns_ax_emit_u16(a, NS_AX_REG, (uint16_t)r);
	return NULL;
}

static void emit_add_const(struct ns_ax_asm *a, int64_t off)
{
	if (off != 0) {
		ns_ax_emit_const(a, off);
		ns_ax_emit(a, NS_AX_ADD);
	}
}

/* This frame's CFA (the scope's rule). */
static struct ns_err *emit_cfa(struct ns_ax_asm *a, const struct ns_expr_scope *scope,
                               const char *name)
{
	struct ns_err *err;
	if (!scope || !scope->cfa_known)
		return optimized_out(name, "frame base unknown");
	if ((err = emit_reg(a, scope->cfa_reg, name)))
		return err;
	emit_add_const(a, scope->cfa_offset);
	return NULL;
}

static bool callee_saved(unsigned dwreg)
{
	// System V x86-64: rbx, rbp, r12-r15 (rsp is the CFA itself).
	return dwreg == 3 || dwreg == 6 || (dwreg >= 12 && dwreg <= 15);
}

/* DWARF register @dwreg as it was in the caller at the call (we are stopped in the
 * callee): rsp is our CFA; a callee-saved register is ours unless our CFI saved it
 * (then it is read from CFA + offset); anything else was clobbered. */
static struct ns_err *emit_caller_reg(struct ns_ax_asm *a, const struct ns_expr_scope *scope,
                                      unsigned dwreg, bool collect, const char *name)
{
	if (dwreg == 7)
		return emit_cfa(a, scope, name);
	if (!callee_saved(dwreg) || !scope || !scope->reg_rules_known)
		return optimized_out(name, "the caller's register is not known");
	const struct ns_dwarf_reg_rule *r = &scope->reg_rules[dwreg];
	switch (r->kind) {
	case NS_DWARF_RULE_SAME:
	case NS_DWARF_RULE_UNDEFINED: // no rule for a callee-saved register: unchanged
		return emit_reg(a, dwreg, name);
	case NS_DWARF_RULE_OFFSET: {
		struct ns_err *err = emit_cfa(a, scope, name);
		if (err)
			return err;
		emit_add_const(a, r->offset);
		if (collect)
			ns_ax_emit_u8(a, NS_AX_TRACE_QUICK, 8);
		ns_ax_emit(a, NS_AX_REF64);
		return NULL;
	}
	default:
		return optimized_out(name, "the caller's register is not known");
	}
}

/* A register of the frame the expression describes: ours, or the caller's at @site. */
static struct ns_err *emit_reg_ctx(struct ns_ax_asm *a, const struct ns_expr_scope *scope,
                                   const struct ns_dwarf_call_site *site, unsigned dwreg,
                                   bool collect, const char *name)
{
	return site ? emit_caller_reg(a, scope, dwreg, collect, name) : emit_reg(a, dwreg, name);
}

static struct ns_err *emit_expr(struct ns_ax_asm *a, const uint8_t *loc, size_t loc_len,
                                const uint8_t *frame_base, size_t frame_base_len,
                                const struct ns_expr_scope *scope, bool collect, bool in_frame_base,
                                const struct ns_dwarf_call_site *site, const char *name,
                                enum ns_expr_value_kind *kind, uint64_t *piece_out);

/* The DWARF register of an entry value's block: a single DW_OP_regN / DW_OP_regx. */
static bool entry_reg(const uint8_t *p, size_t n, unsigned *out)
{
	struct cursor c = {p, p + n, false};
	if (n == 1 && p[0] >= OP_reg0 && p[0] <= OP_reg31) {
		*out = p[0] - OP_reg0;
		return true;
	}
	if (n >= 2 && p[0] == OP_regx) {
		c.p++;
		uint64_t r = rd_uleb(&c);
		if (c.bad || c.p != c.end || r > 0xffff)
			return false;
		*out = (unsigned)r;
		return true;
	}
	return false;
}

/* The value of a call-site parameter, compiled in the caller's frame. */
static struct ns_err *emit_site_value(struct ns_ax_asm *a, const struct ns_expr_scope *scope,
                                      const struct ns_dwarf_call_site *site,
                                      const struct ns_dwarf_call_param *p, bool collect,
                                      const char *name)
{
	enum ns_expr_value_kind k;
	uint64_t piece;
	struct ns_err *err = emit_expr(a, p->value, p->value_len, site->caller_frame_base,
	                               site->caller_frame_base_len, scope, collect, false, site,
	                               name, &k, &piece);
	if (!err && piece)
		err = optimized_out(name, "the call site value is split into pieces");
	return err;
}

/* DW_OP_entry_value(DW_OP_reg@dwreg), as GDB resolves it: find the call site whose
 * return address is ours and evaluate the parameter's DW_AT_call_value in the
 * caller's frame. The choice happens at run time (one test per site); no match
 * faults deliberately (reads address 0). Leaves one value on the stack. */
static struct ns_err *emit_entry_value(struct ns_ax_asm *a, const struct ns_expr_scope *scope,
                                       unsigned dwreg, bool collect, const char *name)
{
	enum { MAX_SITES = 64 };
	const struct ns_dwarf_call_site *usable[MAX_SITES];
	const struct ns_dwarf_call_param *params[MAX_SITES];
	size_t n = 0, jumps[MAX_SITES], ends[MAX_SITES];
	int64_t ra_off = -8;
	struct ns_err *err;

	if (!scope || !scope->cfa_known || !scope->ncall_sites)
		return optimized_out(name, "value only known at function entry");
	if (scope->reg_rules_known) {
		if (scope->reg_rules[16].kind != NS_DWARF_RULE_OFFSET)
			return optimized_out(name, "return address not known");
		ra_off = scope->reg_rules[16].offset;
	}
	for (size_t i = 0; i < scope->ncall_sites && n < MAX_SITES; i++) {
		const struct ns_dwarf_call_site *site = &scope->call_sites[i];
		const struct ns_dwarf_call_param *p = NULL;
		for (size_t j = 0; j < site->nparams && !p; j++)
			if (site->params[j].dwarf_reg == dwreg)
				p = &site->params[j];
		if (!p)
			continue;
		// Keep only sites whose value compiles in the caller's frame.
		struct ns_ax_asm t;
		ns_ax_asm_init(&t);
		err = emit_site_value(&t, scope, site, p, collect, name);
		ns_ax_asm_deinit(&t);
		if (err) {
			ns_err_destroy(err);
			continue;
		}
		usable[n] = site;
		params[n++] = p;
	}
	if (!n)
		return optimized_out(name, "value only known at function entry, and no call site "
		                           "gives it");
	// [ra]
	if ((err = emit_cfa(a, scope, name)))
		return err;
	emit_add_const(a, ra_off);
	if (collect)
		ns_ax_emit_u8(a, NS_AX_TRACE_QUICK, 8);
	ns_ax_emit(a, NS_AX_REF64);
	for (size_t i = 0; i < n; i++) {
		ns_ax_emit(a, NS_AX_DUP);
		ns_ax_emit_const(a, (int64_t)(usable[i]->return_pc + scope->load_bias));
		ns_ax_emit(a, NS_AX_EQUAL);
		jumps[i] = ns_ax_emit_jump(a, NS_AX_IF_GOTO);
	}
	// No call site matched: fault on purpose ([ra, x] like the other paths).
	ns_ax_emit_const(a, 0);
	ns_ax_emit(a, NS_AX_REF8);
	size_t miss = ns_ax_emit_jump(a, NS_AX_GOTO);
	for (size_t i = 0; i < n; i++) {
		ns_ax_patch_jump(a, jumps[i], a->len);
		if ((err = emit_site_value(a, scope, usable[i], params[i], collect, name)))
			return err;
		ends[i] = ns_ax_emit_jump(a, NS_AX_GOTO);
	}
	ns_ax_patch_jump(a, miss, a->len);
	for (size_t i = 0; i < n; i++)
		ns_ax_patch_jump(a, ends[i], a->len);
	// [ra, value] -> [value]
	ns_ax_emit(a, NS_AX_SWAP);
	ns_ax_emit(a, NS_AX_POP);
	return NULL;
}

static struct ns_err *emit_expr(struct ns_ax_asm *a, const uint8_t *loc, size_t loc_len,
                                const uint8_t *frame_base, size_t frame_base_len,
                                const struct ns_expr_scope *scope, bool collect, bool in_frame_base,
                                const struct ns_dwarf_call_site *site, const char *name,
                                enum ns_expr_value_kind *kind, uint64_t *piece_out)
{
	struct cursor c = {loc, loc + loc_len, false};
	unsigned depth = 0;
	bool is_reg = false, is_value = false, done = false;
	*piece_out = 0;
	if (loc_len == 0)
		return optimized_out(name, NULL);
	while (c.p < c.end) {
		uint8_t op = *c.p++;
		struct ns_err *err;
		if (op == OP_piece) {
			uint64_t sz = rd_uleb(&c);
			if (c.bad || depth == 0 || c.p != c.end)
				return optimized_out(name, "the value is split into pieces");
			*piece_out = sz;
			break;
		}
		if (done)
			return optimized_out(name, "unsupported location expression");
		if (depth >= NS_AX_MAX_STACK - 4)
			return optimized_out(name, "location expression too deep");
		if (op >= OP_lit0 && op <= OP_lit31) {
			ns_ax_emit_const(a, op - OP_lit0);
			depth++;
		} else if (op >= OP_reg0 && op <= OP_reg31) {
			if (depth != 0 ||
			    (err = emit_reg_ctx(a, scope, site, op - OP_reg0, collect, name)))
				return depth ? optimized_out(name,
				                             "unsupported location expression")
				             : err;
			depth++;
			is_reg = done = true;
		} else if (op == OP_regx) {
			uint64_t r = rd_uleb(&c);
			if (c.bad || depth != 0 || r > 0xffff)
				return optimized_out(name, "unsupported location expression");
			if ((err = emit_reg_ctx(a, scope, site, (unsigned)r, collect, name)))
				return err;
			depth++;
			is_reg = done = true;
		} else if (op >= OP_breg0 && op <= OP_breg31) {
			int64_t off = rd_sleb(&c);
			if ((err = emit_reg_ctx(a, scope, site, op - OP_breg0, collect, name)))
				return err;
			emit_add_const(a, off);
			depth++;
		} else if (op == OP_bregx) {
			uint64_t r = rd_uleb(&c);
			int64_t off = rd_sleb(&c);
			if (c.bad || r > 0xffff)
				return optimized_out(name, "unsupported location expression");
			if ((err = emit_reg_ctx(a, scope, site, (unsigned)r, collect, name)))
				return err;
			emit_add_const(a, off);
			depth++;
		} else {
			switch (op) {
			case OP_addr: {
				uint64_t addr = rd_fixed(&c, 8);
				ns_ax_emit_const(a,
				                 (int64_t)(addr + (scope ? scope->load_bias : 0)));
				depth++;
				break;
			}
			case OP_const1u:
				ns_ax_emit_const(a, (int64_t)rd_fixed(&c, 1));
				depth++;
				break;
			case OP_const1s:
				ns_ax_emit_const(a, (int8_t)rd_fixed(&c, 1));
				depth++;
				break;
			case OP_const2u:
				ns_ax_emit_const(a, (int64_t)rd_fixed(&c, 2));
				depth++;
				break;
			case OP_const2s:
				ns_ax_emit_const(a, (int16_t)rd_fixed(&c, 2));
				depth++;
				break;
			case OP_const4u:
				ns_ax_emit_const(a, (int64_t)rd_fixed(&c, 4));
				depth++;
				break;
			case OP_const4s:
				ns_ax_emit_const(a, (int32_t)rd_fixed(&c, 4));
				depth++;
				break;
			case OP_const8u:
			case OP_const8s:
				ns_ax_emit_const(a, (int64_t)rd_fixed(&c, 8));
				depth++;
				break;
			case OP_constu:
				ns_ax_emit_const(a, (int64_t)rd_uleb(&c));
				depth++;
				break;
			case OP_consts:
				ns_ax_emit_const(a, rd_sleb(&c));
				depth++;
				break;
			case OP_fbreg: {
				int64_t off = rd_sleb(&c);
				if (c.bad)
					break;
				if (in_frame_base || !frame_base || frame_base_len == 0)
					return optimized_out(name, "frame base unknown");
				enum ns_expr_value_kind fk;
				uint64_t fpiece;
				if (!site && frame_base_len == 1 &&
				    frame_base[0] == OP_call_frame_cfa) {
					// The usual gcc frame base: fold CFA offset and fbreg.
					if (!scope || !scope->cfa_known)
						return optimized_out(name, "frame base unknown");
					if ((err = emit_reg(a, scope->cfa_reg, name)))
						return err;
					emit_add_const(a, (int64_t)((uint64_t)scope->cfa_offset +
					                            (uint64_t)off));
					depth++;
					break;
				}
				// A register frame base (DW_OP_reg6) means the register's
				// contents, so both kinds leave the base address on the stack.
				if ((err = emit_expr(a, frame_base, frame_base_len, NULL, 0, scope,
				                     collect, true, site, name, &fk, &fpiece)))
					return err;
				emit_add_const(a, off);
				depth++;
				break;
			}
			case OP_call_frame_cfa:
				if (site) {
					// The caller's CFA, from its rule at the call.
					if (!site->caller_cfa_known)
						return optimized_out(name, "frame base unknown");
					if ((err = emit_caller_reg(a, scope, site->caller_cfa.reg,
					                           collect, name)))
						return err;
					emit_add_const(a, site->caller_cfa.offset);
				} else if ((err = emit_cfa(a, scope, name))) {
					return err;
				}
				depth++;
				break;
			case OP_plus_uconst: {
				uint64_t v = rd_uleb(&c);
				if (depth < 1)
					goto bad;
				emit_add_const(a, (int64_t)v);
				break;
			}
			case OP_deref:
				if (depth < 1)
					goto bad;
				if (collect)
					ns_ax_emit_u8(a, NS_AX_TRACE_QUICK, 8);
				ns_ax_emit(a, NS_AX_REF64);
				break;
			case OP_deref_size: {
				uint64_t n = rd_fixed(&c, 1);
				static const enum ns_ax_op refs[] = {[1] = NS_AX_REF8,
				                                     [2] = NS_AX_REF16,
				                                     [4] = NS_AX_REF32,
				                                     [8] = NS_AX_REF64};
				if (depth < 1 || n > 8 || !refs[n])
					goto bad;
				if (collect)
					ns_ax_emit_u8(a, NS_AX_TRACE_QUICK, (uint8_t)n);
				ns_ax_emit(a, refs[n]);
				break;
			}
			case OP_dup:
				if (depth < 1)
					goto bad;
				ns_ax_emit(a, NS_AX_DUP);
				depth++;
				break;
			case OP_drop:
				if (depth < 1)
					goto bad;
				ns_ax_emit(a, NS_AX_POP);
				depth--;
				break;
			case OP_over:
			case OP_pick: {
				uint64_t n = op == OP_over ? 1 : rd_fixed(&c, 1);
				if (n >= depth)
					goto bad;
				ns_ax_emit_u8(a, NS_AX_PICK, (uint8_t)n);
				depth++;
				break;
			}
			case OP_swap:
				if (depth < 2)
					goto bad;
				ns_ax_emit(a, NS_AX_SWAP);
				break;
			case OP_neg:
				if (depth < 1)
					goto bad;
				ns_ax_emit_const(a, 0);
				ns_ax_emit(a, NS_AX_SWAP);
				ns_ax_emit(a, NS_AX_SUB);
				break;
			case OP_not:
				if (depth < 1)
					goto bad;
				ns_ax_emit(a, NS_AX_BIT_NOT);
				break;
			case OP_and:
			case OP_minus:
			case OP_mul:
			case OP_or:
			case OP_plus:
			case OP_shl:
			case OP_shr:
			case OP_shra:
			case OP_xor: {
				static const enum ns_ax_op bin[256] = {
				        [OP_and] = NS_AX_BIT_AND,      [OP_minus] = NS_AX_SUB,
				        [OP_mul] = NS_AX_MUL,          [OP_or] = NS_AX_BIT_OR,
				        [OP_plus] = NS_AX_ADD,         [OP_shl] = NS_AX_LSH,
				        [OP_shr] = NS_AX_RSH_UNSIGNED, [OP_shra] = NS_AX_RSH_SIGNED,
				        [OP_xor] = NS_AX_BIT_XOR,
				};
				if (depth < 2)
					goto bad;
				ns_ax_emit(a, bin[op]);
				depth--;
				break;
			}
			case OP_nop:
				break;
			case OP_stack_value:
				if (depth < 1)
					goto bad;
				is_value = done = true;
				break;
			case OP_implicit_value: {
				uint64_t n = rd_uleb(&c);
				if (c.bad || depth != 0 || n > 8 || n > (size_t)(c.end - c.p))
					return optimized_out(name, "unsupported implicit value");
				uint64_t v = rd_fixed(&c, (unsigned)n);
				ns_ax_emit_const(a, (int64_t)v);
				depth++;
				is_value = done = true;
				break;
			}
			case 0xa3: /* DW_OP_entry_value */
			case 0xf3: /* DW_OP_GNU_entry_value */ {
				uint64_t n = rd_uleb(&c);
				unsigned reg;
				if (c.bad || n > (size_t)(c.end - c.p))
					return ns_err_create(
					        NS_ERR_FORMAT,
					        "truncated location expression of '%s'",
					        vname(name));
				const uint8_t *blk = c.p;
				c.p += n;
				if (site || in_frame_base || !entry_reg(blk, (size_t)n, &reg))
					return optimized_out(name,
					                     "value only known at function entry");
				if ((err = emit_entry_value(a, scope, reg, collect, name)))
					return err;
				depth++;
				break;
			}
			default:
				return optimized_out(name, "unsupported location expression");
			}
		}
		if (c.bad)
			return ns_err_create(NS_ERR_FORMAT, "truncated location expression of '%s'",
			                     vname(name));
	}
	if (depth != 1)
		goto bad;
	*kind = is_reg || is_value ? NS_EXPR_RVALUE : NS_EXPR_LVALUE;
	return NULL;
bad:
	return optimized_out(name, "unsupported location expression");
}

struct ns_err *ns_expr__emit_location(struct ns_ax_asm *a, const uint8_t *loc, size_t loc_len,
                                      const uint8_t *frame_base, size_t frame_base_len,
                                      const struct ns_expr_scope *scope, bool collect,
                                      const char *name, enum ns_expr_value_kind *kind,
                                      uint64_t *piece_out)
{
	return emit_expr(a, loc, loc_len, frame_base, frame_base_len, scope, collect, false, NULL,
	                 name, kind, piece_out);
}

struct ns_err *ns_expr__finish(struct ns_ax_asm *a, struct ns_arena *arena, uint8_t **code,
                               size_t *len)
{
	ns_ax_emit(a, NS_AX_END);
	if (a->oom)
		return &ns_err_nomem;
	struct ns_err *err = ns_ax_verify(a->code, a->len, NULL);
	if (err)
		return ns_err_wrap(err, "internal error: generated bytecode failed verification");
	uint8_t *c = ns_arena_alloc(arena, a->len ? a->len : 1);
	if (!c)
		return &ns_err_nomem;
	memcpy(c, a->code, a->len);
	*code = c;
	*len = a->len;
	return NULL;
}

struct ns_err *ns_expr_compile_location(const uint8_t *loc, size_t loc_len,
                                        const uint8_t *frame_base, size_t frame_base_len,
                                        const struct ns_expr_scope *scope, struct ns_arena *arena,
                                        uint8_t **code, size_t *len, enum ns_expr_value_kind *kind)
{
	struct ns_ax_asm a;
	enum ns_expr_value_kind k;
	uint64_t piece;
	ns_ax_asm_init(&a);
	struct ns_err *err = ns_expr__emit_location(&a, loc, loc_len, frame_base, frame_base_len,
	                                            scope, false, NULL, &k, &piece);
	if (!err)
		err = ns_expr__finish(&a, arena, code, len);
	ns_ax_asm_deinit(&a);
	if (!err)
		*kind = k;
	return err;
}
