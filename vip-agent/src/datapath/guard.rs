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
//! This module attaches the program ([`attach`]) and holds the pure helpers the agent
//! and the tests need: map keys ([`vip_key`]), VIP states ([`held`], [`released`]),
//! the clock the program compares with ([`monotonic_ns`]) and the counters summed over
//! CPUs ([`read_counters`]).
//!
//! XDP mode: [`XdpMode::Default`] lets the kernel pick native (driver) mode where the
//! driver has it. On a veth, native XDP_TX needs the PEER to have NAPI (an XDP program
//! or GRO enabled on it), else every RST is silently dropped by veth; generic
//! ([`XdpMode::Skb`]) mode always works there. See [`parse_mode`].

use std::borrow::{Borrow, BorrowMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuHashMap};
use aya::programs::links::FdLink;
use aya::programs::{ProgramError, Xdp, XdpMode};
use serde::Serialize;
use vip_ebpf_common::{
    AF_INET, AF_INET6, DstKey, GuardConfig, GuardCounters, VIP_HELD, VIP_RELEASED, VipState,
};

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

/// Parses an XDP mode as written in a config or on a command line: `auto`,
/// `native`/`driver`, `generic`/`skb`. `auto` gives [`XdpMode::Default`] (the kernel
/// picks native where the driver has it); resolve it per interface with [`auto_mode`]
/// instead, which picks generic on a veth.
pub fn parse_mode(text: &str) -> Result<XdpMode> {
    Ok(match text {
        "auto" | "default" => XdpMode::Default,
        "native" | "driver" | "drv" => XdpMode::Driver,
        "generic" | "skb" => XdpMode::Skb,
        _ => bail!("XDP mode {text:?} is not valid: use auto, native (driver) or generic (skb)"),
    })
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
// Pure helpers.

/// The `VIPS` / `VIP_COUNTERS` key of an address. A v4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) is the IPv4 address: packets on the wire carry that.
pub fn vip_key(ip: IpAddr) -> DstKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => DstKey::v4(v4.octets()),
        IpAddr::V6(v6) => DstKey::v6(v6.octets()),
    }
}

/// The address a key stands for; None for a key of an unknown family.
pub fn key_addr(key: &DstKey) -> Option<IpAddr> {
    match key.family {
        AF_INET => {
            let [a, b, c, d, ..] = key.addr;
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        }
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(key.addr))),
        _ => None,
    }
}

/// A VIP this node holds since `now_ns` ([`monotonic_ns`]); `role` is
/// `vip_ebpf_common::ROLE_WRITE` or `ROLE_READ`.
pub fn held(role: u8, now_ns: u64) -> VipState {
    VipState {
        state: VIP_HELD,
        role,
        _pad: [0; 6],
        since_ns: now_ns,
        guard_until_ns: 0,
    }
}

/// A VIP this node let go at `now_ns`, guarded for `guard_for` from then (zero: no
/// guard, the entry only records the release).
pub fn released(role: u8, now_ns: u64, guard_for: Duration) -> VipState {
    let guard_ns = u64::try_from(guard_for.as_nanos()).unwrap_or(u64::MAX);
    VipState {
        state: VIP_RELEASED,
        role,
        _pad: [0; 6],
        since_ns: now_ns,
        guard_until_ns: now_ns.saturating_add(guard_ns),
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, which the program
/// compares `guard_until_ns` with (it does not advance while the machine is suspended).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Writes a VIP's state (see [`held`], [`released`]).
pub fn set_vip<T: BorrowMut<MapData>>(
    vips: &mut HashMap<T, DstKey, VipState>,
    ip: IpAddr,
    state: VipState,
) -> Result<()> {
    vips.insert(vip_key(ip), state, 0)
        .with_context(|| format!("could not write {ip} to the VIPS map"))
}

/// Forgets a VIP: the guard then treats its traffic as any other (passes it uncounted).
pub fn remove_vip<T: BorrowMut<MapData>>(
    vips: &mut HashMap<T, DstKey, VipState>,
    ip: IpAddr,
) -> Result<()> {
    match vips.remove(&vip_key(ip)) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("could not remove {ip} from the VIPS map")),
    }
}

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
        };
        for c in per_cpu {
            t.packets = t.packets.wrapping_add(c.packets);
            t.bytes = t.bytes.wrapping_add(c.bytes);
            t.rst_sent = t.rst_sent.wrapping_add(c.rst_sent);
            t.dropped = t.dropped.wrapping_add(c.dropped);
            t.neigh_dropped = t.neigh_dropped.wrapping_add(c.neigh_dropped);
        }
        t
    }
}

