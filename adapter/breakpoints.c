/* setBreakpoints: DAP breakpoints -> tracepoints (QTDP) in the target, and captured
 * frames -> logpoint output or snapshots. */
#define _GNU_SOURCE
#include "adapter.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ax/ax.h"
#include "base/log.h"

struct seg {
	const char *text; /* literal text, or the expression source */
	bool is_expr;
	struct ns_expr_prog prog; /* plain program, re-run over the frame */
};

struct tp_loc {
	uint32_t num;
	uint64_t addr; /* runtime */
	struct seg *segs;
	size_t nsegs;
	bool installed;
};

struct bp {
	struct bp *next;
	uint32_t id;
	char *source;
	unsigned line, req_line;
	bool is_log, verified, cond_error_reported;
	char *message;
	struct tp_loc *locs;
	size_t nlocs;
	struct ns_arena arena;
	unsigned snaps;
	bool disarmed;
};

uint32_t bp_id(const struct bp *b)
{
	return b->id;
}

const char *bp_source(const struct bp *b)
{
	return b->source;
}

unsigned bp_line(const struct bp *b)
{
	return b->line;
}

struct bp *bp_by_tp(struct session *s, uint32_t tp_num)
{
	for (struct bp *b = s->bps; b; b = b->next)
		for (size_t i = 0; i < b->nlocs; i++)
			if (b->locs[i].num == tp_num)
				return b;
	return NULL;
}

static struct tp_loc *loc_by_tp(struct bp *b, uint32_t tp_num)
{
	for (size_t i = 0; i < b->nlocs; i++)
		if (b->locs[i].num == tp_num)
			return &b->locs[i];
	return NULL;
}

static void remove_tracepoint(struct session *s, struct tp_loc *l)
{
	if (!l->installed || !s->tgt.rsp)
		return;
	char req[96];
	snprintf(req, sizeof(req), "QTDisable:%x:%" PRIx64, l->num, l->addr);
	struct ns_rsp_packet rep;
	struct ns_err *err = target_request(&s->tgt, req, &rep);
	ns_err_destroy(err);
	l->installed = false;
}

void bp_disarm(struct session *s, struct bp *b)
{
	if (b->disarmed)
		return;
	for (size_t i = 0; i < b->nlocs; i++)
		remove_tracepoint(s, &b->locs[i]);
	b->disarmed = true;
}

static void bp_free(struct session *s, struct bp *b)
{
	bp_disarm(s, b);
	free(b->source);
	free(b->message);
	free(b->locs);
	ns_arena_deinit(&b->arena);
	free(b);
}

void bp_free_all(struct session *s)
{
	while (s->bps) {
		struct bp *b = s->bps;
		s->bps = b->next;
		free(b->source);
		free(b->message);
		free(b->locs);
		ns_arena_deinit(&b->arena);
		free(b);
	}
}

/* Split a logMessage into literal and {expression} segments. "{{" and "}}" are
 * literal braces. */
static struct ns_err *split_message(const char *msg, struct ns_arena *a, struct seg **out,
                                    size_t *n)
{
	size_t cap = 8, cnt = 0;
	struct seg *v = ns_arena_calloc(a, cap, sizeof(*v));
	struct ns_strbuf lit;
	ns_strbuf_init(&lit);
	const char *p = msg;
	struct ns_err *err = NULL;
	while (v) {
		bool flush = !*p;
		const char *expr = NULL;
		size_t elen = 0;
		if (*p == '{' && p[1] == '{') {
			ns_strbuf_putc(&lit, '{');
			p += 2;
			continue;
		}
		if (*p == '}' && p[1] == '}') {
			ns_strbuf_putc(&lit, '}');
			p += 2;
			continue;
		}
		if (*p == '{') {
			const char *end = strchr(p + 1, '}');
			if (!end) {
				err = ns_err_at(NS_ERR_SYNTAX, (int)(p - msg) + 1,
				                "'{' at column %d has no closing '}'",
				                (int)(p - msg) + 1);
				break;
			}
			expr = p + 1;
			elen = (size_t)(end - expr);
			p = end + 1;
			flush = true;
		} else if (*p) {
			ns_strbuf_putc(&lit, *p++);
		}
		if (!flush)
			continue;
		if (cnt + 2 > cap) {
			struct seg *nv = ns_arena_calloc(a, cap * 2, sizeof(*nv));
			if (!nv) {
				v = NULL;
				break;
			}
			memcpy(nv, v, cnt * sizeof(*v));
			v = nv;
			cap *= 2;
		}
		if (lit.len) {
			v[cnt].text = ns_arena_strdup(a, ns_strbuf_str(&lit));
			v[cnt++].is_expr = false;
			ns_strbuf_reset(&lit);
		}
		if (expr) {
			v[cnt].text = ns_arena_strndup(a, expr, elen);
			v[cnt++].is_expr = true;
		}
		if (!*p && !expr)
			break;
	}
	ns_strbuf_deinit(&lit);
	if (err)
		return err;
	if (!v)
		return &ns_err_nomem;
	*out = v;
	*n = cnt;
	return NULL;
}

