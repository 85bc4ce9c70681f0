//! Read VIPs and coordination across the group, end to end: a simulated group in the
//! lab, one vip-agent per host. Each test asserts what an operator sees: which host has
//! which address, what the CLI prints, what the wire carried.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use vip_tests::cluster::{Cluster, VipSettings};
use vip_tests::lab::wait_for;

const SETTLE: Duration = Duration::from_secs(20);

fn vip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn settings(floating: &str, reads: &[&str], instance: &str) -> VipSettings {
    VipSettings {
        read_vips: reads.iter().map(|s| vip(s)).collect(),
        floating_type: floating.into(),
        instance: instance.into(),
        ..VipSettings::default()
    }
}

fn start(hosts: usize, settings: VipSettings) -> Cluster {
    Cluster::start(hosts, settings, vip_tests::agent_binary(), |g| {
        g.unreachable_after(Duration::from_millis(300))
            .expel_after(Duration::from_millis(300))
            .rejoin_delays(Duration::from_millis(200), Duration::from_millis(200))
    })
    .unwrap()
}

/// Every read VIP held by exactly one host, and the read VIPs each host holds.
fn shares(c: &Cluster) -> Option<Vec<BTreeSet<IpAddr>>> {
    let mut out = vec![BTreeSet::new(); c.lab.hosts().len()];
    for (v, holders) in c.read_placement() {
        let [h] = holders[..] else { return None };
        out[h].insert(v);
    }
    Some(out)
}

/// Waits until every read VIP has one holder and `check` holds for the shares.
fn wait_shares(
    c: &Cluster,
    what: &str,
    check: impl Fn(&[BTreeSet<IpAddr>]) -> bool,
) -> Vec<BTreeSet<IpAddr>> {
    c.wait(SETTLE, what, |c| shares(c).is_some_and(|s| check(&s)))
        .unwrap();
    shares(c).unwrap()
}

fn counts(s: &[BTreeSet<IpAddr>]) -> Vec<usize> {
    s.iter().map(BTreeSet::len).collect()
}

const FOUR: [&str; 3] = ["198.51.100.61", "198.51.100.62", "198.51.100.63"];

/// TO_PRIMARY with four members and three read VIPs: one each on the secondaries. A
/// secondary dies: its VIP goes to the primary, the others keep theirs. It comes back:
/// it takes the one the primary holds, and nothing else moves.
#[tokio::test(flavor = "multi_thread")]
async fn secondary_loss_and_rejoin_to_primary() {
    if !vip_tests::privileged() {
        return;
    }
    let c = start(4, settings("TO_PRIMARY", &FOUR, "rp"));
    c.wait_sole_holder(0, SETTLE).unwrap();
    let before = wait_shares(&c, "one read VIP per secondary", |s| {
        counts(s) == [0, 1, 1, 1]
    });

    c.group.crash(3).await.unwrap();
    let lost = before[3].clone();
    let after = wait_shares(&c, "h4's read VIP on the primary", |s| {
        s[0] == lost && s[3].is_empty()
    });
    assert_eq!((&after[1], &after[2]), (&before[1], &before[2]));
    assert_eq!(c.holders(), [0]);

    c.group.restart(3).await.unwrap();
    c.group.rejoin(3).unwrap();
    let back = wait_shares(&c, "h4 takes the primary's read VIP", |s| {
        counts(s) == [0, 1, 1, 1]
    });
    assert_eq!(back, before, "{}", c.logs());
}

/// TO_ANOTHER_SECONDARY: a dead secondary's VIP goes to another secondary, never to the
/// primary; on rejoin the balance comes back with one move.
#[tokio::test(flavor = "multi_thread")]
async fn secondary_loss_and_rejoin_to_another_secondary() {
    if !vip_tests::privileged() {
        return;
    }
    let c = start(4, settings("TO_ANOTHER_SECONDARY", &FOUR, "ras"));
    c.wait_sole_holder(0, SETTLE).unwrap();
    let before = wait_shares(&c, "one read VIP per secondary", |s| {
        counts(s) == [0, 1, 1, 1]
    });

    c.group.crash(3).await.unwrap();
    let after = wait_shares(&c, "h4's read VIP on another secondary", |s| {
        s[0].is_empty() && s[3].is_empty() && counts(s)[1..3].iter().sum::<usize>() == 3
    });
    // The survivors kept theirs; one of them took h4's.
    assert!(after[1].is_superset(&before[1]) && after[2].is_superset(&before[2]));

    c.group.restart(3).await.unwrap();
    c.group.rejoin(3).unwrap();
    let back = wait_shares(&c, "balanced again", |s| counts(s) == [0, 1, 1, 1]);
    let moved = (1..4)
        .map(|h| back[h].difference(&after[h]).count())
        .sum::<usize>();
    assert_eq!(moved, 1, "one VIP moves to the rejoined member: {back:?}");

    // With no secondary left, the primary takes them all.
    for i in 1..4 {
        c.group.crash(i).await.unwrap();
    }
    // (The primary loses quorum when 3 of 4 die; it must release everything.)
    c.wait(SETTLE, "everything released on quorum loss", |c| {
        c.holders().is_empty() && c.read_counts().iter().all(|&n| n == 0)
    })
    .unwrap();
}

