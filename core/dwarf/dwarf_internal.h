/* core/dwarf internals shared by the dwarf_*.c files. Never included from outside
 * core/dwarf: libdwarf and libelf types stay out of the public header. */
#ifndef NS_DWARF_INTERNAL_H
#define NS_DWARF_INTERNAL_H

#include <dwarf.h>
#include <gelf.h>
#include <libdwarf.h>
#include <libelf.h>

#include "dwarf/dwarf.h"

struct ns_dwarf__range {
	uint64_t lo, hi; /* [lo, hi) */
};

/* A DIE that owns code: DW_TAG_subprogram, DW_TAG_inlined_subroutine or
 * DW_TAG_lexical_block with address ranges. */
struct ns_dwarf__node {
	Dwarf_Off off;
	int tag;
	int parent;       /* index in the CU's node array, -1 for top level */
	const char *name; /* functions: own name or the abstract origin's */
	unsigned decl_line;
	size_t nranges;
	struct ns_dwarf__range *ranges;
	uint64_t low; /* DW_AT_low_pc, else the lowest range start */
};

struct ns_dwarf__row {
	uint64_t addr;
	unsigned line, column;
	unsigned file; /* index into the CU's fnames */
	bool stmt, end_seq;
};

struct ns_dwarf__cu {
	Dwarf_Off die_off; /* global offset of the CU DIE */
	unsigned version;
	const char *name;
	size_t nranges;
	struct ns_dwarf__range *ranges;

	bool files_loaded; /* dwarf_srcfiles: cheap, header only */
	size_t nfiles;
	const char **files;

	bool lines_loaded;
	size_t nrows;
	struct ns_dwarf__row *rows; /* line-table order: sequences as emitted */
	size_t nfnames;
	const char **fnames; /* distinct dwarf_linesrc() names */

	bool nodes_loaded;
	size_t nnodes;
	struct ns_dwarf__node *nodes; /* parents before children */
};

struct ns_dwarf__sym {
	uint64_t addr, size;
	const char *name;
};

struct ns_dwarf__phdr {
	uint32_t type;
	uint64_t vaddr, filesz, memsz, offset;
};

struct ns_dwarf__tslot {
	Dwarf_Off off;
	struct ns_dwarf_type *type;
};

/* One direct call site of the program (dwarf_calls.c index). */
struct ns_dwarf__csite {
	uint64_t return_pc;
	Dwarf_Off caller;     /* enclosing DW_TAG_subprogram (for its frame base) */
	Dwarf_Off root;       /* call origin after abstract_origin/specification hops */
	uint64_t origin_low;  /* low_pc of the origin, 0 if none */
	const char *decl_name; /* origin is an external declaration: its name */
	size_t nparams;
	struct ns_dwarf_call_param *params;
};

struct ns_dwarf__callee {
	Dwarf_Off off; /* the callee's subprogram DIE */
	size_t n;
	struct ns_dwarf_call_site *sites;
};

struct ns_dwarf {
	char *path;
	int fd;
	Elf *elf;
	Dwarf_Debug dbg; /* NULL when the file has no DWARF */
	bool is_dyn;
	uint64_t file_size;
	struct ns_arena arena; /* everything the ns_dwarf owns */

	const uint8_t *build_id;
	size_t build_id_len;

	size_t nphdrs;
	struct ns_dwarf__phdr *phdrs;

	bool syms_loaded;
	size_t nsyms;
	struct ns_dwarf__sym *syms; /* STT_FUNC, sorted by addr */

	bool cus_loaded;
	size_t ncus;
	struct ns_dwarf__cu *cus;

	size_t tcap, tcount; /* open-addressing map DIE offset -> type */
	struct ns_dwarf__tslot *tslots;
	struct ns_dwarf_type void_type;

	bool fde_loaded;
	Dwarf_Cie *cie_data;
	Dwarf_Signed cie_count;
	Dwarf_Fde *fde_data;
	Dwarf_Signed fde_count;
	bool fde_is_eh;
	Dwarf_Cie *dcie_data; /* .debug_frame, if present */
	Dwarf_Signed dcie_count;
	Dwarf_Fde *dfde_data;
	Dwarf_Signed dfde_count;

	bool csites_loaded;
	size_t ncsites, csites_cap;
	struct ns_dwarf__csite *csites; /* malloc'd; params in arena */
	size_t ncallees, callees_cap;
	struct ns_dwarf__callee *callees; /* malloc'd cache of ns_dwarf_call_sites */

	/* The program itself when the DWARF is in a separate debug file (@path):
	 * owned; ELF queries go to it, and cie_data/fde_data (.eh_frame) were read
	 * through exe->dbg (dwarf_debuglink.c). */
	struct ns_dwarf *exe;
};

/* ---- dwarf_open.c ---- */

