//! The control socket end to end in a temp folder, unprivileged: the server, the client,
//! and a fake agent answering from the channel.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::config::mycnf::tests::TempDir;
use crate::control::client::{NotListening, call};
use crate::control::{Status, StatusMember};
use crate::plan::Placement;

const CALL: Duration = Duration::from_secs(10);

fn status() -> Status {
    let read = [("198.51.100.51".parse().unwrap(), "uuid-b".to_string())].into();
    Status {
        instance: "test".into(),
        uuid: Some("uuid-a".into()),
        role: "primary".into(),
        view: "PRIMARY with quorum (2 of 2 members reachable)".into(),
        members: vec![StatusMember {
            uuid: "uuid-a".into(),
            host: "db1:3306".into(),
            state: "ONLINE".into(),
            role: "PRIMARY".into(),
        }],
        placement: Some(Placement {
            write: Some(("198.51.100.50".parse().unwrap(), "uuid-a".into())),
            read,
        }),
        ..Status::default()
    }
}

/// Answers like an agent would: a status, a topology, an error for set-topology.
fn fake_agent(mut rx: mpsc::Receiver<Incoming>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Incoming { request, reply }) = rx.recv().await {
            let response = match request {
                Request::Status => Response::Status(Box::new(status())),
                Request::Topology => Response::Topology {
                    text: "uuid-b::198.51.100.51".into(),
                },
                Request::SetTopology { text } => Response::Error {
                    message: format!("refused {text}"),
                },
                Request::ForceRebind | Request::Reload => Response::Done {
                    message: "done".into(),
                },
            };
            let _ = reply.send(response);
        }
    })
}

/// A server on `<dir>/agent.sock` with a fake agent behind it.
fn served(dir: &TempDir, limits: Limits) -> (PathBuf, JoinHandle<()>) {
    let path = dir.0.join("agent.sock");
    let (tx, rx) = mpsc::channel(8);
    let server = serve_with(&path, tx, limits).unwrap();
    fake_agent(rx);
    (path, server)
}

/// Sends raw bytes (the write half stays open until the answer is read) and decodes the
/// answer line.
async fn raw(path: &Path, bytes: Vec<u8>) -> Response {
    let (mut read, mut write) = UnixStream::connect(path).await.unwrap().into_split();
    // Written from a task: the server may answer (and close) before reading it all.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&bytes).await;
        write
    });
    let mut answer = Vec::new();
    tokio::time::timeout(CALL, read.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    drop(writer);
    serde_json::from_slice(&answer).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&answer));
    })
}

