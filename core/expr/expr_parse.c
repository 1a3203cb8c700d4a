/* Lexer and recursive-descent parser for the C expression subset of expr.h.
 * Binary operators use precedence climbing over the table in binop_prec(); every
 * token keeps its 1-based column so errors can point at it. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "base/strbuf.h"
#include "expr/expr_internal.h"

enum tok_kind {
	TK_EOF,
	TK_IDENT,
	TK_INT, /* integer or character constant */
	TK_STRING,
	TK_PUNCT,
};

/* Multi-character punctuators; single ones use their character code. */
enum {
	P_ARROW = 256,
	P_SHL,
	P_SHR,
	P_LE,
	P_GE,
	P_EQ,
	P_NE,
	P_LAND,
	P_LOR,
};

struct tok {
	enum tok_kind kind;
	int punct;
	int column;
	const char *start; /* in the source */
	size_t len;
	uint64_t ival;
	enum ns_expr__itype itype;
	char *str; /* decoded string literal (arena) */
	size_t str_len;
};

struct parser {
	const char *src;
	struct ns_arena *arena;
	struct tok *toks;
	size_t ntoks, pos;
	ns_expr__is_type_fn is_type;
	void *ctx;
	unsigned depth;
};

enum { MAX_NESTING = 200 };

static struct ns_err *syntax(int column, const char *what)
{
	return ns_err_at(NS_ERR_SYNTAX, column, "%s at column %d", what, column);
}

static struct ns_err *unexpected(const struct tok *t)
{
	if (t->kind == TK_EOF)
		return ns_err_at(NS_ERR_SYNTAX, t->column,
		                 "unexpected end of expression at column %d", t->column);
	return ns_err_at(NS_ERR_SYNTAX, t->column, "unexpected '%.*s' at column %d", (int)t->len,
	                 t->start, t->column);
}

/* ---- Lexer ---- */

static int esc_value(const char **pp, const char *end, int *val)
{
	const char *p = *pp;
	if (p >= end)
		return -1;
	char c = *p++;
	switch (c) {
	case 'n':
		*val = '\n';
		break;
	case 't':
		*val = '\t';
		break;
	case 'r':
		*val = '\r';
		break;
	case 'a':
		*val = '\a';
		break;
	case 'b':
		*val = '\b';
		break;
	case 'f':
		*val = '\f';
		break;
	case 'v':
		*val = '\v';
		break;
	case 'e':
		*val = 27;
		break;
	case '\\':
	case '\'':
	case '"':
	case '?':
		*val = c;
		break;
	case 'x': {
		int v = 0, n = 0;
		while (p < end && isxdigit((unsigned char)*p) && n < 2) {
			v = v * 16 +
			    (isdigit((unsigned char)*p) ? *p - '0' : (tolower(*p) - 'a' + 10));
			p++;
			n++;
		}
		if (n == 0)
			return -1;
		*val = v;
		break;
	}
	default:
		if (c >= '0' && c <= '7') {
			int v = c - '0', n = 1;
			while (p < end && *p >= '0' && *p <= '7' && n < 3) {
				v = v * 8 + (*p++ - '0');
				n++;
			}
			*val = v & 0xff;
			break;
		}
		return -1;
	}
	*pp = p;
	return 0;
}

