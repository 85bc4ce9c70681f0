//! Parsing the Ethernet frames that announce an address: ARP, and IPv6 neighbour
//! advertisements (ICMPv6 type 136). Every read is bounds-checked; a short or odd
//! frame yields None, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::mac::Mac;

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETH_HEADER: usize = 14;
const IPV6_HEADER: usize = 40;
const NEXT_HEADER_ICMPV6: u8 = 58;
const ICMPV6_NEIGHBOUR_ADVERT: u8 = 136;
const ND_OPT_TARGET_LLADDR: u8 = 2;

/// What kind of announcement a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An ARP request or reply whose sender IP equals its target IP.
    GratuitousArp,
    ArpRequest,
    ArpReply,
    /// An IPv6 neighbour advertisement with its override (O) and solicited (S) flags.
    NeighbourAdvert {
        override_flag: bool,
        solicited: bool,
    },
}

/// The parts of an announcing frame that tests look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub kind: Kind,
    /// The address spoken for: the ARP sender IP, or the NA target address.
    pub ip: IpAddr,
    /// The link-layer address claimed for `ip`: the ARP sender MAC, or the NA's target
    /// link-layer address option (None when the NA carries none).
    pub lladdr: Option<Mac>,
    /// The Ethernet source address.
    pub src_mac: Mac,
}

/// Parses an Ethernet frame; None unless it is a well-formed ARP or NA.
pub fn parse(frame: &[u8]) -> Option<Parsed> {
    let src_mac = Mac::from_slice(frame.get(6..12)?)?;
    let payload = frame.get(ETH_HEADER..)?;
    match be16(frame, 12)? {
        ETHERTYPE_ARP => parse_arp(payload, src_mac),
        ETHERTYPE_IPV6 => parse_na(payload, src_mac),
        _ => None,
    }
}

/// ARP for IPv4 over Ethernet (RFC 826).
fn parse_arp(arp: &[u8], src_mac: Mac) -> Option<Parsed> {
    // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4.
    if be16(arp, 0)? != 1 || be16(arp, 2)? != 0x0800 || arp.get(4..6)? != [6, 4] {
        return None;
    }
    let op = be16(arp, 6)?;
    let sender_mac = Mac::from_slice(arp.get(8..14)?)?;
    let sender_ip = ipv4(arp.get(14..18)?)?;
    let target_ip = ipv4(arp.get(24..28)?)?;
    let kind = match op {
        _ if sender_ip == target_ip && (op == 1 || op == 2) => Kind::GratuitousArp,
        1 => Kind::ArpRequest,
        2 => Kind::ArpReply,
        _ => return None,
    };
    Some(Parsed {
        kind,
        ip: IpAddr::V4(sender_ip),
        lladdr: Some(sender_mac),
        src_mac,
    })
}

/// An ICMPv6 neighbour advertisement (RFC 4861 §4.4) directly after the IPv6 header.
fn parse_na(ip6: &[u8], src_mac: Mac) -> Option<Parsed> {
    if ip6.first()? >> 4 != 6 || *ip6.get(6)? != NEXT_HEADER_ICMPV6 {
        return None;
    }
    // Trust the payload length over the frame length: frames may be padded.
    let len = usize::from(be16(ip6, 4)?);
    let icmp = ip6.get(IPV6_HEADER..IPV6_HEADER.checked_add(len)?)?;
    if *icmp.first()? != ICMPV6_NEIGHBOUR_ADVERT || *icmp.get(1)? != 0 {
        return None;
    }
    let flags = *icmp.get(4)?;
    let target: [u8; 16] = icmp.get(8..24)?.try_into().ok()?;
    Some(Parsed {
        kind: Kind::NeighbourAdvert {
            override_flag: flags & 0x20 != 0,
            solicited: flags & 0x40 != 0,
        },
        ip: IpAddr::V6(Ipv6Addr::from(target)),
        lladdr: target_lladdr(icmp.get(24..)?),
        src_mac,
    })
}

