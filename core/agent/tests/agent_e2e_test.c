/* End-to-end test of libnonstop-agent.so: this file plays the stub (socketpair +
 * memfd + environment + fork/exec with LD_PRELOAD) against agent_e2e_target, finds
 * addresses with nm/objdump, installs tracepoints, drains the rings and checks the
 * frames against values computed independently (the target's arithmetic, objdump's
 * addresses, the ELF file's bytes, a run without the agent). */
#define _GNU_SOURCE
#include "agent/agent.h"
#include "ax/ax.h"
#include "base/test.h"
#include "frame/frame.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { N = 1000, RING_BYTES = 1 << 20, NRINGS = 4 };

/* ---- addresses from the binary (nm / objdump: independent of the agent) ---- */

static uint64_t nm_addr(const char *exe, const char *sym)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "nm '%s' | awk '$3 == \"%s\" {print $1}'", exe, sym);
	char *out = ns_test_capture(cmd);
	uint64_t v = out ? strtoull(out, NULL, 16) : 0;
	free(out);
	return v;
}

// Address of the first (or with a leading '$' in @re, the last) instruction of
// function @fn whose objdump line matches the awk regex @re, or 0.
static uint64_t objdump_find(const char *exe, const char *fn, const char *re)
{
	char cmd[1024];
	bool last = re[0] == '$';
	snprintf(cmd, sizeof(cmd),
	         "objdump -d --no-show-raw-insn '%s' | awk '/^[0-9a-f]+ <%s>:/{f=1;next} "
	         "/^$/{f=0} f && /%s/ {sub(\":\",\"\",$1); print $1; if (!%d) exit}' | "
	         "tail -1",
	         exe, fn, re + last, last);
	char *out = ns_test_capture(cmd);
	uint64_t v = out && *out ? strtoull(out, NULL, 16) : 0;
	free(out);
	return v;
}

// Bytes of the ELF file at virtual address @vaddr (PT_LOAD mapping).
static bool file_bytes(const char *exe, uint64_t vaddr, uint8_t *dst, size_t len)
{
	FILE *f = fopen(exe, "rb");
	if (!f)
		return false;
	Elf64_Ehdr eh;
	bool ok = false;
	if (fread(&eh, sizeof(eh), 1, f) == 1) {
		for (unsigned i = 0; i < eh.e_phnum && !ok; i++) {
			Elf64_Phdr ph;
			fseek(f, (long)(eh.e_phoff + i * sizeof(ph)), SEEK_SET);
			if (fread(&ph, sizeof(ph), 1, f) != 1)
				break;
			if (ph.p_type == PT_LOAD && vaddr >= ph.p_vaddr &&
			    vaddr + len <= ph.p_vaddr + ph.p_filesz) {
				fseek(f, (long)(ph.p_offset + vaddr - ph.p_vaddr), SEEK_SET);
				ok = fread(dst, 1, len, f) == len;
			}
		}
	}
	fclose(f);
	return ok;
}

/* ---- the stub's side ---- */

struct proc {
	pid_t pid;
	int ctl;
	int out; // the program's stdout
	struct ns_agent_shm *shm;
	size_t shm_size;
	uint64_t bias; // load address of the executable (PIE), else 0
	char output[4096];
	size_t output_len;
	int status;
	bool exited;
	uint32_t req;
	uint32_t tier; // the tier every INSTALL must report (0: the int3 tier)
	// drained frames
	uint8_t **frames;
	size_t nframes;
};

static uint64_t load_bias(pid_t pid, const char *exe)
{
	char path[64], line[1024], real[4096];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	if (!realpath(exe, real))
		return 0;
	FILE *f = fopen(path, "r");
	uint64_t base = 0;
	while (f && fgets(line, sizeof(line), f)) {
		uint64_t lo, off;
		char name[4096] = "";
		if (sscanf(line, "%lx-%*x %*s %lx %*s %*s %4095s", &lo, &off, name) == 3 &&
		    strcmp(name, real) == 0 && off == 0) {
			base = lo;
			break;
		}
	}
	if (f)
		fclose(f);
	return base;
}

static bool recv_timeout(int fd, void *buf, size_t cap, ssize_t *n, int ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	if (poll(&p, 1, ms) != 1)
		return false;
	*n = recv(fd, buf, cap, 0);
	return *n > 0;
}

// The next launch runs the agent with NONSTOP_AGENT_NO_JIT=1 (interpreted conditions).
static bool launch_no_jit;
static uint64_t launch_warm; /* the shm's warm_bytes */

// Launch @exe with the agent (held until RESUME) unless @agent is false.
static bool launch(struct proc *p, const char *exe, const char *const *args, bool agent, bool pie)
{
	memset(p, 0, sizeof(*p));
	p->ctl = -1;
	int sv[2] = {-1, -1}, pipefd[2], memfd = -1;
	if (pipe2(pipefd, O_CLOEXEC) != 0)
		return false;
	if (agent) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
			return false;
		memfd = memfd_create("nonstop-rings", MFD_CLOEXEC);
		p->shm_size = ns_agent_shm_size(NRINGS, RING_BYTES);
		if (memfd < 0 || ftruncate(memfd, (off_t)p->shm_size) != 0)
			return false;
		p->shm = mmap(NULL, p->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
		if (p->shm == MAP_FAILED)
			return false;
		ns_agent_shm_init(p->shm, NRINGS, RING_BYTES);
		p->shm->warm_bytes = launch_warm;
	}
	p->pid = fork();
	if (p->pid == 0) {
		dup2(pipefd[1], 1);
		if (agent) {
			// The fds the program gets must survive exec.
			int c = dup(sv[1]), m = dup(memfd);
			char b[32];
			snprintf(b, sizeof(b), "%d", c);
			setenv(NS_AGENT_ENV_FD, b, 1);
			snprintf(b, sizeof(b), "%d", m);
			setenv(NS_AGENT_ENV_SHM, b, 1);
			setenv("NONSTOP_AGENT_HOLD", "1", 1);
			setenv("LD_PRELOAD", NS_AGENT_SO, 1);
			if (launch_no_jit)
				setenv("NONSTOP_AGENT_NO_JIT", "1", 1);
			else
				unsetenv("NONSTOP_AGENT_NO_JIT");
		} else {
			unsetenv("LD_PRELOAD");
		}
		char *argv[8] = {(char *)exe};
		for (int i = 0; args[i] && i < 6; i++)
			argv[i + 1] = (char *)args[i];
		execv(exe, argv);
		_exit(127);
	}
	close(pipefd[1]);
	p->out = pipefd[0];
	if (agent) {
		close(sv[1]);
		close(memfd);
		p->ctl = sv[0];
		struct ns_agent_hello h;
		ssize_t n;
		if (!recv_timeout(p->ctl, &h, sizeof(h), &n, 5000) || n != sizeof(h) ||
		    h.h.type != NS_AGENT_MSG_HELLO || h.pid != (uint32_t)p->pid ||
		    h.version != NS_AGENT_PROTO_VERSION) {
			ns_test_fail(__FILE__, __LINE__, "no HELLO from the agent");
			return false;
		}
		if (pie)
			p->bias = load_bias(p->pid, exe);
	}
	return true;
}

// Send @msg and wait for its REPLY; returns the status, message in @text.
static int request(struct proc *p, void *msg, size_t len, char *text, size_t text_cap)
{
	struct ns_agent_msg_hdr *h = msg;
	h->req_id = ++p->req;
	if (send(p->ctl, msg, len, 0) != (ssize_t)len)
		return -1;
	uint8_t buf[2048];
	ssize_t n;
	while (recv_timeout(p->ctl, buf, sizeof(buf), &n, 5000)) {
		struct ns_agent_reply *r = (struct ns_agent_reply *)buf;
		if ((size_t)n < sizeof(*r) + 1 || r->h.type != NS_AGENT_MSG_REPLY ||
		    r->h.req_id != h->req_id)
			continue;
		buf[n - 1] = 0;
		size_t tl = strlen((char *)buf + sizeof(*r));
		if (tl >= text_cap)
			tl = text_cap - 1;
		memcpy(text, buf + sizeof(*r), tl);
		text[tl] = 0;
		if (r->status == 0)
			NS_CHECK_INT(r->tier, p->tier ? p->tier : NS_AGENT_TIER_TRAP);
		return r->status;
	}
	return -1;
}

