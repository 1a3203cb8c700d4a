/* Native conditions for the jump-pad tier, and the tables the hit path reads without
 * locks (the stack mappings, the TSC calibration). Control thread only (malloc,
 * /proc reads). */
#define _GNU_SOURCE
#include "agent/agent_internal.h"
#include "base/tsc.h"
#include "frame/frame.h"

#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <linux/membarrier.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static bool no_jit;
static uint32_t maps_gen;
_Atomic(struct ns_agent__maps *) ns_agent__maps_cur;

static bool tsc_ok; /* invariant TSC: inline records may stamp hits with rdtsc */
__thread struct ns_arch_pad_thread ns_agent__thr __attribute__((tls_model("initial-exec")));

void ns_agent__jit_init(void)
{
	const char *v = getenv("NONSTOP_AGENT_NO_JIT");
	no_jit = v && strcmp(v, "1") == 0;
	v = getenv("NONSTOP_AGENT_NO_PROBE");
	ns_agent__g.no_probe = v && strcmp(v, "1") == 0;
	tsc_ok = ns_tsc_invariant();
}

/* ---- inline records (arch.h) ---- */

bool ns_agent__record_plan(const struct ns_rsp_tracepoint *d, struct ns_agent__rec_plan *plan,
                           const char **why)
{
	memset(plan, 0, sizeof(*plan));
	*why = NULL;
	if (no_jit)
		*why = "NONSTOP_AGENT_NO_JIT=1";
	else if (!tsc_ok)
		*why = "no invariant TSC to stamp hits with";
	else if (!d->enabled)
		*why = "disabled";
	else if (d->cond)
		*why = "a condition";
	else if (d->hit_mode != NS_RSP_HIT_ALWAYS)
		*why = "a hit condition";
	else if (d->max_frames)
		*why = "a frame limit";
	else if (!ns_agent__g.shm || (ns_agent__g.shm->ring_bytes & (ns_agent__g.shm->ring_bytes - 1)))
		*why = "rings whose size is not a power of two";
	for (size_t i = 0; !*why && i < d->nactions; i++) {
		const struct ns_rsp_action *a = &d->actions[i];
		struct ns_ax_plan p;
		if (a->kind == NS_RSP_ACT_REGS)
			plan->mask |= a->regmask;
		else if (a->kind == NS_RSP_ACT_MEM)
			*why = "a memory collection";
		if (a->kind != NS_RSP_ACT_EXPR || ns_ax_is_inert(a->code, a->code_len, NS_ARCH_PAD_NREGS))
			continue;
		if (!ns_ax_plan_reads(a->code, a->code_len, NS_ARCH_PAD_NREGS, &p, why))
			continue; // *why says which part of the expression
		if (plan->nreads + p.n > NS_ARCH_PAD_REC_READS)
			*why = "more than 8 memory reads";
		for (unsigned k = 0; !*why && k < p.n; k++) {
			struct ns_ax_plan_read *r = &plan->reads[plan->nreads + k];
			r->base = p.r[k].base;
			r->from = p.r[k].from;
			r->ref = p.r[k].ref;
			r->trace = p.r[k].trace;
			r->disp = p.r[k].disp;
			if (r->base == NS_AX_PLAN_READ)
				r->from = (uint8_t)(r->from + plan->nreads);
			else if (r->base == NS_AX_PLAN_REG && r->from > NS_ARCH_PAD_REG_RIP)
				*why = "an address from a register other than the general ones and rip";
		}
		if (!*why)
			plan->nreads += p.n;
	}
	plan->mask &= ((uint64_t)1 << NS_FRAME_NREGS) - 1;
	if (!*why && (plan->mask >> (NS_ARCH_PAD_REG_RIP + 1)))
		*why = "registers other than the general ones and rip";
	return *why == NULL;
}

// The compact-record templates this agent wrote into the current shm (control thread
// only), found again by content: a tracepoint removed and installed again (or on many
// sites with the same frame) takes no new slot.
static struct {
	const struct ns_agent_shm *shm;
	unsigned n;
	uint64_t hash[NS_AGENT_NTMPL];
} tmpls;

