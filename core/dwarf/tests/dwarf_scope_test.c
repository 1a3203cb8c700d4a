/* core/dwarf scopes, locations, types and CFA, checked against gdb, readelf and nm on
 * the sample target built here with gcc. */
#include "dwarf_test_util.h"

static char *gdb(const char *bin, const char *cmds)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "gdb -nx -batch %s %s 2>/dev/null", cmds, bin);
	return ns_test_capture(cmd);
}

static int64_t gdb_int(const char *bin, const char *expr)
{
	char cmds[512], *out, *p;
	int64_t v = -12345;

	snprintf(cmds, sizeof(cmds), "-ex 'print %s'", expr);
	out = gdb(bin, cmds);
	if (out && (p = strstr(out, " = ")) != NULL) {
		p += 3;
		if (*p == '(' && strstr(p, ") 0x")) // "(char (*)[12]) 0x4"
			p = strstr(p, ") 0x") + 2;
		v = strtoll(p, NULL, 0);
	}
	free(out);
	return v;
}

enum { DW_OP_reg0_ = 0x50, DW_OP_fbreg_ = 0x91, DW_OP_addr_ = 0x03 };

static const char *const x86_regs[] = {"rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
                                       "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};

static int64_t sleb(const uint8_t *p, size_t len, size_t *pos)
{
	int64_t v = 0;
	unsigned shift = 0;
	uint8_t b = 0;

	while (*pos < len) {
		b = p[(*pos)++];
		v |= (int64_t)(b & 0x7f) << shift;
		shift += 7;
		if (!(b & 0x80))
			break;
	}
	if (shift < 64 && (b & 0x40))
		v |= -((int64_t)1 << shift);
	return v;
}

/* gdb's description of @name's location at @pc from `info scope` output @out:
 * the text after "Range A-B: " (multi-location) or after "Symbol NAME is ". */
static bool gdb_loc_at(const char *out, const char *name, uint64_t pc, char *desc, size_t cap,
                       unsigned *length)
{
	char key[128];
	const char *p, *end;

	snprintf(key, sizeof(key), "Symbol %s is ", name);
	p = strstr(out, key);
	if (!p)
		return false;
	p += strlen(key);
	end = strstr(p, ", length ");
	if (!end)
		return false;
	*length = (unsigned)strtoul(end + 9, NULL, 10);
	desc[0] = 0;
	if (strncmp(p, "multi-location", 14) != 0) {
		snprintf(desc, cap, "%.*s", (int)(end - p), p);
		return true;
	}
	for (const char *r = strstr(p, "Range 0x"); r && r < end; r = strstr(r + 1, "Range 0x")) {
		unsigned long long lo, hi;
		if (sscanf(r, "Range 0x%llx-0x%llx", &lo, &hi) != 2)
			continue;
		if (pc >= lo && pc < hi) {
			const char *d = strstr(r, ": ") + 2, *e = strchr(d, '\n');
			snprintf(desc, cap, "%.*s", (int)(e ? e - d : (long)strlen(d)), d);
		}
	}
	return true;
}

/* Our location vs gdb's words for it: registers and frame-base offsets. */
static void check_loc(const struct ns_dwarf_var *v, const char *desc)
{
	char want[64];

	if (v->loc_len == 1 && v->loc[0] >= DW_OP_reg0_ && v->loc[0] <= DW_OP_reg0_ + 15) {
		snprintf(want, sizeof(want), "a variable in $%s",
		         x86_regs[v->loc[0] - DW_OP_reg0_]);
		NS_CHECK_STR(desc, want);
	} else if (v->loc_len >= 2 && v->loc[0] == DW_OP_fbreg_) {
		size_t pos = 1;
		int64_t off = sleb(v->loc, v->loc_len, &pos);
		snprintf(want, sizeof(want), "DW_OP_fbreg %lld\n", (long long)off);
		NS_CHECK(pos == v->loc_len && strstr(desc, want) != NULL);
	} else if (v->loc_len) {
		NS_CHECK(strncmp(desc, "a complex DWARF expression", 26) == 0 ||
		         strncmp(desc, "a variable", 10) == 0);
	} else {
		NS_CHECK(desc[0] == 0 || strstr(desc, "optimized out"));
	}
}

static void check_scope_vs_gdb(enum tu_build b, const char *tag, const char *func,
                               const char *const *names, size_t nnames, size_t nparams)
{
	const char *bin = tu_bin(b);
	struct ns_dwarf *dw = tu_open(b);
	unsigned line = tu_tag_line(tag);
	struct ns_dwarf_bp_lines bl;
	struct ns_arena a;
	char cmds[256], *out;

	if (!dw)
		return;
	ns_arena_init(&a);
	NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "inventory.c", line, &a, &bl));
	snprintf(cmds, sizeof(cmds), "-ex 'info scope inventory.c:%u'", line);
	out = gdb(bin, cmds);
	NS_CHECK(out != NULL);
	for (size_t k = 0; out && k < bl.n; k++) {
		struct ns_dwarf_scope s;
		NS_CHECK_OK(ns_dwarf_scope_at(dw, bl.locs[k].addr, &a, &s));
		NS_CHECK_STR(s.function, func);
		NS_CHECK(s.frame_base_len > 0);
		NS_CHECK_INT(s.nvars, nnames);
		for (size_t i = 0; i < s.nvars && i < nnames; i++) {
			char desc[256];
			unsigned length = 0;
			const struct ns_dwarf_var *v = &s.vars[i];
			NS_CHECK_STR(v->name, names[i]);
			NS_CHECK_INT(v->kind, i < nparams ? NS_DWARF_PARAM : NS_DWARF_LOCAL);
			NS_CHECK(gdb_loc_at(out, names[i], bl.locs[k].addr, desc, sizeof(desc),
			                    &length));
			NS_CHECK(v->type != NULL);
			if (v->type)
				NS_CHECK_INT(ns_dwarf_type_strip(v->type)->size, length);
			// gdb describes the first address of the line; ours is per address.
			if (k == 0)
				check_loc(v, desc);
			if (b != TU_O0 && i < nparams)
				NS_CHECK(v->loc_len > 0); // location lists resolved
		}
	}
	free(out);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_scope__weigh_return)
{
	static const char *const names[] = {"it", "qty", "grams"};
	for (int b = 0; b < TU_NBUILDS; b++)
		check_scope_vs_gdb((enum tu_build)b, "TAG_WEIGH_RETURN", "weigh", names, 3, 2);
}

