//! Statistics over scx_stats: counters per interval, and wait-time percentiles per queue kind
//! from the BPF histograms. `--stats SECS` prints them while running, `--monitor SECS`
//! attaches to a running instance, and scx_stats serves them as JSON.

use crate::bpf_intf;
use crate::config::MonitorFormat;
use crate::policy::wait_bucket_upper_ns;
use anyhow::Result;
use scx_stats::prelude::*;
use scx_stats_derive::{stat_doc, Stats};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const NR_STATS: usize = bpf_intf::stat_idx_NR_CONCORD_STATS as usize;
pub const NR_KINDS: usize = bpf_intf::queue_kind_NR_QUEUE_KINDS as usize;
pub const NR_BUCKETS: usize = bpf_intf::concord_consts_NR_WAIT_BUCKETS as usize;

/// Raw counters as read from BPF; metrics are differences of two snapshots.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub stats: [u64; NR_STATS],
    pub hist: [[u64; NR_BUCKETS]; NR_KINDS],
    pub max_ns: [u64; NR_KINDS],
    /// Who waited max_ns: pid, the CPU it then ran on, how many CPUs it may use.
    pub max_pid: [u64; NR_KINDS],
    pub max_cpu: [u64; NR_KINDS],
    pub max_nr_cpus: [u64; NR_KINDS],
    /// Sequence number of this snapshot (see `WaitWindows`).
    pub seq: u64,
    /// Exact longest wait of each kind since the requester's previous snapshot.
    pub win_ns: [u64; NR_KINDS],
    /// Each rule's counters, in the file's order.
    pub rules: Vec<RuleSnap>,
    /// When it was taken, and the CPUs a rule's CPU share is of.
    pub at: std::time::Instant,
    pub nr_cpus: u64,
}

/// A rule's counters, every CPU's added up (max for the longest wait).
#[derive(Clone, Debug)]
pub struct RuleSnap {
    pub name: String,
    pub matched: u64,
    pub run_ns: u64,
    pub wait_max_ns: u64,
    pub hist: [u64; NR_BUCKETS],
}

/// Every rule's per-CPU counters (the BPF `rule_counters` map) added up.
pub fn sum_rule_counters(
    map: &impl libbpf_rs::MapCore,
    rules: &[crate::rules::Rule],
) -> Vec<RuleSnap> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut s = RuleSnap {
                name: r.name.clone(),
                matched: 0,
                run_ns: 0,
                wait_max_ns: 0,
                hist: [0; NR_BUCKETS],
            };
            for c in per_cpu::<bpf_intf::rule_counters>(map, i as u32) {
                s.matched += c.matched;
                s.run_ns += c.run_ns;
                s.wait_max_ns = s.wait_max_ns.max(c.wait_max_ns);
                for (a, b) in s.hist.iter_mut().zip(c.wait_hist) {
                    *a += b;
                }
            }
            s
        })
        .collect()
}

