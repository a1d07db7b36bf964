//! A small reader for the kernel's BTF, enough to find struct field offsets.
//!
//! aya parses BTF too, but keeps the type graph private; we need only
//! "byte offset of `a.b.c` in `struct s`", including fields that sit inside
//! anonymous structs and unions (common in `task_struct` and `mm_struct`).

use std::collections::HashMap;

use crate::error::Error;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name: u32,
    /// size for INT/STRUCT/UNION/ENUM, referenced type for PTR/TYPEDEF/modifiers/FUNC.
    size_or_type: u32,
    /// Members (STRUCT/UNION) or parameters (FUNC_PROTO), by count.
    vlen: u32,
    members: Vec<Member>,
}

/// Parsed BTF: the type table plus a name index of structs and unions.
pub struct Btf {
    strings: Vec<u8>,
    /// `types[id]`; id 0 is `void`.
    types: Vec<Type>,
    by_name: HashMap<String, u32>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, Error> {
        const PATH: &str = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(PATH).map_err(|source| Error::Btf {
            reason: format!("cannot read {PATH}: {source} (kernel built without CONFIG_DEBUG_INFO_BTF?)"),
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        let bad = |what: &str| Error::Btf { reason: format!("malformed BTF: {what}") };
        if u16_at(data, 0) != Some(MAGIC) {
            return Err(bad("bad magic (only little-endian BTF is supported)"));
        }
        let hdr_len = u32_at(data, 4).ok_or_else(|| bad("short header"))? as usize;
        let type_off = u32_at(data, 8).ok_or_else(|| bad("short header"))? as usize;
        let type_len = u32_at(data, 12).ok_or_else(|| bad("short header"))? as usize;
        let str_off = u32_at(data, 16).ok_or_else(|| bad("short header"))? as usize;
        let str_len = u32_at(data, 20).ok_or_else(|| bad("short header"))? as usize;
        let types_start = hdr_len + type_off;
        let type_data =
            data.get(types_start..types_start + type_len).ok_or_else(|| bad("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| bad("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type { kind: 0, name: 0, size_or_type: 0, vlen: 0, members: Vec::new() }];
        let mut pos = 0;
        while pos < type_data.len() {
            let name = u32_at(type_data, pos).ok_or_else(|| bad("truncated type"))?;
            let info = u32_at(type_data, pos + 4).ok_or_else(|| bad("truncated type"))?;
            let size_or_type = u32_at(type_data, pos + 8).ok_or_else(|| bad("truncated type"))?;
            pos += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC
                | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = pos + i * 12;
                        let offset = u32_at(type_data, m + 8).ok_or_else(|| bad("truncated member"))?;
                        members.push(Member {
                            name: u32_at(type_data, m).ok_or_else(|| bad("truncated member"))?,
                            type_id: u32_at(type_data, m + 4).ok_or_else(|| bad("truncated member"))?,
                            // With kind_flag the top 8 bits hold a bitfield size.
                            bit_offset: if kind_flag { offset & 0x00ff_ffff } else { offset },
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                other => return Err(bad(&format!("unknown type kind {other}"))),
            };
            pos += extra;
            types.push(Type { kind, name, size_or_type, vlen: vlen as u32, members });
        }

        let mut btf = Self { strings, types, by_name: HashMap::new() };
        for (id, t) in btf.types.iter().enumerate() {
            if (t.kind == KIND_STRUCT || t.kind == KIND_UNION) && t.name != 0 {
                let name = btf.name(t.name).to_owned();
                // Keep the first definition: duplicates are identical in vmlinux.
                btf.by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.size_or_type,
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset and type of `name` in struct/union `t`, looking through
    /// anonymous struct/union members (at most 8 deep: malformed BTF may
    /// make an anonymous member contain itself).
    fn find_member(&self, t: &Type, name: &str, depth: u32) -> Option<(u32, u32)> {
        for m in &t.members {
            if m.name != 0 {
                if self.name(m.name) == name {
                    return Some((m.bit_offset, m.type_id));
                }
                continue;
            }
            let inner = self.resolve(m.type_id)?;
            if depth < 8 && (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION) {
                if let Some((off, ty)) = self.find_member(inner, name, depth + 1) {
                    return Some((m.bit_offset.checked_add(off)?, ty));
                }
            }
        }
        None
    }

    /// Byte offset of a dotted field path (`"ns.inum"`) in `struct s`, or
    /// `None` when this kernel has no such field.
    pub fn field_offset(&self, s: &str, path: &str) -> Option<u32> {
        let mut t = self.resolve(*self.by_name.get(s)?)?;
        let mut bits = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (off, ty) = self.find_member(t, part, 0)?;
            bits = off.checked_add(bits)?;
            if parts.peek().is_some() {
                t = self.resolve(ty)?;
                if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
                    return None;
                }
            }
        }
        (bits % 8 == 0).then_some(bits / 8)
    }

    /// Size in bytes of `struct s`.
    pub fn struct_size(&self, s: &str) -> Option<u32> {
        self.resolve(*self.by_name.get(s)?).map(|t| t.size_or_type)
    }

    /// Parameters of kernel function `name`, or None if BTF does not know it.
    pub fn func_nargs(&self, name: &str) -> Option<u32> {
        let func = self.types.iter().find(|t| t.kind == KIND_FUNC && self.name(t.name) == name)?;
        self.types.get(func.size_or_type as usize).filter(|t| t.kind == KIND_FUNC_PROTO).map(|t| t.vlen)
    }

    /// Arguments of raw tracepoint `name` (from `btf_trace_<name>`, minus its
    /// leading `void *` context), or None if BTF does not know it.
    pub fn raw_tracepoint_nargs(&self, name: &str) -> Option<u32> {
        let typedef = format!("btf_trace_{name}");
        let t = self.types.iter().find(|t| t.kind == KIND_TYPEDEF && self.name(t.name) == typedef)?;
        let ptr = self.types.get(t.size_or_type as usize).filter(|t| t.kind == KIND_PTR)?;
        let proto = self.types.get(ptr.size_or_type as usize).filter(|t| t.kind == KIND_FUNC_PROTO)?;
        proto.vlen.checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct inner { int a; int b; }` and
    /// `struct outer { long x; union { int y; struct inner in; }; }`.
    pub(super) fn sample() -> Vec<u8> {
        let strings = b"\0int\0a\0b\0inner\0outer\0x\0y\0in\0long\0".to_vec();
        let s = |name: &str| {
            let needle = format!("\0{name}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() as u32 + 1
        };
        let mut t = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| t.extend_from_slice(&w.to_le_bytes()));
        // 1: int
        push(&[s("int"), KIND_INT << 24, 4, 0x0100_0020]);
        // 2: long
        push(&[s("long"), KIND_INT << 24, 8, 0x0100_0040]);
        // 3: struct inner { int a @0; int b @32 }
        push(&[s("inner"), KIND_STRUCT << 24 | 2, 8, s("a"), 1, 0, s("b"), 1, 32]);
        // 4: anonymous union { int y; struct inner in; }
        push(&[0, KIND_UNION << 24 | 2, 8, s("y"), 1, 0, s("in"), 3, 0]);
        // 5: struct outer { long x @0; union @64 }
        push(&[s("outer"), KIND_STRUCT << 24 | 2, 16, s("x"), 2, 0, 0, 4, 64]);
        btf_blob(&t, &strings)
    }

    /// A BTF blob: header, then the type and string sections as given.
    pub(super) fn btf_blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn finds_fields_through_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.field_offset("outer", "x"), Some(0));
        assert_eq!(btf.field_offset("outer", "y"), Some(8));
        assert_eq!(btf.field_offset("outer", "in.b"), Some(12));
        assert_eq!(btf.field_offset("inner", "b"), Some(4));
        assert_eq!(btf.field_offset("outer", "nope"), None);
        assert_eq!(btf.field_offset("nope", "x"), None);
        assert_eq!(btf.struct_size("outer"), Some(16));
    }

    /// Found by fuzzing: an anonymous member whose type is its own struct
    /// made the lookup recurse until the stack overflowed.
    #[test]
    fn an_anonymous_member_containing_itself() {
        let strings = b"\0a\0b\0";
        let t: Vec<u8> = [1u32, KIND_STRUCT << 24 | 1, 8, 0, 1, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut blob = MAGIC.to_le_bytes().to_vec();
        blob.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, t.len() as u32, t.len() as u32, strings.len() as u32] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&t);
        blob.extend_from_slice(strings);
        assert_eq!(Btf::parse(&blob).unwrap().field_offset("a", "b"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all").is_err());
        let mut blob = sample();
        blob.truncate(40);
        assert!(Btf::parse(&blob).is_err());
    }
}

/// Fuzzing: malformed BTF (type graphs with cycles, sections out of bounds,
/// members that overrun) is an error or answers `None`, never a panic or a hang.
#[cfg(test)]
mod fuzz {
    use proptest::{prelude::*, sample::Index};

    use super::*;

    /// Names "a" (1), "b" (3) and "btf_trace_a" (5); 99 is out of bounds.
    const STRINGS: &[u8] = b"\0a\0b\0btf_trace_a\0";

    /// One type: name, info and size/type, then 0-3 members of 3 words each,
    /// whether or not the kind has members (so sections may misalign).
    fn ty() -> impl Strategy<Value = Vec<u32>> {
        let name = || prop::sample::select(vec![0u32, 1, 3, 5, 99]);
        let member = (name(), 0u32..8, any::<u32>());
        (name(), 0u32..21, 0u32..4, any::<bool>(), 0u32..8, prop::collection::vec(member, 0..4)).prop_map(
            |(name, kind, vlen, kind_flag, size_or_type, members)| {
                let mut w = vec![name, u32::from(kind_flag) << 31 | kind << 24 | vlen, size_or_type];
                members.into_iter().for_each(|(n, t, o)| w.extend([n, t, o]));
                w
            },
        )
    }

    fn blob(types: &[Vec<u32>]) -> Vec<u8> {
        let t: Vec<u8> = types.iter().flatten().flat_map(|w| w.to_le_bytes()).collect();
        super::tests::btf_blob(&t, STRINGS)
    }

    fn query(btf: &Btf) {
        for s in ["a", "b"] {
            for path in ["a", "b", "a.b", "b.a.a"] {
                let _ = btf.field_offset(s, path);
            }
            let _ = (btf.struct_size(s), btf.func_nargs(s));
        }
        let _ = btf.raw_tracepoint_nargs("a");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn structured(types in prop::collection::vec(ty(), 0..6)) {
            if let Ok(btf) = Btf::parse(&blob(&types)) {
                query(&btf);
            }
        }

        #[test]
        fn mutated(edits in prop::collection::vec((any::<Index>(), any::<u8>()), 0..6), cut in any::<Index>()) {
            let mut b = super::tests::sample();
            for (at, v) in edits {
                let i = at.index(b.len());
                b[i] = v;
            }
            b.truncate(cut.index(b.len() + 1));
            if let Ok(btf) = Btf::parse(&b) {
                query(&btf);
            }
        }
    }
}
