//! `cargo xtask simulate`: the deterministic simulation of the coordination core
//! (vip-dsim), built with optimizations, since a useful run is hundreds of thousands of
//! schedules. Every argument goes to vip-dsim (`--seeds N --from S --json --trace SEED`).

use crate::cmd;
use anyhow::Result;
use std::process::Command;

pub fn run(args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    cmd::run(
        Command::new(cargo)
            .current_dir(cmd::workspace_root())
            .args(["run", "--quiet", "--release", "-p", "vip-dsim", "--"])
            .args(args),
    )
}
