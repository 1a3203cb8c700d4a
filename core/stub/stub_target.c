/* The program under the stub: launch with the agent preloaded (core/agent/agent.h,
 * "Launch"), its threads, exit, maps and build-id. */
#define _GNU_SOURCE
#include "stub/stub.h"
#include "base/clock.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"

extern char **environ;

static const char *const own_vars[] = {"LD_PRELOAD=", NS_AGENT_ENV_FD "=", NS_AGENT_ENV_SHM "=",
                                       NS_AGENT_ENV_HOLD "="};

/* Resolve the agent: --agent, $NONSTOP_AGENT_LIB, <dir of our exe>/../lib/. */
bool ns_stub__agent_path(const struct ns_stub *s, char *out, size_t cap)
{
	const char *p = s->agent_path ? s->agent_path : getenv("NONSTOP_AGENT_LIB");
	if (p && *p) {
		snprintf(out, cap, "%s", p);
	} else {
		char self[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n <= 0)
			return false;
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash)
			*slash = 0;
		if (snprintf(out, cap, "%.*s/../lib/libnonstop-agent.so", (int)(cap - 64), self) <
		    0)
			return false;
	}
	// ld.so needs an absolute path or it searches the library path.
	char real[PATH_MAX];
	if (!realpath(out, real) || strlen(real) >= cap)
		return false;
	memcpy(out, real, strlen(real) + 1);
	return true;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	char *v = NULL;
	if (vasprintf(&v, f, ap) < 0)
		v = NULL;
	va_end(ap);
	return v;
}

/* The program's environment: ours, LD_PRELOAD=agent[:old], the agent's variables. */
static char **build_env(const struct ns_stub *s, const char *agent, int ctl, int memfd)
{
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + 5, sizeof(*env));
	if (!env)
		return NULL;
	size_t k = 0;
	const char *old_preload = getenv("LD_PRELOAD");
	for (size_t i = 0; i < n; i++) {
		bool ours = false;
		for (size_t j = 0; j < sizeof(own_vars) / sizeof(own_vars[0]); j++)
			if (strncmp(environ[i], own_vars[j], strlen(own_vars[j])) == 0)
				ours = true;
		if (!ours)
			env[k++] = environ[i];
	}
	if (agent) {
		if (old_preload && *old_preload)
			env[k++] = fmt("LD_PRELOAD=%s:%s", agent, old_preload);
		else
			env[k++] = fmt("LD_PRELOAD=%s", agent);
		env[k++] = fmt(NS_AGENT_ENV_FD "=%d", ctl);
		env[k++] = fmt(NS_AGENT_ENV_SHM "=%d", memfd);
		if (s->hold)
			env[k++] = NS_AGENT_ENV_HOLD "=1";
	} else if (old_preload) {
		env[k++] = fmt("LD_PRELOAD=%s", old_preload);
	}
	for (size_t i = 0; i < k; i++)
		if (!env[i]) {
			free(env);
			return NULL;
		}
	return env;
}

static void child(const struct ns_stub *s, char **env, int ctl, int errfd, int sync_fd)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (s->use_stdio) {
		// The RSP channel is our stdin/stdout: the program must not touch it.
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0 && null != 0) {
			dup2(null, 0);
			close(null);
		}
		if (s->stdout_fd < 0)
			dup2(2, 1);
	}
	if (s->stdout_fd >= 0 && s->stdout_fd != 1)
		dup2(s->stdout_fd, 1);
	if (s->stderr_fd >= 0 && s->stderr_fd != 2)
		dup2(s->stderr_fd, 2);
	if (s->stdout_fd > 2)
		close(s->stdout_fd);
	if (s->stderr_fd > 2 && s->stderr_fd != s->stdout_fd)
		close(s->stderr_fd);
	if (ctl >= 0) {
		fcntl(ctl, F_SETFD, 0);
		fcntl(s->memfd, F_SETFD, 0);
	}
	environ = env;
	if (sync_fd >= 0) {
		// The ptrace tier: wait until the stub has seized us.
		char c;
		while (read(sync_fd, &c, 1) < 0 && errno == EINTR)
			;
	}
	execvp(s->argv[0], s->argv);
	int e = errno;
	ssize_t w = write(errfd, &e, sizeof(e));
	(void)w;
	_exit(127);
}

