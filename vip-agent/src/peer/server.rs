//! The peer port's listener: one authenticated request per connection.
//!
//! At accept: an address the [`Allow`] rule does not allow is closed at once, and so is
//! one more connection from an address that already has [`Limits::max_per_host`] open,
//! or one over [`Limits::max_connections`] in all. Then, per connection: send a
//! challenge (a fresh nonce), read one request frame, both within the pre-authentication
//! deadline, check it (header, MAC under the current key, JSON, the echoed nonce), hand
//! it to the agent and wait for its answer within the reply timeout, write the response,
//! close. Anything wrong closes the connection: it is counted in [`Stats`] and logged at
//! most once per kind per 10 s, and never reaches the agent.
//!
//! Why a flood without the key cannot hold off a member: a connection holds a slot for
//! at most the pre-authentication deadline, and the slots one address can hold are
//! capped, so another address (a member) always finds one as long as
//! `max_connections` covers `max_per_host` for every address allowed to connect (the
//! members, by default; at most 9). A flood from addresses that are not allowed costs
//! an accept and a close each.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at};
use tracing::{debug, error, warn};

use super::conn::{self, ReadError};
pub use super::hosts::Allow;
use super::key::Key;
use super::stats::LogLimiter;
pub use super::stats::{Reject, Stats};
use super::wire::{self, Body, Challenge, Digest, ResponseEnvelope};
use super::{Request, Response};

/// How long a kind of warning stays quiet after it was logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The server's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From accept until the whole request is in (the challenge written, the request
    /// read), and again for writing the answer: a slow or silent client, which has not
    /// shown it holds the key, cannot hold a connection slot longer.
    pub pre_auth: Duration,
    /// For the agent to answer an authenticated request.
    pub reply_timeout: Duration,
    /// Connections served at once; more are closed at once (counted as `busy`).
    pub max_connections: usize,
    /// Connections from one address at once; more are closed at once (`host_busy`).
    pub max_per_host: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            pre_auth: Duration::from_millis(500),
            reply_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_per_host: 4,
        }
    }
}

/// The open connections per address, each released when its [`HostSlot`] drops.
#[derive(Debug, Default)]
struct PerHost(Mutex<HashMap<IpAddr, usize>>);

struct HostSlot {
    hosts: Arc<PerHost>,
    ip: IpAddr,
}

impl PerHost {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<HostSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(HostSlot {
            hosts: self.clone(),
            ip,
        })
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut open = self.hosts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// An authenticated request, for the agent to answer through `reply`.
#[derive(Debug)]
pub struct Incoming {
    /// The sender's member uuid, as it says (any holder of the key can say any uuid).
    pub from: String,
    /// Where the connection came from (IPv4 peers as plain IPv4, not v4-mapped).
    pub peer: SocketAddr,
    pub request: Request,
    /// Dropping it unanswered closes the connection without a response.
    pub reply: oneshot::Sender<Reply>,
}

/// The agent's answer: what it says, and who says it (its own member uuid, which the
/// response carries under the MAC so the client can check it asked the right member).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub member: String,
    pub response: Response,
}

/// Binds `addr` and serves it until `tx`'s receiver is dropped (or the task is aborted).
///
/// `[::]:port` is bound dual-stack (IPV6_V6ONLY off), so IPv4 peers reach it too; on a
/// host with IPv6 disabled it falls back to `0.0.0.0:port`. Bind errors are returned
/// with their kind (e.g. `AddrInUse`) and a message naming the address.
pub async fn listen(
    addr: SocketAddr,
    key: watch::Receiver<Arc<Key>>,
    limits: Limits,
    allow: watch::Receiver<Allow>,
    tx: mpsc::Sender<Incoming>,
    stats: Arc<Stats>,
) -> std::io::Result<JoinHandle<()>> {
    Ok(serve(bind(addr)?, key, limits, allow, tx, stats))
}

/// The bind half of [`listen`] (tests bind port 0 and read the port back).
/// Must be called within a tokio runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind_socket(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// The serve half of [`listen`].
pub fn serve(
    listener: TcpListener,
    key: watch::Receiver<Arc<Key>>,
    limits: Limits,
    allow: watch::Receiver<Allow>,
    tx: mpsc::Sender<Incoming>,
    stats: Arc<Stats>,
) -> JoinHandle<()> {
    let server = Arc::new(Server {
        key,
        limits,
        allow,
        tx,
        stats,
        permits: Arc::new(Semaphore::new(limits.max_connections)),
        per_host: Arc::default(),
        log: LogLimiter::new(LOG_INTERVAL),
    });
    tokio::spawn(server.accept_loop(listener))
}

fn bind_socket(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let dual_stack = addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let socket = match Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) {
        Err(e) if dual_stack && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            warn!(
                event = "peer_ipv4_only",
                "IPv6 is disabled on this host: listening on IPv4 only"
            );
            return bind_socket(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), addr.port()));
        }
        other => other?,
    };
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // A restarted agent must not wait for its old connections' TIME_WAIT to end.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // Room for a burst of connections while the accept loop closes the unwanted ones: a
    // full queue drops new SYNs, and a member's retransmitted SYN waits a second.
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

