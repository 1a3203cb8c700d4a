/* Assembler encodings checked against bytes written out by hand from the GDB manual,
 * and the disassembler's listing format. */
#include <stdlib.h>

#include "ax_test_util.h"

static bool emits(int64_t v, const uint8_t *want, size_t want_len)
{
	struct ns_ax_asm a;
	ns_ax_asm_init(&a);
	ns_ax_emit_const(&a, v);
	bool ok = !a.oom && a.len == want_len && memcmp(a.code, want, want_len) == 0;
	if (!ok) {
		ns_test_fail(__FILE__, __LINE__, "emit_const(%" PRId64 "): %zu bytes", v, a.len);
		for (size_t i = 0; i < a.len; i++)
			printf(" %02x", a.code[i]);
		printf("\n");
	}
	ns_ax_asm_deinit(&a);
	return ok;
}

#define CHECK_EMITS(v, ...) NS_CHECK(emits(v, PROG(__VA_ARGS__)))

NS_TEST(test_ax_asm__const_shortest_form)
{
	CHECK_EMITS(0, OP_C8, 0x00);
	CHECK_EMITS(255, OP_C8, 0xff);
	CHECK_EMITS(256, OP_C16, 0x01, 0x00);
	CHECK_EMITS(0xffff, OP_C16, 0xff, 0xff);
	CHECK_EMITS(0x10000, OP_C32, 0x00, 0x01, 0x00, 0x00);
	CHECK_EMITS(0xffffffffll, OP_C32, 0xff, 0xff, 0xff, 0xff);
	CHECK_EMITS(0x100000000ll, OP_C64, 0, 0, 0, 1, 0, 0, 0, 0);
	CHECK_EMITS(INT64_MAX, OP_C64, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
	/* negatives: narrowest const + ext n */
	CHECK_EMITS(-1, OP_C8, 0xff, OP_EXT, 8);
	CHECK_EMITS(-128, OP_C8, 0x80, OP_EXT, 8);
	CHECK_EMITS(-129, OP_C16, 0xff, 0x7f, OP_EXT, 16);
	CHECK_EMITS(-32768, OP_C16, 0x80, 0x00, OP_EXT, 16);
	CHECK_EMITS(-32769, OP_C32, 0xff, 0xff, 0x7f, 0xff, OP_EXT, 32);
	CHECK_EMITS(INT32_MIN, OP_C32, 0x80, 0x00, 0x00, 0x00, OP_EXT, 32);
	CHECK_EMITS((int64_t)INT32_MIN - 1, OP_C64, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff);
	CHECK_EMITS(INT64_MIN, OP_C64, 0x80, 0, 0, 0, 0, 0, 0, 0);
}

static int no_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	(void)ctx, (void)dst, (void)addr, (void)len;
	return -1;
}

NS_TEST(test_ax_asm__const_values_exact_when_run)
{
	static const int64_t vals[] = {0,          1,         -1,        127,       -128,
	                               200,        -200,      65535,     -65536,    1 << 30,
	                               -(1 << 30), INT32_MIN, INT32_MAX, 1ll << 40, -(1ll << 40),
	                               INT64_MIN,  INT64_MAX};
	struct ns_ax_env env = {.read_mem = no_mem};
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		struct ns_ax_asm a;
		ns_ax_asm_init(&a);
		ns_ax_emit_const(&a, vals[i]);
		ns_ax_emit(&a, NS_AX_END);
		size_t len;
		uint8_t *code = ns_ax_asm_steal(&a, &len);
		NS_CHECK(code != NULL);
		NS_CHECK(a.code == NULL && a.len == 0);
		NS_CHECK_OK(ns_ax_verify(code, len, NULL));
		struct ns_ax_result r;
		ns_ax_run(code, len, &env, &r);
		NS_CHECK_INT(r.status, NS_AX_OK);
		NS_CHECK_INT((int64_t)r.value, vals[i]);
		free(code);
	}
}

NS_TEST(test_ax_asm__jumps_and_immediates)
{
	struct ns_ax_asm a;
	ns_ax_asm_init(&a);
	ns_ax_emit_u16(&a, NS_AX_REG, 7);              /* 0: 26 00 07 */
	size_t j = ns_ax_emit_jump(&a, NS_AX_IF_GOTO); /* 3: 20 ?? ?? */
	ns_ax_emit_u8(&a, NS_AX_CONST8, 1);            /* 6: 22 01 */
	ns_ax_emit(&a, NS_AX_END);                     /* 8: 27 */
	ns_ax_patch_jump(&a, j, a.len);
	ns_ax_emit_u8(&a, NS_AX_CONST8, 2); /* 9: 22 02 */
	ns_ax_emit(&a, NS_AX_END);          /* 11: 27 */
	NS_CHECK_INT(j, 3);
	static const uint8_t want[] = {0x26, 0x00, 0x07, 0x20, 0x00, 0x09,
	                               0x22, 0x01, 0x27, 0x22, 0x02, 0x27};
	NS_CHECK_INT(a.len, sizeof(want));
	NS_CHECK(memcmp(a.code, want, sizeof(want)) == 0);
	/* a target that does not fit 16 bits fails the buffer */
	ns_ax_patch_jump(&a, j, 0x10000);
	NS_CHECK(a.oom);
	size_t len = 99;
	NS_CHECK(ns_ax_asm_steal(&a, &len) == NULL);
	NS_CHECK_INT(len, 0);
	ns_ax_asm_deinit(&a);
}

NS_TEST(test_ax_asm__disasm_listing)
{
	char *s = ns_ax_disasm(PROG(OP_REG, 0, 7, OP_C8, 8, OP_ADD, OP_REF32, OP_IF_GOTO, 0, 12,
	                            OP_C8, 0, OP_END, 0x99, OP_C32, 1));
	NS_CHECK_STR(s, "0000 reg 7\n"
	                "0003 const8 8\n"
	                "0005 add\n"
	                "0006 ref32\n"
	                "0007 if_goto 12\n"
	                "0010 const8 0\n"
	                "0012 end\n"
	                "0013 .byte 0x99\n"
	                "0014 const32 <truncated>\n");
	free(s);
	s = ns_ax_disasm(NULL, 0);
	NS_CHECK_STR(s, "");
	free(s);
	s = ns_ax_disasm(PROG(C64(0x8000000000000000ull), OP_TRACE16, 1, 2, OP_PICK, 3));
	NS_CHECK_STR(s, "0000 const64 9223372036854775808\n"
	                "0009 trace16 258\n"
	                "0012 pick 3\n");
	free(s);
}
