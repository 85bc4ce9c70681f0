//! The MGR view: reads the local mysqld's view of its Group Replication group and says what
//! this node is (primary with quorum, secondary, outside the group, …) or why it cannot tell
//! (mysqld down, hung, refusing the agent).
//!
//! - [`classify`]: pure; the member rows and mode variables → [`NodeStatus`].
//! - [`query`]: the one SQL statement per poll and the tolerant decoding of its result.
//! - [`lease_row`]: the write lease's row in the group's database: statements, decoding.
//! - [`trouble`]: what a mysql_async error means (down, lost, refusing, …). Pure.
//! - [`poll`]: the persistent connection, timeouts, reconnect with backoff, the
//!   consecutive-timeout count behind "hung", and the log lines about mysqld.
//! - `backoff`: the reconnect delay.
//!
//! The agent calls [`Poller::poll`] every poll interval (or uses [`Poller::watch`]) and
//! decides what to do with the VIPs from the [`NodeStatus`] alone.

mod backoff;
pub mod classify;
pub mod lease_row;
pub mod poll;
pub mod query;
mod tls;
pub mod trouble;

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{MysqlConfig, TlsConfig};

pub use classify::classify;
pub use poll::Poller;
pub use query::View;

/// Where the local mysqld listens: the config's own type.
pub use crate::config::MysqlEndpoint as Endpoint;

/// How to reach and judge the local mysqld.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlTarget {
    pub endpoint: Endpoint,
    pub user: String,
    pub password: String,
    pub tls: Option<TlsConfig>,
    /// Limit on connecting, handshake and login included.
    pub connect_timeout: Duration,
    /// Limit on the one query of a poll, rows included.
    pub query_timeout: Duration,
    /// Consecutive timed-out polls before mysqld counts as hung (0 is taken as 1).
    pub hung_after_polls: u32,
}

impl MysqlTarget {
    /// From the `[mysql]` table; reads the password file (its first line, without the
    /// line end), so a changed password is picked up by a restart or reload.
    pub fn from_config(cfg: &MysqlConfig) -> Result<MysqlTarget> {
        let path = &cfg.password_file;
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read mysql.password_file {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read mysql.password_file {}", path.display()))?;
        if let Some(problem) = crate::config::password_mode_problem(path, &meta) {
            anyhow::bail!("mysql.password_file {}: {problem}", path.display());
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, 64 * 1024), &mut text)
            .with_context(|| format!("cannot read mysql.password_file {}", path.display()))?;
        let password = text.lines().next().unwrap_or("").to_string();
        Ok(MysqlTarget {
            endpoint: cfg.endpoint.clone(),
            user: cfg.user.clone(),
            password,
            tls: cfg.tls.clone(),
            connect_timeout: cfg.connect_timeout,
            query_timeout: cfg.query_timeout,
            hung_after_polls: cfg.hung_after_polls,
        })
    }
}

// By hand, so that the password never reaches a log line.
impl fmt::Debug for MysqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlTarget")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("hung_after_polls", &self.hung_after_polls)
            .finish()
    }
}

/// MEMBER_STATE of a row of performance_schema.replication_group_members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberState {
    Online,
    Recovering,
    Offline,
    Error,
    Unreachable,
    /// A state this agent does not know (a newer server?): never counted as reachable.
    Other(String),
}

impl MemberState {
    pub fn parse(s: &str) -> MemberState {
        match s.to_ascii_uppercase().as_str() {
            "ONLINE" => MemberState::Online,
            "RECOVERING" => MemberState::Recovering,
            "OFFLINE" => MemberState::Offline,
            "ERROR" => MemberState::Error,
            "UNREACHABLE" => MemberState::Unreachable,
            _ => MemberState::Other(s.to_owned()),
        }
    }

    /// Whether a member in this state counts towards the quorum of the view it is in:
    /// RECOVERING members take part in the group's communication as ONLINE ones do.
    pub fn counts_for_quorum(&self) -> bool {
        matches!(self, MemberState::Online | MemberState::Recovering)
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberState::Online => "ONLINE",
            MemberState::Recovering => "RECOVERING",
            MemberState::Offline => "OFFLINE",
            MemberState::Error => "ERROR",
            MemberState::Unreachable => "UNREACHABLE",
            MemberState::Other(s) => s,
        })
    }
}

/// MEMBER_ROLE, when the row shows one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberRole {
    Primary,
    Secondary,
    /// A role this agent does not know.
    Other(String),
}

impl MemberRole {
    /// `None` for an empty role (shown for members that are not ONLINE or RECOVERING).
    pub fn parse(s: &str) -> Option<MemberRole> {
        match s.to_ascii_uppercase().as_str() {
            "" => None,
            "PRIMARY" => Some(MemberRole::Primary),
            "SECONDARY" => Some(MemberRole::Secondary),
            _ => Some(MemberRole::Other(s.to_owned())),
        }
    }
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberRole::Primary => "PRIMARY",
            MemberRole::Secondary => "SECONDARY",
            MemberRole::Other(s) => s,
        })
    }
}

