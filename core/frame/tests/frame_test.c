/* Trace frame builder/reader round trips, corrupt input, and the register maps checked
 * against the System V x86-64 psABI table (figure 3.36) and GDB's 64bit-core.xml,
 * transcribed here by hand. */
#include <stdlib.h>

#include "base/test.h"
#include "frame/frame.h"

static _Alignas(8) uint8_t buf[4096];

static struct ns_frame_hdr sample_hdr(void)
{
	return (struct ns_frame_hdr){
	        .tp_id = 3,
	        .addr = 0x401136,
	        .tid = 4242,
	        .time_ns = 1700000000123456789ull,
	        .seq = 17,
	        .status = 0,
	        .fault_addr = 0,
	        .hit_count = 99,
	        .magic = 0xdeadbeef, /* overwritten by begin */
	        .nblocks = 1234,
	};
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

NS_TEST(test_frame__round_trip)
{
	struct ns_frame_builder b;
	struct ns_frame_hdr h = sample_hdr();
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	uint64_t regs[NS_FRAME_NREGS];
	for (int i = 0; i < NS_FRAME_NREGS; i++)
		regs[i] = 0x1000 + (uint64_t)i;
	NS_CHECK_INT(ns_frame_add_regs(&b, regs), 0);
	uint8_t *m = ns_frame_reserve_mem(&b, 0x7ffc0000, 5);
	NS_CHECK(m != NULL);
	memcpy(m, "hello", 5);
	NS_CHECK_INT(ns_frame_add_err(&b, 2, 1 /* NS_AX_FAULT */, 0xdead), 0);
	size_t size = ns_frame_end(&b);
	/* 72 header + (16 + 208) regs + (16 + 8) mem + (16 + 16) err */
	NS_CHECK_INT(size, 72 + 224 + 24 + 32);
	NS_CHECK(!b.overflow);
	/* raw layout: little-endian "NSFR" magic, version 1, hdr_size 72, size */
	NS_CHECK(memcmp(buf, "NSFR", 4) == 0);
	NS_CHECK_INT(buf[4] | buf[5] << 8, 1);
	NS_CHECK_INT(buf[6] | buf[7] << 8, 72);
	NS_CHECK_INT(rd32(buf + 8), size);
	/* first block header right after the header: type 'R', len 208, addr 0 */
	NS_CHECK_INT(buf[72], 'R');
	NS_CHECK_INT(rd32(buf + 76), 208);
	/* memory block padding is zeroed */
	NS_CHECK_INT(buf[72 + 224], 'M');
	NS_CHECK(memcmp(buf + 72 + 224 + 16, "hello\0\0\0", 8) == 0);

	struct ns_frame f;
	NS_CHECK_OK(ns_frame_parse(buf, size, &f));
	NS_CHECK_INT(f.size, size);
	NS_CHECK_INT(f.hdr.magic, NS_FRAME_MAGIC);
	NS_CHECK_INT(f.hdr.nblocks, 3);
	NS_CHECK_INT(f.hdr.tp_id, 3);
	NS_CHECK_INT(f.hdr.addr, 0x401136);
	NS_CHECK_INT(f.hdr.tid, 4242);
	NS_CHECK(f.hdr.time_ns == 1700000000123456789ull);
	NS_CHECK_INT(f.hdr.seq, 17);
	NS_CHECK_INT(f.hdr.hit_count, 99);
	NS_CHECK(f.regs != NULL);
	for (unsigned i = 0; i < NS_FRAME_NREGS; i++) {
		uint64_t v = 0;
		NS_CHECK_INT(ns_frame_reg(&f, i, &v), 0);
		NS_CHECK_INT(v, 0x1000 + i);
	}
	uint64_t v;
	NS_CHECK_INT(ns_frame_reg(&f, NS_FRAME_NREGS, &v), -1);

	char out[8] = {0};
	NS_CHECK_INT(ns_frame_read(&f, 0x7ffc0000, out, 5), 5);
	NS_CHECK(memcmp(out, "hello", 5) == 0);
	NS_CHECK_INT(ns_frame_read(&f, 0x7ffc0001, out, 3), 3);
	NS_CHECK(memcmp(out, "ell", 3) == 0);
	NS_CHECK_INT(ns_frame_read(&f, 0x7ffc0003, out, 8), 2); /* "lo" then not captured */
	NS_CHECK_INT(ns_frame_read(&f, 0x7ffbffff, out, 4), 0); /* first byte missing */
	NS_CHECK_INT(ns_frame_read(&f, 0x7ffc0005, out, 1), 0); /* one past the end */

	/* iteration sees the three blocks in order with their payloads */
	size_t it = 0;
	struct ns_frame_block blk;
	const uint8_t *pl;
	NS_CHECK(ns_frame_next_block(&f, &it, &blk, &pl));
	NS_CHECK_INT(blk.type, NS_FRAME_BLOCK_REGS);
	NS_CHECK(ns_frame_next_block(&f, &it, &blk, &pl));
	NS_CHECK_INT(blk.type, NS_FRAME_BLOCK_MEM);
	NS_CHECK_INT(blk.len, 5);
	NS_CHECK_INT(blk.addr, 0x7ffc0000);
	NS_CHECK(memcmp(pl, "hello", 5) == 0);
	NS_CHECK(ns_frame_next_block(&f, &it, &blk, &pl));
	NS_CHECK_INT(blk.type, NS_FRAME_BLOCK_ERR);
	NS_CHECK_INT(blk.addr, 2);
	NS_CHECK_INT(rd32(pl), 1);
	NS_CHECK_INT(rd32(pl + 8), 0xdead);
	NS_CHECK(!ns_frame_next_block(&f, &it, &blk, &pl));
}

NS_TEST(test_frame__overflow_drops_block_frame_stays_valid)
{
	struct ns_frame_builder b;
	struct ns_frame_hdr h = sample_hdr();
	/* room for the header (72) and one 40-byte mem block (16 + 24) plus 8 spare */
	NS_CHECK_INT(ns_frame_begin(&b, buf, 72 + 40 + 8, &h), 0);
	uint8_t *m = ns_frame_reserve_mem(&b, 0x5000, 20);
	NS_CHECK(m != NULL);
	memset(m, 0xab, 20);
	NS_CHECK(ns_frame_reserve_mem(&b, 0x6000, 1) == NULL); /* 16 + 8 > 8 left */
	NS_CHECK(b.overflow);
	uint64_t regs[NS_FRAME_NREGS] = {0};
	NS_CHECK_INT(ns_frame_add_regs(&b, regs), -1);
	NS_CHECK_INT(ns_frame_add_err(&b, 0, 1, 0), -1);
	size_t size = ns_frame_end(&b);
	NS_CHECK_INT(size, 72 + 40);
	struct ns_frame f;
	NS_CHECK_OK(ns_frame_parse(buf, size, &f));
	NS_CHECK_INT(f.hdr.nblocks, 1);
	NS_CHECK(f.regs == NULL);
	uint64_t v;
	NS_CHECK_INT(ns_frame_reg(&f, 0, &v), -1);
	uint8_t out[20];
	NS_CHECK_INT(ns_frame_read(&f, 0x5000, out, 20), 20);
	NS_CHECK_INT(out[19], 0xab);
	NS_CHECK_INT(ns_frame_read(&f, 0x6000, out, 1), 0);
	/* a buffer smaller than the header cannot start a frame */
	NS_CHECK_INT(ns_frame_begin(&b, buf, 71, &h), -1);
}

NS_TEST(test_frame__shrink_last)
{
	struct ns_frame_builder b;
	struct ns_frame_hdr h = sample_hdr();
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	uint8_t *m = ns_frame_reserve_mem(&b, 0x1000, 64);
	memcpy(m, "abcdefghijk", 11);
	ns_frame_shrink_last(&b, 11); /* only 11 bytes were readable */
	m = ns_frame_reserve_mem(&b, 0x2000, 32);
	NS_CHECK(m != NULL);
	ns_frame_shrink_last(&b, 0); /* nothing readable: block dropped */
	size_t size = ns_frame_end(&b);
	NS_CHECK_INT(size, 72 + 16 + 16);
	struct ns_frame f;
	NS_CHECK_OK(ns_frame_parse(buf, size, &f));
	NS_CHECK_INT(f.hdr.nblocks, 1);
	char out[16];
	NS_CHECK_INT(ns_frame_read(&f, 0x1000, out, 16), 11);
	NS_CHECK(memcmp(out, "abcdefghijk", 11) == 0);
	NS_CHECK_INT(buf[72 + 16 + 11], 0); /* new padding zeroed */
	NS_CHECK_INT(ns_frame_read(&f, 0x2000, out, 1), 0);
}

NS_TEST(test_frame__read_adjacent_overlapping_and_gap)
{
	struct ns_frame_builder b;
	struct ns_frame_hdr h = sample_hdr();
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	/* out of order on purpose: [0x108,0x110) "IJKLMNOP" before [0x100,0x108) "ABCDEFGH",
	 * then a gap, then [0x118,0x11c) "WXYZ"; and [0x104,0x10a) "efghij" overlapping
	 * both, added last, so it wins. */
	memcpy(ns_frame_reserve_mem(&b, 0x108, 8), "IJKLMNOP", 8);
	memcpy(ns_frame_reserve_mem(&b, 0x100, 8), "ABCDEFGH", 8);
	memcpy(ns_frame_reserve_mem(&b, 0x118, 4), "WXYZ", 4);
	size_t size = ns_frame_end(&b);
	struct ns_frame f;
	NS_CHECK_OK(ns_frame_parse(buf, size, &f));
	char out[32];
	memset(out, '.', sizeof(out));
	NS_CHECK_INT(ns_frame_read(&f, 0x100, out, 16), 16); /* across two adjacent blocks */
	NS_CHECK(memcmp(out, "ABCDEFGHIJKLMNOP", 16) == 0);
	memset(out, '.', sizeof(out));
	NS_CHECK_INT(ns_frame_read(&f, 0x104, out, 28), 12); /* gap at 0x110: the prefix */
	NS_CHECK(memcmp(out, "EFGHIJKLMNOP", 12) == 0);
	NS_CHECK_INT(ns_frame_read(&f, 0x110, out, 4), 0);
	NS_CHECK_INT(ns_frame_read(&f, 0x119, out, 8), 3);
	NS_CHECK(memcmp(out, "XYZ", 3) == 0);

	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	memcpy(ns_frame_reserve_mem(&b, 0x100, 8), "ABCDEFGH", 8);
	memcpy(ns_frame_reserve_mem(&b, 0x108, 8), "IJKLMNOP", 8);
	memcpy(ns_frame_reserve_mem(&b, 0x104, 6), "efghij", 6);
	size = ns_frame_end(&b);
	NS_CHECK_OK(ns_frame_parse(buf, size, &f));
	memset(out, '.', sizeof(out));
	NS_CHECK_INT(ns_frame_read(&f, 0x102, out, 20), 14);
	NS_CHECK(memcmp(out, "CDefghijKLMNOP", 14) == 0);
	/* a block reaching the top of the address space */
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	memcpy(ns_frame_reserve_mem(&b, 0xfffffffffffffffcull, 4), "TOP!", 4);
	size = ns_frame_end(&b);
	NS_CHECK_OK(ns_frame_parse(buf, size, &f));
	NS_CHECK_INT(ns_frame_read(&f, 0xfffffffffffffffeull, out, 8), 2);
	NS_CHECK(memcmp(out, "P!", 2) == 0);
}

/* Expect NS_ERR_FORMAT whose message contains @part. */
static void check_bad(const uint8_t *data, size_t size, const char *part, int line)
{
	struct ns_frame f;
	struct ns_err *e = ns_frame_parse(data, size, &f);
	if (!e) {
		ns_test_fail(__FILE__, line, "parsed, expected an error with \"%s\"", part);
		return;
	}
	if (e->code != NS_ERR_FORMAT || !strstr(e->msg, part))
		ns_test_fail(__FILE__, line, "error %d \"%s\", expected NS_ERR_FORMAT \"%s\"",
		             e->code, e->msg, part);
	ns_err_destroy(e);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

NS_TEST(test_frame__corrupt_frames_rejected)
{
	struct ns_frame_builder b;
	struct ns_frame_hdr h = sample_hdr();
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	memcpy(ns_frame_reserve_mem(&b, 0x100, 8), "ABCDEFGH", 8);
	memcpy(ns_frame_reserve_mem(&b, 0x200, 3), "xyz", 3);
	size_t size = ns_frame_end(&b); /* 72 + 24 + 24 = 120 */
	NS_CHECK_INT(size, 120);
	uint8_t bad[256];

	memcpy(bad, buf, size);
	bad[0] = 'X';
	check_bad(bad, size, "bad magic", __LINE__);

	memcpy(bad, buf, size);
	bad[4] = 2;
	check_bad(bad, size, "version 2", __LINE__);

	/* second block (index 1, at offset 96) claims 100 payload bytes */
	memcpy(bad, buf, size);
	put32(bad + 96 + 4, 100);
	check_bad(bad, size, "block 1", __LINE__);
	check_bad(bad, size, "past the end", __LINE__);

	/* first block claims a length reaching past everything (overflow bait) */
	memcpy(bad, buf, size);
	put32(bad + 72 + 4, 0xfffffffc);
	check_bad(bad, size, "block 0", __LINE__);

	/* size smaller than the header */
	memcpy(bad, buf, size);
	put32(bad + 8, 40);
	check_bad(bad, size, "smaller than header", __LINE__);

	/* size larger than the bytes available */
	memcpy(bad, buf, size);
	check_bad(bad, size - 8, "only 112 bytes", __LINE__);

	/* nblocks claims a third block that is not there */
	memcpy(bad, buf, size);
	put32(bad + offsetof(struct ns_frame_hdr, nblocks), 3);
	check_bad(bad, size, "block 2", __LINE__);

	/* too short to hold a header at all */
	check_bad(buf, 8, "too short", __LINE__);

	/* header size below ours */
	memcpy(bad, buf, size);
	bad[6] = 64;
	check_bad(bad, size, "header size 64", __LINE__);

	/* a register block too short for 26 registers */
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	ns_frame_reserve_mem(&b, 0, 8);
	size = ns_frame_end(&b);
	buf[72] = 'R';
	check_bad(buf, size, "register block", __LINE__);
}

NS_TEST(test_frame__larger_header_accepted)
{
	/* a future writer with a 80-byte header: blocks start after it */
	struct ns_frame_builder b;
	struct ns_frame_hdr h = sample_hdr();
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	memcpy(ns_frame_reserve_mem(&b, 0x100, 8), "ABCDEFGH", 8);
	size_t size = ns_frame_end(&b);
	uint8_t big[256];
	memcpy(big, buf, 72);
	memset(big + 72, 0xee, 8);
	memcpy(big + 80, buf + 72, size - 72);
	big[6] = 80;
	put32(big + 8, (uint32_t)size + 8);
	struct ns_frame f;
	NS_CHECK_OK(ns_frame_parse(big, size + 8 + 100 /* trailing bytes after the frame */, &f));
	NS_CHECK_INT(f.size, size + 8);
	char out[8];
	NS_CHECK_INT(ns_frame_read(&f, 0x100, out, 8), 8);
	NS_CHECK(memcmp(out, "ABCDEFGH", 8) == 0);
}

NS_TEST(test_frame__unaligned_register_block)
{
	struct ns_frame_builder b;
	struct ns_frame_hdr h = sample_hdr();
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	uint64_t regs[NS_FRAME_NREGS];
	for (int i = 0; i < NS_FRAME_NREGS; i++)
		regs[i] = 0x0102030405060708ull * (uint64_t)(i + 1);
	ns_frame_add_regs(&b, regs);
	size_t size = ns_frame_end(&b);
	uint8_t *odd = malloc(size + 1);
	memcpy(odd + 1, buf, size); /* misaligned copy, as received off a socket */
	struct ns_frame f;
	NS_CHECK_OK(ns_frame_parse(odd + 1, size, &f));
	uint64_t v = 0;
	NS_CHECK_INT(ns_frame_reg(&f, NS_REG_RIP, &v), 0);
	NS_CHECK(v == 0x0102030405060708ull * 17);
	free(odd);
}

NS_TEST(test_frame__register_maps_match_psabi)
{
	/* psABI figure 3.36: DWARF number -> register; GDB numbers from 64bit-core.xml:
	 * rax 0, rbx 1, rcx 2, rdx 3, rsi 4, rdi 5, rbp 6, rsp 7, r8..r15 8..15, rip 16,
	 * eflags 17, cs 18, ss 19, ds 20, es 21, fs 22, gs 23, fs_base 24, gs_base 25. */
	static const struct {
		unsigned dwarf;
		int gdb;
		const char *name;
	} table[] = {
	        {0, 0, "rax"},       {1, 3, "rdx"},       {2, 2, "rcx"},   {3, 1, "rbx"},
	        {4, 4, "rsi"},       {5, 5, "rdi"},       {6, 6, "rbp"},   {7, 7, "rsp"},
	        {8, 8, "r8"},        {9, 9, "r9"},        {10, 10, "r10"}, {11, 11, "r11"},
	        {12, 12, "r12"},     {13, 13, "r13"},     {14, 14, "r14"}, {15, 15, "r15"},
	        {16, 16, "rip"},     {49, 17, "eflags"},  {50, 21, "es"},  {51, 18, "cs"},
	        {52, 19, "ss"},      {53, 20, "ds"},      {54, 22, "fs"},  {55, 23, "gs"},
	        {58, 24, "fs_base"}, {59, 25, "gs_base"},
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		NS_CHECK_INT(ns_frame_dwarf_to_gdb_reg(table[i].dwarf), table[i].gdb);
		NS_CHECK_INT(ns_frame_gdb_to_dwarf_reg((unsigned)table[i].gdb), table[i].dwarf);
		NS_CHECK_STR(ns_frame_reg_name((unsigned)table[i].gdb), table[i].name);
	}
	/* xmm0 (17), st0 (33), mm0 (41), tr (62), out of range */
	NS_CHECK_INT(ns_frame_dwarf_to_gdb_reg(17), -1);
	NS_CHECK_INT(ns_frame_dwarf_to_gdb_reg(33), -1);
	NS_CHECK_INT(ns_frame_dwarf_to_gdb_reg(41), -1);
	NS_CHECK_INT(ns_frame_dwarf_to_gdb_reg(56), -1);
	NS_CHECK_INT(ns_frame_dwarf_to_gdb_reg(62), -1);
	NS_CHECK_INT(ns_frame_dwarf_to_gdb_reg(1000), -1);
	NS_CHECK_INT(ns_frame_gdb_to_dwarf_reg(26), -1);
	NS_CHECK(ns_frame_reg_name(26) == NULL);
	/* the enum itself follows GDB's order */
	NS_CHECK_INT(NS_REG_RIP, 16);
	NS_CHECK_INT(NS_REG_EFLAGS, 17);
	NS_CHECK_INT(NS_REG_ES, 21);
	NS_CHECK_INT(NS_REG_GS_BASE, 25);
	NS_CHECK_INT(NS_FRAME_NREGS, 26);
}

NS_TEST(test_frame__some_registers)
{
	struct ns_frame_builder b;
	struct ns_frame_hdr h = {.tp_id = 1};
	uint64_t regs[NS_FRAME_NREGS];
	for (unsigned i = 0; i < NS_FRAME_NREGS; i++)
		regs[i] = 0x5000 + i;
	/* rdx (3), rdi (5), rip (16): 8 bytes of mask + 3 registers */
	uint64_t mask = 1u << 3 | 1u << 5 | 1u << 16;
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	NS_CHECK_INT(ns_frame_add_regs_some(&b, mask | (1ull << 40), regs), 0);
	size_t size = ns_frame_end(&b);
	NS_CHECK_INT(buf[72], 'r');
	NS_CHECK_INT(rd32(buf + 76), 32);
	NS_CHECK_INT(size, 72 + 16 + 32);
	struct ns_frame f;
	NS_CHECK_OK(ns_frame_parse(buf, size, &f));
	for (unsigned i = 0; i < NS_FRAME_NREGS; i++) {
		uint64_t v = 0;
		int want = (mask >> i) & 1 ? 0 : -1;
		NS_CHECK_INT(ns_frame_reg(&f, i, &v), want);
		if (want == 0)
			NS_CHECK_INT(v, 0x5000 + i);
	}
	/* every register: a full 'R' block */
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	NS_CHECK_INT(ns_frame_add_regs_some(&b, ~0ull, regs), 0);
	size = ns_frame_end(&b);
	NS_CHECK_INT(buf[72], 'R');
	/* a mask that does not match the length, or names a register past the last */
	NS_CHECK_INT(ns_frame_begin(&b, buf, sizeof(buf), &h), 0);
	NS_CHECK_INT(ns_frame_add_regs_some(&b, mask, regs), 0);
	size = ns_frame_end(&b);
	uint64_t bad = mask | 1u << 7;
	memcpy(buf + 72 + 16, &bad, 8);
	struct ns_err *err = ns_frame_parse(buf, size, &f);
	NS_CHECK(err != NULL && err->code == NS_ERR_FORMAT);
	ns_err_destroy(err);
	bad = (mask & ~(1ull << 16)) | 1ull << 30;
	memcpy(buf + 72 + 16, &bad, 8);
	err = ns_frame_parse(buf, size, &f);
	NS_CHECK(err != NULL && err->code == NS_ERR_FORMAT);
	ns_err_destroy(err);
}
