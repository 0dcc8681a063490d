//! The guest side of the lab, run by /init inside the VM (chroot of the host root):
//! check the topology, start the scheduler and wait until the kernel reports it enabled, run
//! the command, stop the scheduler, collect the kernel log, write the result.

use anyhow::{Context, Result};
use concord_common::topology::{normalise_groups, parse_cpulist, CpuGroups};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::protocol::{self, exit, GuestResult, Job, SchedReport, MARKER};
use crate::sched_proc::{Attach, SchedProcess};

const SCHED_EXT: &str = "/sys/kernel/sched_ext";

/// One whole line on the console (ttyS1). Everything the runner prints goes through here, under
/// the stdout lock, so the scheduler relay and the runner's own lines never interleave.
pub fn console_line(line: &str) {
    let mut so = std::io::stdout().lock();
    let _ = writeln!(so, "{line}");
    let _ = so.flush();
}

fn say(msg: &str) {
    console_line(&format!("{MARKER}{msg}"));
}

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn sched_state() -> String {
    read_trim(format!("{SCHED_EXT}/state")).unwrap_or_else(|| "absent".into())
}

/// scx_utils-based peers register as `<name>_<version>_<target>`; concord as plain `concord`.
pub fn ops_matches(ops: &str, name: &str) -> bool {
    ops == name
        || ops
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('_'))
}

/// Where the guest's cgroup v2 hierarchy is mounted (the checks and scenarios that make
/// cgroups put them under it).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub fn sched_ops() -> String {
    read_trim(format!("{SCHED_EXT}/root/ops")).unwrap_or_default()
}

/// LLC, NUMA node and SMT groups as the guest kernel sees them.
pub fn observed_groups() -> Result<CpuGroups> {
    let mut llcs = Vec::new();
    let mut smt = Vec::new();
    let cpus = parse_cpulist(
        &read_trim("/sys/devices/system/cpu/online").context("reading online CPUs")?,
    )?;
    for cpu in &cpus {
        let base = PathBuf::from(format!("/sys/devices/system/cpu/cpu{cpu}"));
        // The highest cache level shared by this CPU is its LLC.
        let mut best: Option<(u32, Vec<u32>)> = None;
        if let Ok(rd) = std::fs::read_dir(base.join("cache")) {
            for e in rd.flatten() {
                let d = e.path();
                let (Some(level), Some(list)) = (
                    read_trim(d.join("level")),
                    read_trim(d.join("shared_cpu_list")),
                ) else {
                    continue;
                };
                let level: u32 = level.parse().unwrap_or(0);
                if best.as_ref().is_none_or(|(l, _)| level > *l) {
                    best = Some((level, parse_cpulist(&list)?));
                }
            }
        }
        llcs.push(best.map(|b| b.1).unwrap_or_else(|| vec![*cpu]));
        smt.push(parse_cpulist(
            &read_trim(base.join("topology/thread_siblings_list")).unwrap_or(cpu.to_string()),
        )?);
    }
    let mut nodes = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/devices/system/node") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("node") {
                if let Some(l) = read_trim(e.path().join("cpulist")) {
                    nodes.push(parse_cpulist(&l)?);
                }
            }
        }
    }
    if nodes.is_empty() {
        nodes.push(cpus.clone());
    }
    Ok(CpuGroups {
        llcs: normalise_groups(llcs),
        nodes: normalise_groups(nodes),
        smt_cores: normalise_groups(smt),
    })
}

fn fmt_groups(g: &[Vec<u32>]) -> String {
    g.iter()
        .map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Read the whole kernel log (every level, unlike the console) without blocking.
fn read_kmsg() -> String {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return String::new();
    };
    let mut out = String::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let (hdr, msg) = rec.split_once(';').unwrap_or(("", &rec));
                let ts = hdr
                    .split(',')
                    .nth(2)
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(0);
                let first = msg.lines().next().unwrap_or("");
                out.push_str(&format!(
                    "[{:>5}.{:06}] {first}\n",
                    ts / 1_000_000,
                    ts % 1_000_000
                ));
            }
            // EPIPE: records were overwritten; keep reading from the next one.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    out
}

