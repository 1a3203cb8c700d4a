/* Tests for the jump-pad building blocks (arch_pad_window.c, arch_pad_emit.c):
 * windows on hand-written bytes (expected capstone text) and on real -O2 code checked
 * against an independent model built from `objdump -d`; relocated windows decoded
 * again with capstone; real functions of this executable patched in place with
 * "jmp pad" and run for many inputs against hand-computed results; every register and
 * the flags checked across a pad; ns per pass printed. */
#define _GNU_SOURCE
#include "arch/arch.h"
#include "arch_pad_funcs.h"
#include "base/mem.h"
#include "base/test.h"

#include <capstone/capstone.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define A 0x401000ull

// ---- helpers --------------------------------------------------------------------

// Fake memory for hand-written functions: [A, A+0x2000).
static uint8_t fake_mem[0x2000];

static int fake_read(void *ctx, void *dst, uint64_t addr, size_t len)
{
	(void)ctx;
	if (addr < A || addr + len > A + sizeof(fake_mem))
		return -1;
	memcpy(dst, fake_mem + (addr - A), len);
	return 0;
}

static int self_read(void *ctx, void *dst, uint64_t addr, size_t len)
{
	(void)ctx;
	return ns_mem_read(dst, addr, len);
}

static struct ns_arch_pad_window window_at(const uint8_t *code, size_t len, uint64_t site,
                                           bool with_reader)
{
	struct ns_arch_pad_func fn;
	memset(&fn, 0, sizeof(fn));
	memcpy(fake_mem, code, len);
	fn.range.lo = A;
	fn.range.hi = A + len;
	fn.range.bytes = fake_mem;
	if (with_reader)
		fn.read_mem = fake_read;
	struct ns_arch_pad_window w;
	memset(&w, 0, sizeof(w));
	NS_CHECK_OK(ns_arch_pad_window(&fn, site, &w));
	return w;
}

// The instructions of @code as capstone prints them, joined by "; "; the 8-byte
// address after "jmp qword ptr [rip]" is printed as ".quad 0x...".
static void cs_text(const uint8_t *code, size_t len, uint64_t addr, char *out, size_t cap)
{
	csh h;
	cs_insn *ci;
	out[0] = 0;
	if (cs_open(CS_ARCH_X86, CS_MODE_64, &h) != CS_ERR_OK)
		return;
	size_t at = 0, off = 0;
	while (off < len && cs_disasm(h, code + off, len - off, addr + off, 1, &ci) == 1) {
		at += (size_t)snprintf(out + at, cap > at ? cap - at : 0, "%s%s%s%s",
		                       off ? "; " : "", ci->mnemonic, ci->op_str[0] ? " " : "",
		                       ci->op_str);
		off += ci->size;
		bool quad = strcmp(ci->mnemonic, "jmp") == 0 &&
		            strcmp(ci->op_str, "qword ptr [rip]") == 0 && off + 8 <= len;
		cs_free(ci, 1);
		if (quad) {
			uint64_t q;
			memcpy(&q, code + off, 8);
			at += (size_t)snprintf(out + at, cap > at ? cap - at : 0, "; .quad %#llx",
			                       (unsigned long long)q);
			off += 8;
		}
	}
	cs_close(&h);
}

// ---- windows on hand-written bytes ------------------------------------------------

struct wcase {
	const char *name;
	uint8_t bytes[32];
	size_t len;
	const char *text; // capstone's view of the bytes at A
	uint64_t site_off;
	bool eligible;
	uint8_t wlen;
	const char *reason; // substring of the reason when ineligible
};

static const struct wcase wcases[] = {
        {"prologue",
         {0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0xc9, 0xc3},
         10,
         "push rbp; mov rbp, rsp; sub rsp, 0x10; leave; ret",
         0,
         true,
         8,
         NULL},
        {"ends_with_ret",
         {0x48, 0x89, 0xf8, 0x48, 0x01, 0xf0, 0xc3},
         7,
         "mov rax, rdi; add rax, rsi; ret",
         3, // add (3) + ret (1): the ret ends a 4-byte window
         false,
         0,
         "ret or indirect jump"},
        {"ret_not_last",
         {0x48, 0x89, 0xf8, 0xc3, 0x0f, 0x1f, 0x40, 0x00},
         8,
         "mov rax, rdi; ret; nop dword ptr [rax]",
         0,
         false,
         0,
         "ret or indirect jump"},
        {"too_short",
         {0x31, 0xc0, 0xff, 0xc0},
         4,
         "xor eax, eax; inc eax",
         0,
         false,
         0,
         "function too short"},
        {"syscall",
         {0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05, 0xc3},
         8,
         "mov eax, 0x3c; syscall; ret",
         5,
         false,
         0,
         "cannot run out of line"},
        {"loop_insn",
         {0x31, 0xc0, 0xe2, 0xfe, 0x90, 0x90, 0x90, 0xc3},
         8,
         "xor eax, eax; loop 0x401002; nop; nop; nop; ret",
         0,
         false,
         0,
         "cannot run out of line"},
        // xor eax,eax; L: inc eax; cmp eax,10; jne L; ret
        {"target_inside",
         {0x31, 0xc0, 0xff, 0xc0, 0x83, 0xf8, 0x0a, 0x75, 0xf9, 0xc3},
         10,
         "xor eax, eax; inc eax; cmp eax, 0xa; jne 0x401002; ret",
         0,
         false,
         0,
         "branch target lies inside"},
        {"target_at_site",
         {0x31, 0xc0, 0xff, 0xc0, 0x83, 0xf8, 0x0a, 0x75, 0xf9, 0xc3},
         10,
         "xor eax, eax; inc eax; cmp eax, 0xa; jne 0x401002; ret",
         2,
         true,
         5,
         NULL},
        // jcc in the window whose target is the window's end: fine.
        {"jcc_in_window",
         {0x48, 0x85, 0xff, 0x74, 0x03, 0x48, 0xff, 0xc7, 0x48, 0x89, 0xf8, 0xc3},
         12,
         "test rdi, rdi; je 0x401008; inc rdi; mov rax, rdi; ret",
         0,
         true,
         5,
         NULL},
        {"not_boundary",
         {0x48, 0x89, 0xf8, 0x48, 0x01, 0xf0, 0x48, 0x01, 0xf0, 0xc3},
         10,
         "mov rax, rdi; add rax, rsi; add rax, rsi; ret",
         1,
         false,
         0,
         "not an instruction boundary"},
        // Unresolvable "jmp rax" elsewhere in the function.
        {"indirect_jmp",
         {0x48, 0x89, 0xf8, 0x48, 0x01, 0xf0, 0x48, 0x01, 0xf0, 0xff, 0xe0},
         11,
         "mov rax, rdi; add rax, rsi; add rax, rsi; jmp rax",
         0,
         false,
         0,
         "indirect jump in function: targets unknown"},
        {"call_window",
         {0x31, 0xf6, 0xe8, 0x10, 0, 0, 0, 0x48, 0xff, 0xc0, 0xc3},
         11,
         "xor esi, esi; call 0x401017; inc rax; ret",
         0,
         true,
         7,
         NULL},
        {"indirect_call",
         {0xff, 0xd0, 0x48, 0x89, 0xc7, 0xc3},
         6,
         "call rax; mov rdi, rax; ret",
         0,
         false,
         0,
         "indirect call"},
};

NS_TEST(test_arch_pad_test__window_hand_written)
{
	for (size_t i = 0; i < sizeof(wcases) / sizeof(wcases[0]); i++) {
		const struct wcase *c = &wcases[i];
		char text[256];
		cs_text(c->bytes, c->len, A, text, sizeof(text));
		if (strcmp(text, c->text) != 0)
			ns_test_fail(__FILE__, __LINE__, "%s: bytes are '%s', expected '%s'",
			             c->name, text, c->text);
		struct ns_arch_pad_window w = window_at(c->bytes, c->len, A + c->site_off, true);
		bool want = c->eligible;
		uint8_t wlen = c->wlen;
		if (w.eligible != want || (want && w.len != wlen) ||
		    (!want && c->reason && (!w.reason || !strstr(w.reason, c->reason))))
			ns_test_fail(__FILE__, __LINE__,
			             "%s: eligible %d len %u reason '%s' (%s); expected %d len %u "
			             "'%s'",
			             c->name, w.eligible, w.len, w.reason ? w.reason : "", w.detail,
			             want, wlen, c->reason ? c->reason : "");
	}
}

NS_TEST(test_arch_pad_test__window_site_outside)
{
	uint8_t code[] = {0x90, 0xc3};
	struct ns_arch_pad_func fn;
	memset(&fn, 0, sizeof(fn));
	fn.range.lo = A;
	fn.range.hi = A + 2;
	fn.range.bytes = code;
	struct ns_arch_pad_window w;
	struct ns_err *err = ns_arch_pad_window(&fn, A + 2, &w);
	NS_CHECK(err && err->code == NS_ERR_INVALID && strstr(err->msg, "outside"));
	ns_err_destroy(err);
}

