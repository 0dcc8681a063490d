//! What the operator asks for: the command line and the `--config` file (the same settings,
//! typed alike), validated before anything is loaded.

use anyhow::{anyhow, bail, Context, Result};
use clap::{parser::ValueSource, ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::Path;

use crate::bpf_intf;
use concord_common::sched::concord_defaults::{
    MAX_WAIT_MS, SLICE_MAX_US, SLICE_MIN_US, WATCHDOG_MS,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueMode {
    /// One deadline-ordered queue per last-level cache.
    PerLlc,
    /// One queue for the whole machine.
    Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinnedMode {
    /// Each CPU has its own queue for tasks that can only run there (the fix).
    PerCpu,
    /// Pinned tasks wait in the shared queue (the scx_lavd design behind the Erlang outage).
    Shared,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadlineMode {
    /// Offset from recent behaviour only, capped at half --max-wait-ms (the fix).
    Capped,
    /// scx_lavd's model at the time of the outage: a greedy penalty for tasks that used more
    /// CPU than average and no cap tied to the wait bound (reproduces the feedback loop).
    Greedy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupWeights {
    /// cpu.weight shares CPU between sibling cgroups, nested, as the kernel's fair class does.
    Hierarchical,
    /// Tasks weigh by their nice value alone, whatever their cgroup.
    Ignore,
}

/// scx_concord: latency-criticality aware virtual deadlines, with pinned tasks first-class.
///
/// Tasks that wake often or wake others get earlier deadlines; tasks that can run on one CPU
/// only wait in that CPU's own queue; every queued task has a hard wait bound.
#[derive(Debug, Parser)]
#[command(version = crate::FULL_VERSION.as_str(), args_override_self = true)]
pub struct Opts {
    /// Read options from a TOML file: the flags' names without the dashes, typed as the flags
    /// are, e.g. `pinned-queue = "per-cpu"`, `max-wait-ms = 40`, `verbose = true`, and
    /// per-workload rules as `[[rule]]` tables (docs/design.md). Flags on the command line win
    /// over the file; an unknown key or a bad value is refused with the file's line.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Queue for tasks that may run on several CPUs.
    #[arg(long, value_enum, default_value_t = QueueMode::PerLlc)]
    pub queue: QueueMode,

    /// Queue for tasks that can run on one CPU only.
    #[arg(long, value_enum, default_value_t = PinnedMode::PerCpu)]
    pub pinned_queue: PinnedMode,

    /// How deadlines are computed (the priority model).
    #[arg(long, value_enum, default_value_t = DeadlineMode::Capped)]
    pub deadline: DeadlineMode,

    /// How cgroups' cpu.weight counts.
    #[arg(long, value_enum, default_value_t = CgroupWeights::Hierarchical)]
    pub cgroup_weights: CgroupWeights,

    /// Longest time slice, in microseconds (shrinks when tasks wait).
    #[arg(long, default_value_t = SLICE_MAX_US)]
    pub slice_max_us: u64,

    /// Shortest time slice, in microseconds; also the least a task runs before a tick preempts it.
    #[arg(long, default_value_t = SLICE_MIN_US)]
    pub slice_min_us: u64,

    /// Hard wait bound, in milliseconds: a task queued longer is dispatched before deadline
    /// order and ticks preempt for it. At most a tenth of the 5 s watchdog.
    #[arg(long, default_value_t = MAX_WAIT_MS)]
    pub max_wait_ms: u64,

    /// Schedule only tasks whose policy is SCHED_EXT (the kernel's SCX_OPS_SWITCH_PARTIAL);
    /// every other task stays with the kernel's own scheduler. The low-risk rollout: put one
    /// service under scx_concord with `concord-ext -- CMD` or `concord-ext --pid PID`.
    #[arg(long)]
    pub partial: bool,

    /// Print statistics every SECS seconds while running.
    #[arg(long, value_name = "SECS")]
    pub stats: Option<f64>,

    /// Print statistics of an already running scx_concord every SECS seconds; loads nothing.
    #[arg(long, value_name = "SECS")]
    pub monitor: Option<f64>,

    /// How --monitor and --stats print: text for people, JSON lines (one object per interval)
    /// or OpenMetrics text (one exposition per interval) for exporters.
    #[arg(long, value_enum, default_value_t = MonitorFormat::Text)]
    pub monitor_format: MonitorFormat,

    /// Let members of GROUP read the statistics (the stats socket, /var/run/scx/root/stats,
    /// and its directories get that group, socket mode 0660): an exporter then needs no root.
    /// Without it the socket is root's alone.
    #[arg(long, value_name = "GROUP")]
    pub stats_group: Option<String>,

    /// Describe the statistics and exit.
    #[arg(long)]
    pub help_stats: bool,

    /// Print the man page (roff, section 8) and exit: `scx_concord --man > scx_concord.8`.
    #[arg(long, hide_short_help = true)]
    pub man: bool,

    /// Print a completion script for SHELL and exit.
    #[arg(long, value_name = "SHELL", hide_short_help = true)]
    pub completions: Option<clap_complete::Shell>,

    /// Load the BPF program without attaching, run the policy arithmetic in the kernel on
    /// test inputs, compare with the Rust version, walk the wake-up preemption's CPU scans on
    /// made-up 112- to 256-CPU machines, and exit (non-zero on any difference or a CPU never
    /// looked at).
    #[arg(long)]
    pub check_policy: bool,

    /// Debug: make the BPF side raise an error MS milliseconds after loading (tests the
    /// failure path: the exit reason is printed and the exit code is non-zero).
    #[arg(long, value_name = "MS", hide_short_help = true)]
    pub debug_error_after_ms: Option<u64>,

    /// Debug: never dispatch tasks named NAME (their comm), so that the kernel's watchdog
    /// ejects the scheduler (tests the stall path: the stall reason is printed, the exit code
    /// is non-zero, the task then runs under the kernel's own scheduler).
    #[arg(long, value_name = "NAME", hide_short_help = true)]
    pub debug_stall_comm: Option<String>,

    /// Exit debug dump buffer length (0: kernel default).
    #[arg(long, default_value_t = 0)]
    pub exit_dump_len: u32,

    /// Verbose output, including libbpf messages.
    #[arg(short, long)]
    pub verbose: bool,

    /// Per-workload rules: the --config file's [[rule]] tables (src/rules.rs, docs/design.md).
    #[arg(skip)]
    pub rules: Vec<crate::rules::Rule>,
}

impl Opts {
    /// Every bad value is refused here, before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        let floor_us = crate::policy::SLICE_FLOOR_NS / 1000;
        if self.slice_min_us < floor_us {
            bail!(
                "--slice-min-us {} is too short (at least {floor_us} us)",
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
        if let Some(g) = &self.stats_group {
            group_id(g)?;
        }
        if self.debug_error_after_ms == Some(0) {
            bail!("--debug-error-after-ms must be at least 1");
        }
        crate::rules::validate(&self.rules, self.slice_max_us)?;
        if let Some(c) = &self.debug_stall_comm {
            let max = bpf_intf::concord_consts_STALL_COMM_LEN as usize - 1;
            if c.is_empty() || c.len() > max || c.contains('\0') {
                bail!("--debug-stall-comm takes a task name of 1 to {max} bytes");
            }
        }
        Ok(())
    }
}

/// How statistics are printed (--monitor-format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MonitorFormat {
    /// Lines for people.
    Text,
    /// One JSON object per interval, on one line.
    Json,
    /// OpenMetrics text exposition, one per interval (ends with `# EOF`).
    Openmetrics,
}

/// The id of group @name, or an error naming it.
pub fn group_id(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| anyhow!("--stats-group {name:?}: not a group name"))?;
    // SAFETY: getgrnam(3) takes a NUL-terminated string and returns NULL or a pointer to a
    // static struct that we read at once, before any other call could overwrite it.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        bail!("--stats-group {name}: no such group");
    }
    // SAFETY: non-NULL, as checked.
    Ok(unsafe { (*gr).gr_gid })
}

/// The settings a `--config` file may hold: every flag that configures a running scheduler,
/// under the flag's name and with the flag's type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    queue: Option<QueueMode>,
    pinned_queue: Option<PinnedMode>,
    deadline: Option<DeadlineMode>,
    cgroup_weights: Option<CgroupWeights>,
    slice_max_us: Option<u64>,
    slice_min_us: Option<u64>,
    max_wait_ms: Option<u64>,
    stats: Option<f64>,
    monitor_format: Option<MonitorFormat>,
    stats_group: Option<String>,
    exit_dump_len: Option<u32>,
    verbose: Option<bool>,
    partial: Option<bool>,
    rule: Option<Vec<crate::rules::Rule>>,
}

impl FileConfig {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}: cannot read it", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .unwrap_or(1);
            anyhow!(
                "--config {} line {line}: {}",
                path.display(),
                e.message().trim().replace('\n', "; ")
            )
        })
    }

    /// Sets every setting the file holds, except those `keep(flag id)` says to leave alone.
    fn apply(&self, opts: &mut Opts, keep: impl Fn(&str) -> bool) {
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field {
                    if !keep(stringify!($field)) {
                        opts.$field = v;
                    }
                }
            )*};
        }
        set!(
            queue,
            pinned_queue,
            deadline,
            cgroup_weights,
            slice_max_us,
            slice_min_us,
            max_wait_ms,
            monitor_format,
            exit_dump_len,
            verbose,
            partial
        );
        // settings whose flag is itself optional
        macro_rules! set_some {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field {
                    if !keep(stringify!($field)) {
                        opts.$field = Some(v.clone());
                    }
                }
            )*};
        }
        set_some!(stats, stats_group);
        if let Some(r) = &self.rule {
            opts.rules = r.clone();
        }
    }
}

