/* Snapshots: each snapshot breakpoint gets one synthetic thread, announced by one
 * `stopped` event. Its call stack shows every capture of that breakpoint (up to the
 * limit), newest captures appended below a label frame, so a hot breakpoint never
 * floods the IDE with stops. `continue` on the thread dismisses it and disarms the
 * breakpoint until it is set again. Everything is answered from the captured frame,
 * DWARF and the binary's read-only file mappings: the program never stops. */
#define _GNU_SOURCE
#include "adapter.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct capture {
	uint8_t *data;
	size_t len;
	struct ns_frame frame;
	struct ns_unwind_frame *frames;
	size_t nframes;
	bool unwound;
};

struct snapshot {
	struct snapshot *next;
	uint32_t id;
	long thread_id;
	struct bp *bp;
	struct capture caps[SNAPSHOT_LIMIT];
	size_t ncaps;
	struct ns_arena arena;
	char *name;
};

enum varref_kind { REF_LOCALS, REF_REGS, REF_VALUE };

struct varref {
	enum varref_kind kind;
	struct snapshot *snap; /* NULL once dismissed */
	uint32_t cap, k;
	struct value val;
};

/* Frame ids: snapshot id, capture, frame index (label frames use index 99). */
static long frame_id(const struct snapshot *sn, size_t cap, size_t k)
{
	return (long)sn->id * 10000 + (long)cap * 100 + (long)k + 1;
}

static struct snapshot *find_by_thread(struct session *s, long tid)
{
	for (struct snapshot *sn = s->snaps; sn; sn = sn->next)
		if (sn->thread_id == tid)
			return sn;
	return NULL;
}

static bool decode_frame_id(struct session *s, long id, struct snapshot **sn, size_t *cap,
                            size_t *k)
{
	if (id <= 0)
		return false;
	long v = id - 1;
	uint32_t sid = (uint32_t)(v / 10000);
	for (struct snapshot *p = s->snaps; p; p = p->next) {
		if (p->id != sid)
			continue;
		*cap = (size_t)((v % 10000) / 100);
		*k = (size_t)(v % 100);
		if (*cap >= p->ncaps || *k >= MAX_STACK_FRAMES)
			return false;
		*sn = p;
		return true;
	}
	return false;
}

static void format_time(uint64_t ns, char *buf, size_t len)
{
	time_t sec = (time_t)(ns / 1000000000ULL);
	struct tm tm;
	localtime_r(&sec, &tm);
	char hms[32];
	strftime(hms, sizeof(hms), "%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%06llu", hms, (unsigned long long)(ns % 1000000000ULL / 1000));
}

static const char *basename_of(const char *p)
{
	const char *b = strrchr(p, '/');
	return b ? b + 1 : p;
}

