//! The in-memory record: patient information and time-stamped entries.

use std::fmt;

use jiff::Timestamp;
use medtwin_core::units::GlucoseUnit;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Highest plausible glucose value, in mg/dL. Readings above it (after unit conversion) are
/// rejected as impossible; CGM devices report at most 400–500 mg/dL.
pub const GLUCOSE_MAX_MG_DL: f64 = 1000.0;

/// What a [`RecordEntry`] holds. The CSV names (and serde names) are `cgm`, `smbg`, `bolus`,
/// `basal_rate`, `long_acting`, `carbs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// Continuous glucose monitor reading. Canonical unit mg/dL; accepted `mg/dL`, `mmol/L`.
    Cgm,
    /// Self-monitored (finger-stick) blood glucose. Canonical unit mg/dL; accepted `mg/dL`,
    /// `mmol/L`.
    Smbg,
    /// Rapid-acting insulin bolus, an amount given at one instant. Unit `U`.
    Bolus,
    /// Pump basal insulin rate, holding until the next `basal_rate` entry. Unit `U/h`.
    BasalRate,
    /// Long-acting (basal) insulin injection, an amount given at one instant. Unit `U`.
    LongActing,
    /// Carbohydrate intake, an amount eaten at one instant. Unit `g`.
    Carbs,
}

impl RecordKind {
    /// All kinds, in declaration order.
    pub const ALL: [RecordKind; 6] = [
        RecordKind::Cgm,
        RecordKind::Smbg,
        RecordKind::Bolus,
        RecordKind::BasalRate,
        RecordKind::LongActing,
        RecordKind::Carbs,
    ];

    /// The CSV name: `cgm`, `smbg`, `bolus`, `basal_rate`, `long_acting` or `carbs`.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Cgm => "cgm",
            RecordKind::Smbg => "smbg",
            RecordKind::Bolus => "bolus",
            RecordKind::BasalRate => "basal_rate",
            RecordKind::LongActing => "long_acting",
            RecordKind::Carbs => "carbs",
        }
    }

    /// Parse a CSV name (exact, lower case, as listed in [`RecordKind::name`]). `None` for
    /// anything else.
    pub fn from_name(name: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The canonical UCUM unit of [`RecordEntry::value`] for this kind: `mg/dL`, `U`, `U/h`
    /// or `g`.
    pub fn canonical_unit(self) -> &'static str {
        match self {
            RecordKind::Cgm | RecordKind::Smbg => "mg/dL",
            RecordKind::Bolus | RecordKind::LongActing => "U",
            RecordKind::BasalRate => "U/h",
            RecordKind::Carbs => "g",
        }
    }

    /// The UCUM unit codes accepted for this kind. Glucose codes are matched
    /// case-insensitively (as [`GlucoseUnit::from_ucum`] does), the others exactly.
    pub fn allowed_units(self) -> &'static [&'static str] {
        match self {
            RecordKind::Cgm | RecordKind::Smbg => &["mg/dL", "mmol/L"],
            RecordKind::Bolus | RecordKind::LongActing => &["U"],
            RecordKind::BasalRate => &["U/h"],
            RecordKind::Carbs => &["g"],
        }
    }

    /// True for the glucose observations (`cgm`, `smbg`).
    pub fn is_glucose(self) -> bool {
        matches!(self, RecordKind::Cgm | RecordKind::Smbg)
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a value cannot become a [`RecordEntry`] (see [`RecordEntry::new`]). The reason is a
/// human-readable sentence fragment, used verbatim in [`crate::ImportReport::rejected`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct InvalidEntry {
    /// What is wrong (e.g. ``unit `mg` not allowed for bolus (expected U)``).
    pub reason: String,
}

/// Convert `original_value` in `unit` to the canonical unit of `kind`, checking that the unit is
/// allowed and the value possible.
pub(crate) fn canonical_value(
    kind: RecordKind,
    original_value: f64,
    unit: &str,
) -> Result<f64, String> {
    if !original_value.is_finite() {
        return Err(format!(
            "{kind} value {original_value} is not a finite number"
        ));
    }
    let allowed = || kind.allowed_units().join(" or ");
    if kind.is_glucose() {
        let Some(gu) = GlucoseUnit::from_ucum(unit) else {
            return Err(format!(
                "unit `{unit}` not allowed for {kind} (expected {})",
                allowed()
            ));
        };
        let mg_dl = gu.to_mg_dl(original_value);
        if !(mg_dl > 0.0 && mg_dl <= GLUCOSE_MAX_MG_DL) {
            return Err(format!(
                "impossible glucose {original_value} {unit} = {mg_dl:.1} mg/dL (must be > 0 and <= {GLUCOSE_MAX_MG_DL} mg/dL)"
            ));
        }
        Ok(mg_dl)
    } else {
        if !kind.allowed_units().contains(&unit) {
            return Err(format!(
                "unit `{unit}` not allowed for {kind} (expected {})",
                allowed()
            ));
        }
        if original_value < 0.0 {
            return Err(format!(
                "impossible negative {kind} value {original_value} {unit}"
            ));
        }
        Ok(original_value)
    }
}

/// One time-stamped observation or input of a [`Record`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecordEntry {
    /// The instant (UTC-based; no time zone ambiguity left).
    pub time: Timestamp,
    /// What this entry is.
    pub kind: RecordKind,
    /// Value in the canonical unit of `kind` ([`RecordKind::canonical_unit`]): mg/dL for
    /// `cgm`/`smbg`, U for `bolus`/`long_acting`, U/h for `basal_rate`, g for `carbs`.
    pub value: f64,
    /// The original UCUM unit as written in the source (e.g. `mmol/L`).
    pub unit: String,
    /// The value in `unit`, as written in the source.
    pub original_value: f64,
    /// Insulin name when known (e.g. `glargine`); `None` when the source does not say.
    pub insulin: Option<String>,
    /// Where the entry came from: `file:line` for CSV sources (e.g.
    /// `t1d-uom:UoMGlucose2301.csv:17`, `record.csv:5`), `file[index]` for JSON sources
    /// (e.g. `nightscout:entries.json[3]`); free text for entries built in code.
    pub source: String,
}

