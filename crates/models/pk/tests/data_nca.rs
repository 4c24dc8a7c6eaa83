//! Event tables (parsing, validation, round trip, R importers) and non-compartmental analysis
//! (analytic profiles and an independent Python reference).

use medtwin_pk::data::{
    import_indometh, import_phenobarb, import_r_dataset, import_theoph, parse_event_table,
    read_event_table, write_event_table, DataError, Dataset, RowErrorKind, MAX_ROW_ERRORS,
};
use medtwin_pk::nca::{nca, nca_dataset, NcaError, Route};
use medtwin_pk::Dose;
use std::path::PathBuf;

fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../tests/data/pk/")
        .join(name)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

// ---------------------------------------------------------------------------------------------
// Parsing.

const TABLE: &str = "\
# a hand-written NONMEM table
# units: amount=ug concentration=ug/L
id,time,Amt,RATE,II,ADDL,SS,CMT,EVID,MDV,DV,wt,SEX,note
101,0,100,0,12,3,0,1,1,1,.,70.5,1,first
101,0.5,.,.,.,.,.,2,0,0,1.25,.,.,x
101,1,.,.,.,.,.,2,0,1,9.9,.,.,skipped (MDV=1)
101,2,.,.,.,.,.,2,2,.,.,71,.,other event
101,2,.,.,.,.,.,2,0,0,0,.,.,zero concentration

# subject 102: an infusion at steady state, defaults for EVID/MDV/CMT
102,0,500,250,24,0,1,,,,.,82,0,
102,23.5,,,,,,,,,3.5,82,0,
102,25,,,,,,,,,12,82,0,
";

#[test]
fn parses_a_hand_written_table() {
    let ds = parse_event_table(TABLE, "hand.csv").unwrap();
    assert_eq!(ds.units.amount, "ug");
    assert_eq!(ds.units.concentration, "ug/L");
    // `note` holds only text: not a covariate; names upper-cased in column order.
    assert_eq!(
        ds.covariate_names,
        vec!["WT".to_string(), "SEX".to_string()]
    );
    assert_eq!(ds.subjects.len(), 2);
    assert_eq!(ds.n_observations(), 4);
    assert_eq!(ds.n_doses(), 2);

    let s = ds.subject("101").unwrap();
    assert_eq!(
        s.doses,
        vec![Dose {
            time_h: 0.0,
            amount: 100.0,
            rate: 0.0,
            cmt: 1,
            ii_h: 12.0,
            addl: 3,
            ss: false
        }]
    );
    // MDV=1 observation and EVID=2 record skipped; a concentration of 0 is kept.
    let obs: Vec<(f64, f64, u32, usize)> = s
        .observations
        .iter()
        .map(|o| (o.time_h, o.dv, o.cmt, o.line))
        .collect();
    assert_eq!(obs, vec![(0.5, 1.25, 2, 5), (2.0, 0.0, 2, 8)]);
    // First non-missing value (70.5, not the later 71).
    assert_eq!(s.covariates.get("WT"), Some(&70.5));
    assert_eq!(s.covariates.get("SEX"), Some(&1.0));

    let s = ds.subject("102").unwrap();
    assert_eq!(
        s.doses,
        vec![Dose {
            time_h: 0.0,
            amount: 500.0,
            rate: 250.0,
            cmt: 1,
            ii_h: 24.0,
            addl: 0,
            ss: true
        }]
    );
    assert_eq!(s.observations.len(), 2);
    assert_eq!(s.observations[1].dv, 12.0);
    assert_eq!(s.observations[1].cmt, 1);
    assert_eq!(s.observations[1].line, 13);
    assert_eq!(s.covariates.get("WT"), Some(&82.0));
    assert!(ds.subject("103").is_none());
}

