//! How long resetting a VIP's connections takes, for N = 1,000 and 10,000 established
//! connections in a lab host, by each way there is: the agent's `reset_tcp` iterator
//! (iter/tcp + bpf_sock_destroy), its netlink SOCK_DESTROY fallback, and `ss -K` (what an
//! operator or a hook script runs today), the baseline measured in the same run.
//!
//! Each sample builds the connections afresh (a client namespace connects to the VIP in
//! the host's namespace), times one reset, and checks that no connection through the VIP
//! is left. The server ends stay in the listener's accept queue: full ESTABLISHED sockets
//! as the kernel sees them, without a second file descriptor each (the hard limit of open
//! files here is 20,000). Needs root. `cargo xtask bench` (or `cargo bench -p vip-tests --bench reset`)
//! runs it in full and writes `target/bench/reset.json` and `target/bench/reset.md`;
//! without `--bench` (e.g. `cargo test --benches`) it runs a small smoke case.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use vip_agent::datapath::iter_reset::IterReset;
use vip_agent::datapath::sock_destroy;
use vip_tests::lab::{Host, Lab};

const VIP: &str = "198.51.100.78";
const PORT: u16 = 3308;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Iterator,
    Netlink,
    SsK,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Iterator => "iter/tcp + bpf_sock_destroy",
            Path::Netlink => "netlink SOCK_DESTROY",
            Path::SsK => "ss -K (baseline)",
        }
    }
}

/// One lab host with the VIP and a listener that accepts and keeps every connection.
struct Bench {
    lab: Lab,
    iter: Option<IterReset>,
}

impl Bench {
    fn new() -> Bench {
        let lab = Lab::builder().hosts(1).clients(1).build().expect("a lab");
        lab.host(0).add_addr(&format!("{VIP}/24")).unwrap();
        // The accept queue holds the server ends: let it hold 10,000.
        let mut sysctl = Command::new("sysctl");
        sysctl.args(["-qw", "net.core.somaxconn=65535"]);
        vip_tests::netns::command_in(lab.host(0).ns(), &mut sysctl).unwrap();
        assert!(
            sysctl.status().unwrap().success(),
            "sysctl net.core.somaxconn"
        );
        Bench { lab, iter: None }
    }

    fn host(&self) -> &Host {
        self.lab.host(0)
    }

    /// `n` established connections through the VIP: the clients, and the listener whose
    /// accept queue holds the server ends, to be kept until the reset.
    fn connect(&self, n: usize) -> (Vec<TcpStream>, TcpListener) {
        let listener = self.host().run_in(listener).unwrap();
        let to = SocketAddr::new(VIP.parse().unwrap(), PORT);
        let clients = self
            .lab
            .client(0)
            .run_in(move || {
                (0..n)
                    .map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap())
                    .collect::<Vec<_>>()
            })
            .unwrap();
        (clients, listener)
    }

    /// Times one reset of every connection through the VIP in the host.
    fn reset(&mut self, path: Path) -> Duration {
        let vip: IpAddr = VIP.parse().unwrap();
        match path {
            Path::Iterator => {
                let mut iter = self.iter.take().unwrap_or_else(|| {
                    self.host()
                        .run_in(IterReset::load)
                        .unwrap()
                        .expect("the iterator loads")
                });
                let (iter, took) = self
                    .host()
                    .run_in(move || {
                        let t = Instant::now();
                        iter.reset_report(vip, None).expect("the iterator resets");
                        (iter, t.elapsed())
                    })
                    .unwrap();
                self.iter = Some(iter);
                took
            }
            Path::Netlink => self
                .host()
                .run_in(move || {
                    let t = Instant::now();
                    sock_destroy::reset_local(vip, None).expect("netlink resets");
                    t.elapsed()
                })
                .unwrap(),
            Path::SsK => {
                let mut cmd = Command::new("ss");
                cmd.args(["-K", "-t", "src", VIP]);
                vip_tests::netns::command_in(self.host().ns(), &mut cmd).unwrap();
                let t = Instant::now();
                let out = cmd.output().expect("ss runs");
                let took = t.elapsed();
                assert!(
                    out.status.success(),
                    "ss -K: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                took
            }
        }
    }

    /// Connections through the VIP still in the host's namespace.
    fn left(&self) -> usize {
        let vip: IpAddr = VIP.parse().unwrap();
        self.host()
            .run_in(move || sock_destroy::list_local(vip, None).unwrap().len())
            .unwrap()
    }
}

/// A listener on the VIP with a backlog deep enough for 10,000 connections at once.
fn listener() -> TcpListener {
    let l = TcpListener::bind((VIP, PORT)).expect("bind the VIP");
    // SAFETY: listen(2) again on our own socket only raises the backlog.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 65535) };
    l
}

fn raise_nofile(want: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on our own process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max.max(want));
            lim.rlim_max = lim.rlim_max.max(want);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("reset bench: needs root (network namespaces, eBPF); skipped");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (sizes, samples): (&[usize], usize) = if full {
        (&[1_000, 10_000], 11)
    } else {
        (&[100], 1)
    };
    raise_nofile(65_536);
    let paths = [Path::SsK, Path::Netlink, Path::Iterator];
    let mut bench = Bench::new();
    let mut rows = Vec::new();
    for &n in sizes {
        let mut medians = Vec::new();
        for &path in &paths {
            let mut ms = Vec::new();
            for _ in 0..samples {
                let (clients, servers) = bench.connect(n);
                let took = bench.reset(path);
                let left = bench.left();
                assert_eq!(left, 0, "{}: {left} of {n} connections left", path.name());
                drop((clients, servers));
                ms.push(took.as_secs_f64() * 1000.0);
            }
            ms.sort_by(f64::total_cmp);
            let (median, p99) = (
                vip_tests::bench::percentile(&ms, 0.5),
                vip_tests::bench::percentile(&ms, 0.99),
            );
            medians.push(median);
            rows.push(serde_json::json!({
                "connections": n,
                "path": path.name(),
                "samples": samples,
                "median_ms": (median * 100.0).round() / 100.0,
                "p99_ms": (p99 * 100.0).round() / 100.0,
                "vs_ss_k": (medians[0] / median * 100.0).round() / 100.0,
            }));
        }
    }
    let mut md = String::from(
        "| connections | path | median ms | p99 ms | speed vs `ss -K` |\n|---:|---|---:|---:|---:|\n",
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {}x |\n",
            r["connections"],
            r["path"].as_str().unwrap(),
            r["median_ms"],
            r["p99_ms"],
            r["vs_ss_k"]
        ));
    }
    println!("{md}");
    if full {
        vip_tests::bench::write("reset", &serde_json::json!(rows), &md)
            .expect("writing the results");
    }
}