void snap_add(struct session *s, struct bp *b, const void *data, size_t len)
{
	struct snapshot *sn = NULL;
	for (struct snapshot *p = s->snaps; p; p = p->next)
		if (p->bp == b)
			sn = p;
	if (sn && sn->ncaps >= SNAPSHOT_LIMIT)
		return;
	uint8_t *copy = malloc(len);
	if (!copy)
		return;
	memcpy(copy, data, len);
	struct ns_frame f;
	struct ns_err *err = ns_frame_parse(copy, len, &f);
	if (err) {
		ns_err_destroy(err);
		free(copy);
		return;
	}
	bool fresh = sn == NULL;
	if (fresh) {
		sn = calloc(1, sizeof(*sn));
		if (!sn) {
			free(copy);
			return;
		}
		ns_arena_init(&sn->arena);
		sn->id = ++s->next_snap_id;
		sn->thread_id = SNAPSHOT_THREAD_BASE + (long)sn->id;
		sn->bp = b;
		if (asprintf(&sn->name, "Snapshot #%u: %s:%u (thread %llu)", sn->id,
		             basename_of(bp_source(b)), bp_line(b),
		             (unsigned long long)f.hdr.tid) < 0)
			sn->name = NULL;
		sn->next = s->snaps;
		s->snaps = sn;
	}
	struct capture *c = &sn->caps[sn->ncaps++];
	c->data = copy;
	c->len = len;
	c->frame = f;
	if (fresh) {
		char when[64], desc[256];
		format_time(f.hdr.time_ns, when, sizeof(when));
		snprintf(desc, sizeof(desc),
		         "Snapshot of breakpoint %u (%s:%u) on thread %llu at %s", bp_id(b),
		         basename_of(bp_source(b)), bp_line(b), (unsigned long long)f.hdr.tid,
		         when);
		cJSON *body = cJSON_CreateObject();
		cJSON_AddStringToObject(body, "reason", "snapshot");
		cJSON_AddStringToObject(body, "description", desc);
		cJSON_AddNumberToObject(body, "threadId", (double)sn->thread_id);
		cJSON_AddBoolToObject(body, "preserveFocusHint", false);
		cJSON_AddStringToObject(body, "text", "snapshot");
		cJSON_AddBoolToObject(body, "allThreadsStopped", false);
		cJSON *ids = cJSON_AddArrayToObject(body, "hitBreakpointIds");
		cJSON_AddItemToArray(ids, cJSON_CreateNumber(bp_id(b)));
		session_event(s, "stopped", body);
	} else if (s->client_supports_invalidated) {
		cJSON *body = cJSON_CreateObject();
		cJSON *areas = cJSON_AddArrayToObject(body, "areas");
		cJSON_AddItemToArray(areas, cJSON_CreateString("stacks"));
		cJSON_AddNumberToObject(body, "threadId", (double)sn->thread_id);
		session_event(s, "invalidated", body);
	}
}

void snap_threads(struct session *s, cJSON *threads)
{
	for (struct snapshot *sn = s->snaps; sn; sn = sn->next) {
		cJSON *t = cJSON_CreateObject();
		cJSON_AddNumberToObject(t, "id", (double)sn->thread_id);
		cJSON_AddStringToObject(t, "name", sn->name ? sn->name : "Snapshot");
		cJSON_AddItemToArray(threads, t);
	}
}

bool snap_is_thread(struct session *s, long thread_id)
{
	return find_by_thread(s, thread_id) != NULL;
}

static void snap_free(struct session *s, struct snapshot *sn)
{
	for (size_t i = 0; i < s->nrefs; i++)
		if (s->refs[i].snap == sn)
			s->refs[i].snap = NULL;
	for (size_t i = 0; i < sn->ncaps; i++)
		free(sn->caps[i].data);
	ns_arena_deinit(&sn->arena);
	free(sn->name);
	free(sn);
}

void snap_continue(struct session *s, long thread_id)
{
	for (struct snapshot **pp = &s->snaps; *pp; pp = &(*pp)->next) {
		struct snapshot *sn = *pp;
		if (sn->thread_id != thread_id)
			continue;
		*pp = sn->next;
		bp_disarm(s, sn->bp);
		cJSON *body = cJSON_CreateObject();
		cJSON_AddStringToObject(body, "reason", "exited");
		cJSON_AddNumberToObject(body, "threadId", (double)thread_id);
		session_event(s, "thread", body);
		snap_free(s, sn);
		return;
	}
}

void snap_free_all(struct session *s)
{
	while (s->snaps) {
		struct snapshot *sn = s->snaps;
		s->snaps = sn->next;
		snap_free(s, sn);
	}
}

static void unwind_capture(struct session *s, struct snapshot *sn, struct capture *c)
{
	if (c->unwound)
		return;
	c->unwound = true;
	struct ns_err *err =
	        ns_unwind(&c->frame, s->vm, MAX_STACK_FRAMES, &sn->arena, &c->frames, &c->nframes);
	if (err) {
		ns_err_destroy(err);
		c->frames = NULL;
		c->nframes = 0;
	}
	if (c->nframes == 0) {
		// At least the hit itself, from the captured registers.
		struct ns_unwind_frame *f = ns_arena_alloc(&sn->arena, sizeof(*f));
		if (!f)
			return;
		for (unsigned d = 0; d < NS_UNWIND_NREGS; d++) {
			int g = ns_frame_dwarf_to_gdb_reg(d);
			if (g >= 0 && ns_frame_reg(&c->frame, (unsigned)g, &f->regs[d]) == 0)
				f->valid |= 1u << d;
		}
		f->pc = c->frame.hdr.addr;
		c->frames = f;
		c->nframes = 1;
	}
}

