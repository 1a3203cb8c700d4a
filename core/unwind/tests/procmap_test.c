#define _GNU_SOURCE
#include "base/test.h"
#include "unwind/unwind.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

static char *read_self_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	size_t cap = 1 << 16, len = 0, n;
	char *buf = malloc(cap);
	while (buf && f && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 2) {
			buf = realloc(buf, cap *= 2);
		}
	}
	if (f)
		fclose(f);
	if (buf)
		buf[len] = 0;
	return buf;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

__attribute__((noinline)) int procmap_test_marker(int x);
__attribute__((noinline)) int procmap_test_marker(int x)
{
	return x * 3 + 1;
}

static char self_path[4096];

static const char *self_exe(void)
{
	ssize_t n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
	self_path[n > 0 ? n : 0] = 0;
	return self_path;
}

NS_TEST(test_procmap__parse_self)
{
	char *text = read_self_maps();
	struct ns_procmap m;
	int local = 5;
	void *heap = malloc(64);

	NS_CHECK(text != NULL);
	NS_CHECK_OK(ns_procmap_parse(text, &m));
	NS_CHECK_INT(m.n, count_lines(text));
	for (size_t i = 1; i < m.n; i++)
		NS_CHECK(m.v[i - 1].end <= m.v[i].start);

	// The stack holds our local; it is rw and called [stack].
	const struct ns_procmap_entry *e = ns_procmap_find(&m, (uintptr_t)&local);
	NS_CHECK(e != NULL);
	if (e) {
		NS_CHECK_STR(e->path, "[stack]");
		NS_CHECK(e->readable && e->writable && !e->executable);
		NS_CHECK(!e->deleted);
	}
#ifndef __SANITIZE_ADDRESS__ // ASan's allocator has its own regions
	// A small malloc is in [heap] (glibc's brk arena for the main thread).
	e = ns_procmap_find(&m, (uintptr_t)heap);
	NS_CHECK(e != NULL);
	if (e) {
		NS_CHECK_STR(e->path, "[heap]");
		NS_CHECK(e->readable && e->writable);
	}
#endif
	// Our own code: the r-xp mapping of the test executable.
	e = ns_procmap_find(&m, (uintptr_t)&procmap_test_marker);
	NS_CHECK(e != NULL);
	if (e) {
		NS_CHECK_STR(e->path, self_exe());
		NS_CHECK(e->readable && !e->writable && e->executable);
		NS_CHECK((uintptr_t)&procmap_test_marker >= e->start);
		NS_CHECK((uintptr_t)&procmap_test_marker < e->end);
	}
	NS_CHECK(ns_procmap_find(&m, 0) == NULL);
	NS_CHECK(ns_procmap_find(&m, UINT64_MAX) == NULL);
	ns_procmap_deinit(&m);
	free(heap);
	free(text);
}

struct phdr_ctx {
	uintptr_t addr;
	uintptr_t bias;
	int found;
};

static int phdr_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct phdr_ctx *c = arg;
	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *p = &info->dlpi_phdr[i];
		if (p->p_type == PT_LOAD && c->addr >= info->dlpi_addr + p->p_vaddr &&
		    c->addr < info->dlpi_addr + p->p_vaddr + p->p_memsz) {
			c->bias = info->dlpi_addr;
			c->found = 1;
			return 1;
		}
	}
	return 0;
}

NS_TEST(test_procmap__load_bias_self_and_libc)
{
	char *text = read_self_maps();
	struct ns_procmap m;
	uint64_t bias = 1;

	NS_CHECK_OK(ns_procmap_parse(text, &m));

	// The executable: the dynamic loader's l_addr (dl_iterate_phdr) and, independently,
	// the runtime address of the program headers (AT_PHDR) minus PT_PHDR's p_vaddr.
	struct phdr_ctx pc = {.addr = (uintptr_t)&procmap_test_marker};
	dl_iterate_phdr(phdr_cb, &pc);
	NS_CHECK(pc.found);
	NS_CHECK_INT(ns_procmap_load_bias(&m, self_exe(), &bias), 0);
	NS_CHECK_INT(bias, pc.bias);
	const ElfW(Phdr) *phdr = (const void *)getauxval(AT_PHDR);
	size_t phnum = getauxval(AT_PHNUM);
	for (size_t i = 0; i < phnum; i++)
		if (phdr[i].p_type == PT_PHDR)
			NS_CHECK_INT(bias, (uintptr_t)phdr - phdr[i].p_vaddr);

	// libc: dladdr's dli_fbase is the object's base = bias for a DSO.
	Dl_info di;
	NS_CHECK(dladdr((void *)&strlen, &di) != 0);
	const struct ns_procmap_entry *e = ns_procmap_find(&m, (uintptr_t)di.dli_fbase);
	NS_CHECK(e != NULL && e->path != NULL);
	if (e && e->path) {
		NS_CHECK_INT(ns_procmap_load_bias(&m, e->path, &bias), 0);
		NS_CHECK_INT(bias, (uintptr_t)di.dli_fbase);
	}
	NS_CHECK_INT(ns_procmap_load_bias(&m, "/no/such/file.so", &bias), -1);
	ns_procmap_deinit(&m);
	free(text);
}

