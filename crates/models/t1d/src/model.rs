//! The UVA/Padova S2008 type 1 diabetes model exactly as simglucose 0.2.11 implements it.
//!
//! Sources: Dalla Man, Rizza & Cobelli, *Meal simulation model of the glucose-insulin system*,
//! IEEE TBME 54(10):1740–1749, 2007 (glucose subsystem eqs. 1–3, EGP eq. 10, utilisation
//! eqs. 13–17, renal excretion eq. 27, gut eqs. 22–26 with the gastric emptying of Dalla Man,
//! Camilleri & Cobelli, IEEE TBME 53(12):2472, 2006, eq. 3); Kovatchev et al., *In silico
//! preclinical trials*, J Diabetes Sci Technol 3(1):44–55, 2009 (subcutaneous insulin
//! `Rai = ka1·Isc1 + ka2·Isc2`, subcutaneous glucose `dGs = −ksc·Gs + ksc·Gp`).
//! Deviations of simglucose from the papers, reproduced on purpose (shared NOTES.md §3.3):
//! constant hepatic extraction `m30`, `Km = Km0`, the positivity clamps `dx *= (x >= 0)` on
//! states Gp, Gt, Ip, Il, Isc1, Isc2, Gs, and the meal-episode dose `Dbar` that grows during the
//! meal (§3.4).

use crate::insulin::{InsulinModes, InsulinTrajectory, BLOCK_STATES};
use crate::params::PatientParams;
use medtwin_core::units::INSULIN_PMOL_PER_U;
use medtwin_core::{ModelInfo, OdeModel, VariableInfo};
use medtwin_simulate::{Dopri5, Integrator, SolveError, SolverOptions};
use std::sync::OnceLock;

/// State names in state-vector order (shared NOTES.md §3.1).
pub const STATE_NAMES: [&str; 13] = [
    "Qsto1", "Qsto2", "Qgut", "Gp", "Gt", "Ip", "X", "I1", "Id", "Il", "Isc1", "Isc2", "Gs",
];
const STATE_UNITS: [&str; 13] = [
    "mg", "mg", "mg", "mg/kg", "mg/kg", "pmol/kg", "pmol/L", "pmol/L", "pmol/L", "pmol/kg",
    "pmol/kg", "pmol/kg", "mg/kg",
];
const STATE_DESC: [&str; 13] = [
    "solid glucose in stomach",
    "liquid glucose in stomach",
    "glucose in intestine",
    "plasma glucose mass",
    "tissue glucose mass",
    "plasma insulin mass",
    "remote insulin action on utilisation",
    "first delay of insulin signal for EGP",
    "delayed insulin signal for EGP",
    "liver insulin",
    "subcutaneous insulin, non-monomeric",
    "subcutaneous insulin, monomeric",
    "subcutaneous glucose (mass scaling)",
];

/// Index of each input in the input vector `u` of [`UvaPadova`].
pub mod input {
    /// Carbohydrate eaten this minute, g/min.
    pub const CHO_G_PER_MIN: usize = 0;
    /// Subcutaneous insulin delivery, U/min.
    pub const INSULIN_U_PER_MIN: usize = 1;
    /// Current meal-episode dose `Dbar` (discrete state of the gastric-emptying model), mg.
    pub const MEAL_DOSE_MG: usize = 2;
}

/// Index of each observable written by [`UvaPadova::observe`].
pub mod observable {
    /// Plasma glucose `Gp/Vg`, mg/dL.
    pub const PLASMA_GLUCOSE_MG_DL: usize = 0;
    /// Subcutaneous glucose `Gs/Vg`, mg/dL (simglucose's "BG").
    pub const SC_GLUCOSE_MG_DL: usize = 1;
}

