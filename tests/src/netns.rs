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
use std::sync::Arc;

/// Where `ip netns add NAME` pins a namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn open(name: &str) -> io::Result<File> {
    File::open(path(name))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name}: {e}")))
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
    let ns = open(name)?;
    std::thread::spawn(move || -> io::Result<T> {
        enter(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other(format!("thread in network namespace {name} panicked")))?
}

/// Makes `cmd` start inside network namespace `name` (and only that namespace).
pub fn command_in(name: &str, cmd: &mut Command) -> io::Result<()> {
    let ns = open(name)?;
    // SAFETY: the closure only calls setns(2), which is async-signal-safe, and keeps `ns`
    // alive by moving it in.
    unsafe {
        cmd.pre_exec(move || enter(&ns));
    }
    Ok(())
}

/// A multi-thread tokio runtime with `workers` worker threads, every thread of which
/// (workers and blocking pool alike) lives in namespace `name`: the sockets its tasks
/// make belong there, for as many connections as a test wants to keep open at once.
///
/// Spawn the work on it (`rt.spawn(…)`, awaitable from another runtime): a future given
/// to `block_on` runs on the caller's thread, in the caller's namespace. Drop it with
/// `shutdown_background` when inside another runtime.
pub fn runtime_in(name: &str, workers: usize) -> io::Result<tokio::runtime::Runtime> {
    let ns = Arc::new(open(name)?);
    let label = name.to_owned();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_start(move || {
            // A thread that stayed in the caller's namespace would make its sockets
            // there, silently: better no runtime at all.
            if let Err(e) = enter(&ns) {
                panic!("entering network namespace {label}: {e}");
            }
        })
        .build()
}
