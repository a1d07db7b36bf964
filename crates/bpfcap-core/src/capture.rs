//! A live capture: the loaded BPF object, the probes attached on demand, and
//! the ring buffer they write to, read and decoded in batches.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, RawTracePoint},
    Ebpf, EbpfError, EbpfLoader,
};
use bpfcap_common::{kind, Offsets, Settings};

use crate::{
    btf::Btf,
    decode::{decode, DecodeStats},
    error::{Error, Result},
    event::{kind_name, Event},
    offsets, sys,
};

/// The BPF object built from `bpf-rs/` by build.rs.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpfcap.bpf.o"));

const RING_MAP: &str = "BPFCAP_EVENTS";
const LOST_MAP: &str = "BPFCAP_LOST";

/// How a probe is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    RawTracepoint,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Self::RawTracepoint => "raw_tracepoint",
        }
    }
}

/// One way to attach a probe: a program of our object and its kernel target.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub mechanism: Mechanism,
    pub program: &'static str,
    pub target: &'static str,
}

/// A built-in probe: the event kind it produces and its attach plans, in order
/// of preference.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub name: &'static str,
    pub kind: u16,
    pub plans: &'static [Plan],
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        name: "sched_process_exec",
        kind: kind::PROCESS_EXEC,
        plans: &[Plan { mechanism: Mechanism::RawTracepoint, program: "bpfcap_exec", target: "sched_process_exec" }],
    },
    ProbeSpec {
        name: "sched_process_exit",
        kind: kind::PROCESS_EXIT,
        plans: &[Plan { mechanism: Mechanism::RawTracepoint, program: "bpfcap_exit", target: "sched_process_exit" }],
    },
    ProbeSpec {
        name: "sched_process_fork",
        kind: kind::PROCESS_FORK,
        plans: &[Plan { mechanism: Mechanism::RawTracepoint, program: "bpfcap_fork", target: "sched_process_fork" }],
    },
];

/// The probe that produces events of `kind`.
pub fn probe_for_kind(kind: u16) -> Option<&'static ProbeSpec> {
    PROBES.iter().find(|p| p.kind == kind)
}

/// An attached probe, as `probes()` reports it.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub kind: u16,
    pub mechanism: &'static str,
    pub target: &'static str,
    pub program: &'static str,
}

/// Load-time settings of a capture.
#[derive(Clone, Copy, Debug)]
pub struct CaptureConfig {
    /// Ring buffer size in bytes: a power of two and a multiple of the page size.
    pub ring_size: u32,
    /// Wake the reader once this many bytes are pending.
    pub wakeup_bytes: u64,
}

impl CaptureConfig {
    pub fn validate(&self) -> Result<()> {
        let page = page_size();
        if !self.ring_size.is_power_of_two() || self.ring_size < page || self.ring_size > 1 << 30 {
            return Err(Error::Config {
                field: "ringBufferSize",
                value: self.ring_size.to_string(),
                allowed: format!("a power of two from {page} (one page) to {} bytes", 1u32 << 30),
            });
        }
        Ok(())
    }
}

pub fn page_size() -> u32 {
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u32
}

/// Counters of the reader side.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReaderStats {
    pub polls: u64,
    pub batches: u64,
    pub decode: DecodeStats,
}

pub struct Capture {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    attached: Vec<ProbeStatus>,
    pub offsets: Offsets,
    pub stats: ReaderStats,
}

impl Capture {
    /// Checks privileges, reads this kernel's BTF, and loads the BPF object
    /// (maps created, no program loaded or attached yet).
    pub fn open(config: CaptureConfig) -> Result<Self> {
        config.validate()?;
        if let Some(needed) = sys::missing_tracing_caps(sys::effective_caps()) {
            return Err(Error::Privilege { what: "loading BPF programs".into(), needed });
        }
        let offsets = match Btf::from_sys_fs() {
            Ok(btf) => offsets::from_btf(&btf),
            // Without BTF the programs still run; fields needing offsets stay 0.
            Err(_) => Offsets::UNKNOWN,
        };
        let settings = Settings { wakeup_bytes: config.wakeup_bytes };
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("SETTINGS", &settings, true)
            .map_max_entries(RING_MAP, config.ring_size)
            .load(BPF_OBJECT)
            .map_err(|e| load_error("bpfcap.bpf.o", e))?;
        let ring = take_map(&mut ebpf, RING_MAP)?;
        let ring = RingBuf::try_from(ring).map_err(|e| map_error(RING_MAP, e))?;
        let lost = take_map(&mut ebpf, LOST_MAP)?;
        let lost = PerCpuArray::try_from(lost).map_err(|e| map_error(LOST_MAP, e))?;
        Ok(Self { ebpf, ring, lost, attached: Vec::new(), offsets, stats: ReaderStats::default() })
    }

