//! `bpfcap._native`: a thin PyO3 layer over `bpfcap-core`. The ring is read and
//! decoded with the GIL released; Python objects are made once per batch.

mod errors;
mod event;

use std::{sync::Mutex, time::Duration};

use bpfcap_core::{
    capture, clock, decode, filter::FilterSpec, lines::LineWriter, probes::ProgType, user_probe::UserProbeSpec,
    Capture, CaptureConfig, Payload,
};

use pyo3::{
    prelude::*,
    types::{PyBytes, PyDict, PyList},
};

use crate::{errors::to_py, event::PyEvent};

/// The reader's state; `None` once closed.
struct State {
    capture: Capture,
    /// Reused between batches so draining allocates nothing per batch.
    buf: Vec<bpfcap_core::Event>,
}

/// A live capture (see `bpfcap.CaptureManager` for the public API).
#[pyclass(module = "bpfcap._native", name = "Capture", frozen)]
struct PyCapture {
    state: Mutex<Option<State>>,
    wall_offset_ns: i64,
}

impl PyCapture {
    /// Runs `f` on the state with the GIL released: a call that waits for the
    /// lock must not hold the GIL, and errors become Python exceptions only
    /// after the lock is released (making one needs the GIL).
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut State) -> bpfcap_core::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let state = guard.as_mut().ok_or(bpfcap_core::Error::Closed)?;
            f(state)
        })
        .map_err(to_py)
    }
}

#[pymethods]
impl PyCapture {
    /// Loads the BPF object with a ring of `ring_size` bytes that wakes the
    /// reader once `wakeup_bytes` are pending.
    #[new]
    #[pyo3(signature = (ring_size, wakeup_bytes, disabled_mechanisms=Vec::new(), rings=1, redact=false))]
    fn new(
        py: Python<'_>,
        ring_size: u32,
        wakeup_bytes: u64,
        disabled_mechanisms: Vec<String>,
        rings: u32,
        redact: bool,
    ) -> PyResult<Self> {
        let mut capture = py
            .detach(|| Capture::open(CaptureConfig { ring_size, wakeup_bytes, rings }, disabled_mechanisms))
            .map_err(to_py)?;
        capture.set_redact(redact);
        Ok(Self {
            state: Mutex::new(Some(State { capture, buf: Vec::new() })),
            wall_offset_ns: clock::wall_offset_ns(),
        })
    }

    /// Attaches the probe producing event type `type_id` (no-op if attached).
    fn enable(&self, py: Python<'_>, type_id: u16) -> PyResult<()> {
        self.with(py, |s| s.capture.enable_kind(type_id))
    }

    /// Attaches the probes of several event types in one call (one lock, one thread hop).
    fn enable_kinds(&self, py: Python<'_>, type_ids: Vec<u16>) -> PyResult<()> {
        self.with(py, |s| s.capture.enable_kinds(&type_ids))
    }

    /// Attaches a built-in probe by its spec name (`tcp_connect`, `vfs_open`, ...).
    fn enable_probe(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let probe = bpfcap_core::probes::probe_by_name(name).ok_or_else(|| {
            to_py(bpfcap_core::Error::UnknownProbe { name: name.to_owned(), known: bpfcap_core::probes::names() })
        })?;
        self.with(py, |s| s.capture.enable(probe))
    }

    /// Detaches a built-in probe by its spec name; False if it was not attached.
    fn disable_probe(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        self.with(py, |s| s.capture.disable(name))
    }

    /// Which program types the kernel accepts: `(type, None)` or `(type, reason)`.
    fn program_types(&self, py: Python<'_>) -> PyResult<Vec<(&'static str, Option<String>)>> {
        let r = self.with(py, |s| Ok(s.capture.program_types()))?;
        Ok(r.into_iter().map(|(t, r)| (t, r.err())).collect())
    }

    /// Loads a user-defined probe; returns its id. `ty`: kprobe, kretprobe,
    /// uprobe, uretprobe, tracepoint, raw_tracepoint, lsm; with `object` and
    /// `program`, `ty` says how to attach that program of the user's object.
    #[pyo3(signature = (name, ty, target, object=None, program=None))]
    fn load_probe(
        &self,
        py: Python<'_>,
        name: String,
        ty: &str,
        target: String,
        object: Option<String>,
        program: Option<String>,
    ) -> PyResult<u32> {
        let ty = prog_type(ty)?;
        let object = match (object, program) {
            (Some(o), Some(p)) => Some((o, p)),
            (None, None) => None,
            _ => {
                return Err(to_py(bpfcap_core::Error::Config {
                    field: "object",
                    value: "only one of object/program".into(),
                    allowed: "both an object file and a program name, or neither".into(),
                }))
            }
        };
        let spec = UserProbeSpec { name, ty, target, object };
        self.with(py, |s| s.capture.load_user(spec))
    }

