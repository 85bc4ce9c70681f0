//! The group's state machine: every member's own view of the group, and how views move.
//!
//! Pure and clock-driven: the caller passes `now`, and [`World::advance`] applies every
//! timed transition that fell due since the last call, in time order, stamping each with
//! the moment it was due. Nothing runs in the background, so what a client sees is exactly
//! what the documented rules give for the current time, and the rules can be unit-tested
//! with made-up instants.
//!
//! The model, from MySQL's documentation:
//! - A member "hears" another while both mysqlds run, they sit on the same side of any
//!   partition, and the other takes part in the group (ONLINE or RECOVERING).
//! - `unreachable_after` after it stops hearing a member of its view, an observer shows
//!   that member UNREACHABLE (keeping its role).
//! - `expel_after` later, an observer whose view still has a majority (more than half of
//!   its view not UNREACHABLE) removes it and, in single-primary mode, elects a new primary
//!   if the primary went: highest member weight, then lowest server_uuid. Without a
//!   majority the observer blocks (shows ONLINE, others UNREACHABLE), or goes to ERROR
//!   after `unreachable_majority_timeout` if the script sets one.
//! - A member removed by [`World::expel`] learns of it when the majority removes it, and
//!   goes to ERROR alone.
//! - [`World::heal`] rejoins the sides: a member that finds the others' view no longer
//!   holds it learns it was expelled (ERROR); members in ERROR then take the rejoin path
//!   if `auto_rejoin` is on (MySQL 8.0.21+ default: group_replication_autorejoin_tries=3),
//!   else they stay in ERROR until [`World::rejoin`]. Unexpelled members simply turn
//!   ONLINE again in each other's views.
//! - The rejoin path: OFFLINE for `rejoin_offline_for`, RECOVERING for `recovering_for`
//!   (now in the group's views), then ONLINE as SECONDARY (PRIMARY in multi-primary mode).

use std::time::Instant;

use anyhow::{Context as _, bail, ensure};

use super::lease_table::{LeaseStmt, Row as LeaseRow};
use super::model::{
    CHANNEL_NAME, COMMUNICATION_STACK, Event, MemberInfo, MemberRole, MemberRow, MemberState,
    Plugin, Timings,
};
use super::sql::{Column, SqlError, Table, Value};

/// One member as another (or itself) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    idx: usize,
    state: MemberState,
    role: MemberRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RejoinPhase {
    Offline,
    Recovering,
}

#[derive(Debug, Clone)]
struct Member {
    info: MemberInfo,
    /// mysqld runs (false after a crash).
    alive: bool,
    /// Partition side: members talk only within one side.
    side: usize,
    plugin: Plugin,
    /// Its own view, sorted by index (which sorts by uuid), itself included.
    view: Vec<Entry>,
    /// When it lost its majority, for unreachable_majority_timeout.
    blocked_since: Option<Instant>,
    /// Set by `expel`: learns of its expulsion when the majority removes it.
    learns_expulsion: bool,
    rejoin: Option<(RejoinPhase, Instant)>,
    /// super_read_only stays ON until then after becoming primary.
    writable_at: Instant,
}

impl Member {
    fn entry(&self, idx: usize) -> Option<&Entry> {
        self.view.iter().find(|e| e.idx == idx)
    }

    fn entry_mut(&mut self, idx: usize) -> Option<&mut Entry> {
        self.view.iter_mut().find(|e| e.idx == idx)
    }

    fn upsert(&mut self, entry: Entry) {
        match self.view.iter_mut().find(|e| e.idx == entry.idx) {
            Some(e) => *e = entry,
            None => {
                self.view.push(entry);
                self.view.sort_by_key(|e| e.idx);
            }
        }
    }

    fn has_majority(&self) -> bool {
        let seen = self
            .view
            .iter()
            .filter(|e| e.state != MemberState::Unreachable)
            .count();
        seen * 2 > self.view.len()
    }
}

/// A timed transition that falls due by itself.
#[derive(Debug, Clone, Copy)]
enum Due {
    MarkUnreachable { observer: usize, subject: usize },
    Expel { observer: usize, subject: usize },
    MinorityError { member: usize },
    RejoinRecovering { member: usize },
    RejoinOnline { member: usize },
}

/// All members, their views and the network between them.
#[derive(Debug)]
pub struct World {
    timings: Timings,
    members: Vec<Member>,
    single_primary: bool,
    /// lost[a][b]: since when a no longer hears b.
    lost: Vec<Vec<Option<Instant>>>,
    events: Vec<Event>,
    started: Instant,
    now: Instant,
    /// Fault injection, not MGR behaviour: cells of a member's row shown with another
    /// value in every view of it (bad input for the agent's decoder).
    corrupt: Vec<(String, Column, Value)>,
    /// The lease table's row as the group committed it, and as each member has applied
    /// it (a member cut off from the primary keeps what it had).
    lease: Option<LeaseRow>,
    lease_seen: Vec<Option<LeaseRow>>,
}

/// What a statement on the lease table did: `Blocked` while MGR holds it (a commit or a
/// consistent read without a majority); the caller tries again.
#[derive(Debug)]
pub enum LeaseOutcome {
    Done(Result<(Option<Table>, u64), SqlError>),
    Blocked,
}

