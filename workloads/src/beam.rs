//! beam-sim: a BEAM-like runtime, the workload of the Erlang-on-scx_lavd outage (seed 000).
//!
//! N scheduler threads, each bound to its own CPU (`+sbt`), each draining its own run queue of
//! processes. A process runs for up to `reductions_per_slice` reductions, then yields to the
//! next one (cooperative, like the BEAM's 4000-reduction budget). Requests arrive open-loop at
//! a fixed rate from a load generator thread and go round-robin onto the schedulers' queues, so
//! a stalled scheduler piles up work instead of slowing the arrivals down. A scheduler with
//! nothing to do spins for `spin` before it sleeps, and while spinning asks a busy peer for
//! one process; the peer hands it over only when it runs (at its next yield point): a thread
//! the kernel does not run cannot have work taken from it. Latency is measured from a
//! request's intended arrival time to its completion.

use crate::sys::{self, SchedStat};
use crate::work;
use anyhow::{bail, Result};
use concord_common::hist::Hist;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BeamConfig {
    pub schedulers: usize,
    /// CPU of each scheduler thread; None = unpinned.
    pub cpus: Option<Vec<usize>>,
    pub reductions_per_request: u64,
    pub reductions_per_slice: u64,
    /// Requests per second, over all schedulers.
    pub rate: f64,
    pub spin_us: u64,
    /// Call sched_yield() every this many spins of the idle loop, as ERTS's scheduler_wait()
    /// does (ERTS_SCHED_SPIN_UNTIL_YIELD); 0: spin with a CPU pause only.
    #[serde(default)]
    pub yield_every: u64,
    pub secs: f64,
    /// Requests arriving in the first `warmup_secs` are served but not measured.
    pub warmup_secs: f64,
    /// After the last arrival, how long schedulers may drain their queues.
    pub drain_secs: f64,
}

impl BeamConfig {
    pub fn validate(&self) -> Result<()> {
        if self.schedulers == 0 {
            bail!("--schedulers must be at least 1");
        }
        if let Some(c) = &self.cpus {
            if c.len() != self.schedulers {
                bail!("{} CPUs for {} schedulers", c.len(), self.schedulers);
            }
        }
        if !(self.rate > 0.0 && self.rate <= 1_000_000.0) {
            bail!("--rate must be between 0 and 1000000 requests/s");
        }
        if self.reductions_per_request == 0 || self.reductions_per_slice == 0 {
            bail!("--reductions and --slice-reductions must be at least 1");
        }
        crate::check_secs(self.secs, Some(self.warmup_secs))?;
        if !(self.drain_secs >= 0.0 && self.drain_secs <= 600.0) {
            bail!("--drain-secs must be between 0 and 600");
        }
        Ok(())
    }
}

/// A BEAM process serving one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proc {
    /// Intended arrival time (ns, CLOCK_MONOTONIC); latency counts from here.
    pub arrival_ns: u64,
    pub left: u64,
    pub measured: bool,
}

const RUNNING: u32 = 0;
const SLEEPING: u32 = 1;
const WOKEN: u32 = 2;
const NO_THIEF: usize = 0;

/// One scheduler's run queue, its steal mailbox and its sleep state.
pub struct RunQueue {
    procs: Mutex<VecDeque<Proc>>,
    len: AtomicUsize,
    /// thief index + 1 of a pending steal request, or NO_THIEF.
    steal_req: AtomicUsize,
    state: AtomicU32,
    woken_at: AtomicU64,
    thread: OnceLock<Thread>,
}

impl Default for RunQueue {
    fn default() -> Self {
        Self {
            procs: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            steal_req: AtomicUsize::new(NO_THIEF),
            state: AtomicU32::new(RUNNING),
            woken_at: AtomicU64::new(0),
            thread: OnceLock::new(),
        }
    }
}

impl RunQueue {
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue a process and wake the owner if it sleeps. True if this woke it.
    pub fn push(&self, p: Proc) -> bool {
        {
            let mut q = self.procs.lock().unwrap();
            q.push_back(p);
            self.len.store(q.len(), Ordering::Release);
        }
        self.wake()
    }

    pub fn pop(&self) -> Option<Proc> {
        let mut q = self.procs.lock().unwrap();
        let p = q.pop_front();
        self.len.store(q.len(), Ordering::Release);
        p
    }

    fn pop_back_leaving_one(&self) -> Option<Proc> {
        let mut q = self.procs.lock().unwrap();
        if q.len() < 2 {
            return None;
        }
        let p = q.pop_back();
        self.len.store(q.len(), Ordering::Release);
        p
    }

