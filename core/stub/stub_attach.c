/* nonstop-stub --attach PID: load libnonstop-agent.so into a running program.
 *
 * Only the main thread (tid == pid) is seized (PTRACE_SEIZE) and interrupted, once.
 * On it the stub calls dlopen(agent, RTLD_NOW) and then ns_agent_attach(socket name)
 * (core/agent/agent.h), each as an injected function call whose return address is 0:
 * the return faults with SIGSEGV at rip 0, which the stub catches and never delivers.
 * While ns_agent_attach runs, the stub accepts the agent's connection on an abstract
 * AF_UNIX socket and passes it the ring memfd. Then the saved registers and extended
 * state go back exactly as they were and the thread is detached: a thread that was
 * blocked in a system call has orig_rax = the call and rax = -ERESTART*, so the kernel
 * restarts it when the thread resumes (restart_syscall for a sleep, with the time
 * left), and the program never sees EINTR. */
#define _GNU_SOURCE
#include "stub/stub.h"
#include "base/clock.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"

#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif
#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif

enum {
	CALL_TIMEOUT_MS = 5000, /* one injected call */
	STOP_TIMEOUT_MS = 2000, /* the interrupt */
	XSTATE_MAX = 64 * 1024,
	RED_ZONE = 128,
};

#define AGENT_SONAME "libnonstop-agent.so"

struct attach {
	pid_t pid;
	int mem_fd; /* /proc/PID/mem */
	int sig_fd; /* SIGCHLD: the tracee stopped */
	int listen_fd;
	int ctl_fd; /* the agent's connection, once accepted */
	int shm_fd;
	bool seized, stopped;
	bool busy; /* another stub's agent is attached: no fallback */
	struct user_regs_struct saved;
	uint8_t *xstate;
	size_t xstate_len;
	bool have_fpregs; /* no XSAVE regset: the legacy x87/SSE area instead */
	struct user_fpregs_struct fpregs;
	uint64_t scratch; /* where injected calls put their strings */
	char sock_name[64];
};

/* ---- /proc ---- */

// The value of "@key:" in /proc/PID/status (first number), or -1.
static long status_field(pid_t pid, const char *key)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	long v = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static void read_comm(pid_t pid, char *out, size_t cap)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	out[0] = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, out, cap - 1);
	close(fd);
	if (n <= 0)
		n = 0;
	out[n] = 0;
	out[strcspn(out, "\n")] = 0;
}

static struct ns_err *perm_error(pid_t pid, const char *what)
{
	char why[512];
	size_t o = 0;
	long uid = status_field(pid, "Uid");
	FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
	int scope = -1;
	if (f) {
		if (fscanf(f, "%d", &scope) != 1)
			scope = -1;
		fclose(f);
	}
	if (uid >= 0 && (uid_t)uid != geteuid())
		o += (size_t)snprintf(why + o, sizeof(why) - o,
		                      "; the process belongs to another user (uid %ld, you are uid "
		                      "%u)",
		                      uid, (unsigned)geteuid());
	if (scope > 0)
		o += (size_t)snprintf(why + o, sizeof(why) - o,
		                      "; /proc/sys/kernel/yama/ptrace_scope is %d", scope);
	(void)o;
	return ns_err_create(NS_ERR_OS,
	                     "cannot attach to %d: permission denied (%s)%s; attaching needs root "
	                     "or CAP_SYS_PTRACE%s",
	                     pid, what, why, scope > 0 ? " or ptrace_scope 0" : "");
}

