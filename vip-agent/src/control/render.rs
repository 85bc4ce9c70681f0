//! A [`Status`] for people (`vip-agent status`) or for programs (`--json`).

use std::fmt::Write as _;
use std::net::IpAddr;

use super::Status;

/// The status as JSON (pretty, one object); the same fields as [`Status`].
pub fn status_json(status: &Status) -> String {
    // Plain strings, numbers and maps: encoding cannot fail.
    serde_json::to_string_pretty(status).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The status as text: this node first, then the members, peers and subsystems.
pub fn status_text(s: &Status) -> String {
    let mut out = String::new();
    let write_vip = s.placement.as_ref().and_then(|p| p.write.as_ref());
    let vip_name = |vip: &IpAddr| match write_vip {
        Some((w, _)) if w == vip => format!("{vip} (write)"),
        _ => vip.to_string(),
    };

    let mut rows: Vec<(&str, String)> = vec![
        ("instance", s.instance.clone()),
        (
            "node",
            s.uuid
                .clone()
                .unwrap_or_else(|| "unknown (the view was not read yet)".into()),
        ),
        ("role", format!("{}: {}", s.role, s.view)),
        (
            "holds",
            if s.held.is_empty() {
                "nothing".to_string()
            } else {
                s.held.iter().map(vip_name).collect::<Vec<_>>().join(", ")
            },
        ),
        (
            "placement",
            match (&s.placement, s.manual) {
                (None, _) => "none yet".to_string(),
                (Some(_), true) => "manual (set-topology)".to_string(),
                (Some(_), false) if s.role == "primary" => "automatic, computed here".to_string(),
                (Some(_), false) => "automatic, from the primary".to_string(),
            },
        ),
    ];
    rows.push((
        "announced",
        match &s.last_announcement {
            Some(a) => format!("{} at {} ({} packets)", a.vip, a.at, a.count),
            None => "nothing since start".to_string(),
        },
    ));
    pairs(&mut out, "", &rows);

    out.push_str("\nmembers\n");
    if s.members.is_empty() {
        out.push_str("  none in this node's view\n");
    } else {
        let placed = |uuid: &str| -> String {
            let Some(p) = &s.placement else {
                return "-".to_string();
            };
            let mut vips: Vec<String> = p
                .write
                .iter()
                .filter(|(_, holder)| holder == uuid)
                .map(|(vip, _)| format!("{vip} (write)"))
                .collect();
            vips.extend(
                p.read
                    .iter()
                    .filter(|(_, holder)| *holder == uuid)
                    .map(|(vip, _)| vip.to_string()),
            );
            if vips.is_empty() {
                "-".to_string()
            } else {
                vips.join(", ")
            }
        };
        let rows: Vec<Vec<String>> = s
            .members
            .iter()
            .map(|m| {
                let uuid = if s.uuid.as_deref() == Some(m.uuid.as_str()) {
                    format!("{} (this node)", m.uuid)
                } else {
                    m.uuid.clone()
                };
                vec![
                    uuid,
                    m.host.clone(),
                    m.state.clone(),
                    m.role.clone(),
                    placed(&m.uuid),
                ]
            })
            .collect();
        table(
            &mut out,
            &["UUID", "HOST", "STATE", "ROLE", "PLACED THERE"],
            &rows,
        );
        // A placement naming a member this node does not see (it left, or the view lags).
        if let Some(p) = &s.placement {
            let holders = p.write.iter().map(|(_, u)| u).chain(p.read.values());
            let mut unknown: Vec<&String> = holders
                .filter(|u| !s.members.iter().any(|m| &m.uuid == *u))
                .collect();
            unknown.sort();
            unknown.dedup();
            for uuid in unknown {
                let _ = writeln!(
                    out,
                    "  placed on {uuid}, not in this view: {}",
                    placed(uuid)
                );
            }
        }
    }

    out.push_str("\npeers\n");
    if s.peers.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.uuid.clone(),
                    p.addr.clone(),
                    p.last_ok.clone().unwrap_or_else(|| "never".into()),
                    p.last_error.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            &mut out,
            &["UUID", "ADDRESS", "LAST OK", "LAST ERROR"],
            &rows,
        );
    }
    let rejected = if s.rejected_frames.is_empty() {
        "none".to_string()
    } else {
        s.rejected_frames
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "  rejected frames: {rejected}");
    for (host, why) in &s.unresolved {
        let _ = writeln!(out, "  unresolved host {host}: {why}");
    }

    out.push_str("\nsubsystems\n");
    if s.subsystems.is_empty() {
        out.push_str("  none reported\n");
    } else {
        let rows: Vec<(&str, String)> = s
            .subsystems
            .iter()
            .map(|(name, mode)| (name.as_str(), mode.clone()))
            .collect();
        pairs(&mut out, "  ", &rows);
    }
    if !s.datapath.is_empty() {
        out.push_str("\ndatapath (eBPF)\n");
        let rows: Vec<Vec<String>> = s
            .datapath
            .iter()
            .map(|v| {
                let state = match (v.state.as_str(), v.lease_left_ms) {
                    ("released", _) => {
                        format!("released, guard {} s left", v.guard_left_ms.div_ceil(1000))
                    }
                    ("held", Some(left)) => format!("held, lease {} ms left", left),
                    ("lease over", _) => "lease over, guarded as released".into(),
                    _ => v.state.clone(),
                };
                vec![
                    v.vip.to_string(),
                    v.role.clone(),
                    state,
                    v.tracked.to_string(),
                    v.packets.to_string(),
                    v.rst_sent.to_string(),
                    v.dropped.to_string(),
                    v.neigh_dropped.to_string(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "VIP",
                "ROLE",
                "STATE",
                "TRACKED",
                "PACKETS",
                "RST SENT",
                "DROPPED",
                "ARP/NS DROPPED",
            ],
            &rows,
        );
    }
    out
}

/// `name  value` lines, the values aligned.
fn pairs(out: &mut String, indent: &str, rows: &[(&str, String)]) {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (key, value) in rows {
        let _ = writeln!(out, "{indent}{key:<width$}  {value}");
    }
}

/// A table with a header, columns two spaces apart; the last column is not padded.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let last = widths.len().saturating_sub(1);
        let cells: Vec<String> = cells
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == last {
                    cell.to_string()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    };
    line(out, &mut header.iter().copied());
    for row in rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{LastAnnouncement, PeerHealth, StatusMember};
    use crate::plan::Placement;

    const A: &str = "6d1f0c3a-0000-0000-0000-00000000000a";
    const B: &str = "6d1f0c3a-0000-0000-0000-00000000000b";
    const C: &str = "6d1f0c3a-0000-0000-0000-00000000000c";

    fn member(uuid: &str, host: &str, role: &str) -> StatusMember {
        StatusMember {
            uuid: uuid.into(),
            host: host.into(),
            state: "ONLINE".into(),
            role: role.into(),
        }
    }

    fn primary() -> Status {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        Status {
            instance: "mgr3306".into(),
            uuid: Some(A.into()),
            role: "primary".into(),
            view: "PRIMARY with quorum (3 of 3 members reachable)".into(),
            members: vec![
                member(A, "db1:3306", "PRIMARY"),
                member(B, "db2:3306", "SECONDARY"),
                member(C, "db3:3306", "SECONDARY"),
            ],
            placement: Some(Placement {
                write: Some((ip("198.51.100.50"), A.into())),
                read: [
                    (ip("198.51.100.51"), B.into()),
                    (ip("198.51.100.52"), C.into()),
                    (ip("198.51.100.53"), B.into()),
                ]
                .into(),
            }),
            manual: false,
            held: vec![ip("198.51.100.50")],
            last_announcement: Some(LastAnnouncement {
                vip: ip("198.51.100.50"),
                at: "2025-01-02T03:04:05Z".into(),
                count: 5,
            }),
            peers: vec![
                PeerHealth {
                    uuid: B.into(),
                    addr: "db2:33062".into(),
                    last_ok: Some("2025-01-02T03:04:06Z".into()),
                    last_error: None,
                },
                PeerHealth {
                    uuid: C.into(),
                    addr: "db3:33062".into(),
                    last_ok: None,
                    last_error: Some("connection refused".into()),
                },
            ],
            rejected_frames: [
                ("malformed".to_string(), 1),
                ("unauthenticated".to_string(), 3),
            ]
            .into(),
            datapath: Vec::new(),
            unresolved: [(
                "db4.example".to_string(),
                "cannot resolve MEMBER_HOST db4.example: failed to lookup address".to_string(),
            )]
            .into(),
            subsystems: [
                (
                    "control".to_string(),
                    "/run/vip-agent/mgr3306.sock".to_string(),
                ),
                (
                    "peer".to_string(),
                    "listening on [::]:33062, hmac-sha256".to_string(),
                ),
            ]
            .into(),
        }
    }

    #[test]
    fn a_primary_in_full() {
        let text = status_text(&primary());
        let want = format!(
            "\
instance   mgr3306
node       {A}
role       primary: PRIMARY with quorum (3 of 3 members reachable)
holds      198.51.100.50 (write)
placement  automatic, computed here
announced  198.51.100.50 at 2025-01-02T03:04:05Z (5 packets)

members
  UUID                                              HOST      STATE   ROLE       PLACED THERE
  {A} (this node)  db1:3306  ONLINE  PRIMARY    198.51.100.50 (write)
  {B}              db2:3306  ONLINE  SECONDARY  198.51.100.51, 198.51.100.53
  {C}              db3:3306  ONLINE  SECONDARY  198.51.100.52

peers
  UUID                                  ADDRESS    LAST OK               LAST ERROR
  {B}  db2:33062  2025-01-02T03:04:06Z  -
  {C}  db3:33062  never                 connection refused
  rejected frames: malformed 1, unauthenticated 3
  unresolved host db4.example: cannot resolve MEMBER_HOST db4.example: failed to lookup address

subsystems
  control  /run/vip-agent/mgr3306.sock
  peer     listening on [::]:33062, hmac-sha256
"
        );
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn a_node_that_knows_nothing_yet() {
        let s = Status {
            instance: "default".into(),
            role: "none".into(),
            view: "mysqld unreachable (connection refused)".into(),
            ..Status::default()
        };
        let text = status_text(&s);
        for want in [
            "node       unknown (the view was not read yet)\n",
            "role       none: mysqld unreachable (connection refused)\n",
            "holds      nothing\n",
            "placement  none yet\n",
            "announced  nothing since start\n",
            "members\n  none in this node's view\n",
            "peers\n  none\n  rejected frames: none\n",
            "subsystems\n  none reported\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn a_secondary_with_a_manual_placement_naming_a_departed_member() {
        let mut s = primary();
        s.uuid = Some(B.into());
        s.role = "secondary".into();
        s.held = vec!["198.51.100.51".parse().unwrap()];
        s.members.retain(|m| m.uuid != C);
        let text = status_text(&s);
        assert!(
            text.contains("placement  automatic, from the primary\n"),
            "{text}"
        );
        assert!(text.contains("holds      198.51.100.51\n"), "{text}");
        assert!(text.contains(&format!("  {B} (this node)")), "{text}");
        assert!(
            text.contains(&format!(
                "  placed on {C}, not in this view: 198.51.100.52\n"
            )),
            "{text}"
        );
        s.manual = true;
        assert!(status_text(&s).contains("placement  manual (set-topology)\n"));
    }

    #[test]
    fn json_has_every_field_and_reads_back() {
        let s = primary();
        let json = status_json(&s);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["instance"], "mgr3306");
        assert_eq!(value["members"][1]["role"], "SECONDARY");
        assert_eq!(value["placement"]["read"]["198.51.100.52"], C);
        assert_eq!(value["placement"]["write"][0], "198.51.100.50");
        assert_eq!(value["rejected_frames"]["unauthenticated"], 3);
        assert_eq!(value["peers"][1]["last_ok"], serde_json::Value::Null);
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }
}
