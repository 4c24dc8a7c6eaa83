//! End-to-end tests of `medtwin cardiac cipa` through the real binary (bundled CiPA training
//! drugs; reference values from tests/data/cardiac, FDA CiPA program, see PROVENANCE.md).

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medtwin"))
        .args(args)
        .output()
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medtwin-cardiac-{}-{name}", std::process::id()));
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

fn rows(csv: &str) -> Vec<Vec<String>> {
    csv.lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// A short bundled-drug assay: the exact header, a control row and one row per dose; the control
/// (30 beats from the reference's steady state) is within 0.5 % of the reference's 1000-beat
/// qNet (69.673 nC/µF) and APD90 (290 ms); dofetilide shortens qNet and prolongs APD90 with dose.
#[test]
fn bundled_drug_writes_results_csv() {
    let d = tmp("dof");
    let out = ok(&run(&[
        "cardiac",
        "cipa",
        "--drug",
        "dofetilide",
        "--doses",
        "1,4",
        "--out",
        d.to_str().unwrap(),
        "--beats",
        "30",
    ]));
    assert!(out.contains("dofetilide: Cmax 2 nM"), "{out}");
    let text = std::fs::read_to_string(d.join("results.csv")).unwrap();
    let r = rows(&text);
    assert_eq!(
        r[0].join(","),
        "drug,dose_x_cmax,qnet_nc_per_uf,apd90_ms,apd50_ms,ead"
    );
    assert_eq!(r.len(), 4, "{text}");
    assert_eq!(
        (r[1][0].as_str(), r[2][0].as_str(), r[3][1].as_str()),
        ("control", "dofetilide", "4")
    );
    let q: Vec<f64> = r[1..].iter().map(|x| x[2].parse().unwrap()).collect();
    let apd: Vec<f64> = r[1..].iter().map(|x| x[3].parse().unwrap()).collect();
    assert!(
        (q[0] - 69.673).abs() < 0.005 * 69.673,
        "control qNet {}",
        q[0]
    );
    assert!((apd[0] - 290.0).abs() <= 1.0, "control APD90 {}", apd[0]);
    assert!(
        q[0] > q[1] && q[1] > q[2],
        "qNet not decreasing with dose: {q:?}"
    );
    assert!(
        apd[0] < apd[1] && apd[1] < apd[2],
        "APD90 not increasing with dose: {apd:?}"
    );
    assert!(r[1..].iter().all(|x| x[5] == "false"));
    let traces = std::fs::read_to_string(d.join("traces.csv")).unwrap();
    assert_eq!(traces.lines().count(), 2002);
    let html = std::fs::read_to_string(d.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("CiPA in-silico assay: dofetilide"));
}

/// A drug given as a TOML file gives the same numbers as the same drug bundled.
#[test]
fn drug_toml_file_matches_bundled() {
    let d = tmp("toml");
    let f = d.join("dof.toml");
    std::fs::write(
        &f,
        "name = \"dofetilide\"\ncmax_nm = 2.0\n[herg]\nkmax = 35.1\nku_per_ms = 1.816e-05\nn = 1.08\n\
         halfmax_nm_n = 216.6\nvhalf_mv = -1.0\n[block.ina]\nic50_nm = 380.5\nhill = 0.892\n\
         [block.inal]\nic50_nm = 753100.0\nhill = 0.2597\n[block.ito]\nic50_nm = 18.82\nhill = 0.7712\n\
         [block.ical]\nic50_nm = 260.3\nhill = 1.163\n[block.ik1]\nic50_nm = 394.4\nhill = 0.765\n",
    )
    .unwrap();
    let a = d.join("a");
    let b = d.join("b");
    ok(&run(&[
        "cardiac",
        "cipa",
        f.to_str().unwrap(),
        "--doses",
        "3",
        "--out",
        a.to_str().unwrap(),
        "--beats",
        "3",
    ]));
    ok(&run(&[
        "cardiac",
        "cipa",
        "--drug",
        "dofetilide",
        "--doses",
        "3",
        "--out",
        b.to_str().unwrap(),
        "--beats",
        "3",
    ]));
    let ra = std::fs::read_to_string(a.join("results.csv")).unwrap();
    let rb = std::fs::read_to_string(b.join("results.csv")).unwrap();
    assert_eq!(ra, rb);
}

/// Bad input exits with code 2 and a message naming the problem; nothing is written.
#[test]
fn bad_input_is_refused_with_exit_code_2() {
    let d = tmp("bad");
    let out = d.join("out");
    let o = out.to_str().unwrap();
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\ncmax_nm = [\n").unwrap();
    let neg = d.join("neg.toml");
    std::fs::write(
        &neg,
        "name = \"x\"\ncmax_nm = 1\n[herg]\nkmax = 1\nku_per_ms = 1\nn = 1\nhalfmax_nm_n = 1\nvhalf_mv = 0\n\
         [block.ical]\nic50_nm = -5\nhill = 1\n",
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "cardiac", "cipa", "--drug", "aspirin", "--doses", "1", "--out", o,
            ],
            "unknown drug 'aspirin'",
        ),
        (
            vec![
                "cardiac", "cipa", "--drug", "sotalol", "--doses", "1,-2", "--out", o,
            ],
            "-2 is invalid",
        ),
        (
            vec![
                "cardiac", "cipa", "--drug", "sotalol", "--doses", "1,x", "--out", o,
            ],
            "'x' is not a number",
        ),
        (
            vec![
                "cardiac",
                "cipa",
                bad.to_str().unwrap(),
                "--doses",
                "1",
                "--out",
                o,
            ],
            "line 2",
        ),
        (
            vec![
                "cardiac",
                "cipa",
                neg.to_str().unwrap(),
                "--doses",
                "1",
                "--out",
                o,
            ],
            "block.ical.ic50_nm = -5",
        ),
        (
            vec!["cardiac", "cipa", "--doses", "1", "--out", o],
            "give a drug TOML file or --drug NAME",
        ),
        (
            vec![
                "cardiac",
                "cipa",
                "--drug",
                "sotalol",
                "--doses",
                "1",
                "--out",
                o,
                "--samples",
                "51",
            ],
            "51 samples requested, 50 bundled",
        ),
        (
            vec![
                "cardiac",
                "cipa",
                neg.to_str().unwrap(),
                "--doses",
                "1",
                "--out",
                o,
                "--samples",
                "2",
            ],
            "block.ical.ic50_nm = -5",
        ),
    ];
    for (args, want) in cases {
        let r = run(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!out.exists());
}

/// `--samples N`: one row per sample × dose in samples.csv, a per-dose summary with the median
/// inside its 95 % interval, and the risk call with the fraction of samples per class; the
/// point-estimate results.csv is unchanged by asking for samples.
#[test]
fn samples_write_per_sample_rows_summary_and_risk() {
    let d = tmp("samples");
    let plain = d.join("plain");
    let unc = d.join("unc");
    let args = |out: &PathBuf, extra: &[&str]| {
        let mut v: Vec<String> = [
            "cardiac", "cipa", "--drug", "sotalol", "--doses", "1,4", "--beats", "3", "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(out.to_str().unwrap().to_string());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let a1 = args(&plain, &[]);
    ok(&run(&a1.iter().map(String::as_str).collect::<Vec<_>>()));
    let a2 = args(&unc, &["--samples", "3"]);
    let out = ok(&run(&a2.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(out.contains("3 samples × 2 doses = 6 runs"), "{out}");
    assert!(out.contains("TdP risk (3 samples"), "{out}");
    assert_eq!(
        std::fs::read_to_string(plain.join("results.csv")).unwrap(),
        std::fs::read_to_string(unc.join("results.csv")).unwrap()
    );
    let s = rows(&std::fs::read_to_string(unc.join("samples.csv")).unwrap());
    assert_eq!(
        s[0].join(","),
        "drug,sample,dose_x_cmax,qnet_nc_per_uf,apd90_ms,apd50_ms,ead_beats,no_repol_beats,status"
    );
    assert_eq!(s.len(), 7);
    let ids: Vec<(&str, &str)> = s[1..]
        .iter()
        .map(|r| (r[1].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("1", "1"),
            ("1", "4"),
            ("2", "1"),
            ("2", "4"),
            ("3", "1"),
            ("3", "4")
        ]
    );
    assert!(s[1..].iter().all(|r| r[8] == "ok"));
    let m = rows(&std::fs::read_to_string(unc.join("samples_summary.csv")).unwrap());
    assert_eq!(m.len(), 3);
    assert_eq!(m[0][4], "qnet_median");
    for r in &m[1..] {
        let (med, lo, hi): (f64, f64, f64) = (
            r[4].parse().unwrap(),
            r[5].parse().unwrap(),
            r[6].parse().unwrap(),
        );
        assert!(lo <= med && med <= hi, "{r:?}");
    }
    let k = rows(&std::fs::read_to_string(unc.join("samples_risk.csv")).unwrap());
    assert_eq!(k[1][0], "sotalol");
    assert_eq!(k[1][1], "3");
    let f: f64 = (2..5).map(|i| k[1][i].parse::<f64>().unwrap()).sum();
    assert!((f - 1.0).abs() < 1e-3, "{k:?}");
    // the report shows the per-dose intervals and the risk fractions of the CSV files
    let html = std::fs::read_to_string(unc.join("report.html")).unwrap();
    assert!(html.contains("Uncertainty (3 samples)"), "{html}");
    for r in &m[1..] {
        let row = format!(
            "<td>{}×Cmax</td><td>{}</td><td>{}</td><td>{}</td><td>[{}, {}]</td><td>{}</td><td>[{}, {}]</td>",
            r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]
        );
        assert!(html.contains(&row), "missing {row}");
    }
    for (i, class) in ["low", "intermediate", "high"].iter().enumerate() {
        let cell = format!("<td>{class}</td><td>{} (", k[1][2 + i]);
        assert!(html.contains(&cell), "missing {cell}");
    }
    assert!(html.contains(&format!("Majority call: <b>{}</b>", k[1][5])));
    // error bars in both dose plots: the SVGs differ from the plain report's
    let plain_html = std::fs::read_to_string(plain.join("report.html")).unwrap();
    assert!(plain_html.contains("no uncertainty samples were run"));
    assert!(!plain_html.contains("95 % interval"));
    assert!(html.matches("samples: median, 95 % interval").count() >= 2);
}