    /// Detaches a user-defined probe; False if none has that name.
    fn unload_probe(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        self.with(py, |s| Ok(s.capture.unload_user(name)))
    }

    /// The loaded user-defined probes: name, id, type, target, object, program.
    fn user_probes<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let rows: Vec<_> = self.with(py, |s| {
            Ok(s.capture
                .user_probes()
                .filter(|u| !u.name.starts_with("__bpfcap"))
                .map(|u| (u.name.to_string(), u.id, u.spec.ty.name(), u.spec.target.clone(), u.spec.object.clone()))
                .collect())
        })?;
        rows.into_iter()
            .map(|(name, id, ty, target, object)| {
                let d = PyDict::new(py);
                d.set_item("name", name)?;
                d.set_item("id", id)?;
                d.set_item("type", ty)?;
                d.set_item("target", target)?;
                d.set_item("object", object.as_ref().map(|(o, _)| o.clone()))?;
                d.set_item("program", object.map(|(_, p)| p))?;
                Ok(d)
            })
            .collect()
    }

    /// Puts a filter in force in the kernel (atomically, on live programs).
    #[pyo3(signature = (*, pids, uids, comm, exclude_comm, cgroup_paths, container_ids, types, follow_children,
                        sampling_rate, sampling_by_type, max_events_per_sec))]
    #[allow(clippy::too_many_arguments)]
    fn set_filter(
        &self,
        py: Python<'_>,
        pids: Vec<u32>,
        uids: Vec<u32>,
        comm: Vec<String>,
        exclude_comm: Vec<String>,
        cgroup_paths: Vec<String>,
        container_ids: Vec<String>,
        types: Option<Vec<u16>>,
        follow_children: bool,
        sampling_rate: f64,
        sampling_by_type: Vec<(u16, f64)>,
        max_events_per_sec: u32,
    ) -> PyResult<()> {
        let spec = FilterSpec {
            pids,
            uids,
            comm,
            exclude_comm,
            cgroup_paths,
            container_ids,
            cgroups: Vec::new(),
            types,
            follow_children,
            sampling_rate,
            sampling_by_type,
            max_events_per_sec,
        };
        self.with(py, |s| s.capture.set_filter(spec))
    }

    /// Labels the process tree of `pid`; its events carry `session`.
    fn track(&self, py: Python<'_>, pid: u32, label: String) -> PyResult<u32> {
        self.with(py, |s| s.capture.track(pid, &label))
    }

    /// `(bytes pending in the rings, their total size)`.
    fn fill(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        self.with(py, |s| Ok(s.capture.fill()))
    }

    /// Records lost because a ring was full, per CPU.
    fn lost_by_cpu(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        self.with(py, |s| s.capture.lost_by_cpu())
    }

    /// Events dropped in the kernel before the ring: `{reason: [count per type id]}`.
    fn drops<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = self.with(py, |s| s.capture.drops())?;
        let out = PyDict::new(py);
        for (name, counts) in ["filtered", "sampled", "rate_limited"].into_iter().zip(d) {
            out.set_item(name, counts)?;
        }
        Ok(out)
    }

    /// The ring buffer's fd, for `anyio.wait_readable`.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.with(py, |s| Ok(s.capture.fd()))
    }

    /// Consumes the wake-ups that made `fileno()` readable (it is edge-triggered).
    fn take_wakeups(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |s| s.capture.take_wakeups())
    }

    /// Blocks up to `timeout` seconds (GIL released) for a wake-up.
    fn poll(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = Duration::from_secs_f64(timeout.max(0.0));
        self.with(py, |s| s.capture.poll(timeout))
    }

    /// Up to `max` pending events, decoded with the GIL released.
    fn drain<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let mut events = self.with(py, |s| {
            let mut buf = std::mem::take(&mut s.buf);
            s.capture.drain(max, &mut buf);
            Ok(buf)
        })?;
        let offset = self.wall_offset_ns;
        let list = PyEvent::list(py, events.drain(..), offset);
        // Hand the (empty) buffer back so the next batch reuses its allocation.
        let _ = self.with(py, move |s| {
            s.buf = events;
            Ok(())
        });
        list
    }

    /// Up to `max` pending events of `kinds` (all if None) as lines (see
    /// `encode_lines`), drained and written with the GIL released: no Python
    /// object per event. Returns `(data, counts by type name, lost, records taken)`.
    #[pyo3(signature = (max, format, kinds=None))]
    fn drain_lines<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        format: &str,
        kinds: Option<Vec<u16>>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>, u64, usize)> {
        let mut writer = LineWriter::new(event::parse_format(format)?);
        let offset = self.wall_offset_ns;
        event::with_buffer(|out| {
            let taken = self.with(py, |s| {
                let taken = s.capture.drain(max, &mut s.buf);
                for ev in s.buf.drain(..) {
                    // (a loss event goes with the kind it is about)
                    let kind = match &ev.payload {
                        Payload::Loss(bpfcap_core::event::Loss { lost_kind: Some(k), .. }) => *k,
                        _ => ev.hdr.kind,
                    };
                    if kinds.as_ref().is_none_or(|k| k.contains(&kind)) {
                        writer.push(&ev, offset, out);
                    }
                }
                Ok(taken)
            })?;
            Ok((PyBytes::new(py, out), event::counts_dict(py, &writer)?, writer.lost, taken))
        })
    }

    /// Loss events for what the kernel counted since the last ones (`drain`
    /// adds them every quarter second; this is for the end of a capture).
    fn announce_losses<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.with(py, |s| {
            let mut out = Vec::new();
            s.capture.announce_losses(&mut out);
            Ok(out)
        })?;
        PyEvent::list(py, events.into_iter(), self.wall_offset_ns)
    }

    /// Up to `max` pending records as raw bytes (for recording test fixtures).
    fn drain_raw<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let records = self.with(py, |s| Ok(s.capture.drain_raw(max)))?;
        Ok(records.iter().map(|r| PyBytes::new(py, r)).collect())
    }

    /// Records the programs could not write (ring full), indexed by event type id.
    fn lost_in_kernel(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        self.with(py, |s| s.capture.lost_in_kernel())
    }

    /// Reader counters: polls, batches, records, bytes, decode errors.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.with(py, |s| Ok(s.capture.stats()))?;
        let d = PyDict::new(py);
        d.set_item("polls", st.polls)?;
        d.set_item("batches", st.batches)?;
        d.set_item("received", st.decode.records)?;
        d.set_item("bytes", st.decode.bytes)?;
        d.set_item("decode_errors", st.decode.errors())?;
        d.set_item("enrich_failed", st.enrich_failed)?;
        d.set_item("redacted_args", st.redacted_args)?;
        d.set_item("filter_update_errors", st.filter_update_errors)?;
        d.set_item("loss_check_errors", st.loss_check_errors)?;
        Ok(d)
    }

    /// The attached probes: name, event type, mechanism, kernel target, program.
    fn probes<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let probes = self.with(py, |s| Ok(s.capture.probes().to_vec()))?;
        probes.iter().map(|p| probe_dict(py, p)).collect()
    }

    /// Detaches every probe and frees the maps. Idempotent.
    fn close(&self, py: Python<'_>) {
        let state = py.detach(|| self.state.lock().unwrap_or_else(|p| p.into_inner()).take());
        py.detach(move || drop(state));
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        py.detach(|| self.state.lock().unwrap_or_else(|p| p.into_inner()).is_none())
    }
}

