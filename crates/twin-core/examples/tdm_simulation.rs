//! Simulation study of the TDM dose recommendation (issue 17's target): virtual patients drawn
//! from a population fitted to real data, two measured levels, a TDM twin, a recommended dose;
//! is the patient's true steady-state trough within ±20 % of the target?
//!
//! The twin is the generic twin-core posterior ([`medtwin_twin_core::pk::TdmTwin`]); the dose is
//! chosen by [`Objective::Map`] (meet the target with the MAP parameters) or
//! [`Objective::InRange`] (maximise P(trough within ±20 %) under the posterior), against the
//! population dose (the same twin without levels).
//!
//! Phenobarbital (Grasela & Donn 1985, 59 neonates; doses in the data are mg, weights kg): the
//! virtual neonates are drawn from the covariate model fitted to the real data
//! (`CL ∝ (WT/median)^θ`, `V ∝ (WT/median)^θ`, log-normal IIV), with weight and Apgar resampled
//! from the real neonates; they get a 20 mg/kg load and 2.5 mg/kg every 12 h (5 mg/kg/day), and
//! two levels at clinically usual times. The twin's prior is either that covariate model or the
//! model without covariates (the nlme reference model, whose IIV absorbs weight). Theophylline
//! (12 adults, 4.5 mg/kg q12h) as before. Seeds are fixed; all designs see the same patients.
//!
//! Level times: besides three clinically usual designs, a Bayesian c-optimal design scan
//! ([`design_scan`]) picks the pair of level times (1, 2, 4 or 6 h after the load, or a pre-dose
//! trough up to day 14) that minimises the expected posterior SD of ln(steady-state trough) —
//! the quantity the dose decision depends on — on virtual patients of a separate seed, for
//! each latest allowed level time (day 7, 8, 9, 10, 14); those designs join the study.
//!
//! `cargo run --release -p medtwin-twin-core --example tdm_simulation [N] [NOISE] [SEED]
//! [--quick] [--combined] [--scan-only]` (N = 500 patients by default; NOISE scales the
//! measurement error of the simulated levels, 1 = the fitted residual error, 0 = exact levels;
//! the twin always assumes the fitted error; SEED = 11 draws the virtual patients; `--quick`:
//! phenobarbital with the covariate prior only; `--combined`: the phenobarbital covariate model
//! is fitted with the combined additive + proportional residual error, which then both
//! generates the virtual patients' levels and is the twin's noise model; `--scan-only`: print
//! the design scan and stop).

use medtwin_pk::data::{import_phenobarb, import_theoph, Dataset, Observation, Subject};
use medtwin_pk::model::PkModel;
use medtwin_pk::pop::{
    fit, individual_params, residual_variance, CovariateEffect, ErrorModel, FitOptions, PopFit,
    PopModel,
};
use medtwin_pk::Dose;
use medtwin_twin_core::pk::{
    expected_posterior_sd, recommend_for, Objective, Regimen, Target, TdmTwin,
};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Posterior samples per twin.
const SAMPLES: usize = 500;
/// Success criterion: true SS trough within ±20 % of the target.
const TOL: f64 = 0.2;
/// Posterior SD of ln(trough per unit dose) that a perfectly centred log-normal needs for 80 %
/// inside [0.8, 1.2]: ln(1.2/0.8) / (2 · 1.2816).
const SD_NEEDED: f64 = 0.1582;
/// Seed of the virtual patients on which the design scan picks level times (not a study seed).
const DESIGN_SEED: u64 = 1000;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/pk")
        .join(name)
}

fn fitted(ds: &Dataset, m: &PopModel) -> PopFit {
    fit(
        ds,
        m,
        &FitOptions {
            standard_errors: false,
            ..FitOptions::default()
        },
    )
    .unwrap()
}

/// A virtual patient: covariates, dose history, true random effects, and standard-normal
/// draws for the residual errors of up to four levels.
struct Patient {
    covariates: BTreeMap<String, f64>,
    doses: Vec<Dose>,
    eta: Vec<f64>,
    z: [f64; 4],
}

/// `n` virtual patients from `truth`: covariates resampled from `real`, η ~ N(0, Ω), the dose
/// history from `doses(covariates)`.
fn patients(
    truth: &PopFit,
    real: &Dataset,
    n: usize,
    seed: u64,
    doses: &dyn Fn(&BTreeMap<String, f64>) -> Vec<Dose>,
) -> Vec<Patient> {
    let k = truth.model.n_eta();
    let l = medtwin_infer::optim::cholesky(&truth.estimates.omega, k).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let covariates = real.subjects[rng.random_range(0..real.subjects.len())]
                .covariates
                .clone();
            let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
            let eta = (0..k)
                .map(|a| (0..=a).map(|b| l[a * k + b] * z[b]).sum())
                .collect();
            let zr = [(); 4].map(|_| rng.sample(StandardNormal));
            Patient {
                doses: doses(&covariates),
                covariates,
                eta,
                z: zr,
            }
        })
        .collect()
}

