//! The peer port under attack, in the lab: a host on the same network that sends frames
//! to a secondary's agent with the wrong key, replays a genuine frame recorded earlier,
//! sends a stale or misattributed placement, or garbage. None of it may make any node
//! bind or release anything; each is refused, counted in `status --json`, and the agent
//! goes on serving.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use vip_agent::peer::key::Key;
use vip_agent::peer::wire::{self, Body, Nonce, RequestEnvelope};
use vip_agent::peer::{Request, Response};
use vip_agent::plan::Placement;
use vip_tests::cluster::{Cluster, VipSettings};

const SETTLE: Duration = Duration::from_secs(20);
const READS: [&str; 3] = ["198.51.100.61", "198.51.100.62", "198.51.100.63"];

fn vip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Which host holds each address now (the write VIP first, then the read VIPs).
fn snapshot(c: &Cluster) -> Vec<Vec<usize>> {
    std::iter::once(c.settings.write_vip)
        .chain(READS.iter().map(|s| vip(s)))
        .map(|v| c.holders_of(v))
        .collect()
}

/// A counter from `vip-agent status --json` on host `i`.
fn rejected(c: &Cluster, i: usize, kind: &str) -> u64 {
    let out = c.control(i, &["status", "--json"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["rejected_frames"][kind].as_u64().unwrap_or(0)
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; wire::HEADER_LEN];
    s.read_exact(&mut buf)?;
    let total = wire::needed(&buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    buf.resize(total, 0);
    s.read_exact(&mut buf[wire::HEADER_LEN..])?;
    Ok(buf)
}

/// One connection from the client host to `to`: reads the challenge (its nonce is in
/// the clear; the attacker needs no key for that), sends what `frame` makes of it, and
/// returns the answer's body decoded with `key`, or `None` if the agent closed the
/// connection without answering.
fn exchange(
    c: &Cluster,
    to: SocketAddr,
    key: &Key,
    frame: impl FnOnce(Nonce) -> Vec<u8> + Send + 'static,
) -> Option<Body> {
    let key = key.clone();
    vip_tests::netns::run_in(c.client().ns(), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let challenge = read_frame(&mut s).unwrap();
        let body = &challenge[wire::HEADER_LEN..challenge.len() - wire::MAC_LEN];
        let challenge: wire::Challenge = serde_json::from_slice(body).unwrap();
        s.write_all(&frame(challenge.nonce)).unwrap();
        let answer = read_frame(&mut s).ok()?;
        wire::decode(&answer, &key).ok()
    })
    .unwrap()
}

fn apply(from: &str, nonce: Nonce, stamp: u64, placement: &Placement, key: &Key) -> Vec<u8> {
    wire::encode(
        &Body::Request(RequestEnvelope {
            from: from.to_string(),
            nonce,
            client_nonce: Nonce([7; wire::NONCE_LEN]),
            request: Request::Apply {
                stamp,
                placement: placement.clone(),
                reannounce: false,
            },
        }),
        key,
    )
    .unwrap()
}

fn response(body: Option<Body>) -> Option<Response> {
    match body {
        Some(Body::Response(r)) => Some(r.response),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_replay_stale_and_garbage_change_nothing() {
    if !vip_tests::privileged() {
        return;
    }
    // The attacker's host may connect (as a member's compromised host could): what it
    // sends is what is under test.
    let settings = VipSettings {
        read_vips: READS.iter().map(|s| vip(s)).collect(),
        instance: "atk".into(),
        peer_allow: Some(vec!["198.51.100.0/24".into()]),
        ..VipSettings::default()
    };
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    c.wait_sole_holder(0, SETTLE).unwrap();
    c.wait(SETTLE, "every read VIP placed once", |c| {
        c.read_placement().iter().all(|(_, h)| h.len() == 1)
    })
    .unwrap();
    let key = Key::load(&c.key_file()).unwrap();
    let (u1, u3) = (c.group.uuid(0), c.group.uuid(2));
    let h2: SocketAddr = (IpAddr::V4(c.host(1).ipv4()), c.settings.peer_port).into();
    // What an attacker would like: every read VIP on h2.
    let grab = Placement {
        write: Some((c.settings.write_vip, u1.clone())),
        read: READS.iter().map(|s| (vip(s), c.group.uuid(1))).collect(),
    };
    let before = snapshot(&c);

    // 1. The wrong key, claiming to be the primary, with a stamp far in the future.
    let wrong = Key::from_bytes(&[0x42; 32]).unwrap();
    let (g, w, u) = (grab.clone(), wrong.clone(), u1.clone());
    let answer = exchange(&c, h2, &wrong, move |n| apply(&u, n, u64::MAX / 2, &g, &w));
    assert!(
        answer.is_none(),
        "a frame with the wrong key was answered: {answer:?}"
    );
    assert_eq!(rejected(&c, 1, "unauthenticated"), 1);

    // 2. The right key and the primary's uuid, but stamp 1: older than the pushes h2 has
    // applied, as a recorded old push would be. Refused as stale. Its bytes are kept.
    let recorded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (g, k, u, r) = (grab.clone(), key.clone(), u1.clone(), recorded.clone());
    let answer = response(exchange(&c, h2, &key, move |n| {
        let frame = apply(&u, n, 1, &g, &k);
        *r.lock().unwrap() = frame.clone();
        frame
    }));
    match answer {
        Some(Response::Refused { reason }) => assert!(reason.contains("stale"), "{reason}"),
        other => panic!("a stale placement was not refused: {other:?}"),
    }
    assert_eq!(rejected(&c, 1, "refused_stale"), 1);

    // 3. Those bytes replayed on a new connection: their nonce is for the old one, so the
    // frame is refused before anything reads it.
    let frame = recorded.lock().unwrap().clone();
    let answer = exchange(&c, h2, &key, move |_| frame);
    assert!(
        answer.is_none(),
        "a replayed frame was answered: {answer:?}"
    );
    assert_eq!(rejected(&c, 1, "replayed"), 1);

    // 4. The right key but not from the primary (h3 is a secondary).
    let (g, k) = (grab.clone(), key.clone());
    let answer = response(exchange(&c, h2, &key, move |n| {
        apply(&u3, n, u64::MAX / 2, &g, &k)
    }));
    match answer {
        Some(Response::Refused { reason }) => {
            assert!(reason.contains("not the primary"), "{reason}")
        }
        other => panic!("a placement from a secondary was not refused: {other:?}"),
    }

    // 5. Garbage and an oversized header.
    let answer = exchange(&c, h2, &key, |_| b"GET / HTTP/1.0\r\n\r\n".to_vec());
    assert!(answer.is_none());
    assert_eq!(rejected(&c, 1, "malformed"), 1);
    let answer = exchange(&c, h2, &key, |_| {
        let mut f = wire::MAGIC.to_vec();
        f.extend([wire::VERSION, 2, 0, 0]);
        f.extend(u32::MAX.to_be_bytes());
        f
    });
    assert!(answer.is_none());
    assert_eq!(rejected(&c, 1, "oversized"), 1);

    // Nothing moved anywhere, and the group still works: a real push after all this.
    assert_eq!(snapshot(&c), before);
    let everything_on_h3 = format!(
        "{u1}::; {}::; {}::{}",
        c.group.uuid(1),
        c.group.uuid(2),
        READS.join(",")
    );
    let out = c.control(0, &["set-topology", &everything_on_h3]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait(SETTLE, "the real placement applied", |c| {
        READS.iter().all(|s| c.holders_of(vip(s)) == [2])
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn another_members_answer_is_not_taken_for_the_one_asked() {
    if !vip_tests::privileged() {
        return;
    }
    // h2's MEMBER_HOST names h3's address (a wrong report_host, or a spoofed name): every
    // connection the primary opens to "h2" reaches h3's agent, which answers genuinely,
    // as h3. The primary must not take that for h2's answer.
    let h3 = "198.51.100.13";
    let settings = VipSettings {
        read_vips: READS.iter().map(|s| vip(s)).collect(),
        instance: "misdir".into(),
        ..VipSettings::default()
    };
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| {
        g.report_host_of(1, h3)
    })
    .unwrap();
    assert_eq!(c.host(2).ipv4().to_string(), h3);
    c.wait_sole_holder(0, SETTLE).unwrap();
    let h2 = c.group.uuid(1);
    let misdirected = |c: &Cluster| {
        let out = c.control(0, &["status", "--json"]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["peers"].as_array().is_some_and(|peers| {
            peers.iter().any(|p| {
                p["uuid"] == h2.as_str()
                    && p["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("is not the member we asked"))
            })
        })
    };
    c.wait(
        SETTLE,
        "the primary to refuse h3's answer as h2's",
        misdirected,
    )
    .unwrap();
}

/// Workers in namespace `ns` that keep connections to `to` open until `stop`: 40 that
/// never send (more than a peer port's slots), each reconnecting as soon as the server
/// drops it, and 8 that send garbage. Each returns (silent, garbage) connections made.
fn flood(
    ns: &str,
    to: SocketAddr,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, u64)>> {
    (0..48)
        .map(|i| {
            let (ns, stop) = (ns.to_owned(), stop.clone());
            let garbage = i < 8;
            std::thread::spawn(move || {
                vip_tests::netns::run_in(&ns, move || {
                    // At least 500 of each kind in all, and on until told to stop.
                    let quota = if garbage { 63 } else { 13 };
                    let mut made = 0;
                    while made < quota || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(1))
                        else {
                            continue;
                        };
                        made += 1;
                        if garbage {
                            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\nnot a peer frame");
                        }
                        // Held until the server drops it (at once, at its deadline).
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = s.read(&mut [0u8; 4096]);
                        let _ = s.read(&mut [0u8; 4096]);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if garbage { (0, made) } else { (made, 0) }
                })
                .unwrap()
            })
        })
        .collect()
}

/// A host without the key floods the old primary's peer port while a switchover runs:
/// connections that never send and connections that send garbage. `allowed`: the
/// flooding host may connect (it is in peer.allow, as a member's compromised host would
/// be); else it is closed at accept by the default rule.
async fn a_flood_does_not_hold_off_the_release(allowed: bool) {
    if !vip_tests::privileged() {
        return;
    }
    let settings = VipSettings {
        instance: if allowed { "flood-in" } else { "flood-out" }.into(),
        // A failed release handshake would show as a 10 s wait.
        switchover_timeout_ms: 10_000,
        peer_allow: allowed.then(|| vec!["198.51.100.0/24".into()]),
        ..VipSettings::default()
    };
    let mut c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    c.wait_sole_holder(0, SETTLE).unwrap();
    // The old primary polls seldom, so it still holds the VIP when the new primary takes
    // over: the new one must ask it to release (the handshake under test) before binding.
    let slow = VipSettings {
        poll_interval_ms: 5000,
        ..c.settings.clone()
    };
    c.restart_agent_with(0, &slow).unwrap();
    c.wait(SETTLE, "h1's agent back", |c| {
        c.control(0, &["status"]).is_ok_and(|o| o.status.success())
    })
    .unwrap();
    assert_eq!(c.holders(), [0]);
    let watch = c.lab.watch_addrs().unwrap();
    let started = std::time::Instant::now();
    let to: SocketAddr = (IpAddr::V4(c.host(0).ipv4()), c.settings.peer_port).into();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = flood(c.client().ns(), to, &stop);
    // The flood is under way when the group switches.
    let flooded = |c: &Cluster| {
        let kinds = ["not_allowed", "host_busy", "busy", "malformed", "timeout"];
        kinds.iter().map(|k| rejected(c, 0, k)).sum::<u64>() >= 200
    };
    c.wait(SETTLE, "the flood to reach h1", flooded).unwrap();
    c.group.switchover(1).unwrap();
    // One poll to notice, then the handshake: within one peer timeout.
    let limit = Duration::from_millis(c.settings.peer_timeout_ms + c.settings.poll_interval_ms);
    let moved = vip_tests::lab::wait_for(limit, || c.holders() == [1]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (silent, garbage) = flood
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |(s, g), (a, b)| (s + a, g + b));
    assert!(
        moved,
        "the write VIP did not move to h2 within {limit:?} under the flood (holders {:?})\n{}",
        c.holders(),
        c.logs()
    );
    assert!(
        silent >= 500 && garbage >= 500,
        "{silent} silent, {garbage} garbage"
    );
    // The release handshake completed: h1 confirmed, h2 did not bind on a timeout.
    let events = c.events(1);
    assert!(
        events.iter().any(|e| e.event == "write_release_confirmed"),
        "h2 never got h1's confirmation\n{}",
        c.logs()
    );
    assert!(
        !events.iter().any(|e| e.event == "write_release_timeout"),
        "{}",
        c.logs()
    );
    let overlap = watch.overlap(c.settings.write_vip, started, |_, _| true);
    assert_eq!(overlap, Duration::ZERO, "two holders\n{}", c.logs());
    // Each refused connection was counted by why.
    let why = if allowed { "host_busy" } else { "not_allowed" };
    assert!(rejected(&c, 0, why) > 0, "no {why} count");
    assert!(c.agent_problems().is_empty(), "{:?}", c.agent_problems());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_from_an_allowed_host_does_not_hold_off_the_release() {
    a_flood_does_not_hold_off_the_release(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_from_a_host_outside_the_group_is_closed_at_accept() {
    a_flood_does_not_hold_off_the_release(false).await;
}
