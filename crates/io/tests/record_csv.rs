//! The medtwin record format: round trip and every reading rule.

use std::fs;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use medtwin_io::{
    count_keys, read_patient_toml, read_record_csv, write_patient_toml, write_record_csv,
    ImportReport, IoError, PatientInfo, Record, RecordEntry, RecordKind,
};

fn tmp_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("medtwin-io-record-{name}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn entry(t: &str, kind: RecordKind, v: f64, unit: &str, insulin: Option<&str>) -> RecordEntry {
    RecordEntry::new(ts(t), kind, v, unit, insulin.map(String::from), "test").unwrap()
}

/// The rejection whose line is `line`.
fn rejection(report: &ImportReport, line: usize) -> String {
    let r: Vec<&medtwin_io::Issue> = report
        .rejected
        .iter()
        .filter(|i| i.line == Some(line))
        .collect();
    assert_eq!(
        r.len(),
        1,
        "expected one rejection at line {line}, got {:?}",
        report.rejected
    );
    r[0].to_string()
}

#[test]
fn round_trip_write_read_keeps_everything() {
    let dir = tmp_dir("round-trip");
    let entries = vec![
        entry("2023-10-29T00:30:00Z", RecordKind::Cgm, 6.7, "mmol/L", None),
        entry(
            "2023-10-29T00:35:00.5Z",
            RecordKind::Cgm,
            121.0,
            "mg/dL",
            None,
        ),
        entry(
            "2023-10-29T01:30:00+01:00",
            RecordKind::Smbg,
            5.55,
            "mmol/L",
            None,
        ),
        entry(
            "2023-10-29T07:00:00Z",
            RecordKind::Bolus,
            4.35,
            "U",
            Some("aspart"),
        ),
        entry(
            "2023-10-29T00:00:00Z",
            RecordKind::BasalRate,
            0.825,
            "U/h",
            None,
        ),
        entry(
            "2023-10-29T18:00:00Z",
            RecordKind::LongActing,
            14.0,
            "U",
            Some("glargine, U100"),
        ),
        entry(
            "2023-10-29T07:01:00Z",
            RecordKind::Carbs,
            0.1 + 0.2,
            "g",
            None,
        ),
    ];
    let record = Record::new(PatientInfo::default(), entries);
    let path = dir.join("record.csv");
    write_record_csv(&record, &path).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("time,kind,value,unit,insulin\n"), "{text}");
    assert!(
        text.contains("2023-10-29T00:30:00Z,smbg,5.55,mmol/L,"),
        "times in UTC, original unit: {text}"
    );
    assert!(text.contains("\"glargine, U100\""), "{text}");

    let (back, report) = read_record_csv(&path).unwrap();
    assert!(
        report.rejected.is_empty() && report.warnings.is_empty(),
        "{report}"
    );
    assert_eq!(back.entries.len(), record.entries.len());
    for (a, b) in record.entries.iter().zip(&back.entries) {
        assert_eq!(a.time, b.time);
        assert_eq!(a.kind, b.kind);
        assert_eq!(a.value.to_bits(), b.value.to_bits(), "{a:?} vs {b:?}");
        assert_eq!(a.original_value.to_bits(), b.original_value.to_bits());
        assert_eq!(a.unit, b.unit);
        assert_eq!(a.insulin, b.insulin);
    }
    assert_eq!(back.entries[2].source, "record.csv:4");
    assert_eq!(report.count(count_keys::ROWS_READ), 7);
    assert_eq!(report.count("accepted_cgm"), 2);
    assert_eq!(
        report.count(&ImportReport::accepted_key(RecordKind::Carbs)),
        1
    );
    // Written again, the file is identical (stable format).
    let path2 = dir.join("again.csv");
    write_record_csv(&back, &path2).unwrap();
    assert_eq!(fs::read_to_string(&path2).unwrap(), text);
}

#[test]
fn glucose_is_converted_with_core_units() {
    let e = entry(
        "2024-01-01T00:00:00Z",
        RecordKind::Cgm,
        10.0,
        "mmol/L",
        None,
    );
    assert_eq!(e.value, medtwin_core::units::glucose_mmol_l_to_mg_dl(10.0));
    assert_eq!(e.unit, "mmol/L");
    assert_eq!(e.original_value, 10.0);
}

