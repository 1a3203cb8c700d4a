/* Ring pages allocated ahead of the agent's warmer (docs/jump-pads.md, "Ring pages
 * backed ahead of the hits"): the stub allocates and zeroes them in its own mapping of
 * the memfd, so that the program's process only maps them. */
#define _GNU_SOURCE
#include "stub/stub.h"
#include "base/clock.h"

#include <stdatomic.h>
#include <stdint.h>

enum {
	BACK_WIN0 = 256 << 10,  /* the agent's smallest window (agent_warm.c WIN0) */
	BACK_AHEAD_MAX = 3,     /* claimed rings' bytes ahead, in warm_bytes, above which the
	                           spare gets BACK_WIN0 (agent_warm.c AHEAD_MAX) */
	NS_STUB_BACK_AHEAD = 2, /* of the agent's window: the agent looks within 50 ms and
	                           backs 200 ms of writes, this stays 400 ms ahead */
};

void ns_stub__back_rings(struct ns_stub *s, uint64_t budget)
{
	if (!s->shm || s->exited || s->pt)
		return;
	struct ns_agent_shm *shm = s->shm;
	uint64_t size = shm->ring_bytes, want = shm->warm_bytes < size ? shm->warm_bytes : size;
	if (!want)
		return;
	uint64_t now = ns_mono_ns(), dt = now - s->back_ns, ahead = 0;
	s->back_ns = now;
	unsigned live = ns_agent_rings_live(shm), n = live < shm->nrings ? live + 1 : live;
	// What the claimed rings hold allocated past their heads decides the spare's share.
	for (unsigned i = 0; i < live; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring(shm, i);
		uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
		if (atomic_load_explicit(&r->owner, memory_order_relaxed) && s->back_upto[i] > head)
			ahead += s->back_upto[i] - head;
	}
	bool spare = false;
	for (unsigned i = 0; i < n && budget; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring(shm, i);
		uint32_t owner = atomic_load_explicit(&r->owner, memory_order_relaxed);
		uint64_t resets = atomic_load_explicit(&r->resets, memory_order_acquire);
		uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
		uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
		if (resets != s->back_resets[i] || head < s->back_last[i]) {
			// Emptied and punched whole (released or reset): start again.
			s->back_resets[i] = resets;
			s->back_upto[i] = s->back_last[i] = 0;
		}
		uint64_t moved = head - s->back_last[i], to;
		s->back_last[i] = head;
		uint64_t small = BACK_WIN0 < want ? BACK_WIN0 : want, win;
		if (owner) {
			// A producer that moved: twice the agent's window; one that did not: the
			// agent's smallest (a thread that hits now and then costs little memory).
			win = small;
			if (moved)
				win = NS_STUB_BACK_AHEAD *
				      ns_agent_warm_window(moved, dt, small, want);
			win = win < want ? win : want;
		} else if (!spare) {
			spare = true; // the lowest free ring: the next claim takes it
			win = ahead <= BACK_AHEAD_MAX * want ? want : small;
		} else {
			continue;
		}
		to = head + win;
		// Never a position the producer may not write yet: the trim punches only
		// pages below tail, whose offsets come back at tail + size.
		if (to > tail + size)
			to = tail + size;
		uint64_t from = s->back_upto[i] > head ? s->back_upto[i] : head;
		if (from >= to)
			continue;
		if (to - from > budget)
			to = from + budget;
		ns_agent_ring_populate(shm, r, from, to, true, &s->back_no_madv);
		budget -= to - from;
		s->back_upto[i] = to;
	}
}
