//! # medtwin-store
//!
//! Persistence of the twin server behind one interface, [`Store`], for **SQLite** (single
//! machine; the default, `sqlite://medtwin.db`, created on first run, WAL journal) and
//! **PostgreSQL** (multi-user deployments, `postgres://user@host/db`), through sqlx's `Any`
//! driver with runtime queries only (no compile-time `query!` macros, so no database is needed
//! to build). Both back-ends get the same schema from [`MIGRATIONS`] (applied in order on open,
//! recorded in `schema_migrations`) and behave the same.
//!
//! ## Schema (times are integers: milliseconds since the Unix epoch, UTC)
//!
//! | table | holds | unique key (idempotent ingest) |
//! |---|---|---|
//! | `patients` | `id` (free text, 1–64 of `[A-Za-z0-9._-]`), created time | `id` |
//! | `observations` | glucose: `kind` `cgm` or `smbg`, value in mg/dL | `(patient_id, kind, time_ms)` |
//! | `insulin_administrations` | `kind` `bolus` (U), `basal_rate` (U/h), `long_acting` (U), insulin name | `(patient_id, kind, time_ms)` |
//! | `carbs` | carbohydrate intake, g | `(patient_id, time_ms)` |
//! | `twins` | the latest saved twin per patient (`medtwin-twin/1` JSON), version, status | `patient_id` |
//! | `forecasts` | the latest forecast per patient (JSON), the data time it is based on | `patient_id` |
//! | `tokens` | bearer tokens as keyed digests (HMAC-SHA256; never the token, never a value that authenticates), role, label, optional expiry and revocation times | both digests |
//! | `server_keys` | the random per-database key of the token digests | `name` |
//! | `token_patients` | patients a clinician or device token may access | `(token_id, patient_id)` |
//! | `audit` | who, what, which patient, when, outcome: **append-only** (database triggers reject `UPDATE` and `DELETE`) | `id` |
//!
//! Every clinical datum keeps `value` in the canonical unit of its kind (see
//! [`medtwin_io::RecordKind::canonical_unit`]), the `original_value` and `unit` as the
//! record had it, the `source_unit` exactly as the sender wrote it (e.g. the UCUM `[IU]` that
//! became `U`), the `source` (which endpoint and which element) and the `received_ms`.
//!
//! ## Durability
//!
//! Every ingest is atomic (data rows and their audit row together, or nothing). Ingests that
//! arrive together are group-committed: one transaction carries several of them, and each
//! call returns only once its transaction is committed (see [`Store::ingest`]).
//! SQLite runs in WAL mode with `synchronous = NORMAL`: a committed (acknowledged) transaction
//! survives a crash or `kill -9` of the server process; it may be lost on power failure or an
//! operating-system crash (use PostgreSQL, or `synchronous = FULL`, when that matters).
//!
//! ## Tokens
//!
//! Tokens are 32 random bytes from the operating system's generator, written `mt_` + 64 hex
//! digits. Only keyed digests are stored: HMAC-SHA256 under a random per-database key
//! (`server_keys`) of the token's SHA-256 hex (for `Authorization: Bearer`) and of its SHA-1
//! hex (for Nightscout's `api-secret` header, which carries the SHA-1 hex of the secret), so
//! a value read from the `tokens` table never authenticates (up to schema version 1 the
//! plain SHA-1 hex was stored, and worked as `api-secret`; migration 2 re-keys existing
//! tokens, which keep working). A slow password hash (argon2) is not needed for 256-bit
//! random secrets and would cost tens of milliseconds per request; the HMAC costs
//! microseconds.

#![warn(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medtwin_io::{RecordEntry, RecordKind};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not `sqlite://…` or `postgres://…` (`postgresql://…`).
    #[error("database URL `{0}`: expected sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
    /// The database refused or failed an operation.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored row could not be read back (corrupt or edited database).
    #[error("stored data: {0}")]
    Corrupt(String),
    /// A caller-side mistake (unknown patient, invalid identifier).
    #[error("{0}")]
    Invalid(String),
    /// Data that differ from those already stored at the same patient, kind and time (an
    /// ingest refused with [`OnConflict::Refuse`]; nothing of it stored).
    #[error("nothing stored: {}", conflicts_text(.0))]
    Conflict(Vec<Conflict>),
}

/// A datum whose `(patient, kind, time)` is stored with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// Index of the datum in the ingest.
    pub index: usize,
    /// Its source (e.g. `nightscout:entries[3]`, `Bundle.entry[2]`).
    pub source: String,
    /// Its kind.
    pub kind: RecordKind,
    /// Its time.
    pub time: jiff::Timestamp,
    /// The value stored (canonical unit).
    pub stored: f64,
    /// The value sent (canonical unit).
    pub sent: f64,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data[{}] ({}): conflict: {} at {} is stored as {} {}, this one is {}",
            self.index,
            self.source,
            self.kind.name(),
            self.time,
            self.stored,
            self.kind.canonical_unit(),
            self.sent
        )
    }
}

fn conflicts_text(c: &[Conflict]) -> String {
    c.iter()
        .map(Conflict::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What an ingest does with a datum that differs from the one stored at its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Refuse the whole ingest ([`StoreError::Conflict`] listing every conflict).
    Refuse,
    /// Store the rest; report the datum as [`DatumStatus::Conflict`].
    Report,
}

/// What became of one datum of an ingest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DatumStatus {
    /// Stored.
    Inserted,
    /// The same value was already stored at its time (idempotent re-send).
    Duplicate,
    /// A different value is stored at its time; not stored.
    Conflict {
        /// The value stored (canonical unit).
        stored: f64,
    },
}

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (bundled library), one file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Access role of a token (see the server's access rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, all patients.
    Admin,
    /// Read and write the patients assigned to the token.
    Clinician,
    /// Ingest only, for its one patient.
    Device,
}

impl Role {
    /// `admin`, `clinician` or `device`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Device => "device",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "clinician" => Ok(Role::Clinician),
            "device" => Ok(Role::Device),
            other => Err(format!(
                "unknown role `{other}` (expected admin, clinician or device)"
            )),
        }
    }
}

/// An authenticated token: its row id, role and the patients it is limited to (empty for
/// admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `tokens.id`.
    pub token_id: i64,
    /// Role.
    pub role: Role,
    /// Patients a clinician or device token may access.
    pub patients: Vec<String>,
}

impl Principal {
    /// Audit name of the actor, e.g. `token:3/clinician`.
    pub fn actor(&self) -> String {
        format!("token:{}/{}", self.token_id, self.role)
    }
}

/// One audit record to append.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who: `token:ID/ROLE`, or `anonymous@ADDRESS` (client address) when unauthenticated.
    pub actor: String,
    /// What: method and route, e.g. `POST /fhir/Bundle`.
    pub action: String,
    /// Which patient, when the request concerns one.
    pub patient_id: Option<String>,
    /// HTTP status of the answer.
    pub outcome: i64,
    /// Short free text (counts, the reason of a refusal).
    pub detail: String,
}

/// One stored audit record ([`AuditEntry`] plus its row id).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRow {
    /// Row id (increasing).
    pub id: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Which patient.
    pub patient_id: Option<String>,
    /// HTTP status.
    pub outcome: i64,
    /// Details.
    pub detail: String,
}

/// A clinical datum to store: a validated [`RecordEntry`] plus what the sender wrote as unit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDatum {
    /// The patient it belongs to.
    pub patient_id: String,
    /// The validated entry (canonical value, original value and unit, source).
    pub entry: RecordEntry,
    /// The unit exactly as received (e.g. `[IU]`, `mg/dl`); usually equal to `entry.unit`.
    pub source_unit: String,
}

/// Counts of one ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct IngestOutcome {
    /// Rows stored.
    pub inserted: usize,
    /// Rows already present with the same value (same patient, kind and time): not stored
    /// again.
    pub duplicates: usize,
    /// Rows whose patient, kind and time are stored with a different value: not stored.
    pub conflicts: usize,
    /// Of the inserted rows, CGM readings.
    pub inserted_cgm: usize,
}

/// A datum read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDatum {
    /// The entry, rebuilt with [`RecordEntry::new`] from the stored original value and unit.
    pub entry: RecordEntry,
    /// Unit as received.
    pub source_unit: String,
    /// When the server received it, ms since the epoch.
    pub received_ms: i64,
}

/// A patient and what the dashboard shows about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PatientSummary {
    /// Identifier.
    pub id: String,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Latest CGM reading `(time ms, mg/dL)`.
    pub latest_cgm: Option<(i64, f64)>,
    /// Number of CGM readings.
    pub n_cgm: i64,
}

