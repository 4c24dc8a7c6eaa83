//! The sepsis twin, the worked example of the generic layer: the reduced acute inflammatory
//! response model of Reynolds et al. 2006 (J Theor Biol 242:220–236; BioModels
//! BIOMD0000000714; time in hours) with a patient's initial pathogen load `P` and pathogen
//! growth rate `k_pg` estimated from noisy observations of the first hours, and the outcome at
//! 1000 h (healthy / aseptic death / septic death, the paper's Figs. 2–3) forecast with its
//! probability.
//!
//! The spec (priors, noise, outcome rules) is `tests/data/sepsis/spec.toml`; the SBML file is
//! the BioModels copy in `tests/data/biomodels/`.

use crate::data::Measurement;
use crate::model::{Plan, SbmlTwinModel, TwinModel};
use crate::spec::CalibrationSpec;
use crate::twin::{ModelSource, Twin};
use crate::TwinError;
use medtwin_infer::stream_rng;
use rand::Rng;
use rand_distr::StandardNormal;

/// Reynolds et al. 2006 as SBML (BioModels BIOMD0000000714, CC0).
pub const REYNOLDS_2006_SBML: &str =
    include_str!("../../../tests/data/biomodels/BIOMD0000000714.xml");

/// The sepsis twin's calibration spec (TOML).
pub const SPEC_TOML: &str = include_str!("../../../tests/data/sepsis/spec.toml");

/// The model source of the sepsis twin (time unit hours).
pub fn source() -> ModelSource {
    ModelSource::Sbml {
        text: REYNOLDS_2006_SBML.to_string(),
        time_unit: "h".into(),
    }
}

/// The sepsis twin's model.
pub fn model() -> Result<SbmlTwinModel, TwinError> {
    SbmlTwinModel::from_sbml(REYNOLDS_2006_SBML, "h")
}

/// The sepsis twin's calibration spec.
pub fn spec() -> Result<CalibrationSpec, TwinError> {
    CalibrationSpec::from_toml(SPEC_TOML, "tests/data/sepsis/spec.toml")
}

/// Outcome class at the spec's outcome time of a patient with growth rate `k_pg` and initial
/// pathogen `p0` under `plan`.
pub fn outcome_of(k_pg: f64, p0: f64, plan: &Plan) -> Result<String, TwinError> {
    let m = model()?;
    let spec = spec()?;
    let out = spec
        .outcomes
        .as_ref()
        .ok_or_else(|| TwinError::Spec("the sepsis spec has no outcomes".into()))?;
    let ids = out.observables();
    let r = m.simulate(&[("k_pg", k_pg), ("P", p0)], plan, &[out.at_time], &ids)?;
    let row = &r[0];
    Ok(out
        .classify(&|id| {
            ids.iter()
                .position(|s| s == id)
                .map_or(f64::NAN, |j| row[j])
        })
        .to_string())
}

/// The initial pathogen load at which the untreated outcome at `k_pg` changes from
/// "healthy" (below) to another class (above), by bisection on `[lo, hi]` to `tol`.
///
/// Errors: [`TwinError::Spec`] when the class does not change across the bracket.
pub fn outcome_threshold(k_pg: f64, lo: f64, hi: f64, tol: f64) -> Result<f64, TwinError> {
    let healthy = |p0: f64| -> Result<bool, TwinError> {
        Ok(outcome_of(k_pg, p0, &Plan::default())? == "healthy")
    };
    let (mut a, mut b) = (lo, hi);
    if !healthy(a)? || healthy(b)? {
        return Err(TwinError::Spec(format!(
            "k_pg {k_pg}: the outcome does not change from healthy to another class on [{lo}, {hi}]"
        )));
    }
    while b - a > tol {
        let m = 0.5 * (a + b);
        if healthy(m)? {
            a = m;
        } else {
            b = m;
        }
    }
    Ok(0.5 * (a + b))
}

