//! Which scheduler a lab run uses: `eevdf` (no sched_ext scheduler), our `concord`, or a peer
//! installed from crates.io (`lavd`, `bpfland`), each optionally with arguments after a colon:
//! `concord:--pinned-queue shared --queue global`. `concord@PATH` runs another build of
//! scx_concord (an executable at PATH on the host), so two commits can be measured side by side
//! in one interleaved run.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedKind {
    Eevdf,
    Concord,
    Lavd,
    Bpfland,
}

impl SchedKind {
    pub const ALL: [SchedKind; 4] = [
        SchedKind::Eevdf,
        SchedKind::Concord,
        SchedKind::Lavd,
        SchedKind::Bpfland,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SchedKind::Eevdf => "eevdf",
            SchedKind::Concord => "concord",
            SchedKind::Lavd => "lavd",
            SchedKind::Bpfland => "bpfland",
        }
    }

    /// The executable's file name, or None for the kernel's built-in scheduler.
    pub fn binary(self) -> Option<&'static str> {
        match self {
            SchedKind::Eevdf => None,
            SchedKind::Concord => Some("scx_concord"),
            SchedKind::Lavd => Some("scx_lavd"),
            SchedKind::Bpfland => Some("scx_bpfland"),
        }
    }

    /// The name the kernel shows in /sys/kernel/sched_ext/root/ops once attached.
    pub fn ops_name(self) -> Option<&'static str> {
        match self {
            SchedKind::Eevdf => None,
            SchedKind::Concord => Some(CONCORD_OPS_NAME),
            SchedKind::Lavd => Some("lavd"),
            SchedKind::Bpfland => Some("bpfland"),
        }
    }

    /// The release of a peer the lab installs and runs when no `@VERSION` is given: pinned, so
    /// results name what they measured.
    pub fn default_version(self) -> Option<&'static str> {
        match self {
            SchedKind::Lavd | SchedKind::Bpfland => Some("1.1.4"),
            _ => None,
        }
    }

    /// Peers come from crates.io with `cargo install`; concord is built in this workspace.
    pub fn crate_name(self) -> Option<&'static str> {
        match self {
            SchedKind::Lavd => Some("scx_lavd"),
            SchedKind::Bpfland => Some("scx_bpfland"),
            _ => None,
        }
    }
}

/// The sched_ext ops name of scx_concord (also set in the BPF object; a test keeps them equal).
pub const CONCORD_OPS_NAME: &str = "concord";

/// Where scx_concord serves its statistics: scx_stats' default socket for a scheduler, which
/// scx_concord does not move (`--monitor`, `--stats-group` and the lab's checks use it).
pub const CONCORD_STATS_SOCKET: &str = "/var/run/scx/root/stats";

