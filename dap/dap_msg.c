/* DAP message construction, typed getters and dispatch. Message shapes follow the
 * DAP JSON schema (ProtocolMessage, Request, Response, ErrorResponse, Event). */
#define _GNU_SOURCE
#include "dap/dap.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A new message object with "seq" (a placeholder: ns_dap_write assigns the real one)
 * and "type"; on failure frees @body. */
static cJSON *new_message(const char *type, cJSON *body)
{
	cJSON *m = cJSON_CreateObject();
	if (!m || !cJSON_AddNumberToObject(m, "seq", 0) ||
	    !cJSON_AddStringToObject(m, "type", type)) {
		cJSON_Delete(m);
		cJSON_Delete(body);
		return NULL;
	}
	return m;
}

/* Attach @child under @key (NULL @child: nothing); on failure frees both. */
static cJSON *attach(cJSON *m, const char *key, cJSON *child)
{
	if (!child)
		return m;
	if (!cJSON_AddItemToObject(m, key, child)) {
		cJSON_Delete(child);
		cJSON_Delete(m);
		return NULL;
	}
	return m;
}

cJSON *ns_dap_response(const cJSON *request, bool success, const char *message, cJSON *body)
{
	cJSON *m = new_message("response", body);
	if (!m)
		return NULL;
	// The schema wants an object body on every failed response (ErrorResponse).
	if (!success && !body) {
		body = cJSON_CreateObject();
		if (!body) {
			cJSON_Delete(m);
			return NULL;
		}
	}
	long long rseq = ns_dap_get_int(request, "seq", 0);
	const char *cmd = ns_dap_get_str(request, "command", "");
	if (!cJSON_AddNumberToObject(m, "request_seq", (double)rseq) ||
	    !cJSON_AddBoolToObject(m, "success", success) ||
	    !cJSON_AddStringToObject(m, "command", cmd) ||
	    ((message || !success) &&
	     !cJSON_AddStringToObject(m, "message", message ? message : "failed"))) {
		cJSON_Delete(m);
		cJSON_Delete(body);
		return NULL;
	}
	return attach(m, "body", body);
}

cJSON *ns_dap_event(const char *event, cJSON *body)
{
	cJSON *m = new_message("event", body);
	if (!m)
		return NULL;
	if (!cJSON_AddStringToObject(m, "event", event ? event : "")) {
		cJSON_Delete(m);
		cJSON_Delete(body);
		return NULL;
	}
	return attach(m, "body", body);
}

cJSON *ns_dap_request(const char *command, cJSON *arguments)
{
	cJSON *m = new_message("request", arguments);
	if (!m)
		return NULL;
	if (!cJSON_AddStringToObject(m, "command", command ? command : "")) {
		cJSON_Delete(m);
		cJSON_Delete(arguments);
		return NULL;
	}
	return attach(m, "arguments", arguments);
}

struct ns_err *ns_dap_send_error(struct ns_dap_conn *c, const cJSON *request, int id,
                                 const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text = NULL;
	int n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		return &ns_err_nomem;
	cJSON *body = cJSON_CreateObject();
	cJSON *error = cJSON_AddObjectToObject(body, "error");
	if (!error || !cJSON_AddNumberToObject(error, "id", id) ||
	    !cJSON_AddStringToObject(error, "format", text) ||
	    !cJSON_AddBoolToObject(error, "showUser", true)) {
		cJSON_Delete(body);
		free(text);
		return &ns_err_nomem;
	}
	cJSON *resp = ns_dap_response(request, false, text, body);
	free(text);
	if (!resp)
		return &ns_err_nomem;
	struct ns_err *err = ns_dap_write(c, resp);
	cJSON_Delete(resp);
	return err;
}

/* ---- getters ---- */

static const cJSON *item(const cJSON *obj, const char *key)
{
	if (!cJSON_IsObject(obj) || !key)
		return NULL;
	return cJSON_GetObjectItemCaseSensitive(obj, key);
}

const char *ns_dap_get_str(const cJSON *obj, const char *key, const char *def)
{
	const cJSON *v = item(obj, key);
	return cJSON_IsString(v) && v->valuestring ? v->valuestring : def;
}

long long ns_dap_get_int(const cJSON *obj, const char *key, long long def)
{
	const cJSON *v = item(obj, key);
	if (!cJSON_IsNumber(v))
		return def;
	double d = v->valuedouble;
	// Only exact integers within range: 1.5 or 1e300 is a wrong type, not a value.
	if (!isfinite(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
		return def;
	long long i = (long long)d;
	return (double)i == d ? i : def;
}

bool ns_dap_get_bool(const cJSON *obj, const char *key, bool def)
{
	const cJSON *v = item(obj, key);
	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

const cJSON *ns_dap_get_obj(const cJSON *obj, const char *key)
{
	const cJSON *v = item(obj, key);
	return cJSON_IsObject(v) ? v : NULL;
}

const cJSON *ns_dap_get_arr(const cJSON *obj, const char *key)
{
	const cJSON *v = item(obj, key);
	return cJSON_IsArray(v) ? v : NULL;
}

/* ---- dispatch ---- */

bool ns_dap_dispatch(const struct ns_dap_command *table, void *ctx, const cJSON *request)
{
	const char *cmd = ns_dap_get_str(request, "command", NULL);
	const cJSON *args = item(request, "arguments");
	// seq: an integer, and the schema says >= 1; 0 is tolerated.
	if (!table || ns_dap_get_int(request, "seq", -1) < 0 || !cmd)
		return false;
	if (args && !cJSON_IsObject(args))
		return false;
	for (const struct ns_dap_command *t = table; t->command; t++) {
		if (t->fn && strcmp(t->command, cmd) == 0) {
			t->fn(ctx, request, args);
			return true;
		}
	}
	return false;
}