    /// Attaches the probe producing `kind` unless it already is.
    pub fn enable_kind(&mut self, kind: u16) -> Result<()> {
        let probe = probe_for_kind(kind).ok_or_else(|| Error::UnknownProbe {
            name: kind_name(kind).to_owned(),
            known: PROBES.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
        })?;
        self.enable(probe)
    }

    /// Attaches a probe by the first of its plans that works; the error names
    /// every plan tried and why it failed.
    pub fn enable(&mut self, probe: &'static ProbeSpec) -> Result<()> {
        if self.attached.iter().any(|a| a.name == probe.name) {
            return Ok(());
        }
        let mut failures = Vec::new();
        for plan in probe.plans {
            match self.attach_plan(plan) {
                Ok(()) => {
                    self.attached.push(ProbeStatus {
                        name: probe.name,
                        kind: probe.kind,
                        mechanism: plan.mechanism.name(),
                        target: plan.target,
                        program: plan.program,
                    });
                    return Ok(());
                }
                Err(e) => failures.push(e),
            }
        }
        match failures.len() {
            1 => Err(failures.pop().expect("one failure")),
            _ => Err(Error::Attach {
                probe: probe.name.to_owned(),
                mechanism: "any plan",
                reason: failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            }),
        }
    }

    fn attach_plan(&mut self, plan: &Plan) -> Result<()> {
        let program = self.ebpf.program_mut(plan.program).ok_or_else(|| Error::Load {
            program: plan.program.to_owned(),
            reason: "not in the BPF object".into(),
        })?;
        match plan.mechanism {
            Mechanism::RawTracepoint => {
                let p: &mut RawTracePoint = program.try_into().map_err(|e: ProgramError| Error::Load {
                    program: plan.program.to_owned(),
                    reason: e.to_string(),
                })?;
                p.load().map_err(|e| program_error(plan.program, e))?;
                p.attach(plan.target).map_err(|e| Error::Attach {
                    probe: plan.target.to_owned(),
                    mechanism: plan.mechanism.name(),
                    reason: program_reason(&e),
                })?;
            }
        }
        Ok(())
    }

    pub fn probes(&self) -> &[ProbeStatus] {
        &self.attached
    }

    /// The ring's file descriptor: readable when records are pending and the
    /// programs asked for a wake-up.
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Waits up to `timeout` for a wake-up; `Ok(true)` if the ring is readable.
    pub fn poll(&mut self, timeout: Duration) -> Result<bool> {
        self.stats.polls += 1;
        let mut pfd = libc::pollfd { fd: self.fd(), events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(Error::io("polling the ring buffer", err));
        }
        Ok(n > 0)
    }

    /// Decodes up to `max` pending records into `out` (appended); records that
    /// fail to decode are counted and skipped. Returns how many were read.
    pub fn drain(&mut self, max: usize, out: &mut Vec<Event>) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = self.ring.next() else { break };
            n += 1;
            if let Ok(ev) = decode(&item, &mut self.stats.decode) {
                out.push(ev);
            }
        }
        if n > 0 {
            self.stats.batches += 1;
        }
        n
    }

    /// Raw records, undecoded (for recording test fixtures).
    pub fn drain_raw(&mut self, max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = self.ring.next() else { break };
            out.push(item.to_vec());
        }
        out
    }

    /// Records the programs could not write because the ring was full, per kind.
    pub fn lost_in_kernel(&self) -> Result<Vec<u64>> {
        (0..kind::COUNT)
            .map(|k| {
                self.lost
                    .get(&k, 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .map_err(|e| map_error(LOST_MAP, e))
            })
            .collect()
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| Error::Load { program: name.into(), reason: "map missing from the BPF object".into() })
}

fn map_error(name: &str, e: aya::maps::MapError) -> Error {
    Error::Load { program: name.into(), reason: e.to_string() }
}

fn is_eperm(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn load_error(what: &str, e: EbpfError) -> Error {
    match e {
        EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) if is_eperm(&io_error) => {
            Error::Privilege { what: "creating BPF maps".into(), needed: "CAP_BPF" }
        }
        EbpfError::ProgramError(pe) => program_error(what, pe),
        other => Error::Load { program: what.into(), reason: other.to_string() },
    }
}

/// A program load error, with the verifier log's last lines when there is one.
fn program_error(program: &str, e: ProgramError) -> Error {
    if let ProgramError::LoadError { io_error, .. } = &e {
        if is_eperm(io_error) && sys::missing_tracing_caps(sys::effective_caps()).is_some() {
            return Error::Privilege { what: format!("loading {program}"), needed: "CAP_BPF and CAP_PERFMON" };
        }
    }
    Error::Load { program: program.into(), reason: program_reason(&e) }
}

fn program_reason(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            if tail.is_empty() {
                format!("{io_error} (empty verifier log)")
            } else {
                format!("{io_error}; verifier log ends: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
            }
        }
        other => {
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
    }
}
