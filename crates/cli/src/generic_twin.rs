//! `medtwin twin …` for any SBML model: the generic twin layer of `medtwin-twin-core`.
//! `twin fit MODEL.xml --data MEASUREMENTS.tsv --estimate ID,…` makes the twin; `update`,
//! `forecast`, `whatif` and `backtest` recognise its saved format. Thin: every command calls
//! the lifecycle API.

use crate::error::{io_fail, CliError};
use clap::Args;
use medtwin_twin_core::{
    backtest, read_measurements, CalibrationSpec, ModelSource, ObservableSpec, Plan, Prediction,
    SbmlTwinModel, Twin, TwinError, TwinModel,
};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How a model becomes a twin: data, estimated parameters, priors, noise, dosing history.
#[derive(Args, Clone, Default)]
pub struct SpecArgs {
    /// Measurements (PEtab measurement table: observableId, time, measurement[, noiseParameters]).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Parameters to estimate (model ids; default prior: log-normal at the nominal value, SD 1 on the log scale).
    #[arg(long, value_delimiter = ',')]
    pub estimate: Vec<String>,
    /// Calibration spec TOML ([[estimate]] with priors, [[observable]] noise, [outcomes]).
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// Noise of an observable not in the spec: ID=normal:SIGMA or ID=log-normal:SIGMA (repeatable).
    #[arg(long)]
    pub noise: Vec<String>,
    /// Dosing history TOML ([[dose]] time, target, amount).
    #[arg(long)]
    pub doses: Option<PathBuf>,
    /// Time unit of the model (times in data, plans and outputs).
    #[arg(long, default_value = "h")]
    pub time_unit: String,
}

fn twin_err(e: TwinError) -> CliError {
    match e {
        TwinError::Io(m) => CliError::failure(m),
        TwinError::Fit(m) => CliError::failure(format!("calibration: {m}")),
        other => CliError::input(other.to_string()),
    }
}

/// Whether `path` holds a generic twin (its JSON names the twin-core format).
pub fn is_generic_twin(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .map(|t| {
            t.get(..200).unwrap_or(&t).contains(&format!(
                "\"format\":\"{}\"",
                medtwin_twin_core::twin::FORMAT
            ))
        })
        .unwrap_or(false)
}

/// Read a plan TOML (`[[dose]] time, target, amount`; [`Plan::from_toml`]).
pub fn read_plan(path: &Path) -> Result<Plan, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    Plan::from_toml(&text, &path.display().to_string()).map_err(|e| flag_err("", e))
}

/// A spec or data error of a command-line value as an input error, its message prefixed
/// (`--` when it starts with the flag's name).
fn flag_err(prefix: &str, e: TwinError) -> CliError {
    match e {
        TwinError::Spec(m) | TwinError::Data(m) => CliError::input(format!("{prefix}{m}")),
        other => twin_err(other),
    }
}

/// The spec from `--prior`, `--estimate` and `--noise`, completed for the model
/// ([`CalibrationSpec::complete`]); every observable of the data needs a noise model.
fn build_spec(
    args: &SpecArgs,
    model: &dyn TwinModel,
    data_observables: &[String],
) -> Result<CalibrationSpec, CliError> {
    let spec = match &args.prior {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| CliError::input(format!("{}: {e}", p.display())))?;
            CalibrationSpec::from_toml(&text, &p.display().to_string()).map_err(twin_err)?
        }
        None => CalibrationSpec::default(),
    };
    let noise = args
        .noise
        .iter()
        .map(|n| ObservableSpec::parse(n).map_err(|e| flag_err("--", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = spec
        .complete(model, &args.estimate, noise)
        .map_err(|e| flag_err("--", e))?;
    if let Some(id) = spec.first_without_noise(data_observables.iter().map(String::as_str)) {
        return Err(CliError::input(format!(
            "the data measure '{id}' but no noise model is given for it: add --noise {id}=log-normal:0.1 (or normal:SIGMA) or list it in the --prior spec"
        )));
    }
    Ok(spec)
}

fn print_summary(twin: &Twin) {
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>12} {:>9}",
        "parameter", "MAP", "median", "2.5%", "97.5%", "SD ratio"
    );
    for s in twin.summary() {
        println!(
            "{:<12} {:>12.5} {:>12.5} {:>12.5} {:>12.5} {:>9.3}",
            s.id, s.map, s.median, s.lo95, s.hi95, s.sd_ratio
        );
    }
    let p = &twin.posterior;
    println!(
        "{} measurements; log-likelihood at MAP {:.3}; effective sample size {:.0} of {}{}",
        twin.data.len(),
        p.log_lik_map,
        p.ess,
        p.samples.len(),
        if p.laplace_ok {
            ""
        } else {
            "; Laplace Hessian not positive definite: proposal from the prior spread"
        }
    );
}

