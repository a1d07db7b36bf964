//! Batches of events as lines in one buffer, JSON or text: what `bpfcap run`
//! writes, made without a Python object per event.

use crate::{event::Event, json, text};

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
