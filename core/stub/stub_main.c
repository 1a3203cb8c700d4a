/* nonstop-stub: launches a program with libnonstop-agent.so preloaded, or attaches to
 * a running one and loads the agent into it, and serves one RSP client at a time (TCP
 * or stdin/stdout). The program never stops: the client gets tracepoint hits as trace
 * frames, and when it goes away the tracepoints are removed and the program runs on.
 *
 *   nonstop-stub [--listen HOST:PORT | --stdio] [--hold] [--stdout-fd N]
 *                [--stderr-fd N] [--agent PATH] [--ring-warm SIZE] [--nice N]
 *                -- PROGRAM ARGS...
 *   nonstop-stub --attach PID [--listen HOST:PORT | --stdio] [--agent PATH] [--nice N]
 *
 * --ring-warm SIZE (bytes, K/M/G suffixes; default 32M, 0 = off): how much of each
 * hitting thread's ring the agent keeps backed ahead of it (docs/jump-pads.md).
 * --nice N (0..19, default 10): how much the stub lowers its own priority once the
 * program runs (the program keeps its own). */
#define _GNU_SOURCE
#include "stub/stub.h"
#include "base/clock.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"

static void usage(void)
{
	fprintf(stderr, "usage: nonstop-stub [--listen HOST:PORT | --stdio] [--hold] "
	                "[--stdout-fd N] [--stderr-fd N] [--agent PATH] [--debug-dir DIR]...\n"
	                "                    [--ring-warm SIZE] [--nice N] -- PROGRAM ARGS...\n"
	                "       nonstop-stub --attach PID [--listen HOST:PORT | --stdio] "
	                "[--agent PATH] [--debug-dir DIR]... [--ring-warm SIZE] [--nice N]\n");
}

static bool parse_fd(const char *s, int *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == 0 || *end || v < 0 || v > 1 << 20)
		return false;
	*out = (int)v;
	return true;
}

// "N", "NK", "NM" or "NG" bytes (at most 1 TiB).
static bool parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned shift = 0;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	if (*s < '0' || *s > '9' || *end || v > (1ull << 40) >> shift)
		return false;
	*out = (uint64_t)v << shift;
	return true;
}

static bool parse_args(struct ns_stub *s, int argc, char **argv)
{
	int i;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_val = i + 1 < argc;
		if (!strcmp(a, "--")) {
			i++;
			break;
		} else if (!strcmp(a, "--stdio")) {
			s->use_stdio = true;
		} else if (!strcmp(a, "--hold")) {
			s->hold = true;
		} else if (!strcmp(a, "--listen") && has_val) {
			s->listen_addr = argv[++i];
		} else if (!strcmp(a, "--attach") && has_val) {
			char *end;
			long v = strtol(argv[++i], &end, 10);
			if (!*argv[i] || *end || v <= 0 || v > INT32_MAX)
				return false;
			s->attach_pid = (pid_t)v;
		} else if (!strcmp(a, "--agent") && has_val) {
			s->agent_path = argv[++i];
		} else if (!strcmp(a, "--debug-dir") && has_val) {
			if (s->ndebug_dirs == sizeof(s->debug_dirs) / sizeof(s->debug_dirs[0]))
				return false;
			s->debug_dirs[s->ndebug_dirs++] = argv[++i];
		} else if (!strcmp(a, "--ring-warm") && has_val) {
			if (!parse_size(argv[++i], &s->ring_warm))
				return false;
		} else if (!strcmp(a, "--nice") && has_val) {
			char *end;
			long v = strtol(argv[++i], &end, 10);
			if (!*argv[i] || *end || v < 0 || v > 19)
				return false;
			s->nice = (int)v;
		} else if (!strcmp(a, "--stdout-fd") && has_val) {
			if (!parse_fd(argv[++i], &s->stdout_fd))
				return false;
		} else if (!strcmp(a, "--stderr-fd") && has_val) {
			if (!parse_fd(argv[++i], &s->stderr_fd))
				return false;
		} else if (a[0] == '-') {
			fprintf(stderr, "nonstop-stub: unknown option %s\n", a);
			return false;
		} else {
			break; // the program, without "--"
		}
	}
	if (s->use_stdio == (s->listen_addr != NULL))
		return false;
	if (s->attach_pid) {
		// The program is already running: its stdio and its start are its own.
		if (i < argc || s->hold || s->stdout_fd >= 0 || s->stderr_fd >= 0)
			return false;
		return true;
	}
	if (i >= argc)
		return false;
	s->argv = argv + i;
	return true;
}

