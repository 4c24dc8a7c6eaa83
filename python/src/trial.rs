//! In-silico trials (`medtwin trial run|analyze`).

use crate::{InputError, ScenarioError, SimulationError};
use medtwin_cohort::{AnalyzeOptions, RunControl, TrialError, TrialSpec};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn to_toml(text: &str, format: &str, source: &str) -> PyResult<String> {
    match format {
        "toml" => Ok(text.to_string()),
        "json" => {
            let v: toml::Value = serde_json::from_str(text).map_err(|e| {
                ScenarioError::new_err(format!(
                    "{source}: (dict): cannot be expressed as a trial spec: {e}"
                ))
            })?;
            toml::to_string(&v).map_err(|e| {
                ScenarioError::new_err(format!(
                    "{source}: (dict): cannot be expressed as TOML: {e}"
                ))
            })
        }
        other => Err(InputError::new_err(format!(
            "unknown spec format '{other}'"
        ))),
    }
}

/// Run a trial; `progress(done)` is called from the calling thread (with the GIL) about every
/// 50 ms while patients finish. Ctrl-C stops after the patients in flight (partial Parquet kept)
/// and raises KeyboardInterrupt; so does an exception raised by `progress` (which is re-raised). Returns a dict of the run's summary figures and paths.
#[pyfunction]
#[pyo3(signature = (text, format, source, base_dir, out_dir, resume=false, progress=None))]
#[allow(clippy::too_many_arguments)]
fn trial_run<'py>(
    py: Python<'py>,
    text: &str,
    format: &str,
    source: &str,
    base_dir: PathBuf,
    out_dir: PathBuf,
    resume: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let toml_text = to_toml(text, format, source)?;
    let spec = TrialSpec::from_toml_str(&toml_text, source, &base_dir)
        .map_err(|e| ScenarioError::new_err(e.to_string()))?;
    let done = AtomicU64::new(0);
    let cancel = AtomicBool::new(false);
    let mut interrupted = false;
    let mut cb_err: Option<PyErr> = None;
    let result = py.detach(|| {
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let report = |n: u64| done.store(n, Ordering::Relaxed);
                let ctl = RunControl {
                    progress: &report,
                    cancel: Some(&cancel),
                    resume,
                };
                medtwin_cohort::run_trial(&spec, &out_dir, &ctl)
            });
            let mut last = u64::MAX;
            while !h.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
                Python::attach(|py| {
                    if !interrupted && py.check_signals().is_err() {
                        interrupted = true;
                        cancel.store(true, Ordering::SeqCst);
                    }
                    let n = done.load(Ordering::Relaxed);
                    if n != last && cb_err.is_none() {
                        last = n;
                        if let Some(cb) = &progress {
                            if let Err(e) = cb.call1(py, (n,)) {
                                // stop as Ctrl-C does (partial file kept), then raise it
                                cb_err = Some(e);
                                cancel.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
            h.join()
        })
    });
    let r = match result {
        Ok(r) => r,
        Err(_) => return Err(SimulationError::new_err("the trial thread panicked")),
    };
    if let Some(e) = cb_err {
        return Err(e);
    }
    let summary = match r {
        Ok(s) => s,
        Err(e @ TrialError::Interrupted { .. }) if interrupted => {
            return Err(PyKeyboardInterrupt::new_err(e.to_string()))
        }
        Err(
            e @ (TrialError::Resume(_)
            | TrialError::Cohort(_)
            | TrialError::CohortFile(_)
            | TrialError::Selection(_)),
        ) => return Err(InputError::new_err(e.to_string())),
        Err(e) => return Err(SimulationError::new_err(e.to_string())),
    };
    let d = PyDict::new(py);
    d.set_item("simulations", summary.simulations)?;
    d.set_item("patient_days", summary.patient_days)?;
    d.set_item("wall_s", summary.wall_s)?;
    d.set_item("patient_days_per_s", summary.patient_days_per_s)?;
    d.set_item("resumed_patients", summary.resumed_patients)?;
    d.set_item("results_path", summary.results_path.clone())?;
    d.set_item("summary_path", summary.summary_path.clone())?;
    d.set_item("text", summary.to_string())?;
    Ok(d)
}

/// Analyse `dir/results.parquet` (or the partial file); returns the summary.json path.
#[pyfunction]
#[pyo3(signature = (dir, bootstrap=0, seed=1))]
fn trial_analyze(py: Python<'_>, dir: PathBuf, bootstrap: usize, seed: u64) -> PyResult<PathBuf> {
    let (_, path) = py
        .detach(|| medtwin_cohort::analyze_dir(&dir, AnalyzeOptions { bootstrap, seed }))
        .map_err(|e| InputError::new_err(e.to_string()))?;
    Ok(path)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(trial_run, m)?)?;
    m.add_function(wrap_pyfunction!(trial_analyze, m)?)?;
    Ok(())
}
