/* Snapshot collection of one variable: its own bytes, then the objects its pointers
 * point to, breadth first, to a bounded depth and byte budget.
 *
 * trace/tracenz never fault (the interpreter records the readable prefix), but the ref64
 * that loads a pointer stored in a pointee can: if that pointee was unreadable, the
 * run stops there. So the work is ordered by level: every read that can fault at
 * level k+1 comes after all of level k has been traced. NULL pointers are skipped:
 *     <addr of pointer field>; ref64; dup; if_goto nonnull; pop; goto skip;
 *     nonnull: <trace pointee>; skip: */
#include <string.h>

#include "expr/expr_internal.h"

enum {
	MAX_DEPTH = 8,   /* pointer levels followed at most */
	MAX_ITEMS = 128, /* pointees collected per variable at most */
	MAX_ELEMS = 64,  /* array elements searched for pointers */
	MAX_PTRS = 256,  /* pointers found in one object at most */
};

struct item {
	uint64_t offs[MAX_DEPTH + 1]; /* offsets of the pointer fields along the path */
	unsigned nsteps;
	const struct ns_dwarf_type *target; /* pointee type */
};

struct ptr {
	uint64_t off;
	const struct ns_dwarf_type *target;
};

static bool is_char(const struct ns_dwarf_type *t)
{
	t = ns_expr__strip(t);
	return t && t->kind == NS_DT_BASE && t->is_char && t->size == 1;
}

/* Is there anything worth following through a pointer to @t? */
static bool followable(const struct ns_dwarf_type *t)
{
	t = ns_expr__strip(t);
	if (!t || t->kind == NS_DT_VOID || t->kind == NS_DT_FUNC)
		return false;
	return is_char(t) || t->size > 0;
}

/* Pointers inside an object of type @t at offset @off. */
static void find_ptrs(const struct ns_dwarf_type *t, uint64_t off, struct ptr *out, size_t *n,
                      unsigned depth)
{
	t = ns_expr__strip(t);
	if (!t || depth > 16 || *n >= MAX_PTRS)
		return;
	switch (t->kind) {
	case NS_DT_POINTER:
		if (followable(t->target))
			out[(*n)++] = (struct ptr){off, t->target};
		break;
	case NS_DT_STRUCT:
	case NS_DT_UNION:
		for (size_t i = 0; i < t->nmembers; i++)
			if (!t->members[i].bit_size)
				find_ptrs(t->members[i].type, off + t->members[i].offset, out, n,
				          depth + 1);
		break;
	case NS_DT_ARRAY: {
		const struct ns_dwarf_type *et = ns_expr__strip(t->target);
		if (!et || et->size == 0 || !t->count_known)
			break;
		size_t before = *n;
		find_ptrs(et, off, out, n, depth + 1);
		if (*n == before)
			break; /* no pointers in the element type */
		for (uint64_t i = 1; i < t->count && i < MAX_ELEMS && *n < MAX_PTRS; i++)
			find_ptrs(et, off + i * et->size, out, n, depth + 1);
		break;
	}
	default:
		break;
	}
}

struct collector {
	struct ns_ax_asm *a;
	const struct ns_dwarf_var *var;
	const struct ns_expr_scope *scope;
	bool root_value; /* the location gives the pointer value (register or computed) */
	unsigned string_max;
	uint64_t budget;
};

static struct ns_err *emit_root(struct collector *c)
{
	const uint8_t *fb = NULL;
	size_t fb_len = 0;
	enum ns_expr_value_kind kind;
	uint64_t piece;
	if (c->var->kind != NS_DWARF_GLOBAL && c->scope && c->scope->locals) {
		fb = c->scope->locals->frame_base;
		fb_len = c->scope->locals->frame_base_len;
	}
	return ns_expr__emit_location(c->a, c->var->loc, c->var->loc_len, fb, fb_len, c->scope,
	                              true, c->var->name, &kind, &piece);
}

/* Emit the collection of one pointee; appends its children to @next. */
static struct ns_err *emit_item(struct collector *c, const struct item *it)
{
	size_t skips[MAX_DEPTH + 1];
	unsigned nskips = 0;
	struct ns_err *err = emit_root(c);
	if (err)
		return err;
	for (unsigned i = 0; i < it->nsteps; i++) {
		bool load = !(c->root_value && i == 0);
		if (load) {
			if (it->offs[i]) {
				ns_ax_emit_const(c->a, (int64_t)it->offs[i]);
				ns_ax_emit(c->a, NS_AX_ADD);
			}
			ns_ax_emit(c->a, NS_AX_REF64);
		}
		ns_ax_emit(c->a, NS_AX_DUP);
		size_t nonnull = ns_ax_emit_jump(c->a, NS_AX_IF_GOTO);
		ns_ax_emit(c->a, NS_AX_POP);
		skips[nskips++] = ns_ax_emit_jump(c->a, NS_AX_GOTO);
		ns_ax_patch_jump(c->a, nonnull, c->a->len);
	}
	if (is_char(it->target)) {
		uint64_t size = c->string_max < c->budget ? c->string_max : c->budget;
		ns_ax_emit_const(c->a, (int64_t)size);
		ns_ax_emit(c->a, NS_AX_TRACENZ);
		c->budget -= size;
	} else {
		uint64_t size = ns_expr__strip(it->target)->size;
		if (size > c->budget)
			size = c->budget;
		ns_ax_emit_const(c->a, (int64_t)size);
		ns_ax_emit(c->a, NS_AX_TRACE);
		c->budget -= size;
	}
	for (unsigned i = 0; i < nskips; i++)
		ns_ax_patch_jump(c->a, skips[i], c->a->len);
	return NULL;
}

