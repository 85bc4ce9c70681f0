//! The peer port's listener: one authenticated request per connection.
//!
//! Per connection: send a challenge (a fresh nonce), read one request frame within the
//! read timeout, check it (header, MAC under the current key, JSON, the echoed nonce),
//! hand it to the agent and wait for its answer within the reply timeout, write the
//! response, close. Anything wrong closes the connection: the frame is counted in
//! [`Stats`] and logged (rate-limited), and never reaches the agent.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{debug, error, warn};

use super::conn::{self, ReadError};
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
    /// For the client to send its whole request (and to read the answer): a slow or
    /// silent client cannot hold a connection slot longer.
    pub read_timeout: Duration,
    /// For the agent to answer an authenticated request.
    pub reply_timeout: Duration,
    /// Connections served at once; more are closed at once (counted as `busy`).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            read_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(10),
            // A group has at most 9 members: 32 leaves room for retries and probes.
            max_connections: 32,
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
    tx: mpsc::Sender<Incoming>,
    stats: Arc<Stats>,
) -> std::io::Result<JoinHandle<()>> {
    Ok(serve(bind(addr)?, key, limits, tx, stats))
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
    tx: mpsc::Sender<Incoming>,
    stats: Arc<Stats>,
) -> JoinHandle<()> {
    let server = Arc::new(Server {
        key,
        limits,
        tx,
        stats,
        permits: Arc::new(Semaphore::new(limits.max_connections)),
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
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

struct Server {
    key: watch::Receiver<Arc<Key>>,
    limits: Limits,
    tx: mpsc::Sender<Incoming>,
    stats: Arc<Stats>,
    permits: Arc<Semaphore>,
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
                drop(permit);
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
        if !self.write(&mut stream, &challenge, peer).await {
            return;
        }

        let bytes = match timeout(limits.read_timeout, conn::read_frame(&mut stream)).await {
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
                    format_args!("no complete request within {:?}", limits.read_timeout),
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
        if self.write(&mut stream, &frame, peer).await {
            self.stats.count_served();
            let _ = timeout(limits.read_timeout, stream.shutdown()).await;
        }
    }

    /// Writes a whole frame within the read timeout (a client that does not read is as
    /// bad as one that does not write).
    async fn write(&self, stream: &mut TcpStream, frame: &[u8], peer: SocketAddr) -> bool {
        match timeout(self.limits.read_timeout, stream.write_all(frame)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                debug!(%peer, "peer port: writing: {e}");
                false
            }
            Err(_) => {
                self.reject(
                    Reject::Timeout,
                    peer,
                    format_args!(
                        "not reading: a write took over {:?}",
                        self.limits.read_timeout
                    ),
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
