/* libnonstop-agent.so entry: the constructor that runs when the stub preloads us
 * (without NONSTOP_AGENT_FD it does nothing at all), and ns_agent_attach, which an
 * attaching stub calls after injecting us with dlopen. */
#define _GNU_SOURCE
#include "agent/agent_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define AGENT_SONAME "libnonstop-agent.so"

// Above the descriptors programs usually assume are theirs (0..2, and low numbers
// that daemons dup2 onto).
enum { FD_FLOOR = 500 };

static int parse_fd(const char *s)
{
	if (!s || !*s)
		return -1;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < 0 || v > 1 << 20)
		return -1;
	return (int)v;
}

// Move @fd out of the program's way and make sure exec'd children do not inherit it.
static int hide_fd(int fd)
{
	int nfd = fcntl(fd, F_DUPFD_CLOEXEC, FD_FLOOR);
	if (nfd < 0) {
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		return fd;
	}
	close(fd);
	return nfd;
}

static bool is_agent_path(const char *p, size_t n, const char *self)
{
	size_t ln = strlen(AGENT_SONAME);
	if (self && strlen(self) == n && memcmp(p, self, n) == 0)
		return true;
	return n >= ln && memcmp(p + n - ln, AGENT_SONAME, ln) == 0 &&
	       (n == ln || p[n - ln - 1] == '/');
}

// LD_PRELOAD without us (entries are separated by spaces or colons, ld.so(8)).
static void scrub_preload(void)
{
	const char *pre = getenv("LD_PRELOAD");
	if (!pre)
		return;
	Dl_info info;
	const char *self = NULL;
	if (dladdr((void *)scrub_preload, &info) && info.dli_fname)
		self = info.dli_fname;
	size_t len = strlen(pre);
	char *out = malloc(len + 1);
	if (!out)
		return;
	size_t o = 0;
	const char *p = pre;
	while (*p) {
		size_t n = strcspn(p, " :");
		if (n && !is_agent_path(p, n, self)) {
			if (o)
				out[o++] = ':';
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
		if (*p)
			p++;
	}
	out[o] = 0;
	if (o)
		setenv("LD_PRELOAD", out, 1);
	else
		unsetenv("LD_PRELOAD");
	free(out);
}

static struct ns_agent_shm *map_shm(int fd, size_t *size_out)
{
	struct stat st;
	if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(struct ns_agent_shm))
		return NULL;
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	struct ns_agent_shm *shm = p;
	uint64_t rings_end;
	bool ok = shm->magic == NS_AGENT_SHM_MAGIC && shm->version == NS_AGENT_PROTO_VERSION &&
	          shm->size >= sizeof(*shm) && shm->total_size <= (uint64_t)st.st_size &&
	          shm->ring_bytes >= 8 && (shm->ring_bytes & 7) == 0 &&
	          shm->rings_offset >= shm->size && (shm->rings_offset & 7) == 0 &&
	          shm->ring_stride >= sizeof(struct ns_agent_ring) + shm->ring_bytes &&
	          (shm->ring_stride & 7) == 0 && shm->nrings <= 4096 &&
	          !__builtin_mul_overflow(shm->ring_stride, (uint64_t)shm->nrings, &rings_end) &&
	          !__builtin_add_overflow(rings_end, shm->rings_offset, &rings_end) &&
	          rings_end <= (uint64_t)st.st_size && shm->tmpl_offset >= rings_end &&
	          (shm->tmpl_offset & 7) == 0 && shm->tmpl_offset <= (uint64_t)st.st_size &&
	          (uint64_t)st.st_size - shm->tmpl_offset >=
	                  NS_AGENT_NTMPL * sizeof(struct ns_agent_tmpl);
	if (!ok) {
		munmap(p, (size_t)st.st_size);
		return NULL;
	}
	*size_out = (size_t)st.st_size;
	return shm;
}

