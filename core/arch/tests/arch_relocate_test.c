/* Tests for core/arch: instruction bytes written by hand (expected text as capstone
 * and objdump print them), relocated copies checked by decoding them again with
 * capstone directly, and relocated code executed for real. */
#define _GNU_SOURCE
#include "arch/arch.h"
#include "base/test.h"

#include <capstone/capstone.h>
#include <stdlib.h>
#include <sys/mman.h>

#define A 0x401000ull

struct tc {
	const char *name;
	uint8_t bytes[16];
	size_t len;
	const char *text;
	enum ns_arch_insn_kind kind;
	uint8_t disp_offset;
	uint8_t cc;
	uint64_t target;
};

static const struct tc cases[] = {
        {"mov_rip",
         {0x8b, 0x05, 0x1e, 0x2f, 0, 0},
         6,
         "mov eax, dword ptr [rip + 0x2f1e]",
         NS_INSN_RIPREL,
         2,
         0,
         0},
        {"lea_rip",
         {0x48, 0x8d, 0x3d, 0x00, 0x01, 0, 0},
         7,
         "lea rdi, [rip + 0x100]",
         NS_INSN_RIPREL,
         3,
         0,
         0},
        {"mov_rip_imm",
         {0xc7, 0x05, 0x10, 0, 0, 0, 0x2a, 0, 0, 0},
         10,
         "mov dword ptr [rip + 0x10], 0x2a",
         NS_INSN_RIPREL,
         2,
         0,
         0},
        {"cmp_rip_imm8",
         {0x80, 0x3d, 0x20, 0, 0, 0, 0x00},
         7,
         "cmp byte ptr [rip + 0x20], 0",
         NS_INSN_RIPREL,
         2,
         0,
         0},
        {"cmp_reg_rip",
         {0x48, 0x3b, 0x05, 0xf0, 0xff, 0xff, 0xff},
         7,
         "cmp rax, qword ptr [rip - 0x10]",
         NS_INSN_RIPREL,
         3,
         0,
         0},
        {"cmp16_rip_imm",
         {0x66, 0x83, 0x3d, 0x10, 0, 0, 0, 0x05},
         8,
         "cmp word ptr [rip + 0x10], 5",
         NS_INSN_RIPREL,
         3,
         0,
         0},
        // 0x66 + disp not at the end: capstone 4 reports disp_size 2 for these.
        {"mov16_rip_imm16",
         {0x66, 0xc7, 0x05, 0x10, 0, 0, 0, 0x34, 0x12},
         9,
         "mov word ptr [rip + 0x10], 0x1234",
         NS_INSN_RIPREL,
         3,
         0,
         0},
        {"movq_66_rex_rip",
         {0x66, 0x48, 0x0f, 0x6e, 0x05, 0x01, 0, 0, 0},
         9,
         "movq xmm0, qword ptr [rip + 1]",
         NS_INSN_RIPREL,
         5,
         0,
         0},
        {"vmovdqu_rip",
         {0xc5, 0xfe, 0x6f, 0x05, 0x00, 0x02, 0, 0},
         8,
         "vmovdqu ymm0, ymmword ptr [rip + 0x200]",
         NS_INSN_RIPREL,
         4,
         0,
         0},
        {"movss_rip",
         {0xf3, 0x0f, 0x10, 0x05, 0x40, 0, 0, 0},
         8,
         "movss xmm0, dword ptr [rip + 0x40]",
         NS_INSN_RIPREL,
         4,
         0,
         0},
        {"mov_r8_rip",
         {0x4c, 0x8b, 0x05, 0x00, 0x10, 0, 0},
         7,
         "mov r8, qword ptr [rip + 0x1000]",
         NS_INSN_RIPREL,
         3,
         0,
         0},
        {"je_rel8", {0x74, 0x10}, 2, "je 0x401012", NS_INSN_JCC, 0, 4, A + 2 + 0x10},
        {"jne_rel8_back", {0x75, 0xfe}, 2, "jne 0x401000", NS_INSN_JCC, 0, 5, A},
        {"jl_rel32",
         {0x0f, 0x8c, 0x00, 0x01, 0, 0},
         6,
         "jl 0x401106",
         NS_INSN_JCC,
         0,
         0xc,
         A + 6 + 0x100},
        {"jg_rel32_back",
         {0x0f, 0x8f, 0xfa, 0xff, 0xff, 0xff},
         6,
         "jg 0x401000",
         NS_INSN_JCC,
         0,
         0xf,
         A},
        {"jmp_rel8", {0xeb, 0x05}, 2, "jmp 0x401007", NS_INSN_JMP, 0, 0, A + 7},
        {"jmp_rel32", {0xe9, 0xfb, 0xff, 0xff, 0xff}, 5, "jmp 0x401000", NS_INSN_JMP, 0, 0, A},
        {"call_rel32",
         {0xe8, 0x00, 0x00, 0x00, 0x00},
         5,
         "call 0x401005",
         NS_INSN_CALL,
         0,
         0,
         A + 5},
        {"push_rbp", {0x55}, 1, "push rbp", NS_INSN_PLAIN, 0, 0, 0},
        {"pop_rbx", {0x5b}, 1, "pop rbx", NS_INSN_PLAIN, 0, 0, 0},
        {"push_r12", {0x41, 0x54}, 2, "push r12", NS_INSN_PLAIN, 0, 0, 0},
        {"mov_rbp_rsp", {0x48, 0x89, 0xe5}, 3, "mov rbp, rsp", NS_INSN_PLAIN, 0, 0, 0},
        {"mov_local",
         {0x89, 0x7d, 0xfc},
         3,
         "mov dword ptr [rbp - 4], edi",
         NS_INSN_PLAIN,
         0,
         0,
         0},
        {"mov16_prefix", {0x66, 0x89, 0x07}, 3, "mov word ptr [rdi], ax", NS_INSN_PLAIN, 0, 0, 0},
        {"rep_stosq",
         {0xf3, 0x48, 0xab},
         3,
         "rep stosq qword ptr [rdi], rax",
         NS_INSN_PLAIN,
         0,
         0,
         0},
        {"nopw",
         {0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00},
         6,
         "nop word ptr [rax + rax]",
         NS_INSN_PLAIN,
         0,
         0,
         0},
        {"ret", {0xc3}, 1, "ret", NS_INSN_RET, 0, 0, 0},
        {"rep_ret", {0xf3, 0xc3}, 2, "ret", NS_INSN_RET, 0, 0, 0},
        // CET and MPX prefixes that distribution compilers emit at entries, PLTs, returns.
        {"endbr64", {0xf3, 0x0f, 0x1e, 0xfa}, 4, "endbr64", NS_INSN_PLAIN, 0, 0, 0},
        {"bnd_jmp", {0xf2, 0xe9, 0, 0, 0, 0}, 6, "bnd jmp 0x401006", NS_INSN_JMP, 0, 0, A + 6},
        {"bnd_ret", {0xf2, 0xc3}, 2, "bnd ret", NS_INSN_RET, 0, 0, 0},
        {"ret_imm", {0xc2, 0x08, 0x00}, 3, "ret 8", NS_INSN_PLAIN, 0, 0, 0},
        {"syscall", {0x0f, 0x05}, 2, "syscall", NS_INSN_UNSUPPORTED, 0, 0, 0},
        {"loop", {0xe2, 0xfe}, 2, "loop 0x401000", NS_INSN_UNSUPPORTED, 0, 0, 0},
        {"jrcxz", {0xe3, 0x00}, 2, "jrcxz 0x401002", NS_INSN_UNSUPPORTED, 0, 0, 0},
        {"call_rip",
         {0xff, 0x15, 0x10, 0, 0, 0},
         6,
         "call qword ptr [rip + 0x10]",
         NS_INSN_UNSUPPORTED,
         0,
         0,
         0},
        {"jmp_rip",
         {0xff, 0x25, 0x10, 0, 0, 0},
         6,
         "jmp qword ptr [rip + 0x10]",
         NS_INSN_UNSUPPORTED,
         0,
         0,
         0},
        {"call_rax", {0xff, 0xd0}, 2, "call rax", NS_INSN_UNSUPPORTED, 0, 0, 0},
        {"ud2", {0x0f, 0x0b}, 2, "ud2", NS_INSN_UNSUPPORTED, 0, 0, 0},
        {"int80", {0xcd, 0x80}, 2, "int 0x80", NS_INSN_UNSUPPORTED, 0, 0, 0},
        {"jmp_rax", {0xff, 0xe0}, 2, "jmp rax", NS_INSN_PLAIN, 0, 0, 0},
};

