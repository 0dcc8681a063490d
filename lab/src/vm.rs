//! Boot a kernel under QEMU TCG with the host's root filesystem shared read-only over
//! virtio-fs, run the lab's guest runner inside, stream the command's output, return its result.
//!
//! Wiring: ttyS0 is the guest kernel console (saved to `console.log`), ttyS1 carries the
//! command's stdout/stderr and the lab's marker lines (QEMU's stdout, read by a thread here).
//! Two virtiofsd daemons serve `/` read-only and the run directory read-write; the guest mounts
//! the latter at the same path, so files the guest writes there are the host's at once.

use anyhow::{bail, Context, Result};
use concord_common::topology::TopologySpec;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::initramfs;
use crate::kernel::Kernel;
use crate::protocol::{self, exit, GuestResult, Job, MARKER};
use crate::util::{cache_dir, die_with_parent, interrupted, is_root, which};

pub struct VmConfig {
    pub kernel: Kernel,
    pub topology: TopologySpec,
    pub mem_mib: u64,
    pub timeout: Duration,
    pub job: Job,
    /// Echo the command's output to our stdout as it arrives.
    pub stream: bool,
    /// QEMU -icount shift=N: guest time from instruction counts (one host thread for all
    /// vCPUs; slower, but the guest's clock no longer follows the noisy host's).
    pub icount: Option<u32>,
}

/// Steps of a vCPU thread's host run delay over 10 ms while the command ran (`HostWaits`).
pub const HOST_WAITS_FILE: &str = "host-vcpu-waits.txt";

pub struct VmOutcome {
    pub exit_code: i32,
    pub result: Option<GuestResult>,
    pub run_dir: PathBuf,
    /// Seconds from QEMU start to the command starting in the guest.
    pub boot_to_cmd_secs: Option<f64>,
    pub message: Option<String>,
    /// The longest a QEMU vCPU thread waited for a host CPU while the command ran (ms, host
    /// schedstat; None when the threads were not found). See `HostWaits`.
    pub host_vcpu_wait_max_ms: Option<f64>,
}

/// How long QEMU's vCPU threads wait for a host CPU. Under TCG a vCPU whose host thread waits
/// is a guest CPU that runs nothing while guest time goes on: from inside, every task there
/// waited that long, under any scheduler. The host adds a thread's wait to its schedstat
/// run_delay when it runs again, so one long wait is one step of run_delay between two polls
/// (short waits inside one poll interval add up, so a step is an upper bound of the longest).
/// Steps over 10 ms go to `host-vcpu-waits.txt` of the run directory with their time since the
/// command started, to set beside a long wait seen in the guest.
struct HostWaits {
    qemu_pid: u32,
    /// (schedstat path, thread name, last run_delay in ns)
    threads: Vec<(PathBuf, String, u64)>,
    max_step_ns: u64,
    log: Vec<String>,
}

impl HostWaits {
    fn new(qemu_pid: u32) -> Self {
        Self {
            qemu_pid,
            threads: Vec::new(),
            max_step_ns: 0,
            log: Vec::new(),
        }
    }

    fn run_delay(path: &Path) -> Option<u64> {
        std::fs::read_to_string(path)
            .ok()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// One poll; `since_cmd` is None before the command started (nothing is counted then).
    fn poll(&mut self, since_cmd: Option<f64>) {
        if self.threads.is_empty() {
            // QEMU names its vCPU threads "CPU n/TCG" (-name debug-threads=on), and "ALL
            // CPUs/TCG" for the one thread of -icount; they appear once the machine is built.
            let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.qemu_pid)) else {
                return;
            };
            for t in dir.flatten() {
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                if comm.contains("/TCG") {
                    let path = t.path().join("schedstat");
                    let d = Self::run_delay(&path).unwrap_or(0);
                    self.threads.push((path, comm.trim().to_string(), d));
                }
            }
            return;
        }
        for (path, name, last) in &mut self.threads {
            let Some(d) = Self::run_delay(path) else {
                continue;
            };
            let step = d.saturating_sub(*last);
            *last = d;
            let Some(t) = since_cmd else {
                continue;
            };
            self.max_step_ns = self.max_step_ns.max(step);
            if step > 10_000_000 {
                self.log
                    .push(format!("{t:.3} {:.1} {name}", step as f64 / 1e6));
            }
        }
    }

    fn max_ms(&self) -> Option<f64> {
        (!self.threads.is_empty()).then(|| self.max_step_ns as f64 / 1e6)
    }
}

