//! The placement every settled group must have, from one member's view.

use crate::cluster::Cluster;
use crate::sim::{MemberRole, MemberState};

/// Checks, against member `observer`'s view of the group: the write VIP is held by the
/// primary alone, and every read VIP by exactly one ONLINE member (a secondary when
/// there is one, under TO_ANOTHER_SECONDARY). Says what is wrong otherwise.
pub fn check(c: &Cluster, observer: usize) -> Result<(), String> {
    let rows = c.group.rows(observer);
    let index = |id: &str| c.group.index_of(id).ok();
    let online: Vec<usize> = rows
        .iter()
        .filter(|r| r.member_state == MemberState::Online)
        .filter_map(|r| index(&r.member_id))
        .collect();
    let primary = rows
        .iter()
        .find(|r| {
            r.member_state == MemberState::Online && r.member_role == Some(MemberRole::Primary)
        })
        .and_then(|r| index(&r.member_id));
    let write = c.holders_of(c.settings.write_vip);
    match primary {
        Some(p) if write != [p] => {
            return Err(format!(
                "the write VIP is on {write:?}, the primary is {p} (in member {observer}'s view)"
            ));
        }
        None if !write.is_empty() => {
            return Err(format!("no primary, yet the write VIP is on {write:?}"));
        }
        _ => {}
    }
    let secondaries: Vec<usize> = online
        .iter()
        .copied()
        .filter(|&m| Some(m) != primary)
        .collect();
    let to_secondary = c.settings.floating_type == "TO_ANOTHER_SECONDARY";
    for (vip, holders) in c.read_placement() {
        match holders.as_slice() {
            [h] if !online.contains(h) => {
                return Err(format!("read VIP {vip} is on {h}, which is not ONLINE"));
            }
            [h] if to_secondary && !secondaries.is_empty() && !secondaries.contains(h) => {
                return Err(format!(
                    "read VIP {vip} is on {h}, not on a secondary ({secondaries:?})"
                ));
            }
            [_] => {}
            _ => {
                return Err(format!(
                    "read VIP {vip} is on {holders:?}, not on one member"
                ));
            }
        }
    }
    Ok(())
}
