//! Batches of events as lines in one buffer, JSON or text: what `bpfcap run`
//! writes, made without a Python object per event.

use bpfcap_common::kind;

use crate::{
    event::{kind_name, Event, Payload},
    json, text,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

impl Format {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Self::Json),
            "text" => Some(Self::Text),
            _ => None,
        }
    }
}

/// Writes events as lines of one format and counts them by type, and the
/// events their loss notices announce.
pub struct LineWriter {
    format: Format,
    /// Scratch for a text line (text.rs writes a `String`).
    line: String,
    by_kind: [u64; kind::COUNT as usize],
    pub lost: u64,
}

impl LineWriter {
    pub fn new(format: Format) -> Self {
        Self { format, line: String::new(), by_kind: [0; kind::COUNT as usize], lost: 0 }
    }

    /// Appends `ev`'s line to `out`.
    pub fn push(&mut self, ev: &Event, wall_offset_ns: i64, out: &mut Vec<u8>) {
        match self.format {
            Format::Json => json::write_event(ev, wall_offset_ns, out),
            Format::Text => {
                self.line.clear();
                text::write_line(ev, wall_offset_ns, &mut self.line);
                out.extend_from_slice(self.line.as_bytes());
            }
        }
        match &ev.payload {
            Payload::Loss(l) => self.lost += l.count,
            _ => {
                if let Some(n) = self.by_kind.get_mut(ev.hdr.kind as usize) {
                    *n += 1;
                }
            }
        }
    }

    /// `(type name, count)` of the types written.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        (0..).zip(self.by_kind).filter(|(_, n)| *n > 0).map(|(k, n)| (kind_name(k), n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_by_type_and_loss_notices_by_what_they_announce() {
        let mut w = LineWriter::new(Format::Json);
        let mut out = Vec::new();
        for ev in [Event::loss(1, 7, "sampled", Some(kind::FILE_READ)), Event::loss(2, 3, "sampled", None)] {
            w.push(&ev, 0, &mut out);
        }
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
        assert_eq!((w.counts().count(), w.lost), (0, 10));
    }
}
