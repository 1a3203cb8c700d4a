/* The stub's frame queue (stub_queue.c) against a plain model: every frame comes out
 * once, in order, byte for byte, whatever the sizes (up to NS_AGENT_MAX_FRAME, so
 * records cross chunk ends) and however pushes, abandoned reservations and pops
 * interleave. */
#include "base/test.h"
#include "stub/stub.h"

#include <stdlib.h>

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

// Frame number k: its size and bytes follow from k alone.
static size_t frame_size(uint64_t k)
{
	switch (k % 4) {
	case 0:
		return 1 + k % 13;
	case 1:
		return 112;
	case 2:
		return 1000 + k % 977;
	default:
		return NS_AGENT_MAX_FRAME - k % 3;
	}
}

static uint8_t frame_byte(uint64_t k, size_t i)
{
	return (uint8_t)(k * 131 + i * 7 + (i >> 8));
}

NS_TEST(test_stub_queue__fifo_against_model)
{
	struct ns_stub_queue q = {0};
	uint64_t pushed = 0, popped = 0, bytes = 0;
	int bad = 0;
	for (int step = 0; step < 20000 && !bad; step++) {
		uint64_t r = rnd() % 10;
		if (r < 5) { // push (sometimes reserve the most and write less, as the drain does)
			size_t n = frame_size(pushed);
			size_t cap = r == 0 ? (size_t)NS_AGENT_MAX_FRAME : n;
			uint8_t *d = ns_stub__queue_reserve(&q, cap);
			NS_CHECK(d != NULL);
			if (!d)
				break;
			for (size_t i = 0; i < n; i++)
				d[i] = frame_byte(pushed, i);
			ns_stub__queue_commit(&q, n);
			bytes += n;
			pushed++;
		} else if (r < 6) { // a reservation nobody commits (an empty ring)
			NS_CHECK(ns_stub__queue_reserve(&q, NS_AGENT_MAX_FRAME) != NULL);
		} else if (popped < pushed) {
			size_t n = 0;
			const uint8_t *d = ns_stub__queue_front(&q, &n);
			if (!d || n != frame_size(popped)) {
				ns_test_fail(__FILE__, __LINE__, "frame %llu: %s, size %zu",
				             (unsigned long long)popped, d ? "wrong size" : "missing", n);
				bad = 1;
				break;
			}
			for (size_t i = 0; i < n; i++)
				if (d[i] != frame_byte(popped, i)) {
					ns_test_fail(__FILE__, __LINE__, "frame %llu byte %zu differs",
					             (unsigned long long)popped, i);
					bad = 1;
					break;
				}
			ns_stub__queue_pop(&q);
			bytes -= n;
			popped++;
		} else {
			size_t n;
			NS_CHECK(ns_stub__queue_front(&q, &n) == NULL);
		}
		if (q.count != pushed - popped || q.bytes != bytes) {
			ns_test_fail(__FILE__, __LINE__, "step %d: count %zu bytes %zu, model %llu %llu",
			             step, q.count, q.bytes, (unsigned long long)(pushed - popped),
			             (unsigned long long)bytes);
			bad = 1;
		}
	}
	NS_CHECK(pushed > 5000 && popped > 3000);
	// Drain the rest, then the queue is empty and usable again.
	while (!bad && popped < pushed) {
		size_t n;
		const uint8_t *d = ns_stub__queue_front(&q, &n);
		NS_CHECK(d && n == frame_size(popped) && d[n - 1] == frame_byte(popped, n - 1));
		if (!d)
			break;
		ns_stub__queue_pop(&q);
		popped++;
	}
	size_t n;
	NS_CHECK(q.count == 0 && q.bytes == 0 && ns_stub__queue_front(&q, &n) == NULL);
	ns_stub__queue_pop(&q); // popping an empty queue does nothing
	NS_CHECK(q.count == 0);
	uint8_t *d = ns_stub__queue_reserve(&q, 3);
	NS_CHECK(d != NULL);
	if (d) {
		memcpy(d, "xyz", 3);
		ns_stub__queue_commit(&q, 3);
		const uint8_t *f = ns_stub__queue_front(&q, &n);
		NS_CHECK(f && n == 3 && memcmp(f, "xyz", 3) == 0);
	}
	// A frame larger than a chunk is refused, not half-kept.
	NS_CHECK(ns_stub__queue_reserve(&q, 2u << 20) == NULL);
	ns_stub__queue_clear(&q);
	NS_CHECK(q.count == 0 && q.head == NULL && q.spare == NULL);
}

// The drain tick: from the shortest, a busy stream doubles it up to the longest (and
// no further), and so do ticks that read nothing; a trickle or a ring filling fast halves it
// back (and no further).
NS_TEST(test_stub_queue__drain_interval_follows_the_stream)
{
	int ms = NS_STUB_DRAIN_MS, ticks = 0;
	while (ms < NS_STUB_DRAIN_MAX_MS && ticks++ < 100)
		ms = ns_stub__drain_interval(ms, NS_STUB_DRAIN_BUSY, 100 * NS_STUB_DRAIN_BUSY);
	NS_CHECK_INT(ms, NS_STUB_DRAIN_MAX_MS);
	NS_CHECK(ticks > 1 && ticks < 10);
	NS_CHECK_INT(ns_stub__drain_interval(ms, 100000, 1000), NS_STUB_DRAIN_MAX_MS);
	// Between a quarter and all of BUSY frames: it stays.
	NS_CHECK_INT(ns_stub__drain_interval(20, NS_STUB_DRAIN_BUSY / 2, 1000), 20);
	NS_CHECK_INT(ns_stub__drain_interval(20, NS_STUB_DRAIN_BUSY / 4 - 1, 1000), 10);
	NS_CHECK_INT(ns_stub__drain_interval(20, 100000, NS_STUB_DRAIN_RING_BYTES), 10);
	NS_CHECK_INT(ns_stub__drain_interval(NS_STUB_DRAIN_MS, 1, 100), NS_STUB_DRAIN_MS);
	NS_CHECK_INT(ns_stub__drain_interval(NS_STUB_DRAIN_MS + 1, 1, 100), NS_STUB_DRAIN_MS);
	// Nothing read: the stub wakes less often, up to the longest.
	NS_CHECK_INT(ns_stub__drain_interval(NS_STUB_DRAIN_MS, 0, 0), 2 * NS_STUB_DRAIN_MS);
	NS_CHECK_INT(ns_stub__drain_interval(NS_STUB_DRAIN_MAX_MS, 0, 0), NS_STUB_DRAIN_MAX_MS);
}
