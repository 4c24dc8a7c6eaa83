//! Trial specifications (TOML, unknown fields rejected):
//!
//! ```toml
//! [cohort]
//! from = "simglucose-30"      # or a cohort .parquet file (relative to the spec file)
//! group = "adult"             # child | adolescent | adult | all
//! n = 10000                   # required for simglucose-30; for a file: first n (default all)
//! seed = 7                    # simglucose-30 only (default 1)
//! [scenario]
//! days = 1                    # whole days, 1..=3650
//! random_meals_seed = 11      # per-patient meal streams by cohort index
//! sensor = { kind = "dexcom", noise = true, seed = 1 }
//! pump = "insulet"            # or { kind = "insulet" }
//! [design]
//! kind = "crossover"          # or "parallel" (randomised 1:1:…, seeded)
//! seed = 3                    # parallel: randomisation seed (default: cohort seed + 1)
//! [[arm]]
//! name = "bb"
//! controller = { kind = "basal-bolus", target_mg_dl = 140 }
//! [[endpoint]]
//! metric = "tir_pct"
//! [prognostic]                # parallel designs: PROCOVA prognostic score (all optional)
//! run_in_days = 1             # baseline CGM run-in per patient (noisy sensor, own meals)
//! historical_n = 300          # historical control patients that train the prognostic model
//! historical_seed = 99        # their generation seed
//! [execution]
//! chunk_patients = 1024       # patients per chunk = Parquet row group (memory bound)
//! ```
//! Every problem is a [`SpecError`] naming the file, the field and the value.

use crate::population::{Group, SOURCE_SIMGLUCOSE_30};
use medtwin_t1d::controller::ControllerSpec;
use medtwin_t1d::env::TrajectorySummary;
use medtwin_t1d::pump::PumpKind;
use medtwin_t1d::sensor::SensorKind;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A trial-specification problem: file, field (TOML path) and what is wrong with which value.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("{file}: {field}: {message}")]
pub struct SpecError {
    /// The specification file (or `<string>`).
    pub file: String,
    /// The field, e.g. `arm[1].controller.target_mg_dl`.
    pub field: String,
    /// What is wrong, with the offending value.
    pub message: String,
}

/// Accessor of one summary metric.
pub type MetricFn = fn(&TrajectorySummary) -> f64;

/// The summary metrics (columns of `simulate --summary`), in column order, with accessors.
pub const METRICS: [(&str, MetricFn); 14] = [
    ("mean_mg_dl", |s| s.metrics.mean_mg_dl),
    ("sd_mg_dl", |s| s.metrics.sd_mg_dl),
    ("cv_pct", |s| s.metrics.cv_pct),
    ("gmi_pct", |s| s.metrics.gmi_pct),
    ("tbr54_pct", |s| s.metrics.tbr54_pct),
    ("tbr70_pct", |s| s.metrics.tbr70_pct),
    ("tir_pct", |s| s.metrics.tir_pct),
    ("tar180_pct", |s| s.metrics.tar180_pct),
    ("tar250_pct", |s| s.metrics.tar250_pct),
    ("lbgi", |s| s.metrics.lbgi),
    ("hbgi", |s| s.metrics.hbgi),
    ("risk_index", |s| s.metrics.risk_index),
    ("total_insulin_u", |s| s.total_insulin_u),
    ("total_carbs_g", |s| s.total_carbs_g),
];

/// Index of metric `name` in [`METRICS`].
pub fn metric_index(name: &str) -> Option<usize> {
    METRICS.iter().position(|(n, _)| *n == name)
}

/// Where the cohort comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CohortSource {
    /// Generate from the simglucose-30 population model.
    Generate {
        /// Age group.
        group: Group,
        /// Patients.
        n: usize,
        /// Generation seed.
        seed: u64,
    },
    /// Read a cohort Parquet file, optionally keeping only one group (name prefix) and the
    /// first `n` patients.
    File {
        /// Resolved path.
        path: PathBuf,
        /// Group filter (`None` or [`Group::All`]: all).
        group: Option<Group>,
        /// Keep the first `n` (after filtering).
        n: Option<usize>,
    },
}

