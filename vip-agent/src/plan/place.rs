//! [`place`]: the rules that spread the read VIPs over the ONLINE members.

use super::view::{PRIMARY, View};
use super::{Input, Placement, balance, keep};
use crate::config::FloatingType;

/// Who should hold which VIP, given what the ONLINE members hold now.
///
/// - The write VIP (if configured) goes to the primary. Without a primary in
///   `input.members` the result is empty ([`Placement::default`]): the agent only plans
///   on the primary, so this is defensive.
/// - Every configured read VIP goes to exactly one ONLINE member.
/// - Claims: holdings of uuids that are not in `members`, and VIPs that are not configured
///   read VIPs, are ignored. A VIP claimed by several members stays with the lowest uuid
///   (first claim wins, claims ordered by uuid); the others give it up.
/// - First placement (no valid claim on any read VIP): the VIPs, in `read_vips` order, are
///   dealt round-robin to the secondaries in uuid order (counts differ by at most one);
///   with no secondary, all go to the primary. Both floating types.
/// - Otherwise, per floating type:
///   - [`FloatingType::ToAnotherSecondary`] (`balance.rs`): while any secondary is ONLINE
///     no read VIP is on the primary and the secondaries' counts differ by at most one,
///     reached with the fewest moves; with no secondary, everything is on the primary.
///   - [`FloatingType::ToPrimary`] (`keep.rs`): valid claims are kept, unheld VIPs go to
///     the primary, then each empty secondary takes one VIP.
///
/// Ties are broken by uuid (lowest first) and VIPs are taken in `read_vips` order (not
/// sorted), so the result depends only on the input's content: not on the order of
/// `members`, nor on how `holdings` was built. (Duplicate members or read VIPs, and
/// several primaries, are resolved by uuid too: see `view.rs`.)
pub fn place(input: &Input) -> Placement {
    let Some(view) = View::new(input) else {
        return Placement::default();
    };
    let assigned = if !view.any_claim() {
        first(&view)
    } else {
        match input.floating {
            FloatingType::ToAnotherSecondary => balance::assign(&view),
            FloatingType::ToPrimary => keep::assign(&view),
        }
    };
    view.placement(input.write_vip, &assigned)
}

/// VIP `i` (config order) to secondary `i mod k` (uuid order); all on the primary if k = 0.
fn first(view: &View) -> Vec<usize> {
    let k = view.secondaries();
    (0..view.vips.len())
        .map(|i| if k == 0 { PRIMARY } else { 1 + i % k })
        .collect()
}
