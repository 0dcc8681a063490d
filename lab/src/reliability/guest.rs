//! Guest side of the reliability suite (`concord-lab rel-guest`): each check drives the load
//! (and, for the exit, input and access checks, scx_concord itself), measures, and returns a
//! verdict with its evidence. Runs as root inside the lab VM.

use anyhow::{bail, Context, Result};
use concord_workloads::sys::{now_ns, pin_current_thread, set_current_thread_cpus, SchedStat};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{GuestParams, Verdict};
use crate::guest::{ops_matches, sched_ops, sched_state};
use concord_common::sched::CONCORD_OPS_NAME;

const NOBODY: u32 = 65534;
/// scx_stats' default socket (scx_concord does not move it).
const STATS_SOCKET: &str = "/var/run/scx/root/stats";

fn run_dir() -> Result<PathBuf> {
    Ok(PathBuf::from(
        std::env::var_os("CONCORD_LAB_RUN_DIR")
            .context("CONCORD_LAB_RUN_DIR not set: rel-guest runs inside the lab VM")?,
    ))
}

fn online_cpus() -> Result<Vec<u32>> {
    concord_common::topology::parse_cpulist(
        std::fs::read_to_string("/sys/devices/system/cpu/online")?.trim(),
    )
}

fn concord_attached() -> bool {
    sched_state() == "enabled" && ops_matches(&sched_ops(), CONCORD_OPS_NAME)
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// scx_concord started by the check itself, its output in a file of the run directory.
struct Concord {
    child: Child,
    log: PathBuf,
}

impl Concord {
    fn spawn(args: &[&str], log_name: &str, uid: Option<u32>) -> Result<Self> {
        let log = run_dir()?.join(log_name);
        let f = std::fs::File::create(&log)?;
        // Another user may not reach the build directory (a clone under /root): give them a
        // copy on the guest's /tmp.
        let prog = match uid {
            Some(_) => world_copy()?,
            None => PathBuf::from("scx_concord"),
        };
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f);
        if let Some(u) = uid {
            cmd.uid(u).gid(u);
        }
        let child = cmd.spawn().context("starting scx_concord")?;
        Ok(Self { child, log })
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs to its end (at most `limit`): exit status (None: had to be killed) and output.
    fn finish(mut self, limit: Duration) -> (Option<ExitStatus>, String) {
        let st = wait_child(&mut self.child, limit);
        (st, self.output())
    }

    fn stop(mut self) -> (Option<ExitStatus>, String) {
        crate::util::signal_child(&self.child, libc::SIGINT);
        let st = wait_child(&mut self.child, Duration::from_secs(15));
        (st, self.output())
    }
}

fn world_copy() -> Result<PathBuf> {
    let src = crate::util::which("scx_concord").context("scx_concord not on PATH")?;
    let dst = PathBuf::from("/tmp/scx_concord-copy");
    if !dst.exists() {
        std::fs::copy(&src, &dst)?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(dst)
}

/// The first line that looks like the error message (clap's or ours).
fn error_line(out: &str) -> String {
    out.lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| out.lines().next().unwrap_or(""))
        .trim()
        .to_string()
}

fn code(st: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match st {
        None => "no exit (killed after the time limit)".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "?".into(),
        },
    }
}

/// Ended by itself with a non-zero exit code (not killed, not hung).
fn exited_nonzero(st: Option<ExitStatus>) -> bool {
    st.and_then(|s| s.code()).is_some_and(|c| c != 0)
}

fn stress(args: &[String]) -> Result<Child> {
    Command::new("stress-ng")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting stress-ng")
}

pub fn main(params: &GuestParams) -> Result<i32> {
    let mut verdicts = Vec::new();
    for name in &params.checks {
        let mut v = Verdict::new(name);
        let r = match name.as_str() {
            "fairness" => fairness(params, &mut v),
            "affinity" => affinity(params, &mut v),
            "hotplug" => hotplug(params, &mut v),
            "exits" => exits(params, &mut v),
            "bad-input" => bad_input(&mut v),
            "access" => access(&mut v),
            "resources" => resources(params, &mut v),
            other => Err(anyhow::anyhow!("unknown check {other}")),
        };
        if let Err(e) = r {
            v.fail(format!("the check itself failed: {e:#}"));
        }
        // Whatever happened, leave no scheduler of ours behind for the next check.
        if sched_state() != "disabled" && params.self_managed {
            let _ = Command::new("pkill")
                .args(["-INT", "-x", "scx_concord"])
                .status();
            wait_for(Duration::from_secs(15), || sched_state() == "disabled");
        }
        println!("[{}] {}", if v.pass() { "PASS" } else { "FAIL" }, v.check);
        for e in &v.evidence {
            println!("    {e}");
        }
        for f in &v.failures {
            println!("    FAILED: {f}");
        }
        verdicts.push(v);
    }
    std::fs::write(
        run_dir()?.join(super::VERDICTS_FILE),
        serde_json::to_vec_pretty(&verdicts)?,
    )?;
    Ok(if verdicts.iter().all(Verdict::pass) {
        0
    } else {
        1
    })
}

