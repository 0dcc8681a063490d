//! concord-lab: boot sched_ext kernels under QEMU TCG and run schedulers and workloads inside.

mod charts;
mod compare;
mod guest;
mod initramfs;
mod kernel;
mod meters;
mod outage;
mod peers;
mod protocol;
mod reliability;
mod sched_proc;
mod util;
mod vm;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use concord_common::sched::{SchedKind, SchedSpec};
use concord_common::topology::TopologySpec;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::{exit, Job};
use crate::util::{exe_dir, progress};

/// concord-lab: run sched_ext schedulers (scx_concord and peers) in a QEMU TCG guest on a
/// Debian sched_ext kernel, with the host's root filesystem shared read-only.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Resolve, download (once) and print the path of a sched_ext kernel image.
    Kernel {
        /// Kernel series (7.3, 7.0) or `latest`; 7.1 and 7.2 are refused (broken scx BTF).
        #[arg(long, default_value = kernel::DEFAULT_SERIES)]
        kernel: String,
    },
    /// Boot a VM, optionally start a scheduler, run CMD as root, exit with CMD's exit code.
    ///
    /// Exit codes besides CMD's: 124 timeout, 125 lab error (boot, topology, scheduler did not
    /// attach), 126 the scheduler failed while CMD ran, 127 CMD not found, 130 interrupted.
    Vm(VmArgs),
    /// Install peer schedulers (scx_lavd, scx_bpfland) from crates.io into the lab cache, at
    /// pinned releases: `lavd` is scx_lavd 1.1.4, `lavd@1.0.17` the release before per-CPU
    /// queues for pinned tasks (the outage's design; it loads on kernel 7.0.x only).
    Peers {
        /// Which peers, NAME or NAME@RELEASE (default: every peer at its default release).
        names: Vec<String>,
    },
    /// Every scenario (wakeup, interactive, throughput, outage) under EEVDF, scx_concord and
    /// the peers, repeated and interleaved, with the wasted-core and BPF-cost meters. Writes
    /// report.md, report.html (one file, pictures inside), results.json (for `diff`), latency
    /// CDFs and per-CPU heat maps as SVG.
    Compare(compare::CompareArgs),
    /// Compare two `compare` results.json files: B's medians against A's, flagging changes
    /// beyond the run-to-run spread.
    Diff { a: PathBuf, b: PathBuf },
    /// The reliability suite: the upstream stress recipe in every queue mode, starvation and
    /// fairness, affinity, CPU hotplug, crash and exit paths, bad input, access and resource
    /// use, each with a verdict and its evidence. Exit 0 only when every check passes.
    Reliability(reliability::ReliabilityArgs),
    /// Print the LLC / NUMA / SMT groups this machine reports (used inside the guest).
    Topology,
    /// Guest-side runner, started by the VM's /init. Not for direct use.
    #[command(hide = true)]
    Guest { run_dir: PathBuf },
    /// Guest side of one compare run (started by `compare` inside the VM). Not for direct use.
    #[command(hide = true)]
    CompareRun { params: String },
    /// Guest side of reliability checks (started by `reliability` inside the VM).
    #[command(hide = true)]
    RelGuest { params: String },
}

