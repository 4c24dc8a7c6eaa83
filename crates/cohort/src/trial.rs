//! Trial execution: every patient × arm simulated on all cores (rayon), results streamed to
//! `out_dir/results.parquet` chunk by chunk, then analysed into `out_dir/summary.json` and
//! `out_dir/plots/` ([`crate::summary`]).
//!
//! * **Scenario of an arm**: `days·1440` minutes from midnight, the arm's controller, the trial's
//!   sensor and pump, and simglucose `RandomScenario` meals (announced to the controller) from
//!   the stream `(random_meals_seed, cohort index)` — a new day drawn at each midnight
//!   ([`medtwin_t1d::random_meals`]). CGM noise stream: `env::patient_seed(sensor_seed, index)`.
//!   In a crossover every arm sees the same meals and noise (common random numbers).
//! * **Parallel design**: a balanced allocation list (`index mod arms`) shuffled by
//!   `ChaCha8Rng::seed_from_u64(design seed)`; each patient is simulated in its arm only.
//! * **Prognostic score** (parallel only, PROCOVA): from each patient's baseline CGM run-in
//!   through a model trained on a historical control population ([`crate::prognostic`]).
//! * **Bounded memory**: patients are processed in chunks of `chunk_patients`; each chunk is
//!   simulated in parallel, its rows are collected in cohort order and written as one Parquet
//!   row group, then dropped.
//! * **Reproducibility**: every random stream depends on the seeds and the cohort index only,
//!   and rows are written in (patient, arm) order, so the output files are byte-identical for
//!   any thread count, and for an interrupted run completed with `resume`.
//! * **Interruption**: when `cancel` is raised (Ctrl-C) the chunk in flight is abandoned, the
//!   rows of the finished chunks are closed into a valid Parquet file `results.partial.parquet`
//!   marked `medtwin.status = partial` with `medtwin.completed_patients`, and
//!   [`TrialError::Interrupted`] is returned. A run with `resume` checks that the specification
//!   is unchanged, copies those rows and continues with the next patient.
//!
//! Results columns: `patient` (name), `patient_index` (0-based cohort index), `arm`, the 14
//! metrics of [`crate::spec::METRICS`] and, for a parallel design, `prognostic_<metric>` (the
//! baseline-only prediction of the control outcome). Key–value metadata: see
//! [`crate::summary::TrialMeta`].

use crate::cohort_io::{read_cohort_parquet, CohortFileError};
use crate::population::{generate_cohort, Acceptance, CohortError, Group};
use crate::prognostic::{
    arm_scenario, fit_prognostic_model, simulate_row, trial_features, PrognosticModel, Row,
};
use crate::spec::{CohortSource, Design, TrialSpec, METRICS};
use crate::summary::{
    analyze_dir, read_results, AnalyzeError, AnalyzeOptions, PrognosticInfo, Summary, TrialMeta,
    COMPLETED_KEY, META_KEY, PARTIAL_FILE, RESULTS_FILE, STATUS_KEY,
};
use arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use medtwin_t1d::scenario::Scenario;
use medtwin_t1d::PatientParams;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// File the writer streams into while a run is in progress (renamed at the end).
const WRITING_FILE: &str = "results.writing.parquet";

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
        /// Arm name (or `run-in` for the baseline simulation).
        arm: String,
        /// Solver message.
        message: String,
    },
    /// The prognostic model could not be built.
    #[error("prognostic score: {0}")]
    Prognostic(String),
    /// Resuming is impossible (no partial file, another specification, already complete).
    #[error("resume: {0}")]
    Resume(String),
    /// The run was interrupted; the finished patients are in `partial`.
    #[error("interrupted after {completed} of {total} patients; partial results in {} (complete them with `trial run --resume`)", partial.display())]
    Interrupted {
        /// The partial results file.
        partial: PathBuf,
        /// Patients completed.
        completed: usize,
        /// Patients in the cohort.
        total: usize,
    },
    /// The finished results could not be analysed.
    #[error(transparent)]
    Analyze(#[from] AnalyzeError),
}

/// How [`run_trial`] is driven.
pub struct RunControl<'a> {
    /// Called with the number of patients finished so far (from any thread).
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// Raised (e.g. by a Ctrl-C handler) to stop after the patients in flight.
    pub cancel: Option<&'a AtomicBool>,
    /// Continue `out_dir/results.partial.parquet` instead of starting afresh.
    pub resume: bool,
}

/// What [`run_trial`] returns; `Display` prints the per-arm table, effects and PROCOVA.
#[derive(Debug, Clone)]
pub struct TrialSummary {
    /// The analysis (also in `summary.json`).
    pub summary: Summary,
    /// Acceptance statistics if the cohort was generated.
    pub acceptance: Option<Vec<(Group, Acceptance)>>,
    /// Simulations run in this invocation (patient × arm, run-ins and historical controls).
    pub simulations: u64,
    /// Simulated patient-days in this invocation.
    pub patient_days: u64,
    /// Wall-clock time of the simulation phase, s.
    pub wall_s: f64,
    /// Throughput, simulated patient-days per wall-clock second.
    pub patient_days_per_s: f64,
    /// Patients taken over from a partial file (resume).
    pub resumed_patients: usize,
    /// Path of the results file.
    pub results_path: PathBuf,
    /// Path of `summary.json`.
    pub summary_path: PathBuf,
}