#[test]
fn each_malformed_row_is_rejected_with_line_and_valid_rows_kept() {
    let dir = tmp_dir("rejections");
    let rows = [
        "time,kind,value,unit,insulin",              // 1
        "2024-01-01T00:00:00Z,cgm,100,mg/dL,",       // 2 valid
        "2024-01-01T00:05:00Z,cgm,100,mg/dL",        // 3 too few columns
        "2024-01-01T00:05:00Z,cgm,100,mg/dL,,extra", // 4 too many columns
        "2024-13-01T00:05:00Z,cgm,100,mg/dL,",       // 5 unparsable time
        "2024-01-01T00:05:00,cgm,100,mg/dL,",        // 6 time without offset
        "2024-01-01T00:05:00Z,cgm,abc,mg/dL,",       // 7 unparsable number
        "2024-01-01T00:05:00Z,insulin,1,U,",         // 8 unknown kind
        "2024-01-01T00:05:00Z,cgm,100,U,",           // 9 unit not allowed (glucose)
        "2024-01-01T00:05:00Z,bolus,1,mg,",          // 10 unit not allowed (insulin)
        "2024-01-01T00:05:00Z,basal_rate,1,U,",      // 11 rate needs U/h
        "2024-01-01T00:05:00Z,bolus,-1,U,",          // 12 negative insulin
        "2024-01-01T00:05:00Z,long_acting,-10,U,",   // 13 negative insulin
        "2024-01-01T00:05:00Z,carbs,-5,g,",          // 14 negative carbs
        "2024-01-01T00:05:00Z,basal_rate,-0.5,U/h,", // 15 negative rate
        "2024-01-01T00:05:00Z,cgm,0,mg/dL,",         // 16 glucose 0
        "2024-01-01T00:05:00Z,smbg,-3,mmol/L,",      // 17 glucose negative
        "2024-01-01T00:05:00Z,cgm,1200,mg/dL,",      // 18 glucose > 1000 mg/dL
        "2024-01-01T00:05:00Z,cgm,60,mmol/L,",       // 19 60 mmol/L = 1081 mg/dL
        "2024-01-01T00:05:00Z,cgm,NaN,mg/dL,",       // 20 NaN
        "2024-01-01T00:05:00Z,bolus,inf,U,",         // 21 infinite
        "2024-01-01T00:10:00Z,bolus,0,U,novorapid",  // 22 valid (zero is possible)
        "2024-01-01T00:10:00Z,cgm,1000,mg/dL,",      // 23 valid (limit)
        "2024-01-01T00:10:00Z,CGM,100,mg/dL,",       // 24 kind names are lower case
    ];
    let path = write(&dir, "bad.csv", &(rows.join("\n") + "\n"));
    let (record, report) = read_record_csv(&path).unwrap();
    assert_eq!(record.entries.len(), 3, "{report}");
    assert_eq!(report.rejected.len(), rows.len() - 1 - 3, "{report}");
    assert_eq!(report.count(count_keys::REJECTED), report.rejected.len());
    assert_eq!(report.count(count_keys::ROWS_READ), rows.len() - 1);
    let file = path.display().to_string();
    let expect = [
        (3, "expected 5 columns"),
        (4, "expected 5 columns"),
        (5, "unparsable time"),
        (6, "UTC offset"),
        (7, "unparsable number `abc`"),
        (8, "unknown kind `insulin`"),
        (9, "unit `U` not allowed for cgm"),
        (10, "unit `mg` not allowed for bolus"),
        (11, "unit `U` not allowed for basal_rate"),
        (12, "negative bolus"),
        (13, "negative long_acting"),
        (14, "negative carbs"),
        (15, "negative basal_rate"),
        (16, "impossible glucose"),
        (17, "impossible glucose"),
        (18, "impossible glucose"),
        (19, "impossible glucose 60 mmol/L"),
        (20, "not a finite number"),
        (21, "not a finite number"),
        (24, "unknown kind `CGM`"),
    ];
    for (line, what) in expect {
        let msg = rejection(&report, line);
        assert!(msg.starts_with(&format!("{file}:{line}: ")), "{msg}");
        assert!(
            msg.contains(what),
            "line {line}: `{msg}` should mention `{what}`"
        );
    }
    assert_eq!(record.entries[1].insulin.as_deref(), Some("novorapid"));
}

