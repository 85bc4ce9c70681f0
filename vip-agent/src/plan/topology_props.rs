//! Property tests of the manual topology: format → parse → validate round-trips, and
//! parse takes any text without panicking.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use proptest::sample::{Index, subsequence};

use super::place_props::{members_of, read_pool};
use super::topology::{format, parse, still_valid, validate};
use super::{Member, Placement};

const WRITE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 60));

/// ONLINE members (one primary), the configured read VIPs, the write VIP, and a placement
/// of those read VIPs on those members.
fn placed() -> impl Strategy<Value = (Vec<Member>, Vec<IpAddr>, Option<IpAddr>, Placement)> {
    (
        subsequence((0..7).collect::<Vec<usize>>(), 1..=5).prop_shuffle(),
        any::<Index>(),
        subsequence(read_pool(), 0..=6),
        prop::collection::vec(any::<Index>(), 6),
        any::<bool>(),
    )
        .prop_map(|(chosen, primary, read, holders, write)| {
            let primary = primary.index(chosen.len());
            let members = members_of(&chosen, primary);
            let write = write.then_some(WRITE);
            let p = Placement {
                write: write.map(|w| (w, members[primary].uuid.clone())),
                read: read
                    .iter()
                    .zip(&holders)
                    .map(|(v, h)| (*v, members[h.index(members.len())].uuid.clone()))
                    .collect(),
            };
            (members, read, write, p)
        })
}

proptest! {
    #[test]
    fn format_parse_validate_round_trips((members, read, write, p) in placed()) {
        let text = format(&p, &members);
        let t = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;

        // Every member once, the primary first, each with exactly what it holds.
        let uuids: Vec<&str> = t.entries.iter().map(|e| e.uuid.as_str()).collect();
        let primary = members.iter().find(|m| m.primary).map(|m| m.uuid.as_str());
        prop_assert_eq!(uuids.first().copied(), primary);
        prop_assert_eq!(uuids.len(), members.len());
        prop_assert_eq!(uuids.iter().collect::<BTreeSet<_>>().len(), members.len());
        for e in &t.entries {
            prop_assert_eq!(e.vips.iter().copied().collect::<BTreeSet<_>>(), p.held_by(&e.uuid));
            if let Some((w, holder)) = &p.write && *holder == e.uuid {
                prop_assert_eq!(e.vips.first(), Some(w));
            }
        }

        let back = validate(&t, &members, write, &read)
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&back, &p);
        prop_assert_eq!(still_valid(&back, &members, write, &read), Ok(()));
    }

    #[test]
    fn parse_takes_any_text(text in "[0-9a-f:;, .\\-/\\[\\]x\n]{0,80}") {
        if let Err(e) = parse(&text) {
            prop_assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn parse_takes_any_unicode(text in any::<String>()) {
        let _ = parse(&text);
    }
}
