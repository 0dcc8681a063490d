//! The compare report: per scenario a table of every figure under every scheduler (median and
//! min–max over the repeats, ratio of medians to the baseline), the BPF cost per callback, the
//! latency CDF and one per-CPU heat map per scheduler as SVG, everything raw as JSON; and `diff`
//! of two such JSON files.

use anyhow::{Context, Result};
use concord_common::hist::Hist;
use concord_common::sched::SchedSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{point_name, Better, CompareRun, MetricDef, Scenario, ScenarioPlan};
use crate::charts::{cdf_svg, ratio, Spread};
use crate::meters::heatmap;

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
            point_name(r.scenario, r.load),
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
    format!(
        "{} under {}: {}",
        point_name(r.scenario, r.load),
        r.sched,
        shown.join(", ")
    )
}

fn fmt_value(v: f64) -> String {
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

fn show(s: &Spread) -> String {
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
    /// `erlang@60%`, `wakeup`.
    pub fn name(&self) -> String {
        point_name(self.scenario, self.load)
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
                let (scenario, topo, secs, load) = (sp.scenario, sp.topology, sp.secs, sp.load);
                let defs = scenario.metrics();
                let results = scheds
                    .iter()
                    .map(|s| {
                        let label = s.label();
                        let mine: Vec<&CompareRun> = runs
                            .iter()
                            .filter(|r| {
                                r.scenario == scenario && r.load == load && r.sched == label
                            })
                            .collect();
                        sched_result(&label, &defs, &mine)
                    })
                    .collect();
                ScenarioResult {
                    scenario,
                    load,
                    topology: topo.to_string(),
                    secs,
                    icount: sp.icount,
                    baseline: scheds.first().map(|s| s.label()).unwrap_or_default(),
                    metrics: defs,
                    results,
                }
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

    /// For each scenario run at several loads: its p99 (and p99.9) against load, per scheduler.
    pub fn sweeps(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut seen: Vec<Scenario> = Vec::new();
        for sc in &self.scenarios {
            if sc.load.is_none() || seen.contains(&sc.scenario) {
                continue;
            }
            seen.push(sc.scenario);
            let points: Vec<&ScenarioResult> = self
                .scenarios
                .iter()
                .filter(|x| x.scenario == sc.scenario && x.load.is_some())
                .collect();
            if points.len() < 2 {
                continue;
            }
            for (key, what) in [
                ("request_p99_ms", "request p99"),
                ("request_p999_ms", "request p99.9"),
            ] {
                let series: Vec<(String, Vec<(f64, Spread)>)> = sc
                    .results
                    .iter()
                    .map(|r| {
                        let pts = points
                            .iter()
                            .filter_map(|p| {
                                let res = p.results.iter().find(|x| x.sched == r.sched)?;
                                Some((p.load?, *res.metrics.get(key)?))
                            })
                            .collect();
                        (r.sched.clone(), pts)
                    })
                    .collect();
                let title = format!(
                    "{}: {what} against offered load, {} on {}",
                    sc.scenario.name(),
                    sc.topology,
                    self.kernel
                );
                out.push((
                    format!("{}-sweep-{}.svg", sc.scenario.name(), slug(what)),
                    sweep_svg(&title, &format!("{what} (ms)"), &LOAD_AXIS, &series),
                ));
            }
        }
        out
    }

    /// The runs of one scenario point under one scheduler that succeeded.
    fn ok_runs<'a>(
        &'a self,
        sc: &'a ScenarioResult,
        sched: &'a str,
    ) -> impl Iterator<Item = &'a CompareRun> + 'a {
        self.runs.iter().filter(move |x| {
            x.ok && x.scenario == sc.scenario && x.load == sc.load && x.sched == sched
        })
    }

    /// Request p99 per second of each erlang point, one line per scheduler (median and
    /// min–max over its runs): a tail made by one stall, a steady one and a collapse (a ramp)
    /// look alike in a run's p99 and differ here.
    pub fn timelines(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for sc in self.scenarios.iter().filter(|s| s.load.is_some()) {
            let series: Vec<(String, Vec<(f64, Spread)>)> = sc
                .results
                .iter()
                .map(|r| {
                    let runs: Vec<&Vec<f64>> = self
                        .ok_runs(sc, &r.sched)
                        .filter(|x| !x.per_second_p99_ms.is_empty())
                        .map(|x| &x.per_second_p99_ms)
                        .collect();
                    let secs = runs.iter().map(|v| v.len()).max().unwrap_or(0);
                    let pts = (0..secs)
                        .map(|i| {
                            let v: Vec<f64> =
                                runs.iter().filter_map(|x| x.get(i).copied()).collect();
                            (i as f64, Spread::of(&v))
                        })
                        .collect();
                    (r.sched.clone(), pts)
                })
                .filter(|(_, pts): &(String, Vec<(f64, Spread)>)| !pts.is_empty())
                .collect();
            if series.is_empty() {
                continue;
            }
            let title = format!(
                "{}: request p99 per second, {} on {}",
                sc.name(),
                sc.topology,
                self.kernel
            );
            out.push((
                format!("{}-p99-per-second.svg", slug(&sc.name())),
                sweep_svg(&title, "request p99 (ms)", &SECONDS_AXIS, &series),
            ));
        }
        out
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

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# compare on {}: {} repeat(s) per scheduler and scenario
",
            self.kernel, self.repeats
        );
        let _ = writeln!(
            s,
            "Median (min–max) over the repeats; `·0.80x` is the ratio of medians to the baseline. Wasted cores: CPU time a CPU was idle while a task allowed on it had waited > 1 ms (ftrace replay). BPF: struct_ops callbacks' mean run time (kernel.bpf_stats_enabled).\n"
        );
        let p = &self.provenance;
        if !p.command.is_empty() {
            let _ = writeln!(
                s,
                "Run {} with `{}` (concord-lab {}); {}; host: {} ({} CPUs); QEMU: {}.\n",
                p.started_utc,
                p.command,
                p.lab_version,
                p.scheds
                    .iter()
                    .map(|(l, v)| format!("{l}: {v}"))
                    .collect::<Vec<_>>()
                    .join("; "),
                p.host_cpu,
                p.host_cpus,
                p.qemu
            );
        }
        for v in self.verdicts() {
            let _ = writeln!(s, "- {v}");
        }
        let mut sweeps = self.sweeps();
        sweeps.extend(self.timelines());
        if !sweeps.is_empty() {
            let _ = writeln!(s);
            for (name, _) in &sweeps {
                let _ = writeln!(s, "![{name}]({name})");
            }
        }
        let _ = writeln!(s);
        for sc in &self.scenarios {
            let _ = writeln!(
                s,
                "## {}: {}, {} s per run, {}, baseline {}\n",
                sc.name(),
                sc.topology,
                sc.secs,
                sc.icount
                    .map(|n| format!("QEMU -icount shift={n}"))
                    .unwrap_or_else(|| "multi-threaded TCG".into()),
                sc.baseline
            );
            let _ = write!(s, "| figure | better |");
            for r in &sc.results {
                let _ = write!(s, " {} ({}/{} runs) |", r.sched, r.runs_ok, r.runs);
            }
            let _ = writeln!(s, "\n|---|---|{}", "---|".repeat(sc.results.len()));
            let base = sc.results.first();
            for d in &sc.metrics {
                let better = match d.better {
                    Better::Lower => "lower",
                    Better::Higher => "higher",
                    Better::Neither => "",
                };
                let _ = write!(s, "| {} | {better} |", d.label);
                for (i, r) in sc.results.iter().enumerate() {
                    let v = r.metrics.get(&d.key).copied().unwrap_or_default();
                    let rat = base
                        .and_then(|b| b.metrics.get(&d.key))
                        .and_then(|b| ratio(&v, b));
                    match (i, rat) {
                        (0, _) | (_, None) => {
                            let _ = write!(s, " {} |", show(&v));
                        }
                        (_, Some(x)) => {
                            let _ = write!(s, " {} ·{x:.2}x |", show(&v));
                        }
                    }
                }
                let _ = writeln!(s);
            }
            if sc.scenario.latency_label().is_some() {
                let _ = writeln!(s, "\n![latency CDF]({}-latency-cdf.svg)", slug(&sc.name()));
            }
            // BPF cost per callback, for the schedulers that have callbacks.
            let with_bpf: Vec<&SchedResult> = sc
                .results
                .iter()
                .filter(|r| !r.bpf_ns_per_call.is_empty())
                .collect();
            if !with_bpf.is_empty() {
                let mut callbacks: Vec<&String> = with_bpf
                    .iter()
                    .flat_map(|r| r.bpf_ns_per_call.keys())
                    .collect();
                callbacks.sort();
                callbacks.dedup();
                let _ = write!(
                    s,
                    "\nBPF ns per call (calls per run; verifier-processed instructions when reported / JIT-compiled bytes):\n\n| callback |"
                );
                for r in &with_bpf {
                    let _ = write!(s, " {} |", r.sched);
                }
                let _ = writeln!(s, "\n|---|{}", "---|".repeat(with_bpf.len()));
                for cb in callbacks {
                    let _ = write!(s, "| {cb} |");
                    for r in &with_bpf {
                        match (r.bpf_ns_per_call.get(cb), r.bpf_calls.get(cb)) {
                            (Some(ns), Some(calls)) => {
                                let _ = write!(
                                    s,
                                    " {} ({}; {} / {} B) |",
                                    show(ns),
                                    fmt_value(calls.median),
                                    r.bpf_verified_insns.get(cb).copied().unwrap_or(0),
                                    r.bpf_jited_bytes.get(cb).copied().unwrap_or(0)
                                );
                            }
                            _ => {
                                let _ = write!(s, " – |");
                            }
                        }
                    }
                    let _ = writeln!(s);
                }
            }
            let _ = writeln!(s);
        }
        let failed: Vec<&CompareRun> = self.runs.iter().filter(|r| !r.ok).collect();
        if !failed.is_empty() {
            let _ = writeln!(s, "Failed runs:");
            for r in failed {
                let _ = writeln!(s, "- {}", run_line(r));
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "Every run, in the order they ran:\n");
        for (i, r) in self.runs.iter().enumerate() {
            let _ = writeln!(s, "{}. {}", i + 1, run_line(r));
        }
        s
    }

    /// report.md, results.json, one latency CDF per scenario with latencies and one heat map
    /// per scenario and scheduler (its first successful run).
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut put = |name: String, body: Vec<u8>| -> Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
            files.push(p);
            Ok(())
        };
        put("report.md".into(), self.markdown().into_bytes())?;
        for (name, svg) in self.sweeps().into_iter().chain(self.timelines()) {
            put(name, svg.into_bytes())?;
        }
        put("results.json".into(), serde_json::to_vec_pretty(self)?)?;
        for sc in &self.scenarios {
            if let Some(label) = sc.scenario.latency_label() {
                let series: Vec<(String, &Hist)> = sc
                    .results
                    .iter()
                    .filter_map(|r| r.merged_latency.as_ref().map(|h| (r.sched.clone(), h)))
                    .collect();
                let title = format!(
                    "{}: {label}, {} on {} ({} repeats merged)",
                    sc.name(),
                    sc.topology,
                    self.kernel,
                    self.repeats
                );
                put(
                    format!("{}-latency-cdf.svg", slug(&sc.name())),
                    cdf_svg(&title, &series).into_bytes(),
                )?;
            }
            for r in &sc.results {
                let first = self.ok_runs(sc, &r.sched).find(|x| x.wasted.is_some());
                if let Some(w) = first.and_then(|x| x.wasted.as_ref()) {
                    let title = format!(
                        "{} under {}: per-CPU timeline ({})",
                        sc.name(),
                        r.sched,
                        sc.topology
                    );
                    put(
                        format!("{}-heat-{}.svg", slug(&sc.name()), slug(&r.sched)),
                        heatmap::svg(&title, w).into_bytes(),
                    )?;
                }
            }
        }
        Ok(files)
    }
}

