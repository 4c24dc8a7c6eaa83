//! Closed-form PK (`model.rs`) against the engine's ODE path (`ode.rs`), analytic formulas and
//! mrgsolve reference values.

use medtwin_pk::model::{PkModel, PkParams};
use medtwin_pk::ode::{simulate_amounts, OdeError, PkOde};
use medtwin_pk::Dose;
use medtwin_simulate::SolverOptions;

const MODELS: [&str; 6] = [
    "1cpt-iv",
    "1cpt-oral",
    "2cpt-iv",
    "2cpt-oral",
    "3cpt-iv",
    "3cpt-oral",
];

/// rtol 1e-12 with atol 1e-14 (amount units). atol is absolute: the acceptance floor of
/// [`max_rel`] is 1e-9 × 1e-6 × the compartment's maximum ≈ 1e-13 for doses of ~100, so an
/// atol of 1e-12 lets slowly emptying depots (1e-4 of a 100 dose after 13 absorption
/// half-lives) drift by ~2e-9 of the floor; see `parity_at_atol_1e12`.
fn tight() -> SolverOptions {
    SolverOptions {
        rtol: 1e-12,
        atol: 1e-14,
        h_max_min: 60.0,
        max_steps: 1_000_000,
    }
}

fn params(model: &PkModel) -> PkParams {
    let named: Vec<(&str, f64)> = match model.n_peripheral() {
        0 => vec![("CL", 2.0), ("V", 10.0)],
        1 => vec![("CL", 10.0), ("V", 35.0), ("Q", 15.0), ("V2", 105.0)],
        _ => vec![
            ("CL", 5.0),
            ("V", 20.0),
            ("Q", 8.0),
            ("V2", 40.0),
            ("Q3", 2.0),
            ("V3", 100.0),
        ],
    };
    let mut p = PkParams::from_named(named).unwrap();
    p.ka_per_h = 1.3;
    p.lag_h = 0.6;
    p.f_bio = 0.8;
    p
}

fn dose(time_h: f64, amount: f64, rate: f64, cmt: u32, ii_h: f64, addl: u32, ss: bool) -> Dose {
    Dose {
        time_h,
        amount,
        rate,
        cmt,
        ii_h,
        addl,
        ss,
    }
}

/// Dosing scenarios for a model: (name, doses). `c` = central CMT, `d` = depot (or central).
fn scenarios(model: &PkModel) -> Vec<(&'static str, Vec<Dose>)> {
    let c = model.central_cmt();
    let d = 1; // depot for oral models, central for IV
    vec![
        ("bolus", vec![Dose::bolus(0.0, 1000.0, c)]),
        ("infusion", vec![dose(1.0, 1000.0, 250.0, c, 0.0, 0, false)]),
        (
            "oral+lag+F",
            vec![
                Dose::bolus(0.0, 500.0, d),
                dose(7.0, 300.0, 150.0, d, 0.0, 0, false),
            ],
        ),
        (
            "addl",
            vec![
                dose(0.0, 400.0, 0.0, d, 12.0, 5, false),
                dose(2.0, 200.0, 100.0, c, 24.0, 2, false),
            ],
        ),
        (
            "ss-bolus",
            vec![
                Dose::bolus(0.0, 100.0, c),
                dose(10.0, 400.0, 0.0, d, 12.0, 2, true),
            ],
        ),
        (
            "ss-infusion",
            vec![dose(5.0, 600.0, 200.0, c, 8.0, 3, true)],
        ),
        (
            "mixed",
            vec![
                Dose::bolus(0.0, 300.0, c),
                dose(3.0, 500.0, 125.0, c, 0.0, 0, false),
                dose(5.0, 250.0, 0.0, d, 6.0, 3, false),
                dose(30.0, 200.0, 0.0, d, 8.0, 1, true),
                dose(40.0, 100.0, 400.0, c, 0.0, 0, false),
                Dose::bolus(44.5, 50.0, d),
            ],
        ),
        (
            "ss-lag-longer-than-ii",
            vec![dose(4.0, 100.0, 0.0, d, 0.5, 4, true)],
        ),
    ]
}

fn times() -> Vec<f64> {
    let mut t: Vec<f64> = (0..=480).map(|i| i as f64 * 0.2).collect();
    // event times, lagged arrivals and the instants around them
    for e in [
        0.0, 0.6, 1.0, 3.0, 4.0, 4.3, 5.0, 5.6, 7.0, 7.6, 9.0, 10.0, 10.3, 10.6, 12.0, 22.6, 30.0,
        30.3, 30.6, 40.0, 40.25, 44.5, 45.1, 150.0, 400.0,
    ] {
        t.extend([e, e + 1e-3, e - 1e-3]);
    }
    t.retain(|&x| x >= 0.0);
    t
}

