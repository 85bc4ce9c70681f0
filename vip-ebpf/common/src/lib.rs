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
    /// 1: match every local address (with `port` set: every client of mysqld, the
    /// kill-all option); `family` and `addr` are then ignored.
    pub any_addr: u8,
    pub _pad: [u8; 3],
    /// The local address in network order; IPv4 fills the first four bytes.
    pub addr: [u8; 16],
    /// Byte offsets of the fields the program reads.
    pub off: SockCommonOffsets,
}

/// Byte offsets of the kernel fields the programs read from a socket, from kernel BTF.
/// All but `net_cookie` and `sport` are in `struct sock_common` (offset 0 of
/// `struct sock`, itself at offset 0 of `struct inet_sock`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockCommonOffsets {
    /// `skc_rcv_saddr` (`__be32`): the local IPv4 address.
    pub rcv_saddr: u16,
    /// `skc_v6_rcv_saddr` (`struct in6_addr`).
    pub v6_rcv_saddr: u16,
    /// `skc_num`: the local port, host order (`__u16`).
    pub num: u16,
    /// `skc_family` (`unsigned short`).
    pub family: u16,
    /// `skc_state` (`unsigned char`).
    pub state: u16,
    /// `skc_daddr` (`__be32`): the remote IPv4 address.
    pub daddr: u16,
    /// `skc_v6_daddr` (`struct in6_addr`).
    pub v6_daddr: u16,
    /// `skc_dport`: the remote port, network order (`__be16`).
    pub dport: u16,
    /// `skc_net`: the `struct net *` of the socket's network namespace.
    pub net: u16,
    /// `net_cookie` in `struct net` (`u64`), the namespace's cookie (SO_NETNS_COOKIE).
    pub net_cookie: u16,
    /// `inet_sport` in `struct inet_sock` (`__be16`): the local port. Unlike `skc_num`,
    /// it is not zeroed when a closing socket gives its port back, so the tracker can
    /// still find the connection it recorded.
    pub sport: u16,
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

// ---------------------------------------------------------------------------------------
// The VIP table, shared by the guard (XDP) and the connection tracker.

/// How many VIPs one agent can hold state for (write + read VIPs of one instance).
pub const VIP_ENTRIES: usize = 256;

/// `VipState::state`: this node holds the VIP (the guard counts and passes its traffic,
/// the tracker records its connections) until `lease_until_ns`.
pub const VIP_HELD: u8 = 1;
/// `VipState::state`: this node let the VIP go. Until `guard_until_ns` the guard answers
/// TCP to it with a RST and drops ARP requests / neighbour solicitations for it.
pub const VIP_RELEASED: u8 = 2;

/// `VipState::role`.
pub const ROLE_WRITE: u8 = 1;
pub const ROLE_READ: u8 = 2;

/// One VIP's state on this node (map `VIPS`, key [`DstKey`]). Written only by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipState {
    /// [`VIP_HELD`] or [`VIP_RELEASED`].
    pub state: u8,
    /// [`ROLE_WRITE`] or [`ROLE_READ`].
    pub role: u8,
    pub _pad: [u8; 6],
    /// When the state was set (CLOCK_MONOTONIC ns, as `bpf_ktime_get_ns`).
    pub since_ns: u64,
    /// RELEASED only: the guard answers stale clients until then (CLOCK_MONOTONIC ns).
    pub guard_until_ns: u64,
    /// HELD only: the end of the node's lease on the VIP (CLOCK_MONOTONIC ns;
    /// [`NO_LEASE_END`]: none). From then on the guard answers for the VIP as released,
    /// whatever userspace does: an agent that stops running is fenced by its own kernel.
    pub lease_until_ns: u64,
}

/// `VipState::lease_until_ns` of a VIP held without a time limit.
pub const NO_LEASE_END: u64 = u64::MAX;

impl VipState {
    /// Whether the node holds the VIP at `now_ns`: HELD and its lease not over.
    #[inline(always)]
    pub fn holds(&self, now_ns: u64) -> bool {
        self.state == VIP_HELD && now_ns < self.lease_until_ns
    }

