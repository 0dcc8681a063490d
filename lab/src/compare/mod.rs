//! `concord-lab compare`: every scenario under every scheduler, each run in a fresh VM,
//! repeated and interleaved (scenario by scenario, schedulers in turn, then the next repeat), so
//! drifts of the shared host hit every scheduler alike. Per run the scenario's own figures plus
//! the meters that work under every scheduler: wasted cores (ftrace replay) and BPF cost
//! (kernel BPF stats). Report: one table per scenario with medians, spreads and ratios to the
//! baseline (the first scheduler, EEVDF by default), SVGs (latency CDFs, per-CPU heat maps) and
//! a JSON file of every raw number for `concord-lab diff`.

pub mod guest;
pub mod report;

use anyhow::{bail, Context, Result};
use concord_common::hist::Hist;
use concord_common::sched::SchedSpec;
use concord_common::topology::TopologySpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::kernel;
use crate::meters::{bpfcost, waits, wasted};
use crate::outage::{OutageMix, RunOutput, RUN_OUTPUT};
use crate::protocol::exit;
use crate::util::progress;
use crate::vm;
use concord_workloads::erlang::BusyWait;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// A real Erlang/OTP VM (schedulers bound with +sbt db, idle ones busy-waiting with
    /// sched_yield as +sbwt says) serving open-loop requests beside a chatty unpinned service
    /// (a free-running token ring, no hog): seed 000's outage with the real runtime, at the
    /// offered loads of --loads.
    Erlang,
    /// The same BEAM beside batch work: two paced token rings and a CPU hog, whose fair share
    /// among the spinning BEAM schedulers is what EEVDF gets wrong.
    #[serde(rename = "erlang-batch")]
    #[value(name = "erlang-batch")]
    ErlangBatch,
    /// Message threads waking workers for short bursts (schbench's shape).
    Wakeup,
    /// A periodic latency-critical task next to CPU hogs and a parallel batch job.
    Interactive,
    /// hackbench (time for fixed work) and stress-ng cpu + switch (operations per second).
    Throughput,
    /// Seed 000's outage: BEAM-like pinned schedulers among token rings and hogs.
    Outage,
}

/// Whether a smaller or a larger figure is the better one (or neither: context only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
    Neither,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricDef {
    pub key: String,
    pub label: String,
    pub better: Better,
}

