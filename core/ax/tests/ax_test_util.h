/* Shared helpers for the core/ax tests. Opcode bytes are written out from the GDB
 * manual ("Bytecode Descriptions"), not taken from ax.h, so the tests also check the
 * header's table. */
#ifndef NS_AX_TEST_UTIL_H
#define NS_AX_TEST_UTIL_H

#include "ax/ax.h"
#include "base/test.h"

enum {
	OP_FLOAT = 0x01,
	OP_ADD = 0x02,
	OP_SUB = 0x03,
	OP_MUL = 0x04,
	OP_DIV_S = 0x05,
	OP_DIV_U = 0x06,
	OP_REM_S = 0x07,
	OP_REM_U = 0x08,
	OP_LSH = 0x09,
	OP_RSH_S = 0x0a,
	OP_RSH_U = 0x0b,
	OP_TRACE = 0x0c,
	OP_TRACE_QUICK = 0x0d,
	OP_LOG_NOT = 0x0e,
	OP_AND = 0x0f,
	OP_OR = 0x10,
	OP_XOR = 0x11,
	OP_NOT = 0x12,
	OP_EQUAL = 0x13,
	OP_LESS_S = 0x14,
	OP_LESS_U = 0x15,
	OP_EXT = 0x16,
	OP_REF8 = 0x17,
	OP_REF16 = 0x18,
	OP_REF32 = 0x19,
	OP_REF64 = 0x1a,
	OP_REF_FLOAT = 0x1b,
	OP_L_TO_D = 0x1e,
	OP_D_TO_L = 0x1f,
	OP_IF_GOTO = 0x20,
	OP_GOTO = 0x21,
	OP_C8 = 0x22,
	OP_C16 = 0x23,
	OP_C32 = 0x24,
	OP_C64 = 0x25,
	OP_REG = 0x26,
	OP_END = 0x27,
	OP_DUP = 0x28,
	OP_POP = 0x29,
	OP_ZERO_EXT = 0x2a,
	OP_SWAP = 0x2b,
	OP_GETV = 0x2c,
	OP_SETV = 0x2d,
	OP_TRACEV = 0x2e,
	OP_TRACENZ = 0x2f,
	OP_TRACE16 = 0x30,
	OP_PICK = 0x32,
	OP_ROT = 0x33,
	OP_PRINTF = 0x34,
};

/* const64 with a big-endian 64-bit immediate */
#define C64(v)                                                                  \
	OP_C64, (uint8_t)((uint64_t)(v) >> 56), (uint8_t)((uint64_t)(v) >> 48), \
	        (uint8_t)((uint64_t)(v) >> 40), (uint8_t)((uint64_t)(v) >> 32), \
	        (uint8_t)((uint64_t)(v) >> 24), (uint8_t)((uint64_t)(v) >> 16), \
	        (uint8_t)((uint64_t)(v) >> 8), (uint8_t)(uint64_t)(v)
#define C16(v) OP_C16, (uint8_t)((v) >> 8), (uint8_t)(v)

#define PROG(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

#endif
