/* core/unwind: call stacks from a captured frame, after the fact, with libunwind's
 * generic remote API (unw_create_addr_space + our accessors) over the frame's
 * registers and memory, plus the .eh_frame of the binary and its shared libraries
 * read from their files. Nothing touches the live target.
 *
 * Also holds the process map (mappings of the target, as /proc/PID/maps prints
 * them) and the "view memory" reader: captured bytes first, then file-backed,
 * read-only mappings read from their files (.rodata strings, code). */
#ifndef NS_UNWIND_H
#define NS_UNWIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"
#include "frame/frame.h"

struct ns_procmap_entry {
	uint64_t start, end, offset;
	bool readable, writable, executable;
	char *path;   /* NULL for anonymous mappings; "[stack]" etc. kept as-is */
	bool deleted; /* path ends in " (deleted)" (kept in path): the file is gone */
};

struct ns_procmap {
	struct ns_procmap_entry *v; /* malloc'd */
	size_t n;
};

/** Parse /proc/PID/maps text. */
struct ns_err *ns_procmap_parse(const char *text, struct ns_procmap *out);
void ns_procmap_deinit(struct ns_procmap *m);
/** The mapping containing @addr, or NULL. */
const struct ns_procmap_entry *ns_procmap_find(const struct ns_procmap *m, uint64_t addr);
/** Load bias of the ELF file @path (by inode-free path match): start of its mapping
 * with offset 0. -1 if not mapped. */
int ns_procmap_load_bias(const struct ns_procmap *m, const char *path, uint64_t *bias);

/** Memory as the views see it: @frame's captured bytes, then bytes of file-backed
 * mappings that are not writable (read from the file; cached file descriptors).
 * Bytes of PT_LOAD segments with PF_W (RELRO: relocated by ld.so, then made read-only)
 * and of "(deleted)" files never come from files. Not thread-safe (caches). */
struct ns_viewmem;
/** @map is copied: the caller may free it right after. */
struct ns_err *ns_viewmem_create(const struct ns_procmap *map, struct ns_viewmem **out);
void ns_viewmem_destroy(struct ns_viewmem *vm);
/** Bytes readable contiguously from @addr (0..len). @frame may be NULL. */
size_t ns_viewmem_read(struct ns_viewmem *vm, const struct ns_frame *frame, uint64_t addr,
                       void *dst, size_t len);

enum { NS_UNWIND_NREGS = 17 }; /* DWARF x86-64 registers 0..16 (16 = return address/rip) */

struct ns_unwind_frame {
	uint64_t pc;  /* for frames > 0 the return address */
	uint64_t cfa; /* canonical frame address of this frame (SP before the call into it) */
	bool cfa_valid;
	uint64_t regs[NS_UNWIND_NREGS]; /* DWARF numbering */
	uint32_t valid; /* bit n: regs[n] is known (frame 0: all; callers: callee-saved + rsp + rip)
	                 */
};

/** Unwind @frame (needs its register block) up to @max frames. Frames come from
 * @arena. Stops quietly where the unwind info or the captured stack ends; returns at
 * least frame 0. */
struct ns_err *ns_unwind(const struct ns_frame *frame, struct ns_viewmem *vm, unsigned max,
                         struct ns_arena *arena, struct ns_unwind_frame **frames, size_t *nframes);

#endif
