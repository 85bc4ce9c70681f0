//! The rules: [`RawConfig`] → [`Config`], every problem collected. Pure: the host and the
//! files named are checked elsewhere. A bad value is replaced by its default so the
//! checks after it still run and report their own problems.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{
    RawConfig, RawControl, RawCoordination, RawDatapath, RawMetrics, RawMysql, RawPeer, RawVip,
};
use super::{
    Config, ConfigError, ControlConfig, CoordinationConfig, CoordinationMode, DatapathConfig,
    FloatingType, MetricsConfig, MysqlConfig, MysqlEndpoint, PeerConfig, TlsConfig, VipConfig,
    XdpMode, quote,
};

pub const DEFAULT_INSTANCE: &str = "default";
pub const DEFAULT_MYSQL_PORT: u16 = 3306;
pub const DEFAULT_PEER_PORT: u16 = 33062;
pub const DEFAULT_ANNOUNCE_COUNT: u32 = 5;
pub const ANNOUNCE_COUNT_RANGE: (i64, i64) = (3, 20);
pub const DEFAULT_ANNOUNCE_INTERVAL_MS: u64 = 100;
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 100;
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_HUNG_AFTER_POLLS: u32 = 3;
pub const DEFAULT_PEER_TIMEOUT_MS: u64 = 1000;
pub const PEER_TIMEOUT_RANGE: (i64, i64) = (100, 10_000);
pub const DEFAULT_SWITCHOVER_TIMEOUT_MS: u64 = 5000;
pub const SWITCHOVER_TIMEOUT_RANGE: (i64, i64) = (500, 60_000);
/// Room for every other member of a 9-member group at the per-host cap, and more.
pub const DEFAULT_PEER_MAX_CONNECTIONS: u32 = 64;
pub const PEER_MAX_CONNECTIONS_RANGE: (i64, i64) = (1, 1024);
/// A member opens one connection at a time to another; 4 leaves room for retries.
pub const DEFAULT_PEER_MAX_PER_HOST: u32 = 4;
pub const PEER_MAX_PER_HOST_RANGE: (i64, i64) = (1, 1024);
/// greatdb_ha re-sends the placement every 20 s.
pub const DEFAULT_RESYNC_INTERVAL_MS: u64 = 20_000;
pub const RESYNC_INTERVAL_RANGE: (i64, i64) = (1000, 600_000);
/// The control socket's folder; the file is `<instance>.sock`.
pub const CONTROL_SOCKET_DIR: &str = "/run/vip-agent";
/// `sun_path` holds 108 bytes with the terminating NUL.
pub const SOCKET_PATH_MAX: usize = 107;
/// Interface names and labels are at most IFNAMSIZ-1 bytes.
pub const IFNAME_MAX: usize = 15;
/// Upper bound of every `*_ms` setting: one hour is beyond any sane value.
const MAX_MS: i64 = 3_600_000;

/// Checks everything that needs no I/O. The config is best-effort when errors are found.
pub fn validate(raw: &RawConfig) -> (Config, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let instance = instance(raw.instance.as_deref(), &mut errors);
    let mysql = mysql(&raw.mysql, &mut errors);
    let vip = vip(&raw.vip, &mut errors);
    let peer = peer(&raw.peer, &mut errors);
    let control = control(&raw.control, &instance, &mysql.endpoint, &mut errors);
    let datapath = datapath(&raw.datapath, &mysql.endpoint, &mut errors);
    let coordination = coordination(&raw.coordination, &mysql, &vip, &mut errors);
    let metrics = raw
        .metrics
        .as_ref()
        .and_then(|m| metrics(m, peer.port, &vip, &mut errors));
    (
        Config {
            instance,
            mysql,
            vip,
            peer,
            control,
            datapath,
            coordination,
            metrics,
        },
        errors,
    )
}

fn instance(value: Option<&str>, errors: &mut Vec<ConfigError>) -> String {
    let Some(name) = value else {
        return DEFAULT_INSTANCE.to_string();
    };
    if is_instance_name(name) {
        name.to_string()
    } else {
        errors.push(ConfigError::value(
            "instance",
            quote(name),
            "must be 1 to 64 characters from A-Z a-z 0-9 _ -",
        ));
        DEFAULT_INSTANCE.to_string()
    }
}