static int install(struct proc *p, struct ns_rsp_tracepoint *tp, char *text, size_t cap)
{
	void *msg;
	size_t len;
	NS_CHECK_OK(ns_agent_encode_install(tp, 0, &msg, &len));
	int st = request(p, msg, len, text, cap);
	free(msg);
	return st;
}

static int remove_tp(struct proc *p, uint32_t num)
{
	struct {
		struct ns_agent_msg_hdr h;
		uint32_t num;
	} m = {{NS_AGENT_MSG_REMOVE, sizeof(m), 0, 0}, num};
	char text[256];
	return request(p, &m, sizeof(m), text, sizeof(text));
}

static void resume(struct proc *p)
{
	struct ns_agent_msg_hdr h = {NS_AGENT_MSG_RESUME, sizeof(h), 0, 0};
	NS_CHECK(send(p->ctl, &h, sizeof(h), 0) == sizeof(h));
}

static void drain(struct proc *p)
{
	if (!p->shm)
		return;
	static uint8_t buf[NS_AGENT_MAX_FRAME];
	for (unsigned i = 0; i < NRINGS; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring(p->shm, i);
		long n;
		while ((n = ns_agent_ring_pop(p->shm, r, buf, sizeof(buf))) != 0) {
			NS_CHECK(n > 0);
			if (n < 0)
				continue;
			p->frames = realloc(p->frames, (p->nframes + 1) * sizeof(*p->frames));
			p->frames[p->nframes] = malloc((size_t)n);
			memcpy(p->frames[p->nframes++], buf, (size_t)n);
		}
	}
}

// Pump stdout and the rings until the program exits (or @ms pass; then it is killed).
static void run_until_exit(struct proc *p, int ms)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		drain(p);
		struct pollfd pf = {p->out, POLLIN, 0};
		if (poll(&pf, 1, 2) == 1) {
			ssize_t n = read(p->out, p->output + p->output_len,
			                 sizeof(p->output) - 1 - p->output_len);
			if (n > 0)
				p->output_len += (size_t)n;
			else if (n == 0 && !p->exited) {
				waitpid(p->pid, &p->status, 0);
				p->exited = true;
			}
		}
		if (!p->exited && waitpid(p->pid, &p->status, WNOHANG) == p->pid)
			p->exited = true;
		if (p->exited) {
			ssize_t n;
			while ((n = read(p->out, p->output + p->output_len,
			                 sizeof(p->output) - 1 - p->output_len)) > 0)
				p->output_len += (size_t)n;
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > ms) {
			ns_test_fail(__FILE__, __LINE__, "program did not finish; killing it");
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &p->status, 0);
			p->exited = true;
			break;
		}
	}
	p->output[p->output_len] = 0;
	drain(p);
}

static void cleanup(struct proc *p)
{
	if (!p->exited && p->pid > 0) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
	}
	if (p->ctl >= 0)
		close(p->ctl);
	close(p->out);
	if (p->shm)
		munmap(p->shm, p->shm_size);
	for (size_t i = 0; i < p->nframes; i++)
		free(p->frames[i]);
	free(p->frames);
}

static bool exited_ok(const struct proc *p)
{
	return WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
}

// What the program prints without nonstop.
static void reference_output(const char *exe, const char *const *args, char *out, size_t cap)
{
	struct proc p;
	out[0] = 0;
	if (!launch(&p, exe, args, false, false))
		return;
	run_until_exit(&p, 20000);
	snprintf(out, cap, "%s", p.output);
	cleanup(&p);
}

/* ---- tracepoints ---- */

static uint8_t *steal(struct ns_ax_asm *a, size_t *len)
{
	ns_ax_emit(a, NS_AX_END);
	uint8_t *c = ns_ax_asm_steal(a, len);
	NS_CHECK(c != NULL);
	return c;
}

// @tp: tracepoint @num at @addr, enabled, in the function [lo, hi) (a jump-pad site
// needs its function's range); no condition, no actions yet.
static void tp_in(struct ns_rsp_tracepoint *tp, uint32_t num, uint64_t addr, uint64_t lo,
                  uint64_t hi)
{
	memset(tp, 0, sizeof(*tp));
	tp->num = num;
	tp->addr = addr;
	tp->enabled = true;
	tp->nranges = 1;
	tp->ranges[0] = lo;
	tp->ranges[1] = hi;
}

// trace 8 bytes at RSP (the return address at a function's entry) and 4 bytes of
// the global counter.
static void add_actions(struct ns_rsp_tracepoint *tp, uint64_t counter_addr)
{
	tp->nactions = 2;
	tp->actions = calloc(2, sizeof(*tp->actions));
	tp->actions[0].kind = NS_RSP_ACT_REGS;
	tp->actions[0].regmask = ~0ull;
	struct ns_ax_asm a;
	ns_ax_asm_init(&a);
	ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RSP);
	ns_ax_emit_const(&a, 8);
	ns_ax_emit(&a, NS_AX_TRACE);
	ns_ax_emit_const(&a, (int64_t)counter_addr);
	ns_ax_emit_const(&a, 4);
	ns_ax_emit(&a, NS_AX_TRACE);
	tp->actions[1].kind = NS_RSP_ACT_EXPR;
	tp->actions[1].code = steal(&a, &tp->actions[1].code_len);
}

static void free_tp(struct ns_rsp_tracepoint *tp)
{
	free(tp->cond);
	for (size_t i = 0; i < tp->nactions; i++)
		free(tp->actions[i].code);
	free(tp->actions);
}

// Install tracepoint @num at @addr collecting every register; the status, text in @text.
static int install_regs(struct proc *p, uint32_t num, uint64_t addr, char *text, size_t cap)
{
	struct ns_rsp_tracepoint tp = {0};
	tp.num = num;
	tp.addr = addr;
	tp.enabled = true;
	tp.nactions = 1;
	tp.actions = calloc(1, sizeof(*tp.actions));
	tp.actions[0].kind = NS_RSP_ACT_REGS;
	tp.actions[0].regmask = ~0ull;
	int st = install(p, &tp, text, cap);
	free_tp(&tp);
	return st;
}

struct target {
	const char *exe;
	bool pie;
	uint64_t work, counter, main_lo, main_hi; // link-time addresses
};

static void get_target(struct target *t, bool pie)
{
	t->exe = pie ? NS_E2E_PIE : NS_E2E_NOPIE;
	t->pie = pie;
	t->work = nm_addr(t->exe, "work");
	t->counter = nm_addr(t->exe, "counter");
	t->main_lo = nm_addr(t->exe, "main");
	t->main_hi = t->main_lo + 0x200;
	NS_CHECK(t->work && t->counter && t->main_lo);
}

// Frames for tracepoint @num, in ring order (one thread: hit order).
static size_t frames_of(struct proc *p, uint32_t num, struct ns_frame *out, size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; i < p->nframes; i++) {
		struct ns_frame f;
		struct ns_err *err = ns_frame_parse(p->frames[i], 1 << 20, &f);
		if (err) {
			ns_test_fail(__FILE__, __LINE__, "frame %zu: %s", i, err->msg);
			ns_err_destroy(err);
			continue;
		}
		if (f.hdr.tp_id == num && n < cap)
			out[n++] = f;
	}
	return n;
}

// Sum of 3*j for j < k: the global counter when work(k) is entered.
static uint32_t counter_at(uint64_t k)
{
	return (uint32_t)(3 * k * (k ? k - 1 : 0) / 2);
}

