//! `cohort generate` and `trial run`: virtual populations and in-silico trials (medtwin-cohort).

use crate::error::{io_fail, CliError};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CohortCmd {
    /// Generate a virtual population from the bundled patients' parameter distribution.
    Generate {
        /// Source population.
        #[arg(long, default_value = "simglucose-30")]
        from: String,
        /// child | adolescent | adult | all.
        #[arg(long, default_value = "adult")]
        group: String,
        /// Number of accepted patients.
        #[arg(long)]
        n: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output Parquet file (a marginals comparison CSV and SVG are written beside it).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TrialCmd {
    /// Run a trial specification (TOML): results.parquet and analysis.json in DIR.
    Run {
        /// Trial specification.
        spec: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn cohort(c: CohortCmd) -> Result<(), CliError> {
    match c {
        CohortCmd::Generate {
            from,
            group,
            n,
            seed,
            out,
        } => {
            if n == 0 {
                return Err(CliError::input("--n must be >= 1"));
            }
            let g: medtwin_cohort::Group = group
                .parse()
                .map_err(|e| CliError::input(format!("--group: {e}")))?;
            let cohort = medtwin_cohort::generate_cohort(&from, g, n, seed)
                .map_err(|e| CliError::input(e.to_string()))?;
            medtwin_cohort::write_cohort_parquet(&out, &cohort.patients)
                .map_err(|e| CliError::failure(e.to_string()))?;
            eprint!("{cohort}");
            if let Ok(rows) = medtwin_cohort::population::compare_marginals(&cohort.patients) {
                let csv = out.with_extension("marginals.csv");
                let svg = out.with_extension("marginals.svg");
                medtwin_cohort::population::write_marginals_csv(&csv, &rows)
                    .map_err(|e| io_fail(&csv, e))?;
                medtwin_cohort::population::write_marginals_svg(&svg, &rows)
                    .map_err(|e| io_fail(&svg, e))?;
                eprintln!(
                    "marginals vs source population: {} and {}",
                    csv.display(),
                    svg.display()
                );
            }
            eprintln!(
                "wrote {} patients to {}",
                cohort.patients.len(),
                out.display()
            );
            Ok(())
        }
    }
}

pub fn trial(c: TrialCmd) -> Result<(), CliError> {
    match c {
        TrialCmd::Run { spec, out } => {
            let s = medtwin_cohort::TrialSpec::from_file(&spec)
                .map_err(|e| CliError::input(e.to_string()))?;
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {pos} patients simulated ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let summary = medtwin_cohort::run_trial(&s, &out, &|done| pb.set_position(done))
                .map_err(|e| CliError::failure(e.to_string()))?;
            pb.finish_and_clear();
            println!("{summary}");
            Ok(())
        }
    }
}
