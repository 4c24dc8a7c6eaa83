//! Population PK: nonlinear mixed-effects (NLME) fits by FOCE-I.
//!
//! ## Model
//! Subject *i*'s structural parameter *j* is log-normal around a typical value with covariate
//! effects: `P_ij = exp(θ_j + Σ_c β_jc g_c(x_ic) + η_ij)`, where `η_i ~ N(0, Ω)` for the parameters
//! with inter-individual variability (the others have `η = 0`), and `g` is `log(x/ref)` (power
//! model), `log(1 + β(x − ref))` folded into the linear model, or an indicator (categorical).
//! Observations `y_ij = f(t_ij; P_i) + ε_ij` with `Var ε = σ_add² + σ_prop² f²` (additive,
//! proportional or combined residual error).
//!
//! ## Estimation: FOCE with interaction (FOCE-I)
//! For each subject the conditional mode `η̂_i` minimises
//! `Σ_j [(y_ij − f_ij)²/V_ij + log V_ij] + η' Ω⁻¹ η` (damped Gauss–Newton, central-difference
//! sensitivities `G_i = ∂f/∂η` at `η̂_i`). The model is linearised around `η̂_i`, which gives the
//! marginal `y_i ~ N(f(η̂_i) − G_i η̂_i, C_i)`, `C_i = G_i Ω G_iᵀ + diag(V(f(η̂_i)))`, and the
//! objective `−2 log L = Σ_i [n_i log 2π + log|C_i| + r_iᵀ C_i⁻¹ r_i]`,
//! `r_i = y_i − f(η̂_i) + G_i η̂_i` (Beal & Sheiner, NONMEM Users Guide VII; Wang 2007,
//! J Pharmacokinet Pharmacodyn 34:575, eq. 13). With additive error this is the same
//! approximation as the Lindstrom–Bates algorithm of R's `nlme` at convergence (Lindstrom & Bates
//! 1990, Biometrics 46:673), so its log-likelihood is comparable with `logLik(nlme(...))`.
//! θ, log-SDs (diagonal Ω) or a log-Cholesky factor (full Ω) and log σ are optimised by BFGS
//! with finite-difference gradients, checked by a Nelder–Mead search around its end point
//! (`medtwin_infer::optim`). Standard errors come from the inverse Hessian of `−log L` at the
//! optimum (central differences).
//!
//! Measured against nlme 3.1-162 (tests/pop.rs): at nlme's own estimates this objective gives
//! nlme's log-likelihood (Theoph −177.022 vs −177.02; Phenobarb −505.413 vs −505.42), so the
//! approximation is the same; FOCE-I then finds a higher maximum (−176.992; −505.236) because
//! nlme's alternating PNLS/LME iteration stops at a fixed point that is not the maximum of that
//! likelihood. Typical values therefore differ by up to 1.7 % (Theoph KA) and 4 % (Phenobarb CL)
//! on the natural scale. Proportional-only error cannot fit observations whose prediction is 0
//! (Theoph's pre-dose samples): use `Combined` there; [`fit`] refuses such data, naming the level.
//!
//! ## Diagnostics
//! PRED (`η = 0`), IPRED (`η̂`), IWRES, and CWRES (Hooker, Staatz & Karlsson 2007, Pharm Res
//! 24:2187: `C_i^(−1/2) r_i` by the Cholesky factor), and a visual predictive check
//! ([`vpc`]).

use crate::data::{Dataset, Subject};
use crate::model::{ModelError, PkModel, PkParams};
use medtwin_infer::optim::{bfgs, cholesky, laplace, nelder_mead};
use medtwin_infer::quantile_sorted as quantile;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Residual error model: `Var ε = σ_add² + σ_prop² f²`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorModel {
    /// `σ_add` only (concentration units).
    Additive,
    /// `σ_prop` only (fraction of the prediction).
    Proportional,
    /// Both.
    Combined,
}

impl ErrorModel {
    /// Parse `additive`, `proportional` or `combined`.
    pub fn parse(s: &str) -> Result<Self, FitError> {
        match s {
            "additive" | "add" => Ok(ErrorModel::Additive),
            "proportional" | "prop" => Ok(ErrorModel::Proportional),
            "combined" | "comb" => Ok(ErrorModel::Combined),
            _ => Err(FitError::Spec(format!(
                "unknown error model '{s}': expected additive, proportional or combined"
            ))),
        }
    }
}

/// Functional form of a covariate effect on a log-normal parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum CovariateForm {
    /// `P = TV (x / ref)^β` (allometric/power model; `ref` is the population median of `x`).
    Power,
    /// `P = TV (1 + β (x − ref))`.
    Linear,
    /// `P = TV exp(β)` when `x ≠ ref` (`ref`: the reference category, the most frequent value).
    Categorical,
}

/// A covariate effect `PARAM~COVARIATE[:power|lin|cat]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CovariateEffect {
    /// Structural parameter name (e.g. `CL`).
    pub parameter: String,
    /// Covariate column (e.g. `WT`).
    pub covariate: String,
    /// Form of the effect.
    pub form: CovariateForm,
    /// Reference value (median for continuous, most frequent for categorical), set by [`fit`]
    /// from the data when `None`.
    pub reference: Option<f64>,
}