NS_TEST(test_dwarf_scope__restock_params)
{
	static const char *const names[] = {"s", "it", "qty", "total"};
	for (int b = 0; b < TU_NBUILDS; b++)
		check_scope_vs_gdb((enum tu_build)b, "TAG_RESTOCK", "restock", names, 4, 3);
}

NS_TEST(test_dwarf_scope__param_types_vs_gdb)
{
	const char *bin = tu_bin(TU_O0);
	struct ns_dwarf *dw = tu_open(TU_O0);
	struct ns_dwarf_bp_lines bl;
	struct ns_dwarf_scope s;
	struct ns_arena a;
	char *out, *p;

	if (!dw)
		return;
	ns_arena_init(&a);
	NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "inventory.c", tu_tag_line("TAG_WEIGH_RETURN"),
	                                      &a, &bl));
	NS_CHECK_OK(ns_dwarf_scope_at(dw, bl.locs[0].addr, &a, &s));
	out = gdb(bin, "-ex 'whatis weigh'"); // "type = long (const struct item *, unsigned int)"
	p = out ? strchr(out, '(') : NULL;
	NS_CHECK(p != NULL);
	if (p && s.nvars >= 2) {
		char want[256];
		snprintf(want, sizeof(want), "(%s, %s)", ns_dwarf_type_name(s.vars[0].type, &a),
		         ns_dwarf_type_name(s.vars[1].type, &a));
		NS_CHECK(strncmp(p, want, strlen(want)) == 0);
	}
	free(out);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

