//! `many-threads`: 10,000 threads under the scheduler the runner started: most sleep and wake
//! now and then for a short burst, a dozen per CPU spin, and a fork/exec storm runs beside
//! them. Every thread must make progress and exit when told, every wait stay within the bound
//! (the spinners' by the kernel's count, every task's by scx_concord's), the storm must go on,
//! and scx_concord's memory must stay flat: per-task state lives in BPF task storage, and
//! nothing in user space may grow with the number of tasks.

use anyhow::{Context, Result};
use concord_workloads::sys::now_ns;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::harness::{online_cpus, wait_for};
use super::spin::{
    calibrated_bound, judge_waits, longest_wait, ms, spin_group, QueueWaits, SpinSpec,
};
use super::{GuestParams, Verdict};

const THREADS: usize = 10_000;
/// The load stays within the condition under which the wait bound holds by construction: at
/// most 30 tasks waiting per CPU with the defaults (main.bpf.c; beyond it every further waiter
/// adds a slice_min). Spinners wait all the time; sleepers, by Little's law, add their wake-up
/// rate times their wait: 10,000 waking every SLEEP_MS on average (1,000/s) and waiting up to
/// ~20 ms is ~20 more on 2 CPUs.
const SPINNERS_PER_CPU: usize = 8;
/// A sleeper's naps are uniform in 0..2 x SLEEP_MS; it spins BURST_US when it wakes.
const SLEEP_MS: u64 = 10_000;
const BURST_US: u64 = 50;
/// Each thread's stack: the default 2 MiB times 10,000 would be 20 GiB of address space.
const STACK: usize = 64 * 1024;

