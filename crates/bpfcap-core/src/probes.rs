//! The built-in probes of the spec and their attach plans, preferred first
//! (each type's are in its entry of `bpfcap-common/src/event_types.rs`).
//! The first plan whose every attachment loads and attaches wins.

use bpfcap_common::kind;

/// How one program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgType {
    Kprobe,
    Kretprobe,
    Fentry,
    Fexit,
    Lsm,
    /// Classic tracepoint, target `category:name`.
    Tracepoint,
    RawTracepoint,
    /// Target `binary:symbol` or `binary:0xoffset`.
    Uprobe,
    Uretprobe,
}

impl ProgType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kprobe => "kprobe",
            Self::Kretprobe => "kretprobe",
            Self::Fentry => "fentry",
            Self::Fexit => "fexit",
            Self::Lsm => "lsm",
            Self::Tracepoint => "tracepoint",
            Self::RawTracepoint => "raw_tracepoint",
            Self::Uprobe => "uprobe",
            Self::Uretprobe => "uretprobe",
        }
    }
}

/// One program of our object attached to one kernel target.
#[derive(Clone, Copy, Debug)]
pub struct Attach {
    pub program: &'static str,
    pub ty: ProgType,
    pub target: &'static str,
    /// A target that older kernels may lack (`openat2`), or a companion of
    /// the plan (the rename watch, the copies): skipped when absent or when
    /// it cannot be attached.
    pub optional: bool,
}

/// One way to attach a probe. `mechanism` is what `probes()` and `doctor` report.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub mechanism: &'static str,
    pub attach: &'static [Attach],
}

#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    /// The spec's probe name (`tcp_connect`, `bprm_check_security`, ...).
    pub name: &'static str,
    pub kind: u16,
    pub plans: &'static [Plan],
}

const fn a(program: &'static str, ty: ProgType, target: &'static str) -> Attach {
    Attach { program, ty, target, optional: false }
}

const fn opt(program: &'static str, ty: ProgType, target: &'static str) -> Attach {
    Attach { program, ty, target, optional: true }
}

const fn plan(mechanism: &'static str, attach: &'static [Attach]) -> Plan {
    Plan { mechanism, attach }
}

use ProgType::*;

/// A plan's attachments, and the watch that every plan of a probe whose
/// events name files needs: at each rename or unlink the programs' path
/// cache is stale (see `bpfcap_change_xtp`). Optional, so a kernel without
/// syscall tracepoints keeps the plan (its cached paths then live for
/// `CACHE_TTL_NS` at most).
/// The copies (copy_file_range, splice, sendfile: a read and a write in one
/// syscall), seen through their syscalls on every mechanism (vfs_read and
/// vfs_write do not see them); with the rename watch.
/// Where vfs_read and vfs_write are probed (kprobe, fentry): readv, preadv,
/// preadv2 and their writes, which do not pass through those, seen through
/// their syscalls; with the copies.
macro_rules! with_vectored {
    (read: $($at:expr),* $(,)?) => {
        with_copies![
            $($at,)*
            opt("bpfcap_rdvec_etp", Tracepoint, "syscalls:sys_enter_readv"),
            opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_readv"),
            opt("bpfcap_rdvec_etp", Tracepoint, "syscalls:sys_enter_preadv"),
            opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_preadv"),
            opt("bpfcap_rdvec_etp", Tracepoint, "syscalls:sys_enter_preadv2"),
            opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_preadv2"),
        ]
    };
    (write: $($at:expr),* $(,)?) => {
        with_copies![
            $($at,)*
            opt("bpfcap_wrvec_etp", Tracepoint, "syscalls:sys_enter_writev"),
            opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_writev"),
            opt("bpfcap_wrvec_etp", Tracepoint, "syscalls:sys_enter_pwritev"),
            opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_pwritev"),
            opt("bpfcap_wrvec_etp", Tracepoint, "syscalls:sys_enter_pwritev2"),
            opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_pwritev2"),
        ]
    };
}

macro_rules! with_copies {
    ($($at:expr),* $(,)?) => {
        with_rename_watch![
            $($at,)*
            opt("bpfcap_copy_etp", Tracepoint, "syscalls:sys_enter_copy_file_range"),
            opt("bpfcap_copy_xtp", Tracepoint, "syscalls:sys_exit_copy_file_range"),
            opt("bpfcap_copy_etp", Tracepoint, "syscalls:sys_enter_splice"),
            opt("bpfcap_copy_xtp", Tracepoint, "syscalls:sys_exit_splice"),
            opt("bpfcap_sendfile_etp", Tracepoint, "syscalls:sys_enter_sendfile64"),
            opt("bpfcap_copy_xtp", Tracepoint, "syscalls:sys_exit_sendfile64"),
        ]
    };
}

