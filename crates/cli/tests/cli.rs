//! End-to-end tests of the real `medtwin` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medtwin"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medtwin-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SCENARIO: &str = r#"
patient = "adult#001"
start = "2018-01-01T00:00:00"
duration_min = 1440
[controller]
kind = "basal-bolus"
target_mg_dl = 140
[sensor]
kind = "dexcom"
noise = false
seed = 1
[pump]
kind = "insulet"
[[meal]]
at_min = 420
carbs_g = 45
"#;

#[test]
fn patients_lists_thirty() {
    let o = run(&["patients"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    assert_eq!(s.lines().filter(|l| l.contains('#')).count(), 30);
    assert!(s.contains("child#004"));
}

#[test]
fn simulate_writes_trajectory_and_summary_and_metrics_agree() {
    let d = tmp("sim");
    let scen = d.join("s.toml");
    std::fs::write(&scen, SCENARIO).unwrap();
    let traj = d.join("t.csv");
    let summ = d.join("summary.csv");
    let o = run(&[
        "simulate",
        scen.to_str().unwrap(),
        "--out",
        traj.to_str().unwrap(),
        "--summary",
        summ.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = std::fs::read_to_string(&traj).unwrap();
    let mut lines = t.lines();
    assert_eq!(
        lines.next().unwrap(),
        "t_min,plasma_glucose_mg_dl,sc_glucose_mg_dl,cgm_mg_dl,insulin_u_per_min,carbs_g_per_min"
    );
    assert_eq!(t.lines().count(), 1442);
    // the 45 g meal is eaten at 5 g/min for 9 minutes
    let carbs: f64 = t
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((carbs - 45.0).abs() < 1e-9);
    let s = std::fs::read_to_string(&summ).unwrap();
    assert!(s.starts_with("patient,mean_mg_dl,sd_mg_dl,cv_pct,gmi_pct,tbr54_pct"));
    let row: Vec<&str> = s.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[0], "adult#001");
    let o = run(&["metrics", traj.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mean = v["metrics"]["mean_mg_dl"].as_f64().unwrap();
    assert!(
        (mean - row[1].parse::<f64>().unwrap()).abs() < 1e-3,
        "metrics and summary disagree"
    );
    assert!((v["total_carbs_g"].as_f64().unwrap() - 45.0).abs() < 1e-9);
}

#[test]
fn simulate_several_patients_writes_a_directory() {
    let d = tmp("multi");
    let scen = d.join("s.toml");
    std::fs::write(
        &scen,
        SCENARIO.replace(
            "patient = \"adult#001\"",
            "patient = [\"child#004\", \"adult#002\"]",
        ),
    )
    .unwrap();
    let out = d.join("out");
    let o = run(&[
        "simulate",
        scen.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("child#004.csv").is_file() && out.join("adult#002.csv").is_file());
}

#[test]
fn bad_scenarios_exit_2_with_a_clear_message_and_no_output() {
    let d = tmp("bad");
    let cases = [
        (SCENARIO.replace("adult#001", "adult#042"), "adult#042"),
        (SCENARIO.replace("\"dexcom\"", "\"libre3\""), "libre3"),
        (
            SCENARIO.replace("carbs_g = 45", "carbs_g = -5"),
            "meal[0].carbs_g",
        ),
        (
            SCENARIO.replace("at_min = 420", "at_min = 99999"),
            "outside the simulated span",
        ),
        (
            SCENARIO.replace("seed = 1", "seed = 1\nflavour = 2"),
            "flavour",
        ),
        ("this is = = not toml".to_string(), "line 1"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let scen = d.join(format!("s{i}.toml"));
        std::fs::write(&scen, text).unwrap();
        let traj = d.join(format!("t{i}.csv"));
        let o = run(&[
            "simulate",
            scen.to_str().unwrap(),
            "--out",
            traj.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "case {i}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(needle) && e.contains(&format!("s{i}.toml")),
            "case {i}: {e}"
        );
        assert!(!traj.exists() && !Path::new(&format!("{}.partial", traj.display())).exists());
    }
    let o = run(&[
        "simulate",
        d.join("missing.toml").to_str().unwrap(),
        "--out",
        "x.csv",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

fn import_demo(d: &Path) -> PathBuf {
    let rec = d.join("record.csv");
    let data = repo().join("tests/data/t1d-uom");
    let o = run(&[
        "import",
        "t1d-uom",
        data.to_str().unwrap(),
        "--participant",
        "2313",
        "--out",
        rec.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("UTF-8 byte-order mark"),
        "quirks are reported"
    );
    rec
}

#[test]
fn import_fit_forecast_with_plan() {
    let d = tmp("twin");
    let rec = import_demo(&d);
    let text = std::fs::read_to_string(&rec).unwrap();
    assert!(text.starts_with("time,kind,value,unit"));
    assert!(text.lines().filter(|l| l.contains(",cgm,")).count() > 6000);
    let twin = d.join("twin.json");
    let o = run(&[
        "twin",
        "fit",
        rec.to_str().unwrap(),
        "--until",
        "2d",
        "--particles",
        "100",
        "--out",
        twin.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&twin).unwrap()).unwrap();
    assert_eq!(doc["format"], "medtwin-twin/1");
    assert_eq!(doc["particles"].as_array().unwrap().len(), 100);
    assert_eq!(doc["t_min"].as_f64().unwrap(), 2880.0);
    // streaming: assimilate the third day into the saved twin
    let twin3 = d.join("twin3.json");
    let o = run(&[
        "twin",
        "update",
        twin.to_str().unwrap(),
        rec.to_str().unwrap(),
        "--until",
        "3d",
        "--out",
        twin3.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc3: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&twin3).unwrap()).unwrap();
    assert_eq!(doc3["t_min"].as_f64().unwrap(), 4320.0);
    assert!(
        doc3["log_lik"].as_f64().unwrap() < doc["log_lik"].as_f64().unwrap(),
        "more data, more log-likelihood terms"
    );
    let fc = d.join("f.csv");
    let o = run(&[
        "twin",
        "forecast",
        twin.to_str().unwrap(),
        "--horizon",
        "120",
        "--out",
        fc.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("P(glucose < 70 mg/dL within 120 min)"));
    let f = std::fs::read_to_string(&fc).unwrap();
    assert_eq!(f.lines().count(), 121);
    let med = |csv: &str| -> Vec<f64> {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
            .collect()
    };
    let base = med(&f);
    for l in f.lines().skip(1) {
        let v: Vec<f64> = l.split(',').skip(2).map(|x| x.parse().unwrap()).collect();
        // lo95 <= lo80 <= lo50 <= median <= hi50 <= hi80 <= hi95
        assert!(
            v[5] <= v[3]
                && v[3] <= v[1]
                && v[1] <= v[0]
                && v[0] <= v[2]
                && v[2] <= v[4]
                && v[4] <= v[6],
            "{l}"
        );
    }
    // one predictive distribution: an empty plan is the same question as no plan (identical
    // forecast), and a 60 g meal without insulin raises the forecast by the end of the horizon
    let empty = d.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let fc0 = d.join("f0.csv");
    let o = run(&[
        "twin",
        "forecast",
        twin.to_str().unwrap(),
        "--plan",
        empty.to_str().unwrap(),
        "--horizon",
        "120",
        "--out",
        fc0.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mechanistic = med(&std::fs::read_to_string(&fc0).unwrap());
    assert_eq!(
        std::fs::read_to_string(&fc0).unwrap(),
        f,
        "empty plan and no plan must give the same forecast"
    );
    let plan = d.join("plan.toml");
    std::fs::write(&plan, "[[meal]]\nat_min = 0\ncarbs_g = 60\n").unwrap();
    let fc2 = d.join("f2.csv");
    let o = run(&[
        "twin",
        "forecast",
        twin.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--horizon",
        "120",
        "--out",
        fc2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meal = med(&std::fs::read_to_string(&fc2).unwrap());
    assert!(
        meal[119] > mechanistic[119] + 20.0,
        "meal plan {} vs empty plan {}",
        meal[119],
        mechanistic[119]
    );
    assert_eq!(base.len(), mechanistic.len());
    // more insulin never raises the forecast: the same meal with a 4 U bolus
    let bolus_plan = d.join("bolus.toml");
    std::fs::write(
        &bolus_plan,
        "[[meal]]\nat_min = 0\ncarbs_g = 60\n[[bolus]]\nat_min = 0\nunits = 4\n",
    )
    .unwrap();
    let fc3 = d.join("f3.csv");
    let o = run(&[
        "twin",
        "forecast",
        twin.to_str().unwrap(),
        "--plan",
        bolus_plan.to_str().unwrap(),
        "--horizon",
        "120",
        "--out",
        fc3.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bolused = med(&std::fs::read_to_string(&fc3).unwrap());
    for k in 0..120 {
        assert!(
            bolused[k] <= meal[k] + 1e-9,
            "minute {k}: {} > {}",
            bolused[k],
            meal[k]
        );
    }
    assert!(
        bolused[119] < meal[119] - 5.0,
        "4 U must lower glucose by 2 h"
    );
    // what-if: two plans on the same posterior (common random numbers)
    let none = d.join("none.toml");
    std::fs::write(&none, "").unwrap();
    let wi = d.join("whatif");
    let o = run(&[
        "twin",
        "whatif",
        twin.to_str().unwrap(),
        "--plan",
        none.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--horizon",
        "180",
        "--out",
        wi.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = std::fs::read_to_string(wi.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 3);
    assert!(
        wi.join("index.html").is_file()
            && wi.join("plan.svg").is_file()
            && wi.join("none.csv").is_file()
    );
    let p_high = |name: &str| -> f64 {
        summary
            .lines()
            .skip(1)
            .find(|l| l.starts_with(&format!("{name},")))
            .unwrap()
            .split(',')
            .nth(3)
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        p_high("plan") >= p_high("none"),
        "60 g without insulin cannot lower P(>250)"
    );
    // bolus advisor
    let o = run(&[
        "twin",
        "advise",
        twin.to_str().unwrap(),
        "--carbs",
        "45",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rec_u = a["recommended_bolus_u"].as_f64().unwrap();
    assert!((0.0..=25.0).contains(&rec_u));
    assert!(a["standard_bolus_u"].as_f64().unwrap() >= 0.0);
    let o = run(&["twin", "advise", twin.to_str().unwrap(), "--carbs", "-3"]);
    assert_eq!(o.status.code(), Some(2));
    // bad inputs
    std::fs::write(&plan, "[[meal]]\nat_min = -5\ncarbs_g = 60\n").unwrap();
    let o = run(&[
        "twin",
        "forecast",
        twin.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        fc2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("meal[0].at_min"));
    let o = run(&[
        "twin",
        "forecast",
        rec.to_str().unwrap(),
        "--out",
        fc2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "a CSV is not a twin");
}

#[test]
fn backtest_writes_metrics_json() {
    let d = tmp("bt");
    let rec = import_demo(&d);
    let m = d.join("metrics.json");
    let backtest = |future: &str, out: &Path| {
        run(&[
            "twin",
            "backtest",
            rec.to_str().unwrap(),
            "--to",
            "2d",
            "--origin-every",
            "120",
            "--horizons",
            "30,60,120",
            "--particles",
            "100",
            "--future-inputs",
            future,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = backtest("blind", &m);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    for h in ["30", "60"] {
        let s = &v["horizons"][h];
        for k in [
            "rmse_mg_dl",
            "mae_mg_dl",
            "persistence_rmse_mg_dl",
            "coverage_80",
            "coverage_95",
            "mean_width_80_mg_dl",
            "n",
        ] {
            assert!(s[k].is_number(), "{h}.{k} missing: {s}");
        }
        assert!(s["n"].as_u64().unwrap() >= 10);
        let c80 = s["coverage_80"].as_f64().unwrap();
        let c95 = s["coverage_95"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c80) && c95 >= c80);
    }
    assert_eq!(v["future_inputs"], "blind");
    let printed = String::from_utf8_lossy(&o.stdout);
    let at = |h: &str| printed.find(h);
    assert!(
        at("h= 30").is_some() && at("h= 30") < at("h= 60") && at("h= 60") < at("h=120"),
        "horizons printed in order of minutes: {printed}"
    );
    // replay validation: the same keys, told the recorded future inputs
    let m2 = d.join("replay.json");
    let o = backtest("recorded", &m2);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&m2).unwrap()).unwrap();
    assert_eq!(r["future_inputs"], "recorded");
    for h in ["30", "60"] {
        assert_eq!(
            r["horizons"][h]["n"], v["horizons"][h]["n"],
            "same scored points"
        );
        assert!(r["horizons_with_inputs"][h]["n"].as_u64().unwrap() > 0);
    }
    assert_ne!(
        r["horizons_with_inputs"]["60"]["rmse_mg_dl"],
        v["horizons_with_inputs"]["60"]["rmse_mg_dl"],
        "knowing the recorded meals and boluses changes the forecasts that have them"
    );
    let o = backtest("psychic", &m2);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bad_record_rows_are_rejected_with_file_and_line_and_valid_rows_kept() {
    let d = tmp("badrec");
    let rec = d.join("r.csv");
    let mut s = String::from("time,kind,value,unit\n");
    for k in 0..40 {
        s.push_str(&format!(
            "2024-01-01T{:02}:{:02}:00Z,cgm,{},mg/dL\n",
            k / 12,
            (k % 12) * 5,
            100 + k
        ));
    }
    s.push_str("2024-01-01T04:00:00Z,bolus,-2,U\n");
    s.push_str("2024-01-01T04:05:00Z,cgm,5000,mg/dL\n");
    s.push_str("2024-01-01T04:10:00Z,ketones,1,mmol/L\n");
    std::fs::write(&rec, s).unwrap();
    let o = run(&[
        "twin",
        "fit",
        rec.to_str().unwrap(),
        "--out",
        d.join("t.json").to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(
        e.contains("r.csv:42") && e.contains("r.csv:43") && e.contains("r.csv:44"),
        "{e}"
    );
    // 40 valid CGM rows span < 24 h: the twin refuses with a reason, exit 2
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("calibration window"), "{e}");
}

#[test]
fn demo_writes_a_report() {
    let d = tmp("demo");
    let out = d.join("demo");
    let o = bin()
        .current_dir(repo())
        .args([
            "demo",
            "--out",
            out.to_str().unwrap(),
            "--days",
            "1",
            "--particles",
            "100",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("T1D-UOM"));
    for f in ["metrics.json", "twin.json", "record.csv", "cgm.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
}

const DECAY_SBML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="decay">
    <listOfCompartments><compartment id="c" size="1" constant="true"/></listOfCompartments>
    <listOfSpecies>
      <species id="A" compartment="c" initialAmount="10" hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
      <species id="B" compartment="c" initialAmount="0" hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
    </listOfSpecies>
    <listOfParameters><parameter id="k" value="0.5" constant="true"/></listOfParameters>
    <listOfReactions>
      <reaction id="r" reversible="false">
        <listOfReactants><speciesReference species="A" stoichiometry="1" constant="true"/></listOfReactants>
        <listOfProducts><speciesReference species="B" stoichiometry="1" constant="true"/></listOfProducts>
        <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML"><apply><times/><ci>k</ci><ci>A</ci></apply></math></kineticLaw>
      </reaction>
    </listOfReactions>
  </model>
</sbml>"#;

#[test]
fn sbml_simulate_matches_the_analytic_solution() {
    let d = tmp("sbml");
    let m = d.join("decay.xml");
    std::fs::write(&m, DECAY_SBML).unwrap();
    let o = run(&["sbml", "info", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("species: 2"));
    let out = d.join("r.csv");
    let o = run(&[
        "sbml",
        "simulate",
        m.to_str().unwrap(),
        "--end",
        "4",
        "--steps",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(&out).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), "time,A,B");
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 9);
    for r in rows {
        let a = 10.0 * (-0.5 * r[0]).exp();
        assert!(
            (r[1] - a).abs() < 1e-7 && (r[2] - (10.0 - a)).abs() < 1e-7,
            "{r:?}"
        );
    }
    std::fs::write(&m, "<sbml><model>").unwrap();
    let o = run(&["sbml", "info", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "malformed SBML is bad input");
}

#[test]
fn cohort_generate_and_crossover_trial() {
    let d = tmp("trial");
    let cohort = d.join("cohort.parquet");
    let o = run(&[
        "cohort",
        "generate",
        "--group",
        "adult",
        "--n",
        "20",
        "--seed",
        "7",
        "--out",
        cohort.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("accepted 20/"), "{}", stderr(&o));
    assert!(cohort.is_file());
    let spec = d.join("trial.toml");
    std::fs::write(
        &spec,
        format!(
            "[cohort]\nfrom = \"{}\"\n[scenario]\ndays = 1\nrandom_meals_seed = 11\nsensor = {{ kind = \"dexcom\", noise = true }}\npump = \"insulet\"\n[design]\nkind = \"crossover\"\n[[arm]]\nname = \"bb\"\ncontroller = {{ kind = \"basal-bolus\", target_mg_dl = 140 }}\n[[arm]]\nname = \"pid\"\ncontroller = {{ kind = \"pid\" }}\n[[endpoint]]\nmetric = \"tir_pct\"\n",
            cohort.display()
        ),
    )
    .unwrap();
    let out = d.join("out");
    let o = run(&[
        "trial",
        "run",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("results.parquet").is_file());
    let o = run(&[
        "trial",
        "analyze",
        out.to_str().unwrap(),
        "--bootstrap",
        "500",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(a["n_rows"], 40);
    let tir = &a["endpoints"]["tir_pct"];
    let (m_bb, m_pid) = (
        tir["arms"]["bb"]["mean"].as_f64().unwrap(),
        tir["arms"]["pid"]["mean"].as_f64().unwrap(),
    );
    assert!(tir["arms"]["bb"]["sd"].as_f64().unwrap() >= 0.0);
    let eff = &tir["effect"];
    let est = eff["estimate"].as_f64().unwrap();
    assert!((est - (m_pid - m_bb)).abs() < 1e-9, "{eff}");
    let ci = eff["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= est && est <= ci[1].as_f64().unwrap());
    let b = eff["bootstrap"]["ci95"].as_array().unwrap();
    assert!(b[0].as_f64().unwrap() <= b[1].as_f64().unwrap());
    assert!(out.join("plots").join("tir_pct.svg").is_file());
    let o = run(&["trial", "analyze", d.join("nothing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // bad spec: unknown arm controller
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("kind = \"pid\"", "kind = \"magic\""),
    )
    .unwrap();
    let o = run(&[
        "trial",
        "run",
        spec.to_str().unwrap(),
        "--out",
        d.join("out2").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!d.join("out2").join("results.parquet").exists());
}

#[test]
fn ctrl_c_leaves_a_valid_partial_file_that_resume_completes() {
    let d = tmp("resume");
    let spec = d.join("trial.toml");
    std::fs::write(
        &spec,
        "[cohort]\nfrom = \"simglucose-30\"\ngroup = \"all\"\nn = 600\nseed = 3\n[scenario]\ndays = 1\nrandom_meals_seed = 5\n[design]\nkind = \"crossover\"\n[[arm]]\nname = \"bb\"\ncontroller = { kind = \"basal-bolus\" }\n[[arm]]\nname = \"ol\"\ncontroller = { kind = \"open-loop\" }\n[[endpoint]]\nmetric = \"mean_mg_dl\"\n[execution]\nchunk_patients = 20\n",
    )
    .unwrap();
    let (full, cut) = (d.join("full"), d.join("cut"));
    let o = run(&[
        "trial",
        "run",
        spec.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_medtwin"))
        .args([
            "trial",
            "run",
            spec.to_str().unwrap(),
            "--out",
            cut.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // wait until the first row group is on disk, then send SIGINT like a terminal's Ctrl-C
    let writing = cut.join("results.writing.parquet");
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&writing).map(|m| m.len()).unwrap_or(0) < 1000 {
        assert!(t0.elapsed().as_secs() < 120, "no row group written");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let k = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    assert!(cut.join("results.partial.parquet").is_file());
    assert!(!cut.join("results.parquet").exists());
    // the partial file is valid and analysable, and marked partial
    let o = run(&["trial", "analyze", cut.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut.join("summary.json")).unwrap()).unwrap();
    assert!(a["status"].as_str().unwrap().starts_with("partial"), "{a}");
    let n = a["n_rows"].as_u64().unwrap();
    assert!((40..1200).contains(&n), "{n}");
    let o = run(&[
        "trial",
        "run",
        spec.to_str().unwrap(),
        "--out",
        cut.to_str().unwrap(),
        "--resume",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("resumed"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read(full.join("results.parquet")).unwrap(),
        std::fs::read(cut.join("results.parquet")).unwrap(),
        "interrupted + resumed results differ from the uninterrupted run"
    );
    assert!(!cut.join("results.partial.parquet").exists());
}

/// A twin calibrated from CGM alone says so and refuses insulin questions (bolus advice, what-ifs
/// and forecasts with a bolus) with the reason; a meal-only plan is still answered.
#[test]
fn cgm_only_twin_refuses_insulin_questions() {
    let d = tmp("cgm-only");
    let rec = import_demo(&d);
    let text = std::fs::read_to_string(&rec).unwrap();
    let cgm_only: String = text
        .lines()
        .filter(|l| {
            !l.contains(",bolus,") && !l.contains(",long_acting,") && !l.contains(",basal_rate,")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(cgm_only.lines().count() < text.lines().count());
    let rec2 = d.join("cgm_only.csv");
    std::fs::write(&rec2, cgm_only).unwrap();
    let twin = d.join("twin.json");
    let o = run(&[
        "twin",
        "fit",
        rec2.to_str().unwrap(),
        "--until",
        "2d",
        "--particles",
        "50",
        "--out",
        twin.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["twin", "advise", twin.to_str().unwrap(), "--carbs", "60"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("without any insulin data"),
        "{}",
        stderr(&o)
    );
    let bolus = d.join("bolus.toml");
    std::fs::write(&bolus, "[[bolus]]\nat_min = 0\nunits = 5\n").unwrap();
    let o = run(&[
        "twin",
        "whatif",
        twin.to_str().unwrap(),
        "--plan",
        bolus.to_str().unwrap(),
        "--out",
        d.join("wi").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("what-if with an insulin plan: refused"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "twin",
        "forecast",
        twin.to_str().unwrap(),
        "--plan",
        bolus.to_str().unwrap(),
        "--horizon",
        "60",
        "--out",
        d.join("f.csv").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let meal = d.join("meal.toml");
    std::fs::write(&meal, "[[meal]]\nat_min = 0\ncarbs_g = 40\n").unwrap();
    let o = run(&[
        "twin",
        "forecast",
        twin.to_str().unwrap(),
        "--plan",
        meal.to_str().unwrap(),
        "--horizon",
        "60",
        "--out",
        d.join("f.csv").to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "a meal-only plan is answered: {}",
        stderr(&o)
    );
}

/// `medtwin import clarity` and `import tidepool` write the record CSV every other command
/// reads, with local Clarity times in the zone given; a bad zone or a file of another kind is
/// refused with exit code 2 and the reason.
#[test]
fn import_clarity_and_tidepool_exports() {
    let d = tmp("exports");
    let clarity = d.join("clarity.csv");
    std::fs::write(
        &clarity,
        "Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Event Subtype,Glucose Value (mg/dL),Insulin Value (u),Carb Value (grams)\n\
         1,2024-07-01T08:00:00,EGV,,142,,\n\
         2,2024-07-01T08:05:00,EGV,,Low,,\n\
         3,2024-07-01T08:10:00,Insulin,Fast-Acting,,4.5,\n\
         4,2024-07-01T08:11:00,Carbs,,,,45\n",
    )
    .unwrap();
    let out = d.join("rec.csv");
    let o = run(&[
        "import",
        "clarity",
        clarity.to_str().unwrap(),
        "--tz",
        "Europe/London",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    // 08:00 BST is 07:00 UTC
    assert!(text.contains("2024-07-01T07:00:00Z,cgm,142"), "{text}");
    assert!(
        text.contains(",bolus,4.5") && text.contains(",carbs,45"),
        "{text}"
    );
    let o = run(&[
        "import",
        "clarity",
        clarity.to_str().unwrap(),
        "--tz",
        "Mars/Olympus",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Mars/Olympus"), "{}", stderr(&o));
    let o = run(&[
        "import",
        "clarity",
        out.to_str().unwrap(),
        "--tz",
        "UTC",
        "--out",
        d.join("x.csv").to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a record CSV is not a Clarity export"
    );
    let tidepool = d.join("tp.json");
    std::fs::write(
        &tidepool,
        r#"[{"type": "cbg", "time": "2024-05-01T08:00:00Z", "units": "mg/dL", "value": 101},
            {"type": "bolus", "subType": "normal", "time": "2024-05-01T12:00:00Z", "normal": 4}]"#,
    )
    .unwrap();
    let out = d.join("tp.csv");
    let o = run(&[
        "import",
        "tidepool",
        tidepool.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("2024-05-01T08:00:00Z,cgm,101"), "{text}");
    assert!(text.contains("2024-05-01T12:00:00Z,bolus,4"), "{text}");
}
