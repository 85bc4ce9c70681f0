//! The fallback reset: destroys TCP sockets whose local address is a VIP with netlink
//! `SOCK_DESTROY` over `inet_diag`, as `ss -K` does.
//!
//! The main path is the eBPF `iter/tcp` program calling `bpf_sock_destroy`; this one works
//! without it, on any kernel built with `CONFIG_INET_DIAG_DESTROY`. It needs
//! `CAP_NET_ADMIN` in the namespace's owning user namespace.
//!
//! Two steps, both in the **caller's network namespace** (sock_diag sees only the
//! namespace its netlink socket was made in):
//!
//! 1. a dump (`SOCK_DIAG_BY_FAMILY`, `NLM_F_DUMP`) of the TCP sockets of the address's
//!    family in every state but `LISTEN`, `TIME_WAIT`, `SYN_SENT` and `CLOSE`, kept when
//!    their local address (and port, if given) match. For an IPv4 address the IPv6 table
//!    is dumped too, for dual-stack sockets with a v4-mapped local address
//!    (`::ffff:a.b.c.d`);
//! 2. one `SOCK_DESTROY` per kept socket, naming it by its exact `inet_diag_sockid`
//!    (cookie included, so a socket that closed and whose 4-tuple was reused is not hit),
//!    with `NLM_F_ACK`. The kernel aborts it as `tcp_abort` does: the peer gets a reset
//!    and the local owner sees `ECONNABORTED`.
//!
//! Sockets opened between the dump and the destroys are not seen: the caller must first
//! stop new connections to the address (the guard), then reset, then unbind.
//!
//! The wire encoding ([`dump_request`], [`destroy_request`], [`parse_replies`]) is pure
//! and tested byte by byte; only [`reset_local`] and [`list_local`] do I/O.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::Parseable;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_packet_sock_diag::{AF_INET, AF_INET6, IPPROTO_TCP, SockDiagDestroy, SockDiagMessage};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

use super::Target;

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `SOCK_DESTROY` (linux/sock_diag.h).
pub const SOCK_DESTROY: u16 = 21;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;

/// The receive buffer: a dump datagram is at most 32 KiB (the kernel caps netlink dump
/// skbs there); anything longer is reported as truncated rather than read past.
const RECV_BUF: usize = 64 * 1024;
/// How long one recv may wait for the kernel before the whole call gives up.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Sockets kept from one dump at most (a bound on memory if the kernel misbehaves).
const MAX_SOCKETS: usize = 1 << 20;

/// The states dumped: every one a client could be waiting in, so neither `LISTEN` (the
/// listener is not a connection) nor `TIME_WAIT` (nothing waits on it), `SYN_SENT` (not
/// accepted on the VIP) or `CLOSE`.
pub fn states() -> StateFlags {
    StateFlags::ESTABLISHED
        | StateFlags::SYN_RECV
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// One TCP connection: its 4-tuple, its state, and the kernel's id for destroying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The TCP state number (`TCP_ESTABLISHED` = 1, …), see [`Conn::state_name`].
    pub state: u8,
    family: u8,
    id: SocketId,
}

impl Conn {
    /// `ESTABLISHED`, `SYN_RECV`, … as `ss` names them.
    pub fn state_name(&self) -> &'static str {
        super::track::tcp_state(self.state)
    }
}

impl fmt::Display for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)
    }
}

/// What [`reset_local`] did.
#[derive(Debug, Default)]
pub struct Reset {
    /// Sockets the kernel destroyed.
    pub destroyed: usize,
    /// Sockets gone between the dump and their destroy (`ENOENT`): closed meanwhile.
    pub gone: usize,
    /// Sockets the kernel refused to destroy, as `local -> remote` and the error.
    pub failed: Vec<(String, io::Error)>,
}

