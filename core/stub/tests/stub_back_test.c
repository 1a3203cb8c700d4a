/* The stub's ring page allocation ahead of the agent (stub_back.c), checked against what
 * the kernel says is in memory (mincore of the stub's mapping of a memfd): the next
 * thread's ring gets its first warm_bytes, a claimed ring a window past its head that
 * follows its producer, never a position past tail + size, within the budget, from
 * zero again after a reset, and nothing with --ring-warm 0. */
#define _GNU_SOURCE
#include "base/test.h"
#include "stub/stub.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { PG = 4096, RB = 8 << 20, WARM = 2 << 20, NR = 3 };

static struct ns_agent_shm *rings(size_t *len_out)
{
	size_t len = ns_agent_shm_size(NR, RB);
	int fd = memfd_create("nonstop-back-test", 0);
	if (fd < 0 || ftruncate(fd, (off_t)len) != 0)
		return NULL;
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return NULL;
	ns_agent_shm_init(m, NR, RB);
	((struct ns_agent_shm *)m)->warm_bytes = WARM;
	*len_out = len;
	return m;
}

// Whole pages of ring @i's positions [lo, hi) (one lap) in memory: how many, of *@total.
static size_t resident(struct ns_agent_shm *shm, unsigned i, uint64_t lo, uint64_t hi,
                       size_t *total)
{
	uint8_t *data = ns_agent_ring_data(shm, ns_agent_shm_ring(shm, i));
	uintptr_t a = ((uintptr_t)data + lo + PG - 1) & ~(uintptr_t)(PG - 1);
	uintptr_t b = ((uintptr_t)data + hi) & ~(uintptr_t)(PG - 1);
	*total = b > a ? (b - a) / PG : 0;
	if (!*total)
		return 0;
	unsigned char *v = malloc(*total);
	size_t n = 0;
	if (v && mincore((void *)a, b - a, v) == 0)
		for (size_t k = 0; k < *total; k++)
			n += v[k] & 1;
	free(v);
	return n;
}

#define ALL_IN(shm, i, lo, hi)                                   \
	do {                                                     \
		size_t t_;                                       \
		NS_CHECK_INT(resident(shm, i, lo, hi, &t_), t_); \
		NS_CHECK(t_ > 0);                                \
	} while (0)
#define NONE_IN(shm, i, lo, hi)                                 \
	do {                                                    \
		size_t t_;                                      \
		NS_CHECK_INT(resident(shm, i, lo, hi, &t_), 0); \
	} while (0)

NS_TEST(test_stub_back__follows_the_rings)
{
	size_t len;
	struct ns_agent_shm *shm = rings(&len);
	NS_CHECK(shm != NULL);
	if (!shm)
		return;
	struct ns_stub s;
	memset(&s, 0, sizeof(s));
	s.shm = shm;
	struct ns_agent_ring *r0 = ns_agent_shm_ring(shm, 0);
	// Nothing claimed: ring 0 is the next thread's, its first warm_bytes come in.
	ns_stub__back_rings(&s, UINT64_MAX);
	ALL_IN(shm, 0, PG, WARM - PG);
	NONE_IN(shm, 0, WARM + PG, RB);
	NONE_IN(shm, 1, 0, RB);
	// Ring 0 claimed (its producer has not moved): ring 1 is the spare now; ring 0 keeps
	// what it has and gets no more.
	atomic_store(&r0->owner, 1234);
	atomic_store(&shm->rings_claimed, 1);
	ns_stub__back_rings(&s, UINT64_MAX);
	ALL_IN(shm, 1, PG, WARM - PG);
	NONE_IN(shm, 0, WARM + PG, RB);
	NONE_IN(shm, 2, 0, RB);
	// Ring 0's producer writes 1 MiB at once (as fast as a burst): twice the agent's
	// window past its head, capped at warm_bytes: positions up to 1 MiB + 2 MiB.
	atomic_store(&r0->head, 1 << 20);
	ns_stub__back_rings(&s, UINT64_MAX);
	ALL_IN(shm, 0, PG, (1 << 20) + WARM - PG);
	NONE_IN(shm, 0, (1 << 20) + WARM + PG, RB);
	// A budget bounds one call: 256 KiB more of the 1 MiB it now wants.
	atomic_store(&r0->head, 2 << 20);
	ns_stub__back_rings(&s, 256 << 10);
	ALL_IN(shm, 0, (3 << 20) + PG, (3 << 20) + (256 << 10) - PG);
	NONE_IN(shm, 0, (3 << 20) + (256 << 10) + PG, RB);
	// Ring 1, emptied and claimed by a thread whose producer writes ~1 MB/s (100 KiB in
	// 100 ms or more): the agent's smallest window (256 KiB) at first, then twice it
	// past the head: positions up to 100 KiB + 512 KiB, none beyond.
	struct ns_agent_ring *r1 = ns_agent_shm_ring(shm, 1);
	ns_agent_ring_reset(shm, r1);
	atomic_store(&r1->owner, 5678);
	atomic_store(&shm->rings_claimed, 2);
	ns_stub__back_rings(&s, UINT64_MAX);
	ALL_IN(shm, 1, PG, (256 << 10) - PG);
	NONE_IN(shm, 1, (256 << 10) + PG, RB);
	usleep(100000);
	atomic_store(&r1->head, 100 << 10);
	ns_stub__back_rings(&s, UINT64_MAX);
	ALL_IN(shm, 1, (100 << 10) + PG, (612 << 10) - PG);
	NONE_IN(shm, 1, (612 << 10) + PG, RB);
	ALL_IN(shm, 2, PG, WARM - PG); // the spare now
	// Near the end of the lap, never past tail + size: with tail at 0 the pages of
	// positions 8 MiB + (the ring's start again) are the producer's only after tail
	// moves. Punch the start (as the stub's trim would) and see it stay out.
	uint8_t *d0 = ns_agent_ring_data(shm, r0);
	uintptr_t lo = ((uintptr_t)d0 + PG - 1) & ~(uintptr_t)(PG - 1);
	NS_CHECK_INT(madvise((void *)lo, (1 << 20), MADV_REMOVE), 0);
	atomic_store(&r0->head, RB - (512 << 10));
	ns_stub__back_rings(&s, UINT64_MAX);
	ALL_IN(shm, 0, RB - (512 << 10) + PG, RB - PG);
	NONE_IN(shm, 0, PG, (1 << 20) - PG);
	// The stub reset the ring (punched whole, head back to 0): allocated from zero.
	ns_agent_ring_reset(shm, r0);
	atomic_store(&r0->owner, 1234); // claimed again
	NONE_IN(shm, 0, PG, RB - PG);
	atomic_store(&r0->head, 64 << 10);
	ns_stub__back_rings(&s, UINT64_MAX);
	ALL_IN(shm, 0, (64 << 10) + PG, (64 << 10) + WARM - PG);
	NONE_IN(shm, 0, PG, (64 << 10) - PG); // behind head: the producer's to write
	munmap(shm, len);
	// --ring-warm 0: the stub allocates nothing.
	shm = rings(&len);
	NS_CHECK(shm != NULL);
	if (!shm)
		return;
	shm->warm_bytes = 0;
	memset(&s, 0, sizeof(s));
	s.shm = shm;
	ns_stub__back_rings(&s, UINT64_MAX);
	NONE_IN(shm, 0, 0, RB);
	munmap(shm, len);
}
