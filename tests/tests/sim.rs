//! The simulated MGR group as a client sees it: every assertion goes through mysql_async
//! over the MySQL wire protocol.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use vip_tests::sim::{
    AuthPlugin, Endpoint, MemberAddr, MemberSpec, Plugin, SimGroup, SimGroupBuilder,
};

const DEADLINE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(15);
/// How long a client waits on a hung member before giving up.
const HANG_TIMEOUT: Duration = Duration::from_millis(300);

const MEMBERS_QUERY: &str = "SELECT MEMBER_ID, MEMBER_STATE, MEMBER_ROLE \
                             FROM performance_schema.replication_group_members";

fn fast() -> SimGroupBuilder {
    SimGroup::fast()
}

async fn connect(group: &SimGroup, i: usize) -> Conn {
    Conn::new(group.opts(i))
        .await
        .unwrap_or_else(|e| panic!("connect to member {i}: {e}"))
}

/// The member's answer, as "index:STATE:ROLE" (index "-" for an empty MEMBER_ID).
async fn view(group: &SimGroup, conn: &mut Conn) -> Vec<String> {
    let rows: Vec<(String, String, String)> =
        conn.query(MEMBERS_QUERY).await.expect("members query");
    rows.into_iter()
        .map(|(id, state, role)| {
            let idx = group
                .index_of(&id)
                .map_or("-".to_owned(), |i| i.to_string());
            format!("{idx}:{state}:{role}")
        })
        .collect()
}

/// Polls `conn`'s view until it equals `expected`.
async fn wait_view(group: &SimGroup, conn: &mut Conn, expected: &[&str]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let seen = view(group, conn).await;
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "view stayed {seen:?}, expected {expected:?}\nevents:\n{}",
            group.event_log()
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn var(conn: &mut Conn, name: &str) -> Option<String> {
    let row: Row = conn
        .query_first(format!("SELECT @@{name}"))
        .await
        .expect("variable query")
        .expect("one row");
    row.get::<Option<String>, _>(0).expect("one column")
}

async fn super_read_only(conn: &mut Conn) -> String {
    var(conn, "super_read_only").await.expect("not NULL")
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

fn io_kind(e: &mysql_async::Error) -> Option<io::ErrorKind> {
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Io(e)) => Some(e.kind()),
        _ => None,
    }
}

#[tokio::test]
async fn primary_crash_shows_unreachable_primary_then_elects_by_weight() {
    let group = fast().start().unwrap();
    group.set_weight(2, 70).unwrap();
    let mut c1 = connect(&group, 1).await;
    let mut c2 = connect(&group, 2).await;
    wait_view(
        &group,
        &mut c1,
        &[
            "0:ONLINE:PRIMARY",
            "1:ONLINE:SECONDARY",
            "2:ONLINE:SECONDARY",
        ],
    )
    .await;
    assert_eq!(super_read_only(&mut c2).await, "1");

    group.crash(0).await.unwrap();
    let refused = Conn::new(group.opts(0)).await.unwrap_err();
    assert_eq!(
        io_kind(&refused),
        Some(io::ErrorKind::ConnectionRefused),
        "{refused}"
    );
    wait_view(
        &group,
        &mut c1,
        &[
            "0:UNREACHABLE:PRIMARY",
            "1:ONLINE:SECONDARY",
            "2:ONLINE:SECONDARY",
        ],
    )
    .await;
    wait_view(&group, &mut c1, &["1:ONLINE:SECONDARY", "2:ONLINE:PRIMARY"]).await;
    wait_view(&group, &mut c2, &["1:ONLINE:SECONDARY", "2:ONLINE:PRIMARY"]).await;
    assert_eq!(super_read_only(&mut c2).await, "0");
    assert_eq!(super_read_only(&mut c1).await, "1");
}

#[tokio::test]
async fn primary_crash_with_equal_weights_elects_lowest_uuid() {
    let group = fast().start().unwrap();
    let mut c2 = connect(&group, 2).await;
    group.crash(0).await.unwrap();
    wait_view(&group, &mut c2, &["1:ONLINE:PRIMARY", "2:ONLINE:SECONDARY"]).await;
}

