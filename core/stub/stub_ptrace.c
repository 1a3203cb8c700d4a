/* The ptrace tier: tracepoints without the agent (a static binary, no dlopen, a failed
 * injection). Every thread of the program is seized (PTRACE_SEIZE, PTRACE_O_TRACECLONE,
 * never PTRACE_O_EXITKILL: the program outlives the stub). A tracepoint is an int3
 * written through /proc/PID/mem. The thread that hits it stops alone; the stub reads
 * its registers, evaluates the condition and collects the frame with the agent's own
 * code (agent/collect.h, memory through process_vm_readv), then resumes the thread:
 * jmp/jcc/call/ret are emulated, anything else runs from an out-of-line relocated copy
 * in a page the stub maps inside the program (an injected mmap syscall) within 2 GiB of
 * the code. Every other thread keeps running.
 *
 * A watchdog process (forked here, its own session) holds the list of patched
 * addresses and their original bytes (a pipe from the stub, updated before each int3
 * goes in and after each comes out). If the stub dies, the pipe closes and the
 * watchdog puts the original bytes back through the stub's /proc/PID/mem descriptor,
 * so that a later hit cannot kill the program with SIGTRAP. */
#define _GNU_SOURCE
#include "stub/stub.h"
#include "base/clock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/collect.h"
#include "arch/arch.h"
#include "base/log.h"
#include "frame/frame.h"

#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

enum {
	ORIG_MAX = 16,
	SLOT_SIZE = 32,
	SLOT_PAGE = 64 * 1024,
	SLOT_REACH = 0x70000000, /* as the agent: well inside +-2 GiB */
	WAIT_MS = 2000,
};

struct pt_tp {
	struct ns_rsp_tracepoint def; /* owned copy */
	uint64_t hits, frames;
	bool cond_err_sent;
};

struct pt_site {
	uint64_t addr;
	uint8_t orig[ORIG_MAX];
	size_t orig_len;
	struct ns_arch_insn insn;
	uint64_t slot; /* out-of-line copy, 0 if none */
	struct pt_tp **tps;
	unsigned ntps;
};

struct pt_thread {
	pid_t tid;
	uint64_t seq;
};

struct slot_page {
	uint64_t base;
	size_t used;
};

/* A watchdog record: install (orig bytes at addr), remove, quit. */
struct wd_rec {
	uint8_t op; /* 'I', 'R', 'Q' */
	uint8_t len;
	uint8_t pad[6];
	uint64_t addr;
	uint8_t orig[ORIG_MAX];
};

struct ns_stub_pt {
	pid_t pid;
	int mem_fd, sig_fd;
	int wd_fd;
	pid_t wd_pid;
	bool held; /* launched with --hold: the main thread waits at its exec stop */
	struct pt_site **sites;
	size_t nsites;
	uint64_t *removed; /* addresses that held an int3 of ours (late traps rewind) */
	size_t nremoved;
	struct pt_thread *threads;
	size_t nthreads;
	struct slot_page *pages;
	size_t npages;
	uint64_t syscall_insn; /* a "syscall" (0f 05) in the program's code, 0: not found */
	uint8_t *frame;        /* NS_AGENT_MAX_FRAME bytes */
};

/* ---- threads ---- */

static struct pt_thread *thread_find(struct ns_stub_pt *pt, pid_t tid)
{
	for (size_t i = 0; i < pt->nthreads; i++)
		if (pt->threads[i].tid == tid)
			return &pt->threads[i];
	return NULL;
}

static struct pt_thread *thread_add(struct ns_stub_pt *pt, pid_t tid)
{
	struct pt_thread *t = thread_find(pt, tid);
	if (t)
		return t;
	struct pt_thread *n = realloc(pt->threads, (pt->nthreads + 1) * sizeof(*n));
	if (!n)
		return NULL;
	pt->threads = n;
	t = &n[pt->nthreads++];
	t->tid = tid;
	t->seq = 0;
	return t;
}

static void thread_del(struct ns_stub_pt *pt, pid_t tid)
{
	for (size_t i = 0; i < pt->nthreads; i++)
		if (pt->threads[i].tid == tid) {
			pt->threads[i] = pt->threads[--pt->nthreads];
			return;
		}
}

/* ---- memory ---- */

static size_t read_partial(struct ns_stub_pt *pt, void *dst, uint64_t addr, size_t len)
{
	// process_vm_readv stops at the first remote element it cannot read: one
	// element per page gives the readable prefix.
	struct iovec remote[32];
	size_t done = 0;
	while (done < len) {
		unsigned n = 0;
		uint64_t a = addr + done;
		size_t chunk_total = 0;
		while (n < 32 && done + chunk_total < len) {
			size_t in_page = 4096 - (size_t)(a & 4095);
			size_t c = len - done - chunk_total < in_page ? len - done - chunk_total
			                                              : in_page;
			remote[n].iov_base = (void *)(uintptr_t)a;
			remote[n].iov_len = c;
			n++;
			a += c;
			chunk_total += c;
		}
		struct iovec local = {.iov_base = (uint8_t *)dst + done, .iov_len = chunk_total};
		ssize_t r = process_vm_readv(pt->pid, &local, 1, remote, n, 0);
		if (r <= 0)
			break;
		done += (size_t)r;
		if ((size_t)r < chunk_total)
			break;
	}
	return done;
}

