//! `target/bench/summary.md`: every bench's table (`target/bench/<name>.md`) under a
//! heading of its own, after a line naming the machine, ready to paste into the README.

use crate::cmd;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Where the benches write (`tests/benches/*.rs` use the workspace's `target/bench`).
fn dir() -> PathBuf {
    cmd::workspace_root().join("target/bench")
}

/// Writes one section's text as `target/bench/<name>.md`.
pub fn write_section(name: &str, text: &str) -> Result<()> {
    let dir = dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.md"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// `N CPUs, kernel K, CPU model M`: what the figures were measured on.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = cmd::output(Command::new("uname").arg("-r"))
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("Machine: {cpus} CPUs (nproc), kernel {kernel}, CPU {model}.")
}

/// Concatenates every `target/bench/*.md` but the summary itself into `summary.md`.
pub fn write() -> Result<()> {
    let dir = dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".md")
                .map(str::to_owned)
        })
        .filter(|n| n != "summary")
        .collect();
    names.sort();
    let mut out = format!("# Benchmarks\n\n{}\n", machine());
    for name in &names {
        let text = std::fs::read_to_string(dir.join(format!("{name}.md")))?;
        out.push_str(&format!("\n## {name}\n\n{}\n", text.trim_end()));
    }
    let path = dir.join("summary.md");
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    println!("summary: {}", path.display());
    Ok(())
}
