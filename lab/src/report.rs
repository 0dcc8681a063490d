//! Reports of repeated scenario runs: per scheduler the median and spread (min..max) over the
//! repeats, ratios against the first scheduler (the baseline, EEVDF by default), a Markdown
//! table, every raw number as JSON, and the latency distributions as an SVG CDF.

use anyhow::{Context, Result};
use concord_common::hist::Hist;
use concord_common::sched::SchedSpec;
use concord_common::topology::TopologySpec;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::bench::{OutageMix, RunOutput, RunRecord};

/// Median and spread of one figure over the repeats.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        }
    }

    /// `12.3 (10.1–15.0)` with `prec` decimals; `–` when there is no data.
    pub fn show(&self, prec: usize) -> String {
        if self.n == 0 {
            return "–".into();
        }
        if self.n == 1 {
            return format!("{:.prec$}", self.median);
        }
        format!(
            "{:.prec$} ({:.prec$}–{:.prec$})",
            self.median, self.min, self.max
        )
    }
}

/// Ratio of medians, `–` when either is missing or the baseline is zero.
pub fn ratio(a: &Spread, base: &Spread) -> Option<f64> {
    (a.n > 0 && base.n > 0 && base.median > 0.0).then(|| a.median / base.median)
}

fn show_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "–".into())
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SchedSummary {
    pub sched: String,
    pub runs_ok: usize,
    pub runs: usize,
    pub p50_ms: Spread,
    pub p99_ms: Spread,
    pub p999_ms: Spread,
    pub max_ms: Spread,
    pub throughput_rps: Spread,
    pub unfinished: Spread,
    /// Mean over the BEAM threads of schedstat run-queue delay per timeslice.
    pub pinned_mean_runq_delay_us: Spread,
    /// Longest stall of any BEAM thread while it had work (preemption or host stall).
    pub pinned_max_stall_ms: Spread,
    /// Longest wake-up latency of any BEAM thread.
    pub pinned_max_wake_ms: Spread,
    pub ring_hops_per_sec: Spread,
    pub hog_reductions_per_sec: Spread,
    /// Guest CPU idle time while the load ran (%): the load keeps every CPU busy, so idle
    /// time here is a CPU left idle while work waited.
    pub idle_pct: Spread,
    /// scx_concord's exact longest waits since attach (only for concord).
    pub concord_pinned_wait_max_ms: Spread,
    pub concord_shared_wait_max_ms: Spread,
    /// Latencies of all repeats merged (for the CDF).
    pub merged_latency: Hist,
}

fn stat_ms(o: &RunOutput, key: &str) -> Option<f64> {
    o.sched_stats
        .as_ref()?
        .get(key)?
        .as_f64()
        .map(|us| us / 1e3)
}

