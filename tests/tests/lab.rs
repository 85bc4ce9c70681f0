//! End-to-end tests of the network-namespace lab: what a test using it would see.
//! They need root; without it they skip (see `vip_tests::privileged`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use vip_tests::lab::{Host, Kind, Lab, Mac, wait_for};

/// Long enough for any change in the lab to take effect; only spent on failure.
const SETTLE: Duration = Duration::from_secs(5);

/// Whether `from` gets an answer from `to` over TCP. Port 9 has no listener, so an
/// answer is a reset (connection refused): it proves both directions work.
fn reaches(from: &Host, to: impl Into<IpAddr>) -> bool {
    let to = SocketAddr::new(to.into(), 9);
    from.run_in(move || TcpStream::connect_timeout(&to, Duration::from_millis(300)))
        .expect("entering the namespace")
        .map_or_else(
            |e| e.kind() == std::io::ErrorKind::ConnectionRefused,
            |_| true,
        )
}

/// Reachable within SETTLE (the first packets may wait for ARP / NDP).
fn reaches_soon(from: &Host, to: impl Into<IpAddr> + Copy) -> bool {
    wait_for(SETTLE, || reaches(from, to))
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn namespaces_of(lab_id: &str) -> Vec<String> {
    let prefix = format!("{lab_id}-");
    namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn pid_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[test]
fn hosts_and_clients_reach_each_other_over_ipv4_and_ipv6() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::new(2, 1).unwrap();
    let (h1, h2, c1) = (lab.host(0), lab.host(1), lab.client(0));
    assert_eq!(h1.ipv4(), Ipv4Addr::new(198, 51, 100, 11));
    assert_eq!(h2.ipv6(), "2001:db8::12".parse::<Ipv6Addr>().unwrap());
    assert_eq!(c1.ipv4(), Ipv4Addr::new(198, 51, 100, 101));
    assert_eq!(c1.mac(), "02:00:00:00:01:01".parse::<Mac>().unwrap());

    assert!(reaches_soon(h1, h2.ipv4()));
    assert!(reaches_soon(h1, h2.ipv6()));
    assert!(reaches_soon(h2, h1.ipv6()));
    assert!(reaches_soon(c1, h1.ipv4()));
    assert!(reaches_soon(c1, h2.ipv6()));

    // A TCP exchange through sockets made inside the namespaces.
    let listener = h2
        .run_in(|| std::net::TcpListener::bind("[::]:7000"))
        .unwrap()
        .unwrap();
    let to = SocketAddr::new(h2.ipv6().into(), 7000);
    let stream = c1
        .run_in(move || TcpStream::connect_timeout(&to, SETTLE))
        .unwrap()
        .unwrap();
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), IpAddr::from(c1.ipv6()));
    drop(stream);

    // The bridge namespace sends nothing of its own: no IPv6 addresses at all.
    let bridge_addrs = Command::new("ip")
        .args(["-n", lab.bridge_ns(), "addr", "show"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&bridge_addrs.stdout).contains("inet6"));
}

#[test]
fn a_partition_cuts_traffic_between_groups_and_healing_restores_it() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::new(3, 1).unwrap();
    let (h1, h2, h3, c1) = (lab.host(0), lab.host(1), lab.host(2), lab.client(0));
    assert!(reaches_soon(h1, h3.ipv4()));
    assert!(reaches_soon(c1, h1.ipv4()));

    lab.partition(&[&[h1, h2], &[h3]]).unwrap();
    assert!(reaches_soon(h1, h2.ipv4()), "within a group");
    assert!(reaches_soon(h2, h1.ipv6()), "within a group");
    assert!(!reaches(h1, h3.ipv4()), "across groups");
    assert!(!reaches(h3, h2.ipv6()), "across groups");
    // c1 is in no group, so it stays on the main bridge, alone.
    assert!(!reaches(c1, h1.ipv4()), "from the unnamed rest");

    // A new partition replaces the old one.
    lab.partition(&[&[h1, c1]]).unwrap();
    assert!(reaches_soon(c1, h1.ipv4()));
    assert!(
        reaches_soon(h2, h3.ipv4()),
        "both unnamed, both on the main bridge"
    );
    assert!(!reaches(h1, h2.ipv4()));

    lab.heal().unwrap();
    for (from, to) in [(h1, h3), (h3, h2), (c1, h2), (h2, h1)] {
        assert!(
            reaches_soon(from, to.ipv4()),
            "{} → {}",
            from.name(),
            to.name()
        );
        assert!(
            reaches_soon(from, to.ipv6()),
            "{} → {}",
            from.name(),
            to.name()
        );
    }

    assert!(
        lab.partition(&[&[h1], &[h1, h2]]).is_err(),
        "a host in two groups"
    );
}

