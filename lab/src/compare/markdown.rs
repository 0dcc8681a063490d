//! The compare report as people read it: report.md (tables, verdicts, links to every picture)
//! and the files written beside it.

use anyhow::{Context, Result};
use concord_common::hist::Hist;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::report::{fmt_value, run_line, show, slug, CompareReport, ScenarioResult, SchedResult};
use super::{Better, CompareRun};
use crate::charts::{cdf_svg, ratio, xml_escape};
use crate::meters::heatmap;
use crate::meters::wasted::WastedReport;
use concord_common::topology::TopologySpec;

/// The figures a size axis lines up: cost per callback and kicks per CPU.
const SIZE_KEYS: [&str; 4] = [
    "bpf_ns_per_call",
    "bpf_ns_per_call_busy_cpu",
    "resched_ipis_per_cpu_sec",
    "call_ipis_per_cpu_sec",
];

impl CompareReport {
    /// For each scenario measured at several sizes (several --topology): per scheduler, each
    /// size's cost per callback and IPIs per CPU, and how much the largest size's figure is of
    /// the smallest's (sizes by CPU count). Empty without a size axis.
    pub fn by_size(&self) -> String {
        let mut s = String::new();
        let mut done = Vec::new();
        for first in self.scenarios.iter().filter(|sc| sc.scale) {
            if done.contains(&first.scenario) {
                continue;
            }
            done.push(first.scenario);
            let mut points: Vec<&ScenarioResult> = self
                .scenarios
                .iter()
                .filter(|sc| sc.scale && sc.scenario == first.scenario)
                .collect();
            points.sort_by_key(|sc| cpus_of(&sc.topology));
            let _ = writeln!(
                s,
                "\n### {} by machine size ({})\n",
                first.scenario.name(),
                points
                    .iter()
                    .map(|p| p.topology.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let _ = write!(s, "| scheduler | figure |");
            for p in &points {
                let _ = write!(s, " {} ({} CPUs) |", p.topology, cpus_of(&p.topology));
            }
            let _ = writeln!(
                s,
                " largest / smallest |\n|---|---|{}---|",
                "---|".repeat(points.len())
            );
            for (i, r) in first.results.iter().enumerate() {
                for key in SIZE_KEYS {
                    let vals: Vec<Option<f64>> = points
                        .iter()
                        .map(|p| {
                            let v = p.results.get(i).and_then(|r| r.metrics.get(key));
                            v.filter(|v| v.n > 0).map(|v| v.median)
                        })
                        .collect();
                    if vals.iter().all(Option::is_none) {
                        continue;
                    }
                    let label = first
                        .metrics
                        .iter()
                        .find(|d| d.key == key)
                        .map_or(key, |d| d.label.as_str());
                    let _ = write!(s, "| {} | {label} |", r.sched);
                    for v in &vals {
                        let _ = write!(s, " {} |", v.map(fmt_value).unwrap_or_else(|| "–".into()));
                    }
                    let growth = match (
                        vals.first().copied().flatten(),
                        vals.last().copied().flatten(),
                    ) {
                        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", b / a),
                        _ => "–".into(),
                    };
                    let _ = writeln!(s, " {growth} |");
                }
            }
        }
        s
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
        s += &self.by_size();
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
                let _ = writeln!(s, "\n![latency CDF]({})", cdf_name(sc));
            }
            for r in &sc.results {
                if self.heat_map_run(sc, &r.sched).is_some() {
                    let _ = writeln!(
                        s,
                        "\n![per-CPU timeline under {}]({})",
                        r.sched,
                        heat_map_name(sc, &r.sched)
                    );
                }
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

    /// The run whose per-CPU timeline stands for @sched at @sc: its first successful run with
    /// a wasted-core replay.
    fn heat_map_run<'a>(
        &'a self,
        sc: &'a ScenarioResult,
        sched: &'a str,
    ) -> Option<&'a WastedReport> {
        self.ok_runs(sc, sched).find_map(|x| x.wasted.as_ref())
    }

    /// Every picture of the report by file name: sweeps and per-second p99 lines, one latency
    /// CDF per scenario with latencies, one heat map per scenario and scheduler.
    pub fn pictures(&self) -> Vec<(String, String)> {
        let mut out = self.sweeps();
        out.extend(self.timelines());
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
                out.push((cdf_name(sc), cdf_svg(&title, &series)));
            }
            for r in &sc.results {
                if let Some(w) = self.heat_map_run(sc, &r.sched) {
                    let title = format!(
                        "{} under {}: per-CPU timeline ({})",
                        sc.name(),
                        r.sched,
                        sc.topology
                    );
                    out.push((heat_map_name(sc, &r.sched), heatmap::svg(&title, w)));
                }
            }
        }
        out
    }

    /// report.md, report.html (the same with its pictures inside: one file to pass on),
    /// results.json and every picture as its own SVG file.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut put = |name: &str, body: &[u8]| -> Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
            files.push(p);
            Ok(())
        };
        let pictures = self.pictures();
        let md = self.markdown();
        put("report.md", md.as_bytes())?;
        let title = format!("concord-lab compare on {}", self.kernel);
        put("report.html", html(&title, &md, &pictures).as_bytes())?;
        put("results.json", &serde_json::to_vec_pretty(self)?)?;
        for (name, svg) in &pictures {
            put(name, svg.as_bytes())?;
        }
        Ok(files)
    }
}

