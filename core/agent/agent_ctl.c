/* The agent's control thread: installs and removes tracepoints on the stub's request.
 * Ordinary thread context (may allocate), but it shares the site table with the
 * SIGTRAP handler: sites are immutable once published, replaced with release stores,
 * and freed only after the in-flight handler count has been seen at zero. */
#define _GNU_SOURCE
#include "agent/agent_internal.h"
#include "base/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ax/ax.h"
#include "base/mem.h"

#define TRAP_TIER_MSG "in-process trap tier (int3)"

enum {
	SLOT_PAGE = 64 * 1024,
	// Largest distance between the code and a slot: well inside +-2 GiB so that a
	// rel32 jmp back and RIP-relative operands (themselves within 2 GiB of the code)
	// usually stay in range of the copy.
	SLOT_REACH = 0x70000000,
	MAX_MSG = 64 << 20,
};

struct slot_page {
	uint64_t base;
	size_t used;
	struct slot_page *next;
};

struct retired {
	struct ns_agent__site *site;
	struct ns_agent__tp *tp;
	struct retired *next;
};

static struct slot_page *slot_pages;
static struct retired *retire_list;
static sem_t hold_sem;
static _Atomic bool hold_posted;
static pthread_t ctl_thread;
// From ns_agent__ctl_start until the control thread has cleaned up after its
// connection ended (an attaching stub may then start a new one).
static _Atomic bool ctl_running;

/* ---- code writes ---- */

// All code writes go through /proc/self/mem: it writes through page protection
// (FOLL_FORCE), so no text page is ever made writable, not even briefly.
struct ns_err *ns_agent__write_code(uint64_t addr, const void *buf, size_t len)
{
	ssize_t n;
	do
		n = pwrite(ns_agent__g.mem_fd, buf, len, (off_t)addr);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return ns_err_errno(errno, "cannot write code at 0x%" PRIx64, addr);
	if ((size_t)n != len)
		return ns_err_create(NS_ERR_OS, "short write of code at 0x%" PRIx64, addr);
	return NULL;
}

// The mapping that holds @addr is executable (so the int3 cannot land in data).
static struct ns_err *check_executable(uint64_t addr)
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return ns_err_errno(errno, "cannot open /proc/self/maps");
	char line[512];
	struct ns_err *err = NULL;
	bool found = false;
	while (fgets(line, sizeof(line), f)) {
		uint64_t lo, hi;
		char perms[5];
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s", &lo, &hi, perms) != 3)
			continue;
		if (addr >= lo && addr < hi) {
			found = true;
			if (perms[2] != 'x')
				err = ns_err_create(NS_ERR_INVALID,
				                    "0x%" PRIx64 " is not in executable code",
				                    addr);
			break;
		}
	}
	fclose(f);
	if (!found)
		return ns_err_fault(addr, "0x%" PRIx64 " is not mapped", addr);
	return err;
}

#define write_code ns_agent__write_code

/* ---- out-of-line slots ---- */

static bool near(uint64_t a, uint64_t b)
{
	uint64_t d = a > b ? a - b : b - a;
	return d < SLOT_REACH;
}