static uint64_t tmpl_hash(const struct ns_agent_tmpl *t, uint32_t flen)
{
	uint64_t h = 1469598103934665603ull; // FNV-1a
	const uint8_t *parts[] = {(const uint8_t *)&t->rec_len, (const uint8_t *)t->fields, t->frame};
	size_t lens[] = {8, t->nfields * sizeof(t->fields[0]), flen};
	for (size_t p = 0; p < 3; p++)
		for (size_t i = 0; i < lens[p]; i++)
			h = (h ^ parts[p][i]) * 1099511628211ull;
	return h;
}

// The slot holding @want (frame_len @flen), written now if no slot does; -1 if the
// table is full.
static int tmpl_slot(const struct ns_agent_tmpl *want, uint32_t flen)
{
	struct ns_agent_shm *shm = ns_agent__g.shm;
	if (tmpls.shm != shm) {
		tmpls.shm = shm;
		tmpls.n = 0;
	}
	uint64_t h = tmpl_hash(want, flen);
	size_t flds = want->nfields * sizeof(want->fields[0]);
	for (unsigned i = 0; i < tmpls.n; i++) {
		const struct ns_agent_tmpl *t = ns_agent_shm_tmpl(shm, i);
		if (tmpls.hash[i] == h && atomic_load(&t->frame_len) == flen &&
		    t->rec_len == want->rec_len && t->nfields == want->nfields &&
		    memcmp(t->fields, want->fields, flds) == 0 && memcmp(t->frame, want->frame, flen) == 0)
			return (int)i;
	}
	if (tmpls.n == NS_AGENT_NTMPL)
		return -1;
	struct ns_agent_tmpl *t = ns_agent_shm_tmpl(shm, tmpls.n);
	t->rec_len = want->rec_len;
	t->nfields = want->nfields;
	memcpy(t->fields, want->fields, flds);
	memcpy(t->frame, want->frame, flen);
	atomic_store_explicit(&t->frame_len, flen, memory_order_release);
	tmpls.hash[tmpls.n] = h;
	return (int)tmpls.n++;
}

// A part of an inline record's frame that varies from hit to hit: where it goes in the
// frame, its size, and what the pad writes there.
struct piece {
	uint16_t frame_off, len;
	uint8_t kind; /* enum ns_arch_rec_kind, or P_ADDR / P_DATA of read @arg */
	uint8_t arg;  /* NS_ARCH_REC_REG: the register; P_*: the read */
};
enum { P_ADDR = 0x10, P_DATA };

// Where the record carries each piece (@rec_off: 8-byte aligned but the tid's) into
// the pad's fields and reads (@reads already holds each read's plan).
static void place(const struct piece *pc, size_t npc, const uint16_t *rec_off,
                  struct ns_arch_rec_field *fields, size_t *nfields,
                  struct ns_arch_rec_read *reads)
{
	size_t n = 0;
	for (size_t i = 0; i < npc; i++) {
		if (pc[i].kind == P_ADDR)
			reads[pc[i].arg].addr_off = rec_off[i];
		else if (pc[i].kind == P_DATA)
			reads[pc[i].arg].data_off = rec_off[i];
		else
			fields[n++] = (struct ns_arch_rec_field){rec_off[i], pc[i].kind, pc[i].arg};
	}
	*nfields = n;
}

// The compact record (agent.h) of the frame @frame: its template in the shm's table,
// the ring template into @tmpl, the pieces' places into @rec_off. @frame may lie in
// @tmpl (it is copied first). 0 if the table is full or the record too large.
static size_t record_compact(const uint8_t *frame, size_t flen, const struct piece *pc,
                             size_t npc, uint8_t tmpl[NS_ARCH_PAD_REC_MAX], uint16_t *rec_off)
{
	static struct ns_agent_tmpl want; // control thread only; too large for its stack
	if (flen > NS_AGENT_TMPL_FRAME_MAX || npc > NS_AGENT_TMPL_FIELDS)
		return 0;
	// The word (the template and the length), the tid in its upper half, then the
	// pieces 8-byte aligned.
	size_t len = 8;
	for (size_t i = 0; i < npc; i++) {
		if (pc[i].kind == NS_ARCH_REC_TID) {
			rec_off[i] = 4;
			continue;
		}
		rec_off[i] = (uint16_t)len;
		len += (pc[i].len + 7u) & ~7u;
		if (len > NS_ARCH_PAD_REC_MAX || len > NS_AGENT_RECORD_LEN_MASK)
			return 0;
	}
	memset(&want, 0, sizeof(want));
	want.rec_len = (uint32_t)len;
	want.nfields = (uint32_t)npc;
	for (size_t i = 0; i < npc; i++)
		want.fields[i] = (struct ns_agent_tmpl_field){rec_off[i], pc[i].frame_off, pc[i].len, 0};
	memcpy(want.frame, frame, flen);
	int idx = tmpl_slot(&want, (uint32_t)flen);
	if (idx < 0)
		return 0;
	memset(tmpl, 0, len);
	uint32_t w0 = NS_AGENT_RECORD_COMPACT | NS_AGENT_RECORD_TSC |
	              (uint32_t)idx << NS_AGENT_RECORD_TMPL_SHIFT | (uint32_t)len;
	memcpy(tmpl, &w0, 4);
	return len;
}

