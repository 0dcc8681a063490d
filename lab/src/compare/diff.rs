//! `concord-lab diff`: two compare results side by side.

use std::fmt::Write as _;

use super::report::{show, CompareReport};
use super::Better;
use crate::charts::ratio;

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
        let Some(sa) = a.scenarios.iter().find(|x| x.name() == sb.name()) else {
            let _ = writeln!(s, "## {}: only in B\n", sb.name());
            continue;
        };
        let _ = writeln!(
            s,
            "## {} (A: {}, B: {})\n",
            sb.name(),
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

#[cfg(test)]
mod tests {
    use super::super::report::tests::{report, run};
    use super::super::Scenario;
    use super::*;

    #[test]
    fn diff_flags_changes_beyond_the_spread() {
        let a = report(vec![run(Scenario::Wakeup, "concord", 0, 100.0, true)]);
        let b = report(vec![run(Scenario::Wakeup, "concord", 0, 50.0, true)]);
        let d = diff(&a, &b);
        assert!(d.contains("| 0.50x | * better |"), "{d}");
        let d = diff(&b, &a);
        assert!(d.contains("| 2.00x | * worse |"), "{d}");
    }
}