impl World {
    /// A group in which every member with `Plugin::Started` is ONLINE, with the primary
    /// elected by weight then uuid (or all primaries in multi-primary mode).
    pub fn new(
        infos: Vec<MemberInfo>,
        plugins: Vec<Plugin>,
        single_primary: bool,
        timings: Timings,
        now: Instant,
    ) -> World {
        let n = infos.len();
        let in_group: Vec<usize> = (0..n).filter(|&i| plugins[i] == Plugin::Started).collect();
        let view: Vec<Entry> = in_group
            .iter()
            .map(|&idx| Entry {
                idx,
                state: MemberState::Online,
                role: if single_primary {
                    MemberRole::Secondary
                } else {
                    MemberRole::Primary
                },
            })
            .collect();
        let members = infos
            .into_iter()
            .zip(plugins)
            .map(|(info, plugin)| Member {
                info,
                alive: true,
                side: 0,
                plugin,
                view: if plugin == Plugin::Started {
                    view.clone()
                } else {
                    Vec::new()
                },
                blocked_since: None,
                learns_expulsion: false,
                rejoin: None,
                writable_at: now,
            })
            .collect();
        let mut world = World {
            timings,
            members,
            single_primary,
            lost: vec![vec![None; n]; n],
            events: Vec::new(),
            started: now,
            now,
            corrupt: Vec::new(),
            lease: None,
            lease_seen: vec![None; n],
        };
        for &i in &in_group {
            world.elect(i, now);
        }
        world.relink(now);
        world.log(
            now,
            None,
            format!("started: {n} members, members {in_group:?} ONLINE"),
        );
        world
    }

    // ----- the lease table -----

    /// Runs a statement on the lease table for a client of member `i`; `before`: the
    /// session's group_replication_consistency is BEFORE.
    ///
    /// MGR's rules, as the manual states them: a write commits only on the writable
    /// primary, and only once a majority orders it (a minority's commit blocks, section
    /// "Tolerating a network partition"); a secondary refuses it (super_read_only). A
    /// read returns what the member has applied; with BEFORE it first waits for every
    /// transaction the group ordered before it, which also needs a majority
    /// ("Configuring Transaction Consistency Guarantees"). Members that hear the primary
    /// apply its commits at once; a member that was cut off catches up when it is back
    /// with the majority.
    pub fn lease(&mut self, i: usize, stmt: &LeaseStmt, before: bool) -> LeaseOutcome {
        let caught_up = self.with_majority(i);
        if caught_up {
            self.lease_seen[i] = self.lease.clone();
        }
        if !stmt.writes() {
            if before && !caught_up {
                return LeaseOutcome::Blocked;
            }
            let table = stmt.select(self.lease_seen[i].as_ref());
            return LeaseOutcome::Done(Ok((Some(table), 0)));
        }
        if self.super_read_only(i) {
            return LeaseOutcome::Done(Err(SqlError::ReadOnly));
        }
        if !caught_up {
            return LeaseOutcome::Blocked;
        }
        let (row, affected) = match stmt.apply(self.lease.as_ref()) {
            Ok(done) => done,
            Err(e) => return LeaseOutcome::Done(Err(e)),
        };
        if affected > 0 {
            self.lease = row;
            for j in 0..self.members.len() {
                let hears = j == i
                    || (self.reachable(i, j)
                        && self.participating(j)
                        && self.members[j].entry(i).is_some());
                if hears {
                    self.lease_seen[j] = self.lease.clone();
                }
            }
            let now = self.now;
            self.log(
                now,
                Some(i),
                format!("committed the lease row {:?}", self.lease),
            );
        }
        LeaseOutcome::Done(Ok((None, affected)))
    }

    /// The lease row as the group committed it.
    pub fn lease_row(&self) -> Option<&LeaseRow> {
        self.lease.as_ref()
    }

    // ----- reading -----

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index of the member with this server_uuid.
    pub fn index_of(&self, uuid: &str) -> anyhow::Result<usize> {
        self.members
            .iter()
            .position(|m| m.info.uuid.eq_ignore_ascii_case(uuid))
            .with_context(|| format!("no member with server_uuid {uuid}"))
    }

    pub fn info(&self, i: usize) -> &MemberInfo {
        &self.members[i].info
    }

    /// Whether member `i`'s mysqld runs (false between crash and restart).
    pub fn alive(&self, i: usize) -> bool {
        self.members[i].alive
    }

    pub fn plugin(&self, i: usize) -> Plugin {
        self.members[i].plugin
    }

    pub fn single_primary(&self) -> bool {
        self.single_primary
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// What member `i` answers for replication_group_members.
    pub fn rows(&self, i: usize) -> Vec<MemberRow> {
        let m = &self.members[i];
        match m.plugin {
            Plugin::NotLoaded => Vec::new(),
            Plugin::NotStarted => vec![MemberRow {
                channel_name: CHANNEL_NAME.into(),
                member_id: String::new(),
                member_host: String::new(),
                member_port: None,
                member_state: MemberState::Offline,
                member_role: None,
                member_version: String::new(),
                member_communication_stack: String::new(),
            }],
            Plugin::Started => m
                .view
                .iter()
                .map(|e| {
                    let info = &self.members[e.idx].info;
                    // UNREACHABLE only overrides the shown state: the role stays.
                    let shows_role = matches!(
                        e.state,
                        MemberState::Online | MemberState::Recovering | MemberState::Unreachable
                    );
                    MemberRow {
                        channel_name: CHANNEL_NAME.into(),
                        member_id: info.uuid.clone(),
                        member_host: info.report_host.clone(),
                        member_port: Some(info.port),
                        member_state: e.state,
                        member_role: shows_role.then_some(e.role),
                        member_version: info.version.clone(),
                        member_communication_stack: COMMUNICATION_STACK.into(),
                    }
                })
                .collect(),
        }
    }

    /// Whether a transaction member `i` runs now commits: it is the writable primary of
    /// its view, and a majority of that view is with it (members it can talk to that
    /// have it in their own view). A minority's transactions block in MGR
    /// ("Group Replication ... blocks" on a lost majority: the manual's section on
    /// network partitioning), so here they fail.
    pub fn can_commit(&self, i: usize) -> bool {
        !self.super_read_only(i) && self.with_majority(i)
    }

    /// Whether member `i` takes part in the group with a majority of its view around it
    /// (members it can talk to that have it in their own view): what any decision of the
    /// group (a commit, a primary change) needs.
    fn with_majority(&self, i: usize) -> bool {
        let m = &self.members[i];
        if !self.participating(i) {
            return false;
        }
        let with = m
            .view
            .iter()
            .filter(|e| {
                e.idx == i
                    || (self.reachable(i, e.idx)
                        && self.participating(e.idx)
                        && self.members[e.idx].entry(i).is_some())
            })
            .count();
        with * 2 > m.view.len()
    }

    /// A member that was cut off but not expelled gets, once it hears the group again,
    /// the decisions the majority took meanwhile (a primary change is delivered to every
    /// member of the configuration through the group's consensus, late ones included):
    /// its view's roles become the majority's.
    fn follow_majority_roles(&mut self, now: Instant) {
        let n = self.members.len();
        let Some(primary) = (0..n).filter(|&a| self.with_majority(a)).find_map(|a| {
            self.members[a]
                .view
                .iter()
                .find(|e| e.role == MemberRole::Primary && e.state == MemberState::Online)
                .map(|e| e.idx)
        }) else {
            return;
        };
        let members: Vec<usize> = (0..n).filter(|&a| self.participating(a)).collect();
        for a in members {
            let differs = self.members[a]
                .view
                .iter()
                .any(|e| (e.role == MemberRole::Primary) != (e.idx == primary));
            if differs && self.members[a].entry(primary).is_some() {
                for e in &mut self.members[a].view {
                    e.role = if e.idx == primary {
                        MemberRole::Primary
                    } else {
                        MemberRole::Secondary
                    };
                }
                self.log(
                    now,
                    Some(a),
                    format!("learns member {primary} is PRIMARY (decided while it was cut off)"),
                );
            }
        }
    }

    /// Whether the network lets members `a` and `b` talk (both alive, same side).
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.reachable(a, b)
    }