/// The command line's definition, for the man page and completions.
pub fn command() -> clap::Command {
    Opts::command()
}

fn matches_to_opts(m: &ArgMatches) -> Opts {
    Opts::from_arg_matches(m).unwrap_or_else(|e| e.exit())
}

/// The command line, over a `--config` file's settings (the flags given win). Usage errors
/// exit as clap does; a bad file is an error naming the file.
pub fn parse_opts(argv: Vec<OsString>) -> Result<Opts> {
    let matches = Opts::command()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| e.exit());
    let mut opts = matches_to_opts(&matches);
    let Some(path) = opts.config.clone() else {
        return Ok(opts);
    };
    let file = FileConfig::read(&path)?;
    // The file over the defaults alone first, so that a bad value in it is blamed on the file.
    let prog = argv
        .first()
        .cloned()
        .unwrap_or_else(|| "scx_concord".into());
    let mut alone = matches_to_opts(&Opts::command().get_matches_from([prog]));
    file.apply(&mut alone, |_| false);
    alone
        .validate()
        .map_err(|e| anyhow!("--config {}: {e:#}", path.display()))?;
    file.apply(&mut opts, |id| {
        matches.value_source(id) == Some(ValueSource::CommandLine)
    });
    Ok(opts)
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
        let o = with_config("stats = 2\nslice-max-us = 4000\n", &["--stats", "0.5"]).unwrap();
        assert_eq!((o.stats, o.slice_max_us), (Some(0.5), 4000));
        // group 0 exists everywhere: root
        let o = with_config(
            "stats-group = \"root\"\nmonitor-format = \"openmetrics\"\n",
            &["--monitor-format", "json"],
        )
        .unwrap();
        assert_eq!(o.stats_group.as_deref(), Some("root"));
        assert_eq!(
            o.monitor_format,
            MonitorFormat::Json,
            "the command line wins"
        );
        let e = with_config("stats-group = \"no such group\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("no such group"), "{e}");
        for (bad, says) in [
            ("queue = \"per-cpu\"\n", "line 1: unknown variant `per-cpu`"),
            (
                "verbose = true\nmax-wait-ms = \"soon\"\n",
                "line 2: invalid type",
            ),
            ("max-wait-ms = 0\n", "--max-wait-ms must be at least 1"),
            ("bogus = 1\n", "line 1: unknown field `bogus`"),
            (
                "[[rule]]\nname = \"x\"\nmatch = { exe = \"/a\" }\n",
                "line 3: unknown field `exe`",
            ),
            (
                "[[rule]]\nname = \"x\"\nmatch = { comm = \"a\" }\nslice-us = 99999\n",
                "rule 1 (\"x\"): slice-us 99999",
            ),
            ("queue = [1]\n", "line 1: wanted string"),
            ("queue = \n", "line 1"),
        ] {
            let e = with_config(bad, &[]).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let o = with_config(
            "[[rule]]\nname = \"erlang\"\nmatch = { pcomm = \"beam.smp\" }\nclass = \"latency\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(o.rules.len(), 1);
        assert_eq!(o.rules[0].class, crate::rules::Class::Latency);
        // The example shipped for operators (and run by the lab's erlang-cgroups) stays valid.
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../dist/examples/erlang.toml"
        );
        let o = parse_opts(vec![
            "scx_concord".into(),
            "--config".into(),
            example.into(),
        ])
        .unwrap();
        o.validate().unwrap();
        assert_eq!(o.rules.len(), 2);
        let missing = parse_opts(vec![
            "scx_concord".into(),
            "--config".into(),
            "/nonexistent/concord.toml".into(),
        ]);
        assert!(missing.unwrap_err().to_string().contains("cannot read it"));
    }

    #[test]
    fn man_page_and_completions_cover_every_option() {
        let mut man = Vec::new();
        clap_mangen::Man::new(command().name("scx_concord"))
            .section("8")
            .render(&mut man)
            .unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(man.contains(".TH scx_concord 8"), "{man}");
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command(),
            "scx_concord",
            &mut bash,
        );
        let bash = String::from_utf8(bash).unwrap();
        for a in command().get_arguments().filter_map(|a| a.get_long()) {
            assert!(man.contains(&a.replace('-', "\\-")), "man page lacks --{a}");
            assert!(
                bash.contains(&format!("--{a}")),
                "bash completion lacks --{a}"
            );
        }
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
}
