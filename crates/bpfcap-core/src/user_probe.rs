//! User-defined probes: a kprobe, uprobe, tracepoint, raw tracepoint or LSM
//! hook served by our generic programs, or a program from the user's own BPF
//! object. Each is a separate instance of its object, with its own ring, so
//! per-probe settings are load-time constants.

use std::sync::Arc;

use aya::{
    maps::{Map, MapData, PerCpuArray, RingBuf},
    Ebpf, EbpfLoader,
};
use bpfcap_common::{ProbeSettings, PROBE_DATA_MAX, PROBE_STRS, PROBE_STR_MAX};

use crate::{
    attach::{self, Link},
    btf::Btf,
    error::{Error, Result},
    event::{FieldValue, ProbeData},
    probes::ProgType,
    tracefs::{self, Field},
};

/// What a user asks to attach.
#[derive(Clone, Debug)]
pub struct UserProbeSpec {
    /// Unique name; events carry it in `probe`.
    pub name: String,
    pub ty: ProgType,
    /// Function, `binary:symbol`, `category:name`, raw tracepoint or LSM hook.
    pub target: String,
    /// For a user's own object: its path and the program to attach.
    pub object: Option<(String, String)>,
}

/// A loaded user probe.
pub struct UserProbe {
    pub id: u32,
    pub name: Arc<str>,
    pub spec: UserProbeSpec,
    /// For tracepoints: the record's fields, to decode the copied bytes.
    fields: Vec<Field>,
    /// Fields read as strings by the program, in slot order.
    str_fields: Vec<usize>,
    /// The program name, for a user's object (its records are delivered raw).
    pub program: Option<Arc<str>>,
    pub rings: Vec<RingBuf<MapData>>,
    pub lost: Option<PerCpuArray<MapData, u64>>,
    _link: Link,
    _ebpf: Ebpf,
}

fn generic_program(ty: ProgType) -> Result<&'static str> {
    Ok(match ty {
        ProgType::Kprobe => "bpfcap_u_kp",
        ProgType::Kretprobe => "bpfcap_u_krp",
        ProgType::Uprobe => "bpfcap_u_up",
        ProgType::Uretprobe => "bpfcap_u_urp",
        ProgType::Tracepoint => "bpfcap_u_tp",
        ProgType::RawTracepoint => "bpfcap_u_rtp",
        ProgType::Lsm => "bpfcap_u_lsm",
        ProgType::Fentry | ProgType::Fexit => {
            return Err(Error::Config {
                field: "type",
                value: ty.name().into(),
                allowed: "kprobe, kretprobe, uprobe, uretprobe, tracepoint, raw_tracepoint, lsm, object".into(),
            })
        }
    })
}

/// Maps of our object that a user probe's instance never uses: shrunk to one
/// entry so each instance costs little kernel memory.
const UNUSED_IN_USER_INSTANCES: &[&str] = &[
    "BPFCAP_INFLIGHT",
    "BPFCAP_CONNECTING",
    "BPFCAP_F_PIDS",
    "BPFCAP_F_UIDS",
    "BPFCAP_F_COMMS",
    "BPFCAP_F_CGROUPS",
    "BPFCAP_TRACKED",
];

