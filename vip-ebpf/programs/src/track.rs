//! Connection tracking: every TCP connection whose local address is a VIP this node
//! holds goes into `CONNS` when it is established, and leaves it when it closes.
//!
//! - `track_state` (tp_btf `inet_sock_set_state`): every TCP state change on the kernel.
//!   tp_btf needs no tracefs and loads where fentry/kprobes do not. It sees the sockets of
//!   EVERY network namespace, so it keeps only those of the agent's (`TRACK_CONFIG`'s
//!   namespace cookie): other lab hosts and containers share this kernel.
//! - `track_seed` (iter/tcp): run by the agent at start over its own namespace, so
//!   connections established before it started (or while it was down) are tracked too.
//!
//! Entries are removed on TCP_CLOSE, which every full socket reaches (also on its way to
//! TIME_WAIT), so the map follows the kernel. It is LRU in case an event is ever missed.

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use vip_ebpf_common::{ConnInfo, ConnKey, VIP_HELD};

use crate::maps::{CONNS, TRACK_CONFIG, VIPS};
use crate::sock::{
    TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_NEW_SYN_RECV, TCP_TIME_WAIT, conn_key, field,
    iter_socket, vip_key,
};

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn track_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const c_void = ctx.arg(0);
    let new: i32 = ctx.arg(2);
    let Some(cfg) = TRACK_CONFIG.get(0) else {
        return 0;
    };
    if cfg.netns_cookie == 0 || sk.is_null() {
        return 0;
    }
    // The socket's namespace: sk->__sk_common.skc_net.net->net_cookie.
    let Some(net) = field::<*const c_void>(sk, cfg.off.net) else {
        return 0;
    };
    if field::<u64>(net, cfg.off.net_cookie) != Some(cfg.netns_cookie) {
        return 0;
    }
    let Some(key) = conn_key(sk, &cfg.off) else {
        return 0;
    };
    let new = new as u8;
    match new {
        TCP_ESTABLISHED => record(&key, new),
        TCP_CLOSE => {
            let _ = CONNS.remove(&key);
        }
        _ => {
            // FIN_WAIT, CLOSE_WAIT, …: still a connection; keep its state current.
            if let Some(info) = CONNS.get_ptr_mut(&key) {
                // SAFETY: a pointer into the map's value, valid during this program.
                unsafe { (*info).state = new };
            }
        }
    }
    0
}

/// Inserts the connection if its local address is a VIP this node holds.
#[inline(always)]
fn record(key: &ConnKey, state: u8) {
    // SAFETY: the value is copied out at once; the agent only replaces whole entries.
    let Some(vip) = (unsafe { VIPS.get(vip_key(key)) }) else {
        return;
    };
    if vip.state != VIP_HELD {
        return;
    }
    let info = ConnInfo {
        // SAFETY: a helper without arguments.
        established_ns: unsafe { bpf_ktime_get_ns() },
        last_rx_ns: 0,
        role: vip.role,
        state,
        _pad: [0; 6],
    };
    // BPF_NOEXIST: the seed iterator must not overwrite what the tracepoint recorded.
    let _ = CONNS.insert(key, info, 1);
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn track_seed(ctx: *mut c_void) -> i32 {
    let sk = iter_socket(ctx);
    if sk.is_null() {
        return 0;
    }
    let Some(cfg) = TRACK_CONFIG.get(0) else {
        return 0;
    };
    let Some(state) = field::<u8>(sk, cfg.off.state) else {
        return 0;
    };
    if state == TCP_LISTEN || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
        return 0;
    }
    if let Some(key) = conn_key(sk, &cfg.off) {
        record(&key, state);
    }
    0
}
