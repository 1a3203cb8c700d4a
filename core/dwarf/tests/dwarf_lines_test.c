/* core/dwarf lines, where, ELF queries and corrupt input, checked against objdump,
 * addr2line, readelf and gdb on the sample target built here with gcc. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>

#include "dwarf_test_util.h"

static const char *const tags[] = {"TAG_RESTOCK", "TAG_BINS", "TAG_COUNT", "TAG_WEIGH_RETURN",
                                   "TAG_HEAVY"};

static bool is_stmt_row(const struct tu_row *rows, size_t n, unsigned line, uint64_t addr)
{
	for (size_t i = 0; i < n; i++)
		if (rows[i].stmt && rows[i].line == line && rows[i].addr == addr)
			return true;
	return false;
}

/* Distinct addresses of objdump's is_stmt rows for @line. */
static size_t stmt_addrs(const struct tu_row *rows, size_t n, unsigned line, uint64_t *lowest)
{
	size_t cnt = 0;

	*lowest = UINT64_MAX;
	for (size_t i = 0; i < n; i++) {
		bool dup = false;
		if (!rows[i].stmt || rows[i].line != line)
			continue;
		for (size_t j = 0; j < i; j++)
			dup |= rows[j].stmt && rows[j].line == line && rows[j].addr == rows[i].addr;
		if (!dup)
			cnt++;
		if (rows[i].addr < *lowest)
			*lowest = rows[i].addr;
	}
	return cnt;
}

/* gdb's address for `break inventory.c:LINE` (one location). */
static uint64_t gdb_break_addr(const char *bin, unsigned line)
{
	char cmd[512], *out, *p;
	uint64_t a = 0;

	snprintf(cmd, sizeof(cmd), "gdb -nx -batch -ex 'break inventory.c:%u' %s 2>/dev/null", line,
	         bin);
	out = ns_test_capture(cmd);
	if (out && (p = strstr(out, " at 0x")) != NULL)
		a = strtoull(p + 4, NULL, 16);
	free(out);
	return a;
}

static void check_tags(enum tu_build b)
{
	const char *bin = tu_bin(b);
	struct ns_dwarf *dw = tu_open(b);
	struct tu_row *rows;
	size_t nrows;
	struct ns_arena a;

	if (!dw)
		return;
	ns_arena_init(&a);
	rows = tu_objdump_rows(bin, &nrows);
	NS_CHECK(nrows > 0);
	for (size_t t = 0; t < sizeof(tags) / sizeof(tags[0]); t++) {
		unsigned line = tu_tag_line(tags[t]);
		struct ns_dwarf_bp_lines bl;
		uint64_t lowest;
		size_t nstmt = stmt_addrs(rows, nrows, line, &lowest);

		NS_CHECK(line > 0);
		NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "inventory.c", line, &a, &bl));
		NS_CHECK_INT(bl.line, line);
		NS_CHECK(bl.n >= 1);
		NS_CHECK(bl.file && strcmp(bl.file, tu_source()) == 0);
		printf("  %s %s line %u:", bin, tags[t], line);
		for (size_t i = 0; i < bl.n; i++) {
			printf(" 0x%llx", (unsigned long long)bl.locs[i].addr);
			NS_CHECK(is_stmt_row(rows, nrows, line, bl.locs[i].addr));
			NS_CHECK_INT(bl.locs[i].line, line);
			NS_CHECK_STR(bl.locs[i].function, strcmp(tags[t], "TAG_WEIGH_RETURN") == 0
			                                          ? "weigh"
			                                          : "restock");
			if (i)
				NS_CHECK(bl.locs[i].addr > bl.locs[i - 1].addr);
		}
		printf("\n");
		// gdb's single address is always among ours (it is the lowest run).
		uint64_t g = gdb_break_addr(bin, line);
		bool has = false;
		for (size_t i = 0; i < bl.n; i++)
			has |= bl.locs[i].addr == g;
		NS_CHECK(has);
		if (b == TU_O0) {
			NS_CHECK_INT(bl.n, 1);
			NS_CHECK_INT(bl.locs[0].addr, lowest);
		}
		// The -O2 return is emitted on two paths: objdump shows two is_stmt
		// addresses for the line, and each copy needs the tracepoint.
		if (strcmp(tags[t], "TAG_WEIGH_RETURN") == 0 && b != TU_O0 && nstmt > 1)
			NS_CHECK(bl.n > 1);
	}
	free(rows);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_lines__tags_O0)
{
	check_tags(TU_O0);
}

