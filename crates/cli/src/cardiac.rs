//! `medtwin cardiac …`: cardiac safety twins (CiPA). Thin: every command calls into `medtwin-cardiac`.

use crate::error::{io_fail, CliError};
use clap::{Args, Subcommand};
use medtwin_cardiac::assay::{results_csv, run_assay, AssayOptions, DoseResult};
use medtwin_cardiac::drug::{bundled_drug, Drug};
use medtwin_cardiac::report::report_html;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Cardiac commands.
#[derive(Subcommand)]
pub enum CardiacCmd {
    /// The CiPA in-silico proarrhythmia assay: qNet, APD90/50 and EADs per dose (IKr-dynamic ORd
    /// model paced at 2000 ms from the control steady state); writes DIR/results.csv.
    Cipa(CipaArgs),
}

/// Arguments of `medtwin cardiac cipa`.
#[derive(Args)]
pub struct CipaArgs {
    /// Drug TOML file (name, cmax_nm, [herg], [block.<current>]); or use --drug.
    pub drug_file: Option<PathBuf>,
    /// A bundled CiPA training drug (lower case), e.g. dofetilide.
    #[arg(long, conflicts_with = "drug_file")]
    pub drug: Option<String>,
    /// Doses as multiples of Cmax, comma-separated, e.g. 1,2,3,4.
    #[arg(long, allow_hyphen_values = true)]
    pub doses: String,
    /// Output directory (created); results.csv, traces.csv and report.html are written there.
    #[arg(long)]
    pub out: PathBuf,
    /// Beats paced per dose (reference: 1000); the last min(250, beats) are analysed.
    #[arg(long, default_value_t = 1000)]
    pub beats: usize,
    /// Relative tolerance of the integrator (also the gates' absolute tolerance).
    #[arg(long, default_value_t = 5e-5)]
    pub rtol: f64,
}

/// Run a cardiac command.
pub fn cardiac(c: CardiacCmd) -> Result<(), CliError> {
    match c {
        CardiacCmd::Cipa(a) => cipa(a),
    }
}

fn parse_doses(s: &str) -> Result<Vec<f64>, CliError> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let p = part.trim();
        let d: f64 = p.parse().map_err(|_| {
            CliError::input(format!(
                "--doses: '{p}' is not a number (expected e.g. 1,2,3,4)"
            ))
        })?;
        if !d.is_finite() || d < 0.0 {
            return Err(CliError::input(format!(
                "--doses: {p} is invalid (doses are multiples of Cmax, finite and ≥ 0)"
            )));
        }
        out.push(d);
    }
    Ok(out)
}

fn load_drug(a: &CipaArgs) -> Result<Drug, CliError> {
    match (&a.drug_file, &a.drug) {
        (Some(f), None) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| CliError::input(format!("{}: {e}", f.display())))?;
            Drug::from_toml(&text, &f.display().to_string()).map_err(|e| CliError::input(e.to_string()))
        }
        (None, Some(n)) => bundled_drug(n).map_err(|e| CliError::input(e.to_string())),
        _ => Err(CliError::input(
            "cardiac cipa: give a drug TOML file or --drug NAME (one of the bundled CiPA training drugs)",
        )),
    }
}

fn traces_csv(results: &[DoseResult]) -> String {
    let mut s = String::from("t_ms");
    for r in results {
        s.push_str(&format!(",v_mv_{}_{}", r.drug, r.dose_x_cmax));
    }
    s.push('\n');
    let n = results
        .iter()
        .map(|r| r.trace_v_mv.len())
        .min()
        .unwrap_or(0);
    for i in 0..n {
        s.push_str(&i.to_string());
        for r in results {
            s.push_str(&format!(",{:.4}", r.trace_v_mv[i]));
        }
        s.push('\n');
    }
    s
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|e| io_fail(path, e))
}

fn cipa(a: CipaArgs) -> Result<(), CliError> {
    let doses = parse_doses(&a.doses)?;
    if a.beats == 0 {
        return Err(CliError::input("--beats: must be ≥ 1"));
    }
    if !(a.rtol > 0.0 && a.rtol < 0.1) {
        return Err(CliError::input(format!(
            "--rtol: {} is invalid (0 < rtol < 0.1)",
            a.rtol
        )));
    }
    let drug = load_drug(&a)?;
    let mut opts = AssayOptions {
        beats: a.beats,
        ..AssayOptions::default()
    };
    opts.analysed_beats = opts.analysed_beats.min(a.beats);
    opts.solver.rtol = a.rtol;
    opts.solver.gate_atol = a.rtol;
    let t0 = Instant::now();
    let results = run_assay(&drug, &doses, &opts).map_err(|e| CliError::failure(e.to_string()))?;
    let secs = t0.elapsed().as_secs_f64();
    std::fs::create_dir_all(&a.out).map_err(|e| io_fail(&a.out, e))?;
    write(&a.out.join("results.csv"), &results_csv(&results))?;
    write(&a.out.join("traces.csv"), &traces_csv(&results))?;
    let html = report_html(&drug.name, drug.cmax_nm, opts.beats, &results)
        .map_err(|e| CliError::failure(e.to_string()))?;
    write(&a.out.join("report.html"), &html)?;
    println!(
        "{}: Cmax {} nM; {} beats at 2000 ms per dose, last {} analysed ({:.1} s)",
        drug.name, drug.cmax_nm, opts.beats, opts.analysed_beats, secs
    );
    println!("dose_x_cmax  qnet_nC/uF  apd90_ms  apd50_ms  EAD_beats  beat");
    for r in &results {
        let f =
            |x: Option<f64>| x.map_or("NA (no repolarisation)".to_string(), |v| format!("{v:.0}"));
        println!(
            "{:>11}  {:>10.3}  {:>8}  {:>8}  {:>9}  {:>4}",
            if r.drug == "control" {
                "control".to_string()
            } else {
                r.dose_x_cmax.to_string()
            },
            r.qnet_nc_per_uf,
            f(r.apd90_ms),
            f(r.apd50_ms),
            r.ead_beats,
            r.selected_beat
        );
    }
    println!("wrote {}", a.out.join("results.csv").display());
    Ok(())
}
