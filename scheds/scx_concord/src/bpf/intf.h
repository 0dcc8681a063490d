/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Types and constants shared by the BPF scheduler and its Rust side (bindgen turns this file
 * into bpf_intf.rs). Queue ids, stat indices and wait-histogram layout are defined here once.
 */
#ifndef __CONCORD_INTF_H
#define __CONCORD_INTF_H

#ifndef __VMLINUX_H__
typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef int s32;
typedef long long s64;
#endif

enum concord_consts {
	MAX_CPUS		= 1024,
	MAX_LLCS		= 256,
	MAX_NODES		= 64,

	/* DSQ ids: a CPU's pinned queue is its CPU id; LLC queues and the global queue above. */
	DSQ_PINNED_BASE		= 0,
	DSQ_LLC_BASE		= 0x10000,
	DSQ_GLOBAL		= 0x20000,
	DSQ_STALL		= 0x20001,	/* --debug-stall-comm: never dispatched */
	STALL_COMM_LEN		= 16,		/* the kernel's TASK_COMM_LEN */

	/* Wait histogram: 4 sub-buckets per power of two of microseconds, up to ~2^24 us. */
	WAIT_SUB_BITS		= 2,
	NR_WAIT_BUCKETS		= 100,

	/*
	 * Wake-up preemption looks at most SCAN_MAX CPUs of the task's domain: its SCAN_NEAR
	 * nearest in the domain's list, and a window of the rest that moves on at every scan
	 * (pol_scan_pos()).
	 */
	SCAN_NEAR		= 32,
	SCAN_MAX		= 64,

	/*
	 * The shortest turn of any task (us): --slice-min-us's lowest value, and the floor of a
	 * light task's turn below slice_min (pol_light_turn()).
	 */
	SLICE_FLOOR_US		= 50,

	/*
	 * cgroups with a node of their own (weights.bpf.h; a cgroup past it weighs as if its
	 * tasks were in its parent), how deep a cgroup's weight is followed up, and the fixed
	 * point of a hierarchical share (1 = the whole machine).
	 */
	MAX_CGROUPS		= 16384,
	CG_MAX_DEPTH		= 16,
	CG_SHARE_SHIFT		= 20,

	/* Rules of the --config file (rules.bpf.h), and a name's length in them (TASK_COMM_LEN). */
	MAX_RULES		= 16,
	RULE_COMM_LEN		= 16,
	/*
	 * The latency criticality a rule's `latency` class gives at least: a task woken ~1000 times a
	 * second that wakes others ~250 times (pol_lat_cri()).
	 */
	LAT_CRI_LATENCY		= 17,
};

/* A rule's class: what its tasks get (rules.bpf.h). */
enum rule_class {
	RULE_CLASS_NORMAL	= 0,
	RULE_CLASS_LATENCY	= 1,	/* criticality at least LAT_CRI_LATENCY; may preempt */
	RULE_CLASS_BATCH	= 2,	/* no criticality, never preempts on wake-up */
};

/* A rule's may-preempt: its class's choice, or always / never. */
enum rule_preempt {
	RULE_PREEMPT_CLASS	= 0,
	RULE_PREEMPT_YES	= 1,
	RULE_PREEMPT_NO		= 2,
};

/*
 * One rule of the --config file, as src/rules.rs lays it out: a task matches when every
 * matcher set (len or match_* non-zero) holds; the first matching rule's actions apply.
 */
struct rule {
	u8 comm[RULE_COMM_LEN];		/* the thread's name ... */
	u8 pcomm[RULE_COMM_LEN];	/* ... and its process's (thread group leader's) */
	u32 comm_len;			/* bytes of comm compared (0: any name) */
	u32 comm_prefix;		/* 1: comm is a prefix, else the whole name */
	u32 pcomm_len;
	u32 pcomm_prefix;
	u32 match_cgroup;		/* 1: its cgroup is one user space marked (cg_rule_bits) */
	u32 match_uid;
	u32 uid;			/* effective uid */
	u32 match_gid;
	u32 gid;			/* effective gid */
	u32 match_nice;
	s32 nice_min;
	s32 nice_max;
	u32 match_nr_cpus;
	u32 nr_cpus_min;		/* CPUs it may run on */
	u32 nr_cpus_max;
	/* actions */
	u32 class;			/* enum rule_class */
	u32 preempt;			/* enum rule_preempt */
	u32 lat_cri_floor;		/* 0: the class's */
	u64 slice_ns;			/* its turns at most this (0: the policy's) */
};

