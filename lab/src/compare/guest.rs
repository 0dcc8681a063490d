//! Guest side of one `compare` run: start the meters (ftrace of the scheduler tracepoints for
//! the wasted-core meter, every thread's allowed CPUs read as threads appear, the kernel's BPF
//! run-time stats), run the scenario's workload, stop the meters and leave everything in the run
//! directory for the host to analyse (the trace is replayed on the host, natively).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Scenario;
use crate::meters::wasted::{END_MARKER, START_MARKER};
use crate::outage::OutageMix;

pub const TRACE_FILE: &str = "trace.txt";
pub const MASKS_FILE: &str = "masks.txt";
pub const BPF_BEFORE: &str = "bpf-before.json";
pub const BPF_AFTER: &str = "bpf-after.json";
pub const METERS_FILE: &str = "meters.json";
pub const WORKLOAD_FILE: &str = "workload.json";
pub const HACKBENCH_FILE: &str = "hackbench.txt";
pub const STRESS_FILE: &str = "stress-ng.yaml";
pub const NOISE_FILE: &str = "noise.json";
/// scx_concord's stats over the load (scx_stats JSON), when concord ran.
pub const SCHED_STATS_FILE: &str = "sched-stats.json";

/// The erlang scenario's point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErlangParams {
    pub load: f64,
    pub busy_wait: concord_workloads::erlang::BusyWait,
    pub reductions: u64,
    /// One request's service time from an earlier run's calibration: every run of a compare
    /// offers the same rate. None: calibrate in this run.
    #[serde(default)]
    pub service_us: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuestParams {
    pub scenario: Scenario,
    pub secs: f64,
    pub nr_cpus: usize,
    pub outage: OutageMix,
    /// Guest time runs on instruction counts (QEMU -icount): work sizes are scaled to it.
    pub icount: bool,
    #[serde(default)]
    pub erlang: Option<ErlangParams>,
    /// Also trace IPIs and interrupt entries (STALL_EVENTS), for meters::stalls.
    #[serde(default)]
    pub trace_stalls: bool,
}

/// Interactive's work per period and per batch chunk (reductions), the same under every
/// scheduler: fixed instruction counts, not a calibration, because under -icount all vCPUs share
/// one instruction clock and a calibration in the guest measured 300 to 1150 ns per reduction
/// depending on background work and the scheduler. Sized for ~160 µs and ~3.2 ms on a fully
/// busy guest: 15 ns per reduction under multi-threaded TCG, ~1.2 µs under -icount shift=2
/// (4 busy vCPUs each get a quarter of the instruction clock's 300 ns per reduction).
pub fn interactive_work(icount: bool) -> (u64, u64) {
    if icount {
        (140, 2800)
    } else {
        (10_000, 200_000)
    }
}

/// What the guest's meters report besides their files.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetersOut {
    /// Events ftrace dropped (buffer overruns), summed over CPUs.
    pub lost_events: u64,
    pub bpftool_error: Option<String>,
    /// Reads of threads' allowed CPUs (walks of /proc or new thread ids), the polls of
    /// /proc/loadavg not counted: guest work the workload competes with.
    #[serde(default)]
    pub mask_scans: u32,
    /// The sampler's total wall time reading, polls included (ms).
    #[serde(default)]
    pub mask_scan_ms: f64,
    /// IPIs sent during the load (summed over CPUs), if /proc/interrupts was readable.
    #[serde(default)]
    pub ipis: Option<crate::meters::ipis::Ipis>,
}

const TRACING: &str = "/sys/kernel/tracing";

fn tracefs(file: &str, value: &str) -> Result<()> {
    let p = Path::new(TRACING).join(file);
    std::fs::write(&p, value).with_context(|| format!("writing {value:?} to {}", p.display()))
}

/// sched_waking: waits start when a wake-up begins (see meters::wasted on why).
const EVENTS: [&str; 4] = [
    "sched/sched_switch",
    "sched/sched_waking",
    "sched/sched_wakeup",
    "sched/sched_wakeup_new",
];

