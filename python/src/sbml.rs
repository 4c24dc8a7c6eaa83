//! SBML load and simulate (`medtwin sbml simulate` of the CLI).

use crate::{f64_bytes, InputError, SbmlError, SimulationError, UnsupportedError};
use medtwin_sbml::{Course, Method, SbmlError as E, SimulateOptions, StateDose};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub(crate) fn map_err(e: E) -> PyErr {
    let msg = e.to_string();
    match e {
        E::Io(_) | E::Xml(_) | E::Invalid(_) => SbmlError::new_err(msg),
        E::Unsupported(_) => UnsupportedError::new_err(msg),
        E::Options(_) => InputError::new_err(msg),
        E::Simulation(_) => SimulationError::new_err(msg),
    }
}

/// A compiled SBML model (Level 2 or 3 core; `comp` flattened).
#[pyclass(name = "NativeSbmlModel", module = "medtwin._native")]
#[derive(Clone)]
pub struct PySbml {
    pub(crate) inner: medtwin_sbml::SbmlModel,
}

#[pymethods]
impl PySbml {
    /// Read and compile an SBML file.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let m = py
            .detach(|| medtwin_sbml::load_sbml(&path))
            .map_err(|e| map_err_in(e, &path.display().to_string()))?;
        Ok(PySbml { inner: m })
    }

    /// Compile SBML given as text.
    #[staticmethod]
    fn from_text(py: Python<'_>, text: String) -> PyResult<Self> {
        let m = py
            .detach(|| medtwin_sbml::parse_sbml(&text))
            .map_err(map_err)?;
        Ok(PySbml { inner: m })
    }

    fn copy(&self) -> Self {
        self.clone()
    }

    fn species_ids(&self) -> Vec<String> {
        self.inner.species_ids().to_vec()
    }

    fn parameter_ids(&self) -> Vec<String> {
        self.inner.parameter_ids()
    }

    fn default_variables(&self) -> Vec<String> {
        self.inner.default_variables()
    }

    fn value(&self, id: &str) -> Option<f64> {
        self.inner.value(id)
    }

    fn set_value(&mut self, id: &str, value: f64) -> PyResult<()> {
        self.inner.set_value(id, value).map_err(map_err)
    }

    fn state_index(&self, id: &str) -> Option<usize> {
        self.inner.state_index(id)
    }

    fn info(&self) -> String {
        medtwin_sbml::info(&self.inner)
    }

    /// Simulate; returns `(header, [bytes of float64 column])`.
    #[pyo3(signature = (start, end, steps, vars=None, amount=Vec::new(), concentration=Vec::new(), rtol=None, atol=None, method="auto", max_step=None, times=None, doses=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn simulate<'py>(
        &self,
        py: Python<'py>,
        start: f64,
        end: f64,
        steps: usize,
        vars: Option<Vec<String>>,
        amount: Vec<String>,
        concentration: Vec<String>,
        rtol: Option<f64>,
        atol: Option<f64>,
        method: &str,
        max_step: Option<f64>,
        times: Option<Vec<f64>>,
        doses: Vec<(f64, String, f64)>,
    ) -> PyResult<(Vec<String>, Vec<Bound<'py, PyBytes>>)> {
        let method = match method {
            "auto" => Method::Auto,
            "explicit" | "dopri5" => Method::Explicit,
            "stiff" | "bdf" => Method::Stiff,
            "rosenbrock" => Method::Rosenbrock,
            m => {
                return Err(InputError::new_err(format!(
                    "method '{m}': expected 'auto', 'explicit', 'stiff' or 'rosenbrock'"
                )))
            }
        };
        let mut opts = SimulateOptions {
            start,
            end,
            steps,
            vars,
            amount,
            concentration,
            method,
            ..Default::default()
        };
        if let Some(r) = rtol {
            if !(r > 0.0 && r.is_finite()) {
                return Err(InputError::new_err(format!(
                    "rtol must be positive, got {r}"
                )));
            }
            opts.rtol = r;
        }
        if let Some(a) = atol {
            if !(a > 0.0 && a.is_finite()) {
                return Err(InputError::new_err(format!(
                    "atol must be positive, got {a}"
                )));
            }
            opts.atol = a;
        }
        if let Some(h) = max_step {
            if !(h > 0.0 && h.is_finite()) {
                return Err(InputError::new_err(format!(
                    "max_step must be positive, got {h}"
                )));
            }
            opts.max_step = Some(h);
        }
        if times.is_none()
            && (!(opts.end.is_finite() && opts.start.is_finite() && opts.end >= opts.start)
                || opts.steps == 0)
        {
            return Err(InputError::new_err(format!(
                "invalid span: t_start {} t_end {} intervals {}",
                opts.start, opts.end, opts.steps
            )));
        }
        let mut sd = Vec::with_capacity(doses.len());
        for (t, id, a) in &doses {
            let state = self.inner.state_index(id).ok_or_else(|| {
                InputError::new_err(format!(
                    "dose into '{id}': not a state of the model (a species, or a parameter/compartment changed by rate rules)"
                ))
            })?;
            sd.push(StateDose {
                time: *t,
                state,
                amount: *a,
            });
        }
        let model = &self.inner;
        let table = py
            .detach(|| {
                let course = Course {
                    times: times.as_deref(),
                    doses: &sd,
                };
                medtwin_sbml::simulate_course(model, &opts, &course)
            })
            .map_err(map_err)?;
        let ncol = table.header.len();
        let mut cols = Vec::with_capacity(ncol);
        for j in 0..ncol {
            let c: Vec<f64> = table.rows.iter().map(|r| r[j]).collect();
            cols.push(f64_bytes(py, &c)?);
        }
        Ok((table.header, cols))
    }
}

/// [`map_err`] with the file (or other origin) named before the message (not for I/O errors,
/// which name it already).
pub(crate) fn map_err_in(e: E, file: &str) -> PyErr {
    let msg = match &e {
        E::Io(_) => e.to_string(),
        _ => format!("{file}: {e}"),
    };
    match e {
        E::Io(_) | E::Xml(_) | E::Invalid(_) => SbmlError::new_err(msg),
        E::Unsupported(_) => UnsupportedError::new_err(msg),
        E::Options(_) => InputError::new_err(msg),
        E::Simulation(_) => SimulationError::new_err(msg),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySbml>()?;
    Ok(())
}