/// Print a summary as a table (shared by `trial run` and `trial analyze`).
pub fn format_summary(s: &Summary, f: &mut impl fmt::Write) -> fmt::Result {
    writeln!(
        f,
        "{} trial: {} patients, {} rows, arms {}, {} day(s)",
        s.design,
        s.n_patients,
        s.n_rows,
        s.arms.join(", "),
        s.days
    )?;
    if let Some(p) = &s.prognostic {
        writeln!(
            f,
            "prognostic score: {}-day CGM run-in → linear model trained on {} historical controls",
            p.run_in_days, p.historical_n
        )?;
    }
    for name in &s.endpoint_order {
        let Some(e) = s.endpoints.get(name) else {
            continue;
        };
        writeln!(f, "\n{name}")?;
        for a in &s.arms {
            if let Some(x) = e.arms.get(a) {
                writeln!(
                    f,
                    "  {a:<16} n={:<7} mean {:>9.3}  sd {:>9.3}  median {:>9.3}  IQR [{:.3}, {:.3}]",
                    x.n, x.mean, x.sd, x.median, x.q25, x.q75
                )?;
            }
        }
        for x in &e.effects {
            write!(
                f,
                "  {} − {} ({}): {:.4} [95 % CI {:.4}, {:.4}], SE {:.4}",
                x.arm, x.reference, x.method, x.estimate, x.ci95[0], x.ci95[1], x.se
            )?;
            if let Some(b) = &x.bootstrap {
                write!(
                    f,
                    "; bootstrap ({}) [{:.4}, {:.4}]",
                    b.n_resamples, b.ci95[0], b.ci95[1]
                )?;
            }
            writeln!(f)?;
        }
        for p in &e.procova {
            writeln!(
                f,
                "  PROCOVA {} − {}: {:.4} [95 % CI {:.4}, {:.4}], SE {:.4} vs unadjusted SE {:.4}; variance reduction {:.1} % (sample size −{:.1} %), r(score, control outcome) = {:.3}",
                p.arm,
                p.adjusted.reference,
                p.adjusted.estimate,
                p.adjusted.ci95[0],
                p.adjusted.ci95[1],
                p.adjusted.se,
                p.unadjusted.se,
                100.0 * p.variance_reduction,
                p.sample_size_reduction_pct,
                p.prognostic_correlation_reference
            )?;
        }
    }
    Ok(())
}

impl fmt::Display for TrialSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        if self.resumed_patients > 0 {
            writeln!(
                f,
                "resumed: {} patients taken from the partial file",
                self.resumed_patients
            )?;
        }
        writeln!(
            f,
            "{} simulations, {} patient-days in {:.2} s = {:.0} patient-days/s",
            self.simulations, self.patient_days, self.wall_s, self.patient_days_per_s
        )?;
        format_summary(&self.summary, f)?;
        writeln!(
            f,
            "\nresults: {}\nsummary: {}",
            self.results_path.display(),
            self.summary_path.display()
        )
    }
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
                .map(|(n, _)| Field::new(format!("prognostic_{n}"), DataType::Float64, false)),
        );
    }
    Arc::new(Schema::new(fields))
}

/// Per-patient outcome: `(arm, metrics)` for each arm simulated, and the prognostic score.
struct Outcome {
    rows: Vec<(usize, Row)>,
    score: Option<Row>,
}

fn out_err(file: &Path, e: &dyn fmt::Display) -> TrialError {
    TrialError::Output {
        file: file.display().to_string(),
        message: e.to_string(),
    }
}

