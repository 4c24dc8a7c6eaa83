//! `medtwin` — command-line interface of the medtwin digital-twin engine.
//!
//! Thin by design: every command parses its arguments and calls into a library crate.
//! Exit codes: 0 success, 2 bad input (unreadable/invalid files, unknown names), 1 other failures.

mod cardiac;
mod error;
mod generic_twin;
mod petab;
mod pk;
mod sbml;
mod server;
mod sim;
mod trial;
mod twin;

use clap::{Parser, Subcommand};
use error::CliError;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "medtwin",
    version,
    about = "Medical digital twins: simulate, calibrate, forecast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the bundled UVA/Padova virtual patients with key parameters.
    Patients,
    /// Simulate a scenario (TOML) for one or more virtual patients.
    Simulate {
        /// Scenario file.
        scenario: PathBuf,
        /// Trajectory output: a CSV file (one patient) or a directory (several).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write one summary row per patient to this CSV.
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Do not write trajectories (only the summary).
        #[arg(long)]
        no_trajectory: bool,
    },
    /// Glycaemic metrics of a trajectory CSV (as written by `simulate`).
    Metrics {
        /// Trajectory CSV.
        trajectory: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// CGM sample time used to sample the glucose column, minutes (Dexcom: 3).
        #[arg(long, default_value_t = 3)]
        sample_min: u64,
    },
    /// Benchmark: CPU time per simulated patient-day on the reference scenario.
    Bench {
        /// Simulated days per patient.
        #[arg(long, default_value_t = 1)]
        days: u64,
        /// Repetitions of the 30-patient set.
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// Import patient records into medtwin's record format.
    #[command(subcommand)]
    Import(twin::ImportCmd),
    /// The patient twin: fit, forecast, backtest, report.
    #[command(subcommand)]
    Twin(twin::TwinCmd),
    /// Virtual populations.
    #[command(subcommand)]
    Cohort(trial::CohortCmd),
    /// In-silico clinical trials.
    #[command(subcommand)]
    Trial(trial::TrialCmd),
    /// Pharmacokinetics: event tables, population fits, TDM twins, dose recommendation, NCA.
    #[command(subcommand)]
    Pk(pk::PkCmd),
    /// Cardiac safety twins: the CiPA in-silico proarrhythmia assay.
    #[command(subcommand)]
    Cardiac(cardiac::CardiacCmd),
    /// PEtab calibration problems: log-likelihood and fits.
    #[command(subcommand)]
    Petab(petab::PetabCmd),
    /// Any model via SBML: info and simulation.
    #[command(subcommand)]
    Sbml(sbml::SbmlCmd),
    /// Run the twin server (REST API, FHIR and Nightscout ingest, live twins, dashboard).
    Serve(server::ServeArgs),
    /// Access tokens of the twin server.
    #[command(subcommand)]
    Token(server::TokenCmd),
    /// Send a record CSV to a twin server (FHIR transaction bundles).
    Push(server::PushArgs),
    /// Run the whole patient-twin pipeline on the bundled real participant; report in ./medtwin-demo/.
    Demo {
        /// Output directory.
        #[arg(long, default_value = "medtwin-demo")]
        out: PathBuf,
        /// Days of the record to backtest (after a 24 h warm-up).
        #[arg(long, default_value_t = 10)]
        days: u64,
        /// Particles of the twin's filter.
        #[arg(long, default_value_t = 500)]
        particles: usize,
    },
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Patients => sim::patients(),
        Command::Simulate {
            scenario,
            out,
            summary,
            no_trajectory,
        } => sim::simulate(&scenario, out.as_deref(), summary.as_deref(), no_trajectory),
        Command::Metrics {
            trajectory,
            json,
            sample_min,
        } => sim::metrics(&trajectory, json, sample_min),
        Command::Bench { days, reps } => sim::bench(days, reps),
        Command::Import(c) => twin::import(c),
        Command::Twin(c) => twin::twin(c),
        Command::Sbml(c) => sbml::sbml(c),
        Command::Pk(c) => pk::pk(c),
        Command::Cardiac(c) => cardiac::cardiac(c),
        Command::Petab(c) => petab::petab(c),
        Command::Cohort(c) => trial::cohort(c),
        Command::Trial(c) => trial::trial(c),
        Command::Serve(a) => server::serve(a),
        Command::Token(c) => server::token(c),
        Command::Push(a) => server::push(a),
        Command::Demo {
            out,
            days,
            particles,
        } => twin::demo(&out, days, particles),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("medtwin: error: {e}");
        std::process::exit(e.code());
    }
}
