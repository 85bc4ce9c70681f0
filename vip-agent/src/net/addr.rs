//! Adding, removing and listing a VIP with rtnetlink, in the network namespace of the
//! thread that calls [`Addrs::new`].
//!
//! Both directions are idempotent, so the agent can apply its view again at any time:
//! binding an address that is already there succeeds without touching it (an agent that
//! restarts adopts its VIP; it never deletes and re-adds it, which would break clients'
//! connections), and unbinding an absent one succeeds too.
//!
//! IPv4 VIPs carry the caller's label (`eth0:0`), which is how `ip addr`, `ifconfig` and
//! the agent itself tell an instance's VIPs apart, with the subnet's broadcast address.
//! IPv6 VIPs carry IFA_F_NODAD: usable at once, never "tentative", with no need to set
//! `accept_dad=0` for the whole host as the plugin did. The prefix route is kept (no
//! IFA_F_NOPREFIXROUTE): when the VIP's subnet is not already on the link through
//! another address, it is that route that lets the host answer its on-link clients
//! directly rather than through a gateway; when the subnet is already there, the kernel
//! adds nothing.

use std::io;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::{Handle, MulticastGroup};
use tokio::task::JoinHandle;

use super::nic::{self, NoSuchNic};
use super::watch::AddrEvents;

/// One address on an interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BoundAddr {
    pub addr: IpAddr,
    pub prefix: u8,
    /// The IPv4 label (`eth0` for the interface's own addresses, `eth0:0` for an alias);
    /// None for IPv6, which has no labels.
    pub label: Option<String>,
}

impl BoundAddr {
    pub(crate) fn from_message(msg: &AddressMessage) -> Option<BoundAddr> {
        let (mut local, mut address, mut label) = (None, None, None);
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Label(l) => label = Some(l.clone()),
                _ => {}
            }
        }
        // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on point-to-point
        // links, and the only one IPv6 sends for an ordinary address.
        Some(BoundAddr {
            addr: local.or(address)?,
            prefix: msg.header.prefix_len,
            label,
        })
    }
}

/// An rtnetlink connection, bound to the network namespace it was opened in. Clones
/// share it (binds and unbinds run as tasks of their own).
#[derive(Clone)]
pub struct Addrs {
    handle: Handle,
    _connection: std::sync::Arc<Connection>,
}

impl Addrs {
    /// Opens the netlink socket and spawns its connection task on the current tokio
    /// runtime; the task stops when this is dropped.
    pub async fn new() -> Result<Addrs> {
        let (conn, handle, _) =
            rtnetlink::new_connection().context("opening an rtnetlink socket")?;
        Ok(Addrs {
            handle,
            _connection: std::sync::Arc::new(Connection(tokio::spawn(conn))),
        })
    }

    /// The index of `nic`; [`NoSuchNic`] when there is no such interface.
    pub async fn ifindex(&self, nic: &str) -> Result<u32> {
        nic::check_name(nic)?;
        let mut links = self.handle.link().get().match_name(nic).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(NoSuchNic(nic.to_owned()).into()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(NoSuchNic(nic.to_owned()).into()),
            Err(e) => Err(netlink(e)).with_context(|| format!("looking up {nic}")),
        }
    }

    /// Every address on `nic`, IPv4 and IPv6, with its prefix and (IPv4) label.
    pub async fn list(&self, nic: &str) -> Result<Vec<BoundAddr>> {
        let index = self.ifindex(nic).await?;
        self.list_index(index)
            .await
            .with_context(|| format!("listing the addresses of {nic}"))
    }

    async fn list_index(&self, index: u32) -> Result<Vec<BoundAddr>> {
        let dump = self.handle.address().get().set_link_index_filter(index);
        let msgs: Vec<AddressMessage> = dump.execute().try_collect().await.map_err(netlink)?;
        Ok(msgs.iter().filter_map(BoundAddr::from_message).collect())
    }

