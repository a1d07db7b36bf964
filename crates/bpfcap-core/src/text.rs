//! Events as aligned text lines for people (`bpfcap --format text`):
//! time of day (UTC), type, pid, ppid, comm, then what the event is about.
//! Written natively, a whole batch into one buffer, as JSON lines are.
//!
//! argv, paths and comm come from other processes: control characters
//! (a newline would forge a line, an escape sequence would drive the reader's
//! terminal) and backslashes are written as `\xNN`.

use std::{fmt::Write as _, net::IpAddr};

use crate::{
    event::{kind_name, Event, FieldValue, Loss, Payload},
    json::{family_name, Value},
    types::Family,
};

/// Appends `ev` as one line (ending in `\n`) to `out`.
pub fn write_line(ev: &Event, wall_offset_ns: i64, out: &mut String) {
    let h = &ev.hdr;
    let unix_ns = h.ts_ns as i64 + wall_offset_ns;
    let sod = unix_ns.div_euclid(1_000_000_000).rem_euclid(86_400);
    let micros = unix_ns.rem_euclid(1_000_000_000) / 1000;
    let _ =
        write!(out, "{:02}:{:02}:{:02}.{micros:06} {:<15} ", sod / 3600, sod / 60 % 60, sod % 60, kind_name(h.kind));
    if let Payload::Loss(Loss { count, reason, lost_kind }) = &ev.payload {
        let what = lost_kind.map_or("all types", kind_name);
        let _ = writeln!(out, "{count} events lost ({reason}, {what})");
        return;
    }
    let _ = write!(out, "{:>7} {:>7} ", h.pid, h.ppid);
    let start = out.len();
    clean(out, &ev.comm());
    let width = out[start..].chars().count();
    out.extend(std::iter::repeat_n(' ', 17usize.saturating_sub(width)));
    detail(ev, out);
    let trimmed = out.trim_end_matches(' ').len();
    out.truncate(trimmed);
    out.push('\n');
}

fn detail(ev: &Event, out: &mut String) {
    match &ev.payload {
        Payload::Exec(e) => {
            if e.argv.is_empty() {
                clean(out, &e.filename);
            }
            for (i, a) in e.argv.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                clean(out, a);
            }
            if e.argv_truncated {
                out.push_str(" ...");
            }
        }
        Payload::Exit(e) => {
            match (e.exit_code, e.signal) {
                (_, Some(s)) => _ = write!(out, "signal={s}"),
                (Some(c), None) => _ = write!(out, "exit_code={c}"),
                (None, None) => out.push_str("exit_code=?"),
            }
            if e.core_dumped {
                out.push_str(" (core dumped)");
            }
        }
        Payload::TcpConnect(c) => connection(out, c.saddr.zip(c.sport), &c.daddr, c.dport, c.family),
        Payload::TcpClose(c) => connection(out, c.saddr.zip(c.sport), &c.daddr, c.dport, c.family),
        Payload::UdpSend(u) => {
            out.push_str("-> ");
            endpoint(out, &u.daddr, u.dport);
            let _ = write!(out, " bytes={}", u.bytes);
        }
        Payload::Probe(p) => {
            clean(out, p.name.as_deref().unwrap_or("?"));
            if let Some(prog) = &p.program {
                let _ = write!(out, " program={prog} bytes={}", p.data.len());
            } else if !p.fields.is_empty() {
                for (name, value) in &p.fields {
                    let _ = write!(out, " {name}=");
                    match value {
                        FieldValue::Int(i) => _ = write!(out, "{i}"),
                        FieldValue::UInt(u) => _ = write!(out, "{u}"),
                        FieldValue::Str(s) => clean(out, s),
                        FieldValue::Bytes(b) => _ = write!(out, "<{} bytes>", b.len()),
                        FieldValue::Missing => out.push('?'),
                    }
                }
            } else if let Some(ret) = p.ret {
                let _ = write!(out, " ret={ret}");
            } else {
                let _ = write!(out, " args={:?}", p.args);
            }
        }
        Payload::Loss(_) => {}
        p => fields(p, out),
    }
}

