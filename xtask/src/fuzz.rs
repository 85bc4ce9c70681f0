//! `cargo xtask fuzz [--seconds N] [TARGET...]`: fuzzes each target for N seconds.
//!
//! Every reader of input that is not the agent's own must not panic on any input: the
//! peer frame (anyone who can reach the peer port), the config file and my.cnf (the
//! operator's), the manual topology (the CLI's) and mysqld's answers. This installs
//! cargo-fuzz if missing (into `<target>/tools`, like bpf-linker), then runs the targets
//! of `fuzz/` one after the other with the nightly toolchain. It fails if the fuzzer
//! finds a crash; the input is kept under `fuzz/artifacts/<target>/`.

use crate::{build_ebpf, cmd};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// cargo-fuzz, installed into `<target>/tools/cargo-fuzz`.
const CARGO_FUZZ: cmd::CargoTool = cmd::CargoTool {
    name: "cargo-fuzz",
    version: "^0.13",
    folder: "cargo-fuzz",
    probe: &["fuzz", "--version"],
};
/// Every fuzz target in `fuzz/`, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[&str] = &[
    "peer_frame",
    "config_file",
    "mycnf",
    "topology",
    "members_rows",
];

/// Fuzzes each of `targets` (every one when empty) for `seconds`.
pub fn run(seconds: u64, targets: &[String]) -> Result<()> {
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for t in &chosen {
        if !TARGETS.contains(t) {
            bail!(
                "no fuzz target {t:?}; the targets are {}",
                TARGETS.join(", ")
            );
        }
    }
    cmd::output(cmd::nightly_cmd("rustc").arg("-V")).context(
        "fuzzing needs the nightly toolchain; install it with \
         `rustup toolchain install nightly --profile minimal`",
    )?;
    let tools = CARGO_FUZZ.ensure()?;
    // vip-agent's build script embeds the eBPF object; build it unless one is given.
    let ebpf_object = match std::env::var_os("VIP_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => build_ebpf::run()?,
    };

    let root = cmd::workspace_root();
    let path = std::env::join_paths(
        std::iter::once(tools.clone()).chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        ),
    )
    .context("PATH holds an entry that cannot be joined")?;
    for target in chosen {
        fuzz_one(&root, target, seconds, &path, &ebpf_object)?;
    }
    Ok(())
}

fn fuzz_one(
    root: &std::path::Path,
    target: &str,
    seconds: u64,
    path: &std::ffi::OsStr,
    ebpf_object: &std::path::Path,
) -> Result<()> {
    let fuzz_dir = root.join("fuzz");
    // New inputs go to corpus/ (kept between runs, not committed); seeds/ is read only.
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("could not create {}", corpus.display()))?;
    let seeds = fuzz_dir.join("seeds").join(target);
    eprintln!("fuzzing {target} for {seconds} s");
    let result = cmd::run(
        cmd::nightly_cmd("cargo")
            .current_dir(root)
            .env("PATH", path)
            .env("VIP_EBPF_OBJECT", ebpf_object)
            // The readers are safe Rust: AddressSanitizer would find nothing there, and
            // would halve the speed and instrument every dependency a second time.
            // Panics, overflows (debug assertions are on) and stack overflows are caught.
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // One line per new input would be ~10k lines a minute in CI's log; crashes
            // and the final statistics are printed all the same.
            .arg("-verbosity=0")
            .arg("-print_final_stats=1"),
    );
    if result.is_err() {
        bail!(
            "the fuzzer found a crash in the `{target}` target (or could not run; see above). \
             The input is in {}; replay it with \
             `cargo +nightly fuzz run --sanitizer none {target} <that file>` in {}",
            fuzz_dir.join("artifacts").join(target).display(),
            root.display()
        );
    }
    Ok(())
}