pub fn is_instance_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn mysql(raw: &RawMysql, errors: &mut Vec<ConfigError>) -> MysqlConfig {
    let endpoint = match (&raw.host, &raw.socket) {
        (Some(host), None) => {
            if host.is_empty() || host.chars().any(char::is_whitespace) {
                errors.push(ConfigError::value(
                    "mysql.host",
                    quote(host),
                    "must be a host name or IP address",
                ));
            }
            let port = port("mysql.port", raw.port, DEFAULT_MYSQL_PORT, errors);
            MysqlEndpoint::Tcp {
                host: host.clone(),
                port,
            }
        }
        (None, Some(socket)) => {
            if let Some(port) = raw.port {
                errors.push(ConfigError::value(
                    "mysql.port",
                    port,
                    "only used with mysql.host, not with mysql.socket",
                ));
            }
            MysqlEndpoint::Socket(absolute_path("mysql.socket", socket, errors))
        }
        (Some(_), Some(_)) => {
            errors.push(ConfigError::key(
                "mysql.socket",
                "set exactly one of mysql.host (with mysql.port) and mysql.socket, not both",
            ));
            MysqlEndpoint::Tcp {
                host: String::new(),
                port: DEFAULT_MYSQL_PORT,
            }
        }
        (None, None) => {
            errors.push(ConfigError::key(
                "mysql.host",
                "missing; set mysql.host (with mysql.port) or mysql.socket",
            ));
            MysqlEndpoint::Tcp {
                host: String::new(),
                port: DEFAULT_MYSQL_PORT,
            }
        }
    };
    let user = match raw.user.as_deref() {
        None => {
            errors.push(ConfigError::key(
                "mysql.user",
                "missing; the MySQL account vip-agent polls with",
            ));
            String::new()
        }
        Some("") => {
            errors.push(ConfigError::value(
                "mysql.user",
                "\"\"",
                "must not be empty",
            ));
            String::new()
        }
        Some(user) => user.to_string(),
    };
    let password_file = match &raw.password_file {
        None => {
            errors.push(ConfigError::key(
                "mysql.password_file",
                "missing; a file whose first line is the password of mysql.user",
            ));
            PathBuf::new()
        }
        Some(path) => absolute_path("mysql.password_file", path, errors),
    };
    let tls = raw.tls.as_ref().map(|t| {
        let mut path = |key: &str, value: &Option<String>| value.as_ref().map(|p| absolute_path(key, p, errors));
        let tls = TlsConfig {
            ca: path("mysql.tls.ca", &t.ca),
            cert: path("mysql.tls.cert", &t.cert),
            key: path("mysql.tls.key", &t.key),
            verify_identity: t.verify_identity.unwrap_or(true),
        };
        if t.cert.is_some() != t.key.is_some() {
            let (set, missing) = if t.cert.is_some() { ("cert", "key") } else { ("key", "cert") };
            errors.push(ConfigError::key(
                format!("mysql.tls.{missing}"),
                format!("missing; mysql.tls.{set} is set, and a client certificate needs both cert and key"),
            ));
        }
        tls
    });
    MysqlConfig {
        endpoint,
        user,
        password_file,
        tls,
        connect_timeout: millis(
            "mysql.connect_timeout_ms",
            raw.connect_timeout_ms,
            DEFAULT_TIMEOUT_MS,
            (1, MAX_MS),
            errors,
        ),
        query_timeout: millis(
            "mysql.query_timeout_ms",
            raw.query_timeout_ms,
            DEFAULT_TIMEOUT_MS,
            (1, MAX_MS),
            errors,
        ),
        poll_interval: millis(
            "mysql.poll_interval_ms",
            raw.poll_interval_ms,
            DEFAULT_POLL_INTERVAL_MS,
            (1, MAX_MS),
            errors,
        ),
        hung_after_polls: int(
            "mysql.hung_after_polls",
            raw.hung_after_polls,
            DEFAULT_HUNG_AFTER_POLLS,
            (1, 1000),
            errors,
        ),
    }
}

