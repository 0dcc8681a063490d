//! BPF cost of a scheduler: with `kernel.bpf_stats_enabled=1` the kernel counts, per BPF
//! program, how often it ran and for how long (`run_cnt`, `run_time_ns`); the verifier's
//! processed-instruction count (`verified_insns`) comes with every program when the kernel and
//! bpftool report it (bpftool 7.5 on the 7.x kernels here shows none: then the program's
//! translated and JIT-compiled sizes stand for its size). The guest saves
//! `bpftool prog show --json` when the load starts and when it ends; the difference, for the
//! struct_ops programs (one per scheduler callback), is the scheduler's cost during the load.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgCost {
    /// The program's name (`concord_enqueue`, `lavd_enqueue`, ...).
    pub name: String,
    /// The callback, the name without the scheduler's prefix (`enqueue`), to line peers up.
    pub callback: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub verified_insns: u64,
    #[serde(default)]
    pub bytes_xlated: u64,
    #[serde(default)]
    pub bytes_jited: u64,
}

impl ProgCost {
    pub fn ns_per_call(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

#[derive(Deserialize)]
struct BpftoolProg {
    id: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    run_time_ns: u64,
    #[serde(default)]
    run_cnt: u64,
    #[serde(default)]
    verified_insns: u64,
    #[serde(default)]
    bytes_xlated: u64,
    #[serde(default)]
    bytes_jited: u64,
}

fn struct_ops(json: &str) -> Result<Vec<BpftoolProg>> {
    let all: Vec<BpftoolProg> =
        serde_json::from_str(json).context("parsing `bpftool prog show --json`")?;
    Ok(all.into_iter().filter(|p| p.kind == "struct_ops").collect())
}

/// The struct_ops programs' cost between two `bpftool prog show --json` snapshots (a program
/// missing from `before` was loaded in between and counts from zero).
pub fn between(before: &str, after: &str) -> Result<Vec<ProgCost>> {
    let before = struct_ops(before)?;
    let mut out: Vec<ProgCost> = struct_ops(after)?
        .into_iter()
        .map(|p| {
            let b = before.iter().find(|b| b.id == p.id);
            let callback = p
                .name
                .split_once('_')
                .map(|(_, cb)| cb.to_string())
                .unwrap_or_else(|| p.name.clone());
            ProgCost {
                callback,
                run_cnt: p.run_cnt - b.map_or(0, |b| b.run_cnt.min(p.run_cnt)),
                run_time_ns: p.run_time_ns - b.map_or(0, |b| b.run_time_ns.min(p.run_time_ns)),
                verified_insns: p.verified_insns,
                bytes_xlated: p.bytes_xlated,
                bytes_jited: p.bytes_jited,
                name: p.name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.callback.cmp(&b.callback));
    Ok(out)
}

/// `bpftool prog show --json` now (the kernel counts run time only while
/// `kernel.bpf_stats_enabled` is 1: see `enable_stats`).
pub fn snapshot() -> Result<String> {
    let out = std::process::Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running bpftool (install it: scripts/setup-host.sh)")?;
    if !out.status.success() {
        anyhow::bail!(
            "bpftool prog show failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("bpftool's output is not UTF-8")
}

/// Turns on the kernel's per-program run time counts (`kernel.bpf_stats_enabled`).
pub fn enable_stats() -> Result<()> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled")
}

/// Calls and time over all callbacks: (calls, mean ns per call).
pub fn total(progs: &[ProgCost]) -> (u64, Option<f64>) {
    let calls: u64 = progs.iter().map(|p| p.run_cnt).sum();
    let ns: u64 = progs.iter().map(|p| p.run_time_ns).sum();
    (calls, (calls > 0).then(|| ns as f64 / calls as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_of_struct_ops_programs_only() {
        let before = r#"[{"id":3,"type":"struct_ops","name":"concord_enqueue","run_time_ns":1000,"run_cnt":10,"verified_insns":900},
                        {"id":4,"type":"tracing","name":"x","run_time_ns":5,"run_cnt":5}]"#;
        let after = r#"[{"id":3,"type":"struct_ops","name":"concord_enqueue","run_time_ns":31000,"run_cnt":110,"verified_insns":900},
                       {"id":5,"type":"struct_ops","name":"concord_dispatch","run_time_ns":500,"run_cnt":2,"verified_insns":4000,"bytes_jited":3516},
                       {"id":4,"type":"tracing","name":"x","run_time_ns":50,"run_cnt":50}]"#;
        let c = between(before, after).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].callback, "dispatch");
        assert_eq!(c[1].name, "concord_enqueue");
        assert_eq!((c[1].run_cnt, c[1].run_time_ns), (100, 30_000));
        assert_eq!(c[1].ns_per_call(), Some(300.0));
        assert_eq!(c[0].verified_insns, 4000);
        assert_eq!((c[0].bytes_jited, c[1].bytes_jited), (3516, 0));
        assert_eq!(total(&c), (102, Some(30_500.0 / 102.0)));
        assert_eq!(total(&[]), (0, None));
        assert!(between("not json", after).is_err());
    }
}
