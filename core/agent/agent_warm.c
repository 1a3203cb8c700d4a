/* Ring pages backed ahead of the hits that write them (control thread).
 *
 * A ring is a range of a memfd: a page gets memory, and a page-table entry in this
 * process, when it is first touched. Left to the hitting thread, that is a page fault
 * in the middle of a hit (1-2 us in a VM, against ~8 ns for the record itself: the
 * faults were most of a two-int logpoint's cost in a burst). So the control thread
 * touches them first: for every claimed ring, a window past the producer's head
 * (what it writes in NS_AGENT_WARM_HOLD_MS at its speed since the last look, at least
 * 256 KiB, at most the shm's warm_bytes: ns_agent_warm_window),
 * and, once a tracepoint was installed, the first warm_bytes of the ring the next
 * thread to hit will claim (the first free one, agent_collect_sig.c claim_ring).
 * MADV_POPULATE_READ (Linux 5.14) maps them without writing (ns_agent_ring_populate):
 * the stub allocates and zeroes them ahead of this when it can (stub_back.c
 * ns_stub__back_rings), so what the program's process spends is mapping them, about a
 * fifth of the work (0.4 against 2.2 us per page here); the entries are writable, the
 * producer's stores do not fault. Giving pages back is the stub's part: it punches
 * read pages before letting the producer reuse them (agent_proto.c), and this never
 * backs a position the producer may not write yet (tail + size), so the two never
 * cross. */
#define _GNU_SOURCE
#include "agent/agent_internal.h"
#include "base/clock.h"

#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

enum {
	PAGE = 4096,
	STEP = 4 << 20,   /* bytes populated per call, at most */
	WIN0 = 256 << 10, /* a newly claimed ring's window */
	AHEAD_MAX = 4,    /* claimed rings' backed-ahead bytes above which the spare gets
	                     WIN0, in warm_bytes */
};

static struct {
	const struct ns_agent_shm *shm;
	bool no_madv;                    /* MADV_POPULATE_READ refused: touch instead */
	bool armed;                      /* a tracepoint was installed: keep a spare ring */
	uint64_t upto[NS_AGENT_NRINGS];   /* ring positions below this are backed */
	uint64_t last[NS_AGENT_NRINGS];   /* head at the last look */
	uint64_t win[NS_AGENT_NRINGS];    /* bytes to keep backed past head (0: not yet) */
	uint64_t resets[NS_AGENT_NRINGS]; /* the ring's reset count at the last look */
	uint32_t owner[NS_AGENT_NRINGS];  /* the ring's owner at the last look */
	uint64_t ahead;                   /* bytes backed past claimed rings' heads */
	uint64_t look_ns;                 /* CLOCK_MONOTONIC of the last look */
} w;

static int warm(bool spare_only, uint64_t step);

int ns_agent__warm_tick(void)
{
	return warm(false, STEP);
}

void ns_agent__warm_spare(void)
{
	warm(true, UINT64_MAX);
}

