//! `reset_tcp`: a TCP socket iterator (`iter/tcp`) that destroys every socket whose
//! LOCAL address is the target VIP, so clients of a node that lost the VIP get a reset
//! at once instead of hanging until their retransmissions time out.
//!
//! Userspace writes the target (and the kernel's `struct sock_common` field offsets) to
//! `RESET_TARGET`, creates an iterator from the link and reads it to the end; each read
//! runs this program once per TCP socket of the READER's network namespace, then once
//! more with a NULL socket. The program calls the kfunc `bpf_sock_destroy` (kernel
//! >= 6.5, GPL only), which aborts the socket: the peer gets a RST, local readers get
//! ECONNABORTED.
//!
//! Field offsets: Rust has no CO-RE field relocations, so the offsets come from the
//! running kernel's BTF at load time (see `ResetTarget::off`) and the fields are read
//! with `bpf_probe_read_kernel`. Only the unmodified `sk_common` pointer from the
//! context (a trusted BTF pointer) is passed to the kfunc, as the verifier requires.
//!
//! aya-ebpf 0.2 has no `#[iter]` macro, so the section is written by hand, and
//! bpf-linker leaves `bpf_sock_destroy` as an undefined symbol with a `call -1`: the
//! loader patches that call into a kfunc call before aya parses the object.

use core::ffi::c_void;

use aya_ebpf::{btf_maps::Array, macros::btf_map};
use vip_ebpf_common::{AF_INET, AF_INET6, ResetCount, ResetTarget};

use crate::sock::{
    TCP_LISTEN, TCP_NEW_SYN_RECV, TCP_TIME_WAIT, V4_MAPPED, field, iter_socket, words,
};

/// Slot 0: what to destroy. `family == 0` (the initial value) destroys nothing.
#[btf_map]
static RESET_TARGET: Array<ResetTarget, 1> = Array::new();

/// Slot 0: what the last run did. Userspace zeroes it before each run. An iterator read
/// runs the program sequentially, so plain (non-atomic) increments are exact.
#[btf_map]
static RESET_COUNT: Array<ResetCount, 1> = Array::new();

unsafe extern "C" {
    /// The kfunc (net/core/filter.c). Declared here; bound by the loader (see above).
    fn bpf_sock_destroy(sk: *mut c_void) -> i32;
}

// Not connections to reset: listeners, and the mini sockets of TIME_WAIT and of
// half-open connections (request sockets), which are not full `struct sock`s and which
// `bpf_sock_destroy` cannot take.

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn reset_tcp(ctx: *mut c_void) -> i32 {
    let sk = iter_socket(ctx);
    if sk.is_null() {
        return 0; // the end of the walk
    }
    let Some(target) = RESET_TARGET.get(0) else {
        return 0;
    };
    if !matches(sk, target) {
        return 0;
    }
    let Some(count) = RESET_COUNT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `sk` is the context's socket, checked non-NULL; `count` points into the map.
    unsafe {
        (*count).matched += 1;
        let rc = bpf_sock_destroy(sk);
        if rc == 0 {
            (*count).destroyed += 1;
        } else {
            (*count).failed += 1;
            (*count).last_error = rc as i64;
        }
    }
    0
}

#[inline(always)]
fn matches(sk: *const c_void, t: &ResetTarget) -> bool {
    let Some(state) = field::<u8>(sk, t.off.state) else {
        return false;
    };
    if state == TCP_LISTEN || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
        return false;
    }
    if t.port != 0 {
        match field::<u16>(sk, t.off.num) {
            Some(port) if port == t.port => {}
            _ => return false,
        }
    }
    if t.any_addr != 0 {
        return true; // the kill-all option: every client of mysqld's port
    }
    let Some(family) = field::<u16>(sk, t.off.family) else {
        return false;
    };
    // Compared as integers (both sides in network order): no memcmp in eBPF.
    let want = words(&t.addr);
    match (t.family, family) {
        (AF_INET, AF_INET) => field::<u32>(sk, t.off.rcv_saddr) == Some(want[0]),
        // An IPv4 VIP on a dual-stack socket (e.g. a server listening on [::]): the
        // local address is v4-mapped, ::ffff:a.b.c.d.
        (AF_INET, AF_INET6) => field::<[u32; 4]>(sk, t.off.v6_rcv_saddr)
            .is_some_and(|a| a == [0, 0, V4_MAPPED, want[0]]),
        (AF_INET6, AF_INET6) => field::<[u32; 4]>(sk, t.off.v6_rcv_saddr) == Some(want),
        _ => false,
    }
}