/// Run the trial `spec`, writing `out_dir/results.parquet`, `out_dir/summary.json` and
/// `out_dir/plots/` (`out_dir` is created). Uses the current rayon pool (all cores by default);
/// output is identical for any number of threads.
///
/// Errors ([`TrialError`]): cohort, prognostic-model, simulation and output errors — the
/// in-progress file is then removed, and earlier results in `out_dir` stay untouched;
/// [`TrialError::Interrupted`] when `control.cancel` was raised (finished patients kept in
/// `results.partial.parquet`); [`TrialError::Resume`] when `control.resume` finds no partial
/// file or one from another specification, or when a partial file exists and `resume` is off
/// (never overwritten silently).
pub fn run_trial(
    spec: &TrialSpec,
    out_dir: &Path,
    control: &RunControl<'_>,
) -> Result<TrialSummary, TrialError> {
    let (cohort, acceptance) = load_cohort(&spec.cohort)?;
    std::fs::create_dir_all(out_dir).map_err(|e| out_err(out_dir, &e))?;
    let results_path = out_dir.join(RESULTS_FILE);
    let partial_path = out_dir.join(PARTIAL_FILE);
    let writing = out_dir.join(WRITING_FILE);
    let fingerprint = format!("{spec:?}");
    // what a previous interrupted run left
    let previous = if control.resume {
        if !partial_path.exists() {
            return Err(TrialError::Resume(format!(
                "{} does not exist: nothing to resume",
                partial_path.display()
            )));
        }
        let t = read_results(&partial_path)?;
        if t.meta.spec_fingerprint != fingerprint {
            return Err(TrialError::Resume(format!(
                "{} was written for another trial specification; remove it or run the original specification",
                partial_path.display()
            )));
        }
        if t.status != "partial" {
            return Err(TrialError::Resume(format!(
                "{} is not marked partial",
                partial_path.display()
            )));
        }
        Some(t)
    } else {
        if partial_path.exists() {
            return Err(TrialError::Resume(format!(
                "{} holds an interrupted run: complete it with --resume, or remove it to start afresh",
                partial_path.display()
            )));
        }
        None
    };
    let t0 = Instant::now();
    let r = run_inner(spec, &cohort, &writing, &fingerprint, previous, control);
    let wall_s = t0.elapsed().as_secs_f64();
    match r {
        Ok((simulations, patient_days, resumed_patients)) => {
            std::fs::rename(&writing, &results_path).map_err(|e| {
                let _ = std::fs::remove_file(&writing);
                out_err(&results_path, &e)
            })?;
            if resumed_patients > 0 || partial_path.exists() {
                let _ = std::fs::remove_file(&partial_path);
            }
            let (summary, summary_path) = analyze_dir(out_dir, AnalyzeOptions::default())?;
            Ok(TrialSummary {
                summary,
                acceptance,
                simulations,
                patient_days,
                wall_s,
                patient_days_per_s: patient_days as f64 / wall_s.max(1e-9),
                resumed_patients,
                results_path,
                summary_path,
            })
        }
        Err(TrialError::Interrupted {
            completed, total, ..
        }) => {
            std::fs::rename(&writing, &partial_path).map_err(|e| out_err(&partial_path, &e))?;
            Err(TrialError::Interrupted {
                partial: partial_path,
                completed,
                total,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&writing);
            Err(e)
        }
    }
}

/// What every patient's simulation needs, shared by [`run_trial`] and [`TrialPlan`].
struct Setup {
    k: usize,
    parallel: bool,
    scenarios: Vec<Scenario>,
    allocation: Option<Vec<usize>>,
    model: Option<PrognosticModel>,
    /// Simulations and patient-days spent fitting the prognostic model.
    model_cost: (u64, u64),
    meta: TrialMeta,
    meta_json: String,
}

fn setup(spec: &TrialSpec, n: usize, fingerprint: &str, file: &Path) -> Result<Setup, TrialError> {
    let k = spec.arms.len();
    let parallel = matches!(spec.design, Design::Parallel { .. });
    let scenarios: Vec<Scenario> = (0..k)
        .map(|a| {
            arm_scenario(
                spec,
                a,
                spec.days,
                spec.random_meals_seed,
                spec.sensor_seed,
                spec.sensor_noise,
            )
        })
        .collect();
    let allocation: Option<Vec<usize>> = match spec.design {
        Design::Crossover => None,
        Design::Parallel { seed } => {
            let mut v: Vec<usize> = (0..n).map(|i| i % k).collect();
            v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            Some(v)
        }
    };
    let mut model_cost = (0u64, 0u64);
    // the prognostic model (deterministic; refitted on resume)
    let model: Option<PrognosticModel> = if parallel {
        let m = fit_prognostic_model(spec).map_err(TrialError::Prognostic)?;
        let per = spec.prognostic.run_in_days + spec.days;
        model_cost = (2 * m.n_train as u64, per * m.n_train as u64);
        Some(m)
    } else {
        None
    };
    let meta = TrialMeta {
        design: if parallel { "parallel" } else { "crossover" }.into(),
        days: spec.days,
        n_patients: n,
        arms: spec.arms.iter().map(|a| a.name.clone()).collect(),
        endpoints: spec
            .endpoints
            .iter()
            .map(|&m| METRICS[m].0.to_string())
            .collect(),
        chunk_patients: spec.chunk_patients,
        spec_fingerprint: fingerprint.to_string(),
        prognostic: model.as_ref().map(|m| PrognosticInfo {
            run_in_days: spec.prognostic.run_in_days,
            historical_n: m.n_train,
            train_r2: METRICS
                .iter()
                .zip(&m.train_r2)
                .map(|((n, _), r)| (n.to_string(), *r))
                .collect(),
        }),
    };
    let meta_json = serde_json::to_string(&meta).map_err(|e| out_err(file, &e))?;
    Ok(Setup {
        k,
        parallel,
        scenarios,
        allocation,
        model,
        model_cost,
        meta,
        meta_json,
    })
}

/// Simulate patient `i` (cohort index) in its arm(s), with its prognostic score.
fn simulate_patient(
    spec: &TrialSpec,
    s: &Setup,
    p: &PatientParams,
    i: usize,
) -> Result<Outcome, TrialError> {
    let fail = |arm: String, message: String| TrialError::Simulation {
        patient: p.name.clone(),
        index: i,
        arm,
        message,
    };
    let arms: Vec<usize> = match &s.allocation {
        None => (0..s.k).collect(),
        Some(v) => vec![v[i]],
    };
    let mut rows = Vec::with_capacity(arms.len());
    for &a in &arms {
        let (r, _) =
            simulate_row(p, &s.scenarios[a], i).map_err(|m| fail(spec.arms[a].name.clone(), m))?;
        rows.push((a, r));
    }
    let score = match &s.model {
        Some(m) => {
            Some(m.predict(&trial_features(spec, p, i).map_err(|e| fail("run-in".into(), e))?))
        }
        None => None,
    };
    Ok(Outcome { rows, score })
}

/// Rows of the outcomes of patients `start..`, in (patient, arm) order; adds their
/// simulations and patient-days to `cost`.
fn outcome_rows<'a>(
    spec: &TrialSpec,
    cohort: &'a [PatientParams],
    start: usize,
    outcomes: impl IntoIterator<Item = Result<Outcome, TrialError>>,
    cost: &mut (u64, u64),
) -> Result<Vec<RowOut<'a>>, TrialError> {
    let mut rows = Vec::new();
    for (off, o) in outcomes.into_iter().enumerate() {
        let o = o?;
        let i = start + off;
        cost.0 += o.rows.len() as u64;
        cost.1 += o.rows.len() as u64 * spec.days;
        if o.score.is_some() {
            cost.0 += 1;
            cost.1 += spec.prognostic.run_in_days;
        }
        for (a, r) in o.rows {
            rows.push((cohort[i].name.as_str(), i, a, r, o.score));
        }
    }
    Ok(rows)
}

