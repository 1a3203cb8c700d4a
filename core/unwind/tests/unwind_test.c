/* Unwind a real frame captured from this process: a() -> b() -> c(), registers taken
 * with inline asm in c(), stack copied from RSP. The answers come from the compiler
 * (__builtin_dwarf_cfa, __builtin_return_address, __builtin_frame_address) and from
 * `nm -S` on this executable, never from the code under test.
 *
 * This file is compiled with -O0 (see CMakeLists.txt); the *_o2 chain is compiled
 * with optimize("O2", "omit-frame-pointer") so the unwinder must use .eh_frame. */
#define _GNU_SOURCE
#include "base/arena.h"
#include "base/test.h"
#include "unwind/unwind.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { STACK_COPY = 64 * 1024 };

static uint64_t cap_regs[NS_FRAME_NREGS];
static uint8_t stack_copy[STACK_COPY];
static size_t stack_len;
static uint64_t stack_top;
static uint64_t cfa_c, cfa_b, cfa_a, ret_c, ret_b, ret_a, rbp_b;
static volatile int sink;

// GDB amd64 order: rax rbx rcx rdx rsi rdi rbp rsp r8..r15 rip (8 bytes each).
#define CAPTURE_REGS(buf)                           \
	__asm__ volatile("movq %%rax, 0(%0)\n\t"    \
	                 "movq %%rbx, 8(%0)\n\t"    \
	                 "movq %%rcx, 16(%0)\n\t"   \
	                 "movq %%rdx, 24(%0)\n\t"   \
	                 "movq %%rsi, 32(%0)\n\t"   \
	                 "movq %%rdi, 40(%0)\n\t"   \
	                 "movq %%rbp, 48(%0)\n\t"   \
	                 "movq %%rsp, 56(%0)\n\t"   \
	                 "movq %%r8, 64(%0)\n\t"    \
	                 "movq %%r9, 72(%0)\n\t"    \
	                 "movq %%r10, 80(%0)\n\t"   \
	                 "movq %%r11, 88(%0)\n\t"   \
	                 "movq %%r12, 96(%0)\n\t"   \
	                 "movq %%r13, 104(%0)\n\t"  \
	                 "movq %%r14, 112(%0)\n\t"  \
	                 "movq %%r15, 120(%0)\n\t"  \
	                 "leaq 0(%%rip), %%rax\n\t" \
	                 "movq %%rax, 128(%0)\n\t"  \
	                 :                          \
	                 : "r"(buf)                 \
	                 : "rax", "memory")

// Raw stack bytes, redzones included: word by word, out of ASan's sight.
__attribute__((no_sanitize_address)) static void copy_stack(void)
{
	uint64_t sp = cap_regs[NS_REG_RSP];
	size_t n = stack_top - sp;
	if (n > STACK_COPY)
		n = STACK_COPY;
	n &= ~(size_t)7;
	const volatile uint64_t *src = (const volatile uint64_t *)(uintptr_t)sp;
	for (size_t i = 0; i < n / 8; i++) {
		uint64_t w = src[i];
		memcpy(stack_copy + i * 8, &w, 8);
	}
	stack_len = n;
}

/* -O0 chain */
__attribute__((noipa)) int unwind_test_c(int x);
__attribute__((noipa)) int unwind_test_b(int x);
__attribute__((noipa)) int unwind_test_a(int x);

__attribute__((noipa)) int unwind_test_c(int x)
{
	cfa_c = (uintptr_t)__builtin_dwarf_cfa();
	ret_c = (uintptr_t)__builtin_return_address(0);
	CAPTURE_REGS(cap_regs);
	copy_stack();
	return x + 1;
}

__attribute__((noipa)) int unwind_test_b(int x)
{
	cfa_b = (uintptr_t)__builtin_dwarf_cfa();
	ret_b = (uintptr_t)__builtin_return_address(0);
	rbp_b = (uintptr_t)__builtin_frame_address(0);
	int r = unwind_test_c(x + 1);
	return r * 2 + sink;
}

__attribute__((noipa)) int unwind_test_a(int x)
{
	cfa_a = (uintptr_t)__builtin_dwarf_cfa();
	ret_a = (uintptr_t)__builtin_return_address(0);
	int r = unwind_test_b(x + 1);
	return r * 3 + sink;
}

