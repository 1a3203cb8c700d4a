/* QTDP codec tests. The gdb-shaped packets follow gdb 13's formats (remote.c
 * "QTDP:%x:%s:%c:%lx:%x" then one "QTDP:-%x:%s:%s%c" per action; tracepoint.c
 * collection_list::stringify: "R" + mask bytes "%02X" from the highest non-zero one,
 * "M%X,%s,%lX" with phex_nz offsets, "X%08X," + hex bytecode). */
#include "base/test.h"
#include "rsp/rsp.h"

#include <stdlib.h>

static void parse_all(const char **pk, size_t n, struct ns_rsp_tracepoint *tp)
{
	for (size_t i = 0; i < n; i++) {
		bool more = false;
		NS_CHECK_OK(ns_rsp_tp_parse(pk[i], tp, &more));
		NS_CHECK_INT(more, i + 1 < n);
	}
}

NS_TEST(test_rsp_packets__gdb13_packets)
{
	// "trace *0x401136", actions: collect $regs, collect global (8 bytes at 0x404028),
	// collect $rsp-16 region via an expression, collect buf (basereg 6 = rbp, -0x20).
	static const char *pk[] = {
	        "QTDP:1:0000000000401136:E:0:0-",
	        "QTDP:-1:0000000000401136:R03FFFFFF-",
	        "QTDP:-1:0000000000401136:MFFFFFFFF,404028,8-",
	        "QTDP:-1:0000000000401136:M6,ffffffffffffffe0,10-",
	        "QTDP:-1:0000000000401136:X00000006,260007221027",
	};
	struct ns_rsp_tracepoint tp;
	parse_all(pk, 5, &tp);
	NS_CHECK_INT(tp.num, 1);
	NS_CHECK(tp.addr == 0x401136);
	NS_CHECK(tp.enabled);
	NS_CHECK_INT(tp.step, 0);
	NS_CHECK_INT(tp.pass, 0);
	NS_CHECK(tp.cond == NULL);
	NS_CHECK_INT(tp.hit_mode, NS_RSP_HIT_ALWAYS);
	NS_CHECK_INT(tp.nactions, 4);
	if (tp.nactions == 4) {
		NS_CHECK_INT(tp.actions[0].kind, NS_RSP_ACT_REGS);
		NS_CHECK(tp.actions[0].regmask == 0x03ffffffu);
		NS_CHECK_INT(tp.actions[1].kind, NS_RSP_ACT_MEM);
		NS_CHECK_INT(tp.actions[1].basereg, -1);
		NS_CHECK(tp.actions[1].offset == 0x404028);
		NS_CHECK_INT(tp.actions[1].len, 8);
		NS_CHECK_INT(tp.actions[2].basereg, 6);
		NS_CHECK_INT(tp.actions[2].offset, -32);
		NS_CHECK_INT(tp.actions[2].len, 16);
		NS_CHECK_INT(tp.actions[3].kind, NS_RSP_ACT_EXPR);
		NS_CHECK_INT(tp.actions[3].code_len, 6);
		static const uint8_t want[] = {0x26, 0x00, 0x07, 0x22, 0x10, 0x27};
		NS_CHECK(memcmp(tp.actions[3].code, want, 6) == 0);
	}
	ns_rsp_tp_deinit(&tp);
}

NS_TEST(test_rsp_packets__long_register_mask)
{
	// amd64 with AVX: more than 64 registers; the low 64 bits are kept.
	struct ns_rsp_tracepoint tp;
	bool more;
	NS_CHECK_OK(ns_rsp_tp_parse("QTDP:2:0000555555554abc:D:1:5-", &tp, &more));
	NS_CHECK(!tp.enabled);
	NS_CHECK_INT(tp.step, 1);
	NS_CHECK_INT(tp.pass, 5);
	NS_CHECK_OK(
	        ns_rsp_tp_parse("QTDP:-2:0000555555554abc:R0F00FFFFFFFFFFFFFFFFFFFF", &tp, &more));
	NS_CHECK(!more);
	NS_CHECK_INT(tp.nactions, 1);
	NS_CHECK(tp.actions[0].regmask == UINT64_MAX);
	ns_rsp_tp_deinit(&tp);
}

