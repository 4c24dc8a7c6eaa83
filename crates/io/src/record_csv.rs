//! The medtwin record format: long CSV + optional `patient.toml` (format in the crate docs).

use std::collections::HashSet;
use std::path::Path;

use jiff::Timestamp;

use crate::report::count_keys as keys;
use crate::util::{clip, csv_reader, fields_utf8, file_name, header_fields, read_bytes, strip_bom};
use crate::{ImportReport, IoError, PatientInfo, Record, RecordEntry, RecordKind};

/// The header written by [`write_record_csv`]. [`read_record_csv`] also accepts it without the
/// last column (`time,kind,value,unit`).
pub const RECORD_HEADER: &str = "time,kind,value,unit,insulin";

const COLUMNS: [&str; 5] = ["time", "kind", "value", "unit", "insulin"];

/// Name of the optional patient file looked for beside a record CSV.
const PATIENT_FILE: &str = "patient.toml";

/// Read a medtwin record CSV (format and reading rules in the crate docs), and the
/// `patient.toml` beside it when present.
///
/// Returns the record (entries sorted by time, stable) and a report: each malformed row is in
/// `rejected` as `file:line: reason` and every valid row is kept; out-of-order rows and dropped
/// duplicates are counted and warned about. Counts: `rows_read`, `accepted`,
/// `accepted_<kind>`, `rejected`, `duplicates_dropped`, `out_of_order`, `bom_stripped`.
///
/// Errors: the file cannot be read ([`IoError::Read`]); it is empty or its first line is not
/// `time,kind,value,unit,insulin` or `time,kind,value,unit` ([`IoError::Header`]); the
/// `patient.toml` beside it is invalid (see [`read_patient_toml`]).
pub fn read_record_csv(path: &Path) -> Result<(Record, ImportReport), IoError> {
    let file = path.display().to_string();
    let name = file_name(path);
    let bytes = read_bytes(path)?;
    let (data, had_bom) = strip_bom(&bytes);
    let mut report = ImportReport::default();
    if had_bom {
        report.add(keys::BOM_STRIPPED, 1);
        report.warn(&file, Some(1), "UTF-8 byte-order mark stripped");
    }
    let expected = format!("{RECORD_HEADER} or {}", COLUMNS[..4].join(","));
    let lines = crate::util::LineIndex::new(data);
    let mut rdr = csv_reader(data);
    let mut rows = rdr.byte_records();
    let ncols = match rows.next() {
        None => {
            return Err(IoError::Header {
                file,
                expected,
                found: "(empty file)".into(),
            });
        }
        Some(Err(e)) => {
            return Err(IoError::Header {
                file,
                expected,
                found: format!("(unreadable: {e})"),
            });
        }
        Some(Ok(h)) => {
            let found = header_fields(&h);
            if found == COLUMNS[..] || found == COLUMNS[..4] {
                found.len()
            } else {
                return Err(IoError::Header {
                    file,
                    expected,
                    found: clip(&found.join(","), 200),
                });
            }
        }
    };

    let mut entries: Vec<RecordEntry> = Vec::new();
    let mut seen: HashSet<(Timestamp, RecordKind, u64, String, Option<String>)> = HashSet::new();
    let mut dup_lines: Vec<usize> = Vec::new();
    let mut ooo_lines: Vec<usize> = Vec::new();
    let mut prev_time: Option<Timestamp> = None;
    let mut rows_read = 0usize;
    for row in rows {
        rows_read += 1;
        let rec = match row {
            Ok(r) => r,
            Err(e) => {
                report.reject(
                    &file,
                    lines.error_line(&e),
                    format!("unreadable CSV row: {e}"),
                );
                continue;
            }
        };
        let line = lines.record_line(&rec);
        match parse_row(&rec, ncols, &name, line) {
            Err(reason) => report.reject(&file, line, reason),
            Ok(entry) => {
                let key = (
                    entry.time,
                    entry.kind,
                    entry.original_value.to_bits(),
                    entry.unit.clone(),
                    entry.insulin.clone(),
                );
                if !seen.insert(key) {
                    dup_lines.push(line.unwrap_or(0));
                    continue;
                }
                if prev_time.is_some_and(|p| entry.time < p) {
                    ooo_lines.push(line.unwrap_or(0));
                }
                prev_time = Some(entry.time);
                entries.push(entry);
            }
        }
    }
    report.add(keys::ROWS_READ, rows_read);
    report.add(keys::DUPLICATES_DROPPED, dup_lines.len());
    report.add(keys::OUT_OF_ORDER, ooo_lines.len());
    if !dup_lines.is_empty() {
        report.warn(
            &file,
            None,
            format!(
                "{} exact duplicate rows dropped ({})",
                dup_lines.len(),
                crate::util::list_lines(&dup_lines, 10)
            ),
        );
    }
    if !ooo_lines.is_empty() {
        report.warn(
            &file,
            None,
            format!(
                "{} rows earlier than the row before them ({}); entries sorted by time",
                ooo_lines.len(),
                crate::util::list_lines(&ooo_lines, 10)
            ),
        );
    }

    let patient_path = path.parent().map(|p| p.join(PATIENT_FILE));
    let patient = match patient_path {
        Some(p) if p.is_file() => read_patient_toml(&p)?,
        _ => PatientInfo::default(),
    };
    let record = Record::new(patient, entries);
    report.count_accepted(&record);
    Ok((record, report))
}

