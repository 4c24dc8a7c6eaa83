//! The NONMEM-style event table, and importers for the R pharmacokinetic data sets.
//!
//! ## Format
//! A CSV file with a header row, one record per line (quoted fields may contain commas but not
//! line breaks). Column names are case-insensitive.
//!
//! | column | required | meaning | default when the column or the value is absent |
//! |---|---|---|---|
//! | `ID` | yes | subject identifier (any text) | — |
//! | `TIME` | yes | hours from the subject's origin, finite, ≥ 0, non-decreasing within a subject | — |
//! | `DV` | yes | observed concentration (finite; 0 allowed); `.` on dose records | — |
//! | `AMT` | no | dose amount (> 0 on dose records) | 0 |
//! | `RATE` | no | infusion rate, amount/h (0 = bolus) | 0 |
//! | `II` | no | interdose interval, h | 0 |
//! | `ADDL` | no | number of additional doses every `II` | 0 |
//! | `SS` | no | 1 = dose at steady state | 0 |
//! | `CMT` | no | compartment (NONMEM numbering, ≥ 1) | 1 |
//! | `EVID` | no | 0 observation, 1 dose, 2 other | 1 if `AMT` > 0, else 0 |
//! | `MDV` | no | 1 = no observation on this record | 1 for `EVID` ≠ 0, else 0 |
//!
//! Every other column holding at least one number is a **covariate** (e.g. `WT`); its names are
//! upper-cased. Columns holding only text are ignored. A subject's covariate value is its first
//! non-missing value in the column (**time-varying covariates are out of scope**: later values
//! are checked to be numbers but not otherwise used); a subject without any value has no entry.
//!
//! `.`, an empty field and `NA` mean missing. Lines starting with `#` are comments; the comment
//! `# units: amount=mg concentration=mg/L` sets the data set's [`Units`] (UCUM codes; default
//! amount `mg`, concentration `mg/L`; time is always `h` and `time=h` is the only value
//! accepted). The codes are stored as written, not validated against UCUM.
//!
//! ## Records
//! * `EVID=0`, `MDV=0`: an [`Observation`] (`DV` required). `EVID=0`, `MDV=1`: skipped, as
//!   NONMEM does (its columns are still validated).
//! * `EVID=1`: a [`Dose`] (`AMT` > 0 required; `MDV` must be 1 or absent).
//! * `EVID=2`: ignored (other-type event).
//! * Refused as unsupported, with the line: `EVID=3/4` (reset), `SS=2`, `RATE=-1/-2` (modelled
//!   rate/duration), `SS=1` or `ADDL>0` without `II>0` (this includes NONMEM's steady-state
//!   constant infusion `SS=1, II=0`).
//!
//! Subjects are kept in order of first appearance; a subject's records must be contiguous and
//! time-ordered. Every bad row is reported, with `file:line`, together (up to
//! [`MAX_ROW_ERRORS`]) in [`DataError::Rows`]; a table with any bad row is refused, because a
//! pharmacometric fit must not silently drop records.
//!
//! ## Importers
//! [`import_theoph`], [`import_phenobarb`] and [`import_indometh`] read the CSV exports of R's
//! `datasets::Theoph`, `nlme::Phenobarb` and `datasets::Indometh` (as distributed by the
//! Rdatasets collection; see `tests/data/pk/PROVENANCE.md` for sources, citations and licence).

use crate::Dose;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use thiserror::Error;

/// At most this many row errors are collected before parsing gives up on listing more.
pub const MAX_ROW_ERRORS: usize = 50;

/// One measured concentration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Sampling time, hours from the subject's origin.
    pub time_h: f64,
    /// Observed concentration in the data set's concentration unit (finite; may be 0).
    pub dv: f64,
    /// Observed compartment (NONMEM numbering; informational).
    pub cmt: u32,
    /// 1-based line of the record in the source file (0 when not read from a file). Not
    /// preserved by [`write_event_table`] → [`parse_event_table`].
    pub line: usize,
}

/// One subject's doses, observations and (time-constant) covariates.
///
/// The relative order of a dose and an observation at the same time is not kept (see
/// [`write_event_table`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// Identifier as written in the `ID` column.
    pub id: String,
    /// Dose records in time order.
    pub doses: Vec<Dose>,
    /// Observation records in time order.
    pub observations: Vec<Observation>,
    /// Covariate name (upper case) → the subject's first non-missing value. Time-varying
    /// covariates are out of scope.
    pub covariates: BTreeMap<String, f64>,
}

/// Units of a data set (UCUM codes). Time is always hours (`h`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Units {
    /// Unit of `AMT` (e.g. `mg`, `mg/kg`).
    pub amount: String,
    /// Unit of `DV` (e.g. `mg/L`).
    pub concentration: String,
}

impl Default for Units {
    /// Amount `mg`, concentration `mg/L`.
    fn default() -> Self {
        Units {
            amount: "mg".into(),
            concentration: "mg/L".into(),
        }
    }
}

