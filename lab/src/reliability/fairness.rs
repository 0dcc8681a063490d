//! `fairness`: starvation and fairness (schtest-style) among spinners, under the scheduler the
//! runner started: even shares, a flooded pinned task, nice 19, and every wait within the bound.

use anyhow::Result;

use super::harness::online_cpus;
use super::spin::{
    calibrated_bound, judge_waits, longest_wait, measured_phase, ms, p10_over_mean, QueueWaits,
    SpinResult, SpinSpec,
};
use super::{GuestParams, Verdict};

/// A nice-19 spinner's share may be at most nice 0's mean over this.
const NICE19_MAX_FRACTION_OF_NICE0: f64 = 4.0;

/// Starvation and fairness (schtest-style), under the scheduler the runner started.
pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let cpus = online_cpus()?;
    let n = cpus.len();
    let mut waits = QueueWaits::open()?;
    if let Some(w) = waits.as_mut() {
        let before = w.phase()?;
        v.note(format!(
            "before the check: scx_concord's exact longest queue wait since attach {:.1} ms",
            ms(before.exact_since_start_ns)
        ));
    }
    let (bound, calibration_waits) = calibrated_bound(p, &cpus, &mut waits, v)?;
    judge_waits(v, "calibration", &[], &calibration_waits, bound);

    // 1. One pinned spinner per CPU plus as many unpinned: every thread's fair share is 1/2.
    let mut specs: Vec<SpinSpec> = cpus
        .iter()
        .map(|&c| SpinSpec {
            cpu: Some(c),
            nice: 0,
        })
        .collect();
    specs.extend((0..n).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let (r, waits_seen) = measured_phase(&mut waits, &specs, p.secs)?;
    let even = p10_over_mean(&r);
    v.note(format!(
        "{n} pinned + {n} unpinned spinners, {:.0} s: CPU share p10/mean {even:.2} (shares {}), longest wait {:.1} ms",
        p.secs,
        r.iter()
            .map(|x| format!("{:.2}", x.share()))
            .collect::<Vec<_>>()
            .join(" "),
        ms(longest_wait(&r).ns)
    ));
    if even < 0.8 {
        v.fail(format!("uneven CPU shares: p10/mean {even:.2} < 0.8"));
    }
    judge_waits(v, "even mix", &r, &waits_seen, bound);

    // 2. A task pinned to CPU 0, flooded with unpinned work (3 per CPU).
    let mut specs = vec![SpinSpec {
        cpu: Some(cpus[0]),
        nice: 0,
    }];
    specs.extend((0..3 * n).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let (r, waits_seen) = measured_phase(&mut waits, &specs, p.secs)?;
    let fair = n as f64 / specs.len() as f64;
    v.note(format!(
        "pinned to CPU {} among {} unpinned spinners: share {:.3} (fair {fair:.3}), longest wait {:.1} ms; unpinned longest wait {:.1} ms",
        cpus[0],
        3 * n,
        r[0].share(),
        ms(r[0].longest_wait.ns),
        ms(longest_wait(&r[1..]).ns)
    ));
    if r[0].share() < 0.5 * fair {
        v.fail(format!(
            "the pinned task got {:.3} of a CPU, less than half its fair {fair:.3}",
            r[0].share()
        ));
    }
    judge_waits(v, "flooded CPU", &r, &waits_seen, bound);

    // 3. A nice-19 task among 2 nice-0 spinners per CPU: it gets little, but it runs.
    let mut specs = vec![SpinSpec {
        cpu: None,
        nice: 19,
    }];
    specs.extend((0..2 * n).map(|_| SpinSpec { cpu: None, nice: 0 }));
    let (r, waits_seen) = measured_phase(&mut waits, &specs, p.secs)?;
    let nice0_mean = r[1..].iter().map(SpinResult::share).sum::<f64>() / (2 * n) as f64;
    v.note(format!(
        "nice 19 among {} nice-0 spinners: share {:.4} (nice 0 mean {nice0_mean:.3}) in {} turns of {:.2} ms on average (nice 0: {:.2} ms), longest wait {:.1} ms",
        2 * n,
        r[0].share(),
        r[0].turns,
        ms(r[0].cpu_ns / r[0].turns.max(1)),
        ms(r[1..].iter().map(|x| x.cpu_ns).sum::<u64>()
            / r[1..].iter().map(|x| x.turns).sum::<u64>().max(1)),
        ms(r[0].longest_wait.ns)
    ));
    // With several LLCs, how the spinners ended up spread over them (share@CPU).
    v.note(format!(
        "    shares at the end's CPU: nice 19 {:.3}@{}; nice 0 {}",
        r[0].share(),
        r[0].last_cpu,
        r[1..]
            .iter()
            .map(|x| format!("{:.2}@{}", x.share(), x.last_cpu))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    if r[0].cpu_ns == 0 {
        v.fail("the nice-19 task never ran".into());
    }
    // Weight 15 against 1024: EEVDF gives it about 1/70 of a nice-0 share. A quarter is a
    // generous line that a scheduler ignoring nice (equal turns: 1/1) cannot pass.
    if r[0].share() > nice0_mean / NICE19_MAX_FRACTION_OF_NICE0 {
        v.fail(format!(
            "nice is not honoured: nice 19 got {:.3} of a CPU, more than 1/{} of nice 0's {nice0_mean:.3}",
            r[0].share(),
            NICE19_MAX_FRACTION_OF_NICE0
        ));
    }
    judge_waits(v, "niced mix", &r, &waits_seen, bound);
    // Every task, not only the spinners, from attach to here (phases and between them).
    if let Some(w) = waits_seen.filter(|w| w.exact_since_start_ns > bound) {
        v.fail(format!(
            "some task waited {:.1} ms in scx_concord's queues since attach > bound {:.1} ms ({})",
            ms(w.exact_since_start_ns),
            ms(bound),
            w.longest_waiter
        ));
    }
    Ok(())
}
