//! The T1D twin as a state-space model for `medtwin-infer`: UVA/Padova S2008 driven by the
//! patient's recorded inputs, with explicit process noise and a CGM measurement model.
//!
//! Process (per 1-minute step, on top of the deterministic model):
//! * **unrecorded meals**: with probability `unannounced_meal_rate_per_h / 60` per minute a
//!   meal of Exp(mean `unannounced_meal_mean_g`) grams is announced to the particle's meal
//!   model (people eat without logging; the filter decides from the CGM which particles ate);
//! * **glucose disturbance**: `Gp += N(0, (σ_G·Vg)²)` with σ_G in mg/dL per √min (exercise,
//!   stress, model error);
//! * **slowly varying parameters**: θ0 (insulin sensitivity) and θ1 (glucose production) follow
//!   random walks with SD `theta_rw_sd_per_sqrt_h` per √h (diurnal and day-to-day variation).
//!
//! Measurement: `CGM ~ N(Gs/Vg, σ²)`, `σ² = σ_abs² + (σ_rel·Gs/Vg)²` — CGM error grows with the
//! level (MARD-type error; Facchinetti, J Diabetes Sci Technol 10:1132, 2016).

use crate::inputs::InputSchedule;
use crate::prior::{apply_theta, N_THETA};
use medtwin_infer::{ProcessError, StateSpaceModel};
use medtwin_simulate::SolverOptions;
use medtwin_t1d::model::PatientSnapshot;
use medtwin_t1d::{PatientParams, VirtualPatient};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, StandardNormal};
use serde::{Deserialize, Serialize};

/// Noise settings of the twin's process and measurement models.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoiseSettings {
    /// CGM error SD floor, mg/dL.
    pub sensor_sd_abs_mg_dl: f64,
    /// CGM error SD proportional to the level, fraction.
    pub sensor_sd_rel: f64,
    /// Plasma glucose disturbance, mg/dL per √min.
    pub glucose_sd_mg_dl_per_sqrt_min: f64,
    /// Rate of unrecorded meals, per hour.
    pub unannounced_meal_rate_per_h: f64,
    /// Mean size of an unrecorded meal, g.
    pub unannounced_meal_mean_g: f64,
    /// Random-walk SD of θ0 (insulin sensitivity) and θ1 (glucose production), log units per √h.
    pub theta_rw_sd_per_sqrt_h: [f64; 2],
    /// Kernel jitter of θ after resampling, log units.
    pub jitter_sd: f64,
}

impl Default for NoiseSettings {
    fn default() -> Self {
        NoiseSettings {
            sensor_sd_abs_mg_dl: 8.0,
            sensor_sd_rel: 0.08,
            glucose_sd_mg_dl_per_sqrt_min: 0.6,
            unannounced_meal_rate_per_h: 0.05,
            unannounced_meal_mean_g: 20.0,
            theta_rw_sd_per_sqrt_h: [0.03, 0.03],
            jitter_sd: 0.005,
        }
    }
}

/// One particle: a virtual patient (state + meal bookkeeping + parameters) and its θ.
#[derive(Debug, Clone)]
pub struct TwinParticle {
    /// The simulated patient with θ applied.
    pub patient: VirtualPatient,
    /// Calibrated parameters (log scale).
    pub theta: [f64; N_THETA],
}

/// A particle in serialisable form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticleSnapshot {
    /// Dynamic state of the patient model.
    pub patient: PatientSnapshot,
    /// θ (log scale).
    pub theta: [f64; N_THETA],
}

impl TwinParticle {
    /// A particle of `base` with `theta` at `snapshot`'s state.
    pub fn new(base: &PatientParams, theta: [f64; N_THETA], snapshot: Option<&PatientSnapshot>) -> Self {
        let mut patient = VirtualPatient::new(apply_theta(base, &theta), solver_options());
        if let Some(s) = snapshot {
            patient.restore(s);
        }
        TwinParticle { patient, theta }
    }
    /// Serialisable form.
    pub fn snapshot(&self) -> ParticleSnapshot {
        ParticleSnapshot { patient: self.patient.snapshot(), theta: self.theta }
    }
    /// Subcutaneous glucose, mg/dL.
    pub fn glucose_mg_dl(&self) -> f64 {
        self.patient.sc_glucose_mg_dl()
    }
    fn set_theta(&mut self, theta: [f64; N_THETA]) {
        self.theta = theta;
        let p = self.patient.params_mut();
        p.vmx = theta[0].exp();
        p.kp1 = theta[1].exp();
        p.kabs = theta[2].exp();
    }
}

/// Solver tolerances for twin particles: looser than the verification setting (1e-8), since the
/// process noise dwarfs a 1e-6 relative integration error.
pub fn solver_options() -> SolverOptions {
    SolverOptions { rtol: 1e-6, atol: 1e-6, ..SolverOptions::default() }
}

/// A planned future (what-if) on top of the record: meals, boluses and a temporary basal rate,
/// at absolute engine minutes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Meals `(t_min, g)`.
    pub meals: Vec<(f64, f64)>,
    /// Boluses `(t_min, U)`.
    pub boluses: Vec<(f64, f64)>,
    /// Pump basal overrides `(t_min, U/h)` holding until the next.
    pub basal_rates: Vec<(f64, f64)>,
}