fn vip(raw: &RawVip, errors: &mut Vec<ConfigError>) -> VipConfig {
    let write_vip = raw
        .write_vip
        .as_ref()
        .and_then(|s| address("vip.write_vip", s, errors));
    let read_vips: Vec<(String, IpAddr)> = raw
        .read_vips
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, s)| {
            let key = format!("vip.read_vips[{i}]");
            address(&key, s, errors).map(|a| (key, a))
        })
        .collect();
    let gateway = raw
        .gateway
        .as_ref()
        .and_then(|s| address("vip.gateway", s, errors));

    // One family for everything: the first address sets it.
    let mut vips: Vec<(String, IpAddr)> = write_vip
        .map(|a| ("vip.write_vip".to_string(), a))
        .into_iter()
        .collect();
    vips.extend(read_vips.iter().cloned());
    let family = vips.first().map(|(k, a)| (k.clone(), a.is_ipv4()));
    let same_family = |key: &str, addr: IpAddr, errors: &mut Vec<ConfigError>| match &family {
        Some((first, v4)) if addr.is_ipv4() != *v4 => {
            errors.push(ConfigError::value(
                key,
                quote(&addr.to_string()),
                format!(
                    "{}, but {first} is {}; the VIPs and the gateway must all be IPv4 or all IPv6",
                    family_name(addr.is_ipv4()),
                    family_name(*v4)
                ),
            ));
            false
        }
        _ => true,
    };
    let vips: Vec<(String, IpAddr)> = vips
        .into_iter()
        .filter(|(k, a)| same_family(k, *a, errors))
        .collect();
    let gateway = gateway.filter(|a| same_family("vip.gateway", *a, errors));
    let ipv4 = family.as_ref().map(|(_, v4)| *v4);

    let prefix = prefix(raw, ipv4, errors);
    for (key, addr) in &vips {
        let unicast = unicast(key, *addr, errors);
        if let (true, IpAddr::V4(a), Some(p)) = (unicast, addr, prefix) {
            not_network_or_broadcast(key, *a, p, errors);
        }
    }
    if let Some(gw) = gateway {
        let _ = unicast("vip.gateway", gw, errors);
    }
    duplicates(&vips, gateway, errors);

    let any_vip = !vips.is_empty()
        || raw.write_vip.is_some()
        || raw.read_vips.as_ref().is_some_and(|v| !v.is_empty());
    let enable = raw.enable.unwrap_or(true);
    if enable && !any_vip {
        errors.push(ConfigError::value(
            "vip.enable",
            "true",
            "needs vip.write_vip or vip.read_vips (set enable = false to run without VIPs)",
        ));
    }
    let nic = match &raw.nic {
        Some(nic) => {
            if let Err(why) = interface_name(nic) {
                errors.push(ConfigError::value("vip.nic", quote(nic), why));
            }
            nic.clone()
        }
        None => {
            if any_vip {
                errors.push(ConfigError::key(
                    "vip.nic",
                    "missing; the interface the VIPs go on, e.g. \"eth0\"",
                ));
            }
            String::new()
        }
    };
    let label = match &raw.label {
        Some(label) => {
            if let Err(why) = label_rule(label, &nic) {
                errors.push(ConfigError::value("vip.label", quote(label), why));
            }
            label.clone()
        }
        None if nic.is_empty() => String::new(),
        None => {
            let label = format!("{nic}:0");
            if label.len() > IFNAME_MAX {
                errors.push(ConfigError::value(
                    "vip.label",
                    quote(&label),
                    format!("the default label is {} bytes, at most {IFNAME_MAX} (IFNAMSIZ-1); set vip.label to a shorter `{nic}:…`", label.len()),
                ));
            }
            label
        }
    };

    let floating_type = match &raw.floating_type {
        None => FloatingType::default(),
        Some(s) => FloatingType::parse(s).unwrap_or_else(|| {
            errors.push(ConfigError::value(
                "vip.floating_type",
                quote(s),
                format!("must be {}", FloatingType::ALLOWED.join(" or ")),
            ));
            FloatingType::default()
        }),
    };
    let write_vip = vips
        .iter()
        .find(|(k, _)| k == "vip.write_vip")
        .map(|(_, a)| *a);
    let read_vips = vips
        .iter()
        .filter(|(k, _)| k != "vip.write_vip")
        .map(|(_, a)| *a)
        .collect();
    VipConfig {
        enable,
        write_vip,
        prefix: prefix.unwrap_or(if ipv4 == Some(false) { 128 } else { 32 }),
        nic,
        label,
        read_vips,
        floating_type,
        announce_count: int(
            "vip.announce_count",
            raw.announce_count,
            DEFAULT_ANNOUNCE_COUNT,
            ANNOUNCE_COUNT_RANGE,
            errors,
        ),
        announce_interval: millis(
            "vip.announce_interval_ms",
            raw.announce_interval_ms,
            DEFAULT_ANNOUNCE_INTERVAL_MS,
            (1, 10_000),
            errors,
        ),
        reannounce_interval: match raw.reannounce_interval_ms {
            None | Some(0) => None,
            some => Some(millis(
                "vip.reannounce_interval_ms",
                some,
                0,
                REANNOUNCE_INTERVAL_RANGE,
                errors,
            )),
        },
        gateway,
        kill_connections_on_demotion: raw.kill_connections_on_demotion.unwrap_or(false),
    }
}

