//! Network interface names: the kernel's rules for them, and the error for a missing one.

use std::fmt;

use anyhow::{Result, bail};

/// The kernel's IFNAMSIZ: a name is at most 15 bytes plus its NUL.
pub const IFNAMSIZ: usize = 16;

/// The configured interface does not exist in this network namespace. Callers can tell
/// it from other failures with `err.downcast_ref::<NoSuchNic>()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoSuchNic(pub String);

impl fmt::Display for NoSuchNic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network interface {:?} does not exist in this network namespace",
            self.0
        )
    }
}

impl std::error::Error for NoSuchNic {}

/// Rejects what the kernel's `dev_valid_name` would, before it reaches a syscall, so the
/// error says what is wrong with the name instead of a bare EINVAL.
pub fn check_name(nic: &str) -> Result<()> {
    if nic.is_empty() {
        bail!("the network interface name is empty");
    }
    if nic.len() >= IFNAMSIZ {
        bail!(
            "network interface name {nic:?} is longer than {} bytes",
            IFNAMSIZ - 1
        );
    }
    if nic == "."
        || nic == ".."
        || nic.contains(['/', ':', '\0'])
        || nic.contains(char::is_whitespace)
    {
        bail!("{nic:?} is not a valid network interface name");
    }
    Ok(())
}

/// An IPv4 label must start with its interface's name (the kernel ties aliases such as
/// `eth0:0` to `eth0` by that prefix, and `ifconfig` shows them so) and fit in IFNAMSIZ.
pub fn check_label(nic: &str, label: &str) -> Result<()> {
    if !label.starts_with(nic) {
        bail!("label {label:?} does not start with the interface name {nic:?}");
    }
    if label.len() >= IFNAMSIZ || label.contains('\0') {
        bail!(
            "label {label:?} is not valid: at most {} bytes, no NUL",
            IFNAMSIZ - 1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["eth0", "enp3s0f1", "bond0.100", "a23456789012345"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "eth0:0",
            "a/b",
            "et h0",
            "a234567890123456",
            "e\0",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels() {
        assert!(check_label("eth0", "eth0:0").is_ok());
        assert!(check_label("eth0", "eth0:mgr3306").is_ok());
        let err = check_label("eth0", "eth1:0").unwrap_err().to_string();
        assert!(err.contains("eth1:0") && err.contains("eth0"), "{err}");
        assert!(check_label("eth0", "eth0:0123456789a").is_err());
    }

    #[test]
    fn missing_nic_names_it() {
        assert!(NoSuchNic("eth9".into()).to_string().contains("\"eth9\""));
    }
}
