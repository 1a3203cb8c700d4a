/* RSP framing (GDB manual, "Remote Protocol" > "Overview"): a packet is
 * "$<data>#<2 hex checksum>", the checksum being the sum of the transmitted data bytes
 * modulo 256 (escapes and run-length characters included). '}' escapes the next byte
 * (sent as byte ^ 0x20); "X*n" repeats X another (n - 29) times. Notifications use '%'
 * instead of '$' ("Notification Packets"). */
#include "rsp/rsp.h"

#include <emmintrin.h>
#include <stdint.h>
#include <string.h>

enum state {
	ST_IDLE,
	ST_DATA,
	ST_RLE,  /* the byte after '*': the repeat count */
	ST_CSUM, /* reading the two checksum digits */
};

void ns_rsp_parser_init(struct ns_rsp_parser *p, size_t max_len)
{
	memset(p, 0, sizeof(*p));
	p->state = ST_IDLE;
	ns_strbuf_init(&p->payload);
	p->max_len = max_len;
}

void ns_rsp_parser_deinit(struct ns_rsp_parser *p)
{
	ns_strbuf_deinit(&p->payload);
	memset(p, 0, sizeof(*p));
}

static void start_packet(struct ns_rsp_parser *p, bool notify)
{
	p->state = ST_DATA;
	p->csum = 0;
	p->got_csum = 0;
	p->csum_digits = 0;
	p->escape = false;
	p->too_long = false;
	p->bad_digit = false;
	p->is_notify = notify;
	ns_strbuf_reset(&p->payload);
}

static void put(struct ns_rsp_parser *p, uint8_t b)
{
	if (p->too_long)
		return;
	if (p->payload.len >= p->max_len) {
		p->too_long = true;
		ns_strbuf_reset(&p->payload);
		return;
	}
	ns_strbuf_putc(&p->payload, (char)b);
}

static bool needs_escape(uint8_t c)
{
	return c == '$' || c == '#' || c == '}' || c == '*';
}

/* Sixteen bytes at a time (SSE2, which every x86-64 has): the bytes at @s (@n of them)
 * copied to @d up to the first one that needs an escape or the state machine ('$', '#',
 * '}', '*'), or up to the last whole 16 before the end; added to the byte sums in @acc
 * (two 64-bit lanes, _mm_sad_epu8). Returns how many. Stores whole blocks: up to 15
 * bytes past the returned count are written too, so @d must have room for @n bytes. */
static inline __attribute__((always_inline)) size_t clean_run16(const uint8_t *s, size_t n,
                                                                char *d, __m128i *acc)
{
	const __m128i dollar = _mm_set1_epi8('$'), hash = _mm_set1_epi8('#');
	const __m128i brace = _mm_set1_epi8('}'), star = _mm_set1_epi8('*');
	const __m128i zero = _mm_setzero_si128();
	size_t i = 0;
	while (n - i >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(s + i));
		__m128i sp = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, dollar), _mm_cmpeq_epi8(v, hash)),
		                          _mm_or_si128(_mm_cmpeq_epi8(v, brace), _mm_cmpeq_epi8(v, star)));
		unsigned m = (unsigned)_mm_movemask_epi8(sp);
		_mm_storeu_si128((__m128i *)(d + i), v);
		if (m) {
			// The bytes before the first special one: a mask of the lanes below k.
			unsigned k = (unsigned)__builtin_ctz(m);
			const __m128i lane = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
			__m128i keep = _mm_cmplt_epi8(lane, _mm_set1_epi8((char)k));
			*acc = _mm_add_epi64(*acc, _mm_sad_epu8(_mm_and_si128(v, keep), zero));
			return i + k;
		}
		*acc = _mm_add_epi64(*acc, _mm_sad_epu8(v, zero));
		i += 16;
	}
	return i;
}

static inline uint64_t sum16_total(__m128i acc)
{
	return (uint64_t)_mm_cvtsi128_si64(acc) + (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(acc, acc));
}

/* Then eight bytes at a time where none needs escaping (most of a frame stream is hex): a
 * word has a byte equal to c iff has_zero(w ^ c x 8) (exact for "any byte"); the
 * checksum (the byte sum mod 256) adds bytes in four 16-bit lanes, folded before a lane
 * can carry into the next (at most 2 x 255 per word: 128 words). */
