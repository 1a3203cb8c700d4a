#include "base/arena.h"
#include "base/err.h"
#include "base/strbuf.h"
#include "base/test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

NS_TEST(test_err__wrap_keeps_code_and_column)
{
	struct ns_err *e = ns_err_at(NS_ERR_SYNTAX, 7, "unexpected '%c'", ')');
	e = ns_err_wrap(e, "condition of tracepoint %u", 3u);
	NS_CHECK_INT(e->code, NS_ERR_SYNTAX);
	NS_CHECK_INT(e->column, 7);
	NS_CHECK_STR(e->msg, "condition of tracepoint 3: unexpected ')'");
	ns_err_destroy(e);
}

NS_TEST(test_err__errno_message)
{
	struct ns_err *e = ns_err_errno(ENOENT, "open %s", "/nope");
	NS_CHECK_INT(e->code, NS_ERR_OS);
	NS_CHECK_INT(e->errnum, ENOENT);
	NS_CHECK_STR(e->msg, "open /nope: No such file or directory");
	ns_err_destroy(e);
	ns_err_destroy(&ns_err_nomem); /* no-op */
	ns_err_destroy(NULL);
	NS_CHECK_STR(ns_err_nomem.msg, "out of memory");
}

NS_TEST(test_err__arena_alignment_and_big_blocks)
{
	struct ns_arena a;
	ns_arena_init(&a);
	char *small = ns_arena_alloc(&a, 3);
	char *big = ns_arena_alloc(&a, 100000);
	char *after = ns_arena_alloc(&a, 5);
	NS_CHECK(small && big && after);
	NS_CHECK(((uintptr_t)big & 15) == 0 && ((uintptr_t)after & 15) == 0);
	NS_CHECK(ns_arena_calloc(&a, SIZE_MAX / 2, 4) == NULL);
	NS_CHECK_STR(ns_arena_printf(&a, "%d-%s", 42, "x"), "42-x");
	ns_arena_deinit(&a);
}

NS_TEST(test_err__strbuf_hex_roundtrip)
{
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	unsigned char in[] = {0x00, 0xff, 0x12, 0xab}, out[4];
	ns_strbuf_hex(&sb, in, sizeof(in));
	NS_CHECK_STR(ns_strbuf_str(&sb), "00ff12ab");
	NS_CHECK_INT(ns_hex_decode(sb.buf, sb.len, out), 0);
	NS_CHECK(memcmp(in, out, 4) == 0);
	// Every byte value against printf's two digits.
	unsigned char all[256];
	char want[3];
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	ns_strbuf_deinit(&sb);
	ns_strbuf_init(&sb);
	ns_strbuf_hex(&sb, all, sizeof(all));
	NS_CHECK_INT(sb.len, 512);
	for (int i = 0; i < 256 && sb.len == 512; i++) {
		snprintf(want, sizeof(want), "%02x", i);
		NS_CHECK(sb.buf[2 * i] == want[0] && sb.buf[2 * i + 1] == want[1]);
	}
	NS_CHECK_INT(ns_hex_decode("0g", 2, out), -1);
	NS_CHECK_INT(ns_hex_decode("012", 3, out), -1);
	ns_strbuf_deinit(&sb);
}
