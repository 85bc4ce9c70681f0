//! vip-agent's `net` module in the lab: binding VIPs with netlink inside a host's
//! namespace, watching address changes, and announcing VIPs to a client whose neighbour
//! cache still points at the previous owner. They need root; without it they skip.

use std::future::Future;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use tokio::runtime::Runtime;
use vip_agent::net::{AddrEvent, AddrEvents, Addrs, Announcement, BoundAddr, NoSuchNic, announce};
use vip_tests::lab::{Host, Kind, Lab, Mac, wait_for};

/// Long enough for any change in the lab to take effect; only spent on failure.
const SETTLE: Duration = Duration::from_secs(5);
const NIC: &str = "eth0";

/// A netlink connection and an address watch opened inside a host's namespace, driven
/// from the test thread: sockets keep the namespace they were made in.
struct InHost {
    addrs: Addrs,
    events: AddrEvents,
    rt: Runtime,
}

impl InHost {
    fn open(host: &Host) -> InHost {
        host.run_in(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let (addrs, events) = rt.block_on(async {
                let addrs = Addrs::new().await.expect("Addrs::new");
                let events = addrs.watch(NIC).await.expect("Addrs::watch");
                (addrs, events)
            });
            InHost { addrs, events, rt }
        })
        .expect("entering the namespace")
    }

    fn bind(&self, vip: &str, prefix: u8, label: &str) -> anyhow::Result<()> {
        self.rt
            .block_on(self.addrs.bind(NIC, ip(vip), prefix, label))
    }

    fn unbind(&self, vip: &str, prefix: u8) -> anyhow::Result<()> {
        self.rt.block_on(self.addrs.unbind(NIC, ip(vip), prefix))
    }

    fn list(&self) -> Vec<BoundAddr> {
        self.rt.block_on(self.addrs.list(NIC)).expect("list")
    }

    /// Address events for `vip`, until one matches `last` (included); panics after SETTLE.
    fn events_until(&mut self, vip: &str, last: impl Fn(&AddrEvent) -> bool) -> Vec<AddrEvent> {
        let vip = ip(vip);
        let (rt, events) = (&self.rt, &mut self.events);
        rt.block_on(async {
            let mut seen = Vec::new();
            loop {
                let next = tokio::time::timeout(SETTLE, events.recv()).await;
                let event = next
                    .unwrap_or_else(|_| panic!("no address event in {SETTLE:?}; saw {seen:?}"))
                    .expect("the watch ended");
                let ours = match &event {
                    AddrEvent::Added(a) | AddrEvent::Removed(a) => a.addr == vip,
                    AddrEvent::Lost => true,
                };
                if ours {
                    let done = last(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
            }
        })
    }
}

/// Runs an async block on a current-thread runtime inside `host`'s namespace.
fn in_host<T, F, Fut>(host: &Host, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    host.run_in(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(f())
    })
    .expect("entering the namespace")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

fn announce_from(host: &Host, vip: &str, count: u32) -> anyhow::Result<u32> {
    let a = Announcement {
        nic: NIC.into(),
        addr: ip(vip),
        count,
        interval: Duration::from_millis(100),
    };
    in_host(host, move || async move { announce(&a).await })
}

/// The lladdr `client` has for `vip`, if any.
fn neighbour_mac(client: &Host, vip: &str) -> Option<Mac> {
    let vip = ip(vip);
    client
        .neighbours()
        .expect("reading the neighbour cache")
        .into_iter()
        .find(|n| n.ip == vip)
        .and_then(|n| n.lladdr)
}

fn ping(from: &Host, to: &str) -> anyhow::Result<()> {
    from.output(Command::new("ping").args(["-c1", "-W2", to]))
        .map(drop)
}

#[test]
fn ipv4_vip_binds_under_its_label_idempotently_and_unbinds() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(0).build().unwrap();
    let h1 = lab.host(0);
    let mut net = InHost::open(h1);
    let vip = "198.51.100.50";

    net.bind(vip, 24, "eth0:0").unwrap();
    let addrs = h1.addrs().unwrap();
    let bound = addrs.iter().find(|a| a.addr == ip(vip)).expect("bound");
    assert_eq!((bound.prefix, bound.label.as_deref()), (24, Some("eth0:0")));
    let shown = h1.ip(&["-4", "-o", "addr", "show", "dev", NIC]).unwrap();
    assert!(
        shown
            .lines()
            .any(|l| l.contains("198.51.100.50/24 brd 198.51.100.255")),
        "the broadcast address is set: {shown}"
    );
    let added = net.events_until(vip, |e| matches!(e, AddrEvent::Added(_)));
    assert_eq!(
        added,
        [AddrEvent::Added(BoundAddr {
            addr: ip(vip),
            prefix: 24,
            label: Some("eth0:0".into())
        })]
    );

    // Adoption: binding again is Ok and leaves the address alone.
    net.bind(vip, 24, "eth0:0").unwrap();
    assert!(h1.addrs().unwrap().iter().any(|a| a.addr == ip(vip)));

    net.unbind(vip, 24).unwrap();
    assert!(!h1.addrs().unwrap().iter().any(|a| a.addr == ip(vip)));
    // Had the second bind deleted and re-added the address, a RTM_DELADDR and another
    // RTM_NEWADDR would come before the unbind's RTM_DELADDR.
    let rest = net.events_until(vip, |e| matches!(e, AddrEvent::Removed(_)));
    assert!(
        matches!(rest.as_slice(), [AddrEvent::Removed(a)] if a.addr == ip(vip)),
        "{rest:?}"
    );

    net.unbind(vip, 24).unwrap();
    assert_eq!(net.list().iter().filter(|a| a.addr == ip(vip)).count(), 0);
}

