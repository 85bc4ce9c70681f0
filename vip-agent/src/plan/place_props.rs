//! Property tests of [`place`]: random groups (up to 5 members), up to 6 read VIPs (IPv4
//! and IPv6), random holdings (with conflicts, strangers and unconfigured VIPs), and random
//! histories of membership changes, each step planning from the previous placement.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proptest::sample::{Index, subsequence};

use super::{Holdings, Input, Member, Placement, place};
use crate::config::FloatingType;

/// Candidate members; `uuid(i)` is scrambled so that uuid order is not index order.
const POOL: usize = 7;

/// The chosen pool members, the one at `primary` being the primary.
pub(super) fn members_of(chosen: &[usize], primary: usize) -> Vec<Member> {
    chosen
        .iter()
        .enumerate()
        .map(|(i, m)| Member {
            uuid: uuid(*m),
            primary: i == primary,
        })
        .collect()
}

pub(super) fn uuid(i: usize) -> String {
    let h = (i as u32).wrapping_mul(0x9E37_79B9).rotate_left(7);
    format!("{h:08x}-0000-4000-8000-{i:012x}")
}

pub(super) fn read_pool() -> Vec<IpAddr> {
    let v4 = |l| IpAddr::V4(Ipv4Addr::new(198, 51, 100, l));
    let v6 = |l| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, l));
    vec![v4(61), v6(0x62), v4(63), v6(0x64), v4(65), v6(0x66)]
}

const WRITE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 60));
/// Claimed by some members but never configured: must be ignored.
const STRANGER_VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));

#[derive(Clone, Debug)]
enum Event {
    /// A member leaves (not the last one); if it was the primary, another is elected.
    Leave { who: Index, next_primary: Index },
    /// A pool member joins as a secondary (nothing if it is already in).
    Join(usize),
    /// Planned switchover.
    Switch(Index),
}

#[derive(Clone, Debug)]
struct Scenario {
    members: Vec<Member>,
    read_vips: Vec<IpAddr>,
    write_vip: Option<IpAddr>,
    floating: FloatingType,
    holdings: Holdings,
    history: Vec<Event>,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (any::<Index>(), any::<Index>())
            .prop_map(|(who, next_primary)| Event::Leave { who, next_primary }),
        (0..POOL).prop_map(Event::Join),
        any::<Index>().prop_map(Event::Switch),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        subsequence((0..POOL).collect::<Vec<_>>(), 1..=5),
        any::<Index>(),
        0usize..=6,
        any::<bool>(),
        any::<bool>(),
        // (member index in the pool, VIP index: 6 is the stranger VIP)
        prop::collection::vec((0..POOL, 0usize..7), 0..14),
        prop::collection::vec(event(), 0..8),
    )
        .prop_map(|(chosen, primary, n, write, another, claims, history)| {
            let primary = primary.index(chosen.len());
            let members = members_of(&chosen, primary);
            let pool = read_pool();
            let mut holdings = Holdings::new();
            for (m, v) in claims {
                let vip = pool.get(v).copied().unwrap_or(STRANGER_VIP);
                holdings.entry(uuid(m)).or_default().insert(vip);
            }
            Scenario {
                members,
                read_vips: pool[..n].to_vec(),
                write_vip: write.then_some(WRITE),
                floating: if another {
                    FloatingType::ToAnotherSecondary
                } else {
                    FloatingType::ToPrimary
                },
                holdings,
                history,
            }
        })
}

fn apply(members: &mut Vec<Member>, event: &Event) {
    match event {
        Event::Leave { who, next_primary } if members.len() > 1 => {
            let gone = members.remove(who.index(members.len()));
            if gone.primary {
                let next = next_primary.index(members.len());
                members[next].primary = true;
            }
        }
        Event::Leave { .. } => {}
        Event::Join(i) => {
            if !members.iter().any(|m| m.uuid == uuid(*i)) {
                members.push(Member {
                    uuid: uuid(*i),
                    primary: false,
                });
            }
        }
        Event::Switch(who) => {
            let new = who.index(members.len());
            for (i, m) in members.iter_mut().enumerate() {
                m.primary = i == new;
            }
        }
    }
}

/// The reference view of an input, computed independently of the planner.
struct Reference {
    primary: String,
    /// In uuid order.
    secondaries: Vec<String>,
    /// Per configured read VIP: the lowest ONLINE uuid that claims it.
    claim: Vec<Option<String>>,
}