fn info() -> &'static ModelInfo {
    static INFO: OnceLock<ModelInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let v = |n: &str, u: &str, d: &str| VariableInfo { name: n.into(), unit: u.into(), description: d.into() };
        ModelInfo {
            name: "uva-padova-s2008".into(),
            source: "Dalla Man et al. IEEE TBME 54:1740 (2007); Kovatchev et al. JDST 3:44 (2009); as in simglucose 0.2.11"
                .into(),
            states: (0..13).map(|i| v(STATE_NAMES[i], STATE_UNITS[i], STATE_DESC[i])).collect(),
            inputs: vec![
                v("cho_g_per_min", "g/min", "carbohydrate eaten"),
                v("insulin_u_per_min", "U/min", "subcutaneous insulin delivery"),
                v("meal_dose_mg", "mg", "meal-episode dose Dbar of the gastric-emptying model"),
            ],
            observables: vec![
                v("plasma_glucose", "mg/dL", "plasma glucose Gp/Vg"),
                v("sc_glucose", "mg/dL", "subcutaneous glucose Gs/Vg"),
            ],
        }
    })
}

/// `tanh(x) = 1 − 2/(e^{2x} + 1)`: one `exp` (libm's `tanh` goes through the slower `expm1`, and
/// its two calls per right-hand side were a third of the simulation's time). Absolute error a
/// few units in the last place of 1 (≤ 4.5e-16 over ±40, tested); saturates to ±1 without
/// overflow (`e^{2x} = ∞` gives 1, `0` gives −1). The gastric-emptying rate only uses the
/// difference of two values in [−1, 1], so the absolute error is what matters.
#[inline]
fn tanh(x: f64) -> f64 {
    1.0 - 2.0 / ((2.0 * x).exp() + 1.0)
}

/// The UVA/Padova S2008 right-hand side for one patient's parameters.
#[derive(Debug, Clone)]
pub struct UvaPadova {
    /// The patient's parameters.
    pub p: PatientParams,
}

/// Right-hand side of the gut (Qsto1, Qsto2, Qgut) and glucose (Gp, Gt) states, the first five
/// of [`STATE_NAMES`], given the remote insulin action `ins_x` (X, pmol/L) and the delayed insulin
/// `ins_id` (Id, pmol/L): Dalla Man et al. 2007 eqs. 1–11 as in simglucose's `T1DPatient.model`.
/// Shared by the 13-state model and the closed-form-insulin path ([`crate::insulin`]), which reads
/// X and Id from the exact insulin solution.
#[inline(always)]
fn gut_glucose_rhs(
    p: &PatientParams,
    x: &[f64],
    u: &[f64],
    ins_x: f64,
    ins_id: f64,
    dx: &mut [f64],
) {
    let (x, u, dx) = (&x[..5], &u[..3], &mut dx[..5]);
    let d = u[input::CHO_G_PER_MIN] * 1000.0; // g/min -> mg/min
    let dbar = u[input::MEAL_DOSE_MG];
    let qsto = x[0] + x[1];
    dx[0] = -p.kmax * x[0] + d;
    let kgut = if dbar > 0.0 {
        let aa = 5.0 / (2.0 * dbar * (1.0 - p.b));
        let cc = 5.0 / (2.0 * dbar * p.d);
        p.kmin
            + (p.kmax - p.kmin) / 2.0
                * (tanh(aa * (qsto - p.b * dbar)) - tanh(cc * (qsto - p.d * dbar)) + 2.0)
    } else {
        p.kmax
    };
    dx[1] = p.kmax * x[0] - x[1] * kgut;
    dx[2] = kgut * x[1] - p.kabs * x[2];
    let ra = p.f * p.kabs * x[2] / p.bw;
    let egp = p.kp1 - p.kp2 * x[3] - p.kp3 * ins_id;
    let et = if x[3] > p.ke2 {
        p.ke1 * (x[3] - p.ke2)
    } else {
        0.0
    };
    let clamp = |v: f64, s: f64| if s >= 0.0 { v } else { 0.0 };
    dx[3] = clamp(
        egp.max(0.0) + ra - p.fsnc - et - p.k1 * x[3] + p.k2 * x[4],
        x[3],
    );
    let vm = p.vm0 + p.vmx * ins_x;
    let uid = vm * x[4] / (p.km0 + x[4]);
    dx[4] = clamp(-uid + p.k1 * x[3] - p.k2 * x[4], x[4]);
}

impl OdeModel for UvaPadova {
    fn info(&self) -> &ModelInfo {
        info()
    }

