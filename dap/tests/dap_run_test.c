/* Tests for adapter/dap_run.c (the dap-run client) against fake_adapter.py, a
 * scripted DAP server that logs every request it receives: the expected output is
 * written by hand from the script's canned events, and the requests dap-run sent
 * are checked in the script's log. */
#define _GNU_SOURCE
#include "base/test.h"
#include "dap/dap.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[PATH_MAX];          /* a scratch directory, the cwd of dap-run */
static char adapter[PATH_MAX + 32]; /* the fake adapter, copied there with mode 0755 */
static char daprun[PATH_MAX + 32];

static bool setup(void)
{
	if (dir[0])
		return true;
	const char *src = getenv("NS_SOURCE_DIR"), *bin = getenv("NS_BINARY_DIR");
	if (!src || !bin) {
		ns_test_fail(__FILE__, __LINE__, "NS_SOURCE_DIR/NS_BINARY_DIR unset");
		return false;
	}
	snprintf(daprun, sizeof(daprun), "%s/bin/dap-run", bin);
	if (access(daprun, X_OK) != 0) {
		ns_test_fail(__FILE__, __LINE__, "%s not built", daprun);
		return false;
	}
	char tmpl[] = "/tmp/dap_run_test.XXXXXX";
	if (!mkdtemp(tmpl) || !realpath(tmpl, dir))
		return false;
	snprintf(adapter, sizeof(adapter), "%s/fake_adapter.py", dir);
	char *cmd = NULL;
	if (asprintf(&cmd, "cp %s/dap/tests/fake_adapter.py %s && chmod 755 %s", src, adapter,
	             adapter) < 0 ||
	    system(cmd) != 0) {
		ns_test_fail(__FILE__, __LINE__, "cannot copy fake_adapter.py");
		free(cmd);
		return false;
	}
	free(cmd);
	return true;
}

__attribute__((destructor)) static void cleanup(void)
{
	char cmd[PATH_MAX + 16];
	if (dir[0] && strncmp(dir, "/tmp/", 5) == 0) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return strdup("");
	char *buf = NULL;
	size_t n = 0;
	ssize_t len = getdelim(&buf, &n, 0, f);
	fclose(f);
	if (len < 0) {
		free(buf);
		return strdup("");
	}
	return buf;
}

struct result {
	int rc;
	char *out, *err;
	cJSON *log; /* array of the requests the adapter received */
	double secs;
};

/* Run "dap-run ARGS" in the scratch dir with the fake adapter in @mode. @env_prefix
 * goes before the command (e.g. "NONSTOP_DAP=..."); @use_opt adds --adapter. */
static struct result run(const char *mode, bool use_opt, const char *args)
{
	struct result res = {.rc = -1};
	if (!setup())
		return res;
	char *cmd = NULL;
	if (asprintf(&cmd,
	             "cd %s && rm -f log err && FAKE_DAP_LOG=%s/log FAKE_DAP_MODE=%s %s%s "
	             "timeout 60 %s %s%s %s 2>err; echo \"rc=$?\"",
	             dir, dir, mode, use_opt ? "" : "NONSTOP_DAP=", use_opt ? "" : adapter, daprun,
	             use_opt ? "--adapter " : "", use_opt ? adapter : "", args) < 0)
		return res;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	char *out = ns_test_capture(cmd);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	res.secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	free(cmd);
	if (!out)
		return res;
	char *rc = strstr(out, "rc=");
	while (rc && strstr(rc + 1, "rc="))
		rc = strstr(rc + 1, "rc=");
	if (rc) {
		res.rc = atoi(rc + 3);
		*rc = 0;
	}
	res.out = out;
	char path[PATH_MAX + 8];
	snprintf(path, sizeof(path), "%s/err", dir);
	res.err = slurp(path);
	snprintf(path, sizeof(path), "%s/log", dir);
	char *log = slurp(path);
	res.log = cJSON_CreateArray();
	for (char *save = NULL, *line = strtok_r(log, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save))
		cJSON_AddItemToArray(res.log, cJSON_Parse(line));
	free(log);
	return res;
}

static void result_free(struct result *r)
{
	free(r->out);
	free(r->err);
	cJSON_Delete(r->log);
}

