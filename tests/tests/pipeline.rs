//! The eBPF pipeline end to end: the XDP program that `cargo xtask build-ebpf` built and
//! vip-agent embeds is loaded by vip-agent inside a lab host, counts real packets sent by
//! a client, and its pinned map reads back through bpftool, as an operator would read it.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vip_tests::lab::{Lab, wait_for};

/// Sums the per-CPU packet counts that bpftool prints for destination `dst`.
fn bpftool_packets(pin: &Path, dst: IpAddr) -> u64 {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin)
        .output()
        .expect("bpftool runs (cargo xtask test installs it)");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).expect("bpftool prints JSON");
    let want: Vec<u64> = match dst {
        IpAddr::V4(a) => a
            .octets()
            .iter()
            .map(|&b| b as u64)
            .chain([0; 12])
            .collect(),
        IpAddr::V6(a) => a.octets().iter().map(|&b| b as u64).collect(),
    };
    entries
        .iter()
        // With BTF, bpftool adds the named fields under "formatted":
        // {"key":{"family":2,"_pad":[..],"addr":[..]},"values":[{"cpu":0,"value":{..}}]}.
        .map(|e| &e["formatted"])
        .filter(|e| {
            let addr: Vec<u64> = e["key"]["addr"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            addr == want
        })
        .flat_map(|e| e["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v["value"]["packets"].as_u64())
        .sum()
}

#[test]
fn agent_loads_embedded_xdp_program_in_a_lab_host_and_counts_real_packets() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(1).build().unwrap();
    let (host, client) = (lab.host(0), lab.client(0));
    let instance = format!("test-pipeline-{}", std::process::id());
    let pin = Path::new("/sys/fs/bpf/vip-agent")
        .join(&instance)
        .join("dst_packets");
    let scratch = vip_tests::scratch::TempDir::new("pipeline");
    let (stdout_path, stderr_path) = (scratch.join("stdout"), scratch.join("stderr"));

    let agent = host
        .spawn(
            Command::new(vip_tests::agent_binary())
                .args(["count-packets", "--iface", "eth0", "--instance", &instance])
                .args(["--interval-ms", "0"])
                .stdout(Stdio::from(fs::File::create(&stdout_path).unwrap()))
                .stderr(Stdio::from(fs::File::create(&stderr_path).unwrap())),
        )
        .unwrap();
    let stderr = || fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || pin.exists()),
        "vip-agent did not pin {} in time; its stderr:\n{}",
        pin.display(),
        stderr()
    );

    let v4 = IpAddr::V4(host.ipv4());
    let v6 = IpAddr::V6(host.ipv6());
    client
        .output(Command::new("ping").args(["-c", "3", "-i", "0.2", "-W", "2", &v4.to_string()]))
        .unwrap();
    client
        .output(Command::new("ping").args(["-c", "2", "-i", "0.2", "-W", "2", &v6.to_string()]))
        .unwrap();

    // Three echo requests to the IPv4 address; two to the IPv6 one, plus any unicast
    // neighbour probes the client sends there.
    assert!(
        bpftool_packets(&pin, v4) >= 3,
        "IPv4 packets not counted; agent: {}",
        stderr()
    );
    assert!(
        bpftool_packets(&pin, v6) >= 2,
        "IPv6 packets not counted; agent: {}",
        stderr()
    );
    let unrelated: IpAddr = "198.51.100.99".parse().unwrap();
    assert_eq!(bpftool_packets(&pin, unrelated), 0);

    // SIGTERM: a last JSON line with the same counts, then the pins are gone.
    let status = agent.stop(Duration::from_secs(10)).unwrap();
    assert!(
        status.success(),
        "vip-agent exited with {status}; stderr:\n{}",
        stderr()
    );
    let stdout = fs::read_to_string(&stdout_path).unwrap();
    let last: Value =
        serde_json::from_str(stdout.lines().last().expect("a final JSON line")).unwrap();
    let counted = |ip: IpAddr| {
        last["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["dst"] == ip.to_string())
            .and_then(|c| c["packets"].as_u64())
            .unwrap_or(0)
    };
    assert!(counted(v4) >= 3, "final counters: {last}");
    assert!(counted(v6) >= 2, "final counters: {last}");
    assert!(
        !pin.exists() && !pin.parent().unwrap().exists(),
        "pins left behind"
    );
}

#[test]
fn count_packets_rejects_a_bad_instance_name_clearly() {
    let out = Command::new(vip_tests::agent_binary())
        .args(["count-packets", "--iface", "eth0", "--instance", "../etc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("instance name \"../etc\" is not valid"),
        "{err}"
    );
    assert!(err.contains("A-Z, a-z, 0-9"), "{err}");
}

#[test]
fn count_packets_names_a_missing_interface() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).build().unwrap();
    let instance = format!("test-noiface-{}", std::process::id());
    let out = lab
        .host(0)
        .spawn(
            Command::new(vip_tests::agent_binary())
                .args([
                    "count-packets",
                    "--iface",
                    "nosuch0",
                    "--instance",
                    &instance,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .unwrap();
    let status = out
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("agent exits");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut out.take_stderr().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("could not attach XDP to interface \"nosuch0\""),
        "{err}"
    );
    // A failed start leaves no pin folder behind.
    assert!(!Path::new("/sys/fs/bpf/vip-agent").join(&instance).exists());
}
