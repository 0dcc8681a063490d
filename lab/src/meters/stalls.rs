//! Stalls below the scheduler: stretches in which a CPU of the guest executed nothing at all.
//! A task that waits for such a CPU waits under every scheduler alike, so a long wait that
//! falls in one is the machine's (under emulation: the vCPU thread not running guest code,
//! which the host's schedstat sees only when the thread waits for a host CPU, not when it is
//! blocked inside the emulator), not the scheduler's.
//!
//! Input is the compare guest's trace with the IPI and interrupt-entry events on (see
//! `compare::guest`): `ipi_send_cpu` / `ipi_send_cpumask` on the sender, and on the receiver
//! `reschedule_entry`, `call_function*_entry` and `local_timer_entry`. Two figures:
//! - **IPI answer**: from an IPI sent to a CPU to that CPU's next event of any kind. A CPU that
//!   executes answers within microseconds: an idle one wakes into the interrupt handler, a busy
//!   one takes it at once. The longest answer is how long a CPU asked to run something did not
//!   run anything.
//! - **Busy silence**: the longest stretch in which a CPU with a task on it logged no event,
//!   not even its tick (every few ms while busy). Idle CPUs may sleep without ticks, so their
//!   silence says nothing; the IPI answer covers them.
//!
//! Neither needs the scheduler's cooperation, so the figures compare between schedulers.

use super::wasted::{field, split_line, END_MARKER, START_MARKER};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stalls {
    /// IPIs to another CPU sent inside the window.
    pub ipis: u64,
    /// The longest an IPI sent inside the window went unanswered (ns); None when the trace has
    /// no IPI events (a kernel without them).
    pub ipi_answer_max_ns: Option<u64>,
    /// When that IPI was sent (ns after the window opened) and to which CPU.
    pub ipi_answer_max_at: Option<(u64, u32)>,
    /// The longest a CPU running a task logged nothing inside the window (ns); None when the
    /// trace has no tick events.
    pub busy_silence_max_ns: Option<u64>,
}

impl Stalls {
    /// An IPI sent `at` ns into the window to `cpu` was answered after `ns`.
    fn answered(&mut self, ns: u64, at: u64, cpu: u32) {
        if self.ipi_answer_max_ns.is_none_or(|m| ns > m) {
            self.ipi_answer_max_ns = Some(ns);
            self.ipi_answer_max_at = Some((at, cpu));
        }
    }

    /// A CPU with a task on it logged nothing for `ns`.
    fn silent(&mut self, ns: u64) {
        self.busy_silence_max_ns = Some(self.busy_silence_max_ns.unwrap_or(0).max(ns));
    }
}

/// CPUs of the kernel's bitmask text (`%*pb`: hex, 32-bit groups separated by commas).
fn mask_cpus(hex: &str) -> Vec<u32> {
    hex.chars()
        .filter(|c| *c != ',')
        .rev()
        .enumerate()
        .flat_map(|(k, c)| {
            let bits = c.to_digit(16).unwrap_or(0);
            (0..4u32)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| k as u32 * 4 + b)
        })
        .collect()
}

/// What the replay knows of one CPU.
#[derive(Clone, Default)]
struct CpuState {
    /// Time of its last event.
    last: Option<u64>,
    /// A task is on it.
    busy: bool,
    /// When the oldest IPI it has not answered was sent.
    pending: Option<u64>,
}

