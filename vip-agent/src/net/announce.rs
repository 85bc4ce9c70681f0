//! Announcing a VIP to the link after binding it, so that neighbours and switches move
//! it to this host at once instead of when their cache entries expire.
//!
//! IPv4 gets gratuitous ARPs, IPv6 unsolicited neighbour advertisements ([`frame`]),
//! written to a raw AF_PACKET socket on the configured interface. The interface's index
//! and MAC are looked up by name on every call: never a fixed index (the plugin sent on
//! ifindex 2 whatever the NIC), and a NIC that was recreated or changed its MAC is
//! announced with what it has now. The frames are paced with tokio timers and the socket
//! is non-blocking, so announcing never blocks the runtime.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::frame::{self, Mac};
use super::nic::{self, NoSuchNic};

/// What to announce, where, and how often: `count` frames, `interval` apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub nic: String,
    pub addr: IpAddr,
    pub count: u32,
    pub interval: Duration,
}

/// Announces `a.addr` on `a.nic`: gratuitous ARP (broadcast ARP request, sender IP =
/// target IP = the VIP, from the NIC's MAC) or unsolicited NA (to ff02::1 from the VIP,
/// Override set, target link-layer address option, hop limit 255). Returns how many
/// frames were sent, which is `a.count` unless it fails.
///
/// Dropping the future (e.g. aborting its task when the VIP is released) stops the
/// announcements between two frames.
pub async fn announce(a: &Announcement) -> Result<u32> {
    super::check_unicast(a.addr).with_context(|| format!("announcing {} on {}", a.addr, a.nic))?;
    let socket = PacketSocket::open(&a.nic)
        .with_context(|| format!("announcing {} on {}", a.addr, a.nic))?;
    let (frame, dst) = match a.addr {
        IpAddr::V4(ip) => (frame::gratuitous_arp(socket.mac, ip), frame::BROADCAST),
        IpAddr::V6(ip) => (frame::unsolicited_na(socket.mac, ip), frame::ALL_NODES_MAC),
    };
    let mut sent = 0;
    while sent < a.count {
        if sent > 0 {
            tokio::time::sleep(a.interval).await;
        }
        socket.send(&frame, dst).await.with_context(|| {
            format!(
                "announcing {} on {}: sending frame {} of {}",
                a.addr,
                a.nic,
                sent + 1,
                a.count
            )
        })?;
        sent += 1;
    }
    Ok(sent)
}

/// A send-only raw packet socket bound to nothing: protocol 0 means the kernel queues
/// no incoming frames on it. The destination interface goes with each frame.
struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
    mac: Mac,
}

impl PacketSocket {
    fn open(nic: &str) -> Result<PacketSocket> {
        nic::check_name(nic)?;
        // SAFETY: socket(2) with constant arguments; the result is checked and owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("opening an AF_PACKET socket");
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };

        let mut req = ifreq(nic);
        ioctl(&fd, libc::SIOCGIFINDEX, &mut req).map_err(|e| missing(nic, e))?;
        // SAFETY: SIOCGIFINDEX succeeded, so the union holds the index.
        let ifindex = unsafe { req.ifr_ifru.ifru_ifindex };

        let mut req = ifreq(nic);
        ioctl(&fd, libc::SIOCGIFHWADDR, &mut req).map_err(|e| missing(nic, e))?;
        // SAFETY: SIOCGIFHWADDR succeeded, so the union holds a sockaddr.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
        if hw.sa_family != libc::ARPHRD_ETHER {
            bail!(
                "{nic} is not an Ethernet interface (ARPHRD {}): nothing to announce on it",
                hw.sa_family
            );
        }
        let mut mac = [0; 6];
        for (m, b) in mac.iter_mut().zip(hw.sa_data) {
            *m = b as u8;
        }

        // SAFETY: the OwnedFd moves into the AsyncFd, so the descriptor stays open and
        // the same until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) }
            .map_err(io::Error::from)
            .context("registering the AF_PACKET socket with tokio")?;
        Ok(PacketSocket { fd, ifindex, mac })
    }

    async fn send(&self, frame: &[u8], dst: Mac) -> io::Result<()> {
        // The frame's own EtherType, which the kernel gives the skb (taps, tc filters).
        let ethertype = match frame.get(12..14) {
            Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
            _ => return Err(io::Error::other("frame shorter than an Ethernet header")),
        };
        // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ethertype.to_be();
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&dst);
        loop {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| sendto(fd.get_ref(), frame, &to)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn sendto(fd: &OwnedFd, frame: &[u8], to: &libc::sockaddr_ll) -> io::Result<()> {
    // SAFETY: frame and to are live for the call and their true lengths are passed.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (to as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    match usize::try_from(n) {
        Ok(n) if n == frame.len() => Ok(()),
        Ok(n) => Err(io::Error::other(format!(
            "sent {n} of {} bytes",
            frame.len()
        ))),
        Err(_) => Err(io::Error::last_os_error()),
    }
}

/// An ifreq naming `nic`, which [`nic::check_name`] has vetted (shorter than IFNAMSIZ,
/// so the NUL left by `zeroed` terminates it).
fn ifreq(nic: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(nic.bytes()) {
        *d = s as libc::c_char;
    }
    req
}

fn ioctl(fd: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: both requests read ifr_name and write into the ifreq, which is live and
    // writable for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// ENODEV from an interface ioctl is the [`NoSuchNic`] case; anything else stays as is.
fn missing(nic: &str, e: io::Error) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ENODEV) {
        NoSuchNic(nic.to_owned()).into()
    } else {
        anyhow::Error::new(e).context(format!("looking up {nic}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(nic: &str, addr: &str) -> Announcement {
        Announcement {
            nic: nic.into(),
            addr: addr.parse().unwrap(),
            count: 3,
            interval: Duration::ZERO,
        }
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn odd_addresses_are_refused_before_any_socket() {
        for addr in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
            let err = run(announce(&announcement("eth0", addr))).unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains(addr) && text.contains("eth0"), "{text}");
        }
    }

    #[test]
    fn bad_nic_names_are_refused() {
        for nic in ["", "eth0:0", "much-too-long-a-name"] {
            let err = run(announce(&announcement(nic, "198.51.100.50"))).unwrap_err();
            assert!(format!("{err:#}").contains("198.51.100.50"), "{err:#}");
        }
    }
}
