//! The agent with `coordination.mode = "lease"`: the pure coordination core
//! ([`crate::core`]) and the runner that carries out what it decides.
//!
//! The core owns every decision and the state behind it (the view, the leases, the
//! placement, what the kernel holds). The runner owns the I/O, and never waits on it in
//! the loop: the polls and the lease commits run in tasks of their own ([`io`]), every
//! bind, unbind and peer call runs in a task spawned for it, and each outcome comes back
//! as an event. So SIGTERM, `vip-agent status` and other agents' requests are answered
//! while a commit is held by the group or a peer does not answer.
//!
//! Time is [`clock::Clock`]: CLOCK_BOOTTIME, pushed forward by gaps only the realtime
//! clock saw. The loop ticks every [`TICK`]; a tick much later than that (the agent was
//! stopped, its host paused or suspended) makes the core suspend holding at once.

pub mod clock;
mod io;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::vips::{Announcers, reset_target};
use super::{drop_privileges, serve_inbox};
use crate::config::Config;
use crate::control::{self, LastAnnouncement, PeerHealth, Response as Reply, Status};
use crate::core::{self, Core, Effect, Event, Now, Timing};
use crate::datapath::Target;
use crate::datapath::engine::Datapath;
use crate::datapath::vip_table::Role;
use crate::metrics::Metrics;
use crate::mgr::{self, NodeStatus};
use crate::net::addr::Addrs;
use crate::peer::caller::{Caller, Peer};
use crate::peer::hosts::{Allow, Hosts};
use crate::peer::key::Key;
use crate::peer::server::{self as peer_server, Stats};
use crate::plan::{self, topology};
use clock::{Clock, Sample};
use io::{Commit, Done};

/// How often the core is told the time.
pub const TICK: Duration = Duration::from_millis(50);

/// The agent in lease mode. See the module docs.
pub struct LeaseAgent {
    cfg: Config,
    core: Core,
    clock: Clock,
    addrs: Addrs,
    datapath: Datapath,
    metrics: Metrics,
    metrics_listener: Option<tokio::net::TcpListener>,
    key: watch::Sender<Arc<Key>>,
    hosts: Hosts,
    allow: watch::Sender<Allow>,
    peer_stats: Arc<Stats>,
    /// Requests refused by the agent itself, by kind.
    refused: BTreeMap<String, u64>,
    peers: BTreeMap<String, PeerHealth>,
    /// Moved into the poll task when the agent runs.
    poller: Option<mgr::Poller>,
    poll_now: Arc<Notify>,
    commits: Option<mpsc::UnboundedSender<Commit>>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Peer requests handed to the core, waiting for its answer.
    replies: BTreeMap<u64, oneshot::Sender<peer_server::Reply>>,
    next_req: u64,
    announcers: Announcers,
    announced_rx: mpsc::UnboundedReceiver<LastAnnouncement>,
    last_announcement: Option<LastAnnouncement>,
    /// The last view logged, and the last lease-row error: each is logged when it changes.
    last_view: Option<String>,
    last_row_error: Option<String>,
    privileges: String,
    last_reannounce: Instant,
}

/// The core's settings from the config.
pub fn core_config(cfg: &Config) -> core::Config {
    let c = &cfg.coordination;
    core::Config {
        write_vip: cfg.vip.write_vip,
        read_vips: cfg.vip.read_vips.clone(),
        floating: cfg.vip.floating_type,
        timing: Timing {
            lease: c.lease,
            renew: c.renew,
            drift_ppm: c.drift_ppm,
        },
        late_tick: late_tick(c.renew),
    }
}

/// A tick later than this means the agent was not running: well above any delay a busy
/// machine gives a task that is due every [`TICK`], and below a renewal period.
fn late_tick(renew: Duration) -> Duration {
    renew.max(TICK * 10)
}