static struct ns_err *parse_hit_condition(const char *hc, enum ns_rsp_hit_mode *mode, uint64_t *n)
{
	while (*hc == ' ')
		hc++;
	enum ns_rsp_hit_mode m = NS_RSP_HIT_EQ;
	bool gt = false;
	if (strncmp(hc, ">=", 2) == 0) {
		m = NS_RSP_HIT_GE;
		hc += 2;
	} else if (strncmp(hc, "==", 2) == 0) {
		hc += 2;
	} else if (*hc == '>') {
		m = NS_RSP_HIT_GE;
		gt = true;
		hc++;
	} else if (*hc == '%') {
		m = NS_RSP_HIT_MOD;
		hc++;
	}
	while (*hc == ' ')
		hc++;
	char *end;
	unsigned long long v = strtoull(hc, &end, 10);
	while (*end == ' ')
		end++;
	if (end == hc || *end || v == 0)
		return ns_err_create(NS_ERR_SYNTAX,
		                     "hit condition '%s' is not one of N, == N, >= N, > N, %% N "
		                     "(N a positive integer)",
		                     hc);
	*mode = m;
	*n = gt ? v + 1 : v;
	return NULL;
}

static char *err_text(struct ns_err *err, const char *what, const char *src)
{
	char *m = NULL;
	int rc;
	if (err->column > 0)
		rc = asprintf(&m, "%s '%s': %s (column %d)", what, src, err->msg, err->column);
	else
		rc = asprintf(&m, "%s '%s': %s", what, src, err->msg);
	return rc < 0 ? NULL : m;
}

static struct ns_err *add_action(struct ns_rsp_tracepoint *tp, size_t *cap,
                                 struct ns_rsp_action act)
{
	if (tp->nactions == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		struct ns_rsp_action *nv = realloc(tp->actions, nc * sizeof(*nv));
		if (!nv)
			return &ns_err_nomem;
		tp->actions = nv;
		*cap = nc;
	}
	tp->actions[tp->nactions++] = act;
	return NULL;
}

static uint8_t *dup_code(const uint8_t *code, size_t len)
{
	uint8_t *c = malloc(len ? len : 1);
	if (c)
		memcpy(c, code, len);
	return c;
}

/* Compile everything for one location and send the QTDP packets. On error returns the
 * message for the Breakpoint (malloc'd) and nothing is installed. */
