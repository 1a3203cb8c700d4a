/* Tests for dap/dap_msg.c: builders (checked field by field and against the official
 * DAP JSON schema through dap_schema_check.py), getters and dispatch. */
#define _GNU_SOURCE
#include "base/test.h"
#include "dap/dap.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Validate @msg against definition @def of the DAP schema: 1 valid, 0 invalid,
 * -1 skipped (no schema, no python3 jsonschema; a note is printed). */
static int schema_valid(const char *def, const cJSON *msg)
{
	const char *src = getenv("NS_SOURCE_DIR");
	if (!src) {
		printf("  note: NS_SOURCE_DIR unset; schema check of %s skipped\n", def);
		return -1;
	}
	char path[] = "/tmp/dap_msg_test.XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	char *text = cJSON_Print(msg);
	FILE *f = fdopen(fd, "w");
	fputs(text, f);
	fclose(f);
	cJSON_free(text);
	char *cmd = NULL;
	if (asprintf(&cmd,
	             "python3 %s/dap/tests/dap_schema_check.py "
	             "%s/../shared/dap/debugAdapterProtocol.json %s %s",
	             src, src, def, path) < 0)
		return -1;
	fflush(stdout);
	int st = system(cmd);
	free(cmd);
	unlink(path);
	if (!WIFEXITED(st) || WEXITSTATUS(st) == 77 || WEXITSTATUS(st) == 127)
		return -1;
	return WEXITSTATUS(st) == 0;
}

#define CHECK_SCHEMA(def, msg)                                                                \
	do {                                                                                  \
		int v_ = schema_valid(def, msg);                                              \
		if (v_ == 0)                                                                  \
			ns_test_fail(__FILE__, __LINE__, "%s does not match schema %s", #msg, \
			             def);                                                    \
	} while (0)

/* Send @msg through a socketpair with ns_dap_write and read it back: the message as
 * a client would see it (with its seq). */
static cJSON *over_the_wire(cJSON *msg)
{
	int sv[2];
	struct ns_dap_conn *w = NULL, *r = NULL;
	cJSON *got = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return NULL;
	NS_CHECK_OK(ns_dap_conn_create(sv[0], sv[0], &w));
	NS_CHECK_OK(ns_dap_conn_create(sv[1], sv[1], &r));
	NS_CHECK_OK(ns_dap_write(w, msg));
	NS_CHECK_OK(ns_dap_read(r, 1000, &got));
	ns_dap_conn_destroy(w);
	ns_dap_conn_destroy(r);
	return got;
}

NS_TEST(test_dap_msg__response_fields)
{
	cJSON *req = cJSON_Parse("{\"seq\":7,\"type\":\"request\",\"command\":\"threads\"}");
	cJSON *body = cJSON_Parse("{\"threads\":[{\"id\":1,\"name\":\"main\"}]}");
	cJSON *resp = ns_dap_response(req, true, NULL, body);
	NS_CHECK_STR(ns_dap_get_str(resp, "type", NULL), "response");
	NS_CHECK_INT(ns_dap_get_int(resp, "request_seq", -1), 7);
	NS_CHECK_STR(ns_dap_get_str(resp, "command", NULL), "threads");
	NS_CHECK(ns_dap_get_bool(resp, "success", false));
	NS_CHECK(!cJSON_GetObjectItemCaseSensitive(resp, "message"));
	NS_CHECK(ns_dap_get_obj(resp, "body") == body);
	cJSON *wire = over_the_wire(resp);
	NS_CHECK_INT(ns_dap_get_int(wire, "seq", -1), 1);
	CHECK_SCHEMA("Response", wire);
	CHECK_SCHEMA("ThreadsResponse", wire);
	cJSON_Delete(wire);
	cJSON_Delete(resp);

	// A failed response carries the message and an object body (ErrorResponse).
	resp = ns_dap_response(req, false, "notStopped", NULL);
	NS_CHECK(!ns_dap_get_bool(resp, "success", true));
	NS_CHECK_STR(ns_dap_get_str(resp, "message", NULL), "notStopped");
	NS_CHECK(ns_dap_get_obj(resp, "body") != NULL);
	wire = over_the_wire(resp);
	CHECK_SCHEMA("ErrorResponse", wire);
	cJSON_Delete(wire);
	cJSON_Delete(resp);

	// A success with a message (e.g. "cancelled" semantics) keeps it.
	resp = ns_dap_response(req, true, "partial", NULL);
	NS_CHECK_STR(ns_dap_get_str(resp, "message", NULL), "partial");
	NS_CHECK(!cJSON_GetObjectItemCaseSensitive(resp, "body"));
	cJSON_Delete(resp);
	cJSON_Delete(req);

	// A garbage request still gives a well-formed (if useless) response.
	resp = ns_dap_response(NULL, false, NULL, NULL);
	NS_CHECK_STR(ns_dap_get_str(resp, "command", NULL), "");
	NS_CHECK_INT(ns_dap_get_int(resp, "request_seq", -1), 0);
	NS_CHECK(ns_dap_get_str(resp, "message", NULL) != NULL);
	cJSON_Delete(resp);
}

