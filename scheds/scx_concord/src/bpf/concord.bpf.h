/* SPDX-License-Identifier: GPL-2.0 */
/*
 * State shared by the concerns of scx_concord (one compilation unit: the concern files are
 * headers so their helpers stay static inline and the verifier sees whole call paths).
 */
#ifndef __CONCORD_BPF_H
#define __CONCORD_BPF_H

#include <scx/common.bpf.h>
#include "intf.h"
#include "policy.h"

/* Load-time configuration, written by the Rust side into read-only data before load. */
const volatile u32 nr_cpus = 1;		/* possible CPU ids */
const volatile u32 nr_llcs = 1;
const volatile u32 queue_mode = QUEUE_PER_LLC;
const volatile u32 pinned_mode = PINNED_PER_CPU;
const volatile u32 deadline_mode = DEADLINE_CAPPED;
const volatile u64 slice_max_ns = 5000000ULL;
const volatile u64 slice_min_ns = 500000ULL;
const volatile u64 max_wait_ns = 50000000ULL;
const volatile u32 cpu_llc[MAX_CPUS];
const volatile u32 llc_node[MAX_LLCS];
/* CPUs per scheduling domain (per LLC; with the global queue, domain 0 has them all). */
const volatile u32 domain_cpus[MAX_LLCS];
/*
 * The domains' CPU ids grouped per domain: domain d's are domain_cpu_list[domain_first[d] +
 * k] for k < domain_cpus[d], and CPU c is at k = cpu_domain_pos[c] in its own (src/domains.rs).
 */
const volatile u32 domain_cpu_list[MAX_CPUS];
const volatile u32 domain_first[MAX_LLCS];
const volatile u32 cpu_domain_pos[MAX_CPUS];
/* Debug knob for the failure-path tests: raise a BPF error this long after init (0 = off). */
const volatile u64 debug_error_after_ns;
/*
 * Debug knob for the watchdog test: tasks of this name (comm) are never dispatched, so the
 * kernel's watchdog must eject us with its stall reason ("" = off).
 */
const volatile char debug_stall_comm[STALL_COMM_LEN];

/* @p is named debug_stall_comm: it goes to DSQ_STALL, which no CPU ever consumes. */
static __always_inline bool debug_stalled(const struct task_struct *p)
{
	u32 i;

	if (!debug_stall_comm[0])
		return false;
#pragma unroll
	for (i = 0; i < STALL_COMM_LEN; i++) {
		if (p->comm[i] != debug_stall_comm[i])
			return false;
		if (!p->comm[i])
			return true;
	}
	return true;
}

/* Deadline offsets are capped at half the wait bound (see task_deadline()). */
static inline u64 offset_cap_ns(void)
{
	return max_wait_ns / 2;
}

/* How far a task's vtime may run ahead of or behind its domain's clock (policy.h). */
static inline u64 lag_max_ns(void)
{
	return slice_max_ns;
}

/*
 * Length of the kernel's tick (1/HZ), measured by ops.tick against jiffies (a guest may have
 * no kernel config to read HZ from); until then Debian's 250 Hz.
 */
u64 tick_ns = 4000000ULL;

/*
 * Per scheduling domain (an LLC, or everything with the global queue), each on its own cache
 * line: the domain's CPUs write it at every switch, and with one array of bare counters eight
 * domains' writers shared a line.
 */
struct llc_ctx {
	u64 vclock;		/* largest vtime started in the domain */
	u64 net_kick_at;	/* last kick_idle_llc() for the domain (one per tick is enough) */
	u64 rekick_at;		/* last rekick_late() scan of the domain (one per tick) */
	u64 scan_from;		/* far window of the next preemption scan (pol_scan_pos()) */
	u64 heavy_weight;	/* heaviest CPU-bound weight started lately (note_heavy()) */
	u64 heavy_at;		/* when a task of that weight last started */
} __attribute__((aligned(64)));

struct llc_ctx llcs[MAX_LLCS];

/* Running average of tasks' svc_ns as they stop (greedy model; racy updates are fine). */
u64 avg_svc_ns;

/* Counters and wait histograms of each CPU (struct cpu_counters), summed by stats.rs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	/* by size: the skeleton's generated Rust types cannot derive Default for its arrays */
	__uint(value_size, sizeof(struct cpu_counters));
} counters SEC(".maps");
u64 wait_max_ns[NR_QUEUE_KINDS];
/* Who waited wait_max_ns (best effort under races): pid, the CPU it then ran on, its CPU count. */
u64 wait_max_pid[NR_QUEUE_KINDS];
u64 wait_max_cpu[NR_QUEUE_KINDS];
u64 wait_max_nr_cpus[NR_QUEUE_KINDS];
/*
 * Longest wait of each kind since user space last took it (it swaps it with 0 at every stats
 * snapshot and keeps the values per snapshot), so a reader gets the exact longest wait of its
 * own interval rather than a histogram bucket's upper bound or the since-attach record.
 */