/// Writer properties of a results file: one row group per chunk, the trial metadata.
fn results_props(spec: &TrialSpec, k: usize, meta_json: &str) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(spec.chunk_patients * k.max(1) + 1))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            META_KEY.into(),
            meta_json.to_string(),
        )]))
        .build()
}

/// Close a results file with its status and number of completed patients.
fn finish_results<W: std::io::Write + Send>(
    mut writer: ArrowWriter<W>,
    status: &str,
    completed: usize,
    file: &Path,
) -> Result<W, TrialError> {
    writer.append_key_value_metadata(KeyValue::new(STATUS_KEY.into(), status.to_string()));
    writer.append_key_value_metadata(KeyValue::new(COMPLETED_KEY.into(), completed.to_string()));
    writer.into_inner().map_err(|e| out_err(file, &e))
}

/// Simulates and streams; returns (simulations, patient-days, resumed patients).
fn run_inner(
    spec: &TrialSpec,
    cohort: &[PatientParams],
    writing: &Path,
    fingerprint: &str,
    previous: Option<crate::summary::ResultsTable>,
    control: &RunControl<'_>,
) -> Result<(u64, u64, usize), TrialError> {
    let n = cohort.len();
    let cancelled = || control.cancel.is_some_and(|c| c.load(Ordering::SeqCst));
    let setup = setup(spec, n, fingerprint, writing)?;
    let (k, parallel, meta) = (setup.k, setup.parallel, &setup.meta);
    let mut cost = setup.model_cost;
    let schema = results_schema(parallel);
    let props = results_props(spec, k, &setup.meta_json);
    let file = File::create(writing).map_err(|e| out_err(writing, &e))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(|e| out_err(writing, &e))?;
    let finish = |writer: ArrowWriter<File>, status: &str, completed: usize| {
        finish_results(writer, status, completed, writing).map(|_| ())
    };
    // rows of the previous partial run, copied row group by row group
    let mut start = 0usize;
    if let Some(prev) = &previous {
        let mut row = 0usize;
        for &len in &prev.row_groups {
            let batch = build_batch(
                &schema,
                parallel,
                table_rows(prev, cohort, row..row + len),
                &meta.arms,
            )
            .map_err(|e| out_err(writing, &e))?;
            writer.write(&batch).map_err(|e| out_err(writing, &e))?;
            writer.flush().map_err(|e| out_err(writing, &e))?;
            row += len;
        }
        start = prev.completed_patients;
        (control.progress)(start as u64);
    }
    let done = AtomicU64::new(start as u64);
    while start < n {
        let end = (start + spec.chunk_patients).min(n);
        let outcomes: Vec<Option<Result<Outcome, TrialError>>> = (start..end)
            .into_par_iter()
            .map(|i| {
                if cancelled() {
                    return None;
                }
                let o = simulate_patient(spec, &setup, &cohort[i], i);
                (control.progress)(done.fetch_add(1, Ordering::SeqCst) + 1);
                Some(o)
            })
            .collect();
        if outcomes.iter().any(Option::is_none) {
            finish(writer, "partial", start)?;
            return Err(TrialError::Interrupted {
                partial: writing.to_path_buf(),
                completed: start,
                total: n,
            });
        }
        let rows = outcome_rows(
            spec,
            cohort,
            start,
            outcomes.into_iter().flatten(),
            &mut cost,
        )?;
        let batch = build_batch(&schema, parallel, rows.into_iter(), &meta.arms)
            .map_err(|e| out_err(writing, &e))?;
        writer.write(&batch).map_err(|e| out_err(writing, &e))?;
        writer.flush().map_err(|e| out_err(writing, &e))?;
        start = end;
    }
    finish(writer, "complete", n)?;
    Ok((
        cost.0,
        cost.1,
        previous.map(|p| p.completed_patients).unwrap_or(0),
    ))
}

