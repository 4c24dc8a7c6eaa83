//! `cohort generate` and `trial run`: virtual populations and in-silico trials (medtwin-cohort).

use crate::error::{io_fail, CliError};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    /// Run a trial specification (TOML): results.parquet, summary.json and plots/ in DIR.
    /// Ctrl-C stops after the patients in flight and keeps the finished ones in
    /// DIR/results.partial.parquet; `--resume` completes it.
    Run {
        /// Trial specification.
        spec: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Complete the interrupted run in DIR (same specification required).
        #[arg(long)]
        resume: bool,
        /// Run on a Ray cluster at ADDRESS (`auto`, `HOST:PORT`, or `local` for a Ray started
        /// for this run) through the Python package: `$MEDTWIN_PYTHON -m medtwin.ray_run`
        /// (default `python3`; needs `medtwin` and `ray` importable). The results are
        /// byte-identical to a run without `--ray`.
        #[arg(long, value_name = "ADDRESS")]
        ray: Option<String>,
        /// With `--ray`: patients per Ray task (default: the specification's
        /// `execution.chunk_patients`).
        #[arg(long, requires = "ray")]
        chunk_patients: Option<usize>,
    },
    /// Analyse a trial directory: summary.json (per-arm statistics, effects with 95 % CI,
    /// PROCOVA) and plots/<endpoint>.svg.
    Analyze {
        /// Trial output directory (holding results.parquet).
        dir: PathBuf,
        /// Percentile bootstrap CIs with this many resamples (0: none).
        #[arg(long, default_value_t = 0)]
        bootstrap: usize,
        /// Bootstrap seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
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
        TrialCmd::Run {
            spec,
            out,
            resume,
            ray: Some(address),
            chunk_patients,
        } => run_on_ray(&spec, &out, resume, &address, chunk_patients),
        TrialCmd::Run {
            spec, out, resume, ..
        } => {
            let s = medtwin_cohort::TrialSpec::from_file(&spec)
                .map_err(|e| CliError::input(e.to_string()))?;
            let cancel = Arc::new(AtomicBool::new(false));
            {
                let cancel = cancel.clone();
                // a second Ctrl-C while the in-flight patients finish is ignored
                let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::SeqCst));
            }
            let n = match &s.cohort {
                medtwin_cohort::spec::CohortSource::Generate { n, .. } => Some(*n as u64),
                medtwin_cohort::spec::CohortSource::File { n, .. } => n.map(|n| n as u64),
            };
            let pb = match n {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::new_spinner(),
            };
            pb.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} patients ({elapsed}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let ctl = medtwin_cohort::RunControl {
                progress: &|done| pb.set_position(done),
                cancel: Some(&cancel),
                resume,
            };
            let r = medtwin_cohort::run_trial(&s, &out, &ctl);
            pb.finish_and_clear();
            match r {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(())
                }
                Err(e @ medtwin_cohort::TrialError::Interrupted { .. }) => {
                    Err(CliError::interrupted(e.to_string()))
                }
                Err(
                    e @ (medtwin_cohort::TrialError::Resume(_)
                    | medtwin_cohort::TrialError::Cohort(_)
                    | medtwin_cohort::TrialError::CohortFile(_)
                    | medtwin_cohort::TrialError::Selection(_)),
                ) => Err(CliError::input(e.to_string())),
                Err(e) => Err(CliError::failure(e.to_string())),
            }
        }
        TrialCmd::Analyze {
            dir,
            bootstrap,
            seed,
        } => {
            let (summary, path) = medtwin_cohort::analyze_dir(
                &dir,
                medtwin_cohort::AnalyzeOptions { bootstrap, seed },
            )
            .map_err(|e| CliError::input(e.to_string()))?;
            let mut text = String::new();
            medtwin_cohort::trial::format_summary(&summary, &mut text)
                .map_err(|e| CliError::failure(e.to_string()))?;
            println!("{text}\nsummary: {}", path.display());
            Ok(())
        }
    }
}

/// The Python interpreter that runs `medtwin.ray_run`: `$MEDTWIN_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("MEDTWIN_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// Check that `py` can import the medtwin package (with its compiled extension) and ray.
fn check_python(py: &str) -> Result<(), CliError> {
    let hint = "install them with `pip install ./python ray` (from the repository) or point \
                MEDTWIN_PYTHON at an interpreter that has them";
    let out = std::process::Command::new(py)
        .args(["-c", "import medtwin._native, medtwin.ray_run, ray"])
        .output()
        .map_err(|e| {
            CliError::failure(format!(
                "--ray runs the Python package, but '{py}' cannot be started ({e}); {hint}"
            ))
        })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(CliError::failure(format!(
        "--ray needs the Python packages medtwin and ray importable by '{py}': {last}; {hint}"
    )))
}

fn run_on_ray(
    spec: &std::path::Path,
    out: &std::path::Path,
    resume: bool,
    address: &str,
    chunk_patients: Option<usize>,
) -> Result<(), CliError> {
    // the specification is checked here first (same messages and exit code as without --ray)
    medtwin_cohort::TrialSpec::from_file(spec).map_err(|e| CliError::input(e.to_string()))?;
    if chunk_patients == Some(0) {
        return Err(CliError::input("--chunk-patients must be >= 1"));
    }
    let py = python();
    check_python(&py)?;
    let mut cmd = std::process::Command::new(&py);
    cmd.args(["-m", "medtwin.ray_run"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        .args(["--address", address]);
    if resume {
        cmd.arg("--resume");
    }
    if let Some(c) = chunk_patients {
        cmd.args(["--chunk-patients", &c.to_string()]);
    }
    // Ctrl-C reaches the Python driver too (same process group); it keeps finished chunks
    let _ = ctrlc::set_handler(|| {});
    let status = cmd
        .status()
        .map_err(|e| CliError::failure(format!("cannot run '{py} -m medtwin.ray_run': {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(2) => Err(CliError::input(
            "the Ray run refused its input (message above)",
        )),
        Some(130) | None => Err(CliError::interrupted(
            "the Ray run was interrupted; finished chunks are kept in DIR/ray-chunks \
             (complete them with `trial run --ray ADDRESS --resume`)",
        )),
        Some(c) => Err(CliError::failure(format!(
            "the Ray run failed (exit code {c}; message above)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ray_without_an_interpreter_fails_with_the_reason() {
        let e = check_python("/nonexistent/python3").unwrap_err();
        assert_eq!(e.code(), 1);
        let m = e.to_string();
        assert!(
            m.contains("cannot be started") && m.contains("MEDTWIN_PYTHON"),
            "{m}"
        );
    }

    #[test]
    fn ray_without_the_packages_names_the_missing_module() {
        // an "interpreter" that starts but cannot import them
        let e = check_python("false").unwrap_err();
        assert!(e.to_string().contains("medtwin and ray"), "{e}");
    }
}