// A non-PIE executable links at 0x400000 and is mapped there: bias 0.
NS_TEST(test_procmap__load_bias_non_pie)
{
	char path[] = "/tmp/ns_procmap_nopie_XXXXXX";
	int fd = mkstemp(path);
	NS_CHECK(fd >= 0);
	close(fd);
	char cmd[256];
	snprintf(cmd, sizeof(cmd),
	         "echo 'int main(void){return 0;}' | cc -no-pie -x c - -o %s 2>&1 && "
	         "readelf -lW %s | awk '$1==\"LOAD\"{print $3; exit}'",
	         path, path);
	char *out = ns_test_capture(cmd);
	NS_CHECK(out != NULL);
	uint64_t first_vaddr = out ? strtoull(out, NULL, 16) : 0;
	NS_CHECK_INT(first_vaddr, 0x400000);

	char text[1024];
	snprintf(text, sizeof(text),
	         "00400000-00401000 r--p 00000000 fe:00 1234                       %s\n"
	         "00401000-00402000 r-xp 00001000 fe:00 1234                       %s\n",
	         path, path);
	struct ns_procmap m;
	uint64_t bias = 1;
	NS_CHECK_OK(ns_procmap_parse(text, &m));
	NS_CHECK_INT(ns_procmap_load_bias(&m, path, &bias), 0);
	NS_CHECK_INT(bias, 0);
	ns_procmap_deinit(&m);
	unlink(path);
	free(out);
}

NS_TEST(test_procmap__handmade_paths)
{
	const char *text =
	        "7f0000001000-7f0000002000 r-xp 00001000 08:01 42                         /opt/My "
	        "App/lib foo.so\n"
	        "7f0000000000-7f0000001000 r--p 00000000 08:01 42                         /opt/My "
	        "App/lib foo.so\n"
	        "7f0000003000-7f0000004000 rw-p 00000000 00:00 0 \n"
	        "7f0000004000-7f0000005000 r--p 00000000 08:01 43    /tmp/gone lib.so (deleted)\n"
	        "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]";
	struct ns_procmap m;
	uint64_t bias = 0;

	NS_CHECK_OK(ns_procmap_parse(text, &m));
	NS_CHECK_INT(m.n, 5);
	// Sorted by address.
	NS_CHECK_INT(m.v[0].start, 0x7f0000000000);
	NS_CHECK_STR(m.v[0].path, "/opt/My App/lib foo.so");
	NS_CHECK_INT(m.v[1].offset, 0x1000);
	NS_CHECK(m.v[1].executable && m.v[1].readable && !m.v[1].writable);
	NS_CHECK(m.v[2].path == NULL);
	NS_CHECK(m.v[2].writable);
	NS_CHECK_STR(m.v[3].path, "/tmp/gone lib.so (deleted)");
	NS_CHECK(m.v[3].deleted);
	NS_CHECK(!m.v[0].deleted);
	NS_CHECK_STR(m.v[4].path, "[stack]");
	NS_CHECK_INT(m.v[4].end, 0x7ffc00021000);

	const struct ns_procmap_entry *e = ns_procmap_find(&m, 0x7f0000001fff);
	NS_CHECK(e == &m.v[1]);
	NS_CHECK(ns_procmap_find(&m, 0x7f0000002000) == NULL);
	NS_CHECK(ns_procmap_find(&m, 0x7f0000003000) == &m.v[2]);
	// Files that cannot be read: assume a DSO (bias = start of the offset-0 mapping).
	NS_CHECK_INT(ns_procmap_load_bias(&m, "/opt/My App/lib foo.so", &bias), 0);
	NS_CHECK_INT(bias, 0x7f0000000000);
	NS_CHECK_INT(ns_procmap_load_bias(&m, "/tmp/gone lib.so", &bias), 0);
	NS_CHECK_INT(bias, 0x7f0000004000);
	NS_CHECK_INT(ns_procmap_load_bias(&m, "/opt/My App", &bias), -1);
	ns_procmap_deinit(&m);
}

NS_TEST(test_procmap__malformed)
{
	struct ns_procmap m;
	struct ns_err *err =
	        ns_procmap_parse("00400000-00401000 r-xp 0 08:01 42 /x\nbogus line\n", &m);
	NS_CHECK(err != NULL);
	if (err) {
		NS_CHECK_INT(err->code, NS_ERR_FORMAT);
		NS_CHECK(strstr(err->msg, "line 2") != NULL);
		ns_err_destroy(err);
	}
	NS_CHECK_OK(ns_procmap_parse("", &m));
	NS_CHECK_INT(m.n, 0);
	ns_procmap_deinit(&m);
}
