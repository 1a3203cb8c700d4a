/* core/dwarf: line tables, the per-CU tree of code-owning DIEs, breakpoint addresses
 * for file:line and address -> function/file/line. */
#include <stdlib.h>
#include <string.h>

#include "dwarf/dwarf_internal.h"

/* ---- per-CU caches ---- */

static struct ns_err *load_files(struct ns_dwarf *dw, struct ns_dwarf__cu *cu)
{
	Dwarf_Die die;
	Dwarf_Error de = NULL;
	char **files = NULL;
	Dwarf_Signed n = 0, i;
	struct ns_err *err;
	int rc;

	if (cu->files_loaded)
		return NULL;
	cu->files_loaded = true;
	err = ns_dwarf__offdie(dw, cu->die_off, &die);
	if (err)
		return err;
	rc = dwarf_srcfiles(die, &files, &n, &de);
	dwarf_dealloc_die(die);
	if (rc == DW_DLV_ERROR)
		return ns_dwarf__err(dw, de, "reading line table file names");
	if (rc != DW_DLV_OK)
		return NULL;
	cu->files = ns_arena_calloc(&dw->arena, n > 0 ? (size_t)n : 1, sizeof(*cu->files));
	for (i = 0; i < n; i++) {
		if (cu->files && files[i])
			cu->files[cu->nfiles++] = ns_arena_strdup(&dw->arena, files[i]);
		dwarf_dealloc(dw->dbg, files[i], DW_DLA_STRING);
	}
	dwarf_dealloc(dw->dbg, files, DW_DLA_LIST);
	return cu->files ? NULL : &ns_err_nomem;
}

struct ns_err *ns_dwarf__load_lines(struct ns_dwarf *dw, struct ns_dwarf__cu *cu)
{
	Dwarf_Die die;
	Dwarf_Error de = NULL;
	Dwarf_Unsigned version = 0;
	Dwarf_Small tcount = 0;
	Dwarf_Line_Context ctx = NULL;
	Dwarf_Line *lines = NULL;
	Dwarf_Signed n = 0, i;
	struct ns_err *err;
	size_t cap = 0, fcap = 0, ncap = 0, icap = 0, nmap = 0;
	Dwarf_Unsigned *fnos = NULL; /* line-table file numbers seen ... */
	size_t *fidx = NULL;         /* ... and their fnames[] index */
	int rc;