/// Kernel log lines that mean trouble, whatever the scheduler.
pub fn klog_problems(log: &str) -> Vec<String> {
    const PATTERNS: &[&str] = &[
        "BUG:",
        "WARNING:",
        "Oops",
        "runnable task stall",
        "watchdog failed",
        "Kernel panic",
        "hung_task",
        // A clocksource change mid-run invalidates every timing taken across it.
        "Marking clocksource",
    ];
    log.lines()
        .filter(|l| PATTERNS.iter().any(|p| l.contains(p)))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The reason the kernel gave when a sched_ext scheduler was disabled, e.g.
/// `sched_ext: BPF scheduler "concord" disabled (unregistered from user space)`.
pub fn sched_exit_reason(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.contains("sched_ext:") && (l.contains("disabled") || l.contains("errored")))
        .map(|l| {
            l.split_once("sched_ext:")
                .map(|(_, r)| r.trim().to_string())
                .unwrap_or_default()
        })
}

fn start_sched(job: &Job, run_dir: &Path) -> Result<(SchedProcess, f64), String> {
    let bin = job
        .sched_binary
        .clone()
        .ok_or("no scheduler binary given")?;
    let ops = job.sched.kind.ops_name().unwrap_or_default();
    if !Path::new(SCHED_EXT).exists() {
        return Err(format!("this kernel has no sched_ext ({SCHED_EXT} missing): boot a kernel with CONFIG_SCHED_CLASS_EXT=y"));
    }
    let state = sched_state();
    if state != "disabled" {
        return Err(format!(
            "another sched_ext scheduler is active (state {state}, ops '{}')",
            sched_ops()
        ));
    }
    let log = run_dir.join(protocol::SCHED_LOG);
    let mut proc = SchedProcess::spawn(
        &bin,
        &job.sched.args,
        &log,
        None,
        Some(job.sched.kind.name().to_string()),
    )
    .map_err(|e| format!("{e:#}"))?;
    let limit = Duration::from_secs(job.sched_attach_timeout_s);
    match proc.wait_attached(ops, limit) {
        Attach::Attached(secs) => Ok((proc, secs)),
        Attach::Exited(st) => {
            let reason = sched_exit_reason(&read_kmsg())
                .map(|r| format!("; kernel: {r}"))
                .unwrap_or_default();
            Err(format!(
                "{} exited ({st}) before attaching{reason} (its log: {})",
                bin.display(),
                log.display()
            ))
        }
        Attach::TimedOut => {
            let (state, ops) = (sched_state(), sched_ops());
            let _ = proc.stop_with(libc::SIGKILL, Duration::from_secs(5));
            Err(format!(
                "{} did not attach within {} s (state '{state}', ops '{ops}')",
                bin.display(),
                limit.as_secs(),
            ))
        }
    }
}

