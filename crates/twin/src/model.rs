//! The T1D twin as a state-space model for `medtwin-infer`: UVA/Padova S2008 driven by the
//! patient's recorded inputs, with explicit process noise and a CGM measurement model.
//!
//! Process (per 1-minute step, on top of the deterministic model):
//! * **unrecorded meals**: with probability `unannounced_meal_rate_per_h / 60` per minute a
//!   meal of Exp(mean `unannounced_meal_mean_g`) grams is announced to the particle's meal
//!   model (people eat without logging; the filter decides from the CGM which particles ate);
//! * **glucose disturbance**: an Ornstein–Uhlenbeck rate `D` (mg/kg/min) added to plasma
//!   glucose after each minute (`Gp += D·1 min`), with correlation time τ and stationary SD σ_D
//!   — the unmeasured-disturbance state of model-predictive artificial-pancreas controllers
//!   (e.g. Hovorka et al., Physiol Meas 25:905, 2004): unlogged snacks, exercise, stress and
//!   model error appear as a persistent, decaying trend that forecasts carry forward;
//! * **glucose noise**: `Gp += N(0, (σ_G·Vg)²)` per minute, σ_G in mg/dL per √min;
//! * **slowly varying parameters**: θ0 (insulin sensitivity) and θ1 (glucose production) follow
//!   random walks with SD `theta_rw_sd_per_sqrt_h` per √h (diurnal and day-to-day variation).
//!
//! Measurement: `CGM ~ N(Gs/Vg + B, σ²)`, `σ² = σ_abs² + (σ_rel·Gs/Vg)²` — white error that
//! grows with the level (MARD-type error) on top of a **sensor bias** `B` (mg/dL), an
//! Ornstein–Uhlenbeck process (stationary SD σ_B, correlation time τ_B): CGM error is strongly
//! autocorrelated (Facchinetti et al., IEEE TBME 61:620, 2014; Breton & Kovatchev 2008 model it
//! as an AR process, as simglucose's sensor does), and a bias state lets the filter separate
//! sensor drift from physiology.

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
    /// Plasma glucose white noise, mg/dL per √min.
    pub glucose_sd_mg_dl_per_sqrt_min: f64,
    /// Stationary SD of the disturbance rate D, mg/kg/min.
    pub disturbance_sd_mg_kg_min: f64,
    /// Correlation time of D, minutes.
    pub disturbance_tau_min: f64,
    /// Stationary SD of the sensor bias B, mg/dL.
    pub sensor_bias_sd_mg_dl: f64,
    /// Correlation time of B, minutes.
    pub sensor_bias_tau_min: f64,
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
            sensor_sd_abs_mg_dl: 4.0,
            sensor_sd_rel: 0.04,
            glucose_sd_mg_dl_per_sqrt_min: 0.3,
            disturbance_sd_mg_kg_min: 3.0,
            disturbance_tau_min: 30.0,
            sensor_bias_sd_mg_dl: 5.0,
            sensor_bias_tau_min: 60.0,
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
    /// Disturbance rate D, mg/kg/min.
    pub disturbance: f64,
    /// Sensor bias B, mg/dL.
    pub sensor_bias: f64,
}

/// A particle in serialisable form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticleSnapshot {
    /// Dynamic state of the patient model.
    pub patient: PatientSnapshot,
    /// θ (log scale).
    pub theta: [f64; N_THETA],
    /// Disturbance rate D, mg/kg/min.
    #[serde(default)]
    pub disturbance: f64,
    /// Sensor bias B, mg/dL.
    #[serde(default)]
    pub sensor_bias: f64,
}

impl TwinParticle {
    /// A particle of `base` with `theta` at `snapshot`'s state.
    pub fn new(
        base: &PatientParams,
        theta: [f64; N_THETA],
        snapshot: Option<&PatientSnapshot>,
    ) -> Self {
        let mut patient = VirtualPatient::new(apply_theta(base, &theta), solver_options());
        if let Some(s) = snapshot {
            patient.restore(s);
        }
        TwinParticle {
            patient,
            theta,
            disturbance: 0.0,
            sensor_bias: 0.0,
        }
    }
    /// Serialisable form.
    pub fn snapshot(&self) -> ParticleSnapshot {
        ParticleSnapshot {
            patient: self.patient.snapshot(),
            theta: self.theta,
            disturbance: self.disturbance,
            sensor_bias: self.sensor_bias,
        }
    }
    /// Subcutaneous glucose, mg/dL.
    pub fn glucose_mg_dl(&self) -> f64 {
        self.patient.sc_glucose_mg_dl()
    }
    /// Expected CGM reading: subcutaneous glucose plus sensor bias, mg/dL.
    pub fn expected_cgm_mg_dl(&self) -> f64 {
        self.patient.sc_glucose_mg_dl() + self.sensor_bias
    }
    fn set_theta(&mut self, mut theta: [f64; N_THETA], bounds: &[(f64, f64); N_THETA]) {
        for (v, (lo, hi)) in theta.iter_mut().zip(bounds) {
            *v = v.clamp(*lo, *hi);
        }
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
    SolverOptions {
        rtol: 1e-6,
        atol: 1e-6,
        ..SolverOptions::default()
    }
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

impl Plan {
    /// Whether the plan changes nothing (no meal, bolus or basal override): the same question
    /// as no plan.
    pub fn is_empty(&self) -> bool {
        self.meals.is_empty() && self.boluses.is_empty() && self.basal_rates.is_empty()
    }
}

/// A plan as a person writes it (the CLI's plan TOML, the Python package's dict or TOML):
/// `[[meal]] at_min, carbs_g` (g), `[[bolus]] at_min, units` (U), `[[basal]] at_min, u_per_h`
/// (temporary pump basal, U/h, until the next entry); times in minutes after the twin's time.
/// Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelativePlan {
    /// Meals.
    #[serde(default)]
    pub meal: Vec<PlannedMeal>,
    /// Boluses.
    #[serde(default)]
    pub bolus: Vec<PlannedBolus>,
    /// Temporary basal rates.
    #[serde(default)]
    pub basal: Vec<PlannedBasal>,
}

/// A planned meal of a [`RelativePlan`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedMeal {
    /// Minutes after the twin's time.
    pub at_min: f64,
    /// Carbohydrate, g.
    pub carbs_g: f64,
}

