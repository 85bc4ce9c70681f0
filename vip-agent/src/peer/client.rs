//! Asking another agent: one request per connection, the whole call bounded in time.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::conn::{self, ReadError};
use super::key::Key;
use super::wire::{self, Body, Digest, Expected, FrameError, RequestEnvelope};
use super::{Request, Response};

/// Why a call failed. Display names the peer, what happened and, where there is one,
/// the likely fix.
#[derive(Debug)]
pub enum CallError {
    /// Nothing listens there.
    Refused { addr: SocketAddr },
    Connect {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The call took longer than its timeout; `waiting_for` says at which step.
    TimedOut {
        addr: SocketAddr,
        after: Duration,
        waiting_for: &'static str,
    },
    /// The peer closed the connection before sending what we waited for.
    Closed {
        addr: SocketAddr,
        waiting_for: &'static str,
    },
    Io {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The peer's frame was refused (see [`FrameError`]).
    Frame { addr: SocketAddr, error: FrameError },
    /// Our side could not build the request (no randomness, a request over the limit).
    Local { addr: SocketAddr, detail: String },
}

impl CallError {
    /// A short stable name, for counters and logs: `refused`, `connect`, `timeout`,
    /// `closed`, `io`, `local`, or the [`FrameError::kind`] of a refused frame.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Refused { .. } => "refused",
            CallError::Connect { .. } => "connect",
            CallError::TimedOut { .. } => "timeout",
            CallError::Closed { .. } => "closed",
            CallError::Io { .. } => "io",
            CallError::Frame { error, .. } => error.kind(),
            CallError::Local { .. } => "local",
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused { addr } => write!(
                f,
                "the peer at {addr} refused the connection: is vip-agent running there, \
                 with peer.port = {}?",
                addr.port()
            ),
            CallError::Connect { addr, error } => {
                write!(f, "cannot connect to the peer at {addr}: {error}")
            }
            CallError::TimedOut {
                addr,
                after,
                waiting_for,
            } => write!(
                f,
                "the peer at {addr} timed out: no {waiting_for} within {after:?}"
            ),
            CallError::Closed { addr, waiting_for } => write!(
                f,
                "the peer at {addr} closed the connection before sending its {waiting_for} \
                 (it refused our request, is at its connection limit, or its agent did not \
                 answer in time; its log says which)"
            ),
            CallError::Io { addr, error } => write!(f, "talking to the peer at {addr}: {error}"),
            CallError::Frame {
                addr,
                error: FrameError::Unauthenticated,
            } => write!(
                f,
                "the peer at {addr} answered with a frame that fails authentication: \
                 are both agents using the same peer.key_file?"
            ),
            CallError::Frame {
                addr,
                error: FrameError::Replayed,
            } => write!(
                f,
                "the peer at {addr} answered with a frame that is not for our request \
                 (a replayed or stale answer)"
            ),
            CallError::Frame {
                addr,
                error: FrameError::OtherRequest,
            } => write!(
                f,
                "the peer at {addr} answered another request than ours (a replayed or \
                 redirected answer)"
            ),
            CallError::Frame {
                addr,
                error: error @ FrameError::WrongMember { .. },
            } => write!(
                f,
                "the peer at {addr} is not the member we asked: {error}. Its address \
                 (MEMBER_HOST) may point at another member's host, or the connection was \
                 redirected"
            ),
            CallError::Frame {
                addr,
                error: error @ FrameError::BadVersion(_),
            } => write!(
                f,
                "the peer at {addr} runs another vip-agent version: {error}; \
                 upgrade the agents to the same version"
            ),
            CallError::Frame { addr, error } => {
                write!(f, "the peer at {addr} sent a frame we cannot use: {error}")
            }
            CallError::Local { addr, detail } => {
                write!(f, "cannot send a request to the peer at {addr}: {detail}")
            }
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Connect { error, .. } | CallError::Io { error, .. } => Some(error),
            CallError::Frame { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Sends `request` to the agent of member `to` at `addr`, as member `from`, and returns
/// its answer: only an answer from `to`, to this very request, on this connection.
/// The whole call (connect, handshake, the peer's agent deciding) ends within `timeout`.
pub async fn call(
    addr: SocketAddr,
    key: &Key,
    from: &str,
    to: &str,
    request: Request,
    timeout: Duration,
) -> Result<Response, CallError> {
    let deadline = Instant::now() + timeout;
    let timed_out = |waiting_for| CallError::TimedOut {
        addr,
        after: timeout,
        waiting_for,
    };

    let mut stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err(timed_out("connection")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(CallError::Refused { addr });
        }
        Ok(Err(error)) => return Err(CallError::Connect { addr, error }),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);

    let frame = read(&mut stream, addr, deadline, "challenge", &timed_out).await?;
    let challenge =
        wire::decode_challenge(&frame, key).map_err(|error| CallError::Frame { addr, error })?;

    let local = |detail: String| CallError::Local { addr, detail };
    let client_nonce = conn::fresh_nonce().map_err(|e| local(e.to_string()))?;
    let body = Body::Request(RequestEnvelope {
        from: from.to_string(),
        nonce: challenge.nonce,
        client_nonce,
        request,
    });
    let frame = wire::encode(&body, key).map_err(|e| local(e.to_string()))?;
    match timeout_at(deadline, stream.write_all(&frame)).await {
        Err(_) => return Err(timed_out("room to send the request")),
        Ok(Err(error)) => return Err(CallError::Io { addr, error }),
        Ok(Ok(())) => {}
    }

    let expected = Expected {
        client_nonce,
        challenge: challenge.nonce,
        request: Digest::of(&frame),
        member: to,
    };
    let frame = read(&mut stream, addr, deadline, "answer", &timed_out).await?;
    wire::decode_response(&frame, key, &expected)
        .map(|envelope| envelope.response)
        .map_err(|error| CallError::Frame { addr, error })
}

async fn read(
    stream: &mut TcpStream,
    addr: SocketAddr,
    deadline: Instant,
    waiting_for: &'static str,
    timed_out: &impl Fn(&'static str) -> CallError,
) -> Result<Vec<u8>, CallError> {
    match timeout_at(deadline, conn::read_frame(stream)).await {
        Err(_) => Err(timed_out(waiting_for)),
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(ReadError::Closed)) => Err(CallError::Closed { addr, waiting_for }),
        // A server that refuses a request closes with our bytes unread: that is a reset.
        Ok(Err(ReadError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Err(CallError::Closed { addr, waiting_for })
        }
        Ok(Err(ReadError::Frame(error))) => Err(CallError::Frame { addr, error }),
        Ok(Err(ReadError::Io(error))) => Err(CallError::Io { addr, error }),
    }
}
