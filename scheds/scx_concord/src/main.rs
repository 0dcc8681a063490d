//! scx_concord: options → read-only BPF data → load → attach → run loop (stats, Ctrl-C,
//! exit reason) → restart when the kernel asks (CPU hotplug). The BPF side decides; see
//! src/bpf/main.bpf.c for the policy.

mod bpf_skel;
mod domains;
pub use bpf_skel::*;
pub mod bpf_intf;
mod policy;
mod stats;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use crossbeam::channel::RecvTimeoutError;
use libbpf_rs::{OpenObject, ProgramInput};
use log::{info, warn};
use scx_stats::prelude::*;
use scx_utils::{
    compat, scx_ops_attach, scx_ops_load, scx_ops_open, try_set_rlimit_infinity, uei_exited,
    uei_report, ScxExitKind, Topology, UserExitInfo, NR_CPU_IDS,
};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stats::Snapshot;

const SCHEDULER_NAME: &str = "scx_concord";
use concord_common::sched::concord_defaults::{
    MAX_WAIT_MS, SLICE_MAX_US, SLICE_MIN_US, WATCHDOG_MS,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum QueueMode {
    /// One deadline-ordered queue per last-level cache.
    PerLlc,
    /// One queue for the whole machine.
    Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PinnedMode {
    /// Each CPU has its own queue for tasks that can only run there (the fix).
    PerCpu,
    /// Pinned tasks wait in the shared queue (the scx_lavd design behind the Erlang outage).
    Shared,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DeadlineMode {
    /// Offset from recent behaviour only, capped at half --max-wait-ms (the fix).
    Capped,
    /// scx_lavd's model at the time of the outage: a greedy penalty for tasks that used more
    /// CPU than average and no cap tied to the wait bound (reproduces the feedback loop).
    Greedy,
}

/// scx_concord: latency-criticality aware virtual deadlines, with pinned tasks first-class.
///
/// Tasks that wake often or wake others get earlier deadlines; tasks that can run on one CPU
/// only wait in that CPU's own queue; every queued task has a hard wait bound.
#[derive(Debug, Parser)]
#[command(version, args_override_self = true)]
struct Opts {
    /// Read options from a TOML file: the flags' names without the dashes, e.g.
    /// `pinned-queue = "per-cpu"`, `max-wait-ms = 40`, `verbose = true`. Flags on the command
    /// line win over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    /// Queue for tasks that may run on several CPUs.
    #[arg(long, value_enum, default_value_t = QueueMode::PerLlc)]
    queue: QueueMode,

    /// Queue for tasks that can run on one CPU only.
    #[arg(long, value_enum, default_value_t = PinnedMode::PerCpu)]
    pinned_queue: PinnedMode,

    /// How deadlines are computed (the priority model).
    #[arg(long, value_enum, default_value_t = DeadlineMode::Capped)]
    deadline: DeadlineMode,

    /// Longest time slice, in microseconds (shrinks when tasks wait).
    #[arg(long, default_value_t = SLICE_MAX_US)]
    slice_max_us: u64,

    /// Shortest time slice, in microseconds; also the least a task runs before a tick preempts it.
    #[arg(long, default_value_t = SLICE_MIN_US)]
    slice_min_us: u64,

    /// Hard wait bound, in milliseconds: a task queued longer is dispatched before deadline
    /// order and ticks preempt for it. At most a tenth of the 5 s watchdog.
    #[arg(long, default_value_t = MAX_WAIT_MS)]
    max_wait_ms: u64,

    /// Print statistics every SECS seconds while running.
    #[arg(long, value_name = "SECS")]
    stats: Option<f64>,

    /// Print statistics of an already running scx_concord every SECS seconds; loads nothing.
    #[arg(long, value_name = "SECS")]
    monitor: Option<f64>,

    /// Describe the statistics and exit.
    #[arg(long)]
    help_stats: bool,

    /// Load the BPF program without attaching, run the policy arithmetic in the kernel on
    /// test inputs, compare with the Rust version, and exit (non-zero on any difference).
    #[arg(long)]
    check_policy: bool,

    /// Debug: make the BPF side raise an error MS milliseconds after loading (tests the
    /// failure path: the exit reason is printed and the exit code is non-zero).
    #[arg(long, value_name = "MS", hide_short_help = true)]
    debug_error_after_ms: Option<u64>,

    /// Debug: never dispatch tasks named NAME (their comm), so that the kernel's watchdog
    /// ejects the scheduler (tests the stall path: the stall reason is printed, the exit code
    /// is non-zero, the task then runs under the kernel's own scheduler).
    #[arg(long, value_name = "NAME", hide_short_help = true)]
    debug_stall_comm: Option<String>,

    /// Exit debug dump buffer length (0: kernel default).
    #[arg(long, default_value_t = 0)]
    exit_dump_len: u32,

    /// Verbose output, including libbpf messages.
    #[arg(short, long)]
    verbose: bool,
}

impl Opts {
    /// Every bad value is refused here, before anything is loaded.
    fn validate(&self) -> Result<()> {
        if self.slice_min_us < 50 {
            bail!(
                "--slice-min-us {} is too short (at least 50 us)",
                self.slice_min_us
            );
        }
        if self.slice_max_us > 100_000 {
            bail!(
                "--slice-max-us {} is too long (at most 100000 us)",
                self.slice_max_us
            );
        }
        if self.slice_min_us > self.slice_max_us {
            bail!(
                "--slice-min-us {} is larger than --slice-max-us {}",
                self.slice_min_us,
                self.slice_max_us
            );
        }
        if self.max_wait_ms == 0 {
            bail!("--max-wait-ms must be at least 1");
        }
        if self.max_wait_ms > WATCHDOG_MS / 10 {
            bail!(
                "--max-wait-ms {} is too close to the {WATCHDOG_MS} ms sched_ext watchdog (at most {})",
                self.max_wait_ms,
                WATCHDOG_MS / 10
            );
        }
        if self.max_wait_ms * 1000 < self.slice_max_us {
            bail!(
                "--max-wait-ms {} is shorter than one slice (--slice-max-us {})",
                self.max_wait_ms,
                self.slice_max_us
            );
        }
        for (name, v) in [("--stats", self.stats), ("--monitor", self.monitor)] {
            if let Some(s) = v {
                if !(s.is_finite() && s > 0.0) {
                    bail!("{name} takes a positive number of seconds");
                }
            }
        }
        if self.debug_error_after_ms == Some(0) {
            bail!("--debug-error-after-ms must be at least 1");
        }
        if let Some(c) = &self.debug_stall_comm {
            let max = bpf_intf::concord_consts_STALL_COMM_LEN as usize - 1;
            if c.is_empty() || c.len() > max || c.contains('\0') {
                bail!("--debug-stall-comm takes a task name of 1 to {max} bytes");
            }
        }
        Ok(())
    }
}

/// Settings a --config file may hold (every flag that configures a running scheduler).
const CONFIG_KEYS: &[&str] = &[
    "queue",
    "pinned-queue",
    "deadline",
    "slice-max-us",
    "slice-min-us",
    "max-wait-ms",
    "stats",
    "exit-dump-len",
    "verbose",
];

/// The flags a --config file stands for, in the file's order.
fn config_args(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read it", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("--config {}: not valid TOML", path.display()))?;
    let mut args = Vec::new();
    for (key, value) in table {
        if !CONFIG_KEYS.contains(&key.as_str()) {
            bail!(
                "--config {}: unknown setting '{key}' (known: {})",
                path.display(),
                CONFIG_KEYS.join(", ")
            );
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) if key == "verbose" => {
                if b {
                    args.push(format!("--{key}"));
                }
                continue;
            }
            other => bail!(
                "--config {}: '{key}' has the wrong type ({})",
                path.display(),
                other.type_str()
            ),
        };
        args.push(format!("--{key}"));
        args.push(value);
    }
    Ok(args)
}

/// Command line, with a --config file's settings in front of the flags given (which win).
fn parse_opts(argv: Vec<std::ffi::OsString>) -> Result<Opts> {
    let cli = Opts::try_parse_from(&argv).unwrap_or_else(|e| e.exit());
    let Some(path) = &cli.config else {
        return Ok(cli);
    };
    let from_file = config_args(path)?;
    let prog = argv
        .first()
        .cloned()
        .unwrap_or_else(|| SCHEDULER_NAME.into());
    // The file alone first, so that a bad value in it is blamed on the file.
    Opts::try_parse_from(std::iter::once(prog.clone()).chain(from_file.iter().map(Into::into)))
        .map_err(|e| {
            anyhow::anyhow!(
                "--config {}: {}",
                path.display(),
                e.to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
            )
        })?;
    let merged = std::iter::once(prog)
        .chain(from_file.into_iter().map(Into::into))
        .chain(argv.into_iter().skip(1));
    Ok(Opts::try_parse_from(merged).unwrap_or_else(|e| e.exit()))
}

/// Refuse clearly when the kernel cannot take us.
fn check_kernel() -> Result<()> {
    let state = std::path::Path::new("/sys/kernel/sched_ext/state");
    if !state.exists() {
        bail!("this kernel has no sched_ext (CONFIG_SCHED_CLASS_EXT): nothing to attach to");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("loading a sched_ext scheduler needs root");
    }
    let s = std::fs::read_to_string(state).unwrap_or_default();
    if s.trim() != "disabled" {
        let ops = std::fs::read_to_string("/sys/kernel/sched_ext/root/ops").unwrap_or_default();
        bail!(
            "another sched_ext scheduler is active (state {}, ops '{}'): stop it first",
            s.trim(),
            ops.trim()
        );
    }
    Ok(())
}

struct Scheduler<'a> {
    skel: BpfSkel<'a>,
    struct_ops: Option<libbpf_rs::Link>,
    stats_server: Option<StatsServer<u64, Snapshot>>,
    windows: stats::WaitWindows,
}

fn open_and_load<'a>(
    opts: &Opts,
    open_object: &'a mut MaybeUninit<OpenObject>,
) -> Result<BpfSkel<'a>> {
    try_set_rlimit_infinity();
    let topo = Topology::new().context("reading the CPU topology")?;
    let mut builder = BpfSkelBuilder::default();
    builder.obj_builder.debug(opts.verbose);
    let mut skel = scx_ops_open!(builder, open_object, concord_ops, None)?;
    skel.struct_ops.concord_ops_mut().exit_dump_len = opts.exit_dump_len;
    // scx_utils appends a build suffix to the ops name; users and the lab look for plain
    // `concord` in /sys/kernel/sched_ext/root/ops (the version is in our log instead).
    let name = &mut skel.struct_ops.concord_ops_mut().name;
    name.fill(0);
    for (dst, src) in name
        .iter_mut()
        .zip(concord_common::sched::CONCORD_OPS_NAME.bytes())
    {
        *dst = src as _;
    }
    skel.struct_ops.concord_ops_mut().flags = *compat::SCX_OPS_ENQ_EXITING
        | *compat::SCX_OPS_ENQ_LAST
        | *compat::SCX_OPS_ENQ_MIGRATION_DISABLED;

    let rodata = skel.maps.rodata_data.as_mut().unwrap();
    rodata.nr_cpus = *NR_CPU_IDS as u32;
    rodata.queue_mode = match opts.queue {
        QueueMode::PerLlc => bpf_intf::queue_mode_QUEUE_PER_LLC,
        QueueMode::Global => bpf_intf::queue_mode_QUEUE_GLOBAL,
    };
    rodata.pinned_mode = match opts.pinned_queue {
        PinnedMode::PerCpu => bpf_intf::pinned_mode_PINNED_PER_CPU,
        PinnedMode::Shared => bpf_intf::pinned_mode_PINNED_SHARED,
    };
    rodata.deadline_mode = match opts.deadline {
        DeadlineMode::Capped => bpf_intf::deadline_mode_DEADLINE_CAPPED,
        DeadlineMode::Greedy => bpf_intf::deadline_mode_DEADLINE_GREEDY,
    };
    rodata.slice_max_ns = opts.slice_max_us * 1000;
    rodata.slice_min_ns = opts.slice_min_us * 1000;
    rodata.max_wait_ns = opts.max_wait_ms * 1_000_000;
    rodata.debug_error_after_ns = opts.debug_error_after_ms.unwrap_or(0) * 1_000_000;
    if let Some(comm) = &opts.debug_stall_comm {
        for (dst, b) in rodata.debug_stall_comm.iter_mut().zip(comm.bytes()) {
            *dst = b as _;
        }
    }
    // LLC ids from the kernel need not be dense: number them in order.
    let max_llcs = bpf_intf::concord_consts_MAX_LLCS as usize;
    let max_cpus = bpf_intf::concord_consts_MAX_CPUS as usize;
    if topo.all_llcs.len() > max_llcs || *NR_CPU_IDS > max_cpus {
        bail!(
            "{} LLCs / {} CPUs exceed the supported {max_llcs} / {max_cpus}",
            topo.all_llcs.len(),
            *NR_CPU_IDS
        );
    }
    for (dense, llc) in topo.all_llcs.values().enumerate() {
        rodata.llc_node[dense] = llc.node_id as u32;
        for cpu in llc.all_cpus.keys() {
            rodata.cpu_llc[*cpu] = dense as u32;
        }
    }
    rodata.nr_llcs = topo.all_llcs.len().max(1) as u32;
    let llc_cpus: Vec<Vec<usize>> = topo
        .all_llcs
        .values()
        .map(|l| l.all_cpus.keys().copied().collect())
        .collect();
    let lists = domains::domain_lists(&llc_cpus, opts.queue == QueueMode::Global, max_cpus);
    for (i, &cpu) in lists.list.iter().enumerate().take(max_cpus) {
        rodata.domain_cpu_list[i] = cpu;
    }
    // Slices count waiters per CPU of the queue's domain: an LLC, or all CPUs (global queue).
    for (d, (&first, &count)) in lists
        .first
        .iter()
        .zip(&lists.count)
        .enumerate()
        .take(max_llcs)
    {
        rodata.domain_first[d] = first;
        rodata.domain_cpus[d] = count.max(1);
    }
    rodata.cpu_domain_pos[..max_cpus].copy_from_slice(&lists.pos[..max_cpus]);
    info!(
        "{SCHEDULER_NAME} {}: {} CPUs, {} LLCs, {} nodes, SMT {}; queue {:?}, pinned queue {:?}, slice {}-{} us, max wait {} ms",
        env!("CARGO_PKG_VERSION"),
        topo.all_cpus.len(),
        topo.all_llcs.len(),
        topo.nodes.len(),
        if topo.smt_enabled { "on" } else { "off" },
        opts.queue,
        opts.pinned_queue,
        opts.slice_min_us,
        opts.slice_max_us,
        opts.max_wait_ms
    );
    Ok(scx_ops_load!(skel, concord_ops, uei)?)
}

