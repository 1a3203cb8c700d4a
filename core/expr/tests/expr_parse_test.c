/* Parser: precedence and associativity (checked against C's grammar, C11 6.5, written
 * out by hand as fully parenthesized text), literals, and syntax-error columns. */
#include <string.h>

#include "base/test.h"
#include "expr/expr_internal.h"

static char *parse_str(const char *src, ns_expr__is_type_fn is_type)
{
	static struct ns_arena arena;
	static bool init;
	if (!init) {
		ns_arena_init(&arena);
		init = true;
	}
	struct ns_expr__node *n;
	struct ns_err *err = ns_expr__parse(src, is_type, NULL, &arena, &n);
	if (err) {
		char *s = ns_arena_printf(&arena, "ERR %s", err->msg);
		ns_err_destroy(err);
		return s;
	}
	return ns_expr__node_str(n, &arena);
}

#define CHECK_PARSE(src, want) NS_CHECK_STR(parse_str(src, NULL), want)

static void check_err(int line, const char *src, enum ns_err_code code, int column, const char *msg)
{
	struct ns_arena arena;
	struct ns_expr__node *n;
	ns_arena_init(&arena);
	struct ns_err *err = ns_expr__parse(src, NULL, NULL, &arena, &n);
	if (!err) {
		ns_test_fail(__FILE__, line, "'%s' parsed without error", src);
	} else {
		if (err->code != code || err->column != column || strcmp(err->msg, msg) != 0)
			ns_test_fail(__FILE__, line,
			             "'%s': got %s col %d \"%s\", want %s col %d \"%s\"", src,
			             ns_err_code_name(err->code), err->column, err->msg,
			             ns_err_code_name(code), column, msg);
		ns_err_destroy(err);
	}
	ns_arena_deinit(&arena);
}

NS_TEST(test_expr_parse__precedence)
{
	CHECK_PARSE("a + b * c", "(a + (b * c))");
	CHECK_PARSE("a * b + c", "((a * b) + c)");
	CHECK_PARSE("a << 1 + 2", "(a << (1 + 2))");
	CHECK_PARSE("a < b == c < d", "((a < b) == (c < d))");
	CHECK_PARSE("a & b ^ c | d", "(((a & b) ^ c) | d)");
	CHECK_PARSE("a | b ^ c & d", "(a | (b ^ (c & d)))");
	CHECK_PARSE("a || b && c", "(a || (b && c))");
	CHECK_PARSE("a == 1 && b != 2 || c", "(((a == 1) && (b != 2)) || c)");
	CHECK_PARSE("a & 1 == 0", "(a & (1 == 0))");
	CHECK_PARSE("!x == 0", "((!x) == 0)");
	CHECK_PARSE("-a->b[2].c", "(-(((a->b)[2]).c))");
	CHECK_PARSE("*p->q", "(*(p->q))");
	CHECK_PARSE("&s.f[1]", "(&((s.f)[1]))");
	CHECK_PARSE("~-!*&x", "(~(-(!(*(&x)))))");
	CHECK_PARSE("(a + b) * c", "((a + b) * c)");
	CHECK_PARSE("a ? b : c ? d : e", "(a ? b : (c ? d : e))");
	CHECK_PARSE("a || b ? c , d : e", "((a || b) ? (c, d) : e)");
	CHECK_PARSE("a, b, c", "((a, b), c)");
	CHECK_PARSE("a[b[c]]", "(a[(b[c])])");
}

NS_TEST(test_expr_parse__associativity)
{
	CHECK_PARSE("a - b - c", "((a - b) - c)");
	CHECK_PARSE("a / b / c", "((a / b) / c)");
	CHECK_PARSE("a % b * c", "((a % b) * c)");
	CHECK_PARSE("a >> b << c", "((a >> b) << c)");
	CHECK_PARSE("a < b < c", "((a < b) < c)");
	CHECK_PARSE("a && b && c", "((a && b) && c)");
	CHECK_PARSE("a.b.c->d", "(((a.b).c)->d)");
	CHECK_PARSE("- - a", "(-(-a))");
}

