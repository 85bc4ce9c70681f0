//! The XDP guard (`vip_guard`, attached by `vip_agent::datapath::guard::attach`) in the
//! lab, without the agent: the test loads the object, attaches the guard to a host's
//! `eth0` from inside the host's namespace (setns only) and writes the VIPS map itself.
//!
//! - A client whose neighbour entry still points at the host after the VIP was released
//!   gets ECONNREFUSED (new connections) and ECONNRESET (open ones) at once; after the
//!   guard's expiry the same connect times out, as it would without the guard.
//! - ARP requests and neighbour solicitations for a released VIP go unanswered.
//! - A frame for the VIP sent to another MAC (flooded by the bridge) gets no RST; frames
//!   to the host's MAC get a RST whose numbers and checksums are right.
//! - Counters grow for a held VIP; tracked connections get `last_rx_ns`.
//! - Native (driver) mode on veth: XDP_TX needs an XDP program on the peer veth (see
//!   the last test); the other tests attach in generic (skb) mode.
//!
//! They need root; without it they skip (see `vip_tests::privileged`). Connections to
//! 198.51.100.x and 2001:db8::x are only ever made from lab namespaces.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use aya::programs::XdpMode;
use aya::programs::links::FdLink;
use vip_agent::datapath::vip_table::{self, Role};
use vip_agent::datapath::{self, guard};
use vip_ebpf_common::{AF_INET, AF_INET6, ConnInfo, ConnKey, DstKey, GuardCounters, ROLE_WRITE};
use vip_tests::lab::{Host, Kind, Lab, Mac, wait_for};

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50);
const PORT: u16 = 3306;
/// Long enough for anything in the lab to happen; only spent on failure.
const DEADLINE: Duration = Duration::from_secs(5);
/// A refused connect must come back well within this.
const FAST: Duration = Duration::from_secs(1);
/// The connect timeout that shows nothing answers (a connect to an unanswered SYN).
const SILENCE: Duration = Duration::from_millis(1500);
const GUARD_FOR: Duration = Duration::from_secs(30);
/// A MAC no lab machine has: the bridge floods frames sent to it to every port.
const STRANGER: Mac = Mac([0x02, 0, 0, 0, 0x7f, 0x7f]);

/// The mode the functional tests attach in: generic works on any veth (see
/// `native_mode_on_veth_needs_napi_on_the_peer` for native).
const MODE: XdpMode = XdpMode::Skb;

// ---------------------------------------------------------------------------------------
// The guard and its maps.

/// The loaded object with `vip_guard` attached to a host's eth0; dropping it detaches.
struct Guarded {
    ebpf: Ebpf,
    _link: FdLink,
}

impl Guarded {
    fn attach(host: &Host, mode: XdpMode) -> Guarded {
        let ebpf = datapath::load().expect("loading the eBPF object");
        host.run_in(move || {
            let mut ebpf = ebpf;
            guard::attach(&mut ebpf, "eth0", mode).map(|link| Guarded { ebpf, _link: link })
        })
        .expect("entering the namespace")
        .unwrap_or_else(|e| panic!("attaching the guard in {mode:?} mode: {e:#}"))
    }

    fn vips(&mut self) -> HashMap<&mut MapData, DstKey, vip_ebpf_common::VipState> {
        HashMap::try_from(self.ebpf.map_mut(guard::VIPS_MAP).unwrap()).unwrap()
    }

    fn hold(&mut self, vip: IpAddr) {
        let state = vip_table::held(Role::Write, vip_table::monotonic_ns());
        self.vips()
            .insert(vip_table::vip_key(vip), state, 0)
            .unwrap();
    }

    /// Held until `lease_ends_in` from now, when the kernel fences it.
    fn hold_for(&mut self, vip: IpAddr, lease_ends_in: Duration) {
        let now = vip_table::monotonic_ns();
        let until = now + lease_ends_in.as_nanos() as u64;
        let state = vip_table::held_until(Role::Write, now, until);
        self.vips()
            .insert(vip_table::vip_key(vip), state, 0)
            .unwrap();
    }

    fn release(&mut self, vip: IpAddr) {
        let state = vip_table::released(Role::Write, vip_table::monotonic_ns(), GUARD_FOR);
        self.vips()
            .insert(vip_table::vip_key(vip), state, 0)
            .unwrap();
    }