/// Any other type: its path or filename first, then `key=value` for each
/// field that says something (nulls and false flags are left out).
fn fields(p: &Payload, out: &mut String) {
    if let Some(Value::Bool(true)) = p.get("path_truncated") {
        out.push_str(".../");
    }
    let mut first = true;
    p.visit(&mut |key, value| {
        let named = matches!(key, "path" | "filename");
        if matches!(value, Value::Null | Value::Bool(false)) || key == "path_truncated" {
            return;
        }
        if !first {
            out.push(' ');
        }
        first = false;
        if !named {
            out.push_str(key);
            out.push('=');
        }
        match value {
            Value::UInt(f) if key == "flags" => _ = write!(out, "{f:#o}"),
            Value::Int(i) => _ = write!(out, "{i}"),
            Value::UInt(u) => _ = write!(out, "{u}"),
            Value::Str(s) => clean(out, s),
            Value::String(s) => clean(out, &s),
            Value::Strs(items) => clean(out, &items.join(" ")),
            _ => out.push('?'),
        }
    });
}

fn connection(out: &mut String, source: Option<(IpAddr, u16)>, daddr: &IpAddr, dport: u16, family: Family) {
    if let Some((addr, port)) = source {
        endpoint(out, &addr, port);
        out.push(' ');
    }
    out.push_str("-> ");
    endpoint(out, daddr, dport);
    if !matches!(family.0, 2 | 10) {
        let _ = write!(out, " family={}", family_name(family.0));
    }
}

fn endpoint(out: &mut String, addr: &IpAddr, port: u16) {
    let _ = match addr {
        IpAddr::V4(a) => write!(out, "{a}:{port}"),
        IpAddr::V6(a) => write!(out, "[{a}]:{port}"),
    };
}

/// `s` with control characters and backslashes as `\xNN`.
fn clean(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use bpfcap_common::{kind, Header};

    use super::*;
    use crate::types::{Exec, Exit, FileWrite, IfSet, IfSome, TcpConnect};

    fn event(kind: u16, payload: Payload) -> Event {
        let mut comm = [0u8; 16];
        comm[..2].copy_from_slice(b"sh");
        Event {
            hdr: Header { kind, pid: 42, ppid: 1, ts_ns: 3_723_000_004_000, comm, ..Header::default() },
            payload,
            meta: Default::default(),
        }
    }

    fn line(ev: &Event) -> String {
        let mut out = String::new();
        write_line(ev, 0, &mut out);
        out
    }

    #[test]
    fn lines_are_aligned_and_say_what_the_event_is_about() {
        let exec = event(
            kind::PROCESS_EXEC,
            Exec {
                filename: "/bin/ls".into(),
                argv: vec!["ls".into(), "-l".into()],
                filename_truncated: IfSet(false),
                filename_raw: IfSome(None),
                argv_raw: IfSome(None),
                interpreter: None,
                argv_truncated: true,
            }
            .into(),
        );
        assert_eq!(line(&exec), "01:02:03.000004 process_exec         42       1 sh               ls -l ...\n");
        let write = event(
            kind::FILE_WRITE,
            FileWrite {
                path: "/tmp/x".into(),
                path_raw: IfSome(None),
                path_truncated: false,
                fd: Some(3),
                bytes: Some(5),
            }
            .into(),
        );
        assert!(line(&write).ends_with(" sh               /tmp/x fd=3 bytes=5\n"), "{}", line(&write));
        let connect = event(
            kind::TCP_CONNECT,
            TcpConnect {
                family: Family(2),
                saddr: Some(Ipv4Addr::LOCALHOST.into()),
                sport: Some(40000),
                daddr: "::1".parse().unwrap(),
                dport: 80,
            }
            .into(),
        );
        assert!(line(&connect).ends_with("127.0.0.1:40000 -> [::1]:80\n"), "{}", line(&connect));
        let exit = event(kind::PROCESS_EXIT, Exit { exit_code: None, signal: Some(9), core_dumped: false }.into());
        assert!(line(&exit).ends_with(" sh               signal=9\n"));
        let loss = Event::loss(0, 7, "kernel_ring_full", Some(kind::FILE_READ));
        assert_eq!(line(&loss), "00:00:00.000000 loss            7 events lost (kernel_ring_full, file_read)\n");
    }

    #[test]
    fn control_characters_from_other_processes_cannot_forge_lines_or_drive_a_terminal() {
        let exec = event(
            kind::PROCESS_EXEC,
            Exec {
                filename: "/x".into(),
                argv: vec!["a\nfake line".into(), "\u{1b}[2J\\".into()],
                filename_truncated: IfSet(false),
                filename_raw: IfSome(None),
                argv_raw: IfSome(None),
                interpreter: None,
                argv_truncated: false,
            }
            .into(),
        );
        let l = line(&exec);
        assert_eq!(l.matches('\n').count(), 1);
        assert!(l.ends_with("a\\x0afake line \\x1b[2J\\x5c\n"), "{l}");
    }
}
