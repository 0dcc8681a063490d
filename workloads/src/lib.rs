//! Workload programs run inside the lab VM, and the pieces they are made of:
//! - `beam`: beam-sim, a BEAM-like runtime with pinned scheduler threads (seed 000's workload);
//! - `noise`: competing load (token rings that look latency-critical, CPU hogs);
//! - `wakeup`: wakeup-bench, message/worker wake-up latency (schbench's shape);
//! - `interactive`: interactive-bench, a periodic task next to CPU hogs and a batch job;
//! - `work`: the unit of CPU work; `sys`: clock, affinity, futex and schedstat helpers.
pub mod beam;
pub mod interactive;
pub mod noise;
pub mod sys;
pub mod wakeup;
pub mod work;

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
