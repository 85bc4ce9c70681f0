//! What agents say to each other about leases and placements. The core's own messages:
//! the peer port carries them in authenticated frames.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::Placement;

/// A request from one agent to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// From the authority (the write lease's holder) when it starts its term: which of
    /// the configured VIPs do you hold, with a valid lease?
    Holdings { term: u64 },
    /// From the authority: the placement of its term. The receiver lets go of what is
    /// no longer its own first, and answers once it has.
    Apply { term: u64, placement: Placement },
    /// To the authority: renew my sub-leases of these read VIPs (my share).
    ReadLease { vips: Vec<IpAddr> },
    /// From the write lease's new holder: let go of the write VIP and say so.
    ReleaseWrite { term: u64 },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Holdings {
        vips: Vec<IpAddr>,
    },
    Applied,
    /// The sub-leases granted, each for a duration counted from the request's sending
    /// (the requester's clock); a wanted VIP missing was not granted (yet).
    ReadLease {
        term: u64,
        grants: Vec<(IpAddr, Duration)>,
    },
    /// The write VIP is not bound here and will not be without a new take.
    Released,
    Refused {
        reason: String,
    },
}
