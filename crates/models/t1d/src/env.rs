//! The closed-loop environment: patient, sensor, pump and controller advanced minute by minute
//! with simglucose 0.2.11's exact alignment (`simulation/env.py`, `sim_engine.py`; shared
//! NOTES.md §3.8):
//! * the environment step is the sensor sample time; the controller is called once per step with
//!   the CGM and the announced meal averaged over the step's 1-minute mini-steps, and its action
//!   is held for the whole step;
//! * each mini-step: announced meal → pump conversion → patient step (1 min) → sensor measure;
//! * at reset the sensor is read twice at t = 0 (as `env.reset()` does).
//!
//! Output is streamed row by row ([`MinuteRow`]), so memory stays constant per patient.

use crate::controller::{ControlAction, Controller, ControllerInput, ControllerSpec};
use crate::model::VirtualPatient;
use crate::params::PatientParams;
use crate::random_meals::RandomMeals;
use crate::scenario::{Scenario, BASAL_U_PER_H, BOLUS_U, CARBS_G};
use crate::sensor::CgmSensor;
use medtwin_simulate::{SolveError, SolverOptions};

/// One row of a trajectory: values at `t_min` and the inputs applied over `[t, t+1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinuteRow {
    /// Minutes since the start.
    pub t_min: u64,
    /// Plasma glucose `Gp/Vg`, mg/dL.
    pub plasma_glucose_mg_dl: f64,
    /// Subcutaneous glucose `Gs/Vg`, mg/dL.
    pub sc_glucose_mg_dl: f64,
    /// CGM reading in force at `t_min` (held between samples), mg/dL.
    pub cgm_mg_dl: f64,
    /// Whether the sensor sampled at `t_min` (`t_min % sample_time == 0`).
    pub cgm_sampled: bool,
    /// Insulin delivered over `[t, t+1)`, U/min (0 on the last row).
    pub insulin_u_per_min: f64,
    /// Carbohydrate eaten over `[t, t+1)`, g/min (0 on the last row).
    pub carbs_g_per_min: f64,
}

/// Derive the per-patient sensor seed from the scenario seed and the patient's index in the
/// scenario, so results do not depend on thread count or order of execution.
pub fn patient_seed(scenario_seed: u64, patient_index: usize) -> u64 {
    scenario_seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(patient_index as u64)
}

/// Simulate one patient through `scenario`, calling `sink` for each of the
/// `duration_min + 1` rows in time order. `sensor_seed` seeds the CGM noise.
/// Errors: solver failure, with the time reached.
///
/// Random meals (if the scenario has them) use the stream of the patient's index in
/// `scenario.patients` (0 if it is not listed); see [`simulate_patient_with`] to choose it.
pub fn simulate_patient(
    params: &PatientParams,
    scenario: &Scenario,
    sensor_seed: u64,
    opts: SolverOptions,
    sink: impl FnMut(&MinuteRow),
) -> Result<(), SolveError> {
    let index = scenario
        .patients
        .iter()
        .position(|n| n == &params.name)
        .unwrap_or(0);
    let mut controller = Controller::new(&scenario.controller, params);
    simulate_patient_with(
        params,
        scenario,
        index,
        sensor_seed,
        opts,
        &mut controller,
        sink,
    )
}

/// As [`simulate_patient`], with an explicit patient index (selects the random-meal stream) and
/// a caller-owned `controller` (so its state, e.g. MPC decision timing, can be read afterwards).
pub fn simulate_patient_with(
    params: &PatientParams,
    scenario: &Scenario,
    patient_index: usize,
    sensor_seed: u64,
    opts: SolverOptions,
    controller: &mut Controller,
    sink: impl FnMut(&MinuteRow),
) -> Result<(), SolveError> {
    simulate_patient_counted(
        params,
        scenario,
        patient_index,
        sensor_seed,
        opts,
        controller,
        sink,
    )
    .map(|_| ())
}