impl<'a> Scheduler<'a> {
    fn init(opts: &Opts, open_object: &'a mut MaybeUninit<OpenObject>) -> Result<Self> {
        let mut skel = open_and_load(opts, open_object)?;
        let struct_ops = Some(scx_ops_attach!(skel, concord_ops)?);
        // Waits measured while the kernel switched every task over (it runs them in bypass
        // mode for tens of ms under TCG) are the kernel's, not our decisions: start counting
        // once attached.
        let bss = skel.maps.bss_data.as_mut().unwrap();
        bss.wait_max_ns = [0; stats::NR_KINDS];
        bss.wait_win_ns = [0; stats::NR_KINDS];
        bss.wait_max_pid = [0; stats::NR_KINDS];
        bss.wait_max_cpu = [0; stats::NR_KINDS];
        bss.wait_max_nr_cpus = [0; stats::NR_KINDS];
        stats::reset_counters(&skel.maps.counters)?;
        // The stats socket (and the directories created for it) is root's alone: only root
        // may watch the scheduler. The umask is process-wide, so it is set around the bind only.
        // SAFETY: umask(2) has no preconditions.
        let old_umask = unsafe { libc::umask(0o077) };
        let server = StatsServer::new(stats::server_data()).launch();
        // SAFETY: as above.
        unsafe { libc::umask(old_umask) };
        let stats_server = Some(server?);
        info!("{SCHEDULER_NAME} attached");
        Ok(Self {
            skel,
            struct_ops,
            stats_server,
            windows: stats::WaitWindows::default(),
        })
    }