static struct ns_frame frames_buf[4 * N];

static void check_entry_frames(struct proc *p, const struct target *t, uint32_t num, size_t want,
                               bool even_only)
{
	size_t n = frames_of(p, num, frames_buf, 4 * N);
	NS_CHECK_INT(n, want);
	uint64_t addr = t->work + p->bias;
	uint64_t prev_seq = 0;
	for (size_t i = 0; i < n; i++) {
		struct ns_frame *f = &frames_buf[i];
		uint64_t rip = 0, rsp = 0, rdi = 0, ret = 0;
		uint32_t ctr = 0xffffffff;
		NS_CHECK(f->hdr.addr == addr);
		NS_CHECK(ns_frame_reg(f, NS_REG_RIP, &rip) == 0 && rip == addr);
		NS_CHECK(ns_frame_reg(f, NS_REG_RSP, &rsp) == 0 && rsp != 0);
		NS_CHECK(ns_frame_reg(f, NS_REG_RDI, &rdi) == 0);
		uint64_t k = even_only ? 2 * i : i; // the call's argument, in order
		if ((uint32_t)rdi != k || f->hdr.hit_count != i + 1 ||
		    f->hdr.tid != (uint64_t)p->pid || (i && f->hdr.seq <= prev_seq)) {
			ns_test_fail(__FILE__, __LINE__,
			             "frame %zu: rdi %lu hit_count %lu tid %lu seq %lu", i, rdi,
			             f->hdr.hit_count, f->hdr.tid, f->hdr.seq);
			return;
		}
		prev_seq = f->hdr.seq;
		// The return address at [rsp] is inside main; the counter is what the
		// target's arithmetic says it is before work(k) adds to it.
		NS_CHECK(ns_frame_read(f, rsp, &ret, 8) == 8);
		NS_CHECK(ret > t->main_lo + p->bias && ret < t->main_hi + p->bias);
		NS_CHECK(ns_frame_read(f, t->counter + p->bias, &ctr, 4) == 4);
		if (ctr != counter_at(k)) {
			ns_test_fail(__FILE__, __LINE__, "frame %zu: counter %u, expected %u", i,
			             ctr, counter_at(k));
			return;
		}
	}
}

static void entry_test(bool pie)
{
	struct target t;
	get_target(&t, pie);
	char nargs[16];
	snprintf(nargs, sizeof(nargs), "%d", N);
	const char *args[] = {nargs, NULL};
	char ref[4096];
	reference_output(t.exe, args, ref, sizeof(ref));
	NS_CHECK(strstr(ref, "preload=- fd=-") != NULL);

	struct proc p;
	if (!launch(&p, t.exe, args, true, pie)) {
		cleanup(&p);
		return;
	}
	if (pie)
		NS_CHECK(p.bias > 0x10000);
	struct ns_rsp_tracepoint tp = {0};
	tp.num = 1;
	tp.addr = t.work + p.bias;
	tp.enabled = true;
	add_actions(&tp, t.counter + p.bias);
	char text[256];
	int st = install(&p, &tp, text, sizeof(text));
	NS_CHECK_INT(st, 0);
	// No function ranges given: the jump-pad tier cannot check its window.
	NS_CHECK_STR(text,
	             "in-process trap tier (int3): the function's address ranges are unknown");
	free_tp(&tp);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	check_entry_frames(&p, &t, 1, N, false);
	NS_CHECK_INT(atomic_load(&p.shm->hits), N);
	NS_CHECK_INT(atomic_load(&p.shm->dropped_no_ring), 0);
	NS_CHECK_INT(atomic_load(&ns_agent_shm_ring(p.shm, 0)->dropped), 0);
	cleanup(&p);
}

NS_TEST(test_agent_e2e__entry_nopie)
{
	entry_test(false);
}

NS_TEST(test_agent_e2e__entry_pie)
{
	entry_test(true);
}

NS_TEST(test_agent_e2e__condition_filters_half)
{
	struct target t;
	get_target(&t, false);
	const char *args[] = {"1000", NULL};
	struct proc p;
	if (!launch(&p, t.exe, args, true, false)) {
		cleanup(&p);
		return;
	}
	struct ns_rsp_tracepoint tp = {0};
	tp.num = 2;
	tp.addr = t.work;
	tp.enabled = true;
	add_actions(&tp, t.counter);
	// (rdi & 1) == 0
	struct ns_ax_asm a;
	ns_ax_asm_init(&a);
	ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RDI);
	ns_ax_emit_const(&a, 1);
	ns_ax_emit(&a, NS_AX_BIT_AND);
	ns_ax_emit(&a, NS_AX_LOG_NOT);
	tp.cond = steal(&a, &tp.cond_len);
	char text[256];
	NS_CHECK_INT(install(&p, &tp, text, sizeof(text)), 0);
	free_tp(&tp);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	check_entry_frames(&p, &t, 2, N / 2, true);
	cleanup(&p);
}

NS_TEST(test_agent_e2e__condition_fault_counts_false_once)
{
	struct target t;
	get_target(&t, false);
	const char *args[] = {"200", NULL};
	char ref[4096];
	reference_output(t.exe, args, ref, sizeof(ref));
	struct proc p;
	if (!launch(&p, t.exe, args, true, false)) {
		cleanup(&p);
		return;
	}
	struct ns_rsp_tracepoint tp = {0};
	tp.num = 3;
	tp.addr = t.work;
	tp.enabled = true;
	add_actions(&tp, t.counter);
	// *(int *)0 != 0
	struct ns_ax_asm a;
	ns_ax_asm_init(&a);
	ns_ax_emit_const(&a, 0);
	ns_ax_emit(&a, NS_AX_REF32);
	tp.cond = steal(&a, &tp.cond_len);
	char text[256];
	NS_CHECK_INT(install(&p, &tp, text, sizeof(text)), 0);
	free_tp(&tp);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	struct ns_frame f[4];
	size_t n = frames_of(&p, 3, f, 4);
	NS_CHECK_INT(n, 1);
	if (n == 1) {
		NS_CHECK_INT(f[0].hdr.status, NS_AX_FAULT);
		NS_CHECK_INT(f[0].hdr.fault_addr, 0);
		NS_CHECK(f[0].regs == NULL);
		size_t it = 0;
		struct ns_frame_block blk;
		const uint8_t *payload;
		int nerr = 0;
		while (ns_frame_next_block(&f[0], &it, &blk, &payload)) {
			NS_CHECK_INT(blk.type, NS_FRAME_BLOCK_ERR);
			NS_CHECK(blk.addr == 0xffffffffu);
			uint32_t status;
			uint64_t fault;
			memcpy(&status, payload, 4);
			memcpy(&fault, payload + 8, 8);
			NS_CHECK_INT(status, NS_AX_FAULT);
			NS_CHECK_INT(fault, 0);
			nerr++;
		}
		NS_CHECK_INT(nerr, 1);
	}
	cleanup(&p);
}

