/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_concord: latency-criticality aware virtual deadlines, with pinned tasks as first-class.
 *
 * Design
 * ------
 * Every queued task gets a deadline: the time it was queued plus an offset computed from its
 * recent behaviour:
 * its average runtime per run (clamped to one slice), its nice weight, and its latency
 * criticality, which grows with how often it wakes up and how often it wakes others (decayed
 * rates, logarithmic). Short, frequently waking tasks and the producers that feed them get
 * early deadlines; CPU hogs get later ones. The offset never depends on how late a task
 * already is: scx_lavd's greedy penalty did, and a BEAM scheduler thread that was starved ran
 * long when it finally ran, was pushed back further, starved longer (seed 000). Here the offset
 * is at most half of --max-wait-ms whatever the task's history, so a task queued at t is only
 * overtaken by tasks queued before t + max_wait/2 + one slice (the wake-up credit below):
 * deadline order itself bounds waits.
 * Fairness among equals comes from a bounded service-lag term: a task that got more CPU time
 * (scaled by its nice weight) than the most-served task of its LLC had when it started gets
 * its offset scaled up (at most 7/4), one that got less scaled down (at least 1/4), always
 * within the cap; a woken task that is behind also has its deadline moved earlier by its lag
 * (at most one slice, like EEVDF's placement of a sleeper), so it does not queue behind hogs
 * whose deadlines came due while it slept. The lag is kept within a slice of the LLC's clock,
 * so it remembers recent service only and cannot grow into a penalty. A sync wake-up (a pipe
 * or socket hop) hands the waker's vtime on to the wakee (pol_vtime_on_handoff): a chain of
 * hops is charged as one task, so a token ring that keeps a CPU busy does not get a sleeper's
 * credit at every hop and overtake, hop after hop, the tasks queued beside it. Nor does such a
 * chain look latency-critical once it has been busy for more than a slice since the
 * wake-up that began its work: its hops are not counted as wake-ups (lat_cri_on_wakeup) and
 * are placed without criticality (task_offset), else a busy ring was the most critical thing
 * about, and a pinned BEAM thread woken for a request waited on its only CPU behind one hop
 * after another. A waker passes its chain on only while its sync wake-ups are hand-offs:
 * it sleeps within slice_min of CPU after one (pol_handoff_verdict).
 *
 * Queues: tasks that may run on several CPUs wait in a deadline-ordered queue per LLC (or one
 * global queue). Tasks that can run on one CPU only (affinity of one CPU, or migration
 * disabled) wait in a deadline-ordered queue of that CPU. A CPU dispatches the earlier deadline
 * of its own pinned queue's head and its LLC queue's head, so a pinned task competes only for
 * its own CPU and is never stuck behind tasks it cannot overtake, nor does it make other CPUs
 * skip over it. A CPU runs its local run queue before it looks at ours, so a pinned wake-up due
 * before everything we put there goes to its head (ahead_of_local). `--pinned-queue shared` puts pinned tasks into the LLC queue instead: the design
 * that broke pinned Erlang schedulers, kept to reproduce the outage in the lab.
 *
 * Bounded waits: a queued task that has waited half of --max-wait-ms is urgent: it is
 * dispatched before deadline order (the older of two urgent heads first), and ops.tick
 * ends the running task's slice when its CPU's pinned queue holds an earlier deadline or an
 * urgent task, or its LLC queue an urgent one. With a shared queue the net only sees the head:
 * a pinned task deep in an LLC queue is invisible to it, one more reason pinned tasks get
 * their own queues. Turns shrink with the number waiting (pol_slice: slice_max shared among the
 * waiters per CPU, at least slice_min). While tick-long turns of everyone waiting per CPU end
 * within the urgent half of the bound (up to four waiters per CPU at 250 Hz and 40 ms),
 * ticks end them; with more, a slice timer ends every turn shorter than slice_max below the
 * tick (pol_timer_needed; for tasks whose runs use up their turn: one that usually sleeps first
 * and runs on for once loses its turn at the next tick). Each timer is an interrupt programmed
 * and fired, and one per run cost more than the rest of the callback under TCG. So the bound
 * holds by construction while at most (max_wait/2 - slice_max) / slice_min tasks wait per CPU
 * (30 with the defaults); beyond that a wait grows by slice_min per further waiter. A wait is
 * counted as the kernel counts it, from becoming runnable to running, on every path
 * (stats.bpf.h), and ops.cpu_release hands tasks in a local run queue back when a higher class
 * takes the CPU. A task put straight into an idle CPU's local run queue waits for that CPU
 * alone: busy CPUs' ticks kick it again if it has not run it within a tick (idle.bpf.h).
 *
 * Yields: a task that calls sched_yield() (ERTS schedulers busy-wait this way, and lock
 * spinners do) ends its turn and is queued behind its equals (one slice later than its own
 * offset, within the cap, and behind the heads of its queues due within a slice of that: not
 * behind a nice-19 task's deadline at the cap, which short wake-ups pass while the yielder
 * waits the whole cap); a kept place would bring it straight back and its yield would
 * yield nothing to the task with work waiting on its CPU. The task it yields to gets a turn of
 * slice_min, not a slice: the yielder is usually an idle worker polling for work, and work that
 * arrives for it should not wait behind a whole slice of a CPU hog.
 *
 * Preemption (preempt.bpf.h): sched_ext slices end only on ticks (4 ms at HZ=250), so a woken
 * task that must not wait that long takes a busy CPU by a kick (wake-ups only: a task whose
 * slice ended goes back in line; kicking from there churned CPU-bound equals whose offsets
 * differ by their service lag, cutting runs short before they reached user space): the one,
 * among those it may run on, whose running task has the largest offset, if the woken task's
 * deadline is earlier than now + that offset (the running task as if it were queued now). The
 * kicked CPU takes the queue's head, which may be an earlier-queued task: then each dispatch
 * from a shared queue applies the rule again to the head left behind, if that head is a
 * wake-up that had the right to preempt (no idle CPU, no sync waker) and is more critical
 * than the victim (a smaller offset): the woken task gets the next CPU, not the next tick. A
 * more critical pinned head likewise wins dispatch over an LLC task it would preempt at once.
 * A wake-up on the CPU it is placed on (a timer or device interrupt there) preempts that CPU
 * first when it may, and a short one (average run at most slice_min) runs there at once,
 * ahead of the queue, as EEVDF runs a woken task that preempts (run_here_now()): queued, it
 * waited behind earlier deadlines while the kicked CPU ran those, then for a second kick.
 * A task kicked before it ran slice_min keeps its place in line (wait start and deadline): a
 * kick never restarts someone's wait. A sync wake-up (pipes, UNIX sockets: the waker is about to sleep) preempts
 * nobody and waits on the waker's run queue when no CPU is idle: the waker's CPU is the next
 * one free, and taking a task from one's own run queue is the cheap, local move.
 * A short one that is that CPU's next task by deadline anyway goes straight into its local run
 * queue (hand_off_here()): the same order, minus a queue insert and a dispatch. The kernel's
 * idle search calls the waker's CPU idle for a sync wake-up when its local run queue is empty;
 * ours are not always, so then the wakee takes a really idle CPU or goes through the rules
 * above (sync_idle_is_false()): it never jumps a task pinned to that CPU and waiting for it.
 *
 * Nice: a task's weight scales its offset (capped like any) and its slice. Deadlines are real
 * time, so among always-runnable tasks a task's share goes as its turn over its offset: offsets
 * are weighted against the heaviest CPU-bound task running in the LLC lately (pol_offset_weight),
 * a turn past the cap shrinks with that relative weight (pol_turn), and a task whose turn ended
 * keeps the CPU when its next deadline comes before every waiting one (keep_prev_first: the
 * kernel asks for the next task before it queues the last one). Slices end on ticks in
 * sched_ext, so the short slice of a light task is ended by a timer pinned to its CPU
 * (slices.bpf.h); every task still gets a turn within the wait bound.
 *
 * cgroups: cpu.weight shares CPU between sibling cgroups, nested, as the kernel's fair class
 * shares it (--cgroup-weights hierarchical, weights.bpf.h). Not through a tree of queues, which
 * would put pinned tasks back behind others and hide waits from the bound, but through the
 * weight above: a task weighs its hierarchical share of the machine times the nice weights of
 * all runnable tasks, and everything weights act on (offsets, turns, vtime) uses that.
 *
 * Rules (rules.bpf.h): the operator's [[rule]] tables match tasks by name, process name,
 * cgroup, ids, nice and CPU count, and give the first match's class (a criticality floor and
 * wake-up preemption for `latency`, neither for `batch`), a longest turn, a criticality floor
 * and may-preempt: all inside the capped offsets and turns, so the bound holds for every rule.
 *
 * `--deadline greedy` swaps the capped offset for scx_lavd's model of the time (runtime x
 * greedy penalty / latency criticality, no wait cap): with `--pinned-queue shared` it
 * reproduces the outage in the lab; it is not for production.
 *
 * Work conservation: wake-ups go to an idle CPU when there is one anywhere the task may run
 * (previous CPU first, then the kernel's SMT/LLC/NUMA-ordered search); a task enqueued while
 * a CPU it may run on is idle goes straight to that CPU when its queue is empty, and a queued
 * task kicks an idle CPU that may run it; a CPU with nothing local pulls from other LLCs'
 * queues (same node first) before it goes idle, and a busy CPU whose LLC queue has at least
 * one task per CPU fewer waiting than another LLC's (two across nodes) pulls that queue's head
 * at its next dispatch (balance.bpf.h): idle pulls alone left a 3 / 6 split of nine spinners
 * on 2 LLCs x 2 for good. CPU hotplug makes the kernel restart us with the new topology.
 *
 * The arithmetic lives in policy.h (mirrored and unit-tested in src/policy.rs); the concerns
 * live in files named for them: weights.bpf.h (nice and cgroup weights), rules.bpf.h
 * (per-workload rules), deadline.bpf.h
 * (latency criticality, service lag, offsets),
 * wait_bound.bpf.h (urgency and the order of queue heads), queues.bpf.h (which queue a task
 * waits in, peeking heads, pulls from other LLCs), slices.bpf.h (slice timers), idle.bpf.h
 * (idle CPUs and kicks), preempt.bpf.h (wake-up preemption), balance.bpf.h (LLC load balance)
 * and stats.bpf.h (wait accounting). This file holds the callbacks and where a task goes.
 */
#include "concord.bpf.h"
#include "queues.bpf.h"
#include "weights.bpf.h"
#include "rules.bpf.h"
#include "deadline.bpf.h"
#include "wait_bound.bpf.h"
#include "slices.bpf.h"
#include "idle.bpf.h"
#include "preempt.bpf.h"
#include "balance.bpf.h"
#include "stats.bpf.h"

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

static u64 init_at, init_jiffies;
static bool tick_measured;

/*
 * tick_ns from the time and jiffies elapsed since init, once 64 jiffies have passed (a quarter
 * second at 250 Hz: long enough that one late tick does not matter), then left alone.
 */
static __always_inline void measure_tick(u64 now)
{
	u64 j;

	if (tick_measured)
		return;
	j = bpf_jiffies64() - init_jiffies;
	if (j < 64 || !time_before(init_at, now))
		return;
	tick_ns = (now - init_at) / j;
	tick_measured = true;
}

/*
 * Where a task stands in line: its wait starts now and its deadline is the one just computed,
 * unless it was preempted before it ran slice_min (a kick right after dispatch): then its wait
 * goes on from where it began and it keeps its earlier deadline. Otherwise every kick would
 * restart its wait and its bound, chaining waits into one long gap that no single queueing
 * shows, past the bound (the reliability suite's fairness check saw it). Returns the deadline.
 */
static __always_inline u64 place_task(struct task_ctx *tctx, u32 kind, u64 deadline, u64 now)
{
	bool keep = tctx->keep_place && tctx->wait_from && !time_before(now, tctx->wait_from);

	if (keep && time_before(tctx->deadline, deadline))
		deadline = tctx->deadline;
	tctx->enq_at = keep ? tctx->wait_from : now;
	tctx->wait_from = tctx->enq_at;
	tctx->deadline = deadline;
	tctx->keep_place = 0;
	tctx->enq_kind = kind;
	/* direct paths (short turns or an idle CPU): a timer only for nice's sake; queue_task decides */
	tctx->slice_timer = 0;
	return deadline;
}

/*
 * The turn @p gets on @cpu with the tasks waiting there now (pol_slice), cut for a task lighter
 * than the heaviest about (pol_turn with its offset weight: its offset is at the cap sooner),
 * and whether it needs a slice timer (pol_timer_needed) in *@timer.
 */
static __always_inline u64 turn_on(struct task_struct *p, struct task_ctx *tctx, s32 cpu, u64 now,
				   u32 *timer)
{
	u64 nr_pinned = pinned_mode == PINNED_PER_CPU ? nr_queued(pinned_dsq(cpu)) : 0;
	u64 nr_shared = nr_queued(shared_dsq(cpu));
	u32 d = domain_of_cpu(cpu), cpus = domain_cpus[d];
	u64 own = weight_of(p, tctx), w = pol_offset_weight(own, heaviest_in(d, now));
	u64 turn, ruled;

	turn = pol_turn(pol_slice(nr_pinned, nr_shared, cpus, own, slice_min_ns, slice_max_ns), w,
			offset_cap_ns());
	/* a rule's shorter turn below the tick needs the timer too */
	ruled = rule_turn(tctx, turn);
	*timer = pol_timer_needed(nr_pinned, nr_shared, cpus, w, tick_ns, urgent_wait_ns()) ||
		 (ruled < turn && ruled < tick_ns);
	return ruled;
}

/*
 * @p takes its place in line as @kind (place_task(): *@deadline becomes the deadline it keeps)
 * for a turn on @cpu (turn_on(), its slice timer noted): what every queueing does. Returns the
 * turn.
 */
static __always_inline u64 place_for_turn(struct task_struct *p, struct task_ctx *tctx, s32 cpu,
					  u32 kind, u64 *deadline, u64 now)
{
	u32 timer;
	u64 slice = turn_on(p, tctx, cpu, now, &timer);

	*deadline = place_task(tctx, kind, *deadline, now);
	tctx->slice_timer = timer;
	return slice;
}

/* Queue @p in @cpu's pinned queue (QK_PINNED) or in @cpu's shared queue (QK_SHARED). */
static __always_inline void queue_task(struct task_struct *p, struct task_ctx *tctx, s32 cpu, u32 kind,
			      u64 deadline, u64 enq_flags, u64 now)
{
	u64 slice = place_for_turn(p, tctx, cpu, kind, &deadline, now);

	scx_bpf_dsq_insert_vtime(p, kind == QK_PINNED ? pinned_dsq(cpu) : shared_dsq(cpu), slice,
				 deadline, enq_flags);
}

/*
 * @cpu's local run queue is about to get a task due at @deadline from us: keep its cpu_ctx's
 * local_dl a lower bound of the deadlines waiting there (ahead_of_local() passes only tasks due
 * later). A queue found empty starts afresh; 0 (unknown, set by a dispatch, whose moves are not
 * followed) stays until then.
 */
static __always_inline void note_local_dl(s32 cpu, u64 deadline)
{
	struct cpu_ctx *cctx = cpu_ctx_of(cpu);

	if (cctx && (!nr_queued(SCX_DSQ_LOCAL_ON | cpu) || time_before(deadline, cctx->local_dl)))
		cctx->local_dl = deadline;
}

/*
 * Whether a task due at @deadline comes first among what waits in @cpu's queues: neither head
 * is urgent or due earlier.
 */
static __always_inline bool first_by_deadline(s32 cpu, u64 deadline, u64 now)
{
	struct queue_head pin = {}, shr = {};

	peek_head(shared_dsq(cpu), cpu, &shr);
	if (shr.present && (head_urgent(&shr, now) || time_before(shr.deadline, deadline)))
		return false;
	if (pinned_mode == PINNED_PER_CPU) {
		peek_head(pinned_dsq(cpu), cpu, &pin);
		if (pin.present && (head_urgent(&pin, now) || time_before(pin.deadline, deadline)))
			return false;
	}
	return true;
}

/*
 * Put @p straight into @local_dsq, the local run queue of @cpu, an idle CPU claimed for it, with
 * a full slice; its wait counts as direct, and busy CPUs' ticks kick @cpu again if it does not
 * run it (note_direct()). From ops.enqueue this spares the idle CPU a dispatch (two peeks, the
 * queue lock, and the move of @p inside BPF) before it runs anything.
 */
static __always_inline void run_on_idle_cpu(struct task_struct *p, struct task_ctx *tctx, s32 cpu,
					    u64 local_dsq, u64 deadline, u64 enq_flags, u64 now)
{
	p->scx.dsq_vtime = place_task(tctx, QK_DIRECT, deadline, now);
	note_local_dl(cpu, p->scx.dsq_vtime);
	scx_bpf_dsq_insert(p, local_dsq, slice_max_ns, enq_flags);
	note_direct(cpu, now);
	stat_inc(STAT_DIRECT_IDLE);
}

/*
 * A woken task that may preempt the task running on the CPU it wakes on (a timer or device
 * interrupt there: local_victim()) and whose runs are short (at most slice_min on average)
 * runs there now, ahead of the queue, as EEVDF runs a woken task that preempts. Queued, it
 * waited behind any earlier deadline of its queue (a hog whose deadline came due, a batch
 * thread woken at a barrier) while the kicked CPU took those, and then for a second kick to
 * reach another CPU: under single-threaded TCG an IPI waits for the emulator to get round to
 * that vCPU (interactive: 8.5 % of the periodic task's wake-ups waited over 1 ms, 110 of
 * them after the local kick had run another task). Passing the queue costs the tasks passed
 * one short run, and its slice is slice_min: tasks that waited the urgent half of the bound
 * still go first at the next dispatch, and ticks end slices for them. Not past a task already
 * in the CPU's local run queue: SCX_ENQ_PREEMPT inserts at its head, and a task we put there
 * (an idle CPU's, a sync hand-off) would be passed by every such wake-up, with no queue of
 * ours to make it urgent (a pinned BEAM thread waited past the bound so). Returns whether it
 * did.
 */
static __always_inline bool run_here_now(struct task_struct *p, struct task_ctx *tctx, s32 home,
					 u64 deadline, u64 enq_flags, u64 now)
{
	struct cpu_ctx *cctx;

	if (deadline_mode != DEADLINE_CAPPED || tctx->avg_runtime > slice_min_ns ||
	    !(cctx = local_victim(home, deadline, now)) || nr_queued(SCX_DSQ_LOCAL_ON | home))
		return false;
	/*
	 * SCX_ENQ_PREEMPT ends the running task's slice; no kick: its irq_work would run once @p
	 * is running and preempt @p itself.
	 */
	cctx->running_offset = deadline > now ? deadline - now : 0;
	p->scx.dsq_vtime = place_task(tctx, QK_DIRECT, deadline, now);
	cctx->local_dl = p->scx.dsq_vtime;
	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_min_ns, enq_flags | SCX_ENQ_PREEMPT);
	stat_inc(STAT_RUN_HERE);
	return true;
}

