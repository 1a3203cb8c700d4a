/* core/base logging: libraries never print; they log through a callback that the
 * program's main() sets (libbpf's libbpf_set_print). */
#ifndef NS_BASE_LOG_H
#define NS_BASE_LOG_H

enum ns_log_level { NS_LOG_ERROR, NS_LOG_WARN, NS_LOG_INFO, NS_LOG_DEBUG };

typedef void (*ns_log_fn)(enum ns_log_level level, const char *msg, void *ctx);

/** Set the process-wide sink (NULL: drop everything). Not thread-safe against ns_log. */
void ns_log_set(ns_log_fn fn, void *ctx, enum ns_log_level max_level);
void ns_log(enum ns_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** A sink writing "nonstop: <level>: msg\n" to stderr, for main()s. */
void ns_log_stderr(enum ns_log_level level, const char *msg, void *ctx);

#endif
