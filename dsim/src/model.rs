//! The simulated MGR group as the agents see it: each member's view (the lab's
//! simulated group's state machine, driven by simulated time), and the lease row with
//! MGR's rules: only a writable primary with a majority commits, a take (run with
//! group_replication_consistency = BEFORE) sees the latest committed row, and each
//! member's own reads see the row as it last applied it.

use std::time::{Duration, Instant};

use vip_agent::core::{CommitError, LeaseOp, LeaseRow};
use vip_agent::mgr::{self, NodeStatus};
use vip_tests::sim::model::{MemberInfo, Plugin, Timings};
use vip_tests::sim::state::World;

pub struct Group {
    pub world: World,
    base: Instant,
    /// The row as committed in the group.
    committed: Option<LeaseRow>,
    /// The row as each member last applied it.
    visible: Vec<Option<LeaseRow>>,
    pub uuids: Vec<String>,
}

impl Group {
    pub fn new(n: usize, timings: Timings) -> Group {
        let base = Instant::now();
        let uuids: Vec<String> = (0..n)
            .map(|i| format!("00000000-0000-0000-0000-{:012}", i + 1))
            .collect();
        let infos = uuids
            .iter()
            .enumerate()
            .map(|(i, uuid)| MemberInfo {
                uuid: uuid.clone(),
                report_host: format!("198.51.100.{}", 11 + i),
                hostname: format!("h{}", i + 1),
                port: 3306,
                version: "8.0.36".into(),
                weight: 50,
            })
            .collect();
        let world = World::new(infos, vec![Plugin::Started; n], true, timings, base);
        Group {
            world,
            base,
            committed: None,
            visible: vec![None; n],
            uuids,
        }
    }

    /// Simulated time as the group's clock.
    pub fn at(&self, t: Duration) -> Instant {
        self.base + t
    }

    pub fn advance(&mut self, t: Duration) {
        let at = self.at(t);
        self.world.advance(at);
    }

    /// What member `i`'s agent reads in one poll: its view, its uuid, the lease row.
    pub fn poll(&self, i: usize) -> (NodeStatus, Option<String>, Option<LeaseRow>) {
        if !self.world.alive(i) {
            let down = NodeStatus::MysqldDown {
                reason: "connection refused".into(),
            };
            return (down, Some(self.uuids[i].clone()), None);
        }
        let rows: Vec<mgr::Member> = self
            .world
            .rows(i)
            .into_iter()
            .map(|r| mgr::Member {
                uuid: r.member_id.clone(),
                host: r.member_host.clone(),
                port: r.member_port,
                state: mgr::MemberState::parse(r.member_state.as_str()),
                role: r
                    .member_role
                    .and_then(|role| mgr::MemberRole::parse(role.as_str())),
            })
            .collect();
        let status = mgr::classify(&self.uuids[i], self.world.single_primary(), false, &rows);
        (status, Some(self.uuids[i].clone()), self.visible[i].clone())
    }

    /// Runs `op` for member `i` now. `Err(Failed)`: it cannot commit (not the writable
    /// primary of a majority), as a blocked transaction times out.
    pub fn commit(&mut self, i: usize, op: &LeaseOp) -> Result<LeaseRow, CommitError> {
        if !self.can_commit(i) {
            return Err(CommitError::Failed(
                "blocked: no majority, or not the primary".into(),
            ));
        }
        let me = &self.uuids[i];
        let next = match (op, &self.committed) {
            (LeaseOp::Take { expect }, row) if *expect == row.as_ref().map(LeaseRow::version) => {
                LeaseRow {
                    holder: me.clone(),
                    term: row.as_ref().map_or(0, |r| r.term) + 1,
                    renewals: 0,
                    settled: false,
                }
            }
            (LeaseOp::Renew { term, settled }, Some(row))
                if row.holder == *me && row.term == *term =>
            {
                LeaseRow {
                    renewals: row.renewals + 1,
                    settled: *settled,
                    ..row.clone()
                }
            }
            _ => {
                return Err(CommitError::Stale {
                    current: self.committed.clone(),
                });
            }
        };
        self.committed = Some(next.clone());
        // The committer reads its own write.
        self.visible[i] = Some(next.clone());
        Ok(next)
    }

    /// Member `j` applies `row` (if it is newer than what it has).
    pub fn apply(&mut self, j: usize, row: LeaseRow) {
        let newer = self.visible[j]
            .as_ref()
            .is_none_or(|v| (row.term, row.renewals) > (v.term, v.renewals));
        if newer && self.world.alive(j) {
            self.visible[j] = Some(row);
        }
    }

    /// The committed row, for members that catch up (a rejoin, a healed partition).
    pub fn committed(&self) -> Option<LeaseRow> {
        self.committed.clone()
    }

    /// Which members would receive a transaction `i` committed now.
    pub fn receivers(&self, i: usize) -> Vec<usize> {
        (0..self.uuids.len())
            .filter(|&j| j != i && self.world.connected(i, j))
            .collect()
    }

    /// The member every ONLINE member of the majority sees as its writable primary.
    pub fn primary(&self) -> Option<usize> {
        (0..self.uuids.len()).find(|&i| self.can_commit(i))
    }

    /// Whether every member in the group (ONLINE in its own view) names the same primary:
    /// only then is the group settled enough to judge where the VIPs should be.
    pub fn agrees(&self) -> bool {
        let mut primaries = (0..self.uuids.len()).filter_map(|i| match self.poll(i).0 {
            NodeStatus::Primary { me, .. } => Some(me),
            NodeStatus::Secondary { members, .. } => members
                .iter()
                .find(|m| m.role == Some(mgr::MemberRole::Primary))
                .map(|m| m.uuid.clone()),
            _ => None,
        });
        let first = primaries.next();
        primaries.all(|p| Some(p) == first)
    }

    /// The simulated group's own rule, and a majority of every member the group has:
    /// after a chain of partitions the simulated views can disagree in ways MGR's
    /// consensus never allows, and two members must never both commit (the agents'
    /// safety does not depend on it: the lease row is a single register; only their
    /// liveness would suffer from two primaries taking it from each other).
    fn can_commit(&self, i: usize) -> bool {
        let n = self.uuids.len();
        let eligible = |i: usize| {
            let with = (0..n)
                .filter(|&j| j == i || self.world.connected(i, j))
                .count();
            self.world.can_commit(i) && with * 2 > n
        };
        // Should two still qualify, only one commits: MGR's consensus has one order.
        (0..n).find(|&j| eligible(j)) == Some(i)
    }
}