/// Attainment of one design under one prior.
#[derive(Default)]
struct Tally {
    n: usize,
    map: usize,
    in_range: usize,
    /// Mean posterior P(within ±20 %) at the p-in-range dose (what the twin expects).
    expected: f64,
    /// Posterior SDs of ln(SS trough per unit dose), one per patient.
    sd: Vec<f64>,
}

impl Tally {
    fn row(&self) -> String {
        let n = self.n as f64;
        let mut sd = self.sd.clone();
        sd.sort_by(f64::total_cmp);
        let ok = sd.iter().filter(|&&s| s <= SD_NEEDED).count() as f64 / n;
        format!(
            "{:.3} | {:.3} | {:.3} | {:.3} | {:.2}",
            self.map as f64 / n,
            self.in_range as f64 / n,
            self.expected / n,
            sd[sd.len() / 2],
            ok
        )
    }
}

/// Weighted SD of ln(SS trough per unit dose) over the twin's posterior samples (bolus
/// regimen).
fn sd_log_trough(twin: &TdmTwin, reg: Regimen) -> f64 {
    let post = twin.posterior();
    let m = twin.pk_model();
    let ss = Dose {
        time_h: 0.0,
        amount: 1.0,
        rate: 0.0,
        cmt: reg.cmt,
        ii_h: reg.interval_h,
        addl: 0,
        ss: true,
    };
    let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for (x, &w) in post.samples.iter().zip(&post.weights) {
        let named: Vec<(&str, f64)> = post
            .ids
            .iter()
            .map(String::as_str)
            .zip(x.iter().copied())
            .collect();
        let p = m.params(&named).unwrap();
        let t =
            m.pk.concentration(&p, std::slice::from_ref(&ss), reg.interval_h)
                .unwrap()
                .ln();
        s0 += w;
        s1 += w * t;
        s2 += w * t * t;
    }
    (s2 / s0 - (s1 / s0).powi(2)).max(0.0).sqrt()
}

