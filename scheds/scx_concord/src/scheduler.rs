//! Loading and running the BPF side: the kernel's preconditions, the read-only data from the
//! options and the topology, attach, the stats server and the run loop until the kernel or the
//! operator ends it.

use anyhow::{bail, Context, Result};
use crossbeam::channel::RecvTimeoutError;
use libbpf_rs::OpenObject;
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

use crate::config::{CgroupWeights, DeadlineMode, Opts, PinnedMode, QueueMode};
use crate::rules::{self, Rule};
use crate::stats::{self, Snapshot};
use crate::{bpf_intf, domains, BpfSkel, BpfSkelBuilder, SCHEDULER_NAME};
use concord_common::sched::CONCORD_STATS_SOCKET;
use std::collections::HashMap;

/// Refuse clearly when the kernel cannot take us.
pub fn check_kernel() -> Result<()> {
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

pub struct Scheduler<'a> {
    skel: BpfSkel<'a>,
    struct_ops: Option<libbpf_rs::Link>,
    stats_server: Option<StatsServer<u64, Snapshot>>,
    windows: stats::WaitWindows,
    rules: Vec<Rule>,
    /// The cgroup v2 root the rules' cgroup matchers are resolved under, and what was last
    /// written to the BPF side (cgroup id -> rules bits).
    cg_root: Option<std::path::PathBuf>,
    cg_bits: HashMap<u64, u32>,
}

/// Bring the BPF side's cgroup marks (`cg_rule_bits`) to `want`; returns whether any changed
/// (the tasks must then be matched again: rules_gen).
fn sync_cgroup_bits(
    map: &impl libbpf_rs::MapCore,
    have: &mut HashMap<u64, u32>,
    want: HashMap<u64, u32>,
) -> bool {
    let mut changed = false;
    for (id, bits) in &want {
        if have.get(id) != Some(bits) {
            // A full map leaves the cgroup unmarked: its tasks match as if it were not named.
            let _ = map.update(
                &id.to_ne_bytes(),
                &bits.to_ne_bytes(),
                libbpf_rs::MapFlags::ANY,
            );
            changed = true;
        }
    }
    for id in have.keys().filter(|id| !want.contains_key(id)) {
        let _ = map.delete(&id.to_ne_bytes());
        changed = true;
    }
    *have = want;
    changed
}

pub fn open_and_load<'a>(
    opts: &Opts,
    open_object: &'a mut MaybeUninit<OpenObject>,
) -> Result<BpfSkel<'a>> {
    let topo = Topology::new().context("reading the CPU topology")?;
    let layout = domains::Layout::of_topology(&topo, *NR_CPU_IDS);
    open_and_load_on(opts, open_object, &layout, opts.queue)
}

