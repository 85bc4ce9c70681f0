//! `count_dst`: an XDP pass-through that counts packets and bytes per destination
//! address (IPv4 and IPv6) on the interface it is attached to.
//!
//! It proves the whole pipeline (build, embed, load, attach, read back through a pinned
//! BTF map) and is the base the VIP guard builds on.

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS, btf_maps::LruPerCpuHashMap, macros::btf_map, macros::xdp,
    programs::XdpContext,
};
use vip_ebpf_common::{Counter, DST_COUNTER_ENTRIES, DstKey};

/// Packets and bytes per destination address, one value per CPU (atomic adds are not
/// available here, and per-CPU values need none). LRU, so new destinations always count.
#[btf_map]
static DST_PACKETS: LruPerCpuHashMap<DstKey, Counter, DST_COUNTER_ENTRIES> =
    LruPerCpuHashMap::new();

const ETH_HDR_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Offset of the destination address in an IPv4 / IPv6 header.
const IPV4_DST_OFF: usize = 16;
const IPV6_DST_OFF: usize = 24;

#[xdp]
pub fn count_dst(ctx: XdpContext) -> u32 {
    if let Some(key) = destination(&ctx) {
        count(&key, (ctx.data_end() - ctx.data()) as u64);
    }
    XDP_PASS
}

/// Reads `N` bytes at `off` from the packet, or None if the packet is shorter.
#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let start = ctx.data() + off;
    if start + N > ctx.data_end() {
        return None;
    }
    // SAFETY: the bounds check above keeps the read inside the packet, which the
    // verifier also checks; [u8; N] has no alignment requirement.
    Some(unsafe { *(start as *const [u8; N]) })
}

#[inline(always)]
fn destination(ctx: &XdpContext) -> Option<DstKey> {
    let ethertype = u16::from_be_bytes(read::<2>(ctx, 12)?);
    match ethertype {
        ETH_P_IPV4 => Some(DstKey::v4(read::<4>(ctx, ETH_HDR_LEN + IPV4_DST_OFF)?)),
        ETH_P_IPV6 => Some(DstKey::v6(read::<16>(ctx, ETH_HDR_LEN + IPV6_DST_OFF)?)),
        _ => None,
    }
}

#[inline(always)]
fn count(key: &DstKey, len: u64) {
    if let Some(c) = DST_PACKETS.get_ptr_mut(key) {
        // SAFETY: a per-CPU value is only touched by this CPU while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
        return;
    }
    let first = Counter {
        packets: 1,
        bytes: len,
    };
    // Another packet on this CPU cannot race us; a failure means the map is full of
    // entries the LRU could not evict, and the packet is simply not counted.
    let _ = DST_PACKETS.insert(key, first, 0);
}
