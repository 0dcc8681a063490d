//! `takeover`: the ways scx_concord is taken off a running machine, each under load, with the
//! exit codes the README documents: SIGTERM (a service manager's stop) detaches cleanly with
//! exit 0; SysRq-S (an operator's emergency brake) makes the kernel drop it, and it reports the
//! reason and exits 0 so that a service manager does not bring it back; a second sched_ext
//! scheduler trying to attach is refused and the first keeps running; it attaches again after
//! each; nothing of it is left behind.

use anyhow::Result;
use std::time::Duration;

use super::harness::{
    code, concord_attached, end_load, error_line, exit_line, exited_nonzero, online_cpus,
    stop_cleanly, stress, wait_for, Concord,
};
use super::{GuestParams, Verdict};
use crate::guest::sched_state;

/// Loading verifies the BPF program first, which under TCG beside a CPU hog per CPU can take
/// most of a minute.
const ATTACH: Duration = Duration::from_secs(150);

/// Starts scx_concord and waits for it to attach (None, with a failure noted, if it does not).
fn attached(v: &mut Verdict, log: &str) -> Result<Option<Concord>> {
    let c = Concord::spawn(&[], log, None)?;
    if wait_for(ATTACH, concord_attached).is_none() {
        v.fail(format!("{log}: did not attach: {}", c.output()));
        let _ = c.stop_with(libc::SIGKILL);
        return Ok(None);
    }
    // Let it schedule the load for a while first.
    std::thread::sleep(Duration::from_secs(2));
    Ok(Some(c))
}

pub(super) fn run(_p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let n = online_cpus()?.len();
    let mut load = stress(&[
        "-q".into(),
        "-c".into(),
        n.to_string(),
        "--pipe".into(),
        "1".into(),
        // Ended below: it only has to outlive the checks.
        "-t".into(),
        "1200".into(),
    ])?;

    // SIGTERM: clean detach, exit 0.
    if let Some(c) = attached(v, "takeover-sigterm.log")? {
        stop_cleanly(v, c, libc::SIGTERM, "SIGTERM");
    }

    // SysRq-S: the kernel disables sched_ext; we say why and exit 0. The trigger file works for
    // root whatever kernel.sysrq says (that setting is about the keyboard).
    if let Some(c) = attached(v, "takeover-sysrq.log")? {
        std::fs::write("/proc/sysrq-trigger", "S")?;
        let gone = wait_for(Duration::from_secs(10), || sched_state() == "disabled");
        let (st, out) = c.finish(Duration::from_secs(15));
        let said = exit_line(&out);
        v.note(format!(
            "SysRq-S under load: sched_ext disabled {}; scx_concord {}: '{said}'",
            gone.map(|d| format!("after {:.2} s", d.as_secs_f64()))
                .unwrap_or_else(|| "NOT within 10 s".into()),
            code(st)
        ));
        if gone.is_none() {
            v.fail("SysRq-S did not disable sched_ext".into());
        }
        if !st.is_some_and(|s| s.success()) {
            v.fail(format!("SysRq-S: expected exit 0, got {}", code(st)));
        }
        if !said.to_lowercase().contains("sysrq") {
            v.fail("SysRq-S: the kernel's reason was not printed".into());
        }
    }

    // A second scheduler while one is attached: refused, the first keeps running; then a
    // clean SIGINT.
    if let Some(first) = attached(v, "takeover-first.log")? {
        let second = Concord::spawn(&[], "takeover-second.log", None)?;
        let (st, out) = second.finish(Duration::from_secs(20));
        let still = concord_attached();
        v.note(format!(
            "second instance while one is attached: {} — {}; first still attached: {still}",
            code(st),
            error_line(&out)
        ));
        if !exited_nonzero(st) || !out.contains("another sched_ext scheduler is active") || !still {
            v.fail(format!("second instance: {}", out.trim()));
        }
        let (st, _) = first.stop();
        if !st.is_some_and(|s| s.success()) {
            v.fail(format!("the first instance's SIGINT: {}", code(st)));
        }
    }

    // Nothing left behind: no process of ours, sched_ext off, the load alive until now.
    let left = std::process::Command::new("pgrep")
        .args(["-x", "scx_concord"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let load_alive = load.try_wait().ok().flatten().is_none();
    v.note(format!(
        "afterwards: state {}, scx_concord processes left: [{left}], the load still running: {load_alive}",
        sched_state()
    ));
    if !left.is_empty() {
        v.fail(format!("scx_concord processes left behind: {left}"));
    }
    if sched_state() != "disabled" {
        v.fail(format!("sched_ext left {}", sched_state()));
    }
    if !load_alive {
        v.fail("the load died during the takeovers".into());
    }
    end_load(v, load, "after the takeovers");
    Ok(())
}
