//! The peer frame and its codec. Pure: bytes in, bytes out, no I/O, no clock.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "VIPA"
//!      4     1  version (2)
//!      5     1  kind: 1 challenge, 2 request, 3 response
//!      6     2  reserved, zero
//!      8     4  body length, big-endian, at most MAX_BODY
//!     12     n  body: JSON (Challenge, RequestEnvelope or ResponseEnvelope by kind)
//!   12+n    32  HMAC-SHA256 under the peer key of bytes 0..12+n
//! ```
//!
//! Decoding checks, in order: the header (so an oversized length is refused before a byte
//! of the body is read or allocated), then the MAC in constant time (so nothing an
//! unauthenticated sender wrote reaches the JSON parser), then the JSON. No input panics.

use std::fmt;

use hmac::Mac;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::key::Key;
use super::{Request, Response};

pub const MAGIC: [u8; 4] = *b"VIPA";
/// 2: a response names the answering member and the request it answers.
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 12;
pub const MAC_LEN: usize = 32;
/// The largest body accepted: 9 members with a read VIP each need under 1 KiB.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest frame on the wire.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_BODY + MAC_LEN;
pub const NONCE_LEN: usize = 16;
pub const DIGEST_LEN: usize = 32;

/// What a frame carries; part of the MACed header, so it cannot be swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Challenge = 1,
    Request = 2,
    Response = 3,
}

impl Kind {
    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Challenge),
            2 => Some(Kind::Request),
            3 => Some(Kind::Response),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Challenge => "challenge",
            Kind::Request => "request",
            Kind::Response => "response",
        }
    }
}

/// A fixed number of bytes, hex on the wire (a nonce, a digest).
macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub [u8; $len]);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = String::deserialize(d)?;
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(&text, &mut bytes).map_err(|e| {
                    serde::de::Error::custom(format_args!(
                        "{} is {} hex digits: {e}",
                        stringify!($name).to_lowercase(),
                        $len * 2
                    ))
                })?;
                Ok($name(bytes))
            }
        }
    };
}

hex_bytes!(
    /// 16 random bytes. Not secret: it only has to be fresh.
    Nonce,
    NONCE_LEN
);

hex_bytes!(
    /// SHA-256 of a whole request frame, as sent and as received: binds an answer to
    /// the one request it answers.
    Digest,
    DIGEST_LEN
);

impl Digest {
    /// The digest of a frame's bytes (header, body and MAC).
    pub fn of(frame: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(sha2::Sha256::digest(frame).into())
    }
}

/// Server → client, first thing on a connection: the nonce the request must echo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    pub nonce: Nonce,
}

/// Client → server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEnvelope {
    /// The sender's member uuid (the agent checks per-sender stamps against it).
    pub from: String,
    /// The server's challenge nonce, echoed: a request frame is good on one connection only.
    pub nonce: Nonce,
    /// Fresh from the client: the response must echo it.
    pub client_nonce: Nonce,
    pub request: Request,
}

/// Server → client. Under the MAC with the answer: for which connection (both nonces),
/// for which request (its digest) and from which member. Without these an on-path
/// attacker could hand a client another member's genuine answer, or an answer to
/// another request, as if it were the one asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseEnvelope {
    /// The request's `client_nonce`, echoed.
    pub nonce: Nonce,
    /// The server's own challenge nonce of this connection.
    pub challenge: Nonce,
    /// The answering member's uuid (its server_uuid); empty if it never read its own.
    pub member: String,
    /// [`Digest::of`] the request frame this answers.
    pub request: Digest,
    pub response: Response,
}

/// What the client knows a response must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected<'a> {
    pub client_nonce: Nonce,
    pub challenge: Nonce,
    pub request: Digest,
    /// The member the client meant to ask.
    pub member: &'a str,
}

