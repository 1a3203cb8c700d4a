/* nonstop-dap session: DAP requests in, RSP to the stub, events out. */
#define _GNU_SOURCE
#include "adapter.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ax/ax.h"
#include "base/log.h"

extern char **environ;

void session_send(struct session *s, cJSON *msg)
{
	if (!msg)
		return;
	struct ns_err *err = ns_dap_write(s->dap, msg);
	if (err) {
		ns_log(NS_LOG_DEBUG, "DAP write: %s", err->msg);
		ns_err_destroy(err);
	}
	cJSON_Delete(msg);
}

void session_event(struct session *s, const char *event, cJSON *body)
{
	session_send(s, ns_dap_event(event, body));
}

void session_output(struct session *s, const char *category, const char *text, size_t len)
{
	cJSON *body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "category", category);
	// cJSON strings are NUL-terminated: program output with NUL bytes is passed in
	// pieces so nothing is cut (the NUL itself cannot travel in a JSON string
	// through cJSON and is sent as U+0000 by splitting around it).
	char *copy = malloc(len + 1);
	if (!copy) {
		cJSON_Delete(body);
		return;
	}
	memcpy(copy, text, len);
	copy[len] = 0;
	cJSON_AddStringToObject(body, "output", copy);
	free(copy);
	session_event(s, "output", body);
}

static void respond(struct session *s, const cJSON *req, cJSON *body)
{
	session_send(s, ns_dap_response(req, true, NULL, body));
}

static void respond_err(struct session *s, const cJSON *req, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void respond_err(struct session *s, const cJSON *req, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	struct ns_err *err = ns_dap_send_error(s->dap, req, 1, "%s", buf);
	ns_err_destroy(err);
}

/* ---- evaluation plumbing shared by breakpoints.c and snapshot.c ---- */

size_t session_frame_read(void *ctx, uint64_t addr, void *dst, size_t len)
{
	struct frame_mem *fm = ctx;
	if (!fm->frame) {
		if (!fm->s->have_target || fm->s->tgt.exited)
			return 0;
		return target_read_mem(&fm->s->tgt, addr, dst, len);
	}
	if (fm->s->vm)
		return ns_viewmem_read(fm->s->vm, fm->frame, addr, dst, len);
	return ns_frame_read(fm->frame, addr, dst, len);
}

struct eval_env {
	struct frame_mem fm;
	const struct ns_unwind_frame *uf;
};

static int env_read_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	struct eval_env *e = ctx;
	return session_frame_read(&e->fm, addr, dst, len) == len ? 0 : -1;
}

static int env_read_reg(void *ctx, unsigned regno, uint64_t *val)
{
	struct eval_env *e = ctx;
	if (e->uf) {
		int d = ns_frame_gdb_to_dwarf_reg(regno);
		if (d < 0 || d >= NS_UNWIND_NREGS || !(e->uf->valid & (1u << d)))
			return -1;
		*val = e->uf->regs[d];
		return 0;
	}
	if (!e->fm.frame)
		return -1;
	return ns_frame_reg(e->fm.frame, regno, val);
}

struct ns_err *session_eval(struct session *s, const struct ns_expr_prog *prog,
                            const struct ns_frame *frame, const struct ns_unwind_frame *uf,
                            uint64_t *result)
{
	struct eval_env e = {.fm = {.s = s, .frame = frame}, .uf = uf};
	struct ns_ax_env env = {.read_mem = env_read_mem, .read_reg = env_read_reg, .ctx = &e};
	struct ns_ax_result r;
	ns_ax_run(prog->code, prog->len, &env, &r);
	switch (r.status) {
	case NS_AX_OK:
		*result = r.value;
		return NULL;
	case NS_AX_FAULT:
		return ns_err_fault(r.fault_addr, "cannot read 0x%llx",
		                    (unsigned long long)r.fault_addr);
	case NS_AX_BAD_REG:
		return ns_err_create(NS_ERR_OPTIMIZED_OUT, "register %s not available",
		                     ns_frame_reg_name((unsigned)r.fault_addr)
		                             ? ns_frame_reg_name((unsigned)r.fault_addr)
		                             : "?");
	default:
		return ns_err_create(NS_ERR_INVALID, "%s", ns_ax_status_name(r.status));
	}
}

