//! Ring buffer records -> [`Event`]s. Checks the length first, dispatches on
//! the kind, and counts short or unknown records instead of trusting them.

use std::mem::{offset_of, size_of};

use bpfcap_common::{flag, kind, ExecRecord, ExitRecord, ForkRecord, Header, ARGV_MAX, FILENAME_MAX};

use crate::event::{Event, Payload};

/// Why a record was rejected; each is counted in [`DecodeStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header, or than its kind's fixed part.
    Short,
    /// `header.size` disagrees with the record's length, or a length field overruns it.
    BadSize,
    UnknownKind,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub records: u64,
    pub bytes: u64,
    pub short: u64,
    pub bad_size: u64,
    pub unknown_kind: u64,
}

impl DecodeStats {
    pub fn errors(&self) -> u64 {
        self.short + self.bad_size + self.unknown_kind
    }

    fn count(&mut self, e: DecodeError) {
        match e {
            DecodeError::Short => self.short += 1,
            DecodeError::BadSize => self.bad_size += 1,
            DecodeError::UnknownKind => self.unknown_kind += 1,
        }
    }
}

/// Reads a `T` from the start of `b`; ring samples are 8-aligned, but recorded
/// records in tests need not be.
fn read<T: Copy>(b: &[u8]) -> Option<T> {
    (b.len() >= size_of::<T>()).then(|| unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

fn str_until_nul(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Decodes one record; updates `stats` either way.
pub fn decode(rec: &[u8], stats: &mut DecodeStats) -> Result<Event, DecodeError> {
    let r = decode_inner(rec);
    match &r {
        Ok(_) => {
            stats.records += 1;
            stats.bytes += rec.len() as u64;
        }
        Err(e) => stats.count(*e),
    }
    r
}

fn decode_inner(rec: &[u8]) -> Result<Event, DecodeError> {
    let hdr: Header = read(rec).ok_or(DecodeError::Short)?;
    let size = hdr.size as usize;
    if size < size_of::<Header>() || size > rec.len() {
        return Err(DecodeError::BadSize);
    }
    let rec = &rec[..size];
    let payload = match hdr.kind {
        kind::PROCESS_EXEC => exec_payload(&hdr, rec)?,
        kind::PROCESS_EXIT => {
            let r: ExitRecord = read(rec).ok_or(DecodeError::Short)?;
            let sig = (r.exit_code & 0x7f) as u8;
            Payload::Exit {
                exit_code: (sig == 0).then_some(((r.exit_code >> 8) & 0xff) as u8),
                signal: (sig != 0).then_some(sig),
                core_dumped: r.exit_code & 0x80 != 0,
            }
        }
        kind::PROCESS_FORK => {
            let r: ForkRecord = read(rec).ok_or(DecodeError::Short)?;
            Payload::Fork { child_pid: r.child_pid }
        }
        _ => return Err(DecodeError::UnknownKind),
    };
    Ok(Event {
        kind: hdr.kind,
        ts_ns: hdr.ts_ns,
        cgroup_id: hdr.cgroup_id,
        pid: hdr.pid,
        tid: hdr.tid,
        ppid: hdr.ppid,
        uid: hdr.uid,
        gid: hdr.gid,
        mnt_ns: hdr.mnt_ns,
        pid_ns: hdr.pid_ns,
        comm: hdr.comm,
        payload,
    })
}

fn exec_payload(hdr: &Header, rec: &[u8]) -> Result<Payload, DecodeError> {
    let data_off = offset_of!(ExecRecord, data);
    if rec.len() < data_off {
        return Err(DecodeError::Short);
    }
    let len_at = |off: usize| u16::from_le_bytes([rec[off], rec[off + 1]]) as usize;
    let fname_len = len_at(offset_of!(ExecRecord, filename_len));
    let argv_len = len_at(offset_of!(ExecRecord, argv_len));
    let data = &rec[data_off..];
    if fname_len > FILENAME_MAX || argv_len > ARGV_MAX || fname_len + argv_len > data.len() {
        return Err(DecodeError::BadSize);
    }
    let argv_bytes = &data[fname_len..fname_len + argv_len];
    let mut argv: Vec<String> =
        argv_bytes.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    // arg_end points past the last NUL, so a complete argv ends in an empty piece.
    if argv.last().is_some_and(String::is_empty) {
        argv.pop();
    }
    Ok(Payload::Exec {
        filename: str_until_nul(&data[..fname_len]),
        argv,
        filename_truncated: hdr.flags & flag::FILENAME_TRUNCATED != 0,
        argv_truncated: hdr.flags & (flag::ARGV_TRUNCATED | flag::ARGV_UNREADABLE) != 0,
    })
}
