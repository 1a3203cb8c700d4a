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

/* ---- Jump-pad tier (x86-64) ------------------------------------------------------
 *
 * The site's first whole instructions (the window, >= 5 bytes) are replaced by
 * "jmp rel32" to a pad within +-2 GiB. The pad (ns_arch_pad_emit):
 *
 *   lea rsp, [rsp-128-160]      step below the red zone, reserve the save area
 *   save flags                  lahf/seto (or pushfq) before anything touches them
 *   save the 15 GPRs, build the register block (GDB order, see below)
 *   rdi = ctx, rsi = block; rbx = rsp; and rsp, -16; call collector; rsp = rbx
 *   restore flags and the 15 GPRs exactly, lea rsp, [rsp+288]
 *   the window relocated (ns_arch_relocate_block), then jmp site+window
 *
 * The collector contract:
 *   void collector(void *ctx, const uint64_t regs[NS_ARCH_PAD_NREGS]);
 * - compiled with -mgeneral-regs-only, and nothing it calls may touch x87/SSE/AVX
 *   state (the pad saves no vector or x87 registers, nor MXCSR): in particular no
 *   glibc memcpy/memset/strlen, whose ifunc variants use vector registers;
 * - runs on the hitting thread's stack, 128 bytes below the interrupted frame's red
 *   zone, 16-byte aligned as the SysV ABI requires at a call;
 * - must not write the register block (the pad restores the registers from it);
 * - must not change DF, AC or TF, and may assume DF is clear (the SysV ABI requires
 *   DF clear at calls and returns and gcc never leaves it set between statements;
 *   the pushfq variant also clears it for the call and restores it after);
 * - the register block: regs[0..17] = rax rbx rcx rdx rsi rdi rbp rsp r8..r15 rip
 *   eflags (GDB amd64 numbering, frame.h NS_REG_RAX..NS_REG_EFLAGS). rsp is the
 *   value at the site, rip is the site address. With NS_ARCH_PAD_FLAGS_LAHF, eflags
 *   carries CF PF AF ZF SF OF exactly, bit 1 and IF set and everything else clear;
 *   with NS_ARCH_PAD_FLAGS_PUSHF it is the real RFLAGS.
 *
 * All of this is host side or the agent's control thread (capstone allocates): the
 * pad itself is the only part that runs on the hot path. */

/* Register block slots passed to the collector. */
enum {
	NS_ARCH_PAD_NREGS = 18,
	NS_ARCH_PAD_REG_RSP = 7,
	NS_ARCH_PAD_REG_RIP = 16,
	NS_ARCH_PAD_REG_EFLAGS = 17
};

/* The window is >= 5 bytes of whole instructions: at most 4 + 15 bytes and 5
 * instructions. */
enum { NS_ARCH_PAD_MAX_WINDOW = 19, NS_ARCH_PAD_MAX_INSNS = 5 };

/* A piece of machine code at runtime address [lo, hi), bytes borrowed. */
struct ns_arch_code_range {
	uint64_t lo, hi;
	const uint8_t *bytes;
};

/* What ns_arch_pad_window needs to know about the function holding the site. */
struct ns_arch_pad_func {
	/** The function part holding the site (DWARF low_pc/high_pc or the ELF symbol). */
	struct ns_arch_code_range range;
	/** Other parts of the same function (gcc's foo.cold, DW_AT_ranges): swept for
	 * branches back into @range. May be NULL/0. */
	const struct ns_arch_code_range *more;
	size_t nmore;
	/** Entries not visible as branches (C++ landing pads from the LSDA): each is a
	 * branch target. May be NULL/0. */
	const uint64_t *extra_targets;
	size_t nextra;
	/** Reads jump tables (.rodata) and GOT slots: 0, or -1 if unreadable. NULL: every
	 * indirect jump counts as unresolved. */
	int (*read_mem)(void *ctx, void *dst, uint64_t addr, size_t len);
	void *read_ctx;
};

struct ns_arch_pad_window {
	bool eligible;
	uint8_t len;           /* bytes displaced (whole instructions, >= 5 if eligible) */
	uint8_t ninsns;        /* instructions in the window */
	const char *reason;    /* !eligible: static text, e.g. "function too short" */
	char detail[96];       /* !eligible: the offending instruction and address, or "" */
	unsigned njump_tables; /* switch jump tables recognised in the function */
	unsigned ntargets;     /* branch targets found in the function (all parts) */
};