/// A decoded frame body; its variant is the frame's kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Challenge(Challenge),
    Request(RequestEnvelope),
    Response(ResponseEnvelope),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Challenge(_) => Kind::Challenge,
            Body::Request(_) => Kind::Request,
            Body::Response(_) => Kind::Response,
        }
    }
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The input ended before the frame did.
    Truncated,
    Oversized {
        len: usize,
        max: usize,
    },
    BadMagic,
    BadVersion(u8),
    BadKind(u8),
    /// The MAC does not match: a different key, or tampered bytes.
    Unauthenticated,
    /// Authenticated but not understood: JSON or field errors, wrong kind, trailing bytes.
    Malformed(String),
    /// Authenticated, but it echoes another connection's nonce.
    Replayed,
    /// Authenticated, for this connection, but it answers another request.
    OtherRequest,
    /// Authenticated, but another member answered than the one asked.
    WrongMember {
        expected: String,
        got: String,
    },
}

impl FrameError {
    /// A short stable name, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Truncated => "truncated",
            FrameError::Oversized { .. } => "oversized",
            FrameError::BadMagic
            | FrameError::BadVersion(_)
            | FrameError::BadKind(_)
            | FrameError::Malformed(_) => "malformed",
            FrameError::Unauthenticated => "unauthenticated",
            FrameError::Replayed | FrameError::OtherRequest => "replayed",
            FrameError::WrongMember { .. } => "wrong_member",
        }
    }

    fn malformed(detail: impl fmt::Display) -> FrameError {
        FrameError::Malformed(clip(&detail.to_string()))
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated => write!(f, "the frame ends early (truncated)"),
            FrameError::Oversized { len, max } => write!(
                f,
                "the frame body is {len} bytes, more than the {max}-byte limit"
            ),
            FrameError::BadMagic => write!(f, "not a vip-agent peer frame (bad magic)"),
            FrameError::BadVersion(v) => write!(
                f,
                "peer protocol version {v}; this agent speaks version {VERSION}"
            ),
            FrameError::BadKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::Unauthenticated => {
                write!(f, "the frame fails authentication (a different peer key?)")
            }
            FrameError::Malformed(detail) => write!(f, "malformed frame: {detail}"),
            FrameError::Replayed => write!(
                f,
                "the frame does not echo this connection's nonce (replayed or stale)"
            ),
            FrameError::OtherRequest => write!(
                f,
                "the answer is for another request than the one sent on this connection"
            ),
            FrameError::WrongMember { expected, got } => write!(
                f,
                "the answer comes from member {:?}, not {expected:?}, the member asked",
                clip(got)
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Error details end up in logs: keep them short and on one line.
fn clip(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// A checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub body_len: usize,
}

impl Header {
    /// The whole frame's length: header, body and MAC.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len + MAC_LEN
    }
}

/// Parses and checks the first [`HEADER_LEN`] bytes of `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<Header, FrameError> {
    let Some(h) = bytes.get(..HEADER_LEN) else {
        return Err(FrameError::Truncated);
    };
    if h[0..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if h[4] != VERSION {
        return Err(FrameError::BadVersion(h[4]));
    }
    let kind = Kind::from_byte(h[5]).ok_or(FrameError::BadKind(h[5]))?;
    if h[6..8] != [0, 0] {
        return Err(FrameError::malformed("reserved header bytes are not zero"));
    }
    let body_len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if body_len > MAX_BODY {
        return Err(FrameError::Oversized {
            len: body_len,
            max: MAX_BODY,
        });
    }
    Ok(Header { kind, body_len })
}

/// For a reader filling `buf` from a stream: the total bytes the frame at the start of
/// `buf` needs. [`HEADER_LEN`] while the header is incomplete, then the whole frame's
/// length (the header is checked first, so an oversized length fails here).
pub fn needed(buf: &[u8]) -> Result<usize, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(HEADER_LEN);
    }
    Ok(parse_header(buf)?.frame_len())
}

/// Frames raw body bytes: header, body, MAC. Low level: [`encode`] is the usual way in;
/// tests and the fuzzer use this to MAC bodies that are not valid JSON.
pub fn seal(kind: Kind, body: &[u8], key: &Key) -> Result<Vec<u8>, FrameError> {
    if body.len() > MAX_BODY {
        return Err(FrameError::Oversized {
            len: body.len(),
            max: MAX_BODY,
        });
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len() + MAC_LEN);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[VERSION, kind as u8, 0, 0]);
    // Fits: body.len() <= MAX_BODY < u32::MAX.
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    let mut mac = key.mac();
    mac.update(&frame);
    frame.extend_from_slice(&mac.finalize().into_bytes());
    Ok(frame)
}

