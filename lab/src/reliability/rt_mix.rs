//! `rt-mix`: a SCHED_FIFO thread takes the last CPU in bursts beside sched_ext load (one
//! unpinned spinner per CPU, one spinner pinned to the RT thread's CPU), under the scheduler
//! the runner started. A task sitting in that CPU's local run queue when the RT burst starts
//! would wait the whole burst unless the scheduler hands it back (ops.cpu_release): the
//! unpinned spinners must keep every wait within the bound, the pinned one within a burst plus
//! the bound, and the scheduler must stay attached (the runner checks that).

use anyhow::{bail, Result};
use concord_workloads::sys::{now_ns, pin_current_thread};
use std::time::Duration;

use super::harness::online_cpus;
use super::spin::{
    calibrated_bound, judge_waits, longest_wait, ms, spin_group, QueueWaits, SpinSpec,
};
use super::{GuestParams, Verdict};

/// The RT thread's bursts and the pauses between them: far longer than the wait bound (a task
/// stuck behind one fails), well inside the kernel's RT throttling (950 ms per second).
const BURST_MS: u64 = 150;
const PAUSE_MS: u64 = 100;
const RT_PRIORITY: i32 = 50;

/// Spins in SCHED_FIFO bursts on @cpu until @end_ns; returns (bursts, CPU ns it spun).
fn rt_bursts(cpu: u32, end_ns: u64) -> Result<(u64, u64)> {
    pin_current_thread(cpu as usize)?;
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: sched_setscheduler on the calling thread (0) with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        bail!(
            "sched_setscheduler(SCHED_FIFO): {}",
            std::io::Error::last_os_error()
        );
    }
    let (mut bursts, mut spun) = (0, 0);
    while now_ns() < end_ns {
        let t0 = now_ns();
        while now_ns() - t0 < BURST_MS * 1_000_000 {
            std::hint::spin_loop();
        }
        spun += now_ns() - t0;
        bursts += 1;
        std::thread::sleep(Duration::from_millis(PAUSE_MS));
    }
    Ok((bursts, spun))
}

pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let cpus = online_cpus()?;
    if cpus.len() < 2 {
        bail!("rt-mix needs at least 2 CPUs (got {})", cpus.len());
    }
    let rt_cpu = *cpus.last().unwrap();
    let mut waits = QueueWaits::open()?;
    if let Some(w) = waits.as_mut() {
        w.phase()?;
    }
    let (bound, _) = calibrated_bound(p, &cpus, &mut waits, v)?;
    let pinned_bound = bound + BURST_MS * 1_000_000;
    v.note(format!(
        "for the task pinned to the RT CPU one {BURST_MS} ms burst more: {:.1} ms",
        ms(pinned_bound)
    ));

    // One unpinned spinner per CPU, one pinned to the RT CPU, and the RT bursts.
    let mut specs: Vec<SpinSpec> = cpus
        .iter()
        .map(|_| SpinSpec { cpu: None, nice: 0 })
        .collect();
    specs.push(SpinSpec {
        cpu: Some(rt_cpu),
        nice: 0,
    });
    let end = now_ns() + (p.secs * 1e9) as u64;
    let (r, rt) = std::thread::scope(|s| {
        let rt = s.spawn(|| rt_bursts(rt_cpu, end));
        let r = spin_group(&specs, p.secs, None);
        (r, rt.join().unwrap())
    });
    let phase = waits.as_mut().map(QueueWaits::phase).transpose()?;
    let (bursts, spun) = rt?;
    let unpinned = &r[..cpus.len()];
    let pinned = &r[cpus.len()];
    v.note(format!(
        "SCHED_FIFO thread on CPU {rt_cpu}: {bursts} bursts of {BURST_MS} ms every {} ms, {:.2} of its CPU over {:.0} s",
        BURST_MS + PAUSE_MS,
        spun as f64 / (p.secs * 1e9),
        p.secs
    ));
    v.note(format!(
        "unpinned spinners: shares {}, longest single wait {:.1} ms; pinned to CPU {rt_cpu}: share {:.3}, longest single wait {:.1} ms",
        unpinned
            .iter()
            .map(|x| format!("{:.2}", x.share()))
            .collect::<Vec<_>>()
            .join(" "),
        ms(longest_wait(unpinned).ns),
        pinned.share(),
        ms(pinned.longest_wait.ns)
    ));
    if bursts < 3 {
        v.fail(format!(
            "the RT thread ran {bursts} bursts: the check did not exercise anything"
        ));
    }
    // The unpinned spinners against the bound (and, as evidence, the scheduler's own count,
    // which also holds the pinned spinner's waits behind the bursts).
    judge_waits(v, "unpinned beside RT bursts", unpinned, &None, bound);
    if let Some(w) = &phase {
        v.note(format!("    {}", w.describe()));
        if w.shared_ns > bound {
            v.fail(format!(
                "scx_concord's longest LLC-queue wait up to {:.1} ms > bound {:.1} ms",
                ms(w.shared_ns),
                ms(bound)
            ));
        }
        if w.pinned_ns > pinned_bound {
            v.fail(format!(
                "scx_concord's longest pinned-queue wait up to {:.1} ms > {:.1} ms",
                ms(w.pinned_ns),
                ms(pinned_bound)
            ));
        }
    }
    if pinned.cpu_ns == 0 {
        v.fail("the task pinned to the RT CPU never ran".into());
    }
    if pinned.longest_wait.ns > pinned_bound {
        v.fail(format!(
            "the task pinned to the RT CPU waited {:.1} ms > {:.1} ms",
            ms(pinned.longest_wait.ns),
            ms(pinned_bound)
        ));
    }
    Ok(())
}
