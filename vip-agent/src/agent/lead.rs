//! The primary's side of coordination.
//!
//! When the ONLINE membership changes (or on reload, force-rebind, or the first step as
//! primary), the primary's agent asks every other ONLINE member's agent what it holds,
//! plans ([`crate::plan`]) or keeps a manual placement that still fits, binds its own
//! share, then pushes the whole placement to the others. Before it binds the write VIP
//! for the first time, it has every other agent that holds it (or cannot say) confirm
//! it released it, waiting at most `peer.switchover_timeout_ms`: so a planned switchover
//! never has two owners.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::future::join_all;
use tracing::{info, warn};

use super::{Agent, PUSH_RETRY, next_stamp, now_text};
use crate::control::PeerHealth;
use crate::mgr::{Member, MemberState, NodeStatus};
pub(super) use crate::peer::caller::{Caller, Peer};
use crate::peer::{Request, Response};
use crate::plan::{self, Holdings, Placement, topology};

impl Agent {
    /// Plans if needed, and clears the write VIP for binding. Called on every step while
    /// this node is the primary.
    pub(super) async fn lead(&mut self, status: &NodeStatus) -> Result<()> {
        let NodeStatus::Primary { me, members } = status else {
            return Ok(());
        };
        let online = plan::Member::online(members);
        let signature: Vec<(String, bool)> =
            online.iter().map(|m| (m.uuid.clone(), m.primary)).collect();
        let resync_due = self
            .coord
            .last_resync
            .is_none_or(|t| t.elapsed() >= self.cfg.peer.resync_interval);
        if self.coord.planned_for.as_ref() == Some(&signature) && !self.coord.replan {
            if resync_due {
                // greatdb_ha's 20 s refresh: every member re-announces its read VIPs.
                self.coord.last_resync = Some(Instant::now());
                self.queue_push(members, me);
                self.coord.reannounce_push = true;
                self.reannounce_all(true).await?;
            }
            return Ok(());
        }
        let others: Vec<Peer> = others(members, me).collect();
        let claims = self.collect_holdings(me, &others).await?;
        if !self.coord.write_cleared {
            let started = Instant::now();
            if !self.clear_write(&others, &claims).await {
                // This node's own view changed while it waited: the next step acts on it.
                return Ok(());
            }
            // The wait may have outlived the view it started from: read it again, and
            // bind nothing if this node is no longer the primary.
            if started.elapsed() >= self.cfg.mysql.poll_interval {
                let now = self.poller.poll().await;
                self.observe(&now);
                let still = matches!(&now, NodeStatus::Primary { me: m, .. } if m == me);
                self.status = Some(now);
                if !still {
                    self.coord.write_cleared = false;
                    return Ok(());
                }
            }
        }
        let placement = self.choose(&online, &claims);
        if self.coord.placement.as_ref() != Some(&placement) {
            let holdings: Holdings = claims
                .iter()
                .filter_map(|(u, c)| c.as_ref().map(|v| (u.clone(), v.clone())))
                .collect();
            let text = topology::format(&placement, &online);
            info!(
                event = "placement",
                topology = %text,
                moves = placement.moves_from(&holdings),
                manual = self.coord.manual.is_some(),
                "placement: {text}"
            );
        }
        self.coord.placement = Some(placement);
        self.coord.planned_for = Some(signature);
        self.queue_push(members, me);
        self.coord.last_resync = Some(Instant::now());
        self.coord.replan = false;
        Ok(())
    }

    /// The manual placement while it still fits, else a plan from the current holdings.
    fn choose(
        &mut self,
        online: &[plan::Member],
        claims: &BTreeMap<String, Option<BTreeSet<IpAddr>>>,
    ) -> Placement {
        let (write_vip, read_vips) = (self.cfg.vip.write_vip, &self.cfg.vip.read_vips);
        if let Some((manual, set_for)) = &self.coord.manual {
            let now: BTreeSet<String> = online.iter().map(|m| m.uuid.clone()).collect();
            let fits = if &now == set_for {
                topology::still_valid(manual, online, write_vip, read_vips)
            } else {
                Err("the ONLINE members changed".to_string())
            };
            match fits {
                Ok(()) => return manual.clone(),
                Err(why) => {
                    warn!(
                        event = "manual_dropped",
                        "the manual topology no longer fits ({why}); planning again with the fewest moves from it"
                    );
                    self.coord.manual = None;
                }
            }
        }
        // A member whose agent did not answer is taken to hold what it was last given.
        let holdings: Holdings = claims
            .iter()
            .map(|(uuid, claim)| {
                let held = claim.clone().unwrap_or_else(|| {
                    self.coord
                        .placement
                        .as_ref()
                        .map(|p| p.read_held_by(uuid))
                        .unwrap_or_default()
                });
                (uuid.clone(), held)
            })
            .collect();
        plan::place(&plan::Input {
            members: online,
            write_vip,
            read_vips,
            floating: self.cfg.vip.floating_type,
            holdings: &holdings,
        })
    }

