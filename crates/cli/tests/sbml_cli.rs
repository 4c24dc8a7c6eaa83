//! `medtwin sbml simulate`: `--max-step` on a pulse-paced cardiac cell model, and models with
//! values that nothing sets refused with their ids.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn simulate(model: &str, extra: &[&str], out: &PathBuf) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medtwin"))
        .args(["sbml", "simulate"])
        .arg(repo().join("tests/data/biomodels").join(model))
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn max_step_gives_one_action_potential_per_stimulus() {
    let out = std::env::temp_dir().join(format!("medtwin-sbml-cli-{}.csv", std::process::id()));
    let args = [
        "--end",
        "2500",
        "--steps",
        "250",
        "--vars",
        "V_membrane",
        "--rtol",
        "1e-8",
        "--atol",
        "1e-10",
        "--max-step",
        "0.1",
    ];
    let o = simulate("MODEL0479527919_connected.xml", &args, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let v: Vec<f64> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let up = v.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
    assert_eq!(up, 3, "upstrokes above 0 mV");
    let mut bad = args.to_vec();
    bad[11] = "0";
    let o = simulate("MODEL0479527919_connected.xml", &bad, &out);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-step"));
    let _ = std::fs::remove_file(&out);
}

#[test]
fn unset_parameters_are_refused_with_their_ids() {
    let out = std::env::temp_dir().join(format!("medtwin-sbml-cli-u-{}.csv", std::process::id()));
    let model = repo().join("../shared/reference/biomodels/MODEL0479527919.xml");
    if !model.exists() {
        eprintln!("{} not found: skipped", model.display());
        return;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_medtwin"))
        .args(["sbml", "simulate"])
        .arg(&model)
        .args(["--end", "10", "--steps", "10", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("'V_fast_sodium_current_m_gate'"), "{err}");
}
