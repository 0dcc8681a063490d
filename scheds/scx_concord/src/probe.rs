//! `--check-policy`: the policy arithmetic run in the kernel (the `policy_probe` and `policy_probe_lag`
//! BPF programs, by BPF_PROG_TEST_RUN) on inputs that cover each formula's corners, compared with the Rust
//! mirror in policy.rs; and the wake-up preemption's walk over a domain's CPUs (`scan_probe`)
//! on made-up big machines, which the lab cannot boot at every size.

use anyhow::{bail, Context, Result};
use libbpf_rs::ProgramInput;
use std::mem::MaybeUninit;

use crate::config::{Opts, QueueMode};
use crate::domains::{domain_lists, Layout};
use crate::scheduler::{open_and_load, open_and_load_on};
use crate::{bpf_intf, policy};

/// Inputs that cover the corners of each formula.
fn policy_cases() -> Vec<bpf_intf::policy_probe_args> {
    let mut cases = Vec::new();
    for &rt in &[0u64, 1_000, 400_000, 2_000_000, 5_000_000, 1 << 40] {
        for &(wf, kf) in &[
            (0u64, 0u64),
            (3, 0),
            (150, 40),
            (10_000, 10_000),
            (1 << 50, 7),
        ] {
            for &w in &[1u64, 33, 100, 10_000] {
                for &(n, wait) in &[
                    (0u64, 0u64),
                    (3, 2_500),
                    (7, 300_000),
                    (1000, 123_456_789),
                    (u32::MAX as u64, 1 << 45),
                ] {
                    // behind the clock, beyond lag_max behind, ahead, far ahead
                    let vt = match n {
                        0 => 0,
                        3 => (1 << 40) - 3_000_000,
                        1000 => (1 << 40) + 2_000_000,
                        _ => (1 << 40) + (1 << 35),
                    };
                    cases.push(bpf_intf::policy_probe_args {
                        avg_runtime_ns: rt,
                        wake_freq: wf,
                        waker_freq: kf,
                        weight: w,
                        nr_waiting: n,
                        domain_cpus: [0, 1, 4, 1024][(rt % 4) as usize],
                        wait_ns: wait,
                        vtime: vt,
                        vclock: 1 << 40,
                        lat_cri: 0,
                        deadline_offset_ns: 0,
                        slice_ns: 0,
                        wait_bucket: 0,
                        freq_after: 0,
                        freq_since: 0,
                        credit_ns: 0,
                        offset_ns: 0,
                        vtime_after: 0,
                        vclock_after: 0,
                        yield_offset_ns: 0,
                        timer_needed: 0,
                        waited_over: 0,
                        vtime_handoff: 0,
                        cut_short: 0,
                        heaviest: [0, 932, 100, 10_001][(n % 4) as usize],
                        offset_weight: 0,
                        yield_behind: 0,
                        handoff_verdict: 0,
                        share: 0,
                        cgroup_weight: 0,
                    });
                }
            }
        }
    }
    cases
}

pub fn check_policy(opts: &Opts) -> Result<()> {
    let mut open_object = MaybeUninit::uninit();
    let skel = open_and_load(opts, &mut open_object)?;
    let (smin, smax) = (opts.slice_min_us * 1000, opts.slice_max_us * 1000);
    let cases = policy_cases();
    let mut mismatches = 0;
    for mut a in cases.iter().copied() {
        run_probe(&skel.progs.policy_probe, "policy_probe", &mut a)?;
        run_probe(&skel.progs.policy_probe_lag, "policy_probe_lag", &mut a)?;
        let lc = policy::lat_cri(a.wake_freq, a.waker_freq);
        let want = [
            lc,
            policy::deadline_offset(
                a.avg_runtime_ns,
                a.weight,
                lc,
                smin,
                smax,
                opts.max_wait_ms * 1_000_000 / 2,
            ),
            policy::turn(
                policy::slice(
                    a.nr_waiting % 5,
                    a.nr_waiting,
                    a.domain_cpus,
                    a.weight,
                    smin,
                    smax,
                ),
                a.weight,
                opts.max_wait_ms * 1_000_000 / 2,
            ),
            policy::wait_bucket(a.wait_ns),
            policy::freq_update(a.wake_freq, a.wait_ns),
            policy::freq_since(a.wake_freq, a.wait_ns),
            policy::service_credit(a.vtime, a.vclock, smax, a.avg_runtime_ns, smin),
            policy::offset_with_lag(
                a.deadline_offset_ns,
                a.vtime,
                a.vclock,
                smax,
                opts.max_wait_ms * 1_000_000 / 2,
            ),
            policy::vtime_after_run(a.vtime, a.wait_ns, a.weight, a.vclock, smax),
            policy::clock_after_start(a.vclock, a.vtime, smax),
            policy::yield_offset(a.deadline_offset_ns, smax, opts.max_wait_ms * 1_000_000 / 2),
            policy::timer_needed(
                a.nr_waiting % 5,
                a.nr_waiting,
                a.domain_cpus,
                a.weight,
                a.wait_ns,
                opts.max_wait_ms * 1_000_000 / 2,
            ) as u64,
            policy::waited_over(a.vtime, a.vclock, a.wait_ns) as u64,
            policy::vtime_on_handoff(
                a.wait_ns,
                a.vtime,
                a.avg_runtime_ns,
                a.weight,
                a.vclock,
                smax,
            ),
            policy::cut_short(a.wait_ns, a.slice_ns, smin) as u64,
            policy::offset_weight(a.weight, a.heaviest),
            policy::yield_behind(a.vtime, a.vclock, a.vclock + a.wait_ns, smax),
            policy::handoff_verdict(a.wait_ns, a.nr_waiting & 1 == 1, smin) as u64,
            policy::share(a.vtime, a.weight, a.heaviest),
            policy::cgroup_weight(a.vtime, a.vclock),
        ];
        let got = [
            a.lat_cri,
            a.deadline_offset_ns,
            a.slice_ns,
            a.wait_bucket,
            a.freq_after,
            a.freq_since,
            a.credit_ns,
            a.offset_ns,
            a.vtime_after,
            a.vclock_after,
            a.yield_offset_ns,
            a.timer_needed,
            a.waited_over,
            a.vtime_handoff,
            a.cut_short,
            a.offset_weight,
            a.yield_behind,
            a.handoff_verdict,
            a.share,
            a.cgroup_weight,
        ];
        if want != got {
            mismatches += 1;
            eprintln!("policy mismatch for {a:?}: rust {want:?}, bpf {got:?}");
        }
    }
    if mismatches > 0 {
        bail!(
            "{mismatches} of {} policy cases differ between BPF and Rust",
            cases.len()
        );
    }
    println!("policy check: BPF and Rust agree on {} cases", cases.len());
    check_scans(opts)
}