static struct ns_err *lex_number(const char *p, const char *end, int col, struct tok *t,
                                 const char **next)
{
	const char *s = p;
	unsigned base = 10;
	if (*p == '0' && p + 1 < end && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	} else if (*p == '0' && p + 1 < end && (p[1] == 'b' || p[1] == 'B')) {
		base = 2;
		p += 2;
	} else if (*p == '0') {
		base = 8;
	}
	uint64_t v = 0;
	bool overflow = false, any = base == 8;
	for (; p < end; p++) {
		int d;
		if (isdigit((unsigned char)*p))
			d = *p - '0';
		else if (base == 16 && isxdigit((unsigned char)*p))
			d = tolower(*p) - 'a' + 10;
		else
			break;
		if ((unsigned)d >= base) {
			if (base == 8 && d < 10)
				return syntax(col, "invalid digit in octal constant");
			break;
		}
		any = true;
		if (__builtin_mul_overflow(v, base, &v) ||
		    __builtin_add_overflow(v, (uint64_t)d, &v))
			overflow = true;
	}
	if (p < end && (*p == '.' || ((base == 10 || base == 8) && (*p == 'e' || *p == 'E'))))
		return ns_err_at(NS_ERR_TYPE, col, "floating-point arithmetic is not supported");
	if (!any)
		return syntax(col, "invalid integer constant");
	if (overflow)
		return syntax(col, "integer constant too large");
	bool is_u = false;
	unsigned nl = 0;
	while (p < end && (*p == 'u' || *p == 'U' || *p == 'l' || *p == 'L')) {
		if (*p == 'u' || *p == 'U') {
			if (is_u)
				return syntax(col, "invalid integer suffix");
			is_u = true;
		} else {
			nl++;
		}
		p++;
	}
	if (nl > 2 || (p < end && (isalnum((unsigned char)*p) || *p == '_')))
		return syntax(col, "invalid integer constant");
	// C11 6.4.4.1: the first type of the list that can represent the value; octal and
	// hex constants may also take the unsigned types.
	enum ns_expr__itype it;
	if (!is_u && nl == 0 && v <= INT32_MAX)
		it = NS_IT_INT;
	else if (!is_u && nl == 0 && base != 10 && v <= UINT32_MAX)
		it = NS_IT_UINT;
	else if (is_u && nl == 0 && v <= UINT32_MAX)
		it = NS_IT_UINT;
	else if (!is_u && v <= INT64_MAX)
		it = NS_IT_LONG;
	else if (!is_u && base == 10)
		return syntax(col, "integer constant too large");
	else
		it = NS_IT_ULONG;
	t->kind = TK_INT;
	t->ival = v;
	t->itype = it;
	t->start = s;
	t->len = (size_t)(p - s);
	*next = p;
	return NULL;
}

