//! Paths as root walks them for `prepare`: never through a link that anyone but root
//! could have planted, and every change made on a descriptor of the very inode that was
//! checked, so that a swap between the check and the change cannot redirect it.
//!
//! `prepare` runs as unsandboxed root before every start of an agent whose user owns
//! its pin folder. A compromised agent could leave `x -> /etc/shadow` (or a hard link to
//! a root-owned pin) there and exit; a `chown` that follows it would hand the file over.
//! Here a folder is opened component by component with `O_NOFOLLOW | O_DIRECTORY`, an
//! entry is opened with `O_PATH | O_NOFOLLOW` and inspected with `fstat` on that
//! descriptor, and owners change with `fchownat(fd, "", AT_EMPTY_PATH)` on it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, fchownat};

/// How many symbolic links one path may go through (as the kernel's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// A folder open for reading, reached without following an untrusted link.
pub struct Dir {
    pub fd: OwnedFd,
    /// The path it was reached by, with every trusted link resolved.
    pub path: PathBuf,
}

/// What a path leads to, and the folders on the way (for the search-permission checks).
pub struct Resolved {
    /// Every folder walked through, from `/` down to the one holding the target.
    pub folders: Vec<(PathBuf, FileStat)>,
    /// The target's path with trusted links resolved, and its status (`None`: absent).
    pub path: PathBuf,
    pub target: Option<FileStat>,
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

pub fn is_dir(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFDIR
}

pub fn is_file(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFREG
}

pub fn is_link(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFLNK
}

/// Opens `name` in `dir` as a folder, refusing a link.
fn open_child(dir: &impl AsFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn open_root() -> Result<OwnedFd, String> {
    nix::fcntl::open(
        "/",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open /: {e}"))
}

/// Walks `path` (absolute) from `/`. A symbolic link on the way is followed only when
/// root owns it; any other is an error that names it. The last component may be absent.
pub fn resolve(path: &Path) -> Result<Resolved, String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    let mut pending: Vec<PathBuf> = components(path);
    pending.reverse();
    let mut stack: Vec<(OwnedFd, PathBuf, FileStat)> = Vec::new();
    let root = open_root()?;
    let root_st = fstat(&root).map_err(|e| format!("/: {e}"))?;
    stack.push((root, PathBuf::from("/"), root_st));
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name.as_os_str() == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let (dir, dir_path, _) = stack.last().expect("the root stays on the stack");
        let here = dir_path.join(&name);
        let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) if pending.is_empty() => {
                return Ok(finish(stack, here, None));
            }
            Err(e) => return Err(format!("{}: {}", here.display(), e.desc())),
        };
        if is_link(&st) {
            if st.st_uid != 0 {
                return Err(format!(
                    "{} is a symbolic link owned by uid {}, not root; prepare runs as root \
                     and follows only root's links. Name the real path in the config",
                    here.display(),
                    st.st_uid
                ));
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(format!(
                    "{}: too many levels of symbolic links",
                    here.display()
                ));
            }
            let target = readlinkat(dir, name.as_os_str())
                .map_err(|e| format!("{}: {}", here.display(), e.desc()))?;
            let target = PathBuf::from(target);
            if target.is_absolute() {
                stack.truncate(1);
            }
            let mut more = components(&target);
            more.reverse();
            pending.extend(more);
            continue;
        }
        if pending.is_empty() {
            return Ok(finish(stack, here, Some(st)));
        }
        if !is_dir(&st) {
            return Err(format!("{} is not a folder", here.display()));
        }
        let fd = open_child(dir, name.as_os_str())
            .map_err(|e| format!("{}: {}", here.display(), e.desc()))?;
        stack.push((fd, here, st));
    }
    // The path was `/` itself (or resolved to it).
    let (_, path, st) = stack.pop().expect("the root stays on the stack");
    Ok(Resolved {
        folders: Vec::new(),
        path,
        target: Some(st),
    })
}

fn finish(
    stack: Vec<(OwnedFd, PathBuf, FileStat)>,
    path: PathBuf,
    st: Option<FileStat>,
) -> Resolved {
    Resolved {
        folders: stack.into_iter().map(|(_, p, st)| (p, st)).collect(),
        path,
        target: st,
    }
}

/// The normal components of a path, `..` kept (it is resolved against the real parent).
fn components(path: &Path) -> Vec<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

/// Opens the folder at `path`, every component a real folder: no link of any owner is
/// followed (the folders prepare changes are root's own, and never reached by a link).
pub fn open_dir(path: &Path) -> Result<Dir, String> {
    let mut fd = open_root()?;
    let mut walked = PathBuf::from("/");
    for part in components(path) {
        walked.push(&part);
        fd = open_child(&fd, part.as_os_str()).map_err(|e| no_follow_error(&walked, e))?;
    }
    Ok(Dir { fd, path: walked })
}

fn no_follow_error(path: &Path, e: Errno) -> String {
    match e {
        // O_NOFOLLOW | O_DIRECTORY on a link: ELOOP, or ENOTDIR on some file systems.
        Errno::ELOOP | Errno::ENOTDIR => format!(
            "{} is a symbolic link or not a folder; prepare does not follow links there",
            path.display()
        ),
        e => format!("{}: {}", path.display(), e.desc()),
    }
}

