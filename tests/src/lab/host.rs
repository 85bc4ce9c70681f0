//! One machine of the lab: a network namespace with a single interface, `eth0`,
//! plugged into the lab bridge.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::addr::{self, Addr, Neighbour};
use super::cmd::ip_in;
use super::mac::Mac;
use super::proc::{Proc, ProcTable};
use crate::netns;

/// The one interface of every host and client.
pub const NIC: &str = "eth0";

/// Whether a namespace plays a server host (runs the agent) or a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Host,
    Client,
}

/// A host or client of the lab. Both are the same kind of machine; only their names
/// (`h1`, `c1`), MACs and addresses differ.
#[derive(Debug)]
pub struct Host {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) ns: String,
    pub(crate) bridge_ns: String,
    pub(crate) mac: Mac,
    pub(crate) ipv4: Ipv4Addr,
    pub(crate) ipv6: Ipv6Addr,
    pub(crate) procs: Arc<ProcTable>,
}

impl Host {
    /// The short name, `h1` or `c1`; also the name of its port on the bridge.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The network namespace, for `ip -n`, [`netns::run_in`] or [`netns::command_in`].
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The MAC of its `eth0`.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Its own IPv4 address (prefix /24).
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// Its own IPv6 address (prefix /64).
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// Runs `ip -n NS ARGS…` for this host and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        ip_in(&self.ns, args)
    }

    /// Adds an address to `eth0`, e.g. `198.51.100.50/24` or `2001:db8::50/64`
    /// (IPv6 without duplicate address detection, so it is usable at once).
    pub fn add_addr(&self, cidr: &str) -> Result<()> {
        self.add_addr_with(cidr, &[])
    }

    /// Adds an IPv4 address with a label, e.g. (`198.51.100.50/24`, `eth0:1`).
    pub fn add_addr_labelled(&self, cidr: &str, label: &str) -> Result<()> {
        self.add_addr_with(cidr, &["label", label])
    }

    fn add_addr_with(&self, cidr: &str, extra: &[&str]) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", NIC];
        args.extend_from_slice(extra);
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    /// Removes an address from `eth0`.
    pub fn del_addr(&self, cidr: &str) -> Result<()> {
        self.ip(&["addr", "del", cidr, "dev", NIC]).map(drop)
    }

    /// The addresses on `eth0`, with labels and flags.
    pub fn addrs(&self) -> Result<Vec<Addr>> {
        addr::addrs(&self.ns, NIC)
    }

    /// The neighbour cache of `eth0` (ARP and NDP entries).
    pub fn neighbours(&self) -> Result<Vec<Neighbour>> {
        addr::neighbours(&self.ns, NIC)
    }

    /// Pulls the cable: sets its bridge-side port down. The host still sees its own
    /// `eth0` as up, but nothing gets through (carrier is lost on both ends).
    pub fn cut(&self) -> Result<()> {
        ip_in(&self.bridge_ns, &["link", "set", &self.name, "down"]).map(drop)
    }

    /// Plugs the cable back in after [`Host::cut`].
    pub fn restore(&self) -> Result<()> {
        ip_in(&self.bridge_ns, &["link", "set", &self.name, "up"]).map(drop)
    }

    /// Sets its own `eth0` down, as an administrator would.
    pub fn nic_down(&self) -> Result<()> {
        self.ip(&["link", "set", NIC, "down"]).map(drop)
    }

    /// Sets its own `eth0` up again.
    ///
    /// IPv6 drops the addresses of an interface that goes down, so this adds the
    /// host's own IPv6 address back (addresses added by a test are not restored).
    pub fn nic_up(&self) -> Result<()> {
        self.ip(&["link", "set", NIC, "up"])?;
        let own = format!("{}/64", self.ipv6);
        if !self.addrs()?.iter().any(|a| a.addr == self.ipv6) {
            self.add_addr(&own)?;
        }
        Ok(())
    }

    /// Runs `f` on a thread inside this host's network namespace (only), e.g. to bind
    /// a listener or connect a socket; sockets keep the namespace they were made in.
    pub fn run_in<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        Ok(netns::run_in(&self.ns, f)?)
    }

    /// Starts `cmd` inside this host's network namespace only (mounts, /sys/fs/bpf and
    /// cgroups stay the caller's). The lab kills it when dropped if it still runs.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Proc> {
        let what = format!("{:?} in {}", cmd.get_program(), self.name);
        netns::command_in(&self.ns, cmd)?;
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(self.procs.add(child, what))
    }

    /// Runs `cmd` inside this host's network namespace to completion and returns its
    /// output; fails unless it exits with status 0.
    pub fn output(&self, cmd: &mut Command) -> Result<Output> {
        netns::command_in(&self.ns, cmd)?;
        let out = cmd
            .output()
            .with_context(|| format!("running {cmd:?} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{cmd:?} in {} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }
}
