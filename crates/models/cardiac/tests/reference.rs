//! Validation against the FDA CiPA reference program (R 4.2.2, deSolve lsoda, rtol = atol = 1e-6,
//! 1-ms output grid) run on the same inputs; outputs and how they were produced are in
//! tests/data/cardiac (PROVENANCE.md).
//!
//! To stay fast in debug builds, the drug checks start each simulation from the reference's own
//! state at the start of the beat it selected (after up to 1000 paced beats) and integrate that one
//! beat; the control check paces the full protocol shortened to 260 beats (the reference was run
//! with the same 260-beat protocol). The full 1000-beat protocol for every drug and dose is the
//! release example `cipa_validate` (benchmarks/cardiac_cipa.md).

use medtwin_cardiac::assay::{run_dose, AssayOptions};
use medtwin_cardiac::drug::bundled_drug;
use medtwin_cardiac::metrics::{beat_metrics, sample_grid};
use medtwin_cardiac::model::{OrdParams, N_STATES, STATE_NAMES};
use medtwin_cardiac::solver::{Integrator, SolverOptions};
use std::collections::HashMap;
use std::path::PathBuf;

fn data(name: &str) -> Vec<HashMap<String, String>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../tests/data/cardiac")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut lines = text.lines();
    let head: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    lines
        .map(|l| {
            head.iter()
                .cloned()
                .zip(l.split(',').map(|s| s.trim_matches('"').to_string()))
                .collect()
        })
        .collect()
}

fn num(r: &HashMap<String, String>, k: &str) -> Option<f64> {
    r.get(k).and_then(|s| s.parse().ok())
}

fn params_for(drug: &str, conc_nm: f64) -> OrdParams {
    if drug == "control" {
        OrdParams::control()
    } else {
        bundled_drug(drug).unwrap().params_at(conc_nm)
    }
}

fn reference_state(
    states: &[HashMap<String, String>],
    drug: &str,
    dose: &str,
    beat: &str,
) -> [f64; N_STATES] {
    let row = states
        .iter()
        .find(|r| r["drug"] == drug && r["dose"] == dose && r["beat"] == beat)
        .unwrap_or_else(|| panic!("no reference state for {drug} {dose} beat {beat}"));
    let mut y = [0.0; N_STATES];
    for (i, (name, _)) in STATE_NAMES.iter().enumerate() {
        y[i] = num(row, name).unwrap_or_else(|| panic!("state {name} missing"));
    }
    y
}

struct OneBeat {
    qnet: f64,
    apd90: Option<f64>,
    apd50: Option<f64>,
    max_dv: Option<f64>,
}

fn one_beat(p: OrdParams, mut y: [f64; N_STATES]) -> OneBeat {
    let mut it = Integrator::new(p, SolverOptions::default());
    let out = it.beat(&mut y, 2000.0, true).unwrap();
    let (v, dv) = sample_grid(&out.trace, 2000);
    let m = beat_metrics(&v, &dv);
    OneBeat {
        qnet: out.qnet_nc_per_uf,
        apd90: m.apd90_ms,
        apd50: m.apd50_ms,
        max_dv: m.max_dv_mv_per_ms,
    }
}

/// Every drug and dose: the selected beat, integrated from the reference's state at its start,
/// gives the reference's qNet within 0.1 nC/µF and its APD90/APD50 within 0.5 % or 1 ms (the
/// reference's 1-ms grid), whichever is larger; beats with an EAD in the reference (max_dv > 0) have one here too.
#[test]
fn selected_beats_match_the_reference() {
    let sel = data("reference_selected.csv");
    let states = data("reference_states.csv");
    assert!(sel.len() >= 13, "reference table too short: {}", sel.len());
    let mut worst: f64 = 0.0;
    for r in &sel {
        let (drug, dose, beat) = (&r["drug"], &r["dose"], &r["beat"]);
        let y = reference_state(&states, drug, dose, beat);
        let b = one_beat(params_for(drug, num(r, "conc_nm").unwrap()), y);
        let q_ref = num(r, "qNet").unwrap();
        let ead_ref = num(r, "max_dv").is_some_and(|d| d > 0.0);
        if ead_ref {
            assert!(
                b.max_dv.is_some_and(|d| d > 0.0),
                "{drug} {dose}: reference beat {beat} has an EAD, ours max_dv {:?}",
                b.max_dv
            );
            continue;
        }
        let dq = (b.qnet - q_ref).abs();

        worst = worst.max(dq);
        assert!(
            dq < 0.1,
            "{drug} {dose}x: qNet {} vs reference {q_ref}",
            b.qnet
        );
        for (ours, key) in [(b.apd90, "APD90"), (b.apd50, "APD50")] {
            let want = num(r, key).unwrap();
            let got = ours.unwrap_or_else(|| panic!("{drug} {dose}x: no {key}"));
            let tol = (0.005 * want).max(1.0);
            assert!(
                (got - want).abs() <= tol,
                "{drug} {dose}x: {key} {got} vs reference {want}"
            );
        }
    }
    eprintln!("largest |ΔqNet| over regular beats: {worst:.4} nC/µF");
}

/// The comparison can fail: a 10 % change of GKr moves the control beat's qNet by far more than
/// the tolerance above.
#[test]
fn the_beat_check_detects_a_10_percent_gkr_error() {
    let sel = data("reference_selected.csv");
    let states = data("reference_states.csv");
    let r = sel.iter().find(|r| r["drug"] == "control").unwrap();
    let y = reference_state(&states, "control", &r["dose"], &r["beat"]);
    let mut p = OrdParams::control();
    p.scale.gkr *= 1.1;
    let b = one_beat(p, y);
    assert!(
        (b.qnet - num(r, "qNet").unwrap()).abs() > 1.0,
        "qNet {}",
        b.qnet
    );
}

/// Control paced for 260 beats from the reference's CL2000 initial state (last 250 analysed):
/// qNet and APD90 within 0.5 % of the reference run with the same protocol.
#[test]
fn control_pacing_matches_the_reference() {
    let r = &data("reference_control_260beats.csv")[0];
    let opts = AssayOptions {
        beats: 260,
        ..AssayOptions::default()
    };
    let res = run_dose(None, 0.0, &opts).unwrap();
    let q_ref = num(r, "qNet").unwrap();
    let apd_ref = num(r, "APD90").unwrap();
    let apd = res.apd90_ms.unwrap();
    eprintln!(
        "control: qNet {} (ref {q_ref}), APD90 {apd} (ref {apd_ref})",
        res.qnet_nc_per_uf
    );
    assert!((res.qnet_nc_per_uf - q_ref).abs() < 0.005 * q_ref.abs());
    assert!((apd - apd_ref).abs() < 0.005 * apd_ref);
    assert_eq!(res.ead_beats, 0);
    assert_eq!(res.no_repol_beats, 0);
}
