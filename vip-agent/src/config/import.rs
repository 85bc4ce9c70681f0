//! `import-mycnf`: greatdb_ha's my.cnf settings → vip-agent TOML, pure (the file reading
//! is in `mycnf`). One TOML per mysqld instance: `[mysqld]` / `[server]` settings apply to
//! every instance, an instance group (`[mysqld3306]`, `[mysqld-3306]`, `[mysqld@a]`, as
//! mysqld_multi or `--defaults-group-suffix` use them) overrides them. Whatever cannot be
//! carried over is a warning that names its `file:line`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::mycnf::{Entry, OptionFile, Origin};
use super::validate::{
    ANNOUNCE_COUNT_RANGE, DEFAULT_ANNOUNCE_INTERVAL_MS, interface_name, is_instance_name,
    mask_to_prefix,
};
use super::{FloatingType, quote};

/// The result: one TOML text per instance, and what was dropped or changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub instances: Vec<ImportedInstance>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedInstance {
    /// The my.cnf group it came from (`mysqld` when there are no instance groups).
    pub group: String,
    /// The `instance` it is given, e.g. `mysqld3306`.
    pub instance: String,
    pub toml: String,
}

/// How mysqld treats a group name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// Read by every mysqld: `[mysqld]`, `[server]`, `[mysqld-8.0]`.
    Shared,
    /// One instance's own group.
    Instance,
    Other,
}

