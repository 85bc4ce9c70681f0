//! The public face of the simulator: building a group, and the controller that scripts it.
//!
//! Members are addressed by index (0-based, in the order they were added); member `i` has
//! server_uuid `00000000-0000-0000-0000-{i+1:012}`, so uuids sort like indexes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

use super::auth::AuthPlugin;
use super::model::{Event, MemberInfo, MemberRow, Plugin, Timings};
use super::server::{Endpoint, Listen, MemberAddr, Server};
use super::shim::Shared;
use super::sql::{Column, Value};
use super::state::World;

/// MEMBER_VERSION of every member; the server version string adds "-sim".
pub const MEMBER_VERSION: &str = "8.0.36";
/// group_replication_member_weight's default.
pub const DEFAULT_WEIGHT: u32 = 50;

/// The server_uuid of member `i`.
pub fn uuid_of(i: usize) -> String {
    format!("00000000-0000-0000-0000-{:012}", i + 1)
}

/// How one member is set up.
#[derive(Debug)]
pub struct MemberSpec {
    listen: Listen,
    report_host: Option<String>,
    port: Option<u16>,
    hostname: Option<String>,
    weight: u32,
    plugin: Plugin,
}

impl MemberSpec {
    /// Listening on TCP in the caller's network namespace (port 0: any free port).
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::new(Listen::Tcp(addr))
    }

    /// Listening on TCP inside network namespace `netns` (an `ip netns` name).
    pub fn tcp_in_netns(netns: &str, addr: SocketAddr) -> Self {
        Self::new(Listen::TcpInNetns {
            netns: netns.to_owned(),
            addr,
        })
    }

    /// Listening on a TCP listener bound by the caller (e.g. inside a lab host's namespace
    /// with `netns::run_in`). Going down and up re-binds the same address there.
    pub fn listener(listener: std::net::TcpListener) -> Self {
        Self::new(Listen::Listener(listener))
    }

    /// Listening on a unix socket.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::new(Listen::Unix(path.into()))
    }

    fn new(listen: Listen) -> Self {
        MemberSpec {
            listen,
            report_host: None,
            port: None,
            hostname: None,
            weight: DEFAULT_WEIGHT,
            plugin: Plugin::Started,
        }
    }

    /// MEMBER_HOST and @@report_host. Default: the listening IP (127.0.0.1 if it is a
    /// wildcard), or "localhost" for a unix socket.
    pub fn report_host(mut self, host: impl Into<String>) -> Self {
        self.report_host = Some(host.into());
        self
    }

    /// MEMBER_PORT and @@port. Default: the TCP port bound, or 3306 for a unix socket.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// @@hostname. Default: `sim-member-<i>`.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// group_replication_member_weight. Default 50.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The plugin at start: `Started` (default: ONLINE in the group), `NotStarted` or
    /// `NotLoaded` (outside the group).
    pub fn plugin(mut self, plugin: Plugin) -> Self {
        self.plugin = plugin;
        self
    }
}

/// Builds and starts a [`SimGroup`]. Defaults: user "sim", password "sim",
/// caching_sha2_password, single-primary, [`Timings::default`].
#[derive(Debug)]
pub struct SimGroupBuilder {
    specs: Vec<MemberSpec>,
    user: String,
    password: String,
    auth_plugin: AuthPlugin,
    timings: Timings,
    single_primary: bool,
}

impl SimGroupBuilder {
    /// Adds `n` members listening on 127.0.0.1, each on a free port.
    pub fn members(mut self, n: usize) -> Self {
        let any_port = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        self.specs.extend((0..n).map(|_| MemberSpec::tcp(any_port)));
        self
    }

    /// Adds one member.
    pub fn member(mut self, spec: MemberSpec) -> Self {
        self.specs.push(spec);
        self
    }

    /// Changes what member `i` (added before) reports as MEMBER_HOST: a wrong
    /// report_host, or a name that resolves to another member's host.
    pub fn report_host_of(mut self, i: usize, host: impl Into<String>) -> Self {
        if let Some(spec) = self.specs.get_mut(i) {
            spec.report_host = Some(host.into());
        }
        self
    }

