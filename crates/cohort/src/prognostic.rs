//! PROCOVA prognostic scores from baseline data only (Schuler et al. 2021, Int J Biostat
//! 18:329; EMA qualification opinion 2022).
//!
//! PROCOVA's prognostic model is trained on *historical* control data and applied to each trial
//! participant's *baseline* covariates. Here:
//!
//! * **Baseline data** of a patient = a CGM run-in of [`PrognosticSpec::run_in_days`] days under
//!   the control arm's therapy, with CGM noise always on and its own meals (an independent
//!   stream, not the trial's), summarised into [`FEATURES`] — what a clinic would have before
//!   randomisation — plus body weight.
//! * **Historical controls** = a separate virtual population (same generator and group, seed
//!   [`PrognosticSpec::historical_seed`]) with run-in *and* control-arm outcome over the trial's
//!   duration (again with their own meals and noise).
//! * **Prognostic model** = one ridge regression per outcome metric on standardised features
//!   (penalty λ = 10⁻²·n on the standardised scale; intercept unpenalised).
//!
//! The score is therefore imperfect by construction: other meals, CGM noise, a short run-in and
//! a linear model stand between it and the patient's true control outcome.

use crate::analysis::invert;
use crate::population::{generate_cohort, Group, SOURCE_SIMGLUCOSE_30};
use crate::spec::{PrognosticSpec, TrialSpec, METRICS};
use medtwin_core::Timeline;
use medtwin_simulate::SolverOptions;
use medtwin_t1d::controller::Controller;
use medtwin_t1d::env::{patient_seed, simulate_patient_with, SummaryAccumulator};
use medtwin_t1d::metrics::glycaemic_metrics;
use medtwin_t1d::random_meals::{RandomMealSpec, DAY_MIN};
use medtwin_t1d::scenario::Scenario;
use medtwin_t1d::PatientParams;
use rayon::prelude::*;

/// Names of the baseline features (run-in CGM metrics on the *noisy* CGM, daily insulin and
/// carbohydrate, body weight), in the order of [`Features`].
pub const FEATURES: [&str; 11] = [
    "runin_cgm_mean_mg_dl",
    "runin_cgm_sd_mg_dl",
    "runin_cgm_tbr70_pct",
    "runin_cgm_tir_pct",
    "runin_cgm_tar180_pct",
    "runin_cgm_tar250_pct",
    "runin_cgm_lbgi",
    "runin_cgm_hbgi",
    "runin_insulin_u_per_day",
    "runin_carbs_g_per_day",
    "body_weight_kg",
];

/// Baseline feature vector of one patient (see [`FEATURES`]).
pub type Features = [f64; 11];

/// One summary row: the 14 metrics of [`METRICS`].
pub type Row = [f64; 14];

/// Salts separating the random streams of run-ins, historical run-ins and historical outcomes
/// from the trial's own streams.
const RUNIN_SALT: u64 = 0x7275_6e69_6e5f_7331; // "runin_s1"
const HIST_RUNIN_SALT: u64 = 0x6869_7374_5f72_756e; // "hist_run"
const HIST_OUTCOME_SALT: u64 = 0x6869_7374_5f6f_7574; // "hist_out"

/// SplitMix64 finaliser: derives an independent 64-bit seed from another.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The scenario of arm `arm` of `spec` over `days` days, with the given meal and CGM-noise
/// seeds (the meal stream of a patient is `(meal_seed, cohort index)`).
pub fn arm_scenario(
    spec: &TrialSpec,
    arm: usize,
    days: u64,
    meal_seed: u64,
    sensor_seed: u64,
    sensor_noise: bool,
) -> Scenario {
    let duration_min = days * DAY_MIN;
    Scenario {
        patients: Vec::new(),
        start: None,
        duration_min,
        controller: spec.arms[arm].controller.clone(),
        sensor: spec.sensor,
        sensor_noise,
        sensor_seed,
        pump: spec.pump,
        timeline: Timeline::new(duration_min as f64),
        random_meals: Some(RandomMealSpec { seed: meal_seed }),
    }
}

