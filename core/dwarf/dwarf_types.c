/* core/dwarf: types built lazily from DIEs and cached by DIE offset, so recursive
 * types (struct item { struct item *next; }) terminate: a type is in the cache
 * before its members and target are read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"
#include "dwarf/dwarf_internal.h"

enum { MAX_TYPE_DEPTH = 64 };

/* ---- cache: open addressing on the DIE offset ---- */

static struct ns_dwarf_type *tmap_get(struct ns_dwarf *dw, Dwarf_Off off)
{
	if (!dw->tcap)
		return NULL;
	for (size_t i = (size_t)(off * 0x9E3779B97F4A7C15ull) & (dw->tcap - 1);;
	     i = (i + 1) & (dw->tcap - 1)) {
		if (!dw->tslots[i].type)
			return NULL;
		if (dw->tslots[i].off == off)
			return dw->tslots[i].type;
	}
}

static bool tmap_put(struct ns_dwarf *dw, Dwarf_Off off, struct ns_dwarf_type *t)
{
	if ((dw->tcount + 1) * 2 > dw->tcap) {
		size_t ncap = dw->tcap ? dw->tcap * 2 : 64;
		struct ns_dwarf__tslot *old = dw->tslots, *ns = calloc(ncap, sizeof(*ns));
		size_t ocap = dw->tcap;
		if (!ns)
			return false;
		dw->tslots = ns;
		dw->tcap = ncap;
		dw->tcount = 0;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].type)
				tmap_put(dw, old[i].off, old[i].type);
		free(old);
	}
	for (size_t i = (size_t)(off * 0x9E3779B97F4A7C15ull) & (dw->tcap - 1);;
	     i = (i + 1) & (dw->tcap - 1)) {
		if (!dw->tslots[i].type) {
			dw->tslots[i].off = off;
			dw->tslots[i].type = t;
			dw->tcount++;
			return true;
		}
	}
}

/* ---- building ---- */

static struct ns_err *type_at(struct ns_dwarf *dw, Dwarf_Off off, int depth,
                              struct ns_dwarf_type **out);

static struct ns_err *die_type(struct ns_dwarf *dw, Dwarf_Die die, int depth,
                               struct ns_dwarf_type **out)
{
	Dwarf_Off off;

	*out = NULL;
	if (!ns_dwarf__attr_ref_o(dw, die, DW_AT_type, &off))
		return NULL;
	return type_at(dw, off, depth + 1, out);
}

struct ns_err *ns_dwarf__die_type(struct ns_dwarf *dw, Dwarf_Die die, struct ns_dwarf_type **out)
{
	return die_type(dw, die, 0, out);
}

struct ns_err *ns_dwarf__type_at(struct ns_dwarf *dw, Dwarf_Off off, struct ns_dwarf_type **out)
{
	return type_at(dw, off, 0, out);
}

static uint64_t uleb(const uint8_t *p, size_t len, size_t *pos)
{
	uint64_t v = 0;
	unsigned shift = 0;

	while (*pos < len) {
		uint8_t b = p[(*pos)++];
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
		if (!(b & 0x80))
			break;
	}
	return v;
}

/* DW_AT_data_member_location: a constant, or (DWARF 2 style) DW_OP_plus_uconst N. */
static bool member_location(struct ns_dwarf *dw, Dwarf_Die die, uint64_t *out)
{
	Dwarf_Attribute a;
	Dwarf_Error de = NULL;
	Dwarf_Unsigned len = 0;
	Dwarf_Ptr ptr = NULL;
	bool ok = false;
	int rc;

	if (ns_dwarf__attr_udata(dw, die, DW_AT_data_member_location, out))
		return true;
	rc = dwarf_attr(die, DW_AT_data_member_location, &a, &de);
	if (rc != DW_DLV_OK) {
		ns_dwarf__drop(dw, de);
		return false;
	}
	if (dwarf_formexprloc(a, &len, &ptr, &de) == DW_DLV_OK && len >= 2 && ptr &&
	    ((const uint8_t *)ptr)[0] == DW_OP_plus_uconst) {
		size_t pos = 1;
		*out = uleb(ptr, len, &pos);
		ok = true;
	} else {
		ns_dwarf__drop(dw, de);
	}
	dwarf_dealloc_attribute(a);
	return ok;
}

