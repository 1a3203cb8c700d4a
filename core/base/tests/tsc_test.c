/* Tests for core/base/tsc.c: the consumer-side TSC -> CLOCK_REALTIME clock, against
 * clock_gettime itself and against the exact rational formula. */
#include "base/test.h"
#include "base/tsc.h"

#include <time.h>

static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// Stamps taken over ~30 ms convert to within 100 us of CLOCK_REALTIME read beside them
// (the VM's clock_gettime and rdtsc are both a few tens of ns; the margin is for
// preemption between the two reads).
NS_TEST(test_tsc__clock_follows_realtime)
{
	if (!ns_tsc_invariant()) {
		printf("no invariant TSC: skipped\n");
		return;
	}
	struct ns_tsc_clock c = {0};
	ns_tsc_clock_tick(&c);
	NS_CHECK(c.ready);
	unsigned bad = 0, n = 0;
	uint64_t worst = 0;
	uint64_t end = realtime_ns() + 30 * 1000 * 1000;
	while (realtime_ns() < end) {
		ns_tsc_clock_tick(&c);
		uint64_t before = realtime_ns();
		uint64_t tsc = __builtin_ia32_rdtsc();
		uint64_t after = realtime_ns();
		uint64_t ns = ns_tsc_clock_ns(&c, tsc);
		uint64_t d = ns < before ? before - ns : ns > after ? ns - after : 0;
		worst = d > worst ? d : worst;
		bad += d > 100000;
		n++;
	}
	printf("%u stamps, worst %llu ns outside their clock_gettime pair\n", n,
	       (unsigned long long)worst);
	NS_CHECK(n > 1000);
	NS_CHECK(bad * 100 < n); // a few preempted pairs at most
}

// The fixed-point conversion against the exact one (ns_a + (tsc - tsc_a) * dn / dt)
// for pairs of several rates and stamps up to 20 s from the early pair, both sides.
NS_TEST(test_tsc__fixed_point_matches_exact)
{
	static const uint64_t rates[][2] = {// ticks, ns over the pairs
	                                    {2000000ull * 3, 2000000ull},
	                                    {5187123ull, 2000017ull},
	                                    {3999999999ull, 1000000000ull},
	                                    {1000003ull, 1000000ull}};
	for (unsigned k = 0; k < sizeof(rates) / sizeof(rates[0]); k++) {
		struct ns_tsc_clock c = {0};
		c.tsc_a = 123456789012ull;
		c.ns_a = 1700000000000000000ull;
		c.tsc_b = c.tsc_a + rates[k][0];
		c.ns_b = c.ns_a + rates[k][1];
		// What ns_tsc_clock_tick derives when it takes a pair.
		c.mult = (uint64_t)(((unsigned __int128)rates[k][1] << 32) / rates[k][0]);
		c.ms_ticks = rates[k][0] * 1000000ull / rates[k][1];
		c.ready = true;
		for (uint64_t back = 0; back < 2; back++)
			for (uint64_t dt = 1; dt < 80000000000ull; dt = dt * 7 + 3) {
				uint64_t tsc = back ? c.tsc_a - dt % c.tsc_a : c.tsc_a + dt;
				uint64_t t = back ? c.tsc_a - tsc : tsc - c.tsc_a;
				uint64_t q = (uint64_t)((unsigned __int128)t * rates[k][1] / rates[k][0]);
				uint64_t exact = back ? c.ns_a - q : c.ns_a + q;
				uint64_t got = ns_tsc_clock_ns(&c, tsc);
				uint64_t d = got > exact ? got - exact : exact - got;
				if (d > 2 + q / (1ull << 30)) {
					ns_test_fail(__FILE__, __LINE__,
					             "rate %u, dt %llu: %llu vs %llu", k,
					             (unsigned long long)t, (unsigned long long)got,
					             (unsigned long long)exact);
					return;
				}
			}
	}
}
