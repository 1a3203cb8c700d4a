/* Target program for agent_e2e_test: calls work() in a loop and prints a checksum.
 * Built -O0 -g, not linked with the agent; the test finds work() with nm/objdump.
 *   agent_e2e_target N [DELAY_US [fork|threads|bench]]
 * bench: 10 passes of N calls of work() 20 ms apart; prints the best pass's ns per call. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int counter;
static int n_calls;

__attribute__((noinline)) int work(int i)
{
	int local = i * 3;
	counter += local;
	return local ^ 5;
}

__attribute__((noinline)) long work2(long i)
{
	return i * 7;
}

// 10 passes of @n calls of work(), 20 ms apart (the stub drains meanwhile).
__attribute__((noinline)) static int bench(int n)
{
	double best = 1e18;
	long sum = 0;
	for (int rep = 0; rep < 10; rep++) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < n; i++)
			sum += work(i);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 +
		             (double)(t1.tv_nsec - t0.tv_nsec)) /
		            n;
		if (ns < best)
			best = ns;
		usleep(20000);
	}
	printf("bench %.2f ns/call (sum %ld)\n", best, sum);
	return 0;
}

static void *thread_main(void *arg)
{
	long sum = 0;
	for (int i = 0; i < n_calls; i++)
		sum += work2(i);
	*(long *)arg = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1000;
	int delay_us = argc > 2 ? atoi(argv[2]) : 0;
	const char *mode = argc > 3 ? argv[3] : "";
	long sum = 0;
	if (strcmp(mode, "bench") == 0)
		return bench(n);
	for (int i = 0; i < n; i++) {
		sum += work(i);
		if (delay_us)
			usleep((useconds_t)delay_us);
	}
	const char *pre = getenv("LD_PRELOAD"), *fd = getenv("NONSTOP_AGENT_FD");
	printf("sum=%ld counter=%d preload=%s fd=%s\n", sum, counter, pre ? pre : "-",
	       fd ? fd : "-");
	fflush(stdout);
	if (strcmp(mode, "fork") == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			long csum = 0;
			for (int i = 0; i < n; i++)
				csum += work(i);
			// The child runs the original code: nonstop's int3 is gone.
			printf("child sum=%ld counter=%d first byte of work=%02x\n", csum, counter,
			       *(volatile unsigned char *)(void *)work);
			fflush(stdout);
			_exit(0);
		}
		int st = 0;
		waitpid(pid, &st, 0);
		printf("child status=%d\n", st);
	} else if (strcmp(mode, "threads") == 0) {
		pthread_t t[4];
		long sums[4];
		n_calls = n;
		for (int i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, thread_main, &sums[i]);
		for (int i = 0; i < 4; i++) {
			pthread_join(t[i], NULL);
			printf("thread %d sum=%ld\n", i, sums[i]);
		}
	}
	return 0;
}