/* Per rule, per CPU (summed by stats.rs). */
struct rule_counters {
	u64 matched;			/* tasks that came to match it */
	u64 run_ns;			/* CPU time its tasks used */
	u64 wait_max_ns;		/* longest wait of its tasks since attach (per CPU) */
	u64 wait_hist[NR_WAIT_BUCKETS];	/* their waits, as cpu_counters.wait_hist */
};

/* --cgroup-weights: whether cpu.weight shares CPU between sibling cgroups. */
enum cgroup_weights_mode {
	CGROUP_WEIGHTS_HIERARCHICAL	= 0,
	CGROUP_WEIGHTS_IGNORE		= 1,
};

/* --queue: where tasks that may run on several CPUs wait. */
enum queue_mode {
	QUEUE_PER_LLC		= 0,
	QUEUE_GLOBAL		= 1,
};

/* --pinned-queue: where tasks that may run on one CPU only wait. */
enum pinned_mode {
	PINNED_PER_CPU		= 0,
	PINNED_SHARED		= 1,	/* the scx_lavd design behind the Erlang outage */
};

enum deadline_mode {
	DEADLINE_CAPPED		= 0,	/* offset from recent behaviour, capped at max_wait/2 */
	DEADLINE_GREEDY		= 1,	/* scx_lavd's pre-fix model: greedy penalty, no wait cap */
};

/* Where a task waited before it ran: the wait histograms are kept per kind. */
enum queue_kind {
	QK_DIRECT		= 0,	/* dispatched straight to an idle CPU */
	QK_PINNED		= 1,	/* a CPU's own pinned queue */
	QK_SHARED		= 2,	/* an LLC queue or the global queue */
	NR_QUEUE_KINDS		= 3,
};

enum stat_idx {
	STAT_DIRECT_IDLE	= 0,	/* task sent straight to an idle CPU (wake-up or enqueue) */
	STAT_DISPATCH_PINNED,		/* dispatched from the CPU's pinned queue */
	STAT_DISPATCH_LLC,		/* dispatched from the CPU's own LLC (or global) queue */
	STAT_PULL_XLLC,			/* pulled from another LLC's queue, same node */
	STAT_PULL_XNODE,		/* pulled from another node's LLC queue */
	STAT_KEEP_RUNNING,		/* nothing queued: the previous task kept the CPU */
	STAT_KICK_IDLE,			/* woke an idle CPU for a queued task */
	STAT_KICK_PREEMPT,		/* preempted a CPU for a woken task with an earlier deadline */
	STAT_KICK_CHAIN,		/* preempted a CPU for the head left after a dispatch */
	STAT_SYNC_WAKE,			/* no preemption: a sync waker's CPU will take the task */
	STAT_TICK_PREEMPT,		/* tick shortened a slice for a waiting task */
	STAT_SLICE_TIMER,		/* a short slice (someone waited) ended by its timer */
	STAT_URGENT,			/* dispatched out of deadline order: urgent (half the bound waited) */
	STAT_ENQ_PINNED,		/* enqueues of pinned tasks */
	STAT_ENQ_SHARED,		/* enqueues of migratable tasks */
	STAT_BALANCE_PULL,		/* pulled from an LLC queue busier than ours */
	STAT_KICK_LOCAL,		/* of the preemptions, of the waking CPU itself (no IPI) */
	STAT_RUN_HERE,			/* short wake-ups run at once on the CPU they preempted */
	STAT_SYNC_HANDOFF,		/* sync wake-ups put on the waker's CPU, next in line there */
	STAT_YIELD,			/* yielders queued behind their equals (sched_yield) */
	STAT_YIELD_TURN,		/* turns cut to slice_min: the task before them yielded */
	STAT_NET_KICK,			/* an LLC queue head waited the bound: idle CPUs woken */
	STAT_REKICK,			/* an idle CPU left a task only it can run waiting a tick: kicked again */
	STAT_KEEP_FIRST,		/* a task whose turn ended kept its CPU: first in deadline order */
	STAT_BUSY_CHAIN,		/* sync hand-offs in a chain busy past slice_max: not critical */
	STAT_AHEAD_LOCAL,		/* pinned wake-ups put before later-due tasks in a local run queue */
	NR_CONCORD_STATS,
};

