//! The control socket's server side: one JSON request line in, one JSON response line
//! out, per connection. The agent's loop answers through a channel ([`Incoming`]); this
//! module owns only the socket file, the framing, the limits and the timeouts.
//!
//! The socket is mode 0600 and owned by whoever runs the agent, so only that user (and
//! root) can reach it; its folder is created mode 0700 when it does not exist. The mode
//! is not the only check: every connection's peer credentials (`SO_PEERCRED`) must be
//! root's or the agent's own uid, so a socket made reachable by mistake (a chmod, a
//! folder shared with others) still answers nobody else. At most
//! [`Limits::max_connections`] are served at once; more get an error at once.

use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{Request, Response};
use crate::config::validate::SOCKET_PATH_MAX;

/// A request for the agent's loop, and where its answer goes.
#[derive(Debug)]
pub struct Incoming {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// The bounds on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest request line, newline excluded.
    pub max_request: usize,
    /// How long a client may take to send its request line.
    pub read_timeout: Duration,
    /// How long the agent may take to answer (a force-rebind or reload takes seconds).
    pub reply_timeout: Duration,
    /// Connections served at once; more are answered with an error and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request: 64 * 1024,
            read_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(30),
            // The CLI opens one connection per verb: a handful of operators and scripts.
            max_connections: 16,
        }
    }
}

/// Writing the answer: a client that does not read it is dropped after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Asking a live socket who serves it, before refusing to start.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// [`serve_with`] the default [`Limits`].
pub fn serve(path: &Path, tx: mpsc::Sender<Incoming>) -> Result<JoinHandle<()>> {
    serve_with(path, tx, Limits::default())
}

/// Binds the control socket at `path` and serves it in a task; each connection is served
/// in its own task and its request handed to the agent through `tx`.
///
/// Refuses to start when another agent (or anything else) is listening on `path`, and
/// replaces a socket file nobody listens on (left by an agent that was killed). The task
/// ends, and removes the socket file, when the agent drops the receiving end of `tx` or
/// aborts the returned handle (await it after `abort` to be sure the file is gone).
///
/// Call it inside a Tokio runtime. It blocks for at most 2 s when a live socket is
/// already there, asking it who it is for the error message.
pub fn serve_with(
    path: &Path,
    tx: mpsc::Sender<Incoming>,
    limits: Limits,
) -> Result<JoinHandle<()>> {
    let (listener, guard) = bind(path)?;
    debug!(socket = %path.display(), "control socket bound");
    Ok(tokio::spawn(accept_loop(listener, guard, tx, limits)))
}

/// Removes the socket file when dropped, if it is still the one this agent bound: a new
/// agent that replaced it keeps its own.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketGuard {
    /// Guards the socket file now at `path`.
    pub fn new(path: &Path) -> Result<SocketGuard> {
        let m = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(SocketGuard {
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            warn!(socket = %self.path.display(), "cannot remove the control socket: {e}");
        }
    }
}

/// Makes the folder, clears a stale socket, and binds mode 0600.
fn bind(path: &Path) -> Result<(UnixListener, SocketGuard)> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => bail!(
            "control socket {}: not a file path; set control.socket to an absolute path",
            path.display()
        ),
    };
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| {
                format!("creating {}, the control socket's folder", parent.display())
            })?;
    }
    clear_stale(path)?;

    // Bind under a temporary name, restrict, then rename into place: the socket is never
    // reachable with the umask's wider mode.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!(".vip-agent-{}-{n}.tmp", std::process::id()));
    let staged = tmp.as_os_str().len() <= SOCKET_PATH_MAX;
    let at = if staged { tmp.as_path() } else { path };
    if staged {
        let _ = std::fs::remove_file(&tmp);
    }
    let listener = std::os::unix::net::UnixListener::bind(at)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    let placed = std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", at.display()))
        .and_then(|()| {
            if staged {
                std::fs::rename(at, path)
                    .with_context(|| format!("moving the control socket to {}", path.display()))
            } else {
                Ok(())
            }
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(at);
        return Err(e);
    }
    // From here on a failure removes the file again.
    let guard = SocketGuard::new(path)?;
    listener
        .set_nonblocking(true)
        .context("making the control socket non-blocking")?;
    let listener = UnixListener::from_std(listener)
        .context("registering the control socket with the runtime")?;
    Ok((listener, guard))
}

/// Refuses a live socket; removes a dead one.
fn clear_stale(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("cannot check {}: {e}", path.display()),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; remove it or set control.socket",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => Err(match identify(stream) {
            Some(instance) => anyhow!(
                "another vip-agent is already serving {} (instance {instance}); stop it or set control.socket",
                path.display()
            ),
            None => anyhow!(
                "another process is already listening on {} (it did not answer as a vip-agent within {} s); stop it or set control.socket",
                path.display(),
                PROBE_TIMEOUT.as_secs()
            ),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            debug!(socket = %path.display(), "removing a stale control socket");
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale control socket {}", path.display()))
        }
        Err(e) => bail!(
            "cannot tell whether another vip-agent serves {}: {e}",
            path.display()
        ),
    }
}

/// The instance a live agent says it is, if it answers a status request in time.
fn identify(mut stream: std::os::unix::net::UnixStream) -> Option<String> {
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let mut line = serde_json::to_vec(&Request::Status).ok()?;
    line.push(b'\n');
    stream.write_all(&line).ok()?;
    let mut answer = Vec::new();
    io::BufReader::new(stream.take(super::client::MAX_RESPONSE as u64))
        .read_until(b'\n', &mut answer)
        .ok()?;
    match serde_json::from_slice(&answer).ok()? {
        Response::Status(status) => Some(status.instance),
        _ => None,
    }
}

