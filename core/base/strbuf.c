#include "base/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void ns_strbuf_init(struct ns_strbuf *sb)
{
	memset(sb, 0, sizeof(*sb));
}

void ns_strbuf_deinit(struct ns_strbuf *sb)
{
	free(sb->buf);
	memset(sb, 0, sizeof(*sb));
}

void ns_strbuf_recycle(struct ns_strbuf *sb, size_t keep_cap)
{
	if (sb->oom || sb->cap > keep_cap)
		ns_strbuf_deinit(sb);
	else
		ns_strbuf_reset(sb);
}

void ns_strbuf_reset(struct ns_strbuf *sb)
{
	sb->len = 0;
	if (sb->buf)
		sb->buf[0] = 0;
}

static bool grow(struct ns_strbuf *sb, size_t extra)
{
	size_t need;
	if (sb->oom || __builtin_add_overflow(sb->len, extra + 1, &need)) {
		sb->oom = true;
		return false;
	}
	if (need <= sb->cap)
		return true;
	size_t cap = sb->cap ? sb->cap : 64;
	while (cap < need) {
		if (__builtin_mul_overflow(cap, 2, &cap)) {
			sb->oom = true;
			return false;
		}
	}
	char *p = realloc(sb->buf, cap);
	if (!p) {
		sb->oom = true;
		return false;
	}
	sb->buf = p;
	sb->cap = cap;
	return true;
}

void ns_strbuf_append(struct ns_strbuf *sb, const void *data, size_t len)
{
	if (!grow(sb, len))
		return;
	if (len)
		memcpy(sb->buf + sb->len, data, len);
	sb->len += len;
	sb->buf[sb->len] = 0;
}

char *ns_strbuf_room(struct ns_strbuf *sb, size_t extra)
{
	return grow(sb, extra) ? sb->buf + sb->len : NULL;
}

void ns_strbuf_added(struct ns_strbuf *sb, size_t n)
{
	sb->len += n;
	sb->buf[sb->len] = 0;
}

void ns_strbuf_puts(struct ns_strbuf *sb, const char *s)
{
	ns_strbuf_append(sb, s, strlen(s));
}

void ns_strbuf_putc(struct ns_strbuf *sb, char c)
{
	ns_strbuf_append(sb, &c, 1);
}

void ns_strbuf_printf(struct ns_strbuf *sb, const char *fmt, ...)
{
	va_list ap, ap2;
	va_start(ap, fmt);
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n >= 0 && grow(sb, (size_t)n)) {
		vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap2);
		sb->len += (size_t)n;
	}
	va_end(ap2);
}

// "00" "01" ... "ff": two digits per byte with one load (a frame stream is mostly hex).
#define NS_HEX16(h)                                                                        \
	h "0" h "1" h "2" h "3" h "4" h "5" h "6" h "7" h "8" h "9" h "a" h "b" h "c" h "d" \
	        h "e" h "f"
static const char hex_pairs[] = NS_HEX16("0") NS_HEX16("1") NS_HEX16("2") NS_HEX16("3")
        NS_HEX16("4") NS_HEX16("5") NS_HEX16("6") NS_HEX16("7") NS_HEX16("8") NS_HEX16("9")
                NS_HEX16("a") NS_HEX16("b") NS_HEX16("c") NS_HEX16("d") NS_HEX16("e")
                        NS_HEX16("f");

void ns_strbuf_hex(struct ns_strbuf *sb, const void *data, size_t len)
{
	const unsigned char *p = data;
	if (len > SIZE_MAX / 2) {
		sb->oom = true;
		return;
	}
	char *d = ns_strbuf_room(sb, len * 2);
	if (!d)
		return;
	for (size_t i = 0; i < len; i++)
		memcpy(d + 2 * i, hex_pairs + 2 * p[i], 2);
	ns_strbuf_added(sb, len * 2);
}

const char *ns_strbuf_str(const struct ns_strbuf *sb)
{
	return sb->buf ? sb->buf : "";
}

char *ns_strbuf_steal(struct ns_strbuf *sb)
{
	char *p = sb->buf;
	if (!p)
		p = calloc(1, 1);
	memset(sb, 0, sizeof(*sb));
	return p;
}

int ns_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int ns_hex_decode(const char *hex, size_t n, void *out)
{
	unsigned char *o = out;
	if (n % 2)
		return -1;
	for (size_t i = 0; i < n; i += 2) {
		int hi = ns_hex_digit(hex[i]), lo = ns_hex_digit(hex[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		o[i / 2] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}
