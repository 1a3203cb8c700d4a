/* core/dwarf: call sites (DW_TAG_call_site, DW_TAG_GNU_call_site) for entry values.
 * The first query indexes every direct call site of the program (one walk over the
 * code-owning DIEs of all CUs); each callee's matching sites are then cached. */
#include <stdlib.h>
#include <string.h>

#include "dwarf/dwarf_internal.h"

static bool attr_addr(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, uint64_t *out)
{
	Dwarf_Attribute a;
	Dwarf_Error de = NULL;
	Dwarf_Addr addr = 0;
	int rc = dwarf_attr(die, at, &a, &de);

	if (rc == DW_DLV_ERROR)
		ns_dwarf__drop(dw, de);
	if (rc != DW_DLV_OK)
		return false;
	de = NULL;
	rc = dwarf_formaddr(a, &addr, &de);
	if (rc == DW_DLV_ERROR)
		ns_dwarf__drop(dw, de);
	dwarf_dealloc_attribute(a);
	if (rc != DW_DLV_OK)
		return false;
	*out = addr;
	return true;
}

/* Follow DW_AT_abstract_origin / DW_AT_specification from the DIE at @off (a few
 * hops); the last DIE's offset. */
static Dwarf_Off root_of(struct ns_dwarf *dw, Dwarf_Off off)
{
	for (int hop = 0; hop < 4; hop++) {
		Dwarf_Die die;
		Dwarf_Off next;
		bool more;
		struct ns_err *err = ns_dwarf__offdie(dw, off, &die);
		if (err) {
			ns_err_destroy(err);
			break;
		}
		more = ns_dwarf__attr_ref(dw, die, DW_AT_abstract_origin, &next) ||
		       ns_dwarf__attr_ref(dw, die, DW_AT_specification, &next);
		dwarf_dealloc_die(die);
		if (!more)
			break;
		off = next;
	}
	return off;
}

/* A name to match declarations by: DW_AT_linkage_name, else DW_AT_name (via origins). */
static const char *link_name(struct ns_dwarf *dw, Dwarf_Die die)
{
	Dwarf_Attribute a;
	Dwarf_Error de = NULL;
	char *s = NULL;

	if (dwarf_attr(die, DW_AT_linkage_name, &a, &de) == DW_DLV_OK) {
		const char *res = NULL;
		if (dwarf_formstring(a, &s, &de) == DW_DLV_OK && s)
			res = ns_arena_strdup(&dw->arena, s);
		else
			ns_dwarf__drop(dw, de);
		dwarf_dealloc_attribute(a);
		if (res)
			return res;
	} else {
		ns_dwarf__drop(dw, de);
	}
	return ns_dwarf__die_name(dw, die);
}

static bool is_external(struct ns_dwarf *dw, Dwarf_Die die)
{
	Dwarf_Die cur = die;
	bool ext = false;

	for (int hop = 0; hop < 4 && !ext; hop++) {
		Dwarf_Off off;
		ext = ns_dwarf__attr_flag(dw, cur, DW_AT_external);
		if (ext || (!ns_dwarf__attr_ref(dw, cur, DW_AT_abstract_origin, &off) &&
		            !ns_dwarf__attr_ref(dw, cur, DW_AT_specification, &off)))
			break;
		if (cur != die)
			dwarf_dealloc_die(cur);
		struct ns_err *err = ns_dwarf__offdie(dw, off, &cur);
		if (err) {
			ns_err_destroy(err);
			cur = die;
			break;
		}
	}
	if (cur != die)
		dwarf_dealloc_die(cur);
	return ext;
}

/* A parameter register: DW_AT_location that is one DW_OP_regN / DW_OP_regx. */
static bool param_reg(const uint8_t *loc, size_t len, unsigned *out)
{
	if (len == 1 && loc[0] >= DW_OP_reg0 && loc[0] <= DW_OP_reg31) {
		*out = loc[0] - DW_OP_reg0;
		return true;
	}
	if (len >= 2 && len <= 3 && loc[0] == DW_OP_regx) {
		unsigned v = loc[1] & 0x7f;
		if (loc[1] & 0x80) {
			if (len != 3 || (loc[2] & 0x80))
				return false;
			v |= (unsigned)loc[2] << 7;
		} else if (len != 2) {
			return false;
		}
		*out = v;
		return true;
	}
	return false;
}

struct params_ctx {
	struct ns_dwarf_call_param *v;
	size_t n, cap;
};

static struct ns_err *param_cb(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag, void *ctx)
{
	struct params_ctx *p = ctx;
	const uint8_t *loc = NULL, *val = NULL;
	size_t loc_len = 0, val_len = 0;
	unsigned reg;
	struct ns_err *err;

