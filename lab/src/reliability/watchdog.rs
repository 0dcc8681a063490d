//! `watchdog`: scx_concord started with `--debug-stall-comm` never dispatches one thread. The
//! kernel's watchdog must eject it once that thread has waited the watchdog time, scx_concord
//! must print the kernel's stall reason and exit non-zero, and the thread must then run under
//! the kernel's own scheduler. This is the path every other bug in a sched_ext scheduler ends
//! on (a task lost in a queue nobody consumes); it must be loud and leave the machine working.

use anyhow::Result;
use concord_common::sched::concord_defaults::WATCHDOG_MS;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::harness::{
    code, concord_attached, end_load, exit_line, exited_nonzero, online_cpus, stress, wait_for,
    Concord,
};
use super::{GuestParams, Verdict};
use crate::guest::sched_state;

/// The victim's name (comm, at most 15 bytes).
const VICTIM: &str = "concord-stall";

pub(super) fn run(_p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let n = online_cpus()?.len();
    // Every CPU busy: a task whose turn ends on a CPU with nothing else to run is kept on by
    // the kernel without a dispatch, and the victim would never stall.
    let load = stress(&[
        "-q".into(),
        "-c".into(),
        n.to_string(),
        "-t".into(),
        "120".into(),
    ])?;
    let c = Concord::spawn(&["--debug-stall-comm", VICTIM], "watchdog.log", None)?;
    if wait_for(Duration::from_secs(60), concord_attached).is_none() {
        v.fail(format!("did not attach: {}", c.output()));
        end_load(v, load, "after the failed attach");
        return Ok(());
    }
    let progress = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let watchdog = Duration::from_millis(WATCHDOG_MS);
    std::thread::scope(|s| {
        s.spawn(|| {
            let name = std::ffi::CString::new(VICTIM).unwrap();
            // SAFETY: PR_SET_NAME names the calling thread; the string is NUL-terminated and
            // outlives the call.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            // Sleep once: the wake-up goes through the scheduler's enqueue with the new name.
            std::thread::sleep(Duration::from_millis(20));
            while !stop.load(Ordering::Relaxed) {
                progress.fetch_add(1, Ordering::Relaxed);
                std::hint::spin_loop();
            }
        });
        // The kernel checks every half timeout; TCG on a loaded host is slow to get there.
        // The victim's progress is read while sched_ext is still enabled (progress first,
        // then the state): once the kernel starts disabling us, its bypass mode runs
        // everything, the victim too.
        let mut held = 0;
        let gone = wait_for(watchdog * 4 + Duration::from_secs(20), || {
            let loops = progress.load(Ordering::Relaxed);
            if sched_state() == "enabled" {
                held = loops;
                false
            } else {
                sched_state() == "disabled"
            }
        });
        let at_gone = progress.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(1));
        let after = progress.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let (st, out) = c.finish(Duration::from_secs(20));
        let reason = exit_line(&out);
        v.note(format!(
            "a thread named {VICTIM} never dispatched (watchdog {} ms): sched_ext disabled {}; scx_concord {}: '{reason}'",
            WATCHDOG_MS,
            gone.map(|d| format!("after {:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "NEVER".into()),
            code(st),
        ));
        v.note(format!(
            "the victim's loops: {held} while held, {} in the second after the ejection",
            after - at_gone
        ));
        match gone {
            None => v.fail("the watchdog did not eject the scheduler".into()),
            // The victim waited from its wake-up (20 ms in): ejected earlier, something else
            // than the stall ended the scheduler.
            Some(d) if d < watchdog.saturating_sub(Duration::from_millis(500)) => v.fail(format!(
                "ejected after {:.1} s, before the {:.1} s watchdog time: not by the stall",
                d.as_secs_f64(),
                watchdog.as_secs_f64()
            )),
            Some(_) => {}
        }
        if !exited_nonzero(st) {
            v.fail(format!("expected a non-zero exit, got {}", code(st)));
        }
        if !reason.contains("stall") || !reason.contains(VICTIM) {
            v.fail("the kernel's stall reason naming the task was not printed".into());
        }
        if held != 0 {
            v.fail(format!(
                "the victim ran {held} loops while the scheduler held it: the debug knob did not stall it"
            ));
        }
        if after == at_gone {
            v.fail("the victim did not run after the ejection".into());
        }
    });
    end_load(v, load, "after the ejection");
    Ok(())
}
