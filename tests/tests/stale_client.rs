//! A client that missed the announcements: its neighbour entry for the VIP still points
//! at the node that let the VIP go. That node's guard answers it with a RST, so its
//! connect fails at once instead of retransmitting SYNs for minutes, and the agent's
//! status counts it. IPv4 and IPv6.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

mod common;

use common::clients::{stale_neighbour, try_connect};
use vip_tests::cluster::{Cluster, MYSQL_PORT, VipSettings};
use vip_tests::lab::NIC;

const SETTLE: Duration = Duration::from_secs(20);

/// The guard's row for `vip` in `vip-agent status --json` on host `i`.
fn guard_row(c: &Cluster, i: usize, vip: IpAddr) -> serde_json::Value {
    let out = c.control(i, &["status", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["datapath"].as_array().cloned().unwrap_or_default();
    rows.into_iter()
        .find(|r| r["vip"] == vip.to_string())
        .unwrap_or_else(|| panic!("no datapath row for {vip}: {v}"))
}

async fn stale_client_gets_a_rst_from_the_old_node(settings: VipSettings) {
    if !vip_tests::privileged() {
        return;
    }
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let write = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();
    let old = c.host(0).mac().to_string();

    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    // The client missed every announcement: its entry still names the old primary.
    let vip = write.to_string();
    stale_neighbour(&c, write, &old);
    let (result, took) = try_connect(&c, write);
    assert_eq!(
        result,
        Err(ErrorKind::ConnectionRefused),
        "after {took:?}; a stale client should get a RST from the old node\n{}",
        c.logs()
    );
    let row = guard_row(&c, 0, write);
    assert_eq!(row["state"], "released", "{row}");
    assert!(row["rst_sent"].as_u64() >= Some(1), "{row}");
    // The agent's once-a-second summary names the VIP and the client.
    let client = c.client();
    let client_ip = if write.is_ipv4() {
        client.ipv4().to_string()
    } else {
        format!("[{}]", client.ipv6())
    };
    let logged = vip_tests::lab::wait_for(Duration::from_secs(5), || {
        c.events(0).iter().any(|e| {
            e.event == "guard_rst"
                && e.message
                    .contains(&format!("stale clients of released VIP {write}"))
                && e.message.contains(&format!("(last: {client_ip}:"))
        })
    });
    assert!(
        logged,
        "no guard summary naming {client_ip} in the agent's log\n{}",
        c.logs()
    );

    // Once its entry is right again, it reaches the new primary.
    c.client().ip(&["neigh", "del", &vip, "dev", NIC]).unwrap();
    c.wait_client_reaches(write, 1, SETTLE).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_client_gets_a_rst_ipv4() {
    stale_client_gets_a_rst_from_the_old_node(VipSettings {
        instance: "st4".into(),
        ..VipSettings::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_client_gets_a_rst_ipv6() {
    stale_client_gets_a_rst_from_the_old_node(VipSettings {
        write_vip: "2001:db8::50".parse().unwrap(),
        prefix: 64,
        instance: "st6".into(),
        ..VipSettings::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_stale_segments_is_counted_exactly_and_summed_up_in_the_log() {
    if !vip_tests::privileged() {
        return;
    }
    let c = Cluster::start(
        3,
        VipSettings {
            instance: "stflood".into(),
            ..VipSettings::default()
        },
        vip_tests::agent_binary(),
        |g| g,
    )
    .unwrap();
    let write = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();
    let old = c.host(0).mac().to_string();
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    stale_neighbour(&c, write, &old);
    // Thousands of connection attempts, each one SYN answered with one RST.
    const SYNS: u64 = 3000;
    let to = SocketAddr::new(write, MYSQL_PORT);
    let (refused, took) = vip_tests::netns::run_in(c.client().ns(), move || {
        let t0 = Instant::now();
        let refused = (0..SYNS)
            .filter(|_| {
                TcpStream::connect_timeout(&to, Duration::from_secs(5))
                    .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
            })
            .count() as u64;
        (refused, t0.elapsed())
    })
    .unwrap();
    assert_eq!(refused, SYNS, "every attempt should be refused at once");
    // The counters are exact ...
    let counted = vip_tests::lab::wait_for(Duration::from_secs(5), || {
        guard_row(&c, 0, write)["rst_sent"].as_u64() == Some(SYNS)
    });
    assert!(counted, "{}", guard_row(&c, 0, write));
    // ... and the log sums them up: at most one line per second (and one to flush),
    // whose counts add up to every RST.
    let summed = |c: &Cluster| {
        let lines: Vec<u64> = c
            .events(0)
            .iter()
            .filter(|e| e.event == "guard_rst")
            .filter_map(|e| e.fields["rsts"].as_u64())
            .collect();
        (lines.iter().sum::<u64>() == SYNS).then_some(lines.len())
    };
    assert!(
        vip_tests::lab::wait_for(Duration::from_secs(5), || summed(&c).is_some()),
        "the guard lines do not add up to {SYNS}\n{}",
        c.logs()
    );
    let lines = summed(&c).unwrap() as u64;
    assert!(
        lines <= took.as_secs() + 2,
        "{lines} guard lines for a flood of {took:?}"
    );
}
