//! The compare report's data: per scenario point and scheduler every figure's median and
//! min–max over the repeats, the BPF cost per callback, the merged latency histogram, the
//! verdicts, and the raw runs, as results.json holds them. Rendered by markdown.rs (report.md,
//! report.html) and plots.rs (line charts); compared by diff.rs.

use anyhow::{Context, Result};
use concord_common::hist::Hist;
use concord_common::sched::SchedSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use super::{point_name, CompareRun, MetricDef, Scenario, ScenarioPlan};
use crate::charts::Spread;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchedResult {
    pub sched: String,
    pub runs_ok: usize,
    pub runs: usize,
    pub metrics: BTreeMap<String, Spread>,
    /// Per callback: median ns per call and median calls over the runs.
    pub bpf_ns_per_call: BTreeMap<String, Spread>,
    pub bpf_calls: BTreeMap<String, Spread>,
    pub bpf_verified_insns: BTreeMap<String, u64>,
    #[serde(default)]
    pub bpf_jited_bytes: BTreeMap<String, u64>,
    pub merged_latency: Option<Hist>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    /// The erlang scenario's offered load (a point of the sweep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    pub topology: String,
    /// The compare has a size axis: the topology is part of the point's name.
    #[serde(default)]
    pub scale: bool,
    pub secs: f64,
    /// QEMU -icount shift the runs used (None: default multi-threaded TCG).
    #[serde(default)]
    pub icount: Option<u32>,
    pub baseline: String,
    pub metrics: Vec<MetricDef>,
    pub results: Vec<SchedResult>,
}

/// Layout version of results.json: 2 added `schema` and `provenance` (files without them read
/// as version 0 with an empty provenance).
pub const SCHEMA_VERSION: u32 = 2;

/// Where a set of results came from, enough to run it again and to tell two sets apart.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// The command as typed.
    pub command: String,
    pub started_utc: String,
    pub lab_version: String,
    /// Each scheduler's label and what its binary says of its version (scx_concord's carries
    /// the commit it was built from).
    pub scheds: Vec<(String, String)>,
    pub qemu: String,
    pub host_cpu: String,
    pub host_cpus: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareReport {
    #[serde(default)]
    pub schema: u32,
    #[serde(default)]
    pub provenance: Provenance,
    pub kernel: String,
    pub repeats: usize,
    pub scenarios: Vec<ScenarioResult>,
    pub runs: Vec<CompareRun>,
}

pub fn run_line(r: &CompareRun) -> String {
    if !r.ok {
        return format!(
            "{} under {} FAILED: {} (run directory {})",
            r.point_name(),
            r.sched,
            r.error.as_deref().unwrap_or("?"),
            r.run_dir.display()
        );
    }
    let defs = r.scenario.metrics();
    let shown: Vec<String> = defs
        .iter()
        .filter_map(|d| {
            r.metrics
                .get(&d.key)
                .map(|v| format!("{} {}", d.label, fmt_value(*v)))
        })
        .collect();
    format!("{} under {}: {}", r.point_name(), r.sched, shown.join(", "))
}

pub(super) fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(super) fn show(s: &Spread) -> String {
    match s.n {
        0 => "–".into(),
        1 => fmt_value(s.median),
        _ => format!(
            "{} ({}–{})",
            fmt_value(s.median),
            fmt_value(s.min),
            fmt_value(s.max)
        ),
    }
}

pub fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').to_string()
}

impl ScenarioResult {
    /// `erlang@60%`, `wakeup`, `throughput@2n2l4c` (a size axis).
    pub fn name(&self) -> String {
        point_name(self.scenario, self.load, self.point_topology().as_deref())
    }

    /// The topology as part of the point (a size axis), else None.
    pub fn point_topology(&self) -> Option<String> {
        self.scale.then(|| self.topology.clone())
    }

    /// Whether `r` is a run of this point.
    pub fn has_run(&self, r: &CompareRun) -> bool {
        r.is_at(self.scenario, self.load, self.point_topology().as_deref())
    }
}

impl CompareRun {
    pub fn point_name(&self) -> String {
        point_name(self.scenario, self.load, self.topology.as_deref())
    }

    /// Whether this run is of the point (scenario, load, size-axis topology): what a saved run,
    /// a report's point and a plan's point are matched by.
    pub fn is_at(&self, scenario: Scenario, load: Option<f64>, topology: Option<&str>) -> bool {
        self.scenario == scenario && self.load == load && self.topology.as_deref() == topology
    }
}

