//! Debian kernels with sched_ext: resolve the newest package of a series by name, download it
//! with apt, extract the image (and config, where Debian ships one) into the cache.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{cache_dir, progress, run_checked};

/// Series the lab refuses: their BTF gives the scx kfuncs an extra `aux` argument, and
/// scx_utils-based schedulers (ours and the peers) refuse to load on them.
const BROKEN_SERIES: &[(u32, u32)] = &[(7, 1), (7, 2)];

/// The lab's two supported series: the newest first (default), then an older one.
pub const DEFAULT_SERIES: &str = "7.3";
pub const SECOND_SERIES: &str = "7.0";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub Vec<u32>);

impl KernelVersion {
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Option<Vec<u32>> = s.split('.').map(|p| p.parse().ok()).collect();
        parts.filter(|p| p.len() >= 2).map(KernelVersion)
    }
    fn series(&self) -> (u32, u32) {
        (self.0[0], self.0[1])
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.0.iter().map(u32::to_string).collect();
        write!(f, "{}", s.join("."))
    }
}

/// What to download for one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPackages {
    pub version: KernelVersion,
    /// `<version>+deb13-amd64`, the kernel release string (`uname -r`).
    pub release: String,
    pub image_pkg: String,
    /// `linux-base-…` carries the config; Debian does not ship it for every version.
    pub config_pkg: Option<String>,
}

const FLAVOUR: &str = "+deb13-amd64";

/// Pick the newest kernel of `series` ("7.3", or "latest" for the newest usable) from the
/// package names apt knows. Unsigned images are preferred (same kernel, no signature wrapper).
pub fn resolve(series: &str, package_names: &[String]) -> Result<KernelPackages> {
    let wanted = if series == "latest" {
        None
    } else {
        let v = KernelVersion::parse(series)
            .filter(|v| v.0.len() == 2)
            .with_context(|| format!("kernel series '{series}' is not MAJOR.MINOR (e.g. {DEFAULT_SERIES}) or 'latest'"))?;
        if BROKEN_SERIES.contains(&v.series()) {
            bail!(
                "kernel series {series} is unusable: its BTF breaks scx_utils-based schedulers \
                 (\"malformed scx kfunc prototype\"); use {DEFAULT_SERIES} or {SECOND_SERIES}"
            );
        }
        Some(v.series())
    };
    let mut best: Option<(KernelVersion, bool, String)> = None;
    for name in package_names {
        let (rest, unsigned) = if let Some(r) = name.strip_prefix("linux-binary-unsigned-") {
            (r, true)
        } else if let Some(r) = name.strip_prefix("linux-binary-") {
            (r, false)
        } else {
            continue;
        };
        let Some(ver) = rest.strip_suffix(FLAVOUR).and_then(KernelVersion::parse) else {
            continue;
        };
        if ver.0.len() != 3 || BROKEN_SERIES.contains(&ver.series()) {
            continue;
        }
        if wanted.is_some_and(|w| w != ver.series()) {
            continue;
        }
        let better = match &best {
            None => true,
            Some((bv, bu, _)) => (&ver, unsigned) > (bv, *bu),
        };
        if better {
            best = Some((ver, unsigned, name.clone()));
        }
    }
    let Some((version, _, image_pkg)) = best else {
        bail!(
            "no Debian kernel package for series {series}: run scripts/setup-host.sh \
             (it adds trixie-backports and runs apt-get update)"
        );
    };
    let release = format!("{version}{FLAVOUR}");
    let base = format!("linux-base-{release}");
    let config_pkg = package_names.contains(&base).then_some(base);
    Ok(KernelPackages {
        version,
        release,
        image_pkg,
        config_pkg,
    })
}

/// A kernel ready to boot, as recorded in the cache.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kernel {
    pub release: String,
    pub image: PathBuf,
    /// The kernel's config, when Debian ships it; the guest gets it as /boot/config-<release>.
    pub config: Option<PathBuf>,
    pub packages: Vec<String>,
}

/// Config options a kernel needs for the lab: sched_ext itself, BTF for CO-RE, virtio-fs and
/// the serial console the lab talks over.
const REQUIRED_CONFIG: &[&str] = &[
    "CONFIG_SCHED_CLASS_EXT",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_BPF_SYSCALL",
    "CONFIG_VIRTIO_FS",
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_DEVTMPFS",
];

pub fn check_config(text: &str) -> Result<()> {
    let missing: Vec<&str> = REQUIRED_CONFIG
        .iter()
        .copied()
        .filter(|opt| !text.lines().any(|l| l.trim() == format!("{opt}=y")))
        .collect();
    if !missing.is_empty() {
        bail!("kernel config lacks {} (needs =y); this kernel can't run sched_ext schedulers in the lab", missing.join(", "));
    }
    Ok(())
}

fn apt_package_names() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for prefix in ["linux-binary-", "linux-base-"] {
        let out = Command::new("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .context(
                "apt-cache not found: this lab needs Debian's apt (run scripts/setup-host.sh)",
            )?;
        names.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from),
        );
    }
    Ok(names)
}