/// Zero every rule's counters (at attach, as reset_counters).
pub fn reset_rule_counters(map: &impl libbpf_rs::MapCore) -> Result<()> {
    for i in 0..bpf_intf::concord_consts_MAX_RULES {
        reset_per_cpu::<bpf_intf::rule_counters>(map, i)?;
    }
    Ok(())
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
pub struct RuleMetrics {
    #[stat(desc = "Tasks that came to match the rule in the interval")]
    pub matched: u64,
    #[stat(desc = "Share of all CPUs its tasks used in the interval (%)")]
    pub cpu_pct: f64,
    #[stat(desc = "Waits (runnable to running) of its tasks in the interval")]
    pub waits: u64,
    #[stat(desc = "p99 wait of its tasks in the interval (us, bucket upper bound)")]
    pub wait_p99_us: f64,
    #[stat(desc = "Exact longest wait of its tasks since attaching (us)")]
    pub wait_max_since_start_us: f64,
}

/// Counters kept per CPU by the BPF side: plain u64 fields and arrays, so any bits are a value.
///
/// # Safety
/// Only for types of which every bit pattern (all zeroes included) is valid.
unsafe trait PlainCounters: Copy {}
// SAFETY: both are u64 fields and u64 arrays only (intf.h).
unsafe impl PlainCounters for bpf_intf::cpu_counters {}
// SAFETY: as above.
unsafe impl PlainCounters for bpf_intf::rule_counters {}

/// Every CPU's copy of entry `key` of the per-CPU array `map`. A copy that cannot be read (it
/// should not happen) is left out rather than failing the stats.
fn per_cpu<T: PlainCounters>(map: &impl libbpf_rs::MapCore, key: u32) -> Vec<T> {
    map.lookup_percpu(&key.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .ok()
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .filter(|bytes| bytes.len() >= std::mem::size_of::<T>())
        // SAFETY: the length is checked and T is PlainCounters (any bits valid);
        // read_unaligned because the Vec<u8> gives no alignment.
        .map(|bytes| unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
        .collect()
}

/// Zero every CPU's copy of entry `key` of the per-CPU array `map`.
fn reset_per_cpu<T: PlainCounters>(map: &impl libbpf_rs::MapCore, key: u32) -> Result<()> {
    let nr = libbpf_rs::num_possible_cpus()?;
    map.update_percpu(
        &key.to_ne_bytes(),
        &vec![vec![0u8; std::mem::size_of::<T>()]; nr],
        libbpf_rs::MapFlags::ANY,
    )?;
    Ok(())
}

/// Every CPU's copy of the counters (the BPF `counters` per-CPU array) added up. A CPU whose
/// copy cannot be read (it should not happen) counts as zero rather than failing the stats.
pub fn sum_counters(map: &impl libbpf_rs::MapCore) -> bpf_intf::cpu_counters {
    // SAFETY: cpu_counters is plain u64 arrays, for which all zeroes is a valid value.
    let mut sum: bpf_intf::cpu_counters = unsafe { std::mem::zeroed() };
    for c in per_cpu::<bpf_intf::cpu_counters>(map, 0) {
        for (s, v) in sum.stats.iter_mut().zip(c.stats) {
            *s += v;
        }
        for (sk, ck) in sum.wait_hist.iter_mut().zip(c.wait_hist) {
            for (s, v) in sk.iter_mut().zip(ck) {
                *s += v;
            }
        }
    }
    sum
}

/// Zero every CPU's counters (at attach: what the kernel did while switching tasks over is
/// not ours to count).
pub fn reset_counters(map: &impl libbpf_rs::MapCore) -> Result<()> {
    reset_per_cpu::<bpf_intf::cpu_counters>(map, 0)
}

/// The scheduler swaps BPF's per-kind window maxima (`wait_win_ns`) with 0 at every snapshot
/// and keeps each epoch's values here, so every stats client gets the exact longest wait since
/// its own previous request, however many other clients read in between. Only the last
/// `KEEP` epochs are kept: a client whose previous request is older gets the since-attach
/// maximum instead (an upper bound, never an under-report).
#[derive(Debug, Default)]
pub struct WaitWindows {
    seq: u64,
    epochs: std::collections::VecDeque<(u64, [u64; NR_KINDS])>,
}

impl WaitWindows {
    const KEEP: usize = 4096;

    /// Close the current epoch with the window maxima just taken from BPF; returns its
    /// sequence number.
    pub fn close(&mut self, taken: [u64; NR_KINDS]) -> u64 {
        self.seq += 1;
        if self.epochs.len() == Self::KEEP {
            self.epochs.pop_front();
        }
        self.epochs.push_back((self.seq, taken));
        self.seq
    }

    /// Longest wait of each kind in the epochs after `since`, or None when some of those
    /// epochs are no longer kept.
    pub fn since(&self, since: u64) -> Option<[u64; NR_KINDS]> {
        let oldest = self.epochs.front().map_or(self.seq + 1, |e| e.0);
        if since + 1 < oldest {
            return None;
        }
        let mut m = [0; NR_KINDS];
        for (_, e) in self.epochs.iter().filter(|e| e.0 > since) {
            for (a, b) in m.iter_mut().zip(e) {
                *a = (*a).max(*b);
            }
        }
        Some(m)
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            stats: [0; NR_STATS],
            hist: [[0; NR_BUCKETS]; NR_KINDS],
            max_ns: [0; NR_KINDS],
            max_pid: [0; NR_KINDS],
            max_cpu: [0; NR_KINDS],
            max_nr_cpus: [0; NR_KINDS],
            seq: 0,
            win_ns: [0; NR_KINDS],
            rules: Vec::new(),
            at: std::time::Instant::now(),
            nr_cpus: 1,
        }
    }
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(top)]
pub struct Metrics {
    #[stat(
        desc = "Tasks sent straight to an idle CPU (at wake-up, or at enqueue with nobody queued)"
    )]
    pub direct_idle: u64,
    #[stat(desc = "Dispatches from a CPU's own pinned queue")]
    pub dispatch_pinned: u64,
    #[stat(desc = "Dispatches from the CPU's LLC queue (or the global queue)")]
    pub dispatch_llc: u64,
    #[stat(desc = "Tasks pulled from another LLC's queue on the same node")]
    pub pull_xllc: u64,
    #[stat(desc = "Tasks pulled from an LLC queue on another NUMA node")]
    pub pull_xnode: u64,
    #[stat(
        desc = "Tasks a busy CPU pulled from an LLC queue with more waiting per CPU than its own"
    )]
    pub balance_pull: u64,
    #[stat(desc = "Times the previous task kept its CPU because nothing else could run there")]
    pub keep_running: u64,
    #[stat(
        desc = "Times a task whose turn ended kept its CPU for another: its next deadline came before every waiting task's"
    )]
    pub keep_first: u64,
    #[stat(desc = "Idle CPUs kicked for a queued task")]
    pub kick_idle: u64,
    #[stat(desc = "CPUs preempted for a woken task with an earlier deadline")]
    pub kick_preempt: u64,
    #[stat(desc = "Of the preemptions for woken tasks, those of the waking CPU itself (no IPI)")]
    pub kick_local: u64,
    #[stat(
        desc = "Short woken tasks run at once on the waking CPU they preempted, ahead of its queues"
    )]
    pub run_here: u64,
    #[stat(
        desc = "Sync wake-ups put straight on the waker's CPU, whose next task they were anyway"
    )]
    pub sync_handoff: u64,
    #[stat(desc = "CPUs preempted for the more critical head a dispatch left")]
    pub kick_chain: u64,
    #[stat(desc = "Wake-ups that preempted no CPU because their sync waker's CPU takes them")]
    pub sync_wake: u64,
    #[stat(
        desc = "Sync hand-offs within a chain of work busy longer than --slice-max-us: no latency criticality credited"
    )]
    pub busy_chain: u64,
    #[stat(
        desc = "Pinned wake-ups put before tasks due later in their CPU's local run queue (sync hand-offs)"
    )]
    pub ahead_local: u64,
    #[stat(desc = "Slices ended by the tick for a waiting task")]
    pub tick_preempt: u64,
    #[stat(desc = "Sub-tick slices of lighter-than-nice-0 tasks ended by the slice timer")]
    pub slice_timer: u64,
    #[stat(
        desc = "Dispatches out of deadline order because a task waited the urgent half of the wait bound"
    )]
    pub urgent: u64,
    #[stat(desc = "Yielders (sched_yield) queued behind their equals")]
    pub yield_requeue: u64,
    #[stat(
        desc = "Turns cut to --slice-min-us because the task before them on the CPU yielded (the yielder polls again soon)"
    )]
    pub yield_turn: u64,
    #[stat(
        desc = "Ticks that found an LLC queue head past the whole wait bound and woke the LLC's idle CPUs (at most one per LLC per tick)"
    )]
    pub net_kick: u64,
    #[stat(
        desc = "Idle CPUs kicked again by a busy CPU's tick: a task only they can run (in their local run queue or at their pinned queue's head) waited a tick (at most one scan per LLC per tick)"
    )]
    pub rekick: u64,
    #[stat(desc = "Enqueues of pinned tasks")]
    pub enq_pinned: u64,
    #[stat(desc = "Enqueues of migratable tasks")]
    pub enq_shared: u64,
    #[stat(
        desc = "Waits (runnable to running, as the kernel counts them) of tasks we put straight into a local run queue (idle CPU, run-here, sync hand-off)"
    )]
    pub direct_waits: u64,
    #[stat(desc = "p99 wait of direct dispatches in the interval (us, bucket upper bound)")]
    pub direct_wait_p99_us: f64,
    #[stat(desc = "Exact longest wait of direct dispatches in the interval (us)")]
    pub direct_wait_max_us: f64,
    #[stat(desc = "Waits (runnable to running) of tasks that ran from a pinned queue")]
    pub pinned_waits: u64,
    #[stat(desc = "p99 wait in pinned queues in the interval (us, bucket upper bound)")]
    pub pinned_wait_p99_us: f64,
    #[stat(desc = "Exact longest wait via pinned queues in the interval (us)")]
    pub pinned_wait_max_us: f64,
    #[stat(desc = "Waits (runnable to running) of tasks that ran from an LLC/global queue")]
    pub shared_waits: u64,
    #[stat(desc = "p99 wait in LLC/global queues in the interval (us, bucket upper bound)")]
    pub shared_wait_p99_us: f64,
    #[stat(desc = "Exact longest wait via LLC/global queues in the interval (us)")]
    pub shared_wait_max_us: f64,
    #[stat(
        desc = "Exact longest wait of any task on any path in the interval (us): what the kernel's trace sees"
    )]
    pub wait_max_us: f64,
    #[stat(
        desc = "Exact longest wait (runnable to running) via pinned queues since the scheduler finished attaching (us)"
    )]
    pub pinned_wait_max_since_start_us: f64,
    #[stat(
        desc = "Exact longest wait (runnable to running) via LLC/global queues since the scheduler finished attaching (us)"
    )]
    pub shared_wait_max_since_start_us: f64,
    #[stat(
        desc = "Exact longest wait (runnable to running) of tasks put straight into a local run queue, since attaching (us)"
    )]
    pub direct_wait_max_since_start_us: f64,
    #[stat(
        desc = "Exact longest wait of any task on any path since attaching (us): the bound's figure"
    )]
    pub wait_max_since_start_us: f64,
    #[stat(desc = "Pid of the task that waited pinned_wait_max_since_start_us")]
    pub pinned_wait_max_pid: u64,
    #[stat(desc = "CPU that task then ran on")]
    pub pinned_wait_max_cpu: u64,
    #[stat(desc = "Pid of the task that waited shared_wait_max_since_start_us")]
    pub shared_wait_max_pid: u64,
    #[stat(desc = "CPU that task then ran on")]
    pub shared_wait_max_cpu: u64,
    #[stat(desc = "How many CPUs that task was allowed to run on")]
    pub shared_wait_max_nr_cpus: u64,
    #[stat(desc = "Per rule of the --config file, by its name")]
    pub rules: std::collections::BTreeMap<String, RuleMetrics>,
}