macro_rules! with_rename_watch {
    ($($at:expr),* $(,)?) => {
        &[
            $($at,)*
            opt("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_rename"),
            opt("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_renameat"),
            opt("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_renameat2"),
            opt("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_unlink"),
            opt("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_unlinkat"),
            opt("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_rmdir"),
        ]
    };
}

/// Expands the table of event types into each type's probe and plans.
macro_rules! probe_specs {
    (
        keys $keys:tt
        $(
            $(#[doc = $doc:literal])*
            $variant:ident = $id:literal $kind:ident $name:literal $fields:tt
            decode $decode:tt probe($probe:literal, [$($plan:expr),* $(,)?])
        )*
    ) => {
        pub const PROBES: &[ProbeSpec] = &[$(
            ProbeSpec { name: $probe, kind: kind::$kind, plans: &[$($plan),*] },
        )*];
    };
}

bpfcap_common::event_types!(probe_specs);

/// The probe that produces events of `kind`.
pub fn probe_for_kind(kind: u16) -> Option<&'static ProbeSpec> {
    PROBES.iter().find(|p| p.kind == kind)
}

pub fn probe_by_name(name: &str) -> Option<&'static ProbeSpec> {
    PROBES.iter().find(|p| p.name == name)
}

pub fn names() -> String {
    PROBES.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

/// One do-nothing program per program type, and a harmless target for each:
/// `doctor` attaches them for a moment to learn what this kernel accepts.
pub const SELFTESTS: &[Attach] = &[
    a("bpfcap_t_kp", Kprobe, "vfs_read"),
    a("bpfcap_t_fe", Fentry, "vfs_read"),
    a("bpfcap_t_lsm", Lsm, "file_open"),
    a("bpfcap_t_tp", Tracepoint, "syscalls:sys_enter_getppid"),
    a("bpfcap_t_rtp", RawTracepoint, "sys_enter"),
    a("bpfcap_t_up", Uprobe, "libc:getpid"),
];

/// The do-nothing program that tells whether this kernel accepts programs of
/// `ty` at all (kprobes, fentry/fexit, LSM may be missing; the rest is assumed).
pub fn selftest_for(ty: ProgType) -> Option<&'static Attach> {
    let ty = match ty {
        Kprobe | Kretprobe => Kprobe,
        Fentry | Fexit => Fentry,
        Lsm => Lsm,
        _ => return None,
    };
    SELFTESTS.iter().find(|t| t.ty == ty)
}

#[cfg(test)]
mod tests {
    use aya_obj::ProgramSection as S;

    use super::*;

    /// A plan naming a program the object lacks, or one of another type,
    /// would only fail when it is attached, as root, on a kernel that picks it.
    #[test]
    fn every_program_a_plan_names_is_in_the_built_object_with_its_type() {
        let obj = aya_obj::Object::parse(crate::object::BPF_OBJECT).expect("the built BPF object parses");
        let mut wrong = Vec::new();
        for attach in PROBES.iter().flat_map(|p| p.plans).flat_map(|plan| plan.attach) {
            let fits = |s: &S| match attach.ty {
                Kprobe => matches!(s, S::KProbe),
                Kretprobe => matches!(s, S::KRetProbe),
                Fentry => matches!(s, S::FEntry { .. }),
                Fexit => matches!(s, S::FExit { .. }),
                Lsm => matches!(s, S::Lsm { .. }),
                Tracepoint => matches!(s, S::TracePoint),
                RawTracepoint => matches!(s, S::RawTracePoint),
                Uprobe => matches!(s, S::UProbe { .. }),
                Uretprobe => matches!(s, S::URetProbe { .. }),
            };
            match obj.programs.get(attach.program) {
                Some(p) if fits(&p.section) => {}
                other => wrong.push((attach.program, attach.ty.name(), other.map(|p| format!("{:?}", p.section)))),
            }
        }
        assert!(wrong.is_empty(), "plans naming programs the object lacks or has with another type: {wrong:?}");
    }
}
