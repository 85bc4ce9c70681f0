//! Failover scenarios in the lab (`cargo xtask lab SCENARIO`): one fault on a settled
//! cluster, observed from the outside the way a user would, and measured.
//!
//! Every run has a 3-host lab with the simulated group, one vip-agent per host, a client
//! holding idle connections through the VIP under test and probing it with new MySQL
//! sessions, a capture of the announcements on the bridge, and a watch of every
//! address change in the hosts' kernels. See [`Report`] for what is measured; a run is
//! `ok` only when no two hosts held the write VIP at once, the group settled into the
//! expected placement, a new session through the VIP reaches its holder, no connection
//! through a released VIP stayed usable or hung, the move was announced, and no agent
//! died or panicked.

pub mod echo;
pub mod placement;
pub mod probe;
mod report;
mod run;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

pub use report::{Report, summary};
pub use run::announcing;
use run::{Expect, Run, SETTLE};

use crate::cluster::VipSettings;
use crate::sim::{Endpoint, Plugin};

/// Every scenario, in the order `all` runs them.
pub const NAMES: &[&str] = &[
    "primary-crash",
    "switchover",
    "partition-minority-primary",
    "secondary-loss",
    "rejoin",
    "agent-restart",
    "mysqld-down",
    "mysqld-hang",
    "nic-flap",
    "vip-deleted",
    "ipv6-switchover",
];

/// How long the NIC stays down in `nic-flap`: well under the group's failure detection,
/// as a flapping cable or a bond failing over is.
const FLAP: Duration = Duration::from_millis(300);

const READ_VIPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 61),
    Ipv4Addr::new(198, 51, 100, 62),
];

/// Runs scenario `name` (secondary-loss runs once per floating type).
pub async fn run(name: &str, agent_bin: &Path) -> Result<Vec<Report>> {
    let one = |r: Result<Report>| r.map(|r| vec![r]);
    match name {
        "primary-crash" => one(primary_crash(agent_bin).await),
        "switchover" => one(switchover(agent_bin, v4()).await),
        "partition-minority-primary" => one(partition_minority_primary(agent_bin)),
        "secondary-loss" => Ok(vec![
            secondary_loss(agent_bin, "TO_PRIMARY").await?,
            secondary_loss(agent_bin, "TO_ANOTHER_SECONDARY").await?,
        ]),
        "rejoin" => one(rejoin(agent_bin).await),
        "agent-restart" => one(agent_restart(agent_bin)),
        "mysqld-down" => one(mysqld_down(agent_bin).await),
        "mysqld-hang" => one(mysqld_hang(agent_bin).await),
        "nic-flap" => one(nic_flap(agent_bin)),
        "vip-deleted" => one(vip_deleted(agent_bin)),
        "ipv6-switchover" => one(switchover(agent_bin, v6()).await),
        _ => bail!(
            "no scenario {name:?}; the scenarios are: all, {}",
            NAMES.join(", ")
        ),
    }
}

fn v4() -> VipSettings {
    VipSettings::default()
}

fn v6() -> VipSettings {
    VipSettings {
        write_vip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50)),
        prefix: 64,
        ..VipSettings::default()
    }
}

fn with_read_vips(floating_type: &str) -> VipSettings {
    VipSettings {
        read_vips: READ_VIPS.iter().map(|&v| IpAddr::V4(v)).collect(),
        floating_type: floating_type.to_owned(),
        ..VipSettings::default()
    }
}

/// mysqld on the primary is killed: the group sees it UNREACHABLE, expels it and elects
/// h2; h1's agent releases as soon as its mysqld refuses it.
async fn primary_crash(bin: &Path) -> Result<Report> {
    let s = v4();
    let mut run = Run::start("primary-crash", 3, s.clone(), s.write_vip, bin)?;
    run.fault("fault: mysqld on h1 (the primary) is killed")?;
    run.cluster.group.crash(0).await?;
    Ok(run.finish(Expect::MovesTo(1)))
}

/// group_replication_set_as_primary to h2: the old primary's agent lets go first, then
/// the new one binds, so there is never a moment with two owners.
async fn switchover(bin: &Path, s: VipSettings) -> Result<Report> {
    let name = if s.write_vip.is_ipv6() {
        "ipv6-switchover"
    } else {
        "switchover"
    };
    let mut run = Run::start(name, 3, s.clone(), s.write_vip, bin)?;
    run.fault("fault: group_replication_set_as_primary('h2')")?;
    run.cluster.group.switchover(1)?;
    Ok(run.finish(Expect::MovesTo(1)))
}

/// The network splits h1 (the primary) from h2 and h3; the client stays with the
/// majority. h1 loses quorum and must let go; the majority expels it and elects h2.
fn partition_minority_primary(bin: &Path) -> Result<Report> {
    let s = v4();
    let mut run = Run::start("partition-minority-primary", 3, s.clone(), s.write_vip, bin)?;
    run.fault("fault: network partition {h1} | {h2, h3, c1}")?;
    let lab = &run.cluster.lab;
    lab.partition(&[&[lab.host(0)], &[lab.host(1), lab.host(2), lab.client(0)]])?;
    run.cluster.group.partition(&[&[0], &[1, 2]])?;
    Ok(run.finish(Expect::MovesTo(1)))
}