/// Why [`reset_local`] or [`list_local`] could do nothing (or stopped).
#[derive(Debug)]
pub enum ResetError {
    /// `EPERM`: destroying sockets needs `CAP_NET_ADMIN`.
    NotPermitted { destroyed: usize },
    /// `EOPNOTSUPP`: the kernel was built without `CONFIG_INET_DIAG_DESTROY`.
    NotSupported,
    /// The sock_diag netlink socket could not be opened or used.
    Netlink(io::Error),
    /// The kernel refused the dump (e.g. `inet_diag` / `tcp_diag` missing).
    Dump { family: u8, error: io::Error },
    /// The kernel's reply could not be read.
    Protocol(String),
}

impl fmt::Display for ResetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetError::NotPermitted { destroyed } => write!(
                f,
                "the kernel refused SOCK_DESTROY (EPERM) after {destroyed} socket(s): \
                 destroying sockets needs CAP_NET_ADMIN; run the agent as root or grant it \
                 CAP_NET_ADMIN (AmbientCapabilities=CAP_NET_ADMIN in its unit)"
            ),
            ResetError::NotSupported => write!(
                f,
                "the kernel does not support SOCK_DESTROY (EOPNOTSUPP): it was built without \
                 CONFIG_INET_DIAG_DESTROY; use a kernel with it (or the eBPF reset, \
                 bpf_sock_destroy, on 6.5 and later)"
            ),
            ResetError::Netlink(e) => write!(f, "sock_diag netlink socket: {e}"),
            ResetError::Dump { family, error } => write!(
                f,
                "the kernel refused the {} TCP socket dump: {error} (is the tcp_diag module \
                 available? CONFIG_INET_DIAG and CONFIG_INET_TCP_DIAG)",
                family_name(*family)
            ),
            ResetError::Protocol(what) => write!(f, "unexpected sock_diag reply: {what}"),
        }
    }
}

impl std::error::Error for ResetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResetError::Netlink(e) | ResetError::Dump { error: e, .. } => Some(e),
            _ => None,
        }
    }
}

fn family_name(family: u8) -> &'static str {
    match family {
        AF_INET => "IPv4",
        AF_INET6 => "IPv6",
        _ => "unknown-family",
    }
}

// ---------------------------------------------------------------------------------------
// Encoding (pure)

fn encode(message_type: u16, flags: u16, seq: u32, payload: SockDiagMessage) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let buf = if message_type == SOCK_DESTROY {
        let mut msg =
            NetlinkMessage::new(header, NetlinkPayload::from(SockDiagDestroy::new(payload)));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    } else {
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(payload));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    };
    debug_assert_eq!(
        u16::from_ne_bytes([buf[4], buf[5]]),
        message_type,
        "netlink message type"
    );
    buf
}

/// The dump request: `nlmsghdr` (type 20, `NLM_F_REQUEST | NLM_F_DUMP`) then an
/// `inet_diag_req_v2` for TCP in `family` with [`states`] and a zero socket id.
pub fn dump_request(family: u8, seq: u32) -> Vec<u8> {
    let socket_id = if family == AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    let req = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: states(),
        socket_id,
    };
    encode(
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        SockDiagMessage::InetRequest(req),
    )
}

/// The destroy request for one dumped socket: `nlmsghdr` (type 21,
/// `NLM_F_REQUEST | NLM_F_ACK`) then an `inet_diag_req_v2` carrying the socket's exact
/// `inet_diag_sockid` (ports, addresses, interface, cookie) as the dump gave it.
pub fn destroy_request(conn: &Conn, seq: u32) -> Vec<u8> {
    let req = InetRequest {
        family: conn.family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id: conn.id.clone(),
    };
    encode(
        SOCK_DESTROY,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        SockDiagMessage::InetRequest(req),
    )
}

/// One message of a reply datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A dumped socket.
    Socket(Conn),
    /// `NLMSG_DONE`: the end of a dump, with the kernel's status (0 or `-errno`).
    Done(i32),
    /// `NLMSG_ERROR`: 0 is an ACK, else `-errno`.
    Error(i32),
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