fn m(key: &str, label: &str, better: Better) -> MetricDef {
    MetricDef {
        key: key.into(),
        label: label.into(),
        better,
    }
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Erlang,
        Scenario::ErlangBatch,
        Scenario::Wakeup,
        Scenario::Interactive,
        Scenario::Throughput,
        Scenario::Outage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Erlang => "erlang",
            Scenario::ErlangBatch => "erlang-batch",
            Scenario::Wakeup => "wakeup",
            Scenario::Interactive => "interactive",
            Scenario::Throughput => "throughput",
            Scenario::Outage => "outage",
        }
    }

    /// Each scenario has its topology: together they cover 1 LLC x 4, 2 LLCs x 2 and two NUMA
    /// nodes; outage keeps the 2 vCPUs its figures were tuned on (one per host core).
    pub fn default_topology(self) -> &'static str {
        match self {
            Scenario::Wakeup => "1l4c",
            Scenario::Interactive => "2l2c",
            Scenario::Throughput => "2n1l2c",
            Scenario::Outage | Scenario::Erlang | Scenario::ErlangBatch => "1l2c",
        }
    }

    /// QEMU's -icount shift for the scenario's runs. With 4 vCPUs on this 2-core host, default
    /// multi-threaded TCG lets the host deschedule vCPUs mid-critical-section (lock-holder
    /// preemption), which inflated every sched_ext scheduler's shared-queue costs and the
    /// run-to-run spread; -icount (one host thread, guest time from instruction counts) gave
    /// stable ratios. Interactive too, with its work sizes scaled (guest::interactive_work): there
    /// EEVDF's completion p99 was 4.1 ms, against 20 ms under default TCG, where host noise set
    /// the tail. Outage runs 2 vCPUs, one per host core, as tuned:
    /// default TCG.
    pub fn default_icount(self) -> Option<u32> {
        match self {
            Scenario::Outage | Scenario::Erlang | Scenario::ErlangBatch => None,
            Scenario::Wakeup | Scenario::Throughput | Scenario::Interactive => Some(2),
        }
    }

    pub fn default_secs(self) -> f64 {
        match self {
            Scenario::Outage => 20.0,
            Scenario::Erlang | Scenario::ErlangBatch => 15.0,
            _ => 10.0,
        }
    }

    /// The scenario's own figures, then the meters every scenario has.
    pub fn metrics(self) -> Vec<MetricDef> {
        use Better::*;
        let mut v = match self {
            Scenario::Erlang | Scenario::ErlangBatch => vec![
                m("request_p50_ms", "request p50 (ms)", Lower),
                m("request_p99_ms", "request p99 (ms)", Lower),
                m("request_p999_ms", "request p99.9 (ms)", Lower),
                m("request_max_ms", "request max (ms)", Lower),
                m(
                    "request_worst_second_p99_ms",
                    "worst second's request p99 (ms)",
                    Lower,
                ),
                m("requests_per_sec", "requests/s done", Higher),
                m("unfinished", "requests unfinished", Lower),
                m("ring_hops_per_sec", "ring hops/s", Higher),
                m("hog_work_per_sec", "hogs' work (reductions/s)", Higher),
                m(
                    "beam_runq_delay_ms_per_sec",
                    "BEAM schedulers' run-queue delay (ms/s, schedstat)",
                    Lower,
                ),
                m(
                    "beam_wait_max_ms",
                    "BEAM schedulers' longest wait (ms, kernel trace)",
                    Lower,
                ),
                m(
                    "service_us",
                    "one request alone (µs, the compare's calibration)",
                    Neither,
                ),
                m("beam_cpus", "BEAM schedulers' CPU (CPUs)", Neither),
                m("rings_cpus", "rings' CPU (CPUs)", Neither),
                m("hogs_cpus", "hogs' CPU (CPUs)", Neither),
            ],
            Scenario::Wakeup => vec![
                m("wake_p50_us", "wake-up p50 (µs)", Lower),
                m("wake_p99_us", "wake-up p99 (µs)", Lower),
                m("wake_p999_us", "wake-up p99.9 (µs)", Lower),
                m("requests_per_sec", "requests/s", Higher),
            ],
            Scenario::Interactive => vec![
                m("wake_p99_us", "wake-up p99 (µs)", Lower),
                m("completion_p50_us", "completion p50 (µs)", Lower),
                m("completion_p99_us", "completion p99 (µs)", Lower),
                m("completion_max_us", "completion max (µs)", Lower),
                m("missed_periods", "missed periods", Lower),
                m("hog_work_per_sec", "hogs' work (reductions/s)", Higher),
                m("batch_rounds_per_sec", "batch rounds/s", Higher),
            ],
            Scenario::Throughput => vec![
                m("hackbench_secs", "hackbench time (s)", Lower),
                m("stress_cpu_ops", "stress-ng cpu ops/s", Higher),
                m("stress_switch_ops", "stress-ng switch ops/s", Higher),
            ],
            Scenario::Outage => vec![
                m("request_p50_ms", "request p50 (ms)", Lower),
                m("request_p99_ms", "request p99 (ms)", Lower),
                m("request_p999_ms", "request p99.9 (ms)", Lower),
                m("requests_per_sec", "requests/s", Higher),
                m("ring_hops_per_sec", "ring hops/s", Higher),
                m("hog_work_per_sec", "hogs' work (reductions/s)", Higher),
            ],
        };
        v.extend([
            m(
                "wait_max_ms",
                "longest wait of any task (ms, kernel trace)",
                Lower,
            ),
            m(
                "sched_wait_max_ms",
                "longest wait by the scheduler's own count (ms, concord)",
                Neither,
            ),
            m(
                "host_vcpu_wait_max_ms",
                "longest wait of a vCPU for a host CPU (ms, host schedstat)",
                Neither,
            ),
            m("wasted_pct", "wasted cores (% CPU time)", Lower),
            m("idle_pct", "idle (% CPU time)", Neither),
            m("bpf_ns_per_call", "BPF ns per callback", Lower),
            m("bpf_calls_per_sec", "BPF callbacks/s", Neither),
        ]);
        v
    }

    /// Whether the scenario runs the real BEAM at the offered loads of --loads.
    pub fn is_erlang(self) -> bool {
        matches!(self, Scenario::Erlang | Scenario::ErlangBatch)
    }

    /// The outage mix as the scenario runs it beside the BEAM (or beam-sim) unless --rings,
    /// --hogs or --ring-laps say otherwise: the outage mix's defaults with the scenario's
    /// rings, hogs and pacing; None for the scenarios without one.
    pub fn competing_mix(self) -> Option<OutageMix> {
        let d = crate::outage::default_mix();
        match self {
            // One free-running ring, no hog: EEVDF serves the BEAM well here, so a win is not
            // a baseline's weakness, and a chain of pipe (sync) wake-ups keeps looking more
            // latency-critical than the pinned schedulers it overtakes: the outage's mechanism.
            Scenario::Erlang => Some(OutageMix {
                rings: 1,
                hogs: 0,
                ring_laps: 0.0,
                ..d
            }),
            Scenario::ErlangBatch => Some(OutageMix {
                ring_laps: ERLANG_BATCH_RING_LAPS,
                ..d
            }),
            Scenario::Outage => Some(d),
            Scenario::Wakeup | Scenario::Interactive | Scenario::Throughput => None,
        }
    }

    /// The latency distribution plotted as a CDF, if the scenario has one.
    pub fn latency_label(self) -> Option<&'static str> {
        match self {
            Scenario::Wakeup => Some("worker wake-up latency"),
            Scenario::Interactive => Some("interactive task completion latency"),
            Scenario::Throughput => None,
            Scenario::Outage | Scenario::Erlang | Scenario::ErlangBatch => Some("request latency"),
        }
    }
}

