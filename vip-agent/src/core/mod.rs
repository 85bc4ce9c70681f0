//! The coordination core: what one agent holds, decided from events alone. Pure: no I/O,
//! no clock reads, no randomness inside; time, every outcome and every message come in
//! as [`Event`]s, and what to do goes out as [`Effect`]s for a runner to carry out. The
//! same core runs in the agent and in the deterministic simulation. The design and the
//! argument that at most one live node holds a VIP: docs/coordination.md.
//!
//! - [`lease`]: the write lease (the lease row in the group's database).
//! - [`msg`]: the requests and answers between agents.
//! - Here: the view, the placement, the read-VIP sub-leases (granted by the write lease's
//!   holder, the *authority*), and the kernel's state, reconciled after every event.

pub mod lease;
pub mod msg;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::config::FloatingType;
use crate::mgr::{MemberRole, MemberState, NodeStatus};
use crate::plan::{self, Holdings, Placement};

use lease::WriteLease;
pub use lease::{CommitError, LeaseOp, LeaseRow, Now, Timing};
pub use msg::{Request, Response};

/// What the core is told to coordinate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub write_vip: Option<IpAddr>,
    pub read_vips: Vec<IpAddr>,
    pub floating: FloatingType,
    pub timing: Timing,
    /// A tick later than this after the previous one means the agent was not running:
    /// holding is suspended until a fresh view and lease confirm it.
    pub late_tick: Duration,
}

impl Config {
    fn is_read(&self, vip: IpAddr) -> bool {
        self.read_vips.contains(&vip)
    }

    fn all(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.write_vip.iter().chain(&self.read_vips).copied()
    }
}

/// Something that happened, with the time it is handled at.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Time passes (the runner ticks every few tens of milliseconds).
    Tick,
    /// What the kernel has bound of the configured VIPs, once at start.
    Listed {
        bound: BTreeSet<IpAddr>,
    },
    /// A poll of the local mysqld: the view, and the lease row (`None`: no row, or it
    /// could not be read with the view).
    Polled {
        view: NodeStatus,
        me: Option<String>,
        row: Option<LeaseRow>,
    },
    /// The outcome of [`Effect::Commit`].
    Committed {
        attempt: u64,
        result: Result<LeaseRow, CommitError>,
    },
    /// The outcome of [`Effect::Bind`] / [`Effect::Unbind`].
    Bound {
        vip: IpAddr,
        ok: bool,
    },
    Unbound {
        vip: IpAddr,
        ok: bool,
    },
    /// The answer to [`Effect::Call`], or why there is none.
    Answer {
        call: u64,
        result: Result<Response, String>,
    },
    /// A request from another member's agent (`from`: its member uuid), to be answered
    /// with [`Effect::Answer`] and the same `req`.
    Request {
        req: u64,
        from: String,
        request: Request,
    },
}

/// Something to do. The runner reports each outcome back as an [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Read the view (and the lease row) now, not at the next poll.
    PollNow,
    Commit {
        attempt: u64,
        op: LeaseOp,
    },
    /// Mark the VIP held in the kernel until `until`, bind it, announce it.
    Bind {
        vip: IpAddr,
        until: Now,
    },
    /// Move the VIP's kernel lease end (`until` = now: the guard answers for it as
    /// released from now on); `announce` after holding was suspended.
    Extend {
        vip: IpAddr,
        until: Now,
        announce: bool,
    },
    /// Mark the VIP released in the kernel, reset its connections, unbind it.
    Unbind {
        vip: IpAddr,
    },
    /// Send `request` to member `to` (its agent on `host`).
    Call {
        call: u64,
        to: String,
        host: String,
        request: Request,
    },
    Answer {
        req: u64,
        response: Response,
    },
    /// A line for the log: `event` is the log's event name.
    Log {
        event: &'static str,
        text: String,
    },
}

/// One VIP as this node's kernel has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Kernel {
    bound: bool,
    /// A bind or unbind is in flight.
    busy: bool,
    /// The lease end last written to the kernel.
    until: Option<Now>,
    /// Found bound at start: left alone until the view or the lease decides.
    adopted: bool,
    /// After a failed bind or unbind, not again before this.
    next_try: Now,
}

/// A read-VIP sub-lease the authority granted (or a claim it keeps in place).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Grant {
    /// Empty: nobody claimed it, but a previous authority may have granted it.
    member: String,
    /// On the authority's clock: the grant is over by then, whatever the member's clock.
    until: Now,
}

