//! The twin lifecycle: `fit` a model to one patient's measurements, `update` with new data,
//! `forecast` under a plan (no plan and an empty plan are the same question), compare plans by
//! `whatif` on common random numbers, `backtest` by rolling origins, and save/load in a
//! versioned JSON format.

use crate::data::Measurement;
use crate::fit::{posterior, ParameterSummary, Posterior};
use crate::model::{Plan, SbmlTwinModel, TwinModel};
use crate::spec::CalibrationSpec;
use crate::TwinError;
use medtwin_infer::{bands, stream_rng, Bands};
use rand::Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Name of the saved-twin format (the `format` field of the JSON).
pub const FORMAT: &str = "medtwin-twin-core";
/// Version of the saved-twin format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Predictive bands of one observable over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservablePrediction {
    /// Observable id.
    pub observable: String,
    /// Bands per forecast time: predictive (posterior parameter uncertainty and measurement
    /// noise).
    pub bands: Vec<Bands>,
}

/// A forecast: bands of every observable at the requested times, and the probability of each
/// outcome class (when the spec defines outcomes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Forecast times (model time unit, from the model's start).
    pub times: Vec<f64>,
    /// One entry per observable of the spec.
    pub observables: Vec<ObservablePrediction>,
    /// (class, probability) in the order of [`crate::spec::Outcomes::classes`]; empty without
    /// outcomes.
    pub outcome_probabilities: Vec<(String, f64)>,
    /// Posterior samples whose simulation failed (dropped; their weight renormalised away).
    pub failed_samples: usize,
}

impl Prediction {
    /// Probability of outcome `class` (0 when unknown).
    pub fn probability(&self, class: &str) -> f64 {
        self.outcome_probabilities
            .iter()
            .find(|(c, _)| c == class)
            .map_or(0.0, |(_, p)| *p)
    }

    /// Bands of observable `id`.
    pub fn of(&self, id: &str) -> Option<&ObservablePrediction> {
        self.observables.iter().find(|o| o.observable == id)
    }
}

/// How the model of a saved twin is stored (the model travels with the twin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelSource {
    /// An SBML document and its time unit.
    Sbml {
        /// The SBML text.
        text: String,
        /// Time unit of the model.
        time_unit: String,
    },
    /// A closed-form linear PK model with the patient's dose records and nominal parameters
    /// ([`crate::pk::PkTwinModel`], hours).
    Pk(crate::pk::PkTwinModel),
}

/// A calibrated twin of one patient: the model, its calibration spec, the patient's dosing
/// history and measurements, and the posterior.
pub struct Twin {
    model: Box<dyn TwinModel>,
    source: ModelSource,
    /// Calibration spec.
    pub spec: CalibrationSpec,
    /// Doses the patient has had (part of every simulation).
    pub history: Plan,
    /// Every measurement assimilated so far.
    pub data: Vec<Measurement>,
    /// Posterior given `data`.
    pub posterior: Posterior,
}

#[derive(Serialize, Deserialize)]
struct TwinFile {
    format: String,
    version: u32,
    model: ModelSource,
    spec: CalibrationSpec,
    history: Plan,
    data: Vec<Measurement>,
    posterior: Posterior,
}

fn model_of(source: &ModelSource) -> Result<Box<dyn TwinModel>, TwinError> {
    match source {
        ModelSource::Sbml { text, time_unit } => {
            Ok(Box::new(SbmlTwinModel::from_sbml(text, time_unit)?))
        }
        ModelSource::Pk(m) => {
            m.check()?;
            Ok(Box::new(m.clone()))
        }
    }
}

impl Twin {
    /// Calibrate an SBML model (see [`SbmlTwinModel::from_sbml`]) to `data`.
    pub fn fit_sbml(
        sbml: &str,
        time_unit: &str,
        spec: CalibrationSpec,
        history: Plan,
        data: Vec<Measurement>,
    ) -> Result<Twin, TwinError> {
        let source = ModelSource::Sbml {
            text: sbml.to_string(),
            time_unit: time_unit.to_string(),
        };
        Twin::fit(source, spec, history, data)
    }

