/* The packets nonstop-stub serves (GDB manual, "Packets", "General Query Packets",
 * "Tracepoint Packets", "Remote Non-Stop") and the nonstop frame-push extension
 * (docs/rsp-extensions.md). */
#define _GNU_SOURCE
#include "stub/stub.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "ax/ax.h"
#include "base/log.h"
#include "base/mem.h"

enum { MAX_MEM_READ = 0x8000 };

static bool prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

static void reply_err(struct ns_strbuf *r, struct ns_err *err)
{
	ns_strbuf_reset(r);
	ns_strbuf_printf(r, "E.%s", err->msg);
	ns_err_destroy(err);
}

/* gdb stops one thread "for a moment" when it notices a running inferior in non-stop
 * mode (infcmd.c, notice_new_inferior), then resumes it. nonstop cannot stop threads,
 * so it reports a stop with signal 0 that never happened: the thread's registers
 * read as unavailable, which gdb tolerates, and its vCont;c is a no-op. */
static void vcont_stop(struct ns_stub *s, const char *p, struct ns_strbuf *r)
{
	if (!s->nonstop || s->exited) {
		ns_strbuf_puts(r, "E.nonstop never stops the program");
		return;
	}
	uint64_t tid = 0;
	const char *dot = strchr(p, '.');
	bool all = !dot || dot[1] == '-';
	if (!all && (dot++, ns_rsp_parse_hex(&dot, &tid) < 0))
		all = true;
	struct ns_strbuf tl;
	ns_strbuf_init(&tl);
	if (all && ns_stub__threads(s, &tl)) {
		// "p<pid>.<tid>,..."
		for (const char *q = tl.buf; q && (q = strchr(q, '.'));) {
			q++;
			uint64_t t;
			if (ns_rsp_parse_hex(&q, &t) == 0 && s->nstops < 64)
				s->stops[s->nstops++] = (uint32_t)t;
		}
	} else if (!all && s->nstops < 64) {
		s->stops[s->nstops++] = (uint32_t)tid;
	}
	ns_strbuf_deinit(&tl);
	ns_strbuf_puts(r, "OK");
}

static void next_stop(struct ns_stub *s, struct ns_strbuf *r)
{
	ns_strbuf_printf(r, "T00thread:p%x.%x;", s->pid, s->stops[0]);
	memmove(s->stops, s->stops + 1, --s->nstops * sizeof(s->stops[0]));
}

/* ---- tracepoints ---- */

static struct ns_stub_tp *find_tp(struct ns_stub *s, uint32_t num, uint64_t addr)
{
	for (size_t i = 0; i < s->ntps; i++)
		if (s->tps[i].tp.num == num && s->tps[i].tp.addr == addr)
			return &s->tps[i];
	return NULL;
}

void ns_stub__clear_tracepoints(struct ns_stub *s)
{
	for (size_t i = 0; i < s->ntps; i++)
		ns_rsp_tp_deinit(&s->tps[i].tp);
	free(s->tps);
	s->tps = NULL;
	s->ntps = 0;
	if (s->pending_active)
		ns_rsp_tp_deinit(&s->pending);
	s->pending_active = false;
}

static struct ns_err *remove_all(struct ns_stub *s)
{
	for (size_t i = 0; i < s->ntps; i++)
		s->tps[i].installed = false;
	if ((s->ctl_fd < 0 && !s->pt) || s->exited)
		return NULL; // nothing is patched in a program that is gone
	return ns_stub__agent_remove_all(s);
}

static struct ns_err *install(struct ns_stub *s, struct ns_stub_tp *t)
{
	t->tier = 0;
	t->tier_msg[0] = 0;
	struct ns_err *err =
	        ns_stub__agent_install_tier(s, &t->tp, &t->tier, t->tier_msg, sizeof(t->tier_msg));
	if (err)
		return ns_err_wrap(err, "tracepoint %u at 0x%" PRIx64, t->tp.num, t->tp.addr);
	t->installed = true;
	return NULL;
}

