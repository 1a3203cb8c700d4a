/* Call stacks from a captured frame with libunwind's generic remote API. libunwind
 * sees an address space made of our accessors: registers from the frame's register
 * block, memory from the view memory (captured bytes, then read-only file-backed
 * mappings), unwind tables from each ELF file's .eh_frame_hdr (PT_GNU_EH_FRAME) read
 * through that same memory. Nothing touches a live process. */
#define _GNU_SOURCE
#include <libunwind.h>
#include <string.h>

#include "unwind/unwind_internal.h"

/* Exported by libunwind-x86_64 but not declared in its headers: the remote table
 * search that libunwind's own ptrace accessors (_UPT_find_proc_info) use. */
extern int _Ux86_64_dwarf_search_unwind_table(unw_addr_space_t as, unw_word_t ip,
                                              unw_dyn_info_t *di, unw_proc_info_t *pi,
                                              int need_unwind_info, void *arg);

// DWARF pointer encodings (LSB 1.3, "DWARF Extensions", DW_EH_PE_*).
enum {
	PE_OMIT = 0xff,
	PE_ABSPTR = 0x00,
	PE_ULEB128 = 0x01,
	PE_UDATA2 = 0x02,
	PE_UDATA4 = 0x03,
	PE_UDATA8 = 0x04,
	PE_SLEB128 = 0x09,
	PE_SDATA2 = 0x0a,
	PE_SDATA4 = 0x0b,
	PE_SDATA8 = 0x0c,
	PE_PCREL = 0x10,
	PE_DATAREL = 0x30,
};

struct ctx {
	const struct ns_frame *frame;
	struct ns_viewmem *vm;
};

// libunwind's x86-64 register numbers are the DWARF ones (UNW_X86_64_RAX = 0 ...
// UNW_X86_64_RIP = 16); the frame's register block uses GDB's amd64 order
// (ns_frame_dwarf_to_gdb_reg maps one to the other).

// Registers a callee preserves (System V psABI 3.2.1), plus rsp (the CFA) and rip
// (the return address): the only ones that mean anything in a caller's frame.
static const uint32_t caller_valid_mask =
        1u << UNW_X86_64_RBX | 1u << UNW_X86_64_RBP | 1u << UNW_X86_64_RSP | 1u << UNW_X86_64_R12 |
        1u << UNW_X86_64_R13 | 1u << UNW_X86_64_R14 | 1u << UNW_X86_64_R15 | 1u << UNW_X86_64_RIP;

// Decode one encoded value of .eh_frame_hdr at buf[*pos] (buf holds the section's
// first @len bytes, which start at runtime address @base). -1 if unsupported.
static int read_encoded(const uint8_t *buf, size_t len, size_t *pos, uint8_t enc, uint64_t base,
                        uint64_t *out)
{
	size_t p = *pos, size;
	uint64_t v = 0;

	switch (enc & 0x0f) {
	case PE_ABSPTR:
	case PE_UDATA8:
	case PE_SDATA8:
		size = 8;
		break;
	case PE_UDATA4:
	case PE_SDATA4:
		size = 4;
		break;
	case PE_UDATA2:
	case PE_SDATA2:
		size = 2;
		break;
	default: // LEB128 never appears in the fixed header in practice
		return -1;
	}
	if (p > len || len - p < size)
		return -1;
	memcpy(&v, buf + p, size); // little-endian
	if ((enc & 0x0f) == PE_SDATA4)
		v = (uint64_t)(int64_t)(int32_t)(uint32_t)v;
	else if ((enc & 0x0f) == PE_SDATA2)
		v = (uint64_t)(int64_t)(int16_t)(uint16_t)v;
	switch (enc & 0x70) {
	case 0:
		break;
	case PE_PCREL:
		v += base + p;
		break;
	case PE_DATAREL: // relative to the start of .eh_frame_hdr
		v += base;
		break;
	default:
		return -1;
	}
	if (enc & 0x80) // DW_EH_PE_indirect
		return -1;
	*pos = p + size;
	*out = v;
	return 0;
}

