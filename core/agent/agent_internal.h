/* Internals of libnonstop-agent.so shared by its files. Never included from outside
 * core/agent. Everything here has hidden visibility (the library's default). */
#ifndef NS_AGENT_INTERNAL_H
#define NS_AGENT_INTERNAL_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <ucontext.h>

#include "agent/agent.h"
#include "arch/arch.h"
#include "ax/ax.h"

enum {
	NS_AGENT__TABLE_SIZE = 8192, /* open-addressing site table (power of two) */
	NS_AGENT__SLOT_SIZE = 32,    /* one out-of-line copy: insn (<= 15) + jmp (<= 14) */
	NS_AGENT__PARK_MAX = 65536,  /* parked code blocks kept for reuse (agent_ctl.c) */
	NS_AGENT__ORIG_MAX = 24,     /* >= NS_ARCH_PAD_MAX_WINDOW */
};

/* One installed tracepoint at one address. Counters are touched by the handler; the
 * definition is immutable once published. Freed only via the retire list. */
struct ns_agent__tp {
	struct ns_rsp_tracepoint def; /* decoded INSTALL (arrays malloc'd) */
	bool has_regs;                /* an R action */
	_Atomic uint64_t hits;        /* hits where the condition held */
	_Atomic uint64_t frames;      /* frames collected (for max_frames) */
	_Atomic bool cond_err_sent;   /* the one condition-error frame was emitted */
	/* The condition compiled to native code (agent_jit.c), run at jump-pad hits (the
	 * pad's register block); NULL: interpreted. Code memory is never freed. */
	ns_ax_jit_fn cond_jit;
	size_t cond_jit_len;
	bool cond_reads_mem; /* the condition has a ref opcode (needs ctx->fast) */
	/* The X actions compiled likewise: act_jit[i] for action i (NULL: not an X
	 * action, or interpreted); act_jit NULL if none is. */
	ns_ax_jit_fn *act_jit;
	size_t *act_jit_len;
	bool act_reads_mem; /* one of them has a ref opcode */
	/* X actions (bit i: action i) that cannot add anything to a frame (ns_ax_is_inert:
	 * a logpoint's register value, already in the R block): not run at hits. */
	uint64_t inert;
};

/* What a jump pad's inline record collects (ns_agent__record_plan): the registers of
 * the R actions, and the X actions' memory reads in order (ns_ax_plan_reads; a read
 * based on another's value names it by its index in this list). */
struct ns_agent__rec_plan {
	uint64_t mask;
	uint32_t nreads;
	uint32_t pad;
	struct ns_ax_plan_read reads[NS_ARCH_PAD_REC_READS];
};

/* One patched address. Immutable once published: adding or removing a tracepoint
 * publishes a new version and retires the old one. */
struct ns_agent__site {
	uint64_t addr;
	struct ns_arch_insn insn;
	uint8_t orig[NS_AGENT__ORIG_MAX]; /* original bytes at addr (orig[0] is replaced) */
	size_t orig_len;
	uint64_t slot; /* out-of-line copy (PLAIN/RIPREL, and RET as fallback), 0 if none */
	/* Jump-pad tier (agent_jump.c): pad != 0 once the pad is written. From then on an
	 * int3 hit at addr (a thread that trapped while the site was being converted or
	 * removed) resumes at pad_block, the pad's relocated window, never in the original
	 * bytes. jumped: "jmp pad" is (being) written over [addr, addr+wlen). */
	uint64_t pad;       /* the pad's address (parked when the site goes) */
	size_t pad_cap;     /* its bytes */
	uint64_t pad_block; /* pad + block_off */
	struct ns_arch_pad padinfo;
	uint8_t wlen; /* window length (bytes displaced) */
	bool jumped;  /* the tail of the window may hold the jmp: restore wlen bytes */
	/* The pad's guard (the condition inline, ns_ax_jit_compile_guard): its armed byte,
	 * 0 if the pad has none, and the condition it was compiled from (never freed).
	 * It is armed only while the site holds exactly one tracepoint with that
	 * condition (agent_ctl.c publish). */
	uint64_t guard_armed;
	const uint8_t *guard_cond;
	size_t guard_cond_len;
	/* The pad's inline record (arch.h), 0 if none: its armed byte, and the tracepoint
	 * number and R mask it was built for. Armed only while the site holds exactly one
	 * tracepoint that plans to the same record (agent_ctl.c publish). */
	uint64_t record_armed;
	uint32_t record_num;
	struct ns_agent__rec_plan record_plan;
	const struct ns_agent_shm *record_shm; /* whose template table the record names */
	enum ns_agent_tier tier;
	char why[200]; /* the INSTALL reply's text for this site */
	unsigned ntps;
	struct ns_agent__tp *tps[];
};