/* REMOVE works on a tracepoint number, which covers all its locations: put back the
 * locations that should stay. */
static struct ns_err *uninstall(struct ns_stub *s, struct ns_stub_tp *t)
{
	uint32_t num = t->tp.num;
	struct ns_err *err = ns_stub__agent_remove(s, num);
	if (err)
		return err;
	for (size_t i = 0; i < s->ntps; i++) {
		struct ns_stub_tp *o = &s->tps[i];
		if (o->tp.num != num || !o->installed)
			continue;
		o->installed = false;
		if (o != t && !err)
			err = install(s, o);
	}
	return err;
}

static struct ns_err *verify(const uint8_t *code, size_t len, const char *what)
{
	struct ns_err *err = ns_ax_verify(code, len, NULL);
	return err ? ns_err_wrap(err, "%s", what) : NULL;
}

static void qtdp(struct ns_stub *s, const char *pkt, struct ns_strbuf *r)
{
	bool is_def = pkt[5] != '-';
	if (is_def && s->pending_active) {
		ns_rsp_tp_deinit(&s->pending);
		s->pending_active = false;
	}
	if (!is_def && !s->pending_active) {
		ns_strbuf_puts(r, "E.QTDP actions without a tracepoint definition");
		return;
	}
	size_t first = is_def ? 0 : s->pending.nactions;
	bool more = false;
	struct ns_err *err = ns_rsp_tp_parse(pkt, &s->pending, &more);
	if (!err) {
		s->pending_active = true;
		if (is_def && s->pending.cond)
			err = verify(s->pending.cond, s->pending.cond_len, "condition");
		for (size_t i = first; !err && i < s->pending.nactions; i++) {
			struct ns_rsp_action *a = &s->pending.actions[i];
			if (a->kind == NS_RSP_ACT_EXPR)
				err = verify(a->code, a->code_len, "action");
		}
	}
	if (err) {
		if (s->pending_active)
			ns_rsp_tp_deinit(&s->pending);
		s->pending_active = false;
		reply_err(r, err);
		return;
	}
	if (more) {
		ns_strbuf_puts(r, "OK");
		return;
	}
	// The definition is complete.
	s->pending_active = false;
	struct ns_stub_tp *t = find_tp(s, s->pending.num, s->pending.addr);
	if (t) {
		if (t->installed)
			err = uninstall(s, t);
		ns_err_destroy(err);
		err = NULL;
		ns_rsp_tp_deinit(&t->tp);
	} else {
		struct ns_stub_tp *n = realloc(s->tps, (s->ntps + 1) * sizeof(*n));
		if (!n) {
			ns_rsp_tp_deinit(&s->pending);
			ns_strbuf_puts(r, "E.out of memory");
			return;
		}
		s->tps = n;
		t = &s->tps[s->ntps++];
	}
	memset(t, 0, sizeof(*t));
	t->tp = s->pending;
	memset(&s->pending, 0, sizeof(s->pending));
	if (s->running && t->tp.enabled) {
		err = install(s, t);
		if (err) {
			reply_err(r, err);
			return;
		}
	}
	ns_strbuf_puts(r, "OK");
}

static void qtstart(struct ns_stub *s, struct ns_strbuf *r)
{
	struct ns_err *first = NULL;
	for (size_t i = 0; i < s->ntps; i++) {
		struct ns_stub_tp *t = &s->tps[i];
		if (!t->tp.enabled || t->installed)
			continue;
		struct ns_err *err = install(s, t);
		if (err && !first)
			first = err;
		else
			ns_err_destroy(err);
	}
	s->running = s->ever_run = true;
	if (first)
		reply_err(r, first);
	else
		ns_strbuf_puts(r, "OK");
}

