//! End-to-end tests of `medtwin pk …` through the real binary on the bundled real PK data
//! (tests/data/pk, R datasets / nlme, GPL ≥ 2).

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medtwin"))
        .args(args)
        .output()
        .unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medtwin-pk-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// import → fit (with report) → twin → recommend on theophylline; the fit reproduces nlme's
/// log-likelihood within 0.5 and the report holds the four diagnostic plots.
#[test]
fn theophylline_import_fit_twin_recommend() {
    let d = tmp("theoph");
    let data = d.join("theoph.csv");
    let csv = repo().join("tests/data/pk/Theoph.csv");
    let out = ok(&run(&[
        "pk",
        "import",
        "theoph",
        csv.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
    ]));
    assert!(out.contains("12 subjects, 132 observations"), "{out}");
    let pop = d.join("pop.json");
    let rep = d.join("report");
    let out = ok(&run(&[
        "pk",
        "fit",
        data.to_str().unwrap(),
        "--model",
        "1cpt-oral",
        "--param",
        "KE,KA,CL",
        "--iiv",
        "KA,CL",
        "--out",
        pop.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]));
    let ll: f64 = out
        .split("log-likelihood ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(',')
        .parse()
        .unwrap();
    assert!((ll - (-177.02)).abs() < 0.5, "{out}");
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4, "four plots");
    assert!(html.contains("log_KA"));
    let twin = d.join("twin.json");
    let out = ok(&run(&[
        "pk",
        "twin",
        pop.to_str().unwrap(),
        data.to_str().unwrap(),
        "--id",
        "1",
        "--out",
        twin.to_str().unwrap(),
    ]));
    assert!(out.contains("from 11 levels"), "{out}");
    // The TDM twin is a twin of the generic layer, saved in its versioned format.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&twin).unwrap()).unwrap();
    assert_eq!(saved["format"], "medtwin-twin-core");
    assert_eq!(saved["model"]["kind"], "pk");
    // A file that is not a twin is refused naming it (exit 2).
    let o = run(&[
        "pk",
        "recommend",
        "--twin",
        pop.to_str().unwrap(),
        "--target",
        "trough",
        "8",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pop.json"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = ok(&run(&[
        "pk",
        "recommend",
        "--twin",
        twin.to_str().unwrap(),
        "--target",
        "trough",
        "8",
        "--interval",
        "12",
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        (r["map_trough"].as_f64().unwrap() - 8.0).abs() < 1e-6,
        "{out}"
    );
    assert!(r["dose"].as_f64().unwrap() > 0.0);
    // A toxic threshold the target cannot avoid is refused with the reason (exit 1).
    let o = run(&[
        "pk",
        "recommend",
        "--twin",
        twin.to_str().unwrap(),
        "--target",
        "trough",
        "8",
        "--interval",
        "12",
        "--toxic",
        "8.5",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no dose recommended"));
}

/// The holdout-last TDM backtest on the phenobarbital neonates writes the documented keys and
/// the individual forecast beats the population prediction.
#[test]
fn phenobarbital_backtest_metrics() {
    let d = tmp("pheno");
    let data = d.join("pheno.csv");
    let csv = repo().join("tests/data/pk/Phenobarb.csv");
    ok(&run(&[
        "pk",
        "import",
        "phenobarb",
        csv.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
    ]));
    let m = d.join("metrics.json");
    ok(&run(&[
        "pk",
        "backtest",
        data.to_str().unwrap(),
        "--model",
        "1cpt-iv",
        "--holdout",
        "last",
        "--out",
        m.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    for k in [
        "n",
        "rmse",
        "rmse_population",
        "mae",
        "coverage_80",
        "coverage_95",
        "unit",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    assert!(v["rmse"].as_f64().unwrap() < v["rmse_population"].as_f64().unwrap());
}

/// Bad input: a malformed event table is refused with file:line (exit 2); an unknown model too.
#[test]
fn bad_input_names_file_and_line() {
    let d = tmp("bad");
    let data = d.join("bad.csv");
    std::fs::write(&data, "ID,TIME,AMT,DV\n1,0,100,.\n1,1,,abc\n1,-2,,3\n").unwrap();
    let o = run(&[
        "pk",
        "fit",
        data.to_str().unwrap(),
        "--model",
        "1cpt-iv",
        "--out",
        d.join("p.json").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("bad.csv:3") && e.contains("bad.csv:4"), "{e}");
    let o = run(&[
        "pk",
        "fit",
        data.to_str().unwrap(),
        "--model",
        "4cpt",
        "--out",
        d.join("p.json").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown PK model"));
}