// Absolute address of the first RIP-based memory operand as capstone sees it, or 0.
static uint64_t cs_rip_target(const uint8_t *code, size_t len, uint64_t addr, size_t *insn_len)
{
	csh h;
	cs_insn *ci;
	uint64_t r = 0;
	if (cs_open(CS_ARCH_X86, CS_MODE_64, &h) != CS_ERR_OK)
		return 0;
	cs_option(h, CS_OPT_DETAIL, CS_OPT_ON);
	if (cs_disasm(h, code, len, addr, 1, &ci) == 1) {
		*insn_len = ci->size;
		for (unsigned i = 0; i < ci->detail->x86.op_count; i++) {
			cs_x86_op *o = &ci->detail->x86.operands[i];
			if (o->type == X86_OP_MEM && o->mem.base == X86_REG_RIP)
				r = addr + ci->size + (uint64_t)o->mem.disp;
		}
		cs_free(ci, 1);
	}
	cs_close(&h);
	return r;
}

// Where the instruction at @code (a jmp) goes, decoded by capstone: rel32 target or,
// for "jmp qword ptr [rip]", the quad that follows.
static uint64_t cs_jmp_target(const uint8_t *code, size_t len, uint64_t addr, char text[256])
{
	csh h;
	cs_insn *ci;
	uint64_t r = 0;
	if (cs_open(CS_ARCH_X86, CS_MODE_64, &h) != CS_ERR_OK)
		return 0;
	cs_option(h, CS_OPT_DETAIL, CS_OPT_ON);
	if (cs_disasm(h, code, len, addr, 1, &ci) == 1) {
		snprintf(text, 256, "%s %s", ci->mnemonic, ci->op_str);
		cs_x86_op *o = &ci->detail->x86.operands[0];
		if (ci->id == X86_INS_JMP && o->type == X86_OP_IMM)
			r = (uint64_t)o->imm;
		else if (ci->id == X86_INS_JMP && o->type == X86_OP_MEM &&
		         o->mem.base == X86_REG_RIP && o->mem.disp == 0)
			memcpy(&r, code + ci->size, 8);
		cs_free(ci, 1);
	}
	cs_close(&h);
	return r;
}

