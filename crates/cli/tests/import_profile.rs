//! `medtwin import nightscout … --profile profile.json` (issue 15, item 6): relative (percent)
//! temp basals of a real export resolve against the patient's basal schedule; without the
//! profile they are rejected by name, and a bad profile stops the import with the element.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medtwin-import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn import(dir: &Path, profile: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_medtwin"));
    c.args(["import", "nightscout", "entries.json", "treatments.json"])
        .args(["--out", "record.csv"])
        .current_dir(dir);
    if let Some(p) = profile {
        c.args(["--profile", p]);
    }
    c.output().unwrap()
}

/// The basal rates written to the record, U/h.
fn basal_rates(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("record.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(",basal"))
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn percent_temp_basals_resolve_with_the_profile() {
    let d = tmp("profile");
    // mongoexport layout (one document per line)
    std::fs::write(
        d.join("entries.json"),
        "{\"type\": \"sgv\", \"sgv\": 140, \"date\": 1717243200000}\n\
         {\"type\": \"sgv\", \"sgv\": 150, \"date\": 1717243500000}\n",
    )
    .unwrap();
    // 2024-06-01T12:00Z: +50 % of the 1.2 U/h daytime rate; 23:00Z: -100 % (zero delivery)
    std::fs::write(
        d.join("treatments.json"),
        r#"[{"eventType": "Temp Basal", "percent": 50, "duration": 30, "created_at": "2024-06-01T12:00:00Z"},
            {"eventType": "Temp Basal", "percent": -100, "duration": 30, "created_at": "2024-06-01T23:00:00Z"}]"#,
    )
    .unwrap();
    std::fs::write(
        d.join("profile.json"),
        r#"{"defaultProfile": "Day", "startDate": "2024-01-01T00:00:00.000Z",
            "store": {"Day": {"timezone": "UTC",
                              "basal": [{"time": "00:00", "value": 0.8}, {"time": "06:30", "value": 1.2},
                                        {"time": "22:00", "value": 0.6}]}}}"#,
    )
    .unwrap();

    // Without the profile: both rows rejected, by name.
    let o = import(&d, None);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("percent"), "{err}");
    assert!(basal_rates(&d).is_empty(), "{:?}", basal_rates(&d));

    // With it: 1.2 × 1.5 = 1.8 U/h and 0.6 × 0 = 0 U/h.
    let o = import(&d, Some("profile.json"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rates = basal_rates(&d);
    assert!(
        rates.iter().any(|r| (r - 1.8).abs() < 1e-9) && rates.contains(&0.0),
        "{rates:?}"
    );
    // The pump returns to the schedule after a temp basal (12:30 → 1.2 U/h) and follows its
    // changes while no temp basal runs (22:00 → 0.6 U/h); nothing at 12:00 besides the temp.
    let csv = std::fs::read_to_string(d.join("record.csv")).unwrap();
    let basal: Vec<(&str, f64)> = csv
        .lines()
        .filter(|l| l.contains(",basal"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0], f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(
        basal
            .iter()
            .map(|(t, r)| (t.get(11..16).unwrap_or(t), *r))
            .collect::<Vec<_>>(),
        vec![
            ("12:00", 1.8),
            ("12:30", 1.2),
            ("22:00", 0.6),
            ("23:00", 0.0)
        ],
        "{csv}"
    );

    // A profile without a basal schedule stops the import, naming the element.
    std::fs::write(d.join("bad.json"), r#"{"store": {"A": {}}}"#).unwrap();
    let o = import(&d, Some("bad.json"));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.json") && err.contains("basal"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
