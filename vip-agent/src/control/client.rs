//! The control socket's client side, for the CLI verbs: send one request line, read one
//! response line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Request, Response};

/// The longest answer read: a status of a large group is a few KiB.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// Nobody listens on the socket: no file there, or a file left by an agent that stopped.
/// The CLI tells this apart (exit code 2) with `downcast_ref`.
#[derive(Debug)]
pub struct NotListening {
    pub path: PathBuf,
    /// The socket file exists but nothing accepts on it.
    pub stale: bool,
}

impl fmt::Display for NotListening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The default socket is /run/vip-agent/<instance>.sock, the unit vip-agent@<instance>.
        let instance = self
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| crate::config::validate::is_instance_name(s))
            .unwrap_or("<instance>");
        write!(f, "no agent is listening on {}", self.path.display())?;
        if self.stale {
            f.write_str(" (the socket file is left from an agent that stopped)")?;
        }
        write!(
            f,
            ": is vip-agent running (systemctl status vip-agent@{instance})? is control.socket the same in both configs?"
        )
    }
}

impl std::error::Error for NotListening {}

/// Sends `request` to the agent serving `path` and returns its answer. `timeout` bounds
/// the whole exchange; give more than the server's reply timeout (30 s) so that its own
/// "did not answer in time" comes back instead.
pub async fn call(path: &Path, request: &Request, timeout: Duration) -> Result<Response> {
    tokio::time::timeout(timeout, exchange(path, request))
        .await
        .unwrap_or_else(|_| {
            Err(anyhow!(
                "the agent on {} did not answer within {} s",
                path.display(),
                timeout.as_secs_f64()
            ))
        })
}

async fn exchange(path: &Path, request: &Request) -> Result<Response> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| connect_error(path, e))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).context("encoding the request")?;
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .with_context(|| format!("sending the request to {}", path.display()))?;
    let mut answer = Vec::new();
    BufReader::new(read.take(MAX_RESPONSE as u64))
        .read_until(b'\n', &mut answer)
        .await
        .with_context(|| format!("reading the agent's answer on {}", path.display()))?;
    if answer.is_empty() {
        return Err(anyhow!(
            "the agent on {} closed the connection without answering; see its log",
            path.display()
        ));
    }
    serde_json::from_slice(&answer).map_err(|e| {
        anyhow!(
            "the agent on {} sent an answer this command cannot read ({e}): are the agent and this vip-agent the same version?",
            path.display()
        )
    })
}

pub(super) fn connect_error(path: &Path, e: io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::NotFound => NotListening {
            path: path.to_path_buf(),
            stale: false,
        }
        .into(),
        io::ErrorKind::ConnectionRefused => NotListening {
            path: path.to_path_buf(),
            stale: true,
        }
        .into(),
        io::ErrorKind::PermissionDenied => anyhow!(
            "cannot connect to {}: permission denied; needs root (the control socket is mode 0600)",
            path.display()
        ),
        _ => anyhow!("cannot connect to {}: {e}", path.display()),
    }
}
