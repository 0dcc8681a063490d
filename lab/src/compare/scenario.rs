//! The scenario catalogue: what each scenario runs, where, for how long, and which figures it
//! reports.

use serde::{Deserialize, Serialize};

use crate::outage::OutageMix;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// A real Erlang/OTP VM (schedulers bound with +sbt db, idle ones busy-waiting with
    /// sched_yield as +sbwt says) serving open-loop requests beside a chatty unpinned service
    /// (a free-running token ring, no hog): seed 000's outage with the real runtime, at the
    /// offered loads of --loads.
    Erlang,
    /// The same BEAM beside batch work: two paced token rings and a CPU hog, whose fair share
    /// among the spinning BEAM schedulers is what EEVDF gets wrong.
    #[serde(rename = "erlang-batch")]
    #[value(name = "erlang-batch")]
    ErlangBatch,
    /// The same BEAM alone: nothing else runs. What erlang-cgroups' requests are held to.
    #[serde(rename = "erlang-alone")]
    #[value(name = "erlang-alone")]
    ErlangAlone,
    /// The same BEAM in a cgroup of its own beside a batch job in another (two nice-0 CPU hogs
    /// per CPU, cpu.weight 100 each) that would take the whole machine: an operator's mixed
    /// host. Run with a scheduler's rules (e.g. scx_concord --config dist/examples/erlang.toml)
    /// and beside erlang-alone: the requests' p99 against erlang-alone's, and the batch job's
    /// share of the CPU the BEAM leaves.
    #[serde(rename = "erlang-cgroups")]
    #[value(name = "erlang-cgroups")]
    ErlangCgroups,
    /// Message threads waking workers for short bursts (schbench's shape).
    Wakeup,
    /// A periodic latency-critical task next to CPU hogs and a parallel batch job.
    Interactive,
    /// hackbench (time for fixed work) and stress-ng cpu + switch (operations per second).
    Throughput,
    /// Seed 000's outage: BEAM-like pinned schedulers among token rings and hogs.
    Outage,
}

/// Whether a smaller or a larger figure is the better one (or neither: context only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
    Neither,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricDef {
    pub key: String,
    pub label: String,
    pub better: Better,
}

/// The label of the silent part of a longest wait (meters::waits).
fn silent_label() -> String {
    format!(
        "of which the whole guest logged nothing (ms, kernel trace: gaps of {} ms+)",
        crate::meters::waits::SILENT_GAP_NS / 1_000_000
    )
}