/// What a call was for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    Holdings {
        term: u64,
        member: String,
    },
    /// The placement it carried: an answer confirms that one, not a newer one.
    Apply {
        term: u64,
        member: String,
        placement: Placement,
    },
    ReadLease {
        sent: Now,
    },
    ReleaseWrite {
        member: String,
    },
}

/// The authority's term: its placement and grants.
#[derive(Clone, Debug, Default)]
struct Authority {
    term: u64,
    /// Members whose Holdings answer is still awaited.
    asked: BTreeSet<String>,
    /// What each member said it holds, for planning with the fewest moves.
    claims: BTreeMap<String, BTreeSet<IpAddr>>,
    /// The members the placement was planned for (uuid, is primary).
    planned_for: Vec<(String, bool)>,
    placement: Option<Placement>,
    /// Members that still need the current placement, and when to try each again.
    to_push: BTreeMap<String, Now>,
    grants: BTreeMap<IpAddr, Grant>,
}

/// How long a member waits before asking again after a failed or partial answer.
const RETRY: Duration = Duration::from_millis(100);

/// The core of one agent. See the module docs.
pub struct Core {
    cfg: Config,
    me: Option<String>,
    view: Option<NodeStatus>,
    /// The members of the last view that listed them, and every member host ever seen.
    members: Vec<crate::mgr::Member>,
    hosts: BTreeMap<String, String>,
    lease: WriteLease,
    auth: Option<Authority>,
    /// The placement this node follows, and the authority term it came with.
    placement: Option<(u64, Placement)>,
    /// Read VIPs this node may hold, and until when (this clock).
    read_valid: BTreeMap<IpAddr, Now>,
    kernel: BTreeMap<IpAddr, Kernel>,
    next_call: u64,
    pending: BTreeMap<u64, Pending>,
    /// ReleaseWrite requests waiting for the next poll, then for the unbind.
    release_after_poll: Vec<(u64, String)>,
    release_answers: Vec<u64>,
    /// Apply requests waiting for the unbinds of what this node lost.
    apply_answers: Vec<u64>,
    last_tick: Option<Now>,
    next_read_renew: Now,
    next_release_ask: Now,
    /// The highest authority term seen: older placements are refused.
    term_seen: u64,
    /// Every sub-lease this node granted, in any term, until it ends: a new term of this
    /// node keeps them in force.
    issued: BTreeMap<IpAddr, Grant>,
}

impl Core {
    pub fn new(cfg: Config) -> Core {
        let kernel = cfg.all().map(|v| (v, Kernel::default())).collect();
        Core {
            lease: WriteLease::new("", cfg.timing),
            cfg,
            me: None,
            view: None,
            members: Vec::new(),
            hosts: BTreeMap::new(),
            auth: None,
            placement: None,
            read_valid: BTreeMap::new(),
            kernel,
            next_call: 1,
            pending: BTreeMap::new(),
            release_after_poll: Vec::new(),
            release_answers: Vec::new(),
            apply_answers: Vec::new(),
            last_tick: None,
            next_read_renew: Duration::ZERO,
            next_release_ask: Duration::ZERO,
            term_seen: 0,
            issued: BTreeMap::new(),
        }
    }