static char *install_loc(struct session *s, struct bp *b, struct tp_loc *l, const cJSON *jbp)
{
	const char *cond = ns_dap_get_str(jbp, "condition", NULL);
	const char *hitc = ns_dap_get_str(jbp, "hitCondition", NULL);
	const char *logm = ns_dap_get_str(jbp, "logMessage", NULL);
	struct ns_arena *a = &b->arena;
	struct ns_dwarf_scope locals;
	struct ns_expr_scope scope;
	struct ns_rsp_tracepoint tp = {.num = l->num, .addr = l->addr, .enabled = true};
	size_t cap = 0;
	char *msg = NULL;
	struct ns_err *err = session_scope(s, l->addr, a, &locals, &scope);
	if (err)
		goto fail_err;
	// The function's ranges let the agent check that no jump lands inside the bytes a
	// jump pad would displace (":R", docs/rsp-extensions.md).
	struct module *mod = module_for_pc(s, l->addr);
	struct ns_dwarf *mdw = mod ? module_dwarf(s, mod) : NULL;
	if (mdw) {
		uint64_t bias = module_bias(mod);
		tp.nranges = ns_dwarf_func_ranges(mdw, l->addr - bias, tp.ranges,
		                                  sizeof(tp.ranges) / sizeof(tp.ranges[0]) / 2);
		for (size_t i = 0; i < 2 * tp.nranges; i++)
			tp.ranges[i] += bias;
	}
	if (cond && *cond) {
		struct ns_expr_prog cp;
		err = ns_expr_compile(cond, &scope, NS_EXPR_CONDITION, a, &cp);
		if (err) {
			msg = err_text(err, "condition", cond);
			goto fail;
		}
		tp.cond = dup_code(cp.code, cp.len);
		tp.cond_len = cp.len;
	}
	if (hitc && *hitc) {
		err = parse_hit_condition(hitc, &tp.hit_mode, &tp.hit_n);
		if (err)
			goto fail_err;
	}
	// A snapshot collects every register (the stack view unwinds from them); a
	// logpoint only those its expressions read (a smaller frame for every hit).
	uint64_t regmask = b->is_log ? 0 : ~0ULL;
	if (b->is_log) {
		err = split_message(logm, a, &l->segs, &l->nsegs);
		if (err) {
			msg = err_text(err, "logMessage", logm);
			goto fail;
		}
		for (size_t i = 0; i < l->nsegs; i++) {
			struct seg *sg = &l->segs[i];
			if (!sg->is_expr)
				continue;
			struct ns_expr_prog cp;
			err = ns_expr_compile(sg->text, &scope, 0, a, &sg->prog);
			if (!err)
				err = ns_expr_compile(sg->text, &scope, NS_EXPR_COLLECT, a, &cp);
			if (err) {
				msg = err_text(err, "logMessage expression", sg->text);
				goto fail;
			}
			regmask |= ns_ax_reg_mask(sg->prog.code, sg->prog.len) |
			           ns_ax_reg_mask(cp.code, cp.len);
			err = add_action(&tp, &cap,
			                 (struct ns_rsp_action){.kind = NS_RSP_ACT_EXPR,
			                                        .code = dup_code(cp.code, cp.len),
			                                        .code_len = cp.len});
			if (err)
				goto fail_err;
		}
		if (regmask >> NS_FRAME_NREGS) // a register the frame format has no slot for
			regmask = ~0ULL;
	} else {
		tp.max_frames = SNAPSHOT_LIMIT;
		err = add_action(
		        &tp, &cap,
		        (struct ns_rsp_action){.kind = NS_RSP_ACT_MEM,
		                               .basereg = NS_REG_RSP,
		                               .offset = -SNAPSHOT_RED_ZONE,
		                               .len = SNAPSHOT_STACK_BYTES + SNAPSHOT_RED_ZONE});
		if (err)
			goto fail_err;
		for (size_t i = 0; i < locals.nvars; i++) {
			uint8_t *code;
			size_t len;
			struct ns_err *e2 = ns_expr_compile_collect_var(
			        &locals.vars[i], &scope, SNAPSHOT_DEPTH, SNAPSHOT_STRING_MAX,
			        SNAPSHOT_VAR_BUDGET, a, &code, &len);
			if (e2) {
				ns_err_destroy(e2); // optimized out: nothing to collect
				continue;
			}
			err = add_action(&tp, &cap,
			                 (struct ns_rsp_action){.kind = NS_RSP_ACT_EXPR,
			                                        .code = dup_code(code, len),
			                                        .code_len = len});
			if (err)
				goto fail_err;
		}
	}
	if (regmask &&
	    (err = add_action(&tp, &cap,
	                      (struct ns_rsp_action){.kind = NS_RSP_ACT_REGS, .regmask = regmask})))
		goto fail_err;
	char **pk = NULL;
	size_t npk = 0;
	err = ns_rsp_tp_encode(&tp, 3800, &pk, &npk);
	if (err)
		goto fail_err;
	for (size_t i = 0; i < npk && !msg; i++) {
		struct ns_rsp_packet rep;
		err = target_request(&s->tgt, pk[i], &rep);
		if (err)
			break;
		if (strcmp(rep.data, "OK") != 0) {
			if (asprintf(&msg, "the target refused the tracepoint: %s",
			             strncmp(rep.data, "E.", 2) == 0 ? rep.data + 2 : rep.data) < 0)
				msg = NULL;
		}
	}
	ns_rsp_free_packets(pk, npk);
	if (err)
		goto fail_err;
	if (msg)
		goto fail;
	l->installed = true;
	ns_rsp_tp_deinit(&tp);
	return NULL;
fail_err:
	msg = strdup(err->msg);
fail:
	ns_err_destroy(err);
	ns_rsp_tp_deinit(&tp);
	return msg ? msg : strdup("cannot set breakpoint");
}