// ---------------------------------------------------------------------------------------------
// Spinners: always-runnable threads that read the clock in a loop. A gap between two reads is
// time the thread did not run (waiting, or its vCPU stalled on the host); schedstat gives its
// CPU time.

#[derive(Clone, Copy)]
struct SpinSpec {
    cpu: Option<u32>,
    nice: i32,
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
struct Gap {
    ns: u64,
    switch_ins: u64,
    waited_ns: u64,
    on_cpu_ns: u64,
}

impl Gap {
    fn is_single_wait(&self) -> bool {
        self.switch_ins == 1
    }
    fn describe(&self) -> String {
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
struct SpinResult {
    cpu_ns: u64,
    /// Times it was switched in.
    turns: u64,
    /// The CPU it ran on at the end (which LLC it ended up in).
    last_cpu: i32,
    wall_ns: u64,
    max_gap_ns: u64,
    /// The longest gap, and the longest that was a single wait.
    longest: Gap,
    longest_wait: Gap,
}

impl SpinResult {
    fn share(&self) -> f64 {
        self.cpu_ns as f64 / self.wall_ns.max(1) as f64
    }
}

fn spin_group(specs: &[SpinSpec], secs: f64, progress: Option<&[AtomicU64]>) -> Vec<SpinResult> {
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
                                p[i].store(loops, Ordering::Relaxed);
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

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// p10 of the CPU shares over their mean: 1 is perfectly even.
fn p10_over_mean(results: &[SpinResult]) -> f64 {
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
struct QueueWaits(scx_stats::prelude::StatsClient);

impl QueueWaits {
    /// None when another scheduler runs (EEVDF, a peer).
    fn open() -> Result<Option<Self>> {
        if !ops_matches(&sched_ops(), CONCORD_OPS_NAME) {
            return Ok(None);
        }
        // The first request (the caller's first phase()) opens the reader: later ones report
        // from the one before.
        let client = scx_stats::prelude::StatsClient::new()
            .connect(Some(5000))
            .context("connecting to scx_concord's stats socket")?;
        Ok(Some(Self(client)))
    }

    fn read(&mut self) -> Result<serde_json::Value> {
        self.0
            .request::<serde_json::Value>("stats", vec![])
            .context("reading scx_concord's stats")
    }

    /// Since the last read: the longest LLC-queue and pinned-queue waits (bucket upper bounds),
    /// and the exact longest wait of either kind since the scheduler attached, in ns.
    fn phase(&mut self) -> Result<PhaseWaits> {
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
            "steal_xllc",
            "balance_pull",
            "keep_running",
            "direct_idle",
            "slice_timer",
            "overdue",
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

struct PhaseWaits {
    longest_waiter: String,
    counters: String,
    shared_ns: u64,
    pinned_ns: u64,
    exact_since_start_ns: u64,
}

impl PhaseWaits {
    fn describe(&self) -> String {
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
fn measured_phase(
    waits: &mut Option<QueueWaits>,
    specs: &[SpinSpec],
    secs: f64,
) -> Result<(Vec<SpinResult>, Option<PhaseWaits>)> {
    let r = spin_group(specs, secs, None);
    let phase = waits.as_mut().map(QueueWaits::phase).transpose()?;
    Ok((r, phase))
}

/// A nice-19 spinner's share may be at most nice 0's mean over this.
const NICE19_MAX_FRACTION_OF_NICE0: f64 = 4.0;

/// Starvation and fairness (schtest-style), under the scheduler the runner started.
fn fairness(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let cpus = online_cpus()?;
    let n = cpus.len();
    // The host's own noise: one pinned spinner per CPU and nothing else. Its longest gap is
    // what TCG and the host add to any wait (vCPU threads descheduled, interrupts).
    let calib: Vec<SpinSpec> = cpus
        .iter()
        .map(|&c| SpinSpec {
            cpu: Some(c),
            nice: 0,
        })
        .collect();
    let mut waits = QueueWaits::open()?;
    if let Some(w) = waits.as_mut() {
        let before = w.phase()?;
        v.note(format!(
            "before the check: scx_concord's exact longest queue wait since attach {:.1} ms",
            ms(before.exact_since_start_ns)
        ));
    }
    let (calibration, calibration_waits) = measured_phase(&mut waits, &calib, 3.0)?;
    let noise = calibration.iter().map(|r| r.max_gap_ns).max().unwrap_or(0);
    let bound = (p.max_wait_ms + p.slice_max_ms) * 1_000_000 + noise;
    v.note(format!(
        "wait bound = --max-wait-ms {} + one {} ms slice + {:.1} ms host noise (longest gap of lone pinned spinners) = {:.1} ms",
        p.max_wait_ms,
        p.slice_max_ms,
        ms(noise),
        ms(bound)
    ));
    judge_waits(v, "calibration", &[], &calibration_waits, bound);

    // 1. One pinned spinner per CPU plus as many unpinned: every thread's fair share is 1/2.
    let mut specs: Vec<SpinSpec> = calib.clone();
    specs.extend((0..n).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let (r, waits_seen) = measured_phase(&mut waits, &specs, p.secs)?;
    let even = p10_over_mean(&r);
    v.note(format!(
        "{n} pinned + {n} unpinned spinners, {:.0} s: CPU share p10/mean {even:.2} (shares {}), longest wait {:.1} ms",
        p.secs,
        r.iter()
            .map(|x| format!("{:.2}", x.share()))
            .collect::<Vec<_>>()
            .join(" "),
        ms(longest_wait(&r).ns)
    ));
    if even < 0.8 {
        v.fail(format!("uneven CPU shares: p10/mean {even:.2} < 0.8"));
    }
    judge_waits(v, "even mix", &r, &waits_seen, bound);

    // 2. A task pinned to CPU 0, flooded with unpinned work (3 per CPU).
    let mut specs = vec![SpinSpec {
        cpu: Some(cpus[0]),
        nice: 0,
    }];
    specs.extend((0..3 * n).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let (r, waits_seen) = measured_phase(&mut waits, &specs, p.secs)?;
    let fair = n as f64 / specs.len() as f64;
    v.note(format!(
        "pinned to CPU {} among {} unpinned spinners: share {:.3} (fair {fair:.3}), longest wait {:.1} ms; unpinned longest wait {:.1} ms",
        cpus[0],
        3 * n,
        r[0].share(),
        ms(r[0].longest_wait.ns),
        ms(longest_wait(&r[1..]).ns)
    ));
    if r[0].share() < 0.5 * fair {
        v.fail(format!(
            "the pinned task got {:.3} of a CPU, less than half its fair {fair:.3}",
            r[0].share()
        ));
    }
    judge_waits(v, "flooded CPU", &r, &waits_seen, bound);

    // 3. A nice-19 task among 2 nice-0 spinners per CPU: it gets little, but it runs.
    let mut specs = vec![SpinSpec {
        cpu: None,
        nice: 19,
    }];
    specs.extend((0..2 * n).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let (r, waits_seen) = measured_phase(&mut waits, &specs, p.secs)?;
    let nice0_mean = r[1..].iter().map(SpinResult::share).sum::<f64>() / (2 * n) as f64;
    v.note(format!(
        "nice 19 among {} nice-0 spinners: share {:.4} (nice 0 mean {nice0_mean:.3}) in {} turns of {:.2} ms on average (nice 0: {:.2} ms), longest wait {:.1} ms",
        2 * n,
        r[0].share(),
        r[0].turns,
        ms(r[0].cpu_ns / r[0].turns.max(1)),
        ms(r[1..].iter().map(|x| x.cpu_ns).sum::<u64>()
            / r[1..].iter().map(|x| x.turns).sum::<u64>().max(1)),
        ms(r[0].longest_wait.ns)
    ));
    // With several LLCs, how the spinners ended up spread over them (share@CPU).
    v.note(format!(
        "    shares at the end's CPU: nice 19 {:.3}@{}; nice 0 {}",
        r[0].share(),
        r[0].last_cpu,
        r[1..]
            .iter()
            .map(|x| format!("{:.2}@{}", x.share(), x.last_cpu))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    if r[0].cpu_ns == 0 {
        v.fail("the nice-19 task never ran".into());
    }
    // Weight 15 against 1024: EEVDF gives it about 1/70 of a nice-0 share. A quarter is a
    // generous line that a scheduler ignoring nice (equal turns: 1/1) cannot pass.
    if r[0].share() > nice0_mean / NICE19_MAX_FRACTION_OF_NICE0 {
        v.fail(format!(
            "nice is not honoured: nice 19 got {:.3} of a CPU, more than 1/{} of nice 0's {nice0_mean:.3}",
            r[0].share(),
            NICE19_MAX_FRACTION_OF_NICE0
        ));
    }
    judge_waits(v, "niced mix", &r, &waits_seen, bound);
    // Every task, not only the spinners, from attach to here (phases and between them).
    if let Some(w) = waits_seen.filter(|w| w.exact_since_start_ns > bound) {
        v.fail(format!(
            "some task waited {:.1} ms in scx_concord's queues since attach > bound {:.1} ms ({})",
            ms(w.exact_since_start_ns),
            ms(bound),
            w.longest_waiter
        ));
    }
    Ok(())
}

/// The longest single wait (a gap that ended the thread's only switch-in) among @r.
fn longest_wait(r: &[SpinResult]) -> Gap {
    r.iter()
        .map(|x| x.longest_wait)
        .max_by_key(|g| g.ns)
        .unwrap_or_default()
}

/// A phase's waits against @bound: every single wait a spinner saw (one switch-in ended it,
/// by the kernel's count) and, under scx_concord, its own exact longest queue wait, which
/// covers every task and every wait, also those inside a chain. The longest gap of all is
/// printed with what the kernel counted in it.
fn judge_waits(
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

/// Tasks never run outside their allowed CPUs, while masks change under load.
fn affinity(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let cpus = online_cpus()?;
    let n = cpus.len();
    // Outside churn and load: stress-ng's own affinity workers hop between CPUs.
    let mut churn = stress(&[
        "-q".into(),
        "-c".into(),
        n.to_string(),
        "--affinity".into(),
        n.to_string(),
        "--affinity-rand".into(),
        "-t".into(),
        format!("{}", p.secs as u64),
    ])?;
    let samples = AtomicU64::new(0);
    let changes = AtomicU64::new(0);
    let violations = std::sync::Mutex::new(Vec::<String>::new());
    let end = now_ns() + (p.secs * 1e9) as u64;
    std::thread::scope(|s| {
        for t in 0..2 * n {
            let (samples, changes, violations, cpus) = (&samples, &changes, &violations, &cpus);
            s.spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                while now_ns() < end {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // A random non-empty subset of the online CPUs.
                    let mask: Vec<u32> = cpus
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| (x >> i) & 1 == 1)
                        .map(|(_, &c)| c)
                        .collect();
                    let mask = if mask.is_empty() {
                        vec![cpus[(x as usize / 7) % cpus.len()]]
                    } else {
                        mask
                    };
                    let cpus: Vec<usize> = mask.iter().map(|&c| c as usize).collect();
                    if set_current_thread_cpus(&cpus).is_err() {
                        continue;
                    }
                    changes.fetch_add(1, Ordering::Relaxed);
                    for k in 0..2000u32 {
                        // SAFETY: no arguments.
                        let cpu = unsafe { libc::sched_getcpu() };
                        if cpu < 0 || !mask.contains(&(cpu as u32)) {
                            let mut v = violations.lock().unwrap();
                            if v.len() < 10 {
                                v.push(format!("thread {t} on CPU {cpu}, allowed {mask:?}"));
                            }
                        }
                        if k % 500 == 499 {
                            std::thread::yield_now();
                        }
                    }
                    samples.fetch_add(2000, Ordering::Relaxed);
                }
            });
        }
    });
    // Masks of other tasks changed by someone else (the kernel or another process) get the
    // same check from the kernel's side: a sched_ext scheduler that dispatched a task to a CPU
    // outside its mask is ejected with an error, which the runner reports.
    let churn_st = wait_child(&mut churn, Duration::from_secs(60));
    let violations = violations.into_inner().unwrap();
    v.note(format!(
        "{} threads, {:.0} s: {} mask changes, {} sched_getcpu samples, {} outside the mask; stress-ng --affinity-rand churn: {}",
        2 * n,
        p.secs,
        changes.load(Ordering::Relaxed),
        samples.load(Ordering::Relaxed),
        violations.len(),
        code(churn_st)
    ));
    for x in &violations {
        v.fail(format!("ran outside its mask: {x}"));
    }
    if changes.load(Ordering::Relaxed) < 10 {
        v.fail("fewer than 10 mask changes: the check did not exercise anything".into());
    }
    if !churn_st.is_some_and(|s| s.success()) {
        v.fail(format!("stress-ng churn: {}", code(churn_st)));
    }
    Ok(())
}

fn set_online(cpu: u32, on: bool) -> Result<()> {
    std::fs::write(
        format!("/sys/devices/system/cpu/cpu{cpu}/online"),
        if on { "1" } else { "0" },
    )
    .with_context(|| format!("setting CPU {cpu} online={on}"))
}

/// How long scx_concord may take to come back after a hotplug unloaded it: the kernel's exit,
/// the restart and a whole attach, which under TCG with 4 vCPUs on 2 host cores is slow, and
/// slowest right after the exit with the spinners running. A lost re-attach still fails.
const REATTACH_SECS: u64 = 60;

/// CPUs go offline and online under load: no task is lost, the scheduler comes back.
fn hotplug(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let cpus = online_cpus()?;
    if cpus.len() < 3 {
        bail!("hotplug needs at least 3 CPUs (got {})", cpus.len());
    }
    let (a, b) = (cpus[cpus.len() - 1], cpus[cpus.len() - 2]);
    // One spinner pinned to the first CPU to go (the kernel must move it), the rest unpinned.
    let mut specs = vec![SpinSpec {
        cpu: Some(a),
        nice: 0,
    }];
    specs.extend((0..cpus.len()).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let progress: Vec<AtomicU64> = specs.iter().map(|_| AtomicU64::new(0)).collect();
    let done = AtomicBool::new(false);
    let steps = [(a, false), (b, false), (b, true), (a, true)];
    let phase_secs = 2.0;
    // Long enough for every step to re-attach (a few seconds each under TCG) and run.
    let total = p.secs.max(steps.len() as f64 * (phase_secs + 8.0) + 4.0);
    let mut finished = 0;
    std::thread::scope(|s| -> Result<()> {
        let spin = s.spawn(|| {
            let r = spin_group(&specs, total, Some(&progress));
            done.store(true, Ordering::Relaxed);
            r
        });
        std::thread::sleep(Duration::from_secs_f64(phase_secs));
        let mut last: Vec<u64> = progress.iter().map(|x| x.load(Ordering::Relaxed)).collect();
        for (cpu, on) in steps {
            set_online(cpu, on)?;
            // The kernel unloads the scheduler (asynchronously); then it must come back.
            let left = wait_for(Duration::from_secs(10), || !concord_attached());
            let back = wait_for(Duration::from_secs(REATTACH_SECS), concord_attached);
            std::thread::sleep(Duration::from_secs_f64(phase_secs));
            let now: Vec<u64> = progress.iter().map(|x| x.load(Ordering::Relaxed)).collect();
            let stuck: Vec<usize> = (0..now.len()).filter(|&i| now[i] == last[i]).collect();
            v.note(format!(
                "CPU {cpu} {}: concord {}, attached again {}; spinners without progress in the next {phase_secs} s: {stuck:?}",
                if on { "online" } else { "offline" },
                left.map(|d| format!("unloaded after {:.1} s", d.as_secs_f64()))
                    .unwrap_or_else(|| "NOT unloaded within 10 s".into()),
                back.map(|d| format!("after {:.1} s", d.as_secs_f64()))
                    .unwrap_or_else(|| format!("NOT within {REATTACH_SECS} s")),
            ));
            if back.is_none() {
                v.fail(format!(
                    "scx_concord did not re-attach within {REATTACH_SECS} s after CPU {cpu} went {}",
                    if on { "online" } else { "offline" }
                ));
            }
            if !stuck.is_empty() && !done.load(Ordering::Relaxed) {
                v.fail(format!("spinners {stuck:?} made no progress"));
            }
            last = now;
        }
        let r = spin.join().unwrap();
        finished = r.iter().filter(|x| x.wall_ns > 0).count();
        Ok(())
    })?;
    let reloads = std::fs::read_to_string(run_dir()?.join(crate::protocol::SCHED_LOG))
        .unwrap_or_default()
        .matches("reloading with the current topology")
        .count();
    v.note(format!(
        "{finished} of {} spinners finished; scx_concord reloaded {reloads} times",
        specs.len()
    ));
    if finished != specs.len() {
        v.fail("a spinner was lost".into());
    }
    if reloads < steps.len() {
        v.fail(format!(
            "expected a reload per hotplug step ({}), saw {reloads}",
            steps.len()
        ));
    }
    if !concord_attached() {
        v.fail(format!("not attached at the end (state {})", sched_state()));
    }
    Ok(())
}

/// kill -9, a BPF-side error and SIGINT, each under load.
fn exits(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let n = online_cpus()?.len();
    let mut load = stress(&[
        "-q".into(),
        "-c".into(),
        n.to_string(),
        "-t".into(),
        "90".into(),
    ])?;
    let attach = Duration::from_secs(60);

    // kill -9: the kernel notices the struct_ops link is gone and falls back to EEVDF.
    let c = Concord::spawn(&[], "exits-kill9.log", None)?;
    if wait_for(attach, concord_attached).is_none() {
        v.fail(format!("did not attach: {}", c.output()));
    } else {
        std::thread::sleep(Duration::from_secs(2));
        crate::util::signal_child(&c.child, libc::SIGKILL);
        let gone = wait_for(Duration::from_secs(10), || sched_state() == "disabled");
        let (st, _) = c.finish(Duration::from_secs(5));
        v.note(format!(
            "kill -9 under load: {}; sched_ext state disabled {}",
            code(st),
            gone.map(|d| format!("after {:.2} s", d.as_secs_f64()))
                .unwrap_or_else(|| "NOT within 10 s".into())
        ));
        if gone.is_none() {
            v.fail("the kernel did not fall back after kill -9".into());
        }
    }

    // A BPF-side error: the exit reason is printed, the exit code is non-zero, no hang.
    let c = Concord::spawn(
        &["--debug-error-after-ms", &(p.error_after_ms).to_string()],
        "exits-bpf-error.log",
        None,
    )?;
    let (st, out) = c.finish(Duration::from_secs(60));
    let reason = out
        .lines()
        .find(|l| l.contains("EXIT:"))
        .unwrap_or("")
        .trim()
        .to_string();
    v.note(format!(
        "scx_bpf_error after {} ms: {}, exit reason printed: '{reason}', state {}",
        p.error_after_ms,
        code(st),
        sched_state()
    ));
    if !exited_nonzero(st) {
        v.fail(format!(
            "BPF error: expected a non-zero exit, got {}",
            code(st)
        ));
    }
    if !reason.contains("scx_bpf_error") || !out.contains("debug: error requested") {
        v.fail("BPF error: the kernel's exit reason was not printed".into());
    }
    if sched_state() != "disabled" {
        v.fail("BPF error: sched_ext still enabled afterwards".into());
    }

    // SIGINT: clean detach, exit 0.
    let c = Concord::spawn(&[], "exits-sigint.log", None)?;
    if wait_for(attach, concord_attached).is_none() {
        v.fail(format!("did not attach: {}", c.output()));
    } else {
        std::thread::sleep(Duration::from_secs(2));
        let t0 = Instant::now();
        let (st, _) = c.stop();
        v.note(format!(
            "SIGINT under load: {} after {:.2} s, state {}",
            code(st),
            t0.elapsed().as_secs_f64(),
            sched_state()
        ));
        if !st.is_some_and(|s| s.success()) {
            v.fail(format!("SIGINT: expected exit 0, got {}", code(st)));
        }
        if sched_state() != "disabled" {
            v.fail("SIGINT: sched_ext still enabled afterwards".into());
        }
    }
    crate::util::signal_child(&load, libc::SIGINT);
    let st = wait_child(&mut load, Duration::from_secs(30));
    v.note(format!("the load (stress-ng) ended: {}", code(st)));
    if st.is_none() {
        v.fail("the load did not end after the scheduler exits".into());
    }
    Ok(())
}

/// One bad invocation: refused with one clear message, non-zero, nothing loaded.
fn refused(v: &mut Verdict, what: &str, args: &[&str], says: &str) -> Result<()> {
    let c = Concord::spawn(args, "bad-input.log", None)?;
    let (st, out) = c.finish(Duration::from_secs(20));
    let msg = error_line(&out);
    let state = sched_state();
    v.note(format!("{what}: {} — {msg}", code(st)));
    let ok_exit = exited_nonzero(st);
    if !ok_exit || !msg.contains(says) || state != "disabled" || out.lines().count() > 10 {
        v.fail(format!(
            "{what}: want a non-zero exit, one message containing '{says}' and nothing loaded; got {}, state {state}, output: {}",
            code(st),
            out.trim()
        ));
    }
    Ok(())
}

fn bad_input(v: &mut Verdict) -> Result<()> {
    for (args, says) in [
        (&["--queue", "per-cpu"][..], "invalid value 'per-cpu'"),
        (&["--pinned-queue", "lavd"], "invalid value 'lavd'"),
        (&["--deadline", "never"], "invalid value 'never'"),
        (&["--slice-max-us", "0"], "--slice-min-us 500 is larger"),
        (&["--slice-max-us", "-5"], "unexpected argument '-5'"),
        (&["--slice-min-us", "10"], "too short"),
        (&["--slice-max-us", "999999999"], "too long"),
        (&["--max-wait-ms", "0"], "at least 1"),
        (&["--max-wait-ms", "99999"], "watchdog"),
        (
            &["--max-wait-ms", "2", "--slice-max-us", "5000"],
            "shorter than one slice",
        ),
        (&["--stats", "0"], "positive number"),
        (&["--monitor", "nan"], "positive number"),
        (&["--debug-error-after-ms", "0"], "at least 1"),
        (&["--exit-dump-len", "lots"], "invalid value 'lots'"),
        (&["--bogus"], "unexpected argument '--bogus'"),
    ] {
        refused(v, &format!("`{}`", args.join(" ")), args, says)?;
    }
    let dir = run_dir()?;
    for (name, text, says) in [
        ("malformed.toml", "queue = \n", "not valid TOML"),
        (
            "unknown.toml",
            "queues = \"global\"\n",
            "unknown setting 'queues'",
        ),
        (
            "badvalue.toml",
            "queue = \"per-cpu\"\n",
            "invalid value 'per-cpu'",
        ),
        ("badtype.toml", "max-wait-ms = [40]\n", "wrong type"),
        ("outofrange.toml", "max-wait-ms = 0\n", "at least 1"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        let p = path.display().to_string();
        refused(
            v,
            &format!("--config {name} ({})", text.trim()),
            &["--config", &p],
            says,
        )?;
    }
    refused(
        v,
        "--config of a missing file",
        &["--config", "/nonexistent/concord.toml"],
        "cannot read it",
    )?;

    // A second scheduler while one is attached: refused, the first keeps running.
    let first = Concord::spawn(&[], "bad-input-first.log", None)?;
    if wait_for(Duration::from_secs(60), concord_attached).is_none() {
        v.fail(format!(
            "the first instance did not attach: {}",
            first.output()
        ));
        return Ok(());
    }
    let second = Concord::spawn(&[], "bad-input-second.log", None)?;
    let (st, out) = second.finish(Duration::from_secs(20));
    let still = concord_attached();
    v.note(format!(
        "second instance while one is attached: {} — {}; first still attached: {still}",
        code(st),
        error_line(&out)
    ));
    if !exited_nonzero(st) || !out.contains("another sched_ext scheduler is active") || !still {
        v.fail(format!("second instance: {}", out.trim()));
    }
    let (st, _) = first.stop();
    if !st.is_some_and(|s| s.success()) {
        v.fail(format!("the first instance's SIGINT: {}", code(st)));
    }
    Ok(())
}

/// Only root loads or watches the scheduler; the stats endpoint is root's alone.
fn access(v: &mut Verdict) -> Result<()> {
    let c = Concord::spawn(&[], "access-nobody.log", Some(NOBODY))?;
    let (st, out) = c.finish(Duration::from_secs(20));
    v.note(format!(
        "scx_concord as nobody: {} — {}; state {}",
        code(st),
        error_line(&out),
        sched_state()
    ));
    if !exited_nonzero(st) || !out.contains("needs root") || sched_state() != "disabled" {
        v.fail(format!(
            "an unprivileged load was not refused clearly: {}",
            out.trim()
        ));
    }

    let sched = Concord::spawn(&[], "access-root.log", None)?;
    // The stats server starts after the attach and replaces any socket an earlier instance left
    // behind (remove, then bind): stat the socket only once it accepts connections, or the
    // check races that replacement (a CI run read the old socket, then found no file at all).
    if wait_for(Duration::from_secs(60), || {
        concord_attached() && UnixStream::connect(STATS_SOCKET).is_ok()
    })
    .is_none()
    {
        v.fail(format!(
            "did not attach and serve stats: {}",
            sched.output()
        ));
        return Ok(());
    }
    // The socket and the directories leading to it: owned by root, nobody else may write
    // (connecting to a UNIX socket needs write permission on it).
    let sock = Path::new(STATS_SOCKET);
    let mut paths = vec![sock.to_path_buf()];
    paths.extend(sock.ancestors().skip(1).take(2).map(Path::to_path_buf));
    for path in &paths {
        let md = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
        let mode = md.permissions().mode() & 0o7777;
        v.note(format!(
            "{}: owner uid {}, mode {mode:04o}",
            path.display(),
            md.uid()
        ));
        if md.uid() != 0 || mode & 0o022 != 0 {
            v.fail(format!(
                "{} is writable by others than root (uid {}, mode {mode:04o})",
                path.display(),
                md.uid()
            ));
        }
    }
    if std::fs::metadata(sock)?.permissions().mode() & 0o006 != 0 {
        v.fail(format!("{STATS_SOCKET}: other users may connect"));
    }
    let mon = Concord::spawn(
        &["--monitor", "1"],
        "access-monitor-nobody.log",
        Some(NOBODY),
    )?;
    let (st, out) = mon.finish(Duration::from_secs(15));
    v.note(format!(
        "--monitor as nobody: {} — {}",
        code(st),
        error_line(&out)
    ));
    if !exited_nonzero(st) || out.contains("dispatch") {
        v.fail(format!("nobody could read the stats: {}", out.trim()));
    }
    let mon = Concord::spawn(&["--monitor", "1"], "access-monitor-root.log", None)?;
    std::thread::sleep(Duration::from_secs(4));
    let (st, out) = mon.stop();
    let read = out.contains("dispatch");
    v.note(format!(
        "--monitor as root: stats read: {read}, {} on SIGINT; the scheduler still attached: {}",
        code(st),
        concord_attached()
    ));
    if !read || !concord_attached() {
        v.fail(format!("root's monitor: {}", out.trim()));
    }
    let (st, _) = sched.stop();
    if !st.is_some_and(|s| s.success()) {
        v.fail(format!("SIGINT: {}", code(st)));
    }
    Ok(())
}

/// VmHWM (peak RSS) of a process, KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let mut status = String::new();
    std::fs::File::open(format!("/proc/{pid}/status"))?.read_to_string(&mut status)?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(hwm)
}

/// Each thread of `pid`: (tid, name) and its exact CPU time so far (schedstat), ns.
fn thread_times(pid: u32) -> std::collections::BTreeMap<(u32, String), u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Default::default();
    };
    dir.flatten()
        .filter_map(|e| {
            let p = e.path();
            let tid = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(p.join("comm")).ok()?;
            let ns = std::fs::read_to_string(p.join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(((tid, comm.trim().to_string()), ns))
        })
        .collect()
}

/// RSS and CPU time of scx_concord over a run under load, stats off.
fn resources(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let n = online_cpus()?.len();
    let sched = Concord::spawn(&[], "resources.log", None)?;
    if wait_for(Duration::from_secs(60), concord_attached).is_none() {
        v.fail(format!("did not attach: {}", sched.output()));
        return Ok(());
    }
    let pid = sched.child.id();
    // CPU time from each thread's schedstat (the scheduler core's exact run time): utime and
    // stime come in 10 ms clock ticks, a twentieth of the whole budget of a 20 s run.
    let threads0 = thread_times(pid);
    let mut load = stress(&[
        "-q".into(),
        "-c".into(),
        n.to_string(),
        "--pipe".into(),
        "1".into(),
        "--affinity".into(),
        "1".into(),
        "-t".into(),
        format!("{}", p.secs as u64),
    ])?;
    let started = Instant::now();
    let load_st = wait_child(&mut load, Duration::from_secs_f64(p.secs + 30.0));
    let secs = started.elapsed().as_secs_f64();
    let hwm_kib = peak_rss_kib(pid)?;
    let used: Vec<(String, u64)> = thread_times(pid)
        .into_iter()
        .map(|((tid, comm), ns)| {
            let before = threads0.get(&(tid, comm.clone())).copied().unwrap_or(0);
            (format!("{comm} ({tid})"), ns.saturating_sub(before))
        })
        .collect();
    let total_ns: u64 = used.iter().map(|u| u.1).sum();
    let threads: Vec<String> = used
        .iter()
        .map(|(t, ns)| format!("{t} {:.1} ms", *ns as f64 / 1e6))
        .collect();
    let cpu_pct = total_ns as f64 / 1e9 / secs * 100.0;
    let rss_mib = hwm_kib as f64 / 1024.0;
    v.note(format!(
        "{secs:.0} s under stress-ng (cpu + pipe + affinity, {}): peak RSS {rss_mib:.1} MiB, CPU {cpu_pct:.2} % of one CPU",
        code(load_st)
    ));
    v.note(format!("CPU time by thread: {}", threads.join(", ")));
    if rss_mib >= 64.0 {
        v.fail(format!("peak RSS {rss_mib:.1} MiB >= 64 MiB"));
    }
    if cpu_pct >= 1.0 {
        v.fail(format!("CPU {cpu_pct:.2} % >= 1 % of one CPU"));
    }
    if !concord_attached() {
        v.fail("detached during the run".into());
    }
    let (st, _) = sched.stop();
    if !st.is_some_and(|s| s.success()) {
        v.fail(format!("SIGINT: {}", code(st)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenness_of_shares() {
        let r = |share: f64| SpinResult {
            cpu_ns: (share * 1e9) as u64,
            turns: 1,
            last_cpu: 0,
            wall_ns: 1_000_000_000,
            max_gap_ns: 0,
            longest: Gap::default(),
            longest_wait: Gap::default(),
        };
        let even: Vec<_> = (0..10).map(|_| r(0.5)).collect();
        assert!((p10_over_mean(&even) - 1.0).abs() < 1e-9);
        // One starved thread in ten is the p10.
        let mut starved = even.clone();
        starved[3] = r(0.05);
        assert!(p10_over_mean(&starved) < 0.2);
        assert!(error_line("usage\nerror: bad\nmore").contains("bad"));
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