impl CovariateEffect {
    /// Parse `CL~WT` (power), `CL~WT:lin`, `CL~SEX:cat`.
    pub fn parse(s: &str) -> Result<Self, FitError> {
        let (p, rest) = s
            .split_once('~')
            .ok_or_else(|| FitError::Spec(format!("covariate '{s}': expected PARAM~COV[:form]")))?;
        let (c, form) = match rest.split_once(':') {
            None => (rest, CovariateForm::Power),
            Some((c, "power")) => (c, CovariateForm::Power),
            Some((c, "lin" | "linear")) => (c, CovariateForm::Linear),
            Some((c, "cat" | "categorical")) => (c, CovariateForm::Categorical),
            Some((_, f)) => {
                return Err(FitError::Spec(format!(
                    "covariate '{s}': unknown form '{f}' (power, lin, cat)"
                )))
            }
        };
        Ok(CovariateEffect {
            parameter: p.trim().to_ascii_uppercase(),
            covariate: c.trim().to_ascii_uppercase(),
            form,
            reference: None,
        })
    }

    /// Additive contribution to `log P` for covariate value `x` and coefficient `beta`
    /// (`NaN` when the linear model gives a non-positive factor).
    pub fn log_effect(&self, x: f64, beta: f64) -> f64 {
        let r = self.reference.unwrap_or(1.0);
        match self.form {
            CovariateForm::Power => beta * (x / r).ln(),
            CovariateForm::Linear => {
                let f = 1.0 + beta * (x - r);
                if f > 0.0 {
                    f.ln()
                } else {
                    f64::NAN
                }
            }
            CovariateForm::Categorical => {
                if x != r {
                    beta
                } else {
                    0.0
                }
            }
        }
    }
}

/// A population model: structure, estimated parameters, random effects, covariates, error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopModel {
    /// Structural PK model.
    pub pk: PkModel,
    /// Estimated structural parameters (NONMEM names; `KE` may replace `V` as in nlme's
    /// `SSfol`), each log-normal.
    pub parameters: Vec<String>,
    /// Parameters with inter-individual variability (subset of `parameters`).
    pub iiv: Vec<String>,
    /// Full (`true`) or diagonal Ω.
    pub full_omega: bool,
    /// Covariate effects.
    pub covariates: Vec<CovariateEffect>,
    /// Residual error model.
    pub error: ErrorModel,
}

impl PopModel {
    /// The default population model of a structural model: its parameters
    /// ([`PkModel::parameter_names`]), IIV on all of them, diagonal Ω, additive error.
    pub fn new(pk: PkModel) -> Self {
        let parameters: Vec<String> = pk.parameter_names().iter().map(|s| s.to_string()).collect();
        PopModel {
            pk,
            iiv: parameters.clone(),
            parameters,
            full_omega: false,
            covariates: Vec::new(),
            error: ErrorModel::Additive,
        }
    }

    fn check(&self, ds: &Dataset) -> Result<(), FitError> {
        for n in &self.iiv {
            if !self.parameters.contains(n) {
                return Err(FitError::Spec(format!(
                    "random effect on {n}, which is not an estimated parameter ({})",
                    self.parameters.join(", ")
                )));
            }
        }
        for c in &self.covariates {
            if !self.parameters.contains(&c.parameter) {
                return Err(FitError::Spec(format!(
                    "covariate effect on {}, which is not an estimated parameter",
                    c.parameter
                )));
            }
            for s in &ds.subjects {
                if !s
                    .covariates
                    .get(&c.covariate)
                    .is_some_and(|v| v.is_finite())
                {
                    return Err(FitError::Spec(format!(
                        "subject {} has no value of covariate {}",
                        s.id, c.covariate
                    )));
                }
            }
        }
        PkParams::from_named(self.parameters.iter().map(|n| (n.as_str(), 1.0)))?;
        Ok(())
    }

    /// Number of random effects.
    pub fn n_eta(&self) -> usize {
        self.iiv.len()
    }
}

/// Estimates of a population model (natural-log scale for θ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopEstimates {
    /// `log` typical values, one per [`PopModel::parameters`] (at covariate reference values).
    pub log_theta: Vec<f64>,
    /// Covariate coefficients β, one per [`PopModel::covariates`].
    pub beta: Vec<f64>,
    /// Ω, row-major `n_eta × n_eta` (variances of η on the log scale).
    pub omega: Vec<f64>,
    /// Additive residual SD (concentration unit); 0 when not in the model.
    pub sigma_add: f64,
    /// Proportional residual SD (fraction); 0 when not in the model.
    pub sigma_prop: f64,
}

/// Why a fit failed.
#[derive(Debug, Error)]
pub enum FitError {
    /// The model specification does not fit the data.
    #[error("population model: {0}")]
    Spec(String),
    /// The structural model rejected parameters or doses.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Nothing to fit.
    #[error("the data set has no observations")]
    NoData,
    /// The objective was not finite at the start.
    #[error("the objective is not finite at the initial estimates: {0}")]
    BadStart(String),
}

/// One subject's fit results (rows aligned with the subject's observations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndividualFit {
    /// Subject id.
    pub id: String,
    /// Conditional mode η̂ (log scale), one per random effect.
    pub eta: Vec<f64>,
    /// Individual parameters at η̂ (natural scale), `(name, value)`.
    pub parameters: Vec<(String, f64)>,
    /// Observation times, h.
    pub time_h: Vec<f64>,
    /// Observed concentrations.
    pub dv: Vec<f64>,
    /// Population predictions (η = 0).
    pub pred: Vec<f64>,
    /// Individual predictions (η̂).
    pub ipred: Vec<f64>,
    /// Individual weighted residuals `(y − IPRED)/sd`.
    pub iwres: Vec<f64>,
    /// Conditional weighted residuals (Hooker et al. 2007).
    pub cwres: Vec<f64>,
}

