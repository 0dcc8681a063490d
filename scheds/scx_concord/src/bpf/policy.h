/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The policy's arithmetic, free of BPF and kernel types so it reads like math. Mirrored in
 * src/policy.rs; the `policy_probe` program lets a test run this exact code in the kernel and
 * compare it with the Rust version.
 *
 * Invariants (unit-tested in Rust):
 *   - lat_cri is in [1, LAT_CRI_MAX], non-decreasing in wake and waker frequency;
 *   - the deadline offset is at most `cap` (half the wait bound), non-increasing in lat_cri
 *     and weight, non-decreasing in average runtime, and never depends on how late a task
 *     already is (no greedy penalty, no feedback loop);
 *   - the service-lag correction scales the offset by 1/4 to 7/4 and the result stays at most
 *     cap: fairness among equals, never a way past the wait bound or ahead of critical tasks;
 *   - the wake-up credit is at most lag_max (one slice), zero for a task level with or ahead of
 *     its domain's clock, non-decreasing in how far behind it is, non-increasing in its
 *     average runtime;
 *   - the slice is in [slice_min, slice_max] and non-increasing in the number of waiters;
 *   - a sync hand-off never lowers the wakee's vtime, and raises it at most to where a run
 *     of the waker leaves the waker's;
 *   - a yielder's offset is later than its own offset (unless at the cap) and at most the cap;
 *   - a wait that began after "now" (another CPU's clock ahead of this one) is never urgent;
 *   - a slice timer is needed for lighter-than-nice-0 tasks, and for the rest exactly when
 *     tick-long turns of everyone waiting would pass the urgent half of the bound;
 *   - a preemption scan looks at most SCAN_MAX distinct CPUs of its domain, always the
 *     SCAN_NEAR nearest, and consecutive scans from one CPU of a domain of n CPUs see all of
 *     them within ceil((n - SCAN_NEAR) / (SCAN_MAX - SCAN_NEAR)) scans;
 *   - a share of a share is at most the first, and a task's cgroup weight is in [1, 10000]
 *     and is the nice weights' total for a task that has the whole machine.
 */
#ifndef __CONCORD_POLICY_H
#define __CONCORD_POLICY_H

#define NSEC_PER_SEC_P		1000000000ULL
#define FREQ_MAX		10000ULL	/* wake-ups/s: faster counts as this */
#define LAT_CRI_MAX		27ULL		/* 1 + 2 * log2(FREQ_MAX + 1) */
#define WEIGHT_DEFAULT		100ULL		/* sched_ext weight of nice 0 */
#define SLICE_FLOOR_NS		(SLICE_FLOOR_US * 1000ULL)	/* intf.h */

/*
 * floor(log2(v)), 0 for v <= 1. A binary search: six steps (shifts 32, 16, ..., 1) instead of
 * one per bit (a bit loop ran ~14 times per rate on every wake-up and run, and BPF has no
 * count-leading-zeros).
 */
static inline u64 pol_log2(u64 v)
{
	u64 r = 0;

	for (u32 s = 32; s; s >>= 1) {
		if (v >> s) {
			v >>= s;
			r += s;
		}
	}
	return r;
}

static inline u64 pol_clamp(u64 v, u64 lo, u64 hi)
{
	return v < lo ? lo : (v > hi ? hi : v);
}

/*
 * Decayed event frequency: each event folds 1/interval into a running average with weight 1/4.
 * A task that stops waking decays through later intervals being long.
 */
static inline u64 pol_freq_update(u64 freq, u64 interval_ns)
{
	u64 sample = interval_ns ? NSEC_PER_SEC_P / interval_ns : FREQ_MAX;

	if (sample > FREQ_MAX)
		sample = FREQ_MAX;
	return (freq * 3 + sample) / 4;
}

/*
 * The event rate as of @since_ns after the last event: at most one per @since_ns. The average
 * moves only on events, so without this a task that stopped waking (a thread that now spins,
 * a batch job between bursts) kept the criticality of its last wake-ups for good: a nice-19
 * spinner that had woken a few times at start kept a short offset and a nice-0 share.
 */
static inline u64 pol_freq_since(u64 freq, u64 since_ns)
{
	u64 bound = since_ns ? NSEC_PER_SEC_P / since_ns : freq;

	return freq < bound ? freq : bound;
}

/* Running average of runtime per run, weight 1/4 for the newest run. */
static inline u64 pol_runtime_update(u64 avg, u64 ran_ns)
{
	return (avg * 3 + ran_ns) / 4;
}

/*
 * Latency criticality: tasks that wake often (waiting on events) and tasks that wake others
 * (producers in a chain) are latency critical. Logarithmic, so a 10x rate is a small step.
 */
static inline u64 pol_lat_cri(u64 wake_freq, u64 waker_freq)
{
	u64 lc = 1 + pol_log2(pol_clamp(wake_freq, 0, FREQ_MAX) + 1) +
		 pol_log2(pol_clamp(waker_freq, 0, FREQ_MAX) + 1);
	return pol_clamp(lc, 1, LAT_CRI_MAX);
}

/*
 * The weight a task's deadline offset is computed with: its own, relative to @heaviest, the
 * heaviest weight of a CPU-bound task that ran in its domain lately (nice 0's when none is
 * heavier). Deadlines are real time (now + offset), and among tasks that are always runnable a
 * task then runs until the deadline of the one waiting longest comes due: per turn of a
 * nice-0 task, a heavier one gets about the nice-0 task's offset of CPU, whatever its own
 * offset. With offsets scaled to nice 0 a nice-0 task's offset is its own turn, so nice -10
 * (weight 932) got about one nice-0 turn per nice-0 turn, not 9.3. Scaled to the heaviest,
 * the nice-0 task's offset is 9.3 turns (up to the cap) and the heavier task runs that long
 * between its turns. With no heavier task about, this is the weight itself: nothing changes.
 */
static inline u64 pol_offset_weight(u64 weight, u64 heaviest)
{
	u64 h = pol_clamp(heaviest, WEIGHT_DEFAULT, 10000);
	u64 w = pol_clamp(weight, 1, 10000) * WEIGHT_DEFAULT / h;

	return w ? w : 1;
}

/*
 * Deadline offset from the moment a task is queued: the expected runtime (clamped to a slice),
 * scaled by priority weight, capped, and divided by latency criticality. It depends only on
 * the task's recent behaviour, never on how late it already is.
 */
static inline u64 pol_deadline_offset(u64 avg_runtime, u64 weight, u64 lat_cri, u64 slice_min,
				      u64 slice_max, u64 cap)
{
	u64 base = pol_clamp(avg_runtime, slice_min, slice_max);
	u64 w = pol_clamp(weight, 1, 10000);
	u64 offset = base * WEIGHT_DEFAULT / w;

	if (offset > cap)
		offset = cap;
	return offset / pol_clamp(lat_cri, 1, LAT_CRI_MAX);
}

/*
 * Service lag (fairness among equals). A task's vtime is its CPU time scaled by 100/weight; its
 * domain's clock is the largest vtime any task there started running with. Both are kept
 * within lag_max of each other, so the lag is bounded memory of recent service, not a history
 * that could grow. The offset is scaled by 1 + 3 lag / (4 lag_max), between 1/4 (a full lag_max
 * behind: it got less than its peers lately) and 7/4 (ahead), then capped: relative, so equal
 * tasks are evened out while a hog's credit can never bring it before a latency-critical task
 * (an absolute credit of a slice took a hog's offset to 0 and hurt the outage scenario), and
 * the wait bound holds whatever the history. Without the term, equal CPU-bound tasks that get
 * longer slices (a pinned task alone in its queue) keep their advantage.
 */
static inline u64 pol_offset_with_lag(u64 offset, u64 vtime, u64 vclock, u64 lag_max, u64 cap)
{
	bool ahead = vtime >= vclock;
	u64 gap = ahead ? vtime - vclock : vclock - vtime;

	if (lag_max) {
		u64 adj = offset * 3 / 4 * pol_clamp(gap, 0, lag_max) / lag_max;

		offset = ahead ? offset + adj : offset - adj;
	}
	return offset > cap ? cap : offset;
}

/*
 * Service credit: how far a task's vtime is behind its domain's clock (at most lag_max, one
 * slice), taken off its deadline. A task that slept while others ran is placed like EEVDF
 * places a sleeper with its lag: not behind CPU hogs whose deadlines came due while it slept
 * (each round trip of a pipe ping-pong beside hogs waited a hog's slice). Bounded by service,
 * never by how late a task is: no feedback loop, and a queued task is overtaken by at most
 * lag_max more.
 * The bound shrinks as lag_max * short_run / avg_runtime for tasks whose runs are longer than
 * short_run (slice_min): overtaking costs the overtaken tasks the overtaker's run, so a 40 us
 * burst may jump a whole slice of queue, an 800 us batch chunk woken at a barrier less (with
 * one bound for all sleepers, batch threads queued first kept a periodic task waiting behind
 * all their chunks).
 */
static inline u64 pol_service_credit(u64 vtime, u64 vclock, u64 lag_max, u64 avg_runtime,
				     u64 short_run)
{
	u64 behind = vclock > vtime ? vclock - vtime : 0;
	u64 bound = lag_max;

	if (avg_runtime > short_run)
		bound = lag_max * short_run / avg_runtime;
	return behind < bound ? behind : bound;
}

/*
 * A task's vtime after running @ran_ns at @weight: at most lag_max behind its domain's clock,
 * and at most lag_max ahead for nice 0 and heavier, lag_max * 100 / weight for lighter tasks.
 * A light task's vtime runs fast (100x for nice 19); clamped to a lag_max window it would look
 * behind again as soon as its peers had run, and get a short offset: nice 19 had a third of a
 * CPU among nice-0 spinners. With the wider window it stays ahead, its offset at the cap.
 */
static inline u64 pol_vtime_after_run(u64 vtime, u64 ran_ns, u64 weight, u64 vclock, u64 lag_max)
{
	u64 lo = vclock > lag_max ? vclock - lag_max : 0;
	u64 w = pol_clamp(weight, 1, 10000);
	u64 ahead = lag_max * WEIGHT_DEFAULT / (w < WEIGHT_DEFAULT ? w : WEIGHT_DEFAULT);

	vtime += ran_ns * WEIGHT_DEFAULT / w;
	return pol_clamp(vtime, lo, vclock + ahead);
}

/*
 * A task's vtime when a sync wake-up (a pipe or socket hop: the waker is about to sleep) hands
 * it the waker's work: at least the waker's, the waker's run so far (@waker_ran at
 * @waker_weight) included, so that a chain of hops is charged as one task. Otherwise each
 * thread of a token ring that keeps a CPU busy looks a light sleeper, every hop gets up to a
 * slice of wake-up credit, and the ring overtakes the tasks queued beside it hop after hop: a
 * pinned server thread that had yielded waited behind hops for two slices. A request-response
 * pair beside CPU hogs keeps its credit: both sides together still use less than their share.
 * Raises only, and only to where a run leaves a vtime: never a debt beyond the lag window.
 */
static inline u64 pol_vtime_on_handoff(u64 vtime, u64 waker_vtime, u64 waker_ran,
				       u64 waker_weight, u64 vclock, u64 lag_max)
{
	u64 v = pol_vtime_after_run(waker_vtime, waker_ran, waker_weight, vclock, lag_max);

	return v > vtime ? v : vtime;
}

/*
 * The domain's clock when a task with @vtime starts running: the largest vtime started, but
 * moving at most lag_max per start, so that one light task far ahead does not drag the clock
 * (and with it everyone's lag) along.
 */
static inline u64 pol_clock_after_start(u64 vclock, u64 vtime, u64 lag_max)
{
	u64 v = vtime < vclock + lag_max ? vtime : vclock + lag_max;

	return v > vclock ? v : vclock;
}

/*
 * The greedy model (`--deadline greedy`), kept to reproduce the outage: scx_lavd's deadline of
 * the time (seed 000), runtime x greedy penalty / latency criticality, where the penalty is the
 * task's CPU service so far over the average task's (at least 1x, at most GREEDY_MAX x), with
 * no cap tied to a wait bound (only GREEDY_OFFSET_MAX, far below the 5 s watchdog). A task that
 * was starved and then ran long to catch up is pushed further back: the feedback loop.
 */
#define GREEDY_MAX		100ULL
#define GREEDY_OFFSET_MAX	250000000ULL	/* 250 ms: the loop shows well before; runs still end */

static inline u64 pol_greedy_offset(u64 avg_runtime, u64 weight, u64 lat_cri, u64 slice_min,
				    u64 slice_max, u64 svc, u64 avg_svc)
{
	u64 base = pol_clamp(avg_runtime, slice_min, slice_max);
	u64 w = pol_clamp(weight, 1, 10000);
	u64 permille = avg_svc ? svc * 1000 / avg_svc : 1000;
	u64 offset;

	permille = pol_clamp(permille, 1000, GREEDY_MAX * 1000);
	offset = base * WEIGHT_DEFAULT / w * permille / 1000 / pol_clamp(lat_cri, 1, LAT_CRI_MAX);
	return offset > GREEDY_OFFSET_MAX ? GREEDY_OFFSET_MAX : offset;
}

/*
 * The longest turn of a task lighter than nice 0 whose deadline offset is at the cap. A task's
 * CPU share goes as its turn over its offset (a turn per offset's worth of queue), and its
 * offset as turn * 100 / weight, so weights act once, through the offset. But the offset is
 * capped (the wait bound: nobody waits more than the cap behind its queueing), and past the
 * cap only a shorter turn can keep the share in proportion: turn = cap * weight / 100 gives
 * turn / cap = weight / 100 of a nice-0 task's share (whose turn equals its offset). Floored at
 * slice_min, nice 19 (weight 1) got several times its weight's share of a nice-0 spinner's.
 * Never below SLICE_FLOOR_US: a turn costs a switch and a timer, and shorter ones are mostly
 * that cost.
 */
static inline u64 pol_light_turn(u64 weight, u64 cap)
{
	u64 t = pol_clamp(cap, 0, 1ULL << 40) * pol_clamp(weight, 1, WEIGHT_DEFAULT) / WEIGHT_DEFAULT;

	return t > SLICE_FLOOR_NS ? t : SLICE_FLOOR_NS;
}

/*
 * Whether a run that ended after @ran_ns of a turn of @turn_ns was cut short, by a kick or a
 * preemption rather than by its own slice: before slice_min, or before its own turn if that
 * was shorter (pol_light_turn()). A task cut short keeps its place in the queue, so that kicks
 * cannot push it later and later; a task whose short turn ran out must not, or a light task's
 * short turns would each put it straight back at the head.
 */
static inline bool pol_cut_short(u64 ran_ns, u64 turn_ns, u64 slice_min)
{
	u64 full = turn_ns && turn_ns < slice_min ? turn_ns : slice_min;

	return ran_ns < full;
}

/*
 * Slice: the maximum shared among the tasks waiting for the same CPU, counted per CPU of the
 * domain: the CPU's own pinned queue plus its share of the domain queue (nr_shared over
 * domain_cpus). Counting only a task's own queue gave a pinned task alone in its queue full
 * slices while the shared tasks on the same CPU got a third of one. Scaled down for weights
 * below nice 0's: the wait bound gives every task a turn within max_wait whatever its nice
 * value, so a lighter task's turn must be shorter for nice to mean anything. Never below the
 * minimum (but see pol_turn() for light tasks whose offset the cap cuts).
 */
static inline u64 pol_slice(u64 nr_pinned, u64 nr_shared, u64 domain_cpus, u64 weight,
			    u64 slice_min, u64 slice_max)
{
	u64 n = pol_clamp(domain_cpus, 1, 1 << 20);
	u64 s;

	nr_pinned = pol_clamp(nr_pinned, 0, 1 << 30);
	nr_shared = pol_clamp(nr_shared, 0, 1 << 30);
	s = slice_max * n / (n * (1 + nr_pinned) + nr_shared);
	if (weight < WEIGHT_DEFAULT)
		s = s * weight / WEIGHT_DEFAULT;
	return pol_clamp(s, slice_min, slice_max);
}

/*
 * A turn of @slice (pol_slice()) for a task of @weight, cut to pol_light_turn() for tasks
 * lighter than nice 0 (a separate step: BPF functions take at most five arguments).
 */
static inline u64 pol_turn(u64 slice, u64 weight, u64 cap)
{
	u64 light;

	if (weight >= WEIGHT_DEFAULT)
		return slice;
	light = pol_light_turn(weight, cap);
	return slice < light ? slice : light;
}

/*
 * Whether a turn needs a slice timer to end below the tick. With @nr_pinned waiting in the
 * CPU's own queue and @nr_shared in a domain queue of @domain_cpus CPUs, each waiter's turn a
 * whole tick long (@tick_ns: sched_ext slices end on ticks), the last waiter starts within
 * (waiters + 1) ticks: while that is within @urgent_ns (half the bound) the bound holds without
 * timers, which cost an interrupt each (a timer programmed and fired, dear under TCG). Beyond
 * that, turns must shrink below the tick for the bound to hold by construction. Always for
 * weights below nice 0's: nice acts through their shorter turns.
 */
static inline bool pol_timer_needed(u64 nr_pinned, u64 nr_shared, u64 domain_cpus, u64 weight,
				    u64 tick_ns, u64 urgent_ns)
{
	u64 n = pol_clamp(domain_cpus, 1, 1 << 20);
	u64 waiters = pol_clamp(nr_pinned, 0, 1 << 30) + (pol_clamp(nr_shared, 0, 1 << 30) + n - 1) / n;

	if (weight < WEIGHT_DEFAULT)
		return true;
	return (waiters + 1) * pol_clamp(tick_ns, 0, 1ULL << 32) > urgent_ns;
}

/*
 * Offset of a task that called sched_yield(): one slice later than its own offset would be, at
 * most the cap. Never keyed to how late it is: a spinner that yields again and again is placed
 * the same way each time, behind the tasks queued in the last slice, and within the bound.
 */
static inline u64 pol_yield_offset(u64 offset, u64 slice_max, u64 cap)
{
	u64 o = offset + slice_max;

	return o < cap ? o : cap;
}

/*
 * A yielder's deadline @d (its own yield deadline @own, or past a head already) with a queue
 * head due at @head in front of it: behind that head when the head is due within a slice of
 * @own, its equals (a yield means "let whoever waits here run first"), else where it was. A head
 * due further out is lighter (nice 19's offset is at the cap) or far ahead in service, and is
 * not the task the yield is for: put behind it, an ERTS scheduler polling for work waited
 * the whole cap while every short wake-up on its CPU passed both, requests arriving for it.
 */
static inline u64 pol_yield_behind(u64 d, u64 own, u64 head, u64 slice_max)
{
	return head >= d && head < own + slice_max ? head + 1 : d;
}

/*
 * Hand-off verdicts of a sync waker (pol_handoff_verdict()): none yet, or whether its sync
 * wake-up handed its work on.
 */
enum pol_handoff {
	POL_HANDOFF_PENDING = 0,
	POL_HANDOFF_YES = 1,
	POL_HANDOFF_NO = 2,
};

/*
 * Whether a sync waker handed its work on, at a stop after @ran ns of CPU since its sync
 * wake-up (summed over its runs since): no once it has used more than @short_run (it ran on
 * with work of its own: an ERTS scheduler that answers a socket and polls for more, a
 * pipeline stage with its next item waiting), yes if it sleeps before that, and no verdict
 * when it stops runnable before that (preempted or yielded right after the wake-up: it may
 * still sleep at once when it is back). Judged on wall time within one run, a hop of a token
 * ring preempted between its write and its read, a few times a second, was taken for work
 * carried on, and its chain of hops restarted as new latency-critical work for a slice's worth
 * of hops each time: a third of the ring's hops, the most critical tasks about.
 */
static inline u32 pol_handoff_verdict(u64 ran, bool runnable, u64 short_run)
{
	if (ran > short_run)
		return POL_HANDOFF_NO;
	return runnable ? POL_HANDOFF_PENDING : POL_HANDOFF_YES;
}

/*
 * Whether a wait that began at @enq_at (0: not waiting) has lasted more than @limit by @now.
 * @enq_at may come from another CPU's clock, which can be ahead of this one's: a wait that
 * began "after" @now has lasted nothing yet. Unsigned, it would have lasted ~2^64 ns and look
 * urgent: urgent dispatch, tick preemption and wake-ups of idle CPUs for a task just queued.
 */
static inline bool pol_waited_over(u64 enq_at, u64 now, u64 limit)
{
	return enq_at && (s64)(now - enq_at) > 0 && now - enq_at > limit;
}

/*
 * Position, counted from the scanning task's own CPU in its domain's list, of the @i-th CPU a
 * preemption scan looks at in a domain of @n CPUs; @n (none) past the scan. A domain of at most
 * SCAN_MAX CPUs is looked at whole. In a bigger one (a global queue, or a server's LLC of 100+
 * threads) the first SCAN_NEAR are the nearest (the task's cache and SMT siblings) and the rest
 * a window of the far positions starting @far_from, a per-domain cursor that each scan moves
 * on by the window's width: a wake-up costs at most SCAN_MAX lookups, and scans from one CPU
 * while no other CPU scans see the whole domain within a few scans (a scan of the first 64 ids
 * never saw the others). The window is relative to the scanning CPU, so scans interleaved
 * from several CPUs cover the domain only on average, not within that count.
 */
static inline u32 pol_scan_pos(u32 n, u32 i, u64 far_from)
{
	u32 far;

	if (i >= n || i >= SCAN_MAX)
		return n;
	if (n <= SCAN_MAX || i < SCAN_NEAR)
		return i;
	far = n - SCAN_NEAR;
	return SCAN_NEAR + ((u32)(far_from % far) + (i - SCAN_NEAR)) % far;
}

/*
 * @x scaled by @part / @whole (a hierarchical share, fixed point CG_SHARE_SHIFT), at most @x:
 * a part counted before the whole caught up with it (cgroup sums race) is the whole.
 */
static inline u64 pol_share(u64 x, u64 part, u64 whole)
{
	if (!whole || part >= whole)
		return x;
	return pol_clamp(x, 0, 1ULL << 40) * part / whole;
}

/*
 * The weight of a task whose hierarchical share of the machine is @hw (fixed point
 * CG_SHARE_SHIFT) among runnable tasks whose nice weights sum to @total: its share of the
 * total, so that weights keep nice 0's scale on average, rounded to the nearest (rounded down,
 * a nice-0 task alone in a crowded cgroup lost a unit to the fixed point). Between 1 and
 * 10000, the task weights' range.
 */
static inline u64 pol_cgroup_weight(u64 hw, u64 total)
{
	u64 w = pol_clamp(hw, 0, 1ULL << CG_SHARE_SHIFT) * pol_clamp(total, 0, 1ULL << 40);

	return pol_clamp((w + (1ULL << (CG_SHARE_SHIFT - 1))) >> CG_SHARE_SHIFT, 1, 10000);
}

/* Histogram bucket of a wait: 2^WAIT_SUB_BITS sub-buckets per power of two microseconds. */
static inline u64 pol_wait_bucket(u64 wait_ns)
{
	u64 us = wait_ns / 1000;
	u64 lg, sub, b;

	if (us < (1ULL << WAIT_SUB_BITS))
		return us;
	lg = pol_log2(us);
	sub = (us >> (lg - WAIT_SUB_BITS)) & ((1ULL << WAIT_SUB_BITS) - 1);
	b = ((lg - WAIT_SUB_BITS + 1) << WAIT_SUB_BITS) + sub;
	return b < NR_WAIT_BUCKETS ? b : NR_WAIT_BUCKETS - 1;
}

#endif /* __CONCORD_POLICY_H */
