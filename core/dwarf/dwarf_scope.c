/* core/dwarf: locations valid at a pc, variables in scope, globals. */
#include <stdlib.h>
#include <string.h>

#include "dwarf/dwarf_internal.h"

/* ---- locations ---- */

static bool read_uleb(const uint8_t *p, size_t end, size_t *pos, uint64_t *out)
{
	uint64_t v = 0;
	unsigned shift = 0;

	while (*pos < end) {
		uint8_t b = p[(*pos)++];
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
		if (!(b & 0x80)) {
			*out = v;
			return true;
		}
	}
	return false;
}

/* The expression bytes of location-list entry @index. DWARF 2-4 .debug_loc: libdwarf's
 * expression offset is right and a 2-byte length precedes it. DWARF 5
 * .debug_loclists: libdwarf 20210528 reports a wrong expression offset (list offset
 * + 1), so walk the list from @list_off counting entries as libdwarf does (every
 * entry up to DW_LLE_end_of_list) and check the entry kind matches @lle. */
static bool entry_expr(const uint8_t *sec, size_t size, bool v5, uint64_t list_off, uint64_t index,
                       unsigned lle, uint64_t expr_off, uint64_t *start, uint64_t *out)
{
	size_t pos;
	uint64_t a, len;

	if (!v5) {
		if (expr_off < 2 || expr_off > size)
			return false;
		len = (uint64_t)sec[expr_off - 2] | (uint64_t)sec[expr_off - 1] << 8;
		if (len > size - expr_off)
			return false;
		*start = expr_off;
		*out = len;
		return true;
	}
	pos = (size_t)list_off;
	for (uint64_t i = 0; pos < size && i <= index; i++) {
		unsigned kind = sec[pos++];
		bool has_expr = true;
		switch (kind) {
		case DW_LLE_end_of_list:
			return false;
		case DW_LLE_base_addressx:
			if (!read_uleb(sec, size, &pos, &a))
				return false;
			has_expr = false;
			break;
		case DW_LLE_offset_pair:
		case DW_LLE_startx_endx:
		case DW_LLE_startx_length:
			if (!read_uleb(sec, size, &pos, &a) || !read_uleb(sec, size, &pos, &a))
				return false;
			break;
		case 0x09: // DW_LLE_GNU_view_pair: two ULEB128 views, no expression
			if (!read_uleb(sec, size, &pos, &a) || !read_uleb(sec, size, &pos, &a))
				return false;
			has_expr = false;
			break;
		case DW_LLE_default_location:
			break;
		case DW_LLE_base_address:
			pos += 8;
			has_expr = false;
			break;
		case DW_LLE_start_end:
			pos += 16;
			break;
		case DW_LLE_start_length:
			pos += 8;
			if (pos > size || !read_uleb(sec, size, &pos, &a))
				return false;
			break;
		default:
			return false;
		}
		if (pos > size)
			return false;
		if (!has_expr) {
			if (i == index)
				return false;
			continue;
		}
		if (!read_uleb(sec, size, &pos, &len) || len > size - pos)
			return false;
		if (i == index) {
			if (kind != lle)
				return false;
			*start = pos;
			*out = len;
			return true;
		}
		pos += (size_t)len;
	}
	return false;
}

static struct ns_err *copy_expr(struct ns_arena *arena, const void *p, uint64_t len,
                                const uint8_t **out, size_t *outlen)
{
	uint8_t *b;

	if (!len)
		return NULL;
	b = ns_arena_alloc(arena, (size_t)len);
	if (!b)
		return &ns_err_nomem;
	memcpy(b, p, (size_t)len);
	*out = b;
	*outlen = (size_t)len;
	return NULL;
}

static struct ns_err *from_list(struct ns_dwarf *dw, Dwarf_Attribute a, uint64_t pc,
                                struct ns_arena *arena, const uint8_t **out, size_t *outlen)
{
	Dwarf_Loc_Head_c head = NULL;
	Dwarf_Unsigned count = 0, i, expr_off = 0, entry_off = 0, index = 0;
	unsigned entry_lle = 0;
	Dwarf_Error de = NULL;
	unsigned kind = 0;
	struct ns_err *err = NULL;
	bool found = false;
	int rc;

