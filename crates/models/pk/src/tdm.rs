//! Therapeutic drug monitoring (TDM): a patient's PK twin from their own drug levels.
//!
//! The population model ([`crate::pop`]) is the prior; a patient's levels give the maximum a
//! posteriori (MAP) random effects `η̂` — the "Bayesian forecasting" of model-informed precision
//! dosing (Sheiner & Beal 1982, J Pharm Sci 71:1344; Keizer et al. 2018, CPT Pharmacometrics Syst
//! Pharmacol 7:785) — with a Laplace (Gaussian) posterior `N(η̂, (GᵀR⁻¹G + Ω⁻¹)⁻¹)`. Predictions
//! of future levels are posterior-predictive: parameter draws from that posterior plus the
//! residual error of a measured level. [`backtest`] scores this on real data (each patient's last
//! level forecast from the earlier ones, with the population fitted without any last level);
//! [`recommend`] finds the dose meeting a trough/AUC/Cmax target at steady state.

use crate::data::{Dataset, Subject};
use crate::model::ModelError;
use crate::pop::{
    conditional, fit, individual_params, residual_variance, FitError, FitOptions, PopEstimates,
    PopModel, SubjectObs,
};
use crate::Dose;
use medtwin_infer::optim::{cholesky, invert_spd};
use medtwin_infer::quantile_sorted as quantile;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a TDM operation failed.
#[derive(Debug, Error)]
pub enum TdmError {
    /// Population fit failure.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// Model failure (bad parameters or doses).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The MAP estimate could not be found.
    #[error("subject {0}: no maximum a posteriori estimate (the levels are inconsistent with the model)")]
    NoMap(String),
    /// No dose meets the target under the constraint.
    #[error("no dose recommended: {0}")]
    Refused(String),
    /// Bad request.
    #[error("{0}")]
    Invalid(String),
}

/// A patient's PK twin: population prior + their doses and levels → posterior of η.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TdmTwin {
    /// Format version of the saved twin.
    pub format_version: u32,
    /// Population model (the prior).
    pub model: PopModel,
    /// Population estimates.
    pub estimates: PopEstimates,
    /// The patient (doses, levels, covariates).
    pub subject: Subject,
    /// MAP random effects η̂ (log scale).
    pub eta_map: Vec<f64>,
    /// Posterior covariance of η (Laplace), row-major `k × k`.
    pub eta_cov: Vec<f64>,
}

/// A posterior-predictive summary at one time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelPrediction {
    /// Time, h.
    pub time_h: f64,
    /// Prediction with the MAP parameters.
    pub map: f64,
    /// Median of the posterior-predictive distribution of a measured level.
    pub median: f64,
    /// 10th/90th percentiles (80 % prediction interval).
    pub pi80: [f64; 2],
    /// 2.5th/97.5th percentiles (95 % prediction interval).
    pub pi95: [f64; 2],
}

impl TdmTwin {
    /// Individualise: MAP η and its Laplace posterior for `subject` under the population model.
    /// A subject without levels gets the prior (`η̂ = 0`, covariance Ω).
    pub fn new(model: &PopModel, est: &PopEstimates, subject: &Subject) -> Result<Self, TdmError> {
        let k = model.n_eta();
        let omega_inv = invert_spd(&est.omega, k)
            .ok_or_else(|| TdmError::Invalid("Ω is not positive definite".into()))?;
        let (eta_map, eta_cov) = if subject.observations.is_empty() || k == 0 {
            (vec![0.0; k], est.omega.clone())
        } else {
            let so = SubjectObs::new(subject);
            let c = conditional(model, est, &omega_inv, &so, &vec![0.0; k])
                .ok_or_else(|| TdmError::NoMap(subject.id.clone()))?;
            let cov =
                invert_spd(&c.precision, k).ok_or_else(|| TdmError::NoMap(subject.id.clone()))?;
            (c.eta, cov)
        };
        Ok(TdmTwin {
            format_version: 1,
            model: model.clone(),
            estimates: est.clone(),
            subject: subject.clone(),
            eta_map,
            eta_cov,
        })
    }

