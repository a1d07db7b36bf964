//! Ring buffer records -> [`Event`]s. Checks the length first, dispatches on
//! the kind, and counts short or unknown records instead of trusting them.

use std::mem::{offset_of, size_of};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bpfcap_common::{
    flag, kind, ExecRecord, ExitRecord, FileRecord, ForkRecord, Header, NetRecord, ProbeRecord, ARGV_MAX, FILENAME_MAX,
    PROBE_ARGS, PROBE_DATA_MAX, PROBE_STRS, PROBE_STR_MAX,
};

const AF_INET6: u16 = 10;

use crate::{
    event::{Event, Meta, Payload, ProbeData},
    user_probe::split_probe_data,
};

/// Why a record was rejected; each is counted in [`DecodeStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header, or than its kind's fixed part.
    Short,
    /// `header.size` disagrees with the record's length, or a length field overruns it.
    BadSize,
    UnknownKind,
    /// A raw record from a user's own BPF object larger than [`RAW_RECORD_MAX`].
    Oversized,
}

/// The largest record of a user's own BPF object that is delivered; such
/// records are opaque to bpfcap, so their size is the only thing it can check.
pub const RAW_RECORD_MAX: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub records: u64,
    pub bytes: u64,
    pub short: u64,
    pub bad_size: u64,
    pub unknown_kind: u64,
    pub oversized: u64,
}

impl DecodeStats {
    pub fn errors(&self) -> u64 {
        self.short + self.bad_size + self.unknown_kind + self.oversized
    }

    fn count(&mut self, e: DecodeError) {
        match e {
            DecodeError::Short => self.short += 1,
            DecodeError::BadSize => self.bad_size += 1,
            DecodeError::UnknownKind => self.unknown_kind += 1,
            DecodeError::Oversized => self.oversized += 1,
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
    count(&r, rec.len(), stats);
    r
}

/// A record of a user's own BPF object, delivered as its bytes: only empty
/// and oversized records are rejected (and counted).
pub fn decode_raw(rec: &[u8], ts_ns: u64, stats: &mut DecodeStats) -> Result<Event, DecodeError> {
    let r = match rec.len() {
        0 => Err(DecodeError::Short),
        n if n > RAW_RECORD_MAX => Err(DecodeError::Oversized),
        _ => Ok(Event::raw_probe(ts_ns, rec.to_vec())),
    };
    count(&r, rec.len(), stats);
    r
}

fn count(r: &Result<Event, DecodeError>, len: usize, stats: &mut DecodeStats) {
    match r {
        Ok(_) => {
            stats.records += 1;
            stats.bytes += len as u64;
        }
        Err(e) => stats.count(*e),
    }
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
        kind::TCP_CONNECT | kind::TCP_CLOSE | kind::UDP_SEND => {
            let r: NetRecord = read(rec).ok_or(DecodeError::Short)?;
            net_payload(&r)
        }
        kind::FILE_OPEN | kind::FILE_READ | kind::FILE_WRITE | kind::EXEC_CHECK | kind::FILE_PERMISSION => {
            file_payload(&hdr, rec)?
        }
        kind::PROBE => probe_payload(rec)?,
        _ => return Err(DecodeError::UnknownKind),
    };
    Ok(Event { hdr, payload, meta: Meta::default() })
}

fn ip(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*raw))
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    }
}

fn net_payload(r: &NetRecord) -> Payload {
    let no_source = r.hdr.flags & flag::NO_SOURCE != 0;
    Payload::Net {
        family: r.family,
        source: (!no_source).then(|| (ip(r.family, &r.saddr), r.sport)),
        daddr: ip(r.family, &r.daddr),
        dport: r.dport,
        bytes: (r.hdr.kind == kind::UDP_SEND).then_some(r.bytes),
    }
}

