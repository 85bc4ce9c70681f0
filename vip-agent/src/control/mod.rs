//! The control socket: how the operator talks to a running agent.
//!
//! A unix socket (default `/run/vip-agent/<instance>.sock`, mode 0600): one JSON
//! [`Request`] line in, one JSON [`Response`] line out, per connection.
//!
//! - [`server`]: the agent's side; requests reach the agent's loop through a channel.
//! - [`client`]: the CLI's side.
//! - [`render`]: a [`Status`] as text for people, or as JSON.
//! - [`cli`]: the verbs `status`, `topology`, `set-topology`, `force-rebind`, `reload`.

pub mod cli;
pub mod client;
pub mod render;
pub mod server;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::plan::Placement;

/// A command from `vip-agent <verb>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Status,
    /// The current placement in set-topology syntax.
    Topology,
    /// A manual read-VIP placement: `uuid1::vip1; uuid2::vip2,vip3`.
    SetTopology {
        text: String,
    },
    /// Re-read the view, re-apply and re-announce every VIP on every member.
    ForceRebind,
    /// Re-read the config file.
    Reload,
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Status(Box<Status>),
    Topology {
        text: String,
    },
    /// Done; what was done.
    Done {
        message: String,
    },
    /// Refused or failed; nothing changed. The message names the problem and the fix.
    Error {
        message: String,
    },
}

/// What `vip-agent status` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub instance: String,
    /// This node's server_uuid, once the view has been read.
    pub uuid: Option<String>,
    /// "primary", "secondary" or "none".
    pub role: String,
    /// The node status in words (e.g. "PRIMARY with quorum (3 of 3 members reachable)").
    pub view: String,
    /// The members in this node's view.
    pub members: Vec<StatusMember>,
    /// The placement this node follows (computed here on the primary, pushed elsewhere).
    pub placement: Option<Placement>,
    /// Whether the placement is a manual override (set-topology).
    pub manual: bool,
    /// The configured VIPs bound on this node now.
    pub held: Vec<IpAddr>,
    pub last_announcement: Option<LastAnnouncement>,
    pub peers: Vec<PeerHealth>,
    /// Peer frames rejected since start, by kind (unauthenticated, malformed, …).
    pub rejected_frames: BTreeMap<String, u64>,
    /// Each subsystem and its mode, e.g. "peer" → "listening on [::]:33062, hmac-sha256".
    pub subsystems: BTreeMap<String, String>,
    /// The VIPs in the eBPF programs' table: held or released, tracked connections and
    /// the guard's counters.
    #[serde(default)]
    pub datapath: Vec<crate::datapath::engine::VipDatapath>,
    /// The members' hosts (MEMBER_HOST) that do not resolve, and why: this node cannot
    /// reach their agents, nor does it let them connect.
    #[serde(default)]
    pub unresolved: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMember {
    pub uuid: String,
    pub host: String,
    pub state: String,
    pub role: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastAnnouncement {
    pub vip: IpAddr,
    /// RFC 3339, UTC.
    pub at: String,
    pub count: u32,
}

/// How the last exchange with another member's agent went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealth {
    pub uuid: String,
    /// host:port of its peer port.
    pub addr: String,
    /// RFC 3339 of the last successful exchange.
    pub last_ok: Option<String>,
    /// The last error, if the last exchange failed.
    pub last_error: Option<String>,
}
