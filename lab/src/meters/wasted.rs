//! The wasted-core meter ("The Linux Scheduler: a Decade of Wasted Cores", Lozi et al. 2016):
//! the share of CPU time during which a CPU sat idle while a task that was allowed to run on it
//! had been waiting runnable for more than a threshold (1 ms by default).
//!
//! Input is the kernel's own scheduler tracepoints, recorded with ftrace in the guest under any
//! scheduler (EEVDF included): `sched_switch` (who leaves a CPU, in which state, and who gets
//! it; `next_pid=0` is the idle task), `sched_waking` (a wake-up begins, on the waker's CPU),
//! `sched_wakeup`/`sched_wakeup_new` (the task is runnable) and the lab's `trace_marker` lines
//! that open and close the measured window. A wait starts at the earliest of a task's wake-up
//! events. `sched_wakeup` alone is biased between schedulers: when the kernel hands a remote
//! wake-up to the target CPU's wake list (EEVDF does for idle targets; sched_ext only with
//! SCX_OPS_ALLOW_QUEUED_WAKEUP), `sched_wakeup` fires on the target after its IPI arrived, so
//! the time the idle CPU took to wake up was invisible; otherwise it fires on the waker and the
//! same time counted (wakeup scenario under -icount: 97 % of concord's wasted time, 1 % of
//! EEVDF's, was that wake-up of an idle vCPU).
//! Replaying them gives, at every instant, each CPU's occupant and the set of runnable tasks
//! that are not on a CPU with the time they became runnable. A task enters that set when woken
//! (unless it is on a CPU) or when it leaves a CPU still runnable (preempted, slice ended), and
//! leaves it when it gets a CPU or blocks. Between two events nothing changes except waits
//! crossing the threshold, so each idle stretch [a, b) of CPU c adds
//! `b - max(a, min over waiting tasks t allowed on c of (since_t + threshold))` when positive.
//! Allowed CPUs come from samples of /proc/*/task/*/status taken during the run; a task never
//! sampled (short-lived) is taken as allowed everywhere.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Switch {
        prev_pid: u32,
        /// The task left the CPU still runnable (state R or R+: preempted, slice over).
        prev_runnable: bool,
        next_pid: u32,
    },
    Wakeup {
        pid: u32,
    },
    Marker(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    pub ts_ns: u64,
    pub cpu: u32,
    pub event: Event,
}

/// Value of `key=` (with a leading space or at the start) up to the next space.
pub(super) fn field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let at = if s.starts_with(key) {
        0
    } else {
        s.find(&format!(" {key}"))? + 1
    };
    let rest = &s[at + key.len()..];
    Some(rest.split(' ').next().unwrap_or(rest))
}

fn parse_ts(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns = frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32);
    Some(secs * 1_000_000_000 + frac_ns)
}

/// Time, CPU, event name and fields of any line of /sys/kernel/tracing/trace; None for
/// comments. `<comm>-<pid> [<cpu>] <flags> <secs>.<frac>: <event>: <fields>`; the comm may hold
/// spaces, brackets and ": ", so the timestamp is the first token before ": " that parses as one.
pub(super) fn split_line(line: &str) -> Option<(u64, u32, &str, &str)> {
    let mut from = 0;
    while let Some(i) = line[from..].find(": ") {
        let at = from + i;
        let head = &line[..at];
        if let Some(ts) = head.rsplit(' ').next().and_then(parse_ts) {
            let open = head.rfind('[')?;
            let close = open + head[open..].find(']')?;
            let cpu = head[open + 1..close].trim().parse().ok()?;
            let rest = &line[at + 2..];
            let (name, body) = rest.split_once(": ").unwrap_or((rest.trim_end(), ""));
            return Some((ts, cpu, name.trim_end_matches(':'), body));
        }
        from = at + 2;
    }
    None
}

/// One line of the trace as the replays use it; None for comments and other events.
pub fn parse_line(line: &str) -> Option<TraceEvent> {
    let (ts_ns, cpu, name, body) = split_line(line)?;
    let event = match name {
        "sched_switch" => {
            let (prev, next) = body.split_once(" ==> ")?;
            Event::Switch {
                prev_pid: field(prev, "prev_pid=")?.parse().ok()?,
                prev_runnable: field(prev, "prev_state=")?.starts_with('R'),
                next_pid: field(next, "next_pid=")?.parse().ok()?,
            }
        }
        "tracing_mark_write" => Event::Marker(body.trim_end().to_string()),
        "sched_waking" | "sched_wakeup" | "sched_wakeup_new" => Event::Wakeup {
            pid: field(body, "pid=")?.parse().ok()?,
        },
        _ => return None,
    };
    Some(TraceEvent { ts_ns, cpu, event })
}

