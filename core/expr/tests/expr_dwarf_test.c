/* The compiler over real DWARF: tests/targets/inventory.c built with gcc -g -O0, scope
 * from core/dwarf at the TAG_WEIGH_RETURN line. gdb stops the real program there, dumps
 * its registers and the memory the expressions need, and prints each expression's
 * value; our bytecode runs over the dump and must agree with gdb. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ax/ax.h"
#include "base/test.h"
#include "dwarf/dwarf.h"
#include "expr/expr.h"

#include "expr_dwarf_util.h"

/* What gdb saw at the breakpoint. */
struct mem_block {
	uint64_t addr;
	size_t len;
	char *bytes;
};
static struct mem_block blocks[3];
static uint64_t gregs[NS_AX_NREGS];

static int read_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	(void)ctx;
	for (size_t i = 0; i < 3; i++) {
		struct mem_block *b = &blocks[i];
		if (b->bytes && addr >= b->addr && addr - b->addr <= b->len &&
		    len <= b->len - (addr - b->addr)) {
			memcpy(dst, b->bytes + (addr - b->addr), len);
			return 0;
		}
	}
	return -1;
}

static int read_reg(void *ctx, unsigned regno, uint64_t *val)
{
	(void)ctx;
	if (regno >= 17)
		return -1;
	*val = gregs[regno];
	return 0;
}

/* Expressions and how gdb prints them as a number. */
static const char *const exprs[] = {
        "it->kind == TOOL",
        "it->kind == FOOD",
        "it->kind",
        "qty",
        "grams",
        "it->id",
        "it->id % 3",
        "it->sku[4]",
        "it->next != 0",
        "it->next->id",
        "it->u.pages * 2",
        "(long)qty * 3 - grams",
        "restocked[0] + heavy[1]",
        "&grams",
        "it->sku",
        "&it->next->kind",
};

/* Parse the values of gdb's "$N = V" lines, in order. */
static size_t gdb_values(const char *out, int64_t *vals, size_t max)
{
	size_t n = 0;
	for (const char *p = out; p && *p && n < max; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (*p != '$')
			continue;
		const char *eq = strstr(p, " = ");
		if (!eq)
			continue;
		vals[n++] = (int64_t)strtoull(eq + 3, NULL, 0);
	}
	return n;
}