/// The prefix length from `prefix` or `mask` (exactly one, when there is a VIP).
fn prefix(raw: &RawVip, ipv4: Option<bool>, errors: &mut Vec<ConfigError>) -> Option<u8> {
    let max: i64 = if ipv4 == Some(false) { 128 } else { 32 };
    match (raw.prefix, &raw.mask) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::key(
                "vip.mask",
                "set only one of vip.prefix and vip.mask",
            ));
            None
        }
        (Some(p), None) => {
            if (1..=max).contains(&p) {
                u8::try_from(p).ok()
            } else {
                let family = ipv4.map_or("", |v4| if v4 { " for IPv4" } else { " for IPv6" });
                errors.push(ConfigError::value(
                    "vip.prefix",
                    p,
                    format!("must be between 1 and {max}{family}"),
                ));
                None
            }
        }
        (None, Some(mask)) => {
            if ipv4 == Some(false) {
                errors.push(ConfigError::value(
                    "vip.mask",
                    quote(mask),
                    "a dotted mask is for IPv4 VIPs only; use vip.prefix (e.g. 64) for IPv6",
                ));
                return None;
            }
            match mask_to_prefix(mask) {
                Ok(p) => Some(p),
                Err(why) => {
                    errors.push(ConfigError::value("vip.mask", quote(mask), why));
                    None
                }
            }
        }
        (None, None) => {
            if ipv4.is_some() {
                errors.push(ConfigError::key(
                    "vip.prefix",
                    "missing; set vip.prefix (e.g. 24) or, for IPv4, vip.mask (e.g. \"255.255.255.0\")",
                ));
            }
            None
        }
    }
}

/// `255.255.255.0` → 24. The mask must be contiguous ones then zeros, and not 0.0.0.0.
pub fn mask_to_prefix(mask: &str) -> Result<u8, String> {
    let addr: Ipv4Addr = mask
        .trim()
        .parse()
        .map_err(|_| "not a dotted IPv4 mask like \"255.255.255.0\"".to_string())?;
    let bits = u32::from(addr);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err("not a contiguous mask (ones then zeros, like 255.255.255.0)".to_string());
    }
    if ones == 0 {
        return Err("must not be 0.0.0.0".to_string());
    }
    u8::try_from(ones).map_err(|_| "not a mask".to_string())
}

fn address(key: &str, text: &str, errors: &mut Vec<ConfigError>) -> Option<IpAddr> {
    match text.parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(ConfigError::value(
                key,
                quote(text),
                "not an IPv4 or IPv6 address",
            ));
            None
        }
    }
}

fn family_name(v4: bool) -> &'static str {
    if v4 { "IPv4" } else { "IPv6" }
}

/// A VIP or gateway must be an ordinary unicast address; false when it is not.
fn unicast(key: &str, addr: IpAddr, errors: &mut Vec<ConfigError>) -> bool {
    let why = match addr {
        IpAddr::V4(a) if a.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(a) if a.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(a) if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(a) if a.is_loopback() => Some("a loopback address"),
        IpAddr::V4(a) if a.is_link_local() => Some("a link-local address"),
        IpAddr::V6(a) if a.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(a) if a.is_multicast() => Some("a multicast address"),
        IpAddr::V6(a) if a.is_loopback() => Some("a loopback address"),
        IpAddr::V6(a) if a.is_unicast_link_local() => Some("a link-local address"),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => Some("an IPv4-mapped address"),
        _ => None,
    };
    if let Some(why) = why {
        errors.push(ConfigError::value(
            key,
            quote(&addr.to_string()),
            format!("is {why}; must be a unicast address"),
        ));
    }
    why.is_none()
}

