//! T1D patient twins on real records (`medtwin twin fit|update|forecast`, `medtwin import t1d-uom`).
//! A twin crosses the boundary as its JSON document (the CLI's `twin.json`).

use crate::{f64_bytes, InputError, SimulationError};
use medtwin_twin::lifecycle::{self, no_progress, Until};
use medtwin_twin::{InputSchedule, Plan, Twin, TwinError, TwinSettings};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

fn read_schedule(path: &std::path::Path) -> PyResult<(medtwin_io::Record, InputSchedule)> {
    let (rec, _rep) =
        medtwin_io::read_record_csv(path).map_err(|e| InputError::new_err(e.to_string()))?;
    if rec.count_of(medtwin_io::RecordKind::Cgm) == 0 {
        return Err(InputError::new_err(format!(
            "{}: the record has no CGM readings",
            path.display()
        )));
    }
    let sched = InputSchedule::from_record(&rec).ok_or_else(|| {
        InputError::new_err(format!(
            "{}: the record has no CGM readings",
            path.display()
        ))
    })?;
    Ok((rec, sched))
}

fn parse_twin(json: &str) -> PyResult<Twin> {
    serde_json::from_str(json).map_err(|e| InputError::new_err(format!("twin document: {e}")))
}

/// A lifecycle error as a Python exception: a broken twin document or a bad argument is the
/// caller's input ([`InputError`]), the rest a failed computation ([`SimulationError`]).
fn twin_err(e: TwinError) -> PyErr {
    match e {
        TwinError::Document(_) | TwinError::Argument(_) => InputError::new_err(e.to_string()),
        _ => SimulationError::new_err(e.to_string()),
    }
}

/// Import a T1D-UOM participant and write medtwin's record CSV to `out`; returns the number of
/// CGM readings.
#[pyfunction]
fn twin_import_t1d_uom(
    py: Python<'_>,
    dir: PathBuf,
    participant: &str,
    out: PathBuf,
) -> PyResult<usize> {
    let rec = py
        .detach(|| medtwin_io::import_t1d_uom(&dir, participant))
        .map_err(|e| InputError::new_err(e.to_string()))?
        .0;
    medtwin_io::write_record_csv(&rec, &out)
        .map_err(|e| SimulationError::new_err(e.to_string()))?;
    Ok(rec.count_of(medtwin_io::RecordKind::Cgm))
}

/// Minutes from the record's origin (its first CGM reading) to its last CGM reading.
#[pyfunction]
fn twin_record_span(record: PathBuf) -> PyResult<(f64, String)> {
    let (_, s) = read_schedule(&record)?;
    Ok((
        s.last_cgm_min(),
        s.origin().map(|o| o.to_string()).unwrap_or_default(),
    ))
}

/// Calibrate (MAP on the first 24 h) and assimilate up to `until_min`; returns the twin JSON and
/// the calibration summary.
#[pyfunction]
#[pyo3(signature = (record, until_min=None, particles=500, seed=1))]
fn twin_fit<'py>(
    py: Python<'py>,
    record: PathBuf,
    until_min: Option<f64>,
    particles: usize,
    seed: u64,
) -> PyResult<(String, Bound<'py, PyDict>)> {
    let (rec, sched) = read_schedule(&record)?;
    if particles == 0 {
        return Err(InputError::new_err("particles must be >= 1"));
    }
    let settings = TwinSettings {
        n_particles: particles,
        seed,
        ..TwinSettings::default()
    };
    let until = until_min.unwrap_or_else(|| sched.last_cgm_min());
    if !until.is_finite() || until < settings.calibration_window_min {
        return Err(InputError::new_err(format!(
            "until is {until:.0} min after the first CGM; the twin needs at least the {} min calibration window",
            settings.calibration_window_min
        )));
    }
    let (doc, _) = py
        .detach(|| {
            lifecycle::fit(
                &sched,
                settings,
                Until::Minute(until),
                f64::INFINITY,
                rec.patient.id.clone(),
                &mut no_progress,
            )
        })
        .map_err(|e| SimulationError::new_err(e.to_string()))?;
    let cal = &doc.calibration;
    let d = PyDict::new(py);
    d.set_item("rmse_mg_dl", cal.rmse_mg_dl)?;
    d.set_item("prior_rmse_mg_dl", cal.prior_rmse_mg_dl)?;
    d.set_item("converged", cal.converged)?;
    d.set_item("insulin_scale", cal.insulin_scale)?;
    d.set_item(
        "diagnostics",
        cal.diagnostics
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>(),
    )?;
    let json = serde_json::to_string(&doc).map_err(|e| SimulationError::new_err(e.to_string()))?;
    Ok((json, d))
}

