//! Answers to other agents (the peer port) and to the operator (the control socket).
//!
//! A peer request has already been authenticated by the peer server. What is checked
//! here is whether it may change anything: a placement is applied only from the member
//! this node's own view says is the primary, only if its stamp is not older than the last
//! one applied from that sender, and only if it names VIPs from this node's own config.
//! A refusal changes nothing and is counted.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tracing::{info, warn};

use super::Agent;
use crate::control::{self, Response as Reply};
use crate::mgr::NodeStatus;
use crate::peer::{self, Request, Response};
use crate::plan::{self, Placement, topology};

impl Agent {
    pub(super) async fn answer_peer(&mut self, incoming: peer::server::Incoming) {
        let peer::server::Incoming {
            from,
            peer,
            request,
            reply,
        } = incoming;
        let response = match request {
            Request::Holdings => match self.bound().await {
                Ok(vips) => Response::Holdings {
                    vips: vips.into_iter().collect(),
                },
                Err(e) => refuse(format!("cannot list the addresses on the NIC: {e:#}")),
            },
            Request::Apply {
                stamp,
                placement,
                reannounce,
            } => self.apply(&from, stamp, placement, reannounce).await,
            Request::ReleaseWrite { .. } => self.release_write(&from).await,
            Request::Lease(_) => {
                self.count_refusal("other_mode");
                refuse(
                    "this agent runs coordination.mode = \"handshake\"; every agent of a group \
                     must run the same mode"
                        .into(),
                )
            }
        };
        if let Response::Refused { reason } = &response {
            warn!(event = "peer_refused", from = %from, peer = %peer, "refused a request from {from} ({peer}): {reason}");
        }
        let member = self.poller.server_uuid().unwrap_or_default().to_string();
        let _ = reply.send(peer::server::Reply { member, response });
    }

    /// A placement pushed by the primary.
    async fn apply(
        &mut self,
        from: &str,
        stamp: u64,
        placement: Placement,
        reannounce: bool,
    ) -> Response {
        let Some(status) = self.status.clone() else {
            return refuse("this agent has not read its own view yet".into());
        };
        match (&status, status.primary()) {
            (NodeStatus::Primary { .. }, _) => {
                self.count_refusal("not_primary");
                return refuse(format!(
                    "this node is the primary in its own view, not {from}"
                ));
            }
            (NodeStatus::Secondary { .. }, Some(primary)) if primary == from => {}
            (NodeStatus::Secondary { .. }, primary) => {
                self.count_refusal("not_primary");
                return refuse(format!(
                    "{from} is not the primary in this node's view (primary: {})",
                    primary.unwrap_or("none reachable")
                ));
            }
            (other, _) => {
                self.count_refusal("unhealthy_view");
                return refuse(format!("this node's view is not healthy: {other}"));
            }
        }
        if let Some(&last) = self.coord.applied.get(from)
            && stamp < last
        {
            self.count_refusal("stale");
            return refuse(format!(
                "stale placement: stamp {stamp} is older than {last}, the last one applied \
                 from {from}"
            ));
        }
        let configured: BTreeSet<IpAddr> = self.cfg.vip.read_vips.iter().copied().collect();
        let unknown: Vec<String> = placement
            .read
            .keys()
            .filter(|v| !configured.contains(v))
            .map(|v| v.to_string())
            .collect();
        if !unknown.is_empty() {
            self.count_refusal("unknown_vip");
            return refuse(format!(
                "the placement names {}, not in this node's vip.read_vips; give every member \
                 the same VIP lists and reload",
                unknown.join(", ")
            ));
        }
        self.coord.applied.insert(from.to_string(), stamp);
        if self.coord.placement.as_ref() != Some(&placement) {
            let text = topology::format(
                &placement,
                &plan::Member::online(status.members().unwrap_or(&[])),
            );
            info!(event = "placement", from = %from, topology = %text, "applying the primary's placement: {text}");
        }
        self.coord.placement = Some(placement);
        let result = self.reconcile().await;
        let failed = result.as_ref().err().map(|e| format!("{e:#}"));
        self.report(result);
        if let Some(e) = failed {
            return refuse(format!("could not apply the placement: {e}"));
        }
        if reannounce && let Err(e) = self.reannounce_all(true).await {
            return refuse(format!("could not re-announce: {e:#}"));
        }
        Response::Applied
    }

    /// The new primary asks this node to let go of the write VIP. Releasing is always
    /// safe, unless this node's own view still says it is the primary: then it must not.
    async fn release_write(&mut self, from: &str) -> Response {
        // The view is read now rather than at the next poll: the new primary is waiting.
        let status = self.poller.poll().await;
        self.observe(&status);
        self.status = Some(status);
        if let Some(NodeStatus::Primary { .. }) = &self.status {
            self.count_refusal("still_primary");
            return refuse(format!(
                "this node's own view still says it is the primary; {from} must wait"
            ));
        }
        let Some(write) = self.cfg.vip.write_vip else {
            return Response::Released;
        };
        match self.bound().await {
            Ok(bound) if bound.contains(&write) => {
                let reason = format!("the new primary {from} asked for it");
                match self.unbind(write, &reason).await {
                    Ok(()) => {
                        self.write_lost().await;
                        Response::Released
                    }
                    Err(e) => refuse(format!("could not release the write VIP: {e:#}")),
                }
            }
            Ok(_) => Response::Released,
            Err(e) => refuse(format!("cannot list the addresses on the NIC: {e:#}")),
        }
    }

