/* Frames waiting for the client, first in first out, in chunks of contiguous records
 * (a uint32 size, 4 bytes of padding, the frame, padding to 8). The stub pops a ring's
 * record straight into the space reserve() gives and keeps it with commit(): no
 * allocation or copy per frame. One emptied chunk is kept as a spare, so a steady
 * stream of frames runs without malloc at all. */
#include "stub/stub.h"

#include <stdlib.h>
#include <string.h>

enum { CHUNK_BYTES = 1 << 20, REC_HDR = 8 };

struct ns_stub_chunk {
	struct ns_stub_chunk *next;
	size_t rd, wr; /* record offsets in data: the next to read, where the next goes */
	uint8_t data[CHUNK_BYTES];
};

static size_t rec_size(size_t n)
{
	return REC_HDR + ((n + 7) & ~(size_t)7);
}

static void retire(struct ns_stub_queue *q, struct ns_stub_chunk *c)
{
	if (q->spare)
		free(c);
	else
		q->spare = c;
}

uint8_t *ns_stub__queue_reserve(struct ns_stub_queue *q, size_t cap)
{
	if (cap > CHUNK_BYTES - REC_HDR)
		return NULL;
	struct ns_stub_chunk *t = q->tail;
	if (!t || CHUNK_BYTES - t->wr < rec_size(cap)) {
		struct ns_stub_chunk *c = q->spare;
		if (c)
			q->spare = NULL;
		else if (!(c = malloc(sizeof(*c))))
			return NULL;
		c->next = NULL;
		c->rd = c->wr = 0;
		if (t)
			t->next = c;
		else
			q->head = c;
		q->tail = t = c;
	}
	return t->data + t->wr + REC_HDR;
}

void ns_stub__queue_commit(struct ns_stub_queue *q, size_t n)
{
	struct ns_stub_chunk *t = q->tail;
	uint32_t sz = (uint32_t)n;
	memcpy(t->data + t->wr, &sz, sizeof(sz));
	t->wr += rec_size(n);
	q->count++;
	q->bytes += n;
}

uint8_t *ns_stub__queue_front(struct ns_stub_queue *q, size_t *n)
{
	struct ns_stub_chunk *h;
	// Chunks left empty behind the tail (reserved, never committed) go first.
	while ((h = q->head) && h->rd == h->wr && h != q->tail) {
		q->head = h->next;
		retire(q, h);
	}
	if (!h || h->rd == h->wr)
		return NULL;
	uint32_t sz;
	memcpy(&sz, h->data + h->rd, sizeof(sz));
	*n = sz;
	return h->data + h->rd + REC_HDR;
}

void ns_stub__queue_pop(struct ns_stub_queue *q)
{
	size_t n;
	if (!ns_stub__queue_front(q, &n))
		return;
	struct ns_stub_chunk *h = q->head;
	h->rd += rec_size(n);
	q->count--;
	q->bytes -= n;
	if (h->rd == h->wr) {
		if (h == q->tail) {
			h->rd = h->wr = 0; // empty: the tail chunk starts over
		} else {
			q->head = h->next;
			retire(q, h);
		}
	}
}

void ns_stub__queue_clear(struct ns_stub_queue *q)
{
	struct ns_stub_chunk *c = q->head;
	while (c) {
		struct ns_stub_chunk *n = c->next;
		free(c);
		c = n;
	}
	free(q->spare);
	memset(q, 0, sizeof(*q));
}

int ns_stub__drain_interval(int cur_ms, size_t frames, size_t bytes)
{
	if (bytes >= NS_STUB_DRAIN_RING_BYTES || (frames && frames < NS_STUB_DRAIN_BUSY / 4))
		return cur_ms / 2 < NS_STUB_DRAIN_MS ? NS_STUB_DRAIN_MS : cur_ms / 2;
	if (!frames || frames >= NS_STUB_DRAIN_BUSY)
		return cur_ms * 2 > NS_STUB_DRAIN_MAX_MS ? NS_STUB_DRAIN_MAX_MS : cur_ms * 2;
	return cur_ms;
}