static struct ns_err *listen_on(const char *hostport, int *out)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	if (!colon || (size_t)(colon - hostport) >= sizeof(host))
		return ns_err_create(NS_ERR_INVALID, "--listen wants HOST:PORT, got %s", hostport);
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = 0;
	const char *h = host;
	if (host[0] == '[') { // [::1]:port
		h = host + 1;
		char *rb = strchr(host, ']');
		if (rb)
			*rb = 0;
	}
	struct addrinfo hints = {
	        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *ai;
	int rc = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &ai);
	if (rc)
		return ns_err_create(NS_ERR_INVALID, "--listen %s: %s", hostport, gai_strerror(rc));
	struct ns_err *err = NULL;
	int fd = -1;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 4) == 0)
			break;
		err = ns_err_errno(errno, "--listen %s", hostport);
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return err ? err
		           : ns_err_create(NS_ERR_INVALID, "--listen %s: no address", hostport);
	ns_err_destroy(err);
	*out = fd;
	return NULL;
}

static void leave(struct ns_stub *s, int code)
{
	if (s->conn)
		ns_stub__client_gone(s);
	else if (s->ctl_fd >= 0 && !s->exited)
		ns_err_destroy(ns_stub__agent_remove_all(s));
	ns_stub__agent_resume(s);
	ns_stub__pt_detach(s);
	exit(code);
}

/* The program is gone: collect its last frames before anyone reports the exit. */
static void on_exit_seen(struct ns_stub *s)
{
	ns_stub__drain(s);
	if (s->exit_unknown)
		ns_log(NS_LOG_INFO, "program exited (status unknown)");
	else if (WIFSIGNALED(s->wstatus))
		ns_log(NS_LOG_INFO, "program killed by signal %d", WTERMSIG(s->wstatus));
	else
		ns_log(NS_LOG_INFO, "program exited with code %d", WEXITSTATUS(s->wstatus));
}

static void serve_client(struct ns_stub *s, bool readable)
{
	if (!readable && !ns_rsp_buffered(s->conn))
		return;
	bool first = true;
	while (s->conn && (first || ns_rsp_buffered(s->conn))) {
		first = false;
		struct ns_rsp_packet pkt;
		struct ns_err *err = ns_rsp_recv(s->conn, 0, &pkt);
		if (err) {
			bool closed = err->code == NS_ERR_CLOSED;
			ns_err_destroy(err);
			if (closed) {
				ns_log(NS_LOG_INFO, "client disconnected");
				ns_stub__client_gone(s);
				if (s->use_stdio)
					leave(s, 0);
			}
			return;
		}
		enum ns_stub_action act = ns_stub__handle_packet(s, &pkt);
		if (act == NS_STUB_KILL) {
			ns_stub__kill(s);
			ns_stub__client_gone(s);
			exit(0);
		}
		if (act == NS_STUB_DETACH) {
			ns_log(NS_LOG_INFO, "client detached");
			ns_stub__client_gone(s);
			if (s->use_stdio)
				leave(s, 0);
			return;
		}
	}
}

static void accept_client(struct ns_stub *s)
{
	int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct ns_err *err = ns_rsp_conn_create(fd, fd, &s->conn);
	if (err) {
		close(fd);
		ns_err_destroy(err);
		return;
	}
	s->exit_reported = false;
	ns_log(NS_LOG_INFO, "client connected");
}