/* "cmd,cmd,..." of the logged requests. */
static char *commands(const cJSON *log)
{
	static char buf[1024];
	buf[0] = 0;
	const cJSON *req;
	cJSON_ArrayForEach(req, log)
	{
		if (buf[0])
			strncat(buf, ",", sizeof(buf) - strlen(buf) - 1);
		strncat(buf, ns_dap_get_str(req, "command", "?"), sizeof(buf) - strlen(buf) - 1);
	}
	return buf;
}

static const cJSON *request(const cJSON *log, const char *cmd, int nth)
{
	const cJSON *req;
	cJSON_ArrayForEach(req, log)
	{
		if (strcmp(ns_dap_get_str(req, "command", ""), cmd) == 0 && nth-- == 0)
			return ns_dap_get_obj(req, "arguments");
	}
	return NULL;
}

#define RUN_ARGS                                               \
	"--logpoint 'main.c:12:x = {x}' --snapshot main.c:20 " \
	"--snapshot 'main.c:25:a ? b : c' -- ./prog one 'two words'"

NS_TEST(test_dap_run__text_output)
{
	struct result r = run("run", true, RUN_ARGS);
	NS_CHECK_INT(r.rc, 3); // the program's exit code from the `exited` event
	NS_CHECK_STR(r.out, "hello from program\n"
	                    "main.c:12: x = 42\n"
	                    "snapshot snapshot at main.c:20\n"
	                    "  #0 compute (main.c:20)\n"
	                    "      n = 42\n"
	                    "      p = 0x7ffd1234\n"
	                    "          x = 1\n"
	                    "          y = 2\n"
	                    "  #1 main (main.c:30)\n"
	                    "      argc = 1\n"
	                    "bye\n");
	NS_CHECK_STR(r.err, "warn\ndap-run: main.c:12: condition error: no x\n");
	// Children fetched one level only (no 301) and expensive scopes skipped (no 900).
	NS_CHECK_STR(commands(r.log), "initialize,launch,setBreakpoints,configurationDone,"
	                              "stackTrace,scopes,variables,variables,scopes,variables,"
	                              "continue,disconnect");
	NS_CHECK_INT(ns_dap_get_int(request(r.log, "variables", 0), "variablesReference", 0), 101);
	NS_CHECK_INT(ns_dap_get_int(request(r.log, "variables", 1), "variablesReference", 0), 201);
	NS_CHECK_INT(ns_dap_get_int(request(r.log, "variables", 2), "variablesReference", 0), 102);
	NS_CHECK_INT(ns_dap_get_int(request(r.log, "scopes", 1), "frameId", 0), 2);
	NS_CHECK_INT(ns_dap_get_int(request(r.log, "stackTrace", 0), "threadId", 0), 1001);
	NS_CHECK_INT(ns_dap_get_int(request(r.log, "continue", 0), "threadId", 0), 1001);
	NS_CHECK(ns_dap_get_bool(request(r.log, "disconnect", 0), "terminateDebuggee", false));

	const cJSON *init = request(r.log, "initialize", 0);
	NS_CHECK_STR(ns_dap_get_str(init, "clientID", NULL), "dap-run");
	NS_CHECK_STR(ns_dap_get_str(init, "adapterID", NULL), "nonstop");
	NS_CHECK_STR(ns_dap_get_str(init, "pathFormat", NULL), "path");
	NS_CHECK(ns_dap_get_bool(init, "linesStartAt1", false));
	NS_CHECK(ns_dap_get_bool(init, "columnsStartAt1", false));

	char want[PATH_MAX + 16];
	const cJSON *launch = request(r.log, "launch", 0);
	NS_CHECK_STR(ns_dap_get_str(launch, "type", NULL), "nonstop");
	NS_CHECK_STR(ns_dap_get_str(launch, "request", NULL), "launch");
	snprintf(want, sizeof(want), "%s/prog", dir);
	NS_CHECK_STR(ns_dap_get_str(launch, "program", NULL), want);
	NS_CHECK_STR(ns_dap_get_str(launch, "cwd", NULL), dir);
	char *args = cJSON_PrintUnformatted(ns_dap_get_arr(launch, "args"));
	NS_CHECK_STR(args, "[\"one\",\"two words\"]");
	cJSON_free(args);
	NS_CHECK(ns_dap_get_obj(launch, "env") != NULL);

	const cJSON *sb = request(r.log, "setBreakpoints", 0);
	snprintf(want, sizeof(want), "%s/main.c", dir);
	NS_CHECK_STR(ns_dap_get_str(ns_dap_get_obj(sb, "source"), "path", NULL), want);
	char *bps = cJSON_PrintUnformatted(ns_dap_get_arr(sb, "breakpoints"));
	NS_CHECK_STR(bps, "[{\"line\":12,\"logMessage\":\"x = {x}\"},{\"line\":20},"
	                  "{\"line\":25,\"condition\":\"a ? b : c\"}]");
	cJSON_free(bps);
	result_free(&r);
}

