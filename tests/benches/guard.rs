//! What the XDP guard (`vip_guard`) costs in throughput: packets per second received
//! through a veth pair without and with the guard attached on the receiving end, in the
//! same run, samples alternating, for small UDP packets to a held VIP (the guard's fast
//! path: it looks the VIP up, counts the packet and passes it) and to the host's own
//! address (not a VIP: one missed lookup), in generic mode (what the agent picks on a
//! veth, `guard::auto_mode`) and in native mode. A third variant attaches an empty XDP
//! program (`return XDP_PASS`) the same way, so the table splits the guard's cost into
//! the XDP hook's (empty vs baseline) and the guard's own logic (guard vs empty).
//!
//! The pair is a direct cable from a client namespace to a lab host (`gb1` -> `gb0`), not
//! the lab bridge, so the sender's cost stays small: it writes one prebuilt 60-byte frame
//! over and over with `sendmmsg` on an AF_PACKET socket that bypasses the qdisc. A veth
//! without NAPI receives in the sender's own softirq, so each packet costs sender +
//! receive path + guard on one CPU: the pps ratio dilutes the guard's cost by the
//! sender's, and the difference of the per-packet times (`ns/packet added`) is the
//! guard's cost itself, whichever end is the bottleneck. `VIP_BENCH_GUARD_RPS=1` moves
//! the receive path to the second CPU (RPS, sender pinned to the first) instead.
//! Received = the host namespace's `Ip: InReceives` (counted after XDP) over a fixed
//! window. No socket listens on the port: each packet ends in the UDP stack as "no
//! port" (ICMP errors are rate-limited).
//!
//! Needs root. `cargo xtask bench` (or `cargo bench -p vip-tests --bench guard`) runs it in
//! full and writes `target/bench/guard.json` and `target/bench/guard.md`; without
//! `--bench` (e.g. `cargo test --benches`) it runs a short smoke case.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use aya::programs::links::FdLink;
use aya::programs::{Xdp, XdpMode};
use aya_obj::programs::XdpAttachType;
use vip_agent::datapath::vip_table::{self, Role};
use vip_agent::datapath::{self, guard};
use vip_ebpf_common::{DstKey, GuardCounters, VipState};
use vip_tests::lab::{Host, Lab};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
/// The sender's address: routed back over the bench cable, so reverse-path checks pass.
const SENDER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
/// The cable's ends: `gb0` in the host, `gb1` in the client. MACs no lab machine has.
const HOST_IF: &str = "gb0";
const CLIENT_IF: &str = "gb1";
const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0x7e, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0x7e, 2];
/// A UDP port nothing listens on.
const PORT: u16 = 9;
/// Frames per sendmmsg call.
const BATCH: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dest {
    HeldVip,
    NotVip,
}

impl Dest {
    fn name(self) -> &'static str {
        match self {
            Dest::HeldVip => "held VIP",
            Dest::NotVip => "host address (not a VIP)",
        }
    }
}

fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Skb => "generic (agent's choice on veth)",
        XdpMode::Driver => "native",
        _ => "default",
    }
}

/// What is attached to the host's end of the cable during a sample.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Baseline,
    Empty,
    Guard,
}

/// The lab host with the bench cable, the loaded guard and the empty program (attached
/// per sample).
struct Bench {
    lab: Lab,
    ebpf: Option<Ebpf>,
    empty: Option<Xdp>,
    rps: bool,
}

impl Bench {
    fn new() -> Bench {
        let lab = Lab::builder().hosts(1).clients(1).build().expect("a lab");
        let (host, client) = (lab.host(0), lab.client(0));
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        #[rustfmt::skip]
        host.ip(&["link", "add", HOST_IF, "address", &mac(HOST_MAC), "type", "veth",
                  "peer", "name", CLIENT_IF, "address", &mac(CLIENT_MAC), "netns", client.ns()])
            .expect("the bench cable");
        host.ip(&["link", "set", HOST_IF, "up"]).unwrap();
        client.ip(&["link", "set", CLIENT_IF, "up"]).unwrap();
        host.add_addr(&format!("{VIP}/24")).unwrap();
        host.ip(&["route", "add", &format!("{SENDER}/32"), "dev", HOST_IF])
            .unwrap();
        // With VIP_BENCH_GUARD_RPS=1 the second CPU takes the receive path (RPS) and the
        // sender keeps the first. Off by default: on a small VM the IPI per wake-up made
        // the sender the bottleneck, and then the receiver's cost does not show at all.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rps = cpus >= 2 && std::env::var("VIP_BENCH_GUARD_RPS").is_ok_and(|v| v == "1");
        if rps {
            // sysfs shows the namespace of whoever mounted it: `ip netns exec` remounts it.
            let status = Command::new("ip")
                .args(["netns", "exec", host.ns(), "sh", "-c"])
                .arg(format!(
                    "echo 2 > /sys/class/net/{HOST_IF}/queues/rx-0/rps_cpus"
                ))
                .status()
                .expect("ip netns exec");
            assert!(status.success(), "setting rps_cpus on {HOST_IF}");
        }
        let mut ebpf = datapath::load().expect("loading the eBPF object");
        let mut vips: HashMap<&mut MapData, DstKey, VipState> =
            HashMap::try_from(ebpf.map_mut(guard::VIPS_MAP).unwrap()).unwrap();
        let held = vip_table::held(Role::Write, vip_table::monotonic_ns());
        vips.insert(vip_table::vip_key(IpAddr::V4(VIP)), held, 0)
            .unwrap();
        let empty = load_empty_xdp().expect("loading the empty XDP program");
        Bench {
            lab,
            ebpf: Some(ebpf),
            empty: Some(empty),
            rps,
        }
    }

