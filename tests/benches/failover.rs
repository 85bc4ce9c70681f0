//! How fast the write VIP follows a planned switchover (group_replication_set_as_primary),
//! and how fast clients notice, with vip-agent against what MGR users run today, all
//! measured in the same run and the same lab: three hosts h1-h3 with a simulated group
//! member each, the client c1, write VIP 198.51.100.50/24.
//!
//! - **vip-agent**: the end-to-end tests' `Cluster`, an agent per host, 100 ms poll.
//! - **keepalived** (the Debian package): one per host in its namespace, VRRP on eth0 with
//!   the default timings, a `vrrp_script` asking mysqld whether it is the PRIMARY.
//! - **hook script**: a shell loop asking the same every 100 ms, `ip addr add` + `arping -U`
//!   on promotion, `ip addr del` on demotion.
//!
//! Each run switches the primary over to the next host and times, from the switchover
//! call: the first new client connection through the VIP that reaches the new primary
//! (its server_uuid), the kernel's address events on every host (to see two holders, or
//! none), and the gratuitous ARPs the bridge carried. Some runs also keep a client
//! connection through the VIP idle in a read on the old primary, and time until it gets
//! an error; and send on a second one once the new primary answers.
//!
//! Needs root and the Debian packages keepalived, iputils-arping and mariadb-client-core
//! (`cargo xtask bench` installs them). With `--bench` (`cargo xtask bench`, or
//! `cargo bench -p vip-tests --bench failover`) it runs in full and writes
//! `target/bench/failover.json` and `.md`; without (`cargo test --benches`) a short smoke.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use vip_tests::cluster::{Cluster, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, VipSettings};
use vip_tests::lab::{Host, NIC, Proc, wait_for};
use vip_tests::scratch::TempDir;

const HOSTS: usize = 3;
/// Switchovers per method in a full run.
const RUNS: usize = 20;
/// How long an idle client without a reset is watched before it counts as "> bound".
const NOTICE_BOUND: Duration = Duration::from_secs(30);
/// Runs with an idle client, where nothing resets it (each lasts NOTICE_BOUND).
const NOTICE_RUNS_BOUNDED: usize = 3;
/// The probe opens a new connection this often ...
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// ... and gives each this long (a SYN to a host that no longer has the VIP goes
/// unanswered, and the kernel would retry it only after a second).
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a move, or the state before one, may take to come about.
const SETTLE: Duration = Duration::from_secs(20);
/// How long no announcement for the VIP may be seen before the next switchover.
const QUIET: Duration = Duration::from_millis(1500);
/// The switchover waits a random time below this after the conditions above.
const PHASE_SPREAD: Duration = Duration::from_secs(KEEPALIVED_SCRIPT_INTERVAL as u64);
/// How long the client that sends after the move waits for its error.
const QUERY_BOUND: Duration = Duration::from_secs(5);
/// keepalived's check script interval (see the README: the usual value in MGR guides
/// and keepalived's own samples).
const KEEPALIVED_SCRIPT_INTERVAL: u32 = 2;
/// How far apart the keepalived are started: spreads their checks over the interval.
const KEEPALIVED_SCRIPT_PHASE: Duration =
    Duration::from_millis(KEEPALIVED_SCRIPT_INTERVAL as u64 * 1000 / HOSTS as u64);
/// The hook's poll, the same as the agent's default.
const HOOK_POLL: &str = "0.1";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    VipAgent,
    Keepalived,
    Hook,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::VipAgent => "vip-agent (100 ms poll)",
            Method::Keepalived => "keepalived (advert 1 s, check every 2 s)",
            Method::Hook => "hook script (100 ms poll)",
        }
    }

    /// Whether the old holder resets the connections of the VIP it lets go.
    fn resets(self) -> bool {
        self == Method::VipAgent
    }
}

