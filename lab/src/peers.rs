//! Peer schedulers from crates.io, installed with `cargo install --root <cache>/peers`.

use anyhow::{bail, Context, Result};
use concord_common::sched::SchedKind;
use std::path::PathBuf;
use std::process::Command;

use crate::util::{cache_dir, progress};

pub fn bin_dir() -> Result<PathBuf> {
    Ok(cache_dir()?.join("peers/bin"))
}

pub fn install(names: &[String]) -> Result<()> {
    let kinds: Vec<SchedKind> = if names.is_empty() {
        SchedKind::ALL
            .into_iter()
            .filter(|k| k.crate_name().is_some())
            .collect()
    } else {
        names
            .iter()
            .map(|n| {
                SchedKind::ALL
                    .into_iter()
                    .find(|k| k.name() == n && k.crate_name().is_some())
                    .with_context(|| format!("'{n}' is not a peer scheduler (lavd, bpfland)"))
            })
            .collect::<Result<_>>()?
    };
    let root = cache_dir()?.join("peers");
    for k in kinds {
        let krate = k.crate_name().unwrap();
        if bin_dir()?.join(k.binary().unwrap()).is_file() {
            progress(&format!("{krate} already installed in {}", root.display()));
            continue;
        }
        progress(&format!("cargo install {krate} (5-6 minutes on 2 cores)"));
        let st = Command::new("cargo")
            .args(["install", "--locked", "--root"])
            .arg(&root)
            .arg(krate)
            .status()
            .context("cargo not found")?;
        if !st.success() {
            bail!("cargo install {krate} failed ({st})");
        }
    }
    Ok(())
}
