//! Calling another member's agent: the lookup of its host and one authenticated
//! exchange, both within one deadline. Holds no reference to the caller's state, so
//! several calls run at once (and in spawned tasks).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::hosts::Hosts;
use super::key::Key;
use super::{Request, Response, client};

/// An other member's agent: its uuid and where its peer port is.
#[derive(Clone, Debug)]
pub struct Peer {
    pub uuid: String,
    pub host: String,
}

/// The key, this node's uuid, the hosts' addresses, and the peer port and timeout:
/// enough to call an agent.
pub struct Caller {
    pub key: Arc<Key>,
    pub me: String,
    pub hosts: Hosts,
    pub port: u16,
    pub timeout: Duration,
}

impl Caller {
    /// Sends `request` to `peer`'s agent, the lookup of its MEMBER_HOST included, within
    /// `peer.timeout_ms` and `limit`.
    pub async fn call(&self, peer: &Peer, request: Request, limit: Duration) -> Result<Response> {
        let deadline = Instant::now() + self.timeout.min(limit);
        let left = || deadline.saturating_duration_since(Instant::now());
        let addr = self
            .hosts
            .resolve(&peer.host, self.port, left())
            .await
            .map_err(|e| anyhow!("{e}"))?;
        client::call(addr, &self.key, &self.me, &peer.uuid, request, left())
            .await
            .map_err(|e| anyhow!("{e}"))
    }
}
