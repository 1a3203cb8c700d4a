/* Call sites and register rules for entry values, checked against objdump --dwarf=info
 * (DW_TAG_call_site / DW_TAG_GNU_call_site DIEs) and readelf --debug-dump=frames-interp. */
#include "dwarf_test_util.h"

static const char *const dw_regs[17] = {"rax", "rdx", "rcx", "rbx", "rsi", "rdi",
                                        "rbp", "rsp", "r8",  "r9",  "r10", "r11",
                                        "r12", "r13", "r14", "r15", "ra"};

/* ---- readelf frames-interp ---- */

/* Rule text per DWARF register 0..16 and the CFA at @pc ("u" when no column). An FDE
 * without rows of its own has its CIE's initial rules. */
static bool readelf_rules(const char *bin, uint64_t pc, char rules[17][16], char *cfa,
                          size_t cfa_cap)
{
	struct cie {
		unsigned long long off;
		char rules[17][16], cfa[32];
	};
	static struct cie cies[16];
	size_t ncies = 0;
	char cmd[512], *out, *line, *save = NULL;
	int cols[24], ncols = 0;
	bool in_fde = false, in_cie = false, found = false;
	struct cie *cur_cie = NULL;

	snprintf(cmd, sizeof(cmd), "readelf --debug-dump=frames-interp %s", bin);
	out = ns_test_capture(cmd);
	for (int i = 0; i < 17; i++)
		snprintf(rules[i], 16, "u");
	for (line = out ? strtok_r(out, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save)) {
		const char *p = strstr(line, "FDE cie=");
		unsigned long long lo, hi, loc, off, cieoff;
		if (p) {
			in_cie = false;
			if (found)
				break; // FDEs do not overlap: done
			p = strstr(p, "pc=");
			in_fde = p && sscanf(p, "pc=%llx..%llx", &lo, &hi) == 2 && pc >= lo &&
			         pc < hi;
			if (in_fde && sscanf(strstr(line, "cie="), "cie=%llx", &cieoff) == 1) {
				for (size_t k = 0; k < ncies; k++) {
					if (cies[k].off != cieoff)
						continue;
					memcpy(rules, cies[k].rules, sizeof(cies[k].rules));
					snprintf(cfa, cfa_cap, "%s", cies[k].cfa);
					found = true;
				}
			}
			continue;
		}
		if (strstr(line, " CIE")) {
			in_fde = false;
			in_cie = sscanf(line, "%llx", &off) == 1 && ncies < 16;
			if (in_cie) {
				cur_cie = &cies[ncies++];
				cur_cie->off = off;
				cur_cie->cfa[0] = 0;
				for (int i = 0; i < 17; i++)
					snprintf(cur_cie->rules[i], 16, "u");
			}
			continue;
		}
		if (!in_fde && !in_cie)
			continue;
		char *toks[24];
		int nt = 0;
		char copy[512];
		snprintf(copy, sizeof(copy), "%s", line);
		for (char *s2 = NULL, *t = strtok_r(copy, " ", &s2); t && nt < 24;
		     t = strtok_r(NULL, " ", &s2))
			toks[nt++] = t;
		if (nt >= 2 && strcmp(toks[0], "LOC") == 0) {
			ncols = 0;
			for (int i = 2; i < nt; i++) {
				int r = -1;
				for (int k = 0; k < 17; k++)
					if (strcmp(toks[i], dw_regs[k]) == 0)
						r = k;
				cols[ncols++] = r;
			}
			continue;
		}
		if (nt < 2 || sscanf(toks[0], "%llx", &loc) != 1)
			continue;
		if (in_cie) {
			snprintf(cur_cie->cfa, sizeof(cur_cie->cfa), "%s", toks[1]);
			for (int i = 0; i < ncols && i + 2 < nt; i++)
				if (cols[i] >= 0)
					snprintf(cur_cie->rules[cols[i]], 16, "%s", toks[i + 2]);
		} else if (loc <= pc) {
			found = true;
			snprintf(cfa, cfa_cap, "%s", toks[1]);
			for (int i = 0; i < ncols && i + 2 < nt; i++)
				if (cols[i] >= 0)
					snprintf(rules[cols[i]], 16, "%s", toks[i + 2]);
		}
	}
	free(out);
	return found;
}