/// The SQL every check runs: the question vip-agent's poller asks, reduced to "am I it".
const IS_PRIMARY_SQL: &str = "SELECT MEMBER_ROLE FROM performance_schema.replication_group_members \
                              WHERE MEMBER_ID = @@server_uuid";

/// One deployment: the lab, the group and whatever manages the VIP.
struct Deployment {
    method: Method,
    /// keepalived or the hook, one per host, stopped (SIGTERM) before the lab goes.
    managers: Vec<Proc>,
    watch: AddrWatch,
    dir: TempDir,
    cluster: Cluster,
}

impl Deployment {
    fn start(method: Method) -> Deployment {
        let settings = VipSettings {
            instance: "fo".into(),
            ..VipSettings::default()
        };
        let cluster = match method {
            Method::VipAgent => {
                Cluster::start(HOSTS, settings, vip_tests::agent_binary(), |g| g).unwrap()
            }
            _ => Cluster::start_without_agents(HOSTS, settings, |g| g).unwrap(),
        };
        let dir = TempDir::new("failover");
        let watch = AddrWatch::start(&cluster);
        let mut d = Deployment {
            method,
            managers: Vec::new(),
            watch,
            dir,
            cluster,
        };
        if method != Method::VipAgent {
            d.start_managers();
        }
        d
    }

    fn vip(&self) -> IpAddr {
        self.cluster.settings.write_vip
    }

    fn start_managers(&mut self) {
        let dir = self.dir.path().to_owned();
        let cnf = self.dir.write(
            "client.cnf",
            &format!(
                "[client]\nhost=127.0.0.1\nport={MYSQL_PORT}\nuser={MYSQL_USER}\n\
                 password={MYSQL_PASSWORD}\nconnect-timeout=1\n"
            ),
        );
        let check = self.dir.write("is-primary.sh", &is_primary_script(&cnf));
        make_executable(&check);
        let hook = self.dir.write("hook.sh", &hook_script(self.vip(), &check));
        make_executable(&hook);
        for i in 0..HOSTS {
            let name = format!("h{}", i + 1);
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
            let mut cmd = match self.method {
                Method::Keepalived => {
                    let conf = self.dir.write(
                        &format!("{name}-keepalived.conf"),
                        &keepalived_conf(&name, self.vip(), &check),
                    );
                    let mut cmd = Command::new("keepalived");
                    cmd.args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
                        .args(["--no-syslog", "--use-file"])
                        .arg(&conf)
                        .arg("--pid")
                        .arg(dir.join(format!("{name}.pid")))
                        .arg("--vrrp_pid")
                        .arg(dir.join(format!("{name}-vrrp.pid")));
                    cmd
                }
                _ => Command::new(&hook),
            };
            cmd.stdout(log.try_clone().unwrap()).stderr(log);
            if self.method == Method::Keepalived && i > 0 {
                // A phase, not a wait: each host's keepalived started at its own time, as
                // in a real deployment, so the checks of old and new primary do not tick
                // together (which one sees the switchover first decides keepalived's path).
                std::thread::sleep(KEEPALIVED_SCRIPT_PHASE);
            }
            let proc = self.cluster.host(i).spawn(&mut cmd).unwrap();
            self.managers.push(proc);
        }
    }

    /// The managers' logs, for failure messages.
    fn logs(&self) -> String {
        let mut out = self.cluster.logs();
        for i in 0..HOSTS {
            let path = self.dir.join(&format!("h{}.log", i + 1));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            out.push_str(&format!("--- manager h{} ---\n{text}", i + 1));
        }
        out
    }

