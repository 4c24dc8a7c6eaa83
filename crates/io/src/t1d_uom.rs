//! Importer for the T1D-UOM dataset (University of Manchester, CC BY 4.0).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use crate::report::count_keys as keys;
use crate::util::{
    clip, csv_reader, fields_utf8, header_fields, list_lines, parse_number, strip_bom,
    NumberProblem,
};
use crate::{ImportReport, IoError, PatientInfo, Record, RecordEntry, RecordKind};

/// Citation of the T1D-UOM dataset, to be shown wherever data imported from it (or derived from
/// it) is shipped or published. The dataset is licensed under Creative Commons Attribution 4.0
/// International (CC BY 4.0): redistribution and adaptation are allowed with this attribution.
pub const T1D_UOM_CITATION: &str = "Alsuhaymi A., Bilal A., Gasca Garcia D., Kongdee R., Lubasinski N., Hood T., \
Paul N., Harper S. \"T1D-UOM – A Longitudinal Multimodal Dataset of Type 1 Diabetes\", v0.1.0 (2025), \
University of Manchester. DOI 10.5281/zenodo.15169263. \
https://github.com/sharpic/ManchesterCSCoordinatedDiabetesStudy. \
Licence: Creative Commons Attribution 4.0 International (CC BY 4.0).";

/// IANA time zone of the T1D-UOM timestamps (UK local time, written without zone).
pub const T1D_UOM_TIME_ZONE: &str = "Europe/London";

/// Event rows (insulin, meals) more than this many days outside the CGM span
/// `[first CGM, last CGM]` are rejected as out of span (this catches mistyped years such as
/// 2033). Applies after the span, and before it except for long-acting doses.
pub const T1D_UOM_SPAN_TOLERANCE_DAYS: i64 = 1;

/// Long-acting injections are kept up to this many days before the first CGM reading (their
/// action lasts up to ~42 h, so a dose given the day before still acts at the start).
pub const T1D_UOM_LONG_ACTING_LOOKBACK_DAYS: i64 = 2;

/// Boluses at least this large that equal a long-acting dose logged within
/// [`BOLUS_LIKE_LONG_ACTING_WINDOW_DAYS`] days are flagged (kept) as possible long-acting
/// injections logged as bolus.
const BOLUS_LIKE_LONG_ACTING_MIN_U: f64 = 20.0;
const BOLUS_LIKE_LONG_ACTING_WINDOW_DAYS: i64 = 3;

/// Distinct CGM instants closer than this (minutes) are counted as close readings.
const CGM_CLOSE_MIN: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Glucose,
    Basal,
    Bolus,
    Nutrition,
}

impl FileKind {
    fn folders(self) -> &'static [&'static str] {
        match self {
            FileKind::Glucose => &["Glucose Data"],
            FileKind::Basal => &["Insulin Data", "Basal Data"],
            FileKind::Bolus => &["Insulin Data", "Bolus Data"],
            FileKind::Nutrition => &["Nutrition Data"],
        }
    }
    fn stem(self) -> &'static str {
        match self {
            FileKind::Glucose => "UoMGlucose",
            FileKind::Basal => "UoMBasal",
            FileKind::Bolus => "UoMBolus",
            FileKind::Nutrition => "UoMNutrition",
        }
    }
    fn header(self) -> &'static [&'static str] {
        match self {
            FileKind::Glucose => &["bg_ts", "value"],
            FileKind::Basal => &["basal_ts", "basal_dose", "insulin_kind"],
            FileKind::Bolus => &["bolus_ts", "bolus_dose"],
            FileKind::Nutrition => &[
                "meal_ts",
                "meal_type",
                "meal_tag",
                "carbs_g",
                "prot_g",
                "fat_g",
                "fibre_g",
            ],
        }
    }
    fn what(self) -> &'static str {
        match self {
            FileKind::Glucose => "CGM",
            FileKind::Basal => "basal (pump rate or long-acting)",
            FileKind::Bolus => "bolus",
            FileKind::Nutrition => "carbohydrate",
        }
    }
}

/// One parsed data row: line, instant, UK local time and the (trimmed) fields.
struct Row {
    line: usize,
    time: Timestamp,
    local: DateTime,
    fields: Vec<String>,
}

