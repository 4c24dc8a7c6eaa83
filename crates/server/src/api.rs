//! REST handlers and the router; the OpenAPI document is generated from these handlers'
//! `#[utoipa::path]` annotations (`GET /openapi.json`).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use medtwin_io::{RecordKind, T1D_UOM_CITATION};
use medtwin_store::{DatumStatus, NewDatum, OnConflict, Principal, Role};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::live::{ForecastDoc, LiveStats, WhatifRequest, WhatifResponse};
use crate::{audit, audit_entry, authenticate, check_access, fhir, Access, ApiError, AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "medtwin twin server",
        description = "Medical digital twins: FHIR R4 and Nightscout ingest, live T1D twins, forecasts, what-if plans. Research software, not a medical device."
    ),
    components(schemas(ForecastDoc, WhatifRequest, WhatifResponse, LiveStats))
)]
struct ApiDoc;

/// The full router: API (with `/openapi.json`), dashboard, body-size limit.
pub fn router(state: AppState) -> axum::Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_patient, list_patients))
        .routes(routes!(get_forecast))
        .routes(routes!(post_whatif))
        .routes(routes!(get_twin))
        .routes(routes!(fhir_bundle))
        .routes(routes!(fhir_observation))
        .routes(routes!(fhir_patient_create))
        .routes(routes!(fhir_patient_read))
        .routes(routes!(ns_post_entries))
        .routes(routes!(ns_post_treatments))
        .routes(routes!(ns_post_profile))
        .routes(routes!(ns_get_entries))
        .routes(routes!(get_audit))
        .routes(routes!(health))
        .split_for_parts();
    let doc_json = doc.to_pretty_json().unwrap_or_else(|_| "{}".into());
    let max = state.cfg.max_body_bytes;
    api.route(
        "/ns/{patient_id}/api/v1/entries.json",
        get(ns_get_entries).post(ns_post_entries),
    )
    .route(
        "/ns/{patient_id}/api/v1/treatments.json",
        axum::routing::post(ns_post_treatments),
    )
    .route(
        "/ns/{patient_id}/api/v1/profile.json",
        axum::routing::post(ns_post_profile),
    )
    .route(
        "/openapi.json",
        get(move || async move {
            ([("content-type", "application/json")], doc_json.clone()).into_response()
        }),
    )
    .merge(crate::dashboard::routes())
    .layer(DefaultBodyLimit::max(max))
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        std::time::Duration::from_secs_f64(state.cfg.request_timeout_s),
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::guard::middleware,
    ))
    .layer(axum::middleware::map_response(nosniff))
    .with_state(state)
}

/// `X-Content-Type-Options: nosniff` on every answer (JSON included).
async fn nosniff(mut r: Response) -> Response {
    r.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Body of `POST /patients`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPatient {
    /// Identifier: 1–64 characters of `A–Z a–z 0–9 . _ -`.
    pub id: String,
}

/// A patient as listed by `GET /patients`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientListItem {
    /// Identifier.
    pub id: String,
    /// Number of CGM readings stored.
    pub n_cgm: i64,
    /// Latest CGM reading, mg/dL.
    pub latest_glucose_mg_dl: Option<f64>,
    /// Time of the latest CGM reading (RFC 3339).
    pub latest_glucose_time: Option<String>,
    /// Twin status: `none`, `waiting`, `ok`, `failed`.
    pub twin_status: String,
    /// P(< 70 mg/dL) of the latest forecast.
    pub p_below_70: Option<f64>,
    /// P(> 250 mg/dL) of the latest forecast.
    pub p_above_250: Option<f64>,
    /// Data time of the latest forecast (RFC 3339).
    pub forecast_data_time: Option<String>,
}

/// Parse a JSON body with a clear 400 (line and column) on failure.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

fn ts_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Answer `r`, auditing it (action, patient, status; the error reason as detail).
async fn audited(
    state: &AppState,
    who: Option<&Principal>,
    action: &str,
    patient: Option<&str>,
    r: Result<Response, ApiError>,
) -> Response {
    match r {
        Ok(resp) => {
            audit(state, who, action, patient, resp.status(), "").await;
            resp
        }
        Err(e) => {
            audit(state, who, action, patient, e.status, &e.reason).await;
            e.into_response()
        }
    }
}

/// Create a patient (admin).
#[utoipa::path(post, path = "/patients", request_body = NewPatient,
    responses((status = 201, description = "created"), (status = 200, description = "already existed"),
        (status = 400, description = "invalid id"), (status = 401), (status = 403)))]
async fn create_patient(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = "POST /patients";
    let who = match authenticate(&state, &headers).await {
        Ok(p) => p,
        Err(e) => return audited(&state, None, action, None, Err(e)).await,
    };
    let np: NewPatient = match parse_json(&body) {
        Ok(p) => p,
        Err(e) => return audited(&state, Some(&who), action, None, Err(e)).await,
    };
    let pid = np.id.clone();
    if who.role != Role::Admin {
        let e = ApiError::forbidden("only an admin token may create patients");
        return audited(&state, Some(&who), action, Some(&pid), Err(e)).await;
    }
    let entry = audit_entry(Some(&who), action, Some(&pid), StatusCode::CREATED, "");
    match state.store.create_patient(&pid, &entry).await {
        Ok(true) => (StatusCode::CREATED, Json(json!({"id": pid}))).into_response(),
        Ok(false) => (StatusCode::OK, Json(json!({"id": pid, "existed": true}))).into_response(),
        Err(e) => audited(&state, Some(&who), action, Some(&pid), Err(e.into())).await,
    }
}

