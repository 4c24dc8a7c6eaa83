//! Importer for Nightscout JSON exports (`entries.json`, `treatments.json`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::report::count_keys as keys;
use crate::util::{clip, file_name, read_bytes, strip_bom};
use crate::{ImportReport, IoError, PatientInfo, Record, RecordEntry, RecordKind};

/// Treatment event types the importer understands (others are counted as unknown; their
/// `insulin` and `carbs` fields are still imported).
const KNOWN_TREATMENTS: [&str; 8] = [
    "Meal Bolus",
    "Snack Bolus",
    "Correction Bolus",
    "Bolus",
    "Combo Bolus",
    "Carb Correction",
    "Temp Basal",
    "BG Check",
];

/// Read a Nightscout export: a JSON array, one object, or JSON lines (mongoexport: one object
/// per line).
fn read_json_array(path: &Path, what: &str) -> Result<Vec<Value>, IoError> {
    let file = path.display().to_string();
    let bytes = read_bytes(path)?;
    let (data, _) = strip_bom(&bytes);
    nightscout_documents(data, what).map_err(|reason| IoError::Parse { file, reason })
}

/// The documents of a Nightscout upload or export: a JSON array of objects, one object, or
/// JSON lines (mongoexport's default: one object per line, blank lines allowed). MongoDB
/// extended JSON numbers (`{"$numberLong": "…"}`) are read as numbers. Errors name the line
/// (and column) and what was found.
pub fn nightscout_documents(data: &[u8], what: &str) -> Result<Vec<Value>, String> {
    let (data, _) = strip_bom(data);
    let mut docs = Vec::new();
    let mut values = 0;
    let stream = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    for (i, v) in stream.enumerate() {
        values += 1;
        let v = v.map_err(|e| {
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            )
        })?;
        match v {
            Value::Array(items) if i == 0 => docs.extend(items),
            Value::Object(_) => docs.push(v),
            other => {
                return Err(format!(
                    "expected a JSON array of {what}, one object, or one object per line (mongoexport); document {} is {}",
                    i + 1,
                    json_type(&other)
                ))
            }
        }
    }
    if values == 0 {
        return Err(format!("no {what} found"));
    }
    Ok(docs)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A number, or a string holding one; `None` for null, absent or anything else.
fn number(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        // MongoDB extended JSON (mongoexport): {"$numberLong": "1600000000000"} and the like.
        Value::Object(o) => [
            "$numberLong",
            "$numberDouble",
            "$numberInt",
            "$numberDecimal",
        ]
        .iter()
        .find_map(|k| number(o, k)),
        _ => None,
    }
}

/// Epoch milliseconds to a timestamp.
fn from_millis(ms: f64) -> Option<Timestamp> {
    if !ms.is_finite() || ms.abs() > 1e17 {
        return None;
    }
    // In range by the check above; rounding to whole milliseconds.
    Timestamp::from_millisecond(ms.round() as i64).ok()
}

/// The first usable time among `keys`: strings are RFC 3339 / ISO 8601 with offset, numbers
/// are epoch milliseconds.
fn time_of(obj: &Map<String, Value>, keys: &[&str]) -> Option<Timestamp> {
    keys.iter().find_map(|k| match obj.get(*k)? {
        Value::String(s) => s.trim().parse::<Timestamp>().ok(),
        Value::Number(n) => n.as_f64().and_then(from_millis),
        // Extended JSON: {"$date": "2020-…Z" | ms | {"$numberLong": "…"}}, {"$numberLong": "…"}.
        Value::Object(o) => match o.get("$date") {
            Some(Value::String(s)) => s.trim().parse::<Timestamp>().ok(),
            Some(Value::Number(n)) => n.as_f64().and_then(from_millis),
            Some(Value::Object(d)) => number(d, "$numberLong").and_then(from_millis),
            _ => number(obj, k).and_then(from_millis),
        },
        _ => None,
    })
}