/// The rows of one file, with its names.
struct FileRows {
    /// Dataset-relative path, used in issues (e.g. `Glucose Data/UoMGlucose2301.csv`).
    rel: String,
    /// File name, used in entry sources.
    name: String,
    rows: Vec<Row>,
}

/// Resolves UK local times to instants, file by file, keeping DST statistics.
///
/// Repeated hour (fall-back): the first pass is summer time (BST, the earlier instant); once a
/// timestamp in the repeated hour is earlier than the previous one in the same hour of the
/// same day (the clock went back), the rest of that hour is standard time (GMT, the later
/// instant). Skipped hour (spring-forward): shifted forward by the gap.
struct DstResolver {
    tz: TimeZone,
    /// Fold day, last local time seen in its repeated hour, whether the clock went back.
    fold: Option<(Date, DateTime, bool)>,
    first_pass: Vec<usize>,
    second_pass: Vec<usize>,
    gap: Vec<usize>,
    fold_days: BTreeSet<Date>,
    gap_days: BTreeSet<Date>,
}

impl DstResolver {
    fn new(tz: TimeZone) -> DstResolver {
        DstResolver {
            tz,
            fold: None,
            first_pass: Vec::new(),
            second_pass: Vec::new(),
            gap: Vec::new(),
            fold_days: BTreeSet::new(),
            gap_days: BTreeSet::new(),
        }
    }

    fn resolve(&mut self, dt: DateTime, line: usize) -> Result<Timestamp, String> {
        let amb = self.tz.to_ambiguous_timestamp(dt);
        let res = match amb.offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt),
            AmbiguousOffset::Gap { .. } => {
                self.gap.push(line);
                self.gap_days.insert(dt.date());
                amb.compatible()
            }
            AmbiguousOffset::Fold { before, after } => {
                let day = dt.date();
                self.fold_days.insert(day);
                let went_back = match self.fold {
                    Some((d, last, back)) if d == day => back || dt < last,
                    _ => false,
                };
                self.fold = Some((day, dt, went_back));
                if went_back {
                    self.second_pass.push(line);
                    after.to_timestamp(dt)
                } else {
                    self.first_pass.push(line);
                    before.to_timestamp(dt)
                }
            }
        };
        res.map_err(|e| format!("time {dt} cannot be placed in {T1D_UOM_TIME_ZONE}: {e}"))
    }

    fn report(&self, rel: &str, report: &mut ImportReport) {
        let n_fold = self.first_pass.len() + self.second_pass.len();
        report.add(keys::DST_AMBIGUOUS, n_fold);
        report.add(keys::DST_AMBIGUOUS_SECOND_PASS, self.second_pass.len());
        report.add(keys::DST_NONEXISTENT_SHIFTED, self.gap.len());
        if n_fold > 0 {
            let days: Vec<String> = self.fold_days.iter().map(|d| d.to_string()).collect();
            let mut all: Vec<usize> = self
                .first_pass
                .iter()
                .chain(&self.second_pass)
                .copied()
                .collect();
            all.sort_unstable();
            report.warn(
                rel,
                all.first().copied(),
                format!(
                    "{n_fold} timestamps fall in the repeated hour 01:00–02:00 of {} (UK clocks go back; \
                     ambiguous local time): resolved by file order, {} as summer time BST (UTC+1, first pass) \
                     and {} as GMT (UTC+0, after the clock went back) ({})",
                    days.join(", "),
                    self.first_pass.len(),
                    self.second_pass.len(),
                    list_lines(&all, 10)
                ),
            );
        }
        if !self.gap.is_empty() {
            let days: Vec<String> = self.gap_days.iter().map(|d| d.to_string()).collect();
            report.warn(
                rel,
                self.gap.first().copied(),
                format!(
                    "{} timestamps fall in the skipped hour 01:00–02:00 of {} (UK clocks go forward; \
                     the local time does not exist): shifted forward by the 1 h gap ({})",
                    self.gap.len(),
                    days.join(", "),
                    list_lines(&self.gap, 10)
                ),
            );
        }
    }
}