static struct ns_err *lex(struct parser *ps)
{
	const char *src = ps->src, *end = src + strlen(src);
	size_t cap = 16;
	ps->toks = ns_arena_calloc(ps->arena, cap, sizeof(struct tok));
	if (!ps->toks)
		return &ns_err_nomem;
	const char *p = src;
	for (;;) {
		while (p < end && isspace((unsigned char)*p))
			p++;
		if (ps->ntoks + 1 >= cap) {
			struct tok *nt = ns_arena_calloc(ps->arena, cap * 2, sizeof(struct tok));
			if (!nt)
				return &ns_err_nomem;
			memcpy(nt, ps->toks, cap * sizeof(struct tok));
			ps->toks = nt;
			cap *= 2;
		}
		struct tok *t = &ps->toks[ps->ntoks];
		int col = (int)(p - src) + 1;
		t->column = col;
		t->start = p;
		if (p >= end) {
			t->kind = TK_EOF;
			t->len = 0;
			ps->ntoks++;
			return NULL;
		}
		char c = *p;
		if (isalpha((unsigned char)c) || c == '_') {
			const char *s = p;
			while (p < end && (isalnum((unsigned char)*p) || *p == '_'))
				p++;
			t->kind = TK_IDENT;
			t->len = (size_t)(p - s);
		} else if (isdigit((unsigned char)c) ||
		           (c == '.' && p + 1 < end && isdigit((unsigned char)p[1]))) {
			if (c == '.')
				return ns_err_at(NS_ERR_TYPE, col,
				                 "floating-point arithmetic is not supported");
			struct ns_err *err = lex_number(p, end, col, t, &p);
			if (err)
				return err;
		} else if (c == '\'') {
			const char *q = p + 1;
			int v;
			if (q < end && *q == '\\') {
				q++;
				if (esc_value(&q, end, &v) != 0)
					return syntax(col, "invalid escape in character constant");
			} else if (q < end && *q != '\'') {
				v = (unsigned char)*q++;
			} else {
				return syntax(col, "empty character constant");
			}
			if (q >= end || *q != '\'')
				return syntax(col, "unterminated character constant");
			p = q + 1;
			t->kind = TK_INT;
			// A plain char is signed on x86-64, and 'c' has type int (C11 6.4.4.4).
			t->ival = (uint64_t)(int64_t)(signed char)v;
			t->itype = NS_IT_INT;
			t->len = (size_t)(p - t->start);
		} else if (c == '"') {
			struct ns_strbuf sb;
			ns_strbuf_init(&sb);
			const char *q = p + 1;
			while (q < end && *q != '"') {
				int v;
				if (*q == '\\') {
					q++;
					if (esc_value(&q, end, &v) != 0) {
						ns_strbuf_deinit(&sb);
						return syntax((int)(q - src),
						              "invalid escape in string");
					}
				} else {
					v = (unsigned char)*q++;
				}
				ns_strbuf_putc(&sb, (char)v);
			}
			if (q >= end) {
				ns_strbuf_deinit(&sb);
				return syntax(col, "unterminated string literal");
			}
			p = q + 1;
			t->kind = TK_STRING;
			t->str_len = sb.len;
			t->str = ns_arena_strndup(ps->arena, ns_strbuf_str(&sb), sb.len);
			bool oom = sb.oom;
			ns_strbuf_deinit(&sb);
			if (!t->str || oom)
				return &ns_err_nomem;
			t->len = (size_t)(p - t->start);
		} else {
			static const struct {
				const char *s;
				int code;
			} multi[] = {{"->", P_ARROW}, {"<<", P_SHL},  {">>", P_SHR},
			             {"<=", P_LE},    {">=", P_GE},   {"==", P_EQ},
			             {"!=", P_NE},    {"&&", P_LAND}, {"||", P_LOR}};
			t->kind = TK_PUNCT;
			t->punct = 0;
			for (size_t i = 0; i < sizeof(multi) / sizeof(multi[0]); i++) {
				if (p + 1 < end && p[0] == multi[i].s[0] && p[1] == multi[i].s[1]) {
					t->punct = multi[i].code;
					t->len = 2;
					break;
				}
			}
			if (!t->punct) {
				if (!strchr("()[].,*&-+!~/%<>^|?:", c) || c == '\0')
					return ns_err_at(NS_ERR_SYNTAX, col,
					                 "unexpected character '%c' at column %d",
					                 c, col);
				t->punct = c;
				t->len = 1;
			}
			p += t->len;
		}
		ps->ntoks++;
	}
}

/* ---- Parser ---- */

static struct tok *peek(struct parser *ps, size_t ahead)
{
	size_t i = ps->pos + ahead;
	if (i >= ps->ntoks)
		i = ps->ntoks - 1; /* EOF */
	return &ps->toks[i];
}

static bool is_punct(const struct tok *t, int p)
{
	return t->kind == TK_PUNCT && t->punct == p;
}

static bool is_word(const struct tok *t, const char *w)
{
	return t->kind == TK_IDENT && t->len == strlen(w) && memcmp(t->start, w, t->len) == 0;
}

static const char *const type_words[] = {"void",   "char",     "short", "int",    "long",
                                         "signed", "unsigned", "float", "double", "_Bool",
                                         "struct", "union",    "enum",  "const",  "volatile"};

static bool is_keyword(const struct tok *t)
{
	for (size_t i = 0; i < sizeof(type_words) / sizeof(type_words[0]); i++)
		if (is_word(t, type_words[i]))
			return true;
	return is_word(t, "sizeof");
}

static char *tok_str(struct parser *ps, const struct tok *t)
{
	return ns_arena_strndup(ps->arena, t->start, t->len);
}

