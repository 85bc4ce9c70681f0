//! Read-only duplicates of the handles on the datapath's maps, for the metrics scrape.
//!
//! The agent's loop owns the maps and is their only writer from user space. A scrape
//! must neither wait for the loop nor slow it down, so the metrics endpoint reads the
//! kernel maps itself, at scrape time, on a blocking thread, through duplicated file
//! descriptors: lookups only, which the kernel serves alongside the loop's updates and
//! the programs' own. (Refreshing copies from the loop instead would cost the loop a
//! map walk on every poll, scraped or not.)

use std::os::fd::AsFd;

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData, PerCpuHashMap};
use vip_ebpf_common::{ConnInfo, ConnKey, DstKey, GuardCounters, VipState};

use super::engine::{VipDatapath, summarize};
use super::{guard, track, vip_table};

/// `VIPS`, `VIP_COUNTERS` and (when tracking runs) `CONNS`, read-only.
pub struct MapReader {
    vips: HashMap<MapData, DstKey, VipState>,
    guard: bool,
    counters: PerCpuHashMap<MapData, DstKey, GuardCounters>,
    conns: Option<HashMap<MapData, ConnKey, ConnInfo>>,
}

impl MapReader {
    pub(super) fn new(
        vips: &MapData,
        guard: bool,
        conns: Option<&MapData>,
        counters: &MapData,
    ) -> Result<MapReader> {
        Ok(MapReader {
            vips: HashMap::try_from(dup(vips, "VIPS")?)?,
            guard,
            counters: PerCpuHashMap::try_from(dup(counters, "VIP_COUNTERS")?)?,
            conns: match conns {
                Some(m) => Some(HashMap::try_from(dup(m, "CONNS")?)?),
                None => None,
            },
        })
    }

    /// The guard is attached, so its counters mean something.
    pub fn guarding(&self) -> bool {
        self.guard
    }

    /// Connections are tracked, so [`VipDatapath::tracked`] means something.
    pub fn tracking(&self) -> bool {
        self.conns.is_some()
    }

    /// What `vip-agent status` shows per VIP, read now.
    pub fn vips(&self) -> Result<Vec<VipDatapath>> {
        let counters = guard::read_counters(&self.counters)?;
        let conns = self
            .conns
            .as_ref()
            .map(|m| track::list(m, vip_table::monotonic_ns()))
            .unwrap_or_default();
        Ok(summarize(vip_table::entries(&self.vips), &conns, &counters))
    }
}

impl std::fmt::Debug for MapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapReader")
            .field("guarding", &self.guard)
            .field("tracking", &self.tracking())
            .finish_non_exhaustive()
    }
}

/// Another descriptor of the same kernel map, typed by the kernel's map type.
fn dup(map: &MapData, name: &str) -> Result<Map> {
    let fd = map
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating the {name} map's descriptor"))?;
    let data = MapData::from_fd(fd).with_context(|| format!("reopening the {name} map"))?;
    Map::from_map_data(data).with_context(|| format!("reopening the {name} map"))
}
