/* core/base: CLOCK_MONOTONIC for timeouts, ticks and rates (not for frame stamps: those
 * are CLOCK_REALTIME, base/tsc.h). clock_gettime is async-signal-safe and goes through
 * the vDSO: no system call. */
#ifndef NS_BASE_CLOCK_H
#define NS_BASE_CLOCK_H

#include <stdint.h>

/** CLOCK_MONOTONIC in nanoseconds. */
uint64_t ns_mono_ns(void);

/** CLOCK_MONOTONIC in microseconds. */
static inline int64_t ns_mono_us(void)
{
	return (int64_t)(ns_mono_ns() / 1000u);
}

/** CLOCK_MONOTONIC in milliseconds. */
static inline int64_t ns_mono_ms(void)
{
	return (int64_t)(ns_mono_ns() / 1000000u);
}

#endif