fn conn_from(header: InetResponseHeader) -> Result<Conn, String> {
    let id = header.socket_id;
    let (local, remote) = match (header.family, id.source_address, id.destination_address) {
        (AF_INET, IpAddr::V4(_), IpAddr::V4(_)) | (AF_INET6, IpAddr::V6(_), IpAddr::V6(_)) => (
            SocketAddr::new(id.source_address, id.source_port),
            SocketAddr::new(id.destination_address, id.destination_port),
        ),
        (family, _, _) => return Err(format!("socket of address family {family} in a TCP dump")),
    };
    Ok(Conn {
        local,
        remote,
        state: header.state,
        family: header.family,
        id,
    })
}

/// Splits one datagram into its messages, keeping those of sequence `seq`. Never
/// panics: a length that runs past the datagram or a short payload is an error.
pub fn parse_replies(buf: &[u8], seq: u32) -> Result<Vec<Reply>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let (Some(len), Some(kind), Some(msg_seq)) =
            (read_u32(rest, 0), read_u16(rest, 4), read_u32(rest, 8))
        else {
            return Err(format!(
                "{} stray byte(s) after the last message",
                rest.len()
            ));
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(format!(
                "message length {len} with {} byte(s) left in the datagram",
                rest.len()
            ));
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        // NLMSG_ALIGN: the next message starts on a 4-byte boundary.
        at += len.div_ceil(4) * 4;
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_NOOP => {}
            NLMSG_DONE => out.push(Reply::Done(read_u32(payload, 0).unwrap_or(0) as i32)),
            NLMSG_ERROR => {
                let code = read_u32(payload, 0).ok_or("NLMSG_ERROR without an error code")?;
                out.push(Reply::Error(code as i32));
            }
            SOCK_DIAG_BY_FAMILY => {
                let header = InetResponseHeader::parse(payload)
                    .map_err(|e| format!("inet_diag_msg: {e}"))?;
                out.push(Reply::Socket(conn_from(header)?));
            }
            other => return Err(format!("message type {other} in a sock_diag reply")),
        }
    }
    Ok(out)
}

/// Whether a socket's local address and port are the ones asked for. An IPv4 address
/// also matches a dual-stack socket's v4-mapped local address.
pub fn matches(conn: &Conn, addr: IpAddr, port: Option<u16>) -> bool {
    let local = conn.local.ip();
    let same = local == addr
        || matches!((local, addr), (IpAddr::V6(l), IpAddr::V4(a)) if l == a.to_ipv6_mapped());
    same && port.is_none_or(|p| p == conn.local.port())
}

// ---------------------------------------------------------------------------------------
// I/O

