/* Type checker and code generator: one pass over the AST that emits agent-expression
 * bytecode while computing C types. Every value on the ax stack is 64 bits and kept
 * normalized to its C type (sign- or zero-extended from the type's width), so the usual
 * arithmetic conversions (C11 6.3.1.8) cost an ext/zero_ext only when the width or
 * signedness actually changes. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/strbuf.h"
#include "expr/expr_internal.h"

/* ---- Builtin types (literals, casts to base types, results of operators) ---- */

#define BASE_T(id, nm, sz, sg)             \
	static struct ns_dwarf_type id = { \
	        .kind = NS_DT_BASE, .name = nm, .size = sz, .is_signed = sg}
BASE_T(t_int, "int", 4, true);
BASE_T(t_uint, "unsigned int", 4, false);
BASE_T(t_long, "long", 8, true);
BASE_T(t_ulong, "unsigned long", 8, false);
BASE_T(t_llong, "long long", 8, true);
BASE_T(t_ullong, "unsigned long long", 8, false);
BASE_T(t_short, "short", 2, true);
BASE_T(t_ushort, "unsigned short", 2, false);
static struct ns_dwarf_type t_char = {
        .kind = NS_DT_BASE, .name = "char", .size = 1, .is_signed = true, .is_char = true};
static struct ns_dwarf_type t_schar = {
        .kind = NS_DT_BASE, .name = "signed char", .size = 1, .is_signed = true, .is_char = true};
static struct ns_dwarf_type t_uchar = {
        .kind = NS_DT_BASE, .name = "unsigned char", .size = 1, .is_char = true};
static struct ns_dwarf_type t_bool = {
        .kind = NS_DT_BASE, .name = "_Bool", .size = 1, .is_bool = true};
static struct ns_dwarf_type t_void = {.kind = NS_DT_VOID, .name = "void"};
static struct ns_dwarf_type t_float = {.kind = NS_DT_FLOAT, .name = "float", .size = 4};
static struct ns_dwarf_type t_double = {.kind = NS_DT_FLOAT, .name = "double", .size = 8};
static struct ns_dwarf_type t_ldouble = {.kind = NS_DT_FLOAT, .name = "long double", .size = 16};

static struct ns_dwarf_type *const builtins[] = {
        &t_int,  &t_uint,  &t_long,  &t_ulong, &t_llong, &t_ullong, &t_short,  &t_ushort,
        &t_char, &t_schar, &t_uchar, &t_bool,  &t_void,  &t_float,  &t_double, &t_ldouble,
};

const struct ns_dwarf_type *ns_expr__strip(const struct ns_dwarf_type *t)
{
	unsigned guard = 0;
	while (t &&
	       (t->kind == NS_DT_TYPEDEF || t->kind == NS_DT_CONST || t->kind == NS_DT_VOLATILE) &&
	       guard++ < 64)
		t = t->target;
	return t;
}

/* NULL (void) becomes the builtin void type. */
static const struct ns_dwarf_type *strip(const struct ns_dwarf_type *t)
{
	t = ns_expr__strip(t);
	return t ? t : &t_void;
}

static void type_str(struct ns_strbuf *sb, const struct ns_dwarf_type *t, unsigned depth)
{
	if (!t) {
		ns_strbuf_puts(sb, "void");
		return;
	}
	if (depth > 16) {
		ns_strbuf_puts(sb, "...");
		return;
	}
	switch (t->kind) {
	case NS_DT_STRUCT:
	case NS_DT_UNION:
	case NS_DT_ENUM:
		ns_strbuf_printf(sb, "%s %s",
		                 t->kind == NS_DT_STRUCT  ? "struct"
		                 : t->kind == NS_DT_UNION ? "union"
		                                          : "enum",
		                 t->name ? t->name : "<anonymous>");
		break;
	case NS_DT_POINTER:
		type_str(sb, t->target, depth + 1);
		ns_strbuf_puts(sb, " *");
		break;
	case NS_DT_CONST:
		ns_strbuf_puts(sb, "const ");
		type_str(sb, t->target, depth + 1);
		break;
	case NS_DT_VOLATILE:
		ns_strbuf_puts(sb, "volatile ");
		type_str(sb, t->target, depth + 1);
		break;
	case NS_DT_ARRAY:
		type_str(sb, t->target, depth + 1);
		if (t->count_known)
			ns_strbuf_printf(sb, " [%llu]", (unsigned long long)t->count);
		else
			ns_strbuf_puts(sb, " []");
		break;
	case NS_DT_FUNC:
		ns_strbuf_puts(sb, "function");
		break;
	default:
		ns_strbuf_puts(sb, t->name ? t->name : "void");
		break;
	}
}

/* Name of @t for messages, in a static-lifetime arena-free way: copied into @buf. */
static const char *tname(const struct ns_dwarf_type *t, char *buf, size_t cap)
{
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	type_str(&sb, t, 0);
	snprintf(buf, cap, "%s", sb.oom ? "?" : ns_strbuf_str(&sb));
	ns_strbuf_deinit(&sb);
	return buf;
}

/* ---- Code generator state ---- */

struct cg {
	struct ns_ax_asm a;
	const struct ns_expr_scope *scope;
	struct ns_arena *arena;
	bool collect;
};

enum vkind {
	VK_RVAL, /* the value is on the stack */
	VK_MEM,  /* the object's address is on the stack */
	VK_BITF, /* the storage unit's address is on the stack */
};

struct val {
	enum vkind kind;
	const struct ns_dwarf_type *type; /* unstripped; never NULL */
	unsigned bit_size, bit_offset;
	const char *reg_var; /* VK_RVAL held in a register or computed: its variable */
};

static bool is_integer(const struct ns_dwarf_type *t)
{
	t = strip(t);
	return t->kind == NS_DT_BASE || t->kind == NS_DT_ENUM;
}

