/* The stub <-> agent protocol: shared-memory ring layout and consumer, and the binary
 * INSTALL message. Used by both sides; the decoder treats its input as untrusted. */
#define _GNU_SOURCE
#include "agent/agent.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/tsc.h"
#include "frame/frame.h"

enum { SHM_ALIGN = 64, REC_HDR = 8 };

static size_t round_up(size_t v, size_t a)
{
	return (v + a - 1) / a * a;
}

static size_t tmpl_offset(unsigned nrings, size_t ring_bytes)
{
	size_t stride = round_up(sizeof(struct ns_agent_ring) + round_up(ring_bytes, 8), SHM_ALIGN);
	return round_up(round_up(sizeof(struct ns_agent_shm), SHM_ALIGN) + (size_t)nrings * stride,
	                SHM_ALIGN);
}

size_t ns_agent_shm_size(unsigned nrings, size_t ring_bytes)
{
	return tmpl_offset(nrings, ring_bytes) + NS_AGENT_NTMPL * sizeof(struct ns_agent_tmpl);
}

void ns_agent_shm_init(struct ns_agent_shm *shm, unsigned nrings, size_t ring_bytes)
{
	ring_bytes = round_up(ring_bytes, 8);
	shm->magic = NS_AGENT_SHM_MAGIC;
	shm->version = NS_AGENT_PROTO_VERSION;
	shm->size = sizeof(*shm);
	shm->nrings = nrings;
	shm->ring_bytes = ring_bytes;
	shm->ring_stride = round_up(sizeof(struct ns_agent_ring) + ring_bytes, SHM_ALIGN);
	shm->rings_offset = round_up(sizeof(struct ns_agent_shm), SHM_ALIGN);
	shm->total_size = ns_agent_shm_size(nrings, ring_bytes);
	shm->tmpl_offset = tmpl_offset(nrings, ring_bytes);
	atomic_store(&shm->dropped_no_ring, 0);
	atomic_store(&shm->hits, 0);
	for (unsigned i = 0; i < nrings; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring(shm, i);
		atomic_store(&r->head, 0);
		atomic_store(&r->tail, 0);
		r->read = r->trim_read = r->trim_head = r->head_seen = r->tail_seen = 0;
		atomic_store(&r->resets, 0);
		atomic_store(&r->dropped, 0);
		atomic_store(&r->owner, 0);
		r->seq = 0;
	}
}

struct ns_agent_ring *ns_agent_shm_ring(struct ns_agent_shm *shm, unsigned i)
{
	if (i >= shm->nrings)
		return NULL;
	return (struct ns_agent_ring *)((uint8_t *)shm + shm->rings_offset +
	                                (size_t)i * shm->ring_stride);
}

uint8_t *ns_agent_ring_data(struct ns_agent_shm *shm, struct ns_agent_ring *r)
{
	(void)shm;
	return (uint8_t *)(r + 1);
}

struct ns_agent_tmpl *ns_agent_shm_tmpl(struct ns_agent_shm *shm, unsigned i)
{
	if (i >= NS_AGENT_NTMPL)
		return NULL;
	return (struct ns_agent_tmpl *)((uint8_t *)shm + shm->tmpl_offset) + i;
}

// An inline record's time stamp is the raw TSC: CLOCK_REALTIME from this consumer
// thread's own calibration (base/tsc.h).
static void tsc_to_realtime(uint8_t *p)
{
	static _Thread_local struct ns_tsc_clock clk;
	uint64_t tsc;
	memcpy(&tsc, p, 8);
	ns_tsc_clock_tick(&clk);
	uint64_t ns = ns_tsc_clock_ns(&clk, tsc);
	memcpy(p, &ns, 8);
}

/* ---- giving consumed pages back ----
 *
 * The producer may write position p once p < tail + size, that is the offset of
 * position p - size: when tail passes a page's first position, the page's bytes may be
 * rewritten at once. So a page may be punched only while tail is behind it, after read
 * passed its end. The consumer keeps tail behind read (a lag of at most 1/8 of the
 * ring, so the producer keeps 7/8 of its room): while records keep coming, tail jumps to
 * read whenever the lag reaches that, and the pages it passes stay backed (the producer
 * is about to write them again: punching them would cost it a page fault each, and the
 * warmer work). A ring that is not streaming has the whole pages of its lag punched
 * by ns_agent_ring_trim, and only then tail moved (to a page boundary in the address
 * space: ring i's data starts 128 bytes into a page). */

enum { PAGE = 4096 };

