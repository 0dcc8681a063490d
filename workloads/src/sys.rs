//! Thin wrappers over the Linux calls the workloads need: a monotonic clock, absolute sleeps,
//! CPU affinity and the per-thread scheduler statistics in /proc.

use anyhow::{bail, Result};

/// CLOCK_MONOTONIC in nanoseconds (the clock Instant uses; vDSO, cheap).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleep until CLOCK_MONOTONIC reaches `ns` (absolute: no drift from late wake-ups).
pub fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is valid; a null remainder is allowed with TIMER_ABSTIME.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

/// Restrict the calling thread to one CPU (like the BEAM's `+sbt` binding).
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    set_current_thread_cpus(&[cpu])
}

/// Set the calling thread's CPU mask; the kernel migrates it before returning.
pub fn set_current_thread_cpus(cpus: &[usize]) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET bounds-checks the index.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "setting CPU mask {cpus:?}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// CPUs this process may run on, in order.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: as above; the set is filled by the kernel.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect())
    }
}

pub fn current_cpu() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::sched_getcpu() }
}

/// /proc/thread-self/schedstat: time on CPU, time runnable but waiting (run-queue delay), and
/// the number of times the thread got a CPU. Kept by the core scheduler for every class,
/// sched_ext included.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SchedStat {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub timeslices: u64,
}

impl SchedStat {
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some(Self {
            run_ns: it.next()??,
            wait_ns: it.next()??,
            timeslices: it.next()??,
        })
    }

    pub fn of_current_thread() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
    }

    /// Re-reads an open `/proc/.../schedstat` (seq_file restarts at offset 0): one syscall, for
    /// loops that sample it often.
    pub fn of_file(f: &std::fs::File) -> Option<Self> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 128];
        let n = f.read_at(&mut buf, 0).ok()?;
        Self::parse(std::str::from_utf8(&buf[..n]).ok()?)
    }

    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            run_ns: self.run_ns.saturating_sub(earlier.run_ns),
            wait_ns: self.wait_ns.saturating_sub(earlier.wait_ns),
            timeslices: self.timeslices.saturating_sub(earlier.timeslices),
        }
    }
}

/// Sleep while `word` holds `expected` (FUTEX_WAIT, private). Returns on a wake, a signal or a
/// spurious wake-up: callers re-check their condition.
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: word is a valid, aligned u32 for the duration of the call; no timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wake up to `n` threads sleeping on `word` (FUTEX_WAKE, private).
pub fn futex_wake(word: &std::sync::atomic::AtomicU32, n: u32) {
    // SAFETY: as above; FUTEX_WAKE only reads the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_parses_and_subtracts() {
        let a = SchedStat::parse("1000 200 3\n").unwrap();
        let b = SchedStat::parse("5000 1200 13").unwrap();
        assert_eq!(
            b.since(&a),
            SchedStat {
                run_ns: 4000,
                wait_ns: 1000,
                timeslices: 10
            }
        );
        assert!(SchedStat::parse("12 x 3").is_none());
        assert!(SchedStat::parse("12").is_none());
        assert!(
            SchedStat::of_current_thread().is_some(),
            "this kernel keeps schedstat"
        );
        let f = std::fs::File::open("/proc/thread-self/schedstat").unwrap();
        let first = SchedStat::of_file(&f).expect("re-readable");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        std::thread::yield_now();
        let again = SchedStat::of_file(&f).expect("re-readable a second time");
        assert!(again.run_ns >= first.run_ns && again.timeslices >= first.timeslices);
    }

    #[test]
    fn futex_wakes_a_waiter() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let t = std::thread::spawn(move || {
            while w.load(Ordering::Acquire) == 0 {
                futex_wait(&w, 0);
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        word.store(1, Ordering::Release);
        futex_wake(&word, 1);
        t.join().unwrap();
    }

    #[test]
    fn absolute_sleep_does_not_return_early() {
        let t = now_ns() + 2_000_000;
        sleep_until(t);
        assert!(now_ns() >= t);
    }
}