pub const START_MARKER: &str = "concord-lab:start";
pub const END_MARKER: &str = "concord-lab:end";

/// Per-CPU time in one heat-map bin, as fractions of the bin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub busy: f32,
    pub idle: f32,
    /// Part of `idle` during which a task allowed here waited longer than the threshold.
    pub wasted: f32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeatMap {
    pub bin_ns: u64,
    /// cpus[cpu][bin]
    pub cpus: Vec<Vec<Cell>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WastedReport {
    pub threshold_ns: u64,
    pub window_ns: u64,
    pub nr_cpus: usize,
    pub busy_ns: u64,
    pub idle_ns: u64,
    pub wasted_ns: u64,
    /// CPU time before a CPU's first event (its occupant unknown); near zero when the guest
    /// touched every CPU before the window opened.
    pub unknown_ns: u64,
    /// wasted / (CPUs x window), in percent.
    pub wasted_pct: f64,
    pub idle_pct: f64,
    pub events: u64,
    /// Events the trace buffer dropped (overruns): the figures are then approximate.
    pub lost_events: u64,
    /// The longest a waiting task was passed over by an idle CPU it could use (ns).
    pub longest_wasted_stretch_ns: u64,
    pub heat: HeatMap,
}

/// Replays a trace (the text of /sys/kernel/tracing/trace) over the window between the lab's
/// markers. `masks`: allowed CPUs per pid as bit masks (the lab's guests have at most 64 CPUs).
pub fn analyze(
    trace: &str,
    nr_cpus: usize,
    threshold_ns: u64,
    masks: &HashMap<u32, u64>,
    bins: usize,
) -> Result<WastedReport> {
    if nr_cpus == 0 || nr_cpus > 64 {
        bail!("wasted-core meter: {nr_cpus} CPUs (1 to 64 supported)");
    }
    let events: Vec<TraceEvent> = trace.lines().filter_map(parse_line).collect();
    let marker = |m: &str| {
        events.iter().find_map(|e| match &e.event {
            Event::Marker(s) if s == m => Some(e.ts_ns),
            _ => None,
        })
    };
    let (Some(start), Some(end)) = (marker(START_MARKER), marker(END_MARKER)) else {
        bail!("the trace has no {START_MARKER}/{END_MARKER} markers (trace buffer overrun, or tracing was off)");
    };
    if end <= start {
        bail!("the trace's end marker is not after its start marker");
    }
    let mut r = Replay {
        threshold_ns,
        masks,
        start,
        end,
        bins: bins.max(1),
        bin_ns: ((end - start) / bins.max(1) as u64).max(1),
        occupant: vec![None; nr_cpus],
        running: HashMap::new(),
        waiting: HashMap::new(),
        stretch_from: vec![None; nr_cpus],
        totals: [0; 4],
        longest: 0,
        heat: vec![vec![[0; 3]; bins.max(1)]; nr_cpus],
    };
    // Accounted up to here; events before the window only set the state up.
    let mut upto = start;
    let mut counted = 0u64;
    for e in &events {
        let t = e.ts_ns.min(end);
        if t > upto {
            r.account(upto, t);
            upto = t;
        }
        if e.ts_ns >= end {
            break;
        }
        if e.ts_ns >= start {
            counted += 1;
        }
        r.apply(e);
    }
    if upto < end {
        r.account(upto, end);
    }
    for cpu in 0..nr_cpus {
        r.close_stretch(cpu, end);
    }
    let window_ns = end - start;
    let total = (window_ns * nr_cpus as u64) as f64;
    let [busy, idle, wasted, unknown] = r.totals;
    let bin_ns = r.bin_ns;
    Ok(WastedReport {
        threshold_ns,
        window_ns,
        nr_cpus,
        busy_ns: busy,
        idle_ns: idle,
        wasted_ns: wasted,
        unknown_ns: unknown,
        wasted_pct: 100.0 * wasted as f64 / total,
        idle_pct: 100.0 * idle as f64 / total,
        events: counted,
        lost_events: 0,
        longest_wasted_stretch_ns: r.longest,
        heat: HeatMap {
            bin_ns,
            cpus: r
                .heat
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|c| Cell {
                            busy: c[0] as f32 / bin_ns as f32,
                            idle: c[1] as f32 / bin_ns as f32,
                            wasted: c[2] as f32 / bin_ns as f32,
                        })
                        .collect()
                })
                .collect(),
        },
    })
}

