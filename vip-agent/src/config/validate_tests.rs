//! One test per rule of `validate`, asserting the message a user sees.

use super::*;
use crate::config::{ConfigErrors, parse};

const MYSQL: &str = "[mysql]\nhost = \"127.0.0.1\"\nuser = \"u\"\npassword_file = \"/etc/p\"\n";

/// A config with the [mysql] table filled and `vip` as the [vip] table body.
fn with_vip(vip: &str) -> String {
    format!("{MYSQL}[vip]\nnic = \"eth0\"\n{vip}\n")
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(cfg) => panic!("expected errors, got {cfg:#?}"),
        Err(ConfigErrors(e)) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Exactly one error, starting with `expected`.
fn one_error(text: &str, expected: &str) {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(expected),
        "\n  got: {}\n want: {expected}",
        e[0]
    );
}

#[test]
fn a_minimal_config_gets_the_defaults() {
    let cfg = parse(&with_vip("write_vip = \"198.51.100.50\"\nprefix = 24")).unwrap();
    assert_eq!(cfg.instance, "default");
    assert_eq!(
        cfg.mysql.endpoint,
        MysqlEndpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 3306
        }
    );
    assert_eq!(cfg.mysql.poll_interval, Duration::from_millis(100));
    assert_eq!(cfg.mysql.connect_timeout, Duration::from_millis(1000));
    assert_eq!(cfg.mysql.hung_after_polls, 3);
    assert!(cfg.mysql.tls.is_none());
    assert!(cfg.vip.enable);
    assert_eq!(cfg.vip.label, "eth0:0");
    assert_eq!(cfg.vip.announce_count, 5);
    assert_eq!(cfg.vip.announce_interval, Duration::from_millis(100));
    assert_eq!(cfg.vip.floating_type, FloatingType::ToPrimary);
    assert_eq!(cfg.peer.port, 33062);
    assert_eq!(cfg.peer.key_file, None);
    assert_eq!(cfg.peer.timeout, Duration::from_millis(1000));
    assert_eq!(cfg.peer.switchover_timeout, Duration::from_millis(5000));
    assert_eq!(cfg.peer.max_connections, 64);
    assert_eq!(cfg.peer.max_connections_per_host, 4);
    assert!(cfg.peer.listen.is_unspecified());
    assert_eq!(cfg.peer.allow, None);
    assert_eq!(cfg.peer.resync_interval, Duration::from_millis(20_000));
    assert_eq!(cfg.control.socket, Path::new("/run/vip-agent/default.sock"));
}

#[test]
fn a_full_config_is_read() {
    let text = r#"
instance = "mgr3306"
[mysql]
socket = "/run/mysqld/mysqld.sock"
user = "vip_agent"
password_file = "/etc/vip-agent/mysql.password"
connect_timeout_ms = 500
query_timeout_ms = 700
poll_interval_ms = 200
hung_after_polls = 4
[mysql.tls]
ca = "/etc/ca.pem"
cert = "/etc/c.pem"
key = "/etc/k.pem"
verify_identity = false
[vip]
enable = true
write_vip = "2001:db8::50"
prefix = 64
nic = "eth0"
label = "eth0:vip"
read_vips = ["2001:db8::51", "2001:db8::52"]
floating_type = "to_another_secondary"
announce_count = 3
announce_interval_ms = 250
gateway = "2001:db8::1"
kill_connections_on_demotion = true
[peer]
port = 33063
key_file = "/etc/vip-agent/peer.key"
timeout_ms = 250
switchover_timeout_ms = 3000
max_connections = 8
resync_interval_ms = 60000
[control]
socket = "/run/vip-agent-alt/mgr3306.ctl"
"#;
    let cfg = parse(text).unwrap();
    assert_eq!(
        cfg.mysql.endpoint,
        MysqlEndpoint::Socket("/run/mysqld/mysqld.sock".into())
    );
    assert_eq!(
        cfg.mysql.tls.as_ref().map(|t| t.verify_identity),
        Some(false)
    );
    assert_eq!(cfg.vip.prefix, 64);
    assert_eq!(cfg.vip.read_vips.len(), 2);
    assert_eq!(cfg.vip.floating_type, FloatingType::ToAnotherSecondary);
    assert_eq!(cfg.vip.announce_interval, Duration::from_millis(250));
    assert_eq!(
        cfg.peer.key_file.as_deref(),
        Some(Path::new("/etc/vip-agent/peer.key"))
    );
    assert_eq!(cfg.peer.timeout, Duration::from_millis(250));
    assert_eq!(cfg.peer.switchover_timeout, Duration::from_millis(3000));
    assert_eq!(cfg.peer.max_connections, 8);
    assert_eq!(cfg.peer.resync_interval, Duration::from_secs(60));
    assert_eq!(
        cfg.control.socket,
        Path::new("/run/vip-agent-alt/mgr3306.ctl")
    );
}

