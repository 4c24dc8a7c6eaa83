//! The calibration spec: which parameters a twin estimates (priors, bounds, scales), how each
//! observable is measured (noise model, as PEtab's `noiseDistribution`/`noiseFormula`), and
//! optional outcome classes read off the forecast. Written as TOML or JSON.

use crate::TwinError;
use serde::{Deserialize, Serialize};

/// Prior of one estimated parameter, on its natural scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "kebab-case")]
pub enum Prior {
    /// log θ ~ Normal(ln `median`, `sd_log`²) (θ > 0). Estimated on the log scale.
    LogNormal {
        /// Median of θ (> 0).
        median: f64,
        /// Standard deviation of ln θ (> 0).
        sd_log: f64,
    },
    /// θ ~ Normal(`mean`, `sd`²). Estimated on the linear scale.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation (> 0).
        sd: f64,
    },
    /// θ ~ Uniform(`lower`, `upper`) (the bounds of the parameter). Estimated on the log
    /// scale when `lower > 0`, else linear; the density on the estimation scale carries the
    /// Jacobian.
    Uniform {
        /// Lower bound.
        lower: f64,
        /// Upper bound (> lower).
        upper: f64,
    },
}

/// One estimated parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimated {
    /// Model id (parameter, or species/compartment for an initial value).
    pub id: String,
    /// Prior on the natural scale.
    pub prior: Prior,
    /// Hard lower bound (natural scale; default: 0 for log-scale priors, −∞ otherwise).
    #[serde(default)]
    pub lower: Option<f64>,
    /// Hard upper bound (natural scale; default +∞).
    #[serde(default)]
    pub upper: Option<f64>,
}

impl Estimated {
    /// Whether θ is estimated as z = ln θ.
    pub fn log_scale(&self) -> bool {
        match self.prior {
            Prior::LogNormal { .. } => true,
            Prior::Normal { .. } => false,
            Prior::Uniform { lower, .. } => lower > 0.0,
        }
    }

    /// Natural value of the estimation-scale coordinate `z`.
    pub fn natural(&self, z: f64) -> f64 {
        if self.log_scale() {
            z.exp()
        } else {
            z
        }
    }

    /// Estimation-scale coordinate of the natural value `v`.
    pub fn scaled(&self, v: f64) -> f64 {
        if self.log_scale() {
            v.ln()
        } else {
            v
        }
    }

    /// Hard bounds on the natural scale (prior support intersected with `lower`/`upper`).
    pub fn bounds(&self) -> (f64, f64) {
        let (pl, pu) = match self.prior {
            Prior::LogNormal { .. } => (0.0, f64::INFINITY),
            Prior::Normal { .. } => (f64::NEG_INFINITY, f64::INFINITY),
            Prior::Uniform { lower, upper } => (lower, upper),
        };
        (
            self.lower.map_or(pl, |l| l.max(pl)),
            self.upper.map_or(pu, |u| u.min(pu)),
        )
    }

    /// Log prior density of the estimation-scale coordinate `z` (Jacobian included);
    /// −∞ outside the bounds.
    pub fn log_prior(&self, z: f64) -> f64 {
        let v = self.natural(z);
        let (lo, hi) = self.bounds();
        if !(v > lo && v < hi) {
            return f64::NEG_INFINITY;
        }
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        match self.prior {
            Prior::LogNormal { median, sd_log } => {
                let u = (z - median.ln()) / sd_log;
                -0.5 * u * u - sd_log.ln() - 0.5 * ln2pi
            }
            Prior::Normal { mean, sd } => {
                let u = (z - mean) / sd;
                -0.5 * u * u - sd.ln() - 0.5 * ln2pi
            }
            Prior::Uniform { lower, upper } => {
                if self.log_scale() {
                    z - (upper - lower).ln()
                } else {
                    -(upper - lower).ln()
                }
            }
        }
    }

    /// Prior median and a spread on the estimation scale: the starting point and step of the
    /// optimiser and the defensive component of the importance proposal.
    pub fn prior_center_sd(&self) -> (f64, f64) {
        match self.prior {
            Prior::LogNormal { median, sd_log } => (median.ln(), sd_log),
            Prior::Normal { mean, sd } => (mean, sd),
            Prior::Uniform { lower, upper } => {
                if self.log_scale() {
                    let (a, b) = (lower.ln(), upper.ln());
                    (0.5 * (a + b), (b - a) / 12f64.sqrt())
                } else {
                    (0.5 * (lower + upper), (upper - lower) / 12f64.sqrt())
                }
            }
        }
    }