NS_TEST(test_dwarf_lines__tags_O2)
{
	check_tags(TU_O2);
}

NS_TEST(test_dwarf_lines__tags_O2_dwarf4)
{
	check_tags(TU_O2_DWARF4);
}

/* atol() from <stdlib.h> is inlined twice into worker at -O2: each copy gets its own
 * address, each an is_stmt row of that line in objdump. */
NS_TEST(test_dwarf_lines__inlined_copies)
{
	const char *bin = tu_bin(TU_O2);
	struct ns_dwarf *dw = tu_open(TU_O2);
	struct tu_row *rows;
	size_t nrows, ncopies = 0;
	struct ns_arena a;
	struct ns_dwarf_bp_lines bl;
	char cmd[512], *out, *p;
	unsigned line = 0;

	if (!dw)
		return;
	ns_arena_init(&a);
	// The line of atol's body ("return strtol (...)"), as gdb lists it.
	snprintf(cmd, sizeof(cmd), "gdb -nx -batch -ex 'info line atol' %s 2>/dev/null", bin);
	out = ns_test_capture(cmd);
	p = out ? strstr(out, "Line ") : NULL;
	NS_CHECK(p != NULL);
	if (p)
		line = (unsigned)strtoul(p + 5, NULL, 10);
	free(out);
	rows = tu_objdump_rows_of(bin, "stdlib.h", &nrows);
	NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "stdlib.h", line, &a, &bl));
	NS_CHECK(bl.file && strstr(bl.file, "/stdlib.h"));
	for (size_t i = 0; i < bl.n; i++) {
		NS_CHECK(is_stmt_row(rows, nrows, bl.line, bl.locs[i].addr));
		NS_CHECK_STR(bl.locs[i].function, "atol");
		NS_CHECK(bl.locs[i].inlined);
		ncopies++;
	}
	// Two getenv/atol calls in worker: two inlined copies.
	NS_CHECK_INT(ncopies, 2);
	free(rows);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

/* A blank or comment-only line inside worker moves to the next line with code. */
static void check_blank(enum tu_build b)
{
	const char *bin = tu_bin(b);
	struct ns_dwarf *dw = tu_open(b);
	unsigned start = tu_tag_line("static void *worker"), end = tu_tag_line("return NULL;");
	unsigned blank = 0, expect = 0;
	struct tu_row *rows;
	size_t nrows;
	struct ns_arena a;
	struct ns_dwarf_bp_lines bl;

	if (!dw)
		return;
	ns_arena_init(&a);
	for (unsigned l = start + 2; l < end && !blank; l++) {
		const char *s = tu_src_line(l);
		if (strspn(s, " \t\n") == strlen(s))
			blank = l;
	}
	NS_CHECK(blank > 0);
	rows = tu_objdump_rows(bin, &nrows);
	for (size_t i = 0; i < nrows; i++)
		if (rows[i].stmt && rows[i].line > blank && (!expect || rows[i].line < expect))
			expect = rows[i].line;
	NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "tests/targets/inventory.c", blank, &a, &bl));
	NS_CHECK_INT(bl.line, expect);
	NS_CHECK(bl.n >= 1);
	for (size_t i = 0; i < bl.n; i++)
		NS_CHECK(is_stmt_row(rows, nrows, expect, bl.locs[i].addr));
	free(rows);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_lines__blank_line_moves_down)
{
	check_blank(TU_O0);
	check_blank(TU_O2);
}

