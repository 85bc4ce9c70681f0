//! The runner's two long-lived tasks, each on its own connection to the local mysqld,
//! each reporting back to the loop as a [`Done`]: the poll (the view, then the lease
//! row) and the commits to the lease row. A commit the group holds (no majority) never
//! delays a poll, and neither ever delays the loop.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::Conn;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::core::{CommitError, LeaseOp, LeaseRow};
use crate::mgr::{MysqlTarget, NodeStatus, Poller, lease_row, poll};

/// What a task reports to the loop.
#[derive(Debug)]
pub enum Done {
    Polled {
        view: NodeStatus,
        me: Option<String>,
        row: Option<LeaseRow>,
        /// Why the row could not be read, when it could not.
        row_error: Option<String>,
        took: Option<Duration>,
    },
    Committed {
        attempt: u64,
        result: Result<LeaseRow, CommitError>,
    },
    Bound {
        vip: std::net::IpAddr,
        result: Result<(), String>,
    },
    Unbound {
        vip: std::net::IpAddr,
        result: Result<(), String>,
    },
    Answer {
        call: u64,
        peer: crate::peer::caller::Peer,
        result: Result<crate::core::Response, String>,
    },
}

/// Polls every `every`, and at once when `now` is notified.
pub fn spawn_poller(
    mut poller: Poller,
    every: Duration,
    now: Arc<Notify>,
    done: mpsc::UnboundedSender<Done>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = now.notified() => ticker.reset(),
            }
            let view = poller.poll().await;
            let took = poller.take_round_trip();
            let (row, row_error) = match poller.lease_row().await {
                Some(Ok(row)) => (row, None),
                Some(Err(e)) => (None, Some(e)),
                None => (None, None),
            };
            let me = poller.server_uuid().map(str::to_owned);
            let polled = Done::Polled {
                view,
                me,
                row,
                row_error,
                took,
            };
            if done.send(polled).is_err() {
                return;
            }
        }
    })
}

/// One commit for the committer task.
#[derive(Debug)]
pub struct Commit {
    pub attempt: u64,
    pub me: String,
    pub op: LeaseOp,
}

/// Runs commits one at a time, each within `limit`; a commit that does not answer in
/// time drops its connection (the group may still commit it later: the core acts only
/// on rows it reads).
pub fn spawn_committer(
    target: MysqlTarget,
    limit: Duration,
    mut commits: mpsc::UnboundedReceiver<Commit>,
    done: mpsc::UnboundedSender<Done>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let opts = poll::opts(&target);
        let mut conn: Option<Conn> = None;
        while let Some(c) = commits.recv().await {
            let result = commit(&target, &opts, &mut conn, &c, limit).await;
            let committed = Done::Committed {
                attempt: c.attempt,
                result,
            };
            if done.send(committed).is_err() {
                return;
            }
        }
    })
}

async fn commit(
    target: &MysqlTarget,
    opts: &mysql_async::Opts,
    conn: &mut Option<Conn>,
    c: &Commit,
    limit: Duration,
) -> Result<LeaseRow, CommitError> {
    let failed = |why: String| Err(CommitError::Failed(why));
    if conn.is_none() {
        match timeout(target.connect_timeout, Conn::new(opts.clone())).await {
            Err(_) => return failed("connecting to mysqld timed out".into()),
            Ok(Err(e)) => return failed(format!("connecting to mysqld: {e}")),
            Ok(Ok(c)) => *conn = Some(c),
        }
    }
    let Some(session) = conn.as_mut() else {
        return failed("no connection".into());
    };
    match timeout(limit, lease_row::commit(session, &c.me, &c.op)).await {
        Ok(result) => {
            if matches!(result, Err(CommitError::Failed(_))) {
                // The session may be in any state after a failure: start afresh.
                *conn = None;
            }
            result
        }
        Err(_) => {
            *conn = None;
            failed(format!(
                "no answer within {} ms (the group holds a commit while it has no majority)",
                limit.as_millis()
            ))
        }
    }
}
