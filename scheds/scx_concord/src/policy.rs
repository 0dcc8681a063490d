//! The scheduling arithmetic of `bpf/policy.h`, in Rust, so it can be reasoned about and
//! tested without a kernel. `scx_concord --check-policy` runs the BPF version in the kernel
//! (BPF_PROG_TEST_RUN) on the same inputs and compares.

pub const NSEC_PER_SEC: u64 = 1_000_000_000;
pub const FREQ_MAX: u64 = 10_000;
pub const LAT_CRI_MAX: u64 = 27;
pub const WEIGHT_DEFAULT: u64 = 100;
pub const WAIT_SUB_BITS: u64 = crate::bpf_intf::concord_consts_WAIT_SUB_BITS as u64;
pub const NR_WAIT_BUCKETS: u64 = crate::bpf_intf::concord_consts_NR_WAIT_BUCKETS as u64;

pub fn log2(v: u64) -> u64 {
    if v <= 1 {
        0
    } else {
        63 - v.leading_zeros() as u64
    }
}

pub fn freq_update(freq: u64, interval_ns: u64) -> u64 {
    let sample = NSEC_PER_SEC
        .checked_div(interval_ns)
        .map_or(FREQ_MAX, |f| f.min(FREQ_MAX));
    (freq * 3 + sample) / 4
}

/// The event rate `since_ns` after the last event: at most one per `since_ns` (policy.h).
pub fn freq_since(freq: u64, since_ns: u64) -> u64 {
    NSEC_PER_SEC
        .checked_div(since_ns)
        .map_or(freq, |bound| freq.min(bound))
}

#[cfg(test)]
pub fn runtime_update(avg: u64, ran_ns: u64) -> u64 {
    (avg * 3 + ran_ns) / 4
}

pub fn lat_cri(wake_freq: u64, waker_freq: u64) -> u64 {
    (1 + log2(wake_freq.min(FREQ_MAX) + 1) + log2(waker_freq.min(FREQ_MAX) + 1))
        .clamp(1, LAT_CRI_MAX)
}

/// Deadline offset from the moment a task is queued; `cap` is half the wait bound.
pub fn deadline_offset(
    avg_runtime: u64,
    weight: u64,
    lat_cri: u64,
    slice_min: u64,
    slice_max: u64,
    cap: u64,
) -> u64 {
    let base = avg_runtime.clamp(slice_min, slice_max);
    let offset = (base * WEIGHT_DEFAULT / weight.clamp(1, 10_000)).min(cap);
    offset / lat_cri.clamp(1, LAT_CRI_MAX)
}

#[cfg(test)]
pub const GREEDY_MAX: u64 = 100;
#[cfg(test)]
pub const GREEDY_OFFSET_MAX: u64 = 250_000_000;

/// `--deadline greedy`: scx_lavd's model at the time of the outage (see policy.h). Only the
/// lab uses it, to reproduce the outage; it is here so its feedback loop can be shown in a test.
#[cfg(test)]
pub fn greedy_offset(
    avg_runtime: u64,
    weight: u64,
    lat_cri: u64,
    slice_min: u64,
    slice_max: u64,
    svc: u64,
    avg_svc: u64,
) -> u64 {
    let base = avg_runtime.clamp(slice_min, slice_max);
    let permille = (svc * 1000)
        .checked_div(avg_svc)
        .unwrap_or(1000)
        .clamp(1000, GREEDY_MAX * 1000);
    let offset = base * WEIGHT_DEFAULT / weight.clamp(1, 10_000) * permille
        / 1000
        / lat_cri.clamp(1, LAT_CRI_MAX);
    offset.min(GREEDY_OFFSET_MAX)
}

/// Offset scaled by the task's bounded service lag (1/4 to 7/4, see policy.h), at most `cap`.
pub fn offset_with_lag(offset: u64, vtime: u64, vclock: u64, lag_max: u64, cap: u64) -> u64 {
    if lag_max == 0 {
        return offset.min(cap);
    }
    let adj = offset * 3 / 4 * vtime.abs_diff(vclock).min(lag_max) / lag_max;
    let out = if vtime >= vclock {
        offset + adj
    } else {
        offset - adj
    };
    out.min(cap)
}

/// Credit taken off a woken task's deadline: its vtime's distance behind the clock, at most
/// `lag_max`, and at most `lag_max * short_run / avg_runtime` for runs longer than `short_run`
/// (overtaking costs the overtaken the overtaker's run; see policy.h).
pub fn service_credit(
    vtime: u64,
    vclock: u64,
    lag_max: u64,
    avg_runtime: u64,
    short_run: u64,
) -> u64 {
    let bound = if avg_runtime > short_run {
        lag_max * short_run / avg_runtime
    } else {
        lag_max
    };
    vclock.saturating_sub(vtime).min(bound)
}

/// A task's vtime after a run: at most `lag_max` behind the clock, and at most `lag_max`
/// ahead (`lag_max * 100 / weight` for weights below nice 0's; see policy.h).
pub fn vtime_after_run(vtime: u64, ran_ns: u64, weight: u64, vclock: u64, lag_max: u64) -> u64 {
    let w = weight.clamp(1, 10_000);
    let ahead = lag_max * WEIGHT_DEFAULT / w.min(WEIGHT_DEFAULT);
    let v = vtime + ran_ns * WEIGHT_DEFAULT / w;
    v.clamp(vclock.saturating_sub(lag_max), vclock + ahead)
}

