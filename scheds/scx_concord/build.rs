fn main() {
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_intf("src/bpf/intf.h", "bpf_intf.rs")
        .enable_skel("src/bpf/main.bpf.c", "bpf")
        .build()
        .unwrap();
    // Every header of the BPF side: cargo rescans the directory.
    println!("cargo:rerun-if-changed=src/bpf");
    git_sha();
}

/// The commit built, for --version and the ops name (a fleet tells builds apart by them); none
/// outside a git checkout (a crate from the registry).
fn git_sha() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) else {
        return;
    };
    for f in ["HEAD", "refs/heads", "packed-refs"] {
        println!("cargo:rerun-if-changed={dir}/{f}");
    }
    if let Some(sha) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=CONCORD_GIT_SHA={sha}");
    }
}