    pub(super) async fn answer_control(&mut self, incoming: control::server::Incoming) {
        let control::server::Incoming { request, reply } = incoming;
        let response = match request {
            control::Request::Status => Reply::Status(Box::new(self.status_report().await)),
            control::Request::Topology => match (&self.coord.placement, &self.status) {
                (Some(p), Some(s)) => Reply::Topology {
                    text: topology::format(p, &plan::Member::online(s.members().unwrap_or(&[]))),
                },
                _ => error(
                    "no placement yet: this node has not planned (as primary) or received one \
                     from the primary"
                        .into(),
                ),
            },
            control::Request::SetTopology { text } => self.set_topology(&text).await,
            control::Request::ForceRebind => self.force_rebind().await,
            control::Request::Reload => match self.reload().await {
                Ok(message) => Reply::Done { message },
                Err(message) => error(message),
            },
        };
        let _ = reply.send(response);
    }

    /// `vip-agent set-topology`: only on the primary; all or nothing.
    async fn set_topology(&mut self, text: &str) -> Reply {
        let Some(NodeStatus::Primary { me, members }) = self.status.clone() else {
            let who = self
                .status
                .as_ref()
                .and_then(|s| {
                    let p = s.primary()?;
                    s.members()?.iter().find(|m| m.uuid == p)
                })
                .map(|m| format!(" (the primary is {} {})", m.uuid, m.host))
                .unwrap_or_default();
            return error(format!(
                "set-topology is accepted only by the primary's agent; this node is not the \
                 primary{who}. Nothing changed."
            ));
        };
        let online = plan::Member::online(&members);
        let parsed = match topology::parse(text) {
            Ok(t) => t,
            Err(e) => return error(format!("the topology was refused, nothing changed:\n{e}")),
        };
        let placement = match topology::validate(
            &parsed,
            &online,
            self.cfg.vip.write_vip,
            &self.cfg.vip.read_vips,
        ) {
            Ok(p) => p,
            Err(e) => return error(format!("the topology was refused, nothing changed:\n{e}")),
        };
        let text = topology::format(&placement, &online);
        info!(event = "placement", topology = %text, manual = true, "manual topology set: {text}");
        let set_for = online.iter().map(|m| m.uuid.clone()).collect();
        self.coord.manual = Some((placement.clone(), set_for));
        self.coord.placement = Some(placement);
        self.queue_push(&members, &me);
        let status = self.status.clone();
        let result = self.reconcile().await;
        self.report(result);
        if let Some(s) = &status {
            self.push_pending(s).await;
        }
        Reply::Done {
            message: self.push_summary(format!("applied: {text}")),
        }
    }

    /// `vip-agent force-rebind`: read the view now, re-apply and re-announce everything.
    async fn force_rebind(&mut self) -> Reply {
        let status = self.poller.poll().await;
        self.observe(&status);
        self.status = Some(status.clone());
        let primary = matches!(status, NodeStatus::Primary { .. });
        if primary {
            // Holdings are collected again, and every member re-announces.
            self.coord.replan = true;
            self.coord.reannounce_push = true;
        }
        self.step().await;
        if let Some(e) = &self.last_error {
            return error(format!("force-rebind failed on this node: {e}"));
        }
        let announced = match self.reannounce_all(false).await {
            Ok(n) => n,
            Err(e) => return error(format!("could not re-announce: {e:#}")),
        };
        if !primary {
            return Reply::Done {
                message: format!(
                    "re-applied and re-announced {announced} VIP(s) on this node ({status}); run \
                     force-rebind on the primary's agent to cover every member"
                ),
            };
        }
        Reply::Done {
            message: self.push_summary(format!(
                "re-applied and re-announced {announced} VIP(s) here"
            )),
        }
    }

    /// `done`, plus which members have not taken the placement yet (retried).
    fn push_summary(&self, done: String) -> String {
        if self.coord.pending_push.is_empty() {
            return format!("{done}; every member applied it");
        }
        let late: Vec<String> = self
            .coord
            .pending_push
            .iter()
            .map(
                |u| match self.peers.get(u).and_then(|h| h.last_error.clone()) {
                    Some(e) => format!("{u} ({e})"),
                    None => u.clone(),
                },
            )
            .collect();
        format!(
            "{done}; not applied yet (retried every 0.5 s): {}",
            late.join("; ")
        )
    }
}

fn refuse(reason: String) -> Response {
    Response::Refused { reason }
}

fn error(message: String) -> Reply {
    Reply::Error { message }
}