    fn check(&self) -> Result<(), TwinError> {
        let bad = |what: &str| Err(TwinError::Spec(format!("parameter '{}': {what}", self.id)));
        match self.prior {
            Prior::LogNormal { median, sd_log } => {
                if !(median > 0.0 && median.is_finite() && sd_log > 0.0 && sd_log.is_finite()) {
                    return bad("log-normal prior needs median > 0 and sd_log > 0");
                }
            }
            Prior::Normal { mean, sd } => {
                if !(mean.is_finite() && sd > 0.0 && sd.is_finite()) {
                    return bad("normal prior needs a finite mean and sd > 0");
                }
            }
            Prior::Uniform { lower, upper } => {
                if !(lower.is_finite() && upper.is_finite() && upper > lower) {
                    return bad("uniform prior needs finite lower < upper");
                }
            }
        }
        let (lo, hi) = self.bounds();
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            return bad("bounds leave no room (lower >= upper)");
        }
        Ok(())
    }
}

/// Measurement noise of one observable (PEtab `noiseDistribution` with `observableTransformation`,
/// plus the pharmacometric combined error model).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "kebab-case")]
pub enum Noise {
    /// y ~ Normal(m, σ²), σ in the observable's unit.
    Normal {
        /// Standard deviation.
        sigma: f64,
    },
    /// ln y ~ Normal(ln m, σ²), σ on the log scale (≈ relative error).
    LogNormal {
        /// Standard deviation of ln y.
        sigma: f64,
    },
    /// y ~ Normal(m, σ_add² + σ_prop² m²): the additive, proportional (`sigma_add` = 0) or
    /// combined residual error of population PK (NONMEM `Y = F + F·ε₁ + ε₂`; Beal & Sheiner,
    /// NONMEM Users Guide). The variance is floored at 1e-300, so a proportional-only model
    /// with a zero prediction gives a vanishing (not undefined) likelihood to a non-zero level.
    Combined {
        /// Additive SD, observable's unit (≥ 0).
        sigma_add: f64,
        /// Proportional SD, fraction of the model value (≥ 0).
        sigma_prop: f64,
    },
}

impl Noise {
    /// This noise with σ replaced (a measurement's own `noiseParameters`). For
    /// [`Noise::Combined`] the measurement's σ is its whole SD: the result is `Normal { σ }`.
    pub fn with_sigma(self, sigma: f64) -> Noise {
        match self {
            Noise::Normal { .. } | Noise::Combined { .. } => Noise::Normal { sigma },
            Noise::LogNormal { .. } => Noise::LogNormal { sigma },
        }
    }

    /// σ of this noise model (for [`Noise::Combined`], the additive σ).
    pub fn sigma(self) -> f64 {
        match self {
            Noise::Normal { sigma } | Noise::LogNormal { sigma } => sigma,
            Noise::Combined { sigma_add, .. } => sigma_add,
        }
    }

    /// SD of a measurement on the scale the noise is Gaussian on (the observable's unit;
    /// log scale for log-normal) given model value `m`.
    pub fn sd_at(self, m: f64) -> f64 {
        match self {
            Noise::Normal { sigma } | Noise::LogNormal { sigma } => sigma,
            Noise::Combined {
                sigma_add,
                sigma_prop,
            } => (sigma_add * sigma_add + sigma_prop * sigma_prop * m * m)
                .max(1e-300)
                .sqrt(),
        }
    }