/* -O2 chain without frame pointers */
#define O2 __attribute__((noipa, optimize("O2", "omit-frame-pointer")))
O2 int unwind_test_c_o2(int x);
O2 int unwind_test_b_o2(int x);
O2 int unwind_test_a_o2(int x);

O2 int unwind_test_c_o2(int x)
{
	cfa_c = (uintptr_t)__builtin_dwarf_cfa();
	ret_c = (uintptr_t)__builtin_return_address(0);
	CAPTURE_REGS(cap_regs);
	copy_stack();
	return x + sink;
}

O2 int unwind_test_b_o2(int x)
{
	cfa_b = (uintptr_t)__builtin_dwarf_cfa();
	ret_b = (uintptr_t)__builtin_return_address(0);
	int r = unwind_test_c_o2(x + 1);
	return r * 2 + sink;
}

O2 int unwind_test_a_o2(int x)
{
	cfa_a = (uintptr_t)__builtin_dwarf_cfa();
	ret_a = (uintptr_t)__builtin_return_address(0);
	int r = unwind_test_b_o2(x + 1);
	return r * 3 + sink;
}

static void find_stack_top(void)
{
	pthread_attr_t attr;
	void *addr;
	size_t size;
	pthread_getattr_np(pthread_self(), &attr);
	pthread_attr_getstack(&attr, &addr, &size);
	pthread_attr_destroy(&attr);
	stack_top = (uintptr_t)addr + size;
}

/* A frame laid out by hand as frame.h documents: header, register block, memory block,
 * each block 8-byte aligned. */
static uint8_t frame_buf[STACK_COPY + 1024] __attribute__((aligned(8)));

static size_t put_block(size_t off, uint8_t type, uint64_t addr, const void *payload, uint32_t len)
{
	struct ns_frame_block b = {.type = type, .len = len, .addr = addr};
	memcpy(frame_buf + off, &b, sizeof(b));
	off += sizeof(b);
	memcpy(frame_buf + off, payload, len);
	off += len;
	while (off % 8)
		frame_buf[off++] = 0;
	return off;
}

static struct ns_frame make_frame(const uint64_t *regs, size_t mem_len)
{
	struct ns_frame_hdr h = {
	        .magic = NS_FRAME_MAGIC,
	        .version = NS_FRAME_VERSION,
	        .hdr_size = sizeof(h),
	        .tp_id = 7,
	        .addr = regs ? regs[NS_REG_RIP] : 0,
	        .tid = (uint64_t)gettid(),
	};
	size_t off = sizeof(h);
	memset(frame_buf, 0, sizeof(frame_buf));
	if (regs) {
		off = put_block(off, NS_FRAME_BLOCK_REGS, 0, regs, NS_FRAME_NREGS * 8);
		h.nblocks++;
	}
	if (mem_len) {
		off = put_block(off, NS_FRAME_BLOCK_MEM, cap_regs[NS_REG_RSP], stack_copy,
		                (uint32_t)mem_len);
		h.nblocks++;
	}
	h.size = (uint32_t)off;
	memcpy(frame_buf, &h, sizeof(h));
	struct ns_frame f;
	memset(&f, 0, sizeof(f));
	struct ns_err *err = ns_frame_parse(frame_buf, off, &f);
	NS_CHECK_OK(err);
	return f;
}

static char *read_self_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	size_t cap = 1 << 16, len = 0, n;
	char *buf = malloc(cap);
	while (buf && f && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 2)
			buf = realloc(buf, cap *= 2);
	}
	if (f)
		fclose(f);
	if (buf)
		buf[len] = 0;
	return buf;
}

/* Symbols of this executable from `nm -S`, relocated by the load bias the dynamic
 * loader reports. */
struct sym {
	uint64_t start, size;
	char name[64];
};
static struct sym syms[4096];
static size_t nsyms;

static int exe_bias_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	*(uint64_t *)arg = info->dlpi_addr; // the first object is the executable
	return 1;
}