/// The rows `range` of a results table, named from `cohort`.
fn table_rows<'a, 't>(
    t: &'t crate::summary::ResultsTable,
    cohort: &'a [PatientParams],
    range: std::ops::Range<usize>,
) -> impl Iterator<Item = RowOut<'a>> + 't
where
    'a: 't,
{
    range.map(move |r| {
        let i = t.patient_index[r] as usize;
        let metrics: Row = std::array::from_fn(|m| t.metrics[m][r]);
        let score = t
            .prognostic
            .as_ref()
            .map(|p| std::array::from_fn(|m| p[m][r]));
        (cohort[i].name.as_str(), i, t.arm[r], metrics, score)
    })
}

/// Key–value metadata of a chunk file ([`TrialPlan::chunk_parquet`]): `"START..END"`.
pub const CHUNK_KEY: &str = "medtwin.chunk";
/// [`STATUS_KEY`] value of a chunk file.
pub const CHUNK_STATUS: &str = "chunk";

/// A trial ready to simulate any range of its patients — the unit of work of distributed
/// backends (the Python package's Ray backend). Each patient's simulations depend on the seeds
/// and its cohort index only, so chunks simulated anywhere, in any order, assembled with
/// [`assemble_trial`] give the same bytes as [`run_trial`].
pub struct TrialPlan {
    spec: TrialSpec,
    cohort: Vec<PatientParams>,
    fingerprint: String,
    setup: Setup,
}

/// One simulated chunk ([`TrialPlan::chunk_parquet`]).
#[derive(Debug, Clone)]
pub struct TrialChunk {
    /// First cohort index.
    pub start: usize,
    /// One past the last cohort index.
    pub end: usize,
    /// A Parquet file (results schema and trial metadata, status [`CHUNK_STATUS`],
    /// [`CHUNK_KEY`] = `START..END`) with the rows of patients `start..end`.
    pub parquet: Vec<u8>,
    /// Simulations run for the chunk.
    pub simulations: u64,
    /// Patient-days simulated for the chunk.
    pub patient_days: u64,
}

impl TrialPlan {
    /// Load the cohort and, for a parallel design, fit the prognostic model (on the current
    /// rayon pool; the model is deterministic). Errors as [`run_trial`]'s.
    pub fn new(spec: &TrialSpec) -> Result<TrialPlan, TrialError> {
        let (cohort, _) = load_cohort(&spec.cohort)?;
        let fingerprint = format!("{spec:?}");
        let setup = setup(spec, cohort.len(), &fingerprint, Path::new("<metadata>"))?;
        Ok(TrialPlan {
            spec: spec.clone(),
            cohort,
            fingerprint,
            setup,
        })
    }

    /// Patients in the cohort.
    pub fn n_patients(&self) -> usize {
        self.cohort.len()
    }

    /// The specification's fingerprint (recorded in every results and chunk file).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Simulations and patient-days spent building the plan (the prognostic model's fit).
    pub fn setup_cost(&self) -> (u64, u64) {
        self.setup.model_cost
    }

    /// Simulate patients `start..end` (on the current rayon pool) into an in-memory Parquet
    /// chunk. Errors: an empty or out-of-range `start..end` ([`TrialError::Selection`]), a
    /// failed simulation, an encoding error.
    pub fn chunk_parquet(&self, start: usize, end: usize) -> Result<TrialChunk, TrialError> {
        let n = self.cohort.len();
        if start >= end || end > n {
            return Err(TrialError::Selection(format!(
                "chunk {start}..{end} is empty or outside the cohort's 0..{n}"
            )));
        }
        let spec = &self.spec;
        let s = &self.setup;
        let here = Path::new("<chunk>");
        let outcomes: Vec<Result<Outcome, TrialError>> = (start..end)
            .into_par_iter()
            .map(|i| simulate_patient(spec, s, &self.cohort[i], i))
            .collect();
        let mut cost = (0u64, 0u64);
        let rows = outcome_rows(spec, &self.cohort, start, outcomes, &mut cost)?;
        let schema = results_schema(s.parallel);
        let batch = build_batch(&schema, s.parallel, rows.into_iter(), &s.meta.arms)
            .map_err(|e| out_err(here, &e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![
                KeyValue::new(META_KEY.into(), s.meta_json.clone()),
                KeyValue::new(CHUNK_KEY.into(), format!("{start}..{end}")),
            ]))
            .build();
        let mut writer =
            ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(|e| out_err(here, &e))?;
        writer.write(&batch).map_err(|e| out_err(here, &e))?;
        let parquet = finish_results(writer, CHUNK_STATUS, end - start, here)?;
        Ok(TrialChunk {
            start,
            end,
            parquet,
            simulations: cost.0,
            patient_days: cost.1,
        })
    }
}

