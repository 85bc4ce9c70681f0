//! `vip_guard`: the XDP guard of this node's VIPs.
//!
//! For every IPv4/IPv6 packet whose destination is in `VIPS` it counts packets and bytes
//! (`VIP_COUNTERS`, per CPU), then:
//!
//! - **HELD, before `lease_until_ns`**: passes it. A TCP segment of a tracked connection (`CONNS`) refreshes the
//!   connection's `last_rx_ns`.
//! - **HELD, past `lease_until_ns`**: the node's lease on the VIP is over (its agent
//!   stopped renewing it: paused, frozen, dead). Answered exactly as RELEASED before
//!   `guard_until_ns`, below, for as long as the entry stays so.
//! - **RELEASED, before `guard_until_ns`**: a client with a stale neighbour entry is still
//!   sending here. A TCP segment (not a RST) sent by Ethernet unicast to this NIC's MAC
//!   (`GUARD_CONFIG`) is rewritten in place into the RST that a closed port sends
//!   (RFC 793, "Reset Generation", CLOSED state) and bounced back with `XDP_TX`; the
//!   client fails at once instead of retransmitting into a black hole. Whatever cannot be
//!   answered (not TCP, fragments, IPv6 extension headers, malformed) is dropped. A frame
//!   to another MAC is passed untouched: a switch flooding a frame meant for the VIP's
//!   new owner must not make this node reset it, and the kernel discards it anyway.
//!   ARP requests and neighbour solicitations for the VIP are dropped, so this node
//!   never answers for an address it let go, even before the address is unbound.
//! - **RELEASED, expired**: passes (the address is gone by then).
//!
//! The RST is built at fixed offsets from values read into registers first, and its
//! checksums are computed from those values, so no loop runs over packet bytes.
//! Everything else passes untouched; the program never touches a packet it does not
//! answer.

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    },
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_tail},
    macros::xdp,
    programs::XdpContext,
};
use vip_ebpf_common::{AF_INET, AF_INET6, ConnKey, DstKey, GuardCounters, VipState};

use crate::maps::{CONNS, GUARD_CONFIG, VIP_COUNTERS, VIPS};

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMPV6: u8 = 58;
const ICMPV6_NEIGHBOUR_SOLICIT: u8 = 135;
/// The first 8 bytes of an ARP request for IPv4 over Ethernet: htype 1, ptype 0x0800,
/// hlen 6, plen 4, op 1.
const ARP_REQUEST_HEAD: u64 = 0x0001_0800_0604_0001;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// The RST's TTL / hop limit.
const RST_TTL: u8 = 64;
/// Frame lengths of the RSTs: Ethernet + IP header without options + TCP without options.
const RST4_LEN: usize = ETH_HLEN + IPV4_HLEN + TCP_HLEN;
const RST6_LEN: usize = ETH_HLEN + IPV6_HLEN + TCP_HLEN;

#[xdp]
pub fn vip_guard(ctx: XdpContext) -> u32 {
    let Some(ethertype) = read::<2>(&ctx, 12) else {
        return XDP_PASS;
    };
    match u16::from_be_bytes(ethertype) {
        ETH_P_IPV4 => ipv4(&ctx),
        ETH_P_IPV6 => ipv6(&ctx),
        ETH_P_ARP => arp(&ctx),
        _ => XDP_PASS,
    }
}

// ---------------------------------------------------------------------------------------
// Packet access. Every read and write checks its bounds against data_end itself, in the
// shape the verifier follows (pointer + constant size <= data_end).

/// Reads `N` bytes at `off` (which may vary, but must be bounded) from the packet.
#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let start = ctx.data() + off;
    if start + N > ctx.data_end() {
        return None;
    }
    // SAFETY: the check above keeps the read inside the packet (the verifier checks it
    // too); [u8; N] has no alignment requirement.
    Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn v6_addr(a: &[u8; 16]) -> DstKey {
    DstKey::v6(*a)
}

/// The VIP's state if `key` is one of this node's VIPs.
#[inline(always)]
fn vip(key: &DstKey) -> Option<VipState> {
    // SAFETY: a hash map value stays valid for the program's run (RCU); copied out.
    VIPS.get_ptr(key).map(|p| unsafe { *p })
}