NS_TEST(test_rsp_packets__nonstop_extensions)
{
	const char *def = "QTDP:1:0000555555554abc:E:0:0:X5,2601220127:H3,3e8:L10-";
	struct ns_rsp_tracepoint tp;
	bool more;
	NS_CHECK_OK(ns_rsp_tp_parse(def, &tp, &more));
	NS_CHECK(more);
	NS_CHECK(tp.addr == 0x555555554abcull);
	NS_CHECK_INT(tp.cond_len, 5);
	NS_CHECK(tp.cond && tp.cond[0] == 0x26 && tp.cond[4] == 0x27);
	NS_CHECK_INT(tp.hit_mode, NS_RSP_HIT_MOD);
	NS_CHECK_INT(tp.hit_n, 1000);
	NS_CHECK_INT(tp.max_frames, 16);
	ns_rsp_tp_deinit(&tp);
	// Field order does not matter.
	NS_CHECK_OK(ns_rsp_tp_parse("QTDP:1:10:E:0:0:H1,2", &tp, &more));
	NS_CHECK(!more);
	NS_CHECK_INT(tp.hit_mode, NS_RSP_HIT_EQ);
	NS_CHECK_INT(tp.hit_n, 2);
	ns_rsp_tp_deinit(&tp);
}

NS_TEST(test_rsp_packets__round_trip)
{
	uint8_t c1[] = {0x26, 0x00, 0x07, 0x27};
	uint8_t big[300];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	uint8_t cond[] = {0x22, 0x01, 0x27};
	struct ns_rsp_action acts[] = {
	        {.kind = NS_RSP_ACT_REGS, .regmask = 0x3ffffff},
	        {.kind = NS_RSP_ACT_MEM, .basereg = -1, .offset = 0x404028, .len = 8},
	        {.kind = NS_RSP_ACT_MEM, .basereg = 7, .offset = -128, .len = 256},
	        {.kind = NS_RSP_ACT_EXPR, .code = c1, .code_len = sizeof(c1)},
	        {.kind = NS_RSP_ACT_EXPR, .code = big, .code_len = sizeof(big)},
	        {.kind = NS_RSP_ACT_EXPR, .code = c1, .code_len = 2},
	};
	struct ns_rsp_tracepoint tp = {
	        .num = 0x1a,
	        .addr = 0x555555554abc,
	        .enabled = true,
	        .step = 0,
	        .pass = 3,
	        .cond = cond,
	        .cond_len = sizeof(cond),
	        .hit_mode = NS_RSP_HIT_GE,
	        .hit_n = 7,
	        .max_frames = 100,
	        .actions = acts,
	        .nactions = 6,
	};
	char **pk;
	size_t n;
	NS_CHECK_OK(ns_rsp_tp_encode(&tp, 4000, &pk, &n));
	NS_CHECK_INT(n, 7);
	NS_CHECK_STR(pk[0], "QTDP:1a:0000555555554abc:E:0:3:X3,220127:H2,7:L64-");
	NS_CHECK_STR(pk[2], "QTDP:-1a:0000555555554abc:Mffffffff,404028,8-");
	NS_CHECK_STR(pk[3], "QTDP:-1a:0000555555554abc:M7,ffffffffffffff80,100-");
	NS_CHECK_STR(pk[6], "QTDP:-1a:0000555555554abc:X2,2600");
	struct ns_rsp_tracepoint got;
	for (size_t i = 0; i < n; i++) {
		bool more;
		NS_CHECK_OK(ns_rsp_tp_parse(pk[i], &got, &more));
		NS_CHECK_INT(more, i + 1 < n);
	}
	NS_CHECK_INT(got.num, 0x1a);
	NS_CHECK(got.addr == tp.addr);
	NS_CHECK_INT(got.pass, 3);
	NS_CHECK_INT(got.cond_len, 3);
	NS_CHECK(memcmp(got.cond, cond, 3) == 0);
	NS_CHECK_INT(got.hit_mode, NS_RSP_HIT_GE);
	NS_CHECK_INT(got.hit_n, 7);
	NS_CHECK_INT(got.max_frames, 100);
	NS_CHECK_INT(got.nactions, 6);
	for (size_t i = 0; i < 6 && i < got.nactions; i++) {
		NS_CHECK_INT(got.actions[i].kind, acts[i].kind);
		NS_CHECK(got.actions[i].regmask == acts[i].regmask);
		NS_CHECK_INT(got.actions[i].basereg, acts[i].basereg);
		NS_CHECK_INT(got.actions[i].offset, acts[i].offset);
		NS_CHECK(got.actions[i].len == acts[i].len);
		NS_CHECK_INT(got.actions[i].code_len, acts[i].code_len);
		if (acts[i].code_len && got.actions[i].code)
			NS_CHECK(memcmp(got.actions[i].code, acts[i].code, acts[i].code_len) == 0);
	}
	ns_rsp_tp_deinit(&got);
	ns_rsp_free_packets(pk, n);

	// A packet limit smaller than the 300-byte action is an error, not a split.
	struct ns_err *err = ns_rsp_tp_encode(&tp, 200, &pk, &n);
	NS_CHECK(err && err->code == NS_ERR_INVALID);
	ns_err_destroy(err);
}

