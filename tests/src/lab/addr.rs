//! A namespace's addresses and neighbour cache, read back from `ip -j`.

use std::net::IpAddr;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::cmd::ip_json;
use super::mac::Mac;

/// One address on an interface, as `ip addr show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub addr: IpAddr,
    pub prefix: u8,
    /// The IPv4 label (`eth0`, `eth0:1`, …); IPv6 addresses have none.
    pub label: Option<String>,
    /// `global`, `link`, `host`, …
    pub scope: String,
    /// The boolean flags ip prints as `true`: `secondary`, `nodad`, `tentative`,
    /// `dadfailed`, `deprecated`, `noprefixroute`, …
    pub flags: Vec<String>,
}

impl Addr {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// One entry of a neighbour cache (ARP for IPv4, NDP for IPv6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    /// None while unresolved (INCOMPLETE, FAILED).
    pub lladdr: Option<Mac>,
    /// REACHABLE, STALE, DELAY, PROBE, FAILED, PERMANENT, … (ip prints a list).
    pub state: Vec<String>,
}

#[derive(Deserialize)]
struct Link {
    #[serde(default)]
    addr_info: Vec<Map<String, Value>>,
}

#[derive(Deserialize)]
struct RawNeighbour {
    dst: IpAddr,
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

/// The addresses on `dev` in namespace `ns`.
pub(crate) fn addrs(ns: &str, dev: &str) -> Result<Vec<Addr>> {
    let links: Vec<Link> = ip_json(ns, &["addr", "show", "dev", dev])?;
    links
        .into_iter()
        .flat_map(|link| link.addr_info)
        .map(|info| parse_addr(&info).with_context(|| format!("address {info:?} in {ns}")))
        .collect()
}

fn parse_addr(info: &Map<String, Value>) -> Result<Addr> {
    let text = |key: &str| info.get(key).and_then(Value::as_str);
    let addr = text("local").context("no `local`")?.parse()?;
    let prefix = info
        .get("prefixlen")
        .and_then(Value::as_u64)
        .context("no `prefixlen`")?;
    Ok(Addr {
        addr,
        prefix: u8::try_from(prefix)?,
        label: text("label").map(str::to_owned),
        scope: text("scope").unwrap_or_default().to_owned(),
        flags: info
            .iter()
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect(),
    })
}

/// The neighbour cache of `dev` in namespace `ns`.
pub(crate) fn neighbours(ns: &str, dev: &str) -> Result<Vec<Neighbour>> {
    let raw: Vec<RawNeighbour> = ip_json(ns, &["neigh", "show", "dev", dev])?;
    raw.into_iter()
        .map(|n| {
            Ok(Neighbour {
                ip: n.dst,
                lladdr: n.lladdr.as_deref().map(str::parse).transpose()?,
                state: n.state,
            })
        })
        .collect()
}
