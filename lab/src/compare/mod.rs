//! `concord-lab compare`: every scenario under every scheduler, each run in a fresh VM,
//! repeated and interleaved (scenario by scenario, schedulers in turn, then the next repeat), so
//! drifts of the shared host hit every scheduler alike. Per run the scenario's own figures plus
//! the meters that work under every scheduler: wasted cores (ftrace replay) and BPF cost
//! (kernel BPF stats). Report: one table per scenario with medians, spreads and ratios to the
//! baseline (the first scheduler, EEVDF by default), SVGs (latency CDFs, per-CPU heat maps) and
//! a JSON file of every raw number for `concord-lab diff`.

mod collect;
pub mod diff;
pub mod guest;
mod markdown;
mod plots;
pub mod report;
mod scenario;

pub use scenario::{Better, MetricDef, Scenario};

use anyhow::{bail, Context, Result};
use concord_common::hist::Hist;
use concord_common::sched::SchedSpec;
use concord_common::topology::TopologySpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::kernel;
use crate::meters::{bpfcost, wasted};
use crate::outage::OutageMix;
use crate::protocol::exit;
use crate::util::progress;
use crate::vm;
use concord_workloads::erlang::BusyWait;

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
    /// Several, comma-separated, make a size axis: each scenario at each topology, its load
    /// per CPU the same (the workloads scale with the CPUs), reported side by side with the
    /// cost per callback and the kicks per CPU at each size.
    #[arg(long, value_delimiter = ',')]
    pub topology: Vec<String>,
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
    /// Also trace IPIs and interrupt entries, for the stall meter (how long a CPU executed
    /// nothing at all: a long wait then is the machine's, not the scheduler's). Off by default:
    /// under TCG the extra events slow the guest enough to change the figures.
    #[arg(long)]
    pub trace_stalls: bool,
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
    r.is_at(sp.scenario, sp.load, sp.point_topology().as_deref())
        && r.sched == sched
        && r.repeat == repeat
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
    /// The topology, when the compare has a size axis (several --topology).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
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
    /// The compare has a size axis: the topology is part of the point's name.
    pub scale: bool,
}

impl ScenarioPlan {
    /// How the plan is named in reports and file names: `erlang@60%`, `wakeup`,
    /// `throughput@2n2l4c` (a size axis).
    pub fn name(&self) -> String {
        point_name(self.scenario, self.load, self.point_topology().as_deref())
    }

    /// The topology as part of the point (a size axis), else None.
    pub fn point_topology(&self) -> Option<String> {
        self.scale.then(|| self.topology.to_string())
    }
}

/// A scenario at a load point or a size: `erlang@60%`, `wakeup@4n4l4c`, or the scenario's
/// name.
pub fn point_name(s: Scenario, load: Option<f64>, topology: Option<&str>) -> String {
    let mut n = s.name().to_string();
    if let Some(l) = load {
        n += &format!("@{:.0}%", l * 100.0);
    }
    if let Some(t) = topology {
        n += &format!("@{t}");
    }
    n
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
    let mut topologies = Vec::new();
    for t in &args.topology {
        let spec = TopologySpec::parse(t)?;
        if topologies.contains(&spec) {
            bail!("--topology names {spec} twice");
        }
        topologies.push(spec);
    }
    let scale = topologies.len() > 1;
    if scale && loads.len() > 1 && args.scenarios.iter().any(|s| s.is_erlang()) {
        bail!("--topology with several sizes takes one --loads point: a sweep is over load or size, not both");
    }
    let mut scenarios = Vec::new();
    let mut seen = Vec::new();
    for &s in &args.scenarios {
        if seen.contains(&s) {
            bail!("--scenarios names {} twice", s.name());
        }
        seen.push(s);
        let topos = if topologies.is_empty() {
            vec![TopologySpec::parse(s.default_topology())?]
        } else {
            topologies.clone()
        };
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
        for topology in topos {
            for &load in &points {
                scenarios.push(ScenarioPlan {
                    scenario: s,
                    topology,
                    secs: args.secs.unwrap_or(s.default_secs()),
                    icount,
                    load,
                    scale,
                });
            }
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
        trace_stalls: args.trace_stalls,
    };
    let cmd = vec![
        "concord-lab".into(),
        "compare-run".into(),
        serde_json::to_string(&params)?,
    ];
    // Under -icount one host thread runs every vCPU: a guest second costs host time in
    // proportion to the vCPUs (4 for the usual 4; a 64-vCPU throughput run timed out at 4).
    let slowdown = match sp.icount {
        Some(_) => f64::from(topology.nr_cpus().max(4)),
        None => 1.0,
    };
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
        topology: sp.point_topology(),
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
        match collect::collect(
            &mut rec,
            scenario,
            topology.nr_cpus() as usize,
            sp.icount.is_some(),
            keep_traces,
            args.trace_stalls,
        ) {
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
}