NS_TEST(test_agent_e2e__remove_while_running_restores_code)
{
	struct target t;
	get_target(&t, false);
	// 1000 calls, 1 ms apart: about a second of run time to remove in.
	const char *args[] = {"1000", "1000", NULL};
	char ref[4096];
	reference_output(t.exe, args, ref, sizeof(ref));
	struct proc p;
	if (!launch(&p, t.exe, args, true, false)) {
		cleanup(&p);
		return;
	}
	uint8_t file[16], live[16];
	NS_CHECK(file_bytes(t.exe, t.work, file, sizeof(file)));
	struct ns_rsp_tracepoint tp = {0};
	tp.num = 4;
	tp.addr = t.work;
	tp.enabled = true;
	add_actions(&tp, t.counter);
	char text[256];
	NS_CHECK_INT(install(&p, &tp, text, sizeof(text)), 0);
	free_tp(&tp);
	// Patched: the first byte is int3 now, the rest untouched.
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", p.pid);
	int mfd = open(path, O_RDONLY);
	NS_CHECK(mfd >= 0);
	NS_CHECK(pread(mfd, live, sizeof(live), (off_t)t.work) == sizeof(live));
	NS_CHECK_INT(live[0], 0xcc);
	NS_CHECK(memcmp(live + 1, file + 1, sizeof(live) - 1) == 0);
	resume(&p);
	// Wait for some hits, then remove.
	for (int i = 0; i < 2000 && p.nframes < 50; i++) {
		usleep(1000);
		drain(&p);
	}
	NS_CHECK(p.nframes >= 50);
	NS_CHECK_INT(remove_tp(&p, 4), 0);
	NS_CHECK(pread(mfd, live, sizeof(live), (off_t)t.work) == sizeof(live));
	NS_CHECK(memcmp(live, file, sizeof(live)) == 0);
	close(mfd);
	NS_CHECK(remove_tp(&p, 4) == ENOENT);
	drain(&p);
	size_t at_remove = p.nframes;
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	// At most one hit already in flight when the byte went back.
	NS_CHECK(p.nframes <= at_remove + 1);
	NS_CHECK(p.nframes < 1000);
	cleanup(&p);
}

// Tracepoints on instructions that are relocated (RIP-relative) or emulated (call,
// jcc, ret), found with objdump: the program's output must not change and each
// tracepoint fires as often as its instruction runs.
static void relocated_test(bool pie)
{
	struct target t;
	get_target(&t, pie);
	const char *args[] = {"300", NULL};
	char ref[4096];
	reference_output(t.exe, args, ref, sizeof(ref));
	struct {
		const char *fn, *re;
		size_t hits;
	} sites[] = {
	        {"work", "\\(%rip\\)", 300}, // mov counter(%rip),%edx
	        {"work", "mov +%eax,.*\\(%rip\\)",
	         300}, // store to counter: RIP-relative destination
	        {"main", "call.*<work>", 300},
	        {"work", "\\tret", 300},
	        {"main", "\\tjle ", 1},           // argc > 1: not taken
	        {"main", "\\tje ", 300},          // no delay: taken every time
	        {"main", "\\tjl ", 301},          // the loop's backward jcc: n + 1 times
	        {"main", "\\tjmp ", 1},           // after atoi: rel8 jmp
	        {"main", "$\\tcall.*<getenv", 1}, // the second getenv call (through the PLT)
	};
	enum { NSITES = sizeof(sites) / sizeof(sites[0]) };
	struct proc p;
	if (!launch(&p, t.exe, args, true, pie)) {
		cleanup(&p);
		return;
	}
	uint64_t addrs[NSITES];
	for (unsigned i = 0; i < NSITES; i++) {
		addrs[i] = objdump_find(t.exe, sites[i].fn, sites[i].re);
		if (!addrs[i]) {
			ns_test_fail(__FILE__, __LINE__, "no '%s' in %s", sites[i].re, sites[i].fn);
			continue;
		}
		addrs[i] += p.bias;
		char text[256];
		if (install_regs(&p, 10 + i, addrs[i], text, sizeof(text)) != 0)
			ns_test_fail(__FILE__, __LINE__, "install at %#lx: %s", addrs[i], text);
	}
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	for (unsigned i = 0; i < NSITES; i++) {
		size_t n = frames_of(&p, 10 + i, frames_buf, 4 * N);
		if (n != sites[i].hits)
			ns_test_fail(__FILE__, __LINE__, "'%s' at %#lx: %zu hits, expected %zu",
			             sites[i].re, addrs[i], n, sites[i].hits);
		for (size_t j = 0; j < n; j++) {
			uint64_t rip;
			NS_CHECK(ns_frame_reg(&frames_buf[j], NS_REG_RIP, &rip) == 0 &&
			         rip == addrs[i]);
		}
	}
	cleanup(&p);
}

NS_TEST(test_agent_e2e__relocated_and_emulated_nopie)
{
	relocated_test(false);
}

NS_TEST(test_agent_e2e__relocated_and_emulated_pie)
{
	relocated_test(true);
}

NS_TEST(test_agent_e2e__errors_reported)
{
	struct target t;
	get_target(&t, false);
	const char *args[] = {"10", NULL};
	struct proc p;
	if (!launch(&p, t.exe, args, true, false)) {
		cleanup(&p);
		return;
	}
	char text[256];
	// Data, not code.
	struct ns_rsp_tracepoint tp = {0};
	tp.num = 20;
	tp.addr = t.counter;
	tp.enabled = true;
	NS_CHECK(install(&p, &tp, text, sizeof(text)) != 0);
	NS_CHECK(strstr(text, "not in executable code") != NULL);
	// Unverifiable bytecode (no END).
	tp.addr = t.work;
	uint8_t bad[] = {NS_AX_CONST8, 1};
	tp.cond = bad;
	tp.cond_len = sizeof(bad);
	NS_CHECK(install(&p, &tp, text, sizeof(text)) != 0);
	NS_CHECK(strstr(text, "condition") != NULL);
	NS_CHECK(remove_tp(&p, 99) == ENOENT);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_INT(p.nframes, 0);
	cleanup(&p);
}

// After fork the child runs the original code and collects nothing: only the
// parent's hits arrive, and both processes print what they print without nonstop.
NS_TEST(test_agent_e2e__fork_child_untraced)
{
	struct target t;
	get_target(&t, false);
	const char *args[] = {"100", "0", "fork", NULL};
	char ref[4096];
	reference_output(t.exe, args, ref, sizeof(ref));
	NS_CHECK(strstr(ref, "child status=0") != NULL);
	struct proc p;
	if (!launch(&p, t.exe, args, true, false)) {
		cleanup(&p);
		return;
	}
	struct ns_rsp_tracepoint tp = {0};
	tp.num = 30;
	tp.addr = t.work;
	tp.enabled = true;
	add_actions(&tp, t.counter);
	char text[256];
	NS_CHECK_INT(install(&p, &tp, text, sizeof(text)), 0);
	free_tp(&tp);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	check_entry_frames(&p, &t, 30, 100, false);
	cleanup(&p);
}

// Four threads hit work2(): each gets its own ring, frames per thread in order.
NS_TEST(test_agent_e2e__threads_own_rings)
{
	struct target t;
	get_target(&t, false);
	uint64_t work2 = nm_addr(t.exe, "work2");
	NS_CHECK(work2 != 0);
	const char *args[] = {"500", "0", "threads", NULL};
	char ref[4096];
	reference_output(t.exe, args, ref, sizeof(ref));
	struct proc p;
	if (!launch(&p, t.exe, args, true, false)) {
		cleanup(&p);
		return;
	}
	char text[256];
	NS_CHECK_INT(install_regs(&p, 31, work2, text, sizeof(text)), 0);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	size_t n = frames_of(&p, 31, frames_buf, 4 * N);
	NS_CHECK_INT(n, 2000);
	uint64_t tids[4] = {0};
	uint64_t next_arg[4] = {0};
	for (size_t i = 0; i < n; i++) {
		const struct ns_frame *f = &frames_buf[i];
		unsigned k;
		for (k = 0; k < 4 && tids[k] && tids[k] != f->hdr.tid; k++)
			;
		if (k == 4) {
			ns_test_fail(__FILE__, __LINE__, "more than 4 threads");
			break;
		}
		tids[k] = f->hdr.tid;
		uint64_t rdi = 0;
		NS_CHECK(ns_frame_reg(f, NS_REG_RDI, &rdi) == 0);
		// Per thread, work2's argument goes 0, 1, 2... and the seq with it.
		if (rdi != next_arg[k] || f->hdr.seq != next_arg[k]) {
			ns_test_fail(__FILE__, __LINE__,
			             "thread %lu: arg %lu seq %lu, expected %lu", f->hdr.tid, rdi,
			             f->hdr.seq, next_arg[k]);
			break;
		}
		next_arg[k]++;
	}
	for (unsigned k = 0; k < 4; k++) {
		NS_CHECK_INT(next_arg[k], 500);
		NS_CHECK(tids[k] != (uint64_t)p.pid);
	}
	for (unsigned r = 0; r < NRINGS; r++)
		NS_CHECK_INT(atomic_load(&ns_agent_shm_ring(p.shm, r)->dropped), 0);
	cleanup(&p);
}