static void send_hello(void)
{
	struct ns_agent_hello h;
	memset(&h, 0, sizeof(h));
	h.h.type = NS_AGENT_MSG_HELLO;
	h.h.size = sizeof(h);
	h.version = NS_AGENT_PROTO_VERSION;
	h.pid = (uint32_t)getpid();
	send(ns_agent__g.ctl_fd, &h, sizeof(h), MSG_NOSIGNAL);
}

static size_t shm_map_size; // of ns_agent__g.shm
// NONSTOP_AGENT_TIER=trap: never use the jump-pad tier (every site runs as int3).
static bool no_jump;
static bool handler_installed;

// Take over the rings (replacing an earlier attach's), the control socket, and start.
static int run(int ctl_fd, struct ns_agent_shm *shm, size_t map_size, bool hold)
{
	if (ns_agent__g.mem_fd < 0) {
		int mem_fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
		if (mem_fd < 0) {
			munmap(shm, map_size);
			close(ctl_fd);
			return -1;
		}
		ns_agent__g.mem_fd = hide_fd(mem_fd);
	}
	if (ns_agent__g.wake_fd < 0) {
		int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (wake_fd >= 0) // without it, the warmer finds claims at its next tick
			ns_agent__g.wake_fd = hide_fd(wake_fd);
	}
	struct ns_agent_shm *old = ns_agent__g.shm;
	size_t old_size = shm_map_size;
	// New mapping first, then the generation (agent_collect_sig.c, claim_ring).
	__atomic_store_n(&ns_agent__g.shm, shm, __ATOMIC_RELEASE);
	shm_map_size = map_size;
	atomic_fetch_add(&ns_agent__g.gen, 1);
	if (old) {
		// Unmap the old rings once no handler can still be writing into them
		// (leak them rather than wait long).
		bool q = false;
		for (int i = 0; i < 100 && !(q = ns_agent__quiescent()); i++)
			usleep(1000);
		if (q)
			munmap(old, old_size);
	}
	ns_agent__g.ctl_fd = hide_fd(ctl_fd);
	atomic_store(&ns_agent__g.collect, true);

	if (!handler_installed) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = ns_agent__on_sigtrap;
		sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART | SA_NODEFER;
		// Asynchronous signals wait until the handler is done, so the program's own
		// handlers never run in the middle of a collection; synchronous ones stay
		// deliverable (blocking them would kill the process on a fault).
		sigfillset(&sa.sa_mask);
		sigdelset(&sa.sa_mask, SIGTRAP);
		sigdelset(&sa.sa_mask, SIGSEGV);
		sigdelset(&sa.sa_mask, SIGBUS);
		sigdelset(&sa.sa_mask, SIGILL);
		sigdelset(&sa.sa_mask, SIGFPE);
		if (sigaction(SIGTRAP, &sa, &ns_agent__g.old_trap) != 0)
			return -1;
		pthread_atfork(NULL, NULL, ns_agent__atfork_child);
		handler_installed = true;
	}
	ns_agent__jump_init(no_jump);
	send_hello();
	if (ns_agent__ctl_start() != 0)
		return -1;
	if (hold)
		ns_agent__hold_wait();
	return 0;
}

/** Start the agent on a control socket and a ring memfd (both taken over). The
 * constructor calls it for a launched program. 0 on success, -1 if the agent cannot
 * run (fds closed). */
__attribute__((visibility("default"))) int ns_agent_start(int ctl_fd, int shm_fd, int hold)
{
	if (ns_agent__g.shm) {
		close(ctl_fd);
		close(shm_fd);
		return -1; // already running
	}
	size_t size = 0;
	struct ns_agent_shm *shm = map_shm(shm_fd, &size);
	close(shm_fd);
	if (!shm) {
		close(ctl_fd);
		return -1;
	}
	return run(ctl_fd, shm, size, hold);
}

// The previous control connection's peer has closed it.
static bool peer_closed(int fd)
{
	if (fd < 0)
		return true;
	struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR));
}