static void rule_text(const struct ns_dwarf_reg_rule *r, char *buf, size_t cap)
{
	switch (r->kind) {
	case NS_DWARF_RULE_SAME:
	case NS_DWARF_RULE_UNDEFINED:
		snprintf(buf, cap, "u"); // readelf prints "u" for no rule
		break;
	case NS_DWARF_RULE_OFFSET:
		snprintf(buf, cap, "c%+lld", (long long)r->offset);
		break;
	default:
		snprintf(buf, cap, "other");
	}
}

static void check_rules_at(const char *bin, struct ns_dwarf *dw, uint64_t pc)
{
	char want[17][16], cfa[64] = "", got[32];
	struct ns_dwarf_reg_rule r[17];

	NS_CHECK(readelf_rules(bin, pc, want, cfa, sizeof(cfa)));
	NS_CHECK_OK(ns_dwarf_reg_rules_at(dw, pc, r));
	for (int i = 0; i < 17; i++) {
		rule_text(&r[i], got, sizeof(got));
		if (strcmp(got, want[i]) != 0)
			ns_test_fail(__FILE__, __LINE__, "pc 0x%llx %s: got %s, readelf %s",
			             (unsigned long long)pc, dw_regs[i], got, want[i]);
	}
}

/* ---- objdump --dwarf=info call sites ---- */

struct od_param {
	unsigned reg;
	uint8_t val[64];
	size_t len;
};

struct od_site {
	uint64_t ret;
	unsigned long long origin;
	size_t np;
	struct od_param p[8];
};

/* "N byte block: 7f 0 33" -> bytes. */
static size_t block_bytes(const char *s, uint8_t *out, size_t cap)
{
	const char *p = strstr(s, "byte block:");
	size_t n = 0;
	if (!p)
		return 0;
	p += strlen("byte block:");
	while (n < cap) {
		char *end;
		unsigned long v = strtoul(p, &end, 16);
		if (end == p || (*end != ' ' && *end != '\t' && *end != 0))
			break;
		out[n++] = (uint8_t)v;
		p = end;
		while (*p == ' ')
			p++;
		if (*p == '\t' || *p == '(' || !*p)
			break;
	}
	return n;
}

