//! The agent: one loop that owns the state and reconciles the kernel with the group.
//!
//! Events come in one at a time: a poll of the local mysqld's view, an address change on
//! the NIC, a request from another member's agent, a command on the control socket,
//! SIGHUP. After each, the loop works out what this node should hold and acts on the
//! difference with the kernel ([`vips`]): release first, then bind and announce.
//!
//! - [`decide`]: pure; what this node holds given its view and the placement.
//! - [`vips`]: the kernel side: reconcile, announce, release.
//! - [`lead`]: the primary's side of coordination: collect holdings, plan, confirm the
//!   old primary released the write VIP, push the placement.
//! - [`answer`]: requests from other agents and from the operator.
//! - [`reload`]: re-reading the config file.
//! - [`status`]: what `vip-agent status` shows.
//!
//! The kernel is the record of what is held, so an agent restart adopts a VIP that is
//! already bound instead of removing and re-adding it, and a VIP deleted by hand is
//! re-added. Log events carry an `event` field (`view`, `bound`, `announced`, `released`,
//! `adopted`, `readded`, `placement`, …) so a timeline can be read back from JSON logs.

mod answer;
pub mod decide;
mod lead;
pub mod lease;
pub mod reload;
mod status;
mod vips;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::{LastAnnouncement, PeerHealth};
use crate::datapath::engine::Datapath;
use crate::metrics::Metrics;
use crate::mgr::{self, NodeStatus};
use crate::net::addr::Addrs;
use crate::peer::hosts::{Allow, Hosts};
use crate::peer::key::Key;
use crate::peer::server::{self as peer_server, Stats};
use crate::plan::Placement;

/// The one owner of the agent's state.
pub struct Agent {
    cfg: Config,
    /// Where the config was read from, for `reload` and SIGHUP.
    config_path: PathBuf,
    poller: mgr::Poller,
    addrs: Addrs,
    ticker: tokio::time::Interval,
    /// The latest view of the local mysqld.
    status: Option<NodeStatus>,
    /// The last status logged, to log only changes.
    last_status: Option<String>,
    /// The last reconcile error logged.
    last_error: Option<String>,
    /// The configured VIPs bound the last time we looked: tells a VIP deleted by hand
    /// from one we never had. `None` before the first look.
    seen_bound: Option<BTreeSet<IpAddr>>,
    announcers: vips::Announcers,
    last_announcement: Option<LastAnnouncement>,
    coord: Coord,
    key: watch::Sender<Arc<Key>>,
    /// The members' hosts and their addresses, resolved off the loop.
    hosts: Hosts,
    /// Who may connect to the peer port (a reload swaps it).
    allow: watch::Sender<Allow>,
    peer_stats: Arc<Stats>,
    /// Requests refused by the agent itself (stale stamp, sender not the primary, …).
    refused: BTreeMap<String, u64>,
    peers: BTreeMap<String, PeerHealth>,
    /// The eBPF programs and maps, and the reset paths.
    datapath: Datapath,
    /// The capabilities kept after start, for `vip-agent status`.
    privileges: String,
    /// When every held VIP was last re-announced (vip.reannounce_interval_ms).
    last_reannounce: Instant,
    /// The series this loop writes (served only with `[metrics]`).
    metrics: Metrics,
    /// `metrics.listen`, bound in `new`, served from `run` once privileges are dropped.
    metrics_listener: Option<tokio::net::TcpListener>,
}

