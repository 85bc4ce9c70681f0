//! Destroying every TCP connection whose LOCAL address is a VIP, with the `reset_tcp`
//! socket iterator (`iter/tcp`) and the kfunc `bpf_sock_destroy` (kernel >= 6.5).
//!
//! When a node loses a VIP, its clients would otherwise hang on their connections until
//! TCP gives up (~15 min); destroyed sockets send them a RST at once.
//!
//! [`ResetProgram::run`] writes the target (address, port, and the socket field offsets
//! read from kernel BTF, see [`super::kernel`]) to `RESET_TARGET`, attaches the program
//! (a new iterator link), creates an iterator from it and reads it to the end. The kernel
//! walks the TCP sockets of the network namespace of the thread that READS, so call it
//! from the namespace whose sockets must go (the agent's own).

use anyhow::{Context, Result};
use aya::maps::{Array, MapData};
use aya::programs::Iter;
use aya::{Ebpf, EbpfLoader};
use std::io::Read;
use std::net::IpAddr;
use vip_ebpf_common::{AF_INET, AF_INET6, ResetCount, ResetTarget, SockCommonOffsets};

use super::Target;
use super::kernel::KernelBtf;

/// The program's name in the object, and the maps it uses.
const PROGRAM: &str = "reset_tcp";
const TARGET_MAP: &str = "RESET_TARGET";
const COUNT_MAP: &str = "RESET_COUNT";

/// The loaded `reset_tcp` program and its maps, in an [`Ebpf`] owned by the caller.
pub struct ResetProgram {
    target: Array<MapData, ResetTarget>,
    count: Array<MapData, ResetCount>,
    offsets: SockCommonOffsets,
}

impl ResetProgram {
    /// Loads `reset_tcp` into the kernel. `ebpf` must come from an object patched with
    /// the kernel's `bpf_sock_destroy` id ([`KernelBtf::patch`]).
    pub fn load(ebpf: &mut Ebpf, kernel: &KernelBtf) -> Result<ResetProgram> {
        if let Err(why) = &kernel.sock_destroy {
            anyhow::bail!("{why}");
        }
        let program: &mut Iter = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("the embedded eBPF object has no {PROGRAM} program"))?
            .try_into()?;
        program.load("tcp", &kernel.btf).map_err(|e| {
            permission_hint(
                anyhow::Error::new(e),
                "load the reset_tcp iterator (iter/tcp calling bpf_sock_destroy)",
            )
        })?;
        Ok(ResetProgram {
            target: take_map(ebpf, TARGET_MAP)?,
            count: take_map(ebpf, COUNT_MAP)?,
            offsets: kernel.offsets,
        })
    }

    /// Destroys the sockets `target` names in the CALLING THREAD's network namespace,
    /// except listeners and TIME_WAIT / half-open mini sockets. Returns the counts.
    pub fn run(&mut self, ebpf: &mut Ebpf, target: Target) -> Result<ResetCount> {
        let value = match target {
            Target::Local(addr, port) => reset_target(addr, port.unwrap_or(0), self.offsets),
            Target::Port(port) => ResetTarget {
                port,
                any_addr: 1,
                off: self.offsets,
                ..ResetTarget::default()
            },
        };
        self.target
            .set(0, value, 0)
            .context("could not write the reset target map")?;
        self.count
            .set(0, ResetCount::default(), 0)
            .context("could not clear the reset count map")?;
        run_iter(ebpf, PROGRAM)?;
        self.count
            .get(&0, 0)
            .context("could not read the reset count map")
    }
}

/// Runs an `iter/tcp` program once over this thread's namespace: attach (a new iterator
/// link), create an iterator from the link, and read it to the end.
pub fn run_iter(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let program: &mut Iter = ebpf
        .program_mut(name)
        .with_context(|| format!("{name} program missing"))?
        .try_into()?;
    let link_id = program
        .attach()
        .map_err(|e| permission_hint(anyhow::Error::new(e), "attach an iterator"))?;
    let link = program.take_link(link_id)?;
    let mut iter = link
        .into_file()
        .with_context(|| format!("could not create an iterator from the {name} link"))?;
    // The programs write nothing; reading to the end runs them over every socket.
    let mut sink = Vec::new();
    iter.read_to_end(&mut sink)
        .with_context(|| format!("reading the {name} iterator failed"))?;
    Ok(())
}

/// The reset program on its own, in its own [`Ebpf`]: for tools and tests. The agent
/// loads it with the rest of the datapath ([`super::engine::Datapath`]).
pub struct IterReset {
    ebpf: Ebpf,
    program: ResetProgram,
}

impl IterReset {
    /// Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON), a kernel with BTF and
    /// `bpf_sock_destroy` (>= 6.5).
    pub fn load() -> Result<IterReset> {
        let kernel = KernelBtf::read()?;
        let patched = kernel.patch(super::OBJECT)?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel.btf))
            .load(patched.bytes())
            .map_err(|e| permission_hint(anyhow::Error::new(e), "load vip-agent's eBPF object"))?;
        let program = ResetProgram::load(&mut ebpf, &kernel)?;
        Ok(IterReset { ebpf, program })
    }

    /// The socket field offsets read from the kernel's BTF.
    pub fn offsets(&self) -> SockCommonOffsets {
        self.program.offsets
    }

    /// Like [`ResetProgram::run`] for a local address (and port).
    pub fn reset_report(&mut self, addr: IpAddr, port: Option<u16>) -> Result<ResetCount> {
        self.program.run(&mut self.ebpf, Target::Local(addr, port))
    }
}

fn take_map<V: aya::Pod>(ebpf: &mut Ebpf, name: &str) -> Result<Array<MapData, V>> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the embedded eBPF object has no {name} map"))?;
    Ok(Array::try_from(map)?)
}

/// The map value for `addr`/`port`. A v4-mapped IPv6 address is treated as IPv4 (the
/// program also matches dual-stack sockets with a v4-mapped local address).
pub fn reset_target(addr: IpAddr, port: u16, off: SockCommonOffsets) -> ResetTarget {
    let addr = addr.to_canonical();
    let mut t = ResetTarget {
        port,
        off,
        ..ResetTarget::default()
    };
    match addr {
        IpAddr::V4(a) => {
            t.family = AF_INET;
            t.addr[..4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            t.family = AF_INET6;
            t.addr = a.octets();
        }
    }
    t
}

/// Adds the fix to a permission error, or says what failed.
pub(super) fn permission_hint(err: anyhow::Error, what: &str) -> anyhow::Error {
    let denied = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)))
    }) || format!("{err:#}").contains("Operation not permitted");
    if denied {
        err.context(format!(
            "could not {what}: permission denied; run vip-agent as root or with CAP_BPF, \
             CAP_NET_ADMIN and CAP_PERFMON"
        ))
    } else {
        err.context(format!("could not {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn targets_encode_families_and_v4_mapped_addresses() {
        let off = SockCommonOffsets::default();
        let v4 = reset_target(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 78)), 0, off);
        assert_eq!((v4.family, v4.port), (AF_INET, 0));
        assert_eq!(&v4.addr[..4], &[198, 51, 100, 78]);
        assert_eq!(&v4.addr[4..], &[0; 12]);
        let mapped: Ipv6Addr = "::ffff:198.51.100.78".parse().unwrap();
        assert_eq!(reset_target(IpAddr::V6(mapped), 0, off), v4);
        let v6: Ipv6Addr = "2001:db8::78".parse().unwrap();
        let t = reset_target(IpAddr::V6(v6), 3306, off);
        assert_eq!((t.family, t.port, t.addr), (AF_INET6, 3306, v6.octets()));
    }
}
