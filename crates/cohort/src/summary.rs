//! `trial analyze`: read a trial's `results.parquet` and write `summary.json` and one SVG plot
//! per endpoint (`plots/<metric>.svg`).
//!
//! Per endpoint and arm: n, mean, SD, median, quartiles (type-7 quantiles, as R's default).
//! Effect of every arm against the first (reference) arm: difference in means with a 95 % CI —
//! paired t for crossover designs, Welch t for parallel ones — and optionally a percentile
//! bootstrap CI (patients resampled with replacement; within arm for parallel designs; seeded).
//! Parallel designs with a prognostic score also get PROCOVA (ANCOVA on treatment and score,
//! Schuler et al. 2021) with the unadjusted and adjusted standard errors and the implied
//! sample-size reduction `1 − SE²_adj / SE²_unadj`.
//!
//! The trial's design, arms and endpoints come from the file's key–value metadata
//! (`medtwin.trial`, JSON [`TrialMeta`]), so the results file alone is enough.

use crate::analysis::{mean_sd, paired, procova, welch, Effect, Procova};
use crate::prognostic::splitmix;
use crate::spec::METRICS;
use arrow::array::{Array, Float64Array, StringArray, UInt64Array};
use medtwin_infer::quantile_sorted as quantile;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Name of a completed trial's results file in its output directory.
pub const RESULTS_FILE: &str = "results.parquet";
/// Name of an interrupted trial's results file (valid Parquet, `medtwin.status = partial`).
pub const PARTIAL_FILE: &str = "results.partial.parquet";
/// Name of the analysis written by [`analyze_dir`].
pub const SUMMARY_FILE: &str = "summary.json";
/// Key–value metadata key holding the [`TrialMeta`] JSON.
pub const META_KEY: &str = "medtwin.trial";
/// Key–value metadata key: `complete` or `partial`.
pub const STATUS_KEY: &str = "medtwin.status";
/// Key–value metadata key: patients (cohort indices `0..k`) whose rows are in the file.
pub const COMPLETED_KEY: &str = "medtwin.completed_patients";

/// What a results file says about its trial (stored as JSON under [`META_KEY`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialMeta {
    /// `crossover` or `parallel`.
    pub design: String,
    /// Simulated days per patient and arm.
    pub days: u64,
    /// Patients in the cohort.
    pub n_patients: usize,
    /// Arm names; the first is the reference (control).
    pub arms: Vec<String>,
    /// Endpoint metric names, in specification order.
    pub endpoints: Vec<String>,
    /// Patients per row group.
    pub chunk_patients: usize,
    /// Fingerprint of the validated specification (a resumed run must match it).
    pub spec_fingerprint: String,
    /// The prognostic model (parallel designs): run-in days, historical patients and the
    /// training R² per metric.
    pub prognostic: Option<PrognosticInfo>,
}

/// Provenance of the prognostic score columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrognosticInfo {
    /// Run-in days of baseline CGM per patient.
    pub run_in_days: u64,
    /// Historical control patients used to train the model.
    pub historical_n: usize,
    /// Training R² per metric.
    pub train_r2: BTreeMap<String, f64>,
}

