//! What an import did: rejected rows, repaired quirks, counts.

use std::collections::BTreeMap;
use std::fmt;

/// One problem found in a source file, displayed as `file:line: message` (or `file: message`
/// when it concerns the whole file or many lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The file, as a path or a dataset-relative name (e.g.
    /// `Glucose Data/UoMGlucose2301.csv`).
    pub file: String,
    /// 1-based line number in the file, when the issue concerns one line. JSON sources have no
    /// useful lines: their issues carry `None` and name the array index in `message`.
    pub line: Option<usize>,
    /// What is wrong or what was repaired.
    pub message: String,
}

impl Issue {
    /// A new issue.
    pub fn new(file: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Issue {
        Issue {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Names of the counts in [`ImportReport::counts`]. A count absent from the map is zero.
/// Besides these, `accepted_<kind>` (e.g. `accepted_cgm`, `accepted_basal_rate`) counts the
/// entries of each kind kept ([`ImportReport::accepted_key`] builds that name), and
/// `rows_read_<file>` the rows read per source file (T1D-UOM: `rows_read_glucose`,
/// `rows_read_basal`, `rows_read_bolus`, `rows_read_nutrition`; Nightscout:
/// `rows_read_entries`, `rows_read_treatments`).
pub mod count_keys {
    /// Data rows (CSV lines after the header, JSON array elements) read, over all files.
    pub const ROWS_READ: &str = "rows_read";
    /// Entries kept, all kinds.
    pub const ACCEPTED: &str = "accepted";
    /// Rows rejected (each one is in [`crate::ImportReport::rejected`]).
    pub const REJECTED: &str = "rejected";
    /// Exact duplicate rows dropped.
    pub const DUPLICATES_DROPPED: &str = "duplicates_dropped";
    /// Rows whose time is earlier than the row before them in the file (record CSV).
    pub const OUT_OF_ORDER: &str = "out_of_order";
    /// Files that started with a UTF-8 byte-order mark (stripped).
    pub const BOM_STRIPPED: &str = "bom_stripped";
    /// T1D-UOM: rows (header included) whose trailing empty columns were dropped.
    pub const TRAILING_EMPTY_COLUMNS: &str = "trailing_empty_columns";
    /// T1D-UOM: timestamps read as day-first UK local time and converted to UTC.
    pub const LOCAL_TIME_CONVERTED: &str = "local_time_converted";
    /// T1D-UOM: timestamps in a repeated (DST fall-back) hour, resolved by file order.
    pub const DST_AMBIGUOUS: &str = "dst_ambiguous";
    /// T1D-UOM: of those, resolved as the second pass (standard time, GMT).
    pub const DST_AMBIGUOUS_SECOND_PASS: &str = "dst_ambiguous_second_pass";
    /// T1D-UOM: timestamps in a skipped (DST spring-forward) hour, shifted forward by the gap.
    pub const DST_NONEXISTENT_SHIFTED: &str = "dst_nonexistent_shifted";
    /// T1D-UOM: event rows more than the tolerance outside the CGM span (rejected).
    pub const OUT_OF_SPAN_REJECTED: &str = "out_of_span_rejected";
    /// Rows rejected because the value was empty or `NaN`.
    pub const EMPTY_VALUE_REJECTED: &str = "empty_value_rejected";
    /// T1D-UOM: meal rows with 0 or empty carbohydrates, skipped (not an error).
    pub const CARBS_ZERO_OR_EMPTY_SKIPPED: &str = "carbs_zero_or_empty_skipped";
    /// T1D-UOM: optional files absent (insulin, nutrition).
    pub const MISSING_FILES: &str = "missing_files";
    /// CGM instants carrying two or more different values (all kept).
    pub const CGM_SAME_TIME_CONFLICTS: &str = "cgm_same_time_conflicts";
    /// T1D-UOM: distinct CGM instants less than 3 min after the previous one (all kept).
    pub const CGM_CLOSE_READINGS: &str = "cgm_close_readings";
    /// T1D-UOM: large boluses, on a day without long-acting dose, equal to a nearby long-acting
    /// dose (kept, flagged as possibly mislogged).
    pub const BOLUS_LIKE_LONG_ACTING: &str = "bolus_like_long_acting";
    /// T1D-UOM: UK days of the CGM span without any long-acting dose (when the participant
    /// logs long-acting doses at all).
    pub const LONG_ACTING_DAYS_MISSING: &str = "long_acting_days_missing";
    /// Nightscout: entries or treatments with an event type the importer does not map.
    pub const UNKNOWN_EVENT_TYPES: &str = "unknown_event_types";
    /// Nightscout: temporary basal rates imported (their end is not represented).
    pub const TEMP_BASALS: &str = "temp_basals";
    /// Nightscout: calibration (`cal`) entries skipped.
    pub const CALIBRATIONS_SKIPPED: &str = "calibrations_skipped";
    /// Nightscout: Temp Basal cancels (duration 0) skipped (the profile rate is unknown).
    pub const TEMP_BASAL_CANCELS: &str = "temp_basal_cancels";
    /// Nightscout: treatments of a known type with nothing to import (no insulin, no carbs).
    pub const EMPTY_TREATMENTS: &str = "empty_treatments";
}

/// The outcome of reading or importing one record, besides the record itself.
///
/// * `rejected`: one [`Issue`] per row that was not kept, with its line and reason.
/// * `warnings`: repaired or notable quirks, usually one per quirk and file, with a count in
///   the message (e.g. `7048 exact duplicate rows dropped`).
/// * `counts`: named counts; see [`count_keys`] for the names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Repaired quirks and notable facts, never silently applied.
    pub warnings: Vec<Issue>,
    /// Rows that were not kept, each with `file:line: reason`.
    pub rejected: Vec<Issue>,
    /// Named counts ([`count_keys`]; absent means 0).
    pub counts: BTreeMap<String, usize>,
}

impl ImportReport {
    /// The count named `key`, 0 when absent.
    pub fn count(&self, key: &str) -> usize {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// The count key of entries kept for a kind: `accepted_<kind name>`.
    pub fn accepted_key(kind: crate::RecordKind) -> String {
        format!("accepted_{}", kind.name())
    }

    /// Add `n` to the count `key` (creates it; `n == 0` still records the key).
    pub(crate) fn add(&mut self, key: &str, n: usize) {
        *self.counts.entry(key.to_string()).or_insert(0) += n;
    }

    /// Record a warning.
    pub(crate) fn warn(&mut self, file: &str, line: Option<usize>, message: impl Into<String>) {
        self.warnings.push(Issue::new(file, line, message));
    }

    /// Record a rejected row and count it.
    pub(crate) fn reject(&mut self, file: &str, line: Option<usize>, message: impl Into<String>) {
        self.rejected.push(Issue::new(file, line, message));
        self.add(count_keys::REJECTED, 1);
    }

    /// Count the accepted entries per kind (and in total) from a finished record.
    pub(crate) fn count_accepted(&mut self, record: &crate::Record) {
        self.add(count_keys::ACCEPTED, record.entries.len());
        for kind in crate::RecordKind::ALL {
            let n = record.count_of(kind);
            if n > 0 {
                self.add(&Self::accepted_key(kind), n);
            }
        }
        self.add(count_keys::REJECTED, 0);
    }
}

impl fmt::Display for ImportReport {
    /// A multi-line summary: counts, then warnings, then rejected rows (all of them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "counts:")?;
        for (k, v) in &self.counts {
            writeln!(f, "  {k}: {v}")?;
        }
        writeln!(f, "warnings ({}):", self.warnings.len())?;
        for w in &self.warnings {
            writeln!(f, "  {w}")?;
        }
        writeln!(f, "rejected ({}):", self.rejected.len())?;
        for r in &self.rejected {
            writeln!(f, "  {r}")?;
        }
        Ok(())
    }
}