struct scope_ctx {
	struct ns_dwarf *dw;
	uint64_t link_pc;
};

static struct ns_err *lookup_global(void *ctx, const char *name, struct ns_arena *arena,
                                    struct ns_dwarf_var *out)
{
	struct scope_ctx *sc = ctx;
	return ns_dwarf_global(sc->dw, name, sc->link_pc, arena, out);
}

static struct ns_dwarf_type *lookup_type(void *ctx, const char *name)
{
	struct scope_ctx *sc = ctx;
	return ns_dwarf_find_type(sc->dw, name, sc->link_pc);
}

struct ns_err *session_scope(struct session *s, uint64_t pc, struct ns_arena *arena,
                             struct ns_dwarf_scope *locals, struct ns_expr_scope *out)
{
	if (!s->dw)
		return ns_err_create(NS_ERR_NOT_FOUND, "no debug information loaded");
	// The module containing pc; without a pc (live evaluate), the executable.
	struct module *m = pc ? module_for_pc(s, pc) : NULL;
	struct ns_dwarf *dw = m ? module_dwarf(s, m) : NULL;
	uint64_t bias = m ? module_bias(m) : s->load_bias;
	if (!dw) {
		if (pc && m)
			return ns_err_create(NS_ERR_NOT_FOUND, "no debug information for %s",
			                     module_path(m));
		dw = s->dw;
		bias = s->load_bias;
	}
	uint64_t link = pc - bias;
	struct scope_ctx *sc = ns_arena_alloc(arena, sizeof(*sc));
	if (!sc)
		return &ns_err_nomem;
	sc->dw = dw;
	sc->link_pc = link;
	memset(locals, 0, sizeof(*locals));
	memset(out, 0, sizeof(*out));
	if (pc) {
		struct ns_err *err = ns_dwarf_scope_at(dw, link, arena, locals);
		if (err) {
			if (err->code != NS_ERR_NOT_FOUND)
				return err;
			ns_err_destroy(err);
		}
		struct ns_dwarf_cfa cfa;
		err = ns_dwarf_cfa_at(dw, link, &cfa);
		if (!err) {
			out->cfa_known = true;
			out->cfa_reg = cfa.reg;
			out->cfa_offset = cfa.offset;
		}
		ns_err_destroy(err);
		// Entry values (DW_OP_entry_value): the function's call sites and where our
		// frame keeps the caller's registers. Errors leave them empty.
		const struct ns_dwarf_call_site *sites = NULL;
		size_t nsites = 0;
		err = ns_dwarf_call_sites(dw, link, arena, &sites, &nsites);
		if (!err) {
			out->call_sites = sites;
			out->ncall_sites = nsites;
		}
		ns_err_destroy(err);
		err = ns_dwarf_reg_rules_at(dw, link, out->reg_rules);
		out->reg_rules_known = !err;
		ns_err_destroy(err);
	}
	out->locals = locals;
	out->lookup_global = lookup_global;
	out->lookup_type = lookup_type;
	out->ctx = sc;
	out->load_bias = bias;
	return NULL;
}

/* ---- requests ---- */

static void req_initialize(void *ctx, const cJSON *req, const cJSON *args)
{
	struct session *s = ctx;
	s->client_supports_invalidated = ns_dap_get_bool(args, "supportsInvalidatedEvent", false);
	cJSON *b = cJSON_CreateObject();
	cJSON_AddBoolToObject(b, "supportsConfigurationDoneRequest", true);
	cJSON_AddBoolToObject(b, "supportsConditionalBreakpoints", true);
	cJSON_AddBoolToObject(b, "supportsHitConditionalBreakpoints", true);
	cJSON_AddBoolToObject(b, "supportsLogPoints", true);
	cJSON_AddBoolToObject(b, "supportsEvaluateForHovers", true);
	cJSON_AddBoolToObject(b, "supportsTerminateRequest", true);
	cJSON_AddBoolToObject(b, "supportsSetVariable", false);
	cJSON_AddBoolToObject(b, "supportTerminateDebuggee", true);
	respond(s, req, b);
}

