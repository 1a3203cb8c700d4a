/* Fault-recovering reads (base/mem.h, ns_mem_probe): a plain copy whose loads, if they
 * fault, end the copy instead of the process, once the process's SIGSEGV/SIGBUS
 * handler calls ns_mem_probe_fixup first. The technique is the kernel's exception
 * table (a faulting user access resumes at a fixup address: arch/x86/mm/extable.c)
 * and HotSpot's SafeFetch (a signal handler that recognises the faulting pc).
 *
 * Only the three labelled loads may fault; the fixup computes how many bytes were
 * copied from %rcx, which rep movsb keeps exact at a fault (the count of elements
 * left: Intel SDM vol. 1, 7.3.9.2 / vol. 2 "REP"). Reachable from the trap handler:
 * no calls at all. */
#define _GNU_SOURCE
#include "base/mem.h"

#include <signal.h>
#include <stdint.h>
#include <ucontext.h>

// clang-format off
__asm__(
	"	.text\n"
	"	.p2align 4\n"
	"	.globl ns_mem_probe\n"
	"	.hidden ns_mem_probe\n"
	"	.type ns_mem_probe, @function\n"
	"ns_mem_probe:\n"                 /* rdi dst, rsi addr, rdx len -> rax copied */
	"	mov %rdx, %rcx\n"
	"	mov %esi, %eax\n"
	"	and $4095, %eax\n"
	"	cmp $4088, %eax\n"         /* 8 bytes from here stay in the page */
	"	ja 2f\n"
	"	cmp $8, %rdx\n"
	"	je 8f\n"
	"	cmp $4, %rdx\n"
	"	jne 2f\n"
	"	.globl ns_mem_probe__ld4\n"
	"	.hidden ns_mem_probe__ld4\n"
	"ns_mem_probe__ld4:\n"
	"	mov (%rsi), %eax\n"
	"	mov %eax, (%rdi)\n"
	"	mov $4, %eax\n"
	"	ret\n"
	"8:\n"
	"	.globl ns_mem_probe__ld8\n"
	"	.hidden ns_mem_probe__ld8\n"
	"ns_mem_probe__ld8:\n"
	"	mov (%rsi), %rax\n"
	"	mov %rax, (%rdi)\n"
	"	mov $8, %eax\n"
	"	ret\n"
	"2:\n"
	"	.globl ns_mem_probe__rep\n"
	"	.hidden ns_mem_probe__rep\n"
	"ns_mem_probe__rep:\n"
	"	rep movsb\n"
	"	mov %rdx, %rax\n"
	"	ret\n"
	"	.globl ns_mem_probe__fixup\n"
	"	.hidden ns_mem_probe__fixup\n"
	"ns_mem_probe__fixup:\n"          /* a load faulted: rcx bytes were not copied */
	"	mov %rdx, %rax\n"
	"	sub %rcx, %rax\n"
	"	ret\n"
	"	.size ns_mem_probe, .-ns_mem_probe\n");
// clang-format on

extern const char ns_mem_probe__ld4[], ns_mem_probe__ld8[], ns_mem_probe__rep[],
        ns_mem_probe__fixup[];

bool ns_mem_probe_fixup(int sig, const siginfo_t *si, void *ucontext)
{
	ucontext_t *uc = ucontext;
	// Only a fault the kernel raised (si_code > 0), not a kill() that happens to
	// land while a thread is in the copy.
	if ((sig != SIGSEGV && sig != SIGBUS) || !si || si->si_code <= 0 || !uc)
		return false;
	greg_t *ip = &uc->uc_mcontext.gregs[REG_RIP];
	uintptr_t pc = (uintptr_t)*ip;
	if (pc != (uintptr_t)ns_mem_probe__ld4 && pc != (uintptr_t)ns_mem_probe__ld8 &&
	    pc != (uintptr_t)ns_mem_probe__rep)
		return false;
	*ip = (greg_t)(uintptr_t)ns_mem_probe__fixup;
	return true;
}
