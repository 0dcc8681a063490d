//! The compare report's line charts: p99 against offered load (a sweep) and per second of a
//! run, one line per scheduler.

use std::fmt::Write as _;

use super::report::{slug, CompareReport, ScenarioResult};
use super::Scenario;
use crate::charts::Spread;

impl CompareReport {
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
    use crate::charts::{fmt_ns, svg_open, xml_escape, COLORS};
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
    let mut s = svg_open(w, h, l + pw / 2.0, title);
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

#[cfg(test)]
mod tests {
    use super::super::report::tests::{report, run};
    use super::super::{Scenario, ScenarioPlan};
    use super::*;
    use concord_common::sched::SchedSpec;
    use concord_common::topology::TopologySpec;

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
            scale: false,
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
                scale: false,
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
}
