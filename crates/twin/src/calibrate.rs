//! Maximum-a-posteriori calibration on an initial window, with a Laplace uncertainty estimate.
//!
//! Objective (negative log posterior, θ on log scale):
//! `Σ_k (y_k − g_k(θ))² / (2σ²) + Σ_i (θ_i − μ_i)² / (2 s_i²)` where `g_k(θ)` is the
//! deterministic model's subcutaneous glucose at the CGM times of the window (recorded inputs,
//! no process noise) and the population prior `N(μ, s²)` ([`crate::prior`]). Two passes: the
//! first with `σ = FIT_SD_MG_DL`; the second with σ re-estimated from the first pass's residuals
//! and the likelihood divided by `(1 + ρ)/(1 − ρ)` for their lag-1 autocorrelation ρ (CGM
//! residuals are strongly autocorrelated; counting them as independent would overstate the
//! information and overfit — the AR(1) effective-sample-size correction). The Laplace
//! covariance is taken from the second pass's objective.

use crate::generic::{UvaPadovaTwinModel, CGM};
use crate::inputs::InputSchedule;
use crate::model::solver_options;
use crate::prior::{apply_theta, Prior, N_THETA, THETA_NAMES};
use medtwin_infer::optim::{laplace, nelder_mead};
use medtwin_t1d::model::PatientSnapshot;
use medtwin_t1d::{PatientParams, VirtualPatient};
use medtwin_twin_core::{Plan as DosePlan, TwinModel};
use serde::{Deserialize, Serialize};

/// Residual SD, lag-1 autocorrelation, (observed, model) pairs and the final patient of a fit.
type ResidualStats = (f64, f64, Vec<(f64, f64)>, VirtualPatient);

/// Residual SD assumed during the MAP search, mg/dL.
pub const FIT_SD_MG_DL: f64 = 25.0;
/// Minimum number of CGM readings in the calibration window.
pub const MIN_CGM_IN_WINDOW: usize = 24;

/// The result of a calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Window `[start, end]`, minutes.
    pub window_min: (f64, f64),
    /// CGM readings used.
    pub n_obs: usize,
    /// MAP estimate of θ (log scale).
    pub theta_map: [f64; N_THETA],
    /// Posterior covariance of θ (Laplace, inflated), row-major.
    pub cov: Vec<f64>,
    /// Whether Nelder–Mead converged.
    pub converged: bool,
    /// Objective evaluations.
    pub evals: usize,
    /// RMSE of the MAP fit, mg/dL.
    pub rmse_mg_dl: f64,
    /// RMSE of the prior-mean (uncalibrated) model, mg/dL.
    pub prior_rmse_mg_dl: f64,
    /// Lag-1 autocorrelation of residuals.
    pub residual_rho: f64,
    /// Problems found (empty when all went well).
    pub diagnostics: Vec<String>,
    /// Model state at the end of the window along the MAP trajectory.
    pub end_state: PatientSnapshot,
    /// Insulin dose scale applied to the person's doses (see [`insulin_scale`]).
    pub insulin_scale: f64,
    /// The person's mean daily insulin over the window, U/day.
    pub window_tdi_u_per_day: f64,
}

/// Dose scale mapping the person onto the base virtual patient when body weight and insulin
/// sensitivity are unknown: `TDI_base / TDI_person`, clamped to [0.2, 5]. Rationale: insulin
/// sensitivity is inversely proportional to total daily insulin (the "1800 rule", Davidson et
/// al., Endocr Pract 9:308, 2003, and Walsh's correction-factor rules), so scaling doses by the
/// TDI ratio gives the base patient the same relative insulin exposure; the calibrated Vmx then
/// corrects what remains. Returns 1 when the person's TDI is unknown (no insulin recorded).
pub fn insulin_scale(base: &PatientParams, person_tdi_u_per_day: f64) -> f64 {
    if person_tdi_u_per_day > 1.0 {
        (base.tdi_u_per_day / person_tdi_u_per_day).clamp(0.2, 5.0)
    } else {
        1.0
    }
}

/// Why a calibration could not be done.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CalibrationError {
    /// Too few CGM readings.
    #[error("calibration window [{0}, {1}] min holds {2} CGM readings; at least {MIN_CGM_IN_WINDOW} are needed")]
    TooFewObservations(f64, f64, usize),
    /// The model failed at the prior mean.
    #[error(
        "the model cannot be simulated over the calibration window even at the prior mean: {0}"
    )]
    Simulation(String),
}

/// Initial state: the basal state of `params` with glucose states scaled to the first CGM.
pub fn initial_patient(params: &PatientParams, first_cgm_mg_dl: f64) -> VirtualPatient {
    let mut vp = VirtualPatient::new(params.clone(), solver_options());
    let ratio = (first_cgm_mg_dl / params.basal_glucose_mg_dl()).clamp(0.2, 5.0);
    let s = vp.state_mut();
    for k in [3, 4, 12] {
        s[k] *= ratio;
    }
    vp
}

