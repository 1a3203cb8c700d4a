/* core/dwarf: the CFA rule at a pc from .eh_frame (else .debug_frame). */
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