#[test]
fn a_cut_host_is_unreachable_until_restored() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::new(2, 1).unwrap();
    let (h1, h2, c1) = (lab.host(0), lab.host(1), lab.client(0));
    assert!(reaches_soon(c1, h1.ipv4()));

    h1.cut().unwrap();
    assert!(!reaches(c1, h1.ipv4()));
    assert!(!reaches(h2, h1.ipv6()));
    assert!(reaches_soon(c1, h2.ipv4()), "the others still talk");
    h1.restore().unwrap();
    assert!(reaches_soon(c1, h1.ipv4()));
    assert!(reaches_soon(h2, h1.ipv6()));

    // The host's own NIC going down does the same; up again, its addresses are back.
    h1.nic_down().unwrap();
    assert!(!reaches(c1, h1.ipv4()));
    h1.nic_up().unwrap();
    assert!(reaches_soon(c1, h1.ipv4()));
    assert!(reaches_soon(c1, h1.ipv6()));
}

#[test]
fn processes_run_inside_a_host_and_stop() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::new(1, 0).unwrap();
    let h1 = lab.host(0);

    // A process sees the host's network: its eth0 and addresses.
    let out = h1
        .output(Command::new("ip").args(["-br", "addr", "show", "dev", "eth0"]))
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("198.51.100.11/24"), "{text}");
    assert!(h1.output(&mut Command::new("false")).is_err());

    let sleeper = h1.spawn(Command::new("sleep").arg("60")).unwrap();
    assert!(sleeper.try_wait().unwrap().is_none());
    let status = sleeper.stop(Duration::from_secs(5)).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));

    // Ignoring SIGTERM earns a SIGKILL after the grace period.
    let stubborn = h1
        .spawn(Command::new("sh").args(["-c", "trap '' TERM; exec sleep 60"]))
        .unwrap();
    // Once the shell has exec'd sleep, SIGTERM is ignored.
    let comm = format!("/proc/{}/comm", stubborn.pid());
    assert!(wait_for(SETTLE, || std::fs::read_to_string(&comm)
        .is_ok_and(|c| c == "sleep\n")));
    let status = stubborn.stop(Duration::from_millis(200)).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    let killed = h1.spawn(Command::new("sleep").arg("60")).unwrap();
    assert_eq!(killed.kill().unwrap().signal(), Some(libc::SIGKILL));

    // Whatever still runs when the lab goes away is killed with it.
    let left = h1.spawn(Command::new("sleep").arg("60")).unwrap();
    let pid = left.pid();
    drop(lab);
    assert!(!pid_exists(pid), "pid {pid} outlived the lab");
    assert!(left.try_wait().unwrap().is_some());
}

/// Frames a host would send to announce an address, built by hand.
mod frames {
    use super::*;

    pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(Mac::BROADCAST.0);
        f.extend(mac.0);
        f.extend(0x0806u16.to_be_bytes());
        f.extend([0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
        f.extend(mac.0);
        f.extend(ip.octets());
        f.extend([0; 6]);
        f.extend(ip.octets());
        f.resize(60, 0);
        f
    }

    /// An unsolicited NA to all-nodes with the override flag and the target
    /// link-layer address option.
    pub fn unsolicited_na(mac: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let dst: Ipv6Addr = "ff02::1".parse().unwrap();
        let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
        icmp.extend(target.octets());
        icmp.extend([2, 1]);
        icmp.extend(mac.0);
        let sum = checksum(src, dst, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());

        let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
        f.extend(mac.0);
        f.extend(0x86ddu16.to_be_bytes());
        f.extend([0x60, 0, 0, 0]);
        f.extend((icmp.len() as u16).to_be_bytes());
        f.extend([58, 255]); // ICMPv6, hop limit 255 as NDP requires
        f.extend(src.octets());
        f.extend(dst.octets());
        f.extend(icmp);
        f
    }

    /// The ICMPv6 checksum over the pseudo-header and the message.
    fn checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
        let mut data = Vec::new();
        data.extend(src.octets());
        data.extend(dst.octets());
        data.extend((icmp.len() as u32).to_be_bytes());
        data.extend([0, 0, 0, 58]);
        data.extend(icmp);
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// Sends raw frames out of `host`'s eth0.
    pub fn send(host: &Host, frames: Vec<Vec<u8>>) {
        host.run_in(move || {
            // SAFETY: plain libc calls with live buffers and their true lengths.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
                let mut to: libc::sockaddr_ll = std::mem::zeroed();
                to.sll_family = libc::AF_PACKET as u16;
                to.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
                to.sll_halen = 6;
                for frame in frames {
                    to.sll_addr[..6].copy_from_slice(&frame[..6]);
                    let sent = libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const to).cast(),
                        size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    );
                    assert_eq!(
                        sent,
                        frame.len() as isize,
                        "{}",
                        std::io::Error::last_os_error()
                    );
                }
                libc::close(fd);
            }
        })
        .unwrap();
    }
}

#[test]
fn announcements_are_captured_once_with_the_senders_mac_and_port() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::new(3, 1).unwrap();
    let h2 = lab.host(1);
    let capture = lab.capture().unwrap();
    let vip4 = Ipv4Addr::new(198, 51, 100, 50);
    let vip6: Ipv6Addr = "2001:db8::50".parse().unwrap();

    frames::send(
        h2,
        vec![
            frames::gratuitous_arp(h2.mac(), vip4),
            frames::unsolicited_na(h2.mac(), h2.ipv6(), vip6),
        ],
    );

    let seen = capture.wait_until(SETTLE, |seen| seen.len() >= 2).unwrap();
    // Give a duplicate (e.g. a copy leaving by another port) time to show up.
    assert!(!wait_for(Duration::from_millis(200), || capture
        .announcements()
        .len()
        > 2));
    let summary: Vec<_> = seen
        .iter()
        .map(|a| (a.kind, a.ip, a.lladdr, a.src_mac, a.port.as_str()))
        .collect();
    let na = Kind::NeighbourAdvert {
        override_flag: true,
        solicited: false,
    };
    assert_eq!(
        summary,
        [
            (
                Kind::GratuitousArp,
                vip4.into(),
                Some(h2.mac()),
                h2.mac(),
                "h2"
            ),
            (na, vip6.into(), Some(h2.mac()), h2.mac(), "h2"),
        ]
    );
    assert_eq!(capture.count_for(vip4.into()), 1);
    assert_eq!(capture.count_for(vip6.into()), 1);
    assert_eq!(capture.count_for(h2.ipv4().into()), 0);
    assert!(seen[0].at <= seen[1].at);

    // Ordinary ARP from a client shows as a request at its port and a reply at the
    // host's.
    capture.clear();
    let (c1, h1) = (lab.client(0), lab.host(0));
    assert!(reaches_soon(c1, h1.ipv4()));
    let seen = capture
        .wait_until(SETTLE, |seen| {
            seen.iter()
                .any(|a| a.kind == Kind::ArpReply && a.port == "h1")
        })
        .unwrap();
    let request = seen.iter().find(|a| a.kind == Kind::ArpRequest).unwrap();
    assert_eq!(
        (request.ip, request.src_mac, request.port.as_str()),
        (c1.ipv4().into(), c1.mac(), "c1")
    );
    let reply = seen.iter().find(|a| a.kind == Kind::ArpReply).unwrap();
    assert_eq!((reply.ip, reply.lladdr), (h1.ipv4().into(), Some(h1.mac())));
}