/// Collects entries of one import, dropping exact duplicates.
struct Collector {
    entries: Vec<RecordEntry>,
    seen: HashSet<(Timestamp, RecordKind, u64)>,
    duplicates: BTreeMap<String, Vec<usize>>,
}

impl Collector {
    fn push(&mut self, file: &str, index: usize, entry: RecordEntry) {
        if self
            .seen
            .insert((entry.time, entry.kind, entry.value.to_bits()))
        {
            self.entries.push(entry);
        } else {
            self.duplicates
                .entry(file.to_string())
                .or_default()
                .push(index);
        }
    }
}

/// Import a Nightscout export: `entries.json` (glucose) and `treatments.json` (insulin, carbs,
/// temporary basal rates), as produced by the Nightscout API (`/api/v1/entries.json`,
/// `/api/v1/treatments.json`).
///
/// Mapping:
///
/// * entries (`type`, `date` epoch ms, else `dateString`): `sgv` (field `sgv`, mg/dL) → `cgm`;
///   `mbg` (field `mbg`, mg/dL, finger stick) → `smbg`; `cal` skipped with a count; other types
///   counted as unknown (`unknown_event_types`) and skipped;
/// * treatments (`eventType`, `created_at` ISO 8601 with offset, else `timestamp`/`date`/
///   `mills`): `insulin` > 0 → `bolus` (U); `carbs` > 0 → `carbs` (g), whatever the event
///   type; `Temp Basal` with `absolute` (else `rate`) → `basal_rate` (U/h) (`temp_basals`);
///   `BG Check` with `glucose` and `units` (`mg/dl` or `mmol`) → `smbg`. A `Temp Basal` with
///   `duration` 0 and no rate (a cancel) is skipped and counted; one with only `percent` is
///   rejected (it needs the profile). Unknown event types are counted per type and warned
///   about (`unknown_event_types`). Known types with nothing to import are counted
///   (`empty_treatments`).
///
/// A temporary basal ends after `duration` minutes and the pump falls back to the **profile**
/// basal rate, which is not part of these exports: a `basal_rate` entry holds until the next
/// one, so the time after each temp basal is not represented. One warning says so whenever a
/// temp basal is imported; add the profile basal rates before simulating.
///
/// Exact duplicates (same instant, kind and value, common with several uploaders) are dropped
/// (`duplicates_dropped`). Array order does not matter (the API returns newest first); entries
/// are sorted by time. Issues carry no line (`line: None`); their message starts with the
/// array index (`[12] ...`); sources read `nightscout:entries.json[12]`. The patient is empty.
///
/// Errors: a file unreadable ([`IoError::Read`]), not JSON, or not a JSON array
/// ([`IoError::Parse`]).
pub fn import_nightscout(
    entries_json: &Path,
    treatments_json: &Path,
) -> Result<(Record, ImportReport), IoError> {
    import_nightscout_with_profile(entries_json, treatments_json, None)
}

/// [`import_nightscout`] with the patient's Nightscout profile (`profile.json`: one profile
/// document, an array of them or JSON lines; the active one by `startDate`), so relative
/// (percent) `Temp Basal` treatments resolve to `scheduled × (100 + percent) / 100` U/h
/// ([`crate::ns_profile::resolve_percent_temp_basals`]) instead of being rejected. Without a
/// profile this is [`import_nightscout`].
///
/// Errors: as [`import_nightscout`]; a profile that is unreadable, not JSON or holds no usable
/// basal schedule, or a percent temp basal that cannot be resolved ([`IoError::Parse`] naming
/// the file and the element, e.g. `treatments.json[3].percent`). Nothing is imported then.
pub fn import_nightscout_with_profile(
    entries_json: &Path,
    treatments_json: &Path,
    profile_json: Option<&Path>,
) -> Result<(Record, ImportReport), IoError> {
    let entries = read_json_array(entries_json, "entries")?;
    let mut treatments = read_json_array(treatments_json, "treatments")?;
    let profile = match profile_json {
        Some(p) => Some(resolve_with_profile(&mut treatments, treatments_json, p)?),
        None => None,
    };
    let (record, mut report) = nightscout_from_values(
        &entries,
        &treatments,
        (
            &entries_json.display().to_string(),
            &file_name(entries_json),
        ),
        (
            &treatments_json.display().to_string(),
            &file_name(treatments_json),
        ),
    );
    let Some(profile) = profile else {
        return Ok((record, report));
    };
    Ok(with_scheduled_basal(
        record,
        &mut report,
        &profile,
        &treatments,
        &file_name(treatments_json),
    ))
}