/// Errors of reading or analysing a results file.
#[derive(Debug, Error)]
pub enum AnalyzeError {
    /// The file could not be read, or is not a medtwin results file.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

fn ferr(file: &Path, message: impl std::fmt::Display) -> AnalyzeError {
    AnalyzeError::File {
        file: file.display().to_string(),
        message: message.to_string(),
    }
}

/// A results file in memory: one entry per row.
#[derive(Debug, Clone)]
pub struct ResultsTable {
    /// Trial metadata.
    pub meta: TrialMeta,
    /// `complete` or `partial`.
    pub status: String,
    /// Patients whose rows are present (`0..completed_patients`).
    pub completed_patients: usize,
    /// Cohort index per row.
    pub patient_index: Vec<u64>,
    /// Arm index (into `meta.arms`) per row.
    pub arm: Vec<usize>,
    /// The 14 metric columns of [`METRICS`], each one value per row.
    pub metrics: Vec<Vec<f64>>,
    /// The 14 `prognostic_<metric>` columns if present.
    pub prognostic: Option<Vec<Vec<f64>>>,
    /// Rows per row group, in file order.
    pub row_groups: Vec<usize>,
}

/// Read a results file (complete or partial). Errors: unreadable file, missing metadata or
/// columns, unknown arm names.
pub fn read_results(path: &Path) -> Result<ResultsTable, AnalyzeError> {
    let f = File::open(path).map_err(|e| ferr(path, e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| ferr(path, e))?;
    let md = b.metadata().clone();
    let kv = md
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let get = |k: &str| kv.iter().find(|x| x.key == k).and_then(|x| x.value.clone());
    let meta: TrialMeta = serde_json::from_str(&get(META_KEY).ok_or_else(|| {
        ferr(
            path,
            format!("not a medtwin trial file: no '{META_KEY}' metadata"),
        )
    })?)
    .map_err(|e| ferr(path, format!("metadata '{META_KEY}': {e}")))?;
    let status = get(STATUS_KEY).unwrap_or_else(|| "partial".into());
    let completed_patients = get(COMPLETED_KEY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0usize);
    let row_groups: Vec<usize> = md
        .row_groups()
        .iter()
        .map(|g| g.num_rows() as usize)
        .collect();
    let rdr = b
        .with_batch_size(65_536)
        .build()
        .map_err(|e| ferr(path, e))?;
    let mut t = ResultsTable {
        meta,
        status,
        completed_patients,
        patient_index: Vec::new(),
        arm: Vec::new(),
        metrics: vec![Vec::new(); METRICS.len()],
        prognostic: None,
        row_groups,
    };
    let mut prog: Vec<Vec<f64>> = vec![Vec::new(); METRICS.len()];
    let mut has_prog = false;
    for batch in rdr {
        let batch = batch.map_err(|e| ferr(path, e))?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| ferr(path, format!("missing column '{name}'")))
        };
        let idx = col("patient_index")?;
        let idx = idx
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| ferr(path, "column 'patient_index' is not UInt64"))?;
        t.patient_index.extend(idx.values().iter().copied());
        let arm = col("arm")?;
        let arm = arm
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| ferr(path, "column 'arm' is not a string"))?;
        for i in 0..arm.len() {
            let name = arm.value(i);
            let a = t
                .meta
                .arms
                .iter()
                .position(|x| x == name)
                .ok_or_else(|| ferr(path, format!("row arm '{name}' is not a trial arm")))?;
            t.arm.push(a);
        }
        let f64col = |name: &str| -> Result<Vec<f64>, AnalyzeError> {
            let c = col(name)?;
            let c = c
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| ferr(path, format!("column '{name}' is not Float64")))?;
            Ok(c.values().to_vec())
        };
        for (m, (name, _)) in METRICS.iter().enumerate() {
            t.metrics[m].extend(f64col(name)?);
            let pn = format!("prognostic_{name}");
            if batch.column_by_name(&pn).is_some() {
                has_prog = true;
                prog[m].extend(f64col(&pn)?);
            }
        }
    }
    if has_prog {
        t.prognostic = Some(prog);
    }
    Ok(t)
}

/// Options of [`analyze_dir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnalyzeOptions {
    /// Bootstrap resamples for percentile CIs (0: none).
    pub bootstrap: usize,
    /// Bootstrap seed.
    pub seed: u64,
}

/// Distribution of one endpoint in one arm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmSummary {
    /// Patients.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample SD.
    pub sd: f64,
    /// Median.
    pub median: f64,
    /// First quartile.
    pub q25: f64,
    /// Third quartile.
    pub q75: f64,
    /// 5th percentile.
    pub p05: f64,
    /// 95th percentile.
    pub p95: f64,
}