fn file_payload(hdr: &Header, rec: &[u8]) -> Result<Payload, DecodeError> {
    let data_off = offset_of!(FileRecord, data);
    if rec.len() < data_off {
        return Err(DecodeError::Short);
    }
    let fixed: FileFixed = read(rec).ok_or(DecodeError::Short)?;
    let len = fixed.path_len as usize;
    let data = rec.get(data_off..data_off + len).ok_or(DecodeError::BadSize)?;
    let truncated = hdr.flags & flag::PATH_TRUNCATED != 0;
    let path = if hdr.flags & flag::PATH_IS_STRING != 0 {
        str_until_nul(data)
    } else {
        // Components come leaf first; a complete path starts at the root.
        let parts: Vec<String> = data
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let joined = parts.into_iter().rev().collect::<Vec<_>>().join("/");
        if truncated {
            joined
        } else {
            format!("/{joined}")
        }
    };
    let has = |f: u16| hdr.flags & f == 0;
    Ok(Payload::File {
        path,
        path_truncated: truncated,
        fd: has(flag::NO_FD).then_some(fixed.fd),
        flags: has(flag::NO_FLAGS).then_some(fixed.flags),
        bytes: has(flag::NO_BYTES).then_some(fixed.bytes),
    })
}

fn probe_payload(rec: &[u8]) -> Result<Payload, DecodeError> {
    let fixed: ProbeFixed = read(rec).ok_or(DecodeError::Short)?;
    let data = &rec[offset_of!(ProbeRecord, data)..];
    let nstr = fixed.nstr as usize;
    let data_len = fixed.data_len as usize;
    if nstr > PROBE_STRS || data_len > PROBE_DATA_MAX || nstr * PROBE_STR_MAX + data_len > data.len() {
        return Err(DecodeError::BadSize);
    }
    let (strings, data) = split_probe_data(data, nstr, data_len);
    Ok(Payload::Probe(Box::new(ProbeData {
        probe_id: fixed.probe_id,
        args: fixed.args[..(fixed.nargs as usize).min(PROBE_ARGS)].to_vec(),
        ret: (fixed.has_ret != 0).then_some(fixed.ret),
        strings,
        data,
        ..ProbeData::default()
    })))
}

/// The fixed part of a [`ProbeRecord`].
#[repr(C)]
#[derive(Clone, Copy)]
struct ProbeFixed {
    hdr: Header,
    probe_id: u32,
    nargs: u16,
    has_ret: u16,
    args: [u64; PROBE_ARGS],
    ret: i64,
    data_len: u16,
    nstr: u16,
    _pad: u32,
}

const _: () = assert!(size_of::<ProbeFixed>() == offset_of!(ProbeRecord, data));

/// The fixed part of a [`FileRecord`] (the record itself is trimmed to its path).
#[repr(C)]
#[derive(Clone, Copy)]
struct FileFixed {
    hdr: Header,
    fd: i32,
    flags: u32,
    bytes: i64,
    path_len: u16,
    path_depth: u16,
    _pad: u32,
}

