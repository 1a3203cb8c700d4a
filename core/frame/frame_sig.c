/* core/frame builder. Runs in the agent's trap handler: async-signal-safe, no libc
 * calls besides memcpy/memset (which compilers may emit anyway), never allocates.
 * Fields are written with memcpy so that a caller's buffer need not be aligned. */
#include <stddef.h>
#include <string.h>

#include "frame/frame.h"

enum {
	HDR_SIZE = sizeof(struct ns_frame_hdr),
	BLK_SIZE = sizeof(struct ns_frame_block),
};

_Static_assert(sizeof(struct ns_frame_hdr) % 8 == 0, "blocks start 8-byte aligned");
_Static_assert(sizeof(struct ns_frame_block) == 16, "block header layout");

static size_t pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

int ns_frame_begin(struct ns_frame_builder *b, void *buf, size_t cap,
                   const struct ns_frame_hdr *hdr)
{
	b->buf = buf;
	// header.size is 32 bits: a frame never grows past 4 GiB whatever the buffer.
	b->cap = cap > UINT32_MAX ? UINT32_MAX : cap;
	b->len = 0;
	b->overflow = false;
	b->last = 0;
	b->nblocks = 0;
	if (!buf || cap < HDR_SIZE) {
		b->buf = NULL;
		b->overflow = true;
		return -1;
	}
	struct ns_frame_hdr h;
	if (hdr)
		h = *hdr;
	else
		memset(&h, 0, sizeof(h));
	h.magic = NS_FRAME_MAGIC;
	h.version = NS_FRAME_VERSION;
	h.hdr_size = HDR_SIZE;
	h.size = HDR_SIZE;
	h.nblocks = 0;
	memcpy(b->buf, &h, sizeof(h));
	b->len = HDR_SIZE;
	return 0;
}

// Append a block with room for @len payload bytes (padding zeroed); returns the payload
// or NULL (and sets overflow) if it does not fit.
static uint8_t *add_block(struct ns_frame_builder *b, uint8_t type, uint64_t addr, size_t len)
{
	if (!b->buf || b->len < HDR_SIZE) // begin failed or was never called
		return NULL;
	size_t room = b->cap - b->len;
	if (len > UINT32_MAX || room < BLK_SIZE || room - BLK_SIZE < pad8(len)) {
		b->overflow = true;
		return NULL;
	}
	struct ns_frame_block blk = {.type = type, .len = (uint32_t)len, .addr = addr};
	uint8_t *p = b->buf + b->len;
	memcpy(p, &blk, sizeof(blk));
	if (pad8(len) != len)
		memset(p + BLK_SIZE + len, 0, pad8(len) - len);
	b->last = 0;
	b->len += BLK_SIZE + pad8(len);
	b->nblocks++;
	return p + BLK_SIZE;
}

int ns_frame_add_regs(struct ns_frame_builder *b, const uint64_t regs[NS_FRAME_NREGS])
{
	uint8_t *p = add_block(b, NS_FRAME_BLOCK_REGS, 0, NS_FRAME_NREGS * sizeof(uint64_t));
	if (!p)
		return -1;
	memcpy(p, regs, NS_FRAME_NREGS * sizeof(uint64_t));
	return 0;
}

int ns_frame_add_regs_some(struct ns_frame_builder *b, uint64_t mask,
                           const uint64_t regs[NS_FRAME_NREGS])
{
	mask &= ((uint64_t)1 << NS_FRAME_NREGS) - 1;
	if (mask == ((uint64_t)1 << NS_FRAME_NREGS) - 1)
		return ns_frame_add_regs(b, regs);
	unsigned n = 0;
	for (uint64_t m = mask; m; m &= m - 1) // no libgcc call in signal context
		n++;
	uint8_t *p = add_block(b, NS_FRAME_BLOCK_REGS_SOME, 0, (1 + n) * sizeof(uint64_t));
	if (!p)
		return -1;
	memcpy(p, &mask, sizeof(mask));
	p += sizeof(mask);
	for (unsigned r = 0; r < NS_FRAME_NREGS; r++)
		if (mask & ((uint64_t)1 << r)) {
			memcpy(p, &regs[r], sizeof(uint64_t));
			p += sizeof(uint64_t);
		}
	return 0;
}

void *ns_frame_reserve_mem(struct ns_frame_builder *b, uint64_t addr, size_t len)
{
	size_t off = b->len;
	uint8_t *p = add_block(b, NS_FRAME_BLOCK_MEM, addr, len);
	if (p)
		b->last = off;
	return p;
}

void ns_frame_shrink_last(struct ns_frame_builder *b, size_t len)
{
	if (!b->last)
		return;
	uint8_t *p = b->buf + b->last;
	struct ns_frame_block blk;
	memcpy(&blk, p, sizeof(blk));
	if (len >= blk.len)
		return;
	if (len == 0) {
		// Nothing was captured: drop the block whole.
		b->len = b->last;
		b->nblocks--;
		b->last = 0;
		return;
	}
	blk.len = (uint32_t)len;
	memcpy(p, &blk, sizeof(blk));
	if (pad8(len) != len)
		memset(p + BLK_SIZE + len, 0, pad8(len) - len);
	b->len = b->last + BLK_SIZE + pad8(len);
}

int ns_frame_add_err(struct ns_frame_builder *b, uint32_t action, uint32_t status, uint64_t fault)
{
	uint8_t *p = add_block(b, NS_FRAME_BLOCK_ERR, action, 16);
	if (!p)
		return -1;
	uint32_t pad = 0;
	memcpy(p, &status, 4);
	memcpy(p + 4, &pad, 4);
	memcpy(p + 8, &fault, 8);
	return 0;
}

size_t ns_frame_end(struct ns_frame_builder *b)
{
	if (!b->buf || b->len < HDR_SIZE)
		return 0;
	uint32_t size = (uint32_t)b->len;
	memcpy(b->buf + offsetof(struct ns_frame_hdr, size), &size, sizeof(size));
	memcpy(b->buf + offsetof(struct ns_frame_hdr, nblocks), &b->nblocks, sizeof(b->nblocks));
	b->last = 0;
	return b->len;
}