static int read_all(struct ns_stub_pt *pt, void *dst, uint64_t addr, size_t len)
{
	struct iovec local = {.iov_base = dst, .iov_len = len};
	struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = len};
	if (len && process_vm_readv(pt->pid, &local, 1, &remote, 1, 0) == (ssize_t)len)
		return 0;
	return read_partial(pt, dst, addr, len) == len ? 0 : -1;
}

static struct ns_err *write_mem(struct ns_stub_pt *pt, uint64_t addr, const void *buf, size_t len)
{
	ssize_t n;
	do
		n = pwrite(pt->mem_fd, buf, len, (off_t)addr);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)len)
		return ns_err_errno(n < 0 ? errno : EIO,
		                    "cannot write the program's memory at 0x%" PRIx64, addr);
	return NULL;
}

/* ---- the watchdog ---- */

static void wd_send(struct ns_stub_pt *pt, const struct wd_rec *r)
{
	if (pt->wd_fd < 0)
		return;
	ssize_t n;
	do
		n = write(pt->wd_fd, r, sizeof(*r));
	while (n < 0 && errno == EINTR);
	if (n != sizeof(*r))
		ns_log(NS_LOG_WARN, "ptrace tier: the watchdog is gone");
}

static void watchdog_main(int rfd, int mem_fd)
{
	setsid();
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	int null = open("/dev/null", O_RDWR);
	long maxfd = sysconf(_SC_OPEN_MAX);
	if (maxfd < 0 || maxfd > 65536)
		maxfd = 65536;
	for (int fd = 0; fd < maxfd; fd++)
		if (fd != rfd && fd != mem_fd && fd != 2 && fd != null)
			close(fd);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		if (null > 2)
			close(null);
	}
	struct wd_rec *list = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		struct wd_rec r;
		ssize_t got;
		do
			got = read(rfd, &r, sizeof(r));
		while (got < 0 && errno == EINTR);
		if (got != sizeof(r))
			break; // the stub is gone
		if (r.op == 'Q')
			_exit(0);
		size_t i;
		for (i = 0; i < n && list[i].addr != r.addr; i++)
			;
		if (r.op == 'R') {
			if (i < n)
				list[i] = list[--n];
		} else if (r.op == 'I') {
			if (i == n) {
				if (n == cap) {
					size_t nc = cap ? cap * 2 : 64;
					struct wd_rec *nl = realloc(list, nc * sizeof(*nl));
					if (!nl)
						continue;
					list = nl;
					cap = nc;
				}
				n++;
			}
			list[i] = r;
		}
	}
	// The stub died: no tracer catches the int3s any more.
	for (size_t i = 0; i < n; i++)
		if (pwrite(mem_fd, list[i].orig, 1, (off_t)list[i].addr) != 1)
			continue;
	if (n) {
		char msg[128];
		int len =
		        snprintf(msg, sizeof(msg),
		                 "nonstop-stub watchdog: the stub died; %zu tracepoint%s removed\n",
		                 n, n == 1 ? "" : "s");
		if (len > 0 && write(2, msg, (size_t)len) < 0)
			_exit(0);
	}
	_exit(0);
}

static struct ns_err *watchdog_start(struct ns_stub_pt *pt)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return ns_err_errno(errno, "pipe");
	pid_t w = fork();
	if (w < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return ns_err_errno(e, "fork (watchdog)");
	}
	if (w == 0) {
		close(p[1]);
		watchdog_main(p[0], pt->mem_fd);
	}
	close(p[0]);
	pt->wd_fd = p[1];
	pt->wd_pid = w;
	return NULL;
}

static void watchdog_quit(struct ns_stub_pt *pt)
{
	struct wd_rec r = {.op = 'Q'};
	wd_send(pt, &r);
	if (pt->wd_fd >= 0)
		close(pt->wd_fd);
	pt->wd_fd = -1;
	if (pt->wd_pid > 0)
		waitpid(pt->wd_pid, NULL, WNOHANG);
}

/* ---- start ---- */

static struct ns_err *pt_create(struct ns_stub *s, pid_t pid, const char *reason)
{
	struct ns_stub_pt *pt = calloc(1, sizeof(*pt));
	if (!pt)
		return &ns_err_nomem;
	pt->pid = pid;
	pt->mem_fd = pt->sig_fd = pt->wd_fd = -1;
	s->pt = pt;
	snprintf(s->tier_reason, sizeof(s->tier_reason), "%s", reason);
	pt->frame = malloc(NS_AGENT_MAX_FRAME);
	if (!pt->frame)
		return &ns_err_nomem;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	pt->mem_fd = open(path, O_RDWR | O_CLOEXEC);
	if (pt->mem_fd < 0)
		return ns_err_errno(errno, "cannot open %s", path);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	pt->sig_fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (pt->sig_fd < 0)
		return ns_err_errno(errno, "signalfd");
	return watchdog_start(pt);
}

struct ns_err *ns_stub__pt_start_held(struct ns_stub *s, pid_t pid, const char *reason)
{
	struct ns_err *err = pt_create(s, pid, reason);
	if (err)
		return err;
	if (!thread_add(s->pt, pid))
		return &ns_err_nomem;
	s->pt->held = true;
	if (ptrace(PTRACE_SETOPTIONS, pid, 0, (void *)(uintptr_t)PTRACE_O_TRACECLONE) != 0)
		return ns_err_errno(errno, "PTRACE_SETOPTIONS");
	return NULL;
}

