/* core/base fault-free memory access. The agent never dereferences an address that
 * came from the target: it reads through ns_mem_read(), which returns a status instead
 * of taking SIGSEGV. Async-signal-safe. */
#ifndef NS_BASE_MEM_H
#define NS_BASE_MEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/** Copy @len bytes at @addr of this process into @dst. 0 on success, -1 if any byte
 * is unreadable (nothing is promised about @dst then). Signal-safe, never faults. */
int ns_mem_read(void *dst, uint64_t addr, size_t len);
/** Like ns_mem_read, but copies the readable prefix; returns its length (0..len). */
size_t ns_mem_read_partial(void *dst, uint64_t addr, size_t len);
/** Same against another process @pid (needs ptrace-read permission); bytes copied. */
size_t ns_mem_read_pid(pid_t pid, void *dst, uint64_t addr, size_t len);

#endif