NS_TEST(test_rsp_packets__malformed)
{
	static const char *defs[] = {
	        "QTDP:",
	        "QTDP:1",
	        "QTDP:1:",
	        "QTDP:1:401136",
	        "QTDP:1:401136:Q:0:0",
	        "QTDP:1:401136:E:0",
	        "QTDP:1:401136:E:0:",
	        "QTDP:1:401136:E:0:0:X",
	        "QTDP:1:401136:E:0:0:X5",
	        "QTDP:1:401136:E:0:0:X5,26",
	        "QTDP:1:401136:E:0:0:Xffffffffffffffff,26",
	        "QTDP:1:401136:E:0:0:X1,2g",
	        "QTDP:1:401136:E:0:0:X1,2727",
	        "QTDP:1:401136:E:0:0:H9,1",
	        "QTDP:1:401136:E:0:0:H1",
	        "QTDP:1:401136:E:0:0:Z",
	        "QTDP:1:401136:E:0:0--",
	        "QTDP:1:401136:E:0:0x",
	        "QTDP:11111111111111111:401136:E:0:0",
	        "QTDP:100000000:401136:E:0:0",
	        "QTDPX",
	        "qTStatus",
	};
	for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
		struct ns_rsp_tracepoint tp;
		bool more;
		struct ns_err *err = ns_rsp_tp_parse(defs[i], &tp, &more);
		if (!err) {
			ns_test_fail(__FILE__, __LINE__, "accepted \"%s\"", defs[i]);
			ns_rsp_tp_deinit(&tp);
			continue;
		}
		NS_CHECK_INT(err->code, NS_ERR_FORMAT);
		ns_err_destroy(err);
	}
	static const char *acts[] = {
	        "QTDP:-1:401136:",        "QTDP:-1:401136:R",     "QTDP:-1:401136:M1",
	        "QTDP:-1:401136:M1,2",    "QTDP:-1:401136:M1,2,", "QTDP:-1:401136:M100000000,2,3",
	        "QTDP:-1:401136:X3,2727", "QTDP:-1:401136:Y",     "QTDP:-1:401136:R1-x",
	        "QTDP:-2:401136:R1",     /* another tracepoint */
	        "QTDP:-1:401137:R1",     /* another address */
	        "QTDP:-1:401136:SR1",    /* while-stepping */
	        "QTDP:-1:401136:R1M1,2", /* second action malformed */
	};
	for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) {
		struct ns_rsp_tracepoint tp;
		bool more;
		NS_CHECK_OK(ns_rsp_tp_parse("QTDP:1:401136:E:0:0-", &tp, &more));
		struct ns_err *err = ns_rsp_tp_parse(acts[i], &tp, &more);
		if (!err)
			ns_test_fail(__FILE__, __LINE__, "accepted \"%s\"", acts[i]);
		ns_err_destroy(err);
		// A rejected packet leaves the tracepoint as it was.
		NS_CHECK_INT(tp.nactions, 0);
		ns_rsp_tp_deinit(&tp);
	}
}

