//! Dexcom Clarity CSV export ("Export" in Clarity: one CSV per patient).
//!
//! Columns are found by their header names: `Timestamp (YYYY-MM-DDThh:mm:ss)`, `Event Type`,
//! `Event Subtype`, `Glucose Value (mg/dL)` or `Glucose Value (mmol/L)`, `Insulin Value (u)`,
//! `Carb Value (grams)`. The first rows (patient name, device, alert settings) have no
//! timestamp and are skipped. Mapping:
//!
//! * `EGV` → `cgm` in the export's unit; `Low`/`High` (outside the sensor's range, 40–400 mg/dL)
//!   are skipped and counted (`out_of_range`), since their true value is unknown;
//! * `Calibration` → `smbg`;
//! * `Insulin` → `bolus` (subtype `Fast-Acting` or none) or `long_acting` (`Long-Acting`), U;
//! * `Carbs` → `carbs`, g;
//! * other event types (`Exercise`, `Health`, `Alert`, …) are counted per type and skipped.
//!
//! Clarity writes **local times without a UTC offset**: the caller names the time zone the
//! device was set to (`tz`); a local time that does not exist or is ambiguous in that zone
//! (daylight-saving changes) is resolved as jiff's `compatible` rule does (later for a gap,
//! earlier for a fold) and counted (`dst_adjusted`). Rows that cannot be read are rejected
//! with `file:line: reason` while every valid row is kept.

use std::path::Path;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::{ImportReport, IoError, Record, RecordEntry, RecordKind};

/// The header names this importer needs (the timestamp and event type columns).
pub const REQUIRED: [&str; 2] = ["Timestamp (YYYY-MM-DDThh:mm:ss)", "Event Type"];

fn col(header: &csv::StringRecord, name: &str) -> Option<usize> {
    header.iter().position(|h| {
        h.trim()
            .trim_start_matches('\u{feff}')
            .eq_ignore_ascii_case(name)
    })
}

/// Import the Clarity export at `path`, its local times read in `tz`. Errors: unreadable
/// file ([`IoError::Read`]), no Clarity header ([`IoError::Header`]).
pub fn import_clarity_csv(path: &Path, tz: &TimeZone) -> Result<(Record, ImportReport), IoError> {
    let text = std::fs::read(path).map_err(|source| IoError::Read {
        file: path.display().to_string(),
        source,
    })?;
    clarity_from_bytes(&text, &path.display().to_string(), tz)
}