struct DiagSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl DiagSocket {
    fn open() -> Result<DiagSocket, ResetError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(ResetError::Netlink)?;
        socket.bind_auto().map_err(ResetError::Netlink)?;
        socket
            .connect(&NlAddr::new(0, 0))
            .map_err(ResetError::Netlink)?;
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: a valid fd and a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(ResetError::Netlink(io::Error::last_os_error()));
        }
        Ok(DiagSocket {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, request: &[u8]) -> Result<(), ResetError> {
        let sent = self.socket.send(request, 0).map_err(ResetError::Netlink)?;
        if sent != request.len() {
            return Err(ResetError::Protocol(format!(
                "sent {sent} of {} bytes",
                request.len()
            )));
        }
        Ok(())
    }

    /// One datagram's messages of sequence `seq`.
    fn recv(&mut self, seq: u32) -> Result<Vec<Reply>, ResetError> {
        let n = loop {
            let mut slice = &mut self.buf[..];
            match self.socket.recv(&mut slice, libc::MSG_TRUNC) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(ResetError::Netlink(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {RECV_TIMEOUT:?}"),
                    )));
                }
                Err(e) => return Err(ResetError::Netlink(e)),
            }
        };
        if n > self.buf.len() {
            return Err(ResetError::Protocol(format!(
                "datagram of {n} bytes truncated to {}",
                self.buf.len()
            )));
        }
        parse_replies(&self.buf[..n], seq).map_err(ResetError::Protocol)
    }

    /// Dumps `family`'s TCP sockets and keeps those `keep` accepts.
    fn dump(
        &mut self,
        family: u8,
        mut keep: impl FnMut(&Conn) -> bool,
        into: &mut Vec<Conn>,
    ) -> Result<(), ResetError> {
        let seq = self.next_seq();
        self.send(&dump_request(family, seq))?;
        loop {
            for reply in self.recv(seq)? {
                match reply {
                    Reply::Socket(conn) => {
                        if keep(&conn) {
                            if into.len() >= MAX_SOCKETS {
                                return Err(ResetError::Protocol(format!(
                                    "more than {MAX_SOCKETS} sockets in the dump"
                                )));
                            }
                            into.push(conn);
                        }
                    }
                    Reply::Done(0) => return Ok(()),
                    Reply::Done(code) | Reply::Error(code) => {
                        return Err(ResetError::Dump {
                            family,
                            error: io::Error::from_raw_os_error(code.saturating_neg()),
                        });
                    }
                }
            }
        }
    }

    /// Destroys one socket: `Ok(None)` when the kernel ACKed, `Ok(Some(errno))` when it
    /// refused.
    fn destroy(&mut self, conn: &Conn) -> Result<Option<i32>, ResetError> {
        let seq = self.next_seq();
        self.send(&destroy_request(conn, seq))?;
        loop {
            // The answer is one message; a datagram of other sequences only is skipped.
            let Some(reply) = self.recv(seq)?.into_iter().next() else {
                continue;
            };
            return match reply {
                Reply::Error(0) => Ok(None),
                Reply::Error(code) => Ok(Some(code.saturating_neg())),
                other => Err(ResetError::Protocol(format!(
                    "{other:?} in answer to SOCK_DESTROY"
                ))),
            };
        }
    }
}

/// Whether a socket is one `target` names.
pub fn targeted(conn: &Conn, target: Target) -> bool {
    match target {
        Target::Local(addr, port) => matches(conn, addr, port),
        Target::Port(port) => conn.local.port() == port,
    }
}

/// The families to dump: an IPv4 address is also a v4-mapped IPv6 one.
fn families(target: Target) -> &'static [u8] {
    match target {
        Target::Local(IpAddr::V6(_), _) => &[AF_INET6],
        _ => &[AF_INET, AF_INET6],
    }
}

fn collect(diag: &mut DiagSocket, target: Target) -> Result<Vec<Conn>, ResetError> {
    let mut conns = Vec::new();
    for &family in families(target) {
        diag.dump(family, |c| targeted(c, target), &mut conns)?;
    }
    Ok(conns)
}

/// The TCP connections (not listeners, not `TIME_WAIT`) whose local address is `addr`
/// (and local port `port`, if given), in the caller's network namespace.
pub fn list_local(addr: IpAddr, port: Option<u16>) -> Result<Vec<Conn>, ResetError> {
    let mut diag = DiagSocket::open()?;
    collect(&mut diag, Target::Local(addr, port))
}

/// Destroys every TCP connection whose local address is `addr` (and local port `port`,
/// if given) in the caller's network namespace: their peers get a reset at once.
pub fn reset_local(addr: IpAddr, port: Option<u16>) -> Result<Reset, ResetError> {
    reset(Target::Local(addr, port))
}

