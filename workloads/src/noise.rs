//! Competing load for the outage scenario, unpinned:
//! - rings of threads passing tokens over pipes, each hop a short burst of work: they wake
//!   often and wake each other, exactly what a LAVD-style scheduler rates latency-critical;
//! - CPU hogs that never sleep.
//!
//! Both report how much they got done, so a scheduler that helps the pinned runtime by
//! starving everyone else shows it.

use crate::sys;
use crate::work;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NoiseConfig {
    pub rings: usize,
    pub ring_size: usize,
    pub tokens_per_ring: usize,
    /// Work per hop.
    pub hop_reductions: u64,
    pub hogs: usize,
    pub secs: f64,
    /// Laps per second each ring is held to (0: as fast as it goes). Unpaced, a ring with two
    /// tokens is a CPU-bound pipeline that only looks latency-critical; paced, it is a chatty
    /// service with a bounded demand (its first thread waits for the next lap's time).
    #[serde(default)]
    pub ring_laps_per_sec: f64,
}

impl NoiseConfig {
    pub fn validate(&self) -> Result<()> {
        if self.rings > 0 && self.ring_size < 2 {
            bail!("--ring-size must be at least 2");
        }
        if self.rings > 0 && !(1..self.ring_size).contains(&self.tokens_per_ring) {
            bail!("--tokens must be between 1 and ring size - 1");
        }
        if self.rings * self.ring_size + self.hogs > 4096 {
            bail!("more than 4096 threads");
        }
        if !(self.ring_laps_per_sec.is_finite() && self.ring_laps_per_sec >= 0.0) {
            bail!("--ring-laps must be a rate of at least 0 laps per second");
        }
        crate::check_secs(self.secs, None)?;
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NoiseReport {
    pub config: NoiseConfig,
    pub secs: f64,
    pub hops_per_sec: f64,
    /// Reductions per second over all hogs.
    pub hog_reductions_per_sec: f64,
    /// The slowest hog's share of the mean hog (1.0 = all equal).
    pub hog_min_over_mean: f64,
    /// CPU time the ring threads got, in CPUs (seconds on CPU per second of the run, from their
    /// schedstat): who got the machine, beside how much work it did.
    #[serde(default)]
    pub rings_cpus: f64,
    /// CPU time the hogs got, in CPUs.
    #[serde(default)]
    pub hogs_cpus: f64,
}

/// Join noise threads, each returning its CPU time, and sum it.
fn join_cpu_ns(threads: Vec<std::thread::JoinHandle<Result<u64>>>) -> Result<u64> {
    let mut ns = 0;
    for t in threads {
        ns += t
            .join()
            .map_err(|_| anyhow::anyhow!("a noise thread panicked"))?
            .context("noise thread")?;
    }
    Ok(ns)
}

/// The calling thread's CPU time so far (schedstat), 0 if unreadable.
fn own_cpu_ns() -> u64 {
    sys::SchedStat::of_current_thread().map_or(0, |s| s.run_ns)
}

const EXIT: u8 = 0xff;
const TOKEN: u8 = 1;

fn pipe() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Run the load for `cfg.secs`, or until `until` is set (the caller's stop signal: the load
/// beside a workload whose length is not known in advance, such as a VM starting up under
/// -icount, lasts exactly as long as that workload). The report covers the time it ran.
pub fn run(cfg: NoiseConfig, until: &AtomicBool) -> Result<NoiseReport> {
    cfg.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let hops = Arc::new(AtomicU64::new(0));
    let (mut ring_threads, mut hog_threads) = (Vec::new(), Vec::new());
    let mut wakers = Vec::new(); // a write end per ring thread, to tell it to exit

    for r in 0..cfg.rings {
        let pipes: Vec<(File, File)> = (0..cfg.ring_size).map(|_| pipe()).collect::<Result<_>>()?;
        let (reads, writes): (Vec<File>, Vec<File>) = pipes.into_iter().unzip();
        for w in &writes {
            wakers.push(w.try_clone()?);
        }
        for t in 0..cfg.tokens_per_ring {
            // Spread the tokens around the ring.
            let at = t * cfg.ring_size / cfg.tokens_per_ring;
            (&writes[at]).write_all(&[TOKEN])?;
        }
        let mut writes: Vec<Option<File>> = writes.into_iter().map(Some).collect();
        for (i, mut rd) in reads.into_iter().enumerate() {
            let mut next = writes[(i + 1) % cfg.ring_size]
                .as_ref()
                .unwrap()
                .try_clone()?;
            let hops = hops.clone();
            let work_n = cfg.hop_reductions;
            // The first thread of a paced ring passes each token on at the lap's time.
            let lap_ns = if i == 0 && cfg.ring_laps_per_sec > 0.0 {
                (1e9 / cfg.ring_laps_per_sec) as u64
            } else {
                0
            };
            ring_threads.push(
                std::thread::Builder::new()
                    .name(format!("ring{r}-{i}"))
                    .spawn(move || -> Result<u64> {
                        let mut b = [0u8; 1];
                        let mut state = i as u64 + 1;
                        let mut lap_at = sys::now_ns();
                        loop {
                            rd.read_exact(&mut b)?;
                            if b[0] == EXIT {
                                return Ok(own_cpu_ns());
                            }
                            work::reductions(work_n, &mut state);
                            hops.fetch_add(1, Ordering::Relaxed);
                            if lap_ns > 0 {
                                // Late laps are not made up: a slow ring is not a burst later.
                                lap_at = (lap_at + lap_ns).max(sys::now_ns());
                                sys::sleep_until(lap_at);
                            }
                            // The next thread may have exited already at the end.
                            if next.write_all(&[TOKEN]).is_err() {
                                return Ok(own_cpu_ns());
                            }
                        }
                    })?,
            );
        }
        for w in writes.iter_mut() {
            w.take();
        }
    }

    let hog_counts: Vec<Arc<AtomicU64>> =
        (0..cfg.hogs).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for (i, c) in hog_counts.iter().enumerate() {
        let (stop, c) = (stop.clone(), c.clone());
        hog_threads.push(std::thread::Builder::new().name(format!("hog{i}")).spawn(
            move || -> Result<u64> {
                let mut state = i as u64 + 7;
                while !stop.load(Ordering::Relaxed) {
                    work::reductions(1000, &mut state);
                    c.fetch_add(1000, Ordering::Relaxed);
                }
                Ok(own_cpu_ns())
            },
        )?);
    }

    let t0 = sys::now_ns();
    let hops0 = hops.load(Ordering::Relaxed);
    let end = t0 + (cfg.secs * 1e9) as u64;
    while !until.load(Ordering::Relaxed) {
        let now = sys::now_ns();
        if now >= end {
            break;
        }
        std::thread::sleep(Duration::from_nanos((end - now).min(20_000_000)));
    }
    let secs = (sys::now_ns() - t0) as f64 / 1e9;
    let hop_n = hops.load(Ordering::Relaxed) - hops0;
    let hog_n: Vec<u64> = hog_counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    stop.store(true, Ordering::Relaxed);
    for mut w in wakers {
        let _ = w.write_all(&[EXIT]);
    }
    let ring_ns = join_cpu_ns(ring_threads)?;
    let hog_ns = join_cpu_ns(hog_threads)?;
    let total: u64 = hog_n.iter().sum();
    let mean = total as f64 / hog_n.len().max(1) as f64;
    Ok(NoiseReport {
        config: cfg,
        secs,
        hops_per_sec: hop_n as f64 / secs,
        hog_reductions_per_sec: total as f64 / secs,
        hog_min_over_mean: if mean > 0.0 {
            *hog_n.iter().min().unwrap() as f64 / mean
        } else {
            0.0
        },
        rings_cpus: ring_ns as f64 / 1e9 / secs,
        hogs_cpus: hog_ns as f64 / 1e9 / secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_pass_tokens_and_hogs_work_then_all_exit() {
        let r = run(
            NoiseConfig {
                rings: 2,
                ring_size: 3,
                tokens_per_ring: 2,
                hop_reductions: 10,
                hogs: 2,
                secs: 0.3,
                ring_laps_per_sec: 0.0,
            },
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(r.hops_per_sec > 100.0, "{r:?}");
        assert!(r.hog_reductions_per_sec > 0.0);
        assert!(r.hog_min_over_mean > 0.0 && r.hog_min_over_mean <= 1.0);
        assert!(r.hogs_cpus > 0.0 && r.rings_cpus > 0.0, "{r:?}");
    }

    #[test]
    fn a_stop_ends_the_run_before_its_secs_and_reports_the_time_it_ran() {
        let until = Arc::new(AtomicBool::new(false));
        let u = until.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            u.store(true, Ordering::Relaxed);
        });
        let cfg = NoiseConfig {
            rings: 1,
            ring_size: 2,
            tokens_per_ring: 1,
            hop_reductions: 10,
            hogs: 1,
            secs: 60.0,
            ring_laps_per_sec: 0.0,
        };
        let r = run(cfg, &until).unwrap();
        stopper.join().unwrap();
        assert!(r.secs >= 0.2 && r.secs < 30.0, "ran {} s", r.secs);
    }

    #[test]
    fn a_paced_ring_makes_at_most_its_laps() {
        let cfg = NoiseConfig {
            rings: 1,
            ring_size: 2,
            tokens_per_ring: 1,
            hop_reductions: 10,
            hogs: 0,
            secs: 0.5,
            ring_laps_per_sec: 100.0,
        };
        let r = run(cfg, &AtomicBool::new(false)).unwrap();
        // 100 laps/s of 2 hops: 200 hops/s, plus the first lap before the pacing starts.
        assert!(r.hops_per_sec > 20.0 && r.hops_per_sec < 260.0, "{r:?}");
    }

    #[test]
    fn bad_rings_are_refused() {
        let mut c = NoiseConfig {
            rings: 1,
            ring_size: 2,
            tokens_per_ring: 2,
            hop_reductions: 1,
            hogs: 0,
            secs: 1.0,
            ring_laps_per_sec: 0.0,
        };
        assert!(c.validate().is_err(), "a ring of 2 holds at most 1 token");
        c.tokens_per_ring = 1;
        assert!(c.validate().is_ok());
        c.ring_size = 1;
        assert!(c.validate().is_err());
    }
}
