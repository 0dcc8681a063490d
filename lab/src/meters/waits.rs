//! Longest single waits by the kernel's own account, from the scheduler tracepoints the compare
//! guest records under every scheduler (see `wasted` for the events): a task starts waiting
//! when it is woken while off-CPU (its first wake-up event) or when it leaves a CPU still
//! runnable (preempted, slice over, yielded), and stops when `sched_switch` gives it a CPU.
//! This is what schedstat's run delay adds up, one wait at a time, and it sees every path a
//! task can wait on (a scheduler's queues, a local run queue, behind a higher class), so it is
//! the reference a scheduler's own wait count is checked against.
//!
//! It also finds the stretches in which no CPU of the guest logged any of these events while a
//! task waited. A guest that executes, with a task waiting, switches somewhere within a tick or
//! a turn; in the erlang mix something logs every few hundred microseconds. A silence far
//! longer than that is the machine's (under emulation: the vCPU threads running no guest code),
//! not any scheduler's, and the part of a long wait spent in such silences says how much of it
//! was. Unlike the stall meter (`stalls`) this needs no extra events, so every run has it.

use concord_common::hist::Hist;
use std::collections::HashMap;

use super::wasted::{parse_line, Event, END_MARKER, START_MARKER};

/// Gaps between two consecutive events of the whole guest at least this long count as
/// silence inside a wait: longer than a tick plus the turns the lab's schedulers give under
/// load, so that a wait behind a CPU hog's turn is not taken for the machine's.
pub const SILENT_GAP_NS: u64 = 10_000_000;

/// The kernel's account of waits inside the measured window, per task (pid = thread id).
#[derive(Debug, Default)]
pub struct Waits {
    /// When its longest single wait began and ended (ns, trace clock); waits still open at the
    /// window's end count up to the end.
    pub longest: HashMap<u32, (u64, u64)>,
    /// Every wait that began with a wake-up and ended on a CPU inside the window, ns: the
    /// wake-up latency a woken thread sees (waits after preemption, a slice's end or a yield
    /// are in `longest` only).
    pub wakeups: HashMap<u32, Vec<u64>>,
    /// The longest stretch inside the window in which no CPU logged an event while some task
    /// waited, ns.
    pub silence_max_ns: u64,
    /// The stretches of at least SILENT_GAP_NS in which no CPU logged an event while some task
    /// waited, in order (start, end).
    pub silences: Vec<(u64, u64)>,
}

impl Waits {
    /// All wake-up waits of these tasks, ns.
    pub fn wakeups_of(&self, pids: &[u32]) -> Hist {
        let mut h = Hist::default();
        for ns in pids.iter().filter_map(|p| self.wakeups.get(p)).flatten() {
            h.record(*ns);
        }
        h
    }

    /// This task's longest wait, ns.
    pub fn longest_ns(&self, pid: u32) -> Option<u64> {
        self.longest.get(&pid).map(|&(from, to)| to - from)
    }

    /// The longest wait among these tasks (all when None), with its task: (pid, ns).
    pub fn longest_of(&self, pids: Option<&[u32]>) -> Option<(u32, u64)> {
        self.longest
            .keys()
            .filter(|p| pids.is_none_or(|ps| ps.contains(p)))
            .filter_map(|&p| Some((p, self.longest_ns(p)?)))
            .max_by_key(|&(p, ns)| (ns, std::cmp::Reverse(p)))
    }

    /// How much of this task's longest wait the whole guest was silent (ns): the overlap with
    /// the silences of at least SILENT_GAP_NS.
    pub fn silent_in_longest(&self, pid: u32) -> u64 {
        let Some(&(from, to)) = self.longest.get(&pid) else {
            return 0;
        };
        self.silences
            .iter()
            .map(|&(a, b)| b.min(to).saturating_sub(a.max(from)))
            .sum()
    }
}

