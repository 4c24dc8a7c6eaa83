//! FHIR R4 ingest: a `Bundle` of type `transaction` holding `Patient`, `Observation` and
//! `MedicationAdministration` resources (HL7 FHIR R4, <http://hl7.org/fhir/R4/>), read with
//! small serde structures for exactly the elements used; everything else in a resource is
//! ignored.
//!
//! ## Observation (`status` not `entered-in-error`/`cancelled`; `effectiveDateTime`,
//! `effectiveInstant` or `effectivePeriod` (its `start` is the datum's time) with a UTC offset; `valueQuantity` with `system`
//! `http://unitsofmeasure.org` and a UCUM `code`)
//!
//! | LOINC (`code.coding`, system `http://loinc.org`) | meaning | record kind | UCUM unit |
//! |---|---|---|---|
//! | 99504-3 | Glucose [Mass/volume] in Interstitial fluid (HL7 CGM IG) | `cgm` | `mg/dL` |
//! | 105272-9 | Glucose [Moles/volume] in Interstitial fluid (HL7 CGM IG) | `cgm` | `mmol/L` |
//! | 2339-0, 41653-7 | Glucose [Mass/volume] in Blood / Capillary blood by Glucometer | `smbg` | `mg/dL` |
//! | 15074-8, 14743-9 | Glucose [Moles/volume] in Blood / Capillary blood by Glucometer | `smbg` | `mmol/L` |
//! | 9059-7 | Carbohydrate intake Estimated | `carbs` | `g` |
//!
//! A mass-concentration code with a molar unit (or the reverse) is a **wrong unit** (400).
//!
//! ## MedicationAdministration (`status` `completed` or `in-progress`; `effectiveDateTime` or
//! `effectivePeriod.start`)
//!
//! * `dosage.rateQuantity` in `[IU]/h` (or `U/h`) → `basal_rate` (U/h);
//! * `dosage.dose` in `[IU]` (or `U`) → `long_acting` when the medication's text or coding
//!   display names a long-acting insulin (glargine, detemir, degludec, "long-acting"),
//!   otherwise `bolus` (U). The medication text (or first display) is kept as the insulin name.
//!
//! ## Patients and references
//!
//! `subject.reference` is `Patient/ID` or the `fullUrl` of a `Patient` entry in the same
//! bundle (e.g. `urn:uuid:…`). A `Patient` entry's id is its `id` (else its first
//! `identifier.value`); an unknown patient is created when the caller is an admin.
//!
//! `transaction`: any problem → HTTP 400 with an `OperationOutcome` listing every issue with
//! its `expression` (e.g. `Bundle.entry[3].resource.valueQuantity.code`); nothing is stored.
//! `batch`: each entry stands alone (FHIR batch semantics): the valid entries are stored and
//! the answer is a `batch-response` with `400 Bad Request` and an `OperationOutcome` for each
//! invalid one (problems of the bundle itself still refuse it whole).

use jiff::Timestamp;
use medtwin_io::{RecordEntry, RecordKind};
use medtwin_store::{NewDatum, Plausibility};
use serde::Deserialize;
use serde_json::{json, Value};

/// UCUM code system URI.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// LOINC code system URI.
pub const LOINC: &str = "http://loinc.org";

/// LOINC codes accepted for Observations: `(code, kind, required UCUM unit, display)`.
pub const OBSERVATION_CODES: &[(&str, RecordKind, &str, &str)] = &[
    (
        "99504-3",
        RecordKind::Cgm,
        "mg/dL",
        "Glucose [Mass/volume] in Interstitial fluid",
    ),
    (
        "105272-9",
        RecordKind::Cgm,
        "mmol/L",
        "Glucose [Moles/volume] in Interstitial fluid",
    ),
    (
        "2339-0",
        RecordKind::Smbg,
        "mg/dL",
        "Glucose [Mass/volume] in Blood",
    ),
    (
        "41653-7",
        RecordKind::Smbg,
        "mg/dL",
        "Glucose [Mass/volume] in Capillary blood by Glucometer",
    ),
    (
        "15074-8",
        RecordKind::Smbg,
        "mmol/L",
        "Glucose [Moles/volume] in Blood",
    ),
    (
        "14743-9",
        RecordKind::Smbg,
        "mmol/L",
        "Glucose [Moles/volume] in Capillary blood by Glucometer",
    ),
    (
        "9059-7",
        RecordKind::Carbs,
        "g",
        "Carbohydrate intake Estimated",
    ),
];