static bool is_pointer(const struct ns_dwarf_type *t)
{
	return strip(t)->kind == NS_DT_POINTER;
}

static bool is_scalar(const struct ns_dwarf_type *t)
{
	return is_integer(t) || is_pointer(t);
}

/* Width and signedness of an integer or pointer type. */
static void int_props(const struct ns_dwarf_type *t, unsigned *size, bool *sgn)
{
	t = strip(t);
	if (t->kind == NS_DT_ENUM && t->target && strip(t->target)->kind == NS_DT_BASE) {
		int_props(t->target, size, sgn);
		return;
	}
	if (t->kind == NS_DT_POINTER) {
		*size = 8;
		*sgn = false;
		return;
	}
	*size = t->size ? (unsigned)(t->size > 8 ? 8 : t->size) : 4;
	*sgn = t->is_signed && !t->is_bool;
}

/* Integer promotion (C11 6.3.1.1): everything narrower than int becomes int. */
static const struct ns_dwarf_type *promote(const struct ns_dwarf_type *t)
{
	unsigned size;
	bool sgn;
	int_props(t, &size, &sgn);
	if (size < 4)
		return &t_int;
	if (strip(t)->kind == NS_DT_BASE)
		return t;
	return size == 4 ? (sgn ? &t_int : &t_uint) : (sgn ? &t_long : &t_ulong);
}

/* Usual arithmetic conversions for two integer operands. */
static const struct ns_dwarf_type *arith_conv(const struct ns_dwarf_type *l,
                                              const struct ns_dwarf_type *r)
{
	unsigned ls, rs;
	bool lsg, rsg;
	l = promote(l);
	r = promote(r);
	int_props(l, &ls, &lsg);
	int_props(r, &rs, &rsg);
	if (ls == rs && lsg == rsg)
		return l;
	unsigned size;
	bool sgn;
	if (lsg == rsg) {
		size = ls > rs ? ls : rs;
		sgn = lsg;
	} else {
		unsigned us = lsg ? rs : ls, ss = lsg ? ls : rs;
		if (us >= ss) {
			size = us;
			sgn = false;
		} else {
			size = ss;
			sgn = true;
		}
	}
	return size == 4 ? (sgn ? &t_int : &t_uint) : (sgn ? &t_long : &t_ulong);
}

static void emit_norm(struct cg *cg, unsigned size, bool sgn)
{
	if (size < 8)
		ns_ax_emit_u8(&cg->a, sgn ? NS_AX_EXT : NS_AX_ZERO_EXT, (uint8_t)(size * 8));
}

static void emit_norm_type(struct cg *cg, const struct ns_dwarf_type *t)
{
	unsigned size;
	bool sgn;
	int_props(t, &size, &sgn);
	emit_norm(cg, size, sgn);
}

/* Does converting a normalized @from value to @to need code? */
static bool conv_needed(const struct ns_dwarf_type *from, const struct ns_dwarf_type *to)
{
	const struct ns_dwarf_type *st = strip(to);
	if (st->kind == NS_DT_BASE && st->is_bool)
		return true;
	if (st->kind == NS_DT_POINTER)
		return false;
	unsigned fs, ts;
	bool fsg, tsg;
	int_props(from, &fs, &fsg);
	int_props(to, &ts, &tsg);
	if (ts >= 8)
		return false;
	if (fs < ts && (!fsg || tsg))
		return false;
	return !(fs == ts && fsg == tsg);
}

static void emit_conv(struct cg *cg, const struct ns_dwarf_type *from,
                      const struct ns_dwarf_type *to)
{
	if (!conv_needed(from, to))
		return;
	const struct ns_dwarf_type *st = strip(to);
	if (st->kind == NS_DT_BASE && st->is_bool) {
		ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
		ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
		return;
	}
	emit_norm_type(cg, to);
}

static struct ns_dwarf_type *pointer_to(struct cg *cg, const struct ns_dwarf_type *t)
{
	struct ns_dwarf_type *p = ns_arena_alloc(cg->arena, sizeof(*p));
	if (p) {
		p->kind = NS_DT_POINTER;
		p->size = 8;
		p->target = (struct ns_dwarf_type *)(t && t->kind == NS_DT_VOID ? NULL : t);
	}
	return p;
}

