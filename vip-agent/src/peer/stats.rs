//! Counters for the peer port, and a log limiter so a flood of bad frames cannot fill
//! the disk: each kind of event logs at most one line per interval, then says how many
//! it held back. The counters stay exact.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::wire::FrameError;

/// Why the server dropped a connection without serving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The MAC does not match (a wrong key, or tampering).
    Unauthenticated,
    /// Not a peer frame, an unknown version or kind, or bad JSON under a valid MAC.
    Malformed,
    /// The header announces a body over the limit.
    Oversized,
    /// The connection closed mid-frame.
    Truncated,
    /// A valid request for another connection's challenge.
    Replayed,
    /// Over the connection cap: closed at once.
    Busy,
    /// No complete request within the pre-authentication deadline (or a reader too slow
    /// for the answer).
    Timeout,
    /// From an address that may not connect (not a member's, not in `peer.allow`).
    NotAllowed,
    /// Over the cap of connections from one address: closed at once.
    HostBusy,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::Unauthenticated,
        Reject::Malformed,
        Reject::Oversized,
        Reject::Truncated,
        Reject::Replayed,
        Reject::Busy,
        Reject::Timeout,
        Reject::NotAllowed,
        Reject::HostBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Unauthenticated => "unauthenticated",
            Reject::Malformed => "malformed",
            Reject::Oversized => "oversized",
            Reject::Truncated => "truncated",
            Reject::Replayed => "replayed",
            Reject::Busy => "busy",
            Reject::Timeout => "timeout",
            Reject::NotAllowed => "not_allowed",
            Reject::HostBusy => "host_busy",
        }
    }

    pub fn of(e: &FrameError) -> Reject {
        match e {
            FrameError::Truncated => Reject::Truncated,
            FrameError::Oversized { .. } => Reject::Oversized,
            FrameError::Unauthenticated => Reject::Unauthenticated,
            // A server never reads a response, so only a replayed request comes here.
            FrameError::Replayed | FrameError::OtherRequest | FrameError::WrongMember { .. } => {
                Reject::Replayed
            }
            FrameError::BadMagic
            | FrameError::BadVersion(_)
            | FrameError::BadKind(_)
            | FrameError::Malformed(_) => Reject::Malformed,
        }
    }
}

/// The peer server's counters. Shared with whoever reports them (status, metrics).
#[derive(Debug, Default)]
pub struct Stats {
    rejected: [AtomicU64; Reject::ALL.len()],
    /// Requests answered.
    served: AtomicU64,
    /// Authenticated requests the agent did not answer in time (or dropped).
    unanswered: AtomicU64,
}

impl Stats {
    pub fn rejected(&self, why: Reject) -> u64 {
        self.rejected[why as usize].load(Ordering::Relaxed)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub fn unanswered(&self) -> u64 {
        self.unanswered.load(Ordering::Relaxed)
    }

    /// Every counter by name: the [`Reject`] names, `served` and `unanswered`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut map: BTreeMap<String, u64> = Reject::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), self.rejected(*r)))
            .collect();
        map.insert("served".into(), self.served());
        map.insert("unanswered".into(), self.unanswered());
        map
    }

    pub(crate) fn count_rejected(&self, why: Reject) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_unanswered(&self) {
        self.unanswered.fetch_add(1, Ordering::Relaxed);
    }
}

/// At most one log line per key per interval.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    slots: Mutex<BTreeMap<&'static str, Slot>>,
}

#[derive(Debug)]
struct Slot {
    last: Instant,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    /// `Some(n)` if this event may be logged, `n` being how many were held back since the
    /// last line for `key`; `None` to stay quiet.
    pub(crate) fn allow(&self, key: &'static str, now: Instant) -> Option<u64> {
        // A poisoned lock only means a panic elsewhere mid-update: the map is still fine.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get_mut(key) {
            Some(slot) if now.saturating_duration_since(slot.last) < self.interval => {
                slot.suppressed += 1;
                None
            }
            Some(slot) => {
                slot.last = now;
                Some(std::mem::take(&mut slot.suppressed))
            }
            None => {
                slots.insert(
                    key,
                    Slot {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_with_the_count_held_back() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow("malformed", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(
                limiter.allow("malformed", t0 + Duration::from_secs(i)),
                None
            );
        }
        // Another kind has its own budget.
        assert_eq!(limiter.allow("busy", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(
            limiter.allow("malformed", t0 + Duration::from_secs(10)),
            Some(5)
        );
        assert_eq!(
            limiter.allow("malformed", t0 + Duration::from_secs(11)),
            None
        );
    }

    #[test]
    fn snapshot_names_every_counter() {
        let stats = Stats::default();
        stats.count_rejected(Reject::Busy);
        stats.count_rejected(Reject::Busy);
        stats.count_served();
        let snap = stats.snapshot();
        let names: Vec<&str> = snap.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "busy",
                "host_busy",
                "malformed",
                "not_allowed",
                "oversized",
                "replayed",
                "served",
                "timeout",
                "truncated",
                "unanswered",
                "unauthenticated"
            ]
        );
        assert_eq!((snap["busy"], snap["served"], snap["timeout"]), (2, 1, 0));
    }
}
