//! `affinity`: no task runs outside its allowed CPUs while masks change under load.

use anyhow::Result;
use concord_workloads::sys::{now_ns, set_current_thread_cpus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::harness::{code, online_cpus, stress, wait_child};
use super::{GuestParams, Verdict};

/// Tasks never run outside their allowed CPUs, while masks change under load.
pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
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