static struct ns_err *precheck(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d", pid);
	if (pid <= 0 || access(path, F_OK) != 0 || (kill(pid, 0) != 0 && errno == ESRCH))
		return ns_err_create(NS_ERR_NOT_FOUND, "cannot attach to %d: no such process", pid);
	long tracer = status_field(pid, "TracerPid");
	if (tracer > 0) {
		char comm[32];
		read_comm((pid_t)tracer, comm, sizeof(comm));
		return ns_err_create(NS_ERR_INVALID,
		                     "cannot attach: %d is already traced by PID %ld (%s)", pid,
		                     tracer, comm[0] ? comm : "gdb?");
	}
	char st[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, st, sizeof(st) - 1);
		close(fd);
		st[n > 0 ? n : 0] = 0;
		const char *rp = strrchr(st, ')');
		if (rp && (rp[2] == 'T' || rp[2] == 't'))
			return ns_err_create(NS_ERR_INVALID,
			                     "cannot attach to %d: it is stopped (SIGSTOP or a "
			                     "debugger); continue it first",
			                     pid);
		if (rp && (rp[2] == 'Z' || rp[2] == 'X'))
			return ns_err_create(NS_ERR_NOT_FOUND,
			                     "cannot attach to %d: its main thread has exited",
			                     pid);
	}
	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == EACCES || errno == EPERM)
			return perm_error(pid, "cannot read /proc/PID/exe");
		return ns_err_errno(errno, "cannot attach to %d: %s", pid, path);
	}
	Elf64_Ehdr eh;
	ssize_t n = pread(fd, &eh, sizeof(eh), 0);
	close(fd);
	if (n < (ssize_t)EI_NIDENT || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
		return ns_err_create(NS_ERR_UNSUPPORTED, "cannot attach to %d: not an ELF program",
		                     pid);
	if (n != sizeof(eh) || eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64)
		return ns_err_create(NS_ERR_UNSUPPORTED,
		                     "cannot attach to %d: not a 64-bit x86 process (ELF class %u, "
		                     "machine %u); nonstop supports x86-64 only",
		                     pid, eh.e_ident[EI_CLASS], n == sizeof(eh) ? eh.e_machine : 0);
	return NULL;
}

/* ---- symbols in the target's shared objects ---- */

struct mapped_obj {
	bool found;
	uint64_t base;   /* start of the mapping at file offset 0 */
	uint64_t lo, hi; /* that mapping (for /proc/PID/map_files) */
	char path[PATH_MAX];
};

static bool is_libc(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	return strcmp(b, "libc.so.6") == 0 || (strncmp(b, "libc-", 5) == 0 && strstr(b, ".so"));
}

static bool is_libdl(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	return strncmp(b, "libdl.so", 8) == 0 || strncmp(b, "libdl-", 6) == 0;
}

static bool is_agent(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	return strcmp(b, AGENT_SONAME) == 0;
}

static struct ns_err *find_mapping(pid_t pid, bool (*match)(const char *), struct mapped_obj *out)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return ns_err_errno(errno, "cannot open %s", path);
	memset(out, 0, sizeof(*out));
	char line[PATH_MAX + 256];
	while (fgets(line, sizeof(line), f)) {
		uint64_t lo, hi, off;
		int name_at = 0;
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %*s %" SCNx64 " %*s %*s %n", &lo, &hi,
		           &off, &name_at) != 3 ||
		    !name_at)
			continue;
		char *name = line + name_at;
		name[strcspn(name, "\n")] = 0;
		char *del = strstr(name, " (deleted)");
		if (del)
			*del = 0;
		if (name[0] != '/' || !match(name))
			continue;
		if (out->found && strcmp(out->path, name) != 0)
			continue; // the first object that matches
		if (off == 0 && (!out->found || lo < out->base)) {
			out->found = true;
			out->base = out->lo = lo;
			out->hi = hi;
			snprintf(out->path, sizeof(out->path), "%s", name);
		}
	}
	fclose(f);
	return NULL;
}

static bool pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	return len == 0 || pread(fd, buf, len, (off_t)off) == (ssize_t)len;
}

// Open the object as the target sees it: its mapping, its root, or the plain path.
static int open_obj(pid_t pid, const struct mapped_obj *m)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, pid, m->lo, m->hi);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	snprintf(p, sizeof(p), "/proc/%d/root%s", pid, m->path);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	return open(m->path, O_RDONLY | O_CLOEXEC);
}

