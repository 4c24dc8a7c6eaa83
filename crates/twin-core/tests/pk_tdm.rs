//! Therapeutic drug monitoring on real data (Phenobarb, Grasela & Donn 1985) and a simulation
//! study of the dose recommendation.

use medtwin_pk::data::{import_phenobarb, import_theoph, Observation, Subject};
use medtwin_pk::model::PkModel;
use medtwin_pk::pop::{fit, individual_params, FitOptions, PopModel};
use medtwin_pk::tdm::{backtest, recommend, Regimen, Target, TdmTwin};
use medtwin_pk::Dose;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../tests/data/pk")
        .join(name)
}

/// Theoph and its population fit with nlme's SSfol model (IIV on KA and CL).
fn theoph_population() -> (medtwin_pk::data::Dataset, medtwin_pk::pop::PopFit) {
    let ds = import_theoph(&data("Theoph.csv")).unwrap();
    let mut m = PopModel::new(PkModel::parse("1cpt-oral").unwrap());
    m.parameters = vec!["KE".into(), "KA".into(), "CL".into()];
    m.iiv = vec!["KA".into(), "CL".into()];
    let opts = FitOptions {
        standard_errors: false,
        ..FitOptions::default()
    };
    let pop = fit(&ds, &m, &opts).unwrap();
    (ds, pop)
}

/// The individual (MAP) forecast of each neonate's last level beats the population prediction,
/// with calibrated intervals.
#[test]
fn phenobarbital_holdout_last_individual_beats_population() {
    let ds = import_phenobarb(&data("Phenobarb.csv")).unwrap();
    let m = PopModel::new(PkModel::parse("1cpt-iv").unwrap());
    let opts = FitOptions {
        standard_errors: false,
        ..FitOptions::default()
    };
    let (metrics, rows, _) = backtest(&ds, &m, &opts, 1000, 7).unwrap();
    eprintln!("{metrics:?}");
    assert_eq!(metrics.n, rows.len());
    assert!(metrics.n >= 40, "{}", metrics.n);
    assert!(metrics.rmse < 0.8 * metrics.rmse_population, "{metrics:?}");
    // Coverage is reported, not asserted to be nominal: measured 0.64 / 0.84 (README).
    assert!(metrics.coverage_95 > metrics.coverage_80 && metrics.coverage_80 > 0.5);
    assert_eq!(metrics.unit, ds.units.concentration);
}

/// Virtual patients drawn from the theophylline population fitted to the real Theoph data
/// (4.5 mg/kg every 12 h orally): two measured levels (2 h and 12 h after the first dose, with
/// the fitted residual error) individualise the twin; the dose recommended for a trough of
/// 8 mg/L must give a true steady-state trough within ±20 % for ≥ 80 % of patients, and more
/// often than the population dose does. (The same study on the Phenobarb population, where the
/// neonates' half-lives of days make two early levels weakly informative about clearance, is in
/// `examples/tdm_simulation.rs` and the README.)
#[test]
fn recommended_dose_reaches_target_trough_in_simulated_patients() {
    let (_, pop) = theoph_population();
    let k = pop.model.n_eta();
    let chol = medtwin_infer::optim::cholesky(&pop.estimates.omega, k).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (n, target) = (200, 8.0);
    let reg = Regimen {
        interval_h: 12.0,
        cmt: 1,
        infusion_h: 0.0,
    };
    let (mut hits, mut hits_population) = (0, 0);
    for i in 0..n {
        let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        let eta_true: Vec<f64> = (0..k)
            .map(|a| (0..=a).map(|b| chol[a * k + b] * z[b]).sum())
            .collect();
        let mut s = Subject {
            id: format!("virtual-{i}"),
            doses: (0..4)
                .map(|d| Dose::bolus(12.0 * d as f64, 4.5, 1))
                .collect(),
            observations: Vec::new(),
            covariates: Default::default(),
        };
        let p_true = individual_params(&pop.model, &pop.estimates, &s, &eta_true).unwrap();
        for t in [2.0, 12.0] {
            let c = pop.model.pk.concentration(&p_true, &s.doses, t).unwrap();
            let e: f64 = rng.sample(StandardNormal);
            s.observations.push(Observation {
                time_h: t,
                dv: c + e * pop.estimates.sigma_add,
                cmt: 2,
                line: 0,
            });
        }
        let true_trough = |dose: f64| {
            let ss = Dose {
                time_h: 0.0,
                amount: dose,
                rate: 0.0,
                cmt: 1,
                ii_h: 12.0,
                addl: 0,
                ss: true,
            };
            pop.model.pk.concentration(&p_true, &[ss], 12.0).unwrap()
        };
        let twin = TdmTwin::new(&pop.model, &pop.estimates, &s).unwrap();
        let rec = recommend(&twin, Target::Trough(target), reg, None, 1.0, 0.0, 200, 3).unwrap();
        if (true_trough(rec.dose) / target - 1.0).abs() <= 0.2 {
            hits += 1;
        }
        s.observations.clear();
        let prior = TdmTwin::new(&pop.model, &pop.estimates, &s).unwrap();
        let rec0 = recommend(&prior, Target::Trough(target), reg, None, 1.0, 0.0, 10, 3).unwrap();
        if (true_trough(rec0.dose) / target - 1.0).abs() <= 0.2 {
            hits_population += 1;
        }
    }
    let (frac, frac0) = (hits as f64 / n as f64, hits_population as f64 / n as f64);
    eprintln!(
        "within ±20 % of the target trough: twin {frac:.3}, population dose {frac0:.3} (n = {n})"
    );
    assert!(frac >= 0.8, "{frac}");
    assert!(frac > frac0, "{frac} vs {frac0}");
}

/// A toxic threshold below the peak that the target implies is refused, with the reason.
#[test]
fn recommendation_refused_when_peak_would_be_toxic() {
    let (ds, pop) = theoph_population();
    let twin = TdmTwin::new(&pop.model, &pop.estimates, &ds.subjects[0]).unwrap();
    let reg = Regimen {
        interval_h: 12.0,
        cmt: 1,
        infusion_h: 0.0,
    };
    let ok = recommend(
        &twin,
        Target::Trough(8.0),
        reg,
        Some(40.0),
        0.1,
        0.0,
        300,
        1,
    )
    .unwrap();
    assert!(ok.map_cmax > ok.map_trough && ok.p_toxic.unwrap() <= 0.1);
    let err = recommend(&twin, Target::Trough(8.0), reg, Some(9.0), 0.1, 0.0, 300, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("P(Cmax,ss > 9)"), "{err}");
}
