//! What the agent reads from the running kernel to load its programs, and the patch that
//! binds kfunc calls:
//!
//! 1. **Kfunc patch.** aya 0.14 cannot relocate kfunc calls, and bpf-linker leaves an
//!    extern like `bpf_sock_destroy` as an undefined symbol with a `call -1`. Before aya
//!    parses the embedded object, [`patch_kfunc_calls`] turns every call relocated against
//!    an undefined symbol into a kfunc call: `src_reg = BPF_PSEUDO_KFUNC_CALL` (2),
//!    `off = 0` (vmlinux), `imm =` the kfunc's BTF id in the running kernel. aya skips such
//!    calls (their symbol has no section), so the kernel sees them as they are.
//! 2. **Field offsets.** Rust has no CO-RE field relocations, so [`sock_common_offsets`]
//!    reads the offsets of the socket fields the programs read from the kernel's BTF
//!    (`/sys/kernel/btf/vmlinux`), walking the anonymous unions and structs they sit in and
//!    checking their sizes. A small reader of our own: aya 0.14 keeps `BtfKind` and its
//!    type accessors out of its public API.

use anyhow::{Context, Result, anyhow, bail, ensure};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use vip_ebpf_common::SockCommonOffsets;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The kfuncs the object may call.
const KFUNCS: &[&str] = &["bpf_sock_destroy"];

/// What was read from the kernel's BTF, once, at start.
pub struct KernelBtf {
    /// aya's view, for loading tp_btf and iterator programs.
    pub btf: aya::Btf,
    pub offsets: SockCommonOffsets,
    /// `bpf_sock_destroy`'s BTF id, or why it is missing.
    pub sock_destroy: Result<u32, String>,
}

impl KernelBtf {
    pub fn read() -> Result<KernelBtf> {
        let raw = std::fs::read(VMLINUX_BTF).with_context(|| {
            format!(
                "could not read the kernel's BTF at {VMLINUX_BTF}: the kernel must be built \
                 with CONFIG_DEBUG_INFO_BTF=y"
            )
        })?;
        let parsed = RawBtf::parse(&raw)
            .with_context(|| format!("could not parse the kernel's BTF at {VMLINUX_BTF}"))?;
        let offsets = sock_common_offsets(&raw).context(
            "could not find the socket fields (struct sock_common, struct net) in the \
             kernel's BTF",
        )?;
        let sock_destroy = parsed.func_id("bpf_sock_destroy").ok_or_else(|| {
            format!(
                "the kernel has no kfunc bpf_sock_destroy (it came in Linux 6.5; this kernel \
                 is {})",
                kernel_release()
            )
        });
        let btf = aya::Btf::from_sys_fs()
            .with_context(|| format!("could not parse the kernel's BTF at {VMLINUX_BTF}"))?;
        Ok(KernelBtf {
            btf,
            offsets,
            sock_destroy,
        })
    }

    /// Binds the object's kfunc calls to this kernel's ids, or to a placeholder (0) when
    /// `bpf_sock_destroy` is missing: then aya can still parse the object, and the
    /// programs that call it must not be loaded (the verifier would reject them).
    pub fn patch(&self, elf: &[u8]) -> Result<PatchedObject> {
        patch_kfunc_calls(elf, |name| match name {
            "bpf_sock_destroy" => Ok(self.sock_destroy.clone().unwrap_or(0)),
            other => Err(anyhow!("no BTF id for kfunc {other}")),
        })
    }
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "of unknown version".to_owned())
}

const BPF_JMP_CALL: u8 = 0x85;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const INSN_SIZE: u64 = 8;

/// An ELF object after [`patch_kfunc_calls`], 8-byte aligned as the ELF parser needs.
pub struct PatchedObject {
    words: Vec<u64>,
    len: usize,
    /// The calls patched: (kfunc, file offset of the instruction, BTF id).
    pub patched: Vec<(String, u64, u32)>,
}

