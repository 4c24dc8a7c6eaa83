//! Multi-start maximum-likelihood fits of a PEtab problem: the estimated parameters
//! (`estimate` = 1) are optimised on their `parameterScale` within their bounds.
//!
//! Default optimiser ([`Optimizer::FisherLm`]): a box-constrained Levenberg–Marquardt trust
//! region on the Fisher information (Gauss–Newton for the noise model: per measurement the
//! transformed simulation u = h(y) and the noise parameter σ, with expected curvature 1/σ² for u
//! and 2/σ² (normal) or 1/σ² (Laplace) for σ), the role Fides' FIM approximation plays in
//! pyPESTO. The Jacobians of u and σ with respect to the scaled parameters are central finite
//! differences (one-sided at a bound), evaluated in parallel over parameters; the gradient
//! follows from them by the chain rule. The previous projected BFGS on a finite-difference
//! gradient of the objective remains as [`Optimizer::Bfgs`] ([`minimize_box`]).
//!
//! Starts: with `nominal_start`, start 0 is the nominal vector; the others are a Latin
//! hypercube (or uniform) sample of the scaled box (pyPESTO's samplers), drawn from a ChaCha8
//! stream seeded by `seed`; a start whose simulation fails is replaced by a uniform draw (up
//! to 20).

use crate::problem::{Noise, Transform};
use crate::{Evaluator, PetabError};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Options of [`fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Number of starts (≥ 1); the first is the nominal vector.
    pub starts: usize,
    /// Seed of the start sampler.
    pub seed: u64,
    /// Objective evaluations per start.
    pub max_evals: usize,
    /// Finite-difference step on the parameter scale.
    pub fd_step: f64,
    /// Gradient tolerance (largest component, objective units per scaled unit).
    pub gtol: f64,
    /// Local optimiser.
    pub optimizer: Optimizer,
    /// Start sampler.
    pub sampler: Sampler,
    /// Whether start 0 is the nominal vector (else every start is sampled).
    pub nominal_start: bool,
    /// Wall-time limit per start, seconds (None: only `max_evals`).
    pub time_limit: Option<f64>,
    /// How [`Optimizer::FisherLm`] gets its Jacobians.
    pub gradient: Gradient,
}

/// Jacobians of the Fisher Levenberg–Marquardt optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Gradient {
    /// Forward sensitivities ([`Evaluator::sensitivities`]); central finite differences where
    /// the sensitivity simulation fails (e.g. models with events), and for the rest of the
    /// fit after two such failures.
    #[default]
    Sensitivities,
    /// Central finite differences of the simulated outputs (2 × parameters simulations).
    FiniteDifferences,
}

/// Local optimiser of [`fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Optimizer {
    /// Levenberg–Marquardt trust region on the Fisher information (see the module docs).
    #[default]
    FisherLm,
    /// Projected BFGS on a finite-difference gradient ([`minimize_box`]).
    Bfgs,
}

/// Start sampler of [`fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Sampler {
    /// Latin hypercube in the scaled box (one start per stratum of every parameter).
    #[default]
    LatinHypercube,
    /// Independent uniform draws in the scaled box.
    Uniform,
}

/// `s` among the named `choices`; the error names the option and every choice.
fn choose<T: Copy>(what: &str, s: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|c| c.0 == s)
        .map(|c| c.1)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|c| c.0).collect();
            format!("unknown {what} '{s}' ({})", names.join(", "))
        })
}

/// `sens` or `fd` (the CLI's `--gradient`, Python's `gradient=`). Error: `unknown gradient
/// 'x' (sens, fd)`.
impl std::str::FromStr for Gradient {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let choices = [
            ("sens", Gradient::Sensitivities),
            ("fd", Gradient::FiniteDifferences),
        ];
        choose("gradient", s, &choices)
    }
}

/// `lm` or `bfgs` (the CLI's `--optimizer`, Python's `optimizer=`). Error: `unknown optimizer
/// 'x' (lm, bfgs)`.
impl std::str::FromStr for Optimizer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let choices = [("lm", Optimizer::FisherLm), ("bfgs", Optimizer::Bfgs)];
        choose("optimizer", s, &choices)
    }
}

/// `lhs` or `uniform` (the CLI's `--sampler`, Python's `sampler=`). Error: `unknown sampler
/// 'x' (lhs, uniform)`.
impl std::str::FromStr for Sampler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let choices = [
            ("lhs", Sampler::LatinHypercube),
            ("uniform", Sampler::Uniform),
        ];
        choose("sampler", s, &choices)
    }
}