/*
 * A sync wake-up (pipes, UNIX sockets: the waker is about to sleep) placed on the waker's own
 * CPU, of a task whose runs are short, that would be that CPU's next task anyway (its deadline
 * is not later than the heads of the CPU's queues, and neither head is urgent): put it in the
 * CPU's local run queue, without preemption, where it runs as soon as the waker sleeps. The
 * order is deadline order as before; what goes is the queue's lock and rbtree insert and the
 * dispatch that would move it back here (a pipe ping-pong is all such wake-ups). Returns
 * whether it did.
 */
static __always_inline bool hand_off_here(struct task_struct *p, struct task_ctx *tctx, s32 waker,
					  s32 cpu, u64 deadline, u64 enq_flags, u64 now)
{
	if (waker != cpu || cpu != bpf_get_smp_processor_id() || deadline_mode != DEADLINE_CAPPED ||
	    tctx->avg_runtime > slice_min_ns || !first_by_deadline(cpu, deadline, now))
		return false;
	p->scx.dsq_vtime = place_task(tctx, QK_DIRECT, deadline, now);
	note_local_dl(cpu, p->scx.dsq_vtime);
	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_min_ns, enq_flags);
	stat_inc(STAT_SYNC_HANDOFF);
	return true;
}

/*
 * A pinned task woken while its CPU's local run queue holds tasks we put there (a sync
 * hand-off, a wake-up given to the CPU while it was idle), all due later than @p, and @p
 * would be the CPU's next by deadline (first_by_deadline()): put @p at the head of that local
 * run queue. In its pinned queue it came after them whatever its deadline, because a CPU runs
 * its local run queue before it looks at ours: a pinned runtime thread woken for work (an
 * ERTS scheduler) waited out the next hop of a token ring, handed to its CPU a moment before,
 * at about a third of its wake-ups. Deadline order, so the tasks passed keep the bound as in
 * any queue. Then preempt_for decides about the running task as for any wake-up. Returns
 * whether it did.
 */
