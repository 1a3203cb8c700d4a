/* core/agent: the protocol between nonstop-stub and libnonstop-agent.so (the in-
 * process agent), shared by both sides. The agent library itself exports only
 * ns_agent_* symbols (hidden visibility + version script).
 *
 * Launch: the stub creates a SOCK_SEQPACKET socketpair (control) and a memfd (the
 * rings), and starts the program with LD_PRELOAD=libnonstop-agent.so and
 * NONSTOP_AGENT_FD=<control fd>, NONSTOP_AGENT_SHM=<memfd>. The agent's constructor
 * takes both fds, removes the three variables from the environment (so the program
 * and its children see what they would without nonstop), maps the rings, starts its
 * control thread and sends HELLO. Without the variables the agent stays inert.
 *
 * Rings: one single-producer ring per thread that hits (claimed on the first hit),
 * single consumer (the stub). A record is a uint32 length (of the whole record,
 * 8-aligned, including this word; bit 31 set = padding to skip to the ring start)
 * followed by a trace frame (core/frame). Precisely: uint32 length, uint32 frame
 * bytes, then the frame at offset 8 (so it stays 8-aligned), then padding to 8. A
 * padding record is only the length word (| NS_AGENT_RECORD_PAD) and covers the rest
 * of the ring; records never wrap. Bit 30 of the length (NS_AGENT_RECORD_TSC): the
 * frame's time_ns holds the raw TSC (a jump pad's inline record); ns_agent_ring_pop
 * converts it to CLOCK_REALTIME with a calibration of its own (base/tsc.h).
 *
 * Compact records (bit 29 of the length word, NS_AGENT_RECORD_COMPACT, a jump pad's
 * inline record): only what varies from hit to hit is in the ring; the rest of the
 * frame is a template the agent wrote once in the shm's template table (struct
 * ns_agent_tmpl). The word is then NS_AGENT_RECORD_COMPACT | flags | template index
 * << 12 | record length (< 4096), and ns_agent_ring_pop expands the record into the
 * template's frame: each of the template's fields copies record bytes over frame
 * bytes. A two-register logpoint hit is 40 bytes in the ring instead of 120 (memory
 * a burst must have backed, and bytes the stub copies).
 *
 * The producer fills the bytes and then
 * publishes head with a release store; the consumer reads head with acquire, copies,
 * advances its read position, and stores tail with release when read is
 * NS_AGENT_RECLAIM_LAG (or 1/8 of the ring) ahead of it. Unless a ring streams,
 * ns_agent_ring_trim punches the pages between tail and read out of the memfd
 * (MADV_REMOVE) before moving tail past them: the producer cannot write them then. A
 * full ring counts a drop and never blocks. */
#ifndef NS_AGENT_H
#define NS_AGENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "rsp/rsp.h"

/* The agent's control thread names itself so that the stub can leave it out of the
 * program's thread list (IDE and gdb users see their own threads only). */
#define NS_AGENT_THREAD_NAME "nonstop-agent"

#define NS_AGENT_ENV_FD "NONSTOP_AGENT_FD"
#define NS_AGENT_ENV_SHM "NONSTOP_AGENT_SHM"
#ifndef NS_AGENT_ENV_HOLD
/* "1": the constructor waits for NS_AGENT_MSG_RESUME before the program runs on. */
#define NS_AGENT_ENV_HOLD "NONSTOP_AGENT_HOLD"
#endif

/* "trap": the agent never uses the jump-pad tier (every site runs as int3). Read and
 * removed by the constructor like the variables above. */
#define NS_AGENT_ENV_TIER "NONSTOP_AGENT_TIER"

#define NS_AGENT_SHM_MAGIC 0x4d48534eu /* "NSHM" */
#define NS_AGENT_PROTO_VERSION 3

