//! The main reset path: the `reset_tcp` iterator (`iter/tcp` + the kfunc
//! `bpf_sock_destroy`) loaded by vip-agent destroys, in one lab host, exactly the TCP
//! connections whose local address is the VIP; clients see a reset at once, the other
//! connections keep working, and another host with the same address is not touched.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vip_agent::datapath::iter_reset::IterReset;
use vip_tests::lab::{Host, Lab, wait_for};

const VIP4: &str = "198.51.100.78";
const VIP6: &str = "2001:db8::78";
/// Served by a 0.0.0.0 listener (AF_INET sockets).
const PORT4: u16 = 3308;
/// Served by a dual-stack [::] listener (AF_INET6, v4-mapped for IPv4 clients).
const PORT6: u16 = 3309;
const DEADLINE: Duration = Duration::from_secs(10);

/// An echo server in `host`'s namespace; returns the number of connections accepted.
fn echo_server(host: &Host, bind: &'static str) -> Arc<AtomicUsize> {
    let listener = host
        .run_in(move || TcpListener::bind(bind))
        .unwrap()
        .unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    accepted
}

/// `n` connections to `to`, made in `from`'s namespace.
fn connect(from: &Host, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    from.run_in(move || {
        (0..n)
            .map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("connecting to {to}: {e}"))
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Whether the connection still echoes.
fn echoes(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    if conn.write_all(b"ping").is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

/// Waits (polling, up to DEADLINE) until every connection reads a reset or EOF.
fn assert_all_reset(conns: &mut [TcpStream], what: &str) {
    let deadline = Instant::now() + DEADLINE;
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 16];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                other => panic!("{what} #{i}: unexpected read result {other:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "{what} #{i} was not reset within {DEADLINE:?}"
            );
        }
    }
}

fn assert_all_echo(conns: &mut [TcpStream], what: &str) {
    for (i, conn) in conns.iter_mut().enumerate() {
        assert!(echoes(conn), "{what} #{i} should still work");
    }
}

fn reset_in(host: &Host, reset: IterReset, ip: &str, port: Option<u16>) -> (IterReset, u64) {
    let ip: IpAddr = ip.parse().unwrap();
    host.run_in(move || {
        let mut reset = reset;
        let n = reset.reset_report(ip, port).map(|r| r.destroyed);
        (reset, n)
    })
    .map(|(r, n)| (r, n.unwrap()))
    .unwrap()
}

#[test]
fn iterator_destroys_exactly_the_vips_connections_in_its_own_namespace() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(2).clients(1).build().unwrap();
    let (host, other, client) = (lab.host(0), lab.host(1), lab.client(0));
    // The other host holds the same VIP (as after a split brain) on a segment of its own,
    // so the client's ARP and NDP only ever reach `host`.
    lab.partition(&[&[other]]).unwrap();
    for h in [host, other] {
        h.add_addr(&format!("{VIP4}/24")).unwrap();
        h.add_addr(&format!("{VIP6}/64")).unwrap();
    }
    let accepted4 = echo_server(host, "0.0.0.0:3308");
    let accepted6 = echo_server(host, "[::]:3309");
    let other_accepted = echo_server(other, "0.0.0.0:3308");

    // Phase 1, IPv4: 20 connections to the VIP, 5 to the host's own address.
    let mut to_vip = connect(client, sa(VIP4, PORT4), 20);
    let mut to_own = connect(client, SocketAddr::new(host.ipv4().into(), PORT4), 5);
    // The other host's own clients of the VIP (itself: both ends have the VIP locally).
    let mut on_other = connect(other, sa(VIP4, PORT4), 5);
    assert!(wait_for(DEADLINE, || accepted4.load(Ordering::SeqCst) == 25));
    assert!(wait_for(DEADLINE, || other_accepted.load(Ordering::SeqCst) == 5));

    let reset = host.run_in(IterReset::load).unwrap().unwrap();
    let (reset, n) = reset_in(host, reset, VIP4, None);
    assert_eq!(n, 20, "destroyed in {}", host.name());
    assert_all_reset(&mut to_vip, "client connection to the IPv4 VIP");
    assert_all_echo(&mut to_own, "connection to the host's own IPv4 address");
    assert_all_echo(&mut on_other, "connection on the other host");

    // Phase 2, IPv6 and dual-stack: 6 to the IPv6 VIP, 3 to the host's own IPv6 address,
    // 4 to the IPv4 VIP on the [::] listener (v4-mapped local address).
    let mut to_vip6 = connect(client, sa(VIP6, PORT6), 6);
    let mut to_own6 = connect(client, SocketAddr::new(host.ipv6().into(), PORT6), 3);
    let mut to_mapped = connect(client, sa(VIP4, PORT6), 4);
    assert!(wait_for(DEADLINE, || accepted6.load(Ordering::SeqCst) == 13));

    let (reset, n) = reset_in(host, reset, VIP6, None);
    assert_eq!(n, 6, "IPv6 VIP connections destroyed");
    assert_all_reset(&mut to_vip6, "client connection to the IPv6 VIP");
    assert_all_echo(&mut to_mapped, "v4-mapped connection (IPv6 reset)");

    // A port filter: nothing on PORT4 is left, the v4-mapped ones are on PORT6.
    let (reset, n) = reset_in(host, reset, VIP4, Some(PORT4));
    assert_eq!(n, 0, "nothing left on port {PORT4}");
    assert_all_echo(&mut to_mapped, "v4-mapped connection (other port)");
    let (_reset, n) = reset_in(host, reset, VIP4, Some(PORT6));
    assert_eq!(n, 4, "v4-mapped connections to the IPv4 VIP destroyed");
    assert_all_reset(&mut to_mapped, "v4-mapped client connection");

    assert_all_echo(
        &mut to_own,
        "connection to the host's own IPv4 address (end)",
    );
    assert_all_echo(&mut to_own6, "connection to the host's own IPv6 address");
    assert_all_echo(&mut on_other, "connection on the other host (end)");
    for c in to_own.iter().chain(&to_own6).chain(&on_other) {
        let _ = c.shutdown(Shutdown::Both);
    }
}