/// A parsed event table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Subjects in order of first appearance.
    pub subjects: Vec<Subject>,
    /// Covariate names (upper case) in column order.
    pub covariate_names: Vec<String>,
    /// Amount and concentration units.
    pub units: Units,
}

impl Dataset {
    /// Total number of observations over all subjects.
    pub fn n_observations(&self) -> usize {
        self.subjects.iter().map(|s| s.observations.len()).sum()
    }

    /// Total number of dose records over all subjects (an `ADDL` record counts once).
    pub fn n_doses(&self) -> usize {
        self.subjects.iter().map(|s| s.doses.len()).sum()
    }

    /// The subject with identifier `id`, if any.
    pub fn subject(&self, id: &str) -> Option<&Subject> {
        self.subjects.iter().find(|s| s.id == id)
    }
}

/// What is wrong with a row (see [`RowError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowErrorKind {
    /// Wrong number of fields, or unreadable CSV.
    Format,
    /// A required value is missing.
    Missing,
    /// A value that must be a number is not one.
    NotANumber,
    /// A value is out of range or inconsistent with the rest of the record.
    Invalid,
    /// A valid NONMEM feature that this crate does not implement.
    Unsupported,
    /// A record is out of time order, or a subject's records are not contiguous.
    Order,
}

/// One bad row: `{file}:{line}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// Source file name.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// Category.
    pub kind: RowErrorKind,
    /// Human-readable reason.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Why an event table (or an R data set) could not be read.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{file}: {error}")]
    Io {
        /// File name.
        file: String,
        /// Underlying error.
        #[source]
        error: std::io::Error,
    },
    /// The header is missing, lacks a required column or repeats one; or a `# units:` comment
    /// is malformed.
    #[error("{file}:{line}: {reason}")]
    Header {
        /// File name.
        file: String,
        /// 1-based line number.
        line: usize,
        /// Reason.
        reason: String,
    },
    /// The table has a header but no records.
    #[error("{file}: no records")]
    Empty {
        /// File name.
        file: String,
    },
    /// One or more bad rows, listed one per line (`{file}:{line}: {reason}`), at most
    /// [`MAX_ROW_ERRORS`] of them; `total` counts all bad rows found.
    #[error("{}", format_rows(errors, *total))]
    Rows {
        /// The first [`MAX_ROW_ERRORS`] row errors, in line order.
        errors: Vec<RowError>,
        /// Number of bad rows found (≥ `errors.len()`).
        total: usize,
    },
    /// [`import_r_dataset`] was given an unknown kind.
    #[error("unknown R data set `{kind}` (allowed: theoph, phenobarb, indometh)")]
    UnknownKind {
        /// The kind given.
        kind: String,
    },
}

fn format_rows(errors: &[RowError], total: usize) -> String {
    let mut s = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&e.to_string());
    }
    if total > errors.len() {
        s.push_str(&format!("\n... and {} more bad rows", total - errors.len()));
    }
    s
}

/// Collects row errors (all are counted, the first [`MAX_ROW_ERRORS`] kept).
struct Errors {
    file: String,
    list: Vec<RowError>,
    total: usize,
}

impl Errors {
    fn new(file: &str) -> Self {
        Errors {
            file: file.to_string(),
            list: Vec::new(),
            total: 0,
        }
    }
    fn push(&mut self, line: usize, kind: RowErrorKind, message: impl Into<String>) {
        self.total += 1;
        if self.list.len() < MAX_ROW_ERRORS {
            self.list.push(RowError {
                file: self.file.clone(),
                line,
                kind,
                message: message.into(),
            });
        }
    }
    fn into_result<T>(mut self, ok: T) -> Result<T, DataError> {
        if self.total == 0 {
            Ok(ok)
        } else {
            self.list.sort_by_key(|e| e.line);
            Err(DataError::Rows {
                errors: self.list,
                total: self.total,
            })
        }
    }
}

fn is_missing(s: &str) -> bool {
    s.is_empty() || s == "." || s.eq_ignore_ascii_case("NA")
}

/// A number, refusing the non-finite spellings `f64::from_str` accepts (`NaN`, `inf`).
fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Known NONMEM columns.
const KNOWN: [&str; 11] = [
    "ID", "TIME", "DV", "AMT", "RATE", "II", "ADDL", "SS", "CMT", "EVID", "MDV",
];

struct Row {
    line: usize,
    fields: Vec<String>,
}