    /// Adds `addr/prefix` to `nic`: IPv4 under `label` with the broadcast address, IPv6
    /// with IFA_F_NODAD (`label` is not used). Already bound: Ok, left untouched, unless
    /// an IPv4 address is held under another label (another instance's VIP), which is an
    /// error.
    pub async fn bind(&self, nic: &str, addr: IpAddr, prefix: u8, label: &str) -> Result<()> {
        let what = || match addr {
            IpAddr::V4(_) => format!("binding {addr}/{prefix} on {nic} (label {label})"),
            IpAddr::V6(_) => format!("binding {addr}/{prefix} on {nic}"),
        };
        check(addr, prefix).with_context(what)?;
        if addr.is_ipv4() {
            nic::check_label(nic, label).with_context(what)?;
        }
        let index = self.ifindex(nic).await.with_context(what)?;

        let mut req = self.handle.address().add(index, addr, prefix);
        let msg = req.message_mut();
        match addr {
            IpAddr::V4(_) => msg
                .attributes
                .push(AddressAttribute::Label(label.to_owned())),
            IpAddr::V6(_) => {
                // The header's flags byte for old kernels, IFA_FLAGS for new ones
                // (which read only the attribute when it is present), as iproute2 does.
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => self
                .check_existing(index, addr, prefix, label)
                .await
                .with_context(what),
            Err(e) => Err(netlink(e)).with_context(what),
        }
    }

    /// The kernel said EEXIST: accept the address that is there if it is ours.
    async fn check_existing(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
        label: &str,
    ) -> Result<()> {
        let bound = self.list_index(index).await?;
        let Some(there) = bound.iter().find(|b| b.addr == addr) else {
            // Deleted again since the kernel answered; nothing to adopt.
            bail!("the kernel reported {addr} as present, but it is gone");
        };
        if addr.is_ipv4() && there.label.as_deref() != Some(label) {
            bail!(
                "{addr}/{} is already bound under label {}, not ours",
                there.prefix,
                there.label.as_deref().unwrap_or("(none)")
            );
        }
        if there.prefix != prefix {
            tracing::warn!(
                vip = %addr,
                bound_prefix = there.prefix,
                prefix,
                "the VIP is already bound with another prefix length; leaving it as it is"
            );
        }
        Ok(())
    }

    /// Removes `addr/prefix` from `nic`, whatever its label; Ok when it is not there. An
    /// error when `addr` is there with another prefix length (it stays).
    pub async fn unbind(&self, nic: &str, addr: IpAddr, prefix: u8) -> Result<()> {
        let what = || format!("unbinding {addr}/{prefix} from {nic}");
        check(addr, prefix).with_context(what)?;
        let index = self.ifindex(nic).await.with_context(what)?;
        // Matched by address and prefix, whatever its label.
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = prefix;
        msg.header.family = match addr {
            IpAddr::V4(_) => rtnetlink::packet_route::AddressFamily::Inet,
            IpAddr::V6(_) => rtnetlink::packet_route::AddressFamily::Inet6,
        };
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => {
                // Absent is fine; present with another prefix would be left behind.
                let bound = self.list_index(index).await.with_context(what)?;
                match bound.iter().find(|b| b.addr == addr) {
                    Some(other) => bail!(
                        "{}: it is bound as {addr}/{}, not /{prefix}; left in place",
                        what(),
                        other.prefix
                    ),
                    None => Ok(()),
                }
            }
            Err(e) => Err(netlink(e)).with_context(what),
        }
    }

    /// Address changes on `nic` from now on; see [`AddrEvents`].
    pub async fn watch(&self, nic: &str) -> Result<AddrEvents> {
        let index = self.ifindex(nic).await?;
        let groups = [MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr];
        let (conn, _handle, messages) = rtnetlink::new_multicast_connection(&groups)
            .with_context(|| format!("subscribing to address changes on {nic}"))?;
        Ok(AddrEvents::new(
            index,
            messages,
            Connection(tokio::spawn(conn)),
        ))
    }
}

/// A netlink connection's task; aborted when dropped, since the task itself only ends
/// once it notices its last handle or receiver is gone, which may be never.
#[derive(Debug)]
pub(crate) struct Connection(JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn check(addr: IpAddr, prefix: u8) -> Result<()> {
    super::check_unicast(addr)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        bail!("prefix length {prefix} is longer than {max}");
    }
    Ok(())
}

/// The errno of a netlink error reply.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// Netlink's error replies as the OS error they are ("File exists (os error 17)").
fn netlink(e: rtnetlink::Error) -> anyhow::Error {
    match errno(&e) {
        Some(code) => anyhow::Error::new(io::Error::from_raw_os_error(code)).context("netlink"),
        None => anyhow::Error::new(e).context("netlink"),
    }
}
