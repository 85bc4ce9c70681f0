//! Watching which hosts hold an address, as the kernel reports it, to the millisecond.
//!
//! Polling `ip addr` misses short overlaps (two hosts holding the write VIP for a few
//! ms) and costs a process per sample. Instead each host gets a netlink socket, opened
//! inside its namespace, subscribed to the kernel's address notifications
//! (RTM_NEWADDR / RTM_DELADDR for IPv4 and IPv6), and one thread reads them all with
//! poll(2), noting when it read each, so a run can be replayed as a timeline of who held
//! what, and overlaps measured.
//!
//! Notifications carry no time of their own, so the order of two changes on different
//! hosts is known only when they were read in different wake-ups of the thread: one
//! thread (not one per host) keeps a late-scheduled reader from reordering them. Two
//! changes read in the same wake-up (both queued while the thread waited for a CPU)
//! have no known order, and an overlap between them is not counted as one.

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
/// How long a poll blocks before the thread checks whether to stop.
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// An address added to or removed from a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrChange {
    /// When the watch read it.
    pub at: Instant,
    /// The thread's wake-up that read it: changes of one wake-up have no known order.
    pub batch: u64,
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
        let mut sockets = Vec::new();
        let mut initial = Vec::new();
        let started = Instant::now();
        for host in hosts {
            sockets.push(
                netns::run_in(host.ns(), open_socket)
                    .with_context(|| format!("entering {}", host.ns()))?
                    .with_context(|| format!("subscribing to address changes in {}", host.ns()))?,
            );
            initial.push(host.addrs()?.iter().map(|a| a.addr).collect());
        }
        let thread = std::thread::Builder::new()
            .name("addr watch".into())
            .spawn({
                let (changes, stop) = (Arc::clone(&changes), Arc::clone(&stop));
                move || read_loop(&sockets, &changes, &stop)
            })
            .context("starting the address watch thread")?;
        Ok(AddrWatch {
            initial,
            started,
            changes,
            stop,
            threads: vec![thread],
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
    /// still open ends now), each edge with the wake-up that read it (None: the start,
    /// or now).
    pub fn held(&self, addr: IpAddr) -> Vec<Vec<Span>> {
        let now = Instant::now();
        let mut out = Vec::new();
        let changes = self.changes();
        for (host, initial) in self.initial.iter().enumerate() {
            let mut since = initial.contains(&addr).then_some((self.started, None));
            let mut spans = Vec::new();
            for c in changes.iter().filter(|c| c.host == host && c.addr == addr) {
                match (c.added, since) {
                    (true, None) => since = Some((c.at, Some(c.batch))),
                    (false, Some(from)) => {
                        spans.push(Span {
                            from,
                            to: (c.at, Some(c.batch)),
                        });
                        since = None;
                    }
                    _ => {}
                }
            }
            if let Some(from) = since {
                spans.push(Span {
                    from,
                    to: (now, None),
                });
            }
            out.push(spans);
        }
        out
    }

    /// How long, in total since `from`, two or more of the hosts `live` accepts held
    /// `addr` at once. `live(host, at)` says whether a host counted at that moment (a
    /// dead host's leftover address is no second owner). A stretch that begins and
    /// ends with changes read in the same wake-up is not counted: their order is unknown.
    pub fn overlap(
        &self,
        addr: IpAddr,
        from: Instant,
        live: impl Fn(usize, Instant) -> bool,
    ) -> Duration {
        // Sweep over every interval edge; between two edges the set of holders is fixed.
        let held = self.held(addr);
        let mut edges: Vec<(Instant, Option<u64>)> = held
            .iter()
            .flatten()
            .flat_map(|s| [s.from, s.to])
            .filter(|&(t, _)| t > from)
            .collect();
        edges.push((from, None));
        edges.sort();
        edges.dedup();
        let mut total = Duration::ZERO;
        for pair in edges.windows(2) {
            let ((a, batch_a), (b, batch_b)) = (pair[0], pair[1]);
            if batch_a.is_some() && batch_a == batch_b {
                continue;
            }
            let holders = held
                .iter()
                .enumerate()
                .filter(|(host, spans)| {
                    live(*host, a) && spans.iter().any(|s| s.from.0 <= a && b <= s.to.0)
                })
                .count();
            if holders >= 2 {
                total += b - a;
            }
        }
        total
    }
}

/// One stretch of holding an address: its two edges, when read and in which wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub from: (Instant, Option<u64>),
    pub to: (Instant, Option<u64>),
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
    Ok(socket)
}

