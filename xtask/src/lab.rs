//! `cargo xtask lab SCENARIO [--json] [--runs N]`: one failover scenario (or `all`) in
//! the lab, on the embedded simulated group, with a human timeline or one JSON object
//! per run; with `--runs`, each scenario N times and the median and p99 of its times.
//! Exits non-zero when an invariant failed in any run.

use crate::cmd;
use anyhow::{Context, Result, bail};
use vip_tests::scenario;

pub fn run(name: &str, json: bool, runs: usize) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab creates network namespaces and binds addresses: run it as root");
    }
    let names: Vec<&str> = match name {
        "all" => scenario::NAMES.to_vec(),
        n if scenario::NAMES.contains(&n) => vec![n],
        n => bail!(
            "no scenario {n:?}; the scenarios are: all, {}",
            scenario::NAMES.join(", ")
        ),
    };
    let agent_bin = cmd::agent_binary()?;
    let runtime = cmd::runtime()?;
    let mut failed = Vec::new();
    let mut all = Vec::new();
    for name in names.iter().flat_map(|n| std::iter::repeat_n(*n, runs)) {
        let reports = runtime
            .block_on(scenario::run(name, &agent_bin))
            .with_context(|| format!("scenario {name}"))?;
        all.extend(reports.iter().cloned());
        for r in reports {
            if json {
                println!("{}", r.json());
                if !r.ok {
                    // The timeline says what went wrong; the JSON line only that it did.
                    eprintln!("{}\n{}", r.human(), r.detail);
                }
            } else {
                println!("{}", r.human());
            }
            if !r.ok {
                failed.push(r.scenario.clone());
            }
        }
    }
    if runs > 1 {
        eprintln!("{}", scenario::summary(&all));
    }
    if !failed.is_empty() {
        bail!("invariants failed in: {}", failed.join(", "));
    }
    Ok(())
}