/// Now, on the clock of the VIPS map's times.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// This CPU's counters for `key`, created (zeroed) on first use.
#[inline(always)]
fn counters(key: &DstKey) -> Option<*mut GuardCounters> {
    if let Some(c) = VIP_COUNTERS.get_ptr_mut(key) {
        return Some(c);
    }
    // NOEXIST: if another CPU created the entry meanwhile, keep its counts.
    let _ = VIP_COUNTERS.insert(key, GuardCounters::default(), BPF_NOEXIST as u64);
    VIP_COUNTERS.get_ptr_mut(key)
}

// SAFETY (the counting functions below): a per-CPU value is only touched by this CPU while the program
// runs, so plain increments are exact.
#[inline(always)]
fn count_packet(key: &DstKey, len: u64) {
    if let Some(c) = counters(key) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

#[inline(always)]
fn drop_counted(key: &DstKey) -> u32 {
    if let Some(c) = counters(key) {
        unsafe { (*c).dropped += 1 };
    }
    XDP_DROP
}

#[inline(always)]
fn neigh_drop_counted(key: &DstKey) -> u32 {
    if let Some(c) = counters(key) {
        unsafe { (*c).neigh_dropped += 1 };
    }
    XDP_DROP
}

/// Counts a RST sent to `client`:`port`, and remembers that client as this CPU's last.
#[inline(always)]
fn rst_counted(key: &DstKey, family: u16, client: [u8; 16], port: u16) {
    if let Some(c) = counters(key) {
        unsafe {
            (*c).rst_sent += 1;
            (*c).last_client = client;
            (*c).last_port = port;
            (*c).last_family = family;
            (*c).last_rst_ns = bpf_ktime_get_ns();
        }
    }
}

/// Whether the frame's destination MAC is this NIC's (slot 0 of `GUARD_CONFIG`). With
/// no MAC configured (all zero) nothing is ours, so the guard answers nothing.
#[inline(always)]
fn to_our_mac(ctx: &XdpContext) -> bool {
    let Some(dst) = read::<6>(ctx, 0) else {
        return false;
    };
    let Some(config) = GUARD_CONFIG.get(0) else {
        return false;
    };
    let ours = config.mac;
    // Compared as integers: an array comparison could become a call to bcmp.
    let zero = u32::from_ne_bytes([ours[0], ours[1], ours[2], ours[3]]) == 0
        && u16::from_ne_bytes([ours[4], ours[5]]) == 0;
    !zero
        && u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]])
            == u32::from_ne_bytes([ours[0], ours[1], ours[2], ours[3]])
        && u16::from_ne_bytes([dst[4], dst[5]]) == u16::from_ne_bytes([ours[4], ours[5]])
}

// ---------------------------------------------------------------------------------------
// ARP and neighbour solicitations.

#[inline(always)]
fn arp(ctx: &XdpContext) -> u32 {
    // htype, ptype, hlen, plen, op | sha(6) spa(4) tha(6) | tpa(4)
    let Some(head) = read::<8>(ctx, ETH_HLEN) else {
        return XDP_PASS;
    };
    if u64::from_be_bytes(head) != ARP_REQUEST_HEAD {
        return XDP_PASS;
    }
    let Some(target) = read::<4>(ctx, ETH_HLEN + 24) else {
        return XDP_PASS;
    };
    solicited(&DstKey::v4(target))
}

/// An ARP request or neighbour solicitation for `key`: dropped if the VIP is released.
#[inline(always)]
fn solicited(key: &DstKey) -> u32 {
    match vip(key) {
        Some(state) if state.fenced(now()) => neigh_drop_counted(key),
        _ => XDP_PASS,
    }
}

// ---------------------------------------------------------------------------------------
// IPv4.

