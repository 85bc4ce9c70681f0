//! What the privileged benches (`tests/benches/`) share: percentiles, and writing their
//! results where `cargo xtask bench` collects them.

use std::path::PathBuf;

/// The value at fraction `p` (0.5 median, 0.99 p99) of `sorted` (ascending, not empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Writes `target/bench/<name>.json` and `<name>.md` in the workspace, and says where.
pub fn write(name: &str, json: &serde_json::Value, md: &str) -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let text = serde_json::to_string_pretty(json).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(format!("{name}.json")), text)?;
    std::fs::write(dir.join(format!("{name}.md")), md)?;
    println!("written to {}", dir.display());
    Ok(())
}