static struct slot_page *map_slot_page(uint64_t addr)
{
	// Try below the code first, then above, at growing distances; FIXED_NOREPLACE
	// fails instead of clobbering a mapping (kernels before 4.17 treat it as a hint,
	// hence the address check).
	for (uint64_t d = 2ull << 20; d <= (1ull << 30); d <<= 1) {
		for (int dir = 0; dir < 2; dir++) {
			uint64_t hint = dir ? addr + d : addr - d;
			if ((dir == 0 && addr < d + 0x100000) || hint >= 0x7fffff000000ull)
				continue;
			hint &= ~(uint64_t)(SLOT_PAGE - 1);
			void *p = mmap((void *)(uintptr_t)hint, SLOT_PAGE, PROT_READ | PROT_EXEC,
			               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			if (p == MAP_FAILED)
				continue;
			if ((uint64_t)(uintptr_t)p != hint || !near(hint, addr) ||
			    !near(hint + SLOT_PAGE, addr)) {
				munmap(p, SLOT_PAGE);
				continue;
			}
			struct slot_page *sp = calloc(1, sizeof(*sp));
			if (!sp) {
				munmap(p, SLOT_PAGE);
				return NULL;
			}
			sp->base = hint;
			sp->next = slot_pages;
			slot_pages = sp;
			return sp;
		}
	}
	return NULL;
}

// A fresh slot (or pad) of @size bytes near @addr. Never reused: a thread may still be
// running one.
struct ns_err *ns_agent__code_alloc(uint64_t addr, size_t size, uint64_t *out)
{
	struct slot_page *sp;
	size = (size + 15) & ~(size_t)15;
	for (sp = slot_pages; sp; sp = sp->next)
		if (sp->used + size <= SLOT_PAGE && near(sp->base, addr) &&
		    near(sp->base + SLOT_PAGE, addr))
			break;
	if (!sp)
		sp = map_slot_page(addr);
	if (!sp)
		return ns_err_create(NS_ERR_NOMEM,
		                     "no free address space within 2 GiB of 0x%" PRIx64
		                     " for the out-of-line copy",
		                     addr);
	*out = sp->base + sp->used;
	sp->used += size;
	return NULL;
}

struct parked {
	uint64_t mem;
	size_t cap;
};
static struct parked *parked;
static size_t nparked, parked_cap;

void ns_agent__code_park(uint64_t mem, size_t cap)
{
	if (!mem || nparked == NS_AGENT__PARK_MAX)
		return;
	if (nparked == parked_cap) {
		size_t n = parked_cap ? 2 * parked_cap : 64;
		struct parked *p = realloc(parked, n * sizeof(*p));
		if (!p)
			return;
		parked = p;
		parked_cap = n;
	}
	parked[nparked++] = (struct parked){mem, cap};
}

size_t ns_agent__code_parked(uint64_t addr, size_t len, uint64_t *out, size_t max)
{
	size_t n = 0;
	for (size_t i = nparked; i-- > 0 && n < max;)
		if (parked[i].cap >= len && near(parked[i].mem, addr) &&
		    near(parked[i].mem + parked[i].cap, addr))
			out[n++] = parked[i].mem;
	return n;
}

bool ns_agent__code_take(uint64_t mem, const uint8_t *buf, size_t len, const size_t *skip,
                         size_t nskip)
{
	size_t i;
	for (i = 0; i < nparked && parked[i].mem != mem; i++)
		;
	if (i == nparked || parked[i].cap < len)
		return false;
	const uint8_t *code = (const uint8_t *)(uintptr_t)mem;
	for (size_t k = 0; k < len; k++) {
		if (code[k] == buf[k])
			continue;
		size_t j;
		for (j = 0; j < nskip && skip[j] != k; j++)
			;
		if (j == nskip)
			return false;
	}
	parked[i] = parked[--nparked];
	return true;
}

struct ns_err *ns_agent__code_place(uint64_t addr, const uint8_t *buf, size_t len, uint64_t *out)
{
	uint64_t cand[16];
	size_t n = ns_agent__code_parked(addr, len, cand, 16);
	for (size_t i = 0; i < n; i++)
		if (ns_agent__code_take(cand[i], buf, len, NULL, 0)) {
			*out = cand[i];
			return NULL;
		}
	struct ns_err *err = ns_agent__code_alloc(addr, len, out);
	if (!err)
		err = ns_agent__write_code(*out, buf, len);
	return err;
}

static struct ns_err *build_slot(uint64_t addr, const uint8_t *code,
                                 const struct ns_arch_insn *insn, uint64_t *out)
{
	struct ns_arch_insn copy = *insn;
	if (copy.kind == NS_INSN_RET)
		copy.kind = NS_INSN_PLAIN; // ret runs anywhere; the slot is a fallback
	uint8_t buf[NS_AGENT__SLOT_SIZE];
	size_t n;
	// The slot an earlier site at this address had, if it comes out the same.
	uint64_t cand[16];
	size_t nc = ns_agent__code_parked(addr, NS_AGENT__SLOT_SIZE, cand, 16);
	for (size_t i = 0; i < nc; i++) {
		struct ns_err *err = ns_arch_relocate(&copy, code, addr, cand[i], buf, sizeof(buf), &n);
		if (!err && ns_agent__code_take(cand[i], buf, n, NULL, 0)) {
			*out = cand[i];
			return NULL;
		}
		ns_err_destroy(err);
	}
	uint64_t slot = 0;
	struct ns_err *err = ns_agent__code_alloc(addr, NS_AGENT__SLOT_SIZE, &slot);
	if (err)
		return err;
	err = ns_arch_relocate(&copy, code, addr, slot, buf, sizeof(buf), &n);
	if (!err)
		err = write_code(slot, buf, n);
	if (err)
		return err;
	*out = slot;
	return NULL;
}

/* ---- the site table (control thread is the only writer) ---- */

static unsigned hash(uint64_t addr)
{
	return (unsigned)((addr * 0x9e3779b97f4a7c15ull) >> 40) & (NS_AGENT__TABLE_SIZE - 1);
}

// The pad's guard of @s (its condition inline) filters right for @s's tracepoints.
static bool guard_fits(const struct ns_agent__site *s)
{
	if (!s || !s->guard_armed || s->ntps != 1)
		return false;
	const struct ns_rsp_tracepoint *d = &s->tps[0]->def;
	return d->cond && d->cond_len == s->guard_cond_len &&
	       memcmp(d->cond, s->guard_cond, d->cond_len) == 0;
}

// The pad's inline record of @s is the collection of @s's tracepoints.
static bool record_fits(const struct ns_agent__site *s)
{
	if (!s || !s->record_armed || s->ntps != 1)
		return false;
	const struct ns_rsp_tracepoint *d = &s->tps[0]->def;
	struct ns_agent__rec_plan plan;
	const char *why;
	return d->num == s->record_num && s->record_shm == ns_agent__g.shm &&
	       ns_agent__record_plan(d, &plan, &why) &&
	       memcmp(&plan, &s->record_plan, sizeof(plan)) == 0;
}

/* Publish @s (NULL: nothing) at @e. A jump pad's guard or inline record goes off before
 * a site it would serve wrongly is visible (a hit that ran it before counts as earlier
 * than this change), and on after a site it fits. The armed bytes are in the pad, which
 * was just written the same way: writing one cannot fail unless the pad could not have
 * been built either. */
static void publish(struct ns_agent__entry *e, struct ns_agent__site *s)
{
	struct ns_agent__site *cur = atomic_load(&e->site);
	const struct ns_agent__site *pad = s ? s : cur;
	uint64_t armed = pad ? pad->guard_armed : 0;
	uint64_t rec = pad ? pad->record_armed : 0;
	bool fits = guard_fits(s), rfits = record_fits(s);
	static const uint8_t off = 0, on = 1;
	if (armed && !fits)
		ns_err_destroy(write_code(armed, &off, 1));
	if (rec && !rfits)
		ns_err_destroy(write_code(rec, &off, 1));
	atomic_store(&e->site, s);
	if (fits)
		ns_err_destroy(write_code(armed, &on, 1));
	if (rfits)
		ns_err_destroy(write_code(rec, &on, 1));
}

static struct ns_agent__entry *entry_insert(uint64_t addr)
{
	unsigned h = hash(addr);
	for (unsigned i = 0; i < NS_AGENT__TABLE_SIZE; i++) {
		struct ns_agent__entry *e =
		        &ns_agent__g.table[(h + i) & (NS_AGENT__TABLE_SIZE - 1)];
		uint64_t k = atomic_load(&e->key);
		if (k == addr)
			return e;
		if (k == 0) {
			atomic_store(&e->site, NULL);
			atomic_store_explicit(&e->key, addr, memory_order_release);
			return e;
		}
	}
	return NULL;
}

static void retire(struct ns_agent__site *site, struct ns_agent__tp *tp)
{
	if (!site && !tp)
		return;
	struct retired *r = malloc(sizeof(*r));
	if (!r)
		return; // leak rather than free something a handler may be reading
	r->site = site;
	r->tp = tp;
	r->next = retire_list;
	retire_list = r;
}

static void free_tp(struct ns_agent__tp *tp)
{
	if (!tp)
		return;
	// Quiescent: no collector runs its native code any more.
	ns_agent__code_park((uint64_t)(uintptr_t)tp->cond_jit, tp->cond_jit_len);
	for (size_t i = 0; tp->act_jit && i < tp->def.nactions; i++)
		ns_agent__code_park((uint64_t)(uintptr_t)tp->act_jit[i], tp->act_jit_len[i]);
	ns_rsp_tp_deinit(&tp->def);
	free(tp->act_jit);
	free(tp->act_jit_len);
	free(tp);
}

// Free what was unpublished once no handler can still hold it: every handler that
// could have loaded an old pointer marked itself busy before loading it.
static void reclaim(void)
{
	if (!retire_list || !ns_agent__quiescent())
		return;
	struct retired *r = retire_list;
	retire_list = NULL;
	while (r) {
		struct retired *next = r->next;
		free(r->site);
		free_tp(r->tp);
		free(r);
		r = next;
	}
}

static struct ns_agent__site *site_new(const struct ns_agent__site *proto, unsigned ntps)
{
	struct ns_agent__site *s =
	        calloc(1, sizeof(*s) + (size_t)ntps * sizeof(struct ns_agent__tp *));
	if (!s)
		return NULL;
	if (proto)
		memcpy(s, proto, sizeof(*s));
	s->ntps = 0;
	return s;
}

/* ---- install / remove ---- */

static struct ns_err *verify_code(const struct ns_rsp_tracepoint *d)
{
	struct ns_err *err;
	if (d->cond && (err = ns_ax_verify(d->cond, d->cond_len, NULL)))
		return ns_err_wrap(err, "tracepoint %u: condition", d->num);
	for (size_t i = 0; i < d->nactions; i++)
		if (d->actions[i].kind == NS_RSP_ACT_EXPR &&
		    (err = ns_ax_verify(d->actions[i].code, d->actions[i].code_len, NULL)))
			return ns_err_wrap(err, "tracepoint %u: action %zu", d->num, i);
	return NULL;
}

// A new site (no version published at addr): original bytes, decode, slot.
static struct ns_err *prepare_site(uint64_t addr, struct ns_agent__site *s)
{
	struct ns_err *err = check_executable(addr);
	if (err)
		return err;
	s->addr = addr;
	s->orig_len = ns_mem_read_partial(s->orig, addr, sizeof(s->orig));
	if (s->orig_len == 0)
		return ns_err_fault(addr, "cannot read code at 0x%" PRIx64, addr);
	if (s->orig[0] == 0xcc)
		return ns_err_create(NS_ERR_UNSUPPORTED,
		                     "0x%" PRIx64 " already holds an int3 (another debugger or "
		                     "the program's own breakpoint)",
		                     addr);
	if ((err = ns_arch_decode(s->orig, s->orig_len, addr, &s->insn)))
		return ns_err_wrap(err, "tracepoint at 0x%" PRIx64, addr);
	if (s->insn.kind == NS_INSN_UNSUPPORTED)
		return ns_err_create(NS_ERR_UNSUPPORTED,
		                     "cannot trace instruction '%s' at 0x%" PRIx64 ": %s",
		                     s->insn.text, addr, s->insn.reason);
	s->slot = 0;
	if (s->insn.kind == NS_INSN_PLAIN || s->insn.kind == NS_INSN_RIPREL ||
	    s->insn.kind == NS_INSN_RET) {
		err = build_slot(addr, s->orig, &s->insn, &s->slot);
		if (err)
			return ns_err_wrap(err, "cannot trace instruction '%s' at 0x%" PRIx64,
			                   s->insn.text, addr);
	}
	return NULL;
}

// A jump-pad site A whose displaced window holds @addr (A < addr < A + wlen) becomes an
// int3 site (its original tail back) so that @addr can be patched. Returns an error
// only if code could not be written.
static struct ns_err *downgrade_covering(uint64_t addr)
{
	for (unsigned i = 0; i < NS_AGENT__TABLE_SIZE; i++) {
		struct ns_agent__entry *e = &ns_agent__g.table[i];
		struct ns_agent__site *old = atomic_load(&e->site);
		if (!old || !old->pad_block || addr <= old->addr || addr >= old->addr + old->wlen)
			continue;
		struct ns_err *err = NULL;
		if (old->jumped && (err = ns_agent__jump_unpatch(old, false)))
			return err;
		struct ns_agent__site *s = site_new(old, old->ntps);
		if (!s)
			return &ns_err_nomem; // still correct: int3 + pad
		for (unsigned j = 0; j < old->ntps; j++)
			s->tps[s->ntps++] = old->tps[j];
		s->pad_block = 0; // the original tail is back: resume through the slot
		s->jumped = false;
		s->tier = NS_AGENT_TIER_TRAP;
		snprintf(s->why, sizeof(s->why),
		         TRAP_TIER_MSG ": the tracepoint at 0x%" PRIx64 " lies inside its jump-pad "
		                       "window",
		         addr);
		publish(e, s);
		retire(old, NULL);
	}
	return NULL;
}

static struct ns_err *install(struct ns_rsp_tracepoint *def, uint32_t *tier_out, char *why,
                              size_t why_cap)
{
	struct ns_err *err = verify_code(def);
	if (err)
		return err;
	struct ns_agent__entry *e = ns_agent__lookup(def->addr);
	struct ns_agent__site *old = e ? atomic_load(&e->site) : NULL;
	struct ns_agent__site proto;
	bool jump = false;
	if (old) {
		proto = *old;
	} else {
		memset(&proto, 0, sizeof(proto));
		if ((err = downgrade_covering(def->addr)))
			return err;
		if ((err = prepare_site(def->addr, &proto)))
			return err;
		if (!e)
			e = entry_insert(def->addr);
		if (!e)
			return ns_err_create(NS_ERR_NOMEM, "too many tracepoint addresses (%d)",
			                     NS_AGENT__TABLE_SIZE);
		jump = ns_agent__jump_prepare(&proto, def, e);
		// From publication on, the window's tail may hold the jmp: whoever
		// restores the code (removal, a forked child) restores all wlen bytes.
		proto.jumped = jump;
	}
	struct ns_agent__tp *tp = calloc(1, sizeof(*tp));
	struct ns_agent__site *s = site_new(&proto, (old ? old->ntps : 0) + 1);
	if (!tp || !s) {
		free(tp);
		free(s);
		return &ns_err_nomem;
	}
	tp->def = *def;
	for (size_t i = 0; i < def->nactions; i++) {
		const struct ns_rsp_action *a = &def->actions[i];
		if (a->kind == NS_RSP_ACT_REGS)
			tp->has_regs = true;
		// Inert with the registers every tier reads (the pad's block), and too
		// short to run out of the interpreter's step budget: skipping it changes
		// no frame in any tier.
		if (a->kind == NS_RSP_ACT_EXPR && i < 64 && a->code_len <= NS_AX_DEFAULT_STEPS &&
		    ns_ax_is_inert(a->code, a->code_len, NS_ARCH_PAD_NREGS))
			tp->inert |= 1ull << i;
	}
	// A pad site runs its condition and X actions natively (the pad's register
	// block); before the tracepoint is published, so a hit never sees it half set.
	char jit_why[256] = "";
	ns_agent__maps_refresh();
	if (proto.pad)
		ns_agent__jit_tp(tp, def->addr, jit_why, sizeof(jit_why));
	// Installing a number that is already at this address replaces it.
	struct ns_agent__tp *replaced = NULL;
	for (unsigned i = 0; old && i < old->ntps; i++) {
		if (old->tps[i]->def.num == def->num)
			replaced = old->tps[i];
		else
			s->tps[s->ntps++] = old->tps[i];
	}
	s->tps[s->ntps++] = tp;
	publish(e, s);
	if (!old) {
		static const uint8_t int3 = 0xcc;
		if ((err = write_code(def->addr, &int3, 1))) {
			publish(e, NULL);
			retire(s, NULL);
			tp->def = (struct ns_rsp_tracepoint){0};
			retire(NULL, tp);
			return err;
		}
		if (jump) {
			// The site is published with its pad: a thread that hits the int3
			// from now on resumes in the pad's relocated window.
			char reason[160];
			int rc = ns_agent__jump_patch(s, reason, sizeof(reason));
			struct ns_agent__site *s2 = rc == 1 ? NULL : site_new(s, s->ntps);
			if (rc == 1) {
				s->tier = NS_AGENT_TIER_JUMP; // read by this thread only
			} else if (s2) {
				for (unsigned j = 0; j < s->ntps; j++)
					s2->tps[s2->ntps++] = s->tps[j];
				if (rc == 0) {
					s2->pad_block = 0; // the tail is original: slot is fine
					s2->jumped = false;
				}
				s2->tier = NS_AGENT_TIER_TRAP;
				snprintf(s2->why, sizeof(s2->why), TRAP_TIER_MSG ": %s", reason);
				publish(e, s2);
				retire(s, NULL);
				s = s2;
			} else {
				// Out of memory: s stays published (int3 + pad, correct).
				s->tier = NS_AGENT_TIER_TRAP;
			}
		}
	}
	*tier_out = s->tier ? s->tier : NS_AGENT_TIER_TRAP;
	snprintf(why, why_cap, "%s%s", s->why[0] ? s->why : TRAP_TIER_MSG, jit_why);
	retire(old, replaced);
	memset(def, 0, sizeof(*def)); // now owned by tp
	return NULL;
}

// Drop the tracepoints matching @num (all if @all) from every site. Returns how many.
static unsigned remove_tps(bool all, uint32_t num, struct ns_err **err_out)
{
	unsigned removed = 0;
	for (unsigned i = 0; i < NS_AGENT__TABLE_SIZE; i++) {
		struct ns_agent__entry *e = &ns_agent__g.table[i];
		struct ns_agent__site *old = atomic_load(&e->site);
		if (!old)
			continue;
		unsigned keep = 0;
		for (unsigned j = 0; j < old->ntps; j++)
			if (!all && old->tps[j]->def.num != num)
				keep++;
		if (keep == old->ntps)
			continue;
		if (keep == 0) {
			// Original byte back first, then unpublish: a thread that trapped
			// in between still finds the site, one that comes later finds the
			// original instruction (see the handler). A jump-pad site: the
			// whole window, int3 first (agent_jump.c).
			struct ns_err *err = old->jumped ? ns_agent__jump_unpatch(old, true)
			                                 : write_code(old->addr, old->orig, 1);
			if (err) {
				if (!*err_out)
					*err_out = err;
				else
					ns_err_destroy(err);
				continue;
			}
			publish(e, NULL);
			// Its slot and pad are parked (a thread may still be in them).
			ns_agent__code_park(old->slot, NS_AGENT__SLOT_SIZE);
			ns_agent__code_park(old->pad, old->pad_cap);
		} else {
			struct ns_agent__site *s = site_new(old, keep);
			if (!s) {
				if (!*err_out)
					*err_out = &ns_err_nomem;
				continue;
			}
			for (unsigned j = 0; j < old->ntps; j++)
				if (!all && old->tps[j]->def.num != num)
					s->tps[s->ntps++] = old->tps[j];
			publish(e, s);
		}
		retire(old, NULL);
		for (unsigned j = 0; j < old->ntps; j++)
			if (all || old->tps[j]->def.num == num) {
				retire(NULL, old->tps[j]);
				removed++;
			}
	}
	return removed;
}

/* ---- messages ---- */

static void reply_tier(uint32_t req_id, int status, uint32_t tier, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void reply_tier(uint32_t req_id, int status, uint32_t tier, const char *fmt, ...)
{
	char buf[sizeof(struct ns_agent_reply) + 1024];
	struct ns_agent_reply *r = (struct ns_agent_reply *)(void *)buf;
	memset(r, 0, sizeof(*r));
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + sizeof(*r), sizeof(buf) - sizeof(*r), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf) - sizeof(*r))
		n = (int)(sizeof(buf) - sizeof(*r) - 1);
	r->h.type = NS_AGENT_MSG_REPLY;
	r->h.size = (uint32_t)(sizeof(*r) + (size_t)n + 1);
	r->h.req_id = req_id;
	r->status = status;
	r->tier = status ? NS_AGENT_TIER_NONE : tier;
	send(ns_agent__g.ctl_fd, buf, r->h.size, MSG_NOSIGNAL);
}