    /// The one account every member accepts.
    pub fn user(mut self, user: &str, password: &str) -> Self {
        self.user = user.to_owned();
        self.password = password.to_owned();
        self
    }

    pub fn auth_plugin(mut self, plugin: AuthPlugin) -> Self {
        self.auth_plugin = plugin;
        self
    }

    /// Silence before peers show a member UNREACHABLE.
    pub fn unreachable_after(mut self, d: Duration) -> Self {
        self.timings.unreachable_after = d;
        self
    }

    /// Time UNREACHABLE before a majority expels (group_replication_member_expel_timeout).
    pub fn expel_after(mut self, d: Duration) -> Self {
        self.timings.expel_after = d;
        self
    }

    /// A blocked minority goes to ERROR this long after losing its majority.
    pub fn unreachable_majority_timeout(mut self, d: Duration) -> Self {
        self.timings.unreachable_majority_timeout = Some(d);
        self
    }

    /// How long the rejoin path stays OFFLINE, then RECOVERING.
    pub fn rejoin_delays(mut self, offline: Duration, recovering: Duration) -> Self {
        self.timings.rejoin_offline_for = offline;
        self.timings.recovering_for = recovering;
        self
    }

    /// A new primary keeps super_read_only ON this long.
    pub fn primary_writable_after(mut self, d: Duration) -> Self {
        self.timings.primary_writable_after = d;
        self
    }

    /// Whether members in ERROR rejoin by themselves when the network heals.
    pub fn auto_rejoin(mut self, on: bool) -> Self {
        self.timings.auto_rejoin = on;
        self
    }

    /// Starts in multi-primary mode.
    pub fn multi_primary(mut self) -> Self {
        self.single_primary = false;
        self
    }

    /// Binds every listener and starts serving. Must run inside a tokio runtime.
    pub fn start(self) -> anyhow::Result<SimGroup> {
        ensure!(!self.specs.is_empty(), "a group needs members");
        let mut infos = Vec::new();
        let mut plugins = Vec::new();
        let mut listens = Vec::new();
        for (i, spec) in self.specs.into_iter().enumerate() {
            infos.push(MemberInfo {
                uuid: uuid_of(i),
                report_host: spec.report_host.unwrap_or_default(),
                hostname: spec.hostname.unwrap_or_else(|| format!("sim-member-{i}")),
                port: spec.port.unwrap_or(0),
                version: MEMBER_VERSION.to_owned(),
                weight: spec.weight,
            });
            plugins.push(spec.plugin);
            listens.push(spec.listen);
        }
        // The world needs the ports, the servers need the world: bind against a
        // placeholder, then fill in what the listeners got.
        let placeholder = World::new(
            Vec::new(),
            Vec::new(),
            true,
            Timings::default(),
            Instant::now(),
        );
        let shared = Arc::new(Shared::new(
            placeholder,
            self.user,
            self.password,
            self.auth_plugin,
        ));
        let mut servers = Vec::new();
        for (i, listen) in listens.into_iter().enumerate() {
            let server = Server::start(i, listen, shared.clone())
                .with_context(|| format!("starting sim member {i}"))?;
            let info = &mut infos[i];
            match server.addr() {
                MemberAddr::Tcp(addr) => {
                    if info.port == 0 {
                        info.port = addr.port();
                    }
                    if info.report_host.is_empty() {
                        info.report_host = if addr.ip().is_unspecified() {
                            Ipv4Addr::LOCALHOST.to_string()
                        } else {
                            addr.ip().to_string()
                        };
                    }
                }
                MemberAddr::Unix(_) => {
                    if info.port == 0 {
                        info.port = 3306;
                    }
                    if info.report_host.is_empty() {
                        info.report_host = "localhost".to_owned();
                    }
                }
            }
            servers.push(server);
        }
        let world = World::new(
            infos,
            plugins,
            self.single_primary,
            self.timings,
            Instant::now(),
        );
        *shared.world.lock().unwrap() = world;
        Ok(SimGroup { shared, servers })
    }
}

