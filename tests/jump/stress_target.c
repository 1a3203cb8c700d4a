/* Target for tests/jump: THREADS threads call mix() as fast as they can and check its
 * result against an independent computation; they stop when stdin reaches EOF. With
 * BENCH=n in the environment, the main thread times n calls of mix() instead and
 * prints the ns per call. Built -O2 -g. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { THREADS = 4 };

static atomic_int stop;
static long calls[THREADS], wrong[THREADS];

__attribute__((noinline)) long mix(long t, long i)
{
	long a = t * 1000003 + i;     /* LINE_A */
	long b = (a ^ (a >> 7)) * 31; /* LINE_B */
	if (b & 1)                    /* LINE_C */
		b += i;
	else
		b -= t;
	return b; /* LINE_D */
}

// The same arithmetic, written differently (no call: the compiler cannot share code).
static long expect(long t, long i)
{
	unsigned long a = (unsigned long)t * 1000003u + (unsigned long)i;
	unsigned long b = (a ^ (unsigned long)((long)a >> 7)) * 31u;
	return (long)((b & 1) ? b + (unsigned long)i : b - (unsigned long)t);
}

static void *worker(void *arg)
{
	long t = (long)arg;
	for (long i = 0; !atomic_load_explicit(&stop, memory_order_relaxed); i++) {
		if (mix(t, i) != expect(t, i))
			wrong[t]++;
		calls[t]++;
	}
	return NULL;
}

int main(void)
{
	const char *bench = getenv("BENCH");
	if (bench) {
		// BENCH_REPS passes; the best one is printed (the first passes also warm up
		// the caches and, when traced, the trace buffer's pages).
		long n = atol(bench), bad = 0,
		     reps = atol(getenv("BENCH_REPS") ? getenv("BENCH_REPS") : "1");
		double best = 1e300;
		for (long r = 0; r < reps; r++) {
			struct timespec t0, t1;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			for (long i = 0; i < n; i++)
				bad += mix(1, i) != expect(1, i);
			clock_gettime(CLOCK_MONOTONIC, &t1);
			double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 +
			            (double)(t1.tv_nsec - t0.tv_nsec);
			if (ns < best)
				best = ns;
			usleep(5000); // let the reader drain the buffer
		}
		printf("bench %ld calls %.1f ns/call wrong %ld\n", n, best / (double)n, bad);
		return bad != 0;
	}
	pthread_t th[THREADS];
	for (long t = 0; t < THREADS; t++)
		pthread_create(&th[t], NULL, worker, (void *)t);
	printf("started\n");
	fflush(stdout);
	char buf[64];
	while (read(0, buf, sizeof(buf)) > 0)
		;
	atomic_store(&stop, 1);
	long total = 0, bad = 0;
	for (int t = 0; t < THREADS; t++) {
		pthread_join(th[t], NULL);
		total += calls[t];
		bad += wrong[t];
	}
	printf("calls %s wrong %ld\n", total > 0 ? "ok" : "none", bad);
	return bad != 0;
}