#[test]
fn a_panicking_test_leaves_no_namespaces() {
    if !vip_tests::privileged() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let lab = Lab::new(2, 1).unwrap();
        let sleeper = lab.host(0).spawn(Command::new("sleep").arg("60")).unwrap();
        tx.send((lab.id().to_owned(), lab.namespaces(), sleeper.pid()))
            .unwrap();
        panic!("deliberate panic with a lab in scope");
    })
    .join();
    assert!(outcome.is_err());
    let (id, created, pid) = rx.recv().unwrap();
    assert_eq!(created.len(), 4);
    assert_eq!(namespaces_of(&id), Vec::<String>::new());
    assert!(!pid_exists(pid), "the lab's process outlived the panic");
}

#[test]
fn namespaces_of_dead_runs_are_swept_and_live_ones_kept() {
    if !vip_tests::privileged() {
        return;
    }
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert!(!pid_exists(dead));
    let stale = format!("vipl-{dead}-0-h1");
    let live = format!("vipl-{}-999999-h1", std::process::id());
    for ns in [&stale, &live] {
        assert!(
            Command::new("ip")
                .args(["netns", "add", ns])
                .status()
                .unwrap()
                .success()
        );
    }

    let lab = Lab::new(1, 0).unwrap();
    let now = namespaces();
    let (stale_gone, live_kept) = (!now.contains(&stale), now.contains(&live));
    let ours = lab.namespaces().iter().all(|ns| now.contains(ns));
    Command::new("ip")
        .args(["netns", "delete", &live])
        .status()
        .unwrap();
    Command::new("ip")
        .args(["netns", "delete", &stale])
        .output()
        .unwrap();
    assert!(stale_gone, "{stale} should have been swept");
    assert!(live_kept, "{live} belongs to a live process");
    assert!(ours);
}

#[test]
fn addresses_labels_and_neighbours_read_back() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::new(1, 1).unwrap();
    let (h1, c1) = (lab.host(0), lab.client(0));
    h1.add_addr_labelled("198.51.100.50/24", "eth0:1").unwrap();
    h1.add_addr("2001:db8::50/64").unwrap();

    let addrs = h1.addrs().unwrap();
    let find = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        addrs
            .iter()
            .find(|a| a.addr == ip)
            .unwrap_or_else(|| panic!("{ip} in {addrs:#?}"))
    };
    let own = find("198.51.100.11");
    assert_eq!((own.prefix, own.label.as_deref()), (24, Some("eth0")));
    assert!(!own.has_flag("secondary"));
    let extra = find("198.51.100.50");
    assert_eq!((extra.prefix, extra.label.as_deref()), (24, Some("eth0:1")));
    assert!(extra.has_flag("secondary"));
    let extra6 = find("2001:db8::50");
    assert_eq!((extra6.prefix, extra6.label.as_deref()), (64, None));
    assert!(extra6.has_flag("nodad") && !extra6.has_flag("tentative"));
    assert_eq!(find("2001:db8::11").scope, "global");

    h1.del_addr("198.51.100.50/24").unwrap();
    assert!(
        !h1.addrs()
            .unwrap()
            .iter()
            .any(|a| a.label.as_deref() == Some("eth0:1"))
    );

    // After the client talked to the host, its neighbour cache knows the host's MAC.
    assert!(reaches_soon(c1, h1.ipv4()));
    assert!(reaches_soon(c1, h1.ipv6()));
    let neighbours = c1.neighbours().unwrap();
    for ip in [IpAddr::from(h1.ipv4()), h1.ipv6().into()] {
        let entry = neighbours
            .iter()
            .find(|n| n.ip == ip)
            .unwrap_or_else(|| panic!("{ip} in {neighbours:#?}"));
        assert_eq!(entry.lladdr, Some(h1.mac()));
        assert!(
            !entry
                .state
                .iter()
                .any(|s| s == "FAILED" || s == "INCOMPLETE"),
            "{entry:?}"
        );
    }
}