/// scx_concord's defaults: its options take them, and the lab judges waits against them.
pub mod concord_defaults {
    /// --max-wait-ms: the hard wait bound.
    pub const MAX_WAIT_MS: u64 = 40;
    /// --slice-max-us: the longest turn.
    pub const SLICE_MAX_US: u64 = 5000;
    /// --slice-min-us: the shortest turn.
    pub const SLICE_MIN_US: u64 = 500;
    /// The sched_ext watchdog timeout scx_concord asks the kernel for (ops.timeout_ms in its
    /// main.bpf.c; a test in scx_concord keeps the two equal).
    pub const WATCHDOG_MS: u64 = 5000;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedSpec {
    pub kind: SchedKind,
    pub args: Vec<String>,
    /// Another build of scx_concord to run instead of this workspace's (`concord@PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<std::path::PathBuf>,
    /// A peer's release other than its default (`lavd@1.0.17`: scx_lavd before per-CPU queues
    /// for pinned tasks, the design of seed 000's outage; it loads on 7.0.x only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl SchedSpec {
    pub fn eevdf() -> Self {
        Self {
            kind: SchedKind::Eevdf,
            args: vec![],
            bin: None,
            version: None,
        }
    }

    /// The peer release this spec runs (its own or the kind's default); None for ours and EEVDF.
    pub fn peer_version(&self) -> Option<&str> {
        self.version.as_deref().or(self.kind.default_version())
    }

    pub fn parse(s: &str) -> Result<Self> {
        let (name, args) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a)),
            None => (s.trim(), None),
        };
        let (name, at) = match name.split_once('@') {
            Some((n, rest)) if !rest.trim().is_empty() => (n.trim(), Some(rest.trim())),
            Some((n, _)) => bail!(
                "'{n}@' needs a scx_concord executable's path (concord) or a release (peers) after '@'"
            ),
            None => (name, None),
        };
        let Some(kind) = SchedKind::ALL.iter().copied().find(|k| k.name() == name) else {
            let names: Vec<_> = SchedKind::ALL.iter().map(|k| k.name()).collect();
            bail!(
                "unknown scheduler '{name}' (choose one of: {})",
                names.join(", ")
            );
        };
        // Shell quoting, so an argument may hold spaces: `concord:--config '/a b/c.toml'`.
        let args: Vec<String> = match args {
            Some(a) => shlex::split(a).with_context(|| {
                format!("'{s}': unbalanced quotes in the scheduler's arguments")
            })?,
            None => vec![],
        };
        if kind == SchedKind::Eevdf && !args.is_empty() {
            bail!("eevdf is the kernel's own scheduler and takes no arguments");
        }
        let (mut bin, mut version) = (None, None);
        match (kind, at) {
            (_, None) => {}
            (SchedKind::Concord, Some(p)) => bin = Some(std::path::PathBuf::from(p)),
            (SchedKind::Eevdf, Some(_)) => bail!("eevdf is the kernel's own scheduler: no '@'"),
            (_, Some(v)) => {
                let parts: Vec<&str> = v.split('.').collect();
                if parts.len() != 3
                    || parts
                        .iter()
                        .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
                {
                    bail!("'{name}@{v}': a peer takes a release like 1.0.17 after '@'");
                }
                version = Some(v.to_string());
            }
        }
        Ok(Self {
            kind,
            args,
            bin,
            version,
        })
    }

    /// How it is written on a command line and in reports: `concord:--queue global`,
    /// `concord@/tmp/old/scx_concord`.
    pub fn label(&self) -> String {
        let mut l = self.kind.name().to_string();
        if let Some(b) = &self.bin {
            l = format!("{l}@{}", b.display());
        }
        if let Some(v) = &self.version {
            l = format!("{l}@{v}");
        }
        if !self.args.is_empty() {
            // Quoted as parse() reads it back (a NUL byte, which no argv can hold, is left as is).
            let args = shlex::try_join(self.args.iter().map(String::as_str))
                .unwrap_or_else(|_| self.args.join(" "));
            l = format!("{l}:{args}");
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_arguments() {
        assert_eq!(SchedSpec::parse("eevdf").unwrap(), SchedSpec::eevdf());
        let s = SchedSpec::parse("concord:--pinned-queue shared  --queue global").unwrap();
        assert_eq!(s.kind, SchedKind::Concord);
        assert_eq!(s.args, ["--pinned-queue", "shared", "--queue", "global"]);
        assert_eq!(s.label(), "concord:--pinned-queue shared --queue global");
        assert_eq!(SchedSpec::parse(&s.label()).unwrap(), s);
        let q = SchedSpec::parse("concord:--config '/tmp/a b.toml' --stats 1").unwrap();
        assert_eq!(q.args, ["--config", "/tmp/a b.toml", "--stats", "1"]);
        assert_eq!(SchedSpec::parse(&q.label()).unwrap(), q);
        let e = SchedSpec::parse("concord:--config '/tmp/a").unwrap_err();
        assert!(e.to_string().contains("unbalanced quotes"), "{e}");
        assert_eq!(
            SchedSpec::parse("lavd").unwrap().kind.ops_name(),
            Some("lavd")
        );
    }

    #[test]
    fn rejects_unknown_and_misused() {
        assert!(SchedSpec::parse("cfs")
            .unwrap_err()
            .to_string()
            .contains("choose one of"));
        assert!(SchedSpec::parse("eevdf:--x").is_err());
        assert!(SchedSpec::parse("lavd@/tmp/x").is_err());
        assert!(SchedSpec::parse("lavd@1.0").is_err());
        assert!(SchedSpec::parse("eevdf@1.0.0").is_err());
        assert!(SchedSpec::parse("concord@").is_err());
    }

    #[test]
    fn peers_at_pinned_releases() {
        let s = SchedSpec::parse("lavd@1.0.17:--performance").unwrap();
        assert_eq!(s.version.as_deref(), Some("1.0.17"));
        assert_eq!(s.peer_version(), Some("1.0.17"));
        assert_eq!(s.label(), "lavd@1.0.17:--performance");
        assert_eq!(SchedSpec::parse(&s.label()).unwrap(), s);
        assert_eq!(
            SchedSpec::parse("bpfland").unwrap().peer_version(),
            Some("1.1.4")
        );
        assert_eq!(SchedSpec::parse("concord").unwrap().peer_version(), None);
    }

    #[test]
    fn another_concord_build_by_path() {
        let s = SchedSpec::parse("concord@/tmp/old/scx_concord:--queue global").unwrap();
        assert_eq!(s.kind, SchedKind::Concord);
        assert_eq!(
            s.bin.as_deref(),
            Some(std::path::Path::new("/tmp/old/scx_concord"))
        );
        assert_eq!(s.args, ["--queue", "global"]);
        assert_eq!(s.label(), "concord@/tmp/old/scx_concord:--queue global");
        assert_eq!(SchedSpec::parse(&s.label()).unwrap(), s);
    }
}
