//! Least privilege at run time: once the agent has loaded and attached its eBPF programs
//! and opened its sockets, it keeps only the capabilities the loop still uses.
//!
//! - CAP_NET_ADMIN: binding and removing the VIPs, netlink SOCK_DESTROY.
//! - CAP_NET_RAW: the gratuitous ARP / unsolicited NA sockets, opened at every move.
//!
//! CAP_BPF and CAP_PERFMON are needed only to load programs, create maps and attach
//! links, all done at start; the loaded objects are then used through their file
//! descriptors, which need no capability (kernel ≥ 6.5 checks privileges at creation).
//! Dropping them means a compromised agent can no longer load programs that read kernel
//! memory. Every other capability (root has them all) goes too.
//!
//! Capabilities belong to a thread, not a process: the drop must happen while the agent
//! is a single thread (the current-thread runtime before any blocking task), so every
//! thread created later inherits the reduced sets. [`drop_unneeded`] checks that.

use anyhow::{Context, Result, bail};
use caps::{CapSet, Capability, CapsHashSet};

/// What the loop keeps. Every listening socket (peer port, metrics) is bound before the
/// drop, so a port below 1024 needs CAP_NET_BIND_SERVICE only at start.
pub fn keep() -> CapsHashSet {
    CapsHashSet::from([Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW])
}

/// What happened, for the log and `vip-agent status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub kept: Vec<String>,
    pub dropped: Vec<String>,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(" ")
            }
        };
        write!(
            f,
            "kept {}; dropped {} after start",
            names(&self.kept),
            if self.dropped.len() > 8 {
                format!("{} capabilities", self.dropped.len())
            } else {
                names(&self.dropped)
            }
        )
    }
}

/// Reduces the effective, permitted and inheritable sets to `keep` (what the process
/// has of it), clears the ambient set, and, when allowed (CAP_SETPCAP), the bounding set
/// too, so nothing can be regained even by an exec.
pub fn drop_unneeded(keep: &CapsHashSet) -> Result<Dropped> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads > 1 {
        // Threads that already exist would keep their capabilities.
        bail!(
            "cannot drop capabilities: the agent already runs {threads} threads (a bug: \
             the drop must come before any blocking task)"
        );
    }
    let permitted = caps::read(None, CapSet::Permitted).context("reading the capabilities")?;
    let kept: CapsHashSet = permitted.intersection(keep).copied().collect();
    let dropped: CapsHashSet = permitted.difference(keep).copied().collect();
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        let bounding = caps::read(None, CapSet::Bounding).unwrap_or_default();
        for cap in bounding.difference(keep) {
            caps::drop(None, CapSet::Bounding, *cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing the ambient capabilities")?;
    let inheritable = caps::read(None, CapSet::Inheritable).unwrap_or_default();
    let inheritable: CapsHashSet = inheritable.intersection(keep).copied().collect();
    caps::set(None, CapSet::Inheritable, &inheritable)
        .context("reducing the inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &kept).context("reducing the effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("reducing the permitted capabilities")?;
    Ok(Dropped {
        kept: sorted(&kept),
        dropped: sorted(&dropped),
    })
}

fn sorted(set: &CapsHashSet) -> Vec<String> {
    let mut v: Vec<Capability> = set.iter().copied().collect();
    v.sort_by_key(|c| c.index());
    v.into_iter().map(|c| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_keeps_the_network_capabilities_only() {
        assert_eq!(
            sorted(&keep()),
            ["CAP_NET_ADMIN", "CAP_NET_RAW"].map(String::from)
        );
    }

    #[test]
    fn the_summary_names_what_was_kept_and_dropped() {
        let d = Dropped {
            kept: vec!["CAP_NET_ADMIN".into(), "CAP_NET_RAW".into()],
            dropped: vec!["CAP_BPF".into(), "CAP_PERFMON".into()],
        };
        assert_eq!(
            d.to_string(),
            "kept CAP_NET_ADMIN CAP_NET_RAW; dropped CAP_BPF CAP_PERFMON after start"
        );
        let root = Dropped {
            kept: d.kept.clone(),
            dropped: (0..38).map(|i| format!("CAP_{i}")).collect(),
        };
        assert!(
            root.to_string()
                .ends_with("dropped 38 capabilities after start")
        );
    }
}
