//! vip-agent's eBPF programs, built for `bpfel-unknown-none` by `cargo xtask build-ebpf`
//! and embedded in the agent binary.
//!
//! One small program per job; each lives in its own module. The types shared with
//! userspace are in `vip-ebpf-common`.
#![no_std]
#![no_main]

mod count_dst;
mod guard;
mod maps;
mod reset;
mod sock;
mod track;

// The verifier rejects programs that can panic, so no code path may reach this.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL is required for the kfuncs (bpf_sock_destroy) the reset programs call.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