// A PIC switch written by hand:
//   A+0x00 cmp edi, 3; ja A+0x30; lea rdx, [rip+T]; movsxd rax, [rdx+rdi*4];
//          add rax, rdx; jmp rax; ... cases at A+0x20, A+0x23 (inside a window
//          from A+0x1e), A+0x28, A+0x2c; table T at A+0x1000.
NS_TEST(test_arch_pad_test__window_jump_table)
{
	uint8_t f[0x40];
	memset(f, 0x90, sizeof(f));
	static const uint8_t head[] = {
	        0x83, 0xff, 0x03,                         // cmp edi, 3
	        0x77, 0x2b,                               // ja A+0x30
	        0x48, 0x8d, 0x15, 0xf4, 0x0f, 0x00, 0x00, // lea rdx, [rip+0xff4] = A+0x1000
	        0x48, 0x63, 0x04, 0xba,                   // movsxd rax, dword ptr [rdx + rdi*4]
	        0x48, 0x01, 0xd0,                         // add rax, rdx
	        0xff, 0xe0,                               // jmp rax
	};
	memcpy(f, head, sizeof(head));
	f[0x2f] = 0xc3;
	f[0x3f] = 0xc3;
	char text[256];
	cs_text(f, sizeof(head), A, text, sizeof(text));
	NS_CHECK_STR(text, "cmp edi, 3; ja 0x401030; lea rdx, [rip + 0xff4]; movsxd rax, dword "
	                   "ptr [rdx + rdi*4]; add rax, rdx; jmp rax");
	int32_t entries[5] = {0x20 - 0x1000, 0x23 - 0x1000, 0x28 - 0x1000, 0x2c - 0x1000,
	                      0x7fff0000}; // the fifth is past the bound (cmp edi, 3)
	memset(fake_mem, 0, sizeof(fake_mem));
	memcpy(fake_mem + 0x1000, entries, sizeof(entries));
	struct ns_arch_pad_func fn;
	memset(&fn, 0, sizeof(fn));
	memcpy(fake_mem, f, sizeof(f));
	fn.range.lo = A;
	fn.range.hi = A + sizeof(f);
	fn.range.bytes = fake_mem;
	fn.read_mem = fake_read;
	struct ns_arch_pad_window w;
	// Site A+0x1e: nops up to A+0x23 strictly inside (A+0x1e, A+0x23)? 0x23 = site+5:
	// not inside. Site A+0x1f: window [0x1f, 0x24) holds 0x20 and 0x23.
	NS_CHECK_OK(ns_arch_pad_window(&fn, A + 0x1e, &w));
	NS_CHECK(!w.eligible);
	NS_CHECK_INT(w.njump_tables, 1);
	NS_CHECK_INT(w.ntargets, 5); // ja + 4 entries
	NS_CHECK(w.detail[0] && strstr(w.detail, "0x401020"));
	NS_CHECK_OK(ns_arch_pad_window(&fn, A + 0x24, &w)); // [0x24, 0x29) holds 0x28
	NS_CHECK(!w.eligible);
	NS_CHECK_OK(ns_arch_pad_window(&fn, A + 0x30, &w)); // [0x30, 0x35): no target
	NS_CHECK(w.eligible);
	NS_CHECK_INT(w.len, 5);
	// Without a reader the table cannot be read.
	fn.read_mem = NULL;
	NS_CHECK_OK(ns_arch_pad_window(&fn, A + 0x30, &w));
	NS_CHECK(!w.eligible);
	NS_CHECK_STR(w.reason, "indirect jump in function: targets unknown");
	NS_CHECK(strstr(w.detail, "jmp rax at 0x401013") != NULL);
}

NS_TEST(test_arch_pad_test__window_cold_part_and_extra_targets)
{
	// Main part: 10 nops + ret; a .cold part elsewhere jumps back to A+3.
	uint8_t f[11];
	memset(f, 0x90, 10);
	f[10] = 0xc3;
	uint8_t cold[5] = {0xe9, 0, 0, 0, 0};
	uint64_t cold_at = A + 0x100;
	int32_t rel = (int32_t)((A + 3) - (cold_at + 5));
	memcpy(cold + 1, &rel, 4);
	struct ns_arch_code_range more = {cold_at, cold_at + 5, cold};
	struct ns_arch_pad_func fn;
	memset(&fn, 0, sizeof(fn));
	fn.range.lo = A;
	fn.range.hi = A + sizeof(f);
	fn.range.bytes = f;
	struct ns_arch_pad_window w;
	NS_CHECK_OK(ns_arch_pad_window(&fn, A, &w));
	NS_CHECK(w.eligible);
	fn.more = &more;
	fn.nmore = 1;
	NS_CHECK_OK(ns_arch_pad_window(&fn, A, &w));
	NS_CHECK(!w.eligible);
	NS_CHECK(strstr(w.detail, "0x401003 (from 0x401100)") != NULL);
	NS_CHECK_OK(ns_arch_pad_window(&fn, A + 3, &w));
	NS_CHECK(w.eligible);
	uint64_t pad_land = A + 5;
	fn.extra_targets = &pad_land;
	fn.nextra = 1;
	NS_CHECK_OK(ns_arch_pad_window(&fn, A + 3, &w));
	NS_CHECK(!w.eligible);
}

// ---- relocation, decoded again with capstone --------------------------------------

NS_TEST(test_arch_pad_test__relocate_jcc_and_call)
{
	// test rdi,rdi; je A+0x20 (rel8); xor esi,esi; call A+0x100
	static const uint8_t code[] = {0x48, 0x85, 0xff, 0x74, 0x1b, 0x31,
	                               0xf6, 0xe8, 0xf4, 0x00, 0x00, 0x00};
	char text[512];
	cs_text(code, sizeof(code), A, text, sizeof(text));
	NS_CHECK_STR(text, "test rdi, rdi; je 0x401020; xor esi, esi; call 0x401100");
	uint8_t out[160];
	struct ns_arch_reloc r;
	uint64_t dst = A + 0x10000000;
	NS_CHECK_OK(ns_arch_relocate_block(code, A, sizeof(code), dst, out, sizeof(out), &r));
	cs_text(out, r.len, dst, text, sizeof(text));
	// The return address pushed is A+12 (after the original call): lo 0x40100c, hi 0.
	NS_CHECK_STR(text, "test rdi, rdi; je 0x401020; xor esi, esi; lea rsp, [rsp - 8]; "
	                   "mov dword ptr [rsp], 0x40100c; mov dword ptr [rsp + 4], 0; "
	                   "jmp 0x401100");
	NS_CHECK_INT(r.ninsns, 4);
	NS_CHECK_INT(r.orig_off[1], 3);
	NS_CHECK_INT(r.new_off[1], 3);
	NS_CHECK_INT(r.orig_off[2], 5);
	NS_CHECK_INT(r.new_off[2], 9); // je became 6 bytes
	NS_CHECK_INT(r.orig_off[3], 7);
	NS_CHECK_INT(r.new_off[3], 11);
	NS_CHECK_INT(r.len, 11 + 5 + 7 + 8 + 5); // no jmp back after the call

	// Far away: absolute forms.
	uint64_t far = 0x7f0000001000ull;
	NS_CHECK_OK(ns_arch_relocate_block(code, A, sizeof(code), far, out, sizeof(out), &r));
	cs_text(out, r.len, far, text, sizeof(text));
	// jne skips the 14-byte absolute jmp: 0x7f0000001003 + 2 + 14.
	NS_CHECK_STR(text, "test rdi, rdi; jne 0x7f0000001013; jmp qword ptr [rip]; "
	                   ".quad 0x401020; xor esi, esi; lea rsp, [rsp - 8]; "
	                   "mov dword ptr [rsp], 0x40100c; mov dword ptr [rsp + 4], 0; "
	                   "jmp qword ptr [rip]; .quad 0x401100");
}

NS_TEST(test_arch_pad_test__relocate_riprel_and_back)
{
	// mov rax, [rip+0x100]; add rax, 1 ; then back to A+11
	static const uint8_t code[] = {0x48, 0x8b, 0x05, 0x00, 0x01, 0, 0, 0x48, 0x83, 0xc0, 0x01};
	uint8_t out[160];
	struct ns_arch_reloc r;
	uint64_t dst = A - 0x20000000 + 3;
	NS_CHECK_OK(ns_arch_relocate_block(code, A, sizeof(code), dst, out, sizeof(out), &r));
	char text[256];
	cs_text(out, r.len, dst, text, sizeof(text));
	char want[256];
	snprintf(want, sizeof(want), "mov rax, qword ptr [rip + 0x%llx]; add rax, 1; jmp 0x40100b",
	         (unsigned long long)(A + 7 + 0x100 - (dst + 7)));
	NS_CHECK_STR(text, want);
	// Out of range of a far copy.
	struct ns_err *err = ns_arch_relocate_block(code, A, sizeof(code), 0x7f0000001000ull, out,
	                                            sizeof(out), &r);
	NS_CHECK(err && err->code == NS_ERR_UNSUPPORTED && strstr(err->msg, "out of range"));
	ns_err_destroy(err);
	// Unsupported instruction.
	static const uint8_t sc[] = {0x0f, 0x05, 0x90, 0x90, 0x90};
	err = ns_arch_relocate_block(sc, A, sizeof(sc), dst, out, sizeof(out), &r);
	NS_CHECK(err && err->code == NS_ERR_UNSUPPORTED && strstr(err->msg, "syscall"));
	ns_err_destroy(err);
	// A jcc back into the middle of the window goes to the relocated copy.
	static const uint8_t lp[] = {0x90, 0xff, 0xc8, 0x75, 0xfc}; // nop; L: dec eax; jne L
	NS_CHECK_OK(ns_arch_relocate_block(lp, A, sizeof(lp), dst, out, sizeof(out), &r));
	cs_text(out, r.len, dst, text, sizeof(text));
	snprintf(want, sizeof(want), "nop; dec eax; jne 0x%llx; jmp 0x401005",
	         (unsigned long long)(dst + 1));
	NS_CHECK_STR(text, want);
}

// ---- real code: symbols, objdump model, patching -----------------------------------

struct sym {
	const char *name;
	void *addr;
	uint64_t lo, hi; // runtime
	uint64_t link;   // nm value
};

static struct sym syms[] = {
        {"pf_riprel", (void *)pf_riprel, 0, 0, 0},
        {"pf_call", (void *)pf_call, 0, 0, 0},
        {"pf_loop", (void *)pf_loop, 0, 0, 0},
        {"pf_switch", (void *)pf_switch, 0, 0, 0},
        {"pf_short", (void *)pf_short, 0, 0, 0},
        {"pa_jcc", (void *)pa_jcc, 0, 0, 0},
        {"pa_call", (void *)pa_call, 0, 0, 0},
        {"pa_call2", (void *)pa_call2, 0, 0, 0},
        {"pa_loop", (void *)pa_loop, 0, 0, 0},
        {"pa_probe_target", (void *)pa_probe_target, 0, 0, 0},
        {"pa_bare", (void *)pa_bare, 0, 0, 0},
};
enum { NSYMS = sizeof(syms) / sizeof(syms[0]) };
static char exe_path[4096];
static bool syms_ok;