/* The file execvp would run for @prog (a path, or searched in $PATH). */
static bool resolve_prog(const char *prog, char *out, size_t cap)
{
	if (strchr(prog, '/')) {
		snprintf(out, cap, "%s", prog);
		return true;
	}
	const char *path = getenv("PATH");
	if (!path)
		path = "/bin:/usr/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		snprintf(out, cap, "%.*s%s%s", (int)n, path, n ? "/" : "", prog);
		if (access(out, X_OK) == 0)
			return true;
		path += n;
		if (*path)
			path++;
	}
	return false;
}

/* An ELF program without PT_INTERP: LD_PRELOAD cannot load the agent into it. */
static bool is_static_elf(const char *prog)
{
	char path[PATH_MAX];
	if (!resolve_prog(prog, path, sizeof(path)))
		return false;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	Elf64_Ehdr eh;
	bool stat_elf = false;
	if (pread(fd, &eh, sizeof(eh), 0) == sizeof(eh) &&
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_ident[EI_CLASS] == ELFCLASS64 &&
	    eh.e_phentsize == sizeof(Elf64_Phdr) && eh.e_phnum > 0) {
		stat_elf = true;
		for (unsigned i = 0; i < eh.e_phnum; i++) {
			Elf64_Phdr ph;
			if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) !=
			    sizeof(ph)) {
				stat_elf = false;
				break;
			}
			if (ph.p_type == PT_INTERP)
				stat_elf = false;
		}
	}
	close(fd);
	return stat_elf;
}

struct ns_err *ns_stub__launch(struct ns_stub *s)
{
	char agent[PATH_MAX];
	int ctl = -1;
	bool have_agent = ns_stub__agent_path(s, agent, sizeof(agent));
	const char *pt_reason = NULL;
	if (is_static_elf(s->argv[0]))
		pt_reason = "static binary: the agent cannot be preloaded";
	else if (!have_agent)
		pt_reason = "agent library not found";
	if (pt_reason)
		have_agent = false;
	struct ns_err *err = ns_stub__agent_prepare(s, &ctl);
	if (err)
		return err;
	char **env = build_env(s, have_agent ? agent : NULL, ctl, s->memfd);
	if (!env)
		return &ns_err_nomem;
	int ep[2], sp[2] = {-1, -1};
	if (pipe2(ep, O_CLOEXEC) < 0)
		return ns_err_errno(errno, "pipe");
	if (pt_reason && pipe2(sp, O_CLOEXEC) < 0)
		return ns_err_errno(errno, "pipe");
	pid_t pid = fork();
	if (pid < 0)
		return ns_err_errno(errno, "fork");
	if (pid == 0)
		child(s, env, have_agent ? ctl : -1, ep[1], sp[0]);
	close(ep[1]);
	if (pt_reason) {
		// Seize before exec, stop at the exec event: nothing runs untraced.
		close(sp[0]);
		long rc = ptrace(PTRACE_SEIZE, pid, 0,
		                 (void *)(uintptr_t)(PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC));
		int e = errno;
		ssize_t w = write(sp[1], "g", 1);
		(void)w;
		close(sp[1]);
		if (rc != 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return ns_err_errno(e, "cannot trace %s (PTRACE_SEIZE)", s->argv[0]);
		}
	}
	close(ctl);
	if (s->stdout_fd >= 0)
		close(s->stdout_fd);
	if (s->stderr_fd >= 0 && s->stderr_fd != s->stdout_fd)
		close(s->stderr_fd);
	for (size_t i = 0; env[i]; i++) // only the strings we made are ours
		if (strncmp(env[i], "LD_PRELOAD=", 11) == 0 ||
		    strncmp(env[i], NS_AGENT_ENV_FD "=", strlen(NS_AGENT_ENV_FD) + 1) == 0 ||
		    strncmp(env[i], NS_AGENT_ENV_SHM "=", strlen(NS_AGENT_ENV_SHM) + 1) == 0)
			free(env[i]);
	free(env);
	int e = 0;
	ssize_t n;
	do
		n = read(ep[0], &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	close(ep[0]);
	if (n == sizeof(e)) {
		waitpid(pid, NULL, 0);
		return ns_err_errno(e, "cannot execute %s", s->argv[0]);
	}
	s->pid = pid;
	s->held = s->hold && have_agent;
	if (pt_reason) {
		int st = 0;
		pid_t r;
		do
			r = waitpid(pid, &st, __WALL);
		while (r < 0 && errno == EINTR);
		if (r != pid || !WIFSTOPPED(st) ||
		    (st >> 8) != (SIGTRAP | (PTRACE_EVENT_EXEC << 8))) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, __WALL);
			return ns_err_create(NS_ERR_OS, "%s did not stop at its exec (status 0x%x)",
			                     s->argv[0], st);
		}
		close(s->ctl_fd);
		s->ctl_fd = -1;
		err = ns_stub__pt_start_held(s, pid, pt_reason);
		if (err) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, __WALL);
			return err;
		}
		s->held = true;
		if (!s->hold)
			ns_stub__pt_resume(s);
		ns_log(NS_LOG_INFO, "ptrace tier: %s", pt_reason);
	} else if (!have_agent) {
		// No agent will ever answer: do not wait 5 s on every request.
		close(s->ctl_fd);
		s->ctl_fd = -1;
	}
	s->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	ssize_t len = readlink(path, s->exe, sizeof(s->exe) - 1);
	if (len <= 0)
		snprintf(s->exe, sizeof(s->exe), "%s", s->argv[0]);
	else
		s->exe[len] = 0;
	return NULL;
}

