//! The maps shared by several programs. The agent pins each of them under
//! `/sys/fs/bpf/vip-agent/<instance>/` (see `vip-agent/src/datapath/pins.rs`), so a restarted
//! agent and the programs still attached from its last run share the same maps.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuHashMap},
    macros::btf_map,
};
use vip_ebpf_common::{
    CONN_ENTRIES, ConnInfo, ConnKey, DstKey, GuardConfig, GuardCounters, TrackConfig, VIP_ENTRIES,
    VipState,
};

/// This node's VIPs: held, or released (with the guard's expiry). Written by the agent.
#[btf_map]
pub static VIPS: HashMap<DstKey, VipState, VIP_ENTRIES> = HashMap::new();

/// The guard's counters per VIP, per CPU (no atomics needed, none available).
#[btf_map]
pub static VIP_COUNTERS: PerCpuHashMap<DstKey, GuardCounters, VIP_ENTRIES> = PerCpuHashMap::new();

/// Slot 0: the guard's NIC (its MAC).
#[btf_map]
pub static GUARD_CONFIG: Array<GuardConfig, 1> = Array::new();

/// The TCP connections to this node's VIPs. LRU: when full, the least recently used
/// entry goes rather than a new connection being missed.
#[btf_map]
pub static CONNS: LruHashMap<ConnKey, ConnInfo, CONN_ENTRIES> = LruHashMap::new();

/// Slot 0: the tracker's namespace cookie and socket field offsets.
#[btf_map]
pub static TRACK_CONFIG: Array<TrackConfig, 1> = Array::new();