/// Everything the lab needs on the host, each with the fix when missing.
pub fn check_host() -> Result<(PathBuf, PathBuf)> {
    if !is_root() {
        bail!("concord-lab vm must run as root (virtiofsd exports the host root to the guest): try sudo");
    }
    let qemu = which("qemu-system-x86_64")
        .context("qemu-system-x86_64 not found: run scripts/setup-host.sh (installs qemu-system-x86 from bookworm-backports)")?;
    let virtiofsd = which("virtiofsd")
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cargo/bin/virtiofsd"))
                .filter(|p| p.is_file())
        })
        .context("virtiofsd not found: run scripts/setup-host.sh (cargo install virtiofsd)")?;
    Ok((qemu, virtiofsd))
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn new_run_dir() -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let dir = cache_dir()?
        .join("runs")
        .join(format!("{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn spawn_virtiofsd(
    bin: &Path,
    socket: &Path,
    dir: &Path,
    readonly: bool,
    log: &Path,
) -> Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--socket-path={}", socket.display()))
        .arg("--shared-dir")
        .arg(dir)
        .args(["--sandbox", "none", "--log-level", "error"]);
    if readonly {
        // Submount announcements make /proc and /sys fail in the guest's chroot ("Object is remote").
        cmd.args(["--readonly", "--cache", "always", "--no-announce-submounts"]);
    } else {
        cmd.args(["--cache", "never"]);
    }
    die_with_parent(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    cmd.spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

fn wait_for_socket(path: &Path, child: &mut Child, log: &Path) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if let Some(st) = child.try_wait()? {
            bail!(
                "virtiofsd exited ({st}) before listening: {}",
                std::fs::read_to_string(log).unwrap_or_default().trim()
            );
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("virtiofsd did not create {} within 10 s", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// QEMU 10's multi-threaded TCG sometimes aborts during boot (`iotlb_to_section: Assertion
/// ... failed`), or the guest kernel hangs or panics before /init prints anything. Before the
/// command has started a retry is harmless, so boot up to this often.
const BOOT_ATTEMPTS: u32 = 3;
/// The kernel reaches /init in 5-14 s under TCG here with a few vCPUs; a boot that has not by
/// then is hung. Bringing up each vCPU costs emulated time, so big guests get more (see
/// boot_stage_limit).
const BOOT_STAGE_LIMIT: Duration = Duration::from_secs(90);

/// How long a guest of `cpus` vCPUs may take to reach /init: BOOT_STAGE_LIMIT, plus 5 s per
/// vCPU beyond 8.
fn boot_stage_limit(cpus: u32) -> Duration {
    BOOT_STAGE_LIMIT + Duration::from_secs(5 * u64::from(cpus.saturating_sub(8)))
}

pub fn run(cfg: VmConfig) -> Result<VmOutcome> {
    let mut attempt = 1;
    loop {
        let (out, crashed_before_cmd) = run_once(&cfg)?;
        if !crashed_before_cmd || attempt >= BOOT_ATTEMPTS {
            return Ok(out);
        }
        crate::util::progress(&format!(
            "the VM failed before the command started ({}); booting again ({}/{BOOT_ATTEMPTS})",
            out.message.as_deref().unwrap_or("no message"),
            attempt + 1
        ));
        attempt += 1;
    }
}

fn run_once(cfg: &VmConfig) -> Result<(VmOutcome, bool)> {
    let (qemu, virtiofsd) = check_host()?;
    cfg.topology.check_memory(cfg.mem_mib)?;
    let initrd = initramfs::ensure()?;
    let lab_exe = std::env::current_exe()?;
    let run_dir = new_run_dir()?;
    std::fs::write(
        run_dir.join(protocol::JOB_FILE),
        serde_json::to_vec_pretty(&cfg.job)?,
    )?;

    let mut children = Children(Vec::new());
    let mut qemu_status = None;
    let root_sock = run_dir.join("vfs-root.sock");
    let run_sock = run_dir.join("vfs-run.sock");
    // The sockets live in the shared run dir; the guest sees them as inert files.
    let root_log = run_dir.join("virtiofsd-root.log");
    let run_log = run_dir.join("virtiofsd-run.log");
    children.0.push(spawn_virtiofsd(
        &virtiofsd,
        &root_sock,
        Path::new("/"),
        true,
        &root_log,
    )?);
    children.0.push(spawn_virtiofsd(
        &virtiofsd, &run_sock, &run_dir, false, &run_log,
    )?);
    wait_for_socket(&root_sock, &mut children.0[0], &root_log)?;
    wait_for_socket(&run_sock, &mut children.0[1], &run_log)?;

    // The guest puts tmpfs over /tmp and friends; the workspace and the cache must stay visible
    // wherever they are (CI may clone into /tmp).
    let keep = [crate::util::exe_dir()?, cache_dir()?]
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    for p in [
        &run_dir.display().to_string(),
        &lab_exe.display().to_string(),
        &keep,
    ] {
        if p.contains(char::is_whitespace) {
            bail!("the path {p} contains white space, which the kernel command line cannot carry: move it");
        }
    }
    // tsc=reliable: TCG's TSC follows the host clock, but a busy host delays the vCPUs enough
    // that the clocksource watchdog sometimes marks it unstable mid-run; the guest then reads
    // time from the emulated HPET (microseconds per clock_gettime) and every time-reading
    // workload collapses (seen as 20x slower beam-sim runs under every scheduler).
    let append = format!(
        "console=ttyS0 panic=-1 loglevel=4 8250.nr_uarts=2 tsc=reliable concord.run={} concord.lab={} concord.keep={keep}",
        run_dir.display(),
        lab_exe.display()
    );
    let mut cmd = Command::new(&qemu);
    cmd.args([
        "-accel",
        "tcg",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-name",
        "concord-lab,debug-threads=on",
    ])
    .args(["-display", "none", "-monitor", "none", "-nic", "none"])
    .args(cfg.topology.qemu_args(cfg.mem_mib, true))
    .args(
        cfg.icount
            .map(|n| vec!["-icount".to_string(), format!("shift={n},sleep=off")])
            .unwrap_or_default(),
    )
    .arg("-kernel")
    .arg(&cfg.kernel.image)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", &append])
    .arg("-chardev")
    .arg(format!("socket,id=vfs0,path={}", root_sock.display()))
    .args(["-device", "vhost-user-fs-pci,chardev=vfs0,tag=hostroot"])
    .arg("-chardev")
    .arg(format!("socket,id=vfs1,path={}", run_sock.display()))
    .args(["-device", "vhost-user-fs-pci,chardev=vfs1,tag=rundir"])
    .arg("-serial")
    .arg(format!(
        "file:{}",
        run_dir.join(protocol::KERNEL_CONSOLE).display()
    ))
    .args([
        "-chardev",
        "stdio,id=cmdout,signal=off",
        "-serial",
        "chardev:cmdout",
    ]);
    die_with_parent(&mut cmd);
    let qemu_err = run_dir.join("qemu.stderr");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&qemu_err)?);
    let started = Instant::now();
    let mut qemu_child = cmd
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let stdout = qemu_child.stdout.take().context("QEMU stdout")?;
    let mut host_waits = HostWaits::new(qemu_child.id());
    children.0.push(qemu_child);

    // Reader thread: forwards the command's lines, sends markers back.
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let stream = cfg.stream;
    let output_path = run_dir.join(protocol::OUTPUT_FILE);
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::create(output_path).ok();
        let mut rd = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match rd.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
            if let Some(m) = line.find(MARKER) {
                let _ = tx.send((Instant::now(), line[m + MARKER.len()..].to_string()));
                continue;
            }
            if stream {
                let mut so = std::io::stdout().lock();
                let _ = writeln!(so, "{line}");
                let _ = so.flush();
            }
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });

    // What the guest's marker lines said so far; the same handling while running and after.
    let mut last_stage = "boot".to_string();
    let boot_to_cmd: std::cell::Cell<Option<f64>> = std::cell::Cell::new(None);
    let mut guest_fail: Option<String> = None;
    let mut take_markers = |rx: &mpsc::Receiver<(Instant, String)>| {
        while let Ok((when, m)) = rx.try_recv() {
            if let Some(stage) = m.strip_prefix("stage=") {
                last_stage = stage.to_string();
                if stage == "cmd" {
                    boot_to_cmd.set(Some(when.duration_since(started).as_secs_f64()));
                }
            } else if let Some(f) = m.strip_prefix("fail=") {
                guest_fail = Some(f.to_string());
            }
        }
        last_stage == "boot"
    };
    let mut timed_out = false;
    let mut boot_hung = false;
    let mut was_interrupted = false;
    loop {
        let still_booting = take_markers(&rx);
        let qemu_child = children.0.last_mut().expect("qemu child");
        if let Some(st) = qemu_child.try_wait()? {
            qemu_status = Some(st);
            break;
        }
        if interrupted() {
            was_interrupted = true;
            break;
        }
        if started.elapsed() > cfg.timeout {
            timed_out = true;
            break;
        }
        if still_booting
            && started.elapsed() > boot_stage_limit(cfg.topology.nr_cpus()).min(cfg.timeout)
        {
            boot_hung = true;
            break;
        }
        host_waits.poll(
            boot_to_cmd
                .get()
                .map(|b| started.elapsed().as_secs_f64() - b),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if !host_waits.log.is_empty() {
        let _ = std::fs::write(
            run_dir.join(HOST_WAITS_FILE),
            format!(
                "# seconds since the command started, ms a vCPU thread waited for a host CPU, thread\n{}\n",
                host_waits.log.join("\n")
            ),
        );
    }
    drop(children); // kills QEMU (if still running) and both virtiofsd
    let _ = reader.join();
    take_markers(&rx);
    for s in [&root_sock, &run_sock] {
        let _ = std::fs::remove_file(s);
    }

    let result: Option<GuestResult> = std::fs::read(run_dir.join(protocol::RESULT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let console = run_dir.join(protocol::KERNEL_CONSOLE);
    let (exit_code, message) = if was_interrupted {
        (
            exit::INTERRUPTED,
            Some("interrupted; the VM was stopped".to_string()),
        )
    } else if boot_hung {
        (
            exit::LAB_ERROR,
            Some(format!(
                "the guest kernel did not reach /init within {} s; the VM was killed (kernel console: {})",
                boot_stage_limit(cfg.topology.nr_cpus()).as_secs(),
                console.display()
            )),
        )
    } else if timed_out {
        (
            exit::TIMEOUT,
            Some(format!(
                "timed out after {} s in guest stage '{last_stage}'; the VM was killed (kernel console: {})",
                cfg.timeout.as_secs(),
                console.display()
            )),
        )
    } else if let Some(r) = &result {
        (r.exit_code, r.error.clone())
    } else {
        let qemu_msg = std::fs::read_to_string(&qemu_err).unwrap_or_default();
        let why = guest_fail.unwrap_or_else(|| {
            if qemu_msg.trim().is_empty() {
                format!("the guest stopped in stage '{last_stage}' without a result")
            } else {
                format!("QEMU failed: {}", qemu_msg.trim())
            }
        });
        (
            exit::LAB_ERROR,
            Some(format!("{why} (kernel console: {})", console.display())),
        )
    };
    // A hung boot, QEMU killed by a signal (SIGABRT from an assertion), or the guest kernel
    // dying before /init reported anything (an int3 oops in patched kernel text under
    // multi-threaded TCG, under every scheduler since none has started yet), with no result
    // and no command started: retryable.
    let panicked_in_boot = || {
        last_stage == "boot"
            && std::fs::read_to_string(&console).is_ok_and(|c| c.contains("Kernel panic"))
    };
    let crashed_before_cmd = boot_hung
        || (result.is_none()
            && boot_to_cmd.get().is_none()
            && (qemu_status
                .is_some_and(|st| std::os::unix::process::ExitStatusExt::signal(&st).is_some())
                || panicked_in_boot()));
    Ok((
        VmOutcome {
            exit_code,
            result,
            run_dir,
            boot_to_cmd_secs: boot_to_cmd.get(),
            message,
            host_vcpu_wait_max_ms: host_waits.max_ms(),
        },
        crashed_before_cmd,
    ))
}

/// Memory of a guest job's VM: 2 GiB, and 96 MiB per vCPU on big guests, whose per-CPU trace
/// buffers (at least 32 MiB each, guest::trace_buffer_kb) took a 64-vCPU guest's whole 2 GiB.
fn guest_job_mem_mib(nr_cpus: u32) -> u64 {
    2048u64.max(96 * u64::from(nr_cpus))
}

/// One guest command under `sched` in a fresh VM (not streamed), and the lab's error for the
/// run if any: its message, or the exit code when there is none.
pub fn run_guest_job(
    kernel: &Kernel,
    topology: TopologySpec,
    sched: &concord_common::sched::SchedSpec,
    cmd: Vec<String>,
    timeout: Duration,
    icount: Option<u32>,
) -> Result<(VmOutcome, Option<String>)> {
    let job = Job {
        cmd,
        sched: sched.clone(),
        sched_binary: crate::sched_binary(sched)?,
        sched_attach_timeout_s: 120,
        topology,
        kernel_config: kernel.config.clone(),
        path_prepend: crate::guest_path_prepend()?,
    };
    let out = run(VmConfig {
        kernel: kernel.clone(),
        topology,
        mem_mib: guest_job_mem_mib(topology.nr_cpus()),
        timeout,
        job,
        stream: false,
        icount,
    })?;
    let mut error = out.message.clone();
    if out.exit_code != 0 && error.is_none() {
        error = Some(format!("exit code {}", out.exit_code));
    }
    Ok((out, error))
}
