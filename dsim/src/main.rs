//! `vip-dsim --seeds N [--from S] [--json] [--trace SEED]`: runs N schedules of the
//! deterministic simulation, seeds S..S+N, on every core; prints a summary (one JSON line
//! with --json) and exits 1 when any broke an invariant. `--trace SEED` replays one
//! schedule and prints every event, effect and fault.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// How many schedules to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Print the summary as one JSON line.
    #[arg(long)]
    json: bool,
    /// Replay this one seed with a full trace.
    #[arg(long)]
    trace: Option<u64>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(seed) = cli.trace {
        let out = vip_dsim::run(seed, true);
        for line in &out.trace {
            println!("{line}");
        }
        for v in &out.violations {
            println!("violation: {v}");
        }
        std::process::exit(i32::from(!out.violations.is_empty()));
    }
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(cli.from));
    let end = cli.from + cli.seeds;
    let found: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let events = Arc::new(AtomicU64::new(0));
    let unsettled = Arc::new(AtomicU64::new(0));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, found, events, unsettled) = (
                next.clone(),
                found.clone(),
                events.clone(),
                unsettled.clone(),
            );
            std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let out = vip_dsim::run(seed, false);
                    events.fetch_add(out.events, Ordering::Relaxed);
                    unsettled.fetch_add(u64::from(out.unsettled), Ordering::Relaxed);
                    if let Some(v) = out.violations.first() {
                        found
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((seed, v.clone()));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let mut found = found.lock().unwrap_or_else(|e| e.into_inner()).clone();
    found.sort();
    let first = found.first().map(|(s, _)| *s);
    let rate = cli.seeds as f64 / secs.max(1e-9);
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "schedules": cli.seeds,
                "violations": found.len(),
                "schedules_per_s": (rate * 10.0).round() / 10.0,
                "events": events.load(Ordering::Relaxed),
                "unsettled": unsettled.load(Ordering::Relaxed),
                "first_failure": first,
            })
        );
    } else {
        println!(
            "{} schedules (seeds {}..{}) in {secs:.1} s ({rate:.0}/s, {} events): {} broke an invariant ({} ended with the simulated group unsettled, not judged at the end)",
            cli.seeds,
            cli.from,
            end,
            events.load(Ordering::Relaxed),
            found.len(),
            unsettled.load(Ordering::Relaxed)
        );
        for (seed, v) in found.iter().take(40) {
            println!("  seed {seed}: {v}");
        }
        if let Some(seed) = first {
            println!("replay with: cargo xtask simulate --trace {seed}");
        }
    }
    std::process::exit(i32::from(!found.is_empty()));
}