static int warm(bool spare_only, uint64_t step)
{
	const struct ns_agent_shm *shm = ns_agent__g.shm;
	if (!shm || !atomic_load_explicit(&ns_agent__g.collect, memory_order_relaxed))
		return -1;
	if (w.shm != shm) {
		bool no_madv = w.no_madv;
		__builtin_memset(&w, 0, sizeof(w));
		w.shm = shm;
		w.no_madv = no_madv;
	}
	uint64_t size = shm->ring_bytes, want = shm->warm_bytes;
	if (want > size)
		want = size;
	if (!want)
		return -1;
	uint64_t budget = step;
	w.armed |= spare_only;
	bool more = false, spare = false;
	uint64_t ahead = 0, now = ns_mono_ns(), dt = now - w.look_ns;
	int delay = -1;  // ms until the next look a moving producer needs
	w.look_ns = now; // every look reads every head (w.last)
	// The rings ever claimed and the next one (the spare: the lowest free ring, which
	// is at most rings_claimed).
	unsigned n = shm->nrings < NS_AGENT_NRINGS ? shm->nrings : NS_AGENT_NRINGS;
	unsigned claimed = atomic_load_explicit(&shm->rings_claimed, memory_order_acquire);
	if (claimed < n)
		n = claimed + 1;
	for (unsigned i = 0; i < n; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring((struct ns_agent_shm *)shm, i);
		uint32_t owner = atomic_load_explicit(&r->owner, memory_order_relaxed);
		uint64_t resets = atomic_load_explicit(&r->resets, memory_order_acquire);
		uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
		// The stub punches only read pages between tail and read (agent_proto.c),
		// whose offsets the producer next writes at positions >= tail + size: what
		// is backed below tail + size (tail read now, it only grows) is never
		// punched before the producer has written it.
		uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
		if (resets != w.resets[i] || head < w.last[i]) {
			// The stub emptied the ring and gave its pages back: start again.
			w.resets[i] = resets;
			w.upto[i] = w.last[i] = w.win[i] = 0;
		}
		uint64_t moved = head - w.last[i];
		w.last[i] = head;
		int fast = -1; // this ring's producer: ms until it needs a look (-1: none)
		if (!owner) {
			if (spare || !w.armed)
				continue;
			// The ring the next claim takes: a whole window (a burst in a new
			// thread outruns any warming that starts at its claim), while the
			// claimed rings hold less than 3 windows ahead of their heads
			// (each slow thread keeps what its spare had until it writes it).
			spare = true;
			w.win[i] = w.ahead + want <= AHEAD_MAX * want ? want : WIN0 < want ? WIN0 : want;
			w.owner[i] = 0;
		} else if (spare_only) {
			continue;
		} else {
			// A claimed ring's window follows its producer: what it writes in
			// NS_AGENT_WARM_HOLD_MS at the speed it had since the last look, at
			// least 256 KiB (a thread that hits now and then costs little
			// memory), at most warm_bytes.
			w.win[i] = ns_agent_warm_window(moved, dt, WIN0 < want ? WIN0 : want, want);
			// Fast enough to matter before the next 100 ms tick: 1/64 of the
			// window since the last look (a slow logpoint never makes this
			// thread poll fast). Just claimed (the claiming thread woke this
			// look): see how fast it goes in 2 ms, a burst must not wait for
			// the 100 ms tick.
			if (owner != w.owner[i])
				fast = NS_AGENT_WARM_MIN_MS;
			else if (moved && moved >= w.win[i] / 64)
				fast = 0; // when its window is backed, below
			w.owner[i] = owner;
		}
		uint64_t win = w.win[i];
		if (owner && w.upto[i] > head)
			ahead += w.upto[i] - head;
		uint64_t from = w.upto[i] > head ? w.upto[i] : head, to = head + win;
		if (to > tail + size)
			to = tail + size;
		if (from < to) {
			if (to - from > budget) {
				to = from + budget;
				more = true;
			}
			ns_agent_ring_populate((struct ns_agent_shm *)shm, r, from, to, false,
			                       &w.no_madv);
			budget -= to - from;
			w.upto[i] = to;
		}
		// A moving producer: look again when, at its speed since the last look, it
		// will be halfway through what is backed past its head (a burst writes ~5
		// GB/s and backing goes at ~2 GB/s here: a few ms), and at least every
		// NS_AGENT_WARM_MOVING_MS (a producer that speeds up is seen soon; redis's
		// logpoint at ~8 MB/s: 20 looks a second, not 500 for a few pages each: a
		// wake-up is ~45 us of this thread's CPU here).
		if (fast == 0)
			fast = ns_agent_warm_delay(w.upto[i] > head ? w.upto[i] - head : 0, moved,
			                           dt, NS_AGENT_WARM_MOVING_MS);
		if (fast >= 0 && (delay < 0 || fast < delay))
			delay = fast;
	}
	if (!spare_only)
		w.ahead = ahead;
	return more ? 0 : delay;
}