    fn host(&self) -> &Host {
        self.lab.host(0)
    }

    /// Attaches the guard to the host's end of the cable; dropping the link detaches it.
    fn attach(&mut self, mode: XdpMode) -> anyhow::Result<FdLink> {
        let ebpf = self.ebpf.take().expect("the object");
        let (ebpf, link) = self
            .host()
            .run_in(move || {
                let mut ebpf = ebpf;
                let link = guard::attach(&mut ebpf, HOST_IF, mode);
                (ebpf, link)
            })
            .unwrap();
        self.ebpf = Some(ebpf);
        link
    }

    /// Attaches the empty program as the guard is (aya, bpf_link, same mode); dropping the
    /// link detaches it.
    fn attach_empty(&mut self, mode: XdpMode) -> anyhow::Result<FdLink> {
        let empty = self.empty.take().expect("the empty program");
        let (empty, link) = self
            .host()
            .run_in(move || {
                let mut empty = empty;
                let link = empty
                    .attach(HOST_IF, mode)
                    .and_then(|id| empty.take_link(id))
                    .map_err(anyhow::Error::from)
                    .and_then(|link| {
                        FdLink::try_from(link)
                            .map_err(|_| anyhow::anyhow!("no bpf_link for XDP on {HOST_IF}"))
                    });
                (empty, link)
            })
            .unwrap();
        self.empty = Some(empty);
        link
    }

    /// One sample with `variant` attached in `mode` (detached after); an error if the
    /// attachment is refused.
    fn measure(
        &mut self,
        variant: Variant,
        mode: XdpMode,
        dest: Dest,
        window: Duration,
    ) -> anyhow::Result<(f64, f64)> {
        let link = match variant {
            Variant::Baseline => None,
            Variant::Empty => Some(self.attach_empty(mode)?),
            Variant::Guard => Some(self.attach(mode)?),
        };
        let before = self.vip_packets();
        let sample = self.sample(dest, window);
        let seen = self.vip_packets() - before;
        match (variant, dest) {
            (Variant::Guard, Dest::HeldVip) => {
                assert!(seen > 0, "the guard saw no packet to the VIP")
            }
            (Variant::Guard, Dest::NotVip) => assert_eq!(seen, 0, "the guard counted a non-VIP"),
            _ => assert_eq!(seen, 0, "the guard counted packets while detached"),
        }
        drop(link);
        Ok(sample)
    }

    fn vip_packets(&self) -> u64 {
        let map: PerCpuHashMap<&MapData, DstKey, GuardCounters> = PerCpuHashMap::try_from(
            self.ebpf
                .as_ref()
                .unwrap()
                .map(guard::COUNTERS_MAP)
                .unwrap(),
        )
        .unwrap();
        guard::counters_of(&map, IpAddr::V4(VIP)).unwrap().packets
    }

    /// `Ip: InReceives` of the host's namespace: packets that reached IP (after XDP).
    fn ip_in_receives(&self) -> u64 {
        self.host()
            .run_in(|| {
                let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
                let mut ip = snmp.lines().filter(|l| l.starts_with("Ip: "));
                let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
                let at = names
                    .split_whitespace()
                    .position(|n| n == "InReceives")
                    .unwrap();
                values.split_whitespace().nth(at).unwrap().parse().unwrap()
            })
            .unwrap()
    }

