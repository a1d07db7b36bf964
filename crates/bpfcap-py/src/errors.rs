//! Core errors -> the Python exception classes declared in `bpfcap/errors.py`
//! (the one place the hierarchy is defined).

use bpfcap_core::Error;
use pyo3::{prelude::*, sync::PyOnceLock, types::PyType};

fn class(py: Python<'_>, name: &str) -> PyResult<Py<PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = MODULE.get_or_try_init(py, || py.import("bpfcap.errors").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?.unbind())
}

pub fn to_py(e: Error) -> PyErr {
    let name = match &e {
        Error::Privilege { .. } => "PrivilegeError",
        Error::KernelFeature { .. } | Error::Btf { .. } => "KernelFeatureError",
        Error::Config { .. } => "ConfigError",
        Error::UnknownProbe { .. } => "UnknownProbeError",
        Error::Load { .. } | Error::Attach { .. } => "AttachError",
        Error::Closed => "ClosedError",
        Error::Io { .. } => "BpfcapError",
    };
    Python::attach(|py| match class(py, name) {
        Ok(ty) => PyErr::from_type(ty.into_bound(py), e.to_string()),
        Err(import_error) => import_error,
    })
}
