//! End-to-end tests of the generic twin commands through the real binary: the sepsis twin
//! (Reynolds 2006, BIOMD0000000714) fitted to the bundled twin-experiment measurements
//! (tests/data/sepsis; synthetic, made by the `sepsis_twin` example), then update, forecast,
//! what-if and backtest.

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
    let d = std::env::temp_dir().join(format!("medtwin-gt-{}-{name}", std::process::id()));
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

fn p(x: &std::path::Path) -> &str {
    x.to_str().unwrap()
}

/// fit on 0–12 h → forecast → update with 12–24 h → what-if (no action vs an
/// anti-inflammatory dose) → backtest; the twin heads for aseptic death (the hidden truth)
/// and the dose moves it towards healthy.
#[test]
fn sepsis_twin_fit_update_forecast_whatif_backtest() {
    let d = tmp("sepsis");
    let model = repo().join("tests/data/biomodels/BIOMD0000000714.xml");
    let spec = repo().join("tests/data/sepsis/spec.toml");
    let first = repo().join("tests/data/sepsis/aseptic_0-12h.tsv");
    let second = repo().join("tests/data/sepsis/aseptic_12-24h.tsv");
    let twin = d.join("twin.json");
    let out = ok(&run(&[
        "twin",
        "fit",
        p(&model),
        "--data",
        p(&first),
        "--prior",
        p(&spec),
        "--out",
        p(&twin),
    ]));
    assert!(out.contains("k_pg") && out.contains("SD ratio"), "{out}");

    let fc = d.join("forecast.csv");
    let out = ok(&run(&[
        "twin",
        "forecast",
        p(&twin),
        "--until",
        "48",
        "--step",
        "6",
        "--out",
        p(&fc),
    ]));
    let p_aseptic: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("P(aseptic death) = "))
        .expect("outcome probability printed")
        .parse()
        .unwrap();
    let csv = std::fs::read_to_string(&fc).unwrap();
    assert!(csv.starts_with("time,observable,median,"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 2 * 6, "2 observables x 6 times");

    let twin2 = d.join("twin2.json");
    let out = ok(&run(&[
        "twin",
        "update",
        p(&twin),
        p(&second),
        "--out",
        p(&twin2),
    ]));
    assert!(out.contains("8 new measurements"), "{out}");
    let out = ok(&run(&[
        "twin",
        "forecast",
        p(&twin2),
        "--until",
        "48",
        "--out",
        p(&fc),
    ]));
    let p_aseptic2: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("P(aseptic death) = "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        p_aseptic2 >= p_aseptic && p_aseptic2 > 0.9,
        "P(true class) {p_aseptic} after 12 h, {p_aseptic2} after 24 h"
    );

    let none = d.join("none.toml");
    std::fs::write(&none, "").unwrap();
    let dose = d.join("anti_inflammatory.toml");
    std::fs::write(
        &dose,
        "[[dose]]\ntime = 24.0\ntarget = \"C_A\"\namount = 1.0\n",
    )
    .unwrap();
    let wi = d.join("whatif");
    ok(&run(&[
        "twin",
        "whatif",
        p(&twin2),
        "--plan",
        p(&none),
        "--plan",
        p(&dose),
        "--until",
        "48",
        "--out",
        p(&wi),
    ]));
    let summary = std::fs::read_to_string(wi.join("summary.csv")).unwrap();
    let header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "p_healthy").unwrap();
    let healthy = |plan: &str| -> f64 {
        summary
            .lines()
            .find(|l| l.starts_with(&format!("{plan},")))
            .unwrap()
            .split(',')
            .nth(col)
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        healthy("anti_inflammatory") > healthy("none") + 0.5,
        "{summary}"
    );

    let all = d.join("all.tsv");
    let a = std::fs::read_to_string(&first).unwrap();
    let b = std::fs::read_to_string(&second).unwrap();
    std::fs::write(&all, a + b.split_once('\n').unwrap().1).unwrap();
    let bt = d.join("bt.json");
    ok(&run(&[
        "twin",
        "backtest",
        p(&model),
        "--data",
        p(&all),
        "--prior",
        p(&spec),
        "--origins",
        "6,12,18",
        "--window",
        "6",
        "--out",
        p(&bt),
    ]));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bt).unwrap()).unwrap();
    assert_eq!(m["origins"].as_array().unwrap().len(), 3);
    assert_eq!(m["pooled"]["n"].as_u64().unwrap(), 12);
}

/// Bad input is named: an unknown parameter, an observable without a noise model, a bad
/// measurement line, a forecast without --until; exit code 2, no panic.
#[test]
fn generic_twin_bad_input_is_named() {
    let d = tmp("bad");
    let model = repo().join("tests/data/biomodels/BIOMD0000000714.xml");
    let data = repo().join("tests/data/sepsis/aseptic_0-12h.tsv");
    let twin = d.join("twin.json");
    let o = run(&[
        "twin",
        "fit",
        p(&model),
        "--data",
        p(&data),
        "--estimate",
        "k_xyz",
        "--noise",
        "D=log-normal:0.2",
        "--noise",
        "Nstar=log-normal:0.2",
        "--out",
        p(&twin),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("k_xyz"));
    let o = run(&[
        "twin",
        "fit",
        p(&model),
        "--data",
        p(&data),
        "--estimate",
        "k_pg",
        "--out",
        p(&twin),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no noise model") && err.contains("--noise"),
        "{err}"
    );
    let bad = d.join("bad.tsv");
    std::fs::write(
        &bad,
        "observableId\ttime\tmeasurement\nD\t3\t0.2\nD\t-1\t0.3\n",
    )
    .unwrap();
    let o = run(&[
        "twin",
        "fit",
        p(&model),
        "--data",
        p(&bad),
        "--estimate",
        "k_pg",
        "--noise",
        "D=log-normal:0.2",
        "--out",
        p(&twin),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.tsv:3") && err.contains("negative"),
        "{err}"
    );
    // A working fit with defaults, then a forecast without --until.
    ok(&run(&[
        "twin",
        "fit",
        p(&model),
        "--data",
        p(&data),
        "--estimate",
        "k_pg,P",
        "--noise",
        "D=log-normal:0.25",
        "--noise",
        "Nstar=log-normal:0.25",
        "--out",
        p(&twin),
    ]));
    let o = run(&["twin", "forecast", p(&twin), "--out", p(&d.join("f.csv"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--until"));
}