    /// Released, with the guard's time already over.
    fn expire(&mut self, vip: IpAddr) {
        let state = vip_table::released(Role::Write, vip_table::monotonic_ns(), Duration::ZERO);
        self.vips()
            .insert(vip_table::vip_key(vip), state, 0)
            .unwrap();
    }

    fn counters(&self, vip: IpAddr) -> guard::VipCounters {
        let map: PerCpuHashMap<&MapData, DstKey, GuardCounters> =
            PerCpuHashMap::try_from(self.ebpf.map(guard::COUNTERS_MAP).unwrap()).unwrap();
        guard::counters_of(&map, vip).unwrap()
    }

    /// Waits until `vip`'s counters satisfy `cond`; returns them.
    fn wait_counters(
        &self,
        vip: IpAddr,
        what: &str,
        cond: impl Fn(&guard::VipCounters) -> bool,
    ) -> guard::VipCounters {
        let mut last = self.counters(vip);
        let ok = wait_for(DEADLINE, || {
            last = self.counters(vip);
            cond(&last)
        });
        assert!(ok, "{what}: counters of {vip} are {last:?}");
        last
    }

    fn conns(&mut self) -> HashMap<&mut MapData, ConnKey, ConnInfo> {
        HashMap::try_from(self.ebpf.map_mut("CONNS").unwrap()).unwrap()
    }
}

/// The CONNS key of a client's connection to a VIP: local = the VIP side.
fn conn_key(conn: &TcpStream) -> ConnKey {
    let (client, vip) = (conn.local_addr().unwrap(), conn.peer_addr().unwrap());
    let family = if vip.is_ipv4() { AF_INET } else { AF_INET6 };
    ConnKey {
        family,
        local_port: vip.port(),
        remote_port: client.port(),
        _pad: 0,
        local: vip_table::vip_key(vip.ip()).addr,
        remote: vip_table::vip_key(client.ip()).addr,
    }
}

// ---------------------------------------------------------------------------------------
// Sockets in the lab.

/// An echo server in a host's namespace; stops accepting when dropped.
struct Echo {
    stop: Arc<AtomicBool>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn echo_server(host: &Host, bind: SocketAddr) -> Echo {
    let listener = host
        .run_in(move || TcpListener::bind(bind))
        .expect("entering the namespace")
        .unwrap_or_else(|e| panic!("binding {bind}: {e}"));
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 256];
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    Echo { stop }
}

fn connect(from: &Host, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    from.run_in(move || TcpStream::connect_timeout(&to, timeout))
        .expect("entering the namespace")
}

fn echoes(mut conn: &TcpStream) -> bool {
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut back = [0u8; 4];
    conn.write_all(b"ping").is_ok() && conn.read_exact(&mut back).is_ok() && &back == b"ping"
}

/// Sends on an open connection and waits until it reads a reset.
///
/// The reset may also come before the send: the client's delayed ACK of the last echo
/// can reach the guard first. The send then reports it (and a read would see EOF).
fn assert_reset_on_next_segment(mut conn: &TcpStream) {
    conn.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    // The segment the guard answers.
    match conn.write_all(b"ping") {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
        Err(e) => panic!("expected a reset, the send failed with {e}"),
    }
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 16];
    loop {
        match conn.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected a reset, read {other:?}"),
        }
        assert!(Instant::now() < deadline, "no reset within {DEADLINE:?}");
    }
}

/// Points `client`'s neighbour entry for `vip` at `mac` for good: a client whose cache
/// missed the new owner's announcement.
fn stale_neighbour(client: &Host, vip: IpAddr, mac: Mac) {
    let (vip, mac) = (vip.to_string(), mac.to_string());
    #[rustfmt::skip]
    client.ip(&["neigh", "replace", &vip, "lladdr", &mac, "nud", "permanent", "dev", "eth0"])
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Raw frames.

/// An AF_PACKET socket on a machine's eth0: sends whole frames, reads incoming ones.
struct RawLink {
    fd: OwnedFd,
}

impl RawLink {
    fn open(host: &Host) -> RawLink {
        host.run_in(|| -> std::io::Result<RawLink> {
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); the fd is owned at once.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::c_int::from(all),
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is fresh and owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            // SAFETY: sockaddr_ll is plain old data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = all;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: sll lives, and its size is passed.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 20_000,
            };
            // SAFETY: timeout lives, and its size is passed.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const timeout).cast(),
                    size_of::<libc::timeval>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(RawLink { fd })
        })
        .expect("entering the namespace")
        .expect("opening a packet socket")
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: frame lives, and its length is passed.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// The first incoming frame for which `pick` returns Some, before `timeout`.
    fn recv<T>(&self, timeout: Duration, mut pick: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: sockaddr_ll is plain old data.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and from live, and their lengths are passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &mut len,
                )
            };
            let Ok(n) = usize::try_from(n) else { continue };
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if let Some(t) = pick(&buf[..n]) {
                return Some(t);
            }
        }
        None
    }
}