#[tokio::test]
async fn switchover_moves_primary_and_read_only() {
    let group = fast().start().unwrap();
    let mut conns = Vec::new();
    for i in 0..3 {
        conns.push(connect(&group, i).await);
    }
    group.switchover(2).unwrap();
    for c in &mut conns {
        wait_view(
            &group,
            c,
            &[
                "0:ONLINE:SECONDARY",
                "1:ONLINE:SECONDARY",
                "2:ONLINE:PRIMARY",
            ],
        )
        .await;
    }
    assert_eq!(super_read_only(&mut conns[0]).await, "1");
    assert_eq!(var(&mut conns[0], "read_only").await.as_deref(), Some("1"));
    assert_eq!(super_read_only(&mut conns[2]).await, "0");
}

#[tokio::test]
async fn expel_seen_from_both_sides() {
    let group = fast().start().unwrap();
    let mut c0 = connect(&group, 0).await;
    let mut c2 = connect(&group, 2).await;
    group.expel(2).unwrap();
    wait_view(
        &group,
        &mut c2,
        &[
            "0:UNREACHABLE:PRIMARY",
            "1:UNREACHABLE:SECONDARY",
            "2:ONLINE:SECONDARY",
        ],
    )
    .await;
    wait_view(&group, &mut c2, &["2:ERROR:"]).await;
    assert_eq!(super_read_only(&mut c2).await, "1");
    wait_view(&group, &mut c0, &["0:ONLINE:PRIMARY", "1:ONLINE:SECONDARY"]).await;
}

#[tokio::test]
async fn partition_minority_blocks_majority_moves_on_heal_rejoins() {
    let group = fast().start().unwrap();
    let mut c0 = connect(&group, 0).await;
    let mut c1 = connect(&group, 1).await;
    group.partition(&[&[0], &[1, 2]]).unwrap();
    // The majority expels the old primary and elects member 1 ...
    wait_view(&group, &mut c1, &["1:ONLINE:PRIMARY", "2:ONLINE:SECONDARY"]).await;
    // ... while the minority, blocked, still calls itself primary: the views disagree.
    wait_view(
        &group,
        &mut c0,
        &[
            "0:ONLINE:PRIMARY",
            "1:UNREACHABLE:SECONDARY",
            "2:UNREACHABLE:SECONDARY",
        ],
    )
    .await;
    assert_eq!(super_read_only(&mut c0).await, "0");

    group.heal().unwrap();
    let all = [
        "0:ONLINE:SECONDARY",
        "1:ONLINE:PRIMARY",
        "2:ONLINE:SECONDARY",
    ];
    wait_view(&group, &mut c0, &all).await;
    wait_view(&group, &mut c1, &all).await;
    assert_eq!(super_read_only(&mut c0).await, "1");
    let log = group.event_log();
    assert!(log.contains("learns it was expelled"), "{log}");
}

#[tokio::test]
async fn minority_goes_error_after_unreachable_majority_timeout() {
    let group = fast()
        .unreachable_majority_timeout(Duration::from_millis(100))
        .auto_rejoin(false)
        .start()
        .unwrap();
    let mut c0 = connect(&group, 0).await;
    group.partition(&[&[0], &[1, 2]]).unwrap();
    wait_view(&group, &mut c0, &["0:ERROR:"]).await;
    assert_eq!(super_read_only(&mut c0).await, "1");
    group.heal().unwrap();
    // Without auto-rejoin it stays in ERROR until told to rejoin.
    // (Longer than the whole rejoin path would take.)
    let until = Instant::now() + Duration::from_millis(150);
    while Instant::now() < until {
        assert_eq!(view(&group, &mut c0).await, ["0:ERROR:"]);
        tokio::time::sleep(POLL).await;
    }
    group.rejoin(0).unwrap();
    wait_view(
        &group,
        &mut c0,
        &[
            "0:ONLINE:SECONDARY",
            "1:ONLINE:PRIMARY",
            "2:ONLINE:SECONDARY",
        ],
    )
    .await;
}

