//! What an idle vip-agent costs its host: resident memory (VmRSS and its peak VmHWM from
//! `/proc/<pid>/status`) and CPU (utime + stime + the children's from `/proc/<pid>/stat`
//! over fixed windows, as % of one core), polling its member every 100 ms:
//!
//! - a 3-member group with the write VIP only;
//! - 9 members with 64 read VIPs (198.51.100.128-191), once the placement has settled;
//!
//! each on the primary's agent and on a secondary's. The same-run baseline is keepalived
//! (Debian's, `cargo xtask bench` installs it) idle as VRRP master of one VIP, with a
//! `vrrp_script` that runs `/bin/true` every second: the floor of what a keepalived setup
//! costs (a real check forks a mysql client per interval; its CPU lands in the children's
//! time, counted here). keepalived's monitor and VRRP processes are summed.
//!
//! The agent measured is the one `vip_tests::agent_binary` finds next to this bench:
//! `target/release/vip-agent` under `cargo bench` (what ships; `cargo xtask bench` builds
//! it first), the debug build under `cargo test --benches`. The table names it.
//!
//! Needs root. `cargo xtask bench` (or `cargo bench -p vip-tests --bench footprint`) runs
//! it in full and writes `target/bench/footprint.json` and `target/bench/footprint.md`;
//! without `--bench` it runs short windows as a smoke test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vip_tests::cluster::{Cluster, VipSettings};
use vip_tests::lab::{Lab, wait_for};
use vip_tests::scratch::TempDir;

const SETTLE: Duration = Duration::from_secs(60);
/// Goal: an idle agent stays within this resident size.
const RSS_GOAL_MB: f64 = 15.0;
/// keepalived's VIP, in a lab of its own.
const KEEPALIVED_VIP: &str = "198.51.100.60";

/// The CPU time a process and its reaped children used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after "(comm)": state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap())
        .collect();
    f.iter().sum()
}

/// VmRSS and VmHWM in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// One measured subject: a name and its processes (summed).
struct Subject {
    name: String,
    pids: Vec<u32>,
}

/// CPU % of one core per window for every subject, the windows taken at the same time.
fn cpu_windows(subjects: &[Subject], window: Duration, windows: usize) -> Vec<Vec<f64>> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |s: &Subject| s.pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let mut out = vec![Vec::new(); subjects.len()];
    for _ in 0..windows {
        let before: Vec<u64> = subjects.iter().map(ticks).collect();
        let t0 = Instant::now();
        std::thread::sleep(window);
        let secs = t0.elapsed().as_secs_f64();
        for (i, s) in subjects.iter().enumerate() {
            let used = (ticks(s) - before[i]) as f64 / hz;
            out[i].push(used / secs * 100.0);
        }
    }
    out
}

/// Measures the subjects and appends one row each.
fn measure(
    case: &str,
    subjects: &[Subject],
    window: Duration,
    windows: usize,
    rows: &mut Vec<serde_json::Value>,
) {
    let cpu = cpu_windows(subjects, window, windows);
    for (s, mut cpu) in subjects.iter().zip(cpu) {
        cpu.sort_by(f64::total_cmp);
        let (rss, hwm) = s
            .pids
            .iter()
            .map(|&p| memory_kb(p))
            .fold((0, 0), |(r, h), (r2, h2)| (r + r2, h + h2));
        let mb = |kb: u64| (kb as f64 / 1024.0 * 10.0).round() / 10.0;
        let pct = |x: f64| (x * 100.0).round() / 100.0;
        rows.push(serde_json::json!({
            "case": case,
            "process": s.name,
            "processes": s.pids.len(),
            "rss_mb": mb(rss),
            "hwm_mb": mb(hwm),
            "cpu_pct_median": pct(vip_tests::bench::percentile(&cpu, 0.5)),
            "cpu_pct_p99": pct(vip_tests::bench::percentile(&cpu, 0.99)),
            "windows": windows,
            "window_s": window.as_secs_f64(),
        }));
    }
}

fn agent_pid(c: &Cluster, i: usize) -> u32 {
    c.agents[i].as_ref().expect("agent running").proc.pid()
}

fn group_of(hosts: usize, read_vips: Vec<IpAddr>, instance: &str, bin: &Path) -> Cluster {
    let settings = VipSettings {
        read_vips,
        instance: instance.into(),
        ..VipSettings::default()
    };
    Cluster::start(hosts, settings, bin.to_path_buf(), |g| g).expect("a cluster")
}

/// 64 read VIPs clear of the hosts (.11-.19), clients (.101-) and the write VIP (.50).
fn read_vips() -> Vec<IpAddr> {
    (128..192)
        .map(|n| IpAddr::V4(Ipv4Addr::new(198, 51, 100, n)))
        .collect()
}