    #[inline]
    fn rhs(&self, _t_min: f64, x: &[f64], u: &[f64], dx: &mut [f64]) {
        // Fixed lengths up front: one check each instead of one per state access.
        let (x, u, dx) = (&x[..13], &u[..3], &mut dx[..13]);
        let p = &self.p;
        let ins = u[input::INSULIN_U_PER_MIN] * INSULIN_PMOL_PER_U / p.bw; // U/min -> pmol/kg/min
        gut_glucose_rhs(p, &x[..5], u, x[6], x[8], &mut dx[..5]);
        let clamp = |v: f64, s: f64| if s >= 0.0 { v } else { 0.0 };
        dx[5] = clamp(
            -(p.m2 + p.m4) * x[5] + p.m1 * x[9] + p.ka1 * x[10] + p.ka2 * x[11],
            x[5],
        );
        let it = x[5] / p.vi;
        dx[6] = -p.p2u * x[6] + p.p2u * (it - p.ib);
        dx[7] = -p.ki * (x[7] - it);
        dx[8] = -p.ki * (x[8] - x[7]);
        dx[9] = clamp(-(p.m1 + p.m30) * x[9] + p.m2 * x[5], x[9]);
        dx[10] = clamp(ins - (p.ka1 + p.kd) * x[10], x[10]);
        dx[11] = clamp(p.kd * x[10] - p.ka2 * x[11], x[11]);
        dx[12] = clamp(-p.ksc * x[12] + p.ksc * x[3], x[12]);
    }

    fn observe(&self, x: &[f64], out: &mut [f64]) {
        out[observable::PLASMA_GLUCOSE_MG_DL] = x[3] / self.p.vg;
        out[observable::SC_GLUCOSE_MG_DL] = x[12] / self.p.vg;
    }
}

/// Positions in the 13-state vector of the six nonlinear states that [`VirtualPatient`]
/// integrates numerically when the insulin block is solved in closed form:
/// `[Qsto1, Qsto2, Qgut, Gp, Gt, Gs]`.
pub const GUT_GLUCOSE_STATES: [usize; 6] = [0, 1, 2, 3, 4, 12];

fn gut_glucose_info() -> &'static ModelInfo {
    static INFO: OnceLock<ModelInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let full = info();
        ModelInfo {
            name: "uva-padova-s2008-gut-glucose".into(),
            source: full.source.clone(),
            states: GUT_GLUCOSE_STATES
                .iter()
                .map(|&i| full.states[i].clone())
                .collect(),
            inputs: full.inputs.clone(),
            observables: full.observables.clone(),
        }
    })
}

/// The gut and glucose part of [`UvaPadova`] (states [`GUT_GLUCOSE_STATES`]) with the insulin
/// signals `X` and `Id` it reads taken from the closed-form insulin solution at the stage time.
/// The same equations and clamps as [`UvaPadova::rhs`]; inputs as [`input`] (the insulin input
/// is in the trajectory and unused here).
struct GutGlucose<'a> {
    p: &'a PatientParams,
    insulin: &'a InsulinTrajectory,
    // (t, X, Id) of the last evaluation: DOPRI5's last two stages share their time
    last: std::cell::Cell<(f64, f64, f64)>,
}

impl GutGlucose<'_> {
    #[inline]
    fn x_and_id(&self, t_min: f64) -> (f64, f64) {
        let (t, x, id) = self.last.get();
        if t == t_min {
            return (x, id);
        }
        let (x, id) = self.insulin.x_and_id(t_min);
        self.last.set((t_min, x, id));
        (x, id)
    }
}

impl OdeModel for GutGlucose<'_> {
    fn info(&self) -> &ModelInfo {
        gut_glucose_info()
    }

    #[inline]
    fn rhs(&self, t_min: f64, x: &[f64], u: &[f64], dx: &mut [f64]) {
        let (x, u, dx) = (&x[..6], &u[..3], &mut dx[..6]);
        let p = self.p;
        let (ins_x, ins_id) = self.x_and_id(t_min);
        gut_glucose_rhs(p, &x[..5], u, ins_x, ins_id, &mut dx[..5]);
        dx[5] = if x[5] >= 0.0 {
            -p.ksc * x[5] + p.ksc * x[3]
        } else {
            0.0
        };
    }

    fn observe(&self, x: &[f64], out: &mut [f64]) {
        out[observable::PLASMA_GLUCOSE_MG_DL] = x[3] / self.p.vg;
        out[observable::SC_GLUCOSE_MG_DL] = x[5] / self.p.vg;
    }
}