#[derive(Args)]
struct VmArgs {
    /// Kernel series (7.3, 7.0, latest) or a path to a bzImage (with `config` beside it).
    #[arg(long, default_value = kernel::DEFAULT_SERIES)]
    kernel: String,
    /// Number of vCPUs on one node and one LLC (ignored with --topology).
    #[arg(long, default_value_t = 2, conflicts_with = "topology")]
    cpus: u32,
    /// NUMA nodes, LLCs per node, cores per LLC, threads per core: `2n2l2c2t` or
    /// `numa=2,llc=2,cores=2,smt=2` (omitted parts are 1). Checked inside the guest.
    #[arg(long)]
    topology: Option<String>,
    /// Guest memory, e.g. 2G or 1536M.
    #[arg(long, default_value = "2G")]
    mem: String,
    /// Kill the VM after this many seconds (whole run, boot included).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Scheduler: eevdf (none), concord, lavd or bpfland, with arguments after a colon:
    /// `concord:--pinned-queue shared`; `concord@PATH` runs another scx_concord build.
    #[arg(long, default_value = "eevdf")]
    sched: String,
    /// Seconds to wait for the scheduler to attach (scx_lavd takes ~45 s under TCG).
    #[arg(long, default_value_t = 120)]
    sched_timeout: u64,
    /// QEMU -icount shift=N: guest time from instruction counts, one host thread for all vCPUs
    /// (slower, but host load no longer shows in guest timings).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=10))]
    icount: Option<u32>,
    /// The command to run in the guest, after `--`.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

pub fn parse_mem_mib(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--mem '{s}' is not a size like 2G or 1536M"))?;
    let mib = n * mul;
    if !(256..=16384).contains(&mib) {
        bail!("--mem {s}: choose between 256M and 16G");
    }
    Ok(mib)
}

/// `--scheds`: each parsed, none twice, every binary present (scx_concord built, peers
/// installed), so a bad list fails before any VM boots.
pub(crate) fn parse_scheds(list: &[String]) -> Result<Vec<SchedSpec>> {
    let scheds = list
        .iter()
        .map(|s| SchedSpec::parse(s))
        .collect::<Result<Vec<_>>>()?;
    if scheds.is_empty() {
        bail!("--scheds names no scheduler");
    }
    let mut labels: Vec<String> = scheds.iter().map(|s| s.label()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() != scheds.len() {
        bail!("--scheds names a scheduler twice");
    }
    for s in &scheds {
        crate::sched_binary(s)?;
    }
    Ok(scheds)
}

pub(crate) fn sched_binary(spec: &SchedSpec) -> Result<Option<PathBuf>> {
    let Some(bin) = spec.kind.binary() else {
        return Ok(None);
    };
    let path = match (&spec.bin, spec.kind) {
        (Some(other), _) => {
            // Another build, e.g. of an earlier commit; the guest sees the host's files as they are.
            let p = std::fs::canonicalize(other)
                .with_context(|| format!("{}: no such scx_concord build", other.display()))?;
            if !p.is_file() {
                bail!("{} is not an executable file", p.display());
            }
            return Ok(Some(p));
        }
        (None, SchedKind::Concord) => exe_dir()?.join(bin),
        (None, _) => peers::binary_of(spec)?.context("a peer without a release")?,
    };
    if !path.is_file() {
        match spec.kind {
            SchedKind::Concord => bail!(
                "{} not built: run `cargo build --release` (or `make build`)",
                path.display()
            ),
            _ => bail!(
                "{} not installed: run `concord-lab peers {}`",
                path.display(),
                match &spec.version {
                    Some(v) => format!("{}@{v}", spec.kind.name()),
                    None => spec.kind.name().to_string(),
                }
            ),
        }
    }
    Ok(Some(path))
}

/// Directories first on the guest's PATH: our builds (scx_concord, workloads). Schedulers are
/// started by their full path.
pub(crate) fn guest_path_prepend() -> Result<Vec<PathBuf>> {
    Ok(vec![exe_dir()?])
}

fn vm(args: VmArgs) -> Result<i32> {
    // Validate everything before anything starts.
    let topology = match &args.topology {
        Some(t) => TopologySpec::parse(t)?,
        None => {
            if args.cpus == 0 || args.cpus > concord_common::topology::MAX_LAB_CPUS {
                bail!(
                    "--cpus must be between 1 and {}",
                    concord_common::topology::MAX_LAB_CPUS
                );
            }
            TopologySpec::flat(args.cpus)
        }
    };
    let mem_mib = parse_mem_mib(&args.mem)?;
    topology.check_memory(mem_mib)?;
    if args.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let sched = SchedSpec::parse(&args.sched)?;
    let sched_bin = sched_binary(&sched)?;
    vm::check_host()?;
    let kernel = kernel::select(&args.kernel)?;
    let job = Job {
        cmd: args.cmd,
        sched,
        sched_binary: sched_bin,
        sched_attach_timeout_s: args.sched_timeout,
        topology,
        kernel_config: kernel.config.clone(),
        path_prepend: guest_path_prepend()?,
    };
    progress(&format!(
        "booting {} ({} CPUs, topology {topology}, {} MiB), scheduler {}",
        kernel.release,
        topology.nr_cpus(),
        mem_mib,
        job.sched.label()
    ));
    let out = vm::run(vm::VmConfig {
        kernel,
        topology,
        mem_mib,
        timeout: Duration::from_secs(args.timeout),
        job,
        stream: true,
        icount: args.icount,
    })?;
    if let Some(s) = out.boot_to_cmd_secs {
        progress(&format!("command started {s:.1} s after QEMU started"));
    }
    if let Some(r) = &out.result {
        if let Some(s) = &r.sched {
            progress(&format!("scheduler {}", s.summary()));
        }
        for p in &r.klog_problems {
            progress(&format!("guest kernel log: {p}"));
        }
    }
    progress(&format!(
        "run directory (kernel log, outputs): {}",
        out.run_dir.display()
    ));
    if let Some(m) = &out.message {
        eprintln!("concord-lab: error: {m}");
    }
    Ok(out.exit_code)
}

fn real_main() -> Result<i32> {
    util::install_signal_handlers()?;
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Kernel { kernel } => {
            let k = kernel::select(&kernel)?;
            println!("{}", k.image.display());
            match &k.config {
                Some(c) => progress(&format!("{}: config {} has sched_ext", k.release, c.display())),
                None => progress(&format!(
                    "{}: Debian ships no config for this kernel; sched_ext is checked when the VM boots",
                    k.release
                )),
            }
            Ok(0)
        }
        Cmd::Vm(args) => vm(args),
        Cmd::Peers { names } => {
            peers::install(&names)?;
            Ok(0)
        }
        Cmd::Topology => {
            let g = guest::observed_groups()?;
            println!(
                "llcs: {:?}\nnodes: {:?}\nsmt: {:?}",
                g.llcs, g.nodes, g.smt_cores
            );
            Ok(0)
        }
        Cmd::Compare(args) => compare::run(args),
        Cmd::Diff { a, b } => {
            let (a, b) = (compare::report::load(&a)?, compare::report::load(&b)?);
            println!("{}", compare::diff::diff(&a, &b));
            Ok(0)
        }
        Cmd::CompareRun { params } => {
            compare::guest::main(
                &serde_json::from_str(&params).context("compare-run: bad parameters")?,
            )?;
            Ok(0)
        }
        Cmd::Reliability(args) => reliability::run(args),
        Cmd::RelGuest { params } => reliability::harness::main(
            &serde_json::from_str(&params).context("rel-guest: bad parameters")?,
        ),
        Cmd::Guest { run_dir } => {
            guest::main(&run_dir)?;
            Ok(0)
        }
    }
}

fn main() {
    let code = match real_main() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("concord-lab: error: {e:#}");
            exit::LAB_ERROR
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem_mib("2G").unwrap(), 2048);
        assert_eq!(parse_mem_mib("1536M").unwrap(), 1536);
        assert_eq!(parse_mem_mib("512").unwrap(), 512);
        assert!(parse_mem_mib("2T").is_err());
        assert!(parse_mem_mib("64M").is_err());
    }
}