/// Standard normal CDF (Abramowitz & Stegun 7.1.26 erf, absolute error < 1.5e-7).
fn phi(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Success probability of a perfectly centred dose when ln trough has posterior SD `sd`:
/// `2Φ(ln(1.2/0.8) / (2 sd)) − 1`.
fn p_centred(sd: f64) -> f64 {
    let half_width = ((1.0 + TOL) / (1.0 - TOL)).ln() / 2.0;
    2.0 * phi(half_width / sd) - 1.0
}

/// Bayesian c-optimal design scan: for every pair of candidate level times, the mean over
/// `pts` of [`p_centred`] of the [`expected_posterior_sd`] (the attainment a perfectly centred dose would
/// have with that posterior SD). Prints the best pairs whose later level is at or before each
/// horizon, and returns the best pair per horizon.
fn design_scan(
    truth: &PopFit,
    pts: &[Patient],
    candidates: &[f64],
    horizons: &[f64],
    reg: Regimen,
) -> Vec<(f64, f64)> {
    let mut scores = Vec::new();
    for (i, &t1) in candidates.iter().enumerate() {
        for &t2 in &candidates[i + 1..] {
            let mut sds: Vec<f64> = pts
                .iter()
                .enumerate()
                .map(|(n, pt)| {
                    let s = Subject {
                        id: format!("d{n}"),
                        doses: pt.doses.clone(),
                        observations: vec![],
                        covariates: pt.covariates.clone(),
                    };
                    expected_posterior_sd(
                        &truth.model,
                        &truth.estimates,
                        &s,
                        &pt.eta,
                        &[t1, t2],
                        Target::Trough(1.0),
                        reg,
                    )
                    .unwrap()
                })
                .collect();
            let p = sds.iter().map(|&sd| p_centred(sd)).sum::<f64>() / sds.len() as f64;
            sds.sort_by(f64::total_cmp);
            scores.push((t1, t2, p, sds[sds.len() / 2]));
        }
    }
    scores.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut best = Vec::new();
    for &hz in horizons {
        println!("design scan, both levels by {hz} h: best pairs (t1, t2) | predicted attainment (centred dose) | median Laplace SD ln(trough)");
        for (t1, t2, p, sd) in scores.iter().filter(|s| s.1 <= hz).take(5) {
            println!("  {t1} h + {t2} h | {p:.3} | {sd:.3}");
        }
        if let Some(b) = scores.iter().find(|s| s.1 <= hz) {
            best.push((b.0, b.1));
        }
    }
    for (t1, t2) in [(2.0, 95.5), (71.5, 167.5), (2.0, 167.5)] {
        if let Some((_, _, p, sd)) = scores.iter().find(|s| s.0 == t1 && s.1 == t2) {
            println!("  (earlier design {t1} h + {t2} h | {p:.3} | {sd:.3})");
        }
    }
    best
}

/// Run the designs (`(name, level times)`) for the priors on the same patients; prints one
/// row per (prior, design) plus the population-dose rows.
fn study(
    truth: &PopFit,
    priors: &[(&str, &PopFit)],
    pts: &[Patient],
    designs: &[(&str, Vec<f64>)],
    reg: Regimen,
    target: f64,
    noise: f64,
) {
    let trough = Target::Trough(target);
    let in_range = Objective::InRange { tolerance: TOL };
    let hit = |p: &medtwin_pk::model::PkParams, dose: f64| {
        let ss = Dose {
            time_h: 0.0,
            amount: dose,
            rate: 0.0,
            cmt: reg.cmt,
            ii_h: reg.interval_h,
            addl: 0,
            ss: true,
        };
        let t = truth
            .model
            .pk
            .concentration(p, &[ss], reg.interval_h)
            .unwrap();
        (t / target - 1.0).abs() <= TOL
    };
    for (pname, prior) in priors {
        let t0 = Instant::now();
        let mut tallies: Vec<Tally> = designs.iter().map(|_| Tally::default()).collect();
        let mut pop = Tally::default();
        for (i, pt) in pts.iter().enumerate() {
            let mut s = Subject {
                id: format!("v{i}"),
                doses: pt.doses.clone(),
                observations: vec![],
                covariates: pt.covariates.clone(),
            };
            let p = individual_params(&truth.model, &truth.estimates, &s, &pt.eta).unwrap();
            // Population dose: the twin without levels.
            let tw0 =
                TdmTwin::with_samples(&prior.model, &prior.estimates, &s, SAMPLES, 3).unwrap();
            let r = recommend_for(&tw0, trough, reg, None, 1.0, 0.0, Objective::Map).unwrap();
            let r2 = recommend_for(&tw0, trough, reg, None, 1.0, 0.0, in_range).unwrap();
            pop.n += 1;
            pop.map += usize::from(hit(&p, r.dose));
            pop.in_range += usize::from(hit(&p, r2.dose));
            pop.expected += r2.p_target.unwrap();
            pop.sd.push(sd_log_trough(&tw0, reg));
            for (d, (_, times)) in designs.iter().enumerate() {
                s.observations = times
                    .iter()
                    .zip(pt.z)
                    .map(|(&t, z)| {
                        let c = truth.model.pk.concentration(&p, &s.doses, t).unwrap();
                        Observation {
                            time_h: t,
                            dv: c + noise * z * residual_variance(&truth.estimates, c).sqrt(),
                            cmt: truth.model.pk.central_cmt(),
                            line: 0,
                        }
                    })
                    .collect();
                let tw =
                    TdmTwin::with_samples(&prior.model, &prior.estimates, &s, SAMPLES, 3).unwrap();
                let r = recommend_for(&tw, trough, reg, None, 1.0, 0.0, Objective::Map).unwrap();
                let r2 = recommend_for(&tw, trough, reg, None, 1.0, 0.0, in_range).unwrap();
                let t = &mut tallies[d];
                t.n += 1;
                t.map += usize::from(hit(&p, r.dose));
                t.in_range += usize::from(hit(&p, r2.dose));
                t.expected += r2.p_target.unwrap();
                t.sd.push(sd_log_trough(&tw, reg));
            }
        }
        println!("population dose (no levels) | {pname} | {}", pop.row());
        for ((name, _), t) in designs.iter().zip(&tallies) {
            println!("{name} | {pname} | {}", t.row());
        }
        eprintln!(
            "  ({pname}: {} patients in {:.1} s)",
            pts.len(),
            t0.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let scan_only = args.iter().any(|a| a == "--scan-only");
    let combined = args.iter().any(|a| a == "--combined");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let n: usize = pos
        .first()
        .map(|a| a.parse().expect("N must be a count"))
        .unwrap_or(500);
    let noise: f64 = pos
        .get(1)
        .map(|a| a.parse().expect("NOISE must be a number"))
        .unwrap_or(1.0);
    let seed: u64 = pos
        .get(2)
        .map(|a| a.parse().expect("SEED must be an unsigned integer"))
        .unwrap_or(11);
    println!(
        "design | prior | MAP dose | p-in-range dose | twin's expected P | median posterior SD ln(trough) | share with SD <= {SD_NEEDED}"
    );

    // Phenobarbital.
    let pheno_ds = import_phenobarb(&data("Phenobarb.csv")).unwrap();
    let base = PopModel::new(PkModel::parse("1cpt-iv").unwrap());
    let plain = fitted(&pheno_ds, &base);
    let mut m = base.clone();
    m.covariates = ["CL~WT", "V~WT"]
        .iter()
        .map(|c| CovariateEffect::parse(c).unwrap())
        .collect();
    if combined {
        m.error = ErrorModel::Combined;
    }
    let cov = fitted(&pheno_ds, &m);
    let mut m2 = m.clone();
    m2.covariates
        .push(CovariateEffect::parse("V~APGAR:lin").unwrap());
    let apgar = fitted(&pheno_ds, &m2);
    for (name, f) in [
        ("no covariates", &plain),
        ("CL~WT, V~WT", &cov),
        ("+ V~APGAR:lin", &apgar),
    ] {
        eprintln!(
            "Phenobarb {name}: logLik {:.2}, log θ {:?}, β {:?}, Ω diag {:?}, σ {:.3}",
            f.log_likelihood,
            f.estimates.log_theta,
            f.estimates.beta,
            (0..f.model.n_eta())
                .map(|a| f.estimates.omega[a * f.model.n_eta() + a])
                .collect::<Vec<_>>(),
            f.estimates.sigma_add
        );
        if f.estimates.sigma_prop > 0.0 {
            eprintln!("  σ_prop {:.4}", f.estimates.sigma_prop);
        }
    }
    let dosing = |c: &BTreeMap<String, f64>| {
        let wt = c["WT"];
        let mut d = vec![Dose::bolus(0.0, 20.0 * wt, 1)];
        d.extend((1..60).map(|k| Dose::bolus(12.0 * k as f64, 2.5 * wt, 1)));
        d
    };
    let pts = patients(&cov, &pheno_ds, n, seed, &dosing);
    let reg = Regimen {
        interval_h: 12.0,
        cmt: 1,
        infusion_h: 0.0,
    };
    // Level times chosen by the design scan on patients of a separate seed (DESIGN_SEED), so the
    // designs are fixed before any study seed is simulated: the earliest level 1 h after the
    // load, then pre-dose troughs (0.5 h before a q12h dose) up to day 14.
    let mut candidates = vec![1.0, 2.0, 4.0, 6.0];
    candidates.extend((1..=28).map(|k| 12.0 * k as f64 - 0.5));
    let horizons = [167.5, 191.5, 215.5, 239.5, 335.5];
    let scan_pts = patients(&cov, &pheno_ds, 300, DESIGN_SEED, &dosing);
    let best = design_scan(&cov, &scan_pts, &candidates, &horizons, reg);
    if scan_only {
        return;
    }
    let mut designs: Vec<(String, Vec<f64>)> = vec![
        (
            "Phenobarb: 2 h after load + trough day 4 (95.5 h)".into(),
            vec![2.0, 95.5],
        ),
        (
            "Phenobarb: troughs day 3 + day 7 (71.5 h, 167.5 h)".into(),
            vec![71.5, 167.5],
        ),
        (
            "Phenobarb: 2 h after load + trough day 7 (167.5 h)".into(),
            vec![2.0, 167.5],
        ),
    ];
    for ((t1, t2), hz) in best.iter().zip(horizons) {
        designs.push((
            format!("Phenobarb: scan's best by {hz} h ({t1} h, {t2} h)"),
            vec![*t1, *t2],
        ));
    }
    designs.dedup_by(|a, b| a.1 == b.1);
    let designs: Vec<(&str, Vec<f64>)> = designs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let priors: Vec<(&str, &PopFit)> = if quick {
        vec![("CL~WT, V~WT", &cov)]
    } else {
        vec![("CL~WT, V~WT", &cov), ("no covariates", &plain)]
    };
    study(&cov, &priors, &pts, &designs, reg, 20.0, noise);
    if quick {
        return;
    }

    // Theophylline (no covariates; doses mg/kg).
    let mut m = PopModel::new(PkModel::parse("1cpt-oral").unwrap());
    m.parameters = vec!["KE".into(), "KA".into(), "CL".into()];
    m.iiv = vec!["KA".into(), "CL".into()];
    let theo_ds = import_theoph(&data("Theoph.csv")).unwrap();
    let theo = fitted(&theo_ds, &m);
    let no_cov = Dataset {
        subjects: vec![Subject {
            covariates: BTreeMap::new(),
            ..theo_ds.subjects[0].clone()
        }],
        ..theo_ds.clone()
    };
    let q12 = |_: &BTreeMap<String, f64>| {
        (0..10)
            .map(|d| Dose::bolus(12.0 * d as f64, 4.5, 1))
            .collect::<Vec<_>>()
    };
    let pts = patients(&theo, &no_cov, n, seed, &q12);
    study(
        &theo,
        &[("no covariates", &theo)],
        &pts,
        &[("Theoph 4.5 mg/kg q12h: 2 h + 12 h", vec![2.0, 12.0])],
        reg,
        8.0,
        noise,
    );
}