static bool starts_type(struct parser *ps, const struct tok *t)
{
	if (t->kind != TK_IDENT)
		return false;
	for (size_t i = 0; i < sizeof(type_words) / sizeof(type_words[0]); i++)
		if (is_word(t, type_words[i]))
			return true;
	if (!ps->is_type || is_word(t, "sizeof"))
		return false;
	char *name = tok_str(ps, t);
	return name && ps->is_type(ps->ctx, name);
}

static struct ns_expr__node *new_node(struct parser *ps, enum ns_expr__node_kind kind, int column)
{
	struct ns_expr__node *n = ns_arena_alloc(ps->arena, sizeof(*n));
	if (n) {
		n->kind = kind;
		n->column = column;
	}
	return n;
}

static struct ns_err *expect(struct parser *ps, int punct, const char *what)
{
	struct tok *t = peek(ps, 0);
	if (!is_punct(t, punct))
		return ns_err_at(NS_ERR_SYNTAX, t->column, "expected '%s' at column %d", what,
		                 t->column);
	ps->pos++;
	return NULL;
}

static struct ns_err *parse_tname(struct parser *ps, struct ns_expr__tname *out)
{
	struct tok *first = peek(ps, 0);
	unsigned n_void = 0, n_char = 0, n_short = 0, n_int = 0, n_long = 0, n_signed = 0,
	         n_unsigned = 0, n_float = 0, n_double = 0, n_bool = 0;
	const char *base = NULL;
	out->column = first->column;
	for (;;) {
		struct tok *t = peek(ps, 0);
		if (is_word(t, "const") || is_word(t, "volatile")) {
			ps->pos++;
		} else if (is_word(t, "struct") || is_word(t, "union") || is_word(t, "enum")) {
			if (base || n_void + n_char + n_short + n_int + n_long + n_signed +
			                    n_unsigned + n_float + n_double + n_bool)
				return unexpected(t);
			struct tok *tag = peek(ps, 1);
			if (tag->kind != TK_IDENT || is_keyword(tag))
				return syntax(tag->column, "expected tag name");
			base = ns_arena_printf(ps->arena, "%.*s %.*s", (int)t->len, t->start,
			                       (int)tag->len, tag->start);
			if (!base)
				return &ns_err_nomem;
			ps->pos += 2;
		} else if (is_word(t, "void")) {
			n_void++, ps->pos++;
		} else if (is_word(t, "char")) {
			n_char++, ps->pos++;
		} else if (is_word(t, "short")) {
			n_short++, ps->pos++;
		} else if (is_word(t, "int")) {
			n_int++, ps->pos++;
		} else if (is_word(t, "long")) {
			n_long++, ps->pos++;
		} else if (is_word(t, "signed")) {
			n_signed++, ps->pos++;
		} else if (is_word(t, "unsigned")) {
			n_unsigned++, ps->pos++;
		} else if (is_word(t, "float")) {
			n_float++, ps->pos++;
		} else if (is_word(t, "double")) {
			n_double++, ps->pos++;
		} else if (is_word(t, "_Bool")) {
			n_bool++, ps->pos++;
		} else if (t->kind == TK_IDENT && !base &&
		           n_void + n_char + n_short + n_int + n_long + n_signed + n_unsigned +
		                           n_float + n_double + n_bool ==
		                   0 &&
		           starts_type(ps, t)) {
			base = tok_str(ps, t);
			if (!base)
				return &ns_err_nomem;
			ps->pos++;
		} else {
			break;
		}
	}
	unsigned nspec = n_void + n_char + n_short + n_int + n_long + n_signed + n_unsigned +
	                 n_float + n_double + n_bool;
	if (!base) {
		bool ok = true;
		if (nspec == 0)
			return syntax(peek(ps, 0)->column, "expected type name");
		if ((n_signed && n_unsigned) || n_signed > 1 || n_unsigned > 1 || n_int > 1 ||
		    n_char > 1 || n_short > 1 || n_long > 2 || n_void > 1 || n_float > 1 ||
		    n_double > 1 || n_bool > 1)
			ok = false;
		if (n_void || n_bool || n_float) {
			ok = ok && nspec == 1;
			base = n_void ? "void" : n_bool ? "_Bool" : "float";
		} else if (n_double) {
			ok = ok && nspec == n_double + n_long && n_long <= 1;
			base = n_long ? "long double" : "double";
		} else if (n_char) {
			ok = ok && nspec == n_char + n_signed + n_unsigned;
			base = n_unsigned ? "unsigned char" : n_signed ? "signed char" : "char";
		} else if (n_short) {
			ok = ok && !n_long;
			base = n_unsigned ? "unsigned short" : "short";
		} else if (n_long == 2) {
			base = n_unsigned ? "unsigned long long" : "long long";
		} else if (n_long == 1) {
			base = n_unsigned ? "unsigned long" : "long";
		} else {
			base = n_unsigned ? "unsigned int" : "int";
		}
		if (!ok)
			return syntax(first->column, "invalid type name");
	} else if (nspec) {
		return syntax(first->column, "invalid type name");
	}
	out->base = base;
	out->nptr = 0;
	for (;;) {
		struct tok *t = peek(ps, 0);
		if (is_punct(t, '*'))
			out->nptr++, ps->pos++;
		else if (is_word(t, "const") || is_word(t, "volatile"))
			ps->pos++;
		else
			break;
	}
	return NULL;
}

