//! Batches of events as lines in one buffer, JSON or text: what `bpfcap run`
//! writes, made without a Python object per event.

use crate::{
    event::{Event, Payload, KIND_NAMES},
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

/// Appends one line per event to `out`.
pub fn write<'a>(events: impl IntoIterator<Item = &'a Event>, format: Format, wall_offset_ns: i64, out: &mut Vec<u8>) {
    let mut line = String::new();
    for ev in events {
        match format {
            Format::Json => json::write_event(ev, wall_offset_ns, out),
            Format::Text => {
                line.clear();
                text::write_line(ev, wall_offset_ns, &mut line);
                out.extend_from_slice(line.as_bytes());
            }
        }
    }
}

/// Events by type (indexed as [`KIND_NAMES`]), and the events that loss
/// notices among them announce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub by_kind: [u64; KIND_NAMES.len()],
    pub lost: u64,
}

impl Tally {
    pub fn add<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for ev in events {
            match &ev.payload {
                Payload::Loss { count, .. } => self.lost += count,
                _ => {
                    if let Some(i) = KIND_NAMES.iter().position(|(k, _)| *k == ev.hdr.kind) {
                        self.by_kind[i] += 1;
                    }
                }
            }
        }
    }

    /// `(type name, count)` of the types seen.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.by_kind.iter().zip(KIND_NAMES).filter(|(n, _)| **n > 0).map(|(n, (_, name))| (*name, *n))
    }
}