#[test]
fn many_errors_are_reported_at_once() {
    let e = errors(&format!(
        "instance = \"a b\"\n{}[vip]\nnic = \"eth0\"\nwrite_vip = \"198.51.100.300\"\nprefix = 33\nannounce_count = 2\n[peer]\nport = 0\n",
        MYSQL.replace("user = \"u\"\n", "")
    ));
    let want = [
        "instance = \"a b\": must be 1 to 64 characters",
        "mysql.user: missing",
        "vip.write_vip = \"198.51.100.300\": not an IPv4 or IPv6 address (greatdb_ha_mgr_vip_ip)",
        "vip.prefix = 33: must be between 1 and 32 (greatdb_ha_mgr_vip_mask)",
        "vip.announce_count = 2: must be between 3 and 20 (greatdb_ha_send_arp_packge_times)",
        "peer.port = 0: must be between 1 and 65535 (greatdb_ha_port)",
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (got, want) in e.iter().zip(want) {
        assert!(got.starts_with(want), "\n  got: {got}\n want: {want}");
    }
}

#[test]
fn announce_count_range() {
    one_error(
        &with_vip("write_vip = \"198.51.100.50\"\nprefix = 24\nannounce_count = 25"),
        "vip.announce_count = 25: must be between 3 and 20 (greatdb_ha_send_arp_packge_times)",
    );
    assert!(
        parse(&with_vip(
            "write_vip = \"198.51.100.50\"\nprefix = 24\nannounce_count = 20"
        ))
        .is_ok()
    );
    assert!(
        parse(&with_vip(
            "write_vip = \"198.51.100.50\"\nprefix = 24\nannounce_count = 3"
        ))
        .is_ok()
    );
}

#[test]
fn mysql_endpoint_rules() {
    one_error(
        &format!("{MYSQL}socket = \"/s\"\n[vip]\nenable = false"),
        "mysql.socket: set exactly one of mysql.host (with mysql.port) and mysql.socket, not both",
    );
    one_error(
        &format!(
            "{}[vip]\nenable = false",
            MYSQL.replace("host = \"127.0.0.1\"\n", "")
        ),
        "mysql.host: missing; set mysql.host (with mysql.port) or mysql.socket",
    );
    one_error(
        &format!("{MYSQL}port = 0\n[vip]\nenable = false"),
        "mysql.port = 0: must be between 1 and 65535",
    );
    one_error(
        &format!(
            "{}socket = \"/s\"\nport = 3306\n[vip]\nenable = false",
            MYSQL.replace("host = \"127.0.0.1\"\n", "")
        ),
        "mysql.port = 3306: only used with mysql.host, not with mysql.socket",
    );
    one_error(
        &format!(
            "{}socket = \"run/s\"\n[vip]\nenable = false",
            MYSQL.replace("host = \"127.0.0.1\"\n", "")
        ),
        "mysql.socket = \"run/s\": must be an absolute path",
    );
    one_error(
        &format!(
            "{}[vip]\nenable = false",
            MYSQL.replace("password_file = \"/etc/p\"\n", "")
        ),
        "mysql.password_file: missing",
    );
    one_error(
        &format!("{MYSQL}[mysql.tls]\ncert = \"/c\"\n[vip]\nenable = false"),
        "mysql.tls.key: missing; mysql.tls.cert is set",
    );
}

#[test]
fn zero_intervals_and_timeouts() {
    for key in [
        "poll_interval_ms",
        "connect_timeout_ms",
        "query_timeout_ms",
        "hung_after_polls",
    ] {
        let e = errors(&format!("{MYSQL}{key} = 0\n[vip]\nenable = false"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(&format!("mysql.{key} = 0: must be between 1 and ")),
            "{e:?}"
        );
    }
    one_error(
        &with_vip("write_vip = \"198.51.100.50\"\nprefix = 24\nannounce_interval_ms = 0"),
        "vip.announce_interval_ms = 0: must be between 1 and 10000",
    );
}

#[test]
fn reannounce_is_off_unless_set_and_at_least_a_second() {
    let vip = "write_vip = \"198.51.100.50\"\nprefix = 24";
    let at = |extra: &str| parse(&with_vip(&format!("{vip}\n{extra}"))).unwrap();
    assert_eq!(at("").vip.reannounce_interval, None);
    assert_eq!(
        at("reannounce_interval_ms = 0").vip.reannounce_interval,
        None
    );
    assert_eq!(
        at("reannounce_interval_ms = 30000").vip.reannounce_interval,
        Some(Duration::from_secs(30))
    );
    one_error(
        &with_vip(&format!("{vip}\nreannounce_interval_ms = 500")),
        "vip.reannounce_interval_ms = 500: must be between 1000 and 86400000",
    );
}

#[test]
fn instance_charset() {
    assert!(
        parse(&format!(
            "instance = \"mgr_3306-a\"\n{MYSQL}[vip]\nenable = false"
        ))
        .is_ok()
    );
    one_error(
        &format!("instance = \"\"\n{MYSQL}[vip]\nenable = false"),
        "instance = \"\": must be 1 to 64 characters",
    );
    one_error(
        &format!("instance = \"a/b\"\n{MYSQL}[vip]\nenable = false"),
        "instance = \"a/b\":",
    );
    one_error(
        &format!(
            "instance = \"{}\"\n{MYSQL}[vip]\nenable = false",
            "a".repeat(65)
        ),
        "instance = \"aaaa",
    );
}

#[test]
fn enable_needs_a_vip() {
    one_error(
        &format!("{MYSQL}[vip]\nenable = true"),
        "vip.enable = true: needs vip.write_vip or vip.read_vips",
    );
    one_error(
        MYSQL,
        "vip.enable = true: needs vip.write_vip or vip.read_vips",
    );
    assert!(parse(&format!("{MYSQL}[vip]\nenable = false")).is_ok());
    // Read VIPs alone are enough.
    assert!(parse(&with_vip("read_vips = [\"198.51.100.51\"]\nprefix = 24")).is_ok());
}

#[test]
fn mask_conversion() {
    assert_eq!(mask_to_prefix("255.255.255.0"), Ok(24));
    assert_eq!(mask_to_prefix("255.255.255.255"), Ok(32));
    assert_eq!(mask_to_prefix("255.255.240.0"), Ok(20));
    assert_eq!(mask_to_prefix("128.0.0.0"), Ok(1));
    assert!(
        mask_to_prefix("255.0.255.0")
            .unwrap_err()
            .contains("not a contiguous mask")
    );
    assert!(
        mask_to_prefix("0.0.0.255")
            .unwrap_err()
            .contains("not a contiguous mask")
    );
    assert!(
        mask_to_prefix("0.0.0.0")
            .unwrap_err()
            .contains("must not be 0.0.0.0")
    );
    assert!(
        mask_to_prefix("24")
            .unwrap_err()
            .contains("not a dotted IPv4 mask")
    );
    let cfg = parse(&with_vip(
        "write_vip = \"198.51.100.50\"\nmask = \"255.255.255.128\"",
    ))
    .unwrap();
    assert_eq!(cfg.vip.prefix, 25);
}

#[test]
fn mask_and_prefix_rules() {
    let v4 = "write_vip = \"198.51.100.50\"\n";
    one_error(
        &with_vip(&format!("{v4}mask = \"255.0.255.0\"")),
        "vip.mask = \"255.0.255.0\": not a contiguous mask",
    );
    one_error(
        &with_vip(&format!("{v4}prefix = 24\nmask = \"255.255.255.0\"")),
        "vip.mask: set only one of vip.prefix and vip.mask",
    );
    one_error(
        &with_vip(&format!("{v4}prefix = 0")),
        "vip.prefix = 0: must be between 1 and 32 for IPv4",
    );
    one_error(
        &with_vip(v4),
        "vip.prefix: missing; set vip.prefix (e.g. 24) or, for IPv4, vip.mask",
    );
    let v6 = "write_vip = \"2001:db8::50\"\n";
    assert_eq!(
        parse(&with_vip(&format!("{v6}prefix = 128")))
            .unwrap()
            .vip
            .prefix,
        128
    );
    one_error(
        &with_vip(&format!("{v6}prefix = 129")),
        "vip.prefix = 129: must be between 1 and 128 for IPv6",
    );
    one_error(
        &with_vip(&format!("{v6}mask = \"255.255.255.0\"")),
        "vip.mask = \"255.255.255.0\": a dotted mask is for IPv4 VIPs only; use vip.prefix",
    );
}

#[test]
fn mixed_families() {
    one_error(
        &with_vip("write_vip = \"198.51.100.50\"\nprefix = 24\nread_vips = [\"2001:db8::51\"]"),
        "vip.read_vips[0] = \"2001:db8::51\": IPv6, but vip.write_vip is IPv4; the VIPs and the gateway must all be IPv4 or all IPv6",
    );
    one_error(
        &with_vip("write_vip = \"2001:db8::50\"\nprefix = 64\ngateway = \"198.51.100.1\""),
        "vip.gateway = \"198.51.100.1\": IPv4, but vip.write_vip is IPv6",
    );
    one_error(
        &with_vip("read_vips = [\"2001:db8::51\", \"198.51.100.1\"]\nprefix = 64"),
        "vip.read_vips[1] = \"198.51.100.1\": IPv4, but vip.read_vips[0] is IPv6",
    );
}

#[test]
fn duplicates() {
    one_error(
        &with_vip("write_vip = \"198.51.100.50\"\nprefix = 24\nread_vips = [\"198.51.100.50\"]"),
        "vip.read_vips[0] = \"198.51.100.50\": duplicate of vip.write_vip",
    );
    one_error(
        &with_vip(
            "prefix = 24\nread_vips = [\"198.51.100.51\", \"198.51.100.52\", \"198.51.100.51\"]",
        ),
        "vip.read_vips[2] = \"198.51.100.51\": duplicate of vip.read_vips[0]",
    );
    one_error(
        &with_vip("write_vip = \"198.51.100.50\"\nprefix = 24\ngateway = \"198.51.100.50\""),
        "vip.gateway = \"198.51.100.50\": same as vip.write_vip; the gateway must not be a VIP",
    );
}

#[test]
fn only_unicast_vips() {
    for (addr, prefix, what) in [
        ("0.0.0.0", 24, "the unspecified address"),
        ("255.255.255.255", 32, "the broadcast address"),
        ("224.0.0.5", 24, "a multicast address"),
        ("127.0.0.2", 24, "a loopback address"),
        ("169.254.1.1", 24, "a link-local address"),
        ("::", 64, "the unspecified address"),
        ("ff02::1", 64, "a multicast address"),
        ("::1", 64, "a loopback address"),
        ("fe80::1", 64, "a link-local address"),
    ] {
        one_error(
            &with_vip(&format!("write_vip = \"{addr}\"\nprefix = {prefix}")),
            &format!("vip.write_vip = \"{addr}\": is {what}; must be a unicast address"),
        );
    }
    one_error(
        &with_vip("write_vip = \"198.51.100.255\"\nprefix = 24"),
        "vip.write_vip = \"198.51.100.255\": is the broadcast address of 198.51.100.0/24",
    );
    one_error(
        &with_vip("write_vip = \"198.51.100.0\"\nprefix = 24"),
        "vip.write_vip = \"198.51.100.0\": is the network address of 198.51.100.0/24",
    );
    assert!(parse(&with_vip("write_vip = \"198.51.100.0\"\nprefix = 31")).is_ok());
}

#[test]
fn label_rules() {
    assert_eq!(label_rule("eth0:0", "eth0"), Ok(()));
    assert_eq!(label_rule("eth0:vip12345", "eth0"), Ok(()));
    assert!(
        label_rule("eth1:0", "eth0")
            .unwrap_err()
            .contains("must start with `eth0:`")
    );
    assert!(
        label_rule("eth0", "eth0")
            .unwrap_err()
            .contains("must start with `eth0:`")
    );
    assert!(
        label_rule("eth00", "eth0")
            .unwrap_err()
            .contains("must start with `eth0:`")
    );
    assert!(
        label_rule("eth0:", "eth0")
            .unwrap_err()
            .contains("needs a suffix")
    );
    assert!(
        label_rule("eth0:a b", "eth0")
            .unwrap_err()
            .contains("must not contain")
    );
    assert!(
        label_rule("eth0:0123456789a", "eth0")
            .unwrap_err()
            .contains("16 bytes; labels are at most 15 (IFNAMSIZ-1)")
    );
    one_error(
        &with_vip("write_vip = \"198.51.100.50\"\nprefix = 24\nlabel = \"eth1:0\""),
        "vip.label = \"eth1:0\": must start with `eth0:`",
    );
    // A 14-byte NIC leaves no room for the default `<nic>:0`.
    one_error(
        &format!(
            "{MYSQL}[vip]\nnic = \"enp0s31f6abcde\"\nwrite_vip = \"198.51.100.50\"\nprefix = 24"
        ),
        "vip.label = \"enp0s31f6abcde:0\": the default label is 16 bytes, at most 15",
    );
}

#[test]
fn nic_rules() {
    one_error(
        &format!("{MYSQL}[vip]\nwrite_vip = \"198.51.100.50\"\nprefix = 24"),
        "vip.nic: missing; the interface the VIPs go on, e.g. \"eth0\" (greatdb_ha_mgr_vip_nic)",
    );
    assert!(
        interface_name("eth0:0")
            .unwrap_err()
            .contains("an alias label goes in vip.label")
    );
    assert!(
        interface_name("a23456789012345x")
            .unwrap_err()
            .contains("16 bytes; interface names are at most 15")
    );
    assert!(interface_name("").is_err());
    assert_eq!(interface_name("enp0s31f6"), Ok(()));
}

#[test]
fn floating_type() {
    one_error(
        &with_vip("write_vip = \"198.51.100.50\"\nprefix = 24\nfloating_type = \"ANY\""),
        "vip.floating_type = \"ANY\": must be TO_PRIMARY or TO_ANOTHER_SECONDARY (greatdb_ha_mgr_read_vip_floating_type)",
    );
}

#[test]
fn wrong_types_carry_the_key_and_location() {
    let e = errors(&with_vip(
        "write_vip = 5\nprefix = 24\nread_vips = \"198.51.100.51\"",
    ));
    assert_eq!(e.len(), 3, "{e:#?}"); // two type errors, and enable has no VIP left
    assert!(
        e[0].starts_with(
            "vip.write_vip (line 7, column 13): invalid type: integer `5`, expected a string"
        ),
        "{e:#?}"
    );
    assert!(e[1].starts_with("vip.read_vips (line 9, column 13): invalid type: string \"198.51.100.51\", expected a sequence"), "{e:#?}");
}

/// A config with no VIP and `extra` appended (a [peer] or [control] table).
fn without_vip(extra: &str) -> String {
    format!("{MYSQL}[vip]\nenable = false\n{extra}\n")
}

#[test]
fn peer_ranges() {
    for (key, low, high) in [
        ("timeout_ms", 100, 10_000),
        ("switchover_timeout_ms", 500, 60_000),
        ("max_connections", 1, 1024),
        ("resync_interval_ms", 1000, 600_000),
    ] {
        for bad in [low - 1, high + 1] {
            one_error(
                &without_vip(&format!("[peer]\n{key} = {bad}")),
                &format!("peer.{key} = {bad}: must be between {low} and {high}"),
            );
        }
        // The bounds themselves are allowed (switchover_timeout_ms >= timeout_ms aside).
        let timeout = if key == "switchover_timeout_ms" {
            "\ntimeout_ms = 100"
        } else {
            ""
        };
        // At least one connection per host: the per-host cap follows a small total.
        let per_host = if key == "max_connections" {
            "\nmax_connections_per_host = 1"
        } else {
            ""
        };
        for good in [low, high] {
            let text = without_vip(&format!("[peer]\n{key} = {good}{timeout}{per_host}"));
            if key == "timeout_ms" && good > 5000 {
                continue; // above the default switchover wait; checked below
            }
            assert!(parse(&text).is_ok(), "{text}: {:?}", parse(&text));
        }
    }
    let cfg = parse(&without_vip(
        "[peer]\ntimeout_ms = 10000\nswitchover_timeout_ms = 10000",
    ))
    .unwrap();
    assert_eq!(cfg.peer.timeout, cfg.peer.switchover_timeout);
}

#[test]
fn who_may_reach_the_peer_port() {
    let cfg = parse(&without_vip(
        "[peer]\nlisten = \"198.51.100.11\"\nallow = [\"198.51.100.0/24\", \"2001:db8::11\", \
         \"198.51.100.77/24\"]\nmax_connections_per_host = 2",
    ))
    .unwrap();
    assert_eq!(cfg.peer.listen, "198.51.100.11".parse::<IpAddr>().unwrap());
    let allow: Vec<String> = cfg
        .peer
        .allow
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    // A network written with host bits is taken as the network.
    assert_eq!(
        allow,
        ["198.51.100.0/24", "2001:db8::11/128", "198.51.100.0/24"]
    );
    assert_eq!(cfg.peer.max_connections_per_host, 2);
    one_error(
        &without_vip("[peer]\nlisten = \"198.51.100.11:33062\""),
        "peer.listen = \"198.51.100.11:33062\": must be an IP address of this host",
    );
    one_error(
        &without_vip("[peer]\nallow = []"),
        "peer.allow = []: an empty list lets no member connect",
    );
    one_error(
        &without_vip("[peer]\nallow = [\"198.51.100.0/24\", \"db2.example\"]"),
        "peer.allow[1] = \"db2.example\": must be an IP address or a network",
    );
    one_error(
        &without_vip("[peer]\nmax_connections = 8\nmax_connections_per_host = 9"),
        "peer.max_connections_per_host = 9: must be at most peer.max_connections (8)",
    );
    one_error(
        &without_vip("[peer]\nmax_connections_per_host = 0"),
        "peer.max_connections_per_host = 0: must be between 1 and 1024",
    );
}

#[test]
fn switchover_wait_covers_one_exchange() {
    one_error(
        &without_vip("[peer]\ntimeout_ms = 2000\nswitchover_timeout_ms = 1500"),
        "peer.switchover_timeout_ms = 1500: must be at least peer.timeout_ms (2000); the wait must cover",
    );
    one_error(
        &without_vip("[peer]\ntimeout_ms = 8000"),
        "peer.switchover_timeout_ms: its default 5000 is less than peer.timeout_ms (8000); set it to at least 8000",
    );
    // An invalid value is reported once, not compared as its default.
    one_error(
        &without_vip("[peer]\ntimeout_ms = 20000\nswitchover_timeout_ms = 600"),
        "peer.timeout_ms = 20000: must be between 100 and 10000",
    );
}

#[test]
fn control_socket_default_follows_the_instance() {
    let cfg = parse(&format!("instance = \"mgr3307\"\n{}", without_vip(""))).unwrap();
    assert_eq!(cfg.control.socket, Path::new("/run/vip-agent/mgr3307.sock"));
    assert_eq!(
        default_control_socket("a"),
        Path::new("/run/vip-agent/a.sock")
    );
}

#[test]
fn control_socket_rules() {
    one_error(
        &without_vip("[control]\nsocket = \"run/a.sock\""),
        "control.socket = \"run/a.sock\": must be an absolute path",
    );
    one_error(
        &without_vip("[control]\nsocket = \"/run/vip-agent/\""),
        "control.socket = \"/run/vip-agent/\": names a folder",
    );
    let long = format!("/run/{}.sock", "a".repeat(100));
    one_error(
        &without_vip(&format!("[control]\nsocket = \"{long}\"")),
        "control.socket = \"/run/aaaa",
    );
    assert!(
        errors(&without_vip(&format!("[control]\nsocket = \"{long}\"")))[0]
            .ends_with("110 bytes; a unix socket path is at most 107")
    );
    one_error(
        &format!(
            "{}socket = \"/run/mysqld/mysqld.sock\"\n[vip]\nenable = false\n[control]\nsocket = \"/run/mysqld/mysqld.sock\"",
            MYSQL.replace("host = \"127.0.0.1\"\n", "")
        ),
        "control.socket = \"/run/mysqld/mysqld.sock\": same as mysql.socket",
    );
    one_error(
        &without_vip("[control]\nsockett = \"/run/a.sock\""),
        "control.sockett (line 8, column 1): unknown key; did you mean `socket`?",
    );
    one_error(
        &without_vip("[control]\nsocket = 5"),
        "control.socket (line 8, column 10): invalid type: integer `5`, expected a string",
    );
}

#[test]
fn the_control_socket_survives_problems_elsewhere() {
    use crate::config::control_socket;
    // A bad VIP and an unknown key elsewhere do not hide the socket from the CLI verbs.
    let text = format!(
        "instance = \"mgr3306\"\n{}",
        with_vip("write_vip = \"198.51.100.300\"\nprefix = 24\nbogus = 1")
    );
    assert!(parse(&text).is_err());
    assert_eq!(
        control_socket(&text).unwrap(),
        Path::new("/run/vip-agent/mgr3306.sock")
    );
    let text = format!(
        "{}[control]\nsocket = \"/tmp/x.sock\"\n",
        with_vip("prefix = 99")
    );
    assert_eq!(control_socket(&text).unwrap(), Path::new("/tmp/x.sock"));
    // Problems with what names the socket do matter.
    let e = control_socket("instance = \"a b\"\n").unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.0[0].to_string().starts_with("instance = \"a b\""), "{e}");
    let e = control_socket("[control]\nsocket = \"x.sock\"\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("control.socket = \"x.sock\": must be an absolute path"),
        "{e}"
    );
    let e = control_socket("[controll]\n").unwrap_err();
    assert!(e.to_string().contains("did you mean `control`?"), "{e}");
    let e = control_socket("[control\n").unwrap_err();
    assert!(e.to_string().contains("invalid TOML"), "{e}");
}

