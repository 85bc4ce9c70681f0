//! A whole deployment in the lab: a simulated MGR group with one member per lab host, a
//! vip-agent beside each member, and clients. Used by the end-to-end tests and by
//! `cargo xtask demo`, so both drive exactly the same setup.
//!
//! Each member listens on [::]:3306 (dual stack) inside its host, so it answers on the
//! host's own addresses and on any VIP bound there, IPv4 or IPv6, as a mysqld with
//! `bind_address=*` does. Each agent
//! reaches its own mysqld on 127.0.0.1:3306 and logs JSON to a file the cluster reads back
//! for timelines.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use mysql_async::prelude::Queryable;

use crate::lab::{Host, Lab, Proc, wait_for};
use crate::sim::{MemberSpec, SimGroup, SimGroupBuilder};

pub const MYSQL_USER: &str = "vip_agent";
pub const MYSQL_PASSWORD: &str = "demo-secret";
pub const MYSQL_PORT: u16 = 3306;

/// What each agent is configured with.
#[derive(Clone, Debug)]
pub struct VipSettings {
    pub write_vip: IpAddr,
    pub prefix: u8,
    pub label: String,
    pub announce_count: u32,
    pub announce_interval_ms: u64,
    pub poll_interval_ms: u64,
    pub timeout_ms: u64,
    pub hung_after_polls: u32,
    pub instance: String,
    pub read_vips: Vec<IpAddr>,
    /// TO_PRIMARY or TO_ANOTHER_SECONDARY.
    pub floating_type: String,
    pub peer_port: u16,
    pub peer_timeout_ms: u64,
    pub switchover_timeout_ms: u64,
    pub resync_interval_ms: u64,
    /// `Some("netlink")` makes the agents reset connections with netlink SOCK_DESTROY
    /// instead of the iter/tcp program (VIP_AGENT_RESET_PATH).
    pub reset_path: Option<String>,
    /// vip.kill_connections_on_demotion.
    pub kill_on_demotion: bool,
    /// Capabilities the agents run without, as setpriv names them ("bpf,perfmon"): the
    /// agent is started under `setpriv --bounding-set=-bpf,-perfmon`.
    pub drop_caps: Option<String>,
    /// `false` writes `datapath.guard = false` and `datapath.track = false`: the agent
    /// then runs without CAP_BPF / CAP_PERFMON.
    pub ebpf: bool,
    /// vip.reannounce_interval_ms (0: off).
    pub reannounce_interval_ms: u64,
    /// Run the agents as this user with exactly the packaged unit's capabilities, as
    /// systemd would: in a private mount namespace with bpffs mounted mode 0700 (as
    /// systemd mounts it), `vip-agent prepare` as root, then the agent under setpriv
    /// (see [`UNIT_CAPS`]).
    pub run_as: Option<String>,
    /// `[metrics] listen = …`, e.g. "127.0.0.1:9748" (each host's own loopback, inside
    /// its namespace); `None` leaves the table out: no endpoint.
    pub metrics_listen: Option<String>,
    /// `peer.allow`; `None` leaves it out (the members' hosts may connect).
    pub peer_allow: Option<Vec<String>>,
    /// The agents see this file as /etc/resolv.conf (in a private mount namespace),
    /// e.g. to point them at a name server that never answers.
    pub resolv_conf: Option<PathBuf>,
    /// `false`: the agents find no bpffs at /sys/fs/bpf (a tmpfs over it, in a private
    /// mount namespace), as in a container without it, so nothing can be pinned.
    pub bpffs: bool,
    /// `Some((lease_ms, renew_ms))`: `[coordination] mode = "lease"` with those timings
    /// (the group needs the lease table, which the simulated group always has).
    pub lease: Option<(u64, u64)>,
}

/// The capabilities of packaging/vip-agent@.service, as setpriv names them.
pub const UNIT_CAPS: &str = "net_admin,net_raw,bpf,perfmon";