static __always_inline bool ahead_of_local(struct task_struct *p, struct task_ctx *tctx, s32 cpu,
					   u64 deadline, u64 enq_flags, u64 now)
{
	struct cpu_ctx *cctx;
	u64 slice;

	if (deadline_mode != DEADLINE_CAPPED || !nr_queued(SCX_DSQ_LOCAL_ON | cpu) ||
	    !(cctx = cpu_ctx_of(cpu)) || !time_before(deadline, cctx->local_dl) ||
	    !first_by_deadline(cpu, deadline, now))
		return false;
	slice = place_for_turn(p, tctx, cpu, QK_DIRECT, &deadline, now);
	p->scx.dsq_vtime = deadline;
	cctx->local_dl = deadline;
	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice, enq_flags | SCX_ENQ_HEAD);
	stat_inc(STAT_AHEAD_LOCAL);
	return true;
}

/*
 * ops.select_cpu - @p wakes up; pick the CPU it should wake on (@prev_cpu: where it last ran).
 * An idle CPU that may run it (pick_cpu_on_wakeup: its own first, then its LLC's) gets it at
 * once in that CPU's local run queue, with its wait counted from now (run_on_idle_cpu), and
 * ops.enqueue is then skipped. Otherwise it notes whether the waker said it is about to sleep
 * (a sync wake-up) for ops.enqueue, which places the task. Returns the CPU.
 */
