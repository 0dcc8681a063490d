//! `concord-lab reliability`: stress, starvation, affinity, CPU hotplug, RT tasks beside ours,
//! 10,000 threads, cgroup moves, cgroup weights, exit paths, the watchdog, takeover, bad input, access and resource use, each a check with a
//! pass/fail verdict and the evidence printed.
//!
//! Every check runs in a fresh VM. Where scx_concord schedules the whole run (smoke, fairness,
//! affinity, hotplug, rt-mix, many-threads, cgroup-moves), the guest runner starts it as for `vm --sched concord` and the
//! host also requires what the runner saw: attached at the end, exit 0, a clean guest kernel
//! log. The exit, watchdog, takeover, input, access and resource checks start and stop
//! scx_concord themselves (`rel-guest`, `harness.rs`). One check runs on the host: a kernel
//! without sched_ext (the host's own). Each check lives in its own file, named as the check.

mod access;
mod affinity;
mod bad_input;
mod cgroup_moves;
mod cgroup_weights;
mod check;
mod exits;
mod fairness;
pub mod harness;
mod hotplug;
mod many_threads;
mod nice;
mod plan;
mod resources;
mod rt_mix;
mod spin;
mod takeover;
mod watchdog;

pub use check::Check;
use plan::{plan, Mode, Run};

use anyhow::{bail, Context, Result};
use concord_common::sched::SchedSpec;
use concord_common::topology::TopologySpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

use crate::kernel;
use crate::util::progress;
use crate::vm;

pub const VERDICTS_FILE: &str = "verdicts.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    pub check: String,
    pub evidence: Vec<String>,
    pub failures: Vec<String>,
}

impl Verdict {
    pub fn new(check: &str) -> Self {
        Self {
            check: check.into(),
            evidence: Vec::new(),
            failures: Vec::new(),
        }
    }
    pub fn pass(&self) -> bool {
        self.failures.is_empty()
    }
    pub fn note(&mut self, s: String) {
        self.evidence.push(s);
    }
    pub fn fail(&mut self, s: String) {
        self.failures.push(s);
    }
}

/// What `rel-guest` gets: the checks to run in this VM and their knobs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuestParams {
    pub checks: Vec<Check>,
    /// Length of each load phase, seconds.
    pub secs: f64,
    /// scx_concord's defaults, which the runner starts it with: the wait bound is checked
    /// against them.
    pub max_wait_ms: u64,
    pub slice_max_ms: u64,
    pub error_after_ms: u64,
    /// The checks start scx_concord themselves (the VM has no scheduler of the runner's).
    pub self_managed: bool,
}

