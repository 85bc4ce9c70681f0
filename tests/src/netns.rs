//! Entering one network namespace, and nothing else.
//!
//! `ip netns exec` also remounts /sys, which hides /sys/fs/bpf and the cgroup tree from
//! the process it starts. vip-agent needs both, so lab processes enter only the network
//! namespace, with setns(2) on the file that `ip netns add` pins under /run/netns.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Where `ip netns add NAME` pins a namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns takes a valid open fd and a flag; it only changes this thread's
    // network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has entered namespace `name`.
///
/// Sockets keep the namespace they were created in, so a listener or client socket made
/// by `f` can be handed back and used from any thread.
pub fn run_in<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path(name))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name}: {e}")))?;
    std::thread::spawn(move || -> io::Result<T> {
        enter(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other(format!("thread in network namespace {name} panicked")))?
}

/// Makes `cmd` start inside network namespace `name` (and only that namespace).
pub fn command_in(name: &str, cmd: &mut Command) -> io::Result<()> {
    let ns = File::open(path(name))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name}: {e}")))?;
    // SAFETY: the closure only calls setns(2), which is async-signal-safe, and keeps `ns`
    // alive by moving it in.
    unsafe {
        cmd.pre_exec(move || enter(&ns));
    }
    Ok(())
}