    /// Calibrate the model of `source` to `data` under the dosing `history`.
    ///
    /// Errors: [`TwinError::Spec`] (ids the model lacks, bad priors), [`TwinError::Data`],
    /// [`TwinError::Fit`], [`TwinError::Model`].
    pub fn fit(
        source: ModelSource,
        spec: CalibrationSpec,
        history: Plan,
        data: Vec<Measurement>,
    ) -> Result<Twin, TwinError> {
        let model = model_of(&source)?;
        spec.validate(model.as_ref())?;
        let posterior = posterior(model.as_ref(), &spec, &history, &data, None)?;
        Ok(Twin {
            model,
            source,
            spec,
            history,
            data,
            posterior,
        })
    }

    /// Assimilate new measurements and doses: the posterior is recomputed on all data,
    /// warm-started at the previous MAP. On error the twin is unchanged.
    pub fn update(&mut self, new_data: &[Measurement], new_doses: &Plan) -> Result<(), TwinError> {
        let mut data = self.data.clone();
        data.extend_from_slice(new_data);
        let history = self.history.merged(new_doses);
        let start = self.posterior.map_scaled(&self.spec);
        let post = posterior(
            self.model.as_ref(),
            &self.spec,
            &history,
            &data,
            Some(&start),
        )?;
        self.data = data;
        self.history = history;
        self.posterior = post;
        Ok(())
    }

    /// The twin's model.
    pub fn model(&self) -> &dyn TwinModel {
        self.model.as_ref()
    }

    /// How the twin's model is stored (what [`Twin::to_json`] saves).
    pub fn source(&self) -> &ModelSource {
        &self.source
    }

    /// Model values at the MAP: the spec's fixed values then the MAP of each estimated
    /// parameter (natural scale), `(id, value)`.
    pub fn map_values(&self) -> Vec<(String, f64)> {
        let mut v = self.spec.fixed.clone();
        v.extend(
            self.posterior
                .ids
                .iter()
                .cloned()
                .zip(self.posterior.map.iter().copied()),
        );
        v
    }

    /// The spec's observables simulated with the MAP values ([`Twin::map_values`]) at `times`
    /// (sorted, ≥ 0) under the history plus `plan`, `[time][observable]` (no measurement
    /// noise).
    ///
    /// Errors: [`TwinError::Model`] from the simulation.
    pub fn simulate_map(&self, plan: &Plan, times: &[f64]) -> Result<Vec<Vec<f64>>, TwinError> {
        let values = self.map_values();
        let v: Vec<(&str, f64)> = values.iter().map(|(id, x)| (id.as_str(), *x)).collect();
        let obs: Vec<String> = self.spec.observables.iter().map(|o| o.id.clone()).collect();
        self.model
            .simulate(&v, &self.history.merged(plan), times, &obs)
    }

    /// Parameter summaries of the posterior.
    pub fn summary(&self) -> Vec<ParameterSummary> {
        self.posterior.summary(&self.spec)
    }

    /// Time of the last measurement (0 without data).
    pub fn last_time(&self) -> f64 {
        self.data.iter().map(|m| m.time).fold(0.0, f64::max)
    }

    /// The forecast times of `medtwin twin forecast --until UNTIL [--step STEP]`: from the last
    /// measurement ([`Twin::last_time`]) every `step` (default: a twentieth of the span) up to
    /// and including `until`, the last time clipped to `until` (model time unit).
    ///
    /// Errors: [`TwinError::Data`] when `until` is not after the last measurement, or `step`
    /// is not > 0 or gives more than 100000 times.
    pub fn forecast_times(&self, until: f64, step: Option<f64>) -> Result<Vec<f64>, TwinError> {
        let start = self.last_time();
        if until.is_nan() || until <= start {
            return Err(TwinError::Data(format!(
                "until {until} must be after the last measurement at {start}"
            )));
        }
        let step = step.unwrap_or((until - start) / 20.0);
        if step.is_nan() || step <= 0.0 || (until - start) / step > 100_000.0 {
            return Err(TwinError::Data(format!(
                "step {step} must be > 0 and give at most 100000 times"
            )));
        }
        let n = ((until - start) / step).ceil() as usize;
        Ok((1..=n)
            .map(|k| (start + k as f64 * step).min(until))
            .collect())
    }

