//! vip-agent's MGR view (`vip_agent::mgr::Poller`) against a real MariaDB server, for what
//! the simulated group cannot prove: a real handshake and authentication over TCP and the
//! unix socket, a real max_connections, a stopped (hung) and a killed mysqld, and TLS with
//! certificates made by openssl.
//!
//! MariaDB has no group replication: it answers the agent's first query with error 1193
//! (unknown system variable), which the agent reads as "not in the group: the
//! group_replication plugin is not loaded". That status is the proof that the poller
//! connected, authenticated and got an answer.
//!
//! Each test starts its own server (about a second). Nothing is timed: every poll is only
//! guarded against blocking forever, and every wait is for a condition, with a deadline.

use std::path::Path;
use std::time::Duration;

use mysql_async::{Conn, OptsBuilder};
use vip_agent::config::TlsConfig;
use vip_agent::mgr::{Endpoint, MysqlTarget, NodeStatus, Poller};
use vip_tests::mariadb::{self, MariaDb, PASSWORD, TLS_USER, USER};

mod common;
use common::poller::{poll, slow_then_hung, wait_until};

const DEADLINE: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_millis(300);

fn tcp(db: &MariaDb) -> Endpoint {
    Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port: db.port(),
    }
}

fn target(endpoint: Endpoint, user: &str, password: &str, tls: Option<TlsConfig>) -> MysqlTarget {
    MysqlTarget {
        endpoint,
        user: user.into(),
        password: password.into(),
        tls,
        connect_timeout: TIMEOUT,
        query_timeout: TIMEOUT,
        hung_after_polls: 3,
    }
}

fn poller(endpoint: Endpoint) -> Poller {
    Poller::new(target(endpoint, USER, PASSWORD, None))
}

fn tls(ca: &Path, verify_identity: bool) -> Option<TlsConfig> {
    Some(TlsConfig {
        ca: Some(ca.to_path_buf()),
        cert: None,
        key: None,
        verify_identity,
    })
}

/// Polls until `want` holds, and returns that status.
async fn wait(p: &mut Poller, what: &str, want: impl Fn(&NodeStatus) -> bool) -> NodeStatus {
    wait_until(p, DEADLINE, what, want).await
}

/// What MariaDB's answer means to the agent: connected, authenticated, answered.
fn answered(s: &NodeStatus) -> bool {
    matches!(s, NodeStatus::NotInGroup { reason } if reason.contains("plugin is not loaded"))
}

#[track_caller]
fn assert_answered(s: &NodeStatus) {
    assert!(answered(s), "{s:?}");
}

#[track_caller]
fn assert_refusing(s: &NodeStatus, want_code: Option<u16>, words: &[&str]) {
    match s {
        NodeStatus::MysqldRefusing { code, reason } => {
            assert_eq!(*code, want_code, "{reason}");
            for w in words {
                assert!(reason.contains(w), "{w:?} not in {reason:?}");
            }
        }
        other => panic!("expected refusing {want_code:?}, got {other:?}"),
    }
    assert!(s.to_string().contains("refuses the agent"), "{s}");
}

#[track_caller]
fn assert_down(s: &NodeStatus, words: &str) {
    assert!(
        matches!(s, NodeStatus::MysqldDown { reason } if reason.contains(words)),
        "expected down ({words}), got {s:?}"
    );
}

#[tokio::test]
async fn tcp_and_socket_answer_wrong_password_is_refused_stopped_is_down() {
    if !mariadb::available() {
        return;
    }
    let mut db = MariaDb::builder().start().unwrap();
    let mut over_tcp = poller(tcp(&db));
    let mut over_socket = poller(Endpoint::Socket(db.socket()));
    assert_answered(&poll(&mut over_tcp).await);
    assert_answered(&poll(&mut over_socket).await);
    // The connection is kept: the next polls answer on it too.
    assert_answered(&poll(&mut over_tcp).await);

    for endpoint in [tcp(&db), Endpoint::Socket(db.socket())] {
        let mut p = Poller::new(target(endpoint, USER, "not-the-password", None));
        assert_refusing(&poll(&mut p).await, Some(1045), &["1045", "Access denied"]);
    }
    // TLS asked of a mysqld without TLS: alive, refusing this configuration.
    let system_roots = Some(TlsConfig {
        ca: None,
        cert: None,
        key: None,
        verify_identity: true,
    });
    let mut p = Poller::new(target(tcp(&db), USER, PASSWORD, system_roots));
    assert_refusing(&poll(&mut p).await, None, &["does not offer TLS"]);

    // A clean shutdown removes the socket file; the TCP port refuses.
    db.stop().unwrap();
    assert_down(&poll(&mut over_socket).await, "no such socket");
    assert_down(&poll(&mut over_tcp).await, "refused");
}

