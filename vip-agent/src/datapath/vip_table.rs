//! The `VIPS` map: what the programs know of this node's VIPs. The agent is its only
//! writer: HELD before a bind (so the tracker records the VIP's connections and the guard
//! passes its traffic), RELEASED before a reset and unbind (so the guard answers stale
//! clients with a RST, and ARP / NS for the VIP go unanswered, until the window ends).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{HashMap, IterableMap, MapData};
use vip_ebpf_common::{
    AF_INET, AF_INET6, DstKey, NO_LEASE_END, ROLE_READ, ROLE_WRITE, VIP_HELD, VIP_RELEASED,
    VipState,
};

/// Nanoseconds on CLOCK_MONOTONIC: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The map key of an address; a v4-mapped IPv6 address is keyed as IPv4.
pub fn vip_key(addr: IpAddr) -> DstKey {
    match addr.to_canonical() {
        IpAddr::V4(a) => DstKey::v4(a.octets()),
        IpAddr::V6(a) => DstKey::v6(a.octets()),
    }
}

/// The address of a map key, or `None` for a family the agent never writes.
pub fn key_addr(key: &DstKey) -> Option<IpAddr> {
    addr_of(key.family, &key.addr)
}

/// An address as the programs store it: IPv4 in the first four bytes.
pub fn addr_of(family: u16, addr: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => {
            let [a, b, c, d, ..] = *addr;
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        }
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*addr))),
        _ => None,
    }
}

/// A VIP's role, as the programs record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Write,
    Read,
}

impl Role {
    pub fn code(self) -> u8 {
        match self {
            Role::Write => ROLE_WRITE,
            Role::Read => ROLE_READ,
        }
    }

    pub fn name(code: u8) -> &'static str {
        match code {
            ROLE_WRITE => "write",
            ROLE_READ => "read",
            _ => "?",
        }
    }
}

/// Held without a time limit.
pub fn held(role: Role, now_ns: u64) -> VipState {
    held_until(role, now_ns, NO_LEASE_END)
}

/// Held until `lease_until_ns` (CLOCK_MONOTONIC ns): from then on the guard answers for
/// the VIP as released unless the agent moves the end first.
pub fn held_until(role: Role, now_ns: u64, lease_until_ns: u64) -> VipState {
    VipState {
        state: VIP_HELD,
        role: role.code(),
        since_ns: now_ns,
        lease_until_ns,
        ..VipState::default()
    }
}

pub fn released(role: Role, now_ns: u64, window: Duration) -> VipState {
    VipState {
        state: VIP_RELEASED,
        role: role.code(),
        since_ns: now_ns,
        guard_until_ns: now_ns.saturating_add(window.as_nanos() as u64),
        ..VipState::default()
    }
}

/// A RELEASED entry whose window is over: the guard ignores it, and it can go.
pub fn expired(state: &VipState, now_ns: u64) -> bool {
    state.state == VIP_RELEASED && state.guard_until_ns <= now_ns
}

/// Every entry of a `VIPS` map, with its address.
pub fn entries(map: &HashMap<MapData, DstKey, VipState>) -> Vec<(IpAddr, VipState)> {
    map.iter()
        .filter_map(|e| e.ok())
        .filter_map(|(k, v)| Some((key_addr(&k)?, v)))
        .collect()
}

/// The agent's handle on `VIPS`.
pub struct VipTable {
    map: HashMap<MapData, DstKey, VipState>,
}

impl VipTable {
    pub fn new(map: HashMap<MapData, DstKey, VipState>) -> VipTable {
        VipTable { map }
    }

    pub fn set(&mut self, vip: IpAddr, state: VipState) -> Result<()> {
        self.map
            .insert(vip_key(vip), state, 0)
            .with_context(|| format!("could not write {vip} to the VIPS map"))
    }

    /// Every entry, with its address.
    pub fn entries(&self) -> Vec<(IpAddr, VipState)> {
        entries(&self.map)
    }

    /// The map itself, for a read-only duplicate ([`super::reader::MapReader`]).
    pub fn map_data(&self) -> &MapData {
        self.map.map()
    }

    /// Removes the entries `keep` refuses, and RELEASED ones whose window is over.
    pub fn prune(&mut self, now_ns: u64, keep: impl Fn(IpAddr, &VipState) -> bool) {
        for (vip, state) in self.entries() {
            if expired(&state, now_ns) || !keep(vip, &state) {
                let _ = self.map.remove(&vip_key(vip));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_back_to_addresses() {
        for text in ["198.51.100.11", "2001:db8::11"] {
            let addr: IpAddr = text.parse().unwrap();
            assert_eq!(key_addr(&vip_key(addr)), Some(addr));
        }
        let mapped: IpAddr = "::ffff:198.51.100.11".parse().unwrap();
        assert_eq!(vip_key(mapped), vip_key("198.51.100.11".parse().unwrap()));
        let bad = DstKey {
            family: 99,
            ..DstKey::default()
        };
        assert_eq!(key_addr(&bad), None);
    }

    #[test]
    fn a_release_opens_a_window_that_ends() {
        let s = released(Role::Write, 1_000, Duration::from_secs(60));
        assert_eq!((s.state, s.role), (VIP_RELEASED, ROLE_WRITE));
        assert_eq!(s.guard_until_ns, 1_000 + 60_000_000_000);
        assert!(!expired(&s, 1_000 + 59_999_999_999));
        assert!(expired(&s, 1_000 + 60_000_000_000));
        let h = held(Role::Read, 5);
        assert_eq!(
            (h.state, h.role, h.guard_until_ns),
            (VIP_HELD, ROLE_READ, 0)
        );
        assert!(!expired(&h, u64::MAX), "a held VIP never expires");
        assert!(
            h.holds(u64::MAX - 1) && !h.fenced(u64::MAX - 1),
            "no lease end"
        );
        assert_eq!(Role::name(h.role), "read");
    }

    #[test]
    fn a_held_vip_past_its_lease_is_fenced_until_moved() {
        let h = held_until(Role::Write, 5, 1_000);
        assert!(h.holds(999) && !h.fenced(999));
        assert!(!h.holds(1_000) && h.fenced(1_000));
        assert!(h.fenced(u64::MAX - 1), "a frozen agent stays fenced");
        assert!(!expired(&h, u64::MAX), "only RELEASED entries are pruned");
        let r = released(Role::Write, 1_000, Duration::from_secs(1));
        assert!(!r.holds(1_001) && r.fenced(1_001) && !r.fenced(1_000_001_000));
    }

    #[test]
    fn the_clock_is_monotonic_like_bpf_ktime() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
