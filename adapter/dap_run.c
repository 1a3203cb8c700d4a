/* dap-run: a headless DAP client for scripts and CI. It starts nonstop-dap with pipes
 * on its stdin/stdout, launches (or attaches to) a program, sets logpoints and
 * snapshots from the command line, and prints what arrives as text or JSON lines.
 *
 * Exit status: the program's exit code (0 if unknown); 2 for a usage error or a
 * breakpoint the adapter could not verify; 1 when the session itself fails (the
 * adapter cannot start, dies, refuses initialize/launch or stops answering). */
#define _GNU_SOURCE
#include "dap/dap.h"

#include "base/err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum {
	REQUEST_TIMEOUT_MS = 30000,
	LAUNCH_TIMEOUT_MS = 60000, /* initialize .. initialized: the adapter reads DWARF */
	DISCONNECT_TIMEOUT_MS = 5000,
	MAX_FRAMES = 10,
	EXIT_SESSION = 1,
	EXIT_ERROR = 2,
};

struct spec {
	const char *arg; /* the option's value, for messages */
	char *file;      /* FILE as typed (malloc'd) */
	char *abs;       /* FILE made absolute (malloc'd) */
	long line;
	const char *log;  /* logpoint message, or NULL */
	const char *cond; /* snapshot condition, or NULL */
	long long id;     /* breakpoint id from the adapter, -1 if none */
};

struct run {
	/* options */
	struct spec *specs;
	size_t nspecs;
	double duration; /* seconds; 0: none */
	bool json;
	const char *adapter;
	const char *attach;       /* host:port, or NULL to launch */
	long pid;                 /* --pid: attach to this process (the adapter starts the stub) */
	const char *adapter_path; /* what was started */
	char **prog_argv;         /* PROGRAM ARGS... */
	int prog_argc;

	/* session */
	struct ns_dap_conn *conn;
	pid_t child;
	long long launch_seq;
	bool launched; /* the launch/attach response arrived (successfully) */
	bool terminated;
	bool error; /* exit with EXIT_ERROR */
	bool have_exit;
	int exit_code;
	long long deadline; /* monotonic ms for --duration, -1 if none */

	/* events read while waiting for a response, handled in order afterwards */
	cJSON **queue;
	size_t qhead, qlen, qcap;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: dap-run [--logpoint FILE:LINE:MESSAGE]... "
	           "[--snapshot FILE:LINE[:CONDITION]]...\n"
	           "               [--duration SECONDS] [--json] [--adapter PATH] "
	           "-- PROGRAM ARGS...\n"
	           "       dap-run --attach HOST:PORT [options]\n"
	           "       dap-run --pid PID [options]\n");
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* @path made absolute against the current directory, "." and ".." removed lexically.
 * Symlinks are kept: DWARF names files by the path the compiler saw, and a
 * program's argv[0] may matter to it. */