impl SchedSummary {
    pub fn of(sched: &str, runs: &[&RunRecord]) -> Self {
        let outs: Vec<&RunOutput> = runs
            .iter()
            .filter(|r| r.ok)
            .filter_map(|r| r.output.as_ref())
            .collect();
        let col = |f: &dyn Fn(&RunOutput) -> f64| -> Spread {
            Spread::of(&outs.iter().map(|o| f(o)).collect::<Vec<_>>())
        };
        let opt = |f: &dyn Fn(&RunOutput) -> Option<f64>| -> Spread {
            Spread::of(&outs.iter().filter_map(|o| f(o)).collect::<Vec<_>>())
        };
        let mut merged = Hist::default();
        for o in &outs {
            merged.merge(&o.beam.latency);
        }
        let threads_max =
            |o: &RunOutput, f: fn(&concord_workloads::beam::SchedulerReport) -> f64| {
                o.beam.schedulers.iter().map(f).fold(0.0, f64::max)
            };
        Self {
            sched: sched.into(),
            runs_ok: outs.len(),
            runs: runs.len(),
            p50_ms: col(&|o| o.beam.p50_us / 1e3),
            p99_ms: col(&|o| o.beam.p99_us / 1e3),
            p999_ms: col(&|o| o.beam.p999_us / 1e3),
            max_ms: col(&|o| o.beam.max_us / 1e3),
            throughput_rps: col(&|o| o.beam.throughput_rps),
            unfinished: col(&|o| o.beam.unfinished as f64),
            pinned_mean_runq_delay_us: col(&|o| {
                let s = &o.beam.schedulers;
                s.iter().map(|t| t.mean_runq_delay_us).sum::<f64>() / s.len().max(1) as f64
            }),
            pinned_max_stall_ms: col(&|o| threads_max(o, |t| t.max_stall_us) / 1e3),
            pinned_max_wake_ms: col(&|o| threads_max(o, |t| t.wake_max_us) / 1e3),
            ring_hops_per_sec: col(&|o| o.noise.hops_per_sec),
            hog_reductions_per_sec: col(&|o| o.noise.hog_reductions_per_sec),
            idle_pct: col(&|o| o.idle_pct),
            concord_pinned_wait_max_ms: opt(&|o| stat_ms(o, "pinned_wait_max_since_start_us")),
            concord_shared_wait_max_ms: opt(&|o| stat_ms(o, "shared_wait_max_since_start_us")),
            merged_latency: merged,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutageReport {
    pub scenario: String,
    pub topology: String,
    pub kernel: String,
    pub mix: OutageMix,
    pub baseline: String,
    pub summaries: Vec<SchedSummary>,
    pub runs: Vec<RunRecord>,
}

impl OutageReport {
    pub fn build(
        topology: &TopologySpec,
        kernel: &str,
        mix: &OutageMix,
        scheds: &[SchedSpec],
        runs: Vec<RunRecord>,
    ) -> Self {
        let summaries = scheds
            .iter()
            .map(|s| {
                let label = s.label();
                let mine: Vec<&RunRecord> = runs.iter().filter(|r| r.sched == label).collect();
                SchedSummary::of(&label, &mine)
            })
            .collect();
        Self {
            scenario: "outage".into(),
            topology: topology.to_string(),
            kernel: kernel.into(),
            mix: mix.clone(),
            baseline: scheds.first().map(|s| s.label()).unwrap_or_default(),
            summaries,
            runs,
        }
    }

    pub fn all_ok(&self) -> bool {
        self.runs.iter().all(|r| r.ok)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.mix;
        let _ = writeln!(
            s,
            "## outage: {} on {}, {} s of {} req/s x {} reductions, {} hogs + {} token rings\n",
            self.topology, self.kernel, m.secs, m.rate, m.reductions, m.hogs, m.rings
        );
        let _ = writeln!(
            s,
            "Median (min–max) over the repeats; ratios are medians over the baseline ({}).\n",
            self.baseline
        );
        let base = self.summaries.first().cloned().unwrap_or_default();
        let _ = writeln!(
            s,
            "| scheduler | runs | p50 ms | p99 ms | p99.9 ms | max ms | p99 vs base | req/s | req/s vs base | BEAM runq delay mean us | BEAM longest stall ms | BEAM wake max ms | ring hops/s vs base | hog work vs base | CPU idle % | concord max wait pinned/LLC ms |"
        );
        let _ = writeln!(s, "|{}", "---|".repeat(16));
        for x in &self.summaries {
            let concord =
                if x.concord_pinned_wait_max_ms.n > 0 || x.concord_shared_wait_max_ms.n > 0 {
                    format!(
                        "{} / {}",
                        x.concord_pinned_wait_max_ms.show(1),
                        x.concord_shared_wait_max_ms.show(1)
                    )
                } else {
                    "–".into()
                };
            let _ =
                writeln!(
                s,
                "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                x.sched,
                x.runs_ok,
                x.runs,
                x.p50_ms.show(2),
                x.p99_ms.show(2),
                x.p999_ms.show(1),
                x.max_ms.show(1),
                show_ratio(ratio(&x.p99_ms, &base.p99_ms)),
                x.throughput_rps.show(0),
                show_ratio(ratio(&x.throughput_rps, &base.throughput_rps)),
                x.pinned_mean_runq_delay_us.show(0),
                x.pinned_max_stall_ms.show(1),
                x.pinned_max_wake_ms.show(1),
                show_ratio(ratio(&x.ring_hops_per_sec, &base.ring_hops_per_sec)),
                show_ratio(ratio(&x.hog_reductions_per_sec, &base.hog_reductions_per_sec)),
                x.idle_pct.show(1),
                concord
            );
        }
        let failed: Vec<&RunRecord> = self.runs.iter().filter(|r| !r.ok).collect();
        if !failed.is_empty() {
            let _ = writeln!(s, "\nFailed runs:");
            for r in failed {
                let _ = writeln!(
                    s,
                    "- {} repeat {}: {} ({})",
                    r.sched,
                    r.repeat + 1,
                    r.error.as_deref().unwrap_or("?"),
                    r.run_dir.display()
                );
            }
        }
        let _ = writeln!(s, "\nEvery run (in the order they ran):\n");
        let _ = writeln!(
            s,
            "| # | scheduler | p50 ms | p99 ms | p99.9 ms | max ms | req/s | unfinished |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for (i, r) in self.runs.iter().enumerate() {
            match &r.output {
                Some(o) => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0} | {} |",
                        i + 1,
                        r.sched,
                        o.beam.p50_us / 1e3,
                        o.beam.p99_us / 1e3,
                        o.beam.p999_us / 1e3,
                        o.beam.max_us / 1e3,
                        o.beam.throughput_rps,
                        o.beam.unfinished
                    );
                }
                None => {
                    let _ = writeln!(s, "| {} | {} | failed | | | | | |", i + 1, r.sched);
                }
            }
        }
        s
    }

    /// Writes report.md, results.json and latency-cdf.svg; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let md = dir.join("report.md");
        let json = dir.join("results.json");
        let svg = dir.join("latency-cdf.svg");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        let series: Vec<(String, &Hist)> = self
            .summaries
            .iter()
            .map(|s| (s.sched.clone(), &s.merged_latency))
            .collect();
        let title = format!(
            "outage: request latency, {} on {} ({} repeats merged)",
            self.topology,
            self.kernel,
            self.summaries.first().map(|s| s.runs).unwrap_or(0)
        );
        std::fs::write(&svg, cdf_svg(&title, &series))
            .with_context(|| format!("writing {}", svg.display()))?;
        Ok(vec![md, json, svg])
    }
}

