/* core/agent: what one tracepoint hit collects, shared by the in-process trap tier (the
 * agent's SIGTRAP handler) and the stub's ptrace tier, so that both produce the same
 * frames: the condition, the hit condition, and the R/M/X actions into a frame builder
 * (REGS block first, then M and X blocks in action order, an ERR block for each failed
 * action, ERR action 0xffffffff for a condition that cannot be evaluated).
 *
 * Async-signal-safe and never allocates: the target is only reached through the
 * callbacks (the agent reads its own memory fault-free, the stub reads the tracee with
 * process_vm_readv). */
#ifndef NS_AGENT_COLLECT_H
#define NS_AGENT_COLLECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ax/ax.h"
#include "frame/frame.h"
#include "rsp/rsp.h"

/* The ERR block's action number for the condition. */
#define NS_COLLECT_COND_ACTION 0xffffffffu

struct ns_collect_src {
	/** All @len bytes at @addr into @dst: 0, or -1 if any byte is unreadable. */
	int (*read_mem)(void *ctx, void *dst, uint64_t addr, size_t len);
	/** The readable prefix of [@addr, @addr+@len) into @dst; its length. */
	size_t (*read_partial)(void *ctx, void *dst, uint64_t addr, size_t len);
	/** GDB amd64 register @regno (frame.h numbering; RIP is the tracepoint's address):
	 * 0, or -1 if not available. */
	int (*read_reg)(void *ctx, unsigned regno, uint64_t *val);
	void *ctx;
};

/** Evaluate @d's condition: 1 if it holds (or there is none), 0 if false, -1 if it
 * cannot be evaluated (@res_out says why; the hit counts as false). */
int ns_collect_cond(const struct ns_rsp_tracepoint *d, const struct ns_collect_src *src,
                    struct ns_ax_result *res_out);

/** Whether passing hit number @n (1-based) fires under @d's hit condition (:H). */
bool ns_collect_hit_fires(const struct ns_rsp_tracepoint *d, uint64_t n);

/** Run @d's actions into @b (begun with ns_frame_begin). *@status_out / *@fault_out get
 * the first failed action's status and fault address (0 if none). */
void ns_collect_actions(const struct ns_rsp_tracepoint *d, const struct ns_collect_src *src,
                        struct ns_frame_builder *b, uint32_t *status_out, uint64_t *fault_out);

/* X actions compiled to native code (ax.h ns_ax_jit_compile), run instead of the
 * interpreter: same frames by the JIT's contract. */
struct ns_collect_native {
	const ns_ax_jit_fn *fn; /* per action of the tracepoint (NULL entries, or NULL:
	                           interpret) */
	const uint64_t *regs;   /* the register block the code was compiled for */
	/* The ranges the code reads inline (ctx->fast; all empty is fine), or NULL. */
	const struct ns_ax_jit_range *fast;
	/* X actions (bit i: action i < 64) that are inert (ns_ax_is_inert for the
	 * registers every tier has): they add nothing to a frame and are not run. */
	uint64_t inert;
};

/** ns_collect_actions, with @read_regs (if not NULL) reading all NS_FRAME_NREGS
 * registers at once for an R action (0 for one that is not available) instead of
 * src->read_reg for each, and @native (if not NULL) running X actions natively (its
 * read_mem/read_reg/trace_mem are @src's, as for the interpreter) and skipping the
 * inert ones. */
void ns_collect_actions_regs(const struct ns_rsp_tracepoint *d, const struct ns_collect_src *src,
                             void (*read_regs)(void *ctx, uint64_t *regs),
                             const struct ns_collect_native *native, struct ns_frame_builder *b,
                             uint32_t *status_out, uint64_t *fault_out);

#endif