/// Simulate deterministically over `[0, t_end]` with recorded inputs; return model glucose at
/// the CGM times in the window and the final patient.
pub fn simulate_window(
    base: &PatientParams,
    schedule: &InputSchedule,
    theta: &[f64; N_THETA],
    (t_start, t_end): (f64, f64),
    insulin_scale: f64,
) -> Result<(Vec<(f64, f64)>, VirtualPatient), String> {
    let (ys, times) = window_cgm(schedule, (t_start, t_end));
    let (g, vp) = simulate_minutes(
        &apply_theta(base, theta),
        theta[3].exp(),
        schedule,
        (t_start, t_end),
        insulin_scale,
        &times,
    )?;
    Ok((ys.into_iter().zip(g).collect(), vp))
}

/// The CGM readings a calibration window scores: values and times (whole minutes `t` with
/// `t_start ≤ t` and `round(t_start) ≤ t ≤ round(t_end)`), time-ordered.
pub fn window_cgm(schedule: &InputSchedule, (t_start, t_end): (f64, f64)) -> (Vec<f64>, Vec<f64>) {
    let (a, b) = (t_start.round(), t_end.round());
    schedule
        .cgm
        .iter()
        .filter(|c| c.0 >= t_start && c.0 >= a && c.0 <= b && c.0.fract() == 0.0)
        .map(|c| (c.1, c.0))
        .unzip()
}

/// The deterministic UVA/Padova trajectory of `params` under `schedule`'s recorded inputs
/// (carbohydrate × `carb_factor`, insulin × `insulin_scale`), stepped one minute at a time
/// from `round(t_start)` to `round(t_end)`, starting from [`initial_patient`] at the first CGM
/// reading at or after `t_start`: subcutaneous glucose (mg/dL) at `times` (sorted whole
/// minutes in that span) and the patient at the end. The one simulation of calibration and
/// of the generic-layer model ([`crate::generic::UvaPadovaTwinModel`]).
///
/// Errors: no CGM reading at or after `t_start`; a time that is not a whole minute in the
/// span or out of order; the solver's error.
pub fn simulate_minutes(
    params: &PatientParams,
    carb_factor: f64,
    schedule: &InputSchedule,
    (t_start, t_end): (f64, f64),
    insulin_scale: f64,
    times: &[f64],
) -> Result<(Vec<f64>, VirtualPatient), String> {
    let i0 = schedule.cgm.partition_point(|c| c.0 < t_start);
    let first = schedule
        .cgm
        .get(i0)
        .map(|c| c.1)
        .ok_or("no CGM in the window")?;
    let mut vp = initial_patient(params, first);
    let (a, n) = (t_start.round() as i64, t_end.round() as i64);
    let mut out = Vec::with_capacity(times.len());
    let mut next = times.iter().peekable();
    for t in a..=n {
        let tf = t as f64;
        while next.next_if(|&&x| x == tf).is_some() {
            out.push(vp.sc_glucose_mg_dl());
        }
        if let Some(&&x) = next.peek() {
            if x < tf {
                break;
            }
        }
        if t == n {
            break;
        }
        let carbs = schedule.carbs_g(tf, f64::INFINITY) * carb_factor;
        let ins = schedule.insulin_u_per_min(tf, f64::INFINITY) * insulin_scale;
        vp.step(carbs, ins).map_err(|e| e.to_string())?;
    }
    if out.len() < times.len() {
        return Err(format!(
            "output time {} min is not a whole minute in [{a}, {n}] or is out of order",
            times[out.len()]
        ));
    }
    Ok((out, vp))
}

fn rmse(pairs: &[(f64, f64)]) -> f64 {
    (pairs.iter().map(|(y, g)| (y - g).powi(2)).sum::<f64>() / pairs.len().max(1) as f64).sqrt()
}

