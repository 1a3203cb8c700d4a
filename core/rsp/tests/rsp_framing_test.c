/* Framing tests. Expected checksums are the ones in GDB's own remote logs ("set debug
 * remote 1"), e.g. "$qfThreadInfo#bb", "$OK#9a", "$QStartNoAckMode#b0"; the run-length
 * example is the manual's ("0* " means "0000", GDB manual "Overview"). */
#include "base/test.h"
#include "rsp/rsp.h"

#include <stdio.h>
#include <stdlib.h>

/* Feed @s whole; returns the first event and how much was used. */
static enum ns_rsp_event_kind feed(struct ns_rsp_parser *p, const char *s, size_t len, size_t *used)
{
	return ns_rsp_parse(p, (const uint8_t *)s, len, used);
}

NS_TEST(test_rsp_framing__known_checksums)
{
	static const char *pk[] = {"$qfThreadInfo#bb", "$OK#9a", "$QStartNoAckMode#b0",
	                           "$qTStatus#49",     "$?#3f",  "$g#67"};
	for (size_t i = 0; i < sizeof(pk) / sizeof(pk[0]); i++) {
		struct ns_rsp_parser p;
		ns_rsp_parser_init(&p, 4096);
		size_t used;
		NS_CHECK_INT(feed(&p, pk[i], strlen(pk[i]), &used), NS_RSP_EV_PACKET);
		NS_CHECK_INT(used, strlen(pk[i]));
		// The payload is the text between '$' and '#'.
		char want[64];
		snprintf(want, sizeof(want), "%.*s", (int)(strlen(pk[i]) - 4), pk[i] + 1);
		NS_CHECK_STR(p.payload.buf, want);
		// And framing produces the same bytes.
		struct ns_strbuf sb;
		ns_strbuf_init(&sb);
		ns_rsp_frame(&sb, want, strlen(want), false);
		NS_CHECK_STR(ns_strbuf_str(&sb), pk[i]);
		ns_strbuf_deinit(&sb);
		ns_rsp_parser_deinit(&p);
	}
}

NS_TEST(test_rsp_framing__bad_checksum)
{
	struct ns_rsp_parser p;
	ns_rsp_parser_init(&p, 4096);
	size_t used;
	NS_CHECK_INT(feed(&p, "$OK#9b", 6, &used), NS_RSP_EV_BAD_CSUM);
	NS_CHECK_INT(used, 6);
	// Non-hex checksum digits are a bad checksum too, and the parser recovers.
	NS_CHECK_INT(feed(&p, "$OK#zz", 6, &used), NS_RSP_EV_BAD_CSUM);
	NS_CHECK_INT(feed(&p, "$OK#9A", 6, &used), NS_RSP_EV_PACKET); // uppercase accepted
	NS_CHECK_STR(p.payload.buf, "OK");
	ns_rsp_parser_deinit(&p);
}

NS_TEST(test_rsp_framing__escape_all_bytes_round_trip)
{
	uint8_t all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	ns_rsp_frame(&sb, all, sizeof(all), false);
	// Exactly the four special bytes are escaped: 256 + 4 escapes + "$" + "#cs".
	NS_CHECK_INT(sb.len, 256 + 4 + 1 + 3);
	// No unescaped '$', '#', '*' or '}' inside the frame body.
	for (size_t i = 1; i + 3 < sb.len; i++) {
		uint8_t c = (uint8_t)sb.buf[i];
		if (c == '}') {
			uint8_t e = (uint8_t)sb.buf[i + 1] ^ 0x20;
			NS_CHECK(e == '$' || e == '#' || e == '}' || e == '*');
			i++;
			continue;
		}
		NS_CHECK(c != '$' && c != '#' && c != '*');
	}
	// Independent checksum: sum of every transmitted body byte.
	unsigned sum = 0;
	for (size_t i = 1; i + 3 < sb.len; i++)
		sum += (uint8_t)sb.buf[i];
	char cs[3];
	snprintf(cs, sizeof(cs), "%02x", sum & 0xff);
	NS_CHECK(memcmp(sb.buf + sb.len - 2, cs, 2) == 0);

	struct ns_rsp_parser p;
	ns_rsp_parser_init(&p, 4096);
	size_t used;
	NS_CHECK_INT(ns_rsp_parse(&p, (uint8_t *)sb.buf, sb.len, &used), NS_RSP_EV_PACKET);
	NS_CHECK_INT(p.payload.len, 256);
	NS_CHECK(memcmp(p.payload.buf, all, 256) == 0);
	ns_rsp_parser_deinit(&p);
	ns_strbuf_deinit(&sb);
}