/// Largest relative difference over all times and compartments, with a per-compartment floor
/// of 1e-6 × the compartment's largest value over the trajectory.
fn max_rel(a: &[Vec<f64>], b: &[Vec<f64>]) -> (f64, usize, usize) {
    let ncol = a[0].len();
    let mut worst = (0.0, 0, 0);
    for k in 0..ncol {
        let big = a.iter().map(|r| r[k].abs()).fold(0.0, f64::max);
        for (i, (ra, rb)) in a.iter().zip(b).enumerate() {
            let scale = ra[k].abs().max(1e-6 * big).max(1e-300);
            let e = (ra[k] - rb[k]).abs() / scale;
            if e > worst.0 {
                worst = (e, i, k);
            }
        }
    }
    worst
}

fn closed_form(model: &PkModel, p: &PkParams, doses: &[Dose], ts: &[f64]) -> Vec<Vec<f64>> {
    ts.iter()
        .map(|&t| model.amounts(p, doses, t).unwrap())
        .collect()
}

/// Max relative error of closed form vs ODE per model (over all scenarios) under `opts`.
fn parity(opts: SolverOptions, bound: f64) -> Vec<String> {
    let ts = times();
    let mut report = Vec::new();
    for name in MODELS {
        let model = PkModel::parse(name).unwrap();
        let p = params(&model);
        let mut model_worst = 0.0f64;
        for (scen, doses) in scenarios(&model) {
            let cf = closed_form(&model, &p, &doses, &ts);
            let ode = simulate_amounts(&model, &p, &doses, &ts, opts)
                .unwrap_or_else(|e| panic!("{name} {scen}: {e}"));
            let (e, i, k) = max_rel(&cf, &ode);
            assert!(
                e <= bound,
                "{name} {scen}: rel {e:e} at t = {} h, compartment {k}: closed {} vs ODE {}",
                ts[i],
                cf[i][k],
                ode[i][k]
            );
            model_worst = model_worst.max(e);
            // the concentrations API agrees with the amounts
            let c = model.concentrations(&p, &doses, &ts).unwrap();
            for (ci, row) in c.iter().zip(&cf) {
                let a = row[model.central_index()] / p.v1_l;
                assert!(
                    (ci - a).abs() <= 1e-14 * a.abs().max(1e-300),
                    "{name} {scen}"
                );
            }
        }
        report.push(format!("{name} {model_worst:.2e}"));
    }
    report
}

#[test]
fn closed_form_matches_ode_for_all_models_and_dosing() {
    let r = parity(tight(), 1e-9);
    eprintln!(
        "closed form vs ODE (rtol 1e-12, atol 1e-14), max relative error: {}",
        r.join(", ")
    );
}

#[test]
fn parity_at_atol_1e12() {
    let opts = SolverOptions {
        atol: 1e-12,
        ..tight()
    };
    let r = parity(opts, 5e-9);
    eprintln!(
        "closed form vs ODE (rtol 1e-12, atol 1e-12), max relative error: {}",
        r.join(", ")
    );
}

#[test]
fn bateman_function_for_one_compartment_oral() {
    let model = PkModel::parse("1cpt-oral").unwrap();
    let p = PkParams::from_named([("CL", 2.0), ("V", 10.0), ("KA", 1.5), ("F", 0.8)]).unwrap();
    let dose = 100.0;
    let (ka, ke, v, f) = (1.5, 0.2, 10.0, 0.8);
    let ts: Vec<f64> = (0..=96).map(|i| i as f64 * 0.25).collect();
    let doses = [Dose::bolus(0.0, dose, 1)];
    let cf = model.concentrations(&p, &doses, &ts).unwrap();
    let ode = simulate_amounts(&model, &p, &doses, &ts, tight()).unwrap();
    for (i, &t) in ts.iter().enumerate() {
        let bateman = f * dose * ka / (v * (ka - ke)) * ((-ke * t).exp() - (-ka * t).exp());
        let scale = bateman.abs().max(1e-9);
        assert!(
            (cf[i] - bateman).abs() <= 1e-12 * scale,
            "t={t}: {} vs {bateman}",
            cf[i]
        );
        assert!((ode[i][1] / v - bateman).abs() <= 1e-9 * scale, "t={t}");
    }
    // with a lag the curve is shifted
    let mut pl = p;
    pl.lag_h = 0.75;
    let c = model.concentration(&pl, &doses, 2.75).unwrap();
    let b = f * dose * ka / (v * (ka - ke)) * ((-ke * 2.0f64).exp() - (-ka * 2.0f64).exp());
    assert!((c - b).abs() < 1e-12 * b);
    assert_eq!(model.concentration(&pl, &doses, 0.7).unwrap(), 0.0);
}