impl CompareReport {
    pub fn build(
        kernel: &str,
        repeats: usize,
        scenarios: &[ScenarioPlan],
        scheds: &[SchedSpec],
        runs: Vec<CompareRun>,
    ) -> Self {
        let scenarios = scenarios
            .iter()
            .map(|sp| {
                let defs = sp.scenario.metrics();
                let mut sc = ScenarioResult {
                    scenario: sp.scenario,
                    load: sp.load,
                    topology: sp.topology.to_string(),
                    scale: sp.scale,
                    secs: sp.secs,
                    icount: sp.icount,
                    baseline: scheds.first().map(|s| s.label()).unwrap_or_default(),
                    metrics: defs.clone(),
                    results: Vec::new(),
                };
                sc.results = scheds
                    .iter()
                    .map(|s| {
                        let label = s.label();
                        let mine: Vec<&CompareRun> = runs
                            .iter()
                            .filter(|r| sc.has_run(r) && r.sched == label)
                            .collect();
                        sched_result(&label, &defs, &mine)
                    })
                    .collect();
                sc
            })
            .collect();
        Self {
            schema: SCHEMA_VERSION,
            provenance: Provenance::default(),
            kernel: kernel.into(),
            repeats,
            scenarios,
            runs,
        }
    }

    /// The runs of one scenario point under one scheduler that succeeded.
    pub(super) fn ok_runs<'a>(
        &'a self,
        sc: &'a ScenarioResult,
        sched: &'a str,
    ) -> impl Iterator<Item = &'a CompareRun> + 'a {
        self.runs
            .iter()
            .filter(move |x| x.ok && sc.has_run(x) && x.sched == sched)
    }

    /// One line per scenario point with request latencies: each scheduler's median p99 (and
    /// p99.9) as a ratio to the baseline's, the worst single run, and whether it collapsed (a run
    /// whose p99 is over 3x the baseline's median).
    pub fn verdicts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sc in &self.scenarios {
            let Some(base) = sc.results.first() else {
                continue;
            };
            let (Some(b99), Some(b999)) = (
                base.metrics.get("request_p99_ms"),
                base.metrics.get("request_p999_ms"),
            ) else {
                continue;
            };
            if b99.n == 0 || b99.median <= 0.0 {
                continue;
            }
            let parts: Vec<String> = sc.results[1..]
                .iter()
                .filter_map(|r| {
                    let p99 = r.metrics.get("request_p99_ms").filter(|s| s.n > 0)?;
                    let p999 = r.metrics.get("request_p999_ms").filter(|s| s.n > 0)?;
                    let collapsed = self
                        .ok_runs(sc, &r.sched)
                        .filter(|x| {
                            x.metrics
                                .get("request_p99_ms")
                                .is_some_and(|v| *v > 3.0 * b99.median)
                        })
                        .count();
                    Some(format!(
                        "{} p99 {:.2}x, p99.9 {:.2}x{}",
                        r.sched,
                        p99.median / b99.median,
                        p999.median / b999.median.max(1e-9),
                        if collapsed > 0 {
                            format!(" ({collapsed} of {} runs over 3x)", p99.n)
                        } else {
                            String::new()
                        }
                    ))
                })
                .collect();
            out.push(format!(
                "verdict {}: against {} (p99 {:.1} ms): {}",
                sc.name(),
                base.sched,
                b99.median,
                parts.join("; ")
            ));
        }
        out
    }

    pub fn all_ok(&self) -> bool {
        self.runs.iter().all(|r| r.ok)
    }
}

fn sched_result(label: &str, defs: &[MetricDef], runs: &[&CompareRun]) -> SchedResult {
    let ok: Vec<&&CompareRun> = runs.iter().filter(|r| r.ok).collect();
    let metrics = defs
        .iter()
        .map(|d| {
            let v: Vec<f64> = ok
                .iter()
                .filter_map(|r| r.metrics.get(&d.key).copied())
                .collect();
            (d.key.clone(), Spread::of(&v))
        })
        .collect();
    let mut ns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut calls: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut insns = BTreeMap::new();
    let mut jited = BTreeMap::new();
    for r in &ok {
        for p in &r.bpf {
            if let Some(x) = p.ns_per_call() {
                ns.entry(p.callback.clone()).or_default().push(x);
            }
            calls
                .entry(p.callback.clone())
                .or_default()
                .push(p.run_cnt as f64);
            insns.insert(p.callback.clone(), p.verified_insns);
            jited.insert(p.callback.clone(), p.bytes_jited);
        }
    }
    let mut merged: Option<Hist> = None;
    for r in &ok {
        if let Some(h) = &r.latency {
            merged.get_or_insert_with(Hist::default).merge(h);
        }
    }
    SchedResult {
        sched: label.into(),
        runs_ok: ok.len(),
        runs: runs.len(),
        metrics,
        bpf_ns_per_call: ns.into_iter().map(|(k, v)| (k, Spread::of(&v))).collect(),
        bpf_calls: calls
            .into_iter()
            .map(|(k, v)| (k, Spread::of(&v)))
            .collect(),
        bpf_verified_insns: insns,
        bpf_jited_bytes: jited,
        merged_latency: merged,
    }
}

