//! One scenario run: the cluster settled, the observers started, one fault, then the
//! measurements and invariant checks of [`Report`].

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use super::echo::{EchoServers, Held};
use super::placement;
use super::probe::Probe;
use super::report::{Report, ms_between};
use crate::cluster::{Cluster, VipSettings};
use crate::lab::{AddrWatch, Capture};
use crate::sim::SimGroupBuilder;

/// The group's failure detection: shorter than MySQL's defaults (about 5 s each) so runs
/// stay quick; the agents' reaction does not depend on them.
pub const UNREACHABLE_AFTER: Duration = Duration::from_millis(1000);
pub const EXPEL_AFTER: Duration = Duration::from_millis(1000);
/// How long the group may take to settle after a fault.
pub const SETTLE: Duration = Duration::from_secs(20);
/// Connections held through the VIP during a run.
const HELD: usize = 4;
/// How long old connections get to be reset after the group settled.
const RESET_BOUND: Duration = Duration::from_secs(3);
/// How long a probed connection gets to echo or fail.
const PROBE_BOUND: Duration = Duration::from_secs(2);

/// Where the scenario's VIP should be once the group settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// On this host, having left the one that held it.
    MovesTo(usize),
    /// Still on the host that held it.
    Stays,
    /// Still on the same host, bound again (it was deleted): announced again.
    Rebound,
}

pub struct Run {
    pub name: String,
    pub cluster: Cluster,
    /// The VIP the scenario is about (the write VIP, or one read VIP).
    pub vip: IpAddr,
    /// The host holding it before the fault.
    pub from: usize,
    /// The member whose view of the group the final placement is checked against.
    pub observer: usize,
    /// Kept for the whole run: the held connections' other ends.
    _echo: EchoServers,
    held: Held,
    capture: Capture,
    watch: AddrWatch,
    probe: Option<Probe>,
    /// Maps the monotonic clock to the wall clock the agents log in.
    anchor: (Instant, SystemTime),
    t0: Instant,
    notes: Vec<(Instant, String)>,
}

impl Run {
    /// Starts the cluster, waits until its placement settled, then starts the echo
    /// servers, the connections held through `vip`, the capture and the address watch.
    pub fn start(
        name: &str,
        hosts: usize,
        settings: VipSettings,
        vip: IpAddr,
        agent_bin: &Path,
    ) -> Result<Run> {
        let cluster = Run::cluster(hosts, settings, agent_bin, |g| g)?;
        Run::observe(name, cluster, vip, hosts - 1)
    }

    /// A cluster with the runs' group timings, for a scenario that sets things up
    /// before [`Run::observe`].
    pub fn cluster(
        hosts: usize,
        settings: VipSettings,
        agent_bin: &Path,
        group: impl FnOnce(SimGroupBuilder) -> SimGroupBuilder,
    ) -> Result<Cluster> {
        Cluster::start(hosts, settings, agent_bin.to_owned(), |g| {
            group(
                g.unreachable_after(UNREACHABLE_AFTER)
                    .expel_after(EXPEL_AFTER),
            )
        })
    }

    /// Starts observing an already running cluster (after a scenario's own setup).
    pub fn observe(name: &str, cluster: Cluster, vip: IpAddr, observer: usize) -> Result<Run> {
        cluster.wait(SETTLE, "the initial placement", |c| {
            placement::check(c, observer).is_ok() && c.holders_of(vip).len() == 1
        })?;
        // The initial announcements must be over, or they count as the fault's.
        cluster.wait(SETTLE, "the initial announcements to end", |c| {
            (0..c.agents.len()).all(|i| announcing(&c.events(i)).is_empty())
        })?;
        let from = cluster.holders_of(vip)[0];
        let echo = EchoServers::start(cluster.lab.hosts())?;
        let held = Held::open(cluster.client(), vip, HELD)?;
        let capture = cluster.lab.capture()?;
        let watch = cluster.lab.watch_addrs()?;
        let now = Instant::now();
        Ok(Run {
            name: name.to_owned(),
            cluster,
            vip,
            from,
            observer,
            _echo: echo,
            held,
            capture,
            watch,
            probe: None,
            anchor: (now, SystemTime::now()),
            t0: now,
            notes: Vec::new(),
        })
    }