/// A percentile bootstrap CI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bootstrap {
    /// Resamples.
    pub n_resamples: usize,
    /// Bootstrap SE (SD of the resampled estimates).
    pub se: f64,
    /// 2.5 % and 97.5 % percentiles.
    pub ci95: [f64; 2],
}

/// An effect `arm − reference` in summary form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectSummary {
    /// Arm.
    pub arm: String,
    /// Reference arm.
    pub reference: String,
    /// `paired-t`, `welch-t`, `anova` or `procova-ancova`.
    pub method: String,
    /// Difference in means (endpoint units).
    pub estimate: f64,
    /// Standard error.
    pub se: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// 95 % CI.
    pub ci95: [f64; 2],
    /// Percentile bootstrap CI, if requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
}

impl From<&Effect> for EffectSummary {
    fn from(e: &Effect) -> Self {
        EffectSummary {
            arm: e.arm.clone(),
            reference: e.reference.clone(),
            method: e.method.clone(),
            estimate: e.estimate,
            se: e.se,
            df: e.df,
            ci95: [e.ci_low, e.ci_high],
            bootstrap: None,
        }
    }
}

/// PROCOVA of one arm against the reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcovaSummary {
    /// Arm.
    pub arm: String,
    /// Unadjusted ANOVA estimate.
    pub unadjusted: EffectSummary,
    /// PROCOVA (ANCOVA with the prognostic score) estimate.
    pub adjusted: EffectSummary,
    /// Coefficient of the prognostic score.
    pub prognostic_coefficient: f64,
    /// Correlation of score and outcome in the reference arm.
    pub prognostic_correlation_reference: f64,
    /// `1 − SE²_adj / SE²_unadj`.
    pub variance_reduction: f64,
    /// Implied sample-size reduction for the same precision, % (`100 × variance_reduction`).
    pub sample_size_reduction_pct: f64,
}

impl From<&Procova> for ProcovaSummary {
    fn from(p: &Procova) -> Self {
        ProcovaSummary {
            arm: p.adjusted.arm.clone(),
            unadjusted: (&p.unadjusted).into(),
            adjusted: (&p.adjusted).into(),
            prognostic_coefficient: p.prognostic_coefficient,
            prognostic_correlation_reference: p.prognostic_correlation_reference,
            variance_reduction: p.variance_reduction,
            sample_size_reduction_pct: 100.0 * (1.0 - p.sample_size_fraction),
        }
    }
}

/// The analysis of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointSummary {
    /// Per arm (by name).
    pub arms: BTreeMap<String, ArmSummary>,
    /// Effect of the second arm against the first (`None` with a single arm).
    pub effect: Option<EffectSummary>,
    /// Effects of every arm after the first, in arm order.
    pub effects: Vec<EffectSummary>,
    /// PROCOVA per arm after the first (parallel designs with a prognostic score).
    pub procova: Vec<ProcovaSummary>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Rows in the results file.
    pub n_rows: usize,
    /// Patients with rows.
    pub n_patients: usize,
    /// `crossover` or `parallel`.
    pub design: String,
    /// Days per patient and arm.
    pub days: u64,
    /// Arms in order; the first is the reference.
    pub arms: Vec<String>,
    /// Endpoint names in specification order.
    pub endpoint_order: Vec<String>,
    /// Per endpoint.
    pub endpoints: BTreeMap<String, EndpointSummary>,
    /// Prognostic model provenance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prognostic: Option<PrognosticInfo>,
    /// Plot files written (relative to the trial directory).
    pub plots: Vec<String>,
}

fn arm_summary(v: &[f64]) -> ArmSummary {
    let (mean, sd) = mean_sd(v);
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    ArmSummary {
        n: v.len(),
        mean,
        sd,
        median: quantile(&s, 0.5),
        q25: quantile(&s, 0.25),
        q75: quantile(&s, 0.75),
        p05: quantile(&s, 0.05),
        p95: quantile(&s, 0.95),
    }
}

