fn main() {
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_intf("src/bpf/intf.h", "bpf_intf.rs")
        .enable_skel("src/bpf/main.bpf.c", "bpf")
        .build()
        .unwrap();
    // Every header of the BPF side: cargo rescans the directory.
    println!("cargo:rerun-if-changed=src/bpf");
}
