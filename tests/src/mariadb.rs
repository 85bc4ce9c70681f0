//! A private, real MariaDB server for the tests of vip-agent's MGR poller: what the
//! simulated group cannot prove (a real handshake and authentication, a real
//! max_connections, TLS with real certificates, a mysqld that is stopped or killed).
//!
//! Each [`MariaDb`] is a `mariadbd` child process of the test, with its own data
//! directory, unix socket and TCP port on 127.0.0.1 (or, with [`MariaDbBuilder::netns`],
//! on every address of a lab host), in a temporary directory `vipdb-<pid>-<n>` under
//! [`std::env::temp_dir`]. Nothing of the system's MariaDB is
//! used or touched: no config file is read (`--no-defaults`), no service is started.
//! Dropping it kills the process and removes the directory, even when the test panics;
//! directories left by a test process that was killed are removed by the next one.
//!
//! Besides root (no password, over the socket), the server has the agent's account
//! [`USER`] (`'vip'@'%'` and `'vip'@'localhost'`, password [`PASSWORD`], no SUPER) and,
//! with TLS, [`TLS_USER`] (`'vip_tls'@'%'`, `REQUIRE SSL`, same password).
//!
//! ```no_run
//! # fn f() -> anyhow::Result<()> {
//! use vip_tests::mariadb::MariaDb;
//! if !vip_tests::mariadb::available() {
//!     return Ok(());
//! }
//! let db = MariaDb::builder().max_connections(10).tls().start()?;
//! println!("127.0.0.1:{} and {}", db.port(), db.socket().display());
//! db.pause()?; // SIGSTOP: a hung mysqld
//! db.resume()?;
//! # Ok(()) }
//! ```

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The agent's account: `'vip'@'%'` (TCP) and `'vip'@'localhost'` (socket).
pub const USER: &str = "vip";
/// The password of [`USER`] and [`TLS_USER`].
pub const PASSWORD: &str = "secret";
/// An account that must connect with TLS (`REQUIRE SSL`); only on a server with TLS.
pub const TLS_USER: &str = "vip_tls";

/// The prefix of every server's temporary directory.
const PREFIX: &str = "vipdb-";
/// How long a server may take to initialise, start or stop (generous: CI machines are slow).
const DEADLINE: Duration = Duration::from_secs(30);

const INSTALL_DB: &str = "mariadb-install-db";
const MARIADBD: &str = "mariadbd";
const OPENSSL: &str = "openssl";

/// Whether the MariaDB tests can run: `mariadbd`, `mariadb-install-db` and `openssl` are
/// installed (`cargo xtask test` installs them).
///
/// Outside CI a missing binary skips the test with a note on stderr. Under `CI=true` a
/// skip would hide a failure, so it panics instead.
pub fn available() -> bool {
    let missing: Vec<&str> = [MARIADBD, INSTALL_DB, OPENSSL]
        .into_iter()
        .filter(|b| find_binary(b).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let what = format!(
        "{} not found: install the Debian packages mariadb-server-core, mariadb-client-core \
         and openssl (`cargo xtask test` does)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}, and CI=true forbids skipping this test");
    }
    eprintln!("SKIPPED: {what}");
    false
}

/// `name` on PATH, or in the sbin directories a non-root PATH often lacks.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn binary(name: &str) -> Result<PathBuf> {
    find_binary(name).with_context(|| {
        format!("{name} not found; install mariadb-server-core, mariadb-client-core, openssl")
    })
}

/// The certificates of a server started with [`MariaDbBuilder::tls`], made with the
/// `openssl` CLI (ECDSA P-256, valid for two days).
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// Another CA, which signed nothing this server presents.
    pub other_ca: PathBuf,
    /// The server's certificate: CN and DNS name [`SERVER_NAME`], IP address 127.0.0.1.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// The DNS name in the server's certificate; "localhost" is deliberately not in it.
pub const SERVER_NAME: &str = "db.vip.test";