static cJSON *bp_json(const struct bp *b)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "id", b->id);
	cJSON_AddBoolToObject(o, "verified", b->verified);
	cJSON_AddNumberToObject(o, "line", b->line ? b->line : b->req_line);
	if (b->message)
		cJSON_AddStringToObject(o, "message", b->message);
	cJSON *src = cJSON_AddObjectToObject(o, "source");
	const char *base = strrchr(b->source, '/');
	cJSON_AddStringToObject(src, "name", base ? base + 1 : b->source);
	cJSON_AddStringToObject(src, "path", b->source);
	return o;
}

/* Where @path:@line's tracepoints go in every module (the executable and the shared
 * objects) whose line tables know the file; runtime addresses. The first module that
 * has the line decides the resolved line. */
static struct ns_err *resolve_lines(struct session *s, const char *path, unsigned line,
                                    struct ns_arena *a, struct ns_dwarf_bp_lines *out)
{
	struct ns_err *best = NULL;
	size_t n = 0, cap = 0;
	struct ns_dwarf_bp_loc *locs = NULL;
	unsigned resolved = 0;
	for (size_t mi = 0; mi < module_count(s); mi++) {
		struct module *m = module_at(s, mi);
		struct ns_dwarf *dw = module_dwarf(s, m);
		if (!dw)
			continue;
		struct ns_dwarf_bp_lines lines;
		struct ns_err *err = ns_dwarf_breakpoint_addrs(dw, path, line, a, &lines);
		if (err) {
			// Keep the most telling error: "line N has no code" beats "no file".
			if (!best || (strncmp(best->msg, "no file", 7) == 0 &&
			              strncmp(err->msg, "no file", 7) != 0)) {
				ns_err_destroy(best);
				best = err;
			} else {
				ns_err_destroy(err);
			}
			continue;
		}
		if (!resolved)
			resolved = lines.line;
		else if (lines.line != resolved)
			continue;
		if (n + lines.n > cap) {
			size_t nc = (n + lines.n) * 2;
			struct ns_dwarf_bp_loc *nv = ns_arena_calloc(a, nc, sizeof(*nv));
			if (!nv) {
				ns_err_destroy(best);
				return &ns_err_nomem;
			}
			if (n)
				memcpy(nv, locs, n * sizeof(*nv));
			locs = nv;
			cap = nc;
		}
		for (size_t i = 0; i < lines.n; i++) {
			locs[n] = lines.locs[i];
			locs[n++].addr += module_bias(m);
		}
		out->file = lines.file;
	}
	if (!n)
		return best ? best
		            : ns_err_create(NS_ERR_NOT_FOUND, "no file %s in the program", path);
	ns_err_destroy(best);
	out->line = resolved;
	out->n = n;
	out->locs = locs;
	return NULL;
}

/* "in-process trap tier (int3)" or "ptrace tier: <why>", from the stub (qNsTPInfo,
 * docs/rsp-extensions.md) for the first installed location; NULL if unknown. */
static char *tier_text(struct session *s, struct bp *b)
{
	for (size_t i = 0; i < b->nlocs; i++) {
		if (!b->locs[i].installed)
			continue;
		char req[48];
		snprintf(req, sizeof(req), "qNsTPInfo:%x", b->locs[i].num);
		struct ns_rsp_packet rep;
		struct ns_err *err = target_request(&s->tgt, req, &rep);
		if (err) {
			ns_err_destroy(err);
			return NULL;
		}
		const char *r = strstr(rep.data, "reason=");
		if (!r)
			return NULL;
		r += 7;
		size_t hl = strcspn(r, ";");
		char *text = calloc(1, hl / 2 + 1);
		if (text && (hl % 2 || ns_hex_decode(r, hl, text) != 0)) {
			free(text);
			text = NULL;
		}
		return text;
	}
	return NULL;
}