/* Call sites of the subprogram named @fname (DIE offsets of all its DIEs). */
static size_t objdump_sites(const char *bin, const char *fname, struct od_site *sites, size_t max,
                            uint8_t *caller_fb)
{
	char cmd[512], *out, *line, *save = NULL;
	unsigned long long fn_offs[8], cur_off = 0;
	size_t nfn = 0, ns = 0, nall = 0;
	static struct od_site all[512];
	enum { NONE, SUBP, SITE, PARAM } cur = NONE;
	int site_depth = -1;

	snprintf(cmd, sizeof(cmd), "objdump --dwarf=info %s", bin);
	out = ns_test_capture(cmd);
	*caller_fb = 0;
	for (line = out ? strtok_r(out, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save)) {
		int depth;
		unsigned long long off;
		char tag[64];
		if (sscanf(line, " <%d><%llx>: Abbrev Number: %*d (%63[^)])", &depth, &off, tag) ==
		    3) {
			cur_off = off;
			if (!strcmp(tag, "DW_TAG_subprogram")) {
				cur = SUBP;
			} else if (!strcmp(tag, "DW_TAG_call_site") ||
			           !strcmp(tag, "DW_TAG_GNU_call_site")) {
				cur = SITE;
				site_depth = depth;
				if (nall < 512)
					memset(&all[nall++], 0, sizeof(all[0]));
			} else if ((!strcmp(tag, "DW_TAG_call_site_parameter") ||
			            !strcmp(tag, "DW_TAG_GNU_call_site_parameter")) &&
			           depth == site_depth + 1 && nall) {
				cur = PARAM;
				if (all[nall - 1].np < 8)
					all[nall - 1].np++;
			} else {
				cur = NONE;
			}
			continue;
		}
		if (cur == SUBP && strstr(line, "DW_AT_name") && strstr(line, ": ") &&
		    !strcmp(strrchr(line, ' ') + 1, fname) && nfn < 8)
			fn_offs[nfn++] = cur_off;
		if (cur == SUBP && strstr(line, "DW_AT_frame_base"))
			block_bytes(line, caller_fb, 1); // every function here uses 9c
		if (cur == SITE && nall) {
			unsigned long long v;
			const char *p;
			if ((p = strstr(line, "DW_AT_call_return_pc")) ||
			    (p = strstr(line, "DW_AT_low_pc")))
				if (sscanf(strchr(p, ':') + 1, " %llx", &v) == 1)
					all[nall - 1].ret = v;
			if ((p = strstr(line, "DW_AT_call_origin")) ||
			    (p = strstr(line, "DW_AT_abstract_origin")))
				if (sscanf(strchr(p, '<'), "<%llx>", &v) == 1)
					all[nall - 1].origin = v;
		}
		if (cur == PARAM && nall) {
			struct od_site *s = &all[nall - 1];
			struct od_param *pp = &s->p[s->np - 1];
			uint8_t b[4];
			if (strstr(line, "DW_AT_location")) {
				if (block_bytes(line, b, 4) == 1 && b[0] >= 0x50 && b[0] <= 0x6f)
					pp->reg = b[0] - 0x50;
				else
					pp->reg = 999;
			}
			if (strstr(line, "DW_AT_call_value") ||
			    strstr(line, "DW_AT_GNU_call_site_value"))
				pp->len = block_bytes(line, pp->val, sizeof(pp->val));
		}
	}
	free(out);
	for (size_t i = 0; i < nall; i++) {
		bool match = false;
		for (size_t k = 0; k < nfn; k++)
			match |= all[i].origin == fn_offs[k];
		if (!match || ns >= max)
			continue;
		// Keep only register parameters with a value, as the library does.
		struct od_site s = all[i];
		s.np = 0;
		for (size_t k = 0; k < all[i].np; k++)
			if (all[i].p[k].reg != 999 && all[i].p[k].len)
				s.p[s.np++] = all[i].p[k];
		if (s.np)
			sites[ns++] = s;
	}
	return ns;
}

static void check_sites(enum tu_build b, const char *tag, const char *fname, size_t min_sites)
{
	const char *bin = tu_bin(b);
	struct ns_dwarf *dw = tu_open(b);
	struct ns_dwarf_bp_lines bl;
	struct ns_arena a;
	static struct od_site want[64];
	uint8_t fb = 0;

	if (!dw)
		return;
	ns_arena_init(&a);
	NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "inventory.c", tu_tag_line(tag), &a, &bl));
	size_t nwant = objdump_sites(bin, fname, want, 64, &fb);
	NS_CHECK(nwant >= min_sites);
	for (size_t i = 0; i < bl.n; i++) {
		const struct ns_dwarf_call_site *s = NULL, *s2 = NULL;
		size_t n = 0, n2 = 0;
		NS_CHECK_OK(ns_dwarf_call_sites(dw, bl.locs[i].addr, &a, &s, &n));
		NS_CHECK_INT(n, nwant);
		for (size_t k = 0; k < n && k < nwant; k++) {
			NS_CHECK_INT(s[k].return_pc, want[k].ret);
			NS_CHECK_INT(s[k].nparams, want[k].np);
			for (size_t j = 0; j < s[k].nparams && j < want[k].np; j++) {
				NS_CHECK_INT(s[k].params[j].dwarf_reg, want[k].p[j].reg);
				NS_CHECK_INT(s[k].params[j].value_len, want[k].p[j].len);
				NS_CHECK(s[k].params[j].value_len == want[k].p[j].len &&
				         !memcmp(s[k].params[j].value, want[k].p[j].val,
				                 want[k].p[j].len));
			}
			NS_CHECK_INT(s[k].caller_frame_base_len, 1);
			NS_CHECK(s[k].caller_frame_base && s[k].caller_frame_base[0] == fb);
			// The caller's CFA at the call against readelf.
			char rules[17][16], cfa[64] = "", got[64];
			NS_CHECK(s[k].caller_cfa_known);
			NS_CHECK(readelf_rules(bin, s[k].return_pc - 1, rules, cfa, sizeof(cfa)));
			snprintf(got, sizeof(got), "%s%+lld",
			         s[k].caller_cfa.reg < 16 ? dw_regs[s[k].caller_cfa.reg] : "?",
			         (long long)s[k].caller_cfa.offset);
			NS_CHECK_STR(got, cfa);
		}
		// Cached: the same array again.
		NS_CHECK_OK(ns_dwarf_call_sites(dw, bl.locs[i].addr, &a, &s2, &n2));
		NS_CHECK(s2 == s && n2 == n);
	}
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_calls__restock_sites_vs_objdump)
{
	check_sites(TU_O2, "TAG_BINS", "restock", 1);
	check_sites(TU_O2_DWARF4, "TAG_BINS", "restock", 1);
}

