//! `cargo xtask chaos --runs N --seed S`: N random fault schedules (run i draws seed
//! S + i) against a 3-host cluster, with the invariants checked; one JSON line per run,
//! a summary, and a non-zero exit when any run failed. A failed run is replayed with
//! `--runs 1 --seed <its seed>`.

use crate::cmd;
use anyhow::{Result, bail};
use std::time::Instant;
use vip_tests::chaos::Chaos;

pub fn run(runs: u64, seed: u64) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("chaos creates network namespaces and binds addresses: run it as root");
    }
    let agent_bin = cmd::agent_binary()?;
    let runtime = cmd::runtime()?;
    runtime.block_on(async {
        let mut chaos = Chaos::new(&agent_bin);
        if !chaos.netem() {
            eprintln!(
                "chaos: the kernel has no netem qdisc (sch_netem), so packet loss and delay \
                 are not drawn"
            );
        }
        let started = Instant::now();
        let mut failed = Vec::new();
        for i in 0..runs {
            let outcome = chaos.run(seed + i).await?;
            println!("{}", outcome.json());
            if !outcome.ok {
                eprintln!(
                    "chaos: run with seed {} FAILED: {}\n  steps: {}\n  replay: cargo xtask chaos --runs 1 --seed {}",
                    outcome.seed,
                    outcome.failures.join("; "),
                    outcome.steps.join("; "),
                    outcome.seed
                );
                failed.push(outcome.seed);
            }
        }
        eprintln!(
            "chaos: {runs} run(s) from seed {seed} in {:.0} s: {} failed{}",
            started.elapsed().as_secs_f64(),
            failed.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(" (seeds {failed:?})")
            }
        );
        if !failed.is_empty() {
            bail!("invariants failed in {} of {runs} run(s)", failed.len());
        }
        Ok(())
    })
}
