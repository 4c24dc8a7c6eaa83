//! The generic twin lifecycle on a model with an analytic solution: a one-compartment oral
//! pharmacokinetic model written in SBML (Bateman function), calibrated to noisy levels.

use medtwin_infer::stream_rng;
use medtwin_twin_core::data::parse_measurements;
use medtwin_twin_core::{
    backtest, CalibrationSpec, Dose, Estimated, Measurement, ModelSource, Noise, ObservableSpec,
    Plan, Prior, Twin, TwinError,
};
use rand::Rng;
use rand_distr::StandardNormal;

/// One-compartment oral PK in SBML (gut --ka--> central, V 20 L, --ke-->), hours, mg, mg/L.
const PK: &str = include_str!("../../../tests/data/twin/oral_pk_1cpt.xml");

/// The hidden patient: ke 0.25 /h (the model's nominal is 0.15), V 20 L, ka 1.2 /h.
const TRUE_KE: f64 = 0.25;
const KA: f64 = 1.2;
const V: f64 = 20.0;

fn source() -> ModelSource {
    ModelSource::Sbml {
        text: PK.into(),
        time_unit: "h".into(),
    }
}

fn history() -> Plan {
    Plan {
        doses: [0.0, 12.0, 24.0, 36.0]
            .iter()
            .map(|&t| Dose {
                time: t,
                target: "A_gut".into(),
                amount: 500.0,
                duration: 0.0,
            })
            .collect(),
    }
}

fn bateman(plan: &Plan, ke: f64, t: f64) -> f64 {
    plan.doses
        .iter()
        .filter(|d| d.time <= t)
        .map(|d| {
            let s = t - d.time;
            d.amount * KA / (V * (KA - ke)) * ((-ke * s).exp() - (-KA * s).exp())
        })
        .sum()
}

fn spec() -> CalibrationSpec {
    CalibrationSpec {
        estimate: vec![Estimated {
            id: "ke".into(),
            prior: Prior::LogNormal {
                median: 0.15,
                sd_log: 0.6,
            },
            lower: None,
            upper: None,
        }],
        observables: vec![ObservableSpec {
            id: "C".into(),
            noise: Noise::LogNormal { sigma: 0.1 },
        }],
        samples: 300,
        ..CalibrationSpec::default()
    }
}

/// Levels (mg/L) with 10 % log-normal error at the given times.
fn levels(times: &[f64], seed: u64) -> Vec<Measurement> {
    let mut rng = stream_rng(seed, 0);
    times
        .iter()
        .map(|&t| {
            let e: f64 = rng.sample(StandardNormal);
            Measurement {
                observable: "C".into(),
                time: t,
                value: bateman(&history(), TRUE_KE, t) * (0.1 * e).exp(),
                sigma: None,
            }
        })
        .collect()
}

fn mean_width80(p: &medtwin_twin_core::Prediction) -> f64 {
    let b = &p.of("C").unwrap().bands;
    b.iter().map(|x| x.hi80 - x.lo80).sum::<f64>() / b.len() as f64
}

#[test]
fn posterior_covers_truth_and_narrows_with_data() {
    let mut twin = Twin::fit(source(), spec(), history(), levels(&[2.0, 6.0, 11.5], 1)).unwrap();
    let s1 = twin.summary()[0].clone();
    assert!(s1.lo95 < TRUE_KE && TRUE_KE < s1.hi95, "{s1:?}");
    assert!(
        s1.sd_ratio < 0.8,
        "three levels must teach something: {s1:?}"
    );
    let future: Vec<f64> = (0..12).map(|k| 37.0 + k as f64).collect();
    let p1 = twin.forecast(&Plan::default(), &future).unwrap();
    twin.update(
        &levels(&[14.0, 18.0, 23.5, 26.0, 30.0, 35.5], 2),
        &Plan::default(),
    )
    .unwrap();
    let s2 = twin.summary()[0].clone();
    assert!(s2.lo95 < TRUE_KE && TRUE_KE < s2.hi95, "{s2:?}");
    assert!(s2.sd_ratio < s1.sd_ratio, "{s1:?} then {s2:?}");
    let p2 = twin.forecast(&Plan::default(), &future).unwrap();
    assert!(
        mean_width80(&p2) < mean_width80(&p1),
        "80 % band must narrow: {} -> {}",
        mean_width80(&p1),
        mean_width80(&p2)
    );
    // The predictive median tracks the truth within the noise level.
    for (k, &t) in future.iter().enumerate() {
        let med = p2.of("C").unwrap().bands[k].median;
        let truth = bateman(&history(), TRUE_KE, t);
        assert!((med / truth - 1.0).abs() < 0.15, "t {t}: {med} vs {truth}");
    }
}