/// Assimilate newer data of the same record into a twin; returns the updated twin JSON.
#[pyfunction]
#[pyo3(signature = (twin, record, until_min=None))]
fn twin_update(
    py: Python<'_>,
    twin: &str,
    record: PathBuf,
    until_min: Option<f64>,
) -> PyResult<String> {
    let doc = parse_twin(twin)?;
    let (_, sched) = read_schedule(&record)?;
    let until = until_min.unwrap_or_else(|| sched.last_cgm_min());
    let (updated, _) = py
        .detach(|| {
            lifecycle::update(
                &doc,
                &sched,
                Until::Minute(until),
                f64::INFINITY,
                &mut no_progress,
            )
        })
        .map_err(|e| match e {
            TwinError::Argument(m) => InputError::new_err(format!("{}: {m}", record.display())),
            e => twin_err(e),
        })?;
    serde_json::to_string(&updated).map_err(|e| SimulationError::new_err(e.to_string()))
}

/// Forecast `horizon` minutes ahead: dict with `t_min` (minutes after the twin's time, bytes
/// f64), the seven band columns (bytes f64), `p_below_70`, `p_above_250`, `twin_t_min`, `origin`.
#[pyfunction]
fn twin_forecast<'py>(py: Python<'py>, twin: &str, horizon: u32) -> PyResult<Bound<'py, PyDict>> {
    if horizon == 0 || horizon > 720 {
        return Err(InputError::new_err(format!(
            "horizon {horizon} must be in 1..=720 minutes"
        )));
    }
    let doc = parse_twin(twin)?;
    let f = py
        .detach(|| lifecycle::forecast(&doc, horizon, None))
        .map_err(twin_err)?;
    let d = PyDict::new(py);
    let t: Vec<f64> = f.t_min.iter().map(|t| t - doc.t_min).collect();
    d.set_item("t_min", f64_bytes(py, &t)?)?;
    let col =
        |g: &dyn Fn(&medtwin_infer::Bands) -> f64| f.bands.iter().map(g).collect::<Vec<f64>>();
    d.set_item("median_mg_dl", f64_bytes(py, &col(&|b| b.median))?)?;
    d.set_item("lo50_mg_dl", f64_bytes(py, &col(&|b| b.lo50))?)?;
    d.set_item("hi50_mg_dl", f64_bytes(py, &col(&|b| b.hi50))?)?;
    d.set_item("lo80_mg_dl", f64_bytes(py, &col(&|b| b.lo80))?)?;
    d.set_item("hi80_mg_dl", f64_bytes(py, &col(&|b| b.hi80))?)?;
    d.set_item("lo95_mg_dl", f64_bytes(py, &col(&|b| b.lo95))?)?;
    d.set_item("hi95_mg_dl", f64_bytes(py, &col(&|b| b.hi95))?)?;
    d.set_item("p_below_70", f.p_below)?;
    d.set_item("p_above_250", f.p_above)?;
    d.set_item("twin_t_min", doc.t_min)?;
    d.set_item(
        "origin",
        doc.schedule
            .origin()
            .map(|o| o.to_string())
            .unwrap_or_default(),
    )?;
    Ok(d)
}

