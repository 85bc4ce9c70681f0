//! vip-agent's MGR view (`vip_agent::mgr::Poller`) against the simulated group, over the
//! MySQL wire protocol: what each member is, and what the agent makes of a mysqld that is
//! down, hung or refusing it.

use std::time::Duration;

use vip_agent::mgr::{Endpoint as Target, MysqlTarget, NodeStatus, Poller};
use vip_tests::sim::{Endpoint, MemberAddr, MemberSpec, Plugin, SimGroup, SimGroupBuilder};

mod common;
use common::poller::{poll, slow_then_hung, wait_until};

const DEADLINE: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_millis(200);

fn fast() -> SimGroupBuilder {
    SimGroup::fast()
}

fn target(group: &SimGroup, i: usize, password: &str) -> MysqlTarget {
    MysqlTarget {
        endpoint: match group.addr(i) {
            MemberAddr::Tcp(a) => Target::Tcp {
                host: a.ip().to_string(),
                port: a.port(),
            },
            MemberAddr::Unix(p) => Target::Socket(p),
        },
        user: "vip".into(),
        password: password.into(),
        tls: None,
        connect_timeout: TIMEOUT,
        query_timeout: TIMEOUT,
        hung_after_polls: 3,
    }
}

fn poller(group: &SimGroup, i: usize) -> Poller {
    Poller::new(target(group, i, "secret"))
}

/// Polls until `want` holds, and returns that status.
async fn wait(p: &mut Poller, what: &str, want: impl Fn(&NodeStatus) -> bool) -> NodeStatus {
    wait_until(p, DEADLINE, what, want).await
}

fn is_primary(s: &NodeStatus) -> bool {
    matches!(s, NodeStatus::Primary { .. })
}

#[tokio::test]
async fn primary_and_secondaries_then_crash_elects_a_new_primary() {
    let group = fast().start().unwrap();
    let mut p0 = poller(&group, 0);
    let mut p1 = poller(&group, 1);
    let s0 = poll(&mut p0).await;
    assert!(is_primary(&s0), "{s0:?}");
    assert_eq!(s0.members().unwrap().len(), 3);
    assert!(
        s0.to_string().contains("PRIMARY with quorum (3 of 3"),
        "{s0}"
    );
    let s1 = poll(&mut p1).await;
    assert!(matches!(s1, NodeStatus::Secondary { .. }), "{s1:?}");

    group.crash(0).await.unwrap();
    let s = wait(&mut p0, "down", |s| {
        matches!(s, NodeStatus::MysqldDown { .. })
    })
    .await;
    assert!(s.to_string().contains("refused"), "{s}");
    // Member 1 has the highest weight among the survivors? All equal: lowest uuid wins.
    let s = wait(&mut p1, "primary after the crash", is_primary).await;
    assert_eq!(s.members().unwrap().len(), 2, "{s:?}");
}

#[tokio::test]
async fn switchover_swaps_the_roles() {
    let group = fast().start().unwrap();
    let mut p0 = poller(&group, 0);
    let mut p2 = poller(&group, 2);
    assert!(is_primary(&poll(&mut p0).await));
    group.switchover(2).unwrap();
    wait(&mut p2, "primary", is_primary).await;
    wait(&mut p0, "secondary", |s| {
        matches!(s, NodeStatus::Secondary { .. })
    })
    .await;
}

#[tokio::test]
async fn minority_primary_loses_quorum_majority_elects() {
    let group = fast().start().unwrap();
    let mut p0 = poller(&group, 0);
    let mut p1 = poller(&group, 1);
    group.partition(&[&[0], &[1, 2]]).unwrap();
    let s = wait(&mut p0, "without quorum", |s| {
        matches!(s, NodeStatus::NoQuorum { .. })
    })
    .await;
    assert_eq!(
        s,
        NodeStatus::NoQuorum {
            unreachable: 2,
            total: 3
        }
    );
    wait(&mut p1, "primary on the majority side", is_primary).await;
}

#[tokio::test]
async fn expelled_then_rejoining_member_is_not_in_the_group() {
    let group = fast().start().unwrap();
    let mut p2 = poller(&group, 2);
    group.expel(2).unwrap();
    // Cut off, it first sees the others UNREACHABLE, then ERROR once expelled.
    wait(
        &mut p2,
        "ERROR",
        |s| matches!(s, NodeStatus::NotInGroup { reason } if reason.contains("ERROR")),
    )
    .await;
    group.heal().unwrap();
    wait(&mut p2, "secondary again", |s| {
        matches!(s, NodeStatus::Secondary { .. })
    })
    .await;
}

