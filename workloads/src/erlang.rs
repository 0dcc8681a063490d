//! beam-real: a real Erlang/OTP VM (Debian's `erlang-base`) under open-loop load. The Erlang side
//! (`erlang/beam_load.escript`, embedded here) generates requests and measures them; this side
//! sets the emulator flags (`+S`, `+sbt`, `+sbwt`), derives the request rate from an offered load
//! and a calibration, reads the scheduler threads' schedstat before and after, and writes one
//! report in the shape of the other workloads'.
//!
//! Offered load is the BEAM's request work as a share of all the CPUs its schedulers are bound
//! to: `rate = load x schedulers / service time`, with the service time of one request measured
//! by a calibration on the machine before any other load starts (so it is the same figure
//! whichever kernel scheduler then runs).

use anyhow::{bail, Context, Result};
use concord_common::hist::Hist;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sys::SchedStat;

/// The Erlang program, written to a temporary file for `escript` at run time.
pub const ESCRIPT: &str = include_str!("../erlang/beam_load.escript");

/// ERTS busy-wait setting of idle schedulers (`+sbwt`): the spin loop calls sched_yield.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BusyWait {
    None,
    VeryShort,
    Short,
    Medium,
    Long,
    VeryLong,
}

impl BusyWait {
    pub fn flag(self) -> &'static str {
        match self {
            BusyWait::None => "none",
            BusyWait::VeryShort => "very_short",
            BusyWait::Short => "short",
            BusyWait::Medium => "medium",
            BusyWait::Long => "long",
            BusyWait::VeryLong => "very_long",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErlangConfig {
    pub schedulers: usize,
    /// `+sbt db` (bound one per CPU) or unbound (`+sbt u`).
    pub bound: bool,
    pub busy_wait: BusyWait,
    pub reductions: u64,
    pub generators: usize,
    pub secs: f64,
    pub warmup_secs: f64,
    pub drain_secs: f64,
}

impl ErlangConfig {
    pub fn erl_flags(&self) -> String {
        format!(
            "+S {n}:{n} +sbt {} +sbwt {} +sbwtdcpu none +sbwtdio none",
            if self.bound { "db" } else { "u" },
            self.busy_wait.flag(),
            n = self.schedulers
        )
    }

    pub fn check(&self) -> Result<()> {
        crate::check_secs(self.secs, Some(self.warmup_secs))?;
        if self.schedulers == 0 || self.schedulers > 1024 {
            bail!("--schedulers must be between 1 and 1024");
        }
        if self.reductions == 0 || self.generators == 0 {
            bail!("--reductions and --generators must be at least 1");
        }
        if !(0.0..=600.0).contains(&self.drain_secs) {
            bail!("--drain-secs must be between 0 and 600");
        }
        Ok(())
    }
}

/// One ERTS thread's run-queue delay over the run (core scheduler's schedstat: any class).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ThreadReport {
    pub tid: u32,
    pub name: String,
    pub cpus: String,
    pub run_ms: f64,
    pub wait_ms: f64,
    pub timeslices: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErlangReport {
    pub config: ErlangConfig,
    pub otp_release: String,
    /// Bytes of the Erlang installation read into the page cache before the run (see
    /// `warm_page_cache`).
    #[serde(default)]
    pub warmed_bytes: u64,
    /// The schedulers' CPU bindings as the VM reports them (`scheduler_bindings`).
    pub bindings: Vec<serde_json::Value>,
    /// One request's work alone on the machine, µs (the calibration).
    pub service_us: f64,
    /// Offered load (share of the bound CPUs) the rate was derived from.
    pub load: f64,
    pub rate: f64,
    pub issued: u64,
    pub measured: u64,
    pub unfinished: u64,
    pub throughput_rps: f64,
    pub latency: Hist,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// The scheduler threads (`N_scheduler`), bound one per CPU with `+sbt db`.
    pub schedulers: Vec<ThreadReport>,
    /// Seconds between the first and the last reading of their schedstat (the window of
    /// `run_ms` and `wait_ms`: the VM's start-up after the threads appear, the run, the drain).
    #[serde(default)]
    pub schedstat_secs: f64,
    /// Request latency per second of the measured window (`per_second`).
    #[serde(default)]
    pub per_second: Vec<SecondStats>,
    /// The largest of the per-second p99s.
    #[serde(default)]
    pub worst_second_p99_us: f64,
}

#[derive(Deserialize)]
struct RawRun {
    bindings: Vec<serde_json::Value>,
    issued: u64,
    measured: u64,
    unfinished: u64,
    measured_secs: f64,
    latencies_us: Vec<u64>,
    /// Each latency's intended start, µs into the measured window (same order).
    #[serde(default)]
    starts_us: Vec<i64>,
}

/// The requests intended in one second of the measured window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondStats {
    /// Seconds into the measured window at which this second starts.
    pub at_s: u32,
    pub requests: u64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Latency per second of intended start: a run whose tail is one stall (a burst of requests
/// late together) looks different here from one whose every second is slow, and a collapse
/// shows as a ramp. Starts outside `[0, secs)` go to the nearest second.
pub fn per_second(starts_us: &[i64], latencies_us: &[u64], secs: f64) -> Vec<SecondStats> {
    let n = (secs.ceil() as usize).max(1);
    let mut bins: Vec<Vec<u64>> = vec![Vec::new(); n];
    for (&s, &l) in starts_us.iter().zip(latencies_us) {
        let i = (s.max(0) / 1_000_000) as usize;
        bins[i.min(n - 1)].push(l);
    }
    bins.into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            v.sort_unstable();
            let pick = |q: f64| {
                if v.is_empty() {
                    0.0
                } else {
                    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64
                }
            };
            SecondStats {
                at_s: i as u32,
                requests: v.len() as u64,
                p99_us: pick(0.99),
                max_us: pick(1.0),
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct RawCalibration {
    service_us: f64,
}

fn escript_file(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("beam_load.escript");
    std::fs::write(&p, ESCRIPT).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

fn escript(cfg: &ErlangConfig, script: &Path) -> Command {
    let mut c = Command::new("escript");
    c.arg(script)
        .env("ERL_FLAGS", cfg.erl_flags())
        .stdin(Stdio::null());
    c
}

fn check_escript_status(st: std::process::ExitStatus, what: &str) -> Result<()> {
    if !st.success() {
        bail!("escript {what} failed ({st}); is erlang-base installed (scripts/setup-host.sh)?");
    }
    Ok(())
}

/// The OTP release and the root directory of the `erl` on PATH.
pub fn installation() -> Result<(String, PathBuf)> {
    let out = Command::new("erl")
        .args([
            "-noshell",
            "-eval",
            "io:format(\"~s~n~s\", [erlang:system_info(otp_release), code:root_dir()]), halt().",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running erl: install erlang-base (scripts/setup-host.sh)")?;
    if !out.status.success() {
        bail!(
            "erl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some(otp), Some(root)) if !root.trim().is_empty() => {
            Ok((otp.trim().to_string(), PathBuf::from(root.trim())))
        }
        _ => bail!("erl printed no release and root directory: {text:?}"),
    }
}

/// Read every file of the Erlang installation under `root` once, so that the emulator, its
/// shared objects and the modules it loads on demand are in the page cache before anything is
/// measured. The lab's guests read the host's root through virtio-fs: the first touch of a page
/// of the emulator or of a module is a FUSE round trip, and one such burst in mid-run stalled
/// every request for ~100 ms under any scheduler, which was then most of every run's p99.
/// Returns the bytes read.
pub fn warm_page_cache(root: &Path) -> Result<u64> {
    let mut bytes = 0;
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.with_context(|| format!("walking {}", root.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let mut f = std::fs::File::open(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        bytes += std::io::copy(&mut f, &mut std::io::sink())
            .with_context(|| format!("reading {}", entry.path().display()))?;
    }
    Ok(bytes)
}

/// Time one request's work alone (median of 31), µs.
pub fn calibrate(cfg: &ErlangConfig, tmp: &Path) -> Result<f64> {
    warm_page_cache(&installation()?.1)?;
    let script = escript_file(tmp)?;
    let out = tmp.join("calibration.json");
    let st = escript(cfg, &script)
        .args(["calibrate", &cfg.reductions.to_string()])
        .arg(&out)
        .status()
        .context("starting escript")?;
    check_escript_status(st, "calibrate")?;
    let c: RawCalibration = serde_json::from_slice(&std::fs::read(&out)?)
        .context("reading the calibration's output")?;
    Ok(c.service_us.max(1.0))
}

/// The request rate that offers `load` of the schedulers' CPUs.
pub fn rate_for(load: f64, schedulers: usize, service_us: f64) -> f64 {
    load * schedulers as f64 * 1e6 / service_us.max(1e-3)
}

fn threads_of(pid: u32) -> Vec<(u32, String)> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut v: Vec<(u32, String)> = rd
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            Some((tid, name.trim().to_string()))
        })
        .collect();
    v.sort();
    v
}

fn is_scheduler_thread(name: &str) -> bool {
    name.strip_suffix("_scheduler")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn allowed_list(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn schedstat(pid: u32, tid: u32) -> Option<SchedStat> {
    SchedStat::parse(&std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?)
}

/// Run the load at `load` of the schedulers' CPUs (rate from `service_us`).
pub fn run(cfg: &ErlangConfig, load: f64, service_us: f64, tmp: &Path) -> Result<ErlangReport> {
    cfg.check()?;
    if !(load > 0.0 && load <= 4.0) {
        bail!("--load must be in (0, 4] (a share of the schedulers' CPUs)");
    }
    let (otp, root) = installation()?;
    let warmed = warm_page_cache(&root)?;
    let script = escript_file(tmp)?;
    let out = tmp.join("run.json");
    let rate = rate_for(load, cfg.schedulers, service_us);
    let mut child = escript(cfg, &script)
        .args([
            "run",
            &format!("{rate:.3}"),
            &cfg.secs.to_string(),
            &cfg.warmup_secs.to_string(),
            &cfg.drain_secs.to_string(),
            &cfg.reductions.to_string(),
            &cfg.generators.to_string(),
        ])
        .arg(&out)
        .spawn()
        .context("starting escript")?;
    let pid = child.id();
    // escript execs the emulator in place: the scheduler threads appear under this pid.
    let t0 = std::time::Instant::now();
    let mut first: Vec<(u32, String, SchedStat)> = Vec::new();
    while t0.elapsed().as_secs_f64() < 30.0 {
        first = threads_of(pid)
            .into_iter()
            .filter(|(_, n)| is_scheduler_thread(n))
            .filter_map(|(t, n)| schedstat(pid, t).map(|s| (t, n, s)))
            .collect();
        if first.len() >= cfg.schedulers || child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Sample until the end: the last reading before the VM exits is the run's account.
    let t_first = std::time::Instant::now();
    let mut t_last = t_first;
    let mut last: Vec<(SchedStat, String)> = first
        .iter()
        .map(|(t, _, s)| (*s, allowed_list(pid, *t)))
        .collect();
    let st = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        for (i, (t, _, _)) in first.iter().enumerate() {
            if let Some(s) = schedstat(pid, *t) {
                last[i] = (s, allowed_list(pid, *t));
                t_last = std::time::Instant::now();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    check_escript_status(st, "run")?;
    let raw: RawRun =
        serde_json::from_slice(&std::fs::read(&out)?).context("reading beam_load's output")?;
    let mut latency = Hist::default();
    for &l in &raw.latencies_us {
        latency.record(l * 1000);
    }
    let pct = |p: f64| latency.percentile(p) as f64 / 1e3;
    let finished = raw.measured.saturating_sub(raw.unfinished);
    let seconds = per_second(&raw.starts_us, &raw.latencies_us, raw.measured_secs);
    let worst_second_p99_us = seconds.iter().map(|s| s.p99_us).fold(0.0, f64::max);
    let schedulers = first
        .iter()
        .zip(&last)
        .map(|((tid, name, s0), (s1, cpus))| {
            let d = s1.since(s0);
            ThreadReport {
                tid: *tid,
                name: name.clone(),
                cpus: cpus.clone(),
                run_ms: d.run_ns as f64 / 1e6,
                wait_ms: d.wait_ns as f64 / 1e6,
                timeslices: d.timeslices,
            }
        })
        .collect();
    Ok(ErlangReport {
        config: cfg.clone(),
        otp_release: otp,
        warmed_bytes: warmed,
        bindings: raw.bindings,
        service_us,
        load,
        rate,
        issued: raw.issued,
        measured: raw.measured,
        unfinished: raw.unfinished,
        throughput_rps: finished as f64 / raw.measured_secs.max(1e-9),
        p50_us: pct(50.0),
        p99_us: pct(99.0),
        p999_us: pct(99.9),
        max_us: latency.max() as f64 / 1e3,
        latency,
        schedulers,
        schedstat_secs: (t_last - t_first).as_secs_f64(),
        per_second: seconds,
        worst_second_p99_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_bins_by_intended_start_and_clamps_the_edges() {
        // 100 requests of 1 ms in second 0, one stall of 50 ms at 1.5 s, one unfinished
        // request placed at the window's end (3 s of a 3 s window: the last second).
        let mut starts: Vec<i64> = (0..100).map(|i| i * 10_000).collect();
        let mut lats: Vec<u64> = vec![1_000; 100];
        starts.extend([1_500_000, 3_000_000, -5]);
        lats.extend([50_000, 7_000, 2_000]);
        let s = per_second(&starts, &lats, 3.0);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].requests, s[0].max_us), (101, 2_000.0));
        assert_eq!(s[0].p99_us, 1_000.0);
        assert_eq!((s[1].requests, s[1].p99_us), (1, 50_000.0));
        assert_eq!((s[2].requests, s[2].max_us), (1, 7_000.0));
        assert_eq!(per_second(&[], &[], 0.5), vec![SecondStats::default()]);
    }

    #[test]
    fn warming_reads_every_file_once_and_fails_on_a_missing_root() {
        let dir = std::env::temp_dir().join(format!("concord-warm-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib/kernel/ebin")).unwrap();
        std::fs::write(dir.join("erts.bin"), vec![7u8; 5000]).unwrap();
        std::fs::write(dir.join("lib/kernel/ebin/a.beam"), vec![1u8; 123]).unwrap();
        assert_eq!(warm_page_cache(&dir).unwrap(), 5123);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(warm_page_cache(&dir).is_err());
    }

    #[test]
    fn flags_and_rate() {
        let cfg = ErlangConfig {
            schedulers: 2,
            bound: true,
            busy_wait: BusyWait::Short,
            reductions: 1000,
            generators: 2,
            secs: 5.0,
            warmup_secs: 1.0,
            drain_secs: 5.0,
        };
        assert_eq!(
            cfg.erl_flags(),
            "+S 2:2 +sbt db +sbwt short +sbwtdcpu none +sbwtdio none"
        );
        assert!(cfg.check().is_ok());
        // half of 2 CPUs with 500 µs requests: 2000 requests/s
        assert!((rate_for(0.5, 2, 500.0) - 2000.0).abs() < 1e-9);
        assert!(is_scheduler_thread("12_scheduler"));
        assert!(!is_scheduler_thread("1_dirty_cpu_sch"));
        assert!(!is_scheduler_thread("_scheduler"));
        let bad = ErlangConfig {
            warmup_secs: 9.0,
            ..cfg
        };
        assert!(bad.check().is_err());
    }
}