/// Simulate patient `p` (cohort index `index`) in scenario `sc`; returns the 14 outcome metrics
/// (on CGM-sampled subcutaneous glucose, as `simulate --summary`) and the baseline features
/// (on the recorded, possibly noisy, CGM). Errors: the solver's message.
pub fn simulate_row(
    p: &PatientParams,
    sc: &Scenario,
    index: usize,
) -> Result<(Row, Features), String> {
    let mut controller = Controller::new(&sc.controller, p);
    let mut acc = SummaryAccumulator::default();
    let mut cgm = Vec::new();
    simulate_patient_with(
        p,
        sc,
        index,
        patient_seed(sc.sensor_seed, index),
        SolverOptions::default(),
        &mut controller,
        |r| {
            acc.push(r);
            if r.cgm_sampled {
                cgm.push(r.cgm_mg_dl);
            }
        },
    )
    .map_err(|e| e.to_string())?;
    let s = acc.finish().ok_or("no CGM sample")?;
    let row = METRICS.map(|(_, f)| f(&s));
    let m = glycaemic_metrics(&cgm).ok_or("no CGM sample")?;
    let days = sc.duration_min as f64 / DAY_MIN as f64;
    let features = [
        m.mean_mg_dl,
        m.sd_mg_dl,
        m.tbr70_pct,
        m.tir_pct,
        m.tar180_pct,
        m.tar250_pct,
        m.lbgi,
        m.hbgi,
        s.total_insulin_u / days,
        s.total_carbs_g / days,
        p.bw,
    ];
    Ok((row, features))
}

/// Baseline features of trial patient `p` (cohort index `index`): its run-in under the control
/// arm with CGM noise on and independent meals.
pub fn trial_features(
    spec: &TrialSpec,
    p: &PatientParams,
    index: usize,
) -> Result<Features, String> {
    let sc = arm_scenario(
        spec,
        0,
        spec.prognostic.run_in_days,
        splitmix(spec.random_meals_seed ^ RUNIN_SALT),
        splitmix(spec.sensor_seed ^ RUNIN_SALT),
        true,
    );
    simulate_row(p, &sc, index).map(|(_, f)| f)
}

/// A fitted prognostic model: per outcome metric, a linear predictor of the control-arm outcome
/// from [`Features`].
#[derive(Debug, Clone, PartialEq)]
pub struct PrognosticModel {
    /// Feature means used for standardisation.
    mean: Features,
    /// Feature SDs used for standardisation (1 for constant features).
    sd: Features,
    /// Per metric: intercept then one coefficient per standardised feature.
    coef: Vec<[f64; 12]>,
    /// Per metric: R² on the historical training set.
    pub train_r2: Vec<f64>,
    /// Historical patients used.
    pub n_train: usize,
}

impl PrognosticModel {
    /// Fit on historical data: `x[i]` features and `y[i]` control-arm outcomes of patient `i`.
    /// `None` with fewer than 12 patients or a singular system.
    pub fn fit(x: &[Features], y: &[Row]) -> Option<PrognosticModel> {
        let n = x.len();
        if n < 12 || y.len() != n {
            return None;
        }
        let nf = FEATURES.len();
        let mut mean = [0.0; 11];
        let mut sd = [1.0; 11];
        for j in 0..nf {
            mean[j] = x.iter().map(|r| r[j]).sum::<f64>() / n as f64;
            let v = x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / (n as f64 - 1.0);
            sd[j] = if v > 1e-24 { v.sqrt() } else { 1.0 };
        }
        let z: Vec<[f64; 11]> = x
            .iter()
            .map(|r| std::array::from_fn(|j| (r[j] - mean[j]) / sd[j]))
            .collect();
        // ridge normal equations on standardised, centred features
        let lambda = 1e-2 * n as f64;
        let mut a = vec![vec![0.0; nf]; nf];
        for (i, row) in a.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = z.iter().map(|r| r[i] * r[j]).sum::<f64>() + if i == j { lambda } else { 0.0 };
            }
        }
        let inv = invert(&a)?;
        let mut coef = Vec::with_capacity(METRICS.len());
        let mut train_r2 = Vec::with_capacity(METRICS.len());
        for m in 0..METRICS.len() {
            let ym = y.iter().map(|r| r[m]).sum::<f64>() / n as f64;
            let b: Vec<f64> = (0..nf)
                .map(|j| z.iter().zip(y).map(|(r, yy)| r[j] * (yy[m] - ym)).sum())
                .collect();
            let mut c = [0.0; 12];
            c[0] = ym;
            for i in 0..nf {
                c[1 + i] = (0..nf).map(|j| inv[i][j] * b[j]).sum();
            }
            let (mut ss_res, mut ss_tot) = (0.0, 0.0);
            for (r, yy) in z.iter().zip(y) {
                let f = c[0] + (0..nf).map(|j| c[1 + j] * r[j]).sum::<f64>();
                ss_res += (yy[m] - f).powi(2);
                ss_tot += (yy[m] - ym).powi(2);
            }
            train_r2.push(if ss_tot > 0.0 {
                1.0 - ss_res / ss_tot
            } else {
                0.0
            });
            coef.push(c);
        }
        Some(PrognosticModel {
            mean,
            sd,
            coef,
            train_r2,
            n_train: n,
        })
    }

    /// Predicted control-arm outcome (all 14 metrics) from baseline features.
    pub fn predict(&self, f: &Features) -> Row {
        std::array::from_fn(|m| {
            let c = &self.coef[m];
            c[0] + (0..FEATURES.len())
                .map(|j| c[1 + j] * (f[j] - self.mean[j]) / self.sd[j])
                .sum::<f64>()
        })
    }
}

