//! Workload programs run inside the lab VM, and the pieces they are made of:
//! - `beam`: beam-sim, a BEAM-like runtime with pinned scheduler threads (seed 000's workload);
//! - `erlang`: beam-real, a real Erlang/OTP VM under open-loop load;
//! - `noise`: competing load (token rings that look latency-critical, CPU hogs);
//! - `wakeup`: wakeup-bench, message/worker wake-up latency (schbench's shape);
//! - `interactive`: interactive-bench, a periodic task next to CPU hogs and a batch job;
//! - `yielder`: yield-probe, a poller that yields beside a CPU hog on one CPU;
//! - `work`: the unit of CPU work; `sys`: clock, affinity, futex and schedstat helpers.
pub mod beam;
pub mod erlang;
pub mod interactive;
pub mod noise;
pub mod sys;
pub mod wakeup;
pub mod work;
pub mod yielder;

/// The run length every workload takes: `--secs` in (0, 86400], and if it has one, a
/// `--warmup-secs` in [0, secs).
pub fn check_secs(secs: f64, warmup_secs: Option<f64>) -> anyhow::Result<()> {
    if !(secs > 0.0 && secs <= 86_400.0) {
        anyhow::bail!("--secs must be between 0 and 86400");
    }
    if let Some(w) = warmup_secs {
        if !(w >= 0.0 && w < secs) {
            anyhow::bail!("--warmup-secs must be at least 0 and below --secs");
        }
    }
    Ok(())
}

/// Write `value` as pretty JSON to `path`, or to stdout for `-`.
pub fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
    use anyhow::Context;
    let s = serde_json::to_string_pretty(value)?;
    if path.as_os_str() == "-" {
        println!("{s}");
        Ok(())
    } else {
        std::fs::write(path, s + "\n").with_context(|| format!("writing {}", path.display()))
    }
}
