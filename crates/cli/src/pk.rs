//! `medtwin pk …`: pharmacokinetic data, population fits, TDM twins and dose recommendation.
//! Thin: every command calls into `medtwin-pk` (data, models, population fits) or
//! `medtwin-twin-core`'s `pk` module (TDM twins, backtest, recommendation).

use crate::error::{io_fail, CliError};
use clap::{Args, Subcommand};
use medtwin_pk::data::{import_r_dataset, read_event_table, write_event_table, Dataset};
use medtwin_pk::model::PkModel;
use medtwin_pk::nca::{nca_dataset, Route};
use medtwin_pk::pop::{fit, vpc, CovariateEffect, ErrorModel, FitOptions, PopFit, PopModel};
use medtwin_twin_core::pk::{
    backtest, recommend_for, recommend_with_interval_for, Objective, Regimen, Target, TdmError,
    TdmTwin, DEFAULT_TOLERANCE, STANDARD_INTERVALS_H,
};
use std::path::{Path, PathBuf};

/// The population model options shared by `fit` and `backtest`.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Structural model: 1cpt-iv, 1cpt-oral, 2cpt-iv, 2cpt-oral, 3cpt-iv, 3cpt-oral.
    #[arg(long)]
    model: String,
    /// Estimated parameters (comma-separated NONMEM names; default: the model's CL, V, …;
    /// `KE` may replace `V`, as in nlme's SSfol).
    #[arg(long, value_delimiter = ',')]
    param: Vec<String>,
    /// Parameters with inter-individual variability (default: all estimated parameters).
    #[arg(long, value_delimiter = ',')]
    iiv: Vec<String>,
    /// Covariate effects, e.g. `CL~WT` (power), `V~WT:lin`, `CL~SEX:cat`; repeatable.
    #[arg(long)]
    covariate: Vec<String>,
    /// Residual error: additive, proportional or combined.
    #[arg(long, default_value = "additive")]
    error: String,
    /// Full (instead of diagonal) Ω.
    #[arg(long)]
    full_omega: bool,
}

impl ModelArgs {
    fn build(&self) -> Result<PopModel, CliError> {
        let pk =
            PkModel::parse(&self.model).map_err(|e| CliError::input(format!("--model: {e}")))?;
        let mut m = PopModel::new(pk);
        if !self.param.is_empty() {
            m.parameters = self
                .param
                .iter()
                .map(|p| p.trim().to_ascii_uppercase())
                .collect();
            m.iiv = m.parameters.clone();
        }
        if !self.iiv.is_empty() {
            m.iiv = self
                .iiv
                .iter()
                .map(|p| p.trim().to_ascii_uppercase())
                .collect();
        }
        m.covariates = self
            .covariate
            .iter()
            .map(|c| CovariateEffect::parse(c))
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::input(format!("--covariate: {e}")))?;
        m.error =
            ErrorModel::parse(&self.error).map_err(|e| CliError::input(format!("--error: {e}")))?;
        m.full_omega = self.full_omega;
        Ok(m)
    }
}