static struct bp *create_bp(struct session *s, const char *path, const cJSON *jbp)
{
	struct bp *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	ns_arena_init(&b->arena);
	b->id = ++s->next_bp_id;
	b->source = strdup(path);
	b->req_line = (unsigned)ns_dap_get_int(jbp, "line", 0);
	const char *logm = ns_dap_get_str(jbp, "logMessage", NULL);
	b->is_log = logm != NULL;
	if (!s->dw) {
		b->message = strdup("no program is being debugged yet");
		return b;
	}
	struct ns_dwarf_bp_lines lines;
	struct ns_err *err = resolve_lines(s, path, b->req_line, &b->arena, &lines);
	if (err && err->code == NS_ERR_NOT_FOUND) {
		// Perhaps in a library loaded since the map was read (dlopen).
		ns_err_destroy(err);
		modules_reload_map(s);
		err = resolve_lines(s, path, b->req_line, &b->arena, &lines);
	}
	if (err) {
		b->message = strdup(err->msg);
		ns_err_destroy(err);
		return b;
	}
	b->line = lines.line;
	b->locs = calloc(lines.n ? lines.n : 1, sizeof(*b->locs));
	if (!b->locs) {
		b->message = strdup("out of memory");
		return b;
	}
	b->nlocs = lines.n;
	struct ns_strbuf why;
	ns_strbuf_init(&why);
	size_t ok = 0;
	for (size_t i = 0; i < lines.n; i++) {
		struct tp_loc *l = &b->locs[i];
		l->num = ++s->next_tp_num;
		l->addr = lines.locs[i].addr; // runtime: resolve_lines added the bias
		char *m = s->tgt.rsp ? install_loc(s, b, l, jbp)
		                     : strdup("not connected to the target");
		if (m) {
			if (!why.len)
				ns_strbuf_puts(&why, m);
			free(m);
		} else {
			ok++;
		}
	}
	b->verified = ok > 0;
	if (!b->verified) {
		b->message = strdup(why.len ? ns_strbuf_str(&why) : "no code at this line");
	} else {
		// Say where it runs (tier) and, if so, that the line moved.
		struct ns_strbuf msg;
		ns_strbuf_init(&msg);
		if (b->line != b->req_line)
			ns_strbuf_printf(&msg, "moved to line %u, the next line with code",
			                 b->line);
		char *tier = tier_text(s, b);
		if (tier)
			ns_strbuf_printf(&msg, "%s%s", msg.len ? "; " : "", tier);
		free(tier);
		if (ok < lines.n)
			ns_strbuf_printf(&msg, "%s%zu of %zu locations could not be set: %s",
			                 msg.len ? "; " : "", lines.n - ok, lines.n,
			                 ns_strbuf_str(&why));
		if (msg.len)
			b->message = ns_strbuf_steal(&msg);
		ns_strbuf_deinit(&msg);
	}
	ns_strbuf_deinit(&why);
	return b;
}

void bp_set_breakpoints(struct session *s, const cJSON *req, const cJSON *args)
{
	const cJSON *src = ns_dap_get_obj(args, "source");
	const char *path = src ? ns_dap_get_str(src, "path", NULL) : NULL;
	const cJSON *jbps = cJSON_GetObjectItemCaseSensitive(args, "breakpoints");
	if (!path || (jbps && !cJSON_IsArray(jbps))) {
		struct ns_err *err = ns_dap_send_error(
		        s->dap, req, 2,
		        "setBreakpoints: needs 'source.path' and 'breakpoints' as an array");
		ns_err_destroy(err);
		return;
	}
	// Replace every breakpoint of this source (DAP semantics).
	struct bp **pp = &s->bps;
	while (*pp) {
		if (strcmp((*pp)->source, path) == 0) {
			struct bp *dead = *pp;
			*pp = dead->next;
			bp_free(s, dead);
		} else {
			pp = &(*pp)->next;
		}
	}
	cJSON *body = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(body, "breakpoints");
	const cJSON *jbp;
	cJSON_ArrayForEach(jbp, jbps)
	{
		struct bp *b = cJSON_IsObject(jbp) ? create_bp(s, path, jbp) : NULL;
		if (!b) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddBoolToObject(o, "verified", false);
			cJSON_AddStringToObject(o, "message", "malformed breakpoint");
			cJSON_AddItemToArray(arr, o);
			continue;
		}
		b->next = s->bps;
		s->bps = b;
		cJSON_AddItemToArray(arr, bp_json(b));
	}
	session_send(s, ns_dap_response(req, true, NULL, body));
}

