//! `medtwin cardiac …`: cardiac safety twins (CiPA). Thin: every command calls into `medtwin-cardiac`.

use crate::error::{io_fail, CliError};
use clap::{Args, Subcommand};
use medtwin_cardiac::assay::{results_csv, run_assay, AssayOptions, DoseResult};
use medtwin_cardiac::classify::training_classifier;
use medtwin_cardiac::drug::{bundled_drug, Drug};
use medtwin_cardiac::report::{report_html, SampleStudy};
use medtwin_cardiac::samples::{
    bundled_samples, parse_samples, risk_uncertainty, run_samples, samples_csv, summarize,
    summary_csv, UncertaintySample,
};
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
    #[arg(long, default_value_t = 1e-4)]
    pub rtol: f64,
    /// Also propagate the first N uncertainty samples (bootstrap hERG binding + MCMC Hill
    /// parameters, Li et al. 2019) through every dose on all cores; writes DIR/samples.csv,
    /// DIR/samples_summary.csv (median and 95 % interval per dose) and DIR/samples_risk.csv
    /// (fraction of samples per TdP risk class), and adds the intervals and risk fractions to
    /// DIR/report.html. Bundled: 50 per CiPA training drug.
    #[arg(long, default_value_t = 0)]
    pub samples: usize,
    /// Directory with the FDA/CiPA-layout sample tables boot_pars.csv and IC50_samples.csv
    /// (instead of the bundled ones; any drug, any number of rows).
    #[arg(long, requires = "samples")]
    pub samples_dir: Option<PathBuf>,
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
    // sample tables are read before anything runs, so bad sample input writes nothing
    let samples = if a.samples > 0 {
        Some(load_samples(&a, &drug)?)
    } else {
        None
    };
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
    let html = report_html(&drug.name, drug.cmax_nm, opts.beats, &results, None)
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
    if let Some(samples) = samples {
        uncertainty(&a, &drug, &doses, &samples, &opts, &results)?;
    }
    Ok(())
}

fn load_samples(a: &CipaArgs, drug: &Drug) -> Result<Vec<UncertaintySample>, CliError> {
    let Some(dir) = &a.samples_dir else {
        return bundled_samples(&drug.name, a.samples).map_err(|e| CliError::input(e.to_string()));
    };
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read_to_string(&p)
            .map_err(|e| CliError::input(format!("--samples-dir: {}: {e}", p.display())))
    };
    let (b, i) = (read("boot_pars.csv")?, read("IC50_samples.csv")?);
    let all = parse_samples(&b, &i, ("boot_pars.csv", "IC50_samples.csv"))
        .map_err(|e| CliError::input(e.to_string()))?;
    if all.len() < a.samples {
        return Err(CliError::input(format!(
            "--samples {}: {} holds only {} paired samples",
            a.samples,
            dir.display(),
            all.len()
        )));
    }
    Ok(all.into_iter().take(a.samples).collect())
}

fn uncertainty(
    a: &CipaArgs,
    drug: &Drug,
    doses: &[f64],
    samples: &[UncertaintySample],
    opts: &AssayOptions,
    results: &[DoseResult],
) -> Result<(), CliError> {
    let t0 = Instant::now();
    let rows =
        run_samples(drug, doses, samples, opts).map_err(|e| CliError::failure(e.to_string()))?;
    let secs = t0.elapsed().as_secs_f64();
    let sum = summarize(&rows);
    let (classifier, left_out) = training_classifier(&drug.name);
    let risk = risk_uncertainty(&rows, &classifier);
    write(&a.out.join("samples.csv"), &samples_csv(&drug.name, &rows))?;
    write(
        &a.out.join("samples_summary.csv"),
        &summary_csv(&drug.name, &sum),
    )?;
    let mq = |k: usize| {
        risk.mean_qnet
            .map_or("NA".to_string(), |v| format!("{:.4}", v[k]))
    };
    write(
        &a.out.join("samples_risk.csv"),
        &format!(
            "drug,n_classified,frac_low,frac_intermediate,frac_high,call,mean_qnet_median,\
             mean_qnet_lo95,mean_qnet_hi95,classifier\n{},{},{:.4},{:.4},{:.4},{},{},{},{},{}\n",
            drug.name,
            risk.n,
            risk.fractions[0],
            risk.fractions[1],
            risk.fractions[2],
            risk.call_name(),
            mq(0),
            mq(1),
            mq(2),
            if left_out {
                "training set without this drug"
            } else {
                "training set"
            }
        ),
    )?;
    let classifier_name = if left_out {
        "CiPA training set without this drug"
    } else {
        "CiPA training set"
    };
    // the point-estimate report written above is replaced by one with the samples' intervals
    let study = SampleStudy {
        n_samples: samples.len(),
        summaries: &sum,
        risk: &risk,
        classifier: classifier_name,
    };
    let html = report_html(&drug.name, drug.cmax_nm, opts.beats, results, Some(&study))
        .map_err(|e| CliError::failure(e.to_string()))?;
    write(&a.out.join("report.html"), &html)?;
    let jobs = rows.len();
    println!(
        "uncertainty: {} samples × {} doses = {jobs} runs on {} threads ({secs:.1} s wall)",
        samples.len(),
        doses.len(),
        rayon::current_num_threads()
    );
    println!("dose_x_cmax  n_ok  qnet median [95% interval]      apd90 median [95% interval]  EAD  no-repol");
    for d in &sum {
        let q = d.qnet.map_or("NA".to_string(), |v| {
            format!("{:.3} [{:.3}, {:.3}]", v[0], v[1], v[2])
        });
        let p = d.apd90.map_or("NA".to_string(), |v| {
            format!("{:.0} [{:.0}, {:.0}]", v[0], v[1], v[2])
        });
        println!(
            "{:>11}  {:>4}  {:<30}  {:<27}  {:>3}  {:>8}",
            d.dose_x_cmax, d.n_ok, q, p, d.ead_samples, d.no_repol_samples
        );
    }
    println!(
        "TdP risk ({} samples, qNet averaged over the doses > 0; classifier: {}): low {:.0} %, intermediate {:.0} %, high {:.0} % -> {}",
        risk.n,
        classifier_name,
        100.0 * risk.fractions[0],
        100.0 * risk.fractions[1],
        100.0 * risk.fractions[2],
        risk.call_name()
    );
    println!("wrote {}", a.out.join("samples.csv").display());
    Ok(())
}
