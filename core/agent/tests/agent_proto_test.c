/* Tests for core/agent/agent_proto.c: INSTALL encode/decode (round trip, every
 * truncation, corrupt fields) and the ring consumer against records produced the way
 * the agent's trap handler produces them (agent_collect_sig.c). */
#define _GNU_SOURCE
#include "agent/agent.h"
#include "base/test.h"
#include "frame/frame.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static void make_tp(struct ns_rsp_tracepoint *tp)
{
	memset(tp, 0, sizeof(*tp));
	tp->num = 7;
	tp->addr = 0x55555555a123ull;
	tp->enabled = true;
	tp->step = 0;
	tp->pass = 3;
	tp->cond = malloc(4);
	memcpy(tp->cond, "\x22\x01\x27\x00", 4);
	tp->cond_len = 3;
	tp->hit_mode = NS_RSP_HIT_MOD;
	tp->hit_n = 5;
	tp->max_frames = 100;
	tp->nactions = 3;
	tp->actions = calloc(3, sizeof(*tp->actions));
	tp->actions[0].kind = NS_RSP_ACT_REGS;
	tp->actions[0].regmask = 0x3ffffff;
	tp->actions[1].kind = NS_RSP_ACT_MEM;
	tp->actions[1].basereg = -1;
	tp->actions[1].offset = -0x100;
	tp->actions[1].len = 64;
	tp->actions[2].kind = NS_RSP_ACT_EXPR;
	tp->actions[2].code = malloc(5);
	memcpy(tp->actions[2].code, "\x26\x00\x06\x27\x00", 5);
	tp->actions[2].code_len = 4;
	tp->nranges = 2;
	tp->ranges[0] = 0x55555555a000ull;
	tp->ranges[1] = 0x55555555a200ull;
	tp->ranges[2] = 0x555555550100ull;
	tp->ranges[3] = 0x555555550180ull;
}

static void free_tp(struct ns_rsp_tracepoint *tp)
{
	free(tp->cond);
	for (size_t i = 0; i < tp->nactions; i++)
		free(tp->actions[i].code);
	free(tp->actions);
}

NS_TEST(test_agent_proto__install_round_trip)
{
	struct ns_rsp_tracepoint tp, back;
	make_tp(&tp);
	void *msg = NULL;
	size_t len = 0;
	NS_CHECK_OK(ns_agent_encode_install(&tp, 42, &msg, &len));
	struct ns_agent_msg_hdr h;
	memcpy(&h, msg, sizeof(h));
	NS_CHECK_INT(h.type, NS_AGENT_MSG_INSTALL);
	NS_CHECK_INT(h.size, len);
	NS_CHECK_INT(h.req_id, 42);
	NS_CHECK_OK(ns_agent_decode_install(msg, len, &back));
	NS_CHECK_INT(back.num, 7);
	NS_CHECK(back.addr == 0x55555555a123ull);
	NS_CHECK(back.enabled);
	NS_CHECK_INT(back.pass, 3);
	NS_CHECK_INT(back.cond_len, 3);
	NS_CHECK(back.cond && memcmp(back.cond, "\x22\x01\x27", 3) == 0);
	NS_CHECK_INT(back.hit_mode, NS_RSP_HIT_MOD);
	NS_CHECK_INT(back.hit_n, 5);
	NS_CHECK_INT(back.max_frames, 100);
	NS_CHECK_INT(back.nactions, 3);
	if (back.nactions == 3) {
		NS_CHECK_INT(back.actions[0].kind, 'R');
		NS_CHECK(back.actions[0].regmask == 0x3ffffff);
		NS_CHECK_INT(back.actions[1].kind, 'M');
		NS_CHECK_INT(back.actions[1].basereg, -1);
		NS_CHECK_INT(back.actions[1].offset, -0x100);
		NS_CHECK_INT(back.actions[1].len, 64);
		NS_CHECK(back.actions[1].code == NULL);
		NS_CHECK_INT(back.actions[2].kind, 'X');
		NS_CHECK_INT(back.actions[2].code_len, 4);
		NS_CHECK(memcmp(back.actions[2].code, "\x26\x00\x06\x27", 4) == 0);
	}
	NS_CHECK_INT(back.nranges, 2);
	NS_CHECK(back.ranges[0] == 0x55555555a000ull && back.ranges[1] == 0x55555555a200ull);
	NS_CHECK(back.ranges[2] == 0x555555550100ull && back.ranges[3] == 0x555555550180ull);
	free_tp(&back);
	free_tp(&tp);
	free(msg);
}

NS_TEST(test_agent_proto__install_no_cond_no_actions)
{
	struct ns_rsp_tracepoint tp, back;
	memset(&tp, 0, sizeof(tp));
	tp.num = 1;
	tp.addr = 0x401000;
	void *msg;
	size_t len;
	NS_CHECK_OK(ns_agent_encode_install(&tp, 1, &msg, &len));
	NS_CHECK_OK(ns_agent_decode_install(msg, len, &back));
	NS_CHECK(back.cond == NULL && back.actions == NULL && !back.enabled);
	NS_CHECK_INT(back.nactions, 0);
	free(msg);
}

NS_TEST(test_agent_proto__install_every_truncation_rejected)
{
	struct ns_rsp_tracepoint tp, back;
	make_tp(&tp);
	void *msg;
	size_t len;
	NS_CHECK_OK(ns_agent_encode_install(&tp, 1, &msg, &len));
	for (size_t cut = 0; cut < len; cut++) {
		// A copy of exactly @cut bytes (so ASan would see any over-read), with the
		// header's size both left alone and patched to match.
		for (int patch = 0; patch < 2; patch++) {
			uint8_t *m = malloc(cut ? cut : 1);
			memcpy(m, msg, cut);
			if (patch && cut >= 8) {
				uint32_t s = (uint32_t)cut;
				memcpy(m + 4, &s, 4);
			}
			memset(&back, 0x5a, sizeof(back));
			struct ns_err *err = ns_agent_decode_install(m, cut, &back);
			if (!err)
				ns_test_fail(__FILE__, __LINE__, "cut at %zu accepted", cut);
			else if (err->code != NS_ERR_FORMAT)
				ns_test_fail(__FILE__, __LINE__, "cut at %zu: %s", cut, err->msg);
			ns_err_destroy(err);
			free(m);
		}
	}
	free(msg);
	free_tp(&tp);
}

