//! `cargo xtask build-ebpf`: builds vip-ebpf for `bpfel-unknown-none` with BTF.
//!
//! On a fresh machine it first installs, idempotently, what the build needs:
//! - rust-src for the nightly toolchain (for `-Z build-std=core`);
//! - bpf-linker, built against the nightly's own libLLVM. Debian has no LLVM as new as
//!   the nightly's, but the nightly sysroot ships a shared libLLVM; bpf-linker must use
//!   the same LLVM major as rustc, so the `llvm-NN` feature is chosen from it.
//!
//! The linker goes to `<target>/tools/bpf-linker-llvmNN/`, so a second run with
//! nothing changed only checks and takes seconds.

use crate::cmd::{self, nightly_cmd};
use anyhow::{Context, Result, bail};
use object::{Object, ObjectSection};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "bpfel-unknown-none";
const BPF_LINKER_VERSION: &str = "0.13";

/// What we need to know about the nightly toolchain.
struct Nightly {
    sysroot: PathBuf,
    llvm_major: u32,
}

impl Nightly {
    fn lib_dir(&self) -> PathBuf {
        self.sysroot.join("lib")
    }
}

pub fn run() -> Result<PathBuf> {
    let nightly = detect_nightly()?;
    ensure_rust_src(&nightly)?;
    let linker = ensure_bpf_linker(&nightly)?;
    let object = build(&nightly, &linker)?;
    check_object(&object)?;
    Ok(object)
}

fn detect_nightly() -> Result<Nightly> {
    let fix = "the eBPF programs need the nightly toolchain; install it with \
               `rustup toolchain install nightly --profile minimal`";
    let version = cmd::output(nightly_cmd("rustc").arg("-vV")).context(fix)?;
    let llvm_major = parse_llvm_major(&version)
        .with_context(|| format!("no `LLVM version: NN` in `rustc +nightly -vV`:\n{version}"))?;
    let sysroot = cmd::output(nightly_cmd("rustc").args(["--print", "sysroot"])).context(fix)?;
    Ok(Nightly {
        sysroot: PathBuf::from(sysroot.trim()),
        llvm_major,
    })
}

fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    let version = rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?;
    version.split('.').next()?.trim().parse().ok()
}

fn ensure_rust_src(nightly: &Nightly) -> Result<()> {
    let core = nightly.sysroot.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(());
    }
    eprintln!("rust-src for nightly is missing; installing it");
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("could not install rust-src; run `rustup component add rust-src --toolchain nightly`")
}

/// Returns the path of a working bpf-linker for this nightly's LLVM, building it if needed.
fn ensure_bpf_linker(nightly: &Nightly) -> Result<PathBuf> {
    let root = cmd::target_dir()
        .join("tools")
        .join(format!("bpf-linker-llvm{}", nightly.llvm_major));
    let linker = root.join("bin/bpf-linker");
    if linker_works(&linker, nightly) {
        return Ok(linker);
    }
    eprintln!(
        "bpf-linker for LLVM {} is missing; building it against the nightly's libLLVM (about a minute)",
        nightly.llvm_major
    );
    let libllvm = find_libllvm(&nightly.lib_dir())?;
    // llvm-sys looks for `$LLVM_PREFIX/lib/libLLVM.so`; the sysroot only has versioned
    // names, so give it a prefix holding one link to the nightly's library.
    let prefix = root.join("llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))
        .with_context(|| format!("could not create {}", prefix.display()))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("could not link {} to {}", link.display(), libllvm.display()))?;

    let feature = format!("llvm-{}", nightly.llvm_major);
    let install = format!(
        "LLVM_PREFIX={} cargo +nightly install bpf-linker --version ^{BPF_LINKER_VERSION} \
         --no-default-features --features {feature} --root {}",
        prefix.display(),
        root.display()
    );
    cmd::run(
        nightly_cmd("cargo")
            .args(["install", "bpf-linker", "--force", "--version"])
            .arg(format!("^{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", &feature, "--root"])
            .arg(&root)
            .env("LLVM_PREFIX", &prefix)
            .env("LD_LIBRARY_PATH", nightly.lib_dir()),
    )
    .with_context(|| {
        format!(
            "could not build bpf-linker (does bpf-linker {BPF_LINKER_VERSION} have the `{feature}` \
             feature for this nightly's LLVM?); the command was: {install}"
        )
    })?;
    if !linker_works(&linker, nightly) {
        bail!(
            "{} was installed but does not run; try `LD_LIBRARY_PATH={} {} --version`",
            linker.display(),
            nightly.lib_dir().display(),
            linker.display()
        );
    }
    Ok(linker)
}

fn linker_works(linker: &Path, nightly: &Nightly) -> bool {
    linker.is_file()
        && Command::new(linker)
            .arg("--version")
            .env("LD_LIBRARY_PATH", nightly.lib_dir())
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The nightly's shared libLLVM. Its lib folder also holds a `libLLVM-NN-….so` that is a
/// linker script pointing at the real library, so take the file that is an ELF object.
fn find_libllvm(lib_dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(lib_dir).with_context(|| {
        format!(
            "could not read the nightly's lib folder {}",
            lib_dir.display()
        )
    })?;
    let is_elf = |p: &Path| {
        let mut magic = [0u8; 4];
        std::fs::File::open(p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| &magic == b"\x7fELF")
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        .filter(|p| is_elf(p))
        .collect();
    found.sort();
    found.into_iter().next().with_context(|| {
        format!(
            "no shared libLLVM in {}: the nightly toolchain ships one; reinstall it with \
             `rustup toolchain install nightly --force`",
            lib_dir.display()
        )
    })
}

fn build(nightly: &Nightly, linker: &Path) -> Result<PathBuf> {
    let target_dir = cmd::target_dir();
    // debuginfo=2 makes rustc emit the BTF that bpf-linker turns into .BTF: named map
    // fields in bpftool, and aya refuses BTF maps without it.
    let rustflags = r#"-C debuginfo=2 -C link-arg=--btf --cfg bpf_target_arch="x86_64""#;
    cmd::run(
        nightly_cmd("cargo")
            .current_dir(cmd::workspace_root())
            .args([
                "build",
                "--package",
                "vip-ebpf",
                "--release",
                "--target",
                TARGET,
            ])
            .args(["-Z", "build-std=core"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", linker)
            .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS", rustflags)
            .env("LD_LIBRARY_PATH", nightly.lib_dir()),
    )
    .context("the eBPF build failed (see the compiler output above)")?;
    Ok(target_dir.join(TARGET).join("release").join("vip-ebpf"))
}

/// Fails unless the object is an eBPF ELF with BTF and at least one program.
fn check_object(path: &Path) -> Result<()> {
    let data =
        std::fs::read(path).with_context(|| format!("no eBPF object at {}", path.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{} is not an ELF object", path.display()))?;
    if file.section_by_name(".BTF").is_none() {
        bail!(
            "{} has no .BTF section (was debuginfo turned off?)",
            path.display()
        );
    }
    let programs = file
        .sections()
        .filter(|s| {
            s.name().is_ok_and(|n| {
                [
                    "xdp",
                    "tc",
                    "tcx",
                    "sockops",
                    "tracepoint",
                    "tp_btf",
                    "iter",
                ]
                .iter()
                .any(|p| n.starts_with(p))
            })
        })
        .count();
    if programs == 0 {
        bail!("{} holds no eBPF program section", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_llvm_major;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let vv = "rustc 1.97.0-nightly\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.95.0\n"), None);
    }
}
