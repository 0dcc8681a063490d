//! The guest's initramfs: static busybox and a small /init that mounts the host root (virtio-fs,
//! read-only) with tmpfs over the directories programs write to, mounts the run directory
//! read-write, and hands over to `concord-lab guest` inside a chroot. Built once, cached by the
//! hash of its contents. No kernel modules are needed, so one initramfs serves every kernel.

use anyhow::{bail, Context, Result};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use crate::protocol::MARKER;
use crate::util::cache_dir;

const BUSYBOX: &str = "/bin/busybox";

fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() {{ echo "{MARKER}$*" > /dev/ttyS1; }}
fail() {{ say "fail=$*"; sync; poweroff -f; }}
arg() {{ sed -n "s/.*concord\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }}
RUN=$(arg run)
LAB=$(arg lab)
say stage=mount
mount -t virtiofs -o ro hostroot /newroot || fail "cannot mount the host root over virtio-fs"
# A view of the host root without the tmpfs mounts below, to bring back host paths they hide.
mount --bind /newroot /hostview
for d in tmp run var/tmp var/log boot mnt; do
    [ -d /newroot/$d ] && mount -t tmpfs -o mode=1777 tmpfs /newroot/$d
done
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t debugfs debugfs /newroot/sys/kernel/debug
mount -t tracefs tracefs /newroot/sys/kernel/tracing
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
# Host paths the job needs (the workspace, the lab cache) may live under /tmp and the like.
for p in $(arg keep | tr , ' '); do
    mkdir -p /newroot$p && mount --bind /hostview$p /newroot$p || fail "cannot make $p visible"
done
mkdir -p /newroot$RUN
mount -t virtiofs rundir /newroot$RUN || fail "cannot mount the run directory over virtio-fs"
say stage=runner
chroot /newroot "$LAB" guest "$RUN" </dev/null >/dev/ttyS1 2>&1
say runner-exit=$?
sync
poweroff -f
"#
    )
}

/// Append one newc cpio entry.
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8], ino: u32) {
    let namez = format!("{name}\0");
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0, 0, 1, 0, data.len(), 0, 0, rdev.0, rdev.1, namez.len(), 0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(namez.as_bytes());
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

pub fn build_archive(busybox: &[u8], init: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1;
    for dir in ["bin", "dev", "proc", "sys", "newroot", "hostview", "tmp"] {
        cpio_entry(&mut out, dir, 0o040755, (0, 0), &[], ino);
        ino += 1;
    }
    // The kernel opens /dev/console before /init runs.
    cpio_entry(&mut out, "dev/console", 0o020600, (5, 1), &[], ino);
    cpio_entry(&mut out, "bin/busybox", 0o100755, (0, 0), busybox, ino + 1);
    cpio_entry(&mut out, "init", 0o100755, (0, 0), init.as_bytes(), ino + 2);
    cpio_entry(&mut out, "TRAILER!!!", 0, (0, 0), &[], 0);
    out
}

/// A statically linked busybox: the dynamic one can't run before the host root is mounted.
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16at(54), u16at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 > bytes.len() || u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) != PT_INTERP
    })
}

pub fn ensure() -> Result<PathBuf> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| {
        format!("{BUSYBOX} not found: run scripts/setup-host.sh (installs busybox-static)")
    })?;
    if !is_static_elf(&busybox) {
        bail!("{BUSYBOX} is dynamically linked: apt-get install busybox-static");
    }
    let init = init_script();
    let mut h = DefaultHasher::new();
    busybox.hash(&mut h);
    init.hash(&mut h);
    let path = cache_dir()?.join(format!("initramfs-{:016x}.cpio", h.finish()));
    if !path.exists() {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, build_archive(&busybox, &init))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_archive_is_aligned_and_terminated() {
        let a = build_archive(b"\x7fELFfake", "#!/bin/sh\n");
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&a);
        assert!(
            text.contains("TRAILER!!!") && text.contains("dev/console") && text.contains("init")
        );
        // The console device node is char 5:1.
        let i = text.find("dev/console").unwrap();
        let hdr = &text[i - 110..i];
        assert_eq!(&hdr[14..22], "00002180", "mode 020600");
        assert_eq!(&hdr[78..86], "00000005");
        assert_eq!(&hdr[86..94], "00000001");
    }

    #[test]
    fn init_reports_stages_with_the_shared_marker() {
        let s = init_script();
        assert!(s.contains(&format!("{MARKER}$*")));
        assert!(s.contains("say stage=mount") && s.contains("say stage=runner"));
        // Host paths hidden by the guest's tmpfs mounts are bound back before the run dir.
        let keep = s.find("arg keep").unwrap();
        assert!(
            s.find("--bind /newroot /hostview").unwrap() < s.find("tmpfs -o mode=1777").unwrap()
        );
        assert!(
            s.find("tmpfs -o mode=1777").unwrap() < keep
                && keep < s.find("mount -t virtiofs rundir").unwrap()
        );
    }

    #[test]
    fn detects_dynamic_elf() {
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&own), "test binaries are dynamically linked");
        assert!(!is_static_elf(b"not an elf"));
    }
}