static char *absolute(const char *path)
{
	char cwd[PATH_MAX];
	char *s = NULL;
	if (path[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		s = strdup(path);
	else if (asprintf(&s, "%s/%s", cwd, path) < 0)
		s = NULL;
	if (!s || s[0] != '/')
		return s;
	// Rewrite in place: out never overtakes in.
	char *o = s;
	for (const char *in = s; *in;) {
		while (*in == '/')
			in++;
		const char *end = strchrnul(in, '/');
		size_t n = (size_t)(end - in);
		if (n == 0 || (n == 1 && in[0] == '.')) {
			// skip
		} else if (n == 2 && in[0] == '.' && in[1] == '.') {
			while (o > s && *--o != '/')
				;
		} else {
			*o++ = '/';
			memmove(o, in, n);
			o += n;
		}
		in = end;
	}
	if (o == s)
		*o++ = '/';
	*o = 0;
	return s;
}

/* PROGRAM as an absolute path: as given if it has a slash, else looked up in PATH. */
static char *program_path(const char *prog)
{
	if (!strchr(prog, '/')) {
		const char *path = getenv("PATH");
		char *copy = strdup(path ? path : "");
		char *save = NULL;
		for (char *dir = strtok_r(copy, ":", &save); dir;
		     dir = strtok_r(NULL, ":", &save)) {
			char *cand = NULL;
			if (asprintf(&cand, "%s/%s", *dir ? dir : ".", prog) < 0)
				break;
			if (access(cand, X_OK) == 0) {
				char *abs = absolute(cand);
				free(cand);
				free(copy);
				return abs;
			}
			free(cand);
		}
		free(copy);
	}
	return absolute(prog);
}

/* Split "FILE:LINE[:REST]" at the first ":<digits>" followed by ':' or the end. */
static bool parse_spec(const char *arg, bool need_rest, struct spec *out)
{
	for (const char *p = strchr(arg, ':'); p; p = strchr(p + 1, ':')) {
		const char *d = p + 1;
		while (*d >= '0' && *d <= '9')
			d++;
		if (d == p + 1 || (*d != ':' && *d != 0) || p == arg)
			continue;
		if (need_rest && *d != ':')
			continue;
		memset(out, 0, sizeof(*out));
		out->arg = arg;
		out->file = strndup(arg, (size_t)(p - arg));
		out->line = strtol(p + 1, NULL, 10);
		out->id = -1;
		if (*d == ':') {
			if (need_rest)
				out->log = d + 1;
			else if (d[1])
				out->cond = d + 1;
		}
		out->abs = out->file ? absolute(out->file) : NULL;
		if (out->line > 0 && out->abs)
			return true;
		free(out->file);
		free(out->abs);
		memset(out, 0, sizeof(*out));
		return false;
	}
	return false;
}

static bool attaching(const struct run *r)
{
	return r->attach || r->pid;
}

/* Returns -1 to continue, else an exit status. */
static int parse_args(int argc, char **argv, struct run *r)
{
	r->specs = calloc((size_t)argc, sizeof(*r->specs));
	int i;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		bool lp = strcmp(a, "--logpoint") == 0, sn = strcmp(a, "--snapshot") == 0;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		} else if (strcmp(a, "--json") == 0) {
			r->json = true;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (a[0] != '-') {
			break; // PROGRAM without "--"
		} else if (!lp && !sn && strcmp(a, "--duration") != 0 &&
		           strcmp(a, "--adapter") != 0 && strcmp(a, "--attach") != 0 &&
		           strcmp(a, "--pid") != 0) {
			fprintf(stderr, "dap-run: unknown option %s\n", a);
			usage(stderr);
			return EXIT_ERROR;
		} else if (!val) {
			fprintf(stderr, "dap-run: %s needs a value\n", a);
			usage(stderr);
			return EXIT_ERROR;
		} else if (lp || sn) {
			if (!parse_spec(val, lp, &r->specs[r->nspecs])) {
				fprintf(stderr, "dap-run: bad %s '%s' (want %s)\n", a, val,
				        lp ? "FILE:LINE:MESSAGE" : "FILE:LINE[:CONDITION]");
				return EXIT_ERROR;
			}
			r->nspecs++;
			i++;
		} else if (strcmp(a, "--duration") == 0) {
			char *end;
			r->duration = strtod(val, &end);
			if (*end || !(r->duration > 0)) {
				fprintf(stderr, "dap-run: bad --duration '%s'\n", val);
				return EXIT_ERROR;
			}
			i++;
		} else if (strcmp(a, "--adapter") == 0) {
			r->adapter = val;
			i++;
		} else if (strcmp(a, "--pid") == 0) {
			char *end;
			r->pid = strtol(val, &end, 10);
			if (*end || r->pid <= 0) {
				fprintf(stderr, "dap-run: bad --pid '%s'\n", val);
				return EXIT_ERROR;
			}
			i++;
		} else { // --attach
			r->attach = val;
			i++;
		}
	}
	r->prog_argv = argv + i;
	r->prog_argc = argc - i;
	if (r->attach && r->pid) {
		fprintf(stderr, "dap-run: --attach and --pid exclude each other\n");
		return EXIT_ERROR;
	}
	if (!attaching(r) && r->prog_argc == 0) {
		fprintf(stderr, "dap-run: no PROGRAM to launch\n");
		usage(stderr);
		return EXIT_ERROR;
	}
	if (attaching(r) && r->prog_argc > 0) {
		fprintf(stderr, "dap-run: --attach and --pid take no PROGRAM\n");
		return EXIT_ERROR;
	}
	return -1;
}

/* ---- the adapter process ---- */

static char *default_adapter(void)
{
	const char *env = getenv("NONSTOP_DAP");
	if (env && *env)
		return strdup(env);
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return strdup("nonstop-dap");
	exe[n] = 0;
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	char *s = NULL;
	if (asprintf(&s, "%s/nonstop-dap", exe) < 0)
		return NULL;
	return s;
}

static struct ns_err *spawn_adapter(struct run *r, const char *path)
{
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) != 0)
		return ns_err_errno(errno, "pipe");
	if (pipe2(out, O_CLOEXEC) != 0) {
		int e = errno;
		close(in[0]);
		close(in[1]);
		return ns_err_errno(e, "pipe");
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		return ns_err_errno(e, "fork");
	}
	if (pid == 0) {
		// Own process group: a terminal's Ctrl-C reaches only dap-run, which then
		// disconnects cleanly. The program must not inherit our ignored SIGPIPE.
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0)
			_exit(127);
		execl(path, path, (char *)NULL);
		fprintf(stderr, "dap-run: cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	r->child = pid;
	return ns_dap_conn_create(out[0], in[1], &r->conn);
}