static struct ns_err *decode_patched(const void *msg, size_t len, size_t at, const void *v,
                                     size_t n)
{
	uint8_t *m = malloc(len);
	memcpy(m, msg, len);
	memcpy(m + at, v, n);
	struct ns_rsp_tracepoint back;
	struct ns_err *err = ns_agent_decode_install(m, len, &back);
	if (!err)
		free_tp(&back);
	free(m);
	return err;
}

static void expect_format(struct ns_err *err, const char *needle, int line)
{
	if (!err) {
		ns_test_fail(__FILE__, line, "corrupt message accepted");
		return;
	}
	if (err->code != NS_ERR_FORMAT || !strstr(err->msg, needle))
		ns_test_fail(__FILE__, line, "got '%s', expected a format error with '%s'",
		             err->msg, needle);
	ns_err_destroy(err);
}

NS_TEST(test_agent_proto__install_corrupt_rejected)
{
	struct ns_rsp_tracepoint tp;
	make_tp(&tp);
	void *msg;
	size_t len;
	NS_CHECK_OK(ns_agent_encode_install(&tp, 1, &msg, &len));
	// Offsets from the layout comment in agent_proto.c.
	uint32_t v = 3;
	expect_format(decode_patched(msg, len, 0, &v, 4), "not INSTALL", __LINE__);
	v = (uint32_t)len + 1;
	expect_format(decode_patched(msg, len, 4, &v, 4), "says", __LINE__);
	v = 9; // hit mode
	expect_format(decode_patched(msg, len, 48, &v, 4), "hit mode", __LINE__);
	v = 0xffffffffu; // cond_len
	expect_format(decode_patched(msg, len, 52, &v, 4), "truncated", __LINE__);
	v = 0x7fffffffu; // nactions
	expect_format(decode_patched(msg, len, 72, &v, 4), "actions do not fit", __LINE__);
	size_t act0 = 80 + 3;
	uint8_t k = 'Q';
	expect_format(decode_patched(msg, len, act0, &k, 1), "unknown kind", __LINE__);
	v = 0xfffffff0u; // first action's code_len
	expect_format(decode_patched(msg, len, act0 + 32, &v, 4), "truncated", __LINE__);
	v = 1; // an R action with bytecode
	expect_format(decode_patched(msg, len, act0 + 32, &v, 4), "bytecode on a non-X", __LINE__);
	size_t act2 = act0 + 36 + 36;
	v = 0; // the X action without bytecode: 4 trailing bytes remain
	expect_format(decode_patched(msg, len, act2 + 32, &v, 4), "X action without", __LINE__);
	// Ranges at the end: nranges, then (lo, hi) pairs.
	size_t rng = len - 8 - 2 * 16;
	v = 9; // more ranges than the struct holds
	expect_format(decode_patched(msg, len, rng, &v, 4), "ranges do not fit", __LINE__);
	v = 3; // one more range than the message carries
	expect_format(decode_patched(msg, len, rng, &v, 4), "ranges do not fit", __LINE__);
	uint64_t lo = 0x55555555a200ull; // lo == hi
	expect_format(decode_patched(msg, len, rng + 8, &lo, 8), "empty function range", __LINE__);
	v = 1; // one range: 16 trailing bytes
	expect_format(decode_patched(msg, len, rng, &v, 4), "trailing", __LINE__);
	// Trailing garbage.
	uint8_t *longer = malloc(len + 8);
	memcpy(longer, msg, len);
	memset(longer + len, 0, 8);
	uint32_t s = (uint32_t)len + 8;
	memcpy(longer + 4, &s, 4);
	struct ns_rsp_tracepoint back;
	expect_format(ns_agent_decode_install(longer, len + 8, &back), "trailing", __LINE__);
	free(longer);
	free(msg);
	free_tp(&tp);
}

/* ---- rings ---- */

static struct ns_agent_shm *new_shm(unsigned nrings, size_t ring_bytes)
{
	size_t size = ns_agent_shm_size(nrings, ring_bytes);
	struct ns_agent_shm *shm = aligned_alloc(64, (size + 63) / 64 * 64);
	memset(shm, 0, size);
	ns_agent_shm_init(shm, nrings, ring_bytes);
	return shm;
}

// The producer, as agent_collect_sig.c does it: room for @reserve contiguous bytes
// (a padding record first if the tail of the ring is too short), the record header,
// the frame, then a release store of head. Returns false (and counts a drop) if full.
static bool push(struct ns_agent_shm *shm, struct ns_agent_ring *r, const void *frame,
                 uint32_t frame_len, size_t reserve)
{
	uint8_t *data = ns_agent_ring_data(shm, r);
	uint64_t size = shm->ring_bytes;
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint64_t off = head % size;
	uint64_t pad = size - off < reserve ? size - off : 0;
	if (size - (head - tail) < pad + reserve) {
		atomic_fetch_add(&r->dropped, 1);
		return false;
	}
	if (pad) {
		uint32_t p = (uint32_t)pad | NS_AGENT_RECORD_PAD;
		memcpy(data + off, &p, 4);
		head += pad;
		off = 0;
	}
	uint32_t len = (uint32_t)((8 + frame_len + 7) & ~7u);
	memcpy(data + off, &len, 4);
	memcpy(data + off + 4, &frame_len, 4);
	memcpy(data + off + 8, frame, frame_len);
	atomic_store_explicit(&r->head, head + len, memory_order_release);
	return true;
}