/// (count, p99 upper bound in us, max upper bound in us) of a histogram.
pub fn hist_summary(h: &[u64]) -> (u64, f64, f64) {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return (0, 0.0, 0.0);
    }
    let target = total - total / 100; // the sample at the 99th percentile
    let mut seen = 0;
    let mut p99 = 0;
    for (b, &n) in h.iter().enumerate() {
        seen += n;
        if seen >= target.max(1) {
            p99 = b;
            break;
        }
    }
    let max = h.iter().rposition(|&n| n > 0).unwrap_or(0);
    let us = |b: usize| (wait_bucket_upper_ns(b as u64) + 1) as f64 / 1000.0;
    (total, us(p99), us(max))
}

impl Metrics {
    pub fn between(prev: &Snapshot, cur: &Snapshot) -> Self {
        let d = |i: u32| cur.stats[i as usize].wrapping_sub(prev.stats[i as usize]);
        let kind = |k: u32| {
            let h: Vec<u64> = (0..NR_BUCKETS)
                .map(|b| cur.hist[k as usize][b].wrapping_sub(prev.hist[k as usize][b]))
                .collect();
            hist_summary(&h)
        };
        let (dn, dp, _) = kind(bpf_intf::queue_kind_QK_DIRECT);
        let (pn, pp, _) = kind(bpf_intf::queue_kind_QK_PINNED);
        let (sn, sp, _) = kind(bpf_intf::queue_kind_QK_SHARED);
        let win = |k: u32| cur.win_ns[k as usize] as f64 / 1000.0;
        Self {
            direct_idle: d(bpf_intf::stat_idx_STAT_DIRECT_IDLE),
            dispatch_pinned: d(bpf_intf::stat_idx_STAT_DISPATCH_PINNED),
            dispatch_llc: d(bpf_intf::stat_idx_STAT_DISPATCH_LLC),
            pull_xllc: d(bpf_intf::stat_idx_STAT_PULL_XLLC),
            pull_xnode: d(bpf_intf::stat_idx_STAT_PULL_XNODE),
            balance_pull: d(bpf_intf::stat_idx_STAT_BALANCE_PULL),
            keep_running: d(bpf_intf::stat_idx_STAT_KEEP_RUNNING),
            keep_first: d(bpf_intf::stat_idx_STAT_KEEP_FIRST),
            kick_idle: d(bpf_intf::stat_idx_STAT_KICK_IDLE),
            kick_preempt: d(bpf_intf::stat_idx_STAT_KICK_PREEMPT),
            kick_local: d(bpf_intf::stat_idx_STAT_KICK_LOCAL),
            run_here: d(bpf_intf::stat_idx_STAT_RUN_HERE),
            sync_handoff: d(bpf_intf::stat_idx_STAT_SYNC_HANDOFF),
            kick_chain: d(bpf_intf::stat_idx_STAT_KICK_CHAIN),
            sync_wake: d(bpf_intf::stat_idx_STAT_SYNC_WAKE),
            busy_chain: d(bpf_intf::stat_idx_STAT_BUSY_CHAIN),
            ahead_local: d(bpf_intf::stat_idx_STAT_AHEAD_LOCAL),
            tick_preempt: d(bpf_intf::stat_idx_STAT_TICK_PREEMPT),
            slice_timer: d(bpf_intf::stat_idx_STAT_SLICE_TIMER),
            urgent: d(bpf_intf::stat_idx_STAT_URGENT),
            yield_requeue: d(bpf_intf::stat_idx_STAT_YIELD),
            yield_turn: d(bpf_intf::stat_idx_STAT_YIELD_TURN),
            net_kick: d(bpf_intf::stat_idx_STAT_NET_KICK),
            rekick: d(bpf_intf::stat_idx_STAT_REKICK),
            enq_pinned: d(bpf_intf::stat_idx_STAT_ENQ_PINNED),
            enq_shared: d(bpf_intf::stat_idx_STAT_ENQ_SHARED),
            direct_waits: dn,
            direct_wait_p99_us: dp,
            direct_wait_max_us: win(bpf_intf::queue_kind_QK_DIRECT),
            pinned_waits: pn,
            pinned_wait_p99_us: pp,
            pinned_wait_max_us: win(bpf_intf::queue_kind_QK_PINNED),
            shared_waits: sn,
            shared_wait_p99_us: sp,
            shared_wait_max_us: win(bpf_intf::queue_kind_QK_SHARED),
            wait_max_us: cur.win_ns.iter().copied().max().unwrap_or(0) as f64 / 1000.0,
            pinned_wait_max_since_start_us: cur.max_ns[bpf_intf::queue_kind_QK_PINNED as usize]
                as f64
                / 1000.0,
            shared_wait_max_since_start_us: cur.max_ns[bpf_intf::queue_kind_QK_SHARED as usize]
                as f64
                / 1000.0,
            direct_wait_max_since_start_us: cur.max_ns[bpf_intf::queue_kind_QK_DIRECT as usize]
                as f64
                / 1000.0,
            wait_max_since_start_us: cur.max_ns.iter().copied().max().unwrap_or(0) as f64 / 1000.0,
            pinned_wait_max_pid: cur.max_pid[bpf_intf::queue_kind_QK_PINNED as usize],
            pinned_wait_max_cpu: cur.max_cpu[bpf_intf::queue_kind_QK_PINNED as usize],
            shared_wait_max_pid: cur.max_pid[bpf_intf::queue_kind_QK_SHARED as usize],
            shared_wait_max_cpu: cur.max_cpu[bpf_intf::queue_kind_QK_SHARED as usize],
            shared_wait_max_nr_cpus: cur.max_nr_cpus[bpf_intf::queue_kind_QK_SHARED as usize],
            rules: Self::rules_between(prev, cur),
        }
    }

