//! Decoded events: the common fields of every record plus a per-kind payload.

use std::sync::Arc;

use bpfcap_common::{kind, Header, COMM_LEN};

use crate::{
    cgroups::CgroupInfo,
    types::{type_def, TYPES},
};

pub use crate::types::{Loss, Payload};

/// The name of a kind: a built-in type's, `probe` or `loss`.
pub fn kind_name(kind: u16) -> &'static str {
    match kind {
        kind::PROBE => "probe",
        kind::LOSS => "loss",
        k => type_def(k).map_or("unknown", |t| t.name),
    }
}

pub fn kind_by_name(name: &str) -> Option<u16> {
    match name {
        "probe" => Some(kind::PROBE),
        "loss" => Some(kind::LOSS),
        n => TYPES.iter().find(|t| t.name == n).map(|t| t.kind),
    }
}

/// Every kind by name, in id order: the built-in types, `probe`, `loss`.
pub fn kind_names() -> impl Iterator<Item = (u16, &'static str)> {
    TYPES.iter().map(|t| (t.kind, t.name)).chain([(kind::PROBE, "probe"), (kind::LOSS, "loss")])
}

/// A value of a tracepoint field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue {
    Int(i64),
    UInt(u64),
    Str(String),
    Bytes(Vec<u8>),
    /// The record was too short to hold the field.
    Missing,
}

/// The payload of a user-defined probe's event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeData {
    pub probe_id: u32,
    /// The probe's name (set when the record is matched to its probe).
    pub name: Option<Arc<str>>,
    /// For a user's own object: the program that produced the record.
    pub program: Option<Arc<str>>,
    /// Integer arguments (kprobe, uprobe, raw tracepoint, LSM).
    pub args: Vec<u64>,
    /// Return value (kretprobe, uretprobe).
    pub ret: Option<i64>,
    /// Tracepoint fields, decoded by name.
    pub fields: Vec<(Arc<str>, FieldValue)>,
    /// Strings read from pointer fields (before decoding into `fields`).
    pub strings: Vec<String>,
    /// The copied tracepoint record (before decoding), or a user object's raw record.
    pub data: Vec<u8>,
}

/// What userspace adds to an event: its session label and container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub session: Option<Arc<str>>,
    /// What the event's cgroup path says (None when the cgroup is gone).
    pub cgroup: Option<Arc<CgroupInfo>>,
}

/// A decoded event: the record's common header plus its kind's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub hdr: Header,
    pub payload: Payload,
    pub meta: Meta,
}

impl Event {
    pub fn kind(&self) -> u16 {
        self.hdr.kind
    }

    /// `comm` up to its NUL, lossily decoded.
    pub fn comm(&self) -> std::borrow::Cow<'_, str> {
        let end = self.hdr.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.hdr.comm[..end])
    }

    pub fn comm_str(&self) -> String {
        self.comm().into_owned()
    }

    /// A record of a user's own BPF object, delivered as it is.
    pub fn raw_probe(ts_ns: u64, data: Vec<u8>) -> Self {
        Self {
            hdr: Header { kind: kind::PROBE, ts_ns, ..Header::default() },
            payload: Payload::Probe(Box::new(ProbeData { data, ..ProbeData::default() })),
            meta: Meta::default(),
        }
    }

    pub fn loss(ts_ns: u64, count: u64, reason: &'static str, lost_kind: Option<u16>) -> Self {
        Self {
            hdr: Header { kind: kind::LOSS, ts_ns, ..Header::default() },
            payload: Payload::Loss(Loss { count, reason, lost_kind }),
            meta: Meta::default(),
        }
    }
}