struct ns_agent__entry {
	_Atomic uint64_t key; /* address, 0 = empty; never cleared (tombstones keep probing) */
	_Atomic(struct ns_agent__site *) site; /* NULL once removed */
};

struct ns_agent__state {
	struct ns_agent_shm *shm;
	int ctl_fd;
	int mem_fd;            /* /proc/self/mem, O_RDWR: all code writes go through it */
	int wake_fd;           /* eventfd: a thread claimed a ring (the control thread warms) */
	_Atomic bool collect;  /* false in a forked child */
	_Atomic long inflight; /* handlers running right now without a thread slot */
	/* membarrier(PRIVATE_EXPEDITED_SYNC_CORE) is registered: hits may use per-thread
	 * slots (struct ns_agent__slot) instead of the shared inflight counter. */
	bool slots_ok;
	_Atomic uint64_t hits_noslot; /* hits of threads without a slot */
	_Atomic uint32_t gen;         /* bumped when a re-attach replaces shm (stale TLS ring) */
	struct sigaction old_trap;
	bool have_fsgsbase; /* rdfsbase/rdgsbase usable (AT_HWCAP2 FSGSBASE) */
	bool no_probe;      /* NONSTOP_AGENT_NO_PROBE=1: reads always by process_vm_readv */
	struct ns_agent__entry table[NS_AGENT__TABLE_SIZE];
};

extern struct ns_agent__state ns_agent__g;

/* Per-thread hit state, claimed by a thread at its first hit (agent_collect_sig.c):
 * written by that thread only, so a hit touches no cache line shared with other
 * threads. The control thread reads busy after a membarrier (asymmetric fence: a hit
 * stores busy, compiler barrier, loads the site; the control thread unpublishes,
 * membarrier, loads busy), and sums hits into shm->hits. */
enum { NS_AGENT__NSLOTS = 1024 };
struct ns_agent__slot {
	_Atomic uint32_t owner; /* tid, 0 = free */
	_Atomic uint32_t busy;  /* collectors running on this thread (nested in handlers) */
	_Atomic uint64_t hits;  /* hits seen on this thread */
	_Atomic uint64_t kreads; /* reads of program memory through the kernel */
	char pad[40];
} __attribute__((aligned(64)));
extern struct ns_agent__slot ns_agent__slots[NS_AGENT__NSLOTS];
/** Start of a hit (before any site is loaded): this thread's slot marked busy, or
 * NULL if it has none (the shared inflight counter was incremented instead). */
struct ns_agent__slot *ns_agent__enter(void);
/** End of a hit started by ns_agent__enter (which returned @slot). */
void ns_agent__leave(struct ns_agent__slot *slot);
/** Count one hit (shm->hits, published by the control thread). */
void ns_agent__count_hit(struct ns_agent__slot *slot);

/* agent_jit.c (control thread): no hit that may have loaded something unpublished
 * before this call is still running. */
bool ns_agent__quiescent(void);
/** Publish the hit count into shm->hits (and on a new shm, start counting from 0). */
void ns_agent__publish_hits(void);
/** Threads that exited give their slots back (their hits are kept). */
void ns_agent__reap_slots(void);

/* agent_warm.c (control thread) */
/** Back the rings' next pages ahead of their producers (shm->warm_bytes). Returns in
 * how many milliseconds it wants to run again: 0 (more to do now), 2 for a ring just
 * claimed, when a moving producer will be halfway through its backed pages
 * (ns_agent_warm_delay), or -1 (nothing until something changes: the next tick). */
int ns_agent__warm_tick(void);

/** Back the first warm_bytes of the ring the next thread to hit will claim, now (before
 * a site is patched: its first hits then write backed pages). */
