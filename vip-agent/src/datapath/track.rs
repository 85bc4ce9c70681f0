//! The tracked connections (`CONNS`, written by the `track_state` tp_btf program and the
//! `track_seed` iterator), read back for `vip-agent status` and `vip-agent connections`.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};
use serde::Serialize;
use vip_ebpf_common::{ConnInfo, ConnKey};

use super::vip_table::{Role, addr_of};

/// One tracked connection, as an operator reads it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TrackedConn {
    /// The VIP and port the client connected to.
    pub vip: SocketAddr,
    pub client: SocketAddr,
    /// "write" or "read".
    pub role: &'static str,
    /// The kernel's TCP state.
    pub state: &'static str,
    /// Milliseconds since it was established (or first seen).
    pub age_ms: u64,
    /// Milliseconds since the guard last saw a packet from the client, if it did.
    pub idle_ms: Option<u64>,
}

/// The name of a kernel TCP state (include/net/tcp_states.h).
pub fn tcp_state(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// A map entry as an operator reads it, `now_ns` on CLOCK_MONOTONIC.
pub fn describe(key: &ConnKey, info: &ConnInfo, now_ns: u64) -> Option<TrackedConn> {
    let vip: IpAddr = addr_of(key.family, &key.local)?;
    let client: IpAddr = addr_of(key.family, &key.remote)?;
    let ms = |ns: u64| now_ns.saturating_sub(ns) / 1_000_000;
    Some(TrackedConn {
        vip: SocketAddr::new(vip, key.local_port),
        client: SocketAddr::new(client, key.remote_port),
        role: Role::name(info.role),
        state: tcp_state(info.state),
        age_ms: ms(info.established_ns),
        idle_ms: (info.last_rx_ns != 0).then(|| ms(info.last_rx_ns)),
    })
}

/// Every tracked connection, sorted by VIP then client.
pub fn list(map: &HashMap<MapData, ConnKey, ConnInfo>, now_ns: u64) -> Vec<TrackedConn> {
    let mut out: Vec<TrackedConn> = map
        .iter()
        .filter_map(|e| e.ok())
        .filter_map(|(k, v)| describe(&k, &v, now_ns))
        .collect();
    out.sort_by_key(|c| (c.vip, c.client));
    out
}

/// This process's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14): the tracker
/// keeps only the sockets of this namespace.
pub fn netns_cookie() -> Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // An unbound socket is enough (and needs no address: `lo` may be down).
    // SAFETY: socket() returns a new fd or -1; OwnedFd closes it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("could not open a socket to read the namespace cookie");
    }
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("getsockopt(SO_NETNS_COOKIE) failed (it needs Linux 5.14)");
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vip_ebpf_common::{AF_INET6, ROLE_WRITE};

    #[test]
    fn entries_read_as_addresses_ports_and_ages() {
        let vip: std::net::Ipv6Addr = "2001:db8::50".parse().unwrap();
        let client: std::net::Ipv6Addr = "2001:db8::99".parse().unwrap();
        let key = ConnKey {
            family: AF_INET6,
            local_port: 3306,
            remote_port: 40000,
            local: vip.octets(),
            remote: client.octets(),
            ..ConnKey::default()
        };
        let info = ConnInfo {
            established_ns: 1_000_000_000,
            last_rx_ns: 0,
            role: ROLE_WRITE,
            state: 1,
            ..ConnInfo::default()
        };
        let c = describe(&key, &info, 3_500_000_000).unwrap();
        assert_eq!(c.vip.to_string(), "[2001:db8::50]:3306");
        assert_eq!(c.client.to_string(), "[2001:db8::99]:40000");
        assert_eq!(
            (c.role, c.state, c.age_ms, c.idle_ms),
            ("write", "ESTABLISHED", 2500, None)
        );
        let seen = ConnInfo {
            last_rx_ns: 3_000_000_000,
            ..info
        };
        assert_eq!(
            describe(&key, &seen, 3_500_000_000).unwrap().idle_ms,
            Some(500)
        );
        let bad = ConnKey { family: 0, ..key };
        assert_eq!(describe(&bad, &info, 0), None);
    }
}
