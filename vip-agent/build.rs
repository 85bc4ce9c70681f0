//! Embeds the eBPF object built by `cargo xtask build-ebpf`, so vip-agent ships as one
//! binary. The object is not built from here: it needs the nightly toolchain and
//! bpf-linker, which `cargo xtask build-ebpf` installs and runs.
//!
//! Where: `$VIP_EBPF_OBJECT` if set, else `<target dir>/bpfel-unknown-none/release/vip-ebpf`
//! with the target dir from `$CARGO_TARGET_DIR` or `<workspace>/target` (the same rule
//! xtask uses).

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=VIP_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    let object = match std::env::var_os("VIP_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../target")
                });
            target.join("bpfel-unknown-none/release/vip-ebpf")
        }
    };
    println!("cargo::rerun-if-changed={}", object.display());
    if !object.is_file() {
        eprintln!(
            "\nerror: vip-agent embeds its eBPF programs, and the object {} is missing.\n\
             Build it first with:\n\n    cargo xtask build-ebpf\n\n\
             (or point VIP_EBPF_OBJECT at a built object)\n",
            object.display()
        );
        std::process::exit(1);
    }
    println!("cargo::rustc-env=VIP_EBPF_OBJECT={}", object.display());
}