/// A task's vtime after a sync wake-up handed it the waker's work: at least the waker's, its
/// run so far included (a chain of hops is charged as one task; see policy.h).
pub fn vtime_on_handoff(
    vtime: u64,
    waker_vtime: u64,
    waker_ran: u64,
    waker_weight: u64,
    vclock: u64,
    lag_max: u64,
) -> u64 {
    vtime_after_run(waker_vtime, waker_ran, waker_weight, vclock, lag_max).max(vtime)
}

/// The domain's clock after a task with `vtime` starts: follows it, by at most `lag_max`.
pub fn clock_after_start(vclock: u64, vtime: u64, lag_max: u64) -> u64 {
    vtime.min(vclock + lag_max).max(vclock)
}

/// The shortest turn of any task (ns): `--slice-min-us`'s lowest value, and the floor of a light
/// task's turn below slice_min.
pub const SLICE_FLOOR_NS: u64 = crate::bpf_intf::concord_consts_SLICE_FLOOR_US as u64 * 1000;

/// The longest turn of a task lighter than nice 0 whose offset is at the cap: `cap * weight /
/// 100`, so that turn over offset stays `weight / 100` of nice 0's (see policy.h), never below
/// [`SLICE_FLOOR_NS`].
pub fn light_turn(weight: u64, cap: u64) -> u64 {
    (cap.min(1 << 40) * weight.clamp(1, WEIGHT_DEFAULT) / WEIGHT_DEFAULT).max(SLICE_FLOOR_NS)
}

/// Whether a run of `ran_ns` in a turn of `turn_ns` was cut short (before slice_min, or before
/// its own shorter turn): such a task keeps its place.
pub fn cut_short(ran_ns: u64, turn_ns: u64, slice_min: u64) -> bool {
    let full = if turn_ns != 0 && turn_ns < slice_min {
        turn_ns
    } else {
        slice_min
    };
    ran_ns < full
}

/// The weight a deadline offset is computed with: `weight` relative to the domain's heaviest
/// CPU-bound weight lately, `heaviest` (nice 0's if none is heavier; see policy.h).
pub fn offset_weight(weight: u64, heaviest: u64) -> u64 {
    let h = heaviest.clamp(WEIGHT_DEFAULT, 10_000);
    (weight.clamp(1, 10_000) * WEIGHT_DEFAULT / h).max(1)
}

/// The fixed point of a hierarchical share (1 = the whole machine; weights.bpf.h).
pub const CG_SHARE_SHIFT: u64 = crate::bpf_intf::concord_consts_CG_SHARE_SHIFT as u64;

/// `x` scaled by `part / whole`, at most `x` (a part counted before the whole caught up with it
/// is the whole; see policy.h).
pub fn share(x: u64, part: u64, whole: u64) -> u64 {
    if whole == 0 || part >= whole {
        return x;
    }
    x.min(1 << 40) * part / whole
}

/// The weight of a task with hierarchical share `hw` of the machine among runnable tasks whose
/// nice weights sum to `total`, rounded to the nearest (see policy.h): in [1, 10000].
pub fn cgroup_weight(hw: u64, total: u64) -> u64 {
    let w = hw.min(1 << CG_SHARE_SHIFT) * total.min(1 << 40);
    ((w + (1 << (CG_SHARE_SHIFT - 1))) >> CG_SHARE_SHIFT).clamp(1, 10_000)
}

/// Slice from the tasks waiting per CPU of the domain (see policy.h), shorter for light weights.
pub fn slice(
    nr_pinned: u64,
    nr_shared: u64,
    domain_cpus: u64,
    weight: u64,
    slice_min: u64,
    slice_max: u64,
) -> u64 {
    let n = domain_cpus.clamp(1, 1 << 20);
    let (p, q) = (nr_pinned.min(1 << 30), nr_shared.min(1 << 30));
    let mut s = slice_max * n / (n * (1 + p) + q);
    if weight < WEIGHT_DEFAULT {
        s = s * weight / WEIGHT_DEFAULT;
    }
    s.clamp(slice_min, slice_max)
}

/// A turn of `slice` for a task of `weight`: cut to [`light_turn`] below nice 0's weight.
pub fn turn(slice: u64, weight: u64, cap: u64) -> u64 {
    if weight >= WEIGHT_DEFAULT {
        slice
    } else {
        slice.min(light_turn(weight, cap))
    }
}

/// Whether a turn needs a slice timer to end below the tick (policy.h pol_timer_needed): for
/// lighter-than-nice-0 tasks always, else when tick-long turns of everyone waiting per CPU
/// (the CPU's pinned queue plus its share of the domain queue, rounded up) would pass the
/// urgent half of the bound.
pub fn timer_needed(
    nr_pinned: u64,
    nr_shared: u64,
    domain_cpus: u64,
    weight: u64,
    tick_ns: u64,
    urgent_ns: u64,
) -> bool {
    let n = domain_cpus.clamp(1, 1 << 20);
    let waiters = nr_pinned.min(1 << 30) + nr_shared.min(1 << 30).div_ceil(n);
    weight < WEIGHT_DEFAULT || (waiters + 1) * tick_ns.min(1 << 32) > urgent_ns
}