#define reply(req_id, status, ...) reply_tier(req_id, status, NS_AGENT_TIER_TRAP, __VA_ARGS__)

static int err_status(const struct ns_err *err)
{
	switch (err->code) {
	case NS_ERR_NOMEM:
		return ENOMEM;
	case NS_ERR_OS:
		return err->errnum ? err->errnum : EIO;
	case NS_ERR_UNSUPPORTED:
		return ENOTSUP;
	case NS_ERR_FAULT:
		return EFAULT;
	default:
		return EINVAL;
	}
}

static void reply_err(uint32_t req_id, struct ns_err *err)
{
	reply(req_id, err_status(err), "%s", err->msg);
	ns_err_destroy(err);
}

static void release_hold(void)
{
	bool was = false;
	if (atomic_compare_exchange_strong(&hold_posted, &was, true))
		sem_post(&hold_sem);
}

static void handle(const uint8_t *msg, size_t len)
{
	struct ns_agent_msg_hdr h;
	if (len < sizeof(h))
		return;
	memcpy(&h, msg, sizeof(h));
	struct ns_err *err = NULL;
	switch (h.type) {
	case NS_AGENT_MSG_INSTALL: {
		struct ns_rsp_tracepoint def;
		err = ns_agent_decode_install(msg, len, &def);
		if (err) {
			reply_err(h.req_id, ns_err_wrap(err, "INSTALL"));
			break;
		}
		uint32_t tier = NS_AGENT_TIER_TRAP;
		char why[256];
		ns_agent__warm_spare();
		err = install(&def, &tier, why, sizeof(why));
		ns_rsp_tp_deinit(&def);
		if (err)
			reply_err(h.req_id, err);
		else
			reply_tier(h.req_id, 0, tier, "%s", why);
		break;
	}
	case NS_AGENT_MSG_REMOVE: {
		uint32_t num;
		if (len < sizeof(h) + 4) {
			reply(h.req_id, EINVAL, "REMOVE message too short");
			break;
		}
		memcpy(&num, msg + sizeof(h), 4);
		unsigned n = remove_tps(false, num, &err);
		if (err)
			reply_err(h.req_id, err);
		else if (n == 0)
			reply(h.req_id, ENOENT, "no tracepoint %u", num);
		else
			reply(h.req_id, 0, "removed");
		break;
	}
	case NS_AGENT_MSG_REMOVE_ALL:
		remove_tps(true, 0, &err);
		if (err)
			reply_err(h.req_id, err);
		else
			reply(h.req_id, 0, "removed");
		break;
	case NS_AGENT_MSG_RESUME:
		release_hold();
		break;
	default:
		reply(h.req_id, EINVAL, "unknown message type %u", h.type);
		break;
	}
}

