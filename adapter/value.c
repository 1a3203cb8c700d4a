/* Rendering of typed values for variables, evaluate and logpoint text (DESIGN.md,
 * "Values"): strings quoted and escaped up to the first NUL, enums by name, pointers in
 * hex, aggregates one level deep; bytes that were not captured show <not captured>. */
#define _GNU_SOURCE
#include "adapter.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

enum {
	STRING_MAX = 256,
	ARRAY_RENDER_MAX = 100,
	ARRAY_CHILDREN_MAX = 1000,
	AGG_BYTES_MAX = 1 << 20
};

static const struct ns_dwarf_type *strip(const struct ns_dwarf_type *t)
{
	return ns_dwarf_type_strip(t);
}

static bool is_char_type(const struct ns_dwarf_type *t)
{
	t = strip(t);
	return t && t->kind == NS_DT_BASE && t->size == 1 && t->is_char;
}

static uint64_t type_size(const struct ns_dwarf_type *t)
{
	t = strip(t);
	if (!t)
		return 0;
	if (t->kind == NS_DT_ARRAY) {
		uint64_t n = t->count_known ? t->count : 0, es = type_size(t->target), total;
		if (__builtin_mul_overflow(n, es, &total))
			return 0;
		return t->size ? t->size : total;
	}
	return t->size;
}

/* Read the bytes of @v (at most @len). Returns bytes obtained. */
static size_t value_bytes(const struct value_ctx *vc, const struct value *v, void *dst, size_t len)
{
	if (v->where == VAL_BYTES) {
		size_t n = len < sizeof(v->bytes) ? len : sizeof(v->bytes);
		memcpy(dst, v->bytes, n);
		return n;
	}
	if (v->where == VAL_MEMORY)
		return vc->read(vc->ctx, v->addr, dst, len);
	return 0;
}

static void escape_char(struct ns_strbuf *sb, unsigned char c, char quote)
{
	switch (c) {
	case '\n':
		ns_strbuf_puts(sb, "\\n");
		return;
	case '\t':
		ns_strbuf_puts(sb, "\\t");
		return;
	case '\r':
		ns_strbuf_puts(sb, "\\r");
		return;
	case '\\':
		ns_strbuf_puts(sb, "\\\\");
		return;
	}
	if (c == (unsigned char)quote) {
		ns_strbuf_putc(sb, '\\');
		ns_strbuf_putc(sb, (char)c);
	} else if (c < 0x20 || c >= 0x7f) {
		ns_strbuf_printf(sb, "\\%03o", c);
	} else {
		ns_strbuf_putc(sb, (char)c);
	}
}

/* Quoted string at @addr, at most @max bytes; stops at NUL. */
static void render_string_at(const struct value_ctx *vc, struct ns_strbuf *sb, uint64_t addr,
                             size_t max)
{
	char buf[STRING_MAX];
	if (max > sizeof(buf))
		max = sizeof(buf);
	size_t n = vc->read(vc->ctx, addr, buf, max);
	if (n == 0) {
		ns_strbuf_printf(sb, "<error: cannot read 0x%" PRIx64 ">", addr);
		return;
	}
	ns_strbuf_putc(sb, '"');
	size_t i;
	for (i = 0; i < n && buf[i]; i++)
		escape_char(sb, (unsigned char)buf[i], '"');
	ns_strbuf_putc(sb, '"');
	if (i == n && n == max)
		ns_strbuf_puts(sb, "...");
	else if (i == n)
		ns_strbuf_puts(sb, " <not captured>...");
}