    /// Whether the guard answers for the VIP as released at `now_ns`: RESETs to its
    /// clients, no answers to ARP / NS. Released and inside its window, or held past
    /// the lease's end (for as long as the entry stays so: a frozen agent stays fenced).
    #[inline(always)]
    pub fn fenced(&self, now_ns: u64) -> bool {
        match self.state {
            VIP_RELEASED => now_ns < self.guard_until_ns,
            VIP_HELD => now_ns >= self.lease_until_ns,
            _ => false,
        }
    }
}

/// The guard's counters for one VIP (map `VIP_COUNTERS`, per-CPU, key [`DstKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GuardCounters {
    /// IPv4/IPv6 packets to the VIP seen on the NIC, and their bytes.
    pub packets: u64,
    pub bytes: u64,
    /// TCP packets to a released VIP answered with a RST.
    pub rst_sent: u64,
    /// Packets to a released VIP dropped (not TCP, or no RST could be built).
    pub dropped: u64,
    /// ARP requests and neighbour solicitations for a released VIP left unanswered.
    pub neigh_dropped: u64,
    /// The last client this CPU answered with a RST: its address (IPv4 in the first 4
    /// bytes), port (host order) and family, and when (`bpf_ktime_get_ns`). The agent
    /// names it in its once-a-second summary instead of a log line per RST.
    pub last_client: [u8; 16],
    pub last_port: u16,
    pub last_family: u16,
    pub _pad: u32,
    pub last_rst_ns: u64,
}

/// What the guard needs to know about its NIC (map `GUARD_CONFIG`, slot 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GuardConfig {
    /// The NIC's MAC. Only unicast frames to it are answered with a RST: a switch that
    /// floods a frame meant for the VIP's new owner must not make this node reset it.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

// ---------------------------------------------------------------------------------------
// Connection tracking.

/// How many connections the LRU map holds by default (the agent may size it at load).
pub const CONN_ENTRIES: usize = 65536;

/// A TCP connection to a VIP (map `CONNS`): IPv4 fills the first four bytes of the
/// addresses. Ports are in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ConnKey {
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// The local port (the VIP side: mysqld's port).
    pub local_port: u16,
    /// The client's port.
    pub remote_port: u16,
    pub _pad: u16,
    /// The VIP, network order.
    pub local: [u8; 16],
    /// The client's address, network order.
    pub remote: [u8; 16],
}

/// What is known of a tracked connection (map `CONNS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnInfo {
    /// When it was established, or first seen by the agent (CLOCK_MONOTONIC ns).
    pub established_ns: u64,
    /// The last packet from the client seen by the guard (CLOCK_MONOTONIC ns), or 0.
    pub last_rx_ns: u64,
    /// The VIP's role when the connection came in ([`ROLE_WRITE`], [`ROLE_READ`]).
    pub role: u8,
    /// The kernel's TCP state (1 ESTABLISHED, 8 CLOSE_WAIT, …).
    pub state: u8,
    pub _pad: [u8; 6],
}

/// What the tracker needs (map `TRACK_CONFIG`, slot 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TrackConfig {
    /// The agent's network namespace (SO_NETNS_COOKIE); 0 tracks nothing. tp_btf sees
    /// the sockets of every namespace on the kernel: other hosts' and containers'.
    pub netns_cookie: u64,
    pub off: SockCommonOffsets,
    pub _pad: [u8; 2],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type is #[repr(C)], made only of integers and byte arrays,
    // with the padding spelled out, so every bit pattern is valid.
    unsafe impl aya::Pod for super::DstKey {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::ResetTarget {}
    unsafe impl aya::Pod for super::ResetCount {}
    unsafe impl aya::Pod for super::VipState {}
    unsafe impl aya::Pod for super::GuardCounters {}
    unsafe impl aya::Pod for super::GuardConfig {}
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnInfo {}
    unsafe impl aya::Pod for super::TrackConfig {}
}