/// On a /30 or wider subnet the all-zeros and all-ones hosts are not usable.
fn not_network_or_broadcast(key: &str, addr: Ipv4Addr, prefix: u8, errors: &mut Vec<ConfigError>) {
    if prefix > 30 {
        return;
    }
    let host_bits = u32::MAX >> prefix;
    let host = u32::from(addr) & host_bits;
    let network = Ipv4Addr::from(u32::from(addr) & !host_bits);
    let what = if host == 0 {
        "the network address"
    } else if host == host_bits {
        "the broadcast address"
    } else {
        return;
    };
    errors.push(ConfigError::value(
        key,
        quote(&addr.to_string()),
        format!("is {what} of {network}/{prefix}; must be a host address"),
    ));
}

fn duplicates(vips: &[(String, IpAddr)], gateway: Option<IpAddr>, errors: &mut Vec<ConfigError>) {
    for (i, (key, addr)) in vips.iter().enumerate() {
        if let Some((first, _)) = vips[..i].iter().find(|(_, a)| a == addr) {
            errors.push(ConfigError::value(
                key,
                quote(&addr.to_string()),
                format!("duplicate of {first}; every VIP must be different"),
            ));
        }
        if gateway == Some(*addr) {
            errors.push(ConfigError::value(
                "vip.gateway",
                quote(&addr.to_string()),
                format!("same as {key}; the gateway must not be a VIP"),
            ));
        }
    }
}

/// Linux interface names: 1..=15 bytes, no `/`, `:` or whitespace.
pub fn interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > IFNAME_MAX {
        return Err(format!(
            "{} bytes; interface names are at most {IFNAME_MAX} (IFNAMSIZ-1)",
            name.len()
        ));
    }
    if name.contains(['/', ':'])
        || name.chars().any(char::is_whitespace)
        || name == "."
        || name == ".."
    {
        return Err(
            "not an interface name (no `/`, `:` or spaces); an alias label goes in vip.label"
                .to_string(),
        );
    }
    Ok(())
}

/// An IPv4 alias label: `<nic>:<suffix>`, at most 15 bytes, as `ip addr add … label` takes.
pub fn label_rule(label: &str, nic: &str) -> Result<(), String> {
    let suffix = label
        .strip_prefix(nic)
        .and_then(|rest| rest.strip_prefix(':'));
    match suffix {
        _ if nic.is_empty() => Ok(()), // vip.nic is reported missing already.
        None => Err(format!(
            "must start with `{nic}:` (vip.nic then a colon), e.g. \"{nic}:0\""
        )),
        Some("") => Err(format!("needs a suffix after `{nic}:`, e.g. \"{nic}:0\"")),
        Some(s) if s.contains('/') || s.chars().any(char::is_whitespace) => {
            Err("must not contain `/` or spaces".to_string())
        }
        Some(_) if label.len() > IFNAME_MAX => Err(format!(
            "{} bytes; labels are at most {IFNAME_MAX} (IFNAMSIZ-1)",
            label.len()
        )),
        Some(_) => Ok(()),
    }
}

fn port(key: &str, value: Option<i64>, default: u16, errors: &mut Vec<ConfigError>) -> u16 {
    int(key, value, default, (1, 65535), errors)
}

/// vip.reannounce_interval_ms when set (0 = off): from a second to a day.
const REANNOUNCE_INTERVAL_RANGE: (i64, i64) = (1000, 86_400_000);

fn millis(
    key: &str,
    value: Option<i64>,
    default: u64,
    range: (i64, i64),
    errors: &mut Vec<ConfigError>,
) -> Duration {
    Duration::from_millis(int(key, value, default, range, errors))
}

/// An integer within `range` (inclusive), or `default` when absent or out of range.
fn int<T: TryFrom<i64>>(
    key: &str,
    value: Option<i64>,
    default: T,
    range: (i64, i64),
    errors: &mut Vec<ConfigError>,
) -> T {
    let Some(v) = value else { return default };
    if (range.0..=range.1).contains(&v)
        && let Ok(v) = T::try_from(v)
    {
        return v;
    }
    errors.push(ConfigError::value(
        key,
        v,
        format!("must be between {} and {}", range.0, range.1),
    ));
    default
}