/// The ones' complement sum of big-endian 16-bit words (an odd last byte padded).
fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header sum of an upper-layer packet of `len` bytes.
fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum16(&s.octets()) + sum16(&d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum16(&s.octets()) + sum16(&d.octets()),
        _ => panic!("mixed families"),
    };
    addrs + u32::from(proto) + len as u32
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// A TCP segment to send raw.
struct Seg {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    /// TCP options (a multiple of 4 bytes).
    options: Vec<u8>,
    payload: Vec<u8>,
}

impl Seg {
    fn syn(sport: u16, seq: u32) -> Seg {
        Seg {
            sport,
            dport: PORT,
            seq,
            ack: 0,
            flags: TCP_SYN,
            // MSS 1460, SACK permitted, NOP, NOP, window scale 7, NOP.
            options: vec![2, 4, 5, 0xb4, 4, 2, 1, 1, 3, 3, 7, 1],
            payload: Vec::new(),
        }
    }

    fn tcp_bytes(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        let mut t = Vec::new();
        t.extend(self.sport.to_be_bytes());
        t.extend(self.dport.to_be_bytes());
        t.extend(self.seq.to_be_bytes());
        t.extend(self.ack.to_be_bytes());
        t.extend([((hlen / 4) as u8) << 4, self.flags]);
        t.extend(64240u16.to_be_bytes());
        t.extend([0, 0, 0, 0]); // checksum, urgent pointer
        t.extend(&self.options);
        t.extend(&self.payload);
        let csum = fold(pseudo(src, dst, 6, t.len()) + sum16(&t));
        t[16..18].copy_from_slice(&csum.to_be_bytes());
        t
    }
}

fn ethernet(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(dst.0);
    f.extend(src.0);
    f.extend(ethertype.to_be_bytes());
    f
}

/// An IPv4 frame around `payload`, with `ip_options` (a multiple of 4 bytes).
fn ipv4_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ip_options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hlen = 20 + ip_options.len();
    let total = (hlen + payload.len()) as u16;
    let mut ip = vec![0x40 | (hlen / 4) as u8, 0];
    ip.extend(total.to_be_bytes());
    ip.extend([0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    ip.extend(src.octets());
    ip.extend(dst.octets());
    ip.extend(ip_options);
    let csum = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let mut f = ethernet(dst_mac, src_mac, 0x0800);
    f.extend(ip);
    f.extend(payload);
    f
}

fn ipv6_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = ethernet(dst_mac, src_mac, 0x86dd);
    f.extend([0x60, 0, 0, 0]);
    f.extend((payload.len() as u16).to_be_bytes());
    f.extend([next, hop_limit]);
    f.extend(src.octets());
    f.extend(dst.octets());
    f.extend(payload);
    f
}

fn tcp_frame(dst_mac: Mac, from: &Host, to: IpAddr, seg: &Seg) -> Vec<u8> {
    match to {
        IpAddr::V4(to) => {
            let tcp = seg.tcp_bytes(from.ipv4().into(), to.into());
            ipv4_frame(dst_mac, from.mac(), from.ipv4(), to, 6, &[], &tcp)
        }
        IpAddr::V6(to) => {
            let tcp = seg.tcp_bytes(from.ipv6().into(), to.into());
            ipv6_frame(dst_mac, from.mac(), from.ipv6(), to, 6, 64, &tcp)
        }
    }
}