void ns_agent__warm_spare(void);

/* agent_trap_sig.c */
void ns_agent__on_sigtrap(int sig, siginfo_t *si, void *uc);
struct ns_agent__entry *ns_agent__lookup(uint64_t addr);

/* agent_collect_sig.c */
/** Set while this thread collects (either tier): a hit from inside the collection (a
 * tracepoint in code it calls, or in a signal handler that interrupted it) is not
 * collected, it only resumes. */
extern __thread bool ns_agent__in_hit __attribute__((tls_model("initial-exec")));
/** Conditions, hit counts and collection for every tracepoint of @site, with the
 * registers from @uc (trap tier) or, if @uc is NULL, from the pad's block @regs
 * (NS_ARCH_PAD_NREGS, arch.h). */
void ns_agent__collect(const struct ns_agent__site *site, ucontext_t *uc, const uint64_t *regs,
                       struct ns_agent__slot *slot);
/** ns_agent__collect, unless collection is off or this thread is already inside a
 * collection (a program signal handler ran traced code): that hit is not collected (the
 * collector is not re-entered) and is counted as dropped, its condition not evaluated.
 * Async-signal-safe. */
void ns_agent__collect_once(const struct ns_agent__site *site, ucontext_t *uc, const uint64_t *regs,
                            struct ns_agent__slot *slot);
int ns_agent__read_reg(ucontext_t *uc, uint64_t addr, unsigned regno, uint64_t *val);

/* agent_pad_sig.c */
/** The collector every pad calls (arch.h contract): @ctx is the site's table entry. */
void ns_agent__pad_collect(void *ctx, const uint64_t *regs);
/** The read function of pads' inline records (arch.h "Memory reads"): reads what the
 * collector would read without the kernel (the thread's stack, the executable's
 * mappings, a probe), else returns 0. */
uint64_t ns_agent__pad_read(void *dst, uint64_t addr, uint64_t len, uint64_t *state);
/** Handler of NS_AGENT__MOVE_SIG: moves this thread out of the window being patched. */
void ns_agent__on_move(int sig, siginfo_t *si, void *uc);

/* A request to move threads out of (lo, lo+len) into the pad's relocated window, and
 * the threads' acknowledgements (agent_pad_sig.c / agent_jump.c). */
enum { NS_AGENT__MOVE_MAX_TIDS = 4096 };
struct ns_agent__move {
	_Atomic uint64_t lo; /* 0: no request */
	uint64_t len;
	uint64_t block; /* pad_block */
	struct ns_arch_reloc reloc;
	_Atomic uint32_t gen;
	unsigned ntids;
	uint32_t tids[NS_AGENT__MOVE_MAX_TIDS];
	_Atomic uint32_t acked[NS_AGENT__MOVE_MAX_TIDS]; /* == gen once handled */
	_Atomic uint64_t moved;                          /* threads moved, ever */
};
extern struct ns_agent__move ns_agent__mv;
#define NS_AGENT__MOVE_SIG (SIGRTMAX - 2)

/* This thread's stack mapping in ns_ax_jit_range form (lo, limit = hi - lo - 7; 0 until
 * the thread's first hit through the collector found it): what a pad's guard may read
 * (agent_collect_sig.c sets it, the guards read it fs-relative). */
extern __thread uint64_t ns_agent__guard_lo __attribute__((tls_model("initial-exec")));
extern __thread uint64_t ns_agent__guard_limit __attribute__((tls_model("initial-exec")));

/* agent_jit.c (control thread) */
/** Read NONSTOP_AGENT_NO_JIT once at start. */
void ns_agent__jit_init(void);
/** Compile @tp's condition and X actions for the pad's register block into code near
 * @near (sets tp->cond_jit, tp->act_jit). What stays interpreted is appended to @why
 * (@cap bytes): "; condition interpreted: <reason>", "; action N interpreted:
 * <reason>". */
void ns_agent__jit_tp(struct ns_agent__tp *tp, uint64_t near, char *why, size_t cap);
/** Compile @d's condition as a jump-pad guard for the site at @site into @buf (@cap
 * bytes): true with *@len and *@clobber set, or false with the reason appended to @why
 * ("; condition not inline: ..."). */