NS_TEST(test_rsp_packets__parse_hex)
{
	const char *s = "DeadBeef,rest", *p = s;
	uint64_t v;
	NS_CHECK_INT(ns_rsp_parse_hex(&p, &v), 0);
	NS_CHECK(v == 0xdeadbeef);
	NS_CHECK_STR(p, ",rest");
	NS_CHECK_INT(ns_rsp_parse_hex(&p, &v), -1);
	NS_CHECK_STR(p, ",rest");
	p = "ffffffffffffffff";
	NS_CHECK_INT(ns_rsp_parse_hex(&p, &v), 0);
	NS_CHECK(v == UINT64_MAX);
	p = "00000000000000000001"; // leading zeros are not an overflow
	NS_CHECK_INT(ns_rsp_parse_hex(&p, &v), 0);
	NS_CHECK(v == 1);
	p = "10000000000000000";
	NS_CHECK_INT(ns_rsp_parse_hex(&p, &v), -1);
}

NS_TEST(test_rsp_packets__xfer_reply)
{
	const char data[] = "/usr/bin/sleep"; // 14 bytes
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	ns_rsp_xfer_reply(&sb, data, 14, 0, 5);
	NS_CHECK_STR(ns_strbuf_str(&sb), "m/usr/");
	ns_strbuf_reset(&sb);
	ns_rsp_xfer_reply(&sb, data, 14, 5, 100);
	NS_CHECK_STR(ns_strbuf_str(&sb), "lbin/sleep");
	ns_strbuf_reset(&sb);
	ns_rsp_xfer_reply(&sb, data, 14, 10, 4); // exactly the end
	NS_CHECK_STR(ns_strbuf_str(&sb), "lleep");
	ns_strbuf_reset(&sb);
	ns_rsp_xfer_reply(&sb, data, 14, 14, 4);
	NS_CHECK_STR(ns_strbuf_str(&sb), "l");
	ns_strbuf_reset(&sb);
	ns_rsp_xfer_reply(&sb, data, 14, 1000, 4);
	NS_CHECK_STR(ns_strbuf_str(&sb), "l");
	ns_strbuf_deinit(&sb);
}

NS_TEST(test_rsp_packets__function_ranges_extension)
{
	// nonstop's ":R" field: the function's ranges, for the jump-pad window check.
	struct ns_rsp_tracepoint tp = {.num = 3, .addr = 0x401136, .enabled = true, .nranges = 2};
	tp.ranges[0] = 0x401120;
	tp.ranges[1] = 0x4011a0;
	tp.ranges[2] = 0x401500;
	tp.ranges[3] = 0x401530;
	char **pk = NULL;
	size_t n = 0;
	NS_CHECK_OK(ns_rsp_tp_encode(&tp, 0, &pk, &n));
	NS_CHECK_INT(n, 1);
	NS_CHECK(n == 1 && strstr(pk[0], ":R401120-4011a0,401500-401530") != NULL);
	struct ns_rsp_tracepoint back;
	memset(&back, 0, sizeof(back));
	bool more = true;
	NS_CHECK_OK(ns_rsp_tp_parse(pk[0], &back, &more));
	NS_CHECK_INT(back.nranges, 2);
	NS_CHECK(back.ranges[1] == 0x4011a0 && back.ranges[2] == 0x401500);
	NS_CHECK(!more);
	ns_rsp_tp_deinit(&back);
	ns_rsp_free_packets(pk, n);
	const char *bad[] = {"QTDP:1:401136:E:0:0:R5-4", "QTDP:1:401136:E:0:0:R5",
	                     "QTDP:1:401136:E:0:0:R1-2,"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&back, 0, sizeof(back));
		struct ns_err *err = ns_rsp_tp_parse(bad[i], &back, &more);
		NS_CHECK(err != NULL);
		ns_err_destroy(err);
	}
}