    fn rules_between(
        prev: &Snapshot,
        cur: &Snapshot,
    ) -> std::collections::BTreeMap<String, RuleMetrics> {
        let span_ns = cur.at.saturating_duration_since(prev.at).as_nanos() as f64;
        cur.rules
            .iter()
            .map(|r| {
                let p = prev.rules.iter().find(|p| p.name == r.name);
                let h: Vec<u64> = (0..NR_BUCKETS)
                    .map(|b| r.hist[b].wrapping_sub(p.map_or(0, |p| p.hist[b])))
                    .collect();
                let (waits, p99, _) = hist_summary(&h);
                let ran = r.run_ns.wrapping_sub(p.map_or(0, |p| p.run_ns)) as f64;
                let m = RuleMetrics {
                    matched: r.matched.wrapping_sub(p.map_or(0, |p| p.matched)),
                    cpu_pct: if span_ns > 0.0 {
                        100.0 * ran / (span_ns * cur.nr_cpus.max(1) as f64)
                    } else {
                        0.0
                    },
                    waits,
                    wait_p99_us: p99,
                    wait_max_since_start_us: r.wait_max_ns as f64 / 1000.0,
                };
                (r.name.clone(), m)
            })
            .collect()
    }

    pub fn format<W: Write>(&self, w: &mut W) -> Result<()> {
        writeln!(
            w,
            "[concord] dispatch direct/pinned/llc/xllc/xnode/pull={}/{}/{}/{}/{}/{} keep={}/{} kick idle/preempt/local/chain={}/{}/{}/{} run_here={} sync_handoff={} sync_wake={} busy_chain={} ahead_local={} tick_preempt={} slice_timer={} yield={} yield_turn={} urgent={} net_kick={} rekick={}",
            self.direct_idle,
            self.dispatch_pinned,
            self.dispatch_llc,
            self.pull_xllc,
            self.pull_xnode,
            self.balance_pull,
            self.keep_running,
            self.keep_first,
            self.kick_idle,
            self.kick_preempt,
            self.kick_local,
            self.kick_chain,
            self.run_here,
            self.sync_handoff,
            self.sync_wake,
            self.busy_chain,
            self.ahead_local,
            self.tick_preempt,
            self.slice_timer,
            self.yield_requeue,
            self.yield_turn,
            self.urgent,
            self.net_kick,
            self.rekick
        )?;
        writeln!(
            w,
            "[concord] wait p99/max us: direct {:.0}/{:.0} (n={}) pinned {:.0}/{:.0} (n={}) llc {:.0}/{:.0} (n={}) | exact max since start: pinned {:.0} us, llc {:.0} us, direct {:.0} us",
            self.direct_wait_p99_us,
            self.direct_wait_max_us,
            self.direct_waits,
            self.pinned_wait_p99_us,
            self.pinned_wait_max_us,
            self.pinned_waits,
            self.shared_wait_p99_us,
            self.shared_wait_max_us,
            self.shared_waits,
            self.pinned_wait_max_since_start_us,
            self.shared_wait_max_since_start_us,
            self.direct_wait_max_since_start_us
        )?;
        for (name, r) in &self.rules {
            writeln!(
                w,
                "[concord] rule {name}: matched {} cpu {:.1}% waits {} p99 {:.0} us max since start {:.0} us",
                r.matched, r.cpu_pct, r.waits, r.wait_p99_us, r.wait_max_since_start_us
            )?;
        }
        Ok(())
    }
}