struct ns_err *ns_stub__pt_attach(struct ns_stub *s, pid_t pid, const char *reason)
{
	struct ns_err *err = pt_create(s, pid, reason);
	if (err)
		return err;
	// Seize every thread; a thread created meanwhile by a seized one is traced
	// already (TRACECLONE), one created by a thread not yet seized shows up in the
	// next listing.
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	for (int pass = 0; pass < 100; pass++) {
		DIR *d = opendir(path);
		if (!d)
			return ns_err_errno(errno, "cannot list the threads of %d", pid);
		bool added = false;
		struct dirent *de;
		while ((de = readdir(d))) {
			char *end;
			long tid = strtol(de->d_name, &end, 10);
			if (*end || end == de->d_name || thread_find(s->pt, (pid_t)tid))
				continue;
			if (ptrace(PTRACE_SEIZE, (pid_t)tid, 0,
			           (void *)(uintptr_t)PTRACE_O_TRACECLONE) != 0) {
				if (errno == ESRCH)
					continue; // exited meanwhile
				int e = errno;
				closedir(d);
				return ns_err_errno(e, "cannot seize thread %ld of %d", tid, pid);
			}
			if (!thread_add(s->pt, (pid_t)tid)) {
				closedir(d);
				return &ns_err_nomem;
			}
			added = true;
		}
		closedir(d);
		if (!added)
			break;
	}
	return NULL;
}

int ns_stub__pt_fd(const struct ns_stub *s)
{
	return s->pt ? s->pt->sig_fd : -1;
}

/* ---- events ---- */

static void rewind_or_pass(struct ns_stub *s, pid_t tid, struct user_regs_struct *r)
{
	struct ns_stub_pt *pt = s->pt;
	uint64_t addr = r->rip - 1;
	for (size_t i = 0; i < pt->nremoved; i++) {
		if (pt->removed[i] != addr)
			continue;
		uint8_t b;
		if (read_all(pt, &b, addr, 1) == 0 && b != 0xcc) {
			// It trapped on an int3 that was removed since: run the original
			// instruction that is back in place.
			r->rip = addr;
			ptrace(PTRACE_SETREGS, tid, 0, r);
			ptrace(PTRACE_CONT, tid, 0, 0);
			return;
		}
	}
	ptrace(PTRACE_CONT, tid, 0, (void *)(uintptr_t)SIGTRAP);
}

static struct pt_site *site_find(struct ns_stub_pt *pt, uint64_t addr)
{
	for (size_t i = 0; i < pt->nsites; i++)
		if (pt->sites[i]->addr == addr)
			return pt->sites[i];
	return NULL;
}

struct hit {
	struct ns_stub_pt *pt;
	const struct user_regs_struct *r;
	uint64_t addr;
};

static int src_read_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	struct hit *h = ctx;
	return read_all(h->pt, dst, addr, len);
}

static size_t src_read_partial(void *ctx, void *dst, uint64_t addr, size_t len)
{
	struct hit *h = ctx;
	return read_partial(h->pt, dst, addr, len);
}

static int src_read_reg(void *ctx, unsigned regno, uint64_t *val)
{
	struct hit *h = ctx;
	const struct user_regs_struct *r = h->r;
	switch (regno) {
	case NS_REG_RAX:
		*val = r->rax;
		return 0;
	case NS_REG_RBX:
		*val = r->rbx;
		return 0;
	case NS_REG_RCX:
		*val = r->rcx;
		return 0;
	case NS_REG_RDX:
		*val = r->rdx;
		return 0;
	case NS_REG_RSI:
		*val = r->rsi;
		return 0;
	case NS_REG_RDI:
		*val = r->rdi;
		return 0;
	case NS_REG_RBP:
		*val = r->rbp;
		return 0;
	case NS_REG_RSP:
		*val = r->rsp;
		return 0;
	case NS_REG_R8:
		*val = r->r8;
		return 0;
	case NS_REG_R9:
		*val = r->r9;
		return 0;
	case NS_REG_R10:
		*val = r->r10;
		return 0;
	case NS_REG_R11:
		*val = r->r11;
		return 0;
	case NS_REG_R12:
		*val = r->r12;
		return 0;
	case NS_REG_R13:
		*val = r->r13;
		return 0;
	case NS_REG_R14:
		*val = r->r14;
		return 0;
	case NS_REG_R15:
		*val = r->r15;
		return 0;
	case NS_REG_RIP:
		*val = h->addr;
		return 0; // the tracepoint, not past the int3
	case NS_REG_EFLAGS:
		*val = r->eflags;
		return 0;
	case NS_REG_CS:
		*val = r->cs;
		return 0;
	case NS_REG_SS:
		*val = r->ss;
		return 0;
	case NS_REG_DS:
		*val = r->ds;
		return 0;
	case NS_REG_ES:
		*val = r->es;
		return 0;
	case NS_REG_FS:
		*val = r->fs;
		return 0;
	case NS_REG_GS:
		*val = r->gs;
		return 0;
	case NS_REG_FS_BASE:
		*val = r->fs_base;
		return 0;
	case NS_REG_GS_BASE:
		*val = r->gs_base;
		return 0;
	default:
		return -1;
	}
}

static bool begin_frame(struct hit *h, struct pt_thread *t, const struct pt_tp *tp,
                        uint64_t hit_count, struct ns_frame_builder *b)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct ns_frame_hdr hdr;
	memset(&hdr, 0, sizeof(hdr));
	hdr.tp_id = tp->def.num;
	hdr.addr = h->addr;
	hdr.tid = (uint64_t)t->tid;
	hdr.time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	hdr.seq = t->seq++;
	hdr.hit_count = hit_count;
	return ns_frame_begin(b, h->pt->frame, NS_AGENT_MAX_FRAME, &hdr) == 0;
}

