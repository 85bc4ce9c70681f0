//! The peer port: how agents coordinate. One authenticated request per TCP connection.
//!
//! ```text
//!   client (e.g. the primary's agent)            server (another node's agent)
//!     |  connect to peer.port (default 33062)           |
//!     | <------------- Challenge { nonce } ------------ |  fresh 16 random bytes
//!     | -- RequestEnvelope { from, nonce (echoed), ---> |  MAC, JSON, nonce checked,
//!     |      client_nonce, request }                    |  then handed to the agent
//!     | <-- ResponseEnvelope { nonce = client_nonce, -- |  the agent's answer
//!     |      response }                                 |
//!     |  close                                          |
//! ```
//!
//! Every frame ([`wire`]) carries an HMAC-SHA256 under the shared key ([`key`]) over its
//! header and body, so only holders of `peer.key_file` can speak, and the header (kind,
//! length) cannot be altered. Replay: a request must echo the challenge nonce of its own
//! connection, and a response the client's nonce, so a captured frame is worthless on any
//! other connection. (Across connections the agent also checks each sender's `stamp`.)
//! The frames are authenticated, not encrypted: they hold VIPs and member uuids, which
//! are not secret.
//!
//! Limits ([`server::Limits`]): bodies of at most [`wire::MAX_BODY`] bytes, refused from
//! the header before any of the body is read; a read timeout for the whole request; a
//! reply timeout for the agent; a cap on concurrent connections (more are closed at once).
//! A bad frame closes its connection, is counted ([`server::Stats`]) and logged at most
//! once per kind per 10 s, and never reaches the agent.
//!
//! Why HMAC with one key file rather than mTLS: the key is distributed like the MySQL
//! password; there is no CA to run, no certificate to expire at 3 a.m. and break
//! failover, rotation is "new file, reload"; and the peer messages need integrity and
//! freshness, not secrecy. mTLS would add a PKI and a TLS stack on this port for that.

pub mod caller;
pub mod client;
mod conn;
pub mod hosts;
pub mod key;
pub mod server;
mod stats;
pub mod wire;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::plan::Placement;

/// What one agent asks another. Every request travels in an authenticated frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The lease coordination's messages (`coordination.mode = "lease"`): every agent of
    /// a group must run the same mode, and an agent of the other mode refuses these.
    Lease(crate::core::Request),
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The answer to [`Request::Lease`].
    Lease(crate::core::Response),
}
