//! Helpers shared by the planner's tests: small groups, VIPs by last octet, and a compact
//! way to write a placement.

use std::net::{IpAddr, Ipv4Addr};

use super::{Holdings, Input, Member, Placement, place};
use crate::config::FloatingType;

/// The write VIP of the examples.
pub const WRITE: u8 = 60;

/// `198.51.100.<last>`.
pub fn vip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

pub fn vips(lasts: &[u8]) -> Vec<IpAddr> {
    lasts.iter().map(|l| vip(*l)).collect()
}

/// `primary` first, then the secondaries.
pub fn group(primary: &str, secondaries: &[&str]) -> Vec<Member> {
    std::iter::once((primary, true))
        .chain(secondaries.iter().map(|s| (*s, false)))
        .map(|(uuid, primary)| Member {
            uuid: uuid.to_string(),
            primary,
        })
        .collect()
}

/// `[("m2", &[61, 63]), ...]` → holdings.
pub fn holdings(list: &[(&str, &[u8])]) -> Holdings {
    list.iter()
        .map(|(uuid, lasts)| (uuid.to_string(), lasts.iter().map(|l| vip(*l)).collect()))
        .collect()
}

pub fn plan(members: &[Member], read: &[u8], floating: FloatingType, held: &Holdings) -> Placement {
    let read_vips = vips(read);
    place(&Input {
        members,
        write_vip: Some(vip(WRITE)),
        read_vips: &read_vips,
        floating,
        holdings: held,
    })
}

/// The read VIPs per member, in the members' uuid order: `"m1=[] m2=[61 63] m3=[62]"`.
/// Holders outside `members` are shown too, marked `?`.
pub fn layout(p: &Placement, members: &[Member]) -> String {
    let mut uuids: Vec<&str> = members.iter().map(|m| m.uuid.as_str()).collect();
    uuids.sort();
    uuids.dedup();
    let mut out: Vec<String> = uuids
        .iter()
        .map(|u| format!("{u}=[{}]", lasts(p, u)))
        .collect();
    for h in p.read.values() {
        if !uuids.contains(&h.as_str()) {
            out.push(format!("?{h}=[{}]", lasts(p, h)));
            uuids.push(h);
        }
    }
    out.join(" ")
}

fn lasts(p: &Placement, uuid: &str) -> String {
    p.read
        .iter()
        .filter(|(_, h)| *h == uuid)
        .map(|(v, _)| match v {
            IpAddr::V4(v4) if v4.octets()[..3] == [198, 51, 100] => v4.octets()[3].to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