// [addr, addr+len) lies in the executable's own mappings (always readable).
static bool in_static(uint64_t addr, uint64_t len)
{
	const struct ns_agent__maps *m = atomic_load(&ns_agent__maps_cur);
	for (unsigned i = 0; m && i < m->nst; i++)
		if (addr >= m->st[2 * i] && addr < m->st[2 * i + 1] && len <= m->st[2 * i + 1] - addr)
			return true;
	return false;
}

size_t ns_agent__record_build(const struct ns_rsp_tracepoint *d, uint64_t site,
                              const struct ns_agent__rec_plan *plan,
                              uint8_t tmpl[NS_ARCH_PAD_REC_MAX],
                              struct ns_arch_rec_field fields[NS_ARCH_PAD_REC_FIELDS],
                              size_t *nfields, struct ns_arch_rec_read reads[NS_ARCH_PAD_REC_READS])
{
	enum { REC_HDR = 8 };
	struct ns_frame_hdr hdr;
	memset(&hdr, 0, sizeof(hdr));
	hdr.tp_id = d->num;
	hdr.addr = site;
	struct ns_frame_builder b;
	memset(tmpl, 0, NS_ARCH_PAD_REC_MAX);
	if (ns_frame_begin(&b, tmpl + REC_HDR, NS_ARCH_PAD_REC_MAX - REC_HDR, &hdr) != 0)
		return 0;
	// The frame as the collector builds it (the register block, then one memory block
	// per traced read), and where its varying parts are.
	struct piece pc[3 + NS_ARCH_PAD_REG_RIP + 1 + 2 * NS_ARCH_PAD_REC_READS];
	size_t npc = 0;
	pc[npc++] = (struct piece){offsetof(struct ns_frame_hdr, tid), 4, NS_ARCH_REC_TID, 0};
	pc[npc++] = (struct piece){offsetof(struct ns_frame_hdr, time_ns), 8, NS_ARCH_REC_TSC, 0};
	pc[npc++] = (struct piece){offsetof(struct ns_frame_hdr, seq), 8, NS_ARCH_REC_SEQ, 0};
	if (plan->mask) {
		uint64_t zero[NS_FRAME_NREGS] = {0};
		// The block's payload: the mask, then the registers, lowest number first.
		size_t at = b.len + sizeof(struct ns_frame_block) + 8;
		if (ns_frame_add_regs_some(&b, plan->mask, zero) != 0)
			return 0;
		for (unsigned r = 0; r <= NS_ARCH_PAD_REG_RIP; r++)
			if (plan->mask & ((uint64_t)1 << r)) {
				pc[npc++] = (struct piece){(uint16_t)at, 8, NS_ARCH_REC_REG, (uint8_t)r};
				at += 8;
			}
	}
	static const uint8_t base[] = {[NS_AX_PLAN_ABS] = NS_ARCH_REC_ABS,
	                               [NS_AX_PLAN_REG] = NS_ARCH_REC_AT_REG,
	                               [NS_AX_PLAN_READ] = NS_ARCH_REC_AT_READ};
	for (uint32_t i = 0; i < plan->nreads; i++) {
		const struct ns_ax_plan_read *r = &plan->reads[i];
		uint16_t n = r->trace > r->ref ? r->trace : r->ref;
		reads[i] = (struct ns_arch_rec_read){
		        .base = base[r->base],
		        .from = r->from,
		        .ref = r->ref,
		        .direct = r->base == NS_AX_PLAN_ABS && in_static(r->disp, n),
		        .trace = r->trace,
		        .disp = r->disp,
		};
		if (!r->trace)
			continue;
		size_t at = b.len;
		if (!ns_frame_reserve_mem(&b, r->base == NS_AX_PLAN_ABS ? r->disp : 0, r->trace))
			return 0;
		if (r->base != NS_AX_PLAN_ABS)
			pc[npc++] = (struct piece){(uint16_t)(at + offsetof(struct ns_frame_block, addr)),
			                           8, P_ADDR, (uint8_t)i};
		pc[npc++] = (struct piece){(uint16_t)(at + sizeof(struct ns_frame_block)), r->trace,
		                           P_DATA, (uint8_t)i};
	}
	size_t flen = ns_frame_end(&b);
	if (b.overflow || !flen)
		return 0;
	uint16_t rec_off[sizeof(pc) / sizeof(pc[0])];
	size_t clen = record_compact(tmpl + REC_HDR, flen, pc, npc, tmpl, rec_off);
	if (!clen) {
		// The template table is full (or the compact record too large): the whole
		// frame in the ring.
		for (size_t i = 0; i < npc; i++)
			rec_off[i] = (uint16_t)(REC_HDR + pc[i].frame_off);
		clen = (REC_HDR + flen + 7) & ~(size_t)7;
		if (clen > NS_ARCH_PAD_REC_MAX)
			return 0;
		uint32_t w0 = (uint32_t)clen | NS_AGENT_RECORD_TSC, w1 = (uint32_t)flen;
		memcpy(tmpl, &w0, 4);
		memcpy(tmpl + 4, &w1, 4);
	}
	place(pc, npc, rec_off, fields, nfields, reads);
	return clen;
}

