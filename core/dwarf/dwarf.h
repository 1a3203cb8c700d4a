/* core/dwarf: ELF + DWARF of one binary through libdwarf (Debian's 20210528 API:
 * dwarf_init, dwarf_srclines_b). DWARF 4 and 5. Lazy: a query touches only the CUs
 * whose address ranges (or line-table file names) match.
 *
 * Addresses are link-time (as in the file); callers add the load bias of a PIE or
 * shared object themselves. Everything returned is owned by the ns_dwarf and valid
 * until ns_dwarf_destroy unless it says it comes from the caller's arena.
 * Not thread-safe: one thread at a time per ns_dwarf. */
#ifndef NS_DWARF_H
#define NS_DWARF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"

struct ns_dwarf;

/** Open the ELF file at @path (the binary, or a separate debug file) and its DWARF.
 * A file without .debug_info opens (ELF queries work) but DWARF queries return
 * NS_ERR_NOT_FOUND "no debug info in <path>". Corrupt input gives NS_ERR_FORMAT. */
struct ns_err *ns_dwarf_open(const char *path, struct ns_dwarf **out);
void ns_dwarf_destroy(struct ns_dwarf *dw);

/** Open the DWARF of the program @binary, wherever it is (like gdb's "Separate Debug
 * Files"): @binary itself if it has .debug_info; else, in this order, for each of the
 * @ndirs @dirs and then /usr/lib/debug, D/.build-id/xx/rest.debug (xx = first byte of
 * the build-id in hex); then by the .gnu_debuglink name N (its CRC32 checked):
 * dirname(binary)/N, dirname(binary)/.debug/N, each D/N, D/dirname(binary)/N,
 * /usr/lib/debug/dirname(binary)/N. A candidate whose build-id differs from the
 * binary's is skipped; if no matching file is found after one was skipped:
 * NS_ERR_INVALID "debug file F has build-id X but the program has build-id Y: refusing
 * mismatched debug info" (or "... CRC mismatch ..." for a debuglink file without a
 * build-id to compare). No debug info anywhere: NS_ERR_NOT_FOUND "no debug info for
 * <binary> (looked in: ...)".
 * With a separate file, DWARF queries (lines, scopes, types, call sites) read the debug
 * file and ELF/CFI queries (build-id, is_dyn, read_vaddr, eh_frame_hdr, cfa_at,
 * reg_rules_at) read @binary, whose .eh_frame a stripped program still has. */
struct ns_err *ns_dwarf_open_separate(const char *binary, const char *const *dirs, size_t ndirs,
                                      struct ns_dwarf **out);
/** The file the DWARF comes from: the binary or its separate debug file. */
const char *ns_dwarf_debug_path(struct ns_dwarf *dw);

/* ---- ELF ---- */

/** GNU build-id bytes (NT_GNU_BUILD_ID) or 0 if none; *@out borrowed. */
size_t ns_dwarf_build_id(struct ns_dwarf *dw, const uint8_t **out);
/** True for ET_DYN (PIE or shared object): runtime addresses = link + load bias. */
bool ns_dwarf_is_dyn(struct ns_dwarf *dw);
/** Copy file-backed bytes of the loaded image at link-time @vaddr (PT_LOAD filesz
 * part only); returns bytes copied (0..len), stopping at the first byte not in the
 * file. Used to read .rodata/.text without the target. */
size_t ns_dwarf_read_vaddr(struct ns_dwarf *dw, uint64_t vaddr, void *dst, size_t len);
/** Link-time address and size of the PT_GNU_EH_FRAME segment (.eh_frame_hdr). */
struct ns_err *ns_dwarf_eh_frame_hdr(struct ns_dwarf *dw, uint64_t *vaddr, uint64_t *size);

/* ---- Lines ---- */

struct ns_dwarf_bp_loc {
	uint64_t addr; /* link-time address where the tracepoint goes */
	unsigned line; /* line of that address (== the resolved line) */
	unsigned column;
	const char *function; /* enclosing subprogram or inlined subroutine name */
	bool inlined;         /* inside an inlined copy */
};

struct ns_dwarf_bp_lines {
	const char *file; /* full path of the matched file as the line table names it */
	unsigned line;    /* resolved line: the requested one, or the next with code */
	size_t n;
	struct ns_dwarf_bp_loc *locs; /* sorted by address; from @arena */
};

