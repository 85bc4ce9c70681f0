//! What a lab agent reports about its datapath, from `vip-agent status --json` and its log.

use vip_tests::cluster::Cluster;

/// The `reset` line of `vip-agent status` on host `i`.
pub fn reset_mode(c: &Cluster, i: usize) -> String {
    let out = c.control(i, &["status", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["subsystems"]["reset"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Checks host `i` resets with the path the cluster's settings ask for.
pub fn assert_reset_path(c: &Cluster, i: usize) {
    let mode = reset_mode(c, i);
    let want = match c.settings.reset_path.as_deref() {
        Some("netlink") => "netlink SOCK_DESTROY (VIP_AGENT_RESET_PATH=netlink)",
        _ => "iter/tcp + bpf_sock_destroy",
    };
    assert!(mode.starts_with(want), "{mode}");
}

/// The connections agent `i` logged as reset (`event = "reset"`).
pub fn resets_logged(c: &Cluster, i: usize) -> u64 {
    c.events(i)
        .iter()
        .filter(|e| e.event == "reset")
        .filter_map(|e| e.fields["connections"].as_u64())
        .sum()
}