fn absolute_path(key: &str, value: &str, errors: &mut Vec<ConfigError>) -> PathBuf {
    if !Path::new(value).is_absolute() {
        errors.push(ConfigError::value(
            key,
            quote(value),
            "must be an absolute path",
        ));
    }
    PathBuf::from(value)
}

fn peer(raw: &RawPeer, errors: &mut Vec<ConfigError>) -> PeerConfig {
    let timeout = millis(
        "peer.timeout_ms",
        raw.timeout_ms,
        DEFAULT_PEER_TIMEOUT_MS,
        PEER_TIMEOUT_RANGE,
        errors,
    );
    let switchover_timeout = millis(
        "peer.switchover_timeout_ms",
        raw.switchover_timeout_ms,
        DEFAULT_SWITCHOVER_TIMEOUT_MS,
        SWITCHOVER_TIMEOUT_RANGE,
        errors,
    );
    // Compared only when neither was replaced by its default after an error: that would
    // report a second, made-up problem.
    let valid = |v: Option<i64>, (lo, hi): (i64, i64)| v.is_none_or(|v| (lo..=hi).contains(&v));
    if valid(raw.timeout_ms, PEER_TIMEOUT_RANGE)
        && valid(raw.switchover_timeout_ms, SWITCHOVER_TIMEOUT_RANGE)
        && switchover_timeout < timeout
    {
        let (switchover, timeout) = (switchover_timeout.as_millis(), timeout.as_millis());
        let why = "the wait must cover at least one exchange with the old primary's agent";
        errors.push(match raw.switchover_timeout_ms {
            Some(_) => ConfigError::value(
                "peer.switchover_timeout_ms",
                switchover,
                format!("must be at least peer.timeout_ms ({timeout}); {why}"),
            ),
            None => ConfigError::key(
                "peer.switchover_timeout_ms",
                format!(
                    "its default {switchover} is less than peer.timeout_ms ({timeout}); set it to at least {timeout}: {why}"
                ),
            ),
        });
    }
    let max_connections = int(
        "peer.max_connections",
        raw.max_connections,
        DEFAULT_PEER_MAX_CONNECTIONS,
        PEER_MAX_CONNECTIONS_RANGE,
        errors,
    );
    let max_connections_per_host = int(
        "peer.max_connections_per_host",
        raw.max_connections_per_host,
        DEFAULT_PEER_MAX_PER_HOST,
        PEER_MAX_PER_HOST_RANGE,
        errors,
    );
    if max_connections_per_host > max_connections {
        errors.push(ConfigError::value(
            "peer.max_connections_per_host",
            max_connections_per_host,
            format!(
                "must be at most peer.max_connections ({max_connections}): one host could \
                 then hold every connection"
            ),
        ));
    }
    PeerConfig {
        port: port("peer.port", raw.port, DEFAULT_PEER_PORT, errors),
        listen: peer_listen(raw.listen.as_deref(), errors),
        allow: raw.allow.as_ref().map(|list| peer_allow(list, errors)),
        max_connections_per_host,
        key_file: raw
            .key_file
            .as_ref()
            .map(|p| absolute_path("peer.key_file", p, errors)),
        timeout,
        switchover_timeout,
        max_connections,
        resync_interval: millis(
            "peer.resync_interval_ms",
            raw.resync_interval_ms,
            DEFAULT_RESYNC_INTERVAL_MS,
            RESYNC_INTERVAL_RANGE,
            errors,
        ),
    }
}

/// `peer.listen`: an IP address (the host checks say whether it is this host's).
fn peer_listen(text: Option<&str>, errors: &mut Vec<ConfigError>) -> IpAddr {
    let every = IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED);
    let Some(text) = text else { return every };
    match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            errors.push(ConfigError::value(
                "peer.listen",
                quote(text),
                "must be an IP address of this host, e.g. \"198.51.100.11\" or \"::\" for every \
                 address (no port: that is peer.port; host names are not resolved)",
            ));
            every
        }
    }
}

/// `peer.allow`: addresses or networks (`198.51.100.0/24`, `2001:db8::11`).
fn peer_allow(list: &[String], errors: &mut Vec<ConfigError>) -> Vec<ipnet::IpNet> {
    if list.is_empty() {
        errors.push(ConfigError::value(
            "peer.allow",
            "[]",
            "an empty list lets no member connect; list the members' addresses or networks, \
             or remove the key to allow the hosts of this node's views",
        ));
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let net = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from));
            match net {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    errors.push(ConfigError::value(
                        format!("peer.allow[{i}]"),
                        quote(text),
                        "must be an IP address or a network, e.g. \"198.51.100.11\" or \
                         \"198.51.100.0/24\"",
                    ));
                    None
                }
            }
        })
        .collect()
}

