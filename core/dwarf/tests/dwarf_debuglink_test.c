/* core/dwarf separate debug files: the sample target is built with gcc, split with
 * objcopy (--only-keep-debug, --strip-debug, --add-gnu-debuglink) and the answers
 * through the debug file are checked against the unstripped binary, readelf and
 * objdump. */
#include <stdarg.h>
#include <sys/stat.h>

#include "dwarf_test_util.h"

static char *sh_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sh_out(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return ns_test_capture(cmd);
}

static bool sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) == 0)
		return true;
	ns_test_fail(__FILE__, __LINE__, "command failed: %s", cmd);
	return false;
}

/* Build-id of @bin in hex per `readelf -n`, "" if none (static buffer per slot). */
static const char *readelf_build_id(const char *bin, char buf[128])
{
	char *out = sh_out("readelf -n %s 2>/dev/null", bin), *p;

	buf[0] = 0;
	if (out && (p = strstr(out, "Build ID: ")) != NULL)
		sscanf(p + 10, "%127[0-9a-f]", buf);
	free(out);
	return buf;
}

/* The split files, made once in the test's temp dir:
 *   inv_O2            unstripped (-g -O2)
 *   split/inv         stripped, .gnu_debuglink -> inv.debug
 *   split/inv.debug   objcopy --only-keep-debug of inv_O2
 *   other/inv.debug   the debug file of a different build (-DNS_OTHER_BUILD) */
static char d_root[256], d_full[300], d_strip[300], d_debug[300], d_other[300];
static char d_nolink[300], id_prog[128], id_other[128];
static bool d_ready;

static bool setup(void)
{
	const char *full = tu_bin(TU_O2), *t = tu_tmpdir();

	if (d_ready)
		return true;
	NS_CHECK(full && t);
	if (!full || !t)
		return false;
	snprintf(d_root, sizeof(d_root), "%s/dl", t);
	snprintf(d_full, sizeof(d_full), "%s", full);
	snprintf(d_strip, sizeof(d_strip), "%s/split/inv", d_root);
	snprintf(d_debug, sizeof(d_debug), "%s/split/inv.debug", d_root);
	snprintf(d_other, sizeof(d_other), "%s/other/inv.debug", d_root);
	snprintf(d_nolink, sizeof(d_nolink), "%s/nolink/inv", d_root);
	// --add-gnu-debuglink reads the debug file (for its CRC) from the cwd.
	if (!sh("mkdir -p %s/split %s/other %s/nolink && cd %s/split && "
	        "objcopy --only-keep-debug %s inv.debug && "
	        "objcopy --strip-debug --add-gnu-debuglink=inv.debug %s inv && "
	        "objcopy --strip-debug %s %s",
	        d_root, d_root, d_root, d_root, full, full, full, d_nolink))
		return false;
	// -D alone changes nothing gcc emits: the extra symbol makes the build-id differ.
	if (!sh("cd %s/other && gcc -g -O2 -DNS_OTHER_BUILD -Wl,--defsym=ns_other_build=1 "
	        "-pthread %s -o inv && "
	        "objcopy --only-keep-debug inv inv.debug",
	        d_root, tu_source()))
		return false;
	readelf_build_id(full, id_prog);
	readelf_build_id(d_other, id_other);
	NS_CHECK(id_prog[0] != 0);
	NS_CHECK(id_other[0] != 0);
	NS_CHECK(strcmp(id_prog, id_other) != 0);
	if (!id_prog[0] || !id_other[0] || !strcmp(id_prog, id_other))
		return false;
	d_ready = true;
	return true;
}

/* A fresh directory under the test dir holding a copy of the stripped binary
 * (@which: d_strip or d_nolink); its path in @bin. */
static bool fresh(const char *name, const char *which, char *bin, size_t cap)
{
	snprintf(bin, cap, "%s/%s/inv", d_root, name);
	return sh("rm -rf %s/%s && mkdir -p %s/%s && cp %s %s", d_root, name, d_root, name, which,
	          bin);
}

