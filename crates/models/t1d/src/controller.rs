//! Controllers with simglucose 0.2.11's exact timing semantics: called once per sensor sample
//! with the observation averaged over the last environment step, action held until the next
//! call (shared NOTES.md §3.8–3.9).

use crate::mpc::{ClinicalSettings, MpcController, MpcSettings};
use crate::params::PatientParams;
use serde::{Deserialize, Serialize};

/// What the controller sees at each call (simglucose `Observation` + `info`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControllerInput {
    /// CGM averaged over the last environment step's 1-min mini-steps, mg/dL.
    pub cgm_mg_dl: f64,
    /// Announced meal averaged over the last environment step, g/min.
    pub meal_g_per_min: f64,
    /// Environment step = sensor sample time, min.
    pub sample_time_min: f64,
}

/// A requested insulin action, held for one environment step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ControlAction {
    /// Basal rate, U/min.
    pub basal_u_per_min: f64,
    /// Bolus rate, U/min.
    pub bolus_u_per_min: f64,
}

/// Controller configuration as written in a scenario's `[controller]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum ControllerSpec {
    /// simglucose `BBController`: basal `u2ss·BW/6000`; at an announced meal a bolus
    /// `meal·st/CR + (CGM > 150)·(CGM − target)/CF` U delivered over the next step.
    #[serde(rename = "basal-bolus")]
    BasalBolus {
        /// Correction target, mg/dL (default 140).
        #[serde(default = "default_target")]
        target_mg_dl: f64,
    },
    /// simglucose `PIDController`: `u = P·(bg − target) + I·∫(bg − target)dt + D·(bg − prev)/st`
    /// returned as basal (U/min). Defaults are those of simglucose's example script
    /// (P = 1e-3, I = 1e-5, D = 1e-3, target 140); simglucose's class defaults (P = 1) deliver
    /// 1 U/min per mg/dL and are not useful.
    #[serde(rename = "pid")]
    Pid {
        /// Proportional gain, U/min per mg/dL.
        #[serde(default = "default_p")]
        p: f64,
        /// Integral gain, U/min per (mg/dL·min).
        #[serde(default = "default_i")]
        i: f64,
        /// Derivative gain, U/min per (mg/dL/min).
        #[serde(default = "default_d")]
        d: f64,
        /// Target, mg/dL.
        #[serde(default = "default_target")]
        target_mg_dl: f64,
    },
    /// No controller: insulin comes only from the scenario's bolus and basal events.
    #[serde(rename = "open-loop")]
    OpenLoop,
    /// Model predictive control with announced meals ([`crate::mpc`]; Magni et al. 2007, JDST
    /// 1:804): CGM-only state estimation on a population-average internal model, receding-horizon
    /// optimisation of meal-bolus fraction and basal multipliers, hard safety constraints.
    #[serde(rename = "mpc")]
    Mpc {
        /// Centre of the zero-cost zone (target ± 10), mg/dL (default 130).
        #[serde(default = "default_mpc_target")]
        target_mg_dl: f64,
        /// Prediction horizon, min (default 240).
        #[serde(default = "default_mpc_horizon")]
        horizon_min: f64,
        /// Suspend threshold on CGM and predicted glucose, mg/dL (default 80).
        #[serde(default = "default_mpc_suspend")]
        suspend_mg_dl: f64,
    },
}

fn default_mpc_target() -> f64 {
    MpcSettings::default().target_mg_dl
}
fn default_mpc_horizon() -> f64 {
    MpcSettings::default().horizon_min
}
fn default_mpc_suspend() -> f64 {
    MpcSettings::default().suspend_mg_dl
}

impl ControllerSpec {
    /// The default MPC configuration.
    pub fn mpc_default() -> Self {
        let d = MpcSettings::default();
        ControllerSpec::Mpc {
            target_mg_dl: d.target_mg_dl,
            horizon_min: d.horizon_min,
            suspend_mg_dl: d.suspend_mg_dl,
        }
    }
}

fn default_target() -> f64 {
    140.0
}
fn default_p() -> f64 {
    1e-3
}
fn default_i() -> f64 {
    1e-5
}
fn default_d() -> f64 {
    1e-3
}

impl Default for ControllerSpec {
    fn default() -> Self {
        ControllerSpec::BasalBolus {
            target_mg_dl: 140.0,
        }
    }
}

/// A running controller with its internal state.
#[derive(Debug, Clone)]
pub enum Controller {
    /// Basal-bolus, with the patient's basal rate (U/min), CR (g/U) and CF (mg/dL/U).
    BasalBolus {
        /// Target, mg/dL.
        target_mg_dl: f64,
        /// Basal, U/min.
        basal_u_per_min: f64,
        /// Carbohydrate ratio, g/U.
        cr_g_per_u: f64,
        /// Correction factor, mg/dL/U.
        cf_mg_dl_per_u: f64,
    },
    /// PID with its integral and previous-value memory.
    Pid {
        /// Gains and target.
        p: f64,
        /// Integral gain.
        i: f64,
        /// Derivative gain.
        d: f64,
        /// Target, mg/dL.
        target_mg_dl: f64,
        /// ∫(bg − target) dt, mg/dL·min.
        integrated: f64,
        /// Previous CGM, mg/dL (starts at 0 as in simglucose).
        prev: f64,
    },
    /// Open loop: always returns zero.
    OpenLoop,
    /// Model predictive control (boxed: it carries its estimator and internal model).
    Mpc(Box<MpcController>),
}