#[tokio::test]
async fn restart_and_rejoin_goes_offline_recovering_online() {
    let group = fast()
        .rejoin_delays(Duration::from_millis(200), Duration::from_millis(200))
        .start()
        .unwrap();
    let mut c0 = connect(&group, 0).await;
    group.crash(2).await.unwrap();
    wait_view(&group, &mut c0, &["0:ONLINE:PRIMARY", "1:ONLINE:SECONDARY"]).await;
    group.restart(2).await.unwrap();
    let mut c2 = connect(&group, 2).await;
    // Plugin loaded, never started since mysqld started: one OFFLINE row, empty fields.
    let rows: Vec<(String, String, Option<u16>, String, String)> = c2
        .query(
            "SELECT member_id, member_host, member_port, member_state, member_role \
             FROM performance_schema.replication_group_members",
        )
        .await
        .unwrap();
    assert_eq!(
        rows,
        [(
            String::new(),
            String::new(),
            None,
            "OFFLINE".into(),
            String::new()
        )]
    );

    group.rejoin(2).unwrap();
    wait_view(&group, &mut c2, &["2:OFFLINE:"]).await;
    wait_view(
        &group,
        &mut c2,
        &[
            "0:ONLINE:PRIMARY",
            "1:ONLINE:SECONDARY",
            "2:RECOVERING:SECONDARY",
        ],
    )
    .await;
    let all = [
        "0:ONLINE:PRIMARY",
        "1:ONLINE:SECONDARY",
        "2:ONLINE:SECONDARY",
    ];
    wait_view(&group, &mut c2, &all).await;
    wait_view(&group, &mut c0, &all).await;
}

#[tokio::test]
async fn multi_primary_mode() {
    let group = fast().start().unwrap();
    let mut c1 = connect(&group, 1).await;
    group.set_multi_primary();
    wait_view(
        &group,
        &mut c1,
        &["0:ONLINE:PRIMARY", "1:ONLINE:PRIMARY", "2:ONLINE:PRIMARY"],
    )
    .await;
    let (single, enforce, sro): (i64, i64, i64) = c1
        .query_first(
            "SELECT @@group_replication_single_primary_mode, \
             @@global.group_replication_enforce_update_everywhere_checks, @@super_read_only",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((single, enforce, sro), (0, 1, 0));

    let started_mp = SimGroup::builder()
        .members(2)
        .multi_primary()
        .start()
        .unwrap();
    let mut c = connect(&started_mp, 0).await;
    wait_view(
        &started_mp,
        &mut c,
        &["0:ONLINE:PRIMARY", "1:ONLINE:PRIMARY"],
    )
    .await;
}

#[tokio::test]
async fn plugin_not_loaded_has_no_rows_and_no_variables() {
    let group = fast().start().unwrap();
    let mut c1 = connect(&group, 1).await;
    group.set_plugin(1, Plugin::NotLoaded).unwrap();
    assert!(view(&group, &mut c1).await.is_empty());
    let err = c1
        .query_drop("SELECT @@group_replication_single_primary_mode")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), Some(1193), "{err}");
    assert_eq!(super_read_only(&mut c1).await, "0");

    group.set_plugin(2, Plugin::NotStarted).unwrap();
    let mut c2 = connect(&group, 2).await;
    assert_eq!(view(&group, &mut c2).await, ["-:OFFLINE:"]);
    let mut c0 = connect(&group, 0).await;
    wait_view(&group, &mut c0, &["0:ONLINE:PRIMARY"]).await;
}

#[tokio::test]
async fn both_auth_plugins_check_the_password() {
    for plugin in [
        AuthPlugin::MysqlNativePassword,
        AuthPlugin::CachingSha2Password,
    ] {
        let group = fast().auth_plugin(plugin).start().unwrap();
        let mut conn = connect(&group, 0).await;
        let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1), "{plugin:?}");

        let err = Conn::new(group.opts(0).pass(Some("wrong")))
            .await
            .unwrap_err();
        let mysql_async::Error::Server(e) = &err else {
            panic!("{plugin:?}: expected a server error, got {err}");
        };
        assert_eq!(e.code, 1045, "{plugin:?}: {e}");
        assert_eq!(e.state, "28000", "{plugin:?}: {e}");
        assert_eq!(
            e.message,
            "Access denied for user 'vip'@'127.0.0.1' (using password: YES)"
        );
        let err = Conn::new(group.opts(0).user(Some("nobody")))
            .await
            .unwrap_err();
        assert_eq!(server_code(&err), Some(1045), "{plugin:?}: {err}");
    }
}

