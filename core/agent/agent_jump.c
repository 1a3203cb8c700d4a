/* The jump-pad tier: a site's first whole instructions (>= 5 bytes, the window) are
 * replaced by "jmp rel32" to a pad near the code (core/arch builds it), whose collector
 * is ns_agent__pad_collect. Control thread only (capstone, malloc, /proc reads).
 *
 * Cross-modifying code is done as docs/jump-pads.md explains: the int3 first (the
 * site is already published, so a thread that hits it collects in the SIGTRAP handler
 * and resumes in the pad's relocated window), every core serialised with
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE), threads between two displaced
 * instructions moved into the pad (a real-time signal, NS_AGENT__MOVE_SIG), the tail,
 * serialise, the first byte (0xe9), serialise. Removal: int3, serialise, the original
 * tail, serialise, the original first byte, serialise. Pads are never freed nor
 * rewritten with other bytes: a removed site's pad is parked, and taken again only by
 * a site whose pad comes out the same (agent_ctl.c ns_agent__code_park). */
#define _GNU_SOURCE
#include "agent/agent_internal.h"
#include "base/clock.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/mem.h"

enum {
	MAX_FUNC_BYTES = 1 << 20, /* a function part larger than this is not swept */
	GUARD_MAX = 1024,         /* a condition's guard code larger than this stays out */
	MOVE_WAIT_MS = 500,       /* how long threads get to answer the move signal */
};

static bool inited;
static const char *unavailable; /* why there is no jump-pad tier at all, or NULL */
static char unavailable_buf[160];

