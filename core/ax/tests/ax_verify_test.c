/* Verifier edge cases, checked by error code and message (offsets computed by hand). */
#include <stdlib.h>

#include "ax_test_util.h"

/* Expect verification of the program to fail with NS_ERR_INVALID and a message that
 * starts with @prefix and contains @part. */
#define CHECK_BAD(prefix, part, ...)                                                               \
	do {                                                                                       \
		struct ns_err *e_ = ns_ax_verify(PROG(__VA_ARGS__), NULL);                         \
		if (!e_) {                                                                         \
			ns_test_fail(__FILE__, __LINE__, "verified, expected \"%s...%s\"", prefix, \
			             part);                                                        \
			break;                                                                     \
		}                                                                                  \
		NS_CHECK_INT(e_->code, NS_ERR_INVALID);                                            \
		if (strncmp(e_->msg, prefix, strlen(prefix)) != 0 || !strstr(e_->msg, part))       \
			ns_test_fail(__FILE__, __LINE__, "message \"%s\", expected \"%s...%s\"",   \
			             e_->msg, prefix, part);                                       \
		ns_err_destroy(e_);                                                                \
	} while (0)

static unsigned depth_of(const uint8_t *code, size_t len)
{
	unsigned d = 999;
	NS_CHECK_OK(ns_ax_verify(code, len, &d));
	return d;
}

NS_TEST(test_ax_verify__valid_program_max_depth)
{
	NS_CHECK_INT(depth_of(PROG(OP_C8, 1, OP_C8, 2, OP_ADD, OP_END)), 2);
	NS_CHECK_INT(depth_of(PROG(OP_END)), 0);
	NS_CHECK_INT(depth_of(PROG(OP_C8, 1, OP_C8, 2, OP_C8, 3, OP_ROT, OP_PICK, 2, OP_END)), 4);
	NS_CHECK_OK(ns_ax_verify(PROG(OP_REG, 0, 25, OP_END), NULL)); /* fs_base... gs_base */
	/* every opcode of the manual we implement, each used once */
	NS_CHECK_OK(ns_ax_verify(
	        PROG(C16(0x1000), OP_C8, 4, OP_TRACE, C16(0x1000), OP_TRACE_QUICK, 4, OP_TRACE16, 0,
	             8, OP_C8, 8, OP_TRACENZ, OP_TRACEV, 0, 0, OP_GETV, 0, 0, OP_SETV, 0, 0, OP_C32,
	             0, 0, 0, 1, OP_ADD, C64(2), OP_SUB, OP_C8, 3, OP_MUL, OP_C8, 3, OP_DIV_S,
	             OP_C8, 3, OP_DIV_U, OP_C8, 3, OP_REM_S, OP_C8, 3, OP_REM_U, OP_C8, 1, OP_LSH,
	             OP_C8, 1, OP_RSH_S, OP_C8, 1, OP_RSH_U, OP_LOG_NOT, OP_C8, 1, OP_AND, OP_C8, 1,
	             OP_OR, OP_C8, 1, OP_XOR, OP_NOT, OP_C8, 1, OP_EQUAL, OP_C8, 1, OP_LESS_S,
	             OP_C8, 1, OP_LESS_U, OP_EXT, 8, OP_ZERO_EXT, 8, OP_REF8, OP_REF16, OP_REF32,
	             OP_REF64, OP_DUP, OP_SWAP, OP_POP, OP_IF_GOTO, 0, 103, OP_GOTO, 0, 103,
	             OP_END),
	        NULL));
}

NS_TEST(test_ax_verify__stack_underflow)
{
	CHECK_BAD("offset 0: stack underflow", "add", OP_ADD, OP_END);
	CHECK_BAD("offset 2: stack underflow", "sub needs 2", OP_C8, 1, OP_SUB, OP_END);
	CHECK_BAD("offset 0: stack underflow", "pop", OP_POP, OP_END);
	CHECK_BAD("offset 4: stack underflow", "rot", OP_C8, 1, OP_C8, 1, OP_ROT, OP_END);
	CHECK_BAD("offset 0: stack underflow", "if_goto", OP_IF_GOTO, 0, 3, OP_END);
	/* pick n needs n+1 items */
	CHECK_BAD("offset 2: stack underflow", "pick", OP_C8, 1, OP_PICK, 1, OP_END);
	NS_CHECK_OK(ns_ax_verify(PROG(OP_C8, 1, OP_PICK, 0, OP_END), NULL));
	/* trace pops addr and size */
	CHECK_BAD("offset 2: stack underflow", "trace", OP_C8, 1, OP_TRACE, OP_END);
	CHECK_BAD("offset 0: stack underflow", "trace_quick", OP_TRACE_QUICK, 4, OP_END);
}

NS_TEST(test_ax_verify__stack_overflow)
{
	uint8_t code[200];
	size_t n = 0;
	for (int i = 0; i < 64; i++) {
		code[n++] = OP_C8;
		code[n++] = (uint8_t)i;
	}
	code[n++] = OP_END;
	unsigned d = 0;
	NS_CHECK_OK(ns_ax_verify(code, n, &d)); /* exactly 64 is allowed */
	NS_CHECK_INT(d, 64);
	code[n - 1] = OP_C8; /* the 65th push, at offset 128 */
	code[n++] = 1;
	code[n++] = OP_END;
	struct ns_err *e = ns_ax_verify(code, n, NULL);
	NS_CHECK(e != NULL);
	if (e) {
		NS_CHECK_INT(e->code, NS_ERR_INVALID);
		NS_CHECK_STR(e->msg,
		             "offset 128: stack overflow (const8 makes depth 65, limit 64)");
		ns_err_destroy(e);
	}
}

