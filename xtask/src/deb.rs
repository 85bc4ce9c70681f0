//! `cargo xtask deb`: the Debian package, built by cargo-deb from
//! `[package.metadata.deb]` in vip-agent/Cargo.toml.
//!
//! Installs cargo-deb if missing (a pinned version, into `<target>/tools`, like
//! bpf-linker and cargo-fuzz), builds the eBPF object unless `VIP_EBPF_OBJECT` names
//! one, then the release binary and the .deb (`<target>/debian/vip-agent_*.deb`).

use crate::{build_ebpf, cmd};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// cargo-deb, pinned, installed into `<target>/tools/cargo-deb-3.8.0`.
const CARGO_DEB: cmd::CargoTool = cmd::CargoTool {
    name: "cargo-deb",
    version: "=3.8.0",
    folder: "cargo-deb-3.8.0",
    probe: &["--version"],
};

/// Builds the package and returns its path.
pub fn run() -> Result<PathBuf> {
    let tools = CARGO_DEB.ensure()?;
    // vip-agent's build script embeds the eBPF object; build it unless one is given.
    let ebpf_object = match std::env::var_os("VIP_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => build_ebpf::run()?,
    };
    let path = std::env::join_paths(
        std::iter::once(tools).chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        ),
    )
    .context("PATH holds an entry that cannot be joined")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut deb = Command::new(cargo);
    deb.current_dir(cmd::workspace_root())
        .env("PATH", path)
        .env("VIP_EBPF_OBJECT", &ebpf_object)
        .args(["deb", "--package", "vip-agent", "--locked"]);
    eprintln!("+ cargo deb --package vip-agent --locked");
    // cargo-deb prints the package's path on stdout, the build's progress on stderr.
    let out = deb
        .stderr(Stdio::inherit())
        .output()
        .context("could not start `cargo deb`")?;
    if !out.status.success() {
        bail!("`cargo deb --package vip-agent` failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let package = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb printed no .deb path:\n{stdout}"))?;
    if !package.is_file() {
        bail!(
            "cargo deb reported {}, which does not exist",
            package.display()
        );
    }
    Ok(package)
}
