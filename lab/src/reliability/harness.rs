//! Guest side of the reliability suite (`concord-lab rel-guest`): runs the checks it is given,
//! one verdict each with its evidence, and the helpers they share (processes, waiting, a
//! scx_concord started by the check itself). Runs as root inside the lab VM.

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Check, GuestParams, Verdict};
use crate::guest::{ops_matches, sched_ops, sched_state};
use crate::sched_proc::SchedProcess;
use concord_common::sched::{CONCORD_OPS_NAME, CONCORD_STATS_SOCKET};

pub(super) const NOBODY: u32 = 65534;
pub(super) const STATS_SOCKET: &str = CONCORD_STATS_SOCKET;

pub(super) fn run_dir() -> Result<PathBuf> {
    Ok(PathBuf::from(
        std::env::var_os("CONCORD_LAB_RUN_DIR")
            .context("CONCORD_LAB_RUN_DIR not set: rel-guest runs inside the lab VM")?,
    ))
}

pub(super) fn online_cpus() -> Result<Vec<u32>> {
    concord_common::topology::parse_cpulist(
        std::fs::read_to_string("/sys/devices/system/cpu/online")?.trim(),
    )
}

pub(super) fn concord_attached() -> bool {
    sched_state() == "enabled" && ops_matches(&sched_ops(), CONCORD_OPS_NAME)
}

pub(super) fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub(super) fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// scx_concord started by the check itself, its output in a file of the run directory.
pub(super) struct Concord(SchedProcess);

impl Concord {
    pub(super) fn spawn(args: &[&str], log_name: &str, uid: Option<u32>) -> Result<Self> {
        // Another user may not reach the build directory (a clone under /root): give them a
        // copy on the guest's /tmp.
        let prog = match uid {
            Some(_) => world_copy()?,
            None => crate::util::which("scx_concord").context("scx_concord not on PATH")?,
        };
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let log = run_dir()?.join(log_name);
        SchedProcess::spawn(&prog, &args, &log, uid, None)
            .context("starting scx_concord")
            .map(Self)
    }

    pub(super) fn pid(&self) -> u32 {
        self.0.pid()
    }

    pub(super) fn signal(&self, sig: i32) {
        self.0.signal(sig);
    }

    pub(super) fn output(&self) -> String {
        self.0.output()
    }

    /// Runs to its end (at most `limit`): exit status (None: had to be killed) and output.
    pub(super) fn finish(self, limit: Duration) -> (Option<ExitStatus>, String) {
        self.0.finish(limit)
    }

    pub(super) fn stop(self) -> (Option<ExitStatus>, String) {
        self.stop_with(libc::SIGINT)
    }

    /// Sends @sig and waits (at most 15 s) for the exit.
    pub(super) fn stop_with(self, sig: i32) -> (Option<ExitStatus>, String) {
        self.0.stop_with(sig, Duration::from_secs(15))
    }
}

pub(super) fn world_copy() -> Result<PathBuf> {
    let src = crate::util::which("scx_concord").context("scx_concord not on PATH")?;
    let dst = PathBuf::from("/tmp/scx_concord-copy");
    if !dst.exists() {
        std::fs::copy(&src, &dst)?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(dst)
}

/// The first line that looks like the error message (clap's or ours).
pub(super) fn error_line(out: &str) -> String {
    out.lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| out.lines().next().unwrap_or(""))
        .trim()
        .to_string()
}

pub(super) fn code(st: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match st {
        None => "no exit (killed after the time limit)".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "?".into(),
        },
    }
}

/// The line of scx_concord's output with the kernel's exit reason ("" if none).
pub(super) fn exit_line(out: &str) -> String {
    out.lines()
        .find(|l| l.contains("EXIT:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Stops an attached scx_concord with @sig under load: it must exit 0 and leave sched_ext
/// disabled.
pub(super) fn stop_cleanly(v: &mut Verdict, c: Concord, sig: i32, what: &str) {
    let t0 = Instant::now();
    let (st, _) = c.stop_with(sig);
    v.note(format!(
        "{what} under load: {} after {:.2} s, state {}",
        code(st),
        t0.elapsed().as_secs_f64(),
        sched_state()
    ));
    if !st.is_some_and(|s| s.success()) {
        v.fail(format!("{what}: expected exit 0, got {}", code(st)));
    }
    if sched_state() != "disabled" {
        v.fail(format!("{what}: sched_ext still enabled afterwards"));
    }
}

/// Ends the check's load (a stress-ng started with `stress`): it must end within 30 s.
pub(super) fn end_load(v: &mut Verdict, mut load: Child, after: &str) {
    crate::util::signal_child(&load, libc::SIGINT);
    let st = wait_child(&mut load, Duration::from_secs(30));
    v.note(format!("the load (stress-ng) ended: {}", code(st)));
    if st.is_none() {
        v.fail(format!("the load did not end {after}"));
    }
}

/// Ended by itself with a non-zero exit code (not killed, not hung).
pub(super) fn exited_nonzero(st: Option<ExitStatus>) -> bool {
    st.and_then(|s| s.code()).is_some_and(|c| c != 0)
}

pub(super) fn stress(args: &[String]) -> Result<Child> {
    Command::new("stress-ng")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting stress-ng")
}

pub fn main(params: &GuestParams) -> Result<i32> {
    let mut verdicts = Vec::new();
    for &name in &params.checks {
        let mut v = Verdict::new(name.name());
        let r = match name {
            Check::Fairness => super::fairness::run(params, &mut v),
            Check::Affinity => super::affinity::run(params, &mut v),
            Check::Hotplug => super::hotplug::run(params, &mut v),
            Check::Exits => super::exits::run(params, &mut v),
            Check::BadInput => super::bad_input::run(&mut v),
            Check::Access => super::access::run(&mut v),
            Check::Resources => super::resources::run(params, &mut v),
            Check::RtMix => super::rt_mix::run(params, &mut v),
            Check::Nice => super::nice::run(params, &mut v),
            Check::CgroupWeights => super::cgroup_weights::run(params, &mut v),
            Check::Watchdog => super::watchdog::run(params, &mut v),
            Check::Takeover => super::takeover::run(params, &mut v),
            Check::ManyThreads => super::many_threads::run(params, &mut v),
            Check::CgroupMoves => super::cgroup_moves::run(params, &mut v),
        };
        if let Err(e) = r {
            v.fail(format!("the check itself failed: {e:#}"));
        }
        // Whatever happened, leave no scheduler of ours behind for the next check.
        if sched_state() != "disabled" && params.self_managed {
            let _ = Command::new("pkill")
                .args(["-INT", "-x", "scx_concord"])
                .status();
            wait_for(Duration::from_secs(15), || sched_state() == "disabled");
        }
        println!("[{}] {}", if v.pass() { "PASS" } else { "FAIL" }, v.check);
        for e in &v.evidence {
            println!("    {e}");
        }
        for f in &v.failures {
            println!("    FAILED: {f}");
        }
        verdicts.push(v);
    }
    std::fs::write(
        run_dir()?.join(super::VERDICTS_FILE),
        serde_json::to_vec_pretty(&verdicts)?,
    )?;
    Ok(if verdicts.iter().all(Verdict::pass) {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_line_finds_the_error() {
        assert!(super::error_line("usage\nerror: bad\nmore").contains("bad"));
    }
}