/// Patients visible to the token (admin: all; clinician: assigned).
pub async fn visible_patients(
    state: &AppState,
    who: &Principal,
) -> Result<Vec<PatientListItem>, ApiError> {
    let all = state.store.list_patients().await?;
    let mut out = Vec::new();
    for p in all {
        if who.role != Role::Admin && !who.patients.contains(&p.id) {
            continue;
        }
        let twin = state.store.load_twin(&p.id).await?;
        let fc = state.store.load_forecast(&p.id).await?;
        let doc: Option<ForecastDoc> = fc.as_ref().and_then(|f| serde_json::from_str(&f.doc).ok());
        out.push(PatientListItem {
            n_cgm: p.n_cgm,
            latest_glucose_mg_dl: p.latest_cgm.map(|c| c.1),
            latest_glucose_time: p.latest_cgm.map(|c| ts_ms(c.0)),
            twin_status: twin.map(|t| t.status).unwrap_or_else(|| "none".into()),
            p_below_70: doc.as_ref().map(|d| d.p_below_70),
            p_above_250: doc.as_ref().map(|d| d.p_above_250),
            forecast_data_time: doc.map(|d| d.data_time),
            id: p.id,
        });
    }
    Ok(out)
}

/// List patients visible to the token.
#[utoipa::path(get, path = "/patients",
    responses((status = 200, body = [PatientListItem]), (status = 401), (status = 403)))]
async fn list_patients(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let action = "GET /patients";
    let who = match authenticate(&state, &headers).await {
        Ok(p) => p,
        Err(e) => return audited(&state, None, action, None, Err(e)).await,
    };
    let r = async {
        if who.role == Role::Device {
            return Err(ApiError::forbidden(
                "a device token may only upload data (ingest-only)",
            ));
        }
        Ok(Json(visible_patients(&state, &who).await?).into_response())
    }
    .await;
    audited(&state, Some(&who), action, None, r).await
}

/// Authenticate and check access to a patient; audits refusals.
async fn gate(
    state: &AppState,
    headers: &HeaderMap,
    action: &str,
    pid: &str,
    access: Access,
) -> Result<Principal, Response> {
    let who = match authenticate(state, headers).await {
        Ok(p) => p,
        Err(e) => return Err(audited(state, None, action, Some(pid), Err(e)).await),
    };
    if let Err(e) = check_access(&who, pid, access) {
        return Err(audited(state, Some(&who), action, Some(pid), Err(e)).await);
    }
    match state.store.patient_exists(pid).await {
        Ok(true) => Ok(who),
        Ok(false) => {
            let e = ApiError::not_found(format!("unknown patient `{pid}`"));
            Err(audited(state, Some(&who), action, Some(pid), Err(e)).await)
        }
        Err(e) => Err(audited(state, Some(&who), action, Some(pid), Err(e.into())).await),
    }
}

/// The latest forecast of a patient: per-minute bands, P(<70), P(>250), and the data time it
/// is based on. 404 while the twin waits for its calibration window.
#[utoipa::path(get, path = "/patients/{id}/forecast", params(("id" = String, Path, description = "patient id")),
    responses((status = 200, body = ForecastDoc), (status = 404, description = "no forecast yet (reason given)"), (status = 401), (status = 403)))]
async fn get_forecast(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let action = "GET /patients/{id}/forecast";
    let who = match gate(&state, &headers, action, &id, Access::Read).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let r = async {
        let fc = state
            .live
            .current_forecast(&state.store, &state.cfg, &id)
            .await
            .map_err(ApiError::internal)?;
        match fc {
            Some(doc) => Ok(([("content-type", "application/json")], doc).into_response()),
            None => {
                let why = match state.store.load_twin(&id).await? {
                    Some(t) if !t.message.is_empty() => {
                        format!("no forecast yet: twin {}: {}", t.status, t.message)
                    }
                    _ => "no forecast yet: the twin is calibrated after 24 h of CGM".to_string(),
                };
                Err(ApiError::not_found(why))
            }
        }
    }
    .await;
    audited(&state, Some(&who), action, Some(&id), r).await
}

/// Twin status and calibrated parameters (Vmx, kp1, kabs, carb factor; values exp θ, see
/// `medtwin_twin::prior`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TwinInfo {
    /// `none`, `waiting`, `ok`, `failed`.
    pub status: String,
    /// Why waiting or failed.
    pub message: String,
    /// Saves so far.
    pub version: i64,
    /// Data time (RFC 3339).
    pub data_time: Option<String>,
    /// Parameters: name, unit, MAP of the first-day calibration, current posterior mean and
    /// 10–90 % range (values in the parameter's unit).
    pub parameters: Vec<ParamInfo>,
    /// MAP fit RMSE on the calibration window, mg/dL.
    pub calibration_rmse_mg_dl: Option<f64>,
}

/// One calibrated parameter (value in its unit).
#[derive(Debug, Serialize, ToSchema)]
pub struct ParamInfo {
    /// Name (`Vmx`, `kp1`, `kabs`, `carb_factor`).
    pub name: String,
    /// Unit (`mg/kg/min per pmol/L`, `mg/kg/min`, `1/min`, `1`).
    pub unit: String,
    /// What it means.
    pub description: String,
    /// exp(θ MAP) of the calibration.
    pub calibration_map: f64,
    /// Weighted posterior mean of exp(θ) now.
    pub posterior_mean: f64,
    /// 10th percentile of exp(θ) now.
    pub p10: f64,
    /// 90th percentile of exp(θ) now.
    pub p90: f64,
}