// Whole pages of positions [from, to) (to - from <= size) out of the memfd.
static void punch(struct ns_agent_shm *shm, struct ns_agent_ring *r, uint64_t from, uint64_t to)
{
	uint8_t *data = ns_agent_ring_data(shm, r);
	uint64_t size = shm->ring_bytes;
	while (from < to) {
		uint64_t off = from % size;
		uint64_t n = size - off < to - from ? size - off : to - from;
		uintptr_t lo = ((uintptr_t)data + off + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
		uintptr_t hi = ((uintptr_t)data + off + n) & ~(uintptr_t)(PAGE - 1);
		// Fails (EINVAL) on memory that is not a shared mapping (tests): the
		// pages just stay.
		if (lo < hi)
			(void)madvise((void *)lo, hi - lo, MADV_REMOVE);
		from += n;
	}
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

// Back [p, p+len) of this process's mapping (whole pages around it).
static void populate(uint8_t *p, size_t len, bool write, bool *no_madv)
{
	uintptr_t lo = (uintptr_t)p & ~(uintptr_t)(PAGE - 1);
	uintptr_t hi = ((uintptr_t)p + len + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
	if (!*no_madv) {
		if (madvise((void *)lo, hi - lo,
		            write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) == 0)
			return;
		if (errno != EINVAL && errno != ENOSYS)
			return; // ENOMEM, EFAULT...: leave the rest to the faults
		*no_madv = true;
	}
	// Before Linux 5.14: a locked add of 0 to one word per page, a write access that
	// changes nothing and is atomic against the producer's stores.
	for (uintptr_t a = lo; a < hi; a += PAGE)
		__atomic_fetch_add((uint64_t *)a, 0, __ATOMIC_RELAXED);
}

void ns_agent_ring_populate(struct ns_agent_shm *shm, struct ns_agent_ring *r, uint64_t from,
                            uint64_t to, bool write, bool *no_madv)
{
	uint8_t *data = ns_agent_ring_data(shm, r);
	uint64_t size = shm->ring_bytes;
	while (from < to) {
		uint64_t off = from % size;
		uint64_t n = size - off < to - from ? size - off : to - from;
		populate(data + off, n, write, no_madv);
		from += n;
	}
}

static uint64_t lag_max(const struct ns_agent_shm *shm)
{
	uint64_t l = shm->ring_bytes / 8;
	return l < NS_AGENT_RECLAIM_LAG ? l : NS_AGENT_RECLAIM_LAG;
}

static void consume(struct ns_agent_shm *shm, struct ns_agent_ring *r, uint64_t len)
{
	r->read += len;
	if (r->read - atomic_load_explicit(&r->tail, memory_order_relaxed) >= lag_max(shm))
		atomic_store_explicit(&r->tail, r->read, memory_order_release);
}

void ns_agent_ring_trim(struct ns_agent_shm *shm, struct ns_agent_ring *r)
{
	uint64_t rd = r->read, size = shm->ring_bytes;
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	// A stream (1/NS_AGENT_STREAM_DIV of the lag or more since the last look, written
	// or read: 256 KiB per 100 ms, ~2.6 MB/s) keeps its pages: it writes them again
	// within a lap, and punching them would have the warmer back every page again (a
	// page fault's work, ~2 us here: ~0.5 ns per byte of the stream). The producer's
	// side counts too: a consumer that fell behind reads slowly.
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t moved = rd - r->trim_read, wrote = head - r->trim_head;
	uint64_t stream = lag_max(shm) / NS_AGENT_STREAM_DIV;
	r->trim_read = rd;
	r->trim_head = head;
	if (moved >= stream || wrote >= stream)
		return;
	if (rd - tail > size || rd == tail)
		return;
	if (size % PAGE) { // no page boundaries that stay put: release only
		atomic_store_explicit(&r->tail, rd, memory_order_release);
		return;
	}
	uint64_t in_page = ((uintptr_t)ns_agent_ring_data(shm, r) + rd % size) % PAGE;
	if (rd < in_page) // still in the ring's first page (it starts mid-page)
		return;
	uint64_t to = rd - in_page;
	if (to <= tail)
		return;
	punch(shm, r, tail, to);
	atomic_store_explicit(&r->tail, to, memory_order_release);
}

int ns_agent_warm_delay(uint64_t ahead, uint64_t moved, uint64_t dt_ns, int max_ms)
{
	if (!moved || !dt_ns)
		return max_ms;
	// ahead / 2 / (moved / dt), in ms: as if the producer kept its speed.
	unsigned __int128 ns = (unsigned __int128)(ahead / 2) * dt_ns / moved;
	uint64_t ms = ns / 1000000 > (uint64_t)max_ms ? (uint64_t)max_ms : (uint64_t)(ns / 1000000);
	return ms < NS_AGENT_WARM_MIN_MS ? NS_AGENT_WARM_MIN_MS : (int)ms;
}

uint64_t ns_agent_warm_window(uint64_t moved, uint64_t dt_ns, uint64_t min, uint64_t max)
{
	if (!moved || !dt_ns)
		return min;
	unsigned __int128 w = (unsigned __int128)moved * NS_AGENT_WARM_HOLD_MS * 1000000u / dt_ns;
	return w < min ? min : w > max ? max : (uint64_t)w;
}

void ns_agent_ring_claimed(struct ns_agent_shm *shm, unsigned i)
{
	uint32_t cur = atomic_load_explicit(&shm->rings_claimed, memory_order_relaxed);
	while (cur < i + 1 &&
	       !atomic_compare_exchange_weak_explicit(&shm->rings_claimed, &cur, i + 1,
	                                              memory_order_release, memory_order_relaxed))
		;
}

unsigned ns_agent_rings_live(struct ns_agent_shm *shm)
{
	unsigned n = atomic_load_explicit(&shm->rings_claimed, memory_order_acquire);
	if (n > shm->nrings)
		n = shm->nrings;
	return n < NS_AGENT_NRINGS ? n : NS_AGENT_NRINGS;
}

static long corrupt(struct ns_agent_ring *r, uint64_t head)
{
	r->head_seen = head;
	r->read = head;
	atomic_store_explicit(&r->tail, head, memory_order_release);
	atomic_fetch_add(&r->dropped, 1);
	return -1;
}

void ns_agent_ring_reset(struct ns_agent_shm *shm, struct ns_agent_ring *r)
{
	punch(shm, r, 0, shm->ring_bytes);
	atomic_store_explicit(&r->head, 0, memory_order_relaxed);
	atomic_store_explicit(&r->tail, 0, memory_order_relaxed);
	r->read = r->trim_read = r->trim_head = 0;
	r->seq = 0;
	r->tail_seen = r->head_seen = 0;
	atomic_fetch_add_explicit(&r->resets, 1, memory_order_release);
}

// The compact record at @rec (@avail bytes published and contiguous) expanded into its
// template's frame at @dst, and consumed. Everything is checked: the template too is
// in memory the program could have written.
static long pop_compact(struct ns_agent_shm *shm, struct ns_agent_ring *r, const uint8_t *rec,
                        uint64_t avail, uint64_t contiguous, void *dst, size_t cap)
{
	uint64_t head = r->read + avail;
	uint32_t w0;
	memcpy(&w0, rec, 4);
	uint32_t len = w0 & NS_AGENT_RECORD_LEN_MASK;
	uint32_t idx = (w0 & ~(NS_AGENT_RECORD_PAD | NS_AGENT_RECORD_TSC | NS_AGENT_RECORD_COMPACT)) >>
	               NS_AGENT_RECORD_TMPL_SHIFT;
	if (len < REC_HDR || (len & 7) || len > contiguous || len > avail || idx >= NS_AGENT_NTMPL)
		return corrupt(r, head);
	const struct ns_agent_tmpl *t = ns_agent_shm_tmpl(shm, idx);
	uint32_t flen = atomic_load_explicit(&t->frame_len, memory_order_acquire);
	uint32_t nfields = t->nfields;
	if (flen < sizeof(struct ns_frame_hdr) || flen > NS_AGENT_TMPL_FRAME_MAX ||
	    t->rec_len != len || nfields > NS_AGENT_TMPL_FIELDS)
		return corrupt(r, head);
	if (flen > cap) {
		consume(shm, r, len);
		atomic_fetch_add(&r->dropped, 1);
		return -1;
	}
	uint8_t *out = dst;
	memcpy(out, t->frame, flen);
	for (uint32_t i = 0; i < nfields; i++) {
		struct ns_agent_tmpl_field f = t->fields[i];
		if ((uint32_t)f.rec_off + f.len > len || (uint32_t)f.frame_off + f.len > flen)
			return corrupt(r, head);
		// Nearly every field is one word: a move, not a string copy's start-up.
		if (f.len == 8)
			memcpy(out + f.frame_off, rec + f.rec_off, 8);
		else
			memcpy(out + f.frame_off, rec + f.rec_off, f.len);
	}
	consume(shm, r, len);
	// The frame's own size word is the template's (the program cannot change it
	// under the stub's feet now that it is copied).
	uint32_t fsize;
	memcpy(&fsize, out + offsetof(struct ns_frame_hdr, size), 4);
	if (fsize != flen) {
		atomic_fetch_add(&r->dropped, 1);
		return -1;
	}
	if (w0 & NS_AGENT_RECORD_TSC)
		tsc_to_realtime(out + offsetof(struct ns_frame_hdr, time_ns));
	return (long)flen;
}

long ns_agent_ring_pop(struct ns_agent_shm *shm, struct ns_agent_ring *r, void *dst, size_t cap)
{
	const uint64_t size = shm->ring_bytes;
	const uint8_t *data = ns_agent_ring_data(shm, r);
	for (;;) {
		uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
		uint64_t rd = r->read;
		// The producer's line only when what was seen of head is used up (or is
		// behind: the stub reset the ring).
		uint64_t head = r->head_seen;
		if (head == rd || head - rd > size) {
			head = atomic_load_explicit(&r->head, memory_order_acquire);
			r->head_seen = head;
			if (rd == head)
				return 0;
		}
		// The producer lives in another process, and the program could write
		// this line too: check everything.
		if (head - tail > size || rd - tail > head - tail || (rd & 7) || size < REC_HDR ||
		    (size & 7))
			return corrupt(r, head);
		uint64_t off = rd % size;
		uint32_t len, frame_len;
		memcpy(&len, data + off, 4);
		if (len & NS_AGENT_RECORD_PAD) {
			uint64_t skip = len & ~(uint32_t)NS_AGENT_RECORD_PAD;
			if (skip != size - off || skip > head - rd)
				return corrupt(r, head);
			consume(shm, r, skip);
			continue;
		}
		uint32_t flags = len & NS_AGENT_RECORD_TSC;
		if (len & NS_AGENT_RECORD_COMPACT)
			return pop_compact(shm, r, data + off, head - rd, size - off, dst, cap);
		len &= ~(uint32_t)NS_AGENT_RECORD_TSC;
		if (len < REC_HDR || (len & 7) || len > size - off || len > head - rd)
			return corrupt(r, head);
		memcpy(&frame_len, data + off + 4, 4);
		if (frame_len > len - REC_HDR)
			return corrupt(r, head);
		if (frame_len > cap) {
			consume(shm, r, len);
			atomic_fetch_add(&r->dropped, 1);
			return -1;
		}
		memcpy(dst, data + off + REC_HDR, frame_len);
		consume(shm, r, len);
		if (flags && frame_len >= sizeof(struct ns_frame_hdr))
			tsc_to_realtime((uint8_t *)dst + offsetof(struct ns_frame_hdr, time_ns));
		return (long)frame_len;
	}
}

/* ---- INSTALL encoding ----
 *
 *   hdr (16) | u32 num | u32 flags (1 = enabled) | u64 addr | u64 step | u64 pass |
 *   u32 hit_mode | u32 cond_len | u64 hit_n | u64 max_frames | u32 nactions | u32 0 |
 *   cond bytes | nactions x action | u32 nranges | u32 0 | nranges x (u64 lo | u64 hi)
 *   action = u8 kind | u8 0 x3 | i32 basereg | u64 regmask | i64 offset | u64 len |
 *            u32 code_len | code bytes
 * little-endian, unaligned. The ranges are the function's (QTDP ":R"), for the
 * jump-pad window check: at most 8, each lo < hi. */

enum {
	FIXED_SIZE = 16 + 4 + 4 + 8 * 3 + 4 + 4 + 8 * 2 + 4 + 4,
	ACTION_FIXED = 4 + 4 + 8 * 3 + 4,
	RANGES_FIXED = 4 + 4,
	MAX_RANGES = sizeof(((struct ns_rsp_tracepoint *)0)->ranges) / 16,
};

// Limits well above anything GDB sends; they bound what a corrupt message allocates.
enum { MAX_ACTIONS = 4096, MAX_CODE = 1 << 20 };

struct wcur {
	uint8_t *p;
};

static void put(struct wcur *w, const void *v, size_t n)
{
	if (n)
		memcpy(w->p, v, n);
	w->p += n;
}

static void put32(struct wcur *w, uint32_t v)
{
	put(w, &v, 4);
}

static void put64(struct wcur *w, uint64_t v)
{
	put(w, &v, 8);
}

struct ns_err *ns_agent_encode_install(const struct ns_rsp_tracepoint *tp, uint32_t req_id,
                                       void **msg, size_t *len)
{
	size_t size = FIXED_SIZE + tp->cond_len + RANGES_FIXED + tp->nranges * 16;
	if (tp->cond_len > MAX_CODE || tp->nactions > MAX_ACTIONS || (tp->cond_len && !tp->cond) ||
	    tp->nranges > MAX_RANGES)
		return ns_err_create(NS_ERR_INVALID, "tracepoint %u: too large to install",
		                     tp->num);
	for (size_t i = 0; i < tp->nactions; i++) {
		if (tp->actions[i].code_len > MAX_CODE ||
		    (tp->actions[i].code_len && !tp->actions[i].code))
			return ns_err_create(NS_ERR_INVALID,
			                     "tracepoint %u: action %zu too large to install",
			                     tp->num, i);
		size += ACTION_FIXED + tp->actions[i].code_len;
	}
	if (size > UINT32_MAX)
		return ns_err_create(NS_ERR_INVALID, "tracepoint %u: too large to install",
		                     tp->num);
	uint8_t *buf = calloc(1, size);
	if (!buf)
		return &ns_err_nomem;
	struct wcur w = {buf};
	struct ns_agent_msg_hdr h = {NS_AGENT_MSG_INSTALL, (uint32_t)size, req_id, 0};
	put(&w, &h, sizeof(h));
	put32(&w, tp->num);
	put32(&w, tp->enabled ? 1 : 0);
	put64(&w, tp->addr);
	put64(&w, tp->step);
	put64(&w, tp->pass);
	put32(&w, (uint32_t)tp->hit_mode);
	put32(&w, (uint32_t)tp->cond_len);
	put64(&w, tp->hit_n);
	put64(&w, tp->max_frames);
	put32(&w, (uint32_t)tp->nactions);
	put32(&w, 0);
	put(&w, tp->cond, tp->cond_len);
	for (size_t i = 0; i < tp->nactions; i++) {
		const struct ns_rsp_action *a = &tp->actions[i];
		uint8_t kind[4] = {(uint8_t)a->kind, 0, 0, 0};
		put(&w, kind, 4);
		put32(&w, (uint32_t)(int32_t)a->basereg);
		put64(&w, a->regmask);
		put64(&w, (uint64_t)a->offset);
		put64(&w, a->len);
		put32(&w, (uint32_t)a->code_len);
		put(&w, a->code, a->code_len);
	}
	put32(&w, (uint32_t)tp->nranges);
	put32(&w, 0);
	for (size_t i = 0; i < 2 * tp->nranges; i++)
		put64(&w, tp->ranges[i]);
	*msg = buf;
	*len = size;
	return NULL;
}

struct rcur {
	const uint8_t *p;
	size_t left;
	size_t at;
	bool bad;
};

static void get(struct rcur *r, void *dst, size_t n)
{
	if (r->bad || n > r->left) {
		r->bad = true;
		memset(dst, 0, n);
		return;
	}
	memcpy(dst, r->p, n);
	r->p += n;
	r->left -= n;
	r->at += n;
}

static uint32_t get32(struct rcur *r)
{
	uint32_t v;
	get(r, &v, 4);
	return v;
}

static uint64_t get64(struct rcur *r)
{
	uint64_t v;
	get(r, &v, 8);
	return v;
}

// A malloc'd copy of the next @n bytes (NULL for 0), or sets *@err.
static uint8_t *get_bytes(struct rcur *r, size_t n, struct ns_err **err)
{
	if (n == 0)
		return NULL;
	if (r->bad || n > r->left) {
		r->bad = true;
		return NULL;
	}
	uint8_t *b = malloc(n);
	if (!b) {
		*err = &ns_err_nomem;
		return NULL;
	}
	get(r, b, n);
	return b;
}

static void free_tp(struct ns_rsp_tracepoint *tp)
{
	free(tp->cond);
	for (size_t i = 0; i < tp->nactions; i++)
		free(tp->actions[i].code);
	free(tp->actions);
	memset(tp, 0, sizeof(*tp));
}

static struct ns_err *truncated(struct ns_rsp_tracepoint *tp, const struct rcur *r,
                                const char *what)
{
	free_tp(tp);
	return ns_err_create(NS_ERR_FORMAT, "INSTALL message truncated at byte %zu (%s)", r->at,
	                     what);
}

struct ns_err *ns_agent_decode_install(const void *msg, size_t len, struct ns_rsp_tracepoint *tp)
{
	struct rcur r = {msg, len, 0, false};
	struct ns_err *err = NULL;
	struct ns_rsp_tracepoint t;
	memset(&t, 0, sizeof(t));
	struct ns_agent_msg_hdr h;
	get(&r, &h, sizeof(h));
	if (r.bad)
		return truncated(&t, &r, "header");
	if (h.type != NS_AGENT_MSG_INSTALL)
		return ns_err_create(NS_ERR_FORMAT, "message type %u is not INSTALL", h.type);
	if (h.size != len)
		return ns_err_create(NS_ERR_FORMAT, "INSTALL message says %u bytes, got %zu",
		                     h.size, len);
	t.num = get32(&r);
	uint32_t flags = get32(&r);
	t.enabled = flags & 1;
	t.addr = get64(&r);
	t.step = get64(&r);
	t.pass = get64(&r);
	uint32_t mode = get32(&r);
	uint32_t cond_len = get32(&r);
	t.hit_n = get64(&r);
	t.max_frames = get64(&r);
	uint32_t nactions = get32(&r);
	get32(&r);
	if (r.bad)
		return truncated(&t, &r, "tracepoint");
	if (mode > NS_RSP_HIT_MOD)
		return ns_err_create(NS_ERR_FORMAT, "tracepoint %u: bad hit mode %u", t.num, mode);
	t.hit_mode = (enum ns_rsp_hit_mode)mode;
	if (cond_len > r.left)
		return truncated(&t, &r, "condition");
	if (nactions > MAX_ACTIONS || (size_t)nactions * ACTION_FIXED > r.left - cond_len)
		return ns_err_create(NS_ERR_FORMAT, "tracepoint %u: %u actions do not fit", t.num,
		                     nactions);
	t.cond = get_bytes(&r, cond_len, &err);
	if (err)
		return err;
	t.cond_len = cond_len;
	if (nactions) {
		t.actions = calloc(nactions, sizeof(*t.actions));
		if (!t.actions) {
			free_tp(&t);
			return &ns_err_nomem;
		}
	}
	for (uint32_t i = 0; i < nactions; i++) {
		struct ns_rsp_action *a = &t.actions[i];
		uint8_t kind[4];
		get(&r, kind, 4);
		a->basereg = (int32_t)get32(&r);
		a->regmask = get64(&r);
		a->offset = (int64_t)get64(&r);
		a->len = get64(&r);
		uint32_t code_len = get32(&r);
		t.nactions = i + 1;
		if (r.bad || code_len > r.left)
			return truncated(&t, &r, "action");
		if (kind[0] != NS_RSP_ACT_REGS && kind[0] != NS_RSP_ACT_MEM &&
		    kind[0] != NS_RSP_ACT_EXPR) {
			free_tp(&t);
			return ns_err_create(NS_ERR_FORMAT, "action %u: unknown kind 0x%02x", i,
			                     kind[0]);
		}
		a->kind = (enum ns_rsp_action_kind)kind[0];
		if ((a->kind == NS_RSP_ACT_EXPR) != (code_len != 0)) {
			free_tp(&t);
			return ns_err_create(NS_ERR_FORMAT, "action %u: %s", i,
			                     code_len ? "bytecode on a non-X action"
			                              : "X action without bytecode");
		}
		a->code = get_bytes(&r, code_len, &err);
		if (err) {
			free_tp(&t);
			return err;
		}
		a->code_len = code_len;
	}
	uint32_t nranges = get32(&r);
	get32(&r);
	if (r.bad)
		return truncated(&t, &r, "ranges");
	if (nranges > MAX_RANGES || (size_t)nranges * 16 > r.left) {
		free_tp(&t);
		return ns_err_create(NS_ERR_FORMAT, "tracepoint %u: %u function ranges do not fit",
		                     t.num, nranges);
	}
	for (uint32_t i = 0; i < nranges; i++) {
		t.ranges[2 * i] = get64(&r);
		t.ranges[2 * i + 1] = get64(&r);
		if (t.ranges[2 * i] >= t.ranges[2 * i + 1]) {
			free_tp(&t);
			return ns_err_create(NS_ERR_FORMAT,
			                     "tracepoint %u: empty function range %u", t.num, i);
		}
	}
	t.nranges = nranges;
	if (r.left) {
		free_tp(&t);
		return ns_err_create(NS_ERR_FORMAT, "INSTALL message has %zu trailing bytes",
		                     r.left);
	}
	*tp = t;
	return NULL;
}
