//! The XDP guard (`vip_guard`, `vip-ebpf/programs/src/guard.rs`): what this node does
//! with traffic for a VIP it has let go.
//!
//! The agent marks each VIP in the `VIPS` map: HELD while it owns it, RELEASED (with an
//! expiry) once it lets it go. Until the expiry, a client whose neighbour cache still
//! points at this node gets a TCP RST for every segment it sends to the VIP (so it fails
//! fast and reconnects to the new owner), and ARP requests / neighbour solicitations for
//! the VIP are dropped (so this node never answers for it again). Per-VIP counters
//! (`VIP_COUNTERS`, per CPU) record packets, bytes, RSTs sent and drops.
//!
//! This module attaches the program ([`attach`]) and reads the counters summed over
//! CPUs ([`read_counters`]); the VIP states are written through [`super::vip_table`].
//!
//! XDP mode: [`XdpMode::Default`] lets the kernel pick native (driver) mode where the
//! driver has it. On a veth, native XDP_TX needs the PEER to have NAPI (an XDP program
//! or GRO enabled on it), else every RST is silently dropped by veth; generic
//! ([`XdpMode::Skb`]) mode always works there. See [`auto_mode`].

use std::borrow::Borrow;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, anyhow, bail};
use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuHashMap};
use aya::programs::links::FdLink;
use aya::programs::{ProgramError, Xdp, XdpMode};
use serde::Serialize;
use vip_ebpf_common::{DstKey, GuardConfig, GuardCounters};

/// The program's name in the object, and the maps it uses.
pub const PROGRAM: &str = "vip_guard";
pub const VIPS_MAP: &str = "VIPS";
pub const COUNTERS_MAP: &str = "VIP_COUNTERS";
pub const CONFIG_MAP: &str = "GUARD_CONFIG";

/// Loads `vip_guard` (unless already loaded), writes `iface`'s MAC to `GUARD_CONFIG` and
/// attaches the program to `iface` in `mode` through a bpf_link.
///
/// `iface` is looked up in the network namespace of the calling THREAD. The returned
/// link keeps the program attached while it lives (or once pinned, while the pin
/// lives); dropping it detaches the program.
pub fn attach(ebpf: &mut Ebpf, iface: &str, mode: XdpMode) -> Result<FdLink> {
    let mac = interface_mac(iface)?;
    let map = ebpf
        .map_mut(CONFIG_MAP)
        .with_context(|| format!("the eBPF object has no {CONFIG_MAP} map"))?;
    let mut config: Array<&mut MapData, GuardConfig> = Array::try_from(map)?;
    config
        .set(0, GuardConfig { mac, _pad: [0; 2] }, 0)
        .context("could not write the guard's MAC to GUARD_CONFIG")?;

    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .with_context(|| format!("the eBPF object has no {PROGRAM} program"))?
        .try_into()?;
    if program.fd().is_err() {
        program.load().map_err(|e| {
            let hint = match &e {
                ProgramError::LoadError { io_error, .. }
                    if io_error.raw_os_error() == Some(libc::EPERM) =>
                {
                    "; loading XDP programs needs CAP_BPF and CAP_NET_ADMIN (or root)"
                }
                _ => "",
            };
            anyhow!(e).context(format!("the kernel refused to load {PROGRAM}{hint}"))
        })?;
    }
    let id = program
        .attach(iface, mode)
        .map_err(|e| explain_attach(e, iface, mode))?;
    let link = program.take_link(id)?;
    FdLink::try_from(link).map_err(|_| {
        // The XdpLink just dropped detached the netlink attachment again.
        anyhow!(
            "the kernel refused a bpf_link for XDP on {iface:?} and aya fell back to a \
             netlink attachment, which cannot be pinned; the guard needs kernel >= 5.9"
        )
    })
}