/// Coordination state: the placement this node follows, and the primary's bookkeeping.
#[derive(Default)]
struct Coord {
    /// Computed here on the primary; the last one applied from the primary elsewhere.
    placement: Option<Placement>,
    /// A manual placement (set-topology) and the ONLINE members it was set for. It lasts
    /// until the membership changes or it stops fitting the config.
    manual: Option<(Placement, BTreeSet<String>)>,
    /// The ONLINE members (uuid, is primary) the placement was planned for.
    planned_for: Option<Vec<(String, bool)>>,
    /// Plan again at the next step (reload, force-rebind).
    replan: bool,
    /// Members that still need the current placement.
    pending_push: BTreeSet<String>,
    /// The next push asks for every VIP to be re-announced.
    reannounce_push: bool,
    next_push: Option<Instant>,
    last_resync: Option<Instant>,
    /// This agent's last stamp (grows with every push).
    stamp: u64,
    /// The last stamp applied from each sender.
    applied: BTreeMap<String, u64>,
    /// As primary: no other agent holds the write VIP any more (or the wait timed out),
    /// so binding it cannot make two owners.
    write_cleared: bool,
    /// The primary of the last SECONDARY view: the agent that held the write VIP as far
    /// as this one knows. A primary that left the group cleanly is no longer in the new
    /// view, yet its agent may still hold the write VIP until its next poll.
    last_primary: Option<lead::Peer>,
}

/// What reaches the loop from outside.
struct Inbox {
    peer: mpsc::Receiver<crate::peer::server::Incoming>,
    control: mpsc::Receiver<crate::control::server::Incoming>,
    announced: mpsc::UnboundedReceiver<LastAnnouncement>,
}

impl Agent {
    /// Prepares the agent; nothing is served until [`Agent::run`] (only the metrics
    /// address is bound, when configured), and no VIP is bound before it.
    pub async fn new(cfg: Config, config_path: PathBuf) -> Result<Agent> {
        let Parts {
            metrics_listener,
            poller,
            datapath,
            addrs,
            key,
            peer_stats,
            metrics,
            hosts,
            allow,
        } = Parts::start(&cfg).await?;
        let mut ticker = tokio::time::interval(cfg.mysql.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Agent {
            hosts,
            allow,
            cfg,
            config_path,
            poller,
            addrs,
            ticker,
            status: None,
            last_status: None,
            last_error: None,
            seen_bound: None,
            // The channel is replaced when the inbox opens.
            announcers: vips::Announcers::new(mpsc::unbounded_channel().0),
            last_announcement: None,
            coord: Coord::default(),
            key,
            peer_stats,
            refused: BTreeMap::new(),
            peers: BTreeMap::new(),
            datapath,
            privileges: "not dropped yet".into(),
            last_reannounce: Instant::now(),
            metrics,
            metrics_listener,
        })
    }