/// Twin summary for a patient (status, calibrated parameters).
pub async fn twin_info(state: &AppState, id: &str) -> Result<TwinInfo, ApiError> {
    let Some(row) = state.store.load_twin(id).await? else {
        return Ok(TwinInfo {
            status: "none".into(),
            message: "no CGM yet".into(),
            version: 0,
            data_time: None,
            parameters: vec![],
            calibration_rmse_mg_dl: None,
        });
    };
    let mut info = TwinInfo {
        status: row.status.clone(),
        message: row.message.clone(),
        version: row.version,
        data_time: Some(ts_ms(
            state.live.data_time_ms(id).unwrap_or(row.data_time_ms),
        )),
        parameters: vec![],
        calibration_rmse_mg_dl: None,
    };
    if row.doc.is_some() {
        // The live twin (in memory, possibly newer than the stored checkpoint).
        let Some(twin) = state
            .live
            .twin_doc(&state.store, id)
            .await
            .map_err(ApiError::internal)?
        else {
            return Ok(info);
        };
        info.calibration_rmse_mg_dl = Some(twin.calibration.rmse_mg_dl);
        let w: f64 = twin.weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        for (k, name) in medtwin_twin::prior::THETA_NAMES.iter().enumerate() {
            let mut vals: Vec<(f64, f64)> = twin
                .particles
                .iter()
                .zip(&twin.weights)
                .map(|(p, wi)| (p.theta[k].exp(), wi / w))
                .collect();
            vals.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mean = vals.iter().map(|(v, wi)| v * wi).sum();
            info.parameters.push(ParamInfo {
                name: name.to_string(),
                unit: medtwin_twin::prior::THETA_UNITS[k].to_string(),
                description: medtwin_twin::prior::THETA_DESCRIPTIONS[k].to_string(),
                calibration_map: twin.calibration.theta_map[k].exp(),
                posterior_mean: mean,
                p10: medtwin_infer::weighted_quantile(&vals, 0.1),
                p90: medtwin_infer::weighted_quantile(&vals, 0.9),
            });
        }
    }
    Ok(info)
}

/// Twin status and calibrated parameters.
#[utoipa::path(get, path = "/patients/{id}/twin", params(("id" = String, Path, description = "patient id")),
    responses((status = 200, body = TwinInfo), (status = 401), (status = 403), (status = 404)))]
async fn get_twin(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let action = "GET /patients/{id}/twin";
    let who = match gate(&state, &headers, action, &id, Access::Read).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let r = twin_info(&state, &id)
        .await
        .map(|t| Json(t).into_response());
    audited(&state, Some(&who), action, Some(&id), r).await
}

/// Most entries (meals, boluses and basal rates together) of one what-if plan.
pub const MAX_PLAN_ENTRIES: usize = 1000;

/// Refuse a what-if too large to simulate before any work: horizon outside 1–720 min or more
/// than 8 plans (400), a plan with more than [`MAX_PLAN_ENTRIES`] entries (413).
pub fn check_whatif_size(req: &WhatifRequest) -> Result<(), ApiError> {
    let h = req.horizon_min;
    if h == 0 || h > 720 {
        return Err(ApiError::bad(format!(
            "horizon_min = {h} must be in 1..=720 minutes"
        )));
    }
    if req.plans.is_empty() || req.plans.len() > 8 {
        return Err(ApiError::bad(format!(
            "plans: {} given, give 1 to 8 plans",
            req.plans.len()
        )));
    }
    for (i, p) in req.plans.iter().enumerate() {
        let n = p.meals.len() + p.boluses.len() + p.basal.len();
        if n > MAX_PLAN_ENTRIES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "plans[{i}] has {n} entries (meals + boluses + basal); at most {MAX_PLAN_ENTRIES} per plan"
                ),
            ));
        }
    }
    Ok(())
}

/// Run a what-if on the saved twin (CPU work on a blocking thread).
pub async fn whatif_for(
    state: &AppState,
    id: &str,
    req: WhatifRequest,
) -> Result<WhatifResponse, ApiError> {
    check_whatif_size(&req)?;
    let doc = state
        .live
        .twin_doc(&state.store, id)
        .await
        .map_err(ApiError::internal)?;
    let Some(doc) = doc else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the twin is not calibrated yet (needs 24 h of CGM)",
        ));
    };
    // A slot first (see `ServerConfig::max_concurrent_whatifs`): the request is checked and
    // the twin found, so only the computation waits.
    let wait = std::time::Duration::from_secs_f64(state.cfg.whatif_wait_s.clamp(0.0, 3600.0));
    let slot = match tokio::time::timeout(wait, state.whatifs.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "every what-if slot ({}) is busy with other what-ifs; retry in {} s",
                    state.cfg.max_concurrent_whatifs.max(1),
                    crate::BUSY_RETRY_AFTER_S
                ),
            ))
        }
    };
    let pid = id.to_string();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        crate::live::run_whatif(&pid, &doc, &req)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|(input, m)| {
        if input {
            ApiError::bad(m)
        } else {
            ApiError::internal(m)
        }
    })
}

/// Compare plans (meals, boluses, basal rates; minutes after the twin's data time) on the
/// twin's posterior with common random numbers.
#[utoipa::path(post, path = "/patients/{id}/whatif", params(("id" = String, Path, description = "patient id")),
    request_body = WhatifRequest,
    responses((status = 200, body = WhatifResponse), (status = 400), (status = 401), (status = 403), (status = 409, description = "twin not calibrated yet")))]
async fn post_whatif(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = "POST /patients/{id}/whatif";
    let who = match gate(&state, &headers, action, &id, Access::Read).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let r = async {
        let req: WhatifRequest = parse_json(&body)?;
        Ok(Json(whatif_for(&state, &id, req).await?).into_response())
    }
    .await;
    audited(&state, Some(&who), action, Some(&id), r).await
}