/// Result of [`fit`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PopFit {
    /// The model (with covariate references filled in).
    pub model: PopModel,
    /// Final estimates.
    pub estimates: PopEstimates,
    /// Standard errors of the optimiser's coordinates `(name, estimate, se)`: `log_<P>` for θ,
    /// `beta_<P>_<COV>`, `log_sd_eta_<P>` (or log-Cholesky entries), `log_sigma_add/prop`;
    /// `None` when the Hessian is not positive definite.
    pub standard_errors: Option<Vec<(String, f64, f64)>>,
    /// `−2 log L` (FOCE-I), including the `n log 2π` constant.
    pub ofv: f64,
    /// log-likelihood `−ofv/2`.
    pub log_likelihood: f64,
    /// Objective evaluations.
    pub evaluations: usize,
    /// Whether the optimiser converged (BFGS's gradient/decrease test, or no improvement found
    /// by a Nelder–Mead search around its end point).
    pub converged: bool,
    /// Wall time of the fit, s.
    pub wall_s: f64,
    /// Observations used.
    pub n_observations: usize,
    /// Per subject diagnostics.
    pub individuals: Vec<IndividualFit>,
}

/// Options of [`fit`].
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Initial typical values (natural scale) by parameter name; others start from a
    /// data-driven guess.
    pub initial: Vec<(String, f64)>,
    /// Maximum objective evaluations per Nelder–Mead run.
    pub max_evals: usize,
    /// Nelder–Mead restarts from the best point (each with a fresh simplex).
    pub restarts: usize,
    /// Compute standard errors.
    pub standard_errors: bool,
}

impl Default for FitOptions {
    /// 4000 evaluations, 3 restarts, with standard errors.
    fn default() -> Self {
        FitOptions {
            initial: Vec::new(),
            max_evals: 4000,
            restarts: 3,
            standard_errors: true,
        }
    }
}

/// Log typical values of one subject: `θ_j + Σ_c β_jc g_c(x_c)` for each of
/// [`PopModel::parameters`] (natural log of the parameter's unit, e.g. ln(L/h) for `CL`), i.e.
/// the centre of the subject's prior `ln P_j ~ N(·, Ω)` before any level is seen. A missing
/// covariate gives `NaN`.
pub fn typical_log_values(model: &PopModel, est: &PopEstimates, subject: &Subject) -> Vec<f64> {
    model
        .parameters
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let mut lp = est.log_theta[j];
            for (c, b) in model.covariates.iter().zip(&est.beta) {
                if &c.parameter == name {
                    let x = subject
                        .covariates
                        .get(&c.covariate)
                        .copied()
                        .unwrap_or(f64::NAN);
                    lp += c.log_effect(x, *b);
                }
            }
            lp
        })
        .collect()
}

/// Individual parameters of one subject under `(model, estimates)` with random effects `eta`.
pub fn individual_params(
    model: &PopModel,
    est: &PopEstimates,
    subject: &Subject,
    eta: &[f64],
) -> Result<PkParams, ModelError> {
    let tv = typical_log_values(model, est, subject);
    let named = model.parameters.iter().zip(tv).map(|(name, mut lp)| {
        if let Some(k) = model.iiv.iter().position(|n| n == name) {
            lp += eta[k];
        }
        (name.as_str(), lp.exp())
    });
    PkParams::from_named(named)
}

/// Predictions for one subject at its observation times.
fn predict(
    model: &PopModel,
    est: &PopEstimates,
    s: &Subject,
    times: &[f64],
    eta: &[f64],
) -> Result<Vec<f64>, ModelError> {
    let p = individual_params(model, est, s, eta)?;
    model.pk.concentrations(&p, &s.doses, times)
}

/// Residual variance at prediction `f`.
pub fn residual_variance(est: &PopEstimates, f: f64) -> f64 {
    (est.sigma_add * est.sigma_add + est.sigma_prop * est.sigma_prop * f * f).max(1e-300)
}

/// Conditional mode of one subject and the linearisation around it.
pub(crate) struct Conditional {
    pub eta: Vec<f64>,
    pub f: Vec<f64>,
    /// The subject's FOCE-I `−2 log L_i`.
    pub m2ll: f64,
    /// Whitened residuals `L⁻¹ r` (CWRES).
    pub cwres: Vec<f64>,
}

/// Subject-level data extracted once.
pub(crate) struct SubjectObs<'a> {
    pub subject: &'a Subject,
    pub times: Vec<f64>,
    pub y: Vec<f64>,
}

impl<'a> SubjectObs<'a> {
    pub(crate) fn new(subject: &'a Subject) -> Self {
        SubjectObs {
            subject,
            times: subject.observations.iter().map(|o| o.time_h).collect(),
            y: subject.observations.iter().map(|o| o.dv).collect(),
        }
    }
}

