//! What the agent can do on this host, checked at start: its capabilities and the
//! kernel's BTF. The datapath degrades part by part on what is missing (and says so in
//! the log and in `vip-agent status`); what the agent cannot work without is an error.

use anyhow::{Result, bail};

/// Capability numbers (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capabilities of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities(u64);

impl Capabilities {
    /// Reads `CapEff` from /proc/self/status. If it cannot be read, assumes everything:
    /// the kernel's own checks then give the precise error.
    pub fn current() -> Capabilities {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|text| Capabilities::from_status(&text))
            .unwrap_or(Capabilities(u64::MAX))
    }

    /// Parses the `CapEff:` line of a /proc/<pid>/status text.
    pub fn from_status(text: &str) -> Option<Capabilities> {
        let hex = text.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
        u64::from_str_radix(hex, 16).ok().map(Capabilities)
    }

    fn has(self, cap: u32) -> bool {
        self.0 & (1 << cap) != 0
    }

    /// Loading eBPF programs and maps (CAP_SYS_ADMIN implies it on any kernel).
    pub fn bpf(self) -> bool {
        self.has(CAP_BPF) || self.has(CAP_SYS_ADMIN)
    }

    /// Tracing programs (tp_btf, iterators) and reading kernel memory from them.
    pub fn tracing(self) -> bool {
        self.bpf() && (self.has(CAP_PERFMON) || self.has(CAP_SYS_ADMIN))
    }

    /// The capabilities the agent cannot run without, as one error naming the fix:
    /// CAP_NET_ADMIN binds the VIPs and destroys sockets over netlink, CAP_NET_RAW sends
    /// the gratuitous ARP / unsolicited NA.
    pub fn require_basics(self) -> Result<()> {
        let missing: Vec<&str> = [
            (
                CAP_NET_ADMIN,
                "CAP_NET_ADMIN (to bind the VIPs and reset connections)",
            ),
            (
                CAP_NET_RAW,
                "CAP_NET_RAW (to announce the VIPs with ARP / NA)",
            ),
        ]
        .into_iter()
        .filter(|(cap, _)| !self.has(*cap))
        .map(|(_, what)| what)
        .collect();
        if !missing.is_empty() {
            bail!(
                "vip-agent lacks {}: run it as root, or grant it with \
                 AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON in its \
                 systemd unit",
                missing.join(" and ")
            );
        }
        Ok(())
    }

    /// Why eBPF programs of a kind cannot load, or `None`.
    pub fn missing_for_bpf(self) -> Option<&'static str> {
        (!self.bpf()).then_some("the agent lacks CAP_BPF")
    }

    pub fn missing_for_tracing(self) -> Option<&'static str> {
        if !self.bpf() {
            Some("the agent lacks CAP_BPF")
        } else if !self.tracing() {
            Some("the agent lacks CAP_PERFMON")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(hex: &str) -> Capabilities {
        Capabilities::from_status(&format!("Name:\tvip-agent\nCapInh:\t0\nCapEff:\t{hex}\n"))
            .unwrap()
    }

    #[test]
    fn root_has_everything() {
        let root = caps("000001ffffffffff");
        assert!(root.bpf() && root.tracing());
        root.require_basics().unwrap();
        assert_eq!(root.missing_for_tracing(), None);
    }

    #[test]
    fn without_cap_bpf_ebpf_is_off_but_the_agent_runs() {
        // root minus CAP_BPF and CAP_SYS_ADMIN
        let c = caps(&format!(
            "{:x}",
            0x1ff_ffff_ffffu64 & !(1 << 39) & !(1 << 21)
        ));
        assert!(!c.bpf());
        assert_eq!(c.missing_for_bpf(), Some("the agent lacks CAP_BPF"));
        assert_eq!(c.missing_for_tracing(), Some("the agent lacks CAP_BPF"));
        c.require_basics().unwrap();
    }

    #[test]
    fn cap_bpf_without_perfmon_has_no_tracing() {
        let c = caps(&format!("{:x}", (1u64 << 39) | (1 << 12) | (1 << 13)));
        assert!(c.bpf());
        assert_eq!(c.missing_for_tracing(), Some("the agent lacks CAP_PERFMON"));
    }

    #[test]
    fn missing_net_caps_is_an_error_naming_the_fix() {
        let c = caps(&format!("{:x}", (1u64 << 39) | (1 << 38)));
        let e = c.require_basics().unwrap_err().to_string();
        assert!(
            e.contains("CAP_NET_ADMIN") && e.contains("CAP_NET_RAW"),
            "{e}"
        );
        assert!(e.contains("AmbientCapabilities"), "{e}");
        assert_eq!(Capabilities::from_status("no caps here"), None);
    }
}
