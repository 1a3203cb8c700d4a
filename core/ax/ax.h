/* core/ax: GDB agent-expression bytecode (GDB manual, appendix "Agent Expressions").
 * One opcode table drives the assembler, verifier, disassembler and interpreter.
 * The interpreter is used by the agent (inside the target, signal context), the stub
 * and the adapter (over captured frames), so ns_ax_run() is async-signal-safe,
 * never allocates and never dereferences a target address itself. */
#ifndef NS_AX_H
#define NS_AX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* X(name, code, immediate bytes, pops, pushes). printf (0x34) has variable operands and
 * is not supported (the verifier rejects it). Values for the stack effects follow the
 * manual's "Bytecode Descriptions". */
#define NS_AX_OPCODES(X)                \
	X(FLOAT, 0x01, 0, 0, 0)         \
	X(ADD, 0x02, 0, 2, 1)           \
	X(SUB, 0x03, 0, 2, 1)           \
	X(MUL, 0x04, 0, 2, 1)           \
	X(DIV_SIGNED, 0x05, 0, 2, 1)    \
	X(DIV_UNSIGNED, 0x06, 0, 2, 1)  \
	X(REM_SIGNED, 0x07, 0, 2, 1)    \
	X(REM_UNSIGNED, 0x08, 0, 2, 1)  \
	X(LSH, 0x09, 0, 2, 1)           \
	X(RSH_SIGNED, 0x0a, 0, 2, 1)    \
	X(RSH_UNSIGNED, 0x0b, 0, 2, 1)  \
	X(TRACE, 0x0c, 0, 2, 0)         \
	X(TRACE_QUICK, 0x0d, 1, 1, 1)   \
	X(LOG_NOT, 0x0e, 0, 1, 1)       \
	X(BIT_AND, 0x0f, 0, 2, 1)       \
	X(BIT_OR, 0x10, 0, 2, 1)        \
	X(BIT_XOR, 0x11, 0, 2, 1)       \
	X(BIT_NOT, 0x12, 0, 1, 1)       \
	X(EQUAL, 0x13, 0, 2, 1)         \
	X(LESS_SIGNED, 0x14, 0, 2, 1)   \
	X(LESS_UNSIGNED, 0x15, 0, 2, 1) \
	X(EXT, 0x16, 1, 1, 1)           \
	X(REF8, 0x17, 0, 1, 1)          \
	X(REF16, 0x18, 0, 1, 1)         \
	X(REF32, 0x19, 0, 1, 1)         \
	X(REF64, 0x1a, 0, 1, 1)         \
	X(IF_GOTO, 0x20, 2, 1, 0)       \
	X(GOTO, 0x21, 2, 0, 0)          \
	X(CONST8, 0x22, 1, 0, 1)        \
	X(CONST16, 0x23, 2, 0, 1)       \
	X(CONST32, 0x24, 4, 0, 1)       \
	X(CONST64, 0x25, 8, 0, 1)       \
	X(REG, 0x26, 2, 0, 1)           \
	X(END, 0x27, 0, 0, 0)           \
	X(DUP, 0x28, 0, 1, 2)           \
	X(POP, 0x29, 0, 1, 0)           \
	X(ZERO_EXT, 0x2a, 1, 1, 1)      \
	X(SWAP, 0x2b, 0, 2, 2)          \
	X(GETV, 0x2c, 2, 0, 1)          \
	X(SETV, 0x2d, 2, 1, 1)          \
	X(TRACEV, 0x2e, 2, 0, 0)        \
	X(TRACENZ, 0x2f, 0, 2, 0)       \
	X(TRACE16, 0x30, 2, 1, 1)       \
	X(PICK, 0x32, 1, 0, 1)          \
	X(ROT, 0x33, 0, 3, 3)

enum ns_ax_op {
#define NS_AX_ENUM(name, code, imm, pops, pushes) NS_AX_##name = code,
	NS_AX_OPCODES(NS_AX_ENUM)
#undef NS_AX_ENUM
};