/* The runtime address of dynamic symbol @name of mapped object @m, 0 if absent. */
static struct ns_err *dyn_symbol(pid_t pid, const struct mapped_obj *m, const char *name,
                                 uint64_t *out)
{
	*out = 0;
	int fd = open_obj(pid, m);
	if (fd < 0)
		return ns_err_errno(errno, "cannot open %s", m->path);
	struct ns_err *err = NULL;
	Elf64_Shdr *sh = NULL;
	Elf64_Sym *syms = NULL;
	char *strs = NULL;
	Elf64_Ehdr eh;
	if (!pread_all(fd, &eh, sizeof(eh), 0) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_shentsize != sizeof(Elf64_Shdr) ||
	    eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_shnum == 0 || eh.e_shnum > 4096) {
		err = ns_err_create(NS_ERR_FORMAT, "%s: not a 64-bit ELF object", m->path);
		goto out;
	}
	// The load bias: the first PT_LOAD is what is mapped at file offset 0.
	uint64_t first_vaddr = UINT64_MAX;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		if (!pread_all(fd, &ph, sizeof(ph), eh.e_phoff + (uint64_t)i * sizeof(ph)))
			break;
		if (ph.p_type == PT_LOAD && ph.p_vaddr - ph.p_offset < first_vaddr)
			first_vaddr = ph.p_vaddr - ph.p_offset;
	}
	if (first_vaddr == UINT64_MAX) {
		err = ns_err_create(NS_ERR_FORMAT, "%s: no PT_LOAD", m->path);
		goto out;
	}
	uint64_t bias = m->base - (first_vaddr & ~(uint64_t)0xfff);
	sh = calloc(eh.e_shnum, sizeof(*sh));
	if (!sh || !pread_all(fd, sh, (size_t)eh.e_shnum * sizeof(*sh), eh.e_shoff)) {
		err = ns_err_create(NS_ERR_FORMAT, "%s: cannot read section headers", m->path);
		goto out;
	}
	for (unsigned i = 0; i < eh.e_shnum; i++) {
		if (sh[i].sh_type != SHT_DYNSYM || sh[i].sh_link >= eh.e_shnum ||
		    sh[i].sh_entsize != sizeof(Elf64_Sym) || sh[i].sh_size > (64u << 20))
			continue;
		const Elf64_Shdr *ss = &sh[sh[i].sh_link];
		if (ss->sh_size > (64u << 20))
			continue;
		syms = malloc(sh[i].sh_size + 1);
		strs = malloc(ss->sh_size + 1);
		if (!syms || !strs || !pread_all(fd, syms, sh[i].sh_size, sh[i].sh_offset) ||
		    !pread_all(fd, strs, ss->sh_size, ss->sh_offset)) {
			err = ns_err_create(NS_ERR_FORMAT, "%s: cannot read .dynsym", m->path);
			goto out;
		}
		strs[ss->sh_size] = 0;
		size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
		for (size_t j = 0; j < n; j++) {
			const Elf64_Sym *y = &syms[j];
			if (y->st_name >= ss->sh_size || y->st_shndx == SHN_UNDEF ||
			    ELF64_ST_TYPE(y->st_info) != STT_FUNC ||
			    strcmp(strs + y->st_name, name) != 0)
				continue;
			*out = bias + y->st_value;
			goto out;
		}
		break;
	}
out:
	free(sh);
	free(syms);
	free(strs);
	close(fd);
	return err;
}

/* ---- ptrace ---- */

static struct ns_err *mem_write(struct attach *a, uint64_t addr, const void *buf, size_t len)
{
	if (pwrite(a->mem_fd, buf, len, (off_t)addr) != (ssize_t)len)
		return ns_err_errno(errno, "cannot write the target's stack at 0x%" PRIx64, addr);
	return NULL;
}

static void send_shm(struct attach *a)
{
	int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 || cr.pid != a->pid) {
		close(fd); // someone else found the abstract name
		return;
	}
	struct ns_agent_msg_hdr h = {.type = NS_AGENT_MSG_SHM, .size = sizeof(h)};
	struct iovec iov = {.iov_base = &h, .iov_len = sizeof(h)};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	memset(&cbuf, 0, sizeof(cbuf));
	struct msghdr mh = {.msg_iov = &iov,
	                    .msg_iovlen = 1,
	                    .msg_control = cbuf.buf,
	                    .msg_controllen = sizeof(cbuf.buf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &a->shm_fd, sizeof(int));
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) != sizeof(h)) {
		close(fd);
		return;
	}
	a->ctl_fd = fd;
	close(a->listen_fd);
	a->listen_fd = -1;
}

/* The next ptrace stop (or exit) of the thread, within @deadline_us; meanwhile serve
 * the agent's connection. Returns false on timeout. */