/* Put @file at <@dir>/.build-id/xx/rest.debug for the program's build-id. */
static bool put_build_id(const char *dir, const char *file)
{
	return sh("mkdir -p %s/.build-id/%.2s && cp %s %s/.build-id/%.2s/%s.debug", dir, id_prog,
	          file, dir, id_prog, id_prog + 2);
}

/* Everything a stripped-program session asks equals the unstripped answers. */
static void check_same_as_full(struct ns_dwarf *sep, const char *bin)
{
	struct ns_dwarf *full = NULL;
	struct ns_arena a;
	const char *tags[] = {"TAG_RESTOCK", "TAG_WEIGH_RETURN", "TAG_HEAVY"};

	NS_CHECK_OK(ns_dwarf_open(d_full, &full));
	if (!full)
		return;
	ns_arena_init(&a);
	for (size_t t = 0; t < sizeof(tags) / sizeof(tags[0]); t++) {
		struct ns_dwarf_bp_lines x = {0}, y = {0};
		unsigned line = tu_tag_line(tags[t]);
		NS_CHECK_OK(ns_dwarf_breakpoint_addrs(full, "inventory.c", line, &a, &x));
		NS_CHECK_OK(ns_dwarf_breakpoint_addrs(sep, "inventory.c", line, &a, &y));
		NS_CHECK_INT(x.n, y.n);
		NS_CHECK(x.n > 0);
		for (size_t i = 0; i < x.n && i < y.n; i++) {
			NS_CHECK_INT(x.locs[i].addr, y.locs[i].addr);
			NS_CHECK_STR(x.locs[i].function, y.locs[i].function);

			// Scope: same names and type spellings.
			struct ns_dwarf_scope sx, sy;
			NS_CHECK_OK(ns_dwarf_scope_at(full, x.locs[i].addr, &a, &sx));
			NS_CHECK_OK(ns_dwarf_scope_at(sep, y.locs[i].addr, &a, &sy));
			NS_CHECK_INT(sx.nvars, sy.nvars);
			NS_CHECK(sy.nvars > 0);
			for (size_t v = 0; v < sx.nvars && v < sy.nvars; v++) {
				NS_CHECK_STR(sx.vars[v].name, sy.vars[v].name);
				NS_CHECK_STR(ns_dwarf_type_name(sx.vars[v].type, &a),
				             ns_dwarf_type_name(sy.vars[v].type, &a));
				NS_CHECK_INT(sx.vars[v].loc_len, sy.vars[v].loc_len);
			}

			// CFA: from the stripped binary's .eh_frame, as readelf reads it.
			struct ns_dwarf_cfa cx = {0}, cy = {0};
			NS_CHECK_OK(ns_dwarf_cfa_at(full, x.locs[i].addr, &cx));
			NS_CHECK_OK(ns_dwarf_cfa_at(sep, y.locs[i].addr, &cy));
			NS_CHECK_INT(cx.reg, cy.reg);
			NS_CHECK_INT(cx.offset, cy.offset);
			struct ns_dwarf_reg_rule rx[17], ry[17];
			NS_CHECK_OK(ns_dwarf_reg_rules_at(full, x.locs[i].addr, rx));
			NS_CHECK_OK(ns_dwarf_reg_rules_at(sep, y.locs[i].addr, ry));
			NS_CHECK_INT(rx[16].kind, ry[16].kind);
			NS_CHECK_INT(rx[16].offset, ry[16].offset);
			NS_CHECK_INT(ry[16].kind, NS_DWARF_RULE_OFFSET); // return address
		}
	}

	// The entry point: readelf's ELF header, read from the binary's file bytes.
	char *out = sh_out("readelf -h %s", bin), *p;
	unsigned long long entry = 0;
	if (out && (p = strstr(out, "Entry point address:")) != NULL)
		entry = strtoull(p + 20, NULL, 16);
	free(out);
	NS_CHECK(entry != 0);
	uint8_t bx[32], by[32];
	NS_CHECK_INT(ns_dwarf_read_vaddr(full, entry, bx, sizeof(bx)), sizeof(bx));
	NS_CHECK_INT(ns_dwarf_read_vaddr(sep, entry, by, sizeof(by)), sizeof(by));
	NS_CHECK(memcmp(bx, by, sizeof(bx)) == 0);
	NS_CHECK(ns_dwarf_is_dyn(full) == ns_dwarf_is_dyn(sep));
	uint64_t hx = 0, sx = 0, hy = 1, sy = 1;
	NS_CHECK_OK(ns_dwarf_eh_frame_hdr(full, &hx, &sx));
	NS_CHECK_OK(ns_dwarf_eh_frame_hdr(sep, &hy, &sy));
	NS_CHECK_INT(hx, hy);
	NS_CHECK_INT(sx, sy);
	const uint8_t *id;
	char idhex[128] = "";
	size_t n = ns_dwarf_build_id(sep, &id);
	for (size_t i = 0; i < n && 2 * i + 2 < sizeof(idhex); i++)
		snprintf(idhex + 2 * i, 3, "%02x", id[i]);
	NS_CHECK_STR(idhex, id_prog);

	// Call sites: the caller CFA comes from the binary's CFI too.
	const struct ns_dwarf_call_site *cs = NULL;
	size_t ncs = 0;
	struct ns_dwarf_bp_lines w = {0};
	NS_CHECK_OK(ns_dwarf_breakpoint_addrs(sep, "inventory.c", tu_tag_line("TAG_WEIGH_RETURN"),
	                                      &a, &w));
	if (w.n) {
		NS_CHECK_OK(ns_dwarf_call_sites(sep, w.locs[0].addr, &a, &cs, &ncs));
		NS_CHECK(ncs > 0);
		for (size_t i = 0; i < ncs; i++)
			NS_CHECK(cs[i].caller_cfa_known);
	}
	ns_arena_deinit(&a);
	ns_dwarf_destroy(full);
}

