/* Code for arch_pad_test to displace: C compiled with -O2 (no sanitizers) and hand-written
 * assembly with exact shapes. The test patches these functions in place. */
#include "arch_pad_funcs.h"

long pf_global = 7;

__attribute__((noipa)) long pf_riprel(long x)
{
	return x * pf_global + 3;
}

__attribute__((noipa)) long pf_callee(long x)
{
	return x ^ 0x55;
}

__attribute__((noipa)) long pf_call(long x)
{
	return pf_callee(x) * 5 + 1;
}

__attribute__((noipa)) long pf_loop(long n)
{
	long s = 0;
	for (long i = 0; i < n; i++)
		s += (i * i) ^ (s >> 3);
	return s;
}

// Enough distinct cases for gcc -O2 to emit a jump table.
__attribute__((noipa)) long pf_switch(long k, long v)
{
	switch (k) {
	case 0:
		return v + 1;
	case 1:
		return v * 3;
	case 2:
		return v - 7;
	case 3:
		return v ^ 0x1234;
	case 4:
		return v << 2;
	case 5:
		return v / 3;
	case 6:
		return v % 5;
	case 7:
		return ~v;
	default:
		return -1;
	}
}

__attribute__((noipa)) long pf_short(long x)
{
	return x;
}

uint64_t pa_dump[18];
void *pa_entry;

/* pa_jcc(x): x > 0 ? x + 100 : -1. Window at entry: test (3) + jle rel8 (2).
 * pa_call(x): 3x + 1; entry window "xor esi, esi; call pa_callee" ends in the call.
 * pa_call2(x): 3x + 2; entry window is "call pa_call" alone.
 * pa_loop(n): sum n + (n-1) + ... + 1; labels pa_loop_body / pa_loop_dec are sites
 * inside the loop, pa_loop_jle one whose window would contain the loop head.
 * pa_probe_target: stores every register and the flags into pa_dump, then returns;
 * its first instruction is a 7-byte RIP-relative store (the window).
 * pa_probe_run(entry, flags): loads known values into all 15 GPRs and flags, calls
 * entry through memory, restores the callee-saved registers. */
__asm__(".text\n"
        ".globl pa_jcc\n.type pa_jcc,@function\n"
        "pa_jcc:\n"
        "	test %rdi, %rdi\n"
        "	jle 1f\n"
        "	lea 100(%rdi), %rax\n"
        "	ret\n"
        "1:	mov $-1, %rax\n"
        "	ret\n"
        ".size pa_jcc, .-pa_jcc\n"

        ".globl pa_callee\n.type pa_callee,@function\n"
        "pa_callee:\n"
        "	lea (%rdi,%rdi,2), %rax\n"
        "	add %rsi, %rax\n"
        "	ret\n"
        ".size pa_callee, .-pa_callee\n"

        ".globl pa_call\n.type pa_call,@function\n"
        "pa_call:\n"
        "	xor %esi, %esi\n"
        "	call pa_callee\n"
        "	add $1, %rax\n"
        "	ret\n"
        ".size pa_call, .-pa_call\n"

        ".globl pa_call2\n.type pa_call2,@function\n"
        "pa_call2:\n"
        "	call pa_call\n"
        "	add $1, %rax\n"
        "	ret\n"
        ".size pa_call2, .-pa_call2\n"

        ".globl pa_loop\n.type pa_loop,@function\n"
        ".globl pa_loop_body\n.globl pa_loop_dec\n.globl pa_loop_jle\n"
        "pa_loop:\n"
        "	xor %eax, %eax\n"
        "	test %rdi, %rdi\n"
        "pa_loop_jle:\n"
        "	jle 2f\n"
        "pa_loop_body:\n"
        "1:	add %rdi, %rax\n"
        "pa_loop_dec:\n"
        "	dec %rdi\n"
        "	jnz 1b\n"
        "2:	ret\n"
        ".size pa_loop, .-pa_loop\n"

        ".globl pa_probe_target\n.type pa_probe_target,@function\n"
        "pa_probe_target:\n"
        "	mov %rax, pa_dump+0(%rip)\n"
        "	mov %rbx, pa_dump+8(%rip)\n"
        "	mov %rcx, pa_dump+16(%rip)\n"
        "	mov %rdx, pa_dump+24(%rip)\n"
        "	mov %rsi, pa_dump+32(%rip)\n"
        "	mov %rdi, pa_dump+40(%rip)\n"
        "	mov %rbp, pa_dump+48(%rip)\n"
        "	mov %rsp, pa_dump+56(%rip)\n"
        "	mov %r8, pa_dump+64(%rip)\n"
        "	mov %r9, pa_dump+72(%rip)\n"
        "	mov %r10, pa_dump+80(%rip)\n"
        "	mov %r11, pa_dump+88(%rip)\n"
        "	mov %r12, pa_dump+96(%rip)\n"
        "	mov %r13, pa_dump+104(%rip)\n"
        "	mov %r14, pa_dump+112(%rip)\n"
        "	mov %r15, pa_dump+120(%rip)\n"
        "	pushfq\n"
        "	popq pa_dump+136(%rip)\n"
        "	lea pa_probe_target(%rip), %rax\n"
        "	mov %rax, pa_dump+128(%rip)\n"
        "	ret\n"
        ".size pa_probe_target, .-pa_probe_target\n"

        ".globl pa_probe_run\n.type pa_probe_run,@function\n"
        "pa_probe_run:\n"
        "	push %rbx\n	push %rbp\n	push %r12\n	push %r13\n	push %r14\n	"
        "push %r15\n"
        "	mov %rdi, pa_entry(%rip)\n"
        "	push %rsi\n"
        "	popfq\n"
        "	movabs $0x1111111111111101, %rax\n"
        "	movabs $0x2222222222222202, %rbx\n"
        "	movabs $0x3333333333333303, %rcx\n"
        "	movabs $0x4444444444444404, %rdx\n"
        "	movabs $0x5555555555555505, %rsi\n"
        "	movabs $0x6666666666666606, %rdi\n"
        "	movabs $0x7777777777777707, %rbp\n"
        "	movabs $0x8888888888888808, %r8\n"
        "	movabs $0x9999999999999909, %r9\n"
        "	movabs $0xaaaaaaaaaaaaaa0a, %r10\n"
        "	movabs $0xbbbbbbbbbbbbbb0b, %r11\n"
        "	movabs $0xcccccccccccccc0c, %r12\n"
        "	movabs $0xdddddddddddddd0d, %r13\n"
        "	movabs $0xeeeeeeeeeeeeee0e, %r14\n"
        "	movabs $0xffffffffffffff0f, %r15\n"
        "	call *pa_entry(%rip)\n"
        "	cld\n"
        "	pop %r15\n	pop %r14\n	pop %r13\n	pop %r12\n	pop %rbp\n	"
        "pop %rbx\n"
        "	ret\n"
        ".size pa_probe_run, .-pa_probe_run\n"

        ".globl pa_bare\n.type pa_bare,@function\n"
        "pa_bare:\n"
        "	lea 1(%rdi), %rax\n"
        "	nopl 0(%rax,%rax,1)\n"
        "	ret\n"
        ".size pa_bare, .-pa_bare\n");
