//! A member's mysqld as seen from the network: its listener (TCP in any network namespace,
//! or a unix socket), the accept loop, and what it does with clients when serving, hung,
//! down or full.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opensrv_mysql::AsyncMysqlIntermediary;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::shim::{Shared, Shim};
use super::wire::{self, AccessDeniedFix, HangGate};

/// What a member's mysqld does with clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Normal service.
    Serving,
    /// Connections are accepted (by the kernel) but never greeted, and open connections
    /// get no answer to anything; back to `Serving`, everything pending proceeds.
    Hung,
    /// The listener is closed and open connections dropped: connecting is refused.
    Down,
    /// New connections get error 1040 as their first packet; open ones keep working.
    TooManyConnections,
}

/// Where a member listens.
#[derive(Debug)]
pub enum Listen {
    /// TCP, bound in the caller's network namespace (port 0 picks a free port).
    Tcp(SocketAddr),
    /// TCP, bound inside the named network namespace (`ip netns` name).
    TcpInNetns { netns: String, addr: SocketAddr },
    /// A TCP listener already bound (in whichever namespace it was made).
    Listener(std::net::TcpListener),
    /// A unix socket at this path (a stale file there is replaced).
    Unix(PathBuf),
}

/// Where clients reach a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// How to bind the listener again after `Down`: same address, same namespace.
enum BindAt {
    Tcp { addr: SocketAddr, netns: Arc<File> },
    Unix(PathBuf),
}

enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

enum Acceptor {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// The per-member switches the connections look at.
#[derive(Clone)]
struct Switches {
    hung: watch::Receiver<bool>,
    full: Arc<AtomicBool>,
}

/// One member's mysqld endpoint.
pub(crate) struct Server {
    member: usize,
    shared: Arc<Shared>,
    bind_at: BindAt,
    addr: MemberAddr,
    runtime: tokio::runtime::Handle,
    hung: watch::Sender<bool>,
    full: Arc<AtomicBool>,
    endpoint: Mutex<Endpoint>,
    /// Serialises endpoint switches, which await socket closes.
    switching: tokio::sync::Mutex<()>,
    /// The accept loop and the way to stop it, while not `Down`.
    running: Mutex<Option<(JoinHandle<()>, oneshot::Sender<()>)>>,
}

impl Server {
    /// Binds `listen` and starts serving. Needs a tokio runtime context.
    pub fn start(member: usize, listen: Listen, shared: Arc<Shared>) -> io::Result<Server> {
        let (listener, bind_at, addr) = match listen {
            Listen::Tcp(addr) => tcp(std::net::TcpListener::bind(addr)?)?,
            Listen::TcpInNetns { netns, addr } => tcp(crate::netns::run_in(&netns, move || {
                std::net::TcpListener::bind(addr)
            })??)?,
            Listen::Listener(listener) => tcp(listener)?,
            Listen::Unix(path) => {
                let listener = bind_unix(&path)?;
                (
                    StdListener::Unix(listener),
                    BindAt::Unix(path.clone()),
                    MemberAddr::Unix(path),
                )
            }
        };
        let server = Server {
            member,
            shared,
            bind_at,
            addr,
            runtime: tokio::runtime::Handle::try_current().map_err(io::Error::other)?,
            hung: watch::channel(false).0,
            full: Arc::default(),
            endpoint: Mutex::new(Endpoint::Serving),
            switching: tokio::sync::Mutex::new(()),
            running: Mutex::new(None),
        };
        server.serve(listener)?;
        Ok(server)
    }

    pub fn addr(&self) -> &MemberAddr {
        &self.addr
    }

    pub fn endpoint(&self) -> Endpoint {
        *self.endpoint.lock().unwrap()
    }

    /// Switches what mysqld does with clients; returns once sockets are closed or bound.
    pub async fn set_endpoint(&self, endpoint: Endpoint) -> io::Result<()> {
        let _switching = self.switching.lock().await;
        let was = self.endpoint();
        if endpoint == Endpoint::Down && was != Endpoint::Down {
            let running = self.running.lock().unwrap().take();
            if let Some((task, stop)) = running {
                let _ = stop.send(());
                // Wait until the listener and every connection are really closed.
                let _ = task.await;
            }
        }
        if endpoint != Endpoint::Down && was == Endpoint::Down {
            self.serve(self.rebind()?)?;
        }
        self.hung.send_replace(endpoint == Endpoint::Hung);
        self.full
            .store(endpoint == Endpoint::TooManyConnections, Ordering::SeqCst);
        *self.endpoint.lock().unwrap() = endpoint;
        Ok(())
    }