    /// @@super_read_only of member `i` (and @@read_only, which follows it here).
    pub fn super_read_only(&self, i: usize) -> bool {
        let m = &self.members[i];
        match m.plugin {
            // A plain server, outside any group.
            Plugin::NotLoaded => false,
            Plugin::NotStarted => true,
            Plugin::Started => !matches!(
                own_entry(m, i),
                Some(Entry { state: MemberState::Online, role: MemberRole::Primary, .. })
                    if self.now >= m.writable_at
            ),
        }
    }

    // ----- time -----

    /// Applies every timed transition due by `now`, in time order.
    pub fn advance(&mut self, now: Instant) {
        let now = now.max(self.now);
        while let Some((at, due)) = self.next_due(now) {
            self.now = at;
            self.apply(due, at);
            self.relink(at);
        }
        self.now = now;
    }

    fn next_due(&self, now: Instant) -> Option<(Instant, Due)> {
        let t = &self.timings;
        let mut best: Option<(Instant, Due)> = None;
        // At one instant every suspicion comes before any expulsion: an expel is the
        // majority's decision, and a member that has not yet marked the rest of its
        // side UNREACHABLE must not count them as its majority (with
        // group_replication_member_expel_timeout = 0 both fall due together).
        let rank = |due: &Due| u8::from(!matches!(due, Due::MarkUnreachable { .. }));
        let mut consider = |at: Instant, due: Due| {
            if at <= now && best.is_none_or(|(b, d)| (at, rank(&due)) < (b, rank(&d))) {
                best = Some((at, due));
            }
        };
        for (a, m) in self.members.iter().enumerate() {
            if let Some((phase, at)) = m.rejoin {
                consider(
                    at,
                    match phase {
                        RejoinPhase::Offline => Due::RejoinRecovering { member: a },
                        RejoinPhase::Recovering => Due::RejoinOnline { member: a },
                    },
                );
            }
            if !self.participating(a) {
                continue;
            }
            for e in m.view.iter().filter(|e| e.idx != a) {
                let Some(lost) = self.lost[a][e.idx] else {
                    continue;
                };
                if e.state != MemberState::Unreachable {
                    consider(
                        lost + t.unreachable_after,
                        Due::MarkUnreachable {
                            observer: a,
                            subject: e.idx,
                        },
                    );
                } else if m.has_majority() && self.with_majority(a) {
                    // An expel is the group's decision: it needs a majority of the view
                    // actually around the member, not only "not yet suspected".
                    consider(
                        lost + t.unreachable_after + t.expel_after,
                        Due::Expel {
                            observer: a,
                            subject: e.idx,
                        },
                    );
                }
            }
            if let (Some(since), Some(timeout)) = (m.blocked_since, t.unreachable_majority_timeout)
                && !m.has_majority()
            {
                consider(since + timeout, Due::MinorityError { member: a });
            }
        }
        best
    }

    fn apply(&mut self, due: Due, at: Instant) {
        match due {
            Due::MarkUnreachable { observer, subject } => {
                let m = &mut self.members[observer];
                if let Some(e) = m.entry_mut(subject) {
                    e.state = MemberState::Unreachable;
                }
                let lost_majority = !m.has_majority() && m.blocked_since.is_none();
                if lost_majority {
                    m.blocked_since = Some(at);
                }
                self.log(
                    at,
                    Some(observer),
                    format!("sees member {subject} UNREACHABLE"),
                );
                if lost_majority {
                    self.log(at, Some(observer), "lost the majority: blocked".into());
                }
            }
            Due::Expel { observer, subject } => {
                self.members[observer].view.retain(|e| e.idx != subject);
                self.log(at, Some(observer), format!("expels member {subject}"));
                self.elect(observer, at);
                let s = &self.members[subject];
                if s.learns_expulsion && own_entry(s, subject).is_some_and(|e| e.state.in_group()) {
                    self.enter_error(subject, at, "learns it was expelled");
                }
            }
            Due::MinorityError { member } => {
                self.enter_error(member, at, "unreachable_majority_timeout: leaves the group");
            }
            Due::RejoinRecovering { member } => self.rejoin_recovering(member, at),
            Due::RejoinOnline { member } => self.rejoin_online(member, at),
        }
    }

    // ----- scripted transitions -----

