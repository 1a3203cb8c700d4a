/* Shared helpers for the core/dwarf tests: build the sample target with gcc and ask
 * independent tools (objdump, addr2line, readelf, gdb) for the answers. */
#ifndef NS_DWARF_TEST_UTIL_H
#define NS_DWARF_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/test.h"
#include "dwarf/dwarf.h"

enum tu_build { TU_O0, TU_O2, TU_O2_DWARF4, TU_NBUILDS };

static char tu_dir[64];
static char tu_bins[TU_NBUILDS][128];
static bool tu_built[TU_NBUILDS];

static inline void tu_cleanup(void)
{
	char cmd[128];
	if (tu_dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", tu_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cleanup of %s failed\n", tu_dir);
	}
}

static inline const char *tu_source(void)
{
	static char path[512];
	const char *src = getenv("NS_SOURCE_DIR");
	snprintf(path, sizeof(path), "%s/tests/targets/inventory.c", src ? src : "/work/main");
	return path;
}

static inline const char *tu_tmpdir(void)
{
	if (!tu_dir[0]) {
		snprintf(tu_dir, sizeof(tu_dir), "/tmp/ns_dwarf_test_%d", (int)getpid());
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "mkdir -p %s", tu_dir);
		if (system(cmd) != 0)
			return NULL;
		atexit(tu_cleanup);
	}
	return tu_dir;
}

/* Path of the sample built with @b, compiling it on first use; NULL on failure. */
static inline const char *tu_bin(enum tu_build b)
{
	static const char *names[] = {"inv_O0", "inv_O2", "inv_O2_d4"};
	static const char *flags[] = {"-O0", "-O2", "-O2 -gdwarf-4"};
	char cmd[1024];

	if (tu_built[b])
		return tu_bins[b];
	if (!tu_tmpdir())
		return NULL;
	snprintf(tu_bins[b], sizeof(tu_bins[b]), "%s/%s", tu_dir, names[b]);
	snprintf(cmd, sizeof(cmd), "gcc -g %s -pthread %s -o %s", flags[b], tu_source(),
	         tu_bins[b]);
	if (system(cmd) != 0)
		return NULL;
	tu_built[b] = true;
	return tu_bins[b];
}

/* Line number of the first source line containing @tag, 0 if none. */
static inline unsigned tu_tag_line(const char *tag)
{
	FILE *f = fopen(tu_source(), "r");
	char buf[512];
	unsigned n = 0, res = 0;

	if (!f)
		return 0;
	while (fgets(buf, sizeof(buf), f)) {
		n++;
		if (strstr(buf, tag)) {
			res = n;
			break;
		}
	}
	fclose(f);
	return res;
}

/* Text of source line @line (static buffer). */
static inline const char *tu_src_line(unsigned line)
{
	static char buf[512];
	FILE *f = fopen(tu_source(), "r");
	unsigned n = 0;

	buf[0] = 0;
	if (!f)
		return buf;
	while (fgets(buf, sizeof(buf), f) && ++n < line)
		;
	fclose(f);
	if (n != line)
		buf[0] = 0;
	return buf;
}

/* One row of `objdump --dwarf=decodedline` for inventory.c. */
struct tu_row {
	unsigned line;
	uint64_t addr;
	bool stmt;
};

/* All rows of @bin for the file named @base, in table order; *n rows; malloc'd. */
static inline struct tu_row *tu_objdump_rows_of(const char *bin, const char *base, size_t *n)
{
	char cmd[512];
	char *out, *line, *save = NULL;
	struct tu_row *rows = NULL;
	size_t cap = 0;

	*n = 0;
	snprintf(cmd, sizeof(cmd), "objdump --dwarf=decodedline %s", bin);
	out = ns_test_capture(cmd);
	if (!out)
		return NULL;
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[256];
		unsigned ln;
		unsigned long long addr;
		if (sscanf(line, "%255s %u 0x%llx", name, &ln, &addr) != 3)
			continue;
		if (strcmp(name, base) != 0)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 256;
			rows = realloc(rows, cap * sizeof(*rows));
		}
		size_t len = strlen(line);
		while (len && line[len - 1] == ' ')
			len--;
		rows[*n].line = ln;
		rows[*n].addr = addr;
		rows[*n].stmt = len && line[len - 1] == 'x';
		(*n)++;
	}
	free(out);
	return rows;
}

static inline struct tu_row *tu_objdump_rows(const char *bin, size_t *n)
{
	return tu_objdump_rows_of(bin, "inventory.c", n);
}

/* addr2line -f: function name and line of @addr. */
static inline bool tu_addr2line(const char *bin, uint64_t addr, char *func, size_t fcap,
                                unsigned *line)
{
	char cmd[512], *out, *nl, *colon;

	snprintf(cmd, sizeof(cmd), "addr2line -f -e %s 0x%llx", bin, (unsigned long long)addr);
	out = ns_test_capture(cmd);
	if (!out)
		return false;
	nl = strchr(out, '\n');
	if (!nl) {
		free(out);
		return false;
	}
	*nl = 0;
	snprintf(func, fcap, "%s", out);
	colon = strrchr(nl + 1, ':');
	*line = colon ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
	free(out);
	return true;
}

static inline struct ns_dwarf *tu_open(enum tu_build b)
{
	struct ns_dwarf *dw = NULL;
	const char *bin = tu_bin(b);

	NS_CHECK(bin != NULL);
	if (!bin)
		return NULL;
	NS_CHECK_OK(ns_dwarf_open(bin, &dw));
	return dw;
}

#endif