static void set_unavailable(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void set_unavailable(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(unavailable_buf, sizeof(unavailable_buf), fmt, ap);
	va_end(ap);
	unavailable = unavailable_buf;
}

static bool handler_is(const struct sigaction *sa, void (*fn)(int, siginfo_t *, void *))
{
	return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == fn;
}

void ns_agent__jump_init(bool no_jump)
{
	if (inited)
		return;
	inited = true;
	ns_agent__jit_init();
#ifndef HWCAP2_FSGSBASE
#define HWCAP2_FSGSBASE (1 << 1)
#endif
	ns_agent__g.have_fsgsbase = (getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE) != 0;
	// Also what lets hits use per-thread slots (ns_agent__quiescent), in either tier.
	int mb = (int)syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
	                      0, 0);
	int mb_errno = errno;
	ns_agent__g.slots_ok = mb == 0;
	if (no_jump) {
		set_unavailable("the jump-pad tier is turned off (NONSTOP_AGENT_TIER=trap)");
		return;
	}
	if (mb != 0) {
		set_unavailable("membarrier(SYNC_CORE) is not available: %s", strerror(mb_errno));
		return;
	}
	int sig = NS_AGENT__MOVE_SIG;
	struct sigaction old;
	if (sigaction(sig, NULL, &old) != 0) {
		set_unavailable("cannot query signal %d: %s", sig, strerror(errno));
		return;
	}
	bool has =
	        (old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != NULL : old.sa_handler != SIG_DFL;
	if (has) {
		set_unavailable("the program handles signal SIGRTMAX-2 (%d), which the agent "
		                "needs to move threads out of patched code",
		                sig);
		return;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = ns_agent__on_move;
	sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
	sigfillset(&sa.sa_mask); // the program's async handlers wait (as for SIGTRAP)
	sigdelset(&sa.sa_mask, SIGTRAP);
	sigdelset(&sa.sa_mask, SIGSEGV);
	sigdelset(&sa.sa_mask, SIGBUS);
	sigdelset(&sa.sa_mask, SIGILL);
	sigdelset(&sa.sa_mask, SIGFPE);
	if (sigaction(sig, &sa, NULL) != 0)
		set_unavailable("cannot install the handler of signal %d: %s", sig,
		                strerror(errno));
}

const char *ns_agent__jump_unavailable(void)
{
	return unavailable;
}

static int sync_cores(void)
{
	return (int)syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0);
}

/* ---- window ---- */

static int read_self(void *ctx, void *dst, uint64_t addr, size_t len)
{
	(void)ctx;
	return ns_mem_read(dst, addr, len);
}

// Put back the original bytes of every patch inside [lo, hi) (@buf holds those bytes
// as they are in memory now: int3s, jmps).
static void overlay_originals(uint64_t lo, uint64_t hi, uint8_t *buf)
{
	for (unsigned i = 0; i < NS_AGENT__TABLE_SIZE; i++) {
		struct ns_agent__site *s = atomic_load(&ns_agent__g.table[i].site);
		if (!s)
			continue;
		size_t n = s->jumped ? s->wlen : 1;
		for (size_t k = 0; k < n; k++)
			if (s->addr + k >= lo && s->addr + k < hi)
				buf[s->addr + k - lo] = s->orig[k];
	}
}

// Another published site strictly inside (addr, addr + len), or 0.
static uint64_t site_inside(uint64_t addr, size_t len)
{
	for (unsigned i = 0; i < NS_AGENT__TABLE_SIZE; i++) {
		struct ns_agent__site *s = atomic_load(&ns_agent__g.table[i].site);
		if (s && s->addr > addr && s->addr < addr + len)
			return s->addr;
	}
	return 0;
}

static bool refuse(struct ns_agent__site *s, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static bool refuse(struct ns_agent__site *s, const char *fmt, ...)
{
	int n = snprintf(s->why, sizeof(s->why), "in-process trap tier (int3): ");
	va_list ap;
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(s->why))
		vsnprintf(s->why + n, sizeof(s->why) - (size_t)n, fmt, ap);
	va_end(ap);
	return false;
}

bool ns_agent__jump_prepare(struct ns_agent__site *s, const struct ns_rsp_tracepoint *def,
                            struct ns_agent__entry *e)
{
	s->tier = NS_AGENT_TIER_TRAP;
	if (unavailable)
		return refuse(s, "%s", unavailable);
	struct sigaction cur;
	if (sigaction(NS_AGENT__MOVE_SIG, NULL, &cur) != 0 || !handler_is(&cur, ns_agent__on_move))
		return refuse(s, "the program replaced the agent's handler of signal %d",
		              NS_AGENT__MOVE_SIG);
	if (def->nranges == 0)
		return refuse(s, "the function's address ranges are unknown");
	size_t n = def->nranges, home = n;
	for (size_t i = 0; i < n; i++)
		if (s->addr >= def->ranges[2 * i] && s->addr < def->ranges[2 * i + 1])
			home = i;
	if (home == n)
		return refuse(s, "0x%" PRIx64 " is outside its function's ranges", s->addr);
	struct ns_arch_code_range r[8];
	uint8_t *bytes[8] = {0};
	bool ok = false;
	for (size_t i = 0; i < n; i++) {
		r[i].lo = def->ranges[2 * i];
		r[i].hi = def->ranges[2 * i + 1];
		size_t len = (size_t)(r[i].hi - r[i].lo);
		if (len > MAX_FUNC_BYTES) {
			refuse(s, "function part at 0x%" PRIx64 " too large (%zu bytes)", r[i].lo,
			       len);
			goto out;
		}
		bytes[i] = malloc(len);
		if (!bytes[i] || ns_mem_read(bytes[i], r[i].lo, len) != 0) {
			refuse(s, "cannot read the function's code at 0x%" PRIx64, r[i].lo);
			goto out;
		}
		overlay_originals(r[i].lo, r[i].hi, bytes[i]);
		r[i].bytes = bytes[i];
	}
	struct ns_arch_code_range more[8];
	size_t nmore = 0;
	for (size_t i = 0; i < n; i++)
		if (i != home)
			more[nmore++] = r[i];
	struct ns_arch_pad_func fn = {r[home], more, nmore, NULL, 0, read_self, NULL};
	struct ns_arch_pad_window w;
	struct ns_err *err = ns_arch_pad_window(&fn, s->addr, &w);
	if (err) {
		refuse(s, "%s", err->msg);
		ns_err_destroy(err);
		goto out;
	}
	if (!w.eligible) {
		if (w.detail[0])
			refuse(s, "no safe jump-pad window: %s (%s)", w.reason, w.detail);
		else
			refuse(s, "no safe jump-pad window: %s", w.reason);
		goto out;
	}
	uint64_t other = site_inside(s->addr, w.len);
	if (other) {
		refuse(s,
		       "no safe jump-pad window: the tracepoint at 0x%" PRIx64
		       " lies inside the %u bytes it would displace",
		       other, w.len);
		goto out;
	}
	const uint8_t *code = r[home].bytes + (s->addr - r[home].lo);
	// The condition inline in the pad (a false one then costs a compare and a
	// branch), if it compiles as a guard.
	uint8_t guard[GUARD_MAX];
	size_t glen = 0;
	uint32_t gclobber = 0;
	char gwhy[160] = "";
	if (ns_arch_have_lahf64() &&
	    !ns_agent__jit_guard(def, s->addr, guard, sizeof(guard), &glen, &gclobber, gwhy,
	                         sizeof(gwhy)))
		glen = 0;
	// Without a condition: the whole collection written by the pad itself, if it is
	// a fixed-size record (a logpoint of registers and memory at fixed offsets).
	uint8_t rtmpl[NS_ARCH_PAD_REC_MAX];
	struct ns_arch_rec_field rfields[NS_ARCH_PAD_REC_FIELDS];
	struct ns_arch_rec_read rreads[NS_ARCH_PAD_REC_READS];
	struct ns_arch_pad_record rec;
	struct ns_agent__rec_plan rplan = {0};
	const char *rwhy = NULL;
	bool record = false;
	if (!glen && ns_arch_have_lahf64() && ns_agent__record_plan(def, &rplan, &rwhy)) {
		memset(&rec, 0, sizeof(rec));
		rec.len = ns_agent__record_build(def, s->addr, &rplan, rtmpl, rfields, &rec.nfields,
		                                 rreads);
		if (rec.len) {
			char *tp = __builtin_thread_pointer();
			rec.tmpl = rtmpl;
			rec.fields = rfields;
			rec.tls = (int32_t)((char *)&ns_agent__thr - tp);
			rec.tls_busy = (int32_t)((char *)&ns_agent__in_hit - tp);
			rec.gen_addr = (uint64_t)(uintptr_t)&ns_agent__g.gen;
			rec.ring_size = ns_agent__g.shm->ring_bytes;
			rec.head_off = offsetof(struct ns_agent_ring, head);
			rec.tail_off = offsetof(struct ns_agent_ring, tail);
			rec.seq_off = offsetof(struct ns_agent_ring, seq);
			rec.tail_seen_off = offsetof(struct ns_agent_ring, tail_seen);
			rec.busy_off = offsetof(struct ns_agent__slot, busy);
			rec.hits_off = offsetof(struct ns_agent__slot, hits);
			rec.reads = rreads;
			rec.nreads = rplan.nreads;
			rec.tls_stk_lo = (int32_t)((char *)&ns_agent__guard_lo - tp);
			rec.tls_stk_limit = (int32_t)((char *)&ns_agent__guard_limit - tp);
			rec.read_fn = (uint64_t)(uintptr_t)ns_agent__pad_read;
			record = true;
		} else {
			rwhy = "its frame is too large";
		}
	}
	uint64_t pad = 0;
	size_t pad_cap = NS_ARCH_PAD_MAX_LEN + (glen ? NS_ARCH_PAD_GUARD_EXTRA + glen : 0) +
	                 (record ? NS_ARCH_PAD_REC_EXTRA + rec.nreads * NS_ARCH_PAD_REC_READ_EXTRA : 0);
	struct ns_arch_pad_spec spec = {
	        .site = s->addr,
	        .code = code,
	        .window_len = w.len,
	        .pad_addr = 0,
	        .collector = (uint64_t)(uintptr_t)ns_agent__pad_collect,
	        .ctx = (uint64_t)(uintptr_t)e,
	        .flags = NS_ARCH_PAD_FLAGS_AUTO,
	        .guard = guard,
	        .guard_len = glen,
	        .guard_clobber = gclobber,
	        .record = record ? &rec : NULL,
	};
	uint8_t buf[NS_ARCH_PAD_MAX_LEN + NS_ARCH_PAD_GUARD_EXTRA + GUARD_MAX +
	            NS_ARCH_PAD_REC_EXTRA + NS_ARCH_PAD_REC_READS * NS_ARCH_PAD_REC_READ_EXTRA];
	struct ns_arch_pad p;
	// The pad an earlier site here had, if this one comes out byte for byte the same
	// (its armed bytes aside): a thread still in it runs what it would have run.
	uint64_t cand[16];
	size_t nc = ns_agent__code_parked(s->addr, pad_cap, cand, 16);
	for (size_t i = 0; i < nc && !pad; i++) {
		spec.pad_addr = cand[i];
		if ((err = ns_arch_pad_emit(&spec, buf, pad_cap, &p))) {
			ns_err_destroy(err);
			continue;
		}
		size_t skip[2] = {p.armed_off, p.record_armed_off};
		if (ns_agent__code_take(cand[i], buf, p.len, skip, 2)) {
			pad = cand[i];
			// Armed as written; publish then keeps them right.
			for (int k = 0; k < 2; k++)
				if (skip[k] && (err = ns_agent__write_code(pad + skip[k], buf + skip[k], 1)))
					ns_err_destroy(err); // publish rewrites it
		}
	}
	if (!pad && (err = ns_agent__code_alloc(s->addr, pad_cap, &pad))) {
		refuse(s, "no room for a pad: %s", err->msg);
		ns_err_destroy(err);
		goto out;
	}
	bool reused = spec.pad_addr == pad;
	spec.pad_addr = pad;
	if (!reused && ((err = ns_arch_pad_emit(&spec, buf, pad_cap, &p)) ||
	                (err = ns_agent__write_code(pad, buf, p.len)))) {
		refuse(s, "cannot build the pad: %s", err->msg);
		ns_err_destroy(err);
		goto out;
	}
	// Written armed; agent_ctl.c's publish keeps it armed only while it is right,
	// which needs the condition it was compiled from (else: off for good).
	uint8_t *gcond = p.armed_off ? malloc(def->cond_len) : NULL;
	s->guard_armed = gcond ? pad + p.armed_off : 0;
	s->guard_cond = gcond;
	s->guard_cond_len = gcond ? def->cond_len : 0;
	if (gcond) {
		memcpy(gcond, def->cond, def->cond_len);
	} else if (p.armed_off) {
		static const uint8_t off = 0;
		ns_err_destroy(ns_agent__write_code(pad + p.armed_off, &off, 1));
	}
	// Written armed; publish keeps it armed only while the site's tracepoint plans to
	// this record.
	s->record_armed = p.record_armed_off ? pad + p.record_armed_off : 0;
	s->record_num = def->num;
	s->record_plan = rplan;
	s->record_shm = ns_agent__g.shm;
	memcpy(s->orig, code, w.len);
	s->pad = pad;
	s->pad_cap = pad_cap;
	s->pad_block = pad + p.block_off;
	s->padinfo = p;
	s->wlen = w.len;
	snprintf(s->why, sizeof(s->why),
	         "jump-pad tier (%u bytes displaced, pad at 0x%" PRIx64 "%s%s)%s%s%s", w.len, pad,
	         s->guard_armed ? ", condition inline" : "",
	         s->record_armed ? ", record inline" : "", gwhy,
	         !s->record_armed && !def->cond && rwhy ? "; record not inline: " : "",
	         !s->record_armed && !def->cond && rwhy ? rwhy : "");
	ok = true;
out:
	for (size_t i = 0; i < n; i++)
		free(bytes[i]);
	return ok;
}

/* ---- moving threads ---- */

// Whether thread @tid may be executing user code inside (lo, lo+len): it is runnable
// (/proc/.../syscall says "running"), or it sleeps with its user pc inside. A thread
// asleep elsewhere (in a syscall or a fault) cannot be inside: it resumes at its pc,
// and no path leads into the window any more except through the int3 at lo.
static bool may_be_inside(pid_t tid, uint64_t lo, uint64_t len)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	FILE *f = fopen(path, "re");
	if (!f)
		return true;
	bool r = true;
	if (fgets(line, sizeof(line), f) && strncmp(line, "running", 7) != 0) {
		// "nr a1 .. a6 sp pc" or "-1 sp pc": the last field is the pc.
		char *last = strrchr(line, ' ');
		if (last) {
			uint64_t pc = strtoull(last + 1, NULL, 0);
			r = pc > lo && pc < lo + len;
		}
	}
	fclose(f);
	return r;
}

