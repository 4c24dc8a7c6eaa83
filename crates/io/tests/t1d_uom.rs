//! T1D-UOM importer: synthetic quirk files, the bundled demo subset, the full shared data.

use std::fs;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use medtwin_io::{
    count_keys as keys, import_t1d_uom, ImportReport, IoError, Record, RecordKind, T1D_UOM_CITATION,
};

const GLUCOSE: &str = "Glucose Data/UoMGlucose9001.csv";
const BASAL: &str = "Insulin Data/Basal Data/UoMBasal9001.csv";
const BOLUS: &str = "Insulin Data/Bolus Data/UoMBolus9001.csv";
const NUTRITION: &str = "Nutrition Data/UoMNutrition9001.csv";

/// A synthetic dataset folder with the given files (relative path, bytes).
fn dataset(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("medtwin-io-t1d-{name}"));
    let _ = fs::remove_dir_all(&d);
    for (rel, bytes) in files {
        let p = d.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
    d
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom")
}

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/realdata/T1D-UOM")
}

fn has_warning(report: &ImportReport, file: &str, text: &str) -> bool {
    report
        .warnings
        .iter()
        .any(|w| w.file == file && w.message.contains(text))
}

#[test]
fn dst_fall_back_is_resolved_by_file_order() {
    // 2023-10-29, UK clocks go back at 02:00 BST -> 01:00 GMT. A 5-min CGM logs
    // 00:50 .. 01:55 (BST), then 01:00 .. 01:55 again (GMT), then 02:00 (GMT).
    let mut g = String::from("bg_ts,value\r\n");
    let mut expected_utc = Vec::new();
    let start = ts("2023-10-28T23:50:00Z"); // 00:50 BST
    let mut push = |hh: u32, mm: u32, k: usize| {
        g.push_str(&format!(
            "29/10/2023 {hh:02}:{mm:02},{}\r\n",
            5.0 + k as f64 * 0.1
        ));
        expected_utc.push(start + SignedDuration::from_mins(5 * k as i64));
    };
    let mut k = 0;
    for (hh, mm) in [(0, 50), (0, 55)] {
        push(hh, mm, k);
        k += 1;
    }
    for _pass in 0..2 {
        for mm in (0..60).step_by(5) {
            push(1, mm, k);
            k += 1;
        }
    }
    push(2, 0, k);
    let dir = dataset("dst-fall", &[(GLUCOSE, g.as_bytes())]);
    let (record, report) = import_t1d_uom(&dir, "9001").unwrap();
    let times: Vec<Timestamp> = record.of_kind(RecordKind::Cgm).map(|e| e.time).collect();
    assert_eq!(times, expected_utc, "{report}");
    assert_eq!(report.count(keys::DST_AMBIGUOUS), 24);
    assert_eq!(report.count(keys::DST_AMBIGUOUS_SECOND_PASS), 12);
    assert!(
        has_warning(
            &report,
            GLUCOSE,
            "12 as summer time BST (UTC+1, first pass) and 12 as GMT"
        ),
        "{report}"
    );
    assert_eq!(report.count(keys::CGM_SAME_TIME_CONFLICTS), 0);
    // The first 01:00 is BST (00:00Z), the second one GMT (01:00Z).
    assert!(
        times.contains(&ts("2023-10-29T00:00:00Z")) && times.contains(&ts("2023-10-29T01:00:00Z"))
    );
}

#[test]
fn dst_fall_back_jump_from_0155_to_0100_starts_gmt() {
    let g = "bg_ts,value\n29/10/2023 01:40,6\n29/10/2023 01:55,6.1\n29/10/2023 01:00,6.2\n29/10/2023 01:20,6.3\n";
    let dir = dataset("dst-jump", &[(GLUCOSE, g.as_bytes())]);
    let (record, report) = import_t1d_uom(&dir, "9001").unwrap();
    let times: Vec<String> = record.entries.iter().map(|e| e.time.to_string()).collect();
    assert_eq!(
        times,
        [
            "2023-10-29T00:40:00Z",
            "2023-10-29T00:55:00Z",
            "2023-10-29T01:00:00Z",
            "2023-10-29T01:20:00Z"
        ]
    );
    assert_eq!(report.count(keys::DST_AMBIGUOUS), 4);
    assert_eq!(report.count(keys::DST_AMBIGUOUS_SECOND_PASS), 2);
}

