//! Loading one program of a BPF object and attaching it to one kernel target,
//! for every program type we use. Returns the link: dropping it detaches.

use std::any::Any;

use aya::{
    programs::{
        uprobe::{UProbeAttachLocation, UProbeScope},
        FEntry, FExit, KProbe, Lsm, Program, ProgramError, RawTracePoint, TracePoint, UProbe,
    },
    Btf, Ebpf,
};

use crate::{
    error::{chain, Error, Result},
    probes::ProgType,
    sys, tracefs,
};

/// An attachment's link, kept alive for as long as the attachment should be.
pub type Link = Box<dyn Any + Send>;

/// Loads `program` (once: `loaded` says whether it already is) and attaches it
/// to `target` as `ty`. `btf` is needed for fentry, fexit and LSM programs.
pub fn attach(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    program: &str,
    ty: ProgType,
    target: &str,
    loaded: bool,
) -> Result<Link> {
    // (`reason`: what to say instead of the error's own message chain)
    let fail = |e: ProgramError, reason: Option<String>| {
        Error::attach_from(target, ty.name(), reason.unwrap_or_else(|| chain(&e)), e)
    };
    let prog =
        ebpf.program_mut(program).ok_or_else(|| Error::load(program, "no program of that name in the BPF object"))?;
    if !loaded {
        load(prog, btf, program, ty, target)?;
    }
    // perf_event_open of a kprobe or uprobe may need CAP_SYS_ADMIN even with
    // CAP_BPF and CAP_PERFMON (measured: uprobes on 6.18): name it.
    let attach_failed = |e: ProgramError, r: Option<String>| {
        if denied(&e) && !sys::has_cap(sys::effective_caps(), sys::CAP_SYS_ADMIN) {
            Error::Privilege {
                what: format!("attaching {target} by {}", ty.name()),
                needed: "CAP_SYS_ADMIN (the kernel refused it to CAP_BPF and CAP_PERFMON)",
            }
        } else {
            fail(e, r)
        }
    };
    macro_rules! attached {
        ($t:ty, $p:ident => $attach:expr) => {{
            let $p: &mut $t = typed(prog, program, ty)?;
            let id = $attach.map_err(|e| attach_failed(e, None))?;
            Box::new($p.take_link(id).map_err(|e| fail(e, None))?)
        }};
    }
    let link: Link = match ty {
        ProgType::Kprobe | ProgType::Kretprobe => {
            let p: &mut KProbe = typed(prog, program, ty)?;
            let id = p.attach(target, 0).map_err(|e| {
                let r = kprobe_reason(&e);
                attach_failed(e, Some(r))
            })?;
            Box::new(p.take_link(id).map_err(|e| fail(e, None))?)
        }
        ProgType::Fentry => attached!(FEntry, p => p.attach()),
        ProgType::Fexit => attached!(FExit, p => p.attach()),
        ProgType::Lsm => attached!(Lsm, p => p.attach()),
        ProgType::Tracepoint => {
            let (category, name) = split_tracepoint(target)?;
            tracefs::check_syscall_layout(category, name)?;
            attached!(TracePoint, p => p.attach(category, name))
        }
        ProgType::Uprobe | ProgType::Uretprobe => {
            let (binary, location) = split_uprobe(target)?;
            attached!(UProbe, p => match location {
                UprobeAt::Symbol(sym) => p.attach(sym, &binary, UProbeScope::AllProcesses),
                UprobeAt::Offset(off) => {
                    p.attach(UProbeAttachLocation::AbsoluteOffset(off), &binary, UProbeScope::AllProcesses)
                }
            })
        }
        ProgType::RawTracepoint => attached!(RawTracePoint, p => p.attach(target)),
    };
    Ok(link)
}

/// Loads one program into the kernel (the verifier runs here) as `ty`; fentry,
/// fexit and LSM programs are bound to `target` at load, and need `btf`.
pub fn load(prog: &mut Program, btf: Option<&Btf>, program: &str, ty: ProgType, target: &str) -> Result<()> {
    let need_btf = || {
        btf.ok_or_else(|| {
            Error::attach(target, ty.name(), "needs the kernel's BTF (/sys/kernel/btf/vmlinux), which is missing")
        })
    };
    let r = match ty {
        ProgType::Kprobe | ProgType::Kretprobe => typed::<KProbe>(prog, program, ty)?.load(),
        ProgType::Fentry => typed::<FEntry>(prog, program, ty)?.load(target, need_btf()?),
        ProgType::Fexit => typed::<FExit>(prog, program, ty)?.load(target, need_btf()?),
        ProgType::Lsm => typed::<Lsm>(prog, program, ty)?.load(target, need_btf()?),
        ProgType::Tracepoint => typed::<TracePoint>(prog, program, ty)?.load(),
        ProgType::Uprobe | ProgType::Uretprobe => typed::<UProbe>(prog, program, ty)?.load(),
        ProgType::RawTracepoint => typed::<RawTracePoint>(prog, program, ty)?.load(),
    };
    r.map_err(|e| program_error(program, e))
}

