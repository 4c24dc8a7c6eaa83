//! Library-level checks of medtwin-petab on the bundled benchmark problems
//! (tests/data/petab, see its PROVENANCE.md).

use medtwin_petab::objective::log_density;
use medtwin_petab::problem::{Noise, Scale, Transform};
use medtwin_petab::{Evaluator, PetabError, Problem, SimSettings};
use std::path::PathBuf;

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../tests/data/petab/{p}/{p}.yaml"))
}

#[test]
fn densities_follow_the_petab_definitions() {
    let ln2pi = (2.0 * std::f64::consts::PI).ln();
    // normal, lin: −½ln(2πσ²) − ½((m−y)/σ)²
    let v = log_density(3.0, 1.0, 2.0, Transform::Lin, Noise::Normal);
    assert!((v - (-0.5 * ln2pi - 2f64.ln() - 0.5)).abs() < 1e-14);
    // log10-normal: the density of m itself carries −ln(m ln 10).
    let v = log_density(100.0, 10.0, 0.5, Transform::Log10, Noise::Normal);
    let want = -0.5 * ln2pi - 0.5f64.ln() - 0.5 * 4.0 - (100.0 * std::f64::consts::LN_10).ln();
    assert!((v - want).abs() < 1e-12);
    // laplace, lin: −ln(2b) − |m−y|/b
    let v = log_density(1.0, 4.0, 1.5, Transform::Lin, Noise::Laplace);
    assert!((v - (-(3f64).ln() - 2.0)).abs() < 1e-14);
    assert_eq!(Scale::Log10.to_lin(Scale::Log10.to_scale(0.37)), 0.37);
}

#[test]
fn boehm_tables_load_and_llh_matches_amici() {
    let p = Problem::load(data("Boehm_JProteomeRes2014")).unwrap();
    assert_eq!(p.measurements.len(), 48);
    assert_eq!(p.observables.len(), 3);
    assert_eq!(p.parameters.iter().filter(|q| q.estimate).count(), 9);
    let ev = Evaluator::new(&p, SimSettings::default()).unwrap();
    let llh = ev.llh(&p.nominal()).unwrap();
    // AMICI reference (tests/data/petab/amici_reference_llh_benchmark_models.yaml).
    assert!((llh - -138.22199693517703).abs() < 1e-4, "llh {llh}");
    // Moving a parameter away from the nominal optimum lowers the likelihood.
    let mut th = p.nominal();
    th[0] *= 1.5;
    assert!(ev.llh(&th).unwrap() < llh - 1.0);
}

#[test]
fn brannmark_preequilibrates_to_steady_state() {
    let p = Problem::load(data("Brannmark_JBC2010")).unwrap();
    assert!(p
        .measurements
        .iter()
        .all(|m| m.preeq.as_deref() == Some("Dose_0")));
    let ev = Evaluator::new(&p, SimSettings::default()).unwrap();
    let llh = ev.llh(&p.nominal()).unwrap();
    assert!((llh - -141.889113770537).abs() / 141.9 < 1e-5, "llh {llh}");
}

#[test]
fn unknown_observable_names_file_and_line() {
    let dir = std::env::temp_dir().join(format!("medtwin-petab-lib-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = data("Boehm_JProteomeRes2014");
    for e in std::fs::read_dir(src.parent().unwrap()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let f = dir.join("measurementData_Boehm_JProteomeRes2014.tsv");
    let t = std::fs::read_to_string(&f)
        .unwrap()
        .replacen("pSTAT5A_rel", "nope", 2);
    std::fs::write(&f, t).unwrap();
    let e = Problem::load(dir.join("Boehm_JProteomeRes2014.yaml")).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    match e {
        PetabError::Table { file, line, msg } => {
            assert!(file.ends_with("measurementData_Boehm_JProteomeRes2014.tsv"));
            assert_eq!(line, 2);
            assert!(msg.contains("'nope'"), "{msg}");
        }
        e => panic!("{e}"),
    }
}

/// Isensee_JCB2018's drug inputs are piecewise functions of time (`time − Fsk_time < 0` …):
/// with the switch times located (the simulator restarts there) every one of its 123
/// simulations succeeds at the default tolerances — no retry at looser ones (before, 60 of
/// them underflowed the BDF's step size at t = 30 and were retried at rtol 1e-6) — and the
/// llh matches AMICI's. Skipped when the shared benchmark collection is absent.
#[test]
fn isensee_needs_no_retry_at_its_drug_steps() {
    let yaml = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/petab-benchmarks/Benchmark-Models/Isensee_JCB2018/Isensee_JCB2018.yaml");
    if !yaml.is_file() {
        println!("SKIPPED: {} not present", yaml.display());
        return;
    }
    let p = Problem::load(&yaml).unwrap();
    let ev = Evaluator::new(&p, SimSettings::default()).unwrap();
    let llh = ev.llh(&p.nominal()).unwrap();
    assert_eq!(ev.retries(), 0, "simulations retried at looser tolerances");
    // AMICI reference (tests/data/petab/amici_reference_llh_benchmark_models.yaml).
    let amici = -3949.375966548649;
    assert!(
        (llh - amici).abs() / amici.abs() < 1e-6,
        "llh {llh} vs AMICI {amici}"
    );
}
