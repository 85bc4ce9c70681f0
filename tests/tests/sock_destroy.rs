//! The SOCK_DESTROY fallback (`vip_agent::datapath::sock_destroy`) in the lab: a host
//! destroys the connections whose local address is a VIP, its clients see a reset, other
//! connections live on, and only the caller's network namespace is touched.
//! They need root; without it they skip (see `vip_tests::privileged`).
//!
//! Connections to 198.51.100.x and 2001:db8::x are only ever made from lab namespaces.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vip_agent::datapath::sock_destroy::{Reset, ResetError, list_local, reset_local};
use vip_tests::lab::{Host, Lab};

/// Long enough for any change in the lab to take effect; only spent on failure.
const SETTLE: Duration = Duration::from_secs(5);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x77);
/// The IPv4-only listener's port and the dual-stack listener's.
const PORT4: u16 = 3307;
const PORT_DUAL: u16 = 3308;

/// An echo server in a host's namespace: it accepts and holds every connection, echoing
/// what it reads until the connection ends. Stops accepting when dropped.
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
    // The listener (and every socket it accepts) stays in the host's namespace.
    std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    std::thread::spawn(move || echo(conn));
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

fn echo(mut conn: TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// `n` connections from `client` to `to`, each checked with an echo.
fn connect_many(client: &Host, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let conns: Vec<TcpStream> = client
        .run_in(move || {
            (0..n)
                .map(|i| {
                    TcpStream::connect_timeout(&to, SETTLE)
                        .unwrap_or_else(|e| panic!("connection {i} to {to}: {e}"))
                })
                .collect()
        })
        .expect("entering the namespace");
    for (i, conn) in conns.iter().enumerate() {
        assert!(echoes(conn), "connection {i} to {to} echoes");
    }
    conns
}

/// Whether a round trip through the echo server still works.
fn echoes(mut conn: &TcpStream) -> bool {
    conn.set_read_timeout(Some(SETTLE)).unwrap();
    let mut back = [0u8; 4];
    conn.write_all(b"ping").is_ok() && conn.read_exact(&mut back).is_ok() && &back == b"ping"
}

/// What a client socket saw once its server side was destroyed: the read's error kind,
/// `None` for end of file. Panics if nothing came within SETTLE.
fn end_of(mut conn: &TcpStream) -> Option<ErrorKind> {
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + SETTLE;
    let mut buf = [0u8; 64];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => panic!("{n} unexpected byte(s) from a destroyed connection"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < deadline,
                    "no reset within {SETTLE:?} on {:?}",
                    conn.local_addr()
                );
            }
            Err(e) => return Some(e.kind()),
        }
    }
}

/// Runs `reset_local` inside `host`'s namespace.
fn reset_in(host: &Host, addr: IpAddr, port: Option<u16>) -> Reset {
    host.run_in(move || reset_local(addr, port))
        .expect("entering the namespace")
        .unwrap_or_else(|e| panic!("reset_local({addr}, {port:?}) in {}: {e}", host.name()))
}

fn count_in(host: &Host, addr: IpAddr, port: Option<u16>) -> usize {
    host.run_in(move || list_local(addr, port))
        .expect("entering the namespace")
        .unwrap_or_else(|e| panic!("list_local({addr}) in {}: {e}", host.name()))
        .len()
}

/// Every one of `conns` was reset by its peer.
fn assert_all_reset(conns: &[TcpStream]) {
    for (i, conn) in conns.iter().enumerate() {
        assert_eq!(
            end_of(conn),
            Some(ErrorKind::ConnectionReset),
            "connection {i} sees a reset"
        );
    }
}

fn assert_all_alive(conns: &[TcpStream]) {
    for (i, conn) in conns.iter().enumerate() {
        assert!(echoes(conn), "connection {i} still echoes");
    }
}

fn assert_clean(reset: &Reset, destroyed: usize) {
    assert_eq!(reset.destroyed, destroyed, "{reset:?}");
    assert_eq!(reset.gone, 0, "{reset:?}");
    assert!(reset.failed.is_empty(), "{reset:?}");
}

/// One host with an extra address, one client making 20 connections to it and 5 to the
/// host's own address: the reset destroys exactly the 20.
fn resets_only_the_vip(v6: bool) {
    let lab = Lab::builder().hosts(1).clients(2).build().unwrap();
    let (host, client) = (lab.host(0), lab.client(0));
    let (vip, cidr, own, port): (IpAddr, _, IpAddr, _) = if v6 {
        (
            VIP6.into(),
            "2001:db8::77/64",
            host.ipv6().into(),
            PORT_DUAL,
        )
    } else {
        (VIP4.into(), "198.51.100.77/24", host.ipv4().into(), PORT4)
    };
    host.add_addr(cidr).unwrap();
    let _echo4 = echo_server(host, (Ipv4Addr::UNSPECIFIED, PORT4).into());
    let _dual = echo_server(host, (Ipv6Addr::UNSPECIFIED, PORT_DUAL).into());

    let on_vip = connect_many(client, SocketAddr::new(vip, port), 20);
    let on_own = connect_many(client, SocketAddr::new(own, port), 5);
    assert_eq!(count_in(host, vip, None), 20);
    assert_eq!(count_in(host, vip, Some(port)), 20);
    assert_eq!(count_in(host, vip, Some(port + 100)), 0);
    assert_eq!(count_in(host, own, Some(port)), 5);

    let reset = reset_in(host, vip, None);
    assert_clean(&reset, 20);
    assert_all_reset(&on_vip);
    assert_all_alive(&on_own);
    assert_eq!(count_in(host, vip, None), 0);
    assert_eq!(count_in(host, own, None), 5);
    // Nothing left: a second reset finds nothing.
    assert_clean(&reset_in(host, vip, None), 0);
}

