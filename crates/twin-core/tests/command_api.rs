//! The pieces of `medtwin twin … MODEL.xml` that the CLI and the Python package share:
//! `ObservableSpec::parse`, `CalibrationSpec::complete` / `first_without_noise`,
//! `Plan::from_toml`, `Twin::forecast_times`, `Twin::assimilate`; on the one-compartment oral
//! PK model in SBML (tests/data/twin/oral_pk_1cpt.xml, hours).

use medtwin_twin_core::{
    CalibrationSpec, Estimated, Measurement, ModelSource, Noise, ObservableSpec, Plan, Prior,
    SbmlTwinModel, Twin, TwinError, TwinModel,
};

const PK: &str = include_str!("../../../tests/data/twin/oral_pk_1cpt.xml");

fn model() -> SbmlTwinModel {
    SbmlTwinModel::from_sbml(PK, "h").unwrap()
}

#[test]
fn noise_parse() {
    let o = ObservableSpec::parse(" C = log-normal:0.1").unwrap();
    assert_eq!(o.id, "C");
    assert_eq!(o.noise, Noise::LogNormal { sigma: 0.1 });
    assert_eq!(
        ObservableSpec::parse("C=normal:2").unwrap().noise,
        Noise::Normal { sigma: 2.0 }
    );
    for bad in [
        "C",
        "C=normal",
        "C=gamma:1",
        "C=normal:0",
        "C=normal:-1",
        "=normal:1",
        "C=normal:inf",
    ] {
        let e = ObservableSpec::parse(bad).unwrap_err();
        assert!(
            matches!(&e, TwinError::Spec(m) if m.contains(bad)),
            "{bad}: {e}"
        );
    }
}

#[test]
fn complete_defaults_keeps_spec_entries_and_names_unknown_ids() {
    let m = model();
    let ke = m.nominal("ke").unwrap();
    let spec = CalibrationSpec {
        estimate: vec![Estimated {
            id: "ka".into(),
            prior: Prior::Normal { mean: 1.2, sd: 0.3 },
            lower: Some(0.01),
            upper: None,
        }],
        ..CalibrationSpec::default()
    };
    let c = spec
        .clone()
        .complete(
            &m,
            &["ke".into(), "ka".into()],
            vec![ObservableSpec::parse("C=log-normal:0.2").unwrap()],
        )
        .unwrap();
    assert_eq!(c.estimate.len(), 2);
    assert_eq!(
        c.estimate[0].prior,
        Prior::LogNormal {
            median: ke,
            sd_log: 1.0
        }
    );
    assert_eq!(c.estimate[1], spec.estimate[0]);
    assert_eq!(c.noise_of("C"), Some(Noise::LogNormal { sigma: 0.2 }));
    // A later noise replaces an earlier one; no ids keeps the spec's estimate list.
    let c2 = c
        .clone()
        .complete(
            &m,
            &[],
            vec![ObservableSpec::parse("C=normal:0.5").unwrap()],
        )
        .unwrap();
    assert_eq!(c2.estimate, c.estimate);
    assert_eq!(c2.observables.len(), 1);
    assert_eq!(c2.noise_of("C"), Some(Noise::Normal { sigma: 0.5 }));
    assert_eq!(c2.first_without_noise(["C", "A_gut", "C"]), Some("A_gut"));
    assert_eq!(c2.first_without_noise(["C"]), None);
    let e = spec.complete(&m, &["k_xyz".into()], vec![]).unwrap_err();
    assert!(
        matches!(&e, TwinError::Spec(s) if s.contains("k_xyz")),
        "{e}"
    );
}

#[test]
fn plan_toml_is_checked() {
    let p = Plan::from_toml(
        "[[dose]]\ntime = 1.5\ntarget = \"A_gut\"\namount = 100.0\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(p.doses.len(), 1);
    assert_eq!(Plan::from_toml("", "empty.toml").unwrap(), Plan::default());
    let e = Plan::from_toml(
        "[[dose]]\ntime = 1.0\ntarget = \"A_gut\"\namount = 1.0\n[[dose]]\ntime = -2.0\ntarget = \"A_gut\"\namount = 1.0\n",
        "bad.toml",
    )
    .unwrap_err();
    assert!(
        matches!(&e, TwinError::Data(m) if m.starts_with("bad.toml: dose 2 (target A_gut)")),
        "{e}"
    );
    assert!(matches!(
        Plan::from_toml("[[dose]]\ntime = 1.0\n", "x.toml"),
        Err(TwinError::Data(_))
    ));
}

#[test]
fn forecast_times_and_assimilate() {
    let dose = Plan::from_toml(
        "[[dose]]\ntime = 0.0\ntarget = \"A_gut\"\namount = 500.0\n",
        "h",
    )
    .unwrap();
    let ms = |ts: &[(f64, f64)]| -> Vec<Measurement> {
        ts.iter()
            .map(|&(t, v)| Measurement {
                observable: "C".into(),
                time: t,
                value: v,
                sigma: None,
            })
            .collect()
    };
    let spec = CalibrationSpec::default()
        .complete(
            &model(),
            &["ke".into()],
            vec![ObservableSpec::parse("C=log-normal:0.1").unwrap()],
        )
        .unwrap();
    let source = ModelSource::Sbml {
        text: PK.into(),
        time_unit: "h".into(),
    };
    let mut t = Twin::fit(source, spec, dose, ms(&[(1.0, 15.0), (4.0, 14.0)])).unwrap();
    assert_eq!(
        t.forecast_times(10.0, Some(2.0)).unwrap(),
        vec![6.0, 8.0, 10.0]
    );
    // The last step is clipped to `until`; the default step is a twentieth of the span.
    assert_eq!(
        t.forecast_times(9.0, Some(2.0)).unwrap(),
        vec![6.0, 8.0, 9.0]
    );
    let d = t.forecast_times(24.0, None).unwrap();
    assert_eq!(d.len(), 20);
    assert_eq!(*d.last().unwrap(), 24.0);
    assert!(t.forecast_times(4.0, None).is_err());
    assert!(t.forecast_times(f64::NAN, None).is_err());
    assert!(t.forecast_times(10.0, Some(0.0)).is_err());
    assert!(t.forecast_times(1e9, Some(1.0)).is_err());
    // Already-assimilated measurements are skipped; new ones counted.
    let n = t
        .assimilate(
            ms(&[(1.0, 15.0), (4.0, 14.0), (8.0, 9.0)]),
            &Plan::default(),
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(t.data.len(), 3);
    assert_eq!(
        t.assimilate(ms(&[(8.0, 9.0)]), &Plan::default()).unwrap(),
        0
    );
    assert_eq!(t.data.len(), 3);
}
