//! The verbs that talk to a running agent (`status`, `topology`, `set-topology`,
//! `force-rebind`, `reload`), run as the binary against a fake agent: a task serving a
//! control socket in a temp folder with vip_agent's own server, answering canned
//! responses. Unprivileged.

use std::path::Path;
use std::process::Output;

use tokio::sync::mpsc;
use vip_agent::control::server::{Incoming, serve};
use vip_agent::control::{PeerHealth, Request, Response, Status, StatusMember};
use vip_agent::plan::Placement;
use vip_tests::scratch::TempDir;

const A: &str = "6d1f0c3a-0000-0000-0000-00000000000a";
const B: &str = "6d1f0c3a-0000-0000-0000-00000000000b";

fn status() -> Status {
    let ip = |s: &str| s.parse().unwrap();
    Status {
        instance: "mgr3306".into(),
        uuid: Some(A.into()),
        role: "primary".into(),
        view: "PRIMARY with quorum (2 of 2 members reachable)".into(),
        members: vec![
            StatusMember {
                uuid: A.into(),
                host: "db1:3306".into(),
                state: "ONLINE".into(),
                role: "PRIMARY".into(),
            },
            StatusMember {
                uuid: B.into(),
                host: "db2:3306".into(),
                state: "ONLINE".into(),
                role: "SECONDARY".into(),
            },
        ],
        placement: Some(Placement {
            write: Some((ip("198.51.100.50"), A.into())),
            read: [(ip("198.51.100.51"), B.into())].into(),
        }),
        held: vec![ip("198.51.100.50")],
        peers: vec![PeerHealth {
            uuid: B.into(),
            addr: "db2:33062".into(),
            last_ok: Some("2025-01-02T03:04:06Z".into()),
            last_error: None,
        }],
        subsystems: [("peer".to_string(), "listening on [::]:33062".to_string())].into(),
        ..Status::default()
    }
}

/// Serves `socket` until the test ends, answering like an agent.
fn fake_agent(socket: &Path) {
    let (tx, mut rx) = mpsc::channel::<Incoming>(8);
    serve(socket, tx).expect("the fake agent serves its socket");
    tokio::spawn(async move {
        while let Some(Incoming { request, reply }) = rx.recv().await {
            let _ = reply.send(match request {
                Request::Status => Response::Status(Box::new(status())),
                Request::Topology => Response::Topology {
                    text: format!("{B}::198.51.100.51"),
                },
                Request::SetTopology { text } => Response::Error {
                    message: format!("{text}: 198.51.100.99 is not a configured read VIP"),
                },
                Request::ForceRebind => Response::Done {
                    message: "re-announced 2 VIPs on 2 members".into(),
                },
                Request::Reload => Response::Done {
                    message: "config reloaded".into(),
                },
            });
        }
    });
}

/// Runs `vip-agent ARGS` without blocking the fake agent's runtime.
async fn agent(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::process::Command::new(vip_tests::agent_binary())
        .args(args)
        .output()
        .await
        .expect("vip-agent runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_as_text_and_json() {
    let dir = TempDir::new("ctl-status");
    let socket = dir.join("mgr3306.sock");
    fake_agent(&socket);
    let socket = socket.to_str().unwrap();

    let (code, out, err) = agent(&["status", "--socket", socket]).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.is_empty(), "{err}");
    for want in [
        "instance   mgr3306\n",
        "role       primary: PRIMARY with quorum (2 of 2 members reachable)\n",
        "holds      198.51.100.50 (write)\n",
        &format!("  {A} (this node)  db1:3306  ONLINE  PRIMARY    198.51.100.50 (write)\n"),
        &format!("  {B}              db2:3306  ONLINE  SECONDARY  198.51.100.51\n"),
        &format!("  {B}  db2:33062  2025-01-02T03:04:06Z  -\n"),
        "  peer  listening on [::]:33062\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }

    let (code, out, err) = agent(&["status", "--json", "--socket", socket]).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let parsed: Status = serde_json::from_str(&out).expect("status --json is one Status");
    assert_eq!(parsed, status());
}

#[tokio::test]
async fn the_socket_comes_from_the_config() {
    let dir = TempDir::new("ctl-config");
    let socket = dir.join("agent.sock");
    fake_agent(&socket);
    // A config with problems that have nothing to do with the socket: still usable.
    let config = dir.write(
        "mgr3306.toml",
        &format!(
            "instance = \"mgr3306\"\n[vip]\nnic = \"no-such-nic0\"\nwrite_vip = \"198.51.100.300\"\n[control]\nsocket = \"{}\"\n",
            socket.display()
        ),
    );
    let (code, out, err) = agent(&["topology", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, 0, "stderr:\n{err}");
    assert_eq!(out, format!("{B}::198.51.100.51\n"));

    let broken = dir.write("broken.toml", "[control\n");
    let (code, out, err) = agent(&["status", "--config", broken.to_str().unwrap()]).await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with(&format!(
            "vip-agent: {} cannot be parsed (or pass --socket PATH):\nconfig (line 1",
            broken.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn done_and_error_answers() {
    let dir = TempDir::new("ctl-verbs");
    let socket = dir.join("mgr3306.sock");
    fake_agent(&socket);
    let socket = socket.to_str().unwrap();

    let (code, out, err) = agent(&["force-rebind", "--socket", socket]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "re-announced 2 VIPs on 2 members\n", "")
    );
    let (code, out, err) = agent(&["reload", "--socket", socket]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "config reloaded\n", "")
    );

    let text = format!("{B}::198.51.100.99");
    let (code, out, err) = agent(&["set-topology", &text, "--socket", socket]).await;
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(
        err,
        format!("vip-agent: {text}: 198.51.100.99 is not a configured read VIP\n")
    );
}

#[tokio::test]
async fn no_agent_listening() {
    let dir = TempDir::new("ctl-none");
    let socket = dir.join("mgr3306.sock");
    let (code, out, err) = agent(&["status", "--socket", socket.to_str().unwrap()]).await;
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(
        err,
        format!(
            "vip-agent: no agent is listening on {}: is vip-agent running (systemctl status vip-agent@mgr3306)? is control.socket the same in both configs?\n",
            socket.display()
        )
    );

    // A socket file left behind by an agent that was killed.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let (code, _, err) = agent(&["reload", "--socket", socket.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("(the socket file is left from an agent that stopped)"),
        "{err}"
    );
}

#[tokio::test]
async fn another_user_is_refused_even_when_the_socket_is_open_to_all() {
    if !vip_tests::privileged() {
        return;
    }
    let dir = TempDir::new("ctl-cred");
    // Others may reach the folder and the socket: as after a careless chmod.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("mgr3306.sock");
    fake_agent(&socket);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let socket = socket.to_str().unwrap();
    let out = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(vip_tests::agent_binary())
        .args(["status", "--socket", socket])
        .output()
        .await
        .expect("setpriv runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("uid 65534 may not use this agent's control socket: only root and"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stdout.contains("mgr3306"), "{stdout}");
    // Root still is.
    let (code, out, err) = agent(&["status", "--socket", socket]).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
}