#define ONES 0x0101010101010101ull
static inline uint64_t has_zero(uint64_t w)
{
	return (w - ONES) & ~w & (ONES << 7);
}

static inline __attribute__((always_inline)) bool word_needs_escape(uint64_t w)
{
	return has_zero(w ^ ('$' * ONES)) | has_zero(w ^ ('#' * ONES)) |
	       has_zero(w ^ ('}' * ONES)) | has_zero(w ^ ('*' * ONES));
}

static inline uint64_t fold_lanes(uint64_t lanes)
{
	return (lanes & 0xffff) + ((lanes >> 16) & 0xffff) + ((lanes >> 32) & 0xffff) + (lanes >> 48);
}

/* A running byte sum of whole words: add() per word, total() at the end. */
struct word_sum {
	uint64_t sum, lanes;
	unsigned nwords;
};

static inline __attribute__((always_inline)) void word_sum_add(struct word_sum *ws, uint64_t w)
{
	ws->lanes += (w & 0x00ff00ff00ff00ffull) + ((w >> 8) & 0x00ff00ff00ff00ffull);
	if (++ws->nwords == 128) {
		ws->sum += fold_lanes(ws->lanes);
		ws->lanes = 0;
		ws->nwords = 0;
	}
}

static inline uint64_t word_sum_total(const struct word_sum *ws)
{
	return ws->sum + fold_lanes(ws->lanes);
}

/* The payload bytes at the start of @s (@n bytes, none past the packet's room): copied
 * to @d unescaped and added to the checksum, up to the first byte the state machine
 * must see ('#', '$' or '*' outside an escape). Whole words where no byte needs an
 * escape, else a byte at a time. Returns the bytes consumed; *@out_len the bytes
 * written (never more). */
static size_t payload_run(struct ns_rsp_parser *p, const uint8_t *s, size_t n, char *d,
                          size_t *out_len)
{
	struct word_sum ws = {0, 0, 0};
	__m128i acc = _mm_setzero_si128();
	uint8_t csum = p->csum;
	bool esc = p->escape;
	size_t i = 0, o = 0;
	while (i < n) {
		uint64_t w;
		if (!esc && n - i >= 16) {
			// Room: o <= i, so the whole blocks stored at d + o end within d + n.
			size_t k = clean_run16(s + i, n - i, d + o, &acc);
			i += k;
			o += k;
			if (n - i >= 16)
				goto one_byte; // a byte that needs the state machine or an escape
		}
		if (!esc && n - i >= 8 && (memcpy(&w, s + i, 8), !word_needs_escape(w))) {
			memcpy(d + o, &w, 8);
			i += 8;
			o += 8;
			word_sum_add(&ws, w);
			continue;
		}
		if (i == n)
			break;
	one_byte:;
		uint8_t c = s[i];
		if (esc) {
			d[o++] = (char)(c ^ 0x20);
			esc = false;
		} else if (c == '}') {
			esc = true;
		} else if (c == '#' || c == '$' || c == '*') {
			break;
		} else {
			d[o++] = (char)c;
		}
		csum = (uint8_t)(csum + c);
		i++;
	}
	p->csum = (uint8_t)(csum + word_sum_total(&ws) + sum16_total(acc));
	p->escape = esc;
	*out_len = o;
	return i;
}