static struct ns_err *type_err(int column, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static struct ns_err *type_err(int column, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return ns_err_at(NS_ERR_TYPE, column, "%s", msg);
}

static struct ns_err *float_err(int column)
{
	return ns_err_at(NS_ERR_TYPE, column, "floating-point arithmetic is not supported");
}

static enum ns_ax_op ref_op(unsigned size)
{
	switch (size) {
	case 1:
		return NS_AX_REF8;
	case 2:
		return NS_AX_REF16;
	case 4:
		return NS_AX_REF32;
	default:
		return NS_AX_REF64;
	}
}

/* Load @v into a scalar value (arrays decay to pointers, functions to addresses). */
static struct ns_err *rvalue(struct cg *cg, struct val *v, int column)
{
	char b[256];
	const struct ns_dwarf_type *st = strip(v->type);
	if (v->kind == VK_RVAL) {
		if (st->kind == NS_DT_FLOAT)
			return float_err(column);
		if (!is_scalar(v->type))
			return type_err(column, "cannot use a value of type '%s' here",
			                tname(v->type, b, sizeof(b)));
		return NULL;
	}
	if (v->kind == VK_BITF) {
		unsigned need = v->bit_offset + v->bit_size, size = 1;
		while (size * 8 < need && size < 8)
			size *= 2;
		unsigned size_t_;
		bool sgn;
		int_props(v->type, &size_t_, &sgn);
		if (cg->collect)
			ns_ax_emit_u8(&cg->a, NS_AX_TRACE_QUICK, (uint8_t)size);
		ns_ax_emit(&cg->a, ref_op(size));
		// Move the field to the top bits, then shift it back down with sign or
		// zero fill: works for any offset and width up to 64.
		if (64 - need > 0) {
			ns_ax_emit_const(&cg->a, 64 - need);
			ns_ax_emit(&cg->a, NS_AX_LSH);
		}
		if (64 - v->bit_size > 0) {
			ns_ax_emit_const(&cg->a, 64 - v->bit_size);
			ns_ax_emit(&cg->a, sgn ? NS_AX_RSH_SIGNED : NS_AX_RSH_UNSIGNED);
		}
		v->kind = VK_RVAL;
		// C11 6.3.1.1p2: a bit-field that int can represent promotes to int.
		if (v->bit_size < 32 && !(st->kind == NS_DT_BASE && st->is_bool))
			v->type = &t_int;
		return NULL;
	}
	switch (st->kind) {
	case NS_DT_ARRAY:
	case NS_DT_FUNC: {
		const struct ns_dwarf_type *p =
		        pointer_to(cg, st->kind == NS_DT_ARRAY ? st->target : v->type);
		if (!p)
			return &ns_err_nomem;
		v->type = p;
		v->kind = VK_RVAL;
		return NULL;
	}
	case NS_DT_FLOAT:
		return float_err(column);
	case NS_DT_BASE:
	case NS_DT_ENUM:
	case NS_DT_POINTER: {
		unsigned size = st->kind == NS_DT_POINTER ? 8 : (unsigned)st->size;
		unsigned isz;
		bool sgn;
		if (st->kind == NS_DT_ENUM && size == 0)
			size = 4;
		if (size != 1 && size != 2 && size != 4 && size != 8)
			return type_err(column, "values of type '%s' (%u bytes) are not supported",
			                tname(v->type, b, sizeof(b)), size);
		int_props(v->type, &isz, &sgn);
		if (cg->collect)
			ns_ax_emit_u8(&cg->a, NS_AX_TRACE_QUICK, (uint8_t)size);
		ns_ax_emit(&cg->a, ref_op(size));
		if (sgn && size < 8)
			ns_ax_emit_u8(&cg->a, NS_AX_EXT, (uint8_t)(size * 8));
		v->kind = VK_RVAL;
		return NULL;
	}
	case NS_DT_VOID:
		return type_err(column, "void value not ignored as it ought to be");
	default:
		return type_err(column, "cannot use a value of type '%s' here",
		                tname(v->type, b, sizeof(b)));
	}
}

/* ---- Identifiers ---- */

static const struct ns_dwarf_var *find_local(const struct ns_expr_scope *scope, const char *name)
{
	if (!scope || !scope->locals)
		return NULL;
	for (size_t i = 0; i < scope->locals->nvars; i++) {
		const struct ns_dwarf_var *v = &scope->locals->vars[i];
		if (v->name && strcmp(v->name, name) == 0)
			return v;
	}
	return NULL;
}

static bool find_global(struct cg *cg, const char *name, struct ns_dwarf_var *out,
                        struct ns_err **err)
{
	*err = NULL;
	if (!cg->scope || !cg->scope->lookup_global)
		return false;
	struct ns_err *e = cg->scope->lookup_global(cg->scope->ctx, name, cg->arena, out);
	if (!e)
		return true;
	if (e->code != NS_ERR_NOT_FOUND)
		*err = e;
	else
		ns_err_destroy(e);
	return false;
}

static bool is_variable(struct cg *cg, const char *name)
{
	struct ns_dwarf_var gv;
	struct ns_err *err;
	if (find_local(cg->scope, name))
		return true;
	bool found = find_global(cg, name, &gv, &err);
	ns_err_destroy(err);
	return found;
}

static bool is_type_cb(void *ctx, const char *name)
{
	struct cg *cg = ctx;
	if (!cg->scope || !cg->scope->lookup_type || is_variable(cg, name))
		return false;
	return cg->scope->lookup_type(cg->scope->ctx, name) != NULL;
}

static bool enum_lookup(const struct ns_dwarf_type *t, const char *name, int64_t *value)
{
	t = ns_expr__strip(t);
	if (!t || t->kind != NS_DT_ENUM)
		return false;
	for (size_t i = 0; i < t->nenums; i++) {
		if (t->enums[i].name && strcmp(t->enums[i].name, name) == 0) {
			*value = t->enums[i].value;
			return true;
		}
	}
	return false;
}

enum { MAX_SEEN = 512 };

struct enum_search {
	const struct ns_dwarf_type *seen[MAX_SEEN];
	size_t nseen;
	const char *name;
	const struct ns_dwarf_type *found;
	int64_t value;
};

/* Depth-first search of the enum types reachable from @t (through pointers, typedefs,
 * members and array elements) for an enumerator @s->name. */
static void search_enums(struct enum_search *s, const struct ns_dwarf_type *t, unsigned depth)
{
	if (!t || s->found || depth > 12)
		return;
	for (size_t i = 0; i < s->nseen; i++)
		if (s->seen[i] == t)
			return;
	if (s->nseen == MAX_SEEN)
		return;
	s->seen[s->nseen++] = t;
	if (t->kind == NS_DT_ENUM && enum_lookup(t, s->name, &s->value)) {
		s->found = t;
		return;
	}
	if (t->target)
		search_enums(s, t->target, depth + 1);
	for (size_t i = 0; i < t->nmembers; i++)
		search_enums(s, t->members[i].type, depth + 1);
}

static struct ns_err *gen_var(struct cg *cg, const struct ns_dwarf_var *var,
                              const struct ns_dwarf_type *var_type, int column, struct val *out)
{
	char b[256];
	const struct ns_dwarf_type *type = var_type ? var_type : &t_void;
	const struct ns_dwarf_type *st = strip(type);
	(void)column;
	if (var->has_const && var->loc_len == 0) {
		if (!is_scalar(type))
			return ns_err_create(NS_ERR_OPTIMIZED_OUT, "'%s' is optimized out here",
			                     var->name);
		ns_ax_emit_const(&cg->a, var->const_value);
		emit_norm_type(cg, type);
		*out = (struct val){.kind = VK_RVAL, .type = type, .reg_var = var->name};
		return NULL;
	}
	const uint8_t *fb = NULL;
	size_t fb_len = 0;
	if (var->kind != NS_DWARF_GLOBAL && cg->scope && cg->scope->locals) {
		fb = cg->scope->locals->frame_base;
		fb_len = cg->scope->locals->frame_base_len;
	}
	enum ns_expr_value_kind kind;
	uint64_t piece;
	struct ns_err *err =
	        ns_expr__emit_location(&cg->a, var->loc, var->loc_len, fb, fb_len, cg->scope,
	                               cg->collect, var->name, &kind, &piece);
	if (err)
		return err;
	if (piece && piece < st->size)
		return ns_err_create(NS_ERR_OPTIMIZED_OUT,
		                     "'%s' is optimized out here: only part of it has a location",
		                     var->name);
	if (kind == NS_EXPR_LVALUE) {
		*out = (struct val){.kind = VK_MEM, .type = type};
		return NULL;
	}
	if (!is_scalar(type) || (strip(type)->kind == NS_DT_ENUM ? 0 : st->size > 8))
		return ns_err_create(NS_ERR_OPTIMIZED_OUT,
		                     "'%s' is optimized out here: a %s value is not in memory",
		                     var->name, tname(type, b, sizeof(b)));
	// A register holds garbage above the variable's width.
	emit_norm_type(cg, type);
	*out = (struct val){.kind = VK_RVAL, .type = type, .reg_var = var->name};
	return NULL;
}

static struct ns_err *gen_ident(struct cg *cg, const struct ns_expr__node *n,
                                const struct ns_dwarf_type *hint, struct val *out)
{
	const struct ns_dwarf_var *lv = find_local(cg->scope, n->name);
	if (lv)
		return gen_var(cg, lv, lv->type, n->column, out);
	struct ns_dwarf_var gv;
	struct ns_err *err;
	if (find_global(cg, n->name, &gv, &err))
		return gen_var(cg, &gv, gv.type, n->column, out);
	if (err)
		return err;
	// An enumerator: first of the enum the other operand has, then of any enum type
	// reachable from the variables in scope.
	int64_t value;
	if (hint && enum_lookup(hint, n->name, &value)) {
		ns_ax_emit_const(&cg->a, value);
		*out = (struct val){.kind = VK_RVAL, .type = hint};
		return NULL;
	}
	if (cg->scope && cg->scope->locals) {
		struct enum_search *s = ns_arena_alloc(cg->arena, sizeof(*s));
		if (!s)
			return &ns_err_nomem;
		s->name = n->name;
		for (size_t i = 0; i < cg->scope->locals->nvars && !s->found; i++)
			search_enums(s, cg->scope->locals->vars[i].type, 0);
		if (s->found) {
			ns_ax_emit_const(&cg->a, s->value);
			*out = (struct val){.kind = VK_RVAL, .type = s->found};
			return NULL;
		}
	}
	return type_err(n->column, "no symbol '%s' in current context", n->name);
}

/* ---- Types named in casts and sizeof ---- */

static struct ns_err *resolve_tname(struct cg *cg, const struct ns_expr__tname *tn,
                                    const struct ns_dwarf_type **out)
{
	const struct ns_dwarf_type *t = NULL;
	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++)
		if (strcmp(builtins[i]->name, tn->base) == 0)
			t = builtins[i];
	if (!t && cg->scope && cg->scope->lookup_type)
		t = cg->scope->lookup_type(cg->scope->ctx, tn->base);
	if (!t)
		return type_err(tn->column, "no type named '%s' in current context", tn->base);
	for (unsigned i = 0; i < tn->nptr; i++)
		if (!(t = pointer_to(cg, t)))
			return &ns_err_nomem;
	*out = t;
	return NULL;
}

