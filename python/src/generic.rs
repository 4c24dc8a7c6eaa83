//! The generic twin of any SBML model (`medtwin twin fit MODEL.xml --data … --estimate …`,
//! `update`, `forecast`, `whatif`, `backtest` on its twin file): `medtwin_twin_core`'s
//! lifecycle API, as the CLI calls it (crates/cli/src/generic_twin.rs). A twin crosses the
//! boundary as its JSON document (the CLI's `twin.json`, format `medtwin-twin-core`).

use crate::{f64_bytes, i32_bytes, InputError, SimulationError};
use medtwin_twin_core::data::parse_measurements;
use medtwin_twin_core::{
    backtest, CalibrationSpec, Measurement, ModelSource, ObservableSpec, Plan, Prediction,
    SbmlTwinModel, Twin, TwinError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// Twin errors as Python errors: bad spec, data, plan or saved twin → `InputError`; a model
/// that fails to compile or simulate (also a dose into a quantity that is not a state) or a
/// calibration without a finite posterior → `SimulationError`.
pub(crate) fn twin_err(e: TwinError) -> PyErr {
    match e {
        TwinError::Spec(_) | TwinError::Data(_) | TwinError::Format(_) | TwinError::Io(_) => {
            InputError::new_err(e.to_string())
        }
        TwinError::Model(_) | TwinError::Fit(_) => SimulationError::new_err(e.to_string()),
    }
}

/// A plan given as TOML text (`[[dose]] time, target, amount[, duration]`) or as JSON of the
/// same document (`{"dose": [{…}]}`); `origin` names it in errors.
fn parse_plan(text: &str, format: &str, origin: &str) -> PyResult<Plan> {
    match format {
        "toml" => Plan::from_toml(text, origin).map_err(twin_err),
        "json" => {
            let p: Plan = serde_json::from_str(text)
                .map_err(|e| InputError::new_err(format!("{origin}: {e}")))?;
            p.check()
                .map_err(|e| InputError::new_err(format!("{origin}: {e}")))?;
            Ok(p)
        }
        f => Err(InputError::new_err(format!(
            "plan format '{f}': expected toml or json"
        ))),
    }
}

fn parse_twin(py: Python<'_>, json: &str) -> PyResult<Twin> {
    py.detach(|| Twin::from_json(json, "twin"))
        .map_err(twin_err)
}

fn to_json(t: &Twin) -> PyResult<String> {
    t.to_json()
        .map_err(|e| SimulationError::new_err(e.to_string()))
}

/// What `fit` and `backtest` start from (the CLI's `load_problem`): the model as saved with the
/// twin, the completed spec, the dosing history and the measurements.
struct Problem {
    source: ModelSource,
    spec: CalibrationSpec,
    history: Plan,
    data: Vec<Measurement>,
}

#[allow(clippy::too_many_arguments)]
fn problem(
    py: Python<'_>,
    sbml: &str,
    model_origin: &str,
    time_unit: &str,
    data: &str,
    data_origin: &str,
    estimate: Vec<String>,
    spec: Option<(String, String, String)>,
    noise: Vec<String>,
    history: Option<(String, String, String)>,
) -> PyResult<Problem> {
    // Compile once through the SBML importer first, so that a bad document raises SbmlError /
    // UnsupportedError as medtwin.sbml.load does.
    py.detach(|| medtwin_sbml::parse_sbml(sbml))
        .map_err(|e| crate::sbml::map_err_in(e, model_origin))?;
    let model = py
        .detach(|| SbmlTwinModel::from_sbml(sbml, time_unit))
        .map_err(twin_err)?;
    let data = parse_measurements(data, data_origin).map_err(twin_err)?;
    let spec = match spec {
        None => CalibrationSpec::default(),
        Some((text, format, origin)) => match format.as_str() {
            "toml" => CalibrationSpec::from_toml(&text, &origin).map_err(twin_err)?,
            "json" => serde_json::from_str(&text)
                .map_err(|e| InputError::new_err(format!("calibration spec: {origin}: {e}")))?,
            f => {
                return Err(InputError::new_err(format!(
                    "prior format '{f}': expected toml or json"
                )))
            }
        },
    };
    let noise = noise
        .iter()
        .map(|n| ObservableSpec::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(twin_err)?;
    let spec = spec.complete(&model, &estimate, noise).map_err(twin_err)?;
    let mut obs: Vec<&str> = data.iter().map(|m| m.observable.as_str()).collect();
    obs.sort_unstable();
    obs.dedup();
    if let Some(id) = spec.first_without_noise(obs) {
        return Err(InputError::new_err(format!(
            "the data measure '{id}' but no noise model is given for it: add noise={{'{id}': 'log-normal:0.1'}} (or 'normal:SIGMA') or list it in the prior spec"
        )));
    }
    if spec.estimate.is_empty() {
        return Err(InputError::new_err(
            "nothing to estimate: give estimate=[ID, …] or [[estimate]] in the prior spec",
        ));
    }
    let history = match history {
        Some((text, format, origin)) => parse_plan(&text, &format, &origin)?,
        None => Plan::default(),
    };
    Ok(Problem {
        source: ModelSource::Sbml {
            text: sbml.to_string(),
            time_unit: time_unit.to_string(),
        },
        spec,
        history,
        data,
    })
}

/// Calibrate an SBML model to one patient's measurements (`medtwin twin fit MODEL.xml`): returns
/// the twin JSON. `spec`/`history` are `(text, "toml"|"json", origin)`. The GIL is released.
#[pyfunction]
#[pyo3(signature = (sbml, model_origin, time_unit, data, data_origin, estimate, spec=None, noise=Vec::new(), history=None))]
#[allow(clippy::too_many_arguments)]
fn generic_fit(
    py: Python<'_>,
    sbml: &str,
    model_origin: &str,
    time_unit: &str,
    data: &str,
    data_origin: &str,
    estimate: Vec<String>,
    spec: Option<(String, String, String)>,
    noise: Vec<String>,
    history: Option<(String, String, String)>,
) -> PyResult<String> {
    let p = problem(
        py,
        sbml,
        model_origin,
        time_unit,
        data,
        data_origin,
        estimate,
        spec,
        noise,
        history,
    )?;
    let t = py
        .detach(|| Twin::fit(p.source, p.spec, p.history, p.data))
        .map_err(twin_err)?;
    to_json(&t)
}

/// Rolling-origin backtest (`medtwin twin backtest MODEL.xml`): the JSON of
/// `medtwin_twin_core::BacktestResult` (the CLI's metrics file).
#[pyfunction]
#[pyo3(signature = (sbml, model_origin, time_unit, data, data_origin, estimate, origins, window, spec=None, noise=Vec::new(), history=None))]
#[allow(clippy::too_many_arguments)]
fn generic_backtest(
    py: Python<'_>,
    sbml: &str,
    model_origin: &str,
    time_unit: &str,
    data: &str,
    data_origin: &str,
    estimate: Vec<String>,
    origins: Vec<f64>,
    window: f64,
    spec: Option<(String, String, String)>,
    noise: Vec<String>,
    history: Option<(String, String, String)>,
) -> PyResult<String> {
    if origins.is_empty() || window.is_nan() || window <= 0.0 {
        return Err(InputError::new_err(
            "generic backtests need origins [T, …] and window W > 0 (model time unit)",
        ));
    }
    let p = problem(
        py,
        sbml,
        model_origin,
        time_unit,
        data,
        data_origin,
        estimate,
        spec,
        noise,
        history,
    )?;
    let r = py
        .detach(|| backtest(&p.source, &p.spec, &p.history, &p.data, &origins, window))
        .map_err(twin_err)?;
    serde_json::to_string(&r).map_err(|e| SimulationError::new_err(e.to_string()))
}

/// Assimilate measurements (those already in the twin are skipped, as `medtwin twin update`
/// does) and doses; returns `(new twin JSON, number of new measurements)`.
#[pyfunction]
#[pyo3(signature = (twin, data, data_origin, doses=None))]
fn generic_update(
    py: Python<'_>,
    twin: &str,
    data: &str,
    data_origin: &str,
    doses: Option<(String, String, String)>,
) -> PyResult<(String, usize)> {
    let mut t = parse_twin(py, twin)?;
    let ms = parse_measurements(data, data_origin).map_err(twin_err)?;
    let plan = match doses {
        Some((text, format, origin)) => parse_plan(&text, &format, &origin)?,
        None => Plan::default(),
    };
    let n = py.detach(|| t.assimilate(ms, &plan)).map_err(twin_err)?;
    Ok((to_json(&t)?, n))
}

/// Facts of a twin: a dict with `time_unit`, `last_time`, `n_measurements`, `observables`,
/// `estimated`, `outcome_classes`, `log_lik_map`, `ess`, `samples`, `laplace_ok`, `seed`,
/// `summary` (`[(id, map, median, lo95, hi95, sd_ratio)]`) and `map_values` (`[(id, value)]`).
#[pyfunction]
fn generic_info<'py>(py: Python<'py>, twin: &str) -> PyResult<Bound<'py, PyDict>> {
    let t = parse_twin(py, twin)?;
    let d = PyDict::new(py);
    d.set_item("time_unit", t.model().time_unit())?;
    d.set_item("last_time", t.last_time())?;
    d.set_item("n_measurements", t.data.len())?;
    d.set_item(
        "observables",
        t.spec
            .observables
            .iter()
            .map(|o| o.id.clone())
            .collect::<Vec<_>>(),
    )?;
    d.set_item("estimated", t.posterior.ids.clone())?;
    d.set_item(
        "outcome_classes",
        t.spec
            .outcomes
            .as_ref()
            .map(|o| o.classes())
            .unwrap_or_default(),
    )?;
    let p = &t.posterior;
    d.set_item("log_lik_map", p.log_lik_map)?;
    d.set_item("ess", p.ess)?;
    d.set_item("samples", p.samples.len())?;
    d.set_item("laplace_ok", p.laplace_ok)?;
    d.set_item("seed", t.spec.seed)?;
    let summary: Vec<(String, f64, f64, f64, f64, f64)> = t
        .summary()
        .into_iter()
        .map(|s| (s.id, s.map, s.median, s.lo95, s.hi95, s.sd_ratio))
        .collect();
    d.set_item("summary", summary)?;
    d.set_item("map_values", t.map_values())?;
    Ok(d)
}

