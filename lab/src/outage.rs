//! The outage mix of seed 000 and its guest side: beam-sim's pinned scheduler threads next to
//! unpinned token rings and CPU hogs (`compare --scenarios outage`; the erlang scenarios run the
//! same competing load beside a real BEAM).

use anyhow::{bail, Context, Result};
use concord_workloads::beam::BeamReport;
use concord_workloads::noise::NoiseReport;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The outage workload mix. Defaults fit 2 vCPUs on this 2-core TCG host (one host core per
/// vCPU; with more vCPUs than host cores, host scheduling noise swamps the guest's): the BEAM
/// runtime is the main CPU user (about a third of each CPU in requests, plus spinning), as on
/// the servers of seed 000, next to a token ring that looks latency-critical and a CPU hog.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct OutageMix {
    /// Seconds of request arrivals per run.
    #[arg(long, default_value_t = 20.0)]
    pub secs: f64,
    /// Requests per second over all BEAM schedulers (about a third of each CPU in requests).
    #[arg(long, default_value_t = 400.0)]
    pub rate: f64,
    /// Reductions of work per request (one is ~16 ns here).
    #[arg(long, default_value_t = 50000)]
    pub reductions: u64,
    /// Idle BEAM schedulers spin this long (µs) before sleeping.
    #[arg(long, default_value_t = 100)]
    pub spin_us: u64,
    /// Unpinned CPU hogs.
    #[arg(long, default_value_t = 1)]
    pub hogs: usize,
    /// Unpinned token rings (4 threads, 2 tokens each). With one ring at most 2 latency-critical
    /// tasks are runnable at a time, too few to keep overtaking a pinned thread in a shared
    /// queue (the greedy penalty then has little to push it behind: 3.5x, not the outage); two
    /// keep the queue ahead of it refilling, as the many chatty threads of seed 000 did.
    #[arg(long, default_value_t = 2)]
    pub rings: usize,
    /// Reductions per ring hop.
    #[arg(long, default_value_t = 200)]
    pub hop_reductions: u64,
    /// Laps per second each ring is held to (0: as fast as it goes, a CPU-bound pipeline).
    #[arg(long, default_value_t = 0.0)]
    #[serde(default)]
    pub ring_laps: f64,
}

/// The mix with every default (the one place they are written is the clap attributes above).
pub fn default_mix() -> OutageMix {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        mix: OutageMix,
    }
    <Defaults as clap::Parser>::parse_from(["defaults"]).mix
}

/// What the guest side writes for one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunOutput {
    pub beam: BeamReport,
    pub noise: NoiseReport,
    /// scx_concord's stats over the run (scx_stats JSON), when concord ran.
    pub sched_stats: Option<serde_json::Value>,
    pub sched_ops: String,
    /// Share of CPU time the guest's CPUs were idle while the load ran (/proc/stat).
    #[serde(default)]
    pub idle_pct: f64,
}

/// (idle, total) jiffies summed over all CPUs, from /proc/stat's first line.
fn cpu_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (idle, f.iter().take(8).sum())
}

pub const RUN_OUTPUT: &str = "bench.json";

/// The mix's competing load (`noise`: its unpinned token rings and CPU hogs) for `secs`,
/// reporting to `json`; shared by the outage and erlang scenarios.
pub fn spawn_noise(mix: &OutageMix, secs: f64, json: &Path) -> Result<std::process::Child> {
    Command::new("noise")
        .args(["--secs", &format!("{secs}")])
        .args(["--hogs", &mix.hogs.to_string()])
        .args([
            "--rings",
            &mix.rings.to_string(),
            "--ring-size",
            "4",
            "--tokens",
            "2",
        ])
        .args(["--hop-reductions", &mix.hop_reductions.to_string()])
        .args(["--ring-laps", &mix.ring_laps.to_string()])
        .arg("--json")
        .arg(json)
        .stdin(Stdio::null())
        .spawn()
        .context("starting noise")
}

/// Guest side of one outage run: competing load, then beam-sim, then the scheduler's stats.
pub fn guest_outage(mix: &OutageMix) -> Result<()> {
    let run_dir = PathBuf::from(
        std::env::var_os("CONCORD_LAB_RUN_DIR")
            .context("CONCORD_LAB_RUN_DIR not set: the outage scenario runs inside the lab VM")?,
    );
    let ops = if crate::guest::sched_state() == "enabled" {
        crate::guest::sched_ops()
    } else {
        String::new()
    };
    // Open the stats connection first: scx_concord's reader reports differences since open.
    let mut stats = crate::sched_proc::concord_stats()?;

    let noise_json = run_dir.join("noise.json");
    let beam_json = run_dir.join("beam.json");
    let warmup = 1.0;
    // The load runs from 1 s before the first arrival to the last one.
    let mut noise = spawn_noise(mix, mix.secs + 1.0 + 0.5, &noise_json)?;
    std::thread::sleep(Duration::from_secs(1));
    let j0 = cpu_jiffies();
    let beam = Command::new("beam-sim")
        .args(["--secs", &mix.secs.to_string()])
        .args(["--warmup-secs", &warmup.to_string()])
        .args(["--rate", &mix.rate.to_string()])
        .args(["--reductions", &mix.reductions.to_string()])
        .args(["--spin-us", &mix.spin_us.to_string()])
        .args(["--drain-secs", "10"])
        .arg("--json")
        .arg(&beam_json)
        .stdin(Stdio::null())
        .status()
        .context("starting beam-sim")?;
    let j1 = cpu_jiffies();
    let noise_st = noise.wait()?;
    if !beam.success() {
        bail!("beam-sim failed: {beam}");
    }
    if !noise_st.success() {
        bail!("noise failed: {noise_st}");
    }
    let sched_stats = stats
        .as_mut()
        .map(crate::sched_proc::read_stats)
        .transpose()?;
    let read = |p: &Path| -> Result<Vec<u8>> {
        std::fs::read(p).with_context(|| format!("reading {}", p.display()))
    };
    let out = RunOutput {
        beam: serde_json::from_slice(&read(&beam_json)?)?,
        noise: serde_json::from_slice(&read(&noise_json)?)?,
        sched_stats,
        sched_ops: ops,
        idle_pct: 100.0 * (j1.0 - j0.0) as f64 / (j1.1 - j0.1).max(1) as f64,
    };
    std::fs::write(run_dir.join(RUN_OUTPUT), serde_json::to_vec_pretty(&out)?)?;
    Ok(())
}
