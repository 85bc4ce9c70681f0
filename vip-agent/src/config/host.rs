//! This host's interfaces and addresses ([`HostFacts`], from `getifaddrs`), and the checks
//! of a config against them ([`check_host`], pure): the NIC exists, and no VIP is already
//! an address of the host, unless it is bound under this instance's own label (our VIP
//! surviving an agent restart, to be adopted).

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Config, ConfigError, quote};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub interfaces: Vec<HostInterface>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInterface {
    pub name: String,
    /// (address, prefix length, IPv4 label: the interface name itself or an alias label
    /// such as `eth0:0`; `None` for IPv6).
    pub addrs: Vec<(IpAddr, u8, Option<String>)>,
}

impl HostFacts {
    /// Every interface (with or without addresses) and its IPv4 / IPv6 addresses.
    pub fn gather() -> std::io::Result<HostFacts> {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut by_name: BTreeMap<String, Vec<(IpAddr, u8, Option<String>)>> = BTreeMap::new();
        let mut cursor = head;
        while !cursor.is_null() {
            // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
            let ifa = unsafe { &*cursor };
            cursor = ifa.ifa_next;
            if ifa.ifa_name.is_null() {
                continue;
            }
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let full = unsafe { CStr::from_ptr(ifa.ifa_name) }
                .to_string_lossy()
                .into_owned();
            // Linux reports an IPv4 alias under its label ("eth0:0"); ':' is not allowed
            // in an interface name, so what precedes it is the interface.
            let name = full.split(':').next().unwrap_or(&full).to_string();
            let addrs = by_name.entry(name).or_default();
            // SAFETY: the sockaddrs are NULL or valid for their family's size.
            if let Some((addr, prefix)) = unsafe { address(ifa.ifa_addr, ifa.ifa_netmask) } {
                addrs.push((addr, prefix, addr.is_ipv4().then(|| full.clone())));
            }
        }
        // SAFETY: `head` came from getifaddrs and is freed once.
        unsafe { libc::freeifaddrs(head) };
        Ok(HostFacts {
            interfaces: by_name
                .into_iter()
                .map(|(name, addrs)| HostInterface { name, addrs })
                .collect(),
        })
    }

    pub fn interface(&self, name: &str) -> Option<&HostInterface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// The address and prefix length of an AF_INET / AF_INET6 entry.
///
/// # Safety
/// `addr` and `mask` must be NULL or point to sockaddrs valid for their family.
unsafe fn address(
    addr: *const libc::sockaddr,
    mask: *const libc::sockaddr,
) -> Option<(IpAddr, u8)> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: per the contract, a non-NULL sockaddr is valid for its family's struct.
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET => {
                let a = &*(addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                let prefix = if mask.is_null() {
                    32
                } else {
                    let m = &*(mask as *const libc::sockaddr_in);
                    u32::from_be(m.sin_addr.s_addr).count_ones() as u8
                };
                Some((IpAddr::V4(ip), prefix))
            }
            libc::AF_INET6 => {
                let a = &*(addr as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                let prefix = if mask.is_null() {
                    128
                } else {
                    let m = &*(mask as *const libc::sockaddr_in6);
                    u128::from_be_bytes(m.sin6_addr.s6_addr).count_ones() as u8
                };
                Some((IpAddr::V6(ip), prefix))
            }
            _ => None,
        }
    }
}

