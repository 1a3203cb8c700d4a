/* Helpers shared by the expr tests that run over real DWARF (expr_dwarf_test.c,
 * expr_entry_test.c): reading files, finding a tagged source line, and the scope's
 * global/type lookup callbacks backed by a struct ns_dwarf (the callback ctx). */
#ifndef NS_EXPR_TEST_DWARF_UTIL_H
#define NS_EXPR_TEST_DWARF_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/test.h"
#include "dwarf/dwarf.h"
#include "expr/expr.h"

static inline char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(1 << 20);
	size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
	fclose(f);
	if (buf)
		buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

static inline unsigned tag_line(const char *src, const char *tag)
{
	size_t len;
	char *text = read_file(src, &len);
	unsigned line = 0;
	if (!text)
		return 0;
	char *p = strstr(text, tag);
	if (p) {
		line = 1;
		for (char *q = text; q < p; q++)
			line += *q == '\n';
	}
	free(text);
	return line;
}

struct dw_ctx {
	struct ns_dwarf *dw;
	uint64_t pc;
};

static inline struct ns_err *lookup_global(void *ctx, const char *name, struct ns_arena *arena,
                                           struct ns_dwarf_var *out)
{
	struct dw_ctx *c = ctx;
	return ns_dwarf_global(c->dw, name, c->pc, arena, out);
}

static inline struct ns_dwarf_type *lookup_type(void *ctx, const char *name)
{
	struct dw_ctx *c = ctx;
	return ns_dwarf_find_type(c->dw, name, c->pc);
}

#endif
