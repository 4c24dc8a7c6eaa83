//! `medtwin pk recommend --objective p-in-range` through the real binary on the bundled real
//! phenobarbital data (tests/data/pk, R nlme, GPL ≥ 2): the posterior-optimal dose reports a
//! P(trough within ±20 %) at least the MAP dose's, and bad options are refused with exit 2.

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medtwin"))
        .args(args)
        .output()
        .unwrap()
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

#[test]
fn p_in_range_objective_and_bad_options() {
    let d = std::env::temp_dir().join(format!("medtwin-pk-objective-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let csv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/pk/Phenobarb.csv");
    ok(&run(&[
        "pk",
        "import",
        "phenobarb",
        csv.to_str().unwrap(),
        "--out",
        &p("pheno.csv"),
    ]));
    ok(&run(&[
        "pk",
        "fit",
        &p("pheno.csv"),
        "--model",
        "1cpt-iv",
        "--covariate",
        "CL~WT",
        "--covariate",
        "V~WT",
        "--out",
        &p("pop.json"),
    ]));
    ok(&run(&[
        "pk",
        "twin",
        &p("pop.json"),
        &p("pheno.csv"),
        "--id",
        "1",
        "--out",
        &p("twin.json"),
    ]));
    let rec = |objective: &str, tolerance: &str| {
        let out = ok(&run(&[
            "pk",
            "recommend",
            "--twin",
            &p("twin.json"),
            "--target",
            "trough",
            "20",
            "--interval",
            "12",
            "--objective",
            objective,
            "--tolerance",
            tolerance,
            "--json",
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (v["dose"].as_f64().unwrap(), v["p_target"].as_f64().unwrap())
    };
    let (d_map, p_map) = rec("map", "0.2");
    let (d_opt, p_opt) = rec("p-in-range", "0.2");
    assert!(d_map > 0.0 && d_opt > 0.0);
    assert!(p_opt >= p_map, "{p_opt} < {p_map}");
    assert!((d_opt / d_map - 1.0).abs() < 0.2, "{d_opt} vs {d_map}");
    // A narrower range is harder to hit.
    let (_, p_narrow) = rec("p-in-range", "0.1");
    assert!(p_narrow < p_opt, "{p_narrow} vs {p_opt}");
    for (flag, value, why) in [
        ("--objective", "best", "expected map or p-in-range"),
        ("--tolerance", "1.5", "must be within (0, 1)"),
    ] {
        let o = run(&[
            "pk",
            "recommend",
            "--twin",
            &p("twin.json"),
            "--target",
            "trough",
            "20",
            "--interval",
            "12",
            flag,
            value,
        ]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why), "{err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