/// mysqld on the secondary holding a read VIP is killed: its read VIP goes to the
/// primary (TO_PRIMARY) or to the other secondary (TO_ANOTHER_SECONDARY).
async fn secondary_loss(bin: &Path, floating_type: &str) -> Result<Report> {
    let s = with_read_vips(floating_type);
    let name = format!("secondary-loss/{floating_type}");
    let vip = s.read_vips[0];
    let mut run = Run::start(&name, 3, s, vip, bin)?;
    let victim = run.from;
    let expect = if floating_type == "TO_PRIMARY" {
        0
    } else {
        // The other secondary.
        3 - victim
    };
    run.fault(&format!(
        "fault: mysqld on h{} (a secondary holding {vip}) is killed",
        victim + 1
    ))?;
    run.cluster.group.crash(victim).await?;
    Ok(run.finish(Expect::MovesTo(expect)))
}

/// A secondary crashed and its read VIP moved; its mysqld comes back and rejoins
/// (OFFLINE → RECOVERING → ONLINE): one read VIP moves back to it, and only one (the
/// fewest moves that even out the load). Its agent must wait for the primary's new
/// placement, not bind what it held before the crash.
async fn rejoin(bin: &Path) -> Result<Report> {
    let s = with_read_vips("TO_ANOTHER_SECONDARY");
    let cluster = Run::cluster(3, s.clone(), bin, |g| g)?;
    cluster.wait(SETTLE, "each secondary to hold a read VIP", |c| {
        c.read_counts() == [0, 1, 1]
    })?;
    cluster.group.crash(1).await?;
    cluster.wait(SETTLE, "h3 to hold both read VIPs", |c| {
        c.read_counts() == [0, 0, 2]
    })?;
    // h3 keeps the first of its VIPs in read_vips order and gives up the second (the
    // planner's documented tie-break), so the second is the one that moves.
    let vip = s.read_vips[1];
    let mut run = Run::observe("rejoin", cluster, vip, 0)?;
    run.fault("fault: mysqld on h2 restarts and rejoins the group")?;
    run.cluster.group.restart(1).await?;
    run.cluster.group.rejoin(1)?;
    Ok(run.finish(Expect::MovesTo(1)))
}

/// The primary's agent is killed with SIGKILL and started again: nothing moves, no
/// connection is reset, the restarted agent adopts the VIP it finds bound.
fn agent_restart(bin: &Path) -> Result<Report> {
    let s = v4();
    let mut run = Run::start("agent-restart", 3, s.clone(), s.write_vip, bin)?;
    run.fault("fault: the agent on h1 (the primary) is killed with SIGKILL")?;
    run.kill_agent(0)?;
    run.note("fault: the agent on h1 starts again");
    run.cluster.restart_agent(0)?;
    Ok(run.finish(Expect::Stays))
}

/// mysqld on the primary shuts down cleanly: it leaves the group (an election at once,
/// no UNREACHABLE wait), then stops accepting connections.
async fn mysqld_down(bin: &Path) -> Result<Report> {
    let s = v4();
    let mut run = Run::start("mysqld-down", 3, s.clone(), s.write_vip, bin)?;
    run.fault("fault: mysqld on h1 (the primary) shuts down: leaves the group, then stops")?;
    run.cluster.group.set_plugin(0, Plugin::NotStarted)?;
    run.cluster.group.set_endpoint(0, Endpoint::Down).await?;
    Ok(run.finish(Expect::MovesTo(1)))
}

/// mysqld on the primary hangs (as under SIGSTOP or an I/O stall): it answers nothing,
/// and the group, hearing nothing from it, expels it and elects h2. The agent lets go
/// after `hung_after_polls` polls time out.
async fn mysqld_hang(bin: &Path) -> Result<Report> {
    let s = v4();
    let mut run = Run::start("mysqld-hang", 3, s.clone(), s.write_vip, bin)?;
    run.fault("fault: mysqld on h1 (the primary) hangs")?;
    run.cluster.group.set_endpoint(0, Endpoint::Hung).await?;
    run.cluster.group.expel(0)?;
    Ok(run.finish(Expect::MovesTo(1)))
}

/// The primary's NIC goes down and up again, shorter than the group's failure
/// detection: the VIP stays, and so do its connections.
fn nic_flap(bin: &Path) -> Result<Report> {
    let s = v4();
    let mut run = Run::start("nic-flap", 3, s.clone(), s.write_vip, bin)?;
    run.fault("fault: eth0 on h1 (the primary) goes down")?;
    run.cluster.host(0).nic_down()?;
    // The fault's length, not a wait for a condition.
    std::thread::sleep(FLAP);
    run.note("fault: eth0 on h1 comes back up");
    run.cluster.host(0).nic_up()?;
    Ok(run.finish(Expect::Stays))
}

/// Someone deletes the write VIP on the primary by hand: the agent binds it again and
/// announces it; connections through it survive.
fn vip_deleted(bin: &Path) -> Result<Report> {
    let s = v4();
    let cidr = format!("{}/{}", s.write_vip, s.prefix);
    let mut run = Run::start("vip-deleted", 3, s.clone(), s.write_vip, bin)?;
    run.fault(&format!("fault: `ip addr del {cidr} dev eth0` on h1"))?;
    run.cluster.host(0).del_addr(&cidr)?;
    Ok(run.finish(Expect::Rebound))
}
