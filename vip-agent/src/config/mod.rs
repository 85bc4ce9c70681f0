//! The agent's configuration: a TOML file, strictly validated before anything is touched.
//!
//! [`parse`] turns text into a [`Config`] or into EVERY problem it finds ([`ConfigErrors`]);
//! it does no I/O. [`check_host`] compares a config with facts about this host gathered by
//! [`HostFacts::gather`], and [`load`] does both plus the file checks (password file, TLS
//! files, peer key), for `vip-agent run` and `vip-agent check-config`.
//!
//! - [`file`]: TOML text → raw, typed values (unknown keys and wrong types collected).
//! - [`validate`]: raw values → [`Config`], every rule, pure.
//! - [`host`]: the host's interfaces and addresses, and the checks against them.
//! - [`mycnf`] and [`import`]: `vip-agent import-mycnf`, from greatdb_ha's my.cnf settings.
//! - [`greatdb`]: which greatdb_ha variable each key replaces.
//! - [`cli`]: the `check-config` and `import-mycnf` commands.

pub mod cli;
pub mod file;
pub mod greatdb;
pub mod host;
pub mod import;
pub mod mycnf;
pub mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use host::{HostFacts, HostInterface, check_host};

/// A validated configuration. Every field holds a value that passed its rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Names the pin folder and the log tag: `[A-Za-z0-9_-]{1,64}`.
    pub instance: String,
    pub mysql: MysqlConfig,
    pub vip: VipConfig,
    pub peer: PeerConfig,
    pub control: ControlConfig,
    pub datapath: DatapathConfig,
    pub coordination: CoordinationConfig,
    /// `Some` when the `[metrics]` table is present: serve Prometheus metrics.
    pub metrics: Option<MetricsConfig>,
}

/// How the agents decide who holds a VIP (docs/coordination.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinationMode {
    /// The primary's agent plans and has the old primary's agent confirm a release,
    /// binding after `peer.switchover_timeout_ms` without one.
    Handshake,
    /// Every VIP is held under a lease: the write VIP under a lease row the group
    /// commits, the read VIPs under sub-leases from its holder; the kernel enforces
    /// each lease's end.
    Lease,
}

impl fmt::Display for CoordinationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CoordinationMode::Handshake => "handshake",
            CoordinationMode::Lease => "lease",
        })
    }
}

/// `[coordination]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinationConfig {
    pub mode: CoordinationMode,
    /// How long a committed renewal keeps the write lease (and bounds a sub-lease).
    pub lease: Duration,
    /// How often the holder renews (and a member asks for its sub-leases).
    pub renew: Duration,
    /// The largest rate difference between two hosts' clocks, in parts per million.
    pub drift_ppm: u32,
}

/// How to reach the local mysqld.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MysqlEndpoint {
    Tcp { host: String, port: u16 },
    Socket(PathBuf),
}

impl fmt::Display for MysqlEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // An IPv6 literal needs brackets to be read back as host:port.
            MysqlEndpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            MysqlEndpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            MysqlEndpoint::Socket(path) => write!(f, "unix socket {}", path.display()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MysqlConfig {
    pub endpoint: MysqlEndpoint,
    pub user: String,
    /// The password is the first line of this file, trailing newline stripped.
    pub password_file: PathBuf,
    /// `Some` when the `[mysql.tls]` table is present: connect with TLS.
    pub tls: Option<TlsConfig>,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    pub poll_interval: Duration,
    /// Consecutive timed-out polls before mysqld counts as hung.
    pub hung_after_polls: u32,
}

/// TLS to the local mysqld. Without `ca` the system roots verify the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca: Option<PathBuf>,
    /// Client certificate and key: both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub verify_identity: bool,
}

/// Where read VIPs nobody else can take go (greatdb_ha_mgr_read_vip_floating_type).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FloatingType {
    #[default]
    ToPrimary,
    ToAnotherSecondary,
}

impl FloatingType {
    pub const ALLOWED: &[&str] = &["TO_PRIMARY", "TO_ANOTHER_SECONDARY"];

    /// Case-insensitive, as mysqld reads the enum variable.
    pub fn parse(s: &str) -> Option<FloatingType> {
        match s.to_ascii_uppercase().as_str() {
            "TO_PRIMARY" => Some(FloatingType::ToPrimary),
            "TO_ANOTHER_SECONDARY" => Some(FloatingType::ToAnotherSecondary),
            _ => None,
        }
    }
}