    /// What every ONLINE member holds: this node from the kernel, the others from their
    /// agents (`None` when an agent did not answer). Read VIPs, plus the write VIP.
    async fn collect_holdings(
        &mut self,
        me: &str,
        others: &[Peer],
    ) -> Result<BTreeMap<String, Option<BTreeSet<IpAddr>>>> {
        let mut claims = BTreeMap::new();
        claims.insert(me.to_string(), Some(self.bound().await?));
        let answers = join_all(others.iter().map(|p| self.call(p, Request::Holdings))).await;
        for (peer, answer) in others.iter().zip(answers) {
            let claim = match self.note_call(peer, answer) {
                Some(Response::Holdings { vips }) => Some(vips.into_iter().collect()),
                _ => None,
            };
            claims.insert(peer.uuid.clone(), claim);
        }
        Ok(claims)
    }

    /// Before binding the write VIP as a new primary: every other ONLINE agent that holds
    /// it, or cannot say, must confirm it released it. At most `switchover_timeout`.
    ///
    /// The local view is still polled meanwhile: a primary that loses its quorum while
    /// it waits must let its VIPs go before the majority elects another primary, so the
    /// wait ends at once when the view stops saying PRIMARY (false: not cleared).
    async fn clear_write(
        &mut self,
        others: &[Peer],
        claims: &BTreeMap<String, Option<BTreeSet<IpAddr>>>,
    ) -> bool {
        let Some(write) = self.cfg.vip.write_vip else {
            self.coord.write_cleared = true;
            return true;
        };
        let mut suspects: Vec<&Peer> = others
            .iter()
            .filter(|p| match claims.get(&p.uuid) {
                Some(Some(held)) => held.contains(&write),
                _ => true,
            })
            .collect();
        // The previous primary, gone from the view straight from ONLINE (it left the
        // group cleanly): its agent may not have seen that yet. It gets one peer timeout,
        // not the whole switchover timeout, in case its host went down with it.
        let departed = self.coord.last_primary.take().filter(|p| {
            self.status.as_ref().and_then(|s| s.me()) != Some(p.uuid.as_str())
                && !others.iter().any(|o| o.uuid == p.uuid)
        });
        if let Some(p) = &departed {
            suspects.push(p);
        }
        let now = Instant::now();
        let (deadline, departed_deadline) = (
            now + self.cfg.peer.switchover_timeout,
            now + self.cfg.peer.timeout.min(self.cfg.peer.switchover_timeout),
        );
        let waits = suspects.iter().map(|p| {
            let caller = self.caller();
            let deadline = if departed.as_ref().is_some_and(|d| d.uuid == p.uuid) {
                departed_deadline
            } else {
                deadline
            };
            async move {
                let mut last = String::from("no answer");
                while Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let request = Request::ReleaseWrite {
                        stamp: next_stamp(0),
                    };
                    match caller.call(p, request, left).await {
                        Ok(Response::Released) => return Ok(()),
                        Ok(Response::Refused { reason }) => last = reason,
                        Ok(other) => last = format!("unexpected answer {other:?}"),
                        Err(e) => last = format!("{e:#}"),
                    }
                    tokio::time::sleep(Duration::from_millis(100).min(left)).await;
                }
                Err(last)
            }
        });
        let waits = join_all(waits);
        tokio::pin!(waits);
        let mut poll = tokio::time::interval(self.cfg.mysql.poll_interval);
        // The first tick is immediate; the view was read just before this wait.
        poll.tick().await;
        let results = loop {
            tokio::select! {
                results = &mut waits => break results,
                _ = poll.tick() => {
                    let now = self.poller.poll().await;
                    self.observe(&now);
                    let still = matches!(now, NodeStatus::Primary { .. });
                    if !still {
                        warn!(
                            event = "write_release_aborted",
                            vip = %write,
                            "stopped waiting for the other agents to release the write VIP \
                             {write}: this node's view changed to {now}"
                        );
                    }
                    self.status = Some(now);
                    if !still {
                        return false;
                    }
                }
            }
        };
        for (peer, result) in suspects.iter().zip(results) {
            match result {
                Ok(()) => info!(
                    event = "write_release_confirmed",
                    vip = %write,
                    member = %peer.uuid,
                    host = %peer.host,
                    "{} confirmed it does not hold the write VIP {write}",
                    peer.host
                ),
                Err(last) => warn!(
                    event = "write_release_timeout",
                    vip = %write,
                    member = %peer.uuid,
                    host = %peer.host,
                    "binding the write VIP {write} anyway: the agent on {} did not confirm it \
                     released it within {:?} ({last})",
                    peer.host,
                    self.cfg.peer.switchover_timeout
                ),
            }
        }
        self.coord.write_cleared = true;
        true
    }

    /// Pushes the placement to the members that still need it (after a change, a
    /// refusal or a failure; failures are retried every [`PUSH_RETRY`]).
    pub(super) async fn push_pending(&mut self, status: &NodeStatus) {
        let (Some(placement), NodeStatus::Primary { me, members }) =
            (self.coord.placement.clone(), status)
        else {
            return;
        };
        if self.coord.pending_push.is_empty()
            || self.coord.next_push.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let targets: Vec<Peer> = others(members, me)
            .filter(|p| self.coord.pending_push.contains(&p.uuid))
            .collect();
        self.coord
            .pending_push
            .retain(|u| targets.iter().any(|p| &p.uuid == u));
        self.coord.stamp = next_stamp(self.coord.stamp);
        let request = Request::Apply {
            stamp: self.coord.stamp,
            placement,
            reannounce: self.coord.reannounce_push,
        };
        let answers = join_all(targets.iter().map(|p| self.call(p, request.clone()))).await;
        for (peer, answer) in targets.iter().zip(answers) {
            if let Some(Response::Applied) = self.note_call(peer, answer) {
                self.coord.pending_push.remove(&peer.uuid);
            }
        }
        if self.coord.pending_push.is_empty() {
            self.coord.reannounce_push = false;
            self.coord.next_push = None;
        } else {
            self.coord.next_push = Some(Instant::now() + PUSH_RETRY);
        }
    }

    /// One request to another member's agent.
    async fn call(&self, peer: &Peer, request: Request) -> Result<Response> {
        self.caller()
            .call(peer, request, self.cfg.peer.timeout)
            .await
    }

    /// What a request to another agent needs, apart from `self`, so that several can
    /// run at once.
    fn caller(&self) -> Caller {
        Caller {
            key: self.key.borrow().clone(),
            me: self.poller.server_uuid().unwrap_or_default().to_string(),
            hosts: self.hosts.clone(),
            port: self.cfg.peer.port,
            timeout: self.cfg.peer.timeout,
        }
    }

    /// Every other ONLINE member needs the current placement.
    pub(super) fn queue_push(&mut self, members: &[Member], me: &str) {
        self.coord.pending_push = others(members, me).map(|p| p.uuid).collect();
        self.coord.next_push = None;
    }

    /// Records how a call went in the peer health table; logs changes once.
    fn note_call(&mut self, peer: &Peer, answer: Result<Response>) -> Option<Response> {
        let problem = match &answer {
            Ok(Response::Refused { reason }) => Some(format!("refused: {reason}")),
            Ok(_) => None,
            Err(e) => Some(format!("{e:#}")),
        };
        note_peer(&mut self.peers, peer, self.cfg.peer.port, problem);
        answer.ok()
    }
}