struct Replay<'a> {
    threshold_ns: u64,
    masks: &'a HashMap<u32, u64>,
    start: u64,
    end: u64,
    bins: usize,
    bin_ns: u64,
    /// Each CPU's current task (0 = idle), None before its first switch.
    occupant: Vec<Option<u32>>,
    /// pid -> CPU, for tasks on a CPU.
    running: HashMap<u32, u32>,
    /// Runnable tasks not on a CPU, with the time they became runnable.
    waiting: HashMap<u32, u64>,
    /// Per CPU, the start of the current wasted stretch (for the longest one).
    stretch_from: Vec<Option<u64>>,
    /// busy, idle, wasted, unknown (ns).
    totals: [u64; 4],
    longest: u64,
    /// Per CPU per bin: busy, idle, wasted (ns).
    heat: Vec<Vec<[u64; 3]>>,
}

impl Replay<'_> {
    fn allowed(&self, pid: u32, cpu: usize) -> bool {
        self.masks
            .get(&pid)
            .is_none_or(|m| cpu < 64 && m & (1u64 << cpu) != 0)
    }

    /// When the earliest task allowed on `cpu` crosses the threshold (None: nobody waits).
    fn wasted_from(&self, cpu: usize) -> Option<u64> {
        self.waiting
            .iter()
            .filter(|(pid, _)| self.allowed(**pid, cpu))
            .map(|(_, since)| since + self.threshold_ns)
            .min()
    }

    fn add(&mut self, cpu: usize, from: u64, to: u64, which: usize) {
        self.totals[which] += to - from;
        if which == 3 {
            return;
        }
        let mut t = from;
        while t < to {
            let b = ((t - self.start) / self.bin_ns) as usize;
            if b >= self.bins {
                // The division's remainder: the last few ns count in the last bin.
                self.heat[cpu][self.bins - 1][which] += to - t;
                break;
            }
            let part = to.min(self.start + (b as u64 + 1) * self.bin_ns) - t;
            self.heat[cpu][b][which] += part;
            t += part;
        }
    }

    fn close_stretch(&mut self, cpu: usize, at: u64) {
        if let Some(from) = self.stretch_from[cpu].take() {
            self.longest = self.longest.max(at - from);
        }
    }

    /// Nothing changes in [a, b) but waits crossing the threshold.
    fn account(&mut self, a: u64, b: u64) {
        if b <= a || a >= self.end {
            return;
        }
        for cpu in 0..self.occupant.len() {
            match self.occupant[cpu] {
                None => self.add(cpu, a, b, 3),
                Some(0) => {
                    self.add(cpu, a, b, 1);
                    match self.wasted_from(cpu) {
                        Some(w) if w < b => {
                            let from = w.max(a);
                            self.add(cpu, from, b, 2);
                            if self.stretch_from[cpu].is_none() {
                                self.stretch_from[cpu] = Some(from);
                            }
                        }
                        _ => self.close_stretch(cpu, a),
                    }
                }
                Some(_) => self.add(cpu, a, b, 0),
            }
        }
    }

    fn apply(&mut self, e: &TraceEvent) {
        match e.event {
            Event::Switch {
                prev_pid,
                prev_runnable,
                next_pid,
            } => {
                let cpu = e.cpu as usize;
                if prev_pid != 0 {
                    self.running.remove(&prev_pid);
                    if prev_runnable {
                        self.waiting.insert(prev_pid, e.ts_ns);
                    } else {
                        self.waiting.remove(&prev_pid);
                    }
                }
                if next_pid != 0 {
                    self.waiting.remove(&next_pid);
                    self.running.insert(next_pid, e.cpu);
                }
                if cpu < self.occupant.len() {
                    if next_pid != 0 {
                        self.close_stretch(cpu, e.ts_ns.clamp(self.start, self.end));
                    }
                    self.occupant[cpu] = Some(next_pid);
                }
            }
            Event::Wakeup { pid } => {
                // A wake-up of a task still on its CPU (it had not blocked yet) is no wait; the
                // first of sched_waking and sched_wakeup starts the wait.
                if !self.running.contains_key(&pid) {
                    self.waiting.entry(pid).or_insert(e.ts_ns);
                }
            }
            Event::Marker(_) => {}
        }
    }
}

