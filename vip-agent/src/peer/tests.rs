//! The peer port over loopback: a real server and client, and raw sockets sending every
//! kind of bad frame. Each bad frame must be counted, never reach the agent, and leave
//! the server serving.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::{CallError, call};
use super::hosts::Allow;
use super::key::Key;
use super::server::{self, Incoming, Limits, Reject, Stats};
use super::wire::{
    self, Body, Challenge, FrameError, HEADER_LEN, Kind, MAGIC, Nonce, RequestEnvelope,
    ResponseEnvelope, VERSION,
};
use super::{Request, Response};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The member uuid the harness's stand-in agent answers as.
const SERVER: &str = "uuid-server";
const WAIT: Duration = Duration::from_secs(10);

fn key_a() -> Key {
    Key::from_bytes(&[0xa5; 32]).unwrap()
}

fn key_b() -> Key {
    Key::from_bytes(&[0x5b; 32]).unwrap()
}

/// Polls `cond` until it holds; panics naming `what` at the deadline.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What reached the agent.
type Received = Arc<Mutex<Vec<(String, SocketAddr, Request)>>>;

struct Harness {
    addr: SocketAddr,
    key: watch::Sender<Arc<Key>>,
    stats: Arc<Stats>,
    received: Received,
    server: JoinHandle<()>,
}

impl Harness {
    async fn start(bind: &str, limits: Limits) -> Harness {
        Harness::start_answering(bind, limits, true).await
    }

    /// A server on `bind` (port 0) and a stand-in agent that answers every request
    /// (or, with `answer` false, holds the reply and never answers).
    async fn start_answering(bind: &str, limits: Limits, answer: bool) -> Harness {
        Harness::start_with(bind, limits, answer, allow_all()).await
    }

    async fn start_with(
        bind: &str,
        limits: Limits,
        answer: bool,
        allow: watch::Receiver<Allow>,
    ) -> Harness {
        let listener = server::bind(bind.parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (key, key_rx) = watch::channel(Arc::new(key_a()));
        let (tx, mut rx) = mpsc::channel::<Incoming>(8);
        let stats = Arc::new(Stats::default());
        let server = server::serve(listener, key_rx, limits, allow, tx, stats.clone());
        let received: Received = Arc::default();
        let seen = received.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(incoming) = rx.recv().await {
                seen.lock().unwrap().push((
                    incoming.from.clone(),
                    incoming.peer,
                    incoming.request.clone(),
                ));
                let response = match incoming.request {
                    Request::Holdings => Response::Holdings {
                        vips: vec!["10.0.0.11".parse().unwrap()],
                    },
                    Request::Apply { .. } => Response::Applied,
                    Request::ReleaseWrite { .. } => Response::Released,
                    Request::Lease(_) => Response::Lease(crate::core::Response::Applied),
                };
                if answer {
                    let _ = incoming.reply.send(server::Reply {
                        member: SERVER.into(),
                        response,
                    });
                } else {
                    held.push(incoming.reply);
                }
            }
        });
        Harness {
            addr,
            key,
            stats,
            received,
            server,
        }
    }

    fn received(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    async fn good_call(&self) -> Response {
        // Not the watch's borrow guard: it must not be held across an await.
        let key = self.key.borrow().clone();
        call(
            self.addr,
            &key,
            "uuid-good",
            SERVER,
            Request::Holdings,
            CALL_TIMEOUT,
        )
        .await
        .unwrap()
    }

    /// The end of every bad-frame test: `why` was counted (and nothing else), nothing
    /// reached the agent, and the server still answers a good call.
    async fn assert_rejected(&self, why: Reject) {
        until(&format!("a `{}` count", why.as_str()), || {
            self.stats.rejected(why) >= 1
        })
        .await;
        assert_eq!(self.received(), 0, "a bad frame reached the agent");
        assert_eq!(
            self.good_call().await,
            Response::Holdings {
                vips: vec!["10.0.0.11".parse().unwrap()]
            }
        );
        assert_eq!(self.received(), 1);
        assert!(!self.server.is_finished());
        let snap = self.stats.snapshot();
        for other in Reject::ALL {
            let want = u64::from(other == why);
            assert_eq!(snap[other.as_str()], want, "{}: {snap:?}", other.as_str());
        }
        assert_eq!(snap["served"], 1, "{snap:?}");
    }
}