/// A running simulated MGR group. Dropping it closes every listener and connection.
///
/// Transitions that only change group state are plain methods; those that open or close
/// sockets ([`SimGroup::set_endpoint`], [`SimGroup::crash`], [`SimGroup::restart`]) are
/// async and return once the sockets are closed or bound.
pub struct SimGroup {
    shared: Arc<Shared>,
    servers: Vec<Server>,
}

impl SimGroup {
    /// Three members on 127.0.0.1, user `vip` / `secret`, with short timings: what the
    /// unprivileged suites use.
    pub fn fast() -> SimGroupBuilder {
        SimGroup::builder()
            .members(3)
            .user("vip", "secret")
            .unreachable_after(Duration::from_millis(60))
            .expel_after(Duration::from_millis(120))
            .rejoin_delays(Duration::from_millis(30), Duration::from_millis(60))
    }

    pub fn builder() -> SimGroupBuilder {
        SimGroupBuilder {
            specs: Vec::new(),
            user: "sim".to_owned(),
            password: "sim".to_owned(),
            auth_plugin: AuthPlugin::default(),
            timings: Timings::default(),
            single_primary: true,
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.shared.world()
    }

    fn check(&self, i: usize) -> anyhow::Result<()> {
        ensure!(
            i < self.servers.len(),
            "no member {i} (the group has {})",
            self.servers.len()
        );
        Ok(())
    }

    // ----- reading -----

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Member `i`'s server_uuid.
    pub fn uuid(&self, i: usize) -> String {
        uuid_of(i)
    }

    /// The member with this server_uuid.
    pub fn index_of(&self, uuid: &str) -> anyhow::Result<usize> {
        self.world().index_of(uuid)
    }

    /// Where clients reach member `i`.
    pub fn addr(&self, i: usize) -> MemberAddr {
        self.servers[i].addr().clone()
    }

    /// mysql_async options for member `i`, with the group's user and password.
    pub fn opts(&self, i: usize) -> mysql_async::OptsBuilder {
        let opts = mysql_async::OptsBuilder::default()
            .user(Some(self.shared.user.clone()))
            .pass(Some(self.shared.password.clone()))
            .prefer_socket(false);
        match self.addr(i) {
            MemberAddr::Tcp(addr) => opts
                .ip_or_hostname(addr.ip().to_string())
                .tcp_port(addr.port()),
            MemberAddr::Unix(path) => opts.socket(Some(path.to_string_lossy().into_owned())),
        }
    }

    /// What member `i` answers for replication_group_members right now (its own view).
    pub fn rows(&self, i: usize) -> Vec<MemberRow> {
        self.world().rows(i)
    }

    /// The agents' lease row as the group committed it (`vip_agent.write_lease`).
    pub fn lease_row(&self) -> Option<super::lease_table::Row> {
        self.world().lease_row().cloned()
    }

    /// Member `i`'s @@super_read_only right now.
    pub fn super_read_only(&self, i: usize) -> bool {
        self.world().super_read_only(i)
    }

    /// What member `i`'s mysqld does with clients.
    pub fn endpoint(&self, i: usize) -> Endpoint {
        self.servers[i].endpoint()
    }

    /// Everything that happened so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.world().events().to_vec()
    }

    /// The event log as text, one event per line (for assertion messages).
    pub fn event_log(&self) -> String {
        self.events().iter().map(|e| format!("{e}\n")).collect()
    }

    // ----- scripting -----

    /// mysqld of member `i` dies: connections refused, and the others see it UNREACHABLE
    /// after `unreachable_after`, then expel it after `expel_after` (electing a new primary
    /// if it was the primary).
    pub async fn crash(&self, i: usize) -> anyhow::Result<()> {
        self.check(i)?;
        self.servers[i].set_endpoint(Endpoint::Down).await?;
        self.world().crash(i, Instant::now())
    }