bool ns_agent__jit_guard(const struct ns_rsp_tracepoint *d, uint64_t site, uint8_t *buf,
                         size_t cap, size_t *len, uint32_t *clobber, char *why, size_t why_cap);
/** Whether @d's collection can be a jump pad's inline record (arch.h: its frame is a
 * fixed template plus tid, TSC, sequence, registers and memory read at fixed offsets
 * from registers or from values read): true with the plan in *@plan (zeroed first, so
 * plans compare with memcmp), else false with the reason (static text) in *@why. Also
 * false without an invariant TSC or with NONSTOP_AGENT_NO_JIT=1. */
bool ns_agent__record_plan(const struct ns_rsp_tracepoint *d, struct ns_agent__rec_plan *plan,
                           const char **why);
/** The inline record of @d (planned: @plan) at @site: the ring record into @tmpl, the
 * fields into @fields (*@nfields of them), the reads into @reads (plan->nreads). The
 * record is compact (agent.h): the frame as ns_agent__collect would build it goes to a
 * slot of the shm's template table (one with the same content if there is one); if the
 * table is full, the whole frame is the record (header flagged NS_AGENT_RECORD_TSC).
 * Returns its length, 0 if it does not fit NS_ARCH_PAD_REC_MAX. */
size_t ns_agent__record_build(const struct ns_rsp_tracepoint *d, uint64_t site,
                              const struct ns_agent__rec_plan *plan,
                              uint8_t tmpl[NS_ARCH_PAD_REC_MAX],
                              struct ns_arch_rec_field fields[NS_ARCH_PAD_REC_FIELDS],
                              size_t *nfields, struct ns_arch_rec_read reads[NS_ARCH_PAD_REC_READS]);
/** This thread's block for inline records (arch.h struct ns_arch_pad_thread): set by
 * the collector when the thread claims its ring and its slot. */
extern __thread struct ns_arch_pad_thread ns_agent__thr __attribute__((tls_model("initial-exec")));
/** Rebuild the table of readable anonymous mappings (thread stacks) that hits look
 * their stack range up in (lock-free; the old table is never freed). */
void ns_agent__maps_refresh(void);

/* agent_probe_sig.c: reads of the program's memory by plain loads (ns_mem_probe),
 * safe under the agent's SIGSEGV/SIGBUS handlers. */
/** Probes are usable: the handlers are installed (cleared by a fault that is not a
 * probe's, until the next tick). */
extern _Atomic bool ns_agent__probe_on;
/** A hit read an address the table of mappings does not know: refresh it. */
extern _Atomic bool ns_agent__maps_stale;
/** Control thread, at start and every tick: install the handlers if they are not the
 * process's current ones (chaining to what the program installed), set probe_on. */
void ns_agent__probe_tick(void);
/** Control thread, when the stub is gone: probes off, the program's actions back. */
void ns_agent__probe_fini(void);
/** The hitting thread may probe: probe_on, and SIGSEGV and SIGBUS not blocked in it
 * (@uc: the trap tier's context, whose mask is the thread's; NULL: a pad's hit, asked
 * of the kernel). 1 yes, 0 no. */
int ns_agent__probe_thread_ok(const ucontext_t *uc);

/* Sorted, immutable table of [lo, hi) readable anonymous/stack mappings (where a
 * thread's stack is looked up), and the readable runs of the main executable's own
 * mappings with its .bss (never unmapped while the program runs): both read directly,
 * without a syscall, at hits. */
enum { NS_AGENT__NSTATIC = 3 };
struct ns_agent__maps {
	uint32_t gen;
	uint32_t n;
	uint32_t nst;
	uint32_t nrd;
	uint64_t st[2 * NS_AGENT__NSTATIC];
	/* The readable mappings probes may read (agent_probe_sig.c), merged runs, sorted:
	 * nrd pairs, in the same allocation after r's. */
	const uint64_t *rd;
	uint64_t r[]; /* lo0, hi0, lo1, hi1, ... */
};
extern _Atomic(struct ns_agent__maps *) ns_agent__maps_cur;

/* TSC to CLOCK_REALTIME (agent_jit.c computes it, agent_collect_sig.c uses it): ns =
 * base_ns + ((tsc - base_tsc) * mult >> 32). Published with a seqlock. */
