//! `import-mycnf` conversions, sections, warnings, and that the output parses.

use super::*;
use crate::config::mycnf;
use crate::config::{FloatingType, parse};

/// An option file from text, as if read from `my.cnf` (no includes).
fn file(text: &str) -> OptionFile {
    mycnf::read_str(text, std::path::Path::new("my.cnf"))
}

/// The TOML with [mysql] filled as an operator would: it must pass `parse`.
fn parses(toml: &str) -> crate::config::Config {
    match parse(toml) {
        Ok(cfg) => cfg,
        Err(e) => panic!("imported TOML does not parse:\n{e}\n---\n{toml}"),
    }
}

const FULL: &str = r#"
[mysqld]
port = 3306
socket = "/data/mysql/mysql.sock"
plugin-load-add = greatdb_ha.so
loose-greatdb_ha_enable_mgr_vip = ON
loose-greatdb-ha-mgr-vip-ip = '198.51.100.50'
loose_greatdb_ha_mgr_vip_mask = "255.255.255.0"   # /24
greatdb_ha_mgr_vip_nic = eth0
loose-greatdb_ha_port = 33062
loose-greatdb_ha_mgr_read_vip_ips = "198.51.100.51, 198.51.100.52"
loose-greatdb_ha_mgr_read_vip_floating_type = to_another_secondary
loose-greatdb_ha_send_arp_packge_times = 7
loose-greatdb_ha_gateway_address = 198.51.100.1
loose-greatdb_ha_mgr_exit_primary_kill_connection_mode = OFF
loose-greatdb_ha_mgr_vip_broad = 198.51.100.255
loose-greatdb_ha_force_change_mgr_vip = OFF
loose-greatdb_ha_vip_tope = "uuid1::198.51.100.51"
loose-greatdb_ha_something_new = 1
"#;

#[test]
fn every_setting_is_carried_over() {
    let out = import(&file(FULL), None).unwrap();
    assert_eq!(out.instances.len(), 1);
    let inst = &out.instances[0];
    assert_eq!(inst.instance, "mysqld-3306");
    let cfg = parses(&inst.toml);
    assert_eq!(cfg.instance, "mysqld-3306");
    assert_eq!(
        cfg.mysql.endpoint,
        crate::config::MysqlEndpoint::Socket("/data/mysql/mysql.sock".into())
    );
    assert!(cfg.vip.enable);
    assert_eq!(cfg.vip.write_vip, Some("198.51.100.50".parse().unwrap()));
    assert_eq!(cfg.vip.prefix, 24);
    assert_eq!(cfg.vip.nic, "eth0");
    assert_eq!(cfg.vip.label, "eth0:0");
    assert_eq!(cfg.vip.read_vips.len(), 2);
    assert_eq!(cfg.vip.floating_type, FloatingType::ToAnotherSecondary);
    assert_eq!(cfg.vip.announce_count, 7);
    assert_eq!(cfg.vip.gateway, Some("198.51.100.1".parse().unwrap()));
    assert!(!cfg.vip.kill_connections_on_demotion);
    assert_eq!(cfg.peer.port, 33062);
    assert!(
        inst.toml
            .contains("# greatdb_ha_mgr_vip_ip = 198.51.100.50 (my.cnf:7)"),
        "{}",
        inst.toml
    );
    let w = out.warnings.join("\n");
    for want in [
        "my.cnf:16: greatdb_ha_mgr_vip_broad: obsolete",
        "my.cnf:17: greatdb_ha_force_change_mgr_vip: runtime-only",
        "with vip-agent run `vip-agent force-rebind`",
        "with vip-agent run `vip-agent set-topology",
        "my.cnf:18: greatdb_ha_vip_tope: runtime-only manual read-VIP placement",
        "my.cnf:19: greatdb_ha_something_new: not a greatdb_ha setting vip-agent knows",
        "my.cnf:5: plugin_load_add loads the greatdb_ha plugin",
    ] {
        assert!(w.contains(want), "missing {want:?} in\n{w}");
    }
}

