//! `cargo xtask test`: the whole test run, as CI runs it, on a fresh machine.
//!
//! Order matters: system packages first (the lab and tests use them), then the eBPF
//! object (vip-agent embeds it, so nothing else builds without it), then formatting and
//! lints, then the .deb (the package test installs it), then every test of the default
//! workspace members, then every failover scenario and a short chaos campaign, then
//! 100,000 schedules of the coordination core's simulation, then every fuzz target for
//! a short while.

use crate::{build_ebpf, cmd, fuzz};
use anyhow::{Context, Result, bail};
use std::process::Command;

/// Debian packages the tests use: `ip` for the lab, `ping` for reachability, bpftool to
/// read pinned maps the way an operator does, a real MariaDB server for the tests of the
/// MGR poller (`mariadbd` and `mariadb-install-db`, which needs `my_print_defaults` from
/// the client package; the `-core` packages only, so no system service is installed or
/// started) and `openssl` for the certificates of its TLS tests. The package test boots
/// the host's `systemd` in namespaces and installs the .deb there, which needs `adduser`
/// (its dependency) and `ps` (`procps`) in the host's root, its container's lower layer.
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "bpftool",
    "mariadb-server-core",
    "mariadb-client-core",
    "openssl",
    "systemd",
    "adduser",
    "procps",
];

/// The short chaos campaign CI runs.
const CHAOS_RUNS: u64 = 10;
const CHAOS_SEED: u64 = 20261124;

/// How many schedules of the core's simulation CI runs (about three minutes on two
/// cores; the README reports a long run).
const SIMULATED_SCHEDULES: u64 = 100_000;

pub fn run(cargo_test_args: &[String]) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the tests create network namespaces and load eBPF programs, so they need root: \
             `sudo -E cargo xtask test`"
        );
    }
    install_packages(APT_PACKAGES)?;
    mount_bpffs()?;
    build_ebpf::run()?;
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(cmd::workspace_root());
        c
    };
    cmd::run(cargo().args(["fmt", "--all", "--check"]))
        .context("formatting differs; run `cargo fmt --all`")?;
    cmd::run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The end-to-end tests start the vip-agent binary, so build it first.
    cmd::run(cargo().args(["build", "--bins"]))?;
    // tests/tests/package.rs installs it in a systemd container.
    let package = crate::deb::run()?;
    eprintln!("built {}", package.display());
    cmd::run(
        cargo()
            .args(["test", "--no-fail-fast"])
            .args(cargo_test_args),
    )?;
    // Every failover scenario, as `cargo xtask lab all --json` runs it: fails when any
    // run's `ok` is false.
    crate::lab::run("all", true, 1)?;
    // A short chaos campaign (a fixed seed, so a failure replays; the README reports a
    // long one).
    crate::chaos::run(CHAOS_RUNS, CHAOS_SEED)?;
    // The coordination core's deterministic simulation: a fixed range of seeds, so a
    // failure replays with `cargo xtask simulate --trace <seed>`.
    crate::simulate::run(&["--seeds".into(), SIMULATED_SCHEDULES.to_string()])?;
    // The readers of outside input (the peer port's, anyone's who can reach it, above
    // all): 20 s of fuzzing each.
    fuzz::run(20, &[])
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs whichever of `packages` are missing (apt-get update first, then install).
pub(crate) fn install_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let fix = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    cmd::run(Command::new("apt-get").args(["update", "-q"]))
        .with_context(|| format!("could not install {}; run `{fix}`", missing.join(", ")))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("could not install {}; run `{fix}`", missing.join(", ")))
}

/// The agent pins its maps under /sys/fs/bpf; systemd mounts bpffs there on a normal
/// host, but a minimal container or VM may not have it.
fn mount_bpffs() -> Result<()> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("could not mount bpffs; run `mount -t bpf bpf /sys/fs/bpf`")
}