#[test]
fn one_compartment_infusion_formula() {
    let model = PkModel::parse("1cpt-iv").unwrap();
    let p = PkParams::from_named([("CL", 3.0), ("V", 20.0)]).unwrap();
    let (rate, dur, ke) = (50.0, 4.0, 0.15);
    let doses = [dose(0.0, rate * dur, rate, 1, 0.0, 0, false)];
    let ts: Vec<f64> = (0..=80).map(|i| i as f64 * 0.3).collect();
    let ode = simulate_amounts(&model, &p, &doses, &ts, tight()).unwrap();
    for (i, &t) in ts.iter().enumerate() {
        let expect = if t <= dur {
            rate / 3.0 * (1.0 - (-ke * t).exp())
        } else {
            rate / 3.0 * (1.0 - (-ke * dur).exp()) * (-ke * (t - dur)).exp()
        };
        let c = model.concentration(&p, &doses, t).unwrap();
        let scale = expect.max(1e-9);
        assert!(
            (c - expect).abs() <= 1e-12 * scale,
            "t={t}: {c} vs {expect}"
        );
        assert!((ode[i][0] / 20.0 - expect).abs() <= 1e-9 * scale, "t={t}");
    }
}

#[test]
fn depot_infusion_keeps_its_rate_when_f_changes_the_amount() {
    // NONMEM/mrgsolve: with RATE fixed, F scales the duration (F·AMT/RATE), not the rate.
    let model = PkModel::parse("1cpt-oral").unwrap();
    let p = PkParams::from_named([("CL", 2.0), ("V", 10.0), ("KA", 0.7), ("F", 0.5)]).unwrap();
    let doses = [dose(0.0, 100.0, 50.0, 1, 0.0, 0, false)]; // 1 h at 50/h
    let a = model.amounts(&p, &doses, 1.0).unwrap();
    let expect = 50.0 / 0.7 * (1.0 - (-0.7f64).exp());
    assert!(
        (a[0] - expect).abs() < 1e-12 * expect,
        "{} vs {expect}",
        a[0]
    );
    let a2 = model.amounts(&p, &doses, 3.0).unwrap();
    assert!((a2[0] - expect * (-0.7f64 * 2.0).exp()).abs() < 1e-12 * expect);
    let ode = simulate_amounts(&model, &p, &doses, &[1.0, 3.0], tight()).unwrap();
    assert!((ode[0][0] - a[0]).abs() < 1e-10 * a[0]);
    assert!((ode[1][0] - a2[0]).abs() < 1e-10 * a2[0]);
}

#[test]
fn steady_state_trough_of_one_compartment_bolus() {
    let model = PkModel::parse("1cpt-iv").unwrap();
    let p = PkParams::from_named([("CL", 2.0), ("V", 10.0)]).unwrap();
    let (d, tau, ke, v) = (100.0, 12.0, 0.2, 10.0);
    let doses = [dose(0.0, d, 0.0, 1, tau, 0, true)];
    let trough = d * (-ke * tau).exp() / (v * (1.0 - (-ke * tau).exp()));
    let peak = d / (v * (1.0 - (-ke * tau).exp()));
    let c = model.concentrations(&p, &doses, &[0.0, tau]).unwrap();
    assert!((c[0] - peak).abs() < 1e-12 * peak, "{} vs {peak}", c[0]);
    assert!(
        (c[1] - trough).abs() < 1e-12 * trough,
        "{} vs {trough}",
        c[1]
    );
    let ode = simulate_amounts(&model, &p, &doses, &[0.0, tau], tight()).unwrap();
    assert!((ode[0][0] / v - peak).abs() < 1e-10 * peak);
    assert!((ode[1][0] / v - trough).abs() < 1e-10 * trough);
    // just before the SS record the (reset) system still holds what came before: nothing
    assert_eq!(model.concentration(&p, &doses, -0.1).unwrap(), 0.0);
}