/// What the caller of [`assemble_trial`] measured (reported in the [`TrialSummary`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct AssembleStats {
    /// Simulations run in this invocation.
    pub simulations: u64,
    /// Patient-days simulated in this invocation.
    pub patient_days: u64,
    /// Patients taken from chunks of an earlier invocation.
    pub resumed_patients: usize,
    /// Wall-clock time of the simulation phase, s.
    pub wall_s: f64,
}

/// Read the `START..END` range of a chunk file.
pub fn chunk_range(path: &Path) -> Result<(usize, usize), TrialError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let f = File::open(path).map_err(|e| out_err(path, &e))?;
    let r = SerializedFileReader::new(f).map_err(|e| out_err(path, &e))?;
    let kv = r.metadata().file_metadata().key_value_metadata();
    let get = |k: &str| {
        kv.and_then(|v| v.iter().find(|x| x.key == k))
            .and_then(|x| x.value.clone())
    };
    if get(STATUS_KEY).as_deref() != Some(CHUNK_STATUS) {
        return Err(out_err(path, &"not a medtwin trial chunk file"));
    }
    get(CHUNK_KEY)
        .and_then(|v| {
            let (a, b) = v.split_once("..")?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .ok_or_else(|| out_err(path, &format!("no valid '{CHUNK_KEY}' metadata")))
}

/// Assemble chunk files ([`TrialPlan::chunk_parquet`], any order, together covering the
/// cohort exactly once) into `out_dir/results.parquet` — byte-identical to [`run_trial`]'s:
/// rows in (patient, arm) order, one row group per `chunk_patients` patients — then analyse it
/// (`summary.json`, `plots/`). The chunk files are left in place.
///
/// Errors: [`TrialError::Resume`] when a chunk belongs to another specification, when the
/// chunks overlap or leave a gap, or when `out_dir` holds an interrupted single-machine run;
/// unreadable chunks and output errors ([`TrialError::Output`]); analysis errors.
pub fn assemble_trial(
    spec: &TrialSpec,
    out_dir: &Path,
    chunk_files: &[PathBuf],
    stats: AssembleStats,
) -> Result<TrialSummary, TrialError> {
    let (cohort, acceptance) = load_cohort(&spec.cohort)?;
    let n = cohort.len();
    let k = spec.arms.len();
    let parallel = matches!(spec.design, Design::Parallel { .. });
    let fingerprint = format!("{spec:?}");
    std::fs::create_dir_all(out_dir).map_err(|e| out_err(out_dir, &e))?;
    let results_path = out_dir.join(RESULTS_FILE);
    let partial_path = out_dir.join(PARTIAL_FILE);
    let writing = out_dir.join(WRITING_FILE);
    if partial_path.exists() {
        return Err(TrialError::Resume(format!(
            "{} holds an interrupted single-machine run: complete it without Ray, or remove it",
            partial_path.display()
        )));
    }
    let mut chunks = Vec::with_capacity(chunk_files.len());
    for f in chunk_files {
        chunks.push((chunk_range(f)?, f));
    }
    chunks.sort_by_key(|c| c.0);
    let mut next = 0usize;
    for ((a, b), f) in &chunks {
        if *a != next || b <= a {
            return Err(TrialError::Resume(format!(
                "chunk files do not cover the cohort 0..{n} exactly once: expected one starting at {next}, found {} ({a}..{b})",
                f.display()
            )));
        }
        next = *b;
    }
    if next != n {
        return Err(TrialError::Resume(format!(
            "chunk files cover patients 0..{next} of 0..{n}"
        )));
    }
    let per = if parallel { 1 } else { k };
    let t0 = Instant::now();
    let r = (|| -> Result<(), TrialError> {
        let mut meta_json: Option<String> = None;
        let mut writer: Option<ArrowWriter<File>> = None;
        let schema = results_schema(parallel);
        let arm_names = spec_arm_names(spec);
        // rows read but not written yet: tables and row ranges, patients `done..`
        let mut pending: Vec<(crate::summary::ResultsTable, std::ops::Range<usize>)> = Vec::new();
        let mut done = 0usize;
        for (ci, ((a, b), f)) in chunks.iter().enumerate() {
            let t = read_results(f)?;
            let m = read_meta_string(f)?;
            if t.meta.spec_fingerprint != fingerprint {
                return Err(TrialError::Resume(format!(
                    "{} was written for another trial specification",
                    f.display()
                )));
            }
            match &meta_json {
                None => meta_json = Some(m),
                Some(x) if *x != m => {
                    return Err(TrialError::Resume(format!(
                        "{}: trial metadata differs from the other chunks'",
                        f.display()
                    )))
                }
                _ => {}
            }
            let rows = t.patient_index.len();
            if rows != (b - a) * per
                || t.patient_index
                    .iter()
                    .enumerate()
                    .any(|(r, &i)| i as usize != a + r / per)
            {
                return Err(out_err(
                    f,
                    &format!("rows do not match patients {a}..{b} in (patient, arm) order"),
                ));
            }
            if writer.is_none() {
                let props = results_props(spec, k, meta_json.as_deref().unwrap_or(""));
                let file = File::create(&writing).map_err(|e| out_err(&writing, &e))?;
                writer = Some(
                    ArrowWriter::try_new(file, schema.clone(), Some(props))
                        .map_err(|e| out_err(&writing, &e))?,
                );
            }
            let w = writer.as_mut().expect("created above");
            pending.push((t, 0..rows));
            let last = ci + 1 == chunks.len();
            // write every full row group (and the rest after the last chunk)
            while done < *b {
                let group_end = (done + spec.chunk_patients).min(n);
                if group_end > *b && !last {
                    break;
                }
                let mut take = (group_end - done) * per;
                let mut group: Vec<RowOut<'_>> = Vec::with_capacity(take);
                while take > 0 {
                    let (t, range) = &mut pending[0];
                    let m = take.min(range.len());
                    group.extend(table_rows(t, &cohort, range.start..range.start + m));
                    range.start += m;
                    take -= m;
                    if range.start == range.end {
                        pending.remove(0);
                    }
                }
                let batch = build_batch(&schema, parallel, group.into_iter(), &arm_names)
                    .map_err(|e| out_err(&writing, &e))?;
                w.write(&batch).map_err(|e| out_err(&writing, &e))?;
                w.flush().map_err(|e| out_err(&writing, &e))?;
                done = group_end;
            }
        }
        let w = writer.ok_or_else(|| TrialError::Selection("no chunk files".into()))?;
        finish_results(w, "complete", n, &writing).map(|_| ())
    })();
    let _ = t0;
    if let Err(e) = r {
        let _ = std::fs::remove_file(&writing);
        return Err(e);
    }
    std::fs::rename(&writing, &results_path).map_err(|e| {
        let _ = std::fs::remove_file(&writing);
        out_err(&results_path, &e)
    })?;
    let (summary, summary_path) = analyze_dir(out_dir, AnalyzeOptions::default())?;
    Ok(TrialSummary {
        summary,
        acceptance,
        simulations: stats.simulations,
        patient_days: stats.patient_days,
        wall_s: stats.wall_s,
        patient_days_per_s: stats.patient_days as f64 / stats.wall_s.max(1e-9),
        resumed_patients: stats.resumed_patients,
        results_path,
        summary_path,
    })
}

fn spec_arm_names(spec: &TrialSpec) -> Vec<String> {
    spec.arms.iter().map(|a| a.name.clone()).collect()
}

/// The verbatim trial metadata JSON of a results or chunk file.
fn read_meta_string(path: &Path) -> Result<String, TrialError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let f = File::open(path).map_err(|e| out_err(path, &e))?;
    let r = SerializedFileReader::new(f).map_err(|e| out_err(path, &e))?;
    r.metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|v| v.iter().find(|x| x.key == META_KEY))
        .and_then(|x| x.value.clone())
        .ok_or_else(|| out_err(path, &format!("no '{META_KEY}' metadata")))
}