fn error_message(response: Response) -> String {
    match response {
        Response::Error { message } => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn wait_gone(path: &Path) {
    let deadline = tokio::time::Instant::now() + CALL;
    while path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still there",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn round_trip_every_request() {
    let dir = TempDir::new("ctl-round");
    let (path, _server) = served(&dir, Limits::default());
    assert_eq!(
        call(&path, &Request::Status, CALL).await.unwrap(),
        Response::Status(Box::new(status()))
    );
    assert_eq!(
        call(&path, &Request::Topology, CALL).await.unwrap(),
        Response::Topology {
            text: "uuid-b::198.51.100.51".into()
        }
    );
    let set = Request::SetTopology {
        text: "a::b".into(),
    };
    assert_eq!(
        error_message(call(&path, &set, CALL).await.unwrap()),
        "refused a::b"
    );
    for request in [Request::ForceRebind, Request::Reload] {
        assert_eq!(
            call(&path, &request, CALL).await.unwrap(),
            Response::Done {
                message: "done".into()
            }
        );
    }
}

#[tokio::test]
async fn socket_is_0600_in_a_new_0700_folder() {
    let dir = TempDir::new("ctl-mode");
    let path = dir.0.join("run/vip-agent/x.sock");
    let (tx, rx) = mpsc::channel(8);
    let _server = serve(&path, tx).unwrap();
    fake_agent(rx);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    // Only the socket is left in the folder: the temporary name was renamed.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["x.sock"]);
    assert!(call(&path, &Request::Status, CALL).await.is_ok());
}

#[tokio::test]
async fn an_existing_folder_keeps_its_mode() {
    let dir = TempDir::new("ctl-dir");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_path, _server) = served(&dir, Limits::default());
    let mode = std::fs::metadata(&dir.0).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = TempDir::new("ctl-stale");
    let path = dir.0.join("agent.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a socket file nobody listens on");
    let err = call(&path, &Request::Status, CALL).await.unwrap_err();
    assert!(err.downcast_ref::<NotListening>().is_some_and(|e| e.stale));

    let (path, _server) = served(&dir, Limits::default());
    assert!(call(&path, &Request::Status, CALL).await.is_ok());
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = TempDir::new("ctl-file");
    let path = dir.write("agent.sock", "not a socket");
    let (tx, _rx) = mpsc::channel(8);
    let err = serve(&path, tx).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{} exists and is not a socket; remove it or set control.socket",
            path.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

// Two workers: the first server must answer the second's probe while it blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_live_socket_is_refused() {
    let dir = TempDir::new("ctl-twice");
    let (path, _server) = served(&dir, Limits::default());
    let (tx, _rx) = mpsc::channel(8);
    let err = serve(&path, tx).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "another vip-agent is already serving {} (instance test); stop it or set control.socket",
            path.display()
        )
    );
    // The first one still serves.
    assert!(call(&path, &Request::Status, CALL).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_socket_that_is_no_agent_is_refused() {
    let dir = TempDir::new("ctl-other");
    let path = dir.0.join("agent.sock");
    // Accepts and says nothing a vip-agent would.
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"hello\n").await;
        }
    });
    let (tx, _rx) = mpsc::channel(8);
    let err = serve(&path, tx).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "another process is already listening on {} (it did not answer as a vip-agent",
            path.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_requests_get_an_error_and_the_server_goes_on() {
    let dir = TempDir::new("ctl-malformed");
    let (path, _server) = served(&dir, Limits::default());
    for (bytes, want) in [
        (&b"not json\n"[..], "malformed request (expected value"),
        (b"\"Stat\"\n", "malformed request (unknown variant `Stat`"),
        (
            b"{\"SetTopology\":{}}\n",
            "malformed request (missing field `text`",
        ),
        (b"\n", "empty request"),
        (b"\xff\xfe\n", "malformed request"),
    ] {
        let message = error_message(raw(&path, bytes.to_vec()).await);
        assert!(message.starts_with(want), "{message}");
    }
    let message = error_message(raw(&path, b"x\n".to_vec()).await);
    assert!(
        message.contains("expected one JSON line such as \"Status\""),
        "{message}"
    );
    assert!(call(&path, &Request::Status, CALL).await.is_ok());
}

#[tokio::test]
async fn a_request_without_newline_is_read_at_end_of_input() {
    let dir = TempDir::new("ctl-eof");
    let (path, _server) = served(&dir, Limits::default());
    let mut stream = UnixStream::connect(&path).await.unwrap();
    stream.write_all(b"\"Topology\"").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("{\"Topology\""), "{answer}");
    assert!(answer.ends_with('\n'), "one line: {answer:?}");
}

