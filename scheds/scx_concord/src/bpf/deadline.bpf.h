/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Deadlines: latency criticality measured from wake-ups (ops.runnable sees every wake-up: the
 * woken task's wake frequency and the waker's, the current task's, waker frequency are decayed
 * rates), service lag against the domain's clock, and from these a task's offset and deadline,
 * on wake-up, after a slice, after a yield.
 */
#ifndef __CONCORD_DEADLINE_H
#define __CONCORD_DEADLINE_H
#include "concord.bpf.h"
#include "queues.bpf.h"
#include "weights.bpf.h"
#include "rules.bpf.h"

/* The CPU's preempt count (x86: a per-CPU variable; absent elsewhere, see in_hardirq()). */
extern const int __preempt_count __ksym __weak;

/*
 * The hard interrupt and NMI counts of the preempt count: above its preemption and softirq
 * bytes, where include/linux/preempt.h puts them (bits 16-23 in older kernels; 7.x keeps a
 * hard-irq-disable count there and moved them to 24-30). Bit 31 is x86's folded need-resched.
 */
#define CONCORD_IRQ_COUNT_BITS	0x7fff0000

/*
 * Whether this runs in a hard interrupt or NMI (a timer expiring, a device): the current task
 * is then whatever the CPU happened to run, not the waker. Softirqs are not excluded: a
 * loopback TCP send wakes its reader from the softirq the sender's own syscall runs. Where the
 * kernel has no per-CPU preempt count to read, false: every wake-up counts, as before.
 */
static inline bool in_hardirq(void)
{
	if (!bpf_ksym_exists(&__preempt_count))
		return false;
	return *(const int *)bpf_this_cpu_ptr(&__preempt_count) & CONCORD_IRQ_COUNT_BITS;
}

static inline void lat_cri_on_wakeup(struct task_struct *p, struct task_ctx *tctx, u64 now)
{
	struct task_struct *waker;
	struct task_ctx *wctx;
	bool hand_off = tctx->chain_wake;

	/*
	 * A sync hand-off carries on its waker's work (chain_on_sync_wakeup); any other wake-up
	 * starts new work. A chain of hand-offs that has been busy for more than a slice is one
	 * CPU-bound job passed from thread to thread (a token ring, a pipeline under constant
	 * input): its hops are not events anyone waits for, and counted as wake-ups they made
	 * it the most latency-critical thing about, ahead of a pinned runtime thread woken for
	 * real work, which then waited behind hop after hop on its only CPU. A request that
	 * crosses a pipe and back is done well within a slice and keeps its criticality.
	 */
	tctx->chain_wake = 0;
	if (!hand_off) {
		tctx->chain_at = now;
		tctx->busy_hop = 0;
	}
	if (tctx->busy_hop) {
		stat_inc(STAT_BUSY_CHAIN);
		return;
	}

	if (tctx->last_wake_at)
		tctx->wake_freq = pol_freq_update(tctx->wake_freq, now - tctx->last_wake_at);
	tctx->last_wake_at = now;

	/*
	 * The waker's rate counts task-to-task wake-ups only: not from the idle task, a kernel
	 * thread or a hard interrupt, and not of a kernel thread (kworkers and RCU threads are
	 * woken from interrupts and softirqs that run on top of whatever task is current).
	 * Credited to that task, they made CPU hogs look like producers (a spinner interrupted
	 * by every tick wakes kworkers and RCU threads all the time), and the criticality that
	 * divided their offsets undid nice.
	 */
	if ((p->flags & PF_KTHREAD) || in_hardirq())
		return;
	waker = bpf_get_current_task_btf();
	if (!waker || waker->pid == 0 || waker == p || (waker->flags & PF_KTHREAD))
		return;
	wctx = task_ctx(waker);
	if (!wctx)
		return;
	if (wctx->last_waker_at)
		wctx->waker_freq = pol_freq_update(wctx->waker_freq, now - wctx->last_waker_at);
	wctx->last_waker_at = now;
}

/*
 * Fold a finished run into the task's average runtime (and its service, for the greedy model)
 * and its vtime. A run cut short by preemption before slice_min is not a sample of how long
 * the task runs (it keeps its place in line, see place_task()), but its CPU time still counts.
 */