/// Parses the `# units:` comment body (after `units:`).
fn parse_units(body: &str, units: &mut Units) -> Result<(), String> {
    for tok in body.split_whitespace() {
        let Some((k, v)) = tok.split_once('=') else {
            return Err(format!("units comment: expected key=value, got `{tok}`"));
        };
        if v.is_empty() {
            return Err(format!("units comment: empty unit for `{k}`"));
        }
        match k.to_ascii_lowercase().as_str() {
            "amount" => units.amount = v.to_string(),
            "concentration" => units.concentration = v.to_string(),
            "time" => {
                if v != "h" {
                    return Err(format!(
                        "units comment: time must be `h` (hours), got `{v}`"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "units comment: unknown key `{k}` (allowed: amount, concentration, time)"
                ))
            }
        }
    }
    Ok(())
}

/// Parses an event table (see the [module docs](self) for the format). `source` names the
/// input in error messages (`{source}:{line}: {reason}`).
///
/// # Errors
/// [`DataError::Header`] for a missing header, a missing required column (`ID`, `TIME`, `DV`),
/// a repeated column or a malformed `# units:` comment; [`DataError::Empty`] when there are no
/// records; [`DataError::Rows`] listing every bad row.
pub fn parse_event_table(text: &str, source: &str) -> Result<Dataset, DataError> {
    let header_err = |line: usize, reason: String| DataError::Header {
        file: source.to_string(),
        line,
        reason,
    };
    let mut units = Units::default();
    let mut units_seen = false;
    let mut header: Option<(usize, Vec<String>)> = None;
    let mut rows: Vec<Row> = Vec::new();
    let mut errs = Errors::new(source);

    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let c = comment.trim_start();
            if c.len() >= 6 && c[..6].eq_ignore_ascii_case("units:") {
                if units_seen {
                    return Err(header_err(line, "second `# units:` comment".into()));
                }
                units_seen = true;
                parse_units(&c[6..], &mut units).map_err(|r| header_err(line, r))?;
            }
            continue;
        }
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .trim(csv::Trim::All)
            .from_reader(raw.as_bytes());
        let mut rec = csv::StringRecord::new();
        let fields = match rdr.read_record(&mut rec) {
            Ok(true) => rec.iter().map(str::to_string).collect::<Vec<_>>(),
            Ok(false) => continue,
            Err(e) => {
                if header.is_none() {
                    return Err(header_err(line, format!("unreadable header: {e}")));
                }
                errs.push(line, RowErrorKind::Format, format!("unreadable CSV: {e}"));
                continue;
            }
        };
        if header.is_none() {
            header = Some((line, fields));
        } else {
            rows.push(Row { line, fields });
        }
    }

    let Some((hline, names)) = header else {
        return Err(header_err(1, "no header row".into()));
    };
    let names: Vec<String> = names.iter().map(|n| n.to_ascii_uppercase()).collect();
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            return Err(header_err(hline, format!("column {} has no name", i + 1)));
        }
        if names[..i].contains(n) {
            return Err(header_err(hline, format!("column `{n}` appears twice")));
        }
    }
    let col = |n: &str| names.iter().position(|c| c == n);
    for req in ["ID", "TIME", "DV"] {
        if col(req).is_none() {
            return Err(header_err(
                hline,
                format!(
                    "required column `{req}` missing (columns: {})",
                    names.join(", ")
                ),
            ));
        }
    }
    if rows.is_empty() && errs.total == 0 {
        return Err(DataError::Empty {
            file: source.to_string(),
        });
    }
    let ncol = names.len();
    // Covariate columns: unknown columns holding at least one number.
    let cov_cols: Vec<usize> = (0..ncol)
        .filter(|&c| !KNOWN.contains(&names[c].as_str()))
        .filter(|&c| {
            rows.iter().any(|r| {
                r.fields
                    .get(c)
                    .is_some_and(|v| !is_missing(v) && v.parse::<f64>().is_ok())
            })
        })
        .collect();
    let covariate_names: Vec<String> = cov_cols.iter().map(|&c| names[c].clone()).collect();

    let (c_id, c_time, c_dv) = (col("ID").unwrap(), col("TIME").unwrap(), col("DV").unwrap());
    let (c_amt, c_rate, c_ii, c_addl, c_ss, c_cmt, c_evid, c_mdv) = (
        col("AMT"),
        col("RATE"),
        col("II"),
        col("ADDL"),
        col("SS"),
        col("CMT"),
        col("EVID"),
        col("MDV"),
    );

    let mut subjects: Vec<Subject> = Vec::new();
    // Per subject: last time seen; the index of the subject currently being read.
    let mut last_time: Vec<f64> = Vec::new();
    let mut current: Option<usize> = None;

    for row in &rows {
        let line = row.line;
        if row.fields.len() != ncol {
            errs.push(
                line,
                RowErrorKind::Format,
                format!("{} fields, header has {}", row.fields.len(), ncol),
            );
            continue;
        }
        let f = |c: usize| row.fields[c].as_str();
        let n_before = errs.total;
        // Optional number: Ok(None) when missing.
        let num = |c: Option<usize>, errs: &mut Errors| -> Option<f64> {
            let c = c?;
            let v = f(c);
            if is_missing(v) {
                return None;
            }
            match parse_number(v) {
                Some(x) => Some(x),
                None => {
                    errs.push(
                        line,
                        RowErrorKind::NotANumber,
                        format!("{} = `{v}` is not a finite number", names[c]),
                    );
                    None
                }
            }
        };
        let id = f(c_id).to_string();
        if is_missing(&id) {
            errs.push(line, RowErrorKind::Missing, "ID is missing");
        }
        let time = if is_missing(f(c_time)) {
            errs.push(line, RowErrorKind::Missing, "TIME is missing");
            None
        } else {
            num(Some(c_time), &mut errs)
        };
        let time = match time {
            Some(t) if t < 0.0 => {
                errs.push(
                    line,
                    RowErrorKind::Invalid,
                    format!("TIME = {t} is negative"),
                );
                None
            }
            t => t,
        };
        let amt = num(c_amt, &mut errs);
        let rate = num(c_rate, &mut errs).unwrap_or(0.0);
        let ii = num(c_ii, &mut errs).unwrap_or(0.0);
        let dv = num(Some(c_dv), &mut errs);
        // Integer columns.
        let int = |c: Option<usize>, errs: &mut Errors| -> Option<i64> {
            let c2 = c?;
            let x = num(c, errs)?;
            if x.fract() != 0.0 || x.abs() > 1e9 {
                errs.push(
                    line,
                    RowErrorKind::Invalid,
                    format!("{} = {x} is not an integer", names[c2]),
                );
                return None;
            }
            Some(x as i64)
        };
        let addl = int(c_addl, &mut errs).unwrap_or(0);
        let ss = int(c_ss, &mut errs).unwrap_or(0);
        let cmt = int(c_cmt, &mut errs).unwrap_or(1);
        let evid_given = int(c_evid, &mut errs);
        let mdv_given = int(c_mdv, &mut errs);
        let covs: Vec<Option<f64>> = cov_cols.iter().map(|&c| num(Some(c), &mut errs)).collect();

        let evid = evid_given.unwrap_or(if amt.unwrap_or(0.0) > 0.0 { 1 } else { 0 });
        let mdv = mdv_given.unwrap_or(if evid == 0 { 0 } else { 1 });
        if cmt < 1 {
            errs.push(
                line,
                RowErrorKind::Invalid,
                format!("CMT = {cmt} must be a positive integer"),
            );
        }
        if !(0..=1).contains(&mdv) {
            errs.push(
                line,
                RowErrorKind::Invalid,
                format!("MDV = {mdv} must be 0 or 1"),
            );
        }
        match evid {
            0 => {
                if amt.is_some_and(|a| a != 0.0) {
                    errs.push(
                        line,
                        RowErrorKind::Invalid,
                        "AMT on an observation record (EVID=0)",
                    );
                }
                if mdv == 0 && dv.is_none() && !is_missing(f(c_dv)) {
                    // already reported as not a number
                } else if mdv == 0 && dv.is_none() {
                    errs.push(
                        line,
                        RowErrorKind::Missing,
                        "DV is missing on an observation record (EVID=0, MDV=0)",
                    );
                }
            }
            1 => {
                match amt {
                    None if c_amt.is_none() || is_missing(f(c_amt.unwrap())) => errs.push(
                        line,
                        RowErrorKind::Missing,
                        "AMT is missing on a dose record (EVID=1)",
                    ),
                    None => {}
                    Some(a) if a < 0.0 => errs.push(
                        line,
                        RowErrorKind::Invalid,
                        format!("AMT = {a} is negative"),
                    ),
                    Some(0.0) => errs.push(
                        line,
                        RowErrorKind::Invalid,
                        "AMT = 0 on a dose record (EVID=1)",
                    ),
                    Some(_) => {}
                }
                if mdv != 1 {
                    errs.push(
                        line,
                        RowErrorKind::Invalid,
                        "MDV must be 1 on a dose record (EVID=1)",
                    );
                }
                if rate == -1.0 || rate == -2.0 {
                    errs.push(
                        line,
                        RowErrorKind::Unsupported,
                        format!("unsupported: RATE = {rate} (modelled infusion rate/duration)"),
                    );
                } else if rate < 0.0 {
                    errs.push(
                        line,
                        RowErrorKind::Invalid,
                        format!("RATE = {rate} is negative"),
                    );
                }
                if ii < 0.0 {
                    errs.push(
                        line,
                        RowErrorKind::Invalid,
                        format!("II = {ii} is negative"),
                    );
                }
                if addl < 0 {
                    errs.push(
                        line,
                        RowErrorKind::Invalid,
                        format!("ADDL = {addl} is negative"),
                    );
                } else if addl > 0 && ii <= 0.0 {
                    errs.push(
                        line,
                        RowErrorKind::Invalid,
                        format!("ADDL = {addl} needs II > 0"),
                    );
                }
                match ss {
                    0 => {}
                    1 if ii <= 0.0 => errs.push(
                        line,
                        RowErrorKind::Unsupported,
                        "unsupported: SS = 1 needs II > 0 (steady-state constant infusion is not implemented)",
                    ),
                    1 => {}
                    2 => errs.push(
                        line,
                        RowErrorKind::Unsupported,
                        "unsupported: SS = 2 (steady state added to the current state)",
                    ),
                    _ => errs.push(
                        line,
                        RowErrorKind::Invalid,
                        format!("SS = {ss} must be 0, 1 or 2"),
                    ),
                }
            }
            2 => {}
            3 | 4 => errs.push(
                line,
                RowErrorKind::Unsupported,
                format!("unsupported: EVID = {evid} (reset event)"),
            ),
            _ => errs.push(
                line,
                RowErrorKind::Invalid,
                format!("EVID = {evid} must be 0, 1, 2, 3 or 4"),
            ),
        }

        // Subject bookkeeping (order checks need ID and TIME only).
        if is_missing(&id) {
            continue;
        }
        let idx = match current {
            Some(k) if subjects[k].id == id => k,
            _ => match subjects.iter().position(|s| s.id == id) {
                Some(_) => {
                    errs.push(
                        line,
                        RowErrorKind::Order,
                        format!(
                            "subject `{id}` reappears after other subjects (a subject's records must be contiguous)"
                        ),
                    );
                    continue;
                }
                None => {
                    subjects.push(Subject {
                        id: id.clone(),
                        doses: Vec::new(),
                        observations: Vec::new(),
                        covariates: BTreeMap::new(),
                    });
                    last_time.push(f64::NEG_INFINITY);
                    current = Some(subjects.len() - 1);
                    subjects.len() - 1
                }
            },
        };
        if let Some(t) = time {
            if t < last_time[idx] {
                errs.push(
                    line,
                    RowErrorKind::Order,
                    format!(
                        "TIME = {t} is before the previous record of subject `{id}` (TIME = {}); records must be time-ordered",
                        last_time[idx]
                    ),
                );
            } else {
                last_time[idx] = t;
            }
        }
        if errs.total > n_before {
            continue;
        }
        let subj = &mut subjects[idx];
        for (k, v) in covs.iter().enumerate() {
            if let Some(v) = v {
                subj.covariates
                    .entry(covariate_names[k].clone())
                    .or_insert(*v);
            }
        }
        let t = time.expect("checked");
        match (evid, mdv) {
            (0, 0) => subj.observations.push(Observation {
                time_h: t,
                dv: dv.expect("checked"),
                cmt: cmt as u32,
                line,
            }),
            (1, _) => subj.doses.push(Dose {
                time_h: t,
                amount: amt.expect("checked"),
                rate,
                cmt: cmt as u32,
                ii_h: ii,
                addl: addl as u32,
                ss: ss == 1,
            }),
            _ => {}
        }
    }
    errs.into_result(Dataset {
        subjects,
        covariate_names,
        units,
    })
}

