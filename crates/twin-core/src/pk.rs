//! Pharmacokinetic twins on the generic layer: therapeutic drug monitoring (TDM).
//!
//! The adapter: [`PkTwinModel`] is one patient's closed-form linear PK model
//! ([`medtwin_pk::model::PkModel`]: 1–3 compartments, IV bolus, infusion, first-order absorption,
//! `SS`/`II`/`ADDL`) with their NONMEM dose records, as a [`TwinModel`] whose one observable
//! [`OBSERVABLE`] (`"C"`) is the central concentration (amount unit / L, e.g. mg/L) and whose
//! time unit is the hour. [`tdm_problem`] turns a population fit ([`medtwin_pk::pop`]) into the
//! twin's calibration spec:
//!
//! * **prior** — the population model for this patient: `ln P ~ N(ln TV(covariates), Ω)` for the
//!   parameters with inter-individual variability (log-normal marginals with medians at the
//!   covariate-adjusted typical values and `sd_log = √Ω_kk`, plus
//!   [`CalibrationSpec::prior_correlation`] from a full Ω); parameters without IIV stay at their
//!   typical values;
//! * **noise** — the population residual error: additive → [`Noise::Normal`], proportional or
//!   combined → [`Noise::Combined`] (`Var ε = σ_add² + σ_prop² C²`).
//!
//! The posterior is then the generic one ([`crate::fit`]: MAP, Laplace covariance, importance
//! sampling), which is the MAP Bayesian forecasting of model-informed precision dosing (Sheiner &
//! Beal 1982, J Pharm Sci 71:1344; Keizer et al. 2018, CPT Pharmacometrics Syst Pharmacol 7:785):
//! its MAP is the FOCE-I conditional mode `η̂` of [`medtwin_pk::pop`] (same objective
//! `Σ[(y−f)²/V + ln V] + ηᵀΩ⁻¹η`), checked in `tests/pk_tdm.rs`.
//!
//! On top of it: [`TdmTwin`] (a [`Twin`] of a PK patient: individual parameters, posterior-
//! predictive level intervals), [`backtest`] (holdout-last on real data) and [`recommend`] (the
//! dose meeting a trough/AUC/Cmax target at steady state, with P(toxic) under the posterior).

use crate::data::Measurement;
use crate::fit::Posterior;
use crate::model::{Plan, TwinModel};
use crate::spec::{CalibrationSpec, Estimated, Noise, ObservableSpec, Prior};
use crate::twin::{ModelSource, Twin};
use crate::TwinError;
use medtwin_infer::weighted_quantile;
use medtwin_pk::data::{Dataset, Observation, Subject};
use medtwin_pk::model::{ModelError, PkModel, PkParams};
use medtwin_pk::pop::{
    fit, individual_params, named_values, residual_variance, typical_log_values, ErrorModel,
    FitError, FitOptions, PopEstimates, PopFit, PopModel,
};
use medtwin_pk::Dose as PkDose;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Id of the observable of a [`PkTwinModel`]: the central concentration (amount unit / L).
pub const OBSERVABLE: &str = "C";

/// Why a TDM operation failed.
#[derive(Debug, Error)]
pub enum TdmError {
    /// Population fit failure.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// PK model failure (bad parameters or doses).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Failure of the generic twin layer (spec, data, calibration, saved file).
    #[error(transparent)]
    Twin(#[from] TwinError),
    /// No dose meets the target under the constraint.
    #[error("no dose recommended: {0}")]
    Refused(String),
    /// Bad request.
    #[error("{0}")]
    Invalid(String),
}

/// One patient's linear PK as a [`TwinModel`] (hours; observable [`OBSERVABLE`]).
///
/// Parameters are named as in the population model's parametrisation (NONMEM names: `CL`, `V`,
/// `KA`, `Q`, `V2`, `Q3`, `V3`, or `KE` replacing `V` as in nlme's `SSfol`; units L/h, L, 1/h).
/// The recorded doses keep their NONMEM semantics (infusion `RATE`, `II`/`ADDL`, `SS`); plan
/// doses are boluses, or zero-order infusions over their `duration` (h), whose target is
/// `"depot"` (oral models), `"central"`, or a NONMEM `CMT` number (`"1"`, `"2"`), in the
/// data's amount unit at times in h.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PkTwinModel {
    /// Structural model.
    pub pk: PkModel,
    /// Nominal values `(name, value)` of every structural parameter of the parametrisation
    /// (for a TDM twin: the patient's covariate-adjusted typical values).
    pub parameters: Vec<(String, f64)>,
    /// The patient's dose records.
    pub doses: Vec<PkDose>,
}

impl PkTwinModel {
    /// Check that the parameter names form a parametrisation of the model and the values are
    /// finite.
    ///
    /// Errors: [`TwinError::Model`] naming the parameter.
    pub fn check(&self) -> Result<(), TwinError> {
        for (n, v) in &self.parameters {
            if !v.is_finite() {
                return Err(TwinError::Model(format!(
                    "PK parameter {n} = {v} is not finite"
                )));
            }
        }
        let p = self.params(&[])?;
        self.pk
            .validate(&p)
            .map_err(|e| TwinError::Model(e.to_string()))
    }