static int find_proc_info(unw_addr_space_t as, unw_word_t ip, unw_proc_info_t *pi,
                          int need_unwind_info, void *arg)
{
	struct ctx *cx = arg;
	const struct ns_procmap_entry *e = ns_procmap_find(ns_viewmem__map(cx->vm), ip);
	const struct ns_unwind__elf *elf;
	uint64_t bias, hdr_addr, eh_frame, fde_count;
	uint8_t hdr[4 + 8 + 8];
	size_t got, pos = 4;

	if (!e || !e->path || e->path[0] != '/')
		return -UNW_ENOINFO;
	elf = ns_viewmem__elf(cx->vm, e->path);
	if (!elf || !elf->has_eh_frame_hdr || ns_viewmem__bias(cx->vm, e->path, &bias) != 0)
		return -UNW_ENOINFO;
	if (ip < bias + elf->load_lo || ip >= bias + elf->load_hi)
		return -UNW_ENOINFO;

	// .eh_frame_hdr: version 1, eh_frame_ptr_enc, fde_count_enc, table_enc, then the
	// encoded eh_frame_ptr and fde_count, then the sorted (initial location, FDE
	// address) table.
	hdr_addr = bias + elf->eh_vaddr;
	got = ns_viewmem_read(cx->vm, NULL, hdr_addr, hdr,
	                      elf->eh_size < sizeof(hdr) ? elf->eh_size : sizeof(hdr));
	if (got < 4 || hdr[0] != 1 || hdr[2] == PE_OMIT)
		return -UNW_ENOINFO;
	// libunwind's binary search reads only int32 pairs relative to the header.
	if (hdr[3] != (PE_DATAREL | PE_SDATA4))
		return -UNW_ENOINFO;
	if (read_encoded(hdr, got, &pos, hdr[1], hdr_addr, &eh_frame) != 0 ||
	    read_encoded(hdr, got, &pos, hdr[2], hdr_addr, &fde_count) != 0)
		return -UNW_ENOINFO;
	if (fde_count == 0 || elf->eh_size < pos || fde_count > (elf->eh_size - pos) / 8)
		return -UNW_ENOINFO;

	unw_dyn_info_t di;
	memset(&di, 0, sizeof(di));
	di.format = UNW_INFO_FORMAT_REMOTE_TABLE;
	di.start_ip = bias + elf->load_lo;
	di.end_ip = bias + elf->load_hi;
	di.gp = 0;
	di.u.rti.name_ptr = 0;
	di.u.rti.segbase = hdr_addr;
	di.u.rti.table_data = hdr_addr + pos;
	// In words: libunwind multiplies by sizeof(unw_word_t) (dwarf_search_unwind_table,
	// src/dwarf/Gfind_proc_info-lsb.c), 8-byte entries.
	di.u.rti.table_len = fde_count * 8 / sizeof(unw_word_t);
	return _Ux86_64_dwarf_search_unwind_table(as, ip, &di, pi, need_unwind_info, arg);
}

// libunwind frees DWARF table unwind info itself (Gparser.c put_unwind_info); this
// accessor is called only for dynamic (unw_dyn_info_list) entries, which we never hand
// out (get_dyn_info_list_addr says none).
static void put_unwind_info(unw_addr_space_t as, unw_proc_info_t *pi, void *arg)
{
	(void)as;
	(void)pi;
	(void)arg;
}

static int get_dyn_info_list_addr(unw_addr_space_t as, unw_word_t *dilap, void *arg)
{
	(void)as;
	(void)dilap;
	(void)arg;
	return -UNW_ENOINFO;
}

static int access_mem(unw_addr_space_t as, unw_word_t addr, unw_word_t *valp, int write, void *arg)
{
	struct ctx *cx = arg;
	uint64_t v;

	(void)as;
	if (write)
		return -UNW_EINVAL;
	if (ns_viewmem_read(cx->vm, cx->frame, addr, &v, sizeof(v)) != sizeof(v))
		return -UNW_EINVAL;
	*valp = v;
	return 0;
}

// Called for the initial frame only: libunwind computes callers' registers itself.
static int access_reg(unw_addr_space_t as, unw_regnum_t reg, unw_word_t *valp, int write, void *arg)
{
	struct ctx *cx = arg;
	uint64_t v;

	(void)as;
	if (write)
		return -UNW_EINVAL;
	if (reg < 0 || reg >= NS_UNWIND_NREGS)
		return -UNW_EBADREG;
	if (ns_frame_reg(cx->frame, (unsigned)ns_frame_dwarf_to_gdb_reg((unsigned)reg), &v) != 0)
		return -UNW_EBADREG;
	*valp = v;
	return 0;
}

static int access_fpreg(unw_addr_space_t as, unw_regnum_t reg, unw_fpreg_t *val, int write,
                        void *arg)
{
	(void)as;
	(void)reg;
	(void)val;
	(void)write;
	(void)arg;
	return -UNW_EBADREG;
}

