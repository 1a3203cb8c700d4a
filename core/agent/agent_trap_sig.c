/* The SIGTRAP handler of the in-process trap tier. Signal context: no malloc, no
 * locks, no stdio; target memory only through ns_mem_read. */
#define _GNU_SOURCE
#include "agent/agent_internal.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "base/mem.h"

struct ns_agent__state ns_agent__g = {.ctl_fd = -1, .mem_fd = -1, .wake_fd = -1};

static unsigned hash(uint64_t addr)
{
	// Fibonacci hashing; instruction addresses share their high bits.
	return (unsigned)((addr * 0x9e3779b97f4a7c15ull) >> 40) & (NS_AGENT__TABLE_SIZE - 1);
}

struct ns_agent__entry *ns_agent__lookup(uint64_t addr)
{
	unsigned h = hash(addr);
	for (unsigned i = 0; i < NS_AGENT__TABLE_SIZE; i++) {
		struct ns_agent__entry *e =
		        &ns_agent__g.table[(h + i) & (NS_AGENT__TABLE_SIZE - 1)];
		uint64_t k = atomic_load_explicit(&e->key, memory_order_acquire);
		if (k == addr)
			return e;
		if (k == 0)
			return NULL;
	}
	return NULL;
}

// Not one of ours: hand the signal to whoever had SIGTRAP before us.
static void chain(int sig, siginfo_t *si, void *uc)
{
	const struct sigaction *old = &ns_agent__g.old_trap;
	if (old->sa_flags & SA_SIGINFO) {
		if (old->sa_sigaction)
			old->sa_sigaction(sig, si, uc);
		return;
	}
	if (old->sa_handler == SIG_IGN)
		return;
	if (old->sa_handler == SIG_DFL) {
		// Default action (core dump): restore it and deliver the signal again.
		struct sigaction dfl;
		sigemptyset(&dfl.sa_mask);
		dfl.sa_flags = 0;
		dfl.sa_handler = SIG_DFL;
		sigaction(SIGTRAP, &dfl, NULL);
		raise(SIGTRAP);
		return;
	}
	old->sa_handler(sig);
}

static void resume(const struct ns_agent__site *s, ucontext_t *uc)
{
	greg_t *g = uc->uc_mcontext.gregs;
	uint64_t next = s->addr + s->insn.len;
	if (s->pad_block) {
		// A jump-pad site being converted or removed: the original bytes after
		// the first instruction may be half-written; the pad's relocated window
		// runs them all and jumps back to addr + wlen.
		g[REG_RIP] = (greg_t)s->pad_block;
		return;
	}
	switch (s->insn.kind) {
	case NS_INSN_JMP:
		g[REG_RIP] = (greg_t)s->insn.target;
		return;
	case NS_INSN_JCC:
		g[REG_RIP] = (greg_t)(ns_arch_cond_holds(s->insn.cc, (uint64_t)g[REG_EFL])
		                              ? s->insn.target
		                              : next);
		return;
	case NS_INSN_CALL: {
		// The stack write the call itself would do; a bad stack faults here
		// exactly as the call would have.
		uint64_t sp = (uint64_t)g[REG_RSP] - 8;
		*(volatile uint64_t *)(uintptr_t)sp = next;
		g[REG_RSP] = (greg_t)sp;
		g[REG_RIP] = (greg_t)s->insn.target;
		return;
	}
	case NS_INSN_RET: {
		uint64_t ret;
		if (ns_mem_read(&ret, (uint64_t)g[REG_RSP], 8) == 0) {
			g[REG_RSP] += 8;
			g[REG_RIP] = (greg_t)ret;
		} else {
			// Let the real ret in the slot take the fault.
			g[REG_RIP] = (greg_t)s->slot;
		}
		return;
	}
	default:
		g[REG_RIP] = (greg_t)s->slot;
		return;
	}
}

void ns_agent__on_sigtrap(int sig, siginfo_t *si, void *uc_)
{
	int saved_errno = errno;
	ucontext_t *uc = uc_;
	struct ns_agent__slot *slot = ns_agent__enter();
	uint64_t addr = (uint64_t)uc->uc_mcontext.gregs[REG_RIP] - 1;
	// int3 reports SI_KERNEL; raise(), single-steps and hardware breakpoints do not.
	struct ns_agent__entry *e = si && si->si_code == SI_KERNEL ? ns_agent__lookup(addr) : NULL;
	// Pairs with the control thread's unpublish and ns_agent__quiescent, so a
	// retired site is never still in use.
	struct ns_agent__site *s = e ? atomic_load(&e->site) : NULL;
	if (!s) {
		if (e) {
			// An address we patched, whose site went away after this thread
			// trapped (the handler can run late when the thread is preempted).
			// Run again whatever is at addr now: the original instruction, a
			// newer tracepoint's int3 (its site is published before its int3 is
			// written, so the retry finds it) or a finished jump pad. Chaining
			// here would kill the program: a newer int3 may already be back.
			uc->uc_mcontext.gregs[REG_RIP] = (greg_t)addr;
		} else {
			ns_agent__leave(slot);
			errno = saved_errno;
			chain(sig, si, uc_);
			return;
		}
	} else {
		ns_agent__collect_once(s, uc, NULL, slot);
		resume(s, uc);
	}
	ns_agent__leave(slot);
	errno = saved_errno;
}
