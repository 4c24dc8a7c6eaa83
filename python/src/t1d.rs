//! T1D simulation (`medtwin simulate` of the CLI) and the virtual patients.

use crate::{
    columns_dict, f64_bytes, i32_bytes, i64_bytes, InputError, ScenarioError, SimulationError,
};
use medtwin_simulate::SolverOptions;
use medtwin_t1d::env::{
    patient_seed, simulate_patient, MinuteRow, SummaryAccumulator, TrajectorySummary,
};
use medtwin_t1d::scenario::Scenario;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rayon::prelude::*;

/// Per-patient trajectory columns.
#[derive(Default)]
struct Traj {
    t: Vec<i64>,
    plasma: Vec<f64>,
    sc: Vec<f64>,
    cgm: Vec<f64>,
    sampled: Vec<u8>,
    insulin: Vec<f64>,
    carbs: Vec<f64>,
}

fn parse_scenario(text: &str, format: &str, source: &str) -> PyResult<Scenario> {
    let toml_text = match format {
        "toml" => text.to_string(),
        "json" => {
            let v: toml::Value = serde_json::from_str(text).map_err(|e| {
                ScenarioError::new_err(format!(
                    "{source}: (dict): cannot be expressed as a scenario: {e} (None values are not allowed)"
                ))
            })?;
            toml::to_string(&v).map_err(|e| {
                ScenarioError::new_err(format!(
                    "{source}: (dict): cannot be expressed as TOML: {e}"
                ))
            })?
        }
        other => {
            return Err(InputError::new_err(format!(
                "unknown scenario format '{other}'"
            )))
        }
    };
    Scenario::from_toml_str(&toml_text, source).map_err(|e| ScenarioError::new_err(e.to_string()))
}