enum {
	NS_AX_MAX_STACK = 64,       /* deepest stack a verified program may use */
	NS_AX_DEFAULT_STEPS = 4096, /* executed-instruction budget per run */
	NS_AX_NREGS = 26,           /* GDB amd64 register numbers 0..25 (see frame.h) */
	NS_AX_MAX_TSV = 64,
};

/* Result of one run. Signal-context code stores this code plus fault_addr; the stub
 * and adapter turn it into text with ns_ax_status_name(). */
enum ns_ax_status {
	NS_AX_OK = 0,
	NS_AX_FAULT, /* memory read failed at fault_addr */
	NS_AX_DIV_ZERO,
	NS_AX_STACK_OVERFLOW,
	NS_AX_STACK_UNDERFLOW,
	NS_AX_STEP_LIMIT,
	NS_AX_BAD_OPCODE,
	NS_AX_BAD_REG,    /* register not available (fault_addr holds its number) */
	NS_AX_TRACE_FULL, /* the frame has no room for a traced block */
	NS_AX_BAD_JUMP,
	NS_AX_BAD_TSV,
};

/* Environment of one run. All callbacks must be async-signal-safe when used by the
 * agent. read_mem is the only way the interpreter touches target memory. */
struct ns_ax_env {
	/** Copy @len bytes at @addr into @dst: 0 on success, -1 if unreadable. */
	int (*read_mem)(void *ctx, void *dst, uint64_t addr, size_t len);
	/** Value of GDB amd64 register @regno: 0 on success, -1 if not available. */
	int (*read_reg)(void *ctx, unsigned regno, uint64_t *val);
	/** Record memory for collection (trace, trace_quick, trace16, tracenz).
	 * @nul_stop: stop after the first NUL byte (tracenz). May be NULL: then the trace
	 * opcodes only pop their operands. Returns 0, or -1 if the frame is full. A range
	 * that is unreadable is not an error: only the readable prefix is recorded. */
	int (*trace_mem)(void *ctx, uint64_t addr, size_t len, bool nul_stop);
	int64_t *tsv; /* trace state variables for getv/setv/tracev; may be NULL */
	unsigned ntsv;
	unsigned max_steps; /* 0: NS_AX_DEFAULT_STEPS */
	void *ctx;
};

struct ns_ax_result {
	enum ns_ax_status status;
	uint64_t value;      /* top of stack at END (0 if the stack was empty) */
	uint64_t fault_addr; /* NS_AX_FAULT: the address; NS_AX_BAD_REG: the register */
	uint32_t pc;         /* offset of the instruction that stopped the run */
};

/** Check @code before it ever runs: every opcode known (printf and float ops
 * rejected), immediates inside the buffer, jump targets on instruction boundaries,
 * stack depth within [0, NS_AX_MAX_STACK] on every path, registers < NS_AX_NREGS,
 * the program ends with END on every path. On success writes the maximum depth to
 * @max_depth_out (may be NULL). Errors name the byte offset. Host or agent thread. */
struct ns_err *ns_ax_verify(const uint8_t *code, size_t len, unsigned *max_depth_out);

/** Run verified @code. Never allocates, never faults: stack bounds and the step limit
 * are still checked at run time. Async-signal-safe. */
void ns_ax_run(const uint8_t *code, size_t len, const struct ns_ax_env *env,
               struct ns_ax_result *out);

/** Static name and message for a status, e.g. "cannot read memory". */
const char *ns_ax_status_name(enum ns_ax_status st);

/* Assembler: a growable buffer (host side; allocates). */
struct ns_ax_asm {
	uint8_t *code;
	size_t len, cap;
	bool oom; /* sticky */
};
void ns_ax_asm_init(struct ns_ax_asm *a);
void ns_ax_asm_deinit(struct ns_ax_asm *a);
void ns_ax_emit(struct ns_ax_asm *a, enum ns_ax_op op);
void ns_ax_emit_u8(struct ns_ax_asm *a, enum ns_ax_op op,
                   uint8_t imm); /* ext, zero_ext, pick, trace_quick, const8 */
