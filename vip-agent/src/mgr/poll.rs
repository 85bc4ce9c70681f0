//! The agent's one persistent connection to the local mysqld, and each poll on it.
//!
//! One connection, kept open, so that a mysqld at max_connections still answers the agent
//! (it never needs a new slot) and a poll costs two small queries. Every step has a tokio
//! timeout, so a hung mysqld never blocks the agent's loop past it: a timed-out connection
//! is dropped (its late answer would be out of step), and the next poll connects afresh.
//! Failed connection attempts back off from one poll interval up to 2 s.
//!
//! Each kind of trouble is logged once when it starts, in its own words: refused (mysqld
//! down), timed out (slow or hung), refusing the agent (max_connections, credentials).

use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder};
use tokio::time::{Instant, timeout};
use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::lease_row;
use super::query::{self, ER_UNKNOWN_SYSTEM_VARIABLE, ReadError};
use super::trouble::{Trouble, trouble};
use super::{Endpoint, MysqlTarget, NodeStatus, classify};
use crate::core::LeaseRow;

/// The longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct Poller {
    target: MysqlTarget,
    opts: Opts,
    conn: Option<Conn>,
    backoff: Backoff,
    /// No new connection attempt before this instant; meanwhile polls repeat `last_failure`.
    retry_at: Option<Instant>,
    last_failure: Option<NodeStatus>,
    /// Consecutive polls that got no answer in time.
    timed_out_polls: u32,
    /// The last problem logged, so each is logged once when it starts.
    last_problem: Option<String>,
    /// How long the last view query took (answered or timed out), until taken.
    round_trip: Option<Duration>,
    /// The local mysqld's @@server_uuid as last read: this member's identity towards
    /// other agents, also while mysqld is down.
    server_uuid: Option<String>,
    /// The unreadable rows of the last view, logged when they change.
    bad_rows: Vec<String>,
}

/// What one attempt at reading the view came to.
enum Outcome {
    Status(NodeStatus),
    /// No answer within `limit`; `step` says what was waited for.
    TimedOut {
        step: &'static str,
        limit: Duration,
    },
    Failed(Trouble),
}

impl Poller {
    pub fn new(target: MysqlTarget) -> Poller {
        Poller {
            opts: opts(&target),
            backoff: Backoff::new(Duration::from_millis(100), MAX_BACKOFF),
            target,
            conn: None,
            retry_at: None,
            last_failure: None,
            timed_out_polls: 0,
            last_problem: None,
            round_trip: None,
            server_uuid: None,
            bad_rows: Vec::new(),
        }
    }

    /// The round trip of the view query of the last poll that sent one (for the poll
    /// histogram); `None` once taken, or when no query went out (no connection).
    pub fn take_round_trip(&mut self) -> Option<Duration> {
        self.round_trip.take()
    }

    /// This member's uuid (the local mysqld's @@server_uuid), once a poll has read it.
    pub fn server_uuid(&self) -> Option<&str> {
        self.server_uuid.as_deref()
    }

    pub fn target(&self) -> &MysqlTarget {
        &self.target
    }

    /// Reads the write lease's row on the poll's connection, right after a poll, under
    /// the query timeout (a timeout drops the connection, as a poll's does). `None`
    /// without a connection.
    pub async fn lease_row(&mut self) -> Option<Result<Option<LeaseRow>, String>> {
        let conn = self.conn.as_mut()?;
        match timeout(self.target.query_timeout, lease_row::read(conn)).await {
            Ok(read) => Some(read),
            Err(_) => {
                self.conn = None;
                Some(Err(format!(
                    "reading the lease row took longer than {} ms",
                    self.target.query_timeout.as_millis()
                )))
            }
        }
    }

    /// Reads the view once and classifies this node. Never takes longer than the connect
    /// timeout plus the query timeout, whatever mysqld does.
    pub async fn poll(&mut self) -> NodeStatus {
        if let Some(at) = self.retry_at
            && Instant::now() < at
            && let Some(status) = &self.last_failure
        {
            return status.clone();
        }
        let mut outcome = self.attempt().await;
        // A broken connection is retried at once: mysqld may just have been restarted,
        // and if it is really gone the new attempt is refused right away.
        if let Outcome::Failed(Trouble::Lost(why)) = &outcome {
            self.note(
                format!("lost the connection to mysqld: {why}; reconnecting"),
                Level::Warn,
            );
            outcome = self.attempt().await;
        }
        self.judge(outcome)
    }