#[test]
fn the_packaged_example_is_valid() {
    let cfg = parse(include_str!("../../../packaging/vip-agent.example.toml"))
        .unwrap_or_else(|e| panic!("packaging/vip-agent.example.toml:\n{e}"));
    assert_eq!(
        cfg.control.socket,
        default_control_socket(&cfg.instance),
        "the example shows the default socket"
    );
}

#[test]
fn the_packaged_metrics_example_is_valid_once_uncommented() {
    let text = include_str!("../../../packaging/vip-agent.example.toml")
        .replace("# [metrics]", "[metrics]")
        .replace("# listen = ", "listen = ");
    let cfg = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.metrics.unwrap().listen,
        std::net::SocketAddr::from(([127, 0, 0, 1], EXAMPLE_METRICS_PORT))
    );
}

#[test]
fn the_datapath_defaults_and_its_client_port() {
    let cfg = parse(&with_vip("write_vip = \"198.51.100.50\"\nprefix = 24")).unwrap();
    let d = &cfg.datapath;
    assert!(d.guard && d.track && d.require_reset);
    assert_eq!(d.xdp_mode, XdpMode::Auto);
    assert_eq!(d.guard_window, Duration::from_secs(60));
    assert_eq!(d.tracked_connections, 65_536);
    // The kill-all option resets mysqld's clients: its TCP port unless told otherwise.
    assert_eq!(d.client_port, 3306);
    let text = "[mysql]\nhost = \"127.0.0.1\"\nport = 3307\nuser = \"u\"\npassword_file = \"/etc/p\"\n\
         [vip]\nnic = \"eth0\"\nwrite_vip = \"198.51.100.50\"\nprefix = 24\n\
         [datapath]\nxdp_mode = \"generic\"\nguard_window_ms = 5000\nguard = false\n";
    let cfg = parse(text).unwrap();
    assert_eq!(cfg.datapath.client_port, 3307);
    assert_eq!(cfg.datapath.xdp_mode, XdpMode::Generic);
    assert_eq!(cfg.datapath.guard_window, Duration::from_secs(5));
    assert!(!cfg.datapath.guard);
}