/* Wait for the adapter to exit after its pipes closed; TERM, then KILL, if it lingers. */
static int reap_adapter(struct run *r, int wait_ms)
{
	if (r->child <= 0)
		return -1;
	int st = 0;
	for (int phase = 0; phase < 3; phase++) {
		long long end = now_ms() + (phase == 0 ? wait_ms : 2000);
		do {
			pid_t p = waitpid(r->child, &st, WNOHANG);
			if (p == r->child) {
				r->child = 0;
				return st;
			}
			if (p < 0 && errno != EINTR) {
				r->child = 0;
				return -1;
			}
			usleep(20000);
		} while (now_ms() < end);
		if (phase < 2)
			kill(r->child, phase == 0 ? SIGTERM : SIGKILL);
	}
	return -1;
}

/* ---- messages ---- */

static void enqueue(struct run *r, cJSON *ev)
{
	if (r->qlen == r->qcap) {
		size_t cap = r->qcap ? r->qcap * 2 : 16;
		cJSON **nq = malloc(cap * sizeof(*nq));
		if (!nq) {
			cJSON_Delete(ev);
			return;
		}
		for (size_t i = 0; i < r->qlen; i++)
			nq[i] = r->queue[(r->qhead + i) % r->qcap];
		free(r->queue);
		r->queue = nq;
		r->qcap = cap;
		r->qhead = 0;
	}
	r->queue[(r->qhead + r->qlen) % r->qcap] = ev;
	r->qlen++;
}

static cJSON *dequeue(struct run *r)
{
	if (!r->qlen)
		return NULL;
	cJSON *ev = r->queue[r->qhead];
	r->qhead = (r->qhead + 1) % r->qcap;
	r->qlen--;
	return ev;
}

/* Send a request; its seq in *@seq_out. Takes ownership of @args. */
static struct ns_err *send_request(struct run *r, const char *cmd, cJSON *args, long long *seq_out)
{
	cJSON *req = ns_dap_request(cmd, args);
	if (!req)
		return &ns_err_nomem;
	struct ns_err *err = ns_dap_write(r->conn, req);
	if (!err && seq_out)
		*seq_out = ns_dap_get_int(req, "seq", -1);
	cJSON_Delete(req);
	if (err)
		return ns_err_wrap(err, "sending %s", cmd);
	return NULL;
}

/* Next message from the adapter, waiting until @deadline (monotonic ms). Checks for
 * a signal every 250 ms. A closed pipe becomes an error naming the adapter's fate. */
static struct ns_err *next_message(struct run *r, long long deadline, cJSON **out)
{
	for (;;) {
		if (interrupted)
			return ns_err_create(NS_ERR_CLOSED, "interrupted");
		long long left = deadline - now_ms();
		int slice = left < 0 ? 0 : left > 250 ? 250 : (int)left;
		struct ns_err *err = ns_dap_read(r->conn, slice, out);
		if (!err)
			return NULL;
		if (err->code == NS_ERR_TIMEOUT && now_ms() < deadline) {
			ns_err_destroy(err);
			continue;
		}
		if (err->code == NS_ERR_FORMAT) { // one bad message: skip it
			fprintf(stderr, "dap-run: ignoring a malformed message: %s\n", err->msg);
			ns_err_destroy(err);
			continue;
		}
		return err;
	}
}

/* Handle a message that is not the response being waited for: events are queued,
 * the launch/attach response is checked, reverse requests are refused. */
static struct ns_err *side_message(struct run *r, cJSON *msg)
{
	const char *type = ns_dap_get_str(msg, "type", "");
	if (strcmp(type, "event") == 0) {
		enqueue(r, msg);
		return NULL;
	}
	struct ns_err *err = NULL;
	if (strcmp(type, "response") == 0 && r->launch_seq > 0 &&
	    ns_dap_get_int(msg, "request_seq", -1) == r->launch_seq) {
		if (ns_dap_get_bool(msg, "success", false))
			r->launched = true;
		else
			err = ns_err_create(NS_ERR_PROTOCOL, "%s failed: %s",
			                    attaching(r) ? "attach" : "launch",
			                    ns_dap_get_str(msg, "message", "(no message)"));
	} else if (strcmp(type, "request") == 0) {
		// runInTerminal, startDebugging: nothing to run them in.
		err = ns_dap_send_error(r->conn, msg, 1, "dap-run does not support '%s'",
		                        ns_dap_get_str(msg, "command", "?"));
	}
	cJSON_Delete(msg);
	return err;
}