/// Laps per second of each ring beside the BEAM and a hog (erlang-batch). Free-running, a
/// 2-token ring is a CPU-bound pipeline (every hop a pipe round trip, dear under TCG); two of
/// them and a hog left the BEAM a fair share under EEVDF below what light request loads need,
/// so every scheduler was overloaded and a comparison showed only queue growth. Paced, the
/// rings are chatty services with a bounded demand, and the hog takes the rest of the machine.
pub const ERLANG_BATCH_RING_LAPS: f64 = 150.0;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Scenarios, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::ALL.to_vec())]
    pub scenarios: Vec<Scenario>,
    /// Schedulers, comma-separated, as for `vm --sched`; the first is the baseline of ratios.
    /// Peers must be installed first (`concord-lab peers`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "eevdf,concord,lavd,bpfland"
    )]
    pub scheds: Vec<String>,
    /// Runs per scheduler and scenario (interleaved).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Seconds of load per run (default: 10, outage 20).
    #[arg(long)]
    pub secs: Option<f64>,
    /// Topology for every scenario (default: each scenario's own, see --help of the scenarios).
    #[arg(long)]
    pub topology: Option<String>,
    /// Kernel series (7.3, 7.0, latest).
    #[arg(long, default_value = kernel::DEFAULT_SERIES)]
    pub kernel: String,
    /// Run every scenario under QEMU -icount shift=N (guest time from instruction counts, one
    /// host thread for all vCPUs). Default: shift 2 for the 4-vCPU scenarios, none for outage.
    #[arg(long, conflicts_with = "no_icount")]
    pub icount: Option<u32>,
    /// Run every scenario under default multi-threaded TCG.
    #[arg(long)]
    pub no_icount: bool,
    /// Offered loads of the erlang scenarios, as shares of its schedulers' CPUs (0.1 = 10 %,
    /// from the calibration of one request alone): one point of the sweep each. In erlang-batch
    /// the hog and rings take half the machine or more, so loads much above 0.15 overload every
    /// scheduler there.
    #[arg(long, value_delimiter = ',', default_value = "0.1")]
    pub loads: Vec<f64>,
    /// Reductions (function calls) per request of the erlang scenario: 10000 are ~0.5 ms of a
    /// vCPU under multi-threaded TCG here with the machine otherwise quiet, two and a half BEAM
    /// time slices (a process is switched out every ~4000 reductions).
    #[arg(long, default_value_t = 10_000)]
    pub reductions: u64,
    /// One request's service time alone, µs, instead of measuring it in the first erlang run.
    /// The measurement moves with the host's load at that moment, and the rate of every run
    /// follows from it: give the figure to compare one set's load points with another's.
    #[arg(long, value_name = "US", value_parser = parse_service_us)]
    pub service_us: Option<f64>,
    /// Busy wait of the erlang scenario's idle schedulers (+sbwt).
    #[arg(long, value_enum, default_value_t = BusyWait::Short)]
    pub busy_wait: BusyWait,
    /// Unpinned token rings beside the BEAM in the erlang and outage scenarios (default: each
    /// scenario's own: erlang 1, erlang-batch and outage 2).
    #[arg(long)]
    pub rings: Option<usize>,
    /// Unpinned CPU hogs beside the BEAM in the erlang and outage scenarios (default: erlang 0,
    /// erlang-batch and outage 1).
    #[arg(long)]
    pub hogs: Option<usize>,
    /// Laps per second each ring is held to, 0 for free-running rings (CPU-bound pipelines).
    /// Default: erlang-batch's rings are paced chatty services (150 laps/s), erlang's and
    /// outage's run free.
    #[arg(long)]
    pub ring_laps: Option<f64>,
    /// Keep each run's raw ftrace text (large) in its run directory.
    #[arg(long)]
    pub keep_traces: bool,
    /// Where the report goes (default: lab-results/compare-<time>). Every run is saved there
    /// as it finishes (runs-so-far.json), so that an interrupted compare can be resumed.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Go on with the compare saved in DIR (give the same scenarios, schedulers, loads and
    /// repeats): runs that finished there are kept, the rest are run, the report covers all.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
}

/// The runs of a compare saved so far, rewritten after each run.
pub const RUNS_SO_FAR: &str = "runs-so-far.json";

/// Which run of the plan a saved run is.
fn same_run(r: &CompareRun, sp: &ScenarioPlan, sched: &str, repeat: usize) -> bool {
    r.scenario == sp.scenario && r.load == sp.load && r.sched == sched && r.repeat == repeat
}