    /// mysqld of member `i` dies: the others stop hearing it.
    pub fn crash(&mut self, i: usize, now: Instant) -> anyhow::Result<()> {
        let now = self.tick(now);
        ensure!(self.members[i].alive, "member {i} is already down");
        let m = &mut self.members[i];
        m.alive = false;
        m.rejoin = None;
        m.blocked_since = None;
        m.learns_expulsion = false;
        self.log(now, Some(i), "crashes (mysqld down)".into());
        self.relink(now);
        Ok(())
    }

    /// mysqld of member `i` starts again, group replication not started (like
    /// group_replication_start_on_boot=OFF); [`World::rejoin`] brings it back.
    pub fn restart(&mut self, i: usize, now: Instant) -> anyhow::Result<()> {
        let now = self.tick(now);
        ensure!(!self.members[i].alive, "member {i} is running");
        let m = &mut self.members[i];
        m.alive = true;
        m.plugin = Plugin::NotStarted;
        m.view.clear();
        self.log(
            now,
            Some(i),
            "restarts; group replication not started".into(),
        );
        self.relink(now);
        Ok(())
    }

    /// group_replication_set_as_primary(uuid of `target`).
    pub fn switchover(&mut self, target: usize, now: Instant) -> anyhow::Result<()> {
        let now = self.tick(now);
        ensure!(self.single_primary, "switchover needs single-primary mode");
        ensure!(
            own_entry(&self.members[target], target)
                .is_some_and(|e| e.state == MemberState::Online)
                && self.participating(target),
            "member {target} is not ONLINE"
        );
        // group_replication_set_as_primary() refuses to start unless the member it runs
        // on is ONLINE in the majority partition, and while any member is UNREACHABLE
        // (member_online_with_majority() and group_contains_unreachable_member() in
        // mysql-server's plugin/group_replication/src/udf/udf_single_primary.cc).
        ensure!(
            self.with_majority(target),
            "the group has no majority around member {target}: the switchover blocks"
        );
        ensure!(
            self.members[target]
                .view
                .iter()
                .all(|e| e.state != MemberState::Unreachable),
            "a member is UNREACHABLE: group actions are refused until it is back or expelled"
        );
        for c in self.group_of(target) {
            for e in &mut self.members[c].view {
                e.role = if e.idx == target {
                    MemberRole::Primary
                } else {
                    MemberRole::Secondary
                };
            }
        }
        self.members[target].writable_at = now + self.timings.primary_writable_after;
        self.log(now, Some(target), "becomes PRIMARY (switchover)".into());
        Ok(())
    }

    /// Member `i` is cut from everyone; the majority expels it and it learns so.
    pub fn expel(&mut self, i: usize, now: Instant) -> anyhow::Result<()> {
        let now = self.tick(now);
        ensure!(self.participating(i), "member {i} is not in the group");
        let side = self.fresh_side();
        let m = &mut self.members[i];
        m.side = side;
        m.learns_expulsion = true;
        self.log(
            now,
            Some(i),
            "cut off from the group, to be expelled".into(),
        );
        self.relink(now);
        Ok(())
    }

    /// Splits the network: each slice is one side; members not listed are each alone.
    pub fn partition(&mut self, sides: &[&[usize]], now: Instant) -> anyhow::Result<()> {
        let now = self.tick(now);
        let n = self.members.len();
        let mut seen = vec![false; n];
        for &i in sides.iter().flat_map(|s| s.iter()) {
            ensure!(i < n, "no member {i}");
            ensure!(!seen[i], "member {i} is on two sides");
            seen[i] = true;
        }
        for (k, side) in sides.iter().enumerate() {
            for &i in side.iter() {
                self.members[i].side = k + 1;
            }
        }
        for i in (0..n).filter(|&i| !seen[i]) {
            let side = self.fresh_side();
            self.members[i].side = side;
        }
        self.log(now, None, format!("network partitioned: {sides:?}"));
        self.relink(now);
        Ok(())
    }

    /// Reconnects every side (see the module doc for what views do then).
    pub fn heal(&mut self, now: Instant) -> anyhow::Result<()> {
        let now = self.tick(now);
        for m in &mut self.members {
            m.side = 0;
            m.blocked_since = None;
            m.learns_expulsion = false;
        }
        self.relink(now);
        self.log(now, None, "network healed".into());
        let n = self.members.len();

        // A member whose peers' view dropped it was expelled while it could not hear.
        let expelled: Vec<usize> = (0..n)
            .filter(|&a| self.participating(a))
            .filter(|&a| {
                (0..n).any(|b| {
                    b != a
                        && self.hears(a, b)
                        && self.members[a].entry(b).is_some()
                        && self.members[b].entry(a).is_none()
                })
            })
            .collect();
        for a in expelled {
            self.enter_error(a, now, "learns it was expelled");
        }

        // Views reconverge: peers heard again are back, those that left are gone.
        let members: Vec<usize> = (0..n).filter(|&a| self.participating(a)).collect();
        for a in members {
            let unreachable: Vec<usize> = self.members[a]
                .view
                .iter()
                .filter(|e| e.state == MemberState::Unreachable)
                .map(|e| e.idx)
                .collect();
            for b in unreachable {
                if self.hears(a, b) && self.members[b].entry(a).is_some() {
                    let state =
                        own_entry(&self.members[b], b).map_or(MemberState::Online, |e| e.state);
                    if let Some(e) = self.members[a].entry_mut(b) {
                        e.state = state;
                    }
                    self.log(now, Some(a), format!("sees member {b} {state} again"));
                } else if self.reachable(a, b) {
                    self.members[a].view.retain(|e| e.idx != b);
                    self.log(
                        now,
                        Some(a),
                        format!("drops member {b}, which left the group"),
                    );
                }
            }
            self.elect(a, now);
        }
        self.relink(now);
        self.follow_majority_roles(now);

        if self.timings.auto_rejoin {
            let in_error: Vec<usize> = (0..n)
                .filter(|&i| {
                    let m = &self.members[i];
                    m.alive
                        && m.plugin == Plugin::Started
                        && own_entry(m, i).is_some_and(|e| e.state == MemberState::Error)
                })
                .collect();
            for i in in_error {
                self.start_rejoin(i, now);
            }
        }
        Ok(())
    }

