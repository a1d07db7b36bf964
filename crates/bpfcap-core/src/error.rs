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

    /// `source`: the error of aya or the kernel it came from, when there is one.
    #[error("loading BPF program {program} failed: {reason}")]
    Load {
        program: String,
        reason: String,
        #[source]
        source: Option<Source>,
    },

    #[error("attaching {probe} by {mechanism} failed: {reason}")]
    Attach {
        probe: String,
        mechanism: &'static str,
        reason: String,
        #[source]
        source: Option<Source>,
    },

    #[error("the capture is closed")]
    Closed,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// The error (aya's, the kernel's) that a load or attach failed with.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }

    pub fn load(program: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Load { program: program.into(), reason: reason.into(), source: None }
    }

    /// A load that failed with `e`: the reason is `e`'s message chain, and `e` is kept as the source.
    pub fn load_from(program: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Load { program: program.into(), reason: chain(&e), source: Some(Box::new(e)) }
    }

    pub fn attach(probe: impl Into<String>, mechanism: &'static str, reason: impl Into<String>) -> Self {
        Self::Attach { probe: probe.into(), mechanism, reason: reason.into(), source: None }
    }

    /// An attach that failed with `e`, said as `reason`; `e` is kept as the source.
    pub fn attach_from(
        probe: impl Into<String>,
        mechanism: &'static str,
        reason: String,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Attach { probe: probe.into(), mechanism, reason, source: Some(Box::new(e)) }
    }
}

/// An error's message followed by its sources' (each said once).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_load_error_says_its_causes_and_keeps_them_as_its_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("map creation failed")]
        struct MapFailed(#[source] io::Error);

        let e = Error::load_from("BPFCAP_EVENTS", MapFailed(io::Error::from_raw_os_error(libc::ENOMEM)));
        let msg = e.to_string();
        assert!(msg.starts_with("loading BPF program BPFCAP_EVENTS failed: map creation failed: "), "{msg}");
        assert!(msg.contains("Cannot allocate memory"), "{msg}");
        let source = e.source().expect("the source is kept");
        assert_eq!(source.to_string(), "map creation failed");
        let io = source.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("and its own source");
        assert_eq!(io.raw_os_error(), Some(libc::ENOMEM));
        assert!(Error::load("x", "missing").source().is_none());
    }
}