NS_TEST(test_dap_msg__send_error)
{
	int sv[2];
	NS_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct ns_dap_conn *w = NULL, *r = NULL;
	NS_CHECK_OK(ns_dap_conn_create(sv[0], sv[0], &w));
	NS_CHECK_OK(ns_dap_conn_create(sv[1], sv[1], &r));
	cJSON *req = cJSON_Parse("{\"seq\":12,\"type\":\"request\",\"command\":\"evaluate\","
	                         "\"arguments\":{\"expression\":\"x\"}}");
	NS_CHECK_OK(ns_dap_send_error(w, req, 1042, "cannot evaluate '%s': %d", "x+", 3));
	cJSON *got = NULL;
	NS_CHECK_OK(ns_dap_read(r, 1000, &got));
	NS_CHECK_STR(ns_dap_get_str(got, "type", NULL), "response");
	NS_CHECK_INT(ns_dap_get_int(got, "request_seq", -1), 12);
	NS_CHECK_STR(ns_dap_get_str(got, "command", NULL), "evaluate");
	NS_CHECK(!ns_dap_get_bool(got, "success", true));
	NS_CHECK_STR(ns_dap_get_str(got, "message", NULL), "cannot evaluate 'x+': 3");
	const cJSON *error = ns_dap_get_obj(ns_dap_get_obj(got, "body"), "error");
	NS_CHECK_INT(ns_dap_get_int(error, "id", -1), 1042);
	NS_CHECK_STR(ns_dap_get_str(error, "format", NULL), "cannot evaluate 'x+': 3");
	NS_CHECK(ns_dap_get_bool(error, "showUser", false));
	CHECK_SCHEMA("ErrorResponse", got);
	cJSON_Delete(got);
	cJSON_Delete(req);
	ns_dap_conn_destroy(w);
	ns_dap_conn_destroy(r);
}

NS_TEST(test_dap_msg__events)
{
	cJSON *ev = ns_dap_event("initialized", NULL);
	NS_CHECK_STR(ns_dap_get_str(ev, "type", NULL), "event");
	NS_CHECK_STR(ns_dap_get_str(ev, "event", NULL), "initialized");
	NS_CHECK(!cJSON_GetObjectItemCaseSensitive(ev, "body"));
	cJSON *wire = over_the_wire(ev);
	CHECK_SCHEMA("InitializedEvent", wire);
	cJSON_Delete(wire);
	cJSON_Delete(ev);

	cJSON *body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "category", "console");
	cJSON_AddStringToObject(body, "output", "x = 42\n");
	cJSON *src = cJSON_AddObjectToObject(body, "source");
	cJSON_AddStringToObject(src, "path", "/src/main.c");
	cJSON_AddNumberToObject(body, "line", 17);
	ev = ns_dap_event("output", body);
	wire = over_the_wire(ev);
	CHECK_SCHEMA("OutputEvent", wire);
	NS_CHECK_STR(ns_dap_get_str(ns_dap_get_obj(wire, "body"), "output", NULL), "x = 42\n");
	cJSON_Delete(wire);
	cJSON_Delete(ev);

	body = cJSON_Parse("{\"reason\":\"snapshot\",\"threadId\":3,\"description\":\"hit\"}");
	ev = ns_dap_event("stopped", body);
	wire = over_the_wire(ev);
	CHECK_SCHEMA("StoppedEvent", wire);
	cJSON_Delete(wire);
	cJSON_Delete(ev);
}

NS_TEST(test_dap_msg__request)
{
	cJSON *args = cJSON_Parse("{\"clientID\":\"dap-run\",\"adapterID\":\"nonstop\"}");
	cJSON *req = ns_dap_request("initialize", args);
	NS_CHECK_STR(ns_dap_get_str(req, "type", NULL), "request");
	NS_CHECK_STR(ns_dap_get_str(req, "command", NULL), "initialize");
	NS_CHECK(ns_dap_get_obj(req, "arguments") == args);
	cJSON *wire = over_the_wire(req);
	CHECK_SCHEMA("InitializeRequest", wire);
	cJSON_Delete(wire);
	cJSON_Delete(req);

	req = ns_dap_request("configurationDone", NULL);
	NS_CHECK(!cJSON_GetObjectItemCaseSensitive(req, "arguments"));
	wire = over_the_wire(req);
	CHECK_SCHEMA("ConfigurationDoneRequest", wire);
	cJSON_Delete(wire);
	cJSON_Delete(req);
}

/* The checker itself must reject bad messages, or the checks above prove nothing. */
NS_TEST(test_dap_msg__schema_checker_rejects)
{
	cJSON *bad = cJSON_Parse("{\"seq\":1,\"type\":\"response\",\"success\":true,"
	                         "\"command\":\"threads\"}"); // no request_seq
	int v = schema_valid("Response", bad);
	NS_CHECK(v != 1);
	cJSON_Delete(bad);
	bad = cJSON_Parse("{\"seq\":1,\"type\":\"response\",\"request_seq\":1,\"success\":false,"
	                  "\"command\":\"x\"}"); // ErrorResponse requires a body
	NS_CHECK(schema_valid("ErrorResponse", bad) != 1);
	cJSON_Delete(bad);
	bad = cJSON_Parse("{\"seq\":0,\"type\":\"event\",\"event\":\"initialized\"}"); // seq >= 1
	NS_CHECK(schema_valid("InitializedEvent", bad) != 1);
	cJSON_Delete(bad);
	if (v == -1)
		printf("  note: schema checks were skipped\n");
}