    /// One sample: offered and received packets per second over `window`, blasting at
    /// `dest` from the client.
    fn sample(&self, dest: Dest, window: Duration) -> (f64, f64) {
        let dst = match dest {
            Dest::HeldVip => VIP,
            Dest::NotVip => self.host().ipv4(),
        };
        let socket = self
            .lab
            .client(0)
            .run_in(packet_socket)
            .unwrap()
            .expect("an AF_PACKET socket");
        let frame = udp_frame(SENDER, dst);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let rps = self.rps;
        let blaster = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || blast(&socket, &frame, rps, &stop, &sent))
        };
        std::thread::sleep(Duration::from_millis(200)); // warm up: queues fill, caches too
        let (s0, r0, t0) = (
            sent.load(Ordering::Relaxed),
            self.ip_in_receives(),
            Instant::now(),
        );
        std::thread::sleep(window);
        let (s1, r1, t1) = (
            sent.load(Ordering::Relaxed),
            self.ip_in_receives(),
            Instant::now(),
        );
        stop.store(true, Ordering::Relaxed);
        blaster.join().unwrap();
        let secs = (t1 - t0).as_secs_f64();
        ((s1 - s0) as f64 / secs, (r1 - r0) as f64 / secs)
    }
}

/// A bpffs pin of ours, removed on drop (also when the bench fails).
struct Pin(PathBuf);

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `bpf(2)` on an attribute struct of ours (the kernel zero-fills the rest of `bpf_attr`).
fn bpf<T>(cmd: libc::c_int, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised prefix of bpf_attr for `cmd`, of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *const T).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// An XDP program that only returns XDP_PASS, loaded with `bpf(BPF_PROG_LOAD)` (not in the
/// shipped object), handed to aya through a short-lived pin so it attaches exactly as the
/// guard does.
fn load_empty_xdp() -> anyhow::Result<Xdp> {
    const BPF_PROG_LOAD: libc::c_int = 5;
    const BPF_OBJ_PIN: libc::c_int = 6;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    #[repr(C)]
    struct Insn {
        code: u8,
        regs: u8,
        off: i16,
        imm: i32,
    }
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let insns = [
        // r0 = XDP_PASS (BPF_ALU64 | BPF_MOV | BPF_K)
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: 2,
        },
        // exit (BPF_JMP | BPF_EXIT)
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..15].copy_from_slice(b"vip_bench_empty");
    let fd = bpf(
        BPF_PROG_LOAD,
        &ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name,
        },
    )
    .map_err(|e| anyhow::anyhow!("BPF_PROG_LOAD of the empty XDP program: {e}"))?;
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let pin = Pin(PathBuf::from(format!(
        "/sys/fs/bpf/vip-bench-empty-xdp-{}",
        std::process::id()
    )));
    let path = std::ffi::CString::new(pin.0.as_os_str().as_encoded_bytes())?;
    bpf(
        BPF_OBJ_PIN,
        &ObjPin {
            pathname: path.as_ptr() as u64,
            bpf_fd: fd.as_raw_fd() as u32,
            file_flags: 0,
        },
    )
    .map_err(|e| anyhow::anyhow!("pinning the empty XDP program at {:?}: {e}", pin.0))?;
    // aya opens its own fd on the pin; ours and the pin go when this returns.
    Ok(Xdp::from_pin(&pin.0, XdpAttachType::Interface)?)
}

/// A raw AF_PACKET socket bound to the client's end of the cable, writing frames straight
/// to the driver (no qdisc). Made in the client's namespace.
fn packet_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket calls on our own fd with valid, sized arguments.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let name = std::ffi::CString::new(CLIENT_IF).unwrap();
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        if libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        Ok(fd)
    }
}