// The whole pages of ring @r's data in [lo, hi) (byte offsets; a ring's first and last
// pages also hold ring headers, which both sides touch) that the kernel has in memory
// (mincore on our own mapping of the memfd), and their number in *@total.
static size_t resident_of(struct proc *p, unsigned r, uint64_t lo, uint64_t hi, size_t *total)
{
	uint8_t *data = ns_agent_ring_data(p->shm, ns_agent_shm_ring(p->shm, r));
	uintptr_t a = ((uintptr_t)data + lo + 4095) & ~(uintptr_t)4095;
	uintptr_t b = ((uintptr_t)data + hi) & ~(uintptr_t)4095;
	*total = b > a ? (b - a) / 4096 : 0;
	static unsigned char vec[RING_BYTES / 4096 + 2];
	if (b <= a)
		return 0;
	if ((b - a) / 4096 > sizeof(vec) || mincore((void *)a, b - a, vec) != 0)
		return (size_t)-1;
	size_t n = 0;
	for (size_t i = 0; i < (b - a) / 4096; i++)
		n += vec[i] & 1;
	return n;
}

static size_t resident(struct proc *p, unsigned r, uint64_t lo, uint64_t hi)
{
	size_t total;
	return resident_of(p, r, lo, hi, &total);
}

// Every whole page of [lo, hi) of ring @r is in memory.
static bool all_resident(struct proc *p, unsigned r, uint64_t lo, uint64_t hi)
{
	size_t total, n = resident_of(p, r, lo, hi, &total);
	return total > 0 && n == total;
}

// The agent backs the first warm_bytes of the ring the next hitting thread claims
// before it patches a site, and keeps a claimed ring backed warm_bytes past its head
// (agent_warm.c; here a new ring's first window is all of W, as W < 256 KiB); nothing
// more, and never on its own without a tracepoint. The stub gives back what it read
// (agent_proto.c).
NS_TEST(test_agent_e2e__rings_backed_ahead)
{
	enum { W = 64 << 10 };
	struct target t;
	get_target(&t, false);
	const char *args[] = {"300", "1000", NULL}; // work() 300 times, 1 ms apart
	char ref[4096];
	reference_output(t.exe, args, ref, sizeof(ref));
	struct proc p;
	launch_warm = W;
	bool ok = launch(&p, t.exe, args, true, false);
	launch_warm = 0;
	if (!ok) {
		cleanup(&p);
		return;
	}
	usleep(300000); // three of the agent's ticks
	for (unsigned r = 0; r < NRINGS; r++)
		NS_CHECK_INT(resident(&p, r, 0, RING_BYTES), 0);
	char text[256];
	NS_CHECK_INT(install_regs(&p, 41, t.work, text, sizeof(text)), 0);
	// Before any hit: the first ring's first W bytes, and nothing else.
	NS_CHECK(all_resident(&p, 0, 0, W));
	NS_CHECK_INT(resident(&p, 0, W, RING_BYTES), 0);
	for (unsigned r = 1; r < NRINGS; r++)
		NS_CHECK_INT(resident(&p, r, 0, RING_BYTES), 0);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	NS_CHECK_INT(frames_of(&p, 41, frames_buf, 4 * N), 300);
	// The main thread claimed ring 0 and wrote ~300 frames, all read: once the ring is
	// quiet (two trims, as the stub's 100 ms tick), what was read is given back up to
	// a page boundary less than a page behind head; from there the ring is backed
	// through head and W past it (less what the hits since the warmer's last look
	// wrote), not much further; ring 1, the next to be claimed, W; the others nothing.
	struct ns_agent_ring *r0 = ns_agent_shm_ring(p.shm, 0);
	ns_agent_ring_trim(p.shm, r0);
	ns_agent_ring_trim(p.shm, r0);
	uint64_t head = atomic_load(&r0->head), tail = atomic_load(&r0->tail);
	NS_CHECK(head > W); // the warming had to follow the head
	printf("ring 0 head %llu tail %llu, resident pages %zu\n", (unsigned long long)head,
	       (unsigned long long)tail, resident(&p, 0, 0, RING_BYTES));
	NS_CHECK(r0->read == head);
	NS_CHECK(tail > 0 && head - tail < 4096);
	NS_CHECK_INT(resident(&p, 0, 0, tail), 0);
	// A producer this slow (one ~300-byte frame per ms) is looked at every 100 ms:
	// what it wrote since the last look may have eaten into the window.
	uint64_t slack = head / 300 * 110 + 4096;
	NS_CHECK(slack < W);
	NS_CHECK(all_resident(&p, 0, tail, head + W - slack));
	NS_CHECK_INT(resident(&p, 0, head + W + 4096, RING_BYTES), 0);
	NS_CHECK(all_resident(&p, 1, 0, W));
	NS_CHECK_INT(resident(&p, 1, W, RING_BYTES), 0);
	for (unsigned r = 2; r < NRINGS; r++)
		NS_CHECK_INT(resident(&p, r, 0, RING_BYTES), 0);
	cleanup(&p);
}

// When the stub goes away the agent removes its patches and the program runs on.
NS_TEST(test_agent_e2e__stub_gone_restores_code)
{
	struct target t;
	get_target(&t, false);
	const char *args[] = {"1000", "1000", NULL};
	char ref[4096];
	reference_output(t.exe, args, ref, sizeof(ref));
	struct proc p;
	if (!launch(&p, t.exe, args, true, false)) {
		cleanup(&p);
		return;
	}
	uint8_t file[8], live[8];
	NS_CHECK(file_bytes(t.exe, t.work, file, sizeof(file)));
	struct ns_rsp_tracepoint tp = {0};
	tp.num = 32;
	tp.addr = t.work;
	tp.enabled = true;
	add_actions(&tp, t.counter);
	char text[256];
	NS_CHECK_INT(install(&p, &tp, text, sizeof(text)), 0);
	free_tp(&tp);
	resume(&p);
	for (int i = 0; i < 2000 && p.nframes < 20; i++) {
		usleep(1000);
		drain(&p);
	}
	close(p.ctl);
	p.ctl = -1;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", p.pid);
	int mfd = open(path, O_RDONLY);
	bool restored = false;
	for (int i = 0; i < 1000 && !restored; i++) {
		restored = pread(mfd, live, sizeof(live), (off_t)t.work) == sizeof(live) &&
		           memcmp(live, file, sizeof(live)) == 0;
		if (!restored)
			usleep(1000);
	}
	close(mfd);
	NS_CHECK(restored);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	cleanup(&p);
}

/* ---- jump-pad tier: native (JIT) conditions against the interpreter ---- */

// [lo, hi) of function @sym from nm -S (link-time addresses), false if not found.
static bool nm_range(const char *exe, const char *sym, uint64_t *lo, uint64_t *hi)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "nm -S '%s' | awk '$4 == \"%s\" {print $1, $2}'", exe, sym);
	char *out = ns_test_capture(cmd);
	unsigned long long a = 0, n = 0;
	bool ok = out && sscanf(out, "%llx %llx", &a, &n) == 2 && n > 0;
	free(out);
	*lo = a;
	*hi = a + n;
	return ok;
}