    /// mysqld of member `i` starts again, with group replication not started (one OFFLINE
    /// row with empty fields); [`SimGroup::rejoin`] brings it back into the group.
    pub async fn restart(&self, i: usize) -> anyhow::Result<()> {
        self.check(i)?;
        self.world().restart(i, Instant::now())?;
        self.servers[i].set_endpoint(Endpoint::Serving).await?;
        Ok(())
    }

    /// Planned switchover to member `i` (group_replication_set_as_primary).
    pub fn switchover(&self, i: usize) -> anyhow::Result<()> {
        self.check(i)?;
        self.world().switchover(i, Instant::now())
    }

    /// Cuts member `i` off: it keeps seeing itself ONLINE and the others UNREACHABLE,
    /// then, when the others expel it, ERROR alone; the others see it disappear.
    pub fn expel(&self, i: usize) -> anyhow::Result<()> {
        self.check(i)?;
        self.world().expel(i, Instant::now())
    }

    /// Splits the network into these sides (members not listed are each alone).
    pub fn partition(&self, sides: &[&[usize]]) -> anyhow::Result<()> {
        self.world().partition(sides, Instant::now())
    }

    /// Joins the network again. Expelled members learn it (ERROR) and, with auto-rejoin
    /// (the default), come back through OFFLINE → RECOVERING → ONLINE SECONDARY.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.world().heal(Instant::now())
    }

    /// START GROUP_REPLICATION on member `i`: OFFLINE → RECOVERING → ONLINE SECONDARY.
    pub fn rejoin(&self, i: usize) -> anyhow::Result<()> {
        self.check(i)?;
        self.world().rejoin(i, Instant::now())
    }

    /// Every ONLINE member PRIMARY; single_primary_mode 0, enforce_update_everywhere 1.
    pub fn set_multi_primary(&self) {
        self.world().set_multi_primary(Instant::now());
    }

    /// Back to single-primary, with `primary` (or an elected member) as primary.
    pub fn set_single_primary(&self, primary: Option<usize>) -> anyhow::Result<()> {
        if let Some(i) = primary {
            self.check(i)?;
        }
        self.world().set_single_primary(primary, Instant::now());
        Ok(())
    }

    /// Unloads the plugin (`NotLoaded`) or resets it to never-started (`NotStarted`); a
    /// member in the group leaves it cleanly first.
    pub fn set_plugin(&self, i: usize, plugin: Plugin) -> anyhow::Result<()> {
        self.check(i)?;
        self.world().set_plugin(i, plugin, Instant::now())
    }

    /// Fault injection: every member shows `column` of member `i`'s row as `value`
    /// (`None` puts it back), e.g. a MEMBER_PORT above 65535 or an unknown
    /// MEMBER_STATE, to check what the agent makes of a row it cannot read.
    pub fn corrupt_cell(
        &self,
        i: usize,
        column: Column,
        value: Option<Value>,
    ) -> anyhow::Result<()> {
        self.check(i)?;
        self.world().corrupt_cell(i, column, value, Instant::now());
        Ok(())
    }

    /// group_replication_member_weight of member `i`, for later elections.
    pub fn set_weight(&self, i: usize, weight: u32) -> anyhow::Result<()> {
        self.check(i)?;
        self.world().set_weight(i, weight, Instant::now());
        Ok(())
    }

    /// What member `i`'s mysqld does with clients (no effect on the group).
    pub async fn set_endpoint(&self, i: usize, endpoint: Endpoint) -> anyhow::Result<()> {
        self.check(i)?;
        ensure!(
            endpoint == Endpoint::Down || self.world().alive(i),
            "member {i} crashed: restart() it first"
        );
        self.servers[i]
            .set_endpoint(endpoint)
            .await
            .with_context(|| format!("sim member {i}: {endpoint:?}"))?;
        self.world().note(
            Some(i),
            format!("mysqld endpoint {endpoint:?}"),
            Instant::now(),
        );
        Ok(())
    }
}