/// Audit a refused FHIR request (each issue's element and diagnostics) and answer 400 with
/// its OperationOutcome.
async fn refuse_with_outcome(
    state: &AppState,
    who: &Principal,
    action: &str,
    issues: &[fhir::FhirIssue],
) -> Response {
    let detail: Vec<String> = issues
        .iter()
        .map(|i| format!("{}: {}", i.expression, i.diagnostics))
        .collect();
    audit(
        state,
        Some(who),
        action,
        None,
        StatusCode::BAD_REQUEST,
        &detail.join("; "),
    )
    .await;
    outcome_response(StatusCode::BAD_REQUEST, issues)
}

fn outcome_response(status: StatusCode, issues: &[fhir::FhirIssue]) -> Response {
    (
        status,
        [("content-type", "application/fhir+json")],
        fhir::operation_outcome(issues).to_string(),
    )
        .into_response()
}

fn security_issue(msg: &str) -> Vec<fhir::FhirIssue> {
    vec![fhir::FhirIssue {
        expression: "Bundle".into(),
        diagnostics: msg.to_string(),
        code: "security",
    }]
}

/// Store validated data for the patients they name and queue their twins; one transaction.
async fn store_data(
    state: &AppState,
    who: &Principal,
    action: &str,
    new_patients: &[String],
    data: &[NewDatum],
    on_conflict: OnConflict,
) -> Result<(medtwin_store::IngestOutcome, Vec<DatumStatus>), ApiError> {
    let mut pids: Vec<&str> = data.iter().map(|d| d.patient_id.as_str()).collect();
    pids.extend(new_patients.iter().map(String::as_str));
    pids.sort();
    pids.dedup();
    before_record_start(state, &pids, data).await?;
    let audits: Vec<_> = pids
        .iter()
        .map(|p| {
            let n = data.iter().filter(|d| d.patient_id == *p).count();
            audit_entry(
                Some(who),
                action,
                Some(p),
                StatusCode::OK,
                &format!("{n} data received"),
            )
        })
        .collect();
    let r = state
        .store
        .ingest_with(
            new_patients,
            data,
            medtwin_store::now_ms(),
            &audits,
            on_conflict,
        )
        .await?;
    for p in pids {
        let oldest = data
            .iter()
            .zip(&r.1)
            .filter(|(d, st)| **st == DatumStatus::Inserted && d.patient_id == p)
            .map(|(d, _)| d.entry.time.as_millisecond())
            .min();
        if let Some(o) = oldest {
            state.live.note_data(p, o);
        }
        let newest = data
            .iter()
            .zip(&r.1)
            .filter(|(d, st)| {
                **st == DatumStatus::Inserted
                    && d.patient_id == p
                    && d.entry.kind == RecordKind::Cgm
            })
            .map(|(d, _)| d.entry.time.as_millisecond())
            .max();
        if newest.is_some() {
            state.live.notify(p, newest);
        }
    }
    Ok(r)
}