NS_TEST(test_agent_proto__shm_layout)
{
	struct ns_agent_shm *shm = new_shm(4, 1000);
	NS_CHECK_INT(shm->magic, NS_AGENT_SHM_MAGIC);
	NS_CHECK_INT(shm->version, NS_AGENT_PROTO_VERSION);
	NS_CHECK_INT(shm->size, sizeof(struct ns_agent_shm));
	NS_CHECK_INT(shm->ring_bytes, 1000);
	NS_CHECK_INT(shm->total_size, ns_agent_shm_size(4, 1000));
	uint8_t *end = (uint8_t *)shm + shm->total_size;
	for (unsigned i = 0; i < 4; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring(shm, i);
		NS_CHECK(((uintptr_t)r & 63) == 0);
		uint8_t *d = ns_agent_ring_data(shm, r);
		NS_CHECK(((uintptr_t)d & 7) == 0);
		NS_CHECK(d + shm->ring_bytes <= end);
		if (i)
			NS_CHECK((uint8_t *)r >=
			         ns_agent_ring_data(shm, ns_agent_shm_ring(shm, i - 1)) +
			                 shm->ring_bytes);
	}
	NS_CHECK(ns_agent_shm_ring(shm, 4) == NULL);
	// The template table after the last ring, inside the shm, aligned.
	uint8_t *last_end = ns_agent_ring_data(shm, ns_agent_shm_ring(shm, 3)) + shm->ring_bytes;
	struct ns_agent_tmpl *t0 = ns_agent_shm_tmpl(shm, 0);
	NS_CHECK((uint8_t *)t0 >= last_end);
	NS_CHECK(((uintptr_t)t0 & 7) == 0);
	NS_CHECK((uint8_t *)(ns_agent_shm_tmpl(shm, NS_AGENT_NTMPL - 1) + 1) <= end);
	NS_CHECK(ns_agent_shm_tmpl(shm, NS_AGENT_NTMPL) == NULL);
	// Default sizes used by the stub: the rings, a little header, the templates.
	NS_CHECK(ns_agent_shm_size(NS_AGENT_NRINGS, NS_AGENT_RING_BYTES) <
	         (size_t)NS_AGENT_NRINGS * (NS_AGENT_RING_BYTES + 4096) +
	                 NS_AGENT_NTMPL * sizeof(struct ns_agent_tmpl));
	free(shm);
}

NS_TEST(test_agent_proto__ring_push_pop)
{
	struct ns_agent_shm *shm = new_shm(2, 4096);
	struct ns_agent_ring *r = ns_agent_shm_ring(shm, 1);
	uint8_t out[512];
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 0);
	uint8_t f[100];
	for (int i = 0; i < 100; i++)
		f[i] = (uint8_t)i;
	NS_CHECK(push(shm, r, f, 100, 256));
	NS_CHECK(push(shm, r, f, 13, 256));
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 100);
	NS_CHECK(memcmp(out, f, 100) == 0);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 13);
	NS_CHECK(memcmp(out, f, 13) == 0);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 0);
	NS_CHECK(r->read == atomic_load(&r->head));
	NS_CHECK(atomic_load(&r->head) == 112 + 24);
	free(shm);
}

NS_TEST(test_agent_proto__ring_wrap_with_padding)
{
	// 1024-byte ring, producer reserving 256 per record: after a few records the
	// tail of the ring is too short and a padding record sends the next to offset 0.
	struct ns_agent_shm *shm = new_shm(1, 1024);
	struct ns_agent_ring *r = ns_agent_shm_ring(shm, 0);
	uint8_t out[512], f[200];
	unsigned pushed = 0, popped = 0, pads_seen = 0;
	for (int round = 0; round < 40; round++) {
		// Push until full, then drain: each round starts at a different offset.
		unsigned n_round = 0;
		for (;;) {
			uint32_t fl = 40 + (uint32_t)((pushed * 37) % 150);
			memset(f, (int)(pushed & 0xff), sizeof(f));
			uint64_t before = atomic_load(&r->head);
			if (!push(shm, r, f, fl, 256))
				break;
			if (before % 1024 + 256 > 1024)
				pads_seen++;
			pushed++;
			n_round++;
		}
		NS_CHECK(n_round >= 2);
		long n;
		while ((n = ns_agent_ring_pop(shm, r, out, sizeof(out))) > 0) {
			uint32_t want = 40 + (uint32_t)((popped * 37) % 150);
			if (n != want || out[0] != (uint8_t)(popped & 0xff) ||
			    out[n - 1] != (uint8_t)(popped & 0xff))
				ns_test_fail(__FILE__, __LINE__, "record %u: %ld bytes", popped, n);
			popped++;
		}
		NS_CHECK_INT(n, 0);
	}
	NS_CHECK_INT(popped, pushed);
	NS_CHECK(pads_seen > 5);
	NS_CHECK_INT(atomic_load(&r->dropped), 40); // one failed push per round
	free(shm);
}

NS_TEST(test_agent_proto__ring_corrupt_resets)
{
	struct ns_agent_shm *shm = new_shm(1, 1024);
	struct ns_agent_ring *r = ns_agent_shm_ring(shm, 0);
	uint8_t *data = ns_agent_ring_data(shm, r);
	uint8_t out[512], f[64] = {1};
	NS_CHECK(push(shm, r, f, 64, 128));
	NS_CHECK(push(shm, r, f, 64, 128));
	uint32_t bad = 12; // not 8-aligned
	memcpy(data, &bad, 4);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), -1);
	NS_CHECK(atomic_load(&r->tail) == atomic_load(&r->head));
	NS_CHECK_INT(atomic_load(&r->dropped), 1);

	// frame length larger than the record
	NS_CHECK(push(shm, r, f, 64, 128));
	uint64_t off = r->read % 1024;
	uint32_t fl = 500;
	memcpy(data + off + 4, &fl, 4);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), -1);
	NS_CHECK_INT(atomic_load(&r->dropped), 2);

	// padding that does not reach the end of the ring
	NS_CHECK(push(shm, r, f, 64, 128));
	off = r->read % 1024;
	uint32_t p = 16 | NS_AGENT_RECORD_PAD;
	memcpy(data + off, &p, 4);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), -1);

	// head beyond tail + ring size
	atomic_store(&r->head, atomic_load(&r->tail) + 4096);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), -1);
	NS_CHECK(atomic_load(&r->tail) == atomic_load(&r->head));

	// A frame larger than the caller's buffer is skipped, not copied.
	NS_CHECK(push(shm, r, f, 64, 128));
	NS_CHECK(push(shm, r, f, 8, 128));
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, 32), -1);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, 32), 8);
	free(shm);
}

