//! A real systemd booted as PID 1 of private namespaces, for tests that install and run
//! the package as an operator would, without changing anything on the host.
//!
//! [`Container::boot`] starts `unshare --pid --fork --mount --uts --ipc --net --cgroup`
//! in a cgroup2 folder of its own, and there:
//! - the root is an overlay of the host's `/` (read-only lower layer) with a tmpfs upper
//!   layer, so `dpkg -i`, new users and units land in memory and vanish with it;
//! - a minimal `/dev` (null, zero, random, … and the console bound to a host file),
//!   fresh sysfs, cgroup2, procfs, tmpfs `/run` and `/tmp`, and a fresh bpffs mounted
//!   mode 0700 as systemd mounts it on a host, so pins stay inside;
//! - `pivot_root`, then `container=vip-tests systemd --system` with a minimal target
//!   (journald only: units start when a test asks).
//!
//! Commands run inside with `nsenter --all` ([`Container::exec`]). Drop powers systemd
//! off (SIGRTMIN+4), kills what is left through the cgroup, and removes the cgroup
//! folders and the mount points; the mounts, the network namespace and the bpffs die
//! with the namespaces. Names are `vipsd-<pid>-<n>`: a run killed before its Drop
//! leaves a cgroup folder and mount points, which the next boot sweeps once their
//! `<pid>` no longer runs. The unshare process also dies with the test (PDEATHSIG).

use std::ffi::CString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The prefix of every container's name (its cgroup folder and its folder in /tmp).
pub const PREFIX: &str = "vipsd-";

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs as PID 1 of the new namespaces (`sh -c INNER sh BASE NAME`): builds the root,
/// pivots into it and becomes systemd.
const INNER: &str = r#"
set -e
B=$1; NAME=$2; R=$B/root
mount --make-rprivate /
mount -t tmpfs -o mode=755 ovl "$B/ovl"
mkdir -p "$B/ovl/upper" "$B/ovl/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/ovl/upper,workdir=$B/ovl/work" "$R"
mount -t tmpfs -o mode=755,nosuid dev "$R/dev"
for d in null zero full random urandom tty; do
    touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"
done
mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
touch "$R/dev/console"; mount --bind "$B/console" "$R/dev/console"
mount -t sysfs sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t bpf -o mode=700,nosuid,nodev,noexec bpf "$R/sys/fs/bpf"
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
cat > "$R/etc/systemd/system/vip-tests.target" <<EOF
[Unit]
Description=vip-tests: a minimal boot (journald only)
Requires=systemd-journald.socket
After=systemd-journald.socket
AllowIsolate=yes
EOF
echo "$NAME" > "$R/etc/hostname"
cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
export container=vip-tests
exec /lib/systemd/systemd --system --unit=vip-tests.target --show-status=no \
    </dev/console >/dev/console 2>&1
"#;

/// A booted systemd in private namespaces. Dropping it tears everything down.
pub struct Container {
    name: String,
    /// `/tmp/<name>` on the host: the overlay's mount points and the console's file.
    base: PathBuf,
    cgroup: PathBuf,
    unshare: Child,
    /// The host's pid of the container's PID 1 (systemd once booted).
    init: libc::pid_t,
}