#[test]
fn dst_spring_forward_nonexistent_time_is_shifted_and_counted() {
    let g = "bg_ts,value\n31/03/2024 00:55,6\n31/03/2024 01:30,6.1\n31/03/2024 02:05,6.2\n";
    let dir = dataset("dst-spring", &[(GLUCOSE, g.as_bytes())]);
    let (record, report) = import_t1d_uom(&dir, "9001").unwrap();
    let times: Vec<String> = record.entries.iter().map(|e| e.time.to_string()).collect();
    // 00:55 GMT; 01:30 does not exist -> 02:30 BST = 01:30Z; 02:05 BST = 01:05Z.
    assert_eq!(
        times,
        [
            "2024-03-31T00:55:00Z",
            "2024-03-31T01:05:00Z",
            "2024-03-31T01:30:00Z"
        ]
    );
    assert_eq!(report.count(keys::DST_NONEXISTENT_SHIFTED), 1);
    assert!(has_warning(&report, GLUCOSE, "skipped hour"), "{report}");
}

#[test]
fn summer_and_winter_local_times_convert_to_utc_with_day_first_dates() {
    let g = "bg_ts,value\n01/07/2023 12:00,6\n02/12/2023 12:00:30,7\n";
    let dir = dataset("local", &[(GLUCOSE, g.as_bytes())]);
    let (record, report) = import_t1d_uom(&dir, "9001").unwrap();
    assert_eq!(
        record.entries[0].time,
        ts("2023-07-01T11:00:00Z"),
        "1 July, BST"
    );
    assert_eq!(
        record.entries[1].time,
        ts("2023-12-02T12:00:30Z"),
        "2 December (day first), GMT"
    );
    assert_eq!(report.count(keys::LOCAL_TIME_CONVERTED), 2);
    assert!(has_warning(&report, GLUCOSE, "day-first"));
    assert_eq!(record.entries[0].source, "t1d-uom:UoMGlucose9001.csv:2");
    assert_eq!(record.entries[0].unit, "mmol/L");
    assert_eq!(
        record.entries[0].value,
        medtwin_core::units::glucose_mmol_l_to_mg_dl(6.0)
    );
}