static uint8_t *cond_code(int which, uint64_t counter_addr, size_t *len)
{
	struct ns_ax_asm a;
	ns_ax_asm_init(&a);
	switch (which) {
	case 0: // (rdi & 1) == 0: registers only
		ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RDI);
		ns_ax_emit_const(&a, 1);
		ns_ax_emit(&a, NS_AX_BIT_AND);
		ns_ax_emit(&a, NS_AX_LOG_NOT);
		break;
	case 1: // (*(u64 *)rsp != 0) & (rdi % 3 == 0): a stack read (the return address)
		ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RSP);
		ns_ax_emit(&a, NS_AX_REF64);
		ns_ax_emit(&a, NS_AX_LOG_NOT);
		ns_ax_emit(&a, NS_AX_LOG_NOT);
		ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RDI);
		ns_ax_emit_const(&a, 3);
		ns_ax_emit(&a, NS_AX_REM_UNSIGNED);
		ns_ax_emit(&a, NS_AX_LOG_NOT);
		ns_ax_emit(&a, NS_AX_BIT_AND);
		break;
	case 2: // *(int *)&counter < 30000: a read outside the stack
		ns_ax_emit_const(&a, (int64_t)counter_addr);
		ns_ax_emit(&a, NS_AX_REF32);
		ns_ax_emit_u8(&a, NS_AX_EXT, 32);
		ns_ax_emit_const(&a, 30000);
		ns_ax_emit(&a, NS_AX_LESS_SIGNED);
		break;
	case 3: { // x = 0; do x++ while (x < 5); (x == 5) & (rdi % 5 == 0): a loop
		ns_ax_emit_const(&a, 0);
		size_t top = a.len;
		ns_ax_emit_const(&a, 1);
		ns_ax_emit(&a, NS_AX_ADD);
		ns_ax_emit(&a, NS_AX_DUP);
		ns_ax_emit_const(&a, 5);
		ns_ax_emit(&a, NS_AX_LESS_SIGNED);
		size_t j = ns_ax_emit_jump(&a, NS_AX_IF_GOTO);
		ns_ax_patch_jump(&a, j, top);
		ns_ax_emit_const(&a, 5);
		ns_ax_emit(&a, NS_AX_EQUAL);
		ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RDI);
		ns_ax_emit_const(&a, 5);
		ns_ax_emit(&a, NS_AX_REM_UNSIGNED);
		ns_ax_emit(&a, NS_AX_LOG_NOT);
		ns_ax_emit(&a, NS_AX_BIT_AND);
		break;
	}
	default: // *(int *)0: faults
		ns_ax_emit_const(&a, 0);
		ns_ax_emit(&a, NS_AX_REF32);
		break;
	}
	return steal(&a, len);
}

// Launch the target held with @args (interpreting conditions and actions if @no_jit),
// its untraced output in @ref, work()'s range in *@lo, *@hi.
static bool launch_work(struct proc *p, struct target *t, const char **args, bool no_jit,
                        char *ref, size_t ref_cap, uint64_t *lo, uint64_t *hi)
{
	get_target(t, false);
	NS_CHECK(nm_range(t->exe, "work", lo, hi) && *lo == t->work);
	reference_output(t->exe, args, ref, ref_cap);
	launch_no_jit = no_jit;
	bool ok = launch(p, t->exe, args, true, false);
	launch_no_jit = false;
	return ok;
}

// Frames of tracepoints 10..14 at work()'s entry in the jump-pad tier, with conditions
// compiled (or, with @no_jit, interpreted); counts in @counts.
static void jump_cond_run(bool no_jit, size_t counts[5], uint32_t *fault_status)
{
	struct target t;
	uint64_t lo, hi;
	const char *args[] = {"1000", NULL};
	char ref[4096];
	struct proc p;
	bool ok = launch_work(&p, &t, args, no_jit, ref, sizeof(ref), &lo, &hi);
	if (!ok) {
		cleanup(&p);
		return;
	}
	p.tier = NS_AGENT_TIER_JUMP;
	struct timespec t0, t1;
	clock_gettime(CLOCK_REALTIME, &t0);
	for (int k = 0; k < 5; k++) {
		struct ns_rsp_tracepoint tp;
		tp_in(&tp, 10 + (uint32_t)k, t.work, lo, hi);
		add_actions(&tp, t.counter);
		tp.cond = cond_code(k, t.counter, &tp.cond_len);
		char text[256];
		NS_CHECK_INT(install(&p, &tp, text, sizeof(text)), 0);
		NS_CHECK(strncmp(text, "jump-pad tier", 13) == 0);
		const char *interp = strstr(text, "; condition interpreted: ");
		if (no_jit)
			NS_CHECK(interp && strstr(interp, "NONSTOP_AGENT_NO_JIT=1"));
		else if (k == 3)
			NS_CHECK(interp != NULL); // the loop: the JIT refuses backward jumps
		else
			NS_CHECK(interp == NULL);
		if (!no_jit && k == 3)
			printf("loop condition: %s\n", text);
		free_tp(&tp);
	}
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	clock_gettime(CLOCK_REALTIME, &t1);
	// Frame times (the agent's TSC clock, or clock_gettime): CLOCK_REALTIME inside the
	// run, never going back on the (one) thread.
	uint64_t lo_ns = (uint64_t)t0.tv_sec * 1000000000ull + (uint64_t)t0.tv_nsec;
	uint64_t hi_ns = (uint64_t)t1.tv_sec * 1000000000ull + (uint64_t)t1.tv_nsec, prev = 0;
	for (size_t i = 0; i < p.nframes; i++) {
		struct ns_frame f;
		struct ns_err *err = ns_frame_parse(p.frames[i], 1 << 20, &f);
		if (err) {
			ns_err_destroy(err);
			continue;
		}
		if (f.hdr.time_ns < lo_ns || f.hdr.time_ns > hi_ns || f.hdr.time_ns < prev) {
			ns_test_fail(__FILE__, __LINE__,
			             "frame %zu: time %lu outside [%lu, %lu] or < %lu", i,
			             f.hdr.time_ns, lo_ns, hi_ns, prev);
			break;
		}
		prev = f.hdr.time_ns;
	}
	for (int k = 0; k < 5; k++)
		counts[k] = frames_of(&p, 10 + (uint32_t)k, frames_buf, 4 * N);
	check_entry_frames(&p, &t, 10, N / 2, true);
	struct ns_frame f;
	if (frames_of(&p, 14, &f, 1) == 1)
		*fault_status = f.hdr.status;
	cleanup(&p);
}

NS_TEST(test_agent_e2e__jump_jit_conditions_match_interpreter)
{
	size_t jit[5] = {0}, interp[5] = {0};
	uint32_t st_jit = 0, st_interp = 0;
	jump_cond_run(false, jit, &st_jit);
	jump_cond_run(true, interp, &st_interp);
	// Hand-computed over work(0..999): even, multiple of 3, counter 3k(k-1)/2 < 30000
	// (k <= 141), multiple of 5, and one error frame for the faulting condition.
	static const size_t want[5] = {500, 334, 142, 200, 1};
	for (int k = 0; k < 5; k++) {
		NS_CHECK_INT(jit[k], want[k]);
		NS_CHECK_INT(interp[k], want[k]);
	}
	NS_CHECK_INT(st_jit, NS_AX_FAULT);
	NS_CHECK_INT(st_interp, NS_AX_FAULT);
}

