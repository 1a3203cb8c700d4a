/* core/base: the time stamp counter as a clock. The jump-pad tier's inline records
 * stamp a hit with the raw TSC (rdtsc, the cheapest clock there is); the consumer turns
 * it into CLOCK_REALTIME by interpolating between (TSC, CLOCK_REALTIME) pairs it takes
 * itself. Valid only with an invariant TSC (constant rate, counting in every C-state,
 * one value across cores: the kernel's constant_tsc + nonstop_tsc). */
#ifndef NS_BASE_TSC_H
#define NS_BASE_TSC_H

#include <stdbool.h>
#include <stdint.h>

/** Whether this machine's TSC is invariant (/proc/cpuinfo flags constant_tsc and
 * nonstop_tsc). Reads a file: not for signal context. */
bool ns_tsc_invariant(void);

/** A (TSC, CLOCK_REALTIME ns) pair, the TSC taken as close to the clock read as
 * possible (best of a few tries). */
void ns_tsc_pair(uint64_t *tsc, uint64_t *ns);

/* A consumer's conversion: the rate between an early pair (a) and a recent one (b). */
struct ns_tsc_clock {
	uint64_t tsc_a, ns_a, tsc_b, ns_b;
	/* From the pairs, when they change (a 128-bit division each, not per stamp): ns
	 * per tick in 32.32 fixed point, and ticks per millisecond. */
	uint64_t mult, ms_ticks;
	bool ready;
};

/** Take a new recent pair if the last one is older than about a millisecond (and roll
 * the early pair forward every ~10 s, to follow NTP's adjustments of CLOCK_REALTIME).
 * The first call takes two pairs 2 ms apart (it sleeps). */
void ns_tsc_clock_tick(struct ns_tsc_clock *c);

/** CLOCK_REALTIME ns of @tsc on @c (ticked at least once): exact to the pairs' error
 * between a and b, extrapolated with the same rate outside. */
uint64_t ns_tsc_clock_ns(const struct ns_tsc_clock *c, uint64_t tsc);

#endif
