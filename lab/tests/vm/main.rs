//! Integration tests that boot real VMs. They need root, QEMU, virtiofsd and network access to
//! Debian's archive on first use, so they are ignored by a plain `cargo test` (and reported as
//! such); `make vm-tests` runs them with `--ignored`.

mod compare;

use std::process::{Command, Output};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lab(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_concord-lab"))
        .args(args)
        .output()
        .expect("running concord-lab");
    let r = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    eprintln!(
        "$ concord-lab {}\n--- exit {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        r.code,
        r.stdout,
        r.stderr
    );
    r
}

fn run_dir(r: &Run) -> String {
    r.stderr
        .lines()
        .find_map(|l| {
            l.split_once("run directory (kernel log, outputs): ")
                .map(|(_, d)| d.trim().to_string())
        })
        .expect("lab names its run directory")
}

/// The words of the first line of @stdout that starts with @tag (the tag among them).
fn tagged_line(stdout: &str, tag: &str) -> Vec<String> {
    stdout
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no '{tag}' line in {stdout}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn nothing_left_running(dir: &str) {
    let out = Command::new("pgrep").args(["-f", dir]).output().unwrap();
    assert!(
        out.stdout.is_empty(),
        "processes still running for {dir}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "boots VMs: make vm-tests"]
fn sched_ext_is_available_and_disabled() {
    let r = lab(&[
        "vm",
        "--cpus",
        "2",
        "--",
        "cat",
        "/sys/kernel/sched_ext/state",
    ]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout.trim(), "disabled");
    assert!(
        r.stderr.contains("command started"),
        "boot-to-command time is reported"
    );
    nothing_left_running(&run_dir(&r));
}

#[test]
#[ignore = "boots VMs: make vm-tests"]
fn two_llc_topology_is_seen_in_the_guest() {
    let r = lab(&["vm", "--topology", "2l2c", "--", "concord-lab", "topology"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("llcs: [[0, 1], [2, 3]]"), "{}", r.stdout);
}

#[test]
#[ignore = "boots VMs: make vm-tests"]
fn exit_codes_come_back() {
    assert_eq!(lab(&["vm", "--", "sh", "-c", "echo out; exit 7"]).code, 7);
    let r = lab(&["vm", "--", "/no/such/command"]);
    assert_eq!(r.code, 127);
    assert!(r.stderr.contains("command not found in the guest"));
}

#[test]
#[ignore = "boots VMs: make vm-tests"]
fn a_hung_command_hits_the_timeout_and_the_vm_is_gone() {
    let r = lab(&["vm", "--timeout", "30", "--", "sleep", "1000"]);
    assert_eq!(r.code, 124);
    assert!(
        r.stderr
            .contains("timed out after 30 s in guest stage 'cmd'"),
        "{}",
        r.stderr
    );
    nothing_left_running(&run_dir(&r));
}

#[test]
fn bad_input_fails_before_booting() {
    // No VM needed: these must fail fast, whatever the machine.
    for args in [
        &["vm", "--topology", "2x2c", "--", "true"][..],
        &["vm", "--sched", "cfs", "--", "true"],
        &["vm", "--kernel", "7.2", "--", "true"],
        &["vm", "--mem", "3T", "--", "true"],
        &["vm", "--topology", "2n2c", "--mem", "257M", "--", "true"],
    ] {
        let r = lab(args);
        assert_eq!(r.code, 125, "{args:?}");
        assert_eq!(
            r.stderr.lines().filter(|l| l.contains("error")).count(),
            1,
            "one clear error line: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("booting"), "{args:?} booted a VM");
    }
}

#[test]
#[ignore = "boots VMs: make vm-tests"]
fn concord_attaches_under_its_name() {
    let r = lab(&[
        "vm",
        "--cpus",
        "4",
        "--sched",
        "concord",
        "--",
        "cat",
        "/sys/kernel/sched_ext/root/ops",
    ]);
    assert_eq!(r.code, 0);
    // scx_utils' form, with the commit: concord_0.1.0_g<sha>_x86_64_unknown_linux_gnu
    let ops: Vec<_> = r.stdout.lines().filter(|l| !l.starts_with('[')).collect();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(
        ops[0].starts_with("concord_") && ops[0].contains("_g") && ops[0].ends_with("linux_gnu"),
        "{ops:?}"
    );
    assert!(r.stderr.contains("still attached at the end, exit 0"));
}

/// `--stats-group`: a member of the group reads the statistics without root, as OpenMetrics
/// text and as JSON lines; a user outside it cannot, and the socket has the group and mode.
#[test]
#[ignore = "boots VMs: make vm-tests"]
fn stats_group_lets_an_exporter_read_without_root() {
    // nobody (65534), with and without group adm (4); the binary copied where nobody may run it
    let as_nobody = |groups: &str, format: &str, out: &str| {
        format!(
            "setpriv --reuid=65534 --regid=65534 {groups} timeout -s INT 3 /tmp/sc --monitor 1 \
             --monitor-format {format} > /tmp/{out} 2>/dev/null; "
        )
    };
    let script = format!(
        "cp $(command -v scx_concord) /tmp/sc && chmod 755 /tmp/sc; \
         stat -c 'sock %G %a' /var/run/scx/root/stats; stat -c 'dir %G %a' /var/run/scx/root; \
         {}{}{}\
         echo om $(grep -c '^# EOF$' /tmp/om) $(grep -c '^scx_concord_wait_max_us ' /tmp/om); \
         echo js $(grep -c '^{{.*\"wait_max_us\":' /tmp/js); echo no $(grep -c wait_max_us /tmp/no)",
        as_nobody("--groups=4", "openmetrics", "om"),
        as_nobody("--groups=4", "json", "js"),
        as_nobody("--clear-groups", "json", "no"),
    );
    let r = lab(&[
        "vm",
        "--sched",
        "concord:--stats-group adm",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(r.code, 0);
    let line = |tag: &str| tagged_line(&r.stdout, tag)[1..].to_vec();
    assert_eq!(line("sock "), ["adm", "660"]);
    assert_eq!(line("dir "), ["adm", "750"]);
    let om = line("om ");
    let n: u32 = om[0].parse().unwrap();
    assert!(
        n >= 1 && om[1] == om[0],
        "one exposition per interval: {om:?}"
    );
    assert_ne!(line("js "), ["0"], "JSON lines read by a group member");
    assert_eq!(
        line("no "),
        ["0"],
        "a user outside the group read the statistics"
    );
    assert!(r.stderr.contains("still attached at the end, exit 0"));
}

/// Rules of a --config file match tasks in the kernel by thread name (also one renamed after it
/// started, as ERTS names its threads), process name, cgroup (one created after the scheduler
/// started), effective uid, nice and CPU count, first match winning, and count them: each
/// rule's spinner shows up in that rule's statistics, and no other's. (The Python process
/// starts first: beside five spinners it took longer than the window to rename itself.)
#[test]
#[ignore = "boots VMs: make vm-tests"]
fn rules_match_tasks_in_the_kernel_and_count_them() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rules-vm-test");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("rules.toml");
    std::fs::write(
        &config,
        r#"
[[rule]]
name = "pinned"
match = { comm = "rt-pin", nr-cpus = 1 }
class = "latency"

[[rule]]
name = "late"
match = { comm = "rt-late*" }
slice-us = 1000

[[rule]]
name = "proc"
match = { pcomm = "rt-proc", comm = "work*" }

[[rule]]
name = "batch"
match = { cgroup = "/rt-batch" }
class = "batch"

[[rule]]
name = "nobody"
match = { uid = 65534 }

[[rule]]
name = "niced"
match = { nice = [5, 10] }

[[rule]]
name = "unused"
match = { comm = "rt-pin" }
"#,
    )
    .unwrap();
    let spin = "while :; do :; done";
    let script = format!(
        "timeout -s INT 6 scx_concord --monitor 1 --monitor-format json > /tmp/m & M=$!; \
         python3 -c 'import threading,os\nopen(\"/proc/self/comm\",\"w\").write(\"rt-proc\")\ndef w():\n  open(\"/proc/thread-self/comm\",\"w\").write(\"worker\")\n  while True: pass\nthreading.Thread(target=w).start()' & P=\"$P $!\"; \
         sleep 1; mkdir /sys/fs/cgroup/rt-batch; sleep 1.5; \
         taskset -c 0 sh -c 'printf rt-pin > /proc/self/comm; {spin}' & P=\"$P $!\"; \
         sh -c 'sleep 0.2; printf rt-late-1 > /proc/self/comm; {spin}' & P=\"$P $!\"; \
         sh -c 'echo $$ > /sys/fs/cgroup/rt-batch/cgroup.procs; {spin}' & P=\"$P $!\"; \
         setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{spin}' & P=\"$P $!\"; \
         nice -n 7 sh -c '{spin}' & P=\"$P $!\"; \
         wait $M; \
         kill $P; \
         python3 -c 'import json\nlines=[json.loads(l) for l in open(\"/tmp/m\")]\nfor name in sorted(lines[-1][\"rules\"]):\n  m=sum(l[\"rules\"][name][\"matched\"] for l in lines); c=max(l[\"rules\"][name][\"cpu_pct\"] for l in lines); w=lines[-1][\"rules\"][name][\"wait_max_since_start_us\"]\n  print(\"rule\", name, m, round(c, 1), w)'"
    );
    let sched = format!("concord:--config {}", config.display());
    let r = lab(&["vm", "--sched", &sched, "--", "sh", "-c", &script]);
    assert_eq!(r.code, 0);
    let rule = |name: &str| {
        let l = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("rule {name} ")))
            .unwrap_or_else(|| panic!("no rule {name} in {}", r.stdout));
        let f: Vec<f64> = l
            .split_whitespace()
            .skip(2)
            .map(|v| v.parse().unwrap())
            .collect();
        (f[0], f[1], f[2])
    };
    for name in ["pinned", "late", "proc", "batch", "nobody", "niced"] {
        let (matched, cpu, wait) = rule(name);
        // Six spinners on 2 CPUs: a sixth of the machine each, give or take the scheduler's
        // own weights (the latency class, the batch class).
        assert!(matched >= 1.0, "{name}: matched {matched}");
        assert!(cpu >= 3.0, "{name}: {cpu} % of the CPUs");
        assert!(wait > 0.0, "{name}: no wait counted");
    }
    // First match wins: the second rule for rt-pin never gets it.
    assert_eq!(rule("unused"), (0.0, 0.0, 0.0));
    assert!(r.stderr.contains("still attached at the end, exit 0"));
}

/// `--partial` takes only SCHED_EXT tasks: a shell stays with the kernel's scheduler, a command
/// started with concord-ext (and what it starts) runs under scx_concord.
#[test]
#[ignore = "boots VMs: make vm-tests"]
fn partial_mode_takes_only_sched_ext_tasks() {
    let r = lab(&[
        "vm",
        "--sched",
        "concord:--partial",
        "--",
        "sh",
        "-c",
        "echo plain $(grep ext.enabled /proc/self/sched); \
         concord-ext -- sh -c 'echo ext $(grep ext.enabled /proc/self/sched) $(grep -w policy /proc/self/sched)'; \
         sleep 30 & concord-ext --pid $! && echo moved $(grep ext.enabled /proc/$!/sched); kill $!",
    ]);
    assert_eq!(r.code, 0);
    let field = |tag: &str| tagged_line(&r.stdout, tag).join(" ");
    assert_eq!(field("plain"), "plain ext.enabled : 0");
    assert_eq!(field("ext"), "ext ext.enabled : 1 policy : 7");
    assert_eq!(field("moved"), "moved ext.enabled : 1");
    assert!(r.stdout.contains("SCHED_EXT tasks only"), "{}", r.stdout);
    assert!(r.stderr.contains("still attached at the end, exit 0"));
}

#[test]
#[ignore = "boots VMs: make vm-tests"]
fn bpf_and_rust_policy_agree_in_the_kernel() {
    // Both kernel series: their verifiers differ (7.0 refused a probe that 7.3 loads, and the
    // whole object with it).
    for kernel in ["7.3", "7.0"] {
        let r = lab(&[
            "vm",
            "--kernel",
            kernel,
            "--",
            "scx_concord",
            "--check-policy",
        ]);
        assert_eq!(r.code, 0, "{kernel}: {}", r.stderr);
        assert!(
            r.stdout.contains("policy check: BPF and Rust agree"),
            "{}",
            r.stdout
        );
        // The preemption scans of made-up 112- to 256-CPU machines, walked in the kernel.
        for machine in ["2n4l11c2t", "2n2l32c2t", "1n1l56c2t"] {
            assert!(
                r.stdout.contains(&format!("made-up {machine} machine")),
                "{}",
                r.stdout
            );
        }
        assert!(
            r.stdout.contains("scan check: BPF and Rust agree"),
            "{}",
            r.stdout
        );
    }
}

/// A CPU-bound task pinned to CPU 0 sharing it with unpinned hogs waits at most --max-wait-ms
/// plus one slice (the urgent head waits for the running slice to end), in every run. The VM
/// runs under -icount: with multi-threaded TCG a vCPU thread descheduled by the busy host looks
/// like a long wait in the guest (fairness runs showed 70-165 ms gaps that way).
#[test]
#[ignore = "boots VMs: make vm-tests"]
fn pinned_hog_wait_is_bounded() {
    const BOUND_US: f64 = 40_000.0 + 5_000.0;
    for _ in 0..3 {
        let r = lab(&[
            "vm",
            "--cpus",
            "2",
            "--icount",
            "2",
            "--sched",
            "concord:--stats 3 --max-wait-ms 40 --slice-max-us 5000",
            "--",
            "sh",
            "-c",
            "taskset -c 0 stress-ng -q -c 1 -t 15 & stress-ng -q -c 6 -t 15; wait; sleep 4",
        ]);
        assert_eq!(r.code, 0);
        let last = r
            .stdout
            .lines()
            .rev()
            .find_map(|l| {
                l.split_once("exact max since start: ")
                    .map(|(_, v)| v.to_string())
            })
            .expect("stats show the exact max waits");
        // "pinned 19014 us, llc 24720 us"
        let nums: Vec<f64> = last
            .split_whitespace()
            .filter_map(|w| w.trim_end_matches(',').parse().ok())
            .collect();
        let (pinned, llc) = (nums[0], nums[1]);
        eprintln!("max wait: pinned {pinned} us, llc {llc} us");
        assert!(pinned > 0.0, "the pinned task did wait in its queue");
        assert!(
            pinned <= BOUND_US && llc <= BOUND_US,
            "wait over the bound: pinned {pinned} us, llc {llc} us (bound {BOUND_US} us)"
        );
    }
}

/// A yield gives the CPU away, and not for long: a thread polling with sched_yield() (as ERTS
/// schedulers spin before they sleep) and a CPU hog share CPU 1. The hog, the one with work,
/// gets most of the CPU (a yielder taken straight back would keep it), and the poller looks
/// again within a fraction of a tick after each yield that switched (a whole slice of the hog
/// would be a tick or more: 4 ms at 250 Hz). Under -icount: guest time from instructions, so
/// the host's speed does not move the figures.
#[test]
#[ignore = "boots VMs: make vm-tests"]
fn a_yield_gives_the_cpu_away_for_a_short_turn() {
    let r = lab(&[
        "vm",
        "--cpus",
        "2",
        "--icount",
        "2",
        "--sched",
        "concord",
        "--",
        "yield-probe",
        "--cpu",
        "1",
        "--secs",
        "4",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let start = r.stdout.find('{').expect("yield-probe printed its report");
    let v: serde_json::Value = serde_json::Deserializer::from_str(&r.stdout[start..])
        .into_iter()
        .next()
        .expect("one JSON report")
        .expect("valid JSON");
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "handoffs {}, gap p50 {:.0} us, p99 {:.0} us; hog {:.2}, poller {:.2} of the CPU",
        f("handoffs"),
        f("gap_p50_us"),
        f("gap_p99_us"),
        f("hog_share"),
        f("yielder_share")
    );
    assert!(f("handoffs") >= 100.0, "the poller yielded the CPU: {v}");
    assert!(
        f("hog_share") >= 0.75,
        "the yield did not yield: the hog got {:.2} of the CPU",
        f("hog_share")
    );
    assert!(
        f("gap_p50_us") <= 2000.0,
        "after a yield the poller waited {:.0} us (p50): a whole slice of the hog",
        f("gap_p50_us")
    );
}

/// The reliability suite's CI subset on both kernel series: every check must pass on each
/// (the checks themselves are in lab/src/reliability; their evidence is printed).
#[test]
#[ignore = "boots VMs: make vm-tests"]
fn reliability_quick_suite_passes_on_both_kernels() {
    let out = std::env::temp_dir().join(format!("concord-rel-test-{}", std::process::id()));
    let r = lab(&[
        "reliability",
        "--quick",
        "--kernels",
        "7.3,7.0",
        "--out",
        &out.display().to_string(),
    ]);
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("reliability.json")).unwrap()).unwrap();
    for r in rows.iter().filter(|r| r["pass"] != true) {
        eprintln!("FAILED: {r:#}");
    }
    let failed: Vec<&serde_json::Value> = rows.iter().filter(|r| r["pass"] != true).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert_eq!(r.code, 0, "every check passed, so the suite exits 0");
    for r in rows.iter().filter(|r| r["check"] == "fairness") {
        assert!(
            r["evidence"].as_array().unwrap().len() >= 4,
            "fairness measured every phase: {r}"
        );
    }
    for kernel in ["7.3.", "7.0."] {
        for check in [
            "smoke --queue per-llc --pinned-queue per-cpu",
            "smoke --queue global --pinned-queue shared",
            "fairness",
            "affinity",
            "hotplug",
            "exits",
            "bad-input",
            "access",
            "resources",
            "rt-mix",
            "watchdog",
            "takeover",
            "cgroup-moves",
        ] {
            assert!(
                rows.iter()
                    .any(|r| r["check"] == check
                        && r["kernel"].as_str().unwrap().starts_with(kernel)),
                "{check} did not run on {kernel}x"
            );
        }
    }
    assert!(rows.iter().any(|r| r["kernel"] == "host"));
    std::fs::remove_dir_all(&out).unwrap();
}