static int resume(unw_addr_space_t as, unw_cursor_t *c, void *arg)
{
	(void)as;
	(void)c;
	(void)arg;
	return -UNW_EINVAL;
}

static int get_proc_name(unw_addr_space_t as, unw_word_t addr, char *buf, size_t len,
                         unw_word_t *offp, void *arg)
{
	(void)as;
	(void)addr;
	(void)buf;
	(void)len;
	(void)offp;
	(void)arg;
	return -UNW_ENOINFO;
}

static unw_accessors_t accessors = {
        .find_proc_info = find_proc_info,
        .put_unwind_info = put_unwind_info,
        .get_dyn_info_list_addr = get_dyn_info_list_addr,
        .access_mem = access_mem,
        .access_reg = access_reg,
        .access_fpreg = access_fpreg,
        .resume = resume,
        .get_proc_name = get_proc_name,
};

static void record_caller(unw_cursor_t *c, struct ns_unwind_frame *f)
{
	for (unsigned r = 0; r < NS_UNWIND_NREGS; r++) {
		unw_word_t v;
		if (!(caller_valid_mask & (1u << r)))
			continue;
		if (unw_get_reg(c, (int)r, &v) == 0) {
			f->regs[r] = v;
			f->valid |= 1u << r;
		}
	}
}

static bool seen(const struct ns_unwind_frame *fr, size_t n, uint64_t pc, uint64_t sp)
{
	for (size_t i = 0; i < n; i++)
		if (fr[i].pc == pc && fr[i].regs[UNW_X86_64_RSP] == sp)
			return true;
	return false;
}

struct ns_err *ns_unwind(const struct ns_frame *frame, struct ns_viewmem *vm, unsigned max,
                         struct ns_arena *arena, struct ns_unwind_frame **frames, size_t *nframes)
{
	struct ctx cx = {.frame = frame, .vm = vm};
	struct ns_unwind_frame *fr;
	unw_addr_space_t as;
	unw_cursor_t c;
	size_t n = 1;

	if (!frame || !vm || !arena || !frames || !nframes)
		return ns_err_create(NS_ERR_INVALID, "unwind: missing argument");
	if (max == 0)
		return ns_err_create(NS_ERR_INVALID, "unwind: max frames is 0");
	fr = ns_arena_calloc(arena, max, sizeof(*fr));
	if (!fr)
		return &ns_err_nomem;

	// Frame 0 straight from the register block: every captured register is real.
	for (unsigned r = 0; r < NS_UNWIND_NREGS; r++) {
		uint64_t v;
		if (ns_frame_reg(frame, (unsigned)ns_frame_dwarf_to_gdb_reg((unsigned)r), &v) == 0) {
			fr[0].regs[r] = v;
			fr[0].valid |= 1u << r;
		}
	}
	if (!(fr[0].valid & 1u << UNW_X86_64_RIP) || !(fr[0].valid & 1u << UNW_X86_64_RSP))
		return ns_err_create(NS_ERR_NOT_FOUND,
		                     "unwind: frame of tracepoint %u has no rip/rsp registers",
		                     frame->hdr.tp_id);
	fr[0].pc = fr[0].regs[UNW_X86_64_RIP];

	as = unw_create_addr_space(&accessors, 0);
	if (!as)
		return &ns_err_nomem;
	// Each call has its own frame; nothing cached may outlive it.
	unw_set_caching_policy(as, UNW_CACHE_NONE);
	if (unw_init_remote(&c, as, &cx) < 0)
		goto done;

	for (;;) {
		unw_word_t ip, sp;
		if (unw_step(&c) <= 0)
			break;
		if (unw_get_reg(&c, UNW_REG_IP, &ip) != 0 ||
		    unw_get_reg(&c, UNW_X86_64_RSP, &sp) != 0)
			break;
		if (seen(fr, n, ip, sp))
			break;
		// The caller's rsp right after the call returns is the callee's CFA.
		fr[n - 1].cfa = sp;
		fr[n - 1].cfa_valid = true;
		if (n == max || ip == 0)
			break;
		struct ns_unwind_frame *f = &fr[n];
		f->pc = ip;
		record_caller(&c, f);
		f->regs[UNW_X86_64_RIP] = ip;
		f->regs[UNW_X86_64_RSP] = sp;
		f->valid |= 1u << UNW_X86_64_RIP | 1u << UNW_X86_64_RSP;
		n++;
	}
done:
	unw_destroy_addr_space(as);
	*frames = fr;
	*nframes = n;
	return NULL;
}
