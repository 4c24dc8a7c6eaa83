//! # medtwin-server
//!
//! The twin server: many patients, a persistent store ([`medtwin_store`], SQLite or
//! PostgreSQL), ingest by **FHIR R4** and **Nightscout**-compatible uploads, **live twins**
//! (each new CGM reading queues the patient's twin for assimilation on a bounded queue served
//! by a worker pool), forecasts and what-if plans over REST, bearer-token **access control**
//! with roles, an append-only **audit** log, a server-rendered **dashboard**, and an
//! **OpenAPI** document generated from the handlers (`GET /openapi.json`).
//!
//! ## Endpoints
//!
//! | method, path | who | what |
//! |---|---|---|
//! | `POST /patients` `{"id": "p1"}` | admin | create a patient (201; 200 when it exists) |
//! | `GET /patients` | admin, clinician | patients visible to the token, latest glucose, risk |
//! | `GET /patients/{id}/forecast` | admin, clinician | latest forecast: bands, P(<70), P(>250), data time |
//! | `POST /patients/{id}/whatif` | admin, clinician | compare plans on the twin's posterior |
//! | `GET /patients/{id}/twin` | admin, clinician | twin status and calibrated parameters |
//! | `POST /fhir/Bundle` | admin, clinician, device | FHIR R4 transaction or batch (see [`fhir`]) |
//! | `POST /fhir/Observation` | admin, clinician, device | one FHIR Observation (201 stored, 200 re-sent, 409 conflict) |
//! | `POST /fhir/Patient` | admin | one FHIR Patient: id from `id`, else the first `identifier.value` (201 with `Location`, 200 when it exists, 400 `OperationOutcome` naming the element) |
//! | `GET /fhir/Patient/{id}` | admin, clinician | the Patient (`resourceType`, `id`) |
//! | `POST /ns/{id}/api/v1/entries` | admin, clinician, device | Nightscout entries upload (JSON array, object, or JSON lines as mongoexport writes them) |
//! | `POST /ns/{id}/api/v1/treatments` | admin, clinician, device | Nightscout treatments upload |
//! | `POST /ns/{id}/api/v1/profile` | admin, clinician, device | Nightscout profile: basal schedule that resolves percent Temp Basals ([`medtwin_io::ns_profile`]) |
//! | `GET /ns/{id}/api/v1/entries.json?count=N` | admin, clinician | latest N CGM entries (Nightscout JSON) |
//! | `GET /audit?patient=ID&limit=N` | admin | audit records, newest first |
//! | `GET /openapi.json` | anyone | the OpenAPI 3.1 document |
//! | `GET /`, `/ui/…` | token cookie | dashboard ([`dashboard`]) |
//!
//! Authentication: `Authorization: Bearer TOKEN`, or Nightscout's `api-secret: SHA1HEX(TOKEN)`,
//! or the dashboard cookie `medtwin_token`. No or unknown credentials → 401; a role or patient
//! the token may not access → 403. Roles: **admin** (everything), **clinician** (read and
//! write the patients assigned to the token), **device** (ingest only, for its one patient).
//!
//! Every request that reads or writes patient data appends an audit record (actor, action,
//! patient, time, HTTP status), also when it is refused; the API has no way to change or
//! delete audit records and the database rejects it (triggers). Refused unauthenticated
//! requests are audited boundedly: ids truncated to [`AUDIT_ID_MAX`] characters, the first
//! refusal of a client per minute at once and the rest as one aggregated record per minute;
//! per-client rate limits answer 429 with `Retry-After` ([`guard`]). A request head not
//! complete within [`ServerConfig::header_read_timeout_s`] closes the connection ([`net`]); an
//! answer not ready within [`ServerConfig::request_timeout_s`] is a 408; a what-if plan may hold
//! at most [`api::MAX_PLAN_ENTRIES`] entries (413) and a horizon of 720 min (400).
//!
//! Input rules: bodies over [`ServerConfig::max_body_bytes`] → 413; malformed JSON, unknown
//! codes, wrong units, impossible values, data outside the plausibility limits
//! ([`ServerConfig::plausibility`]: times before 2000-01-01T00:00Z or more than
//! [`FUTURE_TOLERANCE_S`] in the future, bolus > 100 U, basal > 35 U/h, carbohydrate > 500 g)
//! → 400 (FHIR: an `OperationOutcome`) naming each problem with its element path (e.g.
//! `Bundle.entry[3].resource.effectiveDateTime`, `treatments[2].insulin`), and **nothing** of
//! the request is stored (a transaction bundle and a Nightscout upload are all-or-nothing; a
//! FHIR `batch` stores its valid entries and reports each refused one, see [`fhir`]). A value
//! that differs from the one stored at the same patient, kind and time is a conflict: 409
//! naming the element, time and both values (nothing stored; in a `batch`, that entry's
//! response is `409 Conflict` with an `OperationOutcome`); an identical re-send is a duplicate.