    /// Marks the fault's start (time zero of the run) and starts the client's probe.
    pub fn fault(&mut self, what: &str) -> Result<()> {
        self.t0 = Instant::now();
        self.probe = Some(Probe::start(self.cluster.client(), self.vip)?);
        self.note(what);
        Ok(())
    }

    /// A line for the timeline, now.
    pub fn note(&mut self, what: &str) {
        self.notes.push((Instant::now(), what.to_owned()));
    }

    fn wall(&self, t: Instant) -> SystemTime {
        self.anchor.1 + t.saturating_duration_since(self.anchor.0)
            - self.anchor.0.saturating_duration_since(t)
    }

    /// Waits for the group to settle, then measures and checks everything.
    pub fn finish(mut self, expect: Expect) -> Report {
        let mut r = Report::new(&self.name, self.vip);
        r.from = Some(self.cluster.host(self.from).name().to_owned());
        let observer = self.observer;
        let from = self.from;
        let vip = self.vip;
        let settled = self.cluster.wait(SETTLE, "the group to settle", |c| {
            let holders = c.holders_of(vip);
            placement::check(c, observer).is_ok()
                && holders.len() == 1
                && match expect {
                    Expect::MovesTo(h) => holders[0] == h,
                    Expect::Stays | Expect::Rebound => holders[0] == from,
                }
        });
        if let Err(e) = settled {
            let why = placement::check(&self.cluster, observer).err();
            r.fail(format!(
                "did not settle within {SETTLE:?}: {}; {vip} on {:?}",
                why.unwrap_or_else(|| "placement fine".into()),
                self.cluster.holders_of(vip)
            ));
            r.detail = format!("{e:#}");
        }
        let to = self.cluster.holders_of(vip).first().copied();
        r.to = to.map(|h| self.cluster.host(h).name().to_owned());
        let moved = to.is_some_and(|h| h != from);

        self.measure_move(&mut r, to);
        self.measure_announcements(&mut r, to, expect);
        self.measure_reaction(&mut r, to);
        self.measure_resets(&mut r, moved);
        self.measure_dual_owner(&mut r);
        self.check_agents(&mut r);
        self.timeline(&mut r);
        r
    }

    /// vip_move_ms: fault → a new session through the VIP answered by its holder.
    fn measure_move(&mut self, r: &mut Report, to: Option<usize>) {
        let Some(to) = to else { return };
        let uuid = self.cluster.group.uuid(to);
        let probe = self.probe.as_ref();
        let reached = probe.and_then(|p| {
            crate::lab::wait_for(Duration::from_secs(5), || {
                p.first_reaching(&uuid, self.t0).is_some()
            });
            p.first_reaching(&uuid, self.t0)
        });
        match reached {
            Some(at) => {
                r.vip_move_ms = Some(ms_between(self.t0, at));
                let name = self.cluster.host(to).name().to_owned();
                self.notes.push((
                    at,
                    format!("c1: a new session through {} reaches {name}", self.vip),
                ));
            }
            None => r.fail(format!(
                "no new session through {} reached {} after the fault",
                self.vip,
                self.cluster.host(to).name()
            )),
        }
        self.probe = None;
    }

    /// announcements: unsolicited ARP / NA for the VIP on the wire since the fault.
    fn measure_announcements(&mut self, r: &mut Report, to: Option<usize>, expect: Expect) {
        let want = self.cluster.settings.announce_count as usize;
        let vip = self.vip;
        let must_announce = matches!(expect, Expect::MovesTo(_) | Expect::Rebound);
        let ours = |a: &crate::lab::Announcement, t0: Instant| {
            a.ip == vip && a.is_unsolicited() && a.at >= t0
        };
        let t0 = self.t0;
        if must_announce {
            let _ = self.capture.wait_until(Duration::from_secs(5), |seen| {
                seen.iter().filter(|a| ours(a, t0)).count() >= want
            });
        }
        let seen: Vec<_> = self
            .capture
            .announcements()
            .into_iter()
            .filter(|a| ours(a, t0))
            .collect();
        r.announcements = seen.len();
        if must_announce && seen.len() < want {
            r.fail(format!(
                "{} announcement(s) of {vip} on the wire, {want} configured",
                seen.len()
            ));
        }
        if let Some(to) = to {
            let port = self.cluster.host(to).name();
            if let Some(wrong) = seen.iter().find(|a| a.port != port) {
                r.fail(format!(
                    "{vip} was announced by {} after the fault, but {port} holds it",
                    wrong.port
                ));
            }
        }
        for (which, a) in [("first", seen.first()), ("last", seen.last())] {
            if let Some(a) = a {
                self.notes.push((
                    a.at,
                    format!("wire: {which} announcement of {vip}, from {}", a.port),
                ));
            }
        }
    }