/// How long the guard answers a released VIP's stale clients: a minute covers ARP
/// caches that missed every GARP (Linux re-validates a neighbour within ~30 s).
pub const DEFAULT_GUARD_WINDOW_MS: u64 = 60_000;
pub const GUARD_WINDOW_RANGE: (i64, i64) = (1000, MAX_MS);
pub const DEFAULT_TRACKED_CONNECTIONS: u32 = 65_536;
pub const TRACKED_CONNECTIONS_RANGE: (i64, i64) = (1024, 4_194_304);

fn datapath(
    raw: &RawDatapath,
    mysqld: &MysqlEndpoint,
    errors: &mut Vec<ConfigError>,
) -> DatapathConfig {
    let xdp_mode = match raw.xdp_mode.as_deref() {
        None | Some("auto") => XdpMode::Auto,
        Some("native") => XdpMode::Native,
        Some("generic") => XdpMode::Generic,
        Some(other) => {
            errors.push(ConfigError::value(
                "datapath.xdp_mode",
                quote(other),
                "must be \"auto\", \"native\" (driver mode) or \"generic\" (skb mode)",
            ));
            XdpMode::Auto
        }
    };
    let default_port = match mysqld {
        MysqlEndpoint::Tcp { port, .. } => *port,
        MysqlEndpoint::Socket(_) => DEFAULT_MYSQL_PORT,
    };
    DatapathConfig {
        guard: raw.guard.unwrap_or(true),
        xdp_mode,
        guard_window: millis(
            "datapath.guard_window_ms",
            raw.guard_window_ms,
            DEFAULT_GUARD_WINDOW_MS,
            GUARD_WINDOW_RANGE,
            errors,
        ),
        track: raw.track.unwrap_or(true),
        tracked_connections: int(
            "datapath.tracked_connections",
            raw.tracked_connections,
            DEFAULT_TRACKED_CONNECTIONS,
            TRACKED_CONNECTIONS_RANGE,
            errors,
        ),
        require_reset: raw.require_reset.unwrap_or(true),
        client_port: port(
            "datapath.client_port",
            raw.client_port,
            default_port,
            errors,
        ),
    }
}

pub const DEFAULT_LEASE_MS: u64 = 3000;
pub const DEFAULT_RENEW_MS: u64 = 1000;
pub const LEASE_RANGE: (i64, i64) = (300, 60_000);
pub const RENEW_RANGE: (i64, i64) = (50, 20_000);
/// 1 %: far above any real clock's rate error (NTP keeps them within 500 ppm).
pub const DEFAULT_DRIFT_PPM: u32 = 10_000;
pub const DRIFT_RANGE: (i64, i64) = (0, 100_000);

/// `[coordination]`. The lease must outlast two renewal periods and a commit's timeout
/// (one renewal may fail), and a poll must fit inside it, or a healthy
/// holder would lose the VIP to its own timing.
fn coordination(
    raw: &RawCoordination,
    mysql: &MysqlConfig,
    vip: &VipConfig,
    errors: &mut Vec<ConfigError>,
) -> CoordinationConfig {
    let mode = match raw.mode.as_deref() {
        None | Some("handshake") => CoordinationMode::Handshake,
        Some("lease") => CoordinationMode::Lease,
        Some(other) => {
            errors.push(ConfigError::value(
                "coordination.mode",
                quote(other),
                "must be \"handshake\" (a confirmed release, or a timeout) or \"lease\" \
                 (leases the group commits, enforced by the kernel)",
            ));
            CoordinationMode::Handshake
        }
    };
    let lease = millis(
        "coordination.lease_ms",
        raw.lease_ms,
        DEFAULT_LEASE_MS,
        LEASE_RANGE,
        errors,
    );
    let renew = millis(
        "coordination.renew_ms",
        raw.renew_ms,
        DEFAULT_RENEW_MS,
        RENEW_RANGE,
        errors,
    );
    let drift_ppm = int(
        "coordination.drift_ppm",
        raw.drift_ppm,
        DEFAULT_DRIFT_PPM,
        DRIFT_RANGE,
        errors,
    );
    if mode == CoordinationMode::Lease {
        let least = renew * 2 + mysql.query_timeout;
        if lease < least {
            errors.push(ConfigError::value(
                "coordination.lease_ms",
                lease.as_millis(),
                format!(
                    "must be at least 2 × coordination.renew_ms + mysql.query_timeout_ms ({} \
                     ms), so one failed renewal does not end a healthy holder's lease",
                    least.as_millis()
                ),
            ));
        }
        if lease < mysql.poll_interval * 3 {
            errors.push(ConfigError::value(
                "coordination.lease_ms",
                lease.as_millis(),
                format!(
                    "must be at least 3 × mysql.poll_interval_ms ({} ms): the lease is checked \
                     against views that old",
                    (mysql.poll_interval * 3).as_millis()
                ),
            ));
        }
        if !vip.enable {
            errors.push(ConfigError::value(
                "vip.enable",
                false,
                "coordination.mode = \"lease\" does not support vip.enable = false yet; use \
                 mode = \"handshake\" while the VIPs are disabled",
            ));
        }
    }
    CoordinationConfig {
        mode,
        lease,
        renew,
        drift_ppm,
    }
}