NS_TEST(test_ax_verify__jump_into_immediate)
{
	/* 0: const8 0; 2: if_goto 6; 5: const16 0x2700; 8: end -- 6 is the 0x27 inside the
	 * const16 immediate: a valid "end" byte, but not an instruction boundary. */
	CHECK_BAD("offset ", "inside", OP_C8, 0, OP_IF_GOTO, 0, 6, OP_C16, 0x27, 0x00, OP_END);
	/* the same through goto, where the immediate is decoded first on the fall path:
	 * 0: const8 0; 2: if_goto 9; 5: const16 0x2700 (imm at 6,7); 8: end; 9: goto 6 */
	CHECK_BAD("offset ", "inside", OP_C8, 0, OP_IF_GOTO, 0, 9, OP_C16, 0x27, 0x00, OP_END,
	          OP_GOTO, 0, 6);
	/* a jump into the middle of its own immediate */
	CHECK_BAD("offset 0: jump target 1 is inside", "", OP_GOTO, 0, 1);
}

NS_TEST(test_ax_verify__jump_past_end)
{
	CHECK_BAD("offset 0: jump target 100 is past the end", "length 4", OP_GOTO, 0, 100, OP_END);
	CHECK_BAD("offset 2: jump target 6 is past the end", "", OP_C8, 1, OP_IF_GOTO, 0, 6,
	          OP_END);
	/* target == length: still outside */
	CHECK_BAD("offset 0: jump target 3 is past the end", "", OP_GOTO, 0, 3);
}

NS_TEST(test_ax_verify__missing_end)
{
	CHECK_BAD("offset 2: code ends without end", "", OP_C8, 1, OP_C8, 2);
	/* the fall-through path of an if_goto runs off the end */
	CHECK_BAD("offset 2: code ends without end", "", OP_C8, 1, OP_IF_GOTO, 0, 0);
	/* bytes after an end that no path reaches are ignored */
	NS_CHECK_OK(ns_ax_verify(PROG(OP_END, 0xff, 0xff), NULL));
}

NS_TEST(test_ax_verify__unknown_and_unsupported_opcodes)
{
	CHECK_BAD("offset 2: unknown opcode 0x99", "", OP_C8, 1, 0x99, OP_END);
	CHECK_BAD("offset 0: unknown opcode 0x00", "", 0x00, OP_END);
	CHECK_BAD("offset 0: unknown opcode 0x31", "", 0x31, OP_END);
	CHECK_BAD("offset 0: float is not supported", "", OP_FLOAT, OP_END);
	CHECK_BAD("offset 0: printf is not supported", "", OP_PRINTF, OP_END);
	/* ref_float, ref_double, ref_long_double, l_to_d, d_to_l: not in the table */
	CHECK_BAD("offset 3: unknown opcode 0x1b", "", C16(0x1000), OP_REF_FLOAT, OP_END);
	CHECK_BAD("offset 3: unknown opcode 0x1c", "", C16(0x1000), 0x1c, OP_END);
	CHECK_BAD("offset 3: unknown opcode 0x1d", "", C16(0x1000), 0x1d, OP_END);
	CHECK_BAD("offset 2: unknown opcode 0x1e", "", OP_C8, 1, OP_L_TO_D, OP_END);
	CHECK_BAD("offset 2: unknown opcode 0x1f", "", OP_C8, 1, OP_D_TO_L, OP_END);
}

NS_TEST(test_ax_verify__truncated_immediate)
{
	CHECK_BAD("offset 2: const32 needs 4 immediate bytes, only 2 left", "", OP_C8, 1, OP_C32, 0,
	          0);
	CHECK_BAD("offset 0: const64 needs 8", "", OP_C64, 1, 2, 3, 4, 5, 6, 7);
	CHECK_BAD("offset 0: goto needs 2", "", OP_GOTO, 0);
	CHECK_BAD("offset 0: reg needs 2 immediate bytes, only 0 left", "", OP_REG);
}

NS_TEST(test_ax_verify__inconsistent_depth_at_join)
{
	/* 0: const8 1; 2: if_goto 7 (depth 0 after); 5: const8 5 (depth 1); 7: end
	 * offset 7 is reached with depth 0 (jump) and 1 (fall through) */
	CHECK_BAD("offset 7: stack depth ", "on another", OP_C8, 1, OP_IF_GOTO, 0, 7, OP_C8, 5,
	          OP_END);
	/* a loop that pushes one item per round: 0: const8 1; 2: goto 0 */
	CHECK_BAD("offset 0: stack depth ", "on another", OP_C8, 1, OP_GOTO, 0, 0);
	/* balanced join is fine: 0: const8 1; 2: if_goto 8; 5: const8 5; 7: pop; 8: end */
	NS_CHECK_OK(ns_ax_verify(PROG(OP_C8, 1, OP_IF_GOTO, 0, 8, OP_C8, 5, OP_POP, OP_END), NULL));
	/* a loop with a constant depth verifies (the step limit bounds it at run time) */
	NS_CHECK_OK(ns_ax_verify(PROG(OP_GOTO, 0, 0), NULL));
}

NS_TEST(test_ax_verify__empty_and_bad_register)
{
	struct ns_err *e = ns_ax_verify((const uint8_t *)"", 0, NULL);
	NS_CHECK(e != NULL);
	if (e) {
		NS_CHECK_INT(e->code, NS_ERR_INVALID);
		NS_CHECK_STR(e->msg, "offset 0: empty program");
		ns_err_destroy(e);
	}
	CHECK_BAD("offset 0: register 26 out of range", "", OP_REG, 0, 26, OP_END);
	CHECK_BAD("offset 2: register 256 out of range", "", OP_C8, 0, OP_REG, 1, 0, OP_END);
}
