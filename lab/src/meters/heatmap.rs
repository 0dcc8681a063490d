//! Per-CPU timeline heat map (the Wasted Cores paper's visualiser, as SVG): one row per CPU,
//! one column per time bin; each cell mixes white (idle), slate (busy) and red (idle while a
//! task allowed on the CPU waited past the threshold) by the shares of the bin.

use super::wasted::{Cell, WastedReport};
use std::fmt::Write as _;

const IDLE: [f32; 3] = [255.0, 255.0, 255.0];
const BUSY: [f32; 3] = [74.0, 98.0, 130.0];
const WASTED: [f32; 3] = [220.0, 30.0, 30.0];

/// The cell's colour: idle (not wasted), busy and wasted shares mixed; unknown time is grey.
pub fn cell_color(c: &Cell) -> String {
    let wasted = c.wasted.clamp(0.0, 1.0);
    let busy = c.busy.clamp(0.0, 1.0);
    let idle = (c.idle - c.wasted).clamp(0.0, 1.0);
    let unknown = (1.0 - busy - c.idle.clamp(0.0, 1.0)).clamp(0.0, 1.0);
    let rgb: Vec<u8> = (0..3)
        .map(|i| {
            (IDLE[i] * idle + BUSY[i] * busy + WASTED[i] * wasted + 160.0 * unknown)
                .round()
                .clamp(0.0, 255.0) as u8
        })
        .collect();
    format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2])
}

pub fn svg(title: &str, r: &WastedReport) -> String {
    let cpus = r.heat.cpus.len().max(1);
    let bins = r.heat.cpus.first().map_or(1, |b| b.len().max(1));
    let (l, t, cell_w) = (60.0, 44.0, (760.0 / bins as f64).max(1.0));
    let row_h = (240.0 / cpus as f64).clamp(8.0, 40.0);
    let (pw, ph) = (cell_w * bins as f64, row_h * cpus as f64);
    let (w, h) = (l + pw + 20.0, t + ph + 70.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w:.0}" height="{h:.0}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="18" font-size="14" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        title.replace('&', "&amp;").replace('<', "&lt;")
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="34" text-anchor="middle" fill="#555">wasted {:.2} % of CPU time (idle while a task allowed there waited &gt; {} ms), idle {:.1} %</text>"##,
        l + pw / 2.0,
        r.wasted_pct,
        r.threshold_ns as f64 / 1e6,
        r.idle_pct
    );
    for (cpu, row) in r.heat.cpus.iter().enumerate() {
        let y = t + cpu as f64 * row_h;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">CPU {cpu}</text>"#,
            l - 6.0,
            y + row_h / 2.0 + 4.0
        );
        for (b, c) in row.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<rect x="{:.2}" y="{y:.2}" width="{:.2}" height="{:.2}" fill="{}"/>"#,
                l + b as f64 * cell_w,
                cell_w + 0.05,
                row_h - 1.0,
                cell_color(c)
            );
        }
    }
    let secs = r.window_ns as f64 / 1e9;
    for i in 0..=4 {
        let x = l + pw * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{:.1} s</text>"#,
            t + ph + 16.0,
            secs * i as f64 / 4.0
        );
    }
    for (i, (name, c)) in [
        (
            "busy",
            Cell {
                busy: 1.0,
                idle: 0.0,
                wasted: 0.0,
            },
        ),
        (
            "idle",
            Cell {
                busy: 0.0,
                idle: 1.0,
                wasted: 0.0,
            },
        ),
        (
            "idle while work waited",
            Cell {
                busy: 0.0,
                idle: 1.0,
                wasted: 1.0,
            },
        ),
    ]
    .iter()
    .enumerate()
    {
        let x = l + i as f64 * 180.0;
        let y = t + ph + 34.0;
        let _ = writeln!(
            s,
            r##"<rect x="{x:.1}" y="{y:.1}" width="14" height="14" fill="{}" stroke="#999"/><text x="{:.1}" y="{:.1}">{name}</text>"##,
            cell_color(c),
            x + 20.0,
            y + 11.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meters::wasted::HeatMap;

    #[test]
    fn colours_mix_by_share() {
        let c = |busy, idle, wasted| cell_color(&Cell { busy, idle, wasted });
        assert_eq!(c(0.0, 1.0, 0.0), "#ffffff");
        assert_eq!(c(1.0, 0.0, 0.0), "#4a6282");
        assert_eq!(c(0.0, 1.0, 1.0), "#dc1e1e");
        assert_eq!(c(0.0, 0.0, 0.0), "#a0a0a0", "unknown time is grey");
        assert_eq!(c(0.5, 0.5, 0.0), "#a5b1c1");
    }

    #[test]
    fn one_rect_per_cell_and_the_share_in_the_title() {
        let r = WastedReport {
            window_ns: 2_000_000_000,
            wasted_pct: 1.5,
            threshold_ns: 1_000_000,
            heat: HeatMap {
                bin_ns: 20_000_000,
                cpus: vec![vec![Cell::default(); 100]; 3],
            },
            ..Default::default()
        };
        let s = svg("wakeup: eevdf", &r);
        // 300 cells, the background and 3 legend boxes.
        assert_eq!(s.matches("<rect").count(), 304);
        assert!(s.contains("wasted 1.50 %"));
        assert!(s.contains("CPU 2"));
    }
}