fn prog_type(name: &str) -> PyResult<ProgType> {
    Ok(match name {
        "kprobe" => ProgType::Kprobe,
        "kretprobe" => ProgType::Kretprobe,
        "uprobe" => ProgType::Uprobe,
        "uretprobe" => ProgType::Uretprobe,
        "tracepoint" => ProgType::Tracepoint,
        "raw_tracepoint" => ProgType::RawTracepoint,
        "lsm" => ProgType::Lsm,
        "fentry" => ProgType::Fentry,
        "fexit" => ProgType::Fexit,
        other => {
            return Err(to_py(bpfcap_core::Error::Config {
                field: "type",
                value: other.into(),
                allowed:
                    "kprobe, kretprobe, uprobe, uretprobe, tracepoint, raw_tracepoint, lsm (fentry, fexit for objects)"
                        .into(),
            }))
        }
    })
}

fn probe_dict<'py>(py: Python<'py>, p: &bpfcap_core::ProbeStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", p.name)?;
    d.set_item("type", bpfcap_core::event::kind_name(p.kind))?;
    d.set_item("mechanism", p.mechanism)?;
    d.set_item("targets", p.attachments.iter().map(|(_, t)| *t).collect::<Vec<_>>())?;
    d.set_item("programs", p.attachments.iter().map(|(prog, _)| *prog).collect::<Vec<_>>())?;
    d.set_item("skipped", &p.skipped)?;
    d.set_item("left_out", &p.left_out)?;
    d.set_item("enabled", p.enabled)?;
    Ok(d)
}

/// A command line with values that look like secrets replaced by `[REDACTED]`.
#[pyfunction]
fn redact_argv(mut argv: Vec<String>) -> Vec<String> {
    bpfcap_core::redact::redact_argv(&mut argv);
    argv
}