/// A prediction as columns of the CLI's forecast CSV (long format: every time of the first
/// observable, then of the next): `time`, `observable` (int32 indices into `observables`),
/// `median`, `lo50`, `hi50`, `lo80`, `hi80`, `lo95`, `hi95` as little-endian bytes, and
/// `outcome_probabilities`, `failed_samples`.
fn prediction_dict<'py>(py: Python<'py>, p: &Prediction) -> PyResult<Bound<'py, PyDict>> {
    let n = p.times.len() * p.observables.len();
    let mut time = Vec::with_capacity(n);
    let mut obs = Vec::with_capacity(n);
    let mut cols: [Vec<f64>; 7] = Default::default();
    for (k, o) in p.observables.iter().enumerate() {
        for (t, b) in p.times.iter().zip(&o.bands) {
            time.push(*t);
            obs.push(k as i32);
            for (c, v) in cols
                .iter_mut()
                .zip([b.median, b.lo50, b.hi50, b.lo80, b.hi80, b.lo95, b.hi95])
            {
                c.push(v);
            }
        }
    }
    let d = PyDict::new(py);
    d.set_item(
        "observables",
        p.observables
            .iter()
            .map(|o| o.observable.clone())
            .collect::<Vec<_>>(),
    )?;
    d.set_item("time", f64_bytes(py, &time)?)?;
    d.set_item("observable", i32_bytes(py, &obs)?)?;
    let names = ["median", "lo50", "hi50", "lo80", "hi80", "lo95", "hi95"];
    for (name, c) in names.iter().zip(&cols) {
        let b: Bound<'py, PyBytes> = f64_bytes(py, c)?;
        d.set_item(*name, b)?;
    }
    d.set_item("outcome_probabilities", p.outcome_probabilities.clone())?;
    d.set_item("failed_samples", p.failed_samples)?;
    Ok(d)
}

