//! The running twin: calibration, then sequential assimilation with a particle filter, and
//! forecasts from the current posterior; saved to / restored from a JSON document.
//!
//! Why a particle filter: the UVA/Padova model is strongly nonlinear (saturating utilisation,
//! gastric emptying, thresholds and positivity clamps) and the unrecorded-meal process is a jump
//! process, so the filtering distribution is skewed and multi-modal (ate / did not eat); an
//! ensemble Kalman filter's Gaussian update would average these modes. The bootstrap filter needs
//! nothing but the plug-and-play operations, so it works unchanged for any future model; at
//! 500 particles and 13 states one update costs a few milliseconds.

use crate::calibrate::{calibrate, Calibration, CalibrationError};
use crate::inputs::InputSchedule;
use crate::model::{NoiseSettings, ParticleSnapshot, Plan, T1dTwinModel, TwinParticle};
use crate::prior::{Prior, N_THETA};
use medtwin_infer::optim::cholesky;
use medtwin_infer::{Bands, Forecast, InferError, ParticleFilter};
use medtwin_t1d::PatientParams;
use serde::{Deserialize, Serialize};

/// Format tag of saved twins.
pub const TWIN_FORMAT: &str = "medtwin-twin/1";
/// Hypoglycaemia threshold of forecast risk, mg/dL.
pub const LOW_MG_DL: f64 = 70.0;
/// Hyperglycaemia threshold of forecast risk, mg/dL.
pub const HIGH_MG_DL: f64 = 250.0;

/// Settings of a twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinSettings {
    /// Number of particles.
    pub n_particles: usize,
    /// Seed of every random stream.
    pub seed: u64,
    /// Start of the calibration window, minutes from the schedule origin.
    #[serde(default)]
    pub calibration_start_min: f64,
    /// Length of the initial calibration window, minutes.
    pub calibration_window_min: f64,
    /// Resample when ESS < this fraction of N.
    pub resample_frac: f64,
    /// Noise model.
    pub noise: NoiseSettings,
    /// Inflation of the Laplace covariance when drawing initial particles.
    pub init_cov_inflation: f64,
    /// Forecasts without a plan use the hybrid model ([`crate::hybrid`]): the twin's paths
    /// re-centred on a glucose-change model learned from the patient's own record. `false`
    /// gives the purely mechanistic forecast. Default `true` (also for twins saved before the
    /// field existed).
    #[serde(default = "default_true")]
    pub hybrid_forecast: bool,
    /// The hybrid forecast blends boosted regression trees into its ridge change model
    /// ([`crate::hybrid::BoostCache`]; refitted once a day, tens of milliseconds per fitted
    /// horizon). Default `true` (also for twins saved before the field existed).
    #[serde(default = "default_true")]
    pub hybrid_boosting: bool,
    /// Plans' meals and boluses take the patient's learnt response
    /// ([`crate::hybrid::PlanResponses`]: the change model refitted with planned-input
    /// features, sign-constrained ridge and monotone boosted trees) instead of the mechanistic
    /// twin's effect, when the record holds enough meal boluses. Default `false`: on the
    /// T1D-UOM records its replay gain is ≤ 1.3 % (README, "Replay validation") and insulin
    /// alone is weakly identified (meal-time dosing), so bolus advice would grow unsafe.
    #[serde(default)]
    pub learnt_plan_response: bool,
}

fn default_true() -> bool {
    true
}

impl Default for TwinSettings {
    fn default() -> Self {
        TwinSettings {
            n_particles: 500,
            seed: 1,
            calibration_start_min: 0.0,
            calibration_window_min: 1440.0,
            resample_frac: 0.5,
            noise: NoiseSettings::default(),
            init_cov_inflation: 2.0,
            hybrid_forecast: true,
            hybrid_boosting: true,
            learnt_plan_response: false,
        }
    }
}