static struct ns_err *read_member(struct ns_dwarf *dw, Dwarf_Die die, int depth,
                                  struct ns_dwarf_member *m)
{
	uint64_t v, bit_size = 0;
	struct ns_err *err;

	m->name = ns_dwarf__die_name(dw, die);
	err = die_type(dw, die, depth, &m->type);
	if (err)
		return err;
	if (member_location(dw, die, &v))
		m->offset = v;
	if (!ns_dwarf__attr_udata(dw, die, DW_AT_bit_size, &bit_size) || bit_size == 0)
		return NULL;
	m->bit_size = (unsigned)bit_size;
	if (ns_dwarf__attr_udata(dw, die, DW_AT_data_bit_offset, &v)) {
		// DWARF 4/5: bits from the start of the struct. Express it against the
		// storage unit of the member's type, aligned like gcc lays out bit fields.
		uint64_t unit = m->type && ns_dwarf_type_strip(m->type)
		                        ? ns_dwarf_type_strip(m->type)->size
		                        : 0;
		uint64_t start = v / 8;
		if (unit && unit <= 8) {
			uint64_t aligned = (v / (unit * 8)) * unit;
			if (v - aligned * 8 + bit_size <= unit * 8)
				start = aligned;
		}
		m->offset += start;
		m->bit_offset = (unsigned)(v - start * 8);
	} else if (ns_dwarf__attr_udata(dw, die, DW_AT_bit_offset, &v)) {
		// DWARF 2/3 (gcc -gdwarf-4 too): bit_offset counts from the most
		// significant bit of a DW_AT_byte_size storage unit (little-endian here).
		uint64_t unit = 0;
		if (!ns_dwarf__attr_udata(dw, die, DW_AT_byte_size, &unit) && m->type)
			unit = ns_dwarf_type_strip(m->type) ? ns_dwarf_type_strip(m->type)->size
			                                    : 0;
		if (unit * 8 >= v + bit_size)
			m->bit_offset = (unsigned)(unit * 8 - v - bit_size);
	}
	return NULL;
}

struct vec {
	void *p;
	size_t n, cap;
	int depth; /* member_cb: of the struct being read */
};

static struct ns_err *member_cb(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag, void *ctx)
{
	struct vec *v = ctx;
	struct ns_dwarf_member *m;

	if (tag != DW_TAG_member)
		return NULL;
	if (!ns_dwarf__grow(&v->p, &v->cap, v->n + 1, sizeof(*m)))
		return &ns_err_nomem;
	m = (struct ns_dwarf_member *)v->p + v->n++;
	memset(m, 0, sizeof(*m));
	return read_member(dw, child, v->depth, m);
}

static struct ns_err *enum_cb(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag, void *ctx)
{
	struct vec *v = ctx;
	struct ns_dwarf_enumerator *e;
	uint64_t u;

	if (tag != DW_TAG_enumerator)
		return NULL;
	if (!ns_dwarf__grow(&v->p, &v->cap, v->n + 1, sizeof(*e)))
		return &ns_err_nomem;
	e = (struct ns_dwarf_enumerator *)v->p + v->n++;
	e->name = ns_dwarf__die_name(dw, child);
	if (ns_dwarf__attr_sdata(dw, child, DW_AT_const_value, &e->value))
		return NULL;
	if (ns_dwarf__attr_udata(dw, child, DW_AT_const_value, &u))
		e->value = (int64_t)u;
	return NULL;
}

struct dim {
	uint64_t count;
	bool known;
};

static struct ns_err *subrange_cb(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag, void *ctx)
{
	struct vec *v = ctx;
	struct dim *d;
	uint64_t c, lo = 0;