static inline void lat_cri_on_stop(struct task_struct *p, struct task_ctx *tctx, u64 now)
{
	u64 ran;

	if (!tctx->run_at || time_before(now, tctx->run_at))
		return;
	ran = now - tctx->run_at;
	tctx->vtime = pol_vtime_after_run(tctx->vtime, ran, weight_of(p, tctx),
					  llcs[domain_of_cpu(scx_bpf_task_cpu(p))].vclock, lag_max_ns());
	/* nor is a turn a yield cut short (take_yield_turn()) */
	if (tctx->keep_place || tctx->yield_turn)
		return;
	tctx->avg_runtime = pol_runtime_update(tctx->avg_runtime, ran);
	if (deadline_mode == DEADLINE_GREEDY) {
		tctx->svc_ns += ran * WEIGHT_DEFAULT / weight_of(p, tctx);
		avg_svc_ns = (avg_svc_ns * 63 + tctx->svc_ns) / 64;
	}
}

/*
 * @p stops: if its last sync wake-up is not judged yet, whether the hint held: it went to
 * sleep within slice_min of CPU time after it (a pipe hop: write, then block on the next
 * read), or ran on (pol_handoff_verdict()). Only a waker whose hint holds passes its chain on
 * (chain_on_sync_wakeup).
 */
static inline void handoff_on_stop(struct task_ctx *tctx, bool runnable, u64 now)
{
	u64 from;
	u32 v;

	if (!tctx->handoff_at || !tctx->run_at)
		return;
	from = time_before(tctx->handoff_at, tctx->run_at) ? tctx->run_at : tctx->handoff_at;
	if (time_before(from, now))
		tctx->handoff_ran += now - from;
	v = pol_handoff_verdict(tctx->handoff_ran, runnable, slice_min_ns);
	if (v == POL_HANDOFF_PENDING)
		return;
	tctx->hands_off = v == POL_HANDOFF_YES;
	tctx->handoff_at = 0;
}

/* The clock of the domain whose queues @p waits in. */
static inline u64 home_vclock(struct task_struct *p)
{
	return llcs[domain_of_cpu(task_home_cpu(p))].vclock;
}

/*
 * A sync wake-up (a pipe or socket hop: the waker is about to sleep) hands work on: the wakee
 * takes at least the waker's vtime, its run so far included (pol_vtime_on_handoff), so that a
 * chain of hops is charged as one task, and the start of the waker's work (chain_at), so that
 * a chain busy for long is not taken for latency-critical wake-ups (lat_cri_on_wakeup). Same
 * domain only: other domains' vtimes are on other clocks. Only where select_cpu runs: a task
 * allowed on one CPU wakes without it.
 */
static inline void chain_on_sync_wakeup(struct task_struct *p, struct task_ctx *tctx,
					u64 wake_flags)
{
	struct task_struct *waker;
	struct task_ctx *wctx;
	u64 now, ran = 0;
	u32 d;

	/* the flag first: every wake-up comes through here, most are not sync */
	tctx->busy_hop = 0;
	if (!(wake_flags & SCX_WAKE_SYNC) || deadline_mode != DEADLINE_CAPPED)
		return;
	waker = bpf_get_current_task_btf();
	if (!waker || waker == p || (waker->flags & PF_KTHREAD))
		return;
	d = domain_of_cpu(bpf_get_smp_processor_id());
	if (d != domain_of_cpu(task_home_cpu(p)) || !(wctx = task_ctx(waker)))
		return;
	now = scx_bpf_now();
	/*
	 * The wakee carries on the waker's work only if the waker's sync wake-ups are hand-offs
	 * (handoff_on_stop): a runtime thread that answers a request over a socket and runs on
	 * (an ERTS scheduler spins) says "sync" as well, and the client it wakes starts new work.
	 * (A waker that never slept carries on what it has done since it came under us.)
	 */
	wctx->handoff_at = now;
	wctx->handoff_ran = 0;
	tctx->chain_at = wctx->hands_off && wctx->chain_at ? wctx->chain_at : now;
	tctx->chain_wake = 1;
	tctx->busy_hop = pol_waited_over(tctx->chain_at, now, slice_max_ns);
	if (wctx->run_at && time_before(wctx->run_at, now))
		ran = now - wctx->run_at;
	tctx->vtime = pol_vtime_on_handoff(tctx->vtime, wctx->vtime, ran, weight_of(waker, wctx),
					   llcs[d].vclock, lag_max_ns());
}

/*
 * A task starts running on @cpu: its domain's clock follows the vtimes started there (policy.h).
 * Written only when it moves: most tasks start at or behind the clock, and a store at every
 * switch of every CPU of the domain would pull the domain's cache line from CPU to CPU.
 */
