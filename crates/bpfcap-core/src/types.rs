//! The built-in event types, each defined once: its kind id, name, and the
//! fields it adds to the common header, with their Rust types and meanings.
//! Everything else is derived from this table: [`Payload`] (one variant per
//! type), the JSON keys and their order ([`Payload::visit`]), the schema
//! (`TYPES`, read by Python's `bpfcap.schema` and the README's schema
//! section), and the binding's getters ([`Payload::get`]).
//!
//! A field's JSON key is its Rust name; its JSON type comes from its Rust
//! type through [`Field`]. Adding a type: a kind id in `bpfcap-common`, an
//! entry here, its decoder arm (`decode.rs`) and attach plans (`probes.rs`).

use std::net::IpAddr;

use bpfcap_common::kind;

use crate::{
    event::ProbeData,
    json::{family_name, Value},
};

/// A built-in event type, as documented.
#[derive(Clone, Copy, Debug)]
pub struct TypeDef {
    pub kind: u16,
    pub name: &'static str,
    pub doc: &'static str,
    /// The keys it adds to the common ones, in JSON order.
    pub fields: &'static [FieldDef],
}

#[derive(Clone, Copy, Debug)]
pub struct FieldDef {
    pub key: &'static str,
    /// JSON type: `int`, `str`, `bool`, `list[str]`; `?` when it may be null.
    pub schema: &'static str,
    /// Present only in some events (otherwise always present, maybe null).
    pub optional: bool,
    pub meaning: &'static str,
}

/// A payload field's JSON type and value.
pub trait Field {
    const SCHEMA: &'static str;
    /// A key that is left out of the JSON object when it has this value.
    const OPTIONAL: bool = false;
    fn value(&self) -> Value<'_>;
    fn omitted(&self) -> bool {
        false
    }
}

macro_rules! field {
    ($t:ty, $schema:literal, |$v:ident| $e:expr) => {
        impl Field for $t {
            const SCHEMA: &'static str = $schema;
            fn value(&self) -> Value<'_> {
                let $v = self;
                $e
            }
        }
    };
}

field!(String, "str", |s| Value::Str(s));
field!(bool, "bool", |b| Value::Bool(*b));
field!(u32, "int", |u| Value::UInt((*u).into()));
field!(u16, "int", |u| Value::UInt((*u).into()));
field!(Vec<String>, "list[str]", |v| Value::Strs(v));
field!(IpAddr, "str", |a| Value::String(a.to_string()));
field!(Option<IpAddr>, "str?", |a| a.map_or(Value::Null, |a| Value::String(a.to_string())));
field!(Option<u8>, "int?", |v| v.map_or(Value::Null, |v| Value::UInt(v.into())));
field!(Option<u16>, "int?", |v| v.map_or(Value::Null, |v| Value::UInt(v.into())));
field!(Option<u32>, "int?", |v| v.map_or(Value::Null, |v| Value::UInt(v.into())));
field!(Option<i32>, "int?", |v| v.map_or(Value::Null, |v| Value::Int(v.into())));
field!(Option<i64>, "int?", |v| v.map_or(Value::Null, Value::Int));
field!(i64, "int", |v| Value::Int(*v));
field!(Family, "str", |f| Value::Str(family_name(f.0)));

/// An address family (`AF_INET` 2, `AF_INET6` 10), written as `ipv4`/`ipv6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family(pub u16);

/// A flag whose key appears (as `true`) only when it is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfSet(pub bool);

impl Field for IfSet {
    const SCHEMA: &'static str = "bool";
    const OPTIONAL: bool = true;
    fn value(&self) -> Value<'_> {
        Value::Bool(self.0)
    }
    fn omitted(&self) -> bool {
        !self.0
    }
}

macro_rules! event_types {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $kind:ident $name:literal {
            $( #[doc = $fdoc:literal] $field:ident: $ty:ty, )*
        }
    )*) => {
        $(
            $(#[doc = $doc])*
            #[derive(Clone, Debug, PartialEq, Eq)]
            pub struct $variant { $( #[doc = $fdoc] pub $field: $ty, )* }

            impl From<$variant> for Payload {
                fn from(p: $variant) -> Self {
                    Payload::$variant(p)
                }
            }
        )*

        /// An event's facts beyond the common header: one variant per type.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Payload {
            $( $variant($variant), )*
            /// A user-defined probe's event (boxed: rare, and big).
            Probe(Box<ProbeData>),
            /// In-band notice that events were lost; made in userspace.
            Loss(Loss),
        }

        /// The built-in event types, in id order.
        pub const TYPES: &[TypeDef] = &[$(
            TypeDef {
                kind: kind::$kind,
                name: $name,
                doc: concat!($($doc),*).trim_ascii(),
                fields: &[$(FieldDef {
                    key: stringify!($field),
                    schema: <$ty as Field>::SCHEMA,
                    optional: <$ty as Field>::OPTIONAL,
                    meaning: $fdoc.trim_ascii(),
                },)*],
            },
        )*];

        impl Payload {
            /// Calls `f` with each of a built-in type's keys and values, in order.
            pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'static str, Value<'a>)) {
                match self {
                    $( Payload::$variant(p) => {
                        $( if !p.$field.omitted() { f(stringify!($field), p.$field.value()); } )*
                    } )*
                    Payload::Probe(_) | Payload::Loss(_) => {}
                }
            }

            /// A built-in type's field by its key (None when the type has no such key).
            pub fn get(&self, key: &str) -> Option<Value<'_>> {
                match self {
                    $( Payload::$variant(p) => match key {
                        $( stringify!($field) => Some(p.$field.value()), )*
                        _ => None,
                    }, )*
                    Payload::Probe(_) | Payload::Loss(_) => None,
                }
            }
        }
    };
}