	if (cu->lines_loaded)
		return NULL;
	cu->lines_loaded = true;
	err = ns_dwarf__offdie(dw, cu->die_off, &die);
	if (err)
		return err;
	rc = dwarf_srclines_b(die, &version, &tcount, &ctx, &de);
	dwarf_dealloc_die(die);
	if (rc == DW_DLV_ERROR)
		return ns_dwarf__err(dw, de, "reading line table");
	if (rc != DW_DLV_OK)
		return NULL;
	rc = dwarf_srclines_from_linecontext(ctx, &lines, &n, &de);
	if (rc == DW_DLV_ERROR) {
		dwarf_srclines_dealloc_b(ctx);
		return ns_dwarf__err(dw, de, "reading line table rows");
	}
	for (i = 0; rc == DW_DLV_OK && i < n && !err; i++) {
		struct ns_dwarf__row row = {0};
		Dwarf_Addr addr = 0;
		Dwarf_Unsigned lno = 0, col = 0, fno = 0;
		Dwarf_Bool stmt = 0, end = 0;
		size_t f, m;

		if (dwarf_lineaddr(lines[i], &addr, &de) != DW_DLV_OK ||
		    dwarf_lineno(lines[i], &lno, &de) != DW_DLV_OK ||
		    dwarf_lineoff_b(lines[i], &col, &de) != DW_DLV_OK ||
		    dwarf_line_srcfileno(lines[i], &fno, &de) != DW_DLV_OK ||
		    dwarf_linebeginstatement(lines[i], &stmt, &de) != DW_DLV_OK ||
		    dwarf_lineendsequence(lines[i], &end, &de) != DW_DLV_OK) {
			err = ns_dwarf__err(dw, de, "reading line table row");
			break;
		}
		for (m = 0; m < nmap && fnos[m] != fno; m++)
			;
		if (m == nmap) {
			// DWARF 5 lists the primary file twice (entries 0 and 1): map file
			// numbers with the same path to one name.
			char *src = NULL;
			const char *name = "??";
			if (!ns_dwarf__grow((void **)&fnos, &fcap, m + 1, sizeof(*fnos)) ||
			    !ns_dwarf__grow((void **)&fidx, &icap, m + 1, sizeof(*fidx)) ||
			    !ns_dwarf__grow((void **)&cu->fnames, &ncap, cu->nfnames + 1,
			                    sizeof(*cu->fnames))) {
				err = &ns_err_nomem;
				break;
			}
			if (dwarf_linesrc(lines[i], &src, &de) == DW_DLV_OK && src) {
				name = ns_arena_strdup(&dw->arena, src);
				dwarf_dealloc(dw->dbg, src, DW_DLA_STRING);
			} else {
				ns_dwarf__drop(dw, de);
				de = NULL;
			}
			if (!name)
				name = "??";
			for (f = 0; f < cu->nfnames && strcmp(cu->fnames[f], name) != 0; f++)
				;
			if (f == cu->nfnames)
				cu->fnames[cu->nfnames++] = name;
			fnos[m] = fno;
			fidx[m] = f;
			nmap++;
		}
		f = fidx[m];
		row.addr = addr;
		row.line = (unsigned)lno;
		row.column = (unsigned)col;
		row.file = (unsigned)f;
		row.stmt = stmt;
		row.end_seq = end;
		if (!ns_dwarf__grow((void **)&cu->rows, &cap, cu->nrows + 1, sizeof(*cu->rows))) {
			err = &ns_err_nomem;
			break;
		}
		cu->rows[cu->nrows++] = row;
	}
	free(fnos);
	free(fidx);
	dwarf_srclines_dealloc_b(ctx);
	if (cu->fnames) {
		// fnames was malloc'd for growth; move it into the arena.
		const char **a = ns_arena_calloc(&dw->arena, cu->nfnames + 1, sizeof(*a));
		if (a)
			memcpy(a, cu->fnames, cu->nfnames * sizeof(*a));
		free(cu->fnames);
		cu->fnames = a;
		if (!a) {
			cu->nfnames = 0;
			cu->nrows = 0;
			return &ns_err_nomem;
		}
	}
	return err;
}

static bool is_scope_tag(int tag)
{
	return tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine ||
	       tag == DW_TAG_lexical_block;
}

struct nodes_ctx {
	struct ns_dwarf__cu *cu;
	int pidx, depth;
	size_t *cap;
	uint64_t cu_base;
};

static struct ns_err *node_cb(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag, void *ctx)
{
	struct nodes_ctx *c = ctx;
	struct ns_dwarf__cu *cu = c->cu;
	struct ns_dwarf__range *r = NULL;
	size_t nr = 0;
	struct nodes_ctx sub = *c;
	Dwarf_Error de = NULL;
	struct ns_err *err;

	if (!is_scope_tag(tag))
		return NULL;
	err = ns_dwarf__die_ranges(dw, child, c->cu_base, &r, &nr);
	if (!err && nr) {
		struct ns_dwarf__node *nd;
		Dwarf_Addr low = 0;
		uint64_t dl = 0;
		if (!ns_dwarf__grow((void **)&cu->nodes, c->cap, cu->nnodes + 1,
		                    sizeof(*cu->nodes)))
			return &ns_err_nomem;
		nd = &cu->nodes[cu->nnodes];
		memset(nd, 0, sizeof(*nd));
		dwarf_dieoffset(child, &nd->off, &de);
		nd->tag = tag;
		nd->parent = c->pidx;
		nd->ranges = r;
		nd->nranges = nr;
		nd->low = r[0].lo;
		for (size_t k = 1; k < nr; k++)
			if (r[k].lo < nd->low)
				nd->low = r[k].lo;
		if (dwarf_lowpc(child, &low, &de) == DW_DLV_OK)
			nd->low = low;
		else
			ns_dwarf__drop(dw, de);
		if (tag != DW_TAG_lexical_block) {
			nd->name = ns_dwarf__die_name(dw, child);
			if (ns_dwarf__attr_udata_o(dw, child, DW_AT_decl_line, &dl))
				nd->decl_line = (unsigned)dl;
		}
		sub.pidx = (int)cu->nnodes++;
	}
	// A lexical block without ranges is transparent; an abstract or
	// declared subprogram owns no code.
	if (!err && (nr || tag == DW_TAG_lexical_block) && c->depth < 64) {
		sub.depth = c->depth + 1;
		err = ns_dwarf__for_each_child(dw, child, "reading DIE children", node_cb, &sub);
	}
	return err;
}