fn test_limits() -> Limits {
    Limits {
        pre_auth: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(5),
        max_connections: 4,
        // Every test client is 127.0.0.1: the per-host cap has tests of its own.
        max_per_host: 100,
    }
}

/// Everyone may connect (the tests on loopback are about frames, not addresses).
fn allow_all() -> watch::Receiver<Allow> {
    let nets = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    watch::channel(Allow::List(nets)).1
}

/// Connects and reads the server's challenge, as a client would.
async fn raw_connect(addr: SocketAddr) -> (TcpStream, Nonce) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let frame = super::conn::read_frame(&mut stream).await.unwrap();
    let challenge = wire::decode_challenge(&frame, &key_a()).unwrap();
    (stream, challenge.nonce)
}

fn request_frame(key: &Key, nonce: Nonce) -> Vec<u8> {
    let body = Body::Request(RequestEnvelope {
        from: "uuid-raw".into(),
        nonce,
        client_nonce: Nonce([0x42; 16]),
        request: Request::ReleaseWrite { stamp: 7 },
    });
    wire::encode(&body, key).unwrap()
}

/// Reads until the server closes; fails if it answers with anything.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("the server should close the connection");
    match read {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_good_call_round_trips_over_ipv4() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    let placement = crate::plan::Placement {
        write: Some(("10.0.0.10".parse().unwrap(), "uuid-a".into())),
        read: Default::default(),
    };
    let request = Request::Apply {
        stamp: 3,
        placement,
        reannounce: false,
    };
    let response = call(
        h.addr,
        &key_a(),
        "uuid-a",
        SERVER,
        request.clone(),
        CALL_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(response, Response::Applied);
    let received = h.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].0, "uuid-a");
    assert!(received[0].1.ip().is_loopback() && received[0].1.is_ipv4());
    assert_eq!(received[0].2, request);
    assert_eq!(h.stats.served(), 1);
}

#[tokio::test]
async fn a_good_call_round_trips_over_ipv6() {
    let h = Harness::start("[::1]:0", test_limits()).await;
    assert_eq!(h.good_call().await, h.good_call().await);
    let received = h.received.lock().unwrap().clone();
    assert_eq!(
        received[0].1.ip(),
        "::1".parse::<std::net::IpAddr>().unwrap()
    );
}

#[tokio::test]
async fn the_wildcard_listens_dual_stack_and_shows_ipv4_peers_as_ipv4() {
    let h = Harness::start("[::]:0", test_limits()).await;
    let port = h.addr.port();
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    call(
        v4,
        &key_a(),
        "uuid-4",
        SERVER,
        Request::Holdings,
        CALL_TIMEOUT,
    )
    .await
    .unwrap();
    call(
        v6,
        &key_a(),
        "uuid-6",
        SERVER,
        Request::Holdings,
        CALL_TIMEOUT,
    )
    .await
    .unwrap();
    let received = h.received.lock().unwrap().clone();
    assert_eq!(received[0].1.ip().to_string(), "127.0.0.1");
    assert_eq!(received[1].1.ip().to_string(), "::1");
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_key, key_rx) = watch::channel(Arc::new(key_a()));
    let (tx, _rx) = mpsc::channel(1);
    let e = server::listen(
        addr,
        key_rx,
        Limits::default(),
        allow_all(),
        tx,
        Arc::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        e.to_string().contains(&format!("cannot listen on {addr}")),
        "{e}"
    );
}

#[tokio::test]
async fn a_frame_under_another_key_is_unauthenticated() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    let (mut stream, nonce) = raw_connect(h.addr).await;
    stream
        .write_all(&request_frame(&key_b(), nonce))
        .await
        .unwrap();
    expect_closed(&mut stream).await;
    h.assert_rejected(Reject::Unauthenticated).await;
}

#[tokio::test]
async fn garbage_is_malformed() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    let (mut stream, _) = raw_connect(h.addr).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: db1\r\n\r\n")
        .await
        .unwrap();
    expect_closed(&mut stream).await;
    h.assert_rejected(Reject::Malformed).await;
}

