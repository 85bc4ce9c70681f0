//! Test infrastructure for vip-agent, shared by the end-to-end tests, `xtask` and the
//! benchmarks:
//!
//! - [`lab`]: hosts and clients as network namespaces on a bridge that lives in its own
//!   namespace, with partitions, link cuts and a capture of ARP / neighbour advertisements.
//! - [`sim`]: a simulated MySQL Group Replication group that speaks the real MySQL wire
//!   protocol, scripted by a controller.
//! - [`netns`]: running code or processes inside one network namespace only.
//! - [`scratch`]: temp directories removed on drop.
//! - [`cluster`]: the lab, the group and one vip-agent per host together, as the
//!   end-to-end tests and `cargo xtask demo` use them.
//! - [`bench`]: what the privileged benches share (percentiles, their output files).
//! - [`chaos`]: random fault schedules with the invariants checked (`cargo xtask chaos`).
//! - [`scenario`]: the failover scenarios of `cargo xtask lab`, measured from outside.
//! - [`mariadb`]: a private, real MariaDB server (a child process) for the tests of the
//!   agent's connection to mysqld: authentication, max_connections, TLS, stop and kill.
//! - [`systemd`]: a real systemd booted in private namespaces over an overlay of the
//!   host's root, where the package test installs and runs the .deb.
//!
//! Nothing here ships inside the agent.

pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod lab;
pub mod mariadb;
pub mod netns;
pub mod scenario;
pub mod scratch;
pub mod sim;
pub mod systemd;

/// A field of a /proc/<pid>/status text, e.g. "CapEff", trimmed ("" when absent).
pub fn proc_status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The system user the tests run agents as (the .deb makes `vip-agent`); created once
/// if missing, and left for the next run. Returns its uid.
pub fn service_user() -> u32 {
    const USER: &str = SERVICE_USER;
    let id = |flag| {
        std::process::Command::new("id")
            .args([flag, USER])
            .output()
            .expect("running id")
    };
    if !id("-u").status.success() {
        let out = std::process::Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .output()
            .expect("running useradd");
        assert!(out.status.success(), "useradd: {out:?}");
    }
    String::from_utf8_lossy(&id("-u").stdout)
        .trim()
        .parse()
        .expect("a uid from id -u")
}

/// The name of [`service_user`].
pub const SERVICE_USER: &str = "vip-agent-lab";

/// Whether privileged tests may run. Lab, eBPF and netlink tests need root.
///
/// Outside CI a non-root run skips them with a note on stderr. Under `CI=true` a skip
/// would hide a failure, so it panics instead.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test needs root (network namespaces, eBPF), and CI=true forbids skipping it");
    }
    eprintln!("SKIPPED (needs root): run the tests as root, e.g. `sudo -E cargo xtask test`");
    false
}

/// The `vip-agent` binary the end-to-end tests run: `$VIP_AGENT_BIN`, else the one cargo
/// built next to this test executable (`target/<profile>/vip-agent`).
///
/// `cargo xtask test` builds it before the tests; a bare `cargo test` may not.
pub fn agent_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("VIP_AGENT_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/vip-agent
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("vip-agent"))
        .expect("test executables live in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --bins` (cargo xtask test does), \
         or set VIP_AGENT_BIN",
        bin.display()
    );
    bin
}
