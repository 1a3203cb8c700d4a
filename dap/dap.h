/* dap/: Debug Adapter Protocol plumbing: Content-Length framing over a pair of fds
 * (stdio or a TCP socket), message construction on cJSON, and a dispatch table.
 * Malformed input gets an error response (if it had a seq and command) or is
 * skipped; a broken frame header closes the connection cleanly. Never crashes. */
#ifndef NS_DAP_H
#define NS_DAP_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

struct ns_dap_conn;

/** Wrap @rfd/@wfd (owned; closed by destroy, may be equal). */
struct ns_err *ns_dap_conn_create(int rfd, int wfd, struct ns_dap_conn **out);
void ns_dap_conn_destroy(struct ns_dap_conn *c);
int ns_dap_fd(const struct ns_dap_conn *c);
/** A complete message is already buffered. */
bool ns_dap_buffered(const struct ns_dap_conn *c);

/** Read the next message (waits up to @timeout_ms, -1 forever). *@out is a parsed
 * JSON object (caller frees with cJSON_Delete). Frames whose body is not a JSON
 * object yield NS_ERR_FORMAT (the frame is consumed; the connection stays usable).
 * A bad header (no Content-Length, absurd length) yields NS_ERR_PROTOCOL and the
 * connection should be closed. NS_ERR_CLOSED on EOF, NS_ERR_TIMEOUT. Maximum body
 * 64 MiB. */
struct ns_err *ns_dap_read(struct ns_dap_conn *c, int timeout_ms, cJSON **out);
/** Write @msg with a "seq" assigned by the connection (overwritten if present).
 * Thread-safe (a mutex serialises writers). Does not take ownership. */
struct ns_err *ns_dap_write(struct ns_dap_conn *c, cJSON *msg);

/* Message builders: each returns a new object (caller owns) or NULL on OOM.
 * @body may be NULL; ownership of @body passes to the message. */
cJSON *ns_dap_response(const cJSON *request, bool success, const char *message, cJSON *body);
cJSON *ns_dap_event(const char *event, cJSON *body);
cJSON *ns_dap_request(const char *command, cJSON *arguments);
/** Send an error response: body {"error": {"id": id, "format": message, "showUser": true}}. */
struct ns_err *ns_dap_send_error(struct ns_dap_conn *c, const cJSON *request, int id,
                                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Typed getters that never crash on a wrong type: return @def if missing or wrong. */
const char *ns_dap_get_str(const cJSON *obj, const char *key, const char *def);
long long ns_dap_get_int(const cJSON *obj, const char *key, long long def);
bool ns_dap_get_bool(const cJSON *obj, const char *key, bool def);
/** Child object/array of the given type, or NULL. */
const cJSON *ns_dap_get_obj(const cJSON *obj, const char *key);
const cJSON *ns_dap_get_arr(const cJSON *obj, const char *key);

/* Dispatch: a table of command handlers. */
typedef void (*ns_dap_handler)(void *ctx, const cJSON *request, const cJSON *arguments);
struct ns_dap_command {
	const char *command;
	ns_dap_handler fn;
};
/** Call the handler of @request's command from @table (terminated by {NULL, NULL}).
 * Returns false if the request is malformed (no integer seq, no string command, or
 * arguments present but not an object) or the command is unknown; the caller then
 * sends an error response. */
bool ns_dap_dispatch(const struct ns_dap_command *table, void *ctx, const cJSON *request);

#endif
