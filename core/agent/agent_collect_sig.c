/* Condition, hit counting and collection into this thread's ring, called from the
 * SIGTRAP handler. Signal context: no malloc, no locks, no stdio; target memory only
 * through ns_mem_read*; TLS is initial-exec so the first touch never allocates. */
#define _GNU_SOURCE
#include "agent/agent_internal.h"

#include <asm/prctl.h>
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "agent/collect.h"
#include "ax/ax.h"
#include "base/mem.h"
#include "frame/frame.h"

#define TLS __attribute__((tls_model("initial-exec")))

static __thread struct ns_agent_ring *my_ring TLS;
static __thread uint32_t my_tid TLS;
static __thread uint32_t my_gen TLS;             /* ns_agent__g.gen when claimed */
static __thread struct ns_agent_shm *my_shm TLS; /* the mapping my_ring is in */
__thread bool ns_agent__in_hit TLS;

enum { REC_HDR = 8 };

static uint32_t tid(void)
{
	if (!my_tid)
		my_tid = (uint32_t)syscall(SYS_gettid);
	return my_tid;
}

/* ---- per-thread slots ---- */

struct ns_agent__slot ns_agent__slots[NS_AGENT__NSLOTS];
static __thread struct ns_agent__slot *my_slot TLS;
static __thread bool my_slot_none TLS; /* every slot was taken at this thread's first hit */