/// Destroys every TCP connection `target` names in the caller's network namespace.
///
/// Stops with [`ResetError::NotPermitted`] or [`ResetError::NotSupported`] at the first
/// destroy refused for lack of `CAP_NET_ADMIN` or of kernel support; other refusals are
/// counted in [`Reset::failed`] and the rest still go.
pub fn reset(target: Target) -> Result<Reset, ResetError> {
    let mut diag = DiagSocket::open()?;
    let conns = collect(&mut diag, target)?;
    let mut reset = Reset::default();
    for conn in &conns {
        match diag.destroy(conn)? {
            None => reset.destroyed += 1,
            Some(libc::ENOENT) => reset.gone += 1,
            Some(libc::EPERM) => {
                return Err(ResetError::NotPermitted {
                    destroyed: reset.destroyed,
                });
            }
            Some(libc::EOPNOTSUPP) => return Err(ResetError::NotSupported),
            Some(errno) => reset
                .failed
                .push((conn.to_string(), io::Error::from_raw_os_error(errno))),
        }
    }
    Ok(reset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn hdr(buf: &[u8]) -> (u32, u16, u16, u32, u32) {
        (
            read_u32(buf, 0).unwrap(),
            read_u16(buf, 4).unwrap(),
            read_u16(buf, 6).unwrap(),
            read_u32(buf, 8).unwrap(),
            read_u32(buf, 12).unwrap(),
        )
    }

    /// The states mask of linux/tcp_states.h: bits 1, 3, 4, 5, 8, 9, 11.
    const STATES: u32 = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);

    #[test]
    fn states_leave_out_listen_time_wait_syn_sent_and_close() {
        assert_eq!(states().bits(), STATES);
        assert_eq!(STATES, 0xb3a);
    }

    #[test]
    fn dump_request_is_nlmsghdr_then_inet_diag_req_v2() {
        for family in [AF_INET, AF_INET6] {
            let buf = dump_request(family, 7);
            // 16 (nlmsghdr) + 8 (family, protocol, ext, pad, states) + 48 (sockid).
            assert_eq!(buf.len(), 72);
            assert_eq!(hdr(&buf), (72, 20, 0x301, 7, 0));
            assert_eq!(&buf[16..20], &[family, 6, 0, 0]);
            assert_eq!(read_u32(&buf, 20), Some(STATES));
            assert!(buf[24..].iter().all(|&b| b == 0), "a zero socket id");
        }
    }

    fn conn4() -> Conn {
        let mut id = SocketId::new_v4();
        id.source_port = 3307;
        id.destination_port = 0xabcd;
        id.source_address = Ipv4Addr::new(198, 51, 100, 77).into();
        id.destination_address = Ipv4Addr::new(198, 51, 100, 9).into();
        id.interface_id = 0x0102_0304;
        id.cookie = [1, 2, 3, 4, 5, 6, 7, 8];
        conn_from(InetResponseHeader {
            family: AF_INET,
            state: 1,
            timer: None,
            socket_id: id,
            recv_queue: 0,
            send_queue: 0,
            uid: 0,
            inode: 0,
        })
        .unwrap()
    }

    #[test]
    fn destroy_request_carries_the_exact_socket_id() {
        let conn = conn4();
        let buf = destroy_request(&conn, 0xdead_beef);
        assert_eq!(buf.len(), 72);
        assert_eq!(hdr(&buf), (72, 21, 0x5, 0xdead_beef, 0));
        assert_eq!(&buf[16..20], &[AF_INET, 6, 0, 0]);
        // inet_diag_sockid at 24: sport, dport (network order), src[16], dst[16], if, cookie.
        let id = &buf[24..];
        assert_eq!(&id[0..2], &3307u16.to_be_bytes());
        assert_eq!(&id[2..4], &[0xab, 0xcd]);
        assert_eq!(&id[4..8], &[198, 51, 100, 77]);
        assert!(id[8..20].iter().all(|&b| b == 0));
        assert_eq!(&id[20..24], &[198, 51, 100, 9]);
        assert!(id[24..36].iter().all(|&b| b == 0));
        assert_eq!(&id[36..40], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&id[40..48], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    /// An `inet_diag_msg` (72 bytes) as the kernel sends it, in a netlink message.
    fn diag_msg(family: u8, state: u8, src: [u8; 16], sport: u16, seq: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, state, 0, 0]);
        m.extend_from_slice(&sport.to_be_bytes());
        m.extend_from_slice(&50000u16.to_be_bytes());
        m.extend_from_slice(&src);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 9]);
        m.extend_from_slice(&dst);
        m.extend_from_slice(&0u32.to_ne_bytes()); // if
        m.extend_from_slice(&[9; 8]); // cookie
        m.extend_from_slice(&[0; 20]); // expires, rqueue, wqueue, uid, inode
        m.extend_from_slice(&[8, 0, 99, 0, 0, 0, 0, 0]); // an unknown attribute
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    fn control(kind: u16, code: i32, seq: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m
    }

    #[test]
    fn a_dump_datagram_parses_into_sockets_then_done() {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[198, 51, 100, 77]);
        let mut buf = diag_msg(AF_INET, 1, src, 3307, 4);
        buf.extend(diag_msg(AF_INET, 8, src, 3307, 3)); // another sequence: skipped
        buf.extend(control(NLMSG_DONE, 0, 4));
        let replies = parse_replies(&buf, 4).unwrap();
        assert_eq!(replies.len(), 2);
        let Reply::Socket(conn) = &replies[0] else {
            panic!("{replies:?}")
        };
        assert_eq!(conn.local, "198.51.100.77:3307".parse().unwrap());
        assert_eq!(conn.remote, "10.0.0.9:50000".parse().unwrap());
        assert_eq!(conn.state_name(), "ESTABLISHED");
        assert_eq!(conn.id.cookie, [9; 8]);
        assert_eq!(replies[1], Reply::Done(0));
        // The destroy names the socket exactly as dumped.
        let req = destroy_request(conn, 1);
        assert_eq!(&req[24..72], &buf[20..68]);
    }

    #[test]
    fn errors_and_acks() {
        let mut buf = control(NLMSG_ERROR, 0, 1);
        buf.extend(control(NLMSG_ERROR, -libc::ENOENT, 1));
        buf.extend(control(NLMSG_DONE, -libc::EPERM, 1));
        assert_eq!(
            parse_replies(&buf, 1).unwrap(),
            [
                Reply::Error(0),
                Reply::Error(-libc::ENOENT),
                Reply::Done(-libc::EPERM)
            ]
        );
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[1, 2, 3, 4]);
        let good = diag_msg(AF_INET, 1, src, 1, 1);
        // Every truncation, and lengths that lie.
        for cut in 0..good.len() {
            let _ = parse_replies(&good[..cut], 1);
        }
        for len in [0u32, 1, 15, 16, 17, 71, 1000, u32::MAX] {
            let mut bad = good.clone();
            bad[..4].copy_from_slice(&len.to_ne_bytes());
            let _ = parse_replies(&bad, 1);
        }
        // A short inet_diag_msg and an unknown family are errors.
        let mut short = control(SOCK_DIAG_BY_FAMILY, 0, 1);
        short[16] = AF_INET;
        assert!(parse_replies(&short, 1).is_err());
        let mut odd = good.clone();
        odd[16] = 1; // AF_UNIX
        assert!(parse_replies(&odd, 1).is_err());
        assert!(parse_replies(&[0; 3], 1).is_err());
    }

    #[test]
    fn v4_matches_v4_mapped_local_addresses() {
        let v4: IpAddr = Ipv4Addr::new(198, 51, 100, 77).into();
        let mut conn = conn4();
        assert!(matches(&conn, v4, None));
        assert!(matches(&conn, v4, Some(3307)));
        assert!(!matches(&conn, v4, Some(3306)));
        assert!(!matches(&conn, Ipv4Addr::new(198, 51, 100, 9).into(), None));
        conn.local = SocketAddr::new(
            Ipv4Addr::new(198, 51, 100, 77).to_ipv6_mapped().into(),
            3307,
        );
        assert!(matches(&conn, v4, None));
        let v6: IpAddr = "2001:db8::77".parse::<Ipv6Addr>().unwrap().into();
        assert!(!matches(&conn, v6, None));
        conn.local = SocketAddr::new(v6, 3307);
        assert!(matches(&conn, v6, Some(3307)));
        assert!(!matches(&conn, v4, None));
    }

    #[test]
    fn errors_name_the_fix() {
        let eperm = ResetError::NotPermitted { destroyed: 0 }.to_string();
        assert!(eperm.contains("CAP_NET_ADMIN"), "{eperm}");
        let eopnotsupp = ResetError::NotSupported.to_string();
        assert!(
            eopnotsupp.contains("CONFIG_INET_DIAG_DESTROY"),
            "{eopnotsupp}"
        );
    }
}
