//! Pharmacokinetics: NONMEM-style event tables, NCA and FOCE-I population fits (`medtwin pk`).
//! Results cross as JSON text (the crate's own serde layout) and are shaped in `medtwin/pk.py`.

use crate::{InputError, RefusedError, SimulationError};
use medtwin_pk::data::{import_r_dataset, parse_event_table, write_event_table};
use medtwin_pk::model::PkModel;
use medtwin_pk::nca::{nca_dataset, Route};
use medtwin_pk::pop::{fit, CovariateEffect, ErrorModel, FitError, FitOptions, PopFit, PopModel};
use medtwin_twin_core::pk::{
    recommend, recommend_with_interval, Regimen, Target, TdmError, TdmTwin, STANDARD_INTERVALS_H,
};
use pyo3::prelude::*;

fn json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v)
        .map_err(|e| SimulationError::new_err(format!("serialising the result: {e}")))
}

/// Parse and validate an event table; returns it normalised (CSV text) and its summary.
#[pyfunction]
fn pk_check_table(
    py: Python<'_>,
    text: &str,
    source: &str,
) -> PyResult<(String, usize, usize, usize)> {
    let ds = parse_event_table(text, source).map_err(|e| InputError::new_err(e.to_string()))?;
    let mut buf = Vec::new();
    write_event_table(&ds, &mut buf).map_err(|e| SimulationError::new_err(e.to_string()))?;
    let _ = py;
    Ok((
        String::from_utf8_lossy(&buf).into_owned(),
        ds.subjects.len(),
        ds.n_observations(),
        ds.n_doses(),
    ))
}

/// Convert one of R's data sets (theoph, phenobarb, indometh; Rdatasets CSV) to event-table text.
#[pyfunction]
fn pk_import_r(kind: &str, path: std::path::PathBuf) -> PyResult<String> {
    let ds = import_r_dataset(kind, &path).map_err(|e| InputError::new_err(e.to_string()))?;
    let mut buf = Vec::new();
    write_event_table(&ds, &mut buf).map_err(|e| SimulationError::new_err(e.to_string()))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// NCA of every subject: JSON `[{"id", "unit_amount", "unit_concentration", "result" | "error"}]`.
#[pyfunction]
#[pyo3(signature = (text, source, route, infusion_h=None))]
fn pk_nca(
    py: Python<'_>,
    text: &str,
    source: &str,
    route: &str,
    infusion_h: Option<f64>,
) -> PyResult<String> {
    let route = match (route, infusion_h) {
        ("extravascular" | "oral", None) => Route::Extravascular,
        ("iv-bolus" | "iv", None) => Route::IvBolus,
        ("infusion", Some(d)) => Route::Infusion { duration_h: d },
        ("infusion", None) => return Err(InputError::new_err("route 'infusion' needs infusion_h")),
        (r, Some(_)) if r != "infusion" => {
            return Err(InputError::new_err(
                "infusion_h is only for route 'infusion'",
            ))
        }
        (r, _) => {
            return Err(InputError::new_err(format!(
                "route '{r}': expected 'extravascular', 'iv-bolus' or 'infusion'"
            )))
        }
    };
    let ds = parse_event_table(text, source).map_err(|e| InputError::new_err(e.to_string()))?;
    let res = py.detach(|| nca_dataset(&ds, route));
    let out: Vec<serde_json::Value> = res
        .into_iter()
        .map(|(id, r)| match r {
            Ok(r) => serde_json::json!({ "id": id, "result": r }),
            Err(e) => serde_json::json!({ "id": id, "error": e.to_string() }),
        })
        .collect();
    json(&serde_json::json!({
        "units": { "amount": ds.units.amount, "concentration": ds.units.concentration },
        "subjects": out,
    }))
}

/// FOCE-I population fit; JSON of the crate's `PopFit` (as `medtwin pk fit --out`).
#[pyfunction]
#[pyo3(signature = (text, source, model, parameters=Vec::new(), iiv=Vec::new(), covariates=Vec::new(), error="additive", full_omega=false, standard_errors=true))]
#[allow(clippy::too_many_arguments)]
fn pk_fit(
    py: Python<'_>,
    text: &str,
    source: &str,
    model: &str,
    parameters: Vec<String>,
    iiv: Vec<String>,
    covariates: Vec<String>,
    error: &str,
    full_omega: bool,
    standard_errors: bool,
) -> PyResult<String> {
    let pk = PkModel::parse(model).map_err(|e| InputError::new_err(format!("model: {e}")))?;
    let mut m = PopModel::new(pk);
    if !parameters.is_empty() {
        m.parameters = parameters
            .iter()
            .map(|p| p.trim().to_ascii_uppercase())
            .collect();
        m.iiv = m.parameters.clone();
    }
    if !iiv.is_empty() {
        m.iiv = iiv.iter().map(|p| p.trim().to_ascii_uppercase()).collect();
    }
    m.covariates = covariates
        .iter()
        .map(|c| CovariateEffect::parse(c))
        .collect::<Result<_, _>>()
        .map_err(|e| InputError::new_err(format!("covariates: {e}")))?;
    m.error = ErrorModel::parse(error).map_err(|e| InputError::new_err(format!("error: {e}")))?;
    m.full_omega = full_omega;
    let ds = parse_event_table(text, source).map_err(|e| InputError::new_err(e.to_string()))?;
    let opts = FitOptions {
        standard_errors,
        ..FitOptions::default()
    };
    let f = py.detach(|| fit(&ds, &m, &opts)).map_err(|e| match e {
        FitError::Spec(_) => InputError::new_err(e.to_string()),
        _ => SimulationError::new_err(e.to_string()),
    })?;
    json(&serde_json::json!({
        "units": { "amount": ds.units.amount, "concentration": ds.units.concentration },
        "fit": f,
    }))
}

fn tdm_err(e: TdmError) -> PyErr {
    match e {
        TdmError::Refused(_) => RefusedError::new_err(e.to_string()),
        _ => InputError::new_err(e.to_string()),
    }
}

/// Individualise a TDM twin (`medtwin pk twin`): the posterior of subject `id`'s parameters from
/// their levels in the event table, with the population fit (`pk fit`'s JSON) as prior. Returns
/// `(twin JSON, [(parameter, MAP value)], n_levels, n_samples, ess)`. The GIL is released.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn pk_twin(
    py: Python<'_>,
    pop: &str,
    text: &str,
    source: &str,
    id: &str,
) -> PyResult<(String, Vec<(String, f64)>, usize, usize, f64)> {
    let popfit: PopFit = serde_json::from_str(pop)
        .map_err(|e| InputError::new_err(format!("population fit: {e}")))?;
    let ds = parse_event_table(text, source).map_err(|e| InputError::new_err(e.to_string()))?;
    let s = ds
        .subject(id)
        .ok_or_else(|| InputError::new_err(format!("{source}: no subject with ID {id}")))?;
    let twin = py
        .detach(|| TdmTwin::new(&popfit.model, &popfit.estimates, s))
        .map_err(|e| InputError::new_err(e.to_string()))?;
    let params = twin
        .map_parameters()
        .map_err(|e| SimulationError::new_err(e.to_string()))?;
    let json = twin
        .to_json()
        .map_err(|e| SimulationError::new_err(e.to_string()))?;
    let post = twin.posterior();
    Ok((
        json,
        params,
        s.observations.len(),
        post.samples.len(),
        post.ess,
    ))
}

