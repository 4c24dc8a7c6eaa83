//! PD models: Emax identities, the effect compartment against its analytic solution, the
//! indirect-response steady states, and R deSolve reference trajectories
//! (`tests/data/pk/pd_reference.R`).

use medtwin_pk::model::{PkModel, PkParams};
use medtwin_pk::pd::{
    effect_site_concentrations, emax, indirect_response, sigmoid_emax, IndirectParams,
    IndirectResponse, PdError,
};
use medtwin_pk::Dose;
use medtwin_simulate::SolverOptions;

fn tight() -> SolverOptions {
    SolverOptions {
        rtol: 1e-12,
        atol: 1e-12,
        h_max_min: 60.0,
        max_steps: 1_000_000,
    }
}

fn infusion(time_h: f64, amount: f64, rate: f64, cmt: u32) -> Dose {
    Dose {
        rate,
        ..Dose::bolus(time_h, amount, cmt)
    }
}

#[test]
fn emax_identities() {
    let (e0, em, ec50) = (5.0, 80.0, 2.5);
    assert_eq!(emax(0.0, e0, em, ec50), e0);
    assert!((emax(ec50, e0, em, ec50) - (e0 + em / 2.0)).abs() < 1e-12);
    assert!((emax(1e12, e0, em, ec50) - (e0 + em)).abs() < 1e-9);
    for hill in [0.5, 1.0, 2.0, 4.7, 60.0] {
        assert_eq!(sigmoid_emax(0.0, e0, em, ec50, hill), e0);
        let half = sigmoid_emax(ec50, e0, em, ec50, hill);
        assert!((half - (e0 + em / 2.0)).abs() < 1e-12, "γ={hill}: {half}");
        // (C/EC50)^γ = 3 gives three quarters of Emax
        let c75 = ec50 * 3f64.powf(1.0 / hill);
        let e75 = sigmoid_emax(c75, e0, em, ec50, hill);
        assert!((e75 - (e0 + 0.75 * em)).abs() < 1e-11, "γ={hill}: {e75}");
        // slope in log concentration at EC50 is Emax·γ/4
        let h: f64 = 1e-5;
        let slope = (sigmoid_emax(ec50 * h.exp(), e0, em, ec50, hill)
            - sigmoid_emax(ec50 * (-h).exp(), e0, em, ec50, hill))
            / (2.0 * h);
        assert!(
            (slope - em * hill / 4.0).abs() < 1e-6 * em * hill,
            "γ={hill}: slope {slope}"
        );
        // no overflow for large γ and C
        assert!(sigmoid_emax(1e6, e0, em, ec50, hill).is_finite());
    }
    for c in [0.1, 1.0, 3.0, 50.0] {
        let a = sigmoid_emax(c, e0, em, ec50, 1.0);
        assert!((a - emax(c, e0, em, ec50)).abs() < 1e-12);
    }
}

#[test]
fn effect_compartment_matches_analytic_solutions() {
    let model = PkModel::parse("1cpt-iv").unwrap();
    let p = PkParams::from_named([("CL", 2.0), ("V", 10.0)]).unwrap();
    let (k, ke0) = (0.2, 0.7);
    // constant-rate infusion of 30 mg/h for 10 h: C = R/CL (1 − e^(−kt))
    let (r, dur) = (30.0, 10.0);
    let ts: Vec<f64> = (0..=100).map(|i| i as f64 * 0.1).collect();
    let ce = effect_site_concentrations(
        &model,
        &p,
        ke0,
        &[infusion(0.0, r * dur, r, 1)],
        &ts,
        tight(),
    )
    .unwrap();
    let mut worst = 0.0f64;
    for (&t, &got) in ts.iter().zip(&ce) {
        let css = r / 2.0;
        let want = css * (1.0 - (ke0 * (-k * t).exp() - k * (-ke0 * t).exp()) / (ke0 - k));
        let e = (got - want).abs() / want.abs().max(1e-6 * css);
        worst = worst.max(e);
        assert!(e < 1e-9, "t={t}: Ce {got} vs {want}");
    }
    eprintln!("effect compartment (infusion) vs analytic: max rel {worst:.2e}");
    // bolus: Ce = D/V · ke0/(ke0 − k) · (e^(−kt) − e^(−ke0 t))
    let ts: Vec<f64> = (1..=60).map(|i| i as f64 * 0.5).collect();
    let ce =
        effect_site_concentrations(&model, &p, ke0, &[Dose::bolus(0.0, 100.0, 1)], &ts, tight())
            .unwrap();
    for (&t, &got) in ts.iter().zip(&ce) {
        let want = 10.0 * ke0 / (ke0 - k) * ((-k * t).exp() - (-ke0 * t).exp());
        assert!(
            (got - want).abs() < 1e-9 * want,
            "t={t}: Ce {got} vs {want}"
        );
    }
    // fast equilibration: Ce → C
    let c = model
        .concentration(&p, &[Dose::bolus(0.0, 100.0, 1)], 5.0)
        .unwrap();
    let fast = effect_site_concentrations(
        &model,
        &p,
        500.0,
        &[Dose::bolus(0.0, 100.0, 1)],
        &[5.0],
        tight(),
    )
    .unwrap();
    assert!((fast[0] - c).abs() < 2e-3 * c, "{} vs {c}", fast[0]);
}

