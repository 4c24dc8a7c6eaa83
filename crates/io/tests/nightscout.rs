//! Nightscout importer, on the synthetic fixtures in `tests/fixtures/`.

use std::fs;
use std::path::{Path, PathBuf};

use medtwin_io::{count_keys as keys, import_nightscout, IoError, RecordKind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn fixtures_are_mapped_and_every_case_reported() {
    let (record, report) = import_nightscout(
        &fixture("nightscout_entries.json"),
        &fixture("nightscout_treatments.json"),
    )
    .unwrap();
    println!("{report}");
    assert_eq!(report.count(keys::ROWS_READ), 20 + 13);
    assert_eq!(
        record.count_of(RecordKind::Cgm),
        14,
        "13 sgv + one with dateString and string sgv"
    );
    assert_eq!(record.count_of(RecordKind::Smbg), 2, "mbg entry + BG Check");
    assert_eq!(record.count_of(RecordKind::Bolus), 2);
    assert_eq!(record.count_of(RecordKind::Carbs), 2);
    assert_eq!(record.count_of(RecordKind::BasalRate), 1);
    assert_eq!(report.count(keys::ACCEPTED), 21);
    assert_eq!(
        report.count(keys::DUPLICATES_DROPPED),
        3,
        "one sgv, one meal bolus (insulin + carbs)"
    );
    assert_eq!(
        report.count(keys::UNKNOWN_EVENT_TYPES),
        3,
        "sensorState, Note, Site Change"
    );
    assert_eq!(report.count(keys::TEMP_BASALS), 1);
    assert_eq!(report.count("temp_basal_cancels"), 1);
    assert_eq!(report.count("calibrations_skipped"), 1);
    assert_eq!(report.count(keys::EMPTY_TREATMENTS), 1);
    assert_eq!(report.count(keys::REJECTED), 5);
    let rejected: Vec<String> = report.rejected.iter().map(|i| i.to_string()).collect();
    let has = |s: &str| rejected.iter().any(|r| r.contains(s));
    assert!(has("impossible glucose 0 mg/dL"), "{rejected:#?}");
    assert!(has("without a numeric `sgv`"));
    assert!(has("percent"));
    assert!(has("impossible negative bolus"));
    assert!(has("without a usable time"));
    assert!(report
        .rejected
        .iter()
        .all(|i| i.line.is_none() && i.message.starts_with('[')));
    // The profile fallback of temp basals is warned about, once.
    let profile: Vec<_> = report
        .warnings
        .iter()
        .filter(|w| w.message.contains("profile basal rate"))
        .collect();
    assert!(!profile.is_empty());
    assert_eq!(
        report
            .warnings
            .iter()
            .filter(|w| w.message.contains("Temp Basal rates imported"))
            .count(),
        1
    );
    assert!(report
        .warnings
        .iter()
        .any(|w| w.message.contains("unknown eventType `Note`")));
    // Values and units.
    let bg_check = record
        .of_kind(RecordKind::Smbg)
        .find(|e| e.unit == "mmol/L")
        .unwrap();
    assert_eq!(
        bg_check.value,
        medtwin_core::units::glucose_mmol_l_to_mg_dl(8.1)
    );
    let basal = record.of_kind(RecordKind::BasalRate).next().unwrap();
    assert_eq!((basal.value, basal.unit.as_str()), (1.4, "U/h"));
    assert_eq!(basal.time, "2024-01-10T06:20:00Z".parse().unwrap());
    let first = &record.entries[0];
    assert_eq!(first.time, "2024-01-10T06:00:00Z".parse().unwrap());
    assert!(
        first
            .source
            .starts_with("nightscout:nightscout_entries.json["),
        "{}",
        first.source
    );
    assert!(
        record.entries.windows(2).all(|w| w[0].time <= w[1].time),
        "newest-first input is sorted"
    );
    assert!(record.patient.is_empty());
}

#[test]
fn file_level_errors() {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("medtwin-io-ns");
    fs::create_dir_all(&d).unwrap();
    let obj = d.join("object.json");
    // One object is a one-line mongoexport (accepted); a number is neither.
    fs::write(&obj, "42").unwrap();
    let bad = d.join("bad.json");
    fs::write(&bad, "[{\"type\":").unwrap();
    let empty = d.join("empty.json");
    fs::write(&empty, "[]").unwrap();
    let err = import_nightscout(&obj, &empty).unwrap_err();
    assert!(matches!(err, IoError::Parse { .. }));
    assert!(
        err.to_string().contains("object.json") && err.to_string().contains("JSON array"),
        "{err}"
    );
    let err = import_nightscout(&empty, &bad).unwrap_err();
    assert!(
        err.to_string().contains("bad.json") && err.to_string().contains("invalid JSON"),
        "{err}"
    );
    assert!(matches!(
        import_nightscout(&d.join("none.json"), &empty),
        Err(IoError::Read { .. })
    ));
    let (record, report) = import_nightscout(&empty, &empty).unwrap();
    assert!(record.entries.is_empty() && report.rejected.is_empty());
}

/// A mongoexport (one object per line, extended-JSON numbers and dates) imports like the same
/// documents as JSON arrays; a broken line is named.
#[test]
fn mongoexport_json_lines_import_like_arrays() {
    let dir = std::env::temp_dir().join(format!("medtwin-ns-lines-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let lines = dir.join("entries.json");
    fs::write(
        &lines,
        "{\"_id\":{\"$oid\":\"x\"},\"type\":\"sgv\",\"date\":{\"$numberLong\":\"1700000000000\"},\"sgv\":101}\n\
         {\"type\":\"sgv\",\"date\":{\"$date\":\"2023-11-14T22:18:20Z\"},\"sgv\":{\"$numberInt\":\"102\"}}\n",
    )
    .unwrap();
    let array = dir.join("entries-array.json");
    fs::write(
        &array,
        "[{\"type\":\"sgv\",\"date\":1700000000000,\"sgv\":101},{\"type\":\"sgv\",\"dateString\":\"2023-11-14T22:18:20Z\",\"sgv\":102}]",
    )
    .unwrap();
    let treatments = dir.join("treatments.json");
    fs::write(&treatments, "{\"eventType\":\"Meal Bolus\",\"created_at\":\"2023-11-14T22:15:00Z\",\"insulin\":2,\"carbs\":30}\n").unwrap();
    let (a, ra) = import_nightscout(&lines, &treatments).unwrap();
    let (b, _) = import_nightscout(&array, &treatments).unwrap();
    assert!(ra.rejected.is_empty(), "{:?}", ra.rejected);
    assert_eq!(a.entries.len(), 4, "{:?}", a.entries);
    let vals = |r: &medtwin_io::Record| -> Vec<(i64, f64)> {
        r.entries
            .iter()
            .map(|e| (e.time.as_millisecond(), e.value))
            .collect()
    };
    assert_eq!(vals(&a), vals(&b));
    fs::write(
        &lines,
        "{\"type\":\"sgv\",\"date\":1700000000000,\"sgv\":101}\n{\"type\": sgv}\n",
    )
    .unwrap();
    match import_nightscout(&lines, &treatments) {
        Err(IoError::Parse { reason, .. }) => assert!(reason.contains("line 2"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let _ = fs::remove_dir_all(&dir);
}
