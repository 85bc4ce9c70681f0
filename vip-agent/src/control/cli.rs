//! The verbs that talk to the running agent (`status`, `topology`, `set-topology`,
//! `force-rebind`, `reload`): find the socket, send the request, print the answer, and
//! return the exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::client::{self, NotListening};
use super::{Request, Response, render};
use crate::config;

/// Where the agent is: its config file (for `control.socket`) or the socket itself.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The agent's config file; only its control socket (control.socket, or
    /// /run/vip-agent/<instance>.sock) is read from it. Default: the only
    /// /etc/vip-agent/*.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The agent's control socket; overrides --config.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Where the configs are (one per instance): without --config, the only one there.
pub const CONFIG_DIR: &str = "/etc/vip-agent";

/// Done, a status or a topology.
pub const EXIT_OK: i32 = 0;
/// The agent refused or failed, or the command could not ask it.
pub const EXIT_ERROR: i32 = 1;
/// No agent listens on the socket.
pub const EXIT_NO_AGENT: i32 = 2;

/// Longer than the server's 30 s wait for the agent, so that its own "did not answer in
/// time" comes back rather than a bare client timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(35);

/// Sends `request` to the agent `target` names and prints its answer: stdout for a
/// result, stderr (prefixed `vip-agent: `) for an error. `json` prints a status as JSON.
pub fn run(target: &Target, request: &Request, json: bool) -> i32 {
    let socket = match socket_path(target) {
        Ok(path) => path,
        Err(message) => {
            eprintln!("vip-agent: {message}");
            return EXIT_ERROR;
        }
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(client::call(&socket, request, CALL_TIMEOUT)));
    match answer {
        Ok(response) => print(&response, json),
        Err(e) if e.downcast_ref::<NotListening>().is_some() => {
            eprintln!("vip-agent: {e}");
            EXIT_NO_AGENT
        }
        Err(e) => {
            eprintln!("vip-agent: {e:#}");
            EXIT_ERROR
        }
    }
}

fn print(response: &Response, json: bool) -> i32 {
    match response {
        Response::Status(status) if json => println!("{}", render::status_json(status)),
        Response::Status(status) => print!("{}", render::status_text(status)),
        Response::Topology { text } => println!("{}", text.trim_end()),
        Response::Done { message } => println!("{message}"),
        Response::Error { message } => {
            eprintln!("vip-agent: {message}");
            return EXIT_ERROR;
        }
    }
    EXIT_OK
}

/// `--socket`, else the config's control socket. Only `instance` and `[control]` need to
/// be valid: the CLI may run with a config meant for this host that has other problems.
pub fn socket_path(target: &Target) -> Result<PathBuf, String> {
    if let Some(socket) = &target.socket {
        return Ok(socket.clone());
    }
    let path = &match &target.config {
        Some(path) => path.clone(),
        None => only_config(Path::new(CONFIG_DIR))?,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {}: {e}; name the agent's config with --config FILE (e.g. /etc/vip-agent/<instance>.toml) or its socket with --socket PATH",
            path.display()
        )
    })?;
    config::control_socket(&text).map_err(|errors| {
        let what = if errors.0.iter().any(|e| e.key.is_empty()) {
            "cannot be parsed"
        } else {
            "does not give a usable control socket"
        };
        format!(
            "{} {what} (or pass --socket PATH):\n{errors}",
            path.display()
        )
    })
}

/// The one config in `dir`, when --config is not given; with none or several, an error
/// that lists what is there.
fn only_config(dir: &Path) -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no config in {}: name the agent's config with --config FILE or its socket with \
             --socket PATH",
            dir.display()
        )),
        several => Err(format!(
            "several instances are configured in {} ({}): name one with --config FILE",
            dir.display(),
            several
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mycnf::tests::TempDir;

    fn target(config: PathBuf, socket: Option<&str>) -> Target {
        Target {
            config: Some(config),
            socket: socket.map(PathBuf::from),
        }
    }

    #[test]
    fn the_socket_comes_from_the_flag_or_the_config() {
        let dir = TempDir::new("ctl-cli");
        let absent = dir.0.join("absent.toml");
        assert_eq!(
            socket_path(&target(absent.clone(), Some("/tmp/s.sock"))),
            Ok(PathBuf::from("/tmp/s.sock"))
        );
        let err = socket_path(&target(absent.clone(), None)).unwrap_err();
        assert!(
            err.starts_with(&format!("cannot read {}: ", absent.display())),
            "{err}"
        );
        assert!(err.ends_with("or its socket with --socket PATH"), "{err}");

        // Problems elsewhere in the file do not matter.
        let cfg = dir.write(
            "a.toml",
            "instance = \"mgr3306\"\n[vip]\nwrite_vip = \"nonsense\"\n",
        );
        assert_eq!(
            socket_path(&target(cfg, None)),
            Ok(PathBuf::from("/run/vip-agent/mgr3306.sock"))
        );
        let cfg = dir.write("b.toml", "[control]\nsocket = \"/tmp/b.sock\"\n");
        assert_eq!(
            socket_path(&target(cfg, None)),
            Ok(PathBuf::from("/tmp/b.sock"))
        );

        let cfg = dir.write("c.toml", "[control\n");
        let err = socket_path(&target(cfg.clone(), None)).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{} cannot be parsed (or pass --socket PATH):\nconfig (line 1",
                cfg.display()
            )),
            "{err}"
        );
        let cfg = dir.write("d.toml", "[control]\nsocket = \"rel.sock\"\n");
        let err = socket_path(&target(cfg.clone(), None)).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{} does not give a usable control socket (or pass --socket PATH):\ncontrol.socket = \"rel.sock\": must be an absolute path",
                cfg.display()
            )
        );
    }

    #[test]
    fn without_config_the_only_one_in_the_folder_is_used() {
        let dir = TempDir::new("ctl-only");
        let err = only_config(&dir.0).unwrap_err();
        assert!(err.starts_with("no config in "), "{err}");
        let one = dir.write("mgr3306.toml", "instance = \"mgr3306\"\n");
        dir.write("notes.txt", "not a config");
        assert_eq!(only_config(&dir.0), Ok(one.clone()));
        let two = dir.write("mgr3307.toml", "instance = \"mgr3307\"\n");
        assert_eq!(
            only_config(&dir.0).unwrap_err(),
            format!(
                "several instances are configured in {} ({}, {}): name one with --config FILE",
                dir.0.display(),
                one.display(),
                two.display()
            )
        );
    }

    #[test]
    fn exit_codes_follow_the_answer() {
        let done = Response::Done {
            message: "ok".into(),
        };
        assert_eq!(print(&done, false), EXIT_OK);
        let error = Response::Error {
            message: "no".into(),
        };
        assert_eq!(print(&error, true), EXIT_ERROR);
    }
}