    /// A thief asks this queue's owner for one process. Only one request may be pending.
    pub fn request_steal(&self, thief: usize) -> bool {
        self.steal_req
            .compare_exchange(NO_THIEF, thief + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The thief gives up (it found work or goes to sleep). False if the owner already took
    /// the request (a process may be on its way).
    pub fn withdraw_steal(&self, thief: usize) -> bool {
        self.steal_req
            .compare_exchange(thief + 1, NO_THIEF, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Called by the owner only, between two slices: acknowledge a pending request by handing
    /// over the process that would run last. Returns (thief, process) when something moved.
    /// The owner keeps its next process: handing over the only one would leave the owner idle
    /// to steal it back, and two idle schedulers could pass one process to and fro unrun.
    pub fn acknowledge_steal(&self) -> Option<(usize, Proc)> {
        if self.steal_req.load(Ordering::Acquire) == NO_THIEF {
            return None;
        }
        let thief = self.steal_req.swap(NO_THIEF, Ordering::AcqRel);
        if thief == NO_THIEF {
            return None;
        }
        self.pop_back_leaving_one().map(|p| (thief - 1, p))
    }

    /// Wake the owner if it sleeps; records when, so the owner can measure its wake-up delay.
    pub fn wake(&self) -> bool {
        if self
            .state
            .compare_exchange(SLEEPING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.woken_at.store(sys::now_ns(), Ordering::Release);
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
            return true;
        }
        false
    }

    /// Owner: sleep until pushed to or `stop`. Returns the wake-up delay (ns) if a push woke it.
    fn sleep(&self, stop: &AtomicBool) -> Option<u64> {
        self.state.store(SLEEPING, Ordering::SeqCst);
        if !self.is_empty() || stop.load(Ordering::Acquire) {
            self.state.store(RUNNING, Ordering::SeqCst);
            return None;
        }
        while self.state.load(Ordering::Acquire) == SLEEPING && !stop.load(Ordering::Acquire) {
            std::thread::park_timeout(Duration::from_millis(100));
        }
        let woken = self.state.swap(RUNNING, Ordering::AcqRel) == WOKEN;
        woken.then(|| {
            let at = self.woken_at.load(Ordering::Acquire);
            sys::now_ns().saturating_sub(at)
        })
    }
}

/// Open-loop arrivals: request i is due at start + i * interval whatever happened before, so
/// a generator that was itself delayed issues the missed requests at once, with their intended
/// times (no coordinated omission).
#[derive(Clone, Debug)]
pub struct OpenLoop {
    next_ns: u64,
    interval_ns: f64,
    start_ns: u64,
    issued: u64,
}

impl OpenLoop {
    pub fn new(start_ns: u64, rate: f64) -> Self {
        Self {
            next_ns: start_ns,
            interval_ns: 1e9 / rate,
            start_ns,
            issued: 0,
        }
    }

    /// Intended times of all requests due at `now`, oldest first.
    pub fn due(&mut self, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while self.next_ns <= now {
            out.push(self.next_ns);
            self.issued += 1;
            self.next_ns = self.start_ns + (self.issued as f64 * self.interval_ns) as u64;
        }
        out
    }

    pub fn next_ns(&self) -> u64 {
        self.next_ns
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SchedulerReport {
    pub index: usize,
    pub cpu: Option<usize>,
    /// CPUs the thread was seen on (should be exactly its own when pinned).
    pub cpus_seen: Vec<usize>,
    pub completed: u64,
    pub slices: u64,
    pub stolen_by_me: u64,
    pub given_away: u64,
    /// From /proc/thread-self/schedstat over the run.
    pub run_ms: f64,
    pub runq_wait_ms: f64,
    pub timeslices: u64,
    /// runq_wait / timeslices: mean run-queue delay each time it got the CPU.
    pub mean_runq_delay_us: f64,
    /// Longest gap between two clock reads while running processes (a preemption or a
    /// host stall, plus at most one work chunk).
    pub max_stall_us: f64,
    /// Time from a push that woke it to running: wake-up latency.
    pub wakeups: u64,
    pub wake_p99_us: f64,
    pub wake_max_us: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BeamReport {
    pub config: BeamConfig,
    pub ns_per_reduction: f64,
    pub issued: u64,
    pub measured: u64,
    /// Measured requests not finished when the drain time ran out (counted in `latency` with
    /// their age at that moment, a lower bound).
    pub unfinished: u64,
    pub throughput_rps: f64,
    pub latency: Hist,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub schedulers: Vec<SchedulerReport>,
}

struct Shared {
    cfg: BeamConfig,
    queues: Vec<RunQueue>,
    /// No more arrivals.
    arrivals_done: AtomicBool,
    /// Requests issued and not yet completed. Empty queues do not mean the work is done: a
    /// process between two slices, or on its way from a victim to a thief, is in no queue.
    outstanding: AtomicUsize,
    /// Drain time is over: leave now.
    stop: AtomicBool,
}

const CHUNK: u64 = 16; // reductions between clock reads

fn scheduler_thread(sh: Arc<Shared>, me: usize) -> Result<(SchedulerReport, Hist)> {
    let cfg = &sh.cfg;
    let cpu = cfg.cpus.as_ref().map(|c| c[me]);
    if let Some(c) = cpu {
        sys::pin_current_thread(c)?;
    }
    let q = &sh.queues[me];
    let _ = q.thread.set(std::thread::current());
    let mut rep = SchedulerReport {
        index: me,
        cpu,
        ..Default::default()
    };
    let mut lat = Hist::default();
    let mut wake = Hist::default();
    let mut seen = std::collections::BTreeSet::new();
    let stat0 = SchedStat::of_current_thread().unwrap_or_default();
    let mut state = me as u64 + 1;
    let mut max_stall = 0u64;
    let spin_ns = cfg.spin_us * 1000;

    loop {
        if sh.stop.load(Ordering::Acquire) {
            break;
        }
        if let Some((thief, p)) = q.acknowledge_steal() {
            sh.queues[thief].push(p);
            rep.given_away += 1;
        }
        if let Some(mut p) = q.pop() {
            seen.insert(sys::current_cpu().max(0) as usize);
            let run = p.left.min(cfg.reductions_per_slice);
            let mut done = 0;
            let mut last = sys::now_ns();
            while done < run {
                let n = CHUNK.min(run - done);
                work::reductions(n, &mut state);
                done += n;
                let now = sys::now_ns();
                max_stall = max_stall.max(now - last);
                last = now;
            }
            rep.slices += 1;
            p.left -= run;
            if p.left == 0 {
                rep.completed += 1;
                sh.outstanding.fetch_sub(1, Ordering::AcqRel);
                if p.measured {
                    lat.record(last.saturating_sub(p.arrival_ns));
                }
            } else {
                q.push(p);
            }
            continue;
        }
        if sh.arrivals_done.load(Ordering::Acquire) && sh.outstanding.load(Ordering::Acquire) == 0 {
            break;
        }
        // Idle: spin, asking the busiest peer for a process, then sleep.
        let spin_end = sys::now_ns() + spin_ns;
        let mut asked: Option<usize> = None;
        let mut spins: u64 = 0;
        while q.is_empty() && sys::now_ns() < spin_end && !sh.stop.load(Ordering::Acquire) {
            if asked.is_none() {
                let victim = (0..sh.queues.len())
                    .filter(|&v| v != me)
                    .max_by_key(|&v| sh.queues[v].len())
                    .filter(|&v| !sh.queues[v].is_empty());
                if let Some(v) = victim {
                    if sh.queues[v].request_steal(me) {
                        asked = Some(v);
                    }
                }
            }
            spins += 1;
            if cfg.yield_every > 0 && spins.is_multiple_of(cfg.yield_every) {
                // SAFETY: sched_yield takes no arguments and cannot fail in a way that matters.
                unsafe { libc::sched_yield() };
            } else {
                std::hint::spin_loop();
            }
        }
        if let Some(v) = asked {
            // If the victim acknowledged meanwhile, its process is (or will be) in our queue.
            sh.queues[v].withdraw_steal(me);
        }
        if !q.is_empty() {
            if asked.is_some() {
                rep.stolen_by_me += 1;
            }
            continue;
        }
        if let Some(d) = q.sleep(&sh.stop) {
            wake.record(d);
        }
    }

    let st = SchedStat::of_current_thread()
        .unwrap_or_default()
        .since(&stat0);
    rep.cpus_seen = seen.into_iter().collect();
    rep.run_ms = st.run_ns as f64 / 1e6;
    rep.runq_wait_ms = st.wait_ns as f64 / 1e6;
    rep.timeslices = st.timeslices;
    rep.mean_runq_delay_us = if st.timeslices > 0 {
        st.wait_ns as f64 / st.timeslices as f64 / 1e3
    } else {
        0.0
    };
    rep.max_stall_us = max_stall as f64 / 1e3;
    rep.wakeups = wake.count();
    rep.wake_p99_us = wake.percentile(99.0) as f64 / 1e3;
    rep.wake_max_us = wake.max() as f64 / 1e3;
    Ok((rep, lat))
}

/// Run the runtime for `cfg.secs` of arrivals plus the drain, and report.
pub fn run(cfg: BeamConfig, mut progress: impl FnMut(&str)) -> Result<BeamReport> {
    cfg.validate()?;
    let ns_per_reduction = work::ns_per_reduction();
    let sh = Arc::new(Shared {
        queues: (0..cfg.schedulers).map(|_| RunQueue::default()).collect(),
        cfg: cfg.clone(),
        arrivals_done: AtomicBool::new(false),
        outstanding: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let handles: Vec<_> = (0..cfg.schedulers)
        .map(|i| {
            let sh = sh.clone();
            std::thread::Builder::new()
                .name(format!("beam-sched-{i}"))
                .spawn(move || scheduler_thread(sh, i))
        })
        .collect::<std::io::Result<_>>()?;

    // The load generator: this thread, unpinned.
    let start = sys::now_ns() + 10_000_000;
    let warmup_end = start + (cfg.warmup_secs * 1e9) as u64;
    let end = start + (cfg.secs * 1e9) as u64;
    let mut arrivals = OpenLoop::new(start, cfg.rate);
    let mut next_q = 0usize;
    let mut issued = 0u64;
    let mut measured = 0u64;
    let mut next_report = start + 5_000_000_000;
    loop {
        let now = sys::now_ns();
        for t in arrivals.due(now.min(end.saturating_sub(1))) {
            let m = t >= warmup_end;
            sh.outstanding.fetch_add(1, Ordering::AcqRel);
            sh.queues[next_q].push(Proc {
                arrival_ns: t,
                left: cfg.reductions_per_request,
                measured: m,
            });
            next_q = (next_q + 1) % cfg.schedulers;
            issued += 1;
            measured += m as u64;
        }
        if now >= next_report {
            progress(&format!(
                "{:.0}/{:.0} s, {issued} requests issued",
                (now - start) as f64 / 1e9,
                cfg.secs
            ));
            next_report += 5_000_000_000;
        }
        if arrivals.next_ns() >= end {
            break;
        }
        sys::sleep_until(arrivals.next_ns().min(next_report));
    }
    sh.arrivals_done.store(true, Ordering::Release);
    for q in &sh.queues {
        q.wake();
    }
    let drain_end = end + (cfg.drain_secs * 1e9) as u64;
    while sys::now_ns() < drain_end && sh.outstanding.load(Ordering::Acquire) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    sh.stop.store(true, Ordering::Release);
    for q in &sh.queues {
        q.wake();
    }
    let mut latency = Hist::default();
    let mut schedulers = Vec::new();
    for h in handles {
        let (rep, lat) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a scheduler thread panicked"))??;
        latency.merge(&lat);
        schedulers.push(rep);
    }
    // Whatever is still queued missed the drain: count it at its age now, so an outage
    // cannot hide in requests that never finished.
    let now = sys::now_ns();
    let mut unfinished = 0;
    for q in &sh.queues {
        while let Some(p) = q.pop() {
            if p.measured {
                latency.record(now.saturating_sub(p.arrival_ns));
                unfinished += 1;
            }
        }
    }
    let window = (end - warmup_end) as f64 / 1e9;
    let done = latency.count() - unfinished;
    Ok(BeamReport {
        ns_per_reduction,
        issued,
        measured,
        unfinished,
        throughput_rps: done as f64 / window,
        p50_us: latency.percentile(50.0) as f64 / 1e3,
        p99_us: latency.percentile(99.0) as f64 / 1e3,
        p999_us: latency.percentile(99.9) as f64 / 1e3,
        max_us: latency.max() as f64 / 1e3,
        latency,
        schedulers,
        config: cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_(t: u64) -> Proc {
        Proc {
            arrival_ns: t,
            left: 1,
            measured: true,
        }
    }

    #[test]
    fn open_loop_issues_missed_requests_with_their_intended_times() {
        let mut ol = OpenLoop::new(1_000, 1000.0); // one per ms
        assert_eq!(ol.due(999), Vec::<u64>::new());
        assert_eq!(ol.due(1_000), vec![1_000]);
        // The generator slept 3.5 ms too long: four requests at once, each with its own time.
        assert_eq!(
            ol.due(4_500_000),
            vec![1_001_000, 2_001_000, 3_001_000, 4_001_000]
        );
        assert_eq!(ol.next_ns(), 5_001_000);
        // Over 10 s the count matches the rate exactly (no drift from rounding).
        let mut ol = OpenLoop::new(0, 3000.0);
        assert_eq!(ol.due(10_000_000_000 - 1).len(), 30_000);
    }

    #[test]
    fn stealing_needs_the_victims_acknowledgement() {
        let victim = RunQueue::default();
        for t in 0..3 {
            victim.push(proc_(t));
        }
        assert!(victim.request_steal(1));
        assert!(!victim.request_steal(2), "one pending request at a time");
        // Nothing moves until the victim itself acknowledges (i.e. runs).
        assert_eq!(victim.len(), 3);
        let (thief, p) = victim.acknowledge_steal().unwrap();
        assert_eq!(thief, 1);
        assert_eq!(
            p.arrival_ns, 2,
            "the process that would have run last is handed over"
        );
        assert_eq!(victim.len(), 2);
        assert!(victim.acknowledge_steal().is_none(), "request consumed");
        // A withdrawn request is never acknowledged.
        assert!(victim.request_steal(2));
        assert!(victim.withdraw_steal(2));
        assert!(victim.acknowledge_steal().is_none());
        assert_eq!(victim.len(), 2);
        // Withdrawing after the acknowledgement fails: the thief must look in its queue.
        assert!(victim.request_steal(3));
        assert!(victim.acknowledge_steal().is_some());
        assert!(!victim.withdraw_steal(3));
        // The owner keeps its next process: giving away its only one lets two idle schedulers
        // pass a process to and fro without running it.
        assert_eq!(victim.len(), 1);
        assert!(victim.request_steal(1));
        assert!(victim.acknowledge_steal().is_none());
        assert_eq!(victim.len(), 1);
        assert!(
            !victim.withdraw_steal(1),
            "the request was answered: nothing to steal"
        );
    }

    #[test]
    fn a_push_wakes_a_sleeping_owner_once() {
        let q = RunQueue::default();
        assert!(!q.push(proc_(0)), "owner is running, no wake");
        q.state.store(SLEEPING, Ordering::SeqCst);
        assert!(q.push(proc_(1)));
        assert!(!q.push(proc_(2)), "already woken");
        assert_eq!(q.pop().unwrap().arrival_ns, 0, "FIFO");
    }

    fn quick(cfg_rate: f64, cpus: Option<Vec<usize>>) -> BeamConfig {
        BeamConfig {
            schedulers: 2,
            cpus,
            reductions_per_request: 200,
            reductions_per_slice: 100,
            rate: cfg_rate,
            spin_us: 50,
            yield_every: 0,
            secs: 1.0,
            warmup_secs: 0.2,
            drain_secs: 2.0,
        }
    }

    #[test]
    fn the_yielding_spin_serves_every_request_too() {
        let cfg = BeamConfig {
            yield_every: 8,
            ..quick(2000.0, None)
        };
        let r = run(cfg, |_| {}).unwrap();
        assert_eq!(r.measured, 1600);
        assert_eq!(r.unfinished, 0);
        assert_eq!(r.latency.count(), 1600);
    }

    #[test]
    fn a_short_run_measures_every_request_after_warmup() {
        let r = run(quick(2000.0, None), |_| {}).unwrap();
        assert_eq!(r.issued, 2000);
        assert_eq!(r.measured, 1600, "arrivals in the last 0.8 s");
        assert_eq!(
            r.latency.count(),
            r.measured,
            "every measured request is counted"
        );
        assert_eq!(r.unfinished, 0);
        let completed: u64 = r.schedulers.iter().map(|s| s.completed).sum();
        assert_eq!(completed, r.issued);
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
        assert!((r.throughput_rps - 2000.0).abs() < 1.0);
    }

    #[test]
    fn pinned_schedulers_stay_on_their_cpu() {
        let cpus = sys::allowed_cpus().unwrap();
        let want = vec![cpus[0], cpus[cpus.len() - 1]];
        let r = run(quick(1000.0, Some(want.clone())), |_| {}).unwrap();
        for (s, c) in r.schedulers.iter().zip(&want) {
            assert!(s.cpus_seen.iter().all(|x| x == c), "{s:?}");
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = quick(1000.0, None);
        c.rate = 0.0;
        assert!(run(c, |_| {}).is_err());
        let mut c = quick(1000.0, Some(vec![0]));
        c.schedulers = 2;
        assert!(c.validate().is_err());
        let mut c = quick(1000.0, None);
        c.warmup_secs = 1.0;
        assert!(c.validate().is_err());
    }
}
