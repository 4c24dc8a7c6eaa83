//! Verification against simglucose 0.2.11 (the reference implementation of UVA/Padova S2008):
//! all 30 virtual patients through the shared reference day (tests/data/simglucose/PROVENANCE.md).
//! Requirement: max |sc glucose − reference BG| ≤ 0.01 mg/dL at every minute and equal insulin.

use medtwin_simulate::SolverOptions;
use medtwin_t1d::env::{simulate_patient, MinuteRow};
use medtwin_t1d::metrics::glycaemic_metrics;
use medtwin_t1d::scenario::Scenario;
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../tests/data/simglucose")
}

struct RefRow {
    bg: f64,
    cgm: f64,
    insulin: f64,
    cho: f64,
    gp: f64,
}

fn read_ref(name: &str) -> Vec<RefRow> {
    let mut rdr =
        csv::Reader::from_path(data_dir().join("ref").join(format!("{name}.csv"))).unwrap();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            let f = |i: usize| r[i].parse::<f64>().unwrap_or(f64::NAN);
            RefRow {
                bg: f(1),
                cgm: f(2),
                insulin: f(3),
                cho: f(4),
                gp: f(5),
            }
        })
        .collect()
}

#[test]
fn all_30_patients_match_simglucose_within_0_01_mg_dl() {
    let names = medtwin_t1d::patient_names();
    assert_eq!(names.len(), 30);
    let scen = Scenario::reference_day(names.clone());
    let mut worst_overall: f64 = 0.0;
    for name in &names {
        let p = medtwin_t1d::patient(name).unwrap();
        let reference = read_ref(name);
        assert_eq!(reference.len(), 1441);
        let mut rows: Vec<MinuteRow> = Vec::with_capacity(1441);
        simulate_patient(&p, &scen, 1, SolverOptions::default(), |r| rows.push(*r)).unwrap();
        assert_eq!(rows.len(), 1441, "{name}");
        let mut worst_bg: f64 = 0.0;
        for (r, q) in rows.iter().zip(&reference) {
            let dbg = (r.sc_glucose_mg_dl - q.bg).abs();
            worst_bg = worst_bg.max(dbg);
            assert!(
                dbg <= 0.01,
                "{name} t={}: sc glucose {} vs reference BG {}",
                r.t_min,
                r.sc_glucose_mg_dl,
                q.bg
            );
            assert!(
                (r.cgm_mg_dl - q.cgm).abs() <= 0.01,
                "{name} t={}: CGM {} vs {}",
                r.t_min,
                r.cgm_mg_dl,
                q.cgm
            );
            let plasma_ref = q.gp / p.vg;
            assert!(
                (r.plasma_glucose_mg_dl - plasma_ref).abs() <= 0.01,
                "{name} t={}: plasma",
                r.t_min
            );
            if r.t_min < 1440 {
                assert!(
                    (r.insulin_u_per_min - q.insulin).abs() <= 1e-9 * q.insulin.abs().max(1.0),
                    "{name} t={}: insulin {} vs {}",
                    r.t_min,
                    r.insulin_u_per_min,
                    q.insulin
                );
                assert_eq!(
                    r.carbs_g_per_min, q.cho,
                    "{name} t={}: carbs eaten",
                    r.t_min
                );
            }
        }
        worst_overall = worst_overall.max(worst_bg);
    }
    eprintln!(
        "max |sc glucose - simglucose BG| over 30 patients x 1441 min: {worst_overall:.3e} mg/dL"
    );
}

#[test]
fn metrics_match_the_reference_summary() {
    // The reference summary computed LBGI/HBGI/TIR/mean on simglucose's env-history BG samples;
    // feed the same samples to our metrics.
    let mut rdr = csv::Reader::from_path(data_dir().join("ref_summary.csv")).unwrap();
    let hdr = rdr.headers().unwrap().clone();
    let col = |n: &str| hdr.iter().position(|h| h == n).unwrap();
    let mut checked = 0;
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let name = &rec[0];
        let mut h =
            csv::Reader::from_path(data_dir().join("env_history").join(format!("{name}.csv")))
                .unwrap();
        let bg: Vec<f64> = h
            .records()
            .map(|r| r.unwrap()[1].parse().unwrap())
            .collect();
        let m = glycaemic_metrics(&bg).unwrap();
        let want = |c: &str| rec[col(c)].parse::<f64>().unwrap();
        assert!((m.mean_mg_dl - want("mean_BG")).abs() < 1e-3, "{name} mean");
        assert!(
            (m.tir_pct - want("TIR_70_180_pct")).abs() < 1e-3,
            "{name} TIR"
        );
        assert!(
            (m.tbr70_pct - want("pct_below_70")).abs() < 1e-3,
            "{name} TBR"
        );
        assert!(
            (m.lbgi - want("LBGI")).abs() < 1e-4 * want("LBGI").max(1.0),
            "{name} LBGI {} vs {}",
            m.lbgi,
            want("LBGI")
        );
        assert!(
            (m.hbgi - want("HBGI")).abs() < 1e-4 * want("HBGI").max(1.0),
            "{name} HBGI"
        );
        checked += 1;
    }
    assert_eq!(checked, 30);
}

