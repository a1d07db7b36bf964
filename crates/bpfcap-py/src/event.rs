//! The Python view of a decoded event. Fields are converted when read, so an
//! event that is only counted or filtered costs one small allocation.

use bpfcap_core::{
    clock,
    event::{kind_name, kind_names, FieldValue},
    json,
    lines::{self, LineWriter},
    Event, Payload,
};
use pyo3::{
    exceptions::PyValueError,
    prelude::*,
    sync::PyOnceLock,
    types::{PyBytes, PyDict, PyList},
};

// The free list holds two default batches of events (208 bytes each): freed to
// pymalloc instead, a batch's arena is returned to the OS and faulted in again.
#[pyclass(module = "bpfcap._native", name = "Event", frozen, freelist = 8192)]
pub struct PyEvent {
    ev: Event,
    wall_offset_ns: i64,
}

impl PyEvent {
    pub fn new(ev: Event, wall_offset_ns: i64) -> Self {
        Self { ev, wall_offset_ns }
    }

    /// A batch of events as a Python list. Events hold no Python objects, so
    /// they cannot be part of a reference cycle: they are untracked by the
    /// cyclic garbage collector, which would otherwise walk every event of
    /// every live batch at each collection.
    pub fn list<'py>(
        py: Python<'py>,
        events: impl ExactSizeIterator<Item = Event>,
        wall_offset_ns: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for ev in events {
            let obj = Bound::new(py, Self::new(ev, wall_offset_ns))?;
            unsafe { pyo3::ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) };
            list.append(obj)?;
        }
        Ok(list)
    }
}

fn value_object<'py>(py: Python<'py>, v: json::Value<'_>) -> PyResult<Bound<'py, PyAny>> {
    use json::Value as V;
    Ok(match v {
        V::Null => py.None().into_bound(py),
        V::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        V::Int(i) => i.into_pyobject(py)?.into_any(),
        V::UInt(u) => u.into_pyobject(py)?.into_any(),
        V::Str(s) => s.into_pyobject(py)?.into_any(),
        V::String(s) => s.into_pyobject(py)?.into_any(),
        V::Strs(items) => PyList::new(py, items)?.into_any(),
        V::UInts(items) => PyList::new(py, items)?.into_any(),
        V::Fields(fields) => fields_dict(py, fields)?.into_any(),
        V::Time(t) => clock::rfc3339(t).into_pyobject(py)?.into_any(),
        V::Hex(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into_pyobject(py)?.into_any(),
    })
}

/// A batch of events as lines (`format`: json or text) in one bytes object,
/// with its events counted by type name and the events its loss notices announce.
#[pyfunction]
pub fn encode_lines<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyList>,
    format: &str,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>, u64)> {
    let mut writer = LineWriter::new(parse_format(format)?);
    let data = with_buffer(|out| {
        for item in batch.iter() {
            let ev = item.cast::<PyEvent>()?;
            let ev = ev.get();
            writer.push(&ev.ev, ev.wall_offset_ns, out);
        }
        Ok(PyBytes::new(py, out))
    })?;
    Ok((data, counts_dict(py, &writer)?, writer.lost))
}

pub fn parse_format(name: &str) -> PyResult<lines::Format> {
    lines::Format::parse(name)
        .ok_or_else(|| PyValueError::new_err(format!("invalid format = {name:?}: must be 'json' or 'text'")))
}

pub fn counts_dict<'py>(py: Python<'py>, writer: &LineWriter) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, n) in writer.counts() {
        d.set_item(name, n)?;
    }
    Ok(d)
}

/// A buffer kept between batches: a fresh one would be page-faulted in for
/// every batch (megabytes each).
pub fn with_buffer<T>(f: impl FnOnce(&mut Vec<u8>) -> PyResult<T>) -> PyResult<T> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut buf = b.take();
        buf.clear();
        let r = f(&mut buf);
        if buf.capacity() <= 64 << 20 {
            b.replace(buf); // (a huge one is let go)
        }
        r
    })
}