	rc = dwarf_get_loclist_c(a, &head, &count, &de);
	if (rc == DW_DLV_ERROR)
		return ns_dwarf__err(dw, de, "reading location list");
	if (rc != DW_DLV_OK)
		return NULL;
	if (dwarf_get_loclist_head_kind(head, &kind, &de) != DW_DLV_OK) {
		err = ns_dwarf__err(dw, de, "location list kind");
		goto out;
	}
	for (i = 0; i < count; i++) {
		Dwarf_Small lle = 0, source = 0;
		Dwarf_Unsigned rawlo = 0, rawhi = 0, nops = 0, eoff = 0, loff = 0;
		Dwarf_Bool unavail = 0;
		Dwarf_Addr lo = 0, hi = 0;
		Dwarf_Locdesc_c desc = NULL;

		if (dwarf_get_locdesc_entry_d(head, i, &lle, &rawlo, &rawhi, &unavail, &lo, &hi,
		                              &nops, &desc, &source, &eoff, &loff,
		                              &de) != DW_DLV_OK) {
			err = ns_dwarf__err(dw, de, "reading location list entry");
			goto out;
		}
		if (unavail || !nops)
			continue;
		if (kind == DW_LKIND_loclists && lle != DW_LLE_offset_pair &&
		    lle != DW_LLE_start_end && lle != DW_LLE_start_length &&
		    lle != DW_LLE_startx_endx && lle != DW_LLE_startx_length &&
		    lle != DW_LLE_default_location)
			continue;
		// DWARF 2-4 and 5 entries both come back with cooked (absolute) bounds;
		// base-address and end entries have empty ranges and never match.
		if ((pc >= lo && pc < hi) ||
		    (lle == DW_LLE_default_location && !found && kind == DW_LKIND_loclists)) {
			expr_off = eoff;
			entry_off = loff;
			index = i;
			entry_lle = lle;
			found = true;
			if (pc >= lo && pc < hi)
				break;
		}
	}
	if (found) {
		const char *secname = kind == DW_LKIND_loclists ? ".debug_loclists" : ".debug_loc";
		const uint8_t *sec = NULL;
		size_t size = 0;
		uint64_t len = 0, start = 0;

		if (kind != DW_LKIND_loclists && kind != DW_LKIND_loclist) {
			err = ns_err_create(NS_ERR_UNSUPPORTED, "%s: location list kind %u",
			                    dw->path, kind);
			goto out;
		}
		err = ns_dwarf__section(dw, secname, &sec, &size);
		if (err)
			goto out;
		if (!entry_expr(sec, size, kind == DW_LKIND_loclists, entry_off, index, entry_lle,
		                expr_off, &start, &len)) {
			err = ns_err_create(NS_ERR_FORMAT,
			                    "%s: bad location list entry at %s+0x%llx", dw->path,
			                    secname, (unsigned long long)entry_off);
			goto out;
		}
		err = copy_expr(arena, sec + start, len, out, outlen);
	}
out:
	dwarf_loc_head_c_dealloc(head);
	return err;
}

struct ns_err *ns_dwarf__location(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, uint64_t pc,
                                  struct ns_arena *arena, const uint8_t **out, size_t *len)
{
	Dwarf_Attribute a;
	Dwarf_Error de = NULL;
	Dwarf_Half form = 0;
	struct ns_err *err = NULL;
	int rc;

	*out = NULL;
	*len = 0;
	rc = dwarf_attr(die, at, &a, &de);
	if (rc == DW_DLV_ERROR)
		return ns_dwarf__err(dw, de, "reading location attribute");
	if (rc != DW_DLV_OK)
		return NULL;
	if (dwarf_whatform(a, &form, &de) != DW_DLV_OK) {
		err = ns_dwarf__err(dw, de, "location form");
	} else if (form == DW_FORM_exprloc) {
		Dwarf_Unsigned n = 0;
		Dwarf_Ptr p = NULL;
		if (dwarf_formexprloc(a, &n, &p, &de) != DW_DLV_OK)
			err = ns_dwarf__err(dw, de, "reading location expression");
		else
			err = copy_expr(arena, p, n, out, len);
	} else if (form == DW_FORM_block1 || form == DW_FORM_block2 || form == DW_FORM_block4 ||
	           form == DW_FORM_block) {
		Dwarf_Block *b = NULL;
		if (dwarf_formblock(a, &b, &de) != DW_DLV_OK) {
			err = ns_dwarf__err(dw, de, "reading location block");
		} else {
			err = copy_expr(arena, b->bl_data, b->bl_len, out, len);
			dwarf_dealloc(dw->dbg, b, DW_DLA_BLOCK);
		}
	} else {
		err = from_list(dw, a, pc, arena, out, len);
	}
	dwarf_dealloc_attribute(a);
	return err;
}