/// Forecast under a plan at the CLI's times (`--until`, `--step`; see
/// `Twin::forecast_times`); a dict of columns (see `prediction_dict`).
#[pyfunction]
#[pyo3(signature = (twin, until, step=None, plan=None))]
fn generic_forecast<'py>(
    py: Python<'py>,
    twin: &str,
    until: f64,
    step: Option<f64>,
    plan: Option<(String, String, String)>,
) -> PyResult<Bound<'py, PyDict>> {
    let t = parse_twin(py, twin)?;
    let plan = match plan {
        Some((text, format, origin)) => parse_plan(&text, &format, &origin)?,
        None => Plan::default(),
    };
    let times = t.forecast_times(until, step).map_err(twin_err)?;
    let p = py.detach(|| t.forecast(&plan, &times)).map_err(twin_err)?;
    prediction_dict(py, &p)
}

/// Compare named plans (`medtwin twin whatif`): `[(name, dict of columns)]` on the same
/// posterior samples and noise draws.
#[pyfunction]
#[pyo3(signature = (twin, plans, until, step=None))]
fn generic_whatif<'py>(
    py: Python<'py>,
    twin: &str,
    plans: Vec<(String, String, String)>,
    until: f64,
    step: Option<f64>,
) -> PyResult<Vec<(String, Bound<'py, PyDict>)>> {
    let t = parse_twin(py, twin)?;
    let mut named = Vec::with_capacity(plans.len());
    for (name, text, format) in &plans {
        named.push((name.clone(), parse_plan(text, format, name)?));
    }
    let times = t.forecast_times(until, step).map_err(twin_err)?;
    let res = py.detach(|| t.whatif(&named, &times)).map_err(twin_err)?;
    res.iter()
        .map(|(name, p)| Ok((name.clone(), prediction_dict(py, p)?)))
        .collect()
}