#[test]
fn file_quirks_are_each_handled_and_reported() {
    let glucose = b"\xEF\xBB\xBFbg_ts,value\r\n\
10/11/2023 00:00,6.9\r\n\
10/11/2023 00:05,7.1\r\n\
10/11/2023 00:05,7.1\r\n\
10/11/2023 00:10,\r\n\
10/11/2023 00:15,NaN\r\n\
10/11/2023 00:20,abc\r\n\
31/11/2023 00:25,7\r\n\
10/11/2023 00:30,0\r\n\
12/11/2023 00:00,7.5\r\n";
    let basal = b"\xEF\xBB\xBFbasal_ts,basal_dose,insulin_kind,,\r\n\
10/11/2023 00:00,0.8,R,,\r\n\
10/11/2023 06:00,1.1,R,,\r\n\
10/11/2023 06:00,1.1,R,,\r\n\
10/11/2023 07:00,1.0,X,,\r\n\
10/11/2023 08:00,-1,R,,\r\n\
10/11/2023 09:00,,R,,\r\n\
08/11/2023 20:00,20,L,,\r\n\
07/11/2023 20:00,20,L,,\r\n\
10/11/2023 20:00,20,L,,\r\n";
    let bolus = b"bolus_ts,bolus_dose\r\n\
10/11/2023 07:30,4\r\n\
10/11/2023 12:00,\r\n\
10/11/2204 12:00,3\r\n\
08/11/2023 23:30,2\r\n\
09/11/2023 00:30,2\r\n\
11/11/2023 12:00,20\r\n";
    let nutrition = "meal_ts,meal_type,meal_tag,carbs_g,prot_g,fat_g,fibre_g\n\
10/11/2023 07:30,Breakfast,\"Toast, jam\",40,5,3,2\n\
10/11/2023 10:00,Snack,Coffee,0,0,1,0\n\
10/11/2023 12:00,Lunch,Soup,,10,5,1\n\
02/12/2033 20:00,Snack,Red Wine (2),70,35,0,0\n\
10/11/2023 19:00,Dinner,Pasta,abc,1,1,1\n\
10/11/2023 20:00,Dinner,Pasta,60,1,1\n";
    let dir = dataset(
        "quirks",
        &[
            (GLUCOSE, glucose),
            (BASAL, basal),
            (BOLUS, bolus),
            (NUTRITION, nutrition.as_bytes()),
        ],
    );
    let (record, report) = import_t1d_uom(&dir, "9001").unwrap();
    println!("{report}");

    // BOM (glucose, basal), trailing empty columns (basal: header + 9 rows).
    assert_eq!(report.count(keys::BOM_STRIPPED), 2);
    assert_eq!(report.count(keys::TRAILING_EMPTY_COLUMNS), 10);
    assert!(has_warning(&report, BASAL, "trailing empty columns"));
    // Duplicates: one glucose, one basal.
    assert_eq!(report.count(keys::DUPLICATES_DROPPED), 2);
    assert!(has_warning(
        &report,
        GLUCOSE,
        "1 exact duplicate rows dropped (line 4)"
    ));
    assert!(has_warning(
        &report,
        BASAL,
        "1 exact duplicate rows dropped (line 4)"
    ));
    // Empty / NaN values rejected with their line; garbage too; impossible dates too.
    let rejected: Vec<String> = report.rejected.iter().map(|i| i.to_string()).collect();
    let has = |s: &str| rejected.iter().any(|r| r.contains(s));
    assert!(
        has(&format!("{GLUCOSE}:5: empty glucose value")),
        "{rejected:#?}"
    );
    assert!(has(&format!("{GLUCOSE}:6: glucose value is NaN")));
    assert!(has(&format!("{GLUCOSE}:7: unparsable number `abc`")));
    assert!(has(&format!(
        "{GLUCOSE}:8: impossible date/time `31/11/2023 00:25`"
    )));
    assert!(has(&format!("{GLUCOSE}:9: impossible glucose")));
    assert!(has(&format!("{BASAL}:5: unknown insulin_kind `X`")));
    assert!(has(&format!("{BASAL}:6: impossible negative basal_rate")));
    assert!(has(&format!("{BASAL}:7: empty basal_dose")));
    assert!(has(&format!("{BOLUS}:3: empty bolus_dose")));
    assert!(has(&format!(
        "{NUTRITION}:6: unparsable number `abc` in carbs_g"
    )));
    assert!(has(&format!("{NUTRITION}:7: expected 7 columns")));
    assert_eq!(report.count(keys::EMPTY_VALUE_REJECTED), 4);
    // Out of span: CGM spans 10/11 00:00 .. 12/11 00:00 (GMT = UTC).
    // Mistyped years (2204 bolus, 2033 meal), a bolus 1 day 30 min before, long-acting 3 days before.
    assert!(has(&format!("{BOLUS}:4: bolus at 2204-11-10T12:00:00")));
    assert!(has(&format!("{NUTRITION}:5: carbs at 2033-12-02T20:00:00")));
    assert!(has(&format!("{BOLUS}:5: bolus at 2023-11-08T23:30:00")));
    assert!(has(&format!(
        "{BASAL}:9: long_acting at 2023-11-07T20:00:00"
    )));
    assert_eq!(report.count(keys::OUT_OF_SPAN_REJECTED), 4);
    assert_eq!(report.count(keys::REJECTED), report.rejected.len());
    // Carbs 0 or empty: skipped and counted, not rejected.
    assert_eq!(report.count(keys::CARBS_ZERO_OR_EMPTY_SKIPPED), 2);
    assert!(has_warning(
        &report,
        NUTRITION,
        "2 meal rows with 0 or empty carbs_g skipped (lines 3, 4)"
    ));

    // What is kept.
    assert_eq!(record.count_of(RecordKind::Cgm), 3);
    let basal: Vec<f64> = record
        .of_kind(RecordKind::BasalRate)
        .map(|e| e.value)
        .collect();
    assert_eq!(basal, [0.8, 1.1]);
    assert_eq!(
        record.of_kind(RecordKind::BasalRate).next().unwrap().unit,
        "U/h"
    );
    // Long-acting 1.2 days before the first CGM is kept (lookback 2 days), and the one in span.
    let la: Vec<Timestamp> = record
        .of_kind(RecordKind::LongActing)
        .map(|e| e.time)
        .collect();
    assert_eq!(la, [ts("2023-11-08T20:00:00Z"), ts("2023-11-10T20:00:00Z")]);
    let bolus: Vec<f64> = record.of_kind(RecordKind::Bolus).map(|e| e.value).collect();
    assert_eq!(
        bolus,
        [2.0, 4.0, 20.0],
        "00:30 on 9 Nov is within 1 day of the span"
    );
    // 20 U bolus on 11 Nov (no long-acting that day) equals the 20 U long-acting dose: flagged.
    assert_eq!(report.count(keys::BOLUS_LIKE_LONG_ACTING), 1);
    let carbs: Vec<f64> = record.of_kind(RecordKind::Carbs).map(|e| e.value).collect();
    assert_eq!(carbs, [40.0]);
    assert_eq!(record.patient.id.as_deref(), Some("T1D-UOM-9001"));
    assert_eq!(report.count(keys::ACCEPTED), record.entries.len());
    assert!(record.entries.windows(2).all(|w| w[0].time <= w[1].time));
}