#[test]
fn bad_datapath_settings_name_the_fix() {
    let base = with_vip("write_vip = \"198.51.100.50\"\nprefix = 24");
    one_error(
        &format!("{base}[datapath]\nxdp_mode = \"fast\"\n"),
        "datapath.xdp_mode = \"fast\": must be \"auto\", \"native\" (driver mode) or \"generic\"",
    );
    one_error(
        &format!("{base}[datapath]\nguard_window_ms = 10\n"),
        "datapath.guard_window_ms = 10: must be between 1000 and 3600000",
    );
    one_error(
        &format!("{base}[datapath]\ntracked_connections = 10\n"),
        "datapath.tracked_connections = 10: must be between 1024 and 4194304",
    );
    one_error(
        &format!("{base}[datapath]\ntrack_connections = true\n"),
        "datapath.track_connections",
    );
}

#[test]
fn metrics_are_off_without_the_table_and_listen_where_told() {
    let base = with_vip("write_vip = \"198.51.100.50\"\nprefix = 24");
    assert_eq!(parse(&base).unwrap().metrics, None);
    for (text, want) in [
        ("127.0.0.1:9748", "127.0.0.1:9748"),
        ("0.0.0.0:9100", "0.0.0.0:9100"),
        ("[::1]:9748", "[::1]:9748"),
        ("[2001:db8::7]:9748", "[2001:db8::7]:9748"),
    ] {
        let cfg = parse(&format!("{base}[metrics]\nlisten = \"{text}\"\n")).unwrap();
        assert_eq!(
            cfg.metrics.unwrap().listen,
            want.parse::<std::net::SocketAddr>().unwrap()
        );
    }
}

