//! `vip-agent prepare --config FILE --user NAME`: what root must do once before the
//! agent starts as an unprivileged service user with only its capabilities (the
//! packaged unit runs it as `ExecStartPre=+`).
//!
//! - bpffs: systemd mounts `/sys/fs/bpf` mode 0700, so the user could not even reach
//!   its pin folder. The folder `/sys/fs/bpf/vip-agent/<instance>` is made the user's,
//!   and the folders above it searchable (o+x: names can be looked up, not listed; a pin
//!   is always mode 0600, so no other pin becomes usable). Pins left by an agent that
//!   ran as root are handed over, so the restart keeps its tracked connections.
//! - The control socket's folder must be writable by the user.
//! - The files the agent reads (config, password, peer key, TLS) must be readable by it.
//!
//! It changes nothing else and is safe to run at every start. The checks that decide
//! (who may read or write what) are pure functions, tested without root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User, chown};

use crate::config::{Config, MysqlEndpoint};
use crate::datapath;

/// What access a path needs: read a file, connect to a socket, or create in a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Create files in a folder: write and search.
    CreateIn,
}

impl Access {
    fn bits(self) -> u32 {
        match self {
            Access::Read => 0o4,
            Access::Write => 0o2,
            Access::CreateIn => 0o3,
        }
    }
}

/// The user the agent runs as.
#[derive(Clone, Debug)]
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group it is in, its primary group included.
    pub groups: Vec<u32>,
}

impl ServiceUser {
    /// Whether the Unix permission bits let this user have `bits` (r=4, w=2, x=1) on a
    /// file owned by `owner`:`group` with `mode`. As the kernel: only one class applies.
    pub fn allowed(&self, owner: u32, group: u32, mode: u32, bits: u32) -> bool {
        let class = if self.uid == owner {
            mode >> 6
        } else if self.groups.contains(&group) {
            mode >> 3
        } else {
            mode
        };
        class & bits == bits
    }

    /// Looks the user up in the passwd and group databases.
    pub fn lookup(name: &str) -> Result<ServiceUser, String> {
        let user = User::from_name(name)
            .map_err(|e| format!("could not look up the user {name:?}: {e}"))?
            .ok_or_else(|| {
                format!(
                    "there is no user {name:?}: create it with `adduser --system --group \
                     --no-create-home {name}` (the .deb package does), or name another \
                     with --user"
                )
            })?;
        let c_name = std::ffi::CString::new(name).map_err(|_| "bad user name".to_string())?;
        let groups = nix::unistd::getgrouplist(&c_name, user.gid)
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_else(|_| vec![user.gid.as_raw()]);
        Ok(ServiceUser {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        })
    }

    /// Why this user cannot have `access` to `path` (every folder above it searched),
    /// or `None`.
    pub fn denied(&self, path: &Path, access: Access) -> Option<String> {
        let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut walked = PathBuf::from("/");
        for part in path
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
            .skip(1)
        {
            walked.push(part);
            match std::fs::metadata(&walked) {
                Ok(m) if self.allowed(m.uid(), m.gid(), m.mode(), 0o1) => {}
                Ok(m) => {
                    return Some(format!(
                        "the folder {} (owner {}:{}, mode {:04o}) does not let {} search it",
                        walked.display(),
                        m.uid(),
                        m.gid(),
                        m.mode() & 0o7777,
                        self.name
                    ));
                }
                Err(e) => return Some(format!("{}: {e}", walked.display())),
            }
        }
        match std::fs::metadata(path) {
            Ok(m) if self.allowed(m.uid(), m.gid(), m.mode(), access.bits()) => None,
            Ok(m) => Some(format!(
                "{} (owner {}:{}, mode {:04o}) is not {} by {}",
                path.display(),
                m.uid(),
                m.gid(),
                m.mode() & 0o7777,
                match access {
                    Access::Read => "readable",
                    Access::Write => "writable",
                    Access::CreateIn => "writable",
                },
                self.name
            )),
            Err(e) => Some(format!("{}: {e}", path.display())),
        }
    }
}

