/* core/unwind internals shared by procmap.c, viewmem.c and unwind.c. Never included
 * from outside core/unwind. */
#ifndef NS_UNWIND_INTERNAL_H
#define NS_UNWIND_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "unwind/unwind.h"

/* What the unwinder and the load-bias computation need from an ELF file's program
 * headers (all addresses are link-time virtual addresses). */
struct ns_unwind__load {
	uint64_t vaddr, memsz;
	bool writable; /* PF_W: the loader may have written it (RELRO) */
};

struct ns_unwind__elf {
	bool is_elf;
	struct ns_unwind__load *loads; /* malloc'd, nloads entries */
	size_t nloads;
	uint64_t load_lo;      /* lowest PT_LOAD p_vaddr, rounded down to its page */
	uint64_t load_hi;      /* highest PT_LOAD p_vaddr + p_memsz */
	bool has_eh_frame_hdr; /* PT_GNU_EH_FRAME present */
	uint64_t eh_vaddr, eh_offset, eh_size;
};

/** Read the program headers of the ELF file open at @fd into @out (free with
 * ns_unwind__elf_deinit). */
struct ns_err *ns_unwind__elf_read(int fd, const char *path, struct ns_unwind__elf *out);
void ns_unwind__elf_deinit(struct ns_unwind__elf *e);
/** Bias from the start of the offset-0 mapping and the ELF's load_lo. */
uint64_t ns_unwind__bias_from(const struct ns_procmap_entry *first, const struct ns_unwind__elf *e);

/** The mapping of @path (also matching "<path> (deleted)") with file offset 0. */
const struct ns_procmap_entry *ns_unwind__first_mapping(const struct ns_procmap *m,
                                                        const char *path);

/** The process map @vm was created with (its own copy). */
const struct ns_procmap *ns_viewmem__map(const struct ns_viewmem *vm);
/** Cached program-header info of @path, or NULL if the file cannot be opened or is not
 * ELF. Valid until ns_viewmem_destroy. */
const struct ns_unwind__elf *ns_viewmem__elf(struct ns_viewmem *vm, const char *path);
/** Load bias of @path as mapped in @vm's map; -1 if unknown. */
int ns_viewmem__bias(struct ns_viewmem *vm, const char *path, uint64_t *out);

#endif
