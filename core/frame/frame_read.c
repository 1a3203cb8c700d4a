/* core/frame reader (host side): validation of untrusted frame bytes, register and
 * memory lookup, and the DWARF <-> GDB register number maps. */
#include <string.h>

#include "frame/frame.h"

enum {
	HDR_SIZE = sizeof(struct ns_frame_hdr),
	BLK_SIZE = sizeof(struct ns_frame_block),
	REGS_SIZE = NS_FRAME_NREGS * sizeof(uint64_t),
	ERR_SIZE = 16,
};

static uint64_t pad8(uint64_t n)
{
	return (n + 7) & ~(uint64_t)7;
}

static size_t first_block(const struct ns_frame *f)
{
	return (size_t)pad8(f->hdr.hdr_size);
}

struct ns_err *ns_frame_parse(const void *data, size_t size, struct ns_frame *out)
{
	const uint8_t *p = data;
	struct ns_frame_hdr h;

	// Fixed part first: magic, version, hdr_size, size are the first 12 bytes.
	if (size < 12)
		return ns_err_create(NS_ERR_FORMAT, "trace frame: %zu bytes is too short", size);
	memcpy(&h, p, 12);
	if (h.magic != NS_FRAME_MAGIC)
		return ns_err_create(NS_ERR_FORMAT, "trace frame: bad magic 0x%08x", h.magic);
	if (h.version != NS_FRAME_VERSION)
		return ns_err_create(NS_ERR_FORMAT, "trace frame: unsupported version %u",
		                     h.version);
	if (h.hdr_size < HDR_SIZE)
		return ns_err_create(NS_ERR_FORMAT, "trace frame: header size %u < %d", h.hdr_size,
		                     (int)HDR_SIZE);
	if (h.size < h.hdr_size)
		return ns_err_create(NS_ERR_FORMAT, "trace frame: size %u smaller than header (%u)",
		                     h.size, h.hdr_size);
	if (h.size > size)
		return ns_err_create(NS_ERR_FORMAT,
		                     "trace frame: size %u but only %zu bytes available", h.size,
		                     size);
	memcpy(&h, p, HDR_SIZE); // a larger header's tail is ignored

	struct ns_frame f = {.data = p, .size = h.size, .hdr = h};
	uint64_t off = first_block(&f);
	for (uint32_t i = 0; i < h.nblocks; i++) {
		struct ns_frame_block blk;
		if (off > h.size || h.size - off < BLK_SIZE)
			return ns_err_create(
			        NS_ERR_FORMAT,
			        "trace frame: block %u at offset %llu: header past the "
			        "end of the frame (size %u)",
			        i, (unsigned long long)off, h.size);
		memcpy(&blk, p + off, BLK_SIZE);
		if (pad8(blk.len) > h.size - off - BLK_SIZE)
			return ns_err_create(NS_ERR_FORMAT,
			                     "trace frame: block %u at offset %llu: length %u past "
			                     "the end of the frame (size %u)",
			                     i, (unsigned long long)off, blk.len, h.size);
		if (blk.type == NS_FRAME_BLOCK_REGS && blk.len < REGS_SIZE)
			return ns_err_create(NS_ERR_FORMAT,
			                     "trace frame: block %u: register block of %u bytes "
			                     "(need %d)",
			                     i, blk.len, (int)REGS_SIZE);
		if (blk.type == NS_FRAME_BLOCK_ERR && blk.len < ERR_SIZE)
			return ns_err_create(NS_ERR_FORMAT,
			                     "trace frame: block %u: error block of %u bytes", i,
			                     blk.len);
		if (blk.type == NS_FRAME_BLOCK_REGS_SOME) {
			uint64_t m = 0;
			if (blk.len >= sizeof(m))
				memcpy(&m, p + off + BLK_SIZE, sizeof(m));
			if (blk.len < sizeof(m) || (m >> NS_FRAME_NREGS) != 0 ||
			    blk.len != (1 + (unsigned)__builtin_popcountll(m)) * sizeof(uint64_t))
				return ns_err_create(NS_ERR_FORMAT,
				                     "trace frame: block %u: register block of %u "
				                     "bytes with mask 0x%llx",
				                     i, blk.len, (unsigned long long)m);
			if (!f.regs) {
				f.regs = (const uint64_t *)(const void *)(p + off + BLK_SIZE + 8);
				f.regs_mask = m;
			}
		}
		if (blk.type == NS_FRAME_BLOCK_REGS && !f.regs) {
			f.regs = (const uint64_t *)(const void *)(p + off + BLK_SIZE);
			f.regs_mask = ((uint64_t)1 << NS_FRAME_NREGS) - 1;
		}
		// Other types are skipped: newer writers may add kinds this reader ignores.
		off += BLK_SIZE + pad8(blk.len);
	}
	// header.size covers every block and nothing else, so iteration can stop at size.
	if (off != h.size)
		return ns_err_create(NS_ERR_FORMAT,
		                     "trace frame: %u blocks end at offset %llu, but size is %u",
		                     h.nblocks, (unsigned long long)off, h.size);
	*out = f;
	return NULL;
}

int ns_frame_reg(const struct ns_frame *f, unsigned regno, uint64_t *out)
{
	if (!f->regs || regno >= NS_FRAME_NREGS || !(f->regs_mask & ((uint64_t)1 << regno)))
		return -1;
	// Position among the registers held: the set bits below @regno.
	unsigned i = (unsigned)__builtin_popcountll(f->regs_mask & (((uint64_t)1 << regno) - 1));
	memcpy(out, (const uint8_t *)f->regs + i * sizeof(uint64_t), sizeof(*out));
	return 0;
}

