//! The core's one error type. Messages are lowercase, say what failed and what
//! to do about it; the Python binding maps variants to exception classes.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process lacks a capability the kernel requires for this operation.
    #[error("{what} needs {needed}: run as root, or grant what is missing to the process (ambient capabilities, or `setcap` on the interpreter)")]
    Privilege { what: String, needed: &'static str },

    /// The running kernel lacks something a probe or the ring buffer needs.
    #[error("kernel feature missing: {feature}: {reason}")]
    KernelFeature { feature: String, reason: String },

    #[error("cannot read kernel type information: {reason}")]
    Btf { reason: String },

    /// A configuration value outside its allowed range.
    #[error("invalid {field} = {value}: {allowed}")]
    Config { field: &'static str, value: String, allowed: String },

    #[error("unknown probe {name:?}; known probes: {known}")]
    UnknownProbe { name: String, known: String },

    #[error("loading BPF program {program} failed: {reason}")]
    Load { program: String, reason: String },

    #[error("attaching {probe} by {mechanism} failed: {reason}")]
    Attach { probe: String, mechanism: &'static str, reason: String },

    #[error("the capture is closed")]
    Closed,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
