//! The network-namespace lab: hosts and clients on one Ethernet segment.
//!
//! Every host and client is a network namespace with one interface, `eth0`, cabled by a
//! veth pair to a Linux bridge. The bridge lives in a namespace of its own, so a lab
//! adds nothing to the root namespace and labs run side by side, in one test process or
//! many. Namespaces are named `vipl-<pid>-<n>-<machine>`, so that a lab can remove
//! those of earlier runs that were killed before cleaning up.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use vip_tests::lab::Lab;
//! let lab = Lab::builder().hosts(3).clients(1).build()?;
//! let capture = lab.capture()?;
//! lab.partition(&[&[lab.host(0), lab.host(1)], &[lab.host(2)]])?;
//! lab.heal()?;
//! # Ok(()) }
//! ```
//!
//! Dropping the lab (also while a failed test unwinds) kills the processes started in
//! it and deletes its namespaces, which deletes their interfaces.

mod addr;
mod builder;
mod capture;
mod cmd;
mod frame;
mod host;
mod mac;
mod proc;
mod sweep;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

pub use addr::{Addr, Neighbour};
pub use builder::LabBuilder;
pub use capture::{Announcement, Capture};
pub use frame::Kind;
pub use host::{Host, NIC, Role};
pub use mac::Mac;
pub use proc::Proc;
pub use watch::{AddrChange, AddrWatch};

use cmd::ip;
use proc::ProcTable;

/// The bridge every port starts on and returns to when a partition heals.
const MAIN_BRIDGE: &str = "br0";

/// A running lab. See the [module docs](self).
#[derive(Debug)]
pub struct Lab {
    id: String,
    bridge_ns: String,
    hosts: Vec<Host>,
    clients: Vec<Host>,
    /// Namespaces created so far, deleted on drop.
    created: Vec<String>,
    procs: Arc<ProcTable>,
    /// How many partition bridges (`br1`, `br2`, …) exist besides the main one.
    group_bridges: Mutex<usize>,
}

impl Lab {
    /// A lab with the defaults: 3 hosts and 1 client; set other sizes on the builder.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// A lab with `hosts` hosts and `clients` clients.
    pub fn new(hosts: usize, clients: usize) -> Result<Lab> {
        Lab::builder().hosts(hosts).clients(clients).build()
    }

    /// This lab's name, `vipl-<pid>-<n>`, which starts each of its namespaces' names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace that holds the bridge.
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    /// Every namespace of the lab: hosts, clients, then the bridge's.
    pub fn namespaces(&self) -> Vec<String> {
        let machines = self.hosts.iter().chain(&self.clients);
        let mut names: Vec<String> = machines.map(|m| m.ns.clone()).collect();
        names.push(self.bridge_ns.clone());
        names
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn clients(&self) -> &[Host] {
        &self.clients
    }

    /// `hosts()[i]`: `host(0)` is `h1`. Panics when out of range, like indexing.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// `clients()[i]`: `client(0)` is `c1`. Panics when out of range, like indexing.
    pub fn client(&self, i: usize) -> &Host {
        &self.clients[i]
    }

    /// Starts capturing ARP and neighbour advertisements on the bridge.
    pub fn capture(&self) -> Result<Capture> {
        let ports: Vec<String> = self
            .hosts
            .iter()
            .chain(&self.clients)
            .map(|m| m.name.clone())
            .collect();
        Capture::start(&self.bridge_ns, &ports)
    }

    /// Starts recording every address added to or removed from the hosts (from the
    /// kernel's notifications), to time who held a VIP when.
    pub fn watch_addrs(&self) -> Result<AddrWatch> {
        AddrWatch::start(&self.hosts)
    }

    /// Splits the segment: machines in different groups cannot reach each other, while
    /// those in one group still can. Each group gets a bridge of its own; machines named
    /// in no group stay on the main bridge, so together they act as one more group.
    /// Replaces any earlier partition.
    pub fn partition(&self, groups: &[&[&Host]]) -> Result<()> {
        let mut named: Vec<&str> = Vec::new();
        for member in groups.iter().flat_map(|g| g.iter()) {
            ensure!(
                member.bridge_ns == self.bridge_ns,
                "{} ({}) is not in lab {}",
                member.name,
                member.ns,
                self.id
            );
            if named.contains(&member.name.as_str()) {
                bail!("{} is in more than one group", member.name);
            }
            named.push(&member.name);
        }
        self.heal()?;
        let mut group_bridges = self.group_bridges.lock().unwrap_or_else(|e| e.into_inner());
        for (i, group) in groups.iter().enumerate() {
            let bridge = format!("br{}", i + 1);
            builder::add_bridge(&self.bridge_ns, &bridge)?;
            *group_bridges = i + 1;
            for member in *group {
                cmd::ip_in(
                    &self.bridge_ns,
                    &["link", "set", &member.name, "master", &bridge],
                )?;
            }
        }
        Ok(())
    }

    /// Ends a partition: every port goes back on the main bridge.
    pub fn heal(&self) -> Result<()> {
        let mut group_bridges = self.group_bridges.lock().unwrap_or_else(|e| e.into_inner());
        for member in self.hosts.iter().chain(&self.clients) {
            // A port already on the main bridge stays; the kernel treats it as a no-op.
            cmd::ip_in(
                &self.bridge_ns,
                &["link", "set", &member.name, "master", MAIN_BRIDGE],
            )?;
        }
        while *group_bridges > 0 {
            let bridge = format!("br{}", *group_bridges);
            cmd::ip_in(
                &self.bridge_ns,
                &["link", "delete", &bridge, "type", "bridge"],
            )?;
            *group_bridges -= 1;
        }
        Ok(())
    }
}

impl Drop for Lab {
    /// Best-effort and panic-free: it also runs while a failed test unwinds.
    fn drop(&mut self) {
        self.procs.kill_all();
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "delete", ns]) {
                log::warn!("lab cleanup: {e:#}");
            }
        }
        // The agents' eBPF pins (maps, and the links that keep their programs attached).
        sweep::remove_pins(|instance| instance.starts_with(&format!("{}-", self.id)));
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; whether it held.
/// Tests wait with this instead of sleeping a fixed time.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