// X actions at work()'s entry, run natively (or, with @no_jit, interpreted): each
// frame of tracepoint 20 written as text into @out (@cap bytes), with stack addresses
// given relative to the frame's rsp (the two runs' stacks differ). The text the
// INSTALL reply gave is in @text.
static void jump_actions_run(bool no_jit, char *out, size_t cap, char *text, size_t text_cap)
{
	struct target t;
	uint64_t lo, hi;
	const char *args[] = {"300", NULL};
	char ref[4096];
	struct proc p;
	bool ok = launch_work(&p, &t, args, no_jit, ref, sizeof(ref), &lo, &hi);
	out[0] = 0;
	if (!ok) {
		cleanup(&p);
		return;
	}
	p.tier = NS_AGENT_TIER_JUMP;
	struct ns_rsp_tracepoint tp;
	tp_in(&tp, 20, t.work, lo, hi);
	tp.nactions = 6;
	tp.actions = calloc(6, sizeof(*tp.actions));
	tp.actions[0].kind = NS_RSP_ACT_REGS;
	tp.actions[0].regmask = 1u << NS_REG_RDI | 1u << NS_REG_RSP;
	struct ns_ax_asm a;
	for (int k = 1; k < 6; k++) {
		ns_ax_asm_init(&a);
		switch (k) {
		case 1: // the stack and a global (both read inline by native code)
			ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RSP);
			ns_ax_emit_const(&a, 8);
			ns_ax_emit(&a, NS_AX_TRACE);
			ns_ax_emit_const(&a, (int64_t)t.counter);
			ns_ax_emit_const(&a, 4);
			ns_ax_emit(&a, NS_AX_TRACE);
			break;
		case 2: // 16 bytes of code at the return address (a pointer read first)
			ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RSP);
			ns_ax_emit(&a, NS_AX_REF64);
			ns_ax_emit_const(&a, 16);
			ns_ax_emit(&a, NS_AX_TRACE);
			break;
		case 3: { // the counter only on odd calls (a forward branch), then a fault
			ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RDI);
			ns_ax_emit_const(&a, 1);
			ns_ax_emit(&a, NS_AX_BIT_AND);
			ns_ax_emit(&a, NS_AX_LOG_NOT);
			size_t j = ns_ax_emit_jump(&a, NS_AX_IF_GOTO);
			ns_ax_emit_const(&a, (int64_t)t.counter);
			ns_ax_emit_u8(&a, NS_AX_TRACE_QUICK, 4);
			ns_ax_emit(&a, NS_AX_POP);
			ns_ax_patch_jump(&a, j, a.len);
			ns_ax_emit_const(&a, 0x10);
			ns_ax_emit(&a, NS_AX_REF64);
			break;
		}
		case 4: // 8 / (rdi % 4): division by zero on every fourth call
			ns_ax_emit_const(&a, 8);
			ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RDI);
			ns_ax_emit_const(&a, 4);
			ns_ax_emit(&a, NS_AX_REM_UNSIGNED);
			ns_ax_emit(&a, NS_AX_DIV_UNSIGNED);
			ns_ax_emit(&a, NS_AX_POP);
			ns_ax_emit_const(&a, (int64_t)t.counter);
			ns_ax_emit_const(&a, 2);
			ns_ax_emit(&a, NS_AX_TRACE);
			break;
		case 5: { // a loop (not compiled): counter + 2 and + 1, 2 bytes each
			ns_ax_emit_const(&a, 2);
			size_t top = a.len;
			ns_ax_emit(&a, NS_AX_DUP);
			ns_ax_emit_const(&a, (int64_t)t.counter);
			ns_ax_emit(&a, NS_AX_ADD);
			ns_ax_emit_const(&a, 2);
			ns_ax_emit(&a, NS_AX_TRACE);
			ns_ax_emit_const(&a, 1);
			ns_ax_emit(&a, NS_AX_SUB);
			ns_ax_emit(&a, NS_AX_DUP);
			size_t back = ns_ax_emit_jump(&a, NS_AX_IF_GOTO);
			ns_ax_patch_jump(&a, back, top);
			break;
		}
		}
		tp.actions[k].kind = NS_RSP_ACT_EXPR;
		tp.actions[k].code = steal(&a, &tp.actions[k].code_len);
	}
	NS_CHECK_INT(install(&p, &tp, text, text_cap), 0);
	free_tp(&tp);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	size_t n = frames_of(&p, 20, frames_buf, 4 * N), at = 0;
	NS_CHECK_INT(n, 300);
	for (size_t i = 0; i < n && at + 512 < cap; i++) {
		const struct ns_frame *f = &frames_buf[i];
		uint64_t rsp = 0, rdi = 0;
		NS_CHECK(ns_frame_reg(f, NS_REG_RSP, &rsp) == 0 && ns_frame_reg(f, NS_REG_RDI, &rdi) == 0);
		at += (size_t)snprintf(out + at, cap - at, "rdi=%lu st=%u fault=%lx:", rdi,
		                       f->hdr.status, f->hdr.fault_addr);
		struct ns_frame_block blk;
		const uint8_t *pl;
		size_t it = 0;
		while (ns_frame_next_block(f, &it, &blk, &pl) && at + 256 < cap) {
			bool stack = blk.addr >= rsp - 64 && blk.addr < rsp + 4096;
			at += (size_t)snprintf(out + at, cap - at, " [%u %s%lx %u", blk.type,
			                       stack ? "rsp+" : "", stack ? blk.addr - rsp : blk.addr,
			                       blk.len);
			for (uint32_t b = 0; b < blk.len && b < 16 && blk.type != NS_FRAME_BLOCK_REGS &&
			                     blk.type != NS_FRAME_BLOCK_REGS_SOME;
			     b++)
				at += (size_t)snprintf(out + at, cap - at, " %02x", pl[b]);
			at += (size_t)snprintf(out + at, cap - at, "]");
		}
		at += (size_t)snprintf(out + at, cap - at, "\n");
		// Against what the program computes: the counter at work(k)'s entry.
		uint32_t c = 0;
		NS_CHECK(ns_frame_read(f, t.counter, &c, 4) == 4 && c == counter_at(rdi));
		NS_CHECK_INT(f->hdr.status, NS_AX_FAULT); // action 3 always faults first
		NS_CHECK(f->hdr.fault_addr == 0x10);
	}
	cleanup(&p);
}

// Native X actions give the frames the interpreter gives: memory blocks, error blocks,
// the first failure in the header; the action that has a loop stays interpreted, says so.
NS_TEST(test_agent_e2e__jump_jit_actions_match_interpreter)
{
	enum { CAP = 1 << 20 };
	char *jit = malloc(CAP), *interp = malloc(CAP), text[512];
	jump_actions_run(false, jit, CAP, text, sizeof(text));
	printf("%s\n", text);
	NS_CHECK(strstr(text, "; action 5 interpreted: ") != NULL);
	NS_CHECK(strstr(text, "action 1 ") == NULL && strstr(text, "action 4 ") == NULL);
	NS_CHECK(strstr(text, "condition") == NULL);
	jump_actions_run(true, interp, CAP, text, sizeof(text));
	NS_CHECK(strstr(text, "; actions interpreted: NONSTOP_AGENT_NO_JIT=1") != NULL);
	NS_CHECK(strlen(jit) > 300 * 40);
	if (strcmp(jit, interp) != 0) {
		size_t i = 0;
		while (jit[i] == interp[i])
			i++;
		size_t from = i > 200 ? i - 200 : 0;
		ns_test_fail(__FILE__, __LINE__, "native and interpreted frames differ at %zu:\n%.400s\n---\n%.400s",
		             i, jit + from, interp + from);
	}
	free(jit);
	free(interp);
}

// Executable anonymous mappings of process @pid (where slots, pads and native code go).
static unsigned exec_anon_maps(pid_t pid)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *f = fopen(path, "re");
	unsigned n = 0;
	while (f && fgets(line, sizeof(line), f)) {
		char perms[8] = "";
		unsigned long inode = 1;
		if (sscanf(line, "%*x-%*x %7s %*x %*x:%*x %lu", perms, &inode) == 2 &&
		    perms[2] == 'x' && inode == 0 && !strchr(line, '['))
			n++;
	}
	if (f)
		fclose(f);
	return n;
}

// The pad address an INSTALL reply names ("pad at 0x..."), 0 if none.
static uint64_t pad_of(const char *text)
{
	const char *p = strstr(text, "pad at 0x");
	return p ? strtoull(p + 7, NULL, 16) : 0;
}

