//! The write lease, as one agent sees it: taking the lease row, renewing it, and when the
//! lease (this agent's, or the previous holder's) is certainly over. Pure.
//!
//! The row lives in the group's database and only MGR's primary can commit to it, with a
//! majority (see docs/coordination.md). This module decides which commit to try next and
//! what each outcome means; the runner runs the SQL and hands the outcome back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A reading of the local monotonic clock, as a duration since the agent started. The
/// core never reads a clock: every event brings its `Now`.
pub type Now = Duration;

/// How soon a failed take is tried again.
pub const TAKE_RETRY: Duration = Duration::from_millis(50);

/// The lease row: who holds the lease, in which term, and how often it was renewed.
/// A version is `(term, renewals)`; every commit makes a new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRow {
    pub holder: String,
    pub term: u64,
    pub renewals: u64,
    /// The holder had waited out every earlier lease when it committed this version: the
    /// holder's own lease is the only one that can still run.
    pub settled: bool,
}

impl LeaseRow {
    pub fn version(&self) -> (u64, u64) {
        (self.term, self.renewals)
    }
}

/// What to commit to the lease row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOp {
    /// Become the holder, in term `expect.0 + 1`, if the row is still at version
    /// `expect` (`None`: there is no row yet). Run with group_replication_consistency =
    /// BEFORE, so a new primary first applies the old primary's backlog.
    Take { expect: Option<(u64, u64)> },
    /// One more renewal of `term`, if this agent still holds it; `settled`: its wait for
    /// earlier leases is over.
    Renew { term: u64, settled: bool },
}

/// Why a commit did not happen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitError {
    /// The row is not at the version expected (or not ours any more); `current` is the
    /// row as the group has it now (read with group_replication_consistency = BEFORE
    /// after the failed update), for the next attempt to expect.
    Stale { current: Option<LeaseRow> },
    /// No answer in time, refused (not writable, no quorum), or the connection failed.
    Failed(String),
}

/// The lease's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a committed renewal keeps the lease, counted from its sending.
    pub lease: Duration,
    /// How often the holder renews.
    pub renew: Duration,
    /// The largest rate difference between two hosts' clocks, in parts per million.
    pub drift_ppm: u32,
}

impl Timing {
    pub const DEFAULT: Timing = Timing {
        lease: Duration::from_secs(3),
        renew: Duration::from_secs(1),
        drift_ppm: 10_000,
    };

    /// `d` shortened by the drift bound: what this clock may count for another's `d`.
    pub fn shortened(&self, d: Duration) -> Duration {
        d.saturating_sub(d * self.drift_ppm / 1_000_000)
    }

    /// `d` lengthened by the drift bound.
    pub fn lengthened(&self, d: Duration) -> Duration {
        d + d * self.drift_ppm / 1_000_000
    }
}

/// The write lease as this agent holds it, or is getting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not the holder.
    Idle,
    /// A take is in flight, sent at `sent`; `waits`: until when each other agent that
    /// held the row (as far as this one saw) may still hold a lease.
    Taking {
        attempt: u64,
        sent: Now,
        waits: BTreeMap<String, Now>,
        /// Every lease (and sub-lease) granted under versions up to the one taken has
        /// ended by then.
        bound: Option<Now>,
    },
    /// This agent holds term `term`. The lease is valid until `valid_until` (`None`: no
    /// renewal of this term committed yet). Binding also waits until every lease in
    /// `waits` has ended, or its holder confirmed its release.
    Holding {
        term: u64,
        valid_until: Option<Now>,
        waits: BTreeMap<String, Now>,
        /// When every lease and sub-lease granted under the versions up to the one taken
        /// has certainly ended, whoever granted them (this agent too, in an earlier term
        /// or an earlier run): only then is a read VIP nobody claims free.
        taken_over_until: Option<Now>,
        /// A renewal in flight, and when it was sent.
        renewing: Option<(u64, Now)>,
        /// When the last renewal was sent (committed or not).
        last_sent: Now,
    },
}