#[tokio::test]
async fn max_connections_refuses_a_new_poller_and_spares_the_connected_one() {
    if !mariadb::available() {
        return;
    }
    const MAX: u32 = 10;
    let db = MariaDb::builder().max_connections(MAX).start().unwrap();
    let mut kept = poller(tcp(&db));
    assert_answered(&poll(&mut kept).await);

    // Fill the remaining slots with the agent's own (non-SUPER) account. A slot of a
    // connection that just closed (the readiness probe) may not be free yet: retry.
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(db.port())
        .user(Some(USER))
        .pass(Some(PASSWORD));
    let mut fillers = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while fillers.len() < MAX as usize - 1 {
        match Conn::new(opts.clone()).await {
            Ok(conn) => fillers.push(conn),
            Err(mysql_async::Error::Server(e)) if e.code == 1040 => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "only {} of {} filler connections got in",
                    fillers.len(),
                    MAX - 1
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("filler connection: {e}"),
        }
    }

    // max_connections is reached: a new poller is refused with 1040…
    let mut fresh = poller(tcp(&db));
    assert_refusing(&poll(&mut fresh).await, Some(1040), &["1040"]);
    // …while the connected one still reads, on its persistent connection.
    assert_answered(&poll(&mut kept).await);
    assert_answered(&poll(&mut kept).await);

    // Slots free again: the refused poller gets in after its backoff.
    for conn in fillers {
        conn.disconnect().await.unwrap();
    }
    wait(&mut fresh, "connected after the slots were freed", answered).await;
}

#[tokio::test]
async fn stopped_mysqld_is_degraded_then_hung_resumed_answers_killed_is_down() {
    if !mariadb::available() {
        return;
    }
    let mut db = MariaDb::builder().start().unwrap();
    let mut p = poller(tcp(&db));
    let mut over_socket = poller(Endpoint::Socket(db.socket()));
    assert_answered(&poll(&mut p).await);
    assert_answered(&poll(&mut over_socket).await);

    // SIGSTOP: the query on the open connection times out, then every new connection
    // is accepted by the kernel but never greeted.
    db.pause().unwrap();
    let statuses = [poll(&mut p).await, poll(&mut p).await, poll(&mut p).await];
    assert_eq!(statuses, slow_then_hung());
    // It stays hung while stopped.
    assert_eq!(
        poll(&mut p).await,
        NodeStatus::MysqldHung { timed_out_polls: 4 }
    );

    db.resume().unwrap();
    wait(&mut p, "answering after SIGCONT", answered).await;
    wait(&mut over_socket, "answering after SIGCONT", answered).await;

    // SIGKILL: the socket file stays behind, but nobody listens on it or on the port.
    db.kill().unwrap();
    assert_down(&poll(&mut p).await, "refused");
    assert_down(&poll(&mut over_socket).await, "refused");
}

#[tokio::test]
async fn tls_with_certificates_from_openssl() {
    if !mariadb::available() {
        return;
    }
    let db = MariaDb::builder().tls().start().unwrap();
    let certs = db.certs().unwrap().clone();
    let localhost = localhost(&db);

    // The REQUIRE SSL account gets in only over TLS: the poller's TLS really is used.
    let mut p = Poller::new(target(tcp(&db), TLS_USER, PASSWORD, tls(&certs.ca, false)));
    assert_answered(&poll(&mut p).await);
    assert_answered(&poll(&mut p).await);
    let mut p = Poller::new(target(tcp(&db), TLS_USER, PASSWORD, None));
    assert_refusing(&poll(&mut p).await, Some(1045), &["1045"]);

    // verify_identity: the certificate names 127.0.0.1 (IP SAN) and db.vip.test, so
    // 127.0.0.1 passes and "localhost" does not…
    let mut p = Poller::new(target(tcp(&db), TLS_USER, PASSWORD, tls(&certs.ca, true)));
    assert_answered(&poll(&mut p).await);
    let mut p = Poller::new(target(
        localhost.clone(),
        TLS_USER,
        PASSWORD,
        tls(&certs.ca, true),
    ));
    assert_refusing(
        &poll(&mut p).await,
        None,
        &["TLS", "invalid peer certificate"],
    );

    // The chain is always verified: another CA is refused, name check or not.
    for verify in [false, true] {
        let mut p = Poller::new(target(
            tcp(&db),
            USER,
            PASSWORD,
            tls(&certs.other_ca, verify),
        ));
        assert_refusing(&poll(&mut p).await, None, &["TLS", "UnknownIssuer"]);
    }
}

