/* adapter/: nonstop-dap internals. One session per process: a single-threaded poll
 * loop over the DAP connection, the RSP connection to nonstop-stub and the program's
 * stdout/stderr pipes (launch). Breakpoints become tracepoints; captured frames become
 * output events (logpoints) or snapshot threads (everything else). */
#ifndef NS_ADAPTER_H
#define NS_ADAPTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/arena.h"
#include "base/err.h"
#include "base/strbuf.h"
#include "dap/dap.h"
#include "dwarf/dwarf.h"
#include "expr/expr.h"
#include "frame/frame.h"
#include "rsp/rsp.h"
#include "unwind/unwind.h"

enum {
	SNAPSHOT_LIMIT = 10,          /* captures per snapshot breakpoint until it is set again */
	SNAPSHOT_STACK_BYTES = 16384, /* stack window above SP */
	SNAPSHOT_RED_ZONE = 128,      /* and below it (x86-64 psABI red zone) */
	SNAPSHOT_DEPTH = 3,           /* pointer levels followed per variable */
	SNAPSHOT_STRING_MAX = 256,
	SNAPSHOT_VAR_BUDGET = 4096,
	SNAPSHOT_THREAD_BASE = 0x40000000, /* snapshot thread ids start here */
	MAX_STACK_FRAMES = 64,
};

/* ---- target.c: the stub connection ---- */

struct target {
	struct ns_rsp_conn *rsp;
	pid_t stub_pid;      /* launch: the stub we started, else 0 */
	int out_fd, err_fd;  /* launch: program's stdout/stderr pipes, -1 when closed */
	int stub_err_fd;     /* attach by pid: the stub's stderr (relayed as console output) */
	bool frames_pending; /* a %NsFrames notification arrived */
	bool launched;
	bool exited; /* W/X item seen */
	int exit_code;
	char *exe_path; /* program as the stub reports it */
	struct ns_procmap map;
	bool map_loaded;
	uint8_t build_id[64];
	size_t build_id_len;
};

struct launch_args {
	const char *program;
	char **argv; /* NULL-terminated, argv[0] = program */
	const char *cwd;
	char **envp; /* NULL-terminated, full environment */
};

struct ns_err *target_launch(struct target *t, const struct launch_args *la);
struct ns_err *target_attach(struct target *t, const char *hostport);
/** Start nonstop-stub --attach @pid and connect to it over pipes. */
struct ns_err *target_attach_pid(struct target *t, long pid);
void target_close(struct target *t, bool kill_program);
/** Send @req, return the reply (valid until the next RSP call). Notifications are noted. */
struct ns_err *target_request(struct target *t, const char *req, struct ns_rsp_packet *reply);
struct ns_err *target_load_map(struct target *t);
/** Read live memory of the program (for evaluate without a snapshot). Bytes read. */
size_t target_read_mem(struct target *t, uint64_t addr, void *dst, size_t len);
/** Real threads (tids) of the program; malloc'd array. */
struct ns_err *target_threads(struct target *t, long **tids, size_t *n);

/* ---- value.c: rendering typed values the way DESIGN.md "Values" says ---- */

/* Where a value's bytes are. */
struct value {
	const struct ns_dwarf_type *type;
	enum { VAL_MEMORY, VAL_BYTES, VAL_ERROR } where;
	uint64_t addr;     /* VAL_MEMORY */
	uint8_t bytes[16]; /* VAL_BYTES: little-endian scalar */
	const char *error; /* VAL_ERROR: "<optimized out>", "<error: ...>" */
};

typedef size_t (*mem_reader)(void *ctx, uint64_t addr, void *dst, size_t len);

struct value_ctx {
	mem_reader read;
	void *ctx;
	struct ns_arena *arena;
};

/** Text of @v (strings quoted and escaped, enums by name, pointers hex, structs as
 * "{a = 1, b = ...}" at one level). Allocated in vc->arena. */
const char *value_render(const struct value_ctx *vc, const struct value *v);
/** True if @v expands (struct, union, array, pointer to struct/union/array/pointer). */
bool value_has_children(const struct value_ctx *vc, const struct value *v);
/** Children of @v: names ("[0]", member names) and values, from vc->arena. A pointer to a
 * struct expands straight to the pointee's members. */
size_t value_children(const struct value_ctx *vc, const struct value *v, const char ***names,
                      struct value **vals);
/** Result of running compiled @prog over a frame: the value it denotes. */
struct value value_from_result(const struct ns_expr_prog *prog, uint64_t result);