type RowOut<'a> = (&'a str, usize, usize, Row, Option<Row>);

fn build_batch<'a>(
    schema: &Arc<Schema>,
    parallel: bool,
    rows: impl Iterator<Item = RowOut<'a>>,
    arm_names: &'a [String],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut names: Vec<&str> = Vec::new();
    let mut idx: Vec<u64> = Vec::new();
    let mut arms: Vec<&str> = Vec::new();
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); if parallel { 28 } else { 14 }];
    for (name, i, a, r, score) in rows {
        names.push(name);
        idx.push(i as u64);
        arms.push(&arm_names[a]);
        for (c, v) in r.iter().enumerate() {
            cols[c].push(*v);
        }
        if parallel {
            let s = score.unwrap_or([f64::NAN; 14]);
            for (c, v) in s.iter().enumerate() {
                cols[14 + c].push(*v);
            }
        }
    }
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(names)),
        Arc::new(UInt64Array::from(idx)),
        Arc::new(StringArray::from(arms)),
    ];
    arrays.extend(
        cols.into_iter()
            .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef),
    );
    RecordBatch::try_new(schema.clone(), arrays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::read_results;

    fn spec(design: &str, n: usize, extra: &str) -> TrialSpec {
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
{extra}
"#
        );
        TrialSpec::from_toml_str(&t, "t.toml", Path::new(".")).unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medtwin-trial-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn plain() -> RunControl<'static> {
        RunControl {
            progress: &|_| {},
            cancel: None,
            resume: false,
        }
    }

    #[test]
    fn byte_identical_for_one_and_two_threads() {
        let s = spec("parallel", 24, "[prognostic]\nhistorical_n = 40");
        let run = |threads: usize, dir: &Path| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| run_trial(&s, dir, &plain())).unwrap()
        };
        let (d1, d2) = (tmp("t1"), tmp("t2"));
        let s1 = run(1, &d1);
        run(2, &d2);
        for f in [RESULTS_FILE, "summary.json", "plots/mean_mg_dl.svg"] {
            let a = std::fs::read(d1.join(f)).unwrap();
            let b = std::fs::read(d2.join(f)).unwrap();
            assert!(a == b, "{f} differs between 1 and 2 threads");
        }
        let e = &s1.summary.endpoints["tir_pct"];
        assert_eq!(e.arms["bb"].n + e.arms["pid"].n, 24);
        // 24 patients + 24 run-ins + 40 historical × (run-in + outcome)
        assert_eq!(s1.simulations, 24 + 24 + 80);
        let mean = &s1.summary.endpoints["mean_mg_dl"];
        assert_eq!(mean.procova.len(), 1);
        assert_eq!(mean.effects[0].method, "welch-t");
        // the prognostic score is an imperfect but real predictor of the control outcome
        let r = mean.procova[0].prognostic_correlation_reference;
        assert!(r > 0.3 && r < 0.999, "r = {r}");
        let t = read_results(&d1.join(RESULTS_FILE)).unwrap();
        assert_eq!(t.status, "complete");
        assert!(t.prognostic.is_some());
        assert!(!s1.to_string().is_empty());
        std::fs::remove_dir_all(&d1).unwrap();
        std::fs::remove_dir_all(&d2).unwrap();
    }

    #[test]
    fn crossover_results_file_has_every_patient_and_arm() {
        let s = spec("crossover", 6, "");
        let d = tmp("x");
        let seen = AtomicU64::new(0);
        let ctl = RunControl {
            progress: &|k| {
                seen.fetch_max(k, Ordering::SeqCst);
            },
            cancel: None,
            resume: false,
        };
        let sum = run_trial(&s, &d, &ctl).unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 6);
        assert_eq!(sum.simulations, 12);
        let e = &sum.summary.endpoints["tir_pct"];
        assert_eq!(e.effects[0].method, "paired-t");
        let t = read_results(&d.join(RESULTS_FILE)).unwrap();
        assert_eq!(t.arm, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        // same meals in both arms (common random numbers): equal carbohydrate per patient;
        // different patients get different meal streams
        let carbs = &t.metrics[13];
        for pair in carbs.chunks(2) {
            assert_eq!(pair[0], pair[1]);
        }
        assert!(carbs.chunks(2).any(|p| p[0] != carbs[0]), "{carbs:?}");
        assert!(d.join("summary.json").exists());
        assert!(!d.join(WRITING_FILE).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn interrupted_run_resumes_to_the_same_bytes() {
        let s = spec("crossover", 10, "[execution]\nchunk_patients = 3");
        let (full, cut) = (tmp("full"), tmp("cut"));
        run_trial(&s, &full, &plain()).unwrap();
        let stop = AtomicBool::new(false);
        let ctl = RunControl {
            progress: &|k| {
                if k >= 4 {
                    stop.store(true, Ordering::SeqCst);
                }
            },
            cancel: Some(&stop),
            resume: false,
        };
        let e = run_trial(&s, &cut, &ctl).unwrap_err();
        let TrialError::Interrupted {
            completed, total, ..
        } = e
        else {
            panic!("{e}")
        };
        assert_eq!(total, 10);
        assert!(
            (3..10).contains(&completed) && completed % 3 == 0,
            "{completed}"
        );
        let t = read_results(&cut.join(PARTIAL_FILE)).unwrap();
        assert_eq!(t.status, "partial");
        assert_eq!(t.completed_patients, completed);
        assert_eq!(t.arm.len(), 2 * completed);
        assert!(!cut.join(RESULTS_FILE).exists());
        // a fresh run refuses to overwrite the partial file; a changed spec refuses to resume
        let e = run_trial(&s, &cut, &plain()).unwrap_err().to_string();
        assert!(e.contains("--resume"), "{e}");
        let other = spec("crossover", 11, "[execution]\nchunk_patients = 3");
        let resume = RunControl {
            progress: &|_| {},
            cancel: None,
            resume: true,
        };
        let e = run_trial(&other, &cut, &resume).unwrap_err().to_string();
        assert!(e.contains("another trial specification"), "{e}");
        let sum = run_trial(&s, &cut, &resume).unwrap();
        assert_eq!(sum.resumed_patients, completed);
        assert_eq!(sum.simulations as usize, 2 * (10 - completed));
        assert!(!cut.join(PARTIAL_FILE).exists());
        for f in [RESULTS_FILE, "summary.json"] {
            let a = std::fs::read(full.join(f)).unwrap();
            let b = std::fs::read(cut.join(f)).unwrap();
            assert!(
                a == b,
                "{f}: resumed run differs from the uninterrupted one"
            );
        }
        let e = run_trial(&s, &cut, &resume).unwrap_err().to_string();
        assert!(e.contains("nothing to resume"), "{e}");
        std::fs::remove_dir_all(&full).unwrap();
        std::fs::remove_dir_all(&cut).unwrap();
    }

    #[test]
    fn missing_cohort_file_is_reported_and_leaves_nothing() {
        let mut s = spec("crossover", 3, "");
        s.cohort = CohortSource::File {
            path: PathBuf::from("/nonexistent/c.parquet"),
            group: None,
            n: None,
        };
        let d = tmp("missing");
        let e = run_trial(&s, &d, &plain()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/c.parquet"), "{e}");
        assert!(!d.join(RESULTS_FILE).exists());
    }
}