impl Dir {
    /// The sub-folder `name`, made with `mode` if it is missing (a link is refused).
    pub fn make_dir(&self, name: &str, mode: u32) -> Result<(Dir, bool), String> {
        let path = self.path.join(name);
        let made = match mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(format!("cannot create {}: {}", path.display(), e.desc())),
        };
        let fd = open_child(&self.fd, OsStr::new(name)).map_err(|e| no_follow_error(&path, e))?;
        Ok((Dir { fd, path }, made))
    }

    pub fn stat(&self) -> Result<FileStat, String> {
        fstat(&self.fd).map_err(|e| format!("{}: {}", self.path.display(), e.desc()))
    }

    pub fn chmod(&self, mode: u32) -> Result<(), String> {
        fchmod(&self.fd, Mode::from_bits_truncate(mode))
            .map_err(|e| format!("cannot chmod {}: {}", self.path.display(), e.desc()))
    }

    pub fn chown(&self, uid: u32, gid: u32) -> Result<(), String> {
        chown_fd(&self.fd, uid, gid)
            .map_err(|e| format!("cannot chown {}: {}", self.path.display(), e.desc()))
    }

    /// The names in this folder (`.` and `..` left out).
    pub fn names(&self) -> Result<Vec<std::ffi::OsString>, String> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut dir = nix::dir::Dir::from_fd(fd)
            .map_err(|e| format!("cannot list {}: {}", self.path.display(), e.desc()))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry =
                entry.map_err(|e| format!("listing {}: {}", self.path.display(), e.desc()))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// The entry `name`, opened without following it: a link opens as the link itself.
    pub fn entry(&self, name: &OsStr) -> Result<Entry, String> {
        let path = self.path.join(name);
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("{}: {}", path.display(), e.desc()))?;
        let stat = fstat(&fd).map_err(|e| format!("{}: {}", path.display(), e.desc()))?;
        Ok(Entry { fd, path, stat })
    }

    /// The file system's magic number (statfs f_type).
    pub fn fs_type(&self) -> Result<i64, String> {
        nix::sys::statfs::fstatfs(&self.fd)
            .map(|s| s.filesystem_type().0)
            .map_err(|e| format!("{}: {}", self.path.display(), e.desc()))
    }
}

/// One entry of a folder, held by an `O_PATH` descriptor: what was inspected is what
/// is changed.
pub struct Entry {
    fd: OwnedFd,
    pub path: PathBuf,
    pub stat: FileStat,
}

impl Entry {
    pub fn chown(&self, uid: u32, gid: u32) -> Result<(), String> {
        chown_fd(&self.fd, uid, gid)
            .map_err(|e| format!("cannot chown {}: {}", self.path.display(), e.desc()))
    }
}

/// chown of the inode behind `fd` (also an `O_PATH` one), never of what a path names.
fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> nix::Result<()> {
    fchownat(
        fd,
        "",
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_EMPTY_PATH,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "vip-walk-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn as_root() -> bool {
        Uid::effective().is_root()
    }

    #[test]
    fn a_path_without_links_resolves_to_itself() {
        let s = Scratch::new("plain");
        let file = s.0.join("a.toml");
        std::fs::write(&file, "x").unwrap();
        let r = resolve(&file).unwrap();
        assert_eq!(r.path, file);
        assert!(is_file(&r.target.unwrap()));
        assert_eq!(r.folders.last().unwrap().0, s.0);
        let absent = resolve(&s.0.join("missing")).unwrap();
        assert!(absent.target.is_none());
        assert!(resolve(&s.0.join("missing/deeper")).is_err());
        assert!(resolve(Path::new("relative")).is_err());
    }

    #[test]
    fn only_roots_links_are_followed() {
        let s = Scratch::new("links");
        let file = s.0.join("real");
        std::fs::write(&file, "x").unwrap();
        let link = s.0.join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        let st = fstatat(nix::fcntl::AT_FDCWD, &link, AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
        if st.st_uid == 0 {
            let r = resolve(&link).unwrap();
            assert_eq!(r.path, file);
        } else {
            let e = resolve(&link).err().unwrap();
            assert!(e.contains("symbolic link owned by uid"), "{e}");
        }
        // A link owned by someone else is never followed, whoever runs this.
        if as_root() {
            fchownat(
                nix::fcntl::AT_FDCWD,
                &link,
                Some(Uid::from_raw(65534)),
                None,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap();
            let e = resolve(&link).err().unwrap();
            assert!(e.contains("owned by uid 65534, not root"), "{e}");
            let e = resolve(&link.join("x")).err().unwrap();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn open_dir_refuses_any_link() {
        let s = Scratch::new("open");
        std::fs::create_dir(s.0.join("d")).unwrap();
        std::os::unix::fs::symlink("d", s.0.join("l")).unwrap();
        assert!(open_dir(&s.0.join("d")).is_ok());
        let e = open_dir(&s.0.join("l")).err().unwrap();
        assert!(e.contains("symbolic link"), "{e}");
        let dir = open_dir(&s.0).unwrap();
        let (sub, made) = dir.make_dir("new", 0o700).unwrap();
        assert!(made && is_dir(&sub.stat().unwrap()));
        assert!(!dir.make_dir("new", 0o700).unwrap().1);
        assert!(dir.make_dir("l", 0o700).is_err());
        let mut names = dir.names().unwrap();
        names.sort();
        assert_eq!(names, ["d", "l", "new"]);
        let entry = dir.entry(OsStr::new("l")).unwrap();
        assert!(is_link(&entry.stat));
    }
}
