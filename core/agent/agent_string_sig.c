/* memcpy, memset and memchr for everything linked into libnonstop-agent.so (hidden:
 * the program's own calls still go to its libc). glibc's versions are ifuncs that use
 * vector registers, which a jump pad does not save (arch.h); these use general
 * registers only. "rep movsb"/"rep stosb" assume DF clear, as the SysV ABI guarantees
 * at calls. Built with -fno-tree-loop-distribute-patterns so that gcc does not turn
 * the loops back into calls to themselves. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
	void *ret = dst;
	__asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
	return ret;
}

void *memset(void *dst, int c, size_t n)
{
	void *ret = dst;
	__asm__ volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(c) : "memory");
	return ret;
}

void *memchr(const void *s, int c, size_t n)
{
	const unsigned char *p = s;
	for (size_t i = 0; i < n; i++)
		if (p[i] == (unsigned char)c)
			return (void *)(uintptr_t)(p + i);
	return NULL;
}
