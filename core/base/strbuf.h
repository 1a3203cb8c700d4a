/* core/base growable string buffer (host side only: allocates). */
#ifndef NS_BASE_STRBUF_H
#define NS_BASE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

struct ns_strbuf {
	char *buf; /* NUL-terminated when len > 0 or after any append; owned */
	size_t len, cap;
	bool oom; /* sticky: an append failed for lack of memory */
};

void ns_strbuf_init(struct ns_strbuf *sb);
void ns_strbuf_deinit(struct ns_strbuf *sb);
void ns_strbuf_reset(struct ns_strbuf *sb);
/** Empty @sb for reuse: its memory is kept unless it holds more than @keep_cap bytes
 * or an append failed (then it is freed, and the oom flag cleared). */
void ns_strbuf_recycle(struct ns_strbuf *sb, size_t keep_cap);
void ns_strbuf_append(struct ns_strbuf *sb, const void *data, size_t len);
void ns_strbuf_puts(struct ns_strbuf *sb, const char *s);
void ns_strbuf_putc(struct ns_strbuf *sb, char c);
void ns_strbuf_printf(struct ns_strbuf *sb, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
/** Room for @extra more bytes: where to write them (then ns_strbuf_added with how
 * many were written), or NULL if out of memory (sticky oom). */
char *ns_strbuf_room(struct ns_strbuf *sb, size_t extra);
/** Account for @n bytes written at ns_strbuf_room's pointer (n <= its @extra). */
void ns_strbuf_added(struct ns_strbuf *sb, size_t n);
/** Append @len bytes as lowercase hex. */
void ns_strbuf_hex(struct ns_strbuf *sb, const void *data, size_t len);
/** Contents as a C string ("" if empty); borrowed, valid until the next append. */
const char *ns_strbuf_str(const struct ns_strbuf *sb);
/** Take ownership of the buffer (malloc'd, NUL-terminated, never NULL unless OOM). */
char *ns_strbuf_steal(struct ns_strbuf *sb);

/** Decode hex text @hex of @n chars (even) into @out; -1 on a bad digit. */
int ns_hex_decode(const char *hex, size_t n, void *out);
/** Value of one hex digit or -1. */
int ns_hex_digit(char c);

#endif
