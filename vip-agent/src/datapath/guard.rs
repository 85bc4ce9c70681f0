//! TEMPORARY placeholder until the guard branch is merged.
use anyhow::{Result, bail};
use aya::Ebpf;
use aya::maps::{MapData, PerCpuHashMap};
use aya::programs::links::FdLink;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use vip_ebpf_common::{DstKey, GuardCounters};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VipCounters {
    pub vip: IpAddr,
    pub packets: u64,
    pub bytes: u64,
    pub rst_sent: u64,
    pub dropped: u64,
    pub neigh_dropped: u64,
}

pub fn attach(_ebpf: &mut Ebpf, _iface: &str, _mode: aya::programs::XdpMode) -> Result<FdLink> {
    bail!("not merged yet")
}

pub fn read_counters(
    _map: &PerCpuHashMap<MapData, DstKey, GuardCounters>,
) -> Result<Vec<VipCounters>> {
    Ok(Vec::new())
}
