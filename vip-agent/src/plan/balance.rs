//! TO_ANOTHER_SECONDARY: the read VIPs stay off the primary while any secondary is ONLINE,
//! evenly spread over the secondaries, reached with the fewest moves.
//!
//! With n VIPs and k secondaries, "counts differ by at most one" means exactly
//! `extra = n mod k` secondaries hold `base + 1 = n/k + 1` and the others hold `base`.
//! So the only choice is WHICH secondaries get the larger cap, and which VIPs each keeps.
//!
//! The algorithm: the `extra` larger caps go to the secondaries holding the most now
//! (tie: lowest uuid); each secondary keeps `min(held, cap)` of its VIPs (the first ones
//! in `read_vips` order); the rest (its excess, the primary's, the unheld) fill the
//! secondaries below their cap, each VIP (in `read_vips` order) to the one holding the
//! fewest (tie: lowest uuid).
//!
//! Why it is the fewest moves. A move is a VIP whose holder changes; unheld VIPs are
//! assigned, which is unavoidable, and everything the primary holds must move. A VIP held
//! by secondary s stays only if s keeps it, and s keeps at most `min(h_s, c_s)` (h_s what
//! it holds, c_s its cap), so moves >= held - sum_s min(h_s, c_s), with equality here since
//! every secondary keeps exactly that many. It remains to see that giving the larger caps
//! to the largest holders maximises `sum_s min(h_s, c_s)`. Take a with h_a >= h_b, but
//! c_a = c and c_b = c + 1; swapping their caps changes the sum by
//! `[h_a > c] - [h_b > c]`, which is >= 0 as h_a >= h_b. Repeating the swap reaches our
//! choice of caps from any other without lowering the sum, so ours is a maximum.

use std::cmp::Reverse;

use super::view::{PRIMARY, View};

/// For each VIP of `view`, the index of the member that should hold it.
pub(super) fn assign(view: &View) -> Vec<usize> {
    let n = view.vips.len();
    let k = view.secondaries();
    if k == 0 {
        return vec![PRIMARY; n];
    }
    let mut held = vec![0usize; k + 1];
    for &m in view.holder.iter().flatten() {
        held[m] += 1;
    }
    // Members 1..=k are in uuid order, so the index breaks ties by uuid.
    let mut by_held: Vec<usize> = (1..=k).collect();
    by_held.sort_by_key(|&m| (Reverse(held[m]), m));
    let (base, extra) = (n / k, n % k);
    let mut cap = vec![0usize; k + 1]; // the primary's cap stays 0
    for (rank, &m) in by_held.iter().enumerate() {
        cap[m] = base + usize::from(rank < extra);
    }

    let mut count = vec![0usize; k + 1];
    let mut assigned: Vec<Option<usize>> = vec![None; n];
    for (slot, holder) in assigned.iter_mut().zip(&view.holder) {
        if let Some(m) = *holder
            && count[m] < cap[m]
        {
            *slot = Some(m);
            count[m] += 1;
        }
    }
    assigned
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| {
                // The caps add up to n, so some secondary is below its cap.
                let m = (1..=k)
                    .filter(|&m| count[m] < cap[m])
                    .min_by_key(|&m| (count[m], m))
                    .unwrap_or(PRIMARY);
                count[m] += 1;
                m
            })
        })
        .collect()
}