/// A hidden "true" patient of the twin experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Label.
    pub name: String,
    /// True pathogen growth rate (1/h).
    pub k_pg: f64,
    /// True initial pathogen load.
    pub p0: f64,
}

impl Scenario {
    /// Patients on each side of the paper's thresholds: two healthy, one aseptic death, two
    /// septic deaths.
    pub fn standard() -> Vec<Scenario> {
        [
            ("low virulence, P0 0.8 (healthy)", 0.3, 0.8),
            ("low virulence, P0 1.3 (aseptic)", 0.3, 1.3),
            ("high virulence, P0 0.25 (healthy)", 0.6, 0.25),
            ("high virulence, P0 0.5 (septic)", 0.6, 0.5),
            ("mid virulence, P0 0.7", 0.45, 0.7),
        ]
        .into_iter()
        .map(|(n, k, p)| Scenario {
            name: n.into(),
            k_pg: k,
            p0: p,
        })
        .collect()
    }
}

/// Noisy observations of the spec's observables every `every_h` hours from `every_h` to
/// `until_h` for the hidden patient `sc`, drawn from the spec's noise models with `seed`.
pub fn observations(
    sc: &Scenario,
    until_h: f64,
    every_h: f64,
    seed: u64,
) -> Result<Vec<Measurement>, TwinError> {
    let m = model()?;
    let spec = spec()?;
    let ids: Vec<String> = spec.observables.iter().map(|o| o.id.clone()).collect();
    let n = (until_h / every_h).floor() as usize;
    let times: Vec<f64> = (1..=n).map(|k| k as f64 * every_h).collect();
    let truth = m.simulate(
        &[("k_pg", sc.k_pg), ("P", sc.p0)],
        &Plan::default(),
        &times,
        &ids,
    )?;
    let mut rng = stream_rng(seed, 0);
    let mut out = Vec::new();
    for (k, &t) in times.iter().enumerate() {
        for (j, o) in spec.observables.iter().enumerate() {
            let e: f64 = rng.sample(StandardNormal);
            out.push(Measurement {
                observable: o.id.clone(),
                time: t,
                value: o.noise.draw(truth[k][j], e),
                sigma: None,
            });
        }
    }
    Ok(out)
}

/// Result of the twin experiment for one hidden patient.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentResult {
    /// The true patient's outcome class.
    pub true_class: String,
    /// Per observation window (hours of data): P(true class) and the 80 % predictive width
    /// of D at 48 h.
    pub by_window: Vec<(f64, f64, f64)>,
}

/// Calibrate the sepsis twin on 3-hourly observations of the first `windows[i]` hours of the
/// hidden patient `sc` and read P(true class) from each forecast.
pub fn experiment(sc: &Scenario, windows: &[f64]) -> Result<ExperimentResult, TwinError> {
    let spec = spec()?;
    let true_class = outcome_of(sc.k_pg, sc.p0, &Plan::default())?;
    let last = windows.iter().copied().fold(0.0, f64::max);
    let all = observations(sc, last, 3.0, 11)?;
    let mut by_window = Vec::new();
    let mut twin: Option<Twin> = None;
    let mut seen = 0.0;
    for &w in windows {
        let new: Vec<Measurement> = all
            .iter()
            .filter(|m| m.time > seen && m.time <= w)
            .cloned()
            .collect();
        match twin.as_mut() {
            None => {
                twin = Some(Twin::fit(source(), spec.clone(), Plan::default(), new)?);
            }
            Some(t) => t.update(&new, &Plan::default())?,
        }
        seen = w;
        let t = twin.as_ref().expect("fitted above");
        let pred = t.forecast(&Plan::default(), &[48.0])?;
        let d = pred.of("D").map(|o| o.bands[0]);
        by_window.push((
            w,
            pred.probability(&true_class),
            d.map_or(f64::NAN, |b| b.hi80 - b.lo80),
        ));
    }
    Ok(ExperimentResult {
        true_class,
        by_window,
    })
}
