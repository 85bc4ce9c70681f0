//! The worked examples of the README's "Read VIPs: placement rules", one test each, and
//! the defensive cases. Members m1 < m2 < ... in uuid order; the read VIPs are
//! 198.51.100.61, .62, ... in config order, written by their last octet.

use super::testkit::{WRITE, group, holdings, layout, plan, vip};
use super::{Holdings, Input, Member, Placement, place};
use crate::config::FloatingType::{ToAnotherSecondary, ToPrimary};

const SIX: &[u8] = &[61, 62, 63, 64, 65, 66];

/// Plans, checks the layout and the number of moves from `held`.
fn expect(
    members: &[Member],
    read: &[u8],
    f: crate::config::FloatingType,
    held: &Holdings,
    want: &str,
    moves: usize,
) -> Placement {
    let p = plan(members, read, f, held);
    assert_eq!(layout(&p, members), want);
    // Moves are counted from what the ONLINE members hold, as the planner sees it.
    let mut online = held.clone();
    online.retain(|uuid, _| members.iter().any(|m| m.uuid == *uuid));
    assert_eq!(p.moves_from(&online), moves, "moves");
    let primary = members.iter().find(|m| m.primary).map(|m| m.uuid.clone());
    assert_eq!(
        p.write,
        primary.map(|u| (vip(WRITE), u)),
        "the write VIP is on the primary"
    );
    p
}

// ---- First placement ----

#[test]
fn first_placement_deals_round_robin_over_the_secondaries() {
    let g = group("m1", &["m2", "m3"]);
    for f in [ToPrimary, ToAnotherSecondary] {
        expect(
            &g,
            &[61, 62, 63, 64, 65],
            f,
            &Holdings::new(),
            "m1=[] m2=[61 63 65] m3=[62 64]",
            0,
        );
    }
}

#[test]
fn first_placement_without_secondary_puts_all_on_the_primary() {
    let g = group("m1", &[]);
    for f in [ToPrimary, ToAnotherSecondary] {
        expect(&g, &[61, 62, 63], f, &Holdings::new(), "m1=[61 62 63]", 0);
    }
}

#[test]
fn first_placement_follows_uuid_order_not_the_primary() {
    // The primary (m2) is not the lowest uuid; the secondaries are dealt in uuid order.
    let g = group("m2", &["m3", "m1"]);
    expect(
        &g,
        &[61, 62, 63],
        ToPrimary,
        &Holdings::new(),
        "m1=[61 63] m2=[] m3=[62]",
        0,
    );
}

// ---- TO_ANOTHER_SECONDARY ----

#[test]
fn another_secondary_a_secondary_leaves() {
    // m4 (63, 66) leaves: its VIPs fill m2 and m3 to three each.
    let g = group("m1", &["m2", "m3"]);
    let held = holdings(&[("m2", &[61, 64]), ("m3", &[62, 65])]);
    expect(
        &g,
        SIX,
        ToAnotherSecondary,
        &held,
        "m1=[] m2=[61 63 64] m3=[62 65 66]",
        0,
    );
}

#[test]
fn another_secondary_a_secondary_comes_back() {
    // m4 rejoins empty: m2 and m3 each give up their last VIP, the fewest moves (2).
    let g = group("m1", &["m2", "m3", "m4"]);
    let held = holdings(&[("m2", &[61, 63, 64]), ("m3", &[62, 65, 66])]);
    expect(
        &g,
        SIX,
        ToAnotherSecondary,
        &held,
        "m1=[] m2=[61 63] m3=[62 65] m4=[64 66]",
        2,
    );
}

#[test]
fn another_secondary_no_secondary_left_then_one_returns() {
    let held = holdings(&[("m2", &[61, 62, 63])]);
    // m2 leaves: the primary takes everything.
    let alone = group("m1", &[]);
    let p = expect(
        &alone,
        &[61, 62, 63],
        ToAnotherSecondary,
        &holdings(&[]),
        "m1=[61 62 63]",
        0,
    );
    assert_eq!(p.read_holdings(), holdings(&[("m1", &[61, 62, 63])]));
    // m2 comes back: everything leaves the primary.
    let g = group("m1", &["m2"]);
    let back = expect(
        &g,
        &[61, 62, 63],
        ToAnotherSecondary,
        &p.read_holdings(),
        "m1=[] m2=[61 62 63]",
        3,
    );
    assert_eq!(back.read_holdings(), held);
}