/// A planned bolus of a [`RelativePlan`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedBolus {
    /// Minutes after the twin's time.
    pub at_min: f64,
    /// Insulin, U.
    pub units: f64,
}

/// A planned temporary basal rate of a [`RelativePlan`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedBasal {
    /// Minutes after the twin's time.
    pub at_min: f64,
    /// Pump basal rate, U/h.
    pub u_per_h: f64,
}

impl RelativePlan {
    /// The [`Plan`] at absolute engine minutes for a twin at `t0_min` (times rounded to the
    /// minute; basal changes sorted). Errors name the entry and the value: a time outside
    /// `[0, horizon_min]` minutes, or an amount that is negative or not finite.
    pub fn to_plan(&self, t0_min: f64, horizon_min: u32) -> Result<Plan, String> {
        let check = |what: String, at: f64, v: f64| -> Result<(), String> {
            if !at.is_finite() || at < 0.0 || at > horizon_min as f64 {
                return Err(format!(
                    "{what}.at_min = {at} is outside the horizon [0, {horizon_min}] min"
                ));
            }
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{what} amount {v} must be finite and >= 0"));
            }
            Ok(())
        };
        let mut plan = Plan::default();
        for (i, m) in self.meal.iter().enumerate() {
            check(format!("meal[{i}]"), m.at_min, m.carbs_g)?;
            plan.meals.push((t0_min + m.at_min.round(), m.carbs_g));
        }
        for (i, b) in self.bolus.iter().enumerate() {
            check(format!("bolus[{i}]"), b.at_min, b.units)?;
            plan.boluses.push((t0_min + b.at_min.round(), b.units));
        }
        for (i, b) in self.basal.iter().enumerate() {
            check(format!("basal[{i}]"), b.at_min, b.u_per_h)?;
            plan.basal_rates
                .push((t0_min + b.at_min.round(), b.u_per_h));
        }
        plan.basal_rates.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(plan)
    }
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
    /// Box constraints on θ (from [`crate::prior::Prior::bounds`]).
    pub theta_bounds: [(f64, f64); N_THETA],
    /// Scale applied to every insulin dose ([`crate::calibrate::insulin_scale`]).
    pub insulin_scale: f64,
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
            let in_min = |v: &[(f64, f64)]| {
                v.iter()
                    .filter(|e| e.0 >= t && e.0 < t + 1.0)
                    .map(|e| e.1)
                    .sum::<f64>()
            };
            carbs += in_min(&plan.meals);
            insulin += in_min(&plan.boluses);
            if let Some(r) = plan.basal_rates.iter().rev().find(|e| e.0 <= t) {
                insulin += r.1 / 60.0 - self.schedule.pump_basal_u_per_min(t, self.known_until);
            }
        }
        (carbs, insulin.max(0.0) * self.insulin_scale)
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
        for (i, th) in theta.iter_mut().enumerate() {
            *th += (0..=i)
                .map(|j| self.init_theta_chol[i * N_THETA + j] * z[j])
                .sum::<f64>();
        }
        for (v, (lo, hi)) in theta.iter_mut().zip(&self.theta_bounds) {
            *v = v.clamp(*lo, *hi);
        }
        let mut p = TwinParticle::new(self.base, theta, self.init_state.as_ref());
        p.sensor_bias = self.noise.sensor_bias_sd_mg_dl * rng.sample::<f64, _>(StandardNormal);
        let e: f64 = rng.sample::<f64, _>(StandardNormal) * self.init_glucose_rel_sd;
        let s = p.patient.state_mut();
        for k in [3, 4, 12] {
            s[k] = (s[k] * (1.0 + e)).max(1.0);
        }
        p
    }

    fn rprocess(
        &self,
        x: &mut TwinParticle,
        t0_min: f64,
        t1_min: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), ProcessError> {
        let n = (t1_min - t0_min).round() as i64;
        let p_meal = self.noise.unannounced_meal_rate_per_h / 60.0;
        let meal = Exp::new(1.0 / self.noise.unannounced_meal_mean_g.max(1e-9))
            .map_err(|e| ProcessError(e.to_string()))?;
        let vg = x.patient.params().vg;
        let sg = self.noise.glucose_sd_mg_dl_per_sqrt_min * vg;
        let rw = self.noise.theta_rw_sd_per_sqrt_h.map(|s| s / 60f64.sqrt());
        let tau = self.noise.disturbance_tau_min.max(1.0);
        let phi = (-1.0 / tau).exp();
        let sd_innov = self.noise.disturbance_sd_mg_kg_min * (1.0 - phi * phi).sqrt();
        let phi_b = (-1.0 / self.noise.sensor_bias_tau_min.max(1.0)).exp();
        let sd_b = self.noise.sensor_bias_sd_mg_dl * (1.0 - phi_b * phi_b).sqrt();
        for k in 0..n {
            let t = t0_min + k as f64;
            let (mut carbs, insulin) = self.inputs(t);
            carbs *= x.theta[3].exp();
            if p_meal > 0.0 && rng.random::<f64>() < p_meal {
                carbs += meal.sample(rng);
            }
            x.patient
                .step(carbs, insulin)
                .map_err(|e| ProcessError(e.to_string()))?;
            let s = x.patient.state_mut();
            s[3] = (s[3] + x.disturbance + sg * rng.sample::<f64, _>(StandardNormal)).max(1.0);
            x.disturbance = phi * x.disturbance + sd_innov * rng.sample::<f64, _>(StandardNormal);
            x.sensor_bias = phi_b * x.sensor_bias + sd_b * rng.sample::<f64, _>(StandardNormal);
            if rw[0] > 0.0 || rw[1] > 0.0 {
                let mut th = x.theta;
                th[0] += rw[0] * rng.sample::<f64, _>(StandardNormal);
                th[1] += rw[1] * rng.sample::<f64, _>(StandardNormal);
                x.set_theta(th, &self.theta_bounds);
            }
        }
        Ok(())
    }

    fn dmeasure(&self, x: &TwinParticle, y: f64, _t_min: f64) -> f64 {
        let g = x.glucose_mg_dl();
        let sd = self.sensor_sd(g);
        -0.5 * ((y - g - x.sensor_bias) / sd).powi(2)
            - sd.ln()
            - 0.5 * (2.0 * std::f64::consts::PI).ln()
    }

    fn rmeasure(&self, x: &TwinParticle, _t_min: f64, rng: &mut ChaCha8Rng) -> f64 {
        let g = x.glucose_mg_dl();
        (g + x.sensor_bias + self.sensor_sd(g) * rng.sample::<f64, _>(StandardNormal)).max(1.0)
    }

    fn jitter(&self, x: &mut TwinParticle, rng: &mut ChaCha8Rng) {
        if self.noise.jitter_sd > 0.0 {
            let mut th = x.theta;
            for v in th.iter_mut() {
                *v += self.noise.jitter_sd * rng.sample::<f64, _>(StandardNormal);
            }
            x.set_theta(th, &self.theta_bounds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_plans_become_absolute_and_bad_entries_are_named() {
        let p: RelativePlan = serde_json::from_str(
            r#"{"meal": [{"at_min": 10.4, "carbs_g": 50}], "bolus": [{"at_min": 0, "units": 5}],
                "basal": [{"at_min": 90, "u_per_h": 0.5}, {"at_min": 30, "u_per_h": 0}]}"#,
        )
        .unwrap();
        let plan = p.to_plan(1000.0, 120).unwrap();
        assert_eq!(plan.meals, vec![(1010.0, 50.0)]);
        assert_eq!(plan.boluses, vec![(1000.0, 5.0)]);
        assert_eq!(plan.basal_rates, vec![(1030.0, 0.0), (1090.0, 0.5)]);
        let late = RelativePlan {
            bolus: vec![PlannedBolus {
                at_min: 121.0,
                units: 1.0,
            }],
            ..RelativePlan::default()
        };
        let e = late.to_plan(0.0, 120).unwrap_err();
        assert_eq!(
            e,
            "bolus[0].at_min = 121 is outside the horizon [0, 120] min"
        );
        let negative = RelativePlan {
            meal: vec![PlannedMeal {
                at_min: 0.0,
                carbs_g: -5.0,
            }],
            ..RelativePlan::default()
        };
        assert!(negative
            .to_plan(0.0, 120)
            .unwrap_err()
            .contains("meal[0] amount -5"));
        assert!(serde_json::from_str::<RelativePlan>(r#"{"meals": []}"#).is_err());
    }
}