fn bootstrap_ci(est: &mut [f64]) -> Bootstrap {
    let (_, se) = mean_sd(est);
    est.sort_by(f64::total_cmp);
    Bootstrap {
        n_resamples: est.len(),
        se,
        ci95: [quantile(est, 0.025), quantile(est, 0.975)],
    }
}

fn resample_mean(v: &[f64], rng: &mut ChaCha8Rng) -> f64 {
    let n = v.len();
    (0..n).map(|_| v[rng.random_range(0..n)]).sum::<f64>() / n as f64
}

/// Analyse a results table (see the module docs). Partial tables are analysed as they are.
pub fn summarize(t: &ResultsTable, opts: AnalyzeOptions) -> Summary {
    let k = t.meta.arms.len();
    let parallel = t.meta.design == "parallel";
    let mut endpoints = BTreeMap::new();
    let mut patients: Vec<u64> = t.patient_index.clone();
    patients.sort_unstable();
    patients.dedup();
    for (e_i, name) in t.meta.endpoints.iter().enumerate() {
        let Some(m) = METRICS.iter().position(|(n, _)| n == name) else {
            continue;
        };
        // per arm values (row order = patient order) and, for crossover, per patient
        let mut by_arm: Vec<Vec<f64>> = vec![Vec::new(); k];
        let mut prog_by_arm: Vec<Vec<f64>> = vec![Vec::new(); k];
        let mut by_patient: BTreeMap<u64, Vec<Option<f64>>> = BTreeMap::new();
        for r in 0..t.arm.len() {
            let a = t.arm[r];
            let y = t.metrics[m][r];
            by_arm[a].push(y);
            if let Some(p) = &t.prognostic {
                prog_by_arm[a].push(p[m][r]);
            }
            by_patient
                .entry(t.patient_index[r])
                .or_insert_with(|| vec![None; k])[a] = Some(y);
        }
        let arms = t
            .meta
            .arms
            .iter()
            .zip(&by_arm)
            .map(|(n, v)| (n.clone(), arm_summary(v)))
            .collect();
        let mut effects = Vec::new();
        let mut pro = Vec::new();
        for a in 1..k {
            let (arm, refn) = (&t.meta.arms[a], &t.meta.arms[0]);
            let mut rng =
                ChaCha8Rng::seed_from_u64(splitmix(opts.seed ^ ((e_i as u64) << 32) ^ a as u64));
            let mut eff: EffectSummary;
            if parallel {
                eff = (&welch(arm, refn, &by_arm[a], &by_arm[0])).into();
                if opts.bootstrap > 0 && !by_arm[a].is_empty() && !by_arm[0].is_empty() {
                    let mut est: Vec<f64> = (0..opts.bootstrap)
                        .map(|_| {
                            resample_mean(&by_arm[a], &mut rng)
                                - resample_mean(&by_arm[0], &mut rng)
                        })
                        .collect();
                    eff.bootstrap = Some(bootstrap_ci(&mut est));
                }
                if t.prognostic.is_some() {
                    if let Some(p) = procova(
                        arm,
                        refn,
                        &by_arm[a],
                        &prog_by_arm[a],
                        &by_arm[0],
                        &prog_by_arm[0],
                    ) {
                        pro.push((&p).into());
                    }
                }
            } else {
                let (y, y0): (Vec<f64>, Vec<f64>) = by_patient
                    .values()
                    .filter_map(|v| Some((v[a]?, v[0]?)))
                    .unzip();
                eff = (&paired(arm, refn, &y, &y0)).into();
                if opts.bootstrap > 0 && !y.is_empty() {
                    let d: Vec<f64> = y.iter().zip(&y0).map(|(u, v)| u - v).collect();
                    let mut est: Vec<f64> = (0..opts.bootstrap)
                        .map(|_| resample_mean(&d, &mut rng))
                        .collect();
                    eff.bootstrap = Some(bootstrap_ci(&mut est));
                }
            }
            effects.push(eff);
        }
        endpoints.insert(
            name.clone(),
            EndpointSummary {
                arms,
                effect: effects.first().cloned(),
                effects,
                procova: pro,
            },
        );
    }
    Summary {
        n_rows: t.arm.len(),
        n_patients: patients.len(),
        design: t.meta.design.clone(),
        days: t.meta.days,
        arms: t.meta.arms.clone(),
        endpoint_order: t.meta.endpoints.clone(),
        endpoints,
        prognostic: t.meta.prognostic.clone(),
        plots: Vec::new(),
    }
}