impl Controller {
    /// Instantiate `spec` for `patient` (basal-bolus reads its u2ss, BW, CR and CF; MPC receives
    /// only the [`ClinicalSettings`]: programmed basal, CR, CF and TDI).
    pub fn new(spec: &ControllerSpec, patient: &PatientParams) -> Self {
        match *spec {
            ControllerSpec::BasalBolus { target_mg_dl } => Controller::BasalBolus {
                target_mg_dl,
                basal_u_per_min: patient.basal_u_per_min(),
                cr_g_per_u: patient.cr_g_per_u,
                cf_mg_dl_per_u: patient.cf_mg_dl_per_u,
            },
            ControllerSpec::Pid {
                p,
                i,
                d,
                target_mg_dl,
            } => Controller::Pid {
                p,
                i,
                d,
                target_mg_dl,
                integrated: 0.0,
                prev: 0.0,
            },
            ControllerSpec::OpenLoop => Controller::OpenLoop,
            ControllerSpec::Mpc {
                target_mg_dl,
                horizon_min,
                suspend_mg_dl,
            } => Controller::Mpc(Box::new(MpcController::new(
                MpcSettings {
                    target_mg_dl,
                    horizon_min,
                    suspend_mg_dl,
                },
                ClinicalSettings::from_patient(patient),
            ))),
        }
    }

    /// The action for the next environment step.
    pub fn policy(&mut self, obs: &ControllerInput) -> ControlAction {
        match self {
            Controller::BasalBolus {
                target_mg_dl,
                basal_u_per_min,
                cr_g_per_u,
                cf_mg_dl_per_u,
            } => {
                let st = obs.sample_time_min;
                let bolus = if obs.meal_g_per_min > 0.0 {
                    let corr = if obs.cgm_mg_dl > 150.0 {
                        (obs.cgm_mg_dl - *target_mg_dl) / *cf_mg_dl_per_u
                    } else {
                        0.0
                    };
                    (obs.meal_g_per_min * st / *cr_g_per_u + corr) / st
                } else {
                    0.0
                };
                ControlAction {
                    basal_u_per_min: *basal_u_per_min,
                    bolus_u_per_min: bolus,
                }
            }
            Controller::Pid {
                p,
                i,
                d,
                target_mg_dl,
                integrated,
                prev,
            } => {
                let bg = obs.cgm_mg_dl;
                let st = obs.sample_time_min;
                let u = *p * (bg - *target_mg_dl) + *i * *integrated + *d * (bg - *prev) / st;
                *prev = bg;
                *integrated += (bg - *target_mg_dl) * st;
                ControlAction {
                    basal_u_per_min: u,
                    bolus_u_per_min: 0.0,
                }
            }
            Controller::OpenLoop => ControlAction::default(),
            Controller::Mpc(m) => m.policy(obs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn basal_bolus_matches_simglucose_formula() {
        let p = crate::params::patient("adult#001").unwrap();
        let mut c = Controller::new(&ControllerSpec::default(), &p);
        // 45 g announced in a 3-min step: meal = 15 g/min; CGM 138.55 <= 150: no correction
        let a = c.policy(&ControllerInput {
            cgm_mg_dl: 138.55,
            meal_g_per_min: 15.0,
            sample_time_min: 3.0,
        });
        assert!((a.bolus_u_per_min - 1.5).abs() < 1e-12);
        assert!((a.basal_u_per_min - 0.021125).abs() < 1e-5);
        let a = c.policy(&ControllerInput {
            cgm_mg_dl: 200.0,
            meal_g_per_min: 15.0,
            sample_time_min: 3.0,
        });
        assert!((a.bolus_u_per_min * 3.0 - (4.5 + 60.0 / p.cf_mg_dl_per_u)).abs() < 1e-12);
    }
    #[test]
    fn pid_integrates_and_differentiates() {
        let p = crate::params::patient("adult#001").unwrap();
        let spec = ControllerSpec::Pid {
            p: 0.001,
            i: 0.00001,
            d: 0.001,
            target_mg_dl: 140.0,
        };
        let mut c = Controller::new(&spec, &p);
        let o = ControllerInput {
            cgm_mg_dl: 150.0,
            meal_g_per_min: 0.0,
            sample_time_min: 3.0,
        };
        let a1 = c.policy(&o);
        assert!((a1.basal_u_per_min - (0.01 + 0.0 + 0.001 * 150.0 / 3.0)).abs() < 1e-12);
        let a2 = c.policy(&o);
        assert!((a2.basal_u_per_min - (0.01 + 0.00001 * 30.0)).abs() < 1e-12);
    }
}