/// [`import_clarity_csv`] of the bytes of an export (`file` names it in issues).
pub fn clarity_from_bytes(
    data: &[u8],
    file: &str,
    tz: &TimeZone,
) -> Result<(Record, ImportReport), IoError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(data);
    let header = rdr.headers().cloned().map_err(|e| IoError::Parse {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    let bad_header = || {
        IoError::Header {
        file: file.to_string(),
        expected: format!(
            "a Dexcom Clarity export with columns `{}`, `{}`, `Glucose Value (mg/dL)` or `Glucose Value (mmol/L)`",
            REQUIRED[0], REQUIRED[1]
        ),
        found: header.iter().collect::<Vec<_>>().join(",").chars().take(200).collect(),
    }
    };
    let (Some(c_time), Some(c_type)) = (col(&header, REQUIRED[0]), col(&header, REQUIRED[1]))
    else {
        return Err(bad_header());
    };
    let (c_glucose, glucose_unit) = match (
        col(&header, "Glucose Value (mg/dL)"),
        col(&header, "Glucose Value (mmol/L)"),
    ) {
        (Some(c), _) => (c, "mg/dL"),
        (None, Some(c)) => (c, "mmol/L"),
        (None, None) => return Err(bad_header()),
    };
    let c_sub = col(&header, "Event Subtype");
    let c_ins = col(&header, "Insulin Value (u)");
    let c_carb = col(&header, "Carb Value (grams)");

    let mut report = ImportReport::default();
    let mut entries = Vec::new();
    let (mut out_of_range, mut dst, mut metadata) = (0usize, 0usize, 0usize);
    let mut other: std::collections::BTreeMap<String, usize> = Default::default();
    for (k, row) in rdr.records().enumerate() {
        let line = k + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                report.reject(file, Some(line), format!("unreadable CSV row: {e}"));
                continue;
            }
        };
        let get = |c: Option<usize>| c.and_then(|c| row.get(c)).map(str::trim).unwrap_or("");
        let ts = get(Some(c_time));
        let event = get(Some(c_type));
        if ts.is_empty() {
            metadata += 1; // patient name, device, alert settings
            continue;
        }
        let local: DateTime = match ts.parse() {
            Ok(t) => t,
            Err(_) => {
                report.reject(
                    file,
                    Some(line),
                    format!(
                        "timestamp `{}` is not YYYY-MM-DDThh:mm:ss",
                        ts.chars().take(40).collect::<String>()
                    ),
                );
                continue;
            }
        };
        let time = match tz.to_ambiguous_zoned(local) {
            z if z.is_ambiguous() => {
                dst += 1;
                match z.compatible() {
                    Ok(z) => z.timestamp(),
                    Err(e) => {
                        report.reject(file, Some(line), format!("local time {local}: {e}"));
                        continue;
                    }
                }
            }
            z => match z.unambiguous() {
                Ok(z) => z.timestamp(),
                Err(e) => {
                    report.reject(file, Some(line), format!("local time {local}: {e}"));
                    continue;
                }
            },
        };
        let source = format!("clarity:{file}:{line}");
        let mut push =
            |kind: RecordKind, text: &str, unit: &str, insulin: Option<String>, what: &str| {
                match text.parse::<f64>() {
                    Ok(v) => match RecordEntry::new(time, kind, v, unit, insulin, source.clone()) {
                        Ok(e) => entries.push(e),
                        Err(e) => report.reject(file, Some(line), e.reason),
                    },
                    Err(_) => report.reject(
                        file,
                        Some(line),
                        format!(
                            "{what} `{}` is not a number",
                            text.chars().take(40).collect::<String>()
                        ),
                    ),
                }
            };
        match event {
            "EGV" => {
                let g = get(Some(c_glucose));
                if g.eq_ignore_ascii_case("low") || g.eq_ignore_ascii_case("high") {
                    out_of_range += 1;
                } else {
                    push(RecordKind::Cgm, g, glucose_unit, None, "glucose value");
                }
            }
            "Calibration" => push(
                RecordKind::Smbg,
                get(Some(c_glucose)),
                glucose_unit,
                None,
                "calibration value",
            ),
            "Insulin" => {
                let sub = get(c_sub);
                let kind = if sub.eq_ignore_ascii_case("Long-Acting") {
                    RecordKind::LongActing
                } else {
                    RecordKind::Bolus
                };
                let name = (!sub.is_empty()).then(|| sub.to_string());
                push(kind, get(c_ins), "U", name, "insulin value");
            }
            "Carbs" => push(RecordKind::Carbs, get(c_carb), "g", None, "carb value"),
            other_type => *other.entry(other_type.to_string()).or_default() += 1,
        }
    }
    if out_of_range > 0 {
        report.add("out_of_range", out_of_range);
        report.warn(
            file,
            None,
            format!(
                "{out_of_range} EGV readings `Low`/`High` (outside the sensor's range) skipped"
            ),
        );
    }
    if dst > 0 {
        report.add("dst_adjusted", dst);
        report.warn(
            file,
            None,
            format!("{dst} local times fall in a daylight-saving change of {}: resolved as later (gap) or earlier (fold)", tz.iana_name().unwrap_or("the time zone")),
        );
    }
    if metadata > 0 {
        report.add("metadata_rows", metadata);
    }
    for (t, n) in other {
        report.add(&format!("skipped_event_type:{t}"), n);
    }
    let mut record = Record {
        patient: Default::default(),
        entries,
    };
    record.sort();
    report.count_accepted(&record);
    Ok((record, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: &str = "\u{feff}Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Event Subtype,Patient Info,Device Info,Source Device ID,Glucose Value (mg/dL),Insulin Value (u),Carb Value (grams),Duration (hh:mm:ss),Glucose Rate of Change (mg/dL/min),Transmitter Time (Long Integer),Transmitter ID
1,,FirstName,,Amy,,,,,,,,,
2,,LastName,,Doe,,,,,,,,,
3,,Device,,,G6 Mobile App,iOS,,,,,,,
4,,Alert,Fall,,,iOS,,,,,,,
5,2024-03-31T00:55:00,EGV,,,,iOS,142,,,,,350,8X
6,2024-03-31T01:00:00,EGV,,,,iOS,144,,,,,650,8X
7,2024-03-31T01:30:00,EGV,,,,iOS,Low,,,,,950,8X
8,2024-03-31T02:05:00,EGV,,,,iOS,High,,,,,950,8X
9,2024-03-31T07:10:00,Insulin,Fast-Acting,,,iOS,,4.5,,,,,
10,2024-03-31T07:11:00,Carbs,,,,iOS,,,45,,,,
11,2024-03-31T22:00:00,Insulin,Long-Acting,,,iOS,,18,,,,,
12,2024-03-31T08:00:00,Calibration,,,,iOS,130,,,,,,
13,2024-03-31T09:00:00,Exercise,Light,,,iOS,,,,00:30:00,,,
14,2024-03-31T09:05:00,EGV,,,,iOS,abc,,,,,,
15,31/03/2024 09:10,EGV,,,,iOS,120,,,,,,
";

    #[test]
    fn clarity_export_maps_and_reports() {
        let tz = TimeZone::get("Europe/London").unwrap();
        let (rec, rep) = clarity_from_bytes(EXPORT.as_bytes(), "clarity.csv", &tz).unwrap();
        let kinds: Vec<(RecordKind, f64)> = rec.entries.iter().map(|e| (e.kind, e.value)).collect();
        assert_eq!(
            kinds,
            vec![
                (RecordKind::Cgm, 142.0),
                (RecordKind::Cgm, 144.0),
                (RecordKind::Bolus, 4.5),
                (RecordKind::Carbs, 45.0),
                (RecordKind::Smbg, 130.0),
                (RecordKind::LongActing, 18.0),
            ]
        );
        // 00:55 GMT, and 01:00 local does not exist on 2024-03-31 in London (clocks go to
        // 02:00 BST): resolved to 02:00 BST = 01:00Z.
        assert_eq!(rec.entries[0].time.to_string(), "2024-03-31T00:55:00Z");
        assert_eq!(rec.entries[1].time.to_string(), "2024-03-31T01:00:00Z");
        assert_eq!(rec.entries[2].time.to_string(), "2024-03-31T06:10:00Z");
        assert_eq!(rep.count("out_of_range"), 2);
        // 01:00 and 01:30 fall in the gap (the Low reading at 01:30 is skipped anyway).
        assert_eq!(rep.count("dst_adjusted"), 2);
        assert_eq!(rep.count("metadata_rows"), 4);
        assert_eq!(rep.count("skipped_event_type:Exercise"), 1);
        assert_eq!(rep.rejected.len(), 2, "{:?}", rep.rejected);
        let msgs: Vec<String> = rep.rejected.iter().map(|i| i.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains(":15") && m.contains("not a number")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains(":16") && m.contains("YYYY-MM-DD")),
            "{msgs:?}"
        );
        assert!(rec
            .entries
            .iter()
            .all(|e| e.source.starts_with("clarity:clarity.csv:")));
    }

    #[test]
    fn mmol_exports_and_wrong_files() {
        let tz = TimeZone::UTC;
        let csv = "Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Event Subtype,Glucose Value (mmol/L)\n1,2024-01-01T10:00:00,EGV,,5.5\n";
        let (rec, _) = clarity_from_bytes(csv.as_bytes(), "m.csv", &tz).unwrap();
        assert_eq!(rec.entries[0].unit, "mmol/L");
        assert!((rec.entries[0].value - 99.0858).abs() < 1e-3);
        let e = clarity_from_bytes(b"time,kind,value,unit\n", "record.csv", &tz).unwrap_err();
        assert!(
            e.to_string().contains("record.csv") && e.to_string().contains("Clarity"),
            "{e}"
        );
        let e = import_clarity_csv(Path::new("/nonexistent/clarity.csv"), &tz).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/clarity.csv"), "{e}");
    }
}
