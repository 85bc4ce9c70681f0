//! Startup checks, as an operator meets them: with the guard and tracking turned off,
//! the agent runs without CAP_BPF in a documented degraded mode (no eBPF; connections
//! are still reset, over netlink) and says so in `vip-agent status`; without CAP_NET_RAW,
//! or without CAP_BPF while the config asks for the guard, it refuses to start and names
//! the fixes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::clients::{all_reset, connect};
use common::scrape::{LISTEN, sample, scrape};
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
        ebpf: false,
        metrics_listen: Some(LISTEN.into()),
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
    // The metrics leave out the guard's series (there is no guard) and keep the rest.
    let text = scrape(&c, 0).unwrap();
    assert_eq!(
        sample(&text, "vip_agent_role{role=\"primary\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("vip_agent_guard") && !text.contains("vip_agent_tracked"),
        "{text}"
    );
    // The reset guarantee holds all the same.
    let mut clients = connect(&c, write, 5);
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    let failed = all_reset(&mut clients, Duration::from_secs(5));
    assert!(failed.is_empty(), "not reset: {failed:?}\n{}", c.logs());
}

/// Starts agent 0's config under `setpriv --bounding-set=-CAPS` and returns its exit code
/// and stderr: the agent must refuse to start.
fn refused_start(instance: &str, caps: &str) -> (Option<i32>, String) {
    let settings = VipSettings {
        instance: instance.into(),
        ..VipSettings::default()
    };
    let c = Cluster::start(1, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let config = c.agents[0].as_ref().unwrap().config.clone();
    let drop: Vec<String> = caps.split(',').map(|c| format!("-{c}")).collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--bounding-set={}", drop.join(",")))
        .arg("--")
        .arg(vip_tests::agent_binary())
        .args(["run", "--config"])
        .arg(&config);
    vip_tests::netns::command_in(c.host(0).ns(), &mut cmd).unwrap();
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The three ways to grant capabilities, as the error names them.
const FIXES: [&str; 3] = [
    "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON",
    "setcap cap_net_admin,cap_net_raw,cap_bpf,cap_perfmon+ep /usr/bin/vip-agent",
    "--cap-add NET_ADMIN --cap-add NET_RAW --cap-add BPF --cap-add PERFMON",
];

#[tokio::test(flavor = "multi_thread")]
async fn without_cap_net_raw_the_agent_refuses_to_start_and_names_the_fix() {
    if !vip_tests::privileged() {
        return;
    }
    let (code, stderr) = refused_start("dr", "net_raw");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("vip-agent lacks CAP_NET_RAW (to announce the VIPs with ARP / NA)"),
        "{stderr}"
    );
    for fix in FIXES {
        assert!(stderr.contains(fix), "{fix}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_cap_bpf_and_the_guard_on_the_agent_refuses_to_start_and_names_the_fix() {
    if !vip_tests::privileged() {
        return;
    }
    let (code, stderr) = refused_start("db", "bpf,perfmon,sys_admin");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "vip-agent lacks CAP_BPF (to load the eBPF guard, tracker and reset) and \
             CAP_PERFMON"
        ),
        "{stderr}"
    );
    for fix in FIXES {
        assert!(stderr.contains(fix), "{fix}: {stderr}");
    }
    assert!(
        stderr.contains("set datapath.guard = false and datapath.track = false"),
        "{stderr}"
    );
}

/// The unit's set is minimal: without any one of the four (CAP_SYS_ADMIN, which stands
/// in for CAP_BPF and CAP_PERFMON, dropped too), the agent refuses to start and names
/// exactly that one.
#[tokio::test(flavor = "multi_thread")]
async fn each_of_the_four_capabilities_is_needed() {
    if !vip_tests::privileged() {
        return;
    }
    for (cap, name) in [
        ("net_admin", "CAP_NET_ADMIN"),
        ("net_raw", "CAP_NET_RAW"),
        ("bpf", "CAP_BPF"),
        ("perfmon", "CAP_PERFMON"),
    ] {
        let (code, stderr) = refused_start("d1", &format!("{cap},sys_admin"));
        assert_eq!(code, Some(1), "without {name}: {stderr}");
        let lacks = stderr
            .split("vip-agent lacks ")
            .nth(1)
            .and_then(|rest| rest.split(". Grant").next())
            .unwrap_or_default();
        let others = ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON"]
            .into_iter()
            .filter(|other| *other != name && lacks.contains(other));
        assert!(
            lacks.starts_with(&format!("{name} (")) && others.count() == 0,
            "without {name}, the agent should name only it: {stderr}"
        );
    }
}
