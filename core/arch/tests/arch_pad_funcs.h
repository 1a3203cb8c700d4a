/* Functions that arch_pad_test displaces into jump pads (arch_pad_funcs.c) and the
 * collectors it uses (arch_pad_collector.c, built with -mgeneral-regs-only). */
#ifndef ARCH_PAD_FUNCS_H
#define ARCH_PAD_FUNCS_H

#include <stdint.h>

extern long pf_global;
long pf_riprel(long x);
long pf_callee(long x);
long pf_call(long x);
long pf_loop(long n);
long pf_switch(long k, long v);
long pf_short(long x);

long pa_jcc(long x);
long pa_callee(long x, long y);
long pa_call(long x);
long pa_call2(long x);
long pa_loop(long n);
void pa_loop_body(void);
void pa_loop_dec(void);
void pa_loop_jle(void);
void pa_probe_target(void);
void pa_probe_run(void *entry, uint64_t flags);
long pa_bare(long x);
extern uint64_t pa_dump[18];

/* Collector state: ctx is a struct pa_counter. */
struct pa_counter {
	uint64_t hits;
	uint64_t last[18];
	uint64_t rsp_mod16; /* the collector's own rsp % 16 at entry of its body */
};
void pa_collect_count(void *ctx, const uint64_t *regs);
void pa_collect_nop(void *ctx, const uint64_t *regs);

/* An inline record's read function (arch.h "Memory reads"): copies, or fails for
 * fail_addr; counts its calls and checks the per-hit state and the stack alignment. */
struct pa_reads {
	uint64_t calls, bad_state, misaligned, fail_addr, last_len;
};
extern struct pa_reads pa_reads;
uint64_t pa_read_fn(void *dst, uint64_t addr, uint64_t len, uint64_t *state);

#endif
