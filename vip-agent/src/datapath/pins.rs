//! What the agent pins under `/sys/fs/bpf/vip-agent/<instance>/`, and how a restarted
//! agent takes it over.
//!
//! Maps are pinned so their state outlives the agent: tracked connections, the VIP table
//! (with the guard's windows after a release) and the counters. The program links are
//! pinned so the tracker and the guard keep running while the agent restarts. A new agent
//! loads its programs against the SAME pinned maps (aya reuses a pin by path), then
//! replaces the old links by its own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::maps::MapData;
use aya::programs::links::{FdLink, PinnedLink};
use tracing::warn;
use vip_ebpf_common::{
    ConnInfo, ConnKey, DstKey, GuardConfig, GuardCounters, TrackConfig, VIP_ENTRIES, VipState,
};

/// A pinned map: its name in the object, its file, its key and value sizes, its size.
pub struct PinnedMap {
    pub map: &'static str,
    pub file: &'static str,
    key: usize,
    value: usize,
}

/// The maps a restarted agent must share with the programs of its last run.
pub const MAPS: &[PinnedMap] = &[
    PinnedMap {
        map: "VIPS",
        file: "vips",
        key: size_of::<DstKey>(),
        value: size_of::<VipState>(),
    },
    PinnedMap {
        map: "VIP_COUNTERS",
        file: "vip_counters",
        key: size_of::<DstKey>(),
        value: size_of::<GuardCounters>(),
    },
    PinnedMap {
        map: "GUARD_CONFIG",
        file: "guard_config",
        key: 4,
        value: size_of::<GuardConfig>(),
    },
    PinnedMap {
        map: "CONNS",
        file: "connections",
        key: size_of::<ConnKey>(),
        value: size_of::<ConnInfo>(),
    },
    PinnedMap {
        map: "TRACK_CONFIG",
        file: "track_config",
        key: 4,
        value: size_of::<TrackConfig>(),
    },
];

/// The pinned links: the tracker on `inet_sock_set_state`, and the guard's XDP link.
pub const TRACK_LINK: &str = "track_link";
pub const GUARD_LINK: &str = "guard_link";

/// Every name the agent pins in its folder: the maps, then the links.
pub fn names() -> impl Iterator<Item = &'static str> {
    MAPS.iter().map(|m| m.file).chain([TRACK_LINK, GUARD_LINK])
}

/// The expected `max_entries` of a pinned map.
fn max_entries(map: &PinnedMap, tracked_connections: u32) -> u32 {
    match map.map {
        "CONNS" => tracked_connections,
        "GUARD_CONFIG" | "TRACK_CONFIG" => 1,
        _ => VIP_ENTRIES as u32,
    }
}

/// Removes pinned maps that no longer fit this agent (another layout after an upgrade,
/// or another `datapath.tracked_connections`): reusing them would corrupt both sides.
/// Returns what was removed, for the log.
pub fn drop_incompatible(dir: &Path, tracked_connections: u32) -> Vec<String> {
    let mut removed = Vec::new();
    for m in MAPS {
        let path = dir.join(m.file);
        if !path.exists() {
            continue;
        }
        let fits = MapData::from_pin(&path)
            .and_then(|data| data.info())
            .is_ok_and(|info| {
                info.key_size() as usize == m.key
                    && info.value_size() as usize == m.value
                    && info.max_entries() == max_entries(m, tracked_connections)
            });
        if !fits {
            let _ = std::fs::remove_file(&path);
            removed.push(m.file.to_string());
        }
    }
    if !removed.is_empty() {
        warn!(
            event = "datapath",
            "pinned maps from an earlier run do not fit this agent (upgrade, or another \
             datapath.tracked_connections) and start empty: {}",
            removed.join(", ")
        );
    }
    removed
}

/// Removes a pinned link, detaching it (the agent that made it is gone).
pub fn remove_link(dir: &Path, name: &str) {
    let path = dir.join(name);
    if path.exists()
        && let Ok(link) = PinnedLink::from_pin(&path)
    {
        let _ = link.unpin();
    }
    let _ = std::fs::remove_file(&path);
}

/// Pins `link` as `dir/name`, replacing (and so detaching) the link pinned there before.
/// The new link is already attached, so the hook is never left empty.
pub fn replace_link(dir: &Path, name: &str, link: FdLink) -> Result<PathBuf> {
    remove_link(dir, name);
    let path = dir.join(name);
    link.pin(&path)
        .with_context(|| format!("could not pin {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_files_are_distinct_and_readable_names() {
        let mut files: Vec<&str> = names().collect();
        let n = files.len();
        files.sort();
        files.dedup();
        assert_eq!(files.len(), n);
        assert!(
            files
                .iter()
                .all(|f| f.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
        let conns = MAPS.iter().find(|m| m.map == "CONNS").unwrap();
        assert_eq!(max_entries(conns, 4096), 4096);
    }
}