/// Reads and parses an event table file (see [`parse_event_table`]); errors name the file by
/// its path.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read (or is not UTF-8), otherwise as
/// [`parse_event_table`].
pub fn read_event_table(path: &Path) -> Result<Dataset, DataError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| DataError::Io {
        file: file.clone(),
        error,
    })?;
    parse_event_table(&text, &file)
}

fn fmt_num(x: f64) -> String {
    // Rust's `Display` for f64 is the shortest string that parses back to the same value.
    format!("{x}")
}

/// Writes `ds` as an event table: the `# units:` comment first, then the header
/// `ID,TIME,AMT,RATE,II,ADDL,SS,CMT,EVID,MDV,DV` followed by the covariates, then each subject's
/// records in time order (at equal times observations before doses, the pre-dose convention).
/// Covariates are repeated on every record; missing values are written as `.`.
///
/// [`parse_event_table`] of the output gives back `ds` except for [`Observation::line`].
///
/// # Errors
/// Errors of the writer.
pub fn write_event_table(ds: &Dataset, mut w: impl std::io::Write) -> std::io::Result<()> {
    writeln!(
        w,
        "# units: amount={} concentration={} time=h",
        ds.units.amount, ds.units.concentration
    )?;
    let mut cw = csv::Writer::from_writer(&mut w);
    let mut header: Vec<String> = [
        "ID", "TIME", "AMT", "RATE", "II", "ADDL", "SS", "CMT", "EVID", "MDV", "DV",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(ds.covariate_names.iter().cloned());
    cw.write_record(&header).map_err(std::io::Error::other)?;
    for s in &ds.subjects {
        let covs: Vec<String> = ds
            .covariate_names
            .iter()
            .map(|n| s.covariates.get(n).map_or(".".to_string(), |v| fmt_num(*v)))
            .collect();
        let (mut i, mut j) = (0, 0);
        while i < s.observations.len() || j < s.doses.len() {
            let take_obs = match (s.observations.get(i), s.doses.get(j)) {
                (Some(o), Some(d)) => o.time_h <= d.time_h,
                (Some(_), None) => true,
                _ => false,
            };
            let mut rec: Vec<String> = if take_obs {
                let o = &s.observations[i];
                i += 1;
                vec![
                    s.id.clone(),
                    fmt_num(o.time_h),
                    ".".into(),
                    ".".into(),
                    ".".into(),
                    ".".into(),
                    ".".into(),
                    o.cmt.to_string(),
                    "0".into(),
                    "0".into(),
                    fmt_num(o.dv),
                ]
            } else {
                let d = &s.doses[j];
                j += 1;
                vec![
                    s.id.clone(),
                    fmt_num(d.time_h),
                    fmt_num(d.amount),
                    fmt_num(d.rate),
                    fmt_num(d.ii_h),
                    d.addl.to_string(),
                    if d.ss { "1" } else { "0" }.into(),
                    d.cmt.to_string(),
                    "1".into(),
                    "1".into(),
                    ".".into(),
                ]
            };
            rec.extend(covs.iter().cloned());
            cw.write_record(&rec).map_err(std::io::Error::other)?;
        }
    }
    cw.flush()
}

// ---------------------------------------------------------------------------------------------
// Importers for the R data sets.

/// An R data-set CSV (Rdatasets export): header, one record per row, `NA`/empty = missing.
struct RTable {
    file: String,
    names: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

impl RTable {
    fn read(path: &Path, required: &[&str]) -> Result<RTable, DataError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| DataError::Io {
            file: file.clone(),
            error,
        })?;
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let names: Vec<String> = rdr
            .headers()
            .map_err(|e| DataError::Header {
                file: file.clone(),
                line: 1,
                reason: format!("unreadable header: {e}"),
            })?
            .iter()
            .map(str::to_string)
            .collect();
        for r in required {
            if !names.iter().any(|n| n == r) {
                return Err(DataError::Header {
                    file,
                    line: 1,
                    reason: format!("column `{r}` missing (columns: {})", names.join(", ")),
                });
            }
        }
        let mut errs = Errors::new(&file);
        let mut rows = Vec::new();
        for rec in rdr.records() {
            match rec {
                Ok(r) => {
                    let line = r.position().map_or(0, |p| p.line() as usize);
                    rows.push((line, r.iter().map(str::to_string).collect()));
                }
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line() as usize);
                    errs.push(line, RowErrorKind::Format, format!("unreadable CSV: {e}"));
                }
            }
        }
        let t = errs.into_result(RTable { file, names, rows })?;
        if t.rows.is_empty() {
            return Err(DataError::Empty { file: t.file });
        }
        Ok(t)
    }

    fn col(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).expect("checked")
    }
}

