/* Reading the program's memory at a hit without a system call (docs/jump-pads.md,
 * "Reading the program's memory"): ns_mem_probe's plain loads, made safe by the
 * agent's SIGSEGV/SIGBUS handlers, which turn a fault of a probe into a short read
 * and hand every other fault to the program's own action exactly as if the agent
 * were not there. Used only when all of these hold at the hit:
 * - the handlers are the process's current ones (checked by the control thread every
 *   tick; a fault that is not ours switches probes off until it re-installs them),
 * - the hitting thread does not block SIGSEGV or SIGBUS (a fault on a blocked one
 *   would kill the process),
 * - the address lies in a mapping the agent's table knows as ordinary memory (not a
 *   device), so a probe faults only if the program unmapped it since the table was
 *   read. Otherwise the read is process_vm_readv (ns_mem_read), as before.
 * The handler runs in any thread at any time: async-signal-safe calls only. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent/agent_internal.h"
#include "base/mem.h"

_Atomic bool ns_agent__probe_on;
_Atomic bool ns_agent__maps_stale;

// The program's actions for SIGSEGV [0] and SIGBUS [1], the ones a fault that is not
// a probe's goes to. Written by the control thread only while ours is not installed.
static struct sigaction prev[2];
static const int sigs[2] = {SIGSEGV, SIGBUS};

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	if (ns_mem_probe_fixup(sig, si, uc)) {
		struct ns_agent_shm *shm = __atomic_load_n(&ns_agent__g.shm, __ATOMIC_ACQUIRE);
		if (shm)
			atomic_fetch_add_explicit(&shm->probe_faults, 1, memory_order_relaxed);
		return;
	}
	// Not a probe: from now on the program's own action, and the instruction faults
	// again into it (with its flags, mask and stack); probes stay off until the
	// control thread has put this handler back.
	atomic_store_explicit(&ns_agent__probe_on, false, memory_order_relaxed);
	sigaction(sig, &prev[sig == SIGBUS], NULL);
	if (si && si->si_code <= 0) {
		// Sent (kill, tgkill), not raised by an instruction: nothing faults again,
		// so queue it again, for the program's action once this handler returns.
		syscall(SYS_rt_tgsigqueueinfo, syscall(SYS_getpid), syscall(SYS_gettid), sig, si);
	}
}

// SIGSEGV or SIGBUS is in @set (the kernel's 64-bit mask: bit n-1 for signal n).
static bool blocks_faults(uint64_t set)
{
	return (set & (1ull << (SIGSEGV - 1))) || (set & (1ull << (SIGBUS - 1)));
}

static bool ours(const struct sigaction *sa)
{
	return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == on_fault;
}

void ns_agent__probe_tick(void)
{
	bool ok = !ns_agent__g.no_probe;
	for (int i = 0; i < 2 && ok; i++) {
		struct sigaction cur;
		if (sigaction(sigs[i], NULL, &cur) != 0) {
			ok = false;
			break;
		}
		if (ours(&cur))
			continue;
		// First time, or the program installed its own since: chain to that one.
		struct sigaction sa, old;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_fault;
		// SA_ONSTACK: a stack overflow reaches a program handler that relies on an
		// alternate stack; nothing is blocked beyond the signal itself.
		sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
		sigemptyset(&sa.sa_mask);
		prev[i] = cur;
		if (sigaction(sigs[i], &sa, &old) != 0) {
			ok = false;
			break;
		}
		prev[i] = old; // what was really there at the switch
	}
	atomic_store_explicit(&ns_agent__probe_on, ok, memory_order_release);
}

void ns_agent__probe_fini(void)
{
	atomic_store_explicit(&ns_agent__probe_on, false, memory_order_release);
	for (int i = 0; i < 2; i++) {
		struct sigaction cur;
		if (sigaction(sigs[i], NULL, &cur) == 0 && ours(&cur))
			sigaction(sigs[i], &prev[i], NULL);
	}
}

int ns_agent__probe_thread_ok(const ucontext_t *uc)
{
	if (!atomic_load_explicit(&ns_agent__probe_on, memory_order_acquire))
		return 0;
	uint64_t set = 0;
	if (uc) // the trap tier: the interrupted thread's mask, for free
		memcpy(&set, &uc->uc_sigmask, sizeof(set));
	else if (syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &set, sizeof(set)) != 0)
		return 0;
	return !blocks_faults(set);
}
