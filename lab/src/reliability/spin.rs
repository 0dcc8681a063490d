//! Spinners, the instrument of the load checks: always-runnable threads that read the clock in
//! a loop. A gap between two reads is time the thread did not run (waiting, or its vCPU stalled
//! on the host); schedstat gives its CPU time. Beside them, scx_concord's own count of the
//! longest queue waits, and the judgement of both against the wait bound.

use anyhow::{Context, Result};
use concord_workloads::sys::{now_ns, pin_current_thread, SchedStat};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{GuestParams, Verdict};
use crate::guest::{ops_matches, sched_ops};
use concord_common::sched::CONCORD_OPS_NAME;

#[derive(Clone, Copy)]
pub(super) struct SpinSpec {
    pub(super) cpu: Option<u32>,
    pub(super) nice: i32,
}

/// A spinner's gaps longer than this are probed: its schedstat is re-read right after each,
/// so that the kernel's counts since the previous probe belong to this gap alone.
const GAP_PROBE_NS: u64 = 100_000;

/// One gap between two clock reads and what the kernel counted inside it (schedstat at the
/// gap's end against the previous probe): how often the thread was switched in, how long it
/// waited runnable (run_delay: sched_info, kept by the core kernel under any scheduler) and
/// how long it was on a CPU without reaching its next clock read. One switch-in is a single
/// wait; none is the VM not executing a vCPU while the thread was on it; more is a chain:
/// the thread was given a CPU in between and executed nothing there (under TCG its vCPU was
/// not being run; guest time moved on).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Gap {
    pub(super) ns: u64,
    pub(super) switch_ins: u64,
    pub(super) waited_ns: u64,
    pub(super) on_cpu_ns: u64,
}