static void report_condition_error(struct session *s, struct bp *b, const struct ns_frame *f)
{
	if (b->cond_error_reported)
		return;
	b->cond_error_reported = true;
	free(b->message);
	b->message = NULL;
	if (asprintf(&b->message,
	             "the condition could not be evaluated and counts as false: %s at 0x%" PRIx64,
	             ns_ax_status_name((enum ns_ax_status)f->hdr.status), f->hdr.fault_addr) < 0)
		b->message = NULL;
	cJSON *body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "reason", "changed");
	cJSON_AddItemToObject(body, "breakpoint", bp_json(b));
	session_event(s, "breakpoint", body);
}

static bool is_condition_error(const struct ns_frame *f)
{
	size_t it = 0;
	struct ns_frame_block blk;
	const uint8_t *payload;
	while (ns_frame_next_block(f, &it, &blk, &payload))
		if (blk.type == NS_FRAME_BLOCK_ERR && blk.addr == 0xffffffffu)
			return true;
	return false;
}

static void emit_logpoint(struct session *s, struct bp *b, struct tp_loc *l,
                          const struct ns_frame *f)
{
	struct ns_arena a;
	ns_arena_init(&a);
	struct frame_mem fm = {.s = s, .frame = f};
	struct value_ctx vc = {.read = session_frame_read, .ctx = &fm, .arena = &a};
	struct ns_strbuf out;
	ns_strbuf_init(&out);
	for (size_t i = 0; i < l->nsegs; i++) {
		const struct seg *sg = &l->segs[i];
		if (!sg->is_expr) {
			ns_strbuf_puts(&out, sg->text);
			continue;
		}
		uint64_t r;
		struct ns_err *err = session_eval(s, &sg->prog, f, NULL, &r);
		if (err) {
			ns_strbuf_printf(&out, "<error: %s>", err->msg);
			ns_err_destroy(err);
			continue;
		}
		struct value v = value_from_result(&sg->prog, r);
		ns_strbuf_puts(&out, value_render(&vc, &v));
	}
	ns_strbuf_putc(&out, '\n');
	cJSON *body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "category", "console");
	cJSON_AddStringToObject(body, "output", ns_strbuf_str(&out));
	cJSON *src = cJSON_AddObjectToObject(body, "source");
	const char *base = strrchr(b->source, '/');
	cJSON_AddStringToObject(src, "name", base ? base + 1 : b->source);
	cJSON_AddStringToObject(src, "path", b->source);
	cJSON_AddNumberToObject(body, "line", b->line);
	session_event(s, "output", body);
	ns_strbuf_deinit(&out);
	ns_arena_deinit(&a);
}

void bp_on_frame(struct session *s, const void *data, size_t len)
{
	struct ns_frame f;
	struct ns_err *err = ns_frame_parse(data, len, &f);
	if (err) {
		ns_log(NS_LOG_WARN, "dropping a corrupt frame: %s", err->msg);
		ns_err_destroy(err);
		return;
	}
	struct bp *b = bp_by_tp(s, f.hdr.tp_id);
	if (!b)
		return; // a frame of a breakpoint removed since
	struct tp_loc *l = loc_by_tp(b, f.hdr.tp_id);
	if (is_condition_error(&f)) {
		report_condition_error(s, b, &f);
		return;
	}
	if (b->is_log)
		emit_logpoint(s, b, l, &f);
	else if (!b->disarmed)
		snap_add(s, b, data, len);
}