/* Wait for the response to request @seq; other messages go to side_message. */
static struct ns_err *wait_response(struct run *r, long long seq, int timeout_ms, const char *what,
                                    cJSON **out)
{
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		cJSON *msg = NULL;
		struct ns_err *err = next_message(r, deadline, &msg);
		if (err) {
			if (err->code == NS_ERR_TIMEOUT)
				return ns_err_wrap(err, "no response to %s", what);
			return err;
		}
		if (strcmp(ns_dap_get_str(msg, "type", ""), "response") == 0 &&
		    ns_dap_get_int(msg, "request_seq", -1) == seq) {
			if (seq == r->launch_seq)
				r->launched = ns_dap_get_bool(msg, "success", false);
			*out = msg;
			return NULL;
		}
		err = side_message(r, msg);
		if (err)
			return err;
	}
}

/* Send @cmd and wait for a successful response (body in *@out if @out, else freed). */
static struct ns_err *call(struct run *r, const char *cmd, cJSON *args, int timeout_ms, cJSON **out)
{
	long long seq = -1;
	struct ns_err *err = send_request(r, cmd, args, &seq);
	if (err)
		return err;
	cJSON *resp = NULL;
	err = wait_response(r, seq, timeout_ms, cmd, &resp);
	if (err)
		return err;
	if (!ns_dap_get_bool(resp, "success", false)) {
		const cJSON *e = ns_dap_get_obj(ns_dap_get_obj(resp, "body"), "error");
		err = ns_err_create(
		        NS_ERR_PROTOCOL, "%s failed: %s", cmd,
		        ns_dap_get_str(e, "format",
		                       ns_dap_get_str(resp, "message", "(no message)")));
		cJSON_Delete(resp);
		return err;
	}
	if (out)
		*out = resp;
	else
		cJSON_Delete(resp);
	return NULL;
}

/* ---- printing ---- */

static void print_json_line(cJSON *obj)
{
	char *s = cJSON_PrintUnformatted(obj);
	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		fflush(stdout);
	}
	cJSON_free(s);
	cJSON_Delete(obj);
}

static void on_output(struct run *r, const cJSON *body)
{
	const char *cat = ns_dap_get_str(body, "category", "console");
	const char *text = ns_dap_get_str(body, "output", "");
	const char *path = ns_dap_get_str(ns_dap_get_obj(body, "source"), "path", NULL);
	long long line = ns_dap_get_int(body, "line", 0);
	bool is_std = strcmp(cat, "stdout") == 0 || strcmp(cat, "stderr") == 0;
	if (strcmp(cat, "telemetry") == 0)
		return;
	if (!is_std && path && line > 0) { // a logpoint hit
		size_t n = strlen(text);
		if (r->json) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "type", "logpoint");
			cJSON_AddStringToObject(o, "file", path);
			cJSON_AddNumberToObject(o, "line", (double)line);
			char *t = strndup(text, n && text[n - 1] == '\n' ? n - 1 : n);
			cJSON_AddStringToObject(o, "text", t ? t : "");
			free(t);
			print_json_line(o);
		} else {
			printf("%s:%lld: %s%s", base_name(path), line, text,
			       n && text[n - 1] == '\n' ? "" : "\n");
			fflush(stdout);
		}
		return;
	}
	if (r->json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "type", "output");
		cJSON_AddStringToObject(o, "category", cat);
		cJSON_AddStringToObject(o, "text", text);
		print_json_line(o);
		return;
	}
	// The program's own bytes go through unchanged; adapter messages to stderr.
	FILE *f = strcmp(cat, "stdout") == 0 ? stdout : stderr;
	fputs(text, f);
	fflush(f);
}

/* A variables request: the array of variables, or NULL (error printed). Caller owns
 * the returned response in *@resp. */
static const cJSON *get_variables(struct run *r, long long ref, cJSON **resp)
{
	cJSON *args = cJSON_CreateObject();
	cJSON_AddNumberToObject(args, "variablesReference", (double)ref);
	*resp = NULL;
	struct ns_err *err = call(r, "variables", args, REQUEST_TIMEOUT_MS, resp);
	if (err) {
		fprintf(stderr, "dap-run: snapshot: %s\n", err->msg);
		ns_err_destroy(err);
		return NULL;
	}
	return ns_dap_get_arr(ns_dap_get_obj(*resp, "body"), "variables");
}

