//! The manual topology (greatdb_ha's `vip_tope`): an operator's placement of the read VIPs.
//!
//! Syntax: `uuid1::vip1; uuid2::vip2,vip3; uuid3::`. Entries are separated by `;` (a
//! trailing `;` is allowed); each is a member uuid, `::`, and a comma-separated list of
//! VIPs, possibly empty (the member holds none). Whitespace around tokens is ignored. IPv6
//! VIPs are written plainly (`uuid::2001:db8::61,2001:db8::62`): an entry is split at its
//! first `::`, which is right because a uuid never contains `:`.
//!
//! - [`parse`]: text → [`Topology`], or every syntax problem.
//! - [`validate`]: a topology against the group and the configuration → the [`Placement`]
//!   to apply, or every reason to refuse it. A topology may only rearrange the configured
//!   read VIPs over the ONLINE members: not add or drop members, not add or remove VIPs,
//!   not move the write VIP off the primary.
//! - [`format()`]: a placement in that syntax (`parse` reads it back).
//! - [`still_valid`]: whether an accepted override still fits the group and the config.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use super::{Member, Placement};

/// One `uuid::vip,vip` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyEntry {
    pub uuid: String,
    pub vips: Vec<IpAddr>,
}

/// A parsed topology: the entries in the order written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    pub entries: Vec<TopologyEntry>,
}

/// Every problem found in a topology, one per line when displayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyErrors(pub Vec<String>);

impl fmt::Display for TopologyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for TopologyErrors {}

const EXPECTED: &str = "expected uuid::vip[,vip...]";

/// Reads a topology; `Err` holds every syntax problem, each naming its entry (counted
/// from 1 by `;`) and how to fix it. Duplicate members and VIPs are refused here already.
pub fn parse(text: &str) -> Result<Topology, TopologyErrors> {
    let pieces: Vec<&str> = text.split(';').map(str::trim).collect();
    if pieces.iter().all(|p| p.is_empty()) {
        return Err(TopologyErrors(vec![format!(
            "the topology is empty; {EXPECTED} entries separated by \";\", \
             e.g. \"uuid1::vip1; uuid2::vip2,vip3\""
        )]));
    }
    let mut errors = Vec::new();
    let mut entries = Vec::new();
    // Lowercased uuid → its entry; VIP → its entry (MySQL uuids are case-insensitive).
    let mut uuids: BTreeMap<String, usize> = BTreeMap::new();
    let mut vips: BTreeMap<IpAddr, usize> = BTreeMap::new();
    let last = pieces.len() - 1;
    for (i, piece) in pieces.iter().enumerate() {
        let n = i + 1;
        if piece.is_empty() {
            if i != last {
                errors.push(format!("entry {n} is empty: remove the extra \";\""));
            }
            continue;
        }
        let before = errors.len();
        let Some(entry) = parse_entry(n, piece, &mut errors) else {
            continue;
        };
        let key = entry.uuid.to_ascii_lowercase();
        if let Some(first) = uuids.get(&key) {
            errors.push(format!(
                "entry {n} \"{piece}\": member {} is already listed in entry {first}; \
                 list each member once",
                entry.uuid
            ));
        } else {
            uuids.insert(key, n);
        }
        for (j, vip) in entry.vips.iter().enumerate() {
            if entry.vips[..j].contains(vip) {
                errors.push(format!(
                    "entry {n} \"{piece}\": VIP {vip} is listed twice in this entry; \
                     list each VIP once"
                ));
            } else if let Some(first) = vips.get(vip) {
                errors.push(format!(
                    "entry {n} \"{piece}\": VIP {vip} is already listed in entry {first}; \
                     list each VIP once"
                ));
            } else {
                vips.insert(*vip, n);
            }
        }
        if errors.len() == before {
            entries.push(entry);
        }
    }
    if errors.is_empty() {
        Ok(Topology { entries })
    } else {
        Err(TopologyErrors(errors))
    }
}

