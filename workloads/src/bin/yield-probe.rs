//! yield-probe: a poller that yields between polls and a CPU hog, pinned to one CPU (see the
//! `yielder` module): the hog's share of the CPU and the gaps between polls.

use anyhow::Result;
use clap::Parser;
use concord_workloads::write_json;
use concord_workloads::yielder::{self, YieldConfig};
use std::path::PathBuf;

/// A thread polling with sched_yield() between polls beside a CPU hog on the same CPU: whether
/// the yield yields (the hog's share) and how soon the poller looks again (its gaps).
#[derive(Parser)]
#[command(version, about)]
struct Opts {
    /// The CPU both threads are pinned to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Write the report here; `-` for stdout.
    #[arg(long, default_value = "-")]
    json: PathBuf,
}

fn main() -> Result<()> {
    let o = Opts::parse();
    let r = yielder::run(YieldConfig {
        cpu: o.cpu,
        secs: o.secs,
    })?;
    write_json(&o.json, &r)
}
