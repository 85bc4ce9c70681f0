//! What `vip-agent status` shows, gathered from the loop's own state.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Agent;
use crate::config::Config;
use crate::control::{Status, StatusMember};
use crate::datapath::engine::Datapath;
use crate::metrics::Metrics;
use crate::mgr::NodeStatus;
use crate::peer::server::Stats;

impl Agent {
    pub(super) async fn status_report(&self) -> Status {
        let (role, view, uuid, members) = view_fields(self.status.as_ref());
        let (rejected, subsystems) = subsystems(
            &self.cfg,
            &self.peer_stats,
            &self.refused,
            &self.datapath,
            &self.metrics,
            &self.privileges,
        );
        Status {
            instance: self.cfg.instance.clone(),
            uuid,
            role,
            view,
            members,
            placement: self.coord.placement.clone(),
            manual: self.coord.manual.is_some(),
            held: self
                .bound()
                .await
                .map(|b| b.into_iter().collect())
                .unwrap_or_default(),
            last_announcement: self.last_announcement.clone(),
            peers: self.peers.values().cloned().collect(),
            rejected_frames: rejected,
            subsystems,
            datapath: self.datapath.vips(),
            unresolved: self.hosts.unresolved(),
        }
    }
}

/// The role, the view in words, this node's uuid and the members, from a view.
pub(super) fn view_fields(
    status: Option<&NodeStatus>,
) -> (String, String, Option<String>, Vec<StatusMember>) {
    let Some(s) = status else {
        return ("none".into(), "not read yet".into(), None, Vec::new());
    };
    let role = match s {
        NodeStatus::Primary { .. } => "primary",
        NodeStatus::Secondary { .. } => "secondary",
        _ => "none",
    };
    let members = s
        .members()
        .unwrap_or(&[])
        .iter()
        .map(|m| StatusMember {
            uuid: m.uuid.clone(),
            host: m.host.clone(),
            state: m.state.to_string(),
            role: m.role.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        })
        .collect();
    (
        role.into(),
        s.to_string(),
        s.me().map(str::to_string),
        members,
    )
}

/// The rejected peer frames and refusals by kind, and each subsystem in words.
pub(super) fn subsystems(
    cfg: &Config,
    peer_stats: &Arc<Stats>,
    refused: &BTreeMap<String, u64>,
    datapath: &Datapath,
    metrics: &Metrics,
    privileges: &str,
) -> (BTreeMap<String, u64>, BTreeMap<String, String>) {
    let mut rejected = peer_stats.snapshot();
    // Only rejections belong in that table; the served count goes with the peer line.
    let served = rejected.remove("served").unwrap_or(0);
    let unanswered = rejected.remove("unanswered").unwrap_or(0);
    for (kind, n) in refused {
        *rejected.entry(format!("refused_{kind}")).or_default() += n;
    }
    let mysql = cfg.mysql.endpoint.to_string();
    let subsystems = [
        (
            "mgr",
            format!(
                "polling {mysql} every {} ms{}",
                cfg.mysql.poll_interval.as_millis(),
                if cfg.mysql.tls.is_some() { ", TLS" } else { "" }
            ),
        ),
        (
            "vips",
            format!(
                "{} on {} (label {}), {}, {} announcements {} ms apart",
                if cfg.vip.enable {
                    "enabled"
                } else {
                    "DISABLED"
                },
                cfg.vip.nic,
                cfg.vip.label,
                cfg.vip.floating_type,
                cfg.vip.announce_count,
                cfg.vip.announce_interval.as_millis()
            ),
        ),
        (
            "peer",
            format!(
                "listening on {}, HMAC-SHA256, {}, resync every {} s; {served} requests \
                 served, {unanswered} unanswered",
                std::net::SocketAddr::new(cfg.peer.listen, cfg.peer.port),
                match &cfg.peer.allow {
                    Some(nets) => format!(
                        "allowing {}",
                        nets.iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => "allowing the members' hosts".to_string(),
                },
                cfg.peer.resync_interval.as_secs()
            ),
        ),
        ("control", cfg.control.socket.display().to_string()),
        (
            "reset",
            format!(
                "{} ({} failed)",
                datapath.modes.reset,
                metrics.reset_failures()
            ),
        ),
        ("tracking", datapath.modes.tracking.clone()),
        ("guard", datapath.modes.guard.clone()),
        ("pins", datapath.modes.pins.clone()),
        ("privileges", privileges.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    (rejected, subsystems)
}