/// An attach error with what to do about it.
fn explain_attach(e: ProgramError, iface: &str, mode: XdpMode) -> anyhow::Error {
    let errno = match &e {
        ProgramError::UnknownInterface { .. } => {
            return anyhow!(e).context(format!(
                "no interface {iface:?} in the agent's network namespace; check the name \
                 with `ip link`"
            ));
        }
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    let hint = match errno {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "attaching XDP needs CAP_NET_ADMIN and CAP_BPF (or root)".to_owned()
        }
        Some(libc::EOPNOTSUPP) if mode == XdpMode::Driver => {
            format!("the driver of {iface:?} has no native XDP; use the generic mode (skb)")
        }
        Some(libc::EOPNOTSUPP) => format!("{iface:?} does not support XDP in mode {mode:?}"),
        Some(libc::EBUSY) | Some(libc::EEXIST) => format!(
            "another XDP program is attached to {iface:?} (in this or the other mode); see \
             `ip link show {iface}` or `bpftool net`, and detach it or leave the guard off"
        ),
        Some(libc::ERANGE) | Some(libc::EINVAL) => format!(
            "the driver of {iface:?} refused the program (MTU too large for native XDP, or \
             an offload in the way); try the generic mode (skb)"
        ),
        _ => format!("could not attach XDP to {iface:?} in mode {mode:?}"),
    };
    anyhow!(e).context(hint)
}

/// The mode `auto` resolves to for `iface`: generic (skb) on a veth, where native
/// XDP_TX only works if the peer veth has an XDP program of its own (which the agent
/// does not control: the peer is usually on the host side of a container), else the
/// kernel's choice (native where the driver has it, which is also the cheaper mode: in
/// generic mode every nonlinear packet of the interface is linearized for the program).
pub fn auto_mode(iface: &str) -> Result<XdpMode> {
    Ok(if interface_driver(iface)? == "veth" {
        XdpMode::Skb
    } else {
        XdpMode::Default
    })
}

/// The kernel driver of `iface` (`ethtool -i`), in the calling thread's namespace.
pub fn interface_driver(iface: &str) -> Result<String> {
    /// `struct ethtool_drvinfo` (include/uapi/linux/ethtool.h).
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 0x03;
    // SAFETY: DrvInfo is plain old data; all zeroes is valid.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    if_ioctl(iface, libc::SIOCETHTOOL, |req| {
        req.ifr_ifru.ifru_data = (&raw mut info).cast();
    })
    .with_context(|| format!("asking the driver of {iface:?} (ETHTOOL_GDRVINFO)"))?;
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Runs an interface ioctl on a fresh socket of the calling thread's namespace:
/// `fill` completes the request after the name; returns the request as the kernel
/// left it.
fn if_ioctl(
    iface: &str,
    request: libc::c_ulong,
    fill: impl FnOnce(&mut libc::ifreq),
) -> Result<libc::ifreq> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.contains('\0') {
        bail!("{iface:?} is not a valid interface name");
    }
    // SAFETY: plain socket(2); the fd is owned at once and closed on drop.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_INET) for an ioctl");
    }
    // SAFETY: fd is fresh and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    fill(&mut req);
    // SAFETY: the request reads the NUL-terminated name and the ifreq (and whatever
    // `fill` pointed it at), all alive until it returns.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut req) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENODEV) {
            bail!(
                "no interface {iface:?} in the agent's network namespace; check the name \
                 with `ip link`"
            );
        }
        return Err(err.into());
    }
    Ok(req)
}