/// Trial design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Every patient receives every arm (same meals and sensor noise: common random numbers).
    Crossover,
    /// Each patient receives one arm, by a seeded balanced randomisation (1:1:…).
    Parallel {
        /// Randomisation seed.
        seed: u64,
    },
}

/// One arm: a name and a controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    /// Arm name (unique within the trial).
    pub name: String,
    /// Controller (any [`ControllerSpec`], including `mpc`).
    pub controller: ControllerSpec,
}

/// A validated trial specification.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialSpec {
    /// Cohort source.
    pub cohort: CohortSource,
    /// Duration, whole days.
    pub days: u64,
    /// Seed of the random meal streams (stream = patient index in the cohort).
    pub random_meals_seed: u64,
    /// CGM sensor.
    pub sensor: SensorKind,
    /// Whether CGM noise is on.
    pub sensor_noise: bool,
    /// CGM noise seed (per-patient stream by cohort index).
    pub sensor_seed: u64,
    /// Pump.
    pub pump: PumpKind,
    /// Design.
    pub design: Design,
    /// Arms (≥ 1; the first is the control/reference arm).
    pub arms: Vec<Arm>,
    /// Endpoint metric indices into [`METRICS`] (≥ 1, distinct).
    pub endpoints: Vec<usize>,
    /// Prognostic-score settings (used by parallel designs).
    pub prognostic: PrognosticSpec,
    /// Patients per chunk: one Parquet row group each; bounds memory (1..=65536, default 1024).
    pub chunk_patients: usize,
}