async fn accept_loop(
    listener: UnixListener,
    _guard: SocketGuard,
    tx: mpsc::Sender<Incoming>,
    limits: Limits,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if let Some(refusal) = refuse_peer(&stream, me) {
                        tokio::spawn(answer(stream, refusal, limits));
                        continue;
                    }
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        let busy = Response::Error {
                            message: format!(
                                "the agent is already serving {} control connections; try \
                                 again in a moment",
                                limits.max_connections
                            ),
                        };
                        tokio::spawn(answer(stream, busy, limits));
                        continue;
                    };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        connection(stream, tx, limits).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // The agent dropped its receiver: it is stopping.
            () = tx.closed() => break,
        }
    }
}

/// Why this connection may not talk to the agent (its peer is neither root nor the
/// agent's own user), as the error it is sent; `None` when it may.
fn refuse_peer(stream: &UnixStream, me: u32) -> Option<Response> {
    let message = match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 || cred.uid() == me => return None,
        Ok(cred) => {
            warn!(
                event = "control_refused",
                uid = cred.uid(),
                pid = ?cred.pid(),
                "control socket: refused uid {} (only root and uid {me} may use it)",
                cred.uid()
            );
            format!(
                "uid {} may not use this agent's control socket: only root and the agent's \
                 own user (uid {me}) may; run the command as one of them (e.g. with sudo)",
                cred.uid()
            )
        }
        Err(e) => format!("the control socket cannot tell who is calling ({e}); refused"),
    };
    Some(Response::Error { message })
}

/// Reads the request line and answers `response` whatever it asked (refusals): a
/// client still writing its request when the connection closed would see only a broken
/// pipe, not why.
async fn answer(stream: UnixStream, response: Response, limits: Limits) {
    let (read, write) = stream.into_split();
    let _ = read_request(read, &limits).await;
    send(write, &response).await;
}

/// One request, one answer, then close.
async fn connection(stream: UnixStream, tx: mpsc::Sender<Incoming>, limits: Limits) {
    let (read, write) = stream.into_split();
    let response = match read_request(read, &limits).await {
        Ok(request) => ask(&tx, request, limits.reply_timeout).await,
        Err(message) => Response::Error { message },
    };
    send(write, &response).await;
}

/// Writes `response` as one line, within [`WRITE_TIMEOUT`].
async fn send(mut write: tokio::net::unix::OwnedWriteHalf, response: &Response) {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|e| {
        serde_json::to_vec(&Response::Error {
            message: format!("the agent's answer could not be encoded: {e}"),
        })
        .unwrap_or_default()
    });
    line.push(b'\n');
    let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
        write.write_all(&line).await?;
        write.shutdown().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("control socket: the client left before the answer: {e}"),
        Err(_) => debug!("control socket: the client did not read the answer"),
    }
}

/// Reads and decodes the request line; `Err` is the message for the client.
async fn read_request(
    read: tokio::net::unix::OwnedReadHalf,
    limits: &Limits,
) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(read);
    let read = tokio::time::timeout(
        limits.read_timeout,
        read_line(&mut reader, limits.max_request, &mut line),
    )
    .await;
    let too_long = line.len() > limits.max_request;
    match read {
        _ if too_long => {
            return Err(format!(
                "request line longer than {} bytes; send one JSON request then a newline",
                limits.max_request
            ));
        }
        Err(_) => {
            return Err(format!(
                "no request line within {} ms; send one JSON request then a newline",
                limits.read_timeout.as_millis()
            ));
        }
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        // A line without its newline is accepted at end of input: the client closed its side.
        Ok(Ok(())) => {}
    }
    let text = String::from_utf8_lossy(&line);
    let text = text.trim();
    if text.is_empty() {
        return Err("empty request; send one JSON request line, e.g. \"Status\"".to_string());
    }
    serde_json::from_str(text).map_err(|e| {
        format!(
            "malformed request ({e}); expected one JSON line such as \"Status\" or {{\"SetTopology\":{{\"text\":\"…\"}}}}"
        )
    })
}

/// Reads up to a newline (dropped) or the end of input, keeping at most `max + 1` bytes:
/// the rest of an over-long line is read and discarded, so that closing the connection
/// with unread input does not reset it before the client reads the answer.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    line: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        let (used, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, Some(i)),
            None => (buf.len(), None),
        };
        let keep = end
            .unwrap_or(used)
            .min((max + 1).saturating_sub(line.len()));
        line.extend_from_slice(&buf[..keep]);
        reader.consume(used);
        if end.is_some() {
            return Ok(());
        }
    }
}

/// Hands the request to the agent and waits for its answer.
async fn ask(tx: &mpsc::Sender<Incoming>, request: Request, wait: Duration) -> Response {
    let (reply, answer) = oneshot::channel();
    let exchange = async {
        tx.send(Incoming { request, reply })
            .await
            .map_err(|_| "the agent is stopping; try again once it runs".to_string())?;
        answer
            .await
            .map_err(|_| "the agent dropped the request without answering; see its log".to_string())
    };
    match tokio::time::timeout(wait, exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(message)) => Response::Error { message },
        Err(_) => Response::Error {
            message: format!(
                "the agent did not answer in time ({} s): it may be busy or stuck; see its log",
                wait.as_secs_f64()
            ),
        },
    }
}

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