fn idr_params() -> IndirectParams {
    IndirectParams {
        kin: 10.0,
        kout_per_h: 0.5,
        max_effect: 0.9,
        c50: 4.0,
        hill: 1.5,
    }
}

fn with_max(kind: IndirectResponse) -> IndirectParams {
    IndirectParams {
        max_effect: if kind.inhibits() { 0.9 } else { 3.0 },
        ..idr_params()
    }
}

/// R_ss under constant C, written out from Dayneka, Garg & Jusko (1993) Table I.
fn r_ss_by_hand(kind: IndirectResponse, ip: &IndirectParams, c: f64) -> f64 {
    let f = c.powf(ip.hill) / (ip.c50.powf(ip.hill) + c.powf(ip.hill));
    let (kin, kout, m) = (ip.kin, ip.kout_per_h, ip.max_effect);
    match kind {
        IndirectResponse::InhibitProduction => kin * (1.0 - m * f) / kout,
        IndirectResponse::InhibitLoss => kin / (kout * (1.0 - m * f)),
        IndirectResponse::StimulateProduction => kin * (1.0 + m * f) / kout,
        IndirectResponse::StimulateLoss => kin / (kout * (1.0 + m * f)),
    }
}

#[test]
fn indirect_responses_reach_their_analytic_steady_states() {
    let model = PkModel::parse("1cpt-iv").unwrap();
    let p = PkParams::from_named([("CL", 2.0), ("V", 10.0)]).unwrap();
    let rate = 10.0; // C_ss = rate/CL = 5 mg/L
    let c = rate / 2.0;
    for kind in IndirectResponse::ALL {
        let ip = with_max(kind);
        let want = r_ss_by_hand(kind, &ip, c);
        assert!((ip.steady_state(kind, c) - want).abs() < 1e-12 * want);
        assert!(ip.rate(kind, want, c).abs() < 1e-12 * ip.kin);
        // (a) a long constant infusion: after 200 h, e^(−0.2·200) and e^(−kout_eff·200) ≈ 0
        let r = indirect_response(
            &model,
            &p,
            kind,
            &ip,
            &[infusion(0.0, rate * 1000.0, rate, 1)],
            &[0.0, 200.0],
            tight(),
        )
        .unwrap();
        assert!(
            (r[0] - ip.baseline()).abs() < 1e-12 * ip.baseline(),
            "{kind:?}"
        );
        assert!(
            (r[1] - want).abs() < 1e-8 * want,
            "{kind:?}: R(200 h) {} vs R_ss {want}",
            r[1]
        );
        // (b) SS=1 with an infusion lasting the whole interval: the coupled system is at its
        // steady state from the record on (C constant, R = R_ss)
        let ss = Dose {
            ii_h: 24.0,
            ss: true,
            ..infusion(0.0, rate * 24.0, rate, 1)
        };
        let r =
            indirect_response(&model, &p, kind, &ip, &[ss], &[0.0, 3.0, 23.9], tight()).unwrap();
        for v in r {
            assert!((v - want).abs() < 1e-8 * want, "{kind:?} SS: {v} vs {want}");
        }
    }
}

#[test]
fn indirect_response_baseline_and_direction() {
    let model = PkModel::parse("1cpt-oral").unwrap();
    let p = PkParams::from_named([("CL", 2.0), ("V", 10.0), ("KA", 1.5), ("ALAG", 0.5)]).unwrap();
    let doses = [Dose::bolus(2.0, 100.0, 1)];
    for kind in IndirectResponse::ALL {
        let ip = with_max(kind);
        let r =
            indirect_response(&model, &p, kind, &ip, &doses, &[-1.0, 2.4, 6.0], tight()).unwrap();
        // baseline until the (lagged) dose arrives
        assert_eq!(r[0], 20.0);
        assert!((r[1] - 20.0).abs() < 1e-12);
        let up = matches!(
            kind,
            IndirectResponse::InhibitLoss | IndirectResponse::StimulateProduction
        );
        assert_eq!(r[2] > 20.0, up, "{kind:?}: {}", r[2]);
    }
}

