//! `cgroup-weights`: cgroups' cpu.weight shares the CPUs between sibling cgroups, nested, under
//! scx_concord as the weights say. Two layouts of spinner processes (a shell loop each, two per
//! CPU per leaf cgroup), run first under EEVDF and then under scx_concord started by the check:
//! flat, cgroups `a` (cpu.weight 100) and `b` (300); nested, `a` holding `a/x` (100) and `a/y`
//! (300) beside `b`. Each cgroup's CPU time is its `cpu.stat` usage over the phase. `b` must get
//! 3x `a`'s time, and `a/y` 3x `a/x`'s, within 10 % (the criterion), while every wait
//! stays in the bound. EEVDF's figures are printed beside them: the kernel's own sharing in the
//! same VM, the reference a reader compares with.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::harness::{online_cpus, stop_cleanly};
use super::spin::{judge_waits, start_concord_judged, QueueWaits};
use super::{GuestParams, Verdict};
use crate::guest::CGROUP_ROOT;
/// How far a measured ratio may be from the weights' (as a fraction of it).
const RATIO_TOLERANCE: f64 = 0.10;
/// Spinners start and move into their cgroups before the measured window begins.
const SETTLE: Duration = Duration::from_secs(1);

/// A leaf or inner cgroup of the check: its path under the root and its cpu.weight.
struct Group {
    name: &'static str,
    weight: u32,
    /// Spinners in it per CPU (0: an inner cgroup).
    per_cpu: usize,
}

/// The two layouts, parents before children.
const FLAT: &[Group] = &[
    Group {
        name: "concord-a",
        weight: 100,
        per_cpu: 2,
    },
    Group {
        name: "concord-b",
        weight: 300,
        per_cpu: 2,
    },
];
const NESTED: &[Group] = &[
    Group {
        name: "concord-a",
        weight: 100,
        per_cpu: 0,
    },
    Group {
        name: "concord-a/x",
        weight: 100,
        per_cpu: 1,
    },
    Group {
        name: "concord-a/y",
        weight: 300,
        per_cpu: 1,
    },
    Group {
        name: "concord-b",
        weight: 300,
        per_cpu: 2,
    },
];
/// A ratio judged: (numerator cgroup, denominator cgroup, the weights' ratio).
type Ratio = (&'static str, &'static str, f64);

const FLAT_RATIOS: &[Ratio] = &[("concord-b", "concord-a", 3.0)];
const NESTED_RATIOS: &[Ratio] = &[
    ("concord-b", "concord-a", 3.0),
    ("concord-a/y", "concord-a/x", 3.0),
];

/// The layout's cgroups, made and weighted; their spinners killed and the cgroups removed
/// (children first) when dropped.
struct Layout {
    dirs: Vec<PathBuf>,
    kids: Vec<Child>,
}

