/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Queues: a deadline-ordered queue per CPU for pinned tasks, one per LLC (or one global) for
 * the rest. A CPU dispatches the earliest deadline among its own pinned queue and its LLC
 * queue, unless a task at the head of either is urgent (waited half the bound): then the
 * urgent one goes first, the older one if both are.
 */
#ifndef __CONCORD_QUEUES_H
#define __CONCORD_QUEUES_H
#include "concord.bpf.h"

static inline u64 pinned_dsq(s32 cpu)
{
	return DSQ_PINNED_BASE + (u64)cpu;
}

static inline u64 llc_dsq_of_llc(u32 llc)
{
	return DSQ_LLC_BASE + llc;
}

/*
 * LLC of @cpu (0 if out of range). The mask behind a compiler barrier restates the bound for
 * the verifier: after inlining, clang merged the range test away from the index it guards,
 * and the verifier refused to load --pinned-queue shared.
 */
static inline u32 llc_of_cpu(s32 cpu)
{
	u32 c = (u32)cpu, llc;

	if (c >= MAX_CPUS)
		return 0;
	barrier_var(c);		/* clang may not drop the mask then */
	llc = cpu_llc[c & (MAX_CPUS - 1)];
	return llc < MAX_LLCS ? llc & (MAX_LLCS - 1) : 0;
}

static inline u64 shared_dsq(s32 cpu)
{
	if (queue_mode == QUEUE_GLOBAL || cpu < 0 || cpu >= MAX_CPUS)
		return DSQ_GLOBAL;
	return llc_dsq_of_llc(llc_of_cpu(cpu));
}

/* Can run on exactly one CPU: its affinity says so, or migration is disabled for now. */
static inline bool task_is_pinned(const struct task_struct *p)
{
	return p->nr_cpus_allowed == 1 || is_migration_disabled(p);
}

/* The CPU a pinned task must run on. */
static inline s32 pinned_cpu(const struct task_struct *p)
{
	if (p->nr_cpus_allowed == 1)
		return bpf_cpumask_first(p->cpus_ptr);
	return scx_bpf_task_cpu(p);
}

/* Tasks waiting in @dsq (0 if it does not exist). */
static inline u64 nr_queued(u64 dsq)
{
	s32 n = scx_bpf_dsq_nr_queued(dsq);

	return n > 0 ? n : 0;
}

/* The CPU whose queues a task waits in: its pinned CPU, or the CPU it last ran on. */
static inline s32 task_home_cpu(const struct task_struct *p)
{
	return task_is_pinned(p) ? pinned_cpu(p) : scx_bpf_task_cpu(p);
}

/* Scheduling domain of a CPU (index into llcs): its LLC, or 0 with the global queue. */
static inline u32 domain_of_cpu(s32 cpu)
{
	if (queue_mode == QUEUE_GLOBAL)
		return 0;
	return llc_of_cpu(cpu);
}

/*
 * The @k-th CPU of @cpu's domain counting from @cpu itself (k = 0 is @cpu), wrapping round;
 * -1 past the domain's size. Walks cover an LLC's members wherever they are numbered.
 */
static inline s32 domain_cpu_from(s32 cpu, u32 k)
{
	u32 c = (u32)cpu, d, n, idx;

	if (c >= MAX_CPUS)
		return -1;
	d = domain_of_cpu(cpu);
	n = domain_cpus[d];
	if (!n || k >= n)
		return -1;
	barrier_var(c);		/* clang may not drop the masks then (see llc_of_cpu()) */
	idx = domain_first[d] + (cpu_domain_pos[c & (MAX_CPUS - 1)] + k) % n;
	if (idx >= MAX_CPUS)
		return -1;
	barrier_var(idx);
	return domain_cpu_list[idx & (MAX_CPUS - 1)];
}

struct queue_head {
	u64 dsq;
	u64 deadline;
	u64 enq_at;
	u64 offset;	/* deadline - enq_at: how urgent it was when queued */
	bool present;
	bool here;	/* it may run on the CPU that peeked */
};

/* How urgent a task was when queued at @enq_at with @deadline (0 if credit put it before). */
static inline u64 queued_offset(u64 enq_at, u64 deadline)
{
	return enq_at && time_before(enq_at, deadline) ? deadline - enq_at : 0;
}

/* The head of @dsq as seen from @cpu. */
static inline void peek_head(u64 dsq, s32 cpu, struct queue_head *h)
{
	struct task_struct *p;
	struct task_ctx *tctx;

	h->dsq = dsq;
	h->present = false;
	h->here = false;
	bpf_rcu_read_lock();
	p = __COMPAT_scx_bpf_dsq_peek(dsq);
	if (p) {
		h->present = true;
		h->here = cpu >= 0 && cpu < MAX_CPUS && bpf_cpumask_test_cpu(cpu, p->cpus_ptr);
		h->deadline = p->scx.dsq_vtime;
		tctx = task_ctx(p);
		h->enq_at = tctx ? tctx->enq_at : 0;
		h->offset = queued_offset(h->enq_at, h->deadline);
	}
	bpf_rcu_read_unlock();
}

/* Pull the best task from another LLC's queue when ours has nothing: same node first. */
static inline bool pull_from_other_llcs(s32 cpu)
{
	u32 my_llc, my_node, i, pass;

	if (queue_mode == QUEUE_GLOBAL || cpu < 0 || cpu >= MAX_CPUS)
		return false;
	my_llc = cpu_llc[cpu];
	if (my_llc >= MAX_LLCS)
		return false;
	my_node = llc_node[my_llc];
	for (pass = 0; pass < 2; pass++) {
		bpf_for(i, 0, nr_llcs) {
			u32 node;

			if (i == my_llc || i >= MAX_LLCS)
				continue;
			node = llc_node[i];
			if ((pass == 0) != (node == my_node))
				continue;
			if (scx_bpf_dsq_move_to_local(llc_dsq_of_llc(i), 0)) {
				stat_inc(pass == 0 ? STAT_PULL_XLLC : STAT_PULL_XNODE);
				return true;
			}
		}
	}
	return false;
}
#endif