/** Choose the displaced window for a jump pad at @site in @fn: whole instructions from
 * @site covering >= 5 bytes. Ineligible (out->eligible false, out->reason set) when an
 * instruction in the window cannot run relocated (syscall, int, loop, jrcxz, indirect
 * call, ...), a ret or indirect jmp is not the window's last instruction, the function
 * ends first ("function too short"), @site is not an instruction boundary of a linear
 * sweep from range.lo, a branch target of the function lies strictly inside
 * (site, site+len), or the function has an indirect jmp whose targets are unknown
 * ("indirect jump in function: targets unknown"). gcc's switch tables (PIC "lea; movsxd;
 * add; jmp reg" and non-PIC "jmp [idx*8+T]") are read through read_mem.
 * Errors: NS_ERR_INVALID if @site is outside range. Host side or control thread. */
struct ns_err *ns_arch_pad_window(const struct ns_arch_pad_func *fn, uint64_t site,
                                  struct ns_arch_pad_window *out);

/* Relocated window: where each original instruction went. */
struct ns_arch_reloc {
	size_t len; /* bytes written */
	size_t ninsns;
	uint8_t orig_off[NS_ARCH_PAD_MAX_INSNS]; /* instruction offsets in the window */
	uint16_t new_off[NS_ARCH_PAD_MAX_INSNS]; /* where it starts in the copy */
};

/** Relocate the window @code (@len bytes of whole instructions at @addr, at most
 * NS_ARCH_PAD_MAX_WINDOW) to run at @dst_addr, followed by "jmp addr+len" (rel32, or
 * "jmp [rip+0]; .quad" if out of range) unless the last instruction does not fall
 * through. RIP-relative operands are adjusted (NS_ERR_UNSUPPORTED if the reference
 * leaves +-2 GiB of the copy); jmp/jcc become rel32 forms to the same absolute target
 * (an inverted jcc over an absolute jmp if out of range; a target strictly inside the
 * window goes to its relocated copy); "call rel32" becomes
 *   lea rsp,[rsp-8]; mov dword [rsp],lo; mov dword [rsp+4],hi; jmp target
 * pushing the original return address without touching flags or registers (a call
 * must end the window: the callee returns into the original code). ret and indirect
 * jmp are copied as is and must be last. UNSUPPORTED instructions: NS_ERR_UNSUPPORTED.
 * Writes into @dst (@cap bytes; 160 is always enough). Host side or control thread. */
struct ns_err *ns_arch_relocate_block(const uint8_t *code, uint64_t addr, size_t len,
                                      uint64_t dst_addr, uint8_t *dst, size_t cap,
                                      struct ns_arch_reloc *out);

/* Flags: measured on this machine (AMD EPYC, arch_pad_test cost_per_pass, best of 5 x
 * 2M calls of a 2-instruction function through a pad whose collector returns at once):
 * bare call 1.4 ns; relocated window + jumps only +1.0..1.5 ns; whole pad with
 * lahf/seto +3.3..5.3 ns (noisy, shared cores); with pushfq/popfq +6.9..7.2 ns.
 * AUTO picks LAHF. */
enum ns_arch_pad_flags_mode {
	NS_ARCH_PAD_FLAGS_AUTO,  /* LAHF if the CPU has LAHF/SAHF in 64-bit mode, else PUSHF */
	NS_ARCH_PAD_FLAGS_LAHF,  /* lahf/seto, restored with add al,0x7f; sahf */
	NS_ARCH_PAD_FLAGS_PUSHF, /* pushfq/popfq (plus cld around the call) */
};

struct ns_arch_pad_spec {
	uint64_t site;       /* runtime address of the window */
	const uint8_t *code; /* the window's original bytes (borrowed) */
	size_t window_len;   /* from ns_arch_pad_window */
	uint64_t pad_addr;   /* runtime address the pad will run at */
	uint64_t collector;  /* void (*)(void *ctx, const uint64_t *regs), see above */
	uint64_t ctx;        /* passed in rdi */
	enum ns_arch_pad_flags_mode flags;
	/* Optional guard (LAHF mode only; ignored with PUSHF): position-independent code
	 * run right after the flags are saved, on the program's live registers, with the
	 * registers in @guard_clobber (GDB numbers) stored first at [rsp + 8 * number] and
	 * reloaded after. It falls through its end with rax == 0 to skip the collector (the
	 * window then runs at once) or rax != 0 to call it (ns_ax_jit_compile_guard makes
	 * such code). The pad runs it only while its armed byte (pad + armed_off) is not 0,
	 * so the owner can switch it off without rewriting code. */
	const uint8_t *guard;
	size_t guard_len;
	uint32_t guard_clobber; /* rax, rcx, rdx, r8..r11 only */
	/* Optional inline record (LAHF mode, no guard): see struct ns_arch_pad_record.
	 * NULL: none. */
	const struct ns_arch_pad_record *record;
};