    /// Handles one event at `now` and says what to do.
    pub fn handle(&mut self, now: Now, event: Event) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            Event::Tick => self.tick(now, &mut out),
            Event::Listed { bound } => {
                for (vip, k) in &mut self.kernel {
                    k.bound = bound.contains(vip);
                    k.adopted = k.bound;
                }
            }
            Event::Polled { view, me, row } => self.polled(now, view, me, row, &mut out),
            Event::Committed { attempt, result } => {
                // Another holder took the row: a write VIP found bound is not ours.
                let stale = matches!(result, Err(CommitError::Stale { .. }));
                self.lease.committed(attempt, result, now);
                if stale && self.lease.term().is_none() {
                    self.unadopt(self.cfg.write_vip);
                }
            }
            Event::Bound { vip, ok } => {
                if let Some(k) = self.kernel.get_mut(&vip) {
                    k.busy = false;
                    k.bound |= ok;
                    if !ok {
                        k.next_try = now + RETRY;
                        if !k.bound {
                            k.until = None;
                        }
                    }
                }
            }
            Event::Unbound { vip, ok } => {
                if let Some(k) = self.kernel.get_mut(&vip) {
                    k.busy = false;
                    k.adopted = false;
                    if ok {
                        k.bound = false;
                    } else {
                        k.next_try = now + RETRY;
                    }
                    // Marked released before the unbind; held again if it stayed bound
                    // with a lease still valid (the next reconcile writes it).
                    k.until = None;
                }
                if !ok {
                    out.push(Effect::Log {
                        event: "reconcile_failed",
                        text: format!("could not unbind {vip}; trying again"),
                    });
                }
            }
            Event::Answer { call, result } => self.answered(now, call, result, &mut out),
            Event::Request { req, from, request } => {
                self.request(now, req, &from, request, &mut out)
            }
        }
        self.step(now, &mut out);
        out
    }

    /// What this node holds now, with a valid lease: for tests, status and the
    /// simulation's invariants.
    pub fn holding(&self, now: Now) -> BTreeSet<IpAddr> {
        self.cfg
            .all()
            .filter(|v| self.kernel.get(v).is_some_and(|k| k.bound))
            .filter(|v| self.lease_until(*v, now).is_some())
            .collect()
    }

    /// Whether this node may hold `vip` now: its lease (and its view) allow it.
    pub fn may_hold(&self, vip: IpAddr, now: Now) -> bool {
        self.lease_until(vip, now).is_some()
    }

    /// Why this node may or may not hold `vip` now, for traces.
    pub fn explain(&self, vip: IpAddr, now: Now) -> String {
        format!(
            "view {:?}; lease {:?}; placement {:?}; read_valid {:?}; kernel {:?}",
            self.view.as_ref().map(|v| v.to_string()),
            self.lease.state,
            self.placement
                .as_ref()
                .map(|(t, p)| (t, p.read_held_by(self.me.as_deref().unwrap_or("")))),
            self.read_valid.get(&vip).map(|u| u.saturating_sub(now)),
            self.kernel.get(&vip)
        )
    }

    /// Whether the kernel has `vip` bound (as far as the core knows).
    pub fn bound(&self, vip: IpAddr) -> bool {
        self.kernel.get(&vip).is_some_and(|k| k.bound)
    }

    /// The lease end the kernel has for `vip`.
    pub fn kernel_until(&self, vip: IpAddr) -> Option<Now> {
        self.kernel.get(&vip).and_then(|k| k.until)
    }

    /// The write lease's term, when this node holds it.
    pub fn term(&self) -> Option<u64> {
        self.lease.term()
    }

    /// Until when this node's write lease is valid, if it holds one.
    pub fn lease_valid_until(&self, now: Now) -> Option<Now> {
        self.lease.valid_until(now)
    }

    /// The placement this node follows (its own as the authority, or the authority's).
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.as_ref().map(|(_, p)| p)
    }

    /// The last view polled.
    pub fn view(&self) -> Option<&NodeStatus> {
        self.view.as_ref()
    }

    /// This member's uuid, once a poll has read it.
    pub fn me(&self) -> Option<&str> {
        self.me.as_deref()
    }

    fn tick(&mut self, now: Now, out: &mut Vec<Effect>) {
        let late = self
            .last_tick
            .is_some_and(|t| now.saturating_sub(t) > self.cfg.late_tick);
        self.last_tick = Some(now);
        if late {
            // Not running for a while: whatever this node held may have moved on. The
            // kernel stops answering for it at once; a renewal sent from now confirms.
            self.lease.suspend(now);
            self.read_valid.clear();
            for (vip, k) in &mut self.kernel {
                if k.bound && k.until.is_some_and(|u| u > now) {
                    k.until = Some(now);
                    out.push(Effect::Extend {
                        vip: *vip,
                        until: now,
                        announce: false,
                    });
                }
            }
            out.push(Effect::Log {
                event: "suspended",
                text: "the agent did not run for a while: holding is suspended until a fresh \
                       view and lease confirm it"
                    .into(),
            });
            out.push(Effect::PollNow);
        }
        self.lease.expire(now);
    }

    fn polled(
        &mut self,
        now: Now,
        view: NodeStatus,
        me: Option<String>,
        row: Option<LeaseRow>,
        out: &mut Vec<Effect>,
    ) {
        if let Some(me) = &me {
            self.lease.set_me(me);
            self.me = Some(me.clone());
        }
        self.lease.observe(row, now);
        if let Some(members) = view.members() {
            self.members = members.to_vec();
            for m in members {
                self.hosts.insert(m.uuid.clone(), m.host.clone());
            }
        }
        let primary = matches!(view, NodeStatus::Primary { .. });
        let keep = keep_class(&view);
        if !primary && !keep {
            if self.lease.term().is_some() {
                out.push(Effect::Log {
                    event: "lease",
                    text: format!("giving up the write lease: {view}"),
                });
            }
            self.lease.give_up();
            self.auth = None;
            self.unadopt(self.cfg.write_vip);
        }
        if !in_group(&view) && !keep {
            // Out of the group: every sub-lease this node had is void, and the placement
            // it last got is stale.
            self.read_valid.clear();
            self.placement = None;
            for vip in self.cfg.read_vips.clone() {
                self.unadopt(Some(vip));
            }
        }
        self.view = Some(view);
        for (req, from) in std::mem::take(&mut self.release_after_poll) {
            if primary && (self.lease.term().is_some() || self.lease.taking()) {
                out.push(Effect::Answer {
                    req,
                    response: refused(format!(
                        "this node's own view still says it is the primary; {from} must wait"
                    )),
                });
            } else {
                self.lease.give_up();
                self.auth = None;
                self.unadopt(self.cfg.write_vip);
                self.release_answers.push(req);
            }
        }
    }

    fn request(&mut self, now: Now, req: u64, from: &str, request: Request, out: &mut Vec<Effect>) {
        match request {
            Request::Holdings { term } => {
                self.term_seen = self.term_seen.max(term);
                let vips = self.claimable(now);
                out.push(Effect::Answer {
                    req,
                    response: Response::Holdings { vips },
                });
            }
            Request::Apply { term, placement } => {
                if term < self.term_seen {
                    out.push(Effect::Answer {
                        req,
                        response: refused(format!(
                            "stale placement: term {term}, and term {} was seen",
                            self.term_seen
                        )),
                    });
                    return;
                }
                self.term_seen = term;
                // Losers first: what is no longer this node's goes now, and the answer
                // waits until it is unbound.
                let mine = self.share_of(&placement);
                self.read_valid.retain(|v, _| mine.contains(v));
                for vip in self.cfg.read_vips.clone() {
                    if !mine.contains(&vip) {
                        self.unadopt(Some(vip));
                    }
                }
                self.placement = Some((term, placement));
                self.next_read_renew = now;
                self.apply_answers.push(req);
            }
            Request::ReadLease { vips } => {
                let response = self.grant(now, from, &vips);
                // A member that does not know its share (its agent restarted) gets the
                // placement again.
                if let Some(auth) = self.auth.as_mut()
                    && let Some(p) = &auth.placement
                {
                    let share: BTreeSet<IpAddr> = p.read_held_by(from);
                    let asked: BTreeSet<IpAddr> = vips.iter().copied().collect();
                    let pushing = auth.to_push.contains_key(from);
                    if share != asked && !pushing {
                        auth.to_push.insert(from.to_string(), now);
                    }
                }
                out.push(Effect::Answer { req, response });
            }
            Request::ReleaseWrite { term } => {
                self.term_seen = self.term_seen.max(term);
                // The view is read now rather than at the next poll: the new holder waits.
                self.release_after_poll.push((req, from.to_string()));
                out.push(Effect::PollNow);
            }
        }
    }

    fn answered(
        &mut self,
        now: Now,
        call: u64,
        result: Result<Response, String>,
        out: &mut Vec<Effect>,
    ) {
        let Some(pending) = self.pending.remove(&call) else {
            return;
        };
        match (pending, result) {
            (Pending::Holdings { term, member }, result) => {
                let Some(auth) = self.auth.as_mut().filter(|a| a.term == term) else {
                    return;
                };
                auth.asked.remove(&member);
                if let Ok(Response::Holdings { vips }) = result {
                    // Its claims stay its own until it lets them go or they run out; a VIP
                    // two members claim stays with the first until it lets go.
                    let until = now + self.cfg.timing.lengthened(self.cfg.timing.lease);
                    for vip in vips.into_iter().filter(|v| self.cfg.is_read(*v)) {
                        auth.claims.entry(member.clone()).or_default().insert(vip);
                        let taken = auth
                            .grants
                            .get(&vip)
                            .is_some_and(|g| !g.member.is_empty() && g.member != member);
                        if !taken {
                            auth.grants.insert(
                                vip,
                                Grant {
                                    member: member.clone(),
                                    until,
                                },
                            );
                        }
                    }
                }
            }
            (
                Pending::Apply {
                    term,
                    member,
                    placement,
                },
                result,
            ) => {
                let Some(auth) = self.auth.as_mut().filter(|a| a.term == term) else {
                    return;
                };
                match result {
                    Ok(Response::Applied) => {
                        // It let go of what that placement took from it: those grants
                        // are over. A newer placement still has to be pushed.
                        let keep = placement.read_held_by(&member);
                        auth.grants
                            .retain(|v, g| g.member != member || keep.contains(v));
                        self.issued
                            .retain(|v, g| g.member != member || keep.contains(v));
                        if auth.placement.as_ref() == Some(&placement) {
                            auth.to_push.remove(&member);
                        } else {
                            auth.to_push.insert(member.clone(), now);
                        }
                    }
                    other => {
                        auth.to_push.insert(member.clone(), now + RETRY);
                        out.push(Effect::Log {
                            event: "peer_failed",
                            text: format!("placement not applied by {member}: {other:?}"),
                        });
                    }
                }
            }
            (Pending::ReadLease { sent }, result) => {
                if let Ok(Response::ReadLease { term, grants }) = result
                    && term >= self.term_seen
                {
                    self.term_seen = term;
                    let mine = self
                        .placement
                        .as_ref()
                        .map(|(_, p)| self.share_of(p))
                        .unwrap_or_default();
                    for (vip, d) in grants {
                        if mine.contains(&vip) {
                            let until = sent + self.cfg.timing.shortened(d);
                            let e = self.read_valid.entry(vip).or_insert(until);
                            *e = (*e).max(until);
                        }
                    }
                    // Everything granted: renew on schedule; else ask again soon.
                    let all = mine
                        .iter()
                        .all(|v| self.read_valid.get(v).is_some_and(|u| *u > now));
                    self.next_read_renew = if all {
                        sent + self.cfg.timing.renew
                    } else {
                        now + RETRY
                    };
                } else {
                    self.next_read_renew = now + RETRY;
                }
            }
            (Pending::ReleaseWrite { member }, Ok(Response::Released)) => {
                self.lease.previous_released(&member);
                out.push(Effect::Log {
                    event: "write_release_confirmed",
                    text: format!("{member} confirmed it does not hold the write VIP"),
                });
            }
            (Pending::ReleaseWrite { .. }, _) => self.next_release_ask = now + RETRY,
        }
    }

    /// After every event: the lease, the authority's duties, the member's, the kernel.
    fn step(&mut self, now: Now, out: &mut Vec<Effect>) {
        let view_primary = matches!(self.view, Some(NodeStatus::Primary { .. }));
        let keep = self.view.as_ref().is_some_and(keep_class);
        let holding_term = self.lease.term().is_some();
        if let Some((attempt, op)) = self.lease.due(view_primary || (keep && holding_term), now) {
            out.push(Effect::Commit { attempt, op });
        }
        self.ask_previous_holder(now, out);
        self.lead(now, out);
        self.renew_reads(now, out);
        self.reconcile(now, out);
        self.answer_waiters(out);
    }

    /// While waiting out the leases of earlier holders: ask each to let go.
    fn ask_previous_holder(&mut self, now: Now, out: &mut Vec<Effect>) {
        if now < self.next_release_ask {
            return;
        }
        let term = self.lease.term().unwrap_or(0);
        for previous in self.lease.waiting_for(now) {
            let asking = self
                .pending
                .values()
                .any(|p| matches!(p, Pending::ReleaseWrite { member } if *member == previous));
            // Never seen where it lives: the lease's end is the only way.
            let Some(host) = self.hosts.get(&previous).cloned() else {
                continue;
            };
            if asking {
                continue;
            }
            self.call(
                out,
                &previous,
                &host,
                Request::ReleaseWrite { term },
                Pending::ReleaseWrite {
                    member: previous.clone(),
                },
            );
        }
    }

    /// The authority's duties: start a term, plan, push, grant its own share.
    fn lead(&mut self, now: Now, out: &mut Vec<Effect>) {
        let Some(me) = self.me.clone() else { return };
        let authority = self.lease.may_hold(now)
            && matches!(
                self.view,
                Some(NodeStatus::Primary { .. })
                    | Some(NodeStatus::MysqldRefusing { .. })
                    | Some(NodeStatus::Degraded { .. })
                    | Some(NodeStatus::Unreadable { .. })
            );
        let term = self.lease.term().unwrap_or(0);
        if !authority {
            self.auth = None;
            return;
        }
        if self.auth.as_ref().is_none_or(|a| a.term != term) {
            self.start_term(now, term, &me, out);
        }
        let online = plan::Member::online(&self.members);
        let signature: Vec<(String, bool)> =
            online.iter().map(|m| (m.uuid.clone(), m.primary)).collect();
        let auth = self.auth.as_mut().expect("started above");
        if auth.asked.is_empty() && !online.is_empty() && auth.planned_for != signature {
            // Plan from what each member holds: the fewest moves.
            let mut holdings: Holdings = auth.claims.clone();
            for (vip, g) in &auth.grants {
                if !g.member.is_empty() {
                    holdings.entry(g.member.clone()).or_default().insert(*vip);
                }
            }
            let placement = plan::place(&plan::Input {
                members: &online,
                write_vip: self.cfg.write_vip,
                read_vips: &self.cfg.read_vips,
                floating: self.cfg.floating,
                holdings: &holdings,
            });
            out.push(Effect::Log {
                event: "placement",
                text: format!(
                    "term {term}: placement {}",
                    plan::topology::format(&placement, &online)
                ),
            });
            auth.placement = Some(placement.clone());
            auth.planned_for = signature;
            auth.to_push = online
                .iter()
                .filter(|m| m.uuid != me)
                .map(|m| (m.uuid.clone(), now))
                .collect();
            self.placement = Some((term, placement));
            self.term_seen = self.term_seen.max(term);
        }
        // Push to whoever still needs it.
        let due: Vec<String> = auth
            .to_push
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(m, _)| m.clone())
            .collect();
        let placement = auth.placement.clone();
        for member in due {
            let busy = self
                .pending
                .values()
                .any(|p| matches!(p, Pending::Apply { member: m, .. } if *m == member));
            let (Some(host), Some(placement)) =
                (self.hosts.get(&member).cloned(), placement.clone())
            else {
                continue;
            };
            if busy {
                continue;
            }
            if let Some(a) = self.auth.as_mut() {
                a.to_push
                    .insert(member.clone(), now + Duration::from_secs(3600));
            }
            self.call(
                out,
                &member,
                &host,
                Request::Apply {
                    term,
                    placement: placement.clone(),
                },
                Pending::Apply {
                    term,
                    member: member.clone(),
                    placement,
                },
            );
        }
        // The authority's own share, granted to itself.
        let mine: Vec<IpAddr> = self
            .placement
            .as_ref()
            .map(|(_, p)| self.share_of(p).into_iter().collect())
            .unwrap_or_default();
        if let Response::ReadLease { grants, .. } = self.grant(now, &me, &mine) {
            for (vip, d) in grants {
                let until = now + d;
                let e = self.read_valid.entry(vip).or_insert(until);
                *e = (*e).max(until);
            }
        }
    }

    /// A new term: ask every other ONLINE member what it holds; until the previous
    /// authority's sub-leases are certainly over, a read VIP nobody claims is kept free.
    fn start_term(&mut self, now: Now, term: u64, me: &str, out: &mut Vec<Effect>) {
        let free_after = self.lease.taken_over_until().unwrap_or(now).max(now);
        let mut auth = Authority {
            term,
            ..Authority::default()
        };
        for vip in &self.cfg.read_vips {
            auth.grants.insert(
                *vip,
                Grant {
                    member: String::new(),
                    until: free_after,
                },
            );
        }
        // What this node granted in an earlier term and is still running.
        self.issued.retain(|_, g| g.until > now);
        for (vip, g) in &self.issued {
            auth.grants.insert(*vip, g.clone());
        }
        // This node's own claims.
        let until = now + self.cfg.timing.lengthened(self.cfg.timing.lease);
        for vip in self.claimable(now) {
            auth.claims.entry(me.to_string()).or_default().insert(vip);
            auth.grants.insert(
                vip,
                Grant {
                    member: me.to_string(),
                    until,
                },
            );
        }
        out.push(Effect::Log {
            event: "term",
            text: format!("term {term}: this node holds the write lease"),
        });
        let others: Vec<(String, String)> = self
            .members
            .iter()
            .filter(|m| m.state == MemberState::Online && m.uuid != me)
            .map(|m| (m.uuid.clone(), m.host.clone()))
            .collect();
        self.auth = Some(auth);
        for (uuid, host) in others {
            if let Some(a) = self.auth.as_mut() {
                a.asked.insert(uuid.clone());
            }
            self.call(
                out,
                &uuid,
                &host,
                Request::Holdings { term },
                Pending::Holdings {
                    term,
                    member: uuid.clone(),
                },
            );
        }
    }

    /// The authority's answer to a sub-lease request from `member` for `vips`.
    fn grant(&mut self, now: Now, member: &str, vips: &[IpAddr]) -> Response {
        let Some(auth) = self.auth.as_mut() else {
            return refused("this node does not hold the write lease (yet)".into());
        };
        let Some(valid) = self.lease.valid_until(now) else {
            return refused("this node's write lease is not valid".into());
        };
        let timing = self.cfg.timing;
        // Every sub-lease ends before the authority's own lease, with room for drift.
        let margin = timing.lengthened(timing.lease) - timing.shortened(timing.lease)
            + Duration::from_millis(10);
        let d = timing
            .lease
            .min(valid.saturating_sub(now).saturating_sub(margin));
        if d.is_zero() {
            return refused("this node's write lease is about to end".into());
        }
        let share = auth
            .placement
            .as_ref()
            .map(|p| p.read_held_by(member))
            .unwrap_or_default();
        let mut grants = Vec::new();
        for vip in vips {
            if !share.contains(vip) {
                continue;
            }
            let free = match auth.grants.get(vip) {
                None => true,
                Some(g) => g.member == member || g.until <= now,
            };
            if free {
                let grant = Grant {
                    member: member.to_string(),
                    until: now + d,
                };
                auth.grants.insert(*vip, grant.clone());
                self.issued.insert(*vip, grant);
                grants.push((*vip, d));
            }
        }
        Response::ReadLease {
            term: auth.term,
            grants,
        }
    }

    /// A member asks the authority (the primary in its view) to renew its share.
    fn renew_reads(&mut self, now: Now, out: &mut Vec<Effect>) {
        if self.auth.is_some() || now < self.next_read_renew {
            return;
        }
        let in_flight = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::ReadLease { .. }));
        let Some(view) = &self.view else { return };
        if in_flight || !(in_group(view) || keep_class(view)) {
            return;
        }
        // With no placement (or an empty share) it asks all the same: the authority
        // sends the placement to a member whose share it got wrong.
        let mine: Vec<IpAddr> = self
            .placement
            .as_ref()
            .map(|(_, p)| self.share_of(p).into_iter().collect())
            .unwrap_or_default();
        let primary = self
            .members
            .iter()
            .find(|m| m.role == Some(MemberRole::Primary) && m.state == MemberState::Online)
            .map(|m| (m.uuid.clone(), m.host.clone()));
        let Some((uuid, host)) = primary.filter(|(u, _)| Some(u) != self.me.as_ref()) else {
            return;
        };
        self.next_read_renew = now + self.cfg.timing.renew;
        self.call(
            out,
            &uuid,
            &host,
            Request::ReadLease { vips: mine },
            Pending::ReadLease { sent: now },
        );
    }

    /// Until when this node may hold `vip`, if it may now.
    fn lease_until(&self, vip: IpAddr, now: Now) -> Option<Now> {
        let view = self.view.as_ref()?;
        if Some(vip) == self.cfg.write_vip {
            let ok = matches!(view, NodeStatus::Primary { .. }) || keep_class(view);
            return ok.then(|| self.lease.hold_until(now)).flatten();
        }
        if !(in_group(view) || keep_class(view)) {
            return None;
        }
        let mine = self.placement.as_ref().map(|(_, p)| self.share_of(p))?;
        if !mine.contains(&vip) {
            return None;
        }
        self.read_valid.get(&vip).copied().filter(|u| *u > now)
    }

    /// Makes the kernel match what this node may hold: releases first, the write VIP
    /// first among them; every one is tried, whatever happened to the others.
    fn reconcile(&mut self, now: Now, out: &mut Vec<Effect>) {
        let vips: Vec<IpAddr> = self.cfg.all().collect();
        let mut binds = Vec::new();
        for vip in vips {
            let until = self.lease_until(vip, now);
            let Some(k) = self.kernel.get_mut(&vip) else {
                continue;
            };
            // No longer ours: the kernel stops answering for it at once, even while a
            // bind is still in flight or before the unbind is done.
            if until.is_none() && k.until.is_some_and(|u| u > now) {
                k.until = Some(now);
                out.push(Effect::Extend {
                    vip,
                    until: now,
                    announce: false,
                });
            }
            if k.busy || now < k.next_try {
                continue;
            }
            match (until, k.bound) {
                (Some(until), true) => {
                    k.adopted = false;
                    if k.until != Some(until) {
                        let lapsed = k.until.is_none_or(|u| u <= now);
                        k.until = Some(until);
                        out.push(Effect::Extend {
                            vip,
                            until,
                            announce: lapsed,
                        });
                    }
                }
                (Some(until), false) => binds.push((vip, until)),
                (None, true) if !k.adopted => {
                    k.busy = true;
                    out.push(Effect::Unbind { vip });
                }
                (None, _) => {}
            }
        }
        for (vip, until) in binds {
            if let Some(k) = self.kernel.get_mut(&vip) {
                k.busy = true;
                k.until = Some(until);
            }
            out.push(Effect::Bind { vip, until });
        }
    }

    fn answer_waiters(&mut self, out: &mut Vec<Effect>) {
        let write_free = self
            .cfg
            .write_vip
            .is_none_or(|w| self.kernel.get(&w).is_none_or(|k| !k.bound && !k.busy));
        if write_free {
            for req in std::mem::take(&mut self.release_answers) {
                out.push(Effect::Answer {
                    req,
                    response: Response::Released,
                });
            }
        }
        let mine = self
            .placement
            .as_ref()
            .map(|(_, p)| self.share_of(p))
            .unwrap_or_default();
        let lost_free = self
            .cfg
            .read_vips
            .iter()
            .filter(|v| !mine.contains(v))
            .all(|v| self.kernel.get(v).is_none_or(|k| !k.bound && !k.busy));
        if lost_free {
            for req in std::mem::take(&mut self.apply_answers) {
                out.push(Effect::Answer {
                    req,
                    response: Response::Applied,
                });
            }
        }
    }

    /// The read VIPs this node can claim: bound, with a valid sub-lease or found bound.
    fn claimable(&self, now: Now) -> Vec<IpAddr> {
        self.cfg
            .read_vips
            .iter()
            .copied()
            .filter(|v| {
                self.kernel.get(v).is_some_and(|k| k.bound || k.busy)
                    && (self.read_valid.get(v).is_some_and(|u| *u > now)
                        || self.kernel.get(v).is_some_and(|k| k.adopted))
            })
            .collect()
    }

    fn share_of(&self, placement: &Placement) -> BTreeSet<IpAddr> {
        let Some(me) = &self.me else {
            return BTreeSet::new();
        };
        placement
            .read_held_by(me)
            .into_iter()
            .filter(|v| self.cfg.is_read(*v))
            .collect()
    }

    fn unadopt(&mut self, vip: Option<IpAddr>) {
        if let Some(k) = vip.and_then(|v| self.kernel.get_mut(&v)) {
            k.adopted = false;
        }
    }

    fn call(
        &mut self,
        out: &mut Vec<Effect>,
        to: &str,
        host: &str,
        request: Request,
        pending: Pending,
    ) {
        let call = self.next_call;
        self.next_call += 1;
        self.pending.insert(call, pending);
        out.push(Effect::Call {
            call,
            to: to.to_string(),
            host: host.to_string(),
            request,
        });
    }
}

fn refused(reason: String) -> Response {
    Response::Refused { reason }
}

/// A view this agent cannot judge the group by: mysqld refuses it, is slow, or answered
/// something unreadable. The lease decides then, not the view.
fn keep_class(view: &NodeStatus) -> bool {
    matches!(
        view,
        NodeStatus::MysqldRefusing { .. }
            | NodeStatus::Degraded { .. }
            | NodeStatus::Unreadable { .. }
    )
}

fn in_group(view: &NodeStatus) -> bool {
    matches!(
        view,
        NodeStatus::Primary { .. } | NodeStatus::Secondary { .. }
    )
}

#[cfg(test)]
mod tests;