/// The write lease: this agent's state and what it saw of the row.
#[derive(Clone, Debug)]
pub struct WriteLease {
    pub timing: Timing,
    me: String,
    pub state: State,
    /// The row as last seen, and when its version was first seen.
    seen: Option<(LeaseRow, Now)>,
    next_attempt: u64,
    /// Renewals sent before this extend nothing (set when holding is suspended).
    not_before: Now,
    /// No take before this (after a failed one).
    next_take: Now,
}

impl WriteLease {
    pub fn new(me: &str, timing: Timing) -> WriteLease {
        WriteLease {
            timing,
            me: me.to_string(),
            state: State::Idle,
            seen: None,
            next_attempt: 1,
            not_before: Duration::ZERO,
            next_take: Duration::ZERO,
        }
    }

    pub fn set_me(&mut self, me: &str) {
        if self.me != me {
            self.me = me.to_string();
            self.state = State::Idle;
        }
    }

    /// The row as a poll read it (`None`: there is no row).
    pub fn observe(&mut self, row: Option<LeaseRow>, now: Now) {
        match (row, &self.seen) {
            (Some(r), Some((old, _))) if r.version() == old.version() => {}
            (Some(r), _) => self.seen = Some((r, now)),
            (None, _) => self.seen = None,
        }
    }

    /// Whether a take is in flight: a release request must wait for its outcome.
    pub fn taking(&self) -> bool {
        matches!(self.state, State::Taking { .. })
    }

    /// The term this agent holds, whatever the lease's validity.
    pub fn term(&self) -> Option<u64> {
        match self.state {
            State::Holding { term, .. } => Some(term),
            _ => None,
        }
    }

    /// Whether this agent may hold the write VIP at `now` (its view aside).
    pub fn may_hold(&self, now: Now) -> bool {
        match &self.state {
            State::Holding {
                valid_until: Some(until),
                waits,
                ..
            } => now < *until && waits.values().all(|t| now >= *t),
            _ => false,
        }
    }

    /// Until when this agent's lease is valid, if it holds one now.
    pub fn valid_until(&self, now: Now) -> Option<Now> {
        match &self.state {
            State::Holding {
                valid_until: Some(until),
                ..
            } if now < *until => Some(*until),
            _ => None,
        }
    }