/// One problem in a bundle: FHIRPath-like location and a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirIssue {
    /// Where, e.g. `Bundle.entry[2].resource.valueQuantity.code`.
    pub expression: String,
    /// What is wrong.
    pub diagnostics: String,
    /// OperationOutcome issue type (`invalid`, `value`, `required`, `not-supported`, `security`).
    pub code: &'static str,
}

/// The patient id of one FHIR R4 `Patient` resource (`POST /fhir/Patient`): its `id`, else the
/// first `identifier[].value` (as for Patient entries of a bundle). Errors: every problem with
/// its element path (`Patient.resourceType`, `Patient.id`, `Patient.identifier[1].value`, …).
pub fn patient_id_of(r: &Value) -> Result<String, Vec<FhirIssue>> {
    let mut issues = Vec::new();
    let Some(obj) = r.as_object() else {
        return Err(vec![FhirIssue {
            expression: "Patient".into(),
            diagnostics: "the body must be a JSON object (a FHIR Patient resource)".into(),
            code: "structure",
        }]);
    };
    match obj.get("resourceType") {
        Some(Value::String(t)) if t == "Patient" => {}
        other => issues.push(FhirIssue {
            expression: "Patient.resourceType".into(),
            diagnostics: format!(
                "resourceType is {}, expected `Patient`",
                other
                    .map(Value::to_string)
                    .unwrap_or_else(|| "missing".into())
            ),
            code: "invalid",
        }),
    }
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(("Patient.id".to_string(), s.clone())),
        Some(v) => {
            issues.push(FhirIssue {
                expression: "Patient.id".into(),
                diagnostics: format!("id must be a string, not {v}"),
                code: "structure",
            });
            None
        }
    };
    let mut from_identifier = None;
    match obj.get("identifier") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) => {
            for (i, ident) in ids.iter().enumerate() {
                let at = format!("Patient.identifier[{i}]");
                match ident {
                    Value::Object(o) => match o.get("value") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(v)) => {
                            if from_identifier.is_none() {
                                from_identifier = Some((format!("{at}.value"), v.clone()));
                            }
                        }
                        Some(v) => issues.push(FhirIssue {
                            expression: format!("{at}.value"),
                            diagnostics: format!("identifier value must be a string, not {v}"),
                            code: "structure",
                        }),
                    },
                    v => issues.push(FhirIssue {
                        expression: at,
                        diagnostics: format!("an Identifier must be an object, not {v}"),
                        code: "structure",
                    }),
                }
            }
        }
        Some(v) => issues.push(FhirIssue {
            expression: "Patient.identifier".into(),
            diagnostics: format!("identifier must be an array of Identifier, not {v}"),
            code: "structure",
        }),
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    match id.or(from_identifier) {
        Some((_, id)) if medtwin_store::valid_patient_id(&id) => Ok(id),
        Some((at, id)) => Err(vec![FhirIssue {
            expression: at,
            diagnostics: format!(
                "patient id `{}` must be 1-64 characters of A-Z a-z 0-9 . _ -",
                id.chars().take(100).collect::<String>()
            ),
            code: "value",
        }]),
        None => Err(vec![FhirIssue {
            expression: "Patient.id".into(),
            diagnostics:
                "Patient needs an id or an identifier value (the patient's id on this server)"
                    .into(),
            code: "required",
        }]),
    }
}

/// An `OperationOutcome` resource listing `issues` (severity `error`).
pub fn operation_outcome(issues: &[FhirIssue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(|i| json!({
            "severity": "error",
            "code": i.code,
            "diagnostics": i.diagnostics,
            "expression": [i.expression],
        })).collect::<Vec<_>>()
    })
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    entry: Vec<BundleEntry>,
}