/// Reads a required / optional number from an R table row.
fn r_num(errs: &mut Errors, line: usize, name: &str, v: &str, required: bool) -> Option<f64> {
    if is_missing(v) {
        if required {
            errs.push(line, RowErrorKind::Missing, format!("{name} is missing"));
        }
        return None;
    }
    match parse_number(v) {
        Some(x) => Some(x),
        None => {
            errs.push(
                line,
                RowErrorKind::NotANumber,
                format!("{name} = `{v}` is not a finite number"),
            );
            None
        }
    }
}

/// Subjects in order of first appearance; each subject's rows must be contiguous and time-ordered.
struct Builder {
    subjects: Vec<Subject>,
    last_time: Vec<f64>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            subjects: Vec::new(),
            last_time: Vec::new(),
        }
    }
    /// Index of subject `id` for a record at `time` on `line` (None on an order error).
    fn subject(&mut self, errs: &mut Errors, line: usize, id: &str, time: f64) -> Option<usize> {
        let k = match self.subjects.iter().position(|s| s.id == id) {
            Some(k) if k + 1 == self.subjects.len() => k,
            Some(_) => {
                errs.push(
                    line,
                    RowErrorKind::Order,
                    format!("subject `{id}` reappears after other subjects"),
                );
                return None;
            }
            None => {
                self.subjects.push(Subject {
                    id: id.to_string(),
                    doses: Vec::new(),
                    observations: Vec::new(),
                    covariates: BTreeMap::new(),
                });
                self.last_time.push(f64::NEG_INFINITY);
                self.subjects.len() - 1
            }
        };
        if time < 0.0 {
            errs.push(
                line,
                RowErrorKind::Invalid,
                format!("time = {time} is negative"),
            );
            return None;
        }
        if time < self.last_time[k] {
            errs.push(
                line,
                RowErrorKind::Order,
                format!("time = {time} is before the previous record of subject `{id}`"),
            );
            return None;
        }
        self.last_time[k] = time;
        Some(k)
    }
}

