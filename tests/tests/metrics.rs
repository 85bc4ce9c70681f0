//! The Prometheus endpoint as a monitoring system sees it: three agents with
//! `[metrics] listen = "127.0.0.1:9748"`, scraped over HTTP inside each host's network
//! namespace, before and after a switchover with connected clients; and an agent without
//! `[metrics]` (nothing listens) or with an address it cannot use (it exits, naming it).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::clients::{all_reset, connect};
use common::scrape::{LISTEN, sample, scrape};
use vip_agent::peer::Request;
use vip_agent::peer::key::Key;
use vip_agent::peer::wire::{self, Body, Nonce, RequestEnvelope};
use vip_tests::cluster::{Cluster, VipSettings};
use vip_tests::lab::wait_for;

const SETTLE: Duration = Duration::from_secs(20);

/// Scrapes host `i` until `check` holds on the text; the last text either way.
fn wait_scrape(c: &Cluster, i: usize, what: &str, check: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let ok = wait_for(SETTLE, || {
        last = scrape(c, i).unwrap_or_else(|e| e);
        check(&last)
    });
    assert!(ok, "h{}: {what}; last scrape:\n{last}\n{}", i + 1, c.logs());
    last
}

/// One frame under the wrong key to host `i`'s peer port, from the client host.
fn send_wrong_key(c: &Cluster, i: usize) {
    let to: SocketAddr = (IpAddr::V4(c.host(i).ipv4()), c.settings.peer_port).into();
    let closed = vip_tests::netns::run_in(c.client().ns(), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut challenge = vec![0; wire::HEADER_LEN];
        s.read_exact(&mut challenge).unwrap();
        challenge.resize(wire::needed(&challenge).unwrap(), 0);
        s.read_exact(&mut challenge[wire::HEADER_LEN..]).unwrap();
        let body = &challenge[wire::HEADER_LEN..challenge.len() - wire::MAC_LEN];
        let challenge: wire::Challenge = serde_json::from_slice(body).unwrap();
        let wrong = Key::from_bytes(&[0x42; 32]).unwrap();
        let frame = wire::encode(
            &Body::Request(RequestEnvelope {
                from: "intruder".into(),
                nonce: challenge.nonce,
                client_nonce: Nonce([7; wire::NONCE_LEN]),
                request: Request::Holdings,
            }),
            &wrong,
        )
        .unwrap();
        s.write_all(&frame).unwrap();
        let mut rest = Vec::new();
        matches!(s.read_to_end(&mut rest), Ok(0) | Err(_))
    })
    .unwrap();
    assert!(closed, "a frame under the wrong key was answered");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switchover_shows_in_the_scraped_metrics() {
    if !vip_tests::privileged() {
        return;
    }
    let settings = VipSettings {
        instance: "mt".into(),
        metrics_listen: Some(LISTEN.into()),
        // The lab's client sends a frame under the wrong key: it may connect.
        peer_allow: Some(vec!["198.51.100.0/24".into()]),
        ..VipSettings::default()
    };
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    let write = c.settings.write_vip;
    let held = format!("vip_agent_vip_held{{vip=\"{write}\",kind=\"write\"}}");
    let role = |r: &str| format!("vip_agent_role{{role=\"{r}\"}}");
    let arp = "vip_agent_announcements_total{family=\"arp\"}";
    let bound = "vip_agent_vip_moves_total{direction=\"bound\"}";
    let released = "vip_agent_vip_moves_total{direction=\"released\"}";
    c.wait_sole_holder(0, SETTLE).unwrap();

    // h1 is the primary, holds the write VIP and has announced it.
    let before = wait_scrape(&c, 0, "primary, holding and announced", |t| {
        sample(t, &role("primary")) == Some(1.0)
            && sample(t, &held) == Some(1.0)
            && sample(t, arp) >= Some(1.0)
    });
    assert_eq!(sample(&before, bound), Some(1.0), "{before}");
    assert_eq!(sample(&before, &role("none")), Some(0.0), "{before}");
    let h1_views = sample(&before, "vip_agent_view_changes_total").unwrap();
    let h2_before = wait_scrape(&c, 1, "secondary", |t| {
        sample(t, &role("secondary")) == Some(1.0) && sample(t, &held) == Some(0.0)
    });
    let h2_views = sample(&h2_before, "vip_agent_view_changes_total").unwrap();
    assert!(h1_views >= 1.0 && h2_views >= 1.0, "{before}\n{h2_before}");

    // A switchover with clients connected through the write VIP.
    let mut clients = connect(&c, write, 5);
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    let failed = all_reset(&mut clients, Duration::from_secs(5));
    assert!(failed.is_empty(), "not reset: {failed:?}\n{}", c.logs());

    let resets = |t: &str| {
        ["iter", "netlink"]
            .map(|p| {
                sample(
                    t,
                    &format!("vip_agent_connections_reset_total{{path=\"{p}\"}}"),
                )
                .unwrap_or(0.0)
            })
            .iter()
            .sum::<f64>()
    };
    let guard_active = format!("vip_agent_guard_active{{vip=\"{write}\"}}");
    let old = wait_scrape(&c, 0, "secondary, released, resets counted", |t| {
        sample(t, &role("secondary")) == Some(1.0)
            && sample(t, &held) == Some(0.0)
            && sample(t, released) == Some(1.0)
            && resets(t) >= 5.0
            && sample(t, &guard_active) == Some(1.0)
    });
    assert!(
        sample(&old, "vip_agent_view_changes_total").unwrap() > h1_views,
        "{old}"
    );
    assert_eq!(sample(&old, "vip_agent_reset_failures_total"), Some(0.0));
    // The guard saw the clients' packets through the VIP while h1 held it.
    let packets = format!("vip_agent_guard_packets_total{{vip=\"{write}\"}}");
    assert!(sample(&old, &packets) > Some(0.0), "{old}");
    assert!(
        sample(
            &old,
            &format!(
                "vip_agent_guard_released_packets_total{{vip=\"{write}\",action=\"rst_sent\"}}"
            )
        )
        .is_some(),
        "{old}"
    );
    assert!(
        sample(
            &old,
            &format!("vip_agent_tracked_connections{{vip=\"{write}\"}}")
        )
        .is_some(),
        "{old}"
    );

    let new = wait_scrape(&c, 1, "primary, holding and announced", |t| {
        sample(t, &role("primary")) == Some(1.0)
            && sample(t, &held) == Some(1.0)
            && sample(t, bound) == Some(1.0)
            && sample(t, arp) >= Some(1.0)
    });
    assert!(
        sample(&new, "vip_agent_view_changes_total").unwrap() > h2_views,
        "{new}"
    );
    assert!(
        sample(&new, "vip_agent_poll_duration_seconds_count") > Some(0.0),
        "{new}"
    );

    // A frame under the wrong key is an authentication failure on h2.
    let unauthenticated = "vip_agent_peer_rejected_frames_total{reason=\"unauthenticated\"}";
    assert_eq!(sample(&new, unauthenticated), Some(0.0), "{new}");
    send_wrong_key(&c, 1);
    let new = wait_scrape(&c, 1, "one unauthenticated frame", |t| {
        sample(t, unauthenticated) == Some(1.0)
    });
    eprintln!("--- h1 (old primary) after the switchover ---\n{old}");
    eprintln!("--- h2 (new primary) after the switchover ---\n{new}");
    assert!(c.agent_problems().is_empty(), "{:?}", c.agent_problems());
}