/* QTEnable:n:addr / QTDisable:n:addr */
static void qtenable(struct ns_stub *s, const char *p, bool enable, struct ns_strbuf *r)
{
	uint64_t num, addr;
	if (ns_rsp_parse_hex(&p, &num) < 0 || *p++ != ':' || ns_rsp_parse_hex(&p, &addr) < 0) {
		ns_strbuf_puts(r, "E.malformed QTEnable/QTDisable");
		return;
	}
	struct ns_stub_tp *t = find_tp(s, (uint32_t)num, addr);
	if (!t) {
		ns_strbuf_puts(r, "E.no such tracepoint");
		return;
	}
	t->tp.enabled = enable;
	struct ns_err *err = NULL;
	if (s->running && enable && !t->installed)
		err = install(s, t);
	else if (!enable && t->installed)
		err = uninstall(s, t);
	if (err)
		reply_err(r, err);
	else
		ns_strbuf_puts(r, "OK");
}

static void qtstatus(struct ns_stub *s, struct ns_strbuf *r)
{
	ns_stub__new_drops(s);
	ns_strbuf_printf(r,
	                 "T%d;%s;tframes:%zx;tcreated:%" PRIx64 ";tsize:%zx;tfree:%zx;"
	                 "circular:0;disconn:0;ns_dropped:%" PRIx64 ";ns_tier:%s",
	                 s->running ? 1 : 0, s->running || !s->ever_run ? "tnotrun:0" : "tstop:0",
	                 s->frames.count, s->fcreated, s->frames.bytes,
	                 (size_t)NS_STUB_QUEUE_BYTES - s->frames.bytes,
	                 s->drops_total, s->pt ? "ptrace" : "trap");
	// Reads of program memory at hits that needed a system call (the agent's slow
	// path: docs/jump-pads.md, "Reading the program's memory").
	if (s->shm)
		ns_strbuf_printf(
		        r, ";ns_kreads:%" PRIx64 ";ns_pfaults:%" PRIx64 ";ns_msigs:%" PRIx64,
		        (uint64_t)atomic_load_explicit(&s->shm->kernel_reads, memory_order_relaxed),
		        (uint64_t)atomic_load_explicit(&s->shm->probe_faults, memory_order_relaxed),
		        (uint64_t)atomic_load_explicit(&s->shm->move_signals,
		                                       memory_order_relaxed));
}

/* qTP:n:addr -> V<hits>:<bytes used> */
static void qtp(struct ns_stub *s, const char *p, struct ns_strbuf *r)
{
	uint64_t num, addr;
	if (ns_rsp_parse_hex(&p, &num) < 0 || *p++ != ':' || ns_rsp_parse_hex(&p, &addr) < 0)
		return;
	struct ns_stub_tp *t = find_tp(s, (uint32_t)num, addr);
	if (t)
		ns_strbuf_printf(r, "V%" PRIx64 ":0", t->hits);
}

/* qNsTPInfo:n -> tier=<jump|trap|ptrace|none>;reason=<hex text>: where tracepoint n runs
 * (jump only if every installed location of n runs in the jump-pad tier; otherwise the
 * first int3 location's reason). */
static void qnstpinfo(struct ns_stub *s, const char *p, struct ns_strbuf *r)
{
	uint64_t num;
	if (ns_rsp_parse_hex(&p, &num) < 0 || *p) {
		ns_strbuf_puts(r, "E.malformed qNsTPInfo");
		return;
	}
	bool known = false;
	const struct ns_stub_tp *trap_loc = NULL, *jump_loc = NULL;
	for (size_t i = 0; i < s->ntps; i++) {
		const struct ns_stub_tp *t = &s->tps[i];
		if (t->tp.num != num)
			continue;
		known = true;
		if (!t->installed || !t->tier_msg[0])
			continue;
		if (t->tier == NS_AGENT_TIER_JUMP) {
			if (!jump_loc)
				jump_loc = t;
		} else if (!trap_loc) {
			trap_loc = t;
		}
	}
	if (!known) {
		ns_strbuf_puts(r, "E.no such tracepoint");
		return;
	}
	char reason[320];
	const char *tier;
	if (s->pt) {
		tier = "ptrace";
		snprintf(reason, sizeof(reason), "ptrace tier: %s", s->tier_reason);
	} else if (jump_loc && !trap_loc) {
		tier = "jump";
		snprintf(reason, sizeof(reason), "%s", jump_loc->tier_msg);
	} else if (trap_loc) {
		tier = "trap";
		snprintf(reason, sizeof(reason), "%s", trap_loc->tier_msg);
	} else if (s->ctl_fd >= 0 || s->agent_hello) {
		tier = "trap";
		snprintf(reason, sizeof(reason), "in-process trap tier (int3)");
	} else {
		tier = "none";
		snprintf(reason, sizeof(reason),
		         "no tier: the agent is not running in the program");
	}
	ns_strbuf_printf(r, "tier=%s;reason=", tier);
	ns_strbuf_hex(r, reason, strlen(reason));
}

