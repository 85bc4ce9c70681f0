//! The text a scrape returns after a few events, and the endpoint's HTTP answers.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;
use crate::peer::server::Reject;

fn vips() -> VipConfig {
    crate::config::parse(
        "[mysql]\nhost = \"127.0.0.1\"\nuser = \"u\"\npassword_file = \"/etc/p\"\n\
         [vip]\nnic = \"eth0\"\nwrite_vip = \"198.51.100.50\"\nprefix = 24\n\
         read_vips = [\"198.51.100.61\"]\n",
    )
    .unwrap()
    .vip
}

fn primary() -> NodeStatus {
    NodeStatus::Primary {
        me: "u1".into(),
        members: Vec::new(),
    }
}

/// The lines of `text` that are samples (not `#` comments).
fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn a_fresh_agent_has_every_fixed_series_at_zero() {
    let m = Metrics::new(&vips(), Arc::new(Stats::default()), None);
    let text = render(&m.registry());
    for line in [
        "vip_agent_role{role=\"primary\"} 0",
        "vip_agent_role{role=\"secondary\"} 0",
        "vip_agent_role{role=\"none\"} 1",
        "vip_agent_vip_held{vip=\"198.51.100.50\",kind=\"write\"} 0",
        "vip_agent_vip_held{vip=\"198.51.100.61\",kind=\"read\"} 0",
        "vip_agent_view_changes_total 0",
        "vip_agent_vip_moves_total{direction=\"bound\"} 0",
        "vip_agent_vip_moves_total{direction=\"released\"} 0",
        "vip_agent_announcements_total{family=\"arp\"} 0",
        "vip_agent_announcements_total{family=\"na\"} 0",
        "vip_agent_connections_reset_total{path=\"iter\"} 0",
        "vip_agent_connections_reset_total{path=\"netlink\"} 0",
        "vip_agent_reset_failures_total 0",
        "vip_agent_poll_duration_seconds_count 0",
        "vip_agent_peer_rejected_frames_total{reason=\"unauthenticated\"} 0",
        "vip_agent_peer_requests_total{outcome=\"served\"} 0",
        "# TYPE vip_agent_role gauge",
        "# TYPE vip_agent_vip_moves_total counter",
        "# TYPE vip_agent_poll_duration_seconds histogram",
    ] {
        assert!(has(&text, line), "missing {line:?} in\n{text}");
    }
    let version = format!(
        "vip_agent_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(has(&text, &version), "missing {version:?} in\n{text}");
    // No datapath, no guard series.
    assert!(!text.contains("vip_agent_guard"), "{text}");
}

#[test]
fn events_show_in_the_text() {
    let stats = Arc::new(Stats::default());
    let m = Metrics::new(&vips(), stats.clone(), None);
    let write = "198.51.100.50".parse().unwrap();
    m.view_changed(&primary());
    m.bound(write);
    m.announced(write);
    m.announced("2001:db8::50".parse().unwrap());
    m.reset(ResetPath::Iter, 3);
    m.reset(ResetPath::Netlink, 1);
    m.reset_failed();
    m.polled(Duration::from_micros(700));
    m.polled(Duration::from_millis(30));
    stats.count_rejected(Reject::Unauthenticated);
    stats.count_served();
    let text = render(&m.registry());
    for line in [
        "vip_agent_role{role=\"primary\"} 1",
        "vip_agent_role{role=\"none\"} 0",
        "vip_agent_vip_held{vip=\"198.51.100.50\",kind=\"write\"} 1",
        "vip_agent_view_changes_total 1",
        "vip_agent_vip_moves_total{direction=\"bound\"} 1",
        "vip_agent_announcements_total{family=\"arp\"} 1",
        "vip_agent_announcements_total{family=\"na\"} 1",
        "vip_agent_connections_reset_total{path=\"iter\"} 3",
        "vip_agent_connections_reset_total{path=\"netlink\"} 1",
        "vip_agent_reset_failures_total 1",
        "vip_agent_poll_duration_seconds_count 2",
        "vip_agent_poll_duration_seconds_bucket{le=\"0.001\"} 1",
        "vip_agent_poll_duration_seconds_bucket{le=\"0.05\"} 2",
        "vip_agent_peer_rejected_frames_total{reason=\"unauthenticated\"} 1",
        "vip_agent_peer_rejected_frames_total{reason=\"malformed\"} 0",
        "vip_agent_peer_requests_total{outcome=\"served\"} 1",
    ] {
        assert!(has(&text, line), "missing {line:?} in\n{text}");
    }
    m.released(write);
    m.view_changed(&NodeStatus::MysqldDown {
        reason: "refused".into(),
    });
    let text = render(&m.registry());
    for line in [
        "vip_agent_role{role=\"primary\"} 0",
        "vip_agent_role{role=\"none\"} 1",
        "vip_agent_vip_held{vip=\"198.51.100.50\",kind=\"write\"} 0",
        "vip_agent_view_changes_total 2",
        "vip_agent_vip_moves_total{direction=\"released\"} 1",
    ] {
        assert!(has(&text, line), "missing {line:?} in\n{text}");
    }
    assert_eq!(m.reset_failures(), 1);
}

#[test]
fn a_reload_keeps_one_held_series_per_configured_vip() {
    let mut m = Metrics::new(&vips(), Arc::new(Stats::default()), None);
    m.set_held("198.51.100.61".parse().unwrap(), true);
    let mut cfg = vips();
    cfg.read_vips = vec!["198.51.100.62".parse().unwrap()];
    m.set_vips(&cfg);
    // Not configured any more: ignored.
    m.set_held("198.51.100.61".parse().unwrap(), true);
    let text = render(&m.registry());
    assert!(!text.contains("198.51.100.61"), "{text}");
    assert!(
        has(
            &text,
            "vip_agent_vip_held{vip=\"198.51.100.62\",kind=\"read\"} 0"
        ),
        "{text}"
    );
    assert!(
        has(
            &text,
            "vip_agent_vip_held{vip=\"198.51.100.50\",kind=\"write\"} 0"
        ),
        "{text}"
    );
}

/// One HTTP/1.0 exchange with the endpoint: the status line and the whole answer.
fn get(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.lines().next().unwrap_or_default().to_string();
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_answers_get_metrics_only() {
    let m = Metrics::new(&vips(), Arc::new(Stats::default()), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = serve::serve_on(listener, m.registry());
    let answers = tokio::task::spawn_blocking(move || {
        [
            "GET /metrics HTTP/1.0\r\n\r\n",
            "GET /other HTTP/1.0\r\n\r\n",
            "POST /metrics HTTP/1.0\r\ncontent-length: 0\r\n\r\n",
        ]
        .map(|r| get(addr, r))
    })
    .await
    .unwrap();
    let [(ok, text), (missing, _), (post, post_text)] = answers;
    assert_eq!(ok, "HTTP/1.0 200 OK", "{text}");
    assert!(
        text.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{text}"
    );
    assert!(
        text.contains("\nvip_agent_role{role=\"none\"} 1\n"),
        "{text}"
    );
    assert_eq!(missing, "HTTP/1.0 404 Not Found");
    assert_eq!(post, "HTTP/1.0 405 Method Not Allowed");
    assert!(post_text.contains("allow: GET"), "{post_text}");
    task.abort();
}

#[tokio::test]
async fn a_taken_address_names_the_key_the_address_and_the_os_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let e = serve::bind(addr).await.unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.starts_with(&format!(
            "cannot serve metrics on {addr} (metrics.listen): "
        )),
        "{text}"
    );
    assert!(text.contains("Address already in use"), "{text}");
}