/* ---- Inline records ----
 *
 * For a tracepoint whose whole collection is a fixed-size record (constants, some
 * registers, the thread id, a TSC time stamp, a per-thread sequence number), the pad
 * can write that record into the hitting thread's ring itself instead of calling the
 * collector (a C call costs more than the record). The ring and the thread's state are
 * reached through the program's TLS (initial-exec, fs-relative):
 *
 *   fs:[tls]       struct ns_arch_pad_thread (below)
 *   fs:[tls_busy]  a byte: != 0 while this thread collects; the record is written only
 *                  when it is 0 and sets it meanwhile (a hit nested in a signal handler
 *                  that interrupted a collection takes the full path)
 *
 * The ring: a u64 head (bytes produced, written by this thread) and a u64 tail (bytes
 * consumed) at ring + head_off / tail_off, data of ring_size bytes (a power of two,
 * at most 1 GiB) at the thread block's data. The record goes to data + (head &
 * (ring_size - 1)) when it fits there whole and the ring has room (head - tail <=
 * ring_size - len); then head += len is stored (a plain store: x86 stores are
 * released in order). The room is first checked against the u64 at ring +
 * tail_seen_off, the producer's copy of a tail it read before (tail only grows, so the
 * copy errs on the safe side); only when that shows no room is tail read, and the copy
 * updated: the consumer's cache line is not touched on every hit. Anything else takes the full path, which handles wrapping and
 * counts drops: a full ring, no ring or slot yet, a gen mismatch, a busy thread, or
 * the record's armed byte (pad + record_armed_off) at 0.
 *
 * Around the record, the slot's u32 at busy_off is incremented (before the armed byte
 * is read) and decremented (after head is stored), and its u64 at hits_off
 * incremented: the agent's per-thread hit slot (asymmetric fence with a membarrier on
 * the control thread's side). The record's bytes are @tmpl, then each field written
 * over them (8 bytes each but the tid):
 *   NS_ARCH_REC_REG  GDB register @reg: 0..15 (rsp the site's), 16 (rip: the site)
 *   NS_ARCH_REC_TID  the thread block's tid, 4 bytes (the template's other 4 bytes of
 *                    that word stay)
 *   NS_ARCH_REC_TSC  rdtsc (edx:eax)
 *   NS_ARCH_REC_SEQ  the u64 at ring + seq_off, which is then incremented (one field
 *                    of this kind at most)
 * The registers and the flags are preserved; the record path clobbers nothing the
 * program sees.
 *
 * Memory reads (optional, @reads): after the fields (the sequence number's excepted,
 * which is taken last), each read in order computes its address (an absolute address,
 * a register as at the site plus disp, or the value an earlier read loaded plus disp),
 * stores it at addr_off if that is not 0, copies @trace bytes from it to data_off, and
 * keeps a value of @ref bytes (little-endian, zero-extended) for later reads: taken
 * from the copied bytes if ref <= trace, else read on its own. Each access is one of:
 *   - direct: an absolute address the owner knows is always readable (the executable's
 *     own mappings): a plain load;
 *   - 1, 2, 4 or 8 bytes inside the hitting thread's stack: the u64 at fs:[tls_stk_lo]
 *     and fs:[tls_stk_limit] say where (addr - lo < limit; limit 0: nowhere): a plain
 *     load;
 *   - anything else: a call of @read_fn,
 *       uint64_t read_fn(void *dst, uint64_t addr, uint64_t len, uint64_t *state);
 *     under the collector's contract (above), which copies all @len bytes and returns
 *     non-zero, or returns 0. *state is 0 at its first call in a hit and kept between
 *     the calls of that hit (what the hit has learned, e.g. whether it may probe).
 * A read that returns 0 abandons the record before head or the sequence number move:
 * the hit takes the full path, as for a full ring. */
enum ns_arch_rec_kind { NS_ARCH_REC_REG, NS_ARCH_REC_TID, NS_ARCH_REC_TSC, NS_ARCH_REC_SEQ };

