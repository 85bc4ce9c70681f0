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
//! It changes nothing else and is safe to run at every start. It never follows a link
//! planted by the service user ([`walk`]): anything in the pin folder that is not one of
//! the agent's own pins (a link, a hard-linked file, an unknown name, a folder) is left
//! alone and named in the output. The checks that decide (who may read or write what)
//! are pure functions, tested without root.

mod walk;

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

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
    /// or `None`. The path is walked as [`walk::resolve`] walks it: a link that root
    /// does not own is itself a problem, and is not followed.
    pub fn denied(&self, path: &Path, access: Access) -> Option<String> {
        let resolved = match walk::resolve(path) {
            Ok(r) => r,
            Err(e) => return Some(e),
        };
        for (folder, st) in &resolved.folders {
            if !self.allowed(st.st_uid, st.st_gid, st.st_mode, 0o1) {
                return Some(format!(
                    "the folder {} (owner {}:{}, mode {:04o}) does not let {} search it",
                    folder.display(),
                    st.st_uid,
                    st.st_gid,
                    st.st_mode & 0o7777,
                    self.name
                ));
            }
        }
        let Some(st) = resolved.target else {
            return Some(format!("{}: No such file or directory", path.display()));
        };
        if self.allowed(st.st_uid, st.st_gid, st.st_mode, access.bits()) {
            return None;
        }
        Some(format!(
            "{} (owner {}:{}, mode {:04o}) is not {} by {}",
            resolved.path.display(),
            st.st_uid,
            st.st_gid,
            st.st_mode & 0o7777,
            match access {
                Access::Read => "readable",
                Access::Write | Access::CreateIn => "writable",
            },
            self.name
        ))
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

/// What a preparation did, and what still stops the agent from starting.
#[derive(Debug, Default)]
pub struct Report {
    /// What was changed or noticed (warnings included), for the journal.
    pub done: Vec<String>,
    /// Each problem with its fix; the agent cannot start while there is one.
    pub problems: Vec<String>,
}

/// Runs the preparation: everything it can do is done, every problem is reported.
pub fn run(cfg: &Config, config_path: &Path, user: &str) -> Report {
    let mut report = Report::default();
    if !Uid::effective().is_root() {
        report.problems.push(
            "vip-agent prepare must run as root (the unit runs it as \
             `ExecStartPre=+/usr/bin/vip-agent prepare …`; the + gives it root)"
                .into(),
        );
        return report;
    }
    let user = match ServiceUser::lookup(user) {
        Ok(user) => user,
        Err(e) => {
            report.problems.push(e);
            return report;
        }
    };
    if let Some(note) = name_mismatch(cfg, config_path) {
        report.done.push(note);
    }
    match prepare_pins(cfg, &user) {
        Ok(lines) => report.done.extend(lines),
        Err(e) => report.problems.push(e),
    }
    let socket_dir = cfg.control.socket.parent().unwrap_or(Path::new("/"));
    match socket_folder(socket_dir, &user) {
        Ok(Some(line)) => report.done.push(line),
        Ok(None) => {}
        Err(e) => report.problems.push(e),
    }
    for (path, access, fix) in files_read(cfg, config_path, &user.name) {
        if let Some(why) = user.denied(&path, access) {
            report.problems.push(format!("{why}. Fix: {fix}"));
        } else if cfg.peer.key_file.as_ref() == Some(&path)
            && let Err(e) = crate::peer::key::Key::load_owned_by(&path, &[0, user.uid])
        {
            // Readable, but not a key the agent will accept (owner, mode, contents).
            report.problems.push(e.to_string());
        }
    }
    report
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

/// The control socket's folder: made (mode 0700, the user's) when it is missing, else
/// checked. Each missing folder is made inside one opened without following links.
fn socket_folder(dir: &Path, user: &ServiceUser) -> Result<Option<String>, String> {
    let resolved = walk::resolve(dir).map_err(|e| format!("control.socket: {e}"))?;
    if resolved.target.is_some() {
        return match user.denied(dir, Access::CreateIn) {
            None => Ok(None),
            Some(why) => Err(format!(
                "control.socket: {why}; the agent creates its socket there. Fix: `chown {} {}`, \
                 or put control.socket in a folder {} owns (the packaged unit's \
                 RuntimeDirectory=vip-agent makes /run/vip-agent)",
                user.name,
                dir.display(),
                user.name
            )),
        };
    }
    // Walk down from the deepest folder that exists, making the rest.
    let mut existing = resolved.path.clone();
    let mut missing = Vec::new();
    while walk::resolve(&existing).is_ok_and(|r| r.target.is_none()) {
        let Some(name) = existing
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            break;
        };
        missing.push(name);
        existing.pop();
    }
    let mut folder = walk::open_dir(&existing).map_err(|e| format!("control.socket: {e}"))?;
    while let Some(name) = missing.pop() {
        let mode = if missing.is_empty() { 0o700 } else { 0o755 };
        folder = folder.make_dir(&name, mode)?.0;
    }
    folder.chmod(0o700)?;
    folder.chown(user.uid, user.gid)?;
    Ok(Some(format!(
        "created {} for the control socket, owned by {}",
        folder.path.display(),
        user.name
    )))
}

/// The pin folder, owned by the user, reachable through searchable folders. Only the
/// agent's own pins are handed over; anything else found there is left alone and named.
fn prepare_pins(cfg: &Config, user: &ServiceUser) -> Result<Vec<String>, String> {
    datapath::check_instance(&cfg.instance).map_err(|e| format!("{e:#}"))?;
    let mut done = Vec::new();
    let bpffs = walk::open_dir(Path::new(datapath::BPFFS))?;
    if bpffs.fs_type()? != datapath::BPF_FS_MAGIC {
        datapath::ensure_bpffs(&bpffs.path).map_err(|e| format!("{e:#}"))?;
    }
    let (root, _) = bpffs.make_dir(datapath::PIN_ROOT, 0o700)?;
    for dir in [&bpffs, &root] {
        let mode = dir.stat()?.st_mode & 0o7777;
        if mode & 0o001 == 0 {
            dir.chmod(mode | 0o001)?;
            done.push(format!(
                "{} made searchable by others (mode {:04o})",
                dir.path.display(),
                mode | 0o001
            ));
        }
    }
    let (folder, _) = root.make_dir(&cfg.instance, 0o700)?;
    let pins: Vec<&str> = datapath::pins::names().collect();
    let mut handed = 0;
    let mut skipped = Vec::new();
    for name in folder.names()? {
        let entry = folder.entry(&name)?;
        let st = &entry.stat;
        let why = if walk::is_link(st) {
            Some("a symbolic link".to_string())
        } else if walk::is_dir(st) {
            Some("a folder".to_string())
        } else if !walk::is_file(st) {
            Some("not a pin".to_string())
        } else if st.st_nlink != 1 {
            Some(format!("a file with {} hard links", st.st_nlink))
        } else if !pins.iter().any(|p| name == *p) {
            Some("not a name vip-agent pins".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            skipped.push(format!("{} ({why})", entry.path.display()));
            continue;
        }
        if st.st_uid != user.uid || st.st_gid != user.gid {
            entry.chown(user.uid, user.gid)?;
            handed += 1;
        }
    }
    folder.chown(user.uid, user.gid)?;
    folder.chmod(0o700)?;
    done.push(format!(
        "pin folder {} owned by {}{}",
        folder.path.display(),
        user.name,
        if handed > 0 {
            format!(" ({handed} pins of an earlier run handed over)")
        } else {
            String::new()
        }
    ));
    if !skipped.is_empty() {
        done.push(format!(
            "warning: left alone in the pin folder, not vip-agent's pins: {}. Remove them \
             (`rm` as root); vip-agent never makes them",
            skipped.join("; ")
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