static void end_frame(struct ns_stub *s, struct ns_frame_builder *b, uint32_t status,
                      uint64_t fault)
{
	size_t n = ns_frame_end(b);
	struct ns_frame_hdr *fh = (struct ns_frame_hdr *)(void *)s->pt->frame;
	fh->status = status;
	fh->fault_addr = fault;
	ns_stub__push_frame(s, s->pt->frame, n);
}

static void collect(struct ns_stub *s, struct pt_site *site, struct pt_thread *t,
                    const struct user_regs_struct *r)
{
	struct hit h = {s->pt, r, site->addr};
	struct ns_collect_src src = {src_read_mem, src_read_partial, src_read_reg, &h};
	for (unsigned i = 0; i < site->ntps; i++) {
		struct pt_tp *tp = site->tps[i];
		const struct ns_rsp_tracepoint *d = &tp->def;
		if (!d->enabled)
			continue;
		struct ns_ax_result res;
		int c = ns_collect_cond(d, &src, &res);
		struct ns_frame_builder b;
		if (c < 0 && !tp->cond_err_sent) {
			tp->cond_err_sent = true;
			if (begin_frame(&h, t, tp, tp->hits, &b)) {
				ns_frame_add_err(&b, NS_COLLECT_COND_ACTION, res.status,
				                 res.fault_addr);
				end_frame(s, &b, res.status, res.fault_addr);
			}
		}
		if (c <= 0)
			continue;
		uint64_t n = ++tp->hits;
		if (!ns_collect_hit_fires(d, n))
			continue;
		if (d->max_frames && tp->frames++ >= d->max_frames)
			continue;
		if (!begin_frame(&h, t, tp, n, &b))
			continue;
		uint32_t status = 0;
		uint64_t fault = 0;
		ns_collect_actions(d, &src, &b, &status, &fault);
		end_frame(s, &b, status, fault);
	}
}

/* Where the thread goes on after the tracepoint at @site: the instruction's effect is
 * emulated, or it runs from the out-of-line copy. */
static int resume_regs(struct ns_stub_pt *pt, const struct pt_site *site,
                       struct user_regs_struct *r)
{
	uint64_t next = site->addr + site->insn.len;
	switch (site->insn.kind) {
	case NS_INSN_JMP:
		r->rip = site->insn.target;
		return 0;
	case NS_INSN_JCC:
		r->rip = ns_arch_cond_holds(site->insn.cc, r->eflags) ? site->insn.target : next;
		return 0;
	case NS_INSN_CALL: {
		uint64_t sp = r->rsp - 8;
		struct ns_err *err = write_mem(pt, sp, &next, 8);
		if (err) {
			ns_err_destroy(err);
			r->rip = site->addr;
			return SIGSEGV; // as the call itself would have faulted
		}
		r->rsp = sp;
		r->rip = site->insn.target;
		return 0;
	}
	case NS_INSN_RET: {
		uint64_t ret;
		if (read_all(pt, &ret, r->rsp, 8) == 0) {
			r->rsp += 8;
			r->rip = ret;
		} else {
			r->rip = site->slot; // the real ret takes the fault
		}
		return 0;
	}
	default:
		r->rip = site->slot;
		return 0;
	}
}

static void on_trap(struct ns_stub *s, pid_t tid)
{
	struct ns_stub_pt *pt = s->pt;
	struct user_regs_struct r;
	if (ptrace(PTRACE_GETREGS, tid, 0, &r) != 0) {
		ptrace(PTRACE_CONT, tid, 0, (void *)(uintptr_t)SIGTRAP);
		return;
	}
	struct pt_site *site = site_find(pt, r.rip - 1);
	if (!site) {
		rewind_or_pass(s, tid, &r);
		return;
	}
	struct pt_thread *t = thread_add(pt, tid);
	struct pt_thread dummy = {.tid = tid};
	collect(s, site, t ? t : &dummy, &r);
	int sig = resume_regs(pt, site, &r);
	ptrace(PTRACE_SETREGS, tid, 0, &r);
	ptrace(PTRACE_CONT, tid, 0, (void *)(uintptr_t)sig);
}

static void on_exit_status(struct ns_stub *s, pid_t tid, int st)
{
	thread_del(s->pt, tid);
	if (tid == s->pid && !s->exited) {
		s->exited = true;
		s->wstatus = st;
		s->exit_unknown = false;
		if (s->pidfd >= 0)
			close(s->pidfd);
		s->pidfd = -1;
		s->pt->held = false;
		watchdog_quit(s->pt);
	}
}

/* One wait status of a traced thread that nobody is waiting for specifically. */
static void handle_status(struct ns_stub *s, pid_t tid, int st)
{
	struct ns_stub_pt *pt = s->pt;
	if (tid == pt->wd_pid) {
		pt->wd_pid = -1;
		return;
	}
	if (WIFEXITED(st) || WIFSIGNALED(st)) {
		on_exit_status(s, tid, st);
		return;
	}
	if (!WIFSTOPPED(st))
		return;
	thread_add(pt, tid);
	int sig = WSTOPSIG(st);
	int event = st >> 16;
	if (event == PTRACE_EVENT_STOP) {
		// A group-stop (the program got SIGSTOP/SIGTSTP...) stays a stop; any other
		// is an interrupt or a new thread's first stop.
		if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
			ptrace(PTRACE_LISTEN, tid, 0, 0);
		else
			ptrace(PTRACE_CONT, tid, 0, 0);
		return;
	}
	if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK ||
	    event == PTRACE_EVENT_VFORK || event == PTRACE_EVENT_EXEC) {
		unsigned long msg = 0;
		if (event == PTRACE_EVENT_CLONE && ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg) == 0)
			thread_add(pt, (pid_t)msg);
		ptrace(PTRACE_CONT, tid, 0, 0);
		return;
	}
	if (event) {
		ptrace(PTRACE_CONT, tid, 0, 0);
		return;
	}
	if (sig == SIGTRAP) {
		on_trap(s, tid);
		return;
	}
	ptrace(PTRACE_CONT, tid, 0, (void *)(uintptr_t)sig); // the program's own signal
}