s32 BPF_STRUCT_OPS(concord_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct task_ctx *tctx;
	bool idle;
	s32 cpu;

	if (debug_stalled(p))
		return prev_cpu;
	tctx = task_ctx(p);
	if (tctx)
		chain_on_sync_wakeup(p, tctx, wake_flags);
	cpu = pick_cpu_on_wakeup(p, prev_cpu, wake_flags, &idle);
	if (tctx && !idle)
		tctx->sync_waker_cpu = wake_flags & SCX_WAKE_SYNC ? bpf_get_smp_processor_id() + 1 : 0;
	if (idle && tctx) {
		u64 now = scx_bpf_now();

		run_on_idle_cpu(p, tctx, cpu, SCX_DSQ_LOCAL, task_deadline(p, tctx, now, true), 0, now);
	}
	return cpu;
}

/*
 * ops.enqueue - @p is runnable and no CPU took it in select_cpu (or it was preempted, its slice
 * ended, it yielded, or cpu_release gave it back: SCX_ENQ_REENQ). Gives it a deadline
 * (task_deadline: now + its offset; a yielder's behind its equals) and puts it where it waits:
 * a task allowed on one CPU in that CPU's queue (--pinned-queue per-cpu), any other in its
 * LLC's (or the global) queue. A woken task may run at once instead, on this CPU when nothing
 * queued here should go first (run_here_now, hand_off_here) or on an idle CPU; else an idle CPU
 * is kicked, or a CPU running a less critical task is preempted (preempt_for). Every path
 * starts or continues the wait that ops.running ends and counts.
 */
void BPF_STRUCT_OPS(concord_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = task_ctx(p);
	u64 now = scx_bpf_now(), deadline;
	s32 cpu, waker, idle;
	bool kick;

	if (!tctx) {
		scx_bpf_error("task %d has no context", p->pid);
		return;
	}
	if (debug_stalled(p)) {
		scx_bpf_dsq_insert(p, DSQ_STALL, slice_max_ns, enq_flags);
		return;
	}
	/* what it weighs with the cgroups active now (weights.bpf.h) */
	tctx->weight = weight_now(p, tctx);
	deadline = task_deadline(p, tctx, now, enq_flags & SCX_ENQ_WAKEUP);
	/* A higher class took the CPU (cpu_release): the wait goes on where it began. */
	if (enq_flags & SCX_ENQ_REENQ)
		tctx->keep_place = 1;
	if (tctx->yielded) {
		deadline = yield_deadline(p, tctx, task_home_cpu(p), now);
		tctx->yielded = 0;
		stat_inc(STAT_YIELD);
	}
	tctx->may_preempt = 0;
	kick = rule_may_preempt(tctx);
	waker = tctx->sync_waker_cpu - 1;
	tctx->sync_waker_cpu = 0;

	if (task_is_pinned(p)) {
		cpu = pinned_cpu(p);
		stat_inc(STAT_ENQ_PINNED);
		/* --pinned-queue shared: in the LLC queue like any task (the design under test). */
		if (pinned_mode == PINNED_SHARED) {
			queue_task(p, tctx, cpu, QK_SHARED, deadline, enq_flags, now);
		} else {
			/* (a sync waker on its CPU frees it: sync_waker_frees()) */
			if ((enq_flags & SCX_ENQ_WAKEUP) && waker != cpu && kick &&
			    run_here_now(p, tctx, cpu, deadline, enq_flags, now))
				return;
			if ((enq_flags & SCX_ENQ_WAKEUP) &&
			    hand_off_here(p, tctx, waker, cpu, deadline, enq_flags, now))
				return;
			if (!(enq_flags & SCX_ENQ_WAKEUP) ||
			    !ahead_of_local(p, tctx, cpu, deadline, enq_flags, now))
				queue_task(p, tctx, cpu, QK_PINNED, deadline, enq_flags, now);
		}
		if (!kick_if_idle(cpu, p, enq_flags) && (enq_flags & SCX_ENQ_WAKEUP) && kick &&
		    !sync_waker_frees(waker, cpu, true))
			preempt_for(p, deadline, now);
		return;
	}

	stat_inc(STAT_ENQ_SHARED);
	cpu = scx_bpf_task_cpu(p);
	idle = claim_idle_cpu(p, cpu);
	/* An idle CPU may run it and nobody waits whom it would overtake: run it there now. */
	if (idle >= 0 && !nr_queued(shared_dsq(cpu))) {
		run_on_idle_cpu(p, tctx, idle, SCX_DSQ_LOCAL_ON | idle, deadline, enq_flags, now);
		scx_bpf_kick_cpu(idle, SCX_KICK_IDLE);
		return;
	}
	if (idle < 0 && (enq_flags & SCX_ENQ_WAKEUP) &&
	    hand_off_here(p, tctx, waker, cpu, deadline, enq_flags, now))
		return;
	if (idle < 0 && (enq_flags & SCX_ENQ_WAKEUP) && kick && !sync_waker_frees(waker, cpu, false)) {
		if (run_here_now(p, tctx, cpu, deadline, enq_flags, now))
			return;
		queue_task(p, tctx, cpu, QK_SHARED, deadline, enq_flags, now);
		if (!kick_is_moot(cpu, p, enq_flags))
			scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		tctx->may_preempt = 1;
		preempt_for(p, deadline, now);
		return;
	}
	queue_task(p, tctx, cpu, QK_SHARED, deadline, enq_flags, now);
	kick_idle_for(idle, cpu, p, enq_flags);
}

