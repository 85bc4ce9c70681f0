//! Random fault schedules, drawn from a seed so that any run can be replayed.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One fault on one member's host (index: 0 = h1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// mysqld killed; undone by restarting it and START GROUP_REPLICATION.
    Crash(usize),
    /// group_replication_set_as_primary to this member; nothing to undo.
    Switchover(usize),
    /// The host cut off from the others (network and group); undone by healing.
    Partition(usize),
    /// The agent killed with SIGKILL; undone by starting it again.
    AgentKill(usize),
    /// mysqld hangs and the group expels the member; undone by resuming and healing.
    Hang(usize),
    /// eth0 down; undone by setting it up.
    NicFlap(usize),
    /// Loss and delay on the host's link (netem); undone by removing the qdisc.
    Netem {
        host: usize,
        loss_pct: u32,
        delay_ms: u32,
    },
}

impl Fault {
    pub fn host(self) -> usize {
        match self {
            Fault::Crash(h)
            | Fault::Switchover(h)
            | Fault::Partition(h)
            | Fault::AgentKill(h)
            | Fault::Hang(h)
            | Fault::NicFlap(h) => h,
            Fault::Netem { host, .. } => host,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.host() + 1;
        match self {
            Fault::Crash(_) => write!(f, "crash mysqld on h{h}"),
            Fault::Switchover(_) => write!(f, "switchover to h{h}"),
            Fault::Partition(_) => write!(f, "partition h{h} from the rest"),
            Fault::AgentKill(_) => write!(f, "kill -9 the agent on h{h}"),
            Fault::Hang(_) => write!(f, "hang mysqld on h{h}"),
            Fault::NicFlap(_) => write!(f, "eth0 down on h{h}"),
            Fault::Netem {
                loss_pct, delay_ms, ..
            } => write!(
                f,
                "netem {loss_pct}% loss {delay_ms} ms delay on h{h}'s link"
            ),
        }
    }
}

/// A fault, how long it lasts before it is undone, and the pause after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub hold: Duration,
    pub gap: Duration,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} for {} ms, then {} ms",
            self.fault,
            self.hold.as_millis(),
            self.gap.as_millis()
        )
    }
}

/// Most steps in one schedule.
const MAX_STEPS: usize = 3;
/// Longest a fault lasts: past the group's failure detection (UNREACHABLE, then
/// expel), so both short blips and real failovers are drawn.
const MAX_HOLD_MS: u64 = 3000;
const MAX_GAP_MS: u64 = 500;
/// The group's UNREACHABLE and expel timeouts (1 s each, see the module above) and a
/// margin.
const CRASH_MIN_HOLD_MS: u64 = 2200;

/// The schedule for `seed`, on a group of `hosts` members. `netem` says whether
/// loss/delay faults can be drawn (the sch_netem qdisc exists).
pub fn schedule(seed: u64, hosts: usize, netem: bool) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let steps = rng.random_range(1..=MAX_STEPS);
    let kinds = if netem { 7 } else { 6 };
    (0..steps)
        .map(|_| {
            let h = rng.random_range(0..hosts);
            let fault = match rng.random_range(0..kinds) {
                0 => Fault::Crash(h),
                1 => Fault::Switchover(h),
                2 => Fault::Partition(h),
                3 => Fault::AgentKill(h),
                4 => Fault::Hang(h),
                5 => Fault::NicFlap(h),
                _ => Fault::Netem {
                    host: h,
                    loss_pct: rng.random_range(1..=30),
                    delay_ms: rng.random_range(0..=200),
                },
            };
            // A crashed mysqld comes back only after the group expelled it: a real
            // restart (recovery, plugin start) takes longer than the expel timeout, and
            // the simulated group does not model an old primary's new incarnation
            // rejoining before its old one was expelled.
            let min_hold = match fault {
                Fault::Crash(_) => CRASH_MIN_HOLD_MS,
                _ => 0,
            };
            Step {
                fault,
                hold: Duration::from_millis(rng.random_range(min_hold..=MAX_HOLD_MS)),
                gap: Duration::from_millis(rng.random_range(0..=MAX_GAP_MS)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_draws_the_same_schedule() {
        for seed in 0..50 {
            assert_eq!(schedule(seed, 3, true), schedule(seed, 3, true));
        }
    }

    #[test]
    fn schedules_differ_by_seed_and_stay_in_bounds() {
        let all: Vec<Vec<Step>> = (0..200).map(|s| schedule(s, 3, false)).collect();
        assert!(all.windows(2).any(|w| w[0] != w[1]));
        for steps in &all {
            assert!((1..=MAX_STEPS).contains(&steps.len()));
            for s in steps {
                assert!(s.fault.host() < 3);
                assert!(!matches!(s.fault, Fault::Netem { .. }), "netem off");
                assert!(s.hold <= Duration::from_millis(MAX_HOLD_MS));
                if matches!(s.fault, Fault::Crash(_)) {
                    assert!(s.hold >= Duration::from_millis(CRASH_MIN_HOLD_MS));
                }
            }
        }
        // Every kind of fault is drawn somewhere.
        let kinds: std::collections::HashSet<_> = all
            .iter()
            .flatten()
            .map(|s| std::mem::discriminant(&s.fault))
            .collect();
        assert_eq!(kinds.len(), 6);
    }
}
