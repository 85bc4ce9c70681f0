//! The kernel side of the loop: which configured VIPs are bound, and acting on the
//! difference with what this node should hold. Releases come before binds, so a VIP
//! moving between two of this node's roles is never held twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::Result;
use tracing::{error, info, warn};

use super::Agent;
use super::decide::{self, ReadVips, WriteVip};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::VipConfig;
use crate::control::LastAnnouncement;
use crate::datapath::engine::Datapath;
use crate::datapath::vip_table::Role;
use crate::datapath::{Target, sock_destroy};
use crate::metrics::Metrics;
use crate::metrics::ResetPath;
use crate::net::announce::{self, Announcement};

impl Agent {
    /// The configured VIPs bound on the NIC now.
    pub(super) async fn bound(&self) -> Result<BTreeSet<IpAddr>> {
        let on_nic = self.addrs.list(&self.cfg.vip.nic).await?;
        Ok(self
            .cfg
            .vip
            .all_vips()
            .filter(|vip| on_nic.iter().any(|b| b.addr == *vip))
            .collect())
    }

    /// Makes the kernel match what this node should hold.
    pub(super) async fn reconcile(&mut self) -> Result<()> {
        let Some(status) = self.status.clone() else {
            return Ok(());
        };
        if !self.cfg.vip.enable {
            return Ok(());
        }
        let bound = self.bound().await?;
        let first_look = self.seen_bound.is_none();
        let (mut want, mut drop) = (BTreeSet::new(), BTreeSet::new());
        if let Some(w) = self.cfg.vip.write_vip {
            match decide::write_vip(&status) {
                // On the primary, only once no other agent can still hold it.
                WriteVip::Hold if self.coord.write_cleared || bound.contains(&w) => {
                    want.insert(w);
                }
                WriteVip::Hold | WriteVip::Keep => {}
                WriteVip::Release => {
                    drop.insert(w);
                }
            }
        }
        let read: BTreeSet<IpAddr> = self.cfg.vip.read_vips.iter().copied().collect();
        match decide::read_vips(&status, self.coord.placement.as_ref()) {
            ReadVips::Hold(share) => {
                want.extend(share.intersection(&read));
                drop.extend(bound.intersection(&read).filter(|v| !share.contains(v)));
            }
            // Kept as they are; on the first look they are adopted (and announced).
            ReadVips::Keep => want.extend(bound.intersection(&read)),
            ReadVips::ReleaseAll => {
                drop.extend(bound.intersection(&read));
                // This member is out of the group, so the placement it last got is
                // stale: back in the group, it waits for the primary's next one instead
                // of binding VIPs that were moved away meanwhile.
                self.coord.placement = None;
            }
        }
        let reason = status.to_string();
        let result = self.act(&bound, &want, &drop, first_look, &reason).await;
        // What is bound now follows from what was done; only after a failure is the NIC
        // listed again (a second netlink dump on every poll would be wasted).
        let now: BTreeSet<IpAddr> = if result.is_ok() {
            bound.difference(&drop).chain(&want).copied().collect()
        } else {
            self.bound().await.unwrap_or(bound)
        };
        for vip in self.cfg.vip.all_vips() {
            self.metrics.set_held(vip, now.contains(&vip));
        }
        self.seen_bound = Some(now);
        result
    }

    async fn act(
        &mut self,
        bound: &BTreeSet<IpAddr>,
        want: &BTreeSet<IpAddr>,
        drop: &BTreeSet<IpAddr>,
        first_look: bool,
        reason: &str,
    ) -> Result<()> {
        for &vip in drop.intersection(bound) {
            self.unbind(vip, reason).await?;
            if self.cfg.vip.write_vip == Some(vip) {
                self.write_lost().await;
            }
        }
        for &vip in want.difference(bound) {
            self.bind(vip).await?;
        }
        if first_look {
            for &vip in want.intersection(bound) {
                info!(event = "adopted", vip = %vip, nic = %self.cfg.vip.nic, "{} is already bound here; adopting it", self.kind(vip));
                self.datapath.mark_held(vip, self.role(vip));
                self.announce(vip);
            }
            // Connections made before the agent started are tracked from now on.
            self.datapath.seed();
        }
        Ok(())
    }