    /// reaction_ms: what made the new holder act (a view change it saw, the old
    /// holder's confirmed release, or the primary's placement) → address bound → first
    /// announcement out. first_view_ms: the fault → the first view change any agent saw.
    fn measure_reaction(&mut self, r: &mut Report, to: Option<usize>) {
        let t0 = self.wall(self.t0);
        let ms = wall_ms;
        r.first_view_ms = (0..self.cluster.agents.len())
            .flat_map(|i| self.cluster.events(i))
            .filter(|e| e.event == "view" && e.at >= t0)
            .map(|e| e.at)
            .min()
            .map(|at| ms(t0, at));
        let Some(to) = to else { return };
        let vip = self.vip.to_string();
        let events = self.cluster.events(to);
        let bound = events.iter().find(|e| {
            e.at >= t0
                && matches!(e.event.as_str(), "bound" | "readded")
                && e.fields.get("vip").and_then(|v| v.as_str()) == Some(&vip)
        });
        let Some(bound) = bound else { return };
        let trigger = events.iter().rev().find(|e| {
            e.at >= t0
                && e.at <= bound.at
                && match e.event.as_str() {
                    "view" | "write_release_confirmed" | "write_release_timeout" => true,
                    // Applying the primary's placement (the primary's own carries no `from`).
                    "placement" => e.fields.get("from").is_some(),
                    _ => false,
                }
        });
        let (trigger_at, trigger_name) = match trigger {
            Some(e) => (e.at, e.event.clone()),
            None => (t0, "the fault itself".to_owned()),
        };
        let port = self.cluster.host(to).name().to_owned();
        let first = self
            .capture
            .announcements()
            .into_iter()
            .find(|a| a.ip == self.vip && a.is_unsolicited() && a.port == port && a.at >= self.t0)
            .map(|a| self.wall(a.at));
        r.trigger = Some(trigger_name);
        r.trigger_to_bound_ms = Some(ms(trigger_at, bound.at));
        if let Some(first) = first {
            r.bound_to_announce_ms = Some(ms(bound.at, first));
            r.reaction_ms = Some(ms(trigger_at, first));
        }
    }

    /// reset_ms and stale_conns: what became of the connections held through the VIP.
    fn measure_resets(&mut self, r: &mut Report, moved: bool) {
        r.held_conns = self.held.len();
        if moved {
            // Date the loss from the old holder's release (its log says how long it took).
            let vip = self.vip.to_string();
            let t0 = self.wall(self.t0);
            let lost = self.cluster.events(self.from).into_iter().find_map(|e| {
                let ours = e.event == "released"
                    && e.at >= t0
                    && e.fields.get("vip").and_then(|v| v.as_str()) == Some(&vip);
                let took = e.fields.get("took_us").and_then(|v| v.as_u64())?;
                ours.then(|| e.at - Duration::from_micros(took))
            });
            if self.held.wait_all_closed(RESET_BOUND)
                && let (Some(lost), Some(&last)) = (lost, self.held.closed_at().last())
            {
                let last = self.wall(last);
                r.reset_ms = Some(wall_ms(lost, last));
            }
            if let Some(&last) = self.held.closed_at().last() {
                let n = self.held.closed_at().len();
                self.notes.push((
                    last,
                    format!("c1: {n} of {} old connection(s) reset or closed", HELD),
                ));
            }
        }
        let probed = self.held.probe(PROBE_BOUND);
        if moved {
            r.stale_conns = probed.alive + probed.silent;
            if r.stale_conns > 0 {
                r.fail(format!(
                    "{} connection(s) through {} still open after it left {} \
                     ({} echoed from a stale socket, {} hang)",
                    r.stale_conns,
                    self.vip,
                    self.cluster.host(self.from).name(),
                    probed.alive,
                    probed.silent
                ));
            }
        } else {
            r.needless_resets = probed.closed;
            r.stale_conns = probed.silent;
            if probed.closed + probed.silent > 0 {
                r.fail(format!(
                    "{} stayed on {} but {} of its connection(s) were reset and {} hang",
                    self.vip,
                    self.cluster.host(self.from).name(),
                    probed.closed,
                    probed.silent
                ));
            }
        }
    }

