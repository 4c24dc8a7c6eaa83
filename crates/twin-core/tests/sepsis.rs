//! The sepsis twin (Reynolds et al. 2006) through the generic twin layer: the paper's outcome
//! thresholds, and the twin experiment with hidden true patients.

use medtwin_twin_core::sepsis::{
    experiment, observations, outcome_of, outcome_threshold, source, spec, Scenario,
};
use medtwin_twin_core::{Dose, Plan, Twin};

/// Reynolds 2006 (and libRoadRunner on BIOMD0000000714): the untreated outcome changes at
/// P0 = 1.035667 for k_pg = 0.3 (to aseptic death) and at P0 = 0.361044 for k_pg = 0.6 (to
/// septic death).
#[test]
fn outcome_thresholds_match_the_published_values() {
    let a = outcome_threshold(0.3, 0.9, 1.2, 1e-6).unwrap();
    assert!((a - 1.035667).abs() < 1e-3, "k_pg 0.3 threshold {a}");
    assert_eq!(
        outcome_of(0.3, a + 1e-3, &Plan::default()).unwrap(),
        "aseptic death"
    );
    let s = outcome_threshold(0.6, 0.2, 0.5, 1e-6).unwrap();
    assert!((s - 0.361044).abs() < 1e-3, "k_pg 0.6 threshold {s}");
    assert_eq!(
        outcome_of(0.6, s + 1e-3, &Plan::default()).unwrap(),
        "septic death"
    );
    // A bracket without a change is an error, not a made-up number.
    assert!(outcome_threshold(0.3, 0.1, 0.2, 1e-6).is_err());
}

/// Twin experiment: from 3-hourly noisy Nstar and D (pathogen unobserved) the probability of
/// the true outcome class reaches 0.8 by 24 h for every hidden patient and does not fall as
/// data accrue; the 80 % band of D at 48 h narrows from 6 h to 24 h of data where the
/// outcome was uncertain.
#[test]
fn outcome_probability_of_the_true_class_rises_with_data() {
    for sc in Scenario::standard() {
        let r = experiment(&sc, &[6.0, 12.0, 24.0]).unwrap();
        let p: Vec<f64> = r.by_window.iter().map(|w| w.1).collect();
        assert!(
            p[2] >= 0.8,
            "{}: P(true class {}) after 24 h = {:?}",
            sc.name,
            r.true_class,
            p
        );
        assert!(p[2] >= p[0] - 0.02, "{}: {:?}", sc.name, p);
        let w: Vec<f64> = r.by_window.iter().map(|w| w.2).collect();
        if p[0] < 0.95 {
            assert!(w[2] < w[0], "{}: D band widths {:?}", sc.name, w);
        }
    }
}

/// Anti-inflammatory what-if on the twin of a patient heading for aseptic death: the same
/// posterior answers "no plan" and "empty plan" identically, and a dose of anti-inflammatory
/// mediator changes the damage forecast.
#[test]
fn anti_inflammatory_whatif_on_the_same_posterior() {
    let sc = Scenario {
        name: "aseptic".into(),
        k_pg: 0.3,
        p0: 1.3,
    };
    let data = observations(&sc, 24.0, 3.0, 11).unwrap();
    let twin = Twin::fit(source(), spec().unwrap(), Plan::default(), data).unwrap();
    let none = twin.forecast(&Plan::default(), &[30.0, 48.0]).unwrap();
    let empty = twin
        .whatif(&[("empty".into(), Plan { doses: vec![] })], &[30.0, 48.0])
        .unwrap();
    assert_eq!(
        none, empty[0].1,
        "no plan and an empty plan are the same question"
    );
    let dosed = Plan {
        doses: vec![Dose {
            time: 24.0,
            target: "C_A".into(),
            amount: 1.0,
            duration: 0.0,
        }],
    };
    let p = twin.forecast(&dosed, &[30.0, 48.0]).unwrap();
    let d_none = none.of("D").unwrap().bands[1].median;
    let d_dosed = p.of("D").unwrap().bands[1].median;
    assert!(
        (d_none - d_dosed).abs() > 1e-3,
        "an anti-inflammatory dose must change the damage forecast: {d_none} vs {d_dosed}"
    );
}
