//! Decoded events: the common fields of every record plus a per-kind payload.

use std::net::IpAddr;

use bpfcap_common::{kind, Header, COMM_LEN};

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
    /// In-band notice that events were lost; produced in userspace.
    Loss {
        count: u64,
        reason: &'static str,
        /// The kind that was lost, when known.
        lost_kind: Option<u16>,
    },
}

/// A decoded event: the record's common header plus its kind's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub hdr: Header,
    pub payload: Payload,
}

impl Event {
    pub fn kind(&self) -> u16 {
        self.hdr.kind
    }

    /// `comm` up to its NUL, lossily decoded.
    pub fn comm_str(&self) -> String {
        let end = self.hdr.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.hdr.comm[..end]).into_owned()
    }

    pub fn loss(ts_ns: u64, count: u64, reason: &'static str, lost_kind: Option<u16>) -> Self {
        Self {
            hdr: Header { kind: kind::LOSS, ts_ns, ..Header::default() },
            payload: Payload::Loss { count, reason, lost_kind },
        }
    }
}