/// One row of performance_schema.replication_group_members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// MEMBER_ID (the member's server_uuid); empty while the plugin was never started.
    pub uuid: String,
    /// MEMBER_HOST (report_host, else the hostname).
    pub host: String,
    /// MEMBER_PORT; NULL while the plugin was never started.
    pub port: Option<u16>,
    pub state: MemberState,
    pub role: Option<MemberRole>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, " {}", self.state)?;
        if let Some(role) = &self.role {
            write!(f, " {role}")?;
        }
        Ok(())
    }
}

/// What this node is, from its own mysqld's view, or why that cannot be known.
///
/// What the agent does with the write VIP: hold it only on `Primary`; leave it as it is on
/// `MysqldRefusing` and `Degraded`; release it on everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    /// Own row ONLINE and PRIMARY, single-primary mode, a majority of the view reachable.
    Primary { me: String, members: Vec<Member> },
    /// Own row ONLINE and SECONDARY, a majority of the view reachable.
    Secondary { me: String, members: Vec<Member> },
    /// Own row OFFLINE, ERROR, RECOVERING or missing; no rows; plugin not loaded.
    NotInGroup { reason: String },
    /// Own row ONLINE, but no majority of this member's view is reachable, i.e. ONLINE or
    /// RECOVERING (exactly half is not a majority).
    NoQuorum { unreachable: usize, total: usize },
    /// Multi-primary mode (or more than one reachable PRIMARY): the agent refuses to run a
    /// single write VIP for it.
    MultiPrimary { reason: String },
    /// mysqld is not there: connection refused, no socket file, connection lost and the
    /// reconnect refused, shutdown in progress.
    MysqldDown { reason: String },
    /// No answer for `hung_after_polls` consecutive polls (or more).
    MysqldHung { timed_out_polls: u32 },
    /// Some polls in a row got no answer, fewer than it takes to call mysqld hung: the
    /// agent keeps its last decision.
    Degraded {
        timed_out_polls: u32,
        hung_after_polls: u32,
    },
    /// mysqld is alive but refuses the agent (too many connections, access denied, host
    /// blocked, missing privilege): the group itself may be fine.
    MysqldRefusing { code: Option<u16>, reason: String },
    /// mysqld answered, but not with a view this agent can read (unexpected error, NULL
    /// or malformed values, an ONLINE member without a role).
    Unreadable { reason: String },
}

impl NodeStatus {
    /// This node's own member uuid, when it is ONLINE in the group.
    pub fn me(&self) -> Option<&str> {
        match self {
            NodeStatus::Primary { me, .. } | NodeStatus::Secondary { me, .. } => Some(me),
            _ => None,
        }
    }

    /// The uuid of the primary in this node's view, when it is ONLINE in the group.
    pub fn primary(&self) -> Option<&str> {
        self.members()?
            .iter()
            .find(|m| m.role == Some(MemberRole::Primary) && m.state == MemberState::Online)
            .map(|m| m.uuid.as_str())
    }

    /// The rows behind a `Primary` or `Secondary` status.
    pub fn members(&self) -> Option<&[Member]> {
        match self {
            NodeStatus::Primary { members, .. } | NodeStatus::Secondary { members, .. } => {
                Some(members)
            }
            _ => None,
        }
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeStatus::Primary { members, .. } => {
                let reachable = members.iter().filter(|m| m.state.counts_for_quorum());
                write!(
                    f,
                    "PRIMARY with quorum ({} of {} members reachable)",
                    reachable.count(),
                    members.len()
                )
            }
            NodeStatus::Secondary { members, .. } => {
                let primary = members.iter().find(|m| m.role == Some(MemberRole::Primary));
                match primary {
                    Some(p) => write!(f, "SECONDARY (primary: {p})"),
                    None => write!(f, "SECONDARY (no primary in view)"),
                }
            }
            NodeStatus::NotInGroup { reason } => write!(f, "not in the group: {reason}"),
            NodeStatus::NoQuorum { unreachable, total } => write!(
                f,
                "no quorum: {unreachable} of {total} members unreachable (not ONLINE or \
                 RECOVERING) in this member's view"
            ),
            NodeStatus::MultiPrimary { reason } => {
                write!(f, "refusing multi-primary: {reason}")
            }
            NodeStatus::MysqldDown { reason } => write!(f, "mysqld down: {reason}"),
            NodeStatus::MysqldHung { timed_out_polls } => write!(
                f,
                "mysqld hung: no answer for {timed_out_polls} consecutive polls"
            ),
            NodeStatus::Degraded {
                timed_out_polls,
                hung_after_polls,
            } => write!(
                f,
                "mysqld slow: no answer for {timed_out_polls} consecutive polls \
                 (hung after {hung_after_polls}); keeping the last decision"
            ),
            NodeStatus::MysqldRefusing { reason, .. } => {
                write!(f, "mysqld refuses the agent: {reason}")
            }
            NodeStatus::Unreadable { reason } => write!(f, "unreadable view: {reason}"),
        }
    }
}
