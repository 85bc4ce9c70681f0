//! Reading a kernel socket's fields at the offsets the agent found in kernel BTF (Rust
//! eBPF has no CO-RE field relocations), shared by the reset iterator and the tracker.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use vip_ebpf_common::{AF_INET, AF_INET6, ConnKey, DstKey, SockCommonOffsets};

// Kernel TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_NEW_SYN_RECV: u8 = 12;

/// Reads `T` at byte offset `off` of kernel object `base`.
#[inline(always)]
pub fn field<T>(base: *const c_void, off: u16) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel tolerates any address; the offset comes from BTF.
    unsafe { bpf_probe_read_kernel((base as *const u8).add(off as usize) as *const T).ok() }
}

/// The second 32-bit word of a v4-mapped address (`0000:ffff`), as loaded in memory.
pub const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// An address as four 32-bit words (network order bytes, loaded natively): eBPF has no
/// memcmp, so addresses are compared as integers.
#[inline(always)]
pub fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

#[inline(always)]
fn bytes(w: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = w[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

/// The socket's connection, with a v4-mapped IPv6 socket (a server on `[::]` accepting
/// an IPv4 client) keyed as IPv4, the way the agent names the VIP.
#[inline(always)]
pub fn conn_key(sk: *const c_void, off: &SockCommonOffsets) -> Option<ConnKey> {
    let family = field::<u16>(sk, off.family)?;
    let local_port = u16::from_be(field::<u16>(sk, off.sport)?);
    let remote_port = u16::from_be(field::<u16>(sk, off.dport)?);
    let mut key = ConnKey {
        family: AF_INET,
        local_port,
        remote_port,
        ..ConnKey::default()
    };
    match family {
        AF_INET => {
            key.local = bytes([field::<u32>(sk, off.rcv_saddr)?, 0, 0, 0]);
            key.remote = bytes([field::<u32>(sk, off.daddr)?, 0, 0, 0]);
        }
        AF_INET6 => {
            let local = field::<[u32; 4]>(sk, off.v6_rcv_saddr)?;
            let remote = field::<[u32; 4]>(sk, off.v6_daddr)?;
            if local[0] == 0 && local[1] == 0 && local[2] == V4_MAPPED {
                key.local = bytes([local[3], 0, 0, 0]);
                key.remote = bytes([remote[3], 0, 0, 0]);
            } else {
                key.family = AF_INET6;
                key.local = bytes(local);
                key.remote = bytes(remote);
            }
        }
        _ => return None,
    }
    Some(key)
}

/// The VIP table's key for a connection's local address.
#[inline(always)]
pub fn vip_key(conn: &ConnKey) -> DstKey {
    DstKey {
        family: conn.family,
        _pad: [0; 2],
        addr: conn.local,
    }
}

/// The context of an `iter/tcp` program: `struct bpf_iter__tcp { meta; sk_common; uid }`.
#[repr(C)]
struct BpfIterTcp {
    meta: *mut c_void,
    sk_common: *mut c_void,
    uid: u32,
}

/// The socket an `iter/tcp` program is called for; NULL at the end of the walk.
#[inline(always)]
pub fn iter_socket(ctx: *mut c_void) -> *mut c_void {
    // SAFETY: the kernel passes a valid `struct bpf_iter__tcp`; the verifier checks the
    // load against its BTF. Read as is: the kfunc needs the unmodified pointer.
    unsafe { core::ptr::read_volatile(&(*(ctx as *const BpfIterTcp)).sk_common) }
}