static struct ns_err *collect(struct collector *c, unsigned depth, struct ns_arena *arena)
{
	const struct ns_dwarf_var *var = c->var;
	const struct ns_dwarf_type *st = ns_expr__strip(var->type);
	enum ns_expr_value_kind kind;
	uint64_t piece;
	struct ns_err *err;
	// Probe the location first (its errors, and whether it is in memory).
	struct ns_ax_asm probe;
	ns_ax_asm_init(&probe);
	err = ns_expr__emit_location(
	        &probe, var->loc, var->loc_len,
	        c->scope && c->scope->locals ? c->scope->locals->frame_base : NULL,
	        c->scope && c->scope->locals ? c->scope->locals->frame_base_len : 0, c->scope, true,
	        var->name, &kind, &piece);
	ns_ax_asm_deinit(&probe);
	if (err)
		return err;
	c->root_value = kind == NS_EXPR_RVALUE;

	struct item *cur = ns_arena_calloc(arena, MAX_ITEMS, sizeof(*cur));
	struct item *next = ns_arena_calloc(arena, MAX_ITEMS, sizeof(*next));
	struct ptr *ptrs = ns_arena_calloc(arena, MAX_PTRS, sizeof(*ptrs));
	if (!cur || !next || !ptrs)
		return &ns_err_nomem;
	size_t ncur = 0, nnext = 0, nptrs = 0, total = 0;

	if (!c->root_value) {
		// Level 0: the variable's own bytes.
		uint64_t size = st ? st->size : 0;
		if (size > c->budget)
			size = c->budget;
		if (size > 0) {
			if ((err = emit_root(c)))
				return err;
			ns_ax_emit_const(c->a, (int64_t)size);
			ns_ax_emit(c->a, NS_AX_TRACE);
			c->budget -= size;
		}
		if (depth > 0)
			find_ptrs(var->type, 0, ptrs, &nptrs, 0);
		for (size_t i = 0; i < nptrs && ncur < MAX_ITEMS; i++) {
			if (ptrs[i].off + 8 > size)
				continue; /* the pointer itself was not captured */
			cur[ncur++] = (struct item){
			        .offs = {ptrs[i].off}, .nsteps = 1, .target = ptrs[i].target};
		}
	} else if (depth > 0 && st && st->kind == NS_DT_POINTER && followable(st->target)) {
		// A register holding a pointer: the registers are in every frame; follow it.
		cur[ncur++] = (struct item){.nsteps = 1, .target = st->target};
	}

	for (unsigned level = 1; level <= depth && ncur > 0; level++) {
		nnext = 0;
		for (size_t i = 0; i < ncur && c->budget > 0 && total < MAX_ITEMS; i++, total++) {
			const struct item *it = &cur[i];
			uint64_t before = c->budget;
			if ((err = emit_item(c, it)))
				return err;
			if (level == depth || is_char(it->target) || it->nsteps >= MAX_DEPTH)
				continue;
			uint64_t traced = before - c->budget;
			nptrs = 0;
			find_ptrs(it->target, 0, ptrs, &nptrs, 0);
			for (size_t k = 0; k < nptrs && nnext < MAX_ITEMS; k++) {
				if (ptrs[k].off + 8 > traced)
					continue;
				struct item *ni = &next[nnext++];
				*ni = *it;
				ni->offs[ni->nsteps++] = ptrs[k].off;
				ni->target = ptrs[k].target;
			}
		}
		struct item *t = cur;
		cur = next;
		next = t;
		ncur = nnext;
	}
	return NULL;
}

struct ns_err *ns_expr_compile_collect_var(const struct ns_dwarf_var *var,
                                           const struct ns_expr_scope *scope, unsigned depth,
                                           unsigned string_max, unsigned byte_budget,
                                           struct ns_arena *arena, uint8_t **code, size_t *len)
{
	if (var->loc_len == 0 && !var->has_const)
		return ns_err_create(NS_ERR_OPTIMIZED_OUT, "'%s' is optimized out here",
		                     var->name ? var->name : "variable");
	struct ns_ax_asm a;
	ns_ax_asm_init(&a);
	struct ns_err *err = NULL;
	if (var->loc_len > 0) {
		struct collector c = {.a = &a,
		                      .var = var,
		                      .scope = scope,
		                      .string_max = string_max,
		                      .budget = byte_budget};
		err = collect(&c, depth > MAX_DEPTH ? MAX_DEPTH : depth, arena);
	}
	if (!err)
		err = ns_expr__finish(&a, arena, code, len);
	ns_ax_asm_deinit(&a);
	return err;
}
