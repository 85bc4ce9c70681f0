//! Application connections through a VIP, and what became of each.
//!
//! Every lab host runs a small echo server on [`PORT`] (all addresses, IPv4 and IPv6),
//! standing in for the application sessions a mysqld holds. The client opens a few
//! connections through the VIP before a fault and leaves them idle in a read, as a pooled
//! connection or a session waiting on a long query does. A thread per connection notes
//! when the read fails (a reset or close reached the client) or returns data (an echo).
//!
//! After the group settles, [`Held::probe`] sends one byte on every connection still
//! open. A connection through a VIP its host let go must then fail at once (the agent
//! reset it, or the new holder's kernel answers with a RST); one that echoes, or gets no
//! answer at all, is stale: that client would hang.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::lab::{Host, wait_for};

/// The echo servers' port.
pub const PORT: u16 = 3307;
/// How often blocked accepts and reads look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// The echo servers of every host; they stop when dropped.
pub struct EchoServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServers {
    pub fn start(hosts: &[Host]) -> Result<EchoServers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for host in hosts {
            let listener = host
                .run_in(|| TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, PORT)))?
                .with_context(|| format!("echo server on {}:{PORT}", host.name()))?;
            listener.set_nonblocking(true)?;
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || serve(listener, &stop)));
        }
        Ok(EchoServers { stop, threads })
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, stop: &Arc<AtomicBool>) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let stop = Arc::clone(stop);
                conns.push(std::thread::spawn(move || echo(s, &stop)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

fn echo(mut s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// What a held connection has seen.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// When its read failed or hit end of file.
    closed: Option<Instant>,
    /// When it last got an echo back.
    echoed: Option<Instant>,
}

struct Conn {
    stream: TcpStream,
    seen: Arc<Mutex<Seen>>,
}

/// Idle connections from a client through one address; dropping them closes them.
pub struct Held {
    conns: Vec<Conn>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Where the held connections stand after [`Held::probe`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Probed {
    /// Failed (reset or closed) before or when probed.
    pub closed: usize,
    /// Echoed the probe: still connected to a live socket.
    pub alive: usize,
    /// Neither within the bound: a client on it would hang.
    pub silent: usize,
}

impl Held {
    /// Opens `n` connections from `client` to `addr`:[`PORT`].
    pub fn open(client: &Host, addr: IpAddr, n: usize) -> Result<Held> {
        let to = SocketAddr::new(addr, PORT);
        let streams = client
            .run_in(move || {
                (0..n)
                    .map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(2)))
                    .collect::<std::io::Result<Vec<_>>>()
            })?
            .with_context(|| format!("connecting to {to} from {}", client.name()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut conns = Vec::new();
        let mut threads = Vec::new();
        for stream in streams {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let reader = stream.try_clone()?;
            reader.set_read_timeout(Some(TICK))?;
            let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || watch(reader, &seen2, &stop2)));
            conns.push(Conn { stream, seen });
        }
        Ok(Held {
            conns,
            stop,
            threads,
        })
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    fn seen(&self) -> Vec<Seen> {
        self.conns
            .iter()
            .map(|c| *c.seen.lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// When each connection that failed did, oldest first.
    pub fn closed_at(&self) -> Vec<Instant> {
        let mut at: Vec<Instant> = self.seen().iter().filter_map(|s| s.closed).collect();
        at.sort();
        at
    }

    /// Waits up to `timeout` for every connection to fail; whether they all did.
    pub fn wait_all_closed(&self, timeout: Duration) -> bool {
        wait_for(timeout, || self.closed_at().len() == self.conns.len())
    }

    /// Sends one byte on every open connection and waits up to `bound` for each to echo
    /// it or fail.
    pub fn probe(&mut self, bound: Duration) -> Probed {
        let sent = Instant::now();
        for c in &mut self.conns {
            let open = c
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .closed
                .is_none();
            if open {
                // A write to a reset connection fails; the reader notes that too.
                let _ = c.stream.write_all(b"?");
            }
        }
        let answered = |s: &Seen| s.closed.is_some() || s.echoed.is_some_and(|t| t >= sent);
        wait_for(bound, || self.seen().iter().all(answered));
        let mut out = Probed::default();
        for s in self.seen() {
            if s.closed.is_some() {
                out.closed += 1;
            } else if s.echoed.is_some_and(|t| t >= sent) {
                out.alive += 1;
            } else {
                out.silent += 1;
            }
        }
        out
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn watch(mut s: TcpStream, seen: &Mutex<Seen>, stop: &AtomicBool) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let result = s.read(&mut buf);
        let now = Instant::now();
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(0) => {
                seen.closed = Some(now);
                return;
            }
            Ok(_) => seen.echoed = Some(now),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                seen.closed = Some(now);
                return;
            }
        }
    }
}
