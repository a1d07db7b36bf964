//! Kernel struct field offsets for the BPF programs, from the running kernel's BTF.

use bpfcap_common::{Offsets, NO_OFFSET};

use crate::btf::Btf;

/// Offsets of the fields the programs read. A field missing from this
/// kernel stays `NO_OFFSET` and the programs leave its value 0.
pub fn from_btf(btf: &Btf) -> Offsets {
    Offsets::from_fn(|s, path| path.split('|').find_map(|p| btf.field_offset(s, p)).unwrap_or(NO_OFFSET))
}

/// `struct.field` names this kernel lacks (for `doctor` and diagnostics).
pub fn missing(o: &Offsets) -> Vec<String> {
    Offsets::FIELDS
        .iter()
        .zip(o.values())
        .filter(|(_, v)| *v == NO_OFFSET)
        .map(|((s, p), _)| format!("{s}.{p}"))
        .collect()
}
