/* core/base error type: a library function that can fail returns struct ns_err *,
 * NULL on success. Modelled on drgn's struct drgn_error: out-of-memory is a static
 * object so reporting it never allocates. */
#ifndef NS_BASE_ERR_H
#define NS_BASE_ERR_H

#include <stdarg.h>
#include <stdint.h>

enum ns_err_code {
	NS_ERR_OK = 0,
	NS_ERR_NOMEM,
	NS_ERR_INVALID, /* bad argument or malformed input */
	NS_ERR_OS,      /* a system call failed; errnum is set */
	NS_ERR_NOT_FOUND,
	NS_ERR_FORMAT, /* corrupt or unsupported ELF/DWARF/packet */
	NS_ERR_FAULT,  /* memory at addr cannot be read */
	NS_ERR_SYNTAX, /* expression syntax; column is set */
	NS_ERR_TYPE,   /* expression type error; column is set */
	NS_ERR_UNSUPPORTED,
	NS_ERR_PROTOCOL, /* peer broke RSP/DAP rules */
	NS_ERR_CLOSED,   /* peer closed the connection */
	NS_ERR_TIMEOUT,
	NS_ERR_OPTIMIZED_OUT, /* a variable without a location at this pc */
};

struct ns_err {
	enum ns_err_code code;
	int errnum;    /* errno for NS_ERR_OS, else 0 */
	uint64_t addr; /* NS_ERR_FAULT: the address that could not be read */
	int column;    /* NS_ERR_SYNTAX/TYPE: 1-based column, 0 if none */
	char msg[];    /* NUL-terminated human-readable message */
};

/** The static out-of-memory error. ns_err_destroy() ignores it. */
extern struct ns_err ns_err_nomem;

/** New error with a printf-style message. Never returns NULL (falls back to &ns_err_nomem). */
struct ns_err *ns_err_create(enum ns_err_code code, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
struct ns_err *ns_err_createv(enum ns_err_code code, const char *fmt, va_list ap);
/** NS_ERR_OS error: message is "<fmt>: strerror(errnum)". */
struct ns_err *ns_err_errno(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** NS_ERR_FAULT error carrying @addr. */
struct ns_err *ns_err_fault(uint64_t addr, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
/** NS_ERR_SYNTAX/NS_ERR_TYPE error at 1-based @column. */
struct ns_err *ns_err_at(enum ns_err_code code, int column, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/** Prefix context: returns a new error "<fmt>: <err->msg>" with err's code/errnum/addr/column,
 * and destroys @err. */
struct ns_err *ns_err_wrap(struct ns_err *err, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
/** Free @err; NULL and &ns_err_nomem are no-ops. */
void ns_err_destroy(struct ns_err *err);
/** Name of a code, e.g. "NS_ERR_FAULT". */
const char *ns_err_code_name(enum ns_err_code code);

#endif