/// Encodes and MACs a body. Fails only if the JSON is over [`MAX_BODY`].
pub fn encode(body: &Body, key: &Key) -> Result<Vec<u8>, FrameError> {
    let json = match body {
        Body::Challenge(b) => serde_json::to_vec(b),
        Body::Request(b) => serde_json::to_vec(b),
        Body::Response(b) => serde_json::to_vec(b),
    }
    .map_err(FrameError::malformed)?;
    seal(body.kind(), &json, key)
}

/// Decodes one whole frame (exactly: trailing bytes are refused).
pub fn decode(bytes: &[u8], key: &Key) -> Result<Body, FrameError> {
    let header = parse_header(bytes)?;
    let end = HEADER_LEN + header.body_len;
    let (Some(signed), Some(tag)) = (bytes.get(..end), bytes.get(end..end + MAC_LEN)) else {
        return Err(FrameError::Truncated);
    };
    if bytes.len() > end + MAC_LEN {
        return Err(FrameError::malformed(format_args!(
            "{} bytes after the frame",
            bytes.len() - end - MAC_LEN
        )));
    }
    let mut mac = key.mac();
    mac.update(signed);
    mac.verify_slice(tag)
        .map_err(|_| FrameError::Unauthenticated)?;
    let json = &signed[HEADER_LEN..];
    let body = match header.kind {
        Kind::Challenge => serde_json::from_slice(json).map(Body::Challenge),
        Kind::Request => serde_json::from_slice(json).map(Body::Request),
        Kind::Response => serde_json::from_slice(json).map(Body::Response),
    };
    body.map_err(|e| FrameError::malformed(format_args!("{} body: {e}", header.kind.name())))
}

fn unexpected(want: Kind, got: &Body) -> FrameError {
    FrameError::malformed(format_args!(
        "expected a {} frame, got a {}",
        want.name(),
        got.kind().name()
    ))
}

/// Decodes the frame a client reads first.
pub fn decode_challenge(bytes: &[u8], key: &Key) -> Result<Challenge, FrameError> {
    match decode(bytes, key)? {
        Body::Challenge(c) => Ok(c),
        other => Err(unexpected(Kind::Challenge, &other)),
    }
}

/// The longest member uuid accepted in `from` (a server_uuid is 36 characters).
pub const MAX_MEMBER_ID: usize = 64;

/// A member uuid as a peer may send it: at most [`MAX_MEMBER_ID`] ASCII letters, digits
/// and dashes (empty while the sender has not read its own view), so that what reaches
/// a log line or a refusal is short and plain.
pub fn check_member_id(field: &str, id: &str) -> Result<(), FrameError> {
    if id.len() > MAX_MEMBER_ID {
        return Err(FrameError::malformed(format_args!(
            "{field} is {} bytes; a member uuid is at most {MAX_MEMBER_ID}",
            id.len()
        )));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(FrameError::malformed(format_args!(
            "{field} holds characters a member uuid does not have"
        )));
    }
    Ok(())
}

/// Decodes a request; it must echo `challenge`, the nonce this connection was sent.
pub fn decode_request(
    bytes: &[u8],
    key: &Key,
    challenge: &Nonce,
) -> Result<RequestEnvelope, FrameError> {
    match decode(bytes, key)? {
        Body::Request(r) if r.nonce == *challenge => {
            check_member_id("from", &r.from)?;
            Ok(r)
        }
        Body::Request(_) => Err(FrameError::Replayed),
        other => Err(unexpected(Kind::Request, &other)),
    }
}