static struct ns_agent__slot *claim_slot(void)
{
	uint32_t me = tid();
	for (unsigned i = 0; i < NS_AGENT__NSLOTS; i++) {
		struct ns_agent__slot *s = &ns_agent__slots[i];
		uint32_t free_owner = 0;
		if (atomic_load_explicit(&s->owner, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_strong(&s->owner, &free_owner, me)) {
			ns_agent__thr.slot = (uint64_t)(uintptr_t)s;
			return my_slot = s;
		}
	}
	my_slot_none = true;
	return NULL;
}

struct ns_agent__slot *ns_agent__enter(void)
{
	struct ns_agent__slot *s = my_slot;
	if (!s && !my_slot_none && ns_agent__g.slots_ok)
		s = claim_slot();
	if (!s) {
		// seq_cst: pairs with the control thread's unpublish and its load.
		atomic_fetch_add(&ns_agent__g.inflight, 1);
		return NULL;
	}
	// Only this thread writes busy, with one unlocked instruction (a signal lands
	// before or after it). The "memory" clobber keeps it before the site's load;
	// the CPU's store-load reordering is the control thread's membarrier's business.
	__asm__ volatile("incl %0" : "+m"(*(uint32_t *)&s->busy) : : "memory");
	return s;
}

void ns_agent__leave(struct ns_agent__slot *s)
{
	if (!s) {
		atomic_fetch_sub(&ns_agent__g.inflight, 1);
		return;
	}
	__asm__ volatile("decl %0" : "+m"(*(uint32_t *)&s->busy) : : "memory");
}

void ns_agent__count_hit(struct ns_agent__slot *s)
{
	if (!s) {
		atomic_fetch_add_explicit(&ns_agent__g.hits_noslot, 1, memory_order_relaxed);
		return;
	}
	// One unlocked instruction: exact against a nested hit in a signal handler.
	__asm__ volatile("addq $1, %0" : "+m"(*(uint64_t *)&s->hits));
}

// Segment selectors packed in REG_CSGSFS: cs, gs, fs, and ss on kernels that save it
// (UC_SIGCONTEXT_SS), 16 bits each.
static uint64_t selector(ucontext_t *uc, unsigned shift)
{
	return ((uint64_t)uc->uc_mcontext.gregs[REG_CSGSFS] >> shift) & 0xffff;
}

// fs_base/gs_base of this thread: rdfsbase/rdgsbase where the kernel enables them
// (Linux 5.9+, HWCAP2_FSGSBASE), else arch_prctl.
static int seg_base(unsigned regno, uint64_t *val)
{
	unsigned long base;
	if (ns_agent__g.have_fsgsbase) {
		if (regno == NS_REG_FS_BASE)
			__asm__ volatile("rdfsbase %0" : "=r"(base));
		else
			__asm__ volatile("rdgsbase %0" : "=r"(base));
		*val = base;
		return 0;
	}
	if (syscall(SYS_arch_prctl, regno == NS_REG_FS_BASE ? ARCH_GET_FS : ARCH_GET_GS, &base) !=
	    0)
		return -1;
	*val = base;
	return 0;
}

// A register at a jump pad: the pad's block (arch.h) and the live segment registers.
static int pad_read_reg(const uint64_t *regs, uint64_t addr, unsigned regno, uint64_t *val)
{
	uint16_t seg;
	if (regno < 16) {
		*val = regs[regno];
		return 0;
	}
	switch (regno) {
	case NS_REG_RIP:
		*val = addr;
		return 0;
	case NS_REG_EFLAGS:
		*val = regs[NS_ARCH_PAD_REG_EFLAGS];
		return 0;
	case NS_REG_CS:
		__asm__("mov %%cs, %0" : "=r"(seg));
		break;
	case NS_REG_SS:
		__asm__("mov %%ss, %0" : "=r"(seg));
		break;
	case NS_REG_DS:
		__asm__("mov %%ds, %0" : "=r"(seg));
		break;
	case NS_REG_ES:
		__asm__("mov %%es, %0" : "=r"(seg));
		break;
	case NS_REG_FS:
		__asm__("mov %%fs, %0" : "=r"(seg));
		break;
	case NS_REG_GS:
		__asm__("mov %%gs, %0" : "=r"(seg));
		break;
	case NS_REG_FS_BASE:
	case NS_REG_GS_BASE:
		return seg_base(regno, val);
	default:
		return -1;
	}
	*val = seg;
	return 0;
}

int ns_agent__read_reg(ucontext_t *uc, uint64_t addr, unsigned regno, uint64_t *val)
{
	static const int map[16] = {REG_RAX, REG_RBX, REG_RCX, REG_RDX, REG_RSI, REG_RDI,
	                            REG_RBP, REG_RSP, REG_R8,  REG_R9,  REG_R10, REG_R11,
	                            REG_R12, REG_R13, REG_R14, REG_R15};
	const greg_t *g = uc->uc_mcontext.gregs;
	uint16_t seg;
	if (regno < 16) {
		*val = (uint64_t)g[map[regno]];
		return 0;
	}
	switch (regno) {
	case NS_REG_RIP:
		*val = addr; // where the tracepoint is, not past the int3
		return 0;
	case NS_REG_EFLAGS:
		*val = (uint64_t)g[REG_EFL];
		return 0;
	case NS_REG_CS:
		*val = selector(uc, 0);
		return 0;
	case NS_REG_GS:
		*val = selector(uc, 16);
		return 0;
	case NS_REG_FS:
		*val = selector(uc, 32);
		return 0;
	case NS_REG_SS:
		if (!(uc->uc_flags & 0x4 /* UC_SIGCONTEXT_SS */))
			return -1;
		*val = selector(uc, 48);
		return 0;
	case NS_REG_DS:
		__asm__("mov %%ds, %0" : "=r"(seg));
		*val = seg;
		return 0;
	case NS_REG_ES:
		__asm__("mov %%es, %0" : "=r"(seg));
		*val = seg;
		return 0;
	case NS_REG_FS_BASE:
	case NS_REG_GS_BASE:
		return seg_base(regno, val);
	default:
		return -1;
	}
}

struct hit {
	ucontext_t *uc;       /* trap tier, else NULL */
	const uint64_t *regs; /* jump pad's register block */
	uint64_t addr;
	/* Read directly, without a syscall: the hitting thread's stack from rsp - 128
	 * (rounded down to the page) to the end of its mapping (0, 0 if unknown), and the
	 * executable's own mappings (maps->st). */
	uint64_t stk_lo, stk_hi;
	const struct ns_agent__maps *maps;
	uint64_t rsp;
	bool ranges; /* stk_lo, stk_hi and maps are set (hit_ranges, on first need) */
	int8_t probe; /* the thread may probe (ns_agent__probe_thread_ok), -1: not asked */
	struct ns_agent__slot *slot; /* this thread's, or NULL */
	struct ns_frame_builder b;
};

static bool inside(uint64_t lo, uint64_t hi, uint64_t addr, size_t len)
{
	return addr >= lo && addr < hi && len <= hi - addr;
}

static void hit_ranges(struct hit *h);
static void fast_ranges(struct hit *h, struct ns_ax_jit_range *fast);

// [addr, addr+len) lies in memory known readable for the whole hit.
static bool direct(struct hit *h, uint64_t addr, size_t len)
{
	if (!h->ranges)
		hit_ranges(h);
	if (inside(h->stk_lo, h->stk_hi, addr, len))
		return true;
	const struct ns_agent__maps *m = h->maps;
	for (unsigned i = 0; m && i < m->nst; i++)
		if (inside(m->st[2 * i], m->st[2 * i + 1], addr, len))
			return true;
	return false;
}

// The pair of the sorted [lo, hi) pairs @v (@n of them) that holds @addr, or NULL.
static const uint64_t *find_range(const uint64_t *v, uint32_t n, uint64_t addr)
{
	uint32_t a = 0, b = n;
	while (a < b) {
		uint32_t mid = a + (b - a) / 2;
		if (addr < v[2 * mid])
			b = mid;
		else if (addr >= v[2 * mid + 1])
			a = mid + 1;
		else
			return &v[2 * mid];
	}
	return NULL;
}

/* The readable mapping (maps->rd) found last by this thread, and its table's generation. */
static __thread uint64_t rd_lo TLS, rd_hi TLS;
static __thread uint32_t rd_gen TLS;

// [addr, addr+len) starts in a mapping probes may read; *@end: where that run ends.
static bool probe_mapped(const struct ns_agent__maps *m, uint64_t addr, uint64_t *end)
{
	if (!m)
		return false;
	if (m->gen == rd_gen && addr >= rd_lo && addr < rd_hi) {
		*end = rd_hi;
		return true;
	}
	const uint64_t *r = find_range(m->rd, m->nrd, addr);
	if (r) {
		rd_gen = m->gen;
		rd_lo = r[0];
		*end = rd_hi = r[1];
		return true;
	}
	// Not in the table: a mapping made since it was read, or a wild pointer (the
	// first pages are never mapped: not worth a refresh).
	if (addr >= 65536)
		atomic_store_explicit(&ns_agent__maps_stale, true, memory_order_relaxed);
	return false;
}

// The page an inline record's probe faulted on (ns_agent__pad_read), this thread: the
// collector that takes the hit over reads it through the kernel instead of faulting
// again.
static __thread uint64_t pad_fault_page TLS;

// Read [addr, addr+len) by plain loads if this hit may (agent_probe_sig.c): the
// bytes copied, or -1 to read through the kernel instead.
static long probe_read(struct hit *h, void *dst, uint64_t addr, size_t len)
{
	if (!atomic_load_explicit(&ns_agent__probe_on, memory_order_relaxed))
		return -1;
	if (pad_fault_page && addr >> 12 <= pad_fault_page >> 12 &&
	    (addr + len - 1) >> 12 >= pad_fault_page >> 12) {
		pad_fault_page = 0;
		return -1;
	}
	if (!h->ranges)
		hit_ranges(h);
	uint64_t end;
	if (!probe_mapped(h->maps, addr, &end))
		return -1;
	if (h->probe < 0)
		h->probe = (int8_t)ns_agent__probe_thread_ok(h->uc);
	if (!h->probe)
		return -1;
	// Past the end of the mapping's run, the kernel reads the rest (or says it
	// cannot): a probe covers what the table knows.
	size_t n = end - addr < len ? (size_t)(end - addr) : len;
	size_t got = ns_mem_probe(dst, addr, n);
	if (got == n && n < len)
		got += ns_mem_read_partial((char *)dst + n, addr + n, len - n);
	return (long)got;
}

// An inline record's read (arch.h "Memory reads"): what the collector would read
// without the kernel (the stack and static mappings directly, else a probe), or 0 and
// the hit goes to the collector, which reads through the kernel or reports the error.
// *state: bit 0 once the thread's signal mask was asked this hit, bit 1 if it may probe.
uint64_t ns_agent__pad_read(void *dst, uint64_t addr, uint64_t len, uint64_t *state)
{
	if (addr + len < addr)
		return 0;
	uint64_t lo = ns_agent__guard_lo, limit = ns_agent__guard_limit;
	if (limit && inside(lo, lo + limit + 7, addr, len)) {
		memcpy(dst, (const void *)(uintptr_t)addr, len);
		return 1;
	}
	const struct ns_agent__maps *m = atomic_load_explicit(&ns_agent__maps_cur,
	                                                      memory_order_acquire);
	for (unsigned i = 0; m && i < m->nst; i++)
		if (inside(m->st[2 * i], m->st[2 * i + 1], addr, len)) {
			memcpy(dst, (const void *)(uintptr_t)addr, len);
			return 1;
		}
	uint64_t end;
	if (!atomic_load_explicit(&ns_agent__probe_on, memory_order_relaxed) ||
	    !probe_mapped(m, addr, &end) || end - addr < len)
		return 0;
	if (!(*state & 1)) {
		int saved_errno = errno;
		*state = 1 | (ns_agent__probe_thread_ok(NULL) ? 2 : 0);
		errno = saved_errno;
	}
	if (!(*state & 2))
		return 0;
	size_t got = ns_mem_probe(dst, addr, len);
	if (got == len)
		return 1;
	pad_fault_page = (addr + got) | 1; // never 0
	return 0;
}

// One more read through the kernel on this thread (its slot's count; only its owner
// writes it).
static void count_kread(struct hit *h)
{
	if (h->slot)
		atomic_store_explicit(&h->slot->kreads,
		                      atomic_load_explicit(&h->slot->kreads, memory_order_relaxed) + 1,
		                      memory_order_relaxed);
}

static int src_read_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	if (direct(ctx, addr, len)) {
		memcpy(dst, (const void *)(uintptr_t)addr, len);
		return 0;
	}
	if (addr + len < addr)
		return -1;
	long n = probe_read(ctx, dst, addr, len);
	if (n >= 0)
		return (size_t)n == len ? 0 : -1;
	count_kread(ctx);
	return ns_mem_read(dst, addr, len);
}

