//! The Prometheus endpoint (`[metrics]`): what the agent does, as series a monitoring
//! system scrapes. Off unless the config has a `[metrics]` table.
//!
//! [`Metrics`] holds the handles of the series the agent's loop updates where the events
//! happen (the same places that log `view`, `bound`, `released`, `announced`, `reset`);
//! the loop is their one writer. Two collectors read, at scrape time, what others already
//! count: the peer server's rejected frames ([`collect::PeerCollector`]) and the guard's
//! per-VIP counters in the kernel ([`collect::GuardCollector`]).
//!
//! - [`collect`]: the two collectors.
//! - [`serve`]: the HTTP endpoint, `GET /metrics`.

pub mod collect;
pub mod serve;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::config::VipConfig;
use crate::datapath::reader::MapReader;
use crate::mgr::NodeStatus;
use crate::peer::server::Stats;

/// Every series name starts with this.
pub const PREFIX: &str = "vip_agent";

/// The roles `vip_agent_role` has a series for, always all three.
const ROLES: [&str; 3] = ["primary", "secondary", "none"];

/// Upper bounds of the poll histogram, in seconds: a poll of the local mysqld takes a
/// millisecond or less when all is well; the top buckets catch a slow or hung mysqld
/// (the query timeout defaults to 1 s).
const POLL_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
];

type Labels1 = [(&'static str, &'static str); 1];
type VipLabels = [(&'static str, String); 2];

/// How a reset was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetPath {
    /// The `reset_tcp` iterator with bpf_sock_destroy.
    Iter,
    /// netlink SOCK_DESTROY.
    Netlink,
}

impl ResetPath {
    fn label(self) -> &'static str {
        match self {
            ResetPath::Iter => "iter",
            ResetPath::Netlink => "netlink",
        }
    }
}

/// The series the agent's loop writes, registered once in [`Metrics::registry`].
pub struct Metrics {
    registry: Arc<Registry>,
    role: Family<Labels1, Gauge>,
    vip_held: Family<VipLabels, Gauge>,
    view_changes: Counter,
    moves: Family<Labels1, Counter>,
    announcements: Family<Labels1, Counter>,
    resets: Family<Labels1, Counter>,
    reset_failures: Counter,
    poll_duration: Histogram,
    /// The VIPs `vip_held` has a series for, so a reload that drops one drops its series.
    held_series: BTreeMap<IpAddr, VipLabels>,
}