/// Load (not attach) for `layout`, with `queue` for the options' queue mode: the probes load
/// made-up machines in both modes.
pub fn open_and_load_on<'a>(
    opts: &Opts,
    open_object: &'a mut MaybeUninit<OpenObject>,
    layout: &domains::Layout,
    queue: QueueMode,
) -> Result<BpfSkel<'a>> {
    try_set_rlimit_infinity();
    let mut builder = BpfSkelBuilder::default();
    builder.obj_builder.debug(opts.verbose);
    let mut skel = scx_ops_open!(builder, open_object, concord_ops, None)?;
    skel.struct_ops.concord_ops_mut().exit_dump_len = opts.exit_dump_len;
    // scx_utils' scx_ops_open! appended its suffix (crate version, target); ours adds the
    // commit, so that a fleet can tell builds apart in /sys/kernel/sched_ext/root/ops.
    let name = &mut skel.struct_ops.concord_ops_mut().name;
    let room = name.len() - 1;
    name.fill(0);
    for (dst, src) in name.iter_mut().take(room).zip(crate::ops_name().bytes()) {
        *dst = src as _;
    }
    skel.struct_ops.concord_ops_mut().flags = *compat::SCX_OPS_ENQ_EXITING
        | *compat::SCX_OPS_ENQ_LAST
        | *compat::SCX_OPS_ENQ_MIGRATION_DISABLED;
    if opts.partial {
        if *compat::SCX_OPS_SWITCH_PARTIAL == 0 {
            bail!("--partial: this kernel has no SCX_OPS_SWITCH_PARTIAL");
        }
        skel.struct_ops.concord_ops_mut().flags |= *compat::SCX_OPS_SWITCH_PARTIAL;
    }

    let rodata = skel.maps.rodata_data.as_mut().unwrap();
    rodata.nr_cpus = layout.nr_cpu_ids as u32;
    rodata.queue_mode = match queue {
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
    rodata.cgroup_weights = match opts.cgroup_weights {
        CgroupWeights::Hierarchical => bpf_intf::cgroup_weights_mode_CGROUP_WEIGHTS_HIERARCHICAL,
        CgroupWeights::Ignore => bpf_intf::cgroup_weights_mode_CGROUP_WEIGHTS_IGNORE,
    };
    for (dst, r) in rodata.rules.iter_mut().zip(&opts.rules) {
        // SAFETY: the skeleton's type and bindgen's are the same C struct (intf.h), plain
        // integers and byte arrays; transmute checks that their sizes agree.
        *dst = unsafe {
            std::mem::transmute::<bpf_intf::rule, crate::bpf_skel::types::rule>(r.to_bpf())
        };
    }
    rodata.nr_rules = opts.rules.len().min(crate::rules::MAX_RULES) as u32;
    rodata.slice_max_ns = opts.slice_max_us * 1000;
    rodata.slice_min_ns = opts.slice_min_us * 1000;
    rodata.max_wait_ns = opts.max_wait_ms * 1_000_000;
    rodata.debug_error_after_ns = opts.debug_error_after_ms.unwrap_or(0) * 1_000_000;
    if let Some(comm) = &opts.debug_stall_comm {
        for (dst, b) in rodata.debug_stall_comm.iter_mut().zip(comm.bytes()) {
            *dst = b as _;
        }
    }
    // LLC ids from the kernel need not be dense: the layout numbers them in order.
    let max_llcs = bpf_intf::concord_consts_MAX_LLCS as usize;
    let max_cpus = bpf_intf::concord_consts_MAX_CPUS as usize;
    if layout.llcs.len() > max_llcs || layout.nr_cpu_ids > max_cpus {
        bail!(
            "{} LLCs / {} CPUs exceed the supported {max_llcs} / {max_cpus}",
            layout.llcs.len(),
            layout.nr_cpu_ids
        );
    }
    for (dense, (cpus, &node)) in layout.llcs.iter().zip(&layout.llc_node).enumerate() {
        rodata.llc_node[dense] = node;
        for &cpu in cpus {
            rodata.cpu_llc[cpu] = dense as u32;
        }
    }
    rodata.nr_llcs = layout.llcs.len().max(1) as u32;
    let lists = domains::domain_lists(&layout.llcs, queue == QueueMode::Global, max_cpus);
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
        "{SCHEDULER_NAME} {}: {} CPUs, {} LLCs, {} nodes, SMT {}; queue {:?}, pinned queue {:?}, cgroup weights {:?}, slice {}-{} us, max wait {} ms{}",
        *crate::FULL_VERSION,
        layout.nr_cpus(),
        layout.llcs.len(),
        layout.nr_nodes,
        if layout.smt { "on" } else { "off" },
        queue,
        opts.pinned_queue,
        opts.cgroup_weights,
        opts.slice_min_us,
        opts.slice_max_us,
        opts.max_wait_ms,
        if opts.partial {
            "; SCHED_EXT tasks only (--partial)"
        } else {
            ""
        }
    );
    Ok(scx_ops_load!(skel, concord_ops, uei)?)
}

