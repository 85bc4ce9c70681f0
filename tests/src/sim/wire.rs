//! Byte-level pieces around opensrv-mysql: the access-denied fix-up, the hang gate, and
//! the raw "too many connections" refusal.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

/// Error 1698 (ER_ACCESS_DENIED_NO_PASSWORD_ERROR), little-endian, after the 0xFF marker.
const OPENSRV_AUTH_ERROR: [u8; 3] = [0xff, 0xa2, 0x06];
const ACCESS_DENIED: u16 = 1045;
const TOO_MANY_CONNECTIONS: u16 = 1040;

/// The message to send in place of opensrv's, set by the shim when a password check fails.
pub type Denial = Arc<Mutex<Option<String>>>;

/// Rewrites opensrv's auth-failure ERR packet into MySQL's.
///
/// opensrv-mysql 0.7 answers a failed password check with a hard-coded error 1698
/// ("Authenticate failed, …"), where MySQL answers 1045 `Access denied for user 'u'@'h'
/// (using password: YES)`, SQLSTATE 28000, and the agent under test must see what MySQL
/// sends. opensrv offers no hook for that packet, so this writer watches the packets of
/// the connection phase (until the first OK or ERR, after which it is a plain pass-through)
/// and replaces that one packet, keeping its sequence number.
pub struct AccessDeniedFix<W> {
    inner: W,
    denial: Denial,
    in_handshake: bool,
    /// Bytes of a packet not yet complete.
    partial: Vec<u8>,
    /// Bytes accepted from opensrv and not yet written to `inner`.
    out: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> AccessDeniedFix<W> {
    pub fn new(inner: W, denial: Denial) -> Self {
        AccessDeniedFix {
            inner,
            denial,
            in_handshake: true,
            partial: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Moves every complete packet from `partial` to `out`, fixing the auth error.
    fn take_packets(&mut self) {
        while self.in_handshake && self.partial.len() >= 4 {
            let len =
                u32::from_le_bytes([self.partial[0], self.partial[1], self.partial[2], 0]) as usize;
            if self.partial.len() < 4 + len {
                return;
            }
            let packet: Vec<u8> = self.partial.drain(..4 + len).collect();
            let payload = &packet[4..];
            // OK (0x00) or ERR (0xFF) ends the connection phase.
            self.in_handshake = !matches!(payload.first(), Some(0x00 | 0xff));
            if payload.starts_with(&OPENSRV_AUTH_ERROR) {
                let message = self.denial.lock().unwrap().take();
                let message = message.unwrap_or_else(|| "Access denied".to_owned());
                self.out.extend(err_packet(
                    packet[3],
                    ACCESS_DENIED,
                    Some(b"28000"),
                    &message,
                ));
            } else {
                self.out.extend_from_slice(&packet);
            }
        }
        if !self.in_handshake {
            self.out.append(&mut self.partial);
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for AccessDeniedFix<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.in_handshake && this.out.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // Buffer; the bytes go out on flush (opensrv flushes after every reply).
        this.partial.extend_from_slice(buf);
        this.take_packets();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Whether a member's mysqld is hung (see [`super::Endpoint::Hung`]).
pub type HangSwitch = watch::Receiver<bool>;

/// A reader that reads nothing while mysqld is hung, so that no command (queries, pings,
/// the handshake reply) is answered until it is unhung.
pub struct HangGate<R> {
    inner: R,
    hung: HangSwitch,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<R> HangGate<R> {
    pub fn new(inner: R, hung: HangSwitch) -> Self {
        HangGate {
            inner,
            hung,
            waiting: None,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HangGate<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(waiting) = this.waiting.as_mut() {
                ready!(waiting.as_mut().poll(cx));
                this.waiting = None;
            }
            if !*this.hung.borrow() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.waiting = Some(Box::pin(unhung(this.hung.clone())));
        }
    }
}

/// Resolves once the member is no longer hung (or never, if the group is gone: the
/// connection is then dropped with it).
pub async fn unhung(mut hung: HangSwitch) {
    if hung.wait_for(|h| !*h).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// An ERR packet: 0xFF, code, optional `#` + SQLSTATE, message.
pub fn err_packet(seq: u8, code: u16, sqlstate: Option<&[u8; 5]>, message: &str) -> Vec<u8> {
    let mut payload = vec![0xff];
    payload.extend_from_slice(&code.to_le_bytes());
    if let Some(state) = sqlstate {
        payload.push(b'#');
        payload.extend_from_slice(state);
    }
    payload.extend_from_slice(message.as_bytes());
    let mut packet = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    packet.push(seq);
    packet.extend(payload);
    packet
}

/// Refuses a new connection as a full mysqld does: error 1040 as the very first packet.
/// Sent before the client's capabilities are known, so without SQLSTATE, like MySQL.
pub async fn refuse_too_many<S: AsyncWrite + Unpin>(stream: &mut S) -> io::Result<()> {
    let packet = err_packet(0, TOO_MANY_CONNECTIONS, None, "Too many connections");
    stream.write_all(&packet).await?;
    stream.flush().await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        p.push(seq);
        p.extend_from_slice(payload);
        p
    }

    #[tokio::test]
    async fn rewrites_only_the_auth_error_of_the_handshake() {
        let denial: Denial = Arc::new(Mutex::new(Some("Access denied for user 'u'".into())));
        let mut w = AccessDeniedFix::new(Vec::new(), denial);
        let greeting = packet(0, b"\x0a8.0.36-sim\0");
        let mut opensrv_err = OPENSRV_AUTH_ERROR.to_vec();
        opensrv_err.extend_from_slice(b"#28000Authenticate failed");
        let err = packet(2, &opensrv_err);
        // Split writes must not matter.
        w.write_all(&greeting[..3]).await.unwrap();
        w.write_all(&greeting[3..]).await.unwrap();
        w.write_all(&err).await.unwrap();
        w.flush().await.unwrap();
        let mut expected = greeting.clone();
        expected.extend(err_packet(
            2,
            1045,
            Some(b"28000"),
            "Access denied for user 'u'",
        ));
        assert_eq!(w.inner, expected);
    }

    #[tokio::test]
    async fn passes_everything_after_ok() {
        let mut w = AccessDeniedFix::new(Vec::new(), Arc::default());
        let ok = packet(2, &[0, 0, 0, 2, 0, 0, 0]);
        let mut later = OPENSRV_AUTH_ERROR.to_vec();
        later.extend_from_slice(b"#HY000x");
        let later = packet(1, &later);
        w.write_all(&ok).await.unwrap();
        w.write_all(&later).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.inner, [ok, later].concat());
    }

    #[test]
    fn too_many_connections_packet() {
        let p = err_packet(0, 1040, None, "Too many connections");
        assert_eq!(&p[3..7], &[0, 0xff, 0x10, 0x04]);
        assert_eq!(p[0] as usize, p.len() - 4);
    }
}