/// MAP parameters, number of posterior samples and ESS of a saved TDM twin.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn pk_twin_info(twin: &str) -> PyResult<(Vec<(String, f64)>, usize, f64)> {
    let t = TdmTwin::from_json(twin, "twin").map_err(tdm_err)?;
    let params = t
        .map_parameters()
        .map_err(|e| SimulationError::new_err(e.to_string()))?;
    let post = t.posterior();
    Ok((params, post.samples.len(), post.ess))
}

/// Dose recommendation (`medtwin pk recommend --json`): the recommendation JSON, and the
/// outcome at each standard interval tried when `interval_h` is None (`[(tau, JSON or
/// null, error or null)]`). `RefusedError` when no dose meets the target within the constraint;
/// `InputError` for a bad request. The GIL is released.
#[pyfunction]
#[pyo3(signature = (twin, target, value, interval_h=None, cmt=1, infusion_h=0.0, toxic=None, max_risk=0.1, round_to=0.0))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn pk_recommend(
    py: Python<'_>,
    twin: &str,
    target: &str,
    value: f64,
    interval_h: Option<f64>,
    cmt: u32,
    infusion_h: f64,
    toxic: Option<f64>,
    max_risk: f64,
    round_to: f64,
) -> PyResult<(String, Vec<(f64, Option<String>, Option<String>)>)> {
    let t = TdmTwin::from_json(twin, "twin").map_err(tdm_err)?;
    let target = match target {
        "trough" => Target::Trough(value),
        "auc" => Target::Auc(value),
        "cmax" => Target::Cmax(value),
        t => {
            return Err(InputError::new_err(format!(
                "target {t}: expected trough, auc or cmax"
            )))
        }
    };
    let (r, tried) = py.detach(|| match interval_h {
        Some(interval_h) => {
            let reg = Regimen {
                interval_h,
                cmt,
                infusion_h,
            };
            (
                recommend(&t, target, reg, toxic, max_risk, round_to),
                Vec::new(),
            )
        }
        None => recommend_with_interval(
            &t,
            target,
            &STANDARD_INTERVALS_H,
            cmt,
            infusion_h,
            toxic,
            max_risk,
            round_to,
        ),
    });
    let mut tried_out = Vec::with_capacity(tried.len());
    for (tau, o) in tried {
        match o {
            Ok(o) => tried_out.push((tau, Some(json(&o)?), None)),
            Err(e) => tried_out.push((tau, None, Some(e.to_string()))),
        }
    }
    Ok((json(&r.map_err(tdm_err)?)?, tried_out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pk_twin, m)?)?;
    m.add_function(wrap_pyfunction!(pk_twin_info, m)?)?;
    m.add_function(wrap_pyfunction!(pk_recommend, m)?)?;
    m.add_function(wrap_pyfunction!(pk_check_table, m)?)?;
    m.add_function(wrap_pyfunction!(pk_import_r, m)?)?;
    m.add_function(wrap_pyfunction!(pk_nca, m)?)?;
    m.add_function(wrap_pyfunction!(pk_fit, m)?)?;
    Ok(())
}