#[derive(Deserialize)]
struct BundleEntry {
    #[serde(rename = "fullUrl")]
    full_url: Option<String>,
    resource: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Coding {
    system: Option<String>,
    code: Option<String>,
    display: Option<String>,
}

#[derive(Deserialize, Default)]
struct CodeableConcept {
    #[serde(default)]
    coding: Vec<Coding>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Reference {
    reference: Option<String>,
}

#[derive(Deserialize)]
struct Quantity {
    value: Option<f64>,
    unit: Option<String>,
    system: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct Identifier {
    value: Option<String>,
}

#[derive(Deserialize)]
struct Patient {
    id: Option<String>,
    #[serde(default)]
    identifier: Vec<Identifier>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Observation {
    status: Option<String>,
    code: Option<CodeableConcept>,
    subject: Option<Reference>,
    effective_date_time: Option<String>,
    effective_instant: Option<String>,
    effective_period: Option<Period>,
    value_quantity: Option<Quantity>,
}

#[derive(Deserialize)]
struct Period {
    start: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dosage {
    dose: Option<Quantity>,
    rate_quantity: Option<Quantity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MedicationAdministration {
    status: Option<String>,
    medication_codeable_concept: Option<CodeableConcept>,
    subject: Option<Reference>,
    effective_date_time: Option<String>,
    effective_period: Option<Period>,
    dosage: Option<Dosage>,
}

/// What a valid bundle holds.
#[derive(Debug, Clone, Default)]
pub struct ParsedBundle {
    /// Patient ids declared by `Patient` entries.
    pub patients: Vec<String>,
    /// Data, each tagged with its patient.
    pub data: Vec<NewDatum>,
    /// For each datum, the index of its bundle entry.
    pub entry_of: Vec<usize>,
    /// Number of entries.
    pub n_entries: usize,
    /// Patient id of each Patient entry (by entry index).
    pub patient_entries: Vec<(usize, String)>,
    /// `Bundle.type` is `batch`: entries stand alone (see [`parse_bundle_entries`]).
    pub batch: bool,
}

/// The bundle entry an issue is about (`Bundle.entry[i]…`), if any.
pub fn issue_entry(issue: &FhirIssue) -> Option<usize> {
    issue
        .expression
        .strip_prefix("Bundle.entry[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

/// Parse and validate a FHIR transaction bundle (`body`: JSON bytes) received at
/// `received`, with the plausibility `limits` (times, doses). Returns every problem found
/// (not only the first) on failure: all-or-nothing, as a `transaction` requires.
pub fn parse_bundle(
    body: &[u8],
    received: Timestamp,
    limits: &Plausibility,
) -> Result<ParsedBundle, Vec<FhirIssue>> {
    match parse_bundle_entries(body, received, limits)? {
        (p, issues) if issues.is_empty() => Ok(p),
        (_, issues) => Err(issues),
    }
}

/// [`parse_bundle`] entry by entry: the data of the valid entries, and the problems of the
/// others (each expression names its `Bundle.entry[i]`; see [`issue_entry`]), for a `batch`
/// whose valid entries are stored on their own. Problems of the bundle itself (not JSON, not
/// a Bundle, wrong `Bundle.type`) are the error.
pub fn parse_bundle_entries(
    body: &[u8],
    received: Timestamp,
    limits: &Plausibility,
) -> Result<(ParsedBundle, Vec<FhirIssue>), Vec<FhirIssue>> {
    let bundle: Bundle = serde_json::from_slice(body).map_err(|e| {
        vec![FhirIssue {
            expression: "Bundle".into(),
            diagnostics: format!("not a FHIR JSON Bundle: {e}"),
            code: "invalid",
        }]
    })?;
    let mut issues = Vec::new();
    let issue = |issues: &mut Vec<FhirIssue>, expr: String, code: &'static str, msg: String| {
        issues.push(FhirIssue {
            expression: expr,
            diagnostics: msg,
            code,
        })
    };
    if bundle.resource_type != "Bundle" {
        issue(
            &mut issues,
            "resourceType".into(),
            "invalid",
            format!(
                "resourceType is `{}`, expected `Bundle`",
                bundle.resource_type
            ),
        );
    }
    if bundle.ty.as_deref() != Some("transaction") && bundle.ty.as_deref() != Some("batch") {
        issue(
            &mut issues,
            "Bundle.type".into(),
            "value",
            match &bundle.ty {
                Some(t) => format!(
                    "Bundle.type is `{t}`; only `transaction` (all-or-nothing) or `batch` (each entry on its own) is accepted"
                ),
                None => "Bundle.type is missing; `transaction` or `batch` is required".to_string(),
            },
        );
    }
    let mut out = ParsedBundle {
        n_entries: bundle.entry.len(),
        batch: bundle.ty.as_deref() == Some("batch"),
        ..ParsedBundle::default()
    };
    // First pass: patients (so observations may reference them by fullUrl).
    let mut full_urls: Vec<(String, String)> = Vec::new();
    for (i, e) in bundle.entry.iter().enumerate() {
        let Some(r) = &e.resource else { continue };
        if r.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            continue;
        }
        let at = format!("Bundle.entry[{i}].resource");
        match serde_json::from_value::<Patient>(r.clone()) {
            Err(err) => issue(
                &mut issues,
                at,
                "invalid",
                format!("invalid Patient: {err}"),
            ),
            Ok(p) => {
                let id =
                    p.id.clone()
                        .or_else(|| p.identifier.iter().find_map(|i| i.value.clone()));
                match id {
                    Some(id) if medtwin_store::valid_patient_id(&id) => {
                        if let Some(u) = &e.full_url {
                            full_urls.push((u.clone(), id.clone()));
                        }
                        if !out.patients.contains(&id) {
                            out.patients.push(id.clone());
                        }
                        out.patient_entries.push((i, id));
                    }
                    Some(id) => issue(
                        &mut issues,
                        format!("{at}.id"),
                        "value",
                        format!("patient id `{id}` must be 1-64 characters of A-Z a-z 0-9 . _ -"),
                    ),
                    None => issue(
                        &mut issues,
                        format!("{at}.id"),
                        "required",
                        "Patient needs an id or an identifier value".into(),
                    ),
                }
            }
        }
    }
    let resolve = |r: &Option<Reference>| -> Result<String, String> {
        let s = r
            .as_ref()
            .and_then(|r| r.reference.clone())
            .ok_or_else(|| "subject.reference is required".to_string())?;
        if let Some((_, id)) = full_urls.iter().find(|(u, _)| *u == s) {
            return Ok(id.clone());
        }
        match s.strip_prefix("Patient/") {
            Some(id) if medtwin_store::valid_patient_id(id) => Ok(id.to_string()),
            _ => Err(format!(
                "subject.reference `{s}` is neither Patient/ID nor the fullUrl of a Patient entry"
            )),
        }
    };
    let parse_time = |s: &Option<String>| -> Result<Timestamp, String> {
        let s = s.as_deref().ok_or("effective time is required")?;
        let t: Timestamp = s.parse().map_err(|_| {
            format!("time `{s}` is not a FHIR dateTime with hours, minutes and a UTC offset")
        })?;
        limits.check_time(t, received)?;
        Ok(t)
    };
    for (i, e) in bundle.entry.iter().enumerate() {
        let at = format!("Bundle.entry[{i}].resource");
        let Some(r) = &e.resource else {
            issue(
                &mut issues,
                format!("Bundle.entry[{i}]"),
                "required",
                "entry without a resource".into(),
            );
            continue;
        };
        let rt = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
        let source = format!(
            "fhir:{}",
            e.full_url
                .clone()
                .unwrap_or_else(|| format!("Bundle.entry[{i}]"))
        );
        match rt {
            "Patient" => {}
            "Observation" => {
                let o: Observation = match serde_json::from_value(r.clone()) {
                    Ok(o) => o,
                    Err(err) => {
                        issue(&mut issues, at, "invalid", format!("invalid Observation: {err}"));
                        continue;
                    }
                };
                match o.status.as_deref() {
                    None => {
                        issue(&mut issues, format!("{at}.status"), "required", "Observation.status is required".into());
                        continue;
                    }
                    Some("entered-in-error") | Some("cancelled") => {
                        issue(&mut issues, format!("{at}.status"), "value", format!("status `{}` cannot be ingested", o.status.unwrap_or_default()));
                        continue;
                    }
                    _ => {}
                }
                let codes = o.code.unwrap_or_default();
                let found = codes.coding.iter().find_map(|c| {
                    if c.system.as_deref() != Some(LOINC) {
                        return None;
                    }
                    OBSERVATION_CODES
                        .iter()
                        .find(|x| Some(x.0) == c.code.as_deref())
                });
                let Some(&(loinc, kind, unit, display)) = found else {
                    let seen: Vec<String> = codes
                        .coding
                        .iter()
                        .map(|c| format!("{}|{}", c.system.as_deref().unwrap_or(""), c.code.as_deref().unwrap_or("")))
                        .collect();
                    let known: Vec<&str> = OBSERVATION_CODES.iter().map(|x| x.0).collect();
                    issue(
                        &mut issues,
                        format!("{at}.code"),
                        "not-supported",
                        format!("no supported LOINC code (found [{}]; supported {LOINC} codes: {})", seen.join(", "), known.join(", ")),
                    );
                    continue;
                };
                let patient = match resolve(&o.subject) {
                    Ok(p) => p,
                    Err(m) => {
                        issue(&mut issues, format!("{at}.subject"), "required", m);
                        continue;
                    }
                };
                // A period (e.g. a CGM IG summary) counts at its start.
                let period_start = o.effective_period.as_ref().and_then(|p| p.start.clone());
                let (eff, eff_path) = if o.effective_date_time.is_some() {
                    (o.effective_date_time.clone(), "effectiveDateTime")
                } else if o.effective_instant.is_some() {
                    (o.effective_instant.clone(), "effectiveInstant")
                } else if o.effective_period.is_some() {
                    (period_start, "effectivePeriod.start")
                } else {
                    (None, "effectiveDateTime")
                };
                let time = match parse_time(&eff) {
                    Ok(t) => t,
                    Err(m) => {
                        issue(&mut issues, format!("{at}.{eff_path}"), "value", m);
                        continue;
                    }
                };
                let Some(q) = o.value_quantity else {
                    issue(&mut issues, format!("{at}.valueQuantity"), "required", "valueQuantity is required".into());
                    continue;
                };
                let (v, code) = match quantity(&q) {
                    Ok(x) => x,
                    Err(m) => {
                        issue(&mut issues, format!("{at}.valueQuantity"), "value", m);
                        continue;
                    }
                };
                let ok_unit = code == unit || (kind.is_glucose() && code.eq_ignore_ascii_case(unit));
                if !ok_unit {
                    issue(
                        &mut issues,
                        format!("{at}.valueQuantity.code"),
                        "value",
                        format!("wrong unit `{code}` for LOINC {loinc} ({display}): expected UCUM `{unit}`"),
                    );
                    continue;
                }
                match RecordEntry::new(time, kind, v, unit, None, source) {
                    Ok(entry) => {
                        if let Err(m) = limits.check_value(entry.kind, entry.value) {
                            issue(&mut issues, format!("{at}.valueQuantity.value"), "value", m);
                            continue;
                        }
                        out.data.push(NewDatum { patient_id: patient, entry, source_unit: code });
                        out.entry_of.push(i);
                    }
                    Err(err) => issue(&mut issues, format!("{at}.valueQuantity.value"), "value", err.reason),
                }
            }
            "MedicationAdministration" => {
                let m: MedicationAdministration = match serde_json::from_value(r.clone()) {
                    Ok(m) => m,
                    Err(err) => {
                        issue(&mut issues, at, "invalid", format!("invalid MedicationAdministration: {err}"));
                        continue;
                    }
                };
                match m.status.as_deref() {
                    Some("completed") | Some("in-progress") => {}
                    other => {
                        issue(&mut issues, format!("{at}.status"), "value", format!("status {other:?} cannot be ingested (expected completed or in-progress)"));
                        continue;
                    }
                }
                let patient = match resolve(&m.subject) {
                    Ok(p) => p,
                    Err(msg) => {
                        issue(&mut issues, format!("{at}.subject"), "required", msg);
                        continue;
                    }
                };
                let (eff, eff_path) = if m.effective_date_time.is_some() || m.effective_period.is_none() {
                    (m.effective_date_time.clone(), "effectiveDateTime")
                } else {
                    (m.effective_period.as_ref().and_then(|p| p.start.clone()), "effectivePeriod.start")
                };
                let time = match parse_time(&eff) {
                    Ok(t) => t,
                    Err(msg) => {
                        issue(&mut issues, format!("{at}.{eff_path}"), "value", msg);
                        continue;
                    }
                };
                let med = m.medication_codeable_concept.unwrap_or_default();
                let name = med
                    .text
                    .clone()
                    .or_else(|| med.coding.iter().find_map(|c| c.display.clone()));
                let long_acting = name.as_deref().is_some_and(|n| {
                    let n = n.to_ascii_lowercase();
                    ["glargine", "detemir", "degludec", "long-acting", "long acting"]
                        .iter()
                        .any(|k| n.contains(k))
                });
                let Some(d) = m.dosage else {
                    issue(&mut issues, format!("{at}.dosage"), "required", "dosage with dose or rateQuantity is required".into());
                    continue;
                };
                let (kind, q, path, units): (RecordKind, Quantity, &str, &[&str]) =
                    match (d.rate_quantity, d.dose) {
                        (Some(rq), _) => (RecordKind::BasalRate, rq, "dosage.rateQuantity", &["[IU]/h", "[iU]/h", "U/h"]),
                        (None, Some(dq)) => (
                            if long_acting { RecordKind::LongActing } else { RecordKind::Bolus },
                            dq,
                            "dosage.dose",
                            &["[IU]", "[iU]", "U"],
                        ),
                        (None, None) => {
                            issue(&mut issues, format!("{at}.dosage"), "required", "dosage needs dose or rateQuantity".into());
                            continue;
                        }
                    };
                let (v, code) = match quantity(&q) {
                    Ok(x) => x,
                    Err(msg) => {
                        issue(&mut issues, format!("{at}.{path}"), "value", msg);
                        continue;
                    }
                };
                if !units.contains(&code.as_str()) {
                    issue(
                        &mut issues,
                        format!("{at}.{path}.code"),
                        "value",
                        format!("wrong unit `{code}` for {kind}: expected UCUM {}", units.join(" or ")),
                    );
                    continue;
                }
                match RecordEntry::new(time, kind, v, kind.canonical_unit(), name, source) {
                    Ok(entry) => {
                        if let Err(m) = limits.check_value(entry.kind, entry.value) {
                            issue(&mut issues, format!("{at}.{path}.value"), "value", m);
                            continue;
                        }
                        out.data.push(NewDatum { patient_id: patient, entry, source_unit: code });
                        out.entry_of.push(i);
                    }
                    Err(err) => issue(&mut issues, format!("{at}.{path}.value"), "value", err.reason),
                }
            }
            other => issue(
                &mut issues,
                format!("{at}.resourceType"),
                "not-supported",
                format!("resource type `{other}` is not accepted (Patient, Observation, MedicationAdministration)"),
            ),
        }
    }
    if issues.iter().any(|i| issue_entry(i).is_none()) {
        Err(issues)
    } else {
        Ok((out, issues))
    }
}

/// A UCUM quantity's value and code. Errors: missing value, non-UCUM system, missing code.
fn quantity(q: &Quantity) -> Result<(f64, String), String> {
    let v = q.value.ok_or("value is required")?;
    if q.system.as_deref() != Some(UCUM) {
        return Err(format!(
            "system is {:?}; units must be UCUM (system {UCUM}) (unit text {:?})",
            q.system, q.unit
        ));
    }
    let code = q.code.clone().ok_or("UCUM code is required")?;
    Ok((v, code))
}

/// A FHIR transaction bundle for a patient's record entries (what `medtwin push` sends):
/// glucose and carbs as Observations with the LOINC codes above, insulin as
/// MedicationAdministrations. The Patient entry comes first.
pub fn bundle_of(patient: &str, entries: &[RecordEntry]) -> Value {
    let mut list = vec![json!({
        "fullUrl": format!("urn:medtwin:patient:{patient}"),
        "resource": {"resourceType": "Patient", "id": patient},
        "request": {"method": "PUT", "url": format!("Patient/{patient}")}
    })];
    for e in entries {
        let t = e.time.to_string();
        let subject = json!({"reference": format!("Patient/{patient}")});
        let resource = match e.kind {
            RecordKind::Cgm | RecordKind::Smbg | RecordKind::Carbs => {
                let (code, unit) = match (e.kind, e.unit.to_ascii_lowercase().as_str()) {
                    (RecordKind::Cgm, "mmol/l") => ("105272-9", "mmol/L"),
                    (RecordKind::Cgm, _) => ("99504-3", "mg/dL"),
                    (RecordKind::Smbg, "mmol/l") => ("15074-8", "mmol/L"),
                    (RecordKind::Smbg, _) => ("2339-0", "mg/dL"),
                    _ => ("9059-7", "g"),
                };
                json!({
                    "resourceType": "Observation", "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": code}]},
                    "subject": subject, "effectiveDateTime": t,
                    "valueQuantity": {"value": e.original_value, "unit": unit, "system": UCUM, "code": unit}
                })
            }
            RecordKind::Bolus | RecordKind::LongActing | RecordKind::BasalRate => {
                let name = e.insulin.clone().unwrap_or_else(|| {
                    if e.kind == RecordKind::LongActing {
                        "long-acting insulin".into()
                    } else {
                        "insulin".into()
                    }
                });
                let dosage = if e.kind == RecordKind::BasalRate {
                    json!({"rateQuantity": {"value": e.original_value, "unit": "U/h", "system": UCUM, "code": "[IU]/h"}})
                } else {
                    json!({"dose": {"value": e.original_value, "unit": "U", "system": UCUM, "code": "[IU]"}})
                };
                let name = if e.kind == RecordKind::LongActing
                    && !name.to_ascii_lowercase().contains("long")
                    && !["glargine", "detemir", "degludec"]
                        .iter()
                        .any(|k| name.to_ascii_lowercase().contains(k))
                {
                    format!("{name} (long-acting)")
                } else {
                    name
                };
                json!({
                    "resourceType": "MedicationAdministration", "status": "completed",
                    "medicationCodeableConcept": {"text": name},
                    "subject": subject, "effectiveDateTime": t, "dosage": dosage
                })
            }
        };
        list.push(json!({"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": list})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-02T00:00:00Z".parse().unwrap()
    }