/// The saved twin of a patient.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinRow {
    /// Incremented on every save.
    pub version: i64,
    /// `ok` (a twin document is present) or `waiting` / `failed` (see `message`).
    pub status: String,
    /// Why the twin is waiting or failed.
    pub message: String,
    /// Time of the last CGM reading the twin has assimilated (or, when waiting/failed, the last
    /// one considered), ms since the epoch.
    pub data_time_ms: i64,
    /// The `medtwin-twin/1` JSON document, when status is `ok`.
    pub doc: Option<String>,
    /// When saved, ms since the epoch.
    pub updated_ms: i64,
}

/// The latest forecast of a patient.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastRow {
    /// Data time (last assimilated CGM reading), ms since the epoch.
    pub data_time_ms: i64,
    /// When computed, ms since the epoch.
    pub computed_ms: i64,
    /// The forecast JSON (server's `ForecastDoc`).
    pub doc: String,
}

/// Migrations, applied in order: `(version, SQLite SQL, PostgreSQL SQL)`. Statements are
/// separated by `;;` (trigger bodies contain `;`).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, SCHEMA_V1_SQLITE, SCHEMA_V1_PG),
    (2, SCHEMA_V2, SCHEMA_V2),
    (3, SCHEMA_V3, SCHEMA_V3),
    (4, SCHEMA_V4, SCHEMA_V4),
];

/// Version 4: each patient's latest therapy profile (the Nightscout profile document as
/// uploaded: scheduled basal rates, ISF, carbohydrate ratios), used to resolve relative
/// (percent) temporary basal rates.
const SCHEMA_V4: &str = "
CREATE TABLE profiles (
  patient_id TEXT PRIMARY KEY REFERENCES patients(id),
  updated_ms BIGINT NOT NULL,
  doc TEXT NOT NULL
)";

/// Version 3: tokens may expire and be revoked (`medtwin token revoke`).
const SCHEMA_V3: &str = "
ALTER TABLE tokens ADD COLUMN expires_ms BIGINT;;
ALTER TABLE tokens ADD COLUMN revoked_ms BIGINT";

/// Version 2: tokens keep keyed digests (HMAC-SHA256 under a random per-database key in
/// `server_keys`) instead of plain SHA-256/SHA-1 digests, so a value read from the database
/// never authenticates. Existing rows are re-keyed by the migration (see
/// [`Store::authenticate_token`]).
const SCHEMA_V2: &str = "
CREATE TABLE server_keys (
  name TEXT PRIMARY KEY,
  key_hex TEXT NOT NULL
);;
ALTER TABLE tokens RENAME COLUMN sha256_hex TO bearer_mac;;
ALTER TABLE tokens RENAME COLUMN sha1_hex TO secret_mac";

/// `server_keys.name` of the token MAC key.
const TOKEN_KEY: &str = "token_mac";

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for i in 0..64 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer);
    out
}

/// The stored form of a bearer token: HMAC(key, "bearer" NUL sha256_hex(token)).
fn bearer_mac(key: &[u8], sha256: &str) -> String {
    hex(&hmac_sha256(key, format!("bearer\0{sha256}").as_bytes()))
}

/// The stored form of a Nightscout `api-secret` (SHA-1 hex of the token, lower case):
/// HMAC(key, "api-secret" NUL sha1_hex).
fn secret_mac(key: &[u8], sha1: &str) -> String {
    hex(&hmac_sha256(key, format!("api-secret\0{sha1}").as_bytes()))
}

const SCHEMA_V1_COMMON: &str = "
CREATE TABLE patients (
  id TEXT PRIMARY KEY,
  created_ms BIGINT NOT NULL
);;
CREATE TABLE observations (
  id {ID},
  patient_id TEXT NOT NULL REFERENCES patients(id),
  kind TEXT NOT NULL CHECK (kind IN ('cgm','smbg')),
  time_ms BIGINT NOT NULL,
  value_mg_dl DOUBLE PRECISION NOT NULL,
  original_value DOUBLE PRECISION NOT NULL,
  unit TEXT NOT NULL,
  source_unit TEXT NOT NULL,
  source TEXT NOT NULL,
  received_ms BIGINT NOT NULL,
  UNIQUE (patient_id, kind, time_ms)
);;
CREATE TABLE insulin_administrations (
  id {ID},
  patient_id TEXT NOT NULL REFERENCES patients(id),
  kind TEXT NOT NULL CHECK (kind IN ('bolus','basal_rate','long_acting')),
  time_ms BIGINT NOT NULL,
  value DOUBLE PRECISION NOT NULL,
  original_value DOUBLE PRECISION NOT NULL,
  unit TEXT NOT NULL,
  source_unit TEXT NOT NULL,
  insulin TEXT,
  source TEXT NOT NULL,
  received_ms BIGINT NOT NULL,
  UNIQUE (patient_id, kind, time_ms)
);;
CREATE TABLE carbs (
  id {ID},
  patient_id TEXT NOT NULL REFERENCES patients(id),
  time_ms BIGINT NOT NULL,
  value_g DOUBLE PRECISION NOT NULL,
  original_value DOUBLE PRECISION NOT NULL,
  unit TEXT NOT NULL,
  source_unit TEXT NOT NULL,
  source TEXT NOT NULL,
  received_ms BIGINT NOT NULL,
  UNIQUE (patient_id, time_ms)
);;
CREATE TABLE twins (
  patient_id TEXT PRIMARY KEY REFERENCES patients(id),
  version BIGINT NOT NULL,
  model TEXT NOT NULL,
  status TEXT NOT NULL,
  message TEXT NOT NULL,
  data_time_ms BIGINT NOT NULL,
  doc TEXT,
  updated_ms BIGINT NOT NULL
);;
CREATE TABLE forecasts (
  patient_id TEXT PRIMARY KEY REFERENCES patients(id),
  data_time_ms BIGINT NOT NULL,
  computed_ms BIGINT NOT NULL,
  doc TEXT NOT NULL
);;
CREATE TABLE tokens (
  id {ID},
  sha256_hex TEXT NOT NULL UNIQUE,
  sha1_hex TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL CHECK (role IN ('admin','clinician','device')),
  label TEXT NOT NULL,
  created_ms BIGINT NOT NULL
);;
CREATE TABLE token_patients (
  token_id BIGINT NOT NULL REFERENCES tokens(id),
  patient_id TEXT NOT NULL,
  PRIMARY KEY (token_id, patient_id)
);;
CREATE TABLE audit (
  id {ID},
  at_ms BIGINT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  patient_id TEXT,
  outcome BIGINT NOT NULL,
  detail TEXT NOT NULL
);;
CREATE INDEX audit_patient ON audit (patient_id, id)";

const SCHEMA_V1_SQLITE: &str = "{COMMON};;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END";

const SCHEMA_V1_PG: &str = "{COMMON};;
CREATE FUNCTION medtwin_audit_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'audit records are append-only'; END; $$ LANGUAGE plpgsql;;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION medtwin_audit_append_only();;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION medtwin_audit_append_only()";

/// Milliseconds since the epoch of a timestamp.
pub fn to_ms(t: jiff::Timestamp) -> i64 {
    t.as_millisecond()
}

/// The current time, ms since the epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// SHA-256 hex digest of a token (what [`Store::authenticate_token`] keys and compares).
pub fn sha256_hex(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// SHA-1 hex digest of a token: what Nightscout clients send as `api-secret`.
pub fn sha1_hex(token: &str) -> String {
    hex(&Sha1::digest(token.as_bytes()))
}

/// 2000-01-01T00:00:00Z in milliseconds since the epoch: the default earliest plausible time
/// of a datum ([`Plausibility::earliest_ms`]).
pub const EARLIEST_PLAUSIBLE_MS: i64 = 946_684_800_000;

/// Plausibility limits applied at ingest (FHIR and Nightscout uploads, and
/// [`Store::ingest`] itself): data outside them are refused, never stored.
///
/// Defaults ([`Plausibility::default`]): no datum before 2000-01-01T00:00Z or more than
/// 300 s (5 min) after the server's clock; bolus ≤ 100 U, long-acting dose ≤ 300 U, basal
/// rate ≤ 35 U/h, carbohydrate ≤ 500 g. Glucose has its own fixed range, checked when the entry
/// is built (> 0 and ≤ [`medtwin_io::GLUCOSE_MAX_MG_DL`] mg/dL).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plausibility {
    /// Earliest accepted time, ms since the epoch.
    pub earliest_ms: i64,
    /// How far in the future (server clock) a datum may be, s (clock skew between devices).
    pub future_tolerance_s: i64,
    /// Largest bolus, U.
    pub max_bolus_u: f64,
    /// Largest long-acting (basal injection) dose, U.
    pub max_long_acting_u: f64,
    /// Largest basal rate, U/h.
    pub max_basal_u_h: f64,
    /// Largest carbohydrate intake, g.
    pub max_carbs_g: f64,
}

