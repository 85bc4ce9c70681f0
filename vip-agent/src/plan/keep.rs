//! TO_PRIMARY: every valid claim is kept, the VIPs nobody holds go to the primary, and
//! then each ONLINE secondary holding none takes one, so new or returning secondaries
//! serve reads without moving anything else.
//!
//! Each empty secondary, in uuid order, takes:
//! 1. one of the primary's VIPs (the first in `read_vips` order), if it holds any;
//! 2. otherwise one from the member holding the most (tie: lowest uuid), only if it holds
//!    two or more (the last of its VIPs in `read_vips` order, so it keeps its first ones,
//!    as TO_ANOTHER_SECONDARY does);
//! 3. otherwise nothing: everyone holds at most one, so there are fewer VIPs than
//!    secondaries, and taking one would only empty another member.

use std::cmp::Reverse;

use super::view::{PRIMARY, View};

/// For each VIP of `view`, the index of the member that should hold it.
pub(super) fn assign(view: &View) -> Vec<usize> {
    let k = view.secondaries();
    let mut assigned: Vec<usize> = view.holder.iter().map(|h| h.unwrap_or(PRIMARY)).collect();
    let mut count = vec![0usize; k + 1];
    for &m in &assigned {
        count[m] += 1;
    }
    for s in 1..=k {
        if count[s] > 0 {
            continue;
        }
        let taken = if count[PRIMARY] > 0 {
            assigned.iter().position(|&m| m == PRIMARY)
        } else {
            // Members 1..=k are in uuid order: on equal counts the lowest index wins.
            let donor = (1..=k).max_by_key(|&m| (count[m], Reverse(m)));
            donor
                .filter(|&d| count[d] >= 2)
                .and_then(|d| assigned.iter().rposition(|&m| m == d))
        };
        if let Some(i) = taken {
            count[assigned[i]] -= 1;
            assigned[i] = s;
            count[s] += 1;
        }
    }
    assigned
}