    /// START GROUP_REPLICATION on member `i`: OFFLINE, RECOVERING, then ONLINE.
    pub fn rejoin(&mut self, i: usize, now: Instant) -> anyhow::Result<()> {
        let now = self.tick(now);
        let m = &self.members[i];
        ensure!(m.alive, "member {i} is down");
        ensure!(
            m.plugin != Plugin::NotLoaded,
            "member {i} has no group_replication plugin"
        );
        ensure!(
            !self.participating(i) && m.rejoin.is_none(),
            "member {i} is already in the group or joining"
        );
        self.start_rejoin(i, now);
        Ok(())
    }

    /// Unloads the plugin or resets it to never-started; the member leaves the group
    /// cleanly first (the others drop it at once).
    pub fn set_plugin(&mut self, i: usize, plugin: Plugin, now: Instant) -> anyhow::Result<()> {
        let now = self.tick(now);
        if plugin == Plugin::Started {
            bail!("start the plugin with rejoin()");
        }
        if self.participating(i) {
            let peers: Vec<usize> = (0..self.members.len())
                .filter(|&c| c != i && self.hears(c, i) && self.members[c].entry(i).is_some())
                .collect();
            for c in peers {
                self.members[c].view.retain(|e| e.idx != i);
                self.elect(c, now);
            }
        }
        let m = &mut self.members[i];
        m.plugin = plugin;
        m.view.clear();
        m.rejoin = None;
        self.log(
            now,
            Some(i),
            format!("group_replication plugin now {plugin:?}"),
        );
        self.relink(now);
        Ok(())
    }

    /// group_replication_member_weight of member `i` (used by later elections).
    /// Shows `column` of member `i`'s row as `value` in every view (`None`: as it is).
    pub fn corrupt_cell(&mut self, i: usize, column: Column, value: Option<Value>, now: Instant) {
        let now = self.tick(now);
        let uuid = self.members[i].info.uuid.clone();
        self.corrupt
            .retain(|(u, c, _)| !(u == &uuid && *c == column));
        let what = match &value {
            Some(v) => format!("{column:?} shown as {v:?} (fault injected)"),
            None => format!("{column:?} shown as it is again"),
        };
        if let Some(v) = value {
            self.corrupt.push((uuid, column, v));
        }
        self.log(now, Some(i), what);
    }

    /// The value shown for `column` of `row`: a corrupted one, else the real one.
    pub fn cell(&self, row: &MemberRow, column: Column) -> Value {
        self.corrupt
            .iter()
            .find(|(u, c, _)| *u == row.member_id && *c == column)
            .map_or_else(|| column.value(row), |(_, _, v)| v.clone())
    }

    pub fn set_weight(&mut self, i: usize, weight: u32, now: Instant) {
        let now = self.tick(now);
        self.members[i].info.weight = weight;
        self.log(now, Some(i), format!("member_weight = {weight}"));
    }

    /// group_replication_switch_to_multi_primary_mode(): every ONLINE member is PRIMARY.
    pub fn set_multi_primary(&mut self, now: Instant) {
        let now = self.tick(now);
        self.single_primary = false;
        for m in &mut self.members {
            for e in m.view.iter_mut().filter(|e| e.state == MemberState::Online) {
                e.role = MemberRole::Primary;
            }
        }
        self.log(now, None, "multi-primary mode".into());
    }

    /// group_replication_switch_to_single_primary_mode(uuid): `primary`, or an elected one.
    pub fn set_single_primary(&mut self, primary: Option<usize>, now: Instant) {
        let now = self.tick(now);
        self.single_primary = true;
        for c in 0..self.members.len() {
            let m = &mut self.members[c];
            let target_online =
                primary.is_some_and(|p| m.entry(p).is_some_and(|e| e.state == MemberState::Online));
            for e in &mut m.view {
                e.role = if target_online && Some(e.idx) == primary {
                    MemberRole::Primary
                } else {
                    MemberRole::Secondary
                };
            }
            if target_online && primary == Some(c) {
                m.writable_at = now + self.timings.primary_writable_after;
            }
            self.elect(c, now);
        }
        self.log(
            now,
            None,
            format!("single-primary mode, primary {primary:?}"),
        );
    }

    /// Records something the caller did (e.g. to a member's endpoint) in the event log.
    pub fn note(&mut self, member: Option<usize>, what: String, now: Instant) {
        let now = self.tick(now);
        self.log(now, member, what);
    }

    // ----- helpers -----

    fn tick(&mut self, now: Instant) -> Instant {
        self.advance(now);
        self.now
    }

    fn log(&mut self, at: Instant, member: Option<usize>, what: String) {
        let event = Event {
            at: at.saturating_duration_since(self.started),
            member,
            what,
        };
        log::info!("sim: {event}");
        self.events.push(event);
    }

    fn fresh_side(&self) -> usize {
        self.members.iter().map(|m| m.side).max().unwrap_or(0) + 1
    }

    /// Takes part in the group: running, started, ONLINE or RECOVERING in its own view.
    fn participating(&self, i: usize) -> bool {
        let m = &self.members[i];
        m.alive
            && m.plugin == Plugin::Started
            && own_entry(m, i).is_some_and(|e| e.state.in_group())
    }

    /// The network lets `a` and `b` talk.
    fn reachable(&self, a: usize, b: usize) -> bool {
        let (ma, mb) = (&self.members[a], &self.members[b]);
        ma.alive && mb.alive && ma.side == mb.side
    }

    /// `a` gets group messages from `b`.
    fn hears(&self, a: usize, b: usize) -> bool {
        self.reachable(a, b) && self.participating(b)
    }

    /// Records when each member stopped hearing each other one.
    fn relink(&mut self, at: Instant) {
        let n = self.members.len();
        for a in 0..n {
            for b in (0..n).filter(|&b| b != a) {
                let hears = self.hears(a, b);
                let lost = &mut self.lost[a][b];
                if hears {
                    *lost = None;
                } else if lost.is_none() {
                    *lost = Some(at);
                }
            }
        }
    }