/// The request a stats client's reader sends the run loop: the sequence number of its previous
/// snapshot (0: none), for the window maxima since then.
pub fn server_data() -> StatsServerData<u64, Snapshot> {
    let open: Box<dyn StatsOpener<u64, Snapshot>> = Box::new(move |(req_ch, res_ch)| {
        req_ch.send(0)?;
        let mut prev: Snapshot = res_ch.recv()?;
        let read: Box<dyn StatsReader<u64, Snapshot>> = Box::new(move |_args, (req_ch, res_ch)| {
            req_ch.send(prev.seq)?;
            let cur: Snapshot = res_ch.recv()?;
            let m = Metrics::between(&prev, &cur);
            prev = cur;
            m.to_json()
        });
        Ok(read)
    });
    StatsServerData::new()
        .add_meta(RuleMetrics::meta())
        .add_meta(Metrics::meta())
        .add_ops("top", StatsOps { open, close: None })
}

pub fn monitor(intv: Duration, shutdown: Arc<AtomicBool>, format: MonitorFormat) -> Result<()> {
    scx_utils::monitor_stats::<Metrics>(
        &[],
        intv,
        || shutdown.load(Ordering::Relaxed),
        |m| {
            let mut out = std::io::stdout().lock();
            match format {
                MonitorFormat::Text => m.format(&mut out)?,
                MonitorFormat::Json => writeln!(out, "{}", serde_json::to_string(&m)?)?,
                MonitorFormat::Openmetrics => write!(out, "{}", openmetrics(&m)?)?,
            }
            out.flush()?;
            Ok(())
        },
    )
}