static void append(char *why, size_t cap, const char *fmt, const char *arg)
{
	size_t n = strlen(why);
	if (n < cap)
		snprintf(why + n, cap - n, fmt, arg);
}

// @code compiled for the pad's register block into code memory near @near: the
// function, or NULL with the reason in *@err; *@reads_mem: it has a ref opcode (only
// then must a hit set up the ranges the native code reads inline; no listing: assume
// it does).
static ns_ax_jit_fn compile(const uint8_t *code, size_t len, uint64_t near, bool *reads_mem,
                            size_t *used_out, struct ns_err **err_out)
{
	struct ns_ax_jit_options opt = {
	        .nregs = NS_ARCH_PAD_NREGS, .max_steps = 0, .nfast = NS_AX_JIT_NRANGES};
	size_t bound = ns_ax_jit_size_bound(len);
	uint8_t *buf = malloc(bound);
	if (!buf) {
		*err_out = ns_err_create(NS_ERR_NOMEM, "out of memory");
		return NULL;
	}
	size_t used = 0;
	uint64_t mem = 0;
	struct ns_err *err = ns_ax_jit_compile(code, len, &opt, buf, bound, &used);
	if (!err && used > 60 * 1024)
		err = ns_err_create(NS_ERR_UNSUPPORTED, "native code too large (%zu bytes)", used);
	if (!err) // position-independent: the same program again takes its parked copy
		err = ns_agent__code_place(near, buf, used, &mem);
	free(buf);
	*used_out = used;
	if (err) {
		*err_out = err;
		return NULL;
	}
	char *dis = ns_ax_disasm(code, len);
	*reads_mem = !dis || strstr(dis, " ref") != NULL;
	free(dis);
	return (ns_ax_jit_fn)(uintptr_t)mem;
}

