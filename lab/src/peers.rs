//! Peer schedulers from crates.io at pinned releases, each installed once with
//! `cargo install --locked --version V --root <cache>/peers/<crate>-<V>`.

use anyhow::{bail, Context, Result};
use concord_common::sched::{SchedKind, SchedSpec};
use std::path::PathBuf;
use std::process::Command;

use crate::util::{cache_dir, progress};

fn root_of(krate: &str, version: &str) -> Result<PathBuf> {
    Ok(cache_dir()?.join(format!("peers/{krate}-{version}")))
}

/// Where a peer spec's executable lives once installed (None for ours and EEVDF).
pub fn binary_of(spec: &SchedSpec) -> Result<Option<PathBuf>> {
    let (Some(krate), Some(bin), Some(v)) = (
        spec.kind.crate_name(),
        spec.kind.binary(),
        spec.peer_version(),
    ) else {
        return Ok(None);
    };
    Ok(Some(root_of(krate, v)?.join("bin").join(bin)))
}

/// `concord-lab peers [lavd] [bpfland@1.1.4] ...`: install what is missing (default: every peer
/// at its default release).
pub fn install(names: &[String]) -> Result<()> {
    let specs: Vec<SchedSpec> = if names.is_empty() {
        SchedKind::ALL
            .into_iter()
            .filter(|k| k.crate_name().is_some())
            .map(|k| SchedSpec::parse(k.name()))
            .collect::<Result<_>>()?
    } else {
        names
            .iter()
            .map(|n| {
                let s = SchedSpec::parse(n)?;
                if s.kind.crate_name().is_none() || !s.args.is_empty() {
                    bail!("'{n}' is not a peer scheduler (lavd, bpfland, optionally @RELEASE)");
                }
                Ok(s)
            })
            .collect::<Result<_>>()?
    };
    for s in specs {
        let (krate, v) = (s.kind.crate_name().unwrap(), s.peer_version().unwrap());
        let root = root_of(krate, v)?;
        if binary_of(&s)?.is_some_and(|b| b.is_file()) {
            progress(&format!(
                "{krate} {v} already installed in {}",
                root.display()
            ));
            continue;
        }
        progress(&format!(
            "cargo install {krate} {v} (5-6 minutes on 2 cores)"
        ));
        let st = Command::new("cargo")
            .args(["install", "--locked", "--version", v, "--root"])
            .arg(&root)
            .arg(krate)
            .status()
            .context("cargo not found")?;
        if !st.success() {
            bail!("cargo install {krate} --version {v} failed ({st})");
        }
    }
    Ok(())
}