const _: () = assert!(size_of::<FileFixed>() == offset_of!(FileRecord, data));

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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u16, size: usize) -> Header {
        Header {
            kind,
            size: size as u32,
            pid: 42,
            tid: 43,
            comm: *b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            ..Header::default()
        }
    }

    fn bytes<T>(v: &T) -> Vec<u8> {
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn exec(filename: &[u8], argv: &[u8], flags: u16) -> Vec<u8> {
        let mut out = bytes(&header(kind::PROCESS_EXEC, 0));
        out.extend_from_slice(&(filename.len() as u16).to_le_bytes());
        out.extend_from_slice(&(argv.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(filename);
        out.extend_from_slice(argv);
        let size = out.len() as u32;
        out[4..8].copy_from_slice(&size.to_le_bytes());
        out[2..4].copy_from_slice(&flags.to_le_bytes());
        out
    }

    #[test]
    fn exec_splits_argv_and_keeps_flags() {
        let mut st = DecodeStats::default();
        let ev = decode(&exec(b"/bin/ls\0", b"ls\0-l\0\0", 0), &mut st).unwrap();
        assert_eq!((ev.hdr.pid, ev.hdr.tid, ev.comm_str().as_str()), (42, 43, "sh"));
        assert_eq!(
            ev.payload,
            Payload::Exec {
                filename: "/bin/ls".into(),
                argv: vec!["ls".into(), "-l".into(), "".into()],
                filename_truncated: false,
                argv_truncated: false
            }
        );
        let ev = decode(&exec(b"/x\0", b"a\0b", flag::ARGV_TRUNCATED), &mut st).unwrap();
        assert!(matches!(ev.payload, Payload::Exec { argv_truncated: true, ref argv, .. } if argv == &["a", "b"]));
        assert_eq!(st.records, 2);
    }

    #[test]
    fn exit_codes_and_signals() {
        let mut st = DecodeStats::default();
        let mut r = ExitRecord { hdr: header(kind::PROCESS_EXIT, size_of::<ExitRecord>()), ..Default::default() };
        r.exit_code = 7 << 8;
        assert_eq!(
            decode(&bytes(&r), &mut st).unwrap().payload,
            Payload::Exit { exit_code: Some(7), signal: None, core_dumped: false }
        );
        r.exit_code = 0x80 | 11;
        assert_eq!(
            decode(&bytes(&r), &mut st).unwrap().payload,
            Payload::Exit { exit_code: None, signal: Some(11), core_dumped: true }
        );
    }

    #[test]
    fn malformed_records_are_counted() {
        let mut st = DecodeStats::default();
        let good = exec(b"/bin/ls\0", b"ls\0", 0);
        assert_eq!(decode(&good[..10], &mut st), Err(DecodeError::Short));
        assert_eq!(decode(&good[..good.len() - 1], &mut st), Err(DecodeError::BadSize));
        let mut lying = good.clone();
        let at = offset_of!(ExecRecord, filename_len);
        lying[at..at + 2].copy_from_slice(&600u16.to_le_bytes()); // filename_len beyond the record
        assert_eq!(decode(&lying, &mut st), Err(DecodeError::BadSize));
        let unknown = bytes(&header(999, size_of::<Header>()));
        assert_eq!(decode(&unknown, &mut st), Err(DecodeError::UnknownKind));
        let short_fork = bytes(&header(kind::PROCESS_FORK, size_of::<Header>()));
        assert_eq!(decode(&short_fork, &mut st), Err(DecodeError::Short));
        assert_eq!((st.short, st.bad_size, st.unknown_kind, st.records), (2, 2, 1, 0));
    }
}

#[cfg(test)]
mod size_tests {
    /// Events are moved by value into Python objects: keep them small.
    #[test]
    fn event_is_small() {
        assert!(std::mem::size_of::<crate::Event>() <= 176, "{}", std::mem::size_of::<crate::Event>());
    }
}

/// Fuzzing: whatever the bytes, the decoder returns an event or a counted
/// error, never panics, and never reads past the record.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() }
    }

    /// Records shaped like the real ones: a header whose kind is known (or
    /// nearly), whose size is honest or not, and random bytes after it.
    fn record() -> impl Strategy<Value = Vec<u8>> {
        let len = prop_oneof![0usize..size_of::<Header>() + 8, 0usize..2048];
        (
            0u16..=kind::COUNT as u16 + 1,
            any::<u16>(),
            any::<Option<u32>>(),
            len.prop_flat_map(|n| prop::collection::vec(any::<u8>(), n)),
        )
            .prop_map(|(k, flags, size, mut rec)| {
                if rec.len() >= 8 {
                    let size = size.unwrap_or(rec.len() as u32);
                    rec[..2].copy_from_slice(&k.to_le_bytes());
                    rec[2..4].copy_from_slice(&flags.to_le_bytes());
                    rec[4..8].copy_from_slice(&size.to_le_bytes());
                }
                rec
            })
    }

    fn check(rec: &[u8]) {
        let mut st = DecodeStats::default();
        match decode(rec, &mut st) {
            Ok(ev) => {
                assert_eq!((st.records, st.errors()), (1, 0));
                assert!(ev.hdr.size as usize <= rec.len() && ev.hdr.kind < kind::LOSS);
                if let Payload::Exec { filename, argv, .. } = &ev.payload {
                    assert!(filename.len() <= FILENAME_MAX * 3 && argv.len() <= ARGV_MAX + 1);
                }
            }
            Err(_) => assert_eq!((st.records, st.errors()), (0, 1)),
        }
        let mut st = DecodeStats::default();
        let raw = decode_raw(rec, 1, &mut st);
        assert_eq!(raw.is_ok(), !rec.is_empty() && rec.len() <= RAW_RECORD_MAX);
        assert_eq!(st.records + st.errors(), 1);
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn structured_records(rec in record()) {
            check(&rec);
        }

        #[test]
        fn arbitrary_bytes(rec in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&rec);
        }
    }
}
