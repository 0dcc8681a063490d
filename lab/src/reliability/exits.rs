//! `exits`: kill -9, a BPF-side error and SIGINT, each under load: the kernel falls back, the
//! exit reason is printed, the exit code says what happened, nothing hangs.

use anyhow::Result;
use std::time::Duration;

use super::harness::{
    code, concord_attached, end_load, exit_line, exited_nonzero, online_cpus, stop_cleanly, stress,
    wait_for, Concord,
};
use super::{GuestParams, Verdict};
use crate::guest::sched_state;

/// kill -9, a BPF-side error and SIGINT, each under load.
pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let n = online_cpus()?.len();
    let load = stress(&[
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
        c.signal(libc::SIGKILL);
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
    let reason = exit_line(&out);
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
        stop_cleanly(v, c, libc::SIGINT, "SIGINT");
    }
    end_load(v, load, "after the scheduler exits");
    Ok(())
}