/// Host checks against facts gathered by the caller: pure.
pub fn check_host(cfg: &Config, host: &HostFacts) -> Vec<ConfigError> {
    let mut errors: Vec<ConfigError> = check_metrics(cfg, host).into_iter().collect();
    errors.extend(check_peer_listen(cfg, host));
    let vip = &cfg.vip;
    if vip.nic.is_empty() {
        return errors;
    }
    if host.interface(&vip.nic).is_none() {
        let names: Vec<&str> = host.interfaces.iter().map(|i| i.name.as_str()).collect();
        errors.push(ConfigError::value(
            "vip.nic",
            quote(&vip.nic),
            format!(
                "no such interface on this host (found: {})",
                names.join(", ")
            ),
        ));
    }
    let keyed = vip
        .write_vip
        .map(|a| ("vip.write_vip".to_string(), a))
        .into_iter()
        .chain(
            vip.read_vips
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("vip.read_vips[{i}]"), *a)),
        );
    for (key, addr) in keyed {
        for iface in &host.interfaces {
            for (bound, _, label) in iface.addrs.iter().filter(|(a, ..)| *a == addr) {
                let ours = iface.name == vip.nic
                    && match (bound, label) {
                        // IPv4: the label tells our alias from the host's own address.
                        (IpAddr::V4(_), Some(label)) => *label == vip.label,
                        (IpAddr::V4(_), None) => false,
                        // IPv6 has no labels: on our NIC it can only be ours.
                        (IpAddr::V6(_), _) => true,
                    };
                if !ours {
                    let where_ = match label {
                        Some(l) if *l != iface.name => format!("{} (label {l})", iface.name),
                        _ => iface.name.clone(),
                    };
                    errors.push(ConfigError::value(
                        key.as_str(),
                        quote(&addr.to_string()),
                        format!(
                            "already an address of this host on {where_}; a VIP must be an address no host owns (one bound under vip.label {} is adopted)",
                            quote(&vip.label)
                        ),
                    ));
                }
            }
        }
    }
    errors
}

/// `peer.listen` must be an address this host has (or every address), and not a VIP:
/// a VIP moves, and the other agents ask this one at its MEMBER_HOST.
fn check_peer_listen(cfg: &Config, host: &HostFacts) -> Option<ConfigError> {
    let ip = cfg.peer.listen;
    let why = if cfg.vip.all_vips().any(|v| v == ip) {
        format!(
            "{ip} is a VIP, which moves between the nodes; listen on the address MEMBER_HOST \
             names (the host's own), or on every address (remove the key)"
        )
    } else if ip.is_unspecified()
        || host
            .interfaces
            .iter()
            .any(|i| i.addrs.iter().any(|(a, ..)| *a == ip))
    {
        return None;
    } else {
        format!(
            "{ip} is not an address of this host; use the address MEMBER_HOST names (the \
             other agents connect there), or remove the key to listen on every address"
        )
    };
    Some(ConfigError::value(
        "peer.listen",
        quote(&ip.to_string()),
        why,
    ))
}