impl Default for Plausibility {
    fn default() -> Plausibility {
        Plausibility {
            earliest_ms: EARLIEST_PLAUSIBLE_MS,
            future_tolerance_s: 300,
            max_bolus_u: 100.0,
            max_long_acting_u: 300.0,
            max_basal_u_h: 35.0,
            max_carbs_g: 500.0,
        }
    }
}

impl Plausibility {
    /// Why time `t` is implausible when received at `now`, if it is.
    pub fn check_time(&self, t: jiff::Timestamp, now: jiff::Timestamp) -> Result<(), String> {
        let ms = t.as_millisecond();
        if ms < self.earliest_ms {
            let earliest = jiff::Timestamp::from_millisecond(self.earliest_ms)
                .map(|x| x.to_string())
                .unwrap_or_else(|_| self.earliest_ms.to_string());
            return Err(format!(
                "time {t} is before the earliest plausible time {earliest}"
            ));
        }
        if ms > now.as_millisecond() + self.future_tolerance_s * 1000 {
            return Err(format!(
                "time {t} is in the future (server time {now}; tolerance {} s)",
                self.future_tolerance_s
            ));
        }
        Ok(())
    }

    /// Why a value of `kind` (canonical unit) is implausible, if it is.
    pub fn check_value(&self, kind: RecordKind, value: f64) -> Result<(), String> {
        let (max, unit) = match kind {
            RecordKind::Bolus => (self.max_bolus_u, "U"),
            RecordKind::LongActing => (self.max_long_acting_u, "U"),
            RecordKind::BasalRate => (self.max_basal_u_h, "U/h"),
            RecordKind::Carbs => (self.max_carbs_g, "g"),
            RecordKind::Cgm | RecordKind::Smbg => return Ok(()),
        };
        if value > max {
            return Err(format!(
                "implausible {kind} {value} {unit} (limit {max} {unit})"
            ));
        }
        Ok(())
    }

    /// Every reason an entry is implausible at `now`: `(true, reason)` for its time,
    /// `(false, reason)` for its value.
    pub fn check(&self, e: &RecordEntry, now: jiff::Timestamp) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        if let Err(m) = self.check_time(e.time, now) {
            out.push((true, m));
        }
        if let Err(m) = self.check_value(e.kind, e.value) {
            out.push((false, m));
        }
        out
    }
}

/// Whether `id` is a valid patient identifier: 1–64 characters of `A–Z a–z 0–9 . _ -`
/// (the FHIR `id` alphabet).
pub fn valid_patient_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Create the SQLite database file of URL remainder `rest` (`//PATH[?…]`) with mode 0600
/// (owner read/write only) when it does not exist yet, so patient data are never readable by
/// other users of the machine. SQLite creates the `-wal` and `-shm` files with the database
/// file's mode. An existing file keeps its mode. No effect for `:memory:` or off Unix.
fn create_private(rest: &str) -> Result<(), StoreError> {
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(':') {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError::Db(sqlx::Error::Io(e)));
            }
        }
    }
    Ok(())
}

/// The persistence handle (cheap to clone; a connection pool inside).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    cache: Arc<Caches>,
    limits: Plausibility,
}

/// How long an authenticated token is remembered without asking the database again, ms. It
/// bounds how long a token revoked by another process (`medtwin token revoke` while the
/// server runs) stays usable: revocation takes effect within this time (a revocation through
/// the same [`Store`] at once). Under load it costs at most two token look-ups per token and
/// second.
pub const TOKEN_CACHE_MS: u64 = 500;

/// A token as listed by [`Store::list_tokens`] (never the token or its digests).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// `tokens.id` (what `medtwin token revoke` takes).
    pub id: i64,
    /// Role.
    pub role: Role,
    /// Free label given at creation.
    pub label: String,
    /// Patients it is limited to.
    pub patients: Vec<String>,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Expiry, ms since the epoch (`None`: never).
    pub expires_ms: Option<i64>,
    /// Revoked, ms since the epoch.
    pub revoked_ms: Option<i64>,
}

/// An authenticated token in the cache: principal, when looked up, expiry (ms).
type CachedPrincipal = (Principal, Instant, Option<i64>);

/// In-memory knowledge that saves database round trips on every request: authenticated
/// tokens (by digest, for [`TOKEN_CACHE_MS`]) and patients known to exist (patients are never
/// deleted).
#[derive(Debug, Default)]
struct Caches {
    principals: Mutex<HashMap<String, CachedPrincipal>>,
    /// The token MAC key (`server_keys`), loaded on open.
    mac_key: std::sync::OnceLock<Vec<u8>>,
    patients: Mutex<HashSet<String>>,
    /// The group-commit queue ([`Store::ingest`]); set on open.
    committer: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Pending>>>,
}

impl Caches {
    fn knows_patient(&self, id: &str) -> bool {
        self.patients
            .lock()
            .map(|s| s.contains(id))
            .unwrap_or(false)
    }
    fn add_patients<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut s) = self.patients.lock() {
            s.extend(ids.into_iter().map(str::to_string));
        }
    }
}

fn table_of(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Cgm | RecordKind::Smbg => "observations",
        RecordKind::Bolus | RecordKind::BasalRate | RecordKind::LongActing => {
            "insulin_administrations"
        }
        RecordKind::Carbs => "carbs",
    }
}