pub fn group_kind(group: &str) -> GroupKind {
    if group == "mysqld" || group == "server" {
        return GroupKind::Shared;
    }
    let Some(suffix) = group.strip_prefix("mysqld") else {
        return GroupKind::Other;
    };
    let is_version = |s: &str| {
        let mut parts = s.split('.');
        s.contains('.') && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    match suffix.chars().next() {
        Some('-') if is_version(&suffix[1..]) => GroupKind::Shared,
        _ if suffix.bytes().all(|b| b.is_ascii_digit()) => GroupKind::Instance, // mysqld_multi: [mysqld3306]
        Some('-' | '_' | '@') if suffix.len() > 1 && suffix != "_safe" && suffix != "_multi" => {
            GroupKind::Instance
        }
        _ => GroupKind::Other,
    }
}

/// Imports every instance, or only `section` (a group name, `mysqld` for the shared
/// groups alone). `Err` when there is nothing to import.
pub fn import(file: &OptionFile, section: Option<&str>) -> Result<Imported, String> {
    let mut groups: Vec<String> = Vec::new();
    for e in &file.entries {
        if group_kind(&e.group) == GroupKind::Instance && !groups.contains(&e.group) {
            groups.push(e.group.clone());
        }
    }
    let selected: Vec<String> =
        match section.map(|s| s.trim().trim_matches(['[', ']']).to_ascii_lowercase()) {
            Some(s) if s == "mysqld" || groups.contains(&s) => vec![s],
            Some(s) => {
                return Err(format!(
                    "no group [{s}] in the file (instance groups found: {})",
                    if groups.is_empty() {
                        "none, use --section mysqld".to_string()
                    } else {
                        groups.join(", ")
                    }
                ));
            }
            None if groups.is_empty() => vec!["mysqld".to_string()],
            None => groups,
        };
    let mut out = Imported::default();
    let several = selected.len() > 1;
    for (index, group) in selected.iter().enumerate() {
        // Shared groups first, then the instance's own: its settings win, as mysqld_multi's
        // command-line options win over [mysqld].
        let entries: Vec<&Entry> = file
            .entries
            .iter()
            .filter(|e| group_kind(&e.group) == GroupKind::Shared)
            .chain(
                file.entries
                    .iter()
                    .filter(|e| e.group == *group && group != "mysqld"),
            )
            .collect();
        let mut settings = Settings::default();
        for e in &entries {
            settings.take(e);
        }
        if settings.greatdb.is_empty() {
            continue;
        }
        let label_index = if several { index } else { 0 };
        let (toml, warnings) = settings.to_toml(group, label_index);
        for w in warnings {
            if !out.warnings.contains(&w) {
                out.warnings.push(w);
            }
        }
        out.instances.push(ImportedInstance {
            group: group.clone(),
            instance: instance_name(group, &settings),
            toml,
        });
    }
    for e in &file.entries {
        let plugin = e.name.starts_with("plugin_load")
            && e.value.as_deref().is_some_and(|v| v.contains("greatdb_ha"));
        if plugin {
            out.warnings.push(format!(
                "{}: {} loads the greatdb_ha plugin: remove it (and the greatdb_ha settings) once vip-agent runs, or both will manage the VIPs",
                e.origin, e.name
            ));
        }
    }
    if out.instances.is_empty() {
        return Err("no greatdb_ha settings found (looked for [loose-]greatdb_ha_* in [mysqld], [server] and [mysqld<N>] groups)".to_string());
    }
    Ok(out)
}

/// `mysqld3306` stays; `mysqld@a.b` → `mysqld-a-b`; the shared group alone → `mysqld-<port>`.
fn instance_name(group: &str, settings: &Settings) -> String {
    if group == "mysqld" {
        return match &settings.port {
            Some((port, _)) if port.parse::<u16>().is_ok() => format!("mysqld-{port}"),
            _ => "default".to_string(),
        };
    }
    let name: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if is_instance_name(&name) {
        name
    } else {
        "default".to_string()
    }
}

/// The effective settings of one instance: the last of each name wins.
#[derive(Default)]
struct Settings {
    /// greatdb_ha variable without its prefix → (value, where).
    greatdb: BTreeMap<String, (Option<String>, Origin)>,
    port: Option<(String, Origin)>,
    socket: Option<(String, Origin)>,
}

impl Settings {
    fn take(&mut self, e: &Entry) {
        match e.name.as_str() {
            "port" => self.port = e.value.clone().map(|v| (v, e.origin.clone())),
            "socket" => self.socket = e.value.clone().map(|v| (v, e.origin.clone())),
            name => {
                // `skip-`, `disable-` and `enable-` prefixes switch a boolean, as in mysqld.
                for (prefix, forced) in [
                    ("", None),
                    ("enable_", Some("ON")),
                    ("disable_", Some("OFF")),
                    ("skip_", Some("OFF")),
                ] {
                    if let Some(var) = name
                        .strip_prefix(prefix)
                        .and_then(|n| n.strip_prefix("greatdb_ha_"))
                    {
                        let value = forced.map(str::to_string).or_else(|| e.value.clone());
                        self.greatdb
                            .insert(var.to_string(), (value, e.origin.clone()));
                        return;
                    }
                }
            }
        }
    }

    /// The TOML text, and warnings for what was dropped.
    fn to_toml(&self, group: &str, label_index: usize) -> (String, Vec<String>) {
        let mut w = Vec::new();
        let mut vip = Vec::<String>::new();
        let var = |name: &str| self.greatdb.get(name).map(|(v, o)| (v.as_deref(), o));
        let mut convert = |name: &str, f: &Convert| -> Option<String> {
            let (value, origin) = var(name)?;
            match f(value) {
                Ok(v) => v,
                Err(why) => {
                    w.push(format!(
                        "{origin}: greatdb_ha_{name} = {}: {why}; dropped",
                        value.unwrap_or("")
                    ));
                    None
                }
            }
        };
        let enable = convert("enable_mgr_vip", &|v| mysql_bool(v).map(Some));
        let write_vip = convert("mgr_vip_ip", &|v| ip(v));
        let mask = convert("mgr_vip_mask", &|v| match v.map(str::trim) {
            None | Some("") => Ok(None),
            Some(m) if m.contains('.') => mask_to_prefix(m).map(|p| Some(p.to_string())),
            Some(m) => match m.parse::<u8>() {
                Ok(p) if (1..=128).contains(&p) => Ok(Some(p.to_string())),
                _ => Err("not a dotted mask nor a prefix length".to_string()),
            },
        });
        let nic = convert("mgr_vip_nic", &|v| match v.map(str::trim) {
            None | Some("") => Ok(None),
            Some(n) => interface_name(n).map(|()| Some(n.to_string())),
        });
        let read_vips = convert("mgr_read_vip_ips", &|v| {
            let list: Vec<&str> = v
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let mut out = Vec::new();
            for s in list {
                out.push(quote(&ip(Some(s))?.unwrap_or_default()));
            }
            Ok((!out.is_empty()).then(|| format!("[{}]", out.join(", "))))
        });
        let floating = convert("mgr_read_vip_floating_type", &|v| match v.map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => FloatingType::parse(s)
                .map(|f| Some(quote(&f.to_string())))
                .ok_or_else(|| format!("must be {}", FloatingType::ALLOWED.join(" or "))),
        });
        let count = convert("send_arp_packge_times", &|v| {
            let n: i64 = v
                .unwrap_or("")
                .trim()
                .parse()
                .map_err(|_| "not an integer".to_string())?;
            Ok(Some(n.to_string()))
        });
        let gateway = convert("gateway_address", &|v| ip(v));
        let kill = convert("mgr_exit_primary_kill_connection_mode", &|v| {
            mysql_bool(v).map(Some)
        });
        let peer_port = convert("port", &|v| match v.unwrap_or("").trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(p.to_string())),
            _ => Err("not a port (1 to 65535)".to_string()),
        });
        // mysqld clamps an out-of-range value with a warning; do the same, visibly.
        let count = count.map(|c| {
            let n: i64 = c.parse().unwrap_or(5);
            let clamped = n.clamp(ANNOUNCE_COUNT_RANGE.0, ANNOUNCE_COUNT_RANGE.1);
            if clamped != n
                && let Some((_, origin)) = var("send_arp_packge_times")
            {
                    w.push(format!(
                        "{origin}: greatdb_ha_send_arp_packge_times = {n} is outside {}..{}; mysqld used {clamped}, so does vip.announce_count",
                        ANNOUNCE_COUNT_RANGE.0, ANNOUNCE_COUNT_RANGE.1
                    ));
            }
            clamped.to_string()
        });
        for (name, (_, origin)) in &self.greatdb {
            let why = match name.as_str() {
                "mgr_vip_broad" => "obsolete in greatdb_ha itself; nothing replaces it".to_string(),
                "force_change_mgr_vip" => {
                    "runtime-only (write ON to rebuild the bindings); with vip-agent run `vip-agent force-rebind`".to_string()
                }
                "vip_tope" => {
                    "runtime-only manual read-VIP placement; with vip-agent run `vip-agent set-topology \"uuid::vip; …\"`".to_string()
                }
                known if KNOWN.contains(&known) => continue,
                _ => "not a greatdb_ha setting vip-agent knows".to_string(),
            };
            w.push(format!("{origin}: greatdb_ha_{name}: {why}; dropped"));
        }

        let origin_of = |name: &str| {
            var(name)
                .map(|(v, o)| comment(&format!("greatdb_ha_{name} = {} ({o})", v.unwrap_or("ON"))))
        };
        let line =
            |vip: &mut Vec<String>, key: &str, value: Option<String>, name: &str, missing: &str| {
                match value {
                    Some(v) => vip.push(format!(
                        "{key} = {v}{}",
                        origin_of(name).unwrap_or_default()
                    )),
                    None if !missing.is_empty() => vip.push(format!("# {key}: {missing}")),
                    None => {}
                }
            };
        line(
            &mut vip,
            "enable",
            Some(enable.unwrap_or_else(|| "false".to_string())),
            "enable_mgr_vip",
            "",
        );
        if var("enable_mgr_vip").is_none() {
            vip.push("# greatdb_ha_enable_mgr_vip was not set: greatdb_ha's default is OFF; set enable = true to float the VIPs".to_string());
        }
        line(
            &mut vip,
            "write_vip",
            write_vip.map(|v| quote(&v)),
            "mgr_vip_ip",
            "greatdb_ha_mgr_vip_ip not set",
        );
        line(
            &mut vip,
            "prefix",
            mask,
            "mgr_vip_mask",
            "greatdb_ha_mgr_vip_mask not set: fill in the VIPs' prefix length, e.g. prefix = 24",
        );
        let label = nic.as_ref().map(|n| quote(&format!("{n}:{label_index}")));
        line(
            &mut vip,
            "nic",
            nic.map(|n| quote(&n)),
            "mgr_vip_nic",
            "greatdb_ha_mgr_vip_nic not set: fill in the interface, e.g. nic = \"eth0\"",
        );
        if let Some(label) = label {
            vip.push(format!(
                "label = {label}  # IPv4 alias label; every instance on one host needs its own"
            ));
        }
        line(&mut vip, "read_vips", read_vips, "mgr_read_vip_ips", "");
        line(
            &mut vip,
            "floating_type",
            floating,
            "mgr_read_vip_floating_type",
            "",
        );
        line(
            &mut vip,
            "announce_count",
            count,
            "send_arp_packge_times",
            "",
        );
        vip.push(format!(
            "announce_interval_ms = {DEFAULT_ANNOUNCE_INTERVAL_MS}  # greatdb_ha's fixed interval"
        ));
        line(
            &mut vip,
            "gateway",
            gateway.map(|v| quote(&v)),
            "gateway_address",
            "",
        );
        line(
            &mut vip,
            "kill_connections_on_demotion",
            kill,
            "mgr_exit_primary_kill_connection_mode",
            "",
        );

        let mysql = match (&self.socket, &self.port) {
            (Some((socket, o)), _) => format!(
                "socket = {}{}",
                quote(socket),
                comment(&format!("from socket ({o})"))
            ),
            (None, Some((port, o))) => match port.trim().parse::<u16>() {
                Ok(p) if p > 0 => format!(
                    "host = \"127.0.0.1\"\nport = {p}{}",
                    comment(&format!("from port ({o})"))
                ),
                _ => {
                    w.push(format!("{o}: port = {port}: not a port; using 3306"));
                    "host = \"127.0.0.1\"\nport = 3306".to_string()
                }
            },
            (None, None) => "host = \"127.0.0.1\"\nport = 3306  # mysqld's default; the group sets no port or socket".to_string(),
        };
        let name = instance_name(group, self);
        let peer = match peer_port {
            Some(p) => format!("port = {p}{}", origin_of("port").unwrap_or_default()),
            None => "port = 33062  # greatdb_ha's default".to_string(),
        };
        let toml = format!(
            "# vip-agent configuration imported from greatdb_ha settings in [{group}] by `vip-agent import-mycnf`.\n\
             # Fill in [mysql] user and password_file, then run `vip-agent check-config` on this file.\n\
             instance = {instance}\n\
             \n\
             [mysql]\n\
             {mysql}\n\
             # FILL IN: the MySQL account vip-agent polls the group with.\n\
             user = \"vip_agent\"\n\
             # FILL IN: a file whose first line is that account's password, readable only by vip-agent.\n\
             password_file = {password}\n\
             \n\
             [vip]\n\
             {vip}\n\
             \n\
             [peer]\n\
             {peer}\n\
             # FILL IN: the key every member's agent shares (openssl rand -hex 32 > FILE; chmod 600 FILE).\n\
             key_file = \"/etc/vip-agent/peer.key\"\n",
            group = printable(group),
            instance = quote(&name),
            password = quote(&format!("/etc/vip-agent/{name}.password")),
            vip = vip.join("\n"),
        );
        (toml, w)
    }
}

