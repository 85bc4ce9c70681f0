//! Connection tracking, as an operator sees it: every TCP connection through a VIP this
//! node holds is in the pinned `connections` map (`bpftool map dump pinned …`) and in
//! `vip-agent status`, leaves it when it closes, and survives an agent restart.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::clients::{all_reset, connect};
use vip_tests::cluster::{Cluster, MYSQL_PORT, VipSettings};

const SETTLE: Duration = Duration::from_secs(20);

fn pins(c: &Cluster, i: usize) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/vip-agent").join(c.instance(i))
}

/// One entry of the `connections` map, as bpftool prints it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Tracked {
    vip: IpAddr,
    client_port: u16,
    /// 1 write, 2 read.
    role: u64,
    /// The kernel's TCP state (1 ESTABLISHED).
    state: u64,
}

/// The `connections` map of host `i`'s agent, dumped by bpftool, sorted; `Err` with
/// bpftool's output when the map is not pinned (yet).
fn bpftool_connections(c: &Cluster, i: usize) -> Result<Vec<Tracked>, String> {
    let path = pins(c, i).join("connections");
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&path)
        .output()
        .expect("bpftool runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut conns: Vec<Tracked> = entries
        .iter()
        .map(|e| {
            // With BTF, bpftool prints the named fields under "formatted".
            let f = &e["formatted"];
            let (key, value) = (&f["key"], &f["value"]);
            let bytes: Vec<u8> = key["local"]
                .as_array()
                .unwrap_or_else(|| panic!("no named key fields in {e}"))
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            let vip = match key["family"].as_u64() {
                Some(2) => IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]),
                _ => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap()),
            };
            assert_eq!(
                key["local_port"].as_u64(),
                Some(u64::from(MYSQL_PORT)),
                "{e}"
            );
            Tracked {
                vip,
                client_port: key["remote_port"].as_u64().unwrap() as u16,
                role: value["role"].as_u64().unwrap(),
                state: value["state"].as_u64().unwrap(),
            }
        })
        .collect();
    conns.sort();
    Ok(conns)
}

/// The datapath table of `vip-agent status --json` on host `i`.
fn status_datapath(c: &Cluster, i: usize) -> serde_json::Value {
    let out = c.control(i, &["status", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["datapath"].clone()
}

fn wait_tracked(c: &Cluster, i: usize, n: usize) -> Vec<Tracked> {
    let mut last = Ok(Vec::new());
    let ok = vip_tests::lab::wait_for(Duration::from_secs(10), || {
        last = bpftool_connections(c, i);
        last.as_ref().is_ok_and(|v| v.len() == n)
    });
    if !ok {
        let mut ss = Command::new("ss");
        ss.args(["-tan"]);
        vip_tests::netns::command_in(c.host(i).ns(), &mut ss).unwrap();
        let ss = String::from_utf8_lossy(&ss.output().unwrap().stdout).into_owned();
        panic!("host {i} should track {n} connections, has {last:?}\nss -tan:\n{ss}");
    }
    last.unwrap()
}

async fn tracks_connections(settings: VipSettings) {
    if !vip_tests::privileged() {
        return;
    }
    let mut c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let write = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();

    let mut clients = connect(&c, write, 10);
    let tracked = wait_tracked(&c, 0, 10);
    assert!(
        tracked
            .iter()
            .all(|t| t.vip == write && t.role == 1 && t.state == 1),
        "{tracked:?}"
    );
    let mut ports: Vec<u16> = clients
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    ports.sort();
    let seen: Vec<u16> = tracked.iter().map(|t| t.client_port).collect();
    assert_eq!(seen, ports, "the map names the clients' ports");
    // The other hosts, on the same kernel, track none of them.
    assert_eq!(bpftool_connections(&c, 1), Ok(Vec::new()));
    let dp = status_datapath(&c, 0);
    let row = dp
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vip"] == write.to_string());
    assert_eq!(
        row.map(|r| (r["state"].clone(), r["tracked"].clone())),
        Some(("held".into(), 10.into())),
        "{dp}"
    );

    // Closed connections leave the map.
    clients.truncate(6);
    wait_tracked(&c, 0, 6);

    // A restarted agent keeps the map, and the pinned tracker kept running meanwhile.
    c.stop_agent(0).unwrap();
    clients.extend(connect(&c, write, 2));
    c.restart_agent(0).unwrap();
    c.wait_sole_holder(0, SETTLE).unwrap();
    wait_tracked(&c, 0, 8);

    // Without any pinned state, a new agent finds the existing connections (track_seed).
    c.stop_agent(0).unwrap();
    std::fs::remove_dir_all(pins(&c, 0)).unwrap();
    clients.extend(connect(&c, write, 1));
    c.restart_agent(0).unwrap();
    wait_tracked(&c, 0, 9);

    // On switchover every one is reset, and the map follows.
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    let failed = all_reset(&mut clients, Duration::from_secs(5));
    assert!(failed.is_empty(), "not reset: {failed:?}\n{}", c.logs());
    wait_tracked(&c, 0, 0);
    let dp = status_datapath(&c, 0);
    let row = dp
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vip"] == write.to_string())
        .cloned();
    let row = row.unwrap_or_else(|| panic!("no row for {write} in {dp}"));
    assert_eq!(row["state"], "released", "{row}");
    assert!(row["guard_left_ms"].as_u64().unwrap() > 0, "{row}");
    // The new primary tracks the new connections.
    let _new = connect(&c, write, 3);
    wait_tracked(&c, 1, 3);

    // `vip-agent release` (maintenance, uninstall) removes the pins, which detaches the
    // programs they kept attached.
    c.stop_agent(1).unwrap();
    let config = c.config_path(1);
    let out = c
        .agent_command(1, &["release", "--config", config.to_str().unwrap()])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !pins(&c, 1).exists(),
        "{} should be gone",
        pins(&c, 1).display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tracks_the_write_vips_connections_ipv4() {
    tracks_connections(VipSettings {
        instance: "tr4".into(),
        ..VipSettings::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tracks_the_write_vips_connections_ipv6() {
    tracks_connections(VipSettings {
        write_vip: "2001:db8::50".parse().unwrap(),
        prefix: 64,
        instance: "tr6".into(),
        ..VipSettings::default()
    })
    .await;
}