/// VmRSS of a process, KiB.
fn rss_kib(pid: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// The runner's scx_concord (None under another scheduler).
fn concord_pid() -> Option<String> {
    let out = Command::new("pgrep")
        .args(["-x", "scx_concord"])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.lines().next().map(|l| l.trim().to_string())
}

struct Sleepers {
    stop: AtomicBool,
    /// Threads that completed at least one sleep-and-burst since `armed` was set.
    progressed: AtomicU64,
    armed: AtomicBool,
    exited: AtomicU64,
    wakes: AtomicU64,
    /// The latest any sleeper woke after its timer was due, ns.
    max_late_ns: AtomicU64,
}

fn sleeper(s: &Sleepers, seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut counted = false;
    while !s.stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Spread evenly so that about THREADS / SLEEP_MS wake per millisecond.
        let nap = Duration::from_micros(x % (2 * SLEEP_MS * 1000));
        let due = now_ns() + nap.as_nanos() as u64;
        std::thread::sleep(nap);
        let woke = now_ns();
        s.max_late_ns
            .fetch_max(woke.saturating_sub(due), Ordering::Relaxed);
        s.wakes.fetch_add(1, Ordering::Relaxed);
        while now_ns() - woke < BURST_US * 1000 {
            std::hint::spin_loop();
        }
        if !counted && s.armed.load(Ordering::Relaxed) {
            counted = true;
            s.progressed.fetch_add(1, Ordering::Relaxed);
        }
    }
    s.exited.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let cpus = online_cpus()?;
    let n = cpus.len();
    let mut waits = QueueWaits::open()?;
    if let Some(w) = waits.as_mut() {
        w.phase()?;
    }
    let (bound, _) = calibrated_bound(p, &cpus, &mut waits, v)?;
    let pid = concord_pid();
    let rss0 = pid.as_deref().map(rss_kib).transpose()?;

    // 1. Create the sleepers.
    let s = Arc::new(Sleepers {
        stop: AtomicBool::new(false),
        progressed: AtomicU64::new(0),
        armed: AtomicBool::new(false),
        exited: AtomicU64::new(0),
        wakes: AtomicU64::new(0),
        max_late_ns: AtomicU64::new(0),
    });
    let t0 = Instant::now();
    let mut created = 0;
    let mut spawn_error = None;
    for i in 0..THREADS {
        let s = s.clone();
        match std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || sleeper(&s, i as u64 + 1))
        {
            Ok(_) => created += 1,
            Err(e) => {
                spawn_error = Some(e.to_string());
                break;
            }
        }
    }
    let create_secs = t0.elapsed().as_secs_f64();
    v.note(format!(
        "{created} sleeping threads created in {create_secs:.1} s (64 KiB stacks; each wakes every 0-{} s for a {BURST_US} us burst){}",
        2 * SLEEP_MS / 1000,
        spawn_error
            .as_ref()
            .map(|e| format!("; creation failed: {e}"))
            .unwrap_or_default()
    ));
    if created < THREADS {
        v.fail(format!(
            "only {created} of {THREADS} threads could be created"
        ));
    }

    // 2. The measured phase: spinners and the fork/exec storm beside the sleepers. Long enough
    //    for every sleeper to wake at least once (its longest nap is 2 x SLEEP_MS).
    s.armed.store(true, Ordering::Relaxed);
    let secs = p.secs.max(2.0 * SLEEP_MS as f64 / 1000.0 + 2.0);
    let storm_stop = Arc::new(AtomicBool::new(false));
    // exec of a static binary (a dynamic one spends its time under TCG loading libraries),
    // and beside it threads created and joined one after another.
    let exec = if std::path::Path::new("/bin/busybox").exists() {
        vec!["/bin/busybox", "true"]
    } else {
        vec!["true"]
    };
    let clones = {
        let stop = storm_stop.clone();
        std::thread::spawn(move || {
            let mut made = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if std::thread::Builder::new()
                    .stack_size(STACK)
                    .spawn(|| {})
                    .is_ok_and(|h| h.join().is_ok())
                {
                    made += 1;
                }
            }
            made
        })
    };
    let storm = {
        let stop = storm_stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match Command::new(exec[0])
                    .args(&exec[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                {
                    Ok(st) if st.success() => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    let wakes0 = s.wakes.load(Ordering::Relaxed);
    let specs: Vec<SpinSpec> = (0..SPINNERS_PER_CPU * n)
        .map(|_| SpinSpec { cpu: None, nice: 0 })
        .collect();
    let r = spin_group(&specs, secs, None);
    storm_stop.store(true, Ordering::Relaxed);
    let (execs, exec_failures) = storm.join().unwrap();
    let cloned = clones.join().unwrap();
    let phase = waits.as_mut().map(QueueWaits::phase).transpose()?;
    let wakes = s.wakes.load(Ordering::Relaxed) - wakes0;
    let progressed = s.progressed.load(Ordering::Relaxed);

    // 3. Every sleeper is told to stop and must exit (its longest nap and some).
    s.stop.store(true, Ordering::Relaxed);
    let limit = Duration::from_millis(2 * SLEEP_MS) + Duration::from_secs(60);
    let all_out = wait_for(limit, || s.exited.load(Ordering::Relaxed) == created as u64);
    let rss1 = pid.as_deref().map(rss_kib).transpose()?;
    v.note(format!(
        "{:.0} s with {} spinners ({SPINNERS_PER_CPU} per CPU), a fork/exec storm ({execs} runs of `true`, {exec_failures} failed, {:.0}/s) and {cloned} threads created and joined: {wakes} sleeper wake-ups, {progressed} of {created} sleepers woke and ran at least once, the latest wake-up {:.1} ms after its timer",
        secs,
        specs.len(),
        execs as f64 / secs,
        ms(s.max_late_ns.load(Ordering::Relaxed))
    ));
    v.note(format!(
        "told to stop: {} of {created} exited {}",
        s.exited.load(Ordering::Relaxed),
        all_out
            .map(|d| format!("within {:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| format!("(NOT all within {:.0} s)", limit.as_secs_f64()))
    ));
    if progressed < created as u64 {
        v.fail(format!(
            "{} sleepers never woke and ran in {secs:.0} s",
            created as u64 - progressed
        ));
    }
    if all_out.is_none() {
        v.fail("threads did not exit when told".into());
    }
    if execs == 0 || exec_failures > 0 || cloned == 0 {
        v.fail(format!(
            "the storm: {execs} execs, {exec_failures} failed, {cloned} threads"
        ));
    }
    // Waits by the kernel's run delay inside the spinners' longest single-wait gaps, and by
    // scx_concord's count of every task; not the gaps themselves: with 10,000 timers, a CPU
    // spends long stretches in interrupts waking sleepers (every wake-up runs the scheduler's
    // callbacks there), time that is neither the spinner's wait nor its run.
    let waited = r
        .iter()
        .map(|x| x.longest_wait.waited_ns)
        .max()
        .unwrap_or(0);
    judge_waits(v, "10,000 threads", &[], &phase, bound);
    let gap = longest_wait(&r);
    v.note(format!(
        "    spinners' longest single-wait gap {}; the most the kernel counted waiting in such a gap {:.1} ms",
        gap.describe(),
        ms(waited)
    ));
    if waited > bound {
        v.fail(format!(
            "10,000 threads: a spinner waited {:.1} ms (kernel run delay) > bound {:.1} ms",
            ms(waited),
            ms(bound)
        ));
    }
    if let (Some(a), Some(b)) = (rss0, rss1) {
        v.note(format!(
            "scx_concord's RSS {:.1} MiB before the threads, {:.1} MiB after",
            a as f64 / 1024.0,
            b as f64 / 1024.0
        ));
        // Flat: a few MiB of allocator slack, not anything per task (10,000 tasks x even a
        // few hundred bytes would show).
        if b > a + 4 * 1024 {
            v.fail(format!(
                "scx_concord's RSS grew by {:.1} MiB with 10,000 threads",
                (b - a) as f64 / 1024.0
            ));
        }
    }
    Ok(())
}