/* ---- Expressions ---- */

static struct ns_err *gen(struct cg *cg, const struct ns_expr__node *n,
                          const struct ns_dwarf_type *hint, struct val *out);

static struct ns_err *gen_rvalue(struct cg *cg, const struct ns_expr__node *n,
                                 const struct ns_dwarf_type *hint, struct val *out)
{
	struct ns_err *err = gen(cg, n, hint, out);
	return err ? err : rvalue(cg, out, n->column);
}

/* Type-check @n without keeping its code (sizeof, ?: result types). */
static struct ns_err *type_of(struct cg *cg, const struct ns_expr__node *n, bool rval,
                              struct val *out)
{
	struct ns_ax_asm saved = cg->a;
	ns_ax_asm_init(&cg->a);
	struct ns_err *err = rval ? gen_rvalue(cg, n, NULL, out) : gen(cg, n, NULL, out);
	ns_ax_asm_deinit(&cg->a);
	cg->a = saved;
	return err;
}

static bool find_member(const struct ns_dwarf_type *st, const char *name, uint64_t base,
                        struct ns_dwarf_member *out, unsigned depth)
{
	if (depth > 8)
		return false;
	for (size_t i = 0; i < st->nmembers; i++) {
		const struct ns_dwarf_member *m = &st->members[i];
		if (m->name && strcmp(m->name, name) == 0) {
			*out = *m;
			out->offset += base;
			return true;
		}
	}
	// C11 anonymous structs and unions: their members belong to the parent.
	for (size_t i = 0; i < st->nmembers; i++) {
		const struct ns_dwarf_member *m = &st->members[i];
		const struct ns_dwarf_type *mt = strip(m->type);
		if (!m->name && (mt->kind == NS_DT_STRUCT || mt->kind == NS_DT_UNION) &&
		    find_member(mt, name, base + m->offset, out, depth + 1))
			return true;
	}
	return false;
}

