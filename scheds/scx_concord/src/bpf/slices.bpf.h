/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Slices: how long a turn lasts (pol_slice in policy.h shares slice_max among the tasks waiting
 * per CPU) and the timers that end turns shorter than the tick, on which the wait bound rests.
 */
#ifndef __CONCORD_SLICES_H
#define __CONCORD_SLICES_H
#include "concord.bpf.h"

/*
 * Slice timers. sched_ext ends a slice only on a tick (4 ms at HZ=250), so a slice shorter
 * than a tick is a tick. pol_slice shares slice_max among the tasks waiting for a CPU, and the
 * wait bound rests on those turns being short: with N tasks waiting per CPU and every turn a
 * tick long, the last waits N ticks (with ten waiters per CPU a 40 ms bound broke and the
 * queue turned FIFO at tick grain, everyone urgent). So once so many wait that tick-long turns
 * would pass the urgent half of the bound (pol_timer_needed), every run whose slice is shorter
 * than slice_max is ended by a timer pinned to its CPU: turns shrink with the number waiting,
 * to slice_min, below the tick. Weights below nice 0's act through such shorter slices too (cut
 * to ticks, a nice-19 spinner got several times its weight's share among nice-0 spinners), so
 * theirs always get one. A run with the whole slice_max (nobody waited) sets no timer, nor one
 * with fewer waiters: a timer per run, programmed and fired, was an interrupt per run for turns
 * that ticks end soon enough.
 */
struct slice_timer {
	struct bpf_timer timer;
	u64 seq;	/* the run (cpu_ctx.run_seq) it was set for */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, u32);
	__type(value, struct slice_timer);
} slice_timers SEC(".maps");

static int slice_timer_fired(void *map, u32 *key, struct slice_timer *st)
{
	s32 cpu = *key;
	struct cpu_ctx *cctx = cpu_ctx_of(cpu);

	/* The run it was set for may have ended already (tick, sleep): then nothing to do. */
	if (cctx && cctx->run_seq == st->seq) {
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
		stat_inc(STAT_SLICE_TIMER);
	}
	return 0;
}

static inline s32 init_slice_timers(void)
{
	struct slice_timer *st;
	u32 i;
	s32 err;

	bpf_for(i, 0, nr_cpus) {
		if (i >= MAX_CPUS)
			break;
		st = bpf_map_lookup_elem(&slice_timers, &i);
		if (!st)
			return -ENOENT;
		err = bpf_timer_init(&st->timer, &slice_timers, CLOCK_MONOTONIC);
		if (err)
			return err;
		err = bpf_timer_set_callback(&st->timer, slice_timer_fired);
		if (err)
			return err;
	}
	return 0;
}

/*
 * @p starts run @seq on @cpu: end it after its slice if the slice is shorter than slice_max
 * and @p's runs are long enough to use it up (@avg_runtime at least half of it). A task that
 * sleeps well within its turn (a pipe hop, a woken worker's burst) would leave a timer behind
 * that fires into someone else's run: an interrupt per run for nothing, dear under TCG. If
 * such a task does run on, the tick ends its turn, and from then on its average asks for
 * timers.
 */
static inline void arm_slice_timer(struct task_struct *p, s32 cpu, u64 seq, u64 avg_runtime)
{
	struct slice_timer *st;
	u32 key = cpu;
	u64 slice = p->scx.slice;

	if (slice >= slice_max_ns || cpu < 0 || avg_runtime * 2 < slice)
		return;
	st = bpf_map_lookup_elem(&slice_timers, &key);
	if (!st)
		return;
	st->seq = seq;
	/* a turn below slice_min is a light task's (pol_light_turn), not a kick: pol_cut_short */
	bpf_timer_start(&st->timer, slice > SLICE_FLOOR_NS ? slice : SLICE_FLOOR_NS, BPF_F_TIMER_CPU_PIN);
}
#endif