/// What `fit` and `backtest` read: the model (as saved with the twin), the completed spec, the
/// dosing history and the measurements.
struct Problem {
    source: ModelSource,
    spec: CalibrationSpec,
    history: Plan,
    data: Vec<medtwin_twin_core::Measurement>,
}

fn load_problem(model_path: &Path, args: &SpecArgs, command: &str) -> Result<Problem, CliError> {
    let text = std::fs::read_to_string(model_path)
        .map_err(|e| CliError::input(format!("{}: {e}", model_path.display())))?;
    let model = SbmlTwinModel::from_sbml(&text, &args.time_unit)
        .map_err(|e| CliError::input(format!("{}: {e}", model_path.display())))?;
    let data_path = args.data.as_ref().ok_or_else(|| {
        CliError::input(format!(
            "twin {command} MODEL.xml needs --data MEASUREMENTS.tsv"
        ))
    })?;
    let data = read_measurements(data_path).map_err(twin_err)?;
    let mut obs: Vec<String> = data.iter().map(|m| m.observable.clone()).collect();
    obs.sort();
    obs.dedup();
    let spec = build_spec(args, &model, &obs)?;
    if spec.estimate.is_empty() {
        return Err(CliError::input(
            "nothing to estimate: give --estimate ID[,ID…] or [[estimate]] in --prior",
        ));
    }
    let history = match &args.doses {
        Some(p) => read_plan(p)?,
        None => Plan::default(),
    };
    let source = ModelSource::Sbml {
        text,
        time_unit: args.time_unit.clone(),
    };
    Ok(Problem {
        source,
        spec,
        history,
        data,
    })
}

/// `twin fit MODEL.xml --data … --estimate … --out twin.json`.
pub fn fit(model_path: &Path, args: &SpecArgs, out: &Path) -> Result<(), CliError> {
    let p = load_problem(model_path, args, "fit")?;
    let twin = Twin::fit(p.source, p.spec, p.history, p.data).map_err(twin_err)?;
    print_summary(&twin);
    twin.save(out).map_err(twin_err)?;
    println!("twin saved to {}", out.display());
    Ok(())
}

/// `twin update twin.json MEASUREMENTS.tsv [--doses PLAN.toml] --out twin.json`.
pub fn update(twin: &Path, data: &Path, doses: Option<&Path>, out: &Path) -> Result<(), CliError> {
    let mut t = Twin::load(twin).map_err(twin_err)?;
    let all = read_measurements(data).map_err(twin_err)?;
    let plan = match doses {
        Some(p) => read_plan(p)?,
        None => Plan::default(),
    };
    // Measurements already assimilated (same observable, time and value) are not counted twice.
    let n = t.assimilate(all, &plan).map_err(twin_err)?;
    println!("{n} new measurements assimilated");
    print_summary(&t);
    t.save(out).map_err(twin_err)
}

fn forecast_times(t: &Twin, until: Option<f64>, step: Option<f64>) -> Result<Vec<f64>, CliError> {
    let until = until.ok_or_else(|| {
        CliError::input(format!(
            "generic twins need --until TIME (in {}; the data end at {})",
            t.model().time_unit(),
            t.last_time()
        ))
    })?;
    t.forecast_times(until, step).map_err(|e| flag_err("--", e))
}

fn prediction_csv(p: &Prediction) -> String {
    let mut s = String::from("time,observable,median,lo50,hi50,lo80,hi80,lo95,hi95\n");
    for o in &p.observables {
        for (t, b) in p.times.iter().zip(&o.bands) {
            let _ = writeln!(
                s,
                "{t},{},{},{},{},{},{},{},{}",
                o.observable, b.median, b.lo50, b.hi50, b.lo80, b.hi80, b.lo95, b.hi95
            );
        }
    }
    s
}