#[test]
fn resets_the_connections_to_an_ipv4_vip_and_no_others() {
    if !vip_tests::privileged() {
        return;
    }
    resets_only_the_vip(false);
}

#[test]
fn resets_the_connections_to_an_ipv6_vip_and_no_others() {
    if !vip_tests::privileged() {
        return;
    }
    resets_only_the_vip(true);
}

/// A dual-stack listener holds IPv4 clients on AF_INET6 sockets with a v4-mapped local
/// address (::ffff:198.51.100.77): the IPv4 reset finds them too, and a port narrows it.
#[test]
fn resets_v4_mapped_connections_and_honours_the_port() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(2).build().unwrap();
    let (host, client) = (lab.host(0), lab.client(0));
    host.add_addr("198.51.100.77/24").unwrap();
    let _echo4 = echo_server(host, (Ipv4Addr::UNSPECIFIED, PORT4).into());
    let _dual = echo_server(host, (Ipv6Addr::UNSPECIFIED, PORT_DUAL).into());

    let mapped = connect_many(client, (VIP4, PORT_DUAL).into(), 20);
    let plain = connect_many(client, (VIP4, PORT4).into(), 5);
    let listed = host
        .run_in(|| list_local(VIP4.into(), Some(PORT_DUAL)))
        .unwrap()
        .unwrap();
    assert_eq!(listed.len(), 20);
    let mapped_vip = SocketAddr::new(VIP4.to_ipv6_mapped().into(), PORT_DUAL);
    assert!(listed.iter().all(|c| c.local == mapped_vip), "{listed:?}");
    assert!(listed.iter().all(|c| c.state_name() == "ESTABLISHED"));

    assert_clean(&reset_in(host, VIP4.into(), Some(PORT_DUAL)), 20);
    assert_all_reset(&mapped);
    assert_all_alive(&plain);
    assert_clean(&reset_in(host, VIP4.into(), None), 5);
    assert_all_reset(&plain);
}

/// sock_diag is scoped to the caller's network namespace: two hosts own 198.51.100.77
/// on separate segments, and each one's reset touches only its own connections. In a
/// client namespace, where the VIP is only the remote address, it touches nothing.
#[test]
fn resets_only_in_the_callers_namespace() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(2).clients(2).build().unwrap();
    let (h1, h2, c1, c2) = (lab.host(0), lab.host(1), lab.client(0), lab.client(1));
    // Two segments, so both hosts can hold the same address without an ARP conflict.
    lab.partition(&[&[h1, c1], &[h2, c2]]).unwrap();
    for host in [h1, h2] {
        host.add_addr("198.51.100.77/24").unwrap();
    }
    let _e1 = echo_server(h1, (Ipv4Addr::UNSPECIFIED, PORT4).into());
    let _e2 = echo_server(h2, (Ipv4Addr::UNSPECIFIED, PORT4).into());
    let on_h1 = connect_many(c1, (VIP4, PORT4).into(), 20);
    let on_h2 = connect_many(c2, (VIP4, PORT4).into(), 7);
    assert_eq!(count_in(h1, VIP4.into(), None), 20);
    assert_eq!(count_in(h2, VIP4.into(), None), 7);

    // The clients' sockets have the VIP as their remote address only.
    assert_eq!(count_in(c2, VIP4.into(), None), 0);
    assert_clean(&reset_in(c2, VIP4.into(), None), 0);
    assert_all_alive(&on_h2);

    assert_clean(&reset_in(h2, VIP4.into(), None), 7);
    assert_all_reset(&on_h2);
    assert_all_alive(&on_h1);
    assert_eq!(count_in(h1, VIP4.into(), None), 20);

    assert_clean(&reset_in(h1, VIP4.into(), None), 20);
    assert_all_reset(&on_h1);
}

/// Without CAP_NET_ADMIN the kernel still dumps but refuses the destroy: the error says
/// what is missing, and the connection lives on.
#[test]
fn without_cap_net_admin_the_error_names_it() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(1).build().unwrap();
    let (host, client) = (lab.host(0), lab.client(0));
    host.add_addr("198.51.100.77/24").unwrap();
    let _echo = echo_server(host, (Ipv4Addr::UNSPECIFIED, PORT4).into());
    let conns = connect_many(client, (VIP4, PORT4).into(), 1);

    let refused = host
        .run_in(|| {
            drop_cap_net_admin();
            reset_local(VIP4.into(), None)
        })
        .expect("entering the namespace");
    match refused {
        Err(e @ ResetError::NotPermitted { destroyed: 0 }) => {
            assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        }
        other => panic!("expected NotPermitted, got {other:?}"),
    }
    assert_all_alive(&conns);
}

/// Drops CAP_NET_ADMIN from this thread's effective set (capset acts per thread).
fn drop_cap_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as capget(2) says.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()),
            0
        );
        data[(CAP_NET_ADMIN / 32) as usize].effective &= !(1 << (CAP_NET_ADMIN % 32));
        assert_eq!(
            libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()),
            0
        );
    }
}
