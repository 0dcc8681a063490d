/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Wake-up preemption. A woken task takes a busy CPU at once when its deadline is earlier
 * than the deadline the running task would get if it were queued now (now + its offset): a
 * latency-critical wake-up preempts a hog, a hog never preempts anything, and equals wait for
 * the slice to end. Without this a woken task waits a whole slice whenever all CPUs are busy.
 */
#ifndef __CONCORD_PREEMPT_H
#define __CONCORD_PREEMPT_H
#include "concord.bpf.h"
#include "queues.bpf.h"

/* CPUs looked at per enqueue: enough for any LLC of today, bounded for the verifier and cost. */
#define PREEMPT_SCAN_MAX	64

/*
 * After queueing @p (no idle CPU took it): preempt the CPU, among those @p may run on in the
 * queue's domain (its LLC, or all CPUs with the global queue), whose running task has the
 * largest offset, if @p's deadline is earlier than now + that offset. Returns the CPU or -1.
 */
static inline s32 preempt_for(struct task_struct *p, u64 deadline, u64 now)
{
	/* A pinned task's queue is its CPU's, whichever CPU it last ran on. */
	s32 start = task_home_cpu(p), victim = -1;
	u32 llc = start >= 0 && start < MAX_CPUS ? cpu_llc[start] : 0;
	struct cpu_ctx *cctx, *vctx = NULL;
	u64 largest = deadline > now ? deadline - now : 0;
	u32 i;

	bpf_for(i, 0, PREEMPT_SCAN_MAX) {
		s32 cpu;

		if (i >= nr_cpus)
			break;
		cpu = (start + i) % nr_cpus;
		if (cpu < 0 || cpu >= MAX_CPUS)
			break;
		if (queue_mode != QUEUE_GLOBAL && cpu_llc[cpu] != llc)
			continue;
		if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		cctx = cpu_ctx_of(cpu);
		if (cctx && cctx->running_delta > largest) {
			largest = cctx->running_delta;
			victim = cpu;
			vctx = cctx;
		}
	}
	if (victim < 0 || !vctx)
		return -1;
	/* Claim it: a second wake-up in the same instant should pick another CPU. */
	vctx->running_delta = deadline > now ? deadline - now : 0;
	scx_bpf_kick_cpu(victim, SCX_KICK_PREEMPT);
	stat_inc(STAT_KICK_PREEMPT);
	return victim;
}
#endif