/* Runtime pc to look up scope/line for frame @k: callers are inside the call. */
static uint64_t lookup_pc(const struct capture *c, size_t k)
{
	return k == 0 ? c->frames[0].pc : c->frames[k].pc - 1;
}

static cJSON *stack_frame_json(struct session *s, struct snapshot *sn, size_t cap, size_t k,
                               struct ns_arena *a)
{
	struct capture *c = &sn->caps[cap];
	uint64_t pc = lookup_pc(c, k);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "id", (double)frame_id(sn, cap, k));
	struct ns_dwarf_where w = {0};
	struct module *mod = module_for_pc(s, pc);
	struct ns_dwarf *mdw = mod ? module_dwarf(s, mod) : NULL;
	struct ns_err *err = mdw ? ns_dwarf_where(mdw, pc - module_bias(mod), a, &w)
	                         : ns_err_create(NS_ERR_NOT_FOUND, "no debug info");
	if (err) {
		ns_err_destroy(err);
		const struct ns_procmap_entry *m = ns_procmap_find(&s->tgt.map, c->frames[k].pc);
		char *name = m && m->path
		                     ? ns_arena_printf(a, "%s+0x%" PRIx64, basename_of(m->path),
		                                       c->frames[k].pc - m->start + m->offset)
		                     : ns_arena_printf(a, "0x%" PRIx64, c->frames[k].pc);
		cJSON_AddStringToObject(o, "name", name ? name : "??");
		cJSON_AddNumberToObject(o, "line", 0);
		cJSON_AddNumberToObject(o, "column", 0);
		cJSON_AddStringToObject(o, "presentationHint", "subtle");
	} else {
		cJSON_AddStringToObject(o, "name", w.function ? w.function : "??");
		if (w.file) {
			cJSON *src = cJSON_AddObjectToObject(o, "source");
			cJSON_AddStringToObject(src, "name", basename_of(w.file));
			cJSON_AddStringToObject(src, "path", w.file);
		}
		// Frame 0 is where the breakpoint's tracepoint sits: several line rows
		// may share that address (gcc -O2 emits "33, 34, 33" at one pc), and the
		// line the user set is the right one to show.
		unsigned line = k == 0 ? bp_line(sn->bp) : w.line;
		cJSON_AddNumberToObject(o, "line", line);
		cJSON_AddNumberToObject(o, "column", w.column && line == w.line ? w.column : 1);
	}
	char ip[32];
	snprintf(ip, sizeof(ip), "0x%" PRIx64, c->frames[k].pc);
	cJSON_AddStringToObject(o, "instructionPointerReference", ip);
	return o;
}