    /// Serves the peer port and the control socket and runs until SIGTERM or Ctrl-C.
    /// The VIPs stay where they are when the agent stops: a restart or upgrade of the
    /// agent must not interrupt clients.
    pub async fn run(mut self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let mut inbox = self.open_inbox().await?;
        let mut addr_events = self.addrs.watch(&self.cfg.vip.nic).await?;
        self.drop_privileges()?;
        // Served only now: a scrape runs a blocking thread, and the capabilities must be
        // dropped while the agent is still a single thread.
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
            "vip-agent started"
        );
        // The guard's RSTs are summed up once a second, never logged one by one.
        let mut guard_log = tokio::time::interval(GUARD_LOG_INTERVAL);
        guard_log.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_guard_log = Instant::now();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = guard_log.tick() => {
                    log_guard_resets(&mut self.datapath, last_guard_log.elapsed());
                    last_guard_log = Instant::now();
                    continue;
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = hup.recv() => {
                    if let Err(e) = self.reload().await {
                        error!(event = "reload_failed", "SIGHUP: {e}");
                    }
                }
                _ = self.ticker.tick() => {
                    let s = self.poller.poll().await;
                    if let Some(took) = self.poller.take_round_trip() {
                        self.metrics.polled(took);
                    }
                    self.observe(&s);
                    self.status = Some(s);
                }
                Some(_) = addr_events.recv() => {}
                Some(incoming) = inbox.peer.recv() => {
                    self.answer_peer(incoming).await;
                    continue;
                }
                Some(incoming) = inbox.control.recv() => {
                    self.answer_control(incoming).await;
                    continue;
                }
                Some(a) = inbox.announced.recv() => {
                    self.metrics.announced(a.vip);
                    self.last_announcement = Some(a);
                    continue;
                }
            }
            self.step().await;
        }
        info!(
            event = "stop",
            "stopping; the VIPs stay in place (use `vip-agent release` to remove them)"
        );
        Ok(())
    }

    fn drop_privileges(&mut self) -> Result<()> {
        self.privileges = drop_privileges()?;
        Ok(())
    }

    /// Starts the peer server and the control socket; their requests come to the loop.
    async fn open_inbox(&mut self) -> Result<Inbox> {
        let (peer, control) =
            serve_inbox(&self.cfg, &self.key, &self.allow, &self.peer_stats).await?;
        let (announced_tx, announced) = mpsc::unbounded_channel();
        self.announcers.done = announced_tx;
        Ok(Inbox {
            peer,
            control,
            announced,
        })
    }

    /// After an event: coordinate (on the primary), reconcile the kernel, push.
    async fn step(&mut self) {
        let Some(status) = self.status.clone() else {
            return;
        };
        if matches!(status, NodeStatus::Primary { .. }) {
            if let Err(e) = self.lead(&status).await {
                self.report(Err(e));
                return;
            }
        } else {
            self.note_primary(&status);
            // Leadership bookkeeping starts over if this node becomes primary again.
            self.coord.planned_for = None;
            self.coord.pending_push.clear();
            self.coord.write_cleared = false;
            self.coord.manual = None;
        }
        let result = self.reconcile().await;
        self.report(result);
        self.reannounce_when_due().await;
        // `lead` may have read the view again (after waiting on other agents).
        if let Some(status @ NodeStatus::Primary { .. }) = self.status.clone() {
            self.push_pending(&status).await;
        }
    }

    /// vip.reannounce_interval_ms: announces every VIP held here again, for the caches
    /// that a move's announcement did not reach or that expire (other NICs, switches
    /// with short ARP timers), instead of a cron job running arping.
    async fn reannounce_when_due(&mut self) {
        let Some(every) = self.cfg.vip.reannounce_interval else {
            return;
        };
        if self.last_reannounce.elapsed() < every {
            return;
        }
        self.last_reannounce = Instant::now();
        match self.reannounce_all(false).await {
            Ok(0) => {}
            Ok(n) => info!(
                event = "reannounce",
                vips = n,
                "re-announcing {n} VIP(s) held here"
            ),
            Err(e) => warn!(
                event = "reannounce",
                "could not list the VIPs to re-announce: {e:#}"
            ),
        }
    }

    /// Logs a failed reconcile once per distinct error (it is retried every loop), and
    /// the recovery.
    fn report(&mut self, result: Result<()>) {
        match result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!(event = "reconcile_ok", "reconciling the VIPs works again");
                }
            }
            Err(e) => {
                let text = format!("{e:#}");
                if self.last_error.as_deref() != Some(text.as_str()) {
                    error!(
                        event = "reconcile_failed",
                        "could not reconcile the VIPs (retrying every poll): {text}"
                    );
                    self.last_error = Some(text);
                }
            }
        }
    }

    /// Logs a status change once, at a level that matches how bad it is.
    fn observe(&mut self, status: &NodeStatus) {
        if let Some(members) = status.members() {
            self.hosts.seen(members.iter().map(|m| m.host.as_str()));
        }
        let text = status.to_string();
        if self.last_status.as_deref() == Some(text.as_str()) {
            return;
        }
        self.metrics.view_changed(status);
        match status {
            NodeStatus::Primary { .. } | NodeStatus::Secondary { .. } => {
                info!(event = "view", status = %text, "view changed: {text}")
            }
            NodeStatus::MysqldRefusing { .. } => error!(
                event = "view",
                status = %text,
                "mysqld refuses the agent: {text}; KEEPING the VIPs as they are, since the group \
                 itself is fine. Fix the agent's access (max_connections, user, password)."
            ),
            _ => warn!(event = "view", status = %text, "view changed: {text}"),
        }
        self.last_status = Some(text);
    }

    /// Remembers the ONLINE primary of a SECONDARY view. A primary seen UNREACHABLE is
    /// forgotten: the group expels it only after its own view has shown it the lost
    /// majority (and its agent released), so a new primary need not wait for it. One
    /// that disappears straight from ONLINE left cleanly, and its agent may not know yet.
    fn note_primary(&mut self, status: &NodeStatus) {
        let Some(members) = status.members() else {
            return;
        };
        let primary = members
            .iter()
            .find(|m| m.role == Some(crate::mgr::MemberRole::Primary));
        self.coord.last_primary = match primary {
            Some(m) if m.state == crate::mgr::MemberState::Online => Some(lead::Peer {
                uuid: m.uuid.clone(),
                host: m.host.clone(),
            }),
            Some(_) => None,
            None => self.coord.last_primary.take(),
        };
    }

    fn count_refusal(&mut self, kind: &str) {
        *self.refused.entry(kind.to_string()).or_default() += 1;
    }
}