#[test]
fn default_units_and_minimal_columns() {
    let ds = parse_event_table("ID,TIME,AMT,DV\n1,0,5,.\n1,1,.,0.4\n", "min.csv").unwrap();
    assert_eq!(ds.units.amount, "mg");
    assert_eq!(ds.units.concentration, "mg/L");
    assert_eq!(ds.subjects[0].doses, vec![Dose::bolus(0.0, 5.0, 1)]);
    assert_eq!(ds.subjects[0].observations[0].dv, 0.4);
    assert!(ds.covariate_names.is_empty());
}

/// Every row error kind, each with its exact `file:line`, all reported together.
#[test]
fn reports_every_bad_row_with_file_and_line() {
    let text = "\
ID,TIME,AMT,RATE,II,ADDL,SS,EVID,MDV,DV,WT
1,0,100,0,0,0,0,1,1,.,70
1,-1,.,.,.,.,.,0,0,1,70
1,NaN,.,.,.,.,.,0,0,1,70
1,1,-5,0,0,0,0,1,1,.,70
1,1,0,0,0,0,0,1,1,.,70
1,1,10,-3,0,0,0,1,1,.,70
1,1,10,-1,0,0,0,1,1,.,70
1,1,10,0,-2,0,0,1,1,.,70
1,1,10,0,0,2,0,1,1,.,70
1,1,10,0,0,0,1,1,1,.,70
1,1,10,0,12,0,2,1,1,.,70
1,1,.,.,.,.,.,3,1,.,70
1,1,.,.,.,.,.,4,1,.,70
1,1,.,.,.,.,.,0,0,.,70
1,1,.,.,.,.,.,0,0,abc,70
1,1,.,.,.,.,.,0,0,inf,70
1,0.5,.,.,.,.,.,0,0,1,70
2,0,.,.,.,.,.,0,0,1,70
1,2,.,.,.,.,.,0,0,1,70
2,3,.,.,.,.,.,0,0,1
2,3,.,.,.,.,.,0,0,1,heavy
";
    let err = parse_event_table(text, "bad.csv").unwrap_err();
    let msg = err.to_string();
    let expected: &[(usize, RowErrorKind, &str)] = &[
        (3, RowErrorKind::Invalid, "bad.csv:3: TIME = -1 is negative"),
        (
            4,
            RowErrorKind::NotANumber,
            "bad.csv:4: TIME = `NaN` is not a finite number",
        ),
        (5, RowErrorKind::Invalid, "bad.csv:5: AMT = -5 is negative"),
        (
            6,
            RowErrorKind::Invalid,
            "bad.csv:6: AMT = 0 on a dose record",
        ),
        (7, RowErrorKind::Invalid, "bad.csv:7: RATE = -3 is negative"),
        (
            8,
            RowErrorKind::Unsupported,
            "bad.csv:8: unsupported: RATE = -1",
        ),
        (9, RowErrorKind::Invalid, "bad.csv:9: II = -2 is negative"),
        (
            10,
            RowErrorKind::Invalid,
            "bad.csv:10: ADDL = 2 needs II > 0",
        ),
        (
            11,
            RowErrorKind::Unsupported,
            "bad.csv:11: unsupported: SS = 1 needs II > 0",
        ),
        (
            12,
            RowErrorKind::Unsupported,
            "bad.csv:12: unsupported: SS = 2",
        ),
        (
            13,
            RowErrorKind::Unsupported,
            "bad.csv:13: unsupported: EVID = 3 (reset event)",
        ),
        (
            14,
            RowErrorKind::Unsupported,
            "bad.csv:14: unsupported: EVID = 4 (reset event)",
        ),
        (
            15,
            RowErrorKind::Missing,
            "bad.csv:15: DV is missing on an observation record",
        ),
        (
            16,
            RowErrorKind::NotANumber,
            "bad.csv:16: DV = `abc` is not a finite number",
        ),
        (
            17,
            RowErrorKind::NotANumber,
            "bad.csv:17: DV = `inf` is not a finite number",
        ),
        (
            18,
            RowErrorKind::Order,
            "bad.csv:18: TIME = 0.5 is before the previous record",
        ),
        (
            20,
            RowErrorKind::Order,
            "bad.csv:20: subject `1` reappears after other subjects",
        ),
        (
            21,
            RowErrorKind::Format,
            "bad.csv:21: 10 fields, header has 11",
        ),
        (
            22,
            RowErrorKind::NotANumber,
            "bad.csv:22: WT = `heavy` is not a finite number",
        ),
    ];
    for (_, _, m) in expected {
        assert!(msg.contains(m), "missing `{m}` in:\n{msg}");
    }
    // One error per line, one per row, in line order.
    assert_eq!(msg.lines().count(), expected.len(), "{msg}");
    match err {
        DataError::Rows { errors, total } => {
            assert_eq!(total, expected.len());
            let got: Vec<(usize, RowErrorKind)> = errors.iter().map(|e| (e.line, e.kind)).collect();
            let want: Vec<(usize, RowErrorKind)> =
                expected.iter().map(|(l, k, _)| (*l, *k)).collect();
            assert_eq!(got, want);
            assert!(errors.iter().all(|e| e.file == "bad.csv"));
        }
        other => panic!("expected Rows, got {other:?}"),
    }
}