void snap_stack_trace(struct session *s, const cJSON *req, const cJSON *args)
{
	long tid = (long)ns_dap_get_int(args, "threadId", -1);
	struct snapshot *sn = find_by_thread(s, tid);
	if (!sn) {
		struct ns_err *err = ns_dap_send_error(
		        s->dap, req, 3,
		        "thread %ld is running: nonstop never stops threads; only snapshot threads "
		        "have a stack",
		        tid);
		ns_err_destroy(err);
		return;
	}
	long start = (long)ns_dap_get_int(args, "startFrame", 0);
	long levels = (long)ns_dap_get_int(args, "levels", 0);
	cJSON *body = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(body, "stackFrames");
	long idx = 0, emitted = 0;
	for (size_t cap = 0; cap < sn->ncaps; cap++) {
		struct capture *c = &sn->caps[cap];
		unwind_capture(s, sn, c);
		if (cap > 0) {
			if (idx >= start && (levels <= 0 || emitted < levels)) {
				char when[64];
				format_time(c->frame.hdr.time_ns, when, sizeof(when));
				char *label = ns_arena_printf(
				        &sn->arena,
				        "capture %zu of this breakpoint: "
				        "thread %llu at %s",
				        cap + 1, (unsigned long long)c->frame.hdr.tid, when);
				cJSON *o = cJSON_CreateObject();
				cJSON_AddNumberToObject(o, "id", (double)frame_id(sn, cap, 99));
				cJSON_AddStringToObject(o, "name", label ? label : "capture");
				cJSON_AddNumberToObject(o, "line", 0);
				cJSON_AddNumberToObject(o, "column", 0);
				cJSON_AddStringToObject(o, "presentationHint", "label");
				cJSON_AddItemToArray(arr, o);
				emitted++;
			}
			idx++;
		}
		for (size_t k = 0; k < c->nframes && k < 99; k++, idx++) {
			if (idx < start || (levels > 0 && emitted >= levels))
				continue;
			cJSON_AddItemToArray(arr, stack_frame_json(s, sn, cap, k, &sn->arena));
			emitted++;
		}
	}
	cJSON_AddNumberToObject(body, "totalFrames", (double)idx);
	session_send(s, ns_dap_response(req, true, NULL, body));
}

static long new_ref(struct session *s, struct varref r)
{
	if (s->nrefs == s->refs_cap) {
		size_t nc = s->refs_cap ? s->refs_cap * 2 : 64;
		struct varref *nv = realloc(s->refs, nc * sizeof(*nv));
		if (!nv)
			return 0;
		s->refs = nv;
		s->refs_cap = nc;
	}
	s->refs[s->nrefs++] = r;
	return (long)s->nrefs;
}

void snap_scopes(struct session *s, const cJSON *req, const cJSON *args)
{
	struct snapshot *sn;
	size_t cap, k;
	long fid = (long)ns_dap_get_int(args, "frameId", -1);
	if (!decode_frame_id(s, fid, &sn, &cap, &k) || k >= sn->caps[cap].nframes) {
		struct ns_err *err = ns_dap_send_error(s->dap, req, 4, "no frame %ld", fid);
		ns_err_destroy(err);
		return;
	}
	cJSON *body = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(body, "scopes");
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", "Locals");
	cJSON_AddStringToObject(o, "presentationHint", "locals");
	cJSON_AddNumberToObject(
	        o, "variablesReference",
	        (double)new_ref(s,
	                        (struct varref){REF_LOCALS, sn, (uint32_t)cap, (uint32_t)k, {0}}));
	cJSON_AddBoolToObject(o, "expensive", false);
	cJSON_AddItemToArray(arr, o);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", "Registers");
	cJSON_AddStringToObject(o, "presentationHint", "registers");
	cJSON_AddNumberToObject(
	        o, "variablesReference",
	        (double)new_ref(s, (struct varref){REF_REGS, sn, (uint32_t)cap, (uint32_t)k, {0}}));
	cJSON_AddBoolToObject(o, "expensive", true);
	cJSON_AddItemToArray(arr, o);
	session_send(s, ns_dap_response(req, true, NULL, body));
}

static cJSON *variable_json(struct session *s, struct snapshot *sn, size_t cap, size_t k,
                            const char *name, const struct value *v, struct ns_arena *a)
{
	struct frame_mem fm = {.s = s, .frame = &sn->caps[cap].frame};
	struct value_ctx vc = {.read = session_frame_read, .ctx = &fm, .arena = a};
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "value", value_render(&vc, v));
	if (v->type) {
		char *tn = ns_dwarf_type_name(v->type, a);
		if (tn)
			cJSON_AddStringToObject(o, "type", tn);
	}
	long ref = 0;
	if (value_has_children(&vc, v))
		ref = new_ref(s, (struct varref){REF_VALUE, sn, (uint32_t)cap, (uint32_t)k, *v});
	cJSON_AddNumberToObject(o, "variablesReference", (double)ref);
	return o;
}