/// Offset of a task that called sched_yield(): a slice later than its own, at most the cap.
pub fn yield_offset(offset: u64, slice_max: u64, cap: u64) -> u64 {
    (offset + slice_max).min(cap)
}

/// A yielder's deadline `d` (its own yield deadline `own`, or past a head already) with a
/// queue head due at `head` in front: behind that head when it is due within a slice of
/// `own` (its equals), else unchanged: a head due further out is not what the yield is for.
pub fn yield_behind(d: u64, own: u64, head: u64, slice_max: u64) -> u64 {
    if head >= d && head < own + slice_max {
        head + 1
    } else {
        d
    }
}

/// A sync waker's hand-off verdict at a stop (policy.h's pol_handoff_verdict; the values are
/// its POL_HANDOFF_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Handoff {
    /// Stopped runnable before it had used `short_run` of CPU: no verdict yet.
    Pending = 0,
    /// Slept within `short_run` of CPU after its sync wake-up: it handed its work on.
    Yes = 1,
    /// Used more than `short_run` of CPU after it: it ran on with work of its own.
    No = 2,
}

/// Whether a sync waker handed its work on, at a stop after `ran` ns of CPU since its sync
/// wake-up (over all its runs since), `runnable` if it stops runnable (preempted, yielded).
pub fn handoff_verdict(ran: u64, runnable: bool, short_run: u64) -> Handoff {
    if ran > short_run {
        Handoff::No
    } else if runnable {
        Handoff::Pending
    } else {
        Handoff::Yes
    }
}

/// Whether a wait that began at `enq_at` (0: not waiting) has lasted more than `limit` by
/// `now`; a start ahead of `now` (another CPU's clock) has lasted nothing.
pub fn waited_over(enq_at: u64, now: u64, limit: u64) -> bool {
    enq_at != 0 && (now.wrapping_sub(enq_at) as i64) > 0 && now - enq_at > limit
}

pub const SCAN_NEAR: u32 = crate::bpf_intf::concord_consts_SCAN_NEAR;
pub const SCAN_MAX: u32 = crate::bpf_intf::concord_consts_SCAN_MAX;

/// Position (from the scanning task's CPU in its domain's list) of the `i`-th CPU a
/// preemption scan looks at in a domain of `n` CPUs, the far window starting at `far_from`;
/// `n` past the scan (policy.h's pol_scan_pos).
pub fn scan_pos(n: u32, i: u32, far_from: u64) -> u32 {
    if i >= n || i >= SCAN_MAX {
        return n;
    }
    if n <= SCAN_MAX || i < SCAN_NEAR {
        return i;
    }
    let far = n - SCAN_NEAR;
    SCAN_NEAR + ((far_from % far as u64) as u32 + (i - SCAN_NEAR)) % far
}

/// Scans after which every CPU of a domain of `n` has been looked at (the cursor moves on by
/// the far window's width at each scan).
pub fn scans_to_cover(n: u32) -> u32 {
    if n <= SCAN_MAX {
        1
    } else {
        (n - SCAN_NEAR).div_ceil(SCAN_MAX - SCAN_NEAR)
    }
}

pub fn wait_bucket(wait_ns: u64) -> u64 {
    let us = wait_ns / 1000;
    if us < (1 << WAIT_SUB_BITS) {
        return us;
    }
    let lg = log2(us);
    let sub = (us >> (lg - WAIT_SUB_BITS)) & ((1 << WAIT_SUB_BITS) - 1);
    (((lg - WAIT_SUB_BITS + 1) << WAIT_SUB_BITS) + sub).min(NR_WAIT_BUCKETS - 1)
}