#[inline(always)]
fn ipv4(ctx: &XdpContext) -> u32 {
    let Some(ip) = read::<IPV4_HLEN>(ctx, ETH_HLEN) else {
        return XDP_PASS;
    };
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    let key = DstKey::v4(dst);
    let Some(state) = vip(&key) else {
        return XDP_PASS;
    };
    count_packet(&key, (ctx.data_end() - ctx.data()) as u64);

    // The TCP header, if this is a whole (unfragmented or first) well-formed TCP packet.
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let fragment = be16([ip[6], ip[7]]) & 0x3fff != 0; // MF or an offset
    let tcp = if ip[0] >> 4 == 4 && ihl >= IPV4_HLEN && ip[9] == IPPROTO_TCP && !fragment {
        read::<TCP_HLEN>(ctx, ETH_HLEN + ihl)
    } else {
        None
    };
    let src = [ip[12], ip[13], ip[14], ip[15]];

    let now = now();
    if state.holds(now) {
        if let Some(tcp) = tcp {
            touch_conn(AF_INET, DstKey::v4(dst).addr, DstKey::v4(src).addr, &tcp);
        }
        return XDP_PASS;
    }
    if !state.fenced(now) {
        return XDP_PASS;
    }
    if !to_our_mac(ctx) {
        return XDP_PASS; // flooded, for another host: not ours to judge
    }
    let Some(tcp) = tcp else {
        return drop_counted(&key);
    };
    let ip_payload = be16([ip[2], ip[3]]) as usize;
    let Some(reply) = rst_numbers(&tcp, ip_payload.checked_sub(ihl)) else {
        return drop_counted(&key);
    };
    let Some(eth_src) = read::<6>(ctx, 6) else {
        return drop_counted(&key);
    };
    let Some(our_mac) = read::<6>(ctx, 0) else {
        return drop_counted(&key);
    };
    if !write_rst4(ctx, &eth_src, &our_mac, &dst, &src, &reply) {
        return drop_counted(&key);
    }
    shrink_to(ctx, RST4_LEN);
    let mut client = [0u8; 16];
    client[..4].copy_from_slice(&src);
    rst_counted(&key, AF_INET, client, be16([tcp[0], tcp[1]]));
    XDP_TX
}

// ---------------------------------------------------------------------------------------
// IPv6.

#[inline(always)]
fn ipv6(ctx: &XdpContext) -> u32 {
    let Some(ip) = read::<IPV6_HLEN>(ctx, ETH_HLEN) else {
        return XDP_PASS;
    };
    if ip[0] >> 4 != 6 {
        return XDP_PASS;
    }
    let next = ip[6];
    // A neighbour solicitation for a released VIP (sent to its solicited-node multicast
    // address, or unicast): never answered. Only directly after the IPv6 header.
    if next == IPPROTO_ICMPV6
        && let Some(icmp) = read::<24>(ctx, ETH_HLEN + IPV6_HLEN)
        && icmp[0] == ICMPV6_NEIGHBOUR_SOLICIT
    {
        let mut target = [0u8; 16];
        target.copy_from_slice(&icmp[8..24]);
        let verdict = solicited(&v6_addr(&target));
        if verdict != XDP_PASS {
            return verdict;
        }
    }

    let mut dst = [0u8; 16];
    dst.copy_from_slice(&ip[24..40]);
    let key = v6_addr(&dst);
    let Some(state) = vip(&key) else {
        return XDP_PASS;
    };
    count_packet(&key, (ctx.data_end() - ctx.data()) as u64);

    // TCP directly after the fixed header; extension headers are not followed.
    let tcp = if next == IPPROTO_TCP {
        read::<TCP_HLEN>(ctx, ETH_HLEN + IPV6_HLEN)
    } else {
        None
    };
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);

    let now = now();
    if state.holds(now) {
        if let Some(tcp) = tcp {
            touch_conn(AF_INET6, dst, src, &tcp);
        }
        return XDP_PASS;
    }
    if !state.fenced(now) {
        return XDP_PASS;
    }
    if !to_our_mac(ctx) {
        return XDP_PASS;
    }
    let Some(tcp) = tcp else {
        return drop_counted(&key);
    };
    let payload = be16([ip[4], ip[5]]) as usize;
    let Some(reply) = rst_numbers(&tcp, Some(payload)) else {
        return drop_counted(&key);
    };
    let Some(eth_src) = read::<6>(ctx, 6) else {
        return drop_counted(&key);
    };
    let Some(our_mac) = read::<6>(ctx, 0) else {
        return drop_counted(&key);
    };
    if !write_rst6(ctx, &eth_src, &our_mac, &dst, &src, &reply) {
        return drop_counted(&key);
    }
    shrink_to(ctx, RST6_LEN);
    rst_counted(&key, AF_INET6, src, be16([tcp[0], tcp[1]]));
    XDP_TX
}