void ns_ax_emit_u16(struct ns_ax_asm *a, enum ns_ax_op op,
                    uint16_t imm); /* reg, getv, setv, tracev, trace16, const16 */
/** Push @v as a 64-bit value using the shortest const form (+ ext for negatives). */
void ns_ax_emit_const(struct ns_ax_asm *a, int64_t v);
/** Emit goto/if_goto with a placeholder; returns the offset to patch. */
size_t ns_ax_emit_jump(struct ns_ax_asm *a, enum ns_ax_op op);
/** Point the jump emitted at @at to @target (an offset in the code). */
void ns_ax_patch_jump(struct ns_ax_asm *a, size_t at, size_t target);
/** Steal the code (malloc'd); asm is reset. NULL if oom. */
uint8_t *ns_ax_asm_steal(struct ns_ax_asm *a, size_t *len_out);

/** The registers a verified program reads with `reg` (bit n: register n, for n < 64; a
 * register >= 64 sets bit 63). Host side. */
uint64_t ns_ax_reg_mask(const uint8_t *code, size_t len);

/** Whether running the verified program @code can have no effect on a collection: it
 * reads no memory, traces nothing, uses no trace state variable, cannot fail (no
 * division, no register >= @nregs, forward jumps only, so within any step budget of
 * at least its length) and so only computes a value from registers and constants. A
 * tracepoint's X action that is inert adds nothing to a frame. Host side. */
bool ns_ax_is_inert(const uint8_t *code, size_t len, unsigned nregs);

/* A collecting X action as a fixed list of memory reads: what a jump pad can do itself
 * instead of running the program (docs/jump-pads.md, "Memory reads in inline
 * records"). Running the program with every read succeeding is running the reads in
 * order: read i computes its address as its base plus @disp (mod 2^64), records
 * @trace bytes there if @trace != 0 (the program's trace_quick, trace16 or trace, in
 * the same order) and, if @ref != 0, loads a little-endian value of @ref bytes there
 * that later reads may use as their base. The program's result is not part of it
 * (an X action's value is not collected). */
enum ns_ax_plan_base {
	NS_AX_PLAN_ABS,  /* address = disp */
	NS_AX_PLAN_REG,  /* address = register @from + disp */
	NS_AX_PLAN_READ, /* address = the value read @from (< this read) loaded + disp */
};

enum { NS_AX_PLAN_MAX = 8, NS_AX_PLAN_MAX_TRACE = 256 };

struct ns_ax_plan_read {
	uint8_t base;   /* enum ns_ax_plan_base */
	uint8_t from;   /* a register number, or an earlier read's index */
	uint8_t ref;    /* bytes loaded as a value (1, 2, 4, 8), 0: none */
	uint16_t trace; /* bytes recorded (1..NS_AX_PLAN_MAX_TRACE), 0: none */
	uint64_t disp;
};

struct ns_ax_plan {
	unsigned n;
	struct ns_ax_plan_read r[NS_AX_PLAN_MAX];
};

/** Plan the verified program @code as reads (above), registers below @nregs only.
 * false with the reason in *@why for a program that is not straight-line, may fail
 * other than by reading memory (a division), computes an address other than a base
 * plus a constant, traces a block of computed size, or has more than NS_AX_PLAN_MAX
 * reads. Host side. */
bool ns_ax_plan_reads(const uint8_t *code, size_t len, unsigned nregs, struct ns_ax_plan *out,
                      const char **why);

/** Text listing, one instruction per line ("0003 reg 7"), appended to @out as a
 * malloc'd string; for tests and debug logs. */
char *ns_ax_disasm(const uint8_t *code, size_t len);