/// Parse a T1D-UOM timestamp: day first, `DD/MM/YYYY HH:MM` or `DD/MM/YYYY HH:MM:SS`
/// (one- or two-digit day, month, hour, minute, second accepted).
fn parse_uk_datetime(s: &str) -> Result<DateTime, String> {
    let bad = || {
        format!(
            "unparsable timestamp `{}`: expected day-first DD/MM/YYYY HH:MM[:SS]",
            clip(s, 40)
        )
    };
    let mut parts = s.split_whitespace();
    let (Some(date), Some(time), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let num = |p: &str, max_len: usize| -> Option<i64> {
        if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<i64>().ok()
    };
    let d: Vec<&str> = date.split('/').collect();
    let t: Vec<&str> = time.split(':').collect();
    let (day, month, year) = match d.as_slice() {
        [dd, mm, yyyy] if yyyy.len() == 4 => (num(dd, 2), num(mm, 2), num(yyyy, 4)),
        _ => return Err(bad()),
    };
    let (hour, minute, second) = match t.as_slice() {
        [hh, mi] => (num(hh, 2), num(mi, 2), Some(0)),
        [hh, mi, ss] => (num(hh, 2), num(mi, 2), num(ss, 2)),
        _ => return Err(bad()),
    };
    let (Some(day), Some(month), Some(year), Some(hour), Some(minute), Some(second)) =
        (day, month, year, hour, minute, second)
    else {
        return Err(bad());
    };
    // All values fit: at most 2 digits (4 for the year), checked above.
    let (Ok(year), Ok(month), Ok(day), Ok(hour), Ok(minute), Ok(second)) = (
        i16::try_from(year),
        i8::try_from(month),
        i8::try_from(day),
        i8::try_from(hour),
        i8::try_from(minute),
        i8::try_from(second),
    ) else {
        return Err(bad());
    };
    DateTime::new(year, month, day, hour, minute, second, 0).map_err(|e| {
        format!(
            "impossible date/time `{}` (read day first): {e}",
            clip(s, 40)
        )
    })
}

/// Read one T1D-UOM file into rows (timestamps resolved), reporting file-level quirks.
/// `Ok(None)` when the file does not exist.
fn read_file(
    dir: &Path,
    kind: FileKind,
    participant: &str,
    tz: &TimeZone,
    report: &mut ImportReport,
) -> Result<Option<FileRows>, IoError> {
    let name = format!("{}{participant}.csv", kind.stem());
    let mut path = dir.to_path_buf();
    for f in kind.folders() {
        path.push(f);
    }
    path.push(&name);
    let rel = format!("{}/{name}", kind.folders().join("/"));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IoError::Read {
                file: path.display().to_string(),
                source,
            })
        }
    };
    let (data, had_bom) = strip_bom(&bytes);
    if had_bom {
        report.add(keys::BOM_STRIPPED, 1);
        report.warn(
            &rel,
            Some(1),
            "UTF-8 byte-order mark at the start of the file stripped",
        );
    }
    let header = kind.header();
    let ncols = header.len();
    let expected = header.join(",");
    let lines = crate::util::LineIndex::new(data);
    let mut rdr = csv_reader(data);
    let mut records = rdr.byte_records();
    let mut trailing_lines: Vec<usize> = Vec::new();
    match records.next() {
        None => {
            return Err(IoError::Header {
                file: path.display().to_string(),
                expected,
                found: "(empty file)".into(),
            })
        }
        Some(Err(e)) => {
            return Err(IoError::Header {
                file: path.display().to_string(),
                expected,
                found: format!("(unreadable: {e})"),
            })
        }
        Some(Ok(h)) => {
            let mut found = header_fields(&h);
            while found.len() > ncols && found.last().is_some_and(|s| s.is_empty()) {
                found.pop();
                if trailing_lines.last() != Some(&1) {
                    trailing_lines.push(1);
                }
            }
            if found != header {
                return Err(IoError::Header {
                    file: path.display().to_string(),
                    expected,
                    found: clip(&found.join(","), 200),
                });
            }
        }
    }

    let mut resolver = DstResolver::new(tz.clone());
    let mut seen: HashSet<Vec<String>> = HashSet::new();
    let mut dup_lines: Vec<usize> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut rows_read = 0usize;
    for rec in records {
        rows_read += 1;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                report.reject(
                    &rel,
                    lines.error_line(&e),
                    format!("unreadable CSV row: {e}"),
                );
                continue;
            }
        };
        let line = lines.record_line(&rec).unwrap_or(0);
        let mut fields = match fields_utf8(&rec) {
            Ok(f) => f,
            Err(reason) => {
                report.reject(&rel, Some(line), reason);
                continue;
            }
        };
        let mut trimmed = false;
        while fields.len() > ncols && fields.last().is_some_and(|s| s.is_empty()) {
            fields.pop();
            trimmed = true;
        }
        if trimmed {
            trailing_lines.push(line);
        }
        if fields.len() != ncols {
            report.reject(
                &rel,
                Some(line),
                format!(
                    "expected {ncols} columns ({expected}), found {}",
                    fields.len()
                ),
            );
            continue;
        }
        if seen.contains(&fields) {
            dup_lines.push(line);
            continue;
        }
        seen.insert(fields.clone());
        let local = match fields.first().map(|s| parse_uk_datetime(s)) {
            Some(Ok(dt)) => dt,
            Some(Err(reason)) => {
                report.reject(&rel, Some(line), reason);
                continue;
            }
            None => {
                report.reject(&rel, Some(line), "empty row");
                continue;
            }
        };
        match resolver.resolve(local, line) {
            Ok(time) => rows.push(Row {
                line,
                time,
                local,
                fields,
            }),
            Err(reason) => report.reject(&rel, Some(line), reason),
        }
    }
    report.add(keys::ROWS_READ, rows_read);
    report.add(
        &format!(
            "rows_read_{}",
            kind.stem().trim_start_matches("UoM").to_lowercase()
        ),
        rows_read,
    );
    if !trailing_lines.is_empty() {
        report.add(keys::TRAILING_EMPTY_COLUMNS, trailing_lines.len());
        let header_too = if trailing_lines.first() == Some(&1) {
            " (header included)"
        } else {
            ""
        };
        report.warn(
            &rel,
            trailing_lines.first().copied(),
            format!(
                "{} lines{header_too} had trailing empty columns, dropped",
                trailing_lines.len()
            ),
        );
    }
    if !dup_lines.is_empty() {
        report.add(keys::DUPLICATES_DROPPED, dup_lines.len());
        report.warn(
            &rel,
            dup_lines.first().copied(),
            format!(
                "{} exact duplicate rows dropped ({})",
                dup_lines.len(),
                list_lines(&dup_lines, 10)
            ),
        );
    }
    if !rows.is_empty() {
        report.add(keys::LOCAL_TIME_CONVERTED, rows.len());
        report.warn(
            &rel,
            None,
            format!(
                "{} timestamps read as day-first DD/MM/YYYY HH:MM in UK local time ({T1D_UOM_TIME_ZONE}, \
                 no zone in the file) and converted to UTC",
                rows.len()
            ),
        );
    }
    resolver.report(&rel, report);
    Ok(Some(FileRows { rel, name, rows }))
}

