//! scx_concord: options (config.rs) → read-only BPF data → load → attach → run loop (stats,
//! Ctrl-C, exit reason) → restart when the kernel asks (CPU hotplug): scheduler.rs. The BPF side
//! decides; see src/bpf/main.bpf.c for the policy.

mod bpf_skel;
mod config;
mod domains;
pub use bpf_skel::*;
pub mod bpf_intf;
mod policy;
mod probe;
mod rules;
mod scheduler;
mod stats;

use anyhow::{Context, Result};
use log::{info, warn};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use scheduler::{check_kernel, Scheduler};

const SCHEDULER_NAME: &str = "scx_concord";

/// `0.1.0-g<commit> <target>`: the crate's version, the commit built (when built from git) and
/// scx_utils' build tag, as the scx schedulers print theirs (--version, the log).
static FULL_VERSION: LazyLock<String> = LazyLock::new(|| {
    let semver = match option_env!("CONCORD_GIT_SHA") {
        Some(sha) => format!("{}-g{sha}", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_string(),
    };
    scx_utils::build_id::full_version(&semver)
});

/// The name the kernel shows in /sys/kernel/sched_ext/root/ops: `concord_<version>_<target>`
/// in scx_utils' form, with the commit, characters outside [A-Za-z0-9._] as `_`.
pub(crate) fn ops_name() -> String {
    let semver = match option_env!("CONCORD_GIT_SHA") {
        Some(sha) => format!("{}_g{sha}", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_string(),
    };
    format!(
        "{}{}",
        concord_common::sched::CONCORD_OPS_NAME,
        scx_utils::build_id::ops_version_suffix(&semver)
    )
}

fn real_main() -> Result<()> {
    let opts = config::parse_opts(std::env::args_os().collect())?;
    opts.validate()?;
    if opts.help_stats {
        stats::server_data().describe_meta(&mut std::io::stdout(), None)?;
        return Ok(());
    }
    if opts.man {
        let cmd = config::command().name(SCHEDULER_NAME);
        clap_mangen::Man::new(cmd)
            .section("8")
            .render(&mut std::io::stdout())?;
        return Ok(());
    }
    if let Some(shell) = opts.completions {
        let mut cmd = config::command();
        clap_complete::generate(shell, &mut cmd, SCHEDULER_NAME, &mut std::io::stdout());
        return Ok(());
    }
    simplelog::TermLogger::init(
        if opts.verbose {
            simplelog::LevelFilter::Debug
        } else {
            simplelog::LevelFilter::Info
        },
        simplelog::ConfigBuilder::new()
            .set_time_level(simplelog::LevelFilter::Error)
            .set_location_level(simplelog::LevelFilter::Off)
            .set_target_level(simplelog::LevelFilter::Off)
            .set_thread_level(simplelog::LevelFilter::Off)
            .build(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    )?;

    let shutdown = Arc::new(AtomicBool::new(false));
    let sd = shutdown.clone();
    ctrlc::set_handler(move || sd.store(true, Ordering::Relaxed))
        .context("setting the Ctrl-C handler")?;

    if let Some(intv) = opts.monitor {
        return stats::monitor(Duration::from_secs_f64(intv), shutdown, opts.monitor_format);
    }
    check_kernel()?;
    if opts.check_policy {
        return probe::check_policy(&opts);
    }
    if let Some(intv) = opts.stats {
        let sd = shutdown.clone();
        let format = opts.monitor_format;
        std::thread::spawn(move || {
            if let Err(e) = stats::monitor(Duration::from_secs_f64(intv), sd, format) {
                warn!("stats monitor stopped: {e}");
            }
        });
    }

    let mut open_object = MaybeUninit::uninit();
    loop {
        let mut sched = Scheduler::init(&opts, &mut open_object)?;
        let uei = sched.run(shutdown.clone())?;
        if uei.should_restart() && !shutdown.load(Ordering::Relaxed) {
            info!("the kernel asked for a restart (CPU hotplug?): reloading with the current topology");
            continue;
        }
        break;
    }
    Ok(())
}

/// Errors are one line (no backtrace noise, whatever RUST_BACKTRACE says) and exit 1.
fn main() {
    if let Err(e) = real_main() {
        eprintln!("scx_concord: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use concord_common::sched::concord_defaults::WATCHDOG_MS;

    #[test]
    fn ops_name_matches_the_lab() {
        let src = include_str!("bpf/main.bpf.c");
        assert!(src.contains(&format!(
            ".name\t\t\t= \"{}\"",
            concord_common::sched::CONCORD_OPS_NAME
        )));
        assert!(src.contains(&format!(".timeout_ms\t\t= {WATCHDOG_MS}")));
    }
}