impl Container {
    /// Boots a container and waits until systemd has reached its target.
    pub fn boot() -> Result<Container> {
        if !Path::new("/lib/systemd/systemd").is_file() {
            bail!("booting a container needs systemd on the host: `apt-get install systemd`");
        }
        sweep_stale();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let base = Path::new("/tmp").join(&name);
        let cgroup = cgroup2_root()?.join(&name);
        for dir in [base.join("ovl"), base.join("root")] {
            std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        }
        std::fs::write(base.join("console"), b"")?;
        std::fs::create_dir(&cgroup).with_context(|| format!("mkdir {}", cgroup.display()))?;
        let log = std::fs::File::create(base.join("unshare.log"))?;
        let procs = CString::new(
            cgroup
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .context("cgroup path")?;
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--cgroup",
            "--kill-child=SIGKILL",
            "/bin/sh",
            "-c",
            INNER,
            "sh",
        ])
        .arg(&base)
        .arg(&name)
        .env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        // SAFETY: only async-signal-safe calls (setsid, prctl, open, write, close) on
        // data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                // The container dies with the test process, even on SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Into our own cgroup before the namespaces: the container's cgroup
                // root, which systemd manages.
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let unshare = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                remove_leftovers(&cgroup, &base);
                return Err(e).context("could not start unshare (util-linux)");
            }
        };
        let mut c = Container {
            name,
            base,
            cgroup,
            unshare,
            init: 0,
        };
        c.wait_booted()?;
        Ok(c)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What systemd and the boot script printed, for failure messages.
    pub fn console(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.base.join(f)).unwrap_or_default();
        format!("{}{}", read("unshare.log"), read("console"))
    }

    fn wait_booted(&mut self) -> Result<()> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let pid = self.unshare.id();
        loop {
            if let Some(status) = self.unshare.try_wait()? {
                bail!(
                    "the container exited at boot ({status}):\n{}",
                    self.console()
                );
            }
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            if let Some(init) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
            {
                let exe = std::fs::read_link(format!("/proc/{init}/exe")).unwrap_or_default();
                if exe.ends_with("systemd") {
                    self.init = init;
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "systemd did not start in the container:\n{}",
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            // `running`, or `degraded` when some unit of the minimal boot failed: both
            // mean the boot is done and the manager takes requests.
            let out = self.exec(&["systemctl", "is-system-running"])?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "systemd did not finish booting ({state}):\n{}",
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command in every namespace of the container, as root, and returns its
    /// output whatever its status.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        self.exec_with_input(args, None)
    }

    fn exec_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Result<Output> {
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(self.init.to_string())
            .arg("--all")
            .arg("--")
            .args(args)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start nsenter for {args:?}"))?;
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().expect("piped");
            stdin.write_all(bytes)?;
        }
        child
            .wait_with_output()
            .with_context(|| format!("{args:?} in {}", self.name))
    }

    /// Runs a command in the container; fails with its stderr unless it succeeds.
    /// Returns its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args)?;
        checked(args, out)
    }

    /// Runs a shell script in the container (`sh -c`); fails unless it succeeds.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.run(&["sh", "-c", script])
    }

    /// Writes a file in the container (created or replaced).
    pub fn write(&self, path: &str, contents: &[u8]) -> Result<()> {
        let args = ["sh", "-c", "cat > \"$1\"", "sh", path];
        let out = self.exec_with_input(&args, Some(contents))?;
        checked(&args, out).map(drop)
    }
}

fn checked(args: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.init > 0 {
            // SIGRTMIN+4: systemd's "poweroff"; as a container's init it then exits,
            // and its pid namespace with it.
            // SAFETY: a signal to the container's init, a pid we own.
            unsafe { libc::kill(self.init, libc::SIGRTMIN() + 4) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline && matches!(self.unshare.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.unshare.try_wait(), Ok(None)) {
            // --kill-child then SIGKILLs the init, which ends the whole namespace.
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
        remove_leftovers(&self.cgroup, &self.base);
    }
}

/// The host's cgroup2 mount: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified`
/// on a hybrid one.
fn cgroup2_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .min_by_key(|p| p.as_os_str().len())
        .context("no cgroup2 hierarchy is mounted (systemd in a container needs one)")
}

/// Kills whatever still runs in the cgroup and removes its folders (deepest first), then
/// the mount points.
fn remove_leftovers(cgroup: &Path, base: &Path) {
    if cgroup.is_dir() {
        if std::fs::write(cgroup.join("cgroup.kill"), b"1").is_err() {
            kill_all_in(cgroup);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while let Err(e) = remove_cgroup(cgroup) {
            if Instant::now() > deadline {
                log::warn!("container cleanup: {}: {e}", cgroup.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Plain folders on the host: the mounts on them lived in the dead mount namespace.
    if let Err(e) = std::fs::remove_dir_all(base)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        log::warn!("container cleanup: {}: {e}", base.display());
    }
}

/// Kernels before 5.14 have no cgroup.kill: SIGKILL every process listed.
fn kill_all_in(cgroup: &Path) {
    if let Ok(procs) = std::fs::read_to_string(cgroup.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|p| p.parse::<libc::pid_t>().ok()) {
            // SAFETY: kill(2) on a process of the container's cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for dir in subdirs(cgroup) {
        kill_all_in(&dir);
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    for sub in subdirs(dir) {
        remove_cgroup(&sub)?;
    }
    std::fs::remove_dir(dir)
}

/// Removes the cgroups and mount points of containers whose test process is gone.
pub fn sweep_stale() {
    let owner_gone = |name: &str| {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
            .filter(|&pid| pid > 0);
        pid.is_some_and(|pid| {
            // SAFETY: signal 0 only checks that the pid exists.
            let gone = unsafe { libc::kill(pid, 0) } != 0;
            gone && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        })
    };
    let Ok(root) = cgroup2_root() else { return };
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(String::from))
                    .filter(|n| owner_gone(n))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut stale = names(&root);
    stale.extend(names(Path::new("/tmp")));
    stale.sort();
    stale.dedup();
    for name in stale {
        log::info!("removing stale container {name}");
        remove_leftovers(&root.join(&name), &Path::new("/tmp").join(&name));
    }
}