static struct sym *sym_named(const char *name)
{
	for (int i = 0; i < NSYMS; i++)
		if (strcmp(syms[i].name, name) == 0)
			return &syms[i];
	return NULL;
}

// Function bounds from the ELF symbol table (nm -S), as the agent would get them.
static bool load_syms(void)
{
	if (syms_ok)
		return true;
	ssize_t n = readlink("/proc/self/exe", exe_path, sizeof(exe_path) - 1);
	if (n <= 0)
		return false;
	exe_path[n] = 0;
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "nm -S --defined-only '%s'", exe_path);
	char *out = ns_test_capture(cmd);
	if (!out)
		return false;
	int found = 0;
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		unsigned long long v, sz;
		char type, name[256];
		if (sscanf(line, "%llx %llx %c %255s", &v, &sz, &type, name) != 4)
			continue;
		struct sym *s = sym_named(name);
		if (!s)
			continue;
		s->link = v;
		s->lo = (uint64_t)(uintptr_t)s->addr;
		s->hi = s->lo + sz;
		found++;
	}
	free(out);
	syms_ok = found == NSYMS;
	return syms_ok;
}

static struct ns_arch_pad_func func_of(const struct sym *s)
{
	struct ns_arch_pad_func fn;
	memset(&fn, 0, sizeof(fn));
	fn.range.lo = s->lo;
	fn.range.hi = s->hi;
	fn.range.bytes = (const uint8_t *)s->addr;
	fn.read_mem = self_read;
	return fn;
}

// The independent model: instructions and targets as objdump sees them.
struct model {
	size_t n;
	uint64_t addr[256];
	char mn[256][16];
	bool indirect[256]; // jmp through a register or memory
	size_t ntargets;
	uint64_t targets[512];
	bool unresolved_indirect;
};

static void build_model(const struct sym *s, struct model *m)
{
	memset(m, 0, sizeof(*m));
	uint64_t bias = s->lo - s->link;
	char cmd[4400];
	snprintf(cmd, sizeof(cmd), "objdump -d -M intel --no-show-raw-insn --disassemble=%s '%s'",
	         s->name, exe_path);
	char *out = ns_test_capture(cmd);
	NS_CHECK(out != NULL);
	if (!out)
		return;
	uint64_t table = 0;
	long bound = -1;
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		unsigned long long a;
		char rest[256];
		if (sscanf(line, " %llx:\t%255[^\n]", &a, rest) != 2)
			continue;
		uint64_t ra = a + bias;
		if (ra < s->lo || ra >= s->hi || m->n >= 256)
			continue;
		char mn[16] = "", ops[200] = "";
		sscanf(rest, "%15s %199[^\n]", mn, ops);
		if (strcmp(mn, "bnd") == 0 || strcmp(mn, "notrack") == 0)
			sscanf(rest, "%*s %15s %199[^\n]", mn, ops);
		m->addr[m->n] = ra;
		snprintf(m->mn[m->n], 16, "%s", mn);
		m->n++;
		unsigned long long t;
		char lt;
		bool branch =
		        mn[0] == 'j' || strcmp(mn, "call") == 0 || strncmp(mn, "loop", 4) == 0;
		if (branch && sscanf(ops, "%llx <%c", &t, &lt) == 2)
			m->targets[m->ntargets++] = t + bias;
		else if (strcmp(mn, "jmp") == 0) {
			m->indirect[m->n - 1] = true;
			m->unresolved_indirect = table == 0; // table read below
		}
		if (strcmp(mn, "lea") == 0 && strstr(ops, "[rip+"))
			if (sscanf(strstr(ops, "#") ? strstr(ops, "#") : "", "# %llx", &t) == 1)
				table = t + bias;
		unsigned long long imm;
		if (strcmp(mn, "cmp") == 0 && strstr(ops, ",0x") &&
		    sscanf(strstr(ops, ",0x") + 1, "%llx", &imm) == 1)
			bound = (long)imm;
	}
	free(out);
	if (table && bound >= 0) {
		for (long k = 0; k <= bound; k++) {
			int32_t e;
			memcpy(&e, (const void *)(uintptr_t)(table + 4 * (uint64_t)k), 4);
			uint64_t t = table + (uint64_t)(int64_t)e;
			if (t >= s->lo && t < s->hi && m->ntargets < 512)
				m->targets[m->ntargets++] = t;
		}
	}
}

// Expected window from the model: 0 if ineligible.
static size_t model_window(const struct sym *s, const struct model *m, size_t i)
{
	uint64_t site = m->addr[i];
	size_t len = 0;
	for (size_t j = i; len < 5; j++) {
		if (j >= m->n)
			return 0; // function too short
		const char *mn = m->mn[j];
		if (strcmp(mn, "syscall") == 0 || strncmp(mn, "int", 3) == 0 ||
		    strncmp(mn, "loop", 4) == 0 || strcmp(mn, "jrcxz") == 0 ||
		    strcmp(mn, "ud2") == 0)
			return 0;
		uint64_t next = j + 1 < m->n ? m->addr[j + 1] : s->hi;
		len = (size_t)(next - site);
		bool ends = strcmp(mn, "ret") == 0 || strcmp(mn, "call") == 0 || m->indirect[j];
		if (ends && len < 5)
			return 0;
	}
	for (size_t k = 0; k < m->ntargets; k++)
		if (m->targets[k] > site && m->targets[k] < site + len)
			return 0;
	if (m->unresolved_indirect)
		return 0;
	return len;
}

NS_TEST(test_arch_pad_test__window_matches_objdump)
{
	if (!load_syms()) {
		ns_test_fail(__FILE__, __LINE__, "cannot read symbols with nm");
		return;
	}
	static struct model m;
	unsigned checked = 0, eligible = 0, tables = 0, table_hits = 0;
	for (int f = 0; f < NSYMS; f++) {
		const struct sym *s = &syms[f];
		build_model(s, &m);
		NS_CHECK(m.n > 0);
		struct ns_arch_pad_func fn = func_of(s);
		for (size_t i = 0; i < m.n; i++) {
			struct ns_arch_pad_window w;
			NS_CHECK_OK(ns_arch_pad_window(&fn, m.addr[i], &w));
			size_t want = model_window(s, &m, i);
			checked++;
			if (w.eligible)
				eligible++;
			if (w.eligible != (want != 0) || (want && w.len != want))
				ns_test_fail(__FILE__, __LINE__,
				             "%s+%#llx (%s): eligible %d len %u (%s %s); objdump "
				             "model says len %zu",
				             s->name, (unsigned long long)(m.addr[i] - s->lo),
				             m.mn[i], w.eligible, w.len, w.reason ? w.reason : "",
				             w.detail, want);
			if (i == 0)
				tables += w.njump_tables;
			// pf_switch's only direct branch goes to pf_switch.cold: a target inside
			// one of its windows comes from the jump table.
			if (strcmp(s->name, "pf_switch") == 0 && !w.eligible &&
			    strcmp(w.reason, "a branch target lies inside the window") == 0)
				table_hits++;
		}
	}
	printf("# %u sites checked against objdump, %u eligible, %u jump table(s), %u "
	       "switch sites refused for a case label inside\n",
	       checked, eligible, tables, table_hits);
	NS_CHECK(tables >= 1); // pf_switch
	NS_CHECK(table_hits >= 1);
	// The loop at pa_loop_jle: its window would hold the loop head.
	struct sym *pl = sym_named("pa_loop");
	struct ns_arch_pad_func fn = func_of(pl);
	struct ns_arch_pad_window w;
	NS_CHECK_OK(ns_arch_pad_window(&fn, (uint64_t)(uintptr_t)pa_loop_jle, &w));
	NS_CHECK(!w.eligible);
	NS_CHECK_STR(w.reason, "a branch target lies inside the window");
	NS_CHECK_OK(ns_arch_pad_window(&fn, (uint64_t)(uintptr_t)pa_loop_body, &w));
	NS_CHECK(w.eligible);
	// pf_short is "mov rax, rdi; ret": too short.
	struct sym *ps = sym_named("pf_short");
	fn = func_of(ps);
	NS_CHECK_OK(ns_arch_pad_window(&fn, ps->lo, &w));
	NS_CHECK(!w.eligible);
}

// Executable pages within +-2 GiB of @near.
static uint8_t *map_near(uint64_t near, size_t len)
{
	for (uint64_t d = 1ull << 24; d < (1ull << 30); d += 1ull << 24) {
		for (int sgn = -1; sgn <= 1; sgn += 2) {
			uint64_t hint = (near & ~0xfffull) + (uint64_t)((int64_t)sgn * (int64_t)d);
			void *p = mmap((void *)(uintptr_t)hint, len,
			               PROT_READ | PROT_WRITE | PROT_EXEC,
			               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			if (p != MAP_FAILED)
				return p;
		}
	}
	return NULL;
}

static sigjmp_buf guard_env;
static volatile sig_atomic_t guard_on;

static void guard_handler(int sig)
{
	if (guard_on)
		siglongjmp(guard_env, sig);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void guard_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = guard_handler;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGILL, &sa, NULL);
	sigaction(SIGTRAP, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
}

static bool set_prot(uint64_t a, size_t len, int prot)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t lo = a & ~(pg - 1), hi = (a + len + pg - 1) & ~(pg - 1);
	return mprotect((void *)(uintptr_t)lo, hi - lo, prot) == 0;
}

// The jump: "jmp pad" over the window's first 5 bytes, int3 over the rest.
static bool patch(uint64_t site, size_t wlen, uint64_t pad, uint8_t *saved)
{
	if (!set_prot(site, wlen, PROT_READ | PROT_WRITE | PROT_EXEC))
		return false;
	uint8_t *p = (uint8_t *)(uintptr_t)site;
	memcpy(saved, p, wlen);
	uint8_t j[NS_ARCH_PAD_MAX_WINDOW];
	memset(j, 0xcc, sizeof(j));
	j[0] = 0xe9;
	int32_t rel = (int32_t)(int64_t)(pad - (site + 5));
	memcpy(j + 1, &rel, 4);
	memcpy(p, j, wlen);
	__builtin___clear_cache((char *)p, (char *)p + wlen);
	return true;
}