/// Made-up machines whose preemption scans the probe walks: a 2-socket server of 176 threads
/// (8 LLCs of 22, siblings 88 apart), one of 256 (4 LLCs of 64), and one LLC of 112 threads
/// (a server whose whole socket shares its L3), each with per-LLC and global queues.
fn scan_layouts() -> Vec<(&'static str, Layout)> {
    vec![
        ("2n4l11c2t", Layout::synthetic(2, 4, 11, 2)),
        ("2n2l32c2t", Layout::synthetic(2, 2, 32, 2)),
        ("1n1l56c2t", Layout::synthetic(1, 1, 56, 2)),
    ]
}

/// In the kernel, from every CPU of each made-up machine, consecutive preemption scans (with
/// the domain's own cursor) look at the CPUs the Rust mirror says, only at CPUs of the
/// scanning CPU's domain, and at every one of them within `policy::scans_to_cover` scans.
fn check_scans(opts: &Opts) -> Result<()> {
    let mut runs = 0;
    for (name, layout) in scan_layouts() {
        for queue in [QueueMode::PerLlc, QueueMode::Global] {
            let mut open_object = MaybeUninit::uninit();
            let skel = open_and_load_on(opts, &mut open_object, &layout, queue)
                .with_context(|| format!("loading for a made-up {name} machine"))?;
            let lists = domain_lists(&layout.llcs, queue == QueueMode::Global, layout.nr_cpu_ids);
            for (d, (&first, &n)) in lists.first.iter().zip(&lists.count).enumerate() {
                let domain = &lists.list[first as usize..(first + n) as usize];
                for &start in domain {
                    let pos = lists.pos[start as usize];
                    let mut seen = vec![false; layout.nr_cpu_ids];
                    for _ in 0..policy::scans_to_cover(n) {
                        let mut a = bpf_intf::scan_probe_args {
                            far_from: 0,
                            start: start as i32,
                            cpus: [0; policy::SCAN_MAX as usize],
                        };
                        run_probe(&skel.progs.scan_probe, "scan_probe", &mut a)?;
                        runs += 1;
                        let want: Vec<i32> = (0..policy::SCAN_MAX)
                            .map(|i| match policy::scan_pos(n, i, a.far_from) {
                                k if k < n => domain[((pos + k) % n) as usize] as i32,
                                _ => -1,
                            })
                            .collect();
                        if a.cpus[..] != want[..] {
                            bail!(
                                "{name} {queue:?}: the kernel's scan from CPU {start} (cursor {}) \
                                 looks at {:?}, the Rust mirror at {want:?}",
                                a.far_from,
                                a.cpus
                            );
                        }
                        for &c in a.cpus.iter().filter(|&&c| c >= 0) {
                            if !domain.contains(&(c as u32)) {
                                bail!("{name} {queue:?}: a scan from CPU {start} looked at CPU {c}, outside domain {d}");
                            }
                            seen[c as usize] = true;
                        }
                    }
                    let unseen: Vec<u32> = domain
                        .iter()
                        .copied()
                        .filter(|&c| !seen[c as usize])
                        .collect();
                    if !unseen.is_empty() {
                        bail!(
                            "{name} {queue:?}: {} scans from CPU {start} never looked at {unseen:?}",
                            policy::scans_to_cover(n)
                        );
                    }
                }
            }
        }
        println!(
            "scan check: on a made-up {name} machine ({} CPUs) every scan stays in its domain and consecutive scans from each CPU see all of it, per-LLC and global",
            layout.nr_cpus()
        );
    }
    println!("scan check: BPF and Rust agree on {runs} scans");
    Ok(())
}

/// Run a syscall probe program on `args`, a plain C struct shared with it (bpf_intf), which it
/// reads and writes in place.
fn run_probe<T: Copy>(prog: &libbpf_rs::ProgramMut, name: &str, args: &mut T) -> Result<()> {
    let input = ProgramInput {
        // SAFETY: T is one of bpf_intf's plain C argument structs (Copy, no pointers), and the
        // slice covers exactly it for the duration of the call.
        context_in: Some(unsafe {
            std::slice::from_raw_parts_mut(args as *mut T as *mut u8, std::mem::size_of::<T>())
        }),
        ..Default::default()
    };
    let out = prog
        .test_run(input)
        .with_context(|| format!("running {name}"))?;
    if out.return_value != 0 {
        bail!("{name} returned {}", out.return_value);
    }
    Ok(())
}