/// Parse one data row of a record CSV.
fn parse_row(
    rec: &csv::ByteRecord,
    ncols: usize,
    name: &str,
    line: Option<usize>,
) -> Result<RecordEntry, String> {
    if rec.len() != ncols {
        return Err(format!(
            "expected {ncols} columns ({}), found {}",
            COLUMNS[..ncols].join(","),
            rec.len()
        ));
    }
    let f = fields_utf8(rec)?;
    let (Some(time_s), Some(kind_s), Some(value_s), Some(unit)) =
        (f.first(), f.get(1), f.get(2), f.get(3))
    else {
        return Err(format!("expected {ncols} columns"));
    };
    let time: Timestamp = time_s.parse().map_err(|_| {
        format!(
            "unparsable time `{}`: expected RFC 3339 with a UTC offset, e.g. 2023-10-29T01:30:00+01:00",
            clip(time_s, 60)
        )
    })?;
    let kind = RecordKind::from_name(kind_s).ok_or_else(|| {
        let names: Vec<&str> = RecordKind::ALL.iter().map(|k| k.name()).collect();
        format!(
            "unknown kind `{}` (expected one of {})",
            clip(kind_s, 40),
            names.join(", ")
        )
    })?;
    let value: f64 = value_s
        .parse()
        .map_err(|_| format!("unparsable number `{}`", clip(value_s, 40)))?;
    let insulin = f.get(4).filter(|s| !s.is_empty()).cloned();
    let source = format!("{name}:{}", line.unwrap_or(0));
    RecordEntry::new(time, kind, value, unit, insulin, source).map_err(|e| e.reason)
}

/// Write a record as a medtwin record CSV (header `time,kind,value,unit,insulin`), one row per
/// entry in order, times in UTC (`Z`), each entry's **original** value and unit (shortest
/// round-trip float text), insulin name or empty. The patient is not written (see
/// [`write_patient_toml`]).
///
/// Errors: an entry fails [`RecordEntry::validate`] (it could not be read back;
/// [`IoError::InvalidEntry`], nothing written); the file cannot be written ([`IoError::Write`]).
pub fn write_record_csv(record: &Record, path: &Path) -> Result<(), IoError> {
    let file = path.display().to_string();
    for (index, e) in record.entries.iter().enumerate() {
        e.validate().map_err(|err| IoError::InvalidEntry {
            file: file.clone(),
            index,
            source_ref: e.source.clone(),
            reason: err.reason,
        })?;
    }
    let write_err = |e: csv::Error| IoError::Write {
        file: file.clone(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(COLUMNS).map_err(write_err)?;
    for e in &record.entries {
        let time = e.time.to_string();
        let value = format!("{}", e.original_value);
        let insulin = e.insulin.as_deref().unwrap_or("");
        w.write_record([
            time.as_str(),
            e.kind.name(),
            value.as_str(),
            e.unit.as_str(),
            insulin,
        ])
        .map_err(write_err)?;
    }
    let bytes = w.into_inner().map_err(|e| IoError::Write {
        file: file.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::fs::write(path, bytes).map_err(|source| IoError::Write { file, source })
}

/// Read a `patient.toml` into [`PatientInfo`]. All keys are optional: `id`, `weight_kg`,
/// `age_years`, `sex`, `insulin_type`.
///
/// Errors ([`IoError::Parse`] naming the file and key): invalid TOML; an unknown key (the
/// message names it and lists the allowed keys); a key with the wrong type; `weight_kg` not in
/// (0, 700] kg; `age_years` not in [0, 150]. [`IoError::Read`] when the file cannot be read.
pub fn read_patient_toml(path: &Path) -> Result<PatientInfo, IoError> {
    let file = path.display().to_string();
    let bytes = read_bytes(path)?;
    let (data, _) = strip_bom(&bytes);
    let text = std::str::from_utf8(data).map_err(|e| IoError::Parse {
        file: file.clone(),
        reason: format!("not valid UTF-8: {e}"),
    })?;
    let info: PatientInfo = toml::from_str(text).map_err(|e| IoError::Parse {
        file: file.clone(),
        reason: e.to_string().trim().to_string(),
    })?;
    let bad = |key: &str, v: f64, range: &str| IoError::Parse {
        file: file.clone(),
        reason: format!("key `{key}` = {v} is impossible (must be in {range})"),
    };
    if let Some(w) = info.weight_kg {
        if !(w.is_finite() && w > 0.0 && w <= 700.0) {
            return Err(bad("weight_kg", w, "(0, 700] kg"));
        }
    }
    if let Some(a) = info.age_years {
        if !(a.is_finite() && (0.0..=150.0).contains(&a)) {
            return Err(bad("age_years", a, "[0, 150] years"));
        }
    }
    Ok(info)
}

/// Write [`PatientInfo`] as a `patient.toml` (unset fields omitted), the counterpart of
/// [`read_patient_toml`]. Put it beside a record CSV for [`read_record_csv`] to find it.
///
/// Errors: serialisation failure ([`IoError::Parse`]); the file cannot be written
/// ([`IoError::Write`]).
pub fn write_patient_toml(info: &PatientInfo, path: &Path) -> Result<(), IoError> {
    let file = path.display().to_string();
    let text = toml::to_string(info).map_err(|e| IoError::Parse {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(|source| IoError::Write { file, source })
}