static cJSON *var_json(const cJSON *v)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", ns_dap_get_str(v, "name", ""));
	cJSON_AddStringToObject(o, "value", ns_dap_get_str(v, "value", ""));
	const char *type = ns_dap_get_str(v, "type", NULL);
	if (type)
		cJSON_AddStringToObject(o, "type", type);
	else
		cJSON_AddNullToObject(o, "type");
	return o;
}

/* Variables of one frame: every scope that is not expensive, each variable with
 * its children fetched once (one level below the top). */
static void print_frame_vars(struct run *r, long long frame_id, cJSON *jvars)
{
	cJSON *args = cJSON_CreateObject();
	cJSON_AddNumberToObject(args, "frameId", (double)frame_id);
	cJSON *sresp = NULL;
	struct ns_err *err = call(r, "scopes", args, REQUEST_TIMEOUT_MS, &sresp);
	if (err) {
		fprintf(stderr, "dap-run: snapshot: %s\n", err->msg);
		ns_err_destroy(err);
		return;
	}
	const cJSON *scope;
	cJSON_ArrayForEach(scope, ns_dap_get_arr(ns_dap_get_obj(sresp, "body"), "scopes"))
	{
		long long ref = ns_dap_get_int(scope, "variablesReference", 0);
		if (ref <= 0 || ns_dap_get_bool(scope, "expensive", false))
			continue;
		cJSON *vresp;
		const cJSON *v, *vars = get_variables(r, ref, &vresp);
		// (cJSON_ArrayForEach evaluates its array argument twice.)
		cJSON_ArrayForEach(v, vars)
		{
			cJSON *jv = r->json ? var_json(v) : NULL;
			cJSON *jchildren = r->json ? cJSON_AddArrayToObject(jv, "children") : NULL;
			if (!r->json)
				printf("      %s = %s\n", ns_dap_get_str(v, "name", "?"),
				       ns_dap_get_str(v, "value", ""));
			long long cref = ns_dap_get_int(v, "variablesReference", 0);
			if (cref > 0) {
				cJSON *cresp;
				const cJSON *c, *children = get_variables(r, cref, &cresp);
				cJSON_ArrayForEach(c, children)
				{
					if (r->json)
						cJSON_AddItemToArray(jchildren, var_json(c));
					else
						printf("          %s = %s\n",
						       ns_dap_get_str(c, "name", "?"),
						       ns_dap_get_str(c, "value", ""));
				}
				cJSON_Delete(cresp);
			}
			if (jv)
				cJSON_AddItemToArray(jvars, jv);
		}
		cJSON_Delete(vresp);
	}
	cJSON_Delete(sresp);
}

static void on_snapshot(struct run *r, const cJSON *body, long long tid)
{
	const char *desc =
	        ns_dap_get_str(body, "description", ns_dap_get_str(body, "text", "snapshot"));
	cJSON *args = cJSON_CreateObject();
	cJSON_AddNumberToObject(args, "threadId", (double)tid);
	cJSON_AddNumberToObject(args, "startFrame", 0);
	cJSON_AddNumberToObject(args, "levels", MAX_FRAMES);
	cJSON *st = NULL;
	struct ns_err *err = call(r, "stackTrace", args, REQUEST_TIMEOUT_MS, &st);
	if (err) {
		fprintf(stderr, "dap-run: snapshot %s: %s\n", desc, err->msg);
		ns_err_destroy(err);
		return;
	}
	cJSON *jo = NULL, *jframes = NULL;
	if (r->json) {
		jo = cJSON_CreateObject();
		cJSON_AddStringToObject(jo, "type", "snapshot");
		cJSON_AddStringToObject(jo, "description", desc);
		cJSON_AddNumberToObject(jo, "threadId", (double)tid);
		jframes = cJSON_AddArrayToObject(jo, "frames");
	} else {
		printf("snapshot %s\n", desc);
	}
	int i = 0;
	const cJSON *f;
	cJSON_ArrayForEach(f, ns_dap_get_arr(ns_dap_get_obj(st, "body"), "stackFrames"))
	{
		if (i >= MAX_FRAMES)
			break;
		const char *name = ns_dap_get_str(f, "name", "??");
		const char *path = ns_dap_get_str(ns_dap_get_obj(f, "source"), "path", NULL);
		long long line = ns_dap_get_int(f, "line", 0);
		cJSON *jvars = NULL;
		if (r->json) {
			cJSON *jf = cJSON_CreateObject();
			cJSON_AddStringToObject(jf, "name", name);
			if (path)
				cJSON_AddStringToObject(jf, "file", path);
			else
				cJSON_AddNullToObject(jf, "file");
			cJSON_AddNumberToObject(jf, "line", (double)line);
			jvars = cJSON_AddArrayToObject(jf, "variables");
			cJSON_AddItemToArray(jframes, jf);
		} else if (path) {
			printf("  #%d %s (%s:%lld)\n", i, name, base_name(path), line);
		} else {
			printf("  #%d %s\n", i, name);
		}
		print_frame_vars(r, ns_dap_get_int(f, "id", 0), jvars);
		i++;
	}
	cJSON_Delete(st);
	if (jo)
		print_json_line(jo);
	fflush(stdout);
}

