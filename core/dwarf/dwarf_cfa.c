/* core/dwarf: the CFA rule at a pc from .eh_frame (else .debug_frame). */
#include <string.h>

#include "dwarf/dwarf_internal.h"

static struct ns_err *load_fdes(struct ns_dwarf *dw)
{
	Dwarf_Error de = NULL;
	int rc;

	if (dw->fde_loaded)
		return NULL;
	dw->fde_loaded = true;
	rc = dwarf_get_fde_list_eh(dw->dbg, &dw->cie_data, &dw->cie_count, &dw->fde_data,
	                           &dw->fde_count, &de);
	if (rc == DW_DLV_ERROR)
		return ns_dwarf__err(dw, de, "reading .eh_frame");
	de = NULL;
	rc = dwarf_get_fde_list(dw->dbg, &dw->dcie_data, &dw->dcie_count, &dw->dfde_data,
	                        &dw->dfde_count, &de);
	if (rc == DW_DLV_ERROR)
		ns_dwarf__drop(dw, de); // .debug_frame is only a fallback
	return NULL;
}

static struct ns_err *cfa_in(struct ns_dwarf *dw, Dwarf_Fde *fdes, uint64_t pc,
                             struct ns_dwarf_cfa *out, bool *found)
{
	Dwarf_Fde fde = NULL;
	Dwarf_Addr lo = 0, hi = 0, row_pc = 0;
	Dwarf_Error de = NULL;
	Dwarf_Small vtype = 0;
	Dwarf_Signed relevant = 0, reg = 0, off = 0;
	Dwarf_Ptr block = NULL;
	int rc;

	*found = false;
	if (!fdes)
		return NULL;
	rc = dwarf_get_fde_at_pc(fdes, pc, &fde, &lo, &hi, &de);
	if (rc == DW_DLV_ERROR)
		return ns_dwarf__err(dw, de, "finding FDE");
	if (rc != DW_DLV_OK)
		return NULL;
	rc = dwarf_get_fde_info_for_cfa_reg3(fde, pc, &vtype, &relevant, &reg, &off, &block,
	                                     &row_pc, &de);
	if (rc == DW_DLV_ERROR)
		return ns_dwarf__err(dw, de, "evaluating CFA rule");
	if (rc != DW_DLV_OK)
		return NULL;
	*found = true;
	if (vtype != DW_EXPR_OFFSET && vtype != DW_EXPR_VAL_OFFSET)
		return ns_err_create(NS_ERR_UNSUPPORTED,
		                     "CFA at 0x%llx is a DWARF expression (not reg+offset)",
		                     (unsigned long long)pc);
	out->reg = (unsigned)reg;
	out->offset = relevant ? off : 0;
	return NULL;
}

struct ns_err *ns_dwarf_cfa_at(struct ns_dwarf *dw, uint64_t pc, struct ns_dwarf_cfa *out)
{
	struct ns_dwarf_cfa c = {0};
	struct ns_err *err;
	bool found = false;

	err = ns_dwarf__need_dwarf(dw);
	if (!err)
		err = load_fdes(dw);
	if (!err)
		err = cfa_in(dw, dw->fde_data, pc, &c, &found);
	if (!err && !found)
		err = cfa_in(dw, dw->dfde_data, pc, &c, &found);
	if (err)
		return err;
	if (!found)
		return ns_err_create(NS_ERR_NOT_FOUND, "no FDE covers 0x%llx in %s",
		                     (unsigned long long)pc, dw->path);
	*out = c;
	return NULL;
}

/* The FDE covering @pc, .eh_frame first; *fde NULL if none. */
static struct ns_err *fde_at(struct ns_dwarf *dw, uint64_t pc, Dwarf_Fde *fde)
{
	Dwarf_Fde *lists[2] = {dw->fde_data, dw->dfde_data};
	Dwarf_Addr lo = 0, hi = 0;
	Dwarf_Error de = NULL;

	*fde = NULL;
	for (int i = 0; i < 2; i++) {
		int rc;
		if (!lists[i])
			continue;
		rc = dwarf_get_fde_at_pc(lists[i], pc, fde, &lo, &hi, &de);
		if (rc == DW_DLV_ERROR)
			return ns_dwarf__err(dw, de, "finding FDE");
		if (rc == DW_DLV_OK)
			return NULL;
		*fde = NULL;
	}
	return NULL;
}

struct ns_err *ns_dwarf_reg_rules_at(struct ns_dwarf *dw, uint64_t pc,
                                     struct ns_dwarf_reg_rule out[17])
{
	struct ns_dwarf_reg_rule r[17];
	Dwarf_Fde fde = NULL;
	struct ns_err *err;

	err = ns_dwarf__need_dwarf(dw);
	if (!err)
		err = load_fdes(dw);
	if (!err)
		err = fde_at(dw, pc, &fde);
	if (err)
		return err;
	if (!fde)
		return ns_err_create(NS_ERR_NOT_FOUND, "no FDE covers 0x%llx in %s",
		                     (unsigned long long)pc, dw->path);
	for (unsigned i = 0; i < 17; i++) {
		Dwarf_Small vtype = 0;
		Dwarf_Signed relevant = 0, reg = 0, off = 0;
		Dwarf_Ptr block = NULL;
		Dwarf_Addr row_pc = 0, next_pc = 0;
		Dwarf_Bool more = 0;
		Dwarf_Error de = NULL;
		int rc = dwarf_get_fde_info_for_reg3_b(fde, (Dwarf_Half)i, pc, &vtype, &relevant,
		                                       &reg, &off, &block, &row_pc, &more, &next_pc,
		                                       &de);
		if (rc == DW_DLV_ERROR)
			return ns_dwarf__err(dw, de, "evaluating register rule");
		r[i].offset = 0;
		if (rc != DW_DLV_OK || (vtype == DW_EXPR_OFFSET && !relevant &&
		                        (reg == DW_FRAME_SAME_VAL || reg == (Dwarf_Signed)i))) {
			r[i].kind = NS_DWARF_RULE_SAME;
		} else if (vtype == DW_EXPR_OFFSET && !relevant && reg == DW_FRAME_UNDEFINED_VAL) {
			r[i].kind = NS_DWARF_RULE_UNDEFINED;
		} else if (vtype == DW_EXPR_OFFSET && relevant && reg == DW_FRAME_CFA_COL3) {
			r[i].kind = NS_DWARF_RULE_OFFSET;
			r[i].offset = off;
		} else {
			r[i].kind = NS_DWARF_RULE_OTHER;
		}
	}
	memcpy(out, r, sizeof(r));
	return NULL;
}