event_types! {
    /// A process replaced its program (execve or execveat succeeded).
    Exec = PROCESS_EXEC "process_exec" {
        /// the path as given to execve
        filename: String,
        /// arguments (2048 bytes at most)
        argv: Vec<String>,
        /// argv was cut
        argv_truncated: bool,
        /// present (true) only when the filename was cut
        filename_truncated: IfSet,
    }
    /// A process (its last thread) exited.
    Exit = PROCESS_EXIT "process_exit" {
        /// exit status 0-255, null when killed by a signal
        exit_code: Option<u8>,
        /// the signal that killed the process, or null
        signal: Option<u8>,
        /// a core was dumped
        core_dumped: bool,
    }
    /// A process created a new process (fork, vfork, clone without CLONE_THREAD).
    Fork = PROCESS_FORK "process_fork" {
        /// pid of the new process
        child_pid: u32,
    }
    /// A TCP connect was started.
    TcpConnect = TCP_CONNECT "tcp_connect" {
        /// `ipv4` or `ipv6`
        family: Family,
        /// source address (null if unknown)
        saddr: Option<IpAddr>,
        /// destination address
        daddr: IpAddr,
        /// source port (null if unknown)
        sport: Option<u16>,
        /// destination port
        dport: u16,
    }
    /// A TCP socket was closed.
    TcpClose = TCP_CLOSE "tcp_close" {
        /// `ipv4` or `ipv6`
        family: Family,
        /// source address (null if unknown)
        saddr: Option<IpAddr>,
        /// destination address
        daddr: IpAddr,
        /// source port (null if unknown)
        sport: Option<u16>,
        /// destination port
        dport: u16,
    }
    /// A UDP datagram was sent.
    UdpSend = UDP_SEND "udp_send" {
        /// `ipv4` or `ipv6`
        family: Family,
        /// destination address
        daddr: IpAddr,
        /// destination port
        dport: u16,
        /// bytes the send asked for
        bytes: i64,
    }
    /// A file was opened.
    FileOpen = FILE_OPEN "file_open" {
        /// absolute path, or its end when `path_truncated`
        path: String,
        /// the path was cut (deeper than 32 levels or longer than 2048 bytes)
        path_truncated: bool,
        /// file descriptor (null from kprobe, fentry and LSM mechanisms)
        fd: Option<i32>,
        /// the open file's `f_flags`
        flags: Option<u32>,
    }
    /// A file was read.
    FileRead = FILE_READ "file_read" {
        /// absolute path, or its end when `path_truncated`; `pipe:[INODE]`, `socket:[INODE]` or `anon_inode:[NAME]` for what is not a file
        path: String,
        /// the path was cut (deeper than 32 levels or longer than 2048 bytes)
        path_truncated: bool,
        /// file descriptor (null from kprobe, fentry and LSM mechanisms)
        fd: Option<i32>,
        /// bytes read (null if the mechanism cannot know)
        bytes: Option<i64>,
    }
    /// A file was written.
    FileWrite = FILE_WRITE "file_write" {
        /// absolute path, or its end when `path_truncated`; `pipe:[INODE]`, `socket:[INODE]` or `anon_inode:[NAME]` for what is not a file
        path: String,
        /// the path was cut (deeper than 32 levels or longer than 2048 bytes)
        path_truncated: bool,
        /// file descriptor (null from kprobe, fentry and LSM mechanisms)
        fd: Option<i32>,
        /// bytes written (null if the mechanism cannot know)
        bytes: Option<i64>,
    }
    /// The kernel checked whether a program may be executed (LSM `bprm_check_security`).
    ExecCheck = EXEC_CHECK "exec_check" {
        /// the path as given to execve
        filename: String,
    }
    /// The kernel checked access to an open file (LSM `file_permission`).
    FilePermission = FILE_PERMISSION "file_permission" {
        /// absolute path, or its end when `path_truncated`; `pipe:[INODE]`, `socket:[INODE]` or `anon_inode:[NAME]` for what is not a file
        path: String,
        /// the path was cut (deeper than 32 levels or longer than 2048 bytes)
        path_truncated: bool,
        /// file descriptor (null from kprobe, fentry and LSM mechanisms)
        fd: Option<i32>,
        /// permission mask (`MAY_WRITE` 2, `MAY_READ` 4, ...)
        mask: Option<u32>,
    }
}

/// The facts of a loss notice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    pub count: u64,
    pub reason: &'static str,
    /// The kind that was lost, when known.
    pub lost_kind: Option<u16>,
}

/// A built-in type's definition.
pub fn type_def(kind: u16) -> Option<&'static TypeDef> {
    TYPES.iter().find(|t| t.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_in_id_order_with_unique_names_and_keys() {
        for w in TYPES.windows(2) {
            assert!(w[0].kind < w[1].kind, "{} before {}", w[0].name, w[1].name);
        }
        for t in TYPES {
            assert!(t.kind < kind::COUNT as u16, "{} is outside the kernel's kind range", t.name);
            assert!(!t.doc.is_empty() && t.fields.iter().all(|f| !f.meaning.is_empty()), "{} is undocumented", t.name);
            let mut keys: Vec<_> = t.fields.iter().map(|f| f.key).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), t.fields.len(), "{} repeats a key", t.name);
        }
    }
}