static void on_stopped(struct run *r, const cJSON *body)
{
	long long tid = ns_dap_get_int(body, "threadId", 0);
	const char *reason = ns_dap_get_str(body, "reason", "");
	if (strcmp(reason, "snapshot") == 0)
		on_snapshot(r, body, tid);
	else
		fprintf(stderr, "dap-run: stopped (%s); continuing\n", reason);
	// Nothing here can inspect a stopped program interactively: let it run on.
	cJSON *args = cJSON_CreateObject();
	cJSON_AddNumberToObject(args, "threadId", (double)tid);
	struct ns_err *err = call(r, "continue", args, REQUEST_TIMEOUT_MS, NULL);
	if (err) {
		fprintf(stderr, "dap-run: %s\n", err->msg);
		ns_err_destroy(err);
	}
}

static const struct spec *spec_by_id(const struct run *r, long long id)
{
	for (size_t i = 0; i < r->nspecs; i++)
		if (r->specs[i].id == id && id >= 0)
			return &r->specs[i];
	return NULL;
}

static void on_breakpoint(struct run *r, const cJSON *body)
{
	const cJSON *bp = ns_dap_get_obj(body, "breakpoint");
	const char *msg = ns_dap_get_str(bp, "message", NULL);
	if (!msg || !*msg)
		return;
	const struct spec *s = spec_by_id(r, ns_dap_get_int(bp, "id", -1));
	if (s) {
		fprintf(stderr, "dap-run: %s:%ld: %s\n", s->file, s->line, msg);
		return;
	}
	const char *path = ns_dap_get_str(ns_dap_get_obj(bp, "source"), "path", NULL);
	if (path)
		fprintf(stderr, "dap-run: %s:%lld: %s\n", path, ns_dap_get_int(bp, "line", 0), msg);
	else
		fprintf(stderr, "dap-run: breakpoint %lld: %s\n", ns_dap_get_int(bp, "id", -1),
		        msg);
}

static void handle_event(struct run *r, cJSON *ev)
{
	const char *event = ns_dap_get_str(ev, "event", "");
	const cJSON *body = ns_dap_get_obj(ev, "body");
	if (strcmp(event, "output") == 0) {
		on_output(r, body);
	} else if (strcmp(event, "stopped") == 0) {
		on_stopped(r, body);
	} else if (strcmp(event, "breakpoint") == 0) {
		on_breakpoint(r, body);
	} else if (strcmp(event, "exited") == 0) {
		long long code = ns_dap_get_int(body, "exitCode", LLONG_MIN);
		if (code != LLONG_MIN) {
			r->have_exit = true;
			r->exit_code = (int)(code & 0xff);
		}
	} else if (strcmp(event, "terminated") == 0) {
		r->terminated = true;
	}
	cJSON_Delete(ev);
}

/* ---- the session ---- */

static struct ns_err *initialize(struct run *r)
{
	cJSON *args = cJSON_CreateObject();
	cJSON_AddStringToObject(args, "clientID", "dap-run");
	cJSON_AddStringToObject(args, "clientName", "dap-run");
	cJSON_AddStringToObject(args, "adapterID", "nonstop");
	cJSON_AddBoolToObject(args, "linesStartAt1", true);
	cJSON_AddBoolToObject(args, "columnsStartAt1", true);
	cJSON_AddStringToObject(args, "pathFormat", "path");
	struct ns_err *err = call(r, "initialize", args, LAUNCH_TIMEOUT_MS, NULL);
	if (err)
		return err;

