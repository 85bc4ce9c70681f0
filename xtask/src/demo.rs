//! `cargo xtask demo`: the failover demo. A 3-member simulated group in the lab, one
//! vip-agent beside each member, and a client that connects through the write VIP.
//! It crashes the primary, then does a planned switchover, and prints a timeline of each
//! in milliseconds: the view change each agent saw, the address bound, the announcements
//! sent, and the client's first new connection that reached the new primary.

use crate::cmd;
use anyhow::{Result, bail};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use vip_tests::cluster::{Cluster, VipSettings};
use vip_tests::lab::Capture;

/// Shorter than MySQL's defaults (about 5 s each) so the demo stays quick; the agents'
/// reaction does not depend on them.
const UNREACHABLE_AFTER: Duration = Duration::from_millis(1000);
const EXPEL_AFTER: Duration = Duration::from_millis(1000);
const SETTLE: Duration = Duration::from_secs(20);

pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and binds addresses: run it as root");
    }
    let agent_bin = cmd::agent_binary()?;
    let runtime = cmd::runtime()?;
    runtime.block_on(demo(agent_bin))
}

async fn demo(agent_bin: PathBuf) -> Result<()> {
    let settings = VipSettings::default();
    let vip = settings.write_vip;
    println!("Lab: hosts h1-h3 (198.51.100.11-13), client c1, all on one bridge, in namespaces.");
    println!("Group: a simulated single-primary MGR group, one member per host; h1 is primary.");
    println!("Agents: vip-agent on every host, write VIP {vip}/24 on eth0 (label eth0:0).\n");
    let cluster = Cluster::start(3, settings, agent_bin, |g| {
        g.unreachable_after(UNREACHABLE_AFTER)
            .expel_after(EXPEL_AFTER)
    })?;
    cluster.wait_sole_holder(0, SETTLE)?;
    let uuid = cluster
        .client_server_uuid(vip, Duration::from_secs(2))
        .await?;
    println!(
        "c1 connects to {vip}:3306 and reaches {} (h1).\n",
        short(&uuid)
    );

    println!(
        "== 1. h1's mysqld crashes (the group marks it UNREACHABLE after {} ms, expels it {} ms later, elects h2)",
        UNREACHABLE_AFTER.as_millis(),
        EXPEL_AFTER.as_millis()
    );
    let capture = cluster.lab.capture()?;
    let t0 = SystemTime::now();
    cluster.group.crash(0).await?;
    let reached = cluster.wait_client_reaches(vip, 1, SETTLE).await?;
    cluster.wait_sole_holder(1, SETTLE)?;
    timeline(&cluster, t0, reached, &capture, vip, 1)?;

    println!("\n== 2. planned switchover to h3 (group_replication_set_as_primary)");
    capture.clear();
    let t0 = SystemTime::now();
    cluster.group.switchover(2)?;
    let reached = cluster.wait_client_reaches(vip, 2, SETTLE).await?;
    cluster.wait_sole_holder(2, SETTLE)?;
    timeline(&cluster, t0, reached, &capture, vip, 2)?;

    println!("\nDone: the lab, its namespaces and the agents are removed now.");
    Ok(())
}

fn short(uuid: &str) -> &str {
    uuid.rsplit('-').next().unwrap_or(uuid)
}

fn ms_since(t0: SystemTime, t: SystemTime) -> i64 {
    match t.duration_since(t0) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Prints what happened after `t0`, from the agents' logs, the capture and the client.
fn timeline(
    cluster: &Cluster,
    t0: SystemTime,
    reached: SystemTime,
    capture: &Capture,
    vip: IpAddr,
    new_primary: usize,
) -> Result<()> {
    let count = cluster.settings.announce_count as usize;
    let announced = capture
        .wait_until(Duration::from_secs(5), |seen| {
            seen.iter()
                .filter(|a| a.ip == vip && a.is_unsolicited())
                .count()
                >= count
        })
        .unwrap_or_else(|_| capture.announcements());
    // The agent logs "announced" after its last announcement left; wait for that line too.
    vip_tests::lab::wait_for(Duration::from_secs(5), || {
        cluster
            .events(new_primary)
            .iter()
            .any(|e| e.at >= t0 && e.event == "announced")
    });
    let mut lines: Vec<(i64, String)> = Vec::new();
    for i in 0..3 {
        for e in cluster.events(i) {
            if e.at < t0 || e.event == "start" {
                continue;
            }
            lines.push((ms_since(t0, e.at), format!("h{}  {}", i + 1, e.message)));
        }
    }
    let ours: Vec<_> = announced
        .iter()
        .filter(|a| a.ip == vip && a.is_unsolicited())
        .collect();
    for (which, a) in [("first", ours.first()), ("last", ours.last())] {
        let Some(a) = a else { continue };
        let at = SystemTime::now() - a.at.elapsed();
        lines.push((
            ms_since(t0, at),
            format!(
                "bridge  {which} announcement for {vip} seen, from {} (port {})",
                a.src_mac, a.port
            ),
        ));
    }
    lines.push((
        ms_since(t0, reached),
        format!(
            "c1  a new connection to {vip}:3306 reaches h{}",
            new_primary + 1
        ),
    ));
    lines.sort_by_key(|(ms, _)| *ms);
    for (ms, line) in &lines {
        println!("  +{ms:>6} ms  {line}");
    }
    println!(
        "  announcements captured on the bridge: {} (configured: {count}); holders now: h{}",
        ours.len(),
        new_primary + 1
    );
    Ok(())
}