enum {
	NS_AGENT_NRINGS = 64,
	NS_AGENT_WARM_BYTES = 32 * 1024 * 1024, /* the stub's default warm_bytes */
	/* Per ring, in a memfd: only the pages a thread fills are ever backed (a burst
	 * of ~500 k compact logpoint frames fits); see docs/jump-pads.md. */
	NS_AGENT_RING_BYTES = 64 * 1024 * 1024,
	NS_AGENT_MAX_FRAME = 64 * 1024, /* largest frame one hit may produce */
	/* How far the stub keeps tail behind what it has read (at most 1/8 of a ring):
	 * what it can give back once the ring is quiet (ns_agent_ring_trim). */
	NS_AGENT_RECLAIM_LAG = 8 * 1024 * 1024,
	/* A ring that moved 1/NS_AGENT_STREAM_DIV of the lag or more between two trims
	 * streams: its pages stay backed (ns_agent_ring_trim). */
	NS_AGENT_STREAM_DIV = 32,
	NS_AGENT_RECORD_PAD = 1u << 31,
	NS_AGENT_RECORD_TSC = 1u << 30,
	NS_AGENT_RECORD_COMPACT = 1u << 29,
	NS_AGENT_RECORD_TMPL_SHIFT = 12, /* compact: template index in bits 12..28 */
	NS_AGENT_RECORD_LEN_MASK = 0xfff,
	/* The template table: NS_AGENT_NTMPL slots after the rings. */
	NS_AGENT_NTMPL = 4096,
	NS_AGENT_TMPL_FRAME_MAX = 512,
	NS_AGENT_TMPL_FIELDS = 32,
};

/* A compact record's template (written by the agent's control thread before any record
 * names it, never changed while the shm lives; the consumer checks it all the same). */
struct ns_agent_tmpl_field {
	uint16_t rec_off;   /* bytes of the record ... */
	uint16_t frame_off; /* ... copied over the frame here */
	uint16_t len;
	uint16_t pad;
};

struct ns_agent_tmpl {
	_Atomic uint32_t frame_len; /* bytes of frame; 0: unused slot (stored last, release) */
	uint32_t rec_len;           /* bytes of the compact record (its length word's) */
	uint32_t nfields;
	uint32_t pad;
	struct ns_agent_tmpl_field fields[NS_AGENT_TMPL_FIELDS];
	uint8_t frame[NS_AGENT_TMPL_FRAME_MAX];
};

/* The producer's words and the consumer's are on cache lines of their own: each side
 * reads the other's line only when its copy says the ring is full (producer) or empty
 * (consumer), not on every record. */
struct ns_agent_ring {
	/* Written by the owner thread. */
	_Atomic uint64_t head;    /* bytes produced (monotonic) */
	uint64_t seq;             /* per-thread hit sequence */
	uint64_t tail_seen;       /* a tail value the producer read (<= tail) */
	_Atomic uint64_t dropped; /* hits lost because the ring was full (the stub adds corrupt ones) */
	_Atomic uint32_t owner;   /* tid of the thread that claimed it, 0 = free */
	uint32_t pad;
	uint64_t reserved[3];
	/* Written by the stub. tail is what the producer may reuse: it follows read in
	 * steps of whole pages, each given back (punched) before tail passes it. */
	_Atomic uint64_t tail __attribute__((aligned(64))); /* bytes released (monotonic) */
	uint64_t head_seen;                                  /* a head value the consumer read */
	uint64_t read;                                       /* bytes consumed, >= tail */
	_Atomic uint64_t resets; /* times the stub emptied and released the ring */
	uint64_t trim_read;      /* read at the last ns_agent_ring_trim */
	uint64_t trim_head;      /* head at the last ns_agent_ring_trim */
	uint64_t reserved2[2];
	/* NS_AGENT_RING_BYTES of data follow */
};

struct ns_agent_shm {
	uint32_t magic;
	uint32_t version;
	uint32_t size; /* sizeof(struct ns_agent_shm); readers accept larger */
	uint32_t nrings;
	uint64_t ring_bytes;  /* data bytes per ring */
	uint64_t ring_stride; /* bytes from one ring header to the next */
	uint64_t rings_offset;
	uint64_t total_size;
	_Atomic uint64_t dropped_no_ring; /* hits lost because every ring was taken */
	/* All tracepoint hits seen by the agent since this shm was attached. Counted per
	 * thread and published by the agent's control thread after each message, every
	 * 100 ms, and when the program exits normally. */
	_Atomic uint64_t hits;
	/* Of the reads of program memory those hits made, the ones that went through the
	 * kernel (process_vm_readv: a system call each) instead of plain loads. Published
	 * with hits. */
	_Atomic uint64_t kernel_reads;
	/* Reads by plain loads that faulted (memory unmapped since the agent last read
	 * the table of mappings): each cost a signal and read nothing. */
	_Atomic uint64_t probe_faults;
	uint64_t tmpl_offset; /* NS_AGENT_NTMPL struct ns_agent_tmpl from here */
	/* Bytes of each claimed ring the agent keeps backed ahead of its producer, and of
	 * the next free ring before a thread claims it (0: none; the stub sets it). A page
	 * a hit writes first costs that thread a page fault (1-2 us here). */
	uint64_t warm_bytes;
	/* 1 + the highest index of a ring a thread ever claimed (the agent claims the
	 * lowest free ring first, so this is about the most threads that ever hit at
	 * once): the stub looks only at rings below it. Each look at a ring is two cache
	 * lines (and a TLB entry) the program's work evicted since the last look. */
	_Atomic uint32_t rings_claimed;
	uint32_t pad0;
	/* Signals sent to running threads to move them out of a window being patched
	 * (docs/jump-pads.md): only windows of two or more instructions need them. */
	_Atomic uint64_t move_signals;
	uint64_t reserved[2];
};