#[test]
fn another_secondary_the_larger_share_stays_with_the_larger_holder() {
    // Switchover from m1 to m2: m2's VIPs leave it. 5 VIPs over 2 secondaries: 3 + 2, and
    // the 3 go to m3, which already holds 2, rather than to m1, which holds none.
    let g = group("m2", &["m1", "m3"]);
    let held = holdings(&[("m2", &[61, 63, 65]), ("m3", &[62, 64])]);
    expect(
        &g,
        &[61, 62, 63, 64, 65],
        ToAnotherSecondary,
        &held,
        "m1=[61 63] m2=[] m3=[62 64 65]",
        3,
    );
}

#[test]
fn another_secondary_balanced_holdings_do_not_move() {
    let g = group("m1", &["m2", "m3"]);
    let held = holdings(&[("m2", &[61, 62]), ("m3", &[63])]);
    expect(
        &g,
        &[61, 62, 63],
        ToAnotherSecondary,
        &held,
        "m1=[] m2=[61 62] m3=[63]",
        0,
    );
}

// ---- TO_PRIMARY ----

#[test]
fn to_primary_a_secondary_leaves() {
    // m3 (62, 64) leaves: its VIPs go to the primary, m2 keeps its own.
    let g = group("m1", &["m2"]);
    let held = holdings(&[("m2", &[61, 63])]);
    expect(
        &g,
        &[61, 62, 63, 64],
        ToPrimary,
        &held,
        "m1=[62 64] m2=[61 63]",
        0,
    );
}

#[test]
fn to_primary_an_empty_secondary_takes_from_the_primary() {
    // m3 comes back: it takes the primary's first VIP; nothing else moves.
    let g = group("m1", &["m2", "m3"]);
    let held = holdings(&[("m1", &[62, 64]), ("m2", &[61, 63])]);
    expect(
        &g,
        &[61, 62, 63, 64],
        ToPrimary,
        &held,
        "m1=[64] m2=[61 63] m3=[62]",
        1,
    );
}

#[test]
fn to_primary_an_empty_secondary_takes_from_the_member_holding_most() {
    // m4 joins; the primary holds none, so m4 takes m3's last VIP (m3 holds the most).
    let g = group("m1", &["m2", "m3", "m4"]);
    let held = holdings(&[("m2", &[61, 62]), ("m3", &[63, 64, 65])]);
    expect(
        &g,
        &[61, 62, 63, 64, 65],
        ToPrimary,
        &held,
        "m1=[] m2=[61 62] m3=[63 64] m4=[65]",
        1,
    );
}

#[test]
fn to_primary_equal_holders_give_by_lowest_uuid() {
    let g = group("m1", &["m2", "m3", "m4"]);
    let held = holdings(&[("m2", &[61, 62]), ("m3", &[63, 64])]);
    expect(
        &g,
        &[61, 62, 63, 64],
        ToPrimary,
        &held,
        "m1=[] m2=[61] m3=[63 64] m4=[62]",
        1,
    );
}

#[test]
fn to_primary_an_empty_secondary_stays_empty_when_nobody_has_two() {
    let g = group("m1", &["m2", "m3", "m4"]);
    let held = holdings(&[("m2", &[61]), ("m3", &[62])]);
    expect(
        &g,
        &[61, 62],
        ToPrimary,
        &held,
        "m1=[] m2=[61] m3=[62] m4=[]",
        0,
    );
}

#[test]
fn to_primary_a_primary_change_keeps_every_claim() {
    // Switchover from m1 to m2: the old primary keeps its VIPs as a secondary.
    let g = group("m2", &["m1", "m3"]);
    let held = holdings(&[("m1", &[62]), ("m2", &[61]), ("m3", &[63])]);
    expect(
        &g,
        &[61, 62, 63],
        ToPrimary,
        &held,
        "m1=[62] m2=[61] m3=[63]",
        0,
    );
}

#[test]
fn to_primary_several_empty_secondaries_take_in_uuid_order() {
    // m3 and m4 join; the primary holds 63 and 64: m3 gets 63, m4 gets 64.
    let g = group("m1", &["m2", "m3", "m4"]);
    let held = holdings(&[("m1", &[63, 64]), ("m2", &[61, 62])]);
    expect(
        &g,
        &[61, 62, 63, 64],
        ToPrimary,
        &held,
        "m1=[] m2=[61 62] m3=[63] m4=[64]",
        2,
    );
}