/// The files the agent reads, with the fix for each when the user cannot read it.
fn files_read(cfg: &Config, config_path: &Path, user: &str) -> Vec<(PathBuf, Access, String)> {
    let shared = |p: &Path| format!("chown root:{user} {0} && chmod 0640 {0}", p.display());
    let mut files = vec![(config_path.to_path_buf(), Access::Read, shared(config_path))];
    files.push((
        cfg.mysql.password_file.clone(),
        Access::Read,
        shared(&cfg.mysql.password_file),
    ));
    if let Some(key) = &cfg.peer.key_file {
        // The key must stay mode 0600 (the agent refuses a key others can read).
        files.push((
            key.clone(),
            Access::Read,
            format!("chown {user}:{user} {}", key.display()),
        ));
    }
    if let Some(tls) = &cfg.mysql.tls {
        for p in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
            files.push((p.clone(), Access::Read, shared(p)));
        }
    }
    if let MysqlEndpoint::Socket(socket) = &cfg.mysql.endpoint {
        files.push((
            socket.clone(),
            Access::Write,
            format!(
                "make mysqld's socket reachable by {user} (it usually is: mode 0777 in a \
                 searchable folder)"
            ),
        ));
    }
    files
}

/// Runs the preparation. Returns what was done, or every problem with its fix.
pub fn run(cfg: &Config, config_path: &Path, user: &str) -> Result<Vec<String>, Vec<String>> {
    if !Uid::effective().is_root() {
        return Err(vec![
            "vip-agent prepare must run as root (the unit runs it as \
             `ExecStartPre=+/usr/bin/vip-agent prepare …`; the + gives it root)"
                .into(),
        ]);
    }
    let user = ServiceUser::lookup(user).map_err(|e| vec![e])?;
    let mut done = Vec::new();
    if let Some(note) = name_mismatch(cfg, config_path) {
        done.push(note);
    }
    let mut problems = Vec::new();
    match prepare_pins(cfg, &user) {
        Ok(lines) => done.extend(lines),
        Err(e) => problems.push(e),
    }
    let socket_dir = cfg.control.socket.parent().unwrap_or(Path::new("/"));
    if !socket_dir.exists() {
        let made = std::fs::create_dir_all(socket_dir)
            .and_then(|()| std::fs::set_permissions(socket_dir, PermissionsExt::from_mode(0o700)))
            .map_err(|e| e.to_string())
            .and_then(|()| give(socket_dir, &user));
        match made {
            Ok(()) => done.push(format!(
                "created {} for the control socket, owned by {}",
                socket_dir.display(),
                user.name
            )),
            Err(e) => problems.push(format!("{}: {e}", socket_dir.display())),
        }
    } else if let Some(why) = user.denied(socket_dir, Access::CreateIn) {
        problems.push(format!(
            "control.socket: {why}; the agent creates its socket there. Fix: `chown {} {}`, \
             or put control.socket in a folder {} owns (the packaged unit's \
             RuntimeDirectory=vip-agent makes /run/vip-agent)",
            user.name,
            socket_dir.display(),
            user.name
        ));
    }
    for (path, access, fix) in files_read(cfg, config_path, &user.name) {
        if let Some(why) = user.denied(&path, access) {
            problems.push(format!("{why}. Fix: {fix}"));
        }
    }
    if problems.is_empty() {
        Ok(done)
    } else {
        Err(problems)
    }
}

/// A note when the file's name is not the instance's: the unit `vip-agent@NAME` reads
/// `/etc/vip-agent/NAME.toml`, while the socket, the pins and `status`' hints follow
/// `instance`, so two names for one agent confuse whoever looks for it.
fn name_mismatch(cfg: &Config, config_path: &Path) -> Option<String> {
    let stem = config_path.file_stem()?.to_str()?;
    (stem != cfg.instance).then(|| {
        format!(
            "note: {} sets instance = {:?}; name the file {}.toml (and the unit \
             vip-agent@{}) so that one name finds the agent everywhere",
            config_path.display(),
            cfg.instance,
            cfg.instance,
            cfg.instance
        )
    })
}