fn read_loop(sockets: &[Socket], changes: &Mutex<Vec<AddrChange>>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 1 << 16];
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut batch = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: poll on our own, open descriptors, with the array's true length.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                READ_TIMEOUT.as_millis() as libc::c_int,
            )
        };
        if ready <= 0 {
            continue;
        }
        batch += 1;
        for (host, socket) in sockets.iter().enumerate() {
            // Everything queued on this host's socket, without blocking.
            while let Ok(n) = socket.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
                let at = Instant::now();
                let mut seen = Vec::new();
                parse(&buf[..n], |addr, added| {
                    seen.push(AddrChange {
                        at,
                        batch,
                        host,
                        addr,
                        added,
                    })
                });
                changes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(seen);
            }
        }
    }
}

/// Calls `f(address, added)` for each address notification in one datagram.
fn parse(buf: &[u8], mut f: impl FnMut(IpAddr, bool)) {
    let mut offset = 0;
    while offset < buf.len() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..]) else {
            break;
        };
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => {
                if let Some(a) = address(&m) {
                    f(a, true)
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                if let Some(a) = address(&m) {
                    f(a, false)
                }
            }
            _ => {}
        }
        if len == 0 {
            break;
        }
        offset += len;
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

    /// A change `ms` after `t`, read in wake-up `batch`.
    fn change(
        t: Instant,
        ms: u64,
        batch: u64,
        host: usize,
        addr: IpAddr,
        added: bool,
    ) -> AddrChange {
        AddrChange {
            at: t + Duration::from_millis(ms),
            batch,
            host,
            addr,
            added,
        }
    }

    #[test]
    fn overlap_counts_only_the_time_two_hosts_held_the_address() {
        let vip: IpAddr = "198.51.100.50".parse().unwrap();
        // All in the past: an interval still open ends now.
        let t = Instant::now() - Duration::from_secs(1);
        // h1 holds it from the start and lets go at 100; h2 binds at 80, h3 at 300.
        let w = watch(
            vec![vec![vip], vec![], vec![]],
            vec![
                change(t, 80, 1, 1, vip, true),
                change(t, 100, 2, 0, vip, false),
                change(t, 300, 3, 2, vip, true),
            ],
            t,
        );
        let overlap = w.overlap(vip, t, |_, _| true);
        // 80..100 (h1 and h2), and from 300 until now (h2 and h3).
        assert!(overlap >= Duration::from_millis(20 + 700), "{overlap:?}");
        let late = w.overlap(vip, t + Duration::from_millis(90), |_, _| true);
        assert!(late < overlap);
        // A host that does not count (dead) is no second owner.
        let without_h3 = w.overlap(vip, t, |h, _| h != 2);
        assert_eq!(without_h3, Duration::from_millis(20));
    }

    #[test]
    fn release_before_bind_is_no_overlap() {
        let vip: IpAddr = "2001:db8::50".parse().unwrap();
        let t = Instant::now() - Duration::from_secs(1);
        let w = watch(
            vec![vec![vip], vec![]],
            vec![
                change(t, 10, 1, 0, vip, false),
                change(t, 10, 2, 1, vip, true),
            ],
            t,
        );
        assert_eq!(w.overlap(vip, t, |_, _| true), Duration::ZERO);
        let held = w.held(vip);
        assert_eq!(held[0].len(), 1);
        assert_eq!(held[0][0].to.0, t + Duration::from_millis(10));
        assert_eq!(held[1].len(), 1);
    }

    #[test]
    fn changes_read_in_one_wake_up_have_no_order() {
        let vip: IpAddr = "198.51.100.50".parse().unwrap();
        let t = Instant::now() - Duration::from_secs(1);
        // h2's bind was read 0.3 ms before h1's release, in the same wake-up: which came
        // first is unknown, so it is not an overlap. In different wake-ups it is one.
        let at = |us| t + Duration::from_micros(us);
        let one = |b2, b1| {
            watch(
                vec![vec![vip], vec![]],
                vec![
                    AddrChange {
                        at: at(1000),
                        batch: b2,
                        host: 1,
                        addr: vip,
                        added: true,
                    },
                    AddrChange {
                        at: at(1300),
                        batch: b1,
                        host: 0,
                        addr: vip,
                        added: false,
                    },
                ],
                t,
            )
        };
        assert_eq!(one(7, 7).overlap(vip, t, |_, _| true), Duration::ZERO);
        assert_eq!(
            one(7, 8).overlap(vip, t, |_, _| true),
            Duration::from_micros(300)
        );
    }
}