NS_TEST(test_dwarf_lines__no_code)
{
	struct ns_dwarf *dw = tu_open(TU_O2);
	struct ns_arena a;
	struct ns_dwarf_bp_lines bl;
	struct ns_err *err;
	unsigned weigh_end = tu_tag_line("TAG_WEIGH_RETURN") + 1; // "}"

	if (!dw)
		return;
	ns_arena_init(&a);
	err = ns_dwarf_breakpoint_addrs(dw, "inventory.c", 999, &a, &bl);
	NS_CHECK(err && err->code == NS_ERR_NOT_FOUND);
	NS_CHECK(err && strstr(err->msg, "line 999 has no code"));
	ns_err_destroy(err);
	// The blank line between weigh() and restock() is past the end of weigh.
	err = ns_dwarf_breakpoint_addrs(dw, "inventory.c", weigh_end + 1, &a, &bl);
	NS_CHECK(err && err->code == NS_ERR_NOT_FOUND);
	NS_CHECK(err && strstr(err->msg, "past the end of weigh"));
	ns_err_destroy(err);
	err = ns_dwarf_breakpoint_addrs(dw, "nosuchfile.c", 10, &a, &bl);
	NS_CHECK(err && err->code == NS_ERR_NOT_FOUND);
	NS_CHECK(err && strstr(err->msg, "no file nosuchfile.c"));
	ns_err_destroy(err);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

static void check_where(enum tu_build b)
{
	const char *bin = tu_bin(b);
	struct ns_dwarf *dw = tu_open(b);
	struct tu_row *rows;
	size_t nrows, checked = 0;
	struct ns_arena a;

	if (!dw)
		return;
	ns_arena_init(&a);
	rows = tu_objdump_rows(bin, &nrows);
	// Every 3rd row start and the byte after it (inside the row's range).
	for (size_t i = 0; i < nrows; i += 3) {
		for (int d = 0; d < 2; d++) {
			uint64_t addr = rows[i].addr + (uint64_t)d;
			struct ns_dwarf_where w;
			char func[256];
			unsigned line;
			if (!tu_addr2line(bin, addr, func, sizeof(func), &line))
				continue;
			NS_CHECK_OK(ns_dwarf_where(dw, addr, &a, &w));
			NS_CHECK_STR(w.function, func);
			if (w.line != line)
				printf("  addr 0x%llx\n", (unsigned long long)addr);
			NS_CHECK_INT(w.line, line);
			NS_CHECK(w.func_low != 0 && w.func_low <= addr);
			checked++;
		}
	}
	NS_CHECK(checked > 20);
	free(rows);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_lines__where_vs_addr2line)
{
	check_where(TU_O0);
	check_where(TU_O2);
	check_where(TU_O2_DWARF4);
}

NS_TEST(test_dwarf_lines__build_id)
{
	const char *bin = tu_bin(TU_O2);
	struct ns_dwarf *dw = tu_open(TU_O2);
	char cmd[512], *out, *p, hex[128] = "";
	const uint8_t *id;
	size_t n;

	if (!dw)
		return;
	snprintf(cmd, sizeof(cmd), "readelf -n %s", bin);
	out = ns_test_capture(cmd);
	p = out ? strstr(out, "Build ID: ") : NULL;
	NS_CHECK(p != NULL);
	if (p)
		sscanf(p + 10, "%127[0-9a-f]", hex);
	free(out);
	n = ns_dwarf_build_id(dw, &id);
	NS_CHECK_INT(n * 2, strlen(hex));
	for (size_t i = 0; i < n && i * 2 + 1 < strlen(hex); i++) {
		unsigned byte;
		sscanf(hex + i * 2, "%2x", &byte);
		NS_CHECK_INT(id[i], byte);
	}
	NS_CHECK(ns_dwarf_is_dyn(dw)); // Debian's gcc builds PIE by default
	ns_dwarf_destroy(dw);
}

/* Section @name's address and file offset from readelf -S -W. */
static bool section_of(const char *bin, const char *name, uint64_t *addr, uint64_t *off)
{
	char cmd[512], *out, *p;
	bool ok = false;

	snprintf(cmd, sizeof(cmd), "readelf -S -W %s", bin);
	out = ns_test_capture(cmd);
	p = out ? strstr(out, name) : NULL;
	if (p) {
		char type[64];
		unsigned long long a, o;
		if (sscanf(p + strlen(name), " %63s %llx %llx", type, &a, &o) == 3) {
			*addr = a;
			*off = o;
			ok = true;
		}
	}
	free(out);
	return ok;
}

NS_TEST(test_dwarf_lines__read_vaddr_rodata)
{
	const char *bin = tu_bin(TU_O2);
	struct ns_dwarf *dw = tu_open(TU_O2);
	uint64_t sec_addr = 0, sec_off = 0, vaddr;
	char buf[16] = "";
	FILE *f;
	char *data;
	long size;

	if (!dw)
		return;
	NS_CHECK(section_of(bin, " .rodata ", &sec_addr, &sec_off));
	f = fopen(bin, "rb");
	NS_CHECK(f != NULL);
	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	data = malloc((size_t)size);
	NS_CHECK(fread(data, 1, (size_t)size, f) == (size_t)size);
	fclose(f);
	char *hit = memmem(data, (size_t)size, "north", 6);
	NS_CHECK(hit != NULL);
	if (hit) {
		vaddr = sec_addr + (uint64_t)(hit - data) - sec_off;
		NS_CHECK_INT(ns_dwarf_read_vaddr(dw, vaddr, buf, 6), 6);
		NS_CHECK_STR(buf, "north");
	}
	// Past every PT_LOAD: nothing.
	NS_CHECK_INT(ns_dwarf_read_vaddr(dw, 0x7fff00000000ull, buf, 4), 0);
	free(data);

	uint64_t hv = 0, hs = 0, sa = 0, so = 0;
	NS_CHECK_OK(ns_dwarf_eh_frame_hdr(dw, &hv, &hs));
	NS_CHECK(section_of(bin, " .eh_frame_hdr ", &sa, &so));
	NS_CHECK_INT(hv, sa);
	NS_CHECK(hs > 0);
	ns_dwarf_destroy(dw);
}

/* Run every query on a damaged file: errors are fine, crashes are not. */
static int poke_all(const char *path)
{
	struct ns_dwarf *dw = NULL;
	struct ns_err *err = ns_dwarf_open(path, &dw);
	struct ns_arena a;
	int errors = 0;

	if (err) {
		NS_CHECK(err->code == NS_ERR_FORMAT || err->code == NS_ERR_NOT_FOUND);
		ns_err_destroy(err);
		return 1;
	}
	ns_arena_init(&a);
	for (uint64_t pc = 0x1000; pc < 0x1600; pc += 0x40) {
		struct ns_dwarf_where w;
		struct ns_dwarf_scope s;
		struct ns_dwarf_cfa c;
		struct ns_dwarf_bp_lines bl;
		struct ns_err *e;
		if ((e = ns_dwarf_where(dw, pc, &a, &w)) != NULL) {
			errors++;
			ns_err_destroy(e);
		}
		if ((e = ns_dwarf_scope_at(dw, pc, &a, &s)) != NULL) {
			errors++;
			ns_err_destroy(e);
		}
		if ((e = ns_dwarf_cfa_at(dw, pc, &c)) != NULL) {
			errors++;
			ns_err_destroy(e);
		}
		if ((e = ns_dwarf_breakpoint_addrs(dw, "inventory.c", (unsigned)(pc >> 4) % 90, &a,
		                                   &bl)) != NULL) {
			errors++;
			ns_err_destroy(e);
		}
	}
	ns_dwarf_find_type(dw, "struct item", 0x1200);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
	return errors;
}

static void copy_file(const char *from, const char *to, long keep)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	char buf[4096];
	size_t n;
	long done = 0;

	while (in && out && (keep < 0 || done < keep) && (n = fread(buf, 1, sizeof(buf), in)) > 0) {
		if (keep >= 0 && done + (long)n > keep)
			n = (size_t)(keep - done);
		fwrite(buf, 1, n, out);
		done += (long)n;
	}
	if (in)
		fclose(in);
	if (out)
		fclose(out);
}

