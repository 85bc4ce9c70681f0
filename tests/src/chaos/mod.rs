//! `cargo xtask chaos`: random fault schedules against a 3-host cluster, with the
//! invariants checked the whole time.
//!
//! Run `i` of a campaign with seed `S` draws its schedule from seed `S + i`
//! ([`schedule::schedule`]): one to three faults (mysqld crash, switchover, partition
//! and heal, agent kill -9 and restart, mysqld hang, NIC flap, and netem loss and delay
//! when the kernel has sch_netem), each held for up to 3 s (a crash at least 2.2 s, past
//! the expel) and then undone. Every run
//! starts from the same state (h1 primary, every member ONLINE, placement settled), so
//! `--runs 1 --seed S+i` replays it.
//!
//! Checked, per run:
//! - from the kernels' address notifications, continuously: no two hosts ever hold the
//!   write VIP at once (the same for read VIPs is reported as `read_dual_owner_ms`);
//! - after it settles: every read VIP held exactly once by an ONLINE member and the
//!   write VIP by the primary ([`crate::scenario::placement`]);
//! - no connection through a released VIP is left open (echoing or hanging);
//! - no agent panicked or exited.

pub mod schedule;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cluster::{Cluster, VipSettings};
use crate::lab::AddrWatch;
use crate::scenario::echo::{EchoServers, Held};
use crate::scenario::placement;
use crate::sim::{Endpoint, MemberState};
use schedule::{Fault, Step};

const HOSTS: usize = 3;
/// The group's failure detection, as in the scenarios.
const UNREACHABLE_AFTER: Duration = Duration::from_millis(1000);
const EXPEL_AFTER: Duration = Duration::from_millis(1000);
/// How long the group gets to heal between steps and to settle at the end.
const SETTLE: Duration = Duration::from_secs(30);
const HELD: usize = 3;

/// One run's result (one JSON line).
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub seed: u64,
    pub ok: bool,
    pub steps: Vec<String>,
    pub failures: Vec<String>,
    pub dual_owner_ms: f64,
    pub read_dual_owner_ms: f64,
    pub stale_conns: usize,
    pub took_ms: u64,
}

impl Outcome {
    /// The JSON line.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The cluster a campaign runs on, rebuilt after a failed run.
pub struct Chaos {
    agent_bin: PathBuf,
    netem: bool,
    cluster: Option<(Cluster, EchoServers)>,
}

impl Chaos {
    pub fn new(agent_bin: &Path) -> Chaos {
        Chaos {
            agent_bin: agent_bin.to_owned(),
            netem: netem_available(),
            cluster: None,
        }
    }

    /// Whether loss/delay faults are drawn (the kernel has sch_netem).
    pub fn netem(&self) -> bool {
        self.netem
    }

    fn settings() -> VipSettings {
        VipSettings {
            read_vips: [61, 62]
                .iter()
                .map(|&o| IpAddr::V4(Ipv4Addr::new(198, 51, 100, o)))
                .collect(),
            floating_type: "TO_ANOTHER_SECONDARY".into(),
            instance: "chaos".into(),
            ..VipSettings::default()
        }
    }

    fn cluster(&mut self) -> Result<&mut Cluster> {
        if self.cluster.is_none() {
            let cluster = Cluster::start(HOSTS, Self::settings(), self.agent_bin.clone(), |g| {
                g.unreachable_after(UNREACHABLE_AFTER)
                    .expel_after(EXPEL_AFTER)
            })?;
            let echo = EchoServers::start(cluster.lab.hosts())?;
            self.cluster = Some((cluster, echo));
        }
        Ok(&mut self.cluster.as_mut().expect("just built").0)
    }