// ---------------------------------------------------------------------------------------
// Connection tracking.

/// Refreshes `last_rx_ns` of the tracked connection this client segment belongs to.
#[inline(always)]
fn touch_conn(family: u16, local: [u8; 16], remote: [u8; 16], tcp: &[u8; TCP_HLEN]) {
    let key = ConnKey {
        family,
        local_port: be16([tcp[2], tcp[3]]),
        remote_port: be16([tcp[0], tcp[1]]),
        _pad: 0,
        local,
        remote,
    };
    if let Some(conn) = CONNS.get_ptr_mut(key) {
        // SAFETY: points into the map's value; a racing writer can only store another
        // recent time.
        unsafe { (*conn).last_rx_ns = bpf_ktime_get_ns() };
    }
}

// ---------------------------------------------------------------------------------------
// The RST.

/// The ports, numbers and flags of the RST answering a segment.
struct Reply {
    /// The RST's source port (the segment's destination port), network order bytes.
    sport: [u8; 2],
    dport: [u8; 2],
    seq: u32,
    ack: u32,
    flags: u8,
}

/// RFC 793 (p. 36), a segment arriving for a CLOSED connection: "If the incoming segment
/// has an ACK field, the reset takes its sequence number from the ACK field of the
/// segment, otherwise the reset has sequence number zero and the ACK field is set to the
/// sum of the sequence number and segment length of the incoming segment."
///
/// `l4_len` is the TCP header + payload length from the IP header (not from the frame,
/// which may be padded). None for a RST (never answered) or a malformed header.
#[inline(always)]
fn rst_numbers(tcp: &[u8; TCP_HLEN], l4_len: Option<usize>) -> Option<Reply> {
    let flags = tcp[13];
    if flags & TCP_RST != 0 {
        return None;
    }
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if doff < TCP_HLEN {
        return None;
    }
    let payload = l4_len?.checked_sub(doff)? as u32;
    let seq_in = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack_in = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let (seq, ack, out_flags) = if flags & TCP_ACK != 0 {
        (ack_in, 0, TCP_RST)
    } else {
        let seg_len = payload + (flags & TCP_SYN != 0) as u32 + (flags & TCP_FIN != 0) as u32;
        (0, seq_in.wrapping_add(seg_len), TCP_RST | TCP_ACK)
    };
    Some(Reply {
        sport: [tcp[2], tcp[3]],
        dport: [tcp[0], tcp[1]],
        seq,
        ack,
        flags: out_flags,
    })
}