impl Gap {
    pub(super) fn is_single_wait(&self) -> bool {
        self.switch_ins == 1
    }
    pub(super) fn describe(&self) -> String {
        format!(
            "{:.1} ms ({} switch-ins, {:.1} ms waiting, {:.1} ms on a CPU inside it)",
            ms(self.ns),
            self.switch_ins,
            ms(self.waited_ns),
            ms(self.on_cpu_ns)
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct SpinResult {
    pub(super) cpu_ns: u64,
    /// Times it was switched in.
    pub(super) turns: u64,
    /// The CPU it ran on at the end (which LLC it ended up in).
    pub(super) last_cpu: i32,
    pub(super) wall_ns: u64,
    pub(super) max_gap_ns: u64,
    /// The longest gap, and the longest that was a single wait.
    pub(super) longest: Gap,
    pub(super) longest_wait: Gap,
}

impl SpinResult {
    pub(super) fn share(&self) -> f64 {
        self.cpu_ns as f64 / self.wall_ns.max(1) as f64
    }

    /// A spinner that got `share` of a CPU in one turn over a second, for the checks' tests.
    #[cfg(test)]
    pub(super) fn with_share(share: f64) -> Self {
        Self {
            cpu_ns: (share * 1e9) as u64,
            turns: 1,
            last_cpu: 0,
            wall_ns: 1_000_000_000,
            max_gap_ns: 0,
            longest: Gap::default(),
            longest_wait: Gap::default(),
        }
    }
}

/// Live view of a spin group, for checks that act while it runs: each spinner's loop count
/// (updated every 256 loops) and a flag that ends the group before its time.
pub(super) struct Progress {
    pub(super) loops: Vec<AtomicU64>,
    pub(super) stop: AtomicBool,
}

impl Progress {
    pub(super) fn new(n: usize) -> Self {
        Self {
            loops: (0..n).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
        }
    }
    pub(super) fn snapshot(&self) -> Vec<u64> {
        self.loops
            .iter()
            .map(|x| x.load(Ordering::Relaxed))
            .collect()
    }
}

/// Runs one spinner per spec for @secs (or until @progress.stop), started together.
pub(super) fn spin_group(
    specs: &[SpinSpec],
    secs: f64,
    progress: Option<&Progress>,
) -> Vec<SpinResult> {
    let barrier = std::sync::Barrier::new(specs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let barrier = &barrier;
                let spec = *spec;
                s.spawn(move || {
                    if let Some(c) = spec.cpu {
                        let _ = pin_current_thread(c as usize);
                    }
                    if spec.nice != 0 {
                        // SAFETY: setpriority on this thread (tid) only.
                        unsafe {
                            libc::setpriority(
                                libc::PRIO_PROCESS,
                                libc::gettid() as libc::id_t,
                                spec.nice,
                            )
                        };
                    }
                    let stat_file = std::fs::File::open("/proc/thread-self/schedstat").ok();
                    let read_stat = || {
                        stat_file
                            .as_ref()
                            .and_then(SchedStat::of_file)
                            .unwrap_or_default()
                    };
                    barrier.wait();
                    let before = read_stat();
                    let start = now_ns();
                    let end = start + (secs * 1e9) as u64;
                    let (mut last, mut max_gap, mut loops) = (start, 0u64, 0u64);
                    let (mut probe_at, mut probe) = (start, before);
                    let (mut longest, mut longest_wait) = (Gap::default(), Gap::default());
                    loop {
                        let t = now_ns();
                        let gap_ns = t - last;
                        max_gap = max_gap.max(gap_ns);
                        if gap_ns > GAP_PROBE_NS {
                            let now = read_stat();
                            let d = now.since(&probe);
                            // on-CPU time since the probe, less the run this loop saw
                            let gap = Gap {
                                ns: gap_ns,
                                switch_ins: d.timeslices,
                                waited_ns: d.wait_ns,
                                on_cpu_ns: d.run_ns.saturating_sub(last - probe_at),
                            };
                            if gap.ns > longest.ns {
                                longest = gap;
                            }
                            if gap.is_single_wait() && gap.ns > longest_wait.ns {
                                longest_wait = gap;
                            }
                            (probe_at, probe) = (t, now);
                        }
                        last = t;
                        loops += 1;
                        if loops % 256 == 0 {
                            if let Some(p) = progress {
                                p.loops[i].store(loops, Ordering::Relaxed);
                                if p.stop.load(Ordering::Relaxed) {
                                    break;
                                }
                            }
                        }
                        if t >= end {
                            break;
                        }
                    }
                    let ran = read_stat().since(&before);
                    // SAFETY: sched_getcpu has no preconditions.
                    let last_cpu = unsafe { libc::sched_getcpu() };
                    SpinResult {
                        cpu_ns: ran.run_ns,
                        turns: ran.timeslices,
                        last_cpu,
                        wall_ns: last - start,
                        max_gap_ns: max_gap,
                        longest,
                        longest_wait,
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub(super) fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// p10 of the CPU shares over their mean: 1 is perfectly even.
pub(super) fn p10_over_mean(results: &[SpinResult]) -> f64 {
    let mut shares: Vec<f64> = results.iter().map(SpinResult::share).collect();
    shares.sort_by(f64::total_cmp);
    let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
    let p10 = shares[(shares.len() - 1) / 10];
    p10 / mean.max(f64::MIN_POSITIVE)
}

/// scx_concord's own view of the waits in a load phase, from its stats: the longest time a task
/// sat in a queue before it ran, per queue kind. A spinner's longest gap also holds what the
/// VM adds (a vCPU that TCG is not running) and any run too short to reach the clock read;
/// set beside it, the scheduler's figure tells a queueing wait from those.
pub(super) struct QueueWaits(scx_stats::prelude::StatsClient);

impl QueueWaits {
    /// None when another scheduler runs (EEVDF, a peer).
    pub(super) fn open() -> Result<Option<Self>> {
        if !ops_matches(&sched_ops(), CONCORD_OPS_NAME) {
            return Ok(None);
        }
        // A scheduler the check itself just started serves its stats a moment after it
        // attached.
        let socket = std::path::Path::new(concord_common::sched::CONCORD_STATS_SOCKET);
        super::harness::wait_for(std::time::Duration::from_secs(10), || socket.exists());
        // The first request (the caller's first phase()) opens the reader: later ones report
        // from the one before.
        let client = scx_stats::prelude::StatsClient::new()
            .connect(Some(5000))
            .context("connecting to scx_concord's stats socket")?;
        Ok(Some(Self(client)))
    }

    pub(super) fn read(&mut self) -> Result<serde_json::Value> {
        self.0
            .request::<serde_json::Value>("stats", vec![])
            .context("reading scx_concord's stats")
    }

    /// Since the last read: the longest LLC-queue and pinned-queue waits (bucket upper bounds),
    /// and the exact longest wait of either kind since the scheduler attached, in ns.
    pub(super) fn phase(&mut self) -> Result<PhaseWaits> {
        let s = self.read()?;
        let us = |k: &str| {
            s.get(k)
                .and_then(serde_json::Value::as_f64)
                .with_context(|| format!("scx_concord's stats have no {k}"))
        };
        let ns = |v: f64| (v * 1e3) as u64;
        let num = |k: &str| s.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        // What the scheduler did in the phase, beside the waits: a reader's first clue.
        let counters = [
            "dispatch_llc",
            "dispatch_pinned",
            "pull_xllc",
            "balance_pull",
            "keep_running",
            "direct_idle",
            "slice_timer",
            "urgent",
        ]
        .iter()
        .map(|k| format!("{k} {}", num(k)))
        .collect::<Vec<_>>()
        .join(", ");
        // Who waited longest of all since attach: the queue kind with the longer exact wait.
        let shared_max = us("shared_wait_max_since_start_us")?;
        let pinned_max = us("pinned_wait_max_since_start_us")?;
        let kind = if shared_max >= pinned_max {
            "shared"
        } else {
            "pinned"
        };
        let pid = num(&format!("{kind}_wait_max_pid"));
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "exited".into());
        let longest_waiter = format!(
            "{kind} queue: pid {pid} ({comm}), then ran on CPU {}{}",
            num(&format!("{kind}_wait_max_cpu")),
            if kind == "shared" {
                format!(", allowed on {} CPUs", num("shared_wait_max_nr_cpus"))
            } else {
                String::new()
            }
        );
        Ok(PhaseWaits {
            longest_waiter,
            counters,
            shared_ns: ns(us("shared_wait_max_us")?),
            pinned_ns: ns(us("pinned_wait_max_us")?),
            exact_since_start_ns: ns(shared_max.max(pinned_max)),
        })
    }
}

pub(super) struct PhaseWaits {
    pub(super) longest_waiter: String,
    pub(super) counters: String,
    pub(super) shared_ns: u64,
    pub(super) pinned_ns: u64,
    pub(super) exact_since_start_ns: u64,
}

impl PhaseWaits {
    pub(super) fn describe(&self) -> String {
        format!(
            "scx_concord's longest queue wait: LLC queue <= {:.1} ms, pinned queue <= {:.1} ms \
             (histogram bucket bounds); exact longest since attach {:.1} ms ({}); {}",
            ms(self.shared_ns),
            ms(self.pinned_ns),
            ms(self.exact_since_start_ns),
            self.longest_waiter,
            self.counters
        )
    }
}

/// Runs one load phase; with scx_concord, also its own longest waits since the previous read
/// (the phase, and the teardown and start-up of threads before it).
pub(super) fn measured_phase(
    waits: &mut Option<QueueWaits>,
    specs: &[SpinSpec],
    secs: f64,
) -> Result<(Vec<SpinResult>, Option<PhaseWaits>)> {
    let r = spin_group(specs, secs, None);
    let phase = waits.as_mut().map(QueueWaits::phase).transpose()?;
    Ok((r, phase))
}

/// The longest single wait (a gap that ended the thread's only switch-in) among @r.
pub(super) fn longest_wait(r: &[SpinResult]) -> Gap {
    r.iter()
        .map(|x| x.longest_wait)
        .max_by_key(|g| g.ns)
        .unwrap_or_default()
}

/// A phase's waits against @bound: every single wait a spinner saw (one switch-in ended it,
/// by the kernel's count) and, under scx_concord, its own exact longest queue wait, which
/// covers every task and every wait, also those inside a chain. The longest gap of all is
/// printed with what the kernel counted in it.
pub(super) fn judge_waits(
    v: &mut Verdict,
    what: &str,
    r: &[SpinResult],
    phase: &Option<PhaseWaits>,
    bound: u64,
) {
    let wait = longest_wait(r);
    let gap = r
        .iter()
        .map(|x| x.longest)
        .max_by_key(|g| g.ns)
        .unwrap_or_default();
    if !r.is_empty() {
        v.note(format!(
            "    longest single wait {}; longest gap {}{}",
            wait.describe(),
            gap.describe(),
            if gap.is_single_wait() || gap.switch_ins == 0 {
                ""
            } else {
                ": waits around a turn on a CPU that the thread did not get to use"
            }
        ));
    }
    if wait.ns > bound {
        v.fail(format!(
            "{what}: a spinner waited {:.1} ms > bound {:.1} ms",
            ms(wait.ns),
            ms(bound)
        ));
    }
    if let Some(w) = phase {
        v.note(format!("    {}", w.describe()));
        let longest = w.shared_ns.max(w.pinned_ns);
        if longest > bound {
            v.fail(format!(
                "{what}: scx_concord's longest queue wait up to {:.1} ms > bound {:.1} ms",
                ms(longest),
                ms(bound)
            ));
        }
    }
}

/// The host's own noise, measured first in the same VM: one pinned spinner per CPU and nothing
/// else for 3 s. Its longest gap is what TCG and the host add to any wait (vCPU threads
/// descheduled, interrupts). Returns the wait bound, `--max-wait-ms` + one slice + that noise,
/// and the calibration's own waits as scx_concord counted them. The noise may widen the bound
/// by at most three quarters of `--max-wait-ms`: a VM noisier than that fails the check (it
/// cannot tell a scheduler's waits from the host's), instead of widening the bound until
/// nothing can fail.
pub(super) fn calibrated_bound(
    p: &GuestParams,
    cpus: &[u32],
    waits: &mut Option<QueueWaits>,
    v: &mut Verdict,
) -> Result<(u64, Option<PhaseWaits>)> {
    let calib: Vec<SpinSpec> = cpus
        .iter()
        .map(|&c| SpinSpec {
            cpu: Some(c),
            nice: 0,
        })
        .collect();
    let (calibration, calibration_waits) = measured_phase(waits, &calib, 3.0)?;
    let noise = calibration.iter().map(|r| r.max_gap_ns).max().unwrap_or(0);
    let bound = (p.max_wait_ms + p.slice_max_ms) * 1_000_000 + noise;
    v.note(format!(
        "wait bound = --max-wait-ms {} + one {} ms slice + {:.1} ms host noise (longest gap of lone pinned spinners) = {:.1} ms",
        p.max_wait_ms,
        p.slice_max_ms,
        ms(noise),
        ms(bound)
    ));
    let cap = p.max_wait_ms * 1_000_000 * 3 / 4;
    if noise > cap {
        v.fail(format!(
            "the VM is too noisy to judge waits: lone pinned spinners saw a {:.1} ms gap > {:.1} ms (3/4 of --max-wait-ms)",
            ms(noise),
            ms(cap)
        ));
    }
    Ok((bound, calibration_waits))
}

/// scx_concord started by a check that judges its waits after reference phases under EEVDF
/// (the VM boots under it): attached within 150 s, its stats opened and the wait bound
/// calibrated. None when it did not attach (the verdict says so).
pub(super) fn start_concord_judged(
    p: &GuestParams,
    cpus: &[u32],
    log_name: &str,
    v: &mut Verdict,
) -> Result<Option<(super::harness::Concord, Option<QueueWaits>, u64)>> {
    use super::harness::{concord_attached, wait_for, Concord};
    let c = Concord::spawn(&[], log_name, None)?;
    if wait_for(std::time::Duration::from_secs(150), concord_attached).is_none() {
        v.fail(format!("did not attach: {}", c.output()));
        return Ok(None);
    }
    let mut waits = QueueWaits::open()?;
    if let Some(w) = waits.as_mut() {
        w.phase()?;
    }
    let (bound, _) = calibrated_bound(p, cpus, &mut waits, v)?;
    Ok(Some((c, waits, bound)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenness_of_shares() {
        let r = SpinResult::with_share;
        let even: Vec<_> = (0..10).map(|_| r(0.5)).collect();
        assert!((p10_over_mean(&even) - 1.0).abs() < 1e-9);
        // One starved thread in ten is the p10.
        let mut starved = even.clone();
        starved[3] = r(0.05);
        assert!(p10_over_mean(&starved) < 0.2);
    }

    fn spinner(longest: Gap, longest_wait: Gap) -> SpinResult {
        SpinResult {
            cpu_ns: 1,
            turns: 1,
            last_cpu: 0,
            wall_ns: 1,
            max_gap_ns: longest.ns,
            longest,
            longest_wait,
        }
    }

    fn gap(ms: u64, switch_ins: u64) -> Gap {
        Gap {
            ns: ms * 1_000_000,
            switch_ins,
            waited_ns: ms * 1_000_000,
            on_cpu_ns: 0,
        }
    }

    #[test]
    fn waits_are_judged_one_at_a_time() {
        let bound = 50_000_000;
        let concord = |exact_ms: u64| {
            Some(PhaseWaits {
                longest_waiter: String::new(),
                counters: String::new(),
                shared_ns: exact_ms * 1_000_000,
                pinned_ns: 0,
                exact_since_start_ns: exact_ms * 1_000_000,
            })
        };
        let judged = |longest: Gap, wait: Gap, phase: Option<PhaseWaits>| {
            let mut v = Verdict::new("fairness");
            judge_waits(&mut v, "mix", &[spinner(longest, wait)], &phase, bound);
            v
        };
        // A 75 ms gap that held a turn the thread did not use (two switch-ins), each wait
        // within the bound by the scheduler's exact count: passes, and says why.
        let v = judged(gap(75, 2), gap(30, 1), concord(29));
        assert!(v.pass(), "{:?}", v.failures);
        assert!(v.evidence.iter().any(|e| e.contains("did not get to use")));
        // A single wait over the bound fails whatever the scheduler says.
        assert!(!judged(gap(60, 1), gap(60, 1), concord(29)).pass());
        // So does the scheduler's own longest queue wait over the bound, chain or not.
        assert!(!judged(gap(75, 2), gap(30, 1), concord(51)).pass());
        // Without scx_concord's figure only the single waits are judged.
        assert!(judged(gap(40, 1), gap(40, 1), None).pass());
    }
}