fn inner_objective(
    model: &PopModel,
    est: &PopEstimates,
    omega_inv: &[f64],
    so: &SubjectObs,
    eta: &[f64],
) -> Option<(f64, Vec<f64>)> {
    let f = predict(model, est, so.subject, &so.times, eta).ok()?;
    let k = eta.len();
    let mut o = 0.0;
    for (fy, y) in f.iter().zip(&so.y) {
        let v = residual_variance(est, *fy);
        o += (y - fy) * (y - fy) / v + v.ln();
    }
    for a in 0..k {
        for b in 0..k {
            o += eta[a] * omega_inv[a * k + b] * eta[b];
        }
    }
    o.is_finite().then_some((o, f))
}

fn sensitivities(
    model: &PopModel,
    est: &PopEstimates,
    so: &SubjectObs,
    eta: &[f64],
) -> Option<Vec<f64>> {
    let n = so.times.len();
    let k = eta.len();
    let mut g = vec![0.0; n * k];
    let h = 1e-5;
    let mut e = eta.to_vec();
    for b in 0..k {
        e[b] = eta[b] + h;
        let fp = predict(model, est, so.subject, &so.times, &e).ok()?;
        e[b] = eta[b] - h;
        let fm = predict(model, est, so.subject, &so.times, &e).ok()?;
        e[b] = eta[b];
        for a in 0..n {
            g[a * k + b] = (fp[a] - fm[a]) / (2.0 * h);
        }
    }
    Some(g)
}

/// Fisher information `1/V + V'²/(2V²)` and half the negative derivative of
/// `(y − f)²/V + log V` with respect to the prediction `f`, for `V = σ_add² + σ_prop² f²`.
fn score_information(est: &PopEstimates, f: f64, y: f64) -> (f64, f64) {
    let v = residual_variance(est, f);
    let dv = 2.0 * est.sigma_prop * est.sigma_prop * f;
    let r = y - f;
    let info = 1.0 / v + dv * dv / (2.0 * v * v);
    let score = r / v + 0.5 * r * r * dv / (v * v) - 0.5 * dv / v;
    (info, score)
}

/// Solve the `k×k` SPD system `a x = b` (row-major); `None` if not SPD.
fn solve_spd(a: &[f64], b: &[f64], k: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, k)?;
    let mut y = b.to_vec();
    for i in 0..k {
        for j in 0..i {
            y[i] -= l[i * k + j] * y[j];
        }
        y[i] /= l[i * k + i];
    }
    for i in (0..k).rev() {
        for j in i + 1..k {
            y[i] -= l[j * k + i] * y[j];
        }
        y[i] /= l[i * k + i];
    }
    Some(y)
}

/// Find η̂ by damped Gauss–Newton from `eta0` and linearise (FOCE-I).
pub(crate) fn conditional(
    model: &PopModel,
    est: &PopEstimates,
    omega_inv: &[f64],
    so: &SubjectObs,
    eta0: &[f64],
) -> Option<Conditional> {
    let k = eta0.len();
    let n = so.times.len();
    let mut eta = eta0.to_vec();
    let (mut obj, mut f) = inner_objective(model, est, omega_inv, so, &eta).or_else(|| {
        eta.iter_mut().for_each(|e| *e = 0.0);
        inner_objective(model, est, omega_inv, so, &eta)
    })?;
    let mut lambda = 1e-3;
    for _ in 0..100 {
        if k == 0 {
            break;
        }
        let g = sensitivities(model, est, so, &eta)?;
        // Fisher scoring (Levenberg-damped): (GᵀWG + Ω⁻¹ + λ diag) δ = Gᵀs − Ω⁻¹ η, with the
        // score s and information W of N(f, V(f)) per observation (V' = dV/df), which reduce to
        // Gauss–Newton for additive error.
        let mut a = omega_inv.to_vec();
        let mut rhs = vec![0.0; k];
        for i in 0..n {
            let (w, score) = score_information(est, f[i], so.y[i]);
            for p in 0..k {
                rhs[p] += g[i * k + p] * score;
                for q in 0..k {
                    a[p * k + q] += g[i * k + p] * w * g[i * k + q];
                }
            }
        }
        for p in 0..k {
            for q in 0..k {
                rhs[p] -= omega_inv[p * k + q] * eta[q];
            }
        }
        let mut improved = false;
        for _ in 0..30 {
            let mut al = a.clone();
            for p in 0..k {
                al[p * k + p] *= 1.0 + lambda;
            }
            let Some(delta) = solve_spd(&al, &rhs, k) else {
                lambda *= 10.0;
                continue;
            };
            let trial: Vec<f64> = eta.iter().zip(&delta).map(|(e, d)| e + d).collect();
            match inner_objective(model, est, omega_inv, so, &trial) {
                Some((o2, f2)) if o2 <= obj => {
                    let done = obj - o2 < 1e-10 * (1.0 + obj.abs());
                    eta = trial;
                    obj = o2;
                    f = f2;
                    lambda = (lambda * 0.1).max(1e-9);
                    improved = !done;
                    break;
                }
                _ => lambda *= 10.0,
            }
        }
        if !improved {
            break;
        }
    }
    linearise(model, est, omega_inv, so, eta, f)
}

