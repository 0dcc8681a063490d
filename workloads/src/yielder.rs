//! yield-probe: what a yield gives away. An idle worker polls for work with `sched_yield()`
//! between polls (as ERTS schedulers spin before they sleep) on the same CPU as a CPU hog; both
//! are pinned there. Two things should hold, and each can fail on its own:
//! - the yield yields: the hog, the one with work, gets nearly all of the CPU (a yielder that
//!   is taken back at once keeps it for itself);
//! - the poller looks again soon: when a yield gave the CPU away (the thread was switched out:
//!   its involuntary context switches went up), the time until its next poll (the hog's turn)
//!   stays short, so work that arrives for it does not wait a whole slice of the hog.

use crate::sys::{now_ns, pin_current_thread, SchedStat};
use anyhow::{bail, Context, Result};
use concord_common::hist::Hist;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct YieldConfig {
    /// The CPU both threads are pinned to.
    pub cpu: usize,
    pub secs: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct YieldReport {
    pub config: Option<YieldConfig>,
    pub polls: u64,
    /// Yields that gave the CPU away (the poller was switched out).
    pub handoffs: u64,
    /// From such a yield to the poller's next poll, µs.
    pub gap_p50_us: f64,
    pub gap_p99_us: f64,
    pub gap_max_us: f64,
    /// Share of the CPU each thread ran (schedstat run time over the wall time).
    pub hog_share: f64,
    pub yielder_share: f64,
    pub gaps: Hist,
}

impl YieldReport {
    fn from_gaps(gaps: Hist, polls: u64, hog_share: f64, yielder_share: f64) -> Self {
        let us = |ns: u64| ns as f64 / 1e3;
        Self {
            config: None,
            polls,
            handoffs: gaps.count(),
            gap_p50_us: us(gaps.percentile(50.0)),
            gap_p99_us: us(gaps.percentile(99.0)),
            gap_max_us: us(gaps.max()),
            hog_share,
            yielder_share,
            gaps,
        }
    }
}

/// The calling thread's involuntary context switches so far (a yield that switched counts
/// here: the thread was still runnable).
fn involuntary_switches() -> i64 {
    // SAFETY: getrusage writes only into the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u.ru_nivcsw
    }
}

pub fn run(cfg: YieldConfig) -> Result<YieldReport> {
    crate::check_secs(cfg.secs, None)?;
    let cpus = crate::sys::allowed_cpus()?;
    if !cpus.contains(&cfg.cpu) {
        bail!(
            "--cpu {} is not one of this process's CPUs {cpus:?}",
            cfg.cpu
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = cfg.cpu;
    let hog = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<SchedStat> {
            pin_current_thread(cpu)?;
            let s0 = SchedStat::of_current_thread().context("schedstat")?;
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..1000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
            }
            Ok(SchedStat::of_current_thread()
                .context("schedstat")?
                .since(&s0))
        })
    };
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<(Hist, u64, SchedStat)> {
            pin_current_thread(cpu)?;
            let s0 = SchedStat::of_current_thread().context("schedstat")?;
            let mut gaps = Hist::default();
            let mut polls = 0u64;
            let mut switches = involuntary_switches();
            while !stop.load(Ordering::Relaxed) {
                let t0 = now_ns();
                // SAFETY: sched_yield takes no arguments and cannot fail in a way that matters.
                unsafe { libc::sched_yield() };
                let t = now_ns();
                let s = involuntary_switches();
                if s != switches {
                    gaps.record(t.saturating_sub(t0));
                }
                switches = s;
                polls += 1;
            }
            let st = SchedStat::of_current_thread()
                .context("schedstat")?
                .since(&s0);
            Ok((gaps, polls, st))
        })
    };
    let t0 = now_ns();
    std::thread::sleep(Duration::from_secs_f64(cfg.secs));
    stop.store(true, Ordering::Relaxed);
    let wall = (now_ns() - t0) as f64;
    let hog_st = hog.join().map_err(|_| anyhow::anyhow!("hog panicked"))??;
    let (gaps, polls, y_st) = poller
        .join()
        .map_err(|_| anyhow::anyhow!("poller panicked"))??;
    let mut r = YieldReport::from_gaps(
        gaps,
        polls,
        hog_st.run_ns as f64 / wall,
        y_st.run_ns as f64 / wall,
    );
    r.config = Some(cfg);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_shares_are_reported_as_measured() {
        let mut h = Hist::default();
        for _ in 0..99 {
            h.record(500_000);
        }
        h.record(4_000_000);
        let r = YieldReport::from_gaps(h, 100, 0.9, 0.05);
        assert!(
            r.gap_p50_us >= 450.0 && r.gap_p50_us <= 560.0,
            "{}",
            r.gap_p50_us
        );
        assert!(r.gap_max_us >= 3_900.0, "{}", r.gap_max_us);
        assert_eq!((r.polls, r.handoffs), (100, 100));
        assert_eq!(r.hog_share, 0.9);
    }

    #[test]
    fn both_threads_run_and_the_poller_polls() {
        let cpu = crate::sys::allowed_cpus().unwrap()[0];
        let r = run(YieldConfig { cpu, secs: 0.3 }).unwrap();
        assert!(r.polls > 0);
        assert!(r.hog_share > 0.0 && r.yielder_share > 0.0, "{r:?}");
        assert!(r.hog_share + r.yielder_share <= 1.1, "one CPU: {r:?}");
        assert!(run(YieldConfig {
            cpu: 100_000,
            secs: 0.1
        })
        .is_err());
    }
}
