/* Entry values over real DWARF: tests/targets/inventory.c built with gcc -g -O2 (DWARF 5
 * DW_TAG_call_site) and -O2 -gdwarf-4 (DW_TAG_GNU_call_site). At the TAG_BINS line of
 * restock(), `it` is DW_OP_entry_value(DW_OP_reg4); DW_OP_stack_value. gdb stops the real
 * program there, dumps the registers and the stack, and prints each expression (gdb
 * resolves entry values itself); our bytecode runs over the dump and must agree. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ax/ax.h"
#include "base/test.h"
#include "dwarf/dwarf.h"
#include "expr/expr.h"

#include "expr_dwarf_util.h"

/* The stop gdb saw: registers and the stack around rsp (holds worker's items). */
static uint64_t gregs[NS_AX_NREGS];
static uint64_t stack_addr;
static char *stack_bytes;
static size_t stack_len;

/* Collection (NS_EXPR_COLLECT): the bytes the program traced, then replayed alone. */
struct rec {
	uint64_t addr;
	size_t len;
	uint8_t bytes[64];
};
static struct rec recs[64];
static size_t nrecs;
static bool replay; /* read only traced bytes */

static int read_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	(void)ctx;
	if (replay) {
		for (size_t i = 0; i < nrecs; i++)
			if (addr >= recs[i].addr && addr - recs[i].addr <= recs[i].len &&
			    len <= recs[i].len - (addr - recs[i].addr)) {
				memcpy(dst, recs[i].bytes + (addr - recs[i].addr), len);
				return 0;
			}
		return -1;
	}
	if (stack_bytes && addr >= stack_addr && addr - stack_addr <= stack_len &&
	    len <= stack_len - (addr - stack_addr)) {
		memcpy(dst, stack_bytes + (addr - stack_addr), len);
		return 0;
	}
	return -1;
}

static int trace_mem(void *ctx, uint64_t addr, size_t len, bool nul_stop)
{
	(void)nul_stop;
	if (nrecs == 64 || len > sizeof recs[0].bytes)
		return -1;
	if (read_mem(ctx, recs[nrecs].bytes, addr, len) == 0) {
		recs[nrecs].addr = addr;
		recs[nrecs].len = len;
		nrecs++;
	}
	return 0;
}

static int read_reg(void *ctx, unsigned regno, uint64_t *val)
{
	(void)ctx;
	if (regno >= 17)
		return -1;
	*val = gregs[regno];
	return 0;
}

static const char *const exprs[] = {
        "it->id",        "it->kind == TOOL && qty > 15",
        "it->kind",      "qty",
        "it->sku",       "it->sku[4]",
        "it->next != 0", "s->count",
};
enum { NEXPRS = sizeof exprs / sizeof exprs[0] };

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

static bool is_entry_value(const struct ns_dwarf_var *v)
{
	return v->loc_len > 2 && (v->loc[0] == 0xa3 || v->loc[0] == 0xf3);
}