// Signal every thread that may be inside the window and wait until each has run
// ns_agent__on_move (which moves it into the pad). false (reason in @why) if a thread
// could not be reached.
static bool move_threads(const struct ns_agent__site *s, char *why, size_t cap)
{
	struct ns_agent__move *mv = &ns_agent__mv;
	pid_t pid = getpid(), self = (pid_t)syscall(SYS_gettid);
	atomic_store(&mv->lo, 0);
	mv->len = s->wlen;
	mv->block = s->pad_block;
	mv->reloc = s->padinfo.reloc;
	mv->ntids = 0;
	DIR *d = opendir("/proc/self/task");
	if (!d) {
		snprintf(why, cap, "cannot list the program's threads: %s", strerror(errno));
		return false;
	}
	struct dirent *de;
	bool too_many = false;
	while ((de = readdir(d))) {
		pid_t tid = (pid_t)atoi(de->d_name);
		if (tid <= 0 || tid == self || !may_be_inside(tid, s->addr, s->wlen))
			continue;
		if (mv->ntids == NS_AGENT__MOVE_MAX_TIDS) {
			too_many = true;
			break;
		}
		atomic_store(&mv->acked[mv->ntids], 0);
		mv->tids[mv->ntids++] = (uint32_t)tid;
	}
	closedir(d);
	if (too_many) {
		snprintf(why, cap, "more than %d running threads", NS_AGENT__MOVE_MAX_TIDS);
		return false;
	}
	if (mv->ntids == 0)
		return true;
	uint32_t gen = atomic_fetch_add(&mv->gen, 1) + 1;
	if (gen == 0) // 0 means "not acknowledged"
		gen = atomic_fetch_add(&mv->gen, 1) + 1;
	atomic_store(&mv->lo, s->addr);
	for (unsigned i = 0; i < mv->ntids; i++)
		if (syscall(SYS_tgkill, pid, mv->tids[i], NS_AGENT__MOVE_SIG) != 0)
			atomic_store(&mv->acked[i], gen); // gone already
	if (ns_agent__g.shm)
		atomic_fetch_add_explicit(&ns_agent__g.shm->move_signals, mv->ntids,
		                          memory_order_relaxed);
	int64_t deadline = ns_mono_ms() + MOVE_WAIT_MS;
	unsigned waiting = mv->ntids;
	for (unsigned spin = 0; waiting; spin++) {
		waiting = 0;
		for (unsigned i = 0; i < mv->ntids; i++)
			if (atomic_load(&mv->acked[i]) != gen)
				waiting++;
		if (!waiting)
			break;
		if (ns_mono_ms() > deadline) {
			// Threads that exited meanwhile do not count.
			unsigned stuck = 0;
			uint32_t first = 0;
			for (unsigned i = 0; i < mv->ntids; i++)
				if (atomic_load(&mv->acked[i]) != gen &&
				    syscall(SYS_tgkill, pid, mv->tids[i], 0) == 0) {
					if (!stuck++)
						first = mv->tids[i];
				}
			if (!stuck)
				break;
			atomic_store(&mv->lo, 0);
			snprintf(why, cap,
			         "thread %u (and %u more) did not answer signal %d within %d ms "
			         "(signal blocked?)",
			         first, stuck - 1, NS_AGENT__MOVE_SIG, MOVE_WAIT_MS);
			return false;
		}
		if (spin < 100)
			sched_yield();
		else
			usleep(200);
	}
	atomic_store(&mv->lo, 0);
	return true;
}