static size_t src_read_partial(void *ctx, void *dst, uint64_t addr, size_t len)
{
	if (direct(ctx, addr, len)) {
		memcpy(dst, (const void *)(uintptr_t)addr, len);
		return len;
	}
	if (addr + len < addr)
		len = (size_t)(0 - addr);
	long n = probe_read(ctx, dst, addr, len);
	if (n >= 0)
		return (size_t)n;
	count_kread(ctx);
	return ns_mem_read_partial(dst, addr, len);
}

static int src_read_reg(void *ctx, unsigned regno, uint64_t *val)
{
	struct hit *h = ctx;
	if (!h->uc)
		return pad_read_reg(h->regs, h->addr, regno, val);
	return ns_agent__read_reg(h->uc, h->addr, regno, val);
}

// Every register at a jump pad in one go (ns_collect_src.read_regs).
static void src_read_regs_pad(void *ctx, uint64_t *out)
{
	const struct hit *h = ctx;
	uint16_t seg;
	memcpy(out, h->regs, 16 * sizeof(uint64_t));
	out[NS_REG_RIP] = h->addr;
	out[NS_REG_EFLAGS] = h->regs[NS_ARCH_PAD_REG_EFLAGS];
	__asm__("mov %%cs, %0" : "=r"(seg));
	out[NS_REG_CS] = seg;
	__asm__("mov %%ss, %0" : "=r"(seg));
	out[NS_REG_SS] = seg;
	__asm__("mov %%ds, %0" : "=r"(seg));
	out[NS_REG_DS] = seg;
	__asm__("mov %%es, %0" : "=r"(seg));
	out[NS_REG_ES] = seg;
	__asm__("mov %%fs, %0" : "=r"(seg));
	out[NS_REG_FS] = seg;
	__asm__("mov %%gs, %0" : "=r"(seg));
	out[NS_REG_GS] = seg;
	for (unsigned r = NS_REG_FS_BASE; r <= NS_REG_GS_BASE; r++)
		if (seg_base(r, &out[r]) != 0)
			out[r] = 0;
}