/// A broadcast ARP request from `from` for `target`.
fn arp_request(from: &Host, target: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet(Mac::BROADCAST, from.mac(), 0x0806);
    f.extend([0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend(from.mac().0);
    f.extend(from.ipv4().octets());
    f.extend([0; 6]);
    f.extend(target.octets());
    f.resize(60, 0);
    f
}

/// A neighbour solicitation from `from` for `target`, to its solicited-node group.
fn neighbour_solicitation(from: &Host, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend(t);
    icmp.extend([1, 1]); // source link-layer address option
    icmp.extend(from.mac().0);
    let csum = fold(pseudo(from.ipv6().into(), group.into(), 58, icmp.len()) + sum16(&icmp));
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    let mac = Mac([0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    ipv6_frame(mac, from.mac(), from.ipv6(), group, 58, 255, &icmp)
}

/// A TCP segment read off the wire, with its checksums checked.
#[derive(Debug)]
struct Rst {
    frame_len: usize,
    src_mac: Mac,
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    ttl: u8,
    /// The IP length (IPv4 total length, IPv6 payload length).
    ip_len: u16,
    tcp_header_len: usize,
    tcp_len: usize,
    checksums_ok: bool,
}

/// Parses a TCP RST (only RSTs) from `vip`.
fn parse_rst(frame: &[u8], vip: IpAddr) -> Option<Rst> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let src_mac = Mac::from_slice(frame.get(6..12)?)?;
    let (src, dst, ttl, ip_len, tcp, ip_ok) = match ethertype {
        0x0800 => {
            let ip = frame.get(14..)?;
            let hlen = usize::from(ip[0] & 0x0f) * 4;
            if ip[9] != 6 {
                return None;
            }
            let total = u16::from_be_bytes([ip[2], ip[3]]);
            let src = IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).ok()?);
            let dst = IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).ok()?);
            let ip_ok = fold(sum16(&ip[..hlen])) == 0;
            let tcp = ip.get(hlen..usize::from(total))?;
            (src, dst, ip[8], total, tcp, ip_ok)
        }
        0x86dd => {
            let ip = frame.get(14..)?;
            if ip[6] != 6 {
                return None;
            }
            let plen = u16::from_be_bytes([ip[4], ip[5]]);
            let src = IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
            let dst = IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
            let tcp = ip.get(40..40 + usize::from(plen))?;
            (src, dst, ip[7], plen, tcp, true)
        }
        _ => return None,
    };
    if src != vip || tcp.len() < 20 || tcp[13] & TCP_RST == 0 {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes(tcp[at..at + 4].try_into().unwrap());
    let tcp_ok = fold(pseudo(src, dst, 6, tcp.len()) + sum16(tcp)) == 0;
    Some(Rst {
        frame_len: frame.len(),
        src_mac,
        src: SocketAddr::new(src, u16::from_be_bytes([tcp[0], tcp[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([tcp[2], tcp[3]])),
        seq: be32(4),
        ack: be32(8),
        flags: tcp[13],
        ttl,
        ip_len,
        tcp_header_len: usize::from(tcp[12] >> 4) * 4,
        tcp_len: tcp.len(),
        checksums_ok: ip_ok && tcp_ok,
    })
}

// ---------------------------------------------------------------------------------------
// The tests.

/// A client keeps sending to the VIP at the host's MAC after the host let it go.
fn stale_client_is_refused(v6: bool) {
    let lab = Lab::builder().hosts(1).clients(1).build().unwrap();
    let (host, client) = (lab.host(0), lab.client(0));
    let (vip, cidr): (IpAddr, _) = if v6 {
        (VIP6.into(), "2001:db8::50/64")
    } else {
        (VIP4.into(), "198.51.100.50/24")
    };
    let to = SocketAddr::new(vip, PORT);
    host.add_addr(cidr).unwrap();
    let _echo = echo_server(host, (Ipv6Addr::UNSPECIFIED, PORT).into());
    let mut guard = Guarded::attach(host, MODE);
    guard.hold(vip);

    // Held: connections work, the guard counts their packets and refreshes the tracked
    // connection's last activity.
    let conn = connect(client, to, DEADLINE).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    assert!(echoes(&conn), "connection to the held VIP echoes");
    let key = conn_key(&conn);
    let info = ConnInfo {
        established_ns: vip_table::monotonic_ns(),
        role: ROLE_WRITE,
        state: 1,
        ..ConnInfo::default()
    };
    guard.conns().insert(key, info, 0).unwrap();
    let before = vip_table::monotonic_ns();
    assert!(echoes(&conn));
    let mut last_rx = 0;
    assert!(
        wait_for(DEADLINE, || {
            last_rx = guard.conns().get(&key, 0).map_or(0, |c| c.last_rx_ns);
            last_rx >= before
        }),
        "last_rx_ns {last_rx} of the tracked connection, want >= {before}"
    );
    assert!(
        last_rx <= vip_table::monotonic_ns(),
        "last_rx_ns is CLOCK_MONOTONIC"
    );
    let held = guard.counters(vip);
    // SYN, ACK, 2 × (data, ACK of the echo) at least: every frame >= 54 bytes.
    assert!(held.packets >= 4, "{held:?}");
    assert!(held.bytes >= held.packets * 54, "{held:?}");
    assert_eq!((held.rst_sent, held.dropped, held.neigh_dropped), (0, 0, 0));

    // Released (the agent marks it first, then unbinds it); the client's cache still
    // points at this host.
    guard.release(vip);
    host.del_addr(cidr).unwrap();
    stale_neighbour(client, vip, host.mac());

    // A new connection is refused at once (RST|ACK to the SYN)...
    let started = Instant::now();
    let refused = connect(client, to, DEADLINE).expect_err("connect to the released VIP");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    assert!(
        started.elapsed() < FAST,
        "refused after {:?}",
        started.elapsed()
    );
    // ...and the open one is reset by its next segment (RST with seq = its ack).
    assert_reset_on_next_segment(&conn);
    let guarded = guard.wait_counters(vip, "two RSTs", |c| c.rst_sent >= 2);
    assert_eq!(guarded.dropped, 0, "{guarded:?}");

    // Once the guard expires, nothing answers: the same connect times out. This is what
    // a client sees without the guard, and shows the refusal above came from it.
    guard.expire(vip);
    let started = Instant::now();
    let silent = connect(client, to, SILENCE).expect_err("connect after the guard expired");
    assert_eq!(silent.kind(), ErrorKind::TimedOut, "{silent}");
    assert!(started.elapsed() >= SILENCE);
    let after = guard.counters(vip);
    assert_eq!(after.rst_sent, guarded.rst_sent, "no RST after expiry");
    assert!(
        after.packets > guarded.packets,
        "the SYNs were seen: {after:?}"
    );
}

#[test]
fn ipv4_stale_client_is_refused_until_the_guard_expires() {
    if !vip_tests::privileged() {
        return;
    }
    stale_client_is_refused(false);
}

#[test]
fn ipv6_stale_client_is_refused_until_the_guard_expires() {
    if !vip_tests::privileged() {
        return;
    }
    stale_client_is_refused(true);
}

/// A VIP whose lease in the kernel runs out, with nothing written to the map (its agent
/// frozen): from the lease's end the guard answers for it as released, though it is
/// still bound and marked held. A new connect is refused, an open connection reset, an
/// ARP request left unanswered; a renewal lets the same client in again.
#[test]
fn a_vip_held_past_its_lease_is_fenced_by_the_kernel() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(1).build().unwrap();
    let (host, client) = (lab.host(0), lab.client(0));
    let vip = IpAddr::from(VIP4);
    let to = SocketAddr::new(vip, PORT);
    host.add_addr("198.51.100.50/24").unwrap();
    let _echo = echo_server(host, (Ipv6Addr::UNSPECIFIED, PORT).into());
    let mut guard = Guarded::attach(host, MODE);
    let raw = RawLink::open(client);

    // A lease that ends long after the test: held as usual.
    guard.hold_for(vip, GUARD_FOR);
    let conn = connect(client, to, DEADLINE).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    assert!(echoes(&conn), "connection under a valid lease echoes");

    // The last renewal: the lease ends shortly, and nothing writes the map again.
    guard.hold_for(vip, Duration::from_millis(200));
    let mut last = None;
    let fenced = wait_for(DEADLINE, || {
        last = Some(connect(client, to, FAST));
        matches!(&last, Some(Err(e)) if e.kind() == ErrorKind::ConnectionRefused)
    });
    assert!(
        fenced,
        "a connect after the lease's end is refused, got {last:?}"
    );
    assert_reset_on_next_segment(&conn);
    raw.send(&arp_request(client, VIP4));
    let c = guard.wait_counters(vip, "ARP request dropped", |c| c.neigh_dropped >= 1);
    assert!(c.rst_sent >= 2, "{c:?}");
    assert!(
        host.addrs().unwrap().iter().any(|a| a.addr == vip),
        "the address is still bound: the kernel alone fenced it"
    );

    // Renewed (an agent that runs again and holds a lease): answered again.
    guard.hold(vip);
    let conn = connect(client, to, DEADLINE).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    assert!(echoes(&conn), "connection after the renewal echoes");
}

/// While the VIP is still bound but marked released, ARP requests and neighbour
/// solicitations for it get no answer; held or expired, they do.
#[test]
fn arp_and_neighbour_solicitations_for_a_released_vip_go_unanswered() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(1).build().unwrap();
    let (host, client) = (lab.host(0), lab.client(0));
    host.add_addr("198.51.100.50/24").unwrap();
    host.add_addr("2001:db8::50/64").unwrap();
    let (vip4, vip6) = (IpAddr::from(VIP4), IpAddr::from(VIP6));
    let mut guard = Guarded::attach(host, MODE);
    let capture = lab.capture().unwrap();
    let raw = RawLink::open(client);
    let answered = |ip: IpAddr| {
        move |seen: &[vip_tests::lab::Announcement]| {
            seen.iter().any(|a| {
                a.ip == ip
                    && a.port == "h1"
                    && matches!(
                        a.kind,
                        Kind::ArpReply
                            | Kind::NeighbourAdvert {
                                solicited: true,
                                ..
                            }
                    )
            })
        }
    };
    let ask = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => raw.send(&arp_request(client, v4)),
        IpAddr::V6(v6) => raw.send(&neighbour_solicitation(client, v6)),
    };

    // Held: answered.
    guard.hold(vip4);
    guard.hold(vip6);
    for vip in [vip4, vip6] {
        ask(vip);
        capture
            .wait_until(DEADLINE, answered(vip))
            .unwrap_or_else(|e| panic!("held {vip} is answered: {e:#}"));
    }

    // Released, still bound: dropped before the kernel sees them.
    guard.release(vip4);
    guard.release(vip6);
    capture.clear();
    for vip in [vip4, vip6] {
        ask(vip);
        guard.wait_counters(vip, "request dropped", |c| c.neigh_dropped == 1);
    }
    // Requests for the host's own addresses, sent after, are answered: had the kernel
    // seen the ones for the VIPs, their answers would be in by now.
    for own in [IpAddr::from(host.ipv4()), host.ipv6().into()] {
        ask(own);
        capture
            .wait_until(DEADLINE, answered(own))
            .unwrap_or_else(|e| panic!("{own} is answered: {e:#}"));
    }
    for vip in [vip4, vip6] {
        let seen = capture.announcements();
        assert!(
            !answered(vip)(&seen),
            "released {vip} was answered: {seen:#?}"
        );
        let c = guard.counters(vip);
        assert_eq!((c.neigh_dropped, c.rst_sent, c.dropped), (1, 0, 0), "{c:?}");
    }

    // Expired: answered again (the agent unbinds the address long before).
    guard.expire(vip4);
    guard.expire(vip6);
    for vip in [vip4, vip6] {
        ask(vip);
        capture
            .wait_until(DEADLINE, answered(vip))
            .unwrap_or_else(|e| panic!("expired {vip} is answered: {e:#}"));
        assert_eq!(guard.counters(vip).neigh_dropped, 1);
    }
}

