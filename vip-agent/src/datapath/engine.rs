//! The datapath as the agent runs it: one load of the embedded object, its maps pinned
//! under `/sys/fs/bpf/vip-agent/<instance>/`, and three parts that degrade one by one:
//!
//! - **reset**: the `reset_tcp` iterator (bpf_sock_destroy), else netlink SOCK_DESTROY;
//! - **tracking**: `track_state` (tp_btf `inet_sock_set_state`) and the `track_seed`
//!   iterator, recording the connections to this node's VIPs in `CONNS`;
//! - **guard**: `vip_guard` (XDP) on the VIP NIC, answering stale clients of a released
//!   VIP with a RST and leaving ARP / NS for it unanswered.
//!
//! What a part lacks (a capability, kernel BTF, a kfunc, a driver) is logged as an error
//! and shown by `vip-agent status`; only losing every way to reset is fatal (unless
//! `datapath.require_reset = false`), so the reset guarantee never goes silently.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, IterableMap, MapData, PerCpuHashMap};
use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, Iter};
use aya::{Ebpf, EbpfLoader};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};
use vip_ebpf_common::{ConnInfo, ConnKey, DstKey, GuardCounters, TrackConfig};

use super::checks::Capabilities;
use super::iter_reset::{ResetProgram, permission_hint, run_iter};
use super::kernel::KernelBtf;
use super::reader::MapReader;
use super::track::{self, TrackedConn};
use super::vip_table::{self, Role, VipTable};
use super::{Target, guard, pins};
use crate::config::{Config, XdpMode};

/// How each part of the datapath runs, for the log and `vip-agent status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Modes {
    pub reset: String,
    pub tracking: String,
    pub guard: String,
    pub pins: String,
}

/// One VIP's state in the programs' table, with the guard's counters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VipDatapath {
    pub vip: IpAddr,
    /// "held"; "lease over" (held, but its lease in the kernel ended: the guard answers
    /// for it as released); or "released" (the guard answers its stale clients for
    /// `guard_left_ms`).
    pub state: String,
    pub role: String,
    pub guard_left_ms: u64,
    /// Held: what is left of its lease in the kernel (`None`: no time limit).
    #[serde(default)]
    pub lease_left_ms: Option<u64>,
    /// Connections tracked through it now.
    pub tracked: usize,
    pub packets: u64,
    pub bytes: u64,
    pub rst_sent: u64,
    pub dropped: u64,
    pub neigh_dropped: u64,
}

/// RSTs the guard sent for one VIP since the last look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardResets {
    pub vip: IpAddr,
    pub new: u64,
    pub total: u64,
    pub last_client: Option<std::net::SocketAddr>,
}

pub struct Datapath {
    ebpf: Option<Ebpf>,
    reset: Option<ResetProgram>,
    /// `track_seed` loaded: connections from before the start can be recorded.
    seed: bool,
    /// `vip_guard` is attached: its counters mean something.
    guard: bool,
    vips: Option<VipTable>,
    conns: Option<HashMap<MapData, ConnKey, ConnInfo>>,
    counters: Option<PerCpuHashMap<MapData, DstKey, GuardCounters>>,
    /// The instance's pin folder; `None` when nothing can be pinned.
    pins: Option<PathBuf>,
    /// The program links when there is no pin folder: a link detaches its program when
    /// its last reference goes, so without a pin the agent itself must hold it.
    links: Vec<FdLink>,
    pub modes: Modes,
    guard_window: Duration,
    /// Each VIP's RST count as of the last [`Datapath::new_resets`].
    rst_seen: std::collections::BTreeMap<IpAddr, u64>,
}

