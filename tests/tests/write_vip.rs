//! The write VIP end to end: a simulated group in the lab, one vip-agent per host, and a
//! client. Each test asserts what an operator or a client would see: the address on an
//! interface, the client's neighbour cache, announcements on the wire, the member a new
//! connection reaches.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use vip_tests::cluster::{Cluster, VipSettings};
use vip_tests::lab::wait_for;
use vip_tests::sim::Endpoint;

const SETTLE: Duration = Duration::from_secs(20);

fn v4() -> VipSettings {
    VipSettings {
        instance: "t4".into(),
        ..VipSettings::default()
    }
}

fn v6() -> VipSettings {
    VipSettings {
        write_vip: "2001:db8::50".parse().unwrap(),
        prefix: 64,
        instance: "t6".into(),
        ..VipSettings::default()
    }
}

fn start(settings: VipSettings) -> Cluster {
    Cluster::start(3, settings, vip_tests::agent_binary(), |g| {
        g.unreachable_after(Duration::from_millis(300))
            .expel_after(Duration::from_millis(300))
    })
    .unwrap()
}

/// The client's neighbour-cache MAC for `ip`, if it has an entry with one.
fn client_mac_for(cluster: &Cluster, ip: IpAddr) -> Option<String> {
    cluster
        .client()
        .neighbours()
        .ok()?
        .into_iter()
        .find(|n| n.ip == ip)
        .and_then(|n| n.lladdr)
        .map(|m| m.to_string())
}

