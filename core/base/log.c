#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>

static ns_log_fn sink;
static void *sink_ctx;
static enum ns_log_level sink_max = NS_LOG_INFO;

void ns_log_set(ns_log_fn fn, void *ctx, enum ns_log_level max_level)
{
	sink = fn;
	sink_ctx = ctx;
	sink_max = max_level;
}

void ns_log(enum ns_log_level level, const char *fmt, ...)
{
	if (!sink || level > sink_max)
		return;
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	sink(level, buf, sink_ctx);
}

void ns_log_stderr(enum ns_log_level level, const char *msg, void *ctx)
{
	static const char *names[] = {"error", "warning", "info", "debug"};
	(void)ctx;
	fprintf(stderr, "nonstop: %s: %s\n", names[level], msg);
}
