//! vip-agent: moves MySQL Group Replication floating IPs (VIPs) with the primary, and
//! resets the connections of a VIP this node no longer holds.
//!
//! This file is only the command line; each command lives in its own module.

use vip_agent::control::{Request, cli::Target};
use vip_agent::{agent, config, control, datapath};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "vip-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: follow the local mysqld's view of the group and move the VIPs.
    /// Runs until SIGTERM or Ctrl-C, and leaves the VIPs in place when it stops.
    Run {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// As root, before the agent starts as an unprivileged service user (the packaged
    /// unit's ExecStartPre=+): give the user its bpffs pin folder and control socket
    /// folder, and check it can read the config, password, key and TLS files.
    Prepare {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// The user the agent runs as.
        #[arg(long, default_value = "vip-agent")]
        user: String,
    },
    /// Remove this instance's VIPs from the NIC and its pinned maps (maintenance, or
    /// systemd ExecStopPost when wanted).
    Release {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Count packets per destination address on an interface with the embedded XDP
    /// program, and pin the counters for bpftool. A check that this host can load and
    /// run vip-agent's eBPF programs. Prints one JSON line per interval and a last one on
    /// SIGTERM or Ctrl-C, then detaches and removes the pin.
    CountPackets {
        /// The interface to attach to, e.g. eth0.
        #[arg(long)]
        iface: String,
        /// Names the pin folder /sys/fs/bpf/vip-agent/<instance>.
        #[arg(long, default_value = "default")]
        instance: String,
        /// How often to print the counters, in milliseconds (0: only at exit).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Validate a config file without touching anything: print every problem (exit 1)
    /// or a summary of what the agent would do (exit 0).
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Print the vip-agent TOML equivalent of the greatdb_ha settings in a my.cnf
    /// (following !include / !includedir); warnings about dropped settings go to stderr.
    ImportMycnf {
        /// The my.cnf to read, e.g. /etc/my.cnf.
        path: PathBuf,
        /// Import only this group, e.g. mysqld3306 (default: every instance group, or
        /// [mysqld] when there are none).
        #[arg(long)]
        section: Option<String>,
    },
    /// Show what the running agent sees and holds: this node's role and view, the
    /// members and the VIPs placed on each, the peers' health and the subsystems.
    /// Exit 0, 1 on an error, 2 when no agent is listening.
    Status {
        /// Print the status as one JSON object (for scripts and monitoring).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the read-VIP placement the agent follows, in set-topology syntax.
    Topology {
        #[command(flatten)]
        target: Target,
    },
    /// Place the read VIPs by hand (greatdb_ha_vip_tope): the primary's agent checks the
    /// placement and pushes it to every member.
    SetTopology {
        /// The placement: "uuid1::vip1; uuid2::vip2,vip3".
        text: String,
        #[command(flatten)]
        target: Target,
    },
    /// Re-read the group view, then re-apply and re-announce every VIP on every member
    /// (greatdb_ha_force_change_mgr_vip = ON).
    ForceRebind {
        #[command(flatten)]
        target: Target,
    },
    /// Make the running agent re-read its config file.
    Reload {
        #[command(flatten)]
        target: Target,
    },
}

fn main() {
    vip_agent::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Prepare { config, user } => prepare(&config, &user),
        Command::Release { config } => release(&config),
        Command::CountPackets {
            iface,
            instance,
            interval_ms,
        } => count_packets(&iface, &instance, Duration::from_millis(interval_ms)),
        Command::CheckConfig { file } => std::process::exit(config::cli::check_config(&file)),
        Command::ImportMycnf { path, section } => {
            std::process::exit(config::cli::import_mycnf(&path, section.as_deref()))
        }
        Command::Status { json, target } => ask(&target, &Request::Status, json),
        Command::Topology { target } => ask(&target, &Request::Topology, false),
        Command::SetTopology { text, target } => {
            ask(&target, &Request::SetTopology { text }, false)
        }
        Command::ForceRebind { target } => ask(&target, &Request::ForceRebind, false),
        Command::Reload { target } => ask(&target, &Request::Reload, false),
    };
    if let Err(e) = result {
        eprintln!("vip-agent: error: {e:#}");
        std::process::exit(1);
    }
}

/// A verb for the running agent: prints its answer and exits with the verb's code.
fn ask(target: &Target, request: &Request, json: bool) -> ! {
    std::process::exit(control::cli::run(target, request, json))
}

/// Loads the config, printing every problem and exiting 1 if there are any.
fn load_config(path: &Path) -> config::Config {
    config::load(path).unwrap_or_else(|errors| {
        eprintln!("vip-agent: {} is not valid:\n{errors}", path.display());
        std::process::exit(1);
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(path: &Path) -> Result<()> {
    let cfg = load_config(path);
    runtime()?.block_on(async {
        match cfg.coordination.mode {
            config::CoordinationMode::Handshake => {
                agent::Agent::new(cfg, path.to_path_buf())
                    .await?
                    .run()
                    .await
            }
            config::CoordinationMode::Lease => {
                agent::lease::LeaseAgent::new(cfg).await?.run().await
            }
        }
    })
}

fn prepare(path: &Path, user: &str) -> Result<()> {
    // The key is checked for the user the agent will run as, not for root.
    let owners = match vip_agent::prepare::ServiceUser::lookup(user) {
        Ok(u) => vec![0, u.uid],
        Err(e) => {
            eprintln!("vip-agent prepare: {e}");
            std::process::exit(1);
        }
    };
    let cfg = config::load_with_key_owners(path, &owners).unwrap_or_else(|errors| {
        eprintln!("vip-agent: {} is not valid:\n{errors}", path.display());
        std::process::exit(1);
    });
    let report = vip_agent::prepare::run(&cfg, path, user);
    for line in &report.done {
        println!("vip-agent prepare: {line}");
    }
    if report.problems.is_empty() {
        return Ok(());
    }
    eprintln!(
        "vip-agent prepare: {user} cannot run instance {} yet:",
        cfg.instance
    );
    for p in report.problems {
        eprintln!("  - {p}");
    }
    std::process::exit(1);
}

fn release(path: &Path) -> Result<()> {
    let cfg = load_config(path);
    let released = runtime()?.block_on(agent::release(&cfg))?;
    if released.is_empty() {
        println!(
            "instance {}: no VIP was bound on {}",
            cfg.instance, cfg.vip.nic
        );
    }
    for vip in released {
        println!(
            "instance {}: released {vip} from {}",
            cfg.instance, cfg.vip.nic
        );
    }
    Ok(())
}

fn count_packets(iface: &str, instance: &str, interval: Duration) -> Result<()> {
    let pin_dir = datapath::pin_dir(instance)?;
    let counter = datapath::load()
        .and_then(|ebpf| datapath::count_dst::CountDst::attach(ebpf, iface, &pin_dir))
        .inspect_err(|_| datapath::remove_empty_pin_dir(instance))?;
    tracing::info!(
        "count_dst attached to {iface}; counters pinned at {} (bpftool map dump pinned {})",
        counter.pin_path().display(),
        counter.pin_path().display()
    );
    let runtime = runtime()?;
    let print = |counter: &datapath::count_dst::CountDst| -> Result<()> {
        let line = serde_json::json!({ "iface": iface, "counters": counter.read()? });
        println!("{line}");
        Ok(())
    };
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut ticker = (!interval.is_zero()).then(|| tokio::time::interval(interval));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = async { ticker.as_mut().unwrap().tick().await }, if ticker.is_some() => {
                    print(&counter)?;
                }
            }
        }
        anyhow::Ok(())
    })?;
    print(&counter)?;
    counter.unpin()?;
    drop(counter);
    // Only its own pin: an agent of the same instance keeps its maps and links.
    datapath::remove_empty_pin_dir(instance);
    tracing::info!("count_dst detached from {iface}; pins removed");
    Ok(())
}