pub const COLORS: [&str; 6] = [
    "#333333", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e",
];
const NINES_MAX: f64 = 4.0; // the plot's top is 99.99 %

/// Y position of a cumulative fraction on the "nines" scale: 0 → 0, 0.9 → 1, 0.99 → 2 ...
pub fn nines(p: f64) -> f64 {
    if p >= 1.0 {
        NINES_MAX
    } else {
        (-(1.0 - p).log10()).clamp(0.0, NINES_MAX)
    }
}

/// A latency CDF: x is latency on a log scale, y the percentile on a "nines" scale so the tail
/// (p99, p99.9) gets as much room as the body. One line per series.
pub fn cdf_svg(title: &str, series: &[(String, &Hist)]) -> String {
    let (w, h) = (860.0, 500.0);
    let (l, r, t, b) = (70.0, 220.0, 40.0, 50.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let lo = series
        .iter()
        .filter(|(_, h)| h.count() > 0)
        .map(|(_, h)| h.percentile(0.0).max(1))
        .min()
        .unwrap_or(1_000);
    let hi = series
        .iter()
        .map(|(_, h)| h.max())
        .max()
        .unwrap_or(1_000_000)
        .max(lo * 10);
    let (lx0, lx1) = ((lo as f64).log10().floor(), (hi as f64).log10().ceil());
    let x = |ns: f64| l + (ns.max(1.0).log10() - lx0) / (lx1 - lx0) * pw;
    let y = |p: f64| t + ph - nines(p) / NINES_MAX * ph;
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
    // Grid: decades on x, nines on y.
    let mut d = lx0;
    while d <= lx1 {
        let ns = 10f64.powf(d);
        let xv = x(ns);
        let _ = writeln!(
            s,
            r##"<line x1="{xv:.1}" y1="{t}" x2="{xv:.1}" y2="{}" stroke="#ddd"/><text x="{xv:.1}" y="{}" text-anchor="middle">{}</text>"##,
            t + ph,
            t + ph + 16.0,
            fmt_ns(ns)
        );
        d += 1.0;
    }
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%"].iter().enumerate() {
        let yv = t + ph - i as f64 / NINES_MAX * ph;
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{yv:.1}" x2="{}" y2="{yv:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            l + pw,
            l - 6.0,
            yv + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">request latency (log scale)</text>"#,
        l + pw / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">share of requests at or below</text>"#,
        t + ph / 2.0
    );
    for (i, (name, hist)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = hist
            .cdf()
            .iter()
            .map(|&(v, p)| format!("{:.1},{:.1}", x(v as f64), y(p)))
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
                pts.join(" ")
            );
        }
        let ly = t + 20.0 + i as f64 * 34.0;
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text><text x="{}" y="{}" fill="#555">p99 {} (n={})</text>"##,
            l + pw + 12.0,
            l + pw + 36.0,
            l + pw + 42.0,
            ly + 4.0,
            xml_escape(name),
            l + pw + 42.0,
            ly + 18.0,
            fmt_ns(hist.percentile(99.0) as f64),
            hist.count()
        );
    }
    s.push_str("</svg>\n");
    s
}

pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{} s", trim(ns / 1e9))
    } else if ns >= 1e6 {
        format!("{} ms", trim(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{} µs", trim(ns / 1e3))
    } else {
        format!("{} ns", trim(ns))
    }
}

fn trim(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        assert_eq!(
            Spread::of(&[3.0, 1.0, 2.0]),
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0,
                n: 3
            }
        );
        assert_eq!(Spread::of(&[4.0, 1.0]).median, 2.5);
        assert_eq!(Spread::of(&[f64::NAN]).n, 0);
        assert_eq!(Spread::of(&[]).show(1), "–");
        assert_eq!(Spread::of(&[1.0, 2.0, 4.0]).show(1), "2.0 (1.0–4.0)");
        let base = Spread::of(&[2.0]);
        assert_eq!(ratio(&Spread::of(&[5.0]), &base), Some(2.5));
        assert_eq!(ratio(&Spread::of(&[]), &base), None);
    }

    #[test]
    fn nines_scale() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), NINES_MAX);
    }

    #[test]
    fn svg_has_one_line_per_series_inside_the_plot() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        for i in 1..1000 {
            a.record(i * 1000);
            b.record(i * 20_000);
        }
        let svg = cdf_svg("t <x>", &[("eevdf".into(), &a), ("concord".into(), &b)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;x&gt;"));
        // Every plotted point lies inside the plotting area.
        for poly in svg.split("points=\"").skip(1) {
            for pt in poly.split('"').next().unwrap().split(' ') {
                let (px, py) = pt.split_once(',').unwrap();
                let (px, py): (f64, f64) = (px.parse().unwrap(), py.parse().unwrap());
                assert!((70.0..=640.0).contains(&px), "{px}");
                assert!((40.0..=450.0).contains(&py), "{py}");
            }
        }
    }
}