#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod dashboard;
pub mod fhir;
pub mod guard;
pub mod live;
pub mod net;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use medtwin_store::{AuditEntry, Plausibility, Principal, Role, Store};

/// Readings may be at most this far in the future (clock skew between devices and server), s.
pub const FUTURE_TOLERANCE_S: i64 = 300;

/// Longest patient id kept in an audit record (longer ids, e.g. of refused requests for made-up
/// paths, are truncated), characters.
pub const AUDIT_ID_MAX: usize = 128;

/// Name of the dashboard's login cookie.
pub const COOKIE: &str = "medtwin_token";

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Database URL (`sqlite://PATH` or `postgres://…`).
    pub db_url: String,
    /// Listen address; port 0 picks a free port (the chosen address is printed).
    pub addr: SocketAddr,
    /// Twin worker threads (assimilation, forecasts); twice as many update tasks overlap their
    /// database reads and writes with this CPU work.
    pub workers: usize,
    /// Capacity of the bounded assimilation queue (patients).
    pub queue_capacity: usize,
    /// Particles of each live twin's filter.
    pub particles: usize,
    /// Horizon of the live forecast, minutes.
    pub horizon_min: u32,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Live twins kept in memory between updates (beyond this many, a twin is loaded from
    /// and saved to the store on every update). Memory per twin ≈ 2 kB per particle.
    pub cached_twins: usize,
    /// New twins blend boosted trees into their hybrid forecasts
    /// ([`medtwin_twin::TwinSettings::hybrid_boosting`]). Off by default: forecasts on demand
    /// start from the saved twin, so each would refit the trees for its 11 fitted horizons
    /// (49 ms per fit on 60 days of history, ≈ 0.5 s per 120-min forecast; measured with
    /// `medtwin twin forecast` on 12 days of history: 0.20 s against 0.08 s without them).
    pub boosted_forecasts: bool,
    /// Plausibility limits of ingested data (times, doses); see [`Plausibility`].
    pub plausibility: Plausibility,
    /// Requests per second one client address may send (bursts of twice as many); beyond,
    /// 429 with `Retry-After` ([`guard`]). 0: no limit.
    pub client_rate_per_s: f64,
    /// Refused authentications (401) per minute one client address may cause (bursts of as
    /// many); beyond, every request of that client gets 429 until it refills. 0: no limit.
    pub client_auth_failures_per_min: f64,
    /// Data more than this many days before a patient's record start (its first stored CGM
    /// reading) are refused (400 naming the element; nothing stored), so a stray old timestamp
    /// cannot reach back before the record. 0: no such limit. A patient without CGM yet has
    /// no record start.
    pub record_start_margin_days: f64,
    /// Requests per minute one token may send (bursts of as many); requests without a valid
    /// credential are limited the same way per client address. Beyond, 429 with `Retry-After`
    /// ([`guard`]). 0: no limit.
    pub rate_limit_per_min: f64,
    /// A client must send a request's complete head (request line and headers) within this
    /// many seconds of starting it (or of opening the connection); else the connection is
    /// closed ([`net`]).
    pub header_read_timeout_s: f64,
    /// A request (body included) must be answered within this many seconds; else 408.
    pub request_timeout_s: f64,
    /// The dashboard cookie carries `Secure` (browsers send it over HTTPS only): set when the
    /// server is reached through a TLS-terminating reverse proxy (`--behind-tls-proxy`), and
    /// always with built-in TLS ([`ServerConfig::tls`]).
    pub secure_cookies: bool,
    /// Built-in TLS: serve HTTPS with this certificate chain and key ([`tls`]); `None`: plain
    /// HTTP (behind a TLS-terminating reverse proxy, or on loopback).
    pub tls: Option<tls::TlsFiles>,
    /// What-ifs computed at once (API and dashboard together; each runs on one thread, the
    /// largest accepted one ≈ 6 CPU-s at 500 particles), so what-ifs cannot take every core
    /// from the twins and the ingest. At least 1.
    pub max_concurrent_whatifs: usize,
    /// How long a what-if waits for a free slot, seconds; then `503 Service Unavailable` with
    /// `Retry-After`.
    pub whatif_wait_s: f64,
}