impl Layout {
    fn new(groups: &[Group], cpus: usize) -> Result<Self> {
        let mut l = Self {
            dirs: Vec::new(),
            kids: Vec::new(),
        };
        for g in groups {
            let dir = Path::new(CGROUP_ROOT).join(g.name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            l.dirs.push(dir.clone());
            std::fs::write(dir.join("cpu.weight"), g.weight.to_string())
                .with_context(|| format!("{}: cpu.weight = {}", dir.display(), g.weight))?;
            if g.per_cpu == 0 {
                std::fs::write(dir.join("cgroup.subtree_control"), "+cpu")
                    .with_context(|| format!("{}: enabling the cpu controller", dir.display()))?;
            }
            for _ in 0..g.per_cpu * cpus {
                let kid = Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting a spinner")?;
                let pid = kid.id();
                l.kids.push(kid);
                std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                    .with_context(|| format!("moving spinner {pid} into {}", dir.display()))?;
            }
        }
        Ok(l)
    }

    /// Each cgroup's CPU time so far (cpu.stat usage_usec), in the layout's order.
    fn usage(&self) -> Result<Vec<u64>> {
        self.dirs.iter().map(|d| usage_usec(d)).collect()
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        for k in &mut self.kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn usage_usec(dir: &Path) -> Result<u64> {
    let stat = std::fs::read_to_string(dir.join("cpu.stat"))
        .with_context(|| format!("reading {}/cpu.stat", dir.display()))?;
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{}/cpu.stat has no usage_usec", dir.display()))
}

/// Runs a layout for `secs` after it settled: each cgroup's CPU time in the window, by name.
fn measure(groups: &[Group], cpus: usize, secs: f64) -> Result<Vec<(&'static str, u64)>> {
    let layout = Layout::new(groups, cpus)?;
    std::thread::sleep(SETTLE);
    let before = layout.usage()?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let after = layout.usage()?;
    Ok(groups
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(g, (b, a))| (g.name, a.saturating_sub(*b)))
        .collect())
}

/// The ratio of two cgroups' CPU time in a measurement.
fn ratio(m: &[(&str, u64)], num: &str, den: &str) -> f64 {
    let get = |n: &str| m.iter().find(|(g, _)| *g == n).map_or(0, |(_, u)| *u) as f64;
    get(num) / get(den).max(1.0)
}

/// Whether a measured ratio is the weights' within the tolerance.
fn as_weighted(got: f64, want: f64) -> bool {
    (got - want).abs() <= want * RATIO_TOLERANCE
}

pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let cpus = online_cpus()?;
    let n = cpus.len();
    std::fs::write(
        Path::new(CGROUP_ROOT).join("cgroup.subtree_control"),
        "+cpu",
    )
    .context("enabling the cpu controller")?;
    let layouts: [(&str, &[Group], &[Ratio]); 2] = [
        ("flat", FLAT, FLAT_RATIOS),
        ("nested", NESTED, NESTED_RATIOS),
    ];
    // Under EEVDF (the VM boots under it for this check).
    let mut eevdf = Vec::new();
    for (_, groups, _) in layouts {
        eevdf.push(measure(groups, n, p.secs)?);
    }
    let Some((c, mut waits, bound)) = start_concord_judged(p, &cpus, "cgroup-weights.log", v)?
    else {
        return Ok(());
    };
    for ((name, groups, ratios), reference) in layouts.iter().zip(&eevdf) {
        let got = measure(groups, n, p.secs)?;
        let phase = waits.as_mut().map(QueueWaits::phase).transpose()?;
        let total: u64 = got.iter().map(|(_, u)| u).sum();
        let capacity = p.secs * 1e6 * n as f64;
        v.note(format!(
            "{name}: CPU time per cgroup (ms) under scx_concord {}; EEVDF {}; the leaves used {:.0} % of the CPUs",
            got.iter()
                .map(|(g, u)| format!("{g} {:.0}", *u as f64 / 1e3))
                .collect::<Vec<_>>()
                .join(", "),
            reference
                .iter()
                .map(|(g, u)| format!("{g} {:.0}", *u as f64 / 1e3))
                .collect::<Vec<_>>()
                .join(", "),
            100.0 * leaves_total(groups, &got) as f64 / capacity
        ));
        if total == 0 {
            bail!("{name}: no CPU time counted in any cgroup");
        }
        for &(num, den, want) in *ratios {
            let (g, e) = (ratio(&got, num, den), ratio(reference, num, den));
            v.note(format!(
                "{name}: {num} / {den} = {g:.2} under scx_concord, {e:.2} under EEVDF (weights: {want})"
            ));
            if !as_weighted(g, want) {
                v.fail(format!(
                    "{name}: {num} got {g:.2}x {den}'s CPU time, not {want} within {:.0} %",
                    RATIO_TOLERANCE * 100.0
                ));
            }
        }
        judge_waits(v, name, &[], &phase, bound);
    }
    stop_cleanly(v, c, libc::SIGINT, "SIGINT");
    Ok(())
}

/// CPU time of the leaf cgroups (those with spinners): inner ones count their children again.
fn leaves_total(groups: &[Group], m: &[(&str, u64)]) -> u64 {
    groups
        .iter()
        .zip(m)
        .filter(|(g, _)| g.per_cpu > 0)
        .map(|(_, (_, u))| u)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_hold_to_ten_percent_and_fail_equal_shares() {
        let m = [("concord-a", 500_000), ("concord-b", 1_500_000)];
        assert!((ratio(&m, "concord-b", "concord-a") - 3.0).abs() < 1e-9);
        assert!(as_weighted(3.25, 3.0));
        assert!(as_weighted(2.75, 3.0));
        // Weights ignored (equal shares), or half-applied, fail.
        assert!(!as_weighted(1.0, 3.0));
        assert!(!as_weighted(2.5, 3.0));
        assert!(!as_weighted(3.5, 3.0));
        // A cgroup that got nothing is no ratio of 3.
        assert!(!as_weighted(
            ratio(&[("concord-b", 1)], "concord-b", "concord-a"),
            3.0
        ));
    }

    #[test]
    fn layouts_list_parents_before_children() {
        for layout in [FLAT, NESTED] {
            for (i, g) in layout.iter().enumerate() {
                if let Some((parent, _)) = g.name.rsplit_once('/') {
                    let at = layout.iter().position(|p| p.name == parent);
                    assert!(at.is_some_and(|at| at < i), "{}", g.name);
                    assert_eq!(layout[at.unwrap()].per_cpu, 0, "{parent} holds cgroups");
                }
            }
        }
    }
}