/* ---- variables ---- */

struct var_vec {
	struct ns_dwarf_var *v;
	size_t n, cap;
};

static struct ns_err *read_var(struct ns_dwarf *dw, Dwarf_Die die, enum ns_dwarf_var_kind kind,
                               uint64_t pc, struct ns_arena *arena, struct ns_dwarf_var *out)
{
	struct ns_err *err;
	uint64_t line = 0;

	memset(out, 0, sizeof(*out));
	out->kind = kind;
	out->name = ns_dwarf__die_name(dw, die);
	err = ns_dwarf__die_type(dw, die, &out->type);
	if (err)
		return err;
	if (ns_dwarf__attr_udata_o(dw, die, DW_AT_decl_line, &line))
		out->decl_line = (unsigned)line;
	err = ns_dwarf__location(dw, die, DW_AT_location, pc, arena, &out->loc, &out->loc_len);
	if (err)
		return err;
	if (ns_dwarf__attr_sdata(dw, die, DW_AT_const_value, &out->const_value))
		out->has_const = true;
	return NULL;
}

struct collect_ctx {
	bool want_params;
	enum ns_dwarf_var_kind kind;
	uint64_t pc;
	struct ns_arena *arena;
	struct var_vec *vv;
};

static struct ns_err *collect_cb(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag, void *ctx)
{
	struct collect_ctx *c = ctx;
	struct var_vec *vv = c->vv;
	struct ns_err *err;

	if (!((c->want_params && tag == DW_TAG_formal_parameter) ||
	      (!c->want_params && tag == DW_TAG_variable &&
	       !ns_dwarf__attr_flag(dw, child, DW_AT_declaration))))
		return NULL;
	if (!ns_dwarf__grow((void **)&vv->v, &vv->cap, vv->n + 1, sizeof(*vv->v)))
		return &ns_err_nomem;
	err = read_var(dw, child, c->kind, c->pc, c->arena, &vv->v[vv->n]);
	if (!err && vv->v[vv->n].name)
		vv->n++;
	return err;
}

/* Append the DW_TAG_formal_parameter (want_params) or DW_TAG_variable children of the
 * DIE at @off. */
static struct ns_err *collect(struct ns_dwarf *dw, Dwarf_Off off, bool want_params,
                              enum ns_dwarf_var_kind kind, uint64_t pc, struct ns_arena *arena,
                              struct var_vec *vv)
{
	struct collect_ctx c = {want_params, kind, pc, arena, vv};
	Dwarf_Die die;
	struct ns_err *err;

	err = ns_dwarf__offdie(dw, off, &die);
	if (err)
		return err;
	err = ns_dwarf__for_each_child(dw, die, "reading scope children", collect_cb, &c);
	dwarf_dealloc_die(die);
	return err;
}

struct ns_err *ns_dwarf_scope_at(struct ns_dwarf *dw, uint64_t pc, struct ns_arena *arena,
                                 struct ns_dwarf_scope *out)
{
	struct ns_dwarf_scope s = {0};
	struct ns_dwarf__cu *cu;
	struct var_vec vv = {0};
	struct ns_err *err;
	int node, fn, sub;