static void emit_add(struct cg *cg, uint64_t off)
{
	if (off) {
		ns_ax_emit_const(&cg->a, (int64_t)off);
		ns_ax_emit(&cg->a, NS_AX_ADD);
	}
}

/* The object at the address on the stack has type @obj: select member n->name. */
static struct ns_err *select_member(struct cg *cg, const struct ns_expr__node *n,
                                    const struct ns_dwarf_type *obj, struct val *out)
{
	char b[256];
	const struct ns_dwarf_type *st = strip(obj);
	struct ns_dwarf_member m;
	if (st->kind != NS_DT_STRUCT && st->kind != NS_DT_UNION)
		return type_err(
		        n->column,
		        "request for member '%s' in something not a structure or union ('%s')",
		        n->name, tname(obj, b, sizeof(b)));
	if (!find_member(st, n->name, 0, &m, 0))
		return type_err(n->column, "no member '%s' in %s", n->name,
		                tname(st, b, sizeof(b)));
	emit_add(cg, m.offset);
	const struct ns_dwarf_type *mt = m.type ? m.type : &t_void;
	if (m.bit_size)
		*out = (struct val){.kind = VK_BITF,
		                    .type = mt,
		                    .bit_size = m.bit_size,
		                    .bit_offset = m.bit_offset};
	else
		*out = (struct val){.kind = VK_MEM, .type = mt};
	return NULL;
}

static uint64_t elem_size(const struct ns_dwarf_type *ptr)
{
	const struct ns_dwarf_type *t = strip(strip(ptr)->target);
	// GNU C: arithmetic on void * (and function pointers) steps by one byte.
	if (t->kind == NS_DT_VOID || t->kind == NS_DT_FUNC)
		return 1;
	return t->size;
}

static void emit_scale(struct cg *cg, uint64_t size)
{
	if (size != 1) {
		ns_ax_emit_const(&cg->a, (int64_t)size);
		ns_ax_emit(&cg->a, NS_AX_MUL);
	}
}

static struct ns_err *gen_index(struct cg *cg, const struct ns_expr__node *n, struct val *out)
{
	char b[256];
	struct val l, r;
	struct ns_err *err;
	if ((err = gen_rvalue(cg, n->lhs, NULL, &l)) || (err = gen_rvalue(cg, n->rhs, NULL, &r)))
		return err;
	if (is_integer(l.type) && is_pointer(r.type)) {
		ns_ax_emit(&cg->a, NS_AX_SWAP);
		struct val t = l;
		l = r;
		r = t;
	}
	if (!is_pointer(l.type))
		return type_err(n->column, "subscripted value is neither array nor pointer ('%s')",
		                tname(l.type, b, sizeof(b)));
	if (!is_integer(r.type))
		return type_err(n->column, "array subscript is not an integer");
	const struct ns_dwarf_type *et = strip(strip(l.type)->target);
	if (et->kind == NS_DT_VOID || (et->size == 0 && et->kind != NS_DT_ARRAY))
		return type_err(n->column, "subscript of pointer to incomplete type '%s'",
		                tname(et, b, sizeof(b)));
	emit_scale(cg, et->size);
	ns_ax_emit(&cg->a, NS_AX_ADD);
	*out = (struct val){.kind = VK_MEM, .type = strip(l.type)->target};
	return NULL;
}

static struct ns_err *gen_unary(struct cg *cg, const struct ns_expr__node *n, struct val *out)
{
	char b[256];
	struct val v;
	struct ns_err *err;
	if (n->op == '&') {
		if ((err = gen(cg, n->lhs, NULL, &v)))
			return err;
		if (v.kind == VK_BITF)
			return type_err(n->column, "cannot take the address of a bit-field");
		if (v.kind != VK_MEM) {
			if (v.reg_var)
				return type_err(
				        n->column,
				        "cannot take the address of '%s': it is not in memory",
				        v.reg_var);
			return type_err(n->column, "cannot take the address of an rvalue");
		}
		const struct ns_dwarf_type *p = pointer_to(cg, v.type);
		if (!p)
			return &ns_err_nomem;
		*out = (struct val){.kind = VK_RVAL, .type = p};
		return NULL;
	}
	if ((err = gen_rvalue(cg, n->lhs, NULL, &v)))
		return err;
	switch (n->op) {
	case '*': {
		if (!is_pointer(v.type))
			return type_err(n->column, "invalid type argument of unary '*' (have '%s')",
			                tname(v.type, b, sizeof(b)));
		const struct ns_dwarf_type *t = strip(v.type)->target;
		if (strip(t)->kind == NS_DT_VOID)
			return type_err(n->column, "dereferencing 'void *' pointer");
		*out = (struct val){.kind = VK_MEM, .type = t};
		return NULL;
	}
	case '!':
		ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
		*out = (struct val){.kind = VK_RVAL, .type = &t_int};
		return NULL;
	case '-':
	case '+':
	case '~': {
		if (!is_integer(v.type))
			return type_err(n->column, "wrong type argument to unary '%c' ('%s')",
			                n->op, tname(v.type, b, sizeof(b)));
		const struct ns_dwarf_type *t = promote(v.type);
		if (n->op == '-') {
			ns_ax_emit_const(&cg->a, 0);
			ns_ax_emit(&cg->a, NS_AX_SWAP);
			ns_ax_emit(&cg->a, NS_AX_SUB);
			emit_norm_type(cg, t);
		} else if (n->op == '~') {
			ns_ax_emit(&cg->a, NS_AX_BIT_NOT);
			emit_norm_type(cg, t);
		}
		*out = (struct val){.kind = VK_RVAL, .type = t};
		return NULL;
	}
	default:
		return type_err(n->column, "unsupported operator '%c'", n->op);
	}
}

