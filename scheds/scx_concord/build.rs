fn main() {
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_intf("src/bpf/intf.h", "bpf_intf.rs")
        .enable_skel("src/bpf/main.bpf.c", "bpf")
        .build()
        .unwrap();
    for f in [
        "intf.h",
        "policy.h",
        "concord.bpf.h",
        "lat_cri.bpf.h",
        "queues.bpf.h",
        "idle.bpf.h",
        "stats.bpf.h",
    ] {
        println!("cargo:rerun-if-changed=src/bpf/{f}");
    }
}