#[tokio::test]
async fn variables_and_unknown_queries() {
    let group = SimGroup::builder()
        .member(MemberSpec::tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).report_host("10.9.0.1"))
        .member(MemberSpec::tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).port(3307))
        .start()
        .unwrap();
    let MemberAddr::Tcp(addr) = group.addr(0) else {
        panic!()
    };
    let mut c = connect(&group, 0).await;
    let row: Row = c
        .query_first(
            "select @@server_uuid, @@GLOBAL.super_read_only AS sro, @@port, @@report_host, \
             @@hostname, @@version, @@socket, @@group_replication_single_primary_mode",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.columns_ref()[1].name_str(), "sro");
    let (uuid, sro, port, host, hostname, version, socket, single): (
        String,
        i64,
        u16,
        String,
        String,
        String,
        Option<String>,
        i64,
    ) = mysql_async::from_row(row);
    assert_eq!(uuid, "00000000-0000-0000-0000-000000000001");
    assert_eq!((sro, port, single), (0, addr.port(), 1));
    assert_eq!(
        (host.as_str(), hostname.as_str()),
        ("10.9.0.1", "sim-member-0")
    );
    assert_eq!((version.as_str(), socket), ("8.0.36-sim", None));

    // MEMBER_HOST is the report_host; MEMBER_PORT the configured port.
    let rows: Vec<(String, u16, String)> = c
        .query(
            "SELECT * FROM performance_schema.replication_group_members \
             WHERE member_id = @@server_uuid",
        )
        .await
        .map(|rows: Vec<Row>| {
            rows.into_iter()
                .map(|r| {
                    assert_eq!(r.columns_ref().len(), 8);
                    (r.get(2).unwrap(), r.get(3).unwrap(), r.get(7).unwrap())
                })
                .collect()
        })
        .unwrap();
    assert_eq!(
        rows,
        [("10.9.0.1".to_owned(), addr.port(), "XCom".to_owned())]
    );
    let port1: Vec<u16> = c
        .query("SELECT MEMBER_PORT FROM performance_schema.replication_group_members")
        .await
        .unwrap();
    assert_eq!(port1[1], 3307);

    c.query_drop("SET NAMES utf8mb4").await.unwrap();
    for (sql, code) in [
        ("SELECT @@no_such_variable", 1193),
        ("SELECT * FROM mysql.user", 1146),
        ("SHOW PROCESSLIST", 1064),
        ("SELECT member_state", 1054),
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&err), Some(code), "{sql}: {err}");
    }
    // The connection survives errors, and prepared statements work without parameters.
    let uuid: Option<String> = c.exec_first("SELECT @@server_uuid", ()).await.unwrap();
    assert_eq!(
        uuid.as_deref(),
        Some("00000000-0000-0000-0000-000000000001")
    );
    let states: Vec<(String, String)> = c
        .exec(MEMBERS_QUERY.replace("MEMBER_ID, ", ""), ())
        .await
        .unwrap();
    assert_eq!(states.len(), 2);
}

#[tokio::test]
async fn hung_member_times_out_connect_and_query() {
    let group = fast().start().unwrap();
    let mut open = connect(&group, 0).await;
    group.set_endpoint(0, Endpoint::Hung).await.unwrap();

    let connecting = tokio::time::timeout(HANG_TIMEOUT, Conn::new(group.opts(0))).await;
    assert!(
        connecting.is_err(),
        "connect to a hung member should time out"
    );
    let query = tokio::time::timeout(HANG_TIMEOUT, open.query_drop("SELECT 1")).await;
    assert!(query.is_err(), "a query to a hung member should time out");
    let ping = tokio::time::timeout(HANG_TIMEOUT, connect(&group, 1)).await;
    assert!(ping.is_ok(), "other members still answer");

    group.set_endpoint(0, Endpoint::Serving).await.unwrap();
    let mut again = connect(&group, 0).await;
    again.ping().await.unwrap();
}

#[tokio::test]
async fn down_refuses_connections_then_up_serves_again() {
    let group = fast().start().unwrap();
    let mut open = connect(&group, 1).await;
    group.set_endpoint(1, Endpoint::Down).await.unwrap();
    let err = Conn::new(group.opts(1)).await.unwrap_err();
    assert_eq!(
        io_kind(&err),
        Some(io::ErrorKind::ConnectionRefused),
        "{err}"
    );
    assert!(
        open.query_drop("SELECT 1").await.is_err(),
        "open connections are dropped"
    );
    // mysqld down is not a group event by itself.
    assert_eq!(group.rows(0).len(), 3);

    group.set_endpoint(1, Endpoint::Serving).await.unwrap();
    let mut c = connect(&group, 1).await;
    wait_view(
        &group,
        &mut c,
        &[
            "0:ONLINE:PRIMARY",
            "1:ONLINE:SECONDARY",
            "2:ONLINE:SECONDARY",
        ],
    )
    .await;
}

