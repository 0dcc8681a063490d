//! What a finished run left in its directory, read into its figures: the workload's report
//! and the meters' files.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

use super::{guest, CompareRun, Scenario, HEAT_BINS, WASTED_THRESHOLD_NS};
use crate::meters::{bpfcost, stalls, waits, wasted};
use crate::outage::{RunOutput, RUN_OUTPUT};
fn read(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// hackbench's `Time: 1.234`.
pub fn parse_hackbench(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Time:"))
        .and_then(|v| v.trim().parse().ok())
}

/// stress-ng's --yaml metrics: bogo ops per second (real time) of one stressor.
pub fn parse_stress_ng(yaml: &str, stressor: &str) -> Option<f64> {
    let mut in_it = false;
    for l in yaml.lines() {
        let t = l.trim().trim_start_matches("- ");
        if let Some(name) = t.strip_prefix("stressor:") {
            in_it = name.trim() == stressor;
        } else if in_it {
            if let Some(v) = t.strip_prefix("bogo-ops-per-second-real-time:") {
                return v.trim().parse().ok();
            }
        }
    }
    None
}

/// Reads the run directory: the workload's report, the meters' files.
pub(super) fn collect(
    rec: &mut CompareRun,
    scenario: Scenario,
    nr_cpus: usize,
    icount: bool,
    keep_trace: bool,
    trace_stalls: bool,
) -> Result<()> {
    let dir = rec.run_dir.clone();
    let put = |m: &mut BTreeMap<String, f64>, k: &str, v: f64| {
        m.insert(k.to_string(), v);
    };
    let mx = &mut rec.metrics;
    let mut beam_tids: Vec<u32> = Vec::new();
    match scenario {
        Scenario::Erlang
        | Scenario::ErlangBatch
        | Scenario::ErlangAlone
        | Scenario::ErlangCgroups => {
            let r: concord_workloads::erlang::ErlangReport =
                serde_json::from_str(&read(&dir, guest::WORKLOAD_FILE)?)?;
            let n: concord_workloads::noise::NoiseReport =
                serde_json::from_str(&read(&dir, guest::NOISE_FILE)?)?;
            put(mx, "request_p50_ms", r.p50_us / 1e3);
            put(mx, "request_p99_ms", r.p99_us / 1e3);
            put(mx, "request_p999_ms", r.p999_us / 1e3);
            put(mx, "request_max_ms", r.max_us / 1e3);
            if !r.per_second.is_empty() {
                put(
                    mx,
                    "request_worst_second_p99_ms",
                    r.worst_second_p99_us / 1e3,
                );
                rec.per_second_p99_ms = r.per_second.iter().map(|s| s.p99_us / 1e3).collect();
            }
            put(mx, "requests_per_sec", r.throughput_rps);
            put(mx, "unfinished", r.unfinished as f64);
            put(mx, "ring_hops_per_sec", n.hops_per_sec);
            put(mx, "hog_work_per_sec", n.hog_reductions_per_sec);
            put(mx, "service_us", r.service_us);
            let wait_ms: f64 = r.schedulers.iter().map(|t| t.wait_ms).sum();
            let run_ms: f64 = r.schedulers.iter().map(|t| t.run_ms).sum();
            // schedstat's own window when the report has it (older ones: the nominal run).
            let secs = if r.schedstat_secs > 0.0 {
                r.schedstat_secs
            } else {
                r.config.secs + r.config.warmup_secs
            };
            put(mx, "beam_runq_delay_ms_per_sec", wait_ms / secs.max(1e-9));
            let beam_cpus = run_ms / 1e3 / secs.max(1e-9);
            put(mx, "beam_cpus", beam_cpus);
            put(mx, "rings_cpus", n.rings_cpus);
            put(mx, "hogs_cpus", n.hogs_cpus);
            if scenario == Scenario::ErlangCgroups {
                let left = (nr_cpus as f64 - beam_cpus).max(1e-9);
                put(mx, "hogs_of_leftover", n.hogs_cpus / left);
            }
            if r.schedulers.is_empty() {
                bail!("beam-real found no scheduler threads");
            }
            beam_tids = r.schedulers.iter().map(|t| t.tid).collect();
            rec.latency = Some(r.latency);
        }
        Scenario::Wakeup => {
            let r: concord_workloads::wakeup::WakeupReport =
                serde_json::from_str(&read(&dir, guest::WORKLOAD_FILE)?)?;
            put(mx, "wake_p50_us", r.p50_us);
            put(mx, "wake_p99_us", r.p99_us);
            put(mx, "wake_p999_us", r.p999_us);
            put(mx, "requests_per_sec", r.requests_per_sec);
            rec.latency = Some(r.latency);
        }
        Scenario::Interactive => {
            let r: concord_workloads::interactive::InteractiveReport =
                serde_json::from_str(&read(&dir, guest::WORKLOAD_FILE)?)?;
            put(mx, "wake_p99_us", r.wake_p99_us);
            put(mx, "completion_p50_us", r.completion_p50_us);
            put(mx, "completion_p99_us", r.completion_p99_us);
            put(mx, "completion_max_us", r.completion_max_us);
            put(mx, "missed_periods", r.missed_periods as f64);
            put(mx, "hog_work_per_sec", r.hog_reductions_per_sec);
            put(mx, "batch_rounds_per_sec", r.batch_rounds_per_sec);
            rec.latency = Some(r.completion);
        }
        Scenario::Throughput => {
            let hb = read(&dir, guest::HACKBENCH_FILE)?;
            let t = parse_hackbench(&hb).context("hackbench printed no `Time:` line")?;
            put(mx, "hackbench_secs", t);
            let y = read(&dir, guest::STRESS_FILE)?;
            for (stressor, key) in [("cpu", "stress_cpu_ops"), ("switch", "stress_switch_ops")] {
                let v = parse_stress_ng(&y, stressor)
                    .with_context(|| format!("stress-ng reported no {stressor} rate"))?;
                put(mx, key, v);
            }
        }
        Scenario::Outage => {
            let o: RunOutput = serde_json::from_str(&read(&dir, RUN_OUTPUT)?)?;
            put(mx, "request_p50_ms", o.beam.p50_us / 1e3);
            put(mx, "request_p99_ms", o.beam.p99_us / 1e3);
            put(mx, "request_p999_ms", o.beam.p999_us / 1e3);
            put(mx, "requests_per_sec", o.beam.throughput_rps);
            put(mx, "ring_hops_per_sec", o.noise.hops_per_sec);
            put(mx, "hog_work_per_sec", o.noise.hog_reductions_per_sec);
            rec.latency = Some(o.beam.latency);
        }
    }
    let meters: guest::MetersOut = serde_json::from_str(&read(&dir, guest::METERS_FILE)?)?;
    let masks = wasted::parse_masks(&read(&dir, guest::MASKS_FILE)?);
    let trace_path = dir.join(guest::TRACE_FILE);
    let trace = read(&dir, guest::TRACE_FILE)?;
    let mut w = wasted::analyze(&trace, nr_cpus, WASTED_THRESHOLD_NS, &masks, HEAT_BINS)?;
    let waits = waits::waits(&trace);
    // A trace without the stall events has nothing for that replay.
    let st = if trace_stalls {
        stalls::stalls(&trace)
    } else {
        stalls::Stalls::default()
    };
    drop(trace);
    let ms = |ns: u64| ns as f64 / 1e6;
    if let Some(ns) = st.ipi_answer_max_ns {
        mx.insert("ipi_answer_max_ms".into(), ms(ns));
    }
    if let Some(ns) = st.busy_silence_max_ns {
        mx.insert("busy_silence_max_ms".into(), ms(ns));
    }
    let longest = waits.longest_of(None);
    mx.insert("wait_max_ms".into(), ms(longest.map_or(0, |(_, ns)| ns)));
    mx.insert("guest_silence_max_ms".into(), ms(waits.silence_max_ns));
    // How much of the longest wait the machine, not the scheduler, accounts for.
    mx.insert(
        "wait_max_silent_ms".into(),
        ms(longest.map_or(0, |(pid, _)| waits.silent_in_longest(pid))),
    );
    if !beam_tids.is_empty() {
        let beam = waits.longest_of(Some(&beam_tids));
        mx.insert("beam_wait_max_ms".into(), ms(beam.map_or(0, |(_, ns)| ns)));
        mx.insert(
            "beam_wait_max_silent_ms".into(),
            ms(beam.map_or(0, |(pid, _)| waits.silent_in_longest(pid))),
        );
        let woken = waits.wakeups_of(&beam_tids);
        if woken.count() > 0 {
            let us = |p: f64| woken.percentile(p) as f64 / 1e3;
            mx.insert("beam_wake_p50_us".into(), us(50.0));
            mx.insert("beam_wake_p99_us".into(), us(99.0));
        }
    }
    if let Ok(stats) = read(&dir, guest::SCHED_STATS_FILE) {
        let v: serde_json::Value = serde_json::from_str(&stats)?;
        // The longest wait between the two reads around the load (exact, every path): the
        // window the kernel trace covers too.
        if let Some(us) = v.get("wait_max_us").and_then(|x| x.as_f64()) {
            mx.insert("sched_wait_max_ms".into(), us / 1e3);
        }
    }
    if !keep_trace {
        let _ = std::fs::remove_file(&trace_path);
    }
    w.lost_events = meters.lost_events;
    mx.insert("wasted_pct".into(), w.wasted_pct);
    mx.insert("idle_pct".into(), w.idle_pct);
    let (window, idle_pct) = (w.window_ns as f64 / 1e9, w.idle_pct);
    rec.wasted = Some(w);
    if let Some(i) = meters.ipis {
        // Per CPU, so that machines of different sizes under the same load per CPU line up.
        let per_cpu_sec = (nr_cpus as f64 * window).max(1e-9);
        mx.insert(
            "resched_ipis_per_cpu_sec".into(),
            i.resched as f64 / per_cpu_sec,
        );
        mx.insert("call_ipis_per_cpu_sec".into(), i.call as f64 / per_cpu_sec);
    }
    match &meters.bpftool_error {
        Some(e) => bail!("BPF stats: {e}"),
        None => {
            rec.bpf = bpfcost::between(
                &read(&dir, guest::BPF_BEFORE)?,
                &read(&dir, guest::BPF_AFTER)?,
            )?;
            let (calls, ns) = bpfcost::total(&rec.bpf);
            if let Some(ns) = ns {
                mx.insert("bpf_ns_per_call".into(), ns);
                if icount {
                    mx.insert(
                        "bpf_ns_per_call_busy_cpu".into(),
                        icount_own_ns(ns, nr_cpus, idle_pct),
                    );
                }
            }
            // The trace window spans the whole load (warm-up included), as the BPF snapshots do.
            mx.insert("bpf_calls_per_sec".into(), calls as f64 / window.max(1e-9));
        }
    }
    Ok(())
}

/// A callback's own cost under -icount. There one host thread runs every vCPU in turn and
/// guest time follows the instructions of all of them, so a callback's measured duration also
/// counts what the other busy vCPUs executed meanwhile: it grows with the busy vCPUs for the
/// same code (bpfland's and concord's both grew ~5x from 4 to 16 vCPUs). Divided by the busy
/// vCPUs (CPUs x the busy share), it approximates the callback's own instructions' time, the
/// figure that can be compared between machine sizes.
pub(super) fn icount_own_ns(ns_per_call: f64, nr_cpus: usize, idle_pct: f64) -> f64 {
    let busy = nr_cpus as f64 * (1.0 - idle_pct / 100.0).clamp(0.0, 1.0);
    ns_per_call / busy.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icount_cost_is_shared_by_the_busy_vcpus() {
        assert_eq!(icount_own_ns(16_000.0, 16, 0.0), 1000.0);
        assert_eq!(icount_own_ns(16_000.0, 16, 50.0), 2000.0);
        // an idle machine: the callback ran alone
        assert_eq!(icount_own_ns(900.0, 4, 100.0), 900.0);
    }

    #[test]
    fn parses_hackbench_and_stress_ng() {
        assert_eq!(
            parse_hackbench("Running in process mode with 4 groups\nTime: 3.217\n"),
            Some(3.217)
        );
        assert_eq!(parse_hackbench("nothing"), None);
        let yaml = "---\nsystem-info:\n      hostname: x\nmetrics:\n    - stressor: cpu\n      bogo-ops: 100\n      bogo-ops-per-second-usr-sys-time: 50.5\n      bogo-ops-per-second-real-time: 48.25\n    - stressor: switch\n      bogo-ops: 9000\n      bogo-ops-per-second-real-time: 901.5\n...\n";
        assert_eq!(parse_stress_ng(yaml, "cpu"), Some(48.25));
        assert_eq!(parse_stress_ng(yaml, "switch"), Some(901.5));
        assert_eq!(parse_stress_ng(yaml, "vm"), None);
    }
}
