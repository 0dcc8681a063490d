/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Idle CPU selection and work conservation.
 *
 * On wake-up the previous CPU wins if it is idle (warm cache). Otherwise the kernel's built-in
 * topology-aware search (scx_bpf_select_cpu_dfl) looks for a fully idle SMT core, then any idle
 * CPU in the previous CPU's LLC, then its NUMA node, then any allowed CPU: an overloaded LLC
 * does not hide idle CPUs elsewhere. When a task is queued instead, an idle CPU that may run it
 * is kicked, so no CPU sleeps while a task it could run waits.
 */
#ifndef __CONCORD_IDLE_H
#define __CONCORD_IDLE_H
#include "concord.bpf.h"
#include "queues.bpf.h"

/* An idle CPU that may run migratable @p, claimed (idle bit cleared): @prev first; -1 if none. */
static inline s32 claim_idle_cpu(struct task_struct *p, s32 prev)
{
	if (bpf_cpumask_test_cpu(prev, p->cpus_ptr) && scx_bpf_test_and_clear_cpu_idle(prev))
		return prev;
	return scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
}

/*
 * Whether the kernel's idle answer @cpu for a sync wake-up is the waker's own, busy CPU with
 * tasks of ours waiting for it. scx_bpf_select_cpu_dfl() answers a sync wake-up with the
 * waker's CPU "as idle" when that CPU's local run queue is empty and any CPU is idle: the
 * waker is about to sleep. But the local run queue is empty because our waiters are in our
 * queues, not the kernel's: inserting the wakee there puts it ahead of all of them, and ahead
 * of a task pinned to that CPU above all, which has nowhere else to go, while the idle CPU
 * sleeps. A chatty unpinned chain of pipe wake-ups kept a pinned BEAM scheduler off its CPU
 * past the wait bound this way. Then a CPU that really is idle is the answer, or none.
 */
static inline bool sync_idle_is_false(s32 cpu)
{
	if (cpu != bpf_get_smp_processor_id())
		return false;
	return nr_queued(shared_dsq(cpu)) ||
	       (pinned_mode == PINNED_PER_CPU && nr_queued(pinned_dsq(cpu)));
}

static inline s32 pick_cpu_on_wakeup(struct task_struct *p, s32 prev_cpu, u64 wake_flags, bool *idle)
{
	s32 cpu, waker;

	*idle = false;
	if (task_is_pinned(p)) {
		cpu = pinned_cpu(p);

		*idle = scx_bpf_test_and_clear_cpu_idle(cpu);
		return cpu;
	}
	if (bpf_cpumask_test_cpu(prev_cpu, p->cpus_ptr) && scx_bpf_test_and_clear_cpu_idle(prev_cpu)) {
		*idle = true;
		return prev_cpu;
	}
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, idle);
	if (*idle && (wake_flags & SCX_WAKE_SYNC) && sync_idle_is_false(cpu)) {
		s32 other = claim_idle_cpu(p, prev_cpu);

		if (other >= 0)
			return other;
		*idle = false;
	}
	if (*idle || !(wake_flags & SCX_WAKE_SYNC))
		return cpu;
	/*
	 * No idle CPU, and the waker says it is about to sleep (pipes, UNIX sockets): its CPU will
	 * be the first one free, so wait on its run queue (same queue domain only: no migration
	 * policy here). Dispatching a task to the CPU whose run queue it is on is a local move;
	 * from any other CPU it is a remote migration under two run queue locks, which was most
	 * of the 27 us each dispatch cost in a pipe ping-pong (4 CPUs under TCG).
	 */
	waker = bpf_get_smp_processor_id();
	if (waker != cpu && bpf_cpumask_test_cpu(waker, p->cpus_ptr) &&
	    (queue_mode == QUEUE_GLOBAL || llc_of_cpu(waker) == llc_of_cpu(cpu)))
		return waker;
	return cpu;
}

/*
 * Whether kicking @cpu idle-only for @p's enqueue would be wasted: @cpu is the CPU running this
 * code (it schedules again before it can go idle: a requeue at the end of a slice, or a local
 * wake-up), or it is @p's own run queue on a wake-up, which the kernel reschedules itself if
 * it idles (wakeup_preempt(): our class is above the idle class). Either way we hold that run
 * queue's lock, so scx_bpf_kick_cpu() cannot look at it and queues an irq_work, a self-IPI
 * on the kicking CPU for every such enqueue; under TCG that interrupt cost more than most
 * callbacks, charged to whatever ran (mostly the chatty tasks that wake others).
 */
static inline bool kick_is_moot(s32 cpu, const struct task_struct *p, u64 enq_flags)
{
	return cpu == bpf_get_smp_processor_id() ||
	       ((enq_flags & SCX_ENQ_WAKEUP) && cpu == scx_bpf_task_cpu(p));
}

/*
 * Wake @cpu if it is idle or on its way there. SCX_KICK_IDLE is cheap on a busy CPU, and unlike
 * testing the idle bit it also catches a CPU that is inside balance (its ops.dispatch may have
 * looked before our insert) and has not set its idle bit yet: without the kick it would sleep
 * with our task queued. Not when the kick is moot (kick_is_moot()). Returns whether the CPU
 * was known idle (for the stats).
 */
