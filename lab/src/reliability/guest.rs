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

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
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
        signal(&self.child, libc::SIGINT);
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

#[derive(Debug, Clone, Copy)]
struct SpinResult {
    cpu_ns: u64,
    wall_ns: u64,
    max_gap_ns: u64,
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
                    barrier.wait();
                    let before = SchedStat::of_current_thread().unwrap_or_default();
                    let start = now_ns();
                    let end = start + (secs * 1e9) as u64;
                    let (mut last, mut max_gap, mut loops) = (start, 0u64, 0u64);
                    loop {
                        let t = now_ns();
                        max_gap = max_gap.max(t - last);
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
                    let after = SchedStat::of_current_thread().unwrap_or_default();
                    SpinResult {
                        cpu_ns: after.since(&before).run_ns,
                        wall_ns: last - start,
                        max_gap_ns: max_gap,
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
    let noise = spin_group(&calib, 3.0, None)
        .iter()
        .map(|r| r.max_gap_ns)
        .max()
        .unwrap_or(0);
    let bound = (p.max_wait_ms + p.slice_max_ms) * 1_000_000 + noise;
    v.note(format!(
        "wait bound = --max-wait-ms {} + one {} ms slice + {:.1} ms host noise (longest gap of lone pinned spinners) = {:.1} ms",
        p.max_wait_ms,
        p.slice_max_ms,
        ms(noise),
        ms(bound)
    ));

    // 1. One pinned spinner per CPU plus as many unpinned: every thread's fair share is 1/2.
    let mut specs: Vec<SpinSpec> = calib.clone();
    specs.extend((0..n).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let r = spin_group(&specs, p.secs, None);
    let even = p10_over_mean(&r);
    let worst = r.iter().map(|x| x.max_gap_ns).max().unwrap_or(0);
    v.note(format!(
        "{n} pinned + {n} unpinned spinners, {:.0} s: CPU share p10/mean {even:.2} (shares {}), longest wait {:.1} ms",
        p.secs,
        r.iter()
            .map(|x| format!("{:.2}", x.share()))
            .collect::<Vec<_>>()
            .join(" "),
        ms(worst)
    ));
    if even < 0.8 {
        v.fail(format!("uneven CPU shares: p10/mean {even:.2} < 0.8"));
    }
    if worst > bound {
        v.fail(format!(
            "a spinner waited {:.1} ms > bound {:.1} ms",
            ms(worst),
            ms(bound)
        ));
    }

    // 2. A task pinned to CPU 0, flooded with unpinned work (3 per CPU).
    let mut specs = vec![SpinSpec {
        cpu: Some(cpus[0]),
        nice: 0,
    }];
    specs.extend((0..3 * n).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let r = spin_group(&specs, p.secs, None);
    let fair = n as f64 / specs.len() as f64;
    v.note(format!(
        "pinned to CPU {} among {} unpinned spinners: share {:.3} (fair {fair:.3}), longest wait {:.1} ms; unpinned longest wait {:.1} ms",
        cpus[0],
        3 * n,
        r[0].share(),
        ms(r[0].max_gap_ns),
        ms(r[1..].iter().map(|x| x.max_gap_ns).max().unwrap_or(0))
    ));
    if r[0].share() < 0.5 * fair {
        v.fail(format!(
            "the pinned task got {:.3} of a CPU, less than half its fair {fair:.3}",
            r[0].share()
        ));
    }
    if let Some(w) = r.iter().map(|x| x.max_gap_ns).max().filter(|&w| w > bound) {
        v.fail(format!(
            "flooded CPU: a spinner waited {:.1} ms > bound",
            ms(w)
        ));
    }

    // 3. A nice-19 task among 2 nice-0 spinners per CPU: it gets little, but it runs.
    let mut specs = vec![SpinSpec {
        cpu: None,
        nice: 19,
    }];
    specs.extend((0..2 * n).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let r = spin_group(&specs, p.secs, None);
    let nice0_mean = r[1..].iter().map(SpinResult::share).sum::<f64>() / (2 * n) as f64;
    v.note(format!(
        "nice 19 among {} nice-0 spinners: share {:.4} (nice 0 mean {nice0_mean:.3}), longest wait {:.1} ms",
        2 * n,
        r[0].share(),
        ms(r[0].max_gap_ns)
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
    if let Some(w) = r.iter().map(|x| x.max_gap_ns).max().filter(|&w| w > bound) {
        v.fail(format!(
            "niced mix: a spinner waited {:.1} ms > bound",
            ms(w)
        ));
    }
    Ok(())
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
            let back = wait_for(Duration::from_secs(30), concord_attached);
            std::thread::sleep(Duration::from_secs_f64(phase_secs));
            let now: Vec<u64> = progress.iter().map(|x| x.load(Ordering::Relaxed)).collect();
            let stuck: Vec<usize> = (0..now.len()).filter(|&i| now[i] == last[i]).collect();
            v.note(format!(
                "CPU {cpu} {}: concord {}, attached again {}; spinners without progress in the next {phase_secs} s: {stuck:?}",
                if on { "online" } else { "offline" },
                left.map(|d| format!("unloaded after {:.1} s", d.as_secs_f64()))
                    .unwrap_or_else(|| "NOT unloaded within 10 s".into()),
                back.map(|d| format!("after {:.1} s", d.as_secs_f64()))
                    .unwrap_or_else(|| "NOT within 30 s".into()),
            ));
            if back.is_none() {
                v.fail(format!(
                    "scx_concord did not re-attach within 30 s after CPU {cpu} went {}",
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
        signal(&c.child, libc::SIGKILL);
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
    signal(&load, libc::SIGINT);
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

/// (utime + stime in clock ticks, VmHWM in KiB) of a process.
fn proc_usage(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let mut status = String::new();
    std::fs::File::open(format!("/proc/{pid}/status"))?.read_to_string(&mut status)?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((ticks, hwm))
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
    let (t0, _) = proc_usage(pid)?;
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
    let (t1, hwm_kib) = proc_usage(pid)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_pct = (t1 - t0) as f64 / hz / secs * 100.0;
    let rss_mib = hwm_kib as f64 / 1024.0;
    v.note(format!(
        "{secs:.0} s under stress-ng (cpu + pipe + affinity, {}): peak RSS {rss_mib:.1} MiB, CPU {cpu_pct:.2} % of one CPU",
        code(load_st)
    ));
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
            wall_ns: 1_000_000_000,
            max_gap_ns: 0,
        };
        let even: Vec<_> = (0..10).map(|_| r(0.5)).collect();
        assert!((p10_over_mean(&even) - 1.0).abs() < 1e-9);
        // One starved thread in ten is the p10.
        let mut starved = even.clone();
        starved[3] = r(0.05);
        assert!(p10_over_mean(&starved) < 0.2);
        assert!(error_line("usage\nerror: bad\nmore").contains("bad"));
    }
}