// The one NS_AGENT_MSG_SHM message and the memfd it carries; -errno on failure.
static int recv_shm_fd(int sock)
{
	struct ns_agent_msg_hdr h;
	struct iovec iov = {.iov_base = &h, .iov_len = sizeof(h)};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct msghdr mh = {.msg_iov = &iov,
	                    .msg_iovlen = 1,
	                    .msg_control = cbuf.buf,
	                    .msg_controllen = sizeof(cbuf.buf)};
	ssize_t n;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	int fd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	if ((size_t)n < sizeof(h) || h.type != NS_AGENT_MSG_SHM || fd < 0) {
		if (fd >= 0)
			close(fd);
		return -EPROTO;
	}
	return fd;
}

__attribute__((visibility("default"))) int ns_agent_attach(const char *socket_name)
{
	size_t len = socket_name ? strlen(socket_name) : 0;
	struct sockaddr_un sa;
	if (len == 0 || len > 100 || len + 1 > sizeof(sa.sun_path))
		return -EINVAL;
	if (ns_agent__ctl_running()) {
		// A stub that just went away: its control thread is cleaning up.
		if (!peer_closed(ns_agent__g.ctl_fd))
			return -EBUSY;
		for (int i = 0; i < 2000 && ns_agent__ctl_running(); i++)
			usleep(1000);
		if (ns_agent__ctl_running())
			return -EBUSY;
	}
	if (ns_agent__g.ctl_fd >= 0)
		close(ns_agent__g.ctl_fd);
	ns_agent__g.ctl_fd = -1;

	int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path + 1, socket_name, len); // sun_path[0] = 0: abstract
	// Never hang the thread the stub interrupted: the stub answers at once.
	struct timeval tv = {.tv_sec = 3};
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int rc;
	do
		rc = connect(sock, (struct sockaddr *)&sa,
		             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len));
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int e = errno;
		close(sock);
		return -e;
	}
	int shm_fd = recv_shm_fd(sock);
	if (shm_fd < 0) {
		close(sock);
		return shm_fd;
	}
	struct timeval none = {0};
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
	size_t size = 0;
	struct ns_agent_shm *shm = map_shm(shm_fd, &size);
	close(shm_fd);
	if (!shm) {
		close(sock);
		return -EPROTO;
	}
	return run(sock, shm, size, false) == 0 ? 0 : -EIO;
}

__attribute__((constructor)) static void agent_init(void)
{
	const char *fd_s = getenv(NS_AGENT_ENV_FD);
	if (!fd_s)
		return;
	int ctl_fd = parse_fd(fd_s);
	int shm_fd = parse_fd(getenv(NS_AGENT_ENV_SHM));
	const char *hold_s = getenv(NS_AGENT_ENV_HOLD);
	bool hold = hold_s && strcmp(hold_s, "1") == 0;
	const char *tier_s = getenv(NS_AGENT_ENV_TIER);
	no_jump = tier_s && strcmp(tier_s, "trap") == 0;
	unsetenv(NS_AGENT_ENV_TIER);
	// The program and its children see the environment they would without us.
	unsetenv(NS_AGENT_ENV_FD);
	unsetenv(NS_AGENT_ENV_SHM);
	unsetenv(NS_AGENT_ENV_HOLD);
	scrub_preload();
	if (ctl_fd < 0 || shm_fd < 0) {
		if (ctl_fd >= 0)
			close(ctl_fd);
		if (shm_fd >= 0)
			close(shm_fd);
		return;
	}
	ns_agent_start(ctl_fd, shm_fd, hold);
}

// The program exits normally: the last hits reach shm->hits (the control thread
// publishes them every 100 ms otherwise). Not in a forked child (no control thread).
__attribute__((destructor)) static void agent_fini(void)
{
	if (ns_agent__ctl_running())
		ns_agent__publish_hits();
}
