/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The wait bound: when a queued task is urgent (half of --max-wait-ms waited) and how urgency
 * orders two queue heads. ops.tick and ops.dispatch in main.bpf.c act on it; slices.bpf.h keeps
 * turns short enough for it to hold.
 */
#ifndef __CONCORD_WAIT_BOUND_H
#define __CONCORD_WAIT_BOUND_H
#include "concord.bpf.h"
#include "queues.bpf.h"

/*
 * A queued task is urgent once it has waited half the bound, which is past any deadline it
 * could have been given: ticks preempt for it and dispatch takes it first, leaving the other
 * half for tick granularity (4 ms at HZ=250) and the switch.
 */
static inline u64 urgent_wait_ns(void)
{
	return max_wait_ns / 2;
}

/* Whether a wait that began at @enq_at (0: not waiting) has lasted more than @limit by @now. */
static inline bool waited_over(u64 enq_at, u64 now, u64 limit)
{
	return pol_waited_over(enq_at, now, limit);
}

/* Whether a wait that began at @enq_at (0: not waiting) is urgent by @now. */
static inline bool wait_is_urgent(u64 enq_at, u64 now)
{
	return waited_over(enq_at, now, urgent_wait_ns());
}

/*
 * Whether the head's wait is urgent for the CPU that peeked: only if it may run there. An
 * urgent head allowed on 2 of an LLC's 16 CPUs would otherwise make all 16 end their turns at
 * every tick and put the shared queue before their own pinned tasks, for a task 14 of them
 * cannot run (a dispatch from the queue then takes a later task that may run there, if any).
 */
static inline bool head_urgent(const struct queue_head *h, u64 now)
{
	return h->present && h->here && wait_is_urgent(h->enq_at, now);
}

/*
 * Order the pinned queue's head @a and the shared queue's head @b: an urgent task first, the
 * one that has waited longer if both are (a pinned one on a tie: no other CPU can take it),
 * else the earlier deadline, except that a pinned head with a smaller offset (more
 * latency critical) also goes first when it would preempt the shared head's task as soon as
 * that started (preempt_for's rule: its deadline is earlier than now + that task's offset).
 * Without the exception a CPU would run, say, a hog whose old deadline had come due, and the
 * pinned task would wait for the next tick (4 ms at HZ=250: sched_ext slices end only on
 * ticks) although only this CPU can run it. Equal offsets get no exception: with it, any pinned
 * task that had waited at all beat an equal shared one, and pinned spinners got about twice the
 * CPU of unpinned ones (reliability suite, fairness check).
 * Two urgent heads go oldest first. Urgent pinned-first relied on another CPU of the LLC taking
 * the shared task: with many urgent pinned workers on one CPU and the other CPU idle without
 * dispatching, the LLC queue's head waited seconds and the watchdog ejected us (reliability
 * suite, resources check). Oldest first bounds every wait on every CPU by itself.
 * Returns true if @a should go before @b.
 */
static inline bool head_first(const struct queue_head *a, const struct queue_head *b, u64 now, bool *urgent)
{
	bool ao = head_urgent(a, now), bo = head_urgent(b, now);

	*urgent = false;
	if (!a->present)
		return false;
	if (!b->present)
		return true;
	if (ao && bo) {
		*urgent = true;
		return !time_before(b->enq_at, a->enq_at);
	}
	if (ao || bo) {
		*urgent = true;
		return ao;
	}
	if (time_before(a->deadline, b->deadline))
		return true;
	return a->offset < b->offset && time_before(a->deadline, now + b->offset);
}
#endif