/// The inputs of one minute that do not depend on the controller: carbohydrate announced (g),
/// and the pump-converted scenario bolus and open-loop basal (U/min; `None` if absent).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ScheduledInputs {
    announced_g: f64,
    extra_bolus: Option<f64>,
    open_loop_basal: Option<f64>,
}

/// As [`simulate_patient_with`], returning the solver's work counters (right-hand-side
/// evaluations, steps, restarts) for benchmarks.
///
/// The scheduled inputs of each minute (timeline doses, random meals, open-loop basal) are
/// looked up one minute ahead, so the integrator ends a step exactly where they change
/// ([`VirtualPatient::step_with_stop`]; the patient adds the ends of eating minutes).
/// Controller calls are not announced: predicting them (stopping after a changed action)
/// cost more right-hand-side evaluations than it saved with the PID controller (issue 19).
pub fn simulate_patient_counted(
    params: &PatientParams,
    scenario: &Scenario,
    patient_index: usize,
    sensor_seed: u64,
    opts: SolverOptions,
    controller: &mut Controller,
    sink: impl FnMut(&MinuteRow),
) -> Result<medtwin_simulate::SolverStats, SolveError> {
    simulate_patient_integrated(
        params,
        scenario,
        patient_index,
        sensor_seed,
        opts,
        false,
        controller,
        sink,
    )
}

/// As [`simulate_patient_counted`], choosing how the patient is integrated:
/// `closed_form_insulin` as [`VirtualPatient::set_closed_form_insulin`] (off in every other
/// entry point). For benchmarks of the two methods.
#[allow(clippy::too_many_arguments)]
pub fn simulate_patient_integrated(
    params: &PatientParams,
    scenario: &Scenario,
    patient_index: usize,
    sensor_seed: u64,
    opts: SolverOptions,
    closed_form_insulin: bool,
    controller: &mut Controller,
    mut sink: impl FnMut(&MinuteRow),
) -> Result<medtwin_simulate::SolverStats, SolveError> {
    let mut patient = VirtualPatient::new(params.clone(), opts);
    patient.set_closed_form_insulin(closed_form_insulin);
    let mut sensor = CgmSensor::new(scenario.sensor, scenario.sensor_noise, sensor_seed);
    let pump = scenario.pump.params();
    let mut random_meals = scenario
        .random_meals
        .map(|r| RandomMeals::new(r.seed, patient_index as u64, scenario.start_minute_of_day()));
    let open_loop = scenario.controller == ControllerSpec::OpenLoop;
    let st = sensor.sample_time_min() as u64;
    let g0 = patient.sc_glucose_mg_dl();
    sensor.measure(0, g0);
    let mut cgm = sensor.measure(0, g0);
    let mut obs = ControllerInput {
        cgm_mg_dl: cgm,
        meal_g_per_min: 0.0,
        sample_time_min: st as f64,
    };
    let tl = &scenario.timeline;
    // The timeline is searched only in minutes holding a dose: `next_dose` indexes the first dose
    // at or after the minute looked up; other minutes take what `doses_in` returns for no dose.
    // Minutes are looked up in increasing order (each once), as random meals require.
    let doses = tl.doses();
    let no_dose = tl.doses_in(CARBS_G, f64::NEG_INFINITY, f64::NEG_INFINITY);
    let mut next_dose = 0usize;
    let mut scheduled = |t: u64| -> ScheduledInputs {
        let tf = t as f64;
        while next_dose < doses.len() && doses[next_dose].at_min < tf {
            next_dose += 1;
        }
        let dose_now = next_dose < doses.len() && doses[next_dose].at_min < tf + 1.0;
        let (mut announced, extra_bolus) = if dose_now {
            (
                tl.doses_in(CARBS_G, tf, tf + 1.0),
                tl.doses_in(BOLUS_U, tf, tf + 1.0),
            )
        } else {
            (no_dose, no_dose)
        };
        if let Some(rm) = random_meals.as_mut() {
            announced += rm.carbs_at(t);
        }
        ScheduledInputs {
            announced_g: announced,
            extra_bolus: (extra_bolus > 0.0).then(|| pump.bolus(extra_bolus)),
            open_loop_basal: open_loop
                .then(|| pump.basal(tl.rate_at(BASAL_U_PER_H, tf).unwrap_or(0.0) / 60.0)),
        }
    };
    let duration = scenario.duration_min;
    let mut t: u64 = 0;
    let mut sampled = true;
    let mut next = scheduled(0);
    while t < duration {
        let action: ControlAction = controller.policy(&obs);
        let (mut meal_avg, mut cgm_avg) = (0.0, 0.0);
        for _ in 0..st {
            if t >= duration {
                break;
            }
            let cur = next;
            let announced = cur.announced_g;
            let mut insulin =
                pump.basal(action.basal_u_per_min) + pump.bolus(action.bolus_u_per_min);
            if let Some(b) = cur.extra_bolus {
                insulin += b;
            }
            if let Some(b) = cur.open_loop_basal {
                insulin += b;
            }
            let mut change_next = false;
            if t + 1 < duration {
                next = scheduled(t + 1);
                change_next = next.announced_g > 0.0
                    || next.extra_bolus != cur.extra_bolus
                    || next.open_loop_basal != cur.open_loop_basal;
            }
            let row_pre = (patient.plasma_glucose_mg_dl(), patient.sc_glucose_mg_dl());
            let eaten = patient.step_with_stop(announced, insulin, change_next)?;
            sink(&MinuteRow {
                t_min: t,
                plasma_glucose_mg_dl: row_pre.0,
                sc_glucose_mg_dl: row_pre.1,
                cgm_mg_dl: cgm,
                cgm_sampled: sampled,
                insulin_u_per_min: insulin,
                carbs_g_per_min: eaten,
            });
            t += 1;
            cgm = sensor.measure(t, patient.sc_glucose_mg_dl());
            sampled = t.is_multiple_of(st);
            meal_avg += announced / st as f64;
            cgm_avg += cgm / st as f64;
        }
        obs = ControllerInput {
            cgm_mg_dl: cgm_avg,
            meal_g_per_min: meal_avg,
            sample_time_min: st as f64,
        };
    }
    sink(&MinuteRow {
        t_min: t,
        plasma_glucose_mg_dl: patient.plasma_glucose_mg_dl(),
        sc_glucose_mg_dl: patient.sc_glucose_mg_dl(),
        cgm_mg_dl: cgm,
        cgm_sampled: sampled,
        insulin_u_per_min: 0.0,
        carbs_g_per_min: 0.0,
    });
    Ok(patient.solver_stats())
}