#[test]
fn steady_state_is_the_limit_of_many_additional_doses() {
    for name in MODELS {
        let model = PkModel::parse(name).unwrap();
        let p = params(&model);
        let d = 1; // depot (with lag and F) or central
        let tau = 8.0;
        for rate in [0.0, 300.0] {
            let n = 400u32; // λ_min τ ≥ 0.08 here: e^(−0.08·400) ≈ 1e-14
            let t_last = n as f64 * tau;
            let train = [dose(0.0, 600.0, rate, d, tau, n, false)];
            let ss = [dose(t_last, 600.0, rate, d, tau, 0, true)];
            for s in [0.0, 0.3, 0.6, 1.0, 2.5, 5.0, 7.9] {
                let t = t_last + s;
                let a = model.amounts(&p, &train, t).unwrap();
                let b = model.amounts(&p, &ss, t).unwrap();
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        (x - y).abs() <= 1e-9 * x.abs().max(1e-6),
                        "{name} rate {rate} t={t}: ADDL {x} vs SS {y}"
                    );
                }
            }
        }
    }
}

/// mrgsolve's `pk2` model (depot → central ⇄ peripheral; CL 10, Q 15, VC 35, VP 105, KA 2),
/// one dose of 10 000 into the depot at 0: amounts at 1 h.
#[test]
fn mrgsolve_two_compartment_oral_reference() {
    let model = PkModel::parse("2cpt-oral").unwrap();
    let p = PkParams::from_named([
        ("CL", 10.0),
        ("Q", 15.0),
        ("VC", 35.0),
        ("VP", 105.0),
        ("KA", 2.0),
    ])
    .unwrap();
    let doses = [Dose::bolus(0.0, 10_000.0, 1)];
    let (central, peripheral) = (5597.489, 1787.0134);
    let a = model.amounts(&p, &doses, 1.0).unwrap();
    let o = simulate_amounts(&model, &p, &doses, &[1.0], tight()).unwrap();
    eprintln!(
        "mrgsolve pk2 at 1 h: closed form central {:.7} peripheral {:.7}; ODE central {:.7} peripheral {:.7}",
        a[1], a[2], o[0][1], o[0][2]
    );
    for (got, want) in [
        (a[1], central),
        (a[2], peripheral),
        (o[0][1], central),
        (o[0][2], peripheral),
    ] {
        assert!(
            (got - want).abs() <= 1e-6 * want,
            "{got} vs mrgsolve {want} (rel {:e})",
            (got - want).abs() / want
        );
    }
    // depot = D e^(−ka t)
    assert!((a[0] - 10_000.0 * (-2.0f64).exp()).abs() < 1e-9);
}

#[test]
fn three_compartment_cubic_roots_checked_by_the_ode() {
    // wide spread, near-identical peripheral rates, and a very slow deep compartment
    let sets = [
        [5.0, 20.0, 8.0, 40.0, 2.0, 100.0],
        [5.0, 20.0, 8.0, 40.0, 4.0, 20.0 * 1.0000001],
        [50.0, 5.0, 1.0, 300.0, 30.0, 10.0],
        [0.5, 10.0, 40.0, 20.0, 0.05, 500.0],
    ];
    let model = PkModel::parse("3cpt-iv").unwrap();
    for s in sets {
        let p = PkParams::from_named([
            ("CL", s[0]),
            ("V", s[1]),
            ("Q", s[2]),
            ("V2", s[3]),
            ("Q3", s[4]),
            ("V3", s[5]),
        ])
        .unwrap();
        let roots = model.disposition_rates(&p);
        assert_eq!(roots.len(), 3);
        // the invariants of the cubic: trace and product of the rate matrix
        let (k10, k12, k21, k13, k31) = (
            s[0] / s[1],
            s[2] / s[1],
            s[2] / s[3],
            s[4] / s[1],
            s[4] / s[5],
        );
        let sum: f64 = roots.iter().sum();
        assert!(
            (sum - (k10 + k12 + k21 + k13 + k31)).abs() < 1e-12 * sum,
            "{s:?}"
        );
        let prod: f64 = roots.iter().product();
        assert!((prod - k10 * k21 * k31).abs() < 1e-10 * prod, "{s:?}");
        assert!(roots.iter().all(|&r| r > 0.0), "{roots:?}");
        // the ODE solution agrees with the exponentials built from those roots
        let doses = [
            Dose::bolus(0.0, 1000.0, 1),
            dose(2.0, 500.0, 100.0, 1, 0.0, 0, false),
        ];
        let ts: Vec<f64> = (0..=200).map(|i| i as f64 * 0.37).collect();
        let cf = closed_form(&model, &p, &doses, &ts);
        let ode = simulate_amounts(&model, &p, &doses, &ts, tight()).unwrap();
        let (e, i, k) = max_rel(&cf, &ode);
        assert!(e <= 1e-9, "{s:?}: rel {e:e} at t={} cmt {k}", ts[i]);
        // terminal slope of the ODE's central amount = the smallest root, once the next root's
        // exponential has decayed by e^(−40) after the infusion's end at 7 h (its coefficient
        // can be 1e4 × the terminal one); small atol for the small late amounts
        let g = roots[2];
        let t1 = 7.0 + 40.0 / (roots[1] - g);
        let rel_only = SolverOptions {
            atol: 1e-16,
            ..tight()
        };
        let late = simulate_amounts(&model, &p, &doses, &[t1, t1 + 1.0 / g], rel_only).unwrap();
        let slope = (late[0][0] / late[1][0]).ln() * g;
        assert!(
            (slope - g).abs() < 1e-6 * g,
            "{s:?}: slope {slope} vs γ {g}"
        );
    }
}

