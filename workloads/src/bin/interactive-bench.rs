//! interactive-bench: a periodic latency-critical task next to CPU hogs and a parallel batch job.

use anyhow::Result;
use clap::Parser;
use concord_workloads::interactive::{self, InteractiveConfig};
use concord_workloads::write_json;
use std::path::PathBuf;

/// A task waking every --period-us for a short burst (its wake-up and completion latency are
/// measured), unpinned CPU hogs (their work per second) and a barrier-synchronised batch job.
#[derive(Parser)]
#[command(version, about)]
struct Opts {
    /// Period of the interactive task (µs).
    #[arg(long, default_value_t = 5000)]
    period_us: u64,
    /// Work per period (reductions; one is ~16 ns in the lab's guests).
    #[arg(long, default_value_t = 10000)]
    burst_reductions: u64,
    /// CPU hog threads.
    #[arg(long, default_value_t = 4)]
    hogs: usize,
    /// Threads of the batch job.
    #[arg(long, default_value_t = 4)]
    batch_threads: usize,
    /// Work per batch thread between barriers (reductions).
    #[arg(long, default_value_t = 200000)]
    batch_chunk_reductions: u64,
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
    let r = interactive::run(InteractiveConfig {
        period_us: o.period_us,
        burst_reductions: o.burst_reductions,
        hogs: o.hogs,
        batch_threads: o.batch_threads,
        batch_chunk_reductions: o.batch_chunk_reductions,
        secs: o.secs,
        warmup_secs: o.warmup_secs,
    })?;
    eprintln!(
        "[interactive-bench] {:.1} s: completion p50 {:.0} us, p99 {:.0} us, max {:.0} us, {} missed periods; hogs {:.3e} reductions/s; batch {:.1} rounds/s",
        r.secs,
        r.completion_p50_us,
        r.completion_p99_us,
        r.completion_max_us,
        r.missed_periods,
        r.hog_reductions_per_sec,
        r.batch_rounds_per_sec
    );
    if let Some(p) = &o.json {
        write_json(p, &r)?;
    }
    Ok(())
}