static void load_syms(void)
{
	char exe[4096], cmd[4200];
	uint64_t bias = 0;
	if (nsyms)
		return;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 0] = 0;
	dl_iterate_phdr(exe_bias_cb, &bias);
	snprintf(cmd, sizeof(cmd), "nm -S '%s'", exe);
	char *out = ns_test_capture(cmd);
	NS_CHECK(out != NULL);
	for (char *line = out ? strtok(out, "\n") : NULL; line && nsyms < 4096;
	     line = strtok(NULL, "\n")) {
		unsigned long long a, s;
		char type, name[64];
		if (sscanf(line, "%llx %llx %c %63s", &a, &s, &type, name) == 4 &&
		    (type == 't' || type == 'T')) {
			syms[nsyms] = (struct sym){.start = a + bias, .size = s};
			memcpy(syms[nsyms].name, name, sizeof(name));
			nsyms++;
		}
	}
	free(out);
}

static const char *sym_at(uint64_t pc)
{
	load_syms();
	for (size_t i = 0; i < nsyms; i++)
		if (pc >= syms[i].start && pc < syms[i].start + syms[i].size)
			return syms[i].name;
	return "?";
}

struct result {
	struct ns_arena arena;
	struct ns_unwind_frame *fr;
	size_t n;
};

static void run_unwind(size_t mem_len, unsigned max, struct result *r)
{
	char *text = read_self_maps();
	struct ns_procmap m;
	struct ns_viewmem *vm = NULL;
	struct ns_frame f = make_frame(cap_regs, mem_len);

	ns_arena_init(&r->arena);
	r->fr = NULL;
	r->n = 0;
	NS_CHECK_OK(ns_procmap_parse(text, &m));
	NS_CHECK_OK(ns_viewmem_create(&m, &vm));
	ns_procmap_deinit(&m); // the viewmem keeps its own copy
	free(text);
	NS_CHECK_OK(ns_unwind(&f, vm, max, &r->arena, &r->fr, &r->n));
	ns_viewmem_destroy(vm);
}

static void check_chain(const char *a, const char *b, const char *c, const char *caller, bool o0)
{
	struct result r;
	run_unwind(stack_len, 64, &r);
	NS_CHECK(r.n >= 4);
	if (r.n < 4) {
		ns_arena_deinit(&r.arena);
		return;
	}
	// Frame 0: exactly the captured registers.
	NS_CHECK_INT(r.fr[0].pc, cap_regs[NS_REG_RIP]);
	NS_CHECK_INT(r.fr[0].regs[7], cap_regs[NS_REG_RSP]);
	NS_CHECK_INT(r.fr[0].regs[3], cap_regs[NS_REG_RBX]);
	NS_CHECK_INT(r.fr[0].regs[1], cap_regs[NS_REG_RDX]);
	NS_CHECK_INT(r.fr[0].regs[2], cap_regs[NS_REG_RCX]);
	NS_CHECK_INT(r.fr[0].valid, (1u << NS_UNWIND_NREGS) - 1);
	NS_CHECK_STR(sym_at(r.fr[0].pc), c);
	// Callers: return addresses as the compiler saw them, in the right functions.
	NS_CHECK_INT(r.fr[1].pc, ret_c);
	NS_CHECK_INT(r.fr[2].pc, ret_b);
	NS_CHECK_INT(r.fr[3].pc, ret_a);
	NS_CHECK_STR(sym_at(r.fr[1].pc - 1), b);
	NS_CHECK_STR(sym_at(r.fr[2].pc - 1), a);
	NS_CHECK_STR(sym_at(r.fr[3].pc - 1), caller);
	// CFAs: frame k's CFA is the caller's rsp after the return.
	NS_CHECK(r.fr[0].cfa_valid && r.fr[1].cfa_valid && r.fr[2].cfa_valid);
	NS_CHECK_INT(r.fr[0].cfa, cfa_c);
	NS_CHECK_INT(r.fr[1].cfa, cfa_b);
	NS_CHECK_INT(r.fr[2].cfa, cfa_a);
	NS_CHECK_INT(r.fr[1].regs[7], cfa_c);
	NS_CHECK_INT(r.fr[1].regs[16], ret_c);
	// Callers know callee-saved registers, rsp and rip only.
	for (size_t i = 1; i < r.n; i++) {
		NS_CHECK((r.fr[i].valid & (1u << 0 | 1u << 1 | 1u << 2 | 1u << 4 | 1u << 5 |
		                           1u << 8 | 1u << 9 | 1u << 10 | 1u << 11)) == 0);
		NS_CHECK(r.fr[i].valid & (1u << 7 | 1u << 16));
	}
	if (o0) {
		// With frame pointers, b's rbp is its frame address; c saved it.
		NS_CHECK(r.fr[1].valid & (1u << 6));
		NS_CHECK_INT(r.fr[1].regs[6], rbp_b);
		NS_CHECK_INT(r.fr[0].cfa, cap_regs[NS_REG_RBP] + 16);
	}
	// Then the test harness's main() and libc's start code (another ELF file, whose
	// .eh_frame_hdr is found through the map): dladdr names the file.
	bool saw_main = false, saw_libc = false;
	for (size_t i = 4; i < r.n; i++) {
		Dl_info di;
		saw_main |= strcmp(sym_at(r.fr[i].pc - 1), "main") == 0;
		if (dladdr((void *)(uintptr_t)(r.fr[i].pc - 1), &di) && di.dli_fname)
			saw_libc |= strstr(di.dli_fname, "libc.so") != NULL;
	}
	NS_CHECK(saw_main);
	NS_CHECK(saw_libc);
	NS_CHECK(r.n < 64);
	NS_CHECK(!r.fr[r.n - 1].cfa_valid || r.fr[r.n - 1].pc != 0);
	ns_arena_deinit(&r.arena);
}