#[test]
fn invalid_pd_parameters_are_errors() {
    let model = PkModel::parse("1cpt-iv").unwrap();
    let p = PkParams::default();
    let d = [Dose::bolus(0.0, 1.0, 1)];
    let mut ip = idr_params();
    ip.max_effect = 1.5;
    let r = indirect_response(
        &model,
        &p,
        IndirectResponse::InhibitLoss,
        &ip,
        &d,
        &[1.0],
        tight(),
    );
    assert!(matches!(r, Err(PdError::BadParameter { .. })));
    // Emax > 1 is fine for stimulation
    indirect_response(
        &model,
        &p,
        IndirectResponse::StimulateLoss,
        &ip,
        &d,
        &[1.0],
        tight(),
    )
    .unwrap();
    ip = idr_params();
    ip.kout_per_h = 0.0;
    assert!(indirect_response(
        &model,
        &p,
        IndirectResponse::StimulateLoss,
        &ip,
        &d,
        &[1.0],
        tight()
    )
    .is_err());
    ip = idr_params();
    ip.c50 = f64::NAN;
    assert!(indirect_response(
        &model,
        &p,
        IndirectResponse::StimulateLoss,
        &ip,
        &d,
        &[1.0],
        tight()
    )
    .is_err());
    assert!(effect_site_concentrations(&model, &p, 0.0, &d, &[1.0], tight()).is_err());
    assert!(effect_site_concentrations(&model, &p, -1.0, &d, &[1.0], tight()).is_err());
    let bad_dose = [Dose::bolus(0.0, 1.0, 2)];
    assert!(matches!(
        effect_site_concentrations(&model, &p, 1.0, &bad_dose, &[1.0], tight()),
        Err(PdError::Ode(_))
    ));
}

/// R deSolve (lsoda, rtol 1e-10) reference: 1-cpt oral PK + effect compartment + the four
/// indirect-response models; see tests/data/pk/pd_reference.R for the parameters.
#[test]
fn matches_r_desolve_reference() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../tests/data/pk/deSolve_1cpt_oral_pd.csv"
    );
    let text = std::fs::read_to_string(path).expect("reference CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').map(str::trim).collect();
    assert_eq!(
        header,
        ["time", "depot", "central", "Ce", "R1", "R2", "R3", "R4"]
    );
    let rows: Vec<Vec<f64>> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|v| v.trim().parse().unwrap()).collect())
        .collect();
    assert!(rows.len() > 50);
    let ts: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    let col = |j: usize| -> Vec<f64> { rows.iter().map(|r| r[j]).collect() };

    let model = PkModel::parse("1cpt-oral").unwrap();
    let p = PkParams::from_named([("CL", 2.0), ("V", 10.0), ("KA", 1.5)]).unwrap();
    let doses = [Dose::bolus(0.0, 100.0, 1), Dose::bolus(12.0, 50.0, 1)];
    let rel = |ours: &[f64], theirs: &[f64], skip_event: bool| -> f64 {
        let big = theirs.iter().map(|v| v.abs()).fold(0.0, f64::max);
        ours.iter()
            .zip(theirs)
            .zip(&ts)
            // deSolve reports the state just before an event at the event's time
            .filter(|(_, &t)| !(skip_event && t == 12.0))
            .map(|((a, b), _)| (a - b).abs() / b.abs().max(1e-6 * big))
            .fold(0.0, f64::max)
    };
    let amounts = medtwin_pk::ode::simulate_amounts(&model, &p, &doses, &ts, tight()).unwrap();
    let depot: Vec<f64> = amounts.iter().map(|r| r[0]).collect();
    let central: Vec<f64> = amounts.iter().map(|r| r[1]).collect();
    let closed: Vec<f64> = ts
        .iter()
        .map(|&t| model.amounts(&p, &doses, t).unwrap()[1])
        .collect();
    let ce = effect_site_concentrations(&model, &p, 0.7, &doses, &ts, tight()).unwrap();
    let mut report = vec![
        ("depot", rel(&depot, &col(1), true)),
        ("central", rel(&central, &col(2), false)),
        ("central (closed form)", rel(&closed, &col(2), false)),
        ("Ce", rel(&ce, &col(3), false)),
    ];
    for (j, kind) in IndirectResponse::ALL.into_iter().enumerate() {
        let ip = with_max(kind);
        let r = indirect_response(&model, &p, kind, &ip, &doses, &ts, tight()).unwrap();
        report.push((["R1", "R2", "R3", "R4"][j], rel(&r, &col(4 + j), false)));
    }
    eprintln!("vs deSolve, max relative difference: {report:?}");
    for (name, e) in report {
        assert!(e < 1e-6, "{name}: {e:e} vs deSolve");
    }
}