NS_TEST(test_dap_msg__getters_never_crash)
{
	cJSON *o = cJSON_Parse("{\"s\":\"str\",\"i\":42,\"neg\":-7,\"f\":1.5,\"big\":1e300,"
	                       "\"t\":true,\"fl\":false,\"n\":null,\"o\":{},\"a\":[1]}");
	NS_CHECK_STR(ns_dap_get_str(o, "s", "d"), "str");
	NS_CHECK_STR(ns_dap_get_str(o, "i", "d"), "d");
	NS_CHECK_STR(ns_dap_get_str(o, "missing", "d"), "d");
	NS_CHECK(ns_dap_get_str(o, "n", NULL) == NULL);
	NS_CHECK_INT(ns_dap_get_int(o, "i", 0), 42);
	NS_CHECK_INT(ns_dap_get_int(o, "neg", 0), -7);
	NS_CHECK_INT(ns_dap_get_int(o, "f", 9), 9);
	NS_CHECK_INT(ns_dap_get_int(o, "big", 9), 9);
	NS_CHECK_INT(ns_dap_get_int(o, "s", 9), 9);
	NS_CHECK_INT(ns_dap_get_int(o, "t", 9), 9);
	NS_CHECK(ns_dap_get_bool(o, "t", false));
	NS_CHECK(!ns_dap_get_bool(o, "fl", true));
	NS_CHECK(ns_dap_get_bool(o, "i", true));
	NS_CHECK(!ns_dap_get_bool(o, "n", false));
	NS_CHECK(ns_dap_get_obj(o, "o") != NULL);
	NS_CHECK(ns_dap_get_obj(o, "a") == NULL);
	NS_CHECK(ns_dap_get_arr(o, "a") != NULL);
	NS_CHECK(ns_dap_get_arr(o, "o") == NULL);
	// Not an object at all, or NULL.
	const cJSON *arr = ns_dap_get_arr(o, "a");
	NS_CHECK_STR(ns_dap_get_str(arr, "s", "d"), "d");
	NS_CHECK_INT(ns_dap_get_int(NULL, "i", 5), 5);
	NS_CHECK(ns_dap_get_bool(NULL, "t", true));
	NS_CHECK(ns_dap_get_obj(NULL, "o") == NULL);
	NS_CHECK(ns_dap_get_arr(o, NULL) == NULL);
	cJSON_Delete(o);
}

struct calls {
	int a, b;
	const cJSON *last_args;
};

static void handle_a(void *ctx, const cJSON *request, const cJSON *arguments)
{
	(void)request;
	struct calls *c = ctx;
	c->a++;
	c->last_args = arguments;
}

static void handle_b(void *ctx, const cJSON *request, const cJSON *arguments)
{
	(void)request;
	struct calls *c = ctx;
	c->b++;
	c->last_args = arguments;
}

NS_TEST(test_dap_msg__dispatch)
{
	static const struct ns_dap_command table[] = {
	        {"alpha", handle_a},
	        {"beta", handle_b},
	        {NULL, NULL},
	};
	struct calls calls = {0};
	cJSON *r = cJSON_Parse("{\"seq\":1,\"type\":\"request\",\"command\":\"beta\","
	                       "\"arguments\":{\"k\":1}}");
	NS_CHECK(ns_dap_dispatch(table, &calls, r));
	NS_CHECK_INT(calls.b, 1);
	NS_CHECK(calls.last_args == cJSON_GetObjectItemCaseSensitive(r, "arguments"));
	cJSON_Delete(r);

	r = cJSON_Parse("{\"seq\":2,\"type\":\"request\",\"command\":\"alpha\"}");
	NS_CHECK(ns_dap_dispatch(table, &calls, r));
	NS_CHECK_INT(calls.a, 1);
	NS_CHECK(calls.last_args == NULL);
	cJSON_Delete(r);

	static const char *const bad[] = {
	        "{\"seq\":3,\"command\":\"gamma\"}",                  // unknown
	        "{\"command\":\"alpha\"}",                            // no seq
	        "{\"seq\":\"3\",\"command\":\"alpha\"}",              // seq not a number
	        "{\"seq\":3.5,\"command\":\"alpha\"}",                // seq not an integer
	        "{\"seq\":3,\"command\":7}",                          // command not a string
	        "{\"seq\":3,\"command\":\"alpha\",\"arguments\":[]}", // arguments not an object
	        "[]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = cJSON_Parse(bad[i]);
		NS_CHECK(!ns_dap_dispatch(table, &calls, r));
		cJSON_Delete(r);
	}
	NS_CHECK(!ns_dap_dispatch(table, &calls, NULL));
	NS_CHECK_INT(calls.a, 1);
	NS_CHECK_INT(calls.b, 1);
}
