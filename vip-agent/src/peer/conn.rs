//! What the server and the client share on a socket: reading one frame, fresh nonces.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::wire::{self, FrameError, HEADER_LEN, NONCE_LEN, Nonce};

#[derive(Debug)]
pub(crate) enum ReadError {
    /// The other side closed before sending a byte (a port probe, a busy server).
    Closed,
    Frame(FrameError),
    Io(std::io::Error),
}

/// Reads one frame. The header is read and checked first, so an oversized length is
/// refused before anything is allocated for it; the buffer is then exactly the frame.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]).await.map_err(ReadError::Io)? {
            0 if got == 0 => return Err(ReadError::Closed),
            0 => return Err(ReadError::Frame(FrameError::Truncated)),
            n => got += n,
        }
    }
    let total = wire::needed(&header).map_err(ReadError::Frame)?;
    let mut frame = vec![0u8; total];
    frame[..HEADER_LEN].copy_from_slice(&header);
    match r.read_exact(&mut frame[HEADER_LEN..]).await {
        Ok(_) => Ok(frame),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ReadError::Frame(FrameError::Truncated))
        }
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// A fresh nonce from the OS's random source.
pub(crate) fn fresh_nonce() -> std::io::Result<Nonce> {
    let mut bytes = [0u8; NONCE_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|e| std::io::Error::other(format!("no random bytes from the OS: {e}")))?;
    Ok(Nonce(bytes))
}