	args = cJSON_CreateObject();
	cJSON_AddStringToObject(args, "type", "nonstop");
	cJSON_AddStringToObject(args, "request", attaching(r) ? "attach" : "launch");
	if (r->attach) {
		cJSON_AddStringToObject(args, "target", r->attach);
	} else if (r->pid) {
		cJSON_AddNumberToObject(args, "pid", (double)r->pid);
	} else {
		char *prog = program_path(r->prog_argv[0]);
		cJSON_AddStringToObject(args, "program", prog ? prog : r->prog_argv[0]);
		free(prog);
		cJSON *a = cJSON_AddArrayToObject(args, "args");
		for (int i = 1; i < r->prog_argc; i++)
			cJSON_AddItemToArray(a, cJSON_CreateString(r->prog_argv[i]));
		char cwd[PATH_MAX];
		cJSON_AddStringToObject(args, "cwd", getcwd(cwd, sizeof(cwd)) ? cwd : "/");
		cJSON_AddObjectToObject(args, "env");
	}
	// The response may come before or after `initialized` (adapters differ), so it
	// is not waited for here; side_message checks it whenever it arrives.
	err = send_request(r, attaching(r) ? "attach" : "launch", args, &r->launch_seq);
	if (err)
		return err;

	long long deadline = now_ms() + LAUNCH_TIMEOUT_MS;
	for (;;) {
		cJSON *msg = NULL;
		err = next_message(r, deadline, &msg);
		if (err)
			return err->code == NS_ERR_TIMEOUT
			               ? ns_err_wrap(err, "no 'initialized' event")
			               : err;
		if (strcmp(ns_dap_get_str(msg, "type", ""), "event") == 0 &&
		    strcmp(ns_dap_get_str(msg, "event", ""), "initialized") == 0) {
			cJSON_Delete(msg);
			return NULL;
		}
		err = side_message(r, msg);
		if (err)
			return err;
	}
}

/* One setBreakpoints per source file, in order of first appearance. */
static struct ns_err *set_breakpoints(struct run *r)
{
	for (size_t i = 0; i < r->nspecs; i++) {
		const char *abs = r->specs[i].abs;
		bool seen = false;
		for (size_t j = 0; j < i; j++)
			seen = seen || strcmp(r->specs[j].abs, abs) == 0;
		if (seen)
			continue;
		cJSON *args = cJSON_CreateObject();
		cJSON *src = cJSON_AddObjectToObject(args, "source");
		cJSON_AddStringToObject(src, "name", base_name(abs));
		cJSON_AddStringToObject(src, "path", abs);
		cJSON *bps = cJSON_AddArrayToObject(args, "breakpoints");
		for (size_t j = i; j < r->nspecs; j++) {
			const struct spec *s = &r->specs[j];
			if (strcmp(s->abs, abs) != 0)
				continue;
			cJSON *bp = cJSON_CreateObject();
			cJSON_AddNumberToObject(bp, "line", (double)s->line);
			if (s->log)
				cJSON_AddStringToObject(bp, "logMessage", s->log);
			if (s->cond)
				cJSON_AddStringToObject(bp, "condition", s->cond);
			cJSON_AddItemToArray(bps, bp);
		}
		cJSON_AddBoolToObject(args, "sourceModified", false);
		cJSON *resp = NULL;
		struct ns_err *err = call(r, "setBreakpoints", args, LAUNCH_TIMEOUT_MS, &resp);
		if (err && err->code != NS_ERR_PROTOCOL)
			return err;
		if (err) { // the adapter refused the whole file
			fprintf(stderr, "dap-run: %s: %s\n", r->specs[i].file, err->msg);
			ns_err_destroy(err);
			r->error = true;
			continue;
		}
		// Breakpoints come back in the order they were sent.
		const cJSON *got = ns_dap_get_arr(ns_dap_get_obj(resp, "body"), "breakpoints");
		const cJSON *b = got ? got->child : NULL;
		for (size_t j = i; j < r->nspecs; j++) {
			struct spec *s = &r->specs[j];
			if (strcmp(s->abs, abs) != 0)
				continue;
			if (!b) {
				fprintf(stderr, "dap-run: %s:%ld: no breakpoint in the response\n",
				        s->file, s->line);
				r->error = true;
				continue;
			}
			s->id = ns_dap_get_int(b, "id", -1);
			if (!ns_dap_get_bool(b, "verified", false)) {
				fprintf(stderr, "dap-run: %s:%ld: %s\n", s->file, s->line,
				        ns_dap_get_str(b, "message", "breakpoint not verified"));
				r->error = true;
			}
			b = b->next;
		}
		cJSON_Delete(resp);
	}
	return NULL;
}

/* Ask the adapter to end the session and wait (briefly) for its answer, printing
 * whatever output still arrives. */