static struct ns_err *parse_expr(struct parser *ps, struct ns_expr__node **out);
static struct ns_err *parse_cond(struct parser *ps, struct ns_expr__node **out);
static struct ns_err *parse_unary(struct parser *ps, struct ns_expr__node **out);

static struct ns_err *parse_primary(struct parser *ps, struct ns_expr__node **out)
{
	struct tok *t = peek(ps, 0);
	struct ns_expr__node *n = NULL;
	switch (t->kind) {
	case TK_IDENT:
		if (is_keyword(t))
			return ns_err_at(NS_ERR_SYNTAX, t->column,
			                 "expected expression before '%.*s' at column %d",
			                 (int)t->len, t->start, t->column);
		n = new_node(ps, NS_EN_IDENT, t->column);
		if (!n || !(n->name = tok_str(ps, t)))
			return &ns_err_nomem;
		ps->pos++;
		*out = n;
		return NULL;
	case TK_INT:
		n = new_node(ps, NS_EN_INT, t->column);
		if (!n)
			return &ns_err_nomem;
		n->ival = t->ival;
		n->itype = t->itype;
		ps->pos++;
		*out = n;
		return NULL;
	case TK_STRING:
		n = new_node(ps, NS_EN_STRING, t->column);
		if (!n)
			return &ns_err_nomem;
		n->name = t->str;
		n->name_len = t->str_len;
		ps->pos++;
		*out = n;
		return NULL;
	case TK_PUNCT:
		if (t->punct == '(') {
			ps->pos++;
			struct ns_err *err = parse_expr(ps, &n);
			if (err)
				return err;
			if ((err = expect(ps, ')', ")")))
				return err;
			*out = n;
			return NULL;
		}
		break;
	case TK_EOF:
		return syntax(t->column, "expected expression");
	}
	return unexpected(t);
}

static struct ns_err *parse_postfix(struct parser *ps, struct ns_expr__node **out)
{
	struct ns_expr__node *n = NULL;
	struct ns_err *err = parse_primary(ps, &n);
	if (err)
		return err;
	for (;;) {
		struct tok *t = peek(ps, 0);
		if (is_punct(t, '[')) {
			struct ns_expr__node *idx = new_node(ps, NS_EN_INDEX, t->column);
			if (!idx)
				return &ns_err_nomem;
			ps->pos++;
			idx->lhs = n;
			if ((err = parse_expr(ps, &idx->rhs)))
				return err;
			if ((err = expect(ps, ']', "]")))
				return err;
			n = idx;
		} else if (is_punct(t, '.') || is_punct(t, P_ARROW)) {
			struct tok *m = peek(ps, 1);
			if (m->kind != TK_IDENT || is_keyword(m))
				return syntax(m->column, "expected member name");
			struct ns_expr__node *mn = new_node(
			        ps, t->punct == '.' ? NS_EN_MEMBER : NS_EN_ARROW, m->column);
			if (!mn || !(mn->name = tok_str(ps, m)))
				return &ns_err_nomem;
			mn->lhs = n;
			ps->pos += 2;
			n = mn;
		} else {
			break;
		}
	}
	*out = n;
	return NULL;
}