    /// Runs the schedule of `seed`. An error means the run could not be carried out
    /// (the lab broke), not that an invariant failed.
    pub async fn run(&mut self, seed: u64) -> Result<Outcome> {
        let steps = schedule::schedule(seed, HOSTS, self.netem);
        let started = Instant::now();
        let mut out = Outcome {
            seed,
            ok: true,
            steps: steps.iter().map(|s| s.to_string()).collect(),
            failures: Vec::new(),
            dual_owner_ms: 0.0,
            read_dual_owner_ms: 0.0,
            stale_conns: 0,
            took_ms: 0,
        };
        let result = self.run_steps(&steps, &mut out).await;
        if let Err(e) = result {
            // The first line: the logs that follow go to the file below.
            let e = format!("{e:#}");
            out.failures
                .push(e.lines().next().unwrap_or_default().to_owned());
        }
        out.ok = out.failures.is_empty();
        out.took_ms = started.elapsed().as_millis() as u64;
        if !out.ok {
            // Keep the evidence, then start the next run on a fresh cluster.
            if let Some((c, _)) = &self.cluster {
                let dir = std::env::temp_dir().join("vip-chaos");
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("seed-{seed}.log"));
                if std::fs::write(&path, c.logs()).is_ok() {
                    out.failures
                        .push(format!("agent and group logs: {}", path.display()));
                }
            }
            self.cluster = None;
        }
        Ok(out)
    }

    async fn run_steps(&mut self, steps: &[Step], out: &mut Outcome) -> Result<()> {
        let c = self.cluster()?;
        // The same start every run: h1 primary, all ONLINE, placement settled.
        wait_healthy(c, "the start state")?;
        if c.holders() != [0] {
            c.group.switchover(0)?;
            c.wait(SETTLE, "h1 to be primary again", |c| {
                c.holders() == [0] && healthy(c)
            })?;
        }
        let watch = c.lab.watch_addrs()?;
        let t0 = Instant::now();
        let write = c.settings.write_vip;
        let mut held = Held::open(c.client(), write, HELD)?;
        for (i, step) in steps.iter().enumerate() {
            if i > 0 {
                wait_healthy(c, &format!("the group to heal before step {}", i + 1))?;
            }
            apply(c, step.fault)
                .await
                .with_context(|| format!("step {}: {}", i + 1, step.fault))?;
            // The fault's length and the pause are the schedule's, not waits for a
            // condition.
            tokio::time::sleep(step.hold).await;
            undo(c, step.fault)
                .await
                .with_context(|| format!("undoing {}", step.fault))?;
            tokio::time::sleep(step.gap).await;
        }
        if let Err(e) = wait_healthy(c, "the group to settle") {
            let why = placement::check(c, 0).err().unwrap_or_default();
            out.failures.push(format!("did not settle: {why}"));
            return Err(e);
        }
        check(c, &watch, t0, &mut held, out);
        Ok(())
    }
}

/// Whether every member is ONLINE in h1's view, the placement is right, and no agent
/// is still announcing.
fn healthy(c: &Cluster) -> bool {
    let rows = c.group.rows(0);
    rows.len() == HOSTS
        && rows.iter().all(|r| r.member_state == MemberState::Online)
        && placement::check(c, 0).is_ok()
        && (0..HOSTS).all(|i| crate::scenario::announcing(&c.events(i)).is_empty())
}

fn wait_healthy(c: &Cluster, what: &str) -> Result<()> {
    c.wait(SETTLE, what, healthy)
}

async fn apply(c: &mut Cluster, fault: Fault) -> Result<()> {
    match fault {
        Fault::Crash(h) => c.group.crash(h).await,
        Fault::Switchover(h) => c.group.switchover(h),
        Fault::Partition(h) => {
            let lab = &c.lab;
            let rest: Vec<_> = (0..HOSTS)
                .filter(|&i| i != h)
                .map(|i| lab.host(i))
                .chain([lab.client(0)])
                .collect();
            lab.partition(&[&[lab.host(h)], &rest])?;
            let others: Vec<usize> = (0..HOSTS).filter(|&i| i != h).collect();
            c.group.partition(&[&[h], &others])
        }
        Fault::AgentKill(h) => {
            if let Some(agent) = c.agents[h].take() {
                agent.proc.kill()?;
            }
            Ok(())
        }
        Fault::Hang(h) => {
            c.group.set_endpoint(h, Endpoint::Hung).await?;
            c.group.expel(h)
        }
        Fault::NicFlap(h) => c.host(h).nic_down(),
        Fault::Netem {
            host,
            loss_pct,
            delay_ms,
        } => netem(c, host, Some((loss_pct, delay_ms))),
    }
}