impl PatchedObject {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// Turns every call instruction relocated against an undefined symbol into a kfunc call
/// (`src_reg = 2`, `off = 0`, `imm = resolve(name)`). Fails on an undefined symbol that
/// is not a known kfunc, on a relocation that is not on a call, and when `resolve` fails.
pub fn patch_kfunc_calls(
    elf: &[u8],
    mut resolve: impl FnMut(&str) -> Result<u32>,
) -> Result<PatchedObject> {
    let file = object::File::parse(elf).context("the embedded eBPF object is not valid ELF")?;
    let mut edits: Vec<(String, u64, u32)> = Vec::new();
    for section in file.sections() {
        let Some((section_start, section_len)) = section.file_range() else {
            continue;
        };
        for (offset, reloc) in section.relocations() {
            let RelocationTarget::Symbol(index) = reloc.target() else {
                continue;
            };
            let symbol = file.symbol_by_index(index)?;
            if !symbol.is_undefined() {
                continue;
            }
            let name = symbol.name()?;
            ensure!(
                KFUNCS.contains(&name),
                "the eBPF object refers to {name:?}, which is neither defined in it nor a \
                 kfunc vip-agent knows ({KFUNCS:?})"
            );
            ensure!(
                offset.is_multiple_of(INSN_SIZE) && offset + INSN_SIZE <= section_len,
                "relocation for {name} at {offset:#x} is not on an instruction"
            );
            let at = section_start + offset;
            ensure!(
                elf[at as usize] == BPF_JMP_CALL,
                "relocation for {name} at {offset:#x} in {} is not on a call instruction",
                section.name().unwrap_or("?")
            );
            let id = resolve(name)?;
            edits.push((name.to_owned(), at, id));
        }
    }
    let mut out = PatchedObject {
        words: vec![0u64; elf.len().div_ceil(8)],
        len: elf.len(),
        patched: Vec::new(),
    };
    out.bytes_mut().copy_from_slice(elf);
    let bytes = out.bytes_mut();
    for (_, at, id) in &edits {
        let insn = &mut bytes[*at as usize..(*at + INSN_SIZE) as usize];
        insn[1] = (BPF_PSEUDO_KFUNC_CALL << 4) | (insn[1] & 0x0f); // src_reg | dst_reg
        insn[2..4].copy_from_slice(&0i16.to_le_bytes()); // off 0: vmlinux BTF
        insn[4..8].copy_from_slice(&id.to_le_bytes()); // imm: the kfunc's BTF id
    }
    out.patched = edits;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Field offsets from the kernel's BTF: a reader for just what we need (aya keeps its
// type accessors private).

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct RawBtf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset in `types` of type id i (id 0 is void, so index 0 is unused).
    offsets: Vec<usize>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).context("truncated BTF")?;
    Ok(u32::from_le_bytes(s.try_into().unwrap()))
}

