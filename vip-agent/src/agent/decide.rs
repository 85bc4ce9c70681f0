//! What this node should do with its VIPs, given its view of the group. Pure.
//!
//! The rule that matters most: two live nodes must never hold the write VIP. So the VIP
//! is held only while this node's own view says it is the primary with quorum, and it is
//! released as soon as that stops being true, including when the local mysqld is down or
//! hung (the group will elect another primary). The one exception is a mysqld that is
//! alive but refuses the agent (too many connections, a changed password): the group is
//! fine, so releasing would cause the very outage the agent exists to prevent.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::mgr::NodeStatus;
use crate::plan::Placement;

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

/// What this node should do with its read VIPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadVips {
    /// Hold exactly these (bind the missing ones, unbind the others).
    Hold(BTreeSet<IpAddr>),
    /// Leave the kernel as it is.
    Keep,
    /// Unbind every read VIP held.
    ReleaseAll,
}

/// The read VIPs this node should hold, given its view and the placement it follows (the
/// one it computed as primary, or the last one the primary pushed). A secondary that has
/// no placement yet (its agent just started, the primary's agent is unreachable) keeps
/// what it holds while its own view is healthy: read VIPs never flap because of the peer
/// network. Quorum loss, leaving the group, or a dead or hung mysqld releases them all.
pub fn read_vips(status: &NodeStatus, placement: Option<&Placement>) -> ReadVips {
    match (status, placement) {
        (NodeStatus::Primary { me, .. } | NodeStatus::Secondary { me, .. }, Some(p)) => {
            ReadVips::Hold(p.read_held_by(me))
        }
        (NodeStatus::Primary { .. } | NodeStatus::Secondary { .. }, None) => ReadVips::Keep,
        (_, _) => match write_vip(status) {
            WriteVip::Keep => ReadVips::Keep,
            _ => ReadVips::ReleaseAll,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgr::{Member, MemberRole, MemberState};

    fn members() -> Vec<Member> {
        ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, u)| Member {
                uuid: u.to_string(),
                host: format!("h{u}"),
                port: Some(3306),
                state: MemberState::Online,
                role: Some(if i == 0 {
                    MemberRole::Primary
                } else {
                    MemberRole::Secondary
                }),
            })
            .collect()
    }

    fn placement() -> Placement {
        let v = |s: &str| s.parse::<IpAddr>().unwrap();
        Placement {
            write: Some((v("198.51.100.50"), "a".into())),
            read: [
                (v("198.51.100.61"), "b".to_string()),
                (v("198.51.100.62"), "a".to_string()),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn a_secondary_holds_its_share_of_the_placement() {
        let s = NodeStatus::Secondary {
            me: "b".into(),
            members: members(),
        };
        let want: BTreeSet<IpAddr> = ["198.51.100.61".parse().unwrap()].into();
        assert_eq!(read_vips(&s, Some(&placement())), ReadVips::Hold(want));
        // The write VIP in a pushed placement is never this node's business.
        let p = NodeStatus::Primary {
            me: "a".into(),
            members: members(),
        };
        let want: BTreeSet<IpAddr> = ["198.51.100.62".parse().unwrap()].into();
        assert_eq!(read_vips(&p, Some(&placement())), ReadVips::Hold(want));
    }

    #[test]
    fn without_a_placement_a_healthy_node_keeps_what_it_holds() {
        let s = NodeStatus::Secondary {
            me: "b".into(),
            members: members(),
        };
        assert_eq!(read_vips(&s, None), ReadVips::Keep);
    }

    #[test]
    fn quorum_loss_and_a_dead_mysqld_release_everything_refusal_keeps() {
        let lost = NodeStatus::NoQuorum {
            unreachable: 2,
            total: 3,
        };
        assert_eq!(read_vips(&lost, Some(&placement())), ReadVips::ReleaseAll);
        let down = NodeStatus::MysqldDown {
            reason: "refused".into(),
        };
        assert_eq!(read_vips(&down, None), ReadVips::ReleaseAll);
        let refusing = NodeStatus::MysqldRefusing {
            code: Some(1040),
            reason: "too many connections".into(),
        };
        assert_eq!(read_vips(&refusing, Some(&placement())), ReadVips::Keep);
    }
}
