/* Reads of program memory at hits (jump_test "probe_reads"): a tracepoint at visit()
 * collects it->qty (heap: malloc'd, some chunks in mappings of their own) and 8 bytes
 * at @other: the item's id, memory this program unmapped long ago, or memory it unmaps
 * while the tracepoint keeps reading it. Two threads do the same: the main one, which
 * also takes SIGSEGVs of its own and recovers from them in its own handler, and one
 * that blocks every signal. Prints what it computed: a traced run prints the same. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

enum { HEAP_N = 20000, SLOW_N = 3000, STALE_N = 200 };

struct item {
	long id;
	long qty;
};

static sigjmp_buf jb;
static volatile sig_atomic_t own_faults;

static void on_segv(int sig)
{
	(void)sig;
	own_faults++;
	siglongjmp(jb, 1);
}

__attribute__((noinline)) long visit(const struct item *it, const long *other, long i)
{
	__asm__ volatile("" ::: "memory");
	return it->qty * 2 + i; /* the tracepoint: visit's entry */
}

static long *fresh_page(void)
{
	long *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		exit(2);
	for (int k = 0; k < 512; k++)
		p[k] = 42;
	return p;
}

static long one(long i, const long *other_or_null)
{
	// Every 64th item is big enough for a mapping of its own (a mapping the agent's
	// table has not seen yet).
	struct item *it = malloc(sizeof(*it) + (i % 64 == 0 ? 300000 : 0));
	if (!it)
		exit(2);
	it->id = i;
	it->qty = (i * 7) % 1000;
	long r = visit(it, other_or_null ? other_or_null : &it->id, i);
	free(it);
	return r;
}

// The phases of jump_test's expectations, by i: [base, +HEAP_N) heap (every 100th at
// offset 50 reads a page unmapped long ago), [base + 100000, +SLOW_N) a page that is
// mapped, [base + 200000, +STALE_N) the same page after munmap.
static long phases(long base, bool own)
{
	long sum = 0;
	long *gone = fresh_page();
	munmap(gone, 4096);
	for (long i = base; i < base + HEAP_N; i++) {
		sum += one(i, i % 100 == 50 ? gone : NULL);
		if (own && i % 500 == 0 && sigsetjmp(jb, 1) == 0)
			sum += *(volatile long *)gone; // faults: on_segv jumps back
	}
	long *page = fresh_page();
	for (long i = base + 100000; i < base + 100000 + SLOW_N; i++) {
		sum += one(i, page);
		usleep(200); // time for the agent to learn the page's mapping
	}
	munmap(page, 4096);
	for (long i = base + 200000; i < base + 200000 + STALE_N; i++)
		sum += one(i, page);
	return sum;
}

static void *blocked(void *arg)
{
	long *out = arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	*out = phases(1000000, false);
	return NULL;
}

int main(void)
{
	struct sigaction sa = {0};
	sa.sa_handler = on_segv;
	sa.sa_flags = SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	long main_sum = phases(0, true);
	long thread_sum = 0;
	pthread_t t;
	if (pthread_create(&t, NULL, blocked, &thread_sum) != 0)
		return 2;
	pthread_join(t, NULL);
	printf("main %ld own faults %d thread %ld\n", main_sum, (int)own_faults, thread_sum);
	return 0;
}
