/* View memory over this process's own map: what comes from the frame, what comes from
 * files, and what never shows. The expected bytes are the live bytes of this process. */
#define _GNU_SOURCE
#include "base/test.h"
#include "unwind/unwind.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char rodata_msg[] = "hello from .rodata of viewmem_test";
int viewmem_test_counter = 5;
// Pointers in a PIE: .data.rel.ro, relocated by ld.so, then made read-only (RELRO).
static const char *const relro_table[] = {"alpha", "beta"};
const char *const *viewmem_test_table = relro_table;

__attribute__((noinline)) int viewmem_test_fn(int x);
__attribute__((noinline)) int viewmem_test_fn(int x)
{
	return x * 7 + viewmem_test_counter;
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

static struct ns_viewmem *self_viewmem(struct ns_procmap *m)
{
	char *text = read_self_maps();
	struct ns_viewmem *vm = NULL;
	NS_CHECK_OK(ns_procmap_parse(text, m));
	NS_CHECK_OK(ns_viewmem_create(m, &vm));
	free(text);
	return vm;
}

static uint8_t frame_buf[4096] __attribute__((aligned(8)));

/* One memory block at @addr, laid out by hand as frame.h documents. */
static struct ns_frame frame_with(uint64_t addr, const void *bytes, uint32_t len)
{
	struct ns_frame_hdr h = {
	        .magic = NS_FRAME_MAGIC,
	        .version = NS_FRAME_VERSION,
	        .hdr_size = sizeof(h),
	        .nblocks = 1,
	};
	struct ns_frame_block b = {.type = NS_FRAME_BLOCK_MEM, .len = len, .addr = addr};
	size_t off = sizeof(h);
	memset(frame_buf, 0, sizeof(frame_buf));
	memcpy(frame_buf + off, &b, sizeof(b));
	off += sizeof(b);
	memcpy(frame_buf + off, bytes, len);
	off = (off + len + 7) & ~(size_t)7;
	h.size = (uint32_t)off;
	memcpy(frame_buf, &h, sizeof(h));
	struct ns_frame f;
	memset(&f, 0, sizeof(f));
	NS_CHECK_OK(ns_frame_parse(frame_buf, off, &f));
	return f;
}

NS_TEST(test_viewmem__file_backed_readonly)
{
	struct ns_procmap m;
	struct ns_viewmem *vm = self_viewmem(&m);
	char buf[sizeof(rodata_msg)];
	uint8_t code[16];

	memset(buf, 0, sizeof(buf));
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, (uintptr_t)rodata_msg, buf, sizeof(buf)),
	             sizeof(buf));
	NS_CHECK_STR(buf, rodata_msg);
	// Code is not relocated on x86-64: the file's bytes are the live bytes.
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, (uintptr_t)&viewmem_test_fn, code, sizeof(code)),
	             sizeof(code));
	NS_CHECK(memcmp(code, (const void *)&viewmem_test_fn, sizeof(code)) == 0);
	// libc's code too (another file, another cached descriptor).
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, (uintptr_t)&strlen, code, sizeof(code)),
	             sizeof(code));
	NS_CHECK(memcmp(code, (const void *)&strlen, sizeof(code)) == 0);
	ns_viewmem_destroy(vm);
	ns_procmap_deinit(&m);
}

NS_TEST(test_viewmem__never_live_memory)
{
	struct ns_procmap m;
	struct ns_viewmem *vm = self_viewmem(&m);
	uint8_t buf[16];
	int local = 3;
	void *heap = malloc(32);

	// Writable data, the heap, the stack: only a frame may show them.
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, (uintptr_t)&viewmem_test_counter, buf, 4), 0);
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, (uintptr_t)heap, buf, 8), 0);
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, (uintptr_t)&local, buf, 4), 0);
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, 0, buf, 8), 0);
	// RELRO is read-only now, but ld.so wrote relocated pointers into it: the file
	// holds other bytes, so it must not show.
	const struct ns_procmap_entry *e = ns_procmap_find(&m, (uintptr_t)&relro_table[0]);
	NS_CHECK(e != NULL && !e->writable);
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, (uintptr_t)&relro_table[0], buf, 8), 0);
	free(heap);
	ns_viewmem_destroy(vm);
	ns_procmap_deinit(&m);
	(void)local;
}

NS_TEST(test_viewmem__frame_first_then_file)
{
	struct ns_procmap m;
	struct ns_viewmem *vm = self_viewmem(&m);
	char buf[sizeof(rodata_msg)];
	uint64_t stackval = 0x1122334455667788ull, got = 0;

	// Captured bytes win over the file and continue into file bytes.
	struct ns_frame f = frame_with((uintptr_t)rodata_msg, "HELL", 4);
	memset(buf, 0, sizeof(buf));
	NS_CHECK_INT(ns_viewmem_read(vm, &f, (uintptr_t)rodata_msg, buf, sizeof(buf)), sizeof(buf));
	NS_CHECK(memcmp(buf, "HELL", 4) == 0);
	NS_CHECK_STR(buf + 4, rodata_msg + 4);

	// Stack bytes only through the frame, and no further than captured.
	f = frame_with((uintptr_t)&stackval, &stackval, 8);
	NS_CHECK_INT(ns_viewmem_read(vm, &f, (uintptr_t)&stackval, &got, 8), 8);
	NS_CHECK_INT(got, 0x1122334455667788ull);
	uint8_t two[16];
	NS_CHECK_INT(ns_viewmem_read(vm, &f, (uintptr_t)&stackval + 4, two, 16), 4);
	ns_viewmem_destroy(vm);
	ns_procmap_deinit(&m);
}

NS_TEST(test_viewmem__handmade_map_and_deleted_file)
{
	// The first page of any ELF file starts with "\x7f" "ELF" (ELF gABI, e_ident).
	const char *text = "10000-11000 r--p 00000000 08:01 1                  /bin/sh\n"
	                   "20000-21000 r--p 00000000 08:01 2                  /bin/sh (deleted)\n"
	                   "30000-31000 rw-p 00000000 08:01 1                  /bin/sh\n";
	struct ns_procmap m;
	struct ns_viewmem *vm = NULL;
	uint8_t buf[8];

	NS_CHECK_OK(ns_procmap_parse(text, &m));
	NS_CHECK_OK(ns_viewmem_create(&m, &vm));
	ns_procmap_deinit(&m); // the viewmem has its own copy
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, 0x10000, buf, 4), 4);
	NS_CHECK(memcmp(buf,
	                "\x7f"
	                "ELF",
	                4) == 0);
	// Reads stop at the end of the mapping.
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, 0x10ffc, buf, 8), 4);
	// Whatever has the name now is not what was mapped.
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, 0x20000, buf, 4), 0);
	// Writable mappings never come from the file.
	NS_CHECK_INT(ns_viewmem_read(vm, NULL, 0x30000, buf, 4), 0);
	ns_viewmem_destroy(vm);
	ns_viewmem_destroy(NULL);
}