#[test]
fn out_of_order_rows_are_accepted_counted_and_sorted() {
    let dir = tmp_dir("order");
    let text = "time,kind,value,unit\n\
        2024-01-01T00:10:00Z,cgm,110,mg/dL\n\
        2024-01-01T00:00:00Z,cgm,100,mg/dL\n\
        2024-01-01T00:05:00Z,cgm,105,mg/dL\n\
        2024-01-01T00:05:00Z,carbs,20,g\n\
        2024-01-01T00:15:00Z,cgm,115,mg/dL\n";
    let path = write(&dir, "order.csv", text);
    let (record, report) = read_record_csv(&path).unwrap();
    assert!(report.rejected.is_empty());
    assert_eq!(report.count(count_keys::OUT_OF_ORDER), 1);
    assert_eq!(report.warnings.len(), 1);
    assert!(
        report.warnings[0]
            .message
            .contains("1 rows earlier than the row before them (line 3)"),
        "{report}"
    );
    let values: Vec<f64> = record.entries.iter().map(|e| e.value).collect();
    assert_eq!(
        values,
        vec![100.0, 105.0, 20.0, 110.0, 115.0],
        "sorted by time, stable for ties"
    );
}

#[test]
fn exact_duplicates_are_dropped_and_counted() {
    let dir = tmp_dir("dups");
    let text = "time,kind,value,unit,insulin\n\
        2024-01-01T00:00:00Z,cgm,100,mg/dL,\n\
        2024-01-01T00:00:00Z,cgm,100,mg/dL,\n\
        2024-01-01T01:00:00+01:00,cgm,100.0,mg/dL,\n\
        2024-01-01T00:00:00Z,cgm,101,mg/dL,\n\
        2024-01-01T00:00:00Z,bolus,2,U,aspart\n\
        2024-01-01T00:00:00Z,bolus,2,U,lispro\n";
    let path = write(&dir, "dups.csv", text);
    let (record, report) = read_record_csv(&path).unwrap();
    assert_eq!(report.count(count_keys::DUPLICATES_DROPPED), 2, "{report}");
    assert!(report.warnings.iter().any(|w| w
        .message
        .contains("2 exact duplicate rows dropped (lines 3, 4)")));
    assert_eq!(record.entries.len(), 4);
    assert_eq!(report.count(count_keys::ACCEPTED), 4);
}