#[test]
fn unconvertible_values_are_dropped_with_file_and_line() {
    let out = import(
        &file("[mysqld]\ngreatdb_ha_enable_mgr_vip = maybe\ngreatdb_ha_mgr_vip_ip = 10.0.0.300\ngreatdb_ha_mgr_vip_mask = 255.0.255.0\ngreatdb_ha_send_arp_packge_times = 50\ngreatdb_ha_mgr_read_vip_ips = 10.0.0.1,x\n"),
        None,
    )
    .unwrap();
    let w = out.warnings.join("\n");
    assert!(
        w.contains("my.cnf:2: greatdb_ha_enable_mgr_vip = maybe: not a boolean"),
        "{w}"
    );
    assert!(w.contains("my.cnf:3: greatdb_ha_mgr_vip_ip = 10.0.0.300: `10.0.0.300` is not an IP address; dropped"), "{w}");
    assert!(
        w.contains("my.cnf:4: greatdb_ha_mgr_vip_mask = 255.0.255.0: not a contiguous mask"),
        "{w}"
    );
    assert!(
        w.contains(
            "my.cnf:5: greatdb_ha_send_arp_packge_times = 50 is outside 3..20; mysqld used 20"
        ),
        "{w}"
    );
    assert!(
        w.contains("my.cnf:6: greatdb_ha_mgr_read_vip_ips = 10.0.0.1,x: `x` is not an IP address"),
        "{w}"
    );
    assert!(out.instances[0].toml.contains("announce_count = 20"));
}

#[test]
fn booleans_and_prefix_switches() {
    for (line, enable) in [
        ("greatdb_ha_enable_mgr_vip", true),
        ("greatdb_ha_enable_mgr_vip = 1", true),
        ("greatdb_ha_enable_mgr_vip = true", true),
        ("greatdb_ha_enable_mgr_vip = off", false),
        ("loose-skip-greatdb_ha_enable_mgr_vip", false),
        ("loose-disable-greatdb-ha-enable-mgr-vip", false),
        ("enable-greatdb_ha_enable_mgr_vip", true),
    ] {
        let out = import(&file(&format!("[mysqld]\n{line}\n")), None).unwrap();
        assert!(
            out.instances[0]
                .toml
                .contains(&format!("\nenable = {enable}")),
            "{line}: {}",
            out.instances[0].toml
        );
    }
    // Not set: greatdb_ha's default is OFF, and the TOML says so.
    let out = import(
        &file("[mysqld]\ngreatdb_ha_mgr_vip_ip = 198.51.100.50\n"),
        None,
    )
    .unwrap();
    assert!(
        out.instances[0]
            .toml
            .contains("enable = false\n# greatdb_ha_enable_mgr_vip was not set")
    );
}

#[test]
fn ipv6_prefix_from_mask() {
    let out = import(
        &file("[mysqld]\ngreatdb_ha_enable_mgr_vip=ON\ngreatdb_ha_mgr_vip_ip=2001:db8::50\ngreatdb_ha_mgr_vip_mask=64\ngreatdb_ha_mgr_vip_nic=eth0\n"),
        None,
    )
    .unwrap();
    let cfg = parses(&out.instances[0].toml);
    assert_eq!(cfg.vip.prefix, 64);
    assert_eq!(
        cfg.mysql.endpoint,
        crate::config::MysqlEndpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 3306
        }
    );
}

const MULTI: &str = "[mysqld]\nloose-greatdb_ha_enable_mgr_vip = ON\nloose-greatdb_ha_mgr_vip_nic = eth0\nloose-greatdb_ha_mgr_vip_mask = 255.255.255.0\n\
[mysqld3306]\nport = 3306\nloose-greatdb_ha_mgr_vip_ip = 198.51.100.50\n\
[mysqld3307]\nport = 3307\nloose-greatdb_ha_mgr_vip_ip = 198.51.100.60\nloose-greatdb_ha_port = 33072\n\
[mysqldump]\nquick\n[client]\nport = 1\n";