/// The target link-layer address option among ND options, if present and well-formed.
fn target_lladdr(mut options: &[u8]) -> Option<Mac> {
    while options.len() >= 2 {
        let (kind, units) = (options[0], usize::from(options[1]));
        if units == 0 {
            return None; // a zero-length option is invalid (RFC 4861 §4.6)
        }
        let option = options.get(..units * 8)?;
        if kind == ND_OPT_TARGET_LLADDR {
            return Mac::from_slice(option.get(2..8)?);
        }
        options = &options[option.len()..];
    }
    None
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn arp(op: u16, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend(MAC);
        f.extend(ETHERTYPE_ARP.to_be_bytes());
        f.extend([0, 1, 8, 0, 6, 4]);
        f.extend(op.to_be_bytes());
        f.extend(MAC);
        f.extend(sender);
        f.extend([0; 6]);
        f.extend(target);
        f.resize(60, 0); // Ethernet padding
        f
    }

    fn na(flags: u8, options: &[u8]) -> Vec<u8> {
        let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
        f.extend(MAC);
        f.extend(ETHERTYPE_IPV6.to_be_bytes());
        f.extend([0x60, 0, 0, 0]);
        f.extend(u16::try_from(24 + options.len()).unwrap().to_be_bytes());
        f.extend([NEXT_HEADER_ICMPV6, 255]);
        f.extend("2001:db8::11".parse::<Ipv6Addr>().unwrap().octets());
        f.extend("ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        f.extend([ICMPV6_NEIGHBOUR_ADVERT, 0, 0, 0, flags, 0, 0, 0]);
        f.extend("2001:db8::50".parse::<Ipv6Addr>().unwrap().octets());
        f.extend(options);
        f
    }

    #[test]
    fn classifies_arp() {
        let ip = |last| [198, 51, 100, last];
        let garp = parse(&arp(1, ip(50), ip(50))).unwrap();
        assert_eq!(garp.kind, Kind::GratuitousArp);
        assert_eq!(garp.ip, IpAddr::from(ip(50)));
        assert_eq!(garp.lladdr, Some(Mac(MAC)));
        assert_eq!(garp.src_mac, Mac(MAC));
        assert_eq!(
            parse(&arp(2, ip(50), ip(50))).unwrap().kind,
            Kind::GratuitousArp
        );
        assert_eq!(
            parse(&arp(1, ip(11), ip(12))).unwrap().kind,
            Kind::ArpRequest
        );
        assert_eq!(parse(&arp(2, ip(12), ip(11))).unwrap().kind, Kind::ArpReply);
        assert_eq!(parse(&arp(3, ip(12), ip(11))), None);
    }

    #[test]
    fn reads_na_flags_and_target_lladdr() {
        let tlla = [ND_OPT_TARGET_LLADDR, 1, 2, 0, 0, 0, 0, 1];
        let parsed = parse(&na(0x20, &tlla)).unwrap();
        assert_eq!(
            parsed.kind,
            Kind::NeighbourAdvert {
                override_flag: true,
                solicited: false
            }
        );
        assert_eq!(parsed.ip, "2001:db8::50".parse::<IpAddr>().unwrap());
        assert_eq!(parsed.lladdr, Some(Mac(MAC)));

        // Another option first, then the TLLA; and an NA with no options at all.
        let mut two = vec![14, 1, 0, 0, 0, 0, 0, 0];
        two.extend(tlla);
        assert_eq!(parse(&na(0x60, &two)).unwrap().lladdr, Some(Mac(MAC)));
        let bare = parse(&na(0x40, &[])).unwrap();
        assert_eq!(
            bare.kind,
            Kind::NeighbourAdvert {
                override_flag: false,
                solicited: true
            }
        );
        assert_eq!(bare.lladdr, None);
        // A zero-length option ends the parse without an address.
        assert_eq!(
            parse(&na(0x20, &[2, 0, 0, 0, 0, 0, 0, 0])).unwrap().lladdr,
            None
        );
    }

    #[test]
    fn never_panics_on_truncated_or_odd_frames() {
        let tlla = [ND_OPT_TARGET_LLADDR, 1, 2, 0, 0, 0, 0, 1];
        for frame in [arp(1, [1; 4], [1; 4]), na(0x20, &tlla)] {
            for len in 0..frame.len() {
                let _ = parse(&frame[..len]);
            }
        }
        // A payload length pointing past the frame.
        let mut long = na(0x20, &tlla);
        long[ETH_HEADER + 4..ETH_HEADER + 6].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&long), None);
        // An option claiming more bytes than remain.
        assert_eq!(
            parse(&na(0x20, &[2, 9, 0, 0, 0, 0, 0, 0])).unwrap().lladdr,
            None
        );
        assert_eq!(parse(&[0xff; 200]), None);
    }
}
