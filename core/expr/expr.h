/* core/expr: C expressions (logpoint {values}, conditions, watch/hover) parsed,
 * type-checked against the DWARF scope at one address, and compiled to agent-
 * expression bytecode (core/ax). One compiler serves the target side (conditions and
 * collections run in the agent) and the adapter side (the same bytecode re-run over a
 * captured frame).
 *
 * Supported: identifiers (locals, parameters, globals, enumerators), integer / char /
 * string literals, . -> [] , unary * & - ! ~ + , casts to base types, typedefs and
 * pointers (including "struct T *"), * / % + - << >> < <= > >= == != & ^ | && || ,
 * parentheses. Usual arithmetic conversions of C on 64-bit values.
 * Errors carry a 1-based column (struct ns_err.column) and name the offending token. */
#ifndef NS_EXPR_H
#define NS_EXPR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"
#include "dwarf/dwarf.h"

/* What the compiler needs to know about the place the expression runs. Plain data
 * plus callbacks, so tests can build scopes by hand. */
struct ns_expr_scope {
	const struct ns_dwarf_scope *locals; /* may be NULL (globals only) */
	/** Look up a global/static; NS_ERR_NOT_FOUND if none. May be NULL. */
	struct ns_err *(*lookup_global)(void *ctx, const char *name, struct ns_arena *arena,
					struct ns_dwarf_var *out);
	/** Look up a type by C spelling ("struct item", "size_t"); NULL if none. May be NULL. */
	struct ns_dwarf_type *(*lookup_type)(void *ctx, const char *name);
	void *ctx;
	uint64_t load_bias; /* runtime address = link-time address (DW_OP_addr) + load_bias */
	/* CFA rule at this pc (for DW_OP_call_frame_cfa frame bases). */
	bool cfa_known;
	unsigned cfa_reg; /* DWARF register number */
	int64_t cfa_offset;
	/* For DW_OP_entry_value (GDB's "entry values"): the call sites of the function
	 * (ns_dwarf_call_sites) and the register rules at this pc (ns_dwarf_reg_rules_at),
	 * which say where the caller's callee-saved registers are. Empty: entry values
	 * are optimized out. */
	const struct ns_dwarf_call_site *call_sites;
	size_t ncall_sites;
	bool reg_rules_known;
	struct ns_dwarf_reg_rule reg_rules[17];
};

enum ns_expr_value_kind {
	NS_EXPR_LVALUE, /* the program leaves the object's runtime address on the stack */
	NS_EXPR_RVALUE, /* the program leaves the value (scalar, <= 8 bytes, zero- or sign-extended per type) */
};

struct ns_expr_prog {
	uint8_t *code; /* verified bytecode in @arena */
	size_t len;
	enum ns_expr_value_kind kind;
	const struct ns_dwarf_type *type; /* type of the result (never NULL; may be a void type) */
};

enum ns_expr_flags {
	/* Insert trace ops so that running the program in the target records every byte
	 * it reads (GDB's "collect expr"), and the bytes of the result: an lvalue's whole
	 * object (capped at 4096 bytes), a char pointer's string (tracenz, up to 256
	 * bytes). Re-running the plain program over the frame then reproduces the value. */
	NS_EXPR_COLLECT = 1u << 0,
	/* Make the result a truth value (0/1) for a condition; rejects non-scalar results. */
	NS_EXPR_CONDITION = 1u << 1,
};

/** Compile @src. On error: NS_ERR_SYNTAX / NS_ERR_TYPE with column (e.g. "no member
 * 'nosuchfield' in struct item" at the member's column; "no symbol 'x' in scope"),
 * NS_ERR_OPTIMIZED_OUT ("'x' is optimized out here"). */
struct ns_err *ns_expr_compile(const char *src, const struct ns_expr_scope *scope,
			       enum ns_expr_flags flags, struct ns_arena *arena,
			       struct ns_expr_prog *out);

/** Bytecode that records a variable for a snapshot: its object (or register value, via
 * the frame's registers), and, following pointers to @depth levels (also through
 * struct/union members and array elements), the pointees; char pointers and char
 * arrays as strings up to @string_max bytes. Total recorded bytes per variable are
 * capped at @byte_budget. Never faults the target: unreadable pointees are skipped.
 * Returns NS_ERR_OPTIMIZED_OUT for a variable without a location. */
struct ns_err *ns_expr_compile_collect_var(const struct ns_dwarf_var *var,
					   const struct ns_expr_scope *scope, unsigned depth,
					   unsigned string_max, unsigned byte_budget,
					   struct ns_arena *arena, uint8_t **code, size_t *len);

/** Compile a DWARF location expression (as in ns_dwarf_var.loc) alone: the program
 * leaves the runtime address (kind LVALUE) or the value (RVALUE: DW_OP_regN,
 * DW_OP_stack_value, DW_OP_implicit_value <= 8 bytes). Supports DW_OP_addr, fbreg,
 * bregN, regN, lit, const*, plus_uconst, plus/minus/and/or/shl/shr/mul/neg, deref,
 * call_frame_cfa, stack_value, and a single DW_OP_piece covering the whole value.
 * Anything else: NS_ERR_OPTIMIZED_OUT. Used by ns_expr_compile and by the adapter to
 * locate variables in a snapshot. @frame_base: the function's DW_AT_frame_base. */
struct ns_err *ns_expr_compile_location(const uint8_t *loc, size_t loc_len,
					const uint8_t *frame_base, size_t frame_base_len,
					const struct ns_expr_scope *scope, struct ns_arena *arena,
					uint8_t **code, size_t *len, enum ns_expr_value_kind *kind);

#endif
