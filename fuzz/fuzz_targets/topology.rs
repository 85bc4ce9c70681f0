//! Fuzzes the manual topology (vip_agent::plan::topology): `vip-agent set-topology TEXT`
//! hands the text to the running primary, so it must be refused with reasons, never
//! panic. A text that parses is then checked against a fixed 3-member group, and a
//! placement that passes prints (`format`) to a text that parses and checks to the very
//! same placement.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use vip_agent::plan::{Member, topology};

const UUIDS: [&str; 3] = [
    "3e1c4b5a-0000-11ef-9a2b-0242ac110001",
    "3e1c4b5a-0000-11ef-9a2b-0242ac110002",
    "3e1c4b5a-0000-11ef-9a2b-0242ac110003",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = topology::parse(text) else {
        return;
    };
    let members: Vec<Member> = UUIDS
        .iter()
        .enumerate()
        .map(|(i, u)| Member {
            uuid: u.to_string(),
            primary: i == 0,
        })
        .collect();
    let ip = |s: &str| s.parse::<IpAddr>().expect("a literal address");
    let write = Some(ip("198.51.100.50"));
    let reads = [ip("198.51.100.51"), ip("198.51.100.52"), ip("2001:db8::53")];
    let Ok(placement) = topology::validate(&parsed, &members, write, &reads) else {
        return;
    };
    let again = topology::format(&placement, &members);
    let reparsed = topology::parse(&again).expect("a formatted topology parses");
    let same = topology::validate(&reparsed, &members, write, &reads)
        .expect("a formatted topology is valid");
    assert_eq!(same, placement, "{again}");
});
