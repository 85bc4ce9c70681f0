//! The peer port: how agents coordinate (F3 skeleton: the message types are agreed).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::plan::Placement;

/// What one agent asks another. Every request travels in an authenticated frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "Which of the configured VIPs do you hold?" The primary asks before it plans.
    Holdings,
    /// "Apply this placement": from the primary. `stamp` grows with every push from one
    /// sender; a receiver ignores a stamp older than the last it applied from that sender.
    Apply {
        stamp: u64,
        placement: Placement,
        /// Re-announce every VIP held, not only the newly bound ones (force-rebind).
        reannounce: bool,
    },
    /// "Release the write VIP and confirm": from a new primary, before it binds it.
    ReleaseWrite { stamp: u64 },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The configured VIPs bound on this node (the write VIP included, if bound).
    Holdings {
        vips: Vec<IpAddr>,
    },
    Applied,
    /// The write VIP is not bound here (any more).
    Released,
    /// Not done, and why (e.g. "the sender is not the primary in my view").
    Refused {
        reason: String,
    },
}