static bool wait_stop(struct attach *a, int64_t deadline_us, int *status)
{
	for (;;) {
		pid_t r = waitpid(a->pid, status, __WALL | WNOHANG);
		if (r == a->pid)
			return true;
		int64_t left = (deadline_us - ns_mono_us()) / 1000;
		if (left <= 0)
			return false;
		struct pollfd pf[2] = {{.fd = a->sig_fd, .events = POLLIN},
		                       {.fd = a->listen_fd, .events = POLLIN}};
		// SIGCHLD wakes us at once; the timeout only covers a lost wake-up.
		int n = poll(pf, a->listen_fd >= 0 ? 2 : 1, left < 20 ? (int)left + 1 : 20);
		if (n > 0 && (pf[0].revents & POLLIN)) {
			struct signalfd_siginfo si;
			while (read(a->sig_fd, &si, sizeof(si)) == sizeof(si))
				;
		}
		if (n > 0 && a->listen_fd >= 0 && (pf[1].revents & POLLIN))
			send_shm(a);
	}
}

static struct ns_err *gone_error(struct attach *a, int st)
{
	a->seized = a->stopped = false;
	if (WIFEXITED(st))
		return ns_err_create(NS_ERR_CLOSED, "%d exited (code %d) during the attach", a->pid,
		                     WEXITSTATUS(st));
	return ns_err_create(NS_ERR_CLOSED, "%d was killed by signal %d during the attach", a->pid,
	                     WTERMSIG(st));
}

/* Stop the running thread again (after a timeout). */
static void reinterrupt(struct attach *a)
{
	if (ptrace(PTRACE_INTERRUPT, a->pid, 0, 0) != 0)
		return;
	int st;
	int64_t deadline = ns_mono_us() + 1000 * 1000;
	while (wait_stop(a, deadline, &st)) {
		if (!WIFSTOPPED(st)) {
			a->seized = a->stopped = false;
			return;
		}
		if ((st >> 16) == PTRACE_EVENT_STOP) {
			a->stopped = true;
			return;
		}
		// A signal on its way to the program: deliver it, then stop.
		ptrace(PTRACE_CONT, a->pid, 0, (void *)(uintptr_t)WSTOPSIG(st));
	}
}

/* Call @fn(@a0, @a1) in the stopped thread; its return value in *@ret. */
static struct ns_err *call(struct attach *a, const char *what, uint64_t fn, uint64_t a0,
                           uint64_t a1, uint64_t *ret)
{
	// Below the red zone and our strings: a return address of 0, so that at the
	// function's entry (rsp + 8) % 16 == 0.
	uint64_t sp = ((a->scratch - 64) & ~(uint64_t)15) - 8;
	uint64_t zero = 0;
	struct ns_err *err = mem_write(a, sp, &zero, sizeof(zero));
	if (err)
		return err;
	struct user_regs_struct r = a->saved;
	r.rip = fn;
	r.rdi = a0;
	r.rsi = a1;
	r.rsp = sp;
	r.rax = 0;
	r.orig_rax = (unsigned long long)-1; // no syscall restart around the injected code
	r.eflags &= ~0x400ull;               // DF clear, as the ABI wants at a call
	if (ptrace(PTRACE_SETREGS, a->pid, 0, &r) != 0)
		return ns_err_errno(errno, "PTRACE_SETREGS");
	if (ptrace(PTRACE_CONT, a->pid, 0, 0) != 0)
		return ns_err_errno(errno, "PTRACE_CONT");
	a->stopped = false;
	int64_t deadline = ns_mono_us() + CALL_TIMEOUT_MS * 1000;
	int st;
	for (;;) {
		if (!wait_stop(a, deadline, &st)) {
			reinterrupt(a);
			return ns_err_create(NS_ERR_TIMEOUT,
			                     "%s did not return within %d s in %d (is the thread "
			                     "holding a lock dlopen needs?)",
			                     what, CALL_TIMEOUT_MS / 1000, a->pid);
		}
		if (!WIFSTOPPED(st))
			return gone_error(a, st);
		int sig = WSTOPSIG(st);
		if ((st >> 16) == PTRACE_EVENT_STOP) {
			ptrace(PTRACE_CONT, a->pid, 0, 0); // a group-stop: run on
			continue;
		}
		if (sig == SIGSEGV) {
			struct user_regs_struct now;
			if (ptrace(PTRACE_GETREGS, a->pid, 0, &now) != 0)
				return ns_err_errno(errno, "PTRACE_GETREGS");
			a->stopped = true;
			if (now.rip == 0) {
				*ret = now.rax;
				return NULL;
			}
			return ns_err_create(
			        NS_ERR_FAULT,
			        "%s crashed in %d at 0x%llx (the fault is not delivered)", what,
			        a->pid, now.rip);
		}
		// The program's own signal arrived meanwhile: deliver it (its handler runs
		// on top of the injected frame and returns into it).
		if (ptrace(PTRACE_CONT, a->pid, 0, (void *)(uintptr_t)sig) != 0)
			return ns_err_errno(errno, "PTRACE_CONT");
	}
}