/** Where a breakpoint on @file:@line goes (DESIGN.md, "Where a line's tracepoint
 * goes"): the line's is_stmt rows; the first address of each contiguous run of rows
 * for the line; per function or inlined copy one run per lexical block (the lowest),
 * except runs that start at the same column as another kept run (duplicated code),
 * which are all kept; every inlined copy separately. A line without code moves to the
 * next line with code in the same function. @file matches a line-table file by full
 * path, or by trailing path components ("inventory.c", "src/x.c").
 * Errors: NS_ERR_NOT_FOUND "no file <file> in <binary>"; NS_ERR_NOT_FOUND "line N
 * has no code (past the end of <function|file>)". */
struct ns_err *ns_dwarf_breakpoint_addrs(struct ns_dwarf *dw, const char *file, unsigned line,
                                         struct ns_arena *arena, struct ns_dwarf_bp_lines *out);

struct ns_dwarf_where {
	const char *function; /* innermost (inlined) function name, or ELF symbol, or NULL */
	const char *file;     /* full path, or NULL if no line info */
	unsigned line, column;
	uint64_t func_low; /* start of the (outermost) subprogram, 0 if unknown */
};

/** Function, file and line for link-time @addr (the row whose range contains it). */
struct ns_err *ns_dwarf_where(struct ns_dwarf *dw, uint64_t addr, struct ns_arena *arena,
                              struct ns_dwarf_where *out);

/** Link-time ranges [lo, hi) of the subprogram containing link-time @addr (the
 * outermost one for inlined code): its body and any .cold parts; the ELF symbol's
 * extent without DWARF. Writes at most @max pairs to @ranges (lo, hi, lo, hi, ...) and
 * returns how many; 0 if unknown. */
size_t ns_dwarf_func_ranges(struct ns_dwarf *dw, uint64_t addr, uint64_t *ranges, size_t max);

/* ---- Types ---- */

enum ns_dwarf_type_kind {
	NS_DT_VOID,
	NS_DT_BASE, /* integer, char, bool: see is_signed/is_char/is_bool */
	NS_DT_FLOAT,
	NS_DT_POINTER,
	NS_DT_STRUCT,
	NS_DT_UNION,
	NS_DT_ARRAY,
	NS_DT_ENUM,
	NS_DT_TYPEDEF,
	NS_DT_CONST,
	NS_DT_VOLATILE,
	NS_DT_FUNC, /* subroutine type (for function pointers) */
};

struct ns_dwarf_member {
	const char *name;              /* NULL for an anonymous struct/union member */
	uint64_t offset;               /* byte offset in the parent */
	unsigned bit_size, bit_offset; /* bit fields: bit_size > 0, bit_offset from the low bit of
	                                  the storage unit at offset */
	struct ns_dwarf_type *type;
};

struct ns_dwarf_enumerator {
	const char *name;
	int64_t value;
};

struct ns_dwarf_type {
	enum ns_dwarf_type_kind kind;
	const char *name; /* "int", "item" (tag name without "struct "), typedef name; NULL if
	                     anonymous */
	uint64_t size;    /* bytes; 0 for void/function/incomplete */
	bool is_signed, is_char, is_bool;
	bool incomplete;              /* declaration only */
	struct ns_dwarf_type *target; /* pointer/typedef/const/volatile target, array element,
	                                 enum underlying type; NULL means void */
	uint64_t count;               /* arrays: element count of the first dimension */
	bool count_known;
	size_t nmembers;
	struct ns_dwarf_member *members;
	size_t nenums;
	struct ns_dwarf_enumerator *enums;
};

/** Strip typedefs, const and volatile. NULL stays NULL. */
const struct ns_dwarf_type *ns_dwarf_type_strip(const struct ns_dwarf_type *t);
/** C spelling ("const struct item *", "short [3]") in @arena. */
char *ns_dwarf_type_name(const struct ns_dwarf_type *t, struct ns_arena *arena);
/** A named type as C spells it ("int", "unsigned long", "struct item", "enum kind",
 * a typedef name), searched in the CU containing link-time @pc first. NULL if none. */
struct ns_dwarf_type *ns_dwarf_find_type(struct ns_dwarf *dw, const char *name, uint64_t pc);

/* ---- Variables and scopes ---- */

enum ns_dwarf_var_kind { NS_DWARF_PARAM, NS_DWARF_LOCAL, NS_DWARF_GLOBAL };

struct ns_dwarf_var {
	const char *name;
	enum ns_dwarf_var_kind kind;
	struct ns_dwarf_type *type;
	/* DWARF location expression valid at the query pc (the matching location-list
	 * entry already chosen), raw DW_OP bytes. loc_len == 0 and !has_const: optimized out. */
	const uint8_t *loc;
	size_t loc_len;
	bool has_const; /* DW_AT_const_value */
	int64_t const_value;
	unsigned decl_line;
};

