/* core/frame: the one trace-frame format used by the agent (builds frames in signal
 * context into shared-memory rings), the stub (buffers and forwards them) and the
 * adapter (reads registers and memory from them). Little-endian, packed by hand, and
 * self-describing: header.size covers every block, blocks are 8-byte aligned.
 *
 *   header | block | block | ...
 *   block  = ns_frame_block + payload (len bytes) + padding to 8
 *
 * Registers use GDB's amd64 numbering (gdb/features/i386/64bit-core.xml, followed by
 * fs_base/gs_base), the numbering agent-expression `reg` uses. */
#ifndef NS_FRAME_H
#define NS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum ns_frame_reg {
	NS_REG_RAX,
	NS_REG_RBX,
	NS_REG_RCX,
	NS_REG_RDX,
	NS_REG_RSI,
	NS_REG_RDI,
	NS_REG_RBP,
	NS_REG_RSP,
	NS_REG_R8,
	NS_REG_R9,
	NS_REG_R10,
	NS_REG_R11,
	NS_REG_R12,
	NS_REG_R13,
	NS_REG_R14,
	NS_REG_R15,
	NS_REG_RIP,
	NS_REG_EFLAGS,
	NS_REG_CS,
	NS_REG_SS,
	NS_REG_DS,
	NS_REG_ES,
	NS_REG_FS,
	NS_REG_GS,
	NS_REG_FS_BASE,
	NS_REG_GS_BASE,
	NS_FRAME_NREGS /* 26 */
};

#define NS_FRAME_MAGIC 0x5246534eu /* "NSFR" */
#define NS_FRAME_VERSION 1

struct ns_frame_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t hdr_size; /* sizeof(struct ns_frame_hdr); readers accept larger */
	uint32_t size;     /* whole frame, header included */
	uint32_t tp_id;    /* tracepoint number (QTDP n) */
	uint64_t addr;     /* runtime address of the tracepoint that hit */
	uint64_t tid;      /* kernel thread id of the hitting thread */
	uint64_t time_ns;  /* CLOCK_REALTIME at the hit */
	uint64_t seq;      /* per-thread hit sequence number */
	uint32_t nblocks;
	uint32_t status;     /* enum ns_ax_status of the first failed action, 0 if none */
	uint64_t fault_addr; /* with status */
	uint64_t hit_count;  /* the tracepoint's hit count including this hit (0 from a jump pad's
	                      * inline record: the stub fills in its count of arrived frames) */
};

enum ns_frame_block_type {
	NS_FRAME_BLOCK_REGS = 'R', /* payload: uint64_t[NS_FRAME_NREGS] */
	/* Some registers (a logpoint needs only those its expressions read): payload
	 * uint64_t mask (bit n: register n, n < NS_FRAME_NREGS), then the registers whose
	 * bit is set, lowest number first. */
	NS_FRAME_BLOCK_REGS_SOME = 'r',
	NS_FRAME_BLOCK_MEM = 'M',  /* payload: bytes at addr */
	NS_FRAME_BLOCK_ERR =
	        'E', /* action @addr (index) failed: payload uint32 status, pad, uint64 fault */
};

struct ns_frame_block {
	uint8_t type;
	uint8_t pad[3];
	uint32_t len; /* payload bytes (padding not included) */
	uint64_t addr;
};

/* Builder: writes a frame into caller memory. Signal-safe, never allocates. A block
 * that does not fit sets overflow and is dropped whole; the frame stays valid. */
struct ns_frame_builder {
	uint8_t *buf;
	size_t cap, len;
	bool overflow;
	size_t last;      /* offset of the last block if it is a shrinkable memory block, else 0 */
	uint32_t nblocks; /* blocks added so far */
};

/** Start a frame in @buf (8-byte aligned, @cap bytes) with the fields of @hdr (magic,
 * version, hdr_size, size and nblocks are filled in). -1 if @cap is too small. */
int ns_frame_begin(struct ns_frame_builder *b, void *buf, size_t cap,
                   const struct ns_frame_hdr *hdr);
int ns_frame_add_regs(struct ns_frame_builder *b, const uint64_t regs[NS_FRAME_NREGS]);
/** A REGS_SOME block with the registers of @mask (bits >= NS_FRAME_NREGS ignored) from
 * @regs (indexed by register number); a full REGS block if @mask has them all. */
int ns_frame_add_regs_some(struct ns_frame_builder *b, uint64_t mask,
                           const uint64_t regs[NS_FRAME_NREGS]);
/** Append a memory block and return where its @len payload bytes go (the caller fills
 * them, e.g. with ns_mem_read_partial), or NULL if it does not fit. Follow with
 * ns_frame_shrink_last() if fewer bytes were obtained. */
void *ns_frame_reserve_mem(struct ns_frame_builder *b, uint64_t addr, size_t len);
/** Shrink the last reserved memory block to @len bytes (drops it if 0). */
void ns_frame_shrink_last(struct ns_frame_builder *b, size_t len);
int ns_frame_add_err(struct ns_frame_builder *b, uint32_t action, uint32_t status, uint64_t fault);
/** Finish: writes size and nblocks; returns the frame's total size. */
size_t ns_frame_end(struct ns_frame_builder *b);

/* Reader over a validated frame (host side). */
struct ns_frame {
	const uint8_t *data; /* borrowed: the caller keeps the bytes alive */
	size_t size;
	struct ns_frame_hdr hdr; /* copied out */
	const uint64_t *regs;    /* NULL if the frame has no register block (may be unaligned: use
	                            ns_frame_reg) */
	uint64_t regs_mask;      /* the registers @regs holds, in order (all for a REGS block) */
};

/** Validate @data (magic, version, sizes of every block within the frame) and fill
 * @out. Errors (NS_ERR_FORMAT) say which block is bad. Does not copy @data. */
struct ns_err *ns_frame_parse(const void *data, size_t size, struct ns_frame *out);
/** Register @regno (enum ns_frame_reg): 0 on success, -1 if not captured. */
int ns_frame_reg(const struct ns_frame *f, unsigned regno, uint64_t *out);
/** Copy captured bytes [addr, addr+len) into @dst, combining blocks; returns how many
 * leading bytes were captured contiguously from @addr (0..len). */
size_t ns_frame_read(const struct ns_frame *f, uint64_t addr, void *dst, size_t len);
/** Iterate blocks: *@iter starts at 0; returns false at the end. */
bool ns_frame_next_block(const struct ns_frame *f, size_t *iter, struct ns_frame_block *blk,
                         const uint8_t **payload);

/* DWARF x86-64 register numbers (System V psABI, table 3.36) to GDB numbers. -1 if none. */
int ns_frame_dwarf_to_gdb_reg(unsigned dwarf_regno);
int ns_frame_gdb_to_dwarf_reg(unsigned gdb_regno);
/** Register name ("rax", "rip", ...) for GDB number @regno, or NULL. */
const char *ns_frame_reg_name(unsigned regno);

#endif
