//! Capturing the ARP and IPv6 neighbour advertisements that cross the lab bridge.
//!
//! A raw AF_PACKET socket in the bridge namespace sees every frame on every bridge
//! port twice: once as it enters the bridge and once per port it leaves by. Only the
//! entering copy is counted (outgoing copies and the bridge devices are skipped), so
//! each frame is counted once, at the port of the host or client that sent it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::cmd::ip_json;
use super::frame::{self, Kind};
use super::mac::Mac;
use crate::netns;

/// How long a read blocks before the capture thread checks whether to stop.
const READ_TIMEOUT: Duration = Duration::from_millis(50);
/// Socket buffer, large enough that a burst of announcements is not dropped.
const RCVBUF: libc::c_int = 4 << 20;

/// One ARP or neighbour advertisement seen on the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// When the capture read it.
    pub at: Instant,
    pub kind: Kind,
    /// The address spoken for: the ARP sender IP, or the NA target address.
    pub ip: IpAddr,
    /// The link-layer address claimed for `ip`: the ARP sender MAC, or the NA's target
    /// link-layer address option (None when the NA has none).
    pub lladdr: Option<Mac>,
    /// The Ethernet source address.
    pub src_mac: Mac,
    /// The host or client whose port the frame entered the bridge by (`h1`, `c1`, …).
    pub port: String,
}

impl Announcement {
    /// A gratuitous ARP or an unsolicited override NA: what an agent sends when it takes
    /// an address, as opposed to the ARP replies and solicited NAs of normal traffic.
    pub fn is_unsolicited(&self) -> bool {
        matches!(
            self.kind,
            Kind::GratuitousArp
                | Kind::NeighbourAdvert {
                    override_flag: true,
                    solicited: false,
                }
        )
    }
}

/// A running capture; it stops when dropped.
pub struct Capture {
    seen: Arc<Mutex<Vec<Announcement>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing in `bridge_ns`, naming frames by the bridge port they enter:
    /// only frames entering one of `ports` are counted. Frames sent after this returns
    /// are all seen.
    pub(crate) fn start(bridge_ns: &str, ports: &[String]) -> Result<Capture> {
        let ports = port_indexes(bridge_ns, ports)?;
        let socket = netns::run_in(bridge_ns, open_socket)
            .with_context(|| format!("entering {bridge_ns}"))?
            .with_context(|| format!("opening a packet socket in {bridge_ns}"))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("capture {bridge_ns}"))
            .spawn({
                let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
                move || read_loop(&socket, &ports, &seen, &stop)
            })
            .context("starting the capture thread")?;
        Ok(Capture {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// Everything seen so far, oldest first.
    pub fn announcements(&self) -> Vec<Announcement> {
        lock(&self.seen).clone()
    }

    /// How many announcements for `ip` were seen, of any kind.
    pub fn count_for(&self, ip: IpAddr) -> usize {
        lock(&self.seen).iter().filter(|a| a.ip == ip).count()
    }

    /// Forgets everything seen so far.
    pub fn clear(&self) {
        lock(&self.seen).clear();
    }

    /// Waits until at least `n` unsolicited announcements (gratuitous ARP, unsolicited
    /// NA) for `ip` were seen, and returns those.
    pub fn wait_unsolicited(
        &self,
        ip: IpAddr,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Announcement>> {
        let ours = |seen: &[Announcement]| -> Vec<Announcement> {
            seen.iter()
                .filter(|a| a.ip == ip && a.is_unsolicited())
                .cloned()
                .collect()
        };
        let seen = self.wait_until(timeout, |seen| ours(seen).len() >= n)?;
        Ok(ours(&seen))
    }

    /// Waits until `pred` holds for everything seen so far, polling every 10 ms, and
    /// returns what was seen. On timeout the error lists what was seen instead.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[Announcement]) -> bool,
    ) -> Result<Vec<Announcement>> {
        let mut seen = Vec::new();
        if super::wait_for(timeout, || {
            seen = self.announcements();
            pred(&seen)
        }) {
            return Ok(seen);
        }
        bail!("timed out after {timeout:?}; the capture saw {seen:#?}")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Deserialize)]
struct Link {
    ifindex: i32,
    ifname: String,
}

/// The ifindex of each of `ports` in `bridge_ns`.
fn port_indexes(bridge_ns: &str, ports: &[String]) -> Result<HashMap<i32, String>> {
    let links: Vec<Link> = ip_json(bridge_ns, &["link", "show"])?;
    let found: HashMap<i32, String> = links
        .into_iter()
        .filter(|l| ports.contains(&l.ifname))
        .map(|l| (l.ifindex, l.ifname))
        .collect();
    if found.len() != ports.len() {
        bail!("{bridge_ns} lacks some of the ports {ports:?}");
    }
    Ok(found)
}

/// A raw packet socket for every protocol, with a read timeout.
fn open_socket() -> Result<OwnedFd> {
    let all = libc::c_int::from((libc::ETH_P_ALL as u16).to_be());
    // SAFETY: plain socket(2) call; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, all) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: READ_TIMEOUT.as_micros() as libc::suseconds_t,
    };
    setsockopt(&socket, libc::SO_RCVTIMEO, &timeout).context("SO_RCVTIMEO")?;
    // Best-effort: a smaller buffer only risks drops under heavy load.
    if let Err(e) = setsockopt(&socket, libc::SO_RCVBUFFORCE, &RCVBUF) {
        log::debug!("capture: SO_RCVBUFFORCE: {e}");
    }
    Ok(socket)
}

fn setsockopt<T>(socket: &OwnedFd, option: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: value points to a live T and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn read_loop(
    socket: &OwnedFd,
    ports: &HashMap<i32, String>,
    seen: &Mutex<Vec<Announcement>>,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are live, writable, and their lengths are passed.
        let n = unsafe {
            libc::recvfrom(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => continue,
                _ => {
                    log::error!("capture stopped: recvfrom: {err}");
                    return;
                }
            }
        };
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            continue; // the copy leaving by another port; counted where it entered
        }
        let Some(port) = ports.get(&from.sll_ifindex) else {
            continue; // a bridge device, not a host's port
        };
        if let Some(p) = frame::parse(&buf[..n]) {
            lock(seen).push(Announcement {
                at: Instant::now(),
                kind: p.kind,
                ip: p.ip,
                lladdr: p.lladdr,
                src_mac: p.src_mac,
                port: port.clone(),
            });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