/// Decodes a response; it must be for this connection, this request and this member.
pub fn decode_response(
    bytes: &[u8],
    key: &Key,
    expected: &Expected<'_>,
) -> Result<ResponseEnvelope, FrameError> {
    let r = match decode(bytes, key)? {
        Body::Response(r) => r,
        other => return Err(unexpected(Kind::Response, &other)),
    };
    if r.nonce != expected.client_nonce || r.challenge != expected.challenge {
        return Err(FrameError::Replayed);
    }
    if r.request != expected.request {
        return Err(FrameError::OtherRequest);
    }
    if !r.member.eq_ignore_ascii_case(expected.member) {
        return Err(FrameError::WrongMember {
            expected: expected.member.to_string(),
            got: r.member,
        });
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Placement;
    use std::time::Duration;

    fn key() -> Key {
        Key::from_bytes(&[7; 32]).unwrap()
    }

    fn request(nonce: Nonce) -> Body {
        let placement = Placement {
            write: Some(("10.0.0.10".parse().unwrap(), "uuid-a".into())),
            read: [("10.0.0.11".parse().unwrap(), "uuid-b".into())]
                .into_iter()
                .collect(),
        };
        Body::Request(RequestEnvelope {
            from: "uuid-a".into(),
            nonce,
            client_nonce: Nonce([9; 16]),
            request: Request::Apply {
                stamp: 42,
                placement,
                reannounce: true,
            },
        })
    }

    fn all_bodies() -> Vec<Body> {
        vec![
            Body::Challenge(Challenge {
                nonce: Nonce([1; 16]),
            }),
            request(Nonce([1; 16])),
            Body::Request(RequestEnvelope {
                from: "u".into(),
                nonce: Nonce([0; 16]),
                client_nonce: Nonce([0xff; 16]),
                request: Request::Holdings,
            }),
            Body::Request(RequestEnvelope {
                from: "u".into(),
                nonce: Nonce([0; 16]),
                client_nonce: Nonce([0xff; 16]),
                request: Request::ReleaseWrite { stamp: u64::MAX },
            }),
            Body::Response(ResponseEnvelope {
                nonce: Nonce([2; 16]),
                challenge: Nonce([1; 16]),
                member: "uuid-b".into(),
                request: Digest([7; 32]),
                response: Response::Holdings {
                    vips: vec!["10.0.0.11".parse().unwrap(), "fd00::11".parse().unwrap()],
                },
            }),
            Body::Response(ResponseEnvelope {
                nonce: Nonce([2; 16]),
                challenge: Nonce([1; 16]),
                member: "uuid-b".into(),
                request: Digest([7; 32]),
                response: Response::Applied,
            }),
            Body::Response(ResponseEnvelope {
                nonce: Nonce([2; 16]),
                challenge: Nonce([1; 16]),
                member: "uuid-b".into(),
                request: Digest([7; 32]),
                response: Response::Released,
            }),
            Body::Response(ResponseEnvelope {
                nonce: Nonce([2; 16]),
                challenge: Nonce([1; 16]),
                member: "uuid-b".into(),
                request: Digest([7; 32]),
                response: Response::Refused {
                    reason: "not the primary\n in my view".into(),
                },
            }),
            Body::Request(RequestEnvelope {
                from: "u".into(),
                nonce: Nonce([0; 16]),
                client_nonce: Nonce([0xff; 16]),
                request: Request::Lease(crate::core::Request::ReadLease {
                    vips: vec!["10.0.0.12".parse().unwrap()],
                }),
            }),
            Body::Response(ResponseEnvelope {
                nonce: Nonce([2; 16]),
                challenge: Nonce([1; 16]),
                member: "uuid-b".into(),
                request: Digest([7; 32]),
                response: Response::Lease(crate::core::Response::ReadLease {
                    term: 7,
                    grants: vec![("10.0.0.12".parse().unwrap(), Duration::from_millis(2500))],
                }),
            }),
        ]
    }

    #[test]
    fn every_body_round_trips() {
        for body in all_bodies() {
            let frame = encode(&body, &key()).unwrap();
            assert_eq!(needed(&frame[..3]), Ok(HEADER_LEN));
            assert_eq!(needed(&frame), Ok(frame.len()));
            assert_eq!(parse_header(&frame).unwrap().kind, body.kind());
            assert_eq!(decode(&frame, &key()), Ok(body));
        }
    }

    #[test]
    fn a_full_group_is_far_under_the_limit() {
        // 9 members (the MGR maximum), a long IPv6 read VIP each, real-length uuids.
        let uuid = |i: usize| format!("3e1c4b5a-0000-11ef-9a2b-0242ac1100{i:02}");
        let vip = |i: usize| format!("fd00:aaaa:bbbb:cccc:dddd:eeee:ffff:{i:04}");
        let placement = Placement {
            write: Some((vip(99).parse().unwrap(), uuid(0))),
            read: (0..9).map(|i| (vip(i).parse().unwrap(), uuid(i))).collect(),
        };
        let body = Body::Request(RequestEnvelope {
            from: uuid(0),
            nonce: Nonce([1; 16]),
            client_nonce: Nonce([2; 16]),
            request: Request::Apply {
                stamp: u64::MAX,
                placement,
                reannounce: true,
            },
        });
        let len = encode(&body, &key()).unwrap().len() - HEADER_LEN - MAC_LEN;
        assert!(len < 1024, "{len} bytes");
    }

    #[test]
    fn the_layout_is_as_documented() {
        let frame = seal(Kind::Response, b"{}", &key()).unwrap();
        assert_eq!(&frame[..12], b"VIPA\x02\x03\x00\x00\x00\x00\x00\x02");
        assert_eq!(&frame[12..14], b"{}");
        assert_eq!(frame.len(), 12 + 2 + 32);
        // RFC 2104 HMAC-SHA256 of the header and body, computed independently.
        let mut mac = key().mac();
        mac.update(&frame[..14]);
        assert_eq!(&frame[14..], &mac.finalize().into_bytes()[..]);
    }

    #[test]
    fn nonces_are_hex_strings() {
        let json = serde_json::to_string(&Challenge {
            nonce: Nonce([0xab; 16]),
        })
        .unwrap();
        assert_eq!(json, format!(r#"{{"nonce":"{}"}}"#, "ab".repeat(16)));
        for bad in ["", "abab", &"ab".repeat(17), &"zz".repeat(16)] {
            let json = format!(r#"{{"nonce":"{bad}"}}"#);
            assert!(serde_json::from_str::<Challenge>(&json).is_err(), "{bad}");
        }
    }

    #[test]
    fn truncated_anywhere() {
        let frame = encode(&request(Nonce([1; 16])), &key()).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(
                decode(&frame[..cut], &key()),
                Err(FrameError::Truncated),
                "{cut}"
            );
        }
        assert_eq!(FrameError::Truncated.kind(), "truncated");
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut frame = encode(&request(Nonce([1; 16])), &key()).unwrap();
        frame.push(0);
        let e = decode(&frame, &key()).unwrap_err();
        assert_eq!(e, FrameError::Malformed("1 bytes after the frame".into()));
    }

    #[test]
    fn oversized_is_refused_from_the_header_alone() {
        let mut header = Vec::from(MAGIC);
        header.extend_from_slice(&[VERSION, 2, 0, 0]);
        header.extend_from_slice(&(MAX_BODY as u32 + 1).to_be_bytes());
        let want = FrameError::Oversized {
            len: MAX_BODY + 1,
            max: MAX_BODY,
        };
        // Twelve bytes are enough: no body is needed (or read) to refuse it.
        assert_eq!(needed(&header), Err(want.clone()));
        assert_eq!(decode(&header, &key()), Err(want.clone()));
        assert_eq!(want.kind(), "oversized");
        header[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            parse_header(&header),
            Err(FrameError::Oversized { .. })
        ));
        // And nothing over the limit is sent either.
        assert!(matches!(
            seal(Kind::Request, &vec![b' '; MAX_BODY + 1], &key()),
            Err(FrameError::Oversized { .. })
        ));
        assert!(seal(Kind::Request, &vec![b' '; MAX_BODY], &key()).is_ok());
    }

    #[test]
    fn bad_header_fields_are_malformed() {
        let good = encode(&request(Nonce([1; 16])), &key()).unwrap();
        let with = |at: usize, b: u8| {
            let mut f = good.clone();
            f[at] = b;
            decode(&f, &key()).unwrap_err()
        };
        assert_eq!(with(0, b'X'), FrameError::BadMagic);
        assert_eq!(with(4, 1), FrameError::BadVersion(1));
        assert_eq!(with(5, 0), FrameError::BadKind(0));
        assert_eq!(with(5, 4), FrameError::BadKind(4));
        assert!(matches!(with(7, 1), FrameError::Malformed(_)));
        for e in [
            FrameError::BadMagic,
            FrameError::BadVersion(2),
            FrameError::BadKind(9),
        ] {
            assert_eq!(e.kind(), "malformed");
        }
        let garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(decode(garbage, &key()), Err(FrameError::BadMagic));
    }

    #[test]
    fn a_wrong_key_or_a_flipped_bit_is_unauthenticated() {
        let frame = encode(&request(Nonce([1; 16])), &key()).unwrap();
        let other = Key::from_bytes(&[8; 32]).unwrap();
        assert_eq!(decode(&frame, &other), Err(FrameError::Unauthenticated));
        assert_eq!(FrameError::Unauthenticated.kind(), "unauthenticated");
        // Any bit of the body or MAC; the header's kind byte is covered too.
        for at in HEADER_LEN..frame.len() {
            let mut f = frame.clone();
            f[at] ^= 0x10;
            assert_eq!(decode(&f, &key()), Err(FrameError::Unauthenticated), "{at}");
        }
        let mut f = frame.clone();
        f[5] = Kind::Response as u8;
        assert_eq!(decode(&f, &key()), Err(FrameError::Unauthenticated));
    }

    #[test]
    fn bad_json_under_a_valid_mac_is_malformed() {
        let cases: &[(Kind, &[u8])] = &[
            (Kind::Request, b"not json"),
            (Kind::Request, b""),
            (Kind::Request, b"{\"from\":\"u\"}"),
            (Kind::Challenge, b"{\"nonce\":\"00\"}"),
            (Kind::Challenge, &[0xff, 0xfe, 0x00]),
            (
                Kind::Response,
                b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            ),
        ];
        for (kind, body) in cases {
            let e = decode(&seal(*kind, body, &key()).unwrap(), &key()).unwrap_err();
            assert!(matches!(e, FrameError::Malformed(_)), "{e:?}");
            assert_eq!(e.kind(), "malformed");
        }
        // deep nesting hits serde_json's recursion limit, not the stack.
        let deep = "[".repeat(MAX_BODY);
        let e = decode(
            &seal(Kind::Response, deep.as_bytes(), &key()).unwrap(),
            &key(),
        );
        assert!(matches!(e, Err(FrameError::Malformed(_))));
    }

    #[test]
    fn unknown_fields_are_malformed() {
        let json = format!(
            r#"{{"nonce":"{}","response":"Applied","extra":1}}"#,
            "00".repeat(16)
        );
        let frame = seal(Kind::Response, json.as_bytes(), &key()).unwrap();
        let e = decode(&frame, &key()).unwrap_err();
        assert!(
            matches!(&e, FrameError::Malformed(d) if d.contains("unknown field `extra`")),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_details_are_one_short_line() {
        let json = format!(r#"{{"{}":1}}"#, "x\n".repeat(500));
        let frame = seal(Kind::Challenge, json.as_bytes(), &key()).unwrap();
        let FrameError::Malformed(d) = decode(&frame, &key()).unwrap_err() else {
            panic!("not malformed");
        };
        assert!(d.chars().count() <= 201 && !d.contains('\n'), "{d}");
    }

    #[test]
    fn a_request_must_echo_the_challenge() {
        let frame = encode(&request(Nonce([1; 16])), &key()).unwrap();
        assert!(decode_request(&frame, &key(), &Nonce([1; 16])).is_ok());
        assert_eq!(
            decode_request(&frame, &key(), &Nonce([2; 16])),
            Err(FrameError::Replayed)
        );
        assert_eq!(FrameError::Replayed.kind(), "replayed");
        let e = decode_challenge(&frame, &key()).unwrap_err();
        assert_eq!(
            e,
            FrameError::Malformed("expected a challenge frame, got a request".into())
        );
    }

    #[test]
    fn a_long_or_odd_sender_uuid_is_malformed() {
        let with_from = |from: &str| {
            let body = Body::Request(RequestEnvelope {
                from: from.to_string(),
                nonce: Nonce([1; 16]),
                client_nonce: Nonce([2; 16]),
                request: Request::Holdings,
            });
            decode_request(&encode(&body, &key()).unwrap(), &key(), &Nonce([1; 16]))
        };
        assert!(with_from("3e1c4b5a-0000-11ef-9a2b-0242ac110002").is_ok());
        assert!(with_from("").is_ok());
        assert!(with_from(&"a".repeat(MAX_MEMBER_ID)).is_ok());
        let e = with_from(&"a".repeat(10_000)).unwrap_err();
        assert_eq!(
            e,
            FrameError::Malformed("from is 10000 bytes; a member uuid is at most 64".into())
        );
        for odd in ["uuid\nforged log line", "ü", "a b", "x;y"] {
            assert!(
                matches!(with_from(odd), Err(FrameError::Malformed(_))),
                "{odd}"
            );
        }
    }

    #[test]
    fn a_response_must_be_for_this_connection_request_and_member() {
        let sent = encode(&request(Nonce([1; 16])), &key()).unwrap();
        let expected = Expected {
            client_nonce: Nonce([3; 16]),
            challenge: Nonce([1; 16]),
            request: Digest::of(&sent),
            member: "uuid-b",
        };
        let answer = |f: &dyn Fn(&mut ResponseEnvelope)| {
            let mut r = ResponseEnvelope {
                nonce: expected.client_nonce,
                challenge: expected.challenge,
                member: expected.member.to_string(),
                request: expected.request,
                response: Response::Released,
            };
            f(&mut r);
            decode_response(
                &encode(&Body::Response(r), &key()).unwrap(),
                &key(),
                &expected,
            )
        };
        assert_eq!(answer(&|_| {}).unwrap().response, Response::Released);
        assert_eq!(
            answer(&|r| r.nonce = Nonce([4; 16])),
            Err(FrameError::Replayed)
        );
        assert_eq!(
            answer(&|r| r.challenge = Nonce([4; 16])),
            Err(FrameError::Replayed)
        );
        // Another request on the same connection, or the same request's bytes changed.
        let other = encode(&request(Nonce([9; 16])), &key()).unwrap();
        assert_eq!(
            answer(&|r| r.request = Digest::of(&other)),
            Err(FrameError::OtherRequest)
        );
        // Member C's genuine "Released", handed over as if B had said it.
        let e = answer(&|r| r.member = "uuid-c".into()).unwrap_err();
        assert_eq!(
            e,
            FrameError::WrongMember {
                expected: "uuid-b".into(),
                got: "uuid-c".into()
            }
        );
        assert_eq!(e.kind(), "wrong_member");
        assert!(
            e.to_string()
                .contains("comes from member \"uuid-c\", not \"uuid-b\""),
            "{e}"
        );
        assert!(decode_request(&sent, &key(), &Nonce([1; 16])).is_ok());
        assert!(matches!(
            decode_response(&sent, &key(), &expected),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_digest_covers_every_byte_of_the_frame() {
        let frame = encode(&request(Nonce([1; 16])), &key()).unwrap();
        let d = Digest::of(&frame);
        for at in [0, HEADER_LEN, frame.len() - 1] {
            let mut f = frame.clone();
            f[at] ^= 1;
            assert_ne!(Digest::of(&f), d, "{at}");
        }
        // SHA-256 of "abc" (FIPS 180-2 appendix B.1).
        assert_eq!(
            hex::encode(Digest::of(b"abc").0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_fuzz_seeds_are_valid_bodies() {
        // fuzz/seeds/peer_frame: a kind ('0' challenge, '1' request, '2' response) and a
        // JSON body, which the fuzz target MACs. Kept in step with the format here.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/peer_frame");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("frame_") {
                continue; // raw wire bytes, meant to be refused
            }
            let seed = std::fs::read(&path).unwrap();
            let kind = match seed[0] {
                b'0' => Kind::Challenge,
                b'1' => Kind::Request,
                b'2' => Kind::Response,
                other => panic!("{name}: kind byte {other}"),
            };
            let frame = seal(kind, &seed[1..], &key()).unwrap();
            let body = decode(&frame, &key()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(body.kind(), kind, "{name}");
            checked += 1;
        }
        assert!(checked >= 5, "only {checked} seeds in {}", dir.display());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A tiny deterministic fuzz; `cargo xtask fuzz` does the real thing.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let good = encode(&request(Nonce([1; 16])), &key()).unwrap();
        for _ in 0..2000 {
            let mut f = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % f.len();
                f[at] = next() as u8;
            }
            f.truncate((next() as usize) % (f.len() + 1));
            let _ = decode(&f, &key());
            let _ = needed(&f);
        }
    }
}