impl Default for VipSettings {
    fn default() -> Self {
        VipSettings {
            write_vip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 50)),
            prefix: 24,
            label: "eth0:0".into(),
            announce_count: 5,
            announce_interval_ms: 100,
            poll_interval_ms: 100,
            timeout_ms: 500,
            hung_after_polls: 3,
            instance: "demo".into(),
            read_vips: Vec::new(),
            floating_type: "TO_PRIMARY".into(),
            peer_port: 33062,
            peer_timeout_ms: 1000,
            switchover_timeout_ms: 3000,
            resync_interval_ms: 20000,
            reset_path: None,
            kill_on_demotion: false,
            drop_caps: None,
            ebpf: true,
            reannounce_interval_ms: 0,
            run_as: None,
            metrics_listen: None,
            peer_allow: None,
            resolv_conf: None,
            bpffs: true,
            lease: None,
        }
    }
}

impl VipSettings {
    /// The config file text for an agent beside a member.
    pub fn toml(&self, password_file: &Path, key_file: &Path, socket: &Path) -> String {
        let read_vips: Vec<String> = self.read_vips.iter().map(|v| format!("\"{v}\"")).collect();
        let allow = match &self.peer_allow {
            Some(list) => {
                let quoted: Vec<String> = list.iter().map(|a| format!("\"{a}\"")).collect();
                format!("allow = [{}]\n", quoted.join(", "))
            }
            None => String::new(),
        };
        let mut metrics = match &self.metrics_listen {
            Some(listen) => format!("\n[metrics]\nlisten = \"{listen}\"\n"),
            None => String::new(),
        };
        if let Some((lease, renew)) = self.lease {
            metrics.push_str(&format!(
                "\n[coordination]\nmode = \"lease\"\nlease_ms = {lease}\nrenew_ms = {renew}\n"
            ));
        }
        format!(
            r#"instance = "{instance}"

[mysql]
host = "127.0.0.1"
port = {port}
user = "{user}"
password_file = "{pw}"
connect_timeout_ms = {t}
query_timeout_ms = {t}
poll_interval_ms = {poll}
hung_after_polls = {hung}

[vip]
enable = true
write_vip = "{vip}"
prefix = {prefix}
nic = "eth0"
label = "{label}"
announce_count = {count}
announce_interval_ms = {interval}
reannounce_interval_ms = {reannounce}
read_vips = [{read_vips}]
floating_type = "{floating}"
kill_connections_on_demotion = {kill}

[peer]
port = {peer_port}
key_file = "{key_file}"
timeout_ms = {peer_timeout}
switchover_timeout_ms = {switchover}
resync_interval_ms = {resync}
{allow}
[control]
socket = "{socket}"
{datapath}{metrics}"#,
            instance = self.instance,
            port = MYSQL_PORT,
            user = MYSQL_USER,
            pw = password_file.display(),
            t = self.timeout_ms,
            poll = self.poll_interval_ms,
            hung = self.hung_after_polls,
            vip = self.write_vip,
            prefix = self.prefix,
            label = self.label,
            count = self.announce_count,
            interval = self.announce_interval_ms,
            reannounce = self.reannounce_interval_ms,
            read_vips = read_vips.join(", "),
            floating = self.floating_type,
            kill = self.kill_on_demotion,
            peer_port = self.peer_port,
            key_file = key_file.display(),
            peer_timeout = self.peer_timeout_ms,
            switchover = self.switchover_timeout_ms,
            resync = self.resync_interval_ms,
            allow = allow,
            socket = socket.display(),
            datapath = if self.ebpf {
                ""
            } else {
                "\n[datapath]\nguard = false\ntrack = false\n"
            },
        )
    }
}

/// The agent started the way packaging/vip-agent@.service starts it: `vip-agent
/// prepare` as root (ExecStartPre=+), then `vip-agent run` as `user` with the unit's
/// capabilities only (User=, AmbientCapabilities=, CapabilityBoundingSet=,
/// NoNewPrivileges=). bpffs is mounted afresh, mode 0700 as systemd mounts it, in a
/// private mount namespace, so the test sees what a service user meets on a real host;
/// the pins go with the namespace when the agent exits.
fn as_service_user(agent: &Path, config: &Path, user: &str) -> Command {
    let caps = UNIT_CAPS
        .split(',')
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "set -e; mount -t bpf -o mode=0700 bpf /sys/fs/bpf; \
         \"$0\" prepare --config \"$1\" --user \"$2\" >&2; \
         exec setpriv --reuid=\"$2\" --regid=\"$2\" --init-groups --no-new-privs \
         --inh-caps=-all,{caps} --ambient-caps=-all,{caps} --bounding-set=-all,{caps} \
         -- \"$0\" run --config \"$1\""
    );
    let mut cmd = in_private_mounts(&script);
    cmd.arg(agent).arg(config).arg(user);
    cmd
}