fn saved_runs(dir: &Path) -> Result<Vec<CompareRun>> {
    let p = dir.join(RUNS_SO_FAR);
    let b = std::fs::read(&p)
        .with_context(|| format!("--resume: {} has no {RUNS_SO_FAR}", dir.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("--resume: {} is not readable", p.display()))
}

fn save_runs(dir: &Path, runs: &[CompareRun]) -> Result<()> {
    let tmp = dir.join(format!("{RUNS_SO_FAR}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(runs)?)?;
    std::fs::rename(&tmp, dir.join(RUNS_SO_FAR))?;
    Ok(())
}

/// What made these results: the command, the binaries' own versions, QEMU, the host.
fn provenance(scheds: &[SchedSpec]) -> report::Provenance {
    let first_line = |prog: &Path, arg: &str| {
        std::process::Command::new(prog)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    report::Provenance {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_utc: crate::util::utc_stamp(),
        lab_version: env!("CARGO_PKG_VERSION").into(),
        scheds: scheds
            .iter()
            .map(|s| {
                let v = match crate::sched_binary(s) {
                    Ok(Some(bin)) => first_line(&bin, "--version"),
                    Ok(None) => "the kernel's own".into(),
                    Err(e) => format!("unknown ({e})"),
                };
                (s.label(), v)
            })
            .collect(),
        qemu: first_line(Path::new("qemu-system-x86_64"), "--version"),
        host_cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into()),
        host_cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    }
}

fn parse_service_us(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (10.0..=100_000.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}': a service time in µs between 10 and 100000")),
    }
}

/// One VM run: the figures, the meters' detail and where its files are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareRun {
    pub scenario: Scenario,
    /// The erlang scenario's offered load (None for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    pub sched: String,
    pub repeat: usize,
    pub ok: bool,
    pub error: Option<String>,
    pub run_dir: PathBuf,
    pub wall_secs: f64,
    pub metrics: BTreeMap<String, f64>,
    pub latency: Option<Hist>,
    /// Request p99 per second of the measured window (the erlang scenario), ms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_second_p99_ms: Vec<f64>,
    pub bpf: Vec<bpfcost::ProgCost>,
    pub wasted: Option<wasted::WastedReport>,
}

const HEAT_BINS: usize = 120;
const WASTED_THRESHOLD_NS: u64 = 1_000_000;

/// One scenario as it will run.
#[derive(Clone, Copy, Debug)]
pub struct ScenarioPlan {
    pub scenario: Scenario,
    pub topology: TopologySpec,
    pub secs: f64,
    pub icount: Option<u32>,
    /// The erlang scenario's offered load.
    pub load: Option<f64>,
}

impl ScenarioPlan {
    /// How the plan is named in reports and file names: `erlang@60%`, `wakeup`.
    pub fn name(&self) -> String {
        point_name(self.scenario, self.load)
    }
}

/// A scenario at a load point: `erlang@60%`, or the scenario's name.
pub fn point_name(s: Scenario, load: Option<f64>) -> String {
    match load {
        Some(l) => format!("{}@{:.0}%", s.name(), l * 100.0),
        None => s.name().to_string(),
    }
}

/// Plan of a compare, validated before any VM.
struct Plan {
    scenarios: Vec<ScenarioPlan>,
    scheds: Vec<SchedSpec>,
}

fn validate(args: &CompareArgs) -> Result<Plan> {
    if args.scenarios.is_empty() {
        bail!("--scenarios names no scenario");
    }
    if args.repeats == 0 || args.repeats > 50 {
        bail!("--repeats must be between 1 and 50");
    }
    if let Some(s) = args.secs {
        if !(3.0..=3600.0).contains(&s) {
            bail!("--secs must be between 3 and 3600");
        }
    }
    if let Some(n) = args.icount {
        if n > 10 {
            bail!("--icount: shift must be between 0 and 10");
        }
    }
    if !(100..=100_000_000).contains(&args.reductions) {
        bail!("--reductions must be between 100 and 100000000");
    }
    if args.loads.is_empty() || args.loads.iter().any(|l| !(*l > 0.0 && *l <= 2.0)) {
        bail!("--loads: each load must be in (0, 2] (a share of the BEAM's CPUs, 0.6 = 60 %)");
    }
    let mut loads = args.loads.clone();
    loads.sort_by(f64::total_cmp);
    loads.dedup();
    if loads.len() != args.loads.len() {
        bail!("--loads names a load twice");
    }
    let scheds = crate::parse_scheds(&args.scheds)?;
    crate::util::require_built(&[
        "beam-sim",
        "beam-real",
        "noise",
        "wakeup-bench",
        "interactive-bench",
    ])?;
    if args.scenarios.iter().any(|s| s.is_erlang()) && crate::util::which("escript").is_none() {
        bail!("escript not found: install erlang-base (scripts/setup-host.sh)");
    }
    for (tool, pkg) in [
        ("hackbench", "rt-tests"),
        ("stress-ng", "stress-ng"),
        ("bpftool", "bpftool"),
    ] {
        if crate::util::which(tool).is_none() {
            bail!("{tool} not found: install {pkg} (scripts/setup-host.sh)");
        }
    }
    let mut scenarios = Vec::new();
    let mut seen = Vec::new();
    for &s in &args.scenarios {
        if seen.contains(&s) {
            bail!("--scenarios names {} twice", s.name());
        }
        seen.push(s);
        let topo = TopologySpec::parse(args.topology.as_deref().unwrap_or(s.default_topology()))?;
        let icount = match (args.no_icount, args.icount) {
            (true, _) => None,
            (false, Some(n)) => Some(n),
            (false, None) => s.default_icount(),
        };
        let points: Vec<Option<f64>> = if s.is_erlang() {
            loads.iter().map(|&l| Some(l)).collect()
        } else {
            vec![None]
        };
        for load in points {
            scenarios.push(ScenarioPlan {
                scenario: s,
                topology: topo,
                secs: args.secs.unwrap_or(s.default_secs()),
                icount,
                load,
            });
        }
    }
    Ok(Plan { scenarios, scheds })
}

pub fn run(args: CompareArgs) -> Result<i32> {
    let plan = validate(&args)?;
    vm::check_host()?;
    let kernel = kernel::select(&args.kernel)?;
    let (out_dir, saved) = match (&args.resume, &args.out) {
        (Some(d), _) => (d.clone(), saved_runs(d)?),
        (None, Some(d)) => (d.clone(), Vec::new()),
        (None, None) => (
            PathBuf::from("lab-results").join(format!("compare-{}", crate::util::utc_stamp())),
            Vec::new(),
        ),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let provenance = provenance(&plan.scheds);
    let total = plan.scenarios.len() * plan.scheds.len() * args.repeats;
    progress(&format!(
        "compare: {} scenario(s) x {} scheduler(s) x {} repeat(s) = {total} VM runs on {}, results in {}",
        plan.scenarios.len(),
        plan.scheds.len(),
        args.repeats,
        kernel.release,
        out_dir.display()
    ));
    let started = Instant::now();
    // Every run done is already in runs-so-far.json: say how to go on, and exit as interrupted.
    let stop_interrupted = || {
        progress(&format!(
            "interrupted: the runs done so far are in {}; `--resume` it to go on",
            out_dir.display()
        ));
        exit::INTERRUPTED
    };
    let mut runs: Vec<CompareRun> = Vec::new();
    let mut kept = 0;
    // The erlang scenario's rate follows one calibration, made in its first run: the same
    // offered work for every scheduler and repeat (a calibration per run moved the rate by up
    // to 18 % between runs with TCG's speed, which decides an overloaded point by itself).
    let mut service_us: Option<f64> = args.service_us.or_else(|| {
        saved
            .iter()
            .filter(|r| r.ok && r.scenario.is_erlang())
            .find_map(|r| r.metrics.get("service_us").copied())
    });
    if let Some(us) = service_us {
        progress(&format!(
            "erlang: one request alone taken as {us:.0} µs (--service-us); every run offers the rate that follows from it"
        ));
    }
    for repeat in 0..args.repeats {
        for sp in &plan.scenarios {
            for s in &plan.scheds {
                if crate::util::interrupted() {
                    return Ok(stop_interrupted());
                }
                let n = runs.len() + 1;
                if let Some(r) = saved
                    .iter()
                    .find(|r| r.ok && same_run(r, sp, &s.label(), repeat))
                {
                    progress(&format!("run {n}/{total}: kept from {}", out_dir.display()));
                    kept += 1;
                    runs.push(r.clone());
                    continue;
                }
                progress(&format!(
                    "run {n}/{total}: {} under {} on {}{} (repeat {}/{})",
                    sp.name(),
                    s.label(),
                    sp.topology,
                    sp.icount
                        .map(|n| format!(", -icount shift={n}"))
                        .unwrap_or_default(),
                    repeat + 1,
                    args.repeats
                ));
                let rec = one_run(&kernel, sp, s, repeat, &args, service_us)?;
                if sp.scenario.is_erlang() && service_us.is_none() && rec.ok {
                    service_us = rec.metrics.get("service_us").copied();
                    if let Some(us) = service_us {
                        progress(&format!(
                            "erlang: one request alone takes {us:.0} µs here; every run offers the rate that follows from it"
                        ));
                    }
                }
                let eta = started.elapsed().as_secs_f64() / (n - kept) as f64 * (total - n) as f64;
                progress(&format!(
                    "run {n}/{total}: {} ({:.0} s; ~{:.0} min left)",
                    report::run_line(&rec),
                    rec.wall_secs,
                    eta / 60.0
                ));
                runs.push(rec);
                save_runs(&out_dir, &runs)?;
                if crate::util::interrupted() {
                    // The run cut short is saved as failed: --resume runs it again.
                    return Ok(stop_interrupted());
                }
            }
        }
    }
    let mut rep = report::CompareReport::build(
        &kernel.release,
        args.repeats,
        &plan.scenarios,
        &plan.scheds,
        runs,
    );
    rep.provenance = provenance;
    let files = rep.write(&out_dir)?;
    println!("{}", rep.markdown());
    for f in files {
        progress(&format!("wrote {}", f.display()));
    }
    for v in rep.verdicts() {
        progress(&v);
    }
    Ok(if rep.all_ok() { 0 } else { exit::SCHED_FAILED })
}

fn one_run(
    kernel: &kernel::Kernel,
    sp: &ScenarioPlan,
    sched: &SchedSpec,
    repeat: usize,
    args: &CompareArgs,
    service_us: Option<f64>,
) -> Result<CompareRun> {
    let keep_traces = args.keep_traces;
    let t0 = Instant::now();
    let (scenario, topology, secs) = (sp.scenario, sp.topology, sp.secs);
    let params = guest::GuestParams {
        scenario,
        secs,
        nr_cpus: topology.nr_cpus() as usize,
        outage: {
            let c = sp
                .scenario
                .competing_mix()
                .unwrap_or_else(crate::outage::default_mix);
            OutageMix {
                secs,
                rings: args.rings.unwrap_or(c.rings),
                hogs: args.hogs.unwrap_or(c.hogs),
                ring_laps: args.ring_laps.unwrap_or(c.ring_laps),
                ..c
            }
        },
        icount: sp.icount.is_some(),
        erlang: sp.load.map(|load| guest::ErlangParams {
            load,
            busy_wait: args.busy_wait,
            reductions: args.reductions,
            service_us,
        }),
    };
    let cmd = vec![
        "concord-lab".into(),
        "compare-run".into(),
        serde_json::to_string(&params)?,
    ];
    let slowdown = if sp.icount.is_some() { 4.0 } else { 1.0 };
    // Boot, attach (lavd ~45 s), the load, the trace copy, and slack. A real BEAM starts up
    // beside the competing load, and a scheduler that starves it makes that take minutes (114 s
    // of its threads' life for a 26 s run): the run must end with its figures, not be killed
    // while it copies the trace.
    let startup = if scenario.is_erlang() { 240.0 } else { 0.0 };
    let timeout = Duration::from_secs_f64((secs + 30.0) * slowdown + 240.0 + startup);
    let (out, error) = crate::vm::run_guest_job(kernel, topology, sched, cmd, timeout, sp.icount)?;
    let mut rec = CompareRun {
        scenario,
        load: sp.load,
        sched: sched.label(),
        repeat,
        ok: false,
        error,
        run_dir: out.run_dir.clone(),
        wall_secs: 0.0,
        metrics: BTreeMap::new(),
        latency: None,
        per_second_p99_ms: Vec::new(),
        bpf: Vec::new(),
        wasted: None,
    };
    if out.exit_code == 0 {
        match collect(&mut rec, scenario, topology.nr_cpus() as usize, keep_traces) {
            Ok(()) => rec.ok = true,
            Err(e) => rec.error = Some(format!("{e:#}")),
        }
    }
    // A guest wait as long as this one can be the host's, whatever the guest's scheduler did.
    if let Some(ms) = out.host_vcpu_wait_max_ms {
        rec.metrics.insert("host_vcpu_wait_max_ms".into(), ms);
    }
    rec.wall_secs = t0.elapsed().as_secs_f64();
    Ok(rec)
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// hackbench's `Time: 1.234`.
pub fn parse_hackbench(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Time:"))
        .and_then(|v| v.trim().parse().ok())
}

/// stress-ng's --yaml metrics: bogo ops per second (real time) of one stressor.
pub fn parse_stress_ng(yaml: &str, stressor: &str) -> Option<f64> {
    let mut in_it = false;
    for l in yaml.lines() {
        let t = l.trim().trim_start_matches("- ");
        if let Some(name) = t.strip_prefix("stressor:") {
            in_it = name.trim() == stressor;
        } else if in_it {
            if let Some(v) = t.strip_prefix("bogo-ops-per-second-real-time:") {
                return v.trim().parse().ok();
            }
        }
    }
    None
}

/// Reads the run directory: the workload's report, the meters' files.
fn collect(
    rec: &mut CompareRun,
    scenario: Scenario,
    nr_cpus: usize,
    keep_trace: bool,
) -> Result<()> {
    let dir = rec.run_dir.clone();
    let put = |m: &mut BTreeMap<String, f64>, k: &str, v: f64| {
        m.insert(k.to_string(), v);
    };
    let mx = &mut rec.metrics;
    let mut beam_tids: Vec<u32> = Vec::new();
    match scenario {
        Scenario::Erlang | Scenario::ErlangBatch => {
            let r: concord_workloads::erlang::ErlangReport =
                serde_json::from_str(&read(&dir, guest::WORKLOAD_FILE)?)?;
            let n: concord_workloads::noise::NoiseReport =
                serde_json::from_str(&read(&dir, guest::NOISE_FILE)?)?;
            put(mx, "request_p50_ms", r.p50_us / 1e3);
            put(mx, "request_p99_ms", r.p99_us / 1e3);
            put(mx, "request_p999_ms", r.p999_us / 1e3);
            put(mx, "request_max_ms", r.max_us / 1e3);
            if !r.per_second.is_empty() {
                put(
                    mx,
                    "request_worst_second_p99_ms",
                    r.worst_second_p99_us / 1e3,
                );
                rec.per_second_p99_ms = r.per_second.iter().map(|s| s.p99_us / 1e3).collect();
            }
            put(mx, "requests_per_sec", r.throughput_rps);
            put(mx, "unfinished", r.unfinished as f64);
            put(mx, "ring_hops_per_sec", n.hops_per_sec);
            put(mx, "hog_work_per_sec", n.hog_reductions_per_sec);
            put(mx, "service_us", r.service_us);
            let wait_ms: f64 = r.schedulers.iter().map(|t| t.wait_ms).sum();
            let run_ms: f64 = r.schedulers.iter().map(|t| t.run_ms).sum();
            // schedstat's own window when the report has it (older ones: the nominal run).
            let secs = if r.schedstat_secs > 0.0 {
                r.schedstat_secs
            } else {
                r.config.secs + r.config.warmup_secs
            };
            put(mx, "beam_runq_delay_ms_per_sec", wait_ms / secs.max(1e-9));
            put(mx, "beam_cpus", run_ms / 1e3 / secs.max(1e-9));
            put(mx, "rings_cpus", n.rings_cpus);
            put(mx, "hogs_cpus", n.hogs_cpus);
            if r.schedulers.is_empty() {
                bail!("beam-real found no scheduler threads");
            }
            beam_tids = r.schedulers.iter().map(|t| t.tid).collect();
            rec.latency = Some(r.latency);
        }
        Scenario::Wakeup => {
            let r: concord_workloads::wakeup::WakeupReport =
                serde_json::from_str(&read(&dir, guest::WORKLOAD_FILE)?)?;
            put(mx, "wake_p50_us", r.p50_us);
            put(mx, "wake_p99_us", r.p99_us);
            put(mx, "wake_p999_us", r.p999_us);
            put(mx, "requests_per_sec", r.requests_per_sec);
            rec.latency = Some(r.latency);
        }
        Scenario::Interactive => {
            let r: concord_workloads::interactive::InteractiveReport =
                serde_json::from_str(&read(&dir, guest::WORKLOAD_FILE)?)?;
            put(mx, "wake_p99_us", r.wake_p99_us);
            put(mx, "completion_p50_us", r.completion_p50_us);
            put(mx, "completion_p99_us", r.completion_p99_us);
            put(mx, "completion_max_us", r.completion_max_us);
            put(mx, "missed_periods", r.missed_periods as f64);
            put(mx, "hog_work_per_sec", r.hog_reductions_per_sec);
            put(mx, "batch_rounds_per_sec", r.batch_rounds_per_sec);
            rec.latency = Some(r.completion);
        }
        Scenario::Throughput => {
            let hb = read(&dir, guest::HACKBENCH_FILE)?;
            let t = parse_hackbench(&hb).context("hackbench printed no `Time:` line")?;
            put(mx, "hackbench_secs", t);
            let y = read(&dir, guest::STRESS_FILE)?;
            for (stressor, key) in [("cpu", "stress_cpu_ops"), ("switch", "stress_switch_ops")] {
                let v = parse_stress_ng(&y, stressor)
                    .with_context(|| format!("stress-ng reported no {stressor} rate"))?;
                put(mx, key, v);
            }
        }
        Scenario::Outage => {
            let o: RunOutput = serde_json::from_str(&read(&dir, RUN_OUTPUT)?)?;
            put(mx, "request_p50_ms", o.beam.p50_us / 1e3);
            put(mx, "request_p99_ms", o.beam.p99_us / 1e3);
            put(mx, "request_p999_ms", o.beam.p999_us / 1e3);
            put(mx, "requests_per_sec", o.beam.throughput_rps);
            put(mx, "ring_hops_per_sec", o.noise.hops_per_sec);
            put(mx, "hog_work_per_sec", o.noise.hog_reductions_per_sec);
            rec.latency = Some(o.beam.latency);
        }
    }
    let meters: guest::MetersOut = serde_json::from_str(&read(&dir, guest::METERS_FILE)?)?;
    let masks = wasted::parse_masks(&read(&dir, guest::MASKS_FILE)?);
    let trace_path = dir.join(guest::TRACE_FILE);
    let trace = read(&dir, guest::TRACE_FILE)?;
    let mut w = wasted::analyze(&trace, nr_cpus, WASTED_THRESHOLD_NS, &masks, HEAT_BINS)?;
    let waits = waits::longest_waits(&trace);
    drop(trace);
    let ms = |ns: u64| ns as f64 / 1e6;
    mx.insert(
        "wait_max_ms".into(),
        ms(waits.values().copied().max().unwrap_or(0)),
    );
    if !beam_tids.is_empty() {
        let m = beam_tids
            .iter()
            .filter_map(|t| waits.get(t))
            .copied()
            .max()
            .unwrap_or(0);
        mx.insert("beam_wait_max_ms".into(), ms(m));
    }
    if let Ok(stats) = read(&dir, guest::SCHED_STATS_FILE) {
        let v: serde_json::Value = serde_json::from_str(&stats)?;
        // The longest wait between the two reads around the load (exact, every path): the
        // window the kernel trace covers too.
        if let Some(us) = v.get("wait_max_us").and_then(|x| x.as_f64()) {
            mx.insert("sched_wait_max_ms".into(), us / 1e3);
        }
    }
    if !keep_trace {
        let _ = std::fs::remove_file(&trace_path);
    }
    w.lost_events = meters.lost_events;
    mx.insert("wasted_pct".into(), w.wasted_pct);
    mx.insert("idle_pct".into(), w.idle_pct);
    let window = w.window_ns as f64 / 1e9;
    rec.wasted = Some(w);
    match &meters.bpftool_error {
        Some(e) => bail!("BPF stats: {e}"),
        None => {
            rec.bpf = bpfcost::between(
                &read(&dir, guest::BPF_BEFORE)?,
                &read(&dir, guest::BPF_AFTER)?,
            )?;
            let (calls, ns) = bpfcost::total(&rec.bpf);
            if let Some(ns) = ns {
                mx.insert("bpf_ns_per_call".into(), ns);
            }
            // The trace window spans the whole load (warm-up included), as the BPF snapshots do.
            mx.insert("bpf_calls_per_sec".into(), calls as f64 / window.max(1e-9));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_time_is_checked() {
        assert_eq!(parse_service_us("345"), Ok(345.0));
        for bad in ["0", "-3", "nan", "inf", "1e9", "fast"] {
            assert!(parse_service_us(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn erlang_scenarios_name_their_mixes() {
        use clap::ValueEnum;
        let batch = Scenario::from_str("erlang-batch", false).unwrap();
        assert_eq!(batch, Scenario::ErlangBatch);
        assert_eq!(batch.name(), "erlang-batch");
        assert_eq!(serde_json::to_string(&batch).unwrap(), "\"erlang-batch\"");
        let free = Scenario::Erlang.competing_mix().unwrap();
        assert_eq!((free.rings, free.hogs, free.ring_laps), (1, 0, 0.0));
        let b = batch.competing_mix().unwrap();
        assert!(b.hogs > 0 && b.rings > 0 && b.ring_laps > 0.0);
        assert!(Scenario::ALL
            .iter()
            .all(|s| s.is_erlang() == s.name().starts_with("erlang")));
        assert!(Scenario::Wakeup.competing_mix().is_none());
    }

    #[test]
    fn parses_hackbench_and_stress_ng() {
        assert_eq!(
            parse_hackbench("Running in process mode with 4 groups\nTime: 3.217\n"),
            Some(3.217)
        );
        assert_eq!(parse_hackbench("nothing"), None);
        let yaml = "---\nsystem-info:\n      hostname: x\nmetrics:\n    - stressor: cpu\n      bogo-ops: 100\n      bogo-ops-per-second-usr-sys-time: 50.5\n      bogo-ops-per-second-real-time: 48.25\n    - stressor: switch\n      bogo-ops: 9000\n      bogo-ops-per-second-real-time: 901.5\n...\n";
        assert_eq!(parse_stress_ng(yaml, "cpu"), Some(48.25));
        assert_eq!(parse_stress_ng(yaml, "switch"), Some(901.5));
        assert_eq!(parse_stress_ng(yaml, "vm"), None);
    }

    #[test]
    fn every_scenario_has_its_figures_and_the_meters() {
        for s in Scenario::ALL {
            let keys: Vec<String> = s.metrics().into_iter().map(|m| m.key).collect();
            let mut dedup = keys.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), keys.len(), "{} has a metric twice", s.name());
            assert!(keys.contains(&"wasted_pct".to_string()));
            assert!(TopologySpec::parse(s.default_topology()).is_ok());
        }
        let topos: Vec<String> = Scenario::ALL
            .iter()
            .map(|s| {
                TopologySpec::parse(s.default_topology())
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(
            topos.iter().any(|t| t.starts_with("2n")),
            "a NUMA layout: {topos:?}"
        );
    }
}