    /// `n` posterior draws of η (deterministic for a seed), the MAP first.
    pub fn eta_draws(&self, n: usize, seed: u64) -> Vec<Vec<f64>> {
        let k = self.eta_map.len();
        let l = cholesky(&self.eta_cov, k).unwrap_or_else(|| vec![0.0; k * k]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out = vec![self.eta_map.clone()];
        while out.len() < n.max(1) {
            let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
            out.push(
                (0..k)
                    .map(|i| self.eta_map[i] + (0..=i).map(|j| l[i * k + j] * z[j]).sum::<f64>())
                    .collect(),
            );
        }
        out
    }

    /// Concentrations at `times_h` under `doses` (history + plan) for each posterior draw
    /// (rows = draws, the MAP first).
    pub fn concentration_draws(
        &self,
        doses: &[Dose],
        times_h: &[f64],
        n: usize,
        seed: u64,
    ) -> Result<Vec<Vec<f64>>, TdmError> {
        self.eta_draws(n, seed)
            .iter()
            .map(|eta| {
                let p = individual_params(&self.model, &self.estimates, &self.subject, eta)?;
                Ok(self.model.pk.concentrations(&p, doses, times_h)?)
            })
            .collect()
    }

    /// Posterior-predictive distribution of a *measured* level at each of `times_h` under the
    /// patient's recorded doses plus `plan` (residual error included), from `n` draws.
    pub fn predict_levels(
        &self,
        plan: &[Dose],
        times_h: &[f64],
        n: usize,
        seed: u64,
    ) -> Result<Vec<LevelPrediction>, TdmError> {
        let mut doses = self.subject.doses.clone();
        doses.extend_from_slice(plan);
        doses.sort_by(|a, b| a.time_h.total_cmp(&b.time_h));
        let draws = self.concentration_draws(&doses, times_h, n, seed)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        Ok(times_h
            .iter()
            .enumerate()
            .map(|(ti, &t)| {
                let mut v: Vec<f64> = draws
                    .iter()
                    .map(|row| {
                        let e: f64 = rng.sample(StandardNormal);
                        row[ti] + e * residual_variance(&self.estimates, row[ti]).sqrt()
                    })
                    .collect();
                v.sort_by(f64::total_cmp);
                LevelPrediction {
                    time_h: t,
                    map: draws[0][ti],
                    median: quantile(&v, 0.5),
                    pi80: [quantile(&v, 0.1), quantile(&v, 0.9)],
                    pi95: [quantile(&v, 0.025), quantile(&v, 0.975)],
                }
            })
            .collect())
    }

    /// Individual parameters at the MAP, `(name, value)`.
    pub fn map_parameters(&self) -> Result<Vec<(String, f64)>, TdmError> {
        let p = individual_params(&self.model, &self.estimates, &self.subject, &self.eta_map)?;
        Ok(crate::pop::named_values(&self.model.pk, &p))
    }
}

/// Metrics of [`backtest`] (the keys of `metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TdmMetrics {
    /// Patients scored (those with ≥ 2 levels).
    pub n: usize,
    /// RMSE of the individual (MAP) forecast of the last level.
    pub rmse: f64,
    /// RMSE of the population (η = 0) prediction of the last level.
    pub rmse_population: f64,
    /// Mean absolute error of the individual forecast.
    pub mae: f64,
    /// Fraction of last levels inside the 80 % prediction interval.
    pub coverage_80: f64,
    /// Fraction inside the 95 % prediction interval.
    pub coverage_95: f64,
    /// Concentration unit (UCUM).
    pub unit: String,
}

/// One patient's held-out forecast in a backtest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutForecast {
    /// Subject id.
    pub id: String,
    /// Time of the held-out level, h.
    pub time_h: f64,
    /// Observed level.
    pub observed: f64,
    /// Population prediction (η = 0).
    pub population: f64,
    /// Individual forecast and intervals.
    pub forecast: LevelPrediction,
}