    /// A bundle shaped like the HL7 CGM IG's data-submission examples: a Patient referenced by
    /// `urn:uuid` fullUrl, a CGM Observation with category, device, narrative and other
    /// elements this server ignores.
    #[test]
    fn cgm_ig_style_bundle_with_fullurl_reference() {
        let b = json!({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [
                {"fullUrl": "urn:uuid:6f1c", "resource": {"resourceType": "Patient", "identifier": [{"system": "http://example.org", "value": "amy-1"}], "gender": "female"},
                 "request": {"method": "POST", "url": "Patient"}},
                {"fullUrl": "urn:uuid:9a2b", "resource": {"resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3", "display": "Glucose [Mass/volume] in Interstitial fluid"}]},
                    "subject": {"reference": "urn:uuid:6f1c"}, "effectiveDateTime": "2026-01-01T08:00:00-05:00",
                    "valueQuantity": {"value": 145, "unit": "mg/dl", "system": "http://unitsofmeasure.org", "code": "mg/dL"}},
                 "request": {"method": "POST", "url": "Observation"}}
            ]
        });
        let p = parse_bundle(b.to_string().as_bytes(), now(), &Plausibility::default()).unwrap();
        assert_eq!(p.patients, vec!["amy-1".to_string()]);
        assert_eq!(p.data.len(), 1);
        let d = &p.data[0];
        assert_eq!(d.patient_id, "amy-1");
        assert_eq!(d.entry.kind, RecordKind::Cgm);
        assert_eq!(d.entry.value, 145.0);
        assert_eq!(
            d.entry.time,
            "2026-01-01T13:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(d.entry.source, "fhir:urn:uuid:9a2b");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let obs = |code: &str, unit: &str, t: &str, v: f64| {
            json!({"resource": {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": "Patient/p"},
                "effectiveDateTime": t, "valueQuantity": {"value": v, "system": UCUM, "code": unit}}})
        };
        let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            obs("99504-3", "mg/dL", "2026-01-01T08:00:00Z", 120.0),
            obs("99504-3", "mmol/L", "2026-01-01T08:05:00Z", 7.0),
            obs("99504-3", "mg/dL", "2026-01-03T08:05:00Z", 120.0),
            obs("99504-3", "mg/dL", "2026-01-01T08:10:00", 120.0),
            obs("1234-5", "mg/dL", "2026-01-01T08:15:00Z", 120.0),
            obs("2339-0", "mg/dL", "2026-01-01T08:20:00Z", 5000.0),
            {"resource": {"resourceType": "Condition"}}
        ]});
        let issues =
            parse_bundle(b.to_string().as_bytes(), now(), &Plausibility::default()).unwrap_err();
        let at: Vec<&str> = issues.iter().map(|i| i.expression.as_str()).collect();
        assert_eq!(
            at,
            vec![
                "Bundle.entry[1].resource.valueQuantity.code",
                "Bundle.entry[2].resource.effectiveDateTime",
                "Bundle.entry[3].resource.effectiveDateTime",
                "Bundle.entry[4].resource.code",
                "Bundle.entry[5].resource.valueQuantity.value",
                "Bundle.entry[6].resource.resourceType",
            ]
        );
        assert!(issues[1].diagnostics.contains("in the future"));
        let oo = operation_outcome(&issues);
        assert_eq!(oo["issue"].as_array().unwrap().len(), 6);
    }

    /// Far-past times and implausible doses are refused with their element paths.
    #[test]
    fn implausible_times_and_doses_are_refused_with_their_paths() {
        let obs = |t: &str, code: &str, unit: &str, v: f64| {
            json!({"resource": {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": "Patient/p"},
                "effectiveDateTime": t, "valueQuantity": {"value": v, "system": UCUM, "code": unit}}})
        };
        let med = |dosage: Value| {
            json!({"resource": {"resourceType": "MedicationAdministration", "status": "completed",
                "medicationCodeableConcept": {"text": "aspart"}, "subject": {"reference": "Patient/p"},
                "effectivePeriod": {"start": "2026-01-01T08:00:00Z"}, "dosage": dosage}})
        };
        let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            obs("2026-01-01T08:00:00Z", "99504-3", "mg/dL", 120.0),
            obs("1900-01-01T00:00:00Z", "99504-3", "mg/dL", 120.0),
            obs("0001-01-01T00:00:00Z", "99504-3", "mg/dL", 120.0),
            obs("1999-12-31T23:59:59Z", "99504-3", "mg/dL", 120.0),
            med(json!({"dose": {"value": 1_000_000.0, "system": UCUM, "code": "[IU]"}})),
            med(json!({"rateQuantity": {"value": 500.0, "system": UCUM, "code": "[IU]/h"}})),
            obs("2026-01-01T08:00:00Z", "9059-7", "g", 1e9),
            obs("2000-01-01T00:00:00Z", "99504-3", "mg/dL", 120.0),
            med(json!({"dose": {"value": 100.0, "system": UCUM, "code": "[IU]"}})),
        ]});
        let issues =
            parse_bundle(b.to_string().as_bytes(), now(), &Plausibility::default()).unwrap_err();
        let at: Vec<&str> = issues.iter().map(|i| i.expression.as_str()).collect();
        assert_eq!(
            at,
            vec![
                "Bundle.entry[1].resource.effectiveDateTime",
                "Bundle.entry[2].resource.effectiveDateTime",
                "Bundle.entry[3].resource.effectiveDateTime",
                "Bundle.entry[4].resource.dosage.dose.value",
                "Bundle.entry[5].resource.dosage.rateQuantity.value",
                "Bundle.entry[6].resource.valueQuantity.value",
            ]
        );
        assert!(issues[0]
            .diagnostics
            .contains("before the earliest plausible time"));
        assert!(
            issues[3].diagnostics.contains("limit 100"),
            "{:?}",
            issues[3]
        );
    }

    #[test]
    fn batch_entries_stand_alone() {
        let obs = |t: &str| {
            json!({"resource": {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "99504-3"}]}, "subject": {"reference": "Patient/p"},
                "effectiveDateTime": t, "valueQuantity": {"value": 100.0, "system": UCUM, "code": "mg/dL"}}})
        };
        let b = |ty: Option<&str>| {
            let mut b = json!({"resourceType": "Bundle", "entry": [
                obs("2026-01-01T08:00:00Z"), obs("1900-01-01T00:00:00Z"), obs("2026-01-01T08:05:00Z")]});
            if let Some(t) = ty {
                b["type"] = json!(t);
            }
            b.to_string()
        };
        let lim = Plausibility::default();
        let (p, issues) = parse_bundle_entries(b(Some("batch")).as_bytes(), now(), &lim).unwrap();
        assert!(p.batch);
        assert_eq!(p.entry_of, vec![0, 2]);
        assert_eq!(issues.len(), 1);
        assert_eq!(issue_entry(&issues[0]), Some(1));
        assert!(parse_bundle(b(Some("batch")).as_bytes(), now(), &lim).is_err());
        let e = parse_bundle_entries(b(None).as_bytes(), now(), &lim).unwrap_err();
        assert_eq!(
            e[0].diagnostics,
            "Bundle.type is missing; `transaction` or `batch` is required"
        );
        assert!(!e.iter().any(|i| i.diagnostics.contains("None")));
    }

    #[test]
    fn push_bundles_parse_back() {
        let t: Timestamp = "2026-01-01T08:00:00Z".parse().unwrap();
        let es = vec![
            RecordEntry::new(t, RecordKind::Cgm, 6.5, "mmol/L", None, "x").unwrap(),
            RecordEntry::new(t, RecordKind::Bolus, 4.0, "U", None, "x").unwrap(),
            RecordEntry::new(
                t,
                RecordKind::LongActing,
                14.0,
                "U",
                Some("glargine".into()),
                "x",
            )
            .unwrap(),
            RecordEntry::new(t, RecordKind::BasalRate, 0.9, "U/h", None, "x").unwrap(),
            RecordEntry::new(t, RecordKind::Carbs, 40.0, "g", None, "x").unwrap(),
            RecordEntry::new(t, RecordKind::Smbg, 110.0, "mg/dL", None, "x").unwrap(),
        ];
        let b = bundle_of("p1", &es);
        let p = parse_bundle(b.to_string().as_bytes(), now(), &Plausibility::default()).unwrap();
        let got: Vec<(RecordKind, f64, String)> = p
            .data
            .iter()
            .map(|d| (d.entry.kind, d.entry.original_value, d.entry.unit.clone()))
            .collect();
        let want: Vec<(RecordKind, f64, String)> = es
            .iter()
            .map(|e| (e.kind, e.original_value, e.unit.clone()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(p.data[1].source_unit, "[IU]");
    }
}