    /// dual_owner_ms: how long two hosts held the write VIP at once, since the fault;
    /// read_dual_owner_ms: the same for the read VIPs, reported only (the primary pushes
    /// a new placement to every member at once, so a read VIP's new holder may bind it a
    /// few ms before the old one lets go).
    fn measure_dual_owner(&mut self, r: &mut Report) {
        let write = self.cluster.settings.write_vip;
        let overlap = self.watch.overlap(write, self.t0, |_, _| true);
        r.dual_owner_ms = overlap.as_secs_f64() * 1000.0;
        if overlap > Duration::ZERO {
            r.fail(format!(
                "two hosts held the write VIP {write} at once for {:.1} ms",
                r.dual_owner_ms
            ));
        }
        for &vip in &self.cluster.settings.read_vips {
            let overlap = self.watch.overlap(vip, self.t0, |_, _| true);
            r.read_dual_owner_ms += overlap.as_secs_f64() * 1000.0;
        }
    }

    /// No agent may have died or panicked.
    fn check_agents(&mut self, r: &mut Report) {
        for problem in self.cluster.agent_problems() {
            r.fail(problem);
        }
    }

    /// The human timeline, in ms since the fault.
    fn timeline(&mut self, r: &mut Report) {
        let t0 = self.wall(self.t0);
        let mut lines: Vec<(f64, String)> = Vec::new();
        let since = |at: SystemTime| wall_ms(t0, at);
        for i in 0..self.cluster.agents.len() {
            let name = self.cluster.host(i).name().to_owned();
            for e in self.cluster.events(i) {
                if e.at >= t0 && e.event != "start" {
                    lines.push((since(e.at), format!("{name}: {}", e.message)));
                }
            }
        }
        for c in self.watch.changes() {
            if c.at >= self.t0 && (c.addr == self.vip || c.addr == self.cluster.settings.write_vip)
            {
                let sign = if c.added { "+" } else { "-" };
                let name = self.cluster.host(c.host).name();
                lines.push((
                    since(self.wall(c.at)),
                    format!("kernel: {name} {sign}{}", c.addr),
                ));
            }
        }
        for (at, what) in &self.notes {
            lines.push((since(self.wall(*at)), what.clone()));
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        r.timeline = lines;
    }

    /// Agent `i` is killed with SIGKILL (no chance to release anything).
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        if let Some(agent) = self.cluster.agents[i].take() {
            agent.proc.kill().context("killing the agent")?;
        }
        Ok(())
    }
}

/// The VIPs an agent is still announcing, from its log: bound (or adopted, or bound
/// again) and neither announced nor released since.
pub fn announcing(events: &[crate::cluster::AgentEvent]) -> Vec<String> {
    let mut pending: Vec<String> = Vec::new();
    for e in events {
        let Some(vip) = e.fields.get("vip").and_then(|v| v.as_str()) else {
            continue;
        };
        match e.event.as_str() {
            "bound" | "readded" | "adopted" => pending.push(vip.to_owned()),
            "announced" | "announce_failed" | "released" => pending.retain(|v| v != vip),
            _ => {}
        }
    }
    pending
}

/// Milliseconds from `a` to `b` on the wall clock (negative if `b` is earlier).
fn wall_ms(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}
