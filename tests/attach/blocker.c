/* Attach test target: the main thread (the one nonstop-stub --attach interrupts) sits
 * in one blocking call, chosen by argv[1]:
 *   read      read(0) on the stdin pipe; the driver writes one byte
 *   accept    accept() on 127.0.0.1:<port printed with "ready">; the driver connects
 *   nanosleep nanosleep(2 s); must not return early nor with EINTR
 *   futex     FUTEX_WAIT on a word a helper thread sets after a byte on stdin
 *   spin      floating-point loop that checks its registers survive; SIGUSR1 ends it
 * A second thread sleeps 2 s too. It prints "ready" before blocking and exits 0 when
 * every call returned normally, 2 on EINTR, 3 on an early or spurious wake-up, 4 on
 * clobbered registers, 1 on other errors. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static _Atomic int word;
static volatile sig_atomic_t stop_spin;
static int other_rc;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int check_sleep(double secs)
{
	struct timespec ts = {(time_t)secs, 0};
	double t0 = now();
	int rc = nanosleep(&ts, NULL);
	double el = now() - t0;
	if (rc != 0) {
		fprintf(stderr, "nanosleep: %s\n", strerror(errno));
		return errno == EINTR ? 2 : 1;
	}
	if (el < secs) {
		fprintf(stderr, "nanosleep returned after %.3f s < %.0f s\n", el, secs);
		return 3;
	}
	if (el > secs + 1.0) {
		fprintf(stderr, "nanosleep took %.3f s (restarted from scratch?)\n", el);
		return 3;
	}
	return 0;
}

static void *other(void *arg)
{
	(void)arg;
	other_rc = check_sleep(2);
	return NULL;
}

static void *waker(void *arg)
{
	(void)arg;
	char c;
	if (read(0, &c, 1) != 1)
		return NULL;
	atomic_store(&word, 1);
	syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	return NULL;
}

static void on_usr1(int sig)
{
	(void)sig;
	stop_spin = 1;
}

static int spin(void)
{
	// At -O2 acc, step and the products live in xmm registers across the loop.
	double acc = 0.0, step = 0.5, prod = 1.0;
	for (unsigned long i = 1; !stop_spin; i++) {
		acc += step;
		prod = prod * 1.0000001;
		if (acc != (double)i * 0.5 || prod < 1.0) {
			fprintf(stderr, "registers clobbered at iteration %lu\n", i);
			return 4;
		}
		if (prod > 2.0)
			prod = 1.0;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "read";
	signal(SIGUSR1, on_usr1);
	pthread_t t;
	pthread_create(&t, NULL, other, NULL);
	int rc = 0;
	if (!strcmp(mode, "read")) {
		printf("ready\n");
		fflush(stdout);
		char c = 0;
		ssize_t n = read(0, &c, 1);
		if (n < 0) {
			fprintf(stderr, "read: %s\n", strerror(errno));
			rc = errno == EINTR ? 2 : 1;
		} else if (n != 1 || c != 'x') {
			fprintf(stderr, "read returned %zd (byte %d)\n", n, c);
			rc = 3;
		}
	} else if (!strcmp(mode, "accept")) {
		int ls = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET,
		                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t sl = sizeof(sa);
		if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 1) ||
		    getsockname(ls, (struct sockaddr *)&sa, &sl))
			return 1;
		printf("ready %d\n", ntohs(sa.sin_port));
		fflush(stdout);
		int fd = accept(ls, NULL, NULL);
		if (fd < 0) {
			fprintf(stderr, "accept: %s\n", strerror(errno));
			rc = errno == EINTR ? 2 : 1;
		}
	} else if (!strcmp(mode, "nanosleep")) {
		printf("ready\n");
		fflush(stdout);
		rc = check_sleep(2);
	} else if (!strcmp(mode, "futex")) {
		pthread_t w;
		pthread_create(&w, NULL, waker, NULL);
		printf("ready\n");
		fflush(stdout);
		long r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
		if (r != 0 && errno != EAGAIN) {
			fprintf(stderr, "futex: %s\n", strerror(errno));
			rc = errno == EINTR ? 2 : 1;
		} else if (atomic_load(&word) != 1) {
			fprintf(stderr, "futex woke up with word still 0\n");
			rc = 3;
		}
		pthread_join(w, NULL);
	} else if (!strcmp(mode, "spin")) {
		printf("ready\n");
		fflush(stdout);
		rc = spin();
	} else {
		return 1;
	}
	pthread_join(t, NULL);
	if (!rc)
		rc = other_rc;
	printf("done %d\n", rc);
	return rc;
}
