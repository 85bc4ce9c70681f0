//! The deterministic simulation: the cores of several agents, the simulated MGR group
//! (its views, and the lease row with MGR's commit rule), a network between the agents
//! and a clock per host, all in one process and stepped from a seed. No real time, no
//! threads, no I/O: a seed replays exactly.
//!
//! After every event it checks the invariants of docs/coordination.md: no two live
//! hosts answer for one VIP (a VIP is answered for while the host's kernel has it bound
//! and its kernel lease has not ended on that host's clock), and no host answers for a
//! VIP its core does not hold with a valid lease. After the faults end and the group
//! settles, every VIP must be held exactly once, the write VIP by the primary.

mod model;
mod run;

pub use run::{Outcome, run};

/// How many schedules ran, how many broke an invariant, and the first that did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub schedules: u64,
    pub violations: u64,
    pub first_failure: Option<u64>,
    pub events: u64,
}

#[cfg(test)]
mod tests {
    /// Seeds that broke an invariant while the core was written. The simulation has
    /// changed since, so these seeds no longer replay the schedules that failed; each
    /// defect is pinned by a test of its own (the core's in vip-agent/src/core/tests.rs,
    /// the simulated group's in vip-tests' sim::state), and these stay as a smoke run.
    /// They found: a minority that expelled and elected (two primaries); a take that
    /// skipped waiting out the lease before it; a bind in flight that kept its kernel
    /// lease after the core lost its own; a new term that forgot its sub-leases; an
    /// Applied answer to an older placement taken for the newer one.
    const ONCE_FAILING: &[u64] = &[16, 2262, 3132, 7938, 2509, 6384, 12912, 18714, 60466];

    #[test]
    fn seeds_that_once_failed_run_clean() {
        for &seed in ONCE_FAILING {
            let out = crate::run(seed, false);
            assert!(
                out.violations.is_empty(),
                "seed {seed}: {:?}",
                out.violations
            );
        }
    }

    #[test]
    fn a_seed_replays_exactly() {
        let (a, b) = (crate::run(4242, true), crate::run(4242, true));
        assert_eq!(a.events, b.events);
        assert_eq!(a.trace, b.trace);
        assert_ne!(crate::run(4243, false).events, a.events);
    }
}