/// Errors of the twin.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TwinError {
    /// The record has no CGM or nothing in the requested span.
    #[error("record: {0}")]
    Record(String),
    /// Calibration failed.
    #[error("calibration failed: {0}")]
    Calibration(#[from] CalibrationError),
    /// Assimilation or forecast failed.
    #[error("inference failed: {0}")]
    Infer(#[from] InferError),
    /// Bundled parameters broken.
    #[error("{0}")]
    Params(String),
    /// A saved twin is invalid.
    #[error("twin document: {0}")]
    Document(String),
    /// A bad argument of the lifecycle API ([`crate::lifecycle`]): e.g. a record from another
    /// origin than the twin's, an end before the twin's time.
    #[error("{0}")]
    Argument(String),
}

/// A saved twin (JSON): everything needed to continue assimilating or to forecast.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Twin {
    /// [`TWIN_FORMAT`].
    pub format: String,
    /// Model identifier.
    pub model: String,
    /// Patient identifier, if known.
    pub patient_id: Option<String>,
    /// Population prior.
    pub prior: Prior,
    /// Initial-window calibration.
    pub calibration: Calibration,
    /// Settings.
    pub settings: TwinSettings,
    /// Data the twin has seen (up to `t_min`).
    pub schedule: InputSchedule,
    /// Filter time, minutes from the schedule origin.
    pub t_min: f64,
    /// Particles.
    pub particles: Vec<ParticleSnapshot>,
    /// Particle weights.
    pub weights: Vec<f64>,
    /// Log-likelihood of the assimilated observations.
    pub log_lik: f64,
    /// Filter random-stream counter.
    pub filter_step: u64,
    /// Observations skipped because the filter degenerated on them.
    pub skipped_observations: usize,
}

impl Twin {
    /// θ of every particle (log scale, [`crate::prior::THETA_NAMES`] order; weigh them by
    /// [`Twin::weights`], uniform right after resampling).
    pub fn theta_samples(&self) -> Vec<[f64; N_THETA]> {
        self.particles.iter().map(|p| p.theta).collect()
    }
}

/// A twin in memory.
pub struct TwinEngine {
    /// Population prior.
    pub prior: Prior,
    /// Base patient parameters.
    pub base: PatientParams,
    /// Calibration result.
    pub calibration: Calibration,
    /// Settings.
    pub settings: TwinSettings,
    /// Particle filter.
    pub filter: ParticleFilter<TwinParticle>,
    /// Observations skipped (degenerate updates).
    pub skipped_observations: usize,
    /// Boosted change models of the hybrid forecast, reused for a day.
    pub boost: crate::hybrid::BoostCache,
    /// Boosted trees of the learnt response to planned inputs ([`crate::hybrid::PlanResponses`]),
    /// cached like [`TwinEngine::boost`]; not saved.
    pub plan_boost: crate::hybrid::BoostCache,
}

impl TwinEngine {
    /// Calibrate on the first `settings.calibration_window_min` of `schedule` and start the
    /// filter at the end of that window.
    pub fn start(
        schedule: &InputSchedule,
        settings: TwinSettings,
    ) -> Result<TwinEngine, TwinError> {
        let prior = Prior::population().map_err(|e| TwinError::Params(e.to_string()))?;
        Self::start_with_prior(schedule, settings, prior)
    }

    /// As [`TwinEngine::start`] with an explicit prior.
    pub fn start_with_prior(
        schedule: &InputSchedule,
        settings: TwinSettings,
        prior: Prior,
    ) -> Result<TwinEngine, TwinError> {
        if schedule.cgm.is_empty() {
            return Err(TwinError::Record("no CGM readings".into()));
        }
        let base = prior.base().map_err(|e| TwinError::Params(e.to_string()))?;
        let window = settings.calibration_start_min + settings.calibration_window_min;
        let calibration = calibrate(
            &base,
            &prior,
            schedule,
            (settings.calibration_start_min, window),
        )?;
        let cov: Vec<f64> = calibration
            .cov
            .iter()
            .map(|v| v * settings.init_cov_inflation)
            .collect();
        let chol = cholesky(&cov, N_THETA).unwrap_or_else(|| {
            let mut c = vec![0.0; N_THETA * N_THETA];
            for i in 0..N_THETA {
                c[i * N_THETA + i] = prior.sd[i];
            }
            c
        });
        let model = T1dTwinModel {
            base: &base,
            schedule,
            known_until: f64::INFINITY,
            plan: None,
            noise: settings.noise,
            insulin_scale: calibration.insulin_scale,
            theta_bounds: prior.bounds(),
            init_theta_mean: calibration.theta_map,
            init_theta_chol: chol,
            init_state: Some(calibration.end_state.clone()),
            init_glucose_rel_sd: 0.05,
        };
        let filter = ParticleFilter::new(&model, settings.n_particles, window, settings.seed);
        Ok(TwinEngine {
            prior,
            base,
            calibration,
            settings,
            filter,
            skipped_observations: 0,
            boost: Default::default(),
            plan_boost: Default::default(),
        })
    }