/// Records in the peer health table how an exchange with `peer` went (`problem`: what
/// went wrong); logs a change once.
pub(super) fn note_peer(
    peers: &mut BTreeMap<String, PeerHealth>,
    peer: &Peer,
    port: u16,
    problem: Option<String>,
) {
    let addr = format!("{}:{port}", peer.host);
    let health = peers
        .entry(peer.uuid.clone())
        .or_insert_with(|| PeerHealth {
            uuid: peer.uuid.clone(),
            addr: addr.clone(),
            ..PeerHealth::default()
        });
    health.addr = addr;
    match problem {
        None => {
            if health.last_error.take().is_some() {
                info!(event = "peer_ok", member = %peer.uuid, host = %peer.host, "the agent on {} answers again", peer.host);
            }
            health.last_ok = Some(now_text());
        }
        Some(p) => {
            if health.last_error.as_deref() != Some(p.as_str()) {
                warn!(event = "peer_failed", member = %peer.uuid, host = %peer.host, "the agent on {}: {p}", peer.host);
            }
            health.last_error = Some(p);
        }
    }
}

/// The ONLINE members other than `me`, with the host their agent listens on
/// (MEMBER_HOST, i.e. report_host).
fn others<'a>(members: &'a [Member], me: &'a str) -> impl Iterator<Item = Peer> + 'a {
    members
        .iter()
        .filter(move |m| m.state == MemberState::Online && m.uuid != me)
        .map(|m| Peer {
            uuid: m.uuid.clone(),
            host: m.host.clone(),
        })
}