static char **build_env(const cJSON *envobj)
{
	size_t n = 0;
	while (environ[n])
		n++;
	size_t extra = envobj && cJSON_IsObject(envobj) ? (size_t)cJSON_GetArraySize(envobj) : 0;
	char **envp = calloc(n + extra + 1, sizeof(char *));
	if (!envp)
		return NULL;
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(environ[i], '=');
		size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
		bool overridden = false;
		const cJSON *it;
		cJSON_ArrayForEach(it, envobj)
		{
			if (it->string && strlen(it->string) == klen &&
			    strncmp(it->string, environ[i], klen) == 0)
				overridden = true;
		}
		if (!overridden)
			envp[m++] = strdup(environ[i]);
	}
	const cJSON *it;
	cJSON_ArrayForEach(it, envobj)
	{
		// null removes the variable (VS Code convention).
		if (it->string && cJSON_IsString(it)) {
			char *kv = NULL;
			if (asprintf(&kv, "%s=%s", it->string, it->valuestring) >= 0)
				envp[m++] = kv;
		}
	}
	envp[m] = NULL;
	return envp;
}

static void free_strv(char **v)
{
	if (!v)
		return;
	for (size_t i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

/* The launch/attach attribute "debugInfo": an array of directory names or one name.
 * NULL if valid (*out set, NULL when absent), else the error text. */
static const char *read_debug_info(const cJSON *args, char ***out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, "debugInfo"), *e;
	size_t n = 0;

	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return NULL;
	if (cJSON_IsString(v)) {
		char **dirs = calloc(2, sizeof(char *));
		if (!dirs || !(dirs[0] = strdup(v->valuestring))) {
			free(dirs);
			return "out of memory";
		}
		*out = dirs;
		return NULL;
	}
	if (!cJSON_IsArray(v))
		return "'debugInfo' must be an array of directory names";
	cJSON_ArrayForEach(e, v)
	{
		if (!cJSON_IsString(e))
			return "'debugInfo' must be an array of directory names";
		n++;
	}
	char **dirs = calloc(n + 1, sizeof(char *));
	if (!dirs)
		return "out of memory";
	n = 0;
	cJSON_ArrayForEach(e, v)
	{
		if (!(dirs[n++] = strdup(e->valuestring))) {
			free_strv(dirs);
			return "out of memory";
		}
	}
	*out = dirs;
	return NULL;
}

/* DWARF of the ELF file @real (itself, or a separate debug file found through
 * @dirs), checked against the build-id of the running program. */
static struct ns_err *open_debug_info(struct session *s, const char *real, const char *const *dirs,
                                      size_t ndirs, struct ns_dwarf **out)
{
	struct ns_dwarf *dw = NULL;
	struct ns_err *err = ns_dwarf_open_separate(real, dirs, ndirs, &dw);
	if (err)
		return err;
	const uint8_t *id;
	size_t idlen = ns_dwarf_build_id(dw, &id);
	if (idlen && s->tgt.build_id_len &&
	    (idlen != s->tgt.build_id_len || memcmp(id, s->tgt.build_id, idlen) != 0)) {
		struct ns_strbuf a, b;
		ns_strbuf_init(&a);
		ns_strbuf_init(&b);
		ns_strbuf_hex(&a, id, idlen);
		ns_strbuf_hex(&b, s->tgt.build_id, s->tgt.build_id_len);
		err = ns_err_create(NS_ERR_INVALID,
		                    "debug info of %s (build-id %s) does not match the running "
		                    "program (build-id %s)",
		                    real, ns_strbuf_str(&a), ns_strbuf_str(&b));
		ns_strbuf_deinit(&a);
		ns_strbuf_deinit(&b);
		ns_dwarf_destroy(dw);
		return err;
	}
	*out = dw;
	return NULL;
}

/* Open DWARF for the program and work out where it is loaded. The binary is read
 * through the path the stub reports (the file really running) first, then @path. */
/* Add the stub's --debug-dir directories (qNsDebugDirs) after the client's own. */
static void add_stub_debug_dirs(struct session *s)
{
	struct ns_rsp_packet rep;
	struct ns_err *err = target_request(&s->tgt, "qNsDebugDirs", &rep);
	if (err) {
		ns_err_destroy(err);
		return;
	}
	if (rep.len == 0 || rep.len % 2 || rep.data[0] == 'E')
		return;
	char *text = calloc(1, rep.len / 2 + 1);
	if (!text || ns_hex_decode(rep.data, rep.len, text) != 0) {
		free(text);
		return;
	}
	size_t n = 0;
	while (s->debug_dirs && s->debug_dirs[n])
		n++;
	char *save = NULL;
	for (char *d = strtok_r(text, "\n", &save); d; d = strtok_r(NULL, "\n", &save)) {
		char **nv = realloc(s->debug_dirs, (n + 2) * sizeof(char *));
		if (!nv)
			break;
		s->debug_dirs = nv;
		s->debug_dirs[n++] = strdup(d);
		s->debug_dirs[n] = NULL;
	}
	free(text);
}

static struct ns_err *load_program(struct session *s, const char *path)
{
	add_stub_debug_dirs(s);
	char **dirs = s->debug_dirs; // kept: shared libraries are looked up with them too
	size_t ndirs = 0;
	while (dirs && dirs[ndirs])
		ndirs++;

	const char *tries[2] = {s->tgt.exe_path, path};
	char real[2][PATH_MAX];
	struct ns_err *first = NULL;
	int used = -1;
	for (int i = 0; i < 2 && used < 0; i++) {
		struct ns_err *err;
		if (!tries[i] || !*tries[i])
			continue;
		if (!realpath(tries[i], real[i])) {
			if (i == 0)
				continue; // e.g. a remote stub's path: use @path
			err = ns_err_errno(errno, "program %s", tries[i]);
		} else if (i == 1 && first && !strcmp(real[0], real[1])) {
			continue; // the same file failed already
		} else {
			err = open_debug_info(s, real[i], (const char *const *)dirs, ndirs, &s->dw);
			if (!err)
				used = i;
		}
		if (!first)
			first = err;
		else
			ns_err_destroy(err);
	}
	if (used < 0)
		return first ? first : ns_err_create(NS_ERR_INVALID, "no program to debug");
	ns_err_destroy(first);
	const char *bin = real[used];
	s->program_path = strdup(bin);
	ns_log(NS_LOG_DEBUG, "program %s, debug info from %s", bin, ns_dwarf_debug_path(s->dw));
	s->load_bias = 0;
	if (ns_dwarf_is_dyn(s->dw)) {
		const char *exe = s->tgt.exe_path ? s->tgt.exe_path : bin;
		if (ns_procmap_load_bias(&s->tgt.map, exe, &s->load_bias) != 0 &&
		    ns_procmap_load_bias(&s->tgt.map, bin, &s->load_bias) != 0)
			return ns_err_create(NS_ERR_NOT_FOUND, "%s is not mapped in the target",
			                     bin);
	}
	return modules_refresh(s);
}

static void after_connect(struct session *s, const cJSON *req, const char *program)
{
	struct ns_err *err = load_program(s, program);
	if (err) {
		respond_err(s, req, "%s", err->msg);
		ns_err_destroy(err);
		return;
	}
	respond(s, req, NULL);
	cJSON *pb = cJSON_CreateObject();
	cJSON_AddStringToObject(pb, "name", s->program_path);
	cJSON_AddBoolToObject(pb, "isLocalProcess", true);
	cJSON_AddStringToObject(pb, "startMethod", s->attached ? "attach" : "launch");
	session_event(s, "process", pb);
	session_event(s, "initialized", NULL);
}

static void req_launch(void *ctx, const cJSON *req, const cJSON *args)
{
	struct session *s = ctx;
	const char *program = ns_dap_get_str(args, "program", NULL);
	if (s->have_target) {
		respond_err(s, req, "already debugging a program");
		return;
	}
	if (!program || !*program) {
		respond_err(s, req, "launch: 'program' (the path of the executable) is required");
		return;
	}
	char **debug_dirs;
	const char *dierr = read_debug_info(args, &debug_dirs);
	if (dierr) {
		respond_err(s, req, "launch: %s", dierr);
		return;
	}
	free_strv(debug_dirs); // validated here, taken again once the program runs
	const cJSON *jargs = ns_dap_get_arr(args, "args");
	size_t n = jargs ? (size_t)cJSON_GetArraySize(jargs) : 0;
	char **argv = calloc(n + 2, sizeof(char *));
	if (!argv) {
		respond_err(s, req, "out of memory");
		return;
	}
	argv[0] = strdup(program);
	size_t k = 1;
	const cJSON *a;
	cJSON_ArrayForEach(a, jargs)
	{
		if (!cJSON_IsString(a)) {
			free_strv(argv);
			respond_err(s, req, "launch: 'args' must be an array of strings");
			return;
		}
		argv[k++] = strdup(a->valuestring);
	}
	char **envp = build_env(ns_dap_get_obj(args, "env"));
	struct launch_args la = {.program = program,
	                         .argv = argv,
	                         .cwd = ns_dap_get_str(args, "cwd", NULL),
	                         .envp = envp};
	if (access(program, X_OK) != 0) {
		respond_err(s, req, "launch: cannot execute %s: %s", program, strerror(errno));
		free_strv(argv);
		free_strv(envp);
		return;
	}
	struct ns_err *err = target_launch(&s->tgt, &la);
	free_strv(argv);
	free_strv(envp);
	if (err) {
		// Nothing half-started stays behind, and the client may try again.
		target_close(&s->tgt, true);
		respond_err(s, req, "%s", err->msg);
		ns_err_destroy(err);
		return;
	}
	s->have_target = true;
	read_debug_info(args, &s->debug_dirs);
	after_connect(s, req, program);
}

static void req_attach(void *ctx, const cJSON *req, const cJSON *args)
{
	struct session *s = ctx;
	if (s->have_target) {
		respond_err(s, req, "already debugging a program");
		return;
	}
	const char *target = ns_dap_get_str(args, "target", NULL);
	long long pid = ns_dap_get_int(args, "pid", 0);
	if (!target && pid <= 0) {
		respond_err(s, req,
		            "attach: needs 'pid' (a running process) or 'target' "
		            "(\"host:port\" of a nonstop-stub)");
		return;
	}
	char **debug_dirs;
	const char *dierr = read_debug_info(args, &debug_dirs);
	if (dierr) {
		respond_err(s, req, "attach: %s", dierr);
		return;
	}
	free_strv(debug_dirs); // validated here, taken again once attached
	s->attached = true;
	struct ns_err *err =
	        target ? target_attach(&s->tgt, target) : target_attach_pid(&s->tgt, (long)pid);
	if (err) {
		// A stub that is not listening yet, say: the client may try again.
		target_close(&s->tgt, false);
		s->attached = false;
		respond_err(s, req, "%s", err->msg);
		ns_err_destroy(err);
		return;
	}
	s->have_target = true;
	const char *program = ns_dap_get_str(args, "program", s->tgt.exe_path);
	read_debug_info(args, &s->debug_dirs);
	after_connect(s, req, program ? program : "");
}

static void req_set_breakpoints(void *ctx, const cJSON *req, const cJSON *args)
{
	bp_set_breakpoints(ctx, req, args);
}

static void req_configuration_done(void *ctx, const cJSON *req, const cJSON *args)
{
	struct session *s = ctx;
	(void)args;
	respond(s, req, NULL);
	s->configured = true;
	if (s->have_target && s->tgt.rsp) {
		struct ns_rsp_packet rep;
		struct ns_err *err = target_request(&s->tgt, "vCont;c", &rep);
		ns_err_destroy(err);
	}
}

static void req_threads(void *ctx, const cJSON *req, const cJSON *args)
{
	struct session *s = ctx;
	(void)args;
	cJSON *body = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(body, "threads");
	if (s->have_target && s->tgt.rsp && !s->tgt.exited) {
		long *tids = NULL;
		size_t n = 0;
		struct ns_err *err = target_threads(&s->tgt, &tids, &n);
		ns_err_destroy(err);
		for (size_t i = 0; i < n; i++) {
			cJSON *t = cJSON_CreateObject();
			cJSON_AddNumberToObject(t, "id", (double)tids[i]);
			char name[64];
			snprintf(name, sizeof(name), "Thread %ld (running)", tids[i]);
			cJSON_AddStringToObject(t, "name", name);
			cJSON_AddItemToArray(arr, t);
		}
		free(tids);
	}
	snap_threads(s, arr);
	respond(s, req, body);
}

static void req_continue(void *ctx, const cJSON *req, const cJSON *args)
{
	struct session *s = ctx;
	long tid = (long)ns_dap_get_int(args, "threadId", -1);
	if (snap_is_thread(s, tid))
		snap_continue(s, tid);
	cJSON *b = cJSON_CreateObject();
	cJSON_AddBoolToObject(b, "allThreadsContinued", false);
	respond(s, req, b);
}

static void req_pause(void *ctx, const cJSON *req, const cJSON *args)
{
	(void)args;
	respond_err(ctx, req,
	            "nonstop never pauses the program: set a breakpoint to take a "
	            "snapshot of it instead");
}

static void req_disconnect(void *ctx, const cJSON *req, const cJSON *args)
{
	struct session *s = ctx;
	bool kill_it = ns_dap_get_bool(args, "terminateDebuggee", !s->attached);
	if (s->have_target)
		target_close(&s->tgt, kill_it);
	respond(s, req, NULL);
	s->disconnecting = true;
}

static void req_terminate(void *ctx, const cJSON *req, const cJSON *args)
{
	struct session *s = ctx;
	(void)args;
	if (s->have_target && s->tgt.rsp && !s->tgt.exited) {
		ns_rsp_send_str(s->tgt.rsp, "vKill;0");
		s->tgt.exited = true;
		s->tgt.exit_code = 128 + SIGKILL;
	}
	respond(s, req, NULL);
}

static void req_scopes(void *ctx, const cJSON *req, const cJSON *args)
{
	snap_scopes(ctx, req, args);
}

static void req_variables(void *ctx, const cJSON *req, const cJSON *args)
{
	snap_variables(ctx, req, args);
}

static void req_stack_trace(void *ctx, const cJSON *req, const cJSON *args)
{
	snap_stack_trace(ctx, req, args);
}

static void req_evaluate(void *ctx, const cJSON *req, const cJSON *args)
{
	snap_evaluate(ctx, req, args);
}

static void req_empty_ok(void *ctx, const cJSON *req, const cJSON *args)
{
	(void)args;
	respond(ctx, req, NULL);
}

static void req_exception_bps(void *ctx, const cJSON *req, const cJSON *args)
{
	(void)args;
	cJSON *b = cJSON_CreateObject();
	cJSON_AddArrayToObject(b, "breakpoints");
	respond(ctx, req, b);
}

static const struct ns_dap_command commands[] = {
        {"initialize", req_initialize},
        {"launch", req_launch},
        {"attach", req_attach},
        {"setBreakpoints", req_set_breakpoints},
        {"setExceptionBreakpoints", req_exception_bps},
        {"configurationDone", req_configuration_done},
        {"threads", req_threads},
        {"stackTrace", req_stack_trace},
        {"scopes", req_scopes},
        {"variables", req_variables},
        {"evaluate", req_evaluate},
        {"continue", req_continue},
        {"pause", req_pause},
        {"disconnect", req_disconnect},
        {"terminate", req_terminate},
        {"loadedSources", req_empty_ok},
        {NULL, NULL},
};

/* ---- frames and program output ---- */

static void fetch_frames(struct session *s)
{
	s->tgt.frames_pending = false;
	for (int guard = 0; guard < 100000 && s->tgt.rsp; guard++) {
		struct ns_rsp_packet rep;
		struct ns_err *err = target_request(&s->tgt, "qNsFrames", &rep);
		if (err) {
			ns_log(NS_LOG_WARN, "%s", err->msg);
			ns_err_destroy(err);
			return;
		}
		if (rep.len == 0 || strcmp(rep.data, "OK") == 0)
			return;
		// The reply buffer is reused by the next request: copy it.
		uint8_t *items = malloc(rep.len);
		if (!items)
			return;
		memcpy(items, rep.data, rep.len);
		size_t pos = 0;
		bool more = true;
		while (more) {
			struct ns_rsp_frames_item it;
			err = ns_rsp_frames_next(items, rep.len, &pos, &it, &more);
			if (err) {
				ns_log(NS_LOG_WARN, "%s", err->msg);
				ns_err_destroy(err);
				break;
			}
			if (!more)
				break;
			switch (it.kind) {
			case 'F':
				bp_on_frame(s, it.data, it.len);
				break;
			case 'L':
				if (it.value) {
					char msg[160];
					int m = snprintf(msg, sizeof(msg),
					                 "nonstop: %llu hits were dropped (trace "
					                 "buffers full)\n",
					                 (unsigned long long)it.value);
					session_output(s, "important", msg, (size_t)m);
				}
				break;
			case 'W':
				s->tgt.exited = true;
				s->tgt.exit_code = (int)it.value;
				break;
			case 'X':
				s->tgt.exited = true;
				s->tgt.exit_code = 128 + (int)it.value;
				break;
			}
		}
		free(items);
	}
}

static bool pump_fd(struct session *s, int *fd, const char *category)
{
	char buf[65536];
	ssize_t n = read(*fd, buf, sizeof(buf));
	if (n > 0) {
		session_output(s, category, buf, (size_t)n);
		return true;
	}
	if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
		close(*fd);
		*fd = -1;
	}
	return false;
}

