//! The shared peer key: one secret file, the same on every node (like the MySQL password).
//!
//! The file holds the key as hex, e.g. made with `openssl rand -hex 32`. It must give at
//! least 32 bytes (the HMAC-SHA256 output size: a shorter key weakens the MAC) and be
//! private to its owner, because whoever reads it can move every VIP. That owner must be
//! root or the user the agent runs as: a key owned by anyone else is one that user can
//! read and replace.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// A key file longer than this is surely not a key (a log, a binary): stop reading there.
const MAX_FILE_BYTES: u64 = 4096;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The peer key, ready to MAC. Debug never prints it.
#[derive(Clone)]
pub struct Key {
    /// HMAC keyed once: cloning it per frame skips re-deriving the inner/outer pads.
    mac: HmacSha256,
    len: usize,
}

impl Key {
    /// Reads the key file (`peer.key_file`) as the agent does: hex, surrounding
    /// whitespace ignored, at least [`MIN_KEY_BYTES`] bytes, mode 0600 or stricter, owned
    /// by root or by this process's user.
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Key::load_owned_by(path, &[0, unsafe { libc::geteuid() }])
    }

    /// [`Key::load`] with the owners allowed named: `check-config` run by root checks
    /// for the service user the agent will run as.
    pub fn load_owned_by(path: &Path, owners: &[u32]) -> Result<Key, KeyError> {
        let unreadable = |error| KeyError::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        // Open first and check that same file: no window for a swap between the checks.
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if !owners.contains(&meta.uid()) {
            return Err(KeyError::Owner {
                path: path.to_path_buf(),
                uid: meta.uid(),
                allowed: owners.to_vec(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(unreadable)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(KeyError::NotHex {
                path: Some(path.to_path_buf()),
                detail: format!("longer than {MAX_FILE_BYTES} bytes"),
            });
        }
        let bytes = hex::decode(text.trim()).map_err(|e| KeyError::NotHex {
            path: Some(path.to_path_buf()),
            detail: e.to_string(),
        })?;
        Key::new(&bytes, Some(path))
    }

    /// A key from raw bytes (tests, tools). Same length rule as [`Key::load`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Key, KeyError> {
        Key::new(bytes, None)
    }

    fn new(bytes: &[u8], path: Option<&Path>) -> Result<Key, KeyError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                path: path.map(Path::to_path_buf),
                len: bytes.len(),
            });
        }
        // HMAC takes keys of any length, so this cannot fail; map it anyway, no panics.
        let mac = HmacSha256::new_from_slice(bytes).map_err(|_| KeyError::TooShort {
            path: path.map(Path::to_path_buf),
            len: bytes.len(),
        })?;
        Ok(Key {
            mac,
            len: bytes.len(),
        })
    }

    /// A fresh MAC state under this key.
    pub(crate) fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<{} bytes, redacted>)", self.len)
    }
}