/// Sets a time-constant covariate, refusing a subject whose value changes.
fn set_covariate(errs: &mut Errors, line: usize, s: &mut Subject, name: &str, v: f64) {
    match s.covariates.get(name) {
        None => {
            s.covariates.insert(name.to_string(), v);
        }
        Some(&old) if old != v => errs.push(
            line,
            RowErrorKind::Invalid,
            format!("{name} changes within subject `{}` ({old} → {v})", s.id),
        ),
        Some(_) => {}
    }
}

/// Imports R's `datasets::Theoph` (Rdatasets CSV: `rownames, Subject, Wt, Dose, Time, conc`).
///
/// Design (Boeckmann, Sheiner & Beal 1994, NONMEM Users Guide V): 12 adults, one oral dose of
/// theophylline at time 0, 11 samples each over 25 h. Per subject: one [`Dose`] of `Dose`
/// (mg/kg body weight) at time 0 into CMT 1 (the depot), and all 11 samples as observations
/// (CMT 2, the central compartment with first-order absorption), **including** the time-0
/// pre-dose sample, as R's `nlme` fit of this data set uses all 132 rows. Covariate `WT` (kg).
/// Units: amount `mg/kg`, concentration `mg/L`. Subjects in file order.
///
/// # Errors
/// [`DataError`] for an unreadable file, a missing column or bad rows (a dose that changes
/// within a subject, time order, non-numbers).
pub fn import_theoph(path: &Path) -> Result<Dataset, DataError> {
    let t = RTable::read(path, &["Subject", "Wt", "Dose", "Time", "conc"])?;
    let (cs, cw, cd, ct, cc) = (
        t.col("Subject"),
        t.col("Wt"),
        t.col("Dose"),
        t.col("Time"),
        t.col("conc"),
    );
    let mut errs = Errors::new(&t.file);
    let mut b = Builder::new();
    for (line, r) in &t.rows {
        let line = *line;
        let n0 = errs.total;
        let wt = r_num(&mut errs, line, "Wt", &r[cw], true);
        let dose = r_num(&mut errs, line, "Dose", &r[cd], true);
        let time = r_num(&mut errs, line, "Time", &r[ct], true);
        let conc = r_num(&mut errs, line, "conc", &r[cc], true);
        if dose.is_some_and(|d| d <= 0.0) {
            errs.push(line, RowErrorKind::Invalid, "Dose must be > 0");
        }
        if errs.total > n0 {
            continue;
        }
        let (wt, dose, time, conc) = (wt.unwrap(), dose.unwrap(), time.unwrap(), conc.unwrap());
        let Some(k) = b.subject(&mut errs, line, &r[cs], time) else {
            continue;
        };
        let s = &mut b.subjects[k];
        set_covariate(&mut errs, line, s, "WT", wt);
        match s.doses.first() {
            None => s.doses.push(Dose::bolus(0.0, dose, 1)),
            Some(d) if d.amount != dose => errs.push(
                line,
                RowErrorKind::Invalid,
                format!(
                    "Dose changes within subject `{}` ({} → {dose})",
                    s.id, d.amount
                ),
            ),
            Some(_) => {}
        }
        s.observations.push(Observation {
            time_h: time,
            dv: conc,
            cmt: 2,
            line,
        });
    }
    errs.into_result(Dataset {
        subjects: b.subjects,
        covariate_names: vec!["WT".into()],
        units: Units {
            amount: "mg/kg".into(),
            concentration: "mg/L".into(),
        },
    })
}