/// Refuse data more than [`crate::ServerConfig::record_start_margin_days`] before their
/// patient's record start (400 naming each datum's element and both times). Only data older
/// than that margin from now need the look-up, so a live stream costs nothing.
async fn before_record_start(
    state: &AppState,
    pids: &[&str],
    data: &[NewDatum],
) -> Result<(), ApiError> {
    let margin_days = state.cfg.record_start_margin_days;
    if margin_days <= 0.0 || !margin_days.is_finite() {
        return Ok(());
    }
    let margin_ms = (margin_days * 86_400_000.0) as i64;
    let horizon = medtwin_store::now_ms() - margin_ms;
    let mut problems = Vec::new();
    for p in pids {
        let old: Vec<&NewDatum> = data
            .iter()
            .filter(|d| d.patient_id == *p && d.entry.time.as_millisecond() < horizon)
            .collect();
        if old.is_empty() {
            continue;
        }
        let Some(start) = state.store.record_start(p).await? else {
            continue;
        };
        let floor = start - margin_ms;
        for d in old {
            if d.entry.time.as_millisecond() < floor {
                let at = d
                    .entry
                    .source
                    .strip_prefix("nightscout:")
                    .or_else(|| d.entry.source.strip_prefix("fhir:"))
                    .unwrap_or(&d.entry.source);
                problems.push(format!(
                    "{at}: time {} is more than {margin_days} days before patient `{p}`'s record start {} (ServerConfig::record_start_margin_days)",
                    d.entry.time,
                    jiff::Timestamp::from_millisecond(start)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let n = problems.len();
        problems.truncate(20);
        Err(ApiError::bad(format!(
            "nothing stored: {n} data before the patient's plausible window: {}",
            problems.join("; ")
        )))
    }
}

/// FHIR R4 transaction or batch: Patient, Observation (glucose by LOINC, UCUM units;
/// carbohydrate intake), MedicationAdministration (insulin). Answers a `transaction-response`
/// Bundle (`201 Created` per new datum, `200 OK` for one already stored), or an
/// `OperationOutcome` (nothing stored); a `batch` stores its valid entries and answers a
/// `batch-response` with `400 Bad Request` and an `OperationOutcome` per invalid entry.
#[utoipa::path(post, path = "/fhir/Bundle", request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 200, description = "transaction-response Bundle"),
        (status = 400, description = "OperationOutcome; nothing stored"), (status = 401), (status = 403), (status = 413)))]
async fn fhir_bundle(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let action = "POST /fhir/Bundle";
    let who = match authenticate(&state, &headers).await {
        Ok(p) => p,
        Err(e) => {
            audit(&state, None, action, None, e.status, &e.reason).await;
            return outcome_response(e.status, &security_issue(&e.reason));
        }
    };
    let parsed =
        match fhir::parse_bundle_entries(&body, jiff::Timestamp::now(), &state.cfg.plausibility)
            .and_then(|(p, issues)| {
                // A transaction is all-or-nothing; a batch's entries stand alone.
                if issues.is_empty() || p.batch {
                    Ok((p, issues))
                } else {
                    Err(issues)
                }
            }) {
            Ok(p) => p,
            Err(issues) => {
                return refuse_with_outcome(&state, &who, action, &issues).await;
            }
        };
    let (parsed, failed) = parsed;
    if !failed.is_empty() {
        let detail: Vec<String> = failed
            .iter()
            .map(|i| format!("{}: {}", i.expression, i.diagnostics))
            .collect();
        audit(
            &state,
            Some(&who),
            action,
            None,
            StatusCode::BAD_REQUEST,
            &format!(
                "batch: {} entries refused (the others stored): {}",
                detail.len(),
                detail.join("; ")
            ),
        )
        .await;
    }
    // Access: every patient named must be writable; unknown patients only by an admin.
    let mut named: Vec<String> = parsed.patients.clone();
    named.extend(parsed.data.iter().map(|d| d.patient_id.clone()));
    named.sort();
    named.dedup();
    let mut new_patients = Vec::new();
    for p in &named {
        if let Err(e) = check_access(&who, p, Access::Write) {
            audit(&state, Some(&who), action, Some(p), e.status, &e.reason).await;
            return outcome_response(e.status, &security_issue(&e.reason));
        }
        match state.store.patient_exists(p).await {
            Ok(true) => {}
            Ok(false) if who.role == Role::Admin && parsed.patients.contains(p) => {
                new_patients.push(p.clone())
            }
            Ok(false) => {
                let e = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("unknown patient `{p}` (create it with POST /patients or include a Patient entry as admin)"),
                );
                audit(&state, Some(&who), action, Some(p), e.status, &e.reason).await;
                let issue = fhir::FhirIssue {
                    expression: "Bundle".into(),
                    diagnostics: e.reason.clone(),
                    code: "not-found",
                };
                return outcome_response(e.status, &[issue]);
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let on_conflict = if parsed.batch {
        OnConflict::Report
    } else {
        OnConflict::Refuse
    };
    match store_data(
        &state,
        &who,
        action,
        &new_patients,
        &parsed.data,
        on_conflict,
    )
    .await
    {
        Ok((_, flags)) => {
            let entries = fhir_entry_responses(&parsed, &flags, &failed);
            let ty = if parsed.batch {
                "batch-response"
            } else {
                "transaction-response"
            };
            (
                StatusCode::OK,
                [("content-type", "application/fhir+json")],
                json!({"resourceType": "Bundle", "type": ty, "entry": entries}).to_string(),
            )
                .into_response()
        }
        Err(e) => {
            audit(&state, Some(&who), action, None, e.status, &e.reason).await;
            let issue = fhir::FhirIssue {
                expression: "Bundle".into(),
                diagnostics: e.reason.clone(),
                code: "exception",
            };
            outcome_response(e.status, &[issue])
        }
    }
}

/// The `entry` of a transaction- or batch-response: `201 Created` per new datum, `200 OK`
/// per identical re-send and Patient, `409 Conflict` with an `OperationOutcome` per datum that
/// differs from the one stored at its time, `400 Bad Request` per refused batch entry.
fn fhir_entry_responses(
    parsed: &fhir::ParsedBundle,
    flags: &[DatumStatus],
    failed: &[fhir::FhirIssue],
) -> Vec<Value> {
    let mut status: Vec<Option<Value>> = vec![None; parsed.n_entries];
    for (k, i) in parsed.entry_of.iter().enumerate() {
        status[*i] = Some(match flags[k] {
            DatumStatus::Inserted => json!({"status": "201 Created"}),
            DatumStatus::Duplicate => json!({"status": "200 OK"}),
            DatumStatus::Conflict { stored } => {
                let d = &parsed.data[k];
                let issue = fhir::FhirIssue {
                    expression: format!("Bundle.entry[{i}].resource"),
                    diagnostics: format!(
                        "conflict: {} at {} is stored as {stored} {}, this one is {} {} (not stored)",
                        d.entry.kind.name(),
                        d.entry.time,
                        d.entry.kind.canonical_unit(),
                        d.entry.value,
                        d.entry.kind.canonical_unit()
                    ),
                    code: "conflict",
                };
                json!({"status": "409 Conflict", "outcome": fhir::operation_outcome(&[issue])})
            }
        });
    }
    for (i, _) in &parsed.patient_entries {
        status[*i] = Some(json!({"status": "200 OK"}));
    }
    status
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let mine: Vec<fhir::FhirIssue> = failed
                .iter()
                .filter(|x| fhir::issue_entry(x) == Some(i))
                .cloned()
                .collect();
            if mine.is_empty() {
                json!({"response": s.unwrap_or_else(|| json!({"status": "200 OK"}))})
            } else {
                json!({"response": {"status": "400 Bad Request", "outcome": fhir::operation_outcome(&mine)}})
            }
        })
        .collect()
}

/// FHIR R4 create of one `Observation` (as a one-entry transaction, see [`fhir`]): `201` when
/// stored, `200` for an identical re-send, `409` for a different value at a stored time, `400`
/// with an `OperationOutcome` (element paths from `Observation`) when invalid.
#[utoipa::path(post, path = "/fhir/Observation", request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 201, description = "stored"), (status = 200, description = "already stored"),
        (status = 400, description = "OperationOutcome"), (status = 401), (status = 403), (status = 409)))]