/* ---- compact records ---- */

enum { C_TID = 4, C_TSC = 8, C_SEQ = 16, C_REGS = 24, C_LEN = 40 };

// A two-register logpoint frame (rdi, rsi) with the given header values, built by the
// frame module: the template (zeros) and the expected expansions.
static size_t frame_of(uint8_t *buf, size_t cap, uint64_t tid, uint64_t time, uint64_t seq,
                       uint64_t rdi, uint64_t rsi)
{
	struct ns_frame_hdr hdr;
	memset(&hdr, 0, sizeof(hdr));
	hdr.tp_id = 9;
	hdr.addr = 0x401136;
	hdr.tid = tid;
	hdr.time_ns = time;
	hdr.seq = seq;
	struct ns_frame_builder b;
	memset(buf, 0, cap);
	if (ns_frame_begin(&b, buf, cap, &hdr) != 0)
		return 0;
	uint64_t regs[NS_FRAME_NREGS] = {0};
	regs[5] = rdi;
	regs[4] = rsi;
	if (ns_frame_add_regs_some(&b, 1u << 5 | 1u << 4, regs) != 0)
		return 0;
	return ns_frame_end(&b);
}

// Template @idx for frame_of's frame: the record's tid, tsc, seq and two registers
// (rsi then rdi: lowest register number first in the frame's block).
static uint32_t put_tmpl(struct ns_agent_shm *shm, unsigned idx)
{
	struct ns_agent_tmpl *t = ns_agent_shm_tmpl(shm, idx);
	uint8_t f[NS_AGENT_TMPL_FRAME_MAX];
	uint32_t flen = (uint32_t)frame_of(f, sizeof(f), 0, 0, 0, 0, 0);
	// Where the two register values sit: find them by building with markers.
	uint8_t m[NS_AGENT_TMPL_FRAME_MAX];
	frame_of(m, sizeof(m), 0, 0, 0, 0x1111111111111111ull, 0x2222222222222222ull);
	uint16_t at_rdi = 0, at_rsi = 0;
	for (uint16_t o = 0; o + 8u <= flen; o++) {
		uint64_t v;
		memcpy(&v, m + o, 8);
		if (v == 0x1111111111111111ull)
			at_rdi = o;
		if (v == 0x2222222222222222ull)
			at_rsi = o;
	}
	memcpy(t->frame, f, flen);
	t->rec_len = C_LEN;
	t->nfields = 5;
	t->fields[0] = (struct ns_agent_tmpl_field){C_TID, offsetof(struct ns_frame_hdr, tid), 4, 0};
	t->fields[1] = (struct ns_agent_tmpl_field){C_TSC, offsetof(struct ns_frame_hdr, time_ns), 8, 0};
	t->fields[2] = (struct ns_agent_tmpl_field){C_SEQ, offsetof(struct ns_frame_hdr, seq), 8, 0};
	t->fields[3] = (struct ns_agent_tmpl_field){C_REGS, at_rsi, 8, 0};
	t->fields[4] = (struct ns_agent_tmpl_field){C_REGS + 8, at_rdi, 8, 0};
	atomic_store(&t->frame_len, flen);
	return flen;
}

// A compact record as a jump pad writes it (no TSC flag: time stays what we put).
static void push_compact(struct ns_agent_shm *shm, struct ns_agent_ring *r, unsigned idx,
                         uint32_t len, uint32_t tid, uint64_t time, uint64_t seq, uint64_t rsi,
                         uint64_t rdi)
{
	uint8_t *data = ns_agent_ring_data(shm, r);
	uint64_t head = atomic_load(&r->head);
	uint8_t *rec = data + head % shm->ring_bytes;
	uint32_t w0 = NS_AGENT_RECORD_COMPACT | idx << NS_AGENT_RECORD_TMPL_SHIFT | len;
	memset(rec, 0, len);
	memcpy(rec, &w0, 4);
	memcpy(rec + C_TID, &tid, 4);
	memcpy(rec + C_TSC, &time, 8);
	memcpy(rec + C_SEQ, &seq, 8);
	memcpy(rec + C_REGS, &rsi, 8);
	memcpy(rec + C_REGS + 8, &rdi, 8);
	atomic_store(&r->head, head + len);
}

NS_TEST(test_agent_proto__compact_expands_to_the_frame)
{
	struct ns_agent_shm *shm = new_shm(1, 4096);
	struct ns_agent_ring *r = ns_agent_shm_ring(shm, 0);
	uint32_t flen = put_tmpl(shm, 4095);
	NS_CHECK(flen > C_LEN); // the point: the ring holds less than the frame
	uint8_t out[1024], want[1024];
	for (uint64_t i = 0; i < 300; i++) { // wraps the 4 KiB ring several times
		uint64_t off = atomic_load(&r->head) % 4096;
		if (4096 - off < C_LEN) { // the producer's padding record
			uint32_t p = (uint32_t)(4096 - off) | NS_AGENT_RECORD_PAD;
			memcpy(ns_agent_ring_data(shm, r) + off, &p, 4);
			atomic_store(&r->head, atomic_load(&r->head) + 4096 - off);
		}
		push_compact(shm, r, 4095, C_LEN, 1000 + (uint32_t)i, 5000 + i, i, 7 * i, ~i);
		NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), flen);
		NS_CHECK_INT(frame_of(want, sizeof(want), 1000 + i, 5000 + i, i, ~i, 7 * i), flen);
		if (memcmp(out, want, flen) != 0)
			ns_test_fail(__FILE__, __LINE__, "record %llu expands wrong", (unsigned long long)i);
	}
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 0);
	NS_CHECK_INT(atomic_load(&r->dropped), 0);
	free(shm);
}