static int setup_signals(void)
{
	signal(SIGPIPE, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

int main(int argc, char **argv)
{
	static struct ns_stub st;
	struct ns_stub *s = &st;
	s->stdout_fd = s->stderr_fd = -1;
	s->ring_warm = NS_AGENT_WARM_BYTES;
	s->nice = NS_STUB_NICE;
	s->ctl_fd = s->memfd = s->pidfd = s->listen_fd = -1;
	ns_strbuf_init(&s->maps);
	if (!parse_args(s, argc, argv)) {
		usage();
		return 2;
	}
	ns_log_set(ns_log_stderr, NULL, getenv("NONSTOP_STUB_DEBUG") ? NS_LOG_DEBUG : NS_LOG_WARN);
	int sigfd = setup_signals();

	struct ns_err *err = NULL;
	if (s->listen_addr)
		err = listen_on(s->listen_addr, &s->listen_fd);
	if (!err)
		err = s->attach_pid ? ns_stub__attach(s) : ns_stub__launch(s);
	if (err) {
		fprintf(stderr, "nonstop-stub: %s\n", err->msg);
		return 1;
	}
	// The program started (it keeps its own priority): from now on the stub yields
	// the CPU to it. Frames wait in the rings meanwhile (a full ring counts drops).
	// Not under the ptrace tier: there a hitting thread waits for the stub.
	if (s->nice && !s->pt) {
		errno = 0;
		int cur = getpriority(PRIO_PROCESS, 0);
		if ((cur != -1 || errno == 0) && setpriority(PRIO_PROCESS, 0, cur + s->nice) != 0)
			fprintf(stderr, "nonstop-stub: cannot lower its priority: %s\n",
			        strerror(errno));
	}
	if (s->use_stdio) {
		err = ns_rsp_conn_create(0, 1, &s->conn);
		if (err) {
			fprintf(stderr, "nonstop-stub: %s\n", err->msg);
			ns_stub__kill(s);
			return 1;
		}
	}

	int64_t next_housekeeping = ns_mono_ms() + 1000, next_trim = ns_mono_ms() + 100;
	int64_t next_drain = 0;
	int drain_ms = NS_STUB_DRAIN_MS;
	for (;;) {
		struct pollfd pf[6];
		int n = 0, i_client = -1, i_listen = -1, i_ctl = -1, i_pid = -1, i_sig = -1;
		if (s->conn) {
			i_client = n;
			pf[n++] = (struct pollfd){.fd = ns_rsp_fd(s->conn), .events = POLLIN};
		} else if (s->listen_fd >= 0) {
			i_listen = n;
			pf[n++] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
		}
		if (s->ctl_fd >= 0) {
			i_ctl = n;
			pf[n++] = (struct pollfd){.fd = s->ctl_fd, .events = POLLIN};
		}
		if (s->pidfd >= 0 && !s->exited) {
			i_pid = n;
			pf[n++] = (struct pollfd){.fd = s->pidfd, .events = POLLIN};
		}
		if (ns_stub__pt_fd(s) >= 0 && !s->exited)
			pf[n++] = (struct pollfd){.fd = ns_stub__pt_fd(s), .events = POLLIN};
		if (sigfd >= 0) {
			i_sig = n;
			pf[n++] = (struct pollfd){.fd = sigfd, .events = POLLIN};
		}
		// The drain tick runs while tracepoints may produce frames: the rings are
		// read in batches (docs/jump-pads.md, "Frames leave in batches").
		bool tracing = s->running || s->frames.count;
		int64_t wait = next_drain - ns_mono_ms();
		int timeout = !tracing ? 100 : wait < 0 ? 0 : (int)wait;
		if (s->conn && ns_rsp_buffered(s->conn))
			timeout = 0;
		int r = poll(pf, (nfds_t)n, timeout);
		if (r < 0 && errno != EINTR) {
			perror("nonstop-stub: poll");
			leave(s, 1);
		}
		if (r < 0)
			continue;
		if (i_sig >= 0 && (pf[i_sig].revents & POLLIN)) {
			struct signalfd_siginfo si;
			if (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
				// SIGTERM: tracepoints out, the program runs on.
				leave(s, 0);
			}
		}
		// The ptrace tier: check_exit handles hits, signals and exits of traced threads.
		if (!s->exited && ((i_pid >= 0 && pf[i_pid].revents) || s->pidfd < 0 || s->pt)) {
			if (ns_stub__check_exit(s))
				on_exit_seen(s);
		}
		if (i_ctl >= 0 && pf[i_ctl].revents)
			ns_stub__agent_input(s);
		if (ns_mono_ms() >= next_drain) {
			size_t bytes0 = s->frames.bytes, created0 = s->fcreated;
			ns_stub__drain(s);
			ns_stub__back_rings(s, NS_STUB_BACK_STEP);
			drain_ms = ns_stub__drain_interval(drain_ms, (size_t)(s->fcreated - created0),
			                                   s->frames.bytes - bytes0);
			next_drain = ns_mono_ms() + drain_ms;
		}
		if (i_listen >= 0 && (pf[i_listen].revents & POLLIN))
			accept_client(s);
		if (s->conn)
			serve_client(s, i_client >= 0 && pf[i_client].revents);
		ns_stub__maybe_notify(s);

		int64_t now = ns_mono_ms();
		if (now >= next_trim) { // quiet rings give their read pages back
			ns_stub__trim_rings(s);
			next_trim = now + 100;
		}
		if (now >= next_housekeeping) {
			ns_stub__release_dead_rings(s);
			next_housekeeping = now + 1000;
		}
		// Nothing left to serve: the program is gone and nobody is connected.
		if (s->exited && !s->conn)
			leave(s, 0);
	}
}