/// Sends `frame` in batches of [`BATCH`] until `stop`, adding the frames sent to `sent`.
fn blast(socket: &OwnedFd, frame: &[u8], pin: bool, stop: &AtomicBool, sent: &AtomicU64) {
    if pin {
        // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread only.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: zeroed mmsghdr is valid; each points at the one iovec, which outlives it.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| unsafe {
            let mut m: libc::mmsghdr = std::mem::zeroed();
            m.msg_hdr.msg_iov = &raw mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs holds BATCH valid headers.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                0,
            )
        };
        if n > 0 {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// A minimal Ethernet + IPv4 + UDP frame (60 bytes, the Ethernet minimum without FCS),
/// UDP checksum 0 (none, allowed over IPv4).
fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    const PAYLOAD: usize = 18;
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (20 + 8 + PAYLOAD) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&PORT.to_be_bytes());
    f.extend_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(60, 0);
    f
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("guard bench: needs root (network namespaces, eBPF); skipped");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (window, pairs) = if full {
        (Duration::from_secs(1), 11)
    } else {
        (Duration::from_millis(200), 1)
    };
    let mut bench = Bench::new();
    let mut rows = Vec::new();
    for mode in [XdpMode::Skb, XdpMode::Driver] {
        for dest in [Dest::HeldVip, Dest::NotVip] {
            let (mut base, mut empty, mut with, mut offered) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut attach_error = None;
            'pairs: for pair in 0..pairs {
                // A rotating order, so no variant always follows the same one.
                let mut order = [Variant::Baseline, Variant::Empty, Variant::Guard];
                order.rotate_left(pair % 3);
                for variant in order {
                    match bench.measure(variant, mode, dest, window) {
                        Ok((o, r)) => match variant {
                            Variant::Baseline => {
                                base.push(r);
                                offered.push(o);
                            }
                            Variant::Empty => empty.push(r),
                            Variant::Guard => with.push(r),
                        },
                        Err(e) => {
                            attach_error = Some(format!("{e:#}"));
                            break 'pairs;
                        }
                    }
                }
            }
            if let Some(e) = attach_error {
                eprintln!("guard bench: {} mode not available: {e}", mode_name(mode));
                rows.push(serde_json::json!({
                    "mode": mode_name(mode), "destination": dest.name(), "error": e,
                }));
                continue;
            }
            let (base, empty, with, offered) =
                (sorted(base), sorted(empty), sorted(with), sorted(offered));
            let (b, e, w) = (
                vip_tests::bench::percentile(&base, 0.5),
                vip_tests::bench::percentile(&empty, 0.5),
                vip_tests::bench::percentile(&with, 0.5),
            );
            let kpps = |x: f64| (x / 1000.0).round();
            let ratio = |x: f64| (x / b * 1000.0).round() / 1000.0;
            let added = |x: f64, than: f64| ((1e9 / x - 1e9 / than) * 10.0).round() / 10.0;
            rows.push(serde_json::json!({
                "mode": mode_name(mode),
                "destination": dest.name(),
                "samples": pairs,
                "window_ms": window.as_millis() as u64,
                "offered_kpps_median": kpps(vip_tests::bench::percentile(&offered, 0.5)),
                "baseline_kpps_median": kpps(b),
                "baseline_kpps_p1": kpps(vip_tests::bench::percentile(&base, 0.01)),
                "empty_kpps_median": kpps(e),
                "empty_kpps_p1": kpps(vip_tests::bench::percentile(&empty, 0.01)),
                "guard_kpps_median": kpps(w),
                "guard_kpps_p1": kpps(vip_tests::bench::percentile(&with, 0.01)),
                "empty_ratio": ratio(e),
                "ratio": ratio(w),
                "empty_added_ns_per_packet": added(e, b),
                "added_ns_per_packet": added(w, b),
                "guard_logic_ns_per_packet": added(w, e),
                "receiver_cpu": if bench.rps { "second CPU (RPS)" } else { "sender's CPU" },
            }));
        }
    }
    let mut md = String::from(
        "| XDP mode | destination | baseline kpps (p1) | empty XDP kpps (p1) | guard kpps (p1) \
         | empty / baseline | guard / baseline | ns/packet added: empty | guard | guard - empty \
         | offered kpps |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        if let Some(e) = r.get("error") {
            md.push_str(&format!(
                "| {} | {} | not available: {} | | | | | | | | |\n",
                r["mode"].as_str().unwrap(),
                r["destination"].as_str().unwrap(),
                e.as_str().unwrap()
            ));
            continue;
        }
        md.push_str(&format!(
            "| {} | {} | {} ({}) | {} ({}) | {} ({}) | {:.1}% | {:.1}% | {} | {} | {} | {} |\n",
            r["mode"].as_str().unwrap(),
            r["destination"].as_str().unwrap(),
            r["baseline_kpps_median"],
            r["baseline_kpps_p1"],
            r["empty_kpps_median"],
            r["empty_kpps_p1"],
            r["guard_kpps_median"],
            r["guard_kpps_p1"],
            r["empty_ratio"].as_f64().unwrap() * 100.0,
            r["ratio"].as_f64().unwrap() * 100.0,
            r["empty_added_ns_per_packet"],
            r["added_ns_per_packet"],
            r["guard_logic_ns_per_packet"],
            r["offered_kpps_median"],
        ));
    }
    md.push_str(&format!(
        "\nMedians of {pairs} interleaved samples (baseline, empty XDP, guard, in rotating order) of {} ms each; \
         p1 = the slowest sample. 60-byte UDP frames over a veth pair, receive path on {}. \
         Empty XDP = a program that only returns XDP_PASS, attached like the guard: its cost \
         is the XDP hook's; guard - empty is the guard's own logic. \
         Goal: guard / baseline >= 97%.\n",
        window.as_millis(),
        if bench.rps {
            "the second CPU (RPS), sender pinned to the first"
        } else {
            "the sender's CPU"
        }
    ));
    println!("{md}");
    if full {
        vip_tests::bench::write("guard", &serde_json::json!(rows), &md)
            .expect("writing the results");
    }
}