impl Datapath {
    /// Loads what this host allows. Fails when the agent cannot do its job: without
    /// CAP_NET_ADMIN / CAP_NET_RAW, without CAP_BPF / CAP_PERFMON while the config asks
    /// for the guard or tracking, or (with `require_reset`) without any reset path.
    pub fn start(cfg: &Config) -> Result<Datapath> {
        let caps = Capabilities::current();
        caps.require(cfg.datapath.guard || cfg.datapath.track)?;
        let d = &cfg.datapath;
        let mut dp = Datapath {
            ebpf: None,
            reset: None,
            seed: false,
            guard: false,
            vips: None,
            conns: None,
            counters: None,
            pins: None,
            links: Vec::new(),
            modes: Modes::default(),
            guard_window: d.guard_window,
            rst_seen: Default::default(),
        };
        let forced_netlink = std::env::var("VIP_AGENT_RESET_PATH").is_ok_and(|v| v == "netlink");
        let kernel = match caps.missing_for_tracing() {
            Some(why) => Err(why.to_string()),
            None => KernelBtf::read().map_err(|e| format!("{e:#}")),
        };
        let loaded = match caps.missing_for_bpf() {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => dp.load(cfg, kernel.as_ref().ok()),
        };
        match loaded {
            Ok(pins) => dp.modes.pins = pins,
            Err(e) => {
                let why = format!("{e:#}");
                error!(event = "datapath", "the eBPF datapath is off: {why}");
                dp.modes = Modes {
                    reset: String::new(),
                    tracking: format!("off ({why})"),
                    guard: format!("off ({why})"),
                    pins: format!("off ({why})"),
                };
            }
        }
        if dp.ebpf.is_some() {
            dp.start_tracking(cfg, &kernel);
            dp.start_guard(cfg);
            if forced_netlink {
                dp.modes.reset = "netlink SOCK_DESTROY (VIP_AGENT_RESET_PATH=netlink)".into();
            } else {
                dp.start_reset(&kernel);
            }
        }
        if dp.modes.reset.is_empty() {
            dp.modes.reset = format!(
                "netlink SOCK_DESTROY (iter/tcp not used: {})",
                kernel.as_ref().err().map_or("eBPF is off", |s| s.as_str())
            );
        }
        if dp.reset.is_none() {
            dp.check_netlink(d.require_reset)?;
        }
        info!(
            event = "datapath",
            reset = %dp.modes.reset,
            tracking = %dp.modes.tracking,
            guard = %dp.modes.guard,
            pins = %dp.modes.pins,
            "datapath ready"
        );
        Ok(dp)
    }

    /// Loads the object with the pinned maps reused. Returns the pin folder's mode text.
    fn load(&mut self, cfg: &Config, kernel: Option<&KernelBtf>) -> Result<String> {
        let dir = super::pin_dir(&cfg.instance);
        self.pins = dir.as_ref().ok().cloned();
        let tracked = cfg.datapath.tracked_connections;
        let mut loader = EbpfLoader::new();
        loader.btf(kernel.map(|k| &k.btf));
        loader.map_max_entries("CONNS", tracked);
        let pins_mode = match &dir {
            Ok(dir) => {
                pins::drop_incompatible(dir, tracked);
                for m in pins::MAPS {
                    loader.map_pin_path(m.map, dir.join(m.file));
                }
                format!("{}", dir.display())
            }
            Err(e) => {
                error!(
                    event = "datapath",
                    "maps are not pinned, so they do not outlive the agent: {e:#}"
                );
                format!("off ({e:#})")
            }
        };
        let patched = match kernel {
            Some(k) => k.patch(super::OBJECT)?,
            None => super::kernel::patch_kfunc_calls(super::OBJECT, |_| Ok(0))?,
        };
        let mut ebpf = loader
            .load(patched.bytes())
            .map_err(|e| permission_hint(anyhow::Error::new(e), "load vip-agent's eBPF object"))?;
        let vips = HashMap::try_from(ebpf.take_map("VIPS").context("no VIPS map")?)?;
        let mut table = VipTable::new(vips);
        // The guard windows of VIPs released before a restart go on; HELD entries are set
        // again by the first reconcile, from what is bound.
        let configured: Vec<IpAddr> = cfg.vip.all_vips().collect();
        table.prune(vip_table::monotonic_ns(), |vip, s| {
            s.state == vip_ebpf_common::VIP_RELEASED && configured.contains(&vip)
        });
        self.vips = Some(table);
        self.conns = Some(HashMap::try_from(
            ebpf.take_map("CONNS").context("no CONNS map")?,
        )?);
        self.counters = Some(PerCpuHashMap::try_from(
            ebpf.take_map("VIP_COUNTERS")
                .context("no VIP_COUNTERS map")?,
        )?);
        self.ebpf = Some(ebpf);
        Ok(pins_mode)
    }