#[tokio::test]
async fn an_over_long_line_is_refused() {
    let dir = TempDir::new("ctl-long");
    let (path, _server) = served(&dir, Limits::default());
    let mut long = vec![b'a'; 100_000];
    long.push(b'\n');
    assert_eq!(
        error_message(raw(&path, long).await),
        "request line longer than 65536 bytes; send one JSON request then a newline"
    );
    // Exactly the limit is fine (spaces around a request are allowed).
    let mut exact = vec![b' '; 65536 - 8];
    exact.extend_from_slice(b"\"Status\"\n");
    assert_eq!(exact.len(), 65536 + 1);
    assert!(matches!(raw(&path, exact).await, Response::Status(_)));
    let mut one_more = vec![b' '; 65536 - 7];
    one_more.extend_from_slice(b"\"Status\"\n");
    assert!(error_message(raw(&path, one_more).await).starts_with("request line longer"));
    assert!(call(&path, &Request::Status, CALL).await.is_ok());
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_read_timeout() {
    let dir = TempDir::new("ctl-slow");
    let limits = Limits {
        read_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let (path, _server) = served(&dir, limits);
    assert_eq!(
        error_message(raw(&path, b"\"Sta".to_vec()).await),
        "no request line within 200 ms; send one JSON request then a newline"
    );
    // Over the limit without a newline, and the client waits: too long, at the timeout.
    assert!(error_message(raw(&path, vec![b'a'; 70_000]).await).starts_with("request line longer"));
}

#[tokio::test]
async fn connections_over_the_cap_get_an_error_and_the_rest_go_on() {
    let dir = TempDir::new("ctl-cap");
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let (path, _server) = served(&dir, limits);
    // Three clients that connect and send nothing hold every slot.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(UnixStream::connect(&path).await.unwrap());
    }
    // The server has counted them once a fourth is turned away.
    let mut refused = None;
    for _ in 0..100 {
        let message = error_message(raw(&path, b"\"Status\"\n".to_vec()).await);
        if message.contains("already serving 3 control connections") {
            refused = Some(message);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused.is_some(), "a fourth connection was served");
    drop(silent);
    // Their slots come back when they close.
    let mut served_again = false;
    for _ in 0..100 {
        if matches!(
            call(&path, &Request::Status, CALL).await,
            Ok(Response::Status(_))
        ) {
            served_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served_again);
}

#[tokio::test]
async fn an_agent_that_does_not_answer_times_out() {
    let dir = TempDir::new("ctl-mute");
    let path = dir.0.join("agent.sock");
    let (tx, mut rx) = mpsc::channel(8);
    let limits = Limits {
        reply_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let _server = serve_with(&path, tx, limits).unwrap();
    // Takes the requests and keeps their reply senders without answering.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(incoming) = rx.recv().await {
            held.push(incoming);
        }
    });
    let message = error_message(call(&path, &Request::ForceRebind, CALL).await.unwrap());
    assert!(
        message.starts_with("the agent did not answer in time (0.2 s)"),
        "{message}"
    );
}

#[tokio::test]
async fn an_agent_that_drops_the_request_says_so() {
    let dir = TempDir::new("ctl-drop");
    let path = dir.0.join("agent.sock");
    let (tx, mut rx) = mpsc::channel::<Incoming>(8);
    let _server = serve(&path, tx).unwrap();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let message = error_message(call(&path, &Request::Reload, CALL).await.unwrap());
    assert!(
        message.starts_with("the agent dropped the request"),
        "{message}"
    );
}

#[tokio::test]
async fn the_socket_goes_when_the_agent_stops() {
    let dir = TempDir::new("ctl-stop");
    let path = dir.0.join("agent.sock");
    let (tx, rx) = mpsc::channel(8);
    let server = serve(&path, tx).unwrap();
    assert!(path.exists());
    drop(rx);
    tokio::time::timeout(CALL, server)
        .await
        .expect("the server ends")
        .unwrap();
    assert!(!path.exists());

    // Aborting the handle removes it too.
    let (tx, _rx) = mpsc::channel(8);
    let server = serve(&path, tx).unwrap();
    server.abort();
    let _ = tokio::time::timeout(CALL, server).await.expect("aborted");
    wait_gone(&path).await;
}

#[tokio::test]
async fn the_guard_leaves_a_socket_it_did_not_bind() {
    let dir = TempDir::new("ctl-guard");
    let path = dir.0.join("agent.sock");
    let first = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let guard = SocketGuard::new(&path).unwrap();
    assert_eq!(guard.path(), path);
    // Another agent replaced the file meanwhile.
    std::fs::remove_file(&path).unwrap();
    let _second = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(guard);
    assert!(path.exists(), "the new agent's socket stays");
    drop(first);
}

#[tokio::test]
async fn client_errors_name_the_fix() {
    let dir = TempDir::new("ctl-client");
    let path = dir.0.join("mgr3306.sock");
    let err = call(&path, &Request::Status, CALL).await.unwrap_err();
    let not = err.downcast_ref::<NotListening>().expect("NotListening");
    assert!(!not.stale);
    assert_eq!(
        err.to_string(),
        format!(
            "no agent is listening on {}: is vip-agent running (systemctl status vip-agent@mgr3306)? is control.socket the same in both configs?",
            path.display()
        )
    );
    let denied = crate::control::client::connect_error(
        &path,
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    );
    assert!(denied.downcast_ref::<NotListening>().is_none());
    assert_eq!(
        denied.to_string(),
        format!(
            "cannot connect to {}: permission denied; needs root (the control socket is mode 0600)",
            path.display()
        )
    );
}

#[tokio::test]
async fn a_client_timeout_names_the_socket() {
    let dir = TempDir::new("ctl-client-timeout");
    let path = dir.0.join("agent.sock");
    // Accepts, never answers.
    let listener = UnixListener::bind(&path).unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let err = call(&path, &Request::Status, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the agent on {} did not answer within 0.2 s",
            path.display()
        )
    );
}
