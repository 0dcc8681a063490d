//! Pieces every report shares: the spread of a figure over repeats, ratios of medians, and the
//! SVG charts (latency CDF on a log axis with a "nines" percentile axis).

use concord_common::hist::Hist;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

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
}

/// Ratio of medians, `–` when either is missing or the baseline is zero.
pub fn ratio(a: &Spread, base: &Spread) -> Option<f64> {
    (a.n > 0 && base.n > 0 && base.median > 0.0).then(|| a.median / base.median)
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
    let mut s = svg_open(w, h, l + pw / 2.0, title);
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

/// The start of every chart: the SVG element (@w x @h), a white background and @title centred
/// on @title_x.
pub fn svg_open(w: f64, h: f64, title_x: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{title_x}" y="22" font-size="14" text-anchor="middle">{}</text>"#,
        xml_escape(title)
    );
    s
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
        assert_eq!(Spread::of(&[]).n, 0);
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