/// Every VIP's counters, summed over CPUs, sorted by address.
pub fn read_counters<T: Borrow<MapData>>(
    map: &PerCpuHashMap<T, DstKey, GuardCounters>,
) -> Result<Vec<VipCounters>> {
    let mut out = Vec::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry.context("reading the VIP_COUNTERS map")?;
        let Some(vip) = key_addr(&key) else { continue };
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
    match map.get(&vip_key(vip), 0) {
        Ok(per_cpu) => Ok(VipCounters::sum(vip, &per_cpu)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(VipCounters::sum(vip, &[])),
        Err(e) => Err(e).with_context(|| format!("reading the counters of {vip}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vip_ebpf_common::{ROLE_READ, ROLE_WRITE};

    #[test]
    fn keys_of_both_families_and_back() {
        let v4: IpAddr = "198.51.100.50".parse().unwrap();
        let k4 = vip_key(v4);
        assert_eq!(k4.family, AF_INET);
        assert_eq!(&k4.addr[..4], &[198, 51, 100, 50]);
        assert_eq!(&k4.addr[4..], &[0; 12]);
        assert_eq!(key_addr(&k4), Some(v4));

        let v6: IpAddr = "2001:db8::50".parse().unwrap();
        let k6 = vip_key(v6);
        assert_eq!(k6.family, AF_INET6);
        assert_eq!(key_addr(&k6), Some(v6));

        // A v4-mapped address is the IPv4 VIP.
        let mapped: IpAddr = "::ffff:198.51.100.50".parse().unwrap();
        assert_eq!(vip_key(mapped), k4);
        assert_eq!(key_addr(&DstKey { family: 7, ..k4 }), None);
    }

    #[test]
    fn states_held_and_released() {
        let h = held(ROLE_WRITE, 1_000);
        assert_eq!(
            (h.state, h.role, h.since_ns, h.guard_until_ns),
            (VIP_HELD, ROLE_WRITE, 1_000, 0)
        );
        let r = released(ROLE_READ, 5_000, Duration::from_secs(30));
        assert_eq!(r.state, VIP_RELEASED);
        assert_eq!(r.role, ROLE_READ);
        assert_eq!(r.since_ns, 5_000);
        assert_eq!(r.guard_until_ns, 5_000 + 30_000_000_000);
        // No guard: expired at once. A huge duration saturates instead of wrapping.
        assert_eq!(released(ROLE_READ, 5, Duration::ZERO).guard_until_ns, 5);
        assert_eq!(
            released(ROLE_READ, 5, Duration::MAX).guard_until_ns,
            u64::MAX
        );
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn per_cpu_counters_are_summed() {
        let c = |p, r| GuardCounters {
            packets: p,
            bytes: p * 100,
            rst_sent: r,
            dropped: 1,
            neigh_dropped: 2,
        };
        let vip: IpAddr = "2001:db8::50".parse().unwrap();
        let sum = VipCounters::sum(vip, &[c(3, 1), c(0, 0), c(4, 2)]);
        assert_eq!(
            sum,
            VipCounters {
                vip,
                packets: 7,
                bytes: 700,
                rst_sent: 3,
                dropped: 3,
                neigh_dropped: 6,
            }
        );
        assert_eq!(VipCounters::sum(vip, &[]).packets, 0);
    }

    #[test]
    fn modes_parse_with_their_usual_names() {
        assert_eq!(parse_mode("auto").unwrap(), XdpMode::Default);
        assert_eq!(parse_mode("native").unwrap(), XdpMode::Driver);
        assert_eq!(parse_mode("driver").unwrap(), XdpMode::Driver);
        assert_eq!(parse_mode("generic").unwrap(), XdpMode::Skb);
        assert_eq!(parse_mode("skb").unwrap(), XdpMode::Skb);
        let err = parse_mode("offload").unwrap_err().to_string();
        assert!(err.contains("auto, native"), "{err}");
    }

    #[test]
    fn bad_interface_names_are_refused_before_any_syscall() {
        assert!(interface_mac("").is_err());
        assert!(interface_mac("a-name-longer-than-ifnamsiz").is_err());
    }
}
