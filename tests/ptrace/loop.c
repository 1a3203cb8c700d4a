/* ptrace-tier test and benchmark target: a worker thread calls step(i, &acc) for
 * i = 1..N and prints "call <i> <acc before the call>" for each; a ticker thread prints
 * "tick <n>" every 5 ms meanwhile. At the end: "elapsed_ns <worker loop time>" and
 * "checksum <acc>".
 *
 *   ptrace-loop N GAP_US [wait]
 *
 * GAP_US: sleep between calls (0: a hot loop, and the calls are not printed). "wait":
 * print "ready" and wait for a line on stdin before the worker starts. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int n_calls, gap_us;
static volatile int done;
static int acc;

__attribute__((noinline)) void step(int i, int *a)
{
	*a += i * 7 % 13;
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void *worker(void *arg)
{
	(void)arg;
	long long t0 = now_ns();
	for (int i = 1; i <= n_calls; i++) {
		int before = acc;
		step(i, &acc);
		if (gap_us) {
			printf("call %d %d\n", i, before);
			usleep((useconds_t)gap_us);
		}
	}
	long long t1 = now_ns();
	printf("elapsed_ns %lld\n", t1 - t0);
	done = 1;
	return NULL;
}

static void *ticker(void *arg)
{
	(void)arg;
	for (int n = 0; !done; n++) {
		if (gap_us) {
			printf("tick %d %lld\n", n, now_ns() / 1000000);
			fflush(stdout);
		}
		usleep(5000);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	n_calls = atoi(argv[1]);
	gap_us = atoi(argv[2]);
	if (argc > 3 && strcmp(argv[3], "wait") == 0) {
		printf("ready\n");
		fflush(stdout);
		char line[16];
		if (!fgets(line, sizeof(line), stdin))
			return 3;
	}
	pthread_t w, t;
	pthread_create(&t, NULL, ticker, NULL);
	pthread_create(&w, NULL, worker, NULL);
	pthread_join(w, NULL);
	pthread_join(t, NULL);
	printf("checksum %d\n", acc);
	return 0;
}