/// Field `i` of a row (rows are checked to have the header's column count; empty otherwise).
fn field(fields: &[String], i: usize) -> &str {
    fields.get(i).map(String::as_str).unwrap_or("")
}

/// Parse a numeric cell, rejecting (with a reason) empty, NaN and garbage.
fn cell_value(
    report: &mut ImportReport,
    rel: &str,
    line: usize,
    column: &str,
    s: &str,
) -> Option<f64> {
    match parse_number(s) {
        Ok(v) => Some(v),
        Err(NumberProblem::Empty) => {
            report.add(keys::EMPTY_VALUE_REJECTED, 1);
            report.reject(rel, Some(line), format!("empty {column}"));
            None
        }
        Err(NumberProblem::NaN) => {
            report.add(keys::EMPTY_VALUE_REJECTED, 1);
            report.reject(rel, Some(line), format!("{column} is NaN"));
            None
        }
        Err(NumberProblem::Unparsable) => {
            report.reject(
                rel,
                Some(line),
                format!("unparsable number `{}` in {column}", clip(s, 40)),
            );
            None
        }
    }
}

/// The accepted CGM span and the out-of-span rule for events.
struct Span {
    first: Timestamp,
    last: Timestamp,
}

impl Span {
    /// `Err(reason)` when `t` is further out than allowed for `kind`.
    fn check(&self, kind: RecordKind, t: Timestamp, local: DateTime) -> Result<(), String> {
        let before_days = if kind == RecordKind::LongActing {
            T1D_UOM_LONG_ACTING_LOOKBACK_DAYS
        } else {
            T1D_UOM_SPAN_TOLERANCE_DAYS
        };
        let lo = self
            .first
            .checked_sub(SignedDuration::from_hours(24 * before_days))
            .unwrap_or(self.first);
        let hi = self
            .last
            .checked_add(SignedDuration::from_hours(24 * T1D_UOM_SPAN_TOLERANCE_DAYS))
            .unwrap_or(self.last);
        if t < lo || t > hi {
            let (n, side) = if t < lo {
                (before_days, "before")
            } else {
                (T1D_UOM_SPAN_TOLERANCE_DAYS, "after")
            };
            return Err(format!(
                "{kind} at {local} (UK local) is more than {n} day(s) {side} the CGM span {} – {} \
                 (mistyped year or no CGM then); rejected as out of span",
                self.first, self.last
            ));
        }
        Ok(())
    }
}