/// The FOCE-I linearisation at η̂.
fn linearise(
    model: &PopModel,
    est: &PopEstimates,
    omega_inv: &[f64],
    so: &SubjectObs,
    eta: Vec<f64>,
    f: Vec<f64>,
) -> Option<Conditional> {
    let k = eta.len();
    let n = so.times.len();
    let g = if k > 0 {
        sensitivities(model, est, so, &eta)?
    } else {
        Vec::new()
    };
    let omega = if k > 0 {
        medtwin_infer::optim::invert_spd(omega_inv, k)?
    } else {
        Vec::new()
    };
    // C = G Ω Gᵀ + R
    let mut go = vec![0.0; n * k];
    for i in 0..n {
        for b in 0..k {
            go[i * k + b] = (0..k).map(|a| g[i * k + a] * omega[a * k + b]).sum();
        }
    }
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v: f64 = (0..k).map(|b| go[i * k + b] * g[j * k + b]).sum();
            c[i * n + j] = v;
            c[j * n + i] = v;
        }
        c[i * n + i] += residual_variance(est, f[i]);
    }
    let r: Vec<f64> = (0..n)
        .map(|i| so.y[i] - f[i] + (0..k).map(|b| g[i * k + b] * eta[b]).sum::<f64>())
        .collect();
    let l = cholesky(&c, n)?;
    // whitened residuals z = L⁻¹ r
    let mut z = r.clone();
    for i in 0..n {
        for j in 0..i {
            z[i] -= l[i * n + j] * z[j];
        }
        z[i] /= l[i * n + i];
    }
    let logdet: f64 = (0..n).map(|i| 2.0 * l[i * n + i].ln()).sum();
    let m2ll = n as f64 * (2.0 * std::f64::consts::PI).ln()
        + logdet
        + z.iter().map(|v| v * v).sum::<f64>();
    m2ll.is_finite().then_some(Conditional {
        eta,
        f,
        m2ll,
        cwres: z,
    })
}

/// Map the optimiser's unconstrained vector to estimates.
struct Packing {
    n_theta: usize,
    n_beta: usize,
    n_eta: usize,
    full: bool,
    error: ErrorModel,
}

impl Packing {
    fn new(m: &PopModel) -> Self {
        Packing {
            n_theta: m.parameters.len(),
            n_beta: m.covariates.len(),
            n_eta: m.n_eta(),
            full: m.full_omega,
            error: m.error,
        }
    }
    fn n_omega(&self) -> usize {
        if self.full {
            self.n_eta * (self.n_eta + 1) / 2
        } else {
            self.n_eta
        }
    }
    fn len(&self) -> usize {
        self.n_theta + self.n_beta + self.n_omega() + self.n_sigma()
    }
    fn n_sigma(&self) -> usize {
        match self.error {
            ErrorModel::Combined => 2,
            _ => 1,
        }
    }
    fn unpack(&self, x: &[f64]) -> PopEstimates {
        let (th, rest) = x.split_at(self.n_theta);
        let (be, rest) = rest.split_at(self.n_beta);
        let (om, sg) = rest.split_at(self.n_omega());
        let k = self.n_eta;
        // Ω = L Lᵀ with L lower triangular, log diagonal.
        let mut l = vec![0.0; k * k];
        if self.full {
            let mut it = om.iter();
            for i in 0..k {
                for j in 0..=i {
                    let v = *it.next().unwrap_or(&0.0);
                    l[i * k + j] = if i == j { v.exp() } else { v };
                }
            }
        } else {
            for i in 0..k {
                l[i * k + i] = om[i].exp();
            }
        }
        let mut omega = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                omega[i * k + j] = (0..k).map(|m| l[i * k + m] * l[j * k + m]).sum();
            }
        }
        let (sigma_add, sigma_prop) = match self.error {
            ErrorModel::Additive => (sg[0].exp(), 0.0),
            ErrorModel::Proportional => (0.0, sg[0].exp()),
            ErrorModel::Combined => (sg[0].exp(), sg[1].exp()),
        };
        PopEstimates {
            log_theta: th.to_vec(),
            beta: be.to_vec(),
            omega,
            sigma_add,
            sigma_prop,
        }
    }
    fn names(&self, m: &PopModel) -> Vec<String> {
        let mut v: Vec<String> = m.parameters.iter().map(|p| format!("log_{p}")).collect();
        v.extend(
            m.covariates
                .iter()
                .map(|c| format!("beta_{}_{}", c.parameter, c.covariate)),
        );
        if self.full {
            for i in 0..self.n_eta {
                for j in 0..=i {
                    if i == j {
                        v.push(format!("log_chol_{}", m.iiv[i]));
                    } else {
                        v.push(format!("chol_{}_{}", m.iiv[i], m.iiv[j]));
                    }
                }
            }
        } else {
            v.extend(m.iiv.iter().map(|p| format!("log_sd_eta_{p}")));
        }
        match self.error {
            ErrorModel::Additive => v.push("log_sigma_add".into()),
            ErrorModel::Proportional => v.push("log_sigma_prop".into()),
            ErrorModel::Combined => {
                v.push("log_sigma_add".into());
                v.push("log_sigma_prop".into())
            }
        }
        v
    }
}