    fn rebind(&self) -> io::Result<StdListener> {
        match &self.bind_at {
            BindAt::Tcp { addr, netns } => Ok(StdListener::Tcp(bind_tcp_in(netns, *addr)?)),
            BindAt::Unix(path) => Ok(StdListener::Unix(bind_unix(path)?)),
        }
    }

    fn serve(&self, listener: StdListener) -> io::Result<()> {
        let _guard = self.runtime.enter();
        let acceptor = match listener {
            StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Acceptor::Tcp(TcpListener::from_std(l)?)
            }
            StdListener::Unix(l) => {
                l.set_nonblocking(true)?;
                Acceptor::Unix(UnixListener::from_std(l)?)
            }
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let switches = Switches {
            hung: self.hung.subscribe(),
            full: self.full.clone(),
        };
        let task = self.runtime.spawn(accept_loop(
            acceptor,
            self.member,
            self.shared.clone(),
            switches,
            stop_rx,
        ));
        *self.running.lock().unwrap() = Some((task, stop_tx));
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((task, _)) = self.running.get_mut().unwrap().take() {
            // Dropping the accept loop drops its listener and aborts its connections.
            task.abort();
        }
        if let BindAt::Unix(path) = &self.bind_at {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn tcp(listener: std::net::TcpListener) -> io::Result<(StdListener, BindAt, MemberAddr)> {
    let addr = listener.local_addr()?;
    let netns = Arc::new(socket_netns(&listener)?);
    Ok((
        StdListener::Tcp(listener),
        BindAt::Tcp { addr, netns },
        MemberAddr::Tcp(addr),
    ))
}

/// The network namespace a socket lives in (SIOCGSKNS), so it can be re-bound there.
fn socket_netns(socket: &impl AsRawFd) -> io::Result<File> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd (or -1).
    let fd = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGSKNS as _) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just created for us and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Binds `addr` in namespace `netns` (from a thread that enters it, unless it is ours).
fn bind_tcp_in(netns: &File, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let ours = std::fs::metadata("/proc/thread-self/ns/net")?;
    let theirs = netns.metadata()?;
    if (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino()) {
        return std::net::TcpListener::bind(addr);
    }
    let netns = netns.try_clone()?;
    std::thread::spawn(move || {
        // SAFETY: setns takes a valid open fd and a flag; it changes only this thread.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        std::net::TcpListener::bind(addr)
    })
    .join()
    .map_err(|_| io::Error::other("bind thread panicked"))?
}

fn bind_unix(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::net::UnixListener::bind(path)
}

async fn accept_loop(
    acceptor: Acceptor,
    member: usize,
    shared: Arc<Shared>,
    switches: Switches,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = acceptor.accept() => accepted,
        };
        let (shared, switches) = (shared.clone(), switches.clone());
        match accepted {
            Ok((Client::Tcp(s), host)) => {
                connections.spawn(connection(s, host, member, shared, switches));
            }
            Ok((Client::Unix(s), host)) => {
                connections.spawn(connection(s, host, member, shared, switches));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                log::warn!("sim member {member}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // Down: the listener closes when this returns; close every connection first.
    connections.shutdown().await;
}

enum Client {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Acceptor {
    /// The next client and the host name it connects from (as MySQL reports it).
    async fn accept(&self) -> io::Result<(Client, String)> {
        match self {
            Acceptor::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                // Else Nagle + delayed ACK add about 40 ms per round trip.
                stream.set_nodelay(true)?;
                Ok((Client::Tcp(stream), peer.ip().to_string()))
            }
            Acceptor::Unix(l) => {
                let (stream, _) = l.accept().await?;
                Ok((Client::Unix(stream), "localhost".to_owned()))
            }
        }
    }
}

/// Serves one client until it quits, fails auth, or the member goes down.
async fn connection<S>(
    mut stream: S,
    peer_host: String,
    member: usize,
    shared: Arc<Shared>,
    switches: Switches,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // A hung mysqld: the kernel completed the TCP handshake, nobody greets.
    wire::unhung(switches.hung.clone()).await;
    if switches.full.load(Ordering::SeqCst) {
        if let Err(e) = wire::refuse_too_many(&mut stream).await {
            log::debug!("sim member {member}: refusing a connection: {e}");
        }
        return;
    }
    let denial = wire::Denial::default();
    let shim = Shim::new(shared, member, peer_host, denial.clone());
    let (reader, writer) = tokio::io::split(stream);
    let reader = HangGate::new(reader, switches.hung);
    let writer = AccessDeniedFix::new(writer, denial);
    if let Err(e) = AsyncMysqlIntermediary::run_on(shim, reader, writer).await {
        log::debug!("sim member {member}: connection ended: {e}");
    }
}
