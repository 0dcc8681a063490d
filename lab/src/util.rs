//! Small helpers: cache location, progress lines, child processes that die with the lab.

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `$CONCORD_LAB_CACHE`, else `$XDG_CACHE_HOME/concord-lab`, else `~/.cache/concord-lab`.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("CONCORD_LAB_CACHE") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("concord-lab")
    } else {
        let home = std::env::var_os("HOME").context("HOME is not set; set CONCORD_LAB_CACHE")?;
        PathBuf::from(home).join(".cache/concord-lab")
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating cache dir {}", dir.display()))?;
    Ok(dir)
}

/// One line of progress on stderr (stdout stays the guest command's output), with the UTC time:
/// long runs go to logs and CI output, where a line per step reads better than a redrawn bar.
pub fn progress(msg: &str) {
    let t = chrono::Utc::now().format("%H:%M:%S");
    eprintln!("[concord-lab {t}] {msg}");
}

pub fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Children get SIGKILL when the lab dies, however it dies (even kill -9): no orphaned QEMU.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Find an executable on PATH or at an absolute path.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Directory of the running executable: the workspace's target dir, where scx_concord and the
/// workloads are built beside the lab.
pub fn exe_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the concord-lab executable")?;
    Ok(exe
        .parent()
        .context("executable has no parent dir")?
        .to_path_buf())
}

/// Send `sig` to our own child (not yet reaped by wait(), so its pid is still ours).
pub fn signal_child(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we own; it cannot have been reused before we wait for it.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Set by SIGINT/SIGTERM; long waits poll it so every exit path cleans up.
static INTERRUPTED: std::sync::LazyLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::LazyLock::new(Default::default);

pub fn install_signal_handlers() -> Result<()> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&INTERRUPTED))
            .with_context(|| format!("installing the handler of signal {sig}"))?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// The workload programs a scenario runs must be built beside concord-lab.
pub fn require_built(programs: &[&str]) -> Result<()> {
    for w in programs {
        if !exe_dir()?.join(w).is_file() {
            bail!("{w} not built beside concord-lab: run `cargo build --release --workspace` (or `make build`)");
        }
    }
    Ok(())
}

/// `YYYYmmdd-HHMMSS` in UTC, for result directory names.
pub fn utc_stamp() -> String {
    chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string()
}