/* ---- session.c ---- */

struct bp;
struct snapshot;

struct session {
	struct ns_dap_conn *dap;
	struct target tgt;
	bool have_target, configured, terminated_sent, exited_sent, disconnecting;
	bool attached;
	bool client_supports_invalidated;
	struct ns_dwarf *dw; /* the executable's (also mods[0].dw) */
	char *program_path;  /* the executable */
	struct module *mods; /* modules.c */
	size_t nmods, mods_cap;
	/* launch/attach "debugInfo": directories with separate debug files (NULL-terminated,
	 * malloc'd); set just before load_program, which takes and frees them. */
	char **debug_dirs;
	uint64_t load_bias;
	struct ns_viewmem *vm;
	/* breakpoints (breakpoints.c) */
	struct bp *bps; /* list */
	uint32_t next_bp_id, next_tp_num;
	/* snapshots (snapshot.c) */
	struct snapshot *snaps;
	uint32_t next_snap_id;
	/* variablesReference registry (snapshot.c) */
	struct varref *refs;
	size_t nrefs, refs_cap;
	uint64_t dropped_reported;
};

void session_send(struct session *s, cJSON *msg);
void session_event(struct session *s, const char *event, cJSON *body);
void session_output(struct session *s, const char *category, const char *text, size_t len);
/** Run a compiled program over a frame's registers/memory (or the live target if
 * @frame is NULL and @regs NULL). */
struct ns_err *session_eval(struct session *s, const struct ns_expr_prog *prog,
                            const struct ns_frame *frame, const struct ns_unwind_frame *uf,
                            uint64_t *result);
/** mem_reader over a frame (+ read-only file mappings). @ctx is a struct frame_mem. */
struct frame_mem {
	struct session *s;
	const struct ns_frame *frame; /* NULL: live memory through the stub */
};
size_t session_frame_read(void *ctx, uint64_t addr, void *dst, size_t len);
/** Scope for compiling at runtime address @pc (link = pc - bias); fills @locals. */
struct ns_err *session_scope(struct session *s, uint64_t pc, struct ns_arena *arena,
                             struct ns_dwarf_scope *locals, struct ns_expr_scope *out);

/* ---- modules.c: the executable and its shared objects ---- */

struct module;
/** Add modules newly present in s->tgt.map (the first call also adds the executable
 * with s->dw) and rebuild the view memory. */
struct ns_err *modules_refresh(struct session *s);
/** Re-read the process map from the stub and refresh (after a dlopen, say). */
void modules_reload_map(struct session *s);
/** The module whose mappings contain runtime @pc, or NULL. */
struct module *module_for_pc(struct session *s, uint64_t pc);
/** Its DWARF, opened on first use (separate debug files included); NULL if none. */
struct ns_dwarf *module_dwarf(struct session *s, struct module *m);
size_t module_count(struct session *s);
struct module *module_at(struct session *s, size_t i);
uint64_t module_bias(const struct module *m);
const char *module_path(const struct module *m);
void modules_free(struct session *s);

/* ---- breakpoints.c ---- */

void bp_set_breakpoints(struct session *s, const cJSON *req, const cJSON *args);
/** A captured frame arrived: logpoint output or a new snapshot. */
void bp_on_frame(struct session *s, const void *data, size_t len);
void bp_free_all(struct session *s);
/** Breakpoint id and source line of tracepoint @tp_num (for snapshots). */
struct bp *bp_by_tp(struct session *s, uint32_t tp_num);
uint32_t bp_id(const struct bp *b);
const char *bp_source(const struct bp *b);
unsigned bp_line(const struct bp *b);
/** Disable (in the target) every tracepoint of @b (snapshot limit reached/dismissed). */
void bp_disarm(struct session *s, struct bp *b);

/* ---- snapshot.c ---- */

void snap_add(struct session *s, struct bp *b, const void *frame, size_t len);
void snap_threads(struct session *s, cJSON *threads);
bool snap_is_thread(struct session *s, long thread_id);
void snap_continue(struct session *s, long thread_id);
void snap_stack_trace(struct session *s, const cJSON *req, const cJSON *args);
void snap_scopes(struct session *s, const cJSON *req, const cJSON *args);
void snap_variables(struct session *s, const cJSON *req, const cJSON *args);
void snap_evaluate(struct session *s, const cJSON *req, const cJSON *args);
void snap_free_all(struct session *s);

#endif
