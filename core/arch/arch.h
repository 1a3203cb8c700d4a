/* core/arch: x86-64 instruction decoding and relocation with capstone, for the
 * tracepoint tiers. capstone types never appear here. */
#ifndef NS_ARCH_H
#define NS_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum ns_arch_insn_kind {
	NS_INSN_PLAIN,       /* position-independent: copy as is */
	NS_INSN_RIPREL,      /* has a RIP-relative memory operand: disp32 is adjusted */
	NS_INSN_JMP,         /* jmp rel8/rel32: emulate (target) */
	NS_INSN_JCC,         /* jcc rel8/rel32: emulate (cc, target) */
	NS_INSN_CALL,        /* call rel32: emulate (push addr+len, jump target) */
	NS_INSN_RET,         /* ret (no immediate): emulate */
	NS_INSN_UNSUPPORTED, /* cannot run out of line (loop/jrcxz/indirect via RIP, syscall...) */
};

struct ns_arch_insn {
	enum ns_arch_insn_kind kind;
	uint8_t len;
	uint8_t disp_offset; /* NS_INSN_RIPREL: offset of the disp32 in the instruction */
	uint8_t cc;          /* NS_INSN_JCC: the condition, low nibble of the 0x7X/0x0F8X opcode */
	uint64_t target;     /* JMP/JCC/CALL: absolute target */
	char text[64];       /* "mov eax, dword ptr [rip + 0x2f1e]", for messages */
	const char *reason;  /* NS_INSN_UNSUPPORTED: static text saying why, else NULL */
};

/** Decode the instruction at runtime address @addr from @code (@len bytes available).
 * NS_ERR_FORMAT if the bytes do not decode. Host side or agent control thread (uses
 * capstone, which allocates: never from a signal handler). */
struct ns_err *ns_arch_decode(const uint8_t *code, size_t len, uint64_t addr,
                              struct ns_arch_insn *out);

/** Out-of-line copy for the trap tiers: the instruction (@code, decoded as @insn at
 * @addr) relocated to run at @dst_addr, then "jmp addr+len" (rel32, or an absolute
 * indirect jmp if out of range). Only PLAIN and RIPREL kinds; RIPREL needs the
 * referenced address within +-2 GiB of @dst_addr (NS_ERR_UNSUPPORTED otherwise).
 * Writes into @dst (@cap bytes) and sets *@len_out. */
struct ns_err *ns_arch_relocate(const struct ns_arch_insn *insn, const uint8_t *code, uint64_t addr,
                                uint64_t dst_addr, uint8_t *dst, size_t cap, size_t *len_out);

/** Whether condition @cc (as in ns_arch_insn.cc) holds for @eflags. Signal-safe. */
bool ns_arch_cond_holds(unsigned cc, uint64_t eflags);

#endif
