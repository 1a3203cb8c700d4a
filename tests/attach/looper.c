/* Attach test target: calls tick() every 10 ms forever, printing a line every 10 calls.
 * SIGUSR1 makes it exit with code 7. */
#include <signal.h>
#include <stdio.h>
#include <time.h>

int counter;
static volatile sig_atomic_t quit;

__attribute__((noinline)) void tick(int i)
{
	counter += i;
}

static void on_usr1(int sig)
{
	(void)sig;
	quit = 1;
}

int main(void)
{
	signal(SIGUSR1, on_usr1);
	printf("ready\n");
	fflush(stdout);
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (int i = 1; !quit; i++) {
		tick(i);
		if (i % 10 == 0) {
			printf("tick %d\n", i);
			fflush(stdout);
		}
		nanosleep(&ts, NULL);
	}
	return 7;
}