/// A name the server's certificate does not carry (it names 127.0.0.1 and db.vip.test).
fn localhost(db: &MariaDb) -> Endpoint {
    Endpoint::Tcp {
        host: "localhost".into(),
        port: db.port(),
    }
}

/// `verify_identity = false` must accept a certificate that does not name the host, as
/// long as the chain is valid. mysql_async 0.37.1 recognises a name mismatch by the text
/// "NotValidForName" in rustls's error, which rustls ≥ 0.23.24 no longer renders
/// ("certificate not valid for name …"), so the name is always checked.
#[tokio::test]
#[ignore = "mysql_async 0.37.1 with rustls >= 0.23.24 ignores skip_domain_validation \
            (blackbeam/mysql_async#404, fixed upstream by #408, not released yet)"]
async fn tls_without_identity_check_accepts_a_certificate_for_another_name() {
    if !mariadb::available() {
        return;
    }
    let db = MariaDb::builder().tls().start().unwrap();
    let ca = db.certs().unwrap().ca.clone();
    let mut p = Poller::new(target(localhost(&db), TLS_USER, PASSWORD, tls(&ca, false)));
    assert_answered(&poll(&mut p).await);
}

/// The lease row's statements on a real server, through the agent's account with only
/// the grant the README gives: the table as created from `lease_row::CREATE`, a first
/// take, a second one that finds the row, a renewal, and a take of the next term.
/// (MariaDB has no group_replication_consistency, so the session's own is used.)
#[tokio::test]
async fn the_lease_rows_statements_run_on_a_real_server() {
    use vip_agent::core::{CommitError, LeaseOp};
    use vip_agent::mgr::lease_row;
    if !mariadb::available() {
        return;
    }
    let account = format!("'{USER}'@'%', '{USER}'@'localhost'");
    let db = MariaDb::builder()
        .init_sql(lease_row::CREATE)
        .init_sql(&lease_row::grant(&account))
        .start()
        .unwrap();
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(db.port())
        .user(Some(USER))
        .pass(Some(PASSWORD));
    let mut conn = Conn::new(opts).await.unwrap();
    let (a, b) = (
        "3e11fa47-71ca-11e1-9e33-c80aa9429562",
        "8a94f357-aab4-11df-86ab-c80aa9429562",
    );
    assert_eq!(lease_row::read(&mut conn).await.unwrap(), None);

    let first = LeaseOp::Take { expect: None };
    let row = lease_row::commit_in_session(&mut conn, a, &first)
        .await
        .unwrap();
    assert_eq!((row.term, row.renewals, row.settled), (1, 0, false));
    let err = lease_row::commit_in_session(&mut conn, b, &first)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CommitError::Stale {
            current: Some(row.clone())
        }
    );
    let renew = LeaseOp::Renew {
        term: 1,
        settled: true,
    };
    let row = lease_row::commit_in_session(&mut conn, a, &renew)
        .await
        .unwrap();
    assert_eq!((row.renewals, row.settled), (1, true));
    // Another agent's renewal of a term it does not hold matches nothing.
    let err = lease_row::commit_in_session(&mut conn, b, &renew)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CommitError::Stale {
            current: Some(row.clone())
        }
    );
    let take = LeaseOp::Take {
        expect: Some(row.version()),
    };
    let taken = lease_row::commit_in_session(&mut conn, b, &take)
        .await
        .unwrap();
    assert_eq!(
        (taken.holder.as_str(), taken.term, taken.renewals),
        (b, 2, 0)
    );
    assert_eq!(lease_row::read(&mut conn).await.unwrap(), Some(taken));
    // MariaDB has no Group Replication: the consistency setting names the variable.
    let err = lease_row::commit(&mut conn, a, &first).await.unwrap_err();
    assert!(
        matches!(&err, CommitError::Failed(m) if m.contains("group_replication_consistency")),
        "{err:?}"
    );
}