static struct ns_err *read_string(struct attach *a, uint64_t addr, char *out, size_t cap)
{
	ssize_t n = pread(a->mem_fd, out, cap - 1, (off_t)addr);
	if (n <= 0)
		return ns_err_errno(errno, "cannot read the target's memory at 0x%" PRIx64, addr);
	out[n] = 0;
	return NULL;
}

/* Put the thread back exactly as it was and let it go. */
static void restore_detach(struct attach *a)
{
	if (a->seized && a->stopped) {
		if (ptrace(PTRACE_SETREGS, a->pid, 0, &a->saved) != 0)
			ns_log(NS_LOG_WARN, "restoring registers of %d: %s", a->pid,
			       strerror(errno));
		if (a->xstate_len) {
			struct iovec iov = {.iov_base = a->xstate, .iov_len = a->xstate_len};
			if (ptrace(PTRACE_SETREGSET, a->pid, (void *)NT_X86_XSTATE, &iov) != 0)
				ns_log(NS_LOG_WARN, "restoring the FPU state of %d: %s", a->pid,
				       strerror(errno));
		}
		if (a->have_fpregs && ptrace(PTRACE_SETFPREGS, a->pid, 0, &a->fpregs) != 0)
			ns_log(NS_LOG_WARN, "restoring the FPU state of %d: %s", a->pid,
			       strerror(errno));
	}
	if (a->seized && ptrace(PTRACE_DETACH, a->pid, 0, 0) != 0)
		ns_log(NS_LOG_WARN, "detaching from %d: %s", a->pid, strerror(errno));
	a->seized = a->stopped = false;
}

static struct ns_err *stop_thread(struct attach *a)
{
	if (ptrace(PTRACE_SEIZE, a->pid, 0, 0) != 0) {
		int e = errno;
		if (e == EPERM)
			return perm_error(a->pid, "ptrace");
		if (e == ESRCH)
			return ns_err_create(NS_ERR_NOT_FOUND,
			                     "cannot attach to %d: no such process", a->pid);
		return ns_err_errno(e, "cannot attach to %d: PTRACE_SEIZE", a->pid);
	}
	a->seized = true;
	if (ptrace(PTRACE_INTERRUPT, a->pid, 0, 0) != 0)
		return ns_err_errno(errno, "PTRACE_INTERRUPT");
	int64_t deadline = ns_mono_us() + STOP_TIMEOUT_MS * 1000;
	int st;
	for (;;) {
		if (!wait_stop(a, deadline, &st))
			return ns_err_create(NS_ERR_TIMEOUT, "%d did not stop within %d s", a->pid,
			                     STOP_TIMEOUT_MS / 1000);
		if (!WIFSTOPPED(st))
			return gone_error(a, st);
		if ((st >> 16) == PTRACE_EVENT_STOP)
			break;
		// A signal-delivery-stop came first: deliver it; the interrupt follows.
		if (ptrace(PTRACE_CONT, a->pid, 0, (void *)(uintptr_t)WSTOPSIG(st)) != 0)
			return ns_err_errno(errno, "PTRACE_CONT");
	}
	a->stopped = true;
	if (ptrace(PTRACE_GETREGS, a->pid, 0, &a->saved) != 0)
		return ns_err_errno(errno, "PTRACE_GETREGS");
	// Injected code uses SSE/AVX registers the interrupted code may have live.
	a->xstate = calloc(1, XSTATE_MAX);
	if (!a->xstate)
		return &ns_err_nomem;
	struct iovec iov = {.iov_base = a->xstate, .iov_len = XSTATE_MAX};
	if (ptrace(PTRACE_GETREGSET, a->pid, (void *)NT_X86_XSTATE, &iov) == 0) {
		a->xstate_len = iov.iov_len;
	} else {
		if (ptrace(PTRACE_GETFPREGS, a->pid, 0, &a->fpregs) != 0)
			return ns_err_errno(errno, "PTRACE_GETFPREGS");
		a->have_fpregs = true;
	}
	return NULL;
}

