#include "base/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// GCC allows a static initializer for a flexible array member.
struct ns_err ns_err_nomem = {.code = NS_ERR_NOMEM, .msg = "out of memory"};

struct ns_err *ns_err_createv(enum ns_err_code code, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		n = 0;
	struct ns_err *e = calloc(1, sizeof(*e) + (size_t)n + 1);
	if (!e)
		return &ns_err_nomem;
	e->code = code;
	vsnprintf(e->msg, (size_t)n + 1, fmt, ap);
	return e;
}

struct ns_err *ns_err_create(enum ns_err_code code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	struct ns_err *e = ns_err_createv(code, fmt, ap);
	va_end(ap);
	return e;
}

struct ns_err *ns_err_errno(int errnum, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	struct ns_err *e = ns_err_create(NS_ERR_OS, "%s: %s", buf, strerror(errnum));
	if (e != &ns_err_nomem)
		e->errnum = errnum;
	return e;
}

struct ns_err *ns_err_fault(uint64_t addr, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	struct ns_err *e = ns_err_createv(NS_ERR_FAULT, fmt, ap);
	va_end(ap);
	if (e != &ns_err_nomem)
		e->addr = addr;
	return e;
}

struct ns_err *ns_err_at(enum ns_err_code code, int column, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	struct ns_err *e = ns_err_createv(code, fmt, ap);
	va_end(ap);
	if (e != &ns_err_nomem)
		e->column = column;
	return e;
}

struct ns_err *ns_err_wrap(struct ns_err *err, const char *fmt, ...)
{
	if (!err || err == &ns_err_nomem)
		return err;
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	struct ns_err *e = ns_err_create(err->code, "%s: %s", buf, err->msg);
	if (e == &ns_err_nomem)
		return err; /* keep the original rather than lose it */
	e->errnum = err->errnum;
	e->addr = err->addr;
	e->column = err->column;
	ns_err_destroy(err);
	return e;
}

void ns_err_destroy(struct ns_err *err)
{
	if (err && err != &ns_err_nomem)
		free(err);
}

const char *ns_err_code_name(enum ns_err_code code)
{
	switch (code) {
#define C(x)    \
	case x: \
		return #x;
		C(NS_ERR_OK)
		C(NS_ERR_NOMEM)
		C(NS_ERR_INVALID)
		C(NS_ERR_OS)
		C(NS_ERR_NOT_FOUND)
		C(NS_ERR_FORMAT)
		C(NS_ERR_FAULT)
		C(NS_ERR_SYNTAX)
		C(NS_ERR_TYPE)
		C(NS_ERR_UNSUPPORTED)
		C(NS_ERR_PROTOCOL)
		C(NS_ERR_CLOSED)
		C(NS_ERR_TIMEOUT)
		C(NS_ERR_OPTIMIZED_OUT)
#undef C
	}
	return "NS_ERR_?";
}