/// keepalived as VRRP master of one VIP with a 1 s vrrp_script, in a lab host.
fn keepalived(lab: &Lab, dir: &Path) -> vip_tests::lab::Proc {
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global_defs {{
    router_id vip-bench
    enable_script_security
    script_user root
}}
vrrp_script chk {{
    script "/bin/true"
    interval 1
}}
vrrp_instance bench {{
    state MASTER
    interface eth0
    virtual_router_id 77
    priority 100
    advert_int 1
    virtual_ipaddress {{
        {KEEPALIVED_VIP}/24
    }}
    track_script {{
        chk
    }}
}}
"#
        ),
    )
    .unwrap();
    let pid = |name: &str| dir.join(name).display().to_string();
    let mut cmd = Command::new("keepalived");
    cmd.args(["--dont-fork", "--log-console", "--vrrp", "--use-file"])
        .arg(&conf)
        .args(["--pid", &pid("k.pid")])
        .args(["--vrrp_pid", &pid("v.pid")])
        .args(["--checkers_pid", &pid("c.pid")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.host(0).spawn(&mut cmd).expect("starting keepalived")
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("footprint bench: needs root (network namespaces, eBPF); skipped");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (window, windows) = if full {
        (Duration::from_secs(5), 6)
    } else {
        (Duration::from_secs(1), 1)
    };
    let bin = vip_tests::agent_binary();
    let release = bin.components().any(|c| c.as_os_str() == "release");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let mut rows = Vec::new();

    // The baseline first, alone.
    if Command::new("keepalived").arg("--version").output().is_ok() {
        let lab = Lab::builder().hosts(1).clients(0).build().expect("a lab");
        let dir = TempDir::new("bench-keepalived");
        let k = keepalived(&lab, dir.path());
        let vip: IpAddr = KEEPALIVED_VIP.parse().unwrap();
        let master = wait_for(SETTLE, || {
            lab.host(0)
                .addrs()
                .is_ok_and(|a| a.iter().any(|a| a.addr == vip))
        });
        assert!(master, "keepalived did not take {vip}");
        let mut pids = vec![k.pid()];
        pids.extend(children(k.pid()));
        let subject = Subject {
            name: "keepalived (baseline: monitor + VRRP, /bin/true check every 1 s)".into(),
            pids,
        };
        measure(
            "one VIP, VRRP master",
            &[subject],
            window,
            windows,
            &mut rows,
        );
    } else {
        eprintln!("footprint bench: keepalived not installed; no baseline");
    }

    // The agents of h1 (the primary) and h2 (a secondary).
    let primary_and_secondary = |c: &Cluster| {
        ["primary", "secondary"].map(|role| Subject {
            name: format!(
                "vip-agent {} ({role})",
                if release { "release" } else { "DEBUG build" }
            ),
            pids: vec![agent_pid(c, usize::from(role == "secondary"))],
        })
    };
    {
        let c = group_of(3, Vec::new(), "fpa", &bin);
        c.wait_sole_holder(0, SETTLE).expect("the write VIP on h1");
        let subjects = primary_and_secondary(&c);
        measure(
            "3 members, write VIP",
            &subjects,
            window,
            windows,
            &mut rows,
        );
    }
    {
        let c = group_of(9, read_vips(), "fpb", &bin);
        c.wait(SETTLE, "write VIP on h1, each read VIP on one host", |c| {
            c.holders() == [0] && c.read_placement().iter().all(|(_, h)| h.len() == 1)
        })
        .expect("the placement settles");
        let subjects = primary_and_secondary(&c);
        measure(
            "9 members, 64 read VIPs",
            &subjects,
            window,
            windows,
            &mut rows,
        );
    }

    let mut md = String::from(
        "| case | process | VmRSS MB | VmHWM MB | CPU % of a core, median (p99) |\n|---|---|---:|---:|---:|\n",
    );
    let mut worst_rss: f64 = 0.0;
    for r in &rows {
        if r["process"].as_str().unwrap().starts_with("vip-agent") {
            worst_rss = worst_rss.max(r["rss_mb"].as_f64().unwrap());
        }
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} ({}) |\n",
            r["case"].as_str().unwrap(),
            r["process"].as_str().unwrap(),
            r["rss_mb"],
            r["hwm_mb"],
            r["cpu_pct_median"],
            r["cpu_pct_p99"],
        ));
    }
    md.push_str(&format!(
        "\nPoll interval 100 ms. CPU: utime+stime (+ reaped children) over {windows} windows of \
         {} s, clock ticks of 10 ms. Agent binary: `{}`. The simulated mysqld's work is not \
         counted. Goal: idle RSS <= {RSS_GOAL_MB} MB: {} (largest agent VmRSS {worst_rss} MB). \
         The planner's time at 64 read VIPs x 9 members is the `plan` bench.\n",
        window.as_secs(),
        bin.display(),
        if worst_rss <= RSS_GOAL_MB {
            "met"
        } else {
            "MISSED"
        },
    ));
    println!("{md}");
    if full {
        vip_tests::bench::write("footprint", &serde_json::json!(rows), &md)
            .expect("writing the results");
    }
}
