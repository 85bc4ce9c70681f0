//! Placement: who should hold which VIP. Pure: no I/O, no clock, deterministic.
//!
//! (F3 skeleton: the types are agreed; `place` and `topology` are being written.)

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::FloatingType;

/// An ONLINE member of the primary's view, as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub uuid: String,
    pub primary: bool,
}

/// What each member says it holds, keyed by member uuid. Only read VIPs matter here.
pub type Holdings = BTreeMap<String, BTreeSet<IpAddr>>;

/// Who holds what: the planner's output, a manual override (set-topology), and what the
/// primary pushes to the other agents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
