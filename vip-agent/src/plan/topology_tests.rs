//! The manual topology: its syntax, every refusal with its message, and its lifetime.

use std::net::IpAddr;

use super::testkit::{WRITE, vip};
use super::topology::{Topology, TopologyEntry, format, parse, still_valid, validate};
use super::{Member, Placement};

const P: &str = "1b3c2a10-aab4-11ef-86ab-c80aa9429561";
const S1: &str = "2c4d3b21-aab4-11ef-86ab-c80aa9429562";
const S2: &str = "3d5e4c32-aab4-11ef-86ab-c80aa9429563";

fn members() -> Vec<Member> {
    // Not in uuid order on purpose: the primary is S1's neighbour.
    vec![
        Member {
            uuid: S2.into(),
            primary: false,
        },
        Member {
            uuid: P.into(),
            primary: true,
        },
        Member {
            uuid: S1.into(),
            primary: false,
        },
    ]
}

fn entry(uuid: &str, vips: &[IpAddr]) -> TopologyEntry {
    TopologyEntry {
        uuid: uuid.into(),
        vips: vips.to_vec(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a test address")
}

fn errors(text: &str) -> Vec<String> {
    parse(text).expect_err("must be refused").0
}

fn refusals(text: &str, read: &[IpAddr]) -> Vec<String> {
    let t = parse(text).expect("parses");
    validate(&t, &members(), Some(vip(WRITE)), read)
        .expect_err("must be refused")
        .0
}

fn read() -> Vec<IpAddr> {
    vec![vip(61), vip(62), vip(63)]
}

// ---- Syntax ----

#[test]
fn parses_entries_with_spaces_trailing_semicolon_and_empty_lists() {
    let text = format!("  {P} :: 198.51.100.60 , 198.51.100.61 ;{S1}::198.51.100.62;\n {S2}:: ; ");
    let t = parse(&text).expect("parses");
    assert_eq!(
        t.entries,
        [
            entry(P, &[vip(60), vip(61)]),
            entry(S1, &[vip(62)]),
            entry(S2, &[])
        ]
    );
}

#[test]
fn parses_ipv6_vips_written_plainly() {
    let t = parse(&format!("{P}::2001:db8::61,2001:db8::62; {S1}::::1")).expect("parses");
    assert_eq!(
        t.entries,
        [
            entry(P, &[ip("2001:db8::61"), ip("2001:db8::62")]),
            entry(S1, &[ip("::1")])
        ]
    );
}

#[test]
fn refuses_an_empty_topology() {
    for text in ["", "  ", ";", " ; ;"] {
        assert_eq!(
            errors(text),
            [
                "the topology is empty; expected uuid::vip[,vip...] entries separated by \";\", \
              e.g. \"uuid1::vip1; uuid2::vip2,vip3\""
            ],
            "{text:?}"
        );
    }
}

#[test]
fn refuses_an_entry_without_double_colon() {
    assert_eq!(
        errors(&format!("{P}::198.51.100.61; abc:198.51.100.1")),
        ["entry 2 \"abc:198.51.100.1\": expected uuid::vip[,vip...]"]
    );
}

#[test]
fn refuses_a_missing_or_malformed_uuid() {
    assert_eq!(
        errors("::198.51.100.61; abc:2001:db8::61; a b::198.51.100.62"),
        [
            "entry 1 \"::198.51.100.61\": the member uuid is missing before \"::\"; \
             expected uuid::vip[,vip...]",
            "entry 2 \"abc:2001:db8::61\": \"abc:2001:db8\" is not a member uuid; \
             expected uuid::vip[,vip...]",
            "entry 3 \"a b::198.51.100.62\": \"a b\" is not a member uuid; \
             expected uuid::vip[,vip...]",
        ]
    );
}

#[test]
fn refuses_bad_ips_with_a_hint() {
    assert_eq!(
        errors(&format!(
            "{P}::198.51.100.300,[2001:db8::1]; {S1}::198.51.100.61/24; \
             {S2}::198.51.100.62 {P}::198.51.100.63"
        )),
        [
            format!(
                "entry 1 \"{P}::198.51.100.300,[2001:db8::1]\": \"198.51.100.300\" is not an \
                 IP address"
            ),
            format!(
                "entry 1 \"{P}::198.51.100.300,[2001:db8::1]\": \"[2001:db8::1]\" is not an IP \
                 address; write IPv6 addresses without brackets, e.g. 2001:db8::61"
            ),
            format!(
                "entry 2 \"{S1}::198.51.100.61/24\": \"198.51.100.61/24\" is not an IP address; \
                 write the address without a prefix length"
            ),
            format!(
                "entry 3 \"{S2}::198.51.100.62 {P}::198.51.100.63\": \
                 \"198.51.100.62 {P}::198.51.100.63\" is not an IP address; \
                 separate entries with \";\" and VIPs with \",\""
            ),
        ]
    );
}

#[test]
fn refuses_empty_entries_and_empty_vips() {
    assert_eq!(
        errors(&format!("{P}::198.51.100.61,,198.51.100.62,;; {S1}::")),
        [
            format!(
                "entry 1 \"{P}::198.51.100.61,,198.51.100.62,\": an empty VIP in the list; \
                 remove the extra \",\""
            ),
            "entry 2 is empty: remove the extra \";\"".to_string(),
        ]
    );
}

#[test]
fn refuses_a_member_or_a_vip_listed_twice() {
    let upper = P.to_ascii_uppercase();
    assert_eq!(
        errors(&format!(
            "{P}::198.51.100.61,198.51.100.61; {S1}::198.51.100.62; {upper}::; {S2}::198.51.100.62"
        )),
        [
            format!(
                "entry 1 \"{P}::198.51.100.61,198.51.100.61\": VIP 198.51.100.61 is listed twice \
                 in this entry; list each VIP once"
            ),
            format!(
                "entry 3 \"{upper}::\": member {upper} is already listed in entry 1; \
                 list each member once"
            ),
            format!(
                "entry 4 \"{S2}::198.51.100.62\": VIP 198.51.100.62 is already listed in entry 2; \
                 list each VIP once"
            ),
        ]
    );
}

#[test]
fn errors_display_one_per_line() {
    let e = parse("x; y").expect_err("refused");
    assert_eq!(
        e.to_string(),
        "entry 1 \"x\": expected uuid::vip[,vip...]\nentry 2 \"y\": expected uuid::vip[,vip...]"
    );
}

// ---- format ----

#[test]
fn formats_primary_first_write_vip_first_then_sorted_reads() {
    let p = Placement {
        write: Some((vip(WRITE), P.into())),
        read: [
            (vip(63), P.into()),
            (vip(62), S2.into()),
            (vip(61), S2.into()),
        ]
        .into(),
    };
    assert_eq!(
        format(&p, &members()),
        format!("{P}::198.51.100.60,198.51.100.63; {S1}::; {S2}::198.51.100.61,198.51.100.62")
    );
}

#[test]
fn formats_holders_outside_the_members_last() {
    let p = Placement {
        write: None,
        read: [(vip(61), "zz".into())].into(),
    };
    assert_eq!(
        format(&p, &members()),
        format!("{P}::; {S1}::; {S2}::; zz::198.51.100.61")
    );
}

// ---- validate ----

#[test]
fn accepts_a_rearrangement_and_places_the_write_vip_on_the_primary() {
    // The write VIP may be left out; uuids match whatever their case.
    let text = format!(
        "{S1}::198.51.100.63 ; {}::198.51.100.61,198.51.100.62; {P}::",
        S2.to_uppercase()
    );
    let p = validate(
        &parse(&text).expect("parses"),
        &members(),
        Some(vip(WRITE)),
        &read(),
    )
    .expect("accepted");
    assert_eq!(p.write, Some((vip(WRITE), P.to_string())));
    assert_eq!(
        p.read,
        [
            (vip(61), S2.into()),
            (vip(62), S2.into()),
            (vip(63), S1.into())
        ]
        .into()
    );
    // Listing the write VIP on the primary is accepted too.
    let text =
        format!("{P}::198.51.100.60; {S1}::198.51.100.61,198.51.100.62,198.51.100.63; {S2}::");
    assert!(
        validate(
            &parse(&text).expect("parses"),
            &members(),
            Some(vip(WRITE)),
            &read()
        )
        .is_ok()
    );
}

#[test]
fn refuses_a_uuid_that_is_not_an_online_member() {
    let gone = "4e6f5d43-aab4-11ef-86ab-c80aa9429564";
    assert_eq!(
        refusals(
            &format!("{P}::; {S1}::198.51.100.61,198.51.100.62,198.51.100.63; {S2}::; {gone}::"),
            &read()
        ),
        [format!(
            "uuid {gone} is not an ONLINE member of the group (members: {P}, {S1}, {S2})"
        )]
    );
}

#[test]
fn refuses_to_drop_a_member() {
    assert_eq!(
        refusals(
            &format!("{P}::; {S1}::198.51.100.61,198.51.100.62,198.51.100.63"),
            &read()
        ),
        [format!(
            "member {S2} is ONLINE but not in the topology; write `{S2}::` to give it no read VIP \
             (a member may not be added or dropped)"
        )]
    );
}

#[test]
fn refuses_to_move_the_write_vip() {
    assert_eq!(
        refusals(
            &format!(
                "{P}::; {S1}::198.51.100.60,198.51.100.61,198.51.100.62,198.51.100.63; {S2}::"
            ),
            &read()
        ),
        [format!(
            "the write VIP 198.51.100.60 may not move: it stays on the primary {P}"
        )]
    );
}

#[test]
fn refuses_to_add_or_remove_vips() {
    assert_eq!(
        refusals(
            &format!("{P}::198.51.100.70; {S1}::198.51.100.61; {S2}::198.51.100.63"),
            &read()
        ),
        [
            "VIP 198.51.100.70 is not configured; a topology may not add VIPs",
            "read VIP 198.51.100.62 is missing; a topology may not remove VIPs",
        ]
    );
}

#[test]
fn collects_every_refusal() {
    let gone = "4e6f5d43-aab4-11ef-86ab-c80aa9429564";
    assert_eq!(
        refusals(
            &format!("{gone}::198.51.100.60,198.51.100.61; {S1}::198.51.100.70"),
            &read()
        ),
        [
            format!("uuid {gone} is not an ONLINE member of the group (members: {P}, {S1}, {S2})"),
            format!(
                "member {P} is ONLINE but not in the topology; write `{P}::` to give it no read \
                 VIP (a member may not be added or dropped)"
            ),
            format!(
                "member {S2} is ONLINE but not in the topology; write `{S2}::` to give it no read \
                 VIP (a member may not be added or dropped)"
            ),
            format!("the write VIP 198.51.100.60 may not move: it stays on the primary {P}"),
            "VIP 198.51.100.70 is not configured; a topology may not add VIPs".to_string(),
            "read VIP 198.51.100.62 is missing; a topology may not remove VIPs".to_string(),
            "read VIP 198.51.100.63 is missing; a topology may not remove VIPs".to_string(),
        ]
    );
}

#[test]
fn refuses_duplicates_in_a_topology_built_by_hand() {
    let t = Topology {
        entries: vec![
            entry(P, &[vip(61)]),
            entry(S1, &[vip(61), vip(62), vip(63)]),
            entry(S2, &[]),
            entry(&S1.to_uppercase(), &[]),
        ],
    };
    assert_eq!(
        validate(&t, &members(), Some(vip(WRITE)), &read())
            .expect_err("refused")
            .0,
        [
            format!("member {S1} is listed twice (entries 2 and 4); list each member once"),
            "read VIP 198.51.100.61 is listed twice (entries 1 and 2); list each VIP once"
                .to_string(),
        ]
    );
}

#[test]
fn refuses_without_a_primary() {
    let secondaries = vec![Member {
        uuid: S1.into(),
        primary: false,
    }];
    let t = parse(&format!("{S1}::198.51.100.61")).expect("parses");
    assert_eq!(
        validate(&t, &secondaries, None, &[vip(61)])
            .expect_err("refused")
            .0,
        ["the group view has no primary; set the topology on the primary once one is elected"]
    );
}

// ---- still_valid ----

fn accepted() -> Placement {
    let t = parse(&format!(
        "{P}::198.51.100.61; {S1}::198.51.100.62,198.51.100.63; {S2}::"
    ))
    .expect("parses");
    validate(&t, &members(), Some(vip(WRITE)), &read()).expect("accepted")
}

#[test]
fn an_override_survives_joins_and_empty_members_leaving() {
    let m = accepted();
    assert_eq!(
        still_valid(&m, &members(), Some(vip(WRITE)), &read()),
        Ok(())
    );
    // S2 (holding nothing) leaves, another member joins.
    let mut changed = members();
    changed.retain(|x| x.uuid != S2);
    changed.push(Member {
        uuid: "5f706e54-aab4-11ef-86ab-c80aa9429565".into(),
        primary: false,
    });
    assert_eq!(still_valid(&m, &changed, Some(vip(WRITE)), &read()), Ok(()));
}

#[test]
fn an_override_ends_when_a_holder_leaves() {
    let mut changed = members();
    changed.retain(|x| x.uuid != S1);
    assert_eq!(
        still_valid(&accepted(), &changed, Some(vip(WRITE)), &read()),
        Err(format!(
            "member {S1}, holder of 198.51.100.62, 198.51.100.63, is no longer ONLINE"
        ))
    );
}

#[test]
fn an_override_ends_when_the_primary_changes() {
    let changed: Vec<Member> = members()
        .into_iter()
        .map(|x| Member {
            primary: x.uuid == S1,
            ..x
        })
        .collect();
    assert_eq!(
        still_valid(&accepted(), &changed, Some(vip(WRITE)), &read()),
        Err(format!("the primary changed from {P} to {S1}"))
    );
}

#[test]
fn an_override_ends_when_the_vips_change() {
    let m = accepted();
    assert_eq!(
        still_valid(&m, &members(), None, &[vip(61), vip(62), vip(64)]),
        Err(
            "the write VIP changed in the configuration (was 198.51.100.60, now none); \
             read VIP 198.51.100.64 was added to the configuration; \
             read VIP 198.51.100.63 is no longer configured"
                .to_string()
        )
    );
    let no_primary = vec![Member {
        uuid: S1.into(),
        primary: false,
    }];
    assert_eq!(
        still_valid(&m, &no_primary, Some(vip(WRITE)), &read()),
        Err("the group view has no primary".to_string())
    );
}