/// `record` with the profile's scheduled basal rates where no temp basal runs
/// ([`crate::ns_profile::scheduled_basal_rates`] over the record's span), counted
/// (`scheduled_basal_rates`) and said in a warning that replaces the "add the profile" one.
fn with_scheduled_basal(
    record: Record,
    report: &mut ImportReport,
    profile: &crate::ns_profile::BasalProfile,
    treatments: &[Value],
    file: &str,
) -> (Record, ImportReport) {
    let (Some(from), Some(to)) = (
        record.entries.iter().map(|e| e.time).min(),
        record.entries.iter().map(|e| e.time).max(),
    ) else {
        return (record, std::mem::take(report));
    };
    let source = format!("nightscout:profile:{}", profile.name);
    let added: Vec<RecordEntry> =
        crate::ns_profile::scheduled_basal_rates(profile, treatments, from, to)
            .into_iter()
            .filter_map(|(t, r)| {
                RecordEntry::new(t, RecordKind::BasalRate, r, "U/h", None, source.clone()).ok()
            })
            .collect();
    let n = added.len();
    report.warnings.retain(|w| {
        !w.message
            .contains("add the profile basal rates before simulating")
    });
    report.warn(
        file,
        None,
        format!(
            "{n} scheduled basal rates of profile `{}` added (at the record's start, each schedule change and each temp basal's end, where no temp basal runs)",
            profile.name
        ),
    );
    report.add("scheduled_basal_rates", n);
    report.add(keys::ACCEPTED, n);
    report.add(&ImportReport::accepted_key(RecordKind::BasalRate), n);
    let mut entries = record.entries;
    entries.extend(added);
    (Record::new(record.patient, entries), std::mem::take(report))
}

/// Resolve the percent temp basals of `treatments` (read from `treatments_json`) against the
/// profile in `profile_json` ([`import_nightscout_with_profile`]).
fn resolve_with_profile(
    treatments: &mut [Value],
    treatments_json: &Path,
    profile_json: &Path,
) -> Result<crate::ns_profile::BasalProfile, IoError> {
    let docs = read_json_array(profile_json, "profile")?;
    let doc = match <[Value; 1]>::try_from(docs) {
        Ok([one]) => one,
        Err(many) => Value::Array(many),
    };
    let profile = crate::ns_profile::BasalProfile::from_nightscout(&doc, &file_name(profile_json))
        .map_err(|reason| IoError::Parse {
            file: profile_json.display().to_string(),
            reason,
        })?;
    crate::ns_profile::resolve_percent_temp_basals(
        treatments,
        Some(&profile),
        &file_name(treatments_json),
    )
    .map_err(|problems| IoError::Parse {
        file: treatments_json.display().to_string(),
        reason: problems.join("; "),
    })?;
    Ok(profile)
}

