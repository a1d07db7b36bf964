//! An event's documented keys and values, in one place: the Python binding
//! builds `to_dict` from [`visit`], and [`write_event`] writes JSON lines from
//! it natively, a whole batch into one buffer (no Python object per event).

use std::sync::Arc;

use crate::{
    clock,
    event::{kind_name, Event, FieldValue, Loss, Payload},
};

/// One value of an event's JSON object.
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Str(&'a str),
    String(String),
    Strs(&'a [String]),
    UInts(&'a [u64]),
    /// A user tracepoint's fields, by name.
    Fields(&'a [(Arc<str>, FieldValue)]),
    /// Bytes, written as hex.
    Hex(&'a [u8]),
    /// Nanoseconds since the Unix epoch, written as RFC 3339.
    Time(i64),
}

pub fn family_name(family: u16) -> &'static str {
    match family {
        2 => "ipv4",
        10 => "ipv6",
        _ => "other",
    }
}

/// Calls `f` with each key and value of `ev`'s JSON object, in the documented order.
pub fn visit<'a>(ev: &'a Event, wall_offset_ns: i64, f: &mut impl FnMut(&'static str, Value<'a>)) {
    let h = &ev.hdr;
    f("type", Value::Str(kind_name(h.kind)));
    f("ts_ns", Value::UInt(h.ts_ns));
    f("time", Value::Time(h.ts_ns as i64 + wall_offset_ns));
    if let Payload::Loss(Loss { count, reason, lost_kind }) = &ev.payload {
        f("count", Value::UInt(*count));
        f("reason", Value::Str(reason));
        f("lost_type", lost_kind.map_or(Value::Null, |k| Value::Str(kind_name(k))));
        return;
    }
    f("pid", Value::UInt(h.pid.into()));
    f("tid", Value::UInt(h.tid.into()));
    f("ppid", Value::UInt(h.ppid.into()));
    f("uid", Value::UInt(h.uid.into()));
    f("gid", Value::UInt(h.gid.into()));
    f(
        "comm",
        match ev.comm() {
            std::borrow::Cow::Borrowed(c) => Value::Str(c),
            std::borrow::Cow::Owned(c) => Value::String(c),
        },
    );
    f("cgroup_id", Value::UInt(h.cgroup_id));
    let cg = ev.meta.cgroup.as_deref();
    f("container_id", cg.and_then(|c| c.container_id.as_deref()).map_or(Value::Null, Value::Str));
    f("pod_uid", cg.and_then(|c| c.pod_uid.as_deref()).map_or(Value::Null, Value::Str));
    f("mnt_ns", Value::UInt(h.mnt_ns.into()));
    f("pid_ns", Value::UInt(h.pid_ns.into()));
    f("net_ns", Value::UInt(h.net_ns.into()));
    f("session", ev.meta.session.as_deref().map_or(Value::Null, Value::Str));
    match &ev.payload {
        Payload::Probe(p) => {
            f("probe", p.name.as_deref().map_or(Value::Null, Value::Str));
            if let Some(prog) = &p.program {
                f("program", Value::Str(prog));
                f("raw", Value::Hex(&p.data));
            } else if !p.fields.is_empty() {
                f("fields", Value::Fields(&p.fields));
            } else if let Some(ret) = p.ret {
                f("ret", Value::Int(ret));
            } else {
                f("args", Value::UInts(&p.args));
            }
        }
        Payload::Loss(_) => {}
        p => p.visit(f),
    }
}

/// Appends `ev` as one line of JSON (the same object as `to_dict`) to `out`.
pub fn write_event(ev: &Event, wall_offset_ns: i64, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    visit(ev, wall_offset_ns, &mut |key, value| {
        if !first {
            out.push(b',');
        }
        first = false;
        // (keys are ours: nothing in them to escape)
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        write_value(out, &value);
    });
    out.extend_from_slice(b"}\n");
}

fn write_value(out: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::Time(t) => {
            out.push(b'"');
            clock::write_rfc3339(*t, out);
            out.push(b'"');
        }
        Value::Str(s) => write_str(out, s),
        Value::String(s) => write_str(out, s),
        Value::Strs(items) => write_list(out, items.iter(), |out, s| write_str(out, s)),
        Value::UInts(items) => write_list(out, items.iter(), |out, u| write_uint(out, *u)),
        Value::Hex(bytes) => {
            out.push(b'"');
            for b in *bytes {
                out.extend_from_slice(&HEX[*b as usize * 2..*b as usize * 2 + 2]);
            }
            out.push(b'"');
        }
        Value::Fields(fields) => {
            out.push(b'{');
            for (i, (name, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, name);
                out.push(b':');
                match value {
                    FieldValue::Int(i) => write_int(out, *i),
                    FieldValue::UInt(u) => write_uint(out, *u),
                    FieldValue::Str(s) => write_str(out, s),
                    FieldValue::Bytes(b) => write_list(out, b.iter(), |out, b| write_uint(out, (*b).into())),
                    FieldValue::Missing => out.extend_from_slice(b"null"),
                }
            }
            out.push(b'}');
        }
    }
}

static HEX: &[u8; 512] = &{
    let digits = b"0123456789abcdef";
    let mut t = [0u8; 512];
    let mut i = 0;
    while i < 256 {
        t[i * 2] = digits[i >> 4];
        t[i * 2 + 1] = digits[i & 15];
        i += 1;
    }
    t
};

fn write_list<T>(out: &mut Vec<u8>, items: impl Iterator<Item = T>, mut one: impl FnMut(&mut Vec<u8>, T)) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        one(out, item);
    }
    out.push(b']');
}

