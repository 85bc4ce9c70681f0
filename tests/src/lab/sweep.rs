//! Lab names, and removing the namespaces of labs whose process died.
//!
//! Every namespace of a lab is named `vipl-<pid>-<n>-<role>`, with `n` counting the
//! labs of one process. A run killed before its `Drop` leaves its namespaces behind;
//! the next lab removes those whose `<pid>` no longer runs. Namespaces of live
//! processes are never touched: other test processes build labs in parallel.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, Ordering};

use super::cmd::ip;
use crate::netns;

/// The prefix shared by every lab namespace.
pub(crate) const PREFIX: &str = "vipl-";

/// A name for a new lab, unique across threads and processes: `vipl-<pid>-<n>`.
pub(crate) fn new_lab_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

/// iproute2 turns /run/netns into a shared mount the first time a namespace is added on
/// a machine; parallel first `ip netns add` calls can race on that and fail. So each
/// process adds and deletes one namespace alone before building any lab.
pub(crate) fn prepare_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let name = format!("{PREFIX}{}-init", std::process::id());
        let _ = ip(&["netns", "add", &name]);
        let _ = ip(&["netns", "delete", &name]);
    });
}

/// Deletes every lab namespace whose owning process is gone. Best-effort: a namespace
/// that cannot be deleted (or that another process's sweep deletes first) is skipped.
pub(crate) fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return; // no namespace was ever pinned
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if owner_pid(name).is_some_and(|pid| !alive(pid)) {
            kill_processes_in(name);
            match ip(&["netns", "delete", name]) {
                Ok(_) => log::info!("removed stale lab namespace {name}"),
                Err(e) => log::debug!("stale lab namespace {name}: {e:#}"),
            }
        }
    }
    remove_pins(|instance| owner_pid(instance).is_some_and(|pid| !alive(pid)));
}

/// Where agents pin their eBPF maps and links, one folder per instance. Lab agents name
/// their instance after their lab (`vipl-<pid>-<n>-…`).
const PIN_ROOT: &str = "/sys/fs/bpf/vip-agent";

/// Removes the pin folders of the instances `doomed` names: unpinning the links detaches
/// the programs (the tracker would otherwise keep running on the machine).
pub(crate) fn remove_pins(doomed: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(PIN_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(&doomed)
            && let Err(e) = std::fs::remove_dir_all(entry.path())
        {
            log::warn!("lab cleanup: {}: {e}", entry.path().display());
        }
    }
    // The agents' folder too, once no instance is left in it.
    let _ = std::fs::remove_dir(PIN_ROOT);
}

/// SIGKILLs every process whose network namespace is `ns`: a killed run cannot kill
/// what it started, and those processes would keep the namespace alive.
fn kill_processes_in(ns: &str) {
    let Ok(inode) = std::fs::metadata(netns::path(ns)).map(|m| m.ino()) else {
        return;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let wanted = format!("net:[{inode}]");
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let in_ns = std::fs::read_link(entry.path().join("ns/net"))
            .is_ok_and(|link| link.as_os_str() == wanted.as_str());
        if in_ns {
            log::info!("killing pid {pid}, left running in stale lab namespace {ns}");
            // SAFETY: kill(2) on a pid just seen inside the stale namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The pid in a lab namespace name, `vipl-<pid>-…`; None for any other name.
pub(crate) fn owner_pid(name: &str) -> Option<libc::pid_t> {
    let (pid, rest) = name.strip_prefix(PREFIX)?.split_once('-')?;
    if rest.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Whether a process with this pid exists (EPERM still means it exists).
fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the pid exists; nothing is sent.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pid_of_lab_names_only() {
        assert_eq!(owner_pid("vipl-1234-3-h1"), Some(1234));
        assert_eq!(owner_pid("vipl-1234-3-br"), Some(1234));
        assert_eq!(owner_pid("vipl-1234"), None);
        assert_eq!(owner_pid("vipl-x1-3-h1"), None);
        assert_eq!(owner_pid("vipl--3-h1"), None);
        assert_eq!(owner_pid("vipl-0-3-h1"), None);
        assert_eq!(owner_pid("other-1234-3-h1"), None);
    }

    #[test]
    fn lab_ids_are_unique_and_carry_the_pid() {
        let (a, b) = (new_lab_id(), new_lab_id());
        assert_ne!(a, b);
        assert_eq!(
            owner_pid(&format!("{a}-h1")),
            Some(std::process::id() as i32)
        );
    }
}
