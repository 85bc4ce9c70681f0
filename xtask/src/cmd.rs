//! Running external commands with errors that say what failed.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
/// vip-agent's build script looks for the eBPF object by the same rule.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; fails naming the command and its exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    eprintln!("+ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; fails with its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `rustup run nightly <program>` command, cleaned of the variables that the outer
/// stable cargo and rustup set, so the nightly toolchain is really the one used.
pub fn nightly_cmd(program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", program]);
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The vip-agent binary the lab runs: `$VIP_AGENT_BIN` as is (e.g. a copy that a long
/// campaign keeps using while the tree is rebuilt), else the debug build, built now.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("VIP_AGENT_BIN").filter(|b| !b.is_empty()) {
        return Ok(bin.into());
    }
    crate::build_ebpf::run()?;
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args(["build", "--quiet", "--bin", "vip-agent"]),
    )?;
    Ok(target_dir().join("debug/vip-agent"))
}

/// The runtime the lab tasks (demo, lab, chaos) drive the cluster from.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A cargo subcommand the xtasks install themselves (cargo-fuzz, cargo-deb).
pub struct CargoTool {
    /// The crate, and the binary it installs.
    pub name: &'static str,
    /// A `cargo install --version` requirement, e.g. `=3.8.0`.
    pub version: &'static str,
    /// Its folder under `<target>/tools`.
    pub folder: &'static str,
    /// Arguments that make a working install print its version.
    pub probe: &'static [&'static str],
}

impl CargoTool {
    /// The folder holding a working binary, installed there (`cargo install --locked`)
    /// if missing, so a fresh machine needs nothing by hand.
    pub fn ensure(&self) -> Result<PathBuf> {
        let root = target_dir().join("tools").join(self.folder);
        let bin = root.join("bin");
        let exe = bin.join(self.name);
        if self.works(&exe) {
            return Ok(bin);
        }
        eprintln!(
            "{} is missing; installing it into {}",
            self.name,
            root.display()
        );
        let started = std::time::Instant::now();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let install = format!(
            "cargo install {} --locked --version {} --root {}",
            self.name,
            self.version,
            root.display()
        );
        run(Command::new(&cargo)
            .args(["install", self.name, "--locked", "--version", self.version])
            .arg("--root")
            .arg(&root))
        .with_context(|| format!("could not install {}; try `{install}`", self.name))?;
        eprintln!("{} installed in {:.0?}", self.name, started.elapsed());
        if !self.works(&exe) {
            bail!(
                "{} was installed but does not run; try `{} {}`",
                exe.display(),
                exe.display(),
                self.probe.join(" ")
            );
        }
        Ok(bin)
    }

    fn works(&self, exe: &Path) -> bool {
        exe.is_file()
            && Command::new(exe)
                .args(self.probe)
                .output()
                .is_ok_and(|o| o.status.success())
    }
}
