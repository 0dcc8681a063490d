//! Scenarios: the same workload under several schedulers, each run in a fresh VM, repeated and
//! interleaved (eevdf, shared, default, eevdf, shared, default, ...) so slow drifts of the
//! shared host hit every scheduler alike; medians and spread per scheduler; a report.
//!
//! `outage` (seed 000): beam-sim's pinned scheduler threads next to unpinned token rings and
//! CPU hogs. Host side here; the guest side (`bench-run`) starts the load and collects the
//! workload reports and the scheduler's own wait statistics.

use anyhow::{bail, Context, Result};
use concord_common::sched::SchedSpec;
use concord_common::topology::TopologySpec;
use concord_workloads::beam::BeamReport;
use concord_workloads::noise::NoiseReport;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::kernel;
use crate::protocol::{exit, Job};
use crate::report;
use crate::util::{exe_dir, progress};
use crate::vm;

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub sched: String,
    pub repeat: usize,
    pub ok: bool,
    pub error: Option<String>,
    pub run_dir: PathBuf,
    pub wall_secs: f64,
    pub output: Option<RunOutput>,
}

#[derive(clap::Args)]
pub struct OutageArgs {
    /// Kernel series (7.3, 7.0, latest).
    #[arg(long, default_value = kernel::DEFAULT_SERIES)]
    pub kernel: String,
    /// Topology (e.g. 1l2c, 1l4c, 2l2c); default 2 CPUs in one LLC (one per host core).
    #[arg(long, default_value = "1l2c")]
    pub topology: String,
    /// Schedulers, comma-separated, as for `vm --sched`; the first is the baseline of ratios.
    /// The default: EEVDF; scx_lavd's design at the time of the outage (pinned tasks in the
    /// LLC's shared queue, greedy-penalty deadlines); scx_concord as it is.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "eevdf,concord:--pinned-queue shared --deadline greedy,concord"
    )]
    pub scheds: Vec<String>,
    /// Runs per scheduler (interleaved).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Where the report goes (default: lab-results/outage-<time> in the current directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub mix: OutageMix,
}

fn validate(args: &OutageArgs) -> Result<(TopologySpec, Vec<SchedSpec>)> {
    let topo = TopologySpec::parse(&args.topology)?;
    if args.repeats == 0 || args.repeats > 50 {
        bail!("--repeats must be between 1 and 50");
    }
    if !(args.mix.secs >= 3.0 && args.mix.secs <= 3600.0) {
        bail!("--secs must be between 3 and 3600");
    }
    if !(args.mix.rate > 0.0 && args.mix.rate <= 100_000.0) {
        bail!("--rate must be between 0 and 100000");
    }
    if args.mix.reductions == 0 {
        bail!("--reductions must be at least 1");
    }
    let scheds = parse_scheds(&args.scheds)?;
    require_built(&["beam-sim", "noise"])?;
    Ok((topo, scheds))
}

