//! The T1D twin on the generic twin layer ([`medtwin_twin_core`]): the UVA/Padova model over
//! one person's recorded inputs as a [`TwinModel`], and the population prior
//! ([`crate::prior`]) as a [`CalibrationSpec`].
//!
//! The T1D calibration ([`crate::calibrate`]) evaluates its objective through
//! [`UvaPadovaTwinModel`]'s [`TwinModel::simulate`], so the calibrated model is the one the
//! generic layer sees; [`calibration_spec`] states the same prior and the first pass's noise
//! in the generic layer's terms, so `medtwin_twin_core::fit::posterior` can calibrate the T1D
//! model too (tests: same MAP region as [`crate::calibrate::calibrate`]'s first pass).
//!
//! Not (yet) on the generic layer: the particle-filter assimilation with process noise,
//! unrecorded-meal jumps and sensor bias ([`crate::engine`]), the hybrid forecast
//! ([`crate::hybrid`]) and the saved twin (`medtwin_twin_core::Twin` keeps a static-parameter
//! posterior and stores only SBML and PK models).

use crate::calibrate::{simulate_minutes, FIT_SD_MG_DL};
use crate::inputs::InputSchedule;
use crate::prior::{Prior, N_THETA, THETA_NAMES};
use medtwin_t1d::PatientParams;
use medtwin_twin_core::{
    CalibrationSpec, Estimated, Noise, ObservableSpec, Plan as DosePlan, TwinError, TwinModel,
};
use std::borrow::Cow;

/// The observable: subcutaneous (CGM) glucose, mg/dL.
pub const CGM: &str = "cgm";
/// Dose target of announced carbohydrate, g (before the carb factor).
pub const CARBS_TARGET: &str = "carbs";
/// Dose target of an insulin bolus, U (before the insulin dose scale).
pub const INSULIN_TARGET: &str = "insulin";

/// UVA/Padova S2008 of one person as a [`TwinModel`]: the base virtual patient with the
/// calibrated parameters [`THETA_NAMES`] settable (natural units,
/// [`crate::prior::THETA_UNITS`]), driven by the person's recorded carbohydrate and insulin
/// (insulin doses × `insulin_scale`) and plan doses into [`CARBS_TARGET`] (g) or
/// [`INSULIN_TARGET`] (U), simulated deterministically one minute at a time over a window
/// from the first CGM reading at or after its start
/// ([`crate::calibrate::simulate_minutes`]). Times are minutes from the record's origin
/// (`InputSchedule`'s t = 0), whole minutes within the window; the only observable is
/// [`CGM`].
#[derive(Debug, Clone)]
pub struct UvaPadovaTwinModel<'a> {
    base: &'a PatientParams,
    schedule: &'a InputSchedule,
    insulin_scale: f64,
    window_min: (f64, f64),
}

impl<'a> UvaPadovaTwinModel<'a> {
    /// The model of `base` on `schedule` over `window_min` = `(start, end)` minutes, insulin
    /// doses multiplied by `insulin_scale` ([`crate::calibrate::insulin_scale`]).
    pub fn new(
        base: &'a PatientParams,
        schedule: &'a InputSchedule,
        insulin_scale: f64,
        window_min: (f64, f64),
    ) -> Self {
        UvaPadovaTwinModel {
            base,
            schedule,
            insulin_scale,
            window_min,
        }
    }

    /// The schedule with `plan`'s doses added (borrowed when the plan is empty).
    ///
    /// Errors: [`TwinError::Model`] for an unknown target, a duration or a bad amount.
    fn with_plan(&self, plan: &DosePlan) -> Result<Cow<'a, InputSchedule>, TwinError> {
        if plan.doses.is_empty() {
            return Ok(Cow::Borrowed(self.schedule));
        }
        let mut s = self.schedule.clone();
        for d in &plan.doses {
            if d.duration != 0.0 || !d.amount.is_finite() || d.amount < 0.0 {
                return Err(TwinError::Model(format!(
                    "dose at {} min into '{}': the T1D twin takes instantaneous doses with a finite amount >= 0 (got amount {}, duration {})",
                    d.time, d.target, d.amount, d.duration
                )));
            }
            let list = match d.target.as_str() {
                CARBS_TARGET => &mut s.carbs,
                INSULIN_TARGET => &mut s.boluses,
                other => {
                    return Err(TwinError::Model(format!(
                        "dose at {} min targets '{other}': the T1D twin takes '{CARBS_TARGET}' (g) or '{INSULIN_TARGET}' (U)",
                        d.time
                    )))
                }
            };
            list.push((d.time, d.amount));
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Ok(Cow::Owned(s))
    }
}

