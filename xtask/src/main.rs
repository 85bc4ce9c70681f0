//! Developer tasks for vip-agent, run as `cargo xtask <task>`.
//!
//! - `bench`: the benchmarks (the planner; as root: resetting connections, the XDP
//!   guard's cost, an idle agent's footprint), summed up in target/bench/summary.md.
//! - `deb`: the Debian package (cargo-deb, installed first if missing).
//! - `build-ebpf`: installs what the eBPF build needs (idempotently) and builds the
//!   programs for `bpfel-unknown-none`.
//! - `demo`: the failover demo (the lab, the simulated group, one agent per host).
//! - `lab`: one failover scenario (or all) in the lab, measured, with invariants checked.
//! - `chaos`: random fault schedules in the lab, with the invariants checked.
//! - `simulate`: the deterministic simulation of the coordination core, from seeds.
//! - `test`: the project's whole test run, from a fresh machine: packages, eBPF build,
//!   formatting, lints, every test, the lab scenarios, a short chaos campaign, 100,000
//!   simulated schedules, then a short run of every fuzz target.
//! - `fuzz`: fuzzes the readers of outside input (installing cargo-fuzz first if missing).

mod bench;
mod bench_summary;
mod build_ebpf;
mod chaos;
mod cmd;
mod deb;
mod demo;
mod fuzz;
mod lab;
mod simulate;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for vip-agent")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// The failover demo in the lab, on the embedded simulated group (needs root).
    Demo,
    /// Run a failover scenario in the lab (or `all`) and print its timeline and
    /// measurements; exits non-zero when an invariant fails (needs root).
    Lab {
        /// The scenario: all, primary-crash, switchover, partition-minority-primary,
        /// secondary-loss, rejoin, agent-restart, mysqld-down, mysqld-hang, nic-flap,
        /// vip-deleted, ipv6-switchover.
        scenario: String,
        /// One JSON object per run instead of the timeline.
        #[arg(long)]
        json: bool,
        /// Run each scenario this many times, then print the median and p99 of its
        /// times (on stderr).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        runs: u64,
    },
    /// Run random fault schedules in the lab with the invariants checked (needs root);
    /// run i uses seed SEED + i, and `--runs 1 --seed X` replays a failed run.
    Chaos {
        #[arg(long, default_value_t = 20)]
        runs: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the deterministic simulation of the coordination core: many agents, the
    /// simulated group, a network and a clock per host, from seeds (no root needed).
    /// Exits non-zero when a schedule breaks an invariant, and says how to replay it.
    Simulate {
        /// Arguments for the simulator: --seeds N (default 1000), --from S, --json,
        /// --trace SEED (replays one schedule with every event).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks: the read VIP planner (64 read VIPs over 9 members), and resetting
    /// 1,000 and 10,000 connections by each path against `ss -K`, the XDP guard's cost in
    /// packets per second, an idle agent's memory and CPU against keepalived (needs root);
    /// writes target/bench/summary.md.
    Bench,
    /// Build the eBPF programs (installing rust-src and bpf-linker first if missing).
    BuildEbpf,
    /// Build the Debian package (installing cargo-deb first if missing) and print its
    /// path: the release binary, the systemd unit, the example config and the README.
    Deb,
    /// Run the whole test suite as CI does (needs root): installs apt packages, builds
    /// the eBPF object, checks formatting and lints, then runs every test.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Fuzz the readers of outside input with cargo-fuzz (nightly): every target, or
    /// those named (peer_frame, config_file, mycnf, topology, members_rows); fails if it
    /// finds a crash.
    Fuzz {
        /// How long to fuzz each target (libFuzzer reads 0 as "forever", so at least 1).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        targets: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Demo => demo::run(),
        Task::Lab {
            scenario,
            json,
            runs,
        } => lab::run(&scenario, json, runs as usize),
        Task::Chaos { runs, seed } => chaos::run(runs, seed),
        Task::Simulate { args } => simulate::run(&args),
        Task::Bench => bench::run(),
        Task::BuildEbpf => build_ebpf::run().map(|object| println!("{}", object.display())),
        Task::Deb => deb::run().map(|package| println!("{}", package.display())),
        Task::Test { cargo_test_args } => test::run(&cargo_test_args),
        Task::Fuzz { seconds, targets } => fuzz::run(seconds, &targets),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
