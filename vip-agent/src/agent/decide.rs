//! What this node should do with the write VIP, given its view of the group. Pure.
//!
//! The rule that matters most: two live nodes must never hold the write VIP. So the VIP
//! is held only while this node's own view says it is the primary with quorum, and it is
//! released as soon as that stops being true, including when the local mysqld is down or
//! hung (the group will elect another primary). The one exception is a mysqld that is
//! alive but refuses the agent (too many connections, a changed password): the group is
//! fine, so releasing would cause the very outage the agent exists to prevent.

use crate::mgr::NodeStatus;

/// The decision for the write VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteVip {
    /// Bind it if it is missing (and announce).
    Hold,
    /// Unbind it if it is bound.
    Release,
    /// Leave the kernel as it is: we cannot tell, and changing it would be worse.
    Keep,
}

pub fn write_vip(status: &NodeStatus) -> WriteVip {
    match status {
        NodeStatus::Primary { .. } => WriteVip::Hold,
        // Alive but refusing, slow but not yet hung, or an answer we cannot read: the
        // group is probably fine, and a VIP is never dropped because of bad input.
        NodeStatus::MysqldRefusing { .. }
        | NodeStatus::Degraded { .. }
        | NodeStatus::Unreadable { .. } => WriteVip::Keep,
        NodeStatus::Secondary { .. }
        | NodeStatus::NotInGroup { .. }
        | NodeStatus::NoQuorum { .. }
        | NodeStatus::MultiPrimary { .. }
        | NodeStatus::MysqldDown { .. }
        | NodeStatus::MysqldHung { .. } => WriteVip::Release,
    }
}
