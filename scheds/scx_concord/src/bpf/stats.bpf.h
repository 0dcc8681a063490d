/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Wait accounting, the kernel's definition: from becoming runnable (a wake-up, or leaving a CPU
 * still runnable: preempted, slice over, yielded) to running, on every path: our queues, a
 * local run queue we placed it in directly, behind a kick or a higher scheduling class. Kept
 * per the path that ended the wait (the queue kind it was last placed by).
 */
#ifndef __CONCORD_STATS_H
#define __CONCORD_STATS_H
#include "concord.bpf.h"
#include "rules.bpf.h"

/* Raise *@max to @wait; a lost race is retried once (it can only under-report one sample). */
static inline bool raise_max(u64 *max, u64 wait)
{
	u64 old = *max;

	if (wait <= old)
		return false;
	if (__sync_val_compare_and_swap(max, old, wait) == old)
		return true;
	old = *max;
	return wait > old && __sync_val_compare_and_swap(max, old, wait) == old;
}

/* Keep @wait as the longest of its kind if it is, with who waited it (for the reader's clue). */
static inline void note_longest(const struct task_struct *p, u32 kind, u64 wait, s32 cpu)
{
	bool won;

	raise_max(&wait_win_ns[kind], wait);
	won = raise_max(&wait_max_ns[kind], wait);
	if (won) {
		wait_max_pid[kind] = p->pid;
		wait_max_cpu[kind] = cpu;
		wait_max_nr_cpus[kind] = p->nr_cpus_allowed;
	}
}

static inline void record_wait(const struct task_struct *p, struct task_ctx *tctx, u64 now, s32 cpu)
{
	u64 from = tctx->ready_at, wait, b;
	u32 kind = tctx->enq_kind;
	struct cpu_counters *c;

	tctx->enq_at = 0;
	tctx->ready_at = 0;
	if (!from || kind >= NR_QUEUE_KINDS)
		return;
	wait = time_before(from, now) ? now - from : 0;
	b = pol_wait_bucket(wait);
	if (b < NR_WAIT_BUCKETS && (c = my_counters()))
		c->wait_hist[kind][b]++;
	note_longest(p, kind, wait, cpu);
	rule_note_wait(tctx, wait);
}
#endif
