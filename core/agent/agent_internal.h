/* Internals of libnonstop-agent.so shared by its files. Never included from outside
 * core/agent. Everything here has hidden visibility (the library's default). */
#ifndef NS_AGENT_INTERNAL_H
#define NS_AGENT_INTERNAL_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <ucontext.h>

#include "agent/agent.h"
#include "arch/arch.h"

enum {
	NS_AGENT__TABLE_SIZE = 8192, /* open-addressing site table (power of two) */
	NS_AGENT__SLOT_SIZE = 32,    /* one out-of-line copy: insn (<= 15) + jmp (<= 14) */
	NS_AGENT__ORIG_MAX = 16,
};

/* One installed tracepoint at one address. Counters are touched by the handler; the
 * definition is immutable once published. Freed only via the retire list. */
struct ns_agent__tp {
	struct ns_rsp_tracepoint def; /* decoded INSTALL (arrays malloc'd) */
	bool has_regs;                /* an R action */
	_Atomic uint64_t hits;        /* hits where the condition held */
	_Atomic uint64_t frames;      /* frames collected (for max_frames) */
	_Atomic bool cond_err_sent;   /* the one condition-error frame was emitted */
};

/* One patched address. Immutable once published: adding or removing a tracepoint
 * publishes a new version and retires the old one. */
struct ns_agent__site {
	uint64_t addr;
	struct ns_arch_insn insn;
	uint8_t orig[NS_AGENT__ORIG_MAX]; /* original bytes at addr (orig[0] is replaced) */
	size_t orig_len;
	uint64_t slot; /* out-of-line copy (PLAIN/RIPREL, and RET as fallback), 0 if none */
	unsigned ntps;
	struct ns_agent__tp *tps[];
};

struct ns_agent__entry {
	_Atomic uint64_t key; /* address, 0 = empty; never cleared (tombstones keep probing) */
	_Atomic(struct ns_agent__site *) site; /* NULL once removed */
};

struct ns_agent__state {
	struct ns_agent_shm *shm;
	int ctl_fd;
	int mem_fd;            /* /proc/self/mem, O_RDWR: all code writes go through it */
	_Atomic bool collect;  /* false in a forked child */
	_Atomic long inflight; /* handlers running right now */
	_Atomic uint32_t gen;  /* bumped when a re-attach replaces shm (stale TLS ring) */
	struct sigaction old_trap;
	struct ns_agent__entry table[NS_AGENT__TABLE_SIZE];
};

extern struct ns_agent__state ns_agent__g;

/* agent_trap_sig.c */
void ns_agent__on_sigtrap(int sig, siginfo_t *si, void *uc);
struct ns_agent__entry *ns_agent__lookup(uint64_t addr);

/* agent_collect_sig.c */
/** Conditions, hit counts and collection for every tracepoint of @site. */
void ns_agent__collect(const struct ns_agent__site *site, ucontext_t *uc);
int ns_agent__read_reg(ucontext_t *uc, uint64_t addr, unsigned regno, uint64_t *val);

/* agent_ctl.c */
/** Start the control thread on the state already set up. */
int ns_agent__ctl_start(void);
/** A control thread is running (its connection may still be alive). */
bool ns_agent__ctl_running(void);
/** Block until RESUME arrives (or the control socket closes). */
void ns_agent__hold_wait(void);
/** pthread_atfork child handler: restore code, stop collecting. */
void ns_agent__atfork_child(void);

#endif
