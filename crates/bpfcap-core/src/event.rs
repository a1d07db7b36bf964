//! Decoded events: the common fields of every record plus a per-kind payload.

use std::{net::IpAddr, sync::Arc};

use bpfcap_common::{kind, Header, COMM_LEN};

use crate::cgroups::CgroupInfo;

/// Event kinds by name, in id order; the ids are part of the public contract.
pub const KIND_NAMES: &[(u16, &str)] = &[
    (kind::PROCESS_EXEC, "process_exec"),
    (kind::PROCESS_EXIT, "process_exit"),
    (kind::PROCESS_FORK, "process_fork"),
    (kind::TCP_CONNECT, "tcp_connect"),
    (kind::TCP_CLOSE, "tcp_close"),
    (kind::UDP_SEND, "udp_send"),
    (kind::FILE_OPEN, "file_open"),
    (kind::FILE_READ, "file_read"),
    (kind::FILE_WRITE, "file_write"),
    (kind::EXEC_CHECK, "exec_check"),
    (kind::FILE_PERMISSION, "file_permission"),
    (kind::PROBE, "probe"),
    (kind::LOSS, "loss"),
];

pub fn kind_name(kind: u16) -> &'static str {
    KIND_NAMES.iter().find(|(k, _)| *k == kind).map_or("unknown", |(_, n)| n)
}

pub fn kind_by_name(name: &str) -> Option<u16> {
    KIND_NAMES.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Exec {
        filename: String,
        argv: Vec<String>,
        filename_truncated: bool,
        argv_truncated: bool,
    },
    Exit {
        /// The exit status (0-255) when the process exited normally.
        exit_code: Option<u8>,
        /// The signal that killed it, if any.
        signal: Option<u8>,
        core_dumped: bool,
    },
    Fork {
        child_pid: u32,
    },
    /// `tcp_connect`, `tcp_close`, `udp_send`.
    Net {
        /// `AF_INET` (2) or `AF_INET6` (10).
        family: u16,
        /// None when the mechanism cannot see the source (`udp_send`).
        source: Option<(IpAddr, u16)>,
        daddr: IpAddr,
        dport: u16,
        /// Bytes sent (`udp_send`).
        bytes: Option<i64>,
    },
    /// `file_open`, `file_read`, `file_write`, `exec_check`, `file_permission`.
    File {
        /// Absolute when complete; the filename as given for `exec_check`.
        path: String,
        path_truncated: bool,
        fd: Option<i32>,
        /// Open flags (`file_open`) or permission mask (`file_permission`).
        flags: Option<u32>,
        bytes: Option<i64>,
    },
    /// A user-defined probe's event (boxed: rare, and big).
    Probe(Box<ProbeData>),
    /// In-band notice that events were lost; produced in userspace.
    Loss {
        count: u64,
        reason: &'static str,
        /// The kind that was lost, when known.
        lost_kind: Option<u16>,
    },
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
            payload: Payload::Loss { count, reason, lost_kind },
            meta: Meta::default(),
        }
    }
}
