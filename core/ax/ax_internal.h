/* core/ax private declarations: the opcode property table derived from NS_AX_OPCODES.
 * Never included from outside core/ax. */
#ifndef NS_AX_INTERNAL_H
#define NS_AX_INTERNAL_H

#include <stdint.h>

#include "ax/ax.h"

struct ns_ax__op_info {
	const char *name; /* upper-case table name, e.g. "IF_GOTO"; NULL: not an opcode */
	uint8_t imm;      /* immediate bytes after the opcode byte */
	uint8_t pops, pushes;
	uint8_t runnable; /* 1 if the interpreter executes it (FLOAT is in the table but not) */
};

/* Indexed by opcode byte; defined in ax_interp_sig.c (a constant table, signal-safe). */
extern const struct ns_ax__op_info ns_ax__ops[256];

/* Big-endian immediate of @n bytes at @p (GDB manual: "Bytecode Descriptions"). */
static inline uint64_t ns_ax__imm(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

#endif
