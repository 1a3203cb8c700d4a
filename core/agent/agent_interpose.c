/* Signal-mask interposition (launch only: the agent is preloaded, so these definitions
 * come before libc's in symbol lookup).
 *
 * Servers commonly block every signal in their worker threads (sigfillset +
 * pthread_sigmask). An int3 in such a thread would be fatal: when a forced signal is
 * blocked, the kernel unblocks it and resets its handler to SIG_DFL
 * (force_sig_info_to_task in kernel/signal.c), and SIGTRAP's default action kills the
 * process. So while the agent is active, SIGTRAP is never added to a thread's blocked
 * set; everything else the program asks for is done exactly. The mask a caller reads
 * back is the real one. After an attach (dlopen), calls are already bound to libc and
 * nothing is interposed: the trap tier checks the threads' masks instead. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>

#include "agent/agent_internal.h"

typedef int (*mask_fn)(int, const sigset_t *, sigset_t *);

static const sigset_t *keep_trap(int how, const sigset_t *set, sigset_t *copy)
{
	if (!set || !ns_agent__g.shm || (how != SIG_BLOCK && how != SIG_SETMASK) ||
	    !sigismember(set, SIGTRAP))
		return set;
	*copy = *set;
	sigdelset(copy, SIGTRAP);
	return copy;
}

__attribute__((visibility("default"))) int pthread_sigmask(int how, const sigset_t *set,
                                                            sigset_t *old)
{
	static mask_fn real;
	if (!real)
		real = (mask_fn)dlsym(RTLD_NEXT, "pthread_sigmask");
	if (!real)
		return ENOSYS;
	sigset_t copy;
	return real(how, keep_trap(how, set, &copy), old);
}

__attribute__((visibility("default"))) int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
	static mask_fn real;
	if (!real)
		real = (mask_fn)dlsym(RTLD_NEXT, "sigprocmask");
	if (!real)
		return -1;
	sigset_t copy;
	return real(how, keep_trap(how, set, &copy), old);
}
