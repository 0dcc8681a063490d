//! The compare pipeline end to end, short: the outage and real-Erlang scenarios and the
//! comparison smoke run (report, JSON, pictures, diff, resume).

use super::*;

/// A compare's results.json in @out: it holds @runs runs, every one of them ok.
fn results(out: &std::path::Path, runs: usize) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let all = json["runs"].as_array().unwrap();
    assert_eq!(all.len(), runs);
    for run in all {
        assert_eq!(run["ok"], true, "{run}");
    }
    json
}

/// The outage scenario end to end, short: two schedulers, one run each. Checks that the runs'
/// raw outputs are sane (every measured request in the histogram, pinned threads stayed on
/// their CPUs, schedstat and concord's stats read); the performance ratios are benchmark
/// results, not asserted here.
#[test]
#[ignore = "boots VMs: make vm-tests"]
fn outage_scenario_writes_a_sane_report() {
    let out = std::env::temp_dir().join(format!("concord-outage-test-{}", std::process::id()));
    let out_s = out.display().to_string();
    let r = lab(&[
        "compare",
        "--scenarios",
        "outage",
        "--repeats",
        "1",
        "--secs",
        "4",
        "--scheds",
        "eevdf,concord",
        "--out",
        &out_s,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("| request p99 (ms) | lower |"),
        "{}",
        r.stdout
    );
    let json = results(&out, 2);
    let runs = json["runs"].as_array().unwrap();
    let mut outputs = Vec::new();
    for run in runs {
        let dir = std::path::Path::new(run["run_dir"].as_str().unwrap());
        let o: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("bench.json")).unwrap()).unwrap();
        let beam = &o["beam"];
        let f = |k: &str| beam[k].as_f64().unwrap();
        // 400 req/s (the mix's default) over 3 measured seconds: every one in the histogram.
        assert_eq!(beam["measured"].as_u64().unwrap(), 1200, "{beam}");
        assert_eq!(beam["latency"]["count"].as_u64(), beam["measured"].as_u64());
        assert!(f("p50_us") > 0.0 && f("p50_us") <= f("p99_us") && f("p99_us") <= f("max_us"));
        assert!(f("throughput_rps") > 0.0);
        for s in beam["schedulers"].as_array().unwrap() {
            let cpu = s["cpu"].as_u64().unwrap();
            assert_eq!(
                s["cpus_seen"],
                serde_json::json!([cpu]),
                "pinned thread moved: {s}"
            );
            assert!(s["timeslices"].as_u64().unwrap() > 0, "schedstat read: {s}");
        }
        assert!(o["noise"]["hops_per_sec"].as_f64().unwrap() > 0.0);
        outputs.push(o);
    }
    let concord = &outputs[1]["sched_stats"];
    assert!(
        concord["enq_pinned"].as_u64().unwrap() > 0,
        "concord stats collected: {concord}"
    );
    assert!(outputs[0]["sched_stats"].is_null());
    let svg = std::fs::read_to_string(out.join("outage-latency-cdf.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2);
    let _ = std::fs::remove_dir_all(&out);
}

/// The real-Erlang scenarios end to end, short (EEVDF and concord, one run each, two load points,
/// both mixes):
/// a sane report, the sweep plot, and the wait cross-check: every wait the kernel's tracepoints
/// show (runnable to running, any task, any path) is inside scx_concord's own count, and the
/// two longest waits agree within one slice. Performance is a benchmark (make demo), not
/// asserted here.
#[test]
#[ignore = "boots VMs: make vm-tests"]
fn erlang_scenario_reports_and_waits_agree_with_the_kernel() {
    const SLICE_MS: f64 = 5.0;
    let out = std::env::temp_dir().join(format!("concord-erlang-test-{}", std::process::id()));
    let out_s = out.display().to_string();
    let r = lab(&[
        "compare",
        "--scenarios",
        "erlang,erlang-batch",
        "--loads",
        "0.2,0.4",
        "--scheds",
        "eevdf,concord",
        "--repeats",
        "1",
        "--secs",
        "4",
        "--out",
        &out_s,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for point in [
        "erlang@20%",
        "erlang@40%",
        "erlang-batch@20%",
        "erlang-batch@40%",
    ] {
        assert!(r.stdout.contains(&format!("## {point}: ")), "{point}");
    }
    let json = results(&out, 8);
    let runs = json["runs"].as_array().unwrap();
    for run in runs {
        let m = &run["metrics"];
        let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
        assert!(
            f("request_p50_ms") > 0.0 && f("request_p50_ms") <= f("request_p99_ms"),
            "{m}"
        );
        assert!(f("request_p99_ms") <= f("request_max_ms"), "{m}");
        // Per second of the run: the slowest second's p99 is a latency that occurred.
        assert!(
            f("request_worst_second_p99_ms") > 0.0
                && f("request_worst_second_p99_ms") <= f("request_max_ms") * 1.001,
            "{m}"
        );
        assert_eq!(
            run["per_second_p99_ms"].as_array().map(Vec::len),
            Some(4),
            "{run}"
        );
        assert!(f("requests_per_sec") > 0.0 && f("service_us") > 0.0, "{m}");
        // Each scenario runs the mix it names: erlang a free ring and no hog, erlang-batch
        // rings and a hog.
        let batch = run["scenario"] == "erlang-batch";
        assert!(f("ring_hops_per_sec") > 0.0, "{m}");
        assert_eq!(f("hog_work_per_sec") > 0.0, batch, "{m}");
        assert!(
            f("beam_wait_max_ms") > 0.0,
            "the BEAM threads were traced: {m}"
        );
        // Their wake-up waits are among their waits.
        assert!(
            f("beam_wake_p50_us") > 0.0
                && f("beam_wake_p50_us") <= f("beam_wake_p99_us")
                && f("beam_wake_p99_us") <= f("beam_wait_max_ms") * 1e3 * 1.001,
            "{m}"
        );
        // Who got the CPU: each group ran, and no group got more than the machine's 2 CPUs.
        for k in ["beam_cpus", "rings_cpus", "hogs_cpus"] {
            let ran = k != "hogs_cpus" || batch;
            assert!(f(k) <= 2.05 && (f(k) > 0.0) == ran, "{k}: {m}");
        }
        assert!(f("wait_max_ms") >= f("beam_wait_max_ms"), "{m}");
        // The machine's silences: every run has them (no extra events), and the silent part
        // of a longest wait is part of it.
        assert!(f("guest_silence_max_ms") > 0.0, "{m}");
        for (silent, wait) in [
            ("wait_max_silent_ms", "wait_max_ms"),
            ("beam_wait_max_silent_ms", "beam_wait_max_ms"),
        ] {
            assert!(
                f(silent) >= 0.0 && f(silent) <= f(wait) * 1.001,
                "{silent}: {m}"
            );
        }
        if run["sched"] == "concord" {
            // Both figures cover the same window: concord's is its exact longest wait between
            // the two stats reads around the load, the trace's the longest between its markers.
            let (kernel, own) = (f("wait_max_ms"), f("sched_wait_max_ms"));
            let lost = &run["wasted"]["lost_events"];
            eprintln!(
                "longest wait: kernel trace {kernel:.2} ms, concord's count {own:.2} ms (trace events lost: {lost})"
            );
            assert!(
                kernel <= own + SLICE_MS,
                "the kernel saw a wait concord did not count: {kernel} ms vs {own} ms (lost {lost})"
            );
            assert!(
                (kernel - own).abs() <= SLICE_MS,
                "concord's longest wait {own} ms is not the kernel's {kernel} ms (lost {lost})"
            );
        } else {
            assert!(m.get("sched_wait_max_ms").is_none(), "{m}");
        }
    }
    for svg in [
        "erlang-sweep-request-p99.svg",
        "erlang-batch-sweep-request-p99.svg",
        "erlang-20-latency-cdf.svg",
        "erlang-batch-40-latency-cdf.svg",
        "erlang-40-p99-per-second.svg",
        "erlang-40-heat-concord.svg",
    ] {
        let s = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(
            s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
    // report.md links every picture written, and report.html carries them all inline
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let pictures: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".svg"))
        .collect();
    for p in &pictures {
        assert!(
            md.contains(&format!("]({p})")),
            "report.md does not link {p}"
        );
    }
    assert_eq!(html.matches("<svg").count(), pictures.len(), "{pictures:?}");
    assert!(!html.contains("missing)") && !html.contains("<img"));
    let _ = std::fs::remove_dir_all(&out);
}

/// The comparison suite's smoke run: one scenario under EEVDF and concord; the report, the
/// JSON and the SVGs are well-formed, the meters measured something, and `diff` reads the JSON.
#[test]
#[ignore = "boots VMs: make vm-tests"]
fn compare_smoke_writes_report_json_and_svgs() {
    let out = std::env::temp_dir().join(format!("concord-compare-test-{}", std::process::id()));
    let out_s = out.display().to_string();
    let plan = [
        "compare",
        "--scenarios",
        "wakeup",
        "--scheds",
        "eevdf,concord",
        "--repeats",
        "1",
        "--secs",
        "4",
    ];
    // Interrupted once the first run is saved (the second is cut short), then resumed: the
    // first run is kept as it was and only the second runs again.
    let mut first = Command::new(env!("CARGO_BIN_EXE_concord-lab"))
        .args(plan)
        .args(["--out", &out_s])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let saved_path = out.join("runs-so-far.json");
    let saved_count = || {
        std::fs::read(&saved_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_array().map(|a| a.len()))
            .unwrap_or(0)
    };
    let t0 = std::time::Instant::now();
    while saved_count() < 1 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "compare ended before its first run was saved"
        );
        assert!(
            t0.elapsed().as_secs() < 600,
            "no run saved within 10 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    let st = first.wait().unwrap();
    assert_eq!(st.code(), Some(130), "interrupted: {st}");
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&saved_path).unwrap()).unwrap();
    assert_eq!(kept[0]["ok"], true, "{kept}");
    let r = lab(&[&plan[..], &["--resume", &out_s]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr.matches("kept from").count(), 1, "{}", r.stderr);
    assert!(r.stdout.contains("## wakeup: 1n1l4c1t"), "{}", r.stdout);
    assert!(r.stdout.contains("| wake-up p99 (µs) | lower |"));
    let json_path = out.join("results.json");
    let json = results(&out, 2);
    let runs = json["runs"].as_array().unwrap();
    for run in runs {
        let m = &run["metrics"];
        let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
        assert!(
            f("wake_p50_us") > 0.0 && f("wake_p50_us") <= f("wake_p99_us"),
            "{m}"
        );
        assert!(f("requests_per_sec") > 0.0);
        assert!((0.0..=100.0).contains(&f("wasted_pct")), "{m}");
        assert!((0.0..100.0).contains(&f("idle_pct")), "{m}");
        // The host side read QEMU's vCPU threads' run delay (a wait cannot exceed the run).
        assert!((0.0..30_000.0).contains(&f("host_vcpu_wait_max_ms")), "{m}");
        // Waking 4 CPUs' workers takes IPIs under any scheduler (kicks, remote wake-ups).
        assert!(
            f("resched_ipis_per_cpu_sec") + f("call_ipis_per_cpu_sec") > 1.0,
            "{m}"
        );
        let w = &run["wasted"];
        assert!(
            w["events"].as_u64().unwrap() > 1000,
            "the trace was replayed: {w}"
        );
        let window = w["window_ns"].as_f64().unwrap() * w["nr_cpus"].as_f64().unwrap();
        let known = w["busy_ns"].as_f64().unwrap() + w["idle_ns"].as_f64().unwrap();
        assert!(known > 0.99 * window, "every CPU's occupant known: {w}");
        assert_eq!(w["heat"]["cpus"].as_array().unwrap().len(), 4);
    }
    // BPF cost: concord's callbacks ran and were counted; EEVDF has none.
    assert!(runs[0]["bpf"].as_array().unwrap().is_empty());
    let bpf = runs[1]["bpf"].as_array().unwrap();
    let enqueue = bpf
        .iter()
        .find(|p| p["callback"] == "enqueue")
        .expect("concord_enqueue listed");
    assert!(enqueue["run_cnt"].as_u64().unwrap() > 0, "{enqueue}");
    assert!(enqueue["bytes_jited"].as_u64().unwrap() > 0, "{enqueue}");
    assert!(runs[1]["metrics"]["bpf_ns_per_call"].as_f64().unwrap() > 0.0);
    for svg in [
        "wakeup-latency-cdf.svg",
        "wakeup-heat-eevdf.svg",
        "wakeup-heat-concord.svg",
    ] {
        let s = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(
            s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
    // Provenance: the command and each scheduler's own version (concord's with its commit).
    assert_eq!(json["schema"], 2);
    let prov = &json["provenance"];
    assert!(prov["command"]
        .as_str()
        .unwrap()
        .contains("compare --scenarios wakeup"));
    assert_eq!(prov["scheds"][0][0], "eevdf");
    let concord_version = prov["scheds"][1][1].as_str().unwrap();
    assert!(concord_version.starts_with("scx_concord 0.1.0-g"), "{prov}");
    assert!(!prov["qemu"].as_str().unwrap().is_empty());
    // Every run was saved as it finished; --resume keeps them and boots nothing.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("runs-so-far.json")).unwrap()).unwrap();
    assert_eq!(saved.as_array().unwrap().len(), 2);
    let again = lab(&[
        "compare",
        "--scenarios",
        "wakeup",
        "--scheds",
        "eevdf,concord",
        "--repeats",
        "1",
        "--resume",
        &out_s,
    ]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        again.stderr.matches("kept from").count(),
        2,
        "{}",
        again.stderr
    );
    let resumed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(resumed["runs"], json["runs"]);
    assert_eq!(
        json["runs"][0], kept[0],
        "the interrupted compare's run, unchanged"
    );
    let d = lab(&[
        "diff",
        &json_path.display().to_string(),
        &json_path.display().to_string(),
    ]);
    assert_eq!(d.code, 0);
    assert!(d.stdout.contains("| concord | wake-up p99 (µs) |") && d.stdout.contains("| 1.00x |"));
    let bad = lab(&[
        "diff",
        &json_path.display().to_string(),
        "/nonexistent.json",
    ]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("/nonexistent.json"));
    let _ = std::fs::remove_dir_all(&out);
}