	if (tag != DW_TAG_subrange_type && tag != DW_TAG_enumeration_type)
		return NULL;
	if (!ns_dwarf__grow(&v->p, &v->cap, v->n + 1, sizeof(*d)))
		return &ns_err_nomem;
	d = (struct dim *)v->p + v->n++;
	memset(d, 0, sizeof(*d));
	if (ns_dwarf__attr_udata(dw, child, DW_AT_count, &c)) {
		d->count = c;
		d->known = true;
	} else if (ns_dwarf__attr_udata(dw, child, DW_AT_upper_bound, &c)) {
		ns_dwarf__attr_udata(dw, child, DW_AT_lower_bound, &lo);
		// gcc marks a flexible array member's bound as -1 in some versions.
		if (c != UINT64_MAX && c >= lo) {
			d->count = c - lo + 1;
			d->known = true;
		}
	}
	return NULL;
}

static void *vec_to_arena(struct ns_dwarf *dw, struct vec *v, size_t elem)
{
	void *a = NULL;

	if (v->n) {
		a = ns_arena_calloc(&dw->arena, v->n, elem);
		if (a)
			memcpy(a, v->p, v->n * elem);
	}
	free(v->p);
	v->p = NULL;
	return a;
}

static struct ns_err *build_array(struct ns_dwarf *dw, Dwarf_Die die, int depth,
                                  struct ns_dwarf_type *t)
{
	struct vec v = {0};
	struct ns_dwarf_type *elem = NULL, *cur;
	struct ns_err *err;
	uint64_t size;
	struct dim *dims;

	err = die_type(dw, die, depth, &elem);
	if (!err)
		err = ns_dwarf__for_each_child(dw, die, "reading DIE children", subrange_cb, &v);
	if (err) {
		free(v.p);
		return err;
	}
	dims = v.p;
	// int a[2][3]: one DIE with two subranges; the element of dimension 0 is a
	// synthetic array type of the remaining dimensions.
	cur = elem;
	for (size_t i = v.n; i-- > 1;) {
		struct ns_dwarf_type *a = ns_arena_alloc(&dw->arena, sizeof(*a));
		if (!a) {
			free(v.p);
			return &ns_err_nomem;
		}
		a->kind = NS_DT_ARRAY;
		a->target = cur;
		a->count = dims[i].count;
		a->count_known = dims[i].known;
		a->size = a->count_known && cur ? a->count * cur->size : 0;
		cur = a;
	}
	t->target = cur;
	if (v.n) {
		t->count = dims[0].count;
		t->count_known = dims[0].known;
	}
	if (ns_dwarf__attr_udata(dw, die, DW_AT_byte_size, &size))
		t->size = size;
	else if (t->count_known && cur)
		t->size = t->count * cur->size;
	free(v.p);
	return NULL;
}

static struct ns_err *type_at(struct ns_dwarf *dw, Dwarf_Off off, int depth,
                              struct ns_dwarf_type **out)
{
	struct ns_dwarf_type *t;
	struct ns_err *err = NULL;
	Dwarf_Die die;
	Dwarf_Half tag = 0;
	Dwarf_Error de = NULL;
	uint64_t u;