void ns_stub__pt_events(struct ns_stub *s)
{
	struct ns_stub_pt *pt = s->pt;
	if (!pt)
		return;
	if (pt->sig_fd >= 0) {
		struct signalfd_siginfo si[16];
		while (read(pt->sig_fd, si, sizeof(si)) > 0)
			;
	}
	for (;;) {
		int st;
		pid_t tid = waitpid(-1, &st, __WALL | WNOHANG);
		if (tid <= 0)
			break;
		handle_status(s, tid, st);
	}
}

/* ---- running code in a stopped thread ---- */

/* Stop thread @tid (PTRACE_INTERRUPT) and wait for it; other statuses of it that come
 * first are handled as usual. On success *@sig_out is a group-stop signal or 0. */
static struct ns_err *interrupt_thread(struct ns_stub *s, pid_t tid, int *group_sig_out)
{
	*group_sig_out = 0;
	if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0)
		return ns_err_errno(errno, "PTRACE_INTERRUPT %d", tid);
	int64_t deadline = ns_mono_ms() + WAIT_MS;
	while (ns_mono_ms() < deadline) {
		int st;
		pid_t r = waitpid(tid, &st, __WALL | WNOHANG);
		if (r == 0) {
			usleep(100);
			continue;
		}
		if (r < 0)
			return ns_err_errno(errno, "waitpid %d", tid);
		if (WIFSTOPPED(st) && (st >> 16) == PTRACE_EVENT_STOP) {
			int sig = WSTOPSIG(st);
			if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
				*group_sig_out = sig;
			return NULL;
		}
		handle_status(s, tid, st);
		if (WIFEXITED(st) || WIFSIGNALED(st))
			return ns_err_create(NS_ERR_CLOSED, "thread %d exited", tid);
	}
	return ns_err_create(NS_ERR_TIMEOUT, "thread %d did not stop within %d s", tid,
	                     WAIT_MS / 1000);
}

static void resume_after(pid_t tid, int group_sig)
{
	if (group_sig)
		ptrace(PTRACE_LISTEN, tid, 0, 0);
	else
		ptrace(PTRACE_CONT, tid, 0, 0);
}

static struct ns_err *find_syscall_insn(struct ns_stub *s)
{
	struct ns_stub_pt *pt = s->pt;
	if (pt->syscall_insn)
		return NULL;
	struct ns_strbuf maps;
	ns_strbuf_init(&maps);
	struct ns_err *err = ns_stub__read_proc(s, "maps", &maps);
	if (err) {
		ns_strbuf_deinit(&maps);
		return err;
	}
	uint8_t *buf = malloc(1 << 20);
	for (char *line = maps.buf; buf && line && *line && !pt->syscall_insn;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		uint64_t lo, hi;
		char perms[5];
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s", &lo, &hi, perms) == 3 &&
		    perms[2] == 'x' && !strstr(line, "[vsyscall]")) {
			size_t len = hi - lo > (1 << 20) ? (1 << 20) : (size_t)(hi - lo);
			ssize_t n = pread(pt->mem_fd, buf, len, (off_t)lo);
			for (ssize_t i = 0; i + 1 < n; i++)
				if (buf[i] == 0x0f && buf[i + 1] == 0x05) {
					pt->syscall_insn = lo + (uint64_t)i;
					break;
				}
		}
		line = nl ? nl + 1 : NULL;
	}
	free(buf);
	ns_strbuf_deinit(&maps);
	if (!pt->syscall_insn)
		return ns_err_create(NS_ERR_NOT_FOUND,
		                     "no syscall instruction in the program's code (needed to map "
		                     "the out-of-line copies)");
	return NULL;
}

/* Make stopped thread @tid run mmap(@hint, SLOT_PAGE, r-x, FIXED_NOREPLACE); its
 * registers are put back exactly afterwards. */
