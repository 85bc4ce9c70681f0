//! How long `plan::place` takes on 64 read VIPs over 9 members (1 primary, 8 secondaries),
//! for both floating types, against baselines measured in the same run (cloning the input's
//! holdings map, sorting the 64 VIPs, cloning a placement: the output's own cost), so the
//! ratios mean something on any machine.
//!
//! Run with `cargo bench -p vip-agent --bench plan` or `cargo xtask bench`. No criterion,
//! to keep the dependencies light: each case runs in batches, and the table shows the
//! median time per call over the batches. Under `cargo test --benches` (no `--bench`
//! argument) every case runs a few times only, as a smoke test.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use vip_agent::config::FloatingType;
use vip_agent::plan::{Holdings, Input, Member, place};

const VIPS: usize = 64;
const MEMBERS: usize = 9;
const BATCH: u32 = 200;
const SAMPLES: usize = 301;

/// xorshift64: fixed, seeded holdings without a dependency.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn members() -> Vec<Member> {
    (0..MEMBERS)
        .map(|i| Member {
            uuid: format!(
                "{:08x}-aab4-11ef-86ab-c80aa94295{i:02}",
                0x1b3c_2a10 + i * 0x1111
            ),
            primary: i == 4,
        })
        .collect()
}

fn read_vips() -> Vec<IpAddr> {
    (1..=VIPS as u8)
        .map(|l| IpAddr::V4(Ipv4Addr::new(198, 51, 100, l)))
        .collect()
}

/// Each VIP: unheld (1 in 8), claimed by two members (1 in 8), else by one.
fn random_holdings(members: &[Member], vips: &[IpAddr], seed: u64) -> Holdings {
    let mut rng = XorShift(seed);
    let mut holdings = Holdings::new();
    for vip in vips {
        let claimants = match rng.below(8) {
            0 => 0,
            1 => 2,
            _ => 1,
        };
        for _ in 0..claimants {
            let m = &members[rng.below(members.len())];
            holdings.entry(m.uuid.clone()).or_default().insert(*vip);
        }
    }
    holdings
}

/// The median time per call, in nanoseconds, of `f` and of `baseline`, run in batches that
/// alternate, so that a machine busy with other work slows both alike and the ratio holds.
fn paired_median_ns(
    samples: usize,
    batch: u32,
    mut f: impl FnMut(),
    mut baseline: impl FnMut(),
) -> (f64, f64) {
    let time = |g: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..batch {
            g();
        }
        start.elapsed().as_nanos() as f64 / f64::from(batch)
    };
    time(&mut f); // warm-up
    time(&mut baseline);
    let (mut fs, mut bs): (Vec<f64>, Vec<f64>) = (0..samples)
        .map(|_| (time(&mut f), time(&mut baseline)))
        .unzip();
    (median(&mut fs), median(&mut bs))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (samples, batch) = if full { (SAMPLES, BATCH) } else { (3, 2) };

    let members = members();
    let vips = read_vips();
    let random = random_holdings(&members, &vips, 0x9E37_79B9_7F4A_7C15);
    let empty = Holdings::new();
    let write_vip = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 200)));
    let input = |floating, holdings| Input {
        members: &members,
        write_vip,
        read_vips: &vips,
        floating,
        holdings,
    };
    // The steady state: every member already holds what the planner gives it.
    let steady_tp = place(&input(FloatingType::ToPrimary, &random)).read_holdings();
    let steady_tas = place(&input(FloatingType::ToAnotherSecondary, &random)).read_holdings();
    let mut shuffled = vips.clone();
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i + 1));
    }
    // What producing the output alone costs: 64 map entries, each with its own String.
    let output = place(&input(FloatingType::ToPrimary, &random));

    let clone_holdings = || {
        black_box(black_box(&random).clone());
    };
    let sort_vips = || {
        let mut v = black_box(&shuffled).clone();
        v.sort_unstable();
        black_box(v);
    };
    let clone_output = || {
        black_box(black_box(&output).clone());
    };
    let baselines: [(&str, &dyn Fn()); 3] = [
        ("baseline: clone the holdings map", &clone_holdings),
        ("baseline: copy and sort the 64 VIPs", &sort_vips),
        ("baseline: clone a Placement (the output)", &clone_output),
    ];
    let cases = [
        (
            "first placement, TO_PRIMARY",
            input(FloatingType::ToPrimary, &empty),
        ),
        (
            "first placement, TO_ANOTHER_SECONDARY",
            input(FloatingType::ToAnotherSecondary, &empty),
        ),
        (
            "random holdings, TO_PRIMARY",
            input(FloatingType::ToPrimary, &random),
        ),
        (
            "random holdings, TO_ANOTHER_SECONDARY",
            input(FloatingType::ToAnotherSecondary, &random),
        ),
        (
            "steady state, TO_PRIMARY",
            input(FloatingType::ToPrimary, &steady_tp),
        ),
        (
            "steady state, TO_ANOTHER_SECONDARY",
            input(FloatingType::ToAnotherSecondary, &steady_tas),
        ),
    ];

    println!(
        "plan::place, {VIPS} read VIPs x {MEMBERS} members (1 primary); median of {samples} \
         batches of {batch} calls,\nalternating with batches cloning the holdings map \
         (\"x clone\" is the ratio of the two medians)"
    );
    println!("{:<42} {:>10} {:>8}", "case", "ns/call", "x clone");
    let row = |name: &str, (ns, clone): (f64, f64)| {
        println!("{name:<42} {ns:>10.0} {:>8.1}", ns / clone);
    };
    for (name, f) in &baselines {
        row(name, paired_median_ns(samples, batch, f, clone_holdings));
    }
    for (name, input) in &cases {
        let plan = || {
            black_box(place(black_box(input)));
        };
        row(name, paired_median_ns(samples, batch, plan, clone_holdings));
    }
}