/// The largest wait (ns) that falls into `bucket`: what a histogram percentile reports.
pub fn wait_bucket_upper_ns(bucket: u64) -> u64 {
    let sub_n = 1u64 << WAIT_SUB_BITS;
    let upper_us = if bucket < sub_n {
        bucket + 1
    } else {
        let lg = (bucket >> WAIT_SUB_BITS) + WAIT_SUB_BITS - 1;
        let sub = bucket & (sub_n - 1);
        (sub_n + sub + 1) << (lg - WAIT_SUB_BITS)
    };
    upper_us * 1000 - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn greedy_model_pushes_a_catching_up_task_back_and_capped_does_not() {
        let (lo, hi) = (MS / 2, 5 * MS);
        // A starved BEAM scheduler finally runs long to drain its backlog: its runtime and
        // its service (relative to the average task) grow, and so does its greedy offset...
        let before = greedy_offset(MS, 100, 4, lo, hi, 10 * MS, 10 * MS);
        let after = greedy_offset(5 * MS, 100, 4, lo, hi, 40 * MS, 10 * MS);
        assert!(after >= 4 * before * 4, "{before} -> {after}");
        // ...without the bound that the capped model keeps whatever the history.
        assert!(after > deadline_offset(5 * MS, 100, 4, lo, hi, 20 * MS));
        assert!(deadline_offset(u64::MAX / 1000, 100, 1, lo, hi, 20 * MS) <= 20 * MS);
        // Under-consumers get no bonus, and the offset stays below the watchdog.
        assert_eq!(
            greedy_offset(MS, 100, 1, lo, hi, 0, 10 * MS),
            greedy_offset(MS, 100, 1, lo, hi, 10 * MS, 10 * MS)
        );
        assert!(greedy_offset(hi, 1, 1, lo, hi, u64::MAX / 2000, 1) <= GREEDY_OFFSET_MAX);
    }

    #[test]
    fn a_task_that_stopped_waking_loses_its_rate() {
        // Woke every 2 ms for a while (500/s), then spins: 100 ms later it wakes at most 10/s.
        let mut f = 0;
        for _ in 0..40 {
            f = freq_update(f, 2 * MS);
        }
        assert!(f > 400, "{f}");
        assert_eq!(freq_since(f, 100 * MS), 10);
        assert!(lat_cri(freq_since(f, 100 * MS), 0) < lat_cri(f, 0));
        // Just woken (or within its usual interval): the average stands.
        assert_eq!(freq_since(f, 0), f);
        assert_eq!(freq_since(f, MS), f);
        // Never raises a rate, and a task that never woke stays at 0.
        for since in [0, 1, MS, NSEC_PER_SEC, u64::MAX] {
            assert!(freq_since(f, since) <= f);
            assert_eq!(freq_since(0, since), 0);
        }
    }

    #[test]
    fn service_credit_is_bounded_and_only_for_tasks_behind() {
        let (clock, lag, short) = (1 << 40, 5 * MS, MS / 2);
        let credit = |vtime, runtime| service_credit(vtime, clock, lag, runtime, short);
        assert_eq!(credit(clock, 0), 0);
        assert_eq!(credit(clock + lag, 0), 0, "ahead: no credit");
        assert_eq!(credit(clock - MS, 40_000), MS);
        assert_eq!(credit(0, 40_000), lag, "never more than lag_max");
        let mut prev = 0;
        for behind in [0, 1, MS, 4 * MS, 5 * MS, 9 * MS] {
            let c = credit(clock - behind, short);
            assert!(c >= prev && c <= lag);
            prev = c;
        }
    }

    #[test]
    fn service_credit_shrinks_for_long_runs() {
        let (clock, lag, short) = (1 << 40, 5 * MS, MS / 2);
        let credit = |runtime| service_credit(0, clock, lag, runtime, short);
        // A 40 us burst may overtake a full slice of queue, an 800 us chunk 5/8 of that.
        assert_eq!(credit(40_000), lag);
        assert_eq!(credit(800_000), lag * 5 / 8);
        let mut prev = u64::MAX;
        for runtime in [0, short, MS, 4 * MS, lag, 1 << 40] {
            let c = credit(runtime);
            assert!(c <= prev, "non-increasing in runtime");
            prev = c;
        }
        assert_eq!(credit(lag), lag / 10, "a full-slice run: a tenth");
    }

    #[test]
    fn lat_cri_is_bounded_and_monotonic() {
        let mut prev = 0;
        for f in [0, 1, 10, 100, 1000, 10_000, 100_000, u64::MAX / 2] {
            let l = lat_cri(f, 0);
            assert!(l >= prev && (1..=LAT_CRI_MAX).contains(&l), "freq {f}: {l}");
            prev = l;
            assert!(lat_cri(f, 100) >= l);
        }
        assert_eq!(lat_cri(0, 0), 1);
        assert_eq!(lat_cri(u64::MAX / 2, u64::MAX / 2), LAT_CRI_MAX);
    }

    #[test]
    fn deadline_offset_is_bounded_and_moves_the_right_way() {
        let (lo, hi, cap) = (MS / 2, 5 * MS, 20 * MS);
        for rt in [0, MS, 3 * MS, 100 * MS, u64::MAX / 1000] {
            for w in [1, 50, 100, 10_000, u64::MAX] {
                for lc in [0, 1, 5, LAT_CRI_MAX, 1000] {
                    let d = deadline_offset(rt, w, lc, lo, hi, cap);
                    assert!(d <= cap, "bounded: {d}");
                    assert!(
                        deadline_offset(rt, w, lc + 1, lo, hi, cap) <= d,
                        "more critical: not later"
                    );
                    assert!(
                        deadline_offset(rt, w.saturating_add(1), lc, lo, hi, cap) <= d,
                        "heavier: not later"
                    );
                    assert!(
                        deadline_offset(rt.saturating_add(MS), w, lc, lo, hi, cap) >= d,
                        "longer runs: not earlier"
                    );
                }
            }
        }
        // A critical short runner gets a much earlier deadline than a hog.
        assert!(
            deadline_offset(MS / 10, 100, lat_cri(1000, 1000), lo, hi, cap) * 10
                < deadline_offset(hi, 100, 1, lo, hi, cap)
        );
        // Nice weights order tasks below the cap.
        assert!(deadline_offset(hi, 50, 1, lo, hi, cap) > deadline_offset(hi, 100, 1, lo, hi, cap));
        assert_eq!(deadline_offset(hi, 1, 1, lo, hi, cap), cap);
    }

    #[test]
    fn no_feedback_loop_from_lateness() {
        // However long a task ran in one go (e.g. a starved BEAM thread draining its backlog),
        // its next deadline offset is at most one slice's worth at its weight.
        let mut avg = 0;
        for _ in 0..100 {
            avg = runtime_update(avg, 10_000 * MS);
        }
        assert_eq!(
            deadline_offset(avg, 100, 1, MS / 2, 5 * MS, 20 * MS),
            5 * MS
        );
    }

    #[test]
    fn slice_timers_only_where_tick_long_turns_would_break_the_bound() {
        let (tick, urgent) = (4 * MS, 20 * MS);
        // A few waiters per CPU: tick-long turns keep the last one within the urgent half.
        assert!(!timer_needed(1, 2, 2, 100, tick, urgent));
        assert!(!timer_needed(0, 7, 2, 100, tick, urgent));
        // Five per CPU (4 ms turns: the fifth starts after 20 ms plus the running turn): needed.
        assert!(timer_needed(5, 0, 2, 100, tick, urgent));
        assert!(timer_needed(0, 9, 2, 100, tick, urgent));
        // Nice acts through shorter turns, so lighter tasks always get one.
        assert!(timer_needed(0, 0, 1, 99, tick, urgent));
        // Monotone in waiters and tick length.
        for (cpus, pinned) in [(1, 0), (2, 0), (2, 2), (4, 1), (64, 0)] {
            let mut was = false;
            for w in 0..400 {
                let now = timer_needed(pinned, w, cpus, 100, tick, urgent);
                assert!(now || !was, "needed at fewer waiters but not at more");
                was = now;
                assert!(!now || timer_needed(pinned, w, cpus, 100, 2 * tick, urgent));
            }
            assert!(was, "many waiters always need timers");
        }
    }

    #[test]
    fn a_yielder_goes_behind_its_equals_within_the_cap() {
        let (smax, cap) = (5 * MS, 20 * MS);
        for offset in [0, MS / 10, MS, 5 * MS, 15 * MS, 20 * MS] {
            let y = yield_offset(offset, smax, cap);
            assert!(y <= cap, "the wait bound holds for yielders");
            // Behind an equal queued up to a slice later (same offset), unless at the cap.
            assert!(y >= (offset + smax).min(cap));
            assert!(y > offset || offset >= cap);
        }
        // A busy-waiting runtime thread (runs of a few µs, maximal criticality) no longer
        // comes back first: its offset is at least a slice, where a hog's is at most the cap.
        let spinner = deadline_offset(20_000, 100, LAT_CRI_MAX, MS / 2, smax, cap);
        assert!(yield_offset(spinner, smax, cap) >= smax);
    }

    #[test]
    fn a_yielder_waits_behind_heads_due_soon_not_behind_far_ones() {
        let (smax, now) = (5 * MS, 1_000 * MS);
        let own = now + yield_offset(MS / 10, smax, 20 * MS);
        // A head due before it changes nothing; one due within a slice after it goes first.
        assert_eq!(yield_behind(own, own, own - MS, smax), own);
        assert_eq!(yield_behind(own, own, own + 2 * MS, smax), own + 2 * MS + 1);
        // Two heads: behind both when both are its equals, in either order.
        let d = yield_behind(own, own, own + MS, smax);
        assert_eq!(yield_behind(d, own, own + 3 * MS, smax), own + 3 * MS + 1);
        let d = yield_behind(own, own, own + 3 * MS, smax);
        assert_eq!(yield_behind(d, own, own + MS, smax), own + 3 * MS + 1);
        // A head at the cap (nice 19) is not waited for: the poller is back within its own
        // yield offset, not the whole cap, however late that head is due.
        for far in [own + smax, own + 15 * MS, now + 20 * MS] {
            assert_eq!(
                yield_behind(own, own, far, smax),
                own,
                "head at +{}",
                far - now
            );
        }
    }

    #[test]
    fn a_hop_preempted_before_it_sleeps_still_hands_off() {
        let short = MS / 2;
        // A pipe hop: writes, is preempted 100 us later, comes back, reads and sleeps after
        // 150 us more of CPU. The preemption gives no verdict; the sleep says it handed off,
        // however long it waited while preempted (that is not CPU it used).
        let mut ran = 100_000;
        assert_eq!(handoff_verdict(ran, true, short), Handoff::Pending);
        ran += 150_000;
        assert_eq!(handoff_verdict(ran, false, short), Handoff::Yes);
        // A waker that answers and polls on (yielding as it spins) is judged once its CPU
        // after the wake-up passes short_run, at whichever stop that is, runnable or not.
        assert_eq!(handoff_verdict(short + 1, true, short), Handoff::No);
        assert_eq!(handoff_verdict(short + 1, false, short), Handoff::No);
        // The boundary belongs to the hand-off.
        assert_eq!(handoff_verdict(short, false, short), Handoff::Yes);
    }

    #[test]
    fn slice_shrinks_with_waiters_and_lighter_weight_within_bounds() {
        let (lo, hi, cap) = (MS / 2, 5 * MS, 20 * MS);
        for cpus in [1, 2, 8, 64] {
            let mut prev = u64::MAX;
            for n in 0..100 {
                let s = slice(0, n, cpus, 100, lo, hi);
                assert!((lo..=hi).contains(&s) && s <= prev);
                for w in 1..100 {
                    let light = turn(slice(0, n, cpus, w, lo, hi), w, cap);
                    assert!((SLICE_FLOOR_NS..=s).contains(&light));
                }
                prev = s;
                assert!(
                    slice(1, n, cpus, 100, lo, hi) <= s,
                    "own pinned waiters count"
                );
                assert!(turn(slice(0, n, cpus, 50, lo, hi), 50, cap) <= s);
                assert_eq!(slice(0, n, cpus, 10_000, lo, hi), s);
            }
        }
        assert_eq!(slice(0, 0, 4, 100, lo, hi), hi);
        // Waiters per CPU: 4 shared waiters over 4 CPUs are one per CPU, like 1 pinned waiter.
        assert_eq!(slice(0, 4, 4, 100, lo, hi), slice(1, 0, 4, 100, lo, hi));
        assert_eq!(slice(0, 4, 4, 100, lo, hi), hi / 2);
        // A pinned task alone in its queue and the shared tasks of its CPU get the same slice.
        assert_eq!(slice(0, 2, 2, 100, lo, hi), slice(1, 0, 2, 100, lo, hi));
        assert_eq!(slice(u64::MAX, u64::MAX, 0, 100, lo, hi), lo);
        // nice 5 (weight 33): a third of the slice, its offset within the cap.
        assert_eq!(turn(slice(0, 0, 1, 33, lo, hi), 33, cap), hi * 33 / 100);
        // nice 19 (weight 1): its offset is at the cap, so its turn is a hundredth of the cap,
        // below slice_min (floored there, nice 19 got several times its weight's share); never below
        // the floor however small the cap.
        assert_eq!(turn(slice(0, 0, 1, 1, lo, hi), 1, cap), cap / 100);
        assert!(turn(slice(0, 0, 1, 1, lo, hi), 1, cap) < lo);
        assert_eq!(turn(slice(0, 0, 1, 1, lo, hi), 1, MS), SLICE_FLOOR_NS);
    }

    #[test]
    fn light_tasks_get_their_weights_share_past_the_cap() {
        // Share goes as turn / offset; a nice-0 spinner's offset is its turn. For every weight
        // below nice 0's and every cap, a spinner's turn over its (capped) offset is its weight
        // over 100, to within the rounding of a microsecond, unless the floor holds it up.
        let (lo, hi) = (MS / 2, 5 * MS);
        for cap in [5 * MS, 20 * MS, 50 * MS] {
            for w in 1..100 {
                let t = turn(slice(0, 0, 1, w, lo, hi), w, cap);
                let offset = deadline_offset(t, w, 1, lo, hi, cap);
                let share = t as f64 / offset as f64;
                let want = w as f64 / 100.0;
                if t > SLICE_FLOOR_NS {
                    assert!(
                        (share - want).abs() <= want * 0.01 + 1e-6,
                        "w {w} cap {cap}: {share} vs {want}"
                    );
                } else {
                    assert!(share >= want, "w {w} cap {cap}: the floor only gives more");
                }
            }
        }
    }

    #[test]
    fn offsets_are_weighted_against_the_heaviest_task_about() {
        let (lo, hi, cap) = (MS / 2, 5 * MS, 20 * MS);
        // No task heavier than nice 0 about: the weight itself, for every weight.
        for w in [1, 15, 100, 932, 10_000] {
            for h in [0, 1, 100] {
                assert_eq!(offset_weight(w, h), w);
            }
        }
        // nice -10 (932) about: it is offset like a nice-0 task alone, and a nice-0 task with
        // the same runs gets 9.3 times its offset (a heavier task runs about the waiting
        // nice-0 task's offset between that task's turns), up to the cap.
        let heavy = deadline_offset(2 * MS, offset_weight(932, 932), 1, lo, hi, cap);
        let nice0 = deadline_offset(2 * MS, offset_weight(100, 932), 1, lo, hi, cap);
        assert_eq!(heavy, 2 * MS);
        assert_eq!(nice0, cap.min(2 * MS * 100 / 10));
        assert!(nice0 >= 9 * heavy);
        // Never 0, never above the weight itself, and monotonic in both arguments.
        for h in [100, 500, 932, 10_000, u64::MAX] {
            let mut prev = 0;
            for w in 1..=10_000 {
                let x = offset_weight(w, h);
                assert!(x >= 1 && x <= w && x >= prev);
                prev = x;
                assert!(offset_weight(w, h.saturating_add(1)) <= x);
            }
        }
    }

    #[test]
    fn a_run_is_cut_short_before_slice_min_or_its_own_shorter_turn() {
        let lo = MS / 2;
        assert!(cut_short(lo - 1, 5 * MS, lo));
        assert!(!cut_short(lo, 5 * MS, lo));
        // A light task's 200 us turn that ran out was not cut short: it must not keep its place.
        assert!(!cut_short(200_000, 200_000, lo));
        assert!(cut_short(199_999, 200_000, lo));
        // No turn recorded: slice_min decides, as before.
        assert!(cut_short(lo - 1, 0, lo));
    }

    #[test]
    fn service_lag_is_bounded_and_never_breaks_the_cap_or_criticality() {
        let (lag, cap) = (5 * MS, 20 * MS);
        let clock = 1_000 * MS;
        for offset in [0, MS / 10, MS, 5 * MS, cap] {
            for v in [
                0,
                clock - 6 * MS,
                clock - MS,
                clock,
                clock + MS,
                clock + 6 * MS,
            ] {
                let o = offset_with_lag(offset, v, clock, lag, cap);
                assert!(o <= cap, "capped: {o}");
                assert!(
                    o * 4 + 3 >= offset && o <= offset + offset * 3 / 4,
                    "within 1/4..7/4"
                );
                // More service never earns an earlier deadline.
                assert!(offset_with_lag(offset, v + MS, clock, lag, cap) >= o);
            }
        }
        // Equal tasks: the one ahead waits longer than the one behind.
        assert_eq!(
            offset_with_lag(4 * MS, clock + lag, clock, lag, cap),
            7 * MS
        );
        assert_eq!(offset_with_lag(4 * MS, clock - lag, clock, lag, cap), MS);
        // A hog with all the credit there is still comes after a critical task with none.
        let critical = deadline_offset(MS, 100, lat_cri(1000, 1000), MS / 2, 5 * MS, cap);
        let hog = deadline_offset(5 * MS, 100, 1, MS / 2, 5 * MS, cap);
        assert!(
            offset_with_lag(hog, 0, clock, lag, cap)
                > offset_with_lag(critical, clock + lag, clock, lag, cap)
        );
        assert_eq!(offset_with_lag(3 * MS, 0, clock, 0, cap), 3 * MS);
    }

    #[test]
    fn vtime_stays_near_the_clock_so_lag_cannot_grow_into_a_penalty() {
        let (lag, clock) = (5 * MS, 1_000 * MS);
        // However much a task ran (a starved BEAM thread draining its backlog), it is at most
        // lag_max ahead: one slice of extra offset, not a growing one.
        let mut v = clock;
        for _ in 0..1000 {
            v = vtime_after_run(v, 100 * MS, 100, clock, lag);
        }
        assert_eq!(v, clock + lag);
        // A long sleeper comes back at most lag_max behind: bounded credit.
        assert_eq!(vtime_after_run(0, MS, 100, clock, lag), clock - lag);
        // nice 19 (weight 1) stays far ahead after a run: its window is 100x lag_max.
        assert_eq!(
            vtime_after_run(clock, 4 * MS, 1, clock, lag),
            clock + 400 * MS
        );
        assert_eq!(
            vtime_after_run(clock, 10 * MS, 1, clock, lag),
            clock + 100 * lag
        );
        // ...while one far-ahead task moves the clock by lag_max per start only.
        assert_eq!(
            clock_after_start(clock, clock + 100 * lag, lag),
            clock + lag
        );
        assert_eq!(clock_after_start(clock, clock + MS, lag), clock + MS);
        assert_eq!(clock_after_start(clock, 0, lag), clock, "never backwards");
        // Lighter weights accrue faster.
        assert!(
            vtime_after_run(clock, MS, 50, 10 * clock, 100 * clock)
                > vtime_after_run(clock, MS, 100, 10 * clock, 100 * clock)
        );
        assert_eq!(vtime_after_run(0, MS, 100, 0, lag), lag.min(MS));
    }

    #[test]
    fn a_sync_chain_is_charged_as_one_task() {
        let (lag, smin, hop) = (5 * MS, MS / 2, MS / 10);
        // One CPU: a CPU-bound server runs 1 ms, then a 4-thread token ring hops 10 times
        // (100 us each), and again. The wake-up credit each hop gets, with and without the
        // hand-off rule, after the first rounds.
        let credit_per_hop = |handoff: bool| {
            let (mut clock, mut server) = (1_000 * MS, 1_000 * MS);
            let mut ring = [clock; 4];
            let (mut token, mut most) = (0usize, 0u64);
            for round in 0..200 {
                clock = clock_after_start(clock, server, lag);
                server = vtime_after_run(server, MS, 100, clock, lag);
                for _ in 0..10 {
                    let (waker, wakee) = (token, (token + 1) % 4);
                    if handoff {
                        ring[wakee] =
                            vtime_on_handoff(ring[wakee], ring[waker], hop, 100, clock, lag);
                    }
                    if round > 20 {
                        most = most.max(service_credit(ring[wakee], clock, lag, hop, smin));
                    }
                    clock = clock_after_start(clock, ring[wakee], lag);
                    ring[wakee] = vtime_after_run(ring[wakee], hop, 100, clock, lag);
                    token = wakee;
                }
            }
            most
        };
        // Each thread alone uses a quarter of what the ring does: a full slice of credit.
        assert_eq!(credit_per_hop(false), lag);
        // As one task the ring used as much as the server: at most a hop behind.
        assert!(credit_per_hop(true) <= hop, "{}", credit_per_hop(true));
        // The rule only raises, and only to where a run leaves the waker's vtime.
        for &(v, wv, ran, w) in &[
            (0, 1_000 * MS, MS, 100),
            (2_000 * MS, 1_000 * MS, MS, 100),
            (995 * MS, 999 * MS, 50 * MS, 1),
            (u64::MAX / 4, 0, 0, 10_000),
        ] {
            let after = vtime_on_handoff(v, wv, ran, w, 1_000 * MS, lag);
            assert!(after >= v);
            assert!(after == v || after == vtime_after_run(wv, ran, w, 1_000 * MS, lag));
        }
    }

    #[test]
    fn frequency_converges_and_decays() {
        let mut f = 0;
        for _ in 0..50 {
            f = freq_update(f, MS); // 1000/s
        }
        assert!((990..=1000).contains(&f), "{f}");
        for _ in 0..50 {
            f = freq_update(f, NSEC_PER_SEC * 10);
        }
        assert_eq!(f, 0);
        assert_eq!(freq_update(0, 0), FREQ_MAX / 4);
        assert!(freq_update(u64::MAX / 8, 1) > 0, "no overflow at extremes");
    }

    #[test]
    fn a_wait_started_on_a_clock_ahead_is_not_urgent() {
        let ms = 1_000_000;
        assert!(waited_over(100 * ms, 200 * ms, 40 * ms));
        assert!(!waited_over(100 * ms, 120 * ms, 40 * ms));
        assert!(!waited_over(0, 200 * ms, 40 * ms), "0 is not waiting");
        // The queueing CPU's clock was 5 µs ahead of the peeking one's.
        assert!(!waited_over(200 * ms + 5_000, 200 * ms, 40 * ms));
    }

    #[test]
    fn wait_buckets_are_contiguous_and_bounds_hold() {
        let mut prev = 0;
        for us in 0..200_000u64 {
            let b = wait_bucket(us * 1000);
            assert!(b == prev || b == prev + 1, "us {us}: {prev} -> {b}");
            assert!(us * 1000 <= wait_bucket_upper_ns(b), "us {us} bucket {b}");
            if b > 0 {
                assert!(us * 1000 > wait_bucket_upper_ns(b - 1));
            }
            prev = b;
        }
        assert_eq!(wait_bucket(u64::MAX), NR_WAIT_BUCKETS - 1);
    }

    #[test]
    fn a_preemption_scan_is_bounded_and_consecutive_scans_see_the_whole_domain() {
        for n in 1..=1024u32 {
            let step = SCAN_MAX - SCAN_NEAR;
            for start in [0u64, 7, 1 << 40] {
                let mut seen = vec![false; n as usize];
                for s in 0..scans_to_cover(n) {
                    let far_from = start + (s * step) as u64;
                    let scan: Vec<u32> = (0..SCAN_MAX + 1)
                        .map(|i| scan_pos(n, i, far_from))
                        .take_while(|&k| k < n)
                        .collect();
                    assert_eq!(
                        scan.len() as u32,
                        n.min(SCAN_MAX),
                        "n {n}: one scan's length"
                    );
                    let mut distinct = scan.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(distinct.len(), scan.len(), "n {n}: a CPU looked at twice");
                    let near = n.min(SCAN_NEAR);
                    assert_eq!(scan[..near as usize], (0..near).collect::<Vec<_>>()[..]);
                    for k in scan {
                        seen[k as usize] = true;
                    }
                }
                let unseen: Vec<usize> = (0..n as usize).filter(|&k| !seen[k]).collect();
                assert!(
                    unseen.is_empty(),
                    "n {n} from {start}: never seen {unseen:?}"
                );
            }
        }
        assert_eq!(scans_to_cover(176), 5);
    }

    /// A task's weight as weights.bpf.h walks it: its nice weight over its cgroup's active
    /// weights, then each cgroup's weight over its parent's, times all runnable tasks' weights.
    fn walked(task_w: u64, path: &[(u64, u64)], total: u64) -> u64 {
        // path: (the entity's weight, the active weights of the cgroup it is in), leaf first
        let mut hw = 1 << CG_SHARE_SHIFT;
        let mut part = task_w;
        for &(contrib, wsum) in path {
            hw = share(hw, part, wsum);
            part = contrib;
        }
        cgroup_weight(hw, total)
    }

    #[test]
    fn cgroup_weights_share_as_the_hierarchy_says_and_keep_nice_zeros_scale() {
        // Every task in the root: a task weighs its nice weight.
        assert_eq!(walked(100, &[(0, 800)], 800), 100);
        assert_eq!(walked(335, &[(0, 435)], 435), 335);
        assert_eq!(walked(1, &[(0, 9_001)], 9_001), 1);
        // cgroups A (cpu.weight 100) and B (300) under the root, four nice-0 tasks each: A's
        // tasks get a quarter of the machine between them, B's three quarters, and the
        // weights still average nice 0's.
        let a = walked(100, &[(100, 400), (0, 400)], 800);
        let b = walked(100, &[(300, 400), (0, 400)], 800);
        assert_eq!((a, b), (50, 150));
        assert_eq!((4 * a + 4 * b) / 8, 100);
        // Nested: A holds A1 (100) and A2 (300), two tasks each; A1's tasks share a quarter
        // of A's quarter.
        let a1 = walked(100, &[(100, 200), (100, 400), (0, 400)], 800);
        let a2 = walked(100, &[(300, 200), (100, 400), (0, 400)], 800);
        assert!(a2.abs_diff(3 * a1) <= 1, "{a1} {a2}");
        assert!((2 * a1 + 2 * a2).abs_diff(4 * a) <= 2, "{a1} {a2} {a}");
        // One task alone in a cgroup beside ten in another of the same weight: it gets half.
        let alone = walked(100, &[(100, 100), (0, 200)], 1100);
        let crowd = walked(100, &[(100, 1000), (0, 200)], 1100);
        assert_eq!((alone, crowd), (550, 55));
        // Sums that raced (a part larger than its whole, a whole of zero) give the whole, and
        // the weight stays in the task weights' range.
        assert_eq!(share(1 << 20, 300, 200), 1 << 20);
        assert_eq!(share(1 << 20, 300, 0), 1 << 20);
        assert!(share(12345, 7, 9) <= 12345);
        assert_eq!(cgroup_weight(0, 800), 1);
        assert_eq!(cgroup_weight(1 << CG_SHARE_SHIFT, u64::MAX), 10_000);
        assert_eq!(cgroup_weight(u64::MAX, 100), 100);
    }
}
