//! Driving `vip_agent::mgr::Poller` in tests: one bounded poll, and polling until a
//! condition holds. Shared by the simulated-group and real-MariaDB suites.

use std::time::Duration;

use vip_agent::mgr::{NodeStatus, Poller};

/// One poll, which must come back even if mysqld does not: a poll is bounded by the
/// connect timeout plus the query timeout (and one reconnect), far below this guard.
pub async fn poll(p: &mut Poller) -> NodeStatus {
    tokio::time::timeout(Duration::from_secs(5), p.poll())
        .await
        .expect("a poll blocked past its timeouts")
}

/// Polls until `want` holds or `deadline` passes, and returns that status.
pub async fn wait_until(
    p: &mut Poller,
    deadline: Duration,
    what: &str,
    want: impl Fn(&NodeStatus) -> bool,
) -> NodeStatus {
    let deadline = tokio::time::Instant::now() + deadline;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let s = poll(p).await;
        if want(&s) {
            return s;
        }
        last = Some(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never {what}; last status: {last:?}");
}

/// What three polls of a mysqld that stopped answering give with `hung_after_polls = 3`:
/// slow, slow, then hung.
pub fn slow_then_hung() -> [NodeStatus; 3] {
    [
        NodeStatus::Degraded {
            timed_out_polls: 1,
            hung_after_polls: 3,
        },
        NodeStatus::Degraded {
            timed_out_polls: 2,
            hung_after_polls: 3,
        },
        NodeStatus::MysqldHung { timed_out_polls: 3 },
    ]
}