/// Import one participant of the T1D-UOM dataset (Alsuhaymi et al. 2025, CC BY 4.0; cite
/// [`T1D_UOM_CITATION`]).
///
/// `dir` is the dataset root holding `Glucose Data/`, `Insulin Data/Basal Data/`,
/// `Insulin Data/Bolus Data/` and `Nutrition Data/`; `participant` the id (e.g. `"2301"`).
/// Files read:
///
/// * `Glucose Data/UoMGlucoseNNNN.csv` (`bg_ts,value`, mmol/L) → `cgm` (required);
/// * `Insulin Data/Basal Data/UoMBasalNNNN.csv` (`basal_ts,basal_dose,insulin_kind`): `R` =
///   pump basal rate in U/h logged at changes → `basal_rate`; `L` = long-acting injection dose
///   in U → `long_acting` (insulin name unknown, `None`);
/// * `Insulin Data/Bolus Data/UoMBolusNNNN.csv` (`bolus_ts,bolus_dose`, U) → `bolus`;
/// * `Nutrition Data/UoMNutritionNNNN.csv` (`meal_ts,meal_type,meal_tag,carbs_g,...`) →
///   `carbs` (g).
///
/// Missing insulin or nutrition files are a warning (`missing_files`). Data quirks are
/// handled explicitly and each is reported as a warning with a count (keys in
/// [`crate::count_keys`]):
///
/// * timestamps are day-first `DD/MM/YYYY HH:MM[:SS]` in UK local time without zone
///   (`local_time_converted`), converted to UTC through [`T1D_UOM_TIME_ZONE`];
/// * the repeated hour 01:00–02:00 at the autumn DST change (e.g. 2023-10-29) is resolved by
///   order within each file: first pass BST (UTC+1), and once a time in that hour is earlier
///   than the one before it, GMT (UTC+0) (`dst_ambiguous`, `dst_ambiguous_second_pass`);
/// * a nonexistent spring-forward time (e.g. 2024-03-31 01:30) is shifted forward by the gap
///   (`dst_nonexistent_shifted`);
/// * UTF-8 byte-order marks (`bom_stripped`), trailing empty columns
///   (`trailing_empty_columns`), exact duplicate rows, dropped (`duplicates_dropped`);
/// * event rows more than [`T1D_UOM_SPAN_TOLERANCE_DAYS`] day outside the CGM span
///   (long-acting: up to [`T1D_UOM_LONG_ACTING_LOOKBACK_DAYS`] days before it is allowed) are
///   rejected (`out_of_span_rejected`): this catches mistyped years;
/// * empty or `NaN` values are rejected with their line (`empty_value_rejected`); meal rows
///   with 0 or empty carbohydrates are skipped (`carbs_zero_or_empty_skipped`);
/// * also flagged (kept): CGM instants with conflicting values (`cgm_same_time_conflicts`),
///   CGM readings less than 3 min after the previous one (`cgm_close_readings`),
///   boluses ≥ 20 U on a day without any logged long-acting dose that
///   equal a long-acting dose logged within 3 days (`bolus_like_long_acting`), days of the CGM span without any long-acting dose
///   (`long_acting_days_missing`).
///
/// Caveat seen in the real files: some CGM logs (participants 2303, 2310) run at regular 5-min
/// steps straight through both DST changes (a single pass of the repeated hour; readings inside
/// the skipped hour), so those devices may not have followed UK wall time at the change. The
/// rules above are then up to 1 h off for about an hour, and on 2024-03-31 the shifted readings
/// of 2310 land on instants that already hold a reading (reported in
/// `cgm_same_time_conflicts`).
///
/// Sources read `t1d-uom:UoMGlucose2301.csv:17`; issues name the dataset-relative file
/// (`Glucose Data/UoMGlucose2301.csv`). The patient is `id = "T1D-UOM-NNNN"` only (the dataset
/// has no usable demographics here).
///
/// Errors: `participant` not a plain alphanumeric id ([`IoError::InvalidArgument`]); `dir` not
/// a folder ([`IoError::MissingFolder`]); the glucose file absent ([`IoError::MissingFile`]);
/// a file unreadable ([`IoError::Read`]) or with a wrong header ([`IoError::Header`]).
pub fn import_t1d_uom(dir: &Path, participant: &str) -> Result<(Record, ImportReport), IoError> {
    if participant.is_empty()
        || participant.len() > 32
        || !participant.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(IoError::InvalidArgument(format!(
            "T1D-UOM participant id `{}` must be a plain alphanumeric id such as 2301",
            clip(participant, 40)
        )));
    }
    if !dir.is_dir() {
        return Err(IoError::MissingFolder {
            path: dir.display().to_string(),
            reason: "the T1D-UOM dataset root (holding `Glucose Data/`) is expected there".into(),
        });
    }
    let tz = TimeZone::get(T1D_UOM_TIME_ZONE).map_err(|e| {
        IoError::InvalidArgument(format!(
            "time zone {T1D_UOM_TIME_ZONE} unavailable in the bundled database: {e}"
        ))
    })?;
    let mut report = ImportReport::default();
    let mut entries: Vec<RecordEntry> = Vec::new();

    // CGM first: it defines the span.
    let Some(glucose) = read_file(dir, FileKind::Glucose, participant, &tz, &mut report)? else {
        let mut path = dir.to_path_buf();
        path.push("Glucose Data");
        path.push(format!("UoMGlucose{participant}.csv"));
        return Err(IoError::MissingFile {
            file: path.display().to_string(),
            reason: format!("the CGM file of participant {participant} is required (it defines the record span)"),
        });
    };
    for row in &glucose.rows {
        let Some(v) = cell_value(
            &mut report,
            &glucose.rel,
            row.line,
            "glucose value",
            field(&row.fields, 1),
        ) else {
            continue;
        };
        let source = format!("t1d-uom:{}:{}", glucose.name, row.line);
        match RecordEntry::new(row.time, RecordKind::Cgm, v, "mmol/L", None, source) {
            Ok(e) => entries.push(e),
            Err(e) => report.reject(&glucose.rel, Some(row.line), e.reason),
        }
    }
    report_cgm_conflicts(&entries, &glucose, &mut report);
    let span = match (
        entries.iter().map(|e| e.time).min(),
        entries.iter().map(|e| e.time).max(),
    ) {
        (Some(first), Some(last)) => Some(Span { first, last }),
        _ => {
            report.warn(
                &glucose.rel,
                None,
                "no valid CGM reading: the out-of-span check of events is skipped",
            );
            None
        }
    };

    let mut out_of_span = 0usize;
    let mut bolus_lines: Vec<(Timestamp, f64, usize)> = Vec::new();
    let mut bolus_rel = String::new();
    for kind in [FileKind::Basal, FileKind::Bolus, FileKind::Nutrition] {
        let Some(file) = read_file(dir, kind, participant, &tz, &mut report)? else {
            let mut rel = kind.folders().join("/");
            rel.push_str(&format!("/{}{participant}.csv", kind.stem()));
            report.add(keys::MISSING_FILES, 1);
            report.warn(
                &rel,
                None,
                format!(
                    "file not found: no {} entries for participant {participant}",
                    kind.what()
                ),
            );
            continue;
        };
        let mut skipped_carbs: Vec<usize> = Vec::new();
        for row in &file.rows {
            let f = &row.fields;
            let (rk, v, unit) = match kind {
                FileKind::Basal => {
                    let rk = match field(f, 2).to_ascii_uppercase().as_str() {
                        "R" => RecordKind::BasalRate,
                        "L" => RecordKind::LongActing,
                        other => {
                            report.reject(
                                &file.rel,
                                Some(row.line),
                                format!(
                                    "unknown insulin_kind `{}` (expected R or L)",
                                    clip(other, 20)
                                ),
                            );
                            continue;
                        }
                    };
                    let Some(v) =
                        cell_value(&mut report, &file.rel, row.line, "basal_dose", field(f, 1))
                    else {
                        continue;
                    };
                    (
                        rk,
                        v,
                        if rk == RecordKind::BasalRate {
                            "U/h"
                        } else {
                            "U"
                        },
                    )
                }
                FileKind::Bolus => {
                    let Some(v) =
                        cell_value(&mut report, &file.rel, row.line, "bolus_dose", field(f, 1))
                    else {
                        continue;
                    };
                    (RecordKind::Bolus, v, "U")
                }
                FileKind::Nutrition => {
                    let s = field(f, 3);
                    if s.is_empty() || parse_number(s).is_ok_and(|v| v == 0.0) {
                        skipped_carbs.push(row.line);
                        continue;
                    }
                    let Some(v) = cell_value(&mut report, &file.rel, row.line, "carbs_g", s) else {
                        continue;
                    };
                    (RecordKind::Carbs, v, "g")
                }
                FileKind::Glucose => continue,
            };
            if let Some(span) = &span {
                if let Err(reason) = span.check(rk, row.time, row.local) {
                    out_of_span += 1;
                    report.reject(&file.rel, Some(row.line), reason);
                    continue;
                }
            }
            let source = format!("t1d-uom:{}:{}", file.name, row.line);
            match RecordEntry::new(row.time, rk, v, unit, None, source) {
                Ok(e) => {
                    if rk == RecordKind::Bolus {
                        bolus_lines.push((e.time, e.value, row.line));
                        bolus_rel.clone_from(&file.rel);
                    }
                    entries.push(e);
                }
                Err(e) => report.reject(&file.rel, Some(row.line), e.reason),
            }
        }
        if !skipped_carbs.is_empty() {
            report.add(keys::CARBS_ZERO_OR_EMPTY_SKIPPED, skipped_carbs.len());
            report.warn(
                &file.rel,
                skipped_carbs.first().copied(),
                format!(
                    "{} meal rows with 0 or empty carbs_g skipped ({})",
                    skipped_carbs.len(),
                    list_lines(&skipped_carbs, 10)
                ),
            );
        }
    }
    report.add(keys::OUT_OF_SPAN_REJECTED, out_of_span);

    let record = Record::new(
        PatientInfo {
            id: Some(format!("T1D-UOM-{participant}")),
            ..PatientInfo::default()
        },
        entries,
    );
    report_bolus_like_long_acting(&record, &bolus_lines, &bolus_rel, &tz, &mut report);
    report_long_acting_gaps(&record, &tz, participant, &mut report);
    for key in [
        keys::DUPLICATES_DROPPED,
        keys::DST_AMBIGUOUS,
        keys::OUT_OF_SPAN_REJECTED,
    ] {
        report.add(key, 0);
    }
    report.count_accepted(&record);
    Ok((record, report))
}