NS_TEST(test_expr_dwarf__inventory_weigh_matches_gdb)
{
	const char *srcdir = getenv("NS_SOURCE_DIR");
	char src[512], dir[] = "/tmp/ns_expr_dwarf_XXXXXX", cmd[8192];
	snprintf(src, sizeof src, "%s/tests/targets/inventory.c", srcdir ? srcdir : "/work/main");
	if (!mkdtemp(dir)) {
		ns_test_fail(__FILE__, __LINE__, "mkdtemp failed");
		return;
	}
	char *gdb_path = ns_test_capture("command -v gdb");
	bool have_gdb = gdb_path && *gdb_path;
	free(gdb_path);
	if (!have_gdb) {
		printf("note: gdb not installed; skipping\n");
		return;
	}
	snprintf(cmd, sizeof cmd, "gcc -g -O0 -pthread -o %s/inv %s 2>&1 && echo built", dir, src);
	char *out = ns_test_capture(cmd);
	NS_CHECK(out && strstr(out, "built"));
	free(out);
	unsigned line = tag_line(src, "TAG_WEIGH_RETURN");
	NS_CHECK(line > 0);

	char bin[600];
	snprintf(bin, sizeof bin, "%s/inv", dir);
	struct ns_dwarf *dw;
	struct ns_err *err = ns_dwarf_open(bin, &dw);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "ns_dwarf_open: %s", err->msg);
		ns_err_destroy(err);
		return;
	}
	struct ns_arena arena;
	ns_arena_init(&arena);
	struct ns_dwarf_bp_lines bl;
	struct ns_dwarf_scope sc;
	struct ns_dwarf_cfa cfa;
	NS_CHECK_OK(err = ns_dwarf_breakpoint_addrs(dw, "inventory.c", line, &arena, &bl));
	if (err || bl.n == 0)
		goto out;
	uint64_t pc = bl.locs[0].addr;
	NS_CHECK_OK(err = ns_dwarf_scope_at(dw, pc, &arena, &sc));
	if (err)
		goto out;
	NS_CHECK_OK(err = ns_dwarf_cfa_at(dw, pc, &cfa));
	if (err)
		goto out;

	// gdb: registers in GDB amd64 order, memory dumps, then the expressions' values.
	static const char *const regnames[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi",
	                                       "rbp", "rsp", "r8",  "r9",  "r10", "r11",
	                                       "r12", "r13", "r14", "r15", "rip"};
	size_t k = (size_t)snprintf(cmd, sizeof cmd,
	                            "cd %s && ROUNDS=2 timeout 120 gdb -batch -nx "
	                            "-ex 'break inventory.c:%u' -ex run",
	                            dir, line);
	for (size_t i = 0; i < 17; i++)
		k += (size_t)snprintf(cmd + k, sizeof cmd - k, " -ex 'p/x $%s'", regnames[i]);
	k += (size_t)snprintf(
	        cmd + k, sizeof cmd - k,
	        " -ex 'p/x $rsp - 1024' -ex 'dump binary memory stack.bin $rsp-1024 $rsp+16384'"
	        " -ex 'p/x &restocked' -ex 'dump binary memory g1.bin &restocked &restocked[3]'"
	        " -ex 'p/x &heavy' -ex 'dump binary memory g2.bin &heavy &heavy[3]'");
	for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++)
		k += (size_t)snprintf(cmd + k, sizeof cmd - k, " -ex 'p/d (long)(%s)'", exprs[i]);
	snprintf(cmd + k, sizeof cmd - k, " ./inv 2>&1");
	out = ns_test_capture(cmd);
	int64_t vals[64];
	size_t nvals = gdb_values(out, vals, 64);
	size_t want_n = 17 + 3 + sizeof exprs / sizeof exprs[0];
	if (nvals != want_n) {
		ns_test_fail(__FILE__, __LINE__, "gdb printed %zu values, want %zu:\n%s", nvals,
		             want_n, out ? out : "(null)");
		free(out);
		goto out;
	}
	free(out);
	for (size_t i = 0; i < 17; i++)
		gregs[i] = (uint64_t)vals[i];
	static const char *const files[] = {"stack.bin", "g1.bin", "g2.bin"};
	for (size_t i = 0; i < 3; i++) {
		char path[700];
		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		blocks[i].addr = (uint64_t)vals[17 + i];
		blocks[i].bytes = read_file(path, &blocks[i].len);
		NS_CHECK(blocks[i].bytes != NULL);
		unlink(path);
	}

	struct dw_ctx ctx = {dw, pc};
	struct ns_expr_scope scope = {
	        .locals = &sc,
	        .lookup_global = lookup_global,
	        .lookup_type = lookup_type,
	        .ctx = &ctx,
	        .load_bias = gregs[16] - pc, /* rip at the breakpoint - link pc */
	        .cfa_known = true,
	        .cfa_reg = cfa.reg,
	        .cfa_offset = cfa.offset,
	};
	struct ns_ax_env env = {.read_mem = read_mem, .read_reg = read_reg};
	for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
		struct ns_expr_prog p;
		struct ns_ax_result r;
		err = ns_expr_compile(exprs[i], &scope, 0, &arena, &p);
		if (err) {
			ns_test_fail(__FILE__, __LINE__, "compile '%s': %s", exprs[i], err->msg);
			ns_err_destroy(err);
			continue;
		}
		ns_ax_run(p.code, p.len, &env, &r);
		int64_t want = vals[17 + 3 + i];
		printf("  %-26s = %lld (gdb %lld)\n", exprs[i], (long long)r.value,
		       (long long)want);
		if (r.status != NS_AX_OK || (int64_t)r.value != want)
			ns_test_fail(__FILE__, __LINE__,
			             "'%s': status %d value %lld, gdb says %lld", exprs[i],
			             r.status, (long long)r.value, (long long)want);
	}
	// Errors name the member's column.
	struct ns_expr_prog p;
	err = ns_expr_compile("it->nosuchfield", &scope, 0, &arena, &p);
	NS_CHECK(err && err->code == NS_ERR_TYPE && err->column == 5);
	NS_CHECK(err && strcmp(err->msg, "no member 'nosuchfield' in struct item") == 0);
	ns_err_destroy(err);
	err = NULL;
	for (size_t i = 0; i < 3; i++)
		free(blocks[i].bytes);
out:
	ns_err_destroy(err);
	ns_arena_deinit(&arena);
	ns_dwarf_destroy(dw);
	unlink(bin);
	rmdir(dir);
}
