/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Load balance between LLC queues. Idle CPUs pull from other LLCs (pull_from_other_llcs), but
 * busy ones never did: once every CPU was busy, the split of tasks between LLCs stayed as the
 * wake-ups left it: nine spinners on 2 LLCs x 2 CPUs could settle at 3 and 6 for good, the 6
 * getting half the CPU of the other 3 (the reliability suite's fairness check saw it). So a
 * CPU's tick compares the tasks waiting per CPU in its LLC queue with every other LLC's, and
 * when one has at least one more per CPU (two across NUMA nodes: moving costs memory locality
 * there) its next dispatch pulls that queue's head, unless a task of its own has waited the
 * urgent half of the bound. A pull moves one task and narrows the gap by one task per CPU at
 * most; the one-per-CPU margin keeps two LLCs from passing a task back and forth.
 */
#ifndef __CONCORD_BALANCE_H
#define __CONCORD_BALANCE_H
#include "concord.bpf.h"
#include "queues.bpf.h"

/* The LLC queue, if any, that @cpu should pull from: the one with the largest excess. */
static inline void note_busier_llc(s32 cpu, struct cpu_ctx *cctx)
{
	u32 mine = llc_of_cpu(cpu), i, best = 0;
	u64 my_q, my_cpus, best_excess = 0;

	if (queue_mode == QUEUE_GLOBAL || nr_llcs < 2 || mine >= MAX_LLCS)
		return;
	my_q = nr_queued(llc_dsq_of_llc(mine));
	my_cpus = domain_cpus[mine] ? domain_cpus[mine] : 1;
	bpf_for(i, 0, nr_llcs) {
		u64 q, cpus, margin, have, want;

		if (i == mine || i >= MAX_LLCS)
			continue;
		q = nr_queued(llc_dsq_of_llc(i));
		if (!q)
			continue;
		cpus = domain_cpus[i] ? domain_cpus[i] : 1;
		/* q / cpus >= my_q / my_cpus + margin, cross-multiplied */
		margin = llc_node[i] == llc_node[mine] ? 1 : 2;
		have = q * my_cpus;
		want = my_q * cpus + margin * cpus * my_cpus;
		if (have >= want && have - want >= best_excess) {
			best_excess = have - want;
			best = i + 1;
		}
	}
	cctx->pull_llc = best;
}

/* Pull the head of the busier LLC queue the tick chose, if there still is one. */
static inline bool pull_for_balance(s32 cpu, struct cpu_ctx *cctx)
{
	u32 from;

	if (!cctx || !cctx->pull_llc)
		return false;
	from = cctx->pull_llc - 1;
	cctx->pull_llc = 0;
	if (from >= MAX_LLCS || !scx_bpf_dsq_move_to_local(llc_dsq_of_llc(from), 0))
		return false;
	stat_inc(STAT_BALANCE_PULL);
	return true;
}
#endif