/// Imports R's `nlme::Phenobarb` (Rdatasets CSV:
/// `rownames, Subject, Wt, Apgar, ApgarInd, time, dose, conc`).
///
/// Design (Grasela & Donn 1985): 59 preterm neonates given intravenous phenobarbital (a loading
/// dose, then maintenance doses) with 1–6 routine serum levels each. Rows with `dose` become IV
/// boluses into CMT 1; rows with `conc` become observations (CMT 1); a row with both or neither
/// is an error. Covariates `WT` (birth weight, kg) and `APGAR` (5-minute Apgar score);
/// `ApgarInd` is derived from `Apgar` and not kept.
///
/// Units: amount `mg`, concentration `mg/L` (= µg/mL). R's help page labels `dose` µg/kg and
/// `conc` µg/L, but these labels do not fit the numbers: subject 1 (1.4 kg) gets 25 at time 0
/// then 3.5 about every 12 h, the standard neonatal regimen (≈ 18 mg/kg loading, 2.5 mg/kg
/// maintenance) in **mg**, and the levels (median 24.6, range 6.7–67.9) centre on the therapeutic
/// range of phenobarbital, 15–40 **mg/L**. The one-compartment `nlme` fit of these data
/// (`tests/data/pk/PROVENANCE.md`: V = e^0.3425 = 1.41, CL = e^−5.093 = 0.0061 for infants of
/// median weight 1.3 kg) gives ≈ 1 L/kg and ≈ 5 mL/h/kg, the usual neonatal values, only with
/// `dose` an absolute amount in mg and `conc` in mg/L.
///
/// # Errors
/// As [`import_theoph`].
pub fn import_phenobarb(path: &Path) -> Result<Dataset, DataError> {
    let t = RTable::read(path, &["Subject", "Wt", "Apgar", "time", "dose", "conc"])?;
    let (cs, cw, ca, ct, cd, cc) = (
        t.col("Subject"),
        t.col("Wt"),
        t.col("Apgar"),
        t.col("time"),
        t.col("dose"),
        t.col("conc"),
    );
    let mut errs = Errors::new(&t.file);
    let mut b = Builder::new();
    for (line, r) in &t.rows {
        let line = *line;
        let n0 = errs.total;
        let wt = r_num(&mut errs, line, "Wt", &r[cw], false);
        let apgar = r_num(&mut errs, line, "Apgar", &r[ca], false);
        let time = r_num(&mut errs, line, "time", &r[ct], true);
        let dose = r_num(&mut errs, line, "dose", &r[cd], false);
        let conc = r_num(&mut errs, line, "conc", &r[cc], false);
        if errs.total > n0 {
            continue;
        }
        let time = time.unwrap();
        match (dose, conc) {
            (Some(_), Some(_)) => {
                errs.push(line, RowErrorKind::Invalid, "both dose and conc on one row");
                continue;
            }
            (None, None) => {
                errs.push(line, RowErrorKind::Missing, "neither dose nor conc");
                continue;
            }
            (Some(d), None) if d <= 0.0 => {
                errs.push(
                    line,
                    RowErrorKind::Invalid,
                    format!("dose = {d} must be > 0"),
                );
                continue;
            }
            _ => {}
        }
        let Some(k) = b.subject(&mut errs, line, &r[cs], time) else {
            continue;
        };
        let s = &mut b.subjects[k];
        if let Some(w) = wt {
            set_covariate(&mut errs, line, s, "WT", w);
        }
        if let Some(a) = apgar {
            set_covariate(&mut errs, line, s, "APGAR", a);
        }
        if let Some(d) = dose {
            s.doses.push(Dose::bolus(time, d, 1));
        }
        if let Some(c) = conc {
            s.observations.push(Observation {
                time_h: time,
                dv: c,
                cmt: 1,
                line,
            });
        }
    }
    errs.into_result(Dataset {
        subjects: b.subjects,
        covariate_names: vec!["WT".into(), "APGAR".into()],
        units: Units {
            amount: "mg".into(),
            concentration: "mg/L".into(),
        },
    })
}

