#include "base/arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ns_arena_chunk {
	struct ns_arena_chunk *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

void ns_arena_init(struct ns_arena *a)
{
	a->chunks = NULL;
	a->chunk_size = 16384;
}

void ns_arena_deinit(struct ns_arena *a)
{
	struct ns_arena_chunk *c = a->chunks;
	while (c) {
		struct ns_arena_chunk *n = c->next;
		free(c);
		c = n;
	}
	a->chunks = NULL;
}

void *ns_arena_alloc(struct ns_arena *a, size_t size)
{
	size_t need;
	if (__builtin_add_overflow(size, 15, &need))
		return NULL;
	need &= ~(size_t)15;
	struct ns_arena_chunk *c = a->chunks;
	if (!c || c->cap - c->used < need) {
		size_t cap = need > a->chunk_size ? need : a->chunk_size;
		size_t total;
		if (__builtin_add_overflow(cap, sizeof(*c), &total))
			return NULL;
		c = malloc(total);
		if (!c)
			return NULL;
		c->used = 0;
		c->cap = cap;
		if (a->chunks && need > a->chunk_size) {
			// A big one-off block goes behind the current chunk so the
			// current chunk's free space stays usable.
			c->next = a->chunks->next;
			a->chunks->next = c;
		} else {
			c->next = a->chunks;
			a->chunks = c;
		}
	}
	void *p = c->data + c->used;
	c->used += need;
	memset(p, 0, size);
	return p;
}

void *ns_arena_calloc(struct ns_arena *a, size_t n, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total))
		return NULL;
	return ns_arena_alloc(a, total);
}

char *ns_arena_strndup(struct ns_arena *a, const char *s, size_t len)
{
	char *p = ns_arena_alloc(a, len + 1);
	if (p) {
		memcpy(p, s, len);
		p[len] = 0;
	}
	return p;
}

char *ns_arena_strdup(struct ns_arena *a, const char *s)
{
	return ns_arena_strndup(a, s, strlen(s));
}

char *ns_arena_printf(struct ns_arena *a, const char *fmt, ...)
{
	va_list ap, ap2;
	va_start(ap, fmt);
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *p = n < 0 ? NULL : ns_arena_alloc(a, (size_t)n + 1);
	if (p)
		vsnprintf(p, (size_t)n + 1, fmt, ap2);
	va_end(ap2);
	return p;
}