fn fields_dict<'py>(py: Python<'py>, fields: &[(std::sync::Arc<str>, FieldValue)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, v) in fields {
        match v {
            FieldValue::Int(i) => d.set_item(&**name, i)?,
            FieldValue::UInt(u) => d.set_item(&**name, u)?,
            FieldValue::Str(s) => d.set_item(&**name, s)?,
            FieldValue::Bytes(b) => d.set_item(&**name, PyList::new(py, b)?)?,
            FieldValue::Missing => d.set_item(&**name, py.None())?,
        }
    }
    Ok(d)
}

/// `EventType` members by id, looked up once.
fn event_type(py: Python<'_>, id: u16) -> PyResult<Py<PyAny>> {
    static MEMBERS: PyOnceLock<Vec<Py<PyAny>>> = PyOnceLock::new();
    let members = MEMBERS.get_or_try_init(py, || {
        let cls = py.import("bpfcap.events")?.getattr("EventType")?;
        let max = kind_names().map(|(k, _)| k).max().unwrap_or(0);
        (0..=max)
            .map(|k| Ok(cls.call1((k,)).map(Bound::unbind).unwrap_or_else(|_| py.None())))
            .collect::<PyResult<Vec<_>>>()
    })?;
    Ok(members.get(id as usize).map_or_else(|| py.None(), |m| m.clone_ref(py)))
}