impl LeaseAgent {
    /// Prepares the agent; nothing is served and nothing bound until [`LeaseAgent::run`].
    pub async fn new(cfg: Config) -> Result<LeaseAgent> {
        let super::Parts {
            metrics_listener,
            poller,
            datapath,
            addrs,
            key,
            peer_stats,
            metrics,
            hosts,
            allow,
        } = super::Parts::start(&cfg).await?;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (announced_tx, announced_rx) = mpsc::unbounded_channel();
        let core = Core::new(core_config(&cfg));
        let clock = Clock::new(late_tick(cfg.coordination.renew), Sample::read());
        Ok(LeaseAgent {
            cfg,
            core,
            clock,
            addrs,
            datapath,
            metrics,
            metrics_listener,
            key,
            hosts,
            allow,
            peer_stats,
            refused: BTreeMap::new(),
            peers: BTreeMap::new(),
            poller: Some(poller),
            poll_now: Arc::new(Notify::new()),
            commits: None,
            done_tx,
            done_rx,
            replies: BTreeMap::new(),
            next_req: 1,
            announcers: Announcers::new(announced_tx),
            announced_rx,
            last_announcement: None,
            last_view: None,
            last_row_error: None,
            privileges: "not dropped yet".into(),
            last_reannounce: Instant::now(),
        })
    }