struct Server {
    key: watch::Receiver<Arc<Key>>,
    limits: Limits,
    /// A reload swaps it.
    allow: watch::Receiver<Allow>,
    tx: mpsc::Sender<Incoming>,
    stats: Arc<Stats>,
    permits: Arc<Semaphore>,
    per_host: Arc<PerHost>,
    log: LogLimiter,
}

impl Server {
    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    if let Some(suppressed) = self.log.allow("accept", Instant::now()) {
                        warn!(
                            event = "peer_accept_failed",
                            suppressed, "peer port: accept failed: {e}"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let allowed = self.allow.borrow().allows(peer.ip());
            if !allowed {
                self.reject(
                    Reject::NotAllowed,
                    peer,
                    "not a member host of this node's views and not in peer.allow: closed at \
                     accept",
                );
                continue;
            }
            let Some(slot) = self.per_host.take(peer.ip(), self.limits.max_per_host) else {
                self.reject(
                    Reject::HostBusy,
                    peer,
                    format_args!(
                        "already {} connections open from {}: closed at once",
                        self.limits.max_per_host,
                        peer.ip()
                    ),
                );
                continue;
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.reject(
                    Reject::Busy,
                    peer,
                    format_args!(
                        "already {} connections open: closed at once",
                        self.limits.max_connections
                    ),
                );
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                server.serve(stream, peer).await;
                drop((permit, slot));
            });
        }
    }

    async fn serve(&self, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        // The key as of this connection: a reload swaps it for the next ones.
        let key = self.key.borrow().clone();
        let limits = self.limits;
        let nonce = match conn::fresh_nonce() {
            Ok(nonce) => nonce,
            Err(e) => {
                error!(event = "peer_nonce_failed", "peer port: {e}");
                return;
            }
        };
        let Ok(challenge) = wire::encode(&Body::Challenge(Challenge { nonce }), &key) else {
            return;
        };
        // One deadline for everything before the request is authenticated.
        let deadline = tokio::time::Instant::now() + limits.pre_auth;
        if !self.write(&mut stream, &challenge, peer, deadline).await {
            return;
        }

        let bytes = match timeout_at(deadline, conn::read_frame(&mut stream)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(ReadError::Frame(e))) => return self.reject(Reject::of(&e), peer, e),
            Ok(Err(ReadError::Closed)) => {
                return debug!(%peer, "peer port: closed before sending a request");
            }
            Ok(Err(ReadError::Io(e))) => return debug!(%peer, "peer port: reading: {e}"),
            Err(_) => {
                return self.reject(
                    Reject::Timeout,
                    peer,
                    format_args!("no complete request within {:?}", limits.pre_auth),
                );
            }
        };
        let envelope = match wire::decode_request(&bytes, &key, &nonce) {
            Ok(envelope) => envelope,
            Err(e) => return self.reject(Reject::of(&e), peer, e),
        };
        let digest = Digest::of(&bytes);

        let (reply, answer) = oneshot::channel();
        let incoming = Incoming {
            from: envelope.from,
            peer,
            request: envelope.request,
            reply,
        };
        let answered = timeout(limits.reply_timeout, async {
            self.tx.send(incoming).await.ok()?;
            answer.await.ok()
        })
        .await;
        let reply = match answered {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                self.stats.count_unanswered();
                return debug!(%peer, "peer port: the agent dropped the request");
            }
            Err(_) => {
                self.stats.count_unanswered();
                if let Some(suppressed) = self.log.allow("unanswered", Instant::now()) {
                    warn!(
                        event = "peer_unanswered",
                        peer = %peer,
                        suppressed,
                        "the agent did not answer a peer request within {:?}",
                        limits.reply_timeout
                    );
                }
                return;
            }
        };
        let body = Body::Response(ResponseEnvelope {
            nonce: envelope.client_nonce,
            challenge: nonce,
            member: reply.member,
            request: digest,
            response: reply.response,
        });
        let frame = match wire::encode(&body, &key) {
            Ok(frame) => frame,
            Err(e) => {
                return error!(event = "peer_response_failed", %peer, "peer port: cannot send the answer: {e}");
            }
        };
        let deadline = tokio::time::Instant::now() + limits.pre_auth;
        if self.write(&mut stream, &frame, peer, deadline).await {
            self.stats.count_served();
            let _ = timeout_at(deadline, stream.shutdown()).await;
        }
    }

    /// Writes a whole frame by `deadline` (a client that does not read is as bad as one
    /// that does not write).
    async fn write(
        &self,
        stream: &mut TcpStream,
        frame: &[u8],
        peer: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> bool {
        match timeout_at(deadline, stream.write_all(frame)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                debug!(%peer, "peer port: writing: {e}");
                false
            }
            Err(_) => {
                self.reject(
                    Reject::Timeout,
                    peer,
                    format_args!("not reading: a write took over {:?}", self.limits.pre_auth),
                );
                false
            }
        }
    }

    /// Counts a rejected connection and logs it, at most once per kind per interval.
    fn reject(&self, why: Reject, peer: SocketAddr, detail: impl std::fmt::Display) {
        self.stats.count_rejected(why);
        if let Some(suppressed) = self.log.allow(why.as_str(), Instant::now()) {
            warn!(
                event = "peer_rejected",
                kind = why.as_str(),
                peer = %peer,
                suppressed,
                "peer port: rejected a connection from {peer}: {detail}"
            );
        }
    }
}
