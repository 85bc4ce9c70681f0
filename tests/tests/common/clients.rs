//! Client connections through a VIP, made from the lab's client host, and what their
//! owners see when the VIP goes: a reset, or something else.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use vip_tests::cluster::{Cluster, MYSQL_PORT};

/// `n` connections from the client host to `addr`:3306, each past the server's greeting
/// (so the server side is established and accepted).
pub fn connect(c: &Cluster, addr: IpAddr, n: usize) -> Vec<TcpStream> {
    vip_tests::netns::run_in(c.client().ns(), move || {
        (0..n)
            .map(|_| {
                let to = SocketAddr::new(addr, MYSQL_PORT);
                let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut greeting = [0u8; 1024];
                assert!(s.read(&mut greeting).unwrap() > 0, "no greeting from {to}");
                s
            })
            .collect()
    })
    .unwrap()
}

/// What an idle client sees within `timeout` without sending anything: `Ok(())` for a
/// reset, else what happened instead.
pub fn reset_within(s: &mut TcpStream, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("still open after {timeout:?}"));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Err("closed with a FIN, not reset".into()),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("still open after {timeout:?}"));
            }
            Err(e) => return Err(format!("{e}")),
        }
    }
}

/// Every stream reset within `timeout`; the failures otherwise.
pub fn all_reset(streams: &mut [TcpStream], timeout: Duration) -> Vec<String> {
    streams
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| reset_within(s, timeout).err().map(|e| format!("#{i}: {e}")))
        .collect()
}

/// The lab's client missed every announcement: its neighbour entry for `vip` names
/// `mac` (the old owner's), pinned so nothing corrects it.
pub fn stale_neighbour(c: &Cluster, vip: IpAddr, mac: &str) {
    let vip = vip.to_string();
    c.client()
        .ip(&[
            "neigh",
            "replace",
            &vip,
            "lladdr",
            mac,
            "dev",
            vip_tests::lab::NIC,
            "nud",
            "permanent",
        ])
        .unwrap();
}

/// One new connection from the lab's client to `addr`:3306: how it ended (the error's
/// kind) and how long it took.
pub fn try_connect(c: &Cluster, addr: IpAddr) -> (Result<(), ErrorKind>, Duration) {
    let to = SocketAddr::new(addr, MYSQL_PORT);
    vip_tests::netns::run_in(c.client().ns(), move || {
        let t0 = Instant::now();
        let r = TcpStream::connect_timeout(&to, Duration::from_secs(5)).map(|_| ());
        (r.map_err(|e| e.kind()), t0.elapsed())
    })
    .unwrap()
}