impl Metrics {
    /// Registers every series; `guard` is `None` when the datapath is off (its series
    /// are then absent).
    pub fn new(vips: &VipConfig, peer: Arc<Stats>, guard: Option<MapReader>) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "build",
            "The running agent's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let role = Family::<Labels1, Gauge>::default();
        registry.register(
            "role",
            "This node's role in the group as the agent last read it: 1 for the current one",
            role.clone(),
        );
        let vip_held = Family::<VipLabels, Gauge>::default();
        registry.register(
            "vip_held",
            "1 while this node holds the configured VIP (bound on vip.nic), else 0",
            vip_held.clone(),
        );
        let view_changes = Counter::default();
        registry.register(
            "view_changes",
            "Changes of this node's view of the group (the `view` log events), the first \
             view read included",
            view_changes.clone(),
        );
        let moves = Family::<Labels1, Counter>::default();
        registry.register(
            "vip_moves",
            "VIPs this node bound or released (adopting a VIP already bound at start is \
             not a move)",
            moves.clone(),
        );
        let announcements = Family::<Labels1, Counter>::default();
        registry.register(
            "announcements",
            "Completed announcements of a VIP, each a burst of vip.announce_count frames: \
             gratuitous ARP (arp) or unsolicited neighbour advertisements (na)",
            announcements.clone(),
        );
        let resets = Family::<Labels1, Counter>::default();
        registry.register(
            "connections_reset",
            "TCP connections this agent reset, by the path that reset them",
            resets.clone(),
        );
        let reset_failures = Counter::default();
        registry.register(
            "reset_failures",
            "Resets that failed as a whole (the iterator's failures fall back to netlink)",
            reset_failures.clone(),
        );
        let poll_duration = Histogram::new(POLL_BUCKETS);
        registry.register_with_unit(
            "poll_duration",
            "Round trip of the query that reads the group view from the local mysqld",
            Unit::Seconds,
            poll_duration.clone(),
        );
        registry.register_collector(Box::new(collect::PeerCollector::new(peer)));
        if let Some(reader) = guard {
            registry.register_collector(Box::new(collect::GuardCollector::new(reader)));
        }
        // Every label value shows from the start, at 0: a series that appears only at
        // its first event breaks rate() and alerts on absence.
        for direction in ["bound", "released"] {
            moves.get_or_create_owned(&[("direction", direction)]);
        }
        for family in ["arp", "na"] {
            announcements.get_or_create_owned(&[("family", family)]);
        }
        for path in [ResetPath::Iter, ResetPath::Netlink] {
            resets.get_or_create_owned(&[("path", path.label())]);
        }
        let mut metrics = Metrics {
            registry: Arc::new(registry),
            role,
            vip_held,
            view_changes,
            moves,
            announcements,
            resets,
            reset_failures,
            poll_duration,
            held_series: BTreeMap::new(),
        };
        metrics.set_role(None);
        metrics.set_vips(vips);
        metrics
    }

    /// What the endpoint encodes.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// A new view was read (logged as `view`).
    pub fn view_changed(&self, status: &NodeStatus) {
        self.view_changes.inc();
        self.set_role(Some(status));
    }

    fn set_role(&self, status: Option<&NodeStatus>) {
        let current = match status {
            Some(NodeStatus::Primary { .. }) => "primary",
            Some(NodeStatus::Secondary { .. }) => "secondary",
            _ => "none",
        };
        for role in ROLES {
            self.role
                .get_or_create(&[("role", role)])
                .set(i64::from(role == current));
        }
    }

    /// The configured VIPs (at start and after a reload): one `vip_held` series each,
    /// 0 until [`Metrics::set_held`] says otherwise; series of VIPs no longer
    /// configured go.
    pub fn set_vips(&mut self, cfg: &VipConfig) {
        let mut wanted = BTreeMap::new();
        for vip in cfg.all_vips() {
            let kind = if cfg.write_vip == Some(vip) {
                "write"
            } else {
                "read"
            };
            wanted.insert(vip, [("vip", vip.to_string()), ("kind", kind.to_string())]);
        }
        for (vip, labels) in &self.held_series {
            if wanted.get(vip) != Some(labels) {
                self.vip_held.remove(labels);
            }
        }
        for labels in wanted.values() {
            self.vip_held.get_or_create_owned(labels);
        }
        self.held_series = wanted;
    }

    /// Whether this node holds `vip` now (a VIP not configured is ignored).
    pub fn set_held(&self, vip: IpAddr, held: bool) {
        if let Some(labels) = self.held_series.get(&vip) {
            self.vip_held.get_or_create(labels).set(i64::from(held));
        }
    }

    /// This node bound `vip` (logged as `bound`).
    pub fn bound(&self, vip: IpAddr) {
        self.moves.get_or_create(&[("direction", "bound")]).inc();
        self.set_held(vip, true);
    }

    /// This node released `vip` (logged as `released`).
    pub fn released(&self, vip: IpAddr) {
        self.moves.get_or_create(&[("direction", "released")]).inc();
        self.set_held(vip, false);
    }

    /// An announcement of `vip` completed (logged as `announced`).
    pub fn announced(&self, vip: IpAddr) {
        let family = if vip.is_ipv4() { "arp" } else { "na" };
        self.announcements
            .get_or_create(&[("family", family)])
            .inc();
    }

    /// `n` connections reset through `path`.
    pub fn reset(&self, path: ResetPath, n: u64) {
        self.resets
            .get_or_create(&[("path", path.label())])
            .inc_by(n);
    }

    pub fn reset_failed(&self) {
        self.reset_failures.inc();
    }

    /// Resets that failed as a whole, for `vip-agent status`.
    pub fn reset_failures(&self) -> u64 {
        self.reset_failures.get()
    }

    /// One poll's round trip to mysqld.
    pub fn polled(&self, took: Duration) {
        self.poll_duration.observe(took.as_secs_f64());
    }
}

/// The registry in the Prometheus text format (version 0.0.4), as the endpoint serves it.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail; an encoder error would only cut the text short.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
    text
}

#[cfg(test)]
mod tests;