NS_TEST(test_rsp_framing__run_length)
{
	// Manual: "0* " is "0000" (' ' is 32, 32 - 29 = 3 more repeats). Checksum
	// covers the transmitted "0* ": 0x30 + 0x2a + 0x20 = 0x7a.
	struct ns_rsp_parser p;
	ns_rsp_parser_init(&p, 4096);
	size_t used;
	NS_CHECK_INT(feed(&p, "$0* #7a", 7, &used), NS_RSP_EV_PACKET);
	NS_CHECK_STR(p.payload.buf, "0000");
	// A run in the middle: "a*\"b" = 'a' + 5 more ('"' is 34) + 'b'.
	const char *s = "$a*\"b#0f";
	NS_CHECK_INT(feed(&p, s, strlen(s), &used), NS_RSP_EV_PACKET);
	NS_CHECK_STR(p.payload.buf, "aaaaaab");
	ns_rsp_parser_deinit(&p);
}

NS_TEST(test_rsp_framing__one_byte_feeds)
{
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	const char *payload = "QTDP:1:0000000000401136:E:0:0-";
	ns_rsp_frame(&sb, payload, strlen(payload), false);
	struct ns_rsp_parser p;
	ns_rsp_parser_init(&p, 4096);
	int packets = 0, nones = 0;
	for (size_t i = 0; i < sb.len; i++) {
		size_t used;
		enum ns_rsp_event_kind ev = ns_rsp_parse(&p, (uint8_t *)sb.buf + i, 1, &used);
		NS_CHECK_INT(used, 1);
		if (ev == NS_RSP_EV_PACKET)
			packets++;
		else if (ev == NS_RSP_EV_NONE)
			nones++;
	}
	NS_CHECK_INT(packets, 1);
	NS_CHECK_INT(nones, sb.len - 1);
	NS_CHECK_STR(p.payload.buf, payload);
	ns_rsp_parser_deinit(&p);
	ns_strbuf_deinit(&sb);
}

NS_TEST(test_rsp_framing__garbage_acks_interrupt)
{
	struct ns_rsp_parser p;
	ns_rsp_parser_init(&p, 4096);
	const char *s = "xyz\r\n+-\x03junk$OK#9a";
	size_t len = strlen(s), off = 0, used;
	enum ns_rsp_event_kind evs[8];
	int n = 0;
	while (off < len && n < 8) {
		enum ns_rsp_event_kind ev = feed(&p, s + off, len - off, &used);
		off += used;
		if (ev != NS_RSP_EV_NONE)
			evs[n++] = ev;
	}
	NS_CHECK_INT(n, 4);
	NS_CHECK_INT(evs[0], NS_RSP_EV_ACK);
	NS_CHECK_INT(evs[1], NS_RSP_EV_NAK);
	NS_CHECK_INT(evs[2], NS_RSP_EV_INTERRUPT);
	NS_CHECK_INT(evs[3], NS_RSP_EV_PACKET);
	NS_CHECK_STR(p.payload.buf, "OK");
	ns_rsp_parser_deinit(&p);
}

