/* nonstop-stub internals, shared by the stub's files only. */
#ifndef NS_STUB_H
#define NS_STUB_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/agent.h"
#include "base/err.h"
#include "base/strbuf.h"
#include "rsp/rsp.h"

enum {
	NS_STUB_QUEUE_BYTES = 256 * 1024 * 1024, /* bound of buffered frames */
	NS_STUB_REPLY_TIMEOUT_MS = 5000,         /* agent INSTALL/REMOVE replies */
	NS_STUB_BATCH_BYTES = 64 * 1024,         /* qNsFrames reply payload target */
	NS_STUB_REPLY_KEEP = 256 * 1024,         /* a reply buffer up to this is kept */
	/* Rings read (and the client notified) every NS_STUB_DRAIN_MS while few frames
	 * arrive, up to every NS_STUB_DRAIN_MAX_MS while many do (ns_stub__drain_interval). */
	NS_STUB_DRAIN_MS = 5,
	NS_STUB_DRAIN_MAX_MS = 40,
	NS_STUB_DRAIN_BUSY = 256,           /* frames per tick that lengthen the tick */
	NS_STUB_DRAIN_RING_BYTES = 4 << 20, /* bytes per tick that shorten it */
	NS_STUB_BACK_STEP = 8 << 20,        /* ring bytes allocated per drain tick, at most */
	NS_STUB_NICE = 10,            /* default --nice: the stub yields the CPU to the program */
	NS_STUB_PACKET_SIZE = 0x4000, /* advertised PacketSize */
};

struct ns_stub_pt;

/* Frames waiting for the client (stub_queue.c): a FIFO of records in 1 MiB chunks. */
struct ns_stub_chunk;
struct ns_stub_queue {
	struct ns_stub_chunk *head, *tail, *spare;
	size_t count, bytes; /* frames held and their bytes */
};

struct ns_stub_tp {
	struct ns_rsp_tracepoint tp;
	bool installed;     /* the agent has it */
	uint64_t hits;      /* frames seen for it */
	uint32_t tier;      /* enum ns_agent_tier from the agent's INSTALL reply (0: not known) */
	char tier_msg[200]; /* the reply's text: "jump-pad tier (...)" or "in-process trap
	                       tier (int3): <why not a jump pad>" */
};

enum ns_stub_action {
	NS_STUB_CONTINUE,
	NS_STUB_DETACH, /* client detached (D) or went away */
	NS_STUB_KILL,   /* k / vKill: kill the program and exit */
};

struct ns_stub {
	/* options */
	const char *listen_addr;
	bool use_stdio, hold;
	int stdout_fd, stderr_fd;
	uint64_t ring_warm; /* --ring-warm: shm warm_bytes (agent.h) */
	int nice;           /* --nice: added to the stub's nice value once the program runs */
	const char *agent_path;
	char **argv;
	pid_t attach_pid; /* --attach PID; 0: launch argv */
	/* --debug-dir DIR (repeatable): where separate debug files live on this host;
	 * told to the client with qNsDebugDirs. Borrowed from argv. */
	const char *debug_dirs[16];
	size_t ndebug_dirs;

	/* the program */
	pid_t pid;
	int pidfd; /* -1: poll with waitpid(WNOHANG) */
	bool exited;
	int wstatus;
	bool held;            /* launched with --hold and not resumed yet */
	bool attached;        /* --attach: not our child, no waitpid */
	bool exit_unknown;    /* attached program gone, exit status unknown (reported as X0) */
	int64_t exit_seen_ms; /* attached: when the pidfd first said the program exited */
	char exe[PATH_MAX];

	/* the agent */
	int ctl_fd; /* our end of the control socket, -1 once the agent is gone */
	int memfd;
	struct ns_agent_shm *shm;
	size_t shm_size;
	bool agent_hello;
	uint32_t next_req;
	uint64_t ring_drops_seen[NS_AGENT_NRINGS]; /* last dropped value per ring */
	uint64_t no_ring_seen;                     /* last shm dropped_no_ring */
	uint64_t drops_total;                      /* every drop observed so far */
	uint64_t drops_reported;                   /* of which sent as L items */
	/* Ring pages the stub allocates ahead of the agent's warmer (ns_stub__back_rings):
	 * per ring, positions below back_upto are allocated; head and reset count at the
	 * last look. */
	uint64_t back_upto[NS_AGENT_NRINGS], back_last[NS_AGENT_NRINGS];
	uint64_t back_resets[NS_AGENT_NRINGS];
	uint64_t back_ns;  /* CLOCK_MONOTONIC of the last look */
	bool back_no_madv; /* MADV_POPULATE_WRITE refused: touch instead */

