/* Hits inside a signal handler that interrupted a collection on the same thread
 * (jump_test "nested_hits_counted"): the main thread calls outer() OUTER_N times (its
 * tracepoint collects 512 bytes of stack: about a microsecond per hit, most of the loop's
 * time), and a timer sends this thread SIGALRM every 50 us, whose handler calls
 * inner() (a tracepoint of its own). Prints how many times inner() ran: a traced run
 * prints the same count of calls to outer(). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { OUTER_N = 2500 };

static volatile long inner_calls;

__attribute__((noinline)) void inner(long n)
{
	__asm__ volatile("" ::: "memory");
	inner_calls = n + 1; /* the tracepoint: inner's entry */
}

static void on_alrm(int sig)
{
	(void)sig;
	inner(inner_calls);
}

__attribute__((noinline)) long outer(long i)
{
	__asm__ volatile("" ::: "memory");
	return i * 3; /* the tracepoint: outer's entry */
}

int main(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alrm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	// This thread only (not the agent's): a timer that signals its creator's tid.
	struct sigevent sev;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGALRM;
	sev._sigev_un._tid = gettid();
	timer_t t;
	if (timer_create(CLOCK_MONOTONIC, &sev, &t) != 0) {
		perror("timer_create");
		return 1;
	}
	struct itimerspec its = {{0, 50000}, {0, 50000}};
	timer_settime(t, 0, &its, NULL);
	long sum = 0;
	for (long i = 0; i < OUTER_N; i++)
		sum += outer(i);
	timer_delete(t);
	printf("outer %d sum %ld\n", OUTER_N, sum);
	printf("inner %ld\n", inner_calls);
	return 0;
}
