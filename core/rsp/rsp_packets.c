/* Tracepoint definition packets (GDB manual, "Tracepoint Packets"):
 *
 *   QTDP:n:addr:ena:step:pass[:Fflen][:S][:Xlen,bytes][:H<mode>,<n>][:L<n>][-]
 *   QTDP:-n:addr:[S]action...[-]
 *
 * with actions R<mask>, M<basereg>,<offset>,<len> and X<len>,<bytes>. GDB sends one
 * action per packet (remote.c, remote_download_tracepoint), the register mask as a
 * byte string of any length, basereg -1 as "FFFFFFFF" (%X of an int) and offsets as
 * the 64-bit two's complement (phex_nz). :H and :L are nonstop extensions
 * (docs/rsp-extensions.md). Every field is parsed with explicit bounds; malformed
 * input gives NS_ERR_FORMAT naming the field. */
#include "rsp/rsp.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ns_rsp_parse_hex(const char **p, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;
	int n = 0;
	int d;
	while ((d = ns_hex_digit(*s)) >= 0) {
		if (v >> 60)
			return -1; // overflow: more than 64 bits
		v = v << 4 | (uint64_t)d;
		s++;
		n++;
	}
	if (n == 0)
		return -1;
	*p = s;
	*out = v;
	return 0;
}

void ns_rsp_xfer_reply(struct ns_strbuf *out, const void *data, size_t size, uint64_t offset,
                       uint64_t len)
{
	if (offset >= size) {
		ns_strbuf_putc(out, 'l');
		return;
	}
	uint64_t n = size - offset;
	if (len < n)
		n = len;
	ns_strbuf_putc(out, offset + n < size ? 'm' : 'l');
	ns_strbuf_append(out, (const char *)data + offset, (size_t)n);
}

void ns_rsp_tp_deinit(struct ns_rsp_tracepoint *tp)
{
	if (!tp)
		return;
	free(tp->cond);
	for (size_t i = 0; i < tp->nactions; i++)
		free(tp->actions[i].code);
	free(tp->actions);
	memset(tp, 0, sizeof(*tp));
}

void ns_rsp_free_packets(char **packets, size_t n)
{
	if (!packets)
		return;
	for (size_t i = 0; i < n; i++)
		free(packets[i]);
	free(packets);
}

/* ---- encoding ---- */

static void put_action(struct ns_strbuf *sb, const struct ns_rsp_action *a)
{
	switch (a->kind) {
	case NS_RSP_ACT_REGS:
		ns_strbuf_printf(sb, "R%" PRIx64, a->regmask);
		break;
	case NS_RSP_ACT_MEM:
		// basereg as GDB's "%X" of an int: -1 is FFFFFFFF.
		ns_strbuf_printf(sb, "M%x,%" PRIx64 ",%" PRIx64, (unsigned)a->basereg,
		                 (uint64_t)a->offset, a->len);
		break;
	case NS_RSP_ACT_EXPR:
		ns_strbuf_printf(sb, "X%zx,", a->code_len);
		ns_strbuf_hex(sb, a->code, a->code_len);
		break;
	}
}

struct ns_err *ns_rsp_tp_encode(const struct ns_rsp_tracepoint *tp, size_t max_packet,
                                char ***packets_out, size_t *npackets_out)
{
	size_t n = tp->nactions + 1;
	char **pk = calloc(n, sizeof(*pk));
	if (!pk)
		return &ns_err_nomem;
	struct ns_err *err = NULL;
	for (size_t i = 0; i < n && !err; i++) {
		struct ns_strbuf sb;
		ns_strbuf_init(&sb);
		bool more = i + 1 < n;
		if (i == 0) {
			ns_strbuf_printf(&sb, "QTDP:%x:%016" PRIx64 ":%c:%" PRIx64 ":%" PRIx64,
			                 tp->num, tp->addr, tp->enabled ? 'E' : 'D', tp->step,
			                 tp->pass);
			if (tp->cond) {
				ns_strbuf_printf(&sb, ":X%zx,", tp->cond_len);
				ns_strbuf_hex(&sb, tp->cond, tp->cond_len);
			}
			if (tp->hit_mode != NS_RSP_HIT_ALWAYS)
				ns_strbuf_printf(&sb, ":H%x,%" PRIx64, (unsigned)tp->hit_mode,
				                 tp->hit_n);
			if (tp->max_frames)
				ns_strbuf_printf(&sb, ":L%" PRIx64, tp->max_frames);
			for (size_t r = 0; r < tp->nranges; r++)
				ns_strbuf_printf(&sb, "%s%" PRIx64 "-%" PRIx64, r ? "," : ":R",
				                 tp->ranges[2 * r], tp->ranges[2 * r + 1]);
		} else {
			ns_strbuf_printf(&sb, "QTDP:-%x:%016" PRIx64 ":", tp->num, tp->addr);
			put_action(&sb, &tp->actions[i - 1]);
		}
		if (more)
			ns_strbuf_putc(&sb, '-');
		if (sb.oom)
			err = &ns_err_nomem;
		else if (max_packet && sb.len > max_packet)
			err = ns_err_create(NS_ERR_INVALID,
			                    "tracepoint %u: %s packet is %zu bytes, more than %zu",
			                    tp->num, i == 0 ? "definition" : "action", sb.len,
			                    max_packet);
		if (err) {
			ns_strbuf_deinit(&sb);
			break;
		}
		pk[i] = ns_strbuf_steal(&sb);
	}
	if (err) {
		ns_rsp_free_packets(pk, n);
		return err;
	}
	*packets_out = pk;
	*npackets_out = n;
	return NULL;
}