/// What the x axis of `sweep_svg` shows: its label and how a tick's value is written.
pub struct XAxis {
    pub label: &'static str,
    pub tick: fn(f64) -> String,
    /// Label every n-th tick only (1: all), so that a long run of seconds stays legible.
    pub every: usize,
}

/// Offered load, as the sweep's points.
pub const LOAD_AXIS: XAxis = XAxis {
    label: "offered load (share of the BEAM's CPUs)",
    tick: |v| format!("{:.0} %", v * 100.0),
    every: 1,
};

/// Seconds into the measured window.
pub const SECONDS_AXIS: XAxis = XAxis {
    label: "second of the measured window (by the requests' intended start)",
    tick: |v| format!("{v:.0}"),
    every: 2,
};

/// One line per scheduler: a figure's median (and min–max bar) at each point (a load of a
/// sweep, a second of a run), on a log axis. Points: (x, spread) per scheduler.
pub fn sweep_svg(
    title: &str,
    ylabel: &str,
    xaxis: &XAxis,
    series: &[(String, Vec<(f64, Spread)>)],
) -> String {
    use crate::charts::{fmt_ns, xml_escape, COLORS};
    let (w, h) = (860.0, 500.0);
    let (l, r, t, b) = (70.0, 220.0, 40.0, 50.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let all: Vec<&(f64, Spread)> = series.iter().flat_map(|(_, p)| p.iter()).collect();
    let (x0, x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    let (x0, x1) = if x1 > x0 {
        (x0, x1)
    } else {
        (x0 - 0.1, x0 + 0.1)
    };
    let lo = all
        .iter()
        .map(|(_, s)| s.min)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min);
    let hi = all.iter().map(|(_, s)| s.max).fold(0.0, f64::max);
    let (ly0, ly1) = if lo <= hi && lo > 0.0 {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (0.0, 1.0)
    };
    let x = |v: f64| l + (v - x0) / (x1 - x0) * pw;
    let y = |v: f64| t + ph - (v.max(1e-9).log10() - ly0) / (ly1 - ly0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="14" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        xml_escape(title)
    );
    let mut d = ly0;
    while d <= ly1 {
        let yv = y(10f64.powf(d));
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{yv:.1}" x2="{}" y2="{yv:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 6.0,
            yv + 4.0,
            fmt_ns(10f64.powf(d) * 1e6)
        );
        d += 1.0;
    }
    let mut loads: Vec<f64> = all.iter().map(|(x, _)| *x).collect();
    loads.sort_by(f64::total_cmp);
    loads.dedup();
    for (k, v) in loads.into_iter().enumerate() {
        let xv = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{xv:.1}" y1="{t}" x2="{xv:.1}" y2="{}" stroke="#ddd"/>"##,
            t + ph
        );
        if k % xaxis.every.max(1) == 0 {
            let _ = writeln!(
                s,
                r#"<text x="{xv:.1}" y="{}" text-anchor="middle">{}</text>"#,
                t + ph + 16.0,
                xml_escape(&(xaxis.tick)(v))
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        h - 12.0,
        xml_escape(xaxis.label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{} (log scale; bars: min–max)</text>"#,
        t + ph / 2.0,
        xml_escape(ylabel)
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let line: Vec<String> = pts
            .iter()
            .filter(|(_, sp)| sp.n > 0)
            .map(|(v, sp)| format!("{:.1},{:.1}", x(*v), y(sp.median)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            line.join(" ")
        );
        for (v, sp) in pts.iter().filter(|(_, sp)| sp.n > 0) {
            let (xv, off) = (x(*v), (i as f64 - 1.5) * 3.0);
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="1.5"/><circle cx="{xv:.1}" cy="{:.1}" r="3.5" fill="{c}"/>"#,
                xv + off,
                y(sp.min),
                xv + off,
                y(sp.max),
                y(sp.median)
            );
        }
        let ly = t + 20.0 + i as f64 * 22.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            l + pw + 12.0,
            l + pw + 36.0,
            l + pw + 42.0,
            ly + 4.0,
            xml_escape(name)
        );
    }
    let _ = writeln!(s, "</svg>");
    s
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

/// `concord-lab diff A.json B.json`: every figure both reports have, B's median against A's.
/// A change counts as real (`*`) only when the two runs' ranges do not overlap.
pub fn diff(a: &CompareReport, b: &CompareReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# diff: A = {} ({} repeats), B = {} ({} repeats)\n\n`*`: the min–max ranges do not overlap (a change beyond the run-to-run spread).\n",
        a.kernel, a.repeats, b.kernel, b.repeats
    );
    for sb in &b.scenarios {
        let Some(sa) = a
            .scenarios
            .iter()
            .find(|x| x.scenario == sb.scenario && x.load == sb.load)
        else {
            let _ = writeln!(s, "## {}: only in B\n", sb.name());
            continue;
        };
        let _ = writeln!(
            s,
            "## {} (A: {}, B: {})\n",
            sb.scenario.name(),
            sa.topology,
            sb.topology
        );
        let _ = writeln!(
            s,
            "| scheduler | figure | A | B | B/A | |\n|---|---|---|---|---|---|"
        );
        for rb in &sb.results {
            let Some(ra) = sa.results.iter().find(|x| x.sched == rb.sched) else {
                continue;
            };
            for d in &sb.metrics {
                let (Some(va), Some(vb)) = (ra.metrics.get(&d.key), rb.metrics.get(&d.key)) else {
                    continue;
                };
                if va.n == 0 || vb.n == 0 {
                    continue;
                }
                let apart = vb.min > va.max || vb.max < va.min;
                let verdict = match (apart, d.better, vb.median > va.median) {
                    (false, _, _) => "",
                    (true, Better::Neither, _) => "*",
                    (true, Better::Lower, false) | (true, Better::Higher, true) => "* better",
                    (true, _, _) => "* worse",
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {verdict} |",
                    rb.sched,
                    d.label,
                    show(va),
                    show(vb),
                    ratio(vb, va)
                        .map(|r| format!("{r:.2}x"))
                        .unwrap_or_else(|| "–".into())
                );
            }
        }
        let _ = writeln!(s);
    }
    s
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
mod tests {
    use super::*;
    use concord_common::topology::TopologySpec;

    fn run(scenario: Scenario, sched: &str, repeat: usize, p99: f64, ok: bool) -> CompareRun {
        let mut latency = Hist::default();
        latency.record((p99 * 1000.0) as u64);
        CompareRun {
            scenario,
            load: None,
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

    fn report(runs: Vec<CompareRun>) -> CompareReport {
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
            }],
            &scheds,
            runs,
        )
    }

    #[test]
    fn per_second_p99_is_plotted_per_scheduler_over_its_runs() {
        let scheds = [
            SchedSpec::parse("eevdf").unwrap(),
            SchedSpec::parse("concord").unwrap(),
        ];
        let plan = ScenarioPlan {
            scenario: Scenario::Erlang,
            topology: TopologySpec::parse("1l2c").unwrap(),
            secs: 3.0,
            icount: None,
            load: Some(0.1),
        };
        let mut runs = Vec::new();
        for (sched, rep, secs) in [
            ("eevdf", 0, vec![3.0, 4.0, 3.0]),
            ("eevdf", 1, vec![5.0, 90.0, 4.0]),
            ("concord", 0, vec![2.0, 2.0, 2.0]),
            // a failed run is left out
            ("concord", 1, vec![]),
        ] {
            let mut r = run(Scenario::Erlang, sched, rep, 1.0, !secs.is_empty());
            r.load = Some(0.1);
            r.per_second_p99_ms = secs;
            runs.push(r);
        }
        let rep = CompareReport::build("7.3.4", 2, &[plan], &scheds, runs);
        let t = rep.timelines();
        assert_eq!(t.len(), 1);
        let (name, svg) = &t[0];
        assert_eq!(name, "erlang-10-p99-per-second.svg");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("<circle").count(),
            6,
            "three seconds per scheduler"
        );
        // eevdf's second 1 spans its two runs (4 and 90 ms): the axis reaches 100 ms
        assert!(svg.contains("100 ms"), "{svg}");
        assert!(rep.markdown().contains("](erlang-10-p99-per-second.svg)"));
        // scenarios without per-second figures have no timeline
        assert!(report(Vec::new()).timelines().is_empty());
    }

    #[test]
    fn a_sweep_keeps_its_points_apart_and_plots_them() {
        let scheds = [
            SchedSpec::parse("eevdf").unwrap(),
            SchedSpec::parse("concord").unwrap(),
        ];
        let topo = TopologySpec::parse("1l2c").unwrap();
        let plans: Vec<ScenarioPlan> = [0.4, 0.8]
            .iter()
            .map(|&l| ScenarioPlan {
                scenario: Scenario::Erlang,
                topology: topo,
                secs: 10.0,
                icount: None,
                load: Some(l),
            })
            .collect();
        let mut runs = Vec::new();
        for (load, e, c) in [(0.4, 10.0, 5.0), (0.8, 100.0, 20.0)] {
            for (sched, p99) in [("eevdf", e), ("concord", c)] {
                let mut r = run(Scenario::Erlang, sched, 0, p99, true);
                r.load = Some(load);
                r.metrics.insert("request_p99_ms".into(), p99);
                r.metrics.insert("request_p999_ms".into(), p99 * 2.0);
                runs.push(r);
            }
        }
        let rep = CompareReport::build("7.0.13", 1, &plans, &scheds, runs);
        assert_eq!(rep.scenarios.len(), 2);
        assert_eq!(rep.scenarios[1].name(), "erlang@80%");
        let p99 = |i: usize, j: usize| rep.scenarios[i].results[j].metrics["request_p99_ms"].median;
        assert_eq!(
            (p99(0, 0), p99(0, 1), p99(1, 0), p99(1, 1)),
            (10.0, 5.0, 100.0, 20.0)
        );
        let md = rep.markdown();
        assert!(
            md.contains("## erlang@40%") && md.contains("## erlang@80%"),
            "{md}"
        );
        let sweeps = rep.sweeps();
        assert_eq!(sweeps.len(), 2, "p99 and p99.9");
        let (name, svg) = &sweeps[0];
        assert_eq!(name, "erlang-sweep-request-p99.svg");
        // one line per scheduler through its two points, both loads on the axis
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("40 %") && svg.contains("80 %"));
        let v = rep.verdicts();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[1],
            "verdict erlang@80%: against eevdf (p99 100.0 ms): concord p99 0.20x, p99.9 0.20x"
        );
        // a single point is no sweep
        let one = CompareReport::build("7.0.13", 1, &plans[..1], &scheds, Vec::new());
        assert!(one.sweeps().is_empty());
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
    fn diff_flags_changes_beyond_the_spread() {
        let a = report(vec![run(Scenario::Wakeup, "concord", 0, 100.0, true)]);
        let b = report(vec![run(Scenario::Wakeup, "concord", 0, 50.0, true)]);
        let d = diff(&a, &b);
        assert!(d.contains("| 0.50x | * better |"), "{d}");
        let d = diff(&b, &a);
        assert!(d.contains("| 2.00x | * worse |"), "{d}");
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