    /// Check the parameters: σ > 0 and finite; for [`Noise::Combined`] both σ ≥ 0, finite, and
    /// not both 0. Errors name the fault.
    pub fn check(self) -> Result<(), String> {
        match self {
            Noise::Normal { sigma } | Noise::LogNormal { sigma } => {
                if sigma > 0.0 && sigma.is_finite() {
                    Ok(())
                } else {
                    Err(format!("noise sigma must be > 0, got {sigma}"))
                }
            }
            Noise::Combined {
                sigma_add,
                sigma_prop,
            } => {
                let ok = |s: f64| s >= 0.0 && s.is_finite();
                if ok(sigma_add) && ok(sigma_prop) && sigma_add + sigma_prop > 0.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "combined noise needs sigma_add, sigma_prop >= 0 and not both 0, got {sigma_add}, {sigma_prop}"
                    ))
                }
            }
        }
    }

    /// Smallest model value a log-normal likelihood evaluates (values below are floored: a
    /// cleared pathogen predicts "below detection", not −∞).
    pub const LOG_FLOOR: f64 = 1e-9;

    /// Whether scores (RMSE) of this observable are computed on the log scale.
    pub fn is_log(self) -> bool {
        matches!(self, Noise::LogNormal { .. })
    }

    /// Log density of measurement `y` given model value `m` (PEtab's definition, normalising
    /// constants included).
    pub fn log_density(self, y: f64, m: f64) -> f64 {
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        match self {
            Noise::Normal { .. } | Noise::Combined { .. } => {
                let sd = self.sd_at(m);
                let u = (y - m) / sd;
                -0.5 * u * u - sd.ln() - 0.5 * ln2pi
            }
            Noise::LogNormal { sigma } => {
                if y <= 0.0 {
                    return f64::NEG_INFINITY;
                }
                let u = (y.ln() - m.max(Self::LOG_FLOOR).ln()) / sigma;
                -0.5 * u * u - (sigma * y).ln() - 0.5 * ln2pi
            }
        }
    }

    /// A draw of a measurement given model value `m` and a standard normal draw `e`.
    pub fn draw(self, m: f64, e: f64) -> f64 {
        match self {
            Noise::Normal { .. } | Noise::Combined { .. } => m + self.sd_at(m) * e,
            Noise::LogNormal { sigma } => m.max(Self::LOG_FLOOR) * (sigma * e).exp(),
        }
    }
}

/// One observable of the twin: a model id and its measurement noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservableSpec {
    /// Model id (PEtab `observableId` equal to a model quantity).
    pub id: String,
    /// Noise model (σ may be overridden per measurement).
    pub noise: Noise,
}

impl ObservableSpec {
    /// Parse `ID=normal:SIGMA` or `ID=log-normal:SIGMA` (also `lognormal`), the noise of one
    /// observable as the CLI's `--noise` and Python's `noise=` give it; σ in the observable's
    /// unit (normal) or on the log scale (log-normal), finite and > 0.
    ///
    /// Errors: [`TwinError::Spec`] naming the text and the expected form.
    pub fn parse(s: &str) -> Result<ObservableSpec, TwinError> {
        let bad = || {
            TwinError::Spec(format!(
                "noise '{s}': expected ID=normal:SIGMA or ID=log-normal:SIGMA with SIGMA > 0"
            ))
        };
        let (id, rest) = s.split_once('=').ok_or_else(bad)?;
        let (kind, sigma) = rest.split_once(':').ok_or_else(bad)?;
        let sigma: f64 = sigma.trim().parse().map_err(|_| bad())?;
        if !(sigma > 0.0 && sigma.is_finite()) || id.trim().is_empty() {
            return Err(bad());
        }
        let noise = match kind.trim() {
            "normal" => Noise::Normal { sigma },
            "log-normal" | "lognormal" => Noise::LogNormal { sigma },
            _ => return Err(bad()),
        };
        Ok(ObservableSpec {
            id: id.trim().to_string(),
            noise,
        })
    }
}

/// A rule of an outcome class: the class holds when the observable at the outcome time is
/// above `above` (when set) and below `below` (when set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRule {
    /// Class name (e.g. "septic death").
    pub name: String,
    /// Model id read at the outcome time.
    pub observable: String,
    /// Lower threshold (exclusive).
    #[serde(default)]
    pub above: Option<f64>,
    /// Upper threshold (exclusive).
    #[serde(default)]
    pub below: Option<f64>,
}

/// Outcome classes read off a trajectory at one time: the first rule that holds names the
/// class, else `otherwise`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Time at which the class is read (model time unit).
    pub at_time: f64,
    /// Rules in priority order.
    pub rules: Vec<OutcomeRule>,
    /// Class when no rule holds.
    pub otherwise: String,
}

impl Outcomes {
    /// Every class name: the rules' (first appearance order) then `otherwise`.
    pub fn classes(&self) -> Vec<String> {
        let mut c: Vec<String> = Vec::new();
        for r in &self.rules {
            if !c.contains(&r.name) {
                c.push(r.name.clone());
            }
        }
        if !c.contains(&self.otherwise) {
            c.push(self.otherwise.clone());
        }
        c
    }

    /// Model ids the rules read.
    pub fn observables(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.rules {
            if !v.contains(&r.observable) {
                v.push(r.observable.clone());
            }
        }
        v
    }

    /// The class of a state given as `value(id)` at the outcome time.
    pub fn classify(&self, value: &dyn Fn(&str) -> f64) -> &str {
        for r in &self.rules {
            let v = value(&r.observable);
            if r.above.is_none_or(|a| v > a) && r.below.is_none_or(|b| v < b) {
                return &r.name;
            }
        }
        &self.otherwise
    }
}