/// Replays the trace's window (between the lab's markers; the whole trace without them).
pub fn stalls(trace: &str) -> Stalls {
    let mut s = Stalls::default();
    let mut start: Option<u64> = None;
    let mut end: Option<u64> = None;
    let mut cpus: Vec<CpuState> = Vec::new();
    let (mut saw_ipi, mut saw_tick) = (false, false);
    let grow = |cpus: &mut Vec<CpuState>, c: u32| {
        if cpus.len() <= c as usize {
            cpus.resize(c as usize + 1, CpuState::default());
        }
    };
    let from_start = |t: u64, start: Option<u64>| start.map(|s0| t.max(s0));
    for line in trace.lines() {
        let Some((ts, cpu, name, body)) = split_line(line) else {
            continue;
        };
        if end.is_some() {
            break;
        }
        if name == "tracing_mark_write" {
            if body.contains(START_MARKER) {
                start = Some(ts);
            } else if body.contains(END_MARKER) {
                end = Some(ts);
            }
        }
        grow(&mut cpus, cpu);
        let c = &mut cpus[cpu as usize];
        // This CPU executes: it answers whatever was sent to it, and its silence ends.
        if let Some(sent) = c.pending.take() {
            if let Some(sent) = from_start(sent, start) {
                s.answered(ts.saturating_sub(sent), sent - start.unwrap_or(0), cpu);
            }
        }
        if let (Some(prev), true) = (c.last, c.busy) {
            if let Some(from) = from_start(prev, start) {
                s.silent(ts.saturating_sub(from));
            }
        }
        c.last = Some(ts);
        match name {
            "sched_switch" => {
                c.busy = body
                    .split_once(" ==> ")
                    .and_then(|(_, next)| field(next, "next_pid="))
                    .is_some_and(|p| p != "0");
            }
            "local_timer_entry" => saw_tick = true,
            "ipi_send_cpu" | "ipi_send_cpumask" => {
                saw_ipi = true;
                let targets = match name {
                    "ipi_send_cpu" => field(body, "cpu=")
                        .and_then(|v| v.parse().ok())
                        .into_iter()
                        .collect(),
                    _ => field(body, "cpumask=").map(mask_cpus).unwrap_or_default(),
                };
                for t in targets.into_iter().filter(|t| *t != cpu) {
                    grow(&mut cpus, t);
                    if start.is_some() {
                        s.ipis += 1;
                    }
                    cpus[t as usize].pending.get_or_insert(ts);
                }
            }
            _ => {}
        }
    }
    // What is still open when the window closes counts up to its end.
    if let (Some(s0), Some(e)) = (start, end) {
        for (i, c) in cpus.iter().enumerate() {
            if let Some(sent) = c.pending {
                let sent = sent.max(s0);
                s.answered(e.saturating_sub(sent), sent - s0, i as u32);
            }
            if let (Some(prev), true) = (c.last, c.busy) {
                s.silent(e.saturating_sub(prev.max(s0)));
            }
        }
    }
    if !saw_ipi {
        s.ipi_answer_max_ns = None;
        s.ipi_answer_max_at = None;
    }
    if !saw_tick {
        s.busy_silence_max_ns = None;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts_us: u64, cpu: u32, comm_pid: &str, event: &str) -> String {
        format!(
            "  {comm_pid} [{cpu:03}] d.h2. {}.{:06}: {event}",
            ts_us / 1_000_000,
            ts_us % 1_000_000
        )
    }
    fn mark(ts_us: u64, m: &str) -> String {
        line(ts_us, 0, "lab-9", &format!("tracing_mark_write: {m}"))
    }
    fn switch(ts_us: u64, cpu: u32, next: u32) -> String {
        line(
            ts_us,
            cpu,
            "x-1",
            &format!("sched_switch: prev_comm=a prev_pid=1 prev_prio=120 prev_state=S ==> next_comm=b next_pid={next} next_prio=120"),
        )
    }
    fn tick(ts_us: u64, cpu: u32) -> String {
        line(ts_us, cpu, "b-5", "local_timer_entry: vector=236")
    }
    fn send(ts_us: u64, from: u32, to: u32) -> String {
        line(
            ts_us,
            from,
            "b-5",
            &format!("ipi_send_cpu: cpu={to} callsite=try_to_wake_up+0x2f1/0x5a0 callback=0x0"),
        )
    }

    #[test]
    fn splits_any_event_and_reads_bitmasks() {
        let l = " stress-ng [x]: 1-12 [003] d.h1.   12.345678: reschedule_entry: vector=253";
        assert_eq!(
            split_line(l),
            Some((12_345_678_000, 3, "reschedule_entry", "vector=253"))
        );
        assert_eq!(split_line("# tracer: nop"), None);
        assert_eq!(mask_cpus("3"), vec![0, 1]);
        assert_eq!(mask_cpus("00000001,00000000"), vec![32]);
        assert_eq!(mask_cpus("a"), vec![1, 3]);
    }

    /// CPU 1 idles: an IPI answered at once, then one answered 100 ms late (the stall), while
    /// CPU 0 runs task 5 and ticks every 4 ms but for one silent 30 ms stretch.
    #[test]
    fn finds_the_unanswered_ipi_and_the_silent_busy_cpu() {
        let mut t = vec![
            switch(0, 0, 5),
            switch(0, 1, 0),
            mark(1_000, START_MARKER),
            send(2_000, 0, 1),
            line(2_010, 1, "<idle>-0", "reschedule_entry: vector=253"),
            send(10_000, 0, 1),
        ];
        // CPU 0 ticks every 4 ms from 12 to 60 ms, then nothing until 90 ms.
        t.extend((12..=60).step_by(4).map(|ms| tick(ms * 1_000, 0)));
        t.push(tick(90_000, 0));
        t.push(tick(94_000, 0));
        t.push(line(110_000, 1, "<idle>-0", "reschedule_entry: vector=253"));
        t.push(mark(120_000, END_MARKER));
        let s = stalls(&t.join("\n"));
        assert_eq!(s.ipis, 2);
        assert_eq!(s.ipi_answer_max_ns, Some(100_000_000));
        assert_eq!(s.ipi_answer_max_at, Some((9_000_000, 1)));
        // 60 -> 90 ms; the idle CPU 1's 100 ms without events is not a busy silence.
        assert_eq!(s.busy_silence_max_ns, Some(30_000_000));
    }

    #[test]
    fn says_nothing_without_the_events() {
        let t = [
            switch(0, 0, 5),
            mark(1_000, START_MARKER),
            switch(50_000, 0, 0),
            mark(60_000, END_MARKER),
        ];
        assert_eq!(stalls(&t.join("\n")), Stalls::default());
    }

    #[test]
    fn an_ipi_unanswered_at_the_end_counts_to_the_end() {
        let t = [
            switch(0, 1, 0),
            mark(1_000, START_MARKER),
            send(5_000, 0, 1),
            tick(6_000, 0),
            mark(80_000, END_MARKER),
        ];
        let s = stalls(&t.join("\n"));
        assert_eq!(s.ipi_answer_max_ns, Some(75_000_000));
    }
}
