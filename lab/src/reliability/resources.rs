//! `resources`: scx_concord's memory, its threads' CPU time and its BPF callbacks' time over a
//! run under load.

use anyhow::Result;
use std::io::Read;
use std::time::{Duration, Instant};

use super::harness::{code, concord_attached, online_cpus, stress, wait_child, wait_for, Concord};
use super::{GuestParams, Verdict};
use crate::meters::bpfcost;

/// The most of all CPUs' time the BPF callbacks may take under the check's load, and the
/// most time per call. Both are emulated figures: under TCG a callback takes tens of
/// microseconds where metal takes hundreds of nanoseconds, and so does the rest of the
/// kernel's scheduling path; these lines catch a callback that grew a loop or a lock that
/// every CPU fights over, not a few percent.
const MAX_BPF_SHARE: f64 = 0.20;
const MAX_BPF_NS_PER_CALL: f64 = 100_000.0;

/// VmHWM (peak RSS) of a process, KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let mut status = String::new();
    std::fs::File::open(format!("/proc/{pid}/status"))?.read_to_string(&mut status)?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(hwm)
}

/// Each thread of `pid`: (tid, name) and its exact CPU time so far (schedstat), ns.
fn thread_times(pid: u32) -> std::collections::BTreeMap<(u32, String), u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Default::default();
    };
    dir.flatten()
        .filter_map(|e| {
            let p = e.path();
            let tid = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(p.join("comm")).ok()?;
            let ns = std::fs::read_to_string(p.join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(((tid, comm.trim().to_string()), ns))
        })
        .collect()
}

/// RSS and CPU time of scx_concord over a run under load, stats off.
pub(super) fn run(p: &GuestParams, v: &mut Verdict) -> Result<()> {
    let n = online_cpus()?.len();
    let sched = Concord::spawn(&[], "resources.log", None)?;
    if wait_for(Duration::from_secs(60), concord_attached).is_none() {
        v.fail(format!("did not attach: {}", sched.output()));
        return Ok(());
    }
    let pid = sched.pid();
    // CPU time from each thread's schedstat (the scheduler core's exact run time): utime and
    // stime come in 10 ms clock ticks, a twentieth of the whole budget of a 20 s run.
    let threads0 = thread_times(pid);
    // The scheduler's real cost is its BPF, which runs in the context of the tasks it
    // schedules (their system time), not in its own threads: the kernel counts it per program.
    bpfcost::enable_stats()?;
    let bpf0 = bpfcost::snapshot()?;
    let mut load = stress(&[
        "-q".into(),
        "-c".into(),
        n.to_string(),
        "--pipe".into(),
        "1".into(),
        "--affinity".into(),
        "1".into(),
        "-t".into(),
        format!("{}", p.secs as u64),
    ])?;
    let started = Instant::now();
    let load_st = wait_child(&mut load, Duration::from_secs_f64(p.secs + 30.0));
    let secs = started.elapsed().as_secs_f64();
    let hwm_kib = peak_rss_kib(pid)?;
    let bpf = bpfcost::between(&bpf0, &bpfcost::snapshot()?)?;
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let (calls, ns_per_call) = bpfcost::total(&bpf);
    let bpf_ns: u64 = bpf.iter().map(|c| c.run_time_ns).sum();
    let bpf_share = bpf_ns as f64 / (secs * 1e9 * n as f64);
    let used: Vec<(String, u64)> = thread_times(pid)
        .into_iter()
        .map(|((tid, comm), ns)| {
            let before = threads0.get(&(tid, comm.clone())).copied().unwrap_or(0);
            (format!("{comm} ({tid})"), ns.saturating_sub(before))
        })
        .collect();
    let total_ns: u64 = used.iter().map(|u| u.1).sum();
    let threads: Vec<String> = used
        .iter()
        .map(|(t, ns)| format!("{t} {:.1} ms", *ns as f64 / 1e6))
        .collect();
    let cpu_pct = total_ns as f64 / 1e9 / secs * 100.0;
    let rss_mib = hwm_kib as f64 / 1024.0;
    v.note(format!(
        "{secs:.0} s under stress-ng (cpu + pipe + affinity, {}): peak RSS {rss_mib:.1} MiB, CPU {cpu_pct:.2} % of one CPU",
        code(load_st)
    ));
    v.note(format!("CPU time by thread: {}", threads.join(", ")));
    v.note(format!(
        "BPF callbacks: {calls} calls, {:.0} ns per call, {:.2} % of the {n} CPUs' time ({})",
        ns_per_call.unwrap_or(0.0),
        bpf_share * 100.0,
        bpf.iter()
            .filter(|c| c.run_cnt > 0)
            .map(|c| format!(
                "{} {}x{:.0} ns",
                c.callback,
                c.run_cnt,
                c.ns_per_call().unwrap_or(0.0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if calls == 0 {
        v.fail("no BPF callback counted: the measurement did not work".into());
    }
    if ns_per_call.is_some_and(|ns| ns >= MAX_BPF_NS_PER_CALL) {
        v.fail(format!(
            "BPF callbacks took {:.0} ns per call >= {MAX_BPF_NS_PER_CALL:.0}",
            ns_per_call.unwrap_or(0.0)
        ));
    }
    if bpf_share >= MAX_BPF_SHARE {
        v.fail(format!(
            "BPF callbacks took {:.2} % of the CPUs' time >= {:.0} %",
            bpf_share * 100.0,
            MAX_BPF_SHARE * 100.0
        ));
    }
    if rss_mib >= 64.0 {
        v.fail(format!("peak RSS {rss_mib:.1} MiB >= 64 MiB"));
    }
    if cpu_pct >= 1.0 {
        v.fail(format!("CPU {cpu_pct:.2} % >= 1 % of one CPU"));
    }
    if !concord_attached() {
        v.fail("detached during the run".into());
    }
    let (st, _) = sched.stop();
    if !st.is_some_and(|s| s.success()) {
        v.fail(format!("SIGINT: {}", code(st)));
    }
    Ok(())
}