    /// Waits until exactly `primary` holds the VIP and the client reaches it through it.
    fn wait_steady(&self, primary: usize) {
        let ok = wait_for(SETTLE, || self.cluster.holders() == [primary]);
        assert!(
            ok,
            "{}: expected only h{} to hold the VIP, holders {:?}\n{}",
            self.method.name(),
            primary + 1,
            self.cluster.holders(),
            self.logs()
        );
        let want = self.cluster.group.uuid(primary);
        let reached = probe(self.cluster.client(), self.vip(), want, SETTLE);
        assert!(
            reached.is_some(),
            "{}: the client never reached h{} through the VIP\n{}",
            self.method.name(),
            primary + 1,
            self.logs()
        );
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // keepalived's parent takes its VRRP child with it on SIGTERM; the hook kills its
        // arping. Only then may the lab SIGKILL what is left.
        for proc in &self.managers {
            let _ = proc.stop(Duration::from_secs(5));
        }
    }
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// keepalived's check and the hook's: exit 0 only if this host's mysqld is the PRIMARY.
fn is_primary_script(cnf: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # Exit 0 only if the local mysqld is the group's PRIMARY.\n\
         role=$(mariadb --defaults-extra-file={cnf} -N -B -e \"{IS_PRIMARY_SQL}\") || exit 1\n\
         [ \"$role\" = PRIMARY ]\n",
        cnf = cnf.display()
    )
}

/// A hook as an operator writes one: poll the role, bind and announce on promotion,
/// drop on demotion.
fn hook_script(vip: IpAddr, check: &Path) -> String {
    format!(
        r#"#!/bin/bash
# Follows the local member's role: binds the write VIP and announces it when it becomes
# PRIMARY, drops it when it stops being PRIMARY.
VIP={vip}
trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM
held=0
ip -o addr show dev {NIC} | grep -q " $VIP/" && held=1
while :; do
    if {check}; then
        if [ $held = 0 ]; then
            ip addr add $VIP/24 dev {NIC} && held=1 && {{ arping -q -U -c 3 -I {NIC} $VIP & }}
        fi
    elif [ $held = 1 ]; then
        ip addr del $VIP/24 dev {NIC} && held=0
    fi
    sleep {HOOK_POLL} & wait $!
done
"#,
        check = check.display()
    )
}

/// The keepalived.conf of host `name`: only the member that passes the check may be
/// MASTER (no weight: a failing check puts the instance in FAULT).
fn keepalived_conf(name: &str, vip: IpAddr, check: &Path) -> String {
    format!(
        r#"global_defs {{
    router_id {name}
    script_user root
    enable_script_security
}}

vrrp_script chk_mgr_primary {{
    script "{check}"
    interval {KEEPALIVED_SCRIPT_INTERVAL}
}}

vrrp_instance mgr_write_vip {{
    state BACKUP
    interface {NIC}
    virtual_router_id 50
    priority 100
    advert_int 1
    virtual_ipaddress {{
        {vip}/24 dev {NIC}
    }}
    track_script {{
        chk_mgr_primary
    }}
}}
"#,
        check = check.display()
    )
}

/// The write VIP's address events in every host, as `ip monitor` reports them.
struct AddrWatch {
    /// (when read, host, added or deleted)
    events: Arc<Mutex<Vec<(Instant, usize, bool)>>>,
}

impl AddrWatch {
    fn start(cluster: &Cluster) -> AddrWatch {
        let events = Arc::new(Mutex::new(Vec::new()));
        let needle = format!(" {}/", cluster.settings.write_vip);
        for i in 0..HOSTS {
            let proc = cluster
                .host(i)
                .spawn(
                    Command::new("ip")
                        .args(["monitor", "address", "dev", NIC])
                        .stdout(Stdio::piped()),
                )
                .unwrap();
            let out = proc.take_stdout().unwrap();
            let (events, needle) = (Arc::clone(&events), needle.clone());
            // Ends at EOF, when the lab kills `ip monitor`.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.contains(&needle) {
                        let added = !line.starts_with("Deleted");
                        events.lock().unwrap().push((Instant::now(), i, added));
                    }
                }
            });
        }
        AddrWatch { events }
    }

    /// From `t0` (when `before` held the VIP) to `end`: how long two or more hosts held
    /// it, and how long none did.
    fn overlap_and_gap(&self, before: &[usize], t0: Instant, end: Instant) -> (Duration, Duration) {
        let events = self.events.lock().unwrap().clone();
        let mut holders: BTreeSet<usize> = before.iter().copied().collect();
        let (mut two, mut none) = (Duration::ZERO, Duration::ZERO);
        let mut at = t0;
        let mut tally = |holders: &BTreeSet<usize>, from: Instant, to: Instant| {
            let d = to.saturating_duration_since(from);
            match holders.len() {
                0 => none += d,
                1 => {}
                _ => two += d,
            }
        };
        for (when, host, added) in events.into_iter().filter(|e| e.0 >= t0 && e.0 <= end) {
            tally(&holders, at, when);
            at = when;
            if added {
                holders.insert(host);
            } else {
                holders.remove(&host);
            }
        }
        tally(&holders, at, end);
        (two, none)
    }
}