async fn fhir_observation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resource: Value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return outcome_response(e.status, &security_issue(&e.reason)),
    };
    if resource.get("resourceType").and_then(Value::as_str) != Some("Observation") {
        let issue = fhir::FhirIssue {
            expression: "Observation.resourceType".into(),
            diagnostics: format!(
                "resourceType is {}, expected `Observation`",
                resource
                    .get("resourceType")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "missing".into())
            ),
            code: "invalid",
        };
        return outcome_response(StatusCode::BAD_REQUEST, &[issue]);
    }
    let bundle =
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": resource}]});
    let r = fhir_bundle(State(state), headers, Bytes::from(bundle.to_string())).await;
    let status = r.status();
    let Ok(bytes) = axum::body::to_bytes(r.into_body(), usize::MAX).await else {
        return ApiError::internal("FHIR answer unreadable").into_response();
    };
    let text = String::from_utf8_lossy(&bytes).replace("Bundle.entry[0].resource", "Observation");
    let (status, text) = if status == StatusCode::OK {
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let resp = &v["entry"][0]["response"];
        let code = resp["status"]
            .as_str()
            .and_then(|s| s.split(' ').next())
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(200);
        (
            StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
            resp.to_string(),
        )
    } else {
        (status, text)
    };
    (status, [("content-type", "application/fhir+json")], text).into_response()
}

/// FHIR R4 create of one `Patient` (admin): the patient's id on this server is the resource's
/// `id`, else its first `identifier[].value`. `201 Created` with `Location:
/// /fhir/Patient/{id}` and the resource (with that `id`); `200` when the patient exists; `400`
/// with an `OperationOutcome` naming the element (`Patient.id`, `Patient.identifier[0].value`,
/// `Patient.resourceType`) when invalid.
#[utoipa::path(post, path = "/fhir/Patient", request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 201, description = "created; Location: /fhir/Patient/{id}"), (status = 200, description = "already existed"),
        (status = 400, description = "OperationOutcome"), (status = 401), (status = 403)))]
async fn fhir_patient_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = "POST /fhir/Patient";
    let who = match authenticate(&state, &headers).await {
        Ok(p) => p,
        Err(e) => {
            audit(&state, None, action, None, e.status, &e.reason).await;
            return outcome_response(e.status, &patient_security_issue(&e.reason));
        }
    };
    let resource: Value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => {
            audit(&state, Some(&who), action, None, e.status, &e.reason).await;
            let issue = fhir::FhirIssue {
                expression: "Patient".into(),
                diagnostics: e.reason,
                code: "structure",
            };
            return outcome_response(e.status, &[issue]);
        }
    };
    let pid = match fhir::patient_id_of(&resource) {
        Ok(id) => id,
        Err(issues) => {
            return refuse_with_outcome(&state, &who, action, &issues).await;
        }
    };
    if who.role != Role::Admin {
        let e = ApiError::forbidden("only an admin token may create patients");
        audit(&state, Some(&who), action, Some(&pid), e.status, &e.reason).await;
        return outcome_response(e.status, &patient_security_issue(&e.reason));
    }
    let entry = audit_entry(Some(&who), action, Some(&pid), StatusCode::CREATED, "");
    let mut echoed = resource;
    echoed["id"] = Value::String(pid.clone());
    match state.store.create_patient(&pid, &entry).await {
        Ok(created) => (
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            [
                ("content-type", "application/fhir+json".to_string()),
                ("location", format!("/fhir/Patient/{pid}")),
            ],
            echoed.to_string(),
        )
            .into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            audit(&state, Some(&who), action, Some(&pid), e.status, &e.reason).await;
            let issue = fhir::FhirIssue {
                expression: "Patient".into(),
                diagnostics: e.reason.clone(),
                code: "exception",
            };
            outcome_response(e.status, &[issue])
        }
    }
}

fn patient_security_issue(msg: &str) -> Vec<fhir::FhirIssue> {
    vec![fhir::FhirIssue {
        expression: "Patient".into(),
        diagnostics: msg.to_string(),
        code: "security",
    }]
}

/// FHIR R4 read of a `Patient` (admin, clinician assigned to it): `{"resourceType": "Patient",
/// "id": …}` (the server keeps no demographics); 404 when unknown.
#[utoipa::path(get, path = "/fhir/Patient/{id}", params(("id" = String, Path, description = "patient id")),
    responses((status = 200, description = "Patient"), (status = 404, description = "OperationOutcome"), (status = 401), (status = 403)))]
async fn fhir_patient_read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let action = "GET /fhir/Patient/{id}";
    let who = match gate(&state, &headers, action, &id, Access::Read).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    audit(&state, Some(&who), action, Some(&id), StatusCode::OK, "").await;
    (
        StatusCode::OK,
        [("content-type", "application/fhir+json")],
        json!({"resourceType": "Patient", "id": id}).to_string(),
    )
        .into_response()
}

/// Items of a Nightscout upload: a JSON array, one object, or JSON lines (mongoexport).
fn ns_items(body: &[u8], what: &str) -> Result<Vec<Value>, ApiError> {
    medtwin_io::nightscout_documents(body, what).map_err(ApiError::bad)
}