NS_TEST(test_dwarf_debuglink__next_to_binary)
{
	struct ns_dwarf *dw = NULL;

	if (!setup())
		return;
	// The stripped file really has no DWARF but keeps its .eh_frame.
	char *out = sh_out("readelf -S %s", d_strip);
	NS_CHECK(out && !strstr(out, ".debug_info") && strstr(out, ".eh_frame ") &&
	         strstr(out, ".gnu_debuglink"));
	free(out);
	NS_CHECK_OK(ns_dwarf_open_separate(d_strip, NULL, 0, &dw));
	if (!dw)
		return;
	NS_CHECK_STR(ns_dwarf_debug_path(dw), d_debug);
	check_same_as_full(dw, d_strip);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_debuglink__dot_debug_subdir)
{
	char bin[300], want[320];
	struct ns_dwarf *dw = NULL;

	if (!setup() || !fresh("sub", d_strip, bin, sizeof(bin)) ||
	    !sh("mkdir -p %s/sub/.debug && cp %s %s/sub/.debug/", d_root, d_debug, d_root))
		return;
	NS_CHECK_OK(ns_dwarf_open_separate(bin, NULL, 0, &dw));
	if (!dw)
		return;
	snprintf(want, sizeof(want), "%s/sub/.debug/inv.debug", d_root);
	NS_CHECK_STR(ns_dwarf_debug_path(dw), want);
	check_same_as_full(dw, bin);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_debuglink__build_id_in_listed_dir)
{
	char bin[300], dbg[300], want[600];
	struct ns_dwarf *dw = NULL;

	// No debuglink at all: only the build-id can find it.
	if (!setup() || !fresh("bid", d_nolink, bin, sizeof(bin)))
		return;
	snprintf(dbg, sizeof(dbg), "%s/bid-dbg", d_root);
	if (!put_build_id(dbg, d_debug))
		return;
	const char *dirs[] = {"/nonexistent/ns-debug", dbg};
	NS_CHECK_OK(ns_dwarf_open_separate(bin, dirs, 2, &dw));
	if (!dw)
		return;
	snprintf(want, sizeof(want), "%s/.build-id/%.2s/%s.debug", dbg, id_prog, id_prog + 2);
	NS_CHECK_STR(ns_dwarf_debug_path(dw), want);
	check_same_as_full(dw, bin);
	ns_dwarf_destroy(dw);

	// A listed dir also serves debuglink names.
	char bin2[300], dir2[300];
	if (!fresh("listed", d_strip, bin2, sizeof(bin2)))
		return;
	snprintf(dir2, sizeof(dir2), "%s/listed-dbg", d_root);
	if (!sh("mkdir -p %s && cp %s %s/", dir2, d_debug, dir2))
		return;
	const char *dirs2[] = {dir2};
	NS_CHECK_OK(ns_dwarf_open_separate(bin2, dirs2, 1, &dw));
	if (dw)
		NS_CHECK(strstr(ns_dwarf_debug_path(dw), "listed-dbg/inv.debug") != NULL);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_debuglink__unstripped_is_itself)
{
	struct ns_dwarf *dw = NULL;

	if (!setup())
		return;
	NS_CHECK_OK(ns_dwarf_open_separate(d_full, NULL, 0, &dw));
	if (dw)
		NS_CHECK_STR(ns_dwarf_debug_path(dw), d_full);
	ns_dwarf_destroy(dw);
}