static struct ns_err *parse_unary(struct parser *ps, struct ns_expr__node **out)
{
	struct tok *t = peek(ps, 0);
	struct ns_err *err;
	if (++ps->depth > MAX_NESTING)
		return syntax(t->column, "expression nested too deeply");
	if (t->kind == TK_PUNCT && t->punct < 256 && t->punct != 0 && strchr("*&-+!~", t->punct)) {
		struct ns_expr__node *n = new_node(ps, NS_EN_UNARY, t->column);
		if (!n)
			return &ns_err_nomem;
		n->op = t->punct;
		ps->pos++;
		if ((err = parse_unary(ps, &n->lhs)))
			return err;
		ps->depth--;
		*out = n;
		return NULL;
	}
	if (is_word(t, "sizeof")) {
		struct ns_expr__node *n = new_node(ps, NS_EN_SIZEOF, t->column);
		if (!n)
			return &ns_err_nomem;
		ps->pos++;
		if (is_punct(peek(ps, 0), '(') && starts_type(ps, peek(ps, 1))) {
			ps->pos++;
			if ((err = parse_tname(ps, &n->tname)) || (err = expect(ps, ')', ")")))
				return err;
		} else if ((err = parse_unary(ps, &n->lhs))) {
			return err;
		}
		ps->depth--;
		*out = n;
		return NULL;
	}
	if (is_punct(t, '(') && starts_type(ps, peek(ps, 1))) {
		struct ns_expr__node *n = new_node(ps, NS_EN_CAST, t->column);
		if (!n)
			return &ns_err_nomem;
		ps->pos++;
		if ((err = parse_tname(ps, &n->tname)) || (err = expect(ps, ')', ")")))
			return err;
		if ((err = parse_unary(ps, &n->lhs)))
			return err;
		ps->depth--;
		*out = n;
		return NULL;
	}
	err = parse_postfix(ps, out);
	ps->depth--;
	return err;
}

/* C precedence, higher binds tighter; 0: not a binary operator here. */
static int binop_prec(const struct tok *t, int *op)
{
	if (t->kind != TK_PUNCT)
		return 0;
	switch (t->punct) {
	case '*':
		*op = NS_OP_MUL;
		return 10;
	case '/':
		*op = NS_OP_DIV;
		return 10;
	case '%':
		*op = NS_OP_MOD;
		return 10;
	case '+':
		*op = NS_OP_ADD;
		return 9;
	case '-':
		*op = NS_OP_SUB;
		return 9;
	case P_SHL:
		*op = NS_OP_SHL;
		return 8;
	case P_SHR:
		*op = NS_OP_SHR;
		return 8;
	case '<':
		*op = NS_OP_LT;
		return 7;
	case P_LE:
		*op = NS_OP_LE;
		return 7;
	case '>':
		*op = NS_OP_GT;
		return 7;
	case P_GE:
		*op = NS_OP_GE;
		return 7;
	case P_EQ:
		*op = NS_OP_EQ;
		return 6;
	case P_NE:
		*op = NS_OP_NE;
		return 6;
	case '&':
		*op = NS_OP_BAND;
		return 5;
	case '^':
		*op = NS_OP_BXOR;
		return 4;
	case '|':
		*op = NS_OP_BOR;
		return 3;
	case P_LAND:
		*op = NS_OP_LAND;
		return 2;
	case P_LOR:
		*op = NS_OP_LOR;
		return 1;
	default:
		return 0;
	}
}