#[test]
fn wrong_or_missing_header_is_a_file_error_naming_file_and_header() {
    let dir = tmp_dir("header");
    let path = write(
        &dir,
        "wrong.csv",
        "timestamp,kind,value,unit\n2024-01-01T00:00:00Z,cgm,100,mg/dL\n",
    );
    let err = read_record_csv(&path).unwrap_err();
    assert!(matches!(err, IoError::Header { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("wrong.csv") && msg.contains("time,kind,value,unit,insulin"),
        "{msg}"
    );
    assert!(msg.contains("timestamp,kind,value,unit"), "{msg}");

    let empty = write(&dir, "empty.csv", "");
    let msg = read_record_csv(&empty).unwrap_err().to_string();
    assert!(
        msg.contains("empty.csv") && msg.contains("(empty file)"),
        "{msg}"
    );

    let missing = dir.join("missing.csv");
    let err = read_record_csv(&missing).unwrap_err();
    assert!(matches!(err, IoError::Read { .. }));
    assert!(err.to_string().contains("missing.csv"));
}

#[test]
fn bom_and_crlf_are_accepted() {
    let dir = tmp_dir("bom");
    let path = dir.join("bom.csv");
    fs::write(&path, b"\xEF\xBB\xBFtime,kind,value,unit,insulin\r\n2024-01-01T00:00:00Z,cgm,5,mmol/L,\r\n\r\n2024-01-01T00:05:00Z,cgm,x,mmol/L,\r\n").unwrap();
    let (record, report) = read_record_csv(&path).unwrap();
    assert_eq!(record.entries.len(), 1);
    assert_eq!(report.count(count_keys::BOM_STRIPPED), 1);
    assert_eq!(
        report.rejected[0].line,
        Some(4),
        "line numbers count blank lines and CRLF correctly"
    );
}

#[test]
fn times_keep_their_offset_across_dst() {
    let dir = tmp_dir("dst");
    let text = "time,kind,value,unit\n\
        2023-10-29T01:30:00+01:00,cgm,100,mg/dL\n\
        2023-10-29T01:30:00+00:00,cgm,110,mg/dL\n";
    let path = write(&dir, "dst.csv", text);
    let (record, _) = read_record_csv(&path).unwrap();
    assert_eq!(record.entries[0].time, ts("2023-10-29T00:30:00Z"));
    assert_eq!(record.entries[1].time, ts("2023-10-29T01:30:00Z"));
}

#[test]
fn patient_toml_beside_the_csv_is_loaded() {
    let dir = tmp_dir("patient");
    let path = write(
        &dir,
        "record.csv",
        "time,kind,value,unit\n2024-01-01T00:00:00Z,carbs,30,g\n",
    );
    let (record, _) = read_record_csv(&path).unwrap();
    assert!(record.patient.is_empty());
    let info = PatientInfo {
        id: Some("demo-01".into()),
        weight_kg: Some(72.5),
        age_years: Some(34.0),
        sex: Some("female".into()),
        insulin_type: Some("aspart".into()),
    };
    write_patient_toml(&info, &dir.join("patient.toml")).unwrap();
    let (record, _) = read_record_csv(&path).unwrap();
    assert_eq!(record.patient, info);
    assert_eq!(read_patient_toml(&dir.join("patient.toml")).unwrap(), info);
}

#[test]
fn patient_toml_errors_name_the_key() {
    let dir = tmp_dir("patient-bad");
    let p = write(&dir, "patient.toml", "id = \"x\"\nweight = 70\n");
    let msg = read_patient_toml(&p).unwrap_err().to_string();
    assert!(
        msg.contains("patient.toml") && msg.contains("unknown field `weight`"),
        "{msg}"
    );
    let p = write(&dir, "patient.toml", "weight_kg = -3\n");
    let msg = read_patient_toml(&p).unwrap_err().to_string();
    assert!(msg.contains("weight_kg"), "{msg}");
    let p = write(&dir, "patient.toml", "age_years = \"old\"\n");
    let msg = read_patient_toml(&p).unwrap_err().to_string();
    assert!(
        msg.contains("age_years") || msg.contains("invalid type"),
        "{msg}"
    );
    let p = write(&dir, "patient.toml", "= broken");
    assert!(matches!(read_patient_toml(&p), Err(IoError::Parse { .. })));
    // A bad patient.toml beside a record is an error of the record read.
    write(&dir, "record.csv", "time,kind,value,unit\n");
    assert!(read_record_csv(&dir.join("record.csv")).is_err());
}

#[test]
fn invalid_entries_are_not_written() {
    let dir = tmp_dir("write-invalid");
    let mut e = entry("2024-01-01T00:00:00Z", RecordKind::Bolus, 1.0, "U", None);
    e.original_value = f64::NAN;
    let record = Record {
        patient: PatientInfo::default(),
        entries: vec![e],
    };
    let path = dir.join("r.csv");
    let err = write_record_csv(&record, &path).unwrap_err();
    assert!(
        matches!(err, IoError::InvalidEntry { index: 0, .. }),
        "{err}"
    );
    assert!(!path.exists());
    let mut e = entry("2024-01-01T00:00:00Z", RecordKind::Cgm, 5.0, "mmol/L", None);
    e.value = 5.0; // not converted
    assert!(e.validate().is_err());
}

#[test]
fn record_queries() {
    let record = Record::new(
        PatientInfo {
            id: Some("q".into()),
            ..PatientInfo::default()
        },
        vec![
            entry(
                "2024-01-01T02:00:00Z",
                RecordKind::BasalRate,
                0.9,
                "U/h",
                None,
            ),
            entry(
                "2024-01-01T00:00:00Z",
                RecordKind::BasalRate,
                0.8,
                "U/h",
                None,
            ),
            entry(
                "2024-01-01T01:00:00Z",
                RecordKind::Cgm,
                100.0,
                "mg/dL",
                None,
            ),
            entry(
                "2024-01-01T03:00:00Z",
                RecordKind::Cgm,
                110.0,
                "mg/dL",
                None,
            ),
        ],
    );
    assert_eq!(record.first_time(), Some(ts("2024-01-01T00:00:00Z")));
    assert_eq!(record.last_time(), Some(ts("2024-01-01T03:00:00Z")));
    assert_eq!(record.of_kind(RecordKind::Cgm).count(), 2);
    assert_eq!(record.count_of(RecordKind::Bolus), 0);
    let sub = record.between(ts("2024-01-01T01:00:00Z"), ts("2024-01-01T03:00:00Z"));
    assert_eq!(sub.entries.len(), 2, "inclusive from, exclusive to");
    assert_eq!(sub.patient.id.as_deref(), Some("q"));
    assert_eq!(
        record
            .basal_rate_at(ts("2024-01-01T01:30:00Z"))
            .map(|e| e.value),
        Some(0.8)
    );
    assert_eq!(
        record
            .basal_rate_at(ts("2024-01-01T02:00:00Z"))
            .map(|e| e.value),
        Some(0.9)
    );
    assert!(record.basal_rate_at(ts("2023-12-31T23:00:00Z")).is_none());
    assert!(Record::default().first_time().is_none());
    for k in RecordKind::ALL {
        assert_eq!(RecordKind::from_name(k.name()), Some(k));
        assert!(k.allowed_units().contains(&k.canonical_unit()));
    }
}