NS_TEST(test_unwind__o0_chain)
{
	find_stack_top();
	sink = 0;
	unwind_test_a(1);
	check_chain("unwind_test_a", "unwind_test_b", "unwind_test_c", "test_unwind__o0_chain",
	            true);
}

NS_TEST(test_unwind__o2_chain_without_frame_pointers)
{
	find_stack_top();
	sink = 0;
	unwind_test_a_o2(1);
	check_chain("unwind_test_a_o2", "unwind_test_b_o2", "unwind_test_c_o2",
	            "test_unwind__o2_chain_without_frame_pointers", false);
}

NS_TEST(test_unwind__max_frames)
{
	find_stack_top();
	unwind_test_a(1);
	struct result r;
	run_unwind(stack_len, 2, &r);
	NS_CHECK_INT(r.n, 2);
	if (r.n == 2) {
		NS_CHECK_INT(r.fr[1].pc, ret_c);
		// One more step gives the last frame's CFA.
		NS_CHECK(r.fr[1].cfa_valid);
		NS_CHECK_INT(r.fr[1].cfa, cfa_b);
	}
	ns_arena_deinit(&r.arena);
}

NS_TEST(test_unwind__short_stack_stops_quietly)
{
	find_stack_top();
	unwind_test_a_o2(1);
	struct result full, r;
	run_unwind(stack_len, 64, &full);
	run_unwind(256, 64, &r);
	NS_CHECK(r.n >= 1);
	NS_CHECK(r.n < full.n);
	if (r.n >= 1)
		NS_CHECK_INT(r.fr[0].pc, cap_regs[NS_REG_RIP]);
	// Whatever was found agrees with the full unwind.
	for (size_t i = 0; i < r.n && i < full.n; i++)
		NS_CHECK_INT(r.fr[i].pc, full.fr[i].pc);
	ns_arena_deinit(&full.arena);
	ns_arena_deinit(&r.arena);

	// No stack at all: frame 0 only, from the registers.
	run_unwind(0, 64, &r);
	NS_CHECK_INT(r.n, 1);
	NS_CHECK_INT(r.fr[0].pc, cap_regs[NS_REG_RIP]);
	NS_CHECK(!r.fr[0].cfa_valid);
	ns_arena_deinit(&r.arena);
}

NS_TEST(test_unwind__no_registers)
{
	struct ns_procmap m = {0};
	struct ns_viewmem *vm = NULL;
	struct ns_arena arena;
	struct ns_unwind_frame *fr = NULL;
	size_t n = 99;

	find_stack_top();
	unwind_test_a(1);
	struct ns_frame f = make_frame(NULL, 64);
	ns_arena_init(&arena);
	NS_CHECK_OK(ns_viewmem_create(&m, &vm));
	struct ns_err *err = ns_unwind(&f, vm, 8, &arena, &fr, &n);
	NS_CHECK(err != NULL);
	if (err) {
		NS_CHECK_INT(err->code, NS_ERR_NOT_FOUND);
		NS_CHECK(strstr(err->msg, "tracepoint 7") != NULL);
		ns_err_destroy(err);
	}
	NS_CHECK_INT(n, 99);
	ns_viewmem_destroy(vm);
	ns_arena_deinit(&arena);
}