void ns_agent__jit_tp(struct ns_agent__tp *tp, uint64_t near, char *why, size_t cap)
{
	const struct ns_rsp_tracepoint *d = &tp->def;
	tp->cond_jit = NULL;
	tp->act_jit = NULL;
	tp->act_reads_mem = false;
	size_t nx = 0;
	for (size_t i = 0; i < d->nactions; i++)
		nx += d->actions[i].kind == NS_RSP_ACT_EXPR;
	if (no_jit) {
		if (d->cond)
			append(why, cap, "; condition interpreted: %s", "NONSTOP_AGENT_NO_JIT=1");
		if (nx)
			append(why, cap, "; actions interpreted: %s", "NONSTOP_AGENT_NO_JIT=1");
		return;
	}
	struct ns_err *err = NULL;
	if (d->cond) {
		tp->cond_jit = compile(d->cond, d->cond_len, near, &tp->cond_reads_mem,
		                       &tp->cond_jit_len, &err);
		if (err) {
			append(why, cap, "; condition interpreted: %s", err->msg);
			ns_err_destroy(err);
			err = NULL;
		}
	}
	if (!nx)
		return;
	tp->act_jit = calloc(d->nactions, sizeof(*tp->act_jit));
	tp->act_jit_len = calloc(d->nactions, sizeof(*tp->act_jit_len));
	if (!tp->act_jit || !tp->act_jit_len) {
		free(tp->act_jit);
		free(tp->act_jit_len);
		tp->act_jit = NULL;
		tp->act_jit_len = NULL;
		append(why, cap, "; actions interpreted: %s", "out of memory");
		return;
	}
	// Each expression on its own: one that cannot be compiled (a loop, too long) is
	// interpreted, the others still run natively.
	for (size_t i = 0; i < d->nactions; i++) {
		const struct ns_rsp_action *a = &d->actions[i];
		if (a->kind != NS_RSP_ACT_EXPR)
			continue;
		bool reads = false;
		tp->act_jit[i] = compile(a->code, a->code_len, near, &reads, &tp->act_jit_len[i], &err);
		tp->act_reads_mem |= reads;
		if (err) {
			char what[32];
			snprintf(what, sizeof(what), "; action %zu", i);
			append(why, cap, "%s", what);
			append(why, cap, " interpreted: %s", err->msg);
			ns_err_destroy(err);
			err = NULL;
		}
	}
}

bool ns_agent__jit_guard(const struct ns_rsp_tracepoint *d, uint64_t site, uint8_t *buf,
                         size_t cap, size_t *len, uint32_t *clobber, char *why, size_t why_cap)
{
	if (!d->cond)
		return false;
	if (no_jit) {
		append(why, why_cap, "; condition not inline: %s", "NONSTOP_AGENT_NO_JIT=1");
		return false;
	}
	// Initial-exec TLS sits at the same offset from the thread pointer in every thread.
	char *tp = __builtin_thread_pointer();
	struct ns_ax_jit_guard g = {
	        .block = 0,
	        .rsp_add = NS_ARCH_PAD_FRAME,
	        .rip = site,
	        .tls = true,
	        .tls_lo = (int32_t)((char *)&ns_agent__guard_lo - tp),
	        .tls_limit = (int32_t)((char *)&ns_agent__guard_limit - tp),
	};
	struct ns_err *err = ns_ax_jit_compile_guard(d->cond, d->cond_len, &g, buf, cap, len, clobber);
	if (err) {
		append(why, why_cap, "; condition not inline: %s", err->msg);
		ns_err_destroy(err);
		return false;
	}
	return true;
}

// A growable list of [lo, hi) pairs, adjacent ones merged.
struct ranges {
	uint64_t *v;
	size_t n, cap;
	bool oom;
};

static void ranges_add(struct ranges *r, uint64_t lo, uint64_t hi, bool merge)
{
	if (merge && r->n && r->v[2 * r->n - 1] == lo) {
		r->v[2 * r->n - 1] = hi;
		return;
	}
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 64;
		uint64_t *v = realloc(r->v, cap * 2 * sizeof(uint64_t));
		if (!v) {
			r->oom = true;
			return;
		}
		r->v = v;
		r->cap = cap;
	}
	r->v[2 * r->n] = lo;
	r->v[2 * r->n + 1] = hi;
	r->n++;
}

// A mapping a probe may read (agent_probe_sig.c): ordinary memory whose contents do
// not change by being read. Anonymous memory (heaps, stacks, [anon:...]) and regular
// files; not devices, and not the kernel's [vvar]/[vsyscall] pages.
static bool probe_readable(const char *perms, unsigned long inode, const char *name, size_t nl)
{
	if (perms[0] != 'r')
		return false;
	if (nl == 0)
		return inode == 0;
	if (name[0] == '[')
		return strncmp(name, "[vvar", 5) != 0 && strncmp(name, "[vsyscall]", 10) != 0;
	return name[0] == '/' && strncmp(name, "/dev/", 5) != 0;
}

