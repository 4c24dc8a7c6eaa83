//! The posterior-optimal dose ([`Objective::InRange`]) on real theophylline data, checked
//! against an independent grid search over the twin's weighted posterior samples.

use medtwin_pk::data::{import_theoph, Dataset};
use medtwin_pk::model::PkModel;
use medtwin_pk::pop::{fit, FitOptions, PopFit, PopModel};
use medtwin_pk::Dose;
use medtwin_twin_core::pk::{recommend_for, Objective, Regimen, Target, TdmError, TdmTwin};
use std::path::PathBuf;

fn theoph() -> (Dataset, PopFit) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/pk/Theoph.csv");
    let ds = import_theoph(&path).unwrap();
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

const REG: Regimen = Regimen {
    interval_h: 12.0,
    cmt: 1,
    infusion_h: 0.0,
};

/// (steady-state trough per unit dose, weight) of every posterior sample, computed here from
/// the samples and the PK model, independently of the recommendation code.
fn unit_troughs(twin: &TdmTwin) -> Vec<(f64, f64)> {
    let post = twin.posterior();
    let m = twin.pk_model();
    let ss = Dose {
        time_h: 0.0,
        amount: 1.0,
        rate: 0.0,
        cmt: REG.cmt,
        ii_h: REG.interval_h,
        addl: 0,
        ss: true,
    };
    post.samples
        .iter()
        .zip(&post.weights)
        .map(|(x, &w)| {
            let named: Vec<(&str, f64)> = post
                .ids
                .iter()
                .map(String::as_str)
                .zip(x.iter().copied())
                .collect();
            let p = m.params(&named).unwrap();
            (
                m.pk.concentration(&p, std::slice::from_ref(&ss), REG.interval_h)
                    .unwrap(),
                w,
            )
        })
        .collect()
}

/// Weighted P(|dose · trough − target| ≤ tol · target).
fn p_in_range(u: &[(f64, f64)], dose: f64, target: f64, tol: f64) -> f64 {
    let total: f64 = u.iter().map(|s| s.1).sum();
    u.iter()
        .filter(|s| (dose * s.0 / target - 1.0).abs() <= tol)
        .map(|s| s.1)
        .sum::<f64>()
        / total
}

/// On four subjects with two levels each, the p-in-range dose's reported probability is the
/// probability at that dose, at least that of the MAP dose, and no dose on a fine grid beats
/// it; with a ±10 % tolerance the probability is lower than with ±20 %.
#[test]
fn in_range_objective_maximises_the_posterior_probability() {
    let (ds, pop) = theoph();
    let target = 8.0;
    let mut gained = 0.0;
    for s in ds.subjects.iter().take(4) {
        // Pre-dose sample and two levels: a posterior wide enough for the choice to matter.
        let mut s = s.clone();
        s.observations.truncate(3);
        let twin = TdmTwin::with_samples(&pop.model, &pop.estimates, &s, 1000, 5).unwrap();
        let u = unit_troughs(&twin);
        let map = recommend_for(
            &twin,
            Target::Trough(target),
            REG,
            None,
            1.0,
            0.0,
            Objective::Map,
        )
        .unwrap();
        let best = recommend_for(
            &twin,
            Target::Trough(target),
            REG,
            None,
            1.0,
            0.0,
            Objective::InRange { tolerance: 0.2 },
        )
        .unwrap();
        let (pm, pb) = (map.p_target.unwrap(), best.p_target.unwrap());
        let pb_here = p_in_range(&u, best.dose, target, 0.2);
        assert!((pb - pb_here).abs() < 1e-9, "{pb} vs {pb_here}");
        assert!(pb >= pm - 1e-12, "subject {}: {pb} < {pm}", s.id);
        for i in 0..=2000 {
            let d = map.dose * (0.5 + i as f64 / 2000.0);
            let p = p_in_range(&u, d, target, 0.2);
            assert!(
                p <= pb + 1e-9,
                "subject {}: dose {d} gives {p} > {pb}",
                s.id
            );
        }
        let narrow = recommend_for(
            &twin,
            Target::Trough(target),
            REG,
            None,
            1.0,
            0.0,
            Objective::InRange { tolerance: 0.1 },
        )
        .unwrap();
        assert!(narrow.p_target.unwrap() < pb, "{narrow:?}");
        gained += pb - pm;
    }
    eprintln!(
        "mean gain in P(trough within ±20 %) over the MAP dose: {:.4}",
        gained / 4.0
    );
}

#[test]
fn bad_tolerance_is_refused() {
    let (ds, pop) = theoph();
    let twin = TdmTwin::with_samples(&pop.model, &pop.estimates, &ds.subjects[0], 50, 1).unwrap();
    for tol in [0.0, 1.0, f64::NAN, -0.1] {
        let e = recommend_for(
            &twin,
            Target::Trough(8.0),
            REG,
            None,
            1.0,
            0.0,
            Objective::InRange { tolerance: tol },
        )
        .unwrap_err();
        assert!(matches!(e, TdmError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("tolerance"), "{e}");
    }
}