#ifndef PIDFD_GET_INFO
/* include/uapi/linux/pidfd.h (Linux 6.15): the first version of struct pidfd_info. */
struct pidfd_info {
	uint64_t mask;
	uint64_t cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;
};
#define PIDFD_INFO_EXIT (1ull << 3)
#define PIDFD_GET_INFO _IOWR(0xFF, 11, struct pidfd_info)
#endif

/* An attached program is not our child: the pidfd turns readable when it exits, and
 * Linux 6.15+ tells the wait status once its parent has reaped it. Give the parent
 * a moment, then report the exit with an unknown status. */
static bool check_exit_attached(struct ns_stub *s)
{
	bool gone;
	if (s->pidfd >= 0) {
		struct pollfd p = {.fd = s->pidfd, .events = POLLIN};
		gone = poll(&p, 1, 0) > 0;
	} else {
		gone = kill(s->pid, 0) != 0 && errno == ESRCH;
	}
	if (!gone)
		return false;
	int64_t now = ns_mono_ms();
	if (!s->exit_seen_ms)
		s->exit_seen_ms = now;
	struct pidfd_info info;
	memset(&info, 0, sizeof(info));
	info.mask = PIDFD_INFO_EXIT;
	if (s->pidfd >= 0 && ioctl(s->pidfd, PIDFD_GET_INFO, &info) == 0 &&
	    (info.mask & PIDFD_INFO_EXIT)) {
		s->wstatus = info.exit_code;
	} else if (now - s->exit_seen_ms < 200) {
		usleep(1000); // the pidfd stays readable: do not spin
		return false;
	} else {
		s->exit_unknown = true;
	}
	s->exited = true;
	if (s->pidfd >= 0)
		close(s->pidfd);
	s->pidfd = -1;
	return true;
}

bool ns_stub__check_exit(struct ns_stub *s)
{
	if (s->exited)
		return true;
	if (s->pt) {
		// We are the tracer: every exit arrives through waitpid with the stops.
		ns_stub__pt_events(s);
		return s->exited;
	}
	if (s->attached)
		return check_exit_attached(s);
	int st;
	pid_t r = waitpid(s->pid, &st, WNOHANG);
	if (r == s->pid) {
		s->exited = true;
		s->wstatus = st;
		if (s->pidfd >= 0)
			close(s->pidfd);
		s->pidfd = -1;
	}
	return s->exited;
}