// This thread now writes into @r (NULL: none): what its inline records use too.
static struct ns_agent_ring *set_ring(struct ns_agent_shm *shm, struct ns_agent_ring *r)
{
	my_ring = r;
	ns_agent__thr.ring = 0; // invalid while it changes (a signal handler may hit)
	__asm__ volatile("" ::: "memory");
	if (!r)
		return NULL;
	r->seq = 0;
	// A new thread, most likely, on a stack the table of mappings may not know yet:
	// the control thread reads it again when it wakes (below), so that this thread's
	// hits soon read their stack directly.
	const struct ns_agent__maps *m = atomic_load_explicit(&ns_agent__maps_cur,
	                                                      memory_order_acquire);
	uint64_t sp = (uint64_t)(uintptr_t)__builtin_frame_address(0);
	if (m && !find_range(m->r, m->n, sp))
		atomic_store_explicit(&ns_agent__maps_stale, true, memory_order_relaxed);
	// The control thread backs this ring ahead of us from now on (agent_warm.c).
	if (ns_agent__g.wake_fd >= 0) {
		uint64_t one = 1;
		syscall(SYS_write, ns_agent__g.wake_fd, &one, sizeof(one));
	}
	ns_agent__thr.data = (uint64_t)(uintptr_t)ns_agent_ring_data(shm, r);
	ns_agent__thr.gen = my_gen;
	ns_agent__thr.tid = tid();
	__asm__ volatile("" ::: "memory");
	ns_agent__thr.ring = (uint64_t)(uintptr_t)r;
	return r;
}