    /// After this node lost the write VIP (its own view, or the new primary's release
    /// request; not a reload removing it): `vip.kill_connections_on_demotion`
    /// (greatdb_ha_mgr_exit_primary_kill_connection_mode) resets every client of mysqld's
    /// port, whichever address it came in through, so no session of the old primary
    /// lives on.
    pub(super) async fn write_lost(&mut self) {
        if !self.cfg.vip.kill_connections_on_demotion {
            return;
        }
        let port = self.cfg.datapath.client_port;
        let n = self.reset_target(Target::Port(port)).await;
        info!(
            event = "reset",
            port,
            connections = n,
            reason = "kill_connections_on_demotion",
            "demoted: reset {n} client connection(s) of port {port}"
        );
    }

    async fn bind(&mut self, vip: IpAddr) -> Result<()> {
        let nic = self.cfg.vip.nic.clone();
        // First, so the tracker records the VIP's first connections and the guard stops
        // answering for it as a released VIP.
        self.datapath.mark_held(vip, self.role(vip));
        self.addrs
            .bind(&nic, vip, self.cfg.vip.prefix, &self.cfg.vip.label)
            .await?;
        let kind = self.kind(vip);
        if self.seen_bound.as_ref().is_some_and(|s| s.contains(&vip)) {
            // Not a move: the VIP never left this node as far as the group knows (the
            // held gauge is set by `reconcile`).
            warn!(event = "readded", vip = %vip, nic = %nic, "{kind} {vip} was deleted outside the agent; re-added it");
        } else {
            self.metrics.bound(vip);
            info!(event = "bound", vip = %vip, nic = %nic, prefix = self.cfg.vip.prefix, "bound {kind} {vip}");
        }
        self.announce(vip);
        Ok(())
    }

    pub(super) async fn unbind(&mut self, vip: IpAddr, reason: &str) -> Result<()> {
        // Timelines (`cargo xtask lab`) date the loss of the VIP from this.
        let started = std::time::Instant::now();
        // A released VIP must not be announced any more.
        self.announcers.stop(vip);
        // The guard first: from now on a client still sending here gets a RST, and ARP /
        // NS for the VIP go unanswered. Then its clients get a reset instead of hanging
        // until TCP gives up: before the unbind, and once more after it for a connection
        // that arrived in between (none can arrive once the address is gone).
        self.datapath.mark_released(vip, self.role(vip));
        let before = self.reset_connections(vip).await;
        self.addrs
            .unbind(&self.cfg.vip.nic, vip, self.cfg.vip.prefix)
            .await?;
        let after = self.reset_connections(vip).await;
        if before + after > 0 {
            info!(event = "reset", vip = %vip, connections = before + after, "reset {} connection(s) through {vip}", before + after);
        }
        if let Some(seen) = &mut self.seen_bound {
            seen.remove(&vip);
        }
        // Entries whose guard window is over go now.
        self.datapath.prune();
        self.metrics.released(vip);
        let took = started.elapsed();
        info!(
            event = "released",
            vip = %vip,
            nic = %self.cfg.vip.nic,
            reason = %reason,
            took_us = took.as_micros() as u64,
            "released {} {vip} in {:.1} ms",
            self.kind(vip),
            took.as_secs_f64() * 1000.0
        );
        Ok(())
    }

    /// Destroys every TCP connection whose local address is `vip`, in this agent's
    /// network namespace.
    async fn reset_connections(&mut self, vip: IpAddr) -> usize {
        self.reset_target(Target::Local(vip, None)).await
    }

    async fn reset_target(&mut self, target: Target) -> usize {
        reset_target(&mut self.datapath, &self.metrics, target).await
    }

    fn role(&self, vip: IpAddr) -> Role {
        role_of(&self.cfg.vip, vip)
    }

    /// "the write VIP" or "read VIP", for log lines.
    fn kind(&self, vip: IpAddr) -> &'static str {
        kind_of(&self.cfg.vip, vip)
    }

    /// Re-announces every configured VIP bound here (force-rebind, resync).
    pub(super) async fn reannounce_all(&mut self, read_only: bool) -> Result<usize> {
        let bound = self.bound().await?;
        let mut n = 0;
        for vip in bound {
            if read_only && self.cfg.vip.write_vip == Some(vip) {
                continue;
            }
            self.announce(vip);
            n += 1;
        }
        Ok(n)
    }

    /// Announces `vip` in the background, so the loop goes on meanwhile.
    pub(super) fn announce(&mut self, vip: IpAddr) {
        self.announcers.announce(&self.cfg.vip, vip);
    }
}