/// Rolling-origin backtest of the twin on a record (`medtwin twin backtest`, and the scores of
/// `medtwin demo`): a twin calibrated on the first `calibration_window` (24 h), then an origin
/// every `origin_every_min` minutes from `from_min` to `to_min` (minutes after the first CGM
/// reading), each forecast scored against the recorded CGM at `horizons` minutes, beside
/// persistence. Returns `metrics.json` as a JSON string. The GIL is released.
#[pyfunction]
#[pyo3(signature = (record, from_min=0.0, to_min=None, origin_every_min=60.0, horizons=vec![30, 60, 120], particles=500, future_inputs_recorded=false))]
#[allow(clippy::too_many_arguments)]
fn twin_backtest(
    py: Python<'_>,
    record: PathBuf,
    from_min: f64,
    to_min: Option<f64>,
    origin_every_min: f64,
    horizons: Vec<u32>,
    particles: usize,
    future_inputs_recorded: bool,
) -> PyResult<String> {
    if particles == 0 || origin_every_min.is_nan() || origin_every_min <= 0.0 || horizons.is_empty()
    {
        return Err(InputError::new_err(
            "particles, origin_every_min and horizons must be positive / non-empty",
        ));
    }
    let (_, sched) = read_schedule(&record)?;
    let opts = medtwin_twin::BacktestOptions {
        future_inputs_recorded,
        from_min,
        to_min: to_min.unwrap_or(f64::INFINITY),
        origin_every_min,
        horizons_min: horizons,
        settings: TwinSettings {
            n_particles: particles,
            ..TwinSettings::default()
        },
        n_cones: 8,
        cone_horizon_min: 240,
    };
    let (r, _) = py
        .detach(|| lifecycle::backtest(&sched, &opts, None, &mut |_, _| {}))
        .map_err(|e| SimulationError::new_err(e.to_string()))?;
    serde_json::to_string(&r).map_err(|e| SimulationError::new_err(e.to_string()))
}

/// Parse and check one plan, a [`medtwin_twin::RelativePlan`] as TOML or JSON (the CLI's plan
/// rules: times within `[0, horizon]`, amounts finite and >= 0, times rounded to whole minutes
/// and made absolute from `t0`).
fn parse_plan(name: &str, text: &str, json: bool, t0: f64, horizon: u32) -> PyResult<Plan> {
    let f = format!("plan '{name}'");
    let p: medtwin_twin::RelativePlan = if json {
        serde_json::from_str(text).map_err(|e| InputError::new_err(format!("{f}: {e}")))?
    } else {
        toml::from_str(text).map_err(|e| InputError::new_err(format!("{f}: {}", e.message())))?
    };
    p.to_plan(t0, horizon)
        .map_err(|e| InputError::new_err(format!("{f}: {e}")))
}

/// One plan's outcome as a dict: `name`, `t_min` (minutes after the twin's time) and the seven
/// band columns as f64 bytes (mg/dL), and the event probabilities / expectations.
fn outcome_dict<'py>(
    py: Python<'py>,
    o: &medtwin_twin::decide::PlanOutcome,
    t0: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &o.name)?;
    let t: Vec<f64> = o.t_min.iter().map(|t| t - t0).collect();
    d.set_item("t_min", f64_bytes(py, &t)?)?;
    let col =
        |g: &dyn Fn(&medtwin_infer::Bands) -> f64| o.bands.iter().map(g).collect::<Vec<f64>>();
    d.set_item("median_mg_dl", f64_bytes(py, &col(&|b| b.median))?)?;
    d.set_item("lo50_mg_dl", f64_bytes(py, &col(&|b| b.lo50))?)?;
    d.set_item("hi50_mg_dl", f64_bytes(py, &col(&|b| b.hi50))?)?;
    d.set_item("lo80_mg_dl", f64_bytes(py, &col(&|b| b.lo80))?)?;
    d.set_item("hi80_mg_dl", f64_bytes(py, &col(&|b| b.hi80))?)?;
    d.set_item("lo95_mg_dl", f64_bytes(py, &col(&|b| b.lo95))?)?;
    d.set_item("hi95_mg_dl", f64_bytes(py, &col(&|b| b.hi95))?)?;
    d.set_item("p_below_70", o.p_below_70)?;
    d.set_item("p_below_54", o.p_below_54)?;
    d.set_item("p_above_250", o.p_above_250)?;
    d.set_item("expected_tir_pct", o.expected_tir_pct)?;
    d.set_item("expected_risk_index", o.expected_risk_index)?;
    Ok(d)
}