	/* frames */
	struct ns_stub_queue frames;
	uint64_t fcreated;
	uint8_t *scratch; /* NS_AGENT_MAX_FRAME bytes */
	struct ns_strbuf reply; /* the RSP reply being built (kept between packets) */

	/* tracepoints */
	struct ns_stub_tp *tps;
	size_t ntps;
	struct ns_rsp_tracepoint pending; /* a definition still receiving actions */
	bool pending_active;
	bool running, ever_run;

	/* the client */
	int listen_fd;
	struct ns_rsp_conn *conn;
	bool frame_push;         /* client said NsFramePush+ */
	bool frame_binary;       /* client said NsFrameBinary+: "b<len>:<bytes>" items */
	bool notify_outstanding; /* %NsFrames sent, "OK" not yet returned */
	bool exit_reported;      /* W/X item (or %Stop) sent */
	bool nonstop;            /* QNonStop:1 */
	bool allstop_waiting;    /* all-stop 'c': the stop reply is owed */
	uint32_t stops[64];      /* threads gdb asked to stop (vCont;t), stop not yet reported */
	unsigned nstops;
	bool stop_outstanding; /* %Stop sent, vStopped has not drained the queue yet */
	struct ns_strbuf maps; /* /proc/PID/maps snapshot for qXfer */

	/* the ptrace tier (stub_ptrace.c): tracepoints without the agent */
	struct ns_stub_pt *pt; /* non-NULL: the program runs under the ptrace tier */
	char tier_reason[256]; /* why the agent is not used */
};

/* stub_target.c */
/** The agent library's absolute path (--agent, $NONSTOP_AGENT_LIB, ../lib/); false if
 * it cannot be found. */
bool ns_stub__agent_path(const struct ns_stub *s, char *out, size_t cap);
struct ns_err *ns_stub__launch(struct ns_stub *s);
/** Reap the program if it exited; true if it has exited (now or before). */
bool ns_stub__check_exit(struct ns_stub *s);
void ns_stub__kill(struct ns_stub *s);
/** "p<pid>.<tid>,..." for every thread; false if none could be listed. */
bool ns_stub__threads(struct ns_stub *s, struct ns_strbuf *out);
bool ns_stub__tid_alive(struct ns_stub *s, uint32_t tid);
struct ns_err *ns_stub__build_id(struct ns_stub *s, struct ns_strbuf *hex_out);
/** Append the contents of /proc/PID/@file ("maps", "auxv") to @out. */
struct ns_err *ns_stub__read_proc(struct ns_stub *s, const char *file, struct ns_strbuf *out);

/* stub_attach.c */
/** --attach: inject the agent into the running s->attach_pid (ptrace, one thread
 * paused once) and connect to it; prints the pause on stderr. The target is left
 * untouched on failure. */
struct ns_err *ns_stub__attach(struct ns_stub *s);

/* stub_queue.c */
/** Room for a frame of up to @cap bytes at the queue's end (NULL: no memory); the
 * frame is kept only by a commit() before the next reserve(). */
uint8_t *ns_stub__queue_reserve(struct ns_stub_queue *q, size_t cap);
/** Keep the @n bytes written where the last reserve() pointed. */
void ns_stub__queue_commit(struct ns_stub_queue *q, size_t n);
/** The oldest frame (its size in *@n), or NULL if the queue is empty. */
uint8_t *ns_stub__queue_front(struct ns_stub_queue *q, size_t *n);
void ns_stub__queue_pop(struct ns_stub_queue *q);
/** Drop every frame and give all memory back. */
void ns_stub__queue_clear(struct ns_stub_queue *q);

/* stub_agent.c */
/** The ring memfd and its mapping (s->memfd, s->shm, s->scratch). */
struct ns_err *ns_stub__agent_rings(struct ns_stub *s);
struct ns_err *ns_stub__agent_prepare(struct ns_stub *s, int *child_fd);
/** Read and handle control messages that are ready (HELLO, stray replies). */
void ns_stub__agent_input(struct ns_stub *s);
/** INSTALL @tp; on an agent refusal returns NS_ERR_INVALID with the agent's text. */
struct ns_err *ns_stub__agent_install(struct ns_stub *s, const struct ns_rsp_tracepoint *tp);
/** As ns_stub__agent_install; the reply's tier and text into @tier / @msg (@cap bytes). */
struct ns_err *ns_stub__agent_install_tier(struct ns_stub *s, const struct ns_rsp_tracepoint *tp,
                                           uint32_t *tier, char *msg, size_t cap);