impl Store {
    /// Open (and create, for SQLite) the database at `url` and apply pending [`MIGRATIONS`].
    ///
    /// `url`: `sqlite://PATH` (relative or absolute; the file is created when missing, with
    /// mode 0600, and so are its `-wal` and `-shm` files) or
    /// `postgres://…` / `postgresql://…`. SQLite connections run `journal_mode = WAL`,
    /// `synchronous = NORMAL`, `busy_timeout = 30 s`, `foreign_keys = ON`.
    ///
    /// Errors: an unknown URL scheme ([`StoreError::Url`]); the database cannot be reached or
    /// migrated ([`StoreError::Db`]).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_upto(url, i64::MAX).await
    }

    /// [`Store::open`], applying the migrations up to version `upto` only (tests of
    /// migrations).
    async fn open_upto(url: &str, upto: i64) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            create_private(rest)?;
            let mut u = format!("sqlite:{rest}");
            if !rest.contains("mode=") {
                u.push_str(if rest.contains('?') { "&" } else { "?" });
                u.push_str("mode=rwc");
            }
            (Backend::Sqlite, u)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let max = match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for p in [
                            "PRAGMA busy_timeout = 30000",
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(p).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = Store {
            pool,
            backend,
            cache: Arc::new(Caches::default()),
            limits: Plausibility::default(),
        };
        store.migrate(upto).await?;
        if upto >= 2 {
            store.load_key().await?;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(mut c) = store.cache.committer.lock() {
            *c = Some(tx);
        }
        // The loop holds a store whose cache has no committer (no cycle keeps it alive once
        // every other handle is gone).
        let loop_store = Store {
            pool: store.pool.clone(),
            backend: store.backend,
            cache: Arc::new(Caches::default()),
            limits: store.limits,
        };
        tokio::spawn(loop_store.committer(rx));
        Ok(store)
    }

    /// Begin a write transaction. On SQLite `BEGIN IMMEDIATE` takes the write lock at once
    /// (waiting up to the busy timeout), so a transaction that reads before it writes cannot
    /// fail with `SQLITE_BUSY` when another connection commits in between.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// This store with other plausibility limits for [`Store::ingest`] (default
    /// [`Plausibility::default`]).
    pub fn with_plausibility(mut self, limits: Plausibility) -> Store {
        self.limits = limits;
        self
    }

    /// The plausibility limits of [`Store::ingest`].
    pub fn plausibility(&self) -> Plausibility {
        self.limits
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Load the token MAC key (created by migration 2).
    async fn load_key(&self) -> Result<(), StoreError> {
        let r = sqlx::query("SELECT key_hex FROM server_keys WHERE name = $1")
            .bind(TOKEN_KEY)
            .fetch_one(&self.pool)
            .await?;
        let key_hex: String = r.try_get(0)?;
        let key = unhex(&key_hex)
            .ok_or_else(|| StoreError::Corrupt("server_keys: key is not hex".into()))?;
        let _ = self.cache.mac_key.set(key);
        Ok(())
    }

    fn mac_key(&self) -> &[u8] {
        self.cache.mac_key.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// A write transaction that also holds the migration lock: on PostgreSQL a
    /// transaction-level advisory lock, so that servers or tests opening the same database at
    /// once apply each migration exactly once (concurrent `CREATE TABLE` of one name fails
    /// there even with `IF NOT EXISTS`); on SQLite `BEGIN IMMEDIATE` already serialises.
    async fn begin_migration(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7240531013)")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    async fn migrate(&self, upto: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_migration().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        for &(version, sqlite, pg) in MIGRATIONS.iter().filter(|m| m.0 <= upto) {
            let mut tx = self.begin_migration().await?;
            let done: Option<i64> =
                sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.get(0));
            if done.is_some() {
                continue;
            }
            let (template, id) = match self.backend {
                Backend::Sqlite => (sqlite, "INTEGER PRIMARY KEY AUTOINCREMENT"),
                Backend::Postgres => (pg, "BIGSERIAL PRIMARY KEY"),
            };
            let sql = template
                .replace("{COMMON}", SCHEMA_V1_COMMON)
                .replace("{ID}", id);
            for stmt in sql.split(";;") {
                if !stmt.trim().is_empty() {
                    // Constant schema text (MIGRATIONS), not request data.
                    sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if version == 2 {
                rekey_tokens(&mut tx).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)")
                .bind(version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Store `doc` (JSON text) as the therapy profile of `patient` (replacing the previous
    /// one), with its audit record, in one transaction. The patient must exist.
    pub async fn save_profile(
        &self,
        patient: &str,
        doc: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO profiles (patient_id, updated_ms, doc) VALUES ($1, $2, $3)
             ON CONFLICT (patient_id) DO UPDATE SET updated_ms = excluded.updated_ms, doc = excluded.doc",
        )
        .bind(patient)
        .bind(now_ms())
        .bind(doc)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The therapy profile of `patient` (JSON text, see [`Store::save_profile`]), if any.
    pub async fn load_profile(&self, patient: &str) -> Result<Option<String>, StoreError> {
        let r = sqlx::query("SELECT doc FROM profiles WHERE patient_id = $1")
            .bind(patient)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| r.try_get(0).map_err(StoreError::from))
            .transpose()
    }

    /// Create a patient. Returns `true` when created, `false` when it already existed.
    ///
    /// Errors: invalid identifier ([`valid_patient_id`]) as [`StoreError::Invalid`].
    pub async fn create_patient(&self, id: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        if !valid_patient_id(id) {
            return Err(StoreError::Invalid(format!(
                "patient id `{id}` must be 1-64 characters of A-Z a-z 0-9 . _ -"
            )));
        }
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "INSERT INTO patients (id, created_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.cache.add_patients([id]);
        Ok(n == 1)
    }

    /// Whether a patient exists.
    pub async fn patient_exists(&self, id: &str) -> Result<bool, StoreError> {
        if self.cache.knows_patient(id) {
            return Ok(true);
        }
        let exists = sqlx::query("SELECT 1 FROM patients WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        if exists {
            self.cache.add_patients([id]);
        }
        Ok(exists)
    }

    /// All patients (sorted by id) with their latest CGM reading and CGM count.
    pub async fn list_patients(&self) -> Result<Vec<PatientSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.created_ms,
               (SELECT COUNT(*) FROM observations o WHERE o.patient_id = p.id AND o.kind = 'cgm'),
               (SELECT MAX(o.time_ms) FROM observations o WHERE o.patient_id = p.id AND o.kind = 'cgm')
             FROM patients p ORDER BY p.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get(0)?;
            let last: Option<i64> = r.try_get(3)?;
            let latest_cgm = match last {
                Some(t) => {
                    let v: Option<f64> = sqlx::query(
                        "SELECT value_mg_dl FROM observations WHERE patient_id = $1 AND kind = 'cgm' AND time_ms = $2",
                    )
                    .bind(&id)
                    .bind(t)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                    v.map(|v| (t, v))
                }
                None => None,
            };
            out.push(PatientSummary {
                id,
                created_ms: r.try_get(1)?,
                n_cgm: r.try_get(2)?,
                latest_cgm,
            });
        }
        Ok(out)
    }

    /// Store one ingest **atomically**: create `new_patients` (existing ones are left alone),
    /// insert `data` (each [`NewDatum`] names its patient), append every `audit` record;
    /// either all of it is committed or nothing is. A datum whose `(patient, kind, time)` is
    /// already stored with the same value is skipped and counted as a duplicate (idempotent
    /// ingest); with a different value, the whole ingest is refused
    /// ([`StoreError::Conflict`]; see [`Store::ingest_with`] to store the rest).
    ///
    /// **Group commit**: ingests that arrive while a transaction is being written wait and are
    /// committed together in the next one (up to [`GROUP_COMMIT_MAX`]), which saves the
    /// per-transaction cost under load; the call returns only after its data are committed.
    /// If a group fails, each of its ingests is retried in its own transaction, so one
    /// ingest's failure never affects another's.
    ///
    /// Returns the counts and, per datum, whether it was inserted (`false`: duplicate).
    ///
    /// Errors: an invalid patient id, a datum for a patient that does not exist (and is not
    /// in `new_patients`), or data outside the [`Plausibility`] limits (every one named as
    /// `data[i]` with its source) ([`StoreError::Invalid`], nothing stored); database failure
    /// (nothing stored).
    pub async fn ingest(
        &self,
        new_patients: &[String],
        data: &[NewDatum],
        received_ms: i64,
        audit: &[AuditEntry],
    ) -> Result<(IngestOutcome, Vec<bool>), StoreError> {
        let (out, st) = self
            .ingest_with(new_patients, data, received_ms, audit, OnConflict::Refuse)
            .await?;
        Ok((
            out,
            st.iter().map(|s| *s == DatumStatus::Inserted).collect(),
        ))
    }

    /// [`Store::ingest`] with a choice of what a conflicting datum does: refuse the ingest, or
    /// leave that datum out and report it ([`DatumStatus::Conflict`]). Returns the counts and
    /// each datum's status.
    pub async fn ingest_with(
        &self,
        new_patients: &[String],
        data: &[NewDatum],
        received_ms: i64,
        audit: &[AuditEntry],
        on_conflict: OnConflict,
    ) -> Result<(IngestOutcome, Vec<DatumStatus>), StoreError> {
        for p in new_patients {
            if !valid_patient_id(p) {
                return Err(StoreError::Invalid(format!(
                    "patient id `{p}` must be 1-64 characters of A-Z a-z 0-9 . _ -"
                )));
            }
        }
        let now = jiff::Timestamp::now();
        let implausible: Vec<String> = data
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                self.limits
                    .check(&d.entry, now)
                    .into_iter()
                    .map(move |(_, m)| format!("data[{i}] ({}): {m}", d.entry.source))
            })
            .collect();
        if !implausible.is_empty() {
            return Err(StoreError::Invalid(format!(
                "nothing stored: {}",
                implausible.join("; ")
            )));
        }
        let mut checked: Vec<&str> = Vec::new();
        for d in data {
            let p = d.patient_id.as_str();
            if checked.contains(&p) || new_patients.iter().any(|n| n == p) {
                continue;
            }
            // Patients are never deleted: once seen, a patient exists for good.
            if !self.patient_exists(p).await? {
                return Err(StoreError::Invalid(format!("unknown patient `{p}`")));
            }
            checked.push(p);
        }
        let job = IngestJob {
            new_patients: new_patients.to_vec(),
            data: data.to_vec(),
            received_ms,
            audit: audit.to_vec(),
            on_conflict,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = match self.cache.committer.lock() {
            Ok(c) => c.as_ref().map(|c| c.send((job, tx))),
            Err(_) => None,
        };
        match sent {
            Some(Ok(())) => rx
                .await
                .map_err(|_| StoreError::Db(sqlx::Error::PoolClosed))?,
            Some(Err(e)) => self.ingest_alone(&e.0 .0).await,
            None => Err(StoreError::Db(sqlx::Error::PoolClosed)),
        }
    }

    /// One ingest in its own transaction.
    async fn ingest_alone(&self, job: &IngestJob) -> IngestResult {
        let mut tx = self.begin_write().await?;
        let r = ingest_in(&mut tx, job).await?;
        tx.commit().await?;
        self.cache.add_patients(job.patients());
        Ok(r)
    }

    /// The group-commit loop: takes the ingests waiting, writes them in one transaction.
    async fn committer(self, mut rx: tokio::sync::mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < GROUP_COMMIT_MAX {
                match rx.try_recv() {
                    Ok(j) => group.push(j),
                    Err(_) => break,
                }
            }
            let together = async {
                let mut tx = self.begin_write().await?;
                let mut outs = Vec::with_capacity(group.len());
                for (job, _) in &group {
                    outs.push(ingest_in(&mut tx, job).await?);
                }
                tx.commit().await?;
                Ok::<_, StoreError>(outs)
            }
            .await;
            match together {
                Ok(outs) => {
                    for ((job, reply), out) in group.into_iter().zip(outs) {
                        self.cache.add_patients(job.patients());
                        let _ = reply.send(Ok(out));
                    }
                }
                Err(_) => {
                    for (job, reply) in group {
                        let _ = reply.send(self.ingest_alone(&job).await);
                    }
                }
            }
        }
    }

    /// Every stored datum of a patient with `time_ms >= from_ms`, all kinds, sorted by time.
    pub async fn data(&self, patient: &str, from_ms: i64) -> Result<Vec<StoredDatum>, StoreError> {
        let mut out = Vec::new();
        for (sql, has_kind, has_insulin) in [
            ("SELECT kind, time_ms, original_value, unit, source_unit, source, received_ms FROM observations WHERE patient_id = $1 AND time_ms >= $2", true, false),
            ("SELECT kind, time_ms, original_value, unit, source_unit, source, received_ms, insulin FROM insulin_administrations WHERE patient_id = $1 AND time_ms >= $2", true, true),
            ("SELECT 'carbs', time_ms, original_value, unit, source_unit, source, received_ms FROM carbs WHERE patient_id = $1 AND time_ms >= $2", false, false),
        ] {
            let rows = sqlx::query(sql).bind(patient).bind(from_ms).fetch_all(&self.pool).await?;
            for r in rows {
                out.push(datum_of(&r, has_kind, has_insulin)?);
            }
        }
        out.sort_by_key(|d| d.entry.time);
        Ok(out)
    }

    /// What a live twin needs to continue from `since_ms` (its current time): CGM readings,
    /// boluses, carbohydrate and pump basal-rate changes at or after `since_ms`, the pump basal
    /// rate in force at `since_ms` (the latest change before it, if any), and long-acting doses
    /// at or after `long_acting_since_ms` (their action window reaches back). SMBG is left out
    /// (the twin does not use it). Sorted by time.
    ///
    /// Cost: a few indexed range queries whose size is the new data, not the patient's
    /// history. Errors: database failure, or a stored row that no longer validates
    /// ([`StoreError::Corrupt`]).
    pub async fn twin_data(
        &self,
        patient: &str,
        since_ms: i64,
        long_acting_since_ms: i64,
    ) -> Result<Vec<StoredDatum>, StoreError> {
        // One statement (one round trip): the parts of the window as a UNION.
        let rows = sqlx::query(
            "SELECT kind, time_ms, original_value, unit, source_unit, source, received_ms, CAST(NULL AS TEXT)
               FROM observations WHERE patient_id = $1 AND kind = 'cgm' AND time_ms >= $2
             UNION ALL
             SELECT kind, time_ms, original_value, unit, source_unit, source, received_ms, insulin
               FROM insulin_administrations WHERE patient_id = $1 AND kind IN ('bolus', 'basal_rate') AND time_ms >= $2
             UNION ALL
             SELECT kind, time_ms, original_value, unit, source_unit, source, received_ms, insulin
               FROM insulin_administrations WHERE patient_id = $1 AND kind = 'basal_rate'
               AND time_ms = (SELECT MAX(time_ms) FROM insulin_administrations
                              WHERE patient_id = $1 AND kind = 'basal_rate' AND time_ms < $2)
             UNION ALL
             SELECT kind, time_ms, original_value, unit, source_unit, source, received_ms, insulin
               FROM insulin_administrations WHERE patient_id = $1 AND kind = 'long_acting' AND time_ms >= $3
             UNION ALL
             SELECT 'carbs', time_ms, original_value, unit, source_unit, source, received_ms, CAST(NULL AS TEXT)
               FROM carbs WHERE patient_id = $1 AND time_ms >= $2",
        )
        .bind(patient)
        .bind(since_ms)
        .bind(long_acting_since_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| datum_of(r, true, true))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|d| d.entry.time);
        Ok(out)
    }

    /// The latest `count` CGM readings of a patient, newest first.
    pub async fn latest_cgm(
        &self,
        patient: &str,
        count: i64,
    ) -> Result<Vec<StoredDatum>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, time_ms, original_value, unit, source_unit, source, received_ms FROM observations
             WHERE patient_id = $1 AND kind = 'cgm' ORDER BY time_ms DESC LIMIT $2",
        )
        .bind(patient)
        .bind(count)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| datum_of(r, true, false)).collect()
    }

    /// Number of rows of a patient in each of `observations`, `insulin_administrations`,
    /// `carbs`.
    pub async fn counts(&self, patient: &str) -> Result<[i64; 3], StoreError> {
        let mut out = [0i64; 3];
        for (i, k) in [RecordKind::Cgm, RecordKind::Bolus, RecordKind::Carbs]
            .into_iter()
            .enumerate()
        {
            let sql = format!("SELECT COUNT(*) FROM {} WHERE patient_id = $1", table_of(k));
            out[i] = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(patient)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        }
        Ok(out)
    }

    /// `(count, first time ms, last time ms)` of a patient's CGM readings.
    pub async fn cgm_span(
        &self,
        patient: &str,
    ) -> Result<(i64, Option<i64>, Option<i64>), StoreError> {
        let r = sqlx::query(
            "SELECT COUNT(*), MIN(time_ms), MAX(time_ms) FROM observations WHERE patient_id = $1 AND kind = 'cgm'",
        )
        .bind(patient)
        .fetch_one(&self.pool)
        .await?;
        Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
    }

    /// Time of the patient's first stored CGM reading (the start of its record), if any, ms.
    pub async fn record_start(&self, patient: &str) -> Result<Option<i64>, StoreError> {
        let r = sqlx::query(
            "SELECT MIN(time_ms) FROM observations WHERE patient_id = $1 AND kind = 'cgm'",
        )
        .bind(patient)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get(0)?)
    }

    /// The saved twin of a patient, if any.
    pub async fn load_twin(&self, patient: &str) -> Result<Option<TwinRow>, StoreError> {
        let r = sqlx::query(
            "SELECT version, status, message, data_time_ms, doc, updated_ms FROM twins WHERE patient_id = $1",
        )
        .bind(patient)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(TwinRow {
                version: r.try_get(0)?,
                status: r.try_get(1)?,
                message: r.try_get(2)?,
                data_time_ms: r.try_get(3)?,
                doc: r.try_get(4)?,
                updated_ms: r.try_get(5)?,
            })
        })
        .transpose()
    }

    /// Status and data time (ms) of a patient's saved twin, without its document (cheap).
    pub async fn twin_status(&self, patient: &str) -> Result<Option<(String, i64)>, StoreError> {
        let r = sqlx::query("SELECT status, data_time_ms FROM twins WHERE patient_id = $1")
            .bind(patient)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// Remove a patient's stored forecast (it no longer matches the twin).
    pub async fn delete_forecast(&self, patient: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM forecasts WHERE patient_id = $1")
            .bind(patient)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Data time (ms) of a patient's stored forecast, without its document (cheap).
    pub async fn forecast_time(&self, patient: &str) -> Result<Option<i64>, StoreError> {
        let r = sqlx::query("SELECT data_time_ms FROM forecasts WHERE patient_id = $1")
            .bind(patient)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// Save (insert or replace) the twin of a patient; the version is incremented. `doc` is
    /// the twin JSON when `status` is `ok`, `None` otherwise.
    pub async fn save_twin(
        &self,
        patient: &str,
        status: &str,
        message: &str,
        data_time_ms: i64,
        doc: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO twins (patient_id, version, model, status, message, data_time_ms, doc, updated_ms)
             VALUES ($1, 1, 'uva-padova-s2008', $2, $3, $4, $5, $6)
             ON CONFLICT (patient_id) DO UPDATE SET version = twins.version + 1, status = excluded.status,
               message = excluded.message, data_time_ms = excluded.data_time_ms, doc = excluded.doc,
               updated_ms = excluded.updated_ms",
        )
        .bind(patient)
        .bind(status)
        .bind(message)
        .bind(data_time_ms)
        .bind(doc.map(str::to_string))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Save (insert or replace) the latest forecast of a patient. A forecast based on older
    /// data than the stored one does not replace it (forecasts may be computed concurrently).
    pub async fn save_forecast(
        &self,
        patient: &str,
        data_time_ms: i64,
        doc: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO forecasts (patient_id, data_time_ms, computed_ms, doc) VALUES ($1, $2, $3, $4)
             ON CONFLICT (patient_id) DO UPDATE SET data_time_ms = excluded.data_time_ms,
               computed_ms = excluded.computed_ms, doc = excluded.doc
             WHERE forecasts.data_time_ms <= excluded.data_time_ms",
        )
        .bind(patient)
        .bind(data_time_ms)
        .bind(now_ms())
        .bind(doc)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest forecast of a patient, if any.
    pub async fn load_forecast(&self, patient: &str) -> Result<Option<ForecastRow>, StoreError> {
        let r = sqlx::query(
            "SELECT data_time_ms, computed_ms, doc FROM forecasts WHERE patient_id = $1",
        )
        .bind(patient)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(ForecastRow {
                data_time_ms: r.try_get(0)?,
                computed_ms: r.try_get(1)?,
                doc: r.try_get(2)?,
            })
        })
        .transpose()
    }

    /// Patients whose twin has not seen their latest CGM reading (or who have no twin row yet
    /// but have CGM): the work a restarted server resumes.
    pub async fn patients_behind(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id FROM patients p LEFT JOIN twins t ON t.patient_id = p.id
             WHERE EXISTS (SELECT 1 FROM observations o WHERE o.patient_id = p.id AND o.kind = 'cgm'
                           AND o.time_ms > COALESCE(t.data_time_ms, -1))
             ORDER BY p.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// Patients whose calibrated twin is newer than their stored forecast (or who have none):
    /// the forecasts an idle server computes.
    pub async fn forecasts_behind(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.patient_id FROM twins t LEFT JOIN forecasts f ON f.patient_id = t.patient_id
             WHERE t.status = 'ok' AND (f.data_time_ms IS NULL OR f.data_time_ms < t.data_time_ms)
             ORDER BY t.updated_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// Create a token with `role`, limited to `patients` (clinician: one or more; device:
    /// exactly one; admin: none). Returns the token in clear text: it is not stored and cannot
    /// be shown again.
    ///
    /// Errors: wrong number of patients for the role, or an invalid patient id
    /// ([`StoreError::Invalid`]).
    pub async fn create_token(
        &self,
        role: Role,
        patients: &[String],
        label: &str,
    ) -> Result<String, StoreError> {
        self.create_token_expiring(role, patients, label, None)
            .await
    }

    /// [`Store::create_token`] with an expiry (`expires_ms`, ms since the epoch; `None`:
    /// never). An expired token authenticates no more.
    pub async fn create_token_expiring(
        &self,
        role: Role,
        patients: &[String],
        label: &str,
        expires_ms: Option<i64>,
    ) -> Result<String, StoreError> {
        match (role, patients.len()) {
            (Role::Admin, 0) | (Role::Device, 1) => {}
            (Role::Clinician, n) if n >= 1 => {}
            (Role::Admin, _) => {
                return Err(StoreError::Invalid(
                    "an admin token is not limited to patients: give no --patient".into(),
                ))
            }
            (Role::Device, _) => {
                return Err(StoreError::Invalid(
                    "a device token needs exactly one --patient".into(),
                ))
            }
            (Role::Clinician, _) => {
                return Err(StoreError::Invalid(
                    "a clinician token needs at least one --patient".into(),
                ))
            }
        }
        if let Some(bad) = patients.iter().find(|p| !valid_patient_id(p)) {
            return Err(StoreError::Invalid(format!(
                "patient id `{bad}` must be 1-64 characters of A-Z a-z 0-9 . _ -"
            )));
        }
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        let token = format!("mt_{}", hex(&bytes));
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO tokens (bearer_mac, secret_mac, role, label, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(bearer_mac(self.mac_key(), &sha256_hex(&token)))
        .bind(secret_mac(self.mac_key(), &sha1_hex(&token)))
        .bind(role.name())
        .bind(label)
        .bind(now_ms())
        .bind(expires_ms)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        for p in patients {
            sqlx::query(
                "INSERT INTO token_patients (token_id, patient_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(p.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(token)
    }

    /// Every token (oldest first) with its role, label, patients, creation, expiry and
    /// revocation times.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, role, label, created_ms, expires_ms, revoked_ms FROM tokens ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let links = sqlx::query(
            "SELECT token_id, patient_id FROM token_patients ORDER BY token_id, patient_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get(0)?;
            let role: String = r.try_get(1)?;
            let mut patients = Vec::new();
            for l in &links {
                if l.try_get::<i64, _>(0)? == id {
                    patients.push(l.try_get::<String, _>(1)?);
                }
            }
            out.push(TokenInfo {
                id,
                role: role.parse::<Role>().map_err(StoreError::Corrupt)?,
                label: r.try_get(2)?,
                patients,
                created_ms: r.try_get(3)?,
                expires_ms: r.try_get(4)?,
                revoked_ms: r.try_get(5)?,
            });
        }
        Ok(out)
    }

    /// Revoke token `id`: it authenticates no more (through this store at once; through
    /// another process's store within [`TOKEN_CACHE_MS`]). Returns `false` when no such token
    /// exists; revoking a revoked token keeps its first revocation time.
    pub async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let exists = sqlx::query("SELECT 1 FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        if !exists {
            return Ok(false);
        }
        sqlx::query("UPDATE tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if let Ok(mut m) = self.cache.principals.lock() {
            m.retain(|_, (p, _, _)| p.token_id != id);
        }
        Ok(true)
    }

    /// The principal of a token given in clear text (`Authorization: Bearer`), if any
    /// (revoked and expired tokens: none).
    ///
    /// The database keeps only HMAC-SHA256 digests under a random per-database key
    /// (`server_keys`, created by migration 2): of the token's SHA-256 hex for bearer use, of
    /// its SHA-1 hex for Nightscout's `api-secret`. A value read from the `tokens` table is
    /// therefore not a credential (presenting it yields the MAC of the MAC). One HMAC costs a
    /// few microseconds per request; a slow hash is not needed for 256-bit random tokens.
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let mac = bearer_mac(self.mac_key(), &sha256_hex(token));
        self.principal_by("bearer_mac", &mac).await
    }

    /// The principal whose token's SHA-1 hex digest is `sha1` (Nightscout `api-secret`;
    /// case-insensitive), if any. Stored as a keyed digest (see
    /// [`Store::authenticate_token`]).
    pub async fn authenticate_api_secret(
        &self,
        sha1: &str,
    ) -> Result<Option<Principal>, StoreError> {
        let mac = secret_mac(self.mac_key(), &sha1.to_ascii_lowercase());
        self.principal_by("secret_mac", &mac).await
    }

    async fn principal_by(
        &self,
        column: &str,
        digest: &str,
    ) -> Result<Option<Principal>, StoreError> {
        let key = format!("{column}:{digest}");
        let now = now_ms();
        if let Ok(m) = self.cache.principals.lock() {
            if let Some((p, at, expires)) = m.get(&key) {
                if at.elapsed() < Duration::from_millis(TOKEN_CACHE_MS)
                    && expires.is_none_or(|e| now < e)
                {
                    return Ok(Some(p.clone()));
                }
            }
        }
        let sql = format!(
            "SELECT id, role, expires_ms FROM tokens WHERE {column} = $1 AND revoked_ms IS NULL \
             AND (expires_ms IS NULL OR expires_ms > $2)"
        );
        // `column` is one of two constants chosen by the callers above.
        let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(digest)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let token_id: i64 = r.try_get(0)?;
        let role: String = r.try_get(1)?;
        let expires: Option<i64> = r.try_get(2)?;
        let role = role.parse::<Role>().map_err(StoreError::Corrupt)?;
        let patients = sqlx::query(
            "SELECT patient_id FROM token_patients WHERE token_id = $1 ORDER BY patient_id",
        )
        .bind(token_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
        let p = Principal {
            token_id,
            role,
            patients,
        };
        if let Ok(mut m) = self.cache.principals.lock() {
            m.insert(key, (p.clone(), Instant::now(), expires));
        }
        Ok(Some(p))
    }

    /// Append one audit record (outside any data transaction).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit records, newest first: all, or those of one patient; at most `limit`.
    pub async fn audit_log(
        &self,
        patient: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let q = match patient {
            Some(p) => sqlx::query(
                "SELECT id, at_ms, actor, action, patient_id, outcome, detail FROM audit WHERE patient_id = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(p.to_string())
            .bind(limit),
            None => sqlx::query(
                "SELECT id, at_ms, actor, action, patient_id, outcome, detail FROM audit ORDER BY id DESC LIMIT $1",
            )
            .bind(limit),
        };
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    patient_id: r.try_get(4)?,
                    outcome: r.try_get(5)?,
                    detail: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Run one raw SQL statement (tests and maintenance; the server never calls it with
    /// request data).
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Close the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Migration 2's data step: create the token MAC key and replace every token's plain
/// digests (the renamed columns still hold SHA-256 and SHA-1 hex) by their keyed digests.
async fn rekey_tokens(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<(), StoreError> {
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    sqlx::query("INSERT INTO server_keys (name, key_hex) VALUES ($1, $2)")
        .bind(TOKEN_KEY)
        .bind(hex(&key))
        .execute(&mut **tx)
        .await?;
    let rows = sqlx::query("SELECT id, bearer_mac, secret_mac FROM tokens")
        .fetch_all(&mut **tx)
        .await?;
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let sha256: String = r.try_get(1)?;
        let sha1: String = r.try_get(2)?;
        sqlx::query("UPDATE tokens SET bearer_mac = $1, secret_mac = $2 WHERE id = $3")
            .bind(bearer_mac(&key, &sha256))
            .bind(secret_mac(&key, &sha1))
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Bytes of a hex string; `None` when it is not hex.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    a: &AuditEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at_ms, actor, action, patient_id, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(a.at_ms)
    .bind(a.actor.as_str())
    .bind(a.action.as_str())
    .bind(a.patient_id.clone())
    .bind(a.outcome)
    .bind(a.detail.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Largest number of ingests committed in one transaction by the group commit.
pub const GROUP_COMMIT_MAX: usize = 64;

/// One ingest waiting for the group commit.
struct IngestJob {
    new_patients: Vec<String>,
    data: Vec<NewDatum>,
    received_ms: i64,
    audit: Vec<AuditEntry>,
    on_conflict: OnConflict,
}

impl IngestJob {
    fn patients(&self) -> impl Iterator<Item = &str> {
        self.new_patients
            .iter()
            .map(String::as_str)
            .chain(self.data.iter().map(|d| d.patient_id.as_str()))
    }
}

type IngestResult = Result<(IngestOutcome, Vec<DatumStatus>), StoreError>;
type Pending = (IngestJob, tokio::sync::oneshot::Sender<IngestResult>);

/// The value stored (canonical unit) for `(patient, kind, time_ms)` in an open transaction.
async fn stored_value(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    patient: &str,
    kind: RecordKind,
    time_ms: i64,
) -> Result<f64, StoreError> {
    let q = match kind {
        RecordKind::Cgm | RecordKind::Smbg => sqlx::query(
            "SELECT value_mg_dl FROM observations WHERE patient_id = $1 AND kind = $2 AND time_ms = $3",
        )
        .bind(patient)
        .bind(kind.name())
        .bind(time_ms),
        RecordKind::Bolus | RecordKind::BasalRate | RecordKind::LongActing => sqlx::query(
            "SELECT value FROM insulin_administrations WHERE patient_id = $1 AND kind = $2 AND time_ms = $3",
        )
        .bind(patient)
        .bind(kind.name())
        .bind(time_ms),
        RecordKind::Carbs => {
            sqlx::query("SELECT value_g FROM carbs WHERE patient_id = $1 AND time_ms = $2")
                .bind(patient)
                .bind(time_ms)
        }
    };
    let row = q.fetch_one(&mut **tx).await?;
    Ok(row.try_get(0)?)
}

/// The statements of one ingest inside an open write transaction (patients already checked).
async fn ingest_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    job: &IngestJob,
) -> IngestResult {
    for p in &job.new_patients {
        sqlx::query(
            "INSERT INTO patients (id, created_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(p.as_str())
        .bind(job.received_ms)
        .execute(&mut **tx)
        .await?;
    }
    let received_ms = job.received_ms;
    let mut out = IngestOutcome::default();
    let mut flags = Vec::with_capacity(job.data.len());
    for d in &job.data {
        let patient = d.patient_id.as_str();
        let e = &d.entry;
        let t = to_ms(e.time);
        let q = match e.kind {
            RecordKind::Cgm | RecordKind::Smbg => sqlx::query(
                "INSERT INTO observations (patient_id, kind, time_ms, value_mg_dl, original_value, unit, source_unit, source, received_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (patient_id, kind, time_ms) DO NOTHING",
            )
            .bind(patient)
            .bind(e.kind.name())
            .bind(t)
            .bind(e.value)
            .bind(e.original_value)
            .bind(e.unit.as_str())
            .bind(d.source_unit.as_str())
            .bind(e.source.as_str())
            .bind(received_ms),
            RecordKind::Bolus | RecordKind::BasalRate | RecordKind::LongActing => sqlx::query(
                "INSERT INTO insulin_administrations (patient_id, kind, time_ms, value, original_value, unit, source_unit, insulin, source, received_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (patient_id, kind, time_ms) DO NOTHING",
            )
            .bind(patient)
            .bind(e.kind.name())
            .bind(t)
            .bind(e.value)
            .bind(e.original_value)
            .bind(e.unit.as_str())
            .bind(d.source_unit.as_str())
            .bind(e.insulin.clone())
            .bind(e.source.as_str())
            .bind(received_ms),
            RecordKind::Carbs => sqlx::query(
                "INSERT INTO carbs (patient_id, time_ms, value_g, original_value, unit, source_unit, source, received_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (patient_id, time_ms) DO NOTHING",
            )
            .bind(patient)
            .bind(t)
            .bind(e.value)
            .bind(e.original_value)
            .bind(e.unit.as_str())
            .bind(d.source_unit.as_str())
            .bind(e.source.as_str())
            .bind(received_ms),
        };
        let inserted = q.execute(&mut **tx).await?.rows_affected() == 1;
        if inserted {
            out.inserted += 1;
            if e.kind == RecordKind::Cgm {
                out.inserted_cgm += 1;
            }
            flags.push(DatumStatus::Inserted);
            continue;
        }
        let stored = stored_value(tx, patient, e.kind, t).await?;
        if (stored - e.value).abs() <= 1e-9 * stored.abs().max(1.0) {
            out.duplicates += 1;
            flags.push(DatumStatus::Duplicate);
        } else {
            out.conflicts += 1;
            flags.push(DatumStatus::Conflict { stored });
        }
    }
    if job.on_conflict == OnConflict::Refuse && out.conflicts > 0 {
        let list = flags
            .iter()
            .zip(&job.data)
            .enumerate()
            .filter_map(|(index, (f, d))| match f {
                DatumStatus::Conflict { stored } => Some(Conflict {
                    index,
                    source: d.entry.source.clone(),
                    kind: d.entry.kind,
                    time: d.entry.time,
                    stored: *stored,
                    sent: d.entry.value,
                }),
                _ => None,
            })
            .collect();
        return Err(StoreError::Conflict(list));
    }
    for a in &job.audit {
        insert_audit(tx, a).await?;
    }
    Ok((out, flags))
}
fn datum_of(r: &AnyRow, has_kind: bool, has_insulin: bool) -> Result<StoredDatum, StoreError> {
    let kind_s: String = if has_kind {
        r.try_get(0)?
    } else {
        "carbs".into()
    };
    let kind = RecordKind::from_name(&kind_s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown kind `{kind_s}`")))?;
    let time_ms: i64 = r.try_get(1)?;
    let original: f64 = r.try_get(2)?;
    let unit: String = r.try_get(3)?;
    let source_unit: String = r.try_get(4)?;
    let source: String = r.try_get(5)?;
    let received_ms: i64 = r.try_get(6)?;
    let insulin: Option<String> = if has_insulin { r.try_get(7)? } else { None };
    let time = jiff::Timestamp::from_millisecond(time_ms)
        .map_err(|e| StoreError::Corrupt(format!("time {time_ms}: {e}")))?;
    let entry = RecordEntry::new(time, kind, original, &unit, insulin, source)
        .map_err(|e| StoreError::Corrupt(e.reason))?;
    Ok(StoredDatum {
        entry,
        source_unit,
        received_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit_for(p: &str) -> AuditEntry {
        AuditEntry {
            at_ms: 0,
            actor: "test".into(),
            action: "ingest".into(),
            patient_id: Some(p.into()),
            outcome: 200,
            detail: String::new(),
        }
    }

    fn cgm(p: &str, minute: i64) -> NewDatum {
        let t = jiff::Timestamp::from_second(1_700_000_000 + minute * 60).unwrap();
        NewDatum {
            patient_id: p.into(),
            entry: RecordEntry::new(
                t,
                RecordKind::Cgm,
                100.0 + minute as f64,
                "mg/dL",
                None,
                "t",
            )
            .unwrap(),
            source_unit: "mg/dL".into(),
        }
    }

    /// A new SQLite database and its WAL and shared-memory files are readable by their owner
    /// only (0600).
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_files_are_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("medtwin-store-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let store = Store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        store.create_patient("a", &audit_for("a")).await.unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.join(format!("t.db{suffix}"));
            assert!(p.exists(), "{} missing", p.display());
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Database URLs for a test: SQLite `t.db` in `dir`, and a fresh PostgreSQL database
    /// `medtwin_store_{name}_{pid}` when `MEDTWIN_TEST_POSTGRES_URL` is set (CI).
    async fn test_urls(dir: &std::path::Path, name: &str) -> Vec<String> {
        let mut urls = vec![format!("sqlite://{}", dir.join("t.db").display())];
        if let Ok(base) = std::env::var("MEDTWIN_TEST_POSTGRES_URL") {
            if !base.is_empty() {
                let db = format!("medtwin_store_{name}_{}", std::process::id());
                let s = Store::open(&base).await.unwrap();
                s.execute_raw(&format!("DROP DATABASE IF EXISTS {db}"))
                    .await
                    .unwrap();
                s.execute_raw(&format!("CREATE DATABASE {db}"))
                    .await
                    .unwrap();
                s.close().await;
                let (prefix, _) = base.rsplit_once('/').unwrap();
                urls.push(format!("{prefix}/{db}"));
            }
        }
        urls
    }

    /// Several stores opening one new database at once apply each migration exactly once
    /// (servers or tests starting together); on PostgreSQL when the CI variable is set.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_opens_migrate_once() {
        let dir = std::env::temp_dir().join(format!("medtwin-store-conc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for url in test_urls(&dir, "conc").await {
            let opens: Vec<_> = (0..6)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { Store::open(&url).await.map(|s| s.backend()) })
                })
                .collect();
            for o in opens {
                o.await.unwrap().unwrap_or_else(|e| panic!("{url}: {e}"));
            }
            let s = Store::open(&url).await.unwrap();
            s.create_patient("a", &audit_for("a")).await.unwrap();
            s.close().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let key = [0xaau8; 131];
        assert_eq!(
            hex(&hmac_sha256(
                &key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// What the `tokens` table holds never authenticates (neither stored digest, as bearer
    /// token or as `api-secret`); only the token and its SHA-1 hex do. A version-1 database's tokens are re-keyed by migration 2 and keep
    /// working.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_digests_are_not_credentials_and_v1_tokens_migrate() {
        let dir = std::env::temp_dir().join(format!("medtwin-store-mac-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for url in test_urls(&dir, "mac").await {
            digests_are_not_credentials(&url).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn digests_are_not_credentials(url: &str) {
        let url = url.to_string();
        // A version-1 database with one token stored the old way.
        let old = "mt_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let v1 = Store::open_upto(&url, 1).await.unwrap();
        v1.execute_raw(&format!(
            "INSERT INTO tokens (sha256_hex, sha1_hex, role, label, created_ms) VALUES ('{}', '{}', 'admin', 'old', 0)",
            sha256_hex(old),
            sha1_hex(old)
        ))
        .await
        .unwrap();
        v1.close().await;

        let store = Store::open(&url).await.unwrap();
        let fresh = store
            .create_token(Role::Device, &["a".into()], "")
            .await
            .unwrap();
        for (tok, role) in [(old, Role::Admin), (fresh.as_str(), Role::Device)] {
            let p = store.authenticate_token(tok).await.unwrap().unwrap();
            assert_eq!(p.role, role);
            let p = store
                .authenticate_api_secret(&sha1_hex(tok).to_uppercase())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(p.role, role);
        }
        let rows = sqlx::query("SELECT bearer_mac, secret_mac FROM tokens ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        for (r, tok) in rows.iter().zip([old, fresh.as_str()]) {
            let b: String = r.try_get(0).unwrap();
            let s: String = r.try_get(1).unwrap();
            assert_ne!(b, sha256_hex(tok));
            assert_ne!(s, sha1_hex(tok));
            for v in [&b, &s] {
                assert!(store.authenticate_token(v).await.unwrap().is_none());
                assert!(store.authenticate_api_secret(v).await.unwrap().is_none());
            }
            assert!(store
                .authenticate_token(&sha256_hex(tok))
                .await
                .unwrap()
                .is_none());
        }
        store.close().await;
    }

    fn datum(p: &str, t: jiff::Timestamp, kind: RecordKind, v: f64, unit: &str) -> NewDatum {
        NewDatum {
            patient_id: p.into(),
            entry: RecordEntry::new(t, kind, v, unit, None, format!("t{v}")).unwrap(),
            source_unit: unit.into(),
        }
    }

    /// Far-past and future times and implausible doses are refused by the store itself, each
    /// named; nothing of the ingest is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingest_refuses_implausible_times_and_doses() {
        let dir = std::env::temp_dir().join(format!("medtwin-store-pl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display()))
            .await
            .unwrap();
        store.create_patient("a", &audit_for("a")).await.unwrap();
        let ok_t = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let ts = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let now = jiff::Timestamp::now();
        let future = jiff::Timestamp::from_second(now.as_second() + 600).unwrap();
        let bad = [
            datum(
                "a",
                ts("1970-01-01T00:00:00Z"),
                RecordKind::Cgm,
                100.0,
                "mg/dL",
            ),
            datum(
                "a",
                ts("1999-12-31T23:59:59Z"),
                RecordKind::Cgm,
                101.0,
                "mg/dL",
            ),
            datum("a", future, RecordKind::Cgm, 102.0, "mg/dL"),
            datum("a", ok_t, RecordKind::Bolus, 100.5, "U"),
            datum("a", ok_t, RecordKind::BasalRate, 35.5, "U/h"),
            datum("a", ok_t, RecordKind::Carbs, 501.0, "g"),
        ];
        for (i, d) in bad.iter().enumerate() {
            let mut batch = vec![datum("a", ok_t, RecordKind::Cgm, 120.0, "mg/dL")];
            batch.push(d.clone());
            let r = store.ingest(&[], &batch, now_ms(), &[]).await;
            match r {
                Err(StoreError::Invalid(m)) => {
                    assert!(m.contains("data[1]") && !m.contains("data[0]"), "{i}: {m}")
                }
                other => panic!("{i}: expected a refusal, got {other:?}"),
            }
        }
        assert_eq!(store.counts("a").await.unwrap(), [0, 0, 0]);
        // At the limits: accepted.
        let edge = [
            datum(
                "a",
                ts("2000-01-01T00:00:00Z"),
                RecordKind::Cgm,
                100.0,
                "mg/dL",
            ),
            datum("a", now, RecordKind::Cgm, 100.0, "mg/dL"),
            datum("a", ok_t, RecordKind::Bolus, 100.0, "U"),
            datum("a", ok_t, RecordKind::BasalRate, 35.0, "U/h"),
            datum("a", ok_t, RecordKind::Carbs, 500.0, "g"),
        ];
        let (o, _) = store.ingest(&[], &edge, now_ms(), &[]).await.unwrap();
        assert_eq!(o.inserted, 5);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Concurrent ingests go through the group commit: each is atomic, idempotent, audited,
    /// and one bad ingest (unknown patient) does not affect the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_keeps_ingests_atomic_and_idempotent() {
        let dir = std::env::temp_dir().join(format!("medtwin-store-gc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display()))
            .await
            .unwrap();
        store.create_patient("a", &audit_for("a")).await.unwrap();
        // 200 concurrent ingests of 100 distinct readings (each sent twice), plus one for a
        // patient that does not exist.
        let mut tasks = Vec::new();
        for i in 0..200i64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.ingest(&[], &[cgm("a", i % 100)], 1, &[audit_for("a")])
                    .await
            }));
        }
        let bad = store
            .ingest(&[], &[cgm("nobody", 1)], 1, &[audit_for("nobody")])
            .await;
        assert!(matches!(bad, Err(StoreError::Invalid(_))));
        let (mut inserted, mut dups) = (0, 0);
        for t in tasks {
            let (o, flags) = t.await.unwrap().unwrap();
            assert_eq!(flags.len(), 1);
            inserted += o.inserted;
            dups += o.duplicates;
        }
        assert_eq!((inserted, dups), (100, 100));
        assert_eq!(store.counts("a").await.unwrap(), [100, 0, 0]);
        assert_eq!(store.counts("nobody").await.unwrap(), [0, 0, 0]);
        // Every accepted ingest was audited (the patient creation too), the refused one not.
        assert_eq!(store.audit_log(Some("a"), 1000).await.unwrap().len(), 201);
        assert!(store
            .audit_log(Some("nobody"), 10)
            .await
            .unwrap()
            .is_empty());
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