    /// Members that share `i`'s group and hear it (itself included).
    fn group_of(&self, i: usize) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&c| {
                c == i
                    || (self.participating(c)
                        && self.hears(c, i)
                        && self.members[c].entry(i).is_some_and(|e| e.state.in_group()))
            })
            .collect()
    }

    /// In single-primary mode, if `observer`'s view has no primary, elects one among its
    /// ONLINE members: highest weight, then lowest uuid.
    fn elect(&mut self, observer: usize, at: Instant) {
        if !self.single_primary {
            return;
        }
        let view = &self.members[observer].view;
        if view.iter().any(|e| e.role == MemberRole::Primary) {
            return;
        }
        let Some(winner) = view
            .iter()
            .filter(|e| e.state == MemberState::Online)
            .map(|e| e.idx)
            .max_by(|&a, &b| {
                let (ia, ib) = (&self.members[a].info, &self.members[b].info);
                ia.weight
                    .cmp(&ib.weight)
                    .then_with(|| ib.uuid.cmp(&ia.uuid))
            })
        else {
            return;
        };
        if let Some(e) = self.members[observer].entry_mut(winner) {
            e.role = MemberRole::Primary;
        }
        if winner == observer {
            self.members[winner].writable_at = at + self.timings.primary_writable_after;
        }
        self.log(
            at,
            Some(observer),
            format!("elects member {winner} PRIMARY"),
        );
    }

    /// Leaves the group for ERROR, alone in its view; super_read_only ON.
    fn enter_error(&mut self, i: usize, at: Instant, why: &str) {
        let m = &mut self.members[i];
        m.view = vec![Entry {
            idx: i,
            state: MemberState::Error,
            role: MemberRole::Secondary,
        }];
        m.blocked_since = None;
        m.learns_expulsion = false;
        m.rejoin = None;
        self.log(at, Some(i), format!("ERROR: {why}"));
        self.relink(at);
    }

    fn start_rejoin(&mut self, i: usize, at: Instant) {
        let m = &mut self.members[i];
        m.plugin = Plugin::Started;
        m.view = vec![Entry {
            idx: i,
            state: MemberState::Offline,
            role: MemberRole::Secondary,
        }];
        m.blocked_since = None;
        m.learns_expulsion = false;
        m.rejoin = Some((RejoinPhase::Offline, at + self.timings.rejoin_offline_for));
        self.log(at, Some(i), "starts group replication: OFFLINE".into());
        self.relink(at);
    }

    fn rejoin_recovering(&mut self, i: usize, at: Instant) {
        let n = self.members.len();
        let donor = (0..n)
            .filter(|&b| {
                b != i
                    && self.reachable(i, b)
                    && self.participating(b)
                    && own_entry(&self.members[b], b)
                        .is_some_and(|e| e.state == MemberState::Online)
            })
            .max_by_key(|&b| self.members[b].has_majority());
        let Some(donor) = donor else {
            self.enter_error(i, at, "cannot join: no reachable ONLINE member");
            return;
        };
        let joining = Entry {
            idx: i,
            state: MemberState::Recovering,
            role: MemberRole::Secondary,
        };
        let peers: Vec<usize> = self.members[donor]
            .view
            .iter()
            .filter(|e| e.state.in_group() && e.idx != i)
            .map(|e| e.idx)
            .filter(|&c| self.participating(c) && self.reachable(i, c))
            .collect();
        for c in peers {
            self.members[c].upsert(joining);
        }
        let mut view = self.members[donor].view.clone();
        view.retain(|e| e.idx != i);
        let m = &mut self.members[i];
        m.view = view;
        m.upsert(joining);
        m.rejoin = Some((RejoinPhase::Recovering, at + self.timings.recovering_for));
        self.log(
            at,
            Some(i),
            format!("RECOVERING (joined through member {donor})"),
        );
    }

    fn rejoin_online(&mut self, i: usize, at: Instant) {
        let role = if self.single_primary {
            MemberRole::Secondary
        } else {
            MemberRole::Primary
        };
        for c in 0..self.members.len() {
            let member = &mut self.members[c];
            if (c == i || member.alive)
                && let Some(e) = member.entry_mut(i)
                && e.state == MemberState::Recovering
            {
                e.state = MemberState::Online;
                e.role = role;
            }
        }
        self.members[i].rejoin = None;
        self.log(at, Some(i), format!("ONLINE as {role}"));
    }
}