/// Why the key file cannot be used. Display names the file and the fix.
#[derive(Debug)]
pub enum KeyError {
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    NotAFile {
        path: PathBuf,
    },
    Permissions {
        path: PathBuf,
        mode: u32,
    },
    /// Owned by a user who is neither root nor the agent's.
    Owner {
        path: PathBuf,
        uid: u32,
        allowed: Vec<u32>,
    },
    /// `path` is None for [`Key::from_bytes`].
    NotHex {
        path: Option<PathBuf>,
        detail: String,
    },
    TooShort {
        path: Option<PathBuf>,
        len: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let make = |p: &Path| format!("openssl rand -hex 32 > {}", p.display());
        match self {
            KeyError::Unreadable { path, error } => {
                write!(f, "peer.key_file {}: cannot read: {error}", path.display())
            }
            KeyError::NotAFile { path } => write!(
                f,
                "peer.key_file {}: not a regular file; make one with: {}",
                path.display(),
                make(path)
            ),
            KeyError::Permissions { path, mode } => write!(
                f,
                "peer.key_file {}: is readable by group or others (mode {mode:04o}); \
                 run chmod 600 {}",
                path.display(),
                path.display()
            ),
            KeyError::Owner { path, uid, allowed } => {
                let users: Vec<String> = allowed
                    .iter()
                    .filter(|u| **u != 0)
                    .map(|u| format!("uid {u}"))
                    .collect();
                let owners = match users.as_slice() {
                    [] => "root".to_string(),
                    users => format!("root or to the agent's user ({})", users.join(" or ")),
                };
                write!(
                    f,
                    "peer.key_file {}: is owned by uid {uid}, who could read and replace it; \
                     it must belong to {owners}: chown it to the agent's user (the package's \
                     is vip-agent: chown vip-agent:vip-agent {}) or to root",
                    path.display(),
                    path.display()
                )
            }
            KeyError::NotHex {
                path: Some(p),
                detail,
            } => write!(
                f,
                "peer.key_file {}: is not a hex key ({detail}); make one with: {}",
                p.display(),
                make(p)
            ),
            KeyError::NotHex { path: None, detail } => write!(f, "not a hex key ({detail})"),
            KeyError::TooShort { path: Some(p), len } => write!(
                f,
                "peer.key_file {}: the key is {len} bytes; use at least {MIN_KEY_BYTES} bytes: {}",
                p.display(),
                make(p)
            ),
            KeyError::TooShort { path: None, len } => write!(
                f,
                "the key is {len} bytes; use at least {MIN_KEY_BYTES} bytes"
            ),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Unreadable { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "vip-agent-key-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn file(&self, contents: &str, mode: u32) -> PathBuf {
            let path = self.0.join("peer.key");
            std::fs::write(&path, contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const HEX64: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn loads_hex_with_surrounding_whitespace() {
        let dir = TempDir::new("ok");
        let key = Key::load(&dir.file(&format!("  {HEX64}\n"), 0o600)).unwrap();
        assert_eq!(key.len, 32);
        let same = Key::from_bytes(&hex::decode(HEX64).unwrap()).unwrap();
        assert_eq!(
            key.mac().finalize().into_bytes(),
            same.mac().finalize().into_bytes()
        );
        Key::load(&dir.file(HEX64, 0o400)).unwrap();
    }

    #[test]
    fn macs_like_rfc_4231() {
        // RFC 4231 test case 6: a 131-byte key (longer than the block, so hashed first).
        let key = Key::from_bytes(&[0xaa; 131]).unwrap();
        let mut mac = key.mac();
        mac.update(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let key = Key::from_bytes(&[0xab; 40]).unwrap();
        let debug = format!("{key:?}");
        assert_eq!(debug, "Key(<40 bytes, redacted>)");
        assert!(!debug.contains("ab") && !debug.contains("171"));
    }

    #[test]
    fn rejects_a_short_key_naming_the_fix() {
        let dir = TempDir::new("short");
        let path = dir.file("00112233445566778899aabb\n", 0o600);
        let e = Key::load(&path).unwrap_err();
        let p = path.display();
        assert_eq!(
            e.to_string(),
            format!(
                "peer.key_file {p}: the key is 12 bytes; use at least 32 bytes: \
                 openssl rand -hex 32 > {p}"
            )
        );
        assert!(matches!(
            Key::from_bytes(&[1; 31]),
            Err(KeyError::TooShort { len: 31, .. })
        ));
        assert!(matches!(
            Key::load(&dir.file("", 0o600)),
            Err(KeyError::TooShort { len: 0, .. })
        ));
    }

    #[test]
    fn rejects_text_that_is_not_hex() {
        let dir = TempDir::new("nothex");
        let e = Key::load(&dir.file(&format!("{HEX64}g"), 0o600)).unwrap_err();
        assert!(matches!(e, KeyError::NotHex { .. }), "{e}");
        assert!(e.to_string().contains("is not a hex key"), "{e}");
        let e =
            Key::load(&dir.file("my secret password that is long enough!!", 0o600)).unwrap_err();
        assert!(matches!(e, KeyError::NotHex { .. }), "{e}");
        let e = Key::load(&dir.file(&"ab".repeat(3000), 0o600)).unwrap_err();
        assert!(e.to_string().contains("longer than 4096 bytes"), "{e}");
    }

    #[test]
    fn rejects_a_file_others_can_read() {
        let dir = TempDir::new("mode");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let path = dir.file(HEX64, mode);
            let e = Key::load(&path).unwrap_err();
            let p = path.display();
            assert_eq!(
                e.to_string(),
                format!(
                    "peer.key_file {p}: is readable by group or others (mode {mode:04o}); \
                     run chmod 600 {p}"
                )
            );
        }
    }

    #[test]
    fn rejects_a_file_another_user_owns() {
        let dir = TempDir::new("owner");
        let path = dir.file(HEX64, 0o600);
        let mine = std::fs::metadata(&path).unwrap().uid();
        assert!(Key::load_owned_by(&path, &[mine]).is_ok());
        let e = Key::load_owned_by(&path, &[mine + 1, mine + 2]).unwrap_err();
        assert!(matches!(e, KeyError::Owner { .. }), "{e}");
        assert!(
            e.to_string().contains(&format!(
                "is owned by uid {mine}, who could read and replace it; it must belong to \
                 root or to the agent's user (uid {} or uid {})",
                mine + 1,
                mine + 2
            )),
            "{e}"
        );
    }

    #[test]
    fn rejects_a_missing_file_or_a_directory() {
        let dir = TempDir::new("missing");
        let e = Key::load(&dir.0.join("nope")).unwrap_err();
        assert!(matches!(e, KeyError::Unreadable { .. }), "{e}");
        assert!(e.to_string().contains("cannot read"), "{e}");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = Key::load(&dir.0).unwrap_err();
        assert!(matches!(e, KeyError::NotAFile { .. }), "{e}");
    }
}