#[tokio::test]
async fn bad_json_under_a_valid_mac_is_malformed() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    let (mut stream, _) = raw_connect(h.addr).await;
    let frame = wire::seal(Kind::Request, br#"{"from": "x", "nonce": 1}"#, &key_a()).unwrap();
    stream.write_all(&frame).await.unwrap();
    expect_closed(&mut stream).await;
    h.assert_rejected(Reject::Malformed).await;
}

#[tokio::test]
async fn an_oversized_length_is_refused_from_the_header() {
    // A long read timeout: if the server waited for the 1 GiB body, this would hang.
    let limits = Limits {
        pre_auth: Duration::from_secs(60),
        ..test_limits()
    };
    let h = Harness::start("127.0.0.1:0", limits).await;
    let (mut stream, _) = raw_connect(h.addr).await;
    let mut header = Vec::from(MAGIC);
    header.extend_from_slice(&[VERSION, Kind::Request as u8, 0, 0]);
    header.extend_from_slice(&(1u32 << 30).to_be_bytes());
    assert_eq!(header.len(), HEADER_LEN);
    let started = Instant::now();
    stream.write_all(&header).await.unwrap();
    expect_closed(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    h.assert_rejected(Reject::Oversized).await;
}

#[tokio::test]
async fn eof_mid_frame_is_truncated() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    let (mut stream, nonce) = raw_connect(h.addr).await;
    let frame = request_frame(&key_a(), nonce);
    stream.write_all(&frame[..frame.len() - 5]).await.unwrap();
    stream.shutdown().await.unwrap();
    expect_closed(&mut stream).await;
    h.assert_rejected(Reject::Truncated).await;
}

#[tokio::test]
async fn a_silent_or_slow_client_times_out() {
    let limits = Limits {
        pre_auth: Duration::from_millis(300),
        ..test_limits()
    };
    let h = Harness::start("127.0.0.1:0", limits).await;
    let (mut stream, nonce) = raw_connect(h.addr).await;
    // Half a header, then nothing: a slowloris holding a slot.
    let frame = request_frame(&key_a(), nonce);
    stream.write_all(&frame[..6]).await.unwrap();
    let started = Instant::now();
    expect_closed(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    h.assert_rejected(Reject::Timeout).await;
}

#[tokio::test]
async fn a_request_replayed_on_another_connection_is_refused() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    // Capture a genuine exchange.
    let (mut first, nonce) = raw_connect(h.addr).await;
    let captured = request_frame(&key_a(), nonce);
    first.write_all(&captured).await.unwrap();
    let answer = super::conn::read_frame(&mut first).await.unwrap();
    let expected = wire::Expected {
        client_nonce: Nonce([0x42; 16]),
        challenge: nonce,
        request: wire::Digest::of(&captured),
        member: SERVER,
    };
    let envelope = wire::decode_response(&answer, &key_a(), &expected).unwrap();
    assert_eq!(envelope.response, Response::Released);
    until("the genuine request", || h.received() == 1).await;
    h.received.lock().unwrap().clear();

    // Replay it: the new connection has a new challenge.
    let (mut second, _) = raw_connect(h.addr).await;
    second.write_all(&captured).await.unwrap();
    expect_closed(&mut second).await;
    until("a `replayed` count", || {
        h.stats.rejected(Reject::Replayed) == 1
    })
    .await;
    assert_eq!(h.received(), 0, "the replayed request reached the agent");
    h.good_call().await;
    assert_eq!(h.received(), 1);
    assert_eq!(h.stats.served(), 2);
    for other in Reject::ALL.into_iter().filter(|r| *r != Reject::Replayed) {
        assert_eq!(h.stats.rejected(other), 0, "{}", other.as_str());
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let limits = Limits {
        max_connections: 2,
        ..test_limits()
    };
    let h = Harness::start("127.0.0.1:0", limits).await;
    // Two connections that got their challenge and hold their slot.
    let held = [raw_connect(h.addr).await, raw_connect(h.addr).await];
    let mut third = TcpStream::connect(h.addr).await.unwrap();
    expect_closed(&mut third).await;
    until("a `busy` count", || h.stats.rejected(Reject::Busy) == 1).await;
    // A client at the cap gets a clear error.
    let e = call(
        h.addr,
        &key_a(),
        "uuid-x",
        SERVER,
        Request::Holdings,
        CALL_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "closed", "{e}");
    assert!(
        e.to_string().contains("before sending its challenge"),
        "{e}"
    );

    drop(held);
    // The held slots free up as the server sees them close.
    let deadline = Instant::now() + WAIT;
    loop {
        match call(
            h.addr,
            &key_a(),
            "uuid-good",
            SERVER,
            Request::Holdings,
            CALL_TIMEOUT,
        )
        .await
        {
            Ok(_) => break,
            Err(e) if e.kind() == "closed" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("the server did not recover from busy: {e}"),
        }
    }
    assert_eq!(h.received(), 1);
    let snap = h.stats.snapshot();
    for other in Reject::ALL.into_iter().filter(|r| *r != Reject::Busy) {
        assert_eq!(snap[other.as_str()], 0, "{snap:?}");
    }
}

#[tokio::test]
async fn a_flood_of_bad_frames_is_counted_exactly() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    for _ in 0..20 {
        let (mut s, _) = raw_connect(h.addr).await;
        s.write_all(&[0u8; HEADER_LEN]).await.unwrap();
        expect_closed(&mut s).await;
    }
    until("20 malformed", || h.stats.rejected(Reject::Malformed) == 20).await;
    assert_eq!(h.received(), 0);
    h.good_call().await;
}