NS_TEST(test_expr_parse__casts_and_sizeof)
{
	CHECK_PARSE("(int)x + 1", "(((int)x) + 1)");
	CHECK_PARSE("(unsigned)x", "((unsigned int)x)");
	CHECK_PARSE("(long unsigned int)x", "((unsigned long)x)");
	CHECK_PARSE("(unsigned char)x", "((unsigned char)x)");
	CHECK_PARSE("(short int)x", "((short)x)");
	CHECK_PARSE("(long long)x", "((long long)x)");
	CHECK_PARSE("(const char *)p", "((char *)p)");
	CHECK_PARSE("(struct item *)p->next", "((struct item *)(p->next))");
	CHECK_PARSE("(char)-1", "((char)(-1))");
	CHECK_PARSE("sizeof(struct item) * 2", "((sizeof (struct item)) * 2)");
	CHECK_PARSE("sizeof it->sku", "(sizeof (it->sku))");
	CHECK_PARSE("sizeof (x) + 1", "((sizeof x) + 1)");
	// Without a typedef callback "(size_t)x" is a parenthesized name followed by x.
	NS_CHECK_STR(parse_str("(size_t)x", NULL), "ERR unexpected 'x' at column 9");
}

static bool is_size_t(void *ctx, const char *name)
{
	(void)ctx;
	return strcmp(name, "size_t") == 0;
}

NS_TEST(test_expr_parse__typedef_casts)
{
	NS_CHECK_STR(parse_str("(size_t)x", is_size_t), "((size_t)x)");
	NS_CHECK_STR(parse_str("(size_t *)p + 1", is_size_t), "(((size_t *)p) + 1)");
	NS_CHECK_STR(parse_str("(n)", is_size_t), "n");
}

NS_TEST(test_expr_parse__literals)
{
	CHECK_PARSE("0x10 + 010 + 'a' + '\\n' + 0", "((((16 + 8) + 97) + 10) + 0)");
	CHECK_PARSE("'\\x41' + '\\0' + '\\''", "((65 + 0) + 39)");
	CHECK_PARSE("18446744073709551615u", "18446744073709551615");
	CHECK_PARSE("0b101", "5");

	// Types of integer constants, C11 6.4.4.1.
	struct ns_arena arena;
	struct ns_expr__node *n;
	ns_arena_init(&arena);
	static const struct {
		const char *src;
		enum ns_expr__itype it;
	} cases[] = {
	        {"2147483647", NS_IT_INT},    {"2147483648", NS_IT_LONG},
	        {"0x7fffffff", NS_IT_INT},    {"0xffffffff", NS_IT_UINT},
	        {"1u", NS_IT_UINT},           {"1L", NS_IT_LONG},
	        {"1ul", NS_IT_ULONG},         {"0xffffffffffffffff", NS_IT_ULONG},
	        {"4294967296u", NS_IT_ULONG}, {"'\\377'", NS_IT_INT},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		NS_CHECK_OK(ns_expr__parse(cases[i].src, NULL, NULL, &arena, &n));
		NS_CHECK_INT(n->itype, cases[i].it);
	}
	// '\377' is the char -1 promoted to int.
	NS_CHECK_OK(ns_expr__parse("'\\377'", NULL, NULL, &arena, &n));
	NS_CHECK_INT((int64_t)n->ival, -1);
	NS_CHECK_OK(ns_expr__parse("\"ab\\n\"", NULL, NULL, &arena, &n));
	NS_CHECK_INT(n->kind, NS_EN_STRING);
	NS_CHECK_INT(n->name_len, 3);
	ns_arena_deinit(&arena);
}