NS_TEST(test_dap_run__json_lines)
{
	struct result r = run("run", true, "--json " RUN_ARGS);
	NS_CHECK_INT(r.rc, 3);
	NS_CHECK_STR(r.err, "dap-run: main.c:12: condition error: no x\n");
	NS_CHECK_STR(commands(r.log), "initialize,launch,setBreakpoints,configurationDone,"
	                              "stackTrace,scopes,variables,variables,scopes,variables,"
	                              "continue,disconnect");
	char *save = NULL;
	cJSON *l[8] = {0};
	int n = 0;
	for (char *line = strtok_r(r.out ? r.out : (char *)"", "\n", &save); line && n < 8;
	     line = strtok_r(NULL, "\n", &save))
		l[n++] = cJSON_Parse(line);
	NS_CHECK_INT(n, 5);
	NS_CHECK_STR(ns_dap_get_str(l[0], "type", NULL), "output");
	NS_CHECK_STR(ns_dap_get_str(l[0], "category", NULL), "stdout");
	NS_CHECK_STR(ns_dap_get_str(l[0], "text", NULL), "hello from program\n");
	NS_CHECK_STR(ns_dap_get_str(l[1], "category", NULL), "stderr");
	NS_CHECK_STR(ns_dap_get_str(l[1], "text", NULL), "warn\n");

	char want[PATH_MAX + 16];
	snprintf(want, sizeof(want), "%s/main.c", dir);
	NS_CHECK_STR(ns_dap_get_str(l[2], "type", NULL), "logpoint");
	NS_CHECK_STR(ns_dap_get_str(l[2], "file", NULL), want);
	NS_CHECK_INT(ns_dap_get_int(l[2], "line", 0), 12);
	NS_CHECK_STR(ns_dap_get_str(l[2], "text", NULL), "x = 42"); // no trailing newline

	NS_CHECK_STR(ns_dap_get_str(l[3], "type", NULL), "snapshot");
	NS_CHECK_STR(ns_dap_get_str(l[3], "description", NULL), "snapshot at main.c:20");
	NS_CHECK_INT(ns_dap_get_int(l[3], "threadId", 0), 1001);
	const cJSON *frames = ns_dap_get_arr(l[3], "frames");
	NS_CHECK_INT(cJSON_GetArraySize(frames), 2);
	const cJSON *f0 = cJSON_GetArrayItem(frames, 0);
	NS_CHECK_STR(ns_dap_get_str(f0, "name", NULL), "compute");
	NS_CHECK_STR(ns_dap_get_str(f0, "file", NULL), want);
	NS_CHECK_INT(ns_dap_get_int(f0, "line", 0), 20);
	const cJSON *p = cJSON_GetArrayItem(ns_dap_get_arr(f0, "variables"), 1);
	NS_CHECK_STR(ns_dap_get_str(p, "name", NULL), "p");
	NS_CHECK_STR(ns_dap_get_str(p, "value", NULL), "0x7ffd1234");
	NS_CHECK_STR(ns_dap_get_str(p, "type", NULL), "struct point *");
	const cJSON *y = cJSON_GetArrayItem(ns_dap_get_arr(p, "children"), 1);
	NS_CHECK_STR(ns_dap_get_str(y, "name", NULL), "y");
	NS_CHECK_STR(ns_dap_get_str(y, "value", NULL), "2");
	const cJSON *f1 = cJSON_GetArrayItem(frames, 1);
	NS_CHECK_STR(ns_dap_get_str(f1, "name", NULL), "main");
	NS_CHECK_STR(ns_dap_get_str(cJSON_GetArrayItem(ns_dap_get_arr(f1, "variables"), 0), "name",
	                            NULL),
	             "argc");

	NS_CHECK_STR(ns_dap_get_str(l[4], "text", NULL), "bye\n");
	for (int i = 0; i < n; i++)
		cJSON_Delete(l[i]);
	result_free(&r);
}