impl RecordEntry {
    /// Build a validated entry from a value in its original unit. `value` is computed in the
    /// canonical unit (glucose through [`medtwin_core::units`]).
    ///
    /// Errors ([`InvalidEntry`]): non-finite value; unit not allowed for `kind`
    /// ([`RecordKind::allowed_units`]); negative insulin, rate or carbs; glucose ≤ 0 or
    /// > [`GLUCOSE_MAX_MG_DL`] mg/dL after conversion.
    ///
    /// ```
    /// use medtwin_io::{RecordEntry, RecordKind};
    /// let t = "2023-10-29T01:30:00+01:00".parse().unwrap();
    /// let e = RecordEntry::new(t, RecordKind::Cgm, 5.5, "mmol/L", None, "example").unwrap();
    /// assert!((e.value - 99.0858).abs() < 1e-9); // mg/dL, via medtwin_core::units
    /// assert!(RecordEntry::new(t, RecordKind::Bolus, -1.0, "U", None, "example").is_err());
    /// ```
    pub fn new(
        time: Timestamp,
        kind: RecordKind,
        original_value: f64,
        unit: &str,
        insulin: Option<String>,
        source: impl Into<String>,
    ) -> Result<RecordEntry, InvalidEntry> {
        let value = canonical_value(kind, original_value, unit)
            .map_err(|reason| InvalidEntry { reason })?;
        Ok(RecordEntry {
            time,
            kind,
            value,
            unit: unit.to_string(),
            original_value,
            insulin,
            source: source.into(),
        })
    }

    /// Check an entry that may have been built field by field: the same rules as
    /// [`RecordEntry::new`], plus `value` must equal the conversion of `original_value` (to a
    /// relative 1e-9).
    pub fn validate(&self) -> Result<(), InvalidEntry> {
        let v = canonical_value(self.kind, self.original_value, &self.unit)
            .map_err(|reason| InvalidEntry { reason })?;
        let tol = 1e-9 * v.abs().max(1.0);
        if !self.value.is_finite() || (self.value - v).abs() > tol {
            return Err(InvalidEntry {
                reason: format!(
                    "value {} {} does not match original {} {} (expected {v})",
                    self.value,
                    self.kind.canonical_unit(),
                    self.original_value,
                    self.unit
                ),
            });
        }
        Ok(())
    }
}

/// What is known about the person, read from an optional `patient.toml` (see
/// [`crate::read_patient_toml`]). Every field is optional; unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientInfo {
    /// Free identifier (e.g. `T1D-UOM-2301`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Body weight in kg (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_kg: Option<f64>,
    /// Age in years (≥ 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_years: Option<f64>,
    /// Sex as recorded (free text, e.g. `female`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    /// Insulin type or regimen as recorded (free text, e.g. `aspart`, `glargine + aspart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insulin_type: Option<String>,
}

impl PatientInfo {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == PatientInfo::default()
    }
}

/// A patient record: who, and what happened when.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    /// Patient information (empty when unknown).
    pub patient: PatientInfo,
    /// Entries sorted by time; ties keep their source order (stable sort). The readers and
    /// importers of this crate always return them sorted; call [`Record::sort`] after editing.
    pub entries: Vec<RecordEntry>,
}

impl Record {
    /// A record from unsorted entries; sorts them by time (stable).
    pub fn new(patient: PatientInfo, entries: Vec<RecordEntry>) -> Record {
        let mut r = Record { patient, entries };
        r.sort();
        r
    }

    /// Sort entries by time, keeping the order of equal times (stable).
    pub fn sort(&mut self) {
        self.entries.sort_by_key(|e| e.time);
    }

    /// Earliest entry time, `None` when empty.
    pub fn first_time(&self) -> Option<Timestamp> {
        self.entries.iter().map(|e| e.time).min()
    }

    /// Latest entry time, `None` when empty.
    pub fn last_time(&self) -> Option<Timestamp> {
        self.entries.iter().map(|e| e.time).max()
    }

    /// Entries of one kind, in order.
    pub fn of_kind(&self, kind: RecordKind) -> impl Iterator<Item = &RecordEntry> + '_ {
        self.entries.iter().filter(move |e| e.kind == kind)
    }

    /// Number of entries of one kind.
    pub fn count_of(&self, kind: RecordKind) -> usize {
        self.of_kind(kind).count()
    }

    /// A copy holding the same patient and the entries with `from <= time < to`.
    ///
    /// This is a plain subset: the `basal_rate` in effect at `from` (set before it) is not
    /// carried over; use [`Record::basal_rate_at`] to find it.
    pub fn between(&self, from: Timestamp, to: Timestamp) -> Record {
        Record {
            patient: self.patient.clone(),
            entries: self
                .entries
                .iter()
                .filter(|e| e.time >= from && e.time < to)
                .cloned()
                .collect(),
        }
    }

    /// The `basal_rate` entry in effect at `t`: the last one with `time <= t` (in entry order
    /// for equal times). `None` when no basal rate was set yet.
    pub fn basal_rate_at(&self, t: Timestamp) -> Option<&RecordEntry> {
        self.of_kind(RecordKind::BasalRate)
            .filter(|e| e.time <= t)
            .max_by_key(|e| e.time)
    }
}