pub fn load(path: &Path) -> Result<CompareReport> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&b).with_context(|| {
        format!(
            "{} is not a concord-lab compare results.json",
            path.display()
        )
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::diff::diff;
    use super::*;
    use concord_common::topology::TopologySpec;
    use std::path::PathBuf;

    pub(in crate::compare) fn run(
        scenario: Scenario,
        sched: &str,
        repeat: usize,
        p99: f64,
        ok: bool,
    ) -> CompareRun {
        let mut latency = Hist::default();
        latency.record((p99 * 1000.0) as u64);
        CompareRun {
            scenario,
            load: None,
            topology: None,
            sched: sched.into(),
            repeat,
            ok,
            error: (!ok).then(|| "boom".into()),
            run_dir: PathBuf::from("/tmp/x"),
            wall_secs: 1.0,
            metrics: BTreeMap::from([
                ("wake_p99_us".to_string(), p99),
                ("wasted_pct".to_string(), 0.5),
            ]),
            latency: Some(latency),
            per_second_p99_ms: Vec::new(),
            bpf: vec![crate::meters::bpfcost::ProgCost {
                name: format!("{sched}_enqueue"),
                callback: "enqueue".into(),
                run_cnt: 10,
                run_time_ns: 1000 * (repeat as u64 + 1),
                verified_insns: 77,
                bytes_xlated: 0,
                bytes_jited: 900,
            }],
            wasted: None,
        }
    }

    pub(in crate::compare) fn report(runs: Vec<CompareRun>) -> CompareReport {
        let scheds = [
            SchedSpec::parse("eevdf").unwrap(),
            SchedSpec::parse("concord").unwrap(),
        ];
        let topo = TopologySpec::parse("1l4c").unwrap();
        CompareReport::build(
            "7.3.4",
            3,
            &[ScenarioPlan {
                scenario: Scenario::Wakeup,
                topology: topo,
                secs: 10.0,
                icount: Some(2),
                load: None,
                scale: false,
            }],
            &scheds,
            runs,
        )
    }

    #[test]
    fn medians_ratios_and_failed_runs() {
        let mut runs = Vec::new();
        for (i, (e, c)) in [(100.0, 50.0), (300.0, 70.0), (200.0, 60.0)]
            .iter()
            .enumerate()
        {
            runs.push(run(Scenario::Wakeup, "eevdf", i, *e, true));
            runs.push(run(Scenario::Wakeup, "concord", i, *c, true));
        }
        runs.push(run(Scenario::Wakeup, "concord", 3, 1e6, false));
        let rep = report(runs);
        assert!(!rep.all_ok());
        let sc = &rep.scenarios[0];
        let c = &sc.results[1];
        assert_eq!((c.runs_ok, c.runs), (3, 4));
        assert_eq!(
            c.metrics["wake_p99_us"].median, 60.0,
            "the failed run is not counted"
        );
        assert_eq!(c.bpf_ns_per_call["enqueue"].median, 200.0);
        assert_eq!(c.merged_latency.as_ref().unwrap().count(), 3);
        let md = rep.markdown();
        assert!(
            md.contains("| wake-up p99 (µs) | lower | 200 (100–300) | 60.0 (50.0–70.0) ·0.30x |"),
            "{md}"
        );
        assert!(md.contains("Failed runs:"));
        assert!(md.contains("| enqueue |"));
        // JSON round trip, and a diff against itself changes nothing.
        let back: CompareReport =
            serde_json::from_slice(&serde_json::to_vec(&rep).unwrap()).unwrap();
        let d = diff(&rep, &back);
        assert!(
            d.contains(
                "| concord | wake-up p99 (µs) | 60.0 (50.0–70.0) | 60.0 (50.0–70.0) | 1.00x |  |"
            ),
            "{d}"
        );
    }

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(
            slug("concord:--pinned-queue shared"),
            "concord-pinned-queue-shared"
        );
        assert_eq!(slug("eevdf"), "eevdf");
    }
}