/// `sh -c script` in a private mount namespace (arguments follow as `$0`, `$1`, …).
fn in_private_mounts(script: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
    ]);
    cmd
}

/// The agent in a private mount namespace with what `settings` changes in it: another
/// /etc/resolv.conf, no bpffs. The script's `$1` is the resolv.conf to use (or `-`).
fn private_mounts(agent: &Path, settings: &VipSettings) -> Command {
    let mut script = String::from("set -e; ");
    if !settings.bpffs {
        script.push_str("mount -t tmpfs none /sys/fs/bpf; ");
    }
    if settings.resolv_conf.is_some() {
        script.push_str("mount --bind \"$1\" /etc/resolv.conf; ");
    }
    script.push_str("shift; exec \"$0\" \"$@\"");
    let mut cmd = in_private_mounts(&script);
    cmd.arg(agent)
        .arg(settings.resolv_conf.as_deref().unwrap_or(Path::new("-")));
    cmd
}

/// A running agent and where its logs go.
pub struct Agent {
    pub proc: Proc,
    pub log: PathBuf,
    pub config: PathBuf,
    /// Its control socket.
    pub socket: PathBuf,
}

/// The peer key every agent of a cluster shares (hex, as `openssl rand -hex 32` writes).
pub const PEER_KEY: &str = "5f0c2d8a9b7e41c3a6d2f1e0b9c8a7d6e5f4c3b2a1908f7e6d5c4b3a29181706";

/// The lab, the group and the agents. Dropping it stops everything and removes it all.
pub struct Cluster {
    pub group: SimGroup,
    pub agents: Vec<Option<Agent>>,
    pub settings: VipSettings,
    agent_bin: PathBuf,
    dir: PathBuf,
    // Declared last: dropped after the group and the agents.
    pub lab: Lab,
}

impl Cluster {
    /// Builds a lab with `hosts` hosts and one client, a group with one member per host,
    /// and starts an agent on every host. Must be called inside a tokio runtime.
    pub fn start(
        hosts: usize,
        settings: VipSettings,
        agent_bin: PathBuf,
        group: impl FnOnce(SimGroupBuilder) -> SimGroupBuilder,
    ) -> Result<Cluster> {
        Cluster::start_with(hosts, settings, Some(agent_bin), group)
    }

    /// The same lab and group with no vip-agent at all, for what manages the VIP
    /// instead (keepalived, a hook script) in the benchmarks that compare them.
    /// `settings` only says which write VIP the holders are read for.
    pub fn start_without_agents(
        hosts: usize,
        settings: VipSettings,
        group: impl FnOnce(SimGroupBuilder) -> SimGroupBuilder,
    ) -> Result<Cluster> {
        Cluster::start_with(hosts, settings, None, group)
    }

