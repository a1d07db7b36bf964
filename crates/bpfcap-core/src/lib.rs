//! bpfcap's core: loads the BPF programs, attaches probes with fallbacks,
//! reads the ring buffer and decodes records in batches. No Python here;
//! `bpfcap-py` is a thin binding over this crate.

pub mod attach;
pub mod btf;
pub mod capture;
pub mod cgroups;
pub mod clock;
pub mod containers;
pub mod decode;
pub mod enrich;
pub mod error;
pub mod event;
pub mod fallback;
pub mod filter;
pub mod json;
pub mod lines;
pub mod losses;
pub mod merge;
pub mod object;
pub mod offsets;
pub mod probes;
pub mod redact;
pub mod release;
pub mod rings;
pub mod sys;
pub mod text;
pub mod tracefs;
pub mod types;
pub mod user_probe;

pub use capture::{Capture, CaptureConfig};
pub use error::{Error, Result};
pub use event::{Event, Payload};
pub use fallback::ProbeStatus;
pub use probes::{ProbeSpec, PROBES};