	*out = NULL;
	t = tmap_get(dw, off);
	if (t) {
		*out = t;
		return NULL;
	}
	if (depth > MAX_TYPE_DEPTH)
		return ns_err_create(NS_ERR_FORMAT, "%s: type at 0x%llx nests too deep", dw->path,
		                     (unsigned long long)off);
	err = ns_dwarf__offdie(dw, off, &die);
	if (err)
		return err;
	if (dwarf_tag(die, &tag, &de) != DW_DLV_OK) {
		dwarf_dealloc_die(die);
		return ns_dwarf__err(dw, de, "reading type tag");
	}
	// restrict and _Atomic do not change how a value reads: use the target.
	if (tag == DW_TAG_restrict_type || tag == DW_TAG_atomic_type) {
		err = die_type(dw, die, depth, out);
		dwarf_dealloc_die(die);
		return err;
	}
	t = ns_arena_alloc(&dw->arena, sizeof(*t));
	if (!t || !tmap_put(dw, off, t)) {
		dwarf_dealloc_die(die);
		return &ns_err_nomem;
	}
	t->kind = NS_DT_VOID;
	t->name = ns_dwarf__die_name(dw, die);
	if (ns_dwarf__attr_udata(dw, die, DW_AT_byte_size, &u))
		t->size = u;
	t->incomplete = ns_dwarf__attr_flag(dw, die, DW_AT_declaration);
	switch (tag) {
	case DW_TAG_base_type: {
		uint64_t enc = 0;
		ns_dwarf__attr_udata(dw, die, DW_AT_encoding, &enc);
		t->kind = NS_DT_BASE;
		switch (enc) {
		case DW_ATE_float:
		case DW_ATE_complex_float:
			t->kind = NS_DT_FLOAT;
			t->is_signed = true;
			break;
		case DW_ATE_boolean:
			t->is_bool = true;
			break;
		case DW_ATE_signed_char:
			t->is_char = true;
			t->is_signed = true;
			break;
		case DW_ATE_unsigned_char:
		case DW_ATE_UTF:
			t->is_char = true;
			break;
		case DW_ATE_signed:
			t->is_signed = true;
			break;
		default:
			break;
		}
		break;
	}
	case DW_TAG_unspecified_type:
		t->kind = NS_DT_VOID;
		break;
	case DW_TAG_pointer_type:
	case DW_TAG_reference_type:
	case DW_TAG_rvalue_reference_type:
		t->kind = NS_DT_POINTER;
		if (!t->size)
			t->size = 8;
		err = die_type(dw, die, depth, &t->target);
		break;
	case DW_TAG_typedef:
		t->kind = NS_DT_TYPEDEF;
		err = die_type(dw, die, depth, &t->target);
		if (!err && t->target)
			t->size = t->target->size;
		break;
	case DW_TAG_const_type:
	case DW_TAG_volatile_type:
		t->kind = tag == DW_TAG_const_type ? NS_DT_CONST : NS_DT_VOLATILE;
		err = die_type(dw, die, depth, &t->target);
		if (!err && t->target)
			t->size = t->target->size;
		break;
	case DW_TAG_structure_type:
	case DW_TAG_class_type:
	case DW_TAG_union_type: {
		struct vec v = {.depth = depth};
		t->kind = tag == DW_TAG_union_type ? NS_DT_UNION : NS_DT_STRUCT;
		err = ns_dwarf__for_each_child(dw, die, "reading DIE children", member_cb, &v);
		t->nmembers = v.n;
		t->members = vec_to_arena(dw, &v, sizeof(*t->members));
		if (t->nmembers && !t->members)
			err = err ? err : &ns_err_nomem;
		break;
	}
	case DW_TAG_enumeration_type: {
		struct vec v = {0};
		t->kind = NS_DT_ENUM;
		err = die_type(dw, die, depth, &t->target);
		if (!err && t->target) {
			const struct ns_dwarf_type *s = ns_dwarf_type_strip(t->target);
			t->is_signed = s && s->is_signed;
		} else {
			t->is_signed = true;
		}
		if (!err)
			err = ns_dwarf__for_each_child(dw, die, "reading DIE children", enum_cb,
			                               &v);
		t->nenums = v.n;
		t->enums = vec_to_arena(dw, &v, sizeof(*t->enums));
		if (t->nenums && !t->enums)
			err = err ? err : &ns_err_nomem;
		break;
	}
	case DW_TAG_array_type:
		t->kind = NS_DT_ARRAY;
		err = build_array(dw, die, depth, t);
		break;
	case DW_TAG_subroutine_type:
		t->kind = NS_DT_FUNC;
		t->size = 0;
		err = die_type(dw, die, depth, &t->target);
		break;
	default:
		err = ns_err_create(NS_ERR_UNSUPPORTED, "%s: DIE 0x%llx (tag 0x%x) is not a type",
		                    dw->path, (unsigned long long)off, tag);
		break;
	}
	dwarf_dealloc_die(die);
	if (err)
		return err;
	*out = t;
	return NULL;
}

/* ---- public helpers ---- */

const struct ns_dwarf_type *ns_dwarf_type_strip(const struct ns_dwarf_type *t)
{
	for (int i = 0; t && i < MAX_TYPE_DEPTH; i++) {
		if (t->kind != NS_DT_TYPEDEF && t->kind != NS_DT_CONST && t->kind != NS_DT_VOLATILE)
			return t;
		t = t->target;
	}
	return t;
}