#[test]
fn more_row_errors_than_the_cap_are_counted() {
    let mut text = String::from("ID,TIME,DV\n");
    for i in 0..60 {
        text.push_str(&format!("1,{i},x\n"));
    }
    match parse_event_table(&text, "many.csv").unwrap_err() {
        DataError::Rows { errors, total } => {
            assert_eq!(errors.len(), MAX_ROW_ERRORS);
            assert_eq!(total, 60);
            assert_eq!(
                errors[0].to_string(),
                "many.csv:2: DV = `x` is not a finite number"
            );
        }
        other => panic!("{other:?}"),
    }
    let msg = parse_event_table(&text, "many.csv")
        .unwrap_err()
        .to_string();
    assert!(msg.ends_with("... and 10 more bad rows"), "{msg}");
}

#[test]
fn header_units_and_empty_errors() {
    let e = parse_event_table("# x\nID,TIME,AMT\n1,0,1\n", "h.csv").unwrap_err();
    assert!(matches!(e, DataError::Header { line: 2, .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("h.csv:2: required column `DV` missing"),
        "{e}"
    );

    let e = parse_event_table("ID,TIME,DV,time\n", "d.csv").unwrap_err();
    assert_eq!(e.to_string(), "d.csv:1: column `TIME` appears twice");

    let e = parse_event_table("ID,TIME,DV\n", "e.csv").unwrap_err();
    assert_eq!(e.to_string(), "e.csv: no records");

    let e = parse_event_table("\n# only comments\n", "n.csv").unwrap_err();
    assert_eq!(e.to_string(), "n.csv:1: no header row");

    let e =
        parse_event_table("#units: amount=mg time=min\nID,TIME,DV\n1,0,1\n", "u.csv").unwrap_err();
    assert_eq!(
        e.to_string(),
        "u.csv:1: units comment: time must be `h` (hours), got `min`"
    );
    let e = parse_event_table("\n# units: volume=L\nID,TIME,DV\n1,0,1\n", "u.csv").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("u.csv:2: units comment: unknown key `volume`"),
        "{e}"
    );

    let e = read_event_table(&data_path("does-not-exist.csv")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }));
    assert!(e.to_string().contains("does-not-exist.csv"));

    let e = import_r_dataset("pheno", &data_path("Phenobarb.csv")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown R data set `pheno` (allowed: theoph, phenobarb, indometh)"
    );
}

fn without_lines(mut ds: Dataset) -> Dataset {
    for s in &mut ds.subjects {
        for o in &mut s.observations {
            o.line = 0;
        }
    }
    ds
}

fn round_trip(ds: &Dataset) {
    let mut buf = Vec::new();
    write_event_table(ds, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.starts_with("# units: amount="), "{text}");
    let back = parse_event_table(&text, "rt.csv").unwrap();
    assert_eq!(without_lines(back.clone()), without_lines(ds.clone()));
    // Writing again gives the same bytes.
    let mut buf2 = Vec::new();
    write_event_table(&back, &mut buf2).unwrap();
    assert_eq!(text.as_bytes(), &buf2[..]);
}