/// Opens a new connection through `vip` from the client every PROBE_EVERY (each given
/// PROBE_TIMEOUT) until one reaches the member `want`, as an application reconnecting
/// does; returns when that answer came, and how long that one attempt took.
fn probe(client: &Host, vip: IpAddr, want: String, limit: Duration) -> Option<(Instant, Duration)> {
    let ns = client.ns().to_owned();
    vip_tests::netns::run_in(&ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(probe_loop(vip, want, limit))
    })
    .unwrap()
}

async fn probe_loop(vip: IpAddr, want: String, limit: Duration) -> Option<(Instant, Duration)> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(vip.to_string())
        .tcp_port(MYSQL_PORT)
        .user(Some(MYSQL_USER))
        .pass(Some(MYSQL_PASSWORD))
        .prefer_socket(false);
    let deadline = Instant::now() + limit;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut attempts = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= deadline {
                    return None;
                }
                let opts = opts.clone();
                attempts.spawn(async move {
                    let start = Instant::now();
                    let query = async {
                        let mut conn = mysql_async::Conn::new(opts).await?;
                        let uuid: Option<String> = conn.query_first("SELECT @@server_uuid").await?;
                        let answered = Instant::now();
                        let _ = conn.disconnect().await;
                        anyhow::Ok((uuid.unwrap_or_default(), answered))
                    };
                    match tokio::time::timeout(PROBE_TIMEOUT, query).await {
                        Ok(Ok((uuid, at))) => Some((uuid, at, at - start)),
                        _ => None,
                    }
                });
            }
            Some(Ok(Some((uuid, at, took)))) = attempts.join_next() => {
                if uuid == want {
                    return Some((at, took));
                }
            }
        }
    }
}

/// A client connection through the VIP, greeted by the member that holds it, and then
/// left idle (the server says nothing more until the client speaks).
fn open_idle(client: &Host, vip: IpAddr) -> TcpStream {
    let to = SocketAddr::new(vip, MYSQL_PORT);
    vip_tests::netns::run_in(client.ns(), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut greeting = [0u8; 1024];
        assert!(
            s.read(&mut greeting).unwrap() > 0,
            "no greeting from mysqld"
        );
        s
    })
    .unwrap()
}

/// How a blocked read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadEnd {
    Reset,
    Eof,
    Bound,
}

/// Blocks in a read on `s` until it fails or `until` passes; when, and how.
fn wait_read_end(mut s: TcpStream, until: Instant) -> (Instant, ReadEnd) {
    let mut buf = [0u8; 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (Instant::now(), ReadEnd::Bound);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (Instant::now(), ReadEnd::Eof),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (Instant::now(), ReadEnd::Bound);
            }
            Err(_) => return (Instant::now(), ReadEnd::Reset),
        }
    }
}

/// Sends a COM_QUERY on `s` and times until the connection fails.
fn query_after_move(mut s: TcpStream) -> (Duration, ReadEnd) {
    let sql = b"SELECT @@server_uuid";
    let mut packet = vec![(sql.len() + 1) as u8, 0, 0, 0, 0x03];
    packet.extend_from_slice(sql);
    let t = Instant::now();
    if s.write_all(&packet).is_err() {
        // Reset before: the error comes at once.
        return (t.elapsed(), ReadEnd::Reset);
    }
    let (at, end) = wait_read_end(s, t + QUERY_BOUND);
    (at - t, end)
}