static void unpatch(uint64_t site, size_t wlen, const uint8_t *saved)
{
	memcpy((void *)(uintptr_t)site, saved, wlen);
	__builtin___clear_cache((char *)(uintptr_t)site, (char *)(uintptr_t)site + wlen);
	set_prot(site, wlen, PROT_READ | PROT_EXEC);
}

static uint8_t *pad_page;

static uint8_t *pads(void)
{
	if (!pad_page)
		pad_page = map_near((uint64_t)(uintptr_t)pf_riprel, 1 << 16);
	return pad_page;
}

/* The guard the next build_pad puts in its pad (none if len is 0). */
static const uint8_t *next_guard;
static size_t next_guard_len;
static uint32_t next_guard_clobber;

// Build a pad for @site (window from ns_arch_pad_window) at pads() + @slot * 1024.
static bool build_pad(const struct sym *s, uint64_t site,
                      void (*collector)(void *, const uint64_t *), void *ctx,
                      enum ns_arch_pad_flags_mode mode, unsigned slot, struct ns_arch_pad_window *w,
                      struct ns_arch_pad *pad, uint64_t *pad_addr)
{
	struct ns_arch_pad_func fn = func_of(s);
	struct ns_err *err = ns_arch_pad_window(&fn, site, w);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "window: %s", err->msg);
		ns_err_destroy(err);
		return false;
	}
	if (!w->eligible)
		return false;
	uint8_t *dst = pads() + slot * 1024;
	struct ns_arch_pad_spec spec = {
	        .site = site,
	        .code = (const uint8_t *)(uintptr_t)site,
	        .window_len = w->len,
	        .pad_addr = (uint64_t)(uintptr_t)dst,
	        .collector = (uint64_t)(uintptr_t)collector,
	        .ctx = (uint64_t)(uintptr_t)ctx,
	        .flags = mode,
	        .guard = next_guard,
	        .guard_len = next_guard_len,
	        .guard_clobber = next_guard_clobber,
	};
	err = ns_arch_pad_emit(&spec, dst, 1024, pad);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "%s+%#llx: %s", s->name,
		             (unsigned long long)(site - s->lo), err->msg);
		ns_err_destroy(err);
		return false;
	}
	__builtin___clear_cache((char *)dst, (char *)dst + pad->len);
	*pad_addr = spec.pad_addr;
	return true;
}

// Reference results, computed here by hand from each function's definition.
static long ref_loop(long n)
{
	long s = 0;
	for (long i = 0; i < n; i++)
		s += (i * i) ^ (s >> 3);
	return s;
}

static long ref_switch(long k, long v)
{
	static const int kinds = 8;
	if (k < 0 || k >= kinds)
		return -1;
	long r[8] = {v + 1, v * 3, v - 7, v ^ 0x1234, v << 2, v / 3, v % 5, ~v};
	return r[k];
}

// Run @s for its inputs; 0 if every result matches, else the number of mismatches.
// *@calls_out counts the calls made.
static int run_checks(const struct sym *s, long *calls_out, long *last_arg)
{
	int bad = 0;
	long calls = 0;
	for (long x = -20; x <= 40; x++) {
		long got, want;
		if (strcmp(s->name, "pf_riprel") == 0) {
			got = pf_riprel(x), want = x * 7 + 3;
		} else if (strcmp(s->name, "pf_call") == 0) {
			got = pf_call(x), want = (x ^ 0x55) * 5 + 1;
		} else if (strcmp(s->name, "pf_loop") == 0) {
			got = pf_loop(x), want = ref_loop(x);
		} else if (strcmp(s->name, "pf_switch") == 0) {
			long k = (x % 11) - 1;
			got = pf_switch(k, x * 37), want = ref_switch(k, x * 37);
			*last_arg = k;
			calls++;
			if (got != want)
				bad++;
			continue;
		} else if (strcmp(s->name, "pf_short") == 0) {
			got = pf_short(x), want = x;
		} else if (strcmp(s->name, "pa_jcc") == 0) {
			got = pa_jcc(x), want = x > 0 ? x + 100 : -1;
		} else if (strcmp(s->name, "pa_call") == 0) {
			got = pa_call(x), want = 3 * x + 1;
		} else if (strcmp(s->name, "pa_call2") == 0) {
			got = pa_call2(x), want = 3 * x + 2;
		} else if (strcmp(s->name, "pa_loop") == 0) {
			got = pa_loop(x), want = x > 0 ? x * (x + 1) / 2 : 0;
		} else if (strcmp(s->name, "pa_bare") == 0) {
			got = pa_bare(x), want = x + 1;
		} else {
			return 0;
		}
		*last_arg = x;
		calls++;
		if (got != want)
			bad++;
	}
	*calls_out = calls;
	return bad;
}

// Every eligible site of every function: patch, run all inputs, compare, unpatch.
NS_TEST(test_arch_pad_test__every_eligible_site_runs)
{
	if (!load_syms() || !pads()) {
		ns_test_fail(__FILE__, __LINE__, "no symbols or no pad page near the text");
		return;
	}
	guard_install();
	static struct model m;
	unsigned ran = 0;
	for (int mode = NS_ARCH_PAD_FLAGS_LAHF; mode <= NS_ARCH_PAD_FLAGS_PUSHF; mode++) {
		for (int f = 0; f < NSYMS; f++) {
			struct sym *s = &syms[f];
			if (strcmp(s->name, "pa_probe_target") == 0)
				continue;
			build_model(s, &m);
			for (size_t i = 0; i < m.n; i++) {
				uint64_t site = m.addr[i];
				struct pa_counter ctr;
				memset(&ctr, 0, sizeof(ctr));
				struct ns_arch_pad_window w;
				struct ns_arch_pad pad;
				uint64_t pad_addr;
				if (!build_pad(s, site, pa_collect_count, &ctr,
				               (enum ns_arch_pad_flags_mode)mode, 0, &w, &pad,
				               &pad_addr))
					continue;
				uint8_t saved[NS_ARCH_PAD_MAX_WINDOW];
				if (!patch(site, w.len, pad_addr, saved)) {
					ns_test_fail(__FILE__, __LINE__, "mprotect failed");
					return;
				}
				static long calls, last;
				static int bad;
				calls = last = bad = 0;
				int sig;
				guard_on = 1;
				if ((sig = sigsetjmp(guard_env, 1)) == 0)
					bad = run_checks(s, &calls, &last);
				guard_on = 0;
				unpatch(site, w.len, saved);
				ran++;
				const char *what = s->name;
				unsigned long long off = (unsigned long long)(site - s->lo);
				if (sig)
					ns_test_fail(__FILE__, __LINE__,
					             "%s+%#llx mode %d: signal %d", what, off, mode,
					             sig);
				else if (bad)
					ns_test_fail(__FILE__, __LINE__,
					             "%s+%#llx mode %d: %d wrong results", what,
					             off, mode, bad);
				if (sig || bad)
					continue;
				if (ctr.hits > 0) {
					NS_CHECK(ctr.last[NS_ARCH_PAD_REG_RIP] == site);
					NS_CHECK_INT(ctr.rsp_mod16, 0);
				}
				if (site == s->lo) {
					// Entry: one hit per call, rdi is the first argument.
					if (ctr.hits != (uint64_t)calls ||
					    ctr.last[5] != (uint64_t)last)
						ns_test_fail(__FILE__, __LINE__,
						             "%s entry: %llu hits for %ld calls, "
						             "rdi %#llx "
						             "expected %#lx",
						             what, (unsigned long long)ctr.hits,
						             calls, (unsigned long long)ctr.last[5],
						             last);
				}
				if (site == (uint64_t)(uintptr_t)pa_loop_body ||
				    site == (uint64_t)(uintptr_t)pa_loop_dec) {
					// Once per iteration: sum of x for x in 1..40.
					NS_CHECK_INT(ctr.hits, 40 * 41 / 2);
				}
			}
		}
	}
	printf("# %u patched sites ran correctly (both flag modes)\n", ran);
	NS_CHECK(ran >= 20);
}

// pa_probe_target run without any pad, from flags @fl: the registers it dumps are
// the reference every pad's run is compared with.
static void probe_direct(uint64_t fl, uint64_t direct[18])
{
	memset(pa_dump, 0, sizeof(pa_dump));
	pa_probe_run((void *)pa_probe_target, fl);
	memcpy(direct, pa_dump, 18 * sizeof(uint64_t));
}

