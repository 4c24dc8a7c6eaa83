//! Trial execution: every patient × arm simulated on all cores (rayon), results streamed to
//! `out_dir/results.parquet` chunk by chunk, then analysed into `out_dir/analysis.json`.
//!
//! * **Scenario of an arm**: `days·1440` minutes from midnight, the arm's controller, the trial's
//!   sensor and pump, and simglucose `RandomScenario` meals (announced to the controller) from
//!   the stream `(random_meals_seed, cohort index)` — a new day drawn at each midnight
//!   ([`medtwin_t1d::random_meals`]). CGM noise stream: `env::patient_seed(sensor_seed, index)`.
//!   In a crossover every arm sees the same meals and noise (common random numbers).
//! * **Parallel design**: a balanced allocation list (`index mod arms`) shuffled by
//!   `ChaCha8Rng::seed_from_u64(design seed)`; each patient is simulated in its arm only.
//! * **Digital-twin prognostic score** (parallel only, PROCOVA): each patient is also simulated
//!   under the first (control) arm with *independent* meals and CGM noise (seeds derived from
//!   the trial's by SplitMix64 with a fixed salt) — the twin's prediction of the patient's control
//!   outcome, made without the trial's own data and independent of the allocation.
//! * **Bounded memory**: patients are processed in chunks of [`CHUNK`]; each chunk is simulated
//!   in parallel, its rows are collected in cohort order and written as one Parquet row group.
//!   Only the 14 summary metrics per row are kept for the analysis (≈ 112 B per row).
//! * **Reproducibility**: every random stream depends on the seeds and the cohort index only,
//!   and rows are written in (patient, arm) order, so the output files are byte-identical for
//!   any thread count.
//!
//! Results columns: `patient` (name), `patient_index` (0-based cohort index), `arm`, the 14
//! metrics of [`crate::spec::METRICS`] and, for a parallel design, `twin_<metric>` (the
//! prognostic prediction). On failure no `results.parquet` or `analysis.json` is left behind.

use crate::analysis::{mean_sd, paired, procova, welch, ArmStats, Effect, Procova};
use crate::cohort_io::{read_cohort_parquet, CohortFileError};
use crate::population::{generate_cohort, Acceptance, CohortError, Group};
use crate::spec::{CohortSource, Design, TrialSpec, METRICS};
use arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use medtwin_core::Timeline;
use medtwin_simulate::SolverOptions;
use medtwin_t1d::controller::Controller;
use medtwin_t1d::env::{patient_seed, simulate_patient_with, SummaryAccumulator};
use medtwin_t1d::random_meals::RandomMealSpec;
use medtwin_t1d::scenario::Scenario;
use medtwin_t1d::PatientParams;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Patients per chunk (one Parquet row group per chunk).
pub const CHUNK: usize = 1024;

/// Salt for the twin's independent meal and sensor streams.
const TWIN_SALT: u64 = 0x7477_696e_5f70_726f; // "twin_pro"

/// Errors of a trial run.
#[derive(Debug, Error)]
pub enum TrialError {
    /// Cohort generation failed.
    #[error(transparent)]
    Cohort(#[from] CohortError),
    /// The cohort file could not be read.
    #[error(transparent)]
    CohortFile(#[from] CohortFileError),
    /// The cohort selection is empty or too small.
    #[error("cohort: {0}")]
    Selection(String),
    /// An output file could not be written.
    #[error("{file}: {message}")]
    Output {
        /// The file.
        file: String,
        /// What failed.
        message: String,
    },
    /// A simulation failed.
    #[error("patient '{patient}' (cohort index {index}), arm '{arm}': {message}")]
    Simulation {
        /// Patient name.
        patient: String,
        /// Cohort index.
        index: usize,
        /// Arm name (or `twin:<arm>` for the prognostic simulation).
        arm: String,
        /// Solver message.
        message: String,
    },
}

/// Analysis of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointAnalysis {
    /// Metric name.
    pub metric: String,
    /// Per-arm mean and SD, in arm order.
    pub arms: Vec<ArmStats>,
    /// Effects of arms 2… against the first arm (paired-t or Welch-t).
    pub effects: Vec<Effect>,
    /// PROCOVA of arms 2… against the first (parallel designs; empty otherwise or if singular).
    pub procova: Vec<Procova>,
}

/// The analysis written to `analysis.json` (deterministic: no timings).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// `crossover` or `parallel`.
    pub design: String,
    /// Patients in the cohort.
    pub n_patients: usize,
    /// Simulated days per patient and arm.
    pub days: u64,
    /// Arm names, the first being the reference.
    pub arms: Vec<String>,
    /// One entry per endpoint, in specification order.
    pub endpoints: Vec<EndpointAnalysis>,
}