/// `--scheds`: each parsed, none twice, every binary present (scx_concord built, peers
/// installed), so a bad list fails before any VM boots.
pub fn parse_scheds(list: &[String]) -> Result<Vec<SchedSpec>> {
    let scheds = list
        .iter()
        .map(|s| SchedSpec::parse(s))
        .collect::<Result<Vec<_>>>()?;
    if scheds.is_empty() {
        bail!("--scheds names no scheduler");
    }
    let mut labels: Vec<String> = scheds.iter().map(|s| s.label()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() != scheds.len() {
        bail!("--scheds names a scheduler twice");
    }
    for s in &scheds {
        crate::sched_binary(s)?;
    }
    Ok(scheds)
}

/// The workload programs a scenario runs must be built beside concord-lab.
pub fn require_built(programs: &[&str]) -> Result<()> {
    for w in programs {
        if !exe_dir()?.join(w).is_file() {
            bail!("{w} not built beside concord-lab: run `cargo build --release --workspace` (or `make build`)");
        }
    }
    Ok(())
}

/// One guest command under `sched` in a fresh VM (not streamed), and the lab's error for the
/// run if any: its message, or the exit code when there is none.
pub fn run_guest_job(
    kernel: &kernel::Kernel,
    topology: TopologySpec,
    sched: &SchedSpec,
    cmd: Vec<String>,
    timeout: Duration,
    icount: Option<u32>,
) -> Result<(vm::VmOutcome, Option<String>)> {
    let job = Job {
        cmd,
        sched: sched.clone(),
        sched_binary: crate::sched_binary(sched)?,
        sched_attach_timeout_s: 120,
        topology,
        kernel_config: kernel.config.clone(),
        path_prepend: crate::guest_path_prepend()?,
    };
    let out = vm::run(vm::VmConfig {
        kernel: kernel.clone(),
        topology,
        mem_mib: 2048,
        timeout,
        job,
        stream: false,
        icount,
    })?;
    let mut error = out.message.clone();
    if out.exit_code != 0 && error.is_none() {
        error = Some(format!("exit code {}", out.exit_code));
    }
    Ok((out, error))
}

pub fn outage(args: OutageArgs) -> Result<i32> {
    let (topology, scheds) = validate(&args)?;
    vm::check_host()?;
    let kernel = kernel::select(&args.kernel)?;
    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => PathBuf::from("lab-results").join(format!("outage-{}", utc_stamp())),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mix = &args.mix;
    let total = scheds.len() * args.repeats;
    progress(&format!(
        "outage scenario: {} schedulers x {} repeats = {total} VM runs of ~{:.0} s each on {topology} ({}), results in {}",
        scheds.len(),
        args.repeats,
        mix.secs + 25.0,
        kernel.release,
        out_dir.display()
    ));
    let started = Instant::now();
    let mut runs: Vec<RunRecord> = Vec::new();
    for repeat in 0..args.repeats {
        for s in &scheds {
            if crate::util::interrupted() {
                bail!("interrupted");
            }
            let n = runs.len() + 1;
            progress(&format!(
                "run {n}/{total}: {} (repeat {}/{})",
                s.label(),
                repeat + 1,
                args.repeats
            ));
            let rec = one_run(&kernel, topology, s, mix, repeat)?;
            let eta = started.elapsed().as_secs_f64() / n as f64 * (total - n) as f64;
            match (&rec.output, &rec.error) {
                (Some(o), _) => progress(&format!(
                    "run {n}/{total}: {}: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {:.0} req/s, {} unfinished ({:.0} s; ~{:.0} min left)",
                    s.label(),
                    o.beam.p50_us / 1e3,
                    o.beam.p99_us / 1e3,
                    o.beam.max_us / 1e3,
                    o.beam.throughput_rps,
                    o.beam.unfinished,
                    rec.wall_secs,
                    eta / 60.0
                )),
                (None, e) => progress(&format!(
                    "run {n}/{total}: {} FAILED: {} (run directory {})",
                    s.label(),
                    e.as_deref().unwrap_or("no output"),
                    rec.run_dir.display()
                )),
            }
            runs.push(rec);
        }
    }
    let rep = report::OutageReport::build(&topology, &kernel.release, mix, &scheds, runs);
    let files = rep.write(&out_dir)?;
    println!("{}", rep.markdown());
    for f in files {
        progress(&format!("wrote {}", f.display()));
    }
    Ok(if rep.all_ok() { 0 } else { exit::SCHED_FAILED })
}

fn one_run(
    kernel: &kernel::Kernel,
    topology: TopologySpec,
    sched: &SchedSpec,
    mix: &OutageMix,
    repeat: usize,
) -> Result<RunRecord> {
    let t0 = Instant::now();
    let cmd = vec![
        "concord-lab".into(),
        "bench-run".into(),
        "outage".into(),
        serde_json::to_string(mix)?,
    ];
    // Boot, attach, drain (10 s) and slack: a run that hangs fails after this.
    let timeout = Duration::from_secs_f64(mix.secs + 120.0);
    let (out, mut error) = run_guest_job(kernel, topology, sched, cmd, timeout, None)?;
    let output: Option<RunOutput> = std::fs::read(out.run_dir.join(RUN_OUTPUT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if output.is_none() && error.is_none() {
        error = Some(format!("no {RUN_OUTPUT} written"));
    }
    Ok(RunRecord {
        sched: sched.label(),
        repeat,
        ok: out.exit_code == 0 && output.is_some(),
        error,
        run_dir: out.run_dir,
        wall_secs: t0.elapsed().as_secs_f64(),
        output,
    })
}

/// Guest side of one outage run: competing load, then beam-sim, then the scheduler's stats.
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

pub fn guest_outage(mix: &OutageMix) -> Result<()> {
    let run_dir = PathBuf::from(
        std::env::var_os("CONCORD_LAB_RUN_DIR")
            .context("CONCORD_LAB_RUN_DIR not set: bench-run runs inside the lab VM")?,
    );
    let ops = if crate::guest::sched_state() == "enabled" {
        crate::guest::sched_ops()
    } else {
        String::new()
    };
    // Open the stats connection first: scx_concord's reader reports differences since open.
    let mut stats = (ops == concord_common::sched::CONCORD_OPS_NAME)
        .then(|| scx_stats::prelude::StatsClient::new().connect(Some(5000)))
        .transpose()
        .context("connecting to scx_concord's stats socket")?;
    if let Some(c) = stats.as_mut() {
        // The first request opens the reader (a baseline); the one after the run is the run.
        c.request::<serde_json::Value>("stats", vec![])
            .context("reading scx_concord's stats")?;
    }

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
    let sched_stats = match stats.as_mut() {
        Some(c) => Some(
            c.request::<serde_json::Value>("stats", vec![])
                .context("reading scx_concord's stats")?,
        ),
        None => None,
    };
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

/// `YYYYmmdd-HHMMSS` in UTC, for result directory names.
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