fn typed<'a, T>(prog: &'a mut Program, program: &str, ty: ProgType) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    prog.try_into().map_err(|e: ProgramError| Error::load(program, format!("is not a {} program: {e}", ty.name())))
}

/// `category:name` (or `category/name`) of a tracepoint; tracefs must exist.
pub fn split_tracepoint(target: &str) -> Result<(&str, &str)> {
    let (c, n) = target.split_once([':', '/']).ok_or_else(|| Error::Config {
        field: "target",
        value: target.to_owned(),
        allowed: "a tracepoint as category:name, e.g. syscalls:sys_enter_openat".into(),
    })?;
    let root = tracefs::ensure_mounted()?;
    if !root.join("events").join(c).join(n).is_dir() {
        return Err(Error::attach(
            target,
            "tracepoint",
            format!("no such tracepoint on this kernel (nothing at {}/events/{c}/{n})", root.display()),
        ));
    }
    Ok((c, n))
}

enum UprobeAt<'a> {
    Symbol(&'a str),
    Offset(u64),
}

/// `binary:symbol` or `binary:0xoffset`. `libc` names the C library this
/// process uses; a binary without a slash is looked up on PATH.
fn split_uprobe(target: &str) -> Result<(std::path::PathBuf, UprobeAt<'_>)> {
    let bad = |why: &str| Error::Config {
        field: "target",
        value: target.to_owned(),
        allowed: format!("binary:symbol or binary:0xoffset for a uprobe ({why})"),
    };
    let (bin, loc) = target.rsplit_once(':').ok_or_else(|| bad("no ':'"))?;
    if bin.is_empty() || loc.is_empty() {
        return Err(bad("empty binary or symbol"));
    }
    let path =
        resolve_binary(bin).ok_or_else(|| Error::attach(target, "uprobe", format!("binary {bin:?} not found")))?;
    let at = match loc.strip_prefix("0x") {
        Some(hex) => UprobeAt::Offset(u64::from_str_radix(hex, 16).map_err(|_| bad("bad hex offset"))?),
        None => UprobeAt::Symbol(loc),
    };
    Ok((path, at))
}

fn resolve_binary(bin: &str) -> Option<std::path::PathBuf> {
    if bin == "libc" {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        return maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
            .map(Into::into);
    }
    if bin.contains('/') {
        let p = std::path::PathBuf::from(bin);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(bin)).find(|p| p.is_file())
}

/// Whether kprobes can be attached here: through the kprobe PMU, or through
/// tracefs's kprobe_events (what aya falls back to).
pub fn kprobes_supported() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || tracefs::ensure_mounted().is_ok_and(|root| root.join("kprobe_events").exists())
}

/// Whether an optional tracepoint target exists here.
pub fn tracepoint_exists(target: &str) -> bool {
    split_tracepoint(target).is_ok()
}

/// Whether the kernel said EPERM or EACCES somewhere in `e`'s sources.
fn denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        src = s.source();
    }
    false
}

/// Kprobe attach errors, with the usual cause spelled out.
fn kprobe_reason(e: &ProgramError) -> String {
    let r = chain(e);
    if r.contains("No such file or directory") {
        format!("{r} (no such kernel function, or the kernel has no kprobe support: CONFIG_KPROBES)")
    } else {
        r
    }
}

/// A program load error: a missing privilege, or the verifier log's last lines.
pub fn program_error(program: &str, e: ProgramError) -> Error {
    if let ProgramError::LoadError { io_error, verifier_log } = &e {
        let eperm = matches!(io_error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES));
        if eperm && sys::missing_tracing_caps(sys::effective_caps()).is_some() {
            return Error::Privilege { what: format!("loading {program}"), needed: "CAP_BPF and CAP_PERFMON" };
        }
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).rev().take(8).collect();
        let reason = if tail.is_empty() {
            format!("{io_error} (the kernel refused this program type; empty verifier log)")
        } else {
            format!("{io_error}; verifier log ends: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        };
        return Error::Load { program: program.to_owned(), reason, source: Some(Box::new(e)) };
    }
    Error::load_from(program, e)
}