/// What [`run_trial`] returns; `Display` prints the per-arm table, effects and PROCOVA.
#[derive(Debug, Clone)]
pub struct TrialSummary {
    /// The analysis (also in `analysis.json`).
    pub analysis: Analysis,
    /// Acceptance statistics if the cohort was generated.
    pub acceptance: Option<Vec<(Group, Acceptance)>>,
    /// Simulations run (patient × arm, plus twin predictions).
    pub simulations: u64,
    /// Simulated patient-days (simulations × days).
    pub patient_days: u64,
    /// Wall-clock time of the simulation phase, s.
    pub wall_s: f64,
    /// Throughput, simulated patient-days per wall-clock second.
    pub patient_days_per_s: f64,
    /// Path of the results file.
    pub results_path: PathBuf,
    /// Path of the analysis file.
    pub analysis_path: PathBuf,
}

impl fmt::Display for TrialSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.analysis;
        writeln!(
            f,
            "{} trial: {} patients × {} arms ({}), {} day(s)",
            a.design,
            a.n_patients,
            a.arms.len(),
            a.arms.join(", "),
            a.days
        )?;
        if let Some(acc) = &self.acceptance {
            for (g, x) in acc {
                writeln!(
                    f,
                    "cohort {g}: acceptance {}/{} = {:.1} %",
                    x.accepted,
                    x.drawn,
                    100.0 * x.rate()
                )?;
            }
        }
        writeln!(
            f,
            "{} simulations, {} patient-days in {:.2} s = {:.0} patient-days/s",
            self.simulations, self.patient_days, self.wall_s, self.patient_days_per_s
        )?;
        for e in &a.endpoints {
            writeln!(f, "\n{}", e.metric)?;
            for s in &e.arms {
                writeln!(
                    f,
                    "  {:<16} n={:<7} mean {:>10.4}  sd {:>10.4}",
                    s.arm, s.n, s.mean, s.sd
                )?;
            }
            for x in &e.effects {
                writeln!(
                    f,
                    "  {} − {} ({}): {:.4} [95 % CI {:.4}, {:.4}], SE {:.4}",
                    x.arm, x.reference, x.method, x.estimate, x.ci_low, x.ci_high, x.se
                )?;
            }
            for p in &e.procova {
                writeln!(
                    f,
                    "  PROCOVA {} − {}: {:.4} [95 % CI {:.4}, {:.4}], SE {:.4} vs unadjusted {:.4} (SE {:.4}); variance reduction {:.1} %, sample size −{:.1} %, r(twin, control outcome) = {:.3}",
                    p.adjusted.arm,
                    p.adjusted.reference,
                    p.adjusted.estimate,
                    p.adjusted.ci_low,
                    p.adjusted.ci_high,
                    p.adjusted.se,
                    p.unadjusted.estimate,
                    p.unadjusted.se,
                    100.0 * p.variance_reduction,
                    100.0 * (1.0 - p.sample_size_fraction),
                    p.prognostic_correlation_reference
                )?;
            }
        }
        writeln!(
            f,
            "\nresults: {}\nanalysis: {}",
            self.results_path.display(),
            self.analysis_path.display()
        )
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A loaded cohort: patients in cohort order, and the acceptance statistics per group if it
/// was generated.
pub type LoadedCohort = (Vec<PatientParams>, Option<Vec<(Group, Acceptance)>>);