static struct ns_err *walk_nodes(struct ns_dwarf *dw, struct ns_dwarf__cu *cu, Dwarf_Die parent,
                                 int pidx, int depth, size_t *cap, uint64_t cu_base)
{
	struct nodes_ctx c = {cu, pidx, depth, cap, cu_base};

	return ns_dwarf__for_each_child(dw, parent, "reading DIE children", node_cb, &c);
}

struct ns_err *ns_dwarf__load_nodes(struct ns_dwarf *dw, struct ns_dwarf__cu *cu)
{
	Dwarf_Die die;
	Dwarf_Addr base = 0;
	Dwarf_Error de = NULL;
	struct ns_err *err;
	size_t cap = 0;

	if (cu->nodes_loaded)
		return NULL;
	cu->nodes_loaded = true;
	err = ns_dwarf__offdie(dw, cu->die_off, &die);
	if (err)
		return err;
	if (dwarf_lowpc(die, &base, &de) != DW_DLV_OK) {
		ns_dwarf__drop(dw, de);
		base = 0;
	}
	err = walk_nodes(dw, cu, die, -1, 0, &cap, base);
	dwarf_dealloc_die(die);
	if (cu->nodes) {
		struct ns_dwarf__node *a = ns_arena_calloc(&dw->arena, cu->nnodes + 1, sizeof(*a));
		if (a)
			memcpy(a, cu->nodes, cu->nnodes * sizeof(*a));
		free(cu->nodes);
		cu->nodes = a;
		if (!a) {
			cu->nnodes = 0;
			return &ns_err_nomem;
		}
	}
	return err;
}

int ns_dwarf__node_at(const struct ns_dwarf__cu *cu, uint64_t pc)
{
	int cur = -1;

	// Nodes are in preorder, so a child always follows its parent.
	for (size_t i = 0; i < cu->nnodes; i++) {
		const struct ns_dwarf__node *n = &cu->nodes[i];
		if (n->parent == cur && ns_dwarf__ranges_contain(n->ranges, n->nranges, pc))
			cur = (int)i;
	}
	return cur;
}

static int func_node(const struct ns_dwarf__cu *cu, int i)
{
	while (i >= 0 && cu->nodes[i].tag == DW_TAG_lexical_block)
		i = cu->nodes[i].parent;
	return i;
}

static int outer_func_node(const struct ns_dwarf__cu *cu, int i)
{
	int res = -1;

	for (; i >= 0; i = cu->nodes[i].parent)
		if (cu->nodes[i].tag == DW_TAG_subprogram)
			res = i;
	return res;
}

/* ---- file matching ---- */

