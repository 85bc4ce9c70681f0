//! An [`Input`] made canonical, so the rules see one primary, the secondaries in uuid
//! order, each configured read VIP once, and for each VIP at most one valid claim.
//!
//! Defensive rules for inputs the agent should never produce, so that the result still
//! depends on the input's content only, never on its order:
//! - a uuid listed twice in `members` is one member, the primary if either entry says so;
//! - with several primaries, the lowest uuid is the primary, the others secondaries;
//! - a read VIP configured twice counts once, at its first position.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Input, Placement};

pub(super) struct View<'a> {
    /// `members[0]` is the primary; the secondaries follow in uuid order.
    pub members: Vec<&'a str>,
    /// The configured read VIPs, in config order, each once.
    pub vips: Vec<IpAddr>,
    /// For each VIP (same index), the member whose claim on it is valid, if any.
    pub holder: Vec<Option<usize>>,
}

/// The index of the primary in [`View::members`].
pub(super) const PRIMARY: usize = 0;

impl<'a> View<'a> {
    /// `None` when no member is the primary.
    pub fn new(input: &Input<'a>) -> Option<View<'a>> {
        let mut by_uuid: BTreeMap<&'a str, bool> = BTreeMap::new();
        for m in input.members {
            *by_uuid.entry(m.uuid.as_str()).or_default() |= m.primary;
        }
        let primary = by_uuid.iter().find(|(_, p)| **p).map(|(u, _)| *u)?;
        let members: Vec<&str> = std::iter::once(primary)
            .chain(by_uuid.keys().copied().filter(|u| *u != primary))
            .collect();
        let index: BTreeMap<&str, usize> =
            members.iter().enumerate().map(|(i, u)| (*u, i)).collect();

        // The VIPs sorted by address, for lookups (a sorted Vec: a BTreeMap here cost a
        // third of the planner's time in the bench).
        let configured = input.read_vips;
        let mut by_addr: Vec<(IpAddr, usize)> = configured.iter().copied().zip(0..).collect();
        by_addr.sort_unstable();
        by_addr.dedup_by_key(|(vip, _)| *vip); // keeps each address's first position
        let mut firsts: Vec<usize> = by_addr.iter().map(|(_, position)| *position).collect();
        firsts.sort_unstable();
        let vips: Vec<IpAddr> = firsts
            .iter()
            .map(|position| configured[*position])
            .collect();
        // From a position in `configured` to an index in `vips`.
        for (_, i) in &mut by_addr {
            *i = firsts.partition_point(|position| position < i);
        }
        let vip_index = |vip: &IpAddr| {
            by_addr
                .binary_search_by_key(vip, |(v, _)| *v)
                .ok()
                .map(|found| by_addr[found].1)
        };

        // Holdings iterate in uuid order, so the first claim seen is the lowest uuid's.
        let mut holder = vec![None; vips.len()];
        for (uuid, held) in input.holdings {
            let Some(&m) = index.get(uuid.as_str()) else {
                continue; // not an ONLINE member: its claims are void
            };
            for vip in held {
                if let Some(i) = vip_index(vip)
                    && let Some(slot) = holder.get_mut(i)
                    && slot.is_none()
                {
                    *slot = Some(m);
                }
            }
        }
        Some(View {
            members,
            vips,
            holder,
        })
    }

    /// How many ONLINE secondaries there are; their indices are `1..=secondaries()`.
    pub fn secondaries(&self) -> usize {
        self.members.len() - 1
    }

    /// Whether any configured read VIP has a valid claim: if none, it is a first placement.
    pub fn any_claim(&self) -> bool {
        self.holder.iter().any(Option::is_some)
    }

    /// The placement giving `vips[i]` to `members[assigned[i]]`, the write VIP to the primary.
    pub fn placement(&self, write_vip: Option<IpAddr>, assigned: &[usize]) -> Placement {
        let name = |m: usize| {
            self.members
                .get(m)
                .copied()
                .unwrap_or(self.members[PRIMARY])
        };
        Placement {
            write: write_vip.map(|vip| (vip, name(PRIMARY).to_string())),
            read: self
                .vips
                .iter()
                .zip(assigned)
                .map(|(vip, m)| (*vip, name(*m).to_string()))
                .collect(),
        }
    }
}