fn default_samples() -> usize {
    400
}

fn default_seed() -> u64 {
    1
}

/// Everything that says how a model becomes a twin of one patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSpec {
    /// Estimated parameters (the rest keep their nominal values or `fixed`).
    #[serde(default)]
    pub estimate: Vec<Estimated>,
    /// Values fixed for this patient (model id → value), applied before estimation.
    #[serde(default)]
    pub fixed: Vec<(String, f64)>,
    /// Observables with their noise models.
    #[serde(default, rename = "observable")]
    pub observables: Vec<ObservableSpec>,
    /// Outcome classes (optional).
    #[serde(default)]
    pub outcomes: Option<Outcomes>,
    /// Posterior samples kept (importance sampling around the MAP).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Seed of every random draw (samples, predictive noise).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Correlation of the estimated parameters' priors on the estimation scale: row-major
    /// `n × n` in the order of `estimate` (symmetric, unit diagonal, positive definite). With
    /// it the joint prior is the multivariate normal `z ~ N(μ, D R D)` on the estimation scale
    /// (`z = ln θ` for log-normal priors), where `μ` and `D = diag(sd)` are the marginal priors'
    /// centres and SDs — e.g. a population PK prior `ln θ ~ N(ln θ_typical, Ω)` with
    /// `R_ij = Ω_ij / √(Ω_ii Ω_jj)`. Every estimated prior must then be log-normal or normal
    /// (Gaussian on the estimation scale); bounds still truncate. `None`: independent priors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_correlation: Option<Vec<f64>>,
}

impl Default for CalibrationSpec {
    fn default() -> Self {
        CalibrationSpec {
            estimate: Vec::new(),
            fixed: Vec::new(),
            observables: Vec::new(),
            outcomes: None,
            samples: default_samples(),
            seed: default_seed(),
            prior_correlation: None,
        }
    }
}

