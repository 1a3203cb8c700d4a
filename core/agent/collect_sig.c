/* Collection shared by the trap tier (signal context) and the stub's ptrace tier
 * (core/agent/collect.h). No malloc, no locks, no stdio. */
#include "agent/collect.h"

#include <string.h>

#include "agent/agent.h"

struct run {
	const struct ns_collect_src *src;
	struct ns_frame_builder *b;
};

static int ax_read_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	const struct run *r = ctx;
	return r->src->read_mem(r->src->ctx, dst, addr, len);
}

static int ax_read_reg(void *ctx, unsigned regno, uint64_t *val)
{
	const struct run *r = ctx;
	return r->src->read_reg(r->src->ctx, regno, val);
}

// Append a memory block with what is readable of [addr, addr+len).
static int add_mem(const struct run *r, uint64_t addr, size_t len, bool nul_stop)
{
	struct ns_frame_builder *b = r->b;
	if (len == 0)
		return 0;
	// Never reserve more than the frame has left: a large request is clipped to
	// what fits, so the block is kept (shorter) instead of dropped whole.
	size_t room = b->cap - b->len;
	if (room <= sizeof(struct ns_frame_block) + 8)
		return -1;
	if (len > room - sizeof(struct ns_frame_block) - 8)
		len = room - sizeof(struct ns_frame_block) - 8;
	uint8_t *p = ns_frame_reserve_mem(b, addr, len);
	if (!p)
		return -1;
	size_t got = r->src->read_partial(r->src->ctx, p, addr, len);
	if (nul_stop) {
		void *z = memchr(p, 0, got);
		if (z)
			got = (size_t)((uint8_t *)z - p) + 1;
	}
	ns_frame_shrink_last(b, got);
	return 0;
}

static int ax_trace_mem(void *ctx, uint64_t addr, size_t len, bool nul_stop)
{
	return add_mem(ctx, addr, len, nul_stop);
}

int ns_collect_cond(const struct ns_rsp_tracepoint *d, const struct ns_collect_src *src,
                    struct ns_ax_result *res_out)
{
	if (!d->cond)
		return 1;
	struct run r = {src, NULL};
	struct ns_ax_env env = {ax_read_mem, ax_read_reg, NULL, NULL, 0, 0, &r};
	ns_ax_run(d->cond, d->cond_len, &env, res_out);
	if (res_out->status != NS_AX_OK)
		return -1;
	return res_out->value != 0;
}

bool ns_collect_hit_fires(const struct ns_rsp_tracepoint *d, uint64_t n)
{
	switch (d->hit_mode) {
	case NS_RSP_HIT_EQ:
		return n == d->hit_n;
	case NS_RSP_HIT_GE:
		return n >= d->hit_n;
	case NS_RSP_HIT_MOD:
		return d->hit_n == 0 || n % d->hit_n == 0;
	default:
		return true;
	}
}

void ns_collect_actions(const struct ns_rsp_tracepoint *d, const struct ns_collect_src *src,
                        struct ns_frame_builder *b, uint32_t *status_out, uint64_t *fault_out)
{
	ns_collect_actions_regs(d, src, NULL, NULL, b, status_out, fault_out);
}

// X action @code natively: the interpreter's result in *@res.
static void run_native(ns_ax_jit_fn fn, const struct ns_collect_native *nat, struct run *r,
                       struct ns_ax_result *res)
{
	struct ns_ax_jit_ctx c;
	ns_ax_jit_ctx_init(&c, ax_read_mem, ax_read_reg, ax_trace_mem, r);
	for (unsigned i = 0; nat->fast && i < NS_AX_JIT_NRANGES; i++)
		c.fast[i] = nat->fast[i];
	res->value = fn(nat->regs, &c);
	res->status = (enum ns_ax_status)c.status;
	res->pc = c.pc;
	res->fault_addr = c.fault_addr;
}

void ns_collect_actions_regs(const struct ns_rsp_tracepoint *d, const struct ns_collect_src *src,
                             void (*read_regs)(void *ctx, uint64_t *regs),
                             const struct ns_collect_native *native, struct ns_frame_builder *b,
                             uint32_t *status_out, uint64_t *fault_out)
{
	struct run r = {src, b};
	uint32_t status = 0;
	uint64_t fault = 0;
	// R actions: the registers of their masks together, in one block first.
	uint64_t mask = 0;
	for (size_t i = 0; i < d->nactions; i++)
		if (d->actions[i].kind == NS_RSP_ACT_REGS)
			mask |= d->actions[i].regmask;
	mask &= ((uint64_t)1 << NS_FRAME_NREGS) - 1;
	if (mask) {
		uint64_t regs[NS_FRAME_NREGS];
		if (read_regs && mask == ((uint64_t)1 << NS_FRAME_NREGS) - 1)
			read_regs(src->ctx, regs);
		else
			for (unsigned i = 0; i < NS_FRAME_NREGS; i++)
				if (!(mask & ((uint64_t)1 << i)) ||
				    src->read_reg(src->ctx, i, &regs[i]) != 0)
					regs[i] = 0;
		ns_frame_add_regs_some(b, mask, regs);
	}
	for (size_t i = 0; i < d->nactions; i++) {
		const struct ns_rsp_action *a = &d->actions[i];
		if (a->kind == NS_RSP_ACT_MEM) {
			uint64_t base = 0;
			if (a->basereg >= 0 &&
			    src->read_reg(src->ctx, (unsigned)a->basereg, &base) != 0) {
				if (!status) {
					status = NS_AX_BAD_REG;
					fault = (uint64_t)a->basereg;
				}
				ns_frame_add_err(b, (uint32_t)i, NS_AX_BAD_REG,
				                 (uint64_t)a->basereg);
				continue;
			}
			add_mem(&r, base + (uint64_t)a->offset,
			        a->len > NS_AGENT_MAX_FRAME ? NS_AGENT_MAX_FRAME : a->len, false);
		} else if (a->kind == NS_RSP_ACT_EXPR) {
			if (native && i < 64 && (native->inert >> i & 1))
				continue; // adds nothing to the frame (a logpoint's register value)
			struct ns_ax_result res;
			if (native && native->fn && native->fn[i]) {
				run_native(native->fn[i], native, &r, &res);
			} else {
				struct ns_ax_env env = {ax_read_mem, ax_read_reg, ax_trace_mem,
				                        NULL,        0,           0,
				                        &r};
				ns_ax_run(a->code, a->code_len, &env, &res);
			}
			if (res.status != NS_AX_OK) {
				if (!status) {
					status = res.status;
					fault = res.fault_addr;
				}
				ns_frame_add_err(b, (uint32_t)i, res.status, res.fault_addr);
			}
		}
	}
	*status_out = status;
	*fault_out = fault;
}
