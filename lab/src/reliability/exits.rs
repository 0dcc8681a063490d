//! `exits`: kill -9, a BPF-side error and SIGINT, each under load: the kernel falls back, the
//! exit reason is printed, the exit code says what happened, nothing hangs.

use anyhow::Result;
use std::time::{Duration, Instant};

use super::harness::{
    code, concord_attached, exited_nonzero, online_cpus, stress, wait_child, wait_for, Concord,
};
use super::{GuestParams, Verdict};
use crate::guest::sched_state;

/// kill -9, a BPF-side error and SIGINT, each under load.
pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let n = online_cpus()?.len();
    let mut load = stress(&[
        "-q".into(),
        "-c".into(),
        n.to_string(),
        "-t".into(),
        "90".into(),
    ])?;
    let attach = Duration::from_secs(60);

    // kill -9: the kernel notices the struct_ops link is gone and falls back to EEVDF.
    let c = Concord::spawn(&[], "exits-kill9.log", None)?;
    if wait_for(attach, concord_attached).is_none() {
        v.fail(format!("did not attach: {}", c.output()));
    } else {
        std::thread::sleep(Duration::from_secs(2));
        crate::util::signal_child(&c.child, libc::SIGKILL);
        let gone = wait_for(Duration::from_secs(10), || sched_state() == "disabled");
        let (st, _) = c.finish(Duration::from_secs(5));
        v.note(format!(
            "kill -9 under load: {}; sched_ext state disabled {}",
            code(st),
            gone.map(|d| format!("after {:.2} s", d.as_secs_f64()))
                .unwrap_or_else(|| "NOT within 10 s".into())
        ));
        if gone.is_none() {
            v.fail("the kernel did not fall back after kill -9".into());
        }
    }

    // A BPF-side error: the exit reason is printed, the exit code is non-zero, no hang.
    let c = Concord::spawn(
        &["--debug-error-after-ms", &(p.error_after_ms).to_string()],
        "exits-bpf-error.log",
        None,
    )?;
    let (st, out) = c.finish(Duration::from_secs(60));
    let reason = out
        .lines()
        .find(|l| l.contains("EXIT:"))
        .unwrap_or("")
        .trim()
        .to_string();
    v.note(format!(
        "scx_bpf_error after {} ms: {}, exit reason printed: '{reason}', state {}",
        p.error_after_ms,
        code(st),
        sched_state()
    ));
    if !exited_nonzero(st) {
        v.fail(format!(
            "BPF error: expected a non-zero exit, got {}",
            code(st)
        ));
    }
    if !reason.contains("scx_bpf_error") || !out.contains("debug: error requested") {
        v.fail("BPF error: the kernel's exit reason was not printed".into());
    }
    if sched_state() != "disabled" {
        v.fail("BPF error: sched_ext still enabled afterwards".into());
    }

    // SIGINT: clean detach, exit 0.
    let c = Concord::spawn(&[], "exits-sigint.log", None)?;
    if wait_for(attach, concord_attached).is_none() {
        v.fail(format!("did not attach: {}", c.output()));
    } else {
        std::thread::sleep(Duration::from_secs(2));
        let t0 = Instant::now();
        let (st, _) = c.stop();
        v.note(format!(
            "SIGINT under load: {} after {:.2} s, state {}",
            code(st),
            t0.elapsed().as_secs_f64(),
            sched_state()
        ));
        if !st.is_some_and(|s| s.success()) {
            v.fail(format!("SIGINT: expected exit 0, got {}", code(st)));
        }
        if sched_state() != "disabled" {
            v.fail("SIGINT: sched_ext still enabled afterwards".into());
        }
    }
    crate::util::signal_child(&load, libc::SIGINT);
    let st = wait_child(&mut load, Duration::from_secs(30));
    v.note(format!("the load (stress-ng) ended: {}", code(st)));
    if st.is_none() {
        v.fail("the load did not end after the scheduler exits".into());
    }
    Ok(())
}