/*
 * Move the head of @h's queue to @cpu's run queue and count it; after a dispatch from the
 * @shared queue, preempt for the head left behind if it has that right (preempt_for_next).
 */
static __always_inline bool take_head(s32 cpu, const struct queue_head *h, bool shared, u64 now)
{
	if (!scx_bpf_dsq_move_to_local(h->dsq, 0))
		return false;
	stat_inc(shared ? STAT_DISPATCH_LLC : STAT_DISPATCH_PINNED);
	if (shared)
		preempt_for_next(cpu, now);
	return true;
}

/*
 * @prev's turn on @cpu ended (its slice ran out, or a kick) and it is still runnable: keep it
 * on for another turn when, queued now, it would come before @head, the head this CPU would
 * take otherwise. The kernel asks for the next task before it puts @prev back in a queue, so
 * without this the head took the CPU even when @prev's own next deadline was earlier, and
 * @prev then waited a whole turn of the head's: deadline order held only among the waiting.
 * A task heavier than nice 0 (whose deadlines are closest) thus ran at most every other turn
 * beside nice-0 spinners, whatever its weight. Not for a
 * yielder (it asked to go behind), a turn given by a yield (take_yield_turn: it is short so
 * that the yielder looks again soon), an urgent head (the caller checks) or the greedy model.
 * The run goes on without ops.stopping/running: it is charged when it ends; its new turn
 * gets a slice timer like a queued task's would.
 */
static __always_inline bool keep_prev_first(s32 cpu, struct task_struct *prev,
					    const struct queue_head *head, u64 now)
{
	struct task_ctx *pctx;
	struct cpu_ctx *cctx;
	u32 timer;
	u64 turn;

	if (!prev || !(prev->scx.flags & SCX_TASK_QUEUED) || deadline_mode != DEADLINE_CAPPED ||
	    debug_stalled(prev) || !(pctx = task_ctx(prev)) || pctx->yielded || pctx->yield_turn ||
	    !bpf_cpumask_test_cpu(cpu, prev->cpus_ptr))
		return false;
	/*
	 * Not earlier than now + the offset it ran with either: a wake-up preempted it because
	 * the woken task's deadline came before that (preempt_for's rule), and a deadline worked
	 * out afresh, with its lag and criticality moved since, must not undo the preemption.
	 */
	cctx = cpu_ctx_of(cpu);
	if (!cctx || !time_before(now + cctx->running_offset, head->deadline) ||
	    !time_before(task_deadline(prev, pctx, now, false), head->deadline))
		return false;
	turn = turn_on(prev, pctx, cpu, now, &timer);
	prev->scx.slice = turn;
	/* (turn_on's timer already covers every task lighter than the heaviest about) */
	if (timer)
		arm_slice_timer(prev, cpu, cctx->run_seq, pctx->avg_runtime);
	stat_inc(STAT_KEEP_FIRST);
	return true;
}

/*
 * ops.dispatch - @cpu has nothing in its local run queue; @prev, if still runnable, is the
 * task that just ran. Takes the head that should go first of this CPU's pinned queue and its
 * LLC queue (head_first: the earlier deadline, or the oldest once either waited the urgent
 * half of the bound), a busier LLC's head when balance asks for it (pull_for_balance), else
 * another LLC's task (pull_from_other_llcs). If nothing may run here, @prev goes on with a
 * full slice (a yield that found nobody).
 */
void BPF_STRUCT_OPS(concord_dispatch, s32 cpu, struct task_struct *prev)
{
	struct queue_head pin = {}, shr = {};
	struct queue_head *first, *second;
	struct cpu_ctx *cctx;
	u64 now = scx_bpf_now();
	bool urgent;

	if (debug_error_after_ns && now - init_at > debug_error_after_ns) {
		scx_bpf_error("debug: error requested %llu ms after init", debug_error_after_ns / 1000000);
		return;
	}

	/* what this dispatch moves to the local run queue is not followed (note_local_dl) */
	cctx = cpu_ctx_of(cpu);
	if (cctx)
		cctx->local_dl = 0;
	if (pinned_mode == PINNED_PER_CPU)
		peek_head(pinned_dsq(cpu), cpu, &pin);
	peek_head(shared_dsq(cpu), cpu, &shr);

	if (head_first(&pin, &shr, now, &urgent)) {
		first = &pin;
		second = &shr;
	} else {
		first = &shr;
		second = &pin;
	}
	/*
	 * A busier LLC's head before ours, unless ours waited the urgent half of the bound or a
	 * pinned task waits here (no other CPU can take it).
	 */
	if (!urgent && !pin.present && pull_for_balance(cpu, cctx))
		return;
	if (!urgent && first->present && keep_prev_first(cpu, prev, first, now))
		return;
	if (first->present && take_head(cpu, first, first == &shr, now)) {
		if (urgent)
			stat_inc(STAT_URGENT);
		return;
	}
	/* The head may have been taken by another CPU (or, in a shared queue, not be ours). */
	if (second->present && take_head(cpu, second, second == &shr, now))
		return;
	if (!first->present && first == &shr && take_head(cpu, &shr, true, now))
		return;
	if (pull_from_other_llcs(cpu))
		return;

	/* Nothing waits that may run here: let the previous task go on (a yield found nobody). */
	if (prev && (prev->scx.flags & SCX_TASK_QUEUED) && !debug_stalled(prev)) {
		struct task_ctx *pctx = task_ctx(prev);
		struct cpu_ctx *cctx = cpu_ctx_of(cpu);

		prev->scx.slice = slice_max_ns;
		if (pctx)
			pctx->yielded = 0;
		/* the kernel keeps it on without ops.running: no turn follows this yield */
		if (cctx)
			cctx->yielder_pid = 0;
		stat_inc(STAT_KEEP_RUNNING);
	}
}