/// Analyse `dir/results.parquet` (or, if only that exists, `dir/results.partial.parquet`,
/// labelled partial): write `dir/summary.json` and `dir/plots/<endpoint>.svg`.
/// Errors: no results file, unreadable file or metadata, unwritable outputs.
pub fn analyze_dir(dir: &Path, opts: AnalyzeOptions) -> Result<(Summary, PathBuf), AnalyzeError> {
    let complete = dir.join(RESULTS_FILE);
    let partial = dir.join(PARTIAL_FILE);
    let path = if complete.exists() {
        complete
    } else if partial.exists() {
        partial
    } else {
        return Err(ferr(
            dir,
            format!("no {RESULTS_FILE} (nor {PARTIAL_FILE}): run `medtwin trial run` first"),
        ));
    };
    let t = read_results(&path)?;
    let mut s = summarize(&t, opts);
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| ferr(&plots, e))?;
    for name in &t.meta.endpoints {
        if let Some(e) = s.endpoints.get(name) {
            let file = plots.join(format!("{name}.svg"));
            plot_endpoint(&file, name, &t.meta.arms, e).map_err(|m| ferr(&file, m))?;
            s.plots.push(format!("plots/{name}.svg"));
        }
    }
    let out = dir.join(SUMMARY_FILE);
    let mut v = serde_json::to_value(&s).map_err(|e| ferr(&out, e))?;
    if t.status != "complete" {
        v["status"] = serde_json::Value::from(format!(
            "partial: {} of {} patients",
            t.completed_patients, t.meta.n_patients
        ));
    }
    let text = serde_json::to_string_pretty(&v).map_err(|e| ferr(&out, e))?;
    std::fs::write(&out, text + "\n").map_err(|e| ferr(&out, e))?;
    Ok((s, out))
}

