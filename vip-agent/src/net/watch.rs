//! Address changes on one interface, as the kernel reports them: RTM_NEWADDR and
//! RTM_DELADDR on the rtnetlink groups RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR.
//!
//! The agent reconciles when one arrives, so a VIP deleted by hand is re-added within
//! milliseconds rather than at the next poll. The events are hints, not a ledger: the
//! kernel drops notifications when the socket's buffer is full ([`AddrEvent::Lost`]),
//! so the agent still reads the addresses back with [`super::Addrs::list`].

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::channel::mpsc::UnboundedReceiver;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::SocketAddr;

use super::addr::{BoundAddr, Connection};

/// One change to the addresses of the watched interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrEvent {
    /// RTM_NEWADDR: added, or changed in place (flags, lifetimes). A re-bind that found
    /// the address already there sends nothing.
    Added(BoundAddr),
    /// RTM_DELADDR.
    Removed(BoundAddr),
    /// The kernel dropped notifications (the socket's buffer overran): read the
    /// addresses again.
    Lost,
}

/// The address changes on one interface, from [`super::Addrs::watch`]. The interface is
/// the one that had its name when the watch began (by index), so a deleted and recreated
/// NIC needs a new watch. The stream ends if the netlink socket fails; dropping it
/// closes the socket.
pub struct AddrEvents {
    index: u32,
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    _connection: Connection,
}

impl AddrEvents {
    pub(crate) fn new(
        index: u32,
        messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
        connection: Connection,
    ) -> AddrEvents {
        AddrEvents {
            index,
            messages,
            _connection: connection,
        }
    }

    /// The next event, or None once the watch has ended. Cancel-safe, so it can be a
    /// `tokio::select!` branch; the same as `StreamExt::next`.
    pub async fn recv(&mut self) -> Option<AddrEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn event(&self, msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<AddrEvent> {
        let (msg, added) = match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => (m, true),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => (m, false),
            NetlinkPayload::Overrun(_) => return Some(AddrEvent::Lost),
            _ => return None,
        };
        if msg.header.index != self.index {
            return None;
        }
        let addr = BoundAddr::from_message(&msg)?;
        Some(if added {
            AddrEvent::Added(addr)
        } else {
            AddrEvent::Removed(addr)
        })
    }
}

impl Stream for AddrEvents {
    type Item = AddrEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AddrEvent>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.messages).poll_next(cx) {
                Poll::Ready(Some((msg, _))) => {
                    if let Some(event) = this.event(msg) {
                        return Poll::Ready(Some(event));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
