//! Types shared between the eBPF programs (`vip-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]` with explicit padding, so the kernel side and
//! userspace agree byte for byte, and the BTF that describes them lets
//! `bpftool map dump` print named fields.
#![no_std]

/// Address family values as the kernel spells them (`AF_INET`, `AF_INET6`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A destination address, IPv4 or IPv6, as a map key.
///
/// IPv4 addresses fill the first four bytes of `addr` (network order) and
/// leave the rest zero, so one map holds both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DstKey {
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    pub _pad: [u8; 2],
    /// The address in network byte order.
    pub addr: [u8; 16],
}

impl DstKey {
    pub const fn v4(octets: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[0] = octets[0];
        addr[1] = octets[1];
        addr[2] = octets[2];
        addr[3] = octets[3];
        DstKey {
            family: AF_INET,
            _pad: [0; 2],
            addr,
        }
    }

    pub const fn v6(octets: [u8; 16]) -> Self {
        DstKey {
            family: AF_INET6,
            _pad: [0; 2],
            addr: octets,
        }
    }
}

/// Packets and bytes seen for one destination (one per CPU in a per-CPU map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// How many destinations the packet counter tracks before new ones are dropped.
pub const DST_COUNTER_ENTRIES: usize = 1024;

/// What the `reset_tcp` iterator destroys, and where it finds fields in the kernel's
/// `struct sock_common` (slot 0 of the `RESET_TARGET` array).
///
/// Rust eBPF has no CO-RE field relocations, so the loader reads the field offsets
/// from the running kernel's BTF and hands them over here.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ResetTarget {
    /// `AF_INET` or `AF_INET6`; 0 matches nothing (the iterator destroys nothing).
    pub family: u16,
    /// The local port in host order; 0 matches any port.
    pub port: u16,
    /// The local address in network order; IPv4 fills the first four bytes.
    pub addr: [u8; 16],
    /// Byte offsets of the fields the program reads.
    pub off: SockCommonOffsets,
}

/// Byte offsets of the `struct sock_common` fields `reset_tcp` reads, from kernel BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockCommonOffsets {
    /// `skc_rcv_saddr` (`__be32`).
    pub rcv_saddr: u16,
    /// `skc_v6_rcv_saddr` (`struct in6_addr`).
    pub v6_rcv_saddr: u16,
    /// `skc_num`: the local port, host order (`__u16`).
    pub num: u16,
    /// `skc_family` (`unsigned short`).
    pub family: u16,
    /// `skc_state` (`unsigned char`).
    pub state: u16,
    pub _pad: u16,
}

/// What one run of the `reset_tcp` iterator did (slot 0 of the `RESET_COUNT` array).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ResetCount {
    /// Sockets whose local address (and port) matched, in a state worth destroying.
    pub matched: u64,
    /// Of those, the ones `bpf_sock_destroy` destroyed (returned 0).
    pub destroyed: u64,
    /// Of those, the ones it refused; the last error is in `last_error`.
    pub failed: u64,
    /// The last negative errno `bpf_sock_destroy` returned, or 0.
    pub last_error: i64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are #[repr(C)], made only of integers and byte arrays,
    // with the padding spelled out, so every bit pattern is valid.
    unsafe impl aya::Pod for super::DstKey {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::ResetTarget {}
    unsafe impl aya::Pod for super::ResetCount {}
}