fn m(key: &str, label: &str, better: Better) -> MetricDef {
    MetricDef {
        key: key.into(),
        label: label.into(),
        better,
    }
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Erlang,
        Scenario::ErlangBatch,
        Scenario::ErlangAlone,
        Scenario::ErlangCgroups,
        Scenario::Wakeup,
        Scenario::Interactive,
        Scenario::Throughput,
        Scenario::Outage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Erlang => "erlang",
            Scenario::ErlangBatch => "erlang-batch",
            Scenario::ErlangAlone => "erlang-alone",
            Scenario::ErlangCgroups => "erlang-cgroups",
            Scenario::Wakeup => "wakeup",
            Scenario::Interactive => "interactive",
            Scenario::Throughput => "throughput",
            Scenario::Outage => "outage",
        }
    }

    /// Each scenario has its topology: together they cover 1 LLC x 4, 2 LLCs x 2 and two NUMA
    /// nodes; outage keeps the 2 vCPUs its figures were tuned on (one per host core).
    pub fn default_topology(self) -> &'static str {
        match self {
            Scenario::Wakeup => "1l4c",
            Scenario::Interactive => "2l2c",
            Scenario::Throughput => "2n1l2c",
            Scenario::Outage
            | Scenario::Erlang
            | Scenario::ErlangBatch
            | Scenario::ErlangAlone
            | Scenario::ErlangCgroups => "1l2c",
        }
    }

    /// QEMU's -icount shift for the scenario's runs. With 4 vCPUs on this 2-core host, default
    /// multi-threaded TCG lets the host deschedule vCPUs mid-critical-section (lock-holder
    /// preemption), which inflated every sched_ext scheduler's shared-queue costs and the
    /// run-to-run spread; -icount (one host thread, guest time from instruction counts) gave
    /// stable ratios. Interactive too, with its work sizes scaled (guest::interactive_work):
    /// under default TCG host noise, not the scheduler, set its completion tail. Outage runs 2
    /// vCPUs, one per host core, as tuned: default TCG.
    pub fn default_icount(self) -> Option<u32> {
        match self {
            Scenario::Outage
            | Scenario::Erlang
            | Scenario::ErlangBatch
            | Scenario::ErlangAlone
            | Scenario::ErlangCgroups => None,
            Scenario::Wakeup | Scenario::Throughput | Scenario::Interactive => Some(2),
        }
    }

    pub fn default_secs(self) -> f64 {
        match self {
            Scenario::Outage => 20.0,
            Scenario::Erlang
            | Scenario::ErlangBatch
            | Scenario::ErlangAlone
            | Scenario::ErlangCgroups => 15.0,
            _ => 10.0,
        }
    }

    /// The scenario's own figures, then the meters every scenario has.
    pub fn metrics(self) -> Vec<MetricDef> {
        use Better::*;
        let mut v = match self {
            Scenario::Erlang
            | Scenario::ErlangBatch
            | Scenario::ErlangAlone
            | Scenario::ErlangCgroups => vec![
                m("request_p50_ms", "request p50 (ms)", Lower),
                m("request_p99_ms", "request p99 (ms)", Lower),
                m("request_p999_ms", "request p99.9 (ms)", Lower),
                m("request_max_ms", "request max (ms)", Lower),
                m(
                    "request_worst_second_p99_ms",
                    "worst second's request p99 (ms)",
                    Lower,
                ),
                m("requests_per_sec", "requests/s done", Higher),
                m("unfinished", "requests unfinished", Lower),
                m("ring_hops_per_sec", "ring hops/s", Higher),
                m("hog_work_per_sec", "hogs' work (reductions/s)", Higher),
                m(
                    "beam_runq_delay_ms_per_sec",
                    "BEAM schedulers' run-queue delay (ms/s, schedstat)",
                    Lower,
                ),
                m(
                    "beam_wait_max_ms",
                    "BEAM schedulers' longest wait (ms, kernel trace)",
                    Lower,
                ),
                m("beam_wait_max_silent_ms", &silent_label(), Neither),
                m(
                    "beam_wake_p50_us",
                    "BEAM schedulers' wake-up wait p50 (µs, kernel trace)",
                    Lower,
                ),
                m(
                    "beam_wake_p99_us",
                    "BEAM schedulers' wake-up wait p99 (µs, kernel trace)",
                    Lower,
                ),
                m(
                    "service_us",
                    "one request alone (µs, the compare's calibration)",
                    Neither,
                ),
                m("beam_cpus", "BEAM schedulers' CPU (CPUs)", Neither),
                m("rings_cpus", "rings' CPU (CPUs)", Neither),
                m("hogs_cpus", "hogs' CPU (CPUs)", Neither),
                m(
                    "hogs_of_leftover",
                    "hogs' CPU over what the BEAM schedulers left (CPUs - BEAM's)",
                    Higher,
                ),
            ],
            Scenario::Wakeup => vec![
                m("wake_p50_us", "wake-up p50 (µs)", Lower),
                m("wake_p99_us", "wake-up p99 (µs)", Lower),
                m("wake_p999_us", "wake-up p99.9 (µs)", Lower),
                m("requests_per_sec", "requests/s", Higher),
            ],
            Scenario::Interactive => vec![
                m("wake_p99_us", "wake-up p99 (µs)", Lower),
                m("completion_p50_us", "completion p50 (µs)", Lower),
                m("completion_p99_us", "completion p99 (µs)", Lower),
                m("completion_max_us", "completion max (µs)", Lower),
                m("missed_periods", "missed periods", Lower),
                m("hog_work_per_sec", "hogs' work (reductions/s)", Higher),
                m("batch_rounds_per_sec", "batch rounds/s", Higher),
            ],
            Scenario::Throughput => vec![
                m("hackbench_secs", "hackbench time (s)", Lower),
                m("stress_cpu_ops", "stress-ng cpu ops/s", Higher),
                m("stress_switch_ops", "stress-ng switch ops/s", Higher),
            ],
            Scenario::Outage => vec![
                m("request_p50_ms", "request p50 (ms)", Lower),
                m("request_p99_ms", "request p99 (ms)", Lower),
                m("request_p999_ms", "request p99.9 (ms)", Lower),
                m("requests_per_sec", "requests/s", Higher),
                m("ring_hops_per_sec", "ring hops/s", Higher),
                m("hog_work_per_sec", "hogs' work (reductions/s)", Higher),
            ],
        };
        v.extend([
            m(
                "wait_max_ms",
                "longest wait of any task (ms, kernel trace)",
                Lower,
            ),
            m("wait_max_silent_ms", &silent_label(), Neither),
            m(
                "guest_silence_max_ms",
                "longest no CPU logged a scheduler event while a task waited (ms, kernel trace)",
                Neither,
            ),
            m(
                "sched_wait_max_ms",
                "longest wait by the scheduler's own count (ms, concord)",
                Neither,
            ),
            m(
                "host_vcpu_wait_max_ms",
                "longest wait of a vCPU for a host CPU (ms, host schedstat)",
                Neither,
            ),
            m(
                "ipi_answer_max_ms",
                "longest a CPU left an IPI unanswered (ms, kernel trace: executed nothing)",
                Neither,
            ),
            m(
                "busy_silence_max_ms",
                "longest a busy CPU logged nothing, not even its tick (ms, kernel trace)",
                Neither,
            ),
            m("wasted_pct", "wasted cores (% CPU time)", Lower),
            m("idle_pct", "idle (% CPU time)", Neither),
            m("bpf_ns_per_call", "BPF ns per callback", Lower),
            m(
                "bpf_ns_per_call_busy_cpu",
                "BPF ns per callback / busy vCPUs (-icount: the callback's own)",
                Lower,
            ),
            m("bpf_calls_per_sec", "BPF callbacks/s", Neither),
            m(
                "resched_ipis_per_cpu_sec",
                "rescheduling IPIs per CPU per s (kicks)",
                Neither,
            ),
            m(
                "call_ipis_per_cpu_sec",
                "function-call IPIs per CPU per s (remote wake-ups)",
                Neither,
            ),
        ]);
        v
    }

    /// Whether the scenario runs the real BEAM at the offered loads of --loads.
    pub fn is_erlang(self) -> bool {
        matches!(
            self,
            Scenario::Erlang
                | Scenario::ErlangBatch
                | Scenario::ErlangAlone
                | Scenario::ErlangCgroups
        )
    }

    /// The outage mix as the scenario runs it beside the BEAM (or beam-sim) unless --rings,
    /// --hogs or --ring-laps say otherwise: the outage mix's defaults with the scenario's
    /// rings, hogs and pacing; None for the scenarios without one.
    pub fn competing_mix(self) -> Option<OutageMix> {
        let d = crate::outage::default_mix();
        match self {
            // One free-running ring, no hog: EEVDF serves the BEAM well here, so a win is not
            // a baseline's weakness, and a chain of pipe (sync) wake-ups keeps looking more
            // latency-critical than the pinned schedulers it overtakes: the outage's mechanism.
            Scenario::Erlang => Some(OutageMix {
                rings: 1,
                hogs: 0,
                ring_laps: 0.0,
                ..d
            }),
            Scenario::ErlangBatch => Some(OutageMix {
                ring_laps: ERLANG_BATCH_RING_LAPS,
                ..d
            }),
            Scenario::ErlangAlone => Some(OutageMix {
                rings: 0,
                hogs: 0,
                ..d
            }),
            // Two hogs per CPU of its 2 vCPUs: with the BEAM spinning too, enough to take
            // every cycle the BEAM does not hold.
            Scenario::ErlangCgroups => Some(OutageMix {
                rings: 0,
                hogs: 4,
                ..d
            }),
            Scenario::Outage => Some(d),
            Scenario::Wakeup | Scenario::Interactive | Scenario::Throughput => None,
        }
    }

    /// The latency distribution plotted as a CDF, if the scenario has one.
    pub fn latency_label(self) -> Option<&'static str> {
        match self {
            Scenario::Wakeup => Some("worker wake-up latency"),
            Scenario::Interactive => Some("interactive task completion latency"),
            Scenario::Throughput => None,
            Scenario::Outage
            | Scenario::Erlang
            | Scenario::ErlangBatch
            | Scenario::ErlangAlone
            | Scenario::ErlangCgroups => Some("request latency"),
        }
    }
}