/// FOCE-I objective over all subjects; updates the η̂ warm starts.
fn objective(
    model: &PopModel,
    est: &PopEstimates,
    subjects: &[SubjectObs],
    etas: &mut [Vec<f64>],
) -> f64 {
    let k = model.n_eta();
    let Some(omega_inv) = medtwin_infer::optim::invert_spd(&est.omega, k) else {
        return f64::INFINITY;
    };
    // Subjects in parallel; the per-subject terms are summed in subject order, so the result
    // does not depend on the number of threads.
    let terms: Vec<Option<f64>> = subjects
        .par_iter()
        .zip(etas.par_iter_mut())
        .map(|(so, eta)| {
            if so.times.is_empty() {
                return Some(0.0);
            }
            let c = conditional(model, est, &omega_inv, so, eta)?;
            *eta = c.eta;
            Some(c.m2ll)
        })
        .collect();
    terms
        .into_iter()
        .try_fold(0.0, |acc, t| t.map(|v| acc + v))
        .unwrap_or(f64::INFINITY)
}

/// Data-driven initial typical values: `V` from dose / early concentration, `CL` from a
/// half-life of a quarter of the sampling span, `KA` 1/h.
fn initial_guess(model: &PopModel, ds: &Dataset, opts: &FitOptions) -> Vec<f64> {
    let mut cmax = Vec::new();
    let mut dose = Vec::new();
    let mut span = Vec::new();
    for s in &ds.subjects {
        if let (Some(d), Some(c)) = (
            s.doses.first(),
            s.observations.iter().map(|o| o.dv).reduce(f64::max),
        ) {
            if c > 0.0 {
                cmax.push(c);
                dose.push(d.amount);
            }
        }
        if let Some(o) = s.observations.last() {
            span.push(o.time_h);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(1.0)
    };
    let v = (med(&mut dose) / med(&mut cmax)).max(1e-6);
    let ke = std::f64::consts::LN_2 / (med(&mut span) / 4.0).max(0.1);
    model
        .parameters
        .iter()
        .map(|p| {
            let given = opts.initial.iter().find(|(n, _)| n.eq_ignore_ascii_case(p));
            let val = match (given, p.as_str()) {
                (Some((_, x)), _) => *x,
                (None, "CL") => ke * v,
                (None, "V" | "V1" | "VC") => v,
                (None, "KE") => ke,
                (None, "KA") => 1.0,
                (None, "Q" | "Q2" | "Q3") => ke * v,
                (None, "V2" | "V3" | "VP") => 2.0 * v,
                (None, "ALAG") => 0.1,
                (None, "F") => 1.0,
                (None, _) => 1.0,
            };
            val.ln()
        })
        .collect()
}

/// Fit a population model by FOCE-I.
///
/// Errors: a spec that does not match the data (unknown parameters, missing covariates), no
/// observations, a non-finite objective at the start, and (proportional error only) a nonzero
/// level predicted exactly 0 ([`FitError::Spec`] naming subject, time and line).
pub fn fit(ds: &Dataset, model: &PopModel, opts: &FitOptions) -> Result<PopFit, FitError> {
    let started = std::time::Instant::now();
    let mut model = model.clone();
    model.check(ds)?;
    fill_references(&mut model, ds);
    let subjects: Vec<SubjectObs> = ds.subjects.iter().map(SubjectObs::new).collect();
    let n_obs: usize = subjects.iter().map(|s| s.y.len()).sum();
    if n_obs == 0 {
        return Err(FitError::NoData);
    }
    let pack = Packing::new(&model);
    let mut x0 = initial_guess(&model, ds, opts);
    x0.extend(std::iter::repeat_n(0.0, pack.n_beta));
    if model.full_omega {
        for i in 0..pack.n_eta {
            for j in 0..=i {
                x0.push(if i == j { (0.3f64).ln() } else { 0.0 });
            }
        }
    } else {
        x0.extend(std::iter::repeat_n((0.3f64).ln(), pack.n_eta));
    }
    let mut ys: Vec<f64> = subjects.iter().flat_map(|s| s.y.iter().copied()).collect();
    ys.sort_by(f64::total_cmp);
    let ysd = (ys[ys.len() / 2].abs() * 0.1).max(1e-6);
    match model.error {
        ErrorModel::Additive => x0.push(ysd.ln()),
        ErrorModel::Proportional => x0.push((0.1f64).ln()),
        ErrorModel::Combined => {
            x0.push((ysd * 0.5).ln());
            x0.push((0.1f64).ln())
        }
    }
    debug_assert_eq!(x0.len(), pack.len());
    let k = model.n_eta();
    let mut etas = vec![vec![0.0; k]; subjects.len()];
    let start_ofv = objective(&model, &pack.unpack(&x0), &subjects, &mut etas);
    if !start_ofv.is_finite() {
        return Err(FitError::BadStart(format!(
            "initial log typical values {:?}",
            &x0[..pack.n_theta]
        )));
    }
    if model.error == ErrorModel::Proportional {
        zero_prediction_check(&model, &pack.unpack(&x0), &subjects)?;
    }
    let mut f = |x: &[f64]| objective(&model, &pack.unpack(x), &subjects, &mut etas);
    let h = vec![1e-4; x0.len()];
    let mut best = bfgs(&mut f, &x0, &h, 1e-3, 1e-12, 2.0, opts.max_evals);
    let mut evaluations = best.evals;
    for _ in 0..opts.restarts {
        // A Nelder–Mead look around the quasi-Newton optimum, then quasi-Newton again if it moved.
        let m = nelder_mead(&mut f, &best.x, &vec![0.05; x0.len()], 1e-8, 60 * x0.len());
        evaluations += m.evals;
        if m.f >= best.f - 1e-6 {
            // A simplex around the point finds nothing better: a local optimum (BFGS's own
            // stopping rule can end on finite-difference noise just short of its tolerance).
            best.converged = true;
            break;
        }
        let b = bfgs(&mut f, &m.x, &h, 1e-3, 1e-12, 2.0, opts.max_evals);
        evaluations += b.evals;
        best = if b.f <= m.f { b } else { m };
    }
    let standard_errors = if opts.standard_errors {
        let mut half = |x: &[f64]| 0.5 * f(x);
        laplace(&mut half, &best.x, &vec![1e-3; best.x.len()]).map(|cov| {
            let n = best.x.len();
            pack.names(&model)
                .into_iter()
                .enumerate()
                .map(|(i, name)| (name, best.x[i], cov[i * n + i].max(0.0).sqrt()))
                .collect()
        })
    } else {
        None
    };
    let estimates = pack.unpack(&best.x);
    let mut etas = vec![vec![0.0; k]; subjects.len()];
    let ofv = objective(&model, &estimates, &subjects, &mut etas);
    let individuals = diagnostics(&model, &estimates, &subjects, &etas)?;
    Ok(PopFit {
        model,
        estimates,
        standard_errors,
        ofv,
        log_likelihood: -0.5 * ofv,
        evaluations,
        converged: best.converged,
        wall_s: started.elapsed().as_secs_f64(),
        n_observations: n_obs,
        individuals,
    })
}

/// Under a purely proportional residual error a nonzero level whose prediction is exactly 0
/// (a pre-dose level, or one inside an absorption lag) has zero variance: its likelihood is 0
/// whatever the parameters, and the objective is stuck at the variance floor. Refuse it by
/// subject, time and line instead of returning the starting values as a "fit".
fn zero_prediction_check(
    model: &PopModel,
    est: &PopEstimates,
    subjects: &[SubjectObs],
) -> Result<(), FitError> {
    let k = model.n_eta();
    for so in subjects {
        let f = predict(model, est, so.subject, &so.times, &vec![0.0; k])?;
        if let Some(i) = (0..f.len()).find(|&i| f[i] == 0.0 && so.y[i] != 0.0) {
            let o = &so.subject.observations[i];
            return Err(FitError::Spec(format!(
                "subject {}, level {} at {} h (line {}): the model predicts exactly 0 here (before any dose), which a proportional residual error cannot explain; use --error combined or mark the level MDV=1",
                so.subject.id, o.dv, o.time_h, o.line
            )));
        }
    }
    Ok(())
}

/// FOCE-I `−2 log L` of `ds` under `model` at given estimates (e.g. another program's, to compare
/// likelihood approximations at the same point). Covariate references are filled from the data
/// when unset. Errors as [`fit`].
pub fn objective_at(ds: &Dataset, model: &PopModel, est: &PopEstimates) -> Result<f64, FitError> {
    let mut model = model.clone();
    model.check(ds)?;
    fill_references(&mut model, ds);
    let subjects: Vec<SubjectObs> = ds.subjects.iter().map(SubjectObs::new).collect();
    let mut etas = vec![vec![0.0; model.n_eta()]; subjects.len()];
    // Two passes so the conditional modes start from converged values.
    objective(&model, est, &subjects, &mut etas);
    Ok(objective(&model, est, &subjects, &mut etas))
}

/// Set covariate reference values (median, or most frequent for categorical) from the data.
fn fill_references(model: &mut PopModel, ds: &Dataset) {
    for c in model.covariates.iter_mut() {
        if c.reference.is_some() {
            continue;
        }
        let mut v: Vec<f64> = ds
            .subjects
            .iter()
            .filter_map(|s| s.covariates.get(&c.covariate).copied())
            .collect();
        v.sort_by(f64::total_cmp);
        c.reference = Some(match c.form {
            CovariateForm::Categorical => {
                let mut best = (0, v.first().copied().unwrap_or(0.0));
                let mut i = 0;
                while i < v.len() {
                    let j = v[i..].iter().take_while(|x| **x == v[i]).count();
                    if j > best.0 {
                        best = (j, v[i]);
                    }
                    i += j;
                }
                best.1
            }
            _ => {
                let n = v.len();
                if n == 0 {
                    1.0
                } else if n % 2 == 1 {
                    v[n / 2]
                } else {
                    0.5 * (v[n / 2 - 1] + v[n / 2])
                }
            }
        });
    }
}

fn diagnostics(
    model: &PopModel,
    est: &PopEstimates,
    subjects: &[SubjectObs],
    etas: &[Vec<f64>],
) -> Result<Vec<IndividualFit>, FitError> {
    let k = model.n_eta();
    let omega_inv = medtwin_infer::optim::invert_spd(&est.omega, k)
        .ok_or_else(|| FitError::Spec("Ω is not positive definite at the estimates".into()))?;
    let mut out = Vec::new();
    for (so, eta) in subjects.iter().zip(etas) {
        let s = so.subject;
        let pred = predict(model, est, s, &so.times, &vec![0.0; k])?;
        let (eta, ipred, cwres) = if so.times.is_empty() {
            (eta.clone(), Vec::new(), Vec::new())
        } else {
            let c = conditional(model, est, &omega_inv, so, eta)
                .ok_or_else(|| FitError::Spec(format!("subject {}: no conditional mode", s.id)))?;
            (c.eta, c.f, c.cwres)
        };
        let iwres = ipred
            .iter()
            .zip(&so.y)
            .map(|(f, y)| (y - f) / residual_variance(est, *f).sqrt())
            .collect();
        let p = individual_params(model, est, s, &eta)?;
        let parameters = named_values(&model.pk, &p);
        out.push(IndividualFit {
            id: s.id.clone(),
            eta,
            parameters,
            time_h: so.times.clone(),
            dv: so.y.clone(),
            pred,
            ipred,
            iwres,
            cwres,
        });
    }
    Ok(out)
}

/// `(name, value)` of the parameters a structural model uses.
pub fn named_values(pk: &PkModel, p: &PkParams) -> Vec<(String, f64)> {
    pk.parameter_names()
        .iter()
        .map(|&n| {
            let v = match n {
                "CL" => p.cl_l_per_h,
                "V" => p.v1_l,
                "Q" => p.q2_l_per_h,
                "V2" => p.v2_l,
                "Q3" => p.q3_l_per_h,
                "V3" => p.v3_l,
                "KA" => p.ka_per_h,
                _ => f64::NAN,
            };
            (n.to_string(), v)
        })
        .collect()
}

/// One time bin of a visual predictive check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpcBin {
    /// Bin bounds and median observation time, h.
    pub t_lo_h: f64,
    /// Upper bound, h.
    pub t_hi_h: f64,
    /// Median time of the observations in the bin, h.
    pub t_mid_h: f64,
    /// Observed 5th, 50th and 95th percentiles.
    pub observed: [f64; 3],
    /// Simulated percentiles (5/50/95): for each, the 5th, 50th and 95th percentile across
    /// replicates (`simulated[p] = [lo, median, hi]`).
    pub simulated: [[f64; 3]; 3],
}

