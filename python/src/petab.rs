//! PEtab v1 problems (`medtwin petab llh`, `medtwin petab fit`): `medtwin_petab`'s public API,
//! called as the CLI calls it (crates/cli/src/petab.rs): `Problem::load`, `Evaluator::new`,
//! `Evaluator::residuals` at the nominal vector, `fit::fit`.

use crate::{f64_bytes, InputError, SbmlError, SimulationError};
use medtwin_petab::fit::{fit, FitOptions, Gradient, Optimizer, Sampler};
use medtwin_petab::{Evaluator, PetabError, Problem, SimSettings};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// PEtab errors as Python errors: files, YAML, tables, formulas and options → `InputError`;
/// the SBML model → `SbmlError`; a failed simulation → `SimulationError`.
fn petab_err(e: PetabError) -> PyErr {
    match e {
        PetabError::Io(_)
        | PetabError::Yaml(_)
        | PetabError::Table { .. }
        | PetabError::Eval(_)
        | PetabError::Fit(_) => InputError::new_err(e.to_string()),
        PetabError::Sbml(_) => SbmlError::new_err(e.to_string()),
        PetabError::Simulation(_) => SimulationError::new_err(e.to_string()),
    }
}

fn settings(rtol: f64, atol: f64, time_limit: Option<f64>) -> PyResult<SimSettings> {
    for (name, v) in [("rtol", rtol), ("atol", atol)] {
        if !(v > 0.0 && v.is_finite()) {
            return Err(InputError::new_err(format!(
                "{name} must be positive, got {v}"
            )));
        }
    }
    if let Some(t) = time_limit {
        if t.is_nan() || t <= 0.0 {
            return Err(InputError::new_err(format!(
                "sim_time_limit must be > 0 seconds, got {t}"
            )));
        }
    }
    Ok(SimSettings {
        rtol,
        atol,
        time_limit,
        ..SimSettings::default()
    })
}

/// Log-likelihood at the nominal parameters (`medtwin petab llh [--residuals]`): a dict with
/// `llh`, `n_measurements`, `n_simulations`, `retries`, and the residual columns `line`,
/// `observable`, `time`, `measurement`, `simulated`, `sigma`, `llh_i` (lists; float columns
/// as little-endian bytes). The GIL is released.
#[pyfunction]
#[pyo3(signature = (problem, rtol=1e-8, atol=1e-12))]
fn petab_llh<'py>(
    py: Python<'py>,
    problem: PathBuf,
    rtol: f64,
    atol: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let s = settings(rtol, atol, None)?;
    type Rows = (Vec<usize>, Vec<String>, [Vec<f64>; 5]);
    let (rows, n_meas, n_sim, retries) = py
        .detach(|| -> Result<(Rows, usize, usize, usize), PetabError> {
            let p = Problem::load(&problem)?;
            let ev = Evaluator::new(&p, s)?;
            let res = ev.residuals(&p.nominal())?;
            let mut lines = Vec::with_capacity(res.len());
            let mut obs = Vec::with_capacity(res.len());
            let mut cols: [Vec<f64>; 5] = Default::default();
            for r in &res {
                let m = &p.measurements[r.measurement];
                lines.push(m.line);
                obs.push(p.observables[m.observable].id.clone());
                for (c, v) in cols
                    .iter_mut()
                    .zip([m.time, m.value, r.simulated, r.sigma, r.llh])
                {
                    c.push(v);
                }
            }
            Ok((
                (lines, obs, cols),
                p.measurements.len(),
                ev.n_simulations(),
                ev.retries(),
            ))
        })
        .map_err(petab_err)?;
    let (lines, obs, cols) = rows;
    // The CLI's sum, in the same (measurement) order.
    let llh: f64 = cols[4].iter().sum();
    let d = PyDict::new(py);
    d.set_item("llh", llh)?;
    d.set_item("n_measurements", n_meas)?;
    d.set_item("n_simulations", n_sim)?;
    d.set_item("retries", retries)?;
    d.set_item("line", lines)?;
    d.set_item("observable", obs)?;
    for (name, c) in ["time", "measurement", "simulated", "sigma", "llh_i"]
        .iter()
        .zip(&cols)
    {
        d.set_item(*name, f64_bytes(py, c)?)?;
    }
    Ok(d)
}

/// Multi-start maximum-likelihood fit (`medtwin petab fit … --out fit.json`): the JSON the CLI
/// writes (`medtwin_petab::fit::FitResult`, starts sorted best first), and the starts within
/// 0.1 of the best objective (all, sampled only) the CLI prints. Options and defaults are the
/// CLI's. The GIL is released.
#[pyfunction]
#[pyo3(signature = (problem, starts=10, seed=0, max_evals=4000, fd_step=1e-4, optimizer="lm", gradient="sens", sampler="lhs", nominal_start=true, time_limit=None, sim_time_limit=10.0, rtol=1e-8, atol=1e-12))]
#[allow(clippy::too_many_arguments)]
fn petab_fit(
    py: Python<'_>,
    problem: PathBuf,
    starts: usize,
    seed: u64,
    max_evals: usize,
    fd_step: f64,
    optimizer: &str,
    gradient: &str,
    sampler: &str,
    nominal_start: bool,
    time_limit: Option<f64>,
    sim_time_limit: f64,
    rtol: f64,
    atol: f64,
) -> PyResult<(String, usize, usize)> {
    let optimizer: Optimizer = optimizer.parse().map_err(InputError::new_err)?;
    let gradient: Gradient = gradient.parse().map_err(InputError::new_err)?;
    let sampler: Sampler = sampler.parse().map_err(InputError::new_err)?;
    if let Some(t) = time_limit {
        if t.is_nan() || t <= 0.0 {
            return Err(InputError::new_err(format!(
                "time_limit must be > 0 seconds, got {t}"
            )));
        }
    }
    let s = settings(rtol, atol, Some(sim_time_limit))?;
    let opts = FitOptions {
        starts,
        seed,
        max_evals,
        fd_step,
        optimizer,
        sampler,
        nominal_start,
        time_limit,
        gradient,
        ..FitOptions::default()
    };
    let r = py
        .detach(|| -> Result<_, PetabError> {
            let p = Problem::load(&problem)?;
            let ev = Evaluator::new(&p, s)?;
            fit(&ev, &opts)
        })
        .map_err(petab_err)?;
    let (near, near_sampled) = r.within(0.1);
    let json = serde_json::to_string(&r).map_err(|e| SimulationError::new_err(e.to_string()))?;
    Ok((json, near, near_sampled))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(petab_llh, m)?)?;
    m.add_function(wrap_pyfunction!(petab_fit, m)?)?;
    Ok(())
}