impl ServerConfig {
    /// Defaults: `sqlite://medtwin.db`, `127.0.0.1:8080`, one twin thread per core, queue 10 000,
    /// 500 particles, 120-minute forecasts, 4 MiB bodies, 10 000 twins in memory, hybrid
    /// forecasts without boosted trees, the default [`Plausibility`] limits, request heads
    /// within 10 s and answers within 60 s.
    pub fn new(db_url: &str, addr: SocketAddr) -> ServerConfig {
        ServerConfig {
            db_url: db_url.to_string(),
            addr,
            // One twin thread per core (measured on 2 cores under 1 000 readings/s from 1 000
            // live twins: 2 threads lowered staleness ~2x against 1 once ingest was made cheap
            // by the group commit; the operating system shares the cores with the HTTP side).
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            queue_capacity: 10_000,
            particles: 500,
            horizon_min: 120,
            max_body_bytes: 4 << 20,
            cached_twins: 10_000,
            boosted_forecasts: false,
            plausibility: Plausibility {
                future_tolerance_s: FUTURE_TOLERANCE_S,
                ..Plausibility::default()
            },
            // Above the 1 000 readings/s of the load test from one client (one gateway may
            // carry many devices), far below a flood (2 420 requests/s measured from one
            // loopback client).
            client_rate_per_s: 2000.0,
            client_auth_failures_per_min: 60.0,
            // 100 requests/s sustained per token, any burst up to one minute's worth: far above
            // a device (one reading per 5 min), a dashboard user or `medtwin push` (500 entries
            // per request), far below what one flooding client sends (2 420/s measured).
            rate_limit_per_min: 6000.0,
            // A quarter of a year: back-filling earlier history stays possible, a clock reset
            // to 2001 on one device is refused.
            record_start_margin_days: 90.0,
            header_read_timeout_s: 10.0,
            request_timeout_s: 60.0,
            secure_cookies: false,
            tls: None,
            max_concurrent_whatifs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            whatif_wait_s: 10.0,
        }
    }
}

/// Errors that stop the server or a CLI helper.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Store failure.
    #[error(transparent)]
    Store(#[from] medtwin_store::StoreError),
    /// Network or runtime failure.
    #[error("{0}")]
    Io(String),
    /// Bad input to a CLI helper (exit code 2).
    #[error("{0}")]
    Input(String),
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Live twins (queue and workers).
    pub live: Arc<live::Live>,
    /// Settings.
    pub cfg: Arc<ServerConfig>,
    /// Rate limits and the aggregation of refused requests' audit.
    pub guard: Arc<guard::Guard>,
    /// Free what-if slots ([`ServerConfig::max_concurrent_whatifs`]).
    pub whatifs: Arc<tokio::sync::Semaphore>,
}