#[test]
fn ipv6_vip_is_usable_at_once_without_dad() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(1).build().unwrap();
    let (h1, c1) = (lab.host(0), lab.client(0));
    let net = InHost::open(h1);
    let vip = "2001:db8::50";

    net.bind(vip, 64, "eth0:0").unwrap();
    let addrs = h1.addrs().unwrap();
    let bound = addrs.iter().find(|a| a.addr == ip(vip)).expect("bound");
    assert_eq!((bound.prefix, bound.label.as_deref()), (64, None));
    assert!(
        bound.has_flag("nodad") && !bound.has_flag("tentative"),
        "{bound:?}"
    );
    // DAD stays on for the host's other addresses.
    let accept_dad = h1
        .output(Command::new("sysctl").args(["-n", "net.ipv6.conf.eth0.accept_dad"]))
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&accept_dad.stdout).trim(), "0");

    ping(c1, vip).unwrap();

    net.bind(vip, 64, "eth0:0").unwrap();
    net.unbind(vip, 64).unwrap();
    assert!(!net.list().iter().any(|a| a.addr == ip(vip)));
    net.unbind(vip, 64).unwrap();
}

/// Moves `vip` from h2 to h1 the way a failover does, after c1 has learned h2's MAC for
/// it, and checks what h1's announcement put on the wire and into c1's cache.
fn failover_is_announced(vip: &str, prefix: u8, kind: Kind) {
    let lab = Lab::builder().hosts(2).clients(1).build().unwrap();
    let (h1, h2, c1) = (lab.host(0), lab.host(1), lab.client(0));
    let (net1, net2) = (InHost::open(h1), InHost::open(h2));

    net2.bind(vip, prefix, "eth0:0").unwrap();
    assert!(
        wait_for(SETTLE, || ping(c1, vip).is_ok()),
        "c1 reaches {vip} on h2"
    );
    assert_eq!(neighbour_mac(c1, vip), Some(h2.mac()));

    net2.unbind(vip, prefix).unwrap();
    net1.bind(vip, prefix, "eth0:0").unwrap();
    let capture = lab.capture().unwrap();
    assert_eq!(announce_from(h1, vip, 5).unwrap(), 5);

    let announcements = |seen: &[vip_tests::lab::Announcement]| {
        seen.iter()
            .filter(|a| a.ip == ip(vip) && a.kind == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    capture
        .wait_until(SETTLE, |seen| announcements(seen).len() >= 5)
        .unwrap();
    // A sixth would show up by now if there were one.
    assert!(!wait_for(Duration::from_millis(300), || announcements(
        &capture.announcements()
    )
    .len()
        > 5));
    let seen = announcements(&capture.announcements());
    assert_eq!(seen.len(), 5, "{seen:#?}");
    for a in &seen {
        assert_eq!(
            (a.src_mac, a.lladdr, a.port.as_str()),
            (h1.mac(), Some(h1.mac()), "h1"),
            "{a:?}"
        );
    }
    // Paced by the interval, not sent in one burst.
    let spread = seen[4].at - seen[0].at;
    assert!(spread >= Duration::from_millis(350), "{spread:?}");

    assert!(
        wait_for(SETTLE, || neighbour_mac(c1, vip) == Some(h1.mac())),
        "c1 still has {:?} for {vip}",
        neighbour_mac(c1, vip)
    );
    ping(c1, vip).unwrap();
}

#[test]
fn gratuitous_arp_moves_a_clients_cache_entry() {
    if !vip_tests::privileged() {
        return;
    }
    failover_is_announced("198.51.100.50", 24, Kind::GratuitousArp);
}

#[test]
fn unsolicited_na_moves_a_clients_cache_entry() {
    if !vip_tests::privileged() {
        return;
    }
    let na = Kind::NeighbourAdvert {
        override_flag: true,
        solicited: false,
    };
    failover_is_announced("2001:db8::50", 64, na);
}

#[test]
fn two_labels_on_one_host_stay_apart() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(0).build().unwrap();
    let h1 = lab.host(0);
    let net = InHost::open(h1);

    net.bind("198.51.100.50", 24, "eth0:0").unwrap();
    net.bind("198.51.100.51", 24, "eth0:1").unwrap();
    let label_of = |vip: &str| {
        net.list()
            .into_iter()
            .find(|a| a.addr == ip(vip))
            .map(|a| a.label)
    };
    assert_eq!(label_of("198.51.100.50"), Some(Some("eth0:0".into())));
    assert_eq!(label_of("198.51.100.51"), Some(Some("eth0:1".into())));
    assert_eq!(label_of("198.51.100.11"), Some(Some("eth0".into())));

    // Another instance's VIP is not adopted under our label.
    let err = net.bind("198.51.100.51", 24, "eth0:0").unwrap_err();
    assert!(format!("{err:#}").contains("eth0:1"), "{err:#}");

    net.unbind("198.51.100.50", 24).unwrap();
    assert_eq!(label_of("198.51.100.50"), None);
    assert_eq!(label_of("198.51.100.51"), Some(Some("eth0:1".into())));
    let shown = h1.addrs().unwrap();
    assert!(shown.iter().any(|a| a.label.as_deref() == Some("eth0:1")));
    assert!(!shown.iter().any(|a| a.label.as_deref() == Some("eth0:0")));
}

#[test]
fn a_vip_deleted_by_hand_is_reported_at_once() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(0).build().unwrap();
    let h1 = lab.host(0);
    let mut net = InHost::open(h1);

    net.bind("198.51.100.50", 24, "eth0:0").unwrap();
    net.events_until("198.51.100.50", |e| matches!(e, AddrEvent::Added(_)));
    h1.del_addr("198.51.100.50/24").unwrap();
    let removed = net.events_until("198.51.100.50", |e| matches!(e, AddrEvent::Removed(_)));
    assert!(
        matches!(removed.as_slice(), [AddrEvent::Removed(a)] if a.label.as_deref() == Some("eth0:0")),
        "{removed:?}"
    );

    net.bind("2001:db8::50", 64, "eth0:0").unwrap();
    net.events_until("2001:db8::50", |e| matches!(e, AddrEvent::Added(_)));
    h1.del_addr("2001:db8::50/64").unwrap();
    net.events_until("2001:db8::50", |e| matches!(e, AddrEvent::Removed(_)));
}

