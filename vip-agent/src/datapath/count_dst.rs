//! Packets per destination address on one interface, counted by the `count_dst` XDP
//! program: the first program of the datapath, used to check a host end to end.

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{MapData, PerCpuHashMap};
use aya::programs::{Xdp, XdpMode};
use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use vip_ebpf_common::{Counter, DstKey};

use super::vip_table::key_addr;

/// The map's file name in the instance's pin folder.
pub const PIN_NAME: &str = "dst_packets";

/// One destination's totals, summed over CPUs.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DstCount {
    pub dst: IpAddr,
    pub packets: u64,
    pub bytes: u64,
}

/// The attached program and its pinned counter map. Dropping it detaches the program;
/// the pin stays until [`CountDst::unpin`].
pub struct CountDst {
    _ebpf: Ebpf,
    counters: PerCpuHashMap<MapData, DstKey, Counter>,
    pin: PathBuf,
}

impl CountDst {
    /// Attaches `count_dst` to `iface` and pins its map as `<pin_dir>/dst_packets`.
    pub fn attach(mut ebpf: Ebpf, iface: &str, pin_dir: &Path) -> Result<Self> {
        let program: &mut Xdp = ebpf
            .program_mut("count_dst")
            .context("the embedded eBPF object has no count_dst program")?
            .try_into()?;
        program
            .load()
            .context("the kernel refused to load the count_dst XDP program")?;
        program
            .attach(iface, XdpMode::default())
            .with_context(|| format!("could not attach XDP to interface {iface:?}"))?;
        let map = ebpf
            .take_map("DST_PACKETS")
            .context("the embedded eBPF object has no DST_PACKETS map")?;
        let pin = pin_dir.join(PIN_NAME);
        // A pin left by a killed run would make pinning fail; it holds nothing we need.
        let _ = std::fs::remove_file(&pin);
        map.pin(&pin)
            .with_context(|| format!("could not pin the counters at {}", pin.display()))?;
        let counters = PerCpuHashMap::try_from(map)?;
        Ok(CountDst {
            _ebpf: ebpf,
            counters,
            pin,
        })
    }

    pub fn pin_path(&self) -> &Path {
        &self.pin
    }

    /// The current totals per destination, sorted by address.
    pub fn read(&self) -> Result<Vec<DstCount>> {
        let mut out = Vec::new();
        for entry in self.counters.iter() {
            let (key, per_cpu) = entry.context("reading the dst_packets map")?;
            let Some(dst) = key_addr(&key) else { continue };
            let (packets, bytes) = per_cpu
                .iter()
                .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
            out.push(DstCount {
                dst,
                packets,
                bytes,
            });
        }
        out.sort_by_key(|c| c.dst);
        Ok(out)
    }

    /// Removes the pin (the program is detached when `self` is dropped).
    pub fn unpin(&self) -> Result<()> {
        std::fs::remove_file(&self.pin)
            .with_context(|| format!("could not remove the pin {}", self.pin.display()))
    }
}