static void disconnect(struct run *r, bool terminate)
{
	cJSON *args = cJSON_CreateObject();
	cJSON_AddBoolToObject(args, "terminateDebuggee", terminate);
	long long seq = -1;
	struct ns_err *err = send_request(r, "disconnect", args, &seq);
	if (err) {
		ns_err_destroy(err);
		return;
	}
	interrupted = 0; // a second Ctrl-C still works: it arrives during the wait below
	cJSON *resp = NULL;
	err = wait_response(r, seq, DISCONNECT_TIMEOUT_MS, "disconnect", &resp);
	ns_err_destroy(err);
	cJSON_Delete(resp);
	for (cJSON *ev; (ev = dequeue(r));) {
		const char *event = ns_dap_get_str(ev, "event", "");
		if (strcmp(event, "output") == 0 || strcmp(event, "exited") == 0)
			handle_event(r, ev);
		else
			cJSON_Delete(ev);
	}
}

/* Returns the exit status. */
static int session(struct run *r)
{
	struct ns_err *err = initialize(r);
	if (!err)
		err = set_breakpoints(r);
	if (err)
		goto fail;
	if (r->error) {
		// Do not run a program whose breakpoints are wrong.
		disconnect(r, true);
		return EXIT_ERROR;
	}
	err = call(r, "configurationDone", NULL, REQUEST_TIMEOUT_MS, NULL);
	if (err)
		goto fail;
	r->deadline = r->duration > 0 ? now_ms() + (long long)(r->duration * 1000) : -1;
	while (!r->terminated) {
		cJSON *msg = dequeue(r);
		if (msg) {
			handle_event(r, msg);
			continue;
		}
		bool timed = r->deadline >= 0 && now_ms() >= r->deadline;
		if (timed || interrupted) {
			int sig = interrupted;
			disconnect(r, !attaching(r));
			return sig ? 128 + sig : r->error ? EXIT_ERROR : 0;
		}
		long long until = r->deadline >= 0 ? r->deadline : now_ms() + 1000;
		err = next_message(r, until, &msg);
		if (err && err->code == NS_ERR_TIMEOUT) {
			ns_err_destroy(err);
			continue;
		}
		if (err && interrupted) {
			ns_err_destroy(err);
			continue;
		}
		if (err)
			goto fail;
		err = side_message(r, msg);
		if (err)
			goto fail;
	}
	disconnect(r, !attaching(r));
	if (r->error)
		return EXIT_ERROR;
	return r->have_exit ? r->exit_code : 0;

fail:
	if (interrupted) {
		ns_err_destroy(err);
		disconnect(r, !attaching(r));
		return 128 + interrupted;
	}
	if (err->code == NS_ERR_CLOSED) {
		int st = reap_adapter(r, 500);
		if (st >= 0 && WIFEXITED(st))
			fprintf(stderr, "dap-run: nonstop-dap (%s) exited with status %d (%s)\n",
			        r->adapter_path, WEXITSTATUS(st), err->msg);
		else if (st >= 0 && WIFSIGNALED(st))
			fprintf(stderr, "dap-run: nonstop-dap (%s) killed by signal %d (%s)\n",
			        r->adapter_path, WTERMSIG(st), err->msg);
		else
			fprintf(stderr, "dap-run: nonstop-dap (%s) closed the connection (%s)\n",
			        r->adapter_path, err->msg);
	} else {
		fprintf(stderr, "dap-run: %s\n", err->msg);
		if (err->code == NS_ERR_PROTOCOL && r->conn)
			disconnect(r, !attaching(r));
	}
	ns_err_destroy(err);
	return EXIT_SESSION;
}

static void free_specs(struct run *r)
{
	for (size_t i = 0; i < r->nspecs; i++) {
		free(r->specs[i].file);
		free(r->specs[i].abs);
	}
	free(r->specs);
}

int main(int argc, char **argv)
{
	struct run r = {.deadline = -1};
	int rc = parse_args(argc, argv, &r);
	if (rc >= 0) {
		free_specs(&r);
		return rc;
	}

	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal}; // no SA_RESTART: poll sees EINTR
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	char *adapter = r.adapter ? strdup(r.adapter) : default_adapter();
	r.adapter_path = adapter ? adapter : "nonstop-dap";
	struct ns_err *err = spawn_adapter(&r, r.adapter_path);
	if (err) {
		fprintf(stderr, "dap-run: cannot start %s: %s\n", r.adapter_path, err->msg);
		ns_err_destroy(err);
		free(adapter);
		free_specs(&r);
		return EXIT_SESSION;
	}
	rc = session(&r);
	ns_dap_conn_destroy(r.conn);
	reap_adapter(&r, 3000);
	for (cJSON *ev; (ev = dequeue(&r));)
		cJSON_Delete(ev);
	free(r.queue);
	free_specs(&r);
	free(adapter);
	return rc;
}
