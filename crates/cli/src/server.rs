//! Server commands: `medtwin serve`, `medtwin token create`, `medtwin push` (thin wrappers
//! over `medtwin-server`).

use crate::error::CliError;
use clap::{Args, Subcommand};
use medtwin_server::{ServerConfig, ServerError};
use medtwin_store::Role;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `medtwin serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Database URL: sqlite://PATH (created on first run) or postgres://USER@HOST/DB.
    #[arg(long, default_value = "sqlite://medtwin.db")]
    db: String,
    /// Listen address (port 0: pick a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Twin worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Particles of each live twin.
    #[arg(long, default_value_t = 500)]
    particles: usize,
    /// Live forecast horizon, minutes (1..=720).
    #[arg(long, default_value_t = 120)]
    horizon: u32,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body: usize,
    /// Blend boosted trees into new twins' hybrid forecasts (as `medtwin twin` does): more
    /// accurate, but each on-demand forecast then refits them (~50 ms per fitted horizon).
    #[arg(long)]
    boosted_forecasts: bool,
    /// The server is reached through a TLS-terminating reverse proxy (HTTPS): the dashboard
    /// cookie gets the `Secure` flag.
    #[arg(long)]
    behind_tls_proxy: bool,
    /// Requests per minute one token may send (bursts of as many); requests without a valid
    /// token are limited the same way per client address. Beyond: 429 with Retry-After.
    /// 0: no per-token limit.
    #[arg(long, default_value_t = 6000)]
    rate_limit_per_min: u32,
    /// Refuse data more than this many days before a patient's first stored CGM reading
    /// (0: no such limit).
    #[arg(long, default_value_t = 90.0)]
    record_start_margin_days: f64,
    /// What-ifs computed at once (API and dashboard; default: one per core); a what-if that
    /// finds no free slot within 10 s is answered 503 with Retry-After.
    #[arg(long)]
    max_whatifs: Option<usize>,
    /// Serve HTTPS (built-in TLS, rustls): PEM certificate chain, server certificate first
    /// (e.g. fullchain.pem). Needs --tls-key; the dashboard cookie gets `Secure`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// `medtwin token …`.
#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a bearer token (printed once; only its hash is stored).
    Create {
        /// Database URL (as for serve).
        #[arg(long, default_value = "sqlite://medtwin.db")]
        db: String,
        /// admin | clinician | device.
        #[arg(long)]
        role: String,
        /// Patient the token is limited to (clinician: repeat for several; device: exactly one).
        #[arg(long = "patient")]
        patients: Vec<String>,
        /// Free label stored with the token.
        #[arg(long, default_value = "")]
        label: String,
        /// Expire after this long, e.g. 30d, 12h, 90m (default: valid until revoked).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List the tokens: id, role, patients, label, created, expires, revoked.
    List {
        /// Database URL (as for serve).
        #[arg(long, default_value = "sqlite://medtwin.db")]
        db: String,
    },
    /// Revoke a token by id (see `token list`); a running server refuses it within a second.
    Revoke {
        /// Token id.
        id: i64,
        /// Database URL (as for serve).
        #[arg(long, default_value = "sqlite://medtwin.db")]
        db: String,
    },
}

/// `medtwin push`.
#[derive(Args)]
pub struct PushArgs {
    /// Record CSV (medtwin record format).
    record: PathBuf,
    /// Server base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    to: String,
    /// Patient id on the server.
    #[arg(long)]
    patient: String,
    /// Bearer token.
    #[arg(long)]
    token: String,
    /// For an https:// server: trust only the certificates in this PEM file (a private CA, or
    /// the server's self-signed certificate) instead of the public roots.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

fn cli_err(e: ServerError) -> CliError {
    match e {
        ServerError::Input(m) => CliError::input(m),
        ServerError::Store(medtwin_store::StoreError::Url(u)) => {
            CliError::input(medtwin_store::StoreError::Url(u).to_string())
        }
        other => CliError::failure(other.to_string()),
    }
}

pub fn serve(a: ServeArgs) -> Result<(), CliError> {
    if a.horizon == 0 || a.horizon > 720 {
        return Err(CliError::input(format!(
            "--horizon {} must be in 1..=720 minutes",
            a.horizon
        )));
    }
    if a.particles == 0 {
        return Err(CliError::input("--particles must be >= 1"));
    }
    let mut cfg = ServerConfig::new(&a.db, a.addr);
    if let Some(w) = a.workers {
        cfg.workers = w.max(1);
    }
    cfg.particles = a.particles;
    cfg.horizon_min = a.horizon;
    cfg.max_body_bytes = a.max_body;
    cfg.boosted_forecasts = a.boosted_forecasts;
    cfg.secure_cookies = a.behind_tls_proxy;
    cfg.rate_limit_per_min = f64::from(a.rate_limit_per_min);
    if !(a.record_start_margin_days >= 0.0 && a.record_start_margin_days.is_finite()) {
        return Err(CliError::input(format!(
            "--record-start-margin-days {} must be a number >= 0",
            a.record_start_margin_days
        )));
    }
    cfg.record_start_margin_days = a.record_start_margin_days;
    if let Some(n) = a.max_whatifs {
        if n == 0 {
            return Err(CliError::input("--max-whatifs must be at least 1"));
        }
        cfg.max_concurrent_whatifs = n;
    }
    if let (Some(cert), Some(key)) = (a.tls_cert, a.tls_key) {
        cfg.tls = Some(medtwin_server::tls::TlsFiles { cert, key });
    }
    medtwin_server::serve_blocking(cfg).map_err(cli_err)
}

pub fn token(c: TokenCmd) -> Result<(), CliError> {
    match c {
        TokenCmd::Create {
            db,
            role,
            patients,
            label,
            expires_in,
        } => {
            let role: Role = role.parse().map_err(CliError::input)?;
            let expires = expires_in
                .as_deref()
                .map(medtwin_server::parse_duration_ms)
                .transpose()
                .map_err(|m| CliError::input(format!("--expires-in: {m}")))?;
            let t = medtwin_server::create_token_blocking(&db, role, &patients, &label, expires)
                .map_err(cli_err)?;
            println!("{t}");
            eprintln!(
                "{role} token created; it is shown only this once (the database keeps its hash)"
            );
            Ok(())
        }
        TokenCmd::List { db } => {
            let ts = medtwin_server::list_tokens_blocking(&db).map_err(cli_err)?;
            let when = |ms: Option<i64>| {
                ms.and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
                    .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "-".into())
            };
            let now = medtwin_store::now_ms();
            println!("id\trole\tstatus\tpatients\tlabel\tcreated\texpires\trevoked");
            for t in ts {
                let status = if t.revoked_ms.is_some() {
                    "revoked"
                } else if t.expires_ms.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{status}\t{}\t{}\t{}\t{}\t{}",
                    t.id,
                    t.role,
                    if t.patients.is_empty() {
                        "*".to_string()
                    } else {
                        t.patients.join(",")
                    },
                    t.label.replace(['\t', '\n'], " "),
                    when(Some(t.created_ms)),
                    when(t.expires_ms),
                    when(t.revoked_ms),
                );
            }
            Ok(())
        }
        TokenCmd::Revoke { id, db } => {
            medtwin_server::revoke_token_blocking(&db, id).map_err(cli_err)?;
            eprintln!("token {id} revoked");
            Ok(())
        }
    }
}

pub fn push(a: PushArgs) -> Result<(), CliError> {
    let s =
        medtwin_server::client::push(&a.record, &a.to, &a.patient, &a.token, a.ca_cert.as_deref())
            .map_err(cli_err)?;
    println!(
        "pushed {} entries in {} bundles: {} stored, {} already present; {} rows rejected by the reader",
        s.sent, s.bundles, s.created, s.existing, s.rejected_rows
    );
    Ok(())
}