/* An unverified breakpoint: reported, exit 2, and the program never runs (no
 * configurationDone; disconnect terminates it). */
NS_TEST(test_dap_run__unverified_breakpoint)
{
	struct result r = run("run", true,
	                      "--logpoint main.c:12:hi --snapshot main.c:5000 "
	                      "--logpoint other.c:3:yo -- ./prog");
	NS_CHECK_INT(r.rc, 2);
	NS_CHECK_STR(r.out, "");
	NS_CHECK_STR(r.err, "dap-run: main.c:5000: line 5000 is past the end of main.c\n");
	// One setBreakpoints per file.
	NS_CHECK_STR(commands(r.log), "initialize,launch,setBreakpoints,setBreakpoints,disconnect");
	NS_CHECK(ns_dap_get_bool(request(r.log, "disconnect", 0), "terminateDebuggee", false));
	char want[PATH_MAX + 16];
	snprintf(want, sizeof(want), "%s/other.c", dir);
	NS_CHECK_STR(ns_dap_get_str(ns_dap_get_obj(request(r.log, "setBreakpoints", 1), "source"),
	                            "path", NULL),
	             want);
	result_free(&r);
}

NS_TEST(test_dap_run__adapter_dies)
{
	struct result r = run("die", true, "-- ./prog");
	NS_CHECK_INT(r.rc, 1);
	NS_CHECK(r.err && strstr(r.err, "dap-run: nonstop-dap") && strstr(r.err, "exited"));
	NS_CHECK(r.secs < 10);
	result_free(&r);
}

NS_TEST(test_dap_run__adapter_missing)
{
	struct result r = run("run", true, "--adapter /nonexistent/nonstop-dap -- ./prog");
	NS_CHECK_INT(r.rc, 1);
	NS_CHECK(r.err && strstr(r.err, "cannot run /nonexistent/nonstop-dap"));
	result_free(&r);
}

/* --duration: disconnect after S seconds (terminating a launched program), exit 0. */
NS_TEST(test_dap_run__duration_launch)
{
	// NONSTOP_DAP instead of --adapter.
	struct result r = run("hang", false, "--duration 0.5 -- ./prog");
	NS_CHECK_INT(r.rc, 0);
	NS_CHECK_STR(r.out, "hello from program\n");
	NS_CHECK(r.secs >= 0.5 && r.secs < 10);
	NS_CHECK_STR(commands(r.log), "initialize,launch,configurationDone,disconnect");
	NS_CHECK(ns_dap_get_bool(request(r.log, "disconnect", 0), "terminateDebuggee", false));
	result_free(&r);
}

/* --attach: an attach request with the target; disconnect leaves the program running. */
NS_TEST(test_dap_run__attach)
{
	struct result r = run("hang", true, "--attach 127.0.0.1:4711 --duration 0.3");
	NS_CHECK_INT(r.rc, 0);
	NS_CHECK_STR(commands(r.log), "initialize,attach,configurationDone,disconnect");
	const cJSON *a = request(r.log, "attach", 0);
	NS_CHECK_STR(ns_dap_get_str(a, "target", NULL), "127.0.0.1:4711");
	NS_CHECK_STR(ns_dap_get_str(a, "request", NULL), "attach");
	NS_CHECK(!ns_dap_get_bool(request(r.log, "disconnect", 0), "terminateDebuggee", true));
	result_free(&r);
}

NS_TEST(test_dap_run__usage_errors)
{
	static const char *const bad[] = {
	        "",                            // no program
	        "--logpoint main.c:12 -- ./p", // logpoint without message
	        "--snapshot main.c -- ./p",    // no line
	        "--duration -1 -- ./p",
	        "--frobnicate -- ./p",
	        "--attach h:1 -- ./p", // attach takes no program
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct result r = run("run", true, bad[i]);
		NS_CHECK_INT(r.rc, 2);
		NS_CHECK(r.err && strstr(r.err, "dap-run: "));
		NS_CHECK_INT(cJSON_GetArraySize(r.log), 0); // the adapter never started
		result_free(&r);
	}
}
