//! The agent as the packaged systemd unit runs it: a dedicated user with only
//! CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_PERFMON, on a bpffs mounted 0700 as
//! systemd mounts it, after `vip-agent prepare` as root. A failover works with the full
//! datapath, and once started the agent holds only CAP_NET_ADMIN and CAP_NET_RAW.

mod common;

use std::time::Duration;

use common::clients::{all_reset, connect};
use common::scrape::{LISTEN, sample, scrape};
use vip_tests::cluster::{Cluster, VipSettings};
use vip_tests::proc_status_field as field;

const SETTLE: Duration = Duration::from_secs(20);
use vip_tests::SERVICE_USER as USER;
use vip_tests::service_user;

#[tokio::test(flavor = "multi_thread")]
async fn a_service_user_with_the_unit_capabilities_fails_over_and_keeps_only_two() {
    if !vip_tests::privileged() {
        return;
    }
    let uid = service_user();
    let settings = VipSettings {
        instance: "lp".into(),
        run_as: Some(USER.into()),
        metrics_listen: Some(LISTEN.into()),
        ..VipSettings::default()
    };
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let write = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    // A scrape of every agent first: its blocking thread is among the threads checked
    // below, and the guard's series come through the descriptors duplicated at start
    // (only h1's table has the write VIP, held).
    let guard_active = format!("vip_agent_guard_active{{vip=\"{write}\"}}");
    for i in 0..3 {
        let text = scrape(&c, i).unwrap_or_else(|e| panic!("h{}: {e}", i + 1));
        let want = (i == 0).then_some(0.0);
        assert_eq!(sample(&text, &guard_active), want, "h{}: {text}", i + 1);
    }

    // What an operator checks with `vip-agent status`: the whole datapath runs.
    let out = c.control(0, &["status", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sub = &v["subsystems"];
    let text = |k: &str| sub[k].as_str().unwrap_or_default().to_owned();
    assert!(text("reset").starts_with("iter/tcp"), "{sub}");
    for part in ["tracking", "guard", "pins"] {
        assert!(!text(part).starts_with("off"), "{part}: {sub}");
    }
    assert_eq!(
        text("privileges"),
        "kept CAP_NET_ADMIN CAP_NET_RAW; dropped CAP_PERFMON CAP_BPF after start",
        "{sub}"
    );

    // What `grep Cap /proc/PID/task/*/status` shows: every thread runs as the user with
    // only the two network capabilities, and none can come back through ambient.
    for (i, agent) in c.agents.iter().enumerate() {
        let pid = agent.as_ref().unwrap().proc.pid();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        for task in tasks {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            let uids = field(&status, "Uid");
            assert!(
                uids.split_whitespace().all(|u| u == uid.to_string()),
                "agent {i}: {uids}"
            );
            let two = format!("{:016x}", (1u64 << 12) | (1 << 13));
            assert_eq!(field(&status, "CapEff"), two, "agent {i}");
            assert_eq!(field(&status, "CapPrm"), two, "agent {i}");
            assert_eq!(field(&status, "CapAmb"), "0000000000000000", "agent {i}");
            assert_eq!(field(&status, "NoNewPrivs"), "1", "agent {i}");
        }
    }

    // A planned switchover, after the drop: the new primary binds and announces, the
    // old one releases and resets its clients with the eBPF iterator, and its guard
    // table marks the VIP released, all through the descriptors opened at start.
    let mut clients = connect(&c, write, 4);
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    let failed = all_reset(&mut clients, Duration::from_secs(5));
    assert!(failed.is_empty(), "not reset: {failed:?}\n{}", c.logs());
    let out = c.control(0, &["status", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["subsystems"]["reset"]
            .as_str()
            .unwrap_or_default()
            .ends_with("(0 failed)"),
        "{}",
        v["subsystems"]
    );
    let released = v["datapath"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["vip"] == write.to_string() && d["state"] == "released");
    assert!(released, "{}", v["datapath"]);
    let text = scrape(&c, 0).unwrap();
    assert_eq!(sample(&text, &guard_active), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "vip_agent_connections_reset_total{path=\"iter\"}"),
        Some(4.0),
        "{text}"
    );
    assert!(c.agent_problems().is_empty(), "{:?}", c.agent_problems());
}

#[tokio::test(flavor = "multi_thread")]
async fn prepare_names_every_file_the_service_user_cannot_read_and_the_fix() {
    if !vip_tests::privileged() {
        return;
    }
    service_user();
    let settings = VipSettings {
        instance: "lq".into(),
        ..VipSettings::default()
    };
    // The files stay root's, mode 0600, as an operator first writes them.
    let c = Cluster::start(1, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let config = c.config_path(0).display().to_string();
    let password = c.config_path(0).with_extension("password");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = c
        .agent_command(0, &["prepare", "--config", &config, "--user", USER])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let key = c.key_file().display().to_string();
    assert!(
        stderr.contains(&format!(
            "is not readable by {USER}. Fix: chown {USER}:{USER} {key}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{} (owner 0:0, mode 0600) is not readable by {USER}. Fix: chown root:{USER} {0} \
             && chmod 0640 {0}",
            password.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("control.socket: ") && stderr.contains("is not writable by"),
        "{stderr}"
    );
    let out = c
        .agent_command(
            0,
            &["prepare", "--config", &config, "--user", "no-such-user"],
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("there is no user \"no-such-user\": create it with `adduser --system"),
        "{stderr}"
    );
}