NS_TEST(test_agent_proto__compact_corrupt_rejected)
{
	struct ns_agent_shm *shm = new_shm(1, 4096);
	struct ns_agent_ring *r = ns_agent_shm_ring(shm, 0);
	uint32_t flen = put_tmpl(shm, 3);
	struct ns_agent_tmpl *t = ns_agent_shm_tmpl(shm, 3);
	uint8_t out[1024];
	uint64_t drops = 0;
#define EXPECT_DROP()                                                            \
	do {                                                                     \
		NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), -1);   \
		NS_CHECK(r->read == atomic_load(&r->head)); /* consumed */     \
		NS_CHECK_INT(atomic_load(&r->dropped), ++drops);                 \
	} while (0)

	push_compact(shm, r, 4, C_LEN, 1, 2, 3, 4, 5); // a slot never written
	EXPECT_DROP();
	push_compact(shm, r, NS_AGENT_NTMPL + 5, C_LEN, 1, 2, 3, 4, 5); // beyond the table
	EXPECT_DROP();
	push_compact(shm, r, 3, C_LEN + 8, 1, 2, 3, 4, 5); // not the template's length
	EXPECT_DROP();
	push_compact(shm, r, 3, C_LEN, 1, 2, 3, 4, 5);
	atomic_store(&r->head, atomic_load(&r->head) - 8); // record longer than published
	EXPECT_DROP();
	// Templates the program scribbled on.
	t->fields[4].rec_off = C_LEN - 4; // field past the record
	push_compact(shm, r, 3, C_LEN, 1, 2, 3, 4, 5);
	EXPECT_DROP();
	t->fields[4].rec_off = C_REGS + 8;
	t->fields[4].frame_off = (uint16_t)(flen - 4); // past the frame
	push_compact(shm, r, 3, C_LEN, 1, 2, 3, 4, 5);
	EXPECT_DROP();
	t->fields[4].frame_off = offsetof(struct ns_frame_hdr, size); // over the size word
	push_compact(shm, r, 3, C_LEN, 1, 2, 3, 4, 5);
	EXPECT_DROP();
	t->nfields = NS_AGENT_TMPL_FIELDS + 1;
	push_compact(shm, r, 3, C_LEN, 1, 2, 3, 4, 5);
	EXPECT_DROP();
	t->nfields = 5;
	atomic_store(&t->frame_len, NS_AGENT_TMPL_FRAME_MAX + 8);
	push_compact(shm, r, 3, C_LEN, 1, 2, 3, 4, 5);
	EXPECT_DROP();
	// Repaired: records flow again; one larger than the caller's buffer is skipped.
	put_tmpl(shm, 3);
	push_compact(shm, r, 3, C_LEN, 1, 2, 3, 4, 5);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), flen);
	push_compact(shm, r, 3, C_LEN, 1, 2, 3, 4, 5);
	push_compact(shm, r, 3, C_LEN, 1, 2, 3, 4, 5);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, flen - 1), -1);
	NS_CHECK_INT(atomic_load(&r->dropped), ++drops);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), flen);
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 0);
#undef EXPECT_DROP
	free(shm);
}

/* ---- pages given back ---- */

enum { PG = 4096 };

// The shm in a memfd mapped shared, as the stub maps it (punching needs that).
static struct ns_agent_shm *memfd_shm(unsigned nrings, size_t ring_bytes, size_t *len_out)
{
	size_t len = ns_agent_shm_size(nrings, ring_bytes);
	int fd = memfd_create("nonstop-test", 0);
	if (fd < 0 || ftruncate(fd, (off_t)len) != 0)
		return NULL;
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return NULL;
	ns_agent_shm_init(m, nrings, ring_bytes);
	*len_out = len;
	return m;
}

// Whole pages of ring @r's data positions [lo, hi) (offsets in one lap) in memory, by
// the kernel's account (mincore), and their number in *@total.
static size_t in_core(struct ns_agent_shm *shm, struct ns_agent_ring *r, uint64_t lo,
                      uint64_t hi, size_t *total)
{
	uint8_t *data = ns_agent_ring_data(shm, r);
	uintptr_t a = ((uintptr_t)data + lo + PG - 1) & ~(uintptr_t)(PG - 1);
	uintptr_t b = ((uintptr_t)data + hi) & ~(uintptr_t)(PG - 1);
	*total = b > a ? (b - a) / PG : 0;
	if (b <= a)
		return 0;
	static unsigned char vec[(2 << 20) / PG + 2];
	if ((b - a) / PG > sizeof(vec) || mincore((void *)a, b - a, vec) != 0)
		return (size_t)-1;
	size_t n = 0;
	for (size_t i = 0; i < *total; i++)
		n += vec[i] & 1;
	return n;
}

// Push @count records of 1..@max bytes (or until the ring is full: *@full set), numbered
// from *@pushed; each reserves @max + 16 (a record's header and padding) as the agent's
// producer reserves its largest frame.
static void push_burst(struct ns_agent_shm *shm, struct ns_agent_ring *r, unsigned count,
                       uint32_t max, uint64_t *pushed, bool *full)
{
	uint8_t f[3000];
	*full = false;
	for (unsigned i = 0; i < count; i++) {
		uint32_t fl = 1 + (uint32_t)((*pushed * 2654435761u) % max);
		memset(f, (int)(*pushed & 0xff), fl);
		memcpy(f, pushed, fl < 8 ? fl : 8);
		if (!push(shm, r, f, fl, (max + 7) / 8 * 8 + 16)) {
			*full = true;
			return;
		}
		++*pushed;
	}
}

