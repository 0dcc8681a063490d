//! noise: competing load for the outage scenario (token rings and CPU hogs, unpinned).

use anyhow::{Context, Result};
use clap::Parser;
use concord_workloads::noise::{self, NoiseConfig};
use concord_workloads::write_json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Unpinned competing load: rings of threads passing tokens over pipes (short bursts, frequent
/// wake-ups of each other: "latency-critical" to LAVD-style schedulers) and CPU hogs.
#[derive(Parser)]
#[command(version, about)]
struct Opts {
    /// Number of token rings.
    #[arg(long, default_value_t = 2)]
    rings: usize,
    /// Threads per ring.
    #[arg(long, default_value_t = 4)]
    ring_size: usize,
    /// Tokens circulating in each ring (fewer than the ring size).
    #[arg(long, default_value_t = 2)]
    tokens: usize,
    /// Reductions of work per hop.
    #[arg(long, default_value_t = 200)]
    hop_reductions: u64,
    /// Laps per second each ring is held to (0: as fast as it goes).
    #[arg(long, default_value_t = 0.0)]
    ring_laps: f64,
    /// CPU hog threads.
    #[arg(long, default_value_t = 2)]
    hogs: usize,
    /// Seconds to run at most: SIGINT or SIGTERM stops it earlier, and the report covers the
    /// time it ran.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Write the report here; `-` for stdout.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let o = Opts::parse();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed))
        .context("installing the SIGINT/SIGTERM handler")?;
    let r = noise::run(
        NoiseConfig {
            rings: o.rings,
            ring_size: o.ring_size,
            tokens_per_ring: o.tokens,
            hop_reductions: o.hop_reductions,
            hogs: o.hogs,
            secs: o.secs,
            ring_laps_per_sec: o.ring_laps,
        },
        &stop,
    )?;
    eprintln!(
        "[noise] {:.1} s: {:.0} hops/s, hogs {:.3e} reductions/s (slowest/mean {:.2})",
        r.secs, r.hops_per_sec, r.hog_reductions_per_sec, r.hog_min_over_mean
    );
    if let Some(p) = &o.json {
        write_json(p, &r)?;
    }
    Ok(())
}