NS_TEST(test_arch_relocate__decode_table)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tc *c = &cases[i];
		struct ns_arch_insn insn;
		struct ns_err *err = ns_arch_decode(c->bytes, c->len, A, &insn);
		if (err) {
			ns_test_fail(__FILE__, __LINE__, "%s: %s", c->name, err->msg);
			ns_err_destroy(err);
			continue;
		}
		if (insn.kind != c->kind || insn.len != c->len || strcmp(insn.text, c->text) != 0 ||
		    insn.disp_offset != c->disp_offset || insn.cc != c->cc ||
		    (c->target && insn.target != c->target))
			ns_test_fail(__FILE__, __LINE__,
			             "%s: kind %d len %u text '%s' disp_off %u cc %u target %#llx; "
			             "expected kind %d len %zu text '%s' disp_off %u cc %u target "
			             "%#llx",
			             c->name, insn.kind, insn.len, insn.text, insn.disp_offset,
			             insn.cc, (unsigned long long)insn.target, c->kind, c->len,
			             c->text, c->disp_offset, c->cc, (unsigned long long)c->target);
		if (insn.kind == NS_INSN_UNSUPPORTED)
			NS_CHECK(insn.reason != NULL);
	}
}

NS_TEST(test_arch_relocate__decode_trailing_bytes)
{
	// Only the first instruction is decoded; the rest of the buffer is ignored.
	uint8_t code[] = {0x55, 0x48, 0x89, 0xe5, 0xc3};
	struct ns_arch_insn insn;
	NS_CHECK_OK(ns_arch_decode(code, sizeof(code), A, &insn));
	NS_CHECK_INT(insn.len, 1);
	NS_CHECK_STR(insn.text, "push rbp");
}

