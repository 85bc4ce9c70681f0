//! One schedule: a seed draws the group's size, the clocks' rates, the network's loss and
//! a list of faults; the loop runs every agent's core against the simulated group and
//! network in simulated time, checking the invariants after every event.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::IpAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vip_agent::config::FloatingType;
use vip_agent::core::{self, Core, Effect, Event, Now, Request, Response, Timing};
use vip_tests::sim::model::Timings;

use crate::model::Group;

/// What one schedule came to.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub seed: u64,
    pub violations: Vec<String>,
    pub events: u64,
    /// The simulated group did not settle on one primary: the end state was not judged.
    pub unsettled: bool,
    /// With `trace`: every event and effect, for replaying a failure by eye.
    pub trace: Vec<String>,
}

const MS: Duration = Duration::from_millis(1);
/// The agents' loop ticks this often, and polls their mysqld this often (their clocks).
const TICK: Duration = Duration::from_millis(50);
const POLL: Duration = Duration::from_millis(100);
/// A peer call fails if no answer came this long after it was sent.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// A commit that cannot happen (blocked on a minority) fails after this.
const COMMIT_TIMEOUT: Duration = Duration::from_millis(300);
/// Faults happen in [FAULTS_FROM, FAULTS_UNTIL); then everything heals, and by END the
/// group must have settled.
const FAULTS_FROM: Duration = Duration::from_secs(2);
const FAULTS_UNTIL: Duration = Duration::from_secs(7);
const END: Duration = Duration::from_secs(13);
/// The lease timing the simulated agents run with (shorter than the default, so that
/// leases matter within a schedule); the largest clock rate difference allowed.
const TIMING: Timing = Timing {
    lease: Duration::from_millis(900),
    renew: Duration::from_millis(300),
    drift_ppm: 10_000,
};

fn write_vip() -> IpAddr {
    IpAddr::from([198, 51, 100, 50])
}

fn read_vips(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::from([198, 51, 100, 61 + i as u8]))
        .collect()
}

/// Something that happens at a point of simulated time.
#[derive(Debug, Clone)]
enum Ev {
    /// Agent `i`'s loop ticks / polls, for the agent of that incarnation.
    Tick(usize, u32),
    Poll(usize, u32),
    /// An event for agent `to`'s core (a message, an outcome).
    Deliver {
        to: usize,
        event: Event,
    },
    /// Commit `op` for agent `i` at this moment; the outcome follows after a latency.
    Commit {
        i: usize,
        attempt: u64,
        op: core::LeaseOp,
    },
    /// Member `j` applies the row committed by then.
    Replicate {
        j: usize,
        row: core::LeaseRow,
    },
    CallTimeout {
        i: usize,
        call: u64,
        incarnation: u32,
    },
    Resume(usize),
    Fault(Fault),
}

#[derive(Debug, Clone)]
enum Fault {
    Switchover(usize),
    MysqldCrash(usize),
    MysqldBack(usize),
    /// The network (MGR and agents) split in two sides.
    Partition(Vec<usize>),
    /// Only the agents' network split.
    AgentPartition(Vec<usize>),
    /// Agent `a` no longer hears agent `b` (one way).
    Cut(usize, usize),
    Pause(usize, Duration),
    HostCrash(usize),
    HostBack(usize),
    Loss(u32),
    HealAll,
    /// Not a fault: an extra poll an agent asked for.
    PollOnce(usize),
}

struct Agent {
    core: Core,
    /// The host runs (a crashed host has neither agent nor addresses).
    host: bool,
    /// The agent's process runs (not paused).
    running: bool,
    /// Bumped when the host restarts: late events of the old agent are dropped.
    incarnation: u32,
    /// Real time the agent started, and its clock's rate error (ppm).
    start: Duration,
    rate_ppm: i64,
    /// Events for the core that arrived while the process was paused.
    held: Vec<Event>,
    /// The kernel: bound VIPs and their lease end (this host's clock).
    kernel: BTreeMap<IpAddr, (bool, Option<Now>)>,
    /// Calls in flight: call id → (target, request id at the target).
    calls: BTreeMap<u64, (usize, u64)>,
}