// A hit that interrupted a collection on its own thread: counted as dropped.
static void drop_nested(void)
{
	struct ns_agent_shm *shm = __atomic_load_n(&ns_agent__g.shm, __ATOMIC_ACQUIRE);
	if (!shm)
		return;
	// The interrupted collection may be claiming a ring right now: a ring of this
	// mapping when there is one, else the count of hits that found no ring.
	struct ns_agent_ring *r = my_ring;
	if (r && my_shm == shm)
		atomic_fetch_add(&r->dropped, 1);
	else
		atomic_fetch_add(&shm->dropped_no_ring, 1);
}

static struct ns_agent_ring *claim_ring(struct ns_agent_shm *shm)
{
	// A re-attach replaces the rings (shm stored first, then gen bumped): my_ring is
	// only good for the mapping and generation it was claimed in.
	uint32_t gen = atomic_load_explicit(&ns_agent__g.gen, memory_order_acquire);
	if (my_ring && my_gen == gen && my_shm == shm)
		return my_ring;
	set_ring(shm, NULL);
	my_gen = gen;
	my_shm = shm;
	uint32_t me = tid();
	for (unsigned i = 0; i < shm->nrings; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring(shm, i);
		uint32_t free_owner = 0;
		if (atomic_compare_exchange_strong(&r->owner, &free_owner, me)) {
			ns_agent_ring_claimed(shm, i);
			return set_ring(shm, r);
		}
	}
	// Every ring is taken: take over one whose thread has exited (tgkill with
	// signal 0 reports ESRCH). Its unread records stay for the stub.
	pid_t pid = (pid_t)syscall(SYS_getpid);
	for (unsigned i = 0; i < shm->nrings; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring(shm, i);
		uint32_t owner = atomic_load(&r->owner);
		if (owner && syscall(SYS_tgkill, pid, owner, 0) != 0 &&
		    atomic_compare_exchange_strong(&r->owner, &owner, me)) {
			ns_agent_ring_claimed(shm, i);
			return set_ring(shm, r);
		}
	}
	return NULL;
}