/// The ones' complement sum of big-endian 16-bit words.
#[inline(always)]
fn sum_words<const N: usize>(bytes: &[u8; N]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < N {
        sum += be16([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(sum: u32) -> u16 {
    // Sums here stay far below 2^24, so two folds leave 16 bits.
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// The TCP header of the RST, checksum field zero (filled in by the caller).
#[inline(always)]
fn tcp_header(r: &Reply) -> [u8; TCP_HLEN] {
    let seq = r.seq.to_be_bytes();
    let ack = r.ack.to_be_bytes();
    #[rustfmt::skip]
    let header = [
        r.sport[0], r.sport[1], r.dport[0], r.dport[1], // ports
        seq[0], seq[1], seq[2], seq[3], // sequence number
        ack[0], ack[1], ack[2], ack[3], // acknowledgment number
        (TCP_HLEN as u8 / 4) << 4, r.flags, // data offset, flags
        0, 0, // window
        0, 0, // checksum
        0, 0, // urgent pointer
    ];
    header
}

/// Overwrites the first RST4_LEN bytes with the IPv4 RST. `ip_src`/`ip_dst` are the
/// RST's (the VIP, the client).
#[inline(always)]
fn write_rst4(
    ctx: &XdpContext,
    eth_dst: &[u8; 6],
    eth_src: &[u8; 6],
    ip_src: &[u8; 4],
    ip_dst: &[u8; 4],
    r: &Reply,
) -> bool {
    let total = (IPV4_HLEN + TCP_HLEN) as u16;
    #[rustfmt::skip]
    let mut ip = [
        0x45, 0, // version 4, IHL 5; DSCP/ECN
        (total >> 8) as u8, total as u8, // total length
        0, 0, // identification
        0x40, 0, // don't fragment
        RST_TTL, IPPROTO_TCP, // TTL, protocol
        0, 0, // header checksum
        ip_src[0], ip_src[1], ip_src[2], ip_src[3],
        ip_dst[0], ip_dst[1], ip_dst[2], ip_dst[3],
    ];
    let ip_csum = fold(sum_words(&ip)).to_be_bytes();
    ip[10] = ip_csum[0];
    ip[11] = ip_csum[1];

    let mut tcp = tcp_header(r);
    let pseudo = sum_words(ip_src) + sum_words(ip_dst) + IPPROTO_TCP as u32 + TCP_HLEN as u32;
    let tcp_csum = fold(pseudo + sum_words(&tcp)).to_be_bytes();
    tcp[16] = tcp_csum[0];
    tcp[17] = tcp_csum[1];

    let start = ctx.data();
    if start + RST4_LEN > ctx.data_end() {
        return false;
    }
    // SAFETY: the check above keeps every write inside the packet.
    unsafe {
        let p = start as *mut u8;
        core::ptr::write_unaligned(p as *mut [u8; 6], *eth_dst);
        core::ptr::write_unaligned(p.add(6) as *mut [u8; 6], *eth_src);
        core::ptr::write_unaligned(p.add(12) as *mut [u8; 2], ETH_P_IPV4.to_be_bytes());
        core::ptr::write_unaligned(p.add(ETH_HLEN) as *mut [u8; IPV4_HLEN], ip);
        core::ptr::write_unaligned(p.add(ETH_HLEN + IPV4_HLEN) as *mut [u8; TCP_HLEN], tcp);
    }
    true
}

/// Overwrites the first RST6_LEN bytes with the IPv6 RST.
#[inline(always)]
fn write_rst6(
    ctx: &XdpContext,
    eth_dst: &[u8; 6],
    eth_src: &[u8; 6],
    ip_src: &[u8; 16],
    ip_dst: &[u8; 16],
    r: &Reply,
) -> bool {
    #[rustfmt::skip]
    let head: [u8; 8] = [
        0x60, 0, 0, 0, // version 6, traffic class 0, flow label 0
        0, TCP_HLEN as u8, // payload length
        IPPROTO_TCP, RST_TTL, // next header, hop limit
    ];
    let mut tcp = tcp_header(r);
    // Pseudo header: source, destination, upper-layer length (32 bits), next header.
    let pseudo = sum_words(ip_src) + sum_words(ip_dst) + TCP_HLEN as u32 + IPPROTO_TCP as u32;
    let tcp_csum = fold(pseudo + sum_words(&tcp)).to_be_bytes();
    tcp[16] = tcp_csum[0];
    tcp[17] = tcp_csum[1];

    let start = ctx.data();
    if start + RST6_LEN > ctx.data_end() {
        return false;
    }
    // SAFETY: the check above keeps every write inside the packet.
    unsafe {
        let p = start as *mut u8;
        core::ptr::write_unaligned(p as *mut [u8; 6], *eth_dst);
        core::ptr::write_unaligned(p.add(6) as *mut [u8; 6], *eth_src);
        core::ptr::write_unaligned(p.add(12) as *mut [u8; 2], ETH_P_IPV6.to_be_bytes());
        core::ptr::write_unaligned(p.add(ETH_HLEN) as *mut [u8; 8], head);
        core::ptr::write_unaligned(p.add(ETH_HLEN + 8) as *mut [u8; 16], *ip_src);
        core::ptr::write_unaligned(p.add(ETH_HLEN + 24) as *mut [u8; 16], *ip_dst);
        core::ptr::write_unaligned(p.add(ETH_HLEN + IPV6_HLEN) as *mut [u8; TCP_HLEN], tcp);
    }
    true
}

/// Cuts the frame to `len` bytes (the RST), dropping the segment's payload and options.
/// Should the kernel refuse, the RST still goes out whole: the IP length field makes
/// the rest link-layer padding, which receivers trim.
#[inline(always)]
fn shrink_to(ctx: &XdpContext, len: usize) {
    let have = ctx.data_end() - ctx.data();
    if have > len {
        // SAFETY: a helper call on our own context; it only moves data_end.
        let _ = unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((have - len) as i32)) };
    }
}