/* ---- parsing ---- */

static struct ns_err *bad(const char *pkt, const char *at, const char *what)
{
	return ns_err_create(NS_ERR_FORMAT, "malformed QTDP packet: %s at offset %zu", what,
	                     (size_t)(at - pkt));
}

static bool expect(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

/* "<len>,<2*len hex digits>" into a malloc'd buffer. */
static struct ns_err *parse_bytecode(const char *pkt, const char **p, uint8_t **code,
                                     size_t *code_len)
{
	uint64_t len;
	if (ns_rsp_parse_hex(p, &len) < 0)
		return bad(pkt, *p, "bytecode length");
	if (!expect(p, ','))
		return bad(pkt, *p, "',' after bytecode length");
	size_t avail = 0;
	while (ns_hex_digit((*p)[avail]) >= 0)
		avail++;
	if (len == 0 || avail / 2 < len)
		return bad(pkt, *p, "bytecode shorter than its length");
	uint8_t *buf = malloc((size_t)len);
	if (!buf)
		return &ns_err_nomem;
	if (ns_hex_decode(*p, (size_t)len * 2, buf) < 0) {
		free(buf);
		return bad(pkt, *p, "bytecode hex");
	}
	*p += len * 2;
	*code = buf;
	*code_len = (size_t)len;
	return NULL;
}

static bool at_field_end(const char *p)
{
	return *p == ':' || *p == 0 || (*p == '-' && p[1] == 0);
}

static struct ns_err *parse_definition(const char *pkt, const char *p, struct ns_rsp_tracepoint *tp,
                                       bool *more)
{
	uint64_t num, v;
	memset(tp, 0, sizeof(*tp));
	if (ns_rsp_parse_hex(&p, &num) < 0 || num > UINT32_MAX)
		return bad(pkt, p, "tracepoint number");
	tp->num = (uint32_t)num;
	if (!expect(&p, ':') || ns_rsp_parse_hex(&p, &tp->addr) < 0)
		return bad(pkt, p, "address");
	if (!expect(&p, ':') || (*p != 'E' && *p != 'D'))
		return bad(pkt, p, "enable flag (E or D)");
	tp->enabled = *p++ == 'E';
	if (!expect(&p, ':') || ns_rsp_parse_hex(&p, &tp->step) < 0)
		return bad(pkt, p, "step count");
	if (!expect(&p, ':') || ns_rsp_parse_hex(&p, &tp->pass) < 0)
		return bad(pkt, p, "pass count");
	struct ns_err *err = NULL;
	while (!err && *p == ':') {
		p++;
		char f = *p++;
		switch (f) {
		case 'F': // fast tracepoint: nonstop picks the tier itself
			if (ns_rsp_parse_hex(&p, &v) < 0)
				err = bad(pkt, p, "F length");
			break;
		case 'S': // static tracepoint marker: accepted, treated as a plain one
			break;
		case 'X':
			if (tp->cond)
				err = bad(pkt, p, "second condition");
			else
				err = parse_bytecode(pkt, &p, &tp->cond, &tp->cond_len);
			break;
		case 'H':
			if (ns_rsp_parse_hex(&p, &v) < 0 || v > NS_RSP_HIT_MOD)
				err = bad(pkt, p, "hit mode");
			else if (!expect(&p, ',') || ns_rsp_parse_hex(&p, &tp->hit_n) < 0)
				err = bad(pkt, p, "hit count");
			else
				tp->hit_mode = (enum ns_rsp_hit_mode)v;
			break;
		case 'L':
			if (ns_rsp_parse_hex(&p, &tp->max_frames) < 0)
				err = bad(pkt, p, "frame limit");
			break;
		case 'R':
			tp->nranges = 0;
			do {
				uint64_t lo, hi;
				if (tp->nranges == sizeof(tp->ranges) / sizeof(tp->ranges[0]) / 2 ||
				    ns_rsp_parse_hex(&p, &lo) < 0 || !expect(&p, '-') ||
				    ns_rsp_parse_hex(&p, &hi) < 0 || hi <= lo) {
					err = bad(pkt, p, "function range");
					break;
				}
				tp->ranges[2 * tp->nranges] = lo;
				tp->ranges[2 * tp->nranges + 1] = hi;
				tp->nranges++;
			} while (expect(&p, ','));
			break;
		default:
			err = bad(pkt, p - 1, "unknown field");
			break;
		}
		if (!err && !at_field_end(p))
			err = bad(pkt, p, "trailing characters in field");
	}
	if (!err) {
		*more = *p == '-';
		if (*more)
			p++;
		if (*p)
			err = bad(pkt, p, "trailing characters");
	}
	if (err)
		ns_rsp_tp_deinit(tp);
	return err;
}

static struct ns_err *parse_one_action(const char *pkt, const char **pp, struct ns_rsp_action *a)
{
	const char *p = *pp;
	memset(a, 0, sizeof(*a));
	char k = *p++;
	uint64_t v;
	switch (k) {
	case 'R': {
		// A byte mask of any length (GDB's amd64 has more than 64 registers);
		// keep the low 64 bits, nonstop collects every register anyway.
		const char *start = p;
		while (ns_hex_digit(*p) >= 0)
			p++;
		if (p == start)
			return bad(pkt, p, "register mask");
		const char *q = p - start > 16 ? p - 16 : start;
		for (; q < p; q++)
			a->regmask = a->regmask << 4 | (uint64_t)ns_hex_digit(*q);
		a->kind = NS_RSP_ACT_REGS;
		break;
	}
	case 'M':
		a->kind = NS_RSP_ACT_MEM;
		if (ns_rsp_parse_hex(&p, &v) < 0)
			return bad(pkt, p, "memory base register");
		if (v == 0xffffffffu || v == UINT64_MAX)
			a->basereg = -1;
		else if (v > INT_MAX)
			return bad(pkt, p, "memory base register");
		else
			a->basereg = (int)v;
		if (!expect(&p, ',') || ns_rsp_parse_hex(&p, &v) < 0)
			return bad(pkt, p, "memory offset");
		a->offset = (int64_t)v;
		if (!expect(&p, ',') || ns_rsp_parse_hex(&p, &a->len) < 0)
			return bad(pkt, p, "memory length");
		break;
	case 'X': {
		a->kind = NS_RSP_ACT_EXPR;
		struct ns_err *err = parse_bytecode(pkt, &p, &a->code, &a->code_len);
		if (err)
			return err;
		break;
	}
	default:
		return bad(pkt, p - 1, "unknown action");
	}
	*pp = p;
	return NULL;
}

static struct ns_err *parse_actions(const char *pkt, const char *p, struct ns_rsp_tracepoint *tp,
                                    bool *more)
{
	uint64_t num, addr;
	if (ns_rsp_parse_hex(&p, &num) < 0)
		return bad(pkt, p, "tracepoint number");
	if (!expect(&p, ':') || ns_rsp_parse_hex(&p, &addr) < 0)
		return bad(pkt, p, "address");
	if (!expect(&p, ':'))
		return bad(pkt, p, "':' after address");
	if (num != tp->num || addr != tp->addr)
		return ns_err_create(NS_ERR_INVALID,
		                     "QTDP actions for tracepoint %" PRIx64 " at 0x%" PRIx64
		                     " do not follow its definition (%x at 0x%" PRIx64 ")",
		                     num, addr, tp->num, tp->addr);
	if (*p == 'S')
		return ns_err_create(NS_ERR_UNSUPPORTED,
		                     "while-stepping actions are not supported (tracepoint %x)",
		                     tp->num);
	struct ns_rsp_action acts[16];
	size_t n = 0;
	struct ns_err *err = NULL;
	while (!err && *p && !(*p == '-' && p[1] == 0)) {
		if (n == sizeof(acts) / sizeof(acts[0]))
			err = bad(pkt, p, "too many actions in one packet");
		else
			err = parse_one_action(pkt, &p, &acts[n]);
		if (!err)
			n++;
	}
	if (!err && n == 0)
		err = bad(pkt, p, "no action");
	struct ns_rsp_action *na = NULL;
	if (!err) {
		na = realloc(tp->actions, (tp->nactions + n) * sizeof(*na));
		if (!na)
			err = &ns_err_nomem;
	}
	if (err) {
		for (size_t i = 0; i < n; i++)
			free(acts[i].code);
		return err;
	}
	memcpy(na + tp->nactions, acts, n * sizeof(*na));
	tp->actions = na;
	tp->nactions += n;
	*more = *p == '-';
	return NULL;
}

struct ns_err *ns_rsp_tp_parse(const char *pkt, struct ns_rsp_tracepoint *tp, bool *more)
{
	if (strncmp(pkt, "QTDP:", 5) != 0)
		return ns_err_create(NS_ERR_FORMAT, "not a QTDP packet");
	const char *p = pkt + 5;
	if (*p == '-')
		return parse_actions(pkt, p + 1, tp, more);
	return parse_definition(pkt, p, tp, more);
}

/* ---- qNsFrames replies ---- */

// A hex number filling [p, end): 1 to 16 digits.
static bool whole_hex(const uint8_t *p, const uint8_t *end, uint64_t *out)
{
	uint64_t v = 0;
	if (p == end || end - p > 16)
		return false;
	for (; p < end; p++) {
		int d = ns_hex_digit((char)*p);
		if (d < 0)
			return false;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return true;
}

struct ns_err *ns_rsp_frames_next(uint8_t *reply, size_t len, size_t *pos,
                                  struct ns_rsp_frames_item *out, bool *more)
{
	size_t at = *pos;
	memset(out, 0, sizeof(*out));
	*more = at < len;
	if (!*more)
		return NULL;
	const char *what = "item";
	if (reply[at] == 'b') {
		// "b<hex length>:<bytes>": the length says where the bytes end, whatever they hold.
		what = "binary frame";
		const uint8_t *colon = memchr(reply + at, ':', len - at);
		uint64_t n;
		if (!colon || !whole_hex(reply + at + 1, colon, &n))
			goto bad;
		size_t start = (size_t)(colon - reply) + 1;
		if (n > len - start)
			goto bad;
		size_t end = start + (size_t)n;
		if (end < len && reply[end] != ';')
			goto bad;
		out->kind = 'F';
		out->data = reply + start;
		out->len = (size_t)n;
		*pos = end < len ? end + 1 : end;
		return NULL;
	}
	const uint8_t *sep = memchr(reply + at, ';', len - at);
	size_t end = sep ? (size_t)(sep - reply) : len;
	*pos = sep ? end + 1 : end;
	switch (reply[at]) {
	case 'F':
		what = "hex frame";
		if ((end - at - 1) % 2 || ns_hex_decode((const char *)reply + at + 1, end - at - 1,
		                                        reply + at + 1))
			goto bad;
		out->kind = 'F';
		out->data = reply + at + 1;
		out->len = (end - at - 1) / 2;
		return NULL;
	case 'L':
	case 'W':
	case 'X':
		what = "count";
		if (!whole_hex(reply + at + 1, reply + end, &out->value))
			goto bad;
		out->kind = (char)reply[at];
		return NULL;
	default:
		return NULL; // someone else's item: skipped
	}
bad:
	*pos = len;
	return ns_err_create(NS_ERR_FORMAT, "qNsFrames reply: bad %s at offset %zu", what, at);
}

void ns_rsp_frames_put(struct ns_strbuf *out, const void *data, size_t len, bool binary)
{
	if (out->len)
		ns_strbuf_putc(out, ';');
	if (binary) {
		char head[20], *h = head + sizeof(head);
		*--h = ':';
		size_t n = len;
		do
			*--h = "0123456789abcdef"[n & 15];
		while (n >>= 4);
		*--h = 'b';
		ns_strbuf_append(out, h, (size_t)(head + sizeof(head) - h));
		ns_strbuf_append(out, data, len);
	} else {
		ns_strbuf_putc(out, 'F');
		ns_strbuf_hex(out, data, len);
	}
}
