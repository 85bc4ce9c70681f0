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

/// How to grant the capabilities, for every way the agent is started.
pub const GRANT: &str = "Grant the capabilities: in a systemd unit, list them in both \
    AmbientCapabilities= and CapabilityBoundingSet= (`AmbientCapabilities=CAP_NET_ADMIN \
    CAP_NET_RAW CAP_BPF CAP_PERFMON`; the packaged vip-agent@.service has both lines); for a \
    binary started by hand, `setcap cap_net_admin,cap_net_raw,cap_bpf,cap_perfmon+ep \
    /usr/bin/vip-agent`; in a container, `--cap-add NET_ADMIN --cap-add NET_RAW --cap-add \
    BPF --cap-add PERFMON` with host networking; or run it as root.";

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
    /// the gratuitous ARP / unsolicited NA. With `ebpf` (datapath.guard or datapath.track
    /// on), CAP_BPF and CAP_PERFMON too: a missing line in a unit is a deployment mistake
    /// to fix, not a reason to run silently without the guard.
    pub fn require(self, ebpf: bool) -> Result<()> {
        let mut needed = vec![
            (
                CAP_NET_ADMIN,
                "CAP_NET_ADMIN (to bind the VIPs and reset connections)",
            ),
            (
                CAP_NET_RAW,
                "CAP_NET_RAW (to announce the VIPs with ARP / NA)",
            ),
        ];
        if ebpf {
            needed.push((
                CAP_BPF,
                "CAP_BPF (to load the eBPF guard, tracker and reset)",
            ));
            needed.push((
                CAP_PERFMON,
                "CAP_PERFMON (for the tracker and the iter/tcp reset)",
            ));
        }
        let missing: Vec<(u32, &str)> = needed
            .into_iter()
            // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
            .filter(|(cap, _)| {
                !(self.has(*cap)
                    || (matches!(*cap, CAP_BPF | CAP_PERFMON) && self.has(CAP_SYS_ADMIN)))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // Turning eBPF off is a way out only when an eBPF capability is what is missing.
        let ebpf_missing = missing
            .iter()
            .any(|(cap, _)| matches!(*cap, CAP_BPF | CAP_PERFMON));
        let missing: Vec<&str> = missing.into_iter().map(|(_, what)| what).collect();
        let ebpf_off = if ebpf_missing {
            " Or, to run without eBPF (no guard, no tracking; connections are then reset \
             over netlink), set datapath.guard = false and datapath.track = false."
        } else {
            ""
        };
        bail!(
            "vip-agent lacks {}. {GRANT}{ebpf_off}",
            missing.join(" and ")
        )
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
        root.require(true).unwrap();
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
        c.require(false).unwrap();
        let e = c.require(true).unwrap_err().to_string();
        assert!(
            e.contains("lacks CAP_BPF (") && e.contains("datapath.guard = false"),
            "{e}"
        );
    }

    #[test]
    fn cap_bpf_without_perfmon_has_no_tracing() {
        let c = caps(&format!("{:x}", (1u64 << 39) | (1 << 12) | (1 << 13)));
        assert!(c.bpf());
        assert_eq!(c.missing_for_tracing(), Some("the agent lacks CAP_PERFMON"));
    }

    #[test]
    fn missing_net_caps_is_an_error_naming_every_fix() {
        let c = caps(&format!("{:x}", (1u64 << 39) | (1 << 38)));
        let e = c.require(true).unwrap_err().to_string();
        assert!(
            e.starts_with("vip-agent lacks CAP_NET_ADMIN (to bind the VIPs and reset connections) and CAP_NET_RAW"),
            "{e}"
        );
        for fix in [
            "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON",
            "CapabilityBoundingSet=",
            "setcap cap_net_admin,cap_net_raw,cap_bpf,cap_perfmon+ep",
            "--cap-add NET_RAW",
        ] {
            assert!(e.contains(fix), "{fix}: {e}");
        }
        // The eBPF way out is offered only when an eBPF capability is missing.
        assert!(!e.contains("datapath.guard = false"), "{e}");
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
        let old_style = caps(&format!("{:x}", (1u64 << 21) | (1 << 12) | (1 << 13)));
        old_style.require(true).unwrap();
        assert_eq!(Capabilities::from_status("no caps here"), None);
    }
}