#[test]
fn one_toml_per_instance_group() {
    let out = import(&file(MULTI), None).unwrap();
    let names: Vec<&str> = out.instances.iter().map(|i| i.instance.as_str()).collect();
    assert_eq!(names, ["mysqld3306", "mysqld3307"]);
    let a = parses(&out.instances[0].toml);
    let b = parses(&out.instances[1].toml);
    assert_eq!(
        a.mysql.endpoint,
        crate::config::MysqlEndpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 3306
        }
    );
    assert_eq!(
        b.mysql.endpoint,
        crate::config::MysqlEndpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 3307
        }
    );
    assert_eq!(
        (a.vip.label.as_str(), b.vip.label.as_str()),
        ("eth0:0", "eth0:1")
    );
    assert_eq!((a.peer.port, b.peer.port), (33062, 33072));
    assert_eq!(b.vip.write_vip, Some("198.51.100.60".parse().unwrap()));

    let one = import(&file(MULTI), Some("[mysqld3307]")).unwrap();
    assert_eq!(one.instances.len(), 1);
    assert_eq!(one.instances[0].instance, "mysqld3307");
    assert_eq!(parses(&one.instances[0].toml).vip.label, "eth0:0");
    let err = import(&file(MULTI), Some("mysqld9999")).unwrap_err();
    assert!(
        err.contains(
            "no group [mysqld9999] in the file (instance groups found: mysqld3306, mysqld3307)"
        ),
        "{err}"
    );
}

#[test]
fn group_kinds() {
    for g in ["mysqld", "server", "mysqld-8.0", "mysqld-5.7"] {
        assert_eq!(group_kind(g), GroupKind::Shared, "{g}");
    }
    for g in [
        "mysqld3306",
        "mysqld-3306",
        "mysqld_3306",
        "mysqld@replica01",
        "mysqld1",
    ] {
        assert_eq!(group_kind(g), GroupKind::Instance, "{g}");
    }
    for g in [
        "mysqldump",
        "mysqld_safe",
        "mysqld_multi",
        "client",
        "mysql",
    ] {
        assert_eq!(group_kind(g), GroupKind::Other, "{g}");
    }
    assert_eq!(
        instance_name("mysqld@replica.01", &Settings::default()),
        "mysqld-replica-01"
    );
}

#[test]
fn nothing_to_import() {
    let err = import(
        &file("[mysqld]\nport = 3306\n[client]\ngreatdb_ha_port = 1\n"),
        None,
    )
    .unwrap_err();
    assert!(err.contains("no greatdb_ha settings found"), "{err}");
}

#[test]
fn includes_feed_the_import() {
    let dir = mycnf::tests::TempDir::new("import-inc");
    let main = dir.write("my.cnf", "[mysqld]\nport = 3306\n!includedir conf.d\n");
    dir.write("conf.d/ha.cnf", "[mysqld]\nloose-greatdb_ha_enable_mgr_vip = ON\nloose-greatdb_ha_mgr_vip_ip = 198.51.100.50\nloose-greatdb_ha_mgr_vip_mask = 255.255.255.0\nloose-greatdb_ha_mgr_vip_nic = eth0\n");
    let out = import(&mycnf::read(&main).unwrap(), None).unwrap();
    let cfg = parses(&out.instances[0].toml);
    assert_eq!(cfg.vip.write_vip, Some("198.51.100.50".parse().unwrap()));
    assert!(
        out.instances[0]
            .toml
            .contains(&format!("({}:3)", dir.0.join("conf.d/ha.cnf").display()))
    );
}

#[test]
fn control_characters_in_values_never_break_the_printed_file() {
    // Found by the fuzzer: a NUL in a value went into a TOML comment verbatim, and the
    // printed file was not TOML any more.
    let text = "[mysqld@a\u{5}]\nport = 3306\nsocket = /d\u{0}ata/3306/m\n\
                loose-greatdb_ha_enable_mgr_vip = a\u{0}\u{1b}b\n";
    let imported = import(&file(text), None).unwrap();
    let toml = &imported.instances[0].toml;
    match parse(toml) {
        Ok(_) => {}
        Err(e) => assert!(
            e.0.iter().all(|e| !e.message.starts_with("invalid TOML")),
            "{e}\n{toml}"
        ),
    }
    assert!(toml.contains("a\\u{0}\\u{1b}b"), "{toml}");
}
