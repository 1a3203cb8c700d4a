/* TSC clock helpers (base/tsc.h). */
#define _GNU_SOURCE
#include "base/tsc.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

bool ns_tsc_invariant(void)
{
	FILE *f = fopen("/proc/cpuinfo", "re");
	if (!f)
		return false;
	char line[4096];
	bool c = false, n = false;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "flags", 5) == 0) {
			c = strstr(line, " constant_tsc") != NULL;
			n = strstr(line, " nonstop_tsc") != NULL;
			break;
		}
	fclose(f);
	return c && n;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ns_tsc_pair(uint64_t *tsc, uint64_t *ns)
{
	uint64_t best = UINT64_MAX;
	for (int i = 0; i < 5; i++) {
		uint64_t a = __builtin_ia32_rdtsc();
		uint64_t n = realtime_ns();
		uint64_t b = __builtin_ia32_rdtsc();
		if (b - a < best) {
			best = b - a;
			*tsc = a + (b - a) / 2;
			*ns = n;
		}
	}
}

static void derive(struct ns_tsc_clock *c)
{
	uint64_t dt = c->tsc_b - c->tsc_a, dn = c->ns_b - c->ns_a;
	c->mult = (uint64_t)(((unsigned __int128)dn << 32) / dt);
	c->ms_ticks = (uint64_t)((unsigned __int128)dt * 1000000u / dn);
}

void ns_tsc_clock_tick(struct ns_tsc_clock *c)
{
	if (!c->ready) {
		ns_tsc_pair(&c->tsc_a, &c->ns_a);
		struct timespec d = {0, 2 * 1000 * 1000};
		while (nanosleep(&d, &d) != 0)
			;
		ns_tsc_pair(&c->tsc_b, &c->ns_b);
		c->ready = c->tsc_b > c->tsc_a && c->ns_b > c->ns_a;
		if (c->ready)
			derive(c);
		return;
	}
	uint64_t now = __builtin_ia32_rdtsc();
	if (now - c->tsc_b < c->ms_ticks)
		return;
	uint64_t tsc, ns;
	ns_tsc_pair(&tsc, &ns);
	if (tsc <= c->tsc_b || ns <= c->ns_b)
		return; // CLOCK_REALTIME stepped back: keep the old pairs
	if (c->ns_b - c->ns_a >= 10ull * 1000 * 1000 * 1000) {
		c->tsc_a = c->tsc_b;
		c->ns_a = c->ns_b;
	}
	c->tsc_b = tsc;
	c->ns_b = ns;
	derive(c);
}

uint64_t ns_tsc_clock_ns(const struct ns_tsc_clock *c, uint64_t tsc)
{
	if (!c->ready)
		return 0;
	if (tsc >= c->tsc_a)
		return c->ns_a + (uint64_t)(((unsigned __int128)(tsc - c->tsc_a) * c->mult) >> 32);
	uint64_t back = (uint64_t)(((unsigned __int128)(c->tsc_a - tsc) * c->mult) >> 32);
	return back < c->ns_a ? c->ns_a - back : 0;
}