NS_TEST(test_arch_relocate__decode_bad_bytes)
{
	uint8_t trunc[] = {0x8b, 0x05, 0x1e}; // mov eax,[rip+...] cut short
	struct ns_arch_insn insn;
	struct ns_err *err = ns_arch_decode(trunc, sizeof(trunc), A, &insn);
	NS_CHECK(err != NULL);
	if (err) {
		NS_CHECK_INT(err->code, NS_ERR_FORMAT);
		NS_CHECK(strstr(err->msg, "0x401000") != NULL);
		ns_err_destroy(err);
	}
}

static void check_relocated(const struct tc *c, uint64_t dst_addr)
{
	struct ns_arch_insn insn;
	uint8_t out[64];
	size_t n = 0;
	NS_CHECK_OK(ns_arch_decode(c->bytes, c->len, A, &insn));
	struct ns_err *err = ns_arch_relocate(&insn, c->bytes, A, dst_addr, out, sizeof(out), &n);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "%s: %s", c->name, err->msg);
		ns_err_destroy(err);
		return;
	}
	size_t l1 = 0, l2 = 0;
	uint64_t t_orig = cs_rip_target(c->bytes, c->len, A, &l1);
	uint64_t t_new = cs_rip_target(out, n, dst_addr, &l2);
	NS_CHECK_INT(l2, c->len);
	NS_CHECK(t_orig == t_new);
	if (c->kind == NS_INSN_RIPREL)
		NS_CHECK(t_orig != 0);
	// Everything but the displacement is unchanged (prefixes, opcode, immediates).
	for (size_t i = 0; i < c->len; i++)
		if (c->kind != NS_INSN_RIPREL || i < c->disp_offset || i >= c->disp_offset + 4u)
			if (out[i] != c->bytes[i])
				ns_test_fail(__FILE__, __LINE__, "%s: byte %zu changed", c->name,
				             i);
	char text[256];
	uint64_t back = cs_jmp_target(out + c->len, n - c->len, dst_addr + c->len, text);
	if (back != A + c->len)
		ns_test_fail(__FILE__, __LINE__, "%s: trailing '%s' goes to %#llx, expected %#llx",
		             c->name, text, (unsigned long long)back,
		             (unsigned long long)(A + c->len));
}

NS_TEST(test_arch_relocate__near_copies)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tc *c = &cases[i];
		if (c->kind != NS_INSN_PLAIN && c->kind != NS_INSN_RIPREL)
			continue;
		check_relocated(c, A + 0x7f000000ull);   // above, near the rel32 limit
		check_relocated(c, A - 0x400000ull + 3); // below, odd address
	}
}

NS_TEST(test_arch_relocate__far_plain_uses_absolute_jmp)
{
	const struct tc *push = NULL;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (strcmp(cases[i].name, "push_r12") == 0)
			push = &cases[i];
	check_relocated(push, 0x7f0000001000ull);
	struct ns_arch_insn insn;
	uint8_t out[64];
	size_t n = 0;
	NS_CHECK_OK(ns_arch_decode(push->bytes, push->len, A, &insn));
	NS_CHECK_OK(
	        ns_arch_relocate(&insn, push->bytes, A, 0x7f0000001000ull, out, sizeof(out), &n));
	NS_CHECK_INT(n, 2 + 14);
}

NS_TEST(test_arch_relocate__far_riprel_rejected)
{
	struct ns_arch_insn insn;
	uint8_t out[64];
	size_t n = 0;
	NS_CHECK_OK(ns_arch_decode(cases[0].bytes, cases[0].len, A, &insn));
	struct ns_err *err =
	        ns_arch_relocate(&insn, cases[0].bytes, A, 0x7f0000001000ull, out, sizeof(out), &n);
	NS_CHECK(err != NULL);
	if (err) {
		NS_CHECK_INT(err->code, NS_ERR_UNSUPPORTED);
		NS_CHECK(strstr(err->msg, "out of range") != NULL);
		ns_err_destroy(err);
	}
	// Exactly at the edge: disp 0x2f1e + (A - dst) == INT32_MAX fits, one more does not.
	uint64_t dst = A + 0x2f1e - 0x7fffffffull;
	NS_CHECK_OK(ns_arch_relocate(&insn, cases[0].bytes, A, dst, out, sizeof(out), &n));
	err = ns_arch_relocate(&insn, cases[0].bytes, A, dst - 1, out, sizeof(out), &n);
	NS_CHECK(err != NULL);
	ns_err_destroy(err);
}

