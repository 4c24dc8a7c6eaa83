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
    medtwin_server::serve_blocking(cfg).map_err(cli_err)
}

pub fn token(c: TokenCmd) -> Result<(), CliError> {
    match c {
        TokenCmd::Create {
            db,
            role,
            patients,
            label,
        } => {
            let role: Role = role.parse().map_err(CliError::input)?;
            let t = medtwin_server::create_token_blocking(&db, role, &patients, &label)
                .map_err(cli_err)?;
            println!("{t}");
            eprintln!(
                "{role} token created; it is shown only this once (the database keeps its hash)"
            );
            Ok(())
        }
    }
}

pub fn push(a: PushArgs) -> Result<(), CliError> {
    let s =
        medtwin_server::client::push(&a.record, &a.to, &a.patient, &a.token).map_err(cli_err)?;
    println!(
        "pushed {} entries in {} bundles: {} stored, {} already present; {} rows rejected by the reader",
        s.sent, s.bundles, s.created, s.existing, s.rejected_rows
    );
    Ok(())
}