/// Warn about CGM instants carrying different values (all kept).
fn report_cgm_conflicts(cgm: &[RecordEntry], file: &FileRows, report: &mut ImportReport) {
    let mut by_time: BTreeMap<Timestamp, (u64, bool, &str)> = BTreeMap::new();
    for e in cgm {
        let bits = e.original_value.to_bits();
        by_time
            .entry(e.time)
            .and_modify(|(b, conflict, _)| *conflict |= *b != bits)
            .or_insert((bits, false, e.source.as_str()));
    }
    let mut times: Vec<Timestamp> = by_time.keys().copied().collect();
    times.sort_unstable();
    let close = times
        .windows(2)
        .filter(|w| w[1].duration_since(w[0]) < SignedDuration::from_mins(CGM_CLOSE_MIN))
        .count();
    report.add(keys::CGM_CLOSE_READINGS, close);
    if close > 0 {
        report.warn(
            &file.rel,
            None,
            format!(
                "{close} CGM readings come less than {CGM_CLOSE_MIN} min after the previous one (scans between \
                 5-min readings, or two merged streams); all kept"
            ),
        );
    }
    let conflicts: Vec<&str> = by_time.values().filter(|v| v.1).map(|v| v.2).collect();
    report.add(keys::CGM_SAME_TIME_CONFLICTS, conflicts.len());
    if let Some(first) = conflicts.first() {
        report.warn(
            &file.rel,
            None,
            format!(
                "{} CGM instants carry two or more different values (all kept; first at {first})",
                conflicts.len()
            ),
        );
    }
}