#[test]
fn write_then_parse_round_trips() {
    let mut ds = parse_event_table(TABLE, "hand.csv").unwrap();
    // Awkward values: commas in an ID, non-short decimals.
    ds.subjects[1].id = "10,2 \"b\"".into();
    ds.subjects[1].observations[0].dv = 0.1 + 0.2;
    ds.subjects[1].doses[0].time_h = 1.0 / 3.0;
    ds.subjects[1].observations[0].time_h = 1.0 / 3.0;
    round_trip(&ds);
    round_trip(&import_theoph(&data_path("Theoph.csv")).unwrap());
    round_trip(&import_phenobarb(&data_path("Phenobarb.csv")).unwrap());
    round_trip(&import_indometh(&data_path("Indometh.csv")).unwrap());
}

// ---------------------------------------------------------------------------------------------
// R importers. Counts checked independently with Python's csv module on the same files.

#[test]
fn imports_theoph() {
    let ds = import_r_dataset("Theoph", &data_path("Theoph.csv")).unwrap();
    assert_eq!(ds.subjects.len(), 12);
    assert_eq!(ds.n_observations(), 132);
    assert_eq!(ds.n_doses(), 12);
    assert_eq!(ds.units.amount, "mg/kg");
    assert_eq!(ds.units.concentration, "mg/L");
    assert_eq!(ds.covariate_names, vec!["WT".to_string()]);
    let ids: Vec<&str> = ds.subjects.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
    );
    let s1 = &ds.subjects[0];
    assert_eq!(s1.doses, vec![Dose::bolus(0.0, 4.02, 1)]);
    assert_eq!(s1.covariates.get("WT"), Some(&79.6));
    assert_eq!(s1.observations.len(), 11);
    // The pre-dose sample is kept (line 2 of the CSV).
    assert_eq!(
        (
            s1.observations[0].time_h,
            s1.observations[0].dv,
            s1.observations[0].line
        ),
        (0.0, 0.74, 2)
    );
    assert_eq!(s1.observations[10].time_h, 24.37);
    assert!(ds.subjects.iter().all(|s| s.observations.len() == 11));
    assert_eq!(ds.subject("12").unwrap().doses[0].amount, 5.3);
}

#[test]
fn imports_phenobarb() {
    let ds = import_r_dataset("phenobarb", &data_path("Phenobarb.csv")).unwrap();
    assert_eq!(ds.subjects.len(), 59);
    assert_eq!(ds.n_observations(), 155);
    assert_eq!(ds.n_doses(), 589);
    assert_eq!(
        ds.covariate_names,
        vec!["WT".to_string(), "APGAR".to_string()]
    );
    assert_eq!(
        (ds.units.amount.as_str(), ds.units.concentration.as_str()),
        ("mg", "mg/L")
    );
    let s1 = ds.subject("1").unwrap();
    assert_eq!(s1.doses[0], Dose::bolus(0.0, 25.0, 1));
    assert_eq!(s1.doses[1], Dose::bolus(12.5, 3.5, 1));
    assert_eq!(
        (s1.observations[0].time_h, s1.observations[0].dv),
        (2.0, 17.3)
    );
    assert_eq!(s1.covariates.get("WT"), Some(&1.4));
    assert_eq!(s1.covariates.get("APGAR"), Some(&7.0));
    assert!(ds
        .subjects
        .iter()
        .all(|s| !s.doses.is_empty() && !s.observations.is_empty()));
    assert!(ds.subjects.iter().all(|s| s.observations.len() <= 6));
}

#[test]
fn imports_indometh() {
    let ds = import_r_dataset("indometh", &data_path("Indometh.csv")).unwrap();
    assert_eq!(ds.subjects.len(), 6);
    assert_eq!(ds.n_observations(), 66);
    assert!(ds
        .subjects
        .iter()
        .all(|s| s.doses == vec![Dose::bolus(0.0, 25.0, 1)] && s.observations.len() == 11));
    assert!(ds.covariate_names.is_empty());
    assert_eq!(ds.subjects[0].observations[0].dv, 1.5);
}