pub fn waits(trace: &str) -> Waits {
    // pid -> (wait start, began with a wake-up)
    let mut since: HashMap<u32, (u64, bool)> = HashMap::new();
    let mut on_cpu: HashMap<u32, u32> = HashMap::new(); // cpu -> pid
    let mut w = Waits::default();
    let mut open = false;
    let mut last_ts = 0;
    // Keeps the task's longest wait (from, to); returns this one's length, ns.
    let note = |w: &mut Waits, pid: u32, from: u64, to: u64| {
        let to = to.max(from);
        let e = w.longest.entry(pid).or_insert((from, from));
        if to - from >= e.1 - e.0 {
            *e = (from, to);
        }
        to - from
    };
    for ev in trace.lines().filter_map(parse_line) {
        // The gap since the guest's last event, with someone waiting through it.
        if open && !since.is_empty() {
            let gap = ev.ts_ns.saturating_sub(last_ts);
            w.silence_max_ns = w.silence_max_ns.max(gap);
            if gap >= SILENT_GAP_NS {
                w.silences.push((last_ts, ev.ts_ns));
            }
        }
        last_ts = ev.ts_ns;
        match ev.event {
            Event::Marker(m) if m.contains(START_MARKER) => {
                open = true;
                // waits begun before the window count from its start
                for (t, _) in since.values_mut() {
                    *t = (*t).max(ev.ts_ns);
                }
            }
            Event::Marker(m) if m.contains(END_MARKER) => {
                if open {
                    for (&pid, &(t, _)) in &since {
                        note(&mut w, pid, t, ev.ts_ns);
                    }
                }
                break;
            }
            Event::Marker(_) => {}
            Event::Wakeup { pid } => {
                if pid != 0 && !on_cpu.values().any(|&p| p == pid) {
                    since.entry(pid).or_insert((ev.ts_ns, true));
                }
            }
            Event::Switch {
                prev_pid,
                prev_runnable,
                next_pid,
            } => {
                on_cpu.remove(&ev.cpu);
                if prev_pid != 0 && prev_runnable {
                    since.entry(prev_pid).or_insert((ev.ts_ns, false));
                } else {
                    since.remove(&prev_pid);
                }
                if next_pid != 0 {
                    if let Some((t, woken)) = since.remove(&next_pid) {
                        if open {
                            let ns = note(&mut w, next_pid, t, ev.ts_ns);
                            if woken {
                                w.wakeups.entry(next_pid).or_default().push(ns);
                            }
                        }
                    }
                    on_cpu.insert(ev.cpu, next_pid);
                }
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(ts: &str, cpu: u32, prev: u32, state: &str, next: u32) -> String {
        format!(
            "x-{prev} [{cpu:03}] d..2. {ts}: sched_switch: prev_comm=a prev_pid={prev} prev_prio=120 prev_state={state} ==> next_comm=b next_pid={next} next_prio=120"
        )
    }

    fn wake(ts: &str, cpu: u32, pid: u32) -> String {
        format!("y-1 [{cpu:03}] d..2. {ts}: sched_waking: comm=t pid={pid} prio=120 target_cpu=000")
    }

    fn mark(ts: &str, m: &str) -> String {
        format!("z-1 [000] ..... {ts}: tracing_mark_write: {m}")
    }

    #[test]
    fn waits_from_wakeup_and_preemption_to_switch_in() {
        let t = [
            sw("1.000000", 0, 0, "R", 10),
            mark("1.000001", START_MARKER),
            // 11 woken at 1.001, runs at 1.004: 3 ms
            wake("1.001000", 1, 11),
            sw("1.004000", 0, 10, "R", 11),
            // 10 preempted at 1.004, back at 1.010: 6 ms
            // 11 sleeps at 1.010 (state S: no wait)
            sw("1.010000", 0, 11, "S", 10),
            // a wake-up of a task on a CPU starts no wait
            wake("1.011000", 1, 10),
            // 12 woken at 1.012, still waiting at the end (1.020): 8 ms
            wake("1.012000", 1, 12),
            mark("1.020000", END_MARKER),
        ]
        .join("\n");
        let all = waits(&t);
        assert_eq!(all.longest_ns(11), Some(3_000_000));
        assert_eq!(all.longest_ns(10), Some(6_000_000));
        assert_eq!(all.longest_ns(12), Some(8_000_000));
        assert_eq!(all.longest.len(), 3);
        // Only 11's wait began with a wake-up and ended on a CPU: 10's began with a
        // preemption, 12's never ended.
        let h = all.wakeups_of(&[10, 11, 12]);
        assert_eq!((h.count(), h.max()), (1, 3_000_000));
    }

    #[test]
    fn silences_of_the_whole_guest_inside_a_wait() {
        let t = [
            sw("1.000000", 0, 0, "R", 10),
            mark("1.000001", START_MARKER),
            // Nobody waits: 200 ms without an event is an idle guest, not a silence.
            wake("1.200000", 1, 11),
            // 11 waits from 1.200; the guest logs an event 4 ms later (a hog's turn on CPU 0:
            // quiet, not silence), then nothing at all for 100 ms.
            wake("1.204000", 1, 12),
            sw("1.304000", 1, 0, "R", 12),
            sw("1.306000", 0, 10, "R", 11),
            mark("1.310000", END_MARKER),
        ]
        .join("\n");
        let w = waits(&t);
        assert_eq!(w.silence_max_ns, 100_000_000);
        assert_eq!(w.silences, vec![(1_204_000_000, 1_304_000_000)]);
        // 11 waited 106 ms, 100 of them in the silence; 12 waited the silence out.
        assert_eq!(w.longest_of(None), Some((11, 106_000_000)));
        assert_eq!(w.silent_in_longest(11), 100_000_000);
        assert_eq!(w.longest_of(Some(&[12])), Some((12, 100_000_000)));
        assert_eq!(w.silent_in_longest(12), 100_000_000);
        // 10, preempted at 1.306, waited 4 ms to the end: no silence in it.
        assert_eq!(w.silent_in_longest(10), 0);
        assert_eq!(w.silent_in_longest(99), 0, "no wait, no silence");
    }

    #[test]
    fn waits_outside_the_window_do_not_count() {
        let t = [
            wake("0.990000", 0, 20),
            mark("1.000000", START_MARKER),
            sw("1.002000", 0, 0, "R", 20),
            mark("1.010000", END_MARKER),
            wake("1.011000", 0, 21),
            sw("1.050000", 0, 20, "S", 21),
        ]
        .join("\n");
        let all = waits(&t);
        // 20 waited from 0.990; inside the window from 1.000: 2 ms; 21 after the end: nothing
        assert_eq!(all.longest_ns(20), Some(2_000_000));
        assert!(!all.longest.contains_key(&21));
        let h = all.wakeups_of(&[20, 21]);
        assert_eq!((h.count(), h.max()), (1, 2_000_000));
    }
}
