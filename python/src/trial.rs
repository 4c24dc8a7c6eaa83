//! In-silico trials (`medtwin trial run|analyze`).

use crate::{InputError, ScenarioError, SimulationError};
use medtwin_cohort::trial::{AssembleStats, TrialChunk, TrialPlan};
use medtwin_cohort::{AnalyzeOptions, RunControl, TrialError, TrialSpec, TrialSummary};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    summary_dict(py, &summary)
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

fn trial_err(e: TrialError) -> PyErr {
    match e {
        e @ (TrialError::Resume(_)
        | TrialError::Cohort(_)
        | TrialError::CohortFile(_)
        | TrialError::Selection(_)) => InputError::new_err(e.to_string()),
        e => SimulationError::new_err(e.to_string()),
    }
}

fn parse_spec(text: &str, format: &str, source: &str, base_dir: &Path) -> PyResult<TrialSpec> {
    let toml_text = to_toml(text, format, source)?;
    TrialSpec::from_toml_str(&toml_text, source, base_dir)
        .map_err(|e| ScenarioError::new_err(e.to_string()))
}

/// The plan of the last specification this process simulated chunks of (a Ray worker runs many
/// chunks of one trial: the cohort is loaded and the prognostic model fitted once per process).
type PlanCache = Mutex<Option<(String, Arc<TrialPlan>)>>;
static PLAN: OnceLock<PlanCache> = OnceLock::new();

/// `(n_patients, fingerprint, chunk_patients, toml)` of a trial specification (parses it and
/// loads the cohort; no simulation).
#[pyfunction]
fn trial_info<'py>(
    py: Python<'py>,
    text: &str,
    format: &str,
    source: &str,
    base_dir: PathBuf,
) -> PyResult<Bound<'py, PyDict>> {
    let spec = parse_spec(text, format, source, &base_dir)?;
    let (cohort, _) = py
        .detach(|| medtwin_cohort::trial::load_cohort(&spec.cohort))
        .map_err(trial_err)?;
    let d = PyDict::new(py);
    d.set_item("n_patients", cohort.len())?;
    d.set_item("fingerprint", format!("{spec:?}"))?;
    d.set_item("chunk_patients", spec.chunk_patients)?;
    d.set_item("toml", to_toml(text, format, source)?)?;
    Ok(d)
}

/// Simulate patients `start..end` of a trial on `threads` threads (0: all cores) into an
/// in-memory Parquet chunk: returns `(parquet bytes, stats)` with stats `simulations`,
/// `patient_days` (of the chunk), `setup_simulations`, `setup_patient_days` (the prognostic
/// model's fit when this call built the plan, else 0) and `wall_s`. The GIL is released.
#[pyfunction]
#[pyo3(signature = (text, format, source, base_dir, start, end, threads=0))]
#[allow(clippy::too_many_arguments)]
fn trial_chunk<'py>(
    py: Python<'py>,
    text: &str,
    format: &str,
    source: &str,
    base_dir: PathBuf,
    start: usize,
    end: usize,
    threads: usize,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
    let spec = parse_spec(text, format, source, &base_dir)?;
    let key = format!("{spec:?}|{}", base_dir.display());
    let t0 = Instant::now();
    let work = || -> Result<(TrialChunk, (u64, u64)), TrialError> {
        let cache = PLAN.get_or_init(|| Mutex::new(None));
        let cached = cache.lock().ok().and_then(|g| {
            g.as_ref()
                .filter(|(k, _)| *k == key)
                .map(|(_, p)| p.clone())
        });
        let (plan, setup) = match cached {
            Some(p) => (p, (0, 0)),
            None => {
                let p = Arc::new(TrialPlan::new(&spec)?);
                if let Ok(mut g) = cache.lock() {
                    *g = Some((key.clone(), p.clone()));
                }
                let c = p.setup_cost();
                (p, c)
            }
        };
        Ok((plan.chunk_parquet(start, end)?, setup))
    };
    let r = py.detach(|| {
        if threads == 0 {
            return Ok(work());
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map(|pool| pool.install(work))
    });
    let (chunk, setup) = r
        .map_err(|e| SimulationError::new_err(format!("thread pool: {e}")))?
        .map_err(trial_err)?;
    let d = PyDict::new(py);
    d.set_item("start", chunk.start)?;
    d.set_item("end", chunk.end)?;
    d.set_item("simulations", chunk.simulations)?;
    d.set_item("patient_days", chunk.patient_days)?;
    d.set_item("setup_simulations", setup.0)?;
    d.set_item("setup_patient_days", setup.1)?;
    d.set_item("wall_s", t0.elapsed().as_secs_f64())?;
    Ok((PyBytes::new(py, &chunk.parquet), d))
}

/// `(start, end)` of a chunk file written from [`trial_chunk`]'s bytes (InputError if it is not
/// one).
#[pyfunction]
fn trial_chunk_range(path: PathBuf) -> PyResult<(usize, usize)> {
    medtwin_cohort::trial::chunk_range(&path).map_err(|e| InputError::new_err(e.to_string()))
}

/// Assemble chunk files covering the cohort into `out_dir/results.parquet` (byte-identical to
/// [`trial_run`]'s) and analyse it; returns the same dict as [`trial_run`], with the given
/// simulation figures.
#[pyfunction]
#[pyo3(signature = (text, format, source, base_dir, out_dir, chunk_files, simulations, patient_days, resumed_patients, wall_s))]
#[allow(clippy::too_many_arguments)]
fn trial_assemble<'py>(
    py: Python<'py>,
    text: &str,
    format: &str,
    source: &str,
    base_dir: PathBuf,
    out_dir: PathBuf,
    chunk_files: Vec<PathBuf>,
    simulations: u64,
    patient_days: u64,
    resumed_patients: usize,
    wall_s: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let spec = parse_spec(text, format, source, &base_dir)?;
    let stats = AssembleStats {
        simulations,
        patient_days,
        resumed_patients,
        wall_s,
    };
    let summary = py
        .detach(|| medtwin_cohort::trial::assemble_trial(&spec, &out_dir, &chunk_files, stats))
        .map_err(trial_err)?;
    summary_dict(py, &summary)
}

fn summary_dict<'py>(py: Python<'py>, summary: &TrialSummary) -> PyResult<Bound<'py, PyDict>> {
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(trial_run, m)?)?;
    m.add_function(wrap_pyfunction!(trial_analyze, m)?)?;
    m.add_function(wrap_pyfunction!(trial_info, m)?)?;
    m.add_function(wrap_pyfunction!(trial_chunk, m)?)?;
    m.add_function(wrap_pyfunction!(trial_chunk_range, m)?)?;
    m.add_function(wrap_pyfunction!(trial_assemble, m)?)?;
    Ok(())
}