/// Generate the historical control population of `spec` (same generator group as the trial's
/// cohort, or all groups for a cohort file), simulate each patient's run-in and control-arm
/// outcome with independent streams, and fit the [`PrognosticModel`] (on all cores;
/// deterministic for any thread count). Errors name the failing historical patient.
pub fn fit_prognostic_model(spec: &TrialSpec) -> Result<PrognosticModel, String> {
    let PrognosticSpec {
        run_in_days,
        historical_n,
        historical_seed,
    } = spec.prognostic;
    let group = match &spec.cohort {
        crate::spec::CohortSource::Generate { group, .. } => *group,
        crate::spec::CohortSource::File { .. } => Group::All,
    };
    let hist = generate_cohort(SOURCE_SIMGLUCOSE_30, group, historical_n, historical_seed)
        .map_err(|e| format!("historical control population: {e}"))?;
    let runin = arm_scenario(
        spec,
        0,
        run_in_days,
        splitmix(spec.random_meals_seed ^ HIST_RUNIN_SALT),
        splitmix(spec.sensor_seed ^ HIST_RUNIN_SALT),
        true,
    );
    let outcome = arm_scenario(
        spec,
        0,
        spec.days,
        splitmix(spec.random_meals_seed ^ HIST_OUTCOME_SALT),
        splitmix(spec.sensor_seed ^ HIST_OUTCOME_SALT),
        spec.sensor_noise,
    );
    let rows: Vec<Result<(Features, Row), String>> = hist
        .patients
        .par_iter()
        .enumerate()
        .map(|(i, p)| {
            let (_, f) = simulate_row(p, &runin, i)
                .map_err(|e| format!("historical patient '{}' run-in: {e}", p.name))?;
            let (y, _) = simulate_row(p, &outcome, i)
                .map_err(|e| format!("historical patient '{}' outcome: {e}", p.name))?;
            Ok((f, y))
        })
        .collect();
    let mut x = Vec::with_capacity(rows.len());
    let mut y = Vec::with_capacity(rows.len());
    for r in rows {
        let (f, o) = r?;
        x.push(f);
        y.push(o);
    }
    PrognosticModel::fit(&x, &y).ok_or_else(|| "prognostic model: singular fit".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_relation() {
        // y_m = 2 + 3·f0 − f10 for every metric, exactly; ridge shrinks only slightly
        let x: Vec<Features> = (0..200)
            .map(|i| {
                let t = i as f64;
                std::array::from_fn(|j| ((t + 1.0) * (j as f64 + 1.3)).sin() * (j + 1) as f64)
            })
            .collect();
        let y: Vec<Row> = x.iter().map(|f| [2.0 + 3.0 * f[0] - f[10]; 14]).collect();
        let m = PrognosticModel::fit(&x, &y).unwrap();
        assert!(m.train_r2[0] > 0.99, "{:?}", m.train_r2);
        let f = x[17];
        let p = m.predict(&f);
        let truth = 2.0 + 3.0 * f[0] - f[10];
        assert!(
            (p[5] - truth).abs() < 0.05 * truth.abs().max(1.0),
            "{} vs {truth}",
            p[5]
        );
        assert!(PrognosticModel::fit(&x[..5], &y[..5]).is_none());
    }
}