/// The dynamic state of a [`VirtualPatient`] (serialisable).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatientSnapshot {
    /// ODE state (units of [`STATE_NAMES`]).
    pub state: [f64; 13],
    /// Minutes since start.
    pub t_min: u64,
    /// Announced carbohydrate not yet eaten, g.
    pub planned_meal_g: f64,
    /// Stomach content at the start of the current eating episode, mg.
    pub last_qsto_mg: f64,
    /// Carbohydrate eaten in the current episode, g.
    pub last_foodtaken_g: f64,
    /// Carbohydrate eaten in the previous minute, g/min.
    pub last_cho_g_per_min: f64,
    /// Whether an eating episode is in progress.
    pub is_eating: bool,
}

/// Per-state tolerance factors of a [`VirtualPatient`]'s integrator
/// ([`Dopri5::set_tolerance_factors`]; order of [`STATE_NAMES`]): state `i` is held to
/// `factor_i·(atol + rtol·|x_i|)`. Each factor matches the state's own scale and its effect on
/// the output (sc glucose `Gs/Vg`, mg/dL; budget 0.01 mg/dL vs simglucose, issue 19):
/// * gut Qsto1, Qsto2, Qgut (mg, up to ~10⁵ mg during a meal): 1000;
/// * glucose Gp, Gt, Gs (mg/kg, ~100–300 mg/kg): 100 (at the default 1e-8, a local error of
///   ~1e-6 relative, ≈ 1e-4 mg/dL);
/// * the fast plasma/liver insulin compartments Ip, Il (time constants ≈ 2–6 min, local errors
///   decay within minutes): 100;
/// * insulin action X, I1, Id and the subcutaneous depots Isc1, Isc2: 1 (glucose is most
///   sensitive to the small remote-insulin-action state; loosening them costs the most accuracy
///   per step saved).
///
/// Measured on the 30 reference patients × 1 day (3 meals, basal-bolus; the PID arm of trials in
/// brackets), issue 19's fourth session (benchmarks/sim_throughput.md): right-hand-side
/// evaluations 4278 → 3124 per patient-day (PID 8412 → 7114) against the previous factors
/// (100 for gut, Ip, Il; 1 elsewhere); max |sc glucose − simglucose| 2.8e-4 → 2.2e-3 mg/dL, and
/// 1.4e-4 → 2.2e-3 mg/dL against a rtol = atol = 1e-13 solution.
pub const TOLERANCE_FACTORS: [f64; 13] = [
    1000.0, 1000.0, 1000.0, 100.0, 100.0, 100.0, 1.0, 1.0, 1.0, 100.0, 1.0, 1.0, 100.0,
];

/// Eating rate of the patient model, g/min (simglucose `T1DPatient.EAT_RATE`).
pub const EAT_RATE_G_PER_MIN: f64 = 5.0;

/// A virtual patient advancing in 1-minute steps: the model state plus simglucose's discrete meal
/// bookkeeping (announced meals eaten at 5 g/min; `Dbar` reset at the start of an eating episode
/// and grown by each minute's intake; NOTES.md §3.4).
#[derive(Debug, Clone)]
pub struct VirtualPatient {
    model: UvaPadova,
    state: [f64; 13],
    t_min: u64,
    planned_meal_g: f64,
    last_qsto_mg: f64,
    last_foodtaken_g: f64,
    last_cho_g_per_min: f64,
    is_eating: bool,
    // all 13 states numerically: used when the closed-form insulin solution is not (see
    // `closed_form_usable`)
    solver: Dopri5,
    // the six gut/glucose states numerically, the insulin block in closed form (opt-in)
    closed_form: bool,
    gut_solver: Dopri5,
    modes: InsulinModes,
    // the insulin block's solution on the current constant-infusion interval, the block state it
    // last wrote and the minute it wrote it at (an outside change of the state re-anchors)
    insulin: Option<InsulinTrajectory>,
    insulin_last: [f64; 7],
    insulin_t_last: u64,
}

