//! concord-ext: put tasks under a sched_ext scheduler loaded with `--partial` (scheduling policy
//! SCHED_EXT), or give them back to the kernel's own scheduler (SCHED_OTHER). util-linux's
//! `chrt --ext` does this from 2.40 on; Debian 12 ships 2.38.
//!
//! A task keeps SCHED_EXT while no sched_ext scheduler runs (the kernel then treats it as
//! SCHED_OTHER), and threads and children inherit it, so a service started under it moves with
//! every thread it makes.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// The SCHED_EXT policy (include/uapi/linux/sched.h).
const SCHED_EXT: libc::c_int = 7;

/// Run a command, or move a running process, under a sched_ext scheduler loaded with
/// `--partial` (policy SCHED_EXT); `--other` moves back to the kernel's own scheduler.
///
///   concord-ext -- CMD [ARGS]     run CMD with policy SCHED_EXT
///   concord-ext --pid PID         every thread of PID to SCHED_EXT
///   concord-ext --pid PID --other every thread of PID back to SCHED_OTHER
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Every thread of this running process, instead of starting a command.
    #[arg(long, value_name = "PID", conflicts_with = "cmd")]
    pid: Option<u32>,

    /// Back to the kernel's own scheduler (SCHED_OTHER) instead of SCHED_EXT.
    #[arg(long)]
    other: bool,

    /// The command to run, after `--`.
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<OsString>,
}

fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain system call; `param` outlives it.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn explain(e: std::io::Error, policy: libc::c_int) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EINVAL) if policy == SCHED_EXT => {
            anyhow::anyhow!(
                "the kernel refused SCHED_EXT: it has no sched_ext (CONFIG_SCHED_CLASS_EXT)"
            )
        }
        Some(libc::EPERM) => {
            anyhow::anyhow!("not permitted: {e} (run as root or as the task's owner)")
        }
        _ => e.into(),
    }
}

fn threads_of(pid: u32) -> Result<Vec<libc::pid_t>> {
    let dir = format!("/proc/{pid}/task");
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("no process {pid} ({dir})"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    let policy = if args.other {
        libc::SCHED_OTHER
    } else {
        SCHED_EXT
    };
    let name = if args.other {
        "SCHED_OTHER"
    } else {
        "SCHED_EXT"
    };
    match (args.pid, args.cmd.split_first()) {
        (Some(pid), _) => {
            let tids = threads_of(pid)?;
            // Threads that exit meanwhile are gone, not a failure; any other refusal is.
            let mut moved = 0;
            for tid in &tids {
                match set_policy(*tid, policy) {
                    Ok(()) => moved += 1,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(explain(e, policy).context(format!("thread {tid}"))),
                }
            }
            if moved == 0 {
                bail!("process {pid} has no threads left");
            }
            println!("{moved} thread(s) of process {pid} now {name}");
            Ok(())
        }
        (None, Some((prog, rest))) => {
            set_policy(0, policy).map_err(|e| explain(e, policy))?;
            let e = std::process::Command::new(prog).args(rest).exec();
            Err(anyhow::anyhow!(
                "cannot run {}: {e}",
                prog.to_string_lossy()
            ))
        }
        (None, None) => bail!("give a command after `--`, or --pid PID (see --help)"),
    }
}

/// Errors are one line and exit 1.
fn main() {
    if let Err(e) = real_main() {
        eprintln!("concord-ext: error: {e:#}");
        std::process::exit(1);
    }
}