NS_TEST(test_arch_relocate__branches_not_relocated)
{
	uint8_t jmp[] = {0xeb, 0x05};
	struct ns_arch_insn insn;
	uint8_t out[64];
	size_t n;
	NS_CHECK_OK(ns_arch_decode(jmp, sizeof(jmp), A, &insn));
	struct ns_err *err = ns_arch_relocate(&insn, jmp, A, A + 0x1000, out, sizeof(out), &n);
	NS_CHECK(err != NULL && err->code == NS_ERR_UNSUPPORTED);
	ns_err_destroy(err);
}

typedef uint64_t (*fn_t)(void);

// Put @insn_bytes + ret at @page, relocate the instruction to @dst, run both.
static void run_both(uint8_t *page, uint8_t *dst, const uint8_t *insn_bytes, size_t len,
                     uint64_t *orig, uint64_t *reloc)
{
	memcpy(page, insn_bytes, len);
	page[len] = 0xc3;
	struct ns_arch_insn insn;
	size_t n = 0;
	*orig = *reloc = 0xdeadbeef;
	NS_CHECK_OK(ns_arch_decode(page, len + 1, (uint64_t)(uintptr_t)page, &insn));
	struct ns_err *err = ns_arch_relocate(&insn, page, (uint64_t)(uintptr_t)page,
	                                      (uint64_t)(uintptr_t)dst, dst, 64, &n);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "relocate: %s", err->msg);
		ns_err_destroy(err);
		return;
	}
	__builtin___clear_cache((char *)page, (char *)page + 4096);
	__builtin___clear_cache((char *)dst, (char *)dst + 64);
	*orig = ((fn_t)(uintptr_t)page)();
	*reloc = ((fn_t)(uintptr_t)dst)();
}