    fn model<'a>(
        &'a self,
        schedule: &'a InputSchedule,
        known_until: f64,
        plan: Option<&'a Plan>,
    ) -> T1dTwinModel<'a> {
        make_model(
            &self.base,
            self.prior.bounds(),
            self.settings.noise,
            self.calibration.insulin_scale,
            schedule,
            known_until,
            plan,
        )
    }

    /// Assimilate every CGM reading with filter time < t ≤ `until_min`, then advance to
    /// `until_min`. A reading on which every particle fails is skipped and counted.
    pub fn assimilate_until(
        &mut self,
        schedule: &InputSchedule,
        until_min: f64,
    ) -> Result<(), TwinError> {
        let start = schedule.cgm.partition_point(|c| c.0 <= self.filter.t_min);
        let end = schedule.cgm.partition_point(|c| c.0 <= until_min);
        let frac = self.settings.resample_frac;
        let model = make_model(
            &self.base,
            self.prior.bounds(),
            self.settings.noise,
            self.calibration.insulin_scale,
            schedule,
            f64::INFINITY,
            None,
        );
        for &(t, y) in &schedule.cgm[start..end] {
            match self.filter.assimilate(&model, t, y, frac) {
                Ok(()) => {}
                // Zero likelihood under every particle (after propagation succeeded): the
                // reading is skipped and counted; the filter keeps the propagated particles.
                Err(InferError::Degenerate { .. }) if self.filter.t_min == t => {
                    self.skipped_observations += 1
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.filter
            .advance(&model, until_min.max(self.filter.t_min))?;
        Ok(())
    }

    /// Forecast from the filter time: per-minute predictive bands for `horizon_min` minutes,
    /// knowing only inputs up to now (plus `plan`, if any). `seed` gives common random numbers
    /// across plans.
    pub fn forecast(
        &self,
        schedule: &InputSchedule,
        horizon_min: u32,
        plan: Option<&Plan>,
        seed: u64,
    ) -> Result<Forecast, TwinError> {
        let t0 = self.filter.t_min;
        let times: Vec<f64> = (1..=horizon_min).map(|k| t0 + k as f64).collect();
        self.forecast_at(schedule, &times, plan, seed)
    }

    /// Forecast at the given absolute times (increasing, after the filter time): the bands and
    /// risks of [`TwinEngine::paths`]. Without a plan (or with an empty one) and with
    /// [`TwinSettings::hybrid_forecast`], the bands are the hybrid forecast's conformal bands
    /// ([`crate::hybrid`]) once the record holds enough history.
    pub fn forecast_at(
        &self,
        schedule: &InputSchedule,
        times: &[f64],
        plan: Option<&Plan>,
        seed: u64,
    ) -> Result<Forecast, TwinError> {
        let plan = plan.filter(|p| !p.is_empty());
        let (mut paths, hybrid_bands) = self.plan_paths(schedule, times, &[plan], seed)?;
        let paths = paths.swap_remove(0);
        let bands = match (plan, hybrid_bands) {
            (None, Some(b)) => b,
            _ => paths.bands()?,
        };
        Ok(paths.forecast_with_bands(bands, LOW_MG_DL, HIGH_MG_DL))
    }

    /// Forecast at the given absolute times (increasing, after the filter time) for a plan
    /// taken as the **complete** list of meals and boluses within the horizon: replay of the
    /// recorded inputs (`twin backtest --future-inputs recorded`), or "what if exactly this
    /// happens and nothing else" (an empty complete plan means no meal and no bolus, unlike no
    /// plan, which expects the patient's usual day). Once the record holds enough history the
    /// median and bands are the hybrid's complete-plan model ([`crate::hybrid`], "Complete
    /// plans": the change model refitted with the features of the inputs recorded within each
    /// training row's own horizon, evaluated at the plan's); the plan's basal overrides add
    /// the mechanistic twin's effect path by path. Before that (or without
    /// [`TwinSettings::hybrid_forecast`]) it is the mechanistic twin's forecast with the plan.
    /// Errors: as [`TwinEngine::forecast_at`].
    pub fn forecast_complete_at(
        &self,
        schedule: &InputSchedule,
        times: &[f64],
        plan: &Plan,
        seed: u64,
    ) -> Result<Forecast, TwinError> {
        let t0 = self.filter.t_min;
        let raw = medtwin_infer::simulate_paths(
            &self.model(schedule, t0, None),
            &self.filter,
            times,
            seed,
        )?;
        let mut paths = raw.clone();
        let meals = crate::hybrid::sorted_by_time(&plan.meals);
        let boluses = crate::hybrid::sorted_by_time(&plan.boluses);
        let complete = crate::hybrid::CompletePlan {
            meals: &meals,
            boluses: &boluses,
        };
        let hybrid = if self.settings.hybrid_forecast {
            crate::hybrid::hybrid_forecast(
                &schedule.truncated(t0),
                t0,
                &mut paths,
                &raw.bands()?,
                (LOW_MG_DL, HIGH_MG_DL),
                self.settings.hybrid_boosting.then_some(&self.plan_boost),
                Some(&complete),
            )
        } else {
            None
        };
        let out = match hybrid {
            None => medtwin_infer::simulate_paths(
                &self.model(schedule, t0, Some(plan)),
                &self.filter,
                times,
                seed,
            )?,
            Some(f) if plan.basal_rates.is_empty() => return Ok(f),
            Some(_) => {
                let basal = Plan {
                    basal_rates: plan.basal_rates.clone(),
                    ..Plan::default()
                };
                self.with_mechanistic_effect(schedule, times, &basal, seed, &paths, &raw)?
            }
        };
        Ok(out.forecast_with_bands(out.bands()?, LOW_MG_DL, HIGH_MG_DL))
    }

    /// Predictive paths at the given absolute times (common random numbers for a fixed
    /// `seed`): **one predictive distribution for every question**. The baseline is the plain
    /// forecast (the hybrid forecast's re-centred paths once the record holds enough history,
    /// else the mechanistic paths); a plan adds, path by path, the mechanistic twin's effect of
    /// the plan: the difference between the particle's path with and without the plan under
    /// the same random numbers. No plan and an empty plan are the same question (identical
    /// paths); the plan's effect comes from the twin's physiology, so more insulin never
    /// raises and more carbohydrate never lowers a path beyond the model's own response.
    pub fn paths(
        &self,
        schedule: &InputSchedule,
        times: &[f64],
        plan: Option<&Plan>,
        seed: u64,
    ) -> Result<medtwin_infer::EnsemblePaths, TwinError> {
        Ok(self
            .paths_for_plans(schedule, times, &[plan], seed)?
            .swap_remove(0))
    }

    /// [`TwinEngine::paths`] for several plans on one baseline (computed once): what-if
    /// comparisons and the advisor's candidate boluses.
    pub fn paths_for_plans(
        &self,
        schedule: &InputSchedule,
        times: &[f64],
        plans: &[Option<&Plan>],
        seed: u64,
    ) -> Result<Vec<medtwin_infer::EnsemblePaths>, TwinError> {
        Ok(self.plan_paths(schedule, times, plans, seed)?.0)
    }

    /// [`TwinEngine::paths_for_plans`], and the hybrid forecast's bands when it applies (the
    /// bands of the no-plan answer).
    #[allow(clippy::type_complexity)]
    fn plan_paths(
        &self,
        schedule: &InputSchedule,
        times: &[f64],
        plans: &[Option<&Plan>],
        seed: u64,
    ) -> Result<(Vec<medtwin_infer::EnsemblePaths>, Option<Vec<Bands>>), TwinError> {
        let (base, raw, hybrid_bands) = self.baseline_paths(schedule, times, seed)?;
        let learnt = self.plan_responses(schedule, times, plans, hybrid_bands.is_some());
        let paths = plans
            .iter()
            .map(|p| match p.filter(|p| !p.is_empty()) {
                None => Ok(base.clone()),
                Some(p) => {
                    self.with_plan_effect(schedule, times, p, seed, &base, &raw, learnt.as_ref())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((paths, hybrid_bands))
    }

    /// The plain forecast's paths (hybrid re-centred when available), the mechanistic paths
    /// they came from, and, when the hybrid applies, its bands.
    #[allow(clippy::type_complexity)]
    fn baseline_paths(
        &self,
        schedule: &InputSchedule,
        times: &[f64],
        seed: u64,
    ) -> Result<
        (
            medtwin_infer::EnsemblePaths,
            medtwin_infer::EnsemblePaths,
            Option<Vec<Bands>>,
        ),
        TwinError,
    > {
        let model = self.model(schedule, self.filter.t_min, None);
        let mut paths = medtwin_infer::simulate_paths(&model, &self.filter, times, seed)?;
        let raw = paths.clone();
        if !self.settings.hybrid_forecast {
            return Ok((paths, raw, None));
        }
        let t0 = self.filter.t_min;
        let seen = schedule.truncated(t0);
        let twin_bands = paths.bands()?;
        let hybrid = crate::hybrid::hybrid_forecast(
            &seen,
            t0,
            &mut paths,
            &twin_bands,
            (LOW_MG_DL, HIGH_MG_DL),
            self.settings.hybrid_boosting.then_some(&self.boost),
            None,
        );
        Ok((paths, raw, hybrid.map(|f| f.bands)))
    }

    /// The learnt responses to planned inputs ([`crate::hybrid::PlanResponses`]) when
    /// [`TwinSettings::learnt_plan_response`] is set, the hybrid forecast applies (`hybrid`) and
    /// some plan has a meal or bolus.
    fn plan_responses(
        &self,
        schedule: &InputSchedule,
        times: &[f64],
        plans: &[Option<&Plan>],
        hybrid: bool,
    ) -> Option<crate::hybrid::PlanResponses> {
        let needed = plans
            .iter()
            .flatten()
            .any(|p| !p.meals.is_empty() || !p.boluses.is_empty());
        let t0 = self.filter.t_min;
        (self.settings.learnt_plan_response && hybrid && needed)
            .then(|| {
                crate::hybrid::PlanResponses::fit(
                    &schedule.truncated(t0),
                    t0,
                    times,
                    self.settings.hybrid_boosting.then_some(&self.plan_boost),
                )
            })
            .flatten()
    }

    /// `base` plus the effect of `plan`. With `learnt` responses, planned
    /// meals and boluses take the patient's learnt response ([`crate::hybrid::learnt_plan_effect`],
    /// the same shift on every path); what was not learnt (and every basal override) takes the
    /// mechanistic twin's effect, path by path: the particle's path with minus without the plan
    /// under the same random numbers.
    #[allow(clippy::too_many_arguments)]
    fn with_plan_effect(
        &self,
        schedule: &InputSchedule,
        times: &[f64],
        plan: &Plan,
        seed: u64,
        base: &medtwin_infer::EnsemblePaths,
        none: &medtwin_infer::EnsemblePaths,
        learnt: Option<&crate::hybrid::PlanResponses>,
    ) -> Result<medtwin_infer::EnsemblePaths, TwinError> {
        let mut mechanistic = plan.clone();
        let mut shift = vec![0.0; times.len()];
        if let Some(r) = learnt {
            shift = r.effect(times, &plan.meals, &plan.boluses);
            mechanistic.meals.clear();
            mechanistic.boluses.clear();
        }
        let mut out = if mechanistic.is_empty() {
            base.clone()
        } else {
            self.with_mechanistic_effect(schedule, times, &mechanistic, seed, base, none)?
        };
        if shift.iter().any(|&v| v != 0.0) {
            for p in out.paths.iter_mut() {
                for (v, s) in p.iter_mut().zip(&shift) {
                    *v = (*v + s).clamp(40.0, 400.0);
                }
            }
        }
        Ok(out)
    }

    /// `base` plus the mechanistic effect of `plan`, path by path (paired by particle).
    fn with_mechanistic_effect(
        &self,
        schedule: &InputSchedule,
        times: &[f64],
        plan: &Plan,
        seed: u64,
        base: &medtwin_infer::EnsemblePaths,
        none: &medtwin_infer::EnsemblePaths,
    ) -> Result<medtwin_infer::EnsemblePaths, TwinError> {
        let t0 = self.filter.t_min;
        let mut out = base.clone();
        let with = medtwin_infer::simulate_paths(
            &self.model(schedule, t0, Some(plan)),
            &self.filter,
            times,
            seed,
        )?;
        let index = |e: &medtwin_infer::EnsemblePaths, i: usize| e.particle.binary_search(&i).ok();
        let mut keep = Vec::with_capacity(base.paths.len());
        for (k, &i) in base.particle.iter().enumerate() {
            let (Some(a), Some(b)) = (index(none, i), index(&with, i)) else {
                continue;
            };
            let path: Vec<f64> = base.paths[k]
                .iter()
                .zip(none.paths[a].iter().zip(&with.paths[b]))
                .map(|(v, (n, w))| v + (w - n))
                .collect();
            keep.push((path, base.weights[k], i));
        }
        if keep.is_empty() {
            return Err(TwinError::Infer(InferError::Degenerate {
                t_min: t0,
                why: "every forecast path failed under the plan".into(),
            }));
        }
        let total: f64 = keep.iter().map(|k| k.1).sum();
        out.paths = keep.iter().map(|k| k.0.clone()).collect();
        out.weights = keep.iter().map(|k| k.1 / total).collect();
        out.particle = keep.iter().map(|k| k.2).collect();
        Ok(out)
    }

    /// Save as a [`Twin`] document with the data seen so far.
    pub fn to_twin(&self, schedule: &InputSchedule, patient_id: Option<String>) -> Twin {
        Twin {
            format: TWIN_FORMAT.into(),
            model: "uva-padova-s2008".into(),
            patient_id,
            prior: self.prior.clone(),
            calibration: self.calibration.clone(),
            settings: self.settings.clone(),
            schedule: schedule.truncated(self.filter.t_min),
            t_min: self.filter.t_min,
            particles: self.filter.particles.iter().map(|p| p.snapshot()).collect(),
            weights: self.filter.weights.clone(),
            log_lik: self.filter.log_lik,
            filter_step: self.filter.step,
            skipped_observations: self.skipped_observations,
        }
    }

    /// Restore from a [`Twin`] document. Errors: wrong format, inconsistent sizes.
    pub fn from_twin(t: &Twin) -> Result<TwinEngine, TwinError> {
        if t.format != TWIN_FORMAT {
            return Err(TwinError::Document(format!(
                "format '{}' is not {TWIN_FORMAT}",
                t.format
            )));
        }
        if t.particles.is_empty() || t.particles.len() != t.weights.len() {
            return Err(TwinError::Document(format!(
                "{} particles but {} weights",
                t.particles.len(),
                t.weights.len()
            )));
        }
        if t.weights.iter().any(|w| !w.is_finite() || *w < 0.0)
            || t.weights.iter().sum::<f64>() <= 0.0
        {
            return Err(TwinError::Document(
                "weights must be finite, non-negative and not all zero".into(),
            ));
        }
        let base = t
            .prior
            .base()
            .map_err(|e| TwinError::Document(e.to_string()))?;
        let particles: Vec<TwinParticle> = t
            .particles
            .iter()
            .map(|s| {
                let mut p = TwinParticle::new(&base, s.theta, Some(&s.patient));
                p.disturbance = s.disturbance;
                p.sensor_bias = s.sensor_bias;
                p
            })
            .collect();
        let mut filter = ParticleFilter::from_particles(particles, t.t_min, t.settings.seed);
        let s: f64 = t.weights.iter().sum();
        filter.weights = t.weights.iter().map(|w| w / s).collect();
        filter.log_lik = t.log_lik;
        filter.step = t.filter_step;
        Ok(TwinEngine {
            prior: t.prior.clone(),
            base,
            calibration: t.calibration.clone(),
            settings: t.settings.clone(),
            filter,
            skipped_observations: t.skipped_observations,
            boost: Default::default(),
            plan_boost: Default::default(),
        })
    }
}

/// The twin's model for assimilation (`known_until = ∞`) or forecasting.
fn make_model<'a>(
    base: &'a PatientParams,
    theta_bounds: [(f64, f64); N_THETA],
    noise: NoiseSettings,
    insulin_scale: f64,
    schedule: &'a InputSchedule,
    known_until: f64,
    plan: Option<&'a Plan>,
) -> T1dTwinModel<'a> {
    T1dTwinModel {
        base,
        schedule,
        known_until,
        plan,
        noise,
        theta_bounds,
        insulin_scale,
        init_theta_mean: [0.0; N_THETA],
        init_theta_chol: vec![0.0; N_THETA * N_THETA],
        init_state: None,
        init_glucose_rel_sd: 0.0,
    }
}