/// The TCP ports listening in host `i`'s namespace.
fn listening_ports(c: &Cluster, i: usize) -> Vec<u16> {
    let out = c
        .host(i)
        .output(Command::new("ss").args(["-Hltn"]))
        .unwrap();
    let mut ports: Vec<u16> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|local| local.rsplit_once(':'))
        .filter_map(|(_, port)| port.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[tokio::test(flavor = "multi_thread")]
async fn without_metrics_nothing_listens_and_a_bad_address_stops_the_agent() {
    if !vip_tests::privileged() {
        return;
    }
    let settings = VipSettings {
        instance: "mo".into(),
        ..VipSettings::default()
    };
    let mut c = Cluster::start(1, settings.clone(), vip_tests::agent_binary(), |g| g).unwrap();
    c.wait_sole_holder(0, SETTLE).unwrap();
    // Only the simulated mysqld and the agent's peer port.
    assert_eq!(
        listening_ports(&c, 0),
        [vip_tests::cluster::MYSQL_PORT, c.settings.peer_port]
    );
    assert!(scrape(&c, 0).is_err());

    // An address this host does not have: refused with the config's other problems.
    c.stop_agent(0).unwrap();
    let run = |listen: &str| {
        let bad = VipSettings {
            metrics_listen: Some(listen.into()),
            ..settings.clone()
        };
        c.write_config(0, &bad).unwrap();
        let config = c.config_path(0).display().to_string();
        let out = c.agent_command(0, &["run", "--config", &config]).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        stderr
    };
    let stderr = run("198.51.100.250:9748");
    assert!(
        stderr.contains(
            "metrics.listen = \"198.51.100.250:9748\": 198.51.100.250 is not an address of \
             this host"
        ),
        "{stderr}"
    );

    // A port taken by another program: the bind fails at start, and the agent says where.
    let taken = c
        .host(0)
        .run_in(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let addr = taken.local_addr().unwrap();
    let stderr = run(&addr.to_string());
    assert!(
        stderr.contains(&format!(
            "vip-agent: error: cannot serve metrics on {addr} (metrics.listen): Address already \
             in use (os error 98)"
        )),
        "{stderr}"
    );
}