/// Raw segments to a released VIP: a frame flooded to this host for another MAC is
/// passed untouched; frames to the host's MAC get the RST RFC 793 asks for, with valid
/// checksums, without payload or options; a RST and non-TCP packets are dropped.
fn answers_only_its_own_mac(v6: bool) {
    let lab = Lab::builder().hosts(1).clients(1).build().unwrap();
    let (host, client) = (lab.host(0), lab.client(0));
    let vip: IpAddr = if v6 { VIP6.into() } else { VIP4.into() };
    let client_ip: IpAddr = if v6 {
        client.ipv6().into()
    } else {
        client.ipv4().into()
    };
    let mut guard = Guarded::attach(host, MODE);
    guard.release(vip);
    let raw = RawLink::open(client);
    let rst_for = |sport: u16| move |f: &[u8]| parse_rst(f, vip).filter(|r| r.dst.port() == sport);

    // Flooded: for another MAC. Seen (counted), not answered.
    raw.send(&tcp_frame(STRANGER, client, vip, &Seg::syn(40001, 1000)));
    let seen = guard.wait_counters(vip, "flooded SYN seen", |c| c.packets == 1);
    assert_eq!((seen.rst_sent, seen.dropped), (0, 0), "{seen:?}");

    // To the host's MAC: a SYN (with options) gets RST|ACK, seq 0, ack = its seq + 1.
    raw.send(&tcp_frame(host.mac(), client, vip, &Seg::syn(40002, 1000)));
    let rst = raw
        .recv(DEADLINE, |f| parse_rst(f, vip))
        .expect("a RST for the SYN to the host's MAC");
    assert_eq!(
        rst.dst,
        SocketAddr::new(client_ip, 40002),
        "the first RST answers the second SYN: {rst:?}"
    );
    assert_eq!(rst.src, SocketAddr::new(vip, PORT), "{rst:?}");
    assert_eq!(rst.src_mac, host.mac(), "{rst:?}");
    assert_eq!(
        (rst.flags, rst.seq, rst.ack),
        (TCP_RST | TCP_ACK, 0, 1001),
        "{rst:?}"
    );
    assert!(rst.checksums_ok, "{rst:?}");
    assert_eq!(rst.ttl, 64, "{rst:?}");
    assert_eq!((rst.tcp_header_len, rst.tcp_len), (20, 20), "{rst:?}");
    let (ip_len, frame_len) = if v6 { (20, 74) } else { (40, 54) };
    assert_eq!((rst.ip_len, rst.frame_len), (ip_len, frame_len), "{rst:?}");

    // Data with ACK (and, on IPv4, IP options): RST, seq = its ack, no ACK.
    let data = Seg {
        sport: 40003,
        dport: PORT,
        seq: 5000,
        ack: 0xfffffff0,
        flags: TCP_ACK | TCP_PSH,
        options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], // NOP NOP timestamps
        payload: b"SELECT 1".to_vec(),
    };
    let frame = match vip {
        IpAddr::V4(v4) => {
            let tcp = data.tcp_bytes(client_ip, vip);
            // Router alert (RFC 2113): 4 bytes, IHL 6.
            ipv4_frame(
                host.mac(),
                client.mac(),
                client.ipv4(),
                v4,
                6,
                &[0x94, 4, 0, 0],
                &tcp,
            )
        }
        IpAddr::V6(_) => tcp_frame(host.mac(), client, vip, &data),
    };
    raw.send(&frame);
    let rst = raw
        .recv(DEADLINE, rst_for(40003))
        .expect("a RST for the data segment");
    assert_eq!(
        (rst.flags, rst.seq, rst.ack),
        (TCP_RST, 0xfffffff0, 0),
        "{rst:?}"
    );
    assert!(rst.checksums_ok, "{rst:?}");
    assert_eq!((rst.ip_len, rst.frame_len), (ip_len, frame_len), "{rst:?}");

    // FIN without ACK and with 3 bytes: ack = seq + 3 + 1, the sequence number wrapping.
    let fin = Seg {
        sport: 40004,
        dport: PORT,
        seq: u32::MAX - 1,
        ack: 0,
        flags: TCP_FIN,
        options: Vec::new(),
        payload: b"bye".to_vec(),
    };
    raw.send(&tcp_frame(host.mac(), client, vip, &fin));
    let rst = raw
        .recv(DEADLINE, rst_for(40004))
        .expect("a RST for the FIN");
    assert_eq!(
        (rst.flags, rst.seq, rst.ack),
        (TCP_RST | TCP_ACK, 0, 2),
        "{rst:?}"
    );
    assert!(rst.checksums_ok, "{rst:?}");
    let c = guard.counters(vip);
    assert_eq!((c.packets, c.rst_sent, c.dropped), (4, 3, 0), "{c:?}");

    // A RST is never answered; UDP cannot be: both dropped. A UDP frame for another MAC
    // is passed.
    let mut reset = Seg::syn(40005, 7);
    reset.flags = TCP_RST;
    raw.send(&tcp_frame(host.mac(), client, vip, &reset));
    let udp = [0x9c, 0x41, 0x0c, 0xea, 0, 9, 0, 0, b'x'];
    let udp_frame = |mac| match vip {
        IpAddr::V4(v4) => ipv4_frame(mac, client.mac(), client.ipv4(), v4, 17, &[], &udp),
        IpAddr::V6(v6) => ipv6_frame(mac, client.mac(), client.ipv6(), v6, 17, 64, &udp),
    };
    raw.send(&udp_frame(host.mac()));
    raw.send(&udp_frame(STRANGER));
    let c = guard.wait_counters(vip, "RST, UDP and flooded UDP seen", |c| c.packets == 7);
    assert_eq!((c.rst_sent, c.dropped), (3, 2), "{c:?}");
    // A last SYN is answered; an answer to the RST would have come before it.
    raw.send(&tcp_frame(host.mac(), client, vip, &Seg::syn(40006, 9)));
    let next = raw
        .recv(DEADLINE, |f| {
            parse_rst(f, vip).filter(|r| [40005, 40006].contains(&r.dst.port()))
        })
        .expect("a RST for the last SYN");
    assert_eq!(
        next.dst.port(),
        40006,
        "the RST segment was answered: {next:?}"
    );
}