	if (tag != DW_TAG_call_site_parameter && tag != DW_TAG_GNU_call_site_parameter)
		return NULL;
	err = ns_dwarf__location(dw, child, DW_AT_location, 0, &dw->arena, &loc, &loc_len);
	if (!err)
		err = ns_dwarf__location(dw, child, DW_AT_call_value, 0, &dw->arena, &val,
		                         &val_len);
	if (!err && !val_len)
		err = ns_dwarf__location(dw, child, DW_AT_GNU_call_site_value, 0, &dw->arena, &val,
		                         &val_len);
	if (err || !val_len || !param_reg(loc, loc_len, &reg))
		return err;
	if (!ns_dwarf__grow((void **)&p->v, &p->cap, p->n + 1, sizeof(*p->v)))
		return &ns_err_nomem;
	p->v[p->n].dwarf_reg = reg;
	p->v[p->n].value = val;
	p->v[p->n].value_len = val_len;
	p->n++;
	return NULL;
}

static struct ns_err *read_params(struct ns_dwarf *dw, Dwarf_Die site, struct ns_dwarf__csite *cs)
{
	struct params_ctx p = {0};
	struct ns_err *err;

	err = ns_dwarf__for_each_child(dw, site, "reading call site parameters", param_cb, &p);
	if (!err && p.n) {
		cs->params = ns_arena_calloc(&dw->arena, p.n, sizeof(*p.v));
		if (!cs->params)
			err = &ns_err_nomem;
		else
			memcpy(cs->params, p.v, p.n * sizeof(*p.v));
		cs->nparams = cs->params ? p.n : 0;
	}
	free(p.v);
	return err;
}

static struct ns_err *add_site(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half tag, Dwarf_Off caller)
{
	struct ns_dwarf__csite cs = {0};
	Dwarf_Off origin;
	Dwarf_Die od;
	struct ns_err *err;
	bool have_pc;

	if (tag == DW_TAG_call_site)
		have_pc = attr_addr(dw, die, DW_AT_call_return_pc, &cs.return_pc) ||
		          attr_addr(dw, die, DW_AT_low_pc, &cs.return_pc);
	else
		have_pc = attr_addr(dw, die, DW_AT_low_pc, &cs.return_pc);
	if (!have_pc || !caller)
		return NULL;
	if (!ns_dwarf__attr_ref(dw, die, DW_AT_call_origin, &origin) &&
	    !ns_dwarf__attr_ref(dw, die, DW_AT_abstract_origin, &origin))
		return NULL; // indirect call
	cs.caller = caller;
	cs.root = root_of(dw, origin);
	err = ns_dwarf__offdie(dw, origin, &od);
	if (err)
		return err;
	if (!attr_addr(dw, od, DW_AT_low_pc, &cs.origin_low))
		cs.origin_low = 0;
	if (ns_dwarf__attr_flag(dw, od, DW_AT_declaration) && is_external(dw, od))
		cs.decl_name = link_name(dw, od);
	dwarf_dealloc_die(od);
	err = read_params(dw, die, &cs);
	if (err || !cs.nparams)
		return err;
	if (!ns_dwarf__grow((void **)&dw->csites, &dw->csites_cap, dw->ncsites + 1,
	                    sizeof(*dw->csites)))
		return &ns_err_nomem;
	dw->csites[dw->ncsites++] = cs;
	return NULL;
}

static bool walk_tag(Dwarf_Half tag)
{
	return tag == DW_TAG_subprogram || tag == DW_TAG_lexical_block ||
	       tag == DW_TAG_inlined_subroutine || tag == DW_TAG_namespace ||
	       tag == DW_TAG_class_type || tag == DW_TAG_structure_type;
}

struct walk_ctx {
	Dwarf_Off caller;
	int depth;
};

static struct ns_err *walk_cb(struct ns_dwarf *dw, Dwarf_Die child, Dwarf_Half tag, void *ctx)
{
	struct walk_ctx *w = ctx;
	struct walk_ctx sub = {w->caller, w->depth + 1};
	Dwarf_Error de = NULL;

	if (tag == DW_TAG_call_site || tag == DW_TAG_GNU_call_site)
		return add_site(dw, child, tag, w->caller);
	if (!walk_tag(tag) || w->depth >= 64)
		return NULL;
	if (tag == DW_TAG_subprogram && dwarf_dieoffset(child, &sub.caller, &de) != DW_DLV_OK) {
		ns_dwarf__drop(dw, de);
		sub.caller = 0;
	}
	return ns_dwarf__for_each_child(dw, child, "reading DIE children", walk_cb, &sub);
}

static struct ns_err *walk(struct ns_dwarf *dw, Dwarf_Die parent, Dwarf_Off caller, int depth)
{
	struct walk_ctx w = {caller, depth};