#[tokio::test]
async fn a_port_probe_is_not_an_error() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    let (stream, _) = raw_connect(h.addr).await;
    drop(stream);
    h.good_call().await;
    assert_eq!(h.stats.snapshot().values().sum::<u64>(), 1, "only `served`");
}

#[tokio::test]
async fn the_key_rotates_through_the_watch() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    call(
        h.addr,
        &key_a(),
        "u",
        SERVER,
        Request::Holdings,
        CALL_TIMEOUT,
    )
    .await
    .unwrap();
    h.key.send(Arc::new(key_b())).unwrap();
    let e = call(
        h.addr,
        &key_a(),
        "u",
        SERVER,
        Request::Holdings,
        CALL_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "unauthenticated", "{e}");
    call(
        h.addr,
        &key_b(),
        "u",
        SERVER,
        Request::Holdings,
        CALL_TIMEOUT,
    )
    .await
    .unwrap();
    // A request under the old key, answering a new-key challenge, is refused.
    let (mut stream, frame) = {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        let f = super::conn::read_frame(&mut s).await.unwrap();
        (s, f)
    };
    let nonce = wire::decode_challenge(&frame, &key_b()).unwrap().nonce;
    stream
        .write_all(&request_frame(&key_a(), nonce))
        .await
        .unwrap();
    expect_closed(&mut stream).await;
    until("an `unauthenticated` count", || {
        h.stats.rejected(Reject::Unauthenticated) == 1
    })
    .await;
    assert_eq!(h.received(), 2);
}

