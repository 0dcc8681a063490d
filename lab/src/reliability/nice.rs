//! `nice`: spinners at nice -10, 0, 5 and 19 share the CPUs under scx_concord in the ratios
//! EEVDF gives them in the same VM. The same two mixes run first under EEVDF, then under
//! scx_concord started here: per CPU one nice -10 and one nice 0 spinner, then per CPU one
//! nice 0, one nice 5 and one nice 19. Each niced spinner's share over the nice-0 spinners'
//! mean share is compared between the two; and under scx_concord every wait stays in the bound.

use anyhow::Result;

use super::harness::{online_cpus, stop_cleanly};
use super::spin::{judge_waits, measured_phase, start_concord_judged, SpinResult, SpinSpec};
use super::{GuestParams, Verdict};

/// The two mixes, as the nice values of the spinners of each CPU.
const MIXES: [&[i32]; 2] = [&[-10, 0], &[0, 5, 19]];

/// How far scx_concord's ratio of a nice value's share to nice 0's may be from EEVDF's, as a
/// factor either way. Wide enough for the noise of nice 19's small shares under TCG (EEVDF's own
/// ratio moved between 1/19 and 1/35 from run to run of this check) and for what sched_ext
/// rounds (nice 19 is weight 1 of 100 for us, 15 of 1024 for EEVDF); narrow enough that a
/// scheduler ignoring nice fails, and so did ours while heavier weights barely counted (nice
/// -10 at 1.3x a nice-0 share against EEVDF's 9.1x in the same VM: 0.15x).
const RATIO_TOLERANCE: f64 = 3.0;

/// Each nice value's share over the mean share of the nice-0 spinners of the same mix.
fn ratios(mix: &[i32], r: &[SpinResult]) -> Vec<(i32, f64)> {
    let mean_of = |nice: i32| {
        let s: Vec<f64> = r
            .iter()
            .enumerate()
            .filter(|(i, _)| mix[i % mix.len()] == nice)
            .map(|(_, x)| x.share())
            .collect();
        s.iter().sum::<f64>() / s.len().max(1) as f64
    };
    let nice0 = mean_of(0);
    mix.iter()
        .filter(|&&n| n != 0)
        .map(|&n| (n, mean_of(n) / nice0.max(1e-9)))
        .collect()
}

/// The kernel's load weight of a nice value (sched_prio_to_weight), for the values checked.
fn kernel_weight(nice: i32) -> f64 {
    match nice {
        -10 => 9548.0,
        0 => 1024.0,
        5 => 335.0,
        19 => 15.0,
        _ => f64::NAN,
    }
}

/// Whether scx_concord's ratio `got` for `nice` is EEVDF-like: at most `tolerance` times what
/// EEVDF gave (`eevdf`), and at least its tolerance below the lower of EEVDF's and the weights'
/// own ratio. Below the weight ratio EEVDF's measured figure is not a floor to hold to: its
/// nice-19 ratio moved between 1/12 and 1/35 from run to run in these VMs (ticks, not weights,
/// bound its turns there), while the weights say 1/68.
fn eevdf_like(nice: i32, got: f64, eevdf: f64, tolerance: f64) -> bool {
    let weights = kernel_weight(nice) / kernel_weight(0);
    let floor = if weights.is_nan() {
        eevdf
    } else {
        eevdf.min(weights)
    };
    // A light task's ceiling is never below LIGHT_CEILING (see there).
    let ceiling = if weights < LIGHT_CEILING {
        (eevdf * tolerance).max(LIGHT_CEILING)
    } else {
        eevdf * tolerance
    };
    got > 0.0 && eevdf > 0.0 && got <= ceiling && got >= floor / tolerance
}

/// The share over nice 0's that a task whose weight says less may always have. EEVDF's own
/// figure for nice 19 varies several-fold between runs of this check, and when it lands at the
/// weights' ratio, 3x of it is below what a wait bound grants: every task runs within the bound,
/// so a weight-1 spinner gets a turn every bound at least, above its weight. A tenth still fails
/// a scheduler that ignores nice or barely applies it.
const LIGHT_CEILING: f64 = 0.1;

fn specs(mix: &[i32], cpus: usize) -> Vec<SpinSpec> {
    (0..cpus)
        .flat_map(|_| mix.iter().map(|&nice| SpinSpec { cpu: None, nice }))
        .collect()
}

pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let cpus = online_cpus()?;
    let n = cpus.len();
    // Under EEVDF (the VM boots under it for this check).
    let mut none = None;
    let mut eevdf = Vec::new();
    for mix in MIXES {
        let (r, _) = measured_phase(&mut none, &specs(mix, n), p.secs)?;
        eevdf.push(ratios(mix, &r));
    }
    let Some((c, mut waits, bound)) = start_concord_judged(p, &cpus, "nice.log", v)? else {
        return Ok(());
    };
    for (mix, want) in MIXES.iter().zip(&eevdf) {
        let (r, seen) = measured_phase(&mut waits, &specs(mix, n), p.secs)?;
        let got = ratios(mix, &r);
        for (&(nice, g), &(_, e)) in got.iter().zip(want) {
            v.note(format!(
                "nice {nice} over nice 0 (mix {mix:?} per CPU): scx_concord {g:.4} (1/{:.1}), EEVDF {e:.4} (1/{:.1}), {:.2}x",
                1.0 / g.max(1e-9),
                1.0 / e.max(1e-9),
                g / e.max(1e-9)
            ));
            if !eevdf_like(nice, g, e, RATIO_TOLERANCE) {
                v.fail(format!(
                    "nice {nice}: share ratio {g:.4} to nice 0 is not within {RATIO_TOLERANCE}x of EEVDF's {e:.4} (nor of the weights' {:.4}, below it)",
                    kernel_weight(nice) / kernel_weight(0)
                ));
            }
        }
        judge_waits(v, &format!("mix {mix:?}"), &r, &seen, bound);
    }
    stop_cleanly(v, c, libc::SIGINT, "SIGINT");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_factor(got: f64, want: f64, tolerance: f64) -> bool {
        got > 0.0 && want > 0.0 && got <= want * tolerance && got >= want / tolerance
    }

    #[test]
    fn ratios_are_over_the_nice0_mean_of_the_same_mix() {
        // Two CPUs of (0, 5, 19): the results come per CPU in the mix's order.
        let r: Vec<_> = [0.7, 0.25, 0.01, 0.74, 0.23, 0.02]
            .into_iter()
            .map(SpinResult::with_share)
            .collect();
        let got = ratios(&[0, 5, 19], &r);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 5);
        assert!((got[0].1 - 0.24 / 0.72).abs() < 1e-9);
        assert!((got[1].1 - 0.015 / 0.72).abs() < 1e-9);
    }

    #[test]
    fn the_tolerance_fails_ignoring_nice_and_weak_heavy_weights() {
        let eevdf19 = 15.0 / 1024.0;
        assert!(within_factor(1.0 / 100.0, eevdf19, RATIO_TOLERANCE));
        assert!(!within_factor(1.0, 335.0 / 1024.0, RATIO_TOLERANCE));
        assert!(!within_factor(1.0, 9548.0 / 1024.0, RATIO_TOLERANCE));
        // What the check measured before heavier weights acted through deadlines.
        assert!(!within_factor(1.33, 9.11, RATIO_TOLERANCE));
        assert!(!within_factor(0.0, eevdf19, RATIO_TOLERANCE));
        assert!(!eevdf_like(-10, 1.33, 9.11, RATIO_TOLERANCE));
        assert!(eevdf_like(-10, 7.6, 9.0, RATIO_TOLERANCE));
        // EEVDF's nice 19 at 1/12 (ticks): 1/40 is closer to the weights and passes, while a
        // scheduler ignoring nice, or one that nearly starves nice 19, does not.
        assert!(eevdf_like(19, 0.0247, 0.0836, RATIO_TOLERANCE));
        assert!(!eevdf_like(19, 1.0, 0.0836, RATIO_TOLERANCE));
        assert!(!eevdf_like(19, 0.001, 0.0836, RATIO_TOLERANCE));
        // EEVDF's nice 19 at its weights (1/70): the wait bound's 1/22 passes, a fifth does not.
        assert!(eevdf_like(19, 0.0460, 0.0143, RATIO_TOLERANCE));
        assert!(!eevdf_like(19, 0.2, 0.0143, RATIO_TOLERANCE));
        // Heavier than that, EEVDF's figure alone sets the ceiling.
        assert!(!eevdf_like(5, 1.0, 0.3158, RATIO_TOLERANCE));
    }
}