    /// One connection (if needed) and one read, each under its timeout.
    async fn attempt(&mut self) -> Outcome {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                match timeout(self.target.connect_timeout, Conn::new(self.opts.clone())).await {
                    Err(_) => {
                        return Outcome::TimedOut {
                            step: "connecting",
                            limit: self.target.connect_timeout,
                        };
                    }
                    Ok(Err(e)) => {
                        self.retry_at = Some(Instant::now() + self.backoff.fail());
                        return Outcome::Failed(trouble(&e));
                    }
                    Ok(Ok(conn)) => {
                        self.backoff.reset();
                        self.retry_at = None;
                        self.conn.insert(conn)
                    }
                }
            }
        };
        let sent = Instant::now();
        let answer = timeout(self.target.query_timeout, query::read(conn)).await;
        self.round_trip = Some(sent.elapsed());
        match answer {
            Err(_) => {
                self.conn = None;
                Outcome::TimedOut {
                    step: "reading the group view",
                    limit: self.target.query_timeout,
                }
            }
            Ok(Ok(view)) => Outcome::Status({
                if !view.server_uuid.is_empty() {
                    self.server_uuid = Some(view.server_uuid.clone());
                }
                self.note_bad_rows(&view.bad_rows);
                classify(
                    &view.server_uuid,
                    view.single_primary,
                    view.enforce_everywhere,
                    &view.members,
                )
            }),
            Ok(Err(ReadError::Malformed(why))) => {
                Outcome::Status(NodeStatus::Unreadable { reason: why })
            }
            Ok(Err(ReadError::Sql(e))) => {
                if e.is_fatal() {
                    self.conn = None;
                }
                match &e {
                    mysql_async::Error::Server(s) if s.code == ER_UNKNOWN_SYSTEM_VARIABLE => {
                        Outcome::Status(NodeStatus::NotInGroup {
                            reason: "the group_replication plugin is not loaded".into(),
                        })
                    }
                    _ => Outcome::Failed(trouble(&e)),
                }
            }
        }
    }

    /// Logs the rows of another member that could not be read, once while they stay
    /// the same, and when they are readable again.
    fn note_bad_rows(&mut self, rows: &[String]) {
        if self.bad_rows == rows {
            return;
        }
        for row in rows {
            warn!(event = "bad_row", "mysqld's view: {row}");
        }
        if rows.is_empty() {
            info!(
                event = "bad_row",
                "every row of mysqld's view can be read again"
            );
        }
        self.bad_rows = rows.to_vec();
    }

    /// Turns an outcome into the status, keeping the timeout count and the logs.
    fn judge(&mut self, outcome: Outcome) -> NodeStatus {
        let endpoint = self.target.endpoint.to_string();
        let hung_after = self.target.hung_after_polls.max(1);
        if !matches!(outcome, Outcome::TimedOut { .. }) {
            self.timed_out_polls = 0;
        }
        let status = match outcome {
            Outcome::Status(status) => {
                if self.last_problem.take().is_some() {
                    info!(event = "mysqld", endpoint = %endpoint, "mysqld at {endpoint} answers again");
                }
                self.last_failure = None;
                return status;
            }
            Outcome::TimedOut { step, limit } => {
                self.timed_out_polls += 1;
                let n = self.timed_out_polls;
                if n <= hung_after {
                    // Logged every time up to the verdict: each one brings it closer.
                    warn!(
                        event = "mysqld",
                        endpoint = %endpoint,
                        timed_out_polls = n,
                        "mysqld at {endpoint} timed out: no answer within {} ms while {step} \
                         ({n} of {hung_after} before it counts as hung)",
                        limit.as_millis()
                    );
                    self.last_problem = Some("timeout".into());
                }
                if n >= hung_after {
                    NodeStatus::MysqldHung { timed_out_polls: n }
                } else {
                    NodeStatus::Degraded {
                        timed_out_polls: n,
                        hung_after_polls: hung_after,
                    }
                }
            }
            Outcome::Failed(Trouble::Down(why)) | Outcome::Failed(Trouble::Lost(why)) => {
                self.note(
                    format!("mysqld at {endpoint} is down, connection refused: {why}"),
                    Level::Warn,
                );
                NodeStatus::MysqldDown { reason: why }
            }
            Outcome::Failed(Trouble::Refusing { code, reason }) => {
                self.note(
                    format!(
                        "mysqld at {endpoint} is alive but refuses the agent: {reason}; \
                         the VIPs are KEPT as they are"
                    ),
                    Level::Error,
                );
                NodeStatus::MysqldRefusing { code, reason }
            }
            Outcome::Failed(Trouble::Other(why)) => {
                self.note(
                    format!("mysqld at {endpoint} failed in an unexpected way: {why}"),
                    Level::Error,
                );
                NodeStatus::Unreadable { reason: why }
            }
        };
        self.last_failure = Some(status.clone());
        status
    }

    /// Logs a problem once, when it differs from the last one.
    fn note(&mut self, problem: String, level: Level) {
        if self.last_problem.as_deref() == Some(problem.as_str()) {
            return;
        }
        match level {
            Level::Warn => warn!(event = "mysqld", endpoint = %self.target.endpoint, "{problem}"),
            Level::Error => error!(event = "mysqld", endpoint = %self.target.endpoint, "{problem}"),
        }
        self.last_problem = Some(problem);
    }
}

enum Level {
    Warn,
    Error,
}

pub(crate) fn opts(t: &MysqlTarget) -> Opts {
    let mut b = OptsBuilder::default()
        .user(Some(&t.user))
        .pass(Some(&t.password))
        // Stay on the endpoint the config names; never switch to a socket behind its back.
        .prefer_socket(false)
        .stmt_cache_size(0)
        // A vanished peer (host down, cable cut) is noticed even between queries.
        .tcp_keepalive(Some(Duration::from_secs(5)));
    match &t.endpoint {
        Endpoint::Tcp { host, port } => b = b.ip_or_hostname(host.clone()).tcp_port(*port),
        Endpoint::Socket(path) => b = b.socket(Some(path.to_string_lossy())),
    }
    if let Some(tls) = &t.tls {
        b = b.ssl_opts(super::tls::ssl_opts(tls));
    }
    Opts::from(b)
}