static struct ns_err *gen_cast(struct cg *cg, const struct ns_expr__node *n, struct val *out)
{
	char b[256];
	const struct ns_dwarf_type *t;
	struct val v;
	struct ns_err *err = resolve_tname(cg, &n->tname, &t);
	if (err)
		return err;
	const struct ns_dwarf_type *st = strip(t);
	if (st->kind == NS_DT_FLOAT)
		return float_err(n->column);
	if (!is_scalar(t))
		return type_err(n->column, "cannot cast to '%s'", tname(t, b, sizeof(b)));
	if ((err = gen_rvalue(cg, n->lhs, NULL, &v)))
		return err;
	emit_conv(cg, v.type, t);
	*out = (struct val){.kind = VK_RVAL, .type = t};
	return NULL;
}

static bool is_cmp(int op)
{
	return op == NS_OP_LT || op == NS_OP_LE || op == NS_OP_GT || op == NS_OP_GE ||
	       op == NS_OP_EQ || op == NS_OP_NE;
}

static void emit_compare(struct cg *cg, int op, bool sgn)
{
	enum ns_ax_op less = sgn ? NS_AX_LESS_SIGNED : NS_AX_LESS_UNSIGNED;
	switch (op) {
	case NS_OP_LT:
		ns_ax_emit(&cg->a, less);
		break;
	case NS_OP_GT:
		ns_ax_emit(&cg->a, NS_AX_SWAP);
		ns_ax_emit(&cg->a, less);
		break;
	case NS_OP_LE:
		ns_ax_emit(&cg->a, NS_AX_SWAP);
		ns_ax_emit(&cg->a, less);
		ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
		break;
	case NS_OP_GE:
		ns_ax_emit(&cg->a, less);
		ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
		break;
	case NS_OP_EQ:
		ns_ax_emit(&cg->a, NS_AX_EQUAL);
		break;
	case NS_OP_NE:
		ns_ax_emit(&cg->a, NS_AX_EQUAL);
		ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
		break;
	}
}

static struct ns_err *gen_logical(struct cg *cg, const struct ns_expr__node *n, struct val *out)
{
	struct val v;
	struct ns_err *err;
	if ((err = gen_rvalue(cg, n->lhs, NULL, &v)))
		return err;
	// a && b: if !a -> 0; a || b: if a -> 1; else the truth value of b.
	if (n->op == NS_OP_LAND)
		ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
	size_t short_jump = ns_ax_emit_jump(&cg->a, NS_AX_IF_GOTO);
	if ((err = gen_rvalue(cg, n->rhs, NULL, &v)))
		return err;
	ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
	ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
	size_t end_jump = ns_ax_emit_jump(&cg->a, NS_AX_GOTO);
	ns_ax_patch_jump(&cg->a, short_jump, cg->a.len);
	ns_ax_emit_const(&cg->a, n->op == NS_OP_LOR ? 1 : 0);
	ns_ax_patch_jump(&cg->a, end_jump, cg->a.len);
	*out = (struct val){.kind = VK_RVAL, .type = &t_int};
	return NULL;
}