impl UserProbe {
    /// Loads and attaches a user probe from our object (`object` bytes) or
    /// from the user's object file.
    pub fn load(
        id: u32,
        spec: UserProbeSpec,
        object: &[u8],
        globals: &[(&str, &[u8])],
        ring_size: u32,
        btf: Option<&Btf>,
        aya_btf: Option<&aya::Btf>,
    ) -> Result<Self> {
        if let Some((path, program)) = spec.object.clone() {
            return Self::load_object(id, spec, &path, &program, aya_btf);
        }
        let program = generic_program(spec.ty)?;
        let mut settings = ProbeSettings { probe_id: id, ..ProbeSettings::NONE };
        let mut fields = Vec::new();
        let mut str_fields = Vec::new();
        match spec.ty {
            ProgType::Kprobe | ProgType::Uprobe => {
                let known = btf.and_then(|b| b.func_nargs(&spec.target));
                if spec.ty == ProgType::Kprobe && btf.is_some() && known.is_none() {
                    return Err(Error::attach(
                        &spec.target,
                        "kprobe",
                        "no such kernel function (not in /sys/kernel/btf/vmlinux)",
                    ));
                }
                settings.nargs = known.unwrap_or(6).min(6);
            }
            ProgType::RawTracepoint => {
                settings.nargs = btf.and_then(|b| b.raw_tracepoint_nargs(&spec.target)).ok_or_else(|| {
                    Error::attach(
                        &spec.target,
                        "raw_tracepoint",
                        "no such raw tracepoint (no btf_trace_<name> in the kernel's BTF)",
                    )
                })?;
            }
            ProgType::Lsm => {
                settings.nargs =
                    btf.and_then(|b| b.func_nargs(&format!("bpf_lsm_{}", spec.target))).ok_or_else(|| {
                        Error::attach(&spec.target, "lsm", "no such LSM hook (no bpf_lsm_<hook> in the kernel's BTF)")
                    })?;
            }
            ProgType::Tracepoint => {
                let (category, name) = attach::split_tracepoint(&spec.target)?;
                fields = tracefs::tracepoint_fields(category, name)?;
                let end = fields.iter().map(|f| f.offset as usize + f.size as usize).max().unwrap_or(0);
                let dynamic = fields.iter().any(Field::is_data_loc);
                // __data_loc strings live after the fixed fields.
                settings.data_size = (if dynamic { end + 512 } else { end }).min(PROBE_DATA_MAX) as u32;
                str_fields = fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.is_string_pointer())
                    .map(|(i, _)| i)
                    .take(PROBE_STRS)
                    .collect();
                settings.nstr = str_fields.len() as u32;
                for (slot, &i) in str_fields.iter().enumerate() {
                    settings.str_off[slot] = fields[i].offset as u32;
                }
                settings.str_user = u32::from(category == "syscalls");
            }
            _ => {}
        }
        let mut loader = EbpfLoader::new();
        for (name, value) in globals {
            loader.override_global(name, *value, true);
        }
        loader.override_global("PROBE", &settings, true).map_max_entries("BPFCAP_EVENTS", ring_size);
        for m in UNUSED_IN_USER_INSTANCES {
            loader.map_max_entries(m, 1);
        }
        let mut ebpf = loader.load(object).map_err(|e| Error::load_from(program, e))?;
        let link = attach::attach(&mut ebpf, aya_btf, program, spec.ty, &spec.target, false)?;
        let ring = ebpf.take_map("BPFCAP_EVENTS").ok_or_else(|| missing_map("BPFCAP_EVENTS"))?;
        let ring = RingBuf::try_from(ring).map_err(|e| Error::load_from(program, e))?;
        let lost = ebpf.take_map("BPFCAP_LOST").and_then(|m| PerCpuArray::try_from(m).ok());
        Ok(Self {
            id,
            name: spec.name.as_str().into(),
            spec,
            fields,
            str_fields,
            program: None,
            rings: vec![ring],
            lost,
            _link: link,
            _ebpf: ebpf,
        })
    }

    /// A program of the user's own object, attached as `spec.ty` to
    /// `spec.target`; every ring buffer map of the object is read raw.
    fn load_object(
        id: u32,
        spec: UserProbeSpec,
        path: &str,
        program: &str,
        aya_btf: Option<&aya::Btf>,
    ) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| Error::Config {
            field: "object",
            value: path.into(),
            allowed: format!("a readable BPF ELF object file ({e})"),
        })?;
        if !data.starts_with(b"\x7fELF") {
            return Err(Error::Config {
                field: "object",
                value: path.into(),
                allowed: "a BPF ELF object file (this file is not ELF)".into(),
            });
        }
        let mut ebpf = Ebpf::load(&data).map_err(|e| Error::Config {
            field: "object",
            value: path.into(),
            allowed: format!("a BPF ELF object that aya can load: {}", crate::error::chain(&e)),
        })?;
        if ebpf.program(program).is_none() {
            let known: Vec<&str> = ebpf.programs().map(|(n, _)| n).collect();
            return Err(Error::Config {
                field: "program",
                value: program.into(),
                allowed: format!("a program of {path}: {}", known.join(", ")),
            });
        }
        let link = attach::attach(&mut ebpf, aya_btf, program, spec.ty, &spec.target, false)?;
        let names: Vec<String> =
            ebpf.maps().filter(|(_, m)| matches!(m, Map::RingBuf(_))).map(|(n, _)| n.to_owned()).collect();
        let rings = names.iter().filter_map(|n| ebpf.take_map(n)).filter_map(|m| RingBuf::try_from(m).ok()).collect();
        Ok(Self {
            id,
            name: spec.name.as_str().into(),
            program: Some(program.into()),
            spec,
            fields: Vec::new(),
            str_fields: Vec::new(),
            rings,
            lost: None,
            _link: link,
            _ebpf: ebpf,
        })
    }

    /// Turns the raw parts of one of this probe's records into named fields.
    pub fn resolve(&self, p: &mut ProbeData) {
        p.name = Some(self.name.clone());
        p.program = self.program.clone();
        if self.fields.is_empty() {
            return;
        }
        let strs = std::mem::take(&mut p.strings);
        let data = std::mem::take(&mut p.data);
        for f in self.fields.iter().filter(|f| !f.name.starts_with("common_")) {
            let value = match self.str_fields.iter().position(|&i| std::ptr::eq(&self.fields[i], f)) {
                Some(slot) => FieldValue::Str(strs.get(slot).cloned().unwrap_or_default()),
                None => field_value(f, &data),
            };
            p.fields.push((f.name.as_str().into(), value));
        }
    }
}