    fn start_tracking(&mut self, cfg: &Config, kernel: &Result<KernelBtf, String>) {
        let result = (|| -> Result<()> {
            if !cfg.datapath.track {
                bail!("datapath.track = false");
            }
            let kernel = kernel.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
            let ebpf = self.ebpf.as_mut().context("eBPF is off")?;
            let config = TrackConfig {
                netns_cookie: track::netns_cookie()?,
                off: kernel.offsets,
                _pad: [0; 2],
            };
            let mut map: aya::maps::Array<_, TrackConfig> = aya::maps::Array::try_from(
                ebpf.map_mut("TRACK_CONFIG")
                    .context("no TRACK_CONFIG map")?,
            )?;
            map.set(0, config, 0)?;
            let program: &mut BtfTracePoint = ebpf
                .program_mut("track_state")
                .context("no track_state program")?
                .try_into()?;
            program
                .load("inet_sock_set_state", &kernel.btf)
                .map_err(|e| permission_hint(e.into(), "load the tracker (tp_btf)"))?;
            let id = program
                .attach()
                .map_err(|e| permission_hint(e.into(), "attach the tracker (tp_btf)"))?;
            let link = program.take_link(id)?;
            self.keep_link(pins::TRACK_LINK, link.into())?;
            let ebpf = self.ebpf.as_mut().context("eBPF is off")?;
            let seed: &mut Iter = ebpf
                .program_mut("track_seed")
                .context("no track_seed program")?
                .try_into()?;
            seed.load("tcp", &kernel.btf)
                .map_err(|e| permission_hint(e.into(), "load the track_seed iterator"))?;
            self.seed = true;
            Ok(())
        })();
        self.modes.tracking = match result {
            Ok(()) => "tp_btf inet_sock_set_state (this network namespace only)".into(),
            Err(e) => {
                if cfg.datapath.track {
                    error!(event = "datapath", "connection tracking is off: {e:#}");
                }
                format!("off ({e:#})")
            }
        };
    }

    fn start_guard(&mut self, cfg: &Config) {
        let result = (|| -> Result<String> {
            if !cfg.datapath.guard {
                bail!("datapath.guard = false");
            }
            let ebpf = self.ebpf.as_mut().context("eBPF is off")?;
            let dir = self.pins.clone();
            // One XDP program per interface: the last run's guard goes first.
            if let Some(dir) = &dir {
                pins::remove_link(dir, pins::GUARD_LINK);
            }
            // auto: generic on a veth, where native XDP_TX only gets out when the peer
            // has an XDP program of its own; else the kernel's choice.
            let mode = match cfg.datapath.xdp_mode {
                XdpMode::Auto => guard::auto_mode(&cfg.vip.nic)?,
                XdpMode::Native => aya::programs::XdpMode::Driver,
                XdpMode::Generic => aya::programs::XdpMode::Skb,
            };
            let link = guard::attach(ebpf, &cfg.vip.nic, mode)?;
            self.keep_link(pins::GUARD_LINK, link)?;
            let mode = match mode {
                aya::programs::XdpMode::Skb => "generic",
                aya::programs::XdpMode::Driver => "native",
                _ => "native where the driver has it",
            };
            Ok(format!(
                "xdp ({mode}) on {}; RST to a released VIP's clients for {} s",
                cfg.vip.nic,
                cfg.datapath.guard_window.as_secs()
            ))
        })();
        self.guard = result.is_ok();
        self.modes.guard = match result {
            Ok(mode) => mode,
            Err(e) => {
                if cfg.datapath.guard {
                    error!(
                        event = "datapath",
                        "the guard for released VIPs is off: {e:#}"
                    );
                }
                format!("off ({e:#})")
            }
        };
    }

    /// Pins `link` as `name` (it then outlives the agent), or holds it for as long as
    /// the agent runs when nothing can be pinned.
    fn keep_link(&mut self, name: &str, link: FdLink) -> Result<()> {
        match &self.pins {
            Some(dir) => pins::replace_link(dir, name, link).map(drop),
            None => {
                self.links.push(link);
                Ok(())
            }
        }
    }