/// IPIs sent and interrupts taken, for meters::stalls: whether a CPU that a task waited for was
/// executing at all. Enabled where the kernel has them (x86's irq_vectors; the ipi events since
/// 6.6); a kernel without them only loses that meter. Only on request (compare --trace-stalls):
/// under TCG they slowed the guest enough to change what they were meant to explain (the
/// erlang scenario's ring and EEVDF's request tail, figures in the commit that made them
/// optional).
const STALL_EVENTS: [&str; 6] = [
    "ipi/ipi_send_cpu",
    "ipi/ipi_send_cpumask",
    "irq_vectors/reschedule_entry",
    "irq_vectors/call_function_entry",
    "irq_vectors/call_function_single_entry",
    "irq_vectors/local_timer_entry",
];

/// The guest's memory (MemTotal), KiB; 0 if unreadable.
fn mem_total_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Per-CPU trace buffer, KiB: an eighth of the guest's memory spread over its CPUs, between 32
/// and 256 MiB. The buffer is a ring that overwrites its oldest events: a window that outgrew it
/// lost its start marker and the run failed (free-running rings at ~12k hops/s filled 32 MiB per
/// CPU before a 15 s erlang run ended). Reading the trace while it runs would cost CPU inside the
/// measurement instead.
fn trace_buffer_kb(nr_cpus: usize, mem_kb: u64) -> u64 {
    let per_cpu = (mem_kb / 8 / nr_cpus.max(1) as u64).clamp(32 * 1024, 256 * 1024);
    // All of them at most half the memory, when known: a smaller window beats a failed run.
    match mem_kb / 2 / nr_cpus.max(1) as u64 {
        0 => per_cpu,
        half => per_cpu.min(half),
    }
}

fn start_trace(nr_cpus: usize, stalls: bool) -> Result<()> {
    tracefs("tracing_on", "0")?;
    tracefs("current_tracer", "nop")?;
    // One clock for all CPUs (the default "local" clock may differ slightly between CPUs).
    tracefs("trace_clock", "mono")?;
    tracefs(
        "buffer_size_kb",
        &trace_buffer_kb(nr_cpus, mem_total_kb()).to_string(),
    )?;
    tracefs("trace", "")?;
    for e in EVENTS {
        tracefs(&format!("events/{e}/enable"), "1")?;
    }
    for e in STALL_EVENTS.iter().filter(|_| stalls) {
        let _ = tracefs(&format!("events/{e}/enable"), "1");
    }
    tracefs("tracing_on", "1")?;
    // A switch on every CPU before the window opens, so the replay knows each CPU's occupant.
    let touches: Vec<_> = (0..nr_cpus)
        .map(|cpu| {
            std::thread::spawn(move || {
                let _ = concord_workloads::sys::pin_current_thread(cpu);
                std::thread::sleep(Duration::from_millis(2));
            })
        })
        .collect();
    for t in touches {
        let _ = t.join();
    }
    tracefs("trace_marker", START_MARKER)
}

fn stop_trace(run_dir: &Path, nr_cpus: usize) -> Result<u64> {
    tracefs("trace_marker", END_MARKER)?;
    tracefs("tracing_on", "0")?;
    let mut src = std::fs::File::open(Path::new(TRACING).join("trace"))?;
    let mut dst = std::fs::File::create(run_dir.join(TRACE_FILE))?;
    std::io::copy(&mut src, &mut dst).context("copying the trace")?;
    for e in EVENTS {
        tracefs(&format!("events/{e}/enable"), "0")?;
    }
    for e in STALL_EVENTS {
        let _ = tracefs(&format!("events/{e}/enable"), "0");
    }
    let mut lost = 0;
    for cpu in 0..nr_cpus {
        let stats = std::fs::read_to_string(format!("{TRACING}/per_cpu/cpu{cpu}/stats"))
            .unwrap_or_default();
        lost += stats
            .lines()
            .filter_map(|l| l.strip_prefix("overrun: "))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(lost)
}

/// One thread's allowed CPUs as a cpulist, by `sched_getaffinity` (None: the thread is gone).
fn allowed_cpus(tid: u32) -> Option<String> {
    // SAFETY: cpu_set_t is plain bits; the kernel writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::sched_getaffinity(tid as libc::pid_t, std::mem::size_of_val(&set), &mut set)
    };
    if rc != 0 {
        return None;
    }
    let cpus: Vec<String> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .map(|c| c.to_string())
        .collect();
    Some(cpus.join(","))
}