fn cdf_name(sc: &ScenarioResult) -> String {
    format!("{}-latency-cdf.svg", slug(&sc.name()))
}

fn heat_map_name(sc: &ScenarioResult, sched: &str) -> String {
    format!("{}-heat-{}.svg", slug(&sc.name()), slug(sched))
}

/// @markdown as one HTML page with @pictures (file name, SVG) inline where it links them: a
/// report that opens anywhere without the directory beside it. A link to a picture that is not
/// there says so in the page.
pub fn html(title: &str, markdown: &str, pictures: &[(String, String)]) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

    let mut in_image = false;
    let events = Parser::new_ext(markdown, Options::ENABLE_TABLES).filter_map(|ev| match ev {
        Event::Start(Tag::Image { dest_url, .. }) => {
            in_image = true;
            let svg = match pictures.iter().find(|(n, _)| *n == *dest_url) {
                Some((_, svg)) => format!("<figure>{svg}</figure>"),
                None => format!("<em>(picture {} missing)</em>", xml_escape(&dest_url)),
            };
            Some(Event::InlineHtml(svg.into()))
        }
        Event::End(TagEnd::Image) => {
            in_image = false;
            None
        }
        // the alt text: the picture itself is inline
        _ if in_image => None,
        other => Some(other),
    });
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, events);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        xml_escape(title)
    )
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em}\
table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px}\
tr:nth-child(even){background:#f6f6f6}figure{margin:1em 0}code{background:#f0f0f0}";

/// CPUs of a topology as written in a report (0 if it does not parse).
fn cpus_of(topology: &str) -> u32 {
    TopologySpec::parse(topology).map_or(0, |t| t.nr_cpus())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::report::tests::run;
    use crate::compare::{Scenario, ScenarioPlan};
    use concord_common::sched::SchedSpec;

    #[test]
    fn a_size_axis_lines_up_each_size_and_the_growth() {
        let scheds = [
            SchedSpec::parse("eevdf").unwrap(),
            SchedSpec::parse("concord").unwrap(),
        ];
        let plans: Vec<ScenarioPlan> = ["4n4l4c", "1l4c"]
            .iter()
            .map(|t| ScenarioPlan {
                scenario: Scenario::Throughput,
                topology: TopologySpec::parse(t).unwrap(),
                secs: 10.0,
                icount: Some(2),
                load: None,
                scale: true,
            })
            .collect();
        let mut runs = Vec::new();
        for (topo, ns) in [("1l4c", 1000.0), ("4n4l4c", 1100.0)] {
            for sched in ["eevdf", "concord"] {
                let mut r = run(Scenario::Throughput, sched, 0, 1.0, true);
                r.topology = Some(TopologySpec::parse(topo).unwrap().to_string());
                if sched == "concord" {
                    r.metrics.insert("bpf_ns_per_call".into(), ns);
                }
                runs.push(r);
            }
        }
        let rep = CompareReport::build("7.3.4", 1, &plans, &scheds, runs);
        assert_eq!(rep.scenarios[0].name(), "throughput@4n4l4c1t");
        assert_eq!(
            rep.scenarios[0].results[1].runs_ok, 1,
            "runs found by topology"
        );
        let t = rep.by_size();
        // Smallest first, whatever the order of --topology.
        assert!(
            t.contains("| 1n1l4c1t (4 CPUs) | 4n4l4c1t (64 CPUs) |"),
            "{t}"
        );
        assert!(
            t.contains("| concord | BPF ns per callback | 1000 | 1100 | 1.10x |"),
            "{t}"
        );
        assert!(!t.contains("| eevdf | BPF"), "EEVDF has no callbacks: {t}");
        let one = CompareReport::build("7.3.4", 1, &plans[..1], &scheds, Vec::new());
        assert!(CompareReport {
            scenarios: vec![],
            ..one
        }
        .by_size()
        .is_empty());
    }

    #[test]
    fn html_inlines_the_linked_pictures_and_the_tables() {
        let md = "# t\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![cdf](x.svg)\n\n![gone](y.svg)\n";
        let pics = vec![("x.svg".to_string(), "<svg id=\"x\"></svg>".to_string())];
        let h = html("a <title>", md, &pics);
        assert!(h.contains("<figure><svg id=\"x\"></svg></figure>"), "{h}");
        assert!(h.contains("<td>2</td>"), "{h}");
        assert!(h.contains("(picture y.svg missing)"), "{h}");
        assert!(h.contains("<title>a &lt;title&gt;</title>"), "{h}");
        assert!(!h.contains("<img"), "{h}");
    }
}