static void drain_output(struct session *s, int timeout_ms)
{
	for (int rounds = 0; rounds < 1000 && (s->tgt.out_fd >= 0 || s->tgt.err_fd >= 0);
	     rounds++) {
		struct pollfd p[2] = {{s->tgt.out_fd, POLLIN, 0}, {s->tgt.err_fd, POLLIN, 0}};
		if (poll(p, 2, timeout_ms) <= 0)
			return;
		if (p[0].revents)
			pump_fd(s, &s->tgt.out_fd, "stdout");
		if (p[1].revents)
			pump_fd(s, &s->tgt.err_fd, "stderr");
	}
}

static void report_exit(struct session *s)
{
	if (s->exited_sent)
		return;
	drain_output(s, 2000);
	cJSON *b = cJSON_CreateObject();
	cJSON_AddNumberToObject(b, "exitCode", s->tgt.exit_code);
	session_event(s, "exited", b);
	session_event(s, "terminated", NULL);
	s->exited_sent = s->terminated_sent = true;
}

static void handle_message(struct session *s, cJSON *msg)
{
	const char *type = ns_dap_get_str(msg, "type", "");
	if (strcmp(type, "request") != 0)
		return; // responses to our (none) requests and stray events are ignored
	if (!ns_dap_dispatch(commands, s, msg)) {
		const char *cmd = ns_dap_get_str(msg, "command", NULL);
		if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(msg, "seq")) && cmd) {
			const cJSON *args = cJSON_GetObjectItemCaseSensitive(msg, "arguments");
			if (args && !cJSON_IsObject(args))
				respond_err(s, msg, "%s: 'arguments' must be an object", cmd);
			else
				respond_err(s, msg, "unsupported request '%s'", cmd);
		}
	}
}