// A logpoint toggled on and off hundreds of times (two definitions in turn, as a user
// editing a condition back and forth) takes the same pad, slot and native code each
// time instead of new memory; the program is unchanged and the last one collects.
NS_TEST(test_agent_e2e__pads_reused_when_toggled)
{
	struct target t;
	uint64_t lo, hi;
	const char *args[] = {"1000", NULL};
	char ref[4096];
	struct proc p;
	if (!launch_work(&p, &t, args, false, ref, sizeof(ref), &lo, &hi)) {
		cleanup(&p);
		return;
	}
	p.tier = NS_AGENT_TIER_JUMP;
	uint64_t pads[2] = {0, 0};
	unsigned maps_after_first = 0;
	for (int k = 0; k < 400; k++) {
		struct ns_rsp_tracepoint tp;
		tp_in(&tp, 50 + (uint32_t)(k & 1), t.work, lo, hi);
		add_actions(&tp, t.counter);
		tp.cond = cond_code(k & 1, t.counter, &tp.cond_len);
		char text[256];
		NS_CHECK_INT(install(&p, &tp, text, sizeof(text)), 0);
		free_tp(&tp);
		uint64_t pad = pad_of(text);
		NS_CHECK(pad != 0);
		if (k < 2)
			pads[k] = pad;
		else if (pad != pads[k & 1]) {
			ns_test_fail(__FILE__, __LINE__, "install %d: pad 0x%lx, was 0x%lx", k, pad,
			             pads[k & 1]);
			break;
		}
		if (k == 1)
			maps_after_first = exec_anon_maps(p.pid);
		if (k < 399) {
			p.tier = 0; // a REMOVE's reply names no tier
			NS_CHECK_INT(remove_tp(&p, tp.num), 0);
			p.tier = NS_AGENT_TIER_JUMP;
		}
	}
	NS_CHECK(pads[0] != pads[1]);
	// 400 pads of ~1 KiB would have taken several 64 KiB code pages more.
	NS_CHECK_INT(exec_anon_maps(p.pid), maps_after_first);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	NS_CHECK_STR(p.output, ref);
	// The last one (number 51, "*(u64 *)rsp != 0 and rdi % 3 == 0") collects.
	size_t n = frames_of(&p, 51, frames_buf, 4 * N);
	NS_CHECK_INT(n, 334);
	for (size_t i = 0; i < n; i++) {
		uint64_t rdi = 1;
		uint32_t c = 0;
		NS_CHECK(ns_frame_reg(&frames_buf[i], NS_REG_RDI, &rdi) == 0 && rdi % 3 == 0);
		NS_CHECK(ns_frame_read(&frames_buf[i], t.counter, &c, 4) == 4 && c == counter_at(rdi));
	}
	cleanup(&p);
}

// Worker threads (stacks created after the INSTALL) with a condition that reads the stack.
NS_TEST(test_agent_e2e__jump_jit_condition_threads)
{
	struct target t;
	get_target(&t, false);
	uint64_t lo, hi;
	NS_CHECK(nm_range(t.exe, "work2", &lo, &hi));
	const char *args[] = {"500", "0", "threads", NULL};
	struct proc p;
	if (!launch(&p, t.exe, args, true, false)) {
		cleanup(&p);
		return;
	}
	p.tier = NS_AGENT_TIER_JUMP;
	struct ns_rsp_tracepoint tp;
	tp_in(&tp, 32, lo, lo, hi);
	tp.nactions = 1;
	tp.actions = calloc(1, sizeof(*tp.actions));
	tp.actions[0].kind = NS_RSP_ACT_REGS;
	tp.actions[0].regmask = ~0ull;
	tp.cond = cond_code(1, 0, &tp.cond_len); // return address != 0, rdi % 3 == 0
	char text[256];
	NS_CHECK_INT(install(&p, &tp, text, sizeof(text)), 0);
	NS_CHECK(strstr(text, "interpreted") == NULL);
	free_tp(&tp);
	resume(&p);
	run_until_exit(&p, 20000);
	NS_CHECK(exited_ok(&p));
	size_t n = frames_of(&p, 32, frames_buf, 4 * N);
	NS_CHECK_INT(n, 4 * 167); // 0, 3, ..., 498 per thread
	for (size_t i = 0; i < n; i++) {
		uint64_t rdi = 1;
		NS_CHECK(ns_frame_reg(&frames_buf[i], NS_REG_RDI, &rdi) == 0 && rdi % 3 == 0);
	}
	cleanup(&p);
}

/* ---- per-hit cost (printed, never asserted) ---- */

static double bench_once(int mode)
{
	struct target t;
	get_target(&t, false);
	uint64_t lo, hi;
	NS_CHECK(nm_range(t.exe, "work", &lo, &hi));
	const char *args[] = {"2000", "0", "bench", NULL};
	struct proc p;
	// For comparison by hand: E2E_BENCH_NO_JIT=1 interprets the condition.
	launch_no_jit = getenv("E2E_BENCH_NO_JIT") != NULL;
	bool ok = launch(&p, t.exe, args, true, false);
	launch_no_jit = false;
	if (!ok) {
		cleanup(&p);
		return 0;
	}
	if (mode) {
		p.tier = NS_AGENT_TIER_JUMP;
		struct ns_rsp_tracepoint tp;
		tp_in(&tp, 40, t.work, lo, hi);
		struct ns_ax_asm a;
		if (mode == 1) { // false condition: rdi == -1
			ns_ax_asm_init(&a);
			ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RDI);
			ns_ax_emit_const(&a, -1);
			ns_ax_emit(&a, NS_AX_EQUAL);
			tp.cond = steal(&a, &tp.cond_len);
		}
		// mode 1: R (never runs); mode 2: the two-int logpoint, R + 2 X actions
		tp.nactions = 3;
		tp.actions = calloc(3, sizeof(*tp.actions));
		tp.actions[0].kind = NS_RSP_ACT_REGS;
		tp.actions[0].regmask = ~0ull;
		for (int k = 1; k < 3; k++) {
			ns_ax_asm_init(&a);
			if (k == 1)
				ns_ax_emit_const(&a, (int64_t)t.counter);
			else
				ns_ax_emit_u16(&a, NS_AX_REG, NS_REG_RSP);
			ns_ax_emit_const(&a, 4);
			ns_ax_emit(&a, NS_AX_TRACE);
			tp.actions[k].kind = NS_RSP_ACT_EXPR;
			tp.actions[k].code = steal(&a, &tp.actions[k].code_len);
		}
		char text[256];
		NS_CHECK_INT(install(&p, &tp, text, sizeof(text)), 0);
		free_tp(&tp);
	}
	resume(&p);
	run_until_exit(&p, 30000);
	double ns = 0;
	NS_CHECK(sscanf(p.output, "bench %lf ns/call", &ns) == 1);
	if (mode == 2) {
		uint64_t dropped = 0;
		for (unsigned r = 0; r < NRINGS; r++)
			dropped += atomic_load(&ns_agent_shm_ring(p.shm, r)->dropped);
		NS_CHECK_INT(p.nframes + dropped, 10 * 2000);
	}
	if (mode == 1)
		NS_CHECK_INT(p.nframes, 0);
	cleanup(&p);
	return ns;
}

NS_TEST(test_agent_e2e__jump_ns_per_hit)
{
	double best[3] = {1e18, 1e18, 1e18};
	for (int rep = 0; rep < 3; rep++)
		for (int m = 0; m < 3; m++) {
			double v = bench_once(m);
			if (v > 0 && v < best[m])
				best[m] = v;
		}
	printf("jump-pad tier, ns per hit (best of 3 runs x 10 passes x 2000 calls): untraced "
	       "call %.1f ns; false condition +%.1f ns; two-int logpoint (R + 2 X) +%.1f ns\n",
	       best[0], best[1] - best[0], best[2] - best[0]);
}