/// The mapping of [`import_nightscout`] applied to already-parsed JSON arrays, e.g. the bodies
/// of Nightscout API uploads (`POST /api/v1/entries`, `POST /api/v1/treatments`). Each of
/// `entries_name` and `treatments_name` is `(file, name)`: `file` names the source in issues,
/// `name` in each entry's `source` (`nightscout:{name}[index]`). Same rules, counts and
/// report as [`import_nightscout`]; never fails (bad items are in the report's `rejected`).
pub fn nightscout_from_values(
    entries: &[Value],
    treatments: &[Value],
    entries_name: (&str, &str),
    treatments_name: (&str, &str),
) -> (Record, ImportReport) {
    let mut report = ImportReport::default();
    let mut out = Collector {
        entries: Vec::new(),
        seen: HashSet::new(),
        duplicates: BTreeMap::new(),
    };
    import_entries(entries_name, entries, &mut out, &mut report);
    import_treatments(treatments_name, treatments, &mut out, &mut report);
    report.add(keys::ROWS_READ, entries.len() + treatments.len());
    report.add("rows_read_entries", entries.len());
    report.add("rows_read_treatments", treatments.len());
    let mut dups = 0;
    for (file, idx) in &out.duplicates {
        dups += idx.len();
        let shown: Vec<String> = idx.iter().take(10).map(|i| i.to_string()).collect();
        report.warn(
            file,
            None,
            format!(
                "{} exact duplicates (same time, kind and value) dropped (indices {})",
                idx.len(),
                shown.join(", ")
            ),
        );
    }
    report.add(keys::DUPLICATES_DROPPED, dups);
    let record = Record::new(PatientInfo::default(), out.entries);
    report.count_accepted(&record);
    (record, report)
}

fn import_entries(
    (file, name): (&str, &str),
    items: &[Value],
    out: &mut Collector,
    report: &mut ImportReport,
) {
    let file = file.to_string();
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    let mut calibrations = 0usize;
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            report.reject(
                &file,
                None,
                format!("[{i}] not a JSON object but {}", json_type(item)),
            );
            continue;
        };
        let ty = obj.get("type").and_then(Value::as_str).unwrap_or("");
        let (kind, field) = match ty {
            "sgv" => (RecordKind::Cgm, "sgv"),
            "mbg" => (RecordKind::Smbg, "mbg"),
            "cal" => {
                calibrations += 1;
                continue;
            }
            other => {
                *unknown
                    .entry(if other.is_empty() {
                        "(none)".into()
                    } else {
                        clip(other, 40)
                    })
                    .or_insert(0) += 1;
                continue;
            }
        };
        let Some(time) = time_of(obj, &["date", "dateString", "sysTime"]) else {
            report.reject(
                &file,
                None,
                format!("[{i}] {ty} entry without a usable time (`date` epoch ms or `dateString`)"),
            );
            continue;
        };
        let Some(v) = number(obj, field) else {
            report.reject(
                &file,
                None,
                format!("[{i}] {ty} entry without a numeric `{field}`"),
            );
            continue;
        };
        match RecordEntry::new(
            time,
            kind,
            v,
            "mg/dL",
            None,
            format!("nightscout:{name}[{i}]"),
        ) {
            Ok(e) => out.push(&file, i, e),
            Err(e) => report.reject(&file, None, format!("[{i}] {}", e.reason)),
        }
    }
    if calibrations > 0 {
        report.add(keys::CALIBRATIONS_SKIPPED, calibrations);
        report.warn(
            &file,
            None,
            format!("{calibrations} calibration (`cal`) entries skipped"),
        );
    }
    for (ty, n) in unknown {
        report.add(keys::UNKNOWN_EVENT_TYPES, n);
        report.warn(
            &file,
            None,
            format!("{n} entries of unknown type `{ty}` skipped"),
        );
    }
}