/* ---- frame push ---- */

static void exit_item(struct ns_stub *s, struct ns_strbuf *r)
{
	if (s->exit_unknown)
		ns_strbuf_puts(r, "X0"); // an attached program's status could not be read
	else if (WIFSIGNALED(s->wstatus))
		ns_strbuf_printf(r, "X%x", WTERMSIG(s->wstatus));
	else
		ns_strbuf_printf(r, "W%x", WEXITSTATUS(s->wstatus));
}

static void qnsframes(struct ns_stub *s, struct ns_strbuf *r)
{
	uint64_t drops = ns_stub__new_drops(s);
	if (drops) {
		ns_strbuf_printf(r, "L%" PRIx64, drops);
		s->drops_reported += drops;
	}
	size_t n;
	const uint8_t *f;
	// The batch counts payload bytes (before the framing's escapes): hex doubles a frame.
	size_t per_byte = s->frame_binary ? 1 : 2;
	while ((f = ns_stub__queue_front(&s->frames, &n))) {
		// Always at least one frame per reply, else stop near the batch size.
		if (r->len && r->len + 20 + per_byte * n > NS_STUB_BATCH_BYTES)
			break;
		ns_rsp_frames_put(r, f, n, s->frame_binary);
		ns_stub__queue_pop(&s->frames);
	}
	if (!s->frames.count && s->exited && !s->exit_reported) {
		if (r->len)
			ns_strbuf_putc(r, ';');
		exit_item(s, r);
		s->exit_reported = true;
	}
	if (r->len == 0) {
		ns_strbuf_puts(r, "OK");
		s->notify_outstanding = false;
	}
}

void ns_stub__maybe_notify(struct ns_stub *s)
{
	if (!s->conn)
		return;
	struct ns_err *err = NULL;
	if (s->nonstop && s->nstops && !s->stop_outstanding) {
		struct ns_strbuf r;
		ns_strbuf_init(&r);
		ns_strbuf_puts(&r, "Stop:");
		next_stop(s, &r);
		err = ns_rsp_notify(s->conn, r.buf, r.len);
		s->stop_outstanding = true;
		ns_strbuf_deinit(&r);
		if (err) {
			ns_log(NS_LOG_WARN, "notification: %s", err->msg);
			ns_err_destroy(err);
			err = NULL;
		}
	}
	if (s->frame_push) {
		if (s->notify_outstanding)
			return;
		if (!s->frames.count && !ns_stub__new_drops(s) && !(s->exited && !s->exit_reported))
			return;
		char buf[64];
		int n = snprintf(buf, sizeof(buf), "NsFrames:%zx", s->frames.count);
		err = ns_rsp_notify(s->conn, buf, (size_t)n);
		s->notify_outstanding = true;
	} else if (s->exited && !s->exit_reported) {
		// A stock gdb learns about the exit the standard way.
		struct ns_strbuf r;
		ns_strbuf_init(&r);
		if (s->nonstop)
			ns_strbuf_puts(&r, "Stop:");
		exit_item(s, &r);
		ns_strbuf_printf(&r, ";process:%x", s->pid);
		if (s->nonstop)
			err = ns_rsp_notify(s->conn, r.buf, r.len);
		else if (s->allstop_waiting)
			err = ns_rsp_send(s->conn, r.buf, r.len);
		if (s->nonstop || s->allstop_waiting)
			s->exit_reported = true;
		s->allstop_waiting = false;
		ns_strbuf_deinit(&r);
	}
	if (err) {
		ns_log(NS_LOG_WARN, "notification: %s", err->msg);
		ns_err_destroy(err);
	}
}

