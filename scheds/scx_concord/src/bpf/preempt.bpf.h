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

/*
 * The far window of a scan from @start: where the domain's cursor stands, moved on for the
 * next scan. Only domains bigger than a scan have one (and write the shared cursor).
 */
static inline u64 scan_far_from(s32 start)
{
	u32 d = domain_of_cpu(start);

	if (domain_cpus[d] <= SCAN_MAX)
		return 0;
	return __sync_fetch_and_add(&llcs[d].scan_from, SCAN_MAX - SCAN_NEAR);
}

/* The @i-th CPU a preemption scan from @start looks at (pol_scan_pos()); -1 past the last. */
static inline s32 scan_cpu(s32 start, u32 i, u64 far_from)
{
	u32 n = domain_cpus[domain_of_cpu(start)];
	u32 k = pol_scan_pos(n, i, far_from);

	return k < n ? domain_cpu_from(start, k) : -1;
}

/*
 * A sync wake-up (pipes, UNIX sockets: the waker says it is about to sleep) from @waker, whose
 * CPU will take the woken task from @cpu's queue as soon as the waker sleeps: the waker runs on
 * the pinned task's CPU, or on a CPU of the same LLC (or global) queue. Then no other CPU is
 * preempted for it: in a pipe ping-pong every round trip kicked a CPU running the other
 * pairs, whose task then moved to the waker's freed CPU (a preemption IPI and a migration per
 * round trip, for a task that the waker's CPU takes next anyway). If the waker runs on
 * instead, its slice or the wait bound still ends the wait.
 */
static inline bool sync_waker_frees(s32 waker, s32 cpu, bool pinned)
{
	bool frees;

	if (waker < 0 || waker >= MAX_CPUS || cpu < 0 || cpu >= MAX_CPUS)
		return false;
	if (waker == cpu)
		frees = true;
	else if (pinned)
		frees = false;
	else
		frees = queue_mode == QUEUE_GLOBAL || llc_of_cpu(waker) == llc_of_cpu(cpu);
	if (frees)
		stat_inc(STAT_SYNC_WAKE);
	return frees;
}

/*
 * The cpu_ctx of the waking CPU if it is @home, the CPU whose queues @p waits in
 * (task_home_cpu(): a timer or device interrupt waking a task that slept there), and the task
 * running there may be preempted for @p (its offset is larger than @p's: preempt_for's rule);
 * NULL otherwise.
 */
static inline struct cpu_ctx *local_victim(s32 home, u64 deadline, u64 now)
{
	s32 local = bpf_get_smp_processor_id();
	struct cpu_ctx *cctx;

	if (local != home || !(cctx = cpu_ctx_of(local)))
		return NULL;
	return cctx->running_offset > (deadline > now ? deadline - now : 0) ? cctx : NULL;
}

/* Preempt @victim for a task with @deadline; @vctx is its cpu_ctx. */
static inline s32 kick_victim(s32 victim, struct cpu_ctx *vctx, u64 deadline, u64 now)
{
	/* Claim it: a second wake-up in the same instant should pick another CPU. */
	vctx->running_offset = deadline > now ? deadline - now : 0;
	scx_bpf_kick_cpu(victim, SCX_KICK_PREEMPT);
	return victim;
}

/*
 * After queueing @p (no idle CPU took it): preempt a CPU, among those @p may run on in the
 * queue's domain (its LLC, or all CPUs with the global queue; in a domain of more than
 * SCAN_MAX CPUs, those this scan looks at: scan_cpu()) other than @skip, whose running
 * task's offset is larger than @min_offset and than @p's (@p's deadline is earlier than now +
 * that offset). The waking CPU itself when it qualifies and @p last ran there (a timer or
 * device interrupt waking a task that slept there): its preemption takes effect on the way out
 * of the interrupt, where a remote CPU waits for an IPI (under single-threaded TCG, for the
 * emulator to get round to that vCPU), and the task finds its cache there. Else the one whose
 * running task has the largest offset.
 * Returns the CPU or -1.
 */
static inline s32 preempt_cpu_for(struct task_struct *p, u64 deadline, u64 now, s32 skip,
				  u64 min_offset)
{
	/* A pinned task's queue is its CPU's, whichever CPU it last ran on. */
	s32 start = task_home_cpu(p), victim = -1;
	struct cpu_ctx *cctx, *vctx = NULL;
	u64 largest = deadline > now ? deadline - now : 0;
	u64 far_from;
	u32 i;

	if (largest < min_offset)
		largest = min_offset;
	if (start != skip && (cctx = local_victim(start, deadline, now))) {
		stat_inc(STAT_KICK_LOCAL);
		return kick_victim(start, cctx, deadline, now);
	}
	far_from = scan_far_from(start);
	bpf_for(i, 0, SCAN_MAX) {
		s32 cpu = scan_cpu(start, i, far_from);

		if (cpu < 0 || cpu >= MAX_CPUS)
			break;
		if (cpu == skip)
			continue;
		if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		cctx = cpu_ctx_of(cpu);
		if (cctx && cctx->running_offset > largest) {
			largest = cctx->running_offset;
			victim = cpu;
			vctx = cctx;
		}
	}
	if (victim < 0 || !vctx)
		return -1;
	return kick_victim(victim, vctx, deadline, now);
}

static inline s32 preempt_for(struct task_struct *p, u64 deadline, u64 now)
{
	s32 victim = preempt_cpu_for(p, deadline, now, -1, 0);

	if (victim >= 0)
		stat_inc(STAT_KICK_PREEMPT);
	return victim;
}

/*
 * @cpu just took a task from its shared queue: if the new head is a wake-up that had the right
 * to preempt (enqueue called preempt_for: no idle CPU, no sync waker about to free one) and
 * would preempt a task running elsewhere in the domain that is less critical (a larger offset:
 * tick's rule), preempt that CPU now. Not for requeued tasks, like preempt_for: CPU-bound
 * equals whose offsets differ by their service lag would kick each other; not for sync
 * wake-ups, whose waker's CPU takes them (pipe ping-pong). A wake-up's kick lands on one CPU, which
 * takes the queue's head; when that head was an earlier-queued task, the woken one waited for
 * the next tick although the other CPUs ran less urgent work (interactive, 2 CPUs per LLC: the
 * periodic task lost 4 ms this way in about half of its slow wake-ups).
 */
static inline void preempt_for_next(s32 cpu, u64 now)
{
	struct task_struct *p;
	struct task_ctx *tctx;
	u64 deadline, offset;

	bpf_rcu_read_lock();
	p = __COMPAT_scx_bpf_dsq_peek(shared_dsq(cpu));
	if (p && (tctx = task_ctx(p)) && tctx->may_preempt && tctx->enq_at) {
		deadline = p->scx.dsq_vtime;
		offset = queued_offset(tctx->enq_at, deadline);
		if (preempt_cpu_for(p, deadline, now, cpu, offset) >= 0)
			stat_inc(STAT_KICK_CHAIN);
	}
	bpf_rcu_read_unlock();
}
#endif