void ns_agent__maps_refresh(void)
{
	atomic_store_explicit(&ns_agent__maps_stale, false, memory_order_relaxed);
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return;
	char exe[512];
	ssize_t el = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[el > 0 ? el : 0] = 0;
	struct ranges anon = {0}, rd = {0};
	uint64_t st[2 * NS_AGENT__NSTATIC];
	uint32_t nst = 0;
	char line[512];
	bool after_exe = false; // the previous line was the executable's
	while (fgets(line, sizeof(line), f)) {
		uint64_t lo, hi, off;
		char perms[5];
		unsigned long inode;
		int pos = 0;
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64 " %*s %lu %n", &lo, &hi,
		           perms, &off, &inode, &pos) < 5)
			continue;
		const char *name = line + pos;
		size_t nl = strcspn(name, "\n");
		bool is_exe = exe[0] && nl == strlen(exe) && strncmp(name, exe, nl) == 0;
		// The executable's readable mappings, and the anonymous one right after
		// its last (.bss), as merged runs.
		if (perms[0] == 'r' && (is_exe || (after_exe && inode == 0 && nl == 0))) {
			if (nst && st[2 * nst - 1] == lo)
				st[2 * nst - 1] = hi;
			else if (nst < NS_AGENT__NSTATIC) {
				st[2 * nst] = lo;
				st[2 * nst + 1] = hi;
				nst++;
			}
		}
		after_exe = is_exe;
		if (probe_readable(perms, inode, name, nl))
			ranges_add(&rd, lo, hi, true);
		// Readable and writable, anonymous: thread stacks (and heaps, harmlessly).
		if (perms[0] != 'r' || perms[1] != 'w' || inode != 0 ||
		    (nl && strncmp(name, "[stack]", 7) != 0))
			continue;
		ranges_add(&anon, lo, hi, false);
	}
	fclose(f);
	struct ns_agent__maps *m = NULL;
	if (!anon.oom && !rd.oom)
		m = calloc(1, sizeof(*m) + (anon.n + rd.n) * 2 * sizeof(uint64_t));
	if (m) {
		m->n = (uint32_t)anon.n;
		m->nrd = (uint32_t)rd.n;
		m->nst = nst;
		memcpy(m->st, st, nst * 2 * sizeof(uint64_t));
		if (anon.n)
			memcpy(m->r, anon.v, anon.n * 2 * sizeof(uint64_t));
		if (rd.n)
			memcpy(m->r + 2 * anon.n, rd.v, rd.n * 2 * sizeof(uint64_t));
		m->rd = m->r + 2 * anon.n;
	}
	free(anon.v);
	free(rd.v);
	if (!m)
		return;
	struct ns_agent__maps *cur = atomic_load(&ns_agent__maps_cur);
	if (cur && cur->n == m->n && cur->nrd == m->nrd && cur->nst == m->nst &&
	    memcmp(cur->st, m->st, sizeof(m->st)) == 0 &&
	    memcmp(cur->r, m->r, (m->n + m->nrd) * 2 * sizeof(uint64_t)) == 0) {
		free(m); // unchanged
		return;
	}
	m->gen = ++maps_gen;
	// The old table is leaked on purpose: a hit may still be searching it.
	atomic_store_explicit(&ns_agent__maps_cur, m, memory_order_release);
}

/* ---- TSC clock ---- */

struct ns_agent__tsc ns_agent__tsc;