bool ns_frame_next_block(const struct ns_frame *f, size_t *iter, struct ns_frame_block *blk,
                         const uint8_t **payload)
{
	size_t off = *iter ? *iter : first_block(f);
	// Bounds were checked by ns_frame_parse; recheck so a bad iterator cannot overrun.
	if (off >= f->size || f->size - off < BLK_SIZE)
		return false;
	memcpy(blk, f->data + off, BLK_SIZE);
	if (pad8(blk->len) > f->size - off - BLK_SIZE)
		return false;
	if (payload)
		*payload = f->data + off + BLK_SIZE;
	*iter = off + BLK_SIZE + (size_t)pad8(blk->len);
	return true;
}

// Does @blk (a memory block) hold the byte at @a? Modular arithmetic, so a block that
// ends at 2^64 works too.
static bool holds(const struct ns_frame_block *blk, uint64_t a)
{
	return a - blk->addr < blk->len;
}

size_t ns_frame_read(const struct ns_frame *f, uint64_t addr, void *dst, size_t len)
{
	struct ns_frame_block blk;
	const uint8_t *pl;
	size_t it, got = 0;

	// 1. Length of the contiguous captured prefix: repeatedly extend it with any block
	// holding the next missing byte (blocks may come in any order). Each pass either
	// extends the prefix or stops, so this is O(blocks^2) in the worst case.
	for (bool progress = true; progress && got < len;) {
		progress = false;
		for (it = 0; got < len && ns_frame_next_block(f, &it, &blk, &pl);) {
			if (blk.type != NS_FRAME_BLOCK_MEM || !holds(&blk, addr + got))
				continue;
			uint64_t in_blk = blk.len - (addr + got - blk.addr);
			got += in_blk < len - got ? (size_t)in_blk : len - got;
			progress = true;
		}
	}
	// 2. Copy every block's part of [addr, addr+got) in frame order: later blocks win
	// where they overlap (the most recent capture of those bytes).
	for (it = 0; got && ns_frame_next_block(f, &it, &blk, &pl);) {
		if (blk.type != NS_FRAME_BLOCK_MEM || blk.len == 0)
			continue;
		// Intersection of [blk.addr, +blk.len) with [addr, +got), as offsets from addr.
		uint64_t lo, hi;
		if (holds(&blk, addr)) {
			lo = 0;
			hi = blk.len - (addr - blk.addr);
		} else if (blk.addr - addr < got) {
			lo = blk.addr - addr;
			hi = lo + blk.len;
		} else {
			continue;
		}
		if (hi > got)
			hi = got;
		memcpy((uint8_t *)dst + lo, pl + (addr + lo - blk.addr), (size_t)(hi - lo));
	}
	return got;
}

/* System V x86-64 psABI, "DWARF Register Number Mapping" (figure 3.36): DWARF number ->
 * GDB amd64 number (gdb/features/i386/64bit-core.xml order, then fs_base/gs_base). */
static const signed char dwarf_to_gdb[] = {
        [0] = NS_REG_RAX,      [1] = NS_REG_RDX,  [2] = NS_REG_RCX,  [3] = NS_REG_RBX,
        [4] = NS_REG_RSI,      [5] = NS_REG_RDI,  [6] = NS_REG_RBP,  [7] = NS_REG_RSP,
        [8] = NS_REG_R8,       [9] = NS_REG_R9,   [10] = NS_REG_R10, [11] = NS_REG_R11,
        [12] = NS_REG_R12,     [13] = NS_REG_R13, [14] = NS_REG_R14, [15] = NS_REG_R15,
        [16] = NS_REG_RIP, /* the return address column */
        [49] = NS_REG_EFLAGS,  [50] = NS_REG_ES,  [51] = NS_REG_CS,  [52] = NS_REG_SS,
        [53] = NS_REG_DS,      [54] = NS_REG_FS,  [55] = NS_REG_GS,  [58] = NS_REG_FS_BASE,
        [59] = NS_REG_GS_BASE,
};

int ns_frame_dwarf_to_gdb_reg(unsigned dwarf_regno)
{
	if (dwarf_regno >= sizeof(dwarf_to_gdb))
		return -1;
	int g = dwarf_to_gdb[dwarf_regno];
	// Zero-filled slots mean "none", except DWARF 0 which really is rax (GDB 0).
	if (g == 0 && dwarf_regno != 0)
		return -1;
	return g;
}

int ns_frame_gdb_to_dwarf_reg(unsigned gdb_regno)
{
	if (gdb_regno >= NS_FRAME_NREGS)
		return -1;
	for (unsigned d = 0; d < sizeof(dwarf_to_gdb); d++) {
		if (ns_frame_dwarf_to_gdb_reg(d) == (int)gdb_regno)
			return (int)d;
	}
	return -1;
}

const char *ns_frame_reg_name(unsigned regno)
{
	static const char *const names[NS_FRAME_NREGS] = {
	        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp",     "rsp",     "r8",
	        "r9",  "r10", "r11", "r12", "r13", "r14", "r15",     "rip",     "eflags",
	        "cs",  "ss",  "ds",  "es",  "fs",  "gs",  "fs_base", "gs_base",
	};
	return regno < NS_FRAME_NREGS ? names[regno] : NULL;
}