static struct ns_err *gen_binary(struct cg *cg, const struct ns_expr__node *n, struct val *out)
{
	char b1[256], b2[256];
	struct val l, r;
	struct ns_err *err;
	int op = n->op;
	if (op == NS_OP_LAND || op == NS_OP_LOR)
		return gen_logical(cg, n, out);
	if (op == NS_OP_COMMA) {
		if ((err = gen(cg, n->lhs, NULL, &l)))
			return err;
		ns_ax_emit(&cg->a, NS_AX_POP);
		return gen(cg, n->rhs, NULL, out);
	}
	// `TOOL == it->kind`: an unknown name on the left is resolved as an enumerator of
	// the right operand's enum, so the right operand is compiled first.
	if (n->lhs->kind == NS_EN_IDENT && !is_variable(cg, n->lhs->name) &&
	    !(n->rhs->kind == NS_EN_IDENT && !is_variable(cg, n->rhs->name))) {
		if ((err = gen_rvalue(cg, n->rhs, NULL, &r)) ||
		    (err = gen_rvalue(cg, n->lhs, r.type, &l)))
			return err;
		ns_ax_emit(&cg->a, NS_AX_SWAP);
	} else {
		if ((err = gen_rvalue(cg, n->lhs, NULL, &l)) ||
		    (err = gen_rvalue(cg, n->rhs, l.type, &r)))
			return err;
	}
	bool lp = is_pointer(l.type), rp = is_pointer(r.type);
	bool li = is_integer(l.type), ri = is_integer(r.type);
	if (!(lp || li) || !(rp || ri))
		return type_err(n->column, "invalid operands to binary %s (have '%s' and '%s')",
		                ns_expr__op_str(op), tname(l.type, b1, sizeof(b1)),
		                tname(r.type, b2, sizeof(b2)));
	if (is_cmp(op)) {
		bool sgn = false;
		if (li && ri) {
			const struct ns_dwarf_type *c = arith_conv(l.type, r.type);
			unsigned size;
			emit_conv(cg, r.type, c);
			if (conv_needed(l.type, c)) {
				ns_ax_emit(&cg->a, NS_AX_SWAP);
				emit_conv(cg, l.type, c);
				ns_ax_emit(&cg->a, NS_AX_SWAP);
			}
			int_props(c, &size, &sgn);
		}
		emit_compare(cg, op, sgn);
		*out = (struct val){.kind = VK_RVAL, .type = &t_int};
		return NULL;
	}
	if (lp || rp) {
		if (op == NS_OP_ADD && lp != rp) {
			if (rp)
				ns_ax_emit(&cg->a, NS_AX_SWAP);
			// integer on top, pointer below
			const struct ns_dwarf_type *pt = lp ? l.type : r.type;
			emit_scale(cg, elem_size(pt));
			ns_ax_emit(&cg->a, NS_AX_ADD);
			*out = (struct val){.kind = VK_RVAL, .type = pt};
			return NULL;
		}
		if (op == NS_OP_SUB && lp && ri) {
			emit_scale(cg, elem_size(l.type));
			ns_ax_emit(&cg->a, NS_AX_SUB);
			*out = (struct val){.kind = VK_RVAL, .type = l.type};
			return NULL;
		}
		if (op == NS_OP_SUB && lp && rp) {
			uint64_t es = elem_size(l.type);
			ns_ax_emit(&cg->a, NS_AX_SUB);
			if (es > 1) {
				ns_ax_emit_const(&cg->a, (int64_t)es);
				ns_ax_emit(&cg->a, NS_AX_DIV_SIGNED);
			}
			*out = (struct val){.kind = VK_RVAL, .type = &t_long};
			return NULL;
		}
		return type_err(n->column, "invalid operands to binary %s (have '%s' and '%s')",
		                ns_expr__op_str(op), tname(l.type, b1, sizeof(b1)),
		                tname(r.type, b2, sizeof(b2)));
	}
	const struct ns_dwarf_type *c;
	unsigned size;
	bool sgn;
	if (op == NS_OP_SHL || op == NS_OP_SHR) {
		// C11 6.5.7: the type is the promoted left operand's.
		c = promote(l.type);
	} else {
		c = arith_conv(l.type, r.type);
		emit_conv(cg, r.type, c);
		if (conv_needed(l.type, c)) {
			ns_ax_emit(&cg->a, NS_AX_SWAP);
			emit_conv(cg, l.type, c);
			ns_ax_emit(&cg->a, NS_AX_SWAP);
		}
	}
	int_props(c, &size, &sgn);
	switch (op) {
	case NS_OP_MUL:
		ns_ax_emit(&cg->a, NS_AX_MUL);
		break;
	case NS_OP_DIV:
		ns_ax_emit(&cg->a, sgn ? NS_AX_DIV_SIGNED : NS_AX_DIV_UNSIGNED);
		break;
	case NS_OP_MOD:
		ns_ax_emit(&cg->a, sgn ? NS_AX_REM_SIGNED : NS_AX_REM_UNSIGNED);
		break;
	case NS_OP_ADD:
		ns_ax_emit(&cg->a, NS_AX_ADD);
		break;
	case NS_OP_SUB:
		ns_ax_emit(&cg->a, NS_AX_SUB);
		break;
	case NS_OP_SHL:
		ns_ax_emit(&cg->a, NS_AX_LSH);
		break;
	case NS_OP_SHR:
		ns_ax_emit(&cg->a, sgn ? NS_AX_RSH_SIGNED : NS_AX_RSH_UNSIGNED);
		break;
	case NS_OP_BAND:
		ns_ax_emit(&cg->a, NS_AX_BIT_AND);
		break;
	case NS_OP_BXOR:
		ns_ax_emit(&cg->a, NS_AX_BIT_XOR);
		break;
	case NS_OP_BOR:
		ns_ax_emit(&cg->a, NS_AX_BIT_OR);
		break;
	default:
		return type_err(n->column, "unsupported operator");
	}
	emit_norm(cg, size, sgn);
	*out = (struct val){.kind = VK_RVAL, .type = c};
	return NULL;
}

static struct ns_err *gen_cond(struct cg *cg, const struct ns_expr__node *n, struct val *out)
{
	char b1[256], b2[256];
	struct val c, l, r;
	struct ns_err *err;
	// Find the result type first: the false branch is emitted before the true one.
	if ((err = type_of(cg, n->lhs, false, &l)) || (err = type_of(cg, n->rhs, false, &r)))
		return err;
	const struct ns_dwarf_type *sl = strip(l.type), *sr = strip(r.type);
	bool objects = (sl->kind == NS_DT_STRUCT || sl->kind == NS_DT_UNION) && sl == sr &&
	               l.kind == VK_MEM && r.kind == VK_MEM;
	const struct ns_dwarf_type *t = NULL;
	if (objects) {
		t = l.type;
	} else {
		if ((err = type_of(cg, n->lhs, true, &l)) || (err = type_of(cg, n->rhs, true, &r)))
			return err;
		if (is_integer(l.type) && is_integer(r.type))
			t = arith_conv(l.type, r.type);
		else if (is_pointer(l.type) && (is_pointer(r.type) || is_integer(r.type)))
			t = l.type;
		else if (is_integer(l.type) && is_pointer(r.type))
			t = r.type;
		else
			return type_err(n->column,
			                "type mismatch in conditional expression ('%s' and '%s')",
			                tname(l.type, b1, sizeof(b1)),
			                tname(r.type, b2, sizeof(b2)));
	}
	if ((err = gen_rvalue(cg, n->cond, NULL, &c)))
		return err;
	size_t to_true = ns_ax_emit_jump(&cg->a, NS_AX_IF_GOTO);
	if ((err = objects ? gen(cg, n->rhs, NULL, &r) : gen_rvalue(cg, n->rhs, NULL, &r)))
		return err;
	if (!objects)
		emit_conv(cg, r.type, t);
	size_t to_end = ns_ax_emit_jump(&cg->a, NS_AX_GOTO);
	ns_ax_patch_jump(&cg->a, to_true, cg->a.len);
	if ((err = objects ? gen(cg, n->lhs, NULL, &l) : gen_rvalue(cg, n->lhs, NULL, &l)))
		return err;
	if (!objects)
		emit_conv(cg, l.type, t);
	ns_ax_patch_jump(&cg->a, to_end, cg->a.len);
	*out = (struct val){.kind = objects ? VK_MEM : VK_RVAL, .type = t};
	return NULL;
}