void ns_stub__client_gone(struct ns_stub *s)
{
	struct ns_err *err = remove_all(s);
	if (err) {
		ns_log(NS_LOG_WARN, "removing tracepoints: %s", err->msg);
		ns_err_destroy(err);
	}
	ns_stub__clear_tracepoints(s);
	s->running = false;
	ns_stub__agent_resume(s);
	ns_stub__free_frames(s);
	ns_stub__new_drops(s);
	s->drops_reported = s->drops_total;
	ns_rsp_conn_destroy(s->conn);
	s->conn = NULL;
	s->frame_push = s->frame_binary = s->notify_outstanding = s->nonstop = false;
	s->allstop_waiting = false;
	s->nstops = 0;
	s->stop_outstanding = false;
	ns_strbuf_reset(&s->maps);
}

/* ---- general packets ---- */

static void qsupported(struct ns_stub *s, const char *p, struct ns_strbuf *r)
{
	// The client's features follow "qSupported:", separated by ';'.
	s->frame_push = s->frame_binary = false;
	const char *f = strchr(p, ':');
	while (f) {
		f++;
		size_t n = strcspn(f, ";");
		if (n == strlen("NsFramePush+") && strncmp(f, "NsFramePush+", n) == 0)
			s->frame_push = true;
		if (n == strlen("NsFrameBinary+") && strncmp(f, "NsFrameBinary+", n) == 0)
			s->frame_binary = true;
		f = f[n] ? f + n : NULL;
	}
	ns_strbuf_printf(
	        r,
	        "PacketSize=%x;QStartNoAckMode+;QNonStop+;multiprocess+;"
	        "qXfer:exec-file:read+;qXfer:nonstop-maps:read+;qXfer:auxv:read+;InstallInTrace+;"
	        "EnableDisableTracepoints+;QTBuffer:size+;NsFramePush+;NsFrameBinary+",
	        NS_STUB_PACKET_SIZE);
}

static void read_mem(struct ns_stub *s, const char *p, struct ns_strbuf *r)
{
	uint64_t addr, len;
	if (ns_rsp_parse_hex(&p, &addr) < 0 || *p++ != ',' || ns_rsp_parse_hex(&p, &len) < 0) {
		ns_strbuf_puts(r, "E01");
		return;
	}
	if (len > MAX_MEM_READ)
		len = MAX_MEM_READ;
	uint8_t buf[MAX_MEM_READ];
	size_t got = s->exited ? 0 : ns_mem_read_pid(s->pid, buf, addr, (size_t)len);
	if (got == 0 && len > 0)
		ns_strbuf_puts(r, "E01");
	else
		ns_strbuf_hex(r, buf, got);
}

/* qXfer:<object>:read:<annex>:<off>,<len>; @p points after "read:". @procfile: serve
 * /proc/PID/<procfile> (re-read when offset 0 is asked for), else the exec-file path. */
static void xfer(struct ns_stub *s, const char *p, const char *procfile, struct ns_strbuf *r)
{
	const char *colon = strchr(p, ':');
	uint64_t off, len;
	if (!colon) {
		ns_strbuf_puts(r, "E00");
		return;
	}
	p = colon + 1;
	if (ns_rsp_parse_hex(&p, &off) < 0 || *p++ != ',' || ns_rsp_parse_hex(&p, &len) < 0) {
		ns_strbuf_puts(r, "E00");
		return;
	}
	if (!procfile) {
		ns_rsp_xfer_reply(r, s->exe, strlen(s->exe), off, len);
		return;
	}
	if (off == 0 || !s->maps.len) {
		ns_strbuf_reset(&s->maps);
		struct ns_err *err = s->exited ? ns_err_create(NS_ERR_NOT_FOUND, "program exited")
		                               : ns_stub__read_proc(s, procfile, &s->maps);
		if (err) {
			reply_err(r, err);
			return;
		}
	}
	ns_rsp_xfer_reply(r, s->maps.buf, s->maps.len, off, len);
}