    /// Runs until SIGTERM or Ctrl-C. The VIPs stay where they are when the agent stops;
    /// their kernel leases run out unless a new agent renews them.
    pub async fn run(mut self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let (mut peer_in, mut control_in) =
            serve_inbox(&self.cfg, &self.key, &self.allow, &self.peer_stats).await?;
        self.privileges = drop_privileges()?;
        if let Some(listener) = self.metrics_listener.take() {
            crate::metrics::serve::serve_on(listener, self.metrics.registry());
        }
        info!(
            event = "start",
            instance = %self.cfg.instance,
            nic = %self.cfg.vip.nic,
            write_vip = ?self.cfg.vip.write_vip,
            read_vips = ?self.cfg.vip.read_vips,
            peer_port = self.cfg.peer.port,
            control = %self.cfg.control.socket.display(),
            coordination = "lease",
            lease_ms = self.cfg.coordination.lease.as_millis() as u64,
            "vip-agent started (lease coordination)"
        );
        // What is bound already: adopted, and left alone until the view and the lease
        // decide.
        let on_nic = self.addrs.list(&self.cfg.vip.nic).await?;
        let bound: BTreeSet<IpAddr> = self
            .cfg
            .vip
            .all_vips()
            .filter(|v| on_nic.iter().any(|b| b.addr == *v))
            .collect();
        self.handle(Event::Listed { bound }).await;
        self.datapath.seed();
        self.start_tasks();

        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut guard_log = tokio::time::interval(super::GUARD_LOG_INTERVAL);
        guard_log.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_guard_log = Instant::now();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hup.recv() => warn!(
                    event = "reload_failed",
                    "SIGHUP: reloading is not supported with coordination.mode = \"lease\" yet; \
                     restart the agent to apply a new config"
                ),
                _ = ticker.tick() => {
                    self.handle(Event::Tick).await;
                    self.reannounce_when_due();
                }
                _ = guard_log.tick() => {
                    super::log_guard_resets(&mut self.datapath, last_guard_log.elapsed());
                    last_guard_log = Instant::now();
                }
                Some(done) = self.done_rx.recv() => self.done(done).await,
                Some(incoming) = peer_in.recv() => self.peer_request(incoming).await,
                Some(incoming) = control_in.recv() => self.control(incoming),
                Some(a) = self.announced_rx.recv() => {
                    self.metrics.announced(a.vip);
                    self.last_announcement = Some(a);
                }
            }
        }
        info!(
            event = "stop",
            "stopping; the VIPs stay in place until their kernel leases end (use `vip-agent \
             release` to remove them)"
        );
        Ok(())
    }

    fn start_tasks(&mut self) {
        let Some(poller) = self.poller.take() else {
            return;
        };
        let target = poller.target().clone();
        io::spawn_poller(
            poller,
            self.cfg.mysql.poll_interval,
            self.poll_now.clone(),
            self.done_tx.clone(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        // A commit held longer than half a lease cannot keep the lease anyway.
        let limit = self.cfg.coordination.lease / 2;
        io::spawn_committer(target, limit, rx, self.done_tx.clone());
        self.commits = Some(tx);
    }

    /// One event through the core, then its effects.
    async fn handle(&mut self, event: Event) {
        let now = self.clock.now();
        let effects = self.core.handle(now, event);
        for effect in effects {
            self.effect(now, effect).await;
        }
        for vip in self.cfg.vip.all_vips() {
            self.metrics.set_held(vip, self.core.bound(vip));
        }
    }

    async fn effect(&mut self, now: Now, effect: Effect) {
        match effect {
            Effect::PollNow => self.poll_now.notify_one(),
            Effect::Commit { attempt, op } => {
                let me = self.core.me().unwrap_or_default().to_string();
                if let Some(tx) = &self.commits {
                    let _ = tx.send(Commit { attempt, me, op });
                }
            }
            Effect::Bind { vip, until } => {
                // First, so the tracker records the VIP's first connections and the guard
                // passes its traffic until the lease's end.
                self.datapath
                    .mark_held_until(vip, self.role(vip), Clock::kernel_ns(until, now));
                let (addrs, nic, prefix, label) = (
                    self.addrs.clone(),
                    self.cfg.vip.nic.clone(),
                    self.cfg.vip.prefix,
                    self.cfg.vip.label.clone(),
                );
                let done = self.done_tx.clone();
                tokio::spawn(async move {
                    let result = addrs.bind(&nic, vip, prefix, &label).await;
                    let result = result.map_err(|e| format!("{e:#}"));
                    let _ = done.send(Done::Bound { vip, result });
                });
            }
            Effect::Extend {
                vip,
                until,
                announce,
            } => {
                self.datapath
                    .mark_held_until(vip, self.role(vip), Clock::kernel_ns(until, now));
                if until <= now {
                    // The guard answers for it as released from now on; no more
                    // announcements of an address this node may not hold.
                    self.announcers.stop(vip);
                } else if announce {
                    self.announce(vip);
                }
            }
            Effect::Unbind { vip } => self.unbind(vip).await,
            Effect::Call {
                call,
                to,
                host,
                request,
            } => self.call(call, Peer { uuid: to, host }, request),
            Effect::Answer { req, response } => {
                if let Some(reply) = self.replies.remove(&req) {
                    let member = self.core.me().unwrap_or_default().to_string();
                    let response = crate::peer::Response::Lease(response);
                    let _ = reply.send(peer_server::Reply { member, response });
                }
            }
            Effect::Log { event, text } => info!(event = event, "{text}"),
        }
    }

    /// The guard first, then a reset of the VIP's clients, then the unbind in a task; the
    /// second reset follows the unbind ([`LeaseAgent::unbound`]).
    async fn unbind(&mut self, vip: IpAddr) {
        self.announcers.stop(vip);
        self.datapath.mark_released(vip, self.role(vip));
        let before =
            reset_target(&mut self.datapath, &self.metrics, Target::Local(vip, None)).await;
        if before > 0 {
            info!(event = "reset", vip = %vip, connections = before, "reset {before} connection(s) through {vip}");
        }
        let (addrs, nic, prefix) = (
            self.addrs.clone(),
            self.cfg.vip.nic.clone(),
            self.cfg.vip.prefix,
        );
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = addrs.unbind(&nic, vip, prefix).await;
            let result = result.map_err(|e| format!("{e:#}"));
            let _ = done.send(Done::Unbound { vip, result });
        });
    }

    fn call(&mut self, call: u64, peer: Peer, request: core::Request) {
        let caller = Caller {
            key: self.key.borrow().clone(),
            me: self.core.me().unwrap_or_default().to_string(),
            hosts: self.hosts.clone(),
            port: self.cfg.peer.port,
            timeout: self.cfg.peer.timeout,
        };
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let answer = caller
                .call(&peer, crate::peer::Request::Lease(request), caller.timeout)
                .await;
            let result = match answer {
                Ok(crate::peer::Response::Lease(r)) => Ok(r),
                Ok(crate::peer::Response::Refused { reason }) => Err(format!("refused: {reason}")),
                Ok(other) => Err(format!(
                    "answered {other:?}: does that agent run coordination.mode = \"lease\"?"
                )),
                Err(e) => Err(format!("{e:#}")),
            };
            let _ = done.send(Done::Answer { call, peer, result });
        });
    }

    async fn done(&mut self, done: Done) {
        let event = match done {
            Done::Polled {
                view,
                me,
                row,
                row_error,
                took,
            } => {
                if let Some(took) = took {
                    self.metrics.polled(took);
                }
                self.observe(&view, row_error);
                Event::Polled { view, me, row }
            }
            Done::Committed { attempt, result } => {
                if let Err(core::CommitError::Failed(why)) = &result {
                    warn!(
                        event = "lease_commit_failed",
                        "the lease row commit failed: {why}"
                    );
                }
                Event::Committed { attempt, result }
            }
            Done::Bound { vip, result } => {
                match &result {
                    Ok(()) => {
                        self.metrics.bound(vip);
                        info!(event = "bound", vip = %vip, nic = %self.cfg.vip.nic, prefix = self.cfg.vip.prefix, "bound {} {vip}", self.kind(vip));
                        self.announce(vip);
                    }
                    Err(e) => {
                        error!(event = "reconcile_failed", vip = %vip, "could not bind {vip}: {e}")
                    }
                }
                Event::Bound {
                    vip,
                    ok: result.is_ok(),
                }
            }
            Done::Unbound { vip, result } => {
                self.unbound(vip, &result).await;
                Event::Unbound {
                    vip,
                    ok: result.is_ok(),
                }
            }
            Done::Answer { call, peer, result } => {
                self.note_call(&peer, &result);
                Event::Answer { call, result }
            }
        };
        self.handle(event).await;
    }

    /// After the unbind: the clients that came in meanwhile get their reset too; the
    /// write VIP's loss resets every client of mysqld when configured.
    async fn unbound(&mut self, vip: IpAddr, result: &Result<(), String>) {
        if let Err(e) = result {
            error!(event = "reconcile_failed", vip = %vip, "could not unbind {vip}: {e}; it stays guarded until it is unbound or held again");
            return;
        }
        let after = reset_target(&mut self.datapath, &self.metrics, Target::Local(vip, None)).await;
        if after > 0 {
            info!(event = "reset", vip = %vip, connections = after, "reset {after} connection(s) through {vip}");
        }
        self.datapath.prune();
        self.metrics.released(vip);
        info!(event = "released", vip = %vip, nic = %self.cfg.vip.nic, "released {} {vip}", self.kind(vip));
        if self.cfg.vip.write_vip == Some(vip) && self.cfg.vip.kill_connections_on_demotion {
            let port = self.cfg.datapath.client_port;
            let n = reset_target(&mut self.datapath, &self.metrics, Target::Port(port)).await;
            info!(
                event = "reset",
                port,
                connections = n,
                reason = "kill_connections_on_demotion",
                "demoted: reset {n} client connection(s) of port {port}"
            );
        }
    }

    async fn peer_request(&mut self, incoming: peer_server::Incoming) {
        let peer_server::Incoming {
            from,
            peer,
            request,
            reply,
        } = incoming;
        let crate::peer::Request::Lease(request) = request else {
            *self.refused.entry("other_mode".into()).or_default() += 1;
            let reason = "this agent runs coordination.mode = \"lease\"; every agent of a group \
                          must run the same mode"
                .to_string();
            warn!(event = "peer_refused", from = %from, peer = %peer, "refused a request from {from} ({peer}): {reason}");
            let member = self.core.me().unwrap_or_default().to_string();
            let response = crate::peer::Response::Refused { reason };
            let _ = reply.send(peer_server::Reply { member, response });
            return;
        };
        let req = self.next_req;
        self.next_req += 1;
        self.replies.insert(req, reply);
        self.handle(Event::Request { req, from, request }).await;
        // Answers the core did not give at once (a release waiting for a poll and an
        // unbind) stay until it does; a requester that gave up is gone.
        self.replies.retain(|_, r| !r.is_closed());
    }

    fn control(&mut self, incoming: control::server::Incoming) {
        let control::server::Incoming { request, reply } = incoming;
        let unsupported = |what: &str| Reply::Error {
            message: format!(
                "{what} is not supported with coordination.mode = \"lease\" yet; nothing changed"
            ),
        };
        let response = match request {
            control::Request::Status => Reply::Status(Box::new(self.status())),
            control::Request::Topology => match (self.core.placement(), self.core.view()) {
                (Some(p), Some(v)) => Reply::Topology {
                    text: topology::format(p, &plan::Member::online(v.members().unwrap_or(&[]))),
                },
                _ => Reply::Error {
                    message: "no placement yet: this node's lease term has not planned one, and \
                              none came from the holder of the write lease"
                        .into(),
                },
            },
            control::Request::SetTopology { .. } => unsupported("set-topology"),
            control::Request::ForceRebind => unsupported("force-rebind"),
            control::Request::Reload => unsupported("reload (restart the agent instead)"),
        };
        let _ = reply.send(response);
    }

    fn status(&mut self) -> Status {
        let now = self.clock.now();
        let (role, view, uuid, members) = super::status::view_fields(self.core.view());
        let (rejected, mut subsystems) = super::status::subsystems(
            &self.cfg,
            &self.peer_stats,
            &self.refused,
            &self.datapath,
            &self.metrics,
            &self.privileges,
        );
        let c = &self.cfg.coordination;
        let lease = match (self.core.term(), self.core.lease_valid_until(now)) {
            (Some(term), Some(until)) => format!(
                "holding the write lease, term {term}, valid for {} ms",
                until.saturating_sub(now).as_millis()
            ),
            (Some(term), None) => format!("holding the write lease, term {term}, not valid now"),
            _ => "not holding the write lease".to_string(),
        };
        subsystems.insert(
            "coordination".into(),
            format!(
                "lease: {} ms, renewed every {} ms, drift bound {} ppm; {lease}",
                c.lease.as_millis(),
                c.renew.as_millis(),
                c.drift_ppm
            ),
        );
        Status {
            instance: self.cfg.instance.clone(),
            uuid,
            role,
            view,
            members,
            placement: self.core.placement().cloned(),
            manual: false,
            held: self
                .cfg
                .vip
                .all_vips()
                .filter(|v| self.core.bound(*v))
                .collect(),
            last_announcement: self.last_announcement.clone(),
            peers: self.peers.values().cloned().collect(),
            rejected_frames: rejected,
            subsystems,
            datapath: self.datapath.vips(),
            unresolved: self.hosts.unresolved(),
        }
    }

    /// Logs a view change once, and a lease row that cannot be read once.
    fn observe(&mut self, view: &NodeStatus, row_error: Option<String>) {
        if let Some(members) = view.members() {
            self.hosts.seen(members.iter().map(|m| m.host.as_str()));
        }
        let text = view.to_string();
        if self.last_view.as_deref() != Some(text.as_str()) {
            self.metrics.view_changed(view);
            match view {
                NodeStatus::Primary { .. } | NodeStatus::Secondary { .. } => {
                    info!(event = "view", status = %text, "view changed: {text}")
                }
                _ => warn!(event = "view", status = %text, "view changed: {text}"),
            }
            self.last_view = Some(text);
        }
        if row_error != self.last_row_error {
            match &row_error {
                Some(e) => error!(event = "lease_row", "cannot read the lease row: {e}"),
                None => info!(event = "lease_row", "the lease row can be read again"),
            }
            self.last_row_error = row_error;
        }
    }

    /// Records how a call went in the peer health table; logs changes once.
    fn note_call(&mut self, peer: &Peer, result: &Result<core::Response, String>) {
        let problem = match result {
            Ok(core::Response::Refused { reason }) => Some(format!("refused: {reason}")),
            Ok(_) => None,
            Err(e) => Some(e.clone()),
        };
        super::lead::note_peer(&mut self.peers, peer, self.cfg.peer.port, problem);
    }

    /// vip.reannounce_interval_ms: every VIP held here, announced again.
    fn reannounce_when_due(&mut self) {
        let Some(every) = self.cfg.vip.reannounce_interval else {
            return;
        };
        if self.last_reannounce.elapsed() < every {
            return;
        }
        self.last_reannounce = Instant::now();
        let now = self.clock.now();
        for vip in self.core.holding(now) {
            self.announce(vip);
        }
    }

    fn announce(&mut self, vip: IpAddr) {
        self.announcers.announce(&self.cfg.vip, vip);
    }

    fn role(&self, vip: IpAddr) -> Role {
        super::vips::role_of(&self.cfg.vip, vip)
    }

    fn kind(&self, vip: IpAddr) -> &'static str {
        super::vips::kind_of(&self.cfg.vip, vip)
    }
}