/// Per-state tolerance factors of the gut/glucose integrator (order of
/// [`GUT_GLUCOSE_STATES`]; opt-in closed-form path): 100 for the gut, 1 for glucose, tighter
/// on glucose than [`TOLERANCE_FACTORS`]. Measured on the reference day: with
/// `TOLERANCE_FACTORS`' values (1000; 100) max |Δ| vs simglucose was 5.2e-3 mg/dL, against
/// 1.8e-4 with these (issue 19, fourth session). Probably because the insulin-action states,
/// which keep factor 1 and share the steps in the 13-state integration, are exact here, so the
/// glucose states alone set the step after meals.
const GUT_GLUCOSE_TOLERANCE_FACTORS: [f64; 6] = [100.0, 100.0, 100.0, 1.0, 1.0, 1.0];

impl VirtualPatient {
    /// A patient at its initial state `x0` (basal steady state), t = 0, with solver options
    /// `opts`.
    pub fn new(params: PatientParams, opts: SolverOptions) -> Self {
        let state = params.x0;
        let modes = InsulinModes::new(&params);
        VirtualPatient {
            last_qsto_mg: state[0] + state[1],
            model: UvaPadova { p: params },
            state,
            t_min: 0,
            planned_meal_g: 0.0,
            last_foodtaken_g: 0.0,
            last_cho_g_per_min: 0.0,
            is_eating: false,
            solver: {
                let mut s = Dopri5::new(13, opts);
                // 13 finite positive factors for 13 states: cannot fail
                let set = s.set_tolerance_factors(&TOLERANCE_FACTORS);
                debug_assert!(set.is_ok(), "{set:?}");
                s
            },
            closed_form: false,
            gut_solver: {
                let mut s = Dopri5::new(6, opts);
                // 6 finite positive factors for 6 states: cannot fail
                let set = s.set_tolerance_factors(&GUT_GLUCOSE_TOLERANCE_FACTORS);
                debug_assert!(set.is_ok(), "{set:?}");
                s
            },
            modes,
            insulin: None,
            insulin_last: [f64::NAN; 7],
            insulin_t_last: 0,
        }
    }

    /// Solve the insulin block in closed form ([`crate::insulin`]) and integrate only the six
    /// gut/glucose states numerically (`true`), or integrate all 13 states with DOPRI5 (`false`,
    /// the default). Both agree to within the solver tolerance (the closed form is exact; the
    /// simglucose reference test passes with either). Off by default because it is slower on
    /// the scalar code path: measured on the `bench_sim` workload (issue 19,
    /// benchmarks/sim_throughput.md) it needs 21 % fewer right-hand-side evaluations with the
    /// PID controller and as many with basal-bolus (post-meal steps are accuracy-limited, not
    /// stability-limited), but each evaluation pays six `exp` calls. Takes effect from the next
    /// step; minutes whose state or inputs the closed form cannot take (negative insulin
    /// compartments or infusion, near-coincident rates) use the 13-state integration anyway.
    pub fn set_closed_form_insulin(&mut self, on: bool) {
        self.closed_form = on;
        self.insulin = None;
    }

    /// Whether this minute can use the closed-form insulin solution: it is switched on
    /// ([`VirtualPatient::set_closed_form_insulin`]), the modes are usable for
    /// the current parameters (recomputed if they changed), and the infusion and the four
    /// clamped insulin compartments are non-negative, so that simglucose's positivity clamps
    /// never act and the insulin block is exactly linear. Otherwise all 13 states are
    /// integrated numerically, clamps included.
    fn closed_form_usable(&mut self, insulin_u_per_min: f64) -> bool {
        if !self.closed_form {
            return false;
        }
        if !self.modes.matches(&self.model.p) {
            self.modes = InsulinModes::new(&self.model.p);
            self.insulin = None;
        }
        self.modes.usable
            && insulin_u_per_min >= 0.0
            && insulin_u_per_min.is_finite()
            && BLOCK_STATES[..4].iter().all(|&i| self.state[i] >= 0.0)
            && BLOCK_STATES.iter().all(|&i| self.state[i].is_finite())
    }