/** Bytes of shared memory for @nrings rings of @ring_bytes. */
size_t ns_agent_shm_size(unsigned nrings, size_t ring_bytes);
/** Initialise a zeroed mapping of ns_agent_shm_size() bytes (the stub does this). */
void ns_agent_shm_init(struct ns_agent_shm *shm, unsigned nrings, size_t ring_bytes);
/** Ring @i header and its data. */
struct ns_agent_ring *ns_agent_shm_ring(struct ns_agent_shm *shm, unsigned i);
uint8_t *ns_agent_ring_data(struct ns_agent_shm *shm, struct ns_agent_ring *r);
/** Template slot @i (i < NS_AGENT_NTMPL). */
struct ns_agent_tmpl *ns_agent_shm_tmpl(struct ns_agent_shm *shm, unsigned i);

/** Consumer side, every ~100 ms: unless @r streams (1/8 of the lag written or read
 * since the last call), give back the whole pages between tail and read (punched before tail moves
 * past them). */
void ns_agent_ring_trim(struct ns_agent_shm *shm, struct ns_agent_ring *r);

/** Back ring @r's positions [from, to) (to - from <= the ring's size; wrapping) in this
 * process's mapping of the shm: MADV_POPULATE_WRITE if @write (allocates and zeroes the
 * memfd's pages: the stub, ahead of the agent), else MADV_POPULATE_READ (maps them,
 * allocating those that are not yet: the agent's warmer; on shared memory the entries
 * are writable, so the producer's stores do not fault). Without these (Linux < 5.14,
 * *@no_madv set at the first EINVAL), a locked add of 0 to a word of each page. */
void ns_agent_ring_populate(struct ns_agent_shm *shm, struct ns_agent_ring *r, uint64_t from,
                            uint64_t to, bool write, bool *no_madv);

enum {
	NS_AGENT_WARM_MIN_MS = 2,     /* the soonest look at a moving producer */
	NS_AGENT_WARM_MOVING_MS = 50, /* the latest */
	NS_AGENT_WARM_HOLD_MS = 200,  /* a claimed ring's window: this long of its writes */
};
/** The warmer's window for a producer that wrote @moved bytes in the last @dt_ns: what
 * it writes in NS_AGENT_WARM_HOLD_MS at that speed, within [@min, @max] (@min if it did
 * not move). */
uint64_t ns_agent_warm_window(uint64_t moved, uint64_t dt_ns, uint64_t min, uint64_t max);
/** The agent's ring warmer (agent_warm.c): when to look again at a producer that wrote
 * @moved bytes in the last @dt_ns. In how many ms, at that speed, it will be halfway
 * through the @ahead bytes backed past its head, within [NS_AGENT_WARM_MIN_MS, @max_ms]
 * (@max_ms if it did not move). */
int ns_agent_warm_delay(uint64_t ahead, uint64_t moved, uint64_t dt_ns, int max_ms);

/** Consumer side: empty ring @r and give all its pages back (its producer is gone),
 * counting it in r->resets. The caller then frees it (owner = 0). */
void ns_agent_ring_reset(struct ns_agent_shm *shm, struct ns_agent_ring *r);
/** Producer side, after claiming ring @i: raise shm->rings_claimed to i + 1. */
void ns_agent_ring_claimed(struct ns_agent_shm *shm, unsigned i);
/** Consumer side: how many rings from index 0 may hold records (rings_claimed, bounded
 * by nrings and NS_AGENT_NRINGS). */