/// Two panels: per-arm distribution (box = IQR, line = median, whiskers = 5–95 %, dot = mean)
/// and effects against the reference with 95 % CIs (t, bootstrap, PROCOVA).
fn plot_endpoint(
    path: &Path,
    metric: &str,
    arms: &[String],
    e: &EndpointSummary,
) -> Result<(), String> {
    use plotters::prelude::*;
    let er = |x: &dyn std::fmt::Display| x.to_string();
    let root = SVGBackend::new(path, (900, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| er(&x))?;
    let (left, right) = root.split_horizontally(450);
    let stats: Vec<&ArmSummary> = arms.iter().filter_map(|a| e.arms.get(a)).collect();
    let lo = stats
        .iter()
        .map(|s| s.p05.min(s.mean - s.sd))
        .fold(f64::INFINITY, f64::min);
    let hi = stats
        .iter()
        .map(|s| s.p95.max(s.mean + s.sd))
        .fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let pad = 0.05 * (hi - lo);
    let na = arms.len() as f64;
    let labels = arms.to_vec();
    let mut c = ChartBuilder::on(&left)
        .caption(format!("{metric} by arm"), ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5f64..na - 0.5, (lo - pad)..(hi + pad))
        .map_err(|x| er(&x))?;
    c.configure_mesh()
        .x_labels(arms.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .light_line_style(WHITE)
        .draw()
        .map_err(|x| er(&x))?;
    for (i, s) in stats.iter().enumerate() {
        let x = i as f64;
        c.draw_series(std::iter::once(Rectangle::new(
            [(x - 0.25, s.q25), (x + 0.25, s.q75)],
            RGBColor(120, 160, 220).filled(),
        )))
        .map_err(|x| er(&x))?;
        for seg in [
            vec![(x - 0.25, s.median), (x + 0.25, s.median)],
            vec![(x, s.p05), (x, s.q25)],
            vec![(x, s.q75), (x, s.p95)],
        ] {
            c.draw_series(LineSeries::new(seg, BLACK))
                .map_err(|x| er(&x))?;
        }
        c.draw_series(std::iter::once(Circle::new((x, s.mean), 4, RED.filled())))
            .map_err(|x| er(&x))?;
    }
    // effects panel
    let mut rows: Vec<(String, f64, [f64; 2])> = Vec::new();
    for x in &e.effects {
        rows.push((format!("{} ({})", x.arm, x.method), x.estimate, x.ci95));
        if let Some(b) = &x.bootstrap {
            rows.push((format!("{} (bootstrap)", x.arm), x.estimate, b.ci95));
        }
    }
    for p in &e.procova {
        rows.push((
            format!("{} (PROCOVA)", p.arm),
            p.adjusted.estimate,
            p.adjusted.ci95,
        ));
    }
    let lo = rows.iter().map(|r| r.2[0]).fold(0.0f64, f64::min);
    let hi = rows.iter().map(|r| r.2[1]).fold(0.0f64, f64::max);
    let pad = 0.1 * (hi - lo).max(1e-9);
    let nr = rows.len().max(1) as f64;
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut c = ChartBuilder::on(&right)
        .caption(
            format!(
                "effect vs {} (95 % CI)",
                arms.first().map(String::as_str).unwrap_or("-")
            ),
            ("sans-serif", 15),
        )
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(150)
        .build_cartesian_2d((lo - pad)..(hi + pad), -0.5f64..nr - 0.5)
        .map_err(|x| er(&x))?;
    c.configure_mesh()
        .y_labels(rows.len().max(1))
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                names[names.len() - 1 - i as usize].clone()
            } else {
                String::new()
            }
        })
        .light_line_style(WHITE)
        .draw()
        .map_err(|x| er(&x))?;
    c.draw_series(LineSeries::new(
        vec![(0.0, -0.5), (0.0, nr - 0.5)],
        RGBColor(150, 150, 150),
    ))
    .map_err(|x| er(&x))?;
    for (i, (_, est, ci)) in rows.iter().enumerate() {
        let y = nr - 1.0 - i as f64;
        c.draw_series(LineSeries::new(
            vec![(ci[0], y), (ci[1], y)],
            BLUE.stroke_width(2),
        ))
        .map_err(|x| er(&x))?;
        c.draw_series(std::iter::once(Circle::new((*est, y), 4, BLUE.filled())))
            .map_err(|x| er(&x))?;
    }
    root.present().map_err(|x| er(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_r_type7() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.25), 2.0);
        assert!((quantile(&v, 0.9) - 7.6).abs() < 1e-12);
        let s = arm_summary(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.n, s.median, s.q25, s.q75), (4, 2.5, 1.75, 3.25));
    }

    #[test]
    fn bootstrap_ci_brackets_the_paired_t_ci() {
        let d: Vec<f64> = (0..400)
            .map(|i| 1.0 + ((i * 37 % 101) as f64 / 50.0 - 1.0))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut est: Vec<f64> = (0..2000).map(|_| resample_mean(&d, &mut rng)).collect();
        let b = bootstrap_ci(&mut est);
        let e = paired("a", "b", &d, &vec![0.0; d.len()]);
        // percentile and t intervals agree to a few % of their width for n = 400
        let w = e.ci_high - e.ci_low;
        assert!((b.ci95[0] - e.ci_low).abs() < 0.1 * w, "{b:?} vs {e:?}");
        assert!((b.ci95[1] - e.ci_high).abs() < 0.1 * w, "{b:?} vs {e:?}");
        assert!((b.se - e.se).abs() < 0.1 * e.se);
    }
}