/// An error answer: HTTP status and a reason sentence (JSON `{"error": reason}`).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Why.
    pub reason: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
        }
    }
    /// 400.
    pub fn bad(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, reason)
    }
    /// 401.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication required: Authorization: Bearer TOKEN or api-secret: SHA1(TOKEN)",
        )
    }
    /// 403.
    pub fn forbidden(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, reason)
    }
    /// 404.
    pub fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, reason)
    }
    /// 500 (the reason is logged, the answer is generic).
    pub fn internal(reason: impl std::fmt::Display) -> ApiError {
        eprintln!("medtwin serve: internal error: {reason}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see server log)",
        )
    }
}

impl From<medtwin_store::StoreError> for ApiError {
    fn from(e: medtwin_store::StoreError) -> ApiError {
        match e {
            medtwin_store::StoreError::Invalid(m) => ApiError::bad(m),
            medtwin_store::StoreError::Conflict(c) => {
                let what: Vec<String> = c.iter().map(conflict_text).collect();
                ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "nothing stored: {} conflicting with stored data (re-send the stored value, or nothing, for these times): {}",
                        c.len(),
                        what.join("; ")
                    ),
                )
            }
            other => ApiError::internal(other),
        }
    }
}

/// A conflict in a sentence naming the element (`entries[3]` for Nightscout, the `fullUrl` or
/// `Bundle.entry[i]` for FHIR), kind, time and both values.
pub fn conflict_text(c: &medtwin_store::Conflict) -> String {
    let at = c
        .source
        .strip_prefix("nightscout:")
        .or_else(|| c.source.strip_prefix("fhir:"))
        .unwrap_or(&c.source);
    format!(
        "{at}: {} at {} is stored as {} {}, this one is {} {}",
        c.kind.name(),
        c.time,
        c.stored,
        c.kind.canonical_unit(),
        c.sent,
        c.kind.canonical_unit()
    )
}

/// `Retry-After` of a `503 Service Unavailable` answer (every what-if slot busy), seconds.
pub const BUSY_RETRY_AFTER_S: u64 = 5;

impl IntoResponse for ApiError {
    /// JSON `{"error": reason}`; a 503 also carries `Retry-After` ([`BUSY_RETRY_AFTER_S`]).
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.reason })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(BUSY_RETRY_AFTER_S),
            );
        }
        r
    }
}

/// Who is calling: the principal, or why not (401). Within a request the rate-limit
/// middleware ([`guard::middleware`]) has already found out; that answer is reused.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if let Ok(known) = guard::AUTH.try_with(|a| a.clone()) {
        return known;
    }
    authenticate_headers(state, headers).await
}

/// [`authenticate`] from the request's headers (bearer token, `api-secret`, cookie).
pub async fn authenticate_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let p = if let Some(auth) = header("authorization") {
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        state.store.authenticate_token(token.trim()).await?
    } else if let Some(secret) = header("api-secret") {
        state.store.authenticate_api_secret(secret.trim()).await?
    } else if let Some(token) = cookie(headers, COOKIE) {
        state.store.authenticate_token(&token).await?
    } else {
        None
    };
    p.ok_or_else(ApiError::unauthorized)
}

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// What a request wants to do with a patient's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read (forecasts, entries, what-if, dashboard).
    Read,
    /// Write (ingest).
    Write,
}

/// Whether `p` may `access` patient `patient` (403 with the reason otherwise).
pub fn check_access(p: &Principal, patient: &str, access: Access) -> Result<(), ApiError> {
    match p.role {
        Role::Admin => Ok(()),
        Role::Device if access == Access::Read => Err(ApiError::forbidden(
            "a device token may only upload data (ingest-only)",
        )),
        Role::Clinician | Role::Device => {
            if p.patients.iter().any(|x| x == patient) {
                Ok(())
            } else {
                Err(ApiError::forbidden(format!(
                    "this {} token is not assigned to patient `{patient}`",
                    p.role
                )))
            }
        }
    }
}