#[test]
fn importer_reports_bad_rows() {
    let dir = std::env::temp_dir().join(format!("medtwin-pk-data-nca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("theoph-bad.csv");
    std::fs::write(
        &p,
        "rownames,Subject,Wt,Dose,Time,conc\n1,1,80,4,0,0.7\n2,1,80,5,1,2\n3,1,80,4,0.5,x\n",
    )
    .unwrap();
    let msg = import_theoph(&p).unwrap_err().to_string();
    let f = p.display().to_string();
    assert_eq!(
        msg,
        format!(
            "{f}:3: Dose changes within subject `1` (4 → 5)\n{f}:4: conc = `x` is not a finite number"
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// NCA against analytic answers.

#[test]
fn exponential_decline_is_exact() {
    let (c0, k) = (12.0_f64, 0.23_f64);
    let dense: Vec<f64> = (1..=96).map(|i| i as f64 * 0.25).collect();
    let sparse = vec![0.5, 2.0, 6.0, 12.0, 24.0];
    for times in [dense, sparse] {
        let conc: Vec<f64> = times.iter().map(|t| c0 * (-k * t).exp()).collect();
        let r = nca(&times, &conc, 100.0, Route::IvBolus).unwrap();
        let tlast = *times.last().unwrap();
        assert!(rel(r.c0.unwrap(), c0) < 1e-12);
        let auc_last = c0 / k * (1.0 - (-k * tlast).exp());
        assert!(
            rel(r.auc_last, auc_last) < 1e-12,
            "{} vs {auc_last}",
            r.auc_last
        );
        // AUMC: ∫ t C0 e^(−kt) dt from 0 to T.
        let aumc_last = c0 / (k * k) * (1.0 - (1.0 + k * tlast) * (-k * tlast).exp());
        assert!(rel(r.aumc_last, aumc_last) < 1e-11);
        assert!(rel(r.lambda_z_per_h.unwrap(), k) < 1e-12);
        // All points fit exactly: the largest window wins the adjusted-R² tie.
        assert_eq!(r.n_lambda_z, times.len());
        assert!(rel(r.auc_inf.unwrap(), c0 / k) < 1e-12);
        assert!(rel(r.aumc_inf.unwrap(), c0 / (k * k)) < 1e-11);
        assert!(rel(r.cl_f_l_per_h.unwrap(), 100.0 * k / c0) < 1e-12);
        assert!(rel(r.vz_f_l.unwrap(), 100.0 / c0) < 1e-12);
        assert!(rel(r.t_half_h.unwrap(), std::f64::consts::LN_2 / k) < 1e-12);
        assert_eq!((r.cmax, r.tmax_h), (conc[0], times[0]));
    }
    // With a sample at time 0 it is used as C0.
    let times = [0.0, 1.0, 3.0, 8.0];
    let conc: Vec<f64> = times.iter().map(|t| c0 * (-k * t).exp()).collect();
    let r = nca(&times, &conc, 1.0, Route::IvBolus).unwrap();
    assert_eq!(r.c0, Some(c0));
    assert!(rel(r.auc_last, c0 / k * (1.0 - (-k * 8.0f64).exp())) < 1e-12);
}

#[test]
fn bateman_curve_auc_inf_within_one_percent() {
    // One-compartment oral: C = F D ka / (V (ka − k)) (e^(−kt) − e^(−ka t)).
    let (f, dose, ka, cl, v) = (0.8, 320.0, 1.5, 3.0, 35.0);
    let k = cl / v;
    let times: Vec<f64> = (1..=144).map(|i| i as f64 * 0.5).collect(); // 0.5 … 72 h
    let conc: Vec<f64> = times
        .iter()
        .map(|&t| f * dose * ka / (v * (ka - k)) * ((-k * t).exp() - (-ka * t).exp()))
        .collect();
    let r = nca(&times, &conc, dose, Route::Extravascular).unwrap();
    let auc_inf = f * dose / cl;
    assert!(
        rel(r.auc_inf.unwrap(), auc_inf) < 0.01,
        "{:?} vs {auc_inf}",
        r.auc_inf
    );
    assert!(rel(r.lambda_z_per_h.unwrap(), k) < 1e-3);
    assert!(rel(r.cl_f_l_per_h.unwrap(), cl / f) < 0.01);
    assert!(rel(r.vz_f_l.unwrap(), v / f) < 0.01);
    let tmax = (ka / k).ln() / (ka - k);
    assert!((r.tmax_h - tmax).abs() <= 0.5);
}

#[test]
fn linear_up_is_exact_for_a_linear_rise() {
    // C = 2 + 3t rising then flat: linear trapezoids are exact.
    let times = [0.0, 0.5, 1.5, 2.0, 4.0, 5.0];
    let conc = [2.0, 3.5, 6.5, 8.0, 14.0, 14.0];
    let r = nca(&times, &conc, 10.0, Route::Extravascular).unwrap();
    let exact = 2.0 * 4.0 + 1.5 * 16.0 + 14.0; // ∫0^4 (2 + 3t) dt + 14 · 1
    assert!(rel(r.auc_last, exact) < 1e-14, "{}", r.auc_last);
    assert_eq!((r.cmax, r.tmax_h), (14.0, 4.0));
    // No decline: no λz and nothing extrapolated.
    assert_eq!(r.lambda_z_per_h, None);
    assert_eq!(r.n_lambda_z, 0);
    assert_eq!(r.auc_inf, None);
    assert_eq!(r.cl_f_l_per_h, None);
    // No time-0 sample after an extravascular dose: C(0) = 0 is inserted.
    let r = nca(&[1.0, 2.0], &[3.0, 6.0], 1.0, Route::Extravascular).unwrap();
    assert!(rel(r.auc_last, 1.5 + 4.5) < 1e-15);
}

#[test]
fn trailing_zeros_and_infusion() {
    // AUClast stops at the last positive concentration; λz excludes Cmax for an infusion.
    let times = [0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0];
    let conc = [0.0, 8.0, 6.0, 4.5, 2.53125, 1.423828125, 0.0];
    let r = nca(&times, &conc, 50.0, Route::Infusion { duration_h: 1.0 }).unwrap();
    assert_eq!((r.clast, r.tlast_h), (1.423828125, 12.0));
    assert_eq!(r.n_lambda_z, 4); // 2, 4, 8, 12 h: exactly exponential with k = ln(4/3)/2
    assert!(rel(r.lambda_z_per_h.unwrap(), (4.0f64 / 3.0).ln() / 2.0) < 1e-12);
    assert_eq!(r.lambda_z_first_h, Some(2.0));
}

#[test]
fn nca_input_errors() {
    let e = |t: &[f64], c: &[f64]| nca(t, c, 1.0, Route::Extravascular).unwrap_err();
    assert_eq!(
        e(&[0.0, 1.0], &[1.0]),
        NcaError::LengthMismatch { times: 2, conc: 1 }
    );
    assert_eq!(e(&[0.0], &[1.0]), NcaError::TooFewPoints { n: 1 });
    assert!(matches!(
        e(&[0.0, 2.0, 1.0], &[1.0; 3]),
        NcaError::Unsorted { index: 2, .. }
    ));
    assert!(matches!(
        e(&[0.0, 1.0, 1.0], &[1.0; 3]),
        NcaError::Unsorted { index: 2, .. }
    ));
    assert!(matches!(
        e(&[-1.0, 1.0], &[1.0; 2]),
        NcaError::InvalidTime { index: 0, .. }
    ));
    assert!(matches!(
        e(&[0.0, f64::NAN], &[1.0; 2]),
        NcaError::InvalidTime { index: 1, .. }
    ));
    assert!(matches!(
        e(&[0.0, 1.0], &[1.0, -0.1]),
        NcaError::InvalidConcentration { index: 1, .. }
    ));
    assert!(matches!(
        e(&[0.0, 1.0], &[f64::NAN, 1.0]),
        NcaError::InvalidConcentration { index: 0, .. }
    ));
    assert_eq!(
        e(&[0.0, 1.0], &[0.0, 0.0]),
        NcaError::NoPositiveConcentration
    );
    assert_eq!(
        nca(&[0.0, 1.0], &[1.0, 1.0], 0.0, Route::IvBolus).unwrap_err(),
        NcaError::InvalidDose(0.0)
    );
    assert!(matches!(
        nca(
            &[0.0, 1.0],
            &[1.0, 1.0],
            1.0,
            Route::Infusion { duration_h: 0.0 }
        )
        .unwrap_err(),
        NcaError::InvalidDuration(_)
    ));
    // A rising terminal phase: λz ≤ 0 is refused (None), not reported.
    let r = nca(
        &[0.0, 1.0, 2.0, 3.0, 4.0],
        &[0.0, 5.0, 4.0, 4.5, 4.8],
        1.0,
        Route::Extravascular,
    )
    .unwrap();
    assert_eq!(r.lambda_z_per_h, None);
}

/// Theoph subject 1 (dose 4.02 mg/kg, 11 samples with the pre-dose 0.74 mg/L at t = 0).
/// Expected values from `python3 tests/data/pk/nca_reference.py` (numpy 2.4.6), an
/// independent implementation of the definitions (AUMC of log segments by 40-point
/// Gauss–Legendre quadrature, λz by `np.polyfit`), not derived from the Rust code.
#[test]
fn theoph_subject_1_matches_python_reference() {
    let ds = import_theoph(&data_path("Theoph.csv")).unwrap();
    let all = nca_dataset(&ds, Route::Extravascular);
    assert_eq!(all.len(), 12);
    assert!(all.iter().all(|(_, r)| r.is_ok()), "{all:?}");
    let (id, r) = &all[0];
    assert_eq!(id, "1");
    let r = r.as_ref().unwrap();
    assert_eq!((r.cmax, r.tmax_h), (10.5, 1.12));
    assert_eq!((r.clast, r.tlast_h), (3.28, 24.37));
    assert_eq!(r.n_lambda_z, 3);
    assert_eq!(r.lambda_z_first_h, Some(9.05));
    let close = |got: f64, want: f64| {
        assert!(rel(got, want) < 1e-9, "{got} vs {want}");
    };
    close(r.auc_last, 147.234748537);
    close(r.aumc_last, 1499.12908516);
    close(r.lambda_z_per_h.unwrap(), 0.0484569969658);
    close(r.r2_adj.unwrap(), 0.99999945935);
    close(r.t_half_h.unwrap(), 14.3043775711);
    close(r.auc_inf.unwrap(), 214.923631575);
    close(r.aumc_inf.unwrap(), 4545.59280107);
    close(r.auc_pct_extrapolated.unwrap(), 31.4943882821);
    close(r.cl_f_l_per_h.unwrap(), 0.0187043182294);
    close(r.vz_f_l.unwrap(), 0.385998295408);
}

#[test]
fn nca_dataset_refuses_multiple_dose_subjects() {
    let ds = import_phenobarb(&data_path("Phenobarb.csv")).unwrap();
    let all = nca_dataset(&ds, Route::IvBolus);
    assert_eq!(all.len(), 59);
    let (id, r) = &all[0];
    assert_eq!(id, "1");
    let e = r.as_ref().unwrap_err();
    assert!(matches!(e, NcaError::Subject { .. }));
    assert!(e.to_string().starts_with("subject `1`: "), "{e}");

    let ds = import_indometh(&data_path("Indometh.csv")).unwrap();
    for (_, r) in nca_dataset(&ds, Route::IvBolus) {
        let r = r.unwrap();
        assert!(
            r.c0.unwrap() > r.cmax,
            "back-extrapolated C0 above the first sample"
        );
        assert!(r.auc_pct_extrapolated.unwrap() < 20.0);
    }
}