/// Holdout-last backtest: the population model is fitted without every patient's last level,
/// then each patient's last level is forecast from their earlier levels (MAP with the fitted
/// population as prior). Patients with fewer than 2 levels are skipped. `n_draws` posterior
/// draws give the prediction intervals.
pub fn backtest(
    ds: &Dataset,
    model: &PopModel,
    opts: &FitOptions,
    n_draws: usize,
    seed: u64,
) -> Result<(TdmMetrics, Vec<HoldoutForecast>, crate::pop::PopFit), TdmError> {
    let mut train = ds.clone();
    let mut held: Vec<Option<crate::data::Observation>> = Vec::new();
    for s in train.subjects.iter_mut() {
        held.push(if s.observations.len() >= 2 {
            s.observations.pop()
        } else {
            None
        });
    }
    let popfit = fit(&train, model, opts)?;
    let mut rows = Vec::new();
    for (s, h) in train.subjects.iter().zip(held) {
        let Some(h) = h else { continue };
        let twin = TdmTwin::new(&popfit.model, &popfit.estimates, s)?;
        let forecast = twin.predict_levels(&[], &[h.time_h], n_draws, seed)?[0];
        let k = popfit.model.n_eta();
        let p0 = individual_params(&popfit.model, &popfit.estimates, s, &vec![0.0; k])?;
        let population = popfit.model.pk.concentration(&p0, &s.doses, h.time_h)?;
        rows.push(HoldoutForecast {
            id: s.id.clone(),
            time_h: h.time_h,
            observed: h.dv,
            population,
            forecast,
        });
    }
    let n = rows.len();
    if n == 0 {
        return Err(TdmError::Invalid(
            "no patient has two or more levels: nothing to backtest".into(),
        ));
    }
    let nf = n as f64;
    let rmse_of = |f: &dyn Fn(&HoldoutForecast) -> f64| {
        (rows
            .iter()
            .map(|r| (f(r) - r.observed).powi(2))
            .sum::<f64>()
            / nf)
            .sqrt()
    };
    let inside = |lo: f64, hi: f64, y: f64| lo <= y && y <= hi;
    let metrics = TdmMetrics {
        n,
        rmse: rmse_of(&|r| r.forecast.map),
        rmse_population: rmse_of(&|r| r.population),
        mae: rows
            .iter()
            .map(|r| (r.forecast.map - r.observed).abs())
            .sum::<f64>()
            / nf,
        coverage_80: rows
            .iter()
            .filter(|r| inside(r.forecast.pi80[0], r.forecast.pi80[1], r.observed))
            .count() as f64
            / nf,
        coverage_95: rows
            .iter()
            .filter(|r| inside(r.forecast.pi95[0], r.forecast.pi95[1], r.observed))
            .count() as f64
            / nf,
        unit: ds.units.concentration.clone(),
    };
    Ok((metrics, rows, popfit))
}

/// What a dose recommendation aims at, at steady state of the regimen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// Concentration just before the next dose (`C_min,ss`).
    Trough(f64),
    /// AUC over one dosing interval at steady state (concentration × h).
    Auc(f64),
    /// Peak concentration over one interval at steady state (`C_max,ss`).
    Cmax(f64),
}

/// A regimen to dose: every `interval_h` into compartment `cmt`, as a bolus or an infusion of
/// `infusion_h` hours.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Regimen {
    /// Dosing interval τ, h.
    pub interval_h: f64,
    /// Dosing compartment (NONMEM CMT).
    pub cmt: u32,
    /// Infusion duration, h (0 = bolus).
    pub infusion_h: f64,
}

/// A dose recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Recommended dose per interval (amount unit of the data).
    pub dose: f64,
    /// Dosing interval, h.
    pub interval_h: f64,
    /// Predicted steady-state trough, peak and AUC over τ with the MAP parameters.
    pub map_trough: f64,
    /// Peak at steady state (MAP).
    pub map_cmax: f64,
    /// AUC over τ at steady state (MAP).
    pub map_auc: f64,
    /// 80 % interval of the steady-state trough under the posterior (parameters only).
    pub trough_pi80: [f64; 2],
    /// P(C_max,ss > toxic threshold) under the posterior, when a threshold was given.
    pub p_toxic: Option<f64>,
    /// P(trough within ±20 % of a trough target), for trough targets.
    pub p_target: Option<f64>,
}

/// Steady-state trough, peak and AUC over τ per unit dose for parameters of draw `eta`.
fn ss_profile(twin: &TdmTwin, eta: &[f64], reg: &Regimen) -> Result<(f64, f64, f64), TdmError> {
    let p = individual_params(&twin.model, &twin.estimates, &twin.subject, eta)?;
    let rate = if reg.infusion_h > 0.0 {
        1.0 / reg.infusion_h
    } else {
        0.0
    };
    let dose = Dose {
        time_h: 0.0,
        amount: 1.0,
        rate,
        cmt: reg.cmt,
        ii_h: reg.interval_h,
        addl: 0,
        ss: true,
    };
    let n = 96;
    let times: Vec<f64> = (0..=n)
        .map(|i| reg.interval_h * i as f64 / n as f64)
        .collect();
    let c = twin.model.pk.concentrations(&p, &[dose], &times)?;
    // Trough: at the end of the interval (the next dose's time), from the SS series.
    let trough = c[n];
    let peak = c.iter().copied().fold(f64::MIN, f64::max);
    // Trapezoid on a 96-point grid (the profile is smooth between doses).
    let auc = (0..n)
        .map(|i| 0.5 * (c[i] + c[i + 1]) * (times[i + 1] - times[i]))
        .sum();
    Ok((trough, peak, auc))
}