/// An audit record for `principal` (or `anonymous`).
pub fn audit_entry(
    principal: Option<&Principal>,
    action: &str,
    patient: Option<&str>,
    status: StatusCode,
    detail: &str,
) -> AuditEntry {
    AuditEntry {
        at_ms: medtwin_store::now_ms(),
        actor: principal
            .map(Principal::actor)
            .unwrap_or_else(|| match guard::current_client() {
                Some(ip) => format!("anonymous@{ip}"),
                None => "anonymous".into(),
            }),
        action: action.to_string(),
        patient_id: patient.map(|p| p.chars().take(AUDIT_ID_MAX).collect()),
        outcome: status.as_u16() as i64,
        detail: detail.chars().take(500).collect(),
    }
}

/// Append an audit record; a failure to audit is logged (the answer is already decided).
pub async fn audit(
    state: &AppState,
    principal: Option<&Principal>,
    action: &str,
    patient: Option<&str>,
    status: StatusCode,
    detail: &str,
) {
    // Refused unauthenticated requests: the first of a client per minute now, the rest as
    // one aggregated record per minute (see [`guard`]).
    if principal.is_none() && status == StatusCode::UNAUTHORIZED {
        if let Some(ip) = guard::current_client() {
            if !state.guard.note_refused(ip, action, false) {
                return;
            }
        }
    }
    let e = audit_entry(principal, action, patient, status, detail);
    if let Err(err) = state.store.audit(&e).await {
        eprintln!("medtwin serve: audit write failed: {err}");
    }
}

/// Start the server in the background on the current tokio runtime: open the store
/// (migrations), start the twin workers (resuming twins that are behind their data), listen
/// on `cfg.addr`. Returns the bound address and the task serving until `shutdown` resolves.
pub async fn start(
    cfg: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<(), ServerError>>), ServerError> {
    let mut cfg = cfg;
    // TLS files first: a bad certificate or key stops the start before anything is opened.
    let tls = match &cfg.tls {
        Some(files) => {
            cfg.secure_cookies = true;
            Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(files).map_err(ServerError::Input)?,
            ))
        }
        None => None,
    };
    let store = Store::open(&cfg.db_url)
        .await?
        .with_plausibility(cfg.plausibility);
    let cfg = Arc::new(cfg);
    let live = live::Live::start(store.clone(), cfg.clone());
    let state = AppState {
        store: store.clone(),
        live,
        whatifs: Arc::new(tokio::sync::Semaphore::new(
            cfg.max_concurrent_whatifs.max(1),
        )),
        cfg: cfg.clone(),
        guard: Arc::new(
            guard::Guard::new(cfg.client_rate_per_s, cfg.client_auth_failures_per_min)
                .with_token_limit(cfg.rate_limit_per_min),
        ),
    };
    let app = api::router(state.clone());
    // Aggregated audit records of refused requests, once their minute is over.
    let flusher = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                state.guard.flush(&state, false).await;
            }
        })
    };
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| ServerError::Io(format!("cannot listen on {}: {e}", cfg.addr)))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServerError::Io(e.to_string()))?;
    eprintln!(
        "medtwin serve: database {} ({:?}), {} twin workers, {} particles",
        cfg.db_url,
        store.backend(),
        cfg.workers,
        cfg.particles
    );
    let task = tokio::spawn(async move {
        net::serve(
            listener,
            app,
            std::time::Duration::from_secs_f64(cfg.header_read_timeout_s),
            std::time::Duration::from_secs_f64(cfg.request_timeout_s),
            tls,
            shutdown,
        )
        .await;
        flusher.abort();
        state.guard.flush(&state, true).await;
        let late = state
            .live
            .shutdown(std::time::Duration::from_secs_f64(cfg.request_timeout_s))
            .await;
        if late > 0 {
            eprintln!("medtwin serve: {late} twin updates still running at shutdown (resumed at the next start)");
        }
        store.close().await;
        Ok(())
    });
    Ok((local, task))
}