NS_TEST(test_dwarf_calls__weigh_sites_vs_objdump)
{
	check_sites(TU_O2, "TAG_WEIGH_RETURN", "weigh", 1);
	check_sites(TU_O2_DWARF4, "TAG_WEIGH_RETURN", "weigh", 1);
	check_sites(TU_O0, "TAG_WEIGH_RETURN", "weigh", 0);
}

NS_TEST(test_dwarf_calls__restock_site_value)
{
	// The example of the design: worker's call of restock passes `it` in rsi computed
	// from r14/r15.
	struct ns_dwarf *dw = tu_open(TU_O2);
	struct ns_dwarf_bp_lines bl;
	struct ns_arena a;
	const struct ns_dwarf_call_site *s = NULL;
	size_t n = 0;
	if (!dw)
		return;
	ns_arena_init(&a);
	NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "inventory.c", tu_tag_line("TAG_BINS"), &a, &bl));
	NS_CHECK_OK(ns_dwarf_call_sites(dw, bl.locs[0].addr, &a, &s, &n));
	NS_CHECK_INT(n, 1);
	bool rsi = false;
	for (size_t j = 0; n && j < s[0].nparams; j++)
		if (s[0].params[j].dwarf_reg == 4)
			rsi = s[0].params[j].value_len > 2 && s[0].params[j].value[0] == 0x7f;
	NS_CHECK(rsi);
	NS_CHECK(n && s[0].caller_cfa_known && s[0].caller_cfa.reg == 7);
	// A pc outside any function.
	struct ns_err *err = ns_dwarf_call_sites(dw, 0x10, &a, &s, &n);
	NS_CHECK(err && err->code == NS_ERR_NOT_FOUND);
	ns_err_destroy(err);
	ns_arena_deinit(&a);
	ns_dwarf_destroy(dw);
}

NS_TEST(test_dwarf_calls__reg_rules_vs_readelf)
{
	for (int b = 0; b < TU_NBUILDS; b++) {
		const char *bin = tu_bin((enum tu_build)b);
		struct ns_dwarf *dw = tu_open((enum tu_build)b);
		struct ns_arena a;
		if (!dw)
			continue;
		ns_arena_init(&a);
		static const char *const tags[] = {"TAG_BINS", "TAG_WEIGH_RETURN", "TAG_RESTOCK"};
		for (size_t t = 0; t < 3; t++) {
			struct ns_dwarf_bp_lines bl;
			NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "inventory.c",
			                                      tu_tag_line(tags[t]), &a, &bl));
			for (size_t i = 0; i < bl.n; i++)
				check_rules_at(bin, dw, bl.locs[i].addr);
		}
		// Every call site's return pc - 1 (in the callers, with saved registers).
		const struct ns_dwarf_call_site *s;
		size_t n = 0;
		struct ns_dwarf_bp_lines bl;
		NS_CHECK_OK(ns_dwarf_breakpoint_addrs(dw, "inventory.c", tu_tag_line("TAG_BINS"),
		                                      &a, &bl));
		if (bl.n && !ns_dwarf_call_sites(dw, bl.locs[0].addr, &a, &s, &n))
			for (size_t k = 0; k < n; k++)
				check_rules_at(bin, dw, s[k].return_pc - 1);
		struct ns_dwarf_reg_rule r[17];
		struct ns_err *err = ns_dwarf_reg_rules_at(dw, 0x10, r);
		NS_CHECK(err && err->code == NS_ERR_NOT_FOUND);
		ns_err_destroy(err);
		ns_arena_deinit(&a);
		ns_dwarf_destroy(dw);
	}
}
