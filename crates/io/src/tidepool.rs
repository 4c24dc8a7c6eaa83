//! Tidepool data export (Tidepool Web "Export", JSON; also the platform API's
//! `/data/{userId}` answer): an array of data-model objects (or JSON lines), each with `type`
//! and `time` (ISO 8601, UTC). Mapping (Tidepool data model):
//!
//! * `cbg` → `cgm`, `smbg` → `smbg`: `value` in `units` (`mmol/L`, Tidepool's stored unit, or
//!   `mg/dL`);
//! * `bolus`: `normal` (U) → `bolus`; an `extended` part (U, over `duration` ms) → `bolus` at the
//!   bolus time too, counted (`extended_at_start`) with a warning;
//! * `basal`: `rate` (U/h) → `basal_rate` for `scheduled`, `temp` and `automated` delivery; a
//!   `suspend` → `basal_rate` 0;
//! * `wizard`: `carbInput` (g) → `carbs` (the wizard's insulin is its own `bolus` object);
//!   `food`: `nutrition.carbohydrate.net` (g) → `carbs`;
//! * `insulin` (pen/syringe): `dose.total` (U) → `long_acting` when
//!   `formulation.simple.actingType` is `long` (or `intermediate`), else `bolus`;
//! * other types (`upload`, `deviceEvent`, `pumpSettings`, `cgmSettings`, …) are counted per type
//!   and skipped.
//!
//! Invalid objects are rejected with their index (`[12] …`) while every valid one is kept;
//! sources read `tidepool:{file}[12]`.

use std::path::Path;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::{ImportReport, IoError, Record, RecordEntry, RecordKind};

/// Import the Tidepool JSON export at `path`. Errors: unreadable file ([`IoError::Read`]), not
/// a JSON array or JSON lines ([`IoError::Parse`]).
pub fn import_tidepool_json(path: &Path) -> Result<(Record, ImportReport), IoError> {
    let data = std::fs::read(path).map_err(|source| IoError::Read {
        file: path.display().to_string(),
        source,
    })?;
    tidepool_from_bytes(&data, &path.display().to_string())
}