#[test]
fn one_predictive_distribution_for_every_plan() {
    let twin = Twin::fit(
        source(),
        spec(),
        history(),
        levels(&[2.0, 6.0, 11.5, 20.0], 3),
    )
    .unwrap();
    let times = [40.0, 44.0, 48.0];
    let none = twin.forecast(&Plan::default(), &times).unwrap();
    let empty = twin.forecast(&Plan { doses: vec![] }, &times).unwrap();
    assert_eq!(none, empty);
    let dose = |amount: f64| Plan {
        doses: vec![Dose {
            time: 39.0,
            target: "A_gut".into(),
            amount,
            duration: 0.0,
        }],
    };
    let res = twin
        .whatif(
            &[
                ("250 mg".into(), dose(250.0)),
                ("1000 mg".into(), dose(1000.0)),
            ],
            &times,
        )
        .unwrap();
    for k in 0..times.len() {
        let m0 = none.of("C").unwrap().bands[k].median;
        let m1 = res[0].1.of("C").unwrap().bands[k].median;
        let m2 = res[1].1.of("C").unwrap().bands[k].median;
        assert!(
            m0 < m1 && m1 < m2,
            "more drug, higher level: {m0} {m1} {m2}"
        );
    }
    // A dose into something that is not a state is refused by name.
    let bad = Plan {
        doses: vec![Dose {
            time: 39.0,
            target: "ka".into(),
            amount: 1.0,
            duration: 0.0,
        }],
    };
    let err = twin.forecast(&bad, &times).unwrap_err().to_string();
    assert!(err.contains("'ka'"), "{err}");
    // An SBML twin takes instantaneous doses only: an infusion is refused, not given as a bolus.
    let infusion = Plan {
        doses: vec![Dose {
            time: 39.0,
            target: "A_gut".into(),
            amount: 1.0,
            duration: 2.0,
        }],
    };
    let err = twin.forecast(&infusion, &times).unwrap_err().to_string();
    assert!(
        err.contains("duration 2") && err.contains("instantaneous"),
        "{err}"
    );
}

#[test]
fn save_load_round_trip_and_format_checks() {
    let twin = Twin::fit(source(), spec(), history(), levels(&[2.0, 6.0, 11.5], 4)).unwrap();
    let json = twin.to_json().unwrap();
    let back = Twin::from_json(&json, "twin.json").unwrap();
    let times = [40.0, 47.0];
    assert_eq!(
        twin.forecast(&Plan::default(), &times).unwrap(),
        back.forecast(&Plan::default(), &times).unwrap()
    );
    let wrong = json.replace("\"version\":1", "\"version\":99");
    match Twin::from_json(&wrong, "old.json") {
        Err(TwinError::Format(m)) => assert!(m.contains("old.json") && m.contains("99"), "{m}"),
        Err(e) => panic!("expected a format error, got {e}"),
        Ok(_) => panic!("version 99 must be refused"),
    }
    assert!(matches!(
        Twin::from_json("{\"format\":\"other\"}", "x.json"),
        Err(TwinError::Format(_))
    ));
}

#[test]
fn backtest_scores_held_out_levels() {
    let times: Vec<f64> = (1..=24).map(|k| k as f64 * 1.5 + 0.25).collect();
    let data = levels(&times, 5);
    let r = backtest(
        &source(),
        &spec(),
        &history(),
        &data,
        &[6.0, 12.0, 18.0, 24.0],
        12.0,
    )
    .unwrap();
    assert_eq!(r.origins.len(), 4);
    assert!(r.pooled.n >= 24, "{:?}", r.pooled);
    assert!(
        (0.6..=1.0).contains(&r.pooled.coverage80),
        "pooled 80 % coverage {}",
        r.pooled.coverage80
    );
    assert!(r.pooled.rmse < 0.2, "log-scale RMSE {}", r.pooled.rmse);
}

#[test]
fn bad_input_is_named() {
    let mut s = spec();
    s.estimate[0].id = "kel".into();
    match Twin::fit(source(), s, history(), levels(&[2.0], 1)) {
        Err(TwinError::Spec(m)) => assert!(m.contains("'kel'"), "{m}"),
        other => panic!("expected a spec error, got {:?}", other.err()),
    }
    let mut data = levels(&[2.0], 1);
    data[0].observable = "A_gut".into();
    match Twin::fit(source(), spec(), history(), data) {
        Err(TwinError::Data(m)) => assert!(m.contains("A_gut"), "{m}"),
        other => panic!("expected a data error, got {:?}", other.err()),
    }
    let tsv = "observableId\ttime\tmeasurement\nC\t1.0\t2.5\nC\tone\t2.0\n";
    let err = parse_measurements(tsv, "levels.tsv")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("levels.tsv:3") && err.contains("'one'"),
        "{err}"
    );
    let err = parse_measurements("time\tvalue\n1\t2\n", "x.tsv")
        .unwrap_err()
        .to_string();
    assert!(err.contains("observableId"), "{err}");
}