/*
 * Counters and wait histograms, one copy per CPU (the `counters` per-CPU array), summed by the
 * Rust side (stats.rs): every callback counts, and one shared copy was a cache line that every
 * CPU's atomic increments pulled across the machine.
 */
struct cpu_counters {
	u64 stats[NR_CONCORD_STATS];
	u64 wait_hist[NR_QUEUE_KINDS][NR_WAIT_BUCKETS];
};

/* Input and output of the policy_probe program (BPF and Rust policy agree: tested). */
struct policy_probe_args {
	u64 avg_runtime_ns;
	u64 wake_freq;
	u64 waker_freq;
	u64 weight;
	u64 nr_waiting;		/* shared-queue waiters; pinned waiters are nr_waiting % 5 */
	u64 domain_cpus;
	u64 wait_ns;		/* also the run length for vtime_after */
	u64 vtime;
	u64 vclock;
	/* outputs */
	u64 lat_cri;
	u64 deadline_offset_ns;
	u64 slice_ns;
	u64 wait_bucket;
	u64 freq_after;		/* freq_update(wake_freq, interval = wait_ns) */
	u64 freq_since;		/* freq_since(wake_freq, since = wait_ns) */
	u64 credit_ns;		/* service_credit(vtime, vclock, ..., avg_runtime_ns, ...) */
	u64 offset_ns;		/* offset_with_lag(deadline_offset_ns, vtime, vclock, ...) */
	u64 vtime_after;	/* vtime_after_run(vtime, ran = wait_ns, weight, vclock, ...) */
	u64 vclock_after;	/* clock_after_start(vclock, vtime, ...) */
	u64 yield_offset_ns;	/* yield_offset(deadline_offset_ns, slice_max, cap) */
	u64 timer_needed;	/* timer_needed(nr_waiting % 5, nr_waiting, domain_cpus, weight,
				 * tick = wait_ns, urgent = cap) */
	u64 waited_over;	/* waited_over(enq_at = vtime, now = vclock, limit = wait_ns) */
	u64 vtime_handoff;	/* vtime_on_handoff(wakee = wait_ns, waker = vtime,
				 * ran = avg_runtime_ns, weight, vclock, ...) */
	u64 cut_short;		/* cut_short(ran = wait_ns, turn = slice_ns, slice_min) */
	u64 heaviest;		/* input: the domain's heaviest weight lately */
	u64 offset_weight;	/* offset_weight(weight, heaviest) */
	u64 yield_behind;	/* yield_behind(d = vtime, own = vclock, head = vclock + wait_ns,
				 * slice_max) */
	u64 handoff_verdict;	/* handoff_verdict(ran = wait_ns, runnable = nr_waiting & 1,
				 * slice_min): 0 pending, 1 yes, 2 no */
	u64 share;		/* share(x = vtime, part = weight, whole = heaviest) */
	u64 cgroup_weight;	/* cgroup_weight(hw = vtime, total = vclock) */
};

/*
 * Input and output of the scan_probe program: the CPUs a wake-up preemption from @start looks
 * at, in order (-1 past the last), and where the domain's far window started (its cursor).
 */
struct scan_probe_args {
	u64 far_from;
	s32 start;
	s32 cpus[SCAN_MAX];
};

#endif /* __CONCORD_INTF_H */