NS_TEST(test_expr_parse__columns)
{
	struct ns_arena arena;
	struct ns_expr__node *n;
	ns_arena_init(&arena);
	NS_CHECK_OK(ns_expr__parse("  it->nosuchfield", NULL, NULL, &arena, &n));
	NS_CHECK_INT(n->kind, NS_EN_ARROW);
	NS_CHECK_INT(n->column, 7); /* the member name */
	NS_CHECK_INT(n->lhs->column, 3);
	NS_CHECK_OK(ns_expr__parse("a +  b", NULL, NULL, &arena, &n));
	NS_CHECK_INT(n->column, 3);
	NS_CHECK_INT(n->rhs->column, 6);
	ns_arena_deinit(&arena);
}

NS_TEST(test_expr_parse__errors)
{
	check_err(__LINE__, "a +", NS_ERR_SYNTAX, 4, "expected expression at column 4");
	check_err(__LINE__, "(a", NS_ERR_SYNTAX, 3, "expected ')' at column 3");
	check_err(__LINE__, "(a + b * c", NS_ERR_SYNTAX, 11, "expected ')' at column 11");
	check_err(__LINE__, "a..b", NS_ERR_SYNTAX, 3, "expected member name at column 3");
	check_err(__LINE__, "1 2", NS_ERR_SYNTAX, 3, "unexpected '2' at column 3");
	check_err(__LINE__, "it->", NS_ERR_SYNTAX, 5, "expected member name at column 5");
	check_err(__LINE__, "", NS_ERR_SYNTAX, 1, "expected expression at column 1");
	check_err(__LINE__, "a @ b", NS_ERR_SYNTAX, 3, "unexpected character '@' at column 3");
	check_err(__LINE__, "a = 1", NS_ERR_SYNTAX, 3, "unexpected character '=' at column 3");
	check_err(__LINE__, "a[1", NS_ERR_SYNTAX, 4, "expected ']' at column 4");
	check_err(__LINE__, "a ? b", NS_ERR_SYNTAX, 6, "expected ':' at column 6");
	check_err(__LINE__, "(int", NS_ERR_SYNTAX, 5, "expected ')' at column 5");
	check_err(__LINE__, "x + int", NS_ERR_SYNTAX, 5,
	          "expected expression before 'int' at column 5");
	check_err(__LINE__, "a)", NS_ERR_SYNTAX, 2, "unexpected ')' at column 2");
	check_err(__LINE__, "'ab'", NS_ERR_SYNTAX, 1,
	          "unterminated character constant at column 1");
	check_err(__LINE__, "\"abc", NS_ERR_SYNTAX, 1, "unterminated string literal at column 1");
	check_err(__LINE__, "99999999999999999999", NS_ERR_SYNTAX, 1,
	          "integer constant too large at column 1");
	check_err(__LINE__, "09", NS_ERR_SYNTAX, 1, "invalid digit in octal constant at column 1");
	check_err(__LINE__, "1.5 + x", NS_ERR_TYPE, 1,
	          "floating-point arithmetic is not supported");
	check_err(__LINE__, "x * .5", NS_ERR_TYPE, 5, "floating-point arithmetic is not supported");
	check_err(__LINE__, "(unsigned signed)x", NS_ERR_SYNTAX, 2,
	          "invalid type name at column 2");
}

NS_TEST(test_expr_parse__deep_nesting)
{
	char buf[2000];
	size_t k = 0;
	for (int i = 0; i < 600; i++)
		buf[k++] = '(';
	buf[k++] = 'a';
	for (int i = 0; i < 600; i++)
		buf[k++] = ')';
	buf[k] = 0;
	struct ns_arena arena;
	struct ns_expr__node *n;
	ns_arena_init(&arena);
	struct ns_err *err = ns_expr__parse(buf, NULL, NULL, &arena, &n);
	NS_CHECK(err && err->code == NS_ERR_SYNTAX);
	ns_err_destroy(err);
	ns_arena_deinit(&arena);
}