impl Agent {
    fn local(&self, t: Duration) -> Now {
        let since = t.saturating_sub(self.start);
        let ns = since.as_nanos() as i128;
        let scaled = ns + ns * self.rate_ppm as i128 / 1_000_000;
        Duration::from_nanos(scaled.max(0) as u64)
    }
}

struct Sim {
    rng: StdRng,
    t: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    events: Vec<Option<Ev>>,
    group: Group,
    agents: Vec<Agent>,
    cfg: core::Config,
    /// The agents' network: a side per agent, one-way cuts, loss in percent.
    side: Vec<usize>,
    cuts: BTreeSet<(usize, usize)>,
    loss: u32,
    /// Request ids at each target: (target, req) → (caller, call, caller incarnation).
    reqs: BTreeMap<(usize, u64), (usize, u64, u32)>,
    next_req: u64,
    out: Outcome,
    trace: bool,
    reported: BTreeSet<String>,
    /// A crashed mysqld comes back no sooner than this after its crash: the group must
    /// have expelled it first (a member cannot rejoin while its old self is in the view).
    rejoin_after: Duration,
    crashed_at: Vec<Option<Duration>>,
}

/// Runs one schedule from `seed`.
pub fn run(seed: u64, trace: bool) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = *[3usize, 3, 3, 4, 5, 5, 7]
        .get(rng.random_range(0..7))
        .unwrap_or(&3);
    let reads = rng.random_range(0..=n.min(4));
    let timings = Timings {
        unreachable_after: Duration::from_millis(rng.random_range(100..400)),
        // 0 is group_replication_member_expel_timeout = 0: the majority elects as soon
        // as it suspects the primary.
        expel_after: Duration::from_millis(
            *[0u64, 0, 200, 500]
                .get(rng.random_range(0..4))
                .unwrap_or(&0),
        ),
        ..Timings::default()
    };
    let cfg = core::Config {
        write_vip: Some(write_vip()),
        read_vips: read_vips(reads),
        floating: if rng.random_bool(0.5) {
            FloatingType::ToPrimary
        } else {
            FloatingType::ToAnotherSecondary
        },
        timing: TIMING,
        late_tick: Duration::from_millis(400),
    };
    let group = Group::new(n, timings.clone());
    let mut sim = Sim {
        rng,
        t: Duration::ZERO,
        seq: 0,
        queue: BinaryHeap::new(),
        events: Vec::new(),
        group,
        agents: Vec::new(),
        cfg,
        side: vec![0; n],
        cuts: BTreeSet::new(),
        loss: 0,
        reqs: BTreeMap::new(),
        next_req: 1,
        out: Outcome {
            seed,
            ..Outcome::default()
        },
        trace,
        reported: BTreeSet::new(),
        rejoin_after: timings.unreachable_after + timings.expel_after + Duration::from_millis(300),
        crashed_at: vec![None; n],
    };
    for i in 0..n {
        let after = Duration::from_millis(sim.rng.random_range(0..100));
        sim.start_agent(i, after);
    }
    sim.draw_faults(n);
    sim.run();
    sim.settled();
    if trace {
        for e in sim.group.world.events() {
            sim.out.trace.push(format!("group: {e:?}"));
        }
    }
    sim.out
}

