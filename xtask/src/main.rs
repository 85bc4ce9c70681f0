//! Developer tasks for vip-agent, run as `cargo xtask <task>`.
//!
//! - `bench`: the planner's benchmark (64 read VIPs over 9 members).
//! - `build-ebpf`: installs what the eBPF build needs (idempotently) and builds the
//!   programs for `bpfel-unknown-none`.
//! - `demo`: the failover demo (the lab, the simulated group, one agent per host).
//! - `test`: the project's whole test run, from a fresh machine: packages, eBPF build,
//!   formatting, lints and every test.

mod bench;
mod build_ebpf;
mod cmd;
mod demo;
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
    /// Benchmark the read VIP planner: 64 read VIPs over 9 members, both floating types.
    Bench,
    /// Build the eBPF programs (installing rust-src and bpf-linker first if missing).
    BuildEbpf,
    /// Run the whole test suite as CI does (needs root): installs apt packages, builds
    /// the eBPF object, checks formatting and lints, then runs every test.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Demo => demo::run(),
        Task::Bench => bench::run(),
        Task::BuildEbpf => build_ebpf::run().map(|object| println!("{}", object.display())),
        Task::Test { cargo_test_args } => test::run(&cargo_test_args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