#[derive(clap::Args)]
pub struct ReliabilityArgs {
    /// Kernel series to run on, comma-separated (7.3, 7.0, latest).
    #[arg(long, value_delimiter = ',', default_value = kernel::DEFAULT_SERIES)]
    pub kernels: Vec<String>,
    /// The CI subset: every check once, shorter loads (smoke 10 s, one topology per queue mode).
    #[arg(long, conflicts_with = "long")]
    pub quick: bool,
    /// Nightly: the upstream smoke test 20 times per queue mode and topology (~3 hours).
    #[arg(long)]
    pub long: bool,
    /// Run only checks whose name contains one of these words (e.g. `smoke,hotplug`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Where the report goes (default: lab-results/reliability-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// QEMU -icount shift for the checks that judge waits against a bound (fairness, nice,
    /// rt-mix, cgroup-moves, cgroup-weights, many-threads): guest time from instruction counts, so the host's
    /// scheduling of vCPU threads no longer shows up as guest waits.
    #[arg(long, alias = "fairness-icount", default_value_t = 2, conflicts_with = "no_icount",
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub icount: u32,
    /// Run those checks under default multi-threaded TCG (waits then include host noise).
    #[arg(long, alias = "fairness-no-icount")]
    pub no_icount: bool,
    /// Run the smoke test (every queue mode) and the fairness check on these topologies instead
    /// of their own (e.g. `2n2l2c,2n2l4c,1l2c2t`; see `concord-lab vm --help`).
    #[arg(long, value_delimiter = ',', value_parser = TopologySpec::parse)]
    pub topologies: Vec<TopologySpec>,
}
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub check: String,
    pub kernel: String,
    pub topology: String,
    pub sched: String,
    pub pass: bool,
    pub evidence: Vec<String>,
    pub failures: Vec<String>,
    pub run_dir: Option<PathBuf>,
    pub secs: f64,
}
/// A kernel without sched_ext: the host's own, when it has none.
fn host_check() -> Row {
    let mut v = Verdict::new("no sched_ext in the kernel (host)");
    if std::path::Path::new("/sys/kernel/sched_ext").exists() {
        v.note("skipped: this host's kernel has sched_ext".into());
    } else {
        match crate::util::exe_dir().map(|d| d.join("scx_concord")) {
            Ok(bin) => match std::process::Command::new(&bin).output() {
                Ok(out) => {
                    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    v.note(format!(
                        "{}: exit {:?} — {err}",
                        bin.display(),
                        out.status.code()
                    ));
                    if out.status.success() || !err.contains("no sched_ext") {
                        v.fail("not refused with a clear message".into());
                    }
                }
                Err(e) => v.fail(format!("cannot run {}: {e}", bin.display())),
            },
            Err(e) => v.fail(format!("{e:#}")),
        }
    }
    Row {
        check: v.check.clone(),
        kernel: "host".into(),
        topology: "-".into(),
        sched: "concord".into(),
        pass: v.pass(),
        evidence: v.evidence,
        failures: v.failures,
        run_dir: None,
        secs: 0.0,
    }
}

fn one_run(run: &Run, kernel: &kernel::Kernel) -> Result<Vec<Row>> {
    let t0 = Instant::now();
    // The verdicts below read the outcome itself (its message, exit code and result).
    let (out, _) = crate::vm::run_guest_job(
        kernel,
        run.topology,
        &run.sched,
        run.cmd.clone(),
        run.timeout,
        run.icount,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    // What the runner saw applies to every check of the run.
    let mut common = Verdict::new("");
    match &out.result {
        Some(r) => {
            if let Some(s) = &r.sched {
                common.note(s.summary());
                if !s.attached_at_end || s.exit_code != Some(0) {
                    common.fail(format!(
                        "scheduler failed during the run{}",
                        s.exit_reason
                            .as_ref()
                            .map(|r| format!(" (kernel: {r})"))
                            .unwrap_or_default()
                    ));
                }
            }
            for p in &r.klog_problems {
                if run.expected_klog.iter().any(|e| p.contains(e)) {
                    common.note(format!("guest kernel log (provoked): {p}"));
                } else {
                    common.fail(format!("guest kernel log: {p}"));
                }
            }
            if let Some(e) = &r.error {
                common.fail(e.clone());
            }
        }
        None => common.fail(
            out.message
                .clone()
                .unwrap_or_else(|| format!("no result (exit {})", out.exit_code)),
        ),
    }
    let verdicts: Option<Vec<Verdict>> = std::fs::read(out.run_dir.join(VERDICTS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut rows = Vec::new();
    let row = |v: Verdict| Row {
        check: v.check.clone(),
        kernel: kernel.release.clone(),
        topology: run.topology.to_string(),
        sched: run.sched_label(),
        pass: v.pass(),
        evidence: v.evidence,
        failures: v.failures,
        run_dir: Some(out.run_dir.clone()),
        secs,
    };
    match verdicts {
        Some(vs) => {
            for mut v in vs {
                v.evidence.extend(common.evidence.iter().cloned());
                v.failures.extend(common.failures.iter().cloned());
                rows.push(row(v));
            }
        }
        None => {
            let mut v = Verdict::new(&run.name);
            v.evidence = common.evidence.clone();
            v.failures = common.failures.clone();
            if let Some(r) = &out.result {
                v.evidence.insert(
                    0,
                    format!(
                        "{} exit {:?} after {:.0} s",
                        run.cmd[0], r.cmd_exit, r.cmd_secs
                    ),
                );
                if r.cmd_exit != Some(0) {
                    v.fail(format!("{} exit {:?}", run.cmd[0], r.cmd_exit));
                }
            }
            if run.cmd[1] == "rel-guest" {
                v.fail(format!("no {VERDICTS_FILE} written"));
            }
            rows.push(row(v));
        }
    }
    Ok(rows)
}

fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| check | kernel | topology | scheduler | verdict | evidence |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let mut ev: Vec<String> = r.failures.iter().map(|f| format!("**{f}**")).collect();
        ev.extend(r.evidence.iter().cloned());
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.check,
            r.kernel,
            r.topology,
            r.sched,
            if r.pass { "pass" } else { "FAIL" },
            ev.join("<br>").replace('|', "\\|")
        ));
    }
    s
}