fn run_job(job: &Job, run_dir: &Path, result: &mut GuestResult) -> Result<()> {
    result.kernel_release = read_trim("/proc/sys/kernel/osrelease").unwrap_or_default();
    // libbpf reads the kernel config for __kconfig externs. Debian ships it for some kernels
    // only; for the others a stand-in with the values every Debian amd64 kernel has.
    let boot_cfg = format!("/boot/config-{}", result.kernel_release);
    match &job.kernel_config {
        Some(c) => {
            std::fs::copy(c, &boot_cfg).with_context(|| format!("copying {} to {boot_cfg}", c.display()))?;
        }
        None => std::fs::write(&boot_cfg, "CONFIG_X86_64=y\nCONFIG_BPF=y\nCONFIG_BPF_SYSCALL=y\nCONFIG_SCHED_CLASS_EXT=y\nCONFIG_PREEMPT_RCU=y\n")?,
    }

    say("stage=topology");
    let want = job.topology.groups();
    let got = observed_groups()?;
    if want != got {
        result.exit_code = exit::LAB_ERROR;
        result.error = Some(format!(
            "the guest's topology is not the {} asked for: LLCs {} (want {}), nodes {} (want {}), SMT {} (want {})",
            job.topology,
            fmt_groups(&got.llcs),
            fmt_groups(&want.llcs),
            fmt_groups(&got.nodes),
            fmt_groups(&want.nodes),
            fmt_groups(&got.smt_cores),
            fmt_groups(&want.smt_cores)
        ));
        return Ok(());
    }

    let mut sched = None;
    if job.sched_binary.is_some() {
        say("stage=sched-start");
        match start_sched(job, run_dir) {
            Ok((s, secs)) => {
                console_line(&format!(
                    "[concord-lab] {} attached after {secs:.1} s",
                    job.sched.label()
                ));
                result.sched = Some(SchedReport {
                    label: job.sched.label(),
                    attach_secs: secs,
                    ..Default::default()
                });
                sched = Some(s);
            }
            Err(e) => {
                result.exit_code = exit::LAB_ERROR;
                result.error = Some(format!("scheduler {}: {e}", job.sched.label()));
                return Ok(());
            }
        }
    }

    say("stage=cmd");
    let mut path = job
        .path_prepend
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>();
    path.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let t0 = Instant::now();
    let status = Command::new(&job.cmd[0])
        .args(&job.cmd[1..])
        .current_dir("/tmp")
        .env("PATH", path.join(":"))
        .env("HOME", "/tmp")
        .env("CONCORD_LAB_RUN_DIR", run_dir)
        .stdin(Stdio::null())
        .status();
    result.cmd_secs = t0.elapsed().as_secs_f64();
    match status {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            result.cmd_exit = Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            result.cmd_exit = Some(exit::NOT_FOUND);
            result.error = Some(format!("command not found in the guest: {}", job.cmd[0]));
        }
        Err(e) => {
            result.cmd_exit = Some(exit::LAB_ERROR);
            result.error = Some(format!("cannot run {}: {e}", job.cmd[0]));
        }
    }
    result.exit_code = result.cmd_exit.unwrap_or(exit::LAB_ERROR);

    if let Some(mut s) = sched {
        say("stage=sched-stop");
        let ops = job.sched.kind.ops_name().unwrap_or_default();
        let attached = s.alive() && sched_state() == "enabled" && ops_matches(&sched_ops(), ops);
        // SIGINT, as a user would stop it; SIGKILL if it does not go within 30 s.
        let (status, _) = s.stop_with(libc::SIGINT, Duration::from_secs(30));
        let (code, signal) = {
            use std::os::unix::process::ExitStatusExt;
            status
                .map(|s| (s.code(), s.signal()))
                .unwrap_or((None, None))
        };
        std::thread::sleep(Duration::from_millis(200));
        let rep = result.sched.as_mut().unwrap();
        rep.attached_at_end = attached;
        rep.exit_code = code;
        rep.exit_signal = signal;
        rep.state_after = sched_state();
        rep.exit_reason = sched_exit_reason(&read_kmsg());
        let ok = attached && code == Some(0);
        if !ok && result.exit_code == 0 {
            result.exit_code = exit::SCHED_FAILED;
            result.error = Some(format!(
                "scheduler {} failed during the run: {}, exit {:?}{}",
                rep.label,
                if attached {
                    "still attached at the end"
                } else {
                    "detached before the command ended"
                },
                code,
                rep.exit_reason
                    .as_ref()
                    .map(|r| format!(", kernel: {r}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Entry point inside the VM. Always writes a result and returns 0: the host decides.
pub fn main(run_dir: &Path) -> Result<()> {
    let mut result = GuestResult::default();
    let job: Job = serde_json::from_slice(&std::fs::read(run_dir.join(protocol::JOB_FILE))?)?;
    if let Err(e) = run_job(&job, run_dir, &mut result) {
        result.exit_code = exit::LAB_ERROR;
        result.error = Some(format!("guest runner: {e:#}"));
    }
    let log = read_kmsg();
    result.klog_problems = klog_problems(&log);
    std::fs::write(run_dir.join(protocol::DMESG_FILE), &log)?;
    std::fs::write(
        run_dir.join(protocol::RESULT_FILE),
        serde_json::to_vec_pretty(&result)?,
    )?;
    say("stage=done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_problems_and_exit_reasons() {
        let log = "[ 1.0] sched_ext: BPF scheduler \"concord\" enabled\n\
                   [ 2.0] WARNING: CPU: 1 PID: 5 at kernel/sched/ext.c:100\n\
                   [ 3.0] sched_ext: BPF scheduler \"concord\" disabled (runnable task stall)\n";
        let p = klog_problems(log);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(
            sched_exit_reason(log).unwrap(),
            "BPF scheduler \"concord\" disabled (runnable task stall)"
        );
        assert!(klog_problems("[ 1.0] all fine\n").is_empty());
        assert_eq!(sched_exit_reason("nothing"), None);
        assert!(ops_matches("concord", "concord"));
        assert!(ops_matches("lavd_1.1.4_x86_64_unknown_linux_gnu", "lavd"));
        assert!(!ops_matches("lavdx", "lavd"));
    }
}