static struct ns_err *inject_mmap(struct ns_stub *s, pid_t tid, uint64_t hint, uint64_t *out)
{
	struct ns_stub_pt *pt = s->pt;
	struct user_regs_struct saved, r;
	if (ptrace(PTRACE_GETREGS, tid, 0, &saved) != 0)
		return ns_err_errno(errno, "PTRACE_GETREGS");
	r = saved;
	r.rax = SYS_mmap;
	r.rdi = hint;
	r.rsi = SLOT_PAGE;
	r.rdx = PROT_READ | PROT_EXEC;
	r.r10 = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
	r.r8 = (uint64_t)-1;
	r.r9 = 0;
	r.rip = pt->syscall_insn;
	r.orig_rax = (uint64_t)-1; // no syscall restart around the injected one
	if (ptrace(PTRACE_SETREGS, tid, 0, &r) != 0)
		return ns_err_errno(errno, "PTRACE_SETREGS");
	struct ns_err *err = NULL;
	int pending = 0;
	int64_t deadline = ns_mono_ms() + WAIT_MS;
	for (;;) {
		if (ptrace(PTRACE_SINGLESTEP, tid, 0, 0) != 0) {
			err = ns_err_errno(errno, "PTRACE_SINGLESTEP");
			break;
		}
		int st = 0;
		pid_t w;
		while ((w = waitpid(tid, &st, __WALL | WNOHANG)) == 0 && ns_mono_ms() < deadline)
			usleep(50);
		if (w != tid) {
			err = ns_err_create(NS_ERR_TIMEOUT, "the injected mmap did not return");
			break;
		}
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			on_exit_status(s, tid, st);
			return ns_err_create(NS_ERR_CLOSED, "thread %d exited", tid);
		}
		struct user_regs_struct now;
		ptrace(PTRACE_GETREGS, tid, 0, &now);
		if (WSTOPSIG(st) == SIGTRAP && (st >> 16) == 0 && now.rip != pt->syscall_insn) {
			*out = now.rax;
			break;
		}
		// A signal for the program arrived first: keep it for later.
		if ((st >> 16) == 0 && WSTOPSIG(st) != SIGTRAP)
			pending = WSTOPSIG(st);
	}
	if (ptrace(PTRACE_SETREGS, tid, 0, &saved) != 0 && !err)
		err = ns_err_errno(errno, "restoring the registers of %d", tid);
	if (pending)
		kill(s->pid, pending); // re-sent to the process: lost otherwise
	return err;
}

static bool near(uint64_t a, uint64_t b)
{
	uint64_t d = a > b ? a - b : b - a;
	return d < SLOT_REACH;
}

static struct ns_err *map_slot_page(struct ns_stub *s, uint64_t addr, struct slot_page **out)
{
	struct ns_stub_pt *pt = s->pt;
	struct ns_err *err = find_syscall_insn(s);
	if (err)
		return err;
	pid_t tid = pt->held ? pt->pid : 0;
	int group_sig = 0;
	if (!tid) {
		// Any running thread will do; the main thread first.
		for (size_t i = 0; !tid && i <= pt->nthreads; i++) {
			pid_t cand = i == 0 ? pt->pid : pt->threads[i - 1].tid;
			if (!thread_find(pt, cand))
				continue;
			err = interrupt_thread(s, cand, &group_sig);
			if (!err)
				tid = cand;
			else
				ns_err_destroy(err);
		}
		if (!tid)
			return ns_err_create(NS_ERR_OS, "no thread of %d could be stopped",
			                     pt->pid);
	}
	// Below the code first (a non-PIE program's heap grows above it), then far above.
	uint64_t got = 0;
	err = NULL;
	for (int dir = 0; dir < 2 && !got && !err; dir++) {
		for (int k = 0; k < 10 && !got; k++) {
			uint64_t d = dir == 0 ? (2ull << 20) << k : (1ull << 30) >> k;
			if (dir == 0 && addr < d + 0x100000)
				continue;
			uint64_t hint = (dir ? addr + d : addr - d) & ~(uint64_t)(SLOT_PAGE - 1);
			if (hint >= 0x7fffff000000ull)
				continue;
			uint64_t rv = 0;
			if ((err = inject_mmap(s, tid, hint, &rv)))
				break;
			if (rv >= (uint64_t)-4095)
				continue;
			if (rv != hint || !near(rv, addr) || !near(rv + SLOT_PAGE, addr)) {
				// An old kernel took the hint loosely: the page stays unused.
				continue;
			}
			got = rv;
		}
	}
	if (!pt->held && thread_find(pt, tid))
		resume_after(tid, group_sig);
	if (err)
		return err;
	if (!got)
		return ns_err_create(NS_ERR_NOMEM,
		                     "no free address space within 2 GiB of 0x%" PRIx64
		                     " for the out-of-line copy",
		                     addr);
	struct slot_page *np = realloc(pt->pages, (pt->npages + 1) * sizeof(*np));
	if (!np)
		return &ns_err_nomem;
	pt->pages = np;
	np[pt->npages] = (struct slot_page){.base = got, .used = 0};
	*out = &np[pt->npages++];
	return NULL;
}

static struct ns_err *slot_alloc(struct ns_stub *s, uint64_t addr, uint64_t *out)
{
	struct ns_stub_pt *pt = s->pt;
	struct slot_page *sp = NULL;
	for (size_t i = 0; i < pt->npages && !sp; i++)
		if (pt->pages[i].used + SLOT_SIZE <= SLOT_PAGE && near(pt->pages[i].base, addr) &&
		    near(pt->pages[i].base + SLOT_PAGE, addr))
			sp = &pt->pages[i];
	if (!sp) {
		struct ns_err *err = map_slot_page(s, addr, &sp);
		if (err)
			return err;
	}
	*out = sp->base + sp->used;
	sp->used += SLOT_SIZE; // never reused: a thread may still be running it
	return NULL;
}

/* ---- install / remove ---- */

static struct ns_err *check_executable(struct ns_stub *s, uint64_t addr)
{
	struct ns_strbuf maps;
	ns_strbuf_init(&maps);
	struct ns_err *err = ns_stub__read_proc(s, "maps", &maps);
	if (err) {
		ns_strbuf_deinit(&maps);
		return err;
	}
	bool found = false;
	for (char *line = maps.buf; line && *line;) {
		uint64_t lo, hi;
		char perms[5];
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s", &lo, &hi, perms) == 3 &&
		    addr >= lo && addr < hi) {
			found = true;
			if (perms[2] != 'x')
				err = ns_err_create(NS_ERR_INVALID,
				                    "0x%" PRIx64 " is not in executable code",
				                    addr);
			break;
		}
		char *nl = strchr(line, '\n');
		line = nl ? nl + 1 : NULL;
	}
	ns_strbuf_deinit(&maps);
	if (!found && !err)
		err = ns_err_fault(addr, "0x%" PRIx64 " is not mapped", addr);
	return err;
}

