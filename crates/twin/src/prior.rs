//! The population prior of the calibrated parameters, built from the 30 UVA/Padova virtual
//! patients bundled with medtwin (simglucose 0.2.11's adults and adolescents).
//!
//! Calibrated subset (log scale; chosen for identifiability from CGM + insulin + carbohydrate
//! records, as in Visentin et al., *Improving efficacy of inpatient insulin therapy…*, and
//! ReplayBG, Cappon et al. IEEE TBME 2023, which calibrate the insulin sensitivity, the glucose
//! production and the meal absorption of the same model):
//!
//! | θ | parameter | unit | meaning |
//! |---|---|---|---|
//! | θ0 | `Vmx` | mg/kg/min per pmol/L | insulin sensitivity of peripheral glucose utilisation |
//! | θ1 | `kp1` | mg/kg/min | endogenous glucose production at zero glucose and insulin |
//! | θ2 | `kabs` | 1/min | intestinal glucose absorption rate |
//! | θ3 | carb factor | 1 | ratio of absorbed to recorded carbohydrate (carb-counting error) |
//!
//! The prior is centred at the *base patient*, the virtual adult closest to the adult
//! population's median in the standardised log-space of (Vmx, kp1, kabs), so the prior mean is a
//! self-consistent patient at steady state; its spread is the log-SD of each parameter over the
//! 20 adults and adolescents. The carb factor has no population spread in the simulator (f = 0.9
//! for all); its prior is log-normal with SD 0.3 (≈ ±30 % carb-counting error; Brazeau et al.,
//! J Acad Nutr Diet 113:617, 2013 report mean absolute errors of 15–20 g per meal).
//!
//! Unknown body weight: the base patient's weight is used to convert insulin doses (U) to the
//! model's pmol/kg; a mismatch is absorbed by the calibrated insulin sensitivity.

use medtwin_t1d::PatientParams;
use serde::{Deserialize, Serialize};

/// Number of calibrated parameters.
pub const N_THETA: usize = 4;
/// Names of the calibrated parameters.
pub const THETA_NAMES: [&str; N_THETA] = ["Vmx", "kp1", "kabs", "carb_factor"];
/// Units of the calibrated parameters.
pub const THETA_UNITS: [&str; N_THETA] = ["mg/kg/min per pmol/L", "mg/kg/min", "1/min", "1"];
/// Meanings of the calibrated parameters.
pub const THETA_DESCRIPTIONS: [&str; N_THETA] = [
    "insulin sensitivity of glucose utilisation",
    "endogenous glucose production (zero glucose/insulin)",
    "intestinal absorption rate",
    "absorbed / recorded carbohydrate",
];
/// Prior log-SD of the carb factor.
pub const CARB_FACTOR_LOG_SD: f64 = 0.3;

/// Gaussian prior on θ (log parameters) with independent components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prior {
    /// Name of the base virtual patient.
    pub base_patient: String,
    /// Prior mean of θ (log scale).
    pub mean: [f64; N_THETA],
    /// Prior SD of θ (log scale).
    pub sd: [f64; N_THETA],
    /// Population values of θ (one per adult/adolescent virtual patient), for plots.
    pub population: Vec<[f64; N_THETA]>,
}

/// θ of a virtual patient (carb factor 1).
pub fn theta_of(p: &PatientParams) -> [f64; N_THETA] {
    [p.vmx.ln(), p.kp1.ln(), p.kabs.ln(), 0.0]
}

/// Apply θ to a copy of `base`.
pub fn apply_theta(base: &PatientParams, theta: &[f64; N_THETA]) -> PatientParams {
    let mut p = base.clone();
    p.vmx = theta[0].exp();
    p.kp1 = theta[1].exp();
    p.kabs = theta[2].exp();
    p
}