#[test]
fn solver_work_per_patient_day() {
    // Not a timing test: counts right-hand-side evaluations (deterministic) for the record.
    let p = medtwin_t1d::patient("adult#001").unwrap();
    let mut vp = medtwin_t1d::VirtualPatient::new(p.clone(), SolverOptions::default());
    for t in 0..1440 {
        let meal = if t == 720 { 70.0 } else { 0.0 };
        vp.step(meal, p.basal_u_per_min()).unwrap();
    }
    let s = vp.solver_stats();
    eprintln!(
        "adult#001, basal + 70 g meal: {} RHS evaluations/day, {} accepted, {} rejected steps",
        s.rhs_evals, s.accepted, s.rejected
    );
    assert!(
        s.rhs_evals < 25_000,
        "more RHS evaluations than simglucose's dopri5 (24.7k)"
    );
}

/// The closed-form insulin block (`VirtualPatient::set_closed_form_insulin`, issue 19) meets the
/// same bound against simglucose, and is really used (fewer RHS evaluations than the 13-state
/// integration on the PID reference day, where the fast insulin mode restarts every 3 min).
#[test]
fn closed_form_insulin_matches_simglucose_within_0_01_mg_dl() {
    use medtwin_t1d::controller::Controller;
    use medtwin_t1d::env::simulate_patient_integrated;
    let names = medtwin_t1d::patient_names();
    let scen = Scenario::reference_day(names.clone());
    let mut worst: f64 = 0.0;
    for (i, name) in names.iter().enumerate() {
        let p = medtwin_t1d::patient(name).unwrap();
        let reference = read_ref(name);
        let mut rows: Vec<MinuteRow> = Vec::with_capacity(1441);
        let mut c = Controller::new(&scen.controller, &p);
        let opts = SolverOptions::default();
        simulate_patient_integrated(&p, &scen, i, 1, opts, true, &mut c, |r| rows.push(*r))
            .unwrap();
        assert_eq!(rows.len(), 1441, "{name}");
        for (r, q) in rows.iter().zip(&reference) {
            let d = (r.sc_glucose_mg_dl - q.bg).abs();
            worst = worst.max(d);
            assert!(
                d <= 0.01,
                "{name} t={}: {} vs {}",
                r.t_min,
                r.sc_glucose_mg_dl,
                q.bg
            );
            let plasma_ref = q.gp / p.vg;
            assert!(
                (r.plasma_glucose_mg_dl - plasma_ref).abs() <= 0.01,
                "{name} t={}",
                r.t_min
            );
        }
    }
    eprintln!("closed-form insulin: max |sc glucose - simglucose BG| over 30 patients x 1441 min: {worst:.3e} mg/dL");
    // work on a PID day, one patient: closed form vs 13 states
    let mut pid = Scenario::reference_day(vec!["adult#001".into()]);
    pid.controller = medtwin_t1d::controller::ControllerSpec::Pid {
        p: 1e-3,
        i: 1e-5,
        d: 1e-3,
        target_mg_dl: 140.0,
    };
    let p = medtwin_t1d::patient("adult#001").unwrap();
    let evals = |closed: bool| {
        let mut c = Controller::new(&pid.controller, &p);
        simulate_patient_integrated(
            &p,
            &pid,
            0,
            1,
            SolverOptions::default(),
            closed,
            &mut c,
            |_| {},
        )
        .unwrap()
        .rhs_evals
    };
    let (full, closed) = (evals(false), evals(true));
    eprintln!(
        "PID day, adult#001: {full} RHS evaluations (13 states), {closed} (closed-form insulin)"
    );
    assert!(closed < full, "{closed} vs {full}");
}
