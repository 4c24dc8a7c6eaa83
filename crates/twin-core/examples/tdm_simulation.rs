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
//! `cargo run --release -p medtwin-twin-core --example tdm_simulation [N] [NOISE] [SEED]`
//! (N = 500 patients by default; NOISE scales the measurement error of the simulated levels,
//! 1 = the fitted residual error, 0 = exact levels; the twin always assumes the fitted error;
//! SEED = 11 draws the virtual patients).

use medtwin_pk::data::{import_phenobarb, import_theoph, Dataset, Observation, Subject};
use medtwin_pk::model::PkModel;
use medtwin_pk::pop::{
    fit, individual_params, residual_variance, CovariateEffect, FitOptions, PopFit, PopModel,
};
use medtwin_pk::Dose;
use medtwin_twin_core::pk::{recommend_for, Objective, Regimen, Target, TdmTwin};
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
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N must be a count"))
        .unwrap_or(500);
    let noise: f64 = std::env::args()
        .nth(2)
        .map(|a| a.parse().expect("NOISE must be a number"))
        .unwrap_or(1.0);
    let seed: u64 = std::env::args()
        .nth(3)
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
    let designs = [
        (
            "Phenobarb: 2 h after load + trough day 4 (95.5 h)",
            vec![2.0, 95.5],
        ),
        (
            "Phenobarb: troughs day 3 + day 7 (71.5 h, 167.5 h)",
            vec![71.5, 167.5],
        ),
        (
            "Phenobarb: 2 h after load + trough day 7 (167.5 h)",
            vec![2.0, 167.5],
        ),
    ];
    study(
        &cov,
        &[("CL~WT, V~WT", &cov), ("no covariates", &plain)],
        &pts,
        &designs,
        reg,
        20.0,
        noise,
    );

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
