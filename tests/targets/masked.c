/* End-to-end target: worker threads block every signal, as many servers do. A trap in
 * such a thread would kill the process unless nonstop keeps SIGTRAP deliverable.
 * TAG_* lines are used by tests/e2e. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static long total[2];

__attribute__((noinline)) static void work(int w, int i)
{
	total[w] += i;				/* TAG_MASKED_WORK */
}

static void *worker(void *arg)
{
	int w = (int)(long)arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (int i = 0; i < 200; i++) {
		work(w, i);
		usleep(500);
	}
	return NULL;
}

int main(void)
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL); /* inherited by the workers too */
	pthread_t t[2];
	for (long w = 0; w < 2; w++)
		pthread_create(&t[w], NULL, worker, (void *)w);
	for (int w = 0; w < 2; w++)
		pthread_join(t[w], NULL);
	printf("total %ld %ld\n", total[0], total[1]);
	return 0;
}
