//! TOML text → [`RawConfig`]: every known key read with serde into its TOML type, every
//! unknown key and every wrong type collected with its line and column (serde stops at the
//! first; an operator fixing a file wants them all). Meaning is checked in `validate`.

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{ConfigError, greatdb};

/// The file as written: `None` where a key is absent or had the wrong type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawConfig {
    pub instance: Option<String>,
    pub mysql: RawMysql,
    pub vip: RawVip,
    pub peer: RawPeer,
    pub control: RawControl,
    pub datapath: RawDatapath,
    pub coordination: RawCoordination,
    /// `Some` when the `[metrics]` table is present (the endpoint is off without it).
    pub metrics: Option<RawMetrics>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawMysql {
    pub host: Option<String>,
    pub port: Option<i64>,
    pub socket: Option<String>,
    pub user: Option<String>,
    pub password_file: Option<String>,
    pub tls: Option<RawTls>,
    pub connect_timeout_ms: Option<i64>,
    pub query_timeout_ms: Option<i64>,
    pub poll_interval_ms: Option<i64>,
    pub hung_after_polls: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub verify_identity: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawVip {
    pub enable: Option<bool>,
    pub write_vip: Option<String>,
    pub prefix: Option<i64>,
    pub mask: Option<String>,
    pub nic: Option<String>,
    pub label: Option<String>,
    pub read_vips: Option<Vec<String>>,
    pub floating_type: Option<String>,
    pub announce_count: Option<i64>,
    pub announce_interval_ms: Option<i64>,
    pub reannounce_interval_ms: Option<i64>,
    pub gateway: Option<String>,
    pub kill_connections_on_demotion: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawPeer {
    pub port: Option<i64>,
    pub listen: Option<String>,
    pub allow: Option<Vec<String>>,
    pub max_connections_per_host: Option<i64>,
    pub key_file: Option<String>,
    pub timeout_ms: Option<i64>,
    pub switchover_timeout_ms: Option<i64>,
    pub max_connections: Option<i64>,
    pub resync_interval_ms: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawControl {
    pub socket: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawDatapath {
    pub guard: Option<bool>,
    pub xdp_mode: Option<String>,
    pub guard_window_ms: Option<i64>,
    pub track: Option<bool>,
    pub tracked_connections: Option<i64>,
    pub require_reset: Option<bool>,
    pub client_port: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawCoordination {
    pub mode: Option<String>,
    pub lease_ms: Option<i64>,
    pub renew_ms: Option<i64>,
    pub drift_ppm: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

/// The keys each table allows, for the unknown-key check and its suggestions.
pub const TOP_KEYS: &[&str] = &[
    "instance",
    "mysql",
    "vip",
    "peer",
    "control",
    "datapath",
    "coordination",
    "metrics",
];
pub const MYSQL_KEYS: &[&str] = &[
    "host",
    "port",
    "socket",
    "user",
    "password_file",
    "tls",
    "connect_timeout_ms",
    "query_timeout_ms",
    "poll_interval_ms",
    "hung_after_polls",
];
pub const TLS_KEYS: &[&str] = &["ca", "cert", "key", "verify_identity"];
pub const VIP_KEYS: &[&str] = &[
    "enable",
    "write_vip",
    "prefix",
    "mask",
    "nic",
    "label",
    "read_vips",
    "floating_type",
    "announce_count",
    "announce_interval_ms",
    "reannounce_interval_ms",
    "gateway",
    "kill_connections_on_demotion",
];
pub const PEER_KEYS: &[&str] = &[
    "port",
    "listen",
    "allow",
    "max_connections_per_host",
    "key_file",
    "timeout_ms",
    "switchover_timeout_ms",
    "max_connections",
    "resync_interval_ms",
];
pub const CONTROL_KEYS: &[&str] = &["socket"];
pub const DATAPATH_KEYS: &[&str] = &[
    "guard",
    "xdp_mode",
    "guard_window_ms",
    "track",
    "tracked_connections",
    "require_reset",
    "client_port",
];
pub const COORDINATION_KEYS: &[&str] = &["mode", "lease_ms", "renew_ms", "drift_ppm"];
pub const METRICS_KEYS: &[&str] = &["listen"];
const TABLES: &[(&str, &[&str])] = &[
    ("", TOP_KEYS),
    ("mysql", MYSQL_KEYS),
    ("mysql.tls", TLS_KEYS),
    ("vip", VIP_KEYS),
    ("peer", PEER_KEYS),
    ("control", CONTROL_KEYS),
    ("datapath", DATAPATH_KEYS),
    ("coordination", COORDINATION_KEYS),
    ("metrics", METRICS_KEYS),
];

/// Reads the text. `Err` only for TOML syntax errors (nothing else can be trusted then);
/// otherwise the raw values and the key and type errors found.
pub fn read(text: &str) -> Result<(RawConfig, Vec<ConfigError>), Vec<ConfigError>> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax
            .iter()
            .map(|e| {
                ConfigError::key("", format!("invalid TOML: {}", e.message().trim()))
                    .at(e.span().map(|s| line_column(text, s.start)))
            })
            .collect());
    }
    let mut errors = Vec::new();
    let mut top = Table {
        path: "",
        table: root.get_ref(),
        text,
        errors: &mut errors,
    };
    let mut raw = RawConfig {
        instance: top.get("instance"),
        ..RawConfig::default()
    };
    let (mysql, vip, peer, control, datapath, coordination, metrics) = (
        top.table_at("mysql"),
        top.table_at("vip"),
        top.table_at("peer"),
        top.table_at("control"),
        top.table_at("datapath"),
        top.table_at("coordination"),
        top.table_at("metrics"),
    );
    top.reject_unknown();
    if let Some(table) = mysql {
        let mut t = Table {
            path: "mysql",
            table,
            text,
            errors: &mut errors,
        };
        let tls = t.table_at("tls");
        raw.mysql = RawMysql {
            host: t.get("host"),
            port: t.get("port"),
            socket: t.get("socket"),
            user: t.get("user"),
            password_file: t.get("password_file"),
            tls: None,
            connect_timeout_ms: t.get("connect_timeout_ms"),
            query_timeout_ms: t.get("query_timeout_ms"),
            poll_interval_ms: t.get("poll_interval_ms"),
            hung_after_polls: t.get("hung_after_polls"),
        };
        t.reject_unknown();
        if let Some(table) = tls {
            let mut t = Table {
                path: "mysql.tls",
                table,
                text,
                errors: &mut errors,
            };
            raw.mysql.tls = Some(RawTls {
                ca: t.get("ca"),
                cert: t.get("cert"),
                key: t.get("key"),
                verify_identity: t.get("verify_identity"),
            });
            t.reject_unknown();
        }
    }
    if let Some(table) = vip {
        let mut t = Table {
            path: "vip",
            table,
            text,
            errors: &mut errors,
        };
        raw.vip = RawVip {
            enable: t.get("enable"),
            write_vip: t.get("write_vip"),
            prefix: t.get("prefix"),
            mask: t.get("mask"),
            nic: t.get("nic"),
            label: t.get("label"),
            read_vips: t.get("read_vips"),
            floating_type: t.get("floating_type"),
            announce_count: t.get("announce_count"),
            announce_interval_ms: t.get("announce_interval_ms"),
            reannounce_interval_ms: t.get("reannounce_interval_ms"),
            gateway: t.get("gateway"),
            kill_connections_on_demotion: t.get("kill_connections_on_demotion"),
        };
        t.reject_unknown();
    }
    if let Some(table) = peer {
        let mut t = Table {
            path: "peer",
            table,
            text,
            errors: &mut errors,
        };
        raw.peer = RawPeer {
            port: t.get("port"),
            listen: t.get("listen"),
            allow: t.get("allow"),
            max_connections_per_host: t.get("max_connections_per_host"),
            key_file: t.get("key_file"),
            timeout_ms: t.get("timeout_ms"),
            switchover_timeout_ms: t.get("switchover_timeout_ms"),
            max_connections: t.get("max_connections"),
            resync_interval_ms: t.get("resync_interval_ms"),
        };
        t.reject_unknown();
    }
    if let Some(table) = control {
        let mut t = Table {
            path: "control",
            table,
            text,
            errors: &mut errors,
        };
        raw.control = RawControl {
            socket: t.get("socket"),
        };
        t.reject_unknown();
    }
    if let Some(table) = datapath {
        let mut t = Table {
            path: "datapath",
            table,
            text,
            errors: &mut errors,
        };
        raw.datapath = RawDatapath {
            guard: t.get("guard"),
            xdp_mode: t.get("xdp_mode"),
            guard_window_ms: t.get("guard_window_ms"),
            track: t.get("track"),
            tracked_connections: t.get("tracked_connections"),
            require_reset: t.get("require_reset"),
            client_port: t.get("client_port"),
        };
        t.reject_unknown();
    }
    if let Some(table) = coordination {
        let mut t = Table {
            path: "coordination",
            table,
            text,
            errors: &mut errors,
        };
        raw.coordination = RawCoordination {
            mode: t.get("mode"),
            lease_ms: t.get("lease_ms"),
            renew_ms: t.get("renew_ms"),
            drift_ppm: t.get("drift_ppm"),
        };
        t.reject_unknown();
    }
    if let Some(table) = metrics {
        let mut t = Table {
            path: "metrics",
            table,
            text,
            errors: &mut errors,
        };
        raw.metrics = Some(RawMetrics {
            listen: t.get("listen"),
        });
        t.reject_unknown();
    }
    Ok((raw, errors))
}

/// One TOML table being read; errors go to the shared list.
struct Table<'t, 'e, 'i> {
    path: &'static str,
    table: &'t DeTable<'i>,
    text: &'t str,
    errors: &'e mut Vec<ConfigError>,
}

impl<'t, 'i> Table<'t, '_, 'i> {
    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn find(&self, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    /// The value of `key` as a `T`, or `None` (absent, or a type error recorded).
    fn get<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.find(key)?;
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                let offset = e.span().unwrap_or_else(|| value.span()).start;
                self.errors.push(
                    ConfigError::key(self.key_path(key), e.message().trim().to_string())
                        .at(Some(line_column(self.text, offset))),
                );
                None
            }
        }
    }

    /// A sub-table, or `None` (absent, or not a table: recorded).
    fn table_at(&mut self, key: &str) -> Option<&'t DeTable<'i>> {
        let value = self.find(key)?;
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.errors.push(
                    ConfigError::key(
                        self.key_path(key),
                        format!(
                            "expected a table ([{}]), found {}",
                            self.key_path(key),
                            other.type_str()
                        ),
                    )
                    .at(Some(line_column(self.text, value.span().start))),
                );
                None
            }
        }
    }

    fn reject_unknown(&mut self) {
        let allowed = TABLES
            .iter()
            .find(|(p, _)| *p == self.path)
            .map_or(&[][..], |(_, k)| *k);
        for (key, _) in self.table.iter() {
            let name = key.get_ref().as_ref();
            if allowed.contains(&name) {
                continue;
            }
            let message = match suggest(self.path, name) {
                Some(hint) => format!("unknown key; {hint}"),
                None => format!("unknown key; allowed here: {}", allowed.join(", ")),
            };
            self.errors.push(
                ConfigError::key(self.key_path(name), message)
                    .at(Some(line_column(self.text, key.span().start))),
            );
        }
    }
}