/// Load the cohort of `source`: generated, or read and filtered.
/// Errors: generation / file errors, or a selection that leaves too few patients.
pub fn load_cohort(source: &CohortSource) -> Result<LoadedCohort, TrialError> {
    match source {
        CohortSource::Generate { group, n, seed } => {
            let c = generate_cohort(crate::population::SOURCE_SIMGLUCOSE_30, *group, *n, *seed)?;
            Ok((c.patients, Some(c.acceptance)))
        }
        CohortSource::File { path, group, n } => {
            let mut v = read_cohort_parquet(path)?;
            if let Some(g) = group.filter(|g| *g != Group::All) {
                v.retain(|p| p.group() == g.name());
            }
            if v.is_empty() {
                return Err(TrialError::Selection(format!(
                    "{}: no patient of group {}",
                    path.display(),
                    group.map(|g| g.name()).unwrap_or("all")
                )));
            }
            if let Some(n) = n {
                if *n > v.len() {
                    return Err(TrialError::Selection(format!(
                        "{}: n = {n} but only {} patients selected",
                        path.display(),
                        v.len()
                    )));
                }
                v.truncate(*n);
            }
            Ok((v, None))
        }
    }
}

fn scenario_for(spec: &TrialSpec, arm: usize, meal_seed: u64, sensor_seed: u64) -> Scenario {
    let duration_min = spec.days * medtwin_t1d::random_meals::DAY_MIN;
    Scenario {
        patients: Vec::new(),
        start: None,
        duration_min,
        controller: spec.arms[arm].controller.clone(),
        sensor: spec.sensor,
        sensor_noise: spec.sensor_noise,
        sensor_seed,
        pump: spec.pump,
        timeline: Timeline::new(duration_min as f64),
        random_meals: Some(RandomMealSpec { seed: meal_seed }),
    }
}

type Row = [f64; 14];

fn simulate_one(p: &PatientParams, sc: &Scenario, index: usize) -> Result<Row, String> {
    let mut controller = Controller::new(&sc.controller, p);
    let mut acc = SummaryAccumulator::default();
    simulate_patient_with(
        p,
        sc,
        index,
        patient_seed(sc.sensor_seed, index),
        SolverOptions::default(),
        &mut controller,
        |r| acc.push(r),
    )
    .map_err(|e| e.to_string())?;
    let s = acc.finish().ok_or("no CGM sample")?;
    Ok(METRICS.map(|(_, f)| f(&s)))
}

/// Per-patient outcome: `(arm, metrics)` for each arm simulated, and the twin prediction.
struct Outcome {
    rows: Vec<(usize, Row)>,
    twin: Option<Row>,
}

fn results_schema(parallel: bool) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("patient", DataType::Utf8, false),
        Field::new("patient_index", DataType::UInt64, false),
        Field::new("arm", DataType::Utf8, false),
    ];
    fields.extend(
        METRICS
            .iter()
            .map(|(n, _)| Field::new(*n, DataType::Float64, false)),
    );
    if parallel {
        fields.extend(
            METRICS
                .iter()
                .map(|(n, _)| Field::new(format!("twin_{n}"), DataType::Float64, false)),
        );
    }
    Arc::new(Schema::new(fields))
}

