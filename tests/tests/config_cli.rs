//! `vip-agent check-config` and `vip-agent import-mycnf`, run as the binary: exit codes,
//! what goes to stdout and stderr. Unprivileged: nic "lo" and documentation addresses
//! (198.51.100.0/24, 2001:db8::/32) no host has.

use std::path::Path;

use std::process::Output;
use vip_tests::scratch::TempDir;

fn agent(args: &[&str], path: &Path) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = std::process::Command::new(vip_tests::agent_binary())
        .args(args)
        .arg(path)
        .output()
        .expect("vip-agent runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A peer key file as `openssl rand -hex 32` writes it, mode 0600.
fn key_file(dir: &TempDir) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.write("peer.key", &format!("{}\n", "ab".repeat(32)));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The MySQL password file, mode 0640 as the README sets it up.
fn password_file(dir: &TempDir) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.write("mysql.password", "secret\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    path
}

fn good_config(dir: &TempDir) -> String {
    let pw = password_file(dir);
    let key = key_file(dir);
    format!(
        r#"instance = "mgr3306"
[mysql]
host = "127.0.0.1"
port = 3306
user = "vip_agent"
password_file = "{}"
[vip]
enable = true
write_vip = "198.51.100.50"
mask = "255.255.255.0"
nic = "lo"
label = "lo:7"
read_vips = ["198.51.100.51", "198.51.100.52"]
floating_type = "TO_ANOTHER_SECONDARY"
announce_count = 6
[peer]
port = 33063
key_file = "{}"
"#,
        pw.display(),
        key.display()
    )
}

#[test]
fn check_config_prints_a_summary_for_a_good_file() {
    let dir = TempDir::new("cc-good");
    let path = dir.write("good.toml", &good_config(&dir));
    let (code, out, err) = agent(&["check-config"], &path);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for want in [
        ": OK",
        "instance       mgr3306",
        "mysqld         127.0.0.1:3306 as vip_agent",
        "write VIP      198.51.100.50/24 on lo (label lo:7)",
        "read VIPs      198.51.100.51, 198.51.100.52 (floating type TO_ANOTHER_SECONDARY)",
        "announcements  6 every 100 ms",
        "peer port      [::]:33063, at most 64 connections (4 per address), key ",
        "peer timing    exchange 1000 ms, switchover wait 5000 ms, resync every 20000 ms",
        "control socket /run/vip-agent/mgr3306.sock",
        "metrics        off (no [metrics] table)",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn check_config_names_the_metrics_endpoint() {
    let dir = TempDir::new("cc-metrics");
    let text = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:9748\"\n",
        good_config(&dir)
    );
    let path = dir.write("metrics.toml", &text);
    let (code, out, err) = agent(&["check-config"], &path);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let want =
        "metrics        Prometheus endpoint http://127.0.0.1:9748/metrics (no authentication)";
    assert!(out.contains(want), "missing {want:?} in\n{out}");
}

#[test]
fn check_config_reports_every_problem() {
    let dir = TempDir::new("cc-bad");
    let text = good_config(&dir)
        .replace(
            "announce_count = 6",
            "announce_count = 25\nanounce_interval_ms = 100",
        )
        .replace("nic = \"lo\"", "nic = \"vipagent-none0\"")
        .replace("label = \"lo:7\"", "label = \"vipagent-none0:0\"")
        .replace("\"198.51.100.52\"", "\"2001:db8::52\"")
        .replace("mysql.password", "missing.password")
        .replace("peer.key", "open.key");
    // A key anyone on the host can read is refused.
    dir.write("open.key", &"cd".repeat(32));
    let path = dir.write("bad.toml", &text);
    let (code, out, err) = agent(&["check-config"], &path);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.is_empty(), "{out}");
    for want in [
        "7 problems:",
        "open.key\": is readable by group or others (mode 0644); run chmod 600 ",
        "vip.anounce_interval_ms (line 16, column 1): unknown key; did you mean `announce_interval_ms`?",
        "vip.read_vips[1] = \"2001:db8::52\": IPv6, but vip.write_vip is IPv4",
        "vip.label = \"vipagent-none0:0\": 16 bytes; labels are at most 15 (IFNAMSIZ-1)",
        "vip.announce_count = 25: must be between 3 and 20 (greatdb_ha_send_arp_packge_times)",
        "mysql.password_file = ",
        "missing.password\": cannot read: No such file or directory",
        "vip.nic = \"vipagent-none0\": no such interface on this host",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
}

#[test]
fn check_config_refuses_a_password_everyone_can_read() {
    let dir = TempDir::new("cc-pw");
    let path = dir.write("pw.toml", &good_config(&dir));
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("mysql.password");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = agent(&["check-config"], &path);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let want = format!(
        "mysql.password_file = \"{0}\": is readable by every user of this host (mode 0644); \
         run chmod o-rwx {0}",
        pw.display()
    );
    assert!(err.contains(&want), "missing {want:?} in\n{err}");
}

#[test]
fn check_config_syntax_error_and_missing_file() {
    let dir = TempDir::new("cc-syntax");
    let path = dir.write("syntax.toml", "[vip\nnic = \"lo\"\n");
    let (code, _, err) = agent(&["check-config"], &path);
    assert_eq!(code, 1);
    assert!(err.contains("config (line 1, column"), "{err}");
    assert!(err.contains("invalid TOML"), "{err}");

    let (code, _, err) = agent(&["check-config"], &dir.join("absent.toml"));
    assert_eq!(code, 1);
    assert!(err.contains("config: cannot read "), "{err}");
}

#[test]
fn import_mycnf_follows_includes_and_the_result_checks() {
    let dir = TempDir::new("import");
    let pw = password_file(&dir);
    let mycnf = dir.write(
        "my.cnf",
        "[mysqld]\nport = 3306\n!include ha.cnf\n!includedir conf.d\n",
    );
    dir.write(
        "ha.cnf",
        "[mysqld]\nloose-greatdb_ha_enable_mgr_vip = ON\nloose-greatdb-ha-mgr-vip-ip = \"198.51.100.50\"\n\
         loose_greatdb_ha_mgr_vip_mask = '255.255.255.0'  # /24\n",
    );
    dir.write(
        "conf.d/10-nic.cnf",
        "# the interface\n[mysqld]\nloose-greatdb_ha_mgr_vip_nic = lo\n; read VIPs\nloose-greatdb_ha_mgr_read_vip_ips = 198.51.100.51,198.51.100.52\n",
    );
    dir.write(
        "conf.d/20-runtime.cnf",
        "[mysqld]\nloose-greatdb_ha_force_change_mgr_vip = OFF\nloose-greatdb_ha_mgr_vip_broad = 1\n",
    );
    dir.write(
        "conf.d/ignored.txt",
        "[mysqld]\nloose-greatdb_ha_port = 1\n",
    );
    let (code, toml, err) = agent(&["import-mycnf"], &mycnf);
    assert_eq!(code, 0, "stderr:\n{err}");
    assert!(toml.contains("instance = \"mysqld-3306\""), "{toml}");
    assert!(toml.contains("write_vip = \"198.51.100.50\""), "{toml}");
    assert!(toml.contains("prefix = 24"), "{toml}");
    assert!(
        toml.contains("read_vips = [\"198.51.100.51\", \"198.51.100.52\"]"),
        "{toml}"
    );
    assert!(
        toml.contains("port = 33062  # greatdb_ha's default"),
        "{toml}"
    );
    assert!(
        err.contains("20-runtime.cnf:2: greatdb_ha_force_change_mgr_vip: runtime-only"),
        "{err}"
    );
    assert!(
        err.contains("20-runtime.cnf:3: greatdb_ha_mgr_vip_broad: obsolete"),
        "{err}"
    );

    // What the operator does next: fill in the password file, then check-config accepts it.
    let filled = toml
        .replace(
            "/etc/vip-agent/mysqld-3306.password",
            &pw.display().to_string(),
        )
        .replace(
            "/etc/vip-agent/peer.key",
            &key_file(&dir).display().to_string(),
        );
    let path = dir.write("imported.toml", &filled);
    let (code, out, err) = agent(&["check-config"], &path);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}\ntoml:\n{filled}");
    assert!(
        out.contains("write VIP      198.51.100.50/24 on lo (label lo:0)"),
        "{out}"
    );
}

#[test]
fn import_mycnf_several_instances_and_section() {
    let dir = TempDir::new("import-multi");
    let mycnf = dir.write(
        "my.cnf",
        "[mysqld]\nloose-greatdb_ha_enable_mgr_vip = ON\nloose-greatdb_ha_mgr_vip_nic = lo\nloose-greatdb_ha_mgr_vip_mask = 24\n\
         [mysqld3306]\nsocket = /tmp/my3306.sock\nloose-greatdb_ha_mgr_vip_ip = 198.51.100.50\n\
         [mysqld3307]\nport = 3307\nloose-greatdb_ha_mgr_vip_ip = 198.51.100.60\nloose-greatdb_ha_port = 33072\n",
    );
    let (code, out, err) = agent(&["import-mycnf"], &mycnf);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("# ==== instance mysqld3306 from [mysqld3306]"),
        "{out}"
    );
    assert!(
        out.contains("# ==== instance mysqld3307 from [mysqld3307]"),
        "{out}"
    );
    assert!(
        err.contains("2 instances (mysqld3306, mysqld3307)"),
        "{err}"
    );

    let (code, out, _) = agent(&["import-mycnf", "--section", "mysqld3307"], &mycnf);
    assert_eq!(code, 0);
    assert!(!out.contains("mysqld3306"), "{out}");
    assert!(out.contains("port = 33072"), "{out}");
}

#[test]
fn import_mycnf_fails_clearly() {
    let dir = TempDir::new("import-fail");
    let (code, out, err) = agent(&["import-mycnf"], &dir.join("absent.cnf"));
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("cannot read "), "{err}");

    let plain = dir.write("plain.cnf", "[mysqld]\nport = 3306\n");
    let (code, _, err) = agent(&["import-mycnf"], &plain);
    assert_eq!(code, 1);
    assert!(err.contains("no greatdb_ha settings found"), "{err}");
}