/// A hint for an unknown key: its vip-agent name if it is a greatdb_ha variable, the table
/// it belongs in if it is misplaced, or a close spelling.
pub fn suggest(table: &str, name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    if let Some(key) = greatdb::key_for_variable(&lower) {
        let var = greatdb::variable_for_key(key).unwrap_or(name);
        return Some(format!("{var} is `{key}` in vip-agent"));
    }
    // A key of another table: name each table it can be in (`socket` is in two).
    let elsewhere: Vec<&str> = TABLES
        .iter()
        .filter(|(other, keys)| *other != table && keys.contains(&lower.as_str()))
        .map(|(other, _)| *other)
        .collect();
    let full = |other: &str| {
        if other.is_empty() {
            lower.clone()
        } else {
            format!("{other}.{lower}")
        }
    };
    match elsewhere.as_slice() {
        [] => {}
        [other] => {
            return Some(format!(
                "did you mean `{}`? (it belongs in {})",
                full(other),
                table_name(other)
            ));
        }
        several => {
            let options: Vec<String> = several
                .iter()
                .map(|o| format!("`{}` (in {})", full(o), table_name(o)))
                .collect();
            return Some(format!("did you mean {}?", options.join(" or ")));
        }
    }
    let allowed = TABLES.iter().find(|(p, _)| *p == table)?.1;
    let (best, distance) = allowed
        .iter()
        .map(|k| (*k, edit_distance(&lower, k)))
        .min_by_key(|(_, d)| *d)?;
    (distance <= (best.len() / 3).max(2)).then(|| format!("did you mean `{best}`?"))
}

