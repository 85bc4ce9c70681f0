//! Fuzzes the peer frame decoder (vip_agent::peer::wire), which reads bytes from anyone
//! who can reach the peer port. Two views of each input:
//!
//! 1. The bytes as a frame off the wire: the incremental header parse and `decode`.
//!    Random bytes never carry a valid MAC, so this covers the header and MAC checks.
//! 2. The first byte picks a kind, the rest is a body MACed here under the fuzz key:
//!    this gets past the MAC to the JSON decoding, which on the wire only a key holder
//!    can reach. A decoded body must re-encode and decode to itself.
//!
//! Seeds (fuzz/seeds/peer_frame) are in view 2's form: '0' challenge, '1' request,
//! '2' response, then JSON.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vip_agent::peer::key::Key;
use vip_agent::peer::wire::{self, FrameError, Kind, MAX_BODY};

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