    fn start_reset(&mut self, kernel: &Result<KernelBtf, String>) {
        let loaded = match (kernel, self.ebpf.as_mut()) {
            (Ok(k), Some(ebpf)) => ResetProgram::load(ebpf, k).map_err(|e| format!("{e:#}")),
            (Err(e), _) => Err(e.clone()),
            (_, None) => Err("eBPF is off".into()),
        };
        match loaded {
            Ok(program) => {
                self.reset = Some(program);
                self.modes.reset =
                    "iter/tcp + bpf_sock_destroy (fallback: netlink SOCK_DESTROY)".into();
            }
            Err(why) => {
                warn!(
                    event = "datapath",
                    "connection reset uses netlink SOCK_DESTROY: the iter/tcp program is not used ({why})"
                );
                self.modes.reset = format!("netlink SOCK_DESTROY (iter/tcp not used: {why})");
            }
        }
    }

    /// Without the iterator, netlink must at least answer a socket dump; else there is no
    /// way to reset, which is fatal unless the operator chose to run without it.
    fn check_netlink(&mut self, require: bool) -> Result<()> {
        let probe = super::sock_destroy::list_local(IpAddr::from([127, 0, 0, 1]), Some(1));
        if let Err(e) = probe {
            let why = format!("netlink sock_diag does not work here: {e}");
            if require {
                bail!(
                    "no way to reset the connections of a VIP this node lets go: {}; {why}. \
                     Fix the kernel (CONFIG_INET_DIAG_DESTROY, or Linux >= 6.5 with BTF for \
                     bpf_sock_destroy), or set datapath.require_reset = false to run without \
                     resets (clients of a lost VIP then hang until TCP gives up)",
                    self.modes.reset
                );
            }
            error!(
                event = "datapath",
                "connections are NOT reset when a VIP leaves: {why}"
            );
            self.modes.reset = format!("UNAVAILABLE ({why})");
        }
        Ok(())
    }

    /// Resets with the iterator: `None` when it is not loaded (use netlink).
    pub fn iter_reset(&mut self, target: Target) -> Option<Result<u64>> {
        let (program, ebpf) = (self.reset.as_mut()?, self.ebpf.as_mut()?);
        Some(program.run(ebpf, target).map(|report| {
            if report.failed > 0 {
                warn!(
                    ?target,
                    failed = report.failed,
                    errno = -report.last_error,
                    "bpf_sock_destroy refused some sockets"
                );
            }
            report.destroyed
        }))
    }

    /// Before a bind: the tracker records the VIP's connections, the guard passes its
    /// traffic. Failures are logged: binding matters more.
    pub fn mark_held(&mut self, vip: IpAddr, role: Role) {
        self.set(vip, vip_table::held(role, vip_table::monotonic_ns()));
    }

    /// Held until `lease_until_ns` (CLOCK_MONOTONIC): from then on the guard answers
    /// for the VIP as released unless this is called again with a later end.
    pub fn mark_held_until(&mut self, vip: IpAddr, role: Role, lease_until_ns: u64) {
        let now = vip_table::monotonic_ns();
        self.set(vip, vip_table::held_until(role, now, lease_until_ns));
    }

    /// Before the reset and the unbind: from now on stale clients get a RST and ARP / NS
    /// for the VIP go unanswered, for `datapath.guard_window_ms`.
    pub fn mark_released(&mut self, vip: IpAddr, role: Role) {
        let state = vip_table::released(role, vip_table::monotonic_ns(), self.guard_window);
        self.set(vip, state);
    }

    fn set(&mut self, vip: IpAddr, state: vip_ebpf_common::VipState) {
        if let Some(table) = &mut self.vips
            && let Err(e) = table.set(vip, state)
        {
            error!(event = "datapath", vip = %vip, "{e:#}");
        }
    }

    /// Drops RELEASED entries whose window is over (a VIP removed from the config keeps
    /// its window: its stale clients still deserve a RST).
    pub fn prune(&mut self) {
        if let Some(table) = &mut self.vips {
            table.prune(vip_table::monotonic_ns(), |_, _| true);
        }
    }

    /// Records the connections that exist already (after adopting VIPs at start).
    pub fn seed(&mut self) {
        if !self.seed {
            return;
        }
        if let Some(ebpf) = self.ebpf.as_mut()
            && let Err(e) = run_iter(ebpf, "track_seed")
        {
            error!(
                event = "datapath",
                "could not record the existing connections: {e:#}"
            );
        }
    }