#[tokio::test]
async fn plugin_not_loaded_or_not_started() {
    let group = fast().start().unwrap();
    let mut p1 = poller(&group, 1);
    group.set_plugin(1, Plugin::NotLoaded).unwrap();
    let s = poll(&mut p1).await;
    assert!(
        matches!(&s, NodeStatus::NotInGroup { reason } if reason.contains("plugin is not loaded")),
        "{s:?}"
    );
    group.set_plugin(1, Plugin::NotStarted).unwrap();
    let s = poll(&mut p1).await;
    assert!(
        matches!(&s, NodeStatus::NotInGroup { reason } if reason.contains("not running")),
        "{s:?}"
    );
}

#[tokio::test]
async fn multi_primary_is_refused() {
    let group = fast().start().unwrap();
    let mut p0 = poller(&group, 0);
    group.set_multi_primary();
    let s = poll(&mut p0).await;
    assert!(
        matches!(&s, NodeStatus::MultiPrimary { reason } if reason.contains("single_primary_mode is OFF")),
        "{s:?}"
    );
}

#[tokio::test]
async fn hung_mysqld_counts_timeouts_then_is_hung_and_recovers() {
    let group = fast().start().unwrap();
    let mut p0 = poller(&group, 0);
    assert!(is_primary(&poll(&mut p0).await));
    group.set_endpoint(0, Endpoint::Hung).await.unwrap();
    let statuses = [
        poll(&mut p0).await,
        poll(&mut p0).await,
        poll(&mut p0).await,
    ];
    assert_eq!(statuses, slow_then_hung());
    group.set_endpoint(0, Endpoint::Serving).await.unwrap();
    wait(&mut p0, "answering again", is_primary).await;
}

#[tokio::test]
async fn too_many_connections_spares_the_open_connection_and_refuses_a_new_one() {
    let group = fast().start().unwrap();
    let mut kept = poller(&group, 0);
    assert!(is_primary(&poll(&mut kept).await));
    group
        .set_endpoint(0, Endpoint::TooManyConnections)
        .await
        .unwrap();
    // The agent's persistent connection still reads the view…
    assert!(is_primary(&poll(&mut kept).await));
    // …while a fresh one is refused with 1040, which the agent reports as refusing.
    let mut fresh = poller(&group, 0);
    let s = poll(&mut fresh).await;
    match &s {
        NodeStatus::MysqldRefusing { code, reason } => {
            assert_eq!(*code, Some(1040));
            assert!(reason.contains("1040"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(s.to_string().contains("refuses the agent"), "{s}");
}

#[tokio::test]
async fn wrong_password_is_refusing_with_1045() {
    let group = fast().start().unwrap();
    let mut p = Poller::new(target(&group, 0, "not-the-password"));
    let s = poll(&mut p).await;
    assert!(
        matches!(&s, NodeStatus::MysqldRefusing { code: Some(1045), reason } if reason.contains("1045")),
        "{s:?}"
    );
}

#[tokio::test]
async fn restarted_mysqld_is_reconnected_and_not_in_group_until_rejoined() {
    let group = fast().start().unwrap();
    let mut p1 = poller(&group, 1);
    assert!(matches!(poll(&mut p1).await, NodeStatus::Secondary { .. }));
    group.crash(1).await.unwrap();
    group.restart(1).await.unwrap();
    // The old connection is gone; the poller reconnects at once and reads the fresh view.
    wait(&mut p1, "not in the group after the restart", |s| {
        matches!(s, NodeStatus::NotInGroup { .. })
    })
    .await;
    group.rejoin(1).unwrap();
    wait(&mut p1, "secondary after rejoin", |s| {
        matches!(s, NodeStatus::Secondary { .. })
    })
    .await;
}

#[tokio::test]
async fn unix_socket_endpoint() {
    let dir = vip_tests::scratch::TempDir::new("mgr-view");
    let path = dir.join("mysqld.sock");
    let group = SimGroup::builder()
        .member(MemberSpec::unix(&path))
        .members(2)
        .user("vip", "secret")
        .start()
        .unwrap();
    let mut p0 = poller(&group, 0);
    assert!(matches!(p0.target().endpoint, Target::Socket(_)));
    assert!(is_primary(&poll(&mut p0).await));
    group.set_endpoint(0, Endpoint::Down).await.unwrap();
    wait(&mut p0, "down", |s| {
        matches!(s, NodeStatus::MysqldDown { .. })
    })
    .await;
}
