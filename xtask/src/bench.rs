//! `cargo xtask bench`: the benchmarks, each against a baseline measured in the same run:
//! the planner (`place` on 64 read VIPs x 9 members, vip-agent/benches/plan.rs), and
//! resetting 1,000 and 10,000 connections by each path against `ss -K`
//! (tests/benches/reset.rs, needs root), the XDP guard's cost in packets per second
//! (tests/benches/guard.rs, root), an idle agent's memory and CPU against keepalived
//! (tests/benches/footprint.rs, root), and how fast the write VIP follows a planned
//! switchover and clients notice, against keepalived and a hook script
//! (tests/benches/failover.rs, root). Ends with `target/bench/summary.md`.

use crate::{bench_summary, build_ebpf, cmd, test};
use anyhow::{Context, Result};
use std::process::{Command, Stdio};

/// The baselines: keepalived (footprint and failover) and `arping` for the failover
/// bench's hook script, the `mariadb` client their role checks ask mysqld with, and `ip`.
const APT_PACKAGES: &[&str] = &[
    "keepalived",
    "iputils-arping",
    "mariadb-client-core",
    "iproute2",
];

pub fn run() -> Result<()> {
    // vip-agent embeds the eBPF object, so nothing of it builds without the object.
    build_ebpf::run()?;
    test::install_packages(APT_PACKAGES)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The planner prints its table; kept for the summary.
    let plan = Command::new(&cargo)
        .current_dir(cmd::workspace_root())
        .args(["bench", "-p", "vip-agent", "--bench", "plan"])
        .stderr(Stdio::inherit())
        .output()
        .context("could not start `cargo bench --bench plan`")?;
    let table = String::from_utf8_lossy(&plan.stdout);
    print!("{table}");
    anyhow::ensure!(
        plan.status.success(),
        "the plan bench failed ({})",
        plan.status
    );
    bench_summary::write_section("plan", &format!("```\n{}```\n", table))?;
    cmd::run(
        Command::new(&cargo)
            .current_dir(cmd::workspace_root())
            .args(["bench", "-p", "vip-tests", "--bench", "reset"]),
    )?;
    cmd::run(
        Command::new(&cargo)
            .current_dir(cmd::workspace_root())
            .args(["bench", "-p", "vip-tests", "--bench", "guard"]),
    )?;
    // The footprint is measured on the release binary, what ships; `cargo bench` builds
    // the bench in the release profile, so it finds this one next to it.
    cmd::run(
        Command::new(&cargo)
            .current_dir(cmd::workspace_root())
            .args(["build", "--release", "--bin", "vip-agent"]),
    )?;
    cmd::run(
        Command::new(&cargo)
            .current_dir(cmd::workspace_root())
            .args(["bench", "-p", "vip-tests", "--bench", "footprint"]),
    )?;
    cmd::run(
        Command::new(&cargo)
            .current_dir(cmd::workspace_root())
            .args(["bench", "-p", "vip-tests", "--bench", "failover"]),
    )?;
    bench_summary::write()
}