/// Run the trial `spec`, writing `out_dir/results.parquet` and `out_dir/analysis.json`
/// (`out_dir` is created). `progress` is called after each chunk with the number of patients
/// completed so far. Uses the current rayon pool (all cores by default); output is identical
/// for any number of threads.
/// Errors: cohort, simulation and output errors ([`TrialError`]). Both files are written under
/// `.partial` names and renamed at the end, so a failed run leaves no partial output (and any
/// earlier results in `out_dir` untouched).
pub fn run_trial(
    spec: &TrialSpec,
    out_dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<TrialSummary, TrialError> {
    let (cohort, acceptance) = load_cohort(&spec.cohort)?;
    let out = |file: &Path, e: &dyn fmt::Display| TrialError::Output {
        file: file.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| out(out_dir, &e))?;
    let results_path = out_dir.join("results.parquet");
    let analysis_path = out_dir.join("analysis.json");
    let partial = out_dir.join("results.parquet.partial");
    let analysis_partial = out_dir.join("analysis.json.partial");
    let cleanup = || {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&analysis_partial);
    };
    let (analysis, simulations, wall_s) =
        match run_inner(spec, &cohort, &partial, &analysis_partial, progress) {
            Ok(x) => x,
            Err(e) => {
                cleanup();
                return Err(e);
            }
        };
    std::fs::rename(&partial, &results_path)
        .and_then(|_| std::fs::rename(&analysis_partial, &analysis_path))
        .map_err(|e| {
            cleanup();
            out(&results_path, &e)
        })?;
    let patient_days = simulations * spec.days;
    Ok(TrialSummary {
        analysis,
        acceptance,
        simulations,
        patient_days,
        wall_s,
        patient_days_per_s: patient_days as f64 / wall_s.max(1e-9),
        results_path,
        analysis_path,
    })
}

fn run_inner(
    spec: &TrialSpec,
    cohort: &[PatientParams],
    partial: &Path,
    analysis_path: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Analysis, u64, f64), TrialError> {
    let n = cohort.len();
    let k = spec.arms.len();
    let parallel = matches!(spec.design, Design::Parallel { .. });
    let out = |file: &Path, e: &dyn fmt::Display| TrialError::Output {
        file: file.display().to_string(),
        message: e.to_string(),
    };
    let scenarios: Vec<Scenario> = (0..k)
        .map(|a| scenario_for(spec, a, spec.random_meals_seed, spec.sensor_seed))
        .collect();
    let twin_scenario = scenario_for(
        spec,
        0,
        splitmix(spec.random_meals_seed ^ TWIN_SALT),
        splitmix(spec.sensor_seed ^ TWIN_SALT),
    );
    let allocation: Option<Vec<usize>> = match spec.design {
        Design::Crossover => None,
        Design::Parallel { seed } => {
            let mut v: Vec<usize> = (0..n).map(|i| i % k).collect();
            v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            Some(v)
        }
    };
    let schema = results_schema(parallel);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(CHUNK * k.max(1) + 1))
        .build();
    let file = File::create(partial).map_err(|e| out(partial, &e))?;
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| out(partial, &e))?;
    // analysis data: per arm, the metric rows and (parallel) the twin rows of its patients
    let mut by_arm: Vec<Vec<Row>> = vec![Vec::new(); k];
    let mut twin_by_arm: Vec<Vec<Row>> = vec![Vec::new(); k];
    let mut simulations = 0u64;
    let t0 = Instant::now();
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let outcomes: Vec<Result<Outcome, TrialError>> = (start..end)
            .into_par_iter()
            .map(|i| {
                let p = &cohort[i];
                let fail = |arm: String, message: String| TrialError::Simulation {
                    patient: p.name.clone(),
                    index: i,
                    arm,
                    message,
                };
                let arms: Vec<usize> = match &allocation {
                    None => (0..k).collect(),
                    Some(v) => vec![v[i]],
                };
                let mut rows = Vec::with_capacity(arms.len());
                for a in arms {
                    let r = simulate_one(p, &scenarios[a], i)
                        .map_err(|m| fail(spec.arms[a].name.clone(), m))?;
                    rows.push((a, r));
                }
                let twin = if parallel {
                    Some(
                        simulate_one(p, &twin_scenario, i)
                            .map_err(|m| fail(format!("twin:{}", spec.arms[0].name), m))?,
                    )
                } else {
                    None
                };
                Ok(Outcome { rows, twin })
            })
            .collect();
        let mut names: Vec<&str> = Vec::new();
        let mut idx: Vec<u64> = Vec::new();
        let mut arm_names: Vec<&str> = Vec::new();
        let mut cols: Vec<Vec<f64>> = vec![Vec::new(); if parallel { 28 } else { 14 }];
        for (off, o) in outcomes.into_iter().enumerate() {
            let o = o?;
            let i = start + off;
            for (a, r) in &o.rows {
                simulations += 1;
                names.push(&cohort[i].name);
                idx.push(i as u64);
                arm_names.push(&spec.arms[*a].name);
                for (c, v) in r.iter().enumerate() {
                    cols[c].push(*v);
                }
                by_arm[*a].push(*r);
                if let Some(t) = &o.twin {
                    for (c, v) in t.iter().enumerate() {
                        cols[14 + c].push(*v);
                    }
                    twin_by_arm[*a].push(*t);
                }
            }
            if o.twin.is_some() {
                simulations += 1;
            }
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(UInt64Array::from(idx)),
            Arc::new(StringArray::from(arm_names)),
        ];
        arrays.extend(
            cols.into_iter()
                .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef),
        );
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| out(partial, &e))?;
        writer.write(&batch).map_err(|e| out(partial, &e))?;
        writer.flush().map_err(|e| out(partial, &e))?;
        progress(end as u64);
    }
    writer.close().map_err(|e| out(partial, &e))?;
    let wall_s = t0.elapsed().as_secs_f64();
    let analysis = analyse(spec, n, &by_arm, &twin_by_arm);
    let json = serde_json::to_string_pretty(&analysis).map_err(|e| out(analysis_path, &e))?;
    std::fs::write(analysis_path, json + "\n").map_err(|e| out(analysis_path, &e))?;
    Ok((analysis, simulations, wall_s))
}