impl Prior {
    /// The population prior (see module docs). Errors only if the bundled table is broken.
    pub fn population() -> Result<Prior, medtwin_t1d::params::ParamsError> {
        let all = medtwin_t1d::all_patients()?;
        let pop: Vec<&PatientParams> = all.iter().filter(|p| p.group() != "child").collect();
        let thetas: Vec<[f64; N_THETA]> = pop.iter().map(|p| theta_of(p)).collect();
        let n = thetas.len() as f64;
        let mut mean = [0.0; N_THETA];
        let mut sd = [0.0; N_THETA];
        for k in 0..3 {
            mean[k] = thetas.iter().map(|t| t[k]).sum::<f64>() / n;
            sd[k] =
                (thetas.iter().map(|t| (t[k] - mean[k]).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        }
        sd[3] = CARB_FACTOR_LOG_SD;
        // base = adult medoid around the adult median
        let adults: Vec<&PatientParams> = pop
            .iter()
            .copied()
            .filter(|p| p.group() == "adult")
            .collect();
        let median = |k: usize| {
            let mut v: Vec<f64> = adults.iter().map(|p| theta_of(p)[k]).collect();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        let med = [median(0), median(1), median(2)];
        let base = adults
            .iter()
            .min_by(|a, b| {
                let d = |p: &PatientParams| {
                    let t = theta_of(p);
                    (0..3)
                        .map(|k| ((t[k] - med[k]) / sd[k]).powi(2))
                        .sum::<f64>()
                };
                d(a).total_cmp(&d(b))
            })
            .ok_or_else(|| {
                medtwin_t1d::params::ParamsError::Malformed("no adult patients".into())
            })?;
        Ok(Prior {
            base_patient: base.name.clone(),
            mean: theta_of(base),
            sd,
            population: thetas,
        })
    }

    /// The base patient's parameters.
    pub fn base(&self) -> Result<PatientParams, medtwin_t1d::params::ParamsError> {
        medtwin_t1d::patient(&self.base_patient)
    }

    /// Plausible box for θ: the population range widened by one log unit on each side
    /// (the carb factor: ×0.3 to ×2). Particles are kept inside it.
    pub fn bounds(&self) -> [(f64, f64); N_THETA] {
        std::array::from_fn(|k| {
            if k == 3 {
                ((0.3f64).ln(), (2.0f64).ln())
            } else {
                let lo = self
                    .population
                    .iter()
                    .map(|t| t[k])
                    .fold(f64::INFINITY, f64::min);
                let hi = self
                    .population
                    .iter()
                    .map(|t| t[k])
                    .fold(f64::NEG_INFINITY, f64::max);
                (lo - 1.0, hi + 1.0)
            }
        })
    }

    /// Clamp θ into [`Prior::bounds`].
    pub fn clamp(&self, theta: &mut [f64; N_THETA]) {
        for (v, (lo, hi)) in theta.iter_mut().zip(self.bounds()) {
            *v = v.clamp(lo, hi);
        }
    }

    /// Negative log prior density of θ (up to a constant).
    pub fn neg_log_density(&self, theta: &[f64]) -> f64 {
        (0..N_THETA)
            .map(|k| 0.5 * ((theta[k] - self.mean[k]) / self.sd[k]).powi(2))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn prior_is_centred_on_an_adult_with_population_spread() {
        let p = Prior::population().unwrap();
        assert!(p.base_patient.starts_with("adult#"));
        assert_eq!(p.population.len(), 20);
        for k in 0..3 {
            assert!(p.sd[k] > 0.01 && p.sd[k] < 2.0, "sd {k} = {}", p.sd[k]);
        }
        let b = p.base().unwrap();
        let t = theta_of(&b);
        let back = apply_theta(&b, &t);
        for (x, y) in [(back.vmx, b.vmx), (back.kp1, b.kp1), (back.kabs, b.kabs)] {
            assert!((x - y).abs() <= 1e-12 * y.abs(), "{x} vs {y}");
        }
        let bounds = p.bounds();
        for (b, m) in bounds.iter().zip(p.mean) {
            assert!(b.0 < m && m < b.1);
        }
    }
}