#[tokio::test]
async fn too_many_connections_refuses_new_keeps_open() {
    let group = fast().start().unwrap();
    let mut open = connect(&group, 0).await;
    group
        .set_endpoint(0, Endpoint::TooManyConnections)
        .await
        .unwrap();
    let err = Conn::new(group.opts(0)).await.unwrap_err();
    assert_eq!(server_code(&err), Some(1040), "{err}");
    assert_eq!(view(&group, &mut open).await.len(), 3);

    group.set_endpoint(0, Endpoint::Serving).await.unwrap();
    connect(&group, 0).await.ping().await.unwrap();
}

#[tokio::test]
async fn unix_socket_member() {
    let dir = vip_tests::scratch::TempDir::new("sim");
    let path = dir.join("m0.sock");
    let group = SimGroup::builder()
        .member(MemberSpec::unix(&path))
        .members(2)
        .start()
        .unwrap();
    let mut c = connect(&group, 0).await;
    let (host, port): (String, u16) = c
        .query_first(
            "SELECT MEMBER_HOST, MEMBER_PORT FROM performance_schema.replication_group_members \
             WHERE MEMBER_ID = @@server_uuid",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((host.as_str(), port), ("localhost", 3306));

    group.set_endpoint(0, Endpoint::Down).await.unwrap();
    let err = Conn::new(group.opts(0)).await.unwrap_err();
    assert_eq!(
        io_kind(&err),
        Some(io::ErrorKind::ConnectionRefused),
        "{err}"
    );
    group.set_endpoint(0, Endpoint::Serving).await.unwrap();
    connect(&group, 0).await.ping().await.unwrap();
    drop(group);
    assert!(!path.exists(), "the socket file is removed with the group");
}

/// Members in lab hosts, seen by a client in a lab client: the TCP path the agent uses.
mod in_the_lab {
    use super::*;
    use vip_tests::lab::{Host, Lab};

    type Rows = Vec<(String, String, u16, String, String)>;

    /// Queries the member `opts` points at with mysql_async from inside `client`'s network namespace
    /// (a thread with its own runtime, so the client's socket is made there).
    async fn members_from(
        client: &Host,
        opts: mysql_async::OptsBuilder,
    ) -> mysql_async::Result<Rows> {
        let ns = client.ns().to_owned();
        tokio::task::spawn_blocking(move || {
            vip_tests::netns::run_in(&ns, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut conn = Conn::new(opts).await?;
                    conn.query(
                        "SELECT MEMBER_ID, MEMBER_HOST, MEMBER_PORT, MEMBER_STATE, MEMBER_ROLE \
                         FROM performance_schema.replication_group_members",
                    )
                    .await
                })
            })
            .unwrap()
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_serve_on_their_lab_addresses_and_a_client_follows_a_crash() {
        if !vip_tests::privileged() {
            return;
        }
        let lab = Lab::builder().hosts(3).clients(1).build().unwrap();
        let mut builder = SimGroup::builder()
            .user("vip", "secret")
            .unreachable_after(Duration::from_millis(60))
            .expel_after(Duration::from_millis(120));
        for host in lab.hosts() {
            let addr = SocketAddr::from((host.ipv4(), 3306));
            builder = builder.member(
                MemberSpec::tcp_in_netns(host.ns(), addr).report_host(host.ipv4().to_string()),
            );
        }
        let group = builder.start().unwrap();
        let client = lab.client(0);

        let rows = members_from(client, group.opts(1)).await.unwrap();
        let hosts: Vec<(String, u16)> = rows.iter().map(|r| (r.1.clone(), r.2)).collect();
        assert_eq!(
            hosts,
            [
                ("198.51.100.11".into(), 3306),
                ("198.51.100.12".into(), 3306),
                ("198.51.100.13".into(), 3306)
            ]
        );
        assert_eq!(rows[0].4, "PRIMARY");
        group.crash(0).await.unwrap();
        let err = members_from(client, group.opts(0)).await.unwrap_err();
        assert_eq!(
            io_kind(&err),
            Some(io::ErrorKind::ConnectionRefused),
            "{err}"
        );
        let deadline = Instant::now() + DEADLINE;
        loop {
            let rows = members_from(client, group.opts(1)).await.unwrap();
            let primary = rows.iter().find(|r| r.4 == "PRIMARY").map(|r| r.1.clone());
            if rows.len() == 2 && primary.as_deref() == Some("198.51.100.12") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no new primary: {rows:?}\n{}",
                group.event_log()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

#[tokio::test]
async fn event_log_records_transitions() {
    let group = fast().start().unwrap();
    let mut c1 = connect(&group, 1).await;
    group.crash(0).await.unwrap();
    wait_view(&group, &mut c1, &["1:ONLINE:PRIMARY", "2:ONLINE:SECONDARY"]).await;
    let events = group.events();
    let find = |what: &str| {
        events
            .iter()
            .find(|e| e.member == Some(1) && e.what.contains(what))
            .unwrap_or_else(|| panic!("no '{what}' in\n{}", group.event_log()))
            .at
    };
    let unreachable = find("sees member 0 UNREACHABLE");
    let expelled = find("expels member 0");
    assert!(
        unreachable >= Duration::from_millis(60)
            && expelled >= unreachable + Duration::from_millis(120)
    );
    find("elects member 1 PRIMARY");
}

/// The agents' lease row (`vip_agent::mgr::lease_row`) as MGR commits it: only on the
/// writable primary, and only with a majority (a minority's commit and consistent read
/// block); each take names the version it replaces; a member cut off keeps its old row
/// until it is back.
#[tokio::test]
async fn the_lease_row_commits_on_the_primary_with_a_majority_only() {
    use vip_agent::core::{CommitError, LeaseOp};
    use vip_agent::mgr::lease_row;

    /// Long enough to show a statement is held, not just slow.
    const HELD: Duration = Duration::from_millis(300);
    let group = fast().start().unwrap();
    let (me, other) = (group.uuid(0), group.uuid(1));
    let mut c0 = connect(&group, 0).await;
    let mut c1 = connect(&group, 1).await;
    let first = LeaseOp::Take { expect: None };

    let row = lease_row::commit(&mut c0, &me, &first).await.unwrap();
    assert_eq!(
        (row.holder.as_str(), row.term, row.renewals),
        (me.as_str(), 1, 0)
    );
    let err = lease_row::commit(&mut c1, &other, &first)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommitError::Failed(m) if m.contains("read-only")),
        "a secondary's commit: {err:?}"
    );
    let err = lease_row::commit(&mut c0, &me, &first).await.unwrap_err();
    assert_eq!(err, CommitError::Stale { current: Some(row) });
    let renew = LeaseOp::Renew {
        term: 1,
        settled: true,
    };
    let row = lease_row::commit(&mut c0, &me, &renew).await.unwrap();
    assert_eq!((row.renewals, row.settled), (1, true));
    assert_eq!(lease_row::read(&mut c1).await.unwrap(), Some(row.clone()));

    // The primary in a minority: its renewal is held.
    group.partition(&[&[0], &[1, 2]]).unwrap();
    let held = tokio::time::timeout(HELD, lease_row::commit(&mut c0, &me, &renew)).await;
    assert!(held.is_err(), "a minority's commit went through: {held:?}");
    drop(c0);
    // It still reads its old row, unless it asks for the group's latest.
    let mut c0 = connect(&group, 0).await;
    assert_eq!(lease_row::read(&mut c0).await.unwrap(), Some(row.clone()));
    c0.query_drop(lease_row::BEFORE).await.unwrap();
    let held = tokio::time::timeout(HELD, lease_row::read(&mut c0)).await;
    assert!(held.is_err(), "a minority's consistent read: {held:?}");
    drop(c0);

    // The majority's new primary takes the next term, once it is writable.
    wait_view(&group, &mut c1, &["1:ONLINE:PRIMARY", "2:ONLINE:SECONDARY"]).await;
    let take = LeaseOp::Take {
        expect: Some(row.version()),
    };
    let deadline = Instant::now() + DEADLINE;
    let taken = loop {
        match lease_row::commit(&mut c1, &other, &take).await {
            Ok(row) => break row,
            Err(e) => assert!(Instant::now() < deadline, "the new primary's take: {e:?}"),
        }
        tokio::time::sleep(POLL).await;
    };
    assert_eq!((taken.holder.as_str(), taken.term), (other.as_str(), 2));

    // Back in the group, the old primary has the new row.
    group.heal().unwrap();
    let mut c0 = connect(&group, 0).await;
    let deadline = Instant::now() + DEADLINE;
    while lease_row::read(&mut c0).await.unwrap() != Some(taken.clone()) {
        assert!(Instant::now() < deadline, "{}", group.event_log());
        tokio::time::sleep(POLL).await;
    }
}