#[test]
fn invalid_doses_are_errors_not_panics() {
    let iv = PkModel::parse("3cpt-iv").unwrap();
    let oral = PkModel::parse("1cpt-oral").unwrap();
    let p = params(&iv);
    let cmt3 = [Dose::bolus(0.0, 100.0, 3)];
    assert!(iv.amounts(&p, &cmt3, 1.0).is_err());
    assert!(matches!(
        simulate_amounts(&iv, &p, &cmt3, &[1.0], tight()),
        Err(OdeError::Model(_))
    ));
    assert!(oral.amounts(&p, &cmt3, 1.0).is_err());
    assert!(simulate_amounts(&oral, &p, &cmt3, &[1.0], tight()).is_err());
    let cmt0 = [Dose::bolus(0.0, 100.0, 0)];
    assert!(iv.amounts(&p, &cmt0, 1.0).is_err());
    assert!(simulate_amounts(&iv, &p, &cmt0, &[1.0], tight()).is_err());
    let ss_no_ii = [dose(0.0, 100.0, 0.0, 1, 0.0, 0, true)];
    assert!(iv.amounts(&p, &ss_no_ii, 1.0).is_err());
    assert!(simulate_amounts(&iv, &p, &ss_no_ii, &[1.0], tight()).is_err());
    let addl_no_ii = [dose(0.0, 100.0, 0.0, 1, 0.0, 3, false)];
    assert!(iv.amounts(&p, &addl_no_ii, 1.0).is_err());
    assert!(simulate_amounts(&iv, &p, &addl_no_ii, &[1.0], tight()).is_err());
    let long_ss_inf = [dose(0.0, 100.0, 5.0, 1, 12.0, 0, true)]; // 20 h > II
    assert!(iv.amounts(&p, &long_ss_inf, 1.0).is_err());
    assert!(simulate_amounts(&iv, &p, &long_ss_inf, &[1.0], tight()).is_err());
    let mut bad = p;
    bad.v1_l = -1.0;
    assert!(simulate_amounts(&iv, &bad, &[], &[1.0], tight()).is_err());
    assert!(PkOde::new(iv, &bad).is_err());
    assert!(matches!(
        simulate_amounts(&iv, &p, &[], &[f64::NAN], tight()),
        Err(OdeError::BadTime(_))
    ));
    let nan_amt = [Dose::bolus(0.0, f64::NAN, 1)];
    assert!(simulate_amounts(&iv, &p, &nan_amt, &[1.0], tight()).is_err());
    // a step budget too small is a solver error, not a panic
    let tiny = SolverOptions {
        max_steps: 2,
        ..tight()
    };
    assert!(matches!(
        simulate_amounts(&iv, &p, &[Dose::bolus(0.0, 1.0, 1)], &[100.0], tiny),
        Err(OdeError::Solve(_))
    ));
}

#[test]
fn no_doses_and_times_before_the_first_dose_are_zero() {
    let m = PkModel::parse("2cpt-oral").unwrap();
    let p = params(&m);
    let out = simulate_amounts(&m, &p, &[], &[0.0, 5.0], tight()).unwrap();
    assert!(out.iter().flatten().all(|&v| v == 0.0));
    let doses = [Dose::bolus(10.0, 100.0, 1)];
    let out = simulate_amounts(&m, &p, &doses, &[12.0, -3.0, 9.9], tight()).unwrap();
    assert!(out[1].iter().chain(&out[2]).all(|&v| v == 0.0));
    let cf = m.amounts(&p, &doses, 12.0).unwrap();
    for (a, b) in out[0].iter().zip(&cf) {
        assert!((a - b).abs() <= 1e-9 * b.abs());
    }
}