fn table_name(path: &str) -> String {
    if path.is_empty() {
        "the top level".to_string()
    } else {
        format!("[{path}]")
    }
}

/// Levenshtein distance; key names are short.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match read(text) {
            Ok((_, errors)) => errors.iter().map(ToString::to_string).collect(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn reads_known_keys() {
        let (raw, errors) =
            read("instance = \"a\"\n[vip]\nannounce_count = 7\nread_vips = [\"x\"]\n").unwrap();
        assert!(errors.is_empty());
        assert_eq!(raw.instance.as_deref(), Some("a"));
        assert_eq!(raw.vip.announce_count, Some(7));
        assert_eq!(raw.vip.read_vips, Some(vec!["x".to_string()]));
    }

    #[test]
    fn every_unknown_key_and_wrong_type_at_once() {
        let e =
            errors("[vip]\nanounce_count = 5\nprefix = \"24\"\nenable = 1\n[peer]\nport = \"x\"\n");
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e.iter().any(|l| l.starts_with(
                "vip.anounce_count (line 2, column 1): unknown key; did you mean `announce_count`?"
            )),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l
                    .starts_with("vip.prefix (line 3, column 10): invalid type: string \"24\"")),
            "{e:#?}"
        );
        assert!(
            e.iter().any(|l| l.starts_with(
                "vip.enable (line 4, column 10): invalid type: integer `1`, expected a boolean"
            )),
            "{e:#?}"
        );
        assert!(
            e.iter().any(|l| l.starts_with("peer.port (line 6")),
            "{e:#?}"
        );
    }

    #[test]
    fn unknown_key_hints() {
        assert_eq!(
            suggest("vip", "mgr_vip_ip").unwrap(),
            "greatdb_ha_mgr_vip_ip is `vip.write_vip` in vip-agent"
        );
        assert_eq!(
            suggest("vip", "loose-greatdb_ha_send_arp_packge_times").unwrap(),
            "greatdb_ha_send_arp_packge_times is `vip.announce_count` in vip-agent"
        );
        assert_eq!(
            suggest("mysql", "announce_count").unwrap(),
            "did you mean `vip.announce_count`? (it belongs in [vip])"
        );
        assert_eq!(
            suggest("", "nic").unwrap(),
            "did you mean `vip.nic`? (it belongs in [vip])"
        );
        assert_eq!(
            suggest("vip", "writevip").unwrap(),
            "did you mean `write_vip`?"
        );
        assert_eq!(
            suggest("peer", "socket").unwrap(),
            "did you mean `mysql.socket` (in [mysql]) or `control.socket` (in [control])?"
        );
        assert_eq!(
            suggest("vip", "resync_interval_ms").unwrap(),
            "did you mean `peer.resync_interval_ms`? (it belongs in [peer])"
        );
        assert_eq!(
            suggest("control", "sockt").unwrap(),
            "did you mean `socket`?"
        );
        assert_eq!(suggest("vip", "completely_different"), None);
        let e = errors("[vip]\ncompletely_different = 1\n");
        assert!(
            e[0].contains("unknown key; allowed here: enable, write_vip"),
            "{e:?}"
        );
        let e = errors("vips = 1\n");
        assert!(
            e[0].starts_with("vips (line 1, column 1): unknown key; did you mean `vip`?"),
            "{e:?}"
        );
    }

    #[test]
    fn table_expected() {
        let e = errors("vip = 5\n");
        assert_eq!(
            e,
            vec!["vip (line 1, column 7): expected a table ([vip]), found integer"]
        );
    }

    #[test]
    fn syntax_error_has_location() {
        let e = errors("[vip]\nnic = \n");
        assert!(e[0].starts_with("config (line 2, column"), "{e:?}");
        assert!(e[0].contains("invalid TOML"), "{e:?}");
    }

    #[test]
    fn line_columns() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 0), (1, 1));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