/// Every thread's allowed CPUs (`tid cpulist`). One system call per thread rather than reading
/// /proc/<pid>/task/<tid>/status: formatting every thread's status text twice a second costs
/// enough guest CPU under TCG to dominate the erlang scenario's request tail for every
/// scheduler alike, which is the meter measuring itself.
fn sample_masks(into: &mut BTreeMap<u32, String>) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        if !p
            .file_name()
            .as_encoded_bytes()
            .first()
            .is_some_and(u8::is_ascii_digit)
        {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(list) = allowed_cpus(tid) {
                into.insert(tid, list);
            }
        }
    }
}

/// The most recently created pid or tid, from /proc/loadavg's last field.
fn last_pid() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().nth(4)?.parse().ok()
}

/// What the mask sampler reads at one poll.
#[derive(Debug, PartialEq)]
enum MaskScan {
    Nothing,
    /// Every thread of the guest (a directory walk of /proc).
    Full,
    /// Just these thread ids (one `sched_getaffinity` each).
    Tids(Vec<u32>),
}

/// Which threads' allowed CPUs to read, and when. A full walk of /proc costs tens of
/// milliseconds of guest CPU under TCG, enough to show in a latency-critical workload's tail
/// for every scheduler, so one is done only at the start (and at the end, by the caller);
/// after that the sampler follows the kernel's id allocator: ids are handed out in increasing
/// order, so the threads created since the last poll are the ids up to the newest one, read
/// one by one. Each new range is read again twice a little later, because runtimes bind their
/// threads just after creating them (ERTS binds each scheduler thread as it starts). A mask
/// changed later on a thread that lives on is caught by the final walk.
#[derive(Debug, Default)]
struct MaskScans {
    seen: Option<u32>,
    /// Id ranges still to be read again, and when.
    follow_ups: Vec<(Duration, std::ops::RangeInclusive<u32>)>,
}

impl MaskScans {
    const POLL: Duration = Duration::from_millis(100);
    const FOLLOW_UP: Duration = Duration::from_millis(500);
    const FOLLOW_UPS: u32 = 2;
    /// More new ids than this at once (a fork storm, or the allocator wrapped): walk instead.
    const MAX_RANGE: u32 = 4096;

    /// What to read now, given the newest id and the time since the sampler started.
    fn due(&mut self, last_pid: Option<u32>, now: Duration) -> MaskScan {
        let (Some(last), Some(seen)) = (last_pid, self.seen) else {
            self.seen = last_pid;
            return MaskScan::Full;
        };
        self.seen = Some(last);
        if last < seen || last - seen > Self::MAX_RANGE {
            return MaskScan::Full;
        }
        let mut tids = Vec::new();
        if last > seen {
            let new = seen + 1..=last;
            tids.extend(new.clone());
            for k in 1..=Self::FOLLOW_UPS {
                self.follow_ups
                    .push((now + Self::FOLLOW_UP * k, new.clone()));
            }
        }
        self.follow_ups.retain(|(at, r)| {
            if *at <= now {
                tids.extend(r.clone());
                false
            } else {
                true
            }
        });
        if tids.is_empty() {
            MaskScan::Nothing
        } else {
            tids.sort_unstable();
            tids.dedup();
            MaskScan::Tids(tids)
        }
    }
}

fn bpftool_snapshot(path: &Path) -> Result<()> {
    std::fs::write(path, crate::meters::bpfcost::snapshot()?)?;
    Ok(())
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", out.status);
    }
    Ok(out)
}

