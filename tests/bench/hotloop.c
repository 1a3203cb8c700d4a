/* Hot-loop target of bench_hotloop.py: the main thread calls hot(i, i * 3, s) N times
 * (s: a heap copy of msg)
 * in a tight loop and times the loop itself with CLOCK_MONOTONIC, so a tracer's cost per
 * hit is (traced elapsed - untraced elapsed) / N whatever the tracer's start-up time.
 *
 *   hotloop N
 *
 * Prints "elapsed_ns <loop time>", "cpu_ns <the thread's CPU time in the loop>"
 * (CLOCK_THREAD_CPUTIME_ID: what the loop cost this thread, without the time the
 * scheduler gave other processes, e.g. a tracer's consumer on a machine with few
 * cores), "faults <page faults the thread took in the loop>", "hits <N>" and
 * "checksum <sum>", then calls
 * bench_done() (a place for a debugger to stop after the loop, e.g. to read its trace
 * status). Built by the benchmark with gcc -O2 -g; noipa keeps gcc from cloning hot()
 * with constant-propagated arguments, so every peer sees the same three arguments. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char msg[] = "hello from the hot loop";
volatile long sink;

void hot(int a, int b, const char *s);
void bench_done(long long elapsed);

__attribute__((noipa)) void hot(int a, int b, const char *s)
{
	sink += (a ^ b) + s[a & 7];
}

__attribute__((noipa)) void bench_done(long long elapsed)
{
	sink += elapsed;
}

// Page faults this thread took so far (minor and major).
static long faults(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return ru.ru_minflt + ru.ru_majflt;
}

static long long now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int n = atoi(argv[1]);
	long f0 = faults();
	long long c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
	long long t0 = now_ns(CLOCK_MONOTONIC);
	// s on the heap, as the fields a server's logpoints read usually are.
	char *heap_msg = malloc(sizeof(msg));
	if (!heap_msg)
		return 1;
	memcpy(heap_msg, msg, sizeof(msg));
	for (int i = 0; i < n; i++)
		hot(i, i * 3, heap_msg);
	long long t1 = now_ns(CLOCK_MONOTONIC);
	long long c1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
	long f1 = faults();
	printf("elapsed_ns %lld\ncpu_ns %lld\nfaults %ld\nhits %d\nchecksum %ld\n", t1 - t0,
	       c1 - c0, f1 - f0, n, sink);
	fflush(stdout);
	bench_done(t1 - t0);
	free(heap_msg);
	return 0;
}