    fn start_with(
        hosts: usize,
        settings: VipSettings,
        agent_bin: Option<PathBuf>,
        group: impl FnOnce(SimGroupBuilder) -> SimGroupBuilder,
    ) -> Result<Cluster> {
        let lab = Lab::builder().hosts(hosts).clients(1).build()?;
        let mut builder = SimGroup::builder().user(MYSQL_USER, MYSQL_PASSWORD);
        for host in lab.hosts() {
            let any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, MYSQL_PORT));
            builder = builder.member(
                MemberSpec::tcp_in_netns(host.ns(), any)
                    .report_host(host.ipv4().to_string())
                    .port(MYSQL_PORT),
            );
        }
        let group = group(builder).start()?;
        let dir = std::env::temp_dir().join(format!("vip-cluster-{}", lab.id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cluster = Cluster {
            group,
            agents: Vec::new(),
            settings,
            agent_bin: agent_bin.clone().unwrap_or_default(),
            dir,
            lab,
        };
        cluster.write_key_file(PEER_KEY)?;
        let agents = if agent_bin.is_some() { hosts } else { 0 };
        for i in 0..agents {
            cluster.set_agent_password(i, MYSQL_PASSWORD)?;
            let agent = cluster.spawn_agent(i)?;
            cluster.agents.push(Some(agent));
        }
        Ok(cluster)
    }

    /// The peer key file every agent reads (mode 0600).
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("peer.key")
    }

    /// Writes the shared peer key (read at start and at reload).
    pub fn write_key_file(&self, hex: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.key_file();
        fs::write(&path, format!("{hex}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    /// Where agent `name` (h1, h2, …) serves its control socket.
    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }

    /// The settings of agent `name`: every agent on this kernel gets its own instance
    /// name (`<lab id>-<instance>-<name>`), so its eBPF pins under
    /// /sys/fs/bpf/vip-agent/ are its own, and the lab removes them when it goes.
    pub fn agent_settings(&self, settings: &VipSettings, name: &str) -> VipSettings {
        VipSettings {
            instance: format!("{}-{}-{name}", self.lab.id(), settings.instance),
            ..settings.clone()
        }
    }

    /// The instance name agent `i` runs with.
    pub fn instance(&self, i: usize) -> String {
        self.agent_settings(&self.settings, &format!("h{}", i + 1))
            .instance
    }

    /// Agent `i`'s config file.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("h{}.toml", i + 1))
    }

    /// Rewrites agent `i`'s config file with `settings` (for reload tests).
    pub fn write_config(&self, i: usize, settings: &VipSettings) -> Result<()> {
        let name = format!("h{}", i + 1);
        let config = self.dir.join(format!("{name}.toml"));
        fs::write(
            &config,
            self.agent_settings(settings, &name).toml(
                &self.password_file(i),
                &self.key_file(),
                &self.socket(&name),
            ),
        )?;
        Ok(())
    }

    /// Writes the config file `<name>.toml` for an agent on host `i` with `settings`
    /// (its instance `<lab id>-<instance>-<name>`, its socket `<name>.sock`).
    pub fn write_config_named(
        &self,
        i: usize,
        settings: &VipSettings,
        name: &str,
    ) -> Result<PathBuf> {
        let config = self.dir.join(format!("{name}.toml"));
        fs::write(
            &config,
            self.agent_settings(settings, name).toml(
                &self.password_file(i),
                &self.key_file(),
                &self.socket(name),
            ),
        )?;
        Ok(config)
    }

    /// Runs `vip-agent VERB ARGS --socket <agent i's socket>` and returns its output.
    pub fn control(&self, i: usize, verb: &[&str]) -> Result<std::process::Output> {
        let socket = self.socket(&format!("h{}", i + 1)).display().to_string();
        let mut args: Vec<&str> = verb.to_vec();
        args.extend(["--socket", &socket]);
        self.agent_command(i, &args)
    }

    fn password_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("h{}.password", i + 1))
    }

    /// Writes the password agent `i` uses (read at its next start), mode 0600: the
    /// agent refuses a password file every user can read.
    pub fn set_agent_password(&self, i: usize, password: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.password_file(i);
        fs::write(&path, format!("{password}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    fn spawn_agent(&self, i: usize) -> Result<Agent> {
        self.spawn_agent_with(i, &self.settings, &format!("h{}", i + 1))
    }

    /// Starts one more agent on host `i` with other settings (another instance beside
    /// the same mysqld); `name` names its config and log files. The caller owns it.
    pub fn spawn_agent_with(&self, i: usize, settings: &VipSettings, name: &str) -> Result<Agent> {
        let config = self.write_config_named(i, settings, name)?;
        let socket = self.socket(name);
        let log = self.dir.join(format!("{name}.log"));
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        if let Some(user) = &settings.run_as {
            self.give_to(
                user,
                &[&self.dir, &config, &self.password_file(i), &self.key_file()],
            )?;
        }
        let mut cmd = match (&settings.drop_caps, &settings.run_as) {
            (_, Some(user)) => as_service_user(&self.agent_bin, &config, user),
            (None, None) if settings.resolv_conf.is_some() || !settings.bpffs => {
                private_mounts(&self.agent_bin, settings)
            }
            (None, None) => Command::new(&self.agent_bin),
            (Some(caps), None) => {
                let drop: Vec<String> = caps.split(',').map(|c| format!("-{c}")).collect();
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--bounding-set={}", drop.join(",")))
                    .arg("--")
                    .arg(&self.agent_bin);
                cmd
            }
        };
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("VIP_AGENT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        if let Some(path) = &settings.reset_path {
            cmd.env("VIP_AGENT_RESET_PATH", path);
        }
        let proc = self.lab.host(i).spawn(&mut cmd)?;
        Ok(Agent {
            proc,
            log,
            config,
            socket,
        })
    }

    /// Hands the agent's files to `user`, as an operator would for the service user.
    fn give_to(&self, user: &str, paths: &[&Path]) -> Result<()> {
        let out = Command::new("chown")
            .arg(format!("{user}:{user}"))
            .args(paths)
            .output()?;
        if !out.status.success() {
            anyhow::bail!("chown {user}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Runs `vip-agent ARGS` to completion inside host `i` and returns its output.
    pub fn agent_command(&self, i: usize, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = Command::new(&self.agent_bin);
        cmd.args(args);
        crate::netns::command_in(self.host(i).ns(), &mut cmd)?;
        Ok(cmd.output()?)
    }

    /// Starts agent `i` again (after [`Cluster::stop_agent`]); its log is appended to.
    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        let agent = self.spawn_agent(i)?;
        self.agents[i] = Some(agent);
        Ok(())
    }

    /// Stops agent `i` and starts it again as itself (same instance, socket and log)
    /// with other settings, e.g. a longer poll interval for one member.
    pub fn restart_agent_with(&mut self, i: usize, settings: &VipSettings) -> Result<()> {
        self.stop_agent(i)?;
        let agent = self.spawn_agent_with(i, settings, &format!("h{}", i + 1))?;
        self.agents[i] = Some(agent);
        Ok(())
    }

    /// Stops agent `i` with SIGTERM (it leaves its VIPs in place).
    pub fn stop_agent(&mut self, i: usize) -> Result<()> {
        if let Some(agent) = self.agents[i].take() {
            agent.proc.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }

    pub fn host(&self, i: usize) -> &Host {
        self.lab.host(i)
    }

    pub fn client(&self) -> &Host {
        self.lab.client(0)
    }

    /// Whether host `i` has the write VIP bound on eth0.
    pub fn holds_vip(&self, i: usize) -> bool {
        let vip = self.settings.write_vip;
        self.host(i)
            .addrs()
            .is_ok_and(|addrs| addrs.iter().any(|a| a.addr == vip))
    }

    /// The hosts that hold the write VIP now.
    pub fn holders(&self) -> Vec<usize> {
        (0..self.lab.hosts().len())
            .filter(|&i| self.holds_vip(i))
            .collect()
    }

    /// The hosts that have `vip` bound on eth0 now.
    pub fn holders_of(&self, vip: IpAddr) -> Vec<usize> {
        (0..self.lab.hosts().len())
            .filter(|&i| {
                self.host(i)
                    .addrs()
                    .is_ok_and(|addrs| addrs.iter().any(|a| a.addr == vip))
            })
            .collect()
    }

    /// Each configured read VIP and the hosts holding it now.
    pub fn read_placement(&self) -> Vec<(IpAddr, Vec<usize>)> {
        self.settings
            .read_vips
            .iter()
            .map(|&v| (v, self.holders_of(v)))
            .collect()
    }

    /// How many read VIPs each host holds now (index = host).
    pub fn read_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.lab.hosts().len()];
        for (_, holders) in self.read_placement() {
            for h in holders {
                counts[h] += 1;
            }
        }
        counts
    }

    /// Waits until `check` holds, or fails with `what`, the placement and every log.
    pub fn wait(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Cluster) -> bool,
    ) -> Result<()> {
        if wait_for(timeout, || check(self)) {
            return Ok(());
        }
        bail!(
            "timed out after {timeout:?} waiting for {what}; write VIP on {:?}, read VIPs {:?}\n{}",
            self.holders(),
            self.read_placement(),
            self.logs()
        )
    }

    /// Waits until exactly host `i` holds the write VIP.
    pub fn wait_sole_holder(&self, i: usize, timeout: Duration) -> Result<()> {
        if wait_for(timeout, || self.holders() == [i]) {
            return Ok(());
        }
        bail!(
            "expected only h{} to hold {}, holders are {:?}\n{}",
            i + 1,
            self.settings.write_vip,
            self.holders()
                .iter()
                .map(|h| format!("h{}", h + 1))
                .collect::<Vec<_>>(),
            self.logs()
        )
    }

    /// What is wrong with the running agents: one that exited, or one whose log shows
    /// a panic. Empty when all is well.
    pub fn agent_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let Some(agent) = agent else { continue };
            let name = self.host(i).name();
            if let Ok(Some(status)) = agent.proc.try_wait() {
                problems.push(format!("the agent on {name} exited: {status}"));
            }
            if fs::read_to_string(&agent.log)
                .unwrap_or_default()
                .contains("panicked at")
            {
                problems.push(format!("the agent on {name} panicked (see its log)"));
            }
        }
        problems
    }

    /// Every agent's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let path = self.dir.join(format!("h{}.log", i + 1));
            let text = fs::read_to_string(&path).unwrap_or_default();
            let state = if agent.is_some() {
                "running"
            } else {
                "stopped"
            };
            out.push_str(&format!("--- agent h{} ({state}) ---\n{text}", i + 1));
        }
        out.push_str(&format!("--- group events ---\n{}", self.group.event_log()));
        out
    }

    /// The events agent `i` logged (lines with an `event` field), oldest first.
    pub fn events(&self, i: usize) -> Vec<AgentEvent> {
        let path = self.dir.join(format!("h{}.log", i + 1));
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(AgentEvent::parse)
            .collect()
    }

    /// Connects through `addr`:3306 from the client and returns the server_uuid of the
    /// member that answered, or the error. A new connection each time, as an application
    /// reconnecting after a failover.
    pub async fn client_server_uuid(&self, addr: IpAddr, timeout: Duration) -> Result<String> {
        let ns = self.client().ns().to_owned();
        let opts = client_opts(addr);
        tokio::task::spawn_blocking(move || {
            crate::netns::run_in(&ns, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let query = async {
                        let mut conn = mysql_async::Conn::new(opts).await?;
                        let uuid: Option<String> = conn.query_first("SELECT @@server_uuid").await?;
                        let _ = conn.disconnect().await;
                        anyhow::Ok(uuid.unwrap_or_default())
                    };
                    tokio::time::timeout(timeout, query).await.map_err(|_| {
                        anyhow::anyhow!("no answer through {addr} within {timeout:?}")
                    })?
                })
            })?
        })
        .await?
    }

    /// Retries new client connections through `addr` until one reaches member `want`;
    /// returns when that happened.
    pub async fn wait_client_reaches(
        &self,
        addr: IpAddr,
        want: usize,
        timeout: Duration,
    ) -> Result<SystemTime> {
        let want_uuid = self.group.uuid(want);
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self
                .client_server_uuid(addr, Duration::from_millis(500))
                .await
            {
                Ok(uuid) if uuid == want_uuid => return Ok(SystemTime::now()),
                Ok(uuid) => last = format!("reached {uuid}"),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "the client never reached member {want} through {addr} (last: {last})\n{}",
            self.logs()
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in self.agents.iter_mut().filter_map(Option::take) {
            let _ = agent.proc.kill();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// How the lab's client logs in to a member through `addr`:3306.
pub fn client_opts(addr: IpAddr) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.to_string())
        .tcp_port(MYSQL_PORT)
        .user(Some(MYSQL_USER))
        .pass(Some(MYSQL_PASSWORD))
        .prefer_socket(false)
}

/// One line of an agent's JSON log that carries an `event` field.
#[derive(Clone, Debug)]
pub struct AgentEvent {
    pub at: SystemTime,
    pub event: String,
    pub message: String,
    pub fields: serde_json::Value,
}

impl AgentEvent {
    fn parse(line: &str) -> Option<AgentEvent> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = v.get("fields")?.clone();
        let event = fields.get("event")?.as_str()?.to_owned();
        let message = fields
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned();
        let at = humantime::parse_rfc3339(v.get("timestamp")?.as_str()?).ok()?;
        Some(AgentEvent {
            at,
            event,
            message,
            fields,
        })
    }
}
