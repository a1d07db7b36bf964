//! Our BPF object as the attach algorithm ([`fallback`]) sees the kernel:
//! its programs, loaded on first use (or several at once by [`Object::preload`]),
//! and which program types this kernel takes.

use std::{
    collections::{HashMap, HashSet},
    io,
};

use aya::{Ebpf, EbpfError, EbpfLoader};

use crate::{
    attach::{self, Link},
    error::{Error, Result},
    fallback,
    probes::{self, ProgType},
};

/// The BPF object built from `bpf-rs/` by build.rs.
pub(crate) static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpfcap.bpf.o"));

/// aya's parse of the kernel's BTF, started in the background.
enum KernelBtf {
    Parsing(std::thread::JoinHandle<Option<aya::Btf>>),
    Parsed(Option<aya::Btf>),
}

impl KernelBtf {
    fn get(&mut self) -> Option<&aya::Btf> {
        if let KernelBtf::Parsing(_) = self {
            let KernelBtf::Parsing(h) = std::mem::replace(self, KernelBtf::Parsed(None)) else { unreachable!() };
            *self = KernelBtf::Parsed(h.join().ok().flatten());
        }
        match self {
            KernelBtf::Parsed(b) => b.as_ref(),
            KernelBtf::Parsing(_) => None,
        }
    }
}

/// What the kernel answered a do-nothing program of one type.
#[derive(Clone, Debug)]
pub(crate) enum TypeCheck {
    Works,
    /// Refused to this process (a capability): the probes' own plans say it again.
    Denied(String),
    /// Refused, or impossible to attach, on this kernel: plans of that type are skipped.
    Refused(String),
}

pub(crate) struct Object {
    pub ebpf: Ebpf,
    /// aya's view of the kernel BTF, for fentry/fexit/LSM: parsed in the
    /// background from `load` on (40 ms), taken on first use.
    btf: KernelBtf,
    loaded: HashSet<&'static str>,
    /// Program types tried with a do-nothing program, and the kernel's answer.
    type_checks: HashMap<ProgType, TypeCheck>,
}

impl Object {
    /// Creates the object's maps (`loader` says their sizes and the globals);
    /// no program is loaded yet. `memlock` is the locked-memory limit when
    /// this kernel charges maps to it (before 5.11).
    pub fn load(mut loader: EbpfLoader<'_>, memlock: Option<u64>, release: &str) -> Result<Self> {
        let ebpf = loader.load(BPF_OBJECT).map_err(|e| match (e, memlock) {
            (EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }), Some(limit))
                if is_eperm(&io_error) =>
            {
                Error::Privilege {
                    what: format!(
                        "creating BPF maps on Linux {release} (before 5.11 they count against the locked-memory \
                         limit, {} KiB here)",
                        limit / 1024
                    ),
                    needed: "CAP_SYS_RESOURCE or a higher limit (`ulimit -l unlimited`, systemd LimitMEMLOCK=infinity)",
                }
            }
            (e, _) => load_error("bpfcap.bpf.o", e),
        })?;
        Ok(Self {
            ebpf,
            btf: KernelBtf::Parsing(std::thread::spawn(|| aya::Btf::from_sys_fs().ok())),
            loaded: HashSet::new(),
            type_checks: HashMap::new(),
        })
    }

    pub fn btf(&mut self) -> Option<&aya::Btf> {
        self.btf.get()
    }

    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf.take_map(name).ok_or_else(|| Error::load(name, "map missing from the BPF object"))
    }

    pub fn is_loaded(&self, program: &str) -> bool {
        self.loaded.contains(program)
    }

    /// Loads these programs `(name -> (type, target))` in parallel, one
    /// thread each. One that fails here is loaded again by the attach that
    /// needs it, which reports why.
    pub fn preload(&mut self, wanted: &HashMap<&'static str, (ProgType, &'static str)>) {
        let btf = self.btf.get();
        let loaded: Vec<&'static str> = std::thread::scope(|s| {
            let jobs: Vec<_> = self
                .ebpf
                .programs_mut()
                .filter_map(|(name, prog)| wanted.get_key_value(name).map(|(n, w)| (*n, *w, prog)))
                .map(|(name, (ty, target), prog)| {
                    s.spawn(move || attach::load(prog, btf, name, ty, target).ok().map(|()| name))
                })
                .collect();
            jobs.into_iter().filter_map(|j| j.join().ok().flatten()).collect()
        });
        self.loaded.extend(loaded);
    }

    /// Each loaded program and the instructions the verifier processed for it
    /// (the main cost of attaching a probe; `None` before 5.16).
    pub fn verifier_costs(&self) -> Vec<(String, Option<u32>)> {
        let mut out: Vec<_> = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| p.info().ok().map(|i| (name.to_owned(), i.verified_instruction_count())))
            .collect();
        out.sort();
        out
    }

    /// Whether this kernel accepts programs of `ty` at all (kprobe, fentry/fexit,
    /// LSM: the types a kernel may lack), learned once by loading a do-nothing
    /// program, never by attaching one (detaching a trampoline waits for an RCU
    /// tasks grace period: seconds under emulation); `None` for the other types.
    pub fn type_check(&mut self, ty: ProgType) -> Option<TypeCheck> {
        let test = probes::selftest_for(ty)?;
        if let Some(known) = self.type_checks.get(&test.ty) {
            return Some(known.clone());
        }
        let check = if test.ty == ProgType::Kprobe && !attach::kprobes_supported() {
            TypeCheck::Refused(
                "this kernel has no kprobes (no kprobe PMU in /sys/bus/event_source/devices, no kprobe_events in \
                 tracefs: CONFIG_KPROBES is not set)"
                    .into(),
            )
        } else {
            let btf = self.btf.get();
            let loaded = match self.ebpf.program_mut(test.program) {
                Some(prog) => attach::load(prog, btf, test.program, test.ty, test.target),
                None => Err(Error::load(test.program, "not in the BPF object")),
            };
            match loaded {
                Ok(()) => {
                    self.loaded.insert(test.program);
                    TypeCheck::Works
                }
                Err(e @ Error::Privilege { .. }) => TypeCheck::Denied(e.to_string()),
                Err(e) => TypeCheck::Refused(e.to_string()),
            }
        };
        self.type_checks.insert(test.ty, check.clone());
        Some(check)
    }
}

impl fallback::Kernel for Object {
    type Link = Link;

    fn refuses(&mut self, ty: ProgType) -> Option<String> {
        match self.type_check(ty) {
            Some(TypeCheck::Refused(why)) => Some(why),
            _ => None,
        }
    }

    fn tracepoint_exists(&self, target: &str) -> bool {
        attach::tracepoint_exists(target)
    }

    fn attach(&mut self, program: &'static str, ty: ProgType, target: &'static str) -> Result<Link> {
        let loaded = self.loaded.contains(program);
        let link = attach::attach(&mut self.ebpf, self.btf.get(), program, ty, target, loaded)?;
        self.loaded.insert(program);
        Ok(link)
    }
}

pub(crate) fn map_error(name: &str, e: aya::maps::MapError) -> Error {
    Error::load_from(name, e)
}

fn is_eperm(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn load_error(what: &str, e: EbpfError) -> Error {
    match e {
        EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) if is_eperm(&io_error) => {
            Error::Privilege { what: "creating BPF maps".into(), needed: "CAP_BPF" }
        }
        EbpfError::ProgramError(pe) => attach::program_error(what, pe),
        other => Error::load_from(what, other),
    }
}