/// Recommend the dose per interval that meets `target` at steady state with the MAP parameters
/// (linear PK: exposure is proportional to dose), and report its risk under the posterior
/// (`n_draws` draws). With `toxic`, the dose is refused when P(C_max,ss > toxic) exceeds
/// `max_risk`, naming the probability. `round_to` rounds the dose to a practical increment
/// (0 = no rounding).
#[allow(clippy::too_many_arguments)]
pub fn recommend(
    twin: &TdmTwin,
    target: Target,
    regimen: Regimen,
    toxic: Option<f64>,
    max_risk: f64,
    round_to: f64,
    n_draws: usize,
    seed: u64,
) -> Result<Recommendation, TdmError> {
    let value = match target {
        Target::Trough(v) | Target::Auc(v) | Target::Cmax(v) => v,
    };
    if !(value.is_finite() && value > 0.0) {
        return Err(TdmError::Invalid(format!("target {value} must be > 0")));
    }
    if !(regimen.interval_h.is_finite() && regimen.interval_h > 0.0) {
        return Err(TdmError::Invalid("interval must be > 0 h".into()));
    }
    if regimen.infusion_h < 0.0 || regimen.infusion_h > regimen.interval_h {
        return Err(TdmError::Invalid(
            "infusion duration must be within [0, interval]".into(),
        ));
    }
    let (t1, c1, a1) = ss_profile(twin, &twin.eta_map, &regimen)?;
    let per_unit = match target {
        Target::Trough(_) => t1,
        Target::Auc(_) => a1,
        Target::Cmax(_) => c1,
    };
    if per_unit.is_nan() || per_unit <= 0.0 {
        return Err(TdmError::Refused(
            "the predicted exposure per unit dose is zero".into(),
        ));
    }
    let mut dose = value / per_unit;
    if round_to > 0.0 {
        dose = ((dose / round_to).round() * round_to).max(round_to);
    }
    let draws = twin.eta_draws(n_draws, seed);
    let mut troughs = Vec::with_capacity(draws.len());
    let mut peaks = Vec::with_capacity(draws.len());
    for eta in &draws {
        let (t, c, _) = ss_profile(twin, eta, &regimen)?;
        troughs.push(t * dose);
        peaks.push(c * dose);
    }
    let p_toxic =
        toxic.map(|thr| peaks.iter().filter(|&&c| c > thr).count() as f64 / peaks.len() as f64);
    if let (Some(p), Some(thr)) = (p_toxic, toxic) {
        if p > max_risk {
            return Err(TdmError::Refused(format!(
                "the dose meeting the target ({dose:.4} every {} h) gives P(Cmax,ss > {thr}) = {p:.3}, above the allowed {max_risk}",
                regimen.interval_h
            )));
        }
    }
    let p_target = match target {
        Target::Trough(v) => Some(
            troughs
                .iter()
                .filter(|&&t| (t / v - 1.0).abs() <= 0.2)
                .count() as f64
                / troughs.len() as f64,
        ),
        _ => None,
    };
    let mut sorted = troughs.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Recommendation {
        dose,
        interval_h: regimen.interval_h,
        map_trough: t1 * dose,
        map_cmax: c1 * dose,
        map_auc: a1 * dose,
        trough_pi80: [quantile(&sorted, 0.1), quantile(&sorted, 0.9)],
        p_toxic,
        p_target,
    })
}

/// The outcome of [`recommend`] at one interval (h).
pub type IntervalOutcome = (f64, Result<Recommendation, TdmError>);

/// Standard dosing intervals tried by [`recommend_with_interval`], h.
pub const STANDARD_INTERVALS_H: [f64; 7] = [4.0, 6.0, 8.0, 12.0, 24.0, 48.0, 72.0];

/// Recommend dose *and* interval: [`recommend`] at each of `intervals_h`, keeping the longest
/// interval (fewest administrations) whose dose is not refused. Returns that recommendation and
/// the outcome at every interval tried (refusal reasons included), in the order given.
#[allow(clippy::too_many_arguments)]
pub fn recommend_with_interval(
    twin: &TdmTwin,
    target: Target,
    intervals_h: &[f64],
    cmt: u32,
    infusion_h: f64,
    toxic: Option<f64>,
    max_risk: f64,
    round_to: f64,
    n_draws: usize,
    seed: u64,
) -> (Result<Recommendation, TdmError>, Vec<IntervalOutcome>) {
    let tried: Vec<IntervalOutcome> = intervals_h
        .iter()
        .filter(|&&tau| tau >= infusion_h)
        .map(|&tau| {
            let reg = Regimen {
                interval_h: tau,
                cmt,
                infusion_h,
            };
            (
                tau,
                recommend(twin, target, reg, toxic, max_risk, round_to, n_draws, seed),
            )
        })
        .collect();
    let best = tried
        .iter()
        .filter_map(|(tau, r)| r.as_ref().ok().map(|r| (*tau, r.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, r)| r)
        .ok_or_else(|| {
            TdmError::Refused(format!(
                "no interval among {intervals_h:?} h has a dose meeting the target within the constraint"
            ))
        });
    (best, tried)
}