static struct ns_err *parse_binary(struct parser *ps, int min_prec, struct ns_expr__node **out)
{
	struct ns_expr__node *lhs;
	struct ns_err *err = parse_unary(ps, &lhs);
	if (err)
		return err;
	for (;;) {
		struct tok *t = peek(ps, 0);
		int op = 0, prec = binop_prec(t, &op);
		if (prec == 0 || prec < min_prec)
			break;
		ps->pos++;
		struct ns_expr__node *n = new_node(ps, NS_EN_BINARY, t->column);
		if (!n)
			return &ns_err_nomem;
		n->op = op;
		n->lhs = lhs;
		// Left associative: the right operand only takes tighter operators.
		if ((err = parse_binary(ps, prec + 1, &n->rhs)))
			return err;
		lhs = n;
	}
	*out = lhs;
	return NULL;
}

static struct ns_err *parse_cond(struct parser *ps, struct ns_expr__node **out)
{
	struct ns_expr__node *c;
	struct ns_err *err = parse_binary(ps, 1, &c);
	if (err)
		return err;
	struct tok *t = peek(ps, 0);
	if (!is_punct(t, '?')) {
		*out = c;
		return NULL;
	}
	if (++ps->depth > MAX_NESTING)
		return syntax(t->column, "expression nested too deeply");
	struct ns_expr__node *n = new_node(ps, NS_EN_COND, t->column);
	if (!n)
		return &ns_err_nomem;
	ps->pos++;
	n->cond = c;
	if ((err = parse_expr(ps, &n->lhs)) || (err = expect(ps, ':', ":")) ||
	    (err = parse_cond(ps, &n->rhs)))
		return err;
	ps->depth--;
	*out = n;
	return NULL;
}

static struct ns_err *parse_expr(struct parser *ps, struct ns_expr__node **out)
{
	struct ns_expr__node *lhs;
	struct ns_err *err;
	if (++ps->depth > MAX_NESTING)
		return syntax(peek(ps, 0)->column, "expression nested too deeply");
	if ((err = parse_cond(ps, &lhs)))
		return err;
	while (is_punct(peek(ps, 0), ',')) {
		struct tok *t = peek(ps, 0);
		struct ns_expr__node *n = new_node(ps, NS_EN_BINARY, t->column);
		if (!n)
			return &ns_err_nomem;
		ps->pos++;
		n->op = NS_OP_COMMA;
		n->lhs = lhs;
		if ((err = parse_cond(ps, &n->rhs)))
			return err;
		lhs = n;
	}
	ps->depth--;
	*out = lhs;
	return NULL;
}

struct ns_err *ns_expr__parse(const char *src, ns_expr__is_type_fn is_type, void *ctx,
                              struct ns_arena *arena, struct ns_expr__node **out)
{
	struct parser ps = {.src = src, .arena = arena, .is_type = is_type, .ctx = ctx};
	struct ns_err *err = lex(&ps);
	if (err)
		return err;
	if (ps.toks[0].kind == TK_EOF)
		return syntax(1, "expected expression");
	struct ns_expr__node *n;
	if ((err = parse_expr(&ps, &n)))
		return err;
	struct tok *t = peek(&ps, 0);
	if (t->kind != TK_EOF)
		return unexpected(t);
	*out = n;
	return NULL;
}

/* ---- Debug printing ---- */