/// Turns a my.cnf value (`None`: a bare name) into a TOML value (`None`: leave unset).
type Convert = dyn Fn(Option<&str>) -> Result<Option<String>, String>;

/// The greatdb_ha variables carried over (short names).
const KNOWN: &[&str] = &[
    "enable_mgr_vip",
    "mgr_vip_ip",
    "mgr_vip_mask",
    "mgr_vip_nic",
    "port",
    "mgr_read_vip_ips",
    "mgr_read_vip_floating_type",
    "send_arp_packge_times",
    "gateway_address",
    "mgr_exit_primary_kill_connection_mode",
];

/// mysqld's boolean spellings; a bare name is ON.
fn mysql_bool(value: Option<&str>) -> Result<String, String> {
    match value.map(|v| v.trim().to_ascii_uppercase()).as_deref() {
        None | Some("ON" | "TRUE" | "1") => Ok("true".to_string()),
        Some("OFF" | "FALSE" | "0") => Ok("false".to_string()),
        _ => Err("not a boolean (ON, OFF, TRUE, FALSE, 1, 0)".to_string()),
    }
}

/// An IP address, empty = not set.
fn ip(value: Option<&str>) -> Result<Option<String>, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<IpAddr>()
            .map(|a| Some(a.to_string()))
            .map_err(|_| format!("`{s}` is not an IP address")),
    }
}

/// `  # text` as a trailing TOML comment: my.cnf values and file names are the
/// operator's, and a control character (a NUL, a newline in a file name) would make the
/// printed file something the config reader refuses, or worse, parse the rest as keys.
fn comment(text: &str) -> String {
    format!("  # {}", printable(text))
}

/// `text` with every control character but a tab written as `\u{..}`: safe in a TOML
/// comment.
fn printable(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