impl Default for FitOptions {
    /// 10 starts, seed 0, 4000 evaluations per start, step 1e-5, gtol 1e-3, Fisher LM on
    /// forward sensitivities, Latin hypercube, nominal start 0, no time limit.
    fn default() -> Self {
        FitOptions {
            starts: 10,
            seed: 0,
            max_evals: 4000,
            fd_step: 1e-5,
            gtol: 1e-3,
            optimizer: Optimizer::FisherLm,
            sampler: Sampler::LatinHypercube,
            nominal_start: true,
            time_limit: None,
            gradient: Gradient::Sensitivities,
        }
    }
}

/// Result of one start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartResult {
    /// Start index (0 = nominal).
    pub start: usize,
    /// Objective (−llh) at the start (∞ if the simulation failed).
    pub initial_objective: f64,
    /// Best objective reached.
    pub objective: f64,
    /// Estimated parameters at the optimum, on their scales (order of [`FitResult::ids`]).
    pub x: Vec<f64>,
    /// Objective evaluations (simulations of every condition).
    pub evals: usize,
    /// Whether the optimiser met its gradient or progress criterion before the budget (false
    /// when no start point with a finite objective was found in 20 draws).
    pub converged: bool,
    /// Start points drawn (random starts whose simulation fails are redrawn).
    pub draws: usize,
    /// Whether this start is the nominal vector.
    pub nominal: bool,
    /// Wall time of this start, seconds.
    pub seconds: f64,
}

/// Result of [`fit`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitResult {
    /// Ids of the estimated parameters.
    pub ids: Vec<String>,
    /// Their scales (`lin`, `log`, `log10`).
    pub scales: Vec<String>,
    /// Objective (−llh) at the nominal parameters.
    pub nominal_objective: f64,
    /// Every start, sorted by objective (best first).
    pub starts: Vec<StartResult>,
    /// Total wall time, seconds.
    pub seconds: f64,
}

impl FitResult {
    /// The best start.
    pub fn best(&self) -> &StartResult {
        &self.starts[0]
    }

    /// Starts whose objective is within `tol` of the best (pyPESTO's convergence count; 0.1
    /// is customary), and how many of them are sampled starts (not the nominal start).
    pub fn within(&self, tol: f64) -> (usize, usize) {
        let best = self.best().objective;
        let near = self.starts.iter().filter(|s| s.objective <= best + tol);
        let all = near.clone().count();
        (all, near.filter(|s| !s.nominal).count())
    }
}