/// Flag large boluses that equal a nearby long-acting dose, on a UK day without any logged
/// long-acting dose (possibly that day's injection logged as bolus).
fn report_bolus_like_long_acting(
    record: &Record,
    boluses: &[(Timestamp, f64, usize)],
    rel: &str,
    tz: &TimeZone,
    report: &mut ImportReport,
) {
    let window = SignedDuration::from_hours(24 * BOLUS_LIKE_LONG_ACTING_WINDOW_DAYS);
    let la_days: BTreeSet<Date> = record
        .of_kind(RecordKind::LongActing)
        .map(|e| e.time.to_zoned(tz.clone()).date())
        .collect();
    let mut n = 0;
    for &(t, v, line) in boluses {
        if v < BOLUS_LIKE_LONG_ACTING_MIN_U || la_days.contains(&t.to_zoned(tz.clone()).date()) {
            continue;
        }
        let near = record
            .of_kind(RecordKind::LongActing)
            .any(|la| la.value == v && t.duration_since(la.time).abs() <= window);
        if near {
            n += 1;
            report.warn(
                rel,
                Some(line),
                format!(
                    "bolus of {v} U on a day without any logged long-acting dose equals a long-acting dose logged \
                     within {BOLUS_LIKE_LONG_ACTING_WINDOW_DAYS} days: possibly that day's long-acting injection \
                     logged as bolus (kept as bolus)"
                ),
            );
        }
    }
    report.add(keys::BOLUS_LIKE_LONG_ACTING, n);
}