static struct ns_err *site_new(struct ns_stub *s, uint64_t addr, struct pt_site **out)
{
	struct ns_stub_pt *pt = s->pt;
	struct ns_err *err = check_executable(s, addr);
	if (err)
		return err;
	struct pt_site *site = calloc(1, sizeof(*site));
	if (!site)
		return &ns_err_nomem;
	site->addr = addr;
	site->orig_len = read_partial(pt, site->orig, addr, sizeof(site->orig));
	if (site->orig_len == 0) {
		free(site);
		return ns_err_fault(addr, "cannot read code at 0x%" PRIx64, addr);
	}
	if (site->orig[0] == 0xcc) {
		free(site);
		return ns_err_create(NS_ERR_UNSUPPORTED,
		                     "0x%" PRIx64 " already holds an int3 (another debugger or "
		                     "the program's own breakpoint)",
		                     addr);
	}
	if ((err = ns_arch_decode(site->orig, site->orig_len, addr, &site->insn))) {
		free(site);
		return ns_err_wrap(err, "tracepoint at 0x%" PRIx64, addr);
	}
	if (site->insn.kind == NS_INSN_UNSUPPORTED) {
		err = ns_err_create(NS_ERR_UNSUPPORTED,
		                    "cannot trace instruction '%s' at 0x%" PRIx64 ": %s",
		                    site->insn.text, addr, site->insn.reason);
		free(site);
		return err;
	}
	if (site->insn.kind == NS_INSN_PLAIN || site->insn.kind == NS_INSN_RIPREL ||
	    site->insn.kind == NS_INSN_RET) {
		struct ns_arch_insn copy = site->insn;
		if (copy.kind == NS_INSN_RET)
			copy.kind = NS_INSN_PLAIN; // the copy is only the fault path
		uint8_t buf[SLOT_SIZE];
		size_t n = 0;
		err = slot_alloc(s, addr, &site->slot);
		if (!err)
			err = ns_arch_relocate(&copy, site->orig, addr, site->slot, buf,
			                       sizeof(buf), &n);
		if (!err)
			err = write_mem(pt, site->slot, buf, n);
		if (err) {
			err = ns_err_wrap(err, "cannot trace instruction '%s' at 0x%" PRIx64,
			                  site->insn.text, addr);
			free(site);
			return err;
		}
	}
	// The watchdog learns the original bytes before the int3 goes in.
	struct wd_rec rec = {.op = 'I', .len = 1, .addr = addr};
	memcpy(rec.orig, site->orig, ORIG_MAX);
	wd_send(pt, &rec);
	static const uint8_t int3 = 0xcc;
	if ((err = write_mem(pt, addr, &int3, 1))) {
		rec.op = 'R';
		wd_send(pt, &rec);
		free(site);
		return err;
	}
	struct pt_site **ns = realloc(pt->sites, (pt->nsites + 1) * sizeof(*ns));
	if (!ns) {
		write_mem(pt, addr, site->orig, 1);
		free(site);
		return &ns_err_nomem;
	}
	pt->sites = ns;
	ns[pt->nsites++] = site;
	*out = site;
	return NULL;
}

static void tp_free(struct pt_tp *tp)
{
	ns_rsp_tp_deinit(&tp->def);
	free(tp);
}

static struct ns_err *copy_def(const struct ns_rsp_tracepoint *src, struct ns_rsp_tracepoint *out)
{
	void *msg;
	size_t len;
	struct ns_err *err = ns_agent_encode_install(src, 0, &msg, &len);
	if (err)
		return err;
	err = ns_agent_decode_install(msg, len, out);
	free(msg);
	return err;
}

struct ns_err *ns_stub__pt_install(struct ns_stub *s, const struct ns_rsp_tracepoint *def)
{
	struct ns_stub_pt *pt = s->pt;
	if (s->exited)
		return ns_err_create(NS_ERR_CLOSED, "install: the program has exited");
	struct pt_tp *tp = calloc(1, sizeof(*tp));
	if (!tp)
		return &ns_err_nomem;
	struct ns_err *err = copy_def(def, &tp->def);
	if (err) {
		free(tp);
		return err;
	}
	struct pt_site *site = site_find(pt, def->addr);
	if (!site && (err = site_new(s, def->addr, &site))) {
		tp_free(tp);
		return err;
	}
	// Installing a number that is already at this address replaces it.
	for (unsigned i = 0; i < site->ntps; i++)
		if (site->tps[i]->def.num == def->num) {
			tp_free(site->tps[i]);
			site->tps[i] = tp;
			return NULL;
		}
	struct pt_tp **n = realloc(site->tps, (site->ntps + 1) * sizeof(*n));
	if (!n) {
		tp_free(tp);
		return &ns_err_nomem;
	}
	site->tps = n;
	n[site->ntps++] = tp;
	return NULL;
}

