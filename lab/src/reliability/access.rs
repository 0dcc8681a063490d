//! `access`: only root loads or watches the scheduler; the stats endpoint is root's alone.

use anyhow::{Context, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::harness::{
    code, concord_attached, error_line, exited_nonzero, wait_for, Concord, NOBODY, STATS_SOCKET,
};
use super::Verdict;
use crate::guest::sched_state;

/// Only root loads or watches the scheduler; the stats endpoint is root's alone.
pub(super) fn run(v: &mut Verdict) -> Result<()> {
    let c = Concord::spawn(&[], "access-nobody.log", Some(NOBODY))?;
    let (st, out) = c.finish(Duration::from_secs(20));
    v.note(format!(
        "scx_concord as nobody: {} — {}; state {}",
        code(st),
        error_line(&out),
        sched_state()
    ));
    if !exited_nonzero(st) || !out.contains("needs root") || sched_state() != "disabled" {
        v.fail(format!(
            "an unprivileged load was not refused clearly: {}",
            out.trim()
        ));
    }

    let sched = Concord::spawn(&[], "access-root.log", None)?;
    // The stats server starts after the attach and replaces any socket an earlier instance left
    // behind (remove, then bind): stat the socket only once it accepts connections, or the
    // check races that replacement (a CI run read the old socket, then found no file at all).
    if wait_for(Duration::from_secs(60), || {
        concord_attached() && UnixStream::connect(STATS_SOCKET).is_ok()
    })
    .is_none()
    {
        v.fail(format!(
            "did not attach and serve stats: {}",
            sched.output()
        ));
        return Ok(());
    }
    // The socket and the directories leading to it: owned by root, nobody else may write
    // (connecting to a UNIX socket needs write permission on it).
    let sock = Path::new(STATS_SOCKET);
    let mut paths = vec![sock.to_path_buf()];
    paths.extend(sock.ancestors().skip(1).take(2).map(Path::to_path_buf));
    for path in &paths {
        let md = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
        let mode = md.permissions().mode() & 0o7777;
        v.note(format!(
            "{}: owner uid {}, mode {mode:04o}",
            path.display(),
            md.uid()
        ));
        if md.uid() != 0 || mode & 0o022 != 0 {
            v.fail(format!(
                "{} is writable by others than root (uid {}, mode {mode:04o})",
                path.display(),
                md.uid()
            ));
        }
    }
    if std::fs::metadata(sock)?.permissions().mode() & 0o006 != 0 {
        v.fail(format!("{STATS_SOCKET}: other users may connect"));
    }
    let mon = Concord::spawn(
        &["--monitor", "1"],
        "access-monitor-nobody.log",
        Some(NOBODY),
    )?;
    let (st, out) = mon.finish(Duration::from_secs(15));
    v.note(format!(
        "--monitor as nobody: {} — {}",
        code(st),
        error_line(&out)
    ));
    if !exited_nonzero(st) || out.contains("dispatch") {
        v.fail(format!("nobody could read the stats: {}", out.trim()));
    }
    let mon = Concord::spawn(&["--monitor", "1"], "access-monitor-root.log", None)?;
    std::thread::sleep(Duration::from_secs(4));
    let (st, out) = mon.stop();
    let read = out.contains("dispatch");
    v.note(format!(
        "--monitor as root: stats read: {read}, {} on SIGINT; the scheduler still attached: {}",
        code(st),
        concord_attached()
    ));
    if !read || !concord_attached() {
        v.fail(format!("root's monitor: {}", out.trim()));
    }
    let (st, _) = sched.stop();
    if !st.is_some_and(|s| s.success()) {
        v.fail(format!("SIGINT: {}", code(st)));
    }
    Ok(())
}