    /// A snapshot for a client whose previous one was `since` (0: none).
    fn snapshot(&mut self, since: u64) -> Snapshot {
        let bss = self.skel.maps.bss_data.as_mut().unwrap();
        let mut taken = [0; stats::NR_KINDS];
        for (t, w) in taken.iter_mut().zip(bss.wait_win_ns.iter_mut()) {
            // SAFETY: the field lives in the mmapped .bss for the skeleton's lifetime and is
            // 8-byte aligned; BPF updates it only with atomic compare-and-swap.
            *t = unsafe { AtomicU64::from_ptr(w as *mut u64) }.swap(0, Ordering::SeqCst);
        }
        let seq = self.windows.close(taken);
        let win_ns = self.windows.since(since).unwrap_or(bss.wait_max_ns);
        let summed = stats::sum_counters(&self.skel.maps.counters);
        let bss = self.skel.maps.bss_data.as_ref().unwrap();
        Snapshot {
            seq,
            win_ns,
            stats: summed.stats,
            hist: summed.wait_hist,
            max_ns: bss.wait_max_ns,
            max_pid: bss.wait_max_pid,
            max_cpu: bss.wait_max_cpu,
            max_nr_cpus: bss.wait_max_nr_cpus,
        }
    }

    fn run(&mut self, shutdown: Arc<AtomicBool>) -> Result<UserExitInfo> {
        let (res_ch, req_ch) = self.stats_server.as_ref().unwrap().channels();
        // Each wake-up of this loop is CPU taken from the tasks we schedule; once a second (as
        // scx_bpfland) is soon enough to notice Ctrl-C or the kernel's exit.
        while !shutdown.load(Ordering::Relaxed) && !uei_exited!(&self.skel, uei) {
            match req_ch.recv_timeout(Duration::from_secs(1)) {
                Ok(since) => res_ch.send(self.snapshot(since))?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(e) => Err(e)?,
            }
        }
        let _ = self.struct_ops.take();
        let kind = self.skel.maps.data_data.as_ref().unwrap().uei.kind;
        match uei_report!(&self.skel, uei) {
            // SysRq-S is an operator pulling the emergency brake, not a failure: reported, and
            // exit 0, so that a service manager restarting failed schedulers leaves it off.
            Err(e) if kind == ScxExitKind::SysRq as i32 => {
                warn!("{e}: stopped by the operator");
                Ok(UserExitInfo::default())
            }
            r => r,
        }
    }
}

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
            for &w in &[1u64, 100, 10_000] {
                for &(n, wait) in &[
                    (0u64, 0u64),
                    (3, 2_500),
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
                        deadline_delta_ns: 0,
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
                    });
                }
            }
        }
    }
    cases
}