/// One line per VIP whose stale clients the guard answered since the last line.
fn log_guard_resets(datapath: &mut Datapath, over: Duration) {
    for r in datapath.new_resets() {
        let last = r
            .last_client
            .map_or_else(|| "unknown".to_string(), |c| c.to_string());
        info!(
            event = "guard_rst",
            vip = %r.vip,
            rsts = r.new,
            total = r.total,
            last_client = %last,
            "guard: {} RST(s) in the last {:.1} s to stale clients of released VIP {} \
             (last: {last}; {} since the guard started)",
            r.new,
            over.as_secs_f64(),
            r.vip,
            r.total
        );
    }
}

/// What both coordination modes start from, in the order that matters: the metrics
/// address first (an address that cannot be used stops the agent before it touches the
/// datapath; nothing is served on it until the loop runs), then the datapath, netlink
/// and the peer key.
pub(super) struct Parts {
    pub metrics_listener: Option<tokio::net::TcpListener>,
    pub poller: mgr::Poller,
    pub datapath: Datapath,
    pub addrs: Addrs,
    pub key: watch::Sender<Arc<Key>>,
    pub peer_stats: Arc<Stats>,
    pub metrics: Metrics,
    pub hosts: Hosts,
    pub allow: watch::Sender<Allow>,
}

impl Parts {
    pub(super) async fn start(cfg: &Config) -> Result<Parts> {
        let metrics_listener = match &cfg.metrics {
            Some(m) => Some(crate::metrics::serve::bind(m.listen).await?),
            None => None,
        };
        let poller = mgr::Poller::new(mgr::MysqlTarget::from_config(&cfg.mysql)?);
        let datapath = Datapath::start(cfg)?;
        return_freed_memory();
        let addrs = Addrs::new().await.context("opening a netlink socket")?;
        let key = watch::Sender::new(Arc::new(load_key(cfg)?));
        let peer_stats = Arc::new(Stats::default());
        let metrics = Metrics::new(&cfg.vip, peer_stats.clone(), datapath.reader());
        let hosts = Hosts::new();
        let allow = watch::Sender::new(allow_rule(cfg, &hosts));
        Ok(Parts {
            metrics_listener,
            poller,
            datapath,
            addrs,
            key,
            peer_stats,
            metrics,
            hosts,
            allow,
        })
    }
}

/// Everything that needs CAP_BPF / CAP_PERFMON (or root) is loaded and every socket is
/// open: keeps only what the loop uses, and says what it kept.
fn drop_privileges() -> Result<String> {
    let dropped = crate::privileges::drop_unneeded(&crate::privileges::keep())?;
    info!(
        event = "privileges",
        kept = %dropped.kept.join(" "),
        dropped = %dropped.dropped.join(" "),
        "{dropped}"
    );
    Ok(dropped.to_string())
}