/// TO_PRIMARY, a member joins while the primary holds no read VIP and h2 holds two (a
/// manual topology set that up): the newcomer takes one from the member holding the
/// most, and nothing else moves.
#[tokio::test(flavor = "multi_thread")]
async fn a_third_secondary_joins() {
    if !vip_tests::privileged() {
        return;
    }
    let c = start(4, settings("TO_PRIMARY", &FOUR, "join"));
    c.wait_sole_holder(0, SETTLE).unwrap();
    wait_shares(&c, "first placement", |s| counts(s) == [0, 1, 1, 1]);
    // h4 leaves cleanly (STOP GROUP_REPLICATION): its VIP goes to the primary.
    c.group
        .set_plugin(3, vip_tests::sim::Plugin::NotStarted)
        .unwrap();
    wait_shares(&c, "h4's VIP on the primary", |s| counts(s) == [1, 1, 1, 0]);
    let (u1, u2, u3) = (uuid(&c, 0), uuid(&c, 1), uuid(&c, 2));
    let text = format!("{u1}::; {u2}::{},{}; {u3}::{}", FOUR[0], FOUR[1], FOUR[2]);
    run_ok(&c, 0, &["set-topology", &text]);
    let two_secondaries = wait_shares(&c, "the manual topology", |s| counts(s) == [0, 2, 1, 0]);

    c.group.rejoin(3).unwrap();
    let with = wait_shares(&c, "h4 takes one from h2", |s| counts(s) == [0, 1, 1, 1]);
    assert!(two_secondaries[1].is_superset(&with[3]), "{with:?}");
    assert!(two_secondaries[1].is_superset(&with[1]));
    assert_eq!(with[2], two_secondaries[2]);
}

/// The uuid of member `i`.
fn uuid(c: &Cluster, i: usize) -> String {
    c.group.uuid(i)
}