/* ---- patching ---- */

int ns_agent__jump_patch(const struct ns_agent__site *s, char *why, size_t cap)
{
	struct ns_err *err;
	if (sync_cores() != 0) {
		snprintf(why, cap, "membarrier failed: %s", strerror(errno));
		return 0;
	}
	// A window of one instruction has no pc strictly inside it (a thread is between
	// instructions whenever it is interrupted) and no return address inside it (a call
	// ends a window): no thread to move, so no signal that could interrupt a syscall.
	if (s->padinfo.reloc.ninsns > 1 && !move_threads(s, why, cap))
		return 0;
	uint8_t j[NS_ARCH_PAD_MAX_WINDOW];
	memset(j, 0xcc, sizeof(j));
	j[0] = 0xe9;
	int32_t rel = (int32_t)(int64_t)(s->pad - (s->addr + 5));
	memcpy(j + 1, &rel, 4);
	if ((err = ns_agent__write_code(s->addr + 1, j + 1, s->wlen - 1u))) {
		snprintf(why, cap, "%s", err->msg);
		ns_err_destroy(err);
		return -1;
	}
	if (sync_cores() != 0) {
		snprintf(why, cap, "membarrier failed: %s", strerror(errno));
		return -1;
	}
	if ((err = ns_agent__write_code(s->addr, j, 1))) {
		snprintf(why, cap, "%s", err->msg);
		ns_err_destroy(err);
		return -1;
	}
	sync_cores();
	return 1;
}

struct ns_err *ns_agent__jump_unpatch(const struct ns_agent__site *s, bool restore_first)
{
	static const uint8_t int3 = 0xcc;
	struct ns_err *err;
	if ((err = ns_agent__write_code(s->addr, &int3, 1)))
		return err;
	sync_cores();
	// No thread can be inside the window: it is entered only through addr (int3 now,
	// or the jmp before), and the pad returns to addr + wlen.
	if ((err = ns_agent__write_code(s->addr + 1, s->orig + 1, s->wlen - 1u)))
		return err;
	sync_cores();
	if (restore_first) {
		if ((err = ns_agent__write_code(s->addr, s->orig, 1)))
			return err;
		sync_cores();
	}
	return NULL;
}
