//! `cargo xtask bench`: the benchmarks, each against a baseline measured in the same run:
//! the planner (`place` on 64 read VIPs x 9 members, vip-agent/benches/plan.rs), and
//! resetting 1,000 and 10,000 connections by each path against `ss -K`
//! (tests/benches/reset.rs, needs root), and how fast the write VIP follows a planned
//! switchover and clients notice, against keepalived and a hook script
//! (tests/benches/failover.rs, needs root).

use crate::{build_ebpf, cmd, test};
use anyhow::Result;
use std::process::Command;

/// Debian packages the failover bench runs: the baselines (keepalived, and `arping` for
/// the hook script), the `mariadb` client their checks ask mysqld with, and `ip`.
const FAILOVER_PACKAGES: &[&str] = &[
    "keepalived",
    "iputils-arping",
    "mariadb-client-core",
    "iproute2",
];

pub fn run() -> Result<()> {
    // vip-agent embeds the eBPF object, so nothing of it builds without the object.
    build_ebpf::run()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    cmd::run(
        Command::new(&cargo)
            .current_dir(cmd::workspace_root())
            .args(["bench", "-p", "vip-agent", "--bench", "plan"]),
    )?;
    cmd::run(
        Command::new(&cargo)
            .current_dir(cmd::workspace_root())
            .args(["bench", "-p", "vip-tests", "--bench", "reset"]),
    )?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        test::install_packages(FAILOVER_PACKAGES)?;
    }
    cmd::run(
        Command::new(&cargo)
            .current_dir(cmd::workspace_root())
            .args(["bench", "-p", "vip-tests", "--bench", "failover"]),
    )
}
