//! `hotplug`: CPUs go offline and online under load; no task is lost, the scheduler comes back.

use anyhow::{bail, Context, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::harness::{concord_attached, online_cpus, run_dir, wait_for};
use super::spin::{spin_group, Progress, SpinSpec};
use super::{GuestParams, Verdict};
use crate::guest::sched_state;

fn set_online(cpu: u32, on: bool) -> Result<()> {
    std::fs::write(
        format!("/sys/devices/system/cpu/cpu{cpu}/online"),
        if on { "1" } else { "0" },
    )
    .with_context(|| format!("setting CPU {cpu} online={on}"))
}

/// How long scx_concord may take to come back after a hotplug unloaded it: the kernel's exit,
/// the restart and a whole load and attach. Loading verifies the BPF program again, which
/// under TCG, with 4 vCPUs on 2 host cores and the spinners running on all of them (they run
/// through every step), takes about a minute. A lost re-attach still fails.
const REATTACH_SECS: u64 = 150;

/// The spinners' own time limit, only a backstop: the check stops them.
const SPIN_LIMIT_SECS: f64 = 900.0;

/// CPUs go offline and online under load: no task is lost, the scheduler comes back.
pub(super) fn run(_p: &GuestParams, v: &mut Verdict) -> Result<()> {
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
    let steps = [(a, false), (b, false), (b, true), (a, true)];
    let phase_secs = 2.0;
    // The spinners run until every step is done and one phase after it, however long the
    // re-attaches take: a spinner that stops making progress at any step fails it, and one
    // that does not finish when told to is lost (its thread is left behind, not waited for).
    let progress = Arc::new(Progress::new(specs.len()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (specs, progress) = (specs.clone(), progress.clone());
        std::thread::spawn(move || {
            let _ = tx.send(spin_group(&specs, SPIN_LIMIT_SECS, Some(&progress)));
        });
    }
    std::thread::sleep(Duration::from_secs_f64(phase_secs));
    let mut last = progress.snapshot();
    for (cpu, on) in steps {
        set_online(cpu, on)?;
        // The kernel unloads the scheduler (asynchronously); then it must come back.
        let left = wait_for(Duration::from_secs(10), || !concord_attached());
        let back = wait_for(Duration::from_secs(REATTACH_SECS), concord_attached);
        std::thread::sleep(Duration::from_secs_f64(phase_secs));
        let now = progress.snapshot();
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
        if !stuck.is_empty() {
            v.fail(format!("spinners {stuck:?} made no progress"));
        }
        last = now;
    }
    progress.stop.store(true, Ordering::Relaxed);
    let finished = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(r) => r.iter().filter(|x| x.wall_ns > 0).count(),
        Err(_) => {
            let now = progress.snapshot();
            v.fail(format!(
                "spinners did not finish within 30 s of being told to (loops since the last step: {:?})",
                (0..now.len()).map(|i| now[i] - last[i]).collect::<Vec<_>>()
            ));
            0
        }
    };
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