fn reference(input: &Input) -> Reference {
    let primary = input
        .members
        .iter()
        .find(|m| m.primary)
        .map(|m| m.uuid.clone())
        .unwrap_or_default();
    let mut secondaries: Vec<String> = input
        .members
        .iter()
        .filter(|m| !m.primary)
        .map(|m| m.uuid.clone())
        .collect();
    secondaries.sort();
    let claim = input
        .read_vips
        .iter()
        .map(|vip| {
            input
                .members
                .iter()
                .filter(|m| input.holdings.get(&m.uuid).is_some_and(|h| h.contains(vip)))
                .map(|m| m.uuid.clone())
                .min()
        })
        .collect();
    Reference {
        primary,
        secondaries,
        claim,
    }
}

/// Moves from the claims to `holder` (per VIP, same order).
fn moves(claim: &[Option<String>], holder: &[&str]) -> usize {
    claim
        .iter()
        .zip(holder)
        .filter(|(c, h)| c.as_deref().is_some_and(|c| c != **h))
        .count()
}

/// The fewest moves over every balanced assignment of the VIPs to the secondaries.
fn brute_force_min_moves(r: &Reference) -> usize {
    let (n, k) = (r.claim.len(), r.secondaries.len());
    let mut digits = vec![0usize; n];
    let mut best = usize::MAX;
    loop {
        let mut count = vec![0usize; k];
        for d in &digits {
            count[*d] += 1;
        }
        let (lo, hi) = (count.iter().min(), count.iter().max());
        if hi.zip(lo).is_none_or(|(hi, lo)| hi - lo <= 1) {
            let holder: Vec<&str> = digits.iter().map(|d| r.secondaries[*d].as_str()).collect();
            best = best.min(moves(&r.claim, &holder));
        }
        // Next assignment, counting in base k.
        let mut i = 0;
        while i < n && digits[i] + 1 == k {
            digits[i] = 0;
            i += 1;
        }
        if i == n {
            return best;
        }
        digits[i] += 1;
    }
}

fn check(input: &Input, p: &Placement) -> Result<(), TestCaseError> {
    let r = reference(input);
    let (n, k) = (input.read_vips.len(), r.secondaries.len());

    // The write VIP on the primary only; each read VIP exactly once, on an ONLINE member.
    prop_assert_eq!(&p.write, &input.write_vip.map(|v| (v, r.primary.clone())));
    let placed: BTreeSet<IpAddr> = p.read.keys().copied().collect();
    prop_assert_eq!(
        placed,
        input.read_vips.iter().copied().collect::<BTreeSet<_>>()
    );
    let holder: Vec<&str> = input
        .read_vips
        .iter()
        .map(|v| p.read.get(v).map_or("", String::as_str))
        .collect();
    for h in &holder {
        prop_assert!(
            input.members.iter().any(|m| m.uuid == *h),
            "{h} is not ONLINE"
        );
    }
    let count = |uuid: &str| holder.iter().filter(|h| **h == uuid).count();
    let counts: Vec<usize> = r.secondaries.iter().map(|s| count(s)).collect();
    let balanced = counts
        .iter()
        .max()
        .zip(counts.iter().min())
        .is_none_or(|(hi, lo)| hi - lo <= 1);

    // The moves the planner reports are the moves from the claims.
    let mut online = input.holdings.clone();
    online.retain(|uuid, _| input.members.iter().any(|m| m.uuid == *uuid));
    prop_assert_eq!(p.moves_from(&online), moves(&r.claim, &holder));

    if r.claim.iter().all(Option::is_none) {
        // First placement: round-robin over the secondaries in uuid order.
        for (i, h) in holder.iter().enumerate() {
            let want = if k == 0 {
                &r.primary
            } else {
                &r.secondaries[i % k]
            };
            prop_assert_eq!(*h, want.as_str());
        }
        return Ok(());
    }
    match input.floating {
        FloatingType::ToAnotherSecondary if k == 0 => {
            prop_assert_eq!(count(&r.primary), n);
        }
        FloatingType::ToAnotherSecondary => {
            prop_assert_eq!(count(&r.primary), 0, "a read VIP is on the primary");
            prop_assert!(balanced, "unbalanced: {:?}", counts);
            prop_assert_eq!(moves(&r.claim, &holder), brute_force_min_moves(&r));
        }
        FloatingType::ToPrimary => {
            let before = |uuid: &str| -> BTreeSet<usize> {
                (0..n)
                    .filter(|i| r.claim[*i].as_deref() == Some(uuid))
                    .collect()
            };
            let after =
                |uuid: &str| -> BTreeSet<usize> { (0..n).filter(|i| holder[*i] == uuid).collect() };
            let empty_before: BTreeSet<&str> = r
                .secondaries
                .iter()
                .map(String::as_str)
                .filter(|s| before(s).is_empty())
                .collect();
            for (claim, h) in r.claim.iter().zip(&holder) {
                // Kept (an unheld VIP is the primary's), or given to a secondary that held
                // nothing.
                let kept = claim.as_deref().unwrap_or(&r.primary);
                prop_assert!(*h == kept || empty_before.contains(h));
            }
            for s in &r.secondaries {
                let (b, a) = (before(s), after(s));
                if b.is_empty() {
                    prop_assert!(a.len() <= 1, "{s} was empty and took {}", a.len());
                } else {
                    prop_assert!(a.is_subset(&b), "{s} gained VIPs");
                    if a != b {
                        prop_assert!(b.len() >= 2 && !a.is_empty(), "{s} lost VIPs");
                    }
                }
            }
            if n >= k {
                prop_assert!(
                    counts.iter().all(|c| *c >= 1),
                    "an empty secondary: {:?}",
                    counts
                );
            }
            if counts.contains(&0) {
                prop_assert_eq!(count(&r.primary), 0);
                prop_assert!(counts.iter().all(|c| *c <= 1));
            }
            prop_assert!(moves(&r.claim, &holder) <= empty_before.len());
        }
    }
    Ok(())
}