#[test]
fn ipv4_only_frames_to_this_nic_get_a_correct_rst() {
    if !vip_tests::privileged() {
        return;
    }
    answers_only_its_own_mac(false);
}

#[test]
fn ipv6_only_frames_to_this_nic_get_a_correct_rst() {
    if !vip_tests::privileged() {
        return;
    }
    answers_only_its_own_mac(true);
}

/// Native (driver) XDP on a veth: XDP_TX hands the frame to the PEER veth's XDP ring,
/// whose NAPI is only kicked when the peer has an XDP program of its own. Without one
/// the guard builds and counts the RST and veth drops it (ethtool -S: xdp_tx_errors);
/// with any program on the peer (here the pass-through `count_dst`) the RST gets
/// through. Generic mode, which the other tests use, has no such condition.
///
/// (GRO on the peer, which also gives a veth NAPI, does not help on 6.18: the frames
/// are queued, neither delivered nor counted as dropped.)
#[test]
fn native_mode_on_veth_needs_an_xdp_program_on_the_peer() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(1).build().unwrap();
    let (host, client) = (lab.host(0), lab.client(0));
    let vip = IpAddr::from(VIP4);
    let to = SocketAddr::new(vip, PORT);
    assert_eq!(
        host.run_in(|| guard::auto_mode("eth0")).unwrap().unwrap(),
        XdpMode::Skb,
        "auto picks generic on a veth"
    );
    let mut guard = Guarded::attach(host, XdpMode::Driver);
    guard.release(vip);
    stale_neighbour(client, vip, host.mac());

    // The peer (the host's port on the bridge) has no XDP program: RSTs are lost.
    let silent = connect(client, to, SILENCE).expect_err("connect without XDP on the peer");
    assert_eq!(silent.kind(), ErrorKind::TimedOut, "{silent}");
    let c = guard.counters(vip);
    assert!(c.rst_sent >= 1, "the RSTs were built and counted: {c:?}");

    // A pass-through XDP program on the peer: the RSTs get through.
    let peer = datapath::load().expect("loading the eBPF object");
    let _peer = vip_tests::netns::run_in(lab.bridge_ns(), move || -> anyhow::Result<Ebpf> {
        let mut peer = peer;
        let program: &mut aya::programs::Xdp = peer
            .program_mut("count_dst")
            .expect("count_dst in the object")
            .try_into()?;
        program.load()?;
        program.attach("h1", XdpMode::Driver)?; // host 1's port: named like the machine
        Ok(peer)
    })
    .expect("entering the bridge namespace")
    .expect("attaching count_dst to the peer");
    let started = Instant::now();
    let refused = connect(client, to, DEADLINE).expect_err("connect with XDP on the peer");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    assert!(
        started.elapsed() < FAST,
        "refused after {:?}",
        started.elapsed()
    );
}
