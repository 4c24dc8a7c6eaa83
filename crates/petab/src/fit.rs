//! Multi-start maximum-likelihood fits of a PEtab problem: the estimated parameters
//! (`estimate` = 1) are optimised on their `parameterScale` within their bounds by BFGS with
//! central finite-difference gradients (`medtwin_infer::optim::bfgs`; bounds enforced by
//! evaluating at the projection onto the box plus a quadratic penalty on the distance to it).
//! Start 0 is the nominal vector; the others are uniform in the scaled box (as pyPESTO's
//! default start sampler), drawn from a ChaCha8 stream seeded by `seed`.

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
    /// Whether BFGS met its gradient or progress criterion before the budget.
    pub converged: bool,
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
        let pen: f64 = x
            .iter()
            .enumerate()
            .map(|(k, &v)| (v - v.clamp(lo[k], hi[k])).powi(2))
            .sum();
        match ev.llh(&theta_of(x)) {
            Ok(l) if l.is_finite() => -l + 1e4 * pen,
            _ => f64::INFINITY,
        }
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut starts = Vec::new();
    for s in 0..opts.starts {
        let x0: Vec<f64> = if s == 0 {
            est.iter()
                .enumerate()
                .map(|(k, &i)| pars[i].scale.to_scale(pars[i].nominal).clamp(lo[k], hi[k]))
                .collect()
        } else {
            (0..est.len())
                .map(|k| rng.random_range(lo[k]..=hi[k]))
                .collect()
        };
        let ts = Instant::now();
        let f0 = objective(&x0);
        let h = vec![opts.fd_step; x0.len()];
        let m = medtwin_infer::optim::bfgs(
            &mut objective,
            &x0,
            &h,
            opts.gtol,
            1e-12,
            1.0,
            opts.max_evals,
        );
        let x: Vec<f64> =
            m.x.iter()
                .enumerate()
                .map(|(k, v)| v.clamp(lo[k], hi[k]))
                .collect();
        starts.push(StartResult {
            start: s,
            initial_objective: f0,
            objective: m.f,
            x,
            evals: m.evals + 1,
            converged: m.converged,
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