enum { TICK_MS = 100 };

static void *ctl_main(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, NS_AGENT_THREAD_NAME, 0, 0, 0);
	int fd = ns_agent__g.ctl_fd;
	ns_agent__publish_hits(); // this connection's count starts here
	ns_agent__tsc_calibrate();
	ns_agent__probe_tick();
	struct timespec last_tsc;
	clock_gettime(CLOCK_MONOTONIC, &last_tsc);
	int64_t next_tick = ns_mono_ms() + TICK_MS;
	bool tsc_first = true; // publish the first calibration at the first tick
	for (;;) {
		// Every 100 ms without a message: publish the hit count, and every second
		// refresh the TSC clock's base, give dead threads' slots back, reclaim.
		// Between ticks, as often as the ring warmer asks.
		int64_t to_tick = next_tick - ns_mono_ms();
		int warm = ns_agent__warm_tick();
		int timeout = to_tick < 0 ? 0 : to_tick > TICK_MS ? TICK_MS : (int)to_tick;
		if (warm >= 0 && warm < timeout)
			timeout = warm;
		struct pollfd pf[2] = {{fd, POLLIN, 0}, {ns_agent__g.wake_fd, POLLIN, 0}};
		int pr = poll(pf, 2, timeout);
		if (pr > 0 && (pf[1].revents & POLLIN)) {
			uint64_t v; // a thread claimed a ring: warm it at the loop's top
			ssize_t rd = read(ns_agent__g.wake_fd, &v, sizeof(v));
			(void)rd;
			// ... and know its stack (a new thread's) now rather than at the
			// next tick, at most every 10 ms.
			static int64_t last_refresh;
			if (atomic_load_explicit(&ns_agent__maps_stale, memory_order_relaxed) &&
			    ns_mono_ms() - last_refresh >= 10) {
				last_refresh = ns_mono_ms();
				ns_agent__maps_refresh();
			}
			if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
		}
		if (pr == 0 && ns_mono_ms() < next_tick)
			continue;
		if (pr == 0 || (pr < 0 && errno == EINTR)) {
			next_tick = ns_mono_ms() + TICK_MS;
			ns_agent__publish_hits();
			// Probes: the fault handlers back if the program replaced them, and
			// the table of mappings re-read if a hit missed it.
			ns_agent__probe_tick();
			if (atomic_load_explicit(&ns_agent__maps_stale, memory_order_relaxed))
				ns_agent__maps_refresh();
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (tsc_first) {
				tsc_first = false;
				ns_agent__tsc_calibrate();
			}
			if (now.tv_sec - last_tsc.tv_sec >= 1 &&
			    (now.tv_sec - last_tsc.tv_sec) * 1000000000l +
			                    (now.tv_nsec - last_tsc.tv_nsec) >=
			            1000000000l) {
				last_tsc = now;
				ns_agent__tsc_calibrate();
				ns_agent__reap_slots();
				reclaim();
			}
			continue;
		}
		// SOCK_SEQPACKET: peek with MSG_TRUNC for the datagram's real size.
		ssize_t n = recv(fd, NULL, 0, MSG_PEEK | MSG_TRUNC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t want = (size_t)n < MAX_MSG ? (size_t)n : MAX_MSG;
		uint8_t *buf = malloc(want ? want : 1);
		if (!buf) {
			recv(fd, NULL, 0, 0);
			continue;
		}
		do
			n = recv(fd, buf, want, 0);
		while (n < 0 && errno == EINTR);
		if (n > 0)
			handle(buf, (size_t)n);
		free(buf);
		reclaim();
		ns_agent__publish_hits();
		if (n <= 0)
			break;
	}
	// The stub is gone: leave the program as it was without us.
	struct ns_err *err = NULL;
	remove_tps(true, 0, &err);
	ns_err_destroy(err);
	ns_agent__probe_fini();
	release_hold();
	for (int i = 0; i < 100 && retire_list; i++) {
		usleep(1000);
		reclaim();
	}
	ns_agent__publish_hits();
	atomic_store(&ctl_running, false);
	return NULL;
}