static inline bool kick_if_idle(s32 cpu, const struct task_struct *p, u64 enq_flags)
{
	bool was_idle = scx_bpf_test_and_clear_cpu_idle(cpu);

	if (!kick_is_moot(cpu, p, enq_flags))
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
	if (was_idle)
		stat_inc(STAT_KICK_IDLE);
	return was_idle;
}

/*
 * Whether this caller is the first to act since a tick before @now, by the time in *@at (which
 * it then moves to @now): the nets below run from every busy CPU's tick, and once per tick per
 * domain is enough. The CPU that wins the exchange acts for all.
 */
static inline bool first_this_tick(u64 *at, u64 now)
{
	u64 last = *at;

	if (last && time_before(now, last + tick_ns))
		return false;
	return __sync_val_compare_and_swap(at, last, now) == last;
}

/*
 * A task in @cpu's LLC queue has waited the whole bound: wake every idle CPU of the LLC
 * (SCX_KICK_IDLE leaves busy ones alone). The net behind the per-enqueue kicks: the reliability
 * suite caught a CPU sitting idle for seconds with its LLC queue full (stress-ng affinity
 * churn), the kicks of the enqueues having gone elsewhere or been lost; only ticks of busy CPUs
 * still run then. Once per tick per domain (first_this_tick()): every busy CPU of the LLC
 * ticks, and without the limit sustained overload had each of them kick all the others at every
 * tick, kicks growing with the square of the CPUs per LLC.
 */
static inline void kick_idle_llc(s32 cpu, u64 now)
{
	u32 d = domain_of_cpu(cpu), i;

	if (!first_this_tick(&llcs[d].net_kick_at, now))
		return;
	stat_inc(STAT_NET_KICK);
	bpf_for(i, 1, nr_cpus) {
		s32 other = domain_cpu_from(cpu, i);

		if (other < 0)
			break;
		scx_bpf_kick_cpu(other, SCX_KICK_IDLE);
	}
}

/*
 * Note that a task was just put into idle @cpu's local run queue (run_on_idle_cpu()); ops.running
 * on @cpu clears it. Only our queues are visible to the wait bound: a task in a local run queue
 * waits for that CPU alone, and if that CPU does not wake, nothing else will run it.
 */
static inline void note_direct(s32 cpu, u64 now)
{
	struct cpu_ctx *cctx = cpu_ctx_of(cpu);

	if (cctx)
		cctx->direct_at = now ?: 1;
}

/*
 * Whether @cpu, idle, has left a task waiting for it alone for more than a tick: one we put in
 * its local run queue (note_direct()) that it has not run, or the head of its pinned queue
 * while none of our tasks runs there (a busy CPU's own tick takes care of that head). Both can
 * run nowhere else, so a lost kick leaves them waiting until that CPU wakes for another reason,
 * past any wait bound.
 */
static inline bool left_waiting(s32 cpu, u64 now)
{
	struct cpu_ctx *cctx = cpu_ctx_of(cpu);
	struct queue_head h = {};

	if (!cctx)
		return false;
	if (pol_waited_over(cctx->direct_at, now, tick_ns))
		return true;
	if (pinned_mode != PINNED_PER_CPU || cctx->ours_running)
		return false;
	peek_head(pinned_dsq(cpu), cpu, &h);
	return h.present && pol_waited_over(h.enq_at, now, tick_ns);
}

/*
 * The net under the kicks of tasks that only one CPU can run: from a busy CPU's tick, kick again
 * every idle CPU of its domain that left such a task waiting more than a tick (left_waiting()).
 * The first kick (the wake-up's IPI, or ours) may come to nothing, and then a task pinned to that
 * CPU waits past the wait bound while the CPU stays idle and no other CPU can run it. The kick
 * is idle-only, so a CPU that did wake is left alone. Once per tick per domain, like
 * kick_idle_llc(), for the same reason. A CPU outside every busy CPU's domain is not covered:
 * a domain that is entirely idle has no ticks.
 */
static inline void rekick_late(s32 cpu, u64 now)
{
	u32 d = domain_of_cpu(cpu), i;

	if (!first_this_tick(&llcs[d].rekick_at, now))
		return;
	bpf_for(i, 1, nr_cpus) {
		s32 other = domain_cpu_from(cpu, i);

		if (other < 0)
			break;
		if (!left_waiting(other, now))
			continue;
		scx_bpf_kick_cpu(other, SCX_KICK_IDLE);
		stat_inc(STAT_REKICK);
	}
}

/*
 * After queueing migratable @p: wake @idle, the CPU claim_idle_cpu() found for it, which
 * takes the queue's head. True if there was one. With none marked idle, the task's own CPU
 * @own may be about to go idle all the same: kick it idle-only, unless that is moot.
 */
static inline bool kick_idle_for(s32 idle, s32 own, const struct task_struct *p, u64 enq_flags)
{
	if (idle >= 0) {
		scx_bpf_kick_cpu(idle, SCX_KICK_IDLE);
		stat_inc(STAT_KICK_IDLE);
		return true;
	}
	if (!kick_is_moot(own, p, enq_flags))
		scx_bpf_kick_cpu(own, SCX_KICK_IDLE);
	return false;
}
#endif