int session_run(struct session *s);
int session_run(struct session *s)
{
	for (;;) {
		struct pollfd p[5];
		int np = 0;
		p[np++] = (struct pollfd){ns_dap_fd(s->dap), POLLIN, 0};
		int rsp_i = -1, out_i = -1, err_i = -1;
		if (s->tgt.rsp) {
			rsp_i = np;
			p[np++] = (struct pollfd){ns_rsp_fd(s->tgt.rsp), POLLIN, 0};
		}
		if (s->tgt.out_fd >= 0) {
			out_i = np;
			p[np++] = (struct pollfd){s->tgt.out_fd, POLLIN, 0};
		}
		if (s->tgt.err_fd >= 0) {
			err_i = np;
			p[np++] = (struct pollfd){s->tgt.err_fd, POLLIN, 0};
		}
		int serr_i = -1;
		if (s->tgt.stub_err_fd >= 0) {
			serr_i = np;
			p[np++] = (struct pollfd){s->tgt.stub_err_fd, POLLIN, 0};
		}
		bool ready = ns_dap_buffered(s->dap) ||
		             (s->tgt.rsp && ns_rsp_buffered(s->tgt.rsp)) || s->tgt.frames_pending;
		int rc = poll(p, (nfds_t)np, ready ? 0 : 200);
		if (rc < 0 && errno != EINTR)
			return 1;
		if ((rc > 0 && p[0].revents) || ns_dap_buffered(s->dap)) {
			cJSON *msg = NULL;
			struct ns_err *err = ns_dap_read(s->dap, 0, &msg);
			if (err) {
				enum ns_err_code code = err->code;
				ns_err_destroy(err);
				if (code == NS_ERR_CLOSED || code == NS_ERR_PROTOCOL)
					break;
			} else if (msg) {
				handle_message(s, msg);
				cJSON_Delete(msg);
			}
			if (s->disconnecting)
				break;
		}
		if (s->tgt.rsp &&
		    ((rsp_i >= 0 && rc > 0 && p[rsp_i].revents) || ns_rsp_buffered(s->tgt.rsp))) {
			struct ns_rsp_packet pkt;
			struct ns_err *err = ns_rsp_recv(s->tgt.rsp, 0, &pkt);
			if (err) {
				if (err->code == NS_ERR_CLOSED) {
					ns_rsp_conn_destroy(s->tgt.rsp);
					s->tgt.rsp = NULL;
					if (!s->tgt.exited) {
						session_output(s, "important",
						               "nonstop: lost the connection to "
						               "nonstop-stub\n",
						               45);
						s->tgt.exited = true;
					}
				}
				ns_err_destroy(err);
			} else if (pkt.notify && strncmp(pkt.data, "NsFrames", 8) == 0) {
				s->tgt.frames_pending = true;
			}
		}
		if (s->tgt.frames_pending && s->tgt.rsp)
			fetch_frames(s);
		if (out_i >= 0 && rc > 0 && p[out_i].revents && s->tgt.out_fd >= 0)
			pump_fd(s, &s->tgt.out_fd, "stdout");
		if (err_i >= 0 && rc > 0 && p[err_i].revents && s->tgt.err_fd >= 0)
			pump_fd(s, &s->tgt.err_fd, "stderr");
		if (serr_i >= 0 && rc > 0 && p[serr_i].revents && s->tgt.stub_err_fd >= 0)
			pump_fd(s, &s->tgt.stub_err_fd, "console");
		if (s->have_target && s->tgt.exited && !s->exited_sent)
			report_exit(s);
	}
	return 0;
}

void session_deinit(struct session *s);
void session_deinit(struct session *s)
{
	if (s->have_target)
		target_close(&s->tgt, !s->attached);
	snap_free_all(s);
	bp_free_all(s);
	ns_viewmem_destroy(s->vm);
	modules_free(s);
	ns_dwarf_destroy(s->dw);
	free_strv(s->debug_dirs);
	free(s->program_path);
	free(s->refs);
}