fn analyse(spec: &TrialSpec, n: usize, by_arm: &[Vec<Row>], twin_by_arm: &[Vec<Row>]) -> Analysis {
    let parallel = matches!(spec.design, Design::Parallel { .. });
    let names: Vec<String> = spec.arms.iter().map(|a| a.name.clone()).collect();
    let col = |rows: &[Row], m: usize| rows.iter().map(|r| r[m]).collect::<Vec<f64>>();
    let endpoints = spec
        .endpoints
        .iter()
        .map(|&m| {
            let arms = by_arm
                .iter()
                .zip(&names)
                .map(|(rows, name)| {
                    let (mean, sd) = mean_sd(&col(rows, m));
                    ArmStats {
                        arm: name.clone(),
                        n: rows.len(),
                        mean,
                        sd,
                    }
                })
                .collect();
            let y0 = col(&by_arm[0], m);
            let mut effects = Vec::new();
            let mut pro = Vec::new();
            for a in 1..by_arm.len() {
                let y = col(&by_arm[a], m);
                if parallel {
                    effects.push(welch(&names[a], &names[0], &y, &y0));
                    let m1 = col(&twin_by_arm[a], m);
                    let m0 = col(&twin_by_arm[0], m);
                    if let Some(p) = procova(&names[a], &names[0], &y, &m1, &y0, &m0) {
                        pro.push(p);
                    }
                } else {
                    effects.push(paired(&names[a], &names[0], &y, &y0));
                }
            }
            EndpointAnalysis {
                metric: METRICS[m].0.to_string(),
                arms,
                effects,
                procova: pro,
            }
        })
        .collect();
    Analysis {
        design: if parallel { "parallel" } else { "crossover" }.into(),
        n_patients: n,
        days: spec.days,
        arms: names,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn spec(design: &str, n: usize) -> TrialSpec {
        let t = format!(
            r#"
[cohort]
from = "simglucose-30"
group = "all"
n = {n}
seed = 7
[scenario]
days = 1
random_meals_seed = 11
sensor = {{ kind = "dexcom", noise = true }}
pump = "insulet"
[design]
kind = "{design}"
[[arm]]
name = "bb"
controller = {{ kind = "basal-bolus", target_mg_dl = 140 }}
[[arm]]
name = "pid"
controller = {{ kind = "pid" }}
[[endpoint]]
metric = "tir_pct"
[[endpoint]]
metric = "mean_mg_dl"
"#
        );
        TrialSpec::from_toml_str(&t, "t.toml", Path::new(".")).unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("medtwin-trial-{}-{name}", std::process::id()))
    }

    #[test]
    fn byte_identical_for_one_and_two_threads() {
        let s = spec("parallel", 24);
        let run = |threads: usize, dir: &Path| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| run_trial(&s, dir, &|_| {})).unwrap()
        };
        let (d1, d2) = (tmp("t1"), tmp("t2"));
        let s1 = run(1, &d1);
        run(2, &d2);
        for f in ["results.parquet", "analysis.json"] {
            let a = std::fs::read(d1.join(f)).unwrap();
            let b = std::fs::read(d2.join(f)).unwrap();
            assert!(a == b, "{f} differs between 1 and 2 threads");
        }
        assert_eq!(s1.analysis.endpoints.len(), 2);
        assert_eq!(
            s1.analysis.endpoints[0].arms[0].n + s1.analysis.endpoints[0].arms[1].n,
            24
        );
        assert_eq!(s1.simulations, 48);
        let mean = &s1.analysis.endpoints[1];
        assert_eq!(mean.metric, "mean_mg_dl");
        assert_eq!(mean.procova.len(), 1);
        assert_eq!(mean.effects[0].method, "welch-t");
        assert!(!s1.to_string().is_empty());
        std::fs::remove_dir_all(&d1).unwrap();
        std::fs::remove_dir_all(&d2).unwrap();
    }

    #[test]
    fn crossover_results_file_has_every_patient_and_arm() {
        let s = spec("crossover", 6);
        let d = tmp("x");
        let seen = AtomicU64::new(0);
        let sum = run_trial(&s, &d, &|k| seen.store(k, Ordering::SeqCst)).unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 6);
        assert_eq!(sum.simulations, 12);
        let e = &sum.analysis.endpoints[0];
        assert_eq!(e.effects[0].method, "paired-t");
        // the rows read back: 12, patient-major, arm order
        let f = File::open(d.join("results.parquet")).unwrap();
        let rdr = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        let mut arms = Vec::new();
        let mut carbs = Vec::new();
        for b in rdr {
            let b = b.unwrap();
            let c = b
                .column_by_name("total_carbs_g")
                .unwrap()
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .clone();
            carbs.extend(c.iter().map(|x| x.unwrap()));
            let a = b
                .column_by_name("arm")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            arms.extend(a.iter().map(|x| x.unwrap().to_string()));
        }
        assert_eq!(arms.len(), 12);
        assert_eq!(&arms[..4], &["bb", "pid", "bb", "pid"]);
        // same meals in both arms (common random numbers): equal carbohydrate per patient;
        // different patients get different meal streams
        for pair in carbs.chunks(2) {
            assert_eq!(pair[0], pair[1]);
        }
        assert!(carbs.chunks(2).any(|p| p[0] != carbs[0]), "{carbs:?}");
        assert!(d.join("analysis.json").exists());
        assert!(!d.join("results.parquet.partial").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_cohort_file_is_reported_and_leaves_nothing() {
        let mut s = spec("crossover", 3);
        s.cohort = CohortSource::File {
            path: PathBuf::from("/nonexistent/c.parquet"),
            group: None,
            n: None,
        };
        let d = tmp("missing");
        let e = run_trial(&s, &d, &|_| {}).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/c.parquet"), "{e}");
        assert!(!d.join("results.parquet").exists());
    }
}
