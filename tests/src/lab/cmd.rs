//! Running `ip` (iproute2), with errors that say exactly what failed.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs `ip ARGS…` and returns its stdout.
///
/// A failure carries the full command line and ip's stderr, so a test log shows which
/// step of a lab setup went wrong and why.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    let line = command_line(args);
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("`{line}`: cannot start ip (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}`: output is not UTF-8"))
}

/// Runs `ip -n NS ARGS…`: one command inside namespace `ns`.
pub(crate) fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    ip(&full)
}

/// Runs `ip -j -n NS ARGS…` and parses its JSON output.
pub(crate) fn ip_json<T: serde::de::DeserializeOwned>(ns: &str, args: &[&str]) -> Result<T> {
    let mut full = vec!["-j", "-n", ns];
    full.extend_from_slice(args);
    let out = ip(&full)?;
    // ip prints nothing at all (not `[]`) for some empty listings.
    let json = if out.trim().is_empty() { "[]" } else { &out };
    serde_json::from_str(json)
        .with_context(|| format!("`{}`: unexpected JSON: {out}", command_line(&full)))
}

fn command_line(args: &[&str]) -> String {
    std::iter::once("ip")
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}