impl Certs {
    fn generate(dir: &Path) -> Result<Certs> {
        let openssl = binary(OPENSSL)?;
        // Our own config file, so that the system's openssl.cnf adds nothing.
        let cnf = dir.join("openssl.cnf");
        std::fs::write(
            &cnf,
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n\
                 [ca]\nbasicConstraints = critical, CA:TRUE\n\
                 keyUsage = critical, keyCertSign, cRLSign\n\
                 subjectKeyIdentifier = hash\n\
                 [server]\nbasicConstraints = critical, CA:FALSE\n\
                 keyUsage = critical, digitalSignature\n\
                 extendedKeyUsage = serverAuth\n\
                 subjectAltName = DNS:{SERVER_NAME}, IP:127.0.0.1\n\
                 subjectKeyIdentifier = hash\n\
                 authorityKeyIdentifier = keyid\n"
            ),
        )?;
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .context("running openssl")?;
            if !out.status.success() {
                bail!(
                    "openssl {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        let cnf = cnf.to_str().context("temp dir path is not UTF-8")?;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for (name, cn) in [("ca", "vip-agent test CA"), ("other-ca", "another CA")] {
            let (key, cert, subj) = (
                format!("{name}-key.pem"),
                format!("{name}.pem"),
                format!("/CN={cn}"),
            );
            let mut args = vec!["req", "-config", cnf, "-x509", "-extensions", "ca"];
            args.extend(ec);
            args.extend([
                "-nodes",
                "-keyout",
                key.as_str(),
                "-out",
                cert.as_str(),
                "-days",
                "2",
                "-subj",
                subj.as_str(),
            ]);
            run(&args)?;
        }
        let subj = format!("/CN={SERVER_NAME}");
        let mut args = vec!["req", "-config", cnf, "-new"];
        args.extend(ec);
        args.extend([
            "-nodes",
            "-keyout",
            "server-key.pem",
            "-out",
            "server.csr",
            "-subj",
            subj.as_str(),
        ]);
        run(&args)?;
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            cnf,
            "-extensions",
            "server",
            "-out",
            "server-cert.pem",
        ])?;
        Ok(Certs {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server_cert: dir.join("server-cert.pem"),
            server_key: dir.join("server-key.pem"),
        })
    }
}

/// Options of a [`MariaDb`].
#[derive(Debug, Clone)]
pub struct MariaDbBuilder {
    max_connections: u32,
    tls: bool,
    netns: Option<String>,
    init: Vec<String>,
}

