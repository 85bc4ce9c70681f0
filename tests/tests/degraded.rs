//! Startup checks, as an operator meets them: without CAP_BPF the agent runs in a
//! documented degraded mode (no eBPF; connections are still reset, over netlink) and
//! says so in `vip-agent status`; without CAP_NET_RAW it refuses to start and names the
//! fix.

mod common;

use std::process::Command;
use std::time::Duration;

use common::clients::{all_reset, connect};
use vip_tests::cluster::{Cluster, VipSettings};

const SETTLE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn without_cap_bpf_the_agent_resets_over_netlink_and_says_so() {
    if !vip_tests::privileged() {
        return;
    }
    let settings = VipSettings {
        instance: "dg".into(),
        drop_caps: Some("bpf,perfmon,sys_admin".into()),
        ..VipSettings::default()
    };
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let write = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();
    let out = c.control(0, &["status", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sub = &v["subsystems"];
    let text = |k: &str| sub[k].as_str().unwrap_or_default().to_owned();
    assert!(
        text("reset").starts_with("netlink SOCK_DESTROY")
            && text("reset").contains("the agent lacks CAP_BPF"),
        "{sub}"
    );
    for part in ["tracking", "guard", "pins"] {
        assert!(
            text(part).starts_with("off (") && text(part).contains("CAP_BPF"),
            "{part}: {sub}"
        );
    }
    // The reset guarantee holds all the same.
    let mut clients = connect(&c, write, 5);
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    let failed = all_reset(&mut clients, Duration::from_secs(5));
    assert!(failed.is_empty(), "not reset: {failed:?}\n{}", c.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_cap_net_raw_the_agent_refuses_to_start_and_names_the_fix() {
    if !vip_tests::privileged() {
        return;
    }
    let settings = VipSettings {
        instance: "dr".into(),
        ..VipSettings::default()
    };
    let c = Cluster::start(1, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let config = c.agents[0].as_ref().unwrap().config.clone();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set=-net_raw", "--"])
        .arg(vip_tests::agent_binary())
        .args(["run", "--config"])
        .arg(&config);
    vip_tests::netns::command_in(c.host(0).ns(), &mut cmd).unwrap();
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("vip-agent lacks CAP_NET_RAW") && stderr.contains("AmbientCapabilities"),
        "{stderr}"
    );
}