const char *ns_expr__op_str(int op)
{
	static const char *const names[] = {
	        [NS_OP_NONE] = "?", [NS_OP_MUL] = "*",   [NS_OP_DIV] = "/",  [NS_OP_MOD] = "%",
	        [NS_OP_ADD] = "+",  [NS_OP_SUB] = "-",   [NS_OP_SHL] = "<<", [NS_OP_SHR] = ">>",
	        [NS_OP_LT] = "<",   [NS_OP_LE] = "<=",   [NS_OP_GT] = ">",   [NS_OP_GE] = ">=",
	        [NS_OP_EQ] = "==",  [NS_OP_NE] = "!=",   [NS_OP_BAND] = "&", [NS_OP_BXOR] = "^",
	        [NS_OP_BOR] = "|",  [NS_OP_LAND] = "&&", [NS_OP_LOR] = "||", [NS_OP_COMMA] = ",",
	};
	if (op < 0 || (size_t)op >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[op];
}

static void tname_str(struct ns_strbuf *sb, const struct ns_expr__tname *t)
{
	ns_strbuf_puts(sb, t->base);
	if (t->nptr)
		ns_strbuf_putc(sb, ' ');
	for (unsigned i = 0; i < t->nptr; i++)
		ns_strbuf_putc(sb, '*');
}

static void node_str(struct ns_strbuf *sb, const struct ns_expr__node *n)
{
	switch (n->kind) {
	case NS_EN_IDENT:
		ns_strbuf_puts(sb, n->name);
		break;
	case NS_EN_INT:
		ns_strbuf_printf(sb, "%llu", (unsigned long long)n->ival);
		break;
	case NS_EN_STRING:
		ns_strbuf_putc(sb, '"');
		ns_strbuf_append(sb, n->name, n->name_len);
		ns_strbuf_putc(sb, '"');
		break;
	case NS_EN_MEMBER:
	case NS_EN_ARROW:
		ns_strbuf_putc(sb, '(');
		node_str(sb, n->lhs);
		ns_strbuf_puts(sb, n->kind == NS_EN_MEMBER ? "." : "->");
		ns_strbuf_puts(sb, n->name);
		ns_strbuf_putc(sb, ')');
		break;
	case NS_EN_INDEX:
		ns_strbuf_putc(sb, '(');
		node_str(sb, n->lhs);
		ns_strbuf_putc(sb, '[');
		node_str(sb, n->rhs);
		ns_strbuf_puts(sb, "])");
		break;
	case NS_EN_UNARY:
		ns_strbuf_putc(sb, '(');
		ns_strbuf_putc(sb, (char)n->op);
		node_str(sb, n->lhs);
		ns_strbuf_putc(sb, ')');
		break;
	case NS_EN_CAST:
		ns_strbuf_puts(sb, "((");
		tname_str(sb, &n->tname);
		ns_strbuf_putc(sb, ')');
		node_str(sb, n->lhs);
		ns_strbuf_putc(sb, ')');
		break;
	case NS_EN_SIZEOF:
		ns_strbuf_puts(sb, "(sizeof ");
		if (n->lhs) {
			node_str(sb, n->lhs);
		} else {
			ns_strbuf_putc(sb, '(');
			tname_str(sb, &n->tname);
			ns_strbuf_putc(sb, ')');
		}
		ns_strbuf_putc(sb, ')');
		break;
	case NS_EN_BINARY:
		ns_strbuf_putc(sb, '(');
		node_str(sb, n->lhs);
		ns_strbuf_printf(sb, n->op == NS_OP_COMMA ? "%s " : " %s ", ns_expr__op_str(n->op));
		node_str(sb, n->rhs);
		ns_strbuf_putc(sb, ')');
		break;
	case NS_EN_COND:
		ns_strbuf_putc(sb, '(');
		node_str(sb, n->cond);
		ns_strbuf_puts(sb, " ? ");
		node_str(sb, n->lhs);
		ns_strbuf_puts(sb, " : ");
		node_str(sb, n->rhs);
		ns_strbuf_putc(sb, ')');
		break;
	}
}

char *ns_expr__node_str(const struct ns_expr__node *n, struct ns_arena *arena)
{
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	node_str(&sb, n);
	char *s = sb.oom ? NULL : ns_arena_strdup(arena, ns_strbuf_str(&sb));
	ns_strbuf_deinit(&sb);
	return s;
}