NS_TEST(test_dwarf_lines__corrupt_input)
{
	const char *bin = tu_bin(TU_O2);
	char path[256];
	struct stat st;
	FILE *f;

	NS_CHECK(bin && stat(bin, &st) == 0);
	if (!bin)
		return;
	// Random bytes: not ELF.
	snprintf(path, sizeof(path), "%s/random.bin", tu_tmpdir());
	f = fopen(path, "wb");
	srand(12345);
	for (int i = 0; i < 65536; i++)
		fputc(rand() & 0xff, f);
	fclose(f);
	struct ns_dwarf *dw = NULL;
	struct ns_err *err = ns_dwarf_open(path, &dw);
	NS_CHECK(err && err->code == NS_ERR_FORMAT);
	ns_err_destroy(err);

	// Truncated copies: headers intact, sections cut off.
	for (int k = 1; k <= 7; k++) {
		snprintf(path, sizeof(path), "%s/trunc%d.bin", tu_tmpdir(), k);
		copy_file(bin, path, (long)st.st_size * k / 8);
		NS_CHECK(poke_all(path) > 0);
	}
	// Garbage over the DWARF sections (fixed seed), file size unchanged.
	static const char *const secs[] = {" .debug_info ", " .debug_line ", " .debug_loclists ",
	                                   " .debug_abbrev ", " .eh_frame "};
	for (size_t s = 0; s < sizeof(secs) / sizeof(secs[0]); s++) {
		uint64_t addr, off;
		if (!section_of(bin, secs[s], &addr, &off))
			continue;
		for (int round = 0; round < 3; round++) {
			snprintf(path, sizeof(path), "%s/garbled.bin", tu_tmpdir());
			copy_file(bin, path, -1);
			f = fopen(path, "r+b");
			srand((unsigned)(77 + s * 10 + (size_t)round));
			for (int i = 0; i < 40; i++) {
				fseek(f, (long)off + (long)(rand() % 400), SEEK_SET);
				fputc(rand() & 0xff, f);
			}
			fclose(f);
			poke_all(path); // must not crash; results may be right or errors
		}
	}
}

