//! Fuzzes the peer frame decoder (vip_agent::peer::wire), which reads bytes from anyone
//! who can reach the peer port. Two views of each input:
//!
//! 1. The bytes as a frame off the wire: the incremental header parse and `decode`.
//!    Random bytes never carry a valid MAC, so this covers the header and MAC checks.
//! 2. The first byte picks a kind, the rest is a body MACed here under the fuzz key:
//!    this gets past the MAC to the JSON decoding, which on the wire only a key holder
//!    can reach. A decoded body must re-encode and decode to itself.
//!
//! A decoded request then goes through the server's checks (the echoed nonce, the
//! sender's uuid) and a decoded response through the client's (both nonces, the
//! request's digest, the member asked), which must refuse anything not made for them.
//!
//! Seeds (fuzz/seeds/peer_frame) are in view 2's form: '0' challenge, '1' request,
//! '2' response, then JSON.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vip_agent::peer::key::Key;
use vip_agent::peer::wire::{self, Body, Digest, Expected, FrameError, Kind, MAX_BODY, Nonce};

fn key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| Key::from_bytes(&[0x5a; 32]).expect("a 32-byte key"))
}

fuzz_target!(|data: &[u8]| {
    let key = key();

    // 1. As a frame off the wire.
    let needed = wire::needed(data);
    match wire::parse_header(data) {
        Ok(header) => {
            assert!(header.body_len <= MAX_BODY);
            assert_eq!(needed, Ok(header.frame_len()));
        }
        Err(FrameError::Truncated) => assert_eq!(needed, Ok(wire::HEADER_LEN)),
        Err(e) => assert_eq!(needed, Err(e)),
    }
    let _ = wire::decode(data, key);

    // 2. As a body under a valid MAC.
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = [Kind::Challenge, Kind::Request, Kind::Response][usize::from(selector % 3)];
    let Ok(frame) = wire::seal(kind, body, key) else {
        return; // over MAX_BODY
    };
    match wire::decode(&frame, key) {
        Ok(decoded) => {
            assert_eq!(decoded.kind(), kind);
            check_binding(&decoded, &frame, key);
            // Re-encoding can grow past the limit (e.g. "::ffff:0:1" prints as
            // "::ffff:0.0.0.1"); anything that fits must decode to the same body.
            if let Ok(again) = wire::encode(&decoded, key) {
                assert_eq!(wire::decode(&again, key), Ok(decoded));
            }
        }
        // A frame sealed under the key is whole and authentic: only its JSON can be wrong.
        Err(e) => assert!(matches!(e, FrameError::Malformed(_)), "{e:?}"),
    }
});

/// The server's and the client's checks on a decoded body: a request passes only with
/// its own nonce and a plain member uuid; a response only for the very connection,
/// request and member it names.
fn check_binding(decoded: &Body, frame: &[u8], key: &vip_agent::peer::key::Key) {
    match decoded {
        Body::Request(r) => {
            let ok = wire::decode_request(frame, key, &r.nonce);
            assert_eq!(ok.is_ok(), wire::check_member_id("from", &r.from).is_ok());
            let other = Nonce([!r.nonce.0[0]; 16]);
            if other != r.nonce {
                assert!(wire::decode_request(frame, key, &other).is_err());
            }
        }
        Body::Response(r) => {
            let expected = Expected {
                client_nonce: r.nonce,
                challenge: r.challenge,
                request: r.request,
                member: &r.member,
            };
            assert!(wire::decode_response(frame, key, &expected).is_ok());
            let other = Expected {
                request: Digest([!r.request.0[0]; 32]),
                ..expected.clone()
            };
            assert_eq!(
                wire::decode_response(frame, key, &other),
                Err(FrameError::OtherRequest)
            );
            let someone = format!("{}x", r.member);
            let misdirected = Expected {
                member: &someone,
                ..expected
            };
            assert!(matches!(
                wire::decode_response(frame, key, &misdirected),
                Err(FrameError::WrongMember { .. })
            ));
        }
        Body::Challenge(_) => {}
    }
}