bool ns_agent__ctl_running(void)
{
	return atomic_load(&ctl_running);
}

int ns_agent__ctl_start(void)
{
	if (sem_init(&hold_sem, 0, 0) != 0)
		return -1;
	sigset_t all, old;
	sigfillset(&all);
	// The control thread takes no asynchronous signals: the program's handlers never
	// run on it. Synchronous ones stay unblocked: the kernel turns a blocked SIGTRAP
	// from an int3 into SIG_DFL and kills the process, and this thread calls libc
	// functions the user may have put a tracepoint in.
	sigdelset(&all, SIGTRAP);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGILL);
	sigdelset(&all, SIGFPE);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	atomic_store(&ctl_running, true);
	int rc = pthread_create(&ctl_thread, NULL, ctl_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		atomic_store(&ctl_running, false);
		return -1;
	}
	pthread_detach(ctl_thread);
	return 0;
}

void ns_agent__hold_wait(void)
{
	while (sem_wait(&hold_sem) != 0 && errno == EINTR)
		;
}

void ns_agent__atfork_child(void)
{
	// The child has no control thread and must not write into the parent's rings:
	// stop collecting and put the original code back (async-signal-safe calls only).
	atomic_store(&ns_agent__g.collect, false);
	atomic_store(&ctl_running, false); // the control thread is not forked
	if (ns_agent__g.ctl_fd >= 0)
		close(ns_agent__g.ctl_fd);
	ns_agent__g.ctl_fd = -1;
	if (ns_agent__g.mem_fd >= 0)
		close(ns_agent__g.mem_fd);
	// The parent's /proc/self/mem fd writes the parent's memory: reopen ours.
	ns_agent__g.mem_fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	for (unsigned i = 0; i < NS_AGENT__TABLE_SIZE; i++) {
		struct ns_agent__site *s = atomic_load(&ns_agent__g.table[i].site);
		if (s && ns_agent__g.mem_fd >= 0)
			while (pwrite(ns_agent__g.mem_fd, s->orig, s->jumped ? s->wlen : 1,
			              (off_t)s->addr) < 0 &&
			       errno == EINTR)
				;
	}
}
