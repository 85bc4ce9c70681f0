//! Clients fail fast at scale, against a real server, and only in the agent's namespace.
//!
//! - Hundreds of MySQL sessions through the write VIP to a real MariaDB on the primary's
//!   host, some idle and some in the middle of a transaction: on a planned switchover
//!   every one fails its next query at once, MariaDB sees every session end, and the open
//!   transactions are rolled back. Both reset paths: the iter/tcp program with
//!   bpf_sock_destroy (the default), and netlink SOCK_DESTROY.
//! - Another lab's host, no part of the group, with the same VIP bound and live
//!   connections through it: a switchover in the group leaves them working. The reset
//!   is scoped to the agent's network namespace, whatever else the kernel holds.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use common::status::{assert_reset_path, resets_logged};
use vip_tests::cluster::{Cluster, MYSQL_PORT, VipSettings};
use vip_tests::lab::{Host, Lab};
use vip_tests::mariadb::{self, MariaDb};

/// How long the group and the agents may take to settle (a VIP moving).
const SETTLE: Duration = Duration::from_secs(20);
/// How long a client may wait for what it should see (a reset, an answer, a session gone).
const DEADLINE: Duration = Duration::from_secs(10);
/// MySQL handshakes in flight at once while the sessions are opened.
const OPENING_AT_ONCE: usize = 32;
/// Sessions left in the middle of a transaction (the others are idle).
const IN_TRANSACTION: usize = 50;
/// The schema the sessions write to.
const DB: &str = "scale";

/// Raises this process's soft limit on open files to `want` (or the hard limit): the
/// client sessions of two tests running side by side need more than the usual 1024.
fn raise_nofile(want: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a valid pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// The lab's client host running a tokio runtime: the sessions' sockets are made in its
/// namespace, and live there until the test ends.
struct ClientHost(Option<Runtime>);

impl ClientHost {
    fn new(host: &Host) -> ClientHost {
        ClientHost(Some(vip_tests::netns::runtime_in(host.ns(), 2).unwrap()))
    }

    /// Runs `f` on the client host, waiting for it from the test's runtime.
    async fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.0.as_ref().expect("running");
        rt.spawn(f).await.expect("a client task panicked")
    }
}

impl Drop for ClientHost {
    fn drop(&mut self) {
        // Dropping a runtime inside another (the test's) would panic.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// MariaDB's root over its unix socket, from the root namespace.
async fn root(db: &MariaDb) -> Conn {
    let socket = db.socket().to_str().expect("UTF-8 path").to_owned();
    let opts = OptsBuilder::default()
        .user(Some("root"))
        .socket(Some(socket));
    let mut conn = Conn::new(opts).await.unwrap();
    let wait = format!(
        "SET SESSION innodb_lock_wait_timeout = {}",
        DEADLINE.as_secs()
    );
    conn.query_drop(wait).await.unwrap();
    conn
}

async fn count(root: &mut Conn, sql: &str) -> u64 {
    root.query_first::<u64, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("one row")
}

/// MariaDB's sessions and transactions, for a failure message.
async fn mariadb_state(root: &mut Conn) -> String {
    let mut out = String::new();
    for sql in [
        "SELECT CONCAT_WS(' ', id, user, host, command, time, state) \
         FROM information_schema.processlist",
        "SELECT CONCAT_WS(' ', trx_id, trx_state, trx_mysql_thread_id, trx_started) \
         FROM information_schema.innodb_trx",
    ] {
        out.push_str(sql);
        out.push('\n');
        match root.query::<String, _>(sql).await {
            Ok(rows) => rows.iter().for_each(|r| out.push_str(&format!("  {r}\n"))),
            Err(e) => out.push_str(&format!("  {e}\n")),
        }
    }
    out
}

/// Waits until `sql`, a count of `what`, says 0; asks `every` so often.
async fn wait_zero(root: &mut Conn, sql: &str, what: &str, every: Duration) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = count(root, sql).await;
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            let state = mariadb_state(root).await;
            panic!("{left} {what} left in MariaDB after {DEADLINE:?}\n{state}");
        }
        tokio::time::sleep(every).await;
    }
}