async fn ns_upload(
    state: AppState,
    pid: String,
    headers: HeaderMap,
    body: Bytes,
    treatments: bool,
) -> Response {
    let action = if treatments {
        "POST /ns/{id}/api/v1/treatments"
    } else {
        "POST /ns/{id}/api/v1/entries"
    };
    let who = match gate(&state, &headers, action, &pid, Access::Write).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let r = async {
        let mut items = ns_items(&body, if treatments { "treatments" } else { "entries" })?;
        if treatments {
            resolve_percent_basals(&state, &pid, &mut items).await?;
        }
        let empty: [Value; 0] = [];
        let (e, t) = if treatments { (&empty[..], &items[..]) } else { (&items[..], &empty[..]) };
        let (record, report) = medtwin_io::nightscout_from_values(e, t, ("entries", "entries"), ("treatments", "treatments"));
        if !report.rejected.is_empty() {
            let reasons: Vec<String> = report.rejected.iter().map(|i| i.to_string()).collect();
            return Err(ApiError::bad(format!("nothing stored: {}", reasons.join("; "))));
        }
        let problems = implausible_ns(&record.entries, &items, if treatments { "treatments" } else { "entries" }, &state.cfg.plausibility);
        if !problems.is_empty() {
            return Err(ApiError::bad(format!("nothing stored: {}", problems.join("; "))));
        }
        let data: Vec<NewDatum> = record
            .entries
            .into_iter()
            .map(|entry| NewDatum { patient_id: pid.clone(), source_unit: entry.unit.clone(), entry })
            .collect();
        let (out, _) = store_data(&state, &who, action, &[], &data, OnConflict::Refuse).await?;
        // Nightscout answers with the stored documents; uploaders only check the status.
        Ok((StatusCode::OK, Json(json!({"ok": 1, "n": items.len(), "inserted": out.inserted, "duplicates": out.duplicates, "skipped": items.len().saturating_sub(data.len())}))).into_response())
    }
    .await;
    match r {
        Ok(resp) => resp, // audited inside the ingest transaction
        Err(e) => audited(&state, Some(&who), action, Some(&pid), Err(e)).await,
    }
}

/// Relative (percent) `Temp Basal` treatments resolved against the patient's stored profile
/// (see [`medtwin_io::ns_profile`]): 400 naming each element when no profile is known or a
/// percent is invalid (nothing stored).
async fn resolve_percent_basals(
    state: &AppState,
    pid: &str,
    items: &mut [Value],
) -> Result<usize, ApiError> {
    let needs = items.iter().any(|t| {
        t.get("eventType").and_then(Value::as_str).map(str::trim) == Some("Temp Basal")
            && t.get("percent").is_some()
    });
    if !needs {
        return Ok(0);
    }
    let profile = match state.store.load_profile(pid).await? {
        None => None,
        Some(doc) => {
            let v: Value = serde_json::from_str(&doc).map_err(ApiError::internal)?;
            Some(
                medtwin_io::ns_profile::BasalProfile::from_nightscout(&v, "profile")
                    .map_err(ApiError::internal)?,
            )
        }
    };
    medtwin_io::ns_profile::resolve_percent_temp_basals(items, profile.as_ref(), "treatments")
        .map_err(|p| {
            ApiError::bad(format!(
                "nothing stored: {}{}",
                p.join("; "),
                if profile.is_none() {
                    format!(" (POST /ns/{pid}/api/v1/profile)")
                } else {
                    String::new()
                }
            ))
        })
}

/// Nightscout `POST /api/v1/profile`: the patient's therapy profile (a profile document, or a
/// `profile.json` export array: the latest `startDate` is used), kept to resolve relative
/// (percent) temporary basals of later treatment uploads. 400 naming the element when it has no
/// usable basal schedule (`profile.store.Default.basal[2].value`, an unknown time zone, …).
#[utoipa::path(post, path = "/ns/{patient_id}/api/v1/profile", params(("patient_id" = String, Path, description = "patient id")),
    request_body(content = Object, description = "Nightscout profile document {defaultProfile, store: {NAME: {basal: [{time, value}], timezone}}} or an array of them"),
    responses((status = 200, description = "stored: active profile name, time zone, basal schedule"), (status = 400, description = "nothing stored; reason with element path"), (status = 401), (status = 403)))]
async fn ns_post_profile(
    State(state): State<AppState>,
    Path(pid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = "POST /ns/{id}/api/v1/profile";
    let who = match gate(&state, &headers, action, &pid, Access::Write).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let r = async {
        let items = ns_items(&body, "profile")?;
        let doc = if items.len() == 1 {
            items.into_iter().next().unwrap_or_default()
        } else {
            Value::Array(items)
        };
        let p = medtwin_io::ns_profile::BasalProfile::from_nightscout(&doc, "profile")
            .map_err(|m| ApiError::bad(format!("nothing stored: {m}")))?;
        let basal: Vec<Value> = p
            .steps
            .iter()
            .map(
                |(s, r)| json!({"time": format!("{:02}:{:02}", s / 3600, s / 60 % 60), "value": r}),
            )
            .collect();
        let entry = audit_entry(
            Some(&who),
            action,
            Some(&pid),
            StatusCode::OK,
            &format!(
                "profile `{}` ({} basal steps, {})",
                p.name,
                p.steps.len(),
                p.timezone
            ),
        );
        state
            .store
            .save_profile(&pid, &doc.to_string(), &entry)
            .await?;
        Ok((
            StatusCode::OK,
            Json(json!({"ok": 1, "profile": p.name, "timezone": p.timezone, "basal": basal})),
        )
            .into_response())
    }
    .await;
    match r {
        Ok(resp) => resp, // audited with the profile
        Err(e) => audited(&state, Some(&who), action, Some(&pid), Err(e)).await,
    }
}

/// The plausibility problems of the entries of a Nightscout upload, each prefixed by its
/// element path (`entries[3].date`, `treatments[2].insulin`). `items` are the uploaded
/// documents; each entry's source names its index (`nightscout:{name}[i]`).
fn implausible_ns(
    entries: &[medtwin_io::RecordEntry],
    items: &[Value],
    name: &str,
    limits: &medtwin_store::Plausibility,
) -> Vec<String> {
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    for e in entries {
        let idx = e
            .source
            .strip_prefix(&format!("nightscout:{name}["))
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|r| r.parse::<usize>().ok());
        let item = idx.and_then(|i| items.get(i)).and_then(Value::as_object);
        let present = |keys: &[&'static str]| -> &'static str {
            keys.iter()
                .copied()
                .find(|k| item.is_some_and(|o| o.contains_key(*k)))
                .unwrap_or(keys[0])
        };
        let at = |field: &str| match idx {
            Some(i) => format!("{name}[{i}].{field}"),
            None => format!("{name}[?].{field}"),
        };
        for (is_time, m) in limits.check(e, now) {
            let field = if is_time {
                if name == "entries" {
                    present(&["date", "dateString", "sysTime"])
                } else {
                    present(&["created_at", "timestamp", "date", "mills"])
                }
            } else {
                match e.kind {
                    RecordKind::Bolus | RecordKind::LongActing => "insulin",
                    RecordKind::Carbs => "carbs",
                    RecordKind::BasalRate => present(&["absolute", "rate"]),
                    RecordKind::Cgm => "sgv",
                    RecordKind::Smbg if name == "entries" => "mbg",
                    RecordKind::Smbg => "glucose",
                }
            };
            out.push(format!("{}: {m}", at(field)));
        }
    }
    out
}

/// Nightscout `POST /api/v1/entries` for one patient: `sgv` (mg/dL) → CGM, `mbg` → SMBG;
/// other types are skipped. Idempotent: a reading already stored is not stored again.
#[utoipa::path(post, path = "/ns/{patient_id}/api/v1/entries", params(("patient_id" = String, Path, description = "patient id")),
    request_body(content = Object, description = "array of Nightscout entries {type, sgv, date (epoch ms) | dateString}"),
    responses((status = 200, description = "stored (counts)"), (status = 400, description = "nothing stored; reasons"), (status = 401), (status = 403), (status = 413)))]