/* ns_dwarf_func_ranges against `nm -S` (symbol start and size) for the sample's
 * functions, from an address in the middle of each. */
NS_TEST(test_dwarf_lines__func_ranges_match_nm)
{
	for (enum tu_build b = TU_O0; b < TU_NBUILDS; b++) {
		const char *bin = tu_bin(b);
		struct ns_dwarf *dw = NULL;
		NS_CHECK_OK(ns_dwarf_open(bin, &dw));
		if (!dw)
			continue;
		const char *funcs[] = {"weigh", "restock", "worker"};
		for (size_t i = 0; i < 3; i++) {
			char cmd[512];
			snprintf(cmd, sizeof(cmd), "nm -S %s | awk '$4 == \"%s\" {print $1, $2}'",
			         bin, funcs[i]);
			char *out = ns_test_capture(cmd);
			unsigned long long start = 0, size = 0;
			NS_CHECK(out && sscanf(out, "%llx %llx", &start, &size) == 2);
			free(out);
			uint64_t r[8];
			size_t n = ns_dwarf_func_ranges(dw, start + size / 2, r, 4);
			NS_CHECK(n >= 1);
			NS_CHECK(n >= 1 && r[0] == start && r[1] == start + size);
		}
		uint64_t r[2];
		NS_CHECK_INT(ns_dwarf_func_ranges(dw, 0x10, r, 1), 0);
		ns_dwarf_destroy(dw);
	}
}