	err = ns_dwarf__load_cus(dw);
	if (err)
		return err;
	cu = ns_dwarf__cu_at(dw, pc);
	if (!cu)
		return ns_err_create(NS_ERR_NOT_FOUND, "no function contains 0x%llx in %s",
		                     (unsigned long long)pc, dw->path);
	err = ns_dwarf__load_nodes(dw, cu);
	if (err)
		return err;
	node = ns_dwarf__node_at(cu, pc);
	for (fn = node; fn >= 0 && cu->nodes[fn].tag == DW_TAG_lexical_block;)
		fn = cu->nodes[fn].parent;
	if (fn < 0)
		return ns_err_create(NS_ERR_NOT_FOUND, "no function contains 0x%llx in %s",
		                     (unsigned long long)pc, dw->path);
	s.pc = pc;
	s.function = cu->nodes[fn].name;
	for (sub = fn; sub >= 0 && cu->nodes[sub].tag != DW_TAG_subprogram;)
		sub = cu->nodes[sub].parent;
	if (sub >= 0) {
		Dwarf_Die die;
		err = ns_dwarf__offdie(dw, cu->nodes[sub].off, &die);
		if (err)
			return err;
		err = ns_dwarf__location(dw, die, DW_AT_frame_base, pc, arena, &s.frame_base,
		                         &s.frame_base_len);
		dwarf_dealloc_die(die);
		if (err)
			return err;
	}
	// Innermost block first; the function (or inlined copy) last: parameters in
	// declaration order, then its outermost locals. C scoping stops at the
	// innermost function: an inlined callee cannot see its caller's locals.
	for (int i = node; i != fn && !err; i = cu->nodes[i].parent)
		err = collect(dw, cu->nodes[i].off, false, NS_DWARF_LOCAL, pc, arena, &vv);
	s.nparams_first = vv.n;
	if (!err)
		err = collect(dw, cu->nodes[fn].off, true, NS_DWARF_PARAM, pc, arena, &vv);
	if (!err)
		err = collect(dw, cu->nodes[fn].off, false, NS_DWARF_LOCAL, pc, arena, &vv);
	if (!err && vv.n) {
		s.vars = ns_arena_calloc(arena, vv.n, sizeof(*s.vars));
		if (!s.vars)
			err = &ns_err_nomem;
		else
			memcpy(s.vars, vv.v, vv.n * sizeof(*s.vars));
		s.nvars = vv.n;
	}
	free(vv.v);
	if (err)
		return err;
	*out = s;
	return NULL;
}

/* ---- globals ---- */

struct global_ctx {
	const char *name;
	uint64_t pc;
	struct ns_arena *arena;
	struct ns_dwarf_var *out;
	bool *found;
};

static struct ns_err *global_cb(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag, void *ctx)
{
	struct global_ctx *c = ctx;
	const char *n;
	struct ns_err *err;

	if (tag != DW_TAG_variable || ns_dwarf__attr_flag(dw, child, DW_AT_declaration))
		return NULL;
	n = ns_dwarf__die_name(dw, child);
	if (!n || strcmp(n, c->name) != 0)
		return NULL;
	err = read_var(dw, child, NS_DWARF_GLOBAL, c->pc, c->arena, c->out);
	*c->found = !err && (c->out->loc_len || c->out->has_const);
	return err ? err : *c->found ? NS_DWARF__STOP : NULL;
}

static struct ns_err *find_global(struct ns_dwarf *dw, struct ns_dwarf__cu *cu, const char *name,
                                  uint64_t pc, struct ns_arena *arena, struct ns_dwarf_var *out,
                                  bool *found)
{
	struct global_ctx c = {name, pc, arena, out, found};
	Dwarf_Die die;
	struct ns_err *err;

	if (*found)
		return NULL;
	err = ns_dwarf__offdie(dw, cu->die_off, &die);
	if (err)
		return err;
	err = ns_dwarf__for_each_child(dw, die, "reading CU children", global_cb, &c);
	dwarf_dealloc_die(die);
	return err;
}

struct ns_err *ns_dwarf_global(struct ns_dwarf *dw, const char *name, uint64_t pc,
                               struct ns_arena *arena, struct ns_dwarf_var *out)
{
	struct ns_dwarf__cu *first;
	struct ns_dwarf_var v;
	bool found = false;
	struct ns_err *err = ns_dwarf__load_cus(dw);

	if (err)
		return err;
	first = ns_dwarf__cu_at(dw, pc);
	if (first)
		err = find_global(dw, first, name, pc, arena, &v, &found);
	for (size_t i = 0; i < dw->ncus && !err && !found; i++)
		if (&dw->cus[i] != first)
			err = find_global(dw, &dw->cus[i], name, pc, arena, &v, &found);
	if (err)
		return err;
	if (!found)
		return ns_err_create(NS_ERR_NOT_FOUND, "no global variable %s in %s", name,
		                     dw->path);
	*out = v;
	return NULL;
}
