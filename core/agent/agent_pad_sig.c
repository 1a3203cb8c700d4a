/* The jump-pad tier's hot path: the collector every pad calls, and the handler that
 * moves a thread out of a window being patched. Built with -mgeneral-regs-only (see
 * CMakeLists.txt): a pad saves no vector, x87 or MXCSR state, so nothing reachable from
 * here may touch it (arch.h, the collector contract). No malloc, no locks, no stdio. */
#define _GNU_SOURCE
#include "agent/agent_internal.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ns_agent__move ns_agent__mv;

void ns_agent__pad_collect(void *ctx, const uint64_t *regs)
{
	// The pad interrupted the program between two of its instructions: errno is the
	// program's, as in a signal handler.
	int saved_errno = errno;
	struct ns_agent__entry *e = ctx;
	struct ns_agent__slot *slot = ns_agent__enter();
	// seq_cst (a plain load on x86): pairs with the control thread's unpublish and
	// ns_agent__quiescent.
	struct ns_agent__site *s = atomic_load(&e->site);
	if (s)
		ns_agent__collect_once(s, NULL, regs, slot);
	ns_agent__leave(slot);
	errno = saved_errno;
}

void ns_agent__on_move(int sig, siginfo_t *si, void *uc_)
{
	(void)sig;
	(void)si;
	int saved_errno = errno;
	ucontext_t *uc = uc_;
	struct ns_agent__move *mv = &ns_agent__mv;
	uint32_t gen = atomic_load_explicit(&mv->gen, memory_order_acquire);
	uint64_t lo = atomic_load_explicit(&mv->lo, memory_order_acquire);
	greg_t *g = uc->uc_mcontext.gregs;
	uint64_t rip = (uint64_t)g[REG_RIP];
	if (lo && rip > lo && rip < lo + mv->len) {
		// Interrupted between two displaced instructions: continue at the same
		// instruction in the pad's relocated copy (ns_arch_pad_emit's promise).
		for (size_t i = 0; i < mv->reloc.ninsns; i++)
			if (lo + mv->reloc.orig_off[i] == rip) {
				g[REG_RIP] = (greg_t)(mv->block + mv->reloc.new_off[i]);
				atomic_fetch_add(&mv->moved, 1);
				break;
			}
	}
	uint32_t me = (uint32_t)syscall(SYS_gettid);
	for (unsigned i = 0; i < mv->ntids; i++)
		if (mv->tids[i] == me)
			atomic_store_explicit(&mv->acked[i], gen, memory_order_release);
	errno = saved_errno;
}