impl MariaDbBuilder {
    /// `--max-connections` (default 20; MariaDB's minimum is 10, and it silently raises a
    /// lower value, so [`MariaDbBuilder::start`] refuses one). MariaDB lets one more
    /// connection in for an account with SUPER (or CONNECTION ADMIN); [`USER`] has neither.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// TLS with certificates made for this server ([`MariaDb::certs`]), and the
    /// [`TLS_USER`] account that requires it.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Runs mariadbd inside network namespace `ns` (a lab host's, [`crate::lab::Host::ns`])
    /// instead of the caller's, listening on 0.0.0.0 at a port free there: clients reach
    /// it through the host's addresses and any VIP bound on it, as a mysqld with
    /// `bind_address=*`. Its unix socket still works from any namespace (unix sockets are
    /// not bound to one).
    pub fn netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_owned());
        self
    }

    /// SQL the server runs as root at its start, after the accounts are made (several
    /// statements, each ending in `;`, may span lines).
    pub fn init_sql(mut self, sql: &str) -> Self {
        self.init.push(sql.to_owned());
        self
    }

    /// The address mariadbd listens on, and the namespace it does so in.
    fn listen(&self) -> (Option<&str>, IpAddr) {
        match &self.netns {
            Some(ns) => (Some(ns), Ipv4Addr::UNSPECIFIED.into()),
            None => (None, Ipv4Addr::LOCALHOST.into()),
        }
    }

    /// Initialises the data directory, starts mariadbd and waits until it accepts
    /// connections. Call it from the test's own thread: mariadbd gets SIGKILL when the
    /// thread that started it ends.
    pub fn start(self) -> Result<MariaDb> {
        if self.max_connections < 10 {
            bail!(
                "max_connections {} is below MariaDB's minimum of 10, which it would use instead",
                self.max_connections
            );
        }
        sweep_stale();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // From here on, Drop removes the directory whatever fails.
        let mut db = MariaDb {
            dir,
            port: 0,
            child: None,
            certs: None,
        };
        db.socket_len_ok()?;
        if self.tls {
            db.certs = Some(Certs::generate(&db.dir)?);
        }
        db.install(&self)?;
        // The port is picked by binding port 0 and released for mariadbd: another process
        // can take it in between, so a failed bind is retried with a new port.
        for attempt in 1..=3 {
            match db.launch(&self) {
                Ok(()) => return Ok(db),
                Err(e) if attempt < 3 && e.to_string().contains("port already in use") => {
                    log::warn!("{e:#}; retrying with another port");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }
}

/// A running private mariadbd; see the module documentation.
pub struct MariaDb {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    certs: Option<Certs>,
}

impl MariaDb {
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder {
            max_connections: 20,
            tls: false,
            netns: None,
            init: Vec::new(),
        }
    }

    /// The process id of mariadbd (while it runs).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("mariadbd is not running")
    }

    /// Its TCP port: on 127.0.0.1, or on every address of the namespace given to
    /// [`MariaDbBuilder::netns`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    /// The certificates, on a server started with TLS.
    pub fn certs(&self) -> Option<&Certs> {
        self.certs.as_ref()
    }

    /// The server's error log, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// A clean shutdown: SIGTERM, then waits until mariadbd has exited (it removes its
    /// socket file on the way out).
    pub fn stop(&mut self) -> Result<()> {
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + DEADLINE;
        // The child stays in `self` until it is reaped, so Drop kills it on any error.
        let child = self.child.as_mut().expect("mariadbd is running");
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("mariadbd did not stop within {DEADLINE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = None;
        Ok(())
    }

    /// A crash: SIGKILL, then reaps the process. The socket file stays behind, as after
    /// a real crash.
    pub fn kill(&mut self) -> Result<()> {
        let child = self.child.as_mut().expect("mariadbd is running");
        child.kill()?;
        child.wait()?;
        self.child = None;
        Ok(())
    }

    /// A hung mysqld: SIGSTOP, and waits until the kernel shows the process stopped. The
    /// kernel still completes TCP handshakes on its listening socket (into the backlog),
    /// but nothing is ever answered.
    pub fn pause(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.wait_state("stopped", |s| s == 'T')
    }

    /// SIGCONT after [`MariaDb::pause`]; waits until the process runs again.
    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)?;
        self.wait_state("running again", |s| s != 'T')
    }

    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own, not yet reaped, child.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill(mariadbd)");
        }
        Ok(())
    }

    fn wait_state(&self, what: &str, ok: impl Fn(char) -> bool) -> Result<()> {
        let stat = format!("/proc/{}/stat", self.pid());
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = std::fs::read_to_string(&stat).with_context(|| format!("reading {stat}"))?;
            // "<pid> (<comm>) <state> ...": the state follows the last ')'.
            let state = text
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .with_context(|| format!("cannot parse {stat}: {text}"))?;
            if ok(state) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("mariadbd is not {what} after {DEADLINE:?} (state {state})");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A unix socket path must fit in sun_path (108 bytes with the NUL).
    fn socket_len_ok(&self) -> Result<()> {
        let len = self.socket().as_os_str().len();
        if len >= 108 {
            bail!(
                "the socket path {} is {len} bytes, too long for a unix socket; \
                 set TMPDIR to a shorter directory",
                self.socket().display()
            );
        }
        Ok(())
    }

    /// Options shared by the bootstrap and the server: small, fast, nothing written twice.
    fn common_args(&self) -> Vec<String> {
        let mut args = vec![
            // Must come first: no /etc/mysql/my.cnf, nothing of the system's MariaDB.
            "--no-defaults".to_string(),
            format!("--datadir={}", self.dir.join("data").display()),
            // Temporary files of its own: parallel bootstraps sharing /tmp fail now and
            // then ("Could not remove temporary table … Unknown table 'mysql.tmp_user_sys'").
            format!("--tmpdir={}", self.dir.display()),
            "--innodb-buffer-pool-size=16M".into(),
            "--innodb-log-file-size=4M".into(),
            "--innodb-flush-log-at-trx-commit=0".into(),
            "--innodb-doublewrite=0".into(),
            "--skip-log-bin".into(),
        ];
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            args.push("--user=root".into());
        }
        args
    }

    /// mariadb-install-db: the system tables, without the test database; root gets a
    /// normal (empty) password instead of unix_socket authentication.
    fn install(&self, opts: &MariaDbBuilder) -> Result<()> {
        let log = self.dir.join("install.log");
        let status = Command::new(binary(INSTALL_DB)?)
            .args(self.common_args())
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(self.dir.join("install.err"))?)
            .status()
            .context("running mariadb-install-db")?;
        if !status.success() {
            bail!(
                "mariadb-install-db failed ({status}): {}{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(self.dir.join("install.err")).unwrap_or_default()
            );
        }
        // The accounts, created by the server itself at its start (before it accepts
        // connections), so the tests never need root.
        let mut sql = vec![
            format!("CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';"),
            format!("CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}';"),
            // What the agent is granted on MySQL; harmless on MariaDB.
            format!("GRANT SELECT ON performance_schema.* TO '{USER}'@'%', '{USER}'@'localhost';"),
        ];
        // The test's own statements, one a line, as an init file wants them.
        for text in &opts.init {
            let one_line = text.replace('\n', " ");
            sql.extend(one_line.split_inclusive(';').map(|s| s.trim().to_owned()));
        }
        if opts.tls {
            sql.push(format!(
                "CREATE USER '{TLS_USER}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL;"
            ));
        }
        std::fs::write(self.dir.join("init.sql"), sql.join("\n") + "\n")?;
        Ok(())
    }

    /// Starts mariadbd on a fresh port and waits until it answers.
    fn launch(&mut self, opts: &MariaDbBuilder) -> Result<()> {
        let (ns, bind) = opts.listen();
        self.port = free_port(ns)?;
        let mut args = self.common_args();
        args.extend([
            "--skip-networking=0".to_string(),
            format!("--bind-address={bind}"),
            format!("--port={}", self.port),
            format!("--socket={}", self.socket().display()),
            format!("--pid-file={}", self.dir.join("mysqld.pid").display()),
            format!("--log-error={}", self.dir.join("error.log").display()),
            format!("--init-file={}", self.dir.join("init.sql").display()),
            format!("--max-connections={}", opts.max_connections),
            "--skip-name-resolve".into(),
            "--performance-schema=OFF".into(),
        ]);
        if let Some(c) = &self.certs {
            args.extend([
                format!("--ssl-ca={}", c.ca.display()),
                format!("--ssl-cert={}", c.server_cert.display()),
                format!("--ssl-key={}", c.server_key.display()),
            ]);
        }
        let _ = std::fs::remove_file(self.dir.join("error.log"));
        let mut cmd = Command::new(binary(MARIADBD)?);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.join("stdout.log"))?)
            .stderr(std::fs::File::create(self.dir.join("stderr.log"))?);
        if let Some(ns) = ns {
            crate::netns::command_in(ns, &mut cmd)?;
        }
        // SAFETY: prctl only, which is async-signal-safe. If the test process dies
        // without running Drop (killed, aborted), mariadbd dies with it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().context("starting mariadbd")?);
        self.wait_ready(ns)
    }

    /// Waits until mariadbd sends its greeting on the TCP port (in namespace `ns`, if
    /// given): it listens before the init file has run, but accepts connections only after.
    fn wait_ready(&mut self, ns: Option<&str>) -> Result<()> {
        let deadline = Instant::now() + DEADLINE;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let child = self.child.as_mut().expect("mariadbd was started");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                let log = self.error_log();
                let why = if log.contains("Address already in use") {
                    "port already in use"
                } else {
                    "exited"
                };
                bail!(
                    "mariadbd {why} ({status}) on port {}; its error log:\n{log}",
                    self.port
                );
            }
            let greeted = match ns {
                Some(ns) => crate::netns::run_in(ns, move || greeting(addr))?,
                None => greeting(addr),
            };
            if greeted {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "mariadbd did not accept connections within {DEADLINE:?}; its error log:\n{}",
                    self.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a stopped (paused) process.
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.error_log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "mariadbd error log (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a MySQL server greeting (protocol version 10) arrives on `addr`.
fn greeting(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = [0u8; 5];
    // 3 bytes length, 1 byte sequence, then the protocol version (0xff would be an error).
    s.read_exact(&mut head).is_ok() && head[4] == 10
}

/// A TCP port on 127.0.0.1 (or on 0.0.0.0 in namespace `ns`) that nobody listened on a
/// moment ago.
fn free_port(ns: Option<&str>) -> Result<u16> {
    let bind = |ip: Ipv4Addr| -> Result<u16> {
        let l = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
        Ok(l.local_addr()?.port())
    };
    match ns {
        Some(ns) => crate::netns::run_in(ns, move || bind(Ipv4Addr::UNSPECIFIED))?,
        None => bind(Ipv4Addr::LOCALHOST),
    }
}

/// Removes the directories (and kills the mariadbd) of test processes that died without
/// cleaning up. Directories of live processes are never touched.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        // mariadbd normally died with its parent; if one survived, it still uses `dir`.
        if let Ok(text) = std::fs::read_to_string(dir.join("mysqld.pid"))
            && let Ok(server) = text.trim().parse::<libc::pid_t>()
            && std::fs::read(format!("/proc/{server}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
        {
            // SAFETY: kill(2) on a mariadbd that runs on the stale directory.
            unsafe { libc::kill(server, libc::SIGKILL) };
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => log::info!("removed stale MariaDB directory {}", dir.display()),
            Err(e) => log::debug!("stale MariaDB directory {}: {e}", dir.display()),
        }
    }
}