    /// The patient's parameters.
    pub fn params(&self) -> &PatientParams {
        &self.model.p
    }
    /// Mutable parameters (for calibration; the state is not re-equilibrated).
    pub fn params_mut(&mut self) -> &mut PatientParams {
        &mut self.model.p
    }
    /// The model (right-hand side) of this patient.
    pub fn model(&self) -> &UvaPadova {
        &self.model
    }
    /// Current state vector (units: [`STATE_NAMES`] / model info).
    pub fn state(&self) -> &[f64; 13] {
        &self.state
    }
    /// Mutable state vector (for data assimilation).
    pub fn state_mut(&mut self) -> &mut [f64; 13] {
        &mut self.state
    }
    /// Minutes since the start.
    pub fn t_min(&self) -> u64 {
        self.t_min
    }
    /// Grams announced but not yet eaten.
    pub fn planned_meal_g(&self) -> f64 {
        self.planned_meal_g
    }
    /// Plasma glucose `Gp/Vg`, mg/dL.
    pub fn plasma_glucose_mg_dl(&self) -> f64 {
        self.state[3] / self.model.p.vg
    }
    /// Subcutaneous glucose `Gs/Vg`, mg/dL (simglucose "BG").
    pub fn sc_glucose_mg_dl(&self) -> f64 {
        self.state[12] / self.model.p.vg
    }

    /// Advance one minute with `announced_cho_g` grams announced at this minute (added to the
    /// plan, eaten at ≤ 5 g/min) and insulin `insulin_u_per_min` held over the minute.
    /// Returns the carbohydrate eaten in this minute (g/min).
    /// Errors: solver failure ([`SolveError`]); the state is then the last accepted one.
    pub fn step(
        &mut self,
        announced_cho_g: f64,
        insulin_u_per_min: f64,
    ) -> Result<f64, SolveError> {
        self.step_with_stop(announced_cho_g, insulin_u_per_min, false)
    }

    /// As [`VirtualPatient::step`], with `inputs_change_next`: whether the caller's inputs
    /// (announced carbohydrate or insulin) may change at the end of this minute. The integrator
    /// then ends a step exactly there instead of stepping past it and discarding the rest at the
    /// restart ([`Dopri5::integrate_stop`]); the patient adds its own changes (every eating
    /// minute changes the next minute's meal inputs). An efficiency hint only: answers agree to
    /// within the solver tolerance whatever is passed.
    /// Errors: solver failure ([`SolveError`]); the state is then the last accepted one.
    pub fn step_with_stop(
        &mut self,
        announced_cho_g: f64,
        insulin_u_per_min: f64,
        inputs_change_next: bool,
    ) -> Result<f64, SolveError> {
        // simglucose T1DPatient._announce_meal
        self.planned_meal_g += announced_cho_g;
        let mut to_eat = 0.0;
        if self.planned_meal_g > 0.0 {
            to_eat = EAT_RATE_G_PER_MIN.min(self.planned_meal_g);
            self.planned_meal_g = (self.planned_meal_g - to_eat).max(0.0);
        }
        if to_eat > 0.0 && self.last_cho_g_per_min <= 0.0 {
            self.last_qsto_mg = self.state[0] + self.state[1];
            self.last_foodtaken_g = 0.0;
            self.is_eating = true;
        }
        if self.is_eating {
            self.last_foodtaken_g += to_eat;
        }
        if to_eat <= 0.0 && self.last_cho_g_per_min > 0.0 {
            self.is_eating = false;
        }
        self.last_cho_g_per_min = to_eat;
        let dbar = self.last_qsto_mg + self.last_foodtaken_g * 1000.0;
        let u = [to_eat, insulin_u_per_min, dbar];
        let t0 = self.t_min as f64;
        let t1 = t0 + 1.0;
        // after an eating minute the next minute's intake or Dbar differs
        let t_stop = if inputs_change_next || to_eat > 0.0 {
            t1
        } else {
            f64::INFINITY
        };
        if !self.closed_form_usable(insulin_u_per_min) {
            self.insulin = None;
            self.solver
                .integrate_stop(&self.model, t0, t1, &mut self.state, &u, t_stop)?;
            self.t_min += 1;
            return Ok(to_eat);
        }
        let z0: [f64; 7] = std::array::from_fn(|i| self.state[BLOCK_STATES[i]]);
        let trajectory = match self.insulin.take() {
            Some(tr)
                if tr.insulin_u_per_min == insulin_u_per_min
                    && self.insulin_t_last == self.t_min
                    && self.insulin_last == z0 =>
            {
                tr
            }
            _ => InsulinTrajectory::new(&self.model.p, &self.modes, t0, &z0, insulin_u_per_min),
        };
        // the anchor time is part of the inputs: a new anchor restarts the integration
        let ur = [to_eat, insulin_u_per_min, dbar, trajectory.t0_min];
        let mut g: [f64; 6] = std::array::from_fn(|i| self.state[GUT_GLUCOSE_STATES[i]]);
        let model = GutGlucose {
            p: &self.model.p,
            insulin: &trajectory,
            last: std::cell::Cell::new((f64::NAN, 0.0, 0.0)),
        };
        self.gut_solver
            .integrate_stop(&model, t0, t1, &mut g, &ur, t_stop)?;
        let z1 = trajectory.state_at(t1);
        for (i, &k) in GUT_GLUCOSE_STATES.iter().enumerate() {
            self.state[k] = g[i];
        }
        for (i, &k) in BLOCK_STATES.iter().enumerate() {
            self.state[k] = z1[i];
        }
        self.insulin_last = z1;
        self.t_min += 1;
        self.insulin_t_last = self.t_min;
        self.insulin = Some(trajectory);
        Ok(to_eat)
    }