async fn ns_post_entries(
    State(state): State<AppState>,
    Path(patient_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ns_upload(state, patient_id, headers, body, false).await
}

/// Nightscout `POST /api/v1/treatments`: `insulin` → bolus (U), `carbs` → carbs (g),
/// `Temp Basal` `absolute` → basal rate (U/h) (`percent` resolved against the patient's
/// profile, see `POST /ns/{id}/api/v1/profile`), `BG Check` → SMBG.
#[utoipa::path(post, path = "/ns/{patient_id}/api/v1/treatments", params(("patient_id" = String, Path, description = "patient id")),
    request_body(content = Object, description = "array of Nightscout treatments {eventType, created_at, insulin, carbs, absolute, duration}"),
    responses((status = 200, description = "stored (counts)"), (status = 400, description = "nothing stored; reasons"), (status = 401), (status = 403), (status = 413)))]
async fn ns_post_treatments(
    State(state): State<AppState>,
    Path(patient_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ns_upload(state, patient_id, headers, body, true).await
}

/// Query of `GET …/entries.json`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CountQuery {
    /// Number of entries (1–10 000, default 10).
    pub count: Option<i64>,
}

/// Nightscout `GET /api/v1/entries.json?count=N`: the latest N CGM entries, newest first, as
/// Nightscout `sgv` documents (`sgv` mg/dL, `date` epoch ms, `dateString`).
#[utoipa::path(get, path = "/ns/{patient_id}/api/v1/entries", params(("patient_id" = String, Path, description = "patient id"), CountQuery),
    responses((status = 200, description = "array of sgv entries"), (status = 401), (status = 403)))]
async fn ns_get_entries(
    State(state): State<AppState>,
    Path(patient_id): Path<String>,
    Query(q): Query<CountQuery>,
    headers: HeaderMap,
) -> Response {
    let action = "GET /ns/{id}/api/v1/entries";
    let who = match gate(&state, &headers, action, &patient_id, Access::Read).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let r = async {
        let n = q.count.unwrap_or(10);
        if !(1..=10_000).contains(&n) {
            return Err(ApiError::bad(format!("count={n} must be in 1..=10000")));
        }
        let rows = state.store.latest_cgm(&patient_id, n).await?;
        let docs: Vec<Value> = rows
            .iter()
            .map(|d| {
                json!({
                    "type": "sgv",
                    "sgv": d.entry.value.round() as i64,
                    "date": d.entry.time.as_millisecond(),
                    "dateString": d.entry.time.to_string(),
                    "device": d.entry.source,
                })
            })
            .collect();
        Ok(Json(docs).into_response())
    }
    .await;
    audited(&state, Some(&who), action, Some(&patient_id), r).await
}

/// Query of `GET /audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only this patient's records.
    pub patient: Option<String>,
    /// At most this many (default 100, max 10 000).
    pub limit: Option<i64>,
}

/// Audit records, newest first (admin). The log is append-only: no endpoint changes it.
#[utoipa::path(get, path = "/audit", params(AuditQuery),
    responses((status = 200, description = "array of audit records"), (status = 401), (status = 403)))]
async fn get_audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
    headers: HeaderMap,
) -> Response {
    let action = "GET /audit";
    let who = match authenticate(&state, &headers).await {
        Ok(p) => p,
        Err(e) => return audited(&state, None, action, q.patient.as_deref(), Err(e)).await,
    };
    let r = async {
        if who.role != Role::Admin {
            return Err(ApiError::forbidden(
                "only an admin token may read the audit log",
            ));
        }
        let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
        Ok(Json(state.store.audit_log(q.patient.as_deref(), limit).await?).into_response())
    }
    .await;
    audited(&state, Some(&who), action, q.patient.as_deref(), r).await
}

/// Liveness, data attribution and live-twin counters (no patient data; no authentication).
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = LiveStats)))]
async fn health(State(state): State<AppState>) -> Response {
    let s = state.live.stats();
    Json(json!({"status": "ok", "live": s, "bundled_data_citation": T1D_UOM_CITATION}))
        .into_response()
}
