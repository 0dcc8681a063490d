//! beam-sim: a BEAM-like runtime with one scheduler thread pinned per CPU; see `beam` in the
//! library for the model. Prints a summary and optionally writes the full report as JSON.

use anyhow::{bail, Result};
use clap::Parser;
use concord_common::topology::parse_cpulist;
use concord_workloads::beam::{self, BeamConfig};
use concord_workloads::{sys, write_json};
use std::path::PathBuf;

/// A BEAM-like runtime: pinned scheduler threads with their own run queues, open-loop
/// requests, spin-then-sleep idling, stealing only with the victim's acknowledgement.
#[derive(Parser)]
#[command(version, about)]
struct Opts {
    /// Scheduler threads (default: one per CPU this process may use).
    #[arg(long)]
    schedulers: Option<usize>,
    /// Do not bind scheduler threads to CPUs (default: bound one per CPU, like `+sbt`).
    #[arg(long)]
    unpinned: bool,
    /// CPUs to bind to, in scheduler order, e.g. `0-3` (default: the allowed CPUs in order).
    #[arg(long)]
    cpus: Option<String>,
    /// Reductions (units of CPU work) per request.
    #[arg(long, default_value_t = 4000)]
    reductions: u64,
    /// Reductions a process runs before it yields to the next (the BEAM's budget).
    #[arg(long, default_value_t = 4000)]
    slice_reductions: u64,
    /// Requests per second over all schedulers (open loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long an idle scheduler spins (and tries to steal) before it sleeps, µs.
    #[arg(long, default_value_t = 100)]
    spin_us: u64,
    /// Call sched_yield() every N spins of the idle loop, as ERTS does (0: never; ERTS yields
    /// every 50 or so).
    #[arg(long, default_value_t = 0)]
    yield_every: u64,
    /// Seconds of arrivals.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Arrivals in the first seconds are not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Seconds the schedulers get to finish queued requests after the last arrival.
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// Write the full report (with the latency histogram) here; `-` for stdout.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let o = Opts::parse();
    let allowed = sys::allowed_cpus()?;
    let n = o.schedulers.unwrap_or(allowed.len());
    let cpus = if o.unpinned {
        if o.cpus.is_some() {
            bail!("--cpus and --unpinned contradict each other");
        }
        None
    } else {
        let list: Vec<usize> = match &o.cpus {
            Some(s) => parse_cpulist(s)?.into_iter().map(|c| c as usize).collect(),
            None => allowed.clone(),
        };
        if list.len() < n {
            bail!(
                "{n} pinned schedulers need {n} CPUs, have {}: {list:?}",
                list.len()
            );
        }
        if let Some(c) = list.iter().find(|c| !allowed.contains(c)) {
            bail!("CPU {c} is not one this process may use ({allowed:?})");
        }
        Some(list[..n].to_vec())
    };
    let cfg = BeamConfig {
        schedulers: n,
        cpus,
        reductions_per_request: o.reductions,
        reductions_per_slice: o.slice_reductions,
        rate: o.rate,
        spin_us: o.spin_us,
        yield_every: o.yield_every,
        secs: o.secs,
        warmup_secs: o.warmup_secs,
        drain_secs: o.drain_secs,
    };
    cfg.validate()?;
    let r = beam::run(cfg, |m| eprintln!("[beam-sim] {m}"))?;
    eprintln!(
        "[beam-sim] {} schedulers, {:.0} ns/reduction ({:.2} ms per request): {:.0} req/s, latency p50 {:.0} us p99 {:.0} us p99.9 {:.0} us max {:.0} us, {} unfinished",
        r.config.schedulers,
        r.ns_per_reduction,
        r.ns_per_reduction * r.config.reductions_per_request as f64 / 1e6,
        r.throughput_rps,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.max_us,
        r.unfinished
    );
    for s in &r.schedulers {
        eprintln!(
            "[beam-sim]   sched {} cpu {:?}: {} done, stole {} gave {}, run-queue delay mean {:.0} us, longest stall {:.0} us, wake p99/max {:.0}/{:.0} us",
            s.index, s.cpu, s.completed, s.stolen_by_me, s.given_away, s.mean_runq_delay_us, s.max_stall_us, s.wake_p99_us, s.wake_max_us
        );
    }
    if let Some(p) = &o.json {
        write_json(p, &r)?;
    }
    Ok(())
}