static bool path_match(const char *table, const char *query)
{
	size_t lt = strlen(table), lq = strlen(query);

	if (strcmp(table, query) == 0)
		return true;
	// "inventory.c" or "targets/inventory.c" match trailing components.
	if (lq < lt && table[lt - lq - 1] == '/' && strcmp(table + lt - lq, query) == 0)
		return true;
	// A relative table name against an absolute query.
	if (lt < lq && query[lq - lt - 1] == '/' && strcmp(query + lq - lt, table) == 0)
		return true;
	return false;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

/* ---- breakpoint addresses ---- */

struct run {
	uint64_t addr;
	unsigned column;
	struct ns_dwarf__cu *cu;
	int node;  /* innermost node */
	int fnode; /* innermost function node */
	bool keep;
};

static int run_cmp(const void *a, const void *b)
{
	const struct run *x = a, *y = b;

	if (x->cu != y->cu)
		return x->cu < y->cu ? -1 : 1;
	if (x->node != y->node)
		return x->node < y->node ? -1 : 1;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static int loc_cmp(const void *a, const void *b)
{
	const struct ns_dwarf_bp_loc *x = a, *y = b;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static int file_index(const struct ns_dwarf__cu *cu, const char *path)
{
	for (size_t f = 0; f < cu->nfnames; f++)
		if (strcmp(cu->fnames[f], path) == 0)
			return (int)f;
	return -1;
}

/* Lowest line with an is_stmt row >= @line in @path over the matched CUs; 0 if none. */
static unsigned next_line(struct ns_dwarf__cu **cus, size_t ncus, const char *path, unsigned line,
                          uint64_t *first_addr, struct ns_dwarf__cu **first_cu)
{
	unsigned best = 0;

	for (size_t c = 0; c < ncus; c++) {
		int f = file_index(cus[c], path);
		for (size_t i = 0; f >= 0 && i < cus[c]->nrows; i++) {
			const struct ns_dwarf__row *r = &cus[c]->rows[i];
			if (!r->stmt || r->end_seq || r->file != (unsigned)f || r->line < line)
				continue;
			if (!best || r->line < best || (r->line == best && r->addr < *first_addr)) {
				best = r->line;
				*first_addr = r->addr;
				*first_cu = cus[c];
			}
		}
	}
	return best;
}

/* Lowest and highest line of @path's rows inside top-level function node @fn. */
static void func_span(const struct ns_dwarf__cu *cu, int fn, const char *path, unsigned *lo,
                      unsigned *hi)
{
	const struct ns_dwarf__node *n = &cu->nodes[fn];
	int f = file_index(cu, path);

	*lo = 0;
	*hi = 0;
	for (size_t i = 0; f >= 0 && i < cu->nrows; i++) {
		const struct ns_dwarf__row *r = &cu->rows[i];
		if (r->end_seq || r->file != (unsigned)f ||
		    !ns_dwarf__ranges_contain(n->ranges, n->nranges, r->addr))
			continue;
		if (!*lo || r->line < *lo)
			*lo = r->line;
		if (r->line > *hi)
			*hi = r->line;
	}
}

static struct ns_err *no_code(struct ns_dwarf__cu **cus, size_t ncus, const char *path,
                              unsigned line)
{
	const char *best = NULL;
	unsigned best_hi = 0;

	// Name the function that ends last before @line.
	for (size_t c = 0; c < ncus; c++) {
		for (size_t i = 0; i < cus[c]->nnodes; i++) {
			unsigned lo, hi;
			if (cus[c]->nodes[i].parent != -1 ||
			    cus[c]->nodes[i].tag != DW_TAG_subprogram)
				continue;
			func_span(cus[c], (int)i, path, &lo, &hi);
			if (lo && hi < line && hi > best_hi) {
				best_hi = hi;
				best = cus[c]->nodes[i].name;
			}
		}
	}
	return ns_err_create(NS_ERR_NOT_FOUND, "line %u has no code (past the end of %s)", line,
	                     best ? best : base_name(path));
}

struct ns_err *ns_dwarf_breakpoint_addrs(struct ns_dwarf *dw, const char *file, unsigned line,
                                         struct ns_arena *arena, struct ns_dwarf_bp_lines *out)
{
	struct ns_dwarf__cu **cus = NULL;
	struct run *runs = NULL;
	size_t ncus = 0, ccap = 0, nruns = 0, rcap = 0, nkeep = 0, i, k;
	const char *path = NULL;
	struct ns_dwarf__cu *first_cu = NULL;
	uint64_t first_addr = 0;
	unsigned target;
	struct ns_dwarf_bp_loc *locs;
	struct ns_err *err;

	err = ns_dwarf__load_cus(dw);
	if (err)
		return err;
	// Cheap pass: the file lists of the line-table headers.
	for (i = 0; i < dw->ncus; i++) {
		struct ns_dwarf__cu *cu = &dw->cus[i];
		bool hit = false;
		err = load_files(dw, cu);
		if (err)
			goto out;
		for (k = 0; k < cu->nfiles && !hit; k++)
			hit = path_match(cu->files[k], file) ||
			      strcmp(base_name(cu->files[k]), base_name(file)) == 0;
		if (!hit)
			continue;
		err = ns_dwarf__load_lines(dw, cu);
		if (!err)
			err = ns_dwarf__load_nodes(dw, cu);
		if (err)
			goto out;
		for (k = 0; k < cu->nfnames; k++) {
			if (path ? strcmp(cu->fnames[k], path) == 0
			         : path_match(cu->fnames[k], file)) {
				path = cu->fnames[k];
				break;
			}
		}
		if (k == cu->nfnames)
			continue;
		if (!ns_dwarf__grow((void **)&cus, &ccap, ncus + 1, sizeof(*cus))) {
			err = &ns_err_nomem;
			goto out;
		}
		cus[ncus++] = cu;
	}
	if (!path) {
		err = ns_err_create(NS_ERR_NOT_FOUND, "no file %s in %s", file, dw->path);
		goto out;
	}

	target = next_line(cus, ncus, path, line, &first_addr, &first_cu);
	if (!target) {
		err = ns_err_create(NS_ERR_NOT_FOUND, "line %u has no code (past the end of %s)",
		                    line, base_name(path));
		goto out;
	}
	if (target != line) {
		// Moving down is fine inside a function, not across into the next one.
		int fn = outer_func_node(first_cu, ns_dwarf__node_at(first_cu, first_addr));
		if (fn >= 0) {
			unsigned lo, hi;
			const struct ns_dwarf__node *n = &first_cu->nodes[fn];
			func_span(first_cu, fn, path, &lo, &hi);
			if (line < lo && (!n->decl_line || line < n->decl_line)) {
				err = no_code(cus, ncus, path, line);
				goto out;
			}
		}
	}

	// Runs: consecutive is_stmt rows of the target line (non-stmt rows in between
	// neither break nor extend a run); one candidate address per run.
	for (size_t c = 0; c < ncus; c++) {
		struct ns_dwarf__cu *cu = cus[c];
		int f = file_index(cu, path);
		bool in_run = false;
		for (i = 0; i < cu->nrows; i++) {
			const struct ns_dwarf__row *r = &cu->rows[i];
			if (r->end_seq) {
				in_run = false;
				continue;
			}
			if (!r->stmt)
				continue;
			if (r->file != (unsigned)f || r->line != target) {
				in_run = false;
				continue;
			}
			if (in_run)
				continue;
			in_run = true;
			if (!ns_dwarf__grow((void **)&runs, &rcap, nruns + 1, sizeof(*runs))) {
				err = &ns_err_nomem;
				goto out;
			}
			runs[nruns].addr = r->addr;
			runs[nruns].column = r->column;
			runs[nruns].cu = cu;
			runs[nruns].node = ns_dwarf__node_at(cu, r->addr);
			runs[nruns].fnode = func_node(cu, runs[nruns].node);
			runs[nruns].keep = false;
			nruns++;
		}
	}
	// Per block (within one function or inlined copy): the lowest run, plus every
	// run at that run's column (code the compiler duplicated).
	if (nruns)
		qsort(runs, nruns, sizeof(*runs), run_cmp);
	for (i = 0; i < nruns; i = k) {
		for (k = i; k < nruns && runs[k].cu == runs[i].cu && runs[k].node == runs[i].node;
		     k++)
			if (runs[k].column == runs[i].column &&
			    (k == i || runs[k].addr != runs[k - 1].addr))
				runs[k].keep = true;
	}
	for (i = 0; i < nruns; i++)
		nkeep += runs[i].keep;
	locs = ns_arena_calloc(arena, nkeep ? nkeep : 1, sizeof(*locs));
	out->file = ns_arena_strdup(arena, path);
	if (!locs || !out->file) {
		err = &ns_err_nomem;
		goto out;
	}
	for (i = 0, k = 0; i < nruns; i++) {
		const struct ns_dwarf__node *fnd;
		if (!runs[i].keep)
			continue;
		fnd = runs[i].fnode >= 0 ? &runs[i].cu->nodes[runs[i].fnode] : NULL;
		locs[k].addr = runs[i].addr;
		locs[k].line = target;
		locs[k].column = runs[i].column;
		locs[k].function = fnd ? fnd->name : NULL;
		locs[k].inlined = fnd && fnd->tag == DW_TAG_inlined_subroutine;
		k++;
	}
	qsort(locs, nkeep, sizeof(*locs), loc_cmp);
	out->line = target;
	out->n = nkeep;
	out->locs = locs;
out:
	free(cus);
	free(runs);
	return err;
}

/* ---- address -> line ---- */

struct ns_err *ns_dwarf_where(struct ns_dwarf *dw, uint64_t addr, struct ns_arena *arena,
                              struct ns_dwarf_where *out)
{
	struct ns_dwarf_where w = {0};
	struct ns_dwarf__cu *cu = NULL;
	const struct ns_dwarf__sym *sym;
	struct ns_err *err;

	(void)arena; // names are owned by @dw
	if (dw->dbg) {
		err = ns_dwarf__load_cus(dw);
		if (err)
			return err;
		cu = ns_dwarf__cu_at(dw, addr);
	}
	if (cu) {
		int node, fn, outer;
		err = ns_dwarf__load_lines(dw, cu);
		if (!err)
			err = ns_dwarf__load_nodes(dw, cu);
		if (err)
			return err;
		for (size_t i = 0; i + 1 < cu->nrows; i++) {
			const struct ns_dwarf__row *r = &cu->rows[i];
			if (r->end_seq || r->addr > addr || cu->rows[i + 1].addr <= addr)
				continue;
			w.file = cu->fnames[r->file];
			w.line = r->line;
			w.column = r->column;
			break;
		}
		node = ns_dwarf__node_at(cu, addr);
		fn = func_node(cu, node);
		outer = outer_func_node(cu, node);
		if (fn >= 0)
			w.function = cu->nodes[fn].name;
		if (outer >= 0)
			w.func_low = cu->nodes[outer].low;
	}
	sym = ns_dwarf__sym_at(dw, addr);
	if (sym) {
		if (!w.function)
			w.function = sym->name;
		if (!w.func_low)
			w.func_low = sym->addr;
	}
	if (!w.function && !w.file)
		return ns_err_create(NS_ERR_NOT_FOUND, "no function or line at 0x%llx in %s",
		                     (unsigned long long)addr, dw->path);
	*out = w;
	return NULL;
}

size_t ns_dwarf_func_ranges(struct ns_dwarf *dw, uint64_t addr, uint64_t *ranges, size_t max)
{
	size_t n = 0;
	struct ns_dwarf__cu *cu = NULL;
	if (dw->dbg && !ns_dwarf__load_cus(dw))
		cu = ns_dwarf__cu_at(dw, addr);
	if (cu && !ns_dwarf__load_nodes(dw, cu)) {
		int outer = outer_func_node(cu, ns_dwarf__node_at(cu, addr));
		// The whole subprogram: gcc gives a function split into hot and .cold
		// parts DW_AT_ranges (DWARF 5 section 2.17.3), one entry per part.
		for (size_t i = 0; outer >= 0 && i < cu->nodes[outer].nranges && n < max; i++) {
			ranges[2 * n] = cu->nodes[outer].ranges[i].lo;
			ranges[2 * n + 1] = cu->nodes[outer].ranges[i].hi;
			n++;
		}
	}
	if (n == 0 && max > 0) {
		const struct ns_dwarf__sym *sym = ns_dwarf__sym_at(dw, addr);
		if (sym && sym->size) {
			ranges[0] = sym->addr;
			ranges[1] = sym->addr + sym->size;
			n = 1;
		}
	}
	return n;
}