/// The peer server and the control socket, whose requests come to the loop.
async fn serve_inbox(
    cfg: &Config,
    key: &watch::Sender<Arc<Key>>,
    allow: &watch::Sender<Allow>,
    peer_stats: &Arc<Stats>,
) -> Result<(
    mpsc::Receiver<crate::peer::server::Incoming>,
    mpsc::Receiver<crate::control::server::Incoming>,
)> {
    let (peer_tx, peer) = mpsc::channel(64);
    let listen = SocketAddr::new(cfg.peer.listen, cfg.peer.port);
    let limits = peer_server::Limits {
        max_connections: cfg.peer.max_connections as usize,
        max_per_host: cfg.peer.max_connections_per_host as usize,
        pre_auth: pre_auth_deadline(cfg.peer.timeout),
        reply_timeout: cfg.peer.switchover_timeout + cfg.peer.timeout,
    };
    peer_server::listen(
        listen,
        key.subscribe(),
        limits,
        allow.subscribe(),
        peer_tx,
        peer_stats.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot listen on the peer port {listen} (peer.listen, peer.port): is another \
             agent or program using it?"
        )
    })?;
    let (control_tx, control) = mpsc::channel(16);
    crate::control::server::serve(&cfg.control.socket, control_tx)?;
    Ok((peer, control))
}

/// How long a peer connection may take to show it holds the key: half a peer timeout,
/// so that slots held by clients without the key free up well within the time a
/// member's own call has.
pub fn pre_auth_deadline(peer_timeout: Duration) -> Duration {
    (peer_timeout / 2).max(Duration::from_millis(50))
}

/// Who may connect to the peer port under `cfg`.
fn allow_rule(cfg: &Config, hosts: &Hosts) -> Allow {
    match &cfg.peer.allow {
        Some(nets) => Allow::List(nets.clone()),
        None => Allow::Members(hosts.clone()),
    }
}

/// The peer key named by `peer.key_file` (required: every peer frame is authenticated).
fn load_key(cfg: &Config) -> Result<Key> {
    let Some(path) = &cfg.peer.key_file else {
        anyhow::bail!(
            "peer.key_file is not set: the agents authenticate every peer frame with a shared \
             key. Create one with `openssl rand -hex 32 > /etc/vip-agent/peer.key && chmod 600 \
             /etc/vip-agent/peer.key`, copy it to every member, and set peer.key_file"
        );
    };
    Key::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `vip-agent release`: removes this instance's VIPs from the NIC, and its pins.
pub async fn release(cfg: &Config) -> Result<Vec<IpAddr>> {
    let addrs = Addrs::new().await.context("opening a netlink socket")?;
    let bound = addrs.list(&cfg.vip.nic).await?;
    let ours: Vec<IpAddr> = cfg
        .vip
        .all_vips()
        .filter(|vip| bound.iter().any(|b| b.addr == *vip))
        .collect();
    for vip in &ours {
        // As in the loop: the VIP's clients get a reset rather than a hang.
        if let Ok(n @ 1..) = vips::netlink_reset(crate::datapath::Target::Local(*vip, None)).await {
            info!(event = "reset", vip = %vip, connections = n, "reset {n} connection(s) through {vip}");
        }
        addrs.unbind(&cfg.vip.nic, *vip, cfg.vip.prefix).await?;
        info!(event = "released", vip = %vip, nic = %cfg.vip.nic, reason = "vip-agent release", "released");
    }
    crate::datapath::remove_pins(&cfg.instance)?;
    Ok(ours)
}

/// Loading the datapath parsed the kernel's BTF (several MB) and the eBPF object; that
/// memory is freed, but glibc's allocator keeps freed pages resident unless asked to
/// give them back. Asked once here, the idle agent's RSS drops by about half.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only returns free heap to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Now, as RFC 3339 with milliseconds (UTC), for status and peer health.
pub(crate) fn now_text() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A stamp for a push: milliseconds since the epoch, but always above the last one, so
/// stamps from one sender grow even across agent restarts and clock steps within a run.
fn next_stamp(last: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now.max(last + 1)
}

/// How often a push that failed is tried again.
const PUSH_RETRY: Duration = Duration::from_millis(500);

/// How often the guard's RSTs are summed up in the log (at most one line per VIP).
const GUARD_LOG_INTERVAL: Duration = Duration::from_secs(1);
