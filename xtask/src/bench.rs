//! `cargo xtask bench`: the planner's benchmark, `place` on 64 read VIPs x 9 members
//! against a baseline measured in the same run (see vip-agent/benches/plan.rs).

use crate::{build_ebpf, cmd};
use anyhow::Result;
use std::process::Command;

pub fn run() -> Result<()> {
    // vip-agent embeds the eBPF object, so nothing of it builds without the object.
    build_ebpf::run()?;
    cmd::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(cmd::workspace_root())
            .args(["bench", "-p", "vip-agent", "--bench", "plan"]),
    )
}