void ns_stub__kill(struct ns_stub *s)
{
	if (s->exited)
		return;
	if (s->pt) {
		ns_stub__pt_kill(s);
		return;
	}
	kill(s->pid, SIGKILL);
	if (s->attached) {
		for (int i = 0; i < 2000 && !check_exit_attached(s); i++)
			usleep(1000);
		if (s->exit_unknown) { // we know how it ended
			s->exit_unknown = false;
			s->wstatus = SIGKILL;
		}
		return;
	}
	int st;
	if (waitpid(s->pid, &st, 0) == s->pid) {
		s->exited = true;
		s->wstatus = st;
	}
}

static bool is_agent_thread(struct ns_stub *s, unsigned long tid)
{
	char path[80], comm[32] = {0};
	snprintf(path, sizeof(path), "/proc/%d/task/%lu/comm", s->pid, tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, comm, sizeof(comm) - 1);
	close(fd);
	return n > 0 && strncmp(comm, NS_AGENT_THREAD_NAME "\n", (size_t)n) == 0;
}

bool ns_stub__threads(struct ns_stub *s, struct ns_strbuf *out)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", s->pid);
	DIR *d = opendir(path);
	if (!d)
		return false;
	struct dirent *de;
	bool any = false;
	while ((de = readdir(d))) {
		char *end;
		unsigned long tid = strtoul(de->d_name, &end, 10);
		if (*end || end == de->d_name || is_agent_thread(s, tid))
			continue;
		ns_strbuf_printf(out, "%sp%x.%lx", any ? "," : "", s->pid, tid);
		any = true;
	}
	closedir(d);
	return any;
}

bool ns_stub__tid_alive(struct ns_stub *s, uint32_t tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%u", s->pid, tid);
	struct stat st;
	return stat(path, &st) == 0;
}

struct ns_err *ns_stub__read_proc(struct ns_stub *s, const char *file, struct ns_strbuf *out)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", s->pid, file);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ns_err_errno(errno, "open %s", path);
	char buf[8192];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		ns_strbuf_append(out, buf, (size_t)n);
	int e = errno;
	close(fd);
	if (n < 0)
		return ns_err_errno(e, "read %s", path);
	return out->oom ? &ns_err_nomem : NULL;
}

/* ---- GNU build-id: the NT_GNU_BUILD_ID note in a PT_NOTE segment ---- */

static bool pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	return pread(fd, buf, len, (off_t)off) == (ssize_t)len;
}

static bool find_build_id(const uint8_t *n, size_t size, struct ns_strbuf *hex)
{
	size_t off = 0;
	while (size - off >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		memcpy(&nh, n + off, sizeof(nh));
		off += sizeof(nh);
		size_t namesz = ((size_t)nh.n_namesz + 3) & ~(size_t)3;
		size_t descsz = ((size_t)nh.n_descsz + 3) & ~(size_t)3;
		if (namesz > size - off || descsz > size - off - namesz)
			return false;
		if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
		    memcmp(n + off, "GNU", 4) == 0 && nh.n_descsz > 0) {
			ns_strbuf_hex(hex, n + off + namesz, nh.n_descsz);
			return true;
		}
		off += namesz + descsz;
	}
	return false;
}

struct ns_err *ns_stub__build_id(struct ns_stub *s, struct ns_strbuf *hex_out)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/exe", s->pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ns_err_errno(errno, "open %s", path);
	struct ns_err *err = NULL;
	Elf64_Ehdr eh;
	if (!pread_all(fd, &eh, sizeof(eh), 0) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr)) {
		err = ns_err_create(NS_ERR_FORMAT, "%s: not a 64-bit ELF file", s->exe);
		goto out;
	}
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		if (!pread_all(fd, &ph, sizeof(ph), eh.e_phoff + (uint64_t)i * sizeof(ph)))
			break;
		if (ph.p_type != PT_NOTE || ph.p_filesz == 0 || ph.p_filesz > (1u << 20))
			continue;
		uint8_t *buf = malloc(ph.p_filesz);
		if (!buf) {
			err = &ns_err_nomem;
			goto out;
		}
		bool found = pread_all(fd, buf, ph.p_filesz, ph.p_offset) &&
		             find_build_id(buf, ph.p_filesz, hex_out);
		free(buf);
		if (found)
			goto out;
	}
	err = ns_err_create(NS_ERR_NOT_FOUND, "%s has no GNU build-id", s->exe);
out:
	close(fd);
	return err;
}