/*
 * ops.tick - every scheduler tick on the CPU running @p. Measures the tick, kicks the LLC's
 * idle CPUs if its queue's head has waited the whole bound (kick_idle_llc) and any idle CPU
 * that left a task only it can run waiting for a tick (rekick_late), notes whether
 * another LLC is busier (note_busier_llc), and ends @p's slice, once it has run slice_min,
 * when a queued task should run before it: a pinned head that is more critical or urgent, or
 * an urgent LLC head.
 */
void BPF_STRUCT_OPS(concord_tick, struct task_struct *p)
{
	struct queue_head h = {}, shr = {};
	struct task_ctx *tctx = task_ctx(p);
	s32 cpu = scx_bpf_task_cpu(p);
	struct cpu_ctx *cctx = cpu_ctx_of(cpu);
	u64 now = scx_bpf_now();

	/*
	 * The LLC queue's head waited the whole bound: urgent tasks go first everywhere, so this
	 * only happens when CPUs of the LLC sleep through it (see kick_idle_llc()).
	 */
	measure_tick(now);
	peek_head(shared_dsq(cpu), cpu, &shr);
	if (shr.present && waited_over(shr.enq_at, now, max_wait_ns))
		kick_idle_llc(cpu, now);
	rekick_late(cpu, now);
	if (cctx)
		note_busier_llc(cpu, cctx);
	/* a task alone on its CPU is never queued again: its rule is looked at here */
	if (tctx) {
		rule_note_run(tctx, now);
		rules_recheck(p, tctx, now);
	}

	/* Let every task run at least the minimum slice before a tick takes the CPU. */
	if (!tctx || !tctx->run_at || now - tctx->run_at < slice_min_ns)
		return;
	if (pinned_mode == PINNED_PER_CPU) {
		peek_head(pinned_dsq(cpu), cpu, &h);
		/* preempt_for's rule, for a more critical task than the running one only */
		if (h.present && (head_urgent(&h, now) ||
				  (cctx && h.offset < cctx->running_offset &&
				   time_before(h.deadline, now + cctx->running_offset)))) {
			p->scx.slice = 0;
			stat_inc(STAT_TICK_PREEMPT);
			return;
		}
	}
	if (head_urgent(&shr, now)) {
		p->scx.slice = 0;
		stat_inc(STAT_TICK_PREEMPT);
	}
}

/*
 * The first turn after a yield on this CPU (see ops.yield), of a task other than the yielder,
 * is at most slice_min: the yielder gave the CPU away to let waiting work run, not for a whole
 * slice of a CPU hog, and it is usually a runtime's idle worker polling for work (ERTS
 * schedulers spin with sched_yield before they sleep). With a full slice, work that arrived
 * for it meanwhile waited up to a tick while the hog ran; with this, it looks again within
 * slice_min. Its yield deadline still puts it behind its equals, and everyone's wait bound is
 * untouched (a shorter turn only brings the next task sooner). Not in the greedy model.
 */
static __always_inline void take_yield_turn(struct task_struct *p, struct task_ctx *tctx,
					    struct cpu_ctx *cctx)
{
	u32 yielder = cctx->yielder_pid;

	tctx->yield_turn = 0;
	if (!yielder)
		return;
	cctx->yielder_pid = 0;
	if (yielder == (u32)p->pid || deadline_mode != DEADLINE_CAPPED || p->scx.slice <= slice_min_ns)
		return;
	p->scx.slice = slice_min_ns;
	tctx->yield_turn = 1;
	stat_inc(STAT_YIELD_TURN);
}

/*
 * ops.runnable - @p became runnable (SCX_ENQ_WAKEUP: it woke up). Its wait starts now, a
 * wake-up updates its wake frequency, and its waker's, for its latency criticality, and it
 * counts as runnable in its cgroup (weights.bpf.h).
 */
void BPF_STRUCT_OPS(concord_runnable, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = task_ctx(p);
	u64 now = scx_bpf_now();

	if (!tctx)
		return;
	tctx->ready_at = now;
	if (enq_flags & SCX_ENQ_WAKEUP)
		lat_cri_on_wakeup(p, tctx, now);
	rules_recheck(p, tctx, now);
	weight_on_runnable(p, tctx);
}

/*
 * ops.quiescent - @p is no longer runnable (it sleeps, exits, or leaves for a moment while its
 * cgroup, policy or nice changes): it stops counting in its cgroup.
 */
void BPF_STRUCT_OPS(concord_quiescent, struct task_struct *p, u64 deq_flags)
{
	struct task_ctx *tctx = task_ctx(p);

	if (tctx)
		weight_on_quiescent(tctx);
}

/*
 * ops.running - @p starts running on its CPU. Ends and counts its wait (record_wait: every
 * path, every queue), records the offset the running task holds against preemption, gives a
 * short turn after another task's yield (take_yield_turn), arms the slice timer when ticks
 * would end its turn too late, and moves its domain's virtual clock.
 */
void BPF_STRUCT_OPS(concord_running, struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx(p);
	s32 cpu = bpf_get_smp_processor_id();
	struct cpu_ctx *cctx = cpu_ctx_of(cpu);
	u64 now = scx_bpf_now();

	if (!tctx)
		return;
	/*
	 * Preemption compares queued deadlines with now + this: the running task as if requeued,
	 * i.e. the offset it was given when it was placed (recomputing it here cost a third of
	 * this callback). A task that waited the urgent half of the bound is not a wake-up's
	 * victim (offset 0) until its slice ends: kicked back into line again and again, it would
	 * never get a run.
	 */
	if (cctx) {
		u64 offset;

		/* this CPU runs: what we put in its local run queue is not stuck (note_direct) */
		if (cctx->direct_at)
			cctx->direct_at = 0;
		cctx->ours_running = 1;

		if (wait_is_urgent(tctx->enq_at, now))
			offset = 0;
		else if (tctx->wait_from && time_before(tctx->wait_from, tctx->deadline))
			offset = tctx->deadline - tctx->wait_from;
		else
			offset = task_offset(p, tctx, now);
		cctx->running_offset = offset;
		++cctx->run_seq;
		take_yield_turn(p, tctx, cctx);
		tctx->run_turn = p->scx.slice;
		if (tctx->slice_timer || tctx->yield_turn || weight_of(p, tctx) < WEIGHT_DEFAULT)
			arm_slice_timer(p, cpu, cctx->run_seq, tctx->avg_runtime);
	}
	record_wait(p, tctx, now, cpu);
	vclock_on_running(tctx, cpu);
	note_heavy(p, tctx, cpu, now);
	tctx->run_at = now;
}