// Every register and the flags arrive unchanged after the pad; the collector sees them.
NS_TEST(test_arch_pad_test__registers_and_flags_preserved)
{
	if (!load_syms() || !pads()) {
		ns_test_fail(__FILE__, __LINE__, "no symbols or no pad page near the text");
		return;
	}
	struct sym *s = sym_named("pa_probe_target");
	static const uint64_t flagsets[] = {0x202,        0x202 | 0x8d5, 0x202 | 0x801,
	                                    0x202 | 0x40, 0x202 | 0x84,  0x202 | 0x10};
	for (int mode = NS_ARCH_PAD_FLAGS_LAHF; mode <= NS_ARCH_PAD_FLAGS_PUSHF; mode++) {
		for (size_t fi = 0; fi < sizeof(flagsets) / sizeof(flagsets[0]) + 1; fi++) {
			// The last round sets DF: only the pushfq variant promises it.
			uint64_t fl = fi < sizeof(flagsets) / sizeof(flagsets[0])
			                      ? flagsets[fi]
			                      : 0x202 | 0x400 | 0x8d5;
			if ((fl & 0x400) && mode != NS_ARCH_PAD_FLAGS_PUSHF)
				continue;
			uint64_t direct[18];
			probe_direct(fl, direct);
			struct pa_counter ctr;
			memset(&ctr, 0, sizeof(ctr));
			struct ns_arch_pad_window w;
			struct ns_arch_pad pad;
			uint64_t pad_addr;
			if (!build_pad(s, s->lo, pa_collect_count, &ctr,
			               (enum ns_arch_pad_flags_mode)mode, 1, &w, &pad, &pad_addr)) {
				ns_test_fail(__FILE__, __LINE__, "no pad for pa_probe_target: %s",
				             w.reason ? w.reason : "");
				return;
			}
			NS_CHECK_INT(w.len, 7);
			memset(pa_dump, 0, sizeof(pa_dump));
			pa_probe_run((void *)(uintptr_t)pad_addr, fl);
			// The pad ran (the function is not patched: the caller called the pad).
			NS_CHECK_INT(ctr.hits, 1);
			static const char *names[18] = {
			        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8",
			        "r9",  "r10", "r11", "r12", "r13", "r14", "r15", "rip", "eflags"};
			for (int r = 0; r < 18; r++)
				if (pa_dump[r] != direct[r])
					ns_test_fail(__FILE__, __LINE__,
					             "mode %d flags %#llx: %s %#llx after the pad, "
					             "%#llx direct",
					             mode, (unsigned long long)fl, names[r],
					             (unsigned long long)pa_dump[r],
					             (unsigned long long)direct[r]);
			// What pa_probe_run loaded, independent of the pad.
			NS_CHECK(direct[0] == 0x1111111111111101ull);
			NS_CHECK(direct[15] == 0xffffffffffffff0full);
			NS_CHECK((direct[17] & 0xcd5) == (fl & 0xcd5));
			// The collector's block: the same registers, rip = site, rsp at the site.
			for (int r = 0; r < 16; r++)
				if (ctr.last[r] != direct[r])
					ns_test_fail(__FILE__, __LINE__,
					             "mode %d: block %s %#llx, expected %#llx",
					             mode, names[r],
					             (unsigned long long)ctr.last[r],
					             (unsigned long long)direct[r]);
			NS_CHECK(ctr.last[NS_ARCH_PAD_REG_RIP] == s->lo);
			uint64_t want_fl = mode == NS_ARCH_PAD_FLAGS_PUSHF ? direct[17]
			                                                   : ((fl & 0x8d5) | 0x202);
			if (ctr.last[NS_ARCH_PAD_REG_EFLAGS] != want_fl)
				ns_test_fail(__FILE__, __LINE__,
				             "mode %d: block eflags %#llx, expected %#llx", mode,
				             (unsigned long long)ctr.last[17],
				             (unsigned long long)want_fl);
			NS_CHECK_INT(ctr.rsp_mod16, 0);
		}
	}
}

// A guard decides whether the collector runs; either way every register and the flags
// arrive unchanged, also when the guard wrote all the registers it may clobber; a
// disarmed guard always calls the collector.
NS_TEST(test_arch_pad_test__guard)
{
	if (!load_syms() || !pads())
		return;
	struct sym *s = sym_named("pa_probe_target");
	uint64_t fl = 0x202 | 0x8d5, direct[18];
	probe_direct(fl, direct);
	for (int variant = 0; variant < 6; variant++) {
		// rax = (rbx == imm): true for variants 0, 2, 4 (4, 5: disarmed)
		uint64_t imm = direct[1] + (uint64_t)(variant & 1);
		uint8_t g[128];
		size_t n = 0;
		g[n++] = 0x49, g[n++] = 0xb8; // mov r8, imm64
		memcpy(g + n, &imm, 8);
		n += 8;
		static const uint8_t cmp[] = {0x4c, 0x39, 0xc3,  // cmp rbx, r8
		                              0x0f, 0x94, 0xc0,  // sete al
		                              0x0f, 0xb6, 0xc0}; // movzx eax, al
		memcpy(g + n, cmp, sizeof(cmp));
		n += sizeof(cmp);
		uint32_t clobber = 1u << 0 | 1u << 8; // rax r8 (GDB numbers)
		if (variant >= 2) {
			// rcx, rdx, r9, r10, r11 = -1 (mov r64, simm32)
			static const uint8_t trash[] = {0x48, 0xc7, 0xc1, 0x48, 0xc7, 0xc2,
			                                0x49, 0xc7, 0xc1, 0x49, 0xc7, 0xc2,
			                                0x49, 0xc7, 0xc3};
			for (size_t i = 0; i < sizeof(trash); i += 3) {
				memcpy(g + n, trash + i, 3);
				memset(g + n + 3, 0xff, 4);
				n += 7;
			}
			clobber = 0x0f0d;
		}
		next_guard = g;
		next_guard_len = n;
		next_guard_clobber = clobber;
		struct pa_counter ctr;
		memset(&ctr, 0, sizeof(ctr));
		struct ns_arch_pad_window w;
		struct ns_arch_pad pad;
		uint64_t pad_addr;
		bool built = build_pad(s, s->lo, pa_collect_count, &ctr, NS_ARCH_PAD_FLAGS_LAHF,
		                       6, &w, &pad, &pad_addr);
		next_guard_len = 0;
		if (!built) {
			ns_test_fail(__FILE__, __LINE__, "no pad for pa_probe_target");
			return;
		}
		NS_CHECK(pad.armed_off > pad.block_off);
		NS_CHECK_INT(((uint8_t *)(uintptr_t)pad_addr)[pad.armed_off], 1);
		if (variant >= 4)
			((uint8_t *)(uintptr_t)pad_addr)[pad.armed_off] = 0;
		memset(pa_dump, 0, sizeof(pa_dump));
		pa_probe_run((void *)(uintptr_t)pad_addr, fl);
		int want_hits = variant >= 4 || !(variant & 1);
		if ((int)ctr.hits != want_hits)
			ns_test_fail(__FILE__, __LINE__, "variant %d: %d collector calls, expected %d",
			             variant, (int)ctr.hits, want_hits);
		for (int r = 0; r < 18; r++)
			if (pa_dump[r] != direct[r])
				ns_test_fail(__FILE__, __LINE__,
				             "variant %d: register %d %#llx after the pad, %#llx direct",
				             variant, r, (unsigned long long)pa_dump[r],
				             (unsigned long long)direct[r]);
		// The collector saw the program's registers, not the guard's.
		for (int r = 0; r < 16 && ctr.hits; r++)
			if (ctr.last[r] != direct[r])
				ns_test_fail(__FILE__, __LINE__, "variant %d: block register %d %#llx, "
				             "expected %#llx", variant, r,
				             (unsigned long long)ctr.last[r],
				             (unsigned long long)direct[r]);
	}
	// Only rax rcx rdx r8-r11 may be clobbered.
	uint8_t nop = 0x90;
	struct ns_arch_pad_spec spec = {.site = s->lo,
	                                .code = (const uint8_t *)(uintptr_t)s->lo,
	                                .window_len = 7,
	                                .pad_addr = (uint64_t)(uintptr_t)pads(),
	                                .collector = (uint64_t)(uintptr_t)pa_collect_nop,
	                                .flags = NS_ARCH_PAD_FLAGS_LAHF,
	                                .guard = &nop,
	                                .guard_len = 1,
	                                .guard_clobber = 1u << 1};
	uint8_t buf[1024];
	struct ns_arch_pad pad;
	struct ns_err *err = ns_arch_pad_emit(&spec, buf, sizeof(buf), &pad);
	NS_CHECK(err != NULL);
	ns_err_destroy(err);
}

/* ---- inline records ---- */

#define TLSIE __attribute__((tls_model("local-exec"))) /* this executable's own TLS */
static __thread struct ns_arch_pad_thread rt_thread TLSIE;
static __thread uint8_t rt_busy TLSIE;
static uint32_t rt_gen = 7;
static struct {
	uint64_t head, tail, seen, seq;
} rt_ring;
static uint8_t rt_data[4096] __attribute__((aligned(64)));
static struct {
	uint32_t busy, pad;
	uint64_t hits;
} rt_slot;

static int32_t tls_off(const void *p)
{
	return (int32_t)((const char *)p - (const char *)__builtin_thread_pointer());
}

// A record written into the test's ring (rt_ring, rt_data, rt_slot, rt_thread).
static struct ns_arch_pad_record rt_record(const uint8_t *tmpl, size_t len,
                                           const struct ns_arch_rec_field *fields,
                                           size_t nfields)
{
	return (struct ns_arch_pad_record){
	        .tmpl = tmpl,
	        .len = len,
	        .fields = fields,
	        .nfields = nfields,
	        .tls = tls_off(&rt_thread),
	        .tls_busy = tls_off(&rt_busy),
	        .gen_addr = (uint64_t)(uintptr_t)&rt_gen,
	        .ring_size = sizeof(rt_data),
	        .head_off = 0,
	        .tail_off = 8,
	        .seq_off = 24,
	        .tail_seen_off = 16,
	        .busy_off = 0,
	        .hits_off = 8,
	};
}

// The thread block of a thread with a ring and a slot, current generation.
static void rt_thread_set(uint32_t tid)
{
	rt_busy = 0;
	rt_thread.ring = (uint64_t)(uintptr_t)&rt_ring;
	rt_thread.data = (uint64_t)(uintptr_t)rt_data;
	rt_thread.slot = (uint64_t)(uintptr_t)&rt_slot;
	rt_thread.gen = rt_gen;
	rt_thread.tid = tid;
}

// The spec of a LAHF pad at the entry of @s, at @dst, writing @rec (the collector for
// the full path: @collector with @ctx).
static struct ns_arch_pad_spec rt_spec(const struct sym *s, uint8_t *dst,
                                       const struct ns_arch_pad_record *rec,
                                       void (*collector)(void *, const uint64_t *), void *ctx)
{
	struct ns_arch_pad_window w = {.len = 0};
	struct ns_arch_pad_func fn = func_of(s);
	NS_CHECK_OK(ns_arch_pad_window(&fn, s->lo, &w));
	return (struct ns_arch_pad_spec){
	        .site = s->lo,
	        .code = (const uint8_t *)(uintptr_t)s->lo,
	        .window_len = w.len,
	        .pad_addr = (uint64_t)(uintptr_t)dst,
	        .collector = (uint64_t)(uintptr_t)collector,
	        .ctx = (uint64_t)(uintptr_t)ctx,
	        .flags = NS_ARCH_PAD_FLAGS_LAHF,
	        .record = rec,
	};
}