// ---- Claims ----

#[test]
fn claim_conflict_first_claim_wins() {
    // m2 and m3 both claim 61: m2 (the lower uuid) keeps it. The claim of m9, not a
    // member, and 70, not a configured read VIP, are ignored: 63 is unheld.
    let g = group("m1", &["m2", "m3"]);
    let held = holdings(&[("m2", &[61, 70]), ("m3", &[61, 62]), ("m9", &[63])]);
    expect(
        &g,
        &[61, 62, 63],
        ToPrimary,
        &held,
        "m1=[63] m2=[61] m3=[62]",
        0,
    );
    expect(
        &g,
        &[61, 62, 63],
        ToAnotherSecondary,
        &held,
        "m1=[] m2=[61 63] m3=[62]",
        0,
    );
}

#[test]
fn claims_only_by_strangers_make_a_first_placement() {
    let g = group("m1", &["m2", "m3"]);
    let held = holdings(&[("m9", &[61, 62]), ("m2", &[70])]);
    expect(
        &g,
        &[61, 62, 63],
        ToPrimary,
        &held,
        "m1=[] m2=[61 63] m3=[62]",
        0,
    );
}

// ---- Defensive ----

#[test]
fn no_primary_gives_an_empty_placement() {
    let g = vec![Member {
        uuid: "m2".into(),
        primary: false,
    }];
    let p = plan(&g, &[61], ToPrimary, &holdings(&[("m2", &[61])]));
    assert_eq!(p, Placement::default());
    assert_eq!(
        plan(&[], &[61], ToAnotherSecondary, &Holdings::new()),
        Placement::default()
    );
}

#[test]
fn no_read_vip_places_the_write_vip_only() {
    let g = group("m1", &["m2"]);
    let p = plan(&g, &[], ToAnotherSecondary, &Holdings::new());
    assert_eq!(p.write, Some((vip(WRITE), "m1".to_string())));
    assert!(p.read.is_empty());
    assert_eq!(p.held_by("m1"), [vip(WRITE)].into());
    assert!(p.held_by("m2").is_empty());
}

#[test]
fn no_write_vip_places_the_read_vips_only() {
    let g = group("m1", &["m2"]);
    let read = [vip(61)];
    let none = Holdings::new();
    let p = place(&Input {
        members: &g,
        write_vip: None,
        read_vips: &read,
        floating: ToPrimary,
        holdings: &none,
    });
    assert_eq!(p.write, None);
    assert_eq!(p.held_by("m2"), [vip(61)].into());
}

#[test]
fn duplicates_and_several_primaries_are_resolved_by_uuid() {
    // m3 listed twice (once as primary), m2 also primary: the primary is m2, the lowest;
    // 61 configured twice counts once.
    let g = vec![
        Member {
            uuid: "m3".into(),
            primary: false,
        },
        Member {
            uuid: "m3".into(),
            primary: true,
        },
        Member {
            uuid: "m2".into(),
            primary: true,
        },
        Member {
            uuid: "m1".into(),
            primary: false,
        },
    ];
    let p = plan(&g, &[61, 62, 61], ToAnotherSecondary, &Holdings::new());
    assert_eq!(p.write, Some((vip(WRITE), "m2".to_string())));
    assert_eq!(layout(&p, &g), "m1=[61] m2=[] m3=[62]");
}

#[test]
fn held_by_and_read_holdings() {
    let g = group("m1", &["m2", "m3"]);
    let p = plan(&g, &[61, 62, 63], ToPrimary, &Holdings::new());
    assert_eq!(p.held_by("m1"), [vip(WRITE)].into());
    assert_eq!(p.held_by("m2"), [vip(61), vip(63)].into());
    assert_eq!(
        p.read_holdings(),
        holdings(&[("m2", &[61, 63]), ("m3", &[62])])
    );
}

#[test]
fn moves_count_changed_holders_only() {
    let p = Placement {
        write: None,
        read: [
            (vip(61), "m2".to_string()),
            (vip(62), "m2".to_string()),
            (vip(63), "m3".to_string()),
        ]
        .into(),
    };
    // 61 stays, 62 moves from m3 (the first claim; m4's is ignored), 63 was unheld.
    assert_eq!(
        p.moves_from(&holdings(&[("m2", &[61]), ("m3", &[62]), ("m4", &[62])])),
        1
    );
    assert_eq!(p.moves_from(&Holdings::new()), 0);
}
