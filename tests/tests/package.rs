//! The .deb as an operator uses it, under a real systemd: installed with dpkg in a
//! container (vip_tests::systemd, an overlay of the host's root: the host is untouched),
//! an instance configured from the packaged example and started with systemctl, the
//! unit's user, capabilities and sandbox checked on the running agent, Restart=always,
//! reload, a unit missing CAP_BPF, then removal and purge.
//!
//! Needs the package: `cargo xtask deb` (`cargo xtask test` builds it first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vip_tests::proc_status_field as field;
use vip_tests::systemd::Container;

const WAIT: Duration = Duration::from_secs(60);
const EXAMPLE: &str = "/usr/share/doc/vip-agent/examples/vip-agent.example.toml";
const UNIT: &str = "/usr/lib/systemd/system/vip-agent@.service";

/// target/debian/vip-agent_*.deb (the newest), or `$VIP_AGENT_DEB`.
fn package() -> PathBuf {
    if let Some(path) = std::env::var_os("VIP_AGENT_DEB") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/debian
    let dir = exe.ancestors().nth(3).unwrap().join("debian");
    let newest = std::fs::read_dir(&dir).ok().and_then(|d| {
        d.flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("vip-agent_") && name.ends_with(".deb")
            })
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
    });
    newest.unwrap_or_else(|| {
        panic!(
            "no vip-agent_*.deb in {}: build it with `cargo xtask deb` (`cargo xtask test` \
             does), or set VIP_AGENT_DEB",
            dir.display()
        )
    })
}

/// The agents' journal, for failure messages.
fn journal(c: &Container) -> String {
    let out = c
        .exec(&["journalctl", "--no-pager", "-n", "300", "-u", "vip-agent@*"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!("--- journal of vip-agent@*:\n{out}")
}

/// Waits until `f` returns Some, or panics with the journal after WAIT.
fn wait_for<T>(c: &Container, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", journal(c));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ok<T>(c: &Container, r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}\n{}", journal(c)))
}

/// The example config with `(from, to)` replacements, each of which must apply.
fn config_from(example: &str, edits: &[(&str, &str)]) -> String {
    let mut text = example.to_string();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "the packaged example no longer has {from:?}"
        );
        text = text.replacen(from, to, 1);
    }
    text
}

/// The instance's main pid (in the container's pid namespace), once it has one.
fn main_pid(c: &Container, unit: &str) -> Option<u32> {
    let out = c
        .run(&["systemctl", "show", "--property=MainPID", "--value", unit])
        .ok()?;
    out.trim().parse().ok().filter(|&p| p > 0)
}

/// `vip-agent status --json` over the instance's socket, once it answers.
fn status(c: &Container, instance: &str) -> Option<serde_json::Value> {
    let socket = format!("/run/vip-agent/{instance}.sock");
    let out = c
        .run(&["vip-agent", "status", "--json", "--socket", &socket])
        .ok()?;
    serde_json::from_str(&out).ok()
}