/// Run the server until SIGINT (Ctrl-C) or SIGTERM (see [`start`]): then it stops accepting,
/// finishes the requests in flight and the queued twin updates, and closes the store. Prints `medtwin serve: listening on
/// http://ADDR` (`https://` with built-in TLS) once ready.
pub async fn serve(cfg: ServerConfig) -> Result<(), ServerError> {
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let (local, task) = start(cfg, async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        eprintln!("medtwin serve: stopping (finishing requests and queued twin updates)");
    })
    .await?;
    println!("medtwin serve: listening on {scheme}://{local}");
    task.await.map_err(|e| ServerError::Io(e.to_string()))?
}

/// [`serve`] on a new multi-threaded runtime (for the CLI).
pub fn serve_blocking(cfg: ServerConfig) -> Result<(), ServerError> {
    runtime()?.block_on(serve(cfg))
}

/// A multi-threaded tokio runtime.
pub fn runtime() -> Result<tokio::runtime::Runtime, ServerError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Io(e.to_string()))
}

/// A duration such as `30d`, `12h`, `90m`, `45s` or `2w` (a whole number and one unit), in
/// milliseconds. Errors: anything else, or not positive.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let bad =
        || format!("duration `{s}`: expected a whole number and a unit s, m, h, d or w (e.g. 30d)");
    let unit = s.chars().last().ok_or_else(bad)?;
    let per: i64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    let n: i64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(format!("duration `{s}` must be positive"));
    }
    n.checked_mul(per).ok_or_else(bad)
}

/// Create a token in the database at `db_url` (created and migrated if needed), valid for
/// `expires_in_ms` from now (`None`: until revoked); returns the token (shown once, stored
/// hashed). Errors: invalid role/patient combination (input).
pub fn create_token_blocking(
    db_url: &str,
    role: Role,
    patients: &[String],
    label: &str,
    expires_in_ms: Option<i64>,
) -> Result<String, ServerError> {
    runtime()?.block_on(async {
        let store = Store::open(db_url).await?;
        let t = store
            .create_token_expiring(
                role,
                patients,
                label,
                expires_in_ms.map(|d| medtwin_store::now_ms().saturating_add(d)),
            )
            .await
            .map_err(|e| match e {
                medtwin_store::StoreError::Invalid(m) => ServerError::Input(m),
                other => ServerError::Store(other),
            })?;
        store.close().await;
        Ok(t)
    })
}

/// Every token of the database at `db_url` (never the token or its digests).
pub fn list_tokens_blocking(db_url: &str) -> Result<Vec<medtwin_store::TokenInfo>, ServerError> {
    runtime()?.block_on(async {
        let store = Store::open(db_url).await?;
        let t = store.list_tokens().await?;
        store.close().await;
        Ok(t)
    })
}

/// Revoke token `id` in the database at `db_url`; a running server stops accepting it within
/// [`medtwin_store::TOKEN_CACHE_MS`]. Errors: no such token (input).
pub fn revoke_token_blocking(db_url: &str, id: i64) -> Result<(), ServerError> {
    runtime()?.block_on(async {
        let store = Store::open(db_url).await?;
        let found = store.revoke_token(id).await?;
        store.close().await;
        if found {
            Ok(())
        } else {
            Err(ServerError::Input(format!("no token with id {id}")))
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(super::parse_duration_ms("12h"), Ok(12 * 3_600_000));
        assert_eq!(super::parse_duration_ms("1s"), Ok(1000));
        for bad in [
            "",
            "d",
            "30",
            "-1d",
            "0d",
            "1.5d",
            "30x",
            "9999999999999999w",
        ] {
            assert!(super::parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