NS_TEST(test_rsp_framing__too_long)
{
	struct ns_rsp_parser p;
	ns_rsp_parser_init(&p, 8);
	size_t used;
	// 9 payload bytes with a correct checksum: dropped as too long.
	const char *s = "$123456789#dd";
	NS_CHECK_INT(feed(&p, s, strlen(s), &used), NS_RSP_EV_TOO_LONG);
	NS_CHECK_INT(used, strlen(s));
	// A run that expands past the limit is too long as well.
	NS_CHECK_INT(feed(&p, "$0*~#d8", 7, &used), NS_RSP_EV_TOO_LONG);
	// Exactly 8 bytes is fine, and the parser works again.
	NS_CHECK_INT(feed(&p, "$12345678#a4", 12, &used), NS_RSP_EV_PACKET);
	NS_CHECK_STR(p.payload.buf, "12345678");
	ns_rsp_parser_deinit(&p);
}

NS_TEST(test_rsp_framing__notification)
{
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	ns_rsp_frame(&sb, "Stop:T05", 8, true);
	NS_CHECK(sb.buf[0] == '%');
	struct ns_rsp_parser p;
	ns_rsp_parser_init(&p, 4096);
	size_t used;
	NS_CHECK_INT(ns_rsp_parse(&p, (uint8_t *)sb.buf, sb.len, &used), NS_RSP_EV_NOTIFY);
	NS_CHECK_STR(p.payload.buf, "Stop:T05");
	// Same checksum as the '$' form: 'S'+'t'+'o'+'p'+':'+'T'+'0'+'5' = 0x299 -> 99.
	NS_CHECK_STR(ns_strbuf_str(&sb), "%Stop:T05#99");
	ns_rsp_parser_deinit(&p);
	ns_strbuf_deinit(&sb);
}

NS_TEST(test_rsp_framing__restart_on_dollar)
{
	struct ns_rsp_parser p;
	ns_rsp_parser_init(&p, 4096);
	size_t used;
	const char *s = "$brok$OK#9a";
	NS_CHECK_INT(feed(&p, s, strlen(s), &used), NS_RSP_EV_PACKET);
	NS_CHECK_STR(p.payload.buf, "OK");
	ns_rsp_parser_deinit(&p);
}

NS_TEST(test_rsp_framing__appends_to_what_is_there)
{
	// Framing appends: two packets into one buffer are the two framings end to end,
	// the buffer stays NUL-terminated, and a buffer grown from empty works too.
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	ns_rsp_frame(&sb, "OK", 2, false);
	ns_rsp_frame(&sb, "a}b", 3, true);
	NS_CHECK_STR(ns_strbuf_str(&sb), "$OK#9a%a}]b#9d");
	NS_CHECK_INT(sb.len, strlen("$OK#9a%a}]b#9d"));
	ns_strbuf_deinit(&sb);
}

// One payload byte of the reference framings, escaped as the GDB manual states it.
static size_t put_escaped(char *out, size_t n, unsigned *sum, uint8_t c)
{
	if (c == '$' || c == '#' || c == '}' || c == '*') {
		out[n++] = '}';
		*sum += '}';
		c ^= 0x20;
	}
	out[n++] = (char)c;
	*sum += c;
	return n;
}

// The reference framing, a byte at a time, as the GDB manual states it.
static size_t frame_by_bytes(char *out, const uint8_t *s, size_t len)
{
	size_t n = 0;
	unsigned sum = 0;
	out[n++] = '$';
	for (size_t i = 0; i < len; i++)
		n = put_escaped(out, n, &sum, s[i]);
	n += (size_t)sprintf(out + n, "#%02x", sum & 0xff);
	return n;
}

// The reference framing with gdb's run-length encoding: a byte followed by 3 to 97
// copies of itself is sent once, then '*' and the number of copies + 29 (6 and 7 would
// give '#' and '$': sent as 5).
static size_t frame_rle(char *out, const uint8_t *s, size_t len)
{
	size_t n = 0;
	unsigned sum = 0;
	out[n++] = '$';
	for (size_t i = 0; i < len;) {
		uint8_t c = s[i];
		size_t rep = 0;
		while (i + 1 + rep < len && s[i + 1 + rep] == c && rep < 97)
			rep++;
		n = put_escaped(out, n, &sum, c);
		i++;
		if (rep >= 3) {
			if (rep == 6 || rep == 7)
				rep = 5;
			out[n++] = '*';
			out[n++] = (char)(rep + 29);
			sum += '*' + (unsigned)(rep + 29);
			i += rep;
		}
	}
	n += (size_t)sprintf(out + n, "#%02x", sum & 0xff);
	return n;
}

