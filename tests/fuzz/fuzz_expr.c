/* Fuzz target: the C expression parser and type checker (globals-only scope with one
 * struct-typed global, so member access, casts and arithmetic are exercised). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "expr/expr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

const char *const ns_fuzz_seeds[] = {
	"it->next->next->id == 3 && (long)g.count > -1",
	"g.bins[2] * 3 % 7 << 2 | ~g.count",
	"(char *)g.label",
	"!(g.count >= 4) || g.bins[1] + 'a' != 0x10",
	"sizeof(int) ? g.count : -1",
	"((((((g",
};
const size_t ns_fuzz_nseeds = sizeof(ns_fuzz_seeds) / sizeof(ns_fuzz_seeds[0]);

static struct ns_dwarf_type t_int = {.kind = NS_DT_BASE, .name = "int", .size = 4, .is_signed = true};
static struct ns_dwarf_type t_short = {.kind = NS_DT_BASE, .name = "short", .size = 2, .is_signed = true};
static struct ns_dwarf_type t_char = {.kind = NS_DT_BASE, .name = "char", .size = 1, .is_signed = true, .is_char = true};
static struct ns_dwarf_type t_charp = {.kind = NS_DT_POINTER, .size = 8, .target = &t_char};
static struct ns_dwarf_type t_bins = {.kind = NS_DT_ARRAY, .size = 6, .target = &t_short, .count = 3, .count_known = true};
static struct ns_dwarf_member m_shelf[] = {
	{"label", 0, 0, 0, &t_charp},
	{"count", 8, 0, 0, &t_int},
	{"bins", 12, 0, 0, &t_bins},
};
static struct ns_dwarf_type t_shelf = {.kind = NS_DT_STRUCT, .name = "shelf", .size = 24, .nmembers = 3, .members = m_shelf};
static const uint8_t loc_g[] = {0x03, 0x40, 0x40, 0, 0, 0, 0, 0, 0}; /* DW_OP_addr 0x4040 */

static struct ns_err *lookup_global(void *ctx, const char *name, struct ns_arena *arena,
				    struct ns_dwarf_var *out)
{
	(void)ctx;
	(void)arena;
	if (strcmp(name, "g") != 0)
		return ns_err_create(NS_ERR_NOT_FOUND, "no symbol '%s'", name);
	*out = (struct ns_dwarf_var){.name = "g", .kind = NS_DWARF_GLOBAL, .type = &t_shelf,
				     .loc = loc_g, .loc_len = sizeof(loc_g)};
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *src = malloc(size + 1);
	if (!src)
		return 0;
	memcpy(src, data, size);
	src[size] = 0;
	struct ns_expr_scope scope = {.lookup_global = lookup_global};
	for (unsigned flags = 0; flags < 4; flags++) {
		struct ns_arena a;
		ns_arena_init(&a);
		struct ns_expr_prog prog;
		struct ns_err *err = ns_expr_compile(src, &scope, (enum ns_expr_flags)flags, &a, &prog);
		ns_err_destroy(err);
		ns_arena_deinit(&a);
	}
	free(src);
	return 0;
}