static void site_drop(struct ns_stub *s, size_t idx, struct ns_err **err_out)
{
	struct ns_stub_pt *pt = s->pt;
	struct pt_site *site = pt->sites[idx];
	if (!s->exited) {
		struct ns_err *err = write_mem(pt, site->addr, site->orig, 1);
		if (err) {
			if (!*err_out)
				*err_out = err;
			else
				ns_err_destroy(err);
		}
		struct wd_rec rec = {.op = 'R', .addr = site->addr};
		wd_send(pt, &rec);
	}
	uint64_t *nr = realloc(pt->removed, (pt->nremoved + 1) * sizeof(*nr));
	if (nr) {
		pt->removed = nr;
		bool known = false;
		for (size_t i = 0; i < pt->nremoved; i++)
			known |= nr[i] == site->addr;
		if (!known)
			nr[pt->nremoved++] = site->addr;
	}
	for (unsigned i = 0; i < site->ntps; i++)
		tp_free(site->tps[i]);
	free(site->tps);
	free(site);
	pt->sites[idx] = pt->sites[--pt->nsites];
}

static struct ns_err *remove_tps(struct ns_stub *s, bool all, uint32_t num, unsigned *removed)
{
	struct ns_stub_pt *pt = s->pt;
	struct ns_err *err = NULL;
	*removed = 0;
	for (size_t i = pt->nsites; i-- > 0;) {
		struct pt_site *site = pt->sites[i];
		unsigned keep = 0;
		for (unsigned j = 0; j < site->ntps; j++) {
			if (all || site->tps[j]->def.num == num) {
				tp_free(site->tps[j]);
				(*removed)++;
			} else {
				site->tps[keep++] = site->tps[j];
			}
		}
		site->ntps = keep;
		if (keep == 0)
			site_drop(s, i, &err);
	}
	return err;
}

struct ns_err *ns_stub__pt_remove(struct ns_stub *s, uint32_t num)
{
	unsigned n;
	struct ns_err *err = remove_tps(s, false, num, &n);
	if (!err && n == 0)
		return ns_err_create(NS_ERR_NOT_FOUND, "no tracepoint %u", num);
	return err;
}

struct ns_err *ns_stub__pt_remove_all(struct ns_stub *s)
{
	unsigned n;
	return remove_tps(s, true, 0, &n);
}

void ns_stub__pt_resume(struct ns_stub *s)
{
	struct ns_stub_pt *pt = s->pt;
	if (!pt->held)
		return;
	pt->held = false;
	s->held = false;
	if (ptrace(PTRACE_CONT, pt->pid, 0, 0) != 0)
		ns_log(NS_LOG_WARN, "resuming %d: %s", pt->pid, strerror(errno));
}

/* ---- the end ---- */

void ns_stub__pt_detach(struct ns_stub *s)
{
	struct ns_stub_pt *pt = s->pt;
	if (!pt)
		return;
	struct ns_err *err = ns_stub__pt_remove_all(s);
	if (err) {
		ns_log(NS_LOG_WARN, "removing tracepoints: %s", err->msg);
		ns_err_destroy(err);
	}
	if (s->exited) {
		watchdog_quit(pt);
		return;
	}
	bool held = pt->held;
	pt->held = false;
	// Every thread must be in a ptrace-stop to be detached.
	for (size_t i = 0; i < pt->nthreads; i++)
		if (!(held && pt->threads[i].tid == pt->pid))
			ptrace(PTRACE_INTERRUPT, pt->threads[i].tid, 0, 0);
	if (held) {
		ptrace(PTRACE_DETACH, pt->pid, 0, 0);
		thread_del(pt, pt->pid);
	}
	int64_t deadline = ns_mono_ms() + WAIT_MS;
	while (pt->nthreads && ns_mono_ms() < deadline) {
		bool any = false;
		for (size_t i = 0; i < pt->nthreads; i++) {
			pid_t tid = pt->threads[i].tid;
			int st;
			pid_t r = waitpid(tid, &st, __WALL | WNOHANG);
			if (r == 0)
				continue;
			any = true;
			if (r < 0 || WIFEXITED(st) || WIFSIGNALED(st)) {
				if (r > 0)
					on_exit_status(s, tid, st);
				else
					thread_del(pt, tid);
				break;
			}
			int sig = 0;
			if ((st >> 16) == 0) {
				sig = WSTOPSIG(st);
				struct user_regs_struct r2;
				if (sig == SIGTRAP && ptrace(PTRACE_GETREGS, tid, 0, &r2) == 0)
					for (size_t k = 0; k < pt->nremoved; k++)
						if (pt->removed[k] == r2.rip - 1) {
							r2.rip--;
							ptrace(PTRACE_SETREGS, tid, 0, &r2);
							sig = 0;
						}
			}
			if (ptrace(PTRACE_DETACH, tid, 0, (void *)(uintptr_t)sig) != 0)
				ns_log(NS_LOG_WARN, "detaching from %d: %s", tid, strerror(errno));
			thread_del(pt, tid);
			break;
		}
		if (!any)
			usleep(200);
	}
	if (pt->nthreads)
		ns_log(NS_LOG_WARN, "%zu threads did not stop for the detach", pt->nthreads);
	watchdog_quit(pt);
}

void ns_stub__pt_kill(struct ns_stub *s)
{
	struct ns_stub_pt *pt = s->pt;
	kill(s->pid, SIGKILL);
	int64_t deadline = ns_mono_ms() + WAIT_MS;
	while (!s->exited && ns_mono_ms() < deadline) {
		int st;
		pid_t tid = waitpid(-1, &st, __WALL | WNOHANG);
		if (tid > 0)
			handle_status(s, tid, st);
		else
			usleep(500);
	}
	watchdog_quit(pt);
}