impl<'a> RawBtf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self> {
        let magic = data.get(0..2).context("truncated BTF header")?;
        ensure!(
            u16::from_le_bytes([magic[0], magic[1]]) == BTF_MAGIC,
            "not little-endian BTF"
        );
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let body = data.get(hdr_len..).context("truncated BTF")?;
        let types = body
            .get(type_off..type_off + type_len)
            .context("truncated BTF types")?;
        let strings = body
            .get(str_off..str_off + str_len)
            .context("truncated BTF strings")?;
        let mut offsets = vec![0];
        let mut at = 0;
        while at < types.len() {
            offsets.push(at);
            let info = u32_at(types, at + 4)?;
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            at += 12 + extra;
        }
        Ok(RawBtf {
            types,
            strings,
            offsets,
        })
    }

    fn name(&self, off: u32) -> &'a str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// (name_off, kind, kind_flag, vlen, size_or_type, offset of the type's data).
    fn ty(&self, id: u32) -> Result<(u32, u32, bool, usize, u32, usize)> {
        let at = *self
            .offsets
            .get(id as usize)
            .filter(|_| id != 0)
            .with_context(|| format!("no BTF type {id}"))?;
        let info = u32_at(self.types, at + 4)?;
        Ok((
            u32_at(self.types, at)?,
            (info >> 24) & 0x1f,
            info >> 31 == 1,
            (info & 0xffff) as usize,
            u32_at(self.types, at + 8)?,
            at + 12,
        ))
    }

    /// The size in bytes of type `id`, through typedefs and qualifiers.
    fn size(&self, mut id: u32) -> Result<u32> {
        for _ in 0..32 {
            let (_, kind, _, _, size_or_type, data) = self.ty(id)?;
            match kind {
                KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => {
                    return Ok(size_or_type);
                }
                KIND_PTR => return Ok(8),
                KIND_ARRAY => {
                    let elem = u32_at(self.types, data)?;
                    let n = u32_at(self.types, data + 8)?;
                    return Ok(self.size(elem)? * n);
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = size_or_type
                }
                _ => bail!("BTF type {id} has no size"),
            }
        }
        bail!("BTF type chain too long")
    }

    fn strip(&self, mut id: u32) -> Result<u32> {
        for _ in 0..32 {
            let (_, kind, _, _, next, _) = self.ty(id)?;
            match kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = next
                }
                _ => return Ok(id),
            }
        }
        bail!("BTF type chain too long")
    }

    /// The id of the function (e.g. a kfunc) called `name`.
    fn func_id(&self, name: &str) -> Option<u32> {
        (1..self.offsets.len() as u32).find(|&id| {
            self.ty(id)
                .is_ok_and(|(n, kind, ..)| kind == KIND_FUNC && self.name(n) == name)
        })
    }

    fn struct_id(&self, name: &str) -> Result<u32> {
        (1..self.offsets.len() as u32)
            .find(|&id| {
                self.ty(id)
                    .is_ok_and(|(n, kind, ..)| kind == KIND_STRUCT && self.name(n) == name)
            })
            .with_context(|| format!("no struct {name} in the kernel's BTF"))
    }

    /// Finds member `name` of struct/union `id`, also inside anonymous members.
    /// Returns (byte offset, size).
    fn member(&self, id: u32, name: &str, base_bits: u32) -> Result<Option<(u32, u32)>> {
        let (_, kind, kind_flag, vlen, _, data) = self.ty(id)?;
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return Ok(None);
        }
        for i in 0..vlen {
            let m = data + 12 * i;
            let (m_name, m_type, m_off) = (
                u32_at(self.types, m)?,
                u32_at(self.types, m + 4)?,
                u32_at(self.types, m + 8)?,
            );
            let bits = base_bits + if kind_flag { m_off & 0xff_ffff } else { m_off };
            let m_name = self.name(m_name);
            if m_name == name {
                ensure!(bits.is_multiple_of(8), "{name} is a bitfield");
                return Ok(Some((bits / 8, self.size(m_type)?)));
            }
            if m_name.is_empty()
                && let Some(found) = self.member(self.strip(m_type)?, name, bits)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// The offsets of the `struct sock_common` fields `reset_tcp` reads, from raw kernel BTF
/// (the bytes of `/sys/kernel/btf/vmlinux`); checks each field has the size it reads.
pub fn sock_common_offsets(raw_btf: &[u8]) -> Result<SockCommonOffsets> {
    let btf = RawBtf::parse(raw_btf)?;
    let sc = btf.struct_id("sock_common")?;
    let field = |name: &str, size: u32| -> Result<u16> {
        let (off, got) = btf
            .member(sc, name, 0)?
            .with_context(|| format!("struct sock_common has no field {name}"))?;
        ensure!(
            got == size,
            "sock_common.{name} is {got} bytes, expected {size}"
        );
        Ok(u16::try_from(off)?)
    };
    Ok(SockCommonOffsets {
        rcv_saddr: field("skc_rcv_saddr", 4)?,
        v6_rcv_saddr: field("skc_v6_rcv_saddr", 16)?,
        num: field("skc_num", 2)?,
        family: field("skc_family", 2)?,
        state: field("skc_state", 1)?,
        daddr: field("skc_daddr", 4)?,
        v6_daddr: field("skc_v6_daddr", 16)?,
        dport: field("skc_dport", 2)?,
        // possible_net_t: one `struct net *` (the kernel is built with CONFIG_NET_NS).
        net: field("skc_net", 8)?,
        net_cookie: {
            let net = btf.struct_id("net")?;
            let (off, got) = btf
                .member(net, "net_cookie", 0)?
                .context("struct net has no field net_cookie")?;
            ensure!(got == 8, "net.net_cookie is {got} bytes, expected 8");
            u16::try_from(off)?
        },
        sport: {
            let inet = btf.struct_id("inet_sock")?;
            let (off, got) = btf
                .member(inet, "inet_sport", 0)?
                .context("struct inet_sock has no field inet_sport")?;
            ensure!(got == 2, "inet_sock.inet_sport is {got} bytes, expected 2");
            u16::try_from(off)?
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: types are (kind, name, vlen-or-extra, size_or_type, extra words).
    struct BtfBuilder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl BtfBuilder {
        fn new() -> Self {
            BtfBuilder {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn push(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        fn int(&mut self, name: &str, size: u32) {
            let n = self.s(name);
            self.push(&[n, KIND_INT << 24, size, size * 8]);
        }
        fn wrap(&mut self, kind: u32, name: &str, target: u32) {
            let n = self.s(name);
            self.push(&[n, kind << 24, target]);
        }
        fn aggregate(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32)]) {
            let n = self.s(name);
            self.push(&[n, (kind << 24) | members.len() as u32, size]);
            for (m, ty, bit_off) in members {
                let mn = self.s(m);
                self.push(&[mn, *ty, *bit_off]);
            }
        }
        fn array(&mut self, elem: u32, n: u32) {
            self.push(&[0, KIND_ARRAY << 24, 0, elem, 1, n]);
        }
        fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for w in [24, 0, self.types.len() as u32, self.types.len() as u32] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            out.extend(self.types);
            out.extend(self.strings);
            out
        }
    }

    /// The layout of the kernel's sock_common, with its anonymous unions and structs.
    fn fake_sock_common(v6_at: u32) -> Vec<u8> {
        let mut b = BtfBuilder::new();
        b.int("unsigned int", 4); // 1
        b.wrap(KIND_TYPEDEF, "__be32", 1); // 2
        b.int("short unsigned int", 2); // 3
        b.wrap(KIND_TYPEDEF, "__u16", 3); // 4
        b.int("unsigned char", 1); // 5
        b.wrap(KIND_VOLATILE, "", 5); // 6
        b.array(5, 16); // 7
        b.aggregate(KIND_STRUCT, "in6_addr", 16, &[("u6_addr8", 7, 0)]); // 8
        b.aggregate(
            KIND_STRUCT,
            "",
            8,
            &[("skc_daddr", 2, 0), ("skc_rcv_saddr", 2, 32)],
        ); // 9
        b.aggregate(KIND_UNION, "", 8, &[("skc_addrpair", 1, 0), ("", 9, 0)]); // 10
        b.aggregate(
            KIND_STRUCT,
            "",
            4,
            &[("skc_dport", 4, 0), ("skc_num", 4, 16)],
        ); // 11
        b.aggregate(KIND_UNION, "", 4, &[("skc_portpair", 1, 0), ("", 11, 0)]); // 12
        b.aggregate(
            KIND_STRUCT,
            "sock_common",
            128,
            &[
                ("", 10, 0),
                ("skc_hash", 1, 64),
                ("", 12, 96),
                ("skc_family", 3, 128),
                ("skc_state", 6, 144),
                ("skc_v6_daddr", 8, 56 * 8),
                ("skc_v6_rcv_saddr", 8, v6_at * 8),
                ("skc_net", 15, 120 * 8),
            ],
        ); // 13
        b.int("long long unsigned int", 8); // 14
        b.aggregate(KIND_STRUCT, "possible_net_t", 8, &[("net", 14, 0)]); // 15
        b.aggregate(
            KIND_STRUCT,
            "net",
            200,
            &[("passive", 1, 0), ("net_cookie", 14, 96 * 8)],
        ); // 16
        b.aggregate(
            KIND_STRUCT,
            "inet_sock",
            900,
            &[("sk", 13, 0), ("inet_sport", 4, 810 * 8)],
        ); // 17
        b.build()
    }

    #[test]
    fn offsets_come_from_btf_through_anonymous_members() {
        let off = sock_common_offsets(&fake_sock_common(72)).unwrap();
        assert_eq!(
            off,
            SockCommonOffsets {
                rcv_saddr: 4,
                v6_rcv_saddr: 72,
                num: 14,
                family: 16,
                state: 18,
                daddr: 0,
                v6_daddr: 56,
                dport: 12,
                net: 120,
                net_cookie: 96,
                sport: 810,
            }
        );
        // A different kernel layout gives different offsets, not hard-coded ones.
        assert_eq!(
            sock_common_offsets(&fake_sock_common(80))
                .unwrap()
                .v6_rcv_saddr,
            80
        );
    }

    #[test]
    fn missing_struct_or_garbage_is_an_error() {
        let mut b = BtfBuilder::new();
        b.int("int", 4);
        let err = sock_common_offsets(&b.build()).unwrap_err();
        assert!(
            format!("{err:#}").contains("no struct sock_common"),
            "{err:#}"
        );
        assert!(sock_common_offsets(b"not btf at all, not at all").is_err());
    }

    #[test]
    fn offsets_of_the_running_kernel_when_it_has_btf() {
        let Ok(raw) = std::fs::read(VMLINUX_BTF) else {
            return;
        };
        let off = sock_common_offsets(&raw).unwrap();
        // Stable for years; the IPv6 address sits further down.
        assert_eq!(
            (off.rcv_saddr, off.num, off.family, off.state),
            (4, 14, 16, 18)
        );
        assert!(off.v6_rcv_saddr >= 40, "{off:?}");
        let btf = RawBtf::parse(&raw).unwrap();
        assert!(btf.func_id("bpf_sock_destroy").is_some(), "kernel >= 6.5");
        assert!(btf.func_id("no_such_kfunc_here").is_none());
    }

    fn call_sites(elf: &[u8]) -> Vec<u64> {
        let file = object::File::parse(elf).unwrap();
        let mut out = Vec::new();
        for section in file.sections() {
            let Some((start, _)) = section.file_range() else {
                continue;
            };
            for (offset, reloc) in section.relocations() {
                if let RelocationTarget::Symbol(i) = reloc.target()
                    && file.symbol_by_index(i).unwrap().name() == Ok("bpf_sock_destroy")
                {
                    out.push(start + offset);
                }
            }
        }
        out
    }

    #[test]
    fn the_embedded_object_calls_bpf_sock_destroy_and_the_patch_binds_it() {
        let elf = super::super::OBJECT;
        let sites = call_sites(elf);
        assert!(!sites.is_empty(), "reset_tcp should call bpf_sock_destroy");
        let mut asked = Vec::new();
        let out = patch_kfunc_calls(elf, |name| {
            asked.push(name.to_owned());
            Ok(0x1234_5678)
        })
        .unwrap();
        assert!(asked.iter().all(|n| n == "bpf_sock_destroy"));
        let bytes = out.bytes();
        assert_eq!(bytes.len(), elf.len());
        assert_eq!(bytes.as_ptr() as usize % 8, 0, "aligned for the ELF parser");
        for &at in &sites {
            let insn = &bytes[at as usize..at as usize + 8];
            assert_eq!(insn[0], BPF_JMP_CALL);
            assert_eq!(insn[1] >> 4, BPF_PSEUDO_KFUNC_CALL, "src_reg");
            assert_eq!(insn[1] & 0x0f, 0, "dst_reg");
            assert_eq!(&insn[2..4], &[0, 0], "off");
            assert_eq!(&insn[4..8], &0x1234_5678u32.to_le_bytes(), "imm");
        }
        // Nothing else changed.
        let changed = elf.iter().zip(bytes).filter(|(a, b)| a != b).count();
        assert!(changed <= sites.len() * 7, "{changed} bytes changed");
        assert_eq!(out.patched.len(), sites.len());
    }

    #[test]
    fn a_missing_kfunc_fails_with_the_resolvers_error() {
        let err = patch_kfunc_calls(super::super::OBJECT, |name| {
            bail!("no kfunc {name} (Linux 6.5)")
        })
        .err()
        .unwrap();
        assert!(
            format!("{err:#}").contains("no kfunc bpf_sock_destroy"),
            "{err:#}"
        );
    }

    #[test]
    fn an_object_without_relocations_is_copied_unchanged() {
        // The patch only touches relocated calls; garbage is not ELF.
        assert!(patch_kfunc_calls(b"\x7fELF garbage", |_| Ok(1)).is_err());
    }
}