static struct ns_err *load_agent(struct attach *a, const char *agent, uint64_t *attach_fn)
{
	struct mapped_obj m;
	struct ns_err *err = find_mapping(a->pid, is_agent, &m);
	if (err)
		return err;
	if (m.found) {
		// A previous stub loaded it: never a second copy.
		ns_log(NS_LOG_INFO, "agent already loaded in %d (%s)", a->pid, m.path);
		return dyn_symbol(a->pid, &m, "ns_agent_attach", attach_fn);
	}
	uint64_t dlopen_fn = 0, dlerror_fn = 0;
	if ((err = find_mapping(a->pid, is_libc, &m)))
		return err;
	if (m.found && (err = dyn_symbol(a->pid, &m, "dlopen", &dlopen_fn)))
		return err;
	if (m.found && dlopen_fn && (err = dyn_symbol(a->pid, &m, "dlerror", &dlerror_fn)))
		return err;
	if (!dlopen_fn) { // glibc before 2.34: libdl, if the program links it
		if ((err = find_mapping(a->pid, is_libdl, &m)))
			return err;
		if (m.found && (err = dyn_symbol(a->pid, &m, "dlopen", &dlopen_fn)))
			return err;
		if (m.found && dlopen_fn && (err = dyn_symbol(a->pid, &m, "dlerror", &dlerror_fn)))
			return err;
	}
	if (!dlopen_fn)
		return ns_err_create(NS_ERR_UNSUPPORTED,
		                     "cannot load the agent into %d: no dlopen in the target "
		                     "(static binary?)",
		                     a->pid);
	size_t len = strlen(agent) + 1;
	uint64_t str = (a->scratch - len) & ~(uint64_t)15;
	if ((err = mem_write(a, str, agent, len)))
		return err;
	uint64_t saved_scratch = a->scratch;
	a->scratch = str;
	uint64_t handle = 0;
	err = call(a, "dlopen", dlopen_fn, str, RTLD_NOW, &handle);
	a->scratch = saved_scratch;
	if (err)
		return err;
	if (!handle) {
		char msg[512] = "unknown error";
		uint64_t p = 0;
		if (dlerror_fn && !call(a, "dlerror", dlerror_fn, 0, 0, &p) && p)
			read_string(a, p, msg, sizeof(msg));
		return ns_err_create(NS_ERR_INVALID, "cannot load the agent into %d: dlopen: %s",
		                     a->pid, msg);
	}
	if ((err = find_mapping(a->pid, is_agent, &m)))
		return err;
	if (!m.found)
		return ns_err_create(NS_ERR_NOT_FOUND,
		                     "dlopen succeeded but %s is not mapped in %d", AGENT_SONAME,
		                     a->pid);
	return dyn_symbol(a->pid, &m, "ns_agent_attach", attach_fn);
}

static struct ns_err *start_agent(struct attach *a, uint64_t fn)
{
	size_t len = strlen(a->sock_name) + 1;
	uint64_t str = (a->scratch - len) & ~(uint64_t)15;
	struct ns_err *err = mem_write(a, str, a->sock_name, len);
	if (err)
		return err;
	uint64_t saved_scratch = a->scratch;
	a->scratch = str;
	uint64_t rc = 0;
	err = call(a, "ns_agent_attach", fn, str, 0, &rc);
	a->scratch = saved_scratch;
	if (err)
		return err;
	int ret = (int)(uint32_t)rc;
	if (ret == -EBUSY) {
		a->busy = true;
		return ns_err_create(NS_ERR_INVALID,
		                     "cannot attach to %d: another nonstop-stub is attached to it",
		                     a->pid);
	}
	if (ret != 0)
		return ns_err_create(NS_ERR_OS,
		                     "cannot attach to %d: the agent could not start: %s", a->pid,
		                     strerror(-ret));
	if (a->ctl_fd < 0)
		return ns_err_create(NS_ERR_PROTOCOL, "the agent in %d never connected", a->pid);
	return NULL;
}

static struct ns_err *listen_abstract(struct attach *a)
{
	uint64_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint64_t)ns_mono_us() ^ ((uint64_t)getpid() << 32);
	snprintf(a->sock_name, sizeof(a->sock_name), NS_AGENT_ATTACH_PREFIX "%d-%016" PRIx64,
	         getpid(), rnd);
	a->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (a->listen_fd < 0)
		return ns_err_errno(errno, "socket");
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	size_t n = strlen(a->sock_name);
	memcpy(sa.sun_path + 1, a->sock_name, n);
	if (bind(a->listen_fd, (struct sockaddr *)&sa,
	         (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) != 0 ||
	    listen(a->listen_fd, 1) != 0)
		return ns_err_errno(errno, "cannot listen on the agent's socket");
	return NULL;
}

