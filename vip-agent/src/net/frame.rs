//! The Ethernet frames that announce an address, built byte by byte: a gratuitous ARP
//! for IPv4 and an unsolicited neighbour advertisement for IPv6. Pure functions, no I/O;
//! [`super::announce`] puts them on the wire.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An Ethernet (EUI-48) address.
pub type Mac = [u8; 6];

/// The Ethernet broadcast address: a gratuitous ARP must reach every host's cache.
pub const BROADCAST: Mac = [0xff; 6];
/// ff02::1, all nodes on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// ff02::1 on Ethernet: 33:33 and the group's low 32 bits (RFC 2464 §7).
pub const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// The shortest Ethernet frame without its FCS. ARP is padded to it here rather than
/// by the driver, which virtual devices (veth, bridges in a VM) do not always do.
const ETH_MIN_FRAME: usize = 60;
const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_OP_REQUEST: u16 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// RFC 4861 §7.1.2: a receiver drops any NA whose hop limit is not 255, which proves
/// it came from the link itself.
const ND_HOP_LIMIT: u8 = 255;
const ICMPV6_NEIGHBOUR_ADVERT: u8 = 136;
/// The NA flags byte: Router 0x80, Solicited 0x40, Override 0x20.
const NA_FLAG_OVERRIDE: u8 = 0x20;
const ND_OPT_TARGET_LLADDR: u8 = 2;

/// A gratuitous ARP for `ip` from `mac`: a broadcast ARP request whose sender and
/// target IP are both `ip` and whose target MAC is zero.
///
/// A request rather than a reply: every Linux neighbour cache that already has an entry
/// for `ip` updates it from a request, whatever `arp_accept` says, and switches learn
/// `mac`'s port from the broadcast. The same form as `arping -U` and keepalived.
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_MIN_FRAME);
    ethernet(&mut f, BROADCAST, mac, ETHERTYPE_ARP);
    f.extend_from_slice(&ARP_HTYPE_ETHERNET.to_be_bytes());
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f.extend_from_slice(&[6, 4]); // hardware and protocol address lengths
    f.extend_from_slice(&ARP_OP_REQUEST.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f.resize(ETH_MIN_FRAME, 0);
    f
}

/// An unsolicited neighbour advertisement (RFC 4861 §4.4, §7.2.6) for `addr` from
/// `mac`: to all nodes, Override set so caches replace the old owner's MAC, Solicited
/// and Router clear, with the target link-layer address option.
///
/// The IPv6 source is `addr` itself: a valid unicast source because the agent binds it
/// with IFA_F_NODAD, so it is never tentative (RFC 4862 §5.4 forbids only tentative
/// sources). Receivers would accept the host's own address just as well.
pub fn unsolicited_na(mac: Mac, addr: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[ICMPV6_NEIGHBOUR_ADVERT, 0, 0, 0]); // type, code, checksum
    icmp.extend_from_slice(&[NA_FLAG_OVERRIDE, 0, 0, 0]);
    icmp.extend_from_slice(&addr.octets());
    icmp.extend_from_slice(&[ND_OPT_TARGET_LLADDR, 1]); // length in units of 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(&addr, &ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    ethernet(&mut f, ALL_NODES_MAC, mac, ETHERTYPE_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes()); // 32: cannot overflow
    f.extend_from_slice(&[IPPROTO_ICMPV6, ND_HOP_LIMIT]);
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The ICMPv6 checksum (RFC 4443 §2.3) of `msg`, whose checksum field is zero: the
/// ones' complement of the ones' complement sum over the IPv6 pseudo-header (RFC 8200
/// §8.1) and the message.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    let mut sum = ones_sum(0, &src.octets());
    sum = ones_sum(sum, &dst.octets());
    sum = ones_sum(sum, &len.to_be_bytes());
    sum = ones_sum(sum, &[0, 0, 0, IPPROTO_ICMPV6]);
    sum = ones_sum(sum, msg);
    !fold(sum)
}

/// Adds `data` as big-endian 16-bit words (an odd last byte padded with zero) to `sum`.
/// A u64 cannot overflow before the fold for any message an interface can carry.
fn ones_sum(sum: u64, data: &[u8]) -> u64 {
    let words = data.chunks(2).map(|w| match *w {
        [hi, lo] => u16::from_be_bytes([hi, lo]),
        [hi] => u16::from_be_bytes([hi, 0]),
        _ => 0,
    });
    sum + words.map(u64::from).sum::<u64>()
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn ethernet(f: &mut Vec<u8>, dst: Mac, src: Mac, ethertype: u16) {
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];

    #[test]
    fn gratuitous_arp_bytes() {
        let vip = Ipv4Addr::new(198, 51, 100, 50);
        #[rustfmt::skip]
        let want: [u8; 60] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,     // dst: broadcast
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01,     // src: the NIC's MAC
            0x08, 0x06,                             // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,           // Ethernet, IPv4, lengths
            0x00, 0x01,                             // request
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01,     // sender MAC
            198, 51, 100, 50,                       // sender IP: the VIP
            0, 0, 0, 0, 0, 0,                       // target MAC: zero
            198, 51, 100, 50,                       // target IP: the VIP
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding to 60
        ];
        assert_eq!(gratuitous_arp(MAC, vip), want);
    }

    #[test]
    fn unsolicited_na_bytes() {
        let vip: Ipv6Addr = "2001:db8::50".parse().unwrap();
        #[rustfmt::skip]
        let want: [u8; 86] = [
            0x33, 0x33, 0x00, 0x00, 0x00, 0x01,     // dst: all-nodes multicast
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01,     // src: the NIC's MAC
            0x86, 0xdd,                             // IPv6
            0x60, 0x00, 0x00, 0x00,                 // version 6
            0x00, 32,                               // payload length
            58, 255,                                // ICMPv6, hop limit 255
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x50, // src: the VIP
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01,       // dst: ff02::1
            136, 0,                                 // neighbour advertisement
            0xf8, 0x8c,                             // checksum (computed independently)
            0x20, 0, 0, 0,                          // Override; Router, Solicited clear
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x50, // target
            2, 1,                                   // target link-layer address, 8 bytes
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        ];
        assert_eq!(unsolicited_na(MAC, vip), want);
    }

    /// A receiver's check, done differently: the sum over the pseudo-header and the
    /// message *including* its checksum is all ones.
    #[test]
    fn na_checksum_verifies_as_a_receiver_would() {
        for (mac, vip) in [
            (MAC, "2001:db8::50"),
            ([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff], "fe80::1"),
            ([0xff; 6], "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
        ] {
            let vip: Ipv6Addr = vip.parse().unwrap();
            let frame = unsolicited_na(mac, vip);
            let icmp = &frame[54..];
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&frame[22..54]); // src and dst, as sent
            pseudo.extend_from_slice(&[0, 0, 0, icmp.len() as u8, 0, 0, 0, 58]);
            pseudo.extend_from_slice(icmp);
            let mut sum: u32 = pseudo
                .chunks_exact(2)
                .map(|w| (u32::from(w[0]) << 8) | u32::from(w[1]))
                .sum();
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            assert_eq!(sum, 0xffff, "{vip} from {mac:02x?}");
        }
    }

    #[test]
    fn checksum_of_an_odd_length_message_pads_with_zero() {
        let a = Ipv6Addr::LOCALHOST;
        let odd = icmpv6_checksum(&a, &a, &[1, 2, 3]);
        // Same words as [1, 2, 3, 0], but the pseudo-header length differs by one.
        let even = icmpv6_checksum(&a, &a, &[1, 2, 3, 0]);
        assert_eq!(odd, even.wrapping_add(1));
    }
}