pub fn run(args: ReliabilityArgs) -> Result<i32> {
    let mode = if args.quick {
        Mode::Quick
    } else if args.long {
        Mode::Long
    } else {
        Mode::Normal
    };
    if args.kernels.is_empty() {
        bail!("--kernels names no kernel");
    }
    let icount = (!args.no_icount).then_some(args.icount);
    let mut runs = plan(mode, &args.kernels, icount, &args.topologies)?;
    if !args.only.is_empty() {
        runs.retain(|r| {
            args.only
                .iter()
                .any(|w| r.name.contains(w.as_str()) || r.cmd.join(" ").contains(w.as_str()))
        });
        if runs.is_empty() {
            bail!("--only {}: no check matches", args.only.join(","));
        }
    }
    crate::sched_binary(&SchedSpec::parse("concord")?)?;
    vm::check_host()?;
    let mut kernels = Vec::new();
    for k in &args.kernels {
        kernels.push((k.clone(), kernel::select(k)?));
    }
    let out_dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("lab-results").join(format!("reliability-{}", crate::util::utc_stamp()))
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    progress(&format!(
        "reliability suite: {} VM runs on {} kernel(s), results in {}",
        runs.len(),
        kernels.len(),
        out_dir.display()
    ));
    let mut rows = vec![host_check()];
    let started = Instant::now();
    for (i, run) in runs.iter().enumerate() {
        if crate::util::interrupted() {
            bail!("interrupted");
        }
        let kernel = &kernels.iter().find(|(k, _)| *k == run.kernel).unwrap().1;
        progress(&format!(
            "run {}/{}: {} on {} ({}, {})",
            i + 1,
            runs.len(),
            run.name,
            kernel.release,
            run.topology,
            run.sched_label()
        ));
        let new = one_run(run, kernel)?;
        for r in &new {
            progress(&format!(
                "  {} {}: {}",
                if r.pass { "pass" } else { "FAIL" },
                r.check,
                r.failures
                    .first()
                    .or(r.evidence.first())
                    .cloned()
                    .unwrap_or_default()
            ));
        }
        rows.extend(new);
        let n = i + 1;
        progress(&format!(
            "  ({:.0} s; ~{:.0} min left)",
            started.elapsed().as_secs_f64() / n as f64,
            started.elapsed().as_secs_f64() / n as f64 * (runs.len() - n) as f64 / 60.0
        ));
    }
    let md = markdown(&rows);
    let failed = rows.iter().filter(|r| !r.pass).count();
    let summary = format!(
        "{} checks, {} passed, {failed} failed ({:.0} min)",
        rows.len(),
        rows.len() - failed,
        started.elapsed().as_secs_f64() / 60.0
    );
    println!("{md}\n{summary}");
    std::fs::write(out_dir.join("report.md"), format!("{md}\n{summary}\n"))?;
    std::fs::write(
        out_dir.join("reliability.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    progress(&format!("report: {}", out_dir.join("report.md").display()));
    Ok(if failed == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rows_escape_and_flag_failures() {
        let rows = vec![Row {
            check: "x".into(),
            kernel: "7.3".into(),
            topology: "1l2c".into(),
            sched: "concord".into(),
            pass: false,
            evidence: vec!["a|b".into()],
            failures: vec!["bad".into()],
            run_dir: None,
            secs: 1.0,
        }];
        let md = markdown(&rows);
        assert!(md.contains("| FAIL | **bad**<br>a\\|b |"), "{md}");
    }
}