/// Check a twin document (format, version, model, spec) and return it re-serialised.
#[pyfunction]
fn generic_load(py: Python<'_>, text: &str, origin: &str) -> PyResult<String> {
    let t = py
        .detach(|| Twin::from_json(text, origin))
        .map_err(twin_err)?;
    to_json(&t)
}

/// The sepsis twin's model and spec as embedded in the library (`medtwin_twin_core::sepsis`):
/// `(SBML text of Reynolds et al. 2006, BIOMD0000000714, hours; calibration spec TOML)`.
#[pyfunction]
fn generic_sepsis() -> (&'static str, &'static str) {
    (
        medtwin_twin_core::sepsis::REYNOLDS_2006_SBML,
        medtwin_twin_core::sepsis::SPEC_TOML,
    )
}

/// Outcome class at 1000 h of a sepsis patient with pathogen growth rate `k_pg` (1/h) and
/// initial pathogen load `p0` under `plan` (`medtwin_twin_core::sepsis::outcome_of`).
#[pyfunction]
#[pyo3(signature = (k_pg, p0, plan=None))]
fn generic_sepsis_outcome(
    py: Python<'_>,
    k_pg: f64,
    p0: f64,
    plan: Option<(String, String, String)>,
) -> PyResult<String> {
    if !(k_pg.is_finite() && p0.is_finite()) {
        return Err(InputError::new_err(format!(
            "k_pg {k_pg} and p0 {p0} must be finite"
        )));
    }
    let plan = match plan {
        Some((text, format, origin)) => parse_plan(&text, &format, &origin)?,
        None => Plan::default(),
    };
    py.detach(|| medtwin_twin_core::sepsis::outcome_of(k_pg, p0, &plan))
        .map_err(twin_err)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(generic_sepsis, m)?)?;
    m.add_function(wrap_pyfunction!(generic_sepsis_outcome, m)?)?;
    m.add_function(wrap_pyfunction!(generic_fit, m)?)?;
    m.add_function(wrap_pyfunction!(generic_backtest, m)?)?;
    m.add_function(wrap_pyfunction!(generic_update, m)?)?;
    m.add_function(wrap_pyfunction!(generic_info, m)?)?;
    m.add_function(wrap_pyfunction!(generic_forecast, m)?)?;
    m.add_function(wrap_pyfunction!(generic_whatif, m)?)?;
    m.add_function(wrap_pyfunction!(generic_load, m)?)?;
    Ok(())
}
