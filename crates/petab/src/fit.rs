//! Multi-start maximum-likelihood fits of a PEtab problem: the estimated parameters
//! (`estimate` = 1) are optimised on their `parameterScale` within their bounds by a projected
//! BFGS (see [`minimize_box`]) with finite-difference gradients.
//! Start 0 is the nominal vector; the others are uniform in the scaled box (as pyPESTO's
//! default start sampler), drawn from a ChaCha8 stream seeded by `seed`; a draw whose
//! simulation fails is replaced by the next draw (up to 20).

use crate::{Evaluator, PetabError};
use rand::{Rng, SeedableRng};
use serde::Serialize;
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
}

impl Default for FitOptions {
    /// 10 starts, seed 0, 4000 evaluations per start, step 1e-5, gtol 1e-3.
    fn default() -> Self {
        FitOptions {
            starts: 10,
            seed: 0,
            max_evals: 4000,
            fd_step: 1e-5,
            gtol: 1e-3,
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
    /// Whether BFGS met its gradient or progress criterion before the budget (false when no
    /// start point with a finite objective was found in 20 draws).
    pub converged: bool,
    /// Start points drawn (random starts whose simulation fails are redrawn).
    pub draws: usize,
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
}

/// Multi-start fit; see the module documentation.
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
    let mut starts = Vec::new();
    for s in 0..opts.starts {
        let ts = Instant::now();
        let mut x0: Vec<f64> = est
            .iter()
            .enumerate()
            .map(|(k, &i)| pars[i].scale.to_scale(pars[i].nominal).clamp(lo[k], hi[k]))
            .collect();
        let mut f0 = if s == 0 {
            objective(&x0)
        } else {
            f64::INFINITY
        };
        // Random starts where the model cannot be simulated are redrawn (up to 20 times).
        let mut draws = 0;
        while s > 0 && !f0.is_finite() && draws < 20 {
            x0 = (0..est.len())
                .map(|k| rng.random_range(lo[k]..=hi[k]))
                .collect();
            f0 = objective(&x0);
            draws += 1;
        }
        let m = minimize_box(&mut objective, &x0, &lo, &hi, opts);
        let x = m.x;
        starts.push(StartResult {
            start: s,
            initial_objective: f0,
            objective: m.f,
            x,
            evals: m.evals,
            converged: m.converged && m.f.is_finite(),
            draws: draws.max(1),
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