NS_TEST(test_rsp_packets__frames_items)
{
	// A reply written by hand: a binary frame whose bytes hold the separators and
	// framing characters, a hex frame, drops, someone else's item, an exit code.
	static const uint8_t bin[] = {';', 'b', '3', ':', 0, '$', '#', '}', '*', 0xff, ';'};
	struct ns_strbuf r;
	ns_strbuf_init(&r);
	ns_strbuf_puts(&r, "b");
	ns_strbuf_printf(&r, "%zx:", sizeof(bin));
	ns_strbuf_append(&r, bin, sizeof(bin));
	ns_strbuf_puts(&r, ";F00ff7a;L1f;Zsomething;b0:;W2a");
	size_t pos = 0;
	bool more;
	struct ns_rsp_frames_item it;
	NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)r.buf, r.len, &pos, &it, &more));
	NS_CHECK(more && it.kind == 'F' && it.len == sizeof(bin) &&
	         memcmp(it.data, bin, sizeof(bin)) == 0);
	NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)r.buf, r.len, &pos, &it, &more));
	NS_CHECK(more && it.kind == 'F' && it.len == 3 && it.data[0] == 0 && it.data[1] == 0xff &&
	         it.data[2] == 0x7a);
	NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)r.buf, r.len, &pos, &it, &more));
	NS_CHECK(more && it.kind == 'L' && it.value == 0x1f);
	NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)r.buf, r.len, &pos, &it, &more));
	NS_CHECK(more && it.kind == 0);
	NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)r.buf, r.len, &pos, &it, &more));
	NS_CHECK(more && it.kind == 'F' && it.len == 0);
	NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)r.buf, r.len, &pos, &it, &more));
	NS_CHECK(more && it.kind == 'W' && it.value == 0x2a);
	NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)r.buf, r.len, &pos, &it, &more));
	NS_CHECK(!more && pos == r.len);
	ns_strbuf_deinit(&r);

	// What ns_rsp_frames_put writes reads back, in both encodings, through the packet
	// framing (which escapes the binary bytes) and the parser (which undoes it).
	uint8_t frame[300];
	for (size_t i = 0; i < sizeof(frame); i++)
		frame[i] = (uint8_t)(i * 7 + 3);
	for (int binary = 0; binary < 2; binary++) {
		struct ns_strbuf pay, wire;
		ns_strbuf_init(&pay);
		ns_strbuf_init(&wire);
		ns_rsp_frames_put(&pay, frame, sizeof(frame), binary);
		ns_rsp_frames_put(&pay, frame + 5, 17, binary);
		NS_CHECK(binary ? pay.len == 300 + 5 + 1 + 17 + 4 : pay.len == 601 + 1 + 35);
		ns_rsp_frame(&wire, pay.buf, pay.len, false);
		struct ns_rsp_parser p;
		ns_rsp_parser_init(&p, 1 << 16);
		size_t used = 0;
		NS_CHECK_INT(ns_rsp_parse(&p, (const uint8_t *)wire.buf, wire.len, &used),
		             NS_RSP_EV_PACKET);
		NS_CHECK_INT(p.payload.len, pay.len);
		pos = 0;
		NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)p.payload.buf, p.payload.len, &pos, &it,
		                               &more));
		NS_CHECK(more && it.kind == 'F' && it.len == sizeof(frame) &&
		         memcmp(it.data, frame, sizeof(frame)) == 0);
		NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)p.payload.buf, p.payload.len, &pos, &it,
		                               &more));
		NS_CHECK(more && it.kind == 'F' && it.len == 17 && memcmp(it.data, frame + 5, 17) == 0);
		NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)p.payload.buf, p.payload.len, &pos, &it,
		                               &more));
		NS_CHECK(!more);
		ns_rsp_parser_deinit(&p);
		ns_strbuf_deinit(&pay);
		ns_strbuf_deinit(&wire);
	}

	// Malformed: a length past the end, no ':', bad digits, bytes not followed by ';',
	// odd or bad hex, an empty count. Each is an error and ends the reply.
	const char *bad[] = {"b5:abc", "b5abcde", "bx:a", "b2:abc", "F0", "Fzz", "L", "W1g",
	                     "b:", "b11111111111111111:a"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char buf[64];
		size_t n = strlen(bad[i]);
		memcpy(buf, bad[i], n);
		pos = 0;
		struct ns_err *err = ns_rsp_frames_next((uint8_t *)buf, n, &pos, &it, &more);
		if (!err)
			ns_test_fail(__FILE__, __LINE__, "accepted \"%s\"", bad[i]);
		NS_CHECK(pos == n);
		ns_err_destroy(err);
	}
}