// Pop everything, checking each record is the next one numbered (lengths as pushed
// with @max); false on a wrong one.
static bool pop_all(struct ns_agent_shm *shm, struct ns_agent_ring *r, uint32_t max,
                    uint64_t *popped)
{
	uint8_t out[4096];
	long n;
	while ((n = ns_agent_ring_pop(shm, r, out, sizeof(out))) != 0) {
		uint32_t want = 1 + (uint32_t)((*popped * 2654435761u) % max);
		uint64_t id = 0;
		memcpy(&id, out, want < 8 ? want : 8);
		uint64_t mask = want < 8 ? (1ull << (8 * want)) - 1 : ~0ull;
		if (n != (long)want || id != (*popped & mask) ||
		    (want > 8 && out[want - 1] != (uint8_t)(*popped & 0xff))) {
			ns_test_fail(__FILE__, __LINE__, "record %llu: %ld bytes",
			             (unsigned long long)*popped, n);
			return false;
		}
		++*popped;
	}
	return true;
}

// A 1 MiB ring (the stub's are 64 MiB: the same rules with a lag of 1/8 of the ring,
// 128 KiB) carried through laps by a producer and a consumer, checked against what the
// kernel says is in memory (mincore). A slow producer (a few records between two
// looks of the stub's trim): tail sits on a page boundary less than a page behind head,
// every page of the lap below tail and of the last lap above head is out of memory,
// what is unread is in. A producer that streams (1/NS_AGENT_STREAM_DIV of the lag or
// more between two looks): the pages tail passed stay backed, tail is never more than
// the lag behind read, the producer gets the ring less the lag, and a trim once it is
// quiet gives back the lag's pages.
NS_TEST(test_agent_proto__ring_gives_pages_back)
{
	enum { RB = 1 << 20, LAG = RB / 8 };
	size_t len;
	struct ns_agent_shm *shm = memfd_shm(2, RB, &len);
	NS_CHECK(shm != NULL);
	if (!shm)
		return;
	struct ns_agent_ring *r = ns_agent_shm_ring(shm, 1);
	uint8_t *data = ns_agent_ring_data(shm, r);
	NS_CHECK(((uintptr_t)data & (PG - 1)) != 0); // boundaries are not at position 0
	uint64_t pushed = 0, popped = 0;
	size_t total;
	unsigned checked = 0, fulls = 0;
	bool full;
	// Slow: bursts of 1..SLOW records of up to 1000 bytes (a header each, and one
	// reservation's padding where one wraps: under 1/NS_AGENT_STREAM_DIV of the lag)
	// between two looks.
	enum { SLOW = LAG / NS_AGENT_STREAM_DIV / 1016 - 1 };
	_Static_assert(SLOW >= 2, "slow bursts of at least two sizes");
	while (atomic_load(&r->head) < 12ull * RB) {
		push_burst(shm, r, 1 + (unsigned)(pushed % SLOW), 1000, &pushed, &full);
		NS_CHECK(!full);
		uint64_t tail = atomic_load(&r->tail), head = atomic_load(&r->head);
		if (head / RB == tail / RB && head > tail + 2 * PG)
			NS_CHECK_INT(in_core(shm, r, tail % RB, head % RB, &total), total);
		if (!pop_all(shm, r, 1000, &popped))
			return;
		ns_agent_ring_trim(shm, r); // under the stream's bytes since the last look
		tail = atomic_load(&r->tail);
		NS_CHECK(r->read == head);
		if (tail) // 0 until read leaves the first page (the data starts mid-page)
			NS_CHECK((((uintptr_t)data + tail % RB) & (PG - 1)) == 0);
		NS_CHECK(head - tail < PG);
		uint64_t lap = tail - tail % RB;
		if (tail % RB > 2 * PG) {
			NS_CHECK_INT(in_core(shm, r, 0, tail % RB, &total), 0);
			checked += lap > 0;
		}
		if (lap && head - lap < RB - 2 * PG)
			NS_CHECK_INT(in_core(shm, r, head % RB + PG, RB, &total), 0);
	}
	NS_CHECK(checked > 10);
	// Streaming: bursts of 100..1300 records of up to 3000 bytes between two looks.
	uint64_t end = atomic_load(&r->head) + 12ull * RB, first_lap = atomic_load(&r->head) / RB;
	unsigned kept = 0;
	while (atomic_load(&r->head) < end) {
		push_burst(shm, r, 100 + (unsigned)(pushed % 7) * 200, 3000, &pushed, &full);
		if (full) {
			// The producer had the ring less what tail lags behind read.
			uint64_t tl = atomic_load(&r->tail);
			NS_CHECK(atomic_load(&r->head) - tl + 3016 * 2 >= RB);
			NS_CHECK(r->read - tl < LAG);
			fulls++;
		}
		if (!pop_all(shm, r, 3000, &popped))
			return;
		ns_agent_ring_trim(shm, r); // a stream: its pages stay
		uint64_t tail = atomic_load(&r->tail);
		NS_CHECK(r->read - tail < LAG);
		// Pages tail passed in this lap stay in memory (the producer comes back;
		// the first lap began quiet, trimmed).
		if (tail / RB > first_lap && tail % RB > LAG + 2 * PG) {
			size_t in = in_core(shm, r, 0, tail % RB - LAG, &total);
			NS_CHECK_INT(in, total);
			kept++;
		}
	}
	NS_CHECK_INT(popped, pushed);
	printf("%u quiet drains checked, %u streaming, %u times full\n", checked, kept, fulls);
	NS_CHECK(kept > 5);
	NS_CHECK(fulls > 0);
	NS_CHECK_INT(atomic_load(&r->dropped), fulls);
	// A consumer that fell behind reads little between two looks, but the producer
	// streams: still no punch.
	ns_agent_ring_trim(shm, r);
	push_burst(shm, r, 200, 3000, &pushed, &full);
	uint8_t one[4096];
	NS_CHECK(ns_agent_ring_pop(shm, r, one, sizeof(one)) > 0);
	popped++;
	uint64_t before = atomic_load(&r->tail);
	ns_agent_ring_trim(shm, r);
	NS_CHECK(atomic_load(&r->tail) == before);
	if (!pop_all(shm, r, 3000, &popped))
		return;
	ns_agent_ring_trim(shm, r); // (the rest read: a stream still)
	// Quiet at last (nothing since the last look): the lag's whole pages go.
	uint64_t tail = atomic_load(&r->tail), rd = r->read;
	ns_agent_ring_trim(shm, r);
	uint64_t t2 = atomic_load(&r->tail);
	NS_CHECK(t2 > tail && rd - t2 < PG);
	if (t2 / RB == tail / RB && t2 % RB > tail % RB + 2 * PG)
		NS_CHECK_INT(in_core(shm, r, tail % RB, t2 % RB, &total), 0);
	// The whole ring back when the stub resets it.
	NS_CHECK(in_core(shm, r, 0, RB, &total) > 0);
	ns_agent_ring_reset(shm, r);
	NS_CHECK_INT(in_core(shm, r, 0, RB, &total), 0);
	NS_CHECK(total >= RB / PG - 1);
	NS_CHECK_INT(atomic_load(&r->resets), 1);
	NS_CHECK(atomic_load(&r->head) == 0 && atomic_load(&r->tail) == 0 && r->read == 0);
	uint8_t out[128], f[100] = {0};
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 0);
	NS_CHECK(push(shm, r, f, 100, 3016));
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 100);
	munmap(shm, len);
}