struct ns_agent__tsc {
	_Atomic uint32_t seq; /* odd while being written; 0: no calibration */
	_Atomic uint64_t base_tsc, base_ns, mult;
	_Atomic uint64_t max_delta; /* ticks after base_tsc the base is trusted for (~2 s) */
};
extern struct ns_agent__tsc ns_agent__tsc;
/** Calibrate (control thread): the first call takes a (tsc, realtime) pair, later
 * ones (>= 10 ms on) publish the rate since that pair and a new base. Does nothing
 * without an invariant TSC. */
void ns_agent__tsc_calibrate(void);

/* agent_ctl.c */
/** Start the control thread on the state already set up. */
int ns_agent__ctl_start(void);
/** A control thread is running (its connection may still be alive). */
bool ns_agent__ctl_running(void);
/** Block until RESUME arrives (or the control socket closes). */
void ns_agent__hold_wait(void);
/** pthread_atfork child handler: restore code, stop collecting. */
void ns_agent__atfork_child(void);

/** All code writes (through /proc/self/mem, never making a page writable). */
struct ns_err *ns_agent__write_code(uint64_t addr, const void *buf, size_t len);
/** @size bytes of fresh executable memory within reach of @addr. */
struct ns_err *ns_agent__code_alloc(uint64_t addr, size_t size, uint64_t *out);
/* Code no longer used (a removed site's slot and pad, a freed tracepoint's native code)
 * is parked, never freed nor rewritten: a thread may still be inside it. A new block
 * that comes out byte for byte the same as a parked one takes that one instead of fresh
 * memory (the same pad at the same line again, the same condition again), so a thread
 * still inside runs exactly what it would have run. What a user toggles costs memory
 * once. */
/** Park block @mem of @cap bytes (at most NS_AGENT__PARK_MAX are kept; more are
 * forgotten, i.e. leaked as before). */
void ns_agent__code_park(uint64_t mem, size_t cap);
/** Parked blocks of at least @len bytes within reach of @addr: up to @max of them into
 * @out; how many. */
size_t ns_agent__code_parked(uint64_t addr, size_t len, uint64_t *out, size_t max);
/** Whether the @len bytes at parked block @mem are @buf's (the @nskip offsets in @skip
 * excepted: bytes the agent changes at run time), and if so take it out of the parked
 * blocks. */
bool ns_agent__code_take(uint64_t mem, const uint8_t *buf, size_t len, const size_t *skip,
                         size_t nskip);
/** A block for @len bytes of position-independent code @buf near @addr: a parked block
 * with those bytes, else fresh memory written with them. */
struct ns_err *ns_agent__code_place(uint64_t addr, const uint8_t *buf, size_t len,
                                    uint64_t *out);

/* agent_jump.c: the jump-pad tier (control thread only). */
/** Once at start: membarrier registration, the move signal, and the tier switch.
 * @no_jump: the user asked for the int3 tier only (NONSTOP_AGENT_TIER=trap). */
void ns_agent__jump_init(bool no_jump);
/** Why the jump-pad tier is not available at all (NULL if it is). */
const char *ns_agent__jump_unavailable(void);
/** For a new site @s (prepare_site done, not yet published) of tracepoint @def whose
 * table entry is @e: choose the window, build and write the pad, and fill s->pad,
 * pad_block, padinfo, wlen. false (with the reason in s->why) if the site is not
 * eligible. */
bool ns_agent__jump_prepare(struct ns_agent__site *s, const struct ns_rsp_tracepoint *def,
                            struct ns_agent__entry *e);
/** Turn the published site @s (pad ready, int3 already at s->addr) into "jmp pad":
 * serialise, move threads out of the window, tail, serialise, first byte, serialise.
 * Returns 1 done, 0 refused before the tail was touched (threads could not be moved;
 * the reason in @why), -1 failed after (the site stays int3 + pad; @why says why). */
int ns_agent__jump_patch(const struct ns_agent__site *s, char *why, size_t cap);
/** Undo: int3 at addr, serialise, original tail, serialise, and with @restore_first
 * the original first byte and serialise. */
struct ns_err *ns_agent__jump_unpatch(const struct ns_agent__site *s, bool restore_first);

#endif