    /// The patient's dynamic state: ODE state, clock and meal bookkeeping (for saving a twin).
    pub fn snapshot(&self) -> PatientSnapshot {
        PatientSnapshot {
            state: self.state,
            t_min: self.t_min,
            planned_meal_g: self.planned_meal_g,
            last_qsto_mg: self.last_qsto_mg,
            last_foodtaken_g: self.last_foodtaken_g,
            last_cho_g_per_min: self.last_cho_g_per_min,
            is_eating: self.is_eating,
        }
    }

    /// Restore a dynamic state saved by [`VirtualPatient::snapshot`].
    pub fn restore(&mut self, s: &PatientSnapshot) {
        self.state = s.state;
        self.t_min = s.t_min;
        self.planned_meal_g = s.planned_meal_g;
        self.last_qsto_mg = s.last_qsto_mg;
        self.last_foodtaken_g = s.last_foodtaken_g;
        self.last_cho_g_per_min = s.last_cho_g_per_min;
        self.is_eating = s.is_eating;
        self.solver.reset();
        self.gut_solver.reset();
        self.insulin = None;
    }

    /// Solver work counters (both integrators: the gut/glucose one with the closed-form insulin
    /// block, and the 13-state fallback).
    pub fn solver_stats(&self) -> medtwin_simulate::SolverStats {
        let (a, b) = (self.solver.stats(), self.gut_solver.stats());
        medtwin_simulate::SolverStats {
            rhs_evals: a.rhs_evals + b.rhs_evals,
            accepted: a.accepted + b.accepted,
            rejected: a.rejected + b.rejected,
            restarts: a.restarts + b.restarts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::patient;

    #[test]
    fn exp_tanh_is_within_a_few_ulp_of_libm() {
        let mut worst: f64 = 0.0;
        for i in -400_000..=400_000 {
            let x = i as f64 * 1e-4;
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        for x in [-1e300, -750.0, -40.0, 1e-300, 0.0, 40.0, 750.0, 1e300] {
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst <= 4.5e-16, "{worst:e}");
        assert_eq!(tanh(f64::INFINITY), 1.0);
        assert_eq!(tanh(f64::NEG_INFINITY), -1.0);
    }

    #[test]
    fn basal_steady_state_holds_for_24h() {
        for name in crate::params::patient_names() {
            let p = patient(&name).unwrap();
            let basal = p.basal_u_per_min();
            let g0 = p.basal_glucose_mg_dl();
            let mut vp = VirtualPatient::new(p, SolverOptions::default());
            let mut worst: f64 = 0.0;
            for _ in 0..1440 {
                vp.step(0.0, basal).unwrap();
                worst = worst.max((vp.sc_glucose_mg_dl() - g0).abs());
            }
            // simglucose's x0 are rounded steady states; drift stays well below 0.1 mg/dL/day
            assert!(worst < 0.1, "{name}: drift {worst} mg/dL from {g0}");
        }
    }
}