impl CalibrationSpec {
    /// Read a spec from TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, TwinError> {
        toml::from_str(text).map_err(|e| TwinError::Spec(format!("{origin}: {e}")))
    }

    /// Check the spec against a model: known ids, valid priors, a noise model per
    /// observable, at least 2 samples.
    pub fn validate(&self, model: &dyn crate::TwinModel) -> Result<(), TwinError> {
        let known = model.parameter_ids();
        for e in &self.estimate {
            if !known.contains(&e.id) {
                return Err(TwinError::Spec(format!(
                    "estimated parameter '{}' is not a parameter or species of the model",
                    e.id
                )));
            }
            e.check()?;
        }
        for (id, v) in &self.fixed {
            if !known.contains(id) || !v.is_finite() {
                return Err(TwinError::Spec(format!(
                    "fixed value {id} = {v}: unknown id or not finite"
                )));
            }
        }
        for o in &self.observables {
            if !model.has_observable(&o.id) {
                return Err(TwinError::Spec(format!(
                    "observable '{}' is not a quantity of the model",
                    o.id
                )));
            }
            o.noise
                .check()
                .map_err(|e| TwinError::Spec(format!("observable '{}': {e}", o.id)))?;
        }
        if let Some(out) = &self.outcomes {
            for id in out.observables() {
                if !model.has_observable(&id) {
                    return Err(TwinError::Spec(format!(
                        "outcome rule reads '{id}', which is not a quantity of the model"
                    )));
                }
            }
        }
        if self.samples < 2 {
            return Err(TwinError::Spec("samples must be at least 2".into()));
        }
        self.correlation_factor()?;
        Ok(())
    }

    /// Lower Cholesky factor of the prior covariance `D R D` on the estimation scale (row-major
    /// `n × n`), `None` without [`CalibrationSpec::prior_correlation`].
    ///
    /// Errors: [`TwinError::Spec`] when the matrix is not `n × n`, not symmetric, has a
    /// diagonal other than 1, is not positive definite, or a prior is not Gaussian on the
    /// estimation scale.
    pub fn correlation_factor(&self) -> Result<Option<Vec<f64>>, TwinError> {
        let Some(r) = &self.prior_correlation else {
            return Ok(None);
        };
        let n = self.estimate.len();
        let bad = |m: String| Err(TwinError::Spec(format!("prior_correlation: {m}")));
        if r.len() != n * n {
            return bad(format!(
                "{} entries for {n} estimated parameters (needs {})",
                r.len(),
                n * n
            ));
        }
        for i in 0..n {
            if (r[i * n + i] - 1.0).abs() > 1e-12 {
                return bad(format!(
                    "diagonal entry {} is {}, not 1",
                    i + 1,
                    r[i * n + i]
                ));
            }
            for j in 0..i {
                let (a, b) = (r[i * n + j], r[j * n + i]);
                if !(a.is_finite() && (a - b).abs() <= 1e-12 && a.abs() < 1.0) {
                    return bad(format!(
                        "entries ({},{}) = {a} and ({},{}) = {b} must be equal and in (-1, 1)",
                        i + 1,
                        j + 1,
                        j + 1,
                        i + 1
                    ));
                }
            }
        }
        if let Some(e) = self
            .estimate
            .iter()
            .find(|e| matches!(e.prior, Prior::Uniform { .. }))
        {
            return bad(format!(
                "parameter '{}' has a uniform prior; a joint Gaussian prior needs log-normal or normal marginals",
                e.id
            ));
        }
        let sd: Vec<f64> = self
            .estimate
            .iter()
            .map(|e| e.prior_center_sd().1)
            .collect();
        let cov: Vec<f64> = (0..n * n).map(|k| sd[k / n] * r[k] * sd[k % n]).collect();
        match medtwin_infer::optim::cholesky(&cov, n) {
            Some(l) => Ok(Some(l)),
            None => bad("not positive definite".into()),
        }
    }

    /// Log prior density of the estimation-scale point `z` (Jacobians of the scale included;
    /// −∞ outside any bound): the sum of the marginal priors, or the multivariate normal of
    /// [`CalibrationSpec::prior_correlation`] when set (`l` its Cholesky factor from
    /// [`CalibrationSpec::correlation_factor`]).
    pub fn log_prior(&self, z: &[f64], l: Option<&[f64]>) -> f64 {
        let marginal: f64 = self
            .estimate
            .iter()
            .zip(z)
            .map(|(e, &zi)| e.log_prior(zi))
            .sum();
        let Some(l) = l else {
            return marginal;
        };
        if marginal == f64::NEG_INFINITY {
            return marginal;
        }
        let n = z.len();
        let mut y = vec![0.0; n];
        let mut logdet = 0.0;
        for i in 0..n {
            let c = self.estimate[i].prior_center_sd().0;
            let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
            y[i] = (z[i] - c - s) / l[i * n + i];
            logdet += l[i * n + i].ln();
        }
        -0.5 * y.iter().map(|v| v * v).sum::<f64>()
            - logdet
            - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    /// This spec completed for `model` as `medtwin twin fit MODEL.xml` does: when `estimate`
    /// is not empty it replaces the estimated list, each id keeping its entry of this spec if
    /// it has one, else the default prior (log-normal at the model's nominal value with SD 1
    /// on the log scale when that value is > 0, else normal with mean the nominal value and SD
    /// max(|value|, 1)); each of `noise` replaces or adds that observable's noise model.
    ///
    /// Errors: [`TwinError::Spec`] for an estimated id that is not a parameter or species of
    /// the model.
    pub fn complete(
        mut self,
        model: &dyn crate::TwinModel,
        estimate: &[String],
        noise: Vec<ObservableSpec>,
    ) -> Result<Self, TwinError> {
        if !estimate.is_empty() {
            let mut est = Vec::with_capacity(estimate.len());
            for id in estimate {
                if let Some(e) = self.estimate.iter().find(|e| &e.id == id) {
                    est.push(e.clone());
                    continue;
                }
                let v = model.nominal(id).ok_or_else(|| {
                    TwinError::Spec(format!(
                        "estimate {id}: not a parameter or species of the model"
                    ))
                })?;
                let prior = if v > 0.0 {
                    Prior::LogNormal {
                        median: v,
                        sd_log: 1.0,
                    }
                } else {
                    Prior::Normal {
                        mean: v,
                        sd: v.abs().max(1.0),
                    }
                };
                est.push(Estimated {
                    id: id.clone(),
                    prior,
                    lower: None,
                    upper: None,
                });
            }
            self.estimate = est;
        }
        for o in noise {
            self.observables.retain(|x| x.id != o.id);
            self.observables.push(o);
        }
        Ok(self)
    }

    /// The first observable of `measured` (e.g. the data's observable ids) without a noise
    /// model in this spec, `None` when every one has one.
    pub fn first_without_noise<'a>(
        &self,
        measured: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        measured.into_iter().find(|id| self.noise_of(id).is_none())
    }

    /// The noise model of observable `id`.
    pub fn noise_of(&self, id: &str) -> Option<Noise> {
        self.observables
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.noise)
    }
}