#[tokio::test]
async fn a_client_with_the_wrong_key_gets_a_clear_error() {
    let h = Harness::start("127.0.0.1:0", test_limits()).await;
    let e = call(
        h.addr,
        &key_b(),
        "u",
        SERVER,
        Request::Holdings,
        CALL_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(matches!(
        e,
        CallError::Frame {
            error: FrameError::Unauthenticated,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        format!(
            "the peer at {} answered with a frame that fails authentication: \
             are both agents using the same peer.key_file?",
            h.addr
        )
    );
    assert_eq!(h.received(), 0);
}

#[tokio::test]
async fn a_refused_connection_names_the_peer() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = call(addr, &key_a(), "u", SERVER, Request::Holdings, CALL_TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "refused");
    assert!(
        e.to_string()
            .starts_with(&format!("the peer at {addr} refused")),
        "{e}"
    );
}

#[tokio::test]
async fn a_call_is_bounded_by_its_timeout() {
    // Accepts, then says nothing.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let started = Instant::now();
    let e = call(
        addr,
        &key_a(),
        "u",
        SERVER,
        Request::Holdings,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(e.kind(), "timeout");
    assert_eq!(
        e.to_string(),
        format!("the peer at {addr} timed out: no challenge within 200ms")
    );
}

#[tokio::test]
async fn an_agent_that_does_not_answer_closes_the_connection() {
    let limits = Limits {
        reply_timeout: Duration::from_millis(200),
        ..test_limits()
    };
    let h = Harness::start_answering("127.0.0.1:0", limits, false).await;
    let e = call(
        h.addr,
        &key_a(),
        "u",
        SERVER,
        Request::Holdings,
        CALL_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "closed", "{e}");
    assert!(e.to_string().contains("before sending its answer"), "{e}");
    assert_eq!(h.stats.unanswered(), 1);
    assert_eq!(h.stats.served(), 0);
}

/// A fake server: a valid challenge, then `answer` built from the client's request.
async fn fake_server(
    answer: impl FnOnce(Nonce, &[u8], RequestEnvelope) -> Vec<u8> + Send + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let nonce = Nonce([0x11; 16]);
        let challenge = wire::encode(&Body::Challenge(Challenge { nonce }), &key_a()).unwrap();
        s.write_all(&challenge).await.unwrap();
        let frame = super::conn::read_frame(&mut s).await.unwrap();
        let request = wire::decode_request(&frame, &key_a(), &nonce).unwrap();
        s.write_all(&answer(nonce, &frame, request)).await.unwrap();
        let _ = s.shutdown().await;
    });
    addr
}

/// A response to `r` (received as `frame` after challenge `nonce`) from `member`.
fn answer_from(member: &str, nonce: Nonce, frame: &[u8], r: &RequestEnvelope) -> ResponseEnvelope {
    ResponseEnvelope {
        nonce: r.client_nonce,
        challenge: nonce,
        member: member.into(),
        request: wire::Digest::of(frame),
        response: Response::Released,
    }
}

#[tokio::test]
async fn a_client_refuses_an_answer_for_another_request() {
    let addr = fake_server(|nonce, frame, r| {
        let mut stale = answer_from(SERVER, nonce, frame, &r);
        stale.nonce = Nonce([0x99; 16]);
        wire::encode(&Body::Response(stale), &key_a()).unwrap()
    })
    .await;
    let e = call(
        addr,
        &key_a(),
        "u",
        SERVER,
        Request::ReleaseWrite { stamp: 1 },
        CALL_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "replayed", "{e}");
    // The right nonces, but the digest of another request.
    let addr = fake_server(|nonce, frame, r| {
        let mut other = answer_from(SERVER, nonce, frame, &r);
        other.request = wire::Digest::of(b"another request");
        wire::encode(&Body::Response(other), &key_a()).unwrap()
    })
    .await;
    let e = call(addr, &key_a(), "u", SERVER, Request::Holdings, CALL_TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "replayed", "{e}");
    assert!(e.to_string().contains("answered another request"), "{e}");
}

#[tokio::test]
async fn a_client_refuses_another_members_genuine_answer() {
    // Member C answers for itself, correctly, on a connection redirected to it: the
    // client meant to ask B, and must not take C's "Released" as B's.
    let addr = fake_server(|nonce, frame, r| {
        let from_c = answer_from("uuid-c", nonce, frame, &r);
        wire::encode(&Body::Response(from_c), &key_a()).unwrap()
    })
    .await;
    let e = call(
        addr,
        &key_a(),
        "uuid-a",
        "uuid-b",
        Request::ReleaseWrite { stamp: 1 },
        CALL_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "wrong_member", "{e}");
    assert!(
        e.to_string().contains(
            "is not the member we asked: the answer comes from member \"uuid-c\", not \"uuid-b\""
        ),
        "{e}"
    );
    // The same answer from B, in another case, is B's.
    let addr = fake_server(|nonce, frame, r| {
        let from_b = answer_from("UUID-B", nonce, frame, &r);
        wire::encode(&Body::Response(from_b), &key_a()).unwrap()
    })
    .await;
    let answer = call(
        addr,
        &key_a(),
        "uuid-a",
        "uuid-b",
        Request::Holdings,
        CALL_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(answer, Response::Released);
}

#[tokio::test]
async fn a_client_names_a_newer_protocol_version() {
    let addr = fake_server(|nonce, frame, r| {
        let body = Body::Response(answer_from(SERVER, nonce, frame, &r));
        let mut frame = wire::encode(&body, &key_a()).unwrap();
        frame[4] = VERSION + 1;
        frame
    })
    .await;
    let e = call(addr, &key_a(), "u", SERVER, Request::Holdings, CALL_TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "malformed");
    assert!(
        e.to_string().contains("runs another vip-agent version"),
        "{e}"
    );
}

#[tokio::test]
async fn the_server_stops_when_the_agent_is_gone() {
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (_key, key_rx) = watch::channel(Arc::new(key_a()));
    let (tx, rx) = mpsc::channel(1);
    let handle = server::serve(
        listener,
        key_rx,
        test_limits(),
        allow_all(),
        tx,
        Arc::default(),
    );
    drop(rx);
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("the accept loop should end")
        .unwrap();
}

#[test]
fn an_unknown_field_inside_a_request_is_malformed() {
    // The envelope refuses unknown fields; so do the request and the placement in it.
    let key = Key::from_bytes(&[9; 32]).unwrap();
    let body = br#"{"from":"a","nonce":"00000000000000000000000000000000","client_nonce":"00000000000000000000000000000000","request":{"Apply":{"stamp":1,"placement":{"write":null,"read":{},"extra":1},"reannounce":false}}}"#;
    let frame = super::wire::seal(super::wire::Kind::Request, body, &key).unwrap();
    match super::wire::decode(&frame, &key) {
        Err(e) => assert_eq!(e.kind(), "malformed", "{e}"),
        Ok(b) => panic!("decoded {b:?}"),
    }
    let good = body.to_vec();
    let good = String::from_utf8(good).unwrap().replace(",\"extra\":1", "");
    let frame = super::wire::seal(super::wire::Kind::Request, good.as_bytes(), &key).unwrap();
    assert!(super::wire::decode(&frame, &key).is_ok());
}

/// A connection from `from` (any 127.0.0.0/8 address is loopback) to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn an_address_that_is_not_allowed_is_closed_at_accept() {
    let only = watch::channel(Allow::List(vec!["127.0.0.2/32".parse().unwrap()])).1;
    let h = Harness::start_with("127.0.0.1:0", test_limits(), true, only).await;
    // 127.0.0.1 may not connect: no challenge, just the close.
    let mut s = connect_from("127.0.0.1", h.addr).await;
    expect_closed(&mut s).await;
    until("a `not_allowed` count", || {
        h.stats.rejected(Reject::NotAllowed) == 1
    })
    .await;
    // 127.0.0.2 may.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(h.addr).await.unwrap();
    let frame = super::conn::read_frame(&mut s).await.unwrap();
    assert!(wire::decode_challenge(&frame, &key_a()).is_ok());
    assert_eq!(h.received(), 0);
}

#[tokio::test]
async fn one_address_cannot_take_the_slots_of_another() {
    let limits = Limits {
        max_connections: 8,
        max_per_host: 2,
        ..test_limits()
    };
    let h = Harness::start("127.0.0.1:0", limits).await;
    // A flood from 127.0.0.2: connections that never send.
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(connect_from("127.0.0.2", h.addr).await);
    }
    until("the flood capped per host", || {
        h.stats.rejected(Reject::HostBusy) == 18
    })
    .await;
    assert_eq!(h.stats.rejected(Reject::Busy), 0);
    // A member on another address is served at once.
    assert_eq!(
        h.good_call().await,
        Response::Holdings {
            vips: vec!["10.0.0.11".parse().unwrap()]
        }
    );
    drop(flood);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_holds_its_slot_only_until_the_pre_auth_deadline() {
    let limits = Limits {
        pre_auth: Duration::from_millis(500),
        max_connections: 1,
        ..test_limits()
    };
    let h = Harness::start("127.0.0.1:0", limits).await;
    // It reads the challenge and then sends nothing.
    let (mut silent, _) = raw_connect(h.addr).await;
    expect_closed(&mut silent).await;
    h.assert_rejected(Reject::Timeout).await;
}
