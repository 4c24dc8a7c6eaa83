//! # medtwin-io
//!
//! Data I/O for medtwin: the project's own **record format** (a long CSV plus an optional
//! `patient.toml`), and importers for the **T1D-UOM** dataset and **Nightscout** exports.
//! Everything lands in one in-memory shape, a [`Record`]: a [`PatientInfo`] plus a time-sorted
//! list of [`RecordEntry`] (CGM and finger-stick glucose, insulin boluses, pump basal rates,
//! long-acting injections, carbohydrates). Every reader also returns an [`ImportReport`] listing
//! what was rejected (with `file:line: reason`), every data quirk that was repaired (as a warning
//! with a count), and named counts. File-level failures (unreadable file, wrong header, missing
//! folder) are an [`IoError`]. No reader panics on any input.
//!
//! ## Quick start
//!
//! ```no_run
//! use std::path::Path;
//! use medtwin_io::{import_t1d_uom, read_record_csv, write_record_csv, RecordKind, T1D_UOM_CITATION};
//!
//! let (record, report) = import_t1d_uom(Path::new("tests/data/t1d-uom"), "2313")?;
//! for issue in report.warnings.iter().chain(&report.rejected) {
//!     eprintln!("{issue}"); // file:line: message
//! }
//! println!("{} CGM readings; data: {T1D_UOM_CITATION}", record.of_kind(RecordKind::Cgm).count());
//! write_record_csv(&record, Path::new("2313.csv"))?;
//! let (again, _) = read_record_csv(Path::new("2313.csv"))?;
//! assert_eq!(again.entries.len(), record.entries.len());
//! # Ok::<(), medtwin_io::IoError>(())
//! ```
//!
//! ## Canonical units
//!
//! Units are written as UCUM codes. [`RecordEntry::value`] is always in the canonical unit of
//! its kind, while [`RecordEntry::original_value`] and [`RecordEntry::unit`] keep what the
//! source said, so nothing is lost:
//!
//! | kind (CSV name) | meaning | accepted units | canonical unit |
//! |---|---|---|---|
//! | `cgm` | continuous glucose monitor reading | `mg/dL`, `mmol/L` | mg/dL |
//! | `smbg` | finger-stick (self-monitored) blood glucose | `mg/dL`, `mmol/L` | mg/dL |
//! | `bolus` | rapid-acting insulin bolus (amount) | `U` | U |
//! | `basal_rate` | pump basal rate, holds until the next `basal_rate` | `U/h` | U/h |
//! | `long_acting` | long-acting (basal) insulin injection (amount) | `U` | U |
//! | `carbs` | carbohydrate intake (amount) | `g` | g |
//!
//! Glucose conversion uses [`medtwin_core::units`] (1 mmol/L = 18.0156 mg/dL); it is not
//! redefined here. `U` is the insulin international unit (UCUM `[iU]`).
//!
//! ## The medtwin record format
//!
//! A record is a UTF-8 CSV file (a leading byte-order mark is tolerated and reported) with the
//! header
//!
//! ```text
//! time,kind,value,unit,insulin
//! ```
//!
//! where the `insulin` column is optional (a 4-column header `time,kind,value,unit` is also
//! valid). One row per event:
//!
//! * `time`: an RFC 3339 timestamp **with an explicit UTC offset**, e.g.
//!   `2023-10-29T01:30:00+01:00` or `2023-10-29T00:30:00Z`, so that it is unambiguous even
//!   across daylight-saving changes. A time without offset is rejected.
//! * `kind`: one of `cgm`, `smbg`, `bolus`, `basal_rate`, `long_acting`, `carbs` (lower case).
//! * `value`: a decimal number in `unit`.
//! * `unit`: a UCUM code allowed for the kind (table above).
//! * `insulin`: optional insulin name (e.g. `glargine`), empty when unknown.
//!
//! A `basal_rate` holds from its time until the next `basal_rate` row. Doses (`bolus`,
//! `long_acting`, `carbs`) are amounts given at that instant. Glucose rows are observations.
//!
//! ```text
//! time,kind,value,unit,insulin
//! 2023-11-10T00:04:00Z,cgm,7.5,mmol/L,
//! 2023-11-10T00:05:00Z,basal_rate,0.85,U/h,
//! 2023-11-10T07:30:00Z,carbs,45,g,
//! 2023-11-10T07:31:00Z,bolus,4.5,U,aspart
//! 2023-11-10T18:00:00Z,long_acting,14,U,glargine
//! ```
//!
//! An optional `patient.toml` beside the CSV holds [`PatientInfo`] (all keys optional, unknown
//! keys are an error):
//!
//! ```toml
//! id = "demo-01"
//! weight_kg = 72.5
//! age_years = 34
//! sex = "female"
//! insulin_type = "aspart"
//! ```
//!
//! ### Reading rules ([`read_record_csv`])
//!
//! * A file whose first line is not one of the two headers is an [`IoError::Header`] naming the
//!   file and the expected header.
//! * A malformed row is **rejected**, reported in [`ImportReport::rejected`] as
//!   `file:line: reason`, and every valid row is kept. Malformed means: wrong column count,
//!   unparsable time (or time without UTC offset), unparsable number, unknown kind, unit not
//!   allowed for the kind, non-finite value, negative insulin, rate or carbs, glucose ≤ 0 or
//!   > 1000 mg/dL after conversion.
//! * Rows out of time order are accepted, counted (`out_of_order`) and reported as one warning;
//!   entries are then sorted by time (stable).
//! * Exact duplicates (same instant, kind, value, unit and insulin) are dropped and counted
//!   (`duplicates_dropped`).
//!
//! ### Writing ([`write_record_csv`])
//!
//! Writes the 5-column header, times in UTC (`Z`), and each entry's **original** value and unit
//! (so an `mmol/L` reading stays `mmol/L` and nothing is lost to rounding). Values are written
//! with Rust's shortest round-trip float formatting, so write → read returns the same numbers.
//! The patient is written separately with [`write_patient_toml`].
//!
//! ## Importers
//!
//! * [`import_t1d_uom`]: the T1D-UOM dataset of the University of Manchester (CC BY 4.0; cite
//!   [`T1D_UOM_CITATION`]); day-first UK local timestamps, DST fall-back and spring-forward,
//!   byte-order marks, trailing empty columns, duplicate rows, mistyped years, empty values,
//!   all handled explicitly and reported.
//! * [`import_nightscout`]: Nightscout `entries.json` + `treatments.json` exports.

#![warn(missing_docs)]

pub mod clarity;
mod error;
mod nightscout;
pub mod ns_profile;
mod record;
mod record_csv;
mod report;
mod t1d_uom;
pub mod tidepool;
mod util;

pub use error::IoError;
pub use nightscout::{
    import_nightscout, import_nightscout_with_profile, nightscout_documents, nightscout_from_values,
};
pub use record::{InvalidEntry, PatientInfo, Record, RecordEntry, RecordKind, GLUCOSE_MAX_MG_DL};
pub use record_csv::{
    read_patient_toml, read_record_csv, write_patient_toml, write_record_csv, RECORD_HEADER,
};
pub use report::{count_keys, ImportReport, Issue};
pub use t1d_uom::{
    import_t1d_uom, T1D_UOM_CITATION, T1D_UOM_LONG_ACTING_LOOKBACK_DAYS,
    T1D_UOM_SPAN_TOLERANCE_DAYS, T1D_UOM_TIME_ZONE,
};