// Room for NS_AGENT_MAX_FRAME contiguous bytes at the ring's head, after a padding
// record if the end of the ring is too short. NULL (and a drop counted) if full.
static uint8_t *ring_reserve(struct ns_agent_shm *shm, struct ns_agent_ring *r, uint64_t *head_out)
{
	uint8_t *data = ns_agent_ring_data(shm, r);
	uint64_t size = shm->ring_bytes;
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t off = head % size;
	uint64_t pad = size - off < NS_AGENT_MAX_FRAME ? size - off : 0;
	uint64_t tail = r->tail_seen; // the consumer's line only when this shows no room
	if (head - tail > size || size - (head - tail) < pad + NS_AGENT_MAX_FRAME) {
		tail = atomic_load_explicit(&r->tail, memory_order_acquire);
		r->tail_seen = tail;
		if (head - tail > size || size - (head - tail) < pad + NS_AGENT_MAX_FRAME) {
			atomic_fetch_add(&r->dropped, 1);
			return NULL;
		}
	}
	if (pad) {
		uint32_t p = (uint32_t)pad | NS_AGENT_RECORD_PAD;
		memcpy(data + off, &p, 4);
		// Publish the padding on its own: the record after it is not final yet.
		atomic_store_explicit(&r->head, head + pad, memory_order_release);
		head += pad;
		off = 0;
	}
	*head_out = head;
	return data + off;
}

static void ring_commit(struct ns_agent_ring *r, uint8_t *rec, uint64_t head, size_t frame_len)
{
	uint32_t len = (uint32_t)((REC_HDR + frame_len + 7) & ~(size_t)7);
	uint32_t fl = (uint32_t)frame_len;
	memcpy(rec, &len, 4);
	memcpy(rec + 4, &fl, 4);
	atomic_store_explicit(&r->head, head + len, memory_order_release);
}