impl fmt::Display for FloatingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FloatingType::ToPrimary => "TO_PRIMARY",
            FloatingType::ToAnotherSecondary => "TO_ANOTHER_SECONDARY",
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct VipConfig {
    /// false: hold nothing (greatdb_ha_enable_mgr_vip = OFF).
    pub enable: bool,
    pub write_vip: Option<IpAddr>,
    /// Prefix length of every VIP (a dotted `mask` is converted).
    pub prefix: u8,
    /// Empty only when no VIP is configured.
    pub nic: String,
    /// IPv4 alias label, `<nic>:<suffix>`; how the agent recognises its own addresses.
    pub label: String,
    pub read_vips: Vec<IpAddr>,
    pub floating_type: FloatingType,
    pub announce_count: u32,
    pub announce_interval: Duration,
    /// Re-announce every VIP held here this often (switches and hosts on other NICs
    /// whose caches expire), or never.
    pub reannounce_interval: Option<Duration>,
    pub gateway: Option<IpAddr>,
    pub kill_connections_on_demotion: bool,
}

impl VipConfig {
    /// The write VIP then the read VIPs.
    pub fn all_vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.write_vip.iter().chain(&self.read_vips).copied()
    }
}

/// The peer port: how the agents of one group talk to each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub port: u16,
    /// The address the peer port listens on; unspecified (`::`) is every address.
    pub listen: IpAddr,
    /// `peer.allow`: the only networks that may connect. `None`: the hosts of this
    /// node's views (see [`crate::peer::hosts`]).
    pub allow: Option<Vec<ipnet::IpNet>>,
    /// Connections from one address at once.
    pub max_connections_per_host: u32,
    /// Optional here; the agent requires it only where it needs one.
    pub key_file: Option<PathBuf>,
    /// One exchange with another agent (connect, request, answer).
    pub timeout: Duration,
    /// How long a new primary waits for the old primary's agent to confirm that it
    /// released the write VIP before binding it anyway. At least `timeout`.
    pub switchover_timeout: Duration,
    /// Peer connections served at once.
    pub max_connections: u32,
    /// How often the primary re-pushes the placement to the other agents.
    pub resync_interval: Duration,
}

/// The control socket: how `vip-agent status` and the other verbs reach the running agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    /// A unix socket, mode 0600; default `/run/vip-agent/<instance>.sock`.
    pub socket: PathBuf,
}

/// The eBPF datapath: the guard for released VIPs, connection tracking, the reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Attach the XDP guard to the VIP NIC.
    pub guard: bool,
    pub xdp_mode: XdpMode,
    /// How long after releasing a VIP the guard answers its stale clients with a RST
    /// and leaves ARP / NS for it unanswered.
    pub guard_window: Duration,
    /// Record the TCP connections to this node's VIPs (tp_btf inet_sock_set_state).
    pub track: bool,
    /// The size of the LRU map of tracked connections.
    pub tracked_connections: u32,
    /// Refuse to start when no way to reset a VIP's connections works.
    pub require_reset: bool,
    /// The TCP port clients reach mysqld on through the VIPs: what the kill-all option
    /// (`vip.kill_connections_on_demotion`) resets.
    pub client_port: u16,
}

/// The Prometheus endpoint: `GET /metrics` over plain HTTP, without authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The address and port it listens on (IPv4, or IPv6 in brackets).
    pub listen: SocketAddr,
}

/// How the XDP guard attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode where the driver has it, else generic.
    #[default]
    Auto,
    Native,
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// One problem in the configuration, printed on one line:
/// `vip.announce_count = 25: must be between 3 and 20 (greatdb_ha_send_arp_packge_times)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, e.g. `vip.read_vips[1]`; empty for problems with the file as a whole.
    pub key: String,
    /// The offending value as written in TOML, when there is one.
    pub value: Option<String>,
    /// 1-based line and column, when known (syntax, type and unknown-key errors).
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, value: Option<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            value,
            location: None,
            message: message.into(),
        }
    }

    /// An error about a value: `key = value: message`.
    pub fn value(
        key: impl Into<String>,
        value: impl fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        Self::new(key, Some(value.to_string()), message)
    }

    /// An error about a key, without a value (missing, conflicting).
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(key, None, message)
    }

    pub fn at(mut self, location: Option<(usize, usize)>) -> Self {
        self.location = location;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str("config")?;
        } else {
            f.write_str(&self.key)?;
        }
        if let Some(value) = &self.value {
            write!(f, " = {value}")?;
        }
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(name) = greatdb::variable_for_key(&self.key) {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

/// Every problem found, in file order of the checks; printed one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parse + validate everything that needs no I/O; `Err` holds EVERY problem found.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let (config, errors) = parse_partial(text);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(errors)),
    }
}

/// The control socket a config names, for the CLI verbs that talk to the running agent:
/// only `instance` and `[control]` must be valid, so a file with problems elsewhere (or
/// one written for another host) still gives it. `Err` holds the problems that matter.
pub fn control_socket(text: &str) -> Result<PathBuf, ConfigErrors> {
    let (config, errors) = parse_partial(text);
    let relevant: Vec<ConfigError> = errors
        .into_iter()
        .filter(|e| e.key.is_empty() || e.key == "instance" || e.key.starts_with("control"))
        .collect();
    match config {
        Some(config) if relevant.is_empty() => Ok(config.control.socket),
        _ => Err(ConfigErrors(relevant)),
    }
}