/// One trimmed, non-empty entry; `None` after pushing its problems.
fn parse_entry(n: usize, piece: &str, errors: &mut Vec<String>) -> Option<TopologyEntry> {
    let Some((uuid, list)) = piece.split_once("::") else {
        errors.push(format!("entry {n} \"{piece}\": {EXPECTED}"));
        return None;
    };
    let uuid = uuid.trim();
    if uuid.is_empty() {
        errors.push(format!(
            "entry {n} \"{piece}\": the member uuid is missing before \"::\"; {EXPECTED}"
        ));
        return None;
    }
    if uuid.contains(|c: char| c == ':' || c == ',' || c.is_whitespace()) {
        errors.push(format!(
            "entry {n} \"{piece}\": \"{uuid}\" is not a member uuid; {EXPECTED}"
        ));
        return None;
    }
    let list = list.trim();
    let mut vips = Vec::new();
    let mut ok = true;
    if !list.is_empty() {
        let mut reported_empty = false;
        for item in list.split(',').map(str::trim) {
            if item.is_empty() {
                if !reported_empty {
                    errors.push(format!(
                        "entry {n} \"{piece}\": an empty VIP in the list; remove the extra \",\""
                    ));
                    reported_empty = true;
                }
                ok = false;
                continue;
            }
            match item.parse::<IpAddr>() {
                Ok(vip) => vips.push(vip),
                Err(_) => {
                    errors.push(format!(
                        "entry {n} \"{piece}\": \"{item}\" is not an IP address{}",
                        ip_hint(item)
                    ));
                    ok = false;
                }
            }
        }
    }
    ok.then(|| TopologyEntry {
        uuid: uuid.to_string(),
        vips,
    })
}

/// A hint for the usual ways of mistyping a VIP.
fn ip_hint(item: &str) -> &'static str {
    if item.starts_with('[') {
        "; write IPv6 addresses without brackets, e.g. 2001:db8::61"
    } else if item.contains('/') {
        "; write the address without a prefix length"
    } else if item.contains(char::is_whitespace) {
        "; separate entries with \";\" and VIPs with \",\""
    } else {
        ""
    }
}

/// The members in the order a topology lists them: the primary (the lowest uuid among
/// members flagged primary), then the others in uuid order, each once.
fn listing_order(members: &[Member]) -> (Option<&str>, Vec<&str>) {
    let primary = members
        .iter()
        .filter(|m| m.primary)
        .map(|m| m.uuid.as_str())
        .min();
    let rest: BTreeSet<&str> = members
        .iter()
        .map(|m| m.uuid.as_str())
        .filter(|u| Some(*u) != primary)
        .collect();
    (primary, primary.into_iter().chain(rest).collect())
}

