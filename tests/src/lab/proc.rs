//! Processes started inside a lab host, and stopping them.
//!
//! The lab keeps a handle to every process it started, so whatever a test leaves
//! running is killed when the lab is dropped (also while a failed test unwinds).
//! Dropping a [`Proc`] handle alone does not stop the process.
//!
//! Signals go to the process itself, not to children it starts: commands should be
//! the program itself (or `exec` it). Should a run be killed outright, the next lab's
//! sweep kills whatever is left inside the dead lab's namespaces.

use std::process::{Child, ChildStderr, ChildStdout, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How often a wait checks whether the process has exited.
const POLL: Duration = Duration::from_millis(10);

/// Every process started in one lab.
#[derive(Default)]
pub(crate) struct ProcTable(Mutex<Vec<Arc<Mutex<Child>>>>);

impl ProcTable {
    pub(crate) fn add(&self, child: Child, what: String) -> Proc {
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        lock(&self.0).push(Arc::clone(&child));
        Proc { child, pid, what }
    }

    /// SIGKILLs and reaps every process still running. Never panics.
    pub(crate) fn kill_all(&self) {
        for child in lock(&self.0).drain(..) {
            let mut child = lock(&child);
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl std::fmt::Debug for ProcTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcTable({} processes)", lock(&self.0).len())
    }
}

/// A process running inside a lab host.
pub struct Proc {
    child: Arc<Mutex<Child>>,
    pid: u32,
    what: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        lock(&self.child)
            .try_wait()
            .with_context(|| format!("waiting for {}", self.what))
    }

    /// Waits up to `timeout` for it to exit; None if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops it gracefully: SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&self, grace: Duration) -> Result<ExitStatus> {
        if self.try_wait()?.is_none() {
            // Not reaped yet, so the pid is still this process's (perhaps a zombie's).
            let pid = libc::pid_t::try_from(self.pid)?;
            // SAFETY: kill(2) with a pid we own and a valid signal number.
            if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
                let err = std::io::Error::last_os_error();
                return Err(err).with_context(|| format!("SIGTERM to {}", self.what));
            }
        }
        match self.wait_timeout(grace)? {
            Some(status) => Ok(status),
            None => {
                log::warn!("{} ignored SIGTERM for {grace:?}; killing it", self.what);
                self.kill()
            }
        }
    }

    /// Kills it at once (SIGKILL) and reaps it.
    pub fn kill(&self) -> Result<ExitStatus> {
        let mut child = lock(&self.child);
        // Child::kill does nothing for a process already reaped.
        child
            .kill()
            .with_context(|| format!("SIGKILL to {}", self.what))?;
        child
            .wait()
            .with_context(|| format!("waiting for {}", self.what))
    }

    /// Its stdout, if the command was given `Stdio::piped()` (once).
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        lock(&self.child).stdout.take()
    }

    /// Its stderr, if the command was given `Stdio::piped()` (once).
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        lock(&self.child).stderr.take()
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({}, pid {})", self.what, self.pid)
    }
}

/// Locks even a poisoned mutex: a panicking test must not stop the cleanup.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