static inline void vclock_on_running(struct task_ctx *tctx, s32 cpu)
{
	u32 d = domain_of_cpu(cpu);
	u64 old = llcs[d].vclock, clock = pol_clock_after_start(old, tctx->vtime, lag_max_ns());

	if (clock != old)
		llcs[d].vclock = clock;
}

/*
 * @p starts on @cpu: a task heavier than nice 0 that uses its turns (runs of at least
 * slice_min on average) sets its domain's heaviest weight for the next max_wait, to which
 * everyone's offset is then scaled (pol_offset_weight). Not kernel threads: high-priority
 * workers run at nice -20 in short bursts and would put every offset at the cap. Written only
 * when it changes or to keep it alive, i.e. by heavy tasks' runs alone.
 */
static inline void note_heavy(struct task_struct *p, struct task_ctx *tctx, s32 cpu, u64 now)
{
	u64 w = weight_of(p, tctx);
	struct llc_ctx *l;
	u32 d;

	if (w <= WEIGHT_DEFAULT || (p->flags & PF_KTHREAD) || tctx->avg_runtime < slice_min_ns)
		return;
	d = domain_of_cpu(cpu);
	if (d >= MAX_LLCS)
		return;
	l = &llcs[d];
	if (w >= l->heavy_weight || !l->heavy_at || pol_waited_over(l->heavy_at, now, max_wait_ns)) {
		l->heavy_weight = w;
		l->heavy_at = now;
	}
}

/* The heaviest weight lately in domain @d (note_heavy()), nice 0's if none is live. */
static inline u64 heaviest_in(u32 d, u64 now)
{
	struct llc_ctx *l;

	if (d >= MAX_LLCS)
		return WEIGHT_DEFAULT;
	l = &llcs[d];
	if (!l->heavy_at || pol_waited_over(l->heavy_at, now, max_wait_ns))
		return WEIGHT_DEFAULT;
	return l->heavy_weight;
}

/*
 * The task's deadline offset (policy.h): from its recent behaviour and its bounded service lag,
 * capped at half the wait bound, unless --deadline greedy (the lab's model of scx_lavd then) is
 * chosen.
 */
static inline u64 task_offset(struct task_struct *p, struct task_ctx *tctx, u64 now)
{
	u64 wake = tctx->wake_freq, waker = tctx->waker_freq, offset;
	u32 d;

	/* rates as of now: a task that has not woken (anyone) for a while is not critical */
	if (tctx->last_wake_at && time_before(tctx->last_wake_at, now))
		wake = pol_freq_since(wake, now - tctx->last_wake_at);
	if (tctx->last_waker_at && time_before(tctx->last_waker_at, now))
		waker = pol_freq_since(waker, now - tctx->last_waker_at);
	/*
	 * A hop of a busy chain is not latency-critical at all, whatever its rates: they move
	 * only on the chain's other wake-ups (each restart of a chain, a hop that ran on), which
	 * kept a token ring's hops more critical than a BEAM thread woken for a request.
	 */
	tctx->lat_cri = rule_lat_cri(tctx, tctx->busy_hop ? 1 : pol_lat_cri(wake, waker));
	/*
	 * A batch-class task is due at the cap, always: among always-runnable tasks a task's
	 * share is its turn over its offset, so a hog placed by its weight alone came due as
	 * often beside a latency-class service as without it, and a BEAM entitled to half the
	 * machine got 0.7 of a CPU of it while its requests queued for seconds. At the cap it
	 * still runs within the bound.
	 */
	if (deadline_mode == DEADLINE_CAPPED && rule_is_batch(tctx))
		return offset_cap_ns();
	if (deadline_mode == DEADLINE_GREEDY)
		return pol_greedy_offset(tctx->avg_runtime, weight_of(p, tctx), tctx->lat_cri, slice_min_ns,
					 slice_max_ns, tctx->svc_ns, avg_svc_ns);
	/*
	 * The lag scales the offset before the cap, not after: capped first, a task of a
	 * quarter of a heavier task's weight that was a little behind its domain's clock got a
	 * quarter of the cap, the same offset as a nice-0 peer, and weights meant little. A lag
	 * factor is at least 1/4, so 4x the cap is as good as uncapped here.
	 */
	d = domain_of_cpu(task_home_cpu(p));
	offset = pol_deadline_offset(tctx->avg_runtime,
				     pol_offset_weight(weight_of(p, tctx), heaviest_in(d, now)),
				     tctx->lat_cri, slice_min_ns, slice_max_ns, 4 * offset_cap_ns());
	return pol_offset_with_lag(offset, tctx->vtime, llcs[d].vclock, lag_max_ns(),
				   offset_cap_ns());
}