/// The port the examples and the README use for `metrics.listen`.
pub const EXAMPLE_METRICS_PORT: u16 = 9748;

/// `[metrics]`: present means serve, so `listen` is required. The peer server listens on
/// `peer_port` at every address, so that port would fail to bind at start; a VIP is not
/// always there. (That the address is this host's is a host check.)
fn metrics(
    raw: &RawMetrics,
    peer_port: u16,
    vip: &VipConfig,
    errors: &mut Vec<ConfigError>,
) -> Option<MetricsConfig> {
    let key = "metrics.listen";
    let example =
        format!("e.g. \"127.0.0.1:{EXAMPLE_METRICS_PORT}\" or \"[::1]:{EXAMPLE_METRICS_PORT}\"");
    let Some(text) = &raw.listen else {
        errors.push(ConfigError::key(
            key,
            format!(
                "missing; the address and port the Prometheus endpoint listens on, {example} \
                 (remove the [metrics] table to serve no metrics)"
            ),
        ));
        return None;
    };
    let why = match text.parse::<SocketAddr>() {
        Err(_) => format!(
            "must be an IP address and a port, {example} (IPv6 in brackets; host names are \
             not resolved)"
        ),
        Ok(addr) if addr.port() == 0 => format!("needs a fixed port (1-65535), {example}"),
        Ok(addr) if addr.port() == peer_port => format!(
            "port {} is peer.port, which the peer server listens on at every address; pick \
             another port, {example}",
            addr.port()
        ),
        Ok(addr) if vip.all_vips().any(|v| v == addr.ip()) => format!(
            "{} is a VIP, which moves between the nodes; listen on an address of the host \
             itself, {example}",
            addr.ip()
        ),
        Ok(listen) => return Some(MetricsConfig { listen }),
    };
    errors.push(ConfigError::value(key, quote(text), why));
    None
}

/// `/run/vip-agent/<instance>.sock`: one socket per instance on a host.
pub fn default_control_socket(instance: &str) -> PathBuf {
    Path::new(CONTROL_SOCKET_DIR).join(format!("{instance}.sock"))
}

fn control(
    raw: &RawControl,
    instance: &str,
    mysqld: &MysqlEndpoint,
    errors: &mut Vec<ConfigError>,
) -> ControlConfig {
    let Some(text) = &raw.socket else {
        return ControlConfig {
            socket: default_control_socket(instance),
        };
    };
    let key = "control.socket";
    let before = errors.len();
    let socket = absolute_path(key, text, errors);
    if errors.len() == before {
        let why = if text.ends_with('/') {
            Some(
                "names a folder; name the socket file, e.g. \"/run/vip-agent/<instance>.sock\""
                    .to_string(),
            )
        } else if text.len() > SOCKET_PATH_MAX {
            Some(format!(
                "{} bytes; a unix socket path is at most {SOCKET_PATH_MAX}",
                text.len()
            ))
        } else if *mysqld == MysqlEndpoint::Socket(socket.clone()) {
            Some("same as mysql.socket; the agent's control socket needs its own path".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            errors.push(ConfigError::value(key, quote(text), why));
        }
    }
    ControlConfig { socket }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