/// Decodes recorded ring records; returns the events and the decoder's counts.
#[pyfunction]
fn decode_records<'py>(
    py: Python<'py>,
    records: Vec<Bound<'py, PyBytes>>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyDict>)> {
    let mut stats = decode::DecodeStats::default();
    let mut events = Vec::with_capacity(records.len());
    for r in &records {
        decode::decode_into(r.as_bytes(), &mut stats, &mut events);
    }
    let offset = clock::wall_offset_ns();
    let list = PyEvent::list(py, events.into_iter(), offset)?;
    let d = PyDict::new(py);
    d.set_item("received", stats.records)?;
    d.set_item("bytes", stats.bytes)?;
    d.set_item("short", stats.short)?;
    d.set_item("bad_size", stats.bad_size)?;
    d.set_item("unknown_kind", stats.unknown_kind)?;
    d.set_item("oversized", stats.oversized)?;
    Ok((list, d))
}

/// A loss notice to hand a subscriber in band.
#[pyfunction]
#[pyo3(signature = (count, reason, lost_type=None))]
fn loss_event(count: u64, reason: &str, lost_type: Option<u16>) -> PyEvent {
    let reason = match reason {
        "kernel_ring_full" => "kernel_ring_full",
        "subscriber_queue_full" => "subscriber_queue_full",
        "rate_limited" => "rate_limited",
        "sampled" => "sampled",
        _ => "other",
    };
    PyEvent::new(bpfcap_core::Event::loss(clock::monotonic_ns(), count, reason, lost_type), clock::wall_offset_ns())
}

/// Event type names and ids, as the core knows them.
#[pyfunction]
fn event_types() -> Vec<(u16, &'static str)> {
    bpfcap_core::event::kind_names().collect()
}

/// The built-in event types as the core defines them: id, name, doc, and
/// the fields each adds (key, JSON type, optional, meaning).
#[pyfunction]
fn event_schema<'py>(py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    bpfcap_core::types::TYPES
        .iter()
        .map(|t| {
            let d = PyDict::new(py);
            d.set_item("id", t.kind)?;
            d.set_item("name", t.name)?;
            d.set_item("doc", t.doc)?;
            let fields: Vec<(&str, &str, bool, &str)> =
                t.fields.iter().map(|f| (f.key, f.schema, f.optional, f.meaning)).collect();
            d.set_item("fields", fields)?;
            Ok(d)
        })
        .collect()
}

/// The built-in probes and their attach plans, in order of preference.
#[pyfunction]
fn supported_probes<'py>(py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    bpfcap_core::PROBES
        .iter()
        .map(|p| {
            let d = PyDict::new(py);
            d.set_item("name", p.name)?;
            d.set_item("type", bpfcap_core::event::kind_name(p.kind))?;
            let plans: Vec<(&str, Vec<&str>)> =
                p.plans.iter().map(|pl| (pl.mechanism, pl.attach.iter().map(|a| a.target).collect())).collect();
            d.set_item("plans", plans)?;
            Ok(d)
        })
        .collect()
}

/// Facts about this machine for `bpfcap doctor`.
#[pyfunction]
fn system_info<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    use bpfcap_core::sys;
    let d = PyDict::new(py);
    sys::ensure_securityfs();
    let release = sys::kernel_release();
    d.set_item("kernel", &release)?;
    d.set_item("kernel_version", sys::parse_kernel_version(&release))?;
    d.set_item("btf", sys::btf_available())?;
    d.set_item("lockdown", sys::lockdown_mode())?;
    d.set_item("lsms", sys::active_lsms())?;
    let caps = sys::effective_caps();
    d.set_item("missing_privileges", sys::missing_tracing_caps(caps))?;
    let missing: Vec<String> = match bpfcap_core::btf::Btf::from_sys_fs() {
        Ok(btf) => bpfcap_core::offsets::missing(&bpfcap_core::offsets::from_btf(&btf)),
        Err(_) => vec!["(no BTF)".into()],
    };
    d.set_item("missing_kernel_fields", missing)?;
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCapture>()?;
    m.add_class::<PyEvent>()?;
    m.add_function(wrap_pyfunction!(event::encode_lines, m)?)?;
    m.add_function(wrap_pyfunction!(decode_records, m)?)?;
    m.add_function(wrap_pyfunction!(redact_argv, m)?)?;
    m.add_function(wrap_pyfunction!(loss_event, m)?)?;
    m.add_function(wrap_pyfunction!(event_types, m)?)?;
    m.add_function(wrap_pyfunction!(event_schema, m)?)?;
    m.add_function(wrap_pyfunction!(supported_probes, m)?)?;
    m.add_function(wrap_pyfunction!(system_info, m)?)?;
    m.add("PAGE_SIZE", capture::page_size())?;
    Ok(())
}
