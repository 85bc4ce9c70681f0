//! From one member's view of the group to what this node is. Pure.
//!
//! The rules, in order:
//! 1. Own row missing, or own MEMBER_STATE not ONLINE (RECOVERING, OFFLINE, ERROR, …):
//!    not in the group.
//! 2. Multi-primary mode (single_primary_mode OFF, or enforce_update_everywhere_checks ON):
//!    refused, there is no single writer to follow.
//! 3. No majority of this member's own view ONLINE or RECOVERING (exactly half is no
//!    majority): no quorum. UNREACHABLE members are missing, and so is any member in
//!    another state (OFFLINE, ERROR, one this agent does not know, a row it could not
//!    read): none of them is known to take part. The majority side will elect its own
//!    primary, so this one must let go.
//! 4. More than one reachable PRIMARY in the view: refused as multi-primary.
//! 5. Own role PRIMARY or SECONDARY: that; any other role of an ONLINE member is unreadable.

use super::{Member, MemberRole, MemberState, NodeStatus};

pub fn classify(
    own_uuid: &str,
    single_primary: bool,
    enforce_everywhere: bool,
    rows: &[Member],
) -> NodeStatus {
    if own_uuid.is_empty() {
        return NodeStatus::Unreadable {
            reason: "@@server_uuid is empty".into(),
        };
    }
    let Some(own) = rows.iter().find(|m| m.uuid.eq_ignore_ascii_case(own_uuid)) else {
        let reason = if rows.iter().all(|m| m.uuid.is_empty()) {
            "group replication is not running on this mysqld".to_string()
        } else {
            format!("this member ({own_uuid}) is not in its own replication_group_members")
        };
        return NodeStatus::NotInGroup { reason };
    };
    if own.state != MemberState::Online {
        return NodeStatus::NotInGroup {
            reason: format!("MEMBER_STATE is {}", own.state),
        };
    }
    if !single_primary {
        return NodeStatus::MultiPrimary {
            reason: "group_replication_single_primary_mode is OFF; a write VIP needs \
                     single-primary mode"
                .into(),
        };
    }
    if enforce_everywhere {
        return NodeStatus::MultiPrimary {
            reason: "group_replication_enforce_update_everywhere_checks is ON, which only \
                     multi-primary mode uses"
                .into(),
        };
    }
    let total = rows.len();
    let unreachable = rows.iter().filter(|m| !m.state.counts_for_quorum()).count();
    if unreachable * 2 >= total {
        return NodeStatus::NoQuorum { unreachable, total };
    }
    let primaries = rows
        .iter()
        .filter(|m| m.state.counts_for_quorum() && m.role == Some(MemberRole::Primary))
        .count();
    if primaries > 1 {
        return NodeStatus::MultiPrimary {
            reason: format!("{primaries} reachable members report MEMBER_ROLE PRIMARY"),
        };
    }
    match &own.role {
        Some(MemberRole::Primary) => NodeStatus::Primary {
            me: own.uuid.clone(),
            members: rows.to_vec(),
        },
        Some(MemberRole::Secondary) => NodeStatus::Secondary {
            me: own.uuid.clone(),
            members: rows.to_vec(),
        },
        Some(MemberRole::Other(role)) => NodeStatus::Unreadable {
            reason: format!("this member is ONLINE with an unknown MEMBER_ROLE {role:?}"),
        },
        None => NodeStatus::Unreadable {
            reason: "this member is ONLINE without a MEMBER_ROLE".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(uuid: &str, state: &str, role: &str) -> Member {
        Member {
            uuid: uuid.into(),
            host: format!("h{uuid}"),
            port: Some(3306),
            state: MemberState::parse(state),
            role: MemberRole::parse(role),
        }
    }

    fn group(rows: &[(&str, &str, &str)]) -> Vec<Member> {
        rows.iter().map(|(u, s, r)| member(u, s, r)).collect()
    }

    fn single(own: &str, rows: &[Member]) -> NodeStatus {
        classify(own, true, false, rows)
    }

    #[test]
    fn primary_and_secondary_with_quorum() {
        let rows = group(&[
            ("a", "ONLINE", "PRIMARY"),
            ("b", "ONLINE", "SECONDARY"),
            ("c", "ONLINE", "SECONDARY"),
        ]);
        assert!(matches!(single("a", &rows), NodeStatus::Primary { .. }));
        assert!(matches!(single("B", &rows), NodeStatus::Secondary { .. }));
        assert_eq!(single("a", &rows).members().unwrap().len(), 3);
    }

    #[test]
    fn one_of_three_unreachable_keeps_quorum() {
        let rows = group(&[
            ("a", "ONLINE", "PRIMARY"),
            ("b", "UNREACHABLE", "SECONDARY"),
            ("c", "ONLINE", "SECONDARY"),
        ]);
        assert!(matches!(single("a", &rows), NodeStatus::Primary { .. }));
    }

    #[test]
    fn majority_or_exactly_half_unreachable_is_no_quorum() {
        let rows = group(&[
            ("a", "ONLINE", "PRIMARY"),
            ("b", "UNREACHABLE", "SECONDARY"),
            ("c", "UNREACHABLE", "SECONDARY"),
        ]);
        assert_eq!(
            single("a", &rows),
            NodeStatus::NoQuorum {
                unreachable: 2,
                total: 3
            }
        );
        let rows = group(&[
            ("a", "ONLINE", "PRIMARY"),
            ("b", "ONLINE", "SECONDARY"),
            ("c", "UNREACHABLE", "SECONDARY"),
            ("d", "UNREACHABLE", "SECONDARY"),
        ]);
        assert!(matches!(single("a", &rows), NodeStatus::NoQuorum { .. }));
        assert!(matches!(single("b", &rows), NodeStatus::NoQuorum { .. }));
    }

    #[test]
    fn members_in_other_states_count_as_missing() {
        // Only ONLINE and RECOVERING members are known to take part in the group.
        for other in ["ERROR", "OFFLINE", "SOMETHING_NEW", "UNREADABLE ROW"] {
            let rows = group(&[
                ("a", "ONLINE", "PRIMARY"),
                ("b", other, ""),
                ("c", "UNREACHABLE", "SECONDARY"),
            ]);
            assert_eq!(
                single("a", &rows),
                NodeStatus::NoQuorum {
                    unreachable: 2,
                    total: 3
                },
                "{other}"
            );
        }
        let rows = group(&[
            ("a", "ONLINE", "PRIMARY"),
            ("b", "RECOVERING", ""),
            ("c", "UNREACHABLE", "SECONDARY"),
        ]);
        assert!(matches!(single("a", &rows), NodeStatus::Primary { .. }));
    }

    #[test]
    fn not_online_is_not_in_group() {
        for state in ["RECOVERING", "OFFLINE", "ERROR"] {
            let rows = group(&[("a", state, ""), ("b", "ONLINE", "PRIMARY")]);
            match single("a", &rows) {
                NodeStatus::NotInGroup { reason } => assert!(reason.contains(state), "{reason}"),
                other => panic!("{state}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_own_row_or_plugin_never_started() {
        let rows = group(&[("b", "ONLINE", "PRIMARY")]);
        assert!(matches!(single("a", &rows), NodeStatus::NotInGroup { .. }));
        // Plugin installed, never started: one row with an empty MEMBER_ID.
        let rows = group(&[("", "OFFLINE", "")]);
        match single("a", &rows) {
            NodeStatus::NotInGroup { reason } => assert!(reason.contains("not running")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(single("a", &[]), NodeStatus::NotInGroup { .. }));
    }

    #[test]
    fn multi_primary_is_refused_with_the_reason() {
        let rows = group(&[("a", "ONLINE", "PRIMARY"), ("b", "ONLINE", "PRIMARY")]);
        match classify("a", false, true, &rows) {
            NodeStatus::MultiPrimary { reason } => assert!(reason.contains("single_primary_mode")),
            other => panic!("{other:?}"),
        }
        match classify("a", true, true, &rows) {
            NodeStatus::MultiPrimary { reason } => assert!(reason.contains("update_everywhere")),
            other => panic!("{other:?}"),
        }
        match single("a", &rows) {
            NodeStatus::MultiPrimary { reason } => assert!(reason.contains("2 reachable")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreachable_old_primary_does_not_count_twice() {
        // The minority side's old primary is still listed as PRIMARY but UNREACHABLE.
        let rows = group(&[
            ("a", "UNREACHABLE", "PRIMARY"),
            ("b", "ONLINE", "PRIMARY"),
            ("c", "ONLINE", "SECONDARY"),
        ]);
        assert!(matches!(single("b", &rows), NodeStatus::Primary { .. }));
    }

    #[test]
    fn online_without_role_is_unreadable() {
        let rows = group(&[("a", "ONLINE", ""), ("b", "ONLINE", "PRIMARY")]);
        assert!(matches!(single("a", &rows), NodeStatus::Unreadable { .. }));
        assert!(matches!(single("", &rows), NodeStatus::Unreadable { .. }));
    }
}