struct ns_dwarf_scope {
	uint64_t pc;               /* link-time */
	const char *function;      /* innermost function (an inlined one if pc is inside it) */
	const uint8_t *frame_base; /* DW_AT_frame_base of the enclosing subprogram at pc */
	size_t frame_base_len;
	/* Variables visible at pc: innermost lexical block first, then outer blocks, then
	 * the function's parameters (in declaration order) and its outermost locals. A
	 * name may appear twice (shadowing): the first one wins. Only variables whose
	 * block's ranges contain pc are listed. */
	size_t nvars;
	struct ns_dwarf_var *vars;
	size_t nparams_first; /* unused by callers; for debugging */
};

/** Variables in scope at link-time @pc, location lists resolved for @pc. Arrays from
 * @arena; types owned by @dw. NS_ERR_NOT_FOUND if no function contains @pc. */
struct ns_err *ns_dwarf_scope_at(struct ns_dwarf *dw, uint64_t pc, struct ns_arena *arena,
                                 struct ns_dwarf_scope *out);
/** A global or file-static variable @name (statics of the CU containing @pc win). */
struct ns_err *ns_dwarf_global(struct ns_dwarf *dw, const char *name, uint64_t pc,
                               struct ns_arena *arena, struct ns_dwarf_var *out);

/* ---- Call frame information ---- */

struct ns_dwarf_cfa {
	unsigned reg;   /* DWARF register number (7 = rsp, 6 = rbp) */
	int64_t offset; /* CFA = reg + offset */
};

/** The CFA rule at link-time @pc from .eh_frame (or .debug_frame). NS_ERR_UNSUPPORTED
 * if the rule is a DWARF expression; NS_ERR_NOT_FOUND if no FDE covers @pc. */
struct ns_err *ns_dwarf_cfa_at(struct ns_dwarf *dw, uint64_t pc, struct ns_dwarf_cfa *out);

/* ---- Entry values: call sites and register rules ---- */

/** A parameter register of a call site and the value it held at the call. */
struct ns_dwarf_call_param {
	unsigned dwarf_reg;   /* DW_AT_location was this single DW_OP_regN */
	const uint8_t *value; /* DW_AT_call_value (DW_AT_GNU_call_site_value): a DWARF
	                       * expression in the caller's frame at the call whose result
	                       * is the value itself */
	size_t value_len;
};

/** A direct call (DW_TAG_call_site / DW_TAG_GNU_call_site) of some subprogram. */
struct ns_dwarf_call_site {
	uint64_t return_pc;             /* link-time */
	struct ns_dwarf_cfa caller_cfa; /* CFA rule of the caller at return_pc - 1 */
	bool caller_cfa_known;
	const uint8_t *caller_frame_base; /* DW_AT_frame_base of the calling subprogram */
	size_t caller_frame_base_len;
	size_t nparams;
	struct ns_dwarf_call_param *params; /* only parameters located in one register */
};

/** The call sites, anywhere in the program (all CUs), of the subprogram containing
 * link-time @pc (the outermost one if @pc is in inlined code). Sites match by the
 * callee DIE (through DW_AT_abstract_origin / DW_AT_specification), by the low_pc of
 * the call's origin, or by name for a declaration of an external function. Sites
 * without a DW_AT_call_origin (indirect calls) are not listed. Zero sites is not an
 * error. Results are cached per callee and owned by @dw (@arena is unused today).
 * Errors: NS_ERR_NOT_FOUND if no subprogram contains @pc. */
struct ns_err *ns_dwarf_call_sites(struct ns_dwarf *dw, uint64_t pc, struct ns_arena *arena,
                                   const struct ns_dwarf_call_site **out, size_t *n);

enum ns_dwarf_reg_rule_kind {
	NS_DWARF_RULE_SAME, /* same value as in the caller (also: no rule at all) */
	NS_DWARF_RULE_UNDEFINED,
	NS_DWARF_RULE_OFFSET, /* the caller's value is saved at CFA + offset */
	NS_DWARF_RULE_OTHER,  /* val_offset, register, expression: not handled */
};

struct ns_dwarf_reg_rule {
	enum ns_dwarf_reg_rule_kind kind;
	int64_t offset; /* NS_DWARF_RULE_OFFSET */
};

/** The rules of DWARF registers 0..16 (16 = return address) at link-time @pc, from the
 * same CFI as ns_dwarf_cfa_at. NS_ERR_NOT_FOUND if no FDE covers @pc. */
struct ns_err *ns_dwarf_reg_rules_at(struct ns_dwarf *dw, uint64_t pc,
                                     struct ns_dwarf_reg_rule out[17]);

#endif