/// `metrics.listen` must be an address this host has (or a wildcard, or loopback), or the
/// agent would stop at start when it binds it.
fn check_metrics(cfg: &Config, host: &HostFacts) -> Option<ConfigError> {
    let listen = cfg.metrics.as_ref()?.listen;
    let ip = listen.ip();
    let local = ip.is_unspecified()
        || ip.is_loopback()
        || host
            .interfaces
            .iter()
            .any(|i| i.addrs.iter().any(|(a, ..)| *a == ip));
    (!local).then(|| {
        ConfigError::value(
            "metrics.listen",
            quote(&listen.to_string()),
            format!(
                "{ip} is not an address of this host; use a loopback address, one of this \
                 host's own (e.g. on a management network), or 0.0.0.0 / [::]"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        HostFacts {
            interfaces: vec![
                HostInterface {
                    name: "lo".into(),
                    addrs: vec![(v4("127.0.0.1"), 8, Some("lo".into()))],
                },
                HostInterface {
                    name: "eth0".into(),
                    addrs: vec![
                        (v4("198.51.100.10"), 24, Some("eth0".into())),
                        (v4("198.51.100.50"), 24, Some("eth0:0".into())),
                        (v4("198.51.100.51"), 24, Some("eth0:1".into())),
                        (v4("2001:db8::50"), 64, None),
                    ],
                },
            ],
        }
    }

    fn config(vips: &str, nic: &str) -> Config {
        let text = format!(
            "[mysql]\nhost = \"127.0.0.1\"\nuser = \"u\"\npassword_file = \"/p\"\n[vip]\nnic = \"{nic}\"\nprefix = 24\n{vips}\n"
        );
        crate::config::parse(&text).unwrap()
    }

    fn messages(cfg: &Config) -> Vec<String> {
        check_host(cfg, &facts())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn own_vip_under_our_label_is_adopted() {
        assert!(messages(&config("write_vip = \"198.51.100.50\"", "eth0")).is_empty());
    }

    #[test]
    fn vip_under_another_label_or_the_host_address_is_rejected() {
        let e = messages(&config(
            "write_vip = \"198.51.100.10\"\nread_vips = [\"198.51.100.51\"]",
            "eth0",
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with(
                "vip.write_vip = \"198.51.100.10\": already an address of this host on eth0;"
            ),
            "{e:?}"
        );
        assert!(e[1].starts_with("vip.read_vips[0] = \"198.51.100.51\": already an address of this host on eth0 (label eth0:1)"), "{e:?}");
        // Our label, but a different instance's label setting.
        let e = messages(&config(
            "write_vip = \"198.51.100.50\"\nlabel = \"eth0:7\"",
            "eth0",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn ipv6_on_our_nic_is_adopted_elsewhere_rejected() {
        let v6 = "[vip]\nnic = \"eth0\"\nprefix = 64\nwrite_vip = \"2001:db8::50\"\n";
        let text = format!("[mysql]\nhost = \"h\"\nuser = \"u\"\npassword_file = \"/p\"\n{v6}");
        let cfg = crate::config::parse(&text).unwrap();
        assert!(check_host(&cfg, &facts()).is_empty());
        let cfg = crate::config::parse(
            &text
                .replace("2001:db8::50", "127.0.0.1")
                .replace("prefix = 64", "prefix = 8"),
        );
        assert!(cfg.is_err()); // loopback is rejected before the host is looked at
    }

    #[test]
    fn missing_nic_lists_the_interfaces() {
        let e = messages(&config("write_vip = \"198.51.100.60\"", "eth9"));
        assert_eq!(
            e,
            vec![
                "vip.nic = \"eth9\": no such interface on this host (found: lo, eth0) (greatdb_ha_mgr_vip_nic)"
            ]
        );
    }

    #[test]
    fn the_peer_address_must_be_this_hosts_and_not_a_vip() {
        let base = config("write_vip = \"198.51.100.60\"", "eth0");
        let with = |listen: &str| {
            let mut cfg = base.clone();
            cfg.peer.listen = listen.parse().unwrap();
            messages(&cfg)
        };
        for ok in ["::", "0.0.0.0", "198.51.100.10"] {
            assert!(with(ok).is_empty(), "{ok}: {:?}", with(ok));
        }
        let e = with("198.51.100.250");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "peer.listen = \"198.51.100.250\": 198.51.100.250 is not an address of this host"
            ),
            "{e:?}"
        );
        let e = with("198.51.100.60");
        assert!(
            e[0].contains("198.51.100.60 is a VIP, which moves between the nodes"),
            "{e:?}"
        );
    }

    #[test]
    fn the_metrics_address_must_be_this_hosts() {
        let base = config("write_vip = \"198.51.100.60\"", "eth0");
        for ok in [
            "127.0.0.1:9748",
            "127.0.0.2:9748",
            "0.0.0.0:9748",
            "[::]:9748",
            "[::1]:9748",
            "198.51.100.10:9748",
        ] {
            let cfg = Config {
                metrics: Some(crate::config::MetricsConfig {
                    listen: ok.parse().unwrap(),
                }),
                ..base.clone()
            };
            assert!(messages(&cfg).is_empty(), "{ok}: {:?}", messages(&cfg));
        }
        let cfg = Config {
            metrics: Some(crate::config::MetricsConfig {
                listen: "198.51.100.250:9748".parse().unwrap(),
            }),
            ..base
        };
        assert_eq!(
            messages(&cfg),
            vec![
                "metrics.listen = \"198.51.100.250:9748\": 198.51.100.250 is not an address of this \
                 host; use a loopback address, one of this host's own (e.g. on a management \
                 network), or 0.0.0.0 / [::]"
            ]
        );
    }

    #[test]
    fn gather_sees_loopback() {
        let facts = HostFacts::gather().unwrap();
        let lo = facts.interface("lo").expect("every Linux host has lo");
        assert!(
            lo.addrs
                .iter()
                .any(|(a, p, l)| a.is_loopback() && *p == 8 && l.as_deref() == Some("lo"))
        );
    }
}