/// The same input with the members in another order, one listed twice, and the holdings
/// built in the reverse order must give the same placement.
fn check_determinism(input: &Input, p: &Placement) -> Result<(), TestCaseError> {
    prop_assert_eq!(&place(input), p);
    let mut reordered: Vec<Member> = input.members.iter().rev().cloned().collect();
    if !reordered.is_empty() {
        reordered.rotate_left(1);
    }
    if let Some(first) = reordered.first().cloned() {
        reordered.push(first);
    }
    let holdings: Holdings = input
        .holdings
        .iter()
        .rev()
        .map(|(u, h)| (u.clone(), h.iter().rev().copied().collect()))
        .collect();
    let again = place(&Input {
        members: &reordered,
        holdings: &holdings,
        ..input.clone()
    });
    prop_assert_eq!(&again, p);
    Ok(())
}

proptest! {
    #[test]
    fn every_step_of_a_history_keeps_the_rules(s in scenario()) {
        let mut members = s.members.clone();
        let mut holdings = s.holdings.clone();
        for step in 0..=s.history.len() {
            if step > 0 {
                apply(&mut members, &s.history[step - 1]);
            }
            let input = Input {
                members: &members,
                write_vip: s.write_vip,
                read_vips: &s.read_vips,
                floating: s.floating,
                holdings: &holdings,
            };
            let p = place(&input);
            check(&input, &p)?;
            check_determinism(&input, &p)?;
            // What the still-ONLINE members hold after the next membership change.
            holdings = p.read_holdings();
            let next = s.history.get(step);
            let mut after = members.clone();
            if let Some(e) = next {
                apply(&mut after, e);
            }
            holdings.retain(|uuid, _| after.iter().any(|m| m.uuid == *uuid));
        }
    }

    #[test]
    fn a_second_plan_moves_nothing(s in scenario()) {
        let input = Input {
            members: &s.members,
            write_vip: s.write_vip,
            read_vips: &s.read_vips,
            floating: s.floating,
            holdings: &s.holdings,
        };
        let p = place(&input);
        let held = p.read_holdings();
        let again = place(&Input { holdings: &held, ..input });
        prop_assert_eq!(again.moves_from(&held), 0);
        prop_assert_eq!(again, p);
    }

    #[test]
    fn any_input_gives_a_placement_without_panicking(
        members in prop::collection::vec((0..POOL, any::<bool>()), 0..6),
        claims in prop::collection::vec((0..POOL, 0usize..7), 0..14),
        read in prop::collection::vec(0usize..7, 0..8),
        another in any::<bool>(),
    ) {
        // Duplicate members and VIPs, no primary or several: the defensive paths.
        let members: Vec<Member> = members
            .into_iter()
            .map(|(i, primary)| Member { uuid: uuid(i), primary })
            .collect();
        let pool = read_pool();
        let vip = |v: usize| pool.get(v).copied().unwrap_or(STRANGER_VIP);
        let read_vips: Vec<IpAddr> = read.iter().map(|v| vip(*v)).collect();
        let mut holdings = Holdings::new();
        for (m, v) in claims {
            holdings.entry(uuid(m)).or_default().insert(vip(v));
        }
        let floating = if another {
            FloatingType::ToAnotherSecondary
        } else {
            FloatingType::ToPrimary
        };
        let input = Input {
            members: &members,
            write_vip: Some(WRITE),
            read_vips: &read_vips,
            floating,
            holdings: &holdings,
        };
        let p = place(&input);
        check_determinism(&input, &p)?;
        if members.iter().any(|m| m.primary) {
            let placed: BTreeSet<IpAddr> = p.read.keys().copied().collect();
            prop_assert_eq!(placed, read_vips.iter().copied().collect::<BTreeSet<_>>());
            for h in p.read.values() {
                prop_assert!(members.iter().any(|m| m.uuid == *h));
            }
        } else {
            prop_assert_eq!(p, Placement::default());
        }
    }
}