/* The agent cannot be loaded: trace every thread and catch the traps in the stub. */
static struct ns_err *attach_ptrace_tier(struct ns_stub *s, pid_t pid, const char *reason,
                                         int64_t pause_us)
{
	s->pid = pid;
	s->attached = true;
	struct ns_err *err = ns_stub__pt_attach(s, pid, reason);
	if (err) {
		ns_stub__pt_detach(s);
		return ns_err_wrap(err, "cannot attach to %d (ptrace tier, because %s)", pid,
		                   reason);
	}
	fprintf(stderr, "nonstop-stub: attached to %d in %.1f ms (ptrace tier: %s)\n", pid,
	        (double)pause_us / 1000.0, reason);
	s->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	ssize_t len = readlink(path, s->exe, sizeof(s->exe) - 1);
	s->exe[len > 0 ? len : 0] = 0;
	return NULL;
}

struct ns_err *ns_stub__attach(struct ns_stub *s)
{
	pid_t pid = s->attach_pid;
	struct ns_err *err = precheck(pid);
	if (err)
		return err;
	char agent[PATH_MAX];
	if ((err = ns_stub__agent_rings(s)))
		return err;
	if (!ns_stub__agent_path(s, agent, sizeof(agent)))
		return attach_ptrace_tier(s, pid, "agent library not found", 0);

	struct attach a = {.pid = pid,
	                   .mem_fd = -1,
	                   .sig_fd = -1,
	                   .listen_fd = -1,
	                   .ctl_fd = -1,
	                   .shm_fd = s->memfd};
	sigset_t chld, old_mask;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old_mask);
	a.sig_fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	int64_t t0 = 0, t1 = 0;
	bool fallback = false;
	if (a.sig_fd < 0) {
		err = ns_err_errno(errno, "signalfd");
		goto out;
	}
	if ((err = listen_abstract(&a)))
		goto out;
	t0 = ns_mono_us();
	if ((err = stop_thread(&a)))
		goto out;
	a.mem_fd = open(path, O_RDWR | O_CLOEXEC);
	if (a.mem_fd < 0) {
		err = ns_err_errno(errno, "cannot open %s", path);
		goto out;
	}
	a.scratch = (a.saved.rsp - RED_ZONE - 512) & ~(uint64_t)15;
	uint64_t attach_fn = 0;
	// From here on, a failure to load or start the agent falls back to the ptrace tier.
	fallback = true;
	if ((err = load_agent(&a, agent, &attach_fn)))
		goto out;
	if (!attach_fn) {
		err = ns_err_create(NS_ERR_NOT_FOUND,
		                    "the agent in %d has no ns_agent_attach (an older nonstop's "
		                    "agent?)",
		                    pid);
		goto out;
	}
	err = start_agent(&a, attach_fn);
out:
	restore_detach(&a);
	t1 = ns_mono_us();
	if (a.sig_fd >= 0)
		close(a.sig_fd);
	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	if (a.mem_fd >= 0)
		close(a.mem_fd);
	if (a.listen_fd >= 0)
		close(a.listen_fd);
	free(a.xstate);
	if (err) {
		if (a.ctl_fd >= 0)
			close(a.ctl_fd); // the agent sees EOF and stays idle
		if (!fallback || a.busy)
			return err;
		// The agent cannot run in this program: the stub catches the traps itself.
		const char *why = err->msg;
		const char *colon = strstr(why, ": ");
		if (strncmp(why, "cannot load the agent into ", 27) == 0 && colon)
			why = colon + 2;
		char reason[256];
		snprintf(reason, sizeof(reason), "%s", why);
		ns_err_destroy(err);
		return attach_ptrace_tier(s, pid, reason, t1 - t0);
	}
	fprintf(stderr, "nonstop-stub: attached to %d in %.1f ms (thread %d paused once)\n", pid,
	        (double)(t1 - t0) / 1000.0, pid);
	s->pid = pid;
	s->attached = true;
	s->ctl_fd = a.ctl_fd;
	s->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	ssize_t len = readlink(path, s->exe, sizeof(s->exe) - 1);
	s->exe[len > 0 ? len : 0] = 0;
	return NULL;
}