static void check_struct_item(enum tu_build b)
{
	const char *bin = tu_bin(b);
	struct ns_dwarf *dw = tu_open(b);
	const struct ns_dwarf_type *t, *sh, *bins = NULL, *e;
	struct ns_arena a;

	if (!dw)
		return;
	ns_arena_init(&a);
	t = ns_dwarf_find_type(dw, "struct item", 0);
	NS_CHECK(t && t->kind == NS_DT_STRUCT);
	if (!t) {
		ns_dwarf_destroy(dw);
		return;
	}
	NS_CHECK_STR(t->name, "item");
	NS_CHECK_INT(t->size, gdb_int(bin, "sizeof(struct item)"));
	NS_CHECK_INT(t->nmembers, 5);
	for (size_t i = 0; i < t->nmembers; i++) {
		char expr[128];
		snprintf(expr, sizeof(expr), "&((struct item*)0)->%s", t->members[i].name);
		NS_CHECK_INT(t->members[i].offset, gdb_int(bin, expr));
		snprintf(expr, sizeof(expr), "sizeof(((struct item*)0)->%s)", t->members[i].name);
		NS_CHECK_INT(ns_dwarf_type_strip(t->members[i].type)->size, gdb_int(bin, expr));
	}
	// Recursive type: next points back at the same cached object.
	NS_CHECK(t->nmembers == 5 && t->members[4].type->kind == NS_DT_POINTER &&
	         t->members[4].type->target == t);
	NS_CHECK_STR(ns_dwarf_type_name(t->members[4].type, &a), "struct item *");
	NS_CHECK_STR(ns_dwarf_type_name(t->members[1].type, &a), "char [12]");
	NS_CHECK(t->members[3].type->kind == NS_DT_UNION && t->members[3].type->nmembers == 2);

	e = t->members[2].type;
	NS_CHECK(e->kind == NS_DT_ENUM && e == ns_dwarf_find_type(dw, "enum kind", 0));
	NS_CHECK_INT(e->nenums, 3);
	for (size_t i = 0; i < e->nenums; i++) {
		char expr[64];
		snprintf(expr, sizeof(expr), "(int)%s", e->enums[i].name);
		NS_CHECK_INT(e->enums[i].value, gdb_int(bin, expr));
	}
	NS_CHECK_STR(e->enums[2].name, "TOOL");

	sh = ns_dwarf_find_type(dw, "struct shelf", 0);
	NS_CHECK(sh != NULL);
	for (size_t i = 0; sh && i < sh->nmembers; i++)
		if (!strcmp(sh->members[i].name, "bins"))
			bins = sh->members[i].type;
	NS_CHECK(bins && bins->kind == NS_DT_ARRAY && bins->count_known);
	if (bins) {
		NS_CHECK_INT(bins->count, 3);
		NS_CHECK_INT(bins->count, gdb_int(bin, "sizeof(((struct shelf*)0)->bins) / "
		                                       "sizeof(short)"));
		NS_CHECK_STR(ns_dwarf_type_name(bins, &a), "short int [3]");
	}
	NS_CHECK_STR(ns_dwarf_type_name(sh->members[0].type, &a), "const char *");

	const struct ns_dwarf_type *ul = ns_dwarf_find_type(dw, "unsigned long", 0);
	NS_CHECK(ul && ul->kind == NS_DT_BASE && !ul->is_signed);
	NS_CHECK(ul && ul->size == (uint64_t)gdb_int(bin, "sizeof(unsigned long)"));
	const struct ns_dwarf_type *ch = ns_dwarf_find_type(dw, "char", 0);
	NS_CHECK(ch && ch->is_char && ch->size == 1);
	NS_CHECK(ns_dwarf_find_type(dw, "struct nosuch", 0) == NULL);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_scope__types_vs_gdb)
{
	check_struct_item(TU_O0);
	check_struct_item(TU_O2_DWARF4);
}