/// The pin folder, owned by the user, reachable through searchable folders.
fn prepare_pins(cfg: &Config, user: &ServiceUser) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    let root = Path::new(datapath::BPFFS);
    datapath::ensure_bpffs(root).map_err(|e| format!("{e:#}"))?;
    let folder = datapath::pin_dir(&cfg.instance).map_err(|e| format!("{e:#}"))?;
    for dir in [root, folder.parent().unwrap_or(root)] {
        let mode = std::fs::metadata(dir).map_err(|e| e.to_string())?.mode() & 0o7777;
        if mode & 0o001 == 0 {
            std::fs::set_permissions(dir, PermissionsExt::from_mode(mode | 0o001))
                .map_err(|e| format!("could not make {} searchable: {e}", dir.display()))?;
            done.push(format!(
                "{} made searchable by others (mode {:04o})",
                dir.display(),
                mode | 0o001
            ));
        }
    }
    let mut handed = 0;
    for entry in std::fs::read_dir(&folder).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let meta = std::fs::metadata(&path).map_err(|e| e.to_string())?;
        if meta.uid() != user.uid {
            give(&path, user)?;
            handed += 1;
        }
    }
    give(&folder, user)?;
    std::fs::set_permissions(&folder, PermissionsExt::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", folder.display()))?;
    done.push(format!(
        "pin folder {} owned by {}{}",
        folder.display(),
        user.name,
        if handed > 0 {
            format!(" ({handed} pins of an earlier run handed over)")
        } else {
            String::new()
        }
    ));
    Ok(done)
}

fn give(path: &Path, user: &ServiceUser) -> Result<(), String> {
    chown(
        path,
        Some(Uid::from_raw(user.uid)),
        Some(Gid::from_raw(user.gid)),
    )
    .map_err(|e| format!("could not give {} to {}: {e}", path.display(), user.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> ServiceUser {
        ServiceUser {
            name: "vip-agent".into(),
            uid: 998,
            gid: 997,
            groups: vec![997, 50],
        }
    }

    #[test]
    fn only_one_permission_class_applies() {
        let u = agent();
        assert!(u.allowed(998, 0, 0o600, 0o4));
        // Owner without the bit: the group's bits do not help, as in the kernel.
        assert!(!u.allowed(998, 997, 0o060, 0o4));
        assert!(u.allowed(0, 997, 0o640, 0o4));
        assert!(u.allowed(0, 50, 0o640, 0o4));
        assert!(!u.allowed(0, 0, 0o640, 0o4));
        assert!(u.allowed(0, 0, 0o644, 0o4));
        // A folder to create in needs write and search.
        assert!(!u.allowed(0, 997, 0o750, Access::CreateIn.bits()));
        assert!(u.allowed(998, 997, 0o700, Access::CreateIn.bits()));
        // systemd's bpffs (0700 root) cannot be searched; o+x fixes that.
        assert!(!u.allowed(0, 0, 0o700, 0o1));
        assert!(u.allowed(0, 0, 0o701, 0o1));
    }

    #[test]
    fn a_file_root_keeps_to_itself_is_named_with_the_fix() {
        let dir = std::env::temp_dir().join(format!("vip-prepare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("peer.key");
        std::fs::write(&file, "00").unwrap();
        std::fs::set_permissions(&file, PermissionsExt::from_mode(0o600)).unwrap();
        let me = std::fs::metadata(&file).unwrap();
        let other = ServiceUser {
            uid: me.uid() + 1,
            gid: me.gid() + 1,
            groups: vec![me.gid() + 1],
            ..agent()
        };
        let why = other.denied(&file, Access::Read).unwrap();
        assert!(
            why.contains("mode 0600") && why.contains("not readable by vip-agent"),
            "{why}"
        );
        let owner = ServiceUser {
            uid: me.uid(),
            ..other
        };
        assert_eq!(owner.denied(&file, Access::Read), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