/// @m as an OpenMetrics text exposition: every figure a gauge named `scx_concord_<field>` with
/// its description as HELP (each is a figure of one interval, not a running total), then
/// `# EOF`.
pub fn openmetrics(m: &Metrics) -> Result<String> {
    let meta = Metrics::meta();
    let serde_json::Value::Object(values) = serde_json::to_value(m)? else {
        anyhow::bail!("statistics are not a JSON object");
    };
    let mut s = String::new();
    for (field, f) in &meta.fields {
        let Some(v) = values.get(field).and_then(serde_json::Value::as_f64) else {
            continue;
        };
        let name = format!("scx_concord_{field}");
        let help = f
            .attrs
            .desc
            .as_deref()
            .unwrap_or("")
            .replace('\\', "\\\\")
            .replace('\n', " ");
        s += &format!("# TYPE {name} gauge\n# HELP {name} {help}\n{name} {v}\n");
    }
    // Per rule: one family per figure, the rule's name as a label.
    for (field, f) in &RuleMetrics::meta().fields {
        if m.rules.is_empty() {
            break;
        }
        let name = format!("scx_concord_rule_{field}");
        let help = f.attrs.desc.as_deref().unwrap_or("").replace('\n', " ");
        s += &format!("# TYPE {name} gauge\n# HELP {name} {help}\n");
        for (rule, r) in &m.rules {
            let v = serde_json::to_value(r)?
                .get(field)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            s += &format!("{name}{{rule=\"{rule}\"}} {v}\n");
        }
    }
    s += "# EOF\n";
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_has_every_figure_with_its_help() {
        let m = Metrics {
            run_here: 7,
            wait_max_us: 12.5,
            ..Default::default()
        };
        let text = openmetrics(&m).unwrap();
        // every field but the per-rule map, which has no rules here
        let fields = Metrics::meta().fields;
        assert_eq!(text.matches("# TYPE ").count(), fields.len() - 1, "{text}");
        assert!(!text.contains("scx_concord_rule_"), "{text}");
        // With a rule, each of its figures is a family labelled by the rule's name.
        let mut m = m;
        m.rules.insert(
            "erlang".into(),
            RuleMetrics {
                wait_p99_us: 250.0,
                ..Default::default()
            },
        );
        let text = openmetrics(&m).unwrap();
        assert_eq!(
            text.matches("# TYPE ").count(),
            fields.len() - 1 + RuleMetrics::meta().fields.len(),
            "{text}"
        );
        assert!(
            text.contains("\nscx_concord_rule_wait_p99_us{rule=\"erlang\"} 250\n"),
            "{text}"
        );
        assert!(text.contains("\nscx_concord_run_here 7\n"), "{text}");
        assert!(text.contains("\nscx_concord_wait_max_us 12.5\n"), "{text}");
        assert!(
            text.contains("# HELP scx_concord_rekick Idle CPUs kicked again"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        // metric names are [a-zA-Z_:][a-zA-Z0-9_:]*
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split([' ', '{']).next().unwrap();
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{l}"
            );
        }
    }

    #[test]
    fn percentiles_from_histograms() {
        let mut h = vec![0u64; NR_BUCKETS];
        assert_eq!(hist_summary(&h), (0, 0.0, 0.0));
        h[3] = 990; // 3 us
        h[20] = 10;
        let (n, p99, max) = hist_summary(&h);
        assert_eq!(n, 1000);
        assert_eq!(p99, 4.0, "99% of samples are in bucket 3 (< 4 us)");
        assert_eq!(max, 80.0, "bucket 20 holds 64..80 us");
        h[3] = 980;
        h[20] = 20;
        assert_eq!(hist_summary(&h).1, 80.0, "2% slow samples move p99");
    }

    #[test]
    fn each_client_gets_the_longest_wait_of_its_own_interval() {
        let mut w = WaitWindows::default();
        let one = |v: u64| {
            let mut a = [0; NR_KINDS];
            a[0] = v;
            a
        };
        let a = w.close(one(50)); // client A's first read
        let b = w.close(one(7)); // client B reads
        let a2 = w.close(one(3)); // A again: 7 and 3 happened since its read
        assert_eq!(w.since(a).unwrap()[0], 7);
        assert_eq!(w.since(b).unwrap()[0], 3);
        assert_eq!(w.since(a2).unwrap()[0], 0, "nothing after the latest epoch");
        assert_eq!(w.since(0).unwrap()[0], 50);
        for _ in 0..WaitWindows::KEEP {
            w.close(one(1));
        }
        assert!(
            w.since(a).is_none(),
            "epochs no longer kept are not guessed"
        );
        assert_eq!(w.since(w.seq - 1).unwrap()[0], 1);
    }
}