/// What one switchover showed.
#[derive(Debug)]
struct Run {
    move_ms: f64,
    /// The successful probe attempt's own duration (the probe's resolution).
    attempt_ms: f64,
    two_holders_ms: f64,
    no_holder_ms: f64,
    ended_with: Vec<usize>,
    /// The new holder's first gratuitous ARP for the VIP, after the switchover.
    first_garp_ms: Option<f64>,
    /// Gratuitous ARPs for the VIP after the switchover by any other host: announcing an
    /// address it no longer has (or never got).
    stale_garps: usize,
    /// From the switchover until the idle client's read failed (None: the bound passed).
    idle_notice_ms: Option<Option<f64>>,
    /// From sending on the second idle client after the move until it failed.
    query_error_ms: Option<Option<f64>>,
}

fn switchover(
    d: &Deployment,
    capture: &vip_tests::lab::Capture,
    from: usize,
    to: usize,
    notice_bound: Option<Duration>,
) -> Run {
    let c = &d.cluster;
    let vip = d.vip();
    let idle = notice_bound.map(|_| (open_idle(c.client(), vip), open_idle(c.client(), vip)));
    capture.clear();
    let t0 = Instant::now();
    c.group.switchover(to).unwrap();
    let watcher = match (&idle, notice_bound) {
        (Some((s, _)), Some(bound)) => {
            let s = s.try_clone().unwrap();
            Some(std::thread::spawn(move || wait_read_end(s, t0 + bound)))
        }
        _ => None,
    };
    let (reached, attempt) =
        probe(c.client(), vip, c.group.uuid(to), SETTLE).unwrap_or_else(|| {
            panic!(
                "{}: the client never reached h{} through the VIP\n{}",
                d.method.name(),
                to + 1,
                d.logs()
            )
        });
    let query_error_ms = idle.map(|(_, s)| match query_after_move(s) {
        (_, ReadEnd::Bound) => None,
        (took, _) => Some(ms(took)),
    });
    let settled = wait_for(SETTLE, || c.holders() == [to]);
    let end = Instant::now();
    let ended_with = if settled { vec![to] } else { c.holders() };
    let (two, none) = d.watch.overlap_and_gap(&[from], t0, end);
    let new_mac = c.host(to).mac();
    let garps: Vec<_> = capture
        .announcements()
        .into_iter()
        .filter(|a| a.ip == vip && a.is_unsolicited() && a.at >= t0)
        .collect();
    let first_garp_ms = garps
        .iter()
        .find(|a| a.src_mac == new_mac)
        .map(|a| ms(a.at - t0));
    let stale_garps = garps.iter().filter(|a| a.src_mac != new_mac).count();
    let idle_notice_ms = watcher.map(|w| match w.join().unwrap() {
        (_, ReadEnd::Bound) => None,
        (at, _) => Some(ms(at - t0)),
    });
    Run {
        move_ms: ms(reached - t0),
        attempt_ms: ms(attempt),
        two_holders_ms: ms(two),
        no_holder_ms: ms(none),
        ended_with,
        first_garp_ms,
        stale_garps,
        idle_notice_ms,
        query_error_ms,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (
        vip_tests::bench::percentile(&v, 0.5),
        vip_tests::bench::percentile(&v, 0.99),
    )
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// All the runs of one method.
fn bench(
    method: Method,
    rt: &tokio::runtime::Runtime,
    runs: usize,
    notice: (usize, Duration),
) -> Vec<Run> {
    let _enter = rt.enter();
    let d = Deployment::start(method);
    let capture = d.cluster.lab.capture().unwrap();
    let mut primary = 0;
    let mut out = Vec::new();
    for run in 0..runs {
        d.wait_steady(primary);
        // Switchovers are minutes apart in production: let the last move's announcements
        // end first (the hook's arping sends for 2 s, and is not stopped on demotion).
        let quiet = wait_for(SETTLE, || {
            let last = capture
                .announcements()
                .iter()
                .filter(|a| a.ip == d.vip())
                .map(|a| a.at)
                .max();
            last.is_none_or(|at| at.elapsed() >= QUIET)
        });
        assert!(quiet, "{}: announcements never stopped", method.name());
        // A switchover comes at any moment of the managers' cycles: a fixed rhythm here
        // would lock onto keepalived's (its checks every 2 s, GARPs again 5 s after
        // MASTER) and time one phase only.
        std::thread::sleep(rand::random_range(Duration::ZERO..PHASE_SPREAD));
        let next = (primary + 1) % HOSTS;
        let bound = (run < notice.0).then_some(notice.1);
        let r = switchover(&d, &capture, primary, next, bound);
        eprintln!(
            "{}: run {run}: h{} -> h{}: {r:?}",
            method.name(),
            primary + 1,
            next + 1
        );
        // A run that ends with two holders is counted; the next waits for one again.
        primary = next;
        out.push(r);
    }
    out
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("failover bench: needs root (network namespaces, eBPF); skipped");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bound = if full {
        NOTICE_BOUND
    } else {
        Duration::from_secs(2)
    };
    let (runs, bounded_runs) = if full {
        (RUNS, NOTICE_RUNS_BOUNDED)
    } else {
        (2, 1)
    };
    let methods = [Method::VipAgent, Method::Keepalived, Method::Hook];
    let mut results = Vec::new();
    for method in methods {
        let notice_runs = if method.resets() { runs } else { bounded_runs };
        results.push((method, bench(method, &rt, runs, (notice_runs, bound))));
    }
    let (md, json) = report(&results, bound);
    println!("{md}");
    if full {
        vip_tests::bench::write("failover", &serde_json::json!(json), &md)
            .expect("writing the results");
    }
    rt.shutdown_background();
}

fn report(results: &[(Method, Vec<Run>)], bound: Duration) -> (String, serde_json::Value) {
    let agent_median = median_p99(results[0].1.iter().map(|r| r.move_ms).collect()).0;
    let mut md = String::from(
        "| method | runs | move median ms | p99 ms | x vip-agent | new holder's first GARP, median ms \
         | no holder, median ms | runs with two holders (longest ms) | runs not ending with one holder \
         | runs with GARPs by another host |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut json_moves = Vec::new();
    for (method, runs) in results {
        let (median, p99) = median_p99(runs.iter().map(|r| r.move_ms).collect());
        let two: Vec<f64> = runs
            .iter()
            .map(|r| r.two_holders_ms)
            .filter(|&t| t > 0.0)
            .collect();
        let two_max = two.iter().copied().fold(0.0, f64::max);
        let (gap, _) = median_p99(runs.iter().map(|r| r.no_holder_ms).collect());
        let bad: Vec<&Vec<usize>> = runs
            .iter()
            .map(|r| &r.ended_with)
            .filter(|h| h.len() != 1)
            .collect();
        // A run without a GARP by the new holder sorts last.
        let (garp, _) = median_p99(
            runs.iter()
                .map(|r| r.first_garp_ms.unwrap_or(f64::INFINITY))
                .collect(),
        );
        let no_garp = runs.iter().filter(|r| r.first_garp_ms.is_none()).count();
        let stale = runs.iter().filter(|r| r.stale_garps > 0).count();
        let (attempt, _) = median_p99(runs.iter().map(|r| r.attempt_ms).collect());
        md.push_str(&format!(
            "| {} | {} | {} | {} | {}x | {}{} | {} | {} ({}) | {} | {} |\n",
            method.name(),
            runs.len(),
            round1(median),
            round1(p99),
            round1(median / agent_median),
            if garp.is_finite() {
                round1(garp).to_string()
            } else {
                "none".into()
            },
            if no_garp > 0 && garp.is_finite() {
                format!(" ({no_garp} runs none)")
            } else {
                String::new()
            },
            round1(gap),
            two.len(),
            round1(two_max),
            bad.len(),
            stale,
        ));
        json_moves.push(serde_json::json!({
            "method": method.name(),
            "runs": runs.len(),
            "move_median_ms": round1(median),
            "move_p99_ms": round1(p99),
            "vs_vip_agent": round1(median / agent_median),
            "probe_attempt_median_ms": round1(attempt),
            "runs_with_two_holders": two.len(),
            "two_holders_max_ms": round1(two_max),
            "no_holder_median_ms": round1(gap),
            "runs_not_ending_with_one_holder": bad.len(),
            "first_garp_by_new_holder_median_ms": garp.is_finite().then(|| round1(garp)),
            "runs_without_garp_by_new_holder": no_garp,
            "runs_with_garps_by_another_host": stale,
            "move_ms": runs.iter().map(|r| round1(r.move_ms)).collect::<Vec<_>>(),
        }));
    }
    let attempts: Vec<f64> = results
        .iter()
        .flat_map(|(_, r)| r.iter().map(|r| r.attempt_ms))
        .collect();
    let (attempt, _) = median_p99(attempts);
    md.push_str(&format!(
        "\nProbe: a new connection from c1 every {} ms, each given {} ms; the answer that \
         reached the new primary took {} ms (median), so a move is timed to within about {} ms.\n\n",
        PROBE_EVERY.as_millis(),
        PROBE_TIMEOUT.as_millis(),
        round1(attempt),
        round1(PROBE_EVERY.as_secs_f64() * 1000.0 + attempt)
    ));
    md.push_str(
        "| method | idle client: runs | its error after the switchover, median | p99 \
         | sending after the move: error after, median |\n|---|---:|---:|---:|---:|\n",
    );
    let mut json_notice = Vec::new();
    let fmt = |v: Option<f64>| match v {
        Some(ms) => format!("{} ms", round1(ms)),
        None => format!("> {} s", bound.as_secs()),
    };
    for (method, runs) in results {
        let idle: Vec<Option<f64>> = runs.iter().filter_map(|r| r.idle_notice_ms).collect();
        let query: Vec<Option<f64>> = runs.iter().filter_map(|r| r.query_error_ms).collect();
        // A bound reached counts as infinitely late: it sorts last.
        let sorted =
            |v: &[Option<f64>]| median_p99(v.iter().map(|x| x.unwrap_or(f64::INFINITY)).collect());
        let (im, ip) = sorted(&idle);
        let (qm, _) = sorted(&query);
        let opt = |x: f64| x.is_finite().then_some(x);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            method.name(),
            idle.len(),
            fmt(opt(im)),
            fmt(opt(ip)),
            fmt(opt(qm))
        ));
        json_notice.push(serde_json::json!({
            "method": method.name(),
            "resets": method.resets(),
            "idle_runs": idle.len(),
            "bound_s": bound.as_secs(),
            "idle_notice_ms": idle,
            "idle_notice_median_ms": opt(im).map(round1),
            "idle_notice_p99_ms": opt(ip).map(round1),
            "query_after_move_error_ms": query,
            "query_after_move_median_ms": opt(qm).map(round1),
        }));
    }
    let json = serde_json::json!({
        "vip": "198.51.100.50/24",
        "probe_every_ms": PROBE_EVERY.as_millis() as u64,
        "probe_timeout_ms": PROBE_TIMEOUT.as_millis() as u64,
        "probe_attempt_median_ms": round1(attempt),
        "keepalived_script_interval_s": KEEPALIVED_SCRIPT_INTERVAL,
        "moves": json_moves,
        "notice": json_notice,
    });
    (md, json)
}
