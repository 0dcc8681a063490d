//! An interactive task among batch work: where LAVD-style latency criticality should beat EEVDF.
//!
//! - The interactive task wakes on an absolute period (a frame, an audio buffer, a control loop),
//!   runs a short burst and sleeps again. Its wake-up latency (timer expiry to running) and its
//!   completion latency (timer expiry to the burst done) are what a user feels.
//! - CPU hogs never sleep: their total work per second is the throughput a scheduler must not
//!   sacrifice for the interactive task.
//! - A parallel batch job: threads doing equal chunks of work between barriers (the slowest
//!   thread sets the pace, so it also shows unfair CPU sharing).

use crate::sys::{now_ns, sleep_until};
use crate::work;
use anyhow::{bail, Result};
use concord_common::hist::Hist;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InteractiveConfig {
    /// Period of the interactive task (µs).
    pub period_us: u64,
    /// Work per period (reductions).
    pub burst_reductions: u64,
    pub hogs: usize,
    pub batch_threads: usize,
    /// Work per batch thread between barriers (reductions).
    pub batch_chunk_reductions: u64,
    pub secs: f64,
    pub warmup_secs: f64,
}

impl InteractiveConfig {
    pub fn validate(&self) -> Result<()> {
        if !(100..=1_000_000).contains(&self.period_us) {
            bail!("--period-us must be between 100 and 1000000");
        }
        if self.hogs + self.batch_threads > 4096 {
            bail!("more than 4096 threads");
        }
        crate::check_secs(self.secs, Some(self.warmup_secs))?;
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InteractiveReport {
    pub config: InteractiveConfig,
    pub secs: f64,
    /// Timer expiry to running (ns).
    pub wake: Hist,
    /// Timer expiry to the burst done (ns).
    pub completion: Hist,
    pub wake_p99_us: f64,
    pub completion_p50_us: f64,
    pub completion_p99_us: f64,
    pub completion_max_us: f64,
    /// Periods whose burst ended after the next period had begun.
    pub missed_periods: u64,
    pub hog_reductions_per_sec: f64,
    pub batch_rounds_per_sec: f64,
}

pub fn run(cfg: InteractiveConfig) -> Result<InteractiveReport> {
    cfg.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let start = now_ns();
    let from = start + (cfg.warmup_secs * 1e9) as u64;
    let to = start + (cfg.secs * 1e9) as u64;
    let hog_work = Arc::new(AtomicU64::new(0));
    let batch_rounds = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    const HOG_CHUNK: u64 = 20_000;
    for i in 0..cfg.hogs {
        let (stop, hog_work) = (stop.clone(), hog_work.clone());
        threads.push(std::thread::spawn(move || {
            let mut state = i as u64 + 1;
            while !stop.load(Ordering::Relaxed) {
                work::reductions(HOG_CHUNK, &mut state);
                let now = now_ns();
                if now >= from && now < to {
                    hog_work.fetch_add(HOG_CHUNK, Ordering::Relaxed);
                }
            }
        }));
    }
    let barrier = Arc::new(Barrier::new(cfg.batch_threads.max(1)));
    // The round's leader decides for everyone whether this was the last round (each thread
    // reading `stop` itself could see it change between them and leave the others waiting).
    let leave = Arc::new(AtomicBool::new(false));
    for i in 0..cfg.batch_threads {
        let (stop, barrier, rounds, leave) = (
            stop.clone(),
            barrier.clone(),
            batch_rounds.clone(),
            leave.clone(),
        );
        let chunk = cfg.batch_chunk_reductions;
        threads.push(std::thread::spawn(move || {
            let mut state = i as u64 + 7;
            loop {
                work::reductions(chunk, &mut state);
                if barrier.wait().is_leader() {
                    let now = now_ns();
                    if now >= from && now < to {
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                    leave.store(stop.load(Ordering::Acquire), Ordering::Release);
                }
                // Written before this barrier, rewritten only after everyone passed the next.
                barrier.wait();
                if leave.load(Ordering::Acquire) {
                    break;
                }
            }
        }));
    }
    let (mut wake, mut completion, mut missed) = (Hist::default(), Hist::default(), 0u64);
    let period = cfg.period_us * 1000;
    let mut state = 3u64;
    let mut next = start + period;
    while next < to {
        sleep_until(next);
        let woke = now_ns();
        work::reductions(cfg.burst_reductions, &mut state);
        let done = now_ns();
        if next >= from {
            wake.record(woke - next);
            completion.record(done - next);
            if done > next + period {
                missed += 1;
            }
        }
        // The next expiry after now: a late period is not made up with a burst of catch-up runs.
        next += period;
        if next < done {
            next += (done - next) / period * period + period;
        }
    }
    stop.store(true, Ordering::Release);
    for t in threads {
        if t.join().is_err() {
            bail!("an interactive-bench thread panicked");
        }
    }
    let secs = cfg.secs - cfg.warmup_secs;
    let us = |h: &Hist, p: f64| h.percentile(p) as f64 / 1e3;
    Ok(InteractiveReport {
        secs,
        wake_p99_us: us(&wake, 99.0),
        completion_p50_us: us(&completion, 50.0),
        completion_p99_us: us(&completion, 99.0),
        completion_max_us: completion.max() as f64 / 1e3,
        missed_periods: missed,
        hog_reductions_per_sec: hog_work.load(Ordering::Relaxed) as f64 / secs,
        batch_rounds_per_sec: batch_rounds.load(Ordering::Relaxed) as f64 / secs,
        wake,
        completion,
        config: cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_hogs_and_batch_all_make_progress() {
        let r = run(InteractiveConfig {
            period_us: 2000,
            burst_reductions: 100,
            hogs: 1,
            batch_threads: 2,
            batch_chunk_reductions: 1000,
            secs: 0.5,
            warmup_secs: 0.1,
        })
        .unwrap();
        // 0.4 s of 2 ms periods: about 200, fewer if the host delayed some (no catch-up).
        assert!(
            (20..=201).contains(&r.completion.count()),
            "{}",
            r.completion.count()
        );
        assert_eq!(r.wake.count(), r.completion.count());
        assert!(r.completion.percentile(50.0) >= r.wake.percentile(50.0));
        assert!(r.hog_reductions_per_sec > 0.0);
        assert!(r.batch_rounds_per_sec > 0.0);
    }
}
