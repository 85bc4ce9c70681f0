//! Re-reading the config file (SIGHUP, `vip-agent reload`). All or nothing: a file with
//! any problem is rejected whole, with every problem listed, and the running config stays
//! in force. A valid file applies without a restart: VIPs removed from it are released,
//! then the placement is planned again with the fewest moves from what is held.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use tracing::{info, warn};

use super::{Agent, load_key};
use crate::config::{self, Config};
use crate::mgr;

/// The settings that only take effect at a restart, when `new` changes them. They name
/// things the running agent is built on: its identity, the sockets it listens on, and
/// how its addresses are recognised on the NIC.
pub fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key| {
        if changed {
            keys.push(key);
        }
    };
    check(old.instance != new.instance, "instance");
    check(old.control.socket != new.control.socket, "control.socket");
    check(old.peer.port != new.peer.port, "peer.port");
    check(old.peer.listen != new.peer.listen, "peer.listen");
    check(
        old.peer.max_connections_per_host != new.peer.max_connections_per_host,
        "peer.max_connections_per_host",
    );
    check(
        old.peer.max_connections != new.peer.max_connections,
        "peer.max_connections",
    );
    check(old.vip.nic != new.vip.nic, "vip.nic");
    check(old.vip.label != new.vip.label, "vip.label");
    check(old.vip.prefix != new.vip.prefix, "vip.prefix");
    // The endpoint is bound once, at start (adding or removing [metrics] included).
    check(old.metrics != new.metrics, "metrics.listen");
    // The datapath is loaded and attached once, at start.
    let (o, n) = (&old.datapath, &new.datapath);
    check(o.guard != n.guard, "datapath.guard");
    check(o.xdp_mode != n.xdp_mode, "datapath.xdp_mode");
    check(o.track != n.track, "datapath.track");
    check(
        o.tracked_connections != n.tracked_connections,
        "datapath.tracked_connections",
    );
    check(o.require_reset != n.require_reset, "datapath.require_reset");
    keys
}

/// The settings `new` changes, for the log and the operator.
pub fn changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.vip, &new.vip);
    [
        (old.mysql != new.mysql, "mysql"),
        (o.enable != n.enable, "vip.enable"),
        (o.write_vip != n.write_vip, "vip.write_vip"),
        (o.read_vips != n.read_vips, "vip.read_vips"),
        (o.floating_type != n.floating_type, "vip.floating_type"),
        (o.announce_count != n.announce_count, "vip.announce_count"),
        (
            o.announce_interval != n.announce_interval,
            "vip.announce_interval_ms",
        ),
        (
            o.reannounce_interval != n.reannounce_interval,
            "vip.reannounce_interval_ms",
        ),
        (o.gateway != n.gateway, "vip.gateway"),
        (
            o.kill_connections_on_demotion != n.kill_connections_on_demotion,
            "vip.kill_connections_on_demotion",
        ),
        (old.peer.key_file != new.peer.key_file, "peer.key_file"),
        (old.peer.allow != new.peer.allow, "peer.allow"),
        (old.peer.timeout != new.peer.timeout, "peer.timeout_ms"),
        (
            old.peer.switchover_timeout != new.peer.switchover_timeout,
            "peer.switchover_timeout_ms",
        ),
        (
            old.peer.resync_interval != new.peer.resync_interval,
            "peer.resync_interval_ms",
        ),
        (
            old.datapath.guard_window != new.datapath.guard_window,
            "datapath.guard_window_ms",
        ),
        (
            old.datapath.client_port != new.datapath.client_port,
            "datapath.client_port",
        ),
    ]
    .into_iter()
    .filter_map(|(changed, key)| changed.then_some(key))
    .collect()
}

