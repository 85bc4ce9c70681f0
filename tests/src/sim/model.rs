//! The values the simulator reports and is configured with: member states and roles,
//! plugin states, replication_group_members rows, timings, and the event log entries.

use std::fmt;
use std::time::Duration;

/// MEMBER_STATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Online,
    Recovering,
    Offline,
    Error,
    Unreachable,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Online => "ONLINE",
            MemberState::Recovering => "RECOVERING",
            MemberState::Offline => "OFFLINE",
            MemberState::Error => "ERROR",
            MemberState::Unreachable => "UNREACHABLE",
        }
    }

    /// Whether a member in this state takes part in the group.
    pub(crate) fn in_group(self) -> bool {
        matches!(self, MemberState::Online | MemberState::Recovering)
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// MEMBER_ROLE (when shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRole {
    Primary,
    Secondary,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Primary => "PRIMARY",
            MemberRole::Secondary => "SECONDARY",
        }
    }
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The group_replication plugin on one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// Not installed: replication_group_members is empty, the GR variables are unknown.
    NotLoaded,
    /// Installed, never started since mysqld started: one OFFLINE row with empty fields.
    NotStarted,
    /// Started at some point: rows come from the member's view.
    Started,
}

/// CHANNEL_NAME of every row.
pub const CHANNEL_NAME: &str = "group_replication_applier";
/// MEMBER_COMMUNICATION_STACK of every row of a started member.
pub const COMMUNICATION_STACK: &str = "XCom";

/// One row of performance_schema.replication_group_members, as a member answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub channel_name: String,
    pub member_id: String,
    pub member_host: String,
    /// NULL when the plugin was never started.
    pub member_port: Option<u16>,
    pub member_state: MemberState,
    /// Empty (None) unless ONLINE, RECOVERING or UNREACHABLE.
    pub member_role: Option<MemberRole>,
    pub member_version: String,
    pub member_communication_stack: String,
}

/// The script's timings. The defaults are short so that tests stay fast; MySQL's own are
/// about 5 s for both `unreachable_after` and `expel_after` (group_replication_member_expel_timeout).
#[derive(Debug, Clone)]
pub struct Timings {
    /// Silence before a member shows another UNREACHABLE. Default 150 ms.
    pub unreachable_after: Duration,
    /// Time UNREACHABLE before a majority expels. Default 250 ms.
    pub expel_after: Duration,
    /// group_replication_unreachable_majority_timeout: a blocked minority goes to ERROR
    /// this long after losing its majority. Default None (block forever, MySQL's 0).
    pub unreachable_majority_timeout: Option<Duration>,
    /// OFFLINE phase of the rejoin path. Default 50 ms.
    pub rejoin_offline_for: Duration,
    /// RECOVERING phase of the rejoin path. Default 150 ms.
    pub recovering_for: Duration,
    /// A new primary keeps super_read_only ON this long (applying its backlog). Default 0.
    pub primary_writable_after: Duration,
    /// Whether members in ERROR rejoin when a partition heals. Default true.
    pub auto_rejoin: bool,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            unreachable_after: Duration::from_millis(150),
            expel_after: Duration::from_millis(250),
            unreachable_majority_timeout: None,
            rejoin_offline_for: Duration::from_millis(50),
            recovering_for: Duration::from_millis(150),
            primary_writable_after: Duration::ZERO,
            auto_rejoin: true,
        }
    }
}

/// What does not change about a member.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub uuid: String,
    pub report_host: String,
    pub hostname: String,
    pub port: u16,
    pub version: String,
    pub weight: u32,
}

/// Something that happened to the group, for test assertions and failure messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Since the group started.
    pub at: Duration,
    /// The member it happened to or was seen by (index), if any.
    pub member: Option<usize>,
    pub what: String,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{:>6} ms ", self.at.as_millis())?;
        match self.member {
            Some(m) => write!(f, "[member {m}] {}", self.what),
            None => write!(f, "[group] {}", self.what),
        }
    }
}