fn import_treatments(
    (file, name): (&str, &str),
    items: &[Value],
    out: &mut Collector,
    report: &mut ImportReport,
) {
    let file = file.to_string();
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    let mut empty: Vec<usize> = Vec::new();
    let mut temp_basals = 0usize;
    let mut cancels = 0usize;
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            report.reject(
                &file,
                None,
                format!("[{i}] not a JSON object but {}", json_type(item)),
            );
            continue;
        };
        let event = obj
            .get("eventType")
            .and_then(Value::as_str)
            .unwrap_or("(none)");
        let known = KNOWN_TREATMENTS.contains(&event);
        if !known {
            *unknown.entry(clip(event, 40)).or_insert(0) += 1;
        }
        let Some(time) = time_of(obj, &["created_at", "timestamp", "date", "mills"]) else {
            report.reject(
                &file,
                None,
                format!(
                    "[{i}] `{}` treatment without a usable time (`created_at` with UTC offset)",
                    clip(event, 40)
                ),
            );
            continue;
        };
        let source = format!("nightscout:{name}[{i}]");
        // Values found (imported or rejected); a known treatment with none is "empty".
        let mut found = 0usize;
        let mut add = |kind: RecordKind,
                       v: f64,
                       unit: &str,
                       report: &mut ImportReport,
                       out: &mut Collector| {
            found += 1;
            match RecordEntry::new(time, kind, v, unit, None, source.clone()) {
                Ok(e) => out.push(&file, i, e),
                Err(e) => report.reject(&file, None, format!("[{i}] {}", e.reason)),
            }
        };
        if let Some(u) = number(obj, "insulin") {
            if u != 0.0 {
                add(RecordKind::Bolus, u, "U", report, out);
            }
        }
        if let Some(g) = number(obj, "carbs") {
            if g != 0.0 {
                add(RecordKind::Carbs, g, "g", report, out);
            }
        }
        let mut handled = false;
        if event == "Temp Basal" {
            handled = true;
            let rate = number(obj, "absolute").or_else(|| number(obj, "rate"));
            let duration = number(obj, "duration");
            match rate {
                _ if duration == Some(0.0) => cancels += 1,
                Some(r) => {
                    temp_basals += 1;
                    add(RecordKind::BasalRate, r, "U/h", report, out);
                }
                None if obj.contains_key("percent") => report.reject(
                    &file,
                    None,
                    format!("[{i}] relative (percent) Temp Basal needs the profile basal rate, which is not in the export"),
                ),
                None => report.reject(&file, None, format!("[{i}] Temp Basal without `absolute` or `rate`")),
            }
        } else if event == "BG Check" {
            if let Some(g) = number(obj, "glucose") {
                handled = true;
                let units = obj
                    .get("units")
                    .and_then(Value::as_str)
                    .unwrap_or("mg/dl")
                    .trim()
                    .to_ascii_lowercase();
                let unit = match units.as_str() {
                    "mmol" | "mmol/l" => "mmol/L",
                    _ => "mg/dL",
                };
                if units == "mg/dl" || unit == "mmol/L" {
                    add(RecordKind::Smbg, g, unit, report, out);
                } else {
                    report.reject(
                        &file,
                        None,
                        format!("[{i}] BG Check with unknown units `{}`", clip(&units, 20)),
                    );
                }
            }
        }
        if known && found == 0 && !handled {
            empty.push(i);
        }
    }
    if temp_basals > 0 {
        report.add(keys::TEMP_BASALS, temp_basals);
        report.warn(
            &file,
            None,
            format!(
                "{temp_basals} Temp Basal rates imported as basal_rate; each ends after its `duration` and the pump \
                 falls back to the profile basal rate, which is not in the Nightscout export: a basal_rate holds \
                 until the next one, so add the profile basal rates before simulating"
            ),
        );
    }
    if cancels > 0 {
        report.add(keys::TEMP_BASAL_CANCELS, cancels);
        report.warn(
            &file,
            None,
            format!("{cancels} Temp Basal cancels (duration 0, back to the profile basal rate) skipped: the profile is not in the export"),
        );
    }
    if !empty.is_empty() {
        report.add(keys::EMPTY_TREATMENTS, empty.len());
        let shown: Vec<String> = empty.iter().take(10).map(|i| i.to_string()).collect();
        report.warn(
            &file,
            None,
            format!(
                "{} treatments with no insulin or carbs to import (indices {})",
                empty.len(),
                shown.join(", ")
            ),
        );
    }
    for (ty, n) in unknown {
        report.add(keys::UNKNOWN_EVENT_TYPES, n);
        report.warn(
            &file,
            None,
            format!("{n} treatments with unknown eventType `{ty}` (their insulin/carbs, if any, were imported)"),
        );
    }
}