/// erlang-cgroups' two cgroups under the v2 root, cpu.weight 100 each: the BEAM's (this runner
/// moves itself there, so the BEAM it starts is born in it) and the batch job's. Dropped, the
/// runner goes back to the root and the cgroups are removed (what is left in them keeps them).
struct ErlangCgroups {
    erlang: PathBuf,
    batch: PathBuf,
}

impl ErlangCgroups {
    fn new() -> Result<Self> {
        let root = Path::new(crate::guest::CGROUP_ROOT);
        std::fs::write(root.join("cgroup.subtree_control"), "+cpu")
            .context("enabling the cpu controller")?;
        let g = Self {
            erlang: root.join("concord-erlang"),
            batch: root.join("concord-batch"),
        };
        for dir in [&g.erlang, &g.batch] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(dir.join("cpu.weight"), "100")
                .with_context(|| format!("{}: cpu.weight", dir.display()))?;
        }
        Self::place(&g.erlang, std::process::id())?;
        Ok(g)
    }

    fn place(dir: &Path, pid: u32) -> Result<()> {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", dir.display()))
    }
}

impl Drop for ErlangCgroups {
    fn drop(&mut self) {
        let _ = Self::place(Path::new(crate::guest::CGROUP_ROOT), std::process::id());
        for dir in [&self.erlang, &self.batch] {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn workload(p: &GuestParams, run_dir: &Path) -> Result<()> {
    let json = run_dir.join(WORKLOAD_FILE);
    let secs = p.secs.to_string();
    let n = p.nr_cpus;
    match p.scenario {
        Scenario::Erlang
        | Scenario::ErlangBatch
        | Scenario::ErlangAlone
        | Scenario::ErlangCgroups => {
            let e = p
                .erlang
                .as_ref()
                .context("the erlang scenario needs its load")?;
            let busy = {
                use clap::ValueEnum;
                e.busy_wait
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .context("busy-wait setting")?
            };
            let common = |c: &mut Command| {
                c.args(["--busy-wait", &busy])
                    .args(["--reductions", &e.reductions.to_string()]);
            };
            // One request's work alone, before any other load: the same figure under every
            // scheduler, from which the rate of the offered load follows.
            let service: f64 = match e.service_us {
                Some(s) => s,
                None => {
                    let mut cal = Command::new("beam-real");
                    cal.arg("calibrate");
                    common(&mut cal);
                    let out = run_checked(cal.stdout(Stdio::piped()), "beam-real calibrate")?;
                    String::from_utf8_lossy(&out.stdout)
                        .trim()
                        .parse()
                        .context("beam-real calibrate printed no service time")?
                }
            };
            let mix = &p.outage;
            let warmup = 1.0;
            // The rings and hogs run from before the VM starts until it has finished: stopped
            // then, not timed, because the VM's start-up takes seconds of guest time under
            // -icount (the cap only guards against a lost stop).
            let drain = 10.0;
            let cap = p.secs + warmup + drain + 300.0;
            let cgroups = match p.scenario {
                Scenario::ErlangCgroups => Some(ErlangCgroups::new()?),
                _ => None,
            };
            let mut noise = crate::outage::spawn_noise(mix, cap, &run_dir.join(NOISE_FILE))?;
            if let Some(g) = &cgroups {
                ErlangCgroups::place(&g.batch, noise.id())?;
            }
            std::thread::sleep(Duration::from_millis(500));
            let mut run = Command::new("beam-real");
            run.arg("run");
            common(&mut run);
            let r = run_checked(
                run.args(["--load", &e.load.to_string()])
                    .args(["--service-us", &service.to_string()])
                    .args(["--secs", &secs, "--warmup-secs", &warmup.to_string()])
                    .args(["--drain-secs", &drain.to_string()])
                    .arg("--json")
                    .arg(&json),
                "beam-real run",
            );
            crate::util::signal_child(&noise, libc::SIGINT);
            let st = noise.wait().context("waiting for noise")?;
            drop(cgroups);
            r?;
            if !st.success() {
                bail!("noise failed: {st}");
            }
        }
        Scenario::Wakeup => {
            run_checked(
                Command::new("wakeup-bench")
                    .args(["--message-threads", "2"])
                    .args(["--workers", &(n / 2).max(1).to_string()])
                    .args(["--secs", &secs, "--warmup-secs", "1"])
                    .arg("--json")
                    .arg(&json),
                "wakeup-bench",
            )?;
        }
        Scenario::Interactive => {
            let (burst, chunk) = interactive_work(p.icount);
            run_checked(
                Command::new("interactive-bench")
                    .args(["--burst-reductions", &burst.to_string()])
                    .args(["--batch-chunk-reductions", &chunk.to_string()])
                    .args(["--hogs", &n.to_string()])
                    .args(["--batch-threads", &n.to_string()])
                    .args(["--secs", &secs, "--warmup-secs", "1"])
                    .arg("--json")
                    .arg(&json),
                "interactive-bench",
            )?;
        }
        Scenario::Throughput => {
            // Fixed work (hackbench: time to pass the messages), then fixed time (stress-ng:
            // operations done in it). A group of 20 tasks per CPU, at least 4 groups: the same
            // load per CPU at every size (4 groups on the scenario's own 4 CPUs, as always).
            let groups = n.max(4).to_string();
            let out = run_checked(
                Command::new("hackbench").args(["-P", "-g", &groups, "-f", "10", "-l", "150"]),
                "hackbench",
            )?;
            std::fs::write(run_dir.join(HACKBENCH_FILE), &out.stdout)?;
            run_checked(
                Command::new("stress-ng")
                    .args(["--cpu", &n.to_string(), "--switch", &n.to_string()])
                    .args(["-t", &format!("{}", (p.secs / 2.0).ceil().max(2.0))])
                    .args(["--metrics-brief", "--yaml"])
                    .arg(run_dir.join(STRESS_FILE))
                    .stdout(Stdio::null()),
                "stress-ng",
            )?;
        }
        Scenario::Outage => {
            let mut mix = p.outage.clone();
            mix.secs = p.secs;
            crate::outage::guest_outage(&mix)?;
        }
    }
    Ok(())
}

pub fn main(p: &GuestParams) -> Result<()> {
    let run_dir = PathBuf::from(
        std::env::var_os("CONCORD_LAB_RUN_DIR")
            .context("CONCORD_LAB_RUN_DIR not set: compare's guest side runs inside the lab VM")?,
    );
    let mut meters = MetersOut::default();
    // Counting costs two clock reads per BPF program run; it is on under every scheduler alike
    // (EEVDF has no struct_ops programs to count).
    crate::meters::bpfcost::enable_stats()?;
    if let Err(e) = bpftool_snapshot(&run_dir.join(BPF_BEFORE)) {
        meters.bpftool_error = Some(format!("{e:#}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut masks = BTreeMap::new();
            let (mut scans, mut spent) = (0, Duration::ZERO);
            let mut plan = MaskScans::default();
            let t0 = std::time::Instant::now();
            while !stop.load(Ordering::Acquire) {
                let t = std::time::Instant::now();
                match plan.due(last_pid(), t0.elapsed()) {
                    MaskScan::Nothing => {}
                    MaskScan::Full => {
                        sample_masks(&mut masks);
                        scans += 1;
                    }
                    MaskScan::Tids(tids) => {
                        for tid in tids {
                            if let Some(list) = allowed_cpus(tid) {
                                masks.insert(tid, list);
                            }
                        }
                        scans += 1;
                    }
                }
                spent += t.elapsed();
                std::thread::sleep(MaskScans::POLL);
            }
            sample_masks(&mut masks);
            (masks, scans + 1, spent)
        })
    };
    // scx_concord's own count of the waits, read around the load (its reader reports
    // differences since the connection's first request; the since-attach maxima are absolute).
    let mut stats = crate::sched_proc::concord_stats()?;
    start_trace(p.nr_cpus, p.trace_stalls)?;
    let ipis_before = crate::meters::ipis::Ipis::read().ok();
    let result = workload(p, &run_dir);
    let ipis_after = crate::meters::ipis::Ipis::read().ok();
    if let Some(c) = stats.as_mut() {
        let v = crate::sched_proc::read_stats(c)?;
        std::fs::write(
            run_dir.join(SCHED_STATS_FILE),
            serde_json::to_vec_pretty(&v)?,
        )?;
    }
    let lost = stop_trace(&run_dir, p.nr_cpus);
    meters.ipis = ipis_before.zip(ipis_after).map(|(b, a)| a.since(&b));
    stop.store(true, Ordering::Release);
    let (masks, scans, spent) = sampler.join().unwrap_or_default();
    meters.mask_scans = scans;
    meters.mask_scan_ms = spent.as_secs_f64() * 1e3;
    if let Err(e) = bpftool_snapshot(&run_dir.join(BPF_AFTER)) {
        meters.bpftool_error.get_or_insert(format!("{e:#}"));
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    result?;
    meters.lost_events = lost?;
    let lines: String = masks.iter().map(|(t, l)| format!("{t} {l}\n")).collect();
    std::fs::write(run_dir.join(MASKS_FILE), lines)?;
    std::fs::write(
        run_dir.join(METERS_FILE),
        serde_json::to_vec_pretty(&meters)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_new_thread_ids_only() {
        let ms = Duration::from_millis;
        let mut p = MaskScans::default();
        assert_eq!(
            p.due(Some(100), ms(0)),
            MaskScan::Full,
            "the first poll walks /proc"
        );
        assert_eq!(p.due(Some(100), ms(100)), MaskScan::Nothing);
        assert_eq!(
            p.due(Some(103), ms(200)),
            MaskScan::Tids(vec![101, 102, 103])
        );
        assert_eq!(p.due(Some(104), ms(300)), MaskScan::Tids(vec![104]));
        assert_eq!(p.due(Some(104), ms(400)), MaskScan::Nothing);
        assert_eq!(
            p.due(Some(104), ms(700)),
            MaskScan::Tids(vec![101, 102, 103]),
            "read again for late binding"
        );
        assert_eq!(p.due(Some(104), ms(800)), MaskScan::Tids(vec![104]));
        assert_eq!(
            p.due(Some(104), ms(1200)),
            MaskScan::Tids(vec![101, 102, 103])
        );
        assert_eq!(p.due(Some(104), ms(1300)), MaskScan::Tids(vec![104]));
        for t in (1400..20_000).step_by(100) {
            assert_eq!(
                p.due(Some(104), ms(t)),
                MaskScan::Nothing,
                "a steady window reads nothing ({t} ms)"
            );
        }
        assert_eq!(
            p.due(Some(50), ms(20_000)),
            MaskScan::Full,
            "the allocator wrapped"
        );
        assert_eq!(
            p.due(Some(10_000), ms(20_100)),
            MaskScan::Full,
            "a fork storm"
        );
        assert_eq!(
            p.due(None, ms(20_200)),
            MaskScan::Full,
            "loadavg unreadable"
        );
    }

    #[test]
    fn trace_buffers_grow_with_memory_within_bounds() {
        let gib = 1024 * 1024;
        assert_eq!(trace_buffer_kb(2, 2 * gib), 128 * 1024);
        assert_eq!(
            trace_buffer_kb(64, 6 * gib),
            32 * 1024,
            "never below 32 MiB"
        );
        // unless 32 MiB per CPU would take more than half the memory
        assert_eq!(trace_buffer_kb(64, 2 * gib), 16 * 1024);
        assert_eq!(
            trace_buffer_kb(1, 64 * gib),
            256 * 1024,
            "never above 256 MiB"
        );
        assert_eq!(trace_buffer_kb(0, 0), 32 * 1024);
    }
}
