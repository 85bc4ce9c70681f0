//! Binding VIPs to a network interface and announcing them to the link.
//!
//! - [`addr`]: adds, removes and lists addresses with rtnetlink, in the caller's network
//!   namespace. IPv4 VIPs carry the instance's label (`eth0:0`); IPv6 VIPs are added with
//!   IFA_F_NODAD, so they are usable at once without switching DAD off host-wide.
//! - [`watch`]: a stream of address changes on one interface (RTM_NEWADDR / RTM_DELADDR),
//!   so a VIP deleted by hand is noticed within milliseconds rather than at the next poll.
//! - [`announce`]: sends gratuitous ARPs or unsolicited neighbour advertisements on the
//!   configured interface (looked up by name each time), paced by tokio timers.
//! - [`frame`]: builds those frames; pure and tested byte by byte.
//! - [`nic`]: interface-name rules and the [`NoSuchNic`] error.

pub mod addr;
pub mod announce;
pub mod frame;
pub mod nic;
pub mod watch;

use std::net::IpAddr;

use anyhow::{Result, bail};

pub use addr::{Addrs, BoundAddr};
pub use announce::{Announcement, announce};
pub use nic::NoSuchNic;
pub use watch::{AddrEvent, AddrEvents};

/// A VIP must be a unicast address: the kernel would take a multicast one as a group to
/// join, and announcing the unspecified or broadcast address would poison caches.
pub(crate) fn check_unicast(addr: IpAddr) -> Result<()> {
    let ok = match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    };
    if !ok {
        bail!("{addr} is not a unicast address");
    }
    Ok(())
}