/*
 * ops.stopping - @p leaves its CPU; @runnable if it still wants one (preempted, slice over,
 * yielded), else it sleeps. Charges the run to its vtime and run-time average, starts the next
 * wait of a runnable task, and lets a task cut short (before slice_min, or its own shorter
 * turn: pol_cut_short) keep its place (keep_place) so that a kick cannot push it later and later.
 */
void BPF_STRUCT_OPS(concord_stopping, struct task_struct *p, bool runnable)
{
	struct cpu_ctx *cctx = cpu_ctx_of(bpf_get_smp_processor_id());
	struct task_ctx *tctx = task_ctx(p);
	u64 now = scx_bpf_now();

	if (cctx)
		cctx->ours_running = 0;
	if (!tctx)
		return;
	/* Still runnable (preempted, slice over, yielded): its next wait starts now. */
	if (runnable)
		tctx->ready_at = now;
	/*
	 * Not in the greedy model: scx_lavd of the time had no such rule. Not for a yield: a task
	 * that gives the CPU away of its own accord has not been cut short.
	 */
	tctx->keep_place = deadline_mode == DEADLINE_CAPPED && runnable && !tctx->yielded &&
			   tctx->run_at && !time_before(now, tctx->run_at) &&
			   pol_cut_short(now - tctx->run_at, tctx->run_turn, slice_min_ns);
	rule_note_run(tctx, now);
	handoff_on_stop(tctx, runnable, now);
	lat_cri_on_stop(p, tctx, now);
}

/*
 * ops.yield - sched_yield(), or yield_to() when @to is set. @from gives its CPU to the tasks
 * waiting for it: its slice ends now and its next queueing places it behind its equals
 * (yield_deadline()). Runtimes busy-wait this way (ERTS schedulers spin with sched_yield()
 * before they sleep, and so do lock spinners): if the yielder kept its place it would be taken
 * again at once and the yield would yield nothing, while a task with work waited behind a
 * spinner. The task that gets the CPU from it runs a turn of at most slice_min
 * (take_yield_turn()), so a yielder polling for work looks again soon. When nobody waits,
 * dispatch lets it go on (keep running). yield_to() is not supported (returns false: the
 * kernel then does nothing).
 */
bool BPF_STRUCT_OPS(concord_yield, struct task_struct *from, struct task_struct *to)
{
	struct task_ctx *tctx;
	struct cpu_ctx *cctx;

	if (to)
		return false;
	if ((tctx = task_ctx(from)))
		tctx->yielded = 1;
	if ((cctx = cpu_ctx_of(scx_bpf_task_cpu(from))))
		cctx->yielder_pid = from->pid;
	from->scx.slice = 0;
	return false;
}

/*
 * ops.cpu_release - a higher scheduling class (RT, deadline, stop) takes @cpu. The tasks we
 * already put in its local run queue would wait behind that class for as long as it runs, where
 * our wait bound cannot see or help them: give them back to ops.enqueue (SCX_ENQ_REENQ), which
 * queues them again keeping their place, so other CPUs can take them.
 */
void BPF_STRUCT_OPS(concord_cpu_release, s32 cpu, struct scx_cpu_release_args *args)
{
	scx_bpf_reenqueue_local();
}

/*
 * ops.enable - @p comes under sched_ext (at attach, at fork, or switched in with --partial): its
 * vtime starts level with its domain's clock.
 */
void BPF_STRUCT_OPS(concord_enable, struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx(p);
	u64 now = scx_bpf_now();

	p->scx.dsq_vtime = now;
	/*
	 * A new task starts level with its domain: no credit, no debt; and what it does until it
	 * first sleeps is work begun now (chain_at).
	 */
	if (tctx) {
		tctx->vtime = home_vclock(p);
		tctx->chain_at = now;
	}
}

/*
 * ops.init_task - @p is about to come under sched_ext: create its context. Returns 0, or
 * -ENOMEM, which fails the fork (or the attach) rather than leave a task without one.
 */
s32 BPF_STRUCT_OPS(concord_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	struct task_ctx *tctx;

	tctx = bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx)
		return -ENOMEM;
	/* Start as a typical non-critical task: half a slice per run, no wake-up history. */
	tctx->avg_runtime = slice_max_ns / 2;
	tctx->cgid = cgroup_id_of(args->cgroup);
	return 0;
}

/*
 * ops.cgroup_init - cgroup @cgrp gets the cpu controller (at attach for those that have it, in
 * parents' order): its node, with its cpu.weight, under its parent's. Returns 0 even when
 * the node map is full: the cgroup's tasks then weigh as if they were in its parent.
 */
s32 BPF_STRUCT_OPS(concord_cgroup_init, struct cgroup *cgrp, struct scx_cgroup_init_args *args)
{
	struct cg_node n = { .weight = args->weight };
	u64 cgid = cgroup_id_of(cgrp);

	if (cgrp->level > 0) {
		struct cgroup *parent = bpf_cgroup_ancestor(cgrp, cgrp->level - 1);

		if (parent) {
			n.parent = cgroup_id_of(parent);
			bpf_cgroup_release(parent);
		}
	} else {
		cg_root_id = cgid;
	}
	if (bpf_map_update_elem(&cg_nodes, &cgid, &n, BPF_NOEXIST))
		__sync_fetch_and_add(&cg_untracked, 1);
	else if (n.parent)
		__sync_fetch_and_add(&cg_nr_nodes, 1);
	return 0;
}

/* ops.cgroup_exit - @cgrp is gone (it had no tasks left): so is its node. */
void BPF_STRUCT_OPS(concord_cgroup_exit, struct cgroup *cgrp)
{
	u64 cgid = cgroup_id_of(cgrp);
	struct cg_node *n = bpf_map_lookup_elem(&cg_nodes, &cgid);

	if (n && n->parent)
		__sync_fetch_and_sub(&cg_nr_nodes, 1);
	bpf_map_delete_elem(&cg_nodes, &cgid);
}

/*
 * ops.cgroup_set_weight - cpu.weight of @cgrp changed: an active cgroup's share among its
 * siblings changes at once.
 */
void BPF_STRUCT_OPS(concord_cgroup_set_weight, struct cgroup *cgrp, u32 weight)
{
	u64 cgid = cgroup_id_of(cgrp), parent;
	struct cg_node *n = bpf_map_lookup_elem(&cg_nodes, &cgid);
	s64 delta = 0;

	if (!n)
		return;
	bpf_spin_lock(&n->lock);
	n->weight = weight;
	if (n->nr_active > 0) {
		delta = (s64)weight - (s64)n->contrib;
		n->contrib = weight;
	}
	parent = n->parent;
	bpf_spin_unlock(&n->lock);
	if (delta && parent)
		cg_add_weight(parent, delta);
}

/*
 * ops.cgroup_move - @p moves from cgroup @from to @to. The kernel takes a runnable task off
 * (ops.quiescent, where it stops counting in @from) and puts it back (ops.runnable, in @to).
 */