unsigned ns_agent_rings_live(struct ns_agent_shm *shm);

/** Consumer side: copy out the next record's frame into @dst (cap bytes) and consume
 * it (a raw TSC time stamp converted: the first such record calibrates for 2 ms). Returns the frame size, 0 if the ring is empty, or -1 if the record is corrupt
 * (the ring is then reset to empty and the loss counted in dropped). A frame larger
 * than @cap (use NS_AGENT_MAX_FRAME) is skipped, counted in dropped, and -1 returned. */
long ns_agent_ring_pop(struct ns_agent_shm *shm, struct ns_agent_ring *r, void *dst, size_t cap);

/* ---- control messages (SOCK_SEQPACKET, one message per datagram) ---- */

enum ns_agent_msg_type {
	NS_AGENT_MSG_HELLO = 1,      /* agent -> stub: struct ns_agent_hello */
	NS_AGENT_MSG_INSTALL = 2,    /* stub -> agent: encoded tracepoint */
	NS_AGENT_MSG_REMOVE = 3,     /* stub -> agent: u32 tp id */
	NS_AGENT_MSG_REMOVE_ALL = 4, /* stub -> agent: none */
	NS_AGENT_MSG_REPLY = 5,      /* agent -> stub: struct ns_agent_reply + text */
	NS_AGENT_MSG_RESUME = 6,     /* stub -> agent: let a held program (HOLD=1) run; no reply */
	NS_AGENT_MSG_SHM = 7,        /* stub -> agent (attach): header only, memfd in SCM_RIGHTS */
};

struct ns_agent_msg_hdr {
	uint32_t type;
	uint32_t size; /* whole message */
	uint32_t req_id;
	uint32_t pad;
};

struct ns_agent_hello {
	struct ns_agent_msg_hdr h;
	uint32_t version;
	uint32_t pid;
};

enum ns_agent_tier { NS_AGENT_TIER_NONE = 0, NS_AGENT_TIER_TRAP = 1, NS_AGENT_TIER_JUMP = 2 };

struct ns_agent_reply {
	struct ns_agent_msg_hdr h;
	int32_t status; /* 0 ok, else a positive errno-style code */
	uint32_t tier;  /* enum ns_agent_tier the tracepoint runs in */
	                /* NUL-terminated message follows ("trap tier: ..." or why it failed) */
};

/** Exported by libnonstop-agent.so itself (the only symbol it exports): start the
 * agent on control socket @ctl_fd and ring memfd @shm_fd (both taken over), as the
 * constructor does for a launched program; an attaching stub that injected the
 * library calls it. @hold: wait for NS_AGENT_MSG_RESUME before returning. 0 on
 * success, -1 if the agent cannot run (the fds are closed). */
int ns_agent_start(int ctl_fd, int shm_fd, int hold);

/** Attach: an attaching stub (nonstop-stub --attach) injects the library with dlopen
 * (the constructor stays inert) and calls this on the thread it interrupted. The agent
 * connects to the abstract-namespace AF_UNIX SOCK_SEQPACKET socket "\0" @socket_name
 * (@socket_name is given without the leading NUL and holds at most 100 bytes), receives
 * one NS_AGENT_MSG_SHM message carrying the ring memfd (SCM_RIGHTS), and starts as
 * ns_agent_start does (control thread, SIGTRAP handler, HELLO), never holding. It may
 * be called again after the control connection ended (the previous stub went away):
 * the new memfd replaces the old rings. Returns 0, -EBUSY while a previous control
 * connection is still alive, or another negative errno. Never blocks longer than a
 * few seconds. */
int ns_agent_attach(const char *socket_name);

/* Abstract socket names an attaching stub uses: NS_AGENT_ATTACH_PREFIX "<pid>-<random>". */
#define NS_AGENT_ATTACH_PREFIX "nonstop-"

/** Encode INSTALL for @tp into a malloc'd message. */
struct ns_err *ns_agent_encode_install(const struct ns_rsp_tracepoint *tp, uint32_t req_id,
                                       void **msg, size_t *len);
/** Decode INSTALL into @tp (arrays malloc'd; ns_rsp_tp_deinit frees them). Validates
 * every length against @len. */
struct ns_err *ns_agent_decode_install(const void *msg, size_t len, struct ns_rsp_tracepoint *tp);

#endif