fn run_ok(c: &Cluster, i: usize, verb: &[&str]) -> String {
    let out = c.control(i, verb).unwrap();
    assert!(
        out.status.success(),
        "vip-agent {verb:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_err(c: &Cluster, i: usize, verb: &[&str]) -> String {
    let out = c.control(i, verb).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "vip-agent {verb:?} should have been refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// set-topology: accepted on the primary and applied on every member; each kind of bad
/// topology refused with a message naming the problem, and nothing moves.
#[tokio::test(flavor = "multi_thread")]
async fn manual_topology() {
    if !vip_tests::privileged() {
        return;
    }
    let c = start(3, settings("TO_PRIMARY", &FOUR, "topo"));
    c.wait_sole_holder(0, SETTLE).unwrap();
    wait_shares(&c, "first placement", |s| {
        counts(s) == [0, 2, 1] || counts(s) == [0, 1, 2]
    });
    let (u1, u2, u3) = (uuid(&c, 0), uuid(&c, 1), uuid(&c, 2));

    // Everything on h3.
    let text = format!("{u1}::; {u2}::; {u3}::{}", FOUR.join(","));
    let out = run_ok(&c, 0, &["set-topology", &text]);
    assert!(out.contains("applied"), "{out}");
    let manual = wait_shares(&c, "the manual topology", |s| counts(s) == [0, 0, 3]);
    // `topology` prints it back in the same syntax, the write VIP on the primary.
    let shown = run_ok(&c, 0, &["topology"]);
    assert!(shown.contains(&format!("{u1}::198.51.100.50")), "{shown}");
    assert!(
        shown.contains(&format!("{u3}::{}", FOUR.join(","))),
        "{shown}"
    );
    assert_eq!(run_ok(&c, 2, &["topology"]).trim(), shown.trim());

    let refusals = [
        // Not on the primary.
        (1, text.clone(), "only by the primary"),
        // Malformed.
        (0, format!("{u1}:198.51.100.61"), "entry 1"),
        // Unknown member.
        (
            0,
            format!(
                "{u1}::; {u2}::; {u3}::198.51.100.61,198.51.100.62; 00000000-0000-0000-0000-00000000dead::198.51.100.63"
            ),
            "not an ONLINE member",
        ),
        // The write VIP would move.
        (
            0,
            format!("{u1}::; {u2}::198.51.100.50; {u3}::{}", FOUR.join(",")),
            "may not move",
        ),
        // A VIP removed.
        (
            0,
            format!("{u1}::; {u2}::198.51.100.61; {u3}::198.51.100.62"),
            "missing",
        ),
        // A VIP added.
        (
            0,
            format!("{u1}::; {u2}::198.51.100.99; {u3}::{}", FOUR.join(",")),
            "not configured",
        ),
        // A member dropped.
        (
            0,
            format!("{u1}::; {u3}::{}", FOUR.join(",")),
            "not in the topology",
        ),
    ];
    for (node, text, want) in refusals {
        let err = run_err(&c, node, &["set-topology", &text]);
        assert!(err.contains(want), "{text:?}: expected {want:?} in {err}");
    }
    assert_eq!(
        shares(&c).unwrap(),
        manual,
        "a refused topology moved something"
    );

    // A membership change makes the override invalid: h3 dies, its VIPs go to the
    // primary (TO_PRIMARY), and h2 keeps holding nothing but must take one.
    c.group.crash(2).await.unwrap();
    wait_shares(&c, "re-planned after h3 left", |s| {
        s[2].is_empty() && counts(s)[0] + counts(s)[1] == 3 && counts(s)[1] >= 1
    });
}

/// Reload: a valid file applies at once with the fewest moves; an invalid one is
/// rejected whole, every problem listed, and the running config stays.
#[tokio::test(flavor = "multi_thread")]
async fn reload_valid_and_invalid() {
    if !vip_tests::privileged() {
        return;
    }
    let two = ["198.51.100.61", "198.51.100.62"];
    let mut c = start(3, settings("TO_PRIMARY", &two, "rl"));
    c.wait_sole_holder(0, SETTLE).unwrap();
    let before = wait_shares(&c, "first placement", |s| counts(s) == [0, 1, 1]);

    // Add a third read VIP everywhere: by `vip-agent reload` on the primary, SIGHUP on the
    // others.
    let three = settings("TO_PRIMARY", &FOUR, "rl");
    for i in 0..3 {
        c.write_config(i, &three).unwrap();
    }
    c.settings = three;
    for i in 1..3 {
        let pid = c.agents[i].as_ref().unwrap().proc.pid();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
    let out = run_ok(&c, 0, &["reload"]);
    assert!(out.contains("vip.read_vips"), "{out}");
    let after = wait_shares(&c, "the new read VIP placed", |s| {
        counts(s).iter().sum::<usize>() == 3
    });
    // Nothing that was placed moved; under TO_PRIMARY the new one goes to the primary.
    assert_eq!((&after[1], &after[2]), (&before[1], &before[2]));
    assert_eq!(after[0], BTreeSet::from([vip("198.51.100.63")]));

    // An invalid file: two problems, both reported; nothing changes.
    let path = c.agents[0].as_ref().unwrap().config.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let bad = text
        .replace("announce_count = 5", "announce_count = 99")
        .replace("[peer]", "[peer]\nbogus_key = 1");
    std::fs::write(&path, bad).unwrap();
    let err = run_err(&c, 0, &["reload"]);
    assert!(err.contains("vip.announce_count = 99"), "{err}");
    assert!(err.contains("peer.bogus_key"), "{err}");
    assert!(err.contains("stays in force"), "{err}");
    // Still serving, with the old config.
    let status = run_ok(&c, 0, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["role"], "primary");
    assert_eq!(shares(&c).unwrap(), after);
}

/// force-rebind after every VIP was deleted by hand on every node: all are back, and
/// every one is announced again on the wire.
#[tokio::test(flavor = "multi_thread")]
async fn force_rebind_after_manual_deletes() {
    if !vip_tests::privileged() {
        return;
    }
    let c = start(3, settings("TO_PRIMARY", &FOUR, "fr"));
    c.wait_sole_holder(0, SETTLE).unwrap();
    let before = wait_shares(&c, "first placement", |s| {
        counts(s).iter().sum::<usize>() == 3
    });
    // The agents re-add what is deleted on their own (they watch the NIC); force-rebind
    // must leave the same placement and re-announce every VIP.
    for i in 0..3 {
        for v in FOUR.iter().map(|s| vip(s)).chain([c.settings.write_vip]) {
            if c.holders_of(v).contains(&i) {
                c.host(i).del_addr(&format!("{v}/24")).unwrap();
            }
        }
    }
    let capture = c.lab.capture().unwrap();
    let out = run_ok(&c, 0, &["force-rebind"]);
    assert!(out.contains("every member applied it"), "{out}");
    wait_shares(&c, "every VIP back", |s| s == before.as_slice());
    c.wait_sole_holder(0, SETTLE).unwrap();
    let count = c.settings.announce_count as usize;
    for v in FOUR.iter().map(|s| vip(s)).chain([c.settings.write_vip]) {
        if let Err(e) =
            capture.wait_until(SETTLE, |a| a.iter().filter(|x| x.ip == v).count() >= count)
        {
            panic!("{v} was not re-announced {count} times: {e}\n{}", c.logs());
        }
    }
}

/// A planned switchover: the new primary binds the write VIP only after the old one
/// released it. Measured with the kernel's own address events in both namespaces.
#[tokio::test(flavor = "multi_thread")]
async fn switchover_has_no_two_owners() {
    if !vip_tests::privileged() {
        return;
    }
    let mut c = start(3, settings("TO_PRIMARY", &FOUR, "sw"));
    c.wait_sole_holder(0, SETTLE).unwrap();
    // The old primary's agent polls slowly, so it is still holding the VIP when the new
    // primary's agent sees the switchover: only the release handshake can prevent two
    // owners. (It adopts the VIP on restart.)
    c.stop_agent(0).unwrap();
    let slow = VipSettings {
        poll_interval_ms: 3000,
        ..c.settings.clone()
    };
    c.agents[0] = Some(c.spawn_agent_with(0, &slow, "h1").unwrap());
    c.wait(SETTLE, "h1's agent adopted the VIP", |c| {
        c.events(0).iter().any(|e| e.event == "adopted")
    })
    .unwrap();
    let monitor = |i: usize| {
        c.host(i)
            .spawn(
                Command::new("ip")
                    .args(["-ts", "monitor", "address", "dev", "eth0"])
                    .stdout(Stdio::piped()),
            )
            .unwrap()
    };
    let (m1, m2) = (monitor(0), monitor(1));
    c.group.switchover(1).unwrap();
    c.wait_sole_holder(1, SETTLE).unwrap();
    let lines = |m: &vip_tests::lab::Proc| {
        let _ = m.kill();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut m.take_stdout().unwrap(), &mut text).unwrap();
        text
    };
    let (t1, t2) = (lines(&m1), lines(&m2));
    let at = |text: &str, deleted: bool| {
        text.lines()
            .find(|l| l.contains(" 198.51.100.50/") && l.contains("] Deleted ") == deleted)
            .and_then(|l| l.strip_prefix('['))
            .and_then(|l| l.split(']').next())
            .map(str::to_owned)
    };
    let released = at(&t1, true).unwrap_or_else(|| panic!("h1 never released:\n{t1}"));
    let bound = at(&t2, false).unwrap_or_else(|| panic!("h2 never bound:\n{t2}"));
    // Same clock, same format: the timestamps compare as text.
    assert!(
        released <= bound,
        "both held the write VIP from {bound} to {released}\n{}",
        c.logs()
    );
    // h2 waited for h1's confirmation, and h1 released because h2 asked.
    assert!(
        c.events(1)
            .iter()
            .any(|e| e.event == "write_release_confirmed"),
        "{}",
        c.logs()
    );
    assert!(
        c.events(0).iter().any(|e| e.event == "released"
            && e.fields["reason"]
                .as_str()
                .is_some_and(|r| r.contains("asked for it"))),
        "{}",
        c.logs()
    );
    assert!(wait_for(SETTLE, || c.holders() == [1]));
}

/// The primary's agent is gone: the secondaries keep their read VIPs while their own
/// views are healthy, even an agent that restarts and cannot reach the primary's agent.
/// A secondary cut off into a minority then releases them.
#[tokio::test(flavor = "multi_thread")]
async fn secondaries_keep_read_vips_without_the_primary_agent_until_quorum_loss() {
    if !vip_tests::privileged() {
        return;
    }
    let mut c = start(3, settings("TO_PRIMARY", &FOUR, "np"));
    c.wait_sole_holder(0, SETTLE).unwrap();
    let before = wait_shares(&c, "first placement", |s| {
        counts(s).iter().sum::<usize>() == 3
    });
    c.stop_agent(0).unwrap();
    // h2's agent restarts with no placement and no primary's agent to ask.
    c.stop_agent(1).unwrap();
    c.restart_agent(1).unwrap();
    c.wait(SETTLE, "h2's agent adopted its read VIPs", |c| {
        c.events(1).iter().filter(|e| e.event == "adopted").count() == before[1].len()
    })
    .unwrap();
    assert_eq!(shares(&c).unwrap(), before, "{}", c.logs());
    assert!(
        !c.events(1).iter().any(|e| e.event == "released"),
        "{}",
        c.logs()
    );

    // h2 alone on its side: no quorum, so it lets go of everything.
    c.group.partition(&[&[0, 2], &[1]]).unwrap();
    c.wait(SETTLE, "h2 released its read VIPs", |c| {
        before[1].iter().all(|v| !c.holders_of(*v).contains(&1))
    })
    .unwrap();
}
