//! The members' hosts (MEMBER_HOST) and their addresses, resolved off the agent's loop,
//! and who may connect to the peer port.
//!
//! MEMBER_HOST may be a name. Resolving it calls getaddrinfo, which can take as long as
//! the resolver does: inline in the loop, a slow DNS server would stop a primary that
//! lost its quorum from polling and releasing. Here every lookup runs in a task of its
//! own; a call waits for it at most its own time limit, answers are kept (an expired
//! one is still used while it is refreshed), and the hosts that do not resolve are
//! listed for `vip-agent status`.
//!
//! The same table is the peer port's default allow rule: an address may connect when it
//! is what a host of this node's views resolves to, and it stays allowed for
//! [`GRACE`] after that host was last in a view, so a new primary can still ask an old
//! primary that is stale, refusing the agent or gone from the view to let go. The grace
//! only runs while views are read: an agent whose mysqld is down forgets nobody. Until
//! this agent has read its first view it knows no member, so it allows every address
//! (the key is still needed for anything to happen).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a member's addresses stay allowed after its host was last in a view.
pub const GRACE: Duration = Duration::from_secs(3600);
/// How long an answer is used before it is looked up again (it is used meanwhile).
const FRESH: Duration = Duration::from_secs(60);
/// How soon a failed lookup is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Who may open a connection to the peer port.
#[derive(Clone, Debug)]
pub enum Allow {
    /// The members of this node's views (and, before the first view, everyone).
    Members(Hosts),
    /// `peer.allow`: exactly these networks.
    List(Vec<IpNet>),
}

impl Allow {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self {
            Allow::Members(hosts) => hosts.allows(ip),
            Allow::List(nets) => nets.iter().any(|n| n.contains(&ip)),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// The last answer that gave addresses.
    addrs: Vec<IpAddr>,
    /// The last failure, while the host does not resolve.
    error: Option<String>,
    /// When the last lookup ended.
    looked_up: Option<Instant>,
    in_flight: bool,
    /// When a view last listed this host.
    in_view: Option<Instant>,
    /// Counts finished lookups; a waiter subscribed before one ends sees it end.
    done: watch::Sender<u64>,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            addrs: Vec::new(),
            error: None,
            looked_up: None,
            in_flight: false,
            in_view: None,
            done: watch::Sender::new(0),
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    hosts: BTreeMap<String, Entry>,
    /// A view has been read since start: the member list means something.
    known: bool,
}

/// The shared table: the loop feeds it, calls and the peer server read it.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    table: Arc<Mutex<Table>>,
}

impl Hosts {
    pub fn new() -> Hosts {
        Hosts::default()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding it cannot leave the table half-written: every update is
        // a plain field store. Keep serving rather than poison every later call.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hosts of a view just read: they are members (allowed) from now, and each is
    /// looked up in the background when its answer is missing or old. Hosts out of the
    /// views for longer than [`GRACE`] are forgotten. Never waits.
    pub fn seen<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let mut table = self.lock();
        table.known = true;
        for host in hosts {
            if host.is_empty() {
                continue;
            }
            let entry = table.hosts.entry(host.to_string()).or_default();
            entry.in_view = Some(now);
            if host.parse::<IpAddr>().is_err() && due(entry, now) {
                self.start_lookup(host.to_string(), entry);
            }
        }
        // A lookup under way keeps its entry: its waiters would only start it again.
        table
            .hosts
            .retain(|_, e| e.in_flight || e.in_view.is_some_and(|t| now.duration_since(t) < GRACE));
    }