static void check_mismatch(struct ns_err *err, const char *file)
{
	NS_CHECK(err != NULL);
	if (!err)
		return;
	NS_CHECK_INT(err->code, NS_ERR_INVALID);
	NS_CHECK(strstr(err->msg, id_prog) != NULL);
	NS_CHECK(strstr(err->msg, id_other) != NULL);
	NS_CHECK(strstr(err->msg, file) != NULL);
	NS_CHECK(strstr(err->msg, "refusing") != NULL);
	ns_err_destroy(err);
}

NS_TEST(test_dwarf_debuglink__mismatched_build_id_refused)
{
	char bin[300], dbg[300], file[600];
	struct ns_dwarf *dw = NULL;

	if (!setup() || !fresh("mm", d_nolink, bin, sizeof(bin)))
		return;
	snprintf(dbg, sizeof(dbg), "%s/mm-dbg", d_root);
	if (!put_build_id(dbg, d_other))
		return;
	const char *dirs[] = {dbg};
	snprintf(file, sizeof(file), "%s/.build-id/%.2s/%s.debug", dbg, id_prog, id_prog + 2);
	check_mismatch(ns_dwarf_open_separate(bin, dirs, 1, &dw), file);
	NS_CHECK(dw == NULL);

	// At the debuglink path (same name as the real one: only the build-id differs).
	char bin2[300], file2[320];
	if (!fresh("mml", d_strip, bin2, sizeof(bin2)) ||
	    !sh("cp %s %s/mml/inv.debug", d_other, d_root))
		return;
	snprintf(file2, sizeof(file2), "%s/mml/inv.debug", d_root);
	check_mismatch(ns_dwarf_open_separate(bin2, NULL, 0, &dw), file2);
	NS_CHECK(dw == NULL);

	// A mismatching file first, the right one later: the right one wins.
	if (!sh("mkdir -p %s/mml/.debug && cp %s %s/mml/.debug/inv.debug", d_root, d_debug, d_root))
		return;
	NS_CHECK_OK(ns_dwarf_open_separate(bin2, NULL, 0, &dw));
	if (dw)
		NS_CHECK(strstr(ns_dwarf_debug_path(dw), "mml/.debug/inv.debug") != NULL);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_debuglink__crc_without_build_id)
{
	char dir[300];
	struct ns_dwarf *dw = NULL;
	struct ns_err *err;

	if (!setup())
		return;
	snprintf(dir, sizeof(dir), "%s/crc", d_root);
	if (!sh("mkdir -p %s && cd %s && gcc -g -O2 -Wl,--build-id=none -pthread %s -o full && "
	        "objcopy --only-keep-debug full inv.debug && "
	        "objcopy --strip-debug --add-gnu-debuglink=inv.debug full inv",
	        dir, dir, tu_source()))
		return;
	char *out = sh_out("readelf -n %s/inv %s/inv.debug", dir, dir);
	NS_CHECK(out && !strstr(out, "Build ID"));
	free(out);

	// Matching CRC: accepted.
	char bin[320];
	snprintf(bin, sizeof(bin), "%s/inv", dir);
	NS_CHECK_OK(ns_dwarf_open_separate(bin, NULL, 0, &dw));
	NS_CHECK(dw != NULL);
	ns_dwarf_destroy(dw);
	dw = NULL;

	// The same DWARF with one more byte at the end: another CRC.
	if (!sh("printf x >> %s/inv.debug", dir))
		return;
	err = ns_dwarf_open_separate(bin, NULL, 0, &dw);
	NS_CHECK(err != NULL && dw == NULL);
	if (err) {
		NS_CHECK_INT(err->code, NS_ERR_INVALID);
		NS_CHECK(strstr(err->msg, "CRC mismatch") != NULL);
		NS_CHECK(strstr(err->msg, "inv.debug") != NULL);
		ns_err_destroy(err);
	}
}