/// Visual predictive check (Holford 2005, PAGE 14 abstr 738; Bergstrand et al. 2011, AAPS J
/// 13:143): `n_rep` replicates of the data set simulated from the fitted model (η ~ N(0, Ω),
/// residual error), binned into `n_bins` time bins with equal observation counts.
pub fn vpc(fit: &PopFit, ds: &Dataset, n_bins: usize, n_rep: usize, seed: u64) -> Vec<VpcBin> {
    let k = fit.model.n_eta();
    let l = cholesky(&fit.estimates.omega, k).unwrap_or_else(|| vec![0.0; k * k]);
    let mut times: Vec<f64> = ds
        .subjects
        .iter()
        .flat_map(|s| s.observations.iter().map(|o| o.time_h))
        .collect();
    times.sort_by(f64::total_cmp);
    if times.is_empty() || n_bins == 0 {
        return Vec::new();
    }
    let mut edges = vec![times[0]];
    for b in 1..n_bins {
        edges.push(times[b * times.len() / n_bins]);
    }
    edges.push(times[times.len() - 1]);
    edges.dedup();
    let nb = edges.len() - 1;
    let bin_of = |t: f64| {
        (0..nb)
            .find(|&b| t < edges[b + 1] || b == nb - 1)
            .unwrap_or(nb - 1)
    };
    let mut obs: Vec<Vec<f64>> = vec![Vec::new(); nb];
    let mut tb: Vec<Vec<f64>> = vec![Vec::new(); nb];
    for s in &ds.subjects {
        for o in &s.observations {
            obs[bin_of(o.time_h)].push(o.dv);
            tb[bin_of(o.time_h)].push(o.time_h);
        }
    }
    let mut sims: Vec<[Vec<f64>; 3]> = vec![[Vec::new(), Vec::new(), Vec::new()]; nb];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..n_rep {
        let mut per_bin: Vec<Vec<f64>> = vec![Vec::new(); nb];
        for s in &ds.subjects {
            let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
            let eta: Vec<f64> = (0..k)
                .map(|i| (0..=i).map(|j| l[i * k + j] * z[j]).sum())
                .collect();
            let times: Vec<f64> = s.observations.iter().map(|o| o.time_h).collect();
            let Ok(f) = predict(&fit.model, &fit.estimates, s, &times, &eta) else {
                continue;
            };
            for (t, fy) in times.iter().zip(f) {
                let e: f64 = StandardNormal.sample(&mut rng);
                per_bin[bin_of(*t)].push(fy + e * residual_variance(&fit.estimates, fy).sqrt());
            }
        }
        for (b, v) in per_bin.iter_mut().enumerate() {
            v.sort_by(f64::total_cmp);
            for (p, q) in [0.05, 0.5, 0.95].iter().enumerate() {
                sims[b][p].push(quantile(v, *q));
            }
        }
    }
    (0..nb)
        .map(|b| {
            obs[b].sort_by(f64::total_cmp);
            tb[b].sort_by(f64::total_cmp);
            let mut sim = [[0.0; 3]; 3];
            for (p, s) in sim.iter_mut().enumerate() {
                sims[b][p].sort_by(f64::total_cmp);
                *s = [
                    quantile(&sims[b][p], 0.05),
                    quantile(&sims[b][p], 0.5),
                    quantile(&sims[b][p], 0.95),
                ];
            }
            VpcBin {
                t_lo_h: edges[b],
                t_hi_h: edges[b + 1],
                t_mid_h: quantile(&tb[b], 0.5),
                observed: [
                    quantile(&obs[b], 0.05),
                    quantile(&obs[b], 0.5),
                    quantile(&obs[b], 0.95),
                ],
                simulated: sim,
            }
        })
        .collect()
}