    /// `host` (MEMBER_HOST) and `port` as an address, waiting at most `limit` for a
    /// lookup. An old answer is returned at once (and refreshed in the background).
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        limit: Duration,
    ) -> Result<SocketAddr, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let deadline = Instant::now() + limit;
        loop {
            let mut done = {
                let mut table = self.lock();
                let entry = table.hosts.entry(host.to_string()).or_default();
                let now = Instant::now();
                if due(entry, now) {
                    self.start_lookup(host.to_string(), entry);
                }
                if let Some(ip) = entry.addrs.first() {
                    return Ok(SocketAddr::new(*ip, port));
                }
                if !entry.in_flight
                    && let Some(e) = &entry.error
                {
                    return Err(e.clone());
                }
                // Subscribed under the lock: a lookup that ends after this is seen.
                entry.done.subscribe()
            };
            if tokio::time::timeout_at(deadline, done.changed())
                .await
                .is_err()
            {
                return Err(format!(
                    "MEMBER_HOST {host} did not resolve within {limit:?} (the lookup goes on \
                     in the background; check the resolver, or report the member by address)"
                ));
            }
        }
    }

    /// Whether `ip` is an address of a member host (see the module docs).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let table = self.lock();
        if !table.known {
            return true;
        }
        // Only hosts that were in a view: a name merely looked up is not a member.
        table
            .hosts
            .iter()
            .filter(|(_, e)| e.in_view.is_some())
            .any(|(host, e)| {
                host.parse::<IpAddr>().is_ok_and(|h| h.to_canonical() == ip)
                    || e.addrs.iter().any(|a| a.to_canonical() == ip)
            })
    }

    /// The hosts of the views that do not resolve, and why.
    pub fn unresolved(&self) -> BTreeMap<String, String> {
        self.lock()
            .hosts
            .iter()
            .filter(|(_, e)| e.addrs.is_empty())
            .filter_map(|(h, e)| Some((h.clone(), e.error.clone()?)))
            .collect()
    }

    /// Starts a lookup of `host` in its own task; its answer lands in the table.
    fn start_lookup(&self, host: String, entry: &mut Entry) {
        entry.in_flight = true;
        let table = self.table.clone();
        tokio::spawn(async move {
            let answer = tokio::net::lookup_host((host.as_str(), 0)).await;
            let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
            let Some(entry) = table.hosts.get_mut(&host) else {
                return;
            };
            entry.in_flight = false;
            entry.looked_up = Some(Instant::now());
            match answer.map(|a| a.map(|s| s.ip()).collect::<Vec<_>>()) {
                Ok(addrs) if !addrs.is_empty() => {
                    entry.addrs = addrs;
                    entry.error = None;
                }
                Ok(_) => entry.error = Some(format!("MEMBER_HOST {host} resolves to no address")),
                Err(e) => entry.error = Some(format!("cannot resolve MEMBER_HOST {host}: {e}")),
            }
            entry.done.send_modify(|n| *n += 1);
        });
    }
}

/// Whether `entry` needs a (new) lookup now.
fn due(entry: &Entry, now: Instant) -> bool {
    if entry.in_flight {
        return false;
    }
    let wait = if entry.addrs.is_empty() { RETRY } else { FRESH };
    entry
        .looked_up
        .is_none_or(|t| now.duration_since(t) >= wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn before_any_view_everyone_is_allowed_then_only_members() {
        let hosts = Hosts::new();
        assert!(hosts.allows(ip("203.0.113.9")));
        hosts.seen(["198.51.100.11", "198.51.100.12", ""]);
        assert!(hosts.allows(ip("198.51.100.11")));
        // As the server sees an IPv4 peer on a dual-stack socket.
        assert!(hosts.allows(ip("::ffff:198.51.100.12")));
        assert!(!hosts.allows(ip("203.0.113.9")));
        // A member that left the view stays allowed (within the grace).
        hosts.seen(["198.51.100.11"]);
        assert!(hosts.allows(ip("198.51.100.12")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_is_forgotten_a_grace_after_its_last_view() {
        let hosts = Hosts::new();
        hosts.seen(["198.51.100.11", "198.51.100.12"]);
        tokio::time::advance(GRACE - Duration::from_secs(1)).await;
        hosts.seen(["198.51.100.11"]);
        assert!(hosts.allows(ip("198.51.100.12")));
        tokio::time::advance(Duration::from_secs(2)).await;
        // Without a new view nothing is forgotten (mysqld down: keep who we knew).
        assert!(hosts.allows(ip("198.51.100.12")));
        hosts.seen(["198.51.100.11"]);
        assert!(!hosts.allows(ip("198.51.100.12")));
        assert!(hosts.allows(ip("198.51.100.11")));
    }

    #[tokio::test]
    async fn names_resolve_in_the_background_and_failures_are_listed() {
        let hosts = Hosts::new();
        hosts.seen(["localhost", "no-such-host.invalid"]);
        let addr = hosts
            .resolve("localhost", 33062, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 33062);
        assert!(hosts.allows(addr.ip()));
        let e = hosts
            .resolve("no-such-host.invalid", 33062, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(e.contains("no-such-host.invalid"), "{e}");
        let unresolved = hosts.unresolved();
        assert_eq!(
            unresolved.keys().collect::<Vec<_>>(),
            ["no-such-host.invalid"]
        );
        // An address is never looked up.
        let addr = hosts
            .resolve("2001:db8::11", 1, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(addr, "[2001:db8::11]:1".parse().unwrap());
    }

    #[test]
    fn an_explicit_list_replaces_the_members() {
        let allow = Allow::List(vec![
            "198.51.100.0/28".parse().unwrap(),
            "2001:db8::11/128".parse().unwrap(),
        ]);
        assert!(allow.allows(ip("198.51.100.15")));
        assert!(allow.allows(ip("::ffff:198.51.100.1")));
        assert!(!allow.allows(ip("198.51.100.16")));
        assert!(allow.allows(ip("2001:db8::11")));
        assert!(!allow.allows(ip("2001:db8::12")));
    }
}