/// Streaming accumulator of a trajectory's outcome summary: glycaemic metrics on the
/// CGM-sampled subcutaneous glucose (rows with `cgm_sampled`), total insulin and carbohydrate.
/// Memory grows with the number of CGM samples only (one f64 each).
#[derive(Debug, Clone, Default)]
pub struct SummaryAccumulator {
    sampled_sc_mg_dl: Vec<f64>,
    total_insulin_u: f64,
    total_carbs_g: f64,
}

/// Outcome summary of one simulated patient (the `--summary` row).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TrajectorySummary {
    /// Metrics on CGM-sampled subcutaneous glucose.
    pub metrics: crate::metrics::GlycaemicMetrics,
    /// Insulin delivered, U.
    pub total_insulin_u: f64,
    /// Carbohydrate eaten, g.
    pub total_carbs_g: f64,
}

impl SummaryAccumulator {
    /// Add one row.
    pub fn push(&mut self, r: &MinuteRow) {
        if r.cgm_sampled {
            self.sampled_sc_mg_dl.push(r.sc_glucose_mg_dl);
        }
        self.total_insulin_u += r.insulin_u_per_min;
        self.total_carbs_g += r.carbs_g_per_min;
    }
    /// The summary; `None` if no sample was seen.
    pub fn finish(&self) -> Option<TrajectorySummary> {
        crate::metrics::glycaemic_metrics(&self.sampled_sc_mg_dl).map(|metrics| TrajectorySummary {
            metrics,
            total_insulin_u: self.total_insulin_u,
            total_carbs_g: self.total_carbs_g,
        })
    }
}