enum ns_rsp_event_kind ns_rsp_parse(struct ns_rsp_parser *p, const uint8_t *data, size_t len,
                                    size_t *used)
{
	size_t i = 0;
	enum ns_rsp_event_kind ev = NS_RSP_EV_NONE;

	while (i < len && ev == NS_RSP_EV_NONE) {
		// Inside a packet, runs of ordinary bytes go in whole words (a frame stream
		// is mostly such runs); the byte-wise state machine takes the rest.
		if (p->state == ST_DATA && !p->too_long) {
			size_t room = p->max_len - p->payload.len;
			size_t n = len - i < room ? len - i : room;
			char *d = n ? ns_strbuf_room(&p->payload, n) : NULL;
			if (d) {
				size_t wrote;
				i += payload_run(p, data + i, n, d, &wrote);
				ns_strbuf_added(&p->payload, wrote);
				if (i == len)
					break;
			}
		}
		uint8_t c = data[i++];
		switch (p->state) {
		case ST_IDLE:
			switch (c) {
			case '$':
				start_packet(p, false);
				break;
			case '%':
				start_packet(p, true);
				break;
			case '+':
				ev = NS_RSP_EV_ACK;
				break;
			case '-':
				ev = NS_RSP_EV_NAK;
				break;
			case 0x03:
				ev = NS_RSP_EV_INTERRUPT;
				break;
			default:
				break; // garbage between packets
			}
			break;
		case ST_DATA:
			if (c == '#' && !p->escape) {
				p->state = ST_CSUM;
				p->csum_digits = 0;
				p->got_csum = 0;
				break;
			}
			if (c == '$' && !p->escape) {
				// gdb's read_frame: a new '$' restarts the packet.
				start_packet(p, false);
				break;
			}
			p->csum = (uint8_t)(p->csum + c);
			if (p->escape) {
				put(p, c ^ 0x20);
				p->escape = false;
			} else if (c == '}') {
				p->escape = true;
			} else if (c == '*' && p->payload.len > 0) {
				p->state = ST_RLE;
			} else {
				put(p, c);
			}
			break;
		case ST_RLE: {
			p->csum = (uint8_t)(p->csum + c);
			p->state = ST_DATA;
			if (p->too_long)
				break;
			uint8_t last = (uint8_t)p->payload.buf[p->payload.len - 1];
			int n = (int)c - 29;
			for (int k = 0; k < n; k++)
				put(p, last);
			break;
		}
		case ST_CSUM: {
			int d = ns_hex_digit((char)c);
			if (d < 0)
				p->bad_digit = true;
			p->got_csum = (uint8_t)(p->got_csum << 4 | (d < 0 ? 0 : d));
			if (++p->csum_digits < 2)
				break;
			bool bad = p->bad_digit || p->got_csum != p->csum;
			p->state = ST_IDLE;
			if (p->too_long)
				ev = NS_RSP_EV_TOO_LONG;
			else if (bad)
				ev = NS_RSP_EV_BAD_CSUM;
			else if (p->payload.oom)
				ev = NS_RSP_EV_TOO_LONG;
			else
				ev = p->is_notify ? NS_RSP_EV_NOTIFY : NS_RSP_EV_PACKET;
			if (ev == NS_RSP_EV_PACKET || ev == NS_RSP_EV_NOTIFY) {
				// Make the payload a C string even when empty.
				ns_strbuf_append(&p->payload, "", 0);
			}
			break;
		}
		}
	}
	*used = i;
	return ev;
}

void ns_rsp_frame(struct ns_strbuf *out, const void *payload, size_t len, bool notify)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *s = payload;
	uint8_t csum = 0;
	// Worst case: every byte escaped, plus the start, '#' and the checksum.
	if (len > (SIZE_MAX - 4) / 2)
		len = 0, out->oom = true;
	char *d0 = ns_strbuf_room(out, 2 * len + 4);
	if (!d0)
		return;
	char *d = d0;
	*d++ = notify ? '%' : '$';
	struct word_sum ws = {0, 0, 0};
	__m128i acc = _mm_setzero_si128();
	for (size_t i = 0; i < len;) {
		uint64_t w;
		if (len - i >= 16) {
			// Room: d - d0 <= 1 + 2 i, so a block stored at d ends by d0 + 2 len + 4.
			size_t k = clean_run16(s + i, len - i, d, &acc);
			d += k;
			i += k;
			if (len - i >= 16)
				goto one_byte;
		}
		if (len - i >= 8 && (memcpy(&w, s + i, 8), !word_needs_escape(w))) {
			memcpy(d, &w, 8);
			d += 8;
			i += 8;
			word_sum_add(&ws, w);
			continue;
		}
		if (i == len)
			break;
	one_byte:;
		uint8_t c = s[i++];
		if (needs_escape(c)) {
			*d++ = '}';
			csum = (uint8_t)(csum + '}');
			c ^= 0x20;
		}
		*d++ = (char)c;
		csum = (uint8_t)(csum + c);
	}
	csum = (uint8_t)(csum + word_sum_total(&ws) + sum16_total(acc));
	*d++ = '#';
	*d++ = hex[csum >> 4];
	*d++ = hex[csum & 15];
	ns_strbuf_added(out, (size_t)(d - d0));
}