/// How the PROCOVA prognostic score is built (Schuler et al. 2021): a linear model trained on a
/// *historical* control population predicts each trial patient's control-arm outcome from
/// baseline data only, here a CGM run-in with sensor noise and its own meals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrognosticSpec {
    /// Run-in length per patient, whole days (1..=30, default 1).
    pub run_in_days: u64,
    /// Historical control patients generated to train the prognostic model (20..=100000,
    /// default 300).
    pub historical_n: usize,
    /// Generation seed of the historical population (default: cohort seed + 1000).
    pub historical_seed: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CohortToml {
    from: String,
    group: Option<String>,
    n: Option<i64>,
    seed: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorToml {
    #[serde(default = "default_sensor")]
    kind: String,
    #[serde(default)]
    noise: bool,
    #[serde(default = "default_one")]
    seed: i64,
}
fn default_sensor() -> String {
    "dexcom".into()
}
fn default_one() -> i64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PumpTable {
    kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PumpToml {
    Name(String),
    Table(PumpTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioToml {
    days: f64,
    random_meals_seed: i64,
    sensor: Option<SensorToml>,
    pump: Option<PumpToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DesignToml {
    kind: String,
    seed: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArmToml {
    name: String,
    controller: ControllerSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointToml {
    metric: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrognosticToml {
    run_in_days: Option<f64>,
    historical_n: Option<i64>,
    historical_seed: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutionToml {
    chunk_patients: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrialToml {
    cohort: CohortToml,
    scenario: ScenarioToml,
    design: DesignToml,
    #[serde(default)]
    arm: Vec<ArmToml>,
    #[serde(default)]
    endpoint: Vec<EndpointToml>,
    prognostic: Option<PrognosticToml>,
    execution: Option<ExecutionToml>,
}

impl TrialSpec {
    /// Read and validate a trial specification; a relative cohort path is taken relative to the
    /// file's directory. Errors name the file, field and value.
    pub fn from_file(path: &Path) -> Result<TrialSpec, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: file.clone(),
            field: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        TrialSpec::from_toml_str(&text, &file, base)
    }

    /// Parse and validate TOML text; `file` names the source in errors and `base_dir` resolves a
    /// relative cohort path.
    pub fn from_toml_str(text: &str, file: &str, base_dir: &Path) -> Result<TrialSpec, SpecError> {
        let err = |field: &str, message: String| SpecError {
            file: file.into(),
            field: field.into(),
            message,
        };
        let raw: TrialToml = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            });
            err(
                "(toml)",
                format!("{}{}", line.unwrap_or_default(), e.message()),
            )
        })?;
        let nonneg = |field: &str, v: i64| -> Result<u64, SpecError> {
            u64::try_from(v).map_err(|_| err(field, format!("{v} must be a non-negative integer")))
        };
        // cohort
        let c = raw.cohort;
        let group = match &c.group {
            None => None,
            Some(g) => Some(g.parse::<Group>().map_err(|_| {
                err(
                    "cohort.group",
                    format!("unknown group '{g}' (expected child, adolescent, adult or all)"),
                )
            })?),
        };
        let n = match c.n {
            None => None,
            Some(v) if v >= 1 && v as u64 <= crate::population::MAX_COHORT as u64 => {
                Some(v as usize)
            }
            Some(v) => {
                return Err(err(
                    "cohort.n",
                    format!("{v} is outside 1..={}", crate::population::MAX_COHORT),
                ))
            }
        };
        let cohort = if c.from == SOURCE_SIMGLUCOSE_30 {
            CohortSource::Generate {
                group: group.unwrap_or(Group::All),
                n: n.ok_or_else(|| {
                    err("cohort.n", "required with from = \"simglucose-30\"".into())
                })?,
                seed: nonneg("cohort.seed", c.seed.unwrap_or(1))?,
            }
        } else if c.from.ends_with(".parquet") {
            if c.seed.is_some() {
                return Err(err(
                    "cohort.seed",
                    format!("applies only to from = \"simglucose-30\", not '{}'", c.from),
                ));
            }
            let p = Path::new(&c.from);
            let path = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            };
            CohortSource::File { path, group, n }
        } else {
            return Err(err(
                "cohort.from",
                format!(
                    "'{}' is neither \"simglucose-30\" nor a .parquet file",
                    c.from
                ),
            ));
        };
        // scenario
        let s = raw.scenario;
        if !s.days.is_finite() || s.days < 1.0 || s.days.fract() != 0.0 || s.days > 3650.0 {
            return Err(err(
                "scenario.days",
                format!("{} is not a whole number of days in 1..=3650", s.days),
            ));
        }
        let random_meals_seed = nonneg("scenario.random_meals_seed", s.random_meals_seed)?;
        let st = s.sensor.unwrap_or(SensorToml {
            kind: default_sensor(),
            noise: false,
            seed: 1,
        });
        let sensor = SensorKind::from_name(&st.kind).ok_or_else(|| {
            err(
                "scenario.sensor.kind",
                format!(
                    "unknown sensor '{}' (expected dexcom, guardian-rt or navigator)",
                    st.kind
                ),
            )
        })?;
        let sensor_seed = nonneg("scenario.sensor.seed", st.seed)?;
        let pump_name = match s.pump {
            None => "insulet".to_string(),
            Some(PumpToml::Name(n)) => n,
            Some(PumpToml::Table(t)) => t.kind,
        };
        let pump = PumpKind::from_name(&pump_name).ok_or_else(|| {
            err(
                "scenario.pump",
                format!("unknown pump '{pump_name}' (expected insulet or cozmo)"),
            )
        })?;
        // design
        let default_rand_seed = match &cohort {
            CohortSource::Generate { seed, .. } => seed.wrapping_add(1),
            CohortSource::File { .. } => 1,
        };
        let design = match raw.design.kind.as_str() {
            "crossover" => {
                if raw.design.seed.is_some() {
                    return Err(err(
                        "design.seed",
                        "applies only to kind = \"parallel\"".into(),
                    ));
                }
                Design::Crossover
            }
            "parallel" => Design::Parallel {
                seed: match raw.design.seed {
                    None => default_rand_seed,
                    Some(v) => nonneg("design.seed", v)?,
                },
            },
            k => {
                return Err(err(
                    "design.kind",
                    format!("unknown design '{k}' (expected crossover or parallel)"),
                ))
            }
        };
        // arms
        if raw.arm.is_empty() {
            return Err(err("arm", "at least one [[arm]] is required".into()));
        }
        if matches!(design, Design::Parallel { .. }) && raw.arm.len() < 2 {
            return Err(err(
                "arm",
                "a parallel design needs at least two arms".into(),
            ));
        }
        let mut arms: Vec<Arm> = Vec::new();
        for (i, a) in raw.arm.into_iter().enumerate() {
            let f = |x: &str| format!("arm[{i}].{x}");
            if a.name.trim().is_empty() {
                return Err(err(&f("name"), "empty arm name".into()));
            }
            if arms.iter().any(|b| b.name == a.name) {
                return Err(err(&f("name"), format!("duplicate arm name '{}'", a.name)));
            }
            validate_controller(&a.controller).map_err(|(field, m)| err(&f(field), m))?;
            arms.push(Arm {
                name: a.name,
                controller: a.controller,
            });
        }
        // endpoints
        if raw.endpoint.is_empty() {
            return Err(err(
                "endpoint",
                "at least one [[endpoint]] is required".into(),
            ));
        }
        let mut endpoints = Vec::new();
        for (i, e) in raw.endpoint.iter().enumerate() {
            let k = metric_index(&e.metric).ok_or_else(|| {
                err(
                    &format!("endpoint[{i}].metric"),
                    format!(
                        "unknown metric '{}' (expected one of {})",
                        e.metric,
                        METRICS.map(|m| m.0).join(", ")
                    ),
                )
            })?;
            if endpoints.contains(&k) {
                return Err(err(
                    &format!("endpoint[{i}].metric"),
                    format!("duplicate endpoint '{}'", e.metric),
                ));
            }
            endpoints.push(k);
        }
        // prognostic score and execution
        let pt = raw.prognostic.unwrap_or(PrognosticToml {
            run_in_days: None,
            historical_n: None,
            historical_seed: None,
        });
        let run_in_days = pt.run_in_days.unwrap_or(1.0);
        if !run_in_days.is_finite()
            || run_in_days < 1.0
            || run_in_days.fract() != 0.0
            || run_in_days > 30.0
        {
            return Err(err(
                "prognostic.run_in_days",
                format!("{run_in_days} is not a whole number of days in 1..=30"),
            ));
        }
        let historical_n = match pt.historical_n.unwrap_or(300) {
            v @ 20..=100_000 => v as usize,
            v => {
                return Err(err(
                    "prognostic.historical_n",
                    format!("{v} is outside 20..=100000"),
                ))
            }
        };
        let historical_seed = match pt.historical_seed {
            Some(v) => nonneg("prognostic.historical_seed", v)?,
            None => default_rand_seed.wrapping_add(999),
        };
        let chunk_patients = match raw.execution.and_then(|e| e.chunk_patients) {
            None => 1024,
            Some(v @ 1..=65_536) => v as usize,
            Some(v) => {
                return Err(err(
                    "execution.chunk_patients",
                    format!("{v} is outside 1..=65536"),
                ))
            }
        };
        Ok(TrialSpec {
            cohort,
            days: s.days as u64,
            random_meals_seed,
            sensor,
            sensor_noise: st.noise,
            sensor_seed,
            pump,
            design,
            arms,
            endpoints,
            prognostic: PrognosticSpec {
                run_in_days: run_in_days as u64,
                historical_n,
                historical_seed,
            },
            chunk_patients,
        })
    }
}

/// The same controller checks as a scenario file (targets, horizon, gains finite).
fn validate_controller(c: &ControllerSpec) -> Result<(), (&'static str, String)> {
    match *c {
        ControllerSpec::BasalBolus { target_mg_dl } => {
            if !target_mg_dl.is_finite() || !(40.0..=400.0).contains(&target_mg_dl) {
                return Err((
                    "controller.target_mg_dl",
                    format!("{target_mg_dl} is outside 40–400 mg/dL"),
                ));
            }
        }
        ControllerSpec::Pid {
            p,
            i,
            d,
            target_mg_dl,
        } => {
            if !target_mg_dl.is_finite() || !(40.0..=400.0).contains(&target_mg_dl) {
                return Err((
                    "controller.target_mg_dl",
                    format!("{target_mg_dl} is outside 40–400 mg/dL"),
                ));
            }
            for (n, v) in [
                ("controller.p", p),
                ("controller.i", i),
                ("controller.d", d),
            ] {
                if !v.is_finite() {
                    return Err((n, format!("{v} is not finite")));
                }
            }
        }
        ControllerSpec::OpenLoop => {}
        ControllerSpec::Mpc {
            target_mg_dl,
            horizon_min,
            suspend_mg_dl,
        } => {
            if !target_mg_dl.is_finite() || !(90.0..=250.0).contains(&target_mg_dl) {
                return Err((
                    "controller.target_mg_dl",
                    format!("{target_mg_dl} is outside 90–250 mg/dL (MPC)"),
                ));
            }
            if !horizon_min.is_finite() || !(30.0..=600.0).contains(&horizon_min) {
                return Err((
                    "controller.horizon_min",
                    format!("{horizon_min} is outside 30–600 min"),
                ));
            }
            if !suspend_mg_dl.is_finite() || !(40.0..=target_mg_dl).contains(&suspend_mg_dl) {
                return Err((
                    "controller.suspend_mg_dl",
                    format!("{suspend_mg_dl} is outside 40 mg/dL – target ({target_mg_dl} mg/dL)"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cohort]
from = "simglucose-30"
group = "adult"
n = 10000
seed = 7
[scenario]
days = 1
random_meals_seed = 11
sensor = { kind = "dexcom", noise = true }
pump = "insulet"
[design]
kind = "crossover"
[[arm]]
name = "bb"
controller = { kind = "basal-bolus", target_mg_dl = 140 }
[[arm]]
name = "pid"
controller = { kind = "pid" }
[[endpoint]]
metric = "tir_pct"
"#;

    fn parse(t: &str) -> Result<TrialSpec, SpecError> {
        TrialSpec::from_toml_str(t, "t.toml", Path::new("/d"))
    }

    #[test]
    fn parses_the_issue_example() {
        let s = parse(GOOD).unwrap();
        assert_eq!(
            s.cohort,
            CohortSource::Generate {
                group: Group::Adult,
                n: 10000,
                seed: 7
            }
        );
        assert_eq!(s.arms.len(), 2);
        assert_eq!(s.endpoints, vec![6]);
        assert!(s.sensor_noise);
        assert_eq!(s.design, Design::Crossover);
    }

    #[test]
    fn errors_name_file_field_and_value() {
        let e = parse(&GOOD.replace("tir_pct", "tir")).unwrap_err();
        assert_eq!(e.field, "endpoint[0].metric");
        assert!(e.message.contains("'tir'"), "{e}");
        let e = parse(&GOOD.replace("group = \"adult\"", "group = \"teen\"")).unwrap_err();
        assert_eq!(e.field, "cohort.group");
        let e = parse(&GOOD.replace("days = 1", "days = 1\nnights = 2")).unwrap_err();
        assert!(e.to_string().starts_with("t.toml: (toml): line "), "{e}");
        assert!(e.message.contains("nights"), "{e}");
        let e = parse(&GOOD.replace("target_mg_dl = 140", "target_mg_dl = 1400")).unwrap_err();
        assert_eq!(e.field, "arm[0].controller.target_mg_dl");
        assert!(e.message.contains("1400"));
        let e = parse(&GOOD.replace("\"crossover\"", "\"factorial\"")).unwrap_err();
        assert_eq!(e.field, "design.kind");
        let e = parse(&GOOD.replace("name = \"pid\"", "name = \"bb\"")).unwrap_err();
        assert_eq!(e.field, "arm[1].name");
        let e = parse(&GOOD.replace("n = 10000", "n = 0")).unwrap_err();
        assert_eq!(e.field, "cohort.n");
        let s = parse(
            &GOOD
                .replace("\"simglucose-30\"", "\"c.parquet\"")
                .replace("seed = 7", ""),
        )
        .unwrap();
        assert!(
            matches!(s.cohort, CohortSource::File { ref path, .. } if path == Path::new("/d/c.parquet"))
        );
        let e = TrialSpec::from_file(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"));
    }
}