/// The best-effort config (bad values replaced by defaults) and the problems. `None` only
/// when the text is not TOML at all.
fn parse_partial(text: &str) -> (Option<Config>, Vec<ConfigError>) {
    match file::read(text) {
        Ok((raw, mut errors)) => {
            let (config, more) = validate::validate(&raw);
            errors.extend(more);
            (Some(config), errors)
        }
        Err(errors) => (None, errors),
    }
}

/// Reads the file, parses, gathers [`HostFacts`] and checks the host and the files the
/// config names: used by `run` and `check-config`. All problems come back at once.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_key_owners(path, &key_owners())
}

/// [`load`], with the users who may own the peer key named: `prepare`, run by root for
/// a service user, checks the key for that user.
pub fn load_with_key_owners(path: &Path, key_owners: &[u32]) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::key(
            "",
            format!("cannot read {}: {e}", path.display()),
        )])
    })?;
    let (config, mut errors) = parse_partial(&text);
    let Some(config) = config else {
        return Err(ConfigErrors(errors));
    };
    let mut late = check_files(&config, key_owners);
    match HostFacts::gather() {
        Ok(facts) => late.extend(check_host(&config, &facts)),
        Err(e) => late.push(ConfigError::key(
            "vip.nic",
            format!("cannot list this host's interfaces: {e}"),
        )),
    }
    // A key already reported as invalid was replaced by a default: checking that default
    // against the host would only add noise.
    late.retain(|e| !errors.iter().any(|p| p.key == e.key));
    errors.extend(late);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The files the config names must be readable now, not at the first failover.
pub fn check_files(cfg: &Config, key_owners: &[u32]) -> Vec<ConfigError> {
    let mut files: Vec<(&str, &Path)> = vec![("mysql.password_file", &cfg.mysql.password_file)];
    if let Some(tls) = &cfg.mysql.tls {
        for (key, path) in [
            ("mysql.tls.ca", &tls.ca),
            ("mysql.tls.cert", &tls.cert),
            ("mysql.tls.key", &tls.key),
        ] {
            if let Some(path) = path {
                files.push((key, path));
            }
        }
    }
    let mut errors = Vec::new();
    match &cfg.peer.key_file {
        // The key's own rules (length, hex, permissions) once the file is readable.
        Some(path) if path.is_file() => {
            if let Err(e) = crate::peer::key::Key::load_owned_by(path, key_owners) {
                // The key error names the key and path itself; keep only its message.
                let text = e.to_string();
                let prefix = format!("peer.key_file {}: ", path.display());
                let message = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
                errors.push(ConfigError::value(
                    "peer.key_file",
                    quote(&path.display().to_string()),
                    message,
                ));
            }
        }
        Some(path) => files.push(("peer.key_file", path)),
        None => errors.push(ConfigError::key(
            "peer.key_file",
            "missing: the agents authenticate every peer frame with a shared key. Create one \
             with `openssl rand -hex 32 > /etc/vip-agent/peer.key && chmod 600 \
             /etc/vip-agent/peer.key`, copy it to every member, and set peer.key_file",
        )),
    }
    errors.extend(
        files
            .into_iter()
            .filter(|(_, path)| !path.as_os_str().is_empty())
            .filter_map(|(key, path)| {
                let problem = match std::fs::metadata(path) {
                    Err(e) => Some(format!("cannot read: {e}")),
                    Ok(m) if !m.is_file() => Some("not a regular file".to_string()),
                    Ok(m) if key == "mysql.password_file" => password_mode_problem(path, &m)
                        .or_else(|| {
                            std::fs::File::open(path)
                                .err()
                                .map(|e| format!("cannot read: {e}"))
                        }),
                    Ok(_) => std::fs::File::open(path)
                        .err()
                        .map(|e| format!("cannot read: {e}")),
                };
                problem.map(|p| ConfigError::value(key, quote(&path.display().to_string()), p))
            }),
    );
    errors
}

/// The password file must not be readable by every user of the host.
pub fn password_mode_problem(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    (mode & 0o004 != 0).then(|| {
        format!(
            "is readable by every user of this host (mode {mode:04o}); run chmod o-rwx {} \
             (the packaged setup: root:vip-agent, mode 0640)",
            path.display()
        )
    })
}

/// Who may own the peer key as seen from here: root, this process's user, and the
/// packaged service user `vip-agent` (check-config usually runs as root for an agent
/// that will run as that user).
fn key_owners() -> Vec<u32> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let mut owners = vec![0, unsafe { libc::geteuid() }];
    if let Ok(Some(user)) = nix::unistd::User::from_name("vip-agent") {
        owners.push(user.uid.as_raw());
    }
    owners
}

/// A string as TOML writes it, for error messages.
pub(crate) fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