impl<'a> Scheduler<'a> {
    pub fn init(opts: &Opts, open_object: &'a mut MaybeUninit<OpenObject>) -> Result<Self> {
        let mut skel = open_and_load(opts, open_object)?;
        // The rules' cgroups are marked before attach, so tasks match from their first wake-up.
        let cg_root = match opts.rules.iter().find(|r| r.matches.cgroup.is_some()) {
            Some(r) => Some(rules::cgroup2_root().with_context(|| {
                format!(
                    "rule {:?} matches a cgroup path, but no cgroup v2 hierarchy is mounted",
                    r.name
                )
            })?),
            None => None,
        };
        let mut cg_bits = HashMap::new();
        if let Some(root) = &cg_root {
            sync_cgroup_bits(
                &skel.maps.cg_rule_bits,
                &mut cg_bits,
                rules::cgroup_bits(root, &opts.rules),
            );
        }
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
        stats::reset_rule_counters(&skel.maps.rule_counters)?;
        // The stats socket (and the directories created for it) is root's alone: only root
        // may watch the scheduler. The umask is process-wide, so it is set around the bind only.
        // SAFETY: umask(2) has no preconditions.
        let old_umask = unsafe { libc::umask(0o077) };
        let server = StatsServer::new(stats::server_data()).launch();
        // SAFETY: as above.
        unsafe { libc::umask(old_umask) };
        let server = server?;
        if let Some(g) = &opts.stats_group {
            share_stats_socket(g)?;
        }
        let stats_server = Some(server);
        info!("{SCHEDULER_NAME} attached");
        Ok(Self {
            skel,
            struct_ops,
            stats_server,
            windows: stats::WaitWindows::default(),
            rules: opts.rules.clone(),
            cg_root,
            cg_bits,
        })
    }

    /// cgroups come and go (a service restarted gets a new one): mark the rules' cgroups again,
    /// and have every task matched again when the marks changed.
    fn refresh_cgroup_rules(&mut self) {
        let Some(root) = &self.cg_root else {
            return;
        };
        let want = rules::cgroup_bits(root, &self.rules);
        if sync_cgroup_bits(&self.skel.maps.cg_rule_bits, &mut self.cg_bits, want) {
            let bss = self.skel.maps.bss_data.as_mut().unwrap();
            // SAFETY: the field lives in the mmapped .bss for the skeleton's lifetime and is
            // 8-byte aligned; BPF only reads it.
            unsafe { AtomicU64::from_ptr(&mut bss.rules_gen as *mut u64) }
                .fetch_add(1, Ordering::SeqCst);
        }
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
        let rules = stats::sum_rule_counters(&self.skel.maps.rule_counters, &self.rules);
        let bss = self.skel.maps.bss_data.as_ref().unwrap();
        Snapshot {
            rules,
            at: std::time::Instant::now(),
            nr_cpus: *NR_CPU_IDS as u64,
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

    pub fn run(&mut self, shutdown: Arc<AtomicBool>) -> Result<UserExitInfo> {
        let (res_ch, req_ch) = self.stats_server.as_ref().unwrap().channels();
        // Each wake-up of this loop is CPU taken from the tasks we schedule; once a second (as
        // scx_bpfland) is soon enough to notice Ctrl-C or the kernel's exit, and a new cgroup
        // for a rule.
        let mut refreshed = std::time::Instant::now();
        while !shutdown.load(Ordering::Relaxed) && !uei_exited!(&self.skel, uei) {
            match req_ch.recv_timeout(Duration::from_secs(1)) {
                Ok(since) => res_ch.send(self.snapshot(since))?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(e) => Err(e)?,
            }
            if refreshed.elapsed() >= Duration::from_secs(1) {
                self.refresh_cgroup_rules();
                refreshed = std::time::Instant::now();
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

/// Let @group read the statistics: the socket 0660 and its two directories 0750, all root:@group
/// (connecting to a UNIX socket takes write permission on it and search permission on every
/// directory above).
fn share_stats_socket(group: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let gid = crate::config::group_id(group)?;
    let sock = std::path::Path::new(CONCORD_STATS_SOCKET);
    let mut paths = vec![(sock, 0o660)];
    paths.extend(sock.ancestors().skip(1).take(2).map(|d| (d, 0o750)));
    for (p, mode) in paths {
        std::os::unix::fs::chown(p, Some(0), Some(gid))
            .with_context(|| format!("--stats-group {group}: chown {}", p.display()))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("--stats-group {group}: chmod {}", p.display()))?;
    }
    info!("statistics readable by group {group} ({CONCORD_STATS_SOCKET})");
    Ok(())
}