/// `base`'s value of the calibrated parameter `k` (the carb factor's nominal is 1).
fn nominal_theta(base: &PatientParams, k: usize) -> f64 {
    match k {
        0 => base.vmx,
        1 => base.kp1,
        2 => base.kabs,
        _ => 1.0,
    }
}

impl TwinModel for UvaPadovaTwinModel<'_> {
    fn parameter_ids(&self) -> Vec<String> {
        THETA_NAMES.iter().map(|s| s.to_string()).collect()
    }

    fn nominal(&self, id: &str) -> Option<f64> {
        let k = THETA_NAMES.iter().position(|n| *n == id)?;
        Some(nominal_theta(self.base, k))
    }

    fn has_observable(&self, id: &str) -> bool {
        id == CGM
    }

    fn time_unit(&self) -> String {
        "min".into()
    }

    fn simulate(
        &self,
        values: &[(&str, f64)],
        plan: &DosePlan,
        times: &[f64],
        observables: &[String],
    ) -> Result<Vec<Vec<f64>>, TwinError> {
        if let Some(o) = observables.iter().find(|o| *o != CGM) {
            return Err(TwinError::Model(format!(
                "'{o}' is not an observable of the T1D twin (only '{CGM}')"
            )));
        }
        let mut theta: [f64; N_THETA] = std::array::from_fn(|k| nominal_theta(self.base, k));
        for &(id, v) in values {
            let k = THETA_NAMES.iter().position(|n| *n == id).ok_or_else(|| {
                TwinError::Model(format!(
                    "'{id}' is not a parameter of the T1D twin ({THETA_NAMES:?})"
                ))
            })?;
            theta[k] = v;
        }
        let mut params = self.base.clone();
        params.vmx = theta[0];
        params.kp1 = theta[1];
        params.kabs = theta[2];
        let schedule = self.with_plan(plan)?;
        let (g, _) = simulate_minutes(
            &params,
            theta[3],
            &schedule,
            self.window_min,
            self.insulin_scale,
            times,
        )
        .map_err(TwinError::Model)?;
        Ok(g.into_iter().map(|v| vec![v; observables.len()]).collect())
    }
}