fn f(o: &Map<String, Value>, k: &str) -> Option<f64> {
    match o.get(k)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// [`import_tidepool_json`] of the bytes of an export (`file` names it in issues).
pub fn tidepool_from_bytes(data: &[u8], file: &str) -> Result<(Record, ImportReport), IoError> {
    let items = crate::nightscout_documents(data, "data").map_err(|reason| IoError::Parse {
        file: file.to_string(),
        reason: format!("not a Tidepool JSON export (array or JSON lines): {reason}"),
    })?;
    let mut report = ImportReport::default();
    let mut entries = Vec::new();
    let mut skipped: std::collections::BTreeMap<String, usize> = Default::default();
    let mut extended = 0usize;
    for (i, item) in items.iter().enumerate() {
        let Some(o) = item.as_object() else {
            report.reject(file, None, format!("[{i}] not a JSON object"));
            continue;
        };
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(time) = o
            .get("time")
            .and_then(Value::as_str)
            .and_then(|s| s.trim().parse::<Timestamp>().ok())
        else {
            if matches!(
                ty,
                "cbg" | "smbg" | "bolus" | "basal" | "wizard" | "food" | "insulin"
            ) {
                report.reject(
                    file,
                    None,
                    format!("[{i}] `{ty}` without a usable `time` (ISO 8601 with offset)"),
                );
            } else {
                *skipped.entry(ty.to_string()).or_default() += 1;
            }
            continue;
        };
        let source = format!("tidepool:{file}[{i}]");
        let mut push = |report: &mut ImportReport,
                        kind: RecordKind,
                        v: Option<f64>,
                        unit: &str,
                        insulin: Option<String>,
                        field: &str| {
            match v {
                Some(v) => match RecordEntry::new(time, kind, v, unit, insulin, source.clone()) {
                    Ok(e) => entries.push(e),
                    Err(e) => report.reject(file, None, format!("[{i}].{field}: {}", e.reason)),
                },
                None => report.reject(file, None, format!("[{i}].{field}: required number")),
            }
        };
        match ty {
            "cbg" | "smbg" => {
                let unit = match o.get("units").and_then(Value::as_str).map(str::trim) {
                    Some(u)
                        if u.eq_ignore_ascii_case("mmol/L") || u.eq_ignore_ascii_case("mmol/l") =>
                    {
                        "mmol/L"
                    }
                    Some(u)
                        if u.eq_ignore_ascii_case("mg/dL") || u.eq_ignore_ascii_case("mg/dl") =>
                    {
                        "mg/dL"
                    }
                    Some(u) => {
                        report.reject(
                            file,
                            None,
                            format!(
                                "[{i}].units: unknown glucose unit `{}`",
                                u.chars().take(20).collect::<String>()
                            ),
                        );
                        continue;
                    }
                    None => "mmol/L", // the platform's stored unit
                };
                let kind = if ty == "cbg" {
                    RecordKind::Cgm
                } else {
                    RecordKind::Smbg
                };
                push(&mut report, kind, f(o, "value"), unit, None, "value");
            }
            "bolus" => {
                let normal = f(o, "normal");
                let ext = f(o, "extended");
                if normal.is_none() && ext.is_none() {
                    report.reject(
                        file,
                        None,
                        format!("[{i}].normal: a bolus needs `normal` or `extended` units"),
                    );
                    continue;
                }
                if let Some(n) = normal.filter(|n| *n != 0.0) {
                    push(&mut report, RecordKind::Bolus, Some(n), "U", None, "normal");
                }
                if let Some(e) = ext.filter(|e| *e != 0.0) {
                    extended += 1;
                    push(
                        &mut report,
                        RecordKind::Bolus,
                        Some(e),
                        "U",
                        None,
                        "extended",
                    );
                }
            }
            "basal" => {
                let dt = o.get("deliveryType").and_then(Value::as_str).unwrap_or("");
                if dt == "suspend" {
                    push(
                        &mut report,
                        RecordKind::BasalRate,
                        Some(0.0),
                        "U/h",
                        None,
                        "rate",
                    );
                } else {
                    push(
                        &mut report,
                        RecordKind::BasalRate,
                        f(o, "rate"),
                        "U/h",
                        None,
                        "rate",
                    );
                }
            }
            "wizard" => {
                if let Some(c) = f(o, "carbInput").filter(|c| *c != 0.0) {
                    push(
                        &mut report,
                        RecordKind::Carbs,
                        Some(c),
                        "g",
                        None,
                        "carbInput",
                    );
                }
            }
            "food" => {
                let net = o
                    .get("nutrition")
                    .and_then(|n| n.get("carbohydrate"))
                    .and_then(Value::as_object)
                    .and_then(|c| f(c, "net"));
                push(
                    &mut report,
                    RecordKind::Carbs,
                    net,
                    "g",
                    None,
                    "nutrition.carbohydrate.net",
                );
            }
            "insulin" => {
                let dose = o
                    .get("dose")
                    .and_then(Value::as_object)
                    .and_then(|d| f(d, "total"));
                let acting = o
                    .get("formulation")
                    .and_then(|x| x.get("simple"))
                    .and_then(|x| x.get("actingType"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let name = o
                    .get("formulation")
                    .and_then(|x| x.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let kind = if matches!(acting, "long" | "intermediate") {
                    RecordKind::LongActing
                } else {
                    RecordKind::Bolus
                };
                push(&mut report, kind, dose, "U", name, "dose.total");
            }
            other => *skipped.entry(other.to_string()).or_default() += 1,
        }
    }
    if extended > 0 {
        report.add("extended_at_start", extended);
        report.warn(file, None, format!("{extended} extended (square-wave) bolus parts imported as boluses at the bolus's start time"));
    }
    for (t, n) in skipped {
        report.add(&format!("skipped_type:{t}"), n);
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

    #[test]
    fn tidepool_export_maps_and_reports() {
        let data = r#"[
          {"type": "upload", "time": "2024-05-01T07:00:00.000Z", "deviceManufacturers": ["Dexcom"]},
          {"type": "cbg", "time": "2024-05-01T08:00:00.000Z", "units": "mmol/L", "value": 5.5},
          {"type": "cbg", "time": "2024-05-01T08:05:00Z", "units": "mg/dL", "value": 101},
          {"type": "smbg", "time": "2024-05-01T08:07:00Z", "units": "mmol/L", "value": 6.1},
          {"type": "basal", "deliveryType": "scheduled", "time": "2024-05-01T00:00:00Z", "rate": 0.85, "duration": 28800000},
          {"type": "basal", "deliveryType": "temp", "time": "2024-05-01T09:00:00Z", "rate": 0.4, "percent": 0.5},
          {"type": "basal", "deliveryType": "suspend", "time": "2024-05-01T10:00:00Z", "duration": 600000},
          {"type": "wizard", "time": "2024-05-01T12:00:00Z", "carbInput": 60, "units": "mmol/L"},
          {"type": "bolus", "subType": "dual/square", "time": "2024-05-01T12:00:00Z", "normal": 4, "extended": 2, "duration": 3600000},
          {"type": "food", "time": "2024-05-01T15:00:00Z", "nutrition": {"carbohydrate": {"net": 15, "units": "grams"}}},
          {"type": "insulin", "time": "2024-05-01T21:00:00Z", "dose": {"total": 20, "units": "Units"}, "formulation": {"name": "Tresiba", "simple": {"actingType": "long"}}},
          {"type": "cbg", "time": "2024-05-01T08:10:00Z", "units": "mmol/L"},
          {"type": "cbg", "value": 7.0},
          {"type": "cbg", "time": "2024-05-01T08:15:00Z", "units": "furlongs", "value": 7.0}
        ]"#;
        let (rec, rep) = tidepool_from_bytes(data.as_bytes(), "tp.json").unwrap();
        let got: Vec<(RecordKind, f64)> = rec
            .entries
            .iter()
            .map(|e| (e.kind, (e.value * 100.0).round() / 100.0))
            .collect();
        assert_eq!(
            got,
            vec![
                (RecordKind::BasalRate, 0.85),
                (RecordKind::Cgm, 99.09),
                (RecordKind::Cgm, 101.0),
                (RecordKind::Smbg, 109.9),
                (RecordKind::BasalRate, 0.4),
                (RecordKind::BasalRate, 0.0),
                (RecordKind::Carbs, 60.0),
                (RecordKind::Bolus, 4.0),
                (RecordKind::Bolus, 2.0),
                (RecordKind::Carbs, 15.0),
                (RecordKind::LongActing, 20.0),
            ]
        );
        assert_eq!(
            rec.entries.last().unwrap().insulin.as_deref(),
            Some("Tresiba")
        );
        assert_eq!(rep.count("extended_at_start"), 1);
        assert_eq!(rep.count("skipped_type:upload"), 1);
        let msgs: Vec<String> = rep.rejected.iter().map(|i| i.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("[11].value"), "{msgs:?}");
        assert!(
            msgs[1].contains("[12]") && msgs[1].contains("time"),
            "{msgs:?}"
        );
        assert!(msgs[2].contains("[13].units"), "{msgs:?}");
        // JSON lines read too; anything else is a clear error naming the file.
        let lines = "{\"type\": \"cbg\", \"time\": \"2024-05-01T08:00:00Z\", \"units\": \"mg/dL\", \"value\": 120}\n{\"type\": \"cbg\", \"time\": \"2024-05-01T08:05:00Z\", \"units\": \"mg/dL\", \"value\": 121}\n";
        assert_eq!(
            tidepool_from_bytes(lines.as_bytes(), "l.json")
                .unwrap()
                .0
                .entries
                .len(),
            2
        );
        let e = tidepool_from_bytes(b"time,kind\n1,2\n", "x.csv").unwrap_err();
        assert!(
            e.to_string().contains("x.csv") && e.to_string().contains("Tidepool"),
            "{e}"
        );
    }
}