fn own_entry(m: &Member, i: usize) -> Option<&Entry> {
    m.entry(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const UA: Duration = Duration::from_millis(100);
    const EA: Duration = Duration::from_millis(200);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn world(n: usize, timings: Timings) -> (World, Instant) {
        let t0 = Instant::now();
        let infos = (0..n)
            .map(|i| MemberInfo {
                uuid: format!("00000000-0000-0000-0000-{:012}", i + 1),
                report_host: format!("10.0.0.{}", i + 1),
                hostname: format!("h{i}"),
                port: 3306,
                version: "8.0.36".into(),
                weight: 50,
            })
            .collect();
        let timings = Timings {
            unreachable_after: UA,
            expel_after: EA,
            rejoin_offline_for: ms(10),
            recovering_for: ms(20),
            ..timings
        };
        (
            World::new(infos, vec![Plugin::Started; n], true, timings, t0),
            t0,
        )
    }

    /// Member `i`'s view as "index:STATE:ROLE" strings, after advancing to `at`.
    fn view(w: &mut World, i: usize, at: Instant) -> Vec<String> {
        w.advance(at);
        w.rows(i)
            .iter()
            .map(|r| {
                let idx = w
                    .index_of(&r.member_id)
                    .map_or("-".into(), |i| i.to_string());
                let role = r.member_role.map_or("", |r| r.as_str());
                format!("{idx}:{}:{role}", r.member_state)
            })
            .collect()
    }

    #[test]
    fn starts_with_lowest_uuid_primary() {
        let (mut w, t0) = world(3, Timings::default());
        assert_eq!(
            view(&mut w, 1, t0),
            [
                "0:ONLINE:PRIMARY",
                "1:ONLINE:SECONDARY",
                "2:ONLINE:SECONDARY"
            ]
        );
        assert!(!w.super_read_only(0));
        assert!(w.super_read_only(1));
    }

    #[test]
    fn primary_crash_unreachable_then_expelled_and_reelected_by_weight() {
        let (mut w, t0) = world(3, Timings::default());
        w.set_weight(2, 60, t0);
        w.crash(0, t0).unwrap();
        assert_eq!(view(&mut w, 1, t0 + UA - ms(1))[0], "0:ONLINE:PRIMARY");
        assert_eq!(view(&mut w, 1, t0 + UA)[0], "0:UNREACHABLE:PRIMARY");
        assert!(w.super_read_only(2));
        assert_eq!(
            view(&mut w, 1, t0 + UA + EA),
            ["1:ONLINE:SECONDARY", "2:ONLINE:PRIMARY"]
        );
        assert_eq!(view(&mut w, 2, t0 + UA + EA), view(&mut w, 1, t0 + UA + EA));
        assert!(!w.super_read_only(2));
    }

    #[test]
    fn equal_weights_elect_lowest_uuid() {
        let (mut w, t0) = world(3, Timings::default());
        w.crash(0, t0).unwrap();
        assert_eq!(view(&mut w, 2, t0 + ms(1000))[0], "1:ONLINE:PRIMARY");
    }

    #[test]
    fn minority_blocks_majority_moves_on() {
        let (mut w, t0) = world(3, Timings::default());
        w.partition(&[&[0], &[1, 2]], t0).unwrap();
        let later = t0 + ms(10_000);
        assert_eq!(
            view(&mut w, 0, later),
            [
                "0:ONLINE:PRIMARY",
                "1:UNREACHABLE:SECONDARY",
                "2:UNREACHABLE:SECONDARY"
            ]
        );
        assert_eq!(
            view(&mut w, 1, later),
            ["1:ONLINE:PRIMARY", "2:ONLINE:SECONDARY"]
        );
        // The blocked old primary still believes it is primary: the agent must not trust it.
        assert!(!w.super_read_only(0));
    }

    #[test]
    fn minority_goes_error_after_unreachable_majority_timeout() {
        let timings = Timings {
            unreachable_majority_timeout: Some(ms(50)),
            ..Timings::default()
        };
        let (mut w, t0) = world(3, timings);
        w.partition(&[&[0], &[1, 2]], t0).unwrap();
        assert_eq!(view(&mut w, 0, t0 + UA + ms(49))[0], "0:ONLINE:PRIMARY");
        assert_eq!(view(&mut w, 0, t0 + UA + ms(50)), ["0:ERROR:"]);
        assert!(w.super_read_only(0));
    }

    #[test]
    fn heal_makes_expelled_minority_rejoin_as_secondary() {
        let (mut w, t0) = world(3, Timings::default());
        w.partition(&[&[0], &[1, 2]], t0).unwrap();
        let t1 = t0 + ms(1000);
        w.heal(t1).unwrap();
        assert_eq!(view(&mut w, 0, t1), ["0:OFFLINE:"]);
        assert_eq!(view(&mut w, 0, t1 + ms(10))[0], "0:RECOVERING:SECONDARY");
        assert_eq!(view(&mut w, 1, t1 + ms(10))[0], "0:RECOVERING:SECONDARY");
        let all = [
            "0:ONLINE:SECONDARY",
            "1:ONLINE:PRIMARY",
            "2:ONLINE:SECONDARY",
        ];
        for i in 0..3 {
            assert_eq!(view(&mut w, i, t1 + ms(30)), all, "member {i}");
        }
    }

    #[test]
    fn heal_without_auto_rejoin_leaves_error() {
        let timings = Timings {
            auto_rejoin: false,
            ..Timings::default()
        };
        let (mut w, t0) = world(3, timings);
        w.partition(&[&[0], &[1, 2]], t0).unwrap();
        w.heal(t0 + ms(1000)).unwrap();
        assert_eq!(view(&mut w, 0, t0 + ms(2000)), ["0:ERROR:"]);
        w.rejoin(0, t0 + ms(2000)).unwrap();
        assert_eq!(view(&mut w, 0, t0 + ms(2030))[0], "0:ONLINE:SECONDARY");
    }

    #[test]
    fn heal_before_expel_restores_everyone() {
        let (mut w, t0) = world(4, Timings::default());
        w.partition(&[&[0, 1], &[2, 3]], t0).unwrap();
        // 2 of 4 is no majority: both sides block, nobody is expelled.
        let t1 = t0 + ms(5000);
        assert_eq!(view(&mut w, 2, t1)[0], "0:UNREACHABLE:PRIMARY");
        assert_eq!(view(&mut w, 2, t1).len(), 4);
        w.heal(t1).unwrap();
        for i in 0..4 {
            assert!(view(&mut w, i, t1).iter().all(|r| r.contains("ONLINE")));
        }
        assert_eq!(view(&mut w, 3, t1)[0], "0:ONLINE:PRIMARY");
    }

    #[test]
    fn expelled_member_learns_it() {
        let (mut w, t0) = world(3, Timings::default());
        w.expel(2, t0).unwrap();
        assert_eq!(
            view(&mut w, 2, t0 + UA),
            [
                "0:UNREACHABLE:PRIMARY",
                "1:UNREACHABLE:SECONDARY",
                "2:ONLINE:SECONDARY"
            ]
        );
        assert_eq!(view(&mut w, 0, t0 + UA)[2], "2:UNREACHABLE:SECONDARY");
        assert_eq!(view(&mut w, 2, t0 + UA + EA), ["2:ERROR:"]);
        assert_eq!(view(&mut w, 0, t0 + UA + EA).len(), 2);
    }

    #[test]
    fn switchover_and_multi_primary() {
        let (mut w, t0) = world(3, Timings::default());
        w.switchover(2, t0).unwrap();
        assert_eq!(
            view(&mut w, 0, t0),
            [
                "0:ONLINE:SECONDARY",
                "1:ONLINE:SECONDARY",
                "2:ONLINE:PRIMARY"
            ]
        );
        assert!(w.super_read_only(0) && !w.super_read_only(2));
        w.set_multi_primary(t0);
        assert!(
            view(&mut w, 1, t0)
                .iter()
                .all(|r| r.ends_with("ONLINE:PRIMARY"))
        );
        assert!((0..3).all(|i| !w.super_read_only(i)));
        w.set_single_primary(Some(1), t0);
        assert_eq!(view(&mut w, 0, t0)[1], "1:ONLINE:PRIMARY");
        assert!(w.switchover(1, t0).is_ok());
    }

    #[test]
    fn restart_then_rejoin() {
        let (mut w, t0) = world(3, Timings::default());
        w.crash(1, t0).unwrap();
        let t1 = t0 + ms(1000);
        w.restart(1, t1).unwrap();
        assert_eq!(w.rows(1)[0].member_id, "");
        assert_eq!(w.rows(1)[0].member_port, None);
        assert_eq!(view(&mut w, 1, t1), ["-:OFFLINE:"]);
        w.rejoin(1, t1).unwrap();
        assert_eq!(view(&mut w, 1, t1), ["1:OFFLINE:"]);
        assert_eq!(view(&mut w, 0, t1 + ms(10))[1], "1:RECOVERING:SECONDARY");
        assert_eq!(view(&mut w, 2, t1 + ms(30))[1], "1:ONLINE:SECONDARY");
    }

    #[test]
    fn plugin_states() {
        let (mut w, t0) = world(3, Timings::default());
        w.set_plugin(0, Plugin::NotLoaded, t0).unwrap();
        assert!(w.rows(0).is_empty());
        assert!(!w.super_read_only(0));
        // The others dropped it at once and elected a new primary.
        assert_eq!(
            view(&mut w, 1, t0),
            ["1:ONLINE:PRIMARY", "2:ONLINE:SECONDARY"]
        );
        w.set_plugin(2, Plugin::NotStarted, t0).unwrap();
        assert_eq!(view(&mut w, 2, t0), ["-:OFFLINE:"]);
        assert!(w.rejoin(0, t0).is_err());
    }

    #[test]
    fn two_crashes_of_three_block_the_survivor() {
        let (mut w, t0) = world(3, Timings::default());
        w.crash(0, t0).unwrap();
        w.crash(1, t0).unwrap();
        assert_eq!(
            view(&mut w, 2, t0 + ms(10_000)),
            [
                "0:UNREACHABLE:PRIMARY",
                "1:UNREACHABLE:SECONDARY",
                "2:ONLINE:SECONDARY"
            ]
        );
    }

    #[test]
    fn a_blocked_minority_primary_commits_nothing_while_the_majority_does() {
        let (mut w, t0) = world(3, Timings::default());
        w.partition(&[&[0], &[1, 2]], t0).unwrap();
        w.advance(t0 + UA + EA);
        // Member 0 still says PRIMARY and writable, yet nothing it runs commits.
        assert!(!w.super_read_only(0));
        assert!(!w.can_commit(0));
        assert_eq!(view(&mut w, 1, t0 + UA + EA)[0], "1:ONLINE:PRIMARY");
        assert!(w.can_commit(1));
        assert!(!w.can_commit(2), "a secondary is read-only");
    }

    #[test]
    fn with_no_expel_timeout_a_minority_still_cannot_expel_the_majority() {
        let (mut w, t0) = world(3, Timings::default());
        w.timings.expel_after = Duration::ZERO;
        w.partition(&[&[0], &[1, 2]], t0).unwrap();
        // Suspicion and expulsion fall due together: member 0 suspects both others
        // first, and then has no majority to expel them with.
        assert_eq!(
            view(&mut w, 0, t0 + UA + ms(50)),
            [
                "0:ONLINE:PRIMARY",
                "1:UNREACHABLE:SECONDARY",
                "2:UNREACHABLE:SECONDARY"
            ]
        );
        assert_eq!(
            view(&mut w, 1, t0 + UA + ms(50)),
            ["1:ONLINE:PRIMARY", "2:ONLINE:SECONDARY"]
        );
    }

    #[test]
    fn a_switchover_blocks_without_a_majority_or_with_a_member_unreachable() {
        let (mut w, t0) = world(3, Timings::default());
        w.partition(&[&[0], &[1, 2]], t0).unwrap();
        let err = w.switchover(0, t0).unwrap_err().to_string();
        assert!(err.contains("no majority"), "{err}");
        w.advance(t0 + UA);
        let err = w.switchover(2, t0 + UA).unwrap_err().to_string();
        assert!(err.contains("UNREACHABLE"), "{err}");
        assert_eq!(view(&mut w, 2, t0 + UA)[0], "0:UNREACHABLE:PRIMARY");
    }

    #[test]
    fn a_member_cut_off_but_not_expelled_learns_the_new_primary_when_it_hears_the_group() {
        let (mut w, t0) = world(3, Timings::default());
        w.partition(&[&[0, 1], &[2]], t0).unwrap();
        // Before anyone is suspected the majority changes primary; member 2 misses it.
        w.switchover(1, t0).unwrap();
        assert_eq!(view(&mut w, 2, t0)[0], "0:ONLINE:PRIMARY");
        let t1 = t0 + UA - ms(1);
        w.heal(t1).unwrap();
        assert_eq!(
            view(&mut w, 2, t1),
            [
                "0:ONLINE:SECONDARY",
                "1:ONLINE:PRIMARY",
                "2:ONLINE:SECONDARY"
            ]
        );
    }
}