impl Sim {
    fn at(&mut self, t: Duration, ev: Ev) {
        self.seq += 1;
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((t, self.seq, self.events.len() - 1)));
    }

    fn note(&mut self, text: impl FnOnce() -> String) {
        if self.trace {
            let line = format!("{:>8.3} s  {}", self.t.as_secs_f64(), text());
            self.out.trace.push(line);
        }
    }

    fn start_agent(&mut self, i: usize, after: Duration) {
        let drift = TIMING.drift_ppm as i64 / 2;
        let rate_ppm = self.rng.random_range(-drift..=drift);
        let incarnation = self.agents.get(i).map_or(0, |a| a.incarnation + 1);
        let agent = Agent {
            core: Core::new(self.cfg.clone()),
            host: true,
            running: true,
            incarnation,
            start: self.t + after,
            rate_ppm,
            held: Vec::new(),
            kernel: self
                .cfg
                .write_vip
                .iter()
                .chain(&self.cfg.read_vips)
                .map(|v| (*v, (false, None)))
                .collect(),
            calls: BTreeMap::new(),
        };
        if i < self.agents.len() {
            self.agents[i] = agent;
        } else {
            self.agents.push(agent);
        }
        let start = self.t + after;
        self.at(
            start,
            Ev::Deliver {
                to: i,
                event: Event::Listed {
                    bound: BTreeSet::new(),
                },
            },
        );
        self.at(start, Ev::Poll(i, incarnation));
        self.at(start + TICK, Ev::Tick(i, incarnation));
    }

    fn draw_faults(&mut self, n: usize) {
        let count = self.rng.random_range(1..=4);
        for _ in 0..count {
            let at = Duration::from_millis(
                self.rng
                    .random_range(FAULTS_FROM.as_millis() as u64..FAULTS_UNTIL.as_millis() as u64),
            );
            let i = self.rng.random_range(0..n);
            let fault = match self.rng.random_range(0..10) {
                0 | 1 => Fault::Switchover(i),
                2 => Fault::MysqldCrash(i),
                3 => Fault::Partition(self.minority(n)),
                4 => Fault::AgentPartition(self.minority(n)),
                5 => Fault::Cut(i, (i + 1 + self.rng.random_range(0..n - 1)) % n),
                6 | 7 => Fault::Pause(i, Duration::from_millis(self.rng.random_range(200..2500))),
                8 => Fault::HostCrash(i),
                _ => Fault::Loss(self.rng.random_range(10..50)),
            };
            self.at(at, Ev::Fault(fault));
        }
        self.at(FAULTS_UNTIL, Ev::Fault(Fault::HealAll));
    }

    /// A random minority side (at least one member).
    fn minority(&mut self, n: usize) -> Vec<usize> {
        let size = self.rng.random_range(1..=(n - 1) / 2);
        let mut all: Vec<usize> = (0..n).collect();
        let mut side = Vec::new();
        for _ in 0..size {
            let k = self.rng.random_range(0..all.len());
            side.push(all.remove(k));
        }
        side.sort();
        side
    }

    fn run(&mut self) {
        while let Some(Reverse((t, _, idx))) = self.queue.pop() {
            if t > END {
                break;
            }
            self.t = t;
            let Some(ev) = self.events[idx].take() else {
                continue;
            };
            self.group.advance(t);
            self.out.events += 1;
            self.step(ev);
            self.check();
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(i, inc) => {
                if !self.agents[i].host || self.agents[i].incarnation != inc {
                    return;
                }
                if self.agents[i].running {
                    self.deliver(i, Event::Tick);
                }
                let next = self.t + self.local_to_real(i, TICK);
                self.at(next, Ev::Tick(i, inc));
            }
            Ev::Poll(i, inc) => {
                if !self.agents[i].host || self.agents[i].incarnation != inc {
                    return;
                }
                if self.agents[i].running {
                    self.poll(i);
                }
                let next = self.t + self.local_to_real(i, POLL);
                self.at(next, Ev::Poll(i, inc));
            }
            Ev::Deliver { to, event } => {
                if self.agents[to].host {
                    self.deliver(to, event);
                }
            }
            Ev::Commit { i, attempt, op } => {
                let result = self.group.commit(i, &op);
                self.note(|| format!("h{} commit {op:?}: {result:?}", i + 1));
                let latency = match &result {
                    Err(core::CommitError::Failed(_)) => COMMIT_TIMEOUT,
                    _ => Duration::from_millis(self.rng.random_range(1..5)),
                };
                if let Ok(row) = &result {
                    for j in self.group.receivers(i) {
                        let lag = Duration::from_millis(self.rng.random_range(1..40));
                        self.at(
                            self.t + lag,
                            Ev::Replicate {
                                j,
                                row: row.clone(),
                            },
                        );
                    }
                }
                self.at(
                    self.t + latency,
                    Ev::Deliver {
                        to: i,
                        event: Event::Committed { attempt, result },
                    },
                );
            }
            Ev::Replicate { j, row } => self.group.apply(j, row),
            Ev::CallTimeout {
                i,
                call,
                incarnation,
            } => {
                let a = &mut self.agents[i];
                if a.incarnation == incarnation && a.calls.remove(&call).is_some() {
                    self.deliver(
                        i,
                        Event::Answer {
                            call,
                            result: Err("no answer in time".into()),
                        },
                    );
                }
            }
            Ev::Resume(i) => {
                let a = &mut self.agents[i];
                if !a.host || a.running {
                    return;
                }
                a.running = true;
                self.note(|| format!("h{} resumes", i + 1));
                // The loop's first tick after the pause comes late.
                self.deliver(i, Event::Tick);
                let held = std::mem::take(&mut self.agents[i].held);
                for event in held {
                    self.deliver(i, event);
                }
            }
            Ev::Fault(f) => self.fault(f),
        }
    }

    fn local_to_real(&self, i: usize, d: Duration) -> Duration {
        let ns = d.as_nanos() as i128;
        let real = ns - ns * self.agents[i].rate_ppm as i128 / 1_000_000;
        Duration::from_nanos(real.max(1) as u64)
    }

    fn poll(&mut self, i: usize) {
        let (view, me, row) = self.group.poll(i);
        self.deliver(i, Event::Polled { view, me, row });
    }

    /// Hands `event` to agent `i`'s core (held while its process is paused) and carries
    /// out what it says.
    fn deliver(&mut self, i: usize, event: Event) {
        if !self.agents[i].running {
            self.agents[i].held.push(event);
            return;
        }
        let now = self.agents[i].local(self.t);
        if self.trace && !matches!(event, Event::Tick) {
            let text = format!("h{} <- {event:?}", i + 1);
            self.note(|| text);
        }
        let effects = self.agents[i].core.handle(now, event);
        for effect in effects {
            self.effect(i, now, effect);
        }
    }

    fn link(&self, a: usize, b: usize) -> bool {
        self.agents[a].host
            && self.agents[b].host
            && self.side[a] == self.side[b]
            && !self.cuts.contains(&(a, b))
    }

    fn delay(&mut self) -> Option<Duration> {
        if self.rng.random_range(0..100) < self.loss {
            return None;
        }
        Some(Duration::from_micros(self.rng.random_range(100..5000)))
    }

    fn effect(&mut self, i: usize, now: Now, effect: Effect) {
        if self.trace && !matches!(effect, Effect::Log { .. }) {
            let text = format!("h{} -> {effect:?}", i + 1);
            self.note(|| text);
        }
        match effect {
            Effect::PollNow => {
                // One poll now, outside the regular ones.
                if self.agents[i].running {
                    let d = Duration::from_millis(self.rng.random_range(1..3));
                    let to = i;
                    self.at(self.t + d, Ev::Fault(Fault::PollOnce(to)));
                }
            }
            Effect::Commit { attempt, op } => {
                let d = Duration::from_millis(self.rng.random_range(1..4));
                self.at(self.t + d, Ev::Commit { i, attempt, op });
            }
            Effect::Bind { vip, until } => {
                self.agents[i].kernel.insert(vip, (true, Some(until)));
                let d = Duration::from_micros(self.rng.random_range(100..2000));
                self.at(
                    self.t + d,
                    Ev::Deliver {
                        to: i,
                        event: Event::Bound { vip, ok: true },
                    },
                );
            }
            Effect::Extend { vip, until, .. } => {
                if let Some(k) = self.agents[i].kernel.get_mut(&vip) {
                    k.1 = Some(until);
                }
            }
            Effect::Unbind { vip } => {
                self.agents[i].kernel.insert(vip, (false, None));
                let d = Duration::from_micros(self.rng.random_range(100..2000));
                self.at(
                    self.t + d,
                    Ev::Deliver {
                        to: i,
                        event: Event::Unbound { vip, ok: true },
                    },
                );
            }
            Effect::Call {
                call, to, request, ..
            } => self.call(i, call, &to, request),
            Effect::Answer { req, response } => self.answer(i, req, response),
            Effect::Log { event, text } => {
                let _ = now;
                self.note(|| format!("h{} log {event}: {text}", i + 1));
            }
        }
    }

    fn call(&mut self, i: usize, call: u64, to: &str, request: Request) {
        let incarnation = self.agents[i].incarnation;
        self.at(
            self.t + CALL_TIMEOUT,
            Ev::CallTimeout {
                i,
                call,
                incarnation,
            },
        );
        let Some(j) = self.group.uuids.iter().position(|u| u == to) else {
            return;
        };
        let req = self.next_req;
        self.next_req += 1;
        self.agents[i].calls.insert(call, (j, req));
        self.reqs.insert((j, req), (i, call, incarnation));
        if !self.link(i, j) {
            return;
        }
        let Some(d) = self.delay() else { return };
        let from = self.group.uuids[i].clone();
        self.at(
            self.t + d,
            Ev::Deliver {
                to: j,
                event: Event::Request { req, from, request },
            },
        );
    }

    fn answer(&mut self, j: usize, req: u64, response: Response) {
        let Some((i, call, incarnation)) = self.reqs.remove(&(j, req)) else {
            return;
        };
        if !self.link(j, i) || self.agents[i].incarnation != incarnation {
            return;
        }
        let Some(d) = self.delay() else { return };
        // Delivered only if the call is still open when it arrives.
        self.at(
            self.t + d,
            Ev::Deliver {
                to: i,
                event: Event::Answer {
                    call,
                    result: Ok(response),
                },
            },
        );
        self.agents[i].calls.remove(&call);
    }

    fn fault(&mut self, fault: Fault) {
        if !matches!(fault, Fault::PollOnce(_)) {
            self.note(|| format!("fault {fault:?}"));
        }
        let n = self.agents.len();
        let now = self.group.at(self.t);
        match fault {
            Fault::Switchover(i) => {
                let _ = self.group.world.switchover(i, now);
            }
            Fault::MysqldCrash(i) => {
                if self.group.world.crash(i, now).is_ok() {
                    self.crashed_at[i] = Some(self.t);
                    let back = self.t + Duration::from_millis(self.rng.random_range(500..2500));
                    self.at(back, Ev::Fault(Fault::MysqldBack(i)));
                }
            }
            Fault::MysqldBack(i) => {
                let earliest = self.crashed_at[i].map_or(self.t, |c| c + self.rejoin_after);
                if self.t < earliest {
                    self.at(earliest, Ev::Fault(Fault::MysqldBack(i)));
                } else if self.group.world.restart(i, now).is_ok() {
                    self.crashed_at[i] = None;
                    let _ = self.group.world.rejoin(i, now);
                    // Distributed recovery: it applies what it missed before ONLINE.
                    self.catch_up();
                }
            }
            Fault::Partition(minority) => {
                let rest: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
                let _ = self.group.world.partition(&[&minority, &rest], now);
                for i in 0..n {
                    self.side[i] = usize::from(minority.contains(&i));
                }
            }
            Fault::AgentPartition(minority) => {
                for i in 0..n {
                    self.side[i] = usize::from(minority.contains(&i));
                }
            }
            Fault::Cut(a, b) => {
                self.cuts.insert((b, a));
            }
            Fault::Pause(i, d) => {
                if self.agents[i].running && self.agents[i].host {
                    self.agents[i].running = false;
                    self.at(self.t + d, Ev::Resume(i));
                }
            }
            Fault::HostCrash(i) => {
                if self.agents[i].host {
                    self.agents[i].host = false;
                    self.agents[i].running = false;
                    // Its addresses go with it.
                    for k in self.agents[i].kernel.values_mut() {
                        *k = (false, None);
                    }
                    if self.group.world.crash(i, now).is_ok() {
                        self.crashed_at[i] = Some(self.t);
                    }
                    let back = self.t + Duration::from_millis(self.rng.random_range(500..2500));
                    self.at(back, Ev::Fault(Fault::HostBack(i)));
                }
            }
            Fault::HostBack(i) => {
                if !self.agents[i].host {
                    self.start_agent(i, MS);
                    self.at(self.t + MS, Ev::Fault(Fault::MysqldBack(i)));
                }
            }
            Fault::Loss(p) => self.loss = p,
            Fault::PollOnce(i) => {
                if self.agents[i].host && self.agents[i].running {
                    self.poll(i);
                }
            }
            Fault::HealAll => {
                let _ = self.group.world.heal(now);
                self.catch_up();
                self.side = vec![0; n];
                self.cuts.clear();
                self.loss = 0;
                for i in 0..n {
                    if !self.group.world.alive(i) && self.agents[i].host {
                        self.at(self.t + MS, Ev::Fault(Fault::MysqldBack(i)));
                    }
                }
            }
        }
    }

    /// Every member applies the committed row soon (distributed recovery, a healed
    /// network).
    fn catch_up(&mut self) {
        if let Some(row) = self.group.committed() {
            for j in 0..self.agents.len() {
                let lag = Duration::from_millis(self.rng.random_range(1..100));
                self.at(
                    self.t + lag,
                    Ev::Replicate {
                        j,
                        row: row.clone(),
                    },
                );
            }
        }
    }

    /// Who answers for each VIP now: live hosts whose kernel has it bound with a lease
    /// not ended on that host's clock.
    fn answering(&self) -> BTreeMap<IpAddr, Vec<usize>> {
        let mut out: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (i, a) in self.agents.iter().enumerate().filter(|(_, a)| a.host) {
            let now = a.local(self.t);
            for (vip, (bound, until)) in &a.kernel {
                if *bound && until.is_some_and(|u| u > now) {
                    out.entry(*vip).or_default().push(i);
                }
            }
        }
        out
    }

    fn check(&mut self) {
        for (vip, holders) in self.answering() {
            if holders.len() > 1 {
                self.violation(
                    format!("two-{vip}"),
                    format!(
                        "at {:.3} s {vip} is answered for by {}",
                        self.t.as_secs_f64(),
                        names(&holders)
                    ),
                );
            }
            for i in holders {
                let now = self.agents[i].local(self.t);
                if self.agents[i].running && !self.agents[i].core.may_hold(vip, now) {
                    let why = if self.trace {
                        format!(" ({})", self.agents[i].core.explain(vip, now))
                    } else {
                        String::new()
                    };
                    self.violation(
                        format!("nolease-{vip}-{i}"),
                        format!(
                            "at {:.3} s h{}'s kernel answers for {vip} without a valid lease{why}",
                            self.t.as_secs_f64(),
                            i + 1
                        ),
                    );
                }
            }
        }
    }

    /// At the end: every VIP held exactly once, the write VIP by the primary.
    fn settled(&mut self) {
        if !self.group.agrees() {
            // The simulated views did not reconverge on one primary (chains of faults the
            // group model does not always untangle): where the VIPs should be is
            // undefined; safety was checked all along.
            self.out.unsettled = true;
            return;
        }
        let answering = self.answering();
        let primary = self.group.primary();
        let holders = answering.get(&write_vip()).cloned().unwrap_or_default();
        // A group that has no writable primary at the end (the simulated group did not
        // reconverge) must leave the write VIP unheld.
        match primary {
            Some(p) if holders == [p] => {}
            None if holders.is_empty() => return,
            _ => self.violation(
                "settle-write".into(),
                format!(
                    "settled: the write VIP is answered for by {} but the primary is {}",
                    names(&holders),
                    primary.map_or("none".into(), |p| format!("h{}", p + 1))
                ),
            ),
        }
        for vip in self.cfg.read_vips.clone() {
            let holders = answering.get(&vip).cloned().unwrap_or_default();
            if holders.len() != 1 {
                self.violation(
                    format!("settle-{vip}"),
                    format!("settled: {vip} is answered for by {}", names(&holders)),
                );
            }
        }
    }

    fn violation(&mut self, key: String, text: String) {
        if self.reported.insert(key) {
            self.note(|| format!("VIOLATION {text}"));
            self.out.violations.push(text);
        }
    }
}

fn names(hosts: &[usize]) -> String {
    if hosts.is_empty() {
        return "nobody".into();
    }
    hosts
        .iter()
        .map(|h| format!("h{}", h + 1))
        .collect::<Vec<_>>()
        .join(" and ")
}