/** NS_ERR_FORMAT "<what>: <libdwarf message>"; deallocates @e. */
struct ns_err *ns_dwarf__err(struct ns_dwarf *dw, Dwarf_Error e, const char *what);
/** Drop a libdwarf error we decided to tolerate. */
void ns_dwarf__drop(struct ns_dwarf *dw, Dwarf_Error e);
/** NS_ERR_NOT_FOUND "no debug info in <path>" if the file has no DWARF. */
struct ns_err *ns_dwarf__need_dwarf(struct ns_dwarf *dw);
/** Index of all CU headers (one pass over the headers only, cached). */
struct ns_err *ns_dwarf__load_cus(struct ns_dwarf *dw);
/** The CU whose ranges contain @pc, or NULL. */
struct ns_dwarf__cu *ns_dwarf__cu_at(struct ns_dwarf *dw, uint64_t pc);
/** DIE at global offset @off (caller deallocates with dwarf_dealloc_die). */
struct ns_err *ns_dwarf__offdie(struct ns_dwarf *dw, Dwarf_Off off, Dwarf_Die *out);
/** Address ranges of @die (low/high pc or DW_AT_ranges) in dw->arena; *n = 0 if none. */
struct ns_err *ns_dwarf__die_ranges(struct ns_dwarf *dw, Dwarf_Die die, uint64_t cu_base,
                                    struct ns_dwarf__range **out, size_t *n);
bool ns_dwarf__ranges_contain(const struct ns_dwarf__range *r, size_t n, uint64_t pc);
/** Attribute helpers: false if absent or unreadable (errors are dropped). */
bool ns_dwarf__attr_udata(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, uint64_t *out);
bool ns_dwarf__attr_sdata(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, int64_t *out);
bool ns_dwarf__attr_flag(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at);
bool ns_dwarf__attr_ref(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, Dwarf_Off *out);
/** Name of @die copied into dw->arena, following abstract_origin/specification. */
const char *ns_dwarf__die_name(struct ns_dwarf *dw, Dwarf_Die die);
/** @at of @die or of its abstract origin / specification (up to a few hops). */
bool ns_dwarf__attr_udata_o(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, uint64_t *out);
bool ns_dwarf__attr_ref_o(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, Dwarf_Off *out);
/** ELF FUNC symbol containing @addr, or NULL. */
const struct ns_dwarf__sym *ns_dwarf__sym_at(struct ns_dwarf *dw, uint64_t addr);
/** Bytes of ELF section @name (decompressed if needed); borrowed from the Elf. */
struct ns_err *ns_dwarf__section(struct ns_dwarf *dw, const char *name, const uint8_t **data,
                                 size_t *size);
/** Growable array helper: ensure room for @need elements; false on OOM. */
bool ns_dwarf__grow(void **p, size_t *cap, size_t need, size_t elem);

/** Callback of ns_dwarf__for_each_child: @child (with tag @tag) is borrowed and freed
 * after the call. Return NULL to go on, an error to stop with it, or NS_DWARF__STOP to
 * stop early without error. */
typedef struct ns_err *(*ns_dwarf__child_fn)(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag,
                                             void *ctx);
extern struct ns_err ns_dwarf__stop;
#define NS_DWARF__STOP (&ns_dwarf__stop)
/** Call @fn on each direct child of @parent in order, owning the child DIEs; stops at the
 * first error (NULL when @fn returned NS_DWARF__STOP). A failing dwarf_child gives
 * "<what>: <libdwarf message>". */
struct ns_err *ns_dwarf__for_each_child(struct ns_dwarf *dw, Dwarf_Die parent, const char *what,
                                        ns_dwarf__child_fn fn, void *ctx);

/* ---- dwarf_lines.c ---- */

struct ns_err *ns_dwarf__load_lines(struct ns_dwarf *dw, struct ns_dwarf__cu *cu);
struct ns_err *ns_dwarf__load_nodes(struct ns_dwarf *dw, struct ns_dwarf__cu *cu);
/** Innermost node of @cu containing @pc, or -1. */
int ns_dwarf__node_at(const struct ns_dwarf__cu *cu, uint64_t pc);

/* ---- dwarf_types.c ---- */

/** Type of the DIE at @off (cached); NULL type means void. */
struct ns_err *ns_dwarf__type_at(struct ns_dwarf *dw, Dwarf_Off off, struct ns_dwarf_type **out);
/** Type named by DW_AT_type of @die (via its origin); void type if absent. */
struct ns_err *ns_dwarf__die_type(struct ns_dwarf *dw, Dwarf_Die die, struct ns_dwarf_type **out);

/* ---- dwarf_scope.c ---- */

/** Location of attribute @at of @die valid at @pc: raw DW_OP bytes in @arena.
 * *len = 0 when none covers pc or the attribute is absent. */
struct ns_err *ns_dwarf__location(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, uint64_t pc,
                                  struct ns_arena *arena, const uint8_t **out, size_t *len);

#endif