#[test]
fn bad_metrics_settings_name_the_key_and_the_fix() {
    let base = with_vip("write_vip = \"198.51.100.50\"\nprefix = 24");
    let example = "e.g. \"127.0.0.1:9748\" or \"[::1]:9748\"";
    one_error(
        &format!("{base}[metrics]\n"),
        &format!(
            "metrics.listen: missing; the address and port the Prometheus endpoint listens on, \
             {example} (remove the [metrics] table to serve no metrics)"
        ),
    );
    for bad in [
        "localhost:9748",
        "127.0.0.1",
        "::1:9748",
        "127.0.0.1:99999",
        "",
    ] {
        one_error(
            &format!("{base}[metrics]\nlisten = \"{bad}\"\n"),
            &format!(
                "metrics.listen = \"{bad}\": must be an IP address and a port, {example} \
                 (IPv6 in brackets; host names are not resolved)"
            ),
        );
    }
    one_error(
        &format!("{base}[metrics]\nlisten = \"127.0.0.1:0\"\n"),
        &format!("metrics.listen = \"127.0.0.1:0\": needs a fixed port (1-65535), {example}"),
    );
    one_error(
        &format!("{base}[metrics]\nlisten = \"[::1]:33062\"\n"),
        "metrics.listen = \"[::1]:33062\": port 33062 is peer.port, which the peer server \
         listens on at every address; pick another port",
    );
    one_error(
        &format!("{base}[metrics]\nlisten = \"198.51.100.50:9748\"\n"),
        &format!(
            "metrics.listen = \"198.51.100.50:9748\": 198.51.100.50 is a VIP, which moves \
             between the nodes; listen on an address of the host itself, {example}"
        ),
    );
    let e = errors(&format!("{base}[metrics]\nlisten = 9748\n"));
    assert_eq!(
        e[0],
        "metrics.listen (line 10, column 10): invalid type: integer `9748`, expected a string",
    );
    one_error(
        &format!("{base}[metrics]\nlisten = \"127.0.0.1:9748\"\npath = \"/metrics\"\n"),
        "metrics.path (line 11, column 1): unknown key; allowed here: listen",
    );
    let e = errors(&format!("{base}[metrics]\nlisen = \"127.0.0.1:9748\"\n"));
    assert_eq!(
        e[0],
        "metrics.lisen (line 10, column 1): unknown key; did you mean `listen`?"
    );
    assert!(e[1].starts_with("metrics.listen: missing"), "{e:?}");
    one_error(
        &format!("metrics = \"127.0.0.1:9748\"\n{base}"),
        "metrics (line 1, column 11): expected a table ([metrics]), found string",
    );
    // Misplaced, the key is found where it belongs.
    one_error(
        &format!("{base}listen = \"127.0.0.1:9748\"\n"),
        "vip.listen (line 9, column 1): unknown key; did you mean `peer.listen` (in [peer]) or \
         `metrics.listen` (in [metrics])?",
    );
}