/// Warn when long-acting doses are logged on only some days of the CGM span.
fn report_long_acting_gaps(
    record: &Record,
    tz: &TimeZone,
    participant: &str,
    report: &mut ImportReport,
) {
    let la_days: BTreeSet<Date> = record
        .of_kind(RecordKind::LongActing)
        .map(|e| e.time.to_zoned(tz.clone()).date())
        .collect();
    if la_days.is_empty() {
        return;
    }
    let mut cgm = record.of_kind(RecordKind::Cgm).map(|e| e.time);
    let (Some(first), Some(last)) = (
        cgm.next(),
        record.of_kind(RecordKind::Cgm).map(|e| e.time).last(),
    ) else {
        return;
    };
    let (d0, d1) = (
        first.to_zoned(tz.clone()).date(),
        last.to_zoned(tz.clone()).date(),
    );
    let mut total = 0usize;
    let mut missing = 0usize;
    let mut d = d0;
    while d <= d1 && total < 100_000 {
        total += 1;
        if !la_days.contains(&d) {
            missing += 1;
        }
        match d.tomorrow() {
            Ok(next) => d = next,
            Err(_) => break,
        }
    }
    report.add(keys::LONG_ACTING_DAYS_MISSING, missing);
    if missing > 0 {
        report.warn(
            &format!("Insulin Data/Basal Data/UoMBasal{participant}.csv"),
            None,
            format!(
                "long-acting doses logged on {} of the {total} UK days of the CGM span ({d0} – {d1}); {missing} days \
                 have none (the log may be incomplete)",
                total - missing
            ),
        );
    }
}