/* One stop at restock's TAG_BINS address (@cond: gdb breakpoint condition or NULL). */
static void check_stop(const char *flags, const char *cond)
{
	const char *srcdir = getenv("NS_SOURCE_DIR");
	char src[512], dir[] = "/tmp/ns_expr_entry_XXXXXX", cmd[8192], bin[600];
	struct ns_dwarf *dw = NULL;
	struct ns_arena arena;
	struct ns_err *err = NULL;
	char *out;

	ns_arena_init(&arena);
	snprintf(src, sizeof src, "%s/tests/targets/inventory.c", srcdir ? srcdir : "/work/main");
	if (!mkdtemp(dir)) {
		ns_test_fail(__FILE__, __LINE__, "mkdtemp failed");
		return;
	}
	snprintf(bin, sizeof bin, "%s/inv", dir);
	snprintf(cmd, sizeof cmd, "gcc -g %s -pthread -o %s %s 2>&1 && echo built", flags, bin,
	         src);
	out = ns_test_capture(cmd);
	NS_CHECK(out && strstr(out, "built"));
	free(out);
	unsigned line = tag_line(src, "TAG_BINS");
	NS_CHECK(line > 0);
	NS_CHECK_OK(err = ns_dwarf_open(bin, &dw));
	if (err)
		goto out;

	struct ns_dwarf_bp_lines bl;
	struct ns_dwarf_scope sc;
	struct ns_dwarf_cfa cfa;
	struct ns_dwarf_where where;
	NS_CHECK_OK(err = ns_dwarf_breakpoint_addrs(dw, "inventory.c", line, &arena, &bl));
	if (err || bl.n == 0)
		goto out;
	uint64_t pc = bl.locs[0].addr;
	NS_CHECK_OK(err = ns_dwarf_scope_at(dw, pc, &arena, &sc));
	if (!err)
		NS_CHECK_OK(err = ns_dwarf_cfa_at(dw, pc, &cfa));
	if (!err)
		NS_CHECK_OK(err = ns_dwarf_where(dw, pc, &arena, &where));
	if (err)
		goto out;
	// The point of the test: `it` is an entry value here.
	bool it_entry = false;
	for (size_t i = 0; i < sc.nvars; i++)
		if (!strcmp(sc.vars[i].name, "it"))
			it_entry = is_entry_value(&sc.vars[i]);
	NS_CHECK(it_entry);

	struct dw_ctx ctx = {dw, pc};
	struct ns_expr_scope scope = {
	        .locals = &sc,
	        .lookup_global = lookup_global,
	        .lookup_type = lookup_type,
	        .ctx = &ctx,
	        .cfa_known = true,
	        .cfa_reg = cfa.reg,
	        .cfa_offset = cfa.offset,
	};
	// Without call sites an entry value stays optimized out.
	struct ns_expr_prog p;
	err = ns_expr_compile("it->id", &scope, 0, &arena, &p);
	NS_CHECK(err && err->code == NS_ERR_OPTIMIZED_OUT);
	ns_err_destroy(err);
	err = NULL;
	NS_CHECK_OK(
	        err = ns_dwarf_call_sites(dw, pc, &arena, &scope.call_sites, &scope.ncall_sites));
	if (!err)
		NS_CHECK_OK(err = ns_dwarf_reg_rules_at(dw, pc, scope.reg_rules));
	if (err)
		goto out;
	scope.reg_rules_known = true;
	NS_CHECK(scope.ncall_sites >= 1);

	// gdb: stop at exactly our address (after starti the PIE is relocated).
	static const char *const regnames[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi",
	                                       "rbp", "rsp", "r8",  "r9",  "r10", "r11",
	                                       "r12", "r13", "r14", "r15", "rip"};
	size_t k = (size_t)snprintf(cmd, sizeof cmd,
	                            "cd %s && ROUNDS=100 timeout 120 gdb -batch -nx -ex starti "
	                            "-ex 'break *((char *)&%s + %llu)%s%s' -ex continue",
	                            dir, where.function, (unsigned long long)(pc - where.func_low),
	                            cond ? " if " : "", cond ? cond : "");
	for (size_t i = 0; i < 17; i++)
		k += (size_t)snprintf(cmd + k, sizeof cmd - k, " -ex 'p/x $%s'", regnames[i]);
	k += (size_t)snprintf(cmd + k, sizeof cmd - k,
	                      " -ex 'p/x $rsp - 512'"
	                      " -ex 'dump binary memory stack.bin $rsp-512 $rsp+2048'");
	for (size_t i = 0; i < NEXPRS; i++)
		k += (size_t)snprintf(cmd + k, sizeof cmd - k, " -ex 'p/d (long)(%s)'", exprs[i]);
	snprintf(cmd + k, sizeof cmd - k, " ./inv 2>&1");
	out = ns_test_capture(cmd);
	int64_t vals[64];
	size_t nvals = gdb_values(out, vals, 64);
	if (nvals != 17 + 1 + NEXPRS) {
		ns_test_fail(__FILE__, __LINE__, "gdb printed %zu values, want %d:\n%s", nvals,
		             17 + 1 + NEXPRS, out ? out : "(null)");
		free(out);
		goto out;
	}
	free(out);
	for (size_t i = 0; i < 17; i++)
		gregs[i] = (uint64_t)vals[i];
	char path[700];
	snprintf(path, sizeof path, "%s/stack.bin", dir);
	stack_addr = (uint64_t)vals[17];
	stack_bytes = read_file(path, &stack_len);
	unlink(path);
	NS_CHECK(stack_bytes != NULL && stack_len == 2560);
	scope.load_bias = gregs[16] - pc;
	if (cond)
		NS_CHECK_INT(vals[18 + 1], 1); // gdb agrees the condition holds here

	struct ns_ax_env env = {.read_mem = read_mem, .read_reg = read_reg};
	for (size_t i = 0; i < NEXPRS; i++) {
		struct ns_ax_result r;
		int64_t want = vals[18 + i];
		err = ns_expr_compile(exprs[i], &scope, 0, &arena, &p);
		if (err) {
			ns_test_fail(__FILE__, __LINE__, "compile '%s': %s", exprs[i], err->msg);
			ns_err_destroy(err);
			err = NULL;
			continue;
		}
		NS_CHECK_OK(ns_ax_verify(p.code, p.len, NULL));
		ns_ax_run(p.code, p.len, &env, &r);
		printf("  %-30s = %lld (gdb %lld)\n", exprs[i], (long long)r.value,
		       (long long)want);
		if (r.status != NS_AX_OK || (int64_t)r.value != want)
			ns_test_fail(__FILE__, __LINE__,
			             "'%s': status %d value %lld, gdb says %lld", exprs[i],
			             r.status, (long long)r.value, (long long)want);

		// Collected in the "target", then re-run over the recorded bytes alone.
		struct ns_expr_prog pc2;
		struct ns_ax_env tenv = env;
		tenv.trace_mem = trace_mem;
		NS_CHECK_OK(err = ns_expr_compile(exprs[i], &scope, NS_EXPR_COLLECT, &arena, &pc2));
		if (err) {
			ns_err_destroy(err);
			err = NULL;
			continue;
		}
		nrecs = 0;
		replay = false;
		ns_ax_run(pc2.code, pc2.len, &tenv, &r);
		NS_CHECK_INT(r.status, NS_AX_OK);
		replay = true;
		ns_ax_run(p.code, p.len, &env, &r);
		replay = false;
		if (r.status != NS_AX_OK || (int64_t)r.value != want)
			ns_test_fail(
			        __FILE__, __LINE__,
			        "'%s' over the collected bytes: status %d value %lld, gdb %lld",
			        exprs[i], r.status, (long long)r.value, (long long)want);
	}

	// A return address that matches no call site: a deliberate fault, not a value.
	NS_CHECK_OK(err = ns_expr_compile("it->id", &scope, 0, &arena, &p));
	if (!err && gregs[7] >= stack_addr && gregs[7] + 8 <= stack_addr + stack_len) {
		struct ns_ax_result r;
		uint64_t saved;
		char *ra = stack_bytes + (gregs[7] - stack_addr);
		// At TAG_BINS restock has not pushed anything: the return address is at rsp.
		NS_CHECK_INT(cfa.reg, 7);
		NS_CHECK_INT(cfa.offset, 8);
		memcpy(&saved, ra, 8);
		uint64_t bogus = saved + 1;
		memcpy(ra, &bogus, 8);
		ns_ax_run(p.code, p.len, &env, &r);
		NS_CHECK_INT(r.status, NS_AX_FAULT);
		NS_CHECK_INT(r.fault_addr, 0);
		memcpy(ra, &saved, 8);
		ns_ax_run(p.code, p.len, &env, &r);
		NS_CHECK_INT(r.status, NS_AX_OK);
		NS_CHECK_INT(r.value, vals[18]);
	}
	// Without register rules the caller's r14/r15 are unknown: optimized out.
	scope.reg_rules_known = false;
	err = ns_expr_compile("it->id", &scope, 0, &arena, &p);
	NS_CHECK(err && err->code == NS_ERR_OPTIMIZED_OUT);
	ns_err_destroy(err);
	err = NULL;
	free(stack_bytes);
	stack_bytes = NULL;
out:
	ns_err_destroy(err);
	ns_arena_deinit(&arena);
	if (dw)
		ns_dwarf_destroy(dw);
	unlink(bin);
	rmdir(dir);
}

static bool have_gdb(void)
{
	char *gdb_path = ns_test_capture("command -v gdb");
	bool ok = gdb_path && *gdb_path;
	free(gdb_path);
	if (!ok)
		printf("note: gdb not installed; skipping\n");
	return ok;
}

NS_TEST(test_expr_entry__restock_bins_o2_matches_gdb)
{
	if (!have_gdb())
		return;
	check_stop("-O2", NULL);
	check_stop("-O2", "it->kind == TOOL && qty > 15");
}

NS_TEST(test_expr_entry__restock_bins_o2_dwarf4_matches_gdb)
{
	if (!have_gdb())
		return;
	check_stop("-O2 -gdwarf-4", NULL);
	check_stop("-O2 -gdwarf-4", "it->kind == TOOL && qty > 15");
}