/// The rows the sessions in a transaction change: `t` has one row per such session, `log`
/// is empty; [`USER`](mariadb::USER) may read and write both.
async fn create_schema(root: &mut Conn) {
    let rows: Vec<String> = (0..IN_TRANSACTION).map(|i| format!("({i}, 0)")).collect();
    for sql in [
        format!("CREATE DATABASE {DB}"),
        format!("CREATE TABLE {DB}.t (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB"),
        format!("INSERT INTO {DB}.t (id, v) VALUES {}", rows.join(", ")),
        format!("CREATE TABLE {DB}.log (id INT PRIMARY KEY) ENGINE=InnoDB"),
        format!(
            "GRANT SELECT, INSERT, UPDATE ON {DB}.* TO '{}'@'%'",
            mariadb::USER
        ),
    ] {
        root.query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Session `i`: authenticated; the first [`IN_TRANSACTION`] also begin a transaction,
/// change their row of `t`, add theirs to `log`, and leave it uncommitted.
async fn open_session(opts: Opts, i: usize) -> mysql_async::Result<Conn> {
    let mut conn = Conn::new(opts).await?;
    if i < IN_TRANSACTION {
        conn.query_drop("BEGIN").await?;
        conn.query_drop(format!("UPDATE t SET v = v + 1 WHERE id = {i}"))
            .await?;
        conn.query_drop(format!("INSERT INTO log (id) VALUES ({i})"))
            .await?;
    }
    Ok(conn)
}

/// `n` sessions, [`OPENING_AT_ONCE`] handshakes at a time; the first error otherwise.
async fn open_sessions(opts: Opts, n: usize) -> Result<Vec<Conn>, String> {
    let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut opening = JoinSet::new();
    for i in 0..n {
        let (opts, gate) = (opts.clone(), gate.clone());
        opening.spawn(async move {
            let _turn = gate.acquire_owned().await.expect("never closed");
            match tokio::time::timeout(SETTLE, open_session(opts, i)).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(format!("session #{i}: {e}")),
                Err(_) => Err(format!("session #{i}: not open within {SETTLE:?}")),
            }
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(done) = opening.join_next().await {
        conns.push(done.expect("an opening task panicked")?);
    }
    Ok(conns)
}

/// What a session's next query got.
enum Outcome {
    /// An error: what the application sees of a reset.
    Failed(String),
    /// An answer, or nothing at all within [`DEADLINE`]: the session survived.
    Survived(String),
}

/// Sends the next query on every session at once, and drops them.
async fn query_each(conns: Vec<Conn>) -> Vec<Outcome> {
    let mut queries = JoinSet::new();
    for mut conn in conns {
        queries.spawn(async move {
            match tokio::time::timeout(DEADLINE, conn.query_drop("SELECT 1")).await {
                Ok(Err(e)) => Outcome::Failed(e.to_string()),
                Ok(Ok(())) => Outcome::Survived("it answered".into()),
                Err(_) => Outcome::Survived(format!("no answer, no error in {DEADLINE:?}")),
            }
        });
    }
    let mut out = Vec::new();
    while let Some(done) = queries.join_next().await {
        out.push(done.expect("a query task panicked"));
    }
    out
}

/// How many file descriptors process `pid` has open, and its resident memory in MiB.
fn footprint(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    (fds, rss_kib / 1024)
}

/// Switches the primary from h1 to h2 and waits until h1's agent released the VIP and
/// logged its reset (it resets before and after the unbind, then logs once).
fn switch_h1_to_h2(c: &Cluster) {
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    c.wait(SETTLE, "h1's reset event", |c| {
        c.events(0).iter().any(|e| e.event == "reset")
    })
    .unwrap();
}

async fn switchover_ends_every_session(settings: VipSettings, sessions: usize) {
    if !vip_tests::privileged() || !mariadb::available() {
        return;
    }
    raise_nofile(8192);
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let vip = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();
    assert_reset_path(&c, 0);
    // The primary's mysqld, listening on every address of h1 (3306 is the simulated
    // member's). Started on the test's thread, which it dies with.
    let max = u32::try_from(sessions).unwrap() + 20;
    let db = MariaDb::builder()
        .max_connections(max)
        .netns(c.host(0).ns())
        .start()
        .unwrap();
    let mut root = root(&db).await;
    create_schema(&mut root).await;
    let from_client = format!(
        "SELECT COUNT(*) FROM information_schema.processlist WHERE host LIKE '{}:%'",
        c.client().ipv4()
    );
    let open_trx = "SELECT COUNT(*) FROM information_schema.innodb_trx \
                    WHERE trx_mysql_thread_id <> CONNECTION_ID()";

    let client = ClientHost::new(c.client());
    let opts: Opts = OptsBuilder::default()
        .ip_or_hostname(vip.to_string())
        .tcp_port(db.port())
        .user(Some(mariadb::USER))
        .pass(Some(mariadb::PASSWORD))
        .db_name(Some(DB))
        // Else mysql_async reconnects over the unix socket it reads from @@socket,
        // which this process can reach: past the VIP.
        .prefer_socket(false)
        .into();
    let started = Instant::now();
    let conns = client
        .run(open_sessions(opts, sessions))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", db.error_log()));
    let (test_fds, test_mib) = footprint(std::process::id());
    let (db_fds, db_mib) = footprint(db.pid());
    eprintln!(
        "{sessions} sessions open in {:?}; test process {test_fds} fds {test_mib} MiB, \
         mariadbd {db_fds} fds {db_mib} MiB",
        started.elapsed()
    );
    assert_eq!(count(&mut root, &from_client).await, sessions as u64);
    assert_eq!(count(&mut root, open_trx).await, IN_TRANSACTION as u64);

    let started = Instant::now();
    switch_h1_to_h2(&c);
    // As the application sees it: the next query on every session fails, none hangs.
    let outcomes = client.run(query_each(conns)).await;
    let (mut errors, mut survived) = (Vec::new(), Vec::new());
    for outcome in &outcomes {
        match outcome {
            Outcome::Failed(e) => errors.push(e),
            Outcome::Survived(what) => survived.push(what),
        }
    }
    assert!(
        survived.is_empty(),
        "{} of {sessions} sessions were not reset: {:?}\n{}",
        survived.len(),
        &survived[..survived.len().min(5)],
        c.logs()
    );
    errors.sort();
    errors.dedup();
    eprintln!(
        "every session failed {:?} after the switchover began, with: {errors:?}",
        started.elapsed()
    );
    // As MariaDB sees it: every session from the client ended, and every open
    // transaction with it.
    let (often, innodb_cache) = (Duration::from_millis(20), Duration::from_millis(250));
    wait_zero(&mut root, &from_client, "sessions from the client", often).await;
    // InnoDB refreshes what information_schema.innodb_trx shows only when it was not
    // read for 100 ms: polled faster, it would show the first answer forever.
    wait_zero(&mut root, open_trx, "open transactions", innodb_cache).await;
    eprintln!(
        "MariaDB saw every session and transaction end {:?} after",
        started.elapsed()
    );
    // Rolled back, not committed: nothing changed. Locking reads, so they would wait
    // (up to DEADLINE) for a transaction still holding its rows.
    let changed = format!("SELECT COUNT(*) FROM {DB}.t WHERE v <> 0 LOCK IN SHARE MODE");
    assert_eq!(count(&mut root, &changed).await, 0, "updates committed");
    let inserted = format!("SELECT COUNT(*) FROM {DB}.log LOCK IN SHARE MODE");
    assert_eq!(count(&mut root, &inserted).await, 0, "inserts committed");
    assert_eq!(resets_logged(&c, 0), sessions as u64, "{}", c.logs());
    let _ = root.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_ends_500_mariadb_sessions() {
    switchover_ends_every_session(VipSettings::default(), 500).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_ends_500_mariadb_sessions_with_netlink_sock_destroy() {
    let settings = VipSettings {
        reset_path: Some("netlink".into()),
        ..VipSettings::default()
    };
    switchover_ends_every_session(settings, 500).await;
}

/// An echo server in a lab host; dropping it stops accepting (connections already
/// accepted echo until their client closes).
struct EchoServer {
    listener: TcpListener,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    fn start(host: &Host, bind: SocketAddr) -> EchoServer {
        let listener = host
            .run_in(move || TcpListener::bind(bind))
            .unwrap()
            .unwrap();
        let incoming = listener.try_clone().unwrap();
        let accepting = std::thread::spawn(move || {
            for conn in incoming.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        EchoServer {
            listener,
            accepting: Some(accepting),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes the blocked accept(2) with an error.
        // SAFETY: shutdown on a socket this struct owns.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
    }
}

/// `n` connections to `to`, made in `from`'s namespace.
fn connect(from: &Host, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    from.run_in(move || {
        (0..n)
            .map(|_| TcpStream::connect_timeout(&to, DEADLINE))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("connecting to {to}: {e}"))
}

/// Whether the connection still echoes.
fn echoes(conn: &mut TcpStream) -> Result<(), String> {
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).map_err(|e| e.to_string())?;
    if &buf != b"ping" {
        return Err(format!("echoed {buf:?}"));
    }
    Ok(())
}

/// Whether a connection that sends nothing reads a reset within `timeout`.
fn reset_within(conn: &mut TcpStream, timeout: Duration) -> Result<(), String> {
    conn.set_read_timeout(Some(timeout)).unwrap();
    match conn.read(&mut [0u8; 1024]) {
        Ok(0) => Err("closed with a FIN, not reset".into()),
        Ok(n) => Err(format!("read {n} bytes")),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn another_labs_connections_survive(settings: VipSettings) {
    if !vip_tests::privileged() {
        return;
    }
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let vip = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();
    assert_reset_path(&c, 0);

    // Another lab: a host that is no part of the group, with the same VIP bound, serving
    // on it as mysqld would (a dual-stack [::] listener on 3306: v4-mapped sockets) and
    // on 0.0.0.0 (plain IPv4 sockets); connected through it from its own client and from
    // itself (both ends on the VIP).
    let other = Lab::builder().hosts(1).clients(1).build().unwrap();
    let (server, its_client) = (other.host(0), other.client(0));
    server
        .add_addr(&format!("{vip}/{}", c.settings.prefix))
        .unwrap();
    let _servers = [
        EchoServer::start(server, "[::]:3306".parse().unwrap()),
        EchoServer::start(server, "0.0.0.0:3307".parse().unwrap()),
    ];
    let mut elsewhere = connect(its_client, SocketAddr::new(vip, MYSQL_PORT), 5);
    elsewhere.extend(connect(its_client, SocketAddr::new(vip, 3307), 5));
    elsewhere.extend(connect(server, SocketAddr::new(vip, 3307), 2));
    for (i, conn) in elsewhere.iter_mut().enumerate() {
        echoes(conn).unwrap_or_else(|e| panic!("connection #{i} in the other lab: {e}"));
    }
    // The group's own clients of the VIP, which the old primary must reset; each past
    // the simulated member's greeting, so accepted.
    let mut ours = connect(c.client(), SocketAddr::new(vip, MYSQL_PORT), 5);
    for conn in &mut ours {
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        assert!(conn.read(&mut [0u8; 1024]).unwrap() > 0, "no greeting");
    }
    // The tracker sees every namespace on the kernel, but counts only its own: the
    // group's 5, none of the other lab's 12 through the same address.
    if c.settings.reset_path.is_none() {
        let tracked = || {
            let out = c.control(0, &["status", "--json"]).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let rows = v["datapath"].as_array().cloned().unwrap_or_default();
            rows.iter()
                .find(|r| r["vip"] == vip.to_string())
                .and_then(|r| r["tracked"].as_u64())
        };
        let five = vip_tests::lab::wait_for(DEADLINE, || tracked() == Some(5));
        assert!(
            five,
            "h1 tracks {:?} connections, not the group's 5",
            tracked()
        );
    }

    switch_h1_to_h2(&c);
    for (i, conn) in ours.iter_mut().enumerate() {
        reset_within(conn, DEADLINE)
            .unwrap_or_else(|e| panic!("the group's client #{i}: {e}\n{}", c.logs()));
    }
    assert_eq!(resets_logged(&c, 0), 5, "{}", c.logs());
    for (i, conn) in elsewhere.iter_mut().enumerate() {
        echoes(conn).unwrap_or_else(|e| {
            panic!(
                "connection #{i} in the other lab was touched: {e}\n{}",
                c.logs()
            )
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_labs_connections_through_the_same_vip_survive_a_switchover() {
    another_labs_connections_survive(VipSettings::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_labs_connections_through_the_same_vip_survive_a_switchover_with_netlink() {
    let settings = VipSettings {
        reset_path: Some("netlink".into()),
        ..VipSettings::default()
    };
    another_labs_connections_survive(settings).await;
}