#[pymethods]
impl PyEvent {
    /// The event type as a `bpfcap.EventType`.
    #[getter]
    fn r#type(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        event_type(py, self.ev.hdr.kind)
    }
    /// The numeric event type id (cheaper than `type` in hot loops).
    #[getter]
    fn type_id(&self) -> u16 {
        self.ev.hdr.kind
    }
    #[getter]
    fn type_name(&self) -> &'static str {
        kind_name(self.ev.hdr.kind)
    }
    #[getter]
    fn ts_ns(&self) -> u64 {
        self.ev.hdr.ts_ns
    }
    /// Wall-clock time, RFC 3339 with nanoseconds.
    #[getter]
    fn time(&self) -> String {
        clock::rfc3339(self.ev.hdr.ts_ns as i64 + self.wall_offset_ns)
    }
    #[getter]
    fn pid(&self) -> u32 {
        self.ev.hdr.pid
    }
    #[getter]
    fn tid(&self) -> u32 {
        self.ev.hdr.tid
    }
    #[getter]
    fn ppid(&self) -> u32 {
        self.ev.hdr.ppid
    }
    #[getter]
    fn uid(&self) -> u32 {
        self.ev.hdr.uid
    }
    #[getter]
    fn gid(&self) -> u32 {
        self.ev.hdr.gid
    }
    #[getter]
    fn comm(&self) -> String {
        self.ev.comm_str()
    }
    #[getter]
    fn cgroup_id(&self) -> u64 {
        self.ev.hdr.cgroup_id
    }
    #[getter]
    fn mnt_ns(&self) -> u32 {
        self.ev.hdr.mnt_ns
    }
    #[getter]
    fn pid_ns(&self) -> u32 {
        self.ev.hdr.pid_ns
    }
    #[getter]
    fn net_ns(&self) -> u32 {
        self.ev.hdr.net_ns
    }
    /// The container of the event's cgroup (Docker, containerd, CRI-O, Podman).
    #[getter]
    fn container_id(&self) -> Option<String> {
        self.ev.meta.cgroup.as_ref().and_then(|c| c.container_id.clone())
    }
    /// The Kubernetes pod of the event's cgroup.
    #[getter]
    fn pod_uid(&self) -> Option<String> {
        self.ev.meta.cgroup.as_ref().and_then(|c| c.pod_uid.clone())
    }
    /// The pod's QoS class: guaranteed, burstable or besteffort.
    #[getter]
    fn qos_class(&self) -> Option<&'static str> {
        self.ev.meta.cgroup.as_ref().and_then(|c| c.qos)
    }
    /// The event's cgroup v2 path (None if it was gone before it could be read).
    #[getter]
    fn cgroup_path(&self) -> Option<String> {
        self.ev.meta.cgroup.as_ref().map(|c| c.path.clone())
    }
    /// The session label of the process tree (see `CaptureManager.track`).
    #[getter]
    fn session(&self) -> Option<String> {
        self.ev.meta.session.as_deref().map(str::to_owned)
    }

    #[getter]
    fn count(&self) -> Option<u64> {
        match &self.ev.payload {
            Payload::Loss(l) => Some(l.count),
            _ => None,
        }
    }

    #[getter]
    fn reason(&self) -> Option<&'static str> {
        match &self.ev.payload {
            Payload::Loss(l) => Some(l.reason),
            _ => None,
        }
    }

    /// The numeric type id a loss notice is about.
    #[getter]
    fn lost_type_id(&self) -> Option<u16> {
        match &self.ev.payload {
            Payload::Loss(l) => l.lost_kind,
            _ => None,
        }
    }
    #[getter]
    fn lost_type(&self) -> Option<&'static str> {
        match &self.ev.payload {
            Payload::Loss(l) => l.lost_kind.map(kind_name),
            _ => None,
        }
    }

    /// The user-defined probe that produced a `probe` event.
    #[getter]
    fn probe(&self) -> Option<String> {
        match &self.ev.payload {
            Payload::Probe(p) => p.name.as_deref().map(str::to_owned),
            _ => None,
        }
    }
    /// The program of a user's own object that produced the record.
    #[getter]
    fn program(&self) -> Option<String> {
        match &self.ev.payload {
            Payload::Probe(p) => p.program.as_deref().map(str::to_owned),
            _ => None,
        }
    }
    /// Integer arguments of a kprobe, uprobe, raw tracepoint or LSM probe.
    #[getter]
    fn args(&self) -> Option<Vec<u64>> {
        match &self.ev.payload {
            Payload::Probe(p) if p.fields.is_empty() && p.program.is_none() && p.ret.is_none() => Some(p.args.clone()),
            _ => None,
        }
    }
    /// Return value of a kretprobe or uretprobe.
    #[getter]
    fn ret(&self) -> Option<i64> {
        match &self.ev.payload {
            Payload::Probe(p) => p.ret,
            _ => None,
        }
    }
    /// Fields of a user-defined tracepoint, by name.
    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        match &self.ev.payload {
            Payload::Probe(p) if !p.fields.is_empty() => Ok(Some(fields_dict(py, &p.fields)?)),
            _ => Ok(None),
        }
    }
    /// The raw record of a user's own BPF object.
    #[getter]
    fn raw<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        match &self.ev.payload {
            Payload::Probe(p) if p.program.is_some() => Some(PyBytes::new(py, &p.data)),
            _ => None,
        }
    }

    /// The event as the documented JSON object (snake_case keys).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let mut err = Ok(());
        json::visit(&self.ev, self.wall_offset_ns, &mut |key, value| {
            if err.is_ok() {
                err = value_object(py, value).and_then(|v| d.set_item(key, v));
            }
        });
        err.map(|()| d)
    }

    /// The event as one line of JSON, without the newline.
    fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(512);
        json::write_event(&self.ev, self.wall_offset_ns, &mut out);
        out.pop(); // the newline
        String::from_utf8(out).unwrap_or_default() // (only UTF-8 is ever written)
    }

    fn __repr__(&self) -> String {
        let e = &self.ev;
        format!("<Event {} pid={} tid={} comm={:?}>", kind_name(e.hdr.kind), e.hdr.pid, e.hdr.tid, e.comm_str())
    }
}

/// The getters of the built-in types' fields, one per key of the table of
/// event types (`None` when the event's type has no such key).
macro_rules! payload_getters {
    (keys [$($key:ident),* $(,)?] $($types:tt)*) => {
        #[pymethods]
        impl PyEvent {
            $(
                #[getter]
                fn $key<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                    self.field(py, stringify!($key))
                }
            )*
        }
    };
}

bpfcap_common::event_types!(payload_getters);

impl PyEvent {
    fn field<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.ev.payload.get(key) {
            Some(v) => value_object(py, v),
            None => Ok(py.None().into_bound(py)),
        }
    }
}
