#define _GNU_SOURCE
#include "base/mem.h"
#include "base/test.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
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

/* ns_mem_probe against the kernel's answer (process_vm_readv through ns_mem_read*). */

static struct sigaction old_segv, old_bus;
static int foreign_faults;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	if (ns_mem_probe_fixup(sig, si, uc))
		return;
	foreign_faults++;
	sigaction(sig, sig == SIGSEGV ? &old_segv : &old_bus, NULL); // then re-fault: default
}

static void probe_handlers(bool on)
{
	if (!on) {
		sigaction(SIGSEGV, &old_segv, NULL);
		sigaction(SIGBUS, &old_bus, NULL);
		return;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
}

NS_TEST(test_mem__probe_copies_like_the_kernel)
{
	probe_handlers(true);
	long pg = sysconf(_SC_PAGESIZE);
	unsigned char *m = mmap(NULL, (size_t)pg * 3, PROT_READ | PROT_WRITE,
	                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	NS_CHECK(m != MAP_FAILED);
	for (long i = 0; i < pg * 2; i++)
		m[i] = (unsigned char)(i * 7 + 3);
	mprotect(m + pg * 2, (size_t)pg, PROT_NONE); // a guard page after two readable ones
	static const size_t lens[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 31, 64, 100, 4096};
	unsigned mismatches = 0, cases = 0;
	for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
		// Start at every offset around the first page boundary and the guard page.
		for (long start = pg - 24; start <= pg * 2 + 8; start++) {
			if (start == pg + 8 && pg * 2 - 24 - (long)lens[li] > start)
				start = pg * 2 - 24 - (long)lens[li];
			if (start < 0)
				continue;
			unsigned char a[4096 + 16], b[4096 + 16];
			memset(a, 0xAA, sizeof(a));
			memset(b, 0x55, sizeof(b));
			uint64_t addr = (uintptr_t)(m + start);
			size_t want = ns_mem_read_partial(b, addr, lens[li]);
			size_t got = ns_mem_probe(a, addr, lens[li]);
			cases++;
			if (got != want || memcmp(a, b, got) != 0)
				mismatches++;
		}
	}
	NS_CHECK(cases > 500);
	NS_CHECK_INT(mismatches, 0);
	NS_CHECK_INT(foreign_faults, 0);
	munmap(m, (size_t)pg * 3);
	probe_handlers(false);
}

NS_TEST(test_mem__probe_survives_unmapped_null_and_sigbus)
{
	probe_handlers(true);
	long pg = sysconf(_SC_PAGESIZE);
	char buf[64];
	NS_CHECK_INT(ns_mem_probe(buf, 0, 8), 0);
	NS_CHECK_INT(ns_mem_probe(buf, 0x10, 4), 0);
	NS_CHECK_INT(ns_mem_probe(buf, 0x10, 13), 0);
	NS_CHECK_INT(ns_mem_probe(buf, UINT64_MAX - 3, 8), 0);
	void *gone = mmap(NULL, (size_t)pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	NS_CHECK(gone != MAP_FAILED);
	munmap(gone, (size_t)pg);
	NS_CHECK_INT(ns_mem_probe(buf, (uintptr_t)gone, 8), 0);
	NS_CHECK_INT(ns_mem_probe(buf, (uintptr_t)gone + 1, 3), 0);

	// Past the end of a mapped file: SIGBUS, not SIGSEGV.
	char path[] = "/tmp/ns_mem_probe_XXXXXX";
	int fd = mkstemp(path);
	NS_CHECK(fd >= 0);
	unlink(path);
	NS_CHECK_INT(write(fd, "hello", 5), 5);
	char *f = mmap(NULL, (size_t)pg * 2, PROT_READ, MAP_SHARED, fd, 0);
	NS_CHECK(f != MAP_FAILED);
	NS_CHECK_INT(ns_mem_probe(buf, (uintptr_t)f, 5), 5);
	NS_CHECK(memcmp(buf, "hello", 5) == 0);
	NS_CHECK_INT(ns_mem_probe(buf, (uintptr_t)f + (uintptr_t)pg, 8), 0);
	NS_CHECK_INT(ns_mem_probe(buf, (uintptr_t)f + (uintptr_t)pg - 6, 16), 6);
	NS_CHECK_INT(ns_mem_read_partial(buf, (uintptr_t)f + (uintptr_t)pg - 6, 16), 6);
	munmap(f, (size_t)pg * 2);
	close(fd);
	NS_CHECK_INT(foreign_faults, 0);
	probe_handlers(false);
}

NS_TEST(test_mem__probe_fixup_claims_only_its_own_faults)
{
	ucontext_t uc;
	memset(&uc, 0, sizeof(uc));
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	si.si_code = SEGV_MAPERR;
	uc.uc_mcontext.gregs[REG_RIP] = (greg_t)(uintptr_t)&test_mem__probe_fixup_claims_only_its_own_faults;
	NS_CHECK(!ns_mem_probe_fixup(SIGSEGV, &si, &uc));
	NS_CHECK(!ns_mem_probe_fixup(SIGSEGV, NULL, &uc));
	// A kill(SIGSEGV) (si_code SI_USER) at the probe's own pc is not a fault of it.
	extern const char ns_mem_probe__rep[];
	uc.uc_mcontext.gregs[REG_RIP] = (greg_t)(uintptr_t)ns_mem_probe__rep;
	si.si_code = SI_USER;
	NS_CHECK(!ns_mem_probe_fixup(SIGSEGV, &si, &uc));
	NS_CHECK(!ns_mem_probe_fixup(SIGILL, &si, &uc));
	si.si_code = SEGV_MAPERR;
	NS_CHECK(!ns_mem_probe_fixup(SIGILL, &si, &uc));
	NS_CHECK(ns_mem_probe_fixup(SIGSEGV, &si, &uc));
	NS_CHECK(uc.uc_mcontext.gregs[REG_RIP] != (greg_t)(uintptr_t)ns_mem_probe__rep);
}