    /// Structural parameters with `values` overriding the nominal ones by name.
    ///
    /// Errors: [`TwinError::Model`] for a name that is not a parameter of this model.
    pub fn params(&self, values: &[(&str, f64)]) -> Result<PkParams, TwinError> {
        let mut named: Vec<(&str, f64)> = self
            .parameters
            .iter()
            .map(|(n, v)| (n.as_str(), *v))
            .collect();
        for &(id, v) in values {
            match named.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(id)) {
                Some(slot) => slot.1 = v,
                None => {
                    return Err(TwinError::Model(format!(
                        "'{id}' is not a parameter of this PK model ({})",
                        self.parameters
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        PkParams::from_named(named).map_err(|e| TwinError::Model(e.to_string()))
    }

    /// The recorded doses followed by the plan's doses (boluses, or infusions at
    /// `amount / duration` per h), in time order.
    ///
    /// Errors: [`TwinError::Model`] for an unknown target, a non-finite dose or a negative or
    /// non-finite duration.
    pub fn doses_with(&self, plan: &Plan) -> Result<Vec<PkDose>, TwinError> {
        let mut doses = self.doses.clone();
        for d in &plan.doses {
            let cmt = match d.target.as_str() {
                "depot" if self.pk.central_cmt() == 2 => 1,
                "central" => self.pk.central_cmt(),
                t => t.parse::<u32>().map_err(|_| {
                    TwinError::Model(format!(
                        "dose at {} h targets '{t}': expected depot (oral models), central or a CMT number",
                        d.time
                    ))
                })?,
            };
            if !(d.time.is_finite() && d.amount.is_finite() && d.amount >= 0.0) {
                return Err(TwinError::Model(format!(
                    "dose of {} at {} h: time and amount must be finite, amount >= 0",
                    d.amount, d.time
                )));
            }
            if !(d.duration.is_finite() && d.duration >= 0.0) {
                return Err(TwinError::Model(format!(
                    "dose of {} at {} h: infusion duration {} h must be finite and >= 0",
                    d.amount, d.time, d.duration
                )));
            }
            let mut dose = PkDose::bolus(d.time, d.amount, cmt);
            if d.duration > 0.0 {
                dose.rate = d.amount / d.duration;
            }
            doses.push(dose);
        }
        doses.sort_by(|a, b| a.time_h.total_cmp(&b.time_h));
        Ok(doses)
    }
}

impl TwinModel for PkTwinModel {
    fn parameter_ids(&self) -> Vec<String> {
        self.parameters.iter().map(|(n, _)| n.clone()).collect()
    }

    fn nominal(&self, id: &str) -> Option<f64> {
        self.parameters.iter().find(|(n, _)| n == id).map(|p| p.1)
    }

    fn has_observable(&self, id: &str) -> bool {
        id == OBSERVABLE
    }

    fn time_unit(&self) -> String {
        "h".into()
    }

    fn simulate(
        &self,
        values: &[(&str, f64)],
        plan: &Plan,
        times: &[f64],
        observables: &[String],
    ) -> Result<Vec<Vec<f64>>, TwinError> {
        if let Some(o) = observables.iter().find(|o| *o != OBSERVABLE) {
            return Err(TwinError::Model(format!(
                "'{o}' is not an observable of a PK model (only {OBSERVABLE})"
            )));
        }
        let p = self.params(values)?;
        let doses = self.doses_with(plan)?;
        let c = self
            .pk
            .concentrations(&p, &doses, times)
            .map_err(|e| TwinError::Model(e.to_string()))?;
        Ok(c.into_iter().map(|x| vec![x; observables.len()]).collect())
    }
}

/// The generic-twin problem of one patient under a population fit: the model (their doses,
/// covariate-adjusted typical values), the calibration spec (population prior and residual
/// error, `samples` posterior samples, `seed`) and their levels as measurements of
/// [`OBSERVABLE`].
///
/// Errors: [`TdmError::Invalid`] when a covariate the model uses is missing for the subject, Ω
/// has the wrong size or is not positive definite, or the residual error is zero.
pub fn tdm_problem(
    model: &PopModel,
    est: &PopEstimates,
    subject: &Subject,
    samples: usize,
    seed: u64,
) -> Result<(PkTwinModel, CalibrationSpec, Vec<Measurement>), TdmError> {
    let tv = typical_log_values(model, est, subject);
    if let Some((j, _)) = tv.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(TdmError::Invalid(format!(
            "subject {}: no typical value of {} (a covariate it needs is missing or out of range)",
            subject.id, model.parameters[j]
        )));
    }
    let k = model.n_eta();
    if est.omega.len() != k * k {
        return Err(TdmError::Invalid(format!(
            "Ω has {} entries for {k} random effects",
            est.omega.len()
        )));
    }
    let pk_model = PkTwinModel {
        pk: model.pk,
        parameters: model
            .parameters
            .iter()
            .cloned()
            .zip(tv.iter().map(|v| v.exp()))
            .collect(),
        doses: subject.doses.clone(),
    };
    let mut estimate = Vec::with_capacity(k);
    for (a, name) in model.iiv.iter().enumerate() {
        let j = model
            .parameters
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| {
                TdmError::Invalid(format!("random effect on {name}, not a model parameter"))
            })?;
        let var = est.omega[a * k + a];
        if !(var > 0.0 && var.is_finite()) {
            return Err(TdmError::Invalid(format!(
                "Ω variance of {name} is {var}, not > 0"
            )));
        }
        estimate.push(Estimated {
            id: name.clone(),
            prior: Prior::LogNormal {
                median: tv[j].exp(),
                sd_log: var.sqrt(),
            },
            lower: None,
            upper: None,
        });
    }
    let correlated = (0..k).any(|a| (0..k).any(|b| a != b && est.omega[a * k + b] != 0.0));
    let prior_correlation = correlated.then(|| {
        (0..k * k)
            .map(|i| {
                let (a, b) = (i / k, i % k);
                est.omega[i] / (est.omega[a * k + a] * est.omega[b * k + b]).sqrt()
            })
            .collect()
    });
    let noise = match model.error {
        ErrorModel::Additive => Noise::Normal {
            sigma: est.sigma_add,
        },
        ErrorModel::Proportional | ErrorModel::Combined => Noise::Combined {
            sigma_add: est.sigma_add,
            sigma_prop: est.sigma_prop,
        },
    };
    noise
        .check()
        .map_err(|e| TdmError::Invalid(format!("residual error: {e}")))?;
    let spec = CalibrationSpec {
        estimate,
        observables: vec![ObservableSpec {
            id: OBSERVABLE.into(),
            noise,
        }],
        samples,
        seed,
        prior_correlation,
        ..CalibrationSpec::default()
    };
    let data = subject
        .observations
        .iter()
        .map(|o| Measurement {
            observable: OBSERVABLE.into(),
            time: o.time_h,
            value: o.dv,
            sigma: None,
        })
        .collect();
    Ok((pk_model, spec, data))
}

/// Posterior samples of a [`TdmTwin`] by default (the importance-sampling size).
pub const DEFAULT_SAMPLES: usize = 2000;

/// A posterior-predictive summary of a measured level at one time (concentration unit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelPrediction {
    /// Time, h.
    pub time_h: f64,
    /// Prediction with the MAP parameters (no residual error).
    pub map: f64,
    /// Median of the posterior-predictive distribution of a measured level.
    pub median: f64,
    /// 10th/90th percentiles (80 % prediction interval).
    pub pi80: [f64; 2],
    /// 2.5th/97.5th percentiles (95 % prediction interval).
    pub pi95: [f64; 2],
}

/// A patient's PK twin: a generic [`Twin`] whose model is a [`PkTwinModel`] and whose spec
/// is the population prior and residual error ([`tdm_problem`]).
pub struct TdmTwin {
    twin: Twin,
    pk: PkTwinModel,
}

impl TdmTwin {
    /// Individualise: the posterior of `subject`'s parameters from their levels with the
    /// population as prior ([`DEFAULT_SAMPLES`] samples, seed 1). A subject without levels
    /// gets the prior.
    ///
    /// Errors: as [`tdm_problem`] and [`Twin::fit`].
    pub fn new(model: &PopModel, est: &PopEstimates, subject: &Subject) -> Result<Self, TdmError> {
        Self::with_samples(model, est, subject, DEFAULT_SAMPLES, 1)
    }

    /// [`TdmTwin::new`] with `samples` posterior samples (≥ 2) drawn from `seed`.
    pub fn with_samples(
        model: &PopModel,
        est: &PopEstimates,
        subject: &Subject,
        samples: usize,
        seed: u64,
    ) -> Result<Self, TdmError> {
        let (m, spec, data) = tdm_problem(model, est, subject, samples, seed)?;
        let twin = Twin::fit(ModelSource::Pk(m.clone()), spec, Plan::default(), data)?;
        Ok(TdmTwin { twin, pk: m })
    }

    /// The PK model of a twin (`None` when the twin's model is not PK).
    pub fn pk_model_of(twin: &Twin) -> Option<&PkTwinModel> {
        match twin.source() {
            ModelSource::Pk(m) => Some(m),
            _ => None,
        }
    }

    /// This twin's PK model.
    pub fn pk_model(&self) -> &PkTwinModel {
        &self.pk
    }

    /// The generic twin (saved in twin-core's versioned format).
    pub fn twin(&self) -> &Twin {
        &self.twin
    }

    /// The posterior.
    pub fn posterior(&self) -> &Posterior {
        &self.twin.posterior
    }

    /// Individual structural parameters at the MAP, `(name, value)` in the model's default
    /// names (`CL`, `V`, `KA`, …; L/h, L, 1/h).
    pub fn map_parameters(&self) -> Result<Vec<(String, f64)>, TdmError> {
        let p = self.params_at(&self.twin.posterior.map)?;
        Ok(named_values(&self.pk_model().pk, &p))
    }

    /// Structural parameters with the estimated ones at `x` (natural scale, in the posterior's
    /// order).
    fn params_at(&self, x: &[f64]) -> Result<PkParams, TdmError> {
        let v: Vec<(&str, f64)> = self
            .twin
            .posterior
            .ids
            .iter()
            .map(String::as_str)
            .zip(x.iter().copied())
            .collect();
        Ok(self.pk_model().params(&v)?)
    }

    /// Posterior-predictive distribution of a *measured* level at each of `times_h` (sorted,
    /// ≥ 0) under the recorded doses plus the bolus `plan`: the generic forecast (weighted
    /// posterior samples with residual error) and the MAP prediction.
    ///
    /// Errors: [`TdmError::Twin`] from the simulation.
    pub fn predict_levels(
        &self,
        plan: &Plan,
        times_h: &[f64],
    ) -> Result<Vec<LevelPrediction>, TdmError> {
        let f = self.twin.forecast(plan, times_h)?;
        let map = self.twin.simulate_map(plan, times_h)?;
        let b = &f.observables[0].bands;
        Ok(times_h
            .iter()
            .enumerate()
            .map(|(i, &t)| LevelPrediction {
                time_h: t,
                map: map[i][0],
                median: b[i].median,
                pi80: [b[i].lo80, b[i].hi80],
                pi95: [b[i].lo95, b[i].hi95],
            })
            .collect())
    }

    /// Assimilate new levels (concentration at `time_h`, h) under the recorded doses: the
    /// generic [`Twin::update`] (posterior on all levels, warm-started at the previous MAP). On
    /// error the twin is unchanged.
    ///
    /// Errors: [`TdmError::Twin`] (non-finite level, calibration failure).
    pub fn add_levels(&mut self, levels: &[Observation]) -> Result<(), TdmError> {
        let data: Vec<Measurement> = levels
            .iter()
            .map(|o| Measurement {
                observable: OBSERVABLE.into(),
                time: o.time_h,
                value: o.dv,
                sigma: None,
            })
            .collect();
        if let Some(m) = data
            .iter()
            .find(|m| !(m.time.is_finite() && m.time >= 0.0 && m.value.is_finite()))
        {
            return Err(TdmError::Twin(TwinError::Data(format!(
                "level {} at {} h: time must be >= 0 and both finite",
                m.value, m.time
            ))));
        }
        self.twin.update(&data, &Plan::default())?;
        Ok(())
    }

    /// Population prediction (typical values for this patient, no random effects) at `times_h`.
    pub fn population_levels(&self, times_h: &[f64]) -> Result<Vec<f64>, TdmError> {
        let m = self.pk_model();
        let doses = m.doses_with(&Plan::default())?;
        Ok(m.pk.concentrations(&m.params(&[])?, &doses, times_h)?)
    }

    /// Save in twin-core's versioned JSON format (loadable by [`Twin::from_json`] too).
    pub fn to_json(&self) -> Result<String, TdmError> {
        Ok(self.twin.to_json()?)
    }

    /// Load a twin saved by [`TdmTwin::to_json`]; `origin` names the file in errors.
    ///
    /// Errors: [`TdmError::Twin`] (not a twin, another version) and [`TdmError::Invalid`] when
    /// the twin's model is not PK.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, TdmError> {
        let twin = Twin::from_json(text, origin)?;
        let Some(pk) = Self::pk_model_of(&twin).cloned() else {
            return Err(TdmError::Invalid(format!(
                "{origin}: the twin's model is not a PK model"
            )));
        };
        Ok(TdmTwin { twin, pk })
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
/// then each patient's last level is forecast from their earlier levels (a [`TdmTwin`] with
/// `samples` posterior samples from `seed`). Patients with fewer than 2 levels are skipped.
///
/// Errors: the population fit's, a twin's, or [`TdmError::Invalid`] when no patient has two
/// levels.
pub fn backtest(
    ds: &Dataset,
    model: &PopModel,
    opts: &FitOptions,
    samples: usize,
    seed: u64,
) -> Result<(TdmMetrics, Vec<HoldoutForecast>, PopFit), TdmError> {
    let mut train = ds.clone();
    let mut held: Vec<Option<Observation>> = Vec::new();
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
        let twin = TdmTwin::with_samples(&popfit.model, &popfit.estimates, s, samples, seed)?;
        let forecast = twin.predict_levels(&Plan::default(), &[h.time_h])?[0];
        let population = twin.population_levels(&[h.time_h])?[0];
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
    /// Predicted steady-state trough with the MAP parameters.
    pub map_trough: f64,
    /// Peak at steady state (MAP).
    pub map_cmax: f64,
    /// AUC over τ at steady state (MAP).
    pub map_auc: f64,
    /// 80 % interval of the steady-state trough under the posterior (parameters only).
    pub trough_pi80: [f64; 2],
    /// P(C_max,ss > toxic threshold) under the posterior, when a threshold was given.
    pub p_toxic: Option<f64>,
    /// P(trough within ±tolerance of a trough target) under the posterior, for trough targets
    /// (tolerance: the [`Objective::InRange`] one, else [`DEFAULT_TOLERANCE`] = ±20 %).
    pub p_target: Option<f64>,
}

/// Steady-state trough, peak and AUC over τ per unit dose for parameters `p`.
fn ss_profile(pk: &PkModel, p: &PkParams, reg: &Regimen) -> Result<(f64, f64, f64), TdmError> {
    let rate = if reg.infusion_h > 0.0 {
        1.0 / reg.infusion_h
    } else {
        0.0
    };
    let dose = PkDose {
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
    let c = pk.concentrations(p, &[dose], &times)?;
    // Trough: at the end of the interval (the next dose's time), from the SS series.
    let trough = c[n];
    let peak = c.iter().copied().fold(f64::MIN, f64::max);
    // Trapezoid on a 96-point grid (the profile is smooth between doses).
    let auc = (0..n)
        .map(|i| 0.5 * (c[i] + c[i + 1]) * (times[i + 1] - times[i]))
        .sum();
    Ok((trough, peak, auc))
}

/// What a recommended dose is chosen to achieve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Objective {
    /// Meet the target exactly with the MAP parameters (classical MAP Bayesian dosing; linear PK
    /// makes the dose `target / exposure per unit dose`).
    Map,
    /// Maximise the posterior probability that the targeted steady-state exposure lies within
    /// ±`tolerance` (a fraction, e.g. 0.2) of the target: the Bayes decision for a
    /// "within ±x %" success criterion (0–1 utility; e.g. Jelliffe et al. 1998, Clin
    /// Pharmacokinet 34:57 on multiple-model dosing). Read from the twin's weighted posterior
    /// samples, so it needs enough effective samples to be stable.
    InRange {
        /// Half-width of the accepted range as a fraction of the target, in (0, 1).
        tolerance: f64,
    },
}

/// The default tolerance of [`Objective::InRange`] and of [`Recommendation::p_target`]: ±20 %.
pub const DEFAULT_TOLERANCE: f64 = 0.2;

/// The dose maximising `Σ w_s 1[(1 − tol) v ≤ d e_s ≤ (1 + tol) v]` over `d` for per-unit-dose
/// exposures `e_s` with weights `w_s`; returns `(dose, probability)`. Each sample accepts the
/// dose interval `[(1 − tol) v / e_s, (1 + tol) v / e_s]`; a sweep over the sorted interval ends
/// finds the heaviest overlap, and the dose is the geometric middle of that plateau. `None` when
/// no sample has a positive finite exposure.
fn in_range_dose(per_unit: &[(f64, f64)], value: f64, tol: f64) -> Option<(f64, f64)> {
    let total: f64 = per_unit.iter().map(|s| s.1).sum();
    // (position, weight change); at equal positions openings come first (closed intervals).
    let mut events: Vec<(f64, f64)> = Vec::with_capacity(2 * per_unit.len());
    for &(e, w) in per_unit {
        if e.is_finite() && e > 0.0 && w > 0.0 {
            events.push(((1.0 - tol) * value / e, w));
            events.push(((1.0 + tol) * value / e, -w));
        }
    }
    if events.is_empty() || total.is_nan() || total <= 0.0 {
        return None;
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let (mut run, mut best, mut at) = (0.0, f64::NEG_INFINITY, (0.0, 0.0));
    for (i, &(x, dw)) in events.iter().enumerate() {
        run += dw;
        if dw > 0.0 && run > best {
            // The plateau runs from x to the next event's position.
            let next = events.get(i + 1).map_or(x, |e| e.0);
            best = run;
            at = (x, next);
        }
    }
    Some(((at.0 * at.1).sqrt(), best / total))
}

/// Recommend the dose per interval that meets `target` at steady state with the MAP parameters
/// (linear PK: exposure is proportional to dose), and report its risk under the twin's weighted
/// posterior samples. With `toxic`, the dose is refused when P(C_max,ss > toxic) exceeds
/// `max_risk`, naming the probability. `round_to` rounds the dose to a practical increment
/// (0 = no rounding). This is [`recommend_for`] with [`Objective::Map`].
///
/// Errors: [`TdmError::Invalid`] (target ≤ 0, interval ≤ 0, infusion outside [0, τ]),
/// [`TdmError::Refused`] (zero exposure, toxicity constraint), [`TdmError::Model`].
pub fn recommend(
    twin: &TdmTwin,
    target: Target,
    regimen: Regimen,
    toxic: Option<f64>,
    max_risk: f64,
    round_to: f64,
) -> Result<Recommendation, TdmError> {
    recommend_for(
        twin,
        target,
        regimen,
        toxic,
        max_risk,
        round_to,
        Objective::Map,
    )
}

/// [`recommend`] with the dose chosen by `objective`: [`Objective::Map`] meets the target with
/// the MAP parameters; [`Objective::InRange`] maximises P(exposure within ±tolerance of the
/// target) under the posterior samples (then [`Recommendation::p_target`] uses that tolerance).
/// Rounding (`round_to` > 0) and the toxicity check apply to the chosen dose.
///
/// Errors: as [`recommend`], plus [`TdmError::Invalid`] for a tolerance outside (0, 1).
pub fn recommend_for(
    twin: &TdmTwin,
    target: Target,
    regimen: Regimen,
    toxic: Option<f64>,
    max_risk: f64,
    round_to: f64,
    objective: Objective,
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
    if !(regimen.infusion_h >= 0.0 && regimen.infusion_h <= regimen.interval_h) {
        return Err(TdmError::Invalid(
            "infusion duration must be within [0, interval]".into(),
        ));
    }
    let tol = match objective {
        Objective::Map => DEFAULT_TOLERANCE,
        Objective::InRange { tolerance } => {
            if !(tolerance > 0.0 && tolerance < 1.0) {
                return Err(TdmError::Invalid(format!(
                    "tolerance {tolerance} must be within (0, 1) (a fraction of the target)"
                )));
            }
            tolerance
        }
    };
    let pk = twin.pk_model().pk;
    let post = twin.posterior();
    let (t1, c1, a1) = ss_profile(&pk, &twin.params_at(&post.map)?, &regimen)?;
    let pick = |t: f64, c: f64, a: f64| match target {
        Target::Trough(_) => t,
        Target::Auc(_) => a,
        Target::Cmax(_) => c,
    };
    let per_unit = pick(t1, c1, a1);
    if per_unit.is_nan() || per_unit <= 0.0 {
        return Err(TdmError::Refused(
            "the predicted exposure per unit dose is zero".into(),
        ));
    }
    // (trough, peak, auc, weight) per unit dose, per posterior sample.
    let mut unit_samples = Vec::with_capacity(post.samples.len());
    for (x, &w) in post.samples.iter().zip(&post.weights) {
        let (t, c, a) = ss_profile(&pk, &twin.params_at(x)?, &regimen)?;
        unit_samples.push((t, c, a, w));
    }
    let mut dose = match objective {
        Objective::Map => value / per_unit,
        Objective::InRange { .. } => {
            let targeted: Vec<(f64, f64)> = unit_samples
                .iter()
                .map(|s| (pick(s.0, s.1, s.2), s.3))
                .collect();
            in_range_dose(&targeted, value, tol)
                .ok_or_else(|| {
                    TdmError::Refused(
                        "no posterior sample has a positive exposure per unit dose".into(),
                    )
                })?
                .0
        }
    };
    if round_to > 0.0 {
        dose = ((dose / round_to).round() * round_to).max(round_to);
    }
    // (trough, peak, weight) per posterior sample at the chosen dose.
    let per_sample: Vec<(f64, f64, f64)> = unit_samples
        .iter()
        .map(|s| (s.0 * dose, s.1 * dose, s.3))
        .collect();
    let total: f64 = per_sample.iter().map(|s| s.2).sum();
    let prob = |hit: &dyn Fn(f64, f64) -> bool| {
        per_sample
            .iter()
            .filter(|s| hit(s.0, s.1))
            .map(|s| s.2)
            .sum::<f64>()
            / total
    };
    let p_toxic = toxic.map(|thr| prob(&|_, c| c > thr));
    if let (Some(p), Some(thr)) = (p_toxic, toxic) {
        if p > max_risk {
            return Err(TdmError::Refused(format!(
                "the dose meeting the target ({dose:.4} every {} h) gives P(Cmax,ss > {thr}) = {p:.3}, above the allowed {max_risk}",
                regimen.interval_h
            )));
        }
    }
    let p_target = match target {
        Target::Trough(v) => Some(prob(&|t, _| (t / v - 1.0).abs() <= tol)),
        _ => None,
    };
    let mut troughs: Vec<(f64, f64)> = per_sample.iter().map(|s| (s.0, s.2)).collect();
    troughs.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(Recommendation {
        dose,
        interval_h: regimen.interval_h,
        map_trough: t1 * dose,
        map_cmax: c1 * dose,
        map_auc: a1 * dose,
        trough_pi80: [
            weighted_quantile(&troughs, 0.1),
            weighted_quantile(&troughs, 0.9),
        ],
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
/// the outcome at every interval tried (refusal reasons included), in the order given. This is
/// [`recommend_with_interval_for`] with [`Objective::Map`].
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
) -> (Result<Recommendation, TdmError>, Vec<IntervalOutcome>) {
    recommend_with_interval_for(
        twin,
        target,
        intervals_h,
        cmt,
        infusion_h,
        toxic,
        max_risk,
        round_to,
        Objective::Map,
    )
}

/// [`recommend_with_interval`] with the dose at each interval chosen by `objective`
/// ([`recommend_for`]).
#[allow(clippy::too_many_arguments)]
pub fn recommend_with_interval_for(
    twin: &TdmTwin,
    target: Target,
    intervals_h: &[f64],
    cmt: u32,
    infusion_h: f64,
    toxic: Option<f64>,
    max_risk: f64,
    round_to: f64,
    objective: Objective,
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
                recommend_for(twin, target, reg, toxic, max_risk, round_to, objective),
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

/// Inverse of a small positive-definite `k × k` matrix (row-major) by Gauss–Jordan elimination
/// with partial pivoting; `None` when singular.
fn invert_small(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut m = a.to_vec();
    let mut inv: Vec<f64> = (0..k * k)
        .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
        .collect();
    for c in 0..k {
        let piv = (c..k).max_by(|&x, &y| m[x * k + c].abs().total_cmp(&m[y * k + c].abs()))?;
        let p = m[piv * k + c].abs();
        if p.is_nan() || p <= 1e-300 {
            return None;
        }
        for j in 0..k {
            m.swap(c * k + j, piv * k + j);
            inv.swap(c * k + j, piv * k + j);
        }
        let d = m[c * k + c];
        for j in 0..k {
            m[c * k + j] /= d;
            inv[c * k + j] /= d;
        }
        for r in (0..k).filter(|&r| r != c) {
            let f = m[r * k + c];
            for j in 0..k {
                m[r * k + j] -= f * m[c * k + j];
                inv[r * k + j] -= f * inv[c * k + j];
            }
        }
    }
    Some(inv)
}

/// Expected posterior SD of ln(steady-state exposure per unit dose) after measuring levels at
/// `times_h` (h, under the subject's recorded doses), for a patient whose true random effects
/// are `eta` (log scale, one per [`PopModel::iiv`]): the Bayesian Fisher information at the
/// truth (Laplace approximation), `Σ = (Ω⁻¹ + Σ_i [J_i J_iᵀ / R_i + ∇R_i ∇R_iᵀ / (2 R_i²)])⁻¹`
/// with `J_i = ∂C(t_i)/∂η` and `R_i` the residual variance at the true level, and
/// `SD = √(∇gᵀ Σ ∇g)` for `g = ln(exposure per unit dose)` of `target` (trough, AUC over τ or
/// peak at steady state of `regimen`; the target's value is ignored). Derivatives by central
/// differences in η (step 1e-4). Averaged over virtual patients this ranks sampling designs
/// for dosing (Bayesian c-optimal design; Chaloner & Verdinelli 1995, Stat Sci 10:273); with
/// linear PK a dose centred on the target
/// then lands within ±x % with probability `2Φ(ln((1+x)/(1−x)) / (2 SD)) − 1`.
///
/// Errors: [`TdmError::Invalid`] (η of the wrong length, a negative or non-finite time, Ω not
/// positive definite, a non-positive exposure), [`TdmError::Model`] (bad parameters or doses).
pub fn expected_posterior_sd(
    model: &PopModel,
    est: &PopEstimates,
    subject: &Subject,
    eta: &[f64],
    times_h: &[f64],
    target: Target,
    regimen: Regimen,
) -> Result<f64, TdmError> {
    let k = model.n_eta();
    if eta.len() != k || est.omega.len() != k * k {
        return Err(TdmError::Invalid(format!(
            "{} random effects and an Ω of {} entries for a model with {k}",
            eta.len(),
            est.omega.len()
        )));
    }
    if let Some(t) = times_h.iter().find(|t| !(t.is_finite() && **t >= 0.0)) {
        return Err(TdmError::Invalid(format!(
            "level time {t} h must be finite and >= 0"
        )));
    }
    if !(regimen.interval_h.is_finite() && regimen.interval_h > 0.0) {
        return Err(TdmError::Invalid("interval must be > 0 h".into()));
    }
    let eval = |e: &[f64]| -> Result<(Vec<f64>, f64), TdmError> {
        let p = individual_params(model, est, subject, e)?;
        let c = model.pk.concentrations(&p, &subject.doses, times_h)?;
        let (t, c_max, a) = ss_profile(&model.pk, &p, &regimen)?;
        let x = match target {
            Target::Trough(_) => t,
            Target::Auc(_) => a,
            Target::Cmax(_) => c_max,
        };
        if !(x > 0.0 && x.is_finite()) {
            return Err(TdmError::Invalid(format!(
                "steady-state exposure per unit dose is {x}, not > 0"
            )));
        }
        Ok((c, x.ln()))
    };
    let h = 1e-4;
    let (c0, _) = eval(eta)?;
    let n = times_h.len();
    let mut jac = vec![0.0; n * k];
    let mut rjac = vec![0.0; n * k];
    let mut grad = vec![0.0; k];
    for a in 0..k {
        let (mut up, mut dn) = (eta.to_vec(), eta.to_vec());
        up[a] += h;
        dn[a] -= h;
        let (cu, gu) = eval(&up)?;
        let (cd, gd) = eval(&dn)?;
        grad[a] = (gu - gd) / (2.0 * h);
        for i in 0..n {
            jac[i * k + a] = (cu[i] - cd[i]) / (2.0 * h);
            rjac[i * k + a] =
                (residual_variance(est, cu[i]) - residual_variance(est, cd[i])) / (2.0 * h);
        }
    }
    let not_pd = || TdmError::Invalid("Ω (or the information) is not positive definite".into());
    let mut info = invert_small(&est.omega, k).ok_or_else(not_pd)?;
    for i in 0..n {
        let r = residual_variance(est, c0[i]);
        for a in 0..k {
            for b in 0..k {
                info[a * k + b] += jac[i * k + a] * jac[i * k + b] / r
                    + rjac[i * k + a] * rjac[i * k + b] / (2.0 * r * r);
            }
        }
    }
    let cov = invert_small(&info, k).ok_or_else(not_pd)?;
    let var: f64 = (0..k * k).map(|i| grad[i / k] * cov[i] * grad[i % k]).sum();
    Ok(var.max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::{expected_posterior_sd, in_range_dose, Regimen, Target};
    use medtwin_pk::data::Subject;
    use medtwin_pk::model::PkModel;
    use medtwin_pk::pop::{PopEstimates, PopModel};
    use medtwin_pk::Dose;

    /// One-compartment IV bolus, IIV on CL only, additive error, one level at t after a bolus
    /// D: `C = D/V e^(−kt)`, `∂C/∂η = −C k t`; the SS trough per unit dose is
    /// `e^(−kτ) / (V (1 − e^(−kτ)))`, so `∂ ln trough/∂η = −kτ / (1 − e^(−kτ))` and
    /// SD = |∂g/∂η| / √(1/ω² + (C k t)²/σ²). Without levels it is |∂g/∂η| ω.
    #[test]
    fn expected_posterior_sd_matches_the_one_parameter_closed_form() {
        let mut m = PopModel::new(PkModel::parse("1cpt-iv").unwrap());
        m.iiv = vec!["CL".into()];
        let (cl, v, omega2, sigma, d, t, tau) = (0.5f64, 20.0f64, 0.09, 0.4, 100.0, 6.0, 12.0);
        let est = PopEstimates {
            log_theta: vec![cl.ln(), v.ln()],
            beta: vec![],
            omega: vec![omega2],
            sigma_add: sigma,
            sigma_prop: 0.0,
        };
        let s = Subject {
            id: "1".into(),
            doses: vec![Dose::bolus(0.0, d, 1)],
            observations: vec![],
            covariates: Default::default(),
        };
        let reg = Regimen {
            interval_h: tau,
            cmt: 1,
            infusion_h: 0.0,
        };
        let eta: f64 = 0.2;
        let k = cl * eta.exp() / v;
        let c = d / v * (-k * t).exp();
        let dg = k * tau / (1.0 - (-k * tau).exp());
        let want = dg / (1.0 / omega2 + (c * k * t).powi(2) / (sigma * sigma)).sqrt();
        let got =
            expected_posterior_sd(&m, &est, &s, &[eta], &[t], Target::Trough(1.0), reg).unwrap();
        assert!((got / want - 1.0).abs() < 1e-6, "{got} vs {want}");
        let prior =
            expected_posterior_sd(&m, &est, &s, &[eta], &[], Target::Trough(1.0), reg).unwrap();
        assert!((prior / (dg * omega2.sqrt()) - 1.0).abs() < 1e-6, "{prior}");
        // Bad input is an error, not a panic.
        assert!(
            expected_posterior_sd(&m, &est, &s, &[0.0, 0.0], &[t], Target::Trough(1.0), reg)
                .is_err()
        );
        assert!(
            expected_posterior_sd(&m, &est, &s, &[eta], &[f64::NAN], Target::Trough(1.0), reg)
                .is_err()
        );
    }

    /// Samples with per-unit troughs 1, 1.1 and 2 (equal weights), target 1 ± 20 %: the first
    /// two accept doses [0.8, 1.2] and [0.727, 1.091], the third [0.4, 0.6]; the best dose is
    /// the geometric middle of [0.8, 1.091] with probability 2/3.
    #[test]
    fn in_range_dose_finds_the_heaviest_overlap() {
        let (d, p) = in_range_dose(&[(1.0, 1.0), (1.1, 1.0), (2.0, 1.0)], 1.0, 0.2).unwrap();
        assert!((d - (0.8f64 * 1.2 / 1.1).sqrt()).abs() < 1e-12, "{d}");
        assert!((p - 2.0 / 3.0).abs() < 1e-12, "{p}");
        // Weights decide: a heavy third sample wins.
        let (d, p) = in_range_dose(&[(1.0, 1.0), (1.1, 1.0), (2.0, 3.0)], 1.0, 0.2).unwrap();
        assert!((d - (0.4f64 * 0.6).sqrt()).abs() < 1e-12, "{d}");
        assert!((p - 0.6).abs() < 1e-12, "{p}");
        // No positive exposure: no dose.
        assert!(in_range_dose(&[(0.0, 1.0), (f64::NAN, 1.0)], 1.0, 0.2).is_none());
    }
}