/* C declarator spelling: @decl is what the type applies to ("*", "[3]", a name). */
static void spell(const struct ns_dwarf_type *t, const char *decl, struct ns_strbuf *sb, int depth)
{
	char *inner = NULL;
	struct ns_strbuf d;

	if (depth > MAX_TYPE_DEPTH) {
		ns_strbuf_puts(sb, "?");
		return;
	}
	ns_strbuf_init(&d);
	if (!t || t->kind == NS_DT_VOID) {
		ns_strbuf_puts(sb, t && t->name ? t->name : "void");
		goto tail;
	}
	switch (t->kind) {
	case NS_DT_POINTER: {
		const struct ns_dwarf_type *tg = t->target;
		bool paren = tg && (tg->kind == NS_DT_ARRAY || tg->kind == NS_DT_FUNC);
		ns_strbuf_printf(&d, "%s*%s%s", paren ? "(" : "", decl, paren ? ")" : "");
		inner = ns_strbuf_steal(&d);
		spell(tg, inner ? inner : "", sb, depth + 1);
		free(inner);
		return;
	}
	case NS_DT_CONST:
	case NS_DT_VOLATILE: {
		const char *q = t->kind == NS_DT_CONST ? "const" : "volatile";
		const struct ns_dwarf_type *tg = t->target;
		if (tg && tg->kind == NS_DT_POINTER) {
			// char *const p: the qualifier binds to the declarator.
			ns_strbuf_printf(&d, " %s%s%s", q, *decl ? " " : "", decl);
			inner = ns_strbuf_steal(&d);
			spell(tg, inner ? inner : "", sb, depth + 1);
			free(inner);
			return;
		}
		ns_strbuf_printf(sb, "%s ", q);
		spell(tg, decl, sb, depth + 1);
		return;
	}
	case NS_DT_ARRAY:
		if (t->count_known)
			ns_strbuf_printf(&d, "%s[%llu]", decl, (unsigned long long)t->count);
		else
			ns_strbuf_printf(&d, "%s[]", decl);
		inner = ns_strbuf_steal(&d);
		spell(t->target, inner ? inner : "", sb, depth + 1);
		free(inner);
		return;
	case NS_DT_FUNC:
		ns_strbuf_printf(&d, "%s()", decl);
		inner = ns_strbuf_steal(&d);
		spell(t->target, inner ? inner : "", sb, depth + 1);
		free(inner);
		return;
	case NS_DT_STRUCT:
		ns_strbuf_printf(sb, "struct %s", t->name ? t->name : "{...}");
		break;
	case NS_DT_UNION:
		ns_strbuf_printf(sb, "union %s", t->name ? t->name : "{...}");
		break;
	case NS_DT_ENUM:
		ns_strbuf_printf(sb, "enum %s", t->name ? t->name : "{...}");
		break;
	default:
		ns_strbuf_puts(sb, t->name ? t->name : "?");
		break;
	}
tail:
	ns_strbuf_deinit(&d);
	if (*decl) {
		ns_strbuf_putc(sb, ' ');
		ns_strbuf_puts(sb, decl);
	}
}

char *ns_dwarf_type_name(const struct ns_dwarf_type *t, struct ns_arena *arena)
{
	struct ns_strbuf sb;
	char *res;

	ns_strbuf_init(&sb);
	spell(t, "", &sb, 0);
	res = sb.oom ? NULL : ns_arena_strdup(arena, ns_strbuf_str(&sb));
	ns_strbuf_deinit(&sb);
	return res;
}

/* ---- lookup by name ---- */

/* Canonical key of a C base type spelling: "unsigned long" and gcc's
 * "long unsigned int" both become "u:long". */