/// What-if (`medtwin twin whatif`): simulate each plan `(name, text, is_json)` over `horizon`
/// minutes from the twin's time on the posterior ensemble with common random numbers (`seed`,
/// default: the twin's). Plans with insulin are refused on a twin whose record holds no insulin.
/// Returns one dict per plan (see `outcome_dict`). The GIL is released.
#[pyfunction]
#[pyo3(signature = (twin, plans, horizon=240, seed=None))]
fn twin_whatif<'py>(
    py: Python<'py>,
    twin: &str,
    plans: Vec<(String, String, bool)>,
    horizon: u32,
    seed: Option<u64>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    if horizon == 0 || horizon > 720 {
        return Err(InputError::new_err(format!(
            "horizon {horizon} must be in 1..=720 minutes"
        )));
    }
    if plans.is_empty() {
        return Err(InputError::new_err("whatif needs at least one plan"));
    }
    let doc = parse_twin(twin)?;
    let mut parsed: Vec<(String, Plan)> = Vec::with_capacity(plans.len());
    for (name, text, json) in &plans {
        if parsed.iter().any(|(n, _)| n == name) {
            return Err(InputError::new_err(format!("two plans are named '{name}'")));
        }
        parsed.push((
            name.clone(),
            parse_plan(name, text, *json, doc.t_min, horizon)?,
        ));
    }
    if parsed
        .iter()
        .any(|(_, p)| !p.boluses.is_empty() || !p.basal_rates.is_empty())
    {
        medtwin_twin::decide::require_insulin_data(&doc.schedule, "what-if with an insulin plan")
            .map_err(InputError::new_err)?;
    }
    let seed = seed.unwrap_or(doc.settings.seed);
    let outcomes = py
        .detach(|| lifecycle::whatif_seeded(&doc, &parsed, horizon, seed))
        .map_err(twin_err)?;
    outcomes
        .iter()
        .map(|o| outcome_dict(py, o, doc.t_min))
        .collect()
}

/// Bolus advice (`medtwin twin advise --json`): the advice as the CLI's JSON string. `cr`
/// (g/U) and `cf` (mg/dL per U) default to 500/TDI and 1800/TDI of the calibration window.
/// Refused (InputError) on a twin whose record holds no insulin. The GIL is released.
#[pyfunction]
#[pyo3(signature = (twin, carbs_g, at_min=0.0, cr=None, cf=None, target=120.0))]
fn twin_advise(
    py: Python<'_>,
    twin: &str,
    carbs_g: f64,
    at_min: f64,
    cr: Option<f64>,
    cf: Option<f64>,
    target: f64,
) -> PyResult<String> {
    let request = medtwin_twin::decide::AdviceRequest {
        carbs_g,
        at_min,
        cr_g_per_u: cr,
        cf_mg_dl_per_u: cf,
        target_mg_dl: target,
    };
    // the request's own errors first, before the twin is parsed
    request.check().map_err(InputError::new_err)?;
    let doc = parse_twin(twin)?;
    medtwin_twin::decide::require_insulin_data(&doc.schedule, "bolus advice")
        .map_err(InputError::new_err)?;
    let s = request
        .settings(doc.calibration.window_tdi_u_per_day)
        .map_err(InputError::new_err)?;
    let a = py
        .detach(|| lifecycle::advise(&doc, carbs_g, at_min, &s))
        .map_err(twin_err)?;
    serde_json::to_string(&a).map_err(|e| SimulationError::new_err(e.to_string()))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(twin_whatif, m)?)?;
    m.add_function(wrap_pyfunction!(twin_advise, m)?)?;
    m.add_function(wrap_pyfunction!(twin_backtest, m)?)?;
    m.add_function(wrap_pyfunction!(twin_import_t1d_uom, m)?)?;
    m.add_function(wrap_pyfunction!(twin_record_span, m)?)?;
    m.add_function(wrap_pyfunction!(twin_fit, m)?)?;
    m.add_function(wrap_pyfunction!(twin_update, m)?)?;
    m.add_function(wrap_pyfunction!(twin_forecast, m)?)?;
    Ok(())
}