/* CFA rule from `readelf --debug-dump=frames-interp` at @pc: "rsp+8" etc. An FDE
 * without instructions prints no rows: its rule is its CIE's initial one. */
static bool readelf_cfa(const char *bin, uint64_t pc, char *rule, size_t cap)
{
	char cmd[512], *out, *line, *save = NULL;
	char cie_rule[64] = "";
	bool in_fde = false, in_cie = false, found = false;

	snprintf(cmd, sizeof(cmd), "readelf --debug-dump=frames-interp %s", bin);
	out = ns_test_capture(cmd);
	for (line = out ? strtok_r(out, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save)) {
		const char *p = strstr(line, "FDE cie=");
		unsigned long long lo, hi, loc;
		char r[64];
		if (strstr(line, " CIE")) {
			in_cie = true;
			in_fde = false;
			continue;
		}
		if (p) {
			in_cie = false;
			p = strstr(p, "pc=");
			in_fde = p && sscanf(p, "pc=%llx..%llx", &lo, &hi) == 2 && pc >= lo &&
			         pc < hi;
			if (in_fde && cie_rule[0]) {
				snprintf(rule, cap, "%s", cie_rule);
				found = true;
			}
			continue;
		}
		if (sscanf(line, "%llx %63s", &loc, r) != 2)
			continue;
		if (in_cie && !cie_rule[0])
			snprintf(cie_rule, sizeof(cie_rule), "%s", r);
		if (in_fde && loc <= pc) {
			snprintf(rule, cap, "%s", r);
			found = true;
		}
	}
	free(out);
	return found;
}

static void check_cfa(enum tu_build b, const char *tag)
{
	const char *bin = tu_bin(b);
	struct ns_dwarf *dw = tu_open(b);
	struct ns_dwarf_bp_lines bl;
	struct ns_arena a;

	if (!dw)
		return;
	ns_arena_init(&a);
	NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "inventory.c", tu_tag_line(tag), &a, &bl));
	for (size_t i = 0; i < bl.n; i++) {
		struct ns_dwarf_cfa c;
		char rule[64] = "", want[64];
		NS_CHECK(readelf_cfa(bin, bl.locs[i].addr, rule, sizeof(rule)));
		NS_CHECK_OK(ns_dwarf_cfa_at(dw, bl.locs[i].addr, &c));
		snprintf(want, sizeof(want), "%s%+lld", c.reg < 16 ? x86_regs[c.reg] : "?",
		         (long long)c.offset);
		NS_CHECK_STR(want, rule);
		if (b != TU_O0 && !strcmp(tag, "TAG_RESTOCK"))
			NS_CHECK_INT(c.reg, 7);
	}
	struct ns_dwarf_cfa c;
	struct ns_err *err = ns_dwarf_cfa_at(dw, 0x10, &c);
	NS_CHECK(err && err->code == NS_ERR_NOT_FOUND);
	ns_err_destroy(err);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_scope__cfa_vs_readelf)
{
	for (int b = 0; b < TU_NBUILDS; b++) {
		check_cfa((enum tu_build)b, "TAG_RESTOCK");
		check_cfa((enum tu_build)b, "TAG_WEIGH_RETURN");
	}
}