/// Simulate a scenario as `medtwin simulate` does (same per-patient seeds, same rows).
///
/// Returns a dict: `patients` (list of names), `rows` (rows per patient), `columns`
/// (name → little-endian bytes; `patient_index` int32, `t_min` int64, the rest float64) when
/// `trajectory`, and `summary` (name → list, one entry per patient).
#[pyfunction]
#[pyo3(signature = (text, format, source, trajectory=true))]
fn simulate_t1d<'py>(
    py: Python<'py>,
    text: &str,
    format: &str,
    source: &str,
    trajectory: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let scen = parse_scenario(text, format, source)?;
    let params = scen
        .patients
        .iter()
        .map(|n| medtwin_t1d::patient(n).map_err(|e| ScenarioError::new_err(e.to_string())))
        .collect::<PyResult<Vec<_>>>()?;
    let results: Vec<Result<(Traj, TrajectorySummary), String>> = py.detach(|| {
        params
            .par_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut acc = SummaryAccumulator::default();
                let mut tr = Traj::default();
                if trajectory {
                    let n = scen.duration_min as usize + 1;
                    tr.t.reserve_exact(n);
                    tr.sampled.reserve_exact(n);
                    for v in [
                        &mut tr.plasma,
                        &mut tr.sc,
                        &mut tr.cgm,
                        &mut tr.insulin,
                        &mut tr.carbs,
                    ] {
                        v.reserve_exact(n);
                    }
                }
                simulate_patient(
                    p,
                    &scen,
                    patient_seed(scen.sensor_seed, i),
                    SolverOptions::default(),
                    |r: &MinuteRow| {
                        acc.push(r);
                        if trajectory {
                            tr.t.push(r.t_min as i64);
                            tr.plasma.push(r.plasma_glucose_mg_dl);
                            tr.sc.push(r.sc_glucose_mg_dl);
                            tr.cgm.push(r.cgm_mg_dl);
                            tr.sampled.push(u8::from(r.cgm_sampled));
                            tr.insulin.push(r.insulin_u_per_min);
                            tr.carbs.push(r.carbs_g_per_min);
                        }
                    },
                )
                .map_err(|e| format!("{}: simulation failed: {e}", p.name))?;
                let s = acc
                    .finish()
                    .ok_or_else(|| format!("{}: no CGM sample produced", p.name))?;
                Ok((tr, s))
            })
            .collect()
    });
    let mut ok = Vec::with_capacity(results.len());
    for r in results {
        ok.push(r.map_err(SimulationError::new_err)?);
    }
    let out = PyDict::new(py);
    out.set_item("patients", scen.patients.clone())?;
    out.set_item(
        "rows",
        ok.iter().map(|(t, _)| t.t.len()).collect::<Vec<_>>(),
    )?;
    if trajectory {
        let cat = |f: &dyn Fn(&Traj) -> &Vec<f64>| -> Vec<f64> {
            ok.iter().flat_map(|(t, _)| f(t).iter().copied()).collect()
        };
        let idx: Vec<i32> = ok
            .iter()
            .enumerate()
            .flat_map(|(i, (t, _))| std::iter::repeat_n(i as i32, t.t.len()))
            .collect();
        let tt: Vec<i64> = ok.iter().flat_map(|(t, _)| t.t.iter().copied()).collect();
        let cols = PyDict::new(py);
        cols.set_item("patient_index", i32_bytes(py, &idx)?)?;
        cols.set_item("t_min", i64_bytes(py, &tt)?)?;
        cols.set_item("plasma_glucose_mg_dl", f64_bytes(py, &cat(&|t| &t.plasma))?)?;
        cols.set_item("sc_glucose_mg_dl", f64_bytes(py, &cat(&|t| &t.sc))?)?;
        cols.set_item("cgm_mg_dl", f64_bytes(py, &cat(&|t| &t.cgm))?)?;
        let sampled: Vec<u8> = ok
            .iter()
            .flat_map(|(t, _)| t.sampled.iter().copied())
            .collect();
        cols.set_item("cgm_sampled", pyo3::types::PyBytes::new(py, &sampled))?;
        cols.set_item("insulin_u_per_min", f64_bytes(py, &cat(&|t| &t.insulin))?)?;
        cols.set_item("carbs_g_per_min", f64_bytes(py, &cat(&|t| &t.carbs))?)?;
        out.set_item("columns", cols)?;
    }
    let f = |g: &dyn Fn(&TrajectorySummary) -> f64| -> Vec<Py<PyAny>> {
        ok.iter()
            .map(|(_, s)| g(s).into_pyobject(py).map(|o| o.into_any().unbind()))
            .collect::<Result<_, _>>()
            .unwrap_or_default()
    };
    let names: Vec<Py<PyAny>> = scen
        .patients
        .iter()
        .map(|n| n.into_pyobject(py).map(|o| o.into_any().unbind()))
        .collect::<Result<_, _>>()?;
    let summary = columns_dict(
        py,
        vec![
            ("patient", names),
            ("mean_mg_dl", f(&|s| s.metrics.mean_mg_dl)),
            ("sd_mg_dl", f(&|s| s.metrics.sd_mg_dl)),
            ("cv_pct", f(&|s| s.metrics.cv_pct)),
            ("gmi_pct", f(&|s| s.metrics.gmi_pct)),
            ("tbr54_pct", f(&|s| s.metrics.tbr54_pct)),
            ("tbr70_pct", f(&|s| s.metrics.tbr70_pct)),
            ("tir_pct", f(&|s| s.metrics.tir_pct)),
            ("tar180_pct", f(&|s| s.metrics.tar180_pct)),
            ("tar250_pct", f(&|s| s.metrics.tar250_pct)),
            ("lbgi", f(&|s| s.metrics.lbgi)),
            ("hbgi", f(&|s| s.metrics.hbgi)),
            ("risk_index", f(&|s| s.metrics.risk_index)),
            ("total_insulin_u", f(&|s| s.total_insulin_u)),
            ("total_carbs_g", f(&|s| s.total_carbs_g)),
            ("n_cgm_samples", f(&|s| s.metrics.n as f64)),
        ],
    )?;
    out.set_item("summary", summary)?;
    Ok(out)
}

/// Validate a scenario without simulating; returns (patients, duration_min).
#[pyfunction]
fn check_scenario(text: &str, format: &str, source: &str) -> PyResult<(Vec<String>, u64)> {
    let s = parse_scenario(text, format, source)?;
    Ok((s.patients, s.duration_min))
}

/// The 30 bundled virtual patients: dict of columns.
#[pyfunction]
fn t1d_patients(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let all = medtwin_t1d::all_patients().map_err(|e| SimulationError::new_err(e.to_string()))?;
    let d = PyDict::new(py);
    d.set_item(
        "patient",
        all.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "age_years",
        all.iter().map(|p| p.age_years).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "body_weight_kg",
        all.iter().map(|p| p.bw).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "basal_glucose_mg_dl",
        all.iter()
            .map(|p| p.basal_glucose_mg_dl())
            .collect::<Vec<_>>(),
    )?;
    d.set_item(
        "carb_ratio_g_per_u",
        all.iter().map(|p| p.cr_g_per_u).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "correction_factor_mg_dl_per_u",
        all.iter().map(|p| p.cf_mg_dl_per_u).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "basal_u_per_h",
        all.iter()
            .map(|p| p.basal_u_per_min() * 60.0)
            .collect::<Vec<_>>(),
    )?;
    d.set_item(
        "total_daily_insulin_u",
        all.iter().map(|p| p.tdi_u_per_day).collect::<Vec<_>>(),
    )?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(simulate_t1d, m)?)?;
    m.add_function(wrap_pyfunction!(check_scenario, m)?)?;
    m.add_function(wrap_pyfunction!(t1d_patients, m)?)?;
    Ok(())
}
