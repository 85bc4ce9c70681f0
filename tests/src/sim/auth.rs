//! Password checks for the two MySQL 8.0 authentication plugins the simulator speaks.
//!
//! Pure functions: the server side only ever sees the client's scramble of the password
//! with the per-connection nonce, so checking means computing the same scramble here.

use rand::Rng;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Length of the nonce ("salt", "scramble") sent in the server greeting.
pub const NONCE_LEN: usize = 20;

/// The authentication plugin a simulated group asks clients to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthPlugin {
    /// `mysql_native_password`: SHA1 based, the 5.7 default.
    MysqlNativePassword,
    /// `caching_sha2_password` fast path: SHA256 based, the 8.0 default.
    #[default]
    CachingSha2Password,
}

impl AuthPlugin {
    /// The plugin name as sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            AuthPlugin::MysqlNativePassword => "mysql_native_password",
            AuthPlugin::CachingSha2Password => "caching_sha2_password",
        }
    }

    /// What a client that knows `password` sends in answer to `nonce`.
    ///
    /// An empty password is sent as an empty answer by both plugins.
    pub fn scramble(self, password: &str, nonce: &[u8]) -> Vec<u8> {
        if password.is_empty() {
            return Vec::new();
        }
        match self {
            AuthPlugin::MysqlNativePassword => native_scramble(password, nonce).to_vec(),
            AuthPlugin::CachingSha2Password => caching_sha2_scramble(password, nonce).to_vec(),
        }
    }

    /// Whether `answer` proves knowledge of `password` for this `nonce`.
    pub fn verify(self, password: &str, nonce: &[u8], answer: &[u8]) -> bool {
        self.scramble(password, nonce) == answer
    }
}

/// `SHA1(pw) XOR SHA1(nonce ‖ SHA1(SHA1(pw)))`.
pub fn native_scramble(password: &str, nonce: &[u8]) -> [u8; 20] {
    let stage1: [u8; 20] = Sha1::digest(password.as_bytes()).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mixed: [u8; 20] = Sha1::new()
        .chain_update(nonce)
        .chain_update(stage2)
        .finalize()
        .into();
    xor(stage1, mixed)
}

/// `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) ‖ nonce)`.
pub fn caching_sha2_scramble(password: &str, nonce: &[u8]) -> [u8; 32] {
    let stage1: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    let stage2: [u8; 32] = Sha256::digest(stage1).into();
    let mixed: [u8; 32] = Sha256::new()
        .chain_update(stage2)
        .chain_update(nonce)
        .finalize()
        .into();
    xor(stage1, mixed)
}

fn xor<const N: usize>(a: [u8; N], b: [u8; N]) -> [u8; N] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// A fresh nonce: printable ASCII, like MySQL's, so that no byte is NUL (the greeting
/// NUL-terminates it) or `$`.
pub fn new_nonce() -> [u8; NONCE_LEN] {
    let mut rng = rand::rng();
    std::array::from_fn(|_| {
        loop {
            let b = rng.random_range(0x21u8..0x7f);
            if b != b'$' {
                break b;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce() -> Vec<u8> {
        (1..=20).collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // Expected values computed independently with Python's hashlib.
    #[test]
    fn native_matches_known_answer() {
        assert_eq!(
            hex(&native_scramble("secret", &nonce())),
            "b32bb3a583e1340c0a1108d58b1be49781ad8c2f"
        );
    }

    #[test]
    fn caching_sha2_matches_known_answer() {
        assert_eq!(
            hex(&caching_sha2_scramble("secret", &nonce())),
            "746ebe205d56a0707acb3e796e834e0dd7b1d61743b26bd5202c7a623230c7c9"
        );
    }

    #[test]
    fn verify_accepts_right_and_rejects_wrong_password() {
        for plugin in [
            AuthPlugin::MysqlNativePassword,
            AuthPlugin::CachingSha2Password,
        ] {
            let n = new_nonce();
            let answer = plugin.scramble("secret", &n);
            assert!(plugin.verify("secret", &n, &answer), "{plugin:?}");
            assert!(!plugin.verify("other", &n, &answer), "{plugin:?}");
            assert!(
                !plugin.verify("secret", &new_nonce(), &answer),
                "{plugin:?}"
            );
            assert!(!plugin.verify("secret", &n, &[]), "{plugin:?}");
        }
    }

    #[test]
    fn empty_password_is_an_empty_answer() {
        let n = new_nonce();
        assert!(AuthPlugin::CachingSha2Password.verify("", &n, &[]));
        assert!(!AuthPlugin::CachingSha2Password.verify("", &n, b"x"));
    }

    #[test]
    fn nonce_has_no_nul_or_dollar() {
        for _ in 0..100 {
            assert!(
                new_nonce()
                    .iter()
                    .all(|&b| b != 0 && b != b'$' && b.is_ascii())
            );
        }
    }
}