#[test]
fn coordination_defaults_and_rules() {
    let base = with_vip("write_vip = \"198.51.100.50\"\nprefix = 24");
    let cfg = parse(&base).unwrap();
    assert_eq!(cfg.coordination.mode, CoordinationMode::Handshake);
    assert_eq!(cfg.coordination.lease, Duration::from_millis(3000));
    assert_eq!(cfg.coordination.renew, Duration::from_millis(1000));
    let lease = format!("{base}\n[coordination]\nmode = \"lease\"\n");
    assert_eq!(
        parse(&lease).unwrap().coordination.mode,
        CoordinationMode::Lease
    );
    one_error(
        &format!("{base}\n[coordination]\nmode = \"raft\"\n"),
        "coordination.mode = \"raft\": must be \"handshake\"",
    );
    // The default query timeout is 1 s: 2 × 1000 + 1000 ms.
    one_error(
        &format!("{base}\n[coordination]\nmode = \"lease\"\nlease_ms = 2500\n"),
        "coordination.lease_ms = 2500: must be at least 2 × coordination.renew_ms",
    );
    one_error(
        &format!("{base}\n[coordination]\nrenew_ms = 10\n"),
        "coordination.renew_ms = 10: must be between 50 and 20000",
    );
    let disabled = with_vip("enable = false\nwrite_vip = \"198.51.100.50\"\nprefix = 24");
    one_error(
        &format!("{disabled}\n[coordination]\nmode = \"lease\"\n"),
        "vip.enable = false: coordination.mode = \"lease\" does not support",
    );
}