#[test]
fn missing_optional_files_are_warnings_missing_cgm_is_an_error() {
    let g = "bg_ts,value\n10/11/2023 00:00,6.9\n";
    let dir = dataset("missing", &[(GLUCOSE, g.as_bytes())]);
    let (record, report) = import_t1d_uom(&dir, "9001").unwrap();
    assert_eq!(record.entries.len(), 1);
    assert_eq!(report.count(keys::MISSING_FILES), 3);
    assert!(has_warning(&report, BOLUS, "file not found"));

    let err = import_t1d_uom(&dir, "9002").unwrap_err();
    assert!(matches!(err, IoError::MissingFile { .. }));
    assert!(err.to_string().contains("UoMGlucose9002.csv"), "{err}");

    let err = import_t1d_uom(&dir.join("nope"), "9001").unwrap_err();
    assert!(matches!(err, IoError::MissingFolder { .. }), "{err}");

    for bad in ["", "../9001", "9001/x", "a b"] {
        assert!(
            matches!(import_t1d_uom(&dir, bad), Err(IoError::InvalidArgument(_))),
            "{bad}"
        );
    }
}

#[test]
fn wrong_header_is_a_file_error() {
    let g = "timestamp,value\n10/11/2023 00:00,6.9\n";
    let dir = dataset("header", &[(GLUCOSE, g.as_bytes())]);
    let err = import_t1d_uom(&dir, "9001").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IoError::Header { .. }));
    assert!(
        msg.contains("UoMGlucose9001.csv") && msg.contains("bg_ts,value"),
        "{msg}"
    );
    let b = "bolus_ts,bolus_dose,extra\n";
    let g = "bg_ts,value\n10/11/2023 00:00,6.9\n";
    let dir = dataset("header2", &[(GLUCOSE, g.as_bytes()), (BOLUS, b.as_bytes())]);
    let msg = import_t1d_uom(&dir, "9001").unwrap_err().to_string();
    assert!(
        msg.contains("bolus_ts,bolus_dose") && msg.contains("UoMBolus9001.csv"),
        "{msg}"
    );
}

#[test]
fn citation_names_dataset_doi_and_licence() {
    assert!(T1D_UOM_CITATION.contains("T1D-UOM"));
    assert!(T1D_UOM_CITATION.contains("10.5281/zenodo.15169263"));
    assert!(T1D_UOM_CITATION.contains("CC BY 4.0"));
}

fn check_bundled_common(record: &Record, report: &ImportReport) {
    assert!(report.rejected.is_empty(), "{report}");
    assert!(record.count_of(RecordKind::Cgm) > 5000);
    assert!(record.count_of(RecordKind::Bolus) > 50);
    assert!(record.count_of(RecordKind::Carbs) > 30);
    let (first, last) = (record.first_time().unwrap(), record.last_time().unwrap());
    let days = last.duration_since(first).as_hours() as f64 / 24.0;
    assert!((20.5..21.1).contains(&days), "21 days, got {days}");
    // Every UK day of the window has boluses and carbs.
    let tz = jiff::tz::TimeZone::get("Europe/London").unwrap();
    for kind in [RecordKind::Bolus, RecordKind::Carbs, RecordKind::Cgm] {
        let days: std::collections::BTreeSet<_> = record
            .of_kind(kind)
            .map(|e| e.time.to_zoned(tz.clone()).date())
            .collect();
        assert_eq!(days.len(), 21, "{kind} on every day");
    }
    assert_eq!(report.count(keys::ACCEPTED), record.entries.len());
    assert!(report.warnings.iter().all(|w| !w.message.is_empty()));
}

