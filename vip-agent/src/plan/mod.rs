//! Placement: who should hold which VIP. Pure: no I/O, no clock, deterministic.
//!
//! The primary's agent collects what every ONLINE member holds ([`Holdings`]), calls
//! [`place`] and pushes the resulting [`Placement`] to all agents. An operator may
//! override it with a manual [`topology`] (greatdb_ha's `vip_tope`), which lives until a
//! membership change makes it invalid ([`topology::still_valid`]).
//!
//! - `view`: an [`Input`] made canonical: members by uuid, the valid claims.
//! - [`place`]: the rules; `balance` (TO_ANOTHER_SECONDARY) and `keep` (TO_PRIMARY).
//! - [`topology`]: the manual topology's syntax, its refusal rules, its lifetime.

mod balance;
mod keep;
mod place;
pub mod topology;
mod view;

#[cfg(test)]
mod place_props;
#[cfg(test)]
mod place_tests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod topology_props;
#[cfg(test)]
mod topology_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::FloatingType;

pub use place::place;
pub use topology::{Topology, TopologyEntry, TopologyErrors};

/// An ONLINE member of the primary's view, as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub uuid: String,
    pub primary: bool,
}

impl Member {
    /// The ONLINE members of a view, as the planner sees them.
    pub fn online(members: &[crate::mgr::Member]) -> Vec<Member> {
        members
            .iter()
            .filter(|m| m.state == crate::mgr::MemberState::Online)
            .map(|m| Member {
                uuid: m.uuid.clone(),
                primary: m.role == Some(crate::mgr::MemberRole::Primary),
            })
            .collect()
    }
}

/// What each member says it holds, keyed by member uuid. Only read VIPs matter here.
pub type Holdings = BTreeMap<String, BTreeSet<IpAddr>>;

/// Who holds what: the planner's output, a manual override (set-topology), and what the
/// primary pushes to the other agents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
// A peer frame with an unknown field is refused whole rather than half-read.
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// The write VIP and the uuid of its holder (the primary).
    pub write: Option<(IpAddr, String)>,
    /// Each read VIP and the uuid of its one holder.
    pub read: BTreeMap<IpAddr, String>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The ONLINE members of the primary's view (exactly one has `primary`).
    pub members: &'a [Member],
    pub write_vip: Option<IpAddr>,
    pub read_vips: &'a [IpAddr],
    pub floating: FloatingType,
    pub holdings: &'a Holdings,
}

impl Placement {
    /// Every VIP `uuid` should hold: its read VIPs, and the write VIP if it is the holder.
    pub fn held_by(&self, uuid: &str) -> BTreeSet<IpAddr> {
        let write = self
            .write
            .iter()
            .filter(|(_, holder)| holder == uuid)
            .map(|(vip, _)| *vip);
        write.chain(self.read_held_by(uuid)).collect()
    }

    /// The read VIPs this placement gives to `uuid`.
    pub fn read_held_by(&self, uuid: &str) -> BTreeSet<IpAddr> {
        self.read
            .iter()
            .filter(|(_, holder)| *holder == uuid)
            .map(|(vip, _)| *vip)
            .collect()
    }

    /// The read VIPs as [`Holdings`]: what each holder holds once this placement is
    /// applied. Members holding nothing are absent.
    pub fn read_holdings(&self) -> Holdings {
        let mut holdings = Holdings::new();
        for (vip, holder) in &self.read {
            holdings.entry(holder.clone()).or_default().insert(*vip);
        }
        holdings
    }

    /// How many read VIPs change holder when going from `holdings` to this placement.
    ///
    /// A VIP's current holder is the lowest uuid in `holdings` that lists it (first claim
    /// wins, as in [`place`]); a VIP nobody lists is being assigned, not moved. Pass the
    /// holdings the planner saw, restricted to the ONLINE members: a VIP listed only by a
    /// member that left would count as a move here, where the planner sees it as unheld.
    pub fn moves_from(&self, holdings: &Holdings) -> usize {
        let mut current: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for (uuid, vips) in holdings {
            for vip in vips {
                current.entry(*vip).or_insert(uuid);
            }
        }
        self.read
            .iter()
            .filter(|(vip, holder)| current.get(vip).is_some_and(|was| was != holder))
            .count()
    }
}