/// MAP calibration of θ on `[window_start_min, window_end_min]`.
/// Errors: too few CGM readings; the model fails at the prior mean. A fit that does not
/// converge or whose Hessian is not positive definite returns `Ok` with `diagnostics` saying so
/// (and the prior covariance in place of the Laplace one).
pub fn calibrate(
    base: &PatientParams,
    prior: &Prior,
    schedule: &InputSchedule,
    (window_start_min, window_end_min): (f64, f64),
) -> Result<Calibration, CalibrationError> {
    let win = (window_start_min, window_end_min);
    let n_obs = schedule
        .cgm
        .iter()
        .filter(|c| c.0 >= window_start_min && c.0 <= window_end_min)
        .count();
    if n_obs < MIN_CGM_IN_WINDOW {
        return Err(CalibrationError::TooFewObservations(
            window_start_min,
            window_end_min,
            n_obs,
        ));
    }
    let tdi = schedule.mean_daily_insulin_u(window_start_min, window_end_min);
    let scale = insulin_scale(base, tdi);
    let (prior_pairs, _) = simulate_window(base, schedule, &prior.mean, win, scale)
        .map_err(CalibrationError::Simulation)?;
    // Negative log posterior with the likelihood of `n` autocorrelated residuals counted as
    // `n / inflation` independent ones; the model simulated through the generic twin layer's
    // interface (crate::generic).
    let model = UvaPadovaTwinModel::new(base, schedule, scale, win);
    let (ys, times) = window_cgm(schedule, win);
    let observed = [CGM.to_string()];
    let nlp = |th: &[f64], sd: f64, inflation: f64| -> f64 {
        let values: [(&str, f64); N_THETA] = std::array::from_fn(|k| (THETA_NAMES[k], th[k].exp()));
        match model.simulate(&values, &DosePlan::default(), &times, &observed) {
            Ok(rows) => {
                ys.iter()
                    .zip(&rows)
                    .map(|(y, g)| 0.5 * ((y - g[0]) / sd).powi(2))
                    .sum::<f64>()
                    / inflation
                    + prior.neg_log_density(th)
            }
            Err(_) => f64::INFINITY,
        }
    };
    let residual_stats = |theta: &[f64; N_THETA]| -> Result<ResidualStats, CalibrationError> {
        let (pairs, vp) = simulate_window(base, schedule, theta, win, scale)
            .map_err(CalibrationError::Simulation)?;
        let res: Vec<f64> = pairs.iter().map(|(y, g)| y - g).collect();
        let sigma = (res.iter().map(|r| r * r).sum::<f64>() / res.len() as f64)
            .sqrt()
            .max(1.0);
        let mean_r = res.iter().sum::<f64>() / res.len() as f64;
        let var_r = res.iter().map(|r| (r - mean_r).powi(2)).sum::<f64>();
        let rho = if var_r > 0.0 {
            (res.windows(2)
                .map(|w| (w[0] - mean_r) * (w[1] - mean_r))
                .sum::<f64>()
                / var_r)
                .clamp(0.0, 0.98)
        } else {
            0.0
        };
        Ok((sigma, rho, pairs, vp))
    };
    let step: Vec<f64> = prior.sd.iter().map(|s| 0.5 * s).collect();
    // Pass 1: fixed residual SD, independent residuals.
    let m1 = nelder_mead(
        &mut |th| nlp(th, FIT_SD_MG_DL, 1.0),
        &prior.mean,
        &step,
        1e-3,
        400,
    );
    let theta1: [f64; N_THETA] = std::array::from_fn(|i| m1.x[i]);
    let (sigma1, rho1, _, _) = residual_stats(&theta1)?;
    // Pass 2: residual SD and AR(1) effective sample size from pass 1.
    let inflation = (1.0 + rho1) / (1.0 - rho1);
    let m = nelder_mead(
        &mut |th| nlp(th, sigma1, inflation),
        &m1.x,
        &step,
        1e-4,
        400,
    );
    let mut diagnostics = Vec::new();
    if !m.converged {
        diagnostics.push(format!(
            "Nelder–Mead did not converge in {} evaluations (objective {:.2})",
            m.evals, m.f
        ));
    }
    let theta_map: [f64; N_THETA] = std::array::from_fn(|i| m.x[i]);
    let (_, rho, pairs, vp) = residual_stats(&theta_map)?;
    let h: Vec<f64> = prior.sd.iter().map(|s| 0.05 * s).collect();
    let cov = laplace(&mut |th| nlp(th, sigma1, inflation), &m.x, &h).unwrap_or_else(|| {
        diagnostics
            .push("Hessian at the MAP is not positive definite: using the prior covariance".into());
        let mut c = vec![0.0; N_THETA * N_THETA];
        for i in 0..N_THETA {
            c[i * N_THETA + i] = prior.sd[i].powi(2);
        }
        c
    });
    let map_rmse = rmse(&pairs);
    let prior_rmse = rmse(&prior_pairs);
    if map_rmse > prior_rmse + 1e-9 {
        diagnostics.push(format!(
            "MAP fit RMSE {map_rmse:.1} mg/dL is worse than the prior mean's {prior_rmse:.1} mg/dL"
        ));
    }
    for (i, name) in THETA_NAMES.iter().enumerate() {
        let z = (theta_map[i] - prior.mean[i]) / prior.sd[i];
        if z.abs() > 3.0 {
            diagnostics.push(format!(
                "{name} is {z:.1} prior SDs from the population centre: check units and records"
            ));
        }
    }
    Ok(Calibration {
        window_min: win,
        n_obs: pairs.len(),
        theta_map,
        cov,
        converged: m.converged,
        evals: m1.evals + m.evals,
        rmse_mg_dl: map_rmse,
        prior_rmse_mg_dl: prior_rmse,
        residual_rho: rho,
        diagnostics,
        end_state: vp.snapshot(),
        insulin_scale: scale,
        window_tdi_u_per_day: tdi,
    })
}