fn check_policy(opts: &Opts) -> Result<()> {
    let mut open_object = MaybeUninit::uninit();
    let skel = open_and_load(opts, &mut open_object)?;
    let (smin, smax) = (opts.slice_min_us * 1000, opts.slice_max_us * 1000);
    let cases = policy_cases();
    let mut mismatches = 0;
    for mut a in cases.iter().copied() {
        let input = ProgramInput {
            // SAFETY: policy_probe_args is a plain C struct shared with the BPF program.
            context_in: Some(unsafe {
                std::slice::from_raw_parts_mut(
                    &mut a as *mut _ as *mut u8,
                    std::mem::size_of_val(&a),
                )
            }),
            ..Default::default()
        };
        let out = skel
            .progs
            .policy_probe
            .test_run(input)
            .context("running policy_probe")?;
        if out.return_value != 0 {
            bail!("policy_probe returned {}", out.return_value);
        }
        let lc = policy::lat_cri(a.wake_freq, a.waker_freq);
        let want = [
            lc,
            policy::deadline_delta(
                a.avg_runtime_ns,
                a.weight,
                lc,
                smin,
                smax,
                opts.max_wait_ms * 1_000_000 / 2,
            ),
            policy::slice(
                a.nr_waiting % 5,
                a.nr_waiting,
                a.domain_cpus,
                a.weight,
                smin,
                smax,
            ),
            policy::wait_bucket(a.wait_ns),
            policy::freq_update(a.wake_freq, a.wait_ns),
            policy::freq_since(a.wake_freq, a.wait_ns),
            policy::service_credit(a.vtime, a.vclock, smax, a.avg_runtime_ns, smin),
            policy::offset_with_lag(
                a.deadline_delta_ns,
                a.vtime,
                a.vclock,
                smax,
                opts.max_wait_ms * 1_000_000 / 2,
            ),
            policy::vtime_after_run(a.vtime, a.wait_ns, a.weight, a.vclock, smax),
            policy::clock_after_start(a.vclock, a.vtime, smax),
            policy::yield_offset(a.deadline_delta_ns, smax, opts.max_wait_ms * 1_000_000 / 2),
            policy::timer_needed(
                a.nr_waiting % 5,
                a.nr_waiting,
                a.domain_cpus,
                a.weight,
                a.wait_ns,
                opts.max_wait_ms * 1_000_000 / 2,
            ) as u64,
            policy::waited_over(a.vtime, a.vclock, a.wait_ns) as u64,
        ];
        let got = [
            a.lat_cri,
            a.deadline_delta_ns,
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
    Ok(())
}

fn real_main() -> Result<()> {
    let opts = parse_opts(std::env::args_os().collect())?;
    opts.validate()?;
    if opts.help_stats {
        stats::server_data().describe_meta(&mut std::io::stdout(), None)?;
        return Ok(());
    }
    simplelog::TermLogger::init(
        if opts.verbose {
            simplelog::LevelFilter::Debug
        } else {
            simplelog::LevelFilter::Info
        },
        simplelog::ConfigBuilder::new()
            .set_time_level(simplelog::LevelFilter::Error)
            .set_location_level(simplelog::LevelFilter::Off)
            .set_target_level(simplelog::LevelFilter::Off)
            .set_thread_level(simplelog::LevelFilter::Off)
            .build(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    )?;

    let shutdown = Arc::new(AtomicBool::new(false));
    let sd = shutdown.clone();
    ctrlc::set_handler(move || sd.store(true, Ordering::Relaxed))
        .context("setting the Ctrl-C handler")?;

    if let Some(intv) = opts.monitor {
        return stats::monitor(Duration::from_secs_f64(intv), shutdown);
    }
    check_kernel()?;
    if opts.check_policy {
        return check_policy(&opts);
    }
    if let Some(intv) = opts.stats {
        let sd = shutdown.clone();
        std::thread::spawn(move || {
            if let Err(e) = stats::monitor(Duration::from_secs_f64(intv), sd) {
                warn!("stats monitor stopped: {e}");
            }
        });
    }

    let mut open_object = MaybeUninit::uninit();
    loop {
        let mut sched = Scheduler::init(&opts, &mut open_object)?;
        let uei = sched.run(shutdown.clone())?;
        if uei.should_restart() && !shutdown.load(Ordering::Relaxed) {
            info!("the kernel asked for a restart (CPU hotplug?): reloading with the current topology");
            continue;
        }
        break;
    }
    Ok(())
}

/// Errors are one line (no backtrace noise, whatever RUST_BACKTRACE says) and exit 1.
fn main() {
    if let Err(e) = real_main() {
        eprintln!("scx_concord: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Opts> {
        let o = Opts::try_parse_from(std::iter::once("scx_concord").chain(args.iter().copied()))?;
        o.validate()?;
        Ok(o)
    }

    fn with_config(text: &str, args: &[&str]) -> Result<Opts> {
        let path = std::env::temp_dir().join(format!(
            "concord-config-test-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let mut argv = vec!["scx_concord".into(), "--config".into(), path.clone().into()];
        argv.extend(args.iter().map(Into::into));
        let r = parse_opts(argv).and_then(|o| o.validate().map(|_| o));
        std::fs::remove_file(&path).unwrap();
        r
    }

    #[test]
    fn config_files_set_options_and_flags_win() {
        let o = with_config(
            "queue = \"global\"\nmax-wait-ms = 100\nverbose = true\n",
            &["--max-wait-ms", "60"],
        )
        .unwrap();
        assert_eq!(o.queue, QueueMode::Global);
        assert_eq!(o.max_wait_ms, 60, "the command line wins");
        assert!(o.verbose);
        for (bad, says) in [
            ("queue = \"per-cpu\"\n", "per-cpu"),
            ("max-wait-ms = \"soon\"\n", "soon"),
            ("max-wait-ms = 0\n", "--max-wait-ms must be at least 1"),
            ("bogus = 1\n", "unknown setting 'bogus'"),
            ("queue = [1]\n", "wrong type"),
            ("queue = \n", "not valid TOML"),
        ] {
            let e = with_config(bad, &[]).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let missing = parse_opts(vec![
            "scx_concord".into(),
            "--config".into(),
            "/nonexistent/concord.toml".into(),
        ]);
        assert!(missing.unwrap_err().to_string().contains("cannot read it"));
    }

    #[test]
    fn defaults_are_valid() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.queue, o.pinned_queue),
            (QueueMode::PerLlc, PinnedMode::PerCpu)
        );
        assert!(
            o.max_wait_ms * 1000 >= o.slice_max_us * 4,
            "the bound leaves room for a few slices"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["--queue", "per-cpu"][..],
            &["--pinned-queue", "lavd"],
            &["--slice-max-us", "0"],
            &["--slice-min-us", "10"],
            &["--slice-min-us", "6000"],
            &["--slice-max-us", "-5"],
            &["--max-wait-ms", "0"],
            &["--max-wait-ms", "30000"],
            &["--max-wait-ms", "1", "--slice-max-us", "5000"],
            &["--stats", "0"],
            &["--stats", "nan"],
            &["--debug-error-after-ms", "0"],
            &["--bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&[
            "--queue",
            "global",
            "--pinned-queue",
            "shared",
            "--max-wait-ms",
            "100"
        ])
        .is_ok());
    }

    #[test]
    fn ops_name_matches_the_lab() {
        let src = include_str!("bpf/main.bpf.c");
        assert!(src.contains(&format!(
            ".name\t\t\t= \"{}\"",
            concord_common::sched::CONCORD_OPS_NAME
        )));
        assert!(src.contains(&format!(".timeout_ms\t\t= {WATCHDOG_MS}")));
    }
}