/// Resolve and fetch the kernel of `series`, or reuse the cached one.
pub fn fetch(series: &str) -> Result<Kernel> {
    let pkgs = resolve(series, &apt_package_names()?)?;
    let dir = cache_dir()?.join("kernels").join(&pkgs.release);
    let meta = dir.join("kernel.json");
    if let Ok(text) = std::fs::read_to_string(&meta) {
        if let Ok(k) = serde_json::from_str::<Kernel>(&text) {
            if k.image.exists() {
                return Ok(k);
            }
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dl = dir.join("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    let mut names = vec![pkgs.image_pkg.clone()];
    names.extend(pkgs.config_pkg.clone());
    progress(&format!("downloading {}", names.join(" ")));
    let mut cmd = Command::new("apt-get");
    cmd.arg("download").args(&names).current_dir(&dl);
    run_checked(
        &mut cmd,
        "apt-get download (is the network to Debian's archive up? run scripts/setup-host.sh)",
    )?;
    progress("extracting");
    let x = dl.join("x");
    for entry in std::fs::read_dir(&dl)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "deb") {
            run_checked(
                Command::new("dpkg-deb").arg("-x").arg(&p).arg(&x),
                "dpkg-deb -x",
            )?;
        }
    }
    let modules = x.join("usr/lib/modules").join(&pkgs.release);
    let image_src = [
        modules.join("vmlinuz.unsigned"),
        x.join("boot").join(format!("vmlinuz-{}", pkgs.release)),
    ]
    .into_iter()
    .find(|p| p.exists())
    .with_context(|| {
        format!(
            "package {} has no kernel image where expected",
            pkgs.image_pkg
        )
    })?;
    let image = dir.join("vmlinuz");
    std::fs::copy(&image_src, &image)?;
    let config = match modules.join("config") {
        c if c.exists() => {
            let text = std::fs::read_to_string(&c)?;
            check_config(&text).with_context(|| format!("kernel {}", pkgs.release))?;
            let dst = dir.join("config");
            std::fs::copy(&c, &dst)?;
            Some(dst)
        }
        _ => None,
    };
    std::fs::remove_dir_all(&dl)?;
    let k = Kernel {
        release: pkgs.release.clone(),
        image,
        config,
        packages: names,
    };
    std::fs::write(&meta, serde_json::to_string_pretty(&k)?)?;
    Ok(k)
}

/// A kernel image given by path: its config is read from `config` beside it, if present.
pub fn from_path(image: &Path) -> Result<Kernel> {
    if !image.is_file() {
        bail!("kernel image {} does not exist", image.display());
    }
    let config = image.with_file_name("config");
    let config = if config.exists() {
        check_config(&std::fs::read_to_string(&config)?)
            .with_context(|| format!("{}", config.display()))?;
        Some(config)
    } else {
        None
    };
    Ok(Kernel {
        release: "custom".into(),
        image: image.to_path_buf(),
        config,
        packages: vec![],
    })
}

/// `--kernel` takes a series (`7.3`, `7.0`, `latest`) or a path to a bzImage.
pub fn select(spec: &str) -> Result<Kernel> {
    if spec.contains('/') {
        from_path(Path::new(spec))
    } else {
        fetch(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const APT: &[&str] = &[
        "linux-binary-7.0.4+deb13-amd64",
        "linux-binary-7.0.13+deb13-amd64",
        "linux-binary-7.0.9+deb13-amd64",
        "linux-binary-7.2.12+deb13-amd64",
        "linux-binary-unsigned-7.2.12+deb13-amd64",
        "linux-binary-7.3.4+deb13-amd64",
        "linux-binary-unsigned-7.3.4+deb13-amd64",
        "linux-binary-7.3.4+deb13-cloud-amd64",
        "linux-base-7.3.4+deb13-amd64",
        "linux-base-7.2.12+deb13-amd64",
    ];

    #[test]
    fn newest_of_series_with_numeric_ordering() {
        let k = resolve("7.0", &names(APT)).unwrap();
        assert_eq!(
            k.version.to_string(),
            "7.0.13",
            "7.0.13 > 7.0.9 numerically"
        );
        assert_eq!(k.image_pkg, "linux-binary-7.0.13+deb13-amd64");
        assert_eq!(k.config_pkg, None, "no linux-base for 7.0.13");
        assert_eq!(k.release, "7.0.13+deb13-amd64");
    }

    #[test]
    fn prefers_unsigned_and_finds_config() {
        let k = resolve("7.3", &names(APT)).unwrap();
        assert_eq!(k.image_pkg, "linux-binary-unsigned-7.3.4+deb13-amd64");
        assert_eq!(
            k.config_pkg.as_deref(),
            Some("linux-base-7.3.4+deb13-amd64")
        );
    }

    #[test]
    fn latest_skips_broken_series() {
        let mut apt = names(APT);
        apt.retain(|n| !n.contains("7.3."));
        let k = resolve("latest", &apt).unwrap();
        assert_eq!(k.version.to_string(), "7.0.13");
        assert_eq!(
            resolve("latest", &names(APT)).unwrap().version.to_string(),
            "7.3.4"
        );
    }

    #[test]
    fn refuses_broken_unknown_and_malformed() {
        assert!(resolve("7.2", &names(APT))
            .unwrap_err()
            .to_string()
            .contains("unusable"));
        assert!(resolve("6.1", &names(APT))
            .unwrap_err()
            .to_string()
            .contains("setup-host.sh"));
        assert!(resolve("7", &names(APT))
            .unwrap_err()
            .to_string()
            .contains("MAJOR.MINOR"));
        assert!(resolve("7.3.4", &names(APT)).is_err());
    }

    #[test]
    fn config_check_names_what_is_missing() {
        let good = REQUIRED_CONFIG
            .iter()
            .map(|o| format!("{o}=y\n"))
            .collect::<String>();
        assert!(check_config(&good).is_ok());
        let bad = good.replace(
            "CONFIG_SCHED_CLASS_EXT=y",
            "# CONFIG_SCHED_CLASS_EXT is not set",
        );
        let err = check_config(&bad).unwrap_err().to_string();
        assert!(
            err.contains("CONFIG_SCHED_CLASS_EXT") && !err.contains("CONFIG_VIRTIO_FS"),
            "{err}"
        );
    }
}
