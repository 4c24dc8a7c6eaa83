//! Simulation study of the TDM dose recommendation (issue 17's target): virtual patients drawn
//! from a population fitted to real data, two levels, MAP twin, recommended dose, true
//! steady-state trough within ±20 % of the target?
//!
//! The twin is the generic twin-core posterior ([`medtwin_twin_core::pk::TdmTwin`]); the
//! recommendation reads its weighted posterior samples.
//!
//! `cargo run --release -p medtwin-twin-core --example tdm_simulation`

use medtwin_pk::data::{import_phenobarb, import_theoph, Dataset, Observation, Subject};
use medtwin_pk::model::PkModel;
use medtwin_pk::pop::{fit, individual_params, FitOptions, PopFit, PopModel};
use medtwin_pk::Dose;
use medtwin_twin_core::pk::{recommend, Regimen, Target, TdmTwin};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/pk")
        .join(name)
}

/// Fraction of `n` virtual patients whose true SS trough is within ±20 % of `target`.
#[allow(clippy::too_many_arguments)]
fn study(
    pop: &PopFit,
    doses: &[Dose],
    level_times: &[f64],
    reg: Regimen,
    target: f64,
    noise: f64,
    n: usize,
    covariates: &std::collections::BTreeMap<String, f64>,
) -> (f64, f64) {
    let k = pop.model.n_eta();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let omega_l = medtwin_infer::optim::cholesky(&pop.estimates.omega, k).unwrap();
    let (mut hits, mut hits_pop) = (0, 0);
    for i in 0..n {
        let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        let eta: Vec<f64> = (0..k)
            .map(|a| (0..=a).map(|b| omega_l[a * k + b] * z[b]).sum())
            .collect();
        let mut s = Subject {
            id: format!("v{i}"),
            doses: doses.to_vec(),
            observations: vec![],
            covariates: covariates.clone(),
        };
        let p = individual_params(&pop.model, &pop.estimates, &s, &eta).unwrap();
        for &t in level_times {
            let c = pop.model.pk.concentration(&p, &s.doses, t).unwrap();
            let e: f64 = rng.sample(StandardNormal);
            let sd = medtwin_pk::pop::residual_variance(&pop.estimates, c).sqrt() * noise;
            s.observations.push(Observation {
                time_h: t,
                dv: c + e * sd,
                cmt: pop.model.pk.central_cmt(),
                line: 0,
            });
        }
        let trough_of = |dose: f64| {
            let ss = Dose {
                time_h: 0.0,
                amount: dose,
                rate: 0.0,
                cmt: reg.cmt,
                ii_h: reg.interval_h,
                addl: 0,
                ss: true,
            };
            pop.model
                .pk
                .concentration(&p, &[ss], reg.interval_h)
                .unwrap()
        };
        let twin = TdmTwin::with_samples(&pop.model, &pop.estimates, &s, 100, 3).unwrap();
        let rec = recommend(&twin, Target::Trough(target), reg, None, 1.0, 0.0).unwrap();
        if (trough_of(rec.dose) / target - 1.0).abs() <= 0.2 {
            hits += 1;
        }
        let prior = TdmTwin::with_samples(
            &pop.model,
            &pop.estimates,
            &Subject {
                observations: vec![],
                ..s.clone()
            },
            10,
            3,
        )
        .unwrap();
        let rec0 = recommend(&prior, Target::Trough(target), reg, None, 1.0, 0.0).unwrap();
        if (trough_of(rec0.dose) / target - 1.0).abs() <= 0.2 {
            hits_pop += 1;
        }
    }
    (hits as f64 / n as f64, hits_pop as f64 / n as f64)
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

fn main() {
    let n = 500;
    let pheno = fitted(
        &import_phenobarb(&data("Phenobarb.csv")).unwrap(),
        &PopModel::new(PkModel::parse("1cpt-iv").unwrap()),
    );
    let mut doses = vec![Dose::bolus(0.0, 20.0, 1)];
    doses.extend((1..40).map(|d| Dose::bolus(12.0 * d as f64, 4.0, 1)));
    let reg = Regimen {
        interval_h: 12.0,
        cmt: 1,
        infusion_h: 0.0,
    };
    let none = Default::default();
    println!("design | noise | within ±20 % after 2 levels | population dose (no levels)");
    for (name, times) in [
        ("Phenobarb: 2 h + 84 h", vec![2.0, 84.0]),
        ("Phenobarb: 2 h + 240 h", vec![2.0, 240.0]),
        ("Phenobarb: 240 h + 456 h", vec![240.0, 456.0]),
    ] {
        for noise in [1.0, 0.0] {
            let (a, b) = study(&pheno, &doses, &times, reg, 20.0, noise, n, &none);
            println!("{name} | {noise} | {a:.3} | {b:.3}");
        }
    }
    let mut m = PopModel::new(PkModel::parse("1cpt-oral").unwrap());
    m.parameters = vec!["KE".into(), "KA".into(), "CL".into()];
    m.iiv = vec!["KA".into(), "CL".into()];
    let theo = fitted(&import_theoph(&data("Theoph.csv")).unwrap(), &m);
    let doses: Vec<Dose> = (0..10)
        .map(|d| Dose::bolus(12.0 * d as f64, 4.5, 1))
        .collect();
    let reg = Regimen {
        interval_h: 12.0,
        cmt: 1,
        infusion_h: 0.0,
    };
    for (name, times) in [
        ("Theoph 4.5 mg/kg q12h: 2 h + 12 h", vec![2.0, 12.0]),
        ("Theoph: 36 h peak-ish + 48 h trough", vec![38.0, 48.0]),
    ] {
        for noise in [1.0, 0.0] {
            let (a, b) = study(&theo, &doses, &times, reg, 8.0, noise, n, &none);
            println!("{name} | {noise} | {a:.3} | {b:.3}");
        }
    }
}
