//! The kernel side of the agent: loads the embedded eBPF object and owns what it pins.
//!
//! Pins live under `/sys/fs/bpf/vip-agent/<instance>/`, one folder per agent instance,
//! so several instances on one host never touch each other's maps.

pub mod checks;
pub mod count_dst;
pub mod engine;
pub mod guard;
pub mod iter_reset;
pub mod kernel;
pub mod pins;
pub mod reader;
pub mod sock_destroy;
pub mod track;
pub mod vip_table;

use anyhow::{Context, Result, bail};
use aya::Ebpf;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Which connections a reset destroys (both paths: the iterator and netlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Connections whose local address is this (and local port, if given).
    Local(IpAddr, Option<u16>),
    /// Every connection whose local port is this, on any address: every client of
    /// mysqld (the kill-all option).
    Port(u16),
}

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VIP_EBPF_OBJECT"));

/// Where bpffs is normally mounted, and the agent's folder in it.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const PIN_ROOT: &str = "vip-agent";

/// Loads the embedded object into the kernel (maps created, programs not yet loaded).
///
/// Not for `reset_tcp`: aya cannot parse the object while its kfunc calls are unbound,
/// so they are bound here to a placeholder BTF id (0) that only satisfies aya; the
/// verifier would reject it. [`kernel::KernelBtf::patch`] binds the kernel's real id.
pub fn load() -> Result<Ebpf> {
    let object = kernel::patch_kfunc_calls(OBJECT, |_| Ok(0))?;
    Ebpf::load(object.bytes()).map_err(|e| {
        anyhow::Error::new(e).context(
            "could not load vip-agent's eBPF object: the agent needs CAP_BPF, CAP_NET_ADMIN \
             and CAP_PERFMON (or root) and a kernel with BTF (/sys/kernel/btf/vmlinux)",
        )
    })
}

/// Checks an instance name: it becomes a folder name under bpffs and a log tag.
pub fn check_instance(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!(
            "instance name {name:?} is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, \
             '-' and '_' (it names the folder /sys/fs/bpf/vip-agent/<instance>)"
        );
    }
    Ok(())
}

/// The instance's pin folder, created if needed. Fails clearly when bpffs is missing.
pub fn pin_dir(instance: &str) -> Result<PathBuf> {
    check_instance(instance)?;
    ensure_bpffs(Path::new(BPFFS))?;
    let dir = Path::new(BPFFS).join(PIN_ROOT).join(instance);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("could not create the pin folder {}", dir.display()))?;
    Ok(dir)
}

/// Removes the instance's pin folder and, if it was the last, the agent's folder.
pub fn remove_pins(instance: &str) -> Result<()> {
    check_instance(instance)?;
    let root = Path::new(BPFFS).join(PIN_ROOT);
    let dir = root.join(instance);
    if dir.exists() {
        // Unlinking a pin only drops the kernel's reference held by the file; a map
        // still used by a loaded program stays alive until that program goes.
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("could not remove the pins in {}", dir.display()))?;
    }
    let _ = std::fs::remove_dir(&root); // only succeeds when no other instance is left
    Ok(())
}

/// Removes the instance's pin folder if nothing is pinned in it (after a failed start),
/// leaving any other instance's pins alone.
pub fn remove_empty_pin_dir(instance: &str) {
    let root = Path::new(BPFFS).join(PIN_ROOT);
    let _ = std::fs::remove_dir(root.join(instance));
    let _ = std::fs::remove_dir(&root);
}

pub const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Fails with the mount command when `path` is not a bpffs mount.
pub fn ensure_bpffs(path: &Path) -> Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs writes into the zeroed struct we pass; c_path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    if rc != 0 || st.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "{} is not a bpffs mount, so the agent cannot pin its maps; mount it with \
             `mount -t bpf bpf {}` (systemd does this at boot on most distributions)",
            path.display(),
            path.display()
        );
    }
    Ok(())
}
