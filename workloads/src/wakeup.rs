//! Wake-up latency of message/worker thread groups (schbench's shape, written for the lab).
//!
//! Each message thread posts a request to each of its workers (timestamp, then a futex wake)
//! and sleeps until the last of them is done; each worker measures how long after the post it
//! got a CPU (the wake-up latency: the scheduler's choice of CPU and its queueing), does a short
//! burst of work and reports back. With more workers than CPUs every round queues, so the
//! latency shows how a scheduler orders short wakers against each other and against the message
//! threads. Closed loop: requests per second is the throughput.

use crate::sys::{futex_wait, futex_wake, now_ns};
use crate::work;
use anyhow::{bail, Result};
use concord_common::hist::Hist;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WakeupConfig {
    pub message_threads: usize,
    pub workers_per_message: usize,
    /// Work per request (reductions; one is ~16 ns in the lab's guests).
    pub burst_reductions: u64,
    pub secs: f64,
    /// Seconds at the start that are not measured.
    pub warmup_secs: f64,
}

impl WakeupConfig {
    pub fn validate(&self) -> Result<()> {
        if self.message_threads == 0 || self.workers_per_message == 0 {
            bail!("--message-threads and --workers must be at least 1");
        }
        if self.message_threads * (self.workers_per_message + 1) > 4096 {
            bail!("more than 4096 threads");
        }
        crate::check_secs(self.secs, Some(self.warmup_secs))?;
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WakeupReport {
    pub config: WakeupConfig,
    /// Measured seconds (after the warm-up).
    pub secs: f64,
    /// Worker requests completed per second.
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Wake-up latencies of the measured requests (ns).
    pub latency: Hist,
}

struct Worker {
    /// Bumped by the message thread for each request; the futex word the worker sleeps on.
    seq: AtomicU32,
    posted_ns: AtomicU64,
}

struct Group {
    workers: Vec<Worker>,
    /// Workers still busy with the current round.
    pending: AtomicU32,
    /// Bumped when a round completes; the futex word the message thread sleeps on.
    done: AtomicU32,
    /// Set by the group's message thread after its last round (per group: a worker never
    /// leaves a round of its own group unfinished).
    stop: AtomicBool,
}

pub fn run(cfg: WakeupConfig) -> Result<WakeupReport> {
    cfg.validate()?;
    let start = now_ns();
    let measure_from = start + (cfg.warmup_secs * 1e9) as u64;
    let measure_to = start + (cfg.secs * 1e9) as u64;
    let completed = Arc::new(AtomicU64::new(0));
    let merged = Arc::new(Mutex::new(Hist::default()));
    let mut threads = Vec::new();
    for _ in 0..cfg.message_threads {
        let group = Arc::new(Group {
            workers: (0..cfg.workers_per_message)
                .map(|_| Worker {
                    seq: AtomicU32::new(0),
                    posted_ns: AtomicU64::new(0),
                })
                .collect(),
            pending: AtomicU32::new(0),
            done: AtomicU32::new(0),
            stop: AtomicBool::new(false),
        });
        for w in 0..cfg.workers_per_message {
            let (group, completed, merged) = (group.clone(), completed.clone(), merged.clone());
            let burst = cfg.burst_reductions;
            threads.push(std::thread::spawn(move || {
                let me = &group.workers[w];
                let mut hist = Hist::default();
                let mut seen = 0u32;
                let mut state = w as u64 + 1;
                loop {
                    let mut seq = me.seq.load(Ordering::Acquire);
                    while seq == seen && !group.stop.load(Ordering::Acquire) {
                        futex_wait(&me.seq, seen);
                        seq = me.seq.load(Ordering::Acquire);
                    }
                    if group.stop.load(Ordering::Acquire) {
                        break;
                    }
                    seen = seq;
                    let woke = now_ns();
                    let posted = me.posted_ns.load(Ordering::Acquire);
                    let measured = posted >= measure_from && posted < measure_to;
                    if measured {
                        hist.record(woke.saturating_sub(posted));
                    }
                    work::reductions(burst, &mut state);
                    if measured {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    if group.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                        group.done.fetch_add(1, Ordering::Release);
                        futex_wake(&group.done, 1);
                    }
                }
                merged.lock().unwrap().merge(&hist);
            }));
        }
        threads.push(std::thread::spawn(move || {
            while now_ns() < measure_to {
                let round = group.done.load(Ordering::Acquire);
                group
                    .pending
                    .store(group.workers.len() as u32, Ordering::Release);
                for w in &group.workers {
                    w.posted_ns.store(now_ns(), Ordering::Release);
                    w.seq.fetch_add(1, Ordering::AcqRel);
                    futex_wake(&w.seq, 1);
                }
                while group.done.load(Ordering::Acquire) == round {
                    futex_wait(&group.done, round);
                }
            }
            group.stop.store(true, Ordering::Release);
            for w in &group.workers {
                w.seq.fetch_add(1, Ordering::AcqRel);
                futex_wake(&w.seq, 1);
            }
        }));
    }
    for t in threads {
        if t.join().is_err() {
            bail!("a wakeup-bench thread panicked");
        }
    }
    let latency = Arc::try_unwrap(merged)
        .map_err(|_| anyhow::anyhow!("histogram still shared"))?
        .into_inner()
        .unwrap();
    let secs = cfg.secs - cfg.warmup_secs;
    let us = |p: f64| latency.percentile(p) as f64 / 1e3;
    Ok(WakeupReport {
        secs,
        requests_per_sec: completed.load(Ordering::Relaxed) as f64 / secs,
        p50_us: us(50.0),
        p99_us: us(99.0),
        p999_us: us(99.9),
        max_us: latency.max() as f64 / 1e3,
        latency,
        config: cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measured_request_has_a_latency() {
        let r = run(WakeupConfig {
            message_threads: 2,
            workers_per_message: 3,
            burst_reductions: 100,
            secs: 0.4,
            warmup_secs: 0.1,
        })
        .unwrap();
        assert!(r.latency.count() > 10, "{} requests", r.latency.count());
        // Every measured request is completed: no round is left unfinished at the end.
        let done = (r.requests_per_sec * r.secs).round() as u64;
        assert_eq!(done, r.latency.count());
        assert!(r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
    }

    #[test]
    fn bad_config_is_refused() {
        let mut c = WakeupConfig {
            message_threads: 1,
            workers_per_message: 0,
            burst_reductions: 1,
            secs: 1.0,
            warmup_secs: 0.0,
        };
        assert!(run(c.clone()).is_err());
        c.workers_per_message = 1;
        c.warmup_secs = 1.0;
        assert!(c.validate().is_err());
    }
}