// Where a stream begins: redis's logpoint (~90 k hits/s of ~90-byte records, ~8 MB/s,
// ~800 KiB per 100 ms look in a 64 MiB ring whose lag is 8 MiB) must keep its pages,
// or the warmer backs every page again (~2 us each); a trickle must not. In this
// 1 MiB ring (lag 128 KiB) the line is 4 KiB per look: 6 KiB per look keeps the
// pages, 2 KiB per look gives them back.
NS_TEST(test_agent_proto__ring_stream_threshold)
{
	enum { RB = 1 << 20, LAG = RB / 8 };
	_Static_assert(LAG / NS_AGENT_STREAM_DIV == 4096, "the line this test draws");
	size_t len;
	struct ns_agent_shm *shm = memfd_shm(1, RB, &len);
	NS_CHECK(shm != NULL);
	if (!shm)
		return;
	struct ns_agent_ring *r = ns_agent_shm_ring(shm, 0);
	uint8_t f[1008] = {1}, out[2048];
	size_t total;
	unsigned looks = 0;
	for (unsigned phase = 0; phase < 2; phase++) {
		unsigned per_look = phase == 0 ? 6 : 2;
		bool gave_back = false;
		for (int i = 0; i < 64; i++) {                  // 64 looks: 384 or 128 KiB
			for (unsigned k = 0; k < per_look; k++) // records of 1 KiB
				NS_CHECK(push(shm, r, f, sizeof(f), 1024));
			for (unsigned k = 0; k < per_look; k++)
				NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)),
				             sizeof(f));
			NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 0);
			uint64_t before = atomic_load(&r->tail);
			ns_agent_ring_trim(shm, r);
			uint64_t after = atomic_load(&r->tail);
			if (after != before) {
				gave_back = true;
				if (after / RB == before / RB && after % RB > before % RB + 2 * PG)
					NS_CHECK_INT(in_core(shm, r, before % RB + PG,
					                     after % RB - PG, &total),
					             0);
			}
			looks++;
		}
		if (per_look == 6)
			NS_CHECK(!gave_back); // a stream: tail moves only by the lag, never here
		else
			NS_CHECK(gave_back);
	}
	NS_CHECK_INT(looks, 128);
	munmap(shm, len);
}

// One byte stored at every page of [p, p + len), by a plain store the sanitizers leave
// alone (under ASan an instrumented store would fault in its shadow pages, which are
// not what is measured).
__attribute__((no_sanitize("address", "undefined"))) static void store_pages(uint8_t *p, size_t len)
{
	for (size_t off = 0; off < len; off += PG)
		__asm__ volatile("movb $1, %0" : "=m"(p[off]));
}

// The stub allocates ring pages in its mapping (write), the agent maps them in its own
// (read): the kernel then says they are in memory (mincore), and the producer's stores
// through the agent's mapping take no page fault (getrusage), which is what the split
// relies on. Positions wrap: a range across the end of the ring backs both ends.
NS_TEST(test_agent_proto__ring_populate_split)
{
	enum { RB = 1 << 20 };
	size_t len = ns_agent_shm_size(1, RB);
	int fd = memfd_create("nonstop-test", 0);
	NS_CHECK(fd >= 0 && ftruncate(fd, (off_t)len) == 0);
	struct ns_agent_shm *stub = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	struct ns_agent_shm *agent = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	NS_CHECK(stub != MAP_FAILED && agent != MAP_FAILED);
	if (stub == MAP_FAILED || agent == MAP_FAILED)
		return;
	ns_agent_shm_init(stub, 1, RB);
	struct ns_agent_ring *rs = ns_agent_shm_ring(stub, 0), *ra = ns_agent_shm_ring(agent, 0);
	size_t total;
	NS_CHECK_INT(in_core(stub, rs, 2 * PG, RB - 2 * PG, &total), 0);
	bool no_madv = false;
	// Positions [RB - 64 KiB, RB + 192 KiB): the ring's last 64 KiB and first 192.
	ns_agent_ring_populate(stub, rs, RB - 65536, RB + 196608, true, &no_madv);
	NS_CHECK_INT(in_core(stub, rs, RB - 65536 + PG, RB - PG, &total), total);
	NS_CHECK_INT(in_core(stub, rs, PG, 196608 - PG, &total), total);
	NS_CHECK_INT(in_core(stub, rs, 196608 + PG, RB - 65536 - PG, &total), 0);
	ns_agent_ring_populate(agent, ra, RB - 65536, RB + 196608, false, &no_madv);
	struct rusage u0, u1;
	getrusage(RUSAGE_THREAD, &u0);
	uint8_t *d = ns_agent_ring_data(agent, ra);
	store_pages(d, 196608);
	store_pages(d + RB - 65536, 65536);
	getrusage(RUSAGE_THREAD, &u1);
	printf("stores on %d pages populated for reading: %ld page faults%s\n",
	       (196608 + 65536) / PG, u1.ru_minflt - u0.ru_minflt,
	       no_madv ? " (no MADV_POPULATE_*: touched instead)" : "");
	// The ring's first page is shared with its header (data starts mid-page): one
	// store may find it mapped already or not; none of the others may fault.
	NS_CHECK(u1.ru_minflt - u0.ru_minflt <= 1);
	munmap(stub, len);
	munmap(agent, len);
}

