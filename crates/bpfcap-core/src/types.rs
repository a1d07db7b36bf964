//! The built-in event types' payloads, expanded from their one definition
//! (`bpfcap-common/src/event_types.rs`): [`Payload`] (one variant per
//! type), the JSON keys and their order ([`Payload::visit`]), the schema
//! (`TYPES`, read by Python's `bpfcap.schema` and the README's schema
//! section), and the binding's getters ([`Payload::get`]). The decoder
//! (`decode.rs`) and the plans (`probes.rs`) expand the same table.
//!
//! A field's JSON key is its Rust name; its JSON type comes from its Rust
//! type through [`Field`].

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
field!(Option<Box<Vec<String>>>, "list[str]?", |v| v.as_deref().map_or(Value::Null, |v| Value::Strs(v)));
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

/// A value whose key appears only when there is one: the original bytes
/// (hex) of a name that is not UTF-8 (`path_raw`: its text has U+FFFD for
/// each bad sequence), or of every argument when one is not (`argv_raw`).
/// Boxed: it is rare, and events stay small.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfSome<T>(pub Option<Box<T>>);

impl<T: Field> Field for IfSome<T> {
    const SCHEMA: &'static str = T::SCHEMA;
    const OPTIONAL: bool = true;
    fn value(&self) -> Value<'_> {
        self.0.as_deref().map_or(Value::Null, T::value)
    }
    fn omitted(&self) -> bool {
        self.0.is_none()
    }
}

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

macro_rules! payloads {
    (
        keys [$($key:ident),* $(,)?]
        $(
            $(#[doc = $doc:literal])*
            $variant:ident = $id:literal $kind:ident $name:literal {
                $( #[doc = $fdoc:literal] $field:ident: $ty:ty, )*
            }
            decode $decode:tt probe $probe:tt
        )*
    ) => {
        /// Every payload key, once (the binding's getters).
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

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

bpfcap_common::event_types!(payloads);

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

    #[test]
    fn keys_name_every_field_once() {
        let mut used: Vec<_> = TYPES.iter().flat_map(|t| t.fields.iter().map(|f| f.key)).collect();
        used.sort_unstable();
        used.dedup();
        let mut keys = KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(keys, used, "`keys` of the table of event types must list each field name once");
    }
}