/// The MAC of `iface`, asked of the kernel through a socket, so it is the interface of
/// the calling thread's network namespace (`/sys/class/net` shows the namespace sysfs
/// was mounted in, which a thread that entered another namespace with setns does not
/// see).
pub fn interface_mac(iface: &str) -> Result<[u8; 6]> {
    let req = if_ioctl(iface, libc::SIOCGIFHWADDR, |_| {})
        .with_context(|| format!("reading the MAC of {iface:?}"))?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let addr = unsafe { req.ifr_ifru.ifru_hwaddr };
    if addr.sa_family != libc::ARPHRD_ETHER {
        bail!(
            "{iface:?} is not an Ethernet interface (link type {}); the guard answers only \
             on Ethernet",
            addr.sa_family
        );
    }
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(addr.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

// ---------------------------------------------------------------------------------------
// Counters. (Keys, VIP states and the clock are in `super::vip_table`.)

/// One VIP's guard counters, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipCounters {
    pub vip: IpAddr,
    /// IP packets to the VIP seen on the NIC (every state), and their bytes (Ethernet
    /// frame lengths).
    pub packets: u64,
    pub bytes: u64,
    /// TCP segments to the released VIP answered with a RST.
    pub rst_sent: u64,
    /// Packets to the released VIP dropped unanswered (not TCP, malformed, ...).
    pub dropped: u64,
    /// ARP requests and neighbour solicitations for the released VIP dropped.
    pub neigh_dropped: u64,
    /// The client most recently answered with a RST, on any CPU.
    pub last_client: Option<SocketAddr>,
}

impl VipCounters {
    /// The totals of one VIP's per-CPU values.
    pub fn sum(vip: IpAddr, per_cpu: &[GuardCounters]) -> VipCounters {
        let mut t = VipCounters {
            vip,
            packets: 0,
            bytes: 0,
            rst_sent: 0,
            dropped: 0,
            neigh_dropped: 0,
            last_client: None,
        };
        let mut last_ns = 0;
        for c in per_cpu {
            t.packets = t.packets.wrapping_add(c.packets);
            t.bytes = t.bytes.wrapping_add(c.bytes);
            t.rst_sent = t.rst_sent.wrapping_add(c.rst_sent);
            t.dropped = t.dropped.wrapping_add(c.dropped);
            t.neigh_dropped = t.neigh_dropped.wrapping_add(c.neigh_dropped);
            if c.rst_sent > 0 && c.last_rst_ns >= last_ns {
                last_ns = c.last_rst_ns;
                t.last_client = client_of(c);
            }
        }
        t
    }
}

/// The last client a CPU's counters name.
fn client_of(c: &GuardCounters) -> Option<SocketAddr> {
    let ip = match c.last_family {
        vip_ebpf_common::AF_INET => {
            let [a, b, c, d, ..] = c.last_client;
            IpAddr::from([a, b, c, d])
        }
        vip_ebpf_common::AF_INET6 => IpAddr::from(c.last_client),
        _ => return None,
    };
    Some(SocketAddr::new(ip, c.last_port))
}

/// Every VIP's counters, summed over CPUs, sorted by address.
pub fn read_counters<T: Borrow<MapData>>(
    map: &PerCpuHashMap<T, DstKey, GuardCounters>,
) -> Result<Vec<VipCounters>> {
    let mut out = Vec::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry.context("reading the VIP_COUNTERS map")?;
        let Some(vip) = super::vip_table::key_addr(&key) else {
            continue;
        };
        out.push(VipCounters::sum(vip, &per_cpu));
    }
    out.sort_by_key(|c| c.vip);
    Ok(out)
}

/// One VIP's counters (zero if the guard has not seen it yet).
pub fn counters_of<T: Borrow<MapData>>(
    map: &PerCpuHashMap<T, DstKey, GuardCounters>,
    vip: IpAddr,
) -> Result<VipCounters> {
    match map.get(&super::vip_table::vip_key(vip), 0) {
        Ok(per_cpu) => Ok(VipCounters::sum(vip, &per_cpu)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(VipCounters::sum(vip, &[])),
        Err(e) => Err(e).with_context(|| format!("reading the counters of {vip}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_counters_are_summed_and_the_latest_client_is_named() {
        let c = |p, r, client: u8, at| GuardCounters {
            packets: p,
            bytes: p * 100,
            rst_sent: r,
            dropped: 1,
            neigh_dropped: 2,
            last_client: [198, 51, 100, client, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            last_port: 40_000 + u16::from(client),
            last_family: if r > 0 { vip_ebpf_common::AF_INET } else { 0 },
            _pad: 0,
            last_rst_ns: at,
        };
        let vip: IpAddr = "198.51.100.50".parse().unwrap();
        let sum = VipCounters::sum(vip, &[c(3, 1, 101, 50), c(0, 0, 0, 0), c(4, 2, 102, 90)]);
        assert_eq!(
            sum,
            VipCounters {
                vip,
                packets: 7,
                bytes: 700,
                rst_sent: 3,
                dropped: 3,
                neigh_dropped: 6,
                last_client: Some("198.51.100.102:40102".parse().unwrap()),
            }
        );
        assert_eq!(VipCounters::sum(vip, &[]).last_client, None);
        let v6 = GuardCounters {
            rst_sent: 1,
            last_client: "2001:db8::101"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            last_port: 5,
            last_family: vip_ebpf_common::AF_INET6,
            ..GuardCounters::default()
        };
        assert_eq!(
            VipCounters::sum(vip, &[v6]).last_client,
            Some("[2001:db8::101]:5".parse().unwrap())
        );
    }

    #[test]
    fn bad_interface_names_are_refused_before_any_syscall() {
        assert!(interface_mac("").is_err());
        assert!(interface_mac("a-name-longer-than-ifnamsiz").is_err());
    }
}