/* The value of variable @var in frame @k of capture @cap. */
static struct value locate_var(struct session *s, struct capture *c, size_t k,
                               const struct ns_dwarf_var *var, const struct ns_dwarf_scope *locals,
                               const struct ns_expr_scope *scope, struct ns_arena *a)
{
	struct value v = {.type = var->type};
	if (var->has_const) {
		v.where = VAL_BYTES;
		memcpy(v.bytes, &var->const_value, 8);
		return v;
	}
	uint8_t *code;
	size_t len;
	enum ns_expr_value_kind kind;
	struct ns_err *err =
	        ns_expr_compile_location(var->loc, var->loc_len, locals->frame_base,
	                                 locals->frame_base_len, scope, a, &code, &len, &kind);
	if (err) {
		v.where = VAL_ERROR;
		v.error = "<optimized out>";
		ns_err_destroy(err);
		return v;
	}
	struct ns_expr_prog prog = {.code = code, .len = len, .kind = kind, .type = var->type};
	uint64_t r;
	err = session_eval(s, &prog, &c->frame, &c->frames[k], &r);
	if (err) {
		v.where = VAL_ERROR;
		v.error = err->code == NS_ERR_OPTIMIZED_OUT
		                  ? "<optimized out>"
		                  : ns_arena_printf(a, "<error: %s>", err->msg);
		ns_err_destroy(err);
		return v;
	}
	return value_from_result(&prog, r);
}

static void locals_json(struct session *s, struct snapshot *sn, size_t cap, size_t k, cJSON *arr)
{
	struct capture *c = &sn->caps[cap];
	struct ns_dwarf_scope locals;
	struct ns_expr_scope scope;
	struct ns_err *err = session_scope(s, lookup_pc(c, k), &sn->arena, &locals, &scope);
	if (err) {
		ns_err_destroy(err);
		return;
	}
	for (size_t i = 0; i < locals.nvars; i++) {
		const struct ns_dwarf_var *var = &locals.vars[i];
		bool shadowed = false;
		for (size_t j = 0; j < i; j++)
			if (strcmp(locals.vars[j].name, var->name) == 0)
				shadowed = true;
		if (shadowed || !var->name)
			continue;
		struct value v = locate_var(s, c, k, var, &locals, &scope, &sn->arena);
		cJSON_AddItemToArray(arr, variable_json(s, sn, cap, k, var->name, &v, &sn->arena));
	}
}

void snap_variables(struct session *s, const cJSON *req, const cJSON *args)
{
	long ref = (long)ns_dap_get_int(args, "variablesReference", 0);
	if (ref <= 0 || (size_t)ref > s->nrefs || !s->refs[ref - 1].snap) {
		struct ns_err *err = ns_dap_send_error(s->dap, req, 5,
		                                       "variablesReference %ld is not valid (the "
		                                       "snapshot may have been dismissed)",
		                                       ref);
		ns_err_destroy(err);
		return;
	}
	struct varref r = s->refs[ref - 1];
	struct snapshot *sn = r.snap;
	cJSON *body = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(body, "variables");
	struct capture *c = &sn->caps[r.cap];
	switch (r.kind) {
	case REF_LOCALS:
		locals_json(s, sn, r.cap, r.k, arr);
		break;
	case REF_REGS: {
		const struct ns_unwind_frame *uf = &c->frames[r.k];
		for (unsigned d = 0; d < NS_UNWIND_NREGS; d++) {
			if (!(uf->valid & (1u << d)))
				continue;
			int g = ns_frame_dwarf_to_gdb_reg(d);
			const char *name = g >= 0 ? ns_frame_reg_name((unsigned)g) : NULL;
			if (!name)
				continue;
			char val[32];
			snprintf(val, sizeof(val), "0x%016" PRIx64, uf->regs[d]);
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "name", name);
			cJSON_AddStringToObject(o, "value", val);
			cJSON_AddNumberToObject(o, "variablesReference", 0);
			cJSON_AddItemToArray(arr, o);
		}
		break;
	}
	case REF_VALUE: {
		struct frame_mem fm = {.s = s, .frame = &c->frame};
		struct value_ctx vc = {.read = session_frame_read, .ctx = &fm, .arena = &sn->arena};
		const char **names;
		struct value *vals;
		size_t n = value_children(&vc, &r.val, &names, &vals);
		for (size_t i = 0; i < n; i++)
			cJSON_AddItemToArray(arr, variable_json(s, sn, r.cap, r.k, names[i],
			                                        &vals[i], &sn->arena));
		break;
	}
	}
	session_send(s, ns_dap_response(req, true, NULL, body));
}