// A consumer position the program scribbled on (read outside [tail, head]) is a
// corrupt ring: reset to empty, counted, and records flow again.
NS_TEST(test_agent_proto__ring_bad_read_position)
{
	size_t len;
	struct ns_agent_shm *shm = memfd_shm(1, 1 << 20, &len);
	NS_CHECK(shm != NULL);
	if (!shm)
		return;
	struct ns_agent_ring *r = ns_agent_shm_ring(shm, 0);
	uint8_t f[64] = {7}, out[128];
	NS_CHECK(push(shm, r, f, 64, 128));
	r->read = atomic_load(&r->head) + 8; // past head
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), -1);
	NS_CHECK(r->read == atomic_load(&r->head));
	NS_CHECK(push(shm, r, f, 64, 128));
	r->read = atomic_load(&r->tail) - 8; // behind tail
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), -1);
	NS_CHECK(push(shm, r, f, 64, 128));
	r->read += 4; // not a record boundary
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), -1);
	NS_CHECK_INT(atomic_load(&r->dropped), 3);
	NS_CHECK(push(shm, r, f, 64, 128));
	NS_CHECK_INT(ns_agent_ring_pop(shm, r, out, sizeof(out)), 64);
	NS_CHECK(out[0] == 7);
	munmap(shm, len);
}

// The warmer's next look: when the producer, at the speed it had since the last look,
// will be halfway through what is backed ahead of it. Expected values worked by hand.
NS_TEST(test_agent_proto__warm_delay)
{
	const uint64_t KiB = 1024, MiB = 1024 * 1024, MS = 1000000;
	// Did not move (or no time passed): the longest wait.
	NS_CHECK_INT(ns_agent_warm_delay(256 * KiB, 0, 2 * MS, 100), 100);
	NS_CHECK_INT(ns_agent_warm_delay(256 * KiB, 4096, 0, 100), 100);
	// redis's logpoint, ~7.5 MB/s: 15 000 bytes in 2 ms, 256 KiB ahead. Halfway
	// (131 072 bytes) at 7.5 bytes/us is 17 476 us: 17 ms, not 2.
	NS_CHECK_INT(ns_agent_warm_delay(256 * KiB, 15000, 2 * MS, 100), 17);
	// A burst, 5 GB/s (10 MB in 2 ms) with 32 MiB ahead: 16 MiB at 5 000 bytes/us is
	// 3 355 us: 3 ms.
	NS_CHECK_INT(ns_agent_warm_delay(32 * MiB, 10000000, 2 * MS, 100), 3);
	// Faster than the warmer can ever look: the shortest wait, never 0.
	NS_CHECK_INT(ns_agent_warm_delay(4 * KiB, 1000 * MiB, 1 * MS, 100), 2);
	NS_CHECK_INT(ns_agent_warm_delay(0, 4096, 1 * MS, 100), 2);
	// Slow: capped at the caller's maximum; no overflow with the largest inputs.
	NS_CHECK_INT(ns_agent_warm_delay(1 * MiB, 1000, 100 * MS, 100), 100);
	NS_CHECK_INT(ns_agent_warm_delay(64 * MiB, 1, UINT64_MAX, 100), 100);
	NS_CHECK_INT(ns_agent_warm_delay(UINT64_MAX, 1, UINT64_MAX, 50), 50);
	// Exactly on a boundary: 8 MiB ahead, 4 MiB per 10 ms -> 4 MiB takes 10 ms.
	NS_CHECK_INT(ns_agent_warm_delay(8 * MiB, 4 * MiB, 10 * MS, 100), 10);
}

// The warmer's window: 200 ms of the producer's writes at its speed, within [min, max].
// Expected values worked by hand.
NS_TEST(test_agent_proto__warm_window)
{
	const uint64_t KiB = 1024, MiB = 1024 * 1024, MS = 1000000;
	const uint64_t lo = 256 * KiB, hi = 32 * MiB;
	NS_CHECK_INT(NS_AGENT_WARM_HOLD_MS, 200);
	// Did not move, or no time passed: the smallest window.
	NS_CHECK(ns_agent_warm_window(0, 20 * MS, lo, hi) == lo);
	NS_CHECK(ns_agent_warm_window(4096, 0, lo, hi) == lo);
	// A logpoint hit now and then (100 KB/s: 2 000 bytes in 20 ms -> 20 000 bytes in
	// 200 ms): the smallest window, not a 32 MiB one.
	NS_CHECK(ns_agent_warm_window(2000, 20 * MS, lo, hi) == lo);
	// redis's logpoint, ~8 MB/s: 160 000 bytes in 20 ms -> 1 600 000 bytes in 200 ms.
	NS_CHECK(ns_agent_warm_window(160000, 20 * MS, lo, hi) == 1600000);
	// A burst, 5 GB/s (10 MB in 2 ms -> 1 GB in 200 ms): warm_bytes.
	NS_CHECK(ns_agent_warm_window(10000000, 2 * MS, lo, hi) == hi);
	// No overflow with the largest inputs.
	NS_CHECK(ns_agent_warm_window(UINT64_MAX, 1, lo, hi) == hi);
	NS_CHECK(ns_agent_warm_window(1, UINT64_MAX, lo, hi) == lo);
}
