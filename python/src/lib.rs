//! `medtwin._native`: the compiled core of the `medtwin` Python package.
//!
//! Every function here returns a `PyResult`: Rust errors become the `medtwin.MedtwinError`
//! hierarchy defined below, never a panic across the FFI. Long work runs with the GIL released
//! (`Python::detach`). Columns cross the boundary as little-endian `bytes` buffers that the
//! Python layer wraps into Arrow arrays without a further copy (see `medtwin/_arrow.py`).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

mod generic;
mod petab;
mod pk;
mod sbml;
mod t1d;
mod trial;
mod twin;

create_exception!(
    _native,
    MedtwinError,
    PyException,
    "Base class of every error raised by medtwin."
);
create_exception!(
    _native,
    InputError,
    MedtwinError,
    "Invalid input: a scenario, an option, an identifier or a table the engine refuses (the message names the field and the value)."
);
create_exception!(
    _native,
    ScenarioError,
    InputError,
    "A T1D scenario (TOML text or dict) that does not validate; the message names the field."
);
create_exception!(
    _native,
    SbmlError,
    MedtwinError,
    "An SBML document that cannot be read or compiled (I/O, XML, invalid SBML)."
);
create_exception!(
    _native,
    UnsupportedError,
    SbmlError,
    "An SBML construct the importer deliberately does not simulate (named with its id)."
);
create_exception!(
    _native,
    SimulationError,
    MedtwinError,
    "The numerical work failed (integrator failure, event cascade, non-convergence)."
);

create_exception!(
    _native,
    RefusedError,
    MedtwinError,
    "A decision the engine declines to make, with the reason (e.g. no dose meets the target within the toxicity constraint)."
);

/// Little-endian bytes of `f64` values (Arrow's `float64` buffer layout).
pub(crate) fn f64_bytes<'py>(py: Python<'py>, v: &[f64]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, v.len() * 8, |b| {
        for (c, x) in b.chunks_exact_mut(8).zip(v) {
            c.copy_from_slice(&x.to_le_bytes());
        }
        Ok(())
    })
}

/// Little-endian bytes of `i64` values (Arrow's `int64` buffer layout).
pub(crate) fn i64_bytes<'py>(py: Python<'py>, v: &[i64]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, v.len() * 8, |b| {
        for (c, x) in b.chunks_exact_mut(8).zip(v) {
            c.copy_from_slice(&x.to_le_bytes());
        }
        Ok(())
    })
}

/// Little-endian bytes of `i32` values (Arrow's `int32` buffer layout, dictionary indices).
pub(crate) fn i32_bytes<'py>(py: Python<'py>, v: &[i32]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, v.len() * 4, |b| {
        for (c, x) in b.chunks_exact_mut(4).zip(v) {
            c.copy_from_slice(&x.to_le_bytes());
        }
        Ok(())
    })
}

/// A dict `{name: list}` of equal-length columns (small tables: summaries, estimates).
pub(crate) fn columns_dict<'py>(
    py: Python<'py>,
    cols: Vec<(&str, Vec<Py<PyAny>>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in cols {
        d.set_item(k, PyList::new(py, v)?)?;
    }
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MedtwinError", py.get_type::<MedtwinError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("ScenarioError", py.get_type::<ScenarioError>())?;
    m.add("SbmlError", py.get_type::<SbmlError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("SimulationError", py.get_type::<SimulationError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    t1d::register(m)?;
    sbml::register(m)?;
    pk::register(m)?;
    twin::register(m)?;
    trial::register(m)?;
    generic::register(m)?;
    petab::register(m)?;
    Ok(())
}