    /// The agents to ask to release, while waiting out their leases (a wait for an
    /// unknown holder, `""`, only ends with time).
    pub fn waiting_for(&self, now: Now) -> Vec<String> {
        match &self.state {
            State::Holding { waits, .. } => waits
                .iter()
                .filter(|(who, t)| now < **t && !who.is_empty())
                .map(|(who, _)| who.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// An agent confirmed over the peer port that it holds the VIP no more (and cannot
    /// take it again without a new take): its lease needs no more waiting.
    pub fn previous_released(&mut self, who: &str) {
        if let State::Holding { waits, .. } = &mut self.state {
            waits.remove(who);
        }
    }

    /// The commit to try now, if any: a take when this agent is the primary and does not
    /// hold the lease, a renewal when one is due. `primary`: its own view says it is.
    pub fn due(&mut self, primary: bool, now: Now) -> Option<(u64, LeaseOp)> {
        match &mut self.state {
            State::Idle if primary && now >= self.next_take => {
                let attempt = self.next_attempt;
                self.next_attempt += 1;
                let expect = self.seen.as_ref().map(|(r, _)| r.version());
                let waits = self.waits_for_taking(now);
                let bound = self
                    .seen
                    .as_ref()
                    .map(|(_, first)| *first + self.timing.lengthened(self.timing.lease));
                self.state = State::Taking {
                    attempt,
                    sent: now,
                    waits,
                    bound,
                };
                Some((attempt, LeaseOp::Take { expect }))
            }
            State::Holding {
                term,
                renewing,
                last_sent,
                valid_until,
                waits,
                ..
            } if primary && renewing.is_none() => {
                let due = valid_until.is_none() || now >= *last_sent + self.timing.renew;
                if !due {
                    return None;
                }
                let settled = waits.values().all(|t| now >= *t);
                let attempt = self.next_attempt;
                self.next_attempt += 1;
                *renewing = Some((attempt, now));
                *last_sent = now;
                Some((
                    attempt,
                    LeaseOp::Renew {
                        term: *term,
                        settled,
                    },
                ))
            }
            _ => None,
        }
    }

    /// This agent stops being the primary (or stops for any reason): it holds no lease
    /// from now on, whatever the row says.
    pub fn give_up(&mut self) {
        self.state = State::Idle;
    }

    /// The outcome of commit `attempt`, at `now`.
    pub fn committed(&mut self, attempt: u64, result: Result<LeaseRow, CommitError>, now: Now) {
        match (&mut self.state, result) {
            (
                State::Taking {
                    attempt: a,
                    sent,
                    waits,
                    bound,
                },
                Ok(row),
            ) if *a == attempt => {
                let sent = *sent;
                let mut waits = std::mem::take(waits);
                waits.retain(|_, t| *t > now);
                let taken_over_until = bound.filter(|b| *b > now);
                self.seen = Some((row.clone(), now));
                self.state = State::Holding {
                    term: row.term,
                    // A take is a renewal too: valid from its sending.
                    valid_until: (sent >= self.not_before)
                        .then(|| sent + self.timing.shortened(self.timing.lease)),
                    waits,
                    taken_over_until,
                    renewing: None,
                    last_sent: sent,
                };
            }
            (State::Taking { attempt: a, .. }, Err(e)) if *a == attempt => {
                self.state = State::Idle;
                self.next_take = now + TAKE_RETRY;
                if let CommitError::Stale { current } = e {
                    self.observe(current, now);
                }
            }
            (
                State::Holding {
                    term,
                    valid_until,
                    renewing,
                    ..
                },
                result,
            ) if renewing.is_some_and(|(a, _)| a == attempt) => {
                let (_, sent) = renewing.take().expect("checked above");
                match result {
                    Ok(row) if row.term == *term && row.holder == self.me => {
                        if sent >= self.not_before {
                            let until = sent + self.timing.shortened(self.timing.lease);
                            *valid_until = Some(valid_until.map_or(until, |v| v.max(until)));
                        }
                        self.seen = Some((row, now));
                    }
                    // Someone else took the row: this term is over.
                    Err(CommitError::Stale { current }) => {
                        self.state = State::Idle;
                        self.observe(current, now);
                    }
                    Ok(_) => self.state = State::Idle,
                    Err(CommitError::Failed(_)) => {}
                }
            }
            _ => {}
        }
    }

    /// Until when this agent may hold the write VIP, if it may now.
    pub fn hold_until(&self, now: Now) -> Option<Now> {
        match &self.state {
            State::Holding {
                valid_until: Some(until),
                ..
            } if self.may_hold(now) => Some(*until),
            _ => None,
        }
    }

    /// When the previous holder's lease (and every sub-lease it granted) has certainly
    /// ended, for the term this agent holds; `None`: it took over from nobody else.
    pub fn taken_over_until(&self) -> Option<Now> {
        match &self.state {
            State::Holding {
                taken_over_until, ..
            } => *taken_over_until,
            _ => None,
        }
    }

    /// The agent did not run for a while: the lease counts as lapsed until a renewal
    /// sent from `now` on commits.
    pub fn suspend(&mut self, now: Now) {
        self.not_before = now;
        if let State::Holding {
            valid_until,
            renewing,
            ..
        } = &mut self.state
        {
            *valid_until = None;
            *renewing = None;
        }
    }

    /// What a take of the row as last seen must wait for. A settled version of another
    /// holder: that holder's lease alone (its release confirmation ends the wait). A
    /// version not settled (its holder may not have waited out the leases before it, this
    /// agent included): any lease at all, until the bound (no confirmation ends it). Either
    /// way every lease whose renewal committed before the version was first seen, at `f`,
    /// has ended by `f + L(1+ε)`.
    fn waits_for_taking(&self, now: Now) -> BTreeMap<String, Now> {
        let mut waits = BTreeMap::new();
        let Some((row, first)) = &self.seen else {
            return waits;
        };
        let until = *first + self.timing.lengthened(self.timing.lease);
        if until <= now {
            return waits;
        }
        if !row.settled {
            waits.insert(String::new(), until);
        } else if row.holder != self.me && !row.holder.is_empty() {
            waits.insert(row.holder.clone(), until);
        }
        waits
    }

    /// When the lease's validity ends with no renewal, the holder goes back to idle.
    pub fn expire(&mut self, now: Now) {
        if let State::Holding {
            valid_until: Some(until),
            renewing: None,
            ..
        } = self.state
            && now >= until
        {
            self.state = State::Idle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A version whose holder had waited out the leases before it.
    fn row(holder: &str, term: u64, renewals: u64) -> LeaseRow {
        LeaseRow {
            holder: holder.into(),
            term,
            renewals,
            settled: true,
        }
    }

    #[test]
    fn a_fresh_take_holds_for_a_lease_from_its_sending() {
        let mut l = WriteLease::new("a", Timing::DEFAULT);
        l.observe(None, ms(0));
        let (attempt, op) = l.due(true, ms(100)).unwrap();
        assert_eq!(op, LeaseOp::Take { expect: None });
        assert!(l.due(true, ms(101)).is_none(), "one commit at a time");
        l.committed(attempt, Ok(row("a", 1, 0)), ms(150));
        assert!(l.may_hold(ms(150)));
        // 3 s less 1 %: 2.97 s after the take was sent.
        assert!(l.may_hold(ms(100 + 2969)));
        assert!(!l.may_hold(ms(100 + 2970)));
    }

    #[test]
    fn renewals_extend_from_their_own_sending_and_failures_extend_nothing() {
        let mut l = WriteLease::new("a", Timing::DEFAULT);
        let (a, _) = l.due(true, ms(0)).unwrap();
        l.committed(a, Ok(row("a", 1, 0)), ms(10));
        assert!(l.due(true, ms(500)).is_none(), "not due yet");
        let (a, op) = l.due(true, S).unwrap();
        assert_eq!(
            op,
            LeaseOp::Renew {
                term: 1,
                settled: true
            }
        );
        l.committed(a, Err(CommitError::Failed("timeout".into())), ms(1500));
        assert_eq!(l.valid_until(ms(1500)), Some(ms(2970)));
        let (a, _) = l.due(true, 2 * S).unwrap();
        l.committed(a, Ok(row("a", 1, 1)), ms(2100));
        assert_eq!(l.valid_until(ms(2100)), Some(2 * S + ms(2970)));
        // Another agent took the row: this term is over at once.
        let (a, _) = l.due(true, 3 * S).unwrap();
        l.committed(
            a,
            Err(CommitError::Stale {
                current: Some(row("b", 2, 0)),
            }),
            ms(3001),
        );
        assert!(!l.may_hold(ms(3001)));
        assert_eq!(l.state, State::Idle);
    }

    #[test]
    fn a_take_from_another_holder_waits_out_its_lease_unless_it_confirms() {
        let mut l = WriteLease::new("b", Timing::DEFAULT);
        // b first saw a's renewal 7 at 10 s.
        l.observe(Some(row("a", 4, 7)), 10 * S);
        l.observe(Some(row("a", 4, 7)), 11 * S);
        let (attempt, op) = l.due(true, 11 * S).unwrap();
        assert_eq!(
            op,
            LeaseOp::Take {
                expect: Some((4, 7))
            }
        );
        l.committed(attempt, Ok(row("b", 5, 0)), 11 * S + ms(5));
        // a's lease can run until 10 s + 3.03 s.
        assert!(!l.may_hold(11 * S + ms(5)));
        assert_eq!(l.waiting_for(11 * S + ms(5)), ["a"]);
        assert!(!l.may_hold(13 * S + ms(29)));
        assert!(l.may_hold(13 * S + ms(30)));
        // Or a says it released.
        let mut l2 = WriteLease::new("b", Timing::DEFAULT);
        l2.observe(Some(row("a", 4, 7)), 10 * S);
        let (attempt, _) = l2.due(true, 11 * S).unwrap();
        l2.committed(attempt, Ok(row("b", 5, 0)), 11 * S);
        l2.previous_released("c");
        assert!(!l2.may_hold(11 * S));
        l2.previous_released("a");
        assert!(l2.may_hold(11 * S));
    }

    #[test]
    fn a_take_of_a_row_seen_long_ago_binds_at_once() {
        // The crash case: MGR took seconds to elect, so the old lease is long over.
        let mut l = WriteLease::new("b", Timing::DEFAULT);
        l.observe(Some(row("a", 4, 7)), S);
        let (attempt, _) = l.due(true, 12 * S).unwrap();
        l.committed(attempt, Ok(row("b", 5, 0)), 12 * S);
        assert!(l.may_hold(12 * S));
        assert!(l.waiting_for(12 * S).is_empty());
    }

    #[test]
    fn taking_back_its_own_row_needs_no_wait_and_losing_the_view_gives_up() {
        let mut l = WriteLease::new("a", Timing::DEFAULT);
        l.observe(Some(row("a", 4, 7)), 10 * S);
        let (attempt, _) = l.due(true, 10 * S).unwrap();
        l.committed(attempt, Ok(row("a", 5, 0)), 10 * S);
        assert!(l.may_hold(10 * S));
        assert!(
            l.due(false, 11 * S).is_none(),
            "no renewal without the view"
        );
        l.give_up();
        assert!(!l.may_hold(11 * S));
    }

    #[test]
    fn a_late_answer_to_an_old_attempt_changes_nothing() {
        let mut l = WriteLease::new("a", Timing::DEFAULT);
        let (first, _) = l.due(true, ms(0)).unwrap();
        l.committed(first, Err(CommitError::Failed("x".into())), ms(10));
        let (second, _) = l.due(true, ms(100)).unwrap();
        l.committed(first, Ok(row("a", 1, 0)), ms(110));
        assert!(!l.may_hold(ms(110)));
        l.committed(second, Ok(row("a", 1, 0)), ms(120));
        assert!(l.may_hold(ms(120)));
    }

    #[test]
    fn a_take_of_a_version_not_settled_waits_for_everyone_whatever_confirms() {
        // b took from a but never waited a's lease out; c takes from b.
        let mut l = WriteLease::new("c", Timing::DEFAULT);
        let mut taken = row("b", 5, 0);
        taken.settled = false;
        l.observe(Some(taken), 10 * S);
        let (attempt, _) = l.due(true, 10 * S).unwrap();
        l.committed(attempt, Ok(row("c", 6, 0)), 10 * S);
        // Nobody to ask: a's lease (unknown to c) ends only with time.
        assert!(l.waiting_for(10 * S).is_empty());
        l.previous_released("b");
        assert!(!l.may_hold(11 * S));
        // Its own renewals say settled only once the wait is over.
        let (attempt, op) = l.due(true, 12 * S).unwrap();
        assert_eq!(
            op,
            LeaseOp::Renew {
                term: 6,
                settled: false
            }
        );
        l.committed(attempt, Ok(row("c", 6, 1)), 12 * S);
        assert!(!l.may_hold(13 * S + ms(29)));
        assert!(l.may_hold(13 * S + ms(30)));
        let (_, op) = l.due(true, 14 * S).unwrap();
        assert_eq!(
            op,
            LeaseOp::Renew {
                term: 6,
                settled: true
            }
        );
        // Its own unsettled version: the same wait after a restart.
        let mut own = WriteLease::new("b", Timing::DEFAULT);
        let mut mine = row("b", 5, 0);
        mine.settled = false;
        own.observe(Some(mine), 10 * S);
        let (attempt, _) = own.due(true, 10 * S).unwrap();
        own.committed(attempt, Ok(row("b", 6, 0)), 10 * S);
        assert!(!own.may_hold(11 * S));
    }

    #[test]
    fn the_drift_bound_shortens_and_lengthens() {
        let t = Timing::DEFAULT;
        assert_eq!(t.shortened(ms(3000)), ms(2970));
        assert_eq!(t.lengthened(ms(3000)), ms(3030));
    }
}