#[test]
fn the_deb_installs_runs_under_systemd_and_removes_cleanly() {
    if !vip_tests::privileged() {
        return;
    }
    let deb = package();
    let c = Container::boot().unwrap();

    // Install, as an operator would.
    let bytes = std::fs::read(&deb).unwrap();
    ok(&c, c.write("/root/vip-agent.deb", &bytes));
    ok(&c, c.run(&["dpkg", "-i", "/root/vip-agent.deb"]));
    let listed: Vec<String> = ok(&c, c.run(&["dpkg", "-L", "vip-agent"]))
        .lines()
        .map(String::from)
        .collect();
    for want in [
        "/usr/bin/vip-agent",
        UNIT,
        EXAMPLE,
        "/usr/share/doc/vip-agent/README.md",
    ] {
        assert!(listed.iter().any(|l| l == want), "{want} not in {listed:?}");
    }
    // systemd-analyze exits 0 even on bad directives: what it says is on stderr.
    let verify = ok(&c, c.exec(&["systemd-analyze", "verify", UNIT]));
    assert_eq!(
        String::from_utf8_lossy(&verify.stderr),
        "",
        "systemd-analyze verify {UNIT}"
    );
    ok(&c, c.run(&["getent", "passwd", "vip-agent"]));
    assert_eq!(
        ok(&c, c.run(&["stat", "-c", "%a %U %G", "/etc/vip-agent"])).trim(),
        "750 root vip-agent"
    );

    // A NIC for the VIPs in the container's own network namespace (a veth pair: the
    // kernels this runs on may lack the dummy driver), and the files an operator
    // writes: the config from the example, the MySQL password, the peer key. No
    // mysqld: the agent starts, says it cannot reach it, and holds nothing.
    ok(
        &c,
        c.sh(
            "ip link set lo up && ip link add eth0 type veth peer name eth0-peer && \
              ip addr add 198.51.100.10/24 dev eth0 && ip link set eth0-peer up && \
              ip link set eth0 up",
        ),
    );
    ok(
        &c,
        c.sh("cd /etc/vip-agent && \
              openssl rand -hex 32 > peer.key && chown vip-agent:vip-agent peer.key && \
              chmod 0600 peer.key && \
              echo secret > mysql.password && chown root:vip-agent mysql.password && \
              chmod 0640 mysql.password"),
    );
    let example = ok(&c, c.run(&["cat", EXAMPLE]));
    let t1 = config_from(&example, &[("instance = \"mgr3306\"", "instance = \"t1\"")]);
    let t2 = config_from(
        &example,
        &[
            ("instance = \"mgr3306\"", "instance = \"t2\""),
            (
                "write_vip = \"198.51.100.50\"",
                "write_vip = \"198.51.100.60\"",
            ),
            (
                "read_vips = [\"198.51.100.51\", \"198.51.100.52\"]",
                "read_vips = [\"198.51.100.61\"]",
            ),
            ("label = \"eth0:0\"", "label = \"eth0:1\""),
            ("port = 33062", "port = 33063"),
        ],
    );
    for (name, text) in [("t1", &t1), ("t2", &t2)] {
        let path = format!("/etc/vip-agent/{name}.toml");
        ok(&c, c.write(&path, text.as_bytes()));
        ok(&c, c.run(&["chown", "root:vip-agent", &path]));
        ok(&c, c.run(&["chmod", "0640", &path]));
        ok(&c, c.run(&["vip-agent", "check-config", &path]));
    }

    // Start t1; it answers on its socket.
    ok(&c, c.run(&["systemctl", "start", "vip-agent@t1"]));
    let v = wait_for(&c, "t1 to answer status", || status(&c, "t1"));
    let pid = wait_for(&c, "t1's main pid", || main_pid(&c, "vip-agent@t1"));

    // The unit's user, capabilities and no_new_privs, on every thread.
    let uid = ok(&c, c.run(&["id", "-u", "vip-agent"])).trim().to_string();
    let threads = ok(&c, c.sh(&format!("cat /proc/{pid}/task/*/status")));
    let two = format!("{:016x}", (1u64 << 12) | (1 << 13)); // CAP_NET_ADMIN | CAP_NET_RAW
    for status in threads.split("Name:").filter(|s| !s.trim().is_empty()) {
        let uids = field(status, "Uid");
        assert!(uids.split_whitespace().all(|u| u == uid), "Uid {uids}");
        assert_eq!(field(status, "CapEff"), two, "{status}");
        assert_eq!(field(status, "CapAmb"), "0000000000000000", "{status}");
        assert_eq!(field(status, "NoNewPrivs"), "1", "{status}");
    }

    // The whole datapath runs, and the agent says what it kept.
    let sub = &v["subsystems"];
    let text = |k: &str| sub[k].as_str().unwrap_or("off (missing)").to_owned();
    for part in ["guard", "tracking", "pins", "reset"] {
        assert!(!text(part).starts_with("off"), "{part}: {sub}");
    }
    let privileges = text("privileges");
    assert!(
        privileges.starts_with("kept CAP_NET_ADMIN CAP_NET_RAW; dropped ")
            && privileges.contains("CAP_BPF")
            && privileges.contains("CAP_PERFMON"),
        "{privileges}"
    );
    ok(&c, c.run(&["test", "-d", "/sys/fs/bpf/vip-agent/t1"]));
    // mysqld's socket is often /tmp/mysql.sock: the sandbox must leave /tmp (and /home)
    // visible, or the agent would see mysqld as down and release the write VIP.
    ok(&c, c.run(&["touch", "/tmp/mysql.sock.seen", "/home/seen"]));
    for path in ["/tmp/mysql.sock.seen", "/home/seen"] {
        let seen = c.run(&["nsenter", "-t", &pid.to_string(), "-m", "test", "-e", path]);
        assert!(seen.is_ok(), "{path} is hidden from the agent: {seen:?}");
    }
    let link = ok(&c, c.run(&["ip", "link", "show", "eth0"]));
    assert!(link.contains("xdp"), "the guard is not on eth0: {link}");

    // Restart=always: a killed agent comes back and answers again.
    ok(&c, c.run(&["kill", "-9", &pid.to_string()]));
    let new_pid = wait_for(&c, "a new t1 main pid", || {
        main_pid(&c, "vip-agent@t1").filter(|&p| p != pid)
    });
    wait_for(&c, "the restarted t1 to answer status", || {
        status(&c, "t1").filter(|_| main_pid(&c, "vip-agent@t1") == Some(new_pid))
    });

    // An upgrade (the same package again: dpkg runs the upgrade path) restarts the
    // running instance.
    ok(&c, c.run(&["dpkg", "-i", "/root/vip-agent.deb"]));
    let upgraded = wait_for(&c, "t1 restarted by the upgrade", || {
        main_pid(&c, "vip-agent@t1").filter(|&p| p != new_pid)
    });
    wait_for(&c, "the upgraded t1 to answer status", || {
        status(&c, "t1").filter(|_| main_pid(&c, "vip-agent@t1") == Some(upgraded))
    });

    // Reload (SIGHUP): the agent rereads its config.
    ok(&c, c.run(&["systemctl", "reload", "vip-agent@t1"]));
    wait_for(&c, "t1 to log its reload", || {
        let log = c
            .run(&["journalctl", "--no-pager", "-u", "vip-agent@t1"])
            .ok()?;
        log.contains("reloaded /etc/vip-agent/t1.toml")
            .then_some(())
    });

    // A unit without CAP_BPF: the agent refuses to start and says why and how to fix it.
    ok(
        &c,
        c.run(&["mkdir", "-p", "/etc/systemd/system/vip-agent@t2.service.d"]),
    );
    ok(
        &c,
        c.write(
            "/etc/systemd/system/vip-agent@t2.service.d/x.conf",
            b"[Service]\n\
              AmbientCapabilities=\n\
              AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_PERFMON\n\
              CapabilityBoundingSet=\n\
              CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_PERFMON\n",
        ),
    );
    ok(&c, c.run(&["systemctl", "daemon-reload"]));
    // Type=exec: the start succeeds once the binary runs; the agent then exits.
    ok(&c, c.run(&["systemctl", "start", "vip-agent@t2"]));
    let refusal = wait_for(&c, "t2 to refuse to start without CAP_BPF", || {
        let log = c
            .run(&["journalctl", "--no-pager", "-u", "vip-agent@t2"])
            .ok()?;
        log.lines()
            .find(|l| l.contains("lacks CAP_BPF") && l.contains("AmbientCapabilities="))
            .map(String::from)
    });
    assert!(status(&c, "t2").is_none(), "t2 runs: {refusal}");
    eprintln!("t2 refused to start: {refusal}");

    // Removal stops every instance (t2 is still restarting) and unpins the programs.
    ok(&c, c.run(&["dpkg", "-r", "vip-agent"]));
    let procs = ok(&c, c.run(&["ps", "-eo", "comm="]));
    assert!(
        !procs.lines().any(|p| p.trim() == "vip-agent"),
        "an agent is left: {procs}"
    );
    ok(&c, c.run(&["test", "!", "-e", "/sys/fs/bpf/vip-agent"]));
    wait_for(&c, "the guard to leave eth0", || {
        let link = c.run(&["ip", "link", "show", "eth0"]).ok()?;
        (!link.contains("xdp")).then_some(())
    });
    for unit in ["vip-agent@t1", "vip-agent@t2"] {
        let state = c
            .exec(&["systemctl", "is-active", unit])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        assert!(state == "inactive" || state == "failed", "{unit}: {state}");
    }

    // Purge: the user and group go; /etc/vip-agent stays with the operator's files, and
    // dpkg says so.
    let purge = ok(&c, c.exec(&["dpkg", "-P", "vip-agent"]));
    assert!(purge.status.success(), "dpkg -P: {purge:?}");
    assert!(
        String::from_utf8_lossy(&purge.stderr).contains("/etc/vip-agent still holds files"),
        "{purge:?}"
    );
    for db in ["passwd", "group"] {
        assert!(
            !ok(&c, c.exec(&["getent", db, "vip-agent"]))
                .status
                .success(),
            "the {db} entry vip-agent is left"
        );
    }
    // Nothing the package installed is left, but folders other packages share.
    for path in &listed {
        if ok(&c, c.exec(&["test", "-e", path])).status.success() {
            let shared = ok(&c, c.exec(&["dpkg", "-S", path])).status.success();
            let dir = ok(&c, c.exec(&["test", "-d", path])).status.success();
            assert!(dir && shared, "{path} is left after the purge");
        }
    }
    drop(c);
}