void ns_agent__tsc_calibrate(void)
{
	static int state; // 0: not tried, 1: first pair taken, -1: no invariant TSC
	static uint64_t tsc0, ns0;
	struct ns_agent__tsc *t = &ns_agent__tsc;
	if (state < 0)
		return;
	if (state == 0) {
		if (!ns_tsc_invariant()) {
			state = -1;
			return;
		}
		ns_tsc_pair(&tsc0, &ns0);
		state = 1;
		return;
	}
	uint64_t tsc, ns;
	ns_tsc_pair(&tsc, &ns);
	// At least 10 ms between the pairs (the rate's error is then ~1e-5 at worst).
	if (tsc <= tsc0 || ns < ns0 + 10 * 1000 * 1000)
		return;
	// ns per tick, 32.32 fixed point, over the whole time since the first pair.
	uint64_t mult = (uint64_t)(((unsigned __int128)(ns - ns0) << 32) / (tsc - tsc0));
	if (mult == 0)
		return;
	uint32_t seq = atomic_load_explicit(&t->seq, memory_order_relaxed);
	atomic_store_explicit(&t->seq, seq | 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&t->base_tsc, tsc, memory_order_relaxed);
	atomic_store_explicit(&t->base_ns, ns, memory_order_relaxed);
	atomic_store_explicit(&t->mult, mult, memory_order_relaxed);
	// Trusted for 2 s of ticks: the control thread refreshes it every second.
	atomic_store_explicit(&t->max_delta, (uint64_t)((2000000000ull << 32) / mult),
	                      memory_order_relaxed);
	atomic_store_explicit(&t->seq, (seq | 1) + 1, memory_order_release);
}

/* ---- quiescence and hit counts ---- */

bool ns_agent__quiescent(void)
{
	// Every running thread executes a full barrier (and serialises) before this
	// returns: a hit that had stored busy before it is seen; one that had not yet
	// stored it loads the site after our unpublish.
	if (ns_agent__g.slots_ok &&
	    syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) != 0)
		return false;
	if (atomic_load(&ns_agent__g.inflight) != 0)
		return false;
	for (unsigned i = 0; i < NS_AGENT__NSLOTS; i++)
		if (atomic_load(&ns_agent__slots[i].owner) && atomic_load(&ns_agent__slots[i].busy))
			return false;
	return true;
}

static uint64_t dead_hits, dead_kreads; /* counts of slots given back */

static uint64_t total_hits(void)
{
	uint64_t n = dead_hits + atomic_load(&ns_agent__g.hits_noslot);
	for (unsigned i = 0; i < NS_AGENT__NSLOTS; i++)
		n += atomic_load_explicit(&ns_agent__slots[i].hits, memory_order_relaxed);
	return n;
}

static uint64_t total_kreads(void)
{
	uint64_t n = dead_kreads;
	for (unsigned i = 0; i < NS_AGENT__NSLOTS; i++)
		n += atomic_load_explicit(&ns_agent__slots[i].kreads, memory_order_relaxed);
	return n;
}

void ns_agent__publish_hits(void)
{
	static struct ns_agent_shm *last;
	static uint64_t base, kbase;
	struct ns_agent_shm *shm = __atomic_load_n(&ns_agent__g.shm, __ATOMIC_ACQUIRE);
	if (!shm)
		return;
	uint64_t n = total_hits(), k = total_kreads();
	if (shm != last) {
		// A new stub's rings: its counts start now.
		last = shm;
		base = n;
		kbase = k;
	}
	atomic_store_explicit(&shm->hits, n - base, memory_order_relaxed);
	atomic_store_explicit(&shm->kernel_reads, k - kbase, memory_order_relaxed);
}

void ns_agent__reap_slots(void)
{
	unsigned used = 0;
	for (unsigned i = 0; i < NS_AGENT__NSLOTS; i++)
		used += atomic_load(&ns_agent__slots[i].owner) != 0;
	if (used < NS_AGENT__NSLOTS / 2)
		return;
	pid_t pid = getpid();
	for (unsigned i = 0; i < NS_AGENT__NSLOTS; i++) {
		struct ns_agent__slot *s = &ns_agent__slots[i];
		uint32_t owner = atomic_load(&s->owner);
		// A thread that exited (tgkill with signal 0: ESRCH) never touches its slot
		// again. (A reused tid keeps the slot: a leak, not an error.)
		if (!owner || syscall(SYS_tgkill, pid, owner, 0) == 0 || errno != ESRCH)
			continue;
		dead_hits += atomic_load(&s->hits);
		dead_kreads += atomic_load(&s->kreads);
		atomic_store(&s->hits, 0);
		atomic_store(&s->kreads, 0);
		atomic_store(&s->busy, 0);
		atomic_store(&s->owner, 0);
	}
}