void snap_evaluate(struct session *s, const cJSON *req, const cJSON *args)
{
	const char *expr = ns_dap_get_str(args, "expression", NULL);
	if (!expr) {
		struct ns_err *err = ns_dap_send_error(s->dap, req, 6, "evaluate: no expression");
		ns_err_destroy(err);
		return;
	}
	struct snapshot *sn = NULL;
	size_t cap = 0, k = 0;
	long fid = (long)ns_dap_get_int(args, "frameId", -1);
	bool in_frame = fid > 0 && decode_frame_id(s, fid, &sn, &cap, &k);
	struct ns_arena tmp;
	ns_arena_init(&tmp);
	struct ns_arena *a = sn ? &sn->arena : &tmp;
	struct ns_dwarf_scope locals;
	struct ns_expr_scope scope;
	struct capture *c = NULL;
	uint64_t pc = 0;
	if (in_frame) {
		c = &sn->caps[cap];
		unwind_capture(s, sn, c);
		if (k >= c->nframes)
			in_frame = false;
		else
			pc = lookup_pc(c, k);
	}
	struct ns_err *err = session_scope(s, pc, a, &locals, &scope);
	struct ns_expr_prog prog;
	if (!err)
		err = ns_expr_compile(expr, &scope, 0, a, &prog);
	uint64_t result = 0;
	if (!err)
		err = session_eval(s, &prog, in_frame ? &c->frame : NULL,
		                   in_frame ? &c->frames[k] : NULL, &result);
	if (err && in_frame && err->code == NS_ERR_FAULT && err->addr >= 4096) {
		// Memory the snapshot did not capture (a global, a heap object beyond
		// the collection depth): say so rather than guess from the live program.
		ns_err_destroy(err);
		cJSON *body = cJSON_CreateObject();
		cJSON_AddStringToObject(body, "result", "<not captured>");
		cJSON_AddNumberToObject(body, "variablesReference", 0);
		session_send(s, ns_dap_response(req, true, NULL, body));
		ns_arena_deinit(&tmp);
		return;
	}
	if (err) {
		struct ns_err *e2 = ns_dap_send_error(s->dap, req, 7, "%s", err->msg);
		ns_err_destroy(e2);
		ns_err_destroy(err);
		ns_arena_deinit(&tmp);
		return;
	}
	struct value v = value_from_result(&prog, result);
	struct frame_mem fm = {.s = s, .frame = in_frame ? &c->frame : NULL};
	struct value_ctx vc = {.read = session_frame_read, .ctx = &fm, .arena = a};
	cJSON *body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "result", value_render(&vc, &v));
	char *tn = ns_dwarf_type_name(prog.type, a);
	if (tn)
		cJSON_AddStringToObject(body, "type", tn);
	long ref = 0;
	if (in_frame && value_has_children(&vc, &v))
		ref = new_ref(s, (struct varref){REF_VALUE, sn, (uint32_t)cap, (uint32_t)k, v});
	cJSON_AddNumberToObject(body, "variablesReference", (double)ref);
	session_send(s, ns_dap_response(req, true, NULL, body));
	ns_arena_deinit(&tmp);
}