/// The Indometh dose, mg: not stated in R's help page (which says only that "each of the six
/// subjects were given an intravenous injection of indometacin"); 25 mg IV is the dose of the
/// source study, Kwan, Breault, Umbenhauer, McMahon & Duggan (1976), *J Pharmacokinet
/// Biopharm* 4:255–280.
pub const INDOMETH_DOSE_MG: f64 = 25.0;

/// Imports R's `datasets::Indometh` (Rdatasets CSV: `rownames, Subject, time, conc`).
///
/// Design: 6 subjects, one intravenous bolus at time 0 (the CSV has no dose column; the dose is
/// [`INDOMETH_DOSE_MG`] = 25 mg, from Kwan et al. 1976, since R's documentation does not state
/// it) into CMT 1, 11 samples each over 8 h (CMT 1). No covariates. Units: amount `mg`,
/// concentration `mg/L` (R: mcg/mL, the same). Subjects in file order.
///
/// # Errors
/// As [`import_theoph`].
pub fn import_indometh(path: &Path) -> Result<Dataset, DataError> {
    let t = RTable::read(path, &["Subject", "time", "conc"])?;
    let (cs, ct, cc) = (t.col("Subject"), t.col("time"), t.col("conc"));
    let mut errs = Errors::new(&t.file);
    let mut b = Builder::new();
    for (line, r) in &t.rows {
        let line = *line;
        let n0 = errs.total;
        let time = r_num(&mut errs, line, "time", &r[ct], true);
        let conc = r_num(&mut errs, line, "conc", &r[cc], true);
        if errs.total > n0 {
            continue;
        }
        let Some(k) = b.subject(&mut errs, line, &r[cs], time.unwrap()) else {
            continue;
        };
        let s = &mut b.subjects[k];
        if s.doses.is_empty() {
            s.doses.push(Dose::bolus(0.0, INDOMETH_DOSE_MG, 1));
        }
        s.observations.push(Observation {
            time_h: time.unwrap(),
            dv: conc.unwrap(),
            cmt: 1,
            line,
        });
    }
    errs.into_result(Dataset {
        subjects: b.subjects,
        covariate_names: Vec::new(),
        units: Units {
            amount: "mg".into(),
            concentration: "mg/L".into(),
        },
    })
}

/// Imports one of the R data sets by name: `kind` is `theoph`, `phenobarb` or `indometh`
/// (case-insensitive); see [`import_theoph`], [`import_phenobarb`], [`import_indometh`].
///
/// # Errors
/// [`DataError::UnknownKind`] naming the allowed kinds; otherwise the importer's errors.
pub fn import_r_dataset(kind: &str, path: &Path) -> Result<Dataset, DataError> {
    match kind.to_ascii_lowercase().as_str() {
        "theoph" => import_theoph(path),
        "phenobarb" => import_phenobarb(path),
        "indometh" => import_indometh(path),
        _ => Err(DataError::UnknownKind {
            kind: kind.to_string(),
        }),
    }
}