/// `medtwin pk` subcommands.
#[derive(Subcommand)]
pub enum PkCmd {
    /// Convert one of the R data sets (theoph, phenobarb, indometh; CSV as exported by Rdatasets)
    /// into a NONMEM-style event table.
    Import {
        /// theoph | phenobarb | indometh.
        kind: String,
        /// The R data set's CSV.
        csv: PathBuf,
        /// Output event table (CSV).
        #[arg(long)]
        out: PathBuf,
    },
    /// Population (NLME) fit by FOCE-I; writes the fit as JSON and optionally an HTML report.
    Fit {
        /// NONMEM-style event table (CSV).
        data: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Output JSON (estimates, standard errors, diagnostics).
        #[arg(long)]
        out: PathBuf,
        /// Also write DIR/index.html with goodness-of-fit plots and a VPC.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Holdout-last TDM backtest: the population is fitted without every patient's last level,
    /// then each last level is forecast from the earlier ones.
    Backtest {
        /// NONMEM-style event table (CSV).
        data: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Which level to hold out (only `last`).
        #[arg(long, default_value = "last")]
        holdout: String,
        /// metrics.json (n, rmse, rmse_population, mae, coverage_80, coverage_95, unit).
        #[arg(long)]
        out: PathBuf,
        /// Also write the per-patient forecasts as CSV.
        #[arg(long)]
        forecasts: Option<PathBuf>,
    },
    /// Individualise a patient's TDM twin through the generic twin layer (posterior with the
    /// population as prior); the JSON is a twin-core twin.
    Twin {
        /// Population fit JSON (from `pk fit`).
        pop: PathBuf,
        /// Event table with the patient's doses and levels.
        data: PathBuf,
        /// Patient ID in the table.
        #[arg(long)]
        id: String,
        /// Output twin JSON.
        #[arg(long)]
        out: PathBuf,
    },
    /// Recommend the dose meeting a steady-state target, with its risk under the posterior.
    Recommend(RecommendArgs),
    /// Non-compartmental analysis of every single-dose subject.
    Nca {
        /// Event table.
        data: PathBuf,
        /// iv-bolus | extravascular.
        #[arg(long, default_value = "extravascular")]
        route: String,
        /// Output CSV (one row per subject).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Arguments of `pk recommend`.
#[derive(Args)]
pub struct RecommendArgs {
    /// Twin JSON (from `pk twin`).
    #[arg(long)]
    twin: PathBuf,
    /// trough | auc | cmax.
    #[arg(long)]
    target: String,
    /// Target value (concentration unit; AUC: concentration × h).
    value: f64,
    /// Dosing interval, h; without it, the standard intervals 4, 6, 8, 12, 24, 48, 72 h are
    /// tried and the longest whose dose passes the toxicity constraint is recommended.
    #[arg(long)]
    interval: Option<f64>,
    /// Dosing compartment (NONMEM CMT; default 1 = depot for oral, central for IV).
    #[arg(long, default_value_t = 1)]
    cmt: u32,
    /// Infusion duration, h (0 = bolus).
    #[arg(long, default_value_t = 0.0)]
    infusion_h: f64,
    /// Toxic peak threshold (concentration unit).
    #[arg(long)]
    toxic: Option<f64>,
    /// Largest acceptable P(Cmax,ss > toxic).
    #[arg(long, default_value_t = 0.1)]
    max_risk: f64,
    /// Round the dose to this increment (0 = exact).
    #[arg(long, default_value_t = 0.0)]
    round: f64,
    /// How the dose is chosen: `map` meets the target with the MAP parameters; `p-in-range`
    /// maximises the posterior probability that the targeted exposure is within ±tolerance of
    /// the target (the Bayes decision for a "within ±x %" criterion).
    #[arg(long, default_value = "map")]
    objective: String,
    /// Half-width of the accepted range for `--objective p-in-range`, as a fraction of the
    /// target (the reported P(trough in range) uses it; with `map` that range is ±20 %).
    #[arg(long, default_value_t = 0.2)]
    tolerance: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn load(path: &Path) -> Result<Dataset, CliError> {
    read_event_table(path).map_err(|e| CliError::input(e.to_string()))
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::failure(e.to_string()))?;
    std::fs::write(path, s).map_err(|e| io_fail(path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&s).map_err(|e| CliError::input(format!("{}: {e}", path.display())))
}

/// Run a `medtwin pk` command.
pub fn pk(cmd: PkCmd) -> Result<(), CliError> {
    match cmd {
        PkCmd::Import { kind, csv, out } => {
            let ds = import_r_dataset(&kind, &csv).map_err(|e| CliError::input(e.to_string()))?;
            let f = std::fs::File::create(&out).map_err(|e| io_fail(&out, e))?;
            write_event_table(&ds, std::io::BufWriter::new(f)).map_err(|e| io_fail(&out, e))?;
            println!(
                "{}: {} subjects, {} observations, {} dose records",
                out.display(),
                ds.subjects.len(),
                ds.n_observations(),
                ds.n_doses()
            );
            Ok(())
        }
        PkCmd::Fit {
            data,
            model,
            out,
            report,
        } => fit_cmd(&data, &model, &out, report.as_deref()),
        PkCmd::Backtest {
            data,
            model,
            holdout,
            out,
            forecasts,
        } => {
            if holdout != "last" {
                return Err(CliError::input(format!(
                    "--holdout {holdout}: only `last` is supported"
                )));
            }
            let m = model.build()?;
            let ds = load(&data)?;
            let opts = FitOptions {
                standard_errors: false,
                ..FitOptions::default()
            };
            let (metrics, rows, popfit) =
                backtest(&ds, &m, &opts, 2000, 1).map_err(|e| CliError::input(e.to_string()))?;
            write_json(&out, &metrics)?;
            if let Some(p) = forecasts {
                let mut s = String::from("id,time_h,observed,population,individual_map,median,pi80_lo,pi80_hi,pi95_lo,pi95_hi\n");
                for r in &rows {
                    s.push_str(&format!(
                        "{},{},{},{},{},{},{},{},{},{}\n",
                        r.id,
                        r.time_h,
                        r.observed,
                        r.population,
                        r.forecast.map,
                        r.forecast.median,
                        r.forecast.pi80[0],
                        r.forecast.pi80[1],
                        r.forecast.pi95[0],
                        r.forecast.pi95[1]
                    ));
                }
                std::fs::write(&p, s).map_err(|e| io_fail(&p, e))?;
            }
            println!(
                "holdout-last on {} patients: RMSE individual {:.3} vs population {:.3} {u}; MAE {:.3}; coverage 80 % {:.3}, 95 % {:.3} (population fit {:.2} s)",
                metrics.n, metrics.rmse, metrics.rmse_population, metrics.mae, metrics.coverage_80,
                metrics.coverage_95, popfit.wall_s, u = metrics.unit
            );
            Ok(())
        }
        PkCmd::Twin { pop, data, id, out } => {
            let popfit: PopFit = read_json(&pop)?;
            let ds = load(&data)?;
            let s = ds.subject(&id).ok_or_else(|| {
                CliError::input(format!("{}: no subject with ID {id}", data.display()))
            })?;
            let twin = TdmTwin::new(&popfit.model, &popfit.estimates, s)
                .map_err(|e| CliError::input(e.to_string()))?;
            let params = twin
                .map_parameters()
                .map_err(|e| CliError::failure(e.to_string()))?;
            let json = twin
                .to_json()
                .map_err(|e| CliError::failure(e.to_string()))?;
            std::fs::write(&out, json).map_err(|e| io_fail(&out, e))?;
            let post = twin.posterior();
            println!(
                "twin of {id} from {} levels: MAP {} ({} posterior samples, effective {:.0})",
                s.observations.len(),
                params
                    .iter()
                    .map(|(n, v)| format!("{n} {v:.5}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                post.samples.len(),
                post.ess
            );
            Ok(())
        }
        PkCmd::Recommend(a) => recommend_cmd(a),
        PkCmd::Nca { data, route, out } => {
            let ds = load(&data)?;
            let route = match route.as_str() {
                "iv-bolus" | "iv" => Route::IvBolus,
                "extravascular" | "oral" => Route::Extravascular,
                r => {
                    return Err(CliError::input(format!(
                        "--route {r}: expected iv-bolus or extravascular"
                    )))
                }
            };
            let mut s = String::from(
                "id,cmax,tmax_h,auc_last,auc_inf,lambda_z_per_h,t_half_h,cl_f,error\n",
            );
            let o = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
            for (id, r) in nca_dataset(&ds, route) {
                match r {
                    Ok(n) => s.push_str(&format!(
                        "{id},{},{},{},{},{},{},{},\n",
                        n.cmax,
                        n.tmax_h,
                        n.auc_last,
                        o(n.auc_inf),
                        o(n.lambda_z_per_h),
                        o(n.t_half_h),
                        o(n.cl_f_l_per_h)
                    )),
                    Err(e) => s.push_str(&format!("{id},,,,,,,,\"{e}\"\n")),
                }
            }
            std::fs::write(&out, s).map_err(|e| io_fail(&out, e))?;
            println!("{}: NCA of {} subjects", out.display(), ds.subjects.len());
            Ok(())
        }
    }
}

fn fit_cmd(
    data: &Path,
    model: &ModelArgs,
    out: &Path,
    report: Option<&Path>,
) -> Result<(), CliError> {
    let m = model.build()?;
    let ds = load(data)?;
    let f = fit(&ds, &m, &FitOptions::default()).map_err(|e| CliError::input(e.to_string()))?;
    write_json(out, &f)?;
    let unit = ds.units.concentration.clone();
    println!(
        "{}: FOCE-I fit of {} ({} subjects, {} observations) in {:.2} s: -2LL {:.3}, log-likelihood {:.3}{}",
        out.display(),
        f.model.pk.name(),
        ds.subjects.len(),
        f.n_observations,
        f.wall_s,
        f.ofv,
        f.log_likelihood,
        if f.converged { "" } else { " (convergence not confirmed: check the estimates)" }
    );
    for (name, v) in f.model.parameters.iter().zip(&f.estimates.log_theta) {
        let se = f
            .standard_errors
            .as_ref()
            .and_then(|s| s.iter().find(|(n, _, _)| n == &format!("log_{name}")))
            .map(|(_, _, s)| format!(" (SE {s:.4})"))
            .unwrap_or_default();
        println!("  log {name} = {v:.4}{se}  ->  {name} = {:.5}", v.exp());
    }
    for (c, b) in f.model.covariates.iter().zip(&f.estimates.beta) {
        println!(
            "  {}~{} ({:?}, reference {}): beta = {b:.4}",
            c.parameter,
            c.covariate,
            c.form,
            c.reference.unwrap_or(f64::NAN)
        );
    }
    let k = f.model.n_eta();
    for (i, n) in f.model.iiv.iter().enumerate() {
        println!("  SD(eta_{n}) = {:.4}", f.estimates.omega[i * k + i].sqrt());
    }
    println!(
        "  sigma_add = {:.4} {unit}, sigma_prop = {:.4}",
        f.estimates.sigma_add, f.estimates.sigma_prop
    );
    if let Some(dir) = report {
        std::fs::create_dir_all(dir).map_err(|e| io_fail(dir, e))?;
        let bins = vpc(&f, &ds, 8, 500, 1);
        let title = data
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let html = medtwin_pk::report::html(&f, &bins, &title, &unit)
            .map_err(|e| CliError::failure(e.to_string()))?;
        let p = dir.join("index.html");
        std::fs::write(&p, html).map_err(|e| io_fail(&p, e))?;
        println!("report: {}", p.display());
    }
    Ok(())
}

fn recommend_cmd(a: RecommendArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&a.twin).map_err(|e| io_fail(&a.twin, e))?;
    let twin = TdmTwin::from_json(&text, &a.twin.display().to_string())
        .map_err(|e| CliError::input(e.to_string()))?;
    let target = match a.target.as_str() {
        "trough" => Target::Trough(a.value),
        "auc" => Target::Auc(a.value),
        "cmax" => Target::Cmax(a.value),
        t => {
            return Err(CliError::input(format!(
                "--target {t}: expected trough, auc or cmax"
            )))
        }
    };
    let objective = match a.objective.as_str() {
        "map" => Objective::Map,
        "p-in-range" => Objective::InRange {
            tolerance: a.tolerance,
        },
        o => {
            return Err(CliError::input(format!(
                "--objective {o}: expected map or p-in-range"
            )))
        }
    };
    if !(a.tolerance > 0.0 && a.tolerance < 1.0) {
        return Err(CliError::input(format!(
            "--tolerance {}: must be within (0, 1) (a fraction of the target)",
            a.tolerance
        )));
    }
    let map_err = |e: TdmError| match e {
        TdmError::Refused(_) => CliError::failure(e.to_string()),
        _ => CliError::input(e.to_string()),
    };
    let r = match a.interval {
        Some(interval_h) => {
            let reg = Regimen {
                interval_h,
                cmt: a.cmt,
                infusion_h: a.infusion_h,
            };
            recommend_for(&twin, target, reg, a.toxic, a.max_risk, a.round, objective)
                .map_err(map_err)?
        }
        None => {
            let (best, tried) = recommend_with_interval_for(
                &twin,
                target,
                &STANDARD_INTERVALS_H,
                a.cmt,
                a.infusion_h,
                a.toxic,
                a.max_risk,
                a.round,
                objective,
            );
            if !a.json {
                for (tau, r) in &tried {
                    match r {
                        Ok(r) => eprintln!(
                            "  every {tau} h: dose {:.4}, Cmax {:.3}{}",
                            r.dose,
                            r.map_cmax,
                            r.p_toxic
                                .map(|p| format!(", P(Cmax > toxic) {p:.3}"))
                                .unwrap_or_default()
                        ),
                        Err(e) => eprintln!("  every {tau} h: {e}"),
                    }
                }
            }
            best.map_err(map_err)?
        }
    };
    let tol = match objective {
        Objective::Map => DEFAULT_TOLERANCE,
        Objective::InRange { tolerance } => tolerance,
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| CliError::failure(e.to_string()))?
        );
    } else {
        println!(
            "dose {:.4} every {} h -> steady state (MAP): trough {:.3}, Cmax {:.3}, AUC_tau {:.3}; trough 80 % interval [{:.3}, {:.3}]{}{}",
            r.dose, r.interval_h, r.map_trough, r.map_cmax, r.map_auc, r.trough_pi80[0], r.trough_pi80[1],
            r.p_target.map(|p| format!("; P(trough within ±{:.0} % of target) = {p:.2}", 100.0 * tol)).unwrap_or_default(),
            r.p_toxic.map(|p| format!("; P(Cmax > toxic) = {p:.3}")).unwrap_or_default()
        );
    }
    Ok(())
}