	return ns_dwarf__for_each_child(dw, parent, "reading DIE children", walk_cb, &w);
}

static struct ns_err *load_csites(struct ns_dwarf *dw)
{
	struct ns_err *err = NULL;

	if (dw->csites_loaded)
		return NULL;
	dw->csites_loaded = true;
	for (size_t i = 0; i < dw->ncus && !err; i++) {
		Dwarf_Die die;
		err = ns_dwarf__offdie(dw, dw->cus[i].die_off, &die);
		if (err)
			break;
		err = walk(dw, die, 0, 0);
		dwarf_dealloc_die(die);
	}
	return err;
}

/* Fill the caller-side facts of one matching site. */
static struct ns_err *make_site(struct ns_dwarf *dw, const struct ns_dwarf__csite *cs,
                                struct ns_dwarf_call_site *out)
{
	struct ns_err *err;
	Dwarf_Die die;

	memset(out, 0, sizeof(*out));
	out->return_pc = cs->return_pc;
	out->nparams = cs->nparams;
	out->params = cs->params;
	err = ns_dwarf_cfa_at(dw, cs->return_pc - 1, &out->caller_cfa);
	if (!err)
		out->caller_cfa_known = true;
	ns_err_destroy(err);
	err = ns_dwarf__offdie(dw, cs->caller, &die);
	if (err)
		return err;
	err = ns_dwarf__location(dw, die, DW_AT_frame_base, cs->return_pc - 1, &dw->arena,
	                         &out->caller_frame_base, &out->caller_frame_base_len);
	dwarf_dealloc_die(die);
	return err;
}

struct ns_err *ns_dwarf_call_sites(struct ns_dwarf *dw, uint64_t pc, struct ns_arena *arena,
                                   const struct ns_dwarf_call_site **out, size_t *n)
{
	struct ns_dwarf__cu *cu;
	struct ns_dwarf_call_site *v = NULL;
	const char *name = NULL;
	struct ns_err *err;
	Dwarf_Off root;
	Dwarf_Die die;
	uint64_t low;
	size_t nv = 0, cap = 0;
	int node, fn = -1;

	(void)arena;
	err = ns_dwarf__load_cus(dw);
	if (err)
		return err;
	cu = ns_dwarf__cu_at(dw, pc);
	if (cu)
		err = ns_dwarf__load_nodes(dw, cu);
	if (err)
		return err;
	node = cu ? ns_dwarf__node_at(cu, pc) : -1;
	for (; node >= 0; node = cu->nodes[node].parent)
		if (cu->nodes[node].tag == DW_TAG_subprogram)
			fn = node;
	if (fn < 0)
		return ns_err_create(NS_ERR_NOT_FOUND, "no function contains 0x%llx in %s",
		                     (unsigned long long)pc, dw->path);
	for (size_t i = 0; i < dw->ncallees; i++) {
		if (dw->callees[i].off == cu->nodes[fn].off) {
			*out = dw->callees[i].sites;
			*n = dw->callees[i].n;
			return NULL;
		}
	}
	err = load_csites(dw);
	if (err)
		return err;
	low = cu->nodes[fn].low;
	root = root_of(dw, cu->nodes[fn].off);
	err = ns_dwarf__offdie(dw, cu->nodes[fn].off, &die);
	if (err)
		return err;
	if (is_external(dw, die))
		name = link_name(dw, die);
	dwarf_dealloc_die(die);
	for (size_t i = 0; i < dw->ncsites && !err; i++) {
		const struct ns_dwarf__csite *cs = &dw->csites[i];
		if (cs->root != root && (!cs->origin_low || cs->origin_low != low) &&
		    (!cs->decl_name || !name || strcmp(cs->decl_name, name) != 0))
			continue;
		if (!ns_dwarf__grow((void **)&v, &cap, nv + 1, sizeof(*v))) {
			err = &ns_err_nomem;
			break;
		}
		err = make_site(dw, cs, &v[nv]);
		if (!err)
			nv++;
	}
	struct ns_dwarf_call_site *sites = NULL;
	if (!err && nv) {
		sites = ns_arena_calloc(&dw->arena, nv, sizeof(*sites));
		if (!sites)
			err = &ns_err_nomem;
		else
			memcpy(sites, v, nv * sizeof(*sites));
	}
	free(v);
	if (err)
		return err;
	if (!ns_dwarf__grow((void **)&dw->callees, &dw->callees_cap, dw->ncallees + 1,
	                    sizeof(*dw->callees)))
		return &ns_err_nomem;
	dw->callees[dw->ncallees++] = (struct ns_dwarf__callee){cu->nodes[fn].off, nv, sites};
	*out = sites;
	*n = nv;
	return NULL;
}
