/* core/base fault-free memory access. The agent never dereferences an address that
 * came from the target: it reads through ns_mem_read(), which returns a status instead
 * of taking SIGSEGV. Async-signal-safe. */
#ifndef NS_BASE_MEM_H
#define NS_BASE_MEM_H

#include <signal.h>
#include <stdbool.h>
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

/* Fault-recovering reads, for a caller that owns the process's SIGSEGV and SIGBUS
 * handling (the agent: docs/jump-pads.md "Reading the program's memory"). They cost a
 * few loads instead of a system call, but are safe only while both hold:
 * - the process's SIGSEGV and SIGBUS handlers call ns_mem_probe_fixup first, and
 * - neither signal is blocked in the calling thread (a fault on a blocked one kills
 *   the process: the kernel forces the default action). */
/** Copy up to @len bytes at @addr into @dst with plain loads; a load that faults
 * ends the copy. Returns the bytes copied: @len, or the length of the readable prefix.
 * Calls nothing. */
size_t ns_mem_probe(void *dst, uint64_t addr, size_t len);
/** For a SIGSEGV/SIGBUS handler (@sig, @si, @ucontext as it got them): if the fault
 * is a load of ns_mem_probe, make that call return early (edits @ucontext) and
 * return true; false for any other signal or fault. */
bool ns_mem_probe_fixup(int sig, const siginfo_t *si, void *ucontext);

#endif
