//! The datapath without bpffs (a container without it, or an agent started through
//! `ip netns exec`, which remounts /sys): nothing is pinned, so nothing outlives the
//! agent, but while it runs the guard, the tracking and the reset work as with pins.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::clients::{all_reset, connect, stale_neighbour, try_connect};
use vip_tests::cluster::{Cluster, VipSettings};

const SETTLE: Duration = Duration::from_secs(20);

fn status(c: &Cluster, i: usize) -> serde_json::Value {
    let out = c.control(i, &["status", "--json"]).unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_bpffs_the_guard_tracking_and_reset_still_work() {
    if !vip_tests::privileged() {
        return;
    }
    let settings = VipSettings {
        instance: "nopin".into(),
        bpffs: false,
        ..VipSettings::default()
    };
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let write = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();
    let s = status(&c, 0);
    let pins = s["subsystems"]["pins"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(pins.starts_with("off ("), "{s}");
    assert!(
        s["subsystems"]["guard"]
            .as_str()
            .unwrap_or_default()
            .starts_with("xdp"),
        "{s}"
    );

    // Tracking: the connections through the VIP are recorded.
    let mut clients = connect(&c, write, 3);
    let tracked = |c: &Cluster| {
        status(c, 0)["datapath"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["vip"] == write.to_string()).cloned())
            .is_some_and(|r| r["tracked"].as_u64() >= Some(3))
    };
    c.wait(SETTLE, "h1 to track its 3 client connections", tracked)
        .unwrap();

    // Reset: they are reset when h1 lets the VIP go.
    let old = c.host(0).mac().to_string();
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    let failed = all_reset(&mut clients, Duration::from_secs(5));
    assert!(failed.is_empty(), "not reset: {failed:?}\n{}", c.logs());

    // Guard: a client whose neighbour entry still names h1 gets a RST from it.
    stale_neighbour(&c, write, &old);
    let (result, took) = try_connect(&c, write);
    assert_eq!(
        result,
        Err(ErrorKind::ConnectionRefused),
        "after {took:?}: no RST from the old node's guard\n{}",
        c.logs()
    );
    assert!(c.agent_problems().is_empty(), "{:?}", c.agent_problems());
}
