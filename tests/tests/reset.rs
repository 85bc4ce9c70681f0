//! Clients fail fast: when a node loses a VIP, every connection that came in through it
//! is reset at once, even an idle one that sends nothing, while connections through the
//! VIPs the node keeps are untouched. Both reset paths: the iter/tcp program with
//! bpf_sock_destroy (the default), and netlink SOCK_DESTROY (the fallback).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::clients::{all_reset, connect, reset_within};
use common::status::{assert_reset_path, resets_logged};
use vip_tests::cluster::{Cluster, VipSettings};

const SETTLE: Duration = Duration::from_secs(20);

fn vip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn switchover_resets_the_write_vips_clients(settings: VipSettings) {
    if !vip_tests::privileged() {
        return;
    }
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let write = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();
    // The path the old primary's agent will use.
    assert_reset_path(&c, 0);
    let mut clients = connect(&c, write, 20);
    // Clients of the same mysqld that did not come through the VIP.
    let mut direct = connect(&c, c.host(0).ipv4().into(), 3);

    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    let failed = all_reset(&mut clients, Duration::from_secs(5));
    assert!(failed.is_empty(), "not reset: {failed:?}\n{}", c.logs());
    // Without vip.kill_connections_on_demotion they are left alone.
    for s in &mut direct {
        assert!(
            reset_within(s, Duration::from_millis(300)).is_err(),
            "{}",
            c.logs()
        );
    }
    assert_eq!(resets_logged(&c, 0), 20, "{}", c.logs());
    // New connections reach the new primary.
    c.wait_client_reaches(write, 1, SETTLE).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_resets_the_write_vips_clients_ipv4() {
    switchover_resets_the_write_vips_clients(VipSettings {
        instance: "rs4".into(),
        ..VipSettings::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_resets_the_write_vips_clients_with_netlink_sock_destroy() {
    switchover_resets_the_write_vips_clients(VipSettings {
        instance: "rsn".into(),
        reset_path: Some("netlink".into()),
        ..VipSettings::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_resets_the_write_vips_clients_ipv6() {
    switchover_resets_the_write_vips_clients(VipSettings {
        write_vip: vip("2001:db8::50"),
        prefix: 64,
        instance: "rs6".into(),
        ..VipSettings::default()
    })
    .await;
}

/// Moving one read VIP off a node resets that VIP's connections only.
#[tokio::test(flavor = "multi_thread")]
async fn moving_a_read_vip_resets_only_its_connections() {
    if !vip_tests::privileged() {
        return;
    }
    let reads = ["198.51.100.61", "198.51.100.62", "198.51.100.63"];
    let settings = VipSettings {
        read_vips: reads.iter().map(|s| vip(s)).collect(),
        instance: "rsr".into(),
        ..VipSettings::default()
    };
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    c.wait_sole_holder(0, SETTLE).unwrap();
    // First placement: h2 holds .61 and .63, h3 holds .62.
    c.wait(SETTLE, "first placement", |c| {
        c.holders_of(vip(reads[0])) == [1] && c.holders_of(vip(reads[2])) == [1]
    })
    .unwrap();
    let mut moved = connect(&c, vip(reads[0]), 10);
    let mut kept = connect(&c, vip(reads[2]), 10);

    let (u1, u2, u3) = (c.group.uuid(0), c.group.uuid(1), c.group.uuid(2));
    let text = format!(
        "{u1}::; {u2}::{}; {u3}::{},{}",
        reads[2], reads[0], reads[1]
    );
    let out = c.control(0, &["set-topology", &text]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait(SETTLE, ".61 on h3", |c| c.holders_of(vip(reads[0])) == [2])
        .unwrap();

    let failed = all_reset(&mut moved, Duration::from_secs(5));
    assert!(failed.is_empty(), "not reset: {failed:?}\n{}", c.logs());
    // The kept VIP's clients are still connected: nothing arrives, and no reset.
    for (i, s) in kept.iter_mut().enumerate() {
        match reset_within(s, Duration::from_millis(200)) {
            Err(e) if e.starts_with("still open") => {}
            other => panic!(
                "connection #{i} through {} was touched: {other:?}",
                reads[2]
            ),
        }
    }
}

/// vip.kill_connections_on_demotion (greatdb_ha_mgr_exit_primary_kill_connection_mode):
/// on demotion every client of mysqld is reset, also those that did not come in
/// through the VIP.
#[tokio::test(flavor = "multi_thread")]
async fn kill_all_on_demotion_resets_every_client_of_mysqld() {
    if !vip_tests::privileged() {
        return;
    }
    let settings = VipSettings {
        instance: "rsk".into(),
        kill_on_demotion: true,
        ..VipSettings::default()
    };
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let write = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();
    let mut through_vip = connect(&c, write, 5);
    let mut direct = connect(&c, c.host(0).ipv4().into(), 5);
    // A client of another member is not this node's to reset.
    let mut elsewhere = connect(&c, c.host(2).ipv4().into(), 2);

    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    let failed = all_reset(&mut through_vip, Duration::from_secs(5));
    assert!(failed.is_empty(), "not reset: {failed:?}\n{}", c.logs());
    let failed = all_reset(&mut direct, Duration::from_secs(5));
    assert!(
        failed.is_empty(),
        "direct clients not reset: {failed:?}\n{}",
        c.logs()
    );
    for s in &mut elsewhere {
        assert!(
            reset_within(s, Duration::from_millis(300)).is_err(),
            "{}",
            c.logs()
        );
    }
    let killed = c
        .events(0)
        .into_iter()
        .find(|e| e.fields["reason"] == "kill_connections_on_demotion");
    let killed = killed.unwrap_or_else(|| panic!("no kill-all event\n{}", c.logs()));
    // At least the direct clients (the agent's own poll connection may add one).
    assert!(
        killed.fields["connections"].as_u64() >= Some(5),
        "{killed:?}"
    );
}