// What the fields of the record test write and where.
static const struct ns_arch_rec_field rt_fields[] = {
        {16, NS_ARCH_REC_REG, 0},  {24, NS_ARCH_REC_REG, 1},   {32, NS_ARCH_REC_REG, 2},
        {40, NS_ARCH_REC_REG, 3},  {48, NS_ARCH_REC_REG, 4},   {56, NS_ARCH_REC_REG, 5},
        {64, NS_ARCH_REC_REG, 6},  {72, NS_ARCH_REC_REG, 7},   {80, NS_ARCH_REC_REG, 8},
        {88, NS_ARCH_REC_REG, 11}, {96, NS_ARCH_REC_REG, 15},  {104, NS_ARCH_REC_REG, 16},
        {116, NS_ARCH_REC_TID, 0}, {120, NS_ARCH_REC_TSC, 0}, {128, NS_ARCH_REC_SEQ, 0},
};
enum { RT_LEN = 152 };

// The record test's ring state before a run, and what the run should do.
enum rt_case {
	RT_WRITE,      // written at head
	RT_DISARMED,   // armed byte 0
	RT_BUSY,       // the thread is collecting already
	RT_NO_RING,    // thread block without a ring
	RT_NO_SLOT,    // ... without a slot
	RT_GEN,        // stale generation
	RT_FULL,       // head - tail leaves no room
	RT_WRAP,       // not contiguous at the end of the ring
	RT_STALE,      // room, but not by the tail last seen: written, the copy refreshed
	RT_NCASES
};

static double ns_per_call(long (*volatile fn)(long), long iters);

// ns per call of pa_bare through a pad writing a logpoint-sized record (the agent's
// compact record: a word, tid, TSC, sequence, two registers; with and without the TSC)
// into a ring big enough never to fill, its pages touched first; printed, not asserted.
static void record_cost(const struct ns_arch_pad_record *base)
{
	enum { ITERS = 50000, LEN = 40 }; // ns_per_call makes 5 passes: 10 MB of records
	size_t ring = 32u << 20;
	uint8_t *data = aligned_alloc(4096, ring);
	struct sym *s = sym_named("pa_bare");
	if (!data || !s) {
		free(data);
		return;
	}
	memset(data, 0, ring);
	uint8_t tmpl[LEN];
	memset(tmpl, 0, sizeof(tmpl));
	struct ns_arch_rec_field f[] = {{4, NS_ARCH_REC_TID, 0}, {16, NS_ARCH_REC_SEQ, 0},
	                                {24, NS_ARCH_REC_REG, 5}, {32, NS_ARCH_REC_REG, 4},
	                                {8, NS_ARCH_REC_TSC, 0}};
	struct ns_arch_pad_record rec = *base;
	rec.tmpl = tmpl;
	rec.len = LEN;
	rec.fields = f;
	rec.ring_size = ring;
	double ns[2] = {0, 0};
	for (int tsc = 0; tsc < 2; tsc++) {
		rec.nfields = tsc ? 5 : 4;
		uint8_t *dst = pads() + (13 + 3 * tsc) * 1024;
		struct ns_arch_pad_spec spec = rt_spec(s, dst, &rec, pa_collect_nop, NULL);
		struct ns_arch_pad pad;
		struct ns_err *err = ns_arch_pad_emit(&spec, dst, 3 * 1024, &pad);
		if (err) {
			ns_test_fail(__FILE__, __LINE__, "cost pad: %s", err->msg);
			ns_err_destroy(err);
			break;
		}
		__builtin___clear_cache((char *)dst, (char *)dst + pad.len);
		double best = 0;
		for (int rep = 0; rep < 3; rep++) {
			memset(&rt_ring, 0, sizeof(rt_ring));
			rt_thread_set(rt_thread.tid);
			rt_thread.data = (uint64_t)(uintptr_t)data; // its own big ring
			double t = ns_per_call((long (*)(long))(uintptr_t)dst, ITERS);
			// Every call wrote its record (none took the full path).
			NS_CHECK(rt_ring.head == (uint64_t)5 * ITERS * LEN);
			if (rep == 0 || t < best)
				best = t;
		}
		ns[tsc] = best;
	}
	double bare = ns_per_call(pa_bare, ITERS);
	printf("# inline record, ns per call: bare %.2f, record %.2f (+%.2f), record with "
	       "rdtsc %.2f (+%.2f)\n",
	       bare, ns[0], ns[0] - bare, ns[1], ns[1] - bare);
	free(data);
}

// An inline record goes into the ring with every field right, registers and flags
// arrive unchanged, and each reason to take the full path takes it (the collector
// runs, the ring, the sequence and the busy marks stay as they were).
NS_TEST(test_arch_pad_test__record)
{
	if (!load_syms() || !pads())
		return;
	struct sym *s = sym_named("pa_probe_target");
	uint64_t fl = 0x202 | 0x8d5, direct[18];
	probe_direct(fl, direct);

	uint8_t tmpl[RT_LEN];
	for (size_t i = 0; i < RT_LEN; i++)
		tmpl[i] = (uint8_t)(i * 37 + 1); // large words (movabs) ...
	memset(tmpl + 136, 0, 8);               // ... a zero word ...
	uint64_t small = (uint64_t)-5;          // ... and a sign-extended imm32
	memcpy(tmpl + 144, &small, 8);
	struct ns_arch_pad_record rec =
	        rt_record(tmpl, RT_LEN, rt_fields, sizeof(rt_fields) / sizeof(rt_fields[0]));
	struct ns_err *err = NULL;
	uint8_t *dst = pads() + 10 * 1024;
	struct pa_counter ctr;
	struct ns_arch_pad_spec spec = rt_spec(s, dst, &rec, pa_collect_count, &ctr);
	// Room: pads() slots are 1024 bytes; this pad takes slots 10-12.
	struct ns_arch_pad pad;
	err = ns_arch_pad_emit(&spec, dst, 3 * 1024, &pad);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "record pad: %s", err->msg);
		ns_err_destroy(err);
		return;
	}
	__builtin___clear_cache((char *)dst, (char *)dst + pad.len);
	NS_CHECK(pad.record_armed_off > pad.block_off);
	NS_CHECK_INT(dst[pad.record_armed_off], 1);
	printf("# record pad: %zu bytes for a %d-byte record with %zu fields\n", pad.len, RT_LEN,
	       rec.nfields);

	for (int round = 0; round < 2 * RT_NCASES; round++) {
		enum rt_case c = (enum rt_case)(round % RT_NCASES);
		// Two passes: from an empty ring, then from one that has records.
		uint64_t head0 = round < RT_NCASES ? 0 : 3 * RT_LEN + 8;
		rt_ring.head = head0;
		rt_ring.tail = head0 - (head0 ? 16 : 0);
		rt_ring.seq = 40 + (uint64_t)round;
		rt_ring.seen = rt_ring.tail;
		rt_slot.busy = 0;
		rt_slot.hits = 5;
		rt_thread_set(0xabcd1234u);
		dst[pad.record_armed_off] = 1;
		switch (c) {
		case RT_DISARMED:
			dst[pad.record_armed_off] = 0;
			break;
		case RT_BUSY:
			rt_busy = 1;
			break;
		case RT_NO_RING:
			rt_thread.ring = 0;
			break;
		case RT_NO_SLOT:
			rt_thread.slot = 0;
			break;
		case RT_GEN:
			rt_thread.gen = rt_gen + 1;
			break;
		case RT_FULL:
			rt_ring.tail = head0 - (sizeof(rt_data) - RT_LEN) - 8;
			rt_ring.seen = rt_ring.tail - 64;
			break;
		case RT_WRAP:
			rt_ring.head = rt_ring.tail = rt_ring.seen = 100 * sizeof(rt_data) - RT_LEN + 8;
			break;
		case RT_STALE:
			rt_ring.seen = head0 - sizeof(rt_data);
			break;
		default:
			break;
		}
		uint64_t head = rt_ring.head, tail = rt_ring.tail, seen = rt_ring.seen;
		memset(rt_data, 0xee, sizeof(rt_data));
		memset(&ctr, 0, sizeof(ctr));
		memset(pa_dump, 0, sizeof(pa_dump));
		uint64_t t0 = __builtin_ia32_rdtsc();
		pa_probe_run((void *)(uintptr_t)dst, fl);
		uint64_t t1 = __builtin_ia32_rdtsc();
		for (int r = 0; r < 18; r++)
			if (pa_dump[r] != direct[r])
				ns_test_fail(__FILE__, __LINE__,
				             "case %d: register %d %#llx after the pad, %#llx direct", c,
				             r, (unsigned long long)pa_dump[r],
				             (unsigned long long)direct[r]);
		NS_CHECK_INT(rt_slot.busy, 0);
		NS_CHECK_INT(rt_busy, c == RT_BUSY);
		NS_CHECK(rt_ring.tail == tail);
		// The producer's copy of the tail: refreshed when it showed no room.
		NS_CHECK(rt_ring.seen == (c == RT_STALE || c == RT_FULL ? tail : seen));
		if (c != RT_WRITE && c != RT_STALE) {
			if (ctr.hits != 1)
				ns_test_fail(__FILE__, __LINE__, "case %d: %llu collector calls", c,
				             (unsigned long long)ctr.hits);
			NS_CHECK(rt_ring.head == head);
			NS_CHECK_INT(rt_ring.seq, 40 + (uint64_t)round);
			NS_CHECK_INT(rt_slot.hits, 5);
			for (size_t i = 0; i < sizeof(rt_data); i++)
				if (rt_data[i] != 0xee) {
					ns_test_fail(__FILE__, __LINE__, "case %d: ring byte %zu written",
					             c, i);
					break;
				}
			// The full path saw the program's registers.
			for (int r = 0; r < 16 && ctr.hits; r++)
				if (ctr.last[r] != direct[r])
					ns_test_fail(__FILE__, __LINE__,
					             "case %d: block register %d %#llx, expected %#llx",
					             c, r, (unsigned long long)ctr.last[r],
					             (unsigned long long)direct[r]);
			continue;
		}
		NS_CHECK_INT(ctr.hits, 0);
		NS_CHECK(rt_ring.head == head + RT_LEN);
		NS_CHECK_INT(rt_ring.seq, 41 + (uint64_t)round);
		NS_CHECK_INT(rt_slot.hits, 6);
		const uint8_t *got = rt_data + (head & (sizeof(rt_data) - 1));
		// Before and after the record: untouched.
		if (head)
			NS_CHECK_INT(got[-1], 0xee);
		NS_CHECK_INT(got[RT_LEN], 0xee);
		// The template where no field goes (a tid field is 4 bytes, the others 8).
		for (size_t off = 0; off < RT_LEN; off++) {
			bool field = false;
			for (size_t i = 0; i < rec.nfields; i++)
				field |= off >= rt_fields[i].off &&
				         off < rt_fields[i].off +
				                       (rt_fields[i].kind == NS_ARCH_REC_TID ? 4u : 8u);
			if (!field && got[off] != tmpl[off])
				ns_test_fail(__FILE__, __LINE__, "template byte at %zu differs", off);
		}
		uint64_t v[RT_LEN / 8];
		memcpy(v, got, RT_LEN);
		static const unsigned regs[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 15};
		for (size_t i = 0; i < sizeof(regs) / sizeof(regs[0]); i++)
			if (v[2 + i] != direct[regs[i]])
				ns_test_fail(__FILE__, __LINE__, "record register %u %#llx, expected %#llx",
				             regs[i], (unsigned long long)v[2 + i],
				             (unsigned long long)direct[regs[i]]);
		NS_CHECK(v[13] == s->lo);          // rip: the site
		uint32_t tid_got;
		memcpy(&tid_got, got + 116, 4);
		NS_CHECK(tid_got == 0xabcd1234u); // tid: 4 bytes, the template's around it
		NS_CHECK(v[15] >= t0 && v[15] <= t1); // the TSC of this run
		NS_CHECK_INT(v[16], 40 + (uint64_t)round);
	}
	record_cost(&rec);
	// The record and the guard are exclusive; records are checked.
	uint8_t nop = 0x90, buf[4096];
	spec.guard = &nop;
	spec.guard_len = 1;
	err = ns_arch_pad_emit(&spec, buf, sizeof(buf), &pad);
	NS_CHECK(err != NULL);
	ns_err_destroy(err);
	spec.guard_len = 0;
	struct ns_arch_rec_field bad = {4, NS_ARCH_REC_REG, 0};
	rec.fields = &bad;
	rec.nfields = 1;
	err = ns_arch_pad_emit(&spec, buf, sizeof(buf), &pad);
	NS_CHECK(err != NULL);
	ns_err_destroy(err);
	rec.fields = rt_fields;
	rec.nfields = sizeof(rt_fields) / sizeof(rt_fields[0]);
	rec.ring_size = 3000;
	err = ns_arch_pad_emit(&spec, buf, sizeof(buf), &pad);
	NS_CHECK(err != NULL);
	ns_err_destroy(err);
}

