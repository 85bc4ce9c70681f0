//! Building a lab: namespaces, the bridge, and one veth cable per host or client.
//!
//! Addressing (documentation prefixes only):
//!
//! | machine  | namespace     | MAC               | IPv4               | IPv6              |
//! |----------|---------------|-------------------|--------------------|-------------------|
//! | host N   | `vipl-P-L-hN` | 02:00:00:00:00:NN | 198.51.100.(10+N)  | 2001:db8::(10+N)  |
//! | client N | `vipl-P-L-cN` | 02:00:00:00:01:NN | 198.51.100.(100+N) | 2001:db8::(100+N) |
//!
//! (P: the pid, L: the lab's number in that process.) The IPv6 suffix is the IPv4 last
//! octet written the same way: `.11` → `::11`. The bridge namespace is `vipl-P-L-br`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};

use super::cmd::{ip, ip_in};
use super::host::{Host, NIC, Role};
use super::mac::Mac;
use super::proc::ProcTable;
use super::{Lab, MAIN_BRIDGE, sweep};
use crate::netns;

/// The most hosts (198.51.100.11–99) and clients (.101–.254) a lab can address.
const MAX_HOSTS: usize = 89;
const MAX_CLIENTS: usize = 154;

/// Configures a [`Lab`]: `Lab::builder().hosts(3).clients(1).build()?`.
#[derive(Clone, Debug)]
pub struct LabBuilder {
    hosts: usize,
    clients: usize,
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder {
            hosts: 3,
            clients: 1,
        }
    }
}

impl LabBuilder {
    /// How many hosts (`h1`, `h2`, …); 3 unless set.
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// How many clients (`c1`, `c2`, …); 1 unless set.
    pub fn clients(mut self, n: usize) -> Self {
        self.clients = n;
        self
    }

    /// Creates the lab. First removes namespaces left by dead processes' labs.
    ///
    /// On error, whatever was already created is removed again.
    pub fn build(self) -> Result<Lab> {
        ensure!(self.hosts <= MAX_HOSTS, "at most {MAX_HOSTS} hosts");
        ensure!(self.clients <= MAX_CLIENTS, "at most {MAX_CLIENTS} clients");
        sweep::prepare_once();
        sweep::sweep_stale();

        let id = sweep::new_lab_id();
        let mut lab = Lab {
            bridge_ns: format!("{id}-br"),
            id,
            hosts: Vec::new(),
            clients: Vec::new(),
            created: Vec::new(),
            procs: Arc::new(ProcTable::default()),
            group_bridges: Mutex::new(0),
        };
        // From here on, dropping `lab` (on `?` too) deletes what was created.
        lab.add_bridge_ns()?;
        for n in 1..=self.hosts {
            let host = lab.add_machine(Role::Host, n)?;
            lab.hosts.push(host);
        }
        for n in 1..=self.clients {
            let client = lab.add_machine(Role::Client, n)?;
            lab.clients.push(client);
        }
        log::debug!("lab {} is up", lab.id);
        Ok(lab)
    }
}

impl Lab {
    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_owned());
        ip_in(ns, &["link", "set", "lo", "up"]).map(drop)
    }

    /// The namespace holding the bridge. IPv6 is off there, so the bridge and its
    /// ports send nothing of their own (no router solicitations, no MLD, no DAD): every
    /// frame on the bridge comes from a host or client.
    fn add_bridge_ns(&mut self) -> Result<()> {
        let ns = self.bridge_ns.clone();
        self.add_namespace(&ns)?;
        netns::run_in(&ns, || -> std::io::Result<()> {
            // Interfaces created later take `default`; set before any exist.
            for conf in ["all", "default"] {
                let sysctl = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                std::fs::write(sysctl, "1")?;
            }
            Ok(())
        })
        .and_then(|r| r)
        .with_context(|| format!("disabling IPv6 in {ns}"))?;
        add_bridge(&ns, MAIN_BRIDGE)
    }

    /// A host or client: its namespace, and a veth whose `eth0` end is in that
    /// namespace and whose other end (named like the machine) is a port of the bridge.
    fn add_machine(&mut self, role: Role, n: usize) -> Result<Host> {
        let (letter, mac_group, first_octet) = match role {
            Role::Host => ("h", 0, 10),
            Role::Client => ("c", 1, 100),
        };
        let name = format!("{letter}{n}");
        let ns = format!("{}-{name}", self.id);
        let octet = first_octet + n;
        let mac = Mac([2, 0, 0, 0, mac_group, u8::try_from(n)?]);
        let ipv4 = Ipv4Addr::new(198, 51, 100, u8::try_from(octet)?);
        let ipv6: Ipv6Addr = format!("2001:db8::{octet}").parse()?;

        self.add_namespace(&ns)?;
        let br = self.bridge_ns.as_str();
        let mac_text = mac.to_string();
        #[rustfmt::skip]
        ip_in(br, &["link", "add", &name, "type", "veth",
                    "peer", "name", NIC, "address", &mac_text, "netns", &ns])?;
        let (v4, v6) = (format!("{ipv4}/24"), format!("{ipv6}/64"));
        ip_in(&ns, &["addr", "add", &v4, "dev", NIC])?;
        ip_in(&ns, &["addr", "add", &v6, "dev", NIC, "nodad"])?;
        ip_in(&ns, &["link", "set", NIC, "up"])?;
        ip_in(br, &["link", "set", &name, "master", MAIN_BRIDGE, "up"])?;
        Ok(Host {
            name,
            role,
            ns,
            bridge_ns: self.bridge_ns.clone(),
            mac,
            ipv4,
            ipv6,
            procs: Arc::clone(&self.procs),
        })
    }
}

/// Adds an up bridge to `ns`. Multicast snooping is off so that neighbour
/// advertisements to all-nodes (ff02::1) always reach every port.
pub(crate) fn add_bridge(ns: &str, bridge: &str) -> Result<()> {
    #[rustfmt::skip]
    ip_in(ns, &["link", "add", bridge, "type", "bridge", "mcast_snooping", "0"])?;
    ip_in(ns, &["link", "set", bridge, "up"]).map(drop)
}