/// The twin's state-space model over a patient's inputs, with knowledge up to `known_until`.
pub struct T1dTwinModel<'a> {
    /// Base virtual patient (θ applied per particle).
    pub base: &'a PatientParams,
    /// The patient's inputs.
    pub schedule: &'a InputSchedule,
    /// Inputs after this time (minutes) are unknown (forecasting); `f64::INFINITY` when
    /// assimilating.
    pub known_until: f64,
    /// Planned future inputs (what-if), if any.
    pub plan: Option<&'a Plan>,
    /// Noise settings.
    pub noise: NoiseSettings,
    /// Initial distribution for `rinit`: θ mean, θ Cholesky factor (row-major lower), state.
    pub init_theta_mean: [f64; N_THETA],
    /// Lower Cholesky factor of the initial θ covariance, row-major `N_THETA × N_THETA`.
    pub init_theta_chol: Vec<f64>,
    /// Initial dynamic state (e.g. from the MAP trajectory).
    pub init_state: Option<PatientSnapshot>,
    /// Relative SD of the initial glucose states around `init_state`.
    pub init_glucose_rel_sd: f64,
}

impl T1dTwinModel<'_> {
    fn inputs(&self, t: f64) -> (f64, f64) {
        let mut carbs = self.schedule.carbs_g(t, self.known_until);
        let mut insulin = self.schedule.insulin_u_per_min(t, self.known_until);
        if let Some(plan) = self.plan {
            let in_min = |v: &[(f64, f64)]| v.iter().filter(|e| e.0 >= t && e.0 < t + 1.0).map(|e| e.1).sum::<f64>();
            carbs += in_min(&plan.meals);
            insulin += in_min(&plan.boluses);
            if let Some(r) = plan.basal_rates.iter().rev().find(|e| e.0 <= t) {
                insulin += r.1 / 60.0 - self.schedule.pump_basal_u_per_min(t, self.known_until);
            }
        }
        (carbs, insulin.max(0.0))
    }

    /// Measurement SD at glucose `g`, mg/dL.
    pub fn sensor_sd(&self, g: f64) -> f64 {
        (self.noise.sensor_sd_abs_mg_dl.powi(2) + (self.noise.sensor_sd_rel * g).powi(2)).sqrt()
    }
}

impl StateSpaceModel for T1dTwinModel<'_> {
    type Particle = TwinParticle;

    fn rinit(&self, _t0_min: f64, rng: &mut ChaCha8Rng) -> TwinParticle {
        let z: [f64; N_THETA] = std::array::from_fn(|_| rng.sample(StandardNormal));
        let mut theta = self.init_theta_mean;
        for i in 0..N_THETA {
            for j in 0..=i {
                theta[i] += self.init_theta_chol[i * N_THETA + j] * z[j];
            }
        }
        let mut p = TwinParticle::new(self.base, theta, self.init_state.as_ref());
        let e: f64 = rng.sample::<f64, _>(StandardNormal) * self.init_glucose_rel_sd;
        let s = p.patient.state_mut();
        for k in [3, 4, 12] {
            s[k] = (s[k] * (1.0 + e)).max(1.0);
        }
        p
    }

    fn rprocess(&self, x: &mut TwinParticle, t0_min: f64, t1_min: f64, rng: &mut ChaCha8Rng) -> Result<(), ProcessError> {
        let n = (t1_min - t0_min).round() as i64;
        let p_meal = self.noise.unannounced_meal_rate_per_h / 60.0;
        let meal = Exp::new(1.0 / self.noise.unannounced_meal_mean_g.max(1e-9)).map_err(|e| ProcessError(e.to_string()))?;
        let vg = x.patient.params().vg;
        let sg = self.noise.glucose_sd_mg_dl_per_sqrt_min * vg;
        let rw = self.noise.theta_rw_sd_per_sqrt_h.map(|s| s / 60f64.sqrt());
        for k in 0..n {
            let t = t0_min + k as f64;
            let (mut carbs, insulin) = self.inputs(t);
            carbs *= x.theta[3].exp();
            if p_meal > 0.0 && rng.random::<f64>() < p_meal {
                carbs += meal.sample(rng);
            }
            x.patient.step(carbs, insulin).map_err(|e| ProcessError(e.to_string()))?;
            let s = x.patient.state_mut();
            s[3] = (s[3] + sg * rng.sample::<f64, _>(StandardNormal)).max(1.0);
            if rw[0] > 0.0 || rw[1] > 0.0 {
                let mut th = x.theta;
                th[0] += rw[0] * rng.sample::<f64, _>(StandardNormal);
                th[1] += rw[1] * rng.sample::<f64, _>(StandardNormal);
                x.set_theta(th);
            }
        }
        Ok(())
    }

    fn dmeasure(&self, x: &TwinParticle, y: f64, _t_min: f64) -> f64 {
        let g = x.glucose_mg_dl();
        let sd = self.sensor_sd(g);
        -0.5 * ((y - g) / sd).powi(2) - sd.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
    }

    fn rmeasure(&self, x: &TwinParticle, _t_min: f64, rng: &mut ChaCha8Rng) -> f64 {
        let g = x.glucose_mg_dl();
        (g + self.sensor_sd(g) * rng.sample::<f64, _>(StandardNormal)).max(1.0)
    }

    fn jitter(&self, x: &mut TwinParticle, rng: &mut ChaCha8Rng) {
        if self.noise.jitter_sd > 0.0 {
            let mut th = x.theta;
            for v in th.iter_mut() {
                *v += self.noise.jitter_sd * rng.sample::<f64, _>(StandardNormal);
            }
            x.set_theta(th);
        }
    }
}