enum ns_arch_rec_base { NS_ARCH_REC_ABS, NS_ARCH_REC_AT_REG, NS_ARCH_REC_AT_READ };

enum { NS_ARCH_PAD_REC_READS = 8, NS_ARCH_PAD_REC_TRACE_MAX = 256 };

struct ns_arch_rec_read {
	uint8_t base;      /* enum ns_arch_rec_base */
	uint8_t from;      /* AT_REG: GDB register 0..16; AT_READ: an earlier read with a ref */
	uint8_t ref;       /* 0, 1, 2, 4 or 8 */
	uint8_t direct;    /* ABS only: always readable, see above */
	uint16_t trace;    /* 0..NS_ARCH_PAD_REC_TRACE_MAX bytes to data_off */
	uint16_t data_off;
	uint16_t addr_off; /* 8-byte aligned; 0: the address is not recorded */
	uint64_t disp;
};

struct ns_arch_rec_field {
	uint16_t off; /* byte offset in the record, aligned to the field's size */
	uint8_t kind; /* enum ns_arch_rec_kind */
	uint8_t reg;  /* NS_ARCH_REC_REG: GDB register number */
};

struct ns_arch_pad_thread {
	uint64_t ring; /* the ring's header (head, tail, seq words); 0: none */
	uint64_t data; /* the ring's first data byte */
	uint64_t slot; /* the thread's hit slot (busy, hits); 0: none */
	uint32_t gen;  /* the block is valid only while gen equals the u32 at gen_addr */
	uint32_t tid;
};

enum { NS_ARCH_PAD_REC_MAX = 512, NS_ARCH_PAD_REC_FIELDS = 32 };

struct ns_arch_pad_record {
	const uint8_t *tmpl; /* @len bytes (a multiple of 8, at most NS_ARCH_PAD_REC_MAX) */
	size_t len;
	const struct ns_arch_rec_field *fields;
	size_t nfields; /* at most NS_ARCH_PAD_REC_FIELDS */
	int32_t tls, tls_busy;
	uint64_t gen_addr;
	uint64_t ring_size;
	uint32_t head_off, tail_off, seq_off, tail_seen_off;
	uint32_t busy_off, hits_off;
	const struct ns_arch_rec_read *reads; /* may be NULL if nreads is 0 */
	size_t nreads;                        /* at most NS_ARCH_PAD_REC_READS */
	int32_t tls_stk_lo, tls_stk_limit;
	uint64_t read_fn; /* needed if a read is not direct */
};

/* Code bytes an inline record adds to a pad, at most (NS_ARCH_PAD_MAX_LEN covers the
 * rest), plus NS_ARCH_PAD_REC_READ_EXTRA for each read. */
enum { NS_ARCH_PAD_REC_EXTRA = 2048, NS_ARCH_PAD_REC_READ_EXTRA = 256 };

struct ns_arch_pad {
	size_t len;                        /* bytes written */
	size_t block_off;                  /* offset of the relocated window in the pad */
	struct ns_arch_reloc reloc;        /* new_off relative to block_off */
	enum ns_arch_pad_flags_mode flags; /* the mode used (never AUTO) */
	size_t armed_off;                  /* the guard's armed byte (1 as written), 0: none */
	size_t record_armed_off;           /* the inline record's armed byte (1), 0: none */
};

/** Generate the pad for @spec into @dst (@cap bytes; NS_ARCH_PAD_MAX_LEN is always
 * enough). A thread stopped at window offset reloc.orig_off[i] > 0 resumes correctly
 * at pad_addr + block_off + reloc.new_off[i]. Errors as ns_arch_relocate_block. */
struct ns_err *ns_arch_pad_emit(const struct ns_arch_pad_spec *spec, uint8_t *dst, size_t cap,
                                struct ns_arch_pad *out);

/* A pad without a guard fits NS_ARCH_PAD_MAX_LEN bytes; one with a guard, that plus
 * NS_ARCH_PAD_GUARD_EXTRA plus the guard's length. */
enum { NS_ARCH_PAD_MAX_LEN = 384, NS_ARCH_PAD_GUARD_EXTRA = 160 };

/* While the guard and the collector run, the pad's rsp is this far below the site's
 * (the red zone, then the register block at [rsp]). */
enum { NS_ARCH_PAD_FRAME = 288 };

/** Whether this CPU has LAHF/SAHF in 64-bit mode (CPUID 0x80000001 ECX bit 0). */
bool ns_arch_have_lahf64(void);

#endif
