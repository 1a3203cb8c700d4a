#include "base/mem.h"
#include "base/test.h"

#include <sys/mman.h>
#include <unistd.h>

NS_TEST(test_mem__reads_own_memory)
{
	long v = 0x1122334455667788L, out = 0;
	NS_CHECK_INT(ns_mem_read(&out, (uintptr_t)&v, sizeof(v)), 0);
	NS_CHECK_INT(out, v);
}

NS_TEST(test_mem__null_and_unmapped_do_not_fault)
{
	char buf[16];
	NS_CHECK_INT(ns_mem_read(buf, 0, 8), -1);
	NS_CHECK_INT(ns_mem_read(buf, 0x10, 8), -1);
	NS_CHECK_INT(ns_mem_read(buf, UINT64_MAX - 3, 8), -1);
	NS_CHECK_INT(ns_mem_read(buf, 0, 0), 0);
}

NS_TEST(test_mem__partial_read_stops_at_guard_page)
{
	long pg = sysconf(_SC_PAGESIZE);
	char *m = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	               -1, 0);
	NS_CHECK(m != MAP_FAILED);
	mprotect(m + pg, (size_t)pg, PROT_NONE);
	m[pg - 1] = 'z';
	char buf[64];
	size_t n = ns_mem_read_partial(buf, (uintptr_t)(m + pg - 10), sizeof(buf));
	NS_CHECK_INT(n, 10);
	NS_CHECK_INT(buf[9], 'z');
	NS_CHECK_INT(ns_mem_read(buf, (uintptr_t)(m + pg - 10), 11), -1);
	munmap(m, (size_t)pg * 2);
}