NS_TEST(test_arch_relocate__execute)
{
	uint8_t *page = mmap(NULL, 8192, PROT_READ | PROT_WRITE | PROT_EXEC,
	                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	NS_CHECK(page != MAP_FAILED);
	if (page == MAP_FAILED)
		return;
	uint64_t o, r;
	// lea rax, [rip + 0x1234]; ret
	uint8_t lea[] = {0x48, 0x8d, 0x05, 0x34, 0x12, 0, 0};
	run_both(page, page + 0x800, lea, sizeof(lea), &o, &r);
	NS_CHECK(o == (uint64_t)(uintptr_t)page + 7 + 0x1234);
	NS_CHECK(r == o);

	// mov eax, dword ptr [rip + (0x400 - 6)]; ret: reads the word at page + 0x400.
	uint32_t magic = 0x5a17c0de;
	memcpy(page + 0x400, &magic, 4);
	uint8_t mov[] = {0x8b, 0x05, 0xfa, 0x03, 0, 0};
	run_both(page, page + 0xc00, mov, sizeof(mov), &o, &r);
	NS_CHECK_INT(o, magic);
	NS_CHECK_INT(r, magic);

	// mov dword ptr [rip + X], 0x2a with the displacement in the middle; then
	// mov eax, [page + 0x400] to return what was written (two snippets).
	uint8_t st[] = {0xc7, 0x05, 0, 0, 0, 0, 0x2a, 0, 0, 0};
	int32_t d = 0x400 - 10;
	memcpy(st + 2, &d, 4);
	memcpy(page + 0x400, &magic, 4);
	run_both(page, page + 0x1000, st, sizeof(st), &o, &r);
	uint32_t got;
	memcpy(&got, page + 0x400, 4);
	NS_CHECK_INT(got, 0x2a);
	memcpy(page + 0x400, &magic, 4);
	((fn_t)(uintptr_t)(page + 0x1000))();
	memcpy(&got, page + 0x400, 4);
	NS_CHECK_INT(got, 0x2a);
	munmap(page, 8192);
}

NS_TEST(test_arch_relocate__execute_far_absolute_jmp)
{
	uint8_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
	                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	NS_CHECK(page != MAP_FAILED);
	if (page == MAP_FAILED)
		return;
	// A second page more than 4 GiB away, so the jmp back must be absolute.
	uint8_t *far = MAP_FAILED;
	for (uint64_t off = 8ull << 30; off < (64ull << 30) && far == MAP_FAILED; off <<= 1) {
		uint64_t hint = (uint64_t)(uintptr_t)page - off;
		far = mmap((void *)(uintptr_t)hint, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
		           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	}
	NS_CHECK(far != MAP_FAILED);
	if (far != MAP_FAILED) {
		uint64_t o, r;
		uint8_t mov[] = {0xb8, 0x2a, 0, 0, 0}; // mov eax, 0x2a
		run_both(page, far, mov, sizeof(mov), &o, &r);
		NS_CHECK_INT(o, 0x2a);
		NS_CHECK_INT(r, 0x2a);
		NS_CHECK(far[5] == 0xff && far[6] == 0x25);
		munmap(far, 4096);
	}
	munmap(page, 4096);
}

NS_TEST(test_arch_relocate__cond_holds)
{
	// Each condition against the flags it tests (Intel SDM vol. 2, Jcc).
	enum { CF = 1, PF = 4, ZF = 0x40, SF = 0x80, OF = 0x800 };
	struct {
		unsigned cc;
		uint64_t fl;
		bool want;
	} t[] = {
	        {0x0, OF, true},       {0x0, 0, false},       {0x1, 0, true},
	        {0x1, OF, false},      {0x2, CF, true},       {0x2, 0, false},
	        {0x3, 0, true},        {0x3, CF, false},      {0x4, ZF, true},
	        {0x4, 0, false},       {0x5, 0, true},        {0x5, ZF, false},
	        {0x6, CF, true},       {0x6, ZF, true},       {0x6, 0, false},
	        {0x7, 0, true},        {0x7, CF, false},      {0x7, ZF, false},
	        {0x8, SF, true},       {0x8, 0, false},       {0x9, 0, true},
	        {0x9, SF, false},      {0xa, PF, true},       {0xa, 0, false},
	        {0xb, 0, true},        {0xb, PF, false},      {0xc, SF, true},
	        {0xc, OF, true},       {0xc, SF | OF, false}, {0xc, 0, false},
	        {0xd, SF | OF, true},  {0xd, 0, true},        {0xd, SF, false},
	        {0xe, ZF, true},       {0xe, SF, true},       {0xe, 0, false},
	        {0xe, SF | OF, false}, {0xf, 0, true},        {0xf, SF | OF, true},
	        {0xf, ZF, false},      {0xf, OF, false},      {0x4, 0x202 | ZF, true},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (ns_arch_cond_holds(t[i].cc, t[i].fl) != t[i].want)
			ns_test_fail(__FILE__, __LINE__, "cc %#x flags %#llx: expected %d", t[i].cc,
			             (unsigned long long)t[i].fl, t[i].want);
}

// The condition codes agree with what the CPU does: run "cmp; setcc" for each cc.
NS_TEST(test_arch_relocate__cond_holds_matches_cpu)
{
	static const long vals[] = {0, 1, -1, 2, 0x7fffffffffffffffl, (long)0x8000000000000000ul};
	for (size_t i = 0; i < 6; i++)
		for (size_t j = 0; j < 6; j++) {
			uint64_t fl;
			long a = vals[i], b = vals[j];
			__asm__ volatile("cmp %2, %1\n\tpushfq\n\tpop %0"
			                 : "=r"(fl)
			                 : "r"(a), "r"(b)
			                 : "cc");
			bool lt = a < b, ult = (unsigned long)a < (unsigned long)b;
			NS_CHECK(ns_arch_cond_holds(0x4, fl) == (a == b));
			NS_CHECK(ns_arch_cond_holds(0x5, fl) == (a != b));
			NS_CHECK(ns_arch_cond_holds(0xc, fl) == lt);
			NS_CHECK(ns_arch_cond_holds(0xd, fl) == !lt);
			NS_CHECK(ns_arch_cond_holds(0xe, fl) == (a <= b));
			NS_CHECK(ns_arch_cond_holds(0xf, fl) == (a > b));
			NS_CHECK(ns_arch_cond_holds(0x2, fl) == ult);
			NS_CHECK(ns_arch_cond_holds(0x3, fl) == !ult);
			NS_CHECK(ns_arch_cond_holds(0x6, fl) == (ult || a == b));
			NS_CHECK(ns_arch_cond_holds(0x7, fl) == (!ult && a != b));
		}
}
