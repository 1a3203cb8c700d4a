/* Reachable from the trap handler: no malloc, no locks, no stdio. */
#define _GNU_SOURCE
#include "base/mem.h"

#include <errno.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static size_t read_pid(pid_t pid, void *dst, uint64_t addr, size_t len)
{
	// process_vm_readv on ourselves returns EFAULT instead of raising SIGSEGV, and
	// stops at the first unreadable page: it is the fault-free read the agent needs.
	size_t done = 0;
	while (done < len) {
		struct iovec local = {(char *)dst + done, len - done};
		struct iovec remote = {(void *)(uintptr_t)(addr + done), len - done};
		ssize_t n = syscall(SYS_process_vm_readv, pid, &local, 1UL, &remote, 1UL, 0UL);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			// A read spanning into an unmapped page fails whole: retry
			// up to the page boundary so the readable prefix is kept.
			uint64_t a = addr + done;
			size_t to_page = 4096 - (size_t)(a & 4095);
			if (to_page < len - done) {
				local.iov_len = remote.iov_len = to_page;
				n = syscall(SYS_process_vm_readv, pid, &local, 1UL, &remote, 1UL,
				            0UL);
				if (n > 0) {
					done += (size_t)n;
					continue;
				}
			}
			break;
		}
		done += (size_t)n;
	}
	return done;
}

size_t ns_mem_read_pid(pid_t pid, void *dst, uint64_t addr, size_t len)
{
	return read_pid(pid, dst, addr, len);
}

size_t ns_mem_read_partial(void *dst, uint64_t addr, size_t len)
{
	int saved = errno;
	size_t n = read_pid((pid_t)syscall(SYS_getpid), dst, addr, len);
	errno = saved;
	return n;
}

int ns_mem_read(void *dst, uint64_t addr, size_t len)
{
	if (len == 0)
		return 0;
	if (addr + len < addr)
		return -1;
	return ns_mem_read_partial(dst, addr, len) == len ? 0 : -1;
}
