//! `medtwin petab …`: PEtab problems. Thin: every command calls into `medtwin-petab`.

use crate::error::{io_fail, CliError};
use clap::{Args, Subcommand};
use medtwin_petab::fit::{fit, FitOptions, Gradient, Optimizer, Sampler};
use medtwin_petab::{Evaluator, PetabError, Problem, SimSettings};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// PEtab commands.
#[derive(Subcommand)]
pub enum PetabCmd {
    /// Log-likelihood of a PEtab v1 problem at its nominal parameters (prints `llh = …`).
    Llh {
        /// The problem's YAML file.
        problem: PathBuf,
        #[command(flatten)]
        sim: SimArgs,
        /// Also print every measurement's simulated value, σ and llh contribution.
        #[arg(long)]
        residuals: bool,
    },
    /// Multi-start maximum-likelihood fit of the estimated parameters on the parameter scale
    /// within the bounds (Levenberg–Marquardt on the Fisher information with Jacobians from
    /// forward sensitivities or finite differences, or BFGS; Latin-hypercube starts; start 0 =
    /// nominal unless
    /// --no-nominal-start). Prints how many starts reach within 0.1 of the best objective.
    Fit {
        /// The problem's YAML file.
        problem: PathBuf,
        /// Number of starts.
        #[arg(long, default_value_t = 10)]
        starts: usize,
        /// Seed of the start sampler.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Objective evaluations per start.
        #[arg(long, default_value_t = 4000)]
        max_evals: usize,
        /// Finite-difference step of the gradient, on the parameter scale.
        #[arg(long, default_value_t = 1e-4)]
        fd_step: f64,
        /// Local optimiser: `lm` (Levenberg–Marquardt on the Fisher information) or `bfgs`.
        #[arg(long, default_value = "lm")]
        optimizer: String,
        /// Jacobians of `lm`: `sens` (forward sensitivities; finite differences where they
        /// fail) or `fd` (central finite differences).
        #[arg(long, default_value = "sens")]
        gradient: String,
        /// Start sampler: `lhs` (Latin hypercube) or `uniform`.
        #[arg(long, default_value = "lhs")]
        sampler: String,
        /// Sample every start (start 0 is otherwise the nominal vector).
        #[arg(long)]
        no_nominal_start: bool,
        /// Wall-time limit per start, seconds.
        #[arg(long)]
        time_limit: Option<f64>,
        /// Wall-time limit per simulation, seconds (a slower simulation counts as failed).
        #[arg(long, default_value_t = 10.0)]
        sim_time_limit: f64,
        /// Write the result as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        sim: SimArgs,
    },
}

/// Integrator tolerances.
#[derive(Args)]
pub struct SimArgs {
    /// Relative tolerance of the integrator.
    #[arg(long, default_value_t = 1e-8)]
    rtol: f64,
    /// Absolute tolerance of the integrator (scaled per state).
    #[arg(long, default_value_t = 1e-12)]
    atol: f64,
}

impl SimArgs {
    fn settings(&self) -> SimSettings {
        SimSettings {
            rtol: self.rtol,
            atol: self.atol,
            ..SimSettings::default()
        }
    }
}

fn load(path: &Path) -> Result<Problem, CliError> {
    Problem::load(path).map_err(|e| match e {
        PetabError::Io(_) | PetabError::Yaml(_) | PetabError::Table { .. } => {
            CliError::input(e.to_string())
        }
        _ => CliError::failure(e.to_string()),
    })
}

fn fail(e: PetabError) -> CliError {
    CliError::failure(e.to_string())
}

/// Run a PEtab command.
pub fn petab(c: PetabCmd) -> Result<(), CliError> {
    match c {
        PetabCmd::Llh {
            problem,
            sim,
            residuals,
        } => {
            let t0 = Instant::now();
            let p = load(&problem)?;
            let ev = Evaluator::new(&p, sim.settings()).map_err(fail)?;
            let t1 = Instant::now();
            let res = ev.residuals(&p.nominal()).map_err(fail)?;
            let t2 = Instant::now();
            if residuals {
                println!("line\tobservable\ttime\tmeasurement\tsimulated\tsigma\tllh");
                for r in &res {
                    let m = &p.measurements[r.measurement];
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        m.line,
                        p.observables[m.observable].id,
                        m.time,
                        m.value,
                        r.simulated,
                        r.sigma,
                        r.llh
                    );
                }
            }
            let llh: f64 = res.iter().map(|r| r.llh).sum();
            println!("llh = {llh}");
            if ev.retries() > 0 {
                println!(
                    "note: {} simulation(s) failed at rtol {} and were repeated at looser tolerances",
                    ev.retries(),
                    sim.rtol
                );
            }
            println!(
                "measurements {}, simulations {}, load {:.3} s, evaluation {:.3} s",
                p.measurements.len(),
                ev.n_simulations(),
                (t1 - t0).as_secs_f64(),
                (t2 - t1).as_secs_f64()
            );
            Ok(())
        }
        PetabCmd::Fit {
            problem,
            starts,
            seed,
            max_evals,
            fd_step,
            optimizer,
            gradient,
            sampler,
            no_nominal_start,
            time_limit,
            sim_time_limit,
            out,
            sim,
        } => {
            let optimizer: Optimizer = optimizer.parse().map_err(CliError::input)?;
            let gradient: Gradient = gradient.parse().map_err(CliError::input)?;
            let sampler: Sampler = sampler.parse().map_err(CliError::input)?;
            let p = load(&problem)?;
            let settings = SimSettings {
                time_limit: Some(sim_time_limit),
                ..sim.settings()
            };
            let ev = Evaluator::new(&p, settings).map_err(fail)?;
            let opts = FitOptions {
                starts,
                seed,
                max_evals,
                fd_step,
                optimizer,
                sampler,
                nominal_start: !no_nominal_start,
                time_limit,
                gradient,
                ..FitOptions::default()
            };
            let r = fit(&ev, &opts).map_err(fail)?;
            for s in &r.starts {
                println!(
                    "start {:>3}{}: objective {:.6} (from {:.6}), {} evaluations, {}, {:.2} s",
                    s.start,
                    if s.nominal { " (nominal)" } else { "" },
                    s.objective,
                    s.initial_objective,
                    s.evals,
                    if s.converged {
                        "converged"
                    } else {
                        "budget reached"
                    },
                    s.seconds
                );
            }
            let b = r.best();
            println!(
                "best objective = {:.6} (nominal {:.6}; {} parameters), wall time {:.2} s",
                b.objective,
                r.nominal_objective,
                r.ids.len(),
                r.seconds
            );
            let (near, near_sampled) = r.within(0.1);
            let sampled = r.starts.iter().filter(|s| !s.nominal).count();
            println!(
                "starts within 0.1 of the best: {near} of {} ({near_sampled} of {sampled} sampled starts)",
                r.starts.len()
            );
            if let Some(path) = out {
                let s = serde_json::to_string_pretty(&r)
                    .map_err(|e| CliError::failure(e.to_string()))?;
                std::fs::write(&path, s).map_err(|e| io_fail(&path, e))?;
            }
            Ok(())
        }
    }
}
