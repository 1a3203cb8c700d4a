/* core/base arena: objects that share one lifetime (a CU's types, one DAP request)
 * come from an arena and die together (libgit2's pool). */
#ifndef NS_BASE_ARENA_H
#define NS_BASE_ARENA_H

#include <stddef.h>

struct ns_arena_chunk;

struct ns_arena {
	struct ns_arena_chunk *chunks;
	size_t chunk_size;
};

/** Initialise caller-owned @a; no allocation until the first ns_arena_alloc. */
void ns_arena_init(struct ns_arena *a);
/** Free everything allocated from @a. */
void ns_arena_deinit(struct ns_arena *a);
/** @size zeroed bytes, 16-byte aligned, valid until ns_arena_deinit; NULL on OOM or overflow. */
void *ns_arena_alloc(struct ns_arena *a, size_t size);
/** @n * @size zeroed bytes with overflow check. */
void *ns_arena_calloc(struct ns_arena *a, size_t n, size_t size);
/** Copy of @s (NUL-terminated) in the arena. */
char *ns_arena_strdup(struct ns_arena *a, const char *s);
/** Copy of @len bytes of @s plus a NUL. */
char *ns_arena_strndup(struct ns_arena *a, const char *s, size_t len);
/** printf into the arena. */
char *ns_arena_printf(struct ns_arena *a, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

#endif