struct ns_err *ns_stub__agent_remove(struct ns_stub *s, uint32_t num);
struct ns_err *ns_stub__agent_remove_all(struct ns_stub *s);
void ns_stub__agent_resume(struct ns_stub *s);
/** Move frames from the rings to the queue; returns how many. */
size_t ns_stub__drain(struct ns_stub *s);
/** The next drain interval (ms) after a tick of @cur_ms that read @frames frames of
 * @bytes bytes: doubled (up to NS_STUB_DRAIN_MAX_MS) while a tick reads at least
 * NS_STUB_DRAIN_BUSY frames, so the fixed cost of a tick (a look at every ring, the
 * client's round trips) is spread over many frames, and while ticks read nothing (a
 * tick is a wake-up of the stub); halved (down to NS_STUB_DRAIN_MS) when it reads a
 * few frames (under a quarter of BUSY: a trickle is delivered promptly), or
 * NS_STUB_DRAIN_RING_BYTES or more (a ring filling fast is read often). */
int ns_stub__drain_interval(int cur_ms, size_t frames, size_t bytes);
/** Drops not yet reported (ring drops + no-ring drops + queue overflow). */
uint64_t ns_stub__new_drops(struct ns_stub *s);
void ns_stub__release_dead_rings(struct ns_stub *s);
/** Quiet rings give back the pages already read (ns_agent_ring_trim); every ~100 ms. */
void ns_stub__trim_rings(struct ns_stub *s);
/** Allocate (and zero) ring pages in the memfd before the agent's warmer maps them, so
 * that the program's process only maps them (docs/jump-pads.md, "Ring pages backed
 * ahead of the hits"): for each claimed ring, twice the agent's window
 * (ns_agent_warm_window) past its head; for the ring the next thread will claim,
 * its first warm_bytes (256 KiB once the claimed rings hold 3 x warm_bytes ahead, as
 * the agent does). At most @budget bytes per call. Called at every drain tick and before
 * every install. */
void ns_stub__back_rings(struct ns_stub *s, uint64_t budget);
void ns_stub__free_frames(struct ns_stub *s);
/** Queue one frame (@n bytes) as if it came from a ring (counts hits, bounds the queue). */
void ns_stub__push_frame(struct ns_stub *s, const uint8_t *f, size_t n);

/* stub_ptrace.c: the ptrace tier. ns_stub__agent_install/remove/remove_all/resume
 * route to it when s->pt is set. */
/** Take over launched @pid, stopped at its exec event (PTRACE_SEIZE'd by the caller);
 * it stays stopped until ns_stub__pt_resume. @reason: why the agent is not used. */
struct ns_err *ns_stub__pt_start_held(struct ns_stub *s, pid_t pid, const char *reason);
/** Seize every thread of running @pid. */
struct ns_err *ns_stub__pt_attach(struct ns_stub *s, pid_t pid, const char *reason);
/** The descriptor that turns readable when a traced thread has news (-1: no tier). */
int ns_stub__pt_fd(const struct ns_stub *s);
/** Handle every pending ptrace stop and exit (tracepoint hits, signals, new threads). */
void ns_stub__pt_events(struct ns_stub *s);
struct ns_err *ns_stub__pt_install(struct ns_stub *s, const struct ns_rsp_tracepoint *tp);
struct ns_err *ns_stub__pt_remove(struct ns_stub *s, uint32_t num);
struct ns_err *ns_stub__pt_remove_all(struct ns_stub *s);
void ns_stub__pt_resume(struct ns_stub *s);
/** Remove every tracepoint and detach every thread (the program runs on). */
void ns_stub__pt_detach(struct ns_stub *s);
void ns_stub__pt_kill(struct ns_stub *s);

/* stub_rsp.c */
enum ns_stub_action ns_stub__handle_packet(struct ns_stub *s, const struct ns_rsp_packet *pkt);
/** Send %NsFrames (or %Stop for a plain non-stop client) when something is due. */
void ns_stub__maybe_notify(struct ns_stub *s);
/** Client gone or detaching: remove tracepoints, resume a held program, reset state. */
void ns_stub__client_gone(struct ns_stub *s);
void ns_stub__clear_tracepoints(struct ns_stub *s);

#endif