// CLOCK_REALTIME in ns: from the TSC with the control thread's calibration (about
// 10 ns) while it is fresh, else clock_gettime (about 23 ns; docs/jump-pads.md).
static uint64_t now_ns(void)
{
	struct ns_agent__tsc *t = &ns_agent__tsc;
	uint32_t seq = atomic_load_explicit(&t->seq, memory_order_acquire);
	if (seq && !(seq & 1)) {
		uint64_t tsc = __builtin_ia32_rdtsc();
		uint64_t base = atomic_load_explicit(&t->base_tsc, memory_order_relaxed);
		uint64_t ns = atomic_load_explicit(&t->base_ns, memory_order_relaxed);
		uint64_t mult = atomic_load_explicit(&t->mult, memory_order_relaxed);
		uint64_t max = atomic_load_explicit(&t->max_delta, memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&t->seq, memory_order_relaxed) == seq && tsc - base < max)
			return ns + (uint64_t)(((unsigned __int128)(tsc - base) * mult) >> 32);
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool begin_frame(struct hit *h, const struct ns_agent__tp *tp, uint64_t hit_count,
                        struct ns_agent_ring **ring_out, uint8_t **rec_out, uint64_t *head_out)
{
	struct ns_agent_shm *shm = __atomic_load_n(&ns_agent__g.shm, __ATOMIC_ACQUIRE);
	struct ns_agent_ring *r = claim_ring(shm);
	if (!r) {
		atomic_fetch_add(&shm->dropped_no_ring, 1);
		return false;
	}
	uint8_t *rec = ring_reserve(shm, r, head_out);
	if (!rec)
		return false;
	struct ns_frame_hdr hdr;
	memset(&hdr, 0, sizeof(hdr));
	hdr.tp_id = tp->def.num;
	hdr.addr = h->addr;
	hdr.tid = tid();
	hdr.time_ns = now_ns();
	hdr.seq = r->seq++;
	hdr.hit_count = hit_count;
	if (ns_frame_begin(&h->b, rec + REC_HDR, NS_AGENT_MAX_FRAME - REC_HDR, &hdr) != 0)
		return false;
	*ring_out = r;
	*rec_out = rec;
	return true;
}

static void end_frame(struct hit *h, struct ns_agent_ring *r, uint8_t *rec, uint64_t head,
                      uint32_t status, uint64_t fault)
{
	size_t n = ns_frame_end(&h->b);
	// The header records the first failed action; the builder wrote it earlier.
	struct ns_frame_hdr *fh = (struct ns_frame_hdr *)(void *)(rec + REC_HDR);
	fh->status = status;
	fh->fault_addr = fault;
	ring_commit(r, rec, head, n);
}

static void collect_one(struct hit *h, const struct ns_collect_src *src, struct ns_agent__tp *tp,
                        uint64_t hit_count)
{
	struct ns_agent_ring *r;
	uint8_t *rec;
	uint64_t head;
	if (!begin_frame(h, tp, hit_count, &r, &rec, &head))
		return;
	uint32_t status = 0;
	uint64_t fault = 0;
	// At a pad hit the X actions run natively (compiled for the pad's block).
	// Inert actions are skipped in either tier.
	struct ns_ax_jit_range fast[NS_AX_JIT_NRANGES];
	struct ns_collect_native nat = {h->regs ? tp->act_jit : NULL, h->regs, NULL, tp->inert};
	if (h->regs && tp->act_jit && tp->act_reads_mem) {
		fast_ranges(h, fast);
		nat.fast = fast;
	}
	ns_collect_actions_regs(&tp->def, src, h->uc ? NULL : src_read_regs_pad, &nat, &h->b,
	                        &status, &fault);
	end_frame(h, r, rec, head, status, fault);
}

// A condition that cannot be evaluated counts as false; the first time, a frame with
// an ERR block for action 0xffffffff tells the stub why.
static void report_cond_error(struct hit *h, struct ns_agent__tp *tp,
                              const struct ns_ax_result *res)
{
	bool sent = false;
	if (!atomic_compare_exchange_strong(&tp->cond_err_sent, &sent, true))
		return;
	struct ns_agent_ring *r;
	uint8_t *rec;
	uint64_t head;
	if (!begin_frame(h, tp, atomic_load(&tp->hits), &r, &rec, &head))
		return;
	ns_frame_add_err(&h->b, NS_COLLECT_COND_ACTION, res->status, res->fault_addr);
	end_frame(h, r, rec, head, res->status, res->fault_addr);
}

/* ---- native conditions (jump-pad tier) ---- */

static __thread uint64_t stk_lo TLS, stk_hi TLS; /* this thread's stack mapping, or 0 */
__thread uint64_t ns_agent__guard_lo TLS, ns_agent__guard_limit TLS;
static __thread uint32_t stk_gen TLS;            /* the table generation it is from */
static __thread uint32_t stk_asked TLS; /* the table generation found without this stack */

// The readable mapping that holds @rsp in the control thread's table @m (sorted,
// immutable, never freed), cached per thread and table generation. false if unknown.
static bool stack_range(const struct ns_agent__maps *m, uint64_t rsp, uint64_t *lo, uint64_t *hi)
{
	if (!m)
		return false;
	if (m->gen == stk_gen) {
		*lo = stk_lo;
		*hi = stk_hi;
		if (rsp >= stk_lo && rsp < stk_hi)
			return true;
	}
	stk_gen = m->gen;
	stk_lo = stk_hi = 0;
	const uint64_t *r = find_range(m->r, m->n, rsp);
	if (!r)
		return false;
	stk_lo = *lo = r[0];
	stk_hi = *hi = r[1];
	// The mapping stays readable while this thread lives (a stack does not shrink):
	// what the pads' guards may read.
	if (stk_hi - stk_lo >= 8) {
		ns_agent__guard_lo = stk_lo;
		ns_agent__guard_limit = stk_hi - stk_lo - 7;
	}
	return true;
}

static int jit_read_mem(void *user, void *dst, uint64_t addr, size_t len)
{
	return src_read_mem(user, dst, addr, len);
}

static void set_range(struct ns_ax_jit_range *f, uint64_t lo, uint64_t hi)
{
	f->lo = lo;
	f->limit = hi >= lo + 8 ? hi - lo - 7 : 0;
}

// The stack range and the static mappings of this hit (struct hit).
static void hit_ranges(struct hit *h)
{
	uint64_t lo, hi, rsp = h->rsp;
	h->ranges = true;
	h->stk_lo = h->stk_hi = 0;
	h->maps = atomic_load_explicit(&ns_agent__maps_cur, memory_order_acquire);
	if (stack_range(h->maps, rsp, &lo, &hi)) {
		// Below the red zone nothing is the program's: start at rsp - 128
		// rounded down to the page (a guard page lies below a stack, not above).
		uint64_t l = (rsp - 128) & ~(uint64_t)4095;
		h->stk_lo = l < lo ? lo : l;
		h->stk_hi = hi;
	} else if (h->maps && stk_asked != h->maps->gen) {
		// A stack the table does not know (a thread started since it was read):
		// read it again, so that this thread's next hits read their stack directly
		// (and jump pads' inline records can). Once per table: a thread running on
		// memory no re-read would call a stack asks once.
		stk_asked = h->maps->gen;
		atomic_store_explicit(&ns_agent__maps_stale, true, memory_order_relaxed);
	}
}

// What native code at this hit may read inline: the stack, the static mappings.
static void fast_ranges(struct hit *h, struct ns_ax_jit_range *fast)
{
	if (!h->ranges)
		hit_ranges(h);
	set_range(&fast[0], h->stk_lo, h->stk_hi);
	const struct ns_agent__maps *m = h->maps;
	for (unsigned i = 1; i < NS_AX_JIT_NRANGES; i++)
		if (m && i - 1 < m->nst)
			set_range(&fast[i], m->st[2 * (i - 1)], m->st[2 * (i - 1) + 1]);
		else
			set_range(&fast[i], 0, 0);
}

static int jit_read_reg(void *user, unsigned regno, uint64_t *val)
{
	const struct hit *h = user;
	return pad_read_reg(h->regs, h->addr, regno, val);
}

// ns_collect_cond for a compiled condition.
static int jit_cond(struct hit *h, const struct ns_agent__tp *tp, struct ns_ax_result *res)
{
	struct ns_ax_jit_ctx c;
	ns_ax_jit_ctx_init(&c, jit_read_mem, jit_read_reg, NULL, h);
	// The native code reads ctx->fast only at a ref opcode (the memory read helper).
	if (tp->cond_reads_mem)
		fast_ranges(h, c.fast);
	uint64_t v = tp->cond_jit(h->regs, &c);
	if (c.status != NS_AX_OK) {
		res->status = (enum ns_ax_status)c.status;
		res->fault_addr = c.fault_addr;
		res->value = 0;
		res->pc = c.pc;
		return -1;
	}
	return v != 0;
}

void ns_agent__collect(const struct ns_agent__site *site, ucontext_t *uc, const uint64_t *regs,
                       struct ns_agent__slot *slot)
{
	struct hit h;
	h.uc = uc;
	h.regs = regs;
	h.addr = site->addr;
	struct ns_collect_src src = {src_read_mem, src_read_partial, src_read_reg, &h};
	h.rsp = uc ? (uint64_t)uc->uc_mcontext.gregs[REG_RSP] : regs[NS_ARCH_PAD_REG_RSP];
	h.ranges = false;
	h.probe = -1;
	h.slot = slot;
	ns_agent__count_hit(slot);
	for (unsigned i = 0; i < site->ntps; i++) {
		struct ns_agent__tp *tp = site->tps[i];
		const struct ns_rsp_tracepoint *d = &tp->def;
		if (!d->enabled)
			continue;
		struct ns_ax_result res;
		int c = regs && tp->cond_jit ? jit_cond(&h, tp, &res)
		                             : ns_collect_cond(d, &src, &res);
		if (c < 0)
			report_cond_error(&h, tp, &res);
		if (c <= 0)
			continue;
		uint64_t n = atomic_fetch_add(&tp->hits, 1) + 1;
		if (!ns_collect_hit_fires(d, n))
			continue;
		if (d->max_frames && atomic_fetch_add(&tp->frames, 1) >= d->max_frames)
			continue;
		collect_one(&h, &src, tp, n);
	}
}

void ns_agent__collect_once(const struct ns_agent__site *site, ucontext_t *uc, const uint64_t *regs,
                            struct ns_agent__slot *slot)
{
	if (!atomic_load_explicit(&ns_agent__g.collect, memory_order_relaxed))
		return;
	if (ns_agent__in_hit) { // a program signal handler ran traced code mid-collection
		drop_nested();
		return;
	}
	ns_agent__in_hit = true;
	ns_agent__collect(site, uc, regs, slot);
	ns_agent__in_hit = false;
}