static uint32_t main_tid(struct ns_stub *s)
{
	return (uint32_t)s->pid;
}

enum ns_stub_action ns_stub__handle_packet(struct ns_stub *s, const struct ns_rsp_packet *pkt)
{
	if (pkt->interrupt || pkt->notify)
		return NS_STUB_CONTINUE; // nonstop never stops the program
	const char *p = pkt->data;
	// The reply buffer is kept between packets (a frames batch is 64 KiB).
	struct ns_strbuf r = s->reply;
	ns_strbuf_recycle(&r, NS_STUB_REPLY_KEEP);
	enum ns_stub_action act = NS_STUB_CONTINUE;
	bool send = true;
	bool noack_after = false;

	if (prefix(p, "qSupported")) {
		qsupported(s, p, &r);
	} else if (!strcmp(p, "QStartNoAckMode")) {
		ns_strbuf_puts(&r, "OK");
		noack_after = true;
	} else if (!strcmp(p, "QNonStop:1") || !strcmp(p, "QNonStop:0")) {
		s->nonstop = p[9] == '1';
		ns_strbuf_puts(&r, "OK");
	} else if (!strcmp(p, "?")) {
		if (s->nonstop)
			ns_strbuf_puts(&r, "OK");
		else if (s->exited)
			exit_item(s, &r);
		else
			// All-stop clients need a stop reply; the thread keeps running.
			ns_strbuf_printf(&r, "T05thread:p%x.%x;", s->pid, main_tid(s));
	} else if (!strcmp(p, "qfThreadInfo")) {
		ns_strbuf_putc(&r, 'm');
		if (s->exited || !ns_stub__threads(s, &r)) {
			ns_strbuf_reset(&r);
			ns_strbuf_putc(&r, 'l');
		}
	} else if (!strcmp(p, "qsThreadInfo")) {
		ns_strbuf_putc(&r, 'l');
	} else if (prefix(p, "qAttached")) {
		ns_strbuf_putc(&r, s->attached ? '1' : '0');
	} else if (!strcmp(p, "qC")) {
		ns_strbuf_printf(&r, "QCp%x.%x", s->pid, main_tid(s));
	} else if (p[0] == 'H' && (p[1] == 'g' || p[1] == 'c')) {
		ns_strbuf_puts(&r, "OK");
	} else if (p[0] == 'T' && p[1] == 'p') {
		const char *q = strchr(p, '.');
		uint64_t tid = 0;
		bool alive = q && (q++, ns_rsp_parse_hex(&q, &tid) == 0) && !s->exited &&
		             ns_stub__tid_alive(s, (uint32_t)tid);
		ns_strbuf_puts(&r, alive ? "OK" : "E01");
	} else if (p[0] == 'm') {
		read_mem(s, p + 1, &r);
	} else if (!strcmp(p, "g")) {
		// Registers of a running thread are not available (GDB reads 'x' as
		// "unavailable"); captured registers come with trace frames instead.
		for (int i = 0; i < 8; i++)
			ns_strbuf_puts(&r, "xx");
	} else if (prefix(p, "qXfer:exec-file:read:")) {
		xfer(s, p + strlen("qXfer:exec-file:read:"), NULL, &r);
	} else if (prefix(p, "qXfer:nonstop-maps:read:")) {
		xfer(s, p + strlen("qXfer:nonstop-maps:read:"), "maps", &r);
	} else if (prefix(p, "qXfer:auxv:read:")) {
		// gdb relocates a PIE program with AT_ENTRY from the auxiliary vector.
		xfer(s, p + strlen("qXfer:auxv:read:"), "auxv", &r);
	} else if (!strcmp(p, "qNsDebugDirs")) {
		// Directories of separate debug files on this host, newline-separated, hex.
		for (size_t i = 0; i < s->ndebug_dirs; i++) {
			if (i)
				ns_strbuf_hex(&r, "\n", 1);
			ns_strbuf_hex(&r, s->debug_dirs[i], strlen(s->debug_dirs[i]));
		}
	} else if (!strcmp(p, "qNsBuildId")) {
		struct ns_err *err = ns_stub__build_id(s, &r);
		if (err) {
			ns_log(NS_LOG_INFO, "qNsBuildId: %s", err->msg);
			ns_err_destroy(err);
			ns_strbuf_reset(&r);
			ns_strbuf_puts(&r, "E01");
		}
	} else if (!strcmp(p, "QTinit")) {
		struct ns_err *err = remove_all(s);
		ns_stub__clear_tracepoints(s);
		s->running = false;
		if (err)
			reply_err(&r, err);
		else
			ns_strbuf_puts(&r, "OK");
	} else if (prefix(p, "QTDP:")) {
		qtdp(s, p, &r);
	} else if (!strcmp(p, "QTStart")) {
		qtstart(s, &r);
	} else if (!strcmp(p, "QTStop")) {
		struct ns_err *err = remove_all(s);
		s->running = false;
		if (err)
			reply_err(&r, err);
		else
			ns_strbuf_puts(&r, "OK");
	} else if (prefix(p, "QTEnable:")) {
		qtenable(s, p + 9, true, &r);
	} else if (prefix(p, "QTDisable:")) {
		qtenable(s, p + 10, false, &r);
	} else if (!strcmp(p, "qTStatus")) {
		qtstatus(s, &r);
	} else if (prefix(p, "qNsTPInfo:")) {
		qnstpinfo(s, p + strlen("qNsTPInfo:"), &r);
	} else if (prefix(p, "qTP:")) {
		qtp(s, p + 4, &r);
	} else if (prefix(p, "QTBuffer:size:") || prefix(p, "QTBuffer:circular:")) {
		ns_strbuf_puts(&r, "OK");
	} else if (!strcmp(p, "qNsFrames")) {
		qnsframes(s, &r);
	} else if (!strcmp(p, "vCont?")) {
		ns_strbuf_puts(&r, "vCont;c;C;t");
	} else if (prefix(p, "vCont;c") || prefix(p, "vCont;C") || !strcmp(p, "c") || p[0] == 'C') {
		ns_stub__agent_resume(s);
		if (s->nonstop) {
			ns_strbuf_puts(&r, "OK");
		} else {
			// All-stop: the reply is the next stop, i.e. the exit.
			send = false;
			s->allstop_waiting = true;
		}
	} else if (prefix(p, "vCont;t")) {
		vcont_stop(s, p + 7, &r);
	} else if (!strcmp(p, "vStopped")) {
		if (s->nstops)
			next_stop(s, &r);
		else
			ns_strbuf_puts(&r, "OK"), s->stop_outstanding = false;
	} else if (!strcmp(p, "D") || prefix(p, "D;")) {
		ns_strbuf_puts(&r, "OK");
		act = NS_STUB_DETACH;
	} else if (!strcmp(p, "k")) {
		send = false; // GDB does not wait for a reply to 'k'
		act = NS_STUB_KILL;
	} else if (prefix(p, "vKill;")) {
		ns_strbuf_puts(&r, "OK");
		act = NS_STUB_KILL;
	}
	// Anything else: the empty reply ("not supported").

	if (send) {
		struct ns_err *err = r.oom ? &ns_err_nomem : ns_rsp_send(s->conn, r.buf, r.len);
		if (err) {
			ns_log(NS_LOG_WARN, "reply: %s", err->msg);
			if (err->code == NS_ERR_CLOSED && act == NS_STUB_CONTINUE)
				act = NS_STUB_DETACH;
			ns_err_destroy(err);
		}
	}
	if (noack_after)
		ns_rsp_set_noack(s->conn, true);
	s->reply = r;
	return act;
}
