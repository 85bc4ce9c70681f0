//! The agent: one loop that owns the state and reconciles the kernel with the group.
//!
//! Every poll interval (and at once when an address on the NIC changes) it reads the
//! local mysqld's view, decides what this node should hold ([`decide`]), reads what the
//! kernel actually has, and acts on the difference: bind then announce, or unbind. The
//! kernel is the record of what is held, so an agent restart adopts a VIP that is already
//! bound instead of removing and re-adding it, and a VIP deleted by hand is re-added.
//!
//! Log events carry an `event` field (`view`, `bound`, `announced`, `released`,
//! `adopted`, `readded`) so a timeline can be read back from the JSON logs.

pub mod decide;

use std::net::IpAddr;

use anyhow::{Context, Result};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::mgr::{self, NodeStatus};
use crate::net::addr::Addrs;
use crate::net::announce::{self, Announcement};
use decide::WriteVip;

/// The one owner of the agent's state.
pub struct Agent {
    cfg: Config,
    poller: mgr::Poller,
    addrs: Addrs,
    /// The last status, to log only changes.
    last_status: Option<String>,
    /// Whether the write VIP was bound the last time we looked (to tell a VIP deleted by
    /// hand from one we never had).
    had_write_vip: Option<bool>,
    announcer: Option<JoinHandle<()>>,
    /// The last reconcile error logged.
    last_error: Option<String>,
}

impl Agent {
    pub async fn new(cfg: Config) -> Result<Agent> {
        let poller = mgr::Poller::new(mgr::MysqlTarget::from_config(&cfg.mysql)?);
        let addrs = Addrs::new().await.context("opening a netlink socket")?;
        Ok(Agent {
            cfg,
            poller,
            addrs,
            last_status: None,
            had_write_vip: None,
            announcer: None,
            last_error: None,
        })
    }

    /// Runs until SIGTERM or Ctrl-C. The VIPs stay where they are when the agent stops:
    /// a restart or upgrade of the agent must not interrupt clients.
    pub async fn run(mut self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut ticker = tokio::time::interval(self.cfg.mysql.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut addr_events = self.addrs.watch(&self.cfg.vip.nic).await?;
        let mut status = None;
        info!(
            event = "start",
            instance = %self.cfg.instance,
            nic = %self.cfg.vip.nic,
            write_vip = ?self.cfg.vip.write_vip,
            "vip-agent started"
        );
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = ticker.tick() => {
                    let s = self.poller.poll().await;
                    self.observe(&s);
                    status = Some(s);
                }
                Some(_) = addr_events.recv() => {}
            }
            if let Some(s) = &status {
                let result = self.reconcile(s).await;
                self.report(result);
            }
        }
        info!(
            event = "stop",
            "stopping; the VIPs stay in place (use `vip-agent release` to remove them)"
        );
        Ok(())
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
        let text = status.to_string();
        if self.last_status.as_deref() == Some(text.as_str()) {
            return;
        }
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

    async fn reconcile(&mut self, status: &NodeStatus) -> Result<()> {
        let Some(vip) = self.cfg.vip.write_vip else {
            return Ok(());
        };
        if !self.cfg.vip.enable {
            return Ok(());
        }
        let nic = self.cfg.vip.nic.clone();
        let bound = self.addrs.list(&nic).await?.iter().any(|a| a.addr == vip);
        let first_look = self.had_write_vip.is_none();
        let had = self.had_write_vip.replace(bound);
        match (decide::write_vip(status), bound) {
            (WriteVip::Hold, false) => {
                let prefix = self.cfg.vip.prefix;
                self.addrs
                    .bind(&nic, vip, prefix, &self.cfg.vip.label)
                    .await?;
                self.had_write_vip = Some(true);
                if had == Some(true) {
                    warn!(event = "readded", vip = %vip, nic = %nic, "the write VIP was deleted outside the agent; re-added it");
                } else {
                    info!(event = "bound", vip = %vip, nic = %nic, prefix, "bound the write VIP");
                }
                self.announce(vip);
            }
            (WriteVip::Hold, true) if first_look => {
                info!(event = "adopted", vip = %vip, nic = %nic, "the write VIP is already bound here; adopting it");
                self.announce(vip);
            }
            (WriteVip::Release, true) => {
                self.stop_announcing();
                self.addrs.unbind(&nic, vip, self.cfg.vip.prefix).await?;
                self.had_write_vip = Some(false);
                info!(event = "released", vip = %vip, nic = %nic, reason = %status, "released the write VIP");
            }
            _ => {}
        }
        Ok(())
    }

    /// Announces `vip` in the background, so polling goes on meanwhile.
    fn announce(&mut self, vip: IpAddr) {
        self.stop_announcing();
        let a = Announcement {
            nic: self.cfg.vip.nic.clone(),
            addr: vip,
            count: self.cfg.vip.announce_count,
            interval: self.cfg.vip.announce_interval,
        };
        self.announcer = Some(tokio::spawn(async move {
            match announce::announce(&a).await {
                Ok(sent) => {
                    info!(event = "announced", vip = %a.addr, nic = %a.nic, count = sent, "announced the write VIP")
                }
                Err(e) => {
                    error!(event = "announce_failed", vip = %a.addr, "could not announce: {e:#}")
                }
            }
        }));
    }

    /// A released VIP must not be announced any more.
    fn stop_announcing(&mut self) {
        if let Some(task) = self.announcer.take() {
            task.abort();
        }
    }
}

/// `vip-agent release`: removes this instance's VIPs from the NIC, and its pins.
pub async fn release(cfg: &Config) -> Result<Vec<IpAddr>> {
    let addrs = Addrs::new().await.context("opening a netlink socket")?;
    let bound = addrs.list(&cfg.vip.nic).await?;
    let ours: Vec<IpAddr> = cfg
        .vip
        .write_vip
        .iter()
        .chain(cfg.vip.read_vips.iter())
        .copied()
        .filter(|vip| bound.iter().any(|b| b.addr == *vip))
        .collect();
    for vip in &ours {
        addrs.unbind(&cfg.vip.nic, *vip, cfg.vip.prefix).await?;
        info!(event = "released", vip = %vip, nic = %cfg.vip.nic, reason = "vip-agent release", "released");
    }
    crate::datapath::remove_pins(&cfg.instance)?;
    Ok(ours)
}
