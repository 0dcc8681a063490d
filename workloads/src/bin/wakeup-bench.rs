//! wakeup-bench: wake-up latency of message/worker thread groups (schbench's shape).

use anyhow::Result;
use clap::Parser;
use concord_workloads::wakeup::{self, WakeupConfig};
use concord_workloads::write_json;
use std::path::PathBuf;

/// Message threads wake their workers; each worker records how long after the post it ran,
/// does a short burst of work and reports back; the message thread then starts the next round.
#[derive(Parser)]
#[command(version, about)]
struct Opts {
    /// Message threads (one group each).
    #[arg(long, default_value_t = 2)]
    message_threads: usize,
    /// Workers per message thread.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Work per request (reductions; one is ~16 ns in the lab's guests).
    #[arg(long, default_value_t = 3000)]
    burst_reductions: u64,
    /// Seconds to run (including the warm-up).
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Seconds at the start that are not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Write the report here; `-` for stdout.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let o = Opts::parse();
    let r = wakeup::run(WakeupConfig {
        message_threads: o.message_threads,
        workers_per_message: o.workers,
        burst_reductions: o.burst_reductions,
        secs: o.secs,
        warmup_secs: o.warmup_secs,
    })?;
    eprintln!(
        "[wakeup-bench] {:.1} s: {:.0} requests/s, wake-up p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        r.secs, r.requests_per_sec, r.p50_us, r.p99_us, r.p999_us, r.max_us
    );
    if let Some(p) = &o.json {
        write_json(p, &r)?;
    }
    Ok(())
}
