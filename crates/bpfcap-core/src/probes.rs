//! The built-in probes of the spec and their attach plans, preferred first.
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
/// cache is stale (see `bpfcap_renamed`). Optional, so a kernel without
/// syscall tracepoints keeps the plan (its cached paths then live for
/// `CACHE_TTL_NS` at most).
/// The copies (copy_file_range, splice, sendfile: a read and a write in one
/// syscall), seen through their syscalls on every mechanism (vfs_read and
/// vfs_write do not see them); with the rename watch.
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
            opt("bpfcap_renamed", Tracepoint, "syscalls:sys_exit_rename"),
            opt("bpfcap_renamed", Tracepoint, "syscalls:sys_exit_renameat"),
            opt("bpfcap_renamed", Tracepoint, "syscalls:sys_exit_renameat2"),
            opt("bpfcap_renamed", Tracepoint, "syscalls:sys_exit_unlink"),
            opt("bpfcap_renamed", Tracepoint, "syscalls:sys_exit_unlinkat"),
            opt("bpfcap_renamed", Tracepoint, "syscalls:sys_exit_rmdir"),
        ]
    };
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        name: "sched_process_exec",
        kind: kind::PROCESS_EXEC,
        plans: &[plan("raw_tracepoint", &[a("bpfcap_exec", RawTracepoint, "sched_process_exec")])],
    },
    ProbeSpec {
        name: "sched_process_exit",
        kind: kind::PROCESS_EXIT,
        plans: &[plan(
            "raw_tracepoint",
            &[
                a("bpfcap_exit", RawTracepoint, "sched_process_exit"),
                a("bpfcap_free", RawTracepoint, "sched_process_free"),
            ],
        )],
    },
    ProbeSpec {
        name: "sched_process_fork",
        kind: kind::PROCESS_FORK,
        plans: &[plan("raw_tracepoint", &[a("bpfcap_fork", RawTracepoint, "sched_process_fork")])],
    },
    ProbeSpec {
        name: "tcp_connect",
        kind: kind::TCP_CONNECT,
        plans: &[
            plan("kprobe", &[a("bpfcap_tcpc_kp", Kprobe, "tcp_connect")]),
            plan("fentry", &[a("bpfcap_tcpc_fe", Fentry, "tcp_connect")]),
            plan("tracepoint", &[a("bpfcap_sockst", Tracepoint, "sock:inet_sock_set_state")]),
        ],
    },
    ProbeSpec {
        name: "tcp_close",
        kind: kind::TCP_CLOSE,
        plans: &[
            plan("kprobe", &[a("bpfcap_tcpx_kp", Kprobe, "tcp_close")]),
            plan("fentry", &[a("bpfcap_tcpx_fe", Fentry, "tcp_close")]),
            plan("tracepoint", &[a("bpfcap_sockst", Tracepoint, "sock:inet_sock_set_state")]),
        ],
    },
    ProbeSpec {
        name: "udp_sendmsg",
        kind: kind::UDP_SEND,
        plans: &[
            plan("kprobe", &[a("bpfcap_udp_kp", Kprobe, "udp_sendmsg"), a("bpfcap_udp_kp", Kprobe, "udpv6_sendmsg")]),
            plan("fentry", &[a("bpfcap_udp_fe", Fentry, "udp_sendmsg"), a("bpfcap_udp6_fe", Fentry, "udpv6_sendmsg")]),
            plan(
                "tracepoint",
                &[
                    a("bpfcap_sendto", Tracepoint, "syscalls:sys_enter_sendto"),
                    a("bpfcap_sendmsg", Tracepoint, "syscalls:sys_enter_sendmsg"),
                ],
            ),
        ],
    },
    ProbeSpec {
        name: "vfs_open",
        kind: kind::FILE_OPEN,
        plans: &[
            plan("kprobe", with_rename_watch![a("bpfcap_open_kp", Kprobe, "vfs_open")]),
            plan("fentry", with_rename_watch![a("bpfcap_open_fe", Fentry, "vfs_open")]),
            plan(
                "tracepoint",
                with_rename_watch![
                    a("bpfcap_open_tp", Tracepoint, "syscalls:sys_exit_openat"),
                    opt("bpfcap_open_tp", Tracepoint, "syscalls:sys_exit_openat2"),
                    opt("bpfcap_open_tp", Tracepoint, "syscalls:sys_exit_open"),
                    opt("bpfcap_open_tp", Tracepoint, "syscalls:sys_exit_creat"),
                ],
            ),
        ],
    },
    ProbeSpec {
        name: "vfs_read",
        kind: kind::FILE_READ,
        plans: &[
            plan(
                "kprobe",
                with_copies![a("bpfcap_rd_kp", Kprobe, "vfs_read"), a("bpfcap_rd_krp", Kretprobe, "vfs_read")],
            ),
            plan("fentry", with_copies![a("bpfcap_rd_fx", Fexit, "vfs_read")]),
            plan(
                "tracepoint",
                with_copies![
                    a("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_read"),
                    a("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_read"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_pread64"),
                    opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_pread64"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_readv"),
                    opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_readv"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_preadv"),
                    opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_preadv"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_preadv2"),
                    opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_preadv2"),
                ],
            ),
        ],
    },
    ProbeSpec {
        name: "vfs_write",
        kind: kind::FILE_WRITE,
        plans: &[
            plan(
                "kprobe",
                with_copies![a("bpfcap_wr_kp", Kprobe, "vfs_write"), a("bpfcap_wr_krp", Kretprobe, "vfs_write")],
            ),
            plan("fentry", with_copies![a("bpfcap_wr_fx", Fexit, "vfs_write")]),
            plan(
                "tracepoint",
                with_copies![
                    a("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_write"),
                    a("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_write"),
                    opt("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_pwrite64"),
                    opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_pwrite64"),
                    opt("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_writev"),
                    opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_writev"),
                    opt("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_pwritev"),
                    opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_pwritev"),
                    opt("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_pwritev2"),
                    opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_pwritev2"),
                ],
            ),
        ],
    },
    ProbeSpec {
        name: "bprm_check_security",
        kind: kind::EXEC_CHECK,
        plans: &[
            plan("lsm", &[a("bpfcap_xchk_lsm", Lsm, "bprm_check_security")]),
            plan("fentry", &[a("bpfcap_xchk_fe", Fentry, "security_bprm_check")]),
            plan("kprobe", &[a("bpfcap_xchk_kp", Kprobe, "security_bprm_check")]),
            plan("raw_tracepoint", &[a("bpfcap_xchk_tp", RawTracepoint, "sched_process_exec")]),
        ],
    },
    ProbeSpec {
        name: "file_permission",
        kind: kind::FILE_PERMISSION,
        plans: &[
            plan("lsm", with_rename_watch![a("bpfcap_perm_lsm", Lsm, "file_permission")]),
            plan("fentry", with_rename_watch![a("bpfcap_perm_fe", Fentry, "security_file_permission")]),
            plan("kprobe", with_rename_watch![a("bpfcap_perm_kp", Kprobe, "security_file_permission")]),
            plan(
                "tracepoint",
                with_rename_watch![
                    a("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_read"),
                    a("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_write"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_pread64"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_readv"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_preadv"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_preadv2"),
                    opt("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_pwrite64"),
                    opt("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_writev"),
                    opt("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_pwritev"),
                    opt("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_pwritev2"),
                ],
            ),
        ],
    },
];

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