/// The population prior in the generic layer's terms: each θ log-normal at the prior mean's
/// value with the prior's log-SD, bounded by [`Prior::bounds`] (natural scale), and [`CGM`]
/// measured with normal noise of [`FIT_SD_MG_DL`] (the first calibration pass's σ).
pub fn calibration_spec(prior: &Prior) -> CalibrationSpec {
    let bounds = prior.bounds();
    CalibrationSpec {
        estimate: (0..N_THETA)
            .map(|k| Estimated {
                id: THETA_NAMES[k].into(),
                prior: medtwin_twin_core::Prior::LogNormal {
                    median: prior.mean[k].exp(),
                    sd_log: prior.sd[k],
                },
                lower: Some(bounds[k].0.exp()),
                upper: Some(bounds[k].1.exp()),
            })
            .collect(),
        observables: vec![ObservableSpec {
            id: CGM.into(),
            noise: Noise::Normal {
                sigma: FIT_SD_MG_DL,
            },
        }],
        ..CalibrationSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::{insulin_scale, simulate_window, window_cgm};
    use crate::inputs::bundled;
    use medtwin_twin_core::{Dose, Measurement};

    fn values(theta: &[f64; N_THETA]) -> Vec<(&'static str, f64)> {
        (0..N_THETA)
            .map(|k| (THETA_NAMES[k], theta[k].exp()))
            .collect()
    }

    /// The bundled participant's first day, the population prior, its base patient and the
    /// calibration window's insulin dose scale.
    fn first_day() -> (InputSchedule, Prior, PatientParams, f64) {
        let sched = bundled(24);
        let prior = Prior::population().unwrap();
        let base = prior.base().unwrap();
        let scale = insulin_scale(&base, sched.mean_daily_insulin_u(0.0, 1440.0));
        (sched, prior, base, scale)
    }

    #[test]
    fn the_model_is_the_calibration_simulation() {
        let (sched, prior, base, scale) = first_day();
        let win = (0.0, 1440.0);
        let model = UvaPadovaTwinModel::new(&base, &sched, scale, win);
        let theta = [
            prior.mean[0] + 0.3,
            prior.mean[1] - 0.1,
            prior.mean[2] + 0.2,
            0.15,
        ];
        let (pairs, _) = simulate_window(&base, &sched, &theta, win, scale).unwrap();
        let (ys, times) = window_cgm(&sched, win);
        assert!(times.len() > 200, "{} readings", times.len());
        let rows = model
            .simulate(
                &values(&theta),
                &DosePlan::default(),
                &times,
                &[CGM.to_string()],
            )
            .unwrap();
        assert_eq!(rows.len(), pairs.len());
        for ((row, (y, g)), y2) in rows.iter().zip(&pairs).zip(&ys) {
            assert_eq!(y, y2);
            // bit for bit: calibration scores exactly this trajectory
            assert_eq!(row[0].to_bits(), g.to_bits());
        }
        // a meal raises glucose two hours later, insulin lowers it
        let t = [times[100], times[100] + 120.0];
        let run = |target: &str, amount: f64| {
            let plan = DosePlan {
                doses: vec![Dose {
                    time: t[0],
                    target: target.into(),
                    amount,
                    duration: 0.0,
                }],
            };
            model
                .simulate(&values(&theta), &plan, &t, &[CGM.into()])
                .unwrap()[1][0]
        };
        let none = run(CARBS_TARGET, 0.0);
        assert!(run(CARBS_TARGET, 60.0) > none + 20.0);
        assert!(run(INSULIN_TARGET, 4.0) < none - 10.0);
    }

    #[test]
    fn bad_requests_are_errors_naming_the_fault() {
        let (sched, _, base, _) = first_day();
        let model = UvaPadovaTwinModel::new(&base, &sched, 1.0, (0.0, 600.0));
        let cgm = [CGM.to_string()];
        let none = DosePlan::default();
        let msg = |r: Result<Vec<Vec<f64>>, TwinError>| r.unwrap_err().to_string();
        assert!(msg(model.simulate(&[("Gb", 1.0)], &none, &[10.0], &cgm)).contains("'Gb'"));
        assert!(msg(model.simulate(&[], &none, &[10.0], &["G".into()])).contains("'G'"));
        assert!(msg(model.simulate(&[], &none, &[10.5], &cgm)).contains("10.5"));
        assert!(msg(model.simulate(&[], &none, &[700.0], &cgm)).contains("700"));
        assert!(msg(model.simulate(&[], &none, &[20.0, 10.0], &cgm)).contains("10"));
        let bad = DosePlan {
            doses: vec![Dose {
                time: 5.0,
                target: "glucagon".into(),
                amount: 1.0,
                duration: 0.0,
            }],
        };
        assert!(msg(model.simulate(&[], &bad, &[10.0], &cgm)).contains("'glucagon'"));
        assert_eq!(model.nominal("Vmx"), Some(base.vmx));
        assert_eq!(model.nominal("carb_factor"), Some(1.0));
        assert_eq!(model.nominal("Gb"), None);
    }

    /// The generic layer's posterior (BFGS + Nelder–Mead, Laplace) on the T1D model and
    /// prior finds the MAP of the T1D calibration's first pass (same objective: the prior
    /// plus independent normal residuals of σ = FIT_SD_MG_DL).
    #[test]
    fn the_generic_fit_finds_the_first_pass_map() {
        let (sched, prior, base, scale) = first_day();
        let win = (0.0, 1440.0);
        let model = UvaPadovaTwinModel::new(&base, &sched, scale, win);
        let mut spec = calibration_spec(&prior);
        spec.samples = 8;
        spec.validate(&model).unwrap();
        let (ys, times) = window_cgm(&sched, win);
        let data: Vec<Measurement> = ys
            .iter()
            .zip(&times)
            .map(|(&value, &time)| Measurement {
                observable: CGM.into(),
                time,
                value,
                sigma: None,
            })
            .collect();
        let post =
            medtwin_twin_core::fit::posterior(&model, &spec, &DosePlan::default(), &data, None)
                .unwrap();
        // the T1D objective (negative log posterior up to a constant) at a natural-scale point
        let nlp = |theta: &[f64; N_THETA]| {
            let (pairs, _) = simulate_window(&base, &sched, theta, win, scale).unwrap();
            pairs
                .iter()
                .map(|(y, g)| 0.5 * ((y - g) / FIT_SD_MG_DL).powi(2))
                .sum::<f64>()
                + prior.neg_log_density(theta)
        };
        let generic: [f64; N_THETA] = std::array::from_fn(|k| post.map[k].ln());
        let step: Vec<f64> = prior.sd.iter().map(|s| 0.5 * s).collect();
        let own = medtwin_infer::optim::nelder_mead(
            &mut |th| nlp(&std::array::from_fn(|k| th[k])),
            &prior.mean,
            &step,
            1e-3,
            400,
        );
        let own: [f64; N_THETA] = std::array::from_fn(|k| own.x[k]);
        let (f_generic, f_own) = (nlp(&generic), nlp(&own));
        assert!(f_generic <= f_own + 0.05, "{f_generic} vs {f_own}");
        for k in 0..N_THETA {
            assert!(
                (generic[k] - own[k]).abs() < 0.25 * prior.sd[k],
                "{}: {} vs {}",
                THETA_NAMES[k],
                generic[k],
                own[k]
            );
        }
    }
}
