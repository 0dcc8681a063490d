//! `cgroup-moves`: under the scheduler the runner started, spinner processes are moved between
//! cpuset cgroups (one CPU, the others, all) and re-pinned with `sched_setaffinity` from
//! outside, every few milliseconds. A task's allowed CPUs change while it runs or waits in a
//! queue: it moves between a pinned queue and a shared one, and must neither be lost there nor
//! run where it may not (the kernel ejects a scheduler that dispatches outside a mask, and the
//! runner reports that). Every spinner must keep progressing within the wait bound after each
//! change, by its run time sampled from outside, and by scx_concord's own count.

use anyhow::{bail, Context, Result};
use concord_workloads::sys::now_ns;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::harness::online_cpus;
use super::spin::{calibrated_bound, judge_waits, ms, QueueWaits};
use super::{GuestParams, Verdict};

use crate::guest::CGROUP_ROOT;
/// How often the mover changes something, and how often each spinner's run time is sampled.
const MOVE_EVERY: Duration = Duration::from_millis(5);
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// A cpuset cgroup under the root, removed when dropped (its tasks moved out first).
struct Cpuset(PathBuf);

impl Cpuset {
    fn new(name: &str, cpus: &str) -> Result<Self> {
        let dir = Path::new(CGROUP_ROOT).join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("cpuset.cpus"), cpus)
            .with_context(|| format!("{}: cpuset.cpus = {cpus}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Cpuset {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(Path::new(CGROUP_ROOT).join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn run_ns(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn set_affinity(pid: u32, cpus: &[u32]) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for ids < 1024;
    // sched_setaffinity reads it only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c as usize, &mut set);
        }
        libc::sched_setaffinity(pid as libc::pid_t, std::mem::size_of_val(&set), &set) == 0
    }
}

pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let cpus = online_cpus()?;
    let n = cpus.len();
    if n < 2 {
        bail!("cgroup-moves needs at least 2 CPUs (got {n})");
    }
    let mut waits = QueueWaits::open()?;
    if let Some(w) = waits.as_mut() {
        w.phase()?;
    }
    let (bound, _) = calibrated_bound(p, &cpus, &mut waits, v)?;
    let controllers = Path::new(CGROUP_ROOT).join("cgroup.subtree_control");
    std::fs::write(&controllers, "+cpuset").context("enabling the cpuset controller")?;
    let first = cpus[0].to_string();
    let rest = cpus[1..]
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let groups = [
        Cpuset::new("concord-one", &first)?,
        Cpuset::new("concord-rest", &rest)?,
    ];
    let root = PathBuf::from(CGROUP_ROOT);
    let targets: Vec<&Path> = vec![&groups[0].0, &groups[1].0, &root];

    // Two spinner processes per CPU (a shell loop: one thread each, so a process move is a
    // task move).
    let mut kids: Vec<Child> = (0..2 * n)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting a spinner")
        })
        .collect::<Result<_>>()?;
    let pids: Vec<u32> = kids.iter().map(Child::id).collect();
    let stop = AtomicBool::new(false);
    let (moves, repins, refused) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let stalls = std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let pid = pids[(x % pids.len() as u64) as usize];
                if (x >> 8) & 1 == 0 {
                    let to = targets[((x >> 16) % targets.len() as u64) as usize];
                    match std::fs::write(to.join("cgroup.procs"), pid.to_string()) {
                        Ok(()) => moves.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                } else {
                    // A random non-empty subset; outside the task's cpuset the kernel refuses.
                    let mask: Vec<u32> = cpus
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| (x >> (24 + i)) & 1 == 1)
                        .map(|(_, &c)| c)
                        .collect();
                    let mask = if mask.is_empty() {
                        vec![cpus[n - 1]]
                    } else {
                        mask
                    };
                    if set_affinity(pid, &mask) {
                        repins.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(MOVE_EVERY);
            }
        });
        // Each spinner's longest time without run-time progress, sampled from outside.
        let mut last: Vec<(u64, u64)> = pids
            .iter()
            .map(|&pid| (run_ns(pid).unwrap_or(0), now_ns()))
            .collect();
        let mut longest = vec![0u64; pids.len()];
        let end = now_ns() + (p.secs * 1e9) as u64;
        while now_ns() < end {
            std::thread::sleep(SAMPLE_EVERY);
            for (i, &pid) in pids.iter().enumerate() {
                let t = now_ns();
                let ran = run_ns(pid).unwrap_or(0);
                if ran != last[i].0 {
                    last[i] = (ran, t);
                } else {
                    longest[i] = longest[i].max(t - last[i].1);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        longest
    });
    let phase = waits.as_mut().map(QueueWaits::phase).transpose()?;
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    drop(groups);
    let worst = stalls.iter().copied().max().unwrap_or(0);
    v.note(format!(
        "{} spinner processes, {:.0} s: {} cpuset moves (one CPU / the rest / all), {} re-pins from outside, {} refused by the kernel (mask outside the cpuset)",
        pids.len(),
        p.secs,
        moves.load(Ordering::Relaxed),
        repins.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    ));
    v.note(format!(
        "longest time without progress per spinner (run time sampled every {} ms): {} ms",
        SAMPLE_EVERY.as_millis(),
        stalls
            .iter()
            .map(|&s| format!("{:.1}", ms(s)))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    if moves.load(Ordering::Relaxed) < 10 || repins.load(Ordering::Relaxed) < 10 {
        v.fail("fewer than 10 moves or re-pins: the check did not exercise anything".into());
    }
    // Sampling adds up to two periods to what it sees.
    let limit = bound + 2 * SAMPLE_EVERY.as_nanos() as u64;
    if worst > limit {
        v.fail(format!(
            "a spinner made no progress for {:.1} ms > {:.1} ms (the bound and two samples)",
            ms(worst),
            ms(limit)
        ));
    }
    judge_waits(v, "cgroup moves", &[], &phase, bound);
    Ok(())
}
