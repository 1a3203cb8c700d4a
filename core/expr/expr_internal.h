/* core/expr private declarations: the AST shared by the parser (expr_parse.c), the
 * compiler (expr_compile.c) and the location translator (expr_loc.c). Never included
 * from outside core/expr (tests excepted). */
#ifndef NS_EXPR_INTERNAL_H
#define NS_EXPR_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "ax/ax.h"
#include "base/arena.h"
#include "base/err.h"
#include "dwarf/dwarf.h"
#include "expr/expr.h"

enum ns_expr__node_kind {
	NS_EN_IDENT,  /* name */
	NS_EN_INT,    /* ival, itype */
	NS_EN_STRING, /* name holds the decoded bytes */
	NS_EN_MEMBER, /* lhs . name */
	NS_EN_ARROW,  /* lhs -> name */
	NS_EN_INDEX,  /* lhs [ rhs ] */
	NS_EN_UNARY,  /* op lhs: '*', '&', '-', '+', '!', '~' */
	NS_EN_CAST,   /* ( tname ) lhs */
	NS_EN_SIZEOF, /* sizeof lhs, or sizeof ( tname ) when lhs is NULL */
	NS_EN_BINARY, /* lhs op rhs */
	NS_EN_COND,   /* cond ? lhs : rhs */
};

/* Binary operators; also used as token kinds for the punctuators. */
enum ns_expr__op {
	NS_OP_NONE,
	NS_OP_MUL,
	NS_OP_DIV,
	NS_OP_MOD,
	NS_OP_ADD,
	NS_OP_SUB,
	NS_OP_SHL,
	NS_OP_SHR,
	NS_OP_LT,
	NS_OP_LE,
	NS_OP_GT,
	NS_OP_GE,
	NS_OP_EQ,
	NS_OP_NE,
	NS_OP_BAND,
	NS_OP_BXOR,
	NS_OP_BOR,
	NS_OP_LAND,
	NS_OP_LOR,
	NS_OP_COMMA,
};

/* A type name as written in a cast or sizeof: a base spelling plus pointer levels. */
struct ns_expr__tname {
	const char *base; /* canonical: "int", "unsigned long", "struct item", "size_t" */
	unsigned nptr;
	int column;
};

/* The integer types of literals (the compiler maps them to its builtin types). */
enum ns_expr__itype { NS_IT_INT, NS_IT_UINT, NS_IT_LONG, NS_IT_ULONG };

struct ns_expr__node {
	enum ns_expr__node_kind kind;
	int column; /* 1-based column of the node's operator or first token */
	int op;     /* enum ns_expr__op for BINARY, a character for UNARY */
	const char *name;
	size_t name_len; /* STRING: byte count */
	uint64_t ival;
	enum ns_expr__itype itype;
	struct ns_expr__tname tname;
	struct ns_expr__node *lhs, *rhs, *cond;
};

/** Is identifier @name a type name (typedef) in the compiler's context? */
typedef bool (*ns_expr__is_type_fn)(void *ctx, const char *name);

/** Parse @src into an AST in @arena. @is_type may be NULL (no typedef names).
 * Errors: NS_ERR_SYNTAX with column. */
struct ns_err *ns_expr__parse(const char *src, ns_expr__is_type_fn is_type, void *ctx,
                              struct ns_arena *arena, struct ns_expr__node **out);

/** Fully parenthesized text of @n, for tests ("(a + (b * c))"). In @arena. */
char *ns_expr__node_str(const struct ns_expr__node *n, struct ns_arena *arena);

/** Spelling of binary operator @op ("<<"). */
const char *ns_expr__op_str(int op);

/** GDB amd64 register number for DWARF x86-64 register @dwreg, or -1. */
int ns_expr__dwarf_reg(unsigned dwreg);

/** Emit code computing a DWARF location into @a (see ns_expr_compile_location).
 * @collect: trace every memory read (DW_OP_deref). @piece_out: size of a trailing
 * DW_OP_piece or 0. @name names the variable in errors (may be NULL). */
struct ns_err *ns_expr__emit_location(struct ns_ax_asm *a, const uint8_t *loc, size_t loc_len,
                                      const uint8_t *frame_base, size_t frame_base_len,
                                      const struct ns_expr_scope *scope, bool collect,
                                      const char *name, enum ns_expr_value_kind *kind,
                                      uint64_t *piece_out);

/** Finish @a with END, verify and copy the code into @arena. @a stays the caller's. */
struct ns_err *ns_expr__finish(struct ns_ax_asm *a, struct ns_arena *arena, uint8_t **code,
                               size_t *len);

/** Strip typedefs, const and volatile (local copy of ns_dwarf_type_strip). */
const struct ns_dwarf_type *ns_expr__strip(const struct ns_dwarf_type *t);

#endif