void BPF_STRUCT_OPS(concord_cgroup_move, struct task_struct *p, struct cgroup *from,
		    struct cgroup *to)
{
	struct task_ctx *tctx = task_ctx(p);

	if (tctx)
		tctx->cgid = cgroup_id_of(to);
}

/*
 * ops.init - the scheduler loads: slice timers, per-CPU state, and the queues (a pinned queue
 * per CPU, one per LLC, the global one). Any failure is an error that unloads us with its
 * reason.
 */
s32 BPF_STRUCT_OPS_SLEEPABLE(concord_init)
{
	u32 i;
	s32 err;

	init_at = scx_bpf_now();
	init_jiffies = bpf_jiffies64();
	err = init_slice_timers();
	if (err) {
		scx_bpf_error("setting up slice timers: %d", err);
		return err;
	}
	bpf_for(i, 0, nr_cpus) {
		err = scx_bpf_create_dsq(pinned_dsq(i), -1);
		if (err) {
			scx_bpf_error("creating pinned queue of CPU %u: %d", i, err);
			return err;
		}
	}
	bpf_for(i, 0, nr_llcs) {
		u32 node = i < MAX_LLCS ? llc_node[i] : 0;

		err = scx_bpf_create_dsq(llc_dsq_of_llc(i), node);
		if (err) {
			scx_bpf_error("creating queue of LLC %u: %d", i, err);
			return err;
		}
	}
	err = scx_bpf_create_dsq(DSQ_GLOBAL, -1);
	if (err) {
		scx_bpf_error("creating global queue: %d", err);
		return err;
	}
	if (debug_stall_comm[0]) {
		err = scx_bpf_create_dsq(DSQ_STALL, -1);
		if (err)
			scx_bpf_error("creating the debug stall queue: %d", err);
	}
	return err;
}

/*
 * ops.exit - the scheduler unloads: keep the kernel's exit reason for user space to print.
 */
void BPF_STRUCT_OPS(concord_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

/*
 * Run policy.h in the kernel for the BPF/Rust agreement test (BPF_PROG_TEST_RUN), in two
 * programs run one after the other on the same arguments (the second reads the first's
 * outputs): as one program the branches of all the rules multiplied past the verifier's
 * million-instruction limit.
 */
SEC("syscall")
int policy_probe(struct policy_probe_args *a)
{
	a->lat_cri = pol_lat_cri(a->wake_freq, a->waker_freq);
	a->deadline_offset_ns = pol_deadline_offset(a->avg_runtime_ns, a->weight, a->lat_cri,
						    slice_min_ns, slice_max_ns, offset_cap_ns());
	a->slice_ns = pol_turn(pol_slice(a->nr_waiting % 5, a->nr_waiting, a->domain_cpus, a->weight,
					 slice_min_ns, slice_max_ns), a->weight, offset_cap_ns());
	a->wait_bucket = pol_wait_bucket(a->wait_ns);
	a->freq_after = pol_freq_update(a->wake_freq, a->wait_ns);
	a->freq_since = pol_freq_since(a->wake_freq, a->wait_ns);
	a->credit_ns = pol_service_credit(a->vtime, a->vclock, lag_max_ns(), a->avg_runtime_ns,
					   slice_min_ns);
	return 0;
}

SEC("syscall")
int policy_probe_lag(struct policy_probe_args *a)
{
	a->offset_ns = pol_offset_with_lag(a->deadline_offset_ns, a->vtime, a->vclock, lag_max_ns(),
					   offset_cap_ns());
	a->vtime_after = pol_vtime_after_run(a->vtime, a->wait_ns, a->weight, a->vclock, lag_max_ns());
	a->vclock_after = pol_clock_after_start(a->vclock, a->vtime, lag_max_ns());
	a->yield_offset_ns = pol_yield_offset(a->deadline_offset_ns, slice_max_ns, offset_cap_ns());
	a->timer_needed = pol_timer_needed(a->nr_waiting % 5, a->nr_waiting, a->domain_cpus, a->weight,
					   a->wait_ns, offset_cap_ns());
	a->waited_over = pol_waited_over(a->vtime, a->vclock, a->wait_ns);
	a->vtime_handoff = pol_vtime_on_handoff(a->wait_ns, a->vtime, a->avg_runtime_ns, a->weight,
						a->vclock, lag_max_ns());
	a->cut_short = pol_cut_short(a->wait_ns, a->slice_ns, slice_min_ns);
	a->offset_weight = pol_offset_weight(a->weight, a->heaviest);
	a->yield_behind = pol_yield_behind(a->vtime, a->vclock, a->vclock + a->wait_ns, slice_max_ns);
	a->handoff_verdict = pol_handoff_verdict(a->wait_ns, a->nr_waiting & 1, slice_min_ns);
	a->share = pol_share(a->vtime, a->weight, a->heaviest);
	a->cgroup_weight = pol_cgroup_weight(a->vtime, a->vclock);
	return 0;
}

/*
 * Runs a preemption scan's CPU walk in the kernel, the domain's cursor and all, on the loaded
 * topology (which the probe may have made up: 176 or 256 CPUs on a 2-CPU test machine), for
 * the coverage test.
 */
SEC("syscall")
int scan_probe(struct scan_probe_args *a)
{
	u64 far_from = scan_far_from(a->start);
	s32 cpus[SCAN_MAX];
	u32 i;

	bpf_for(i, 0, SCAN_MAX) {
		if (i < SCAN_MAX)
			cpus[i] = scan_cpu(a->start, i, far_from);
	}
	/* one copy at a fixed offset: 7.0's verifier refuses a context store at a variable one */
	__builtin_memcpy(a->cpus, cpus, sizeof(cpus));
	a->far_from = far_from;
	return 0;
}

SCX_OPS_DEFINE(concord_ops,
	       .select_cpu		= (void *)concord_select_cpu,
	       .enqueue			= (void *)concord_enqueue,
	       .dispatch		= (void *)concord_dispatch,
	       .tick			= (void *)concord_tick,
	       .runnable		= (void *)concord_runnable,
	       .quiescent		= (void *)concord_quiescent,
	       .running			= (void *)concord_running,
	       .stopping		= (void *)concord_stopping,
	       .yield			= (void *)concord_yield,
	       .cpu_release		= (void *)concord_cpu_release,
	       .enable			= (void *)concord_enable,
	       .init_task		= (void *)concord_init_task,
	       .cgroup_init		= (void *)concord_cgroup_init,
	       .cgroup_exit		= (void *)concord_cgroup_exit,
	       .cgroup_set_weight	= (void *)concord_cgroup_set_weight,
	       .cgroup_move		= (void *)concord_cgroup_move,
	       .init			= (void *)concord_init,
	       .exit			= (void *)concord_exit,
	       .timeout_ms		= 5000,
	       .name			= "concord");