/// `twin forecast twin.json [--plan PLAN.toml] --until T [--step S] --out forecast.csv`.
pub fn forecast(
    twin: &Path,
    plan: Option<&Path>,
    until: Option<f64>,
    step: Option<f64>,
    out: &Path,
) -> Result<(), CliError> {
    let t = Twin::load(twin).map_err(twin_err)?;
    let plan = match plan {
        Some(p) => read_plan(p)?,
        None => Plan::default(),
    };
    let times = forecast_times(&t, until, step)?;
    let p = t.forecast(&plan, &times).map_err(twin_err)?;
    std::fs::write(out, prediction_csv(&p)).map_err(|e| io_fail(out, e))?;
    for (c, pr) in &p.outcome_probabilities {
        println!("P({c}) = {pr:.3}");
    }
    println!(
        "forecast of {} times written to {}",
        times.len(),
        out.display()
    );
    Ok(())
}

/// `twin whatif twin.json --plan A.toml --plan B.toml --until T --out DIR`: one CSV per plan
/// and `summary.csv` (plan, outcome probabilities, each observable's median and 80 % band at
/// the last time).
pub fn whatif(
    twin: &Path,
    plans: &[PathBuf],
    until: Option<f64>,
    step: Option<f64>,
    out: &Path,
) -> Result<(), CliError> {
    let t = Twin::load(twin).map_err(twin_err)?;
    let times = forecast_times(&t, until, step)?;
    let mut named = Vec::new();
    for p in plans {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "plan".into());
        named.push((name, read_plan(p)?));
    }
    let res = t.whatif(&named, &times).map_err(twin_err)?;
    std::fs::create_dir_all(out).map_err(|e| io_fail(out, e))?;
    let classes: Vec<String> = t
        .spec
        .outcomes
        .as_ref()
        .map(|o| o.classes())
        .unwrap_or_default();
    let mut header = vec!["plan".to_string()];
    header.extend(classes.iter().map(|c| format!("p_{}", c.replace(' ', "_"))));
    for o in &t.spec.observables {
        header.extend([
            format!("{}_median", o.id),
            format!("{}_lo80", o.id),
            format!("{}_hi80", o.id),
        ]);
    }
    let mut summary = header.join(",") + "\n";
    for (name, p) in &res {
        let f = out.join(format!("{name}.csv"));
        std::fs::write(&f, prediction_csv(p)).map_err(|e| io_fail(&f, e))?;
        let mut row = vec![name.clone()];
        row.extend(classes.iter().map(|c| format!("{:.4}", p.probability(c))));
        for o in &p.observables {
            let b = o.bands.last().expect("at least one time");
            row.extend([b.median, b.lo80, b.hi80].map(|v| v.to_string()));
        }
        summary.push_str(&(row.join(",") + "\n"));
        let probs: Vec<String> = p
            .outcome_probabilities
            .iter()
            .map(|(c, v)| format!("P({c}) {v:.3}"))
            .collect();
        println!("{name}: {}", probs.join(", "));
    }
    let f = out.join("summary.csv");
    std::fs::write(&f, summary).map_err(|e| io_fail(&f, e))?;
    println!(
        "what-if of {} plans written to {}",
        res.len(),
        out.display()
    );
    Ok(())
}

/// `twin backtest MODEL.xml --data … --estimate … --origins 6,12 --window 12 --out metrics.json`.
pub fn backtest_cmd(
    model_path: &Path,
    args: &SpecArgs,
    origins: &[f64],
    window: f64,
    out: &Path,
) -> Result<(), CliError> {
    if origins.is_empty() || window.is_nan() || window <= 0.0 {
        return Err(CliError::input(
            "generic backtests need --origins T[,T…] and --window W > 0 (model time unit)",
        ));
    }
    let p = load_problem(model_path, args, "backtest")?;
    let r = backtest(&p.source, &p.spec, &p.history, &p.data, origins, window).map_err(twin_err)?;
    for o in &r.origins {
        println!(
            "origin {:>8}: {} calibration, {} held out, RMSE {:.4}, coverage 80 % {:.2} / 95 % {:.2}",
            o.origin, o.n_calibration, o.score.n, o.score.rmse, o.score.coverage80, o.score.coverage95
        );
    }
    println!(
        "pooled: n {}, RMSE {:.4}, coverage 50 % {:.2} / 80 % {:.2} / 95 % {:.2}",
        r.pooled.n, r.pooled.rmse, r.pooled.coverage50, r.pooled.coverage80, r.pooled.coverage95
    );
    let json = serde_json::to_string_pretty(&r).map_err(|e| CliError::failure(e.to_string()))?;
    std::fs::write(out, json).map_err(|e| io_fail(out, e))
}