    /// [`Twin::update`] with those of `measurements` not assimilated yet (an identical
    /// observable, time and value already in [`Twin::data`] is not counted twice), as
    /// `medtwin twin update` does; returns how many were new. On error the twin is unchanged.
    pub fn assimilate(
        &mut self,
        measurements: Vec<Measurement>,
        doses: &Plan,
    ) -> Result<usize, TwinError> {
        let new: Vec<Measurement> = measurements
            .into_iter()
            .filter(|m| !self.data.contains(m))
            .collect();
        self.update(&new, doses)?;
        Ok(new.len())
    }

    /// Forecast the spec's observables at `times` under the history plus `plan`. Every
    /// question (no plan, an empty plan, any plan) uses the same posterior samples and the
    /// same noise draws (common random numbers), so plans differ only by what they change.
    pub fn forecast(&self, plan: &Plan, times: &[f64]) -> Result<Prediction, TwinError> {
        let full = self.history.merged(plan);
        let observables: Vec<String> = self.spec.observables.iter().map(|o| o.id.clone()).collect();
        let outcome_ids = self
            .spec
            .outcomes
            .as_ref()
            .map(|o| o.observables())
            .unwrap_or_default();
        let mut sim_ids = observables.clone();
        for id in &outcome_ids {
            if !sim_ids.contains(id) {
                sim_ids.push(id.clone());
            }
        }
        let mut sim_times: Vec<f64> = times.to_vec();
        if let Some(o) = &self.spec.outcomes {
            sim_times.push(o.at_time);
        }
        let mut order: Vec<usize> = (0..sim_times.len()).collect();
        order.sort_by(|&a, &b| sim_times[a].total_cmp(&sim_times[b]));
        let sorted: Vec<f64> = order.iter().map(|&i| sim_times[i]).collect();
        let post = &self.posterior;
        let runs: Vec<Result<Vec<Vec<f64>>, TwinError>> = post
            .samples
            .par_iter()
            .map(|s| {
                let mut values: Vec<(&str, f64)> = self
                    .spec
                    .fixed
                    .iter()
                    .map(|(id, v)| (id.as_str(), *v))
                    .collect();
                values.extend(post.ids.iter().map(String::as_str).zip(s.iter().copied()));
                let sim = self.model.simulate(&values, &full, &sorted, &sim_ids)?;
                // Back to the caller's order of times.
                let mut back = vec![Vec::new(); sim.len()];
                for (k, &i) in order.iter().enumerate() {
                    back[i] = sim[k].clone();
                }
                Ok(back)
            })
            .collect();
        let kept: Vec<(usize, &Vec<Vec<f64>>)> = runs
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.as_ref().ok().map(|r| (k, r)))
            .collect();
        if kept.is_empty() {
            let first = runs.into_iter().find_map(Result::err);
            return Err(first.unwrap_or_else(|| {
                TwinError::Model("the posterior has no samples to simulate".into())
            }));
        }
        let w: Vec<f64> = kept.iter().map(|(k, _)| post.weights[*k]).collect();
        let obs_pred = self.observable_bands(&observables, times.len(), &kept, &w)?;
        let outcome_probabilities = match &self.spec.outcomes {
            None => Vec::new(),
            Some(o) => {
                let total: f64 = w.iter().sum();
                let at = times.len();
                o.classes()
                    .into_iter()
                    .map(|c| {
                        let p: f64 = kept
                            .iter()
                            .zip(&w)
                            .filter(|((_, r), _)| {
                                let row = &r[at];
                                o.classify(&|id| {
                                    sim_ids
                                        .iter()
                                        .position(|s| s == id)
                                        .map_or(f64::NAN, |j| row[j])
                                }) == c
                            })
                            .map(|(_, wi)| wi)
                            .sum();
                        (c, p / total)
                    })
                    .collect()
            }
        };
        Ok(Prediction {
            times: times.to_vec(),
            observables: obs_pred,
            outcome_probabilities,
            failed_samples: runs.len() - kept.len(),
        })
    }

    /// Predictive bands: one measurement draw per sample per time (the draw's random number
    /// depends only on the seed, the sample and the time index: common random numbers).
    fn observable_bands(
        &self,
        observables: &[String],
        n_times: usize,
        kept: &[(usize, &Vec<Vec<f64>>)],
        w: &[f64],
    ) -> Result<Vec<ObservablePrediction>, TwinError> {
        observables
            .iter()
            .enumerate()
            .map(|(j, id)| {
                let noise = self.spec.observables[j].noise;
                let bands = (0..n_times)
                    .map(|t| {
                        let v: Vec<f64> = kept
                            .iter()
                            .map(|(k, r)| {
                                let mut rng = stream_rng(
                                    self.spec.seed ^ 0x5EED_F0CA,
                                    (*k as u64) << 24 | (t as u64) << 8 | j as u64,
                                );
                                noise.draw(r[t][j], rng.sample(StandardNormal))
                            })
                            .collect();
                        bands(&v, w).ok_or_else(|| {
                            TwinError::Model(format!("no finite prediction of '{id}'"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ObservablePrediction {
                    observable: id.clone(),
                    bands,
                })
            })
            .collect()
    }

    /// Compare named plans at `times` on the same posterior samples and noise draws.
    pub fn whatif(
        &self,
        plans: &[(String, Plan)],
        times: &[f64],
    ) -> Result<Vec<(String, Prediction)>, TwinError> {
        plans
            .iter()
            .map(|(name, p)| Ok((name.clone(), self.forecast(p, times)?)))
            .collect()
    }

    /// Save as versioned JSON (the model text travels with the twin).
    pub fn to_json(&self) -> Result<String, TwinError> {
        let f = TwinFile {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            model: self.source.clone(),
            spec: self.spec.clone(),
            history: self.history.clone(),
            data: self.data.clone(),
            posterior: self.posterior.clone(),
        };
        serde_json::to_string(&f).map_err(|e| TwinError::Io(e.to_string()))
    }

    /// Load a twin saved by [`Twin::to_json`]; `origin` names the file in errors.
    ///
    /// Errors: [`TwinError::Format`] (not a twin, another version), [`TwinError::Model`].
    pub fn from_json(text: &str, origin: &str) -> Result<Twin, TwinError> {
        let head: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| TwinError::Format(format!("{origin}: not JSON: {e}")))?;
        let fmt = head.get("format").and_then(|v| v.as_str()).unwrap_or("");
        if fmt != FORMAT {
            return Err(TwinError::Format(format!(
                "{origin}: format '{fmt}' is not '{FORMAT}'"
            )));
        }
        let ver = head.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if ver != FORMAT_VERSION as u64 {
            return Err(TwinError::Format(format!(
                "{origin}: version {ver}; this build reads version {FORMAT_VERSION}"
            )));
        }
        let f: TwinFile = serde_json::from_value(head)
            .map_err(|e| TwinError::Format(format!("{origin}: {e}")))?;
        let model = model_of(&f.model)?;
        f.spec.validate(model.as_ref())?;
        Ok(Twin {
            model,
            source: f.model,
            spec: f.spec,
            history: f.history,
            data: f.data,
            posterior: f.posterior,
        })
    }

    /// [`Twin::from_json`] of a file.
    pub fn load(path: &Path) -> Result<Twin, TwinError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TwinError::Io(format!("{}: {e}", path.display())))?;
        Twin::from_json(&text, &path.display().to_string())
    }

    /// Write [`Twin::to_json`] to a file.
    pub fn save(&self, path: &Path) -> Result<(), TwinError> {
        std::fs::write(path, self.to_json()?)
            .map_err(|e| TwinError::Io(format!("{}: {e}", path.display())))
    }
}
