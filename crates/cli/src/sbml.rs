//! `sbml info` and `sbml simulate`: any SBML model through medtwin-sbml.

use crate::error::{io_fail, CliError};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum SbmlCmd {
    /// Species, parameters, rules, events, and what is unsupported.
    Info {
        /// SBML file (Level 2 or 3).
        model: PathBuf,
        /// Give a parameter, compartment or species (unit of its symbol) a value before the
        /// model is checked: `--set ID=VALUE`, repeatable (for files that leave values unset).
        #[arg(long = "set", value_name = "ID=VALUE", value_parser = parse_set)]
        set: Vec<(String, f64)>,
    },
    /// Simulate and write the SBML Test Suite result layout (time, then one column per variable).
    Simulate {
        /// SBML file.
        model: PathBuf,
        /// Start time (model units).
        #[arg(long, default_value_t = 0.0)]
        start: f64,
        /// End time (model units).
        #[arg(long)]
        end: Option<f64>,
        /// Output intervals (N + 1 rows).
        #[arg(long)]
        steps: Option<usize>,
        /// Output variables (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        vars: Option<Vec<String>>,
        /// Species reported as amounts.
        #[arg(long, value_delimiter = ',')]
        amount: Vec<String>,
        /// Species reported as concentrations.
        #[arg(long, value_delimiter = ',')]
        concentration: Vec<String>,
        /// Relative tolerance.
        #[arg(long)]
        rtol: Option<f64>,
        /// Absolute tolerance (of a state of unit size; scaled per state by its initial amount or
        /// compartment size, as libRoadRunner does).
        #[arg(long)]
        atol: Option<f64>,
        /// Largest integration step (model time units), so that short pulses written as
        /// piecewise functions of time (e.g. stimulus currents) are not stepped over.
        #[arg(long)]
        max_step: Option<f64>,
        /// Give a parameter, compartment or species (unit of its symbol) a value before the
        /// model is checked: `--set ID=VALUE`, repeatable (for files that leave values unset,
        /// which are refused naming them, or to change a value).
        #[arg(long = "set", value_name = "ID=VALUE", value_parser = parse_set)]
        set: Vec<(String, f64)>,
        /// Take all of the above from an SBML Test Suite settings file.
        #[arg(long)]
        settings: Option<PathBuf>,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `ID=VALUE` of `--set`.
fn parse_set(s: &str) -> Result<(String, f64), String> {
    let (id, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=VALUE, got '{s}'"))?;
    let id = id.trim();
    if id.is_empty() {
        return Err(format!("expected ID=VALUE, got '{s}' (no id)"));
    }
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("'{id}': value '{v}' is not a number"))?;
    if !x.is_finite() {
        return Err(format!("'{id}': value must be finite, got {v}"));
    }
    Ok((id.to_string(), x))
}

pub fn sbml(c: SbmlCmd) -> Result<(), CliError> {
    match c {
        SbmlCmd::Info { model, set } => {
            let m = medtwin_sbml::load_sbml_with_values(&model, &set)
                .map_err(|e| CliError::input(format!("{}: {e}", model.display())))?;
            print!("{}", medtwin_sbml::info(&m));
            Ok(())
        }
        SbmlCmd::Simulate {
            model,
            start,
            end,
            steps,
            vars,
            amount,
            concentration,
            rtol,
            atol,
            max_step,
            set,
            settings,
            out,
        } => {
            let m = medtwin_sbml::load_sbml_with_values(&model, &set)
                .map_err(|e| CliError::input(format!("{}: {e}", model.display())))?;
            let mut opts = match &settings {
                Some(s) => medtwin_sbml::read_settings(s)
                    .map_err(|e| CliError::input(format!("{}: {e}", s.display())))?,
                None => {
                    let (Some(end), Some(steps)) = (end, steps) else {
                        return Err(CliError::input(
                            "give --end and --steps, or --settings CASE-settings.txt",
                        ));
                    };
                    medtwin_sbml::SimulateOptions {
                        start,
                        end,
                        steps,
                        vars: vars.clone(),
                        amount: amount.clone(),
                        concentration: concentration.clone(),
                        ..Default::default()
                    }
                }
            };
            if let Some(r) = rtol {
                opts.rtol = r;
            }
            if let Some(a) = atol {
                opts.atol = a;
            }
            if let Some(h) = max_step {
                if !(h > 0.0 && h.is_finite()) {
                    return Err(CliError::input(format!(
                        "--max-step must be positive, got {h}"
                    )));
                }
                opts.max_step = Some(h);
            }
            if !(opts.end.is_finite() && opts.start.is_finite() && opts.end >= opts.start)
                || opts.steps == 0
            {
                return Err(CliError::input(format!(
                    "invalid span: start {} end {} steps {}",
                    opts.start, opts.end, opts.steps
                )));
            }
            let t = std::time::Instant::now();
            let table = medtwin_sbml::simulate(&m, &opts)
                .map_err(|e| CliError::failure(format!("{}: {e}", model.display())))?;
            medtwin_sbml::write_csv(&table, &out).map_err(|e| io_fail(&out, e))?;
            eprintln!(
                "{} rows x {} columns in {:.1} ms -> {}",
                table.rows.len(),
                table.header.len(),
                1e3 * t.elapsed().as_secs_f64(),
                out.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_set;

    #[test]
    fn set_values_are_parsed_or_refused_with_the_reason() {
        assert_eq!(
            parse_set("V_gate=-84.5").unwrap(),
            ("V_gate".to_string(), -84.5)
        );
        assert_eq!(parse_set(" k = 1e-3 ").unwrap(), ("k".to_string(), 1e-3));
        assert!(parse_set("k").unwrap_err().contains("ID=VALUE"));
        assert!(parse_set("=1").unwrap_err().contains("no id"));
        assert!(parse_set("k=abc").unwrap_err().contains("not a number"));
        assert!(parse_set("k=nan").unwrap_err().contains("finite"));
    }
}