// The word-at-a-time framing against the reference, and the parser's word-at-a-time
// runs reading the reference back: payloads of every length up to 300 and long ones
// (past the 128-word checksum fold), with no, few and many bytes that need escaping, at
// every alignment.
NS_TEST(test_rsp_framing__frame_matches_bytewise_reference)
{
	enum { MAX = 20000 };
	uint8_t *buf = malloc(MAX + 8);
	char *want = malloc(2 * MAX + 8);
	uint64_t x = 88172645463325252ull;
	unsigned cases = 0;
	for (size_t len = 0; len < MAX; len = len < 300 ? len + 1 : len * 3 / 2) {
		for (int density = 0; density < 5; density++) {
			for (size_t i = 0; i < len + 8; i++) {
				x ^= x << 13, x ^= x >> 7, x ^= x << 17;
				uint8_t c = (uint8_t)x;
				// density 0: hex digits only; 1: rare specials; 2: any byte;
				// 3: mostly specials; 4: runs of a byte (for the run-length coding).
				if (density == 0)
					c = (uint8_t)"0123456789abcdef"[c & 15];
				else if (density == 1 && (x >> 20) % 97 == 0)
					c = (uint8_t)"$#}*"[(x >> 8) & 3];
				else if (density == 1)
					c = (uint8_t)('0' + c % 40);
				else if (density == 3 && (x >> 20) % 3)
					c = (uint8_t)"$#}*"[(x >> 8) & 3];
				else if (density == 4 && i && (x >> 20) % 16)
					c = buf[i - 1]; // runs of one byte (any, specials too)
				buf[i] = c;
			}
			size_t off = len & 7; // vary the start's alignment
			struct ns_strbuf sb;
			ns_strbuf_init(&sb);
			ns_rsp_frame(&sb, buf + off, len, false);
			size_t n = frame_by_bytes(want, buf + off, len);
			cases++;
			if (sb.len != n || memcmp(sb.buf, want, n) != 0) {
				ns_test_fail(__FILE__, __LINE__, "length %zu density %d: framing differs",
				             len, density);
				ns_strbuf_deinit(&sb);
				goto out;
			}
			ns_strbuf_deinit(&sb);
			// The parser reads the reference framing back (then the run-length
			// encoded one), fed whole, in chunks of 13 bytes (word runs cut
			// anywhere) and in two parts split at random.
			for (int rle = 0; rle < 2; rle++) {
			if (rle)
				n = frame_rle(want, buf + off, len);
			size_t cuts[] = {n, 13, 1 + (size_t)(x >> 33) % (n + 1)};
			for (int k = 0; k < 3; k++) {
				struct ns_rsp_parser p;
				ns_rsp_parser_init(&p, MAX);
				enum ns_rsp_event_kind ev = NS_RSP_EV_NONE;
				size_t at = 0, step = cuts[k];
				while (ev == NS_RSP_EV_NONE && at < n) {
					size_t chunk = k == 2 && at ? n - at : step < n - at ? step : n - at;
					size_t used = 0;
					ev = ns_rsp_parse(&p, (const uint8_t *)want + at, chunk, &used);
					at += used;
				}
				bool same = ev == NS_RSP_EV_PACKET && at == n && p.payload.len == len &&
				            memcmp(p.payload.buf, buf + off, len) == 0;
				ns_rsp_parser_deinit(&p);
				if (!same) {
					ns_test_fail(__FILE__, __LINE__,
					             "length %zu density %d feed %d rle %d: parsed differs "
					             "(event %d)",
					             len, density, k, rle, (int)ev);
					goto out;
				}
			}
			}
		}
	}
	NS_CHECK(cases > 1000);
out:
	free(buf);
	free(want);
}