/// Multi-start fit; see the module documentation.
#[allow(clippy::needless_range_loop)]
///
/// Errors: [`PetabError::Fit`] (no estimated parameters, zero starts, infinite bounds),
/// or the error of the nominal evaluation.
pub fn fit(ev: &Evaluator, opts: &FitOptions) -> Result<FitResult, PetabError> {
    let t0 = Instant::now();
    let pars = &ev.problem.parameters;
    let est: Vec<usize> = (0..pars.len()).filter(|&i| pars[i].estimate).collect();
    if est.is_empty() || opts.starts == 0 {
        return Err(PetabError::Fit(
            "no estimated parameters or zero starts".into(),
        ));
    }
    let lo: Vec<f64> = est
        .iter()
        .map(|&i| pars[i].scale.to_scale(pars[i].lower))
        .collect();
    let hi: Vec<f64> = est
        .iter()
        .map(|&i| pars[i].scale.to_scale(pars[i].upper))
        .collect();
    if lo.iter().chain(&hi).any(|b| !b.is_finite()) {
        return Err(PetabError::Fit(
            "every estimated parameter needs finite bounds on its scale".into(),
        ));
    }
    let nominal = ev.problem.nominal();
    let nominal_objective = -ev.llh(&nominal)?;
    let theta_of = |x: &[f64]| {
        let mut th = nominal.clone();
        for (k, &i) in est.iter().enumerate() {
            th[i] = pars[i].scale.to_lin(x[k].clamp(lo[k], hi[k]));
        }
        th
    };
    let mut objective = |x: &[f64]| -> f64 {
        match ev.llh(&theta_of(x)) {
            Ok(l) if l.is_finite() => -l,
            _ => f64::INFINITY,
        }
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let n_est = est.len();
    // Latin hypercube: per parameter a random permutation of the strata.
    let sampled = opts.starts;
    let strata: Vec<Vec<usize>> = (0..n_est)
        .map(|_| {
            let mut p: Vec<usize> = (0..sampled).collect();
            for i in (1..p.len()).rev() {
                let j = rng.random_range(0..=i);
                p.swap(i, j);
            }
            p
        })
        .collect();
    // After two failed sensitivity simulations (e.g. the BDF cannot step over a
    // discontinuity of a piecewise input with the sensitivities in its error test) the fit
    // uses finite differences for the rest of the run.
    let sens_failures = AtomicUsize::new(0);
    let mut starts = Vec::new();
    for s in 0..opts.starts {
        let ts = Instant::now();
        let nominal_start = s == 0 && opts.nominal_start;
        let mut x0: Vec<f64> = if nominal_start {
            est.iter()
                .enumerate()
                .map(|(k, &i)| pars[i].scale.to_scale(pars[i].nominal).clamp(lo[k], hi[k]))
                .collect()
        } else {
            (0..n_est)
                .map(|k| match opts.sampler {
                    Sampler::LatinHypercube => {
                        let u: f64 = rng.random_range(0.0..1.0);
                        lo[k] + (hi[k] - lo[k]) * (strata[k][s] as f64 + u) / sampled as f64
                    }
                    Sampler::Uniform => rng.random_range(lo[k]..=hi[k]),
                })
                .collect()
        };
        let mut f0 = objective(&x0);
        // Starts where the model cannot be simulated are redrawn uniformly (up to 20 times).
        let mut draws = 1;
        while !nominal_start && !f0.is_finite() && draws <= 20 {
            x0 = (0..n_est)
                .map(|k| rng.random_range(lo[k]..=hi[k]))
                .collect();
            f0 = objective(&x0);
            draws += 1;
        }
        let deadline = opts
            .time_limit
            .map(|t| ts + std::time::Duration::from_secs_f64(t));
        let m = match opts.optimizer {
            Optimizer::Bfgs => minimize_box(&mut objective, &x0, &lo, &hi, opts),
            Optimizer::FisherLm => {
                let eval = |x: &[f64]| -> Option<Vec<(f64, f64)>> { outputs(ev, &theta_of(x)) };
                let kinds: Vec<(f64, Transform, Noise)> = ev
                    .problem
                    .measurements
                    .iter()
                    .map(|m| {
                        let o = &ev.problem.observables[m.observable];
                        (m.value, o.transform, o.noise)
                    })
                    .collect();
                let sens = |x: &[f64]| -> Option<Vec<Vec<(f64, f64)>>> {
                    if sens_failures.load(Ordering::Relaxed) >= 2 {
                        return None;
                    }
                    let r = sens_columns(ev, &est, &theta_of(x));
                    if r.is_none() {
                        sens_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    r
                };
                let sens: Option<&SensCols<'_>> = match opts.gradient {
                    Gradient::Sensitivities => Some(&sens),
                    Gradient::FiniteDifferences => None,
                };
                minimize_fisher(&eval, sens, &kinds, &x0, &lo, &hi, opts, deadline)
            }
        };
        starts.push(StartResult {
            start: s,
            initial_objective: f0,
            objective: m.f,
            x: m.x,
            evals: m.evals + draws,
            converged: m.converged && m.f.is_finite(),
            draws,
            nominal: nominal_start,
            seconds: ts.elapsed().as_secs_f64(),
        });
    }
    starts.sort_by(|a, b| a.objective.total_cmp(&b.objective));
    Ok(FitResult {
        ids: est.iter().map(|&i| pars[i].id.clone()).collect(),
        scales: est
            .iter()
            .map(|&i| format!("{:?}", pars[i].scale).to_lowercase())
            .collect(),
        nominal_objective,
        starts,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Result of [`minimize_box`].
#[derive(Debug, Clone, PartialEq)]
pub struct BoxMinimum {
    /// Minimiser (inside the box).
    pub x: Vec<f64>,
    /// Objective at `x`.
    pub f: f64,
    /// Objective evaluations.
    pub evals: usize,
    /// Whether the projected gradient fell below `gtol` or the objective stopped decreasing
    /// (relative change < 1e-10 over 3 iterations) before the budget ran out.
    pub converged: bool,
}

/// Finite-difference gradient inside the box `[lo, hi]`: central differences of step `h`,
/// one-sided where a central point would leave the box.
fn fd_grad(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    fx: f64,
    lo: &[f64],
    hi: &[f64],
    h: f64,
    evals: &mut usize,
) -> Vec<f64> {
    let mut g = vec![0.0; x.len()];
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        let (up, down) = (x[i] + h <= hi[i], x[i] - h >= lo[i]);
        let (a, b) = match (up, down) {
            (true, true) => (x[i] + h, x[i] - h),
            (true, false) => (x[i] + h, x[i]),
            _ => (x[i], x[i] - h),
        };
        xp[i] = a;
        let fa = if a == x[i] {
            fx
        } else {
            *evals += 1;
            f(&xp)
        };
        xp[i] = b;
        let fb = if b == x[i] {
            fx
        } else {
            *evals += 1;
            f(&xp)
        };
        xp[i] = x[i];
        g[i] = (fa - fb) / (a - b);
        if !g[i].is_finite() {
            g[i] = 0.0;
        }
    }
    g
}

/// Minimise `f` over the box `[lo, hi]` from `x0` by a projected BFGS (Bertsekas, *Nonlinear
/// Programming*, §2.3; the active-set handling of L-BFGS-B, Byrd et al. 1995, simplified): the
/// quasi-Newton direction over the free coordinates (those not at a bound with the gradient
/// pointing out of the box), a backtracking Armijo search along the projected path, inverse
/// Hessian updates when `sᵀy > 0` (initial scaling of Nocedal & Wright eq. 6.20), resets to
/// steepest descent when a search fails. No coordinate moves more than 1 (scaled units) per
/// iteration.
pub fn minimize_box(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    opts: &FitOptions,
) -> BoxMinimum {
    let n = x0.len();
    let mut evals = 1;
    let mut x: Vec<f64> = (0..n).map(|i| x0[i].clamp(lo[i], hi[i])).collect();
    let mut fx = f(&x);
    let mut g = fd_grad(f, &x, fx, lo, hi, opts.fd_step, &mut evals);
    let mut hinv = identity(n);
    let mut fresh = true;
    let mut stalls = 0;
    let mut converged = false;
    while evals < opts.max_evals && fx.is_finite() {
        let free: Vec<bool> = (0..n)
            .map(|i| !((x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0)))
            .collect();
        let pg = (0..n)
            .filter(|&i| free[i])
            .map(|i| g[i].abs())
            .fold(0.0, f64::max);
        if pg < opts.gtol {
            converged = true;
            break;
        }
        let mut d: Vec<f64> = (0..n)
            .map(|i| {
                if !free[i] {
                    return 0.0;
                }
                -(0..n)
                    .filter(|&j| free[j])
                    .map(|j| hinv[i * n + j] * g[j])
                    .sum::<f64>()
            })
            .collect();
        if d.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>() >= 0.0 {
            d = (0..n).map(|i| if free[i] { -g[i] } else { 0.0 }).collect();
            hinv = identity(n);
        }
        let big = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if big > 1.0 {
            d.iter_mut().for_each(|v| *v /= big);
        }
        let mut alpha = 1.0;
        let mut next = None;
        for _ in 0..30 {
            let xn: Vec<f64> = (0..n)
                .map(|i| (x[i] + alpha * d[i]).clamp(lo[i], hi[i]))
                .collect();
            let fxn = f(&xn);
            evals += 1;
            let dec: f64 = (0..n).map(|i| g[i] * (xn[i] - x[i])).sum();
            if fxn.is_finite() && fxn <= fx + 1e-4 * dec {
                next = Some((xn, fxn));
                break;
            }
            alpha *= 0.5;
        }
        let Some((xn, fxn)) = next else {
            if fresh {
                converged = true;
                break;
            }
            hinv = identity(n);
            fresh = true;
            continue;
        };
        let gn = fd_grad(f, &xn, fxn, lo, hi, opts.fd_step, &mut evals);
        let s: Vec<f64> = (0..n).map(|i| xn[i] - x[i]).collect();
        let y: Vec<f64> = (0..n).map(|i| gn[i] - g[i]).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        if sy > 1e-12 {
            if fresh {
                let yy: f64 = y.iter().map(|v| v * v).sum();
                hinv = identity(n);
                hinv.iter_mut().for_each(|v| *v *= sy / yy);
            }
            bfgs_update(&mut hinv, &s, &y, sy);
            fresh = false;
        }
        stalls = if fx - fxn < 1e-10 * (1.0 + fx.abs()) {
            stalls + 1
        } else {
            0
        };
        x = xn;
        fx = fxn;
        g = gn;
        if stalls >= 3 {
            converged = true;
            break;
        }
    }
    BoxMinimum {
        x,
        f: fx,
        evals,
        converged,
    }
}

/// Per-measurement outputs (u, σ) at a scaled parameter vector (None: not simulable).
type Outputs<'a> = dyn Fn(&[f64]) -> Option<Vec<(f64, f64)>> + Sync + 'a;

/// Jacobian columns `cols[a][i] = (∂u_i/∂x_a, ∂σ_i/∂x_a)` at a scaled parameter vector (None:
/// not available there).
type SensCols<'a> = dyn Fn(&[f64]) -> Option<Vec<Vec<(f64, f64)>>> + Sync + 'a;

/// Jacobian columns of (u = h(y), σ) with respect to the scaled estimated parameters at
/// `theta`, by forward sensitivities; None when the sensitivity simulation fails or a value
/// is not finite.
fn sens_columns(ev: &Evaluator, est: &[usize], theta: &[f64]) -> Option<Vec<Vec<(f64, f64)>>> {
    let rs = ev.sensitivities(theta, est).ok()?;
    let pars = &ev.problem.parameters;
    // dθ/dx for each estimated parameter.
    let dth: Vec<f64> = est
        .iter()
        .map(|&i| match pars[i].scale {
            crate::problem::Scale::Lin => 1.0,
            crate::problem::Scale::Log => theta[i],
            crate::problem::Scale::Log10 => theta[i] * std::f64::consts::LN_10,
        })
        .collect();
    let mut cols = vec![Vec::with_capacity(rs.residuals.len()); est.len()];
    for (r, d) in rs.residuals.iter().zip(&rs.d) {
        let m = &ev.problem.measurements[r.measurement];
        let du = match ev.problem.observables[m.observable].transform {
            Transform::Lin => 1.0,
            Transform::Log => 1.0 / r.simulated,
            Transform::Log10 => 1.0 / (r.simulated * std::f64::consts::LN_10),
        };
        for (a, &(dy, ds)) in d.iter().enumerate() {
            let c = (du * dy * dth[a], ds * dth[a]);
            if !(c.0.is_finite() && c.1.is_finite()) {
                return None;
            }
            cols[a].push(c);
        }
    }
    Some(cols)
}

/// Per measurement (transformed simulation u = h(y), noise parameter σ) at `theta`; None when
/// the simulation fails or a value is not finite.
fn outputs(ev: &Evaluator, theta: &[f64]) -> Option<Vec<(f64, f64)>> {
    let res = ev.residuals(theta).ok()?;
    let mut out = Vec::with_capacity(res.len());
    for r in &res {
        let m = &ev.problem.measurements[r.measurement];
        let t = ev.problem.observables[m.observable].transform;
        let u = match t {
            Transform::Lin => r.simulated,
            Transform::Log => r.simulated.ln(),
            Transform::Log10 => r.simulated.log10(),
        };
        if !(u.is_finite() && r.sigma.is_finite() && r.sigma > 0.0 && r.llh.is_finite()) {
            return None;
        }
        out.push((u, r.sigma));
    }
    Some(out)
}

/// Negative log-likelihood of the outputs, and per measurement (∂/∂u, ∂/∂σ, Fisher weight of u,
/// Fisher weight of σ).
fn nllh_parts(out: &[(f64, f64)], kinds: &[(f64, Transform, Noise)]) -> (f64, Vec<[f64; 4]>) {
    let mut f = 0.0;
    let mut parts = Vec::with_capacity(out.len());
    for (&(u, s), &(m, t, noise)) in out.iter().zip(kinds) {
        let y = match t {
            Transform::Lin => u,
            Transform::Log => u.exp(),
            Transform::Log10 => 10f64.powf(u),
        };
        f -= crate::objective::log_density(m, y, s, t, noise);
        let hm = match t {
            Transform::Lin => m,
            Transform::Log => m.ln(),
            Transform::Log10 => m.log10(),
        };
        let r = hm - u;
        parts.push(match noise {
            Noise::Normal => [
                -r / (s * s),
                1.0 / s - r * r / (s * s * s),
                1.0 / (s * s),
                2.0 / (s * s),
            ],
            Noise::Laplace => [
                -r.signum() / s,
                1.0 / s - r.abs() / (s * s),
                1.0 / (s * s),
                1.0 / (s * s),
            ],
        });
    }
    (f, parts)
}

/// Minimise the negative log-likelihood over the box `[lo, hi]` from `x0` by the Fisher
/// Levenberg–Marquardt trust region of the module docs. `eval` gives the per-measurement
/// outputs (u, σ) at a scaled parameter vector; `sens`, when given, its Jacobian columns
/// (finite differences of `eval` where it gives None).
#[allow(clippy::too_many_arguments)]
fn minimize_fisher(
    eval: &Outputs<'_>,
    sens: Option<&SensCols<'_>>,
    kinds: &[(f64, Transform, Noise)],
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    opts: &FitOptions,
    deadline: Option<Instant>,
) -> BoxMinimum {
    let n = x0.len();
    let mut x: Vec<f64> = (0..n).map(|i| x0[i].clamp(lo[i], hi[i])).collect();
    let mut evals = 1;
    let Some(mut out) = eval(&x) else {
        return BoxMinimum {
            x,
            f: f64::INFINITY,
            evals,
            converged: false,
        };
    };
    let (mut fx, mut parts) = nllh_parts(&out, kinds);
    let h = opts.fd_step.max(1e-8);
    // Jacobian columns of (u, σ) by central differences in parallel over parameters.
    let jacobian = |x: &[f64], out: &[(f64, f64)]| -> (Vec<Vec<(f64, f64)>>, usize) {
        if let Some(cols) = sens.and_then(|s| s(x)) {
            return (cols, 1);
        }
        let cols: Vec<(Vec<(f64, f64)>, usize)> = (0..n)
            .into_par_iter()
            .map(|k| {
                let (up, down) = (x[k] + h <= hi[k], x[k] - h >= lo[k]);
                let mut xp = x.to_vec();
                let mut e = 0;
                let mut at = |v: f64| {
                    xp[k] = v;
                    e += 1;
                    eval(&xp)
                };
                let plus = if up { at(x[k] + h) } else { None };
                let minus = if down { at(x[k] - h) } else { None };
                let col = match (plus, minus) {
                    (Some(p), Some(m)) => p
                        .iter()
                        .zip(&m)
                        .map(|(a, b)| ((a.0 - b.0) / (2.0 * h), (a.1 - b.1) / (2.0 * h)))
                        .collect(),
                    (Some(p), None) => p
                        .iter()
                        .zip(out)
                        .map(|(a, b)| ((a.0 - b.0) / h, (a.1 - b.1) / h))
                        .collect(),
                    (None, Some(m)) => out
                        .iter()
                        .zip(&m)
                        .map(|(a, b)| ((a.0 - b.0) / h, (a.1 - b.1) / h))
                        .collect(),
                    (None, None) => vec![(0.0, 0.0); out.len()],
                };
                (col, e)
            })
            .collect();
        let e = cols.iter().map(|c| c.1).sum();
        (cols.into_iter().map(|c| c.0).collect(), e)
    };
    // Gradient and Fisher information from the Jacobian.
    let model = |cols: &[Vec<(f64, f64)>], parts: &[[f64; 4]]| -> (Vec<f64>, Vec<f64>) {
        let mut g = vec![0.0; n];
        let mut fim = vec![0.0; n * n];
        for (i, p) in parts.iter().enumerate() {
            for a in 0..n {
                let (ua, sa) = cols[a][i];
                g[a] += p[0] * ua + p[1] * sa;
                if ua == 0.0 && sa == 0.0 {
                    continue;
                }
                for b in a..n {
                    let (ub, sb) = cols[b][i];
                    fim[a * n + b] += p[2] * ua * ub + p[3] * sa * sb;
                }
            }
        }
        for a in 0..n {
            for b in 0..a {
                fim[a * n + b] = fim[b * n + a];
            }
        }
        (g, fim)
    };
    let (cols, e) = jacobian(&x, &out);
    evals += e;
    let (mut g, mut fim) = model(&cols, &parts);
    let mut lambda = 1e-3;
    let mut nu = 2.0;
    let mut stalls = 0;
    let mut converged = false;
    while evals < opts.max_evals && deadline.is_none_or(|d| Instant::now() < d) {
        let free: Vec<usize> = (0..n)
            .filter(|&i| !((x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0)))
            .collect();
        let pg = free.iter().map(|&i| g[i].abs()).fold(0.0, f64::max);
        if pg < opts.gtol {
            converged = true;
            break;
        }
        // Projected step: coordinates whose step would leave the box are fixed at the bound
        // and the damped system is solved again for the rest (until no step leaves the box).
        let dmax = free
            .iter()
            .map(|&i| fim[i * n + i])
            .fold(0.0f64, f64::max)
            .max(1e-12);
        let mut fixed: Vec<Option<f64>> = (0..n)
            .map(|i| if free.contains(&i) { None } else { Some(0.0) })
            .collect();
        let mut step = vec![0.0; n];
        let mut solved = true;
        for _ in 0..=n {
            let fr: Vec<usize> = (0..n).filter(|&i| fixed[i].is_none()).collect();
            let nf = fr.len();
            let mut a = vec![0.0; nf * nf];
            let mut d: Vec<f64> = fr
                .iter()
                .map(|&i| {
                    -g[i]
                        - (0..n)
                            .filter_map(|c| fixed[c].map(|sc| fim[i * n + c] * sc))
                            .sum::<f64>()
                })
                .collect();
            for (r, &i) in fr.iter().enumerate() {
                for (c, &j) in fr.iter().enumerate() {
                    a[r * nf + c] = fim[i * n + j];
                }
                a[r * nf + r] += lambda * (fim[i * n + i] + 1e-6 * dmax);
            }
            if !cholesky_solve(&mut a, nf, &mut d) {
                solved = false;
                break;
            }
            let mut hit = false;
            for (r, &i) in fr.iter().enumerate() {
                if x[i] + d[r] > hi[i] {
                    fixed[i] = Some(hi[i] - x[i]);
                    hit = true;
                } else if x[i] + d[r] < lo[i] {
                    fixed[i] = Some(lo[i] - x[i]);
                    hit = true;
                }
            }
            for i in 0..n {
                step[i] = fixed[i].unwrap_or(0.0);
            }
            for (r, &i) in fr.iter().enumerate() {
                if fixed[i].is_none() {
                    step[i] = d[r];
                }
            }
            if !hit {
                break;
            }
        }
        let nf = free.len();
        if !solved {
            lambda = (lambda * nu).max(1e-6);
            nu *= 2.0;
            if lambda > 1e16 {
                break;
            }
            continue;
        }
        // No coordinate moves more than 2 scaled units per iteration.
        let big = step.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if big > 2.0 {
            step.iter_mut().for_each(|v| *v *= 2.0 / big);
        }
        let xn: Vec<f64> = (0..n)
            .map(|i| (x[i] + step[i]).clamp(lo[i], hi[i]))
            .collect();
        let s: Vec<f64> = (0..n).map(|i| xn[i] - x[i]).collect();
        let smax = s.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if smax < 1e-10 {
            converged = true;
            break;
        }
        let gs: f64 = g.iter().zip(&s).map(|(a, b)| a * b).sum();
        let mut shs = 0.0;
        for i in 0..n {
            if s[i] != 0.0 {
                for j in 0..n {
                    shs += s[i] * fim[i * n + j] * s[j];
                }
            }
        }
        let pred = -(gs + 0.5 * shs);
        if std::env::var_os("MEDTWIN_FIT_TRACE").is_some() {
            eprintln!("f {fx:.6} pg {pg:.3e} lambda {lambda:.2e} free {nf}/{n} smax {smax:.2e} pred {pred:.3e} evals {evals}");
        }
        evals += 1;
        let trial = eval(&xn).map(|o| {
            let (f, p) = nllh_parts(&o, kinds);
            (o, f, p)
        });
        match trial {
            Some((o, fnew, p)) if fnew.is_finite() && fnew < fx && pred > 0.0 => {
                let rho = (fx - fnew) / pred;
                lambda *= (1.0 - (2.0 * rho - 1.0).powi(3)).max(1.0 / 3.0);
                lambda = lambda.max(1e-12);
                nu = 2.0;
                stalls = if fx - fnew < 1e-9 * (1.0 + fx.abs()) {
                    stalls + 1
                } else {
                    0
                };
                x = xn;
                fx = fnew;
                out = o;
                parts = p;
                if stalls >= 3 {
                    converged = true;
                    break;
                }
                let (cols, e) = jacobian(&x, &out);
                evals += e;
                (g, fim) = model(&cols, &parts);
            }
            _ => {
                lambda *= nu;
                nu *= 2.0;
                if lambda > 1e16 {
                    // No decrease along any damped direction (finite-difference noise or
                    // failing simulations): stop, not counted as converged.
                    break;
                }
            }
        }
    }
    BoxMinimum {
        x,
        f: fx,
        evals,
        converged,
    }
}

/// Solve the symmetric positive definite `n`×`n` system `a x = b` (row-major) in place by
/// Cholesky; false when `a` is not positive definite.
fn cholesky_solve(a: &mut [f64], n: usize, b: &mut [f64]) -> bool {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d.is_nan() || d <= 0.0 || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut v = a[i * n + j];
            for k in 0..j {
                v -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = v / d;
        }
    }
    for i in 0..n {
        let mut v = b[i];
        for k in 0..i {
            v -= a[i * n + k] * b[k];
        }
        b[i] = v / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut v = b[i];
        for k in i + 1..n {
            v -= a[k * n + i] * b[k];
        }
        b[i] = v / a[i * n + i];
    }
    true
}

fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    (0..n).for_each(|i| m[i * n + i] = 1.0);
    m
}

/// `H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ`, ρ = 1/(sᵀy) (Nocedal & Wright eq. 6.17).
fn bfgs_update(h: &mut [f64], s: &[f64], y: &[f64], sy: f64) {
    let n = s.len();
    let rho = 1.0 / sy;
    let hy: Vec<f64> = (0..n)
        .map(|i| (0..n).map(|j| h[i * n + j] * y[j]).sum())
        .collect();
    let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
    for i in 0..n {
        for j in 0..n {
            h[i * n + j] +=
                -rho * (hy[i] * s[j] + s[i] * hy[j]) + (rho * rho * yhy + rho) * s[i] * s[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_names_parse_and_unknown_ones_name_the_choices() {
        assert_eq!("lm".parse(), Ok(Optimizer::FisherLm));
        assert_eq!("bfgs".parse(), Ok(Optimizer::Bfgs));
        assert_eq!("sens".parse(), Ok(Gradient::Sensitivities));
        assert_eq!("fd".parse(), Ok(Gradient::FiniteDifferences));
        assert_eq!("lhs".parse(), Ok(Sampler::LatinHypercube));
        assert_eq!("uniform".parse(), Ok(Sampler::Uniform));
        assert_eq!(
            "LM".parse::<Optimizer>(),
            Err("unknown optimizer 'LM' (lm, bfgs)".to_string())
        );
        assert_eq!(
            "adjoint".parse::<Gradient>(),
            Err("unknown gradient 'adjoint' (sens, fd)".to_string())
        );
        assert_eq!(
            "".parse::<Sampler>(),
            Err("unknown sampler '' (lhs, uniform)".to_string())
        );
    }

    #[test]
    fn cholesky_solves_and_refuses_indefinite() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let mut b = vec![2.0, 1.0];
        assert!(cholesky_solve(&mut a, 2, &mut b));
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky_solve(&mut a, 2, &mut [1.0, 1.0]));
    }

    /// A noisy exponential decay (normal noise with an estimated σ, and a log-normal observable)
    /// fitted from a far start: the Fisher LM reaches the closed-form optimum of σ.
    #[test]
    fn fisher_lm_fits_rate_amplitude_and_sigma() {
        let times: Vec<f64> = (0..12).map(|i| i as f64 * 0.5).collect();
        let noise = [
            0.03, -0.02, 0.05, -0.04, 0.01, 0.0, -0.03, 0.02, 0.04, -0.01, -0.05, 0.02,
        ];
        let data: Vec<f64> = times
            .iter()
            .zip(&noise)
            .map(|(t, e)| 2.0 * (-0.7 * t).exp() + e)
            .collect();
        let kinds: Vec<(f64, Transform, Noise)> = data
            .iter()
            .map(|&m| (m, Transform::Lin, Noise::Normal))
            .collect();
        // x = (log10 amplitude, log10 rate, log10 sigma).
        let eval = |x: &[f64]| -> Option<Vec<(f64, f64)>> {
            let (a, k, s) = (10f64.powf(x[0]), 10f64.powf(x[1]), 10f64.powf(x[2]));
            Some(times.iter().map(|t| (a * (-k * t).exp(), s)).collect())
        };
        let opts = FitOptions {
            fd_step: 1e-6,
            gtol: 1e-6,
            ..FitOptions::default()
        };
        let (lo, hi) = ([-3.0; 3], [3.0; 3]);
        let m = minimize_fisher(
            &eval,
            None,
            &kinds,
            &[1.5, -2.0, 1.0],
            &lo,
            &hi,
            &opts,
            None,
        );
        assert!(m.converged, "{m:?}");
        let out = eval(&m.x).unwrap();
        let rss: f64 = out.iter().zip(&data).map(|(o, d)| (o.0 - d).powi(2)).sum();
        // At the optimum σ² = RSS / n.
        let sigma = 10f64.powf(m.x[2]);
        assert!(
            (sigma * sigma - rss / 12.0).abs() < 1e-6 * sigma * sigma,
            "{m:?}"
        );
        assert!((10f64.powf(m.x[1]) - 0.7).abs() < 0.05, "{m:?}");
    }

    #[test]
    fn box_minimum_of_a_rosenbrock_with_an_active_bound() {
        let mut f = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let opts = FitOptions {
            fd_step: 1e-7,
            gtol: 1e-6,
            ..FitOptions::default()
        };
        let m = minimize_box(&mut f, &[-1.2, 1.0], &[-2.0, -2.0], &[2.0, 2.0], &opts);
        assert!(
            m.converged && (m.x[0] - 1.0).abs() < 1e-3 && (m.x[1] - 1.0).abs() < 1e-3,
            "{m:?}"
        );
        // Upper bound 0.5 on x0: the constrained minimum is at x0 = 0.5, x1 = 0.25.
        let m = minimize_box(&mut f, &[-1.2, 1.0], &[-2.0, -2.0], &[0.5, 2.0], &opts);
        assert!(
            (m.x[0] - 0.5).abs() < 1e-9 && (m.x[1] - 0.25).abs() < 1e-3,
            "{m:?}"
        );
    }
}