NS_TEST(test_dwarf_scope__global_vs_nm)
{
	for (int b = 0; b < TU_NBUILDS; b++) {
		const char *bin = tu_bin((enum tu_build)b);
		struct ns_dwarf *dw = tu_open((enum tu_build)b);
		struct ns_dwarf_var v;
		struct ns_arena a;
		char cmd[512], *out;
		unsigned long long want = 0;
		uint64_t got = 0;

		if (!dw)
			return;
		ns_arena_init(&a);
		snprintf(cmd, sizeof(cmd), "nm %s | grep ' restocked$'", bin);
		out = ns_test_capture(cmd);
		NS_CHECK(out && sscanf(out, "%llx", &want) == 1);
		free(out);
		NS_CHECK_OK(ns_dwarf_global(dw, "restocked", 0, &a, &v));
		NS_CHECK_INT(v.kind, NS_DWARF_GLOBAL);
		NS_CHECK(v.loc_len == 9 && v.loc[0] == DW_OP_addr_);
		if (v.loc_len == 9)
			memcpy(&got, v.loc + 1, 8);
		NS_CHECK_INT(got, want);
		NS_CHECK_STR(ns_dwarf_type_name(v.type, &a), "long int [3]");
		struct ns_err *err = ns_dwarf_global(dw, "nosuchvar", 0, &a, &v);
		NS_CHECK(err && err->code == NS_ERR_NOT_FOUND);
		ns_err_destroy(err);
		ns_arena_deinit(&a);
		ns_dwarf_destroy(dw);
	}
}

/* Bit fields, DWARF 5 (DW_AT_data_bit_offset) and DWARF 4 (DW_AT_bit_offset), vs
 * gdb's `ptype /o` "offset: bitpos" columns. */
NS_TEST(test_dwarf_scope__bitfields_vs_gdb)
{
	static const char src[] = "struct bf { unsigned a : 3; int b : 5; unsigned c : 30;\n"
	                          "  char d; unsigned e : 7; long f : 40; } x;\n"
	                          "int main(void) { return x.a; }\n";
	const char *flags[] = {"-gdwarf-5", "-gdwarf-4"};
	char path[256], bin[256], cmd[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/bf.c", tu_tmpdir());
	f = fopen(path, "w");
	fputs(src, f);
	fclose(f);
	for (int k = 0; k < 2; k++) {
		struct ns_dwarf *dw = NULL;
		const struct ns_dwarf_type *t;
		char *out;

		snprintf(bin, sizeof(bin), "%s/bf%d", tu_tmpdir(), k);
		snprintf(cmd, sizeof(cmd), "gcc -g %s -O0 %s -o %s", flags[k], path, bin);
		NS_CHECK(system(cmd) == 0);
		NS_CHECK_OK(ns_dwarf_open(bin, &dw));
		if (!dw)
			continue;
		t = ns_dwarf_find_type(dw, "struct bf", 0);
		NS_CHECK(t && t->nmembers == 6);
		out = gdb(bin, "-ex 'ptype /o struct bf'");
		for (size_t i = 0; t && out && i < t->nmembers; i++) {
			const struct ns_dwarf_member *m = &t->members[i];
			char key[32];
			const char *p, *ls;
			unsigned off = 0, bit = 0;
			snprintf(key, sizeof(key), " %s", m->name);
			// Find this member's line: "/*   0: 0   |   4 */    unsigned int a : 3;"
			for (p = strstr(out, key); p; p = strstr(p + 1, key))
				if (p[strlen(key)] == ' ' || p[strlen(key)] == ';')
					break;
			NS_CHECK(p != NULL);
			if (!p)
				continue;
			for (ls = p; ls > out && ls[-1] != '\n'; ls--)
				;
			if (m->bit_size) {
				NS_CHECK(sscanf(ls, "/* %u: %u", &off, &bit) == 2);
				NS_CHECK_INT(m->offset * 8 + m->bit_offset, off * 8 + bit);
				NS_CHECK_INT(m->bit_size, strtoul(strstr(p, " : ") + 3, NULL, 10));
				// The field fits the storage unit a reader loads at offset.
				NS_CHECK(m->bit_offset + m->bit_size <=
				         8 * ns_dwarf_type_strip(m->type)->size);
			} else {
				NS_CHECK(sscanf(ls, "/* %u", &off) == 1);
				NS_CHECK_INT(m->offset, off);
			}
		}
		free(out);
		ns_dwarf_destroy(dw);
	}
}
