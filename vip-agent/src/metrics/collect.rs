//! Series read at scrape time from what others already count, so nothing counts twice:
//! the peer server's atomic counters, and the guard's per-VIP counters in the kernel.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tracing::warn;

use crate::datapath::reader::MapReader;
use crate::peer::server::{Reject, Stats};

type Result = std::result::Result<(), std::fmt::Error>;

/// `peer_rejected_frames{reason}` (every [`Reject`], `unauthenticated` being the
/// authentication failures) and `peer_requests{outcome}`, from the peer server's
/// [`Stats`].
#[derive(Debug)]
pub struct PeerCollector {
    stats: Arc<Stats>,
}

impl PeerCollector {
    pub fn new(stats: Arc<Stats>) -> PeerCollector {
        PeerCollector { stats }
    }
}

impl Collector for PeerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        counters(
            &mut encoder,
            "peer_rejected_frames",
            "Connections to the peer port dropped unserved, by reason (unauthenticated: \
             the MAC did not match the key)",
            Reject::ALL.map(|r| ([("reason", r.as_str())], self.stats.rejected(r))),
        )?;
        counters(
            &mut encoder,
            "peer_requests",
            "Authenticated peer requests: answered (served), or not answered in time \
             (unanswered)",
            [
                ([("outcome", "served")], self.stats.served()),
                ([("outcome", "unanswered")], self.stats.unanswered()),
            ],
        )
    }
}

/// The guard's counters and the tracked connections per VIP in the programs' table,
/// read from the kernel maps at each scrape (see [`MapReader`] for why there).
#[derive(Debug)]
pub struct GuardCollector {
    reader: MapReader,
}

impl GuardCollector {
    pub fn new(reader: MapReader) -> GuardCollector {
        GuardCollector { reader }
    }
}

impl Collector for GuardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        let vips = match self.reader.vips() {
            Ok(vips) => vips,
            Err(e) => {
                // The scrape goes on without these series; the next one tries again.
                warn!(
                    event = "metrics",
                    "could not read the guard's counters: {e:#}"
                );
                return Ok(());
            }
        };
        let by_vip = |f: fn(&crate::datapath::engine::VipDatapath) -> u64| {
            vips.iter()
                .map(move |v| ([("vip", v.vip.to_string())], f(v)))
                .collect::<Vec<_>>()
        };
        if self.reader.guarding() {
            counters(
                &mut encoder,
                "guard_packets",
                "IP packets to the VIP seen by the guard on vip.nic, in every state",
                by_vip(|v| v.packets),
            )?;
            counters(
                &mut encoder,
                "guard_bytes",
                "Bytes of those packets (Ethernet frame lengths)",
                by_vip(|v| v.bytes),
            )?;
            let actions = vips.iter().flat_map(|v| {
                let vip = v.vip.to_string();
                [
                    ("rst_sent", v.rst_sent),
                    ("dropped", v.dropped),
                    ("neigh_dropped", v.neigh_dropped),
                ]
                .map(|(action, n)| ([("vip", vip.clone()), ("action", action.to_string())], n))
            });
            counters(
                &mut encoder,
                "guard_released_packets",
                "Packets to a released VIP within its guard window, by what the guard did: \
                 answered with a RST (rst_sent), dropped (dropped), or an ARP request / \
                 neighbour solicitation left unanswered (neigh_dropped)",
                actions.collect::<Vec<_>>(),
            )?;
            gauges(
                &mut encoder,
                "guard_active",
                "1 while the guard answers the stale clients of this released VIP (or of \
                 a VIP held past its lease in the kernel)",
                vips.iter().map(|v| {
                    let active =
                        (v.state == "released" && v.guard_left_ms > 0) || v.state == "lease over";
                    ([("vip", v.vip.to_string())], i64::from(active))
                }),
            )?;
        }
        if self.reader.tracking() {
            gauges(
                &mut encoder,
                "tracked_connections",
                "TCP connections through the VIP the tracker records now",
                vips.iter()
                    .map(|v| ([("vip", v.vip.to_string())], v.tracked as i64)),
            )?;
        }
        Ok(())
    }
}

/// One counter family (`<name>_total`); nothing at all when it has no series.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> Result {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut family =
        encoder.encode_descriptor(name, &format!("{help}."), None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One gauge family; nothing at all when it has no series.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, i64)>,
) -> Result {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut family =
        encoder.encode_descriptor(name, &format!("{help}."), None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