fn missing_map(name: &str) -> Error {
    Error::load(name, "map missing from the BPF object")
}

/// A field's value from a tracepoint record's bytes.
fn field_value(f: &Field, data: &[u8]) -> FieldValue {
    let (off, size) = (f.offset as usize, f.size as usize);
    let Some(raw) = data.get(off..off + size) else {
        return FieldValue::Missing;
    };
    if f.is_data_loc() {
        // u32: (length << 16) | offset of the data inside the record.
        let Some(&[a, b, c, d]) = raw.get(..4) else {
            return FieldValue::Missing;
        };
        let loc = u32::from_le_bytes([a, b, c, d]);
        let (start, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
        let bytes = data.get(start..start + len).unwrap_or_default();
        return if f.ctype.contains("char") {
            FieldValue::Str(String::from_utf8_lossy(bytes.split(|&b| b == 0).next().unwrap_or_default()).into_owned())
        } else {
            FieldValue::Bytes(bytes.to_vec())
        };
    }
    if f.is_array() {
        if f.ctype.starts_with("char") {
            return FieldValue::Str(
                String::from_utf8_lossy(raw.split(|&b| b == 0).next().unwrap_or_default()).into_owned(),
            );
        }
        return FieldValue::Bytes(raw.to_vec());
    }
    let n = size.min(8);
    if n == 0 {
        return FieldValue::Missing;
    }
    let mut buf = [0u8; 8];
    buf[..n].copy_from_slice(&raw[..n]);
    let unsigned = u64::from_le_bytes(buf);
    if f.signed {
        let shift = 64 - 8 * n as u32;
        FieldValue::Int(((unsigned << shift) as i64) >> shift)
    } else {
        FieldValue::UInt(unsigned)
    }
}

/// The string slots and the copied record of a probe record's `data`.
pub fn split_probe_data(data: &[u8], nstr: usize, data_len: usize) -> (Vec<String>, Vec<u8>) {
    let strings = (0..nstr.min(PROBE_STRS))
        .map(|i| {
            let slot = data.get(i * PROBE_STR_MAX..(i + 1) * PROBE_STR_MAX).unwrap_or_default();
            String::from_utf8_lossy(slot.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
        })
        .collect();
    let start = nstr.min(PROBE_STRS) * PROBE_STR_MAX;
    let record = data.get(start..start + data_len).unwrap_or_default().to_vec();
    (strings, record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(ctype: &str, name: &str, offset: u16, size: u16, signed: bool) -> Field {
        Field { ctype: ctype.into(), name: name.into(), offset, size, signed }
    }

    #[test]
    fn decodes_integers_arrays_and_data_loc() {
        let mut data = vec![0u8; 64];
        data[8..12].copy_from_slice(&(-5i32).to_le_bytes());
        data[12..14].copy_from_slice(&443u16.to_le_bytes());
        data[16..20].copy_from_slice(&[127, 0, 0, 1]);
        data[20..24].copy_from_slice(&((6u32 << 16) | 40).to_le_bytes());
        data[40..46].copy_from_slice(b"hello\0");
        assert_eq!(field_value(&field("int", "a", 8, 4, true), &data), FieldValue::Int(-5));
        assert_eq!(field_value(&field("__u16", "p", 12, 2, false), &data), FieldValue::UInt(443));
        assert_eq!(field_value(&field("__u8[4]", "addr", 16, 4, false), &data), FieldValue::Bytes(vec![127, 0, 0, 1]));
        assert_eq!(field_value(&field("__data_loc char[]", "s", 20, 4, false), &data), FieldValue::Str("hello".into()));
        assert_eq!(field_value(&field("int", "x", 62, 4, true), &data), FieldValue::Missing);
    }

    /// Found by fuzzing: a data_loc field shorter than its u32 and a
    /// zero-sized integer panicked (slice bounds, shift overflow).
    #[test]
    fn fields_too_small_for_their_type_are_missing() {
        let data = [0u8; 16];
        assert_eq!(field_value(&field("__data_loc char[]", "s", 0, 2, false), &data), FieldValue::Missing);
        assert_eq!(field_value(&field("__data_loc char[]", "s", 0, 0, false), &[]), FieldValue::Missing);
        assert_eq!(field_value(&field("int", "i", 4, 0, true), &data), FieldValue::Missing);
    }

    #[test]
    fn splits_string_slots_from_the_record() {
        let mut data = vec![0u8; PROBE_STR_MAX * 2 + 8];
        data[..3].copy_from_slice(b"ab\0");
        data[PROBE_STR_MAX..PROBE_STR_MAX + 2].copy_from_slice(b"c\0");
        data[2 * PROBE_STR_MAX..].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let (s, r) = split_probe_data(&data, 2, 8);
        assert_eq!(s, vec!["ab".to_string(), "c".to_string()]);
        assert_eq!(r, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    }
}

/// Fuzzing: tracepoint fields whose offset, size or data location point
/// anywhere yield a value or `Missing`, never a panic.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn field() -> impl Strategy<Value = Field> {
        let ctype = prop::sample::select(vec![
            "int",
            "u64",
            "char[16]",
            "__u8[4]",
            "__data_loc char[]",
            "__data_loc u8[]",
            "const char *",
        ]);
        let size = prop_oneof![0u16..17, any::<u16>()];
        (ctype, any::<u16>().prop_map(|o| o % 300), size, any::<bool>()).prop_map(|(c, offset, size, signed)| Field {
            ctype: c.into(),
            name: "f".into(),
            offset,
            size,
            signed,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn field_values(f in field(), data in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = field_value(&f, &data);
        }

        #[test]
        fn probe_data_splits(data in prop::collection::vec(any::<u8>(), 0..2 * PROBE_STR_MAX + 64), nstr in 0usize..8, len in any::<u16>()) {
            let (strings, record) = split_probe_data(&data, nstr, len as usize);
            prop_assert!(strings.len() <= PROBE_STRS && record.len() <= len as usize);
        }
    }
}
