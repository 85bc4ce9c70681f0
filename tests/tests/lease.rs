//! `coordination.mode = "lease"` end to end: real agents running the coordination core in
//! the lab, on the simulated group (which keeps the lease row as MGR would). What a user
//! sees: the VIPs on the right hosts, a switchover that never has two holders of any VIP,
//! and an agent that is frozen fenced by its own kernel, then back on resume.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use vip_tests::cluster::{Cluster, VipSettings};
use vip_tests::lab::wait_for;

const SETTLE: Duration = Duration::from_secs(20);
/// lease_ms and renew_ms: the shortest the config accepts with a 500 ms query timeout.
const LEASE: (u64, u64) = (1500, 250);
const PORT: u16 = 3306;

fn settings(instance: &str) -> VipSettings {
    VipSettings {
        instance: instance.into(),
        read_vips: vec![
            "198.51.100.61".parse().unwrap(),
            "198.51.100.62".parse().unwrap(),
        ],
        lease: Some(LEASE),
        ..VipSettings::default()
    }
}

fn start(settings: VipSettings) -> Cluster {
    Cluster::start(3, settings, vip_tests::agent_binary(), |g| {
        g.unreachable_after(Duration::from_millis(300))
            .expel_after(Duration::from_millis(300))
    })
    .unwrap()
}

/// Every read VIP held by exactly one host, and none by `not`.
fn reads_placed(c: &Cluster, not: usize) -> bool {
    c.settings
        .read_vips
        .iter()
        .all(|v| matches!(c.holders_of(*v).as_slice(), [h] if *h != not))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_moves_every_vip_and_no_vip_is_ever_held_twice() {
    if !vip_tests::privileged() {
        return;
    }
    let c = start(settings("ls"));
    let vip = c.settings.write_vip;
    c.wait_sole_holder(0, SETTLE).unwrap();
    assert!(c.logs().contains("(lease coordination)"), "{}", c.logs());
    c.wait(SETTLE, "the read VIPs on the secondaries", |c| {
        reads_placed(c, 0)
    })
    .unwrap();
    c.wait_client_reaches(vip, 0, SETTLE).await.unwrap();
    let status = c.control(0, &["status", "--json"]).unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("holding the write lease, term 1"),
        "{text}\n{}",
        c.logs()
    );

    // Settled: h1 has waited out every earlier lease, so its confirmation is all the
    // next holder needs.
    c.wait(SETTLE, "h1's lease settled", |c| {
        c.group
            .lease_row()
            .is_some_and(|r| r.term == 1 && r.settled == 1)
    })
    .unwrap();

    let watch = c.lab.watch_addrs().unwrap();
    let from = std::time::Instant::now();
    c.group.switchover(2).unwrap();
    c.wait_sole_holder(2, SETTLE).unwrap();
    c.wait(SETTLE, "the read VIPs off the new primary", |c| {
        reads_placed(c, 2)
    })
    .unwrap();
    c.wait_client_reaches(vip, 2, SETTLE).await.unwrap();
    assert!(
        c.events(2)
            .iter()
            .any(|e| e.event == "write_release_confirmed"),
        "h3 did not bind on h1's confirmation\n{}",
        c.logs()
    );
    for addr in std::iter::once(vip).chain(c.settings.read_vips.iter().copied()) {
        let twice = watch.overlap(addr, from, |_, _| true);
        assert_eq!(
            twice,
            Duration::ZERO,
            "{addr} was held twice\n{:?}\n{}",
            watch.held(addr),
            c.logs()
        );
    }
    assert!(c.agent_problems().is_empty(), "{:?}", c.agent_problems());
}

fn connect(c: &Cluster, to: SocketAddr) -> std::io::Result<TcpStream> {
    c.client()
        .run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(1)))
        .expect("entering the client's namespace")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_is_fenced_by_its_own_kernel_and_holds_again_when_it_resumes() {
    if !vip_tests::privileged() {
        return;
    }
    let c = start(settings("lf"));
    let vip = c.settings.write_vip;
    let to = SocketAddr::new(vip, PORT);
    c.wait_sole_holder(0, SETTLE).unwrap();
    c.wait_client_reaches(vip, 0, SETTLE).await.unwrap();

    // Every thread of h1's agent stopped: nothing renews the lease in its kernel.
    let pid = c.agents[0].as_ref().unwrap().proc.pid() as i32;
    // SAFETY: kill with a valid signal on a child process of this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let mut last = None;
    let fenced = wait_for(SETTLE, || {
        last = Some(connect(&c, to));
        matches!(&last, Some(Err(e)) if e.kind() == ErrorKind::ConnectionRefused)
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(
        fenced,
        "a connect to the frozen agent's VIP was never refused: {last:?}\n{}",
        c.logs()
    );
    // The kernel alone did it: the address stayed bound the whole time.
    assert_eq!(c.holders_of(vip), [0], "{}", c.logs());

    // Resumed: it notices it was not running, confirms its lease, and serves again.
    c.wait_client_reaches(vip, 0, SETTLE).await.unwrap();
    assert!(
        wait_for(SETTLE, || c
            .events(0)
            .iter()
            .any(|e| e.event == "suspended")),
        "{}",
        c.logs()
    );
    assert_eq!(c.holders_of(vip), [0], "{}", c.logs());
    assert!(c.agent_problems().is_empty(), "{:?}", c.agent_problems());
}