/// `p` in the topology syntax: every member listed once (the primary first, then uuid
/// order), the write VIP first on its holder's list, then its read VIPs sorted; a member
/// holding nothing is written `uuid::`. Holders that are not in `members` follow, in uuid
/// order, so nothing in `p` is lost. [`parse`] reads the result back (unless it is empty:
/// no member and nothing placed).
pub fn format(p: &Placement, members: &[Member]) -> String {
    let (_, mut order) = listing_order(members);
    let listed: BTreeSet<&str> = order.iter().copied().collect();
    let others: BTreeSet<&str> = p
        .write
        .iter()
        .map(|(_, h)| h.as_str())
        .chain(p.read.values().map(String::as_str))
        .filter(|h| !listed.contains(h))
        .collect();
    order.extend(others);
    order
        .iter()
        .map(|uuid| {
            let write = p.write.iter().filter(|(_, h)| h == uuid).map(|(v, _)| *v);
            let read = p.read.iter().filter(|(_, h)| h == uuid).map(|(v, _)| *v);
            let vips: Vec<String> = write.chain(read).map(|v| v.to_string()).collect();
            format!("{uuid}::{}", vips.join(","))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a topology against the ONLINE `members` and the configured VIPs, and returns the
/// placement to apply (the write VIP on the primary, the read VIPs as listed). Refused,
/// with every reason, unless: every uuid is an ONLINE member (compared case-insensitively,
/// as MySQL does) and every ONLINE member is listed, once; the write VIP, if listed, is
/// on the primary; every configured read VIP is listed exactly once, and nothing else.
pub fn validate(
    t: &Topology,
    members: &[Member],
    write_vip: Option<IpAddr>,
    read_vips: &[IpAddr],
) -> Result<Placement, TopologyErrors> {
    let mut errors = Vec::new();
    let (primary, online) = listing_order(members);
    if primary.is_none() {
        errors.push(
            "the group view has no primary; set the topology on the primary once one is elected"
                .to_string(),
        );
    }
    let names = online.join(", ");

    // Each entry's member, in the members' own spelling; None when it is not one.
    let mut holders: Vec<Option<&str>> = Vec::with_capacity(t.entries.len());
    let mut listed: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, e) in t.entries.iter().enumerate() {
        let member = online
            .iter()
            .copied()
            .find(|u| u.eq_ignore_ascii_case(e.uuid.trim()));
        match member {
            None => errors.push(format!(
                "uuid {} is not an ONLINE member of the group (members: {names})",
                e.uuid
            )),
            Some(u) => {
                if let Some(first) = listed.get(u) {
                    errors.push(format!(
                        "member {u} is listed twice (entries {first} and {}); \
                         list each member once",
                        i + 1
                    ));
                } else {
                    listed.insert(u, i + 1);
                }
            }
        }
        holders.push(member);
    }
    for u in &online {
        if !listed.contains_key(u) {
            errors.push(format!(
                "member {u} is ONLINE but not in the topology; write `{u}::` to give it no \
                 read VIP (a member may not be added or dropped)"
            ));
        }
    }

    let configured: BTreeSet<IpAddr> = read_vips.iter().copied().collect();
    // Each listed read VIP → (its holder, its entry).
    let mut read: BTreeMap<IpAddr, (Option<&str>, usize)> = BTreeMap::new();
    let mut write_moved = false;
    for (i, (e, holder)) in t.entries.iter().zip(&holders).enumerate() {
        for vip in &e.vips {
            if Some(*vip) == write_vip {
                if (holder.is_none() || *holder != primary) && !write_moved {
                    write_moved = true;
                    errors.push(format!(
                        "the write VIP {vip} may not move: it stays on the primary {}",
                        primary.unwrap_or("(none)")
                    ));
                }
            } else if !configured.contains(vip) {
                errors.push(format!(
                    "VIP {vip} is not configured; a topology may not add VIPs"
                ));
            } else if let Some((_, first)) = read.get(vip) {
                errors.push(format!(
                    "read VIP {vip} is listed twice (entries {first} and {}); list each VIP once",
                    i + 1
                ));
            } else {
                read.insert(*vip, (*holder, i + 1));
            }
        }
    }
    let mut missing = BTreeSet::new();
    for vip in read_vips {
        if !read.contains_key(vip) && missing.insert(*vip) {
            errors.push(format!(
                "read VIP {vip} is missing; a topology may not remove VIPs"
            ));
        }
    }

    match primary {
        Some(primary) if errors.is_empty() => Ok(Placement {
            write: write_vip.map(|vip| (vip, primary.to_string())),
            read: read
                .into_iter()
                .filter_map(|(vip, (holder, _))| Some((vip, holder?.to_string())))
                .collect(),
        }),
        _ => Err(TopologyErrors(errors)),
    }
}

/// Whether an accepted override `manual` still fits the group and the configuration, so
/// the agent keeps applying it; `Err` says why not, and the agent then re-plans from it
/// (with the fewest moves). It no longer fits when:
/// - a member holding one of its read VIPs is no longer ONLINE;
/// - the configured read VIPs or write VIP changed;
/// - the primary changed while a write VIP is configured (the override names the old
///   primary as the write VIP's holder).
///
/// A member that joins, or one that held nothing and leaves, does not make it unusable
/// here; the agent ends an override on any change of the ONLINE members anyway (the
/// rule the README states), since a member added or dropped is what set-topology
/// itself refuses.
pub fn still_valid(
    manual: &Placement,
    members: &[Member],
    write_vip: Option<IpAddr>,
    read_vips: &[IpAddr],
) -> Result<(), String> {
    let mut reasons = Vec::new();
    let (primary, online) = listing_order(members);
    let online: BTreeSet<&str> = online.into_iter().collect();
    let Some(primary) = primary else {
        return Err("the group view has no primary".to_string());
    };

    let was = manual.write.as_ref().map(|(vip, _)| *vip);
    if was != write_vip {
        reasons.push(format!(
            "the write VIP changed in the configuration (was {}, now {})",
            show(was),
            show(write_vip)
        ));
    } else if let Some((_, holder)) = &manual.write
        && holder != primary
    {
        reasons.push(format!("the primary changed from {holder} to {primary}"));
    }

    let configured: BTreeSet<IpAddr> = read_vips.iter().copied().collect();
    for vip in &configured {
        if !manual.read.contains_key(vip) {
            reasons.push(format!("read VIP {vip} was added to the configuration"));
        }
    }
    let mut gone: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (vip, holder) in &manual.read {
        if !configured.contains(vip) {
            reasons.push(format!("read VIP {vip} is no longer configured"));
        } else if !online.contains(holder.as_str()) {
            gone.entry(holder).or_default().push(vip.to_string());
        }
    }
    for (holder, vips) in gone {
        reasons.push(format!(
            "member {holder}, holder of {}, is no longer ONLINE",
            vips.join(", ")
        ));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons.join("; "))
    }
}

fn show(vip: Option<IpAddr>) -> String {
    vip.map_or_else(|| "none".to_string(), |v| v.to_string())
}
