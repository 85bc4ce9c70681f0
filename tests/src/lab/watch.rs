//! Watching which hosts hold an address, as the kernel reports it, to the millisecond.
//!
//! Polling `ip addr` misses short overlaps (two hosts holding the write VIP for a few
//! ms) and costs a process per sample. Instead each host gets a netlink socket, opened
//! inside its namespace, subscribed to the kernel's address notifications
//! (RTM_NEWADDR / RTM_DELADDR for IPv4 and IPv6). A thread per host records every
//! change with the time it was read, so a run can be replayed as a timeline of who held
//! what, and overlaps measured exactly.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::Host;
use crate::netns;

/// RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR (linux/rtnetlink.h).
const GROUPS: u32 = 0x10 | 0x100;
/// How long a read blocks before the thread checks whether to stop.
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// An address added to or removed from a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrChange {
    pub at: Instant,
    /// Index of the host in the lab (0 = h1).
    pub host: usize,
    pub addr: IpAddr,
    pub added: bool,
}

/// Address changes on every host since the watch started; stops when dropped.
pub struct AddrWatch {
    /// Who held what when the watch started.
    initial: Vec<Vec<IpAddr>>,
    started: Instant,
    changes: Arc<Mutex<Vec<AddrChange>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl AddrWatch {
    /// Subscribes on every host, then reads what each holds now, so nothing that happens
    /// after this returns is missed.
    pub(crate) fn start(hosts: &[Host]) -> Result<AddrWatch> {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut initial = Vec::new();
        let started = Instant::now();
        for (i, host) in hosts.iter().enumerate() {
            let socket = netns::run_in(host.ns(), open_socket)
                .with_context(|| format!("entering {}", host.ns()))?
                .with_context(|| format!("subscribing to address changes in {}", host.ns()))?;
            let (changes, stop) = (Arc::clone(&changes), Arc::clone(&stop));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("addr watch {}", host.name()))
                    .spawn(move || read_loop(&socket, i, &changes, &stop))
                    .context("starting an address watch thread")?,
            );
            initial.push(host.addrs()?.iter().map(|a| a.addr).collect());
        }
        Ok(AddrWatch {
            initial,
            started,
            changes,
            stop,
            threads,
        })
    }

    /// Every change seen so far, oldest first.
    pub fn changes(&self) -> Vec<AddrChange> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// For each host, the intervals during which it held `addr`, up to now (an interval
    /// still open ends now).
    pub fn held(&self, addr: IpAddr) -> Vec<Vec<(Instant, Instant)>> {
        let now = Instant::now();
        let mut out = Vec::new();
        let changes = self.changes();
        for (host, initial) in self.initial.iter().enumerate() {
            let mut since = initial.contains(&addr).then_some(self.started);
            let mut spans = Vec::new();
            for c in changes.iter().filter(|c| c.host == host && c.addr == addr) {
                match (c.added, since) {
                    (true, None) => since = Some(c.at),
                    (false, Some(from)) => {
                        spans.push((from, c.at));
                        since = None;
                    }
                    _ => {}
                }
            }
            if let Some(from) = since {
                spans.push((from, now));
            }
            out.push(spans);
        }
        out
    }

    /// How long, in total since `from`, two or more of the hosts `live` accepts held
    /// `addr` at once. `live(host, at)` says whether a host counted at that moment (a
    /// dead host's leftover address is no second owner).
    pub fn overlap(
        &self,
        addr: IpAddr,
        from: Instant,
        live: impl Fn(usize, Instant) -> bool,
    ) -> Duration {
        // Sweep over every interval edge; between two edges the set of holders is fixed.
        let held = self.held(addr);
        let mut edges: Vec<Instant> = held
            .iter()
            .flatten()
            .flat_map(|&(a, b)| [a, b])
            .filter(|&t| t > from)
            .collect();
        edges.push(from);
        edges.sort();
        edges.dedup();
        let mut total = Duration::ZERO;
        for pair in edges.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let holders = held
                .iter()
                .enumerate()
                .filter(|(host, spans)| {
                    live(*host, a) && spans.iter().any(|&(s, e)| s <= a && b <= e)
                })
                .count();
            if holders >= 2 {
                total += b - a;
            }
        }
        total
    }
}

impl Drop for AddrWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn open_socket() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, GROUPS))?;
    socket.set_rx_buf_sz(1 << 20)?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: READ_TIMEOUT.as_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt on a socket we own, with a timeval of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

fn read_loop(socket: &Socket, host: usize, changes: &Mutex<Vec<AddrChange>>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            // The read timeout, or a signal: check `stop` and read again.
            Err(_) => continue,
        };
        let at = Instant::now();
        let mut offset = 0;
        while offset < n {
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
            else {
                break;
            };
            let len = msg.header.length as usize;
            let change = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => {
                    address(&m).map(|a| (a, true))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                    address(&m).map(|a| (a, false))
                }
                _ => None,
            };
            if let Some((addr, added)) = change {
                changes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(AddrChange {
                        at,
                        host,
                        addr,
                        added,
                    });
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// The address a notification is about: IFA_LOCAL for IPv4 (IFA_ADDRESS is the peer on
/// point-to-point links), IFA_ADDRESS for IPv6.
fn address(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(initial: Vec<Vec<IpAddr>>, changes: Vec<AddrChange>, started: Instant) -> AddrWatch {
        AddrWatch {
            initial,
            started,
            changes: Arc::new(Mutex::new(changes)),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    #[test]
    fn overlap_counts_only_the_time_two_hosts_held_the_address() {
        let vip: IpAddr = "198.51.100.50".parse().unwrap();
        // All in the past: an interval still open ends now.
        let t = Instant::now() - Duration::from_secs(1);
        let ms = |n| t + Duration::from_millis(n);
        let change = |at, host, added| AddrChange {
            at: ms(at),
            host,
            addr: vip,
            added,
        };
        // h1 holds it from the start and lets go at 100; h2 binds at 80, h3 at 300.
        let w = watch(
            vec![vec![vip], vec![], vec![]],
            vec![
                change(80, 1, true),
                change(100, 0, false),
                change(300, 2, true),
            ],
            t,
        );
        let overlap = w.overlap(vip, t, |_, _| true);
        // 80..100 (h1 and h2), and from 300 until now (h2 and h3).
        assert!(overlap >= Duration::from_millis(20 + 700), "{overlap:?}");
        let late = w.overlap(vip, ms(90), |_, _| true);
        assert!(late < overlap);
        // A host that does not count (dead) is no second owner.
        let without_h3 = w.overlap(vip, t, |h, _| h != 2);
        assert_eq!(without_h3, Duration::from_millis(20));
    }

    #[test]
    fn release_before_bind_is_no_overlap() {
        let vip: IpAddr = "2001:db8::50".parse().unwrap();
        // All in the past: an interval still open ends now.
        let t = Instant::now() - Duration::from_secs(1);
        let at = |n| t + Duration::from_millis(n);
        let w = watch(
            vec![vec![vip], vec![]],
            vec![
                AddrChange {
                    at: at(10),
                    host: 0,
                    addr: vip,
                    added: false,
                },
                AddrChange {
                    at: at(10),
                    host: 1,
                    addr: vip,
                    added: true,
                },
            ],
            t,
        );
        assert_eq!(w.overlap(vip, t, |_, _| true), Duration::ZERO);
        assert_eq!(w.held(vip)[0], vec![(t, at(10))]);
    }
}