#[test]
fn bundled_2301_pump_basal_rates() {
    let (record, report) = import_t1d_uom(&bundled(), "2301").unwrap();
    println!("{report}");
    check_bundled_common(&record, &report);
    assert_eq!(report.count(keys::ROWS_READ), 5997 + 3247 + 200 + 88);
    assert_eq!(record.count_of(RecordKind::Cgm), 5996);
    assert_eq!(record.count_of(RecordKind::BasalRate), 3247);
    assert_eq!(record.count_of(RecordKind::Bolus), 200);
    assert_eq!(record.count_of(RecordKind::Carbs), 71);
    assert_eq!(record.count_of(RecordKind::LongActing), 0);
    assert_eq!(
        report.count(keys::DUPLICATES_DROPPED),
        1,
        "one duplicated CGM row on 2023-11-23"
    );
    assert!(has_warning(
        &report,
        "Glucose Data/UoMGlucose2301.csv",
        "1 exact duplicate rows dropped"
    ));
    assert_eq!(report.count(keys::TRAILING_EMPTY_COLUMNS), 3248);
    assert_eq!(report.count(keys::BOM_STRIPPED), 3);
    assert_eq!(report.count(keys::CARBS_ZERO_OR_EMPTY_SKIPPED), 17);
    assert_eq!(record.first_time(), Some(ts("2023-11-10T00:00:00Z")));
    assert!(record.basal_rate_at(ts("2023-11-20T12:00:00Z")).is_some());
}

#[test]
fn bundled_2313_long_acting() {
    let (record, report) = import_t1d_uom(&bundled(), "2313").unwrap();
    println!("{report}");
    check_bundled_common(&record, &report);
    assert_eq!(record.count_of(RecordKind::Cgm), 6653);
    assert_eq!(record.count_of(RecordKind::LongActing), 17);
    assert_eq!(record.count_of(RecordKind::BasalRate), 0);
    assert_eq!(record.count_of(RecordKind::Bolus), 70);
    assert_eq!(record.count_of(RecordKind::Carbs), 42);
    assert_eq!(report.count(keys::DUPLICATES_DROPPED), 0);
    assert_eq!(report.count(keys::LONG_ACTING_DAYS_MISSING), 4);
    assert_eq!(
        report.count(keys::BOLUS_LIKE_LONG_ACTING),
        1,
        "68 U bolus on 2024-01-03"
    );
    assert!(record
        .of_kind(RecordKind::LongActing)
        .all(|e| e.value >= 60.0 && e.unit == "U"));
}

/// Import every participant of the full shared copy of the dataset, when it is present.
#[test]
fn full_shared_data() {
    let dir = shared();
    if !dir.join("Glucose Data").is_dir() {
        println!("skipped: shared data absent ({})", dir.display());
        return;
    }
    for p in [
        "2301", "2302", "2303", "2305", "2306", "2308", "2310", "2313", "2320", "2401",
    ] {
        let (record, report) = import_t1d_uom(&dir, p).unwrap();
        let counts: Vec<String> = report
            .counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "T1D-UOM {p}: {} entries; {}",
            record.entries.len(),
            counts.join(" ")
        );
        assert!(record.count_of(RecordKind::Cgm) > 5000, "{p}");
        assert!(record.entries.windows(2).all(|w| w[0].time <= w[1].time));
    }
    let (r2301, rep) = import_t1d_uom(&dir, "2301").unwrap();
    assert_eq!(rep.count(keys::DUPLICATES_DROPPED), 7048 + 2);
    assert_eq!(rep.count(keys::DST_AMBIGUOUS), 16);
    assert_eq!(r2301.count_of(RecordKind::Cgm), 45768 - 7048);
    assert_eq!(r2301.count_of(RecordKind::BasalRate), 10991);
    assert_eq!(r2301.count_of(RecordKind::Bolus), 677);
    assert_eq!(r2301.count_of(RecordKind::Carbs), 256);
    assert!(rep.rejected.is_empty(), "{rep}");
    let (r2313, rep) = import_t1d_uom(&dir, "2313").unwrap();
    assert_eq!(r2313.count_of(RecordKind::Cgm), 30832);
    assert_eq!(
        rep.count(keys::OUT_OF_SPAN_REJECTED),
        50,
        "logs started before the CGM: {rep}"
    );
    let (_, rep) = import_t1d_uom(&dir, "2320").unwrap();
    assert_eq!(rep.count(keys::OUT_OF_SPAN_REJECTED), 1, "the 2033 meal");
    let (_, rep) = import_t1d_uom(&dir, "2310").unwrap();
    assert_eq!(rep.count(keys::DST_NONEXISTENT_SHIFTED), 13);
}