/// Decimal digits without `core::fmt` (a dozen numbers per event).
pub fn write_uint(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_uint(out, n.unsigned_abs());
}

/// Bytes a JSON string must escape: quote, backslash, control characters.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A JSON string: quotes, backslashes and control characters escaped as
/// RFC 8259 asks; everything else as its UTF-8 bytes (as orjson writes them).
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !NEEDS_ESCAPE[b as usize] {
            continue;
        }
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&HEX[b as usize * 2..b as usize * 2 + 2]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfcap_common::{kind, Header};

    use crate::types::{FileWrite, IfSome};

    fn file_event(path: &str) -> Event {
        Event {
            hdr: Header { kind: kind::FILE_WRITE, pid: 7, tid: 8, ts_ns: 5, ..Header::default() },
            payload: FileWrite {
                path: path.into(),
                path_raw: IfSome(None),
                path_truncated: false,
                fd: Some(3),
                bytes: Some(11),
            }
            .into(),
            meta: Default::default(),
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut out = Vec::new();
        for n in [0i64, 7, -5, i64::MIN, i64::MAX] {
            write_int(&mut out, n);
            out.push(b' ');
        }
        write_uint(&mut out, u64::MAX);
        assert_eq!(String::from_utf8(out).unwrap(), format!("0 7 -5 {} {} {}", i64::MIN, i64::MAX, u64::MAX));
    }

    #[test]
    fn strings_are_escaped_as_json_wants() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"".as_bytes());
    }

    #[test]
    fn an_event_is_one_line_with_its_kinds_keys() {
        let mut out = Vec::new();
        write_event(&file_event("/tmp/x \"y\""), 0, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
        assert!(line.starts_with(
            "{\"type\":\"file_write\",\"ts_ns\":5,\"time\":\"1970-01-01T00:00:00.000000005Z\",\"pid\":7,\"tid\":8,"
        ));
        assert!(
            line.contains(",\"path\":\"/tmp/x \\\"y\\\"\",\"path_truncated\":false,\"fd\":3,\"bytes\":11}"),
            "{line}"
        );
        assert!(line.contains("\"container_id\":null,\"pod_uid\":null,"));
    }

    #[test]
    fn loss_notices_have_their_own_keys() {
        let mut out = Vec::new();
        write_event(&Event::loss(1, 42, "kernel_ring_full", Some(kind::FILE_READ)), 0, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.ends_with(",\"count\":42,\"reason\":\"kernel_ring_full\",\"lost_type\":\"file_read\"}\n"),
            "{line}"
        );
    }
}