/* ---- Native code (ax_jit.c) -----------------------------------------------------
 *
 * ns_ax_jit_compile() translates a verified program into position-independent x86-64
 * code (no absolute addresses: helpers are called through the ctx, so the bytes can be
 * copied anywhere). The generated function is a normal SysV function:
 *
 *   uint64_t fn(const uint64_t *regs, struct ns_ax_jit_ctx *ctx);
 *
 * It returns the top of the stack at END (0 if empty, 0 on any error) and stores the
 * status in ctx->status (and ctx->pc; ctx->fault_addr only when status != OK), with the
 * interpreter's semantics exactly: same values, statuses, fault addresses, pcs, and
 * the same sequence of read_mem/read_reg/trace_mem calls (except that reads inside a
 * fast range are not seen by read_mem). It uses general registers only (no SSE/AVX/
 * x87, no string instructions, DF untouched), keeps the bottom 4 stack items in
 * r8..r11 and the rest in a frame on the native stack, and calls the helpers with the
 * stack 16-byte aligned: it obeys the jump pad's collector contract (core/arch/arch.h)
 * as long as the helpers do.
 *
 * Loops are not compiled: a program with a backward jump is refused with
 * NS_ERR_UNSUPPORTED, and so is one with more reachable instructions than the step
 * budget (opt->max_steps), so a compiled run never needs a step counter (a forward-only
 * program executes each instruction at most once). The caller runs such programs with
 * ns_ax_run() instead and should say so (the error message names the reason). */

/* A range [lo, hi) the generated code may read directly (without read_mem), e.g. the
 * hitting thread's stack from rsp-128 to its top. Set with ns_ax_jit_set_range(); it
 * must stay readable for the whole run. */
struct ns_ax_jit_range {
	uint64_t lo;
	uint64_t limit; /* hi - lo - 7: reads of <= 8 bytes at lo + [0, limit); 0: empty */
};

enum { NS_AX_JIT_NRANGES = 4 };

/* Run-time context of a generated function; the layout is used by the generated code. */
struct ns_ax_jit_ctx {
	/* Inputs, same contracts as struct ns_ax_env (called with @user as their first
	 * argument). read_reg is used only for registers >= opt->nregs. Any may be NULL:
	 * a NULL read_mem/read_reg fails the read, a NULL trace_mem makes the trace opcodes
	 * only pop, as in the interpreter. */
	int (*read_mem)(void *user, void *dst, uint64_t addr, size_t len);
	int (*read_reg)(void *user, unsigned regno, uint64_t *val);
	int (*trace_mem)(void *user, uint64_t addr, size_t len, bool nul_stop);
	void *user;
	int64_t *tsv; /* may be NULL */
	uint32_t ntsv;
	uint32_t reserved;
	/* Ranges read inline: fast[0] is checked on the hot path, fast[1..nfast-1] out of
	 * line before falling back to read_mem. Unused entries must be empty (limit 0). */
	struct ns_ax_jit_range fast[NS_AX_JIT_NRANGES];
	/* Outputs. pc then status, adjacent (END stores both with one instruction). */
	uint32_t pc;         /* offset of the instruction that stopped the run (END on success) */
	uint32_t status;     /* enum ns_ax_status */
	uint64_t fault_addr; /* NS_AX_FAULT: the address; NS_AX_BAD_REG: the register; else 0 */
};

typedef uint64_t (*ns_ax_jit_fn)(const uint64_t *regs, struct ns_ax_jit_ctx *ctx);

/** @ctx ready for a run: the callbacks and @user, no trace state variables, every fast
 * range empty, outputs cleared. Async-signal-safe. */
static inline void ns_ax_jit_ctx_init(struct ns_ax_jit_ctx *ctx,
                                      int (*read_mem)(void *, void *, uint64_t, size_t),
                                      int (*read_reg)(void *, unsigned, uint64_t *),
                                      int (*trace_mem)(void *, uint64_t, size_t, bool),
                                      void *user)
{
	*ctx = (struct ns_ax_jit_ctx){.read_mem = read_mem,
	                              .read_reg = read_reg,
	                              .trace_mem = trace_mem,
	                              .user = user};
}

