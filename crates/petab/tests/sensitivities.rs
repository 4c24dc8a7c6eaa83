//! Residual sensitivities of the bundled PEtab problems (`tests/data/petab`) against central
//! finite differences of the residuals at tight tolerances.

use medtwin_petab::{Evaluator, Problem, SimSettings};
use std::path::PathBuf;

fn problem(name: &str) -> Problem {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/petab")
        .join(name)
        .join(format!("{name}.yaml"));
    Problem::load(p).unwrap()
}

/// `step`: relative finite-difference step; `tol`: error relative to the largest derivative.
fn check(name: &str, step: f64, tol: f64) {
    let pr = problem(name);
    let settings = SimSettings {
        rtol: 1e-10,
        atol: 1e-14,
        ..SimSettings::default()
    };
    let ev = Evaluator::new(&pr, settings).unwrap();
    let theta = pr.nominal();
    let est: Vec<usize> = (0..pr.parameters.len())
        .filter(|&i| pr.parameters[i].estimate)
        .collect();
    let s = ev
        .sensitivities(&theta, &est)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let base = ev.residuals(&theta).unwrap();
    for (r, b) in s.residuals.iter().zip(&base) {
        assert!(
            (r.simulated - b.simulated).abs() <= 1e-6 * b.simulated.abs().max(1e-8),
            "{name}: measurement {}: {} vs {}",
            r.measurement,
            r.simulated,
            b.simulated
        );
    }
    // Derivatives on the log scale (× θ) relative to |y| (σ: absolute), compared with the
    // largest over all parameters and measurements (finite differences of a tiny log-scale
    // derivative are noise at the simulation tolerance).
    let mut pairs = Vec::new();
    for (k, &i) in est.iter().enumerate() {
        let h = step * theta[i].abs().max(1e-6);
        let at = |v: f64| {
            let mut th = theta.clone();
            th[i] = v;
            ev.residuals(&th).unwrap()
        };
        let (p, m) = (at(theta[i] + h), at(theta[i] - h));
        for ((a, b), r) in p.iter().zip(&m).zip(&s.residuals) {
            let w = theta[i].abs() / r.simulated.abs().max(1e-3);
            let fd = (
                (a.simulated - b.simulated) / (2.0 * h) * w,
                (a.sigma - b.sigma) / (2.0 * h) * theta[i].abs(),
            );
            let d = s.d[r.measurement][k];
            pairs.push((i, r.measurement, (d.0 * w, d.1 * theta[i].abs()), fd));
        }
    }
    let scale = pairs
        .iter()
        .map(|p| p.3 .0.abs().max(p.3 .1.abs()))
        .fold(0.0f64, f64::max);
    assert!(scale > 0.0, "{name}: all derivatives zero");
    for (i, mi, d, f) in &pairs {
        let e = (d.0 - f.0).abs().max((d.1 - f.1).abs());
        assert!(
            e <= tol * scale,
            "{name}: d/d{} of measurement {mi}: sensitivities {d:?}, finite differences {f:?} (log scale, scale {scale:.3e})",
            pr.parameters[*i].id,
        );
    }
}

#[test]
fn boehm_sensitivities_match_finite_differences() {
    check("Boehm_JProteomeRes2014", 1e-3, 1e-4);
}

#[test]
fn brannmark_sensitivities_match_finite_differences() {
    // Preequilibration and conditions mapping parameters.
    check("Brannmark_JBC2010", 1e-3, 1e-4);
}

#[test]
fn borghans_sensitivities_match_finite_differences() {
    // An oscillator: finite differences of step 1e-3 are 2 % off (truncation); step 1e-5.
    check("Borghans_BiophysChem1997", 1e-5, 1e-3);
}

/// Boehm's AMICI nominal objective (−llh 138.2220) from sampled starts, with the Fisher LM on
/// forward sensitivities.
#[test]
fn fit_with_sensitivities_reaches_boehm_nominal_objective() {
    use medtwin_petab::fit::{fit, FitOptions, Gradient};
    let pr = problem("Boehm_JProteomeRes2014");
    let ev = Evaluator::new(&pr, SimSettings::default()).unwrap();
    let opts = FitOptions {
        starts: 8,
        seed: 0,
        nominal_start: false,
        gradient: Gradient::Sensitivities,
        ..FitOptions::default()
    };
    let r = fit(&ev, &opts).unwrap();
    let best = r.best().objective;
    assert!(
        best <= 138.22199693517703 + 0.1,
        "best of 8 sampled starts: {best}; starts {:?}",
        r.starts.iter().map(|s| s.objective).collect::<Vec<_>>()
    );
}