static void base_key(const char *name, char *key, size_t cap)
{
	bool is_unsigned = false, is_signed = false, is_char = false, is_short = false;
	int longs = 0;
	char other[64] = "";
	const char *p = name;

	while (*p) {
		size_t n;
		while (*p == ' ')
			p++;
		n = strcspn(p, " ");
		if (!n)
			break;
		if (n == 8 && !strncmp(p, "unsigned", n))
			is_unsigned = true;
		else if (n == 6 && !strncmp(p, "signed", n))
			is_signed = true;
		else if (n == 4 && !strncmp(p, "char", n))
			is_char = true;
		else if (n == 5 && !strncmp(p, "short", n))
			is_short = true;
		else if (n == 4 && !strncmp(p, "long", n))
			longs++;
		else if (!(n == 3 && !strncmp(p, "int", n)))
			snprintf(other + strlen(other), sizeof(other) - strlen(other), "%.*s,",
			         (int)n, p);
		p += n;
	}
	if (is_char)
		snprintf(key, cap, "c:%s", is_unsigned ? "u" : is_signed ? "s" : "");
	else
		snprintf(key, cap, "%s:%s%d:%s", is_unsigned ? "u" : "s", is_short ? "short" : "",
		         longs, other);
}

struct find_ctx {
	Dwarf_Half tag; /* 0: typedef or base type */
	const char *name;
	char key[96];
	Dwarf_Off found, decl;
	bool have, have_decl;
};

static struct ns_err *find_cb(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag, void *vctx)
{
	struct find_ctx *c = vctx;
	char *name = NULL;
	Dwarf_Error de = NULL;
	bool match = false;

	if (c->have)
		return NULL;
	if (c->tag ? tag != c->tag : (tag != DW_TAG_typedef && tag != DW_TAG_base_type))
		return NULL;
	if (dwarf_diename(child, &name, &de) != DW_DLV_OK || !name) {
		ns_dwarf__drop(dw, de);
		return NULL;
	}
	if (tag == DW_TAG_base_type) {
		char k[96];
		base_key(name, k, sizeof(k));
		match = strcmp(k, c->key) == 0;
	} else {
		match = strcmp(name, c->name) == 0;
	}
	if (match) {
		Dwarf_Off off = 0;
		if (dwarf_dieoffset(child, &off, &de) != DW_DLV_OK)
			return ns_dwarf__err(dw, de, "DIE offset");
		if (ns_dwarf__attr_flag(dw, child, DW_AT_declaration)) {
			if (!c->have_decl) {
				c->decl = off;
				c->have_decl = true;
			}
		} else {
			c->found = off;
			c->have = true;
		}
	}
	return NULL;
}

static void search_cu(struct ns_dwarf *dw, struct ns_dwarf__cu *cu, struct find_ctx *c)
{
	Dwarf_Die die;
	struct ns_err *err = ns_dwarf__offdie(dw, cu->die_off, &die);

	if (err) {
		ns_err_destroy(err);
		return;
	}
	err = ns_dwarf__for_each_child(dw, die, "reading DIE children", find_cb, c);
	ns_err_destroy(err);
	dwarf_dealloc_die(die);
}

struct ns_dwarf_type *ns_dwarf_find_type(struct ns_dwarf *dw, const char *name, uint64_t pc)
{
	struct find_ctx c;
	struct ns_dwarf__cu *first;
	struct ns_dwarf_type *t = NULL;
	struct ns_err *err;

	memset(&c, 0, sizeof(c));
	if (!name || ns_dwarf__load_cus(dw) != NULL)
		return NULL;
	while (*name == ' ')
		name++;
	if (!strncmp(name, "struct ", 7)) {
		c.tag = DW_TAG_structure_type;
		name += 7;
	} else if (!strncmp(name, "union ", 6)) {
		c.tag = DW_TAG_union_type;
		name += 6;
	} else if (!strncmp(name, "enum ", 5)) {
		c.tag = DW_TAG_enumeration_type;
		name += 5;
	} else if (!strcmp(name, "void")) {
		return &dw->void_type;
	}
	while (*name == ' ')
		name++;
	c.name = name;
	base_key(name, c.key, sizeof(c.key));
	first = ns_dwarf__cu_at(dw, pc);
	if (first)
		search_cu(dw, first, &c);
	for (size_t i = 0; i < dw->ncus && !c.have; i++)
		if (&dw->cus[i] != first)
			search_cu(dw, &dw->cus[i], &c);
	if (!c.have && !c.have_decl)
		return NULL;
	err = ns_dwarf__type_at(dw, c.have ? c.found : c.decl, &t);
	if (err) {
		ns_err_destroy(err);
		return NULL;
	}
	return t;
}