NS_TEST(test_dwarf_debuglink__none_found)
{
	char bin[300], want[400];
	struct ns_dwarf *dw = NULL;
	struct ns_err *err;

	if (!setup() || !fresh("none", d_nolink, bin, sizeof(bin)))
		return;
	const char *dirs[] = {"/nonexistent/ns-dir"};
	err = ns_dwarf_open_separate(bin, dirs, 1, &dw);
	NS_CHECK(err != NULL && dw == NULL);
	if (!err)
		return;
	NS_CHECK_INT(err->code, NS_ERR_NOT_FOUND);
	NS_CHECK(strstr(err->msg, "no debug info for") != NULL);
	snprintf(want, sizeof(want), "/nonexistent/ns-dir/.build-id/%.2s/%s.debug", id_prog,
	         id_prog + 2);
	NS_CHECK(strstr(err->msg, want) != NULL);
	snprintf(want, sizeof(want), "/usr/lib/debug/.build-id/%.2s/%s.debug", id_prog,
	         id_prog + 2);
	NS_CHECK(strstr(err->msg, want) != NULL);
	ns_err_destroy(err);

	// With a debuglink: the debuglink places are listed too.
	char bin2[300];
	if (!fresh("none2", d_strip, bin2, sizeof(bin2)))
		return;
	err = ns_dwarf_open_separate(bin2, dirs, 1, &dw);
	NS_CHECK(err != NULL && err->code == NS_ERR_NOT_FOUND);
	if (err) {
		snprintf(want, sizeof(want), "%s/none2/.debug/inv.debug", d_root);
		NS_CHECK(strstr(err->msg, want) != NULL);
		NS_CHECK(strstr(err->msg, "/nonexistent/ns-dir/inv.debug") != NULL);
		snprintf(want, sizeof(want), "/usr/lib/debug%s/none2/inv.debug", d_root);
		NS_CHECK(strstr(err->msg, want) != NULL);
		ns_err_destroy(err);
	}
}

NS_TEST(test_dwarf_debuglink__bad_input)
{
	char path[300];
	struct ns_dwarf *dw = NULL;
	struct ns_err *err;

	if (!setup())
		return;
	err = ns_dwarf_open_separate("/nonexistent/prog", NULL, 0, &dw);
	NS_CHECK(err != NULL && dw == NULL);
	ns_err_destroy(err);
	snprintf(path, sizeof(path), "%s/garbage", d_root);
	if (!sh("head -c 3000 /dev/urandom > %s", path))
		return;
	err = ns_dwarf_open_separate(path, NULL, 0, &dw);
	NS_CHECK(err != NULL && dw == NULL);
	ns_err_destroy(err);

	// A corrupt file where the debug file should be: skipped, then NOT_FOUND.
	char bin[300];
	if (!fresh("corrupt", d_strip, bin, sizeof(bin)) ||
	    !sh("head -c 100 %s > %s/corrupt/inv.debug", d_debug, d_root))
		return;
	err = ns_dwarf_open_separate(bin, NULL, 0, &dw);
	NS_CHECK(err != NULL && dw == NULL);
	if (err)
		NS_CHECK(strstr(err->msg, "corrupt/inv.debug") != NULL);
	ns_err_destroy(err);
}