/*
 * The task's deadline: now plus its offset (at most half the wait bound when capped). Real time, not a
 * virtual clock: a task queued at t is overtaken only by tasks queued before t + max_wait/2,
 * so deadline order alone already bounds waits; the urgent path is the net.
 * A woken task that is behind its domain's clock in service also gets that lag (at most one
 * slice, less for long runs) taken off, as EEVDF places a sleeper with its lag: otherwise
 * every wake-up of a task that mostly sleeps queued behind CPU hogs whose deadlines had come
 * due while it slept, and a pipe ping-pong beside hogs waited a hog's slice per round trip.
 * Only on wake-ups: a task whose slice ended has just been served; and not on a hop of a chain
 * busy past a slice (lat_cri_on_wakeup): it slept only while its chain ran, and each of its
 * hops found itself a full lag behind (the domain's clock moves with whoever runs ahead, and
 * the lag window lifts every sleeper to within lag_max of it), so every hop was placed up to a
 * slice in the past, before every task woken for real work.
 */
static inline u64 task_deadline(struct task_struct *p, struct task_ctx *tctx, u64 now, bool woken)
{
	u64 offset = task_offset(p, tctx, now);

	if (deadline_mode == DEADLINE_GREEDY || !woken || tctx->busy_hop)
		return now + offset;
	return now + offset - pol_service_credit(tctx->vtime, home_vclock(p),
						 lag_max_ns(), tctx->avg_runtime, slice_min_ns);
}
/*
 * The deadline of a latency-class task (rules.bpf.h) that yielded: its own, but behind the
 * earlier of @cpu's queue heads when that is due within a slice of it, which then gets the
 * yield's turn (take_yield_turn()) before it comes back. Not behind a head due later: a head
 * at the cap (a batch task's) put the yielder up to the cap out, and every wake-up due sooner
 * passed it while it waited there (a request tail of ~80 ms with nothing but the BEAM running).
 * With nobody due that soon the yield yields nothing, as when nobody waits.
 */
static inline u64 latency_yield_deadline(struct task_struct *p, struct task_ctx *tctx, s32 cpu,
					 u64 now)
{
	struct queue_head h = {};
	u64 d = now + task_offset(p, tctx, now), first = 0;

	if (pinned_mode == PINNED_PER_CPU) {
		peek_head(pinned_dsq(cpu), cpu, &h);
		if (h.present)
			first = h.deadline;
	}
	peek_head(shared_dsq(cpu), cpu, &h);
	if (h.present && (!first || time_before(h.deadline, first)))
		first = h.deadline;
	if (first && !time_before(first, d) && first - d <= slice_max_ns)
		d = first + 1;
	return d;
}

/*
 * The deadline of a task that yielded: behind its equals, as EEVDF moves a yielder's deadline
 * one slice on (a slice later than its own offset gives, at most the cap), and behind the heads
 * of the queues of @cpu that are due within a slice after that (pol_yield_behind), where it
 * waits: a yield means "let whoever waits here run first". With the slice later alone, a CPU
 * hog whose offset was larger stayed behind the yielder, and an idle worker spinning with
 * sched_yield() took the CPU back again and again while the hog waited (half the CPU for a
 * thread that polls). Heads' deadlines are within the cap of their queueing, so the bound
 * holds as for any task. Its wait starts again (no kept place): the yield ended its turn of
 * its own accord.
 */
static inline u64 yield_deadline(struct task_struct *p, struct task_ctx *tctx, s32 cpu, u64 now)
{
	u64 own = now + pol_yield_offset(task_offset(p, tctx, now), slice_max_ns, offset_cap_ns());
	struct queue_head h = {};
	u64 d = own;

	if (deadline_mode != DEADLINE_CAPPED)
		return d;
	if (rule_yields_one_turn(tctx))
		return latency_yield_deadline(p, tctx, cpu, now);
	if (pinned_mode == PINNED_PER_CPU) {
		peek_head(pinned_dsq(cpu), cpu, &h);
		if (h.present)
			d = pol_yield_behind(d, own, h.deadline, slice_max_ns);
	}
	peek_head(shared_dsq(cpu), cpu, &h);
	if (h.present)
		d = pol_yield_behind(d, own, h.deadline, slice_max_ns);
	return d;
}
#endif