impl Agent {
    /// Reloads the config file. `Ok` says what changed; `Err` why nothing did.
    pub(super) async fn reload(&mut self) -> Result<String, String> {
        let path = self.config_path.clone();
        let new = config::load(&path).map_err(|errors| {
            let text = format!(
                "{} is not valid; the running configuration stays in force:\n{errors}",
                path.display()
            );
            warn!(event = "reload_rejected", "{text}");
            text
        })?;
        let fixed = restart_only(&self.cfg, &new);
        if !fixed.is_empty() {
            let text = format!(
                "{} changes {}, which only take effect at a restart (systemctl restart); \
                 nothing was changed. Restart the agent, or put them back and reload.",
                path.display(),
                fixed.join(", ")
            );
            warn!(event = "reload_rejected", "{text}");
            return Err(text);
        }
        // Everything that can fail is prepared before anything changes.
        let key = load_key(&new).map_err(|e| format!("{e:#}; nothing was changed"))?;
        let target = mgr::MysqlTarget::from_config(&new.mysql)
            .map_err(|e| format!("{e:#}; nothing was changed"))?;
        let mut keys = changed(&self.cfg, &new);
        if &target != self.poller.target() {
            if !keys.contains(&"mysql") {
                keys.push("mysql.password_file (its content)");
            }
            self.poller = mgr::Poller::new(target);
        }
        self.key.send_replace(Arc::new(key));
        self.allow
            .send_replace(super::allow_rule(&new, &self.hosts));
        if new.mysql.poll_interval != self.cfg.mysql.poll_interval {
            self.ticker = tokio::time::interval(new.mysql.poll_interval);
            self.ticker
                .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let kept: BTreeSet<IpAddr> = new.vip.all_vips().collect();
        let removed: Vec<IpAddr> = self
            .cfg
            .vip
            .all_vips()
            .filter(|v| !kept.contains(v))
            .collect();
        let bound = self.bound().await.unwrap_or_default();
        self.datapath.set_guard_window(new.datapath.guard_window);
        self.cfg = new;
        self.metrics.set_vips(&self.cfg.vip);
        for vip in removed.into_iter().filter(|v| bound.contains(v)) {
            if let Err(e) = self
                .unbind(vip, "removed from the config by a reload")
                .await
            {
                warn!(event = "reconcile_failed", "could not release {vip}: {e:#}");
            }
        }
        self.coord.replan = true;
        self.step().await;
        let what = if keys.is_empty() {
            "nothing changed".to_string()
        } else {
            format!("applied {}", keys.join(", "))
        };
        info!(event = "reloaded", changed = %keys.join(","), "reloaded {}: {what}", path.display());
        Ok(format!("reloaded {}: {what}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        config::parse(
            r#"
[mysql]
host = "127.0.0.1"
user = "vip"
password_file = "/etc/vip-agent/pw"
[vip]
write_vip = "198.51.100.50"
read_vips = ["198.51.100.61", "198.51.100.62"]
prefix = 24
nic = "eth0"
[peer]
key_file = "/etc/vip-agent/peer.key"
"#,
        )
        .unwrap()
    }

    #[test]
    fn vip_lists_and_floating_type_apply_online() {
        let old = base();
        let mut new = base();
        new.vip.read_vips.push("198.51.100.63".parse().unwrap());
        new.vip.floating_type = config::FloatingType::ToAnotherSecondary;
        new.vip.announce_count = 7;
        assert!(restart_only(&old, &new).is_empty());
        assert_eq!(
            changed(&old, &new),
            ["vip.read_vips", "vip.floating_type", "vip.announce_count"]
        );
    }

    #[test]
    fn the_datapath_loads_once_but_its_window_and_port_apply_online() {
        let old = base();
        let mut new = base();
        new.datapath.guard_window = std::time::Duration::from_secs(5);
        new.datapath.client_port = 3307;
        assert!(restart_only(&old, &new).is_empty());
        assert_eq!(
            changed(&old, &new),
            ["datapath.guard_window_ms", "datapath.client_port"]
        );
        new.datapath.guard = false;
        new.datapath.xdp_mode = config::XdpMode::Native;
        assert_eq!(
            restart_only(&old, &new),
            ["datapath.guard", "datapath.xdp_mode"]
        );
    }

    #[test]
    fn the_nic_and_the_ports_need_a_restart() {
        let old = base();
        let mut new = base();
        new.vip.nic = "eth1".into();
        new.peer.port = 33063;
        new.instance = "other".into();
        new.metrics = Some(config::MetricsConfig {
            listen: "127.0.0.1:9748".parse().unwrap(),
        });
        assert_eq!(
            restart_only(&old, &new),
            ["instance", "peer.port", "vip.nic", "metrics.listen"]
        );
    }
}