async fn undo(c: &mut Cluster, fault: Fault) -> Result<()> {
    match fault {
        Fault::Crash(h) => {
            c.group.restart(h).await?;
            c.group.rejoin(h)
        }
        Fault::Switchover(_) => Ok(()),
        Fault::Partition(_) => {
            c.lab.heal()?;
            c.group.heal()
        }
        Fault::AgentKill(h) => c.restart_agent(h),
        Fault::Hang(h) => {
            c.group.set_endpoint(h, Endpoint::Serving).await?;
            c.group.heal()
        }
        Fault::NicFlap(h) => c.host(h).nic_up(),
        Fault::Netem { host, .. } => netem(c, host, None),
    }
}

/// Adds (or with None removes) loss and delay on both ends of host `h`'s link.
fn netem(c: &Cluster, h: usize, loss_delay: Option<(u32, u32)>) -> Result<()> {
    let host = c.host(h);
    for (ns, dev) in [(host.ns(), "eth0"), (c.lab.bridge_ns(), host.name())] {
        let mut tc = Command::new("tc");
        match loss_delay {
            Some((loss, delay)) => tc
                .args(["qdisc", "replace", "dev", dev, "root", "netem"])
                .args(["loss", &format!("{loss}%"), "delay", &format!("{delay}ms")]),
            None => tc.args(["qdisc", "del", "dev", dev, "root"]),
        };
        crate::netns::command_in(ns, &mut tc)?;
        let status = tc.status().context("running tc")?;
        anyhow::ensure!(status.success(), "tc netem on {dev} in {ns} failed");
    }
    Ok(())
}

/// Whether the kernel has the netem qdisc (tried on a veth in a scratch namespace).
fn netem_available() -> bool {
    let Ok(lab) = crate::lab::Lab::builder().hosts(1).clients(0).build() else {
        return false;
    };
    let mut tc = Command::new("tc");
    tc.args([
        "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms",
    ]);
    crate::netns::command_in(lab.host(0).ns(), &mut tc).is_ok()
        && tc
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The invariants, once the run settled.
fn check(c: &Cluster, watch: &AddrWatch, t0: Instant, held: &mut Held, out: &mut Outcome) {
    let write = c.settings.write_vip;
    let overlap = watch.overlap(write, t0, |_, _| true);
    out.dual_owner_ms = overlap.as_secs_f64() * 1000.0;
    if overlap > Duration::ZERO {
        out.failures.push(format!(
            "two hosts held the write VIP at once for {:.1} ms",
            out.dual_owner_ms
        ));
    }
    // Reported, not an invariant: while a member is UNREACHABLE the primary moves its
    // read VIPs at once, and the member itself lets go only when its own view says so
    // (see the README's chaos results).
    for &vip in &c.settings.read_vips {
        out.read_dual_owner_ms += watch.overlap(vip, t0, |_, _| true).as_secs_f64() * 1000.0;
    }
    // The held connections went to h1. If h1 let the write VIP go at any point, none
    // may be left usable or hanging.
    let released = watch
        .changes()
        .iter()
        .any(|ch| ch.host == 0 && ch.addr == write && !ch.added && ch.at >= t0);
    let probed = held.probe(Duration::from_secs(2));
    if released {
        out.stale_conns = probed.alive + probed.silent;
        if out.stale_conns > 0 {
            out.failures.push(format!(
                "{} connection(s) through the write VIP still open after h1 released it \
                 ({} echoed, {} hang)",
                out.stale_conns, probed.alive, probed.silent
            ));
        }
    }
    for (i, agent) in c.agents.iter().enumerate() {
        if agent.is_none() {
            out.failures
                .push(format!("the agent on h{} is not running", i + 1));
        }
    }
    out.failures.extend(c.agent_problems());
}