/// Crash or switch over, then check the VIP moved, the client's cache follows the new
/// owner's MAC, the wire carried exactly the configured announcements from it, and a new
/// connection reaches the new primary.
async fn failover(settings: VipSettings, crash: bool) {
    if !vip_tests::privileged() {
        return;
    }
    let cluster = start(settings);
    let vip = cluster.settings.write_vip;
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    // The client talks to the primary through the VIP, so its neighbour cache has h1.
    cluster.wait_client_reaches(vip, 0, SETTLE).await.unwrap();
    assert_eq!(
        client_mac_for(&cluster, vip),
        Some(cluster.host(0).mac().to_string())
    );

    // h1's own announcements must be over before the capture starts counting.
    assert!(
        wait_for(SETTLE, || cluster
            .events(0)
            .iter()
            .any(|e| e.event == "announced")),
        "{}",
        cluster.logs()
    );
    let capture = cluster.lab.capture().unwrap();
    let new_primary = if crash {
        cluster.group.crash(0).await.unwrap();
        1
    } else {
        cluster.group.switchover(2).unwrap();
        2
    };
    cluster.wait_sole_holder(new_primary, SETTLE).unwrap();
    let new_mac = cluster.host(new_primary).mac().to_string();
    assert!(
        wait_for(SETTLE, || client_mac_for(&cluster, vip).as_deref()
            == Some(new_mac.as_str())),
        "the client's neighbour entry for {vip} still points at {:?}, not {new_mac}\n{}",
        client_mac_for(&cluster, vip),
        cluster.logs()
    );
    let count = cluster.settings.announce_count as usize;
    let ours = capture.wait_unsolicited(vip, count, SETTLE).unwrap();
    assert_eq!(ours.len(), count, "announcements: {ours:?}");
    assert!(
        ours.iter()
            .all(|a| a.src_mac.to_string() == new_mac && a.port == format!("h{}", new_primary + 1)),
        "announcements not all from the new primary: {ours:?}"
    );
    cluster
        .wait_client_reaches(vip, new_primary, SETTLE)
        .await
        .unwrap();
    // Settled: nobody else picked it up meanwhile, and no extra announcement followed.
    assert_eq!(cluster.holders(), [new_primary], "{}", cluster.logs());
    let total = capture
        .announcements()
        .into_iter()
        .filter(|a| a.ip == vip && a.is_unsolicited())
        .count();
    assert_eq!(total, count, "{:?}", capture.announcements());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_crash_moves_the_ipv4_vip() {
    failover(v4(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_crash_moves_the_ipv6_vip() {
    failover(v6(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_moves_the_ipv4_vip() {
    failover(v4(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_moves_the_ipv6_vip() {
    failover(v6(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_cut_off_into_the_minority_releases_while_the_majority_takes_over() {
    if !vip_tests::privileged() {
        return;
    }
    let cluster = start(v4());
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    let (h1, h2, h3) = (cluster.host(0), cluster.host(1), cluster.host(2));
    cluster.lab.partition(&[&[h1], &[h2, h3]]).unwrap();
    cluster.group.partition(&[&[0], &[1, 2]]).unwrap();
    // h1 still sees itself PRIMARY but without quorum: it must let go; h2 is elected.
    cluster.wait_sole_holder(1, SETTLE).unwrap();
    // Never two holders from here on, while the partition lasts.
    assert!(!wait_for(Duration::from_millis(500), || cluster
        .holders()
        .len()
        > 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_waiting_for_a_release_still_lets_go_when_cut_off() {
    if !vip_tests::privileged() {
        return;
    }
    // Found by `cargo xtask chaos` (seed 1083): h1's agent restarts while h2's is down, so
    // it waits up to switchover_timeout (3 s) for h2 to confirm it holds no write VIP.
    // h1 is cut off meanwhile. It must see its lost quorum and let go within a poll or
    // two of the group noticing, not after the wait: the majority elects a new primary
    // after the expel, and that one binds.
    let mut cluster = start(v4());
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    cluster.agents[1].take().unwrap().proc.kill().unwrap();
    cluster.agents[0].take().unwrap().proc.kill().unwrap();
    let since = std::time::SystemTime::now();
    cluster.restart_agent(0).unwrap();
    // In the wait: its first call to h2 failed (nothing listens there).
    assert!(
        wait_for(SETTLE, || cluster
            .events(0)
            .iter()
            .any(|e| e.at >= since && e.event == "peer_failed")),
        "h1's restarted agent never called h2\n{}",
        cluster.logs()
    );
    let restarted = std::time::Instant::now();
    let (h1, h2, h3) = (cluster.host(0), cluster.host(1), cluster.host(2));
    cluster.lab.partition(&[&[h1], &[h2, h3]]).unwrap();
    cluster.group.partition(&[&[0], &[1, 2]]).unwrap();
    // UNREACHABLE after 300 ms, then a 100 ms poll: well inside the 3 s wait.
    let s = &cluster.settings;
    assert!(s.switchover_timeout_ms >= 3000);
    let bound = Duration::from_millis(300 + 4 * s.poll_interval_ms + 500);
    assert!(bound < Duration::from_millis(s.switchover_timeout_ms));
    assert!(
        wait_for(bound, || !cluster.holds_vip(0)),
        "h1 still holds the write VIP {:?} after it was cut off, still waiting for h2\n{}",
        restarted.elapsed(),
        cluster.logs()
    );
    assert!(
        cluster
            .events(0)
            .iter()
            .any(|e| e.event == "write_release_aborted"),
        "h1 did not say it stopped waiting\n{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysqld_down_or_hung_releases_the_vip() {
    if !vip_tests::privileged() {
        return;
    }
    for endpoint in [Endpoint::Down, Endpoint::Hung] {
        let cluster = start(v4());
        cluster.wait_sole_holder(0, SETTLE).unwrap();
        cluster.group.set_endpoint(0, endpoint).await.unwrap();
        let s = &cluster.settings;
        // Down: within a poll plus the timeout; hung: after hung_after_polls timeouts.
        // Generous bounds: these guard against hangs, the bench measures the times.
        let bound = Duration::from_millis(
            (s.poll_interval_ms + s.timeout_ms) * (s.hung_after_polls as u64 + 1) + 3000,
        );
        assert!(
            wait_for(bound, || !cluster.holds_vip(0)),
            "{endpoint:?}: h1 kept the VIP\n{}",
            cluster.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysqld_refusing_the_agent_keeps_the_vip() {
    if !vip_tests::privileged() {
        return;
    }
    // The agent restarts while mysqld refuses it (max_connections reached, or a password
    // changed under it). The group is healthy, so the VIP must stay.
    let mut cluster = start(v4());
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    cluster.stop_agent(0).unwrap();
    cluster
        .group
        .set_endpoint(0, Endpoint::TooManyConnections)
        .await
        .unwrap();
    cluster.restart_agent(0).unwrap();
    assert!(
        wait_for(SETTLE, || cluster
            .events(0)
            .iter()
            .any(|e| e.event == "view" && e.message.contains("1040"))),
        "the agent did not report error 1040\n{}",
        cluster.logs()
    );
    assert_eq!(cluster.holders(), [0], "{}", cluster.logs());

    cluster.stop_agent(0).unwrap();
    cluster
        .group
        .set_endpoint(0, Endpoint::Serving)
        .await
        .unwrap();
    cluster.set_agent_password(0, "not-the-password").unwrap();
    cluster.restart_agent(0).unwrap();
    assert!(
        wait_for(SETTLE, || cluster
            .events(0)
            .iter()
            .filter(|e| e.event == "view")
            .any(|e| e.message.contains("1045"))),
        "the agent did not report error 1045\n{}",
        cluster.logs()
    );
    assert_eq!(cluster.holders(), [0], "{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_vip_is_announced_again_every_reannounce_interval() {
    if !vip_tests::privileged() {
        return;
    }
    let cluster = start(VipSettings {
        reannounce_interval_ms: 1000,
        ..v4()
    });
    let vip = cluster.settings.write_vip;
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    let capture = cluster.lab.capture().unwrap();
    // Two more rounds from the holder with nothing moving: what a cron job running
    // arping did.
    let count = cluster.settings.announce_count as usize;
    let seen = capture.wait_unsolicited(vip, 2 * count, SETTLE).unwrap();
    assert!(seen.iter().all(|a| a.port == "h1"), "{seen:?}");
    assert_eq!(cluster.holders(), [0]);
    let rounds = cluster
        .events(0)
        .iter()
        .filter(|e| e.event == "reannounce")
        .count();
    assert!(rounds >= 2, "{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_deleted_by_hand_is_readded_and_announced() {
    if !vip_tests::privileged() {
        return;
    }
    let cluster = start(v4());
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    let capture = cluster.lab.capture().unwrap();
    cluster.host(0).del_addr("198.51.100.50/24").unwrap();
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    let count = cluster.settings.announce_count as usize;
    capture
        .wait_until(SETTLE, |a| {
            a.iter()
                .filter(|a| a.port == "h1" && a.is_unsolicited())
                .count()
                >= count
        })
        .unwrap();
    assert!(
        cluster.events(0).iter().any(|e| e.event == "readded"),
        "{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_adopts_the_vip_without_removing_it() {
    if !vip_tests::privileged() {
        return;
    }
    let mut cluster = start(v4());
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    // Watch h1's addresses for RTM_DELADDR while the agent restarts.
    let scratch = vip_tests::scratch::TempDir::new("monitor");
    let monitor_log = scratch.join("ip-monitor.log");
    let monitor = cluster
        .host(0)
        .spawn(
            Command::new("ip")
                .args(["-o", "monitor", "address"])
                .stdout(Stdio::from(std::fs::File::create(&monitor_log).unwrap())),
        )
        .unwrap();
    cluster.stop_agent(0).unwrap();
    assert_eq!(
        cluster.holders(),
        [0],
        "SIGTERM must leave the VIP in place"
    );
    cluster.restart_agent(0).unwrap();
    assert!(
        wait_for(SETTLE, || cluster
            .events(0)
            .iter()
            .any(|e| e.event == "adopted")),
        "{}",
        cluster.logs()
    );
    // A change made now shows up in the monitor, proving it was listening all along.
    cluster.host(0).add_addr("198.51.100.77/24").unwrap();
    assert!(wait_for(SETTLE, || std::fs::read_to_string(&monitor_log)
        .unwrap_or_default()
        .contains("198.51.100.77")));
    monitor.kill().unwrap();
    let events = std::fs::read_to_string(&monitor_log).unwrap();
    assert!(
        !events
            .lines()
            .any(|l| l.starts_with("Deleted") && l.contains("198.51.100.50")),
        "the restart removed the VIP:\n{events}"
    );
    assert_eq!(cluster.holders(), [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_host_keep_to_their_own_addresses() {
    if !vip_tests::privileged() {
        return;
    }
    let cluster = start(v4());
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    // A second instance beside the same mysqld, with its own VIP and label.
    let second = VipSettings {
        write_vip: "198.51.100.60".parse().unwrap(),
        label: "eth0:1".into(),
        instance: "second".into(),
        // A second group's agents need their own peer port.
        peer_port: 33063,
        ..v4()
    };
    let agent = cluster.spawn_agent_with(0, &second, "h1-second").unwrap();
    let labels = || {
        let mut l: Vec<(String, Option<String>)> = cluster
            .host(0)
            .addrs()
            .unwrap()
            .into_iter()
            .filter(|a| a.addr.to_string().starts_with("198.51.100.") && a.label.is_some())
            .filter(|a| a.addr != IpAddr::V4(cluster.host(0).ipv4()))
            .map(|a| (a.addr.to_string(), a.label))
            .collect();
        l.sort();
        l
    };
    let both = vec![
        ("198.51.100.50".to_string(), Some("eth0:0".to_string())),
        ("198.51.100.60".to_string(), Some("eth0:1".to_string())),
    ];
    assert!(
        wait_for(SETTLE, || labels() == both),
        "{:?}\n{}",
        labels(),
        cluster.logs()
    );

    // Releasing the second instance removes only its address.
    agent.proc.stop(Duration::from_secs(5)).unwrap();
    let out = cluster
        .agent_command(
            0,
            &["release", "--config", &agent.config.display().to_string()],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(labels(), both[..1]);
    assert_eq!(cluster.holders(), [0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_members_unreadable_row_does_not_freeze_the_vips() {
    if !vip_tests::privileged() {
        return;
    }
    use vip_tests::sim::sql::{Column, Value};
    let c = start(VipSettings {
        instance: "badrow".into(),
        ..VipSettings::default()
    });
    c.wait_sole_holder(0, SETTLE).unwrap();
    // Every member shows h3's row with a port no TCP port can have.
    c.group
        .corrupt_cell(2, Column::MemberPort, Some(Value::Int(70_000)))
        .unwrap();
    let named = |c: &Cluster| {
        (0..2).all(|i| {
            c.events(i).iter().any(|e| {
                e.event == "bad_row"
                    && e.message.contains("row 3 (")
                    && e.message.contains("MEMBER_PORT is \"70000\"")
            })
        })
    };
    c.wait(SETTLE, "a warning naming h3's row and cell", named)
        .unwrap();
    // h3 counts as not reachable; h1 and h2 are a majority and go on following the group.
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    assert!(c.agent_problems().is_empty(), "{:?}", c.agent_problems());
}

/// A name server that takes every query and never answers, in the lab's client.
fn black_hole_dns(c: &Cluster) -> std::thread::JoinHandle<()> {
    let ns = c.client().ns().to_owned();
    let addr = std::net::SocketAddr::new(IpAddr::V4(c.client().ipv4()), 53);
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let socket = vip_tests::netns::run_in(&ns, move || std::net::UdpSocket::bind(addr))
            .unwrap()
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        while socket.recv_from(&mut buf).is_ok() {}
    });
    ready.recv().unwrap();
    thread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_with_a_slow_resolver_still_lets_go_when_cut_off() {
    if !vip_tests::privileged() {
        return;
    }
    // Every MEMBER_HOST is a name, and the agents' name server never answers: a lookup
    // takes the resolver's whole timeout (2 tries of 5 s).
    let dir = vip_tests::scratch::TempDir::new("resolv");
    let resolv = dir.write(
        "resolv.conf",
        "nameserver 198.51.100.101\noptions timeout:5 attempts:2\n",
    );
    let settings = VipSettings {
        instance: "slowdns".into(),
        resolv_conf: Some(resolv),
        ..v4()
    };
    let cluster = Cluster::start(3, settings, vip_tests::agent_binary(), |g| {
        g.unreachable_after(Duration::from_millis(300))
            .expel_after(Duration::from_millis(300))
            .report_host_of(0, "h1.lab.test")
            .report_host_of(1, "h2.lab.test")
            .report_host_of(2, "h3.lab.test")
    })
    .unwrap();
    let _dns = black_hole_dns(&cluster);
    cluster.wait_sole_holder(0, SETTLE).unwrap();
    let (h1, h2, h3) = (cluster.host(0), cluster.host(1), cluster.host(2));
    cluster.lab.partition(&[&[h1], &[h2, h3]]).unwrap();
    cluster.group.partition(&[&[0], &[1, 2]]).unwrap();
    // h1 loses its quorum 0.3 s after the cut; its loop never waits on the resolver for
    // longer than a peer call's timeout (1 s), so it lets go well before a lookup ends.
    let released = wait_for(Duration::from_secs(3), || !cluster.holds_vip(0));
    assert!(
        released,
        "h1 still holds the write VIP 3 s after losing its quorum\n{}",
        cluster.logs()
    );
    // The hosts that do not resolve are named in status once the lookups give up.
    let unresolved = |c: &Cluster| {
        let out = c.control(0, &["status", "--json"]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["unresolved"]["h2.lab.test"]
            .as_str()
            .is_some_and(|e| e.contains("h2.lab.test"))
    };
    cluster
        .wait(
            Duration::from_secs(40),
            "h2.lab.test named as unresolved",
            unresolved,
        )
        .unwrap();
}