    pub fn set_guard_window(&mut self, window: Duration) {
        self.guard_window = window;
    }

    /// The tracked connections.
    pub fn connections(&self) -> Vec<TrackedConn> {
        self.conns
            .as_ref()
            .map(|m| track::list(m, vip_table::monotonic_ns()))
            .unwrap_or_default()
    }

    /// Every VIP in the programs' table, with its counters and tracked connections.
    pub fn vips(&self) -> Vec<VipDatapath> {
        let Some(table) = &self.vips else {
            return Vec::new();
        };
        let counters = self
            .counters
            .as_ref()
            .and_then(|m| guard::read_counters(m).ok())
            .unwrap_or_default();
        summarize(table.entries(), &self.connections(), &counters)
    }

    /// The guard's RSTs since the last call, per VIP that sent any: for one summary
    /// line per VIP, however many segments a flood of stale (or spoofed) clients sends.
    /// The counts are exact: they come from the per-CPU counters.
    pub fn new_resets(&mut self) -> Vec<GuardResets> {
        if !self.guard {
            return Vec::new();
        }
        let Some(counters) = self
            .counters
            .as_ref()
            .and_then(|m| guard::read_counters(m).ok())
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for c in counters {
            let seen = self.rst_seen.insert(c.vip, c.rst_sent).unwrap_or(0);
            // A smaller count: the map started again (a new pin); count from zero.
            let new = c.rst_sent.checked_sub(seen).unwrap_or(c.rst_sent);
            if new > 0 {
                out.push(GuardResets {
                    vip: c.vip,
                    new,
                    total: c.rst_sent,
                    last_client: c.last_client,
                });
            }
        }
        out
    }

    /// Read-only handles on the maps for the metrics endpoint (see [`MapReader`]);
    /// `None` when neither the guard nor tracking runs (eBPF off, or both turned off).
    pub fn reader(&self) -> Option<MapReader> {
        if !self.guard && !self.seed {
            return None;
        }
        let (table, counters) = (self.vips.as_ref()?, self.counters.as_ref()?);
        let conns = self.conns.as_ref().filter(|_| self.seed).map(|m| m.map());
        MapReader::new(table.map_data(), self.guard, conns, counters.map())
            .inspect_err(|e| {
                error!(
                    event = "datapath",
                    "the guard's counters are not in the metrics: {e:#}"
                )
            })
            .ok()
    }
}

/// The status of each VIP in the programs' table, from what was read of the maps.
pub(super) fn summarize(
    entries: Vec<(IpAddr, vip_ebpf_common::VipState)>,
    conns: &[TrackedConn],
    counters: &[guard::VipCounters],
) -> Vec<VipDatapath> {
    let now = vip_table::monotonic_ns();
    let mut out: Vec<VipDatapath> = entries
        .into_iter()
        .map(|(vip, s)| {
            let c = counters.iter().find(|c| c.vip == vip);
            let get = |f: fn(&guard::VipCounters) -> u64| c.map(f).unwrap_or(0);
            VipDatapath {
                vip,
                state: match s.state {
                    vip_ebpf_common::VIP_HELD if s.holds(now) => "held",
                    vip_ebpf_common::VIP_HELD => "lease over",
                    _ => "released",
                }
                .into(),
                role: Role::name(s.role).into(),
                guard_left_ms: s.guard_until_ns.saturating_sub(now) / 1_000_000,
                lease_left_ms: (s.state == vip_ebpf_common::VIP_HELD
                    && s.lease_until_ns != vip_ebpf_common::NO_LEASE_END)
                    .then(|| s.lease_until_ns.saturating_sub(now) / 1_000_000),
                tracked: conns.iter().filter(|c| c.vip.ip() == vip).count(),
                packets: get(|c| c.packets),
                bytes: get(|c| c.bytes),
                rst_sent: get(|c| c.rst_sent),
                dropped: get(|c| c.dropped),
                neigh_dropped: get(|c| c.neigh_dropped),
            }
        })
        .collect();
    out.sort_by_key(|v| v.vip);
    out
}