static uint64_t load_le(const uint8_t *b, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n && i < 8; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

static int64_t sign_extend(uint64_t v, unsigned bits)
{
	if (bits == 0 || bits >= 64)
		return (int64_t)v;
	uint64_t m = 1ULL << (bits - 1);
	v &= (1ULL << bits) - 1;
	return (int64_t)((v ^ m) - m);
}

static void render_scalar(struct ns_strbuf *sb, const struct ns_dwarf_type *t, uint64_t raw)
{
	t = strip(t);
	if (!t) {
		ns_strbuf_printf(sb, "0x%" PRIx64, raw);
		return;
	}
	unsigned bits = (unsigned)(t->size * 8);
	switch (t->kind) {
	case NS_DT_ENUM:
		for (size_t i = 0; i < t->nenums; i++) {
			int64_t want = t->is_signed ? sign_extend(raw, bits) : (int64_t)raw;
			if (t->enums[i].value == want) {
				ns_strbuf_puts(sb, t->enums[i].name);
				return;
			}
		}
		ns_strbuf_printf(sb, "%" PRId64,
		                 t->is_signed ? sign_extend(raw, bits) : (int64_t)raw);
		return;
	case NS_DT_BASE:
		if (t->is_bool) {
			ns_strbuf_puts(sb, raw ? "true" : "false");
		} else if (t->is_signed) {
			int64_t v = sign_extend(raw, bits);
			ns_strbuf_printf(sb, "%" PRId64, v);
			if (t->is_char && t->size == 1) {
				ns_strbuf_puts(sb, " '");
				escape_char(sb, (unsigned char)v, '\'');
				ns_strbuf_putc(sb, '\'');
			}
		} else {
			uint64_t v = bits < 64 ? raw & ((1ULL << bits) - 1) : raw;
			ns_strbuf_printf(sb, "%" PRIu64, v);
			if (t->is_char && t->size == 1) {
				ns_strbuf_puts(sb, " '");
				escape_char(sb, (unsigned char)v, '\'');
				ns_strbuf_putc(sb, '\'');
			}
		}
		return;
	case NS_DT_FLOAT:
		if (t->size == 4) {
			float f;
			uint32_t u = (uint32_t)raw;
			memcpy(&f, &u, 4);
			ns_strbuf_printf(sb, "%.9g", (double)f);
		} else if (t->size == 8) {
			double d;
			memcpy(&d, &raw, 8);
			ns_strbuf_printf(sb, "%.17g", d);
		} else {
			ns_strbuf_puts(sb, "<unsupported float size>");
		}
		return;
	case NS_DT_POINTER:
	case NS_DT_FUNC:
		ns_strbuf_printf(sb, "0x%" PRIx64, raw);
		return;
	default:
		ns_strbuf_printf(sb, "0x%" PRIx64, raw);
	}
}

static void render_into(const struct value_ctx *vc, struct ns_strbuf *sb, const struct value *v,
                        int depth);

static struct value member_value(const struct value *parent, const struct ns_dwarf_member *m)
{
	struct value c = {.type = m->type, .where = parent->where};
	if (parent->where == VAL_MEMORY) {
		c.addr = parent->addr + m->offset;
	} else if (parent->where == VAL_BYTES) {
		if (m->offset < sizeof(parent->bytes))
			memcpy(c.bytes, parent->bytes + m->offset, sizeof(c.bytes) - m->offset);
	} else {
		c.error = parent->error;
	}
	return c;
}

static void render_bitfield(const struct value_ctx *vc, struct ns_strbuf *sb,
                            const struct value *pv, const struct ns_dwarf_member *m)
{
	struct value c = member_value(pv, m);
	uint8_t buf[16] = {0};
	size_t need = (m->bit_offset + m->bit_size + 7) / 8;
	if (need > 8 || value_bytes(vc, &c, buf, need) < need) {
		ns_strbuf_puts(sb, "<not captured>");
		return;
	}
	uint64_t raw = load_le(buf, need) >> m->bit_offset;
	if (m->bit_size < 64)
		raw &= (1ULL << m->bit_size) - 1;
	const struct ns_dwarf_type *t = strip(m->type);
	if (t && t->is_signed)
		raw = (uint64_t)sign_extend(raw, m->bit_size);
	render_scalar(sb, m->type, raw);
}

static void render_into(const struct value_ctx *vc, struct ns_strbuf *sb, const struct value *v,
                        int depth)
{
	if (v->where == VAL_ERROR) {
		ns_strbuf_puts(sb, v->error ? v->error : "<error>");
		return;
	}
	const struct ns_dwarf_type *t = strip(v->type);
	if (!t || t->kind == NS_DT_VOID) {
		ns_strbuf_puts(sb, "void");
		return;
	}
	switch (t->kind) {
	case NS_DT_STRUCT:
	case NS_DT_UNION:
		if (depth > 0) {
			ns_strbuf_puts(sb, "{...}");
			return;
		}
		ns_strbuf_putc(sb, '{');
		for (size_t i = 0; i < t->nmembers; i++) {
			const struct ns_dwarf_member *m = &t->members[i];
			if (i)
				ns_strbuf_puts(sb, ", ");
			if (m->name)
				ns_strbuf_printf(sb, "%s = ", m->name);
			if (m->bit_size) {
				render_bitfield(vc, sb, v, m);
			} else {
				struct value c = member_value(v, m);
				render_into(vc, sb, &c, depth + 1);
			}
		}
		ns_strbuf_putc(sb, '}');
		return;
	case NS_DT_ARRAY: {
		uint64_t es = type_size(t->target);
		uint64_t n = t->count_known ? t->count : 0;
		if (is_char_type(t->target) && v->where == VAL_MEMORY) {
			render_string_at(vc, sb, v->addr, n && n < STRING_MAX ? n : STRING_MAX);
			return;
		}
		if (depth > 1) {
			ns_strbuf_puts(sb, "{...}");
			return;
		}
		ns_strbuf_putc(sb, '{');
		for (uint64_t i = 0; i < n && i < ARRAY_RENDER_MAX; i++) {
			if (i)
				ns_strbuf_puts(sb, ", ");
			struct value c = {
			        .type = t->target, .where = v->where, .addr = v->addr + i * es};
			if (v->where == VAL_BYTES && i * es < sizeof(v->bytes))
				memcpy(c.bytes, v->bytes + i * es, sizeof(c.bytes) - i * es);
			render_into(vc, sb, &c, depth + 1);
		}
		if (n > ARRAY_RENDER_MAX)
			ns_strbuf_puts(sb, ", ...");
		ns_strbuf_putc(sb, '}');
		return;
	}
	default:
		break;
	}
	uint8_t buf[16] = {0};
	size_t size = t->size ? t->size : 8;
	if (size > 8 && t->kind != NS_DT_FLOAT)
		size = 8;
	if (size > sizeof(buf))
		size = sizeof(buf);
	if (value_bytes(vc, v, buf, size) < size) {
		ns_strbuf_puts(sb, "<not captured>");
		return;
	}
	uint64_t raw = load_le(buf, size);
	if (t->kind == NS_DT_POINTER && is_char_type(t->target)) {
		if (raw == 0)
			ns_strbuf_puts(sb, "0x0");
		else
			render_string_at(vc, sb, raw, STRING_MAX);
		return;
	}
	render_scalar(sb, t, raw);
}

const char *value_render(const struct value_ctx *vc, const struct value *v)
{
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	render_into(vc, &sb, v, 0);
	const char *out =
	        ns_arena_strdup(vc->arena, sb.oom ? "<out of memory>" : ns_strbuf_str(&sb));
	ns_strbuf_deinit(&sb);
	return out ? out : "<out of memory>";
}

/* For a pointer value: the pointee as a VAL_MEMORY value; false if NULL/unreadable. */
static bool deref(const struct value_ctx *vc, const struct value *v, struct value *out)
{
	const struct ns_dwarf_type *t = strip(v->type);
	uint8_t buf[8];
	if (!t || t->kind != NS_DT_POINTER || value_bytes(vc, v, buf, 8) < 8)
		return false;
	uint64_t p = load_le(buf, 8);
	if (!p)
		return false;
	*out = (struct value){.type = t->target, .where = VAL_MEMORY, .addr = p};
	return true;
}

bool value_has_children(const struct value_ctx *vc, const struct value *v)
{
	if (v->where == VAL_ERROR)
		return false;
	const struct ns_dwarf_type *t = strip(v->type);
	if (!t)
		return false;
	switch (t->kind) {
	case NS_DT_STRUCT:
	case NS_DT_UNION:
		return t->nmembers > 0;
	case NS_DT_ARRAY:
		return t->count_known && t->count > 0;
	case NS_DT_POINTER: {
		const struct ns_dwarf_type *pt = strip(t->target);
		if (!pt || pt->kind == NS_DT_VOID || pt->kind == NS_DT_FUNC || is_char_type(pt))
			return false;
		struct value d;
		if (!deref(vc, v, &d))
			return false;
		uint8_t probe;
		return vc->read(vc->ctx, d.addr, &probe, 1) == 1;
	}
	default:
		return false;
	}
}

size_t value_children(const struct value_ctx *vc, const struct value *v, const char ***names,
                      struct value **vals)
{
	*names = NULL;
	*vals = NULL;
	if (v->where == VAL_ERROR)
		return 0;
	const struct ns_dwarf_type *t = strip(v->type);
	if (!t)
		return 0;
	struct value base = *v;
	if (t->kind == NS_DT_POINTER) {
		struct value d;
		if (!deref(vc, v, &d))
			return 0;
		const struct ns_dwarf_type *pt = strip(d.type);
		if (pt && (pt->kind == NS_DT_STRUCT || pt->kind == NS_DT_UNION ||
		           pt->kind == NS_DT_ARRAY)) {
			base = d;
			t = pt;
		} else {
			const char **n = ns_arena_alloc(vc->arena, sizeof(char *));
			struct value *c = ns_arena_alloc(vc->arena, sizeof(struct value));
			if (!n || !c)
				return 0;
			n[0] = "*";
			c[0] = d;
			*names = n;
			*vals = c;
			return 1;
		}
	}
	if (t->kind == NS_DT_STRUCT || t->kind == NS_DT_UNION) {
		const char **n = ns_arena_calloc(vc->arena, t->nmembers, sizeof(char *));
		struct value *c = ns_arena_calloc(vc->arena, t->nmembers, sizeof(struct value));
		if (!n || !c)
			return 0;
		for (size_t i = 0; i < t->nmembers; i++) {
			const struct ns_dwarf_member *m = &t->members[i];
			n[i] = m->name ? m->name : "<anonymous>";
			if (m->bit_size) {
				// Render the bit field now; its value is text, not bytes.
				struct ns_strbuf sb;
				ns_strbuf_init(&sb);
				render_bitfield(vc, &sb, &base, m);
				c[i] = (struct value){
				        .type = m->type,
				        .where = VAL_ERROR,
				        .error = ns_arena_strdup(vc->arena, ns_strbuf_str(&sb))};
				ns_strbuf_deinit(&sb);
			} else {
				c[i] = member_value(&base, m);
			}
		}
		*names = n;
		*vals = c;
		return t->nmembers;
	}
	if (t->kind == NS_DT_ARRAY && t->count_known) {
		uint64_t cnt = t->count < ARRAY_CHILDREN_MAX ? t->count : ARRAY_CHILDREN_MAX;
		uint64_t es = type_size(t->target);
		const char **n = ns_arena_calloc(vc->arena, cnt, sizeof(char *));
		struct value *c = ns_arena_calloc(vc->arena, cnt, sizeof(struct value));
		if (!n || !c)
			return 0;
		for (uint64_t i = 0; i < cnt; i++) {
			n[i] = ns_arena_printf(vc->arena, "[%" PRIu64 "]", i);
			c[i] = (struct value){
			        .type = t->target, .where = base.where, .addr = base.addr + i * es};
			if (base.where == VAL_BYTES && i * es < sizeof(base.bytes))
				memcpy(c[i].bytes, base.bytes + i * es,
				       sizeof(c[i].bytes) - i * es);
		}
		*names = n;
		*vals = c;
		return cnt;
	}
	return 0;
}

struct value value_from_result(const struct ns_expr_prog *prog, uint64_t result)
{
	struct value v = {.type = prog->type};
	if (prog->kind == NS_EXPR_LVALUE) {
		v.where = VAL_MEMORY;
		v.addr = result;
	} else {
		v.where = VAL_BYTES;
		memcpy(v.bytes, &result, 8);
	}
	return v;
}