/* ---- memory reads in inline records ---- */

// What the reads test reads: a "stack" (the range the TLS words name), a "heap" only
// the read function reaches, and static bytes read directly.
static uint64_t rr_stack[16];
static uint8_t rr_heap[64] __attribute__((aligned(8)));
static uint8_t rr_static[16];
static __thread uint64_t rr_stk_lo TLSIE, rr_stk_limit TLSIE;

enum { RR_LEN = 120, RR_NREADS = 8 };

// The reads: a register plus a 64-bit displacement, chains through loaded values (from
// the copied bytes and from a read of its own), small and odd sizes, direct, rip-based.
static void rr_reads(struct ns_arch_rec_read *rd, uint64_t rax, uint64_t site)
{
	uint64_t st = (uint64_t)(uintptr_t)rr_static, hp = (uint64_t)(uintptr_t)rr_heap;
	struct ns_arch_rec_read v[RR_NREADS] = {
	        // 0: rr_stack[1] (a pointer into the heap), its address recorded
	        {NS_ARCH_REC_AT_REG, 0, 8, 0, 8, 32, 24, (uint64_t)(uintptr_t)&rr_stack[1] - rax},
	        // 1: 4 heap bytes at that pointer + 4 (the read function)
	        {NS_ARCH_REC_AT_READ, 0, 0, 0, 4, 40, 0, 4},
	        // 2: the 8 bytes at that pointer, a value only (a pointer into the stack)
	        {NS_ARCH_REC_AT_READ, 0, 8, 0, 0, 0, 0, 0},
	        // 3: 2 bytes there (the stack: a plain load)
	        {NS_ARCH_REC_AT_READ, 2, 0, 0, 2, 48, 0, 0},
	        // 4: 13 static bytes, direct
	        {NS_ARCH_REC_ABS, 0, 0, 1, 13, 56, 0, st},
	        // 5: 24 heap bytes at an absolute address, the address recorded
	        {NS_ARCH_REC_ABS, 0, 0, 0, 24, 80, 72, hp + 40},
	        // 6: one static byte from rip + disp32, also a value
	        {NS_ARCH_REC_AT_REG, 16, 1, 0, 1, 104, 0, st + 3 - site},
	        // 7: 8 heap bytes at that value + the heap - 0x10
	        {NS_ARCH_REC_AT_READ, 6, 0, 0, 8, 112, 0, hp - 0x10},
	};
	memcpy(rd, v, sizeof(v));
}

// Each read of rr_reads done in C: the record's bytes into @rec.
static void rr_reference(uint8_t *rec, uint64_t site)
{
	(void)site;
	uint64_t p0 = rr_stack[1];
	memcpy(rec + 24, &(uint64_t){(uint64_t)(uintptr_t)&rr_stack[1]}, 8);
	memcpy(rec + 32, &p0, 8);
	memcpy(rec + 40, (const uint8_t *)(uintptr_t)p0 + 4, 4);
	uint64_t p2;
	memcpy(&p2, (const uint8_t *)(uintptr_t)p0, 8);
	memcpy(rec + 48, (const uint8_t *)(uintptr_t)p2, 2);
	memcpy(rec + 56, rr_static, 13);
	memcpy(rec + 72, &(uint64_t){(uint64_t)(uintptr_t)&rr_heap[40]}, 8);
	memcpy(rec + 80, rr_heap + 40, 24);
	rec[104] = rr_static[3];
	memcpy(rec + 112, rr_heap + rr_static[3] - 0x10, 8);
}