struct ns_ax_jit_options {
	/* Registers 0..nregs-1 are read from the block passed as @regs (GDB numbering:
	 * NS_ARCH_PAD_NREGS = 18 for the jump pad's block, NS_AX_NREGS = 26 for a full
	 * frame, 0 for none); the others go through ctx->read_reg. */
	unsigned nregs;
	/* The step budget the interpreter would use (ns_ax_env.max_steps); 0: default. */
	unsigned max_steps;
	/* How many ctx->fast ranges the code checks before calling read_mem (0..4). */
	unsigned nfast;
};

/* Guard mode: the condition inline in a jump pad (core/arch), before the pad has saved
 * the program's registers, deciding only whether the pad must run its full path. The
 * code is a fragment, not a function: it runs with the program's registers live, uses
 * no ctx and no @regs pointer, makes no call and has no frame, and ends by falling
 * through its last byte with
 *   rax == 0  the condition is certainly false (the interpreter would finish OK with 0),
 *   rax != 0  it holds, or the guard cannot tell (a memory read outside the thread's
 *             stack range, a fault, a division by zero): run the full path, which
 *             evaluates the condition again with the complete semantics.
 * It writes rax, rcx, rdx, the pool registers r8.. it needs (*@clobber_out, a mask of
 * GDB register numbers) and the flags, nothing else. A read of a clobbered register
 * comes from [rsp + block + 8 * GDB number], which the pad fills before the guard runs;
 * other registers are read live; rsp reads rsp + rsp_add and rip reads @rip. Memory is
 * read only inside [lo, lo + limit + 7) from this thread's fs:[tls_lo] and
 * fs:[tls_limit] (initial-exec TLS, ns_ax_jit_range form; limit 0 = nothing). Programs
 * deeper than 4 items, or with trace, tsv, float or registers other than the 16 general
 * ones and rip, are refused with NS_ERR_UNSUPPORTED. */
struct ns_ax_jit_guard {
	int32_t block;   /* the clobbered registers' slots: [rsp + block + 8 * regno] */
	int32_t rsp_add; /* the program's rsp = rsp + rsp_add */
	uint64_t rip;    /* value of register rip (the tracepoint's address) */
	bool tls;        /* reads check fs:[tls_lo] / fs:[tls_limit]; false: never read */
	int32_t tls_lo, tls_limit;
};

/** Compile @code as a guard fragment into @mem (see above); *@used_out and *@clobber_out
 * as described. Other errors as ns_ax_jit_compile. */
struct ns_err *ns_ax_jit_compile_guard(const uint8_t *code, size_t len,
                                       const struct ns_ax_jit_guard *g, void *mem, size_t cap,
                                       size_t *used_out, uint32_t *clobber_out);

/** Set ctx->fast[@i] to [@lo, @hi) (an empty range if @hi < @lo + 8). */
void ns_ax_jit_set_range(struct ns_ax_jit_ctx *ctx, unsigned i, uint64_t lo, uint64_t hi);

/** Upper bound of the native code size for a program of @len bytes. */
size_t ns_ax_jit_size_bound(size_t len);

/** Compile @code (verified here again) into @mem (@cap bytes; the caller makes it
 * executable) and set *@used_out to the bytes written (or needed, if @cap is too small:
 * NS_ERR_INVALID). NS_ERR_UNSUPPORTED, with a message naming the offset and opcode or
 * the reason, for programs the JIT does not handle (backward jumps, too long for the
 * step budget); NS_ERR_INVALID if the program does not verify. Host side or the
 * agent's control thread (allocates); the generated code is async-signal-safe. */
struct ns_err *ns_ax_jit_compile(const uint8_t *code, size_t len,
                                 const struct ns_ax_jit_options *opt, void *mem, size_t cap,
                                 size_t *used_out);

#endif
