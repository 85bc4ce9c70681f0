//! vip-agent: moves MySQL Group Replication floating IPs (VIPs) with the primary, and
//! resets the connections of a VIP this node no longer holds.
//!
//! This file is only the command line; each command lives in its own module.

mod datapath;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "vip-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CountPackets {
            iface,
            instance,
            interval_ms,
        } => count_packets(&iface, &instance, Duration::from_millis(interval_ms)),
    };
    if let Err(e) = result {
        eprintln!("vip-agent: error: {e:#}");
        std::process::exit(1);
    }
}

fn count_packets(iface: &str, instance: &str, interval: Duration) -> Result<()> {
    let pin_dir = datapath::pin_dir(instance)?;
    let counter = datapath::load()
        .and_then(|ebpf| datapath::count_dst::CountDst::attach(ebpf, iface, &pin_dir))
        .inspect_err(|_| datapath::remove_empty_pin_dir(instance))?;
    log::info!(
        "count_dst attached to {iface}; counters pinned at {} (bpftool map dump pinned {})",
        counter.pin_path().display(),
        counter.pin_path().display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
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
    datapath::remove_pins(instance)?;
    log::info!("count_dst detached from {iface}; pins removed");
    Ok(())
}