// A record with memory reads: every read lands where the C reference puts it, whether
// the stack reads are plain loads or calls; a read the read function refuses takes
// the full path with nothing written; registers and flags arrive unchanged.
NS_TEST(test_arch_pad_test__record_reads)
{
	if (!load_syms() || !pads())
		return;
	struct sym *s = sym_named("pa_probe_target");
	uint64_t fl = 0x202 | 0x8d5, direct[18];
	probe_direct(fl, direct);
	// The data: distinct bytes, pointers chained as rr_reads says.
	for (size_t i = 0; i < sizeof(rr_heap); i++)
		rr_heap[i] = (uint8_t)(0x80 + i * 7);
	for (size_t i = 0; i < sizeof(rr_static); i++)
		rr_static[i] = (uint8_t)(0x31 + i * 5);
	rr_static[3] = 0x18; // read 7: rr_heap + 0x18 - 0x10
	for (size_t i = 0; i < 16; i++)
		rr_stack[i] = 0x5a5a000000000000ull + i * 0x0101;
	rr_stack[1] = (uint64_t)(uintptr_t)&rr_heap[16];
	uint64_t p = (uint64_t)(uintptr_t)&rr_stack[3];
	memcpy(&rr_heap[16], &p, 8);

	uint8_t tmpl[RR_LEN];
	for (size_t i = 0; i < RR_LEN; i++)
		tmpl[i] = (uint8_t)(i * 29 + 3);
	struct ns_arch_rec_field fields[] = {{4, NS_ARCH_REC_TID, 0},
	                                     {8, NS_ARCH_REC_TSC, 0},
	                                     {16, NS_ARCH_REC_SEQ, 0}};
	struct ns_arch_rec_read reads[RR_NREADS];
	rr_reads(reads, direct[0], s->lo);
	struct ns_arch_pad_record rec = rt_record(tmpl, RR_LEN, fields, 3);
	rec.reads = reads;
	rec.nreads = RR_NREADS;
	rec.tls_stk_lo = tls_off(&rr_stk_lo);
	rec.tls_stk_limit = tls_off(&rr_stk_limit);
	rec.read_fn = (uint64_t)(uintptr_t)pa_read_fn;
	uint8_t *dst = pads() + 20 * 1024;
	struct pa_counter ctr;
	struct ns_arch_pad_spec spec = rt_spec(s, dst, &rec, pa_collect_count, &ctr);
	size_t cap = NS_ARCH_PAD_MAX_LEN + NS_ARCH_PAD_REC_EXTRA +
	             RR_NREADS * NS_ARCH_PAD_REC_READ_EXTRA;
	NS_CHECK(cap <= 8 * 1024);
	struct ns_arch_pad pad;
	struct ns_err *err = ns_arch_pad_emit(&spec, dst, cap, &pad);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "reads pad: %s", err->msg);
		ns_err_destroy(err);
		return;
	}
	__builtin___clear_cache((char *)dst, (char *)dst + pad.len);
	printf("# record pad with %d reads: %zu bytes\n", RR_NREADS, pad.len);
	uint8_t want[RR_LEN];
	memcpy(want, tmpl, RR_LEN);
	rr_reference(want, s->lo);

	// 0: the stack range set (reads 0 and 3 are plain loads); 1: no stack range
	// (every read but the direct one calls); 2: the heap read of read 5 fails.
	for (int c = 0; c < 3; c++) {
		rt_ring.head = rt_ring.tail = rt_ring.seen = 64;
		rt_ring.seq = 9;
		rt_slot.busy = 0;
		rt_slot.hits = 0;
		rt_thread_set(77);
		rr_stk_lo = (uint64_t)(uintptr_t)rr_stack;
		rr_stk_limit = c == 1 ? 0 : sizeof(rr_stack) - 7;
		memset(&pa_reads, 0, sizeof(pa_reads));
		pa_reads.fail_addr = c == 2 ? (uint64_t)(uintptr_t)&rr_heap[40] : 0;
		memset(rt_data, 0xee, sizeof(rt_data));
		memset(&ctr, 0, sizeof(ctr));
		memset(pa_dump, 0, sizeof(pa_dump));
		pa_probe_run((void *)(uintptr_t)dst, fl);
		for (int r = 0; r < 18; r++)
			if (pa_dump[r] != direct[r])
				ns_test_fail(__FILE__, __LINE__,
				             "case %d: register %d %#llx after the pad, %#llx direct", c,
				             r, (unsigned long long)pa_dump[r],
				             (unsigned long long)direct[r]);
		NS_CHECK_INT(rt_slot.busy, 0);
		NS_CHECK_INT(rt_busy, 0);
		NS_CHECK_INT(pa_reads.bad_state, 0);
		NS_CHECK_INT(pa_reads.misaligned, 0);
		// Calls: reads 1, 2, 5, 6, 7 (and 0, 3 without the stack range); the failing
		// read 5 is the third call and the last.
		NS_CHECK_INT(pa_reads.calls, c == 1 ? 7 : c == 2 ? 3 : 5);
		if (c == 2) {
			NS_CHECK_INT(ctr.hits, 1);
			NS_CHECK_INT(rt_ring.head, 64);
			NS_CHECK_INT(rt_ring.seq, 9);
			NS_CHECK_INT(rt_slot.hits, 0);
			for (int r = 0; r < 16; r++)
				if (ctr.last[r] != direct[r])
					ns_test_fail(__FILE__, __LINE__, "block register %d differs", r);
			continue;
		}
		NS_CHECK_INT(ctr.hits, 0);
		NS_CHECK_INT(rt_ring.head, 64 + RR_LEN);
		NS_CHECK_INT(rt_ring.seq, 10);
		NS_CHECK_INT(rt_slot.hits, 1);
		const uint8_t *got = rt_data + 64;
		NS_CHECK_INT(got[-1], 0xee);
		NS_CHECK_INT(got[RR_LEN], 0xee);
		for (size_t off = 24; off < RR_LEN; off++)
			if (got[off] != want[off]) {
				ns_test_fail(__FILE__, __LINE__,
				             "case %d: record byte %zu is %#x, the reference %#x", c, off,
				             got[off], want[off]);
				break;
			}
		uint64_t seq;
		uint32_t tid;
		memcpy(&seq, got + 16, 8);
		memcpy(&tid, got + 4, 4);
		NS_CHECK_INT(seq, 9);
		NS_CHECK_INT(tid, 77);
	}
	// Reads are checked: a value from a read that loads none, a read before its base,
	// a direct read that is not absolute, no read function.
	uint8_t buf[8192];
	for (int bad = 0; bad < 4; bad++) {
		rr_reads(reads, direct[0], s->lo);
		if (bad == 0)
			reads[3].from = 1;
		else if (bad == 1)
			reads[1].from = 1;
		else if (bad == 2)
			reads[1].direct = 1;
		else
			rec.read_fn = 0;
		err = ns_arch_pad_emit(&spec, buf, sizeof(buf), &pad);
		if (!err)
			ns_test_fail(__FILE__, __LINE__, "bad read %d accepted", bad);
		ns_err_destroy(err);
	}
}

// A thread stopped inside the window resumes in the pad's relocated copy: jump to
// pad + block_off + new_off[i] with the state the original had at orig_off[i].
NS_TEST(test_arch_pad_test__map_resume_point)
{
	if (!load_syms() || !pads())
		return;
	struct sym *s = sym_named("pa_loop");
	struct pa_counter ctr;
	memset(&ctr, 0, sizeof(ctr));
	struct ns_arch_pad_window w;
	struct ns_arch_pad pad;
	uint64_t pad_addr;
	NS_CHECK(build_pad(s, s->lo, pa_collect_count, &ctr, NS_ARCH_PAD_FLAGS_AUTO, 2, &w, &pad,
	                   &pad_addr));
	// Entry window: xor eax,eax (2) + test rdi,rdi (3).
	NS_CHECK_INT(pad.reloc.ninsns, 2);
	NS_CHECK_INT(pad.reloc.orig_off[1], 2);
	NS_CHECK_INT(pad.reloc.new_off[1], 2);
	NS_CHECK(pad.flags == NS_ARCH_PAD_FLAGS_LAHF || pad.flags == NS_ARCH_PAD_FLAGS_PUSHF);
	// Resuming at the relocated "test rdi, rdi" with eax already 0 skips the collector.
	long (*resume)(long) =
	        (long (*)(long))(uintptr_t)(pad_addr + pad.block_off + pad.reloc.new_off[1]);
	long (*whole)(long) = (long (*)(long))(uintptr_t)pad_addr;
	NS_CHECK_INT(whole(10), 55);
	NS_CHECK_INT(ctr.hits, 1);
	__asm__ volatile("" ::: "memory");
	long r;
	// eax must be 0 at orig offset 2: set it with an asm call.
	__asm__ volatile("xor %%eax, %%eax\n\tmov $7, %%edi\n\tcall *%1"
	                 : "=a"(r)
	                 : "r"(resume)
	                 : "rdi", "rsi", "rdx", "rcx", "r8", "r9", "r10", "r11", "memory", "cc");
	NS_CHECK_INT(r, 28);
	NS_CHECK_INT(ctr.hits, 1);
}

// ---- cost per pass -----------------------------------------------------------------

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double ns_per_call(long (*volatile fn)(long), long iters)
{
	double best = 1e30;
	for (int rep = 0; rep < 5; rep++) {
		double t0 = now_ns();
		long acc = 0;
		for (long i = 0; i < iters; i++)
			acc += fn(i);
		double t = (now_ns() - t0) / (double)iters;
		__asm__ volatile("" ::"r"(acc));
		if (t < best)
			best = t;
	}
	return best;
}

NS_TEST(test_arch_pad_test__cost_per_pass)
{
	if (!load_syms() || !pads())
		return;
	struct sym *s = sym_named("pa_bare");
	enum { ITERS = 2000000 };
	// Jumps only: the relocated window with no collector around it.
	uint8_t *jdst = pads() + 3 * 1024;
	struct ns_arch_reloc r;
	NS_CHECK_OK(ns_arch_relocate_block((const uint8_t *)(uintptr_t)s->lo, s->lo, 8,
	                                   (uint64_t)(uintptr_t)jdst, jdst, 512, &r));
	__builtin___clear_cache((char *)jdst, (char *)jdst + r.len);
	struct ns_arch_pad_window w;
	struct ns_arch_pad pl, pp;
	uint64_t a_lahf, a_pushf;
	NS_CHECK(build_pad(s, s->lo, pa_collect_nop, NULL, NS_ARCH_PAD_FLAGS_LAHF, 4, &w, &pl,
	                   &a_lahf));
	NS_CHECK(build_pad(s, s->lo, pa_collect_nop, NULL, NS_ARCH_PAD_FLAGS_PUSHF, 5, &w, &pp,
	                   &a_pushf));
	// A guard that always says false (xor eax, eax): the collector never runs.
	static const uint8_t gfalse[] = {0x31, 0xc0};
	struct ns_arch_pad pg;
	uint64_t a_guard;
	next_guard = gfalse;
	next_guard_len = sizeof(gfalse);
	next_guard_clobber = 1;
	NS_CHECK(build_pad(s, s->lo, pa_collect_nop, NULL, NS_ARCH_PAD_FLAGS_LAHF, 7, &w, &pg,
	                   &a_guard));
	next_guard_len = 0;
	NS_CHECK_INT(((long (*)(long))(uintptr_t)a_guard)(41), 42);
	// Both compute x + 1.
	NS_CHECK_INT(((long (*)(long))(uintptr_t)jdst)(41), 42);
	NS_CHECK_INT(((long (*)(long))(uintptr_t)a_lahf)(41), 42);
	NS_CHECK_INT(((long (*)(long))(uintptr_t)a_pushf)(41), 42);
	double bare = ns_per_call(pa_bare, ITERS);
	double jmp = ns_per_call((long (*)(long))(uintptr_t)jdst, ITERS);
	double lahf = ns_per_call((long (*)(long))(uintptr_t)a_lahf, ITERS);
	double pushf = ns_per_call((long (*)(long))(uintptr_t)a_pushf, ITERS);
	double guard = ns_per_call((long (*)(long))(uintptr_t)a_guard, ITERS);
	// Patched in place: call the real function with "jmp pad" at its entry.
	uint8_t saved[NS_ARCH_PAD_MAX_WINDOW];
	double patched = 0;
	if (patch(s->lo, w.len, a_lahf, saved)) {
		patched = ns_per_call(pa_bare, ITERS);
		unpatch(s->lo, w.len, saved);
	}
	printf("# ns per call: bare %.2f, relocated window only %.2f (+%.2f), pad lahf/seto "
	       "%.2f (+%.2f), pad pushfq/popfq %.2f (+%.2f), patched entry (lahf) %.2f (+%.2f), "
	       "pad with a false guard %.2f (+%.2f); pad %zu/%zu bytes\n",
	       bare, jmp, jmp - bare, lahf, lahf - bare, pushf, pushf - bare, patched,
	       patched - bare, guard, guard - bare, pl.len, pp.len);
}