/// Allowed-CPU masks from `pid cpulist` lines (the guest's samples of /proc).
pub fn parse_masks(s: &str) -> HashMap<u32, u64> {
    s.lines()
        .filter_map(|l| {
            let (pid, list) = l.split_once(' ')?;
            let cpus = concord_common::topology::parse_cpulist(list).ok()?;
            let mask = cpus
                .iter()
                .filter(|&&c| c < 64)
                .fold(0u64, |m, &c| m | 1 << c);
            Some((pid.parse().ok()?, mask))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(ts_us: u64, cpu: u32, prev: u32, state: &str, next: u32) -> String {
        format!(
            "  x-{prev} [{cpu:03}] d..2. {}.{:06}: sched_switch: prev_comm=a b prev_pid={prev} prev_prio=120 prev_state={state} ==> next_comm=c next_pid={next} next_prio=120",
            ts_us / 1_000_000,
            ts_us % 1_000_000
        )
    }
    fn wake(ts_us: u64, cpu: u32, pid: u32) -> String {
        format!(
            "  y-1 [{cpu:03}] d..2. {}.{:06}: sched_wakeup: comm=w pid={pid} prio=120 target_cpu=001",
            ts_us / 1_000_000,
            ts_us % 1_000_000
        )
    }
    fn mark(ts_us: u64, m: &str) -> String {
        format!(
            "  lab-9 [000] ..... {}.{:06}: tracing_mark_write: {m}",
            ts_us / 1_000_000,
            ts_us % 1_000_000
        )
    }

    #[test]
    fn parses_the_kernels_lines() {
        let l = "          <idle>-0       [001] d..2.   123.456789: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=kworker/1:1 next_pid=34 next_prio=120";
        assert_eq!(
            parse_line(l),
            Some(TraceEvent {
                ts_ns: 123_456_789_000,
                cpu: 1,
                event: Event::Switch {
                    prev_pid: 0,
                    prev_runnable: true,
                    next_pid: 34
                }
            })
        );
        let l = " stress-ng [x]-12 [003] dN.3. 5.000001: sched_wakeup: comm=foo pid=77 prio=120 target_cpu=002";
        assert_eq!(
            parse_line(l).map(|e| (e.cpu, e.event)),
            Some((3, Event::Wakeup { pid: 77 }))
        );
        let l = sw(1, 0, 5, "R+", 0);
        assert!(matches!(
            parse_line(&l).unwrap().event,
            Event::Switch {
                prev_runnable: true,
                ..
            }
        ));
        assert!(matches!(
            parse_line(&sw(1, 0, 5, "S", 0)).unwrap().event,
            Event::Switch {
                prev_runnable: false,
                ..
            }
        ));
        assert_eq!(
            parse_line(&mark(2, START_MARKER)).unwrap().event,
            Event::Marker(START_MARKER.into())
        );
        assert_eq!(parse_line("# tracer: nop"), None);
        assert_eq!(
            parse_line("  a-1 [000] ..... 1.0: sched_stat_runtime: x"),
            None
        );
    }

    /// Two CPUs; task 10 pinned to CPU 0 waits behind task 11 while CPU 1 idles: not wasted
    /// (CPU 1 may not run it). Task 20 (unpinned) waits 3 ms while CPU 1 idles: 2 ms wasted.
    #[test]
    fn counts_idle_time_only_when_an_allowed_task_waited_past_the_threshold() {
        let trace = [
            sw(0, 0, 0, "R", 11),
            sw(0, 1, 5, "S", 0),
            mark(1_000, START_MARKER),
            wake(1_000, 0, 10),
            wake(2_000, 0, 20),
            sw(5_000, 1, 0, "R", 20), // 20 waited 3 ms: wasted 4000..5000 (1 ms)
            sw(6_000, 1, 20, "S", 0), // CPU 1 idle again
            sw(9_000, 0, 11, "R+", 10), // 11 preempted: waits; allowed everywhere
            mark(11_000, END_MARKER),
        ]
        .join(
            "
",
        );
        let masks = HashMap::from([(10, 0b01u64)]);
        let r = analyze(&trace, 2, 1_000_000, &masks, 10).unwrap();
        assert_eq!(r.window_ns, 10_000_000);
        // CPU 1 idle 1000..5000 and 6000..11000 = 9 ms; busy 1 ms. CPU 0 busy 10 ms.
        assert_eq!(r.idle_ns, 9_000_000);
        assert_eq!(r.busy_ns, 11_000_000);
        // Wasted: 20 crosses the threshold at 3000 (waits from 2000): 3000..5000 = 2 ms; then
        // 11 waits from 9000, crosses at 10000: 10000..11000 = 1 ms. Task 10 never counts.
        assert_eq!(r.wasted_ns, 3_000_000);
        assert_eq!(r.longest_wasted_stretch_ns, 2_000_000);
        assert!((r.wasted_pct - 15.0).abs() < 1e-9);
        assert_eq!(r.unknown_ns, 0);
        // Heat map: 10 bins of 1 ms; CPU 1's bin 2 (3000..4000) is all wasted, bin 4 busy.
        assert_eq!(r.heat.bin_ns, 1_000_000);
        let c1 = &r.heat.cpus[1];
        assert_eq!(
            c1[2],
            Cell {
                busy: 0.0,
                idle: 1.0,
                wasted: 1.0
            }
        );
        assert_eq!(c1[4].busy, 1.0);
        assert_eq!(c1[0].wasted, 0.0);
        assert!(r.heat.cpus[0].iter().all(|c| c.busy == 1.0));
        let sum: f32 = c1.iter().map(|c| c.wasted).sum();
        assert!((sum - 3.0).abs() < 1e-6);
    }

    #[test]
    fn a_wakeup_of_a_running_task_is_no_wait_and_unknown_cpus_are_not_idle() {
        let trace = [
            sw(0, 0, 0, "R", 7),
            mark(0, START_MARKER),
            wake(100, 1, 7), // 7 is on CPU 0
            sw(500, 1, 0, "R", 0),
            mark(10_000, END_MARKER),
        ]
        .join(
            "
",
        );
        let r = analyze(&trace, 2, 1_000_000, &HashMap::new(), 4).unwrap();
        assert_eq!(r.wasted_ns, 0);
        assert_eq!(r.unknown_ns, 500_000);
        assert_eq!(r.idle_ns, 9_500_000);
    }

    /// A remote wake-up handed to an idle CPU's wake list: sched_waking on the waker's CPU at
    /// 2 ms, sched_wakeup on the target only when it woke up (4 ms), the task runs at 5 ms. The
    /// wait counts from sched_waking: 3..5 ms wasted, not 0 as sched_wakeup alone gave.
    #[test]
    fn a_wait_starts_at_sched_waking() {
        let waking = |ts_us: u64, cpu: u32, pid: u32| {
            wake(ts_us, cpu, pid).replace("sched_wakeup:", "sched_waking:")
        };
        assert_eq!(
            parse_line(&waking(7, 2, 30)).map(|e| (e.cpu, e.event)),
            Some((2, Event::Wakeup { pid: 30 }))
        );
        let trace = [
            sw(0, 0, 5, "S", 0),
            sw(0, 1, 0, "R", 11),
            mark(1_000, START_MARKER),
            waking(2_000, 1, 30),
            wake(4_000, 0, 30),
            sw(5_000, 0, 0, "R", 30),
            mark(6_000, END_MARKER),
        ]
        .join("\n");
        let r = analyze(&trace, 2, 1_000_000, &HashMap::new(), 5).unwrap();
        assert_eq!(r.wasted_ns, 2_000_000);
        assert_eq!(r.longest_wasted_stretch_ns, 2_000_000);
    }

    #[test]
    fn missing_markers_are_an_error() {
        assert!(analyze(&sw(0, 0, 0, "R", 1), 1, 1, &HashMap::new(), 1).is_err());
    }

    #[test]
    fn masks_parse_from_cpulists() {
        let m = parse_masks(
            "12 0-1,3
13 2
bad
",
        );
        assert_eq!(m[&12], 0b1011);
        assert_eq!(m[&13], 0b100);
        assert_eq!(m.len(), 2);
    }
}