#[test]
fn errors_name_the_nic_and_the_address() {
    if !vip_tests::privileged() {
        return;
    }
    let lab = Lab::builder().hosts(1).clients(0).build().unwrap();
    let h1 = lab.host(0);
    let errors = in_host(h1, || async {
        let addrs = Addrs::new().await.unwrap();
        let vip = ip("198.51.100.50");
        let missing = [
            addrs
                .bind("nosuch0", vip, 24, "nosuch0:0")
                .await
                .unwrap_err(),
            addrs.unbind("nosuch0", vip, 24).await.unwrap_err(),
            addrs.list("nosuch0").await.unwrap_err(),
            addrs.watch("nosuch0").await.err().unwrap(),
            announce(&Announcement {
                nic: "nosuch0".into(),
                addr: vip,
                count: 3,
                interval: Duration::ZERO,
            })
            .await
            .unwrap_err(),
        ];
        let others = [
            addrs.bind(NIC, vip, 24, "eth1:0").await.unwrap_err(),
            addrs.bind(NIC, vip, 33, "eth0:0").await.unwrap_err(),
            addrs
                .bind(NIC, ip("224.0.0.1"), 24, "eth0:0")
                .await
                .unwrap_err(),
            // The loopback device has no Ethernet address to announce.
            announce(&Announcement {
                nic: "lo".into(),
                addr: vip,
                count: 1,
                interval: Duration::ZERO,
            })
            .await
            .unwrap_err(),
        ];
        let text =
            |errs: &[anyhow::Error]| errs.iter().map(|e| format!("{e:#}")).collect::<Vec<_>>();
        let typed = missing
            .iter()
            .all(|e| e.downcast_ref::<NoSuchNic>().is_some());
        (text(&missing), typed, text(&others))
    });
    let (missing, typed, others) = errors;
    for e in &missing {
        assert!(e.contains("nosuch0"), "{e}");
    }
    for e in &missing[..2] {
        assert!(e.contains("198.51.100.50"), "{e}");
    }
    assert!(missing[4].contains("198.51.100.50"), "{}", missing[4]);
    assert!(typed, "{missing:?}");
    assert!(
        others[0].contains("eth1:0") && others[0].contains("198.51.100.50"),
        "{}",
        others[0]
    );
    assert!(others[1].contains("33"), "{}", others[1]);
    assert!(others[2].contains("224.0.0.1"), "{}", others[2]);
    assert!(
        others[3].contains("lo") && others[3].contains("Ethernet"),
        "{}",
        others[3]
    );
}