static struct ns_err *gen(struct cg *cg, const struct ns_expr__node *n,
                          const struct ns_dwarf_type *hint, struct val *out)
{
	struct ns_err *err;
	struct val v;
	switch (n->kind) {
	case NS_EN_IDENT:
		return gen_ident(cg, n, hint, out);
	case NS_EN_INT: {
		static struct ns_dwarf_type *const lit[] = {
		        [NS_IT_INT] = &t_int,
		        [NS_IT_UINT] = &t_uint,
		        [NS_IT_LONG] = &t_long,
		        [NS_IT_ULONG] = &t_ulong,
		};
		ns_ax_emit_const(&cg->a, (int64_t)n->ival);
		*out = (struct val){.kind = VK_RVAL, .type = lit[n->itype]};
		return NULL;
	}
	case NS_EN_STRING:
		return ns_err_at(NS_ERR_UNSUPPORTED, n->column,
		                 "string literals are not supported in expressions");
	case NS_EN_MEMBER:
		if ((err = gen(cg, n->lhs, NULL, &v)))
			return err;
		return select_member(cg, n, v.type, out);
	case NS_EN_ARROW: {
		char b[256];
		if ((err = gen_rvalue(cg, n->lhs, NULL, &v)))
			return err;
		if (!is_pointer(v.type))
			return type_err(n->column, "invalid type argument of '->' (have '%s')",
			                tname(v.type, b, sizeof(b)));
		return select_member(cg, n, strip(v.type)->target, out);
	}
	case NS_EN_INDEX:
		return gen_index(cg, n, out);
	case NS_EN_UNARY:
		return gen_unary(cg, n, out);
	case NS_EN_CAST:
		return gen_cast(cg, n, out);
	case NS_EN_SIZEOF: {
		const struct ns_dwarf_type *t;
		if (n->lhs) {
			if ((err = type_of(cg, n->lhs, false, &v)))
				return err;
			t = v.type;
		} else if ((err = resolve_tname(cg, &n->tname, &t))) {
			return err;
		}
		const struct ns_dwarf_type *st = strip(t);
		if (st->kind == NS_DT_VOID || st->kind == NS_DT_FUNC ||
		    (st->size == 0 && st->incomplete))
			return type_err(n->column,
			                "invalid application of 'sizeof' to an incomplete type");
		ns_ax_emit_const(&cg->a, (int64_t)st->size);
		*out = (struct val){.kind = VK_RVAL, .type = &t_ulong};
		return NULL;
	}
	case NS_EN_BINARY:
		return gen_binary(cg, n, out);
	case NS_EN_COND:
		return gen_cond(cg, n, out);
	}
	return type_err(n->column, "unsupported expression");
}

static bool is_char_pointer(const struct ns_dwarf_type *t)
{
	const struct ns_dwarf_type *st = strip(t);
	if (st->kind != NS_DT_POINTER || !st->target)
		return false;
	const struct ns_dwarf_type *tt = strip(st->target);
	return tt->kind == NS_DT_BASE && tt->is_char && tt->size == 1;
}

enum { MAX_RESULT_TRACE = 4096, MAX_STRING_TRACE = 256 };

static struct ns_err *compile(struct cg *cg, const char *src, enum ns_expr_flags flags,
                              struct ns_expr_prog *out)
{
	char b[256];
	struct ns_expr__node *root;
	struct val v;
	struct ns_err *err = ns_expr__parse(src, is_type_cb, cg, cg->arena, &root);
	if (err)
		return err;
	if ((err = gen(cg, root, NULL, &v)))
		return err;
	const struct ns_dwarf_type *st = strip(v.type);
	enum ns_expr_value_kind kind = NS_EXPR_RVALUE;
	if (flags & NS_EXPR_CONDITION) {
		if (st->kind == NS_DT_STRUCT || st->kind == NS_DT_UNION)
			return type_err(root->column, "used '%s' where a scalar is required",
			                tname(v.type, b, sizeof(b)));
		if ((err = rvalue(cg, &v, root->column)))
			return err;
		ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
		ns_ax_emit(&cg->a, NS_AX_LOG_NOT);
		v.type = &t_int;
	} else if (v.kind == VK_MEM && (st->kind == NS_DT_STRUCT || st->kind == NS_DT_UNION ||
	                                st->kind == NS_DT_ARRAY || st->kind == NS_DT_FLOAT)) {
		kind = NS_EXPR_LVALUE;
		uint64_t size = st->size < MAX_RESULT_TRACE ? st->size : MAX_RESULT_TRACE;
		if (cg->collect && size > 0) {
			if (size <= 255)
				ns_ax_emit_u8(&cg->a, NS_AX_TRACE_QUICK, (uint8_t)size);
			else
				ns_ax_emit_u16(&cg->a, NS_AX_TRACE16, (uint16_t)size);
		}
	} else {
		if (st->kind == NS_DT_VOID && v.kind == VK_MEM)
			return type_err(root->column, "void value not ignored as it ought to be");
		if ((err = rvalue(cg, &v, root->column)))
			return err;
		if (cg->collect && is_char_pointer(v.type)) {
			ns_ax_emit(&cg->a, NS_AX_DUP);
			ns_ax_emit_const(&cg->a, MAX_STRING_TRACE);
			ns_ax_emit(&cg->a, NS_AX_TRACENZ);
		}
	}
	uint8_t *code;
	size_t len;
	if ((err = ns_expr__finish(&cg->a, cg->arena, &code, &len)))
		return err;
	out->code = code;
	out->len = len;
	out->kind = kind;
	out->type = v.type ? v.type : &t_void;
	return NULL;
}

struct ns_err *ns_expr_compile(const char *src, const struct ns_expr_scope *scope,
                               enum ns_expr_flags flags, struct ns_arena *arena,
                               struct ns_expr_prog *out)
{
	struct cg cg = {.scope = scope, .arena = arena, .collect = (flags & NS_EXPR_COLLECT) != 0};
	ns_ax_asm_init(&cg.a);
	struct ns_err *err = compile(&cg, src, flags, out);
	ns_ax_asm_deinit(&cg.a);
	return err;
}