/// The role the programs record for `vip`.
pub(crate) fn role_of(cfg: &VipConfig, vip: IpAddr) -> Role {
    if cfg.write_vip == Some(vip) {
        Role::Write
    } else {
        Role::Read
    }
}

/// "the write VIP" or "read VIP", for log lines.
pub(crate) fn kind_of(cfg: &VipConfig, vip: IpAddr) -> &'static str {
    if cfg.write_vip == Some(vip) {
        "the write VIP"
    } else {
        "read VIP"
    }
}

/// The announcement tasks, one per VIP at most: a new announcement of a VIP replaces
/// the one still running, and a released VIP's is stopped.
pub(crate) struct Announcers {
    tasks: BTreeMap<IpAddr, JoinHandle<()>>,
    /// Where a finished announcement is reported.
    pub done: mpsc::UnboundedSender<LastAnnouncement>,
}

impl Announcers {
    pub fn new(done: mpsc::UnboundedSender<LastAnnouncement>) -> Announcers {
        Announcers {
            tasks: BTreeMap::new(),
            done,
        }
    }

    /// Sends `vip`'s gratuitous ARPs or unsolicited NAs from a task; a success is logged
    /// and reported on `done`.
    pub fn announce(&mut self, cfg: &VipConfig, vip: IpAddr) {
        self.stop(vip);
        let a = Announcement {
            nic: cfg.nic.clone(),
            addr: vip,
            count: cfg.announce_count,
            interval: cfg.announce_interval,
        };
        let kind = kind_of(cfg, vip);
        let done = self.done.clone();
        let task = tokio::spawn(async move {
            match announce::announce(&a).await {
                Ok(sent) => {
                    info!(event = "announced", vip = %a.addr, nic = %a.nic, count = sent, "announced {kind} {}", a.addr);
                    let _ = done.send(LastAnnouncement {
                        vip: a.addr,
                        at: super::now_text(),
                        count: sent,
                    });
                }
                Err(e) => {
                    error!(event = "announce_failed", vip = %a.addr, "could not announce: {e:#}")
                }
            }
        });
        self.tasks.insert(vip, task);
    }

    /// A VIP this node may no longer hold must not be announced any more.
    pub fn stop(&mut self, vip: IpAddr) {
        if let Some(task) = self.tasks.remove(&vip) {
            task.abort();
        }
    }
}

pub(crate) async fn reset_target(
    datapath: &mut Datapath,
    metrics: &Metrics,
    target: Target,
) -> usize {
    match datapath.iter_reset(target) {
        Some(Ok(n)) => {
            metrics.reset(ResetPath::Iter, n);
            return n as usize;
        }
        Some(Err(e)) => {
            error!(
                event = "reset_failed",
                ?target,
                "the iter/tcp reset failed, using netlink SOCK_DESTROY: {e:#}"
            );
            metrics.reset_failed();
        }
        None => {}
    }
    match netlink_reset(target).await {
        Ok(n) => {
            metrics.reset(ResetPath::Netlink, n as u64);
            n
        }
        Err(()) => {
            metrics.reset_failed();
            0
        }
    }
}

/// Resets with netlink SOCK_DESTROY (it blocks, so on a blocking thread; same network
/// namespace). Every failure is logged here; `Err` when the reset failed as a whole.
pub(super) async fn netlink_reset(target: Target) -> Result<usize, ()> {
    match tokio::task::spawn_blocking(move || sock_destroy::reset(target)).await {
        Ok(Ok(reset)) => {
            for (conn, e) in &reset.failed {
                error!(
                    event = "reset_failed",
                    ?target,
                    "could not reset {conn}: {e}"
                );
            }
            Ok(reset.destroyed)
        }
        Ok(Err(e)) => {
            error!(
                event = "reset_failed",
                ?target,
                "could not reset the connections: {e}"
            );
            Err(())
        }
        Err(e) => {
            error!(
                event = "reset_failed",
                ?target,
                "the reset task failed: {e}"
            );
            Err(())
        }
    }
}