u64 wait_win_ns[NR_QUEUE_KINDS];

struct task_ctx {
	u64 ready_at;		/* became runnable (woken, or left a CPU still runnable); 0: running
				 * or asleep. The wait the kernel counts (schedstat run delay). */
	u64 enq_at;		/* when its current wait in our queues began (0: not waiting) */
	u32 enq_kind;		/* queue_kind it waits in */
	u32 keep_place;		/* preempted before it ran slice_min: next queueing keeps its place */
	s32 sync_waker_cpu;	/* woken by a sync wake-up from this CPU + 1 (0: not), for enqueue */
	u32 may_preempt;	/* queued by a wake-up that had the right to preempt */
	u32 yielded;		/* called sched_yield(): next queueing goes behind its equals */
	u32 slice_timer;	/* its turn needs a slice timer (pol_timer_needed at its queueing) */
	u32 yield_turn;		/* running a turn given by a yield (slice_min): not a runtime sample */
	u64 wait_from;		/* enq_at of its last queueing (kept across a keep_place requeue) */
	u64 deadline;		/* deadline of its last queueing */
	u64 vtime;		/* weighted CPU time, within lag_max of its domain's vclock */
	u64 run_at;		/* when it last started running */
	u64 run_turn;		/* the slice it was given for that run (pol_cut_short()) */
	u64 avg_runtime;
	u64 wake_freq;
	u64 waker_freq;
	u64 last_wake_at;
	u64 last_waker_at;
	u64 lat_cri;
	u64 chain_at;		/* when the work it carries on began: its last wake-up that was not
				 * a sync hand-off, or its waker's chain_at (chain_on_sync_wakeup) */
	u32 chain_wake;		/* this wake-up is a sync hand-off, for ops.runnable */
	u32 busy_hop;		/* its last wake-up carried on work busy past slice_max */
	u64 handoff_at;		/* its last sync wake-up of another task, until judged (0 then) */
	u64 handoff_ran;	/* CPU time it used since then, in runs that have ended */
	u32 hands_off;		/* it slept within slice_min of CPU after its last judged sync
				 * wake-up: its sync wake-ups hand its work on (the hint held) */
	u64 svc_ns;		/* weighted CPU time used since it joined (greedy model) */
	u64 cgid;		/* its cgroup's id (the cpu controller's: init_task, cgroup_move) */
	u64 charged_cgid;	/* the cgroup it is counted runnable in (weights.bpf.h); 0: none */
	u64 charged_w;		/* the nice weight it is counted with there */
	u64 weight;		/* what it weighs for the policy (weight_of()); 0: its nice weight */
	u32 rule;		/* the rule it matched (index + 1; 0: none), rules.bpf.h */
	u64 rule_sig;		/* what that match looked at (facts_sig()) ... */
	u64 rule_gen;		/* ... and rules_gen then */
	u64 rule_run_at;	/* its CPU time counted for its rule up to then (rule_note_run()) */
	u64 rule_checked_at;	/* when rules_recheck() last read its facts */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

struct cpu_ctx {
	u64 running_offset;	/* deadline offset of the task running here (for preemption) */
	u64 run_seq;		/* runs started here: a slice timer ends only the run it was set for */
	u32 pull_llc;		/* busier LLC (+1) the next dispatch here pulls from; 0: none */
	u32 yielder_pid;	/* the task that just yielded this CPU (0: none): see ops.yield */
	u64 direct_at;		/* a task was put in this idle CPU's local run queue then (0: it
				 * has run something since): see rekick_late() */
	u64 local_dl;		/* at most the earliest deadline of the tasks in this CPU's local
				 * run queue (0: unknown): see ahead_of_local() */
	u32 ours_running;	/* one of our tasks runs here (ops.running to ops.stopping) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct cpu_ctx);
} cpu_ctxs SEC(".maps");

static inline struct task_ctx *task_ctx(const struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctxs, (struct task_struct *)p, 0, 0);
}

static inline struct cpu_ctx *cpu_ctx_of(s32 cpu)
{
	u32 zero = 0;
	return bpf_map_lookup_percpu_elem(&cpu_ctxs, &zero, cpu);
}

/*
 * This CPU's counters. Plain increments: the callbacks that count run with interrupts off
 * (under a run queue or task lock), so nothing else on this CPU writes meanwhile; at worst a
 * slice timer interrupting a sleepable callback loses one count, which a counter can afford.
 */
static inline struct cpu_counters *my_counters(void)
{
	u32 zero = 0;

	return bpf_map_lookup_elem(&counters, &zero);
}

static inline void stat_inc(u32 idx)
{
	struct cpu_counters *c = my_counters();

	if (c && idx < NR_CONCORD_STATS)
		c->stats[idx]++;
}

#endif