/// Laps per second of each ring beside the BEAM and a hog (erlang-batch). Free-running, a
/// 2-token ring is a CPU-bound pipeline (every hop a pipe round trip, dear under TCG); two of
/// them and a hog left the BEAM a fair share under EEVDF below what light request loads need,
/// so every scheduler was overloaded and a comparison showed only queue growth. Paced, the
/// rings are chatty services with a bounded demand, and the hog takes the rest of the machine.
pub const ERLANG_BATCH_RING_LAPS: f64 = 150.0;

#[cfg(test)]
mod tests {
    use super::*;
    use concord_common::topology::TopologySpec;

    #[test]
    fn erlang_scenarios_name_their_mixes() {
        use clap::ValueEnum;
        let batch = Scenario::from_str("erlang-batch", false).unwrap();
        assert_eq!(batch, Scenario::ErlangBatch);
        assert_eq!(batch.name(), "erlang-batch");
        assert_eq!(serde_json::to_string(&batch).unwrap(), "\"erlang-batch\"");
        let free = Scenario::Erlang.competing_mix().unwrap();
        assert_eq!((free.rings, free.hogs, free.ring_laps), (1, 0, 0.0));
        let b = batch.competing_mix().unwrap();
        assert!(b.hogs > 0 && b.rings > 0 && b.ring_laps > 0.0);
        assert!(Scenario::ALL
            .iter()
            .all(|s| s.is_erlang() == s.name().starts_with("erlang")));
        assert!(Scenario::Wakeup.competing_mix().is_none());
    }

    #[test]
    fn every_scenario_has_its_figures_and_the_meters() {
        for s in Scenario::ALL {
            let keys: Vec<String> = s.metrics().into_iter().map(|m| m.key).collect();
            let mut dedup = keys.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), keys.len(), "{} has a metric twice", s.name());
            assert!(keys.contains(&"wasted_pct".to_string()));
            assert!(TopologySpec::parse(s.default_topology()).is_ok());
        }
        let topos: Vec<String> = Scenario::ALL
            .iter()
            .map(|s| {
                TopologySpec::parse(s.default_topology())
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(
            topos.iter().any(|t| t.starts_with("2n")),
            "a NUMA layout: {topos:?}"
        );
    }
}
