//! The ODE path: linear compartmental PK models integrated by the engine's DOPRI5.
//!
//! [`PkOde`] is the right-hand side of the mammillary model of [`crate::model`] as a
//! [`medtwin_core::OdeModel`] (states = compartment amounts in the order
//! `[depot (oral only), central, peripheral 1, peripheral 2]`, one input per compartment = a
//! zero-order infusion rate in amount/**min**, since the engine works in minutes):
//!
//! ```text
//! dA_depot/dt   = −k_a A_depot                                  + u_depot
//! dA_central/dt =  k_a A_depot − (k10 + Σ_p k1p) A_central + Σ_p kp1 A_p + u_central
//! dA_p/dt       =  k1p A_central − kp1 A_p                           + u_p
//! ```
//!
//! with `k10 = CL/V`, `k12 = Q/V`, `k21 = Q/V2`, `k13 = Q3/V`, `k31 = Q3/V3` (1/h, divided by
//! 60 in the right-hand side).
//!
//! [`simulate_amounts`] plays a NONMEM-style dose list through it: boluses are jumps of the state
//! (the integrator is reset after each), infusions switch the inputs on and off at their start and
//! end, `F` and `ALAG` apply to depot doses (CMT 1 of oral models; with a fixed `RATE`, `F`
//! changes the infusion's duration to `F·AMT/RATE`, as in NONMEM and mrgsolve), `ADDL` adds doses
//! every `II`, and `SS=1` resets the system, at the dose record's time, to the steady state of an
//! infinite series of identical records every `II`.
//!
//! ## Steady state without the closed form
//! The periodic state is found by simulating dosing intervals from an empty body until the state
//! at the record time repeats to 1e-13 relative (per state, against `max(|x_i|, 1e-6·max_j |x_j|)`).
//! This is model-agnostic: the same code gives the periodic state of the PK/PD systems of
//! [`crate::pd`], whose response states are nonlinear in the concentration (a linear solve
//! `(I − e^{Kτ}) x = b` would be cheaper for pure PK, but would not carry over). Each interval
//! restarts the integrator, so the interval map is a deterministic function of the state and the
//! iteration converges to the map's own fixed point; convergence is geometric with ratio
//! `e^(−λ_min τ)` (λ_min the slowest rate of the system), i.e. about `30/(λ_min τ)` intervals.
//! When integration noise stalls the iteration above 1e-13 it is accepted below 1e-10; beyond
//! [`MAX_SS_INTERVALS`] intervals it is an error. Infusions (and lagged doses) of the virtual
//! past records that are still running at the reset time continue after it.
//!
//! Dose records are played in time order (a stable sort, as NONMEM requires of a data set); an
//! `SS=1` record drops every earlier record (its running infusions and pending `ADDL` doses
//! included), as [`PkModel::amounts`] does.

use crate::model::{Absorption, ModelError, PkModel, PkParams};
use crate::Dose;
use medtwin_core::{ModelInfo, OdeModel, VariableInfo};
use medtwin_simulate::{Dopri5, Integrator, SolveError, SolverOptions};
use thiserror::Error;

/// Largest number of dosing intervals simulated to reach a steady state.
pub const MAX_SS_INTERVALS: usize = 200_000;

/// Why an ODE simulation failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OdeError {
    /// Invalid parameters or doses (same checks as the closed form).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The integrator failed.
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// A requested output time is not finite.
    #[error("output time {0} h is not finite")]
    BadTime(f64),
    /// The steady-state iteration did not become periodic.
    #[error("steady state of the dose at t = {time_h} h not reached after {intervals} intervals (last relative change {rel_change:e})")]
    SteadyStateNotReached {
        /// Dose record time, h.
        time_h: f64,
        /// Intervals simulated.
        intervals: usize,
        /// Largest relative change of the state over the last interval.
        rel_change: f64,
    },
}

fn var(name: &str, unit: &str, description: &str) -> VariableInfo {
    VariableInfo {
        name: name.into(),
        unit: unit.into(),
        description: description.into(),
    }
}

/// A linear 1/2/3-compartment PK model as an engine [`OdeModel`].
///
/// States: compartment amounts (amount unit), order as [`PkModel::n_compartments`]. Inputs: one
/// per compartment, the infusion rate into it in amount/min. Observable: the central
/// concentration `C` = central amount / `V` (amount/L). Time in minutes (engine convention).
#[derive(Debug, Clone)]
pub struct PkOde {
    model: PkModel,
    params: PkParams,
    /// k_a, k10, [(k1p, kp1)], 1/h.
    ka: f64,
    k10: f64,
    per: Vec<(f64, f64)>,
    info: ModelInfo,
}

impl PkOde {
    /// Build the right-hand side of `model` with parameters `p`.
    /// Errors: [`PkModel::validate`].
    pub fn new(model: PkModel, p: &PkParams) -> Result<Self, ModelError> {
        model.validate(p)?;
        let mut per = Vec::new();
        if model.n_peripheral() >= 1 {
            per.push((p.q2_l_per_h / p.v1_l, p.q2_l_per_h / p.v2_l));
        }
        if model.n_peripheral() == 2 {
            per.push((p.q3_l_per_h / p.v1_l, p.q3_l_per_h / p.v3_l));
        }
        let mut states = Vec::new();
        if model.absorption == Absorption::FirstOrder {
            states.push(var("depot", "1", "amount in the absorption depot"));
        }
        states.push(var("central", "1", "amount in the central compartment"));
        for i in 0..model.n_peripheral() {
            states.push(var(
                &format!("peripheral{}", i + 1),
                "1",
                "amount in a peripheral compartment",
            ));
        }
        let inputs = states
            .iter()
            .map(|s| {
                var(
                    &format!("rate_{}", s.name),
                    "1/min",
                    "zero-order infusion rate into the compartment (amount/min)",
                )
            })
            .collect();
        let info = ModelInfo {
            name: format!("pk-{}", model.name()),
            source: "linear mammillary compartment model (Gibaldi & Perrier, Pharmacokinetics, 2nd ed., 1982)".into(),
            states,
            inputs,
            observables: vec![var("C", "1/L", "central concentration (amount/L)")],
        };
        Ok(PkOde {
            model,
            params: *p,
            ka: p.ka_per_h,
            k10: p.cl_l_per_h / p.v1_l,
            per,
            info,
        })
    }

    /// The structural model.
    pub fn model(&self) -> PkModel {
        self.model
    }

    /// The parameters.
    pub fn params(&self) -> &PkParams {
        &self.params
    }

    /// Number of PK states (= [`PkModel::n_compartments`]).
    pub fn n_pk(&self) -> usize {
        self.model.n_compartments()
    }

    /// Central concentration (amount/L) of the PK state `x` (amounts).
    pub fn concentration(&self, x: &[f64]) -> f64 {
        x[self.model.central_index()] / self.params.v1_l
    }

    /// `dx` = the PK part of the right-hand side in amount per **minute**, for amounts `x` and
    /// inputs `u` (amount/min); only the first [`PkOde::n_pk`] entries are touched.
    pub fn pk_rhs(&self, x: &[f64], u: &[f64], dx: &mut [f64]) {
        const PER_MIN: f64 = 1.0 / 60.0;
        let ci = self.model.central_index();
        let mut dc = -self.k10 * x[ci];
        if ci == 1 {
            let absorbed = self.ka * x[0];
            dx[0] = -absorbed * PER_MIN + u[0];
            dc += absorbed;
        }
        for (i, &(k1p, kp1)) in self.per.iter().enumerate() {
            let flow = k1p * x[ci] - kp1 * x[ci + 1 + i];
            dx[ci + 1 + i] = flow * PER_MIN + u[ci + 1 + i];
            dc -= flow;
        }
        dx[ci] = dc * PER_MIN + u[ci];
    }
}

impl OdeModel for PkOde {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn rhs(&self, _t_min: f64, x: &[f64], u: &[f64], dx: &mut [f64]) {
        self.pk_rhs(x, u, dx);
    }
    fn observe(&self, x: &[f64], out: &mut [f64]) {
        out[0] = self.concentration(x);
    }
}

/// One administration after `F`/`ALAG`/`ADDL` bookkeeping: `amount` enters compartment `cmt`
/// (index) from `t` (h), as a bolus when `dur == 0`, else at `amount/dur` per hour.
#[derive(Debug, Clone, Copy)]
struct Admin {
    t: f64,
    cmt: usize,
    amount: f64,
    dur: f64,
}

/// A validated dose record: times in hours, `F` applied to the amount, `lag` to be added to
/// each administration time.
#[derive(Debug, Clone, Copy)]
struct Record {
    time: f64,
    lag: f64,
    cmt: usize,
    amount: f64,
    dur: f64,
    ii: f64,
    addl: u32,
    ss: bool,
}

impl Record {
    fn admin(&self, record_time: f64) -> Admin {
        Admin {
            t: record_time + self.lag,
            cmt: self.cmt,
            amount: self.amount,
            dur: self.dur,
        }
    }
    /// The record's own administrations (the dose and its `ADDL` repeats).
    fn push_admins(&self, out: &mut Vec<Admin>) {
        for j in 0..=self.addl {
            out.push(self.admin(self.time + j as f64 * self.ii));
        }
    }
}

/// Validate and convert doses, stably sorted by record time.
fn records(model: &PkModel, p: &PkParams, doses: &[Dose]) -> Result<Vec<Record>, ModelError> {
    model.validate(p)?;
    let mut out = Vec::with_capacity(doses.len());
    for d in doses {
        let cmt = model.dose_compartment(d)?;
        let bad = |reason: String| ModelError::BadDose {
            time_h: d.time_h,
            reason,
        };
        if !d.time_h.is_finite() {
            return Err(bad("dose time is not finite".into()));
        }
        if !(d.amount.is_finite() && d.amount >= 0.0) {
            return Err(bad(format!("amount {} must be finite and >= 0", d.amount)));
        }
        if !(d.rate.is_finite() && d.rate >= 0.0) {
            return Err(bad(format!("rate {} must be finite and >= 0", d.rate)));
        }
        if (d.ss || d.addl > 0) && !(d.ii_h > 0.0 && d.ii_h.is_finite()) {
            return Err(bad("SS or ADDL needs II > 0".into()));
        }
        let depot = model.absorption == Absorption::FirstOrder && d.cmt == 1;
        let (amount, lag) = if depot {
            (d.amount * p.f_bio, p.lag_h)
        } else {
            (d.amount, 0.0)
        };
        let dur = if d.rate > 0.0 { amount / d.rate } else { 0.0 };
        if d.ss && dur > d.ii_h {
            return Err(bad(format!(
                "steady-state infusion of {dur} h is longer than its interval II = {} h",
                d.ii_h
            )));
        }
        out.push(Record {
            time: d.time_h,
            lag,
            cmt,
            amount,
            dur,
            ii: d.ii_h,
            addl: d.addl,
            ss: d.ss,
        });
    }
    out.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(out)
}

/// Spans (minutes) below which one explicit Heun step replaces the adaptive integrator.
const TINY_SPAN_MIN: f64 = 1e-6;

/// Integrates a dosed model between events.
struct Runner<'a, M: OdeModel + ?Sized> {
    model: &'a M,
    solver: Dopri5,
    u: Vec<f64>,
    bps: Vec<f64>,
}

impl<M: OdeModel + ?Sized> Runner<'_, M> {
    /// Advance `x` from `t0` to `t_end` (h, may be infinite: stop after the last event/output).
    /// `x` holds everything administered before `t0`; administrations at `t ≥ t0` are applied
    /// (boluses at exactly `t_end` are not), infusions that started before `t0` contribute their
    /// remaining part. `outputs` (time, row) with times in `[t0, t_end)`, sorted, get the state
    /// after the boluses at their time.
    fn run(
        &mut self,
        x: &mut [f64],
        t0: f64,
        t_end: f64,
        admins: &[Admin],
        outputs: &[(f64, usize)],
        out: &mut [Vec<f64>],
    ) -> Result<(), OdeError> {
        self.bps.clear();
        self.bps.push(t0);
        for a in admins {
            for t in [a.t, a.t + a.dur] {
                if t >= t0 && t < t_end {
                    self.bps.push(t);
                }
            }
        }
        self.bps.extend(outputs.iter().map(|o| o.0));
        if t_end.is_finite() {
            self.bps.push(t_end);
        }
        self.bps.sort_by(f64::total_cmp);
        self.bps.dedup();
        let bps = std::mem::take(&mut self.bps);
        let mut cur = t0;
        let mut next_out = 0;
        let result = (|| {
            for &bp in &bps {
                if bp > cur {
                    self.model_step(x, cur, bp)?;
                    cur = bp;
                }
                if bp >= t_end {
                    break;
                }
                let mut jumped = false;
                for a in admins.iter().filter(|a| a.dur <= 0.0 && a.t == bp) {
                    x[a.cmt] += a.amount;
                    jumped = true;
                }
                if jumped {
                    self.solver.reset();
                }
                self.u.iter_mut().for_each(|v| *v = 0.0);
                for a in admins
                    .iter()
                    .filter(|a| a.dur > 0.0 && a.t <= bp && bp < a.t + a.dur)
                {
                    self.u[a.cmt] += a.amount / a.dur / 60.0;
                }
                while next_out < outputs.len() && outputs[next_out].0 <= bp {
                    out[outputs[next_out].1].copy_from_slice(x);
                    next_out += 1;
                }
            }
            Ok(())
        })();
        self.bps = bps;
        result
    }

    fn model_step(&mut self, x: &mut [f64], t0_h: f64, t1_h: f64) -> Result<(), OdeError> {
        let (t0, t1) = (t0_h * 60.0, t1_h * 60.0);
        let dt = t1 - t0;
        if dt < TINY_SPAN_MIN {
            // Two event times a few ulps apart (e.g. 3·0.2 and 0.6): DOPRI5 refuses steps below
            // 1e-10 min, so bridge the gap with one Heun (2nd-order) step, local error
            // ~ dt³·|x'''|/12 ≪ 1e-20 relative.
            let n = x.len();
            let (mut k1, mut k2, mut y) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            self.model.rhs(t0, x, &self.u, &mut k1);
            for i in 0..n {
                y[i] = x[i] + dt * k1[i];
            }
            self.model.rhs(t1, &y, &self.u, &mut k2);
            for i in 0..n {
                x[i] += 0.5 * dt * (k1[i] + k2[i]);
            }
            return Ok(());
        }
        self.solver.integrate(self.model, t0, t1, x, &self.u)?;
        Ok(())
    }
}

/// Simulate a dosed model whose first `model.n_compartments()` states are the PK amounts (the
/// model's inputs are the infusion rates into them, amount/min) and whose other states start at
/// `x_init`'s values; returns the full state at each of `times_h` (rows in the order given).
pub(crate) fn simulate_states<M: OdeModel + ?Sized>(
    ode: &M,
    model: &PkModel,
    p: &PkParams,
    doses: &[Dose],
    times_h: &[f64],
    x_init: &[f64],
    opts: SolverOptions,
) -> Result<Vec<Vec<f64>>, OdeError> {
    if let Some(&t) = times_h.iter().find(|t| !t.is_finite()) {
        return Err(OdeError::BadTime(t));
    }
    let recs = records(model, p, doses)?;
    let n = x_init.len();
    let mut out = vec![vec![0.0; n]; times_h.len()];
    let mut outputs: Vec<(f64, usize)> = times_h.iter().copied().zip(0..).collect();
    outputs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut runner = Runner {
        model: ode,
        solver: Dopri5::new(n, opts),
        u: vec![0.0; model.n_compartments()],
        bps: Vec::new(),
    };
    // Segments start at 0 (no reset) and at each SS record; a segment plays its first record
    // and the ones after it until the next SS record.
    let mut starts: Vec<Option<usize>> = vec![None];
    starts.extend((0..recs.len()).filter(|&i| recs[i].ss).map(Some));
    let mut admins = Vec::new();
    for (si, &start) in starts.iter().enumerate() {
        let first = start.unwrap_or(0);
        let next = starts.get(si + 1).map(|s| s.unwrap_or(0));
        let end_rec = next.unwrap_or(recs.len());
        let t_end = next.map_or(f64::INFINITY, |i| recs[i].time);
        admins.clear();
        for r in &recs[first..end_rec] {
            r.push_admins(&mut admins);
        }
        let mut x = x_init.to_vec();
        let t0 = match start {
            Some(i) => {
                let r = recs[i];
                x = steady_state(&mut runner, &r, x_init)?;
                for j in 1..=past_intervals(&r) {
                    admins.push(r.admin(r.time - j as f64 * r.ii));
                }
                r.time
            }
            None => {
                let first_admin = admins.iter().map(|a| a.t).fold(f64::INFINITY, f64::min);
                let first_out = outputs.first().map_or(f64::INFINITY, |o| o.0);
                first_admin.min(first_out)
            }
        };
        if !t0.is_finite() {
            continue;
        }
        let lo = outputs.partition_point(|o| o.0 < t0);
        let hi = outputs.partition_point(|o| o.0 < t_end);
        if t_end <= t0 {
            continue;
        }
        runner.solver.reset();
        runner.run(&mut x, t0, t_end, &admins, &outputs[lo..hi], &mut out)?;
    }
    // Every output lies in exactly one segment: the first covers [min(first dose, first
    // output), first SS record), the others [SS record, next SS record).
    Ok(out)
}

/// Number of earlier intervals whose administration can still act at a record time.
fn past_intervals(r: &Record) -> usize {
    ((r.lag + r.dur) / r.ii).floor() as usize + 1
}

/// The state at the time of an SS record: the periodic state, at its record times, of an
/// infinite series of the record's administrations every `II` (see the module docs).
fn steady_state<M: OdeModel + ?Sized>(
    runner: &mut Runner<'_, M>,
    r: &Record,
    x_init: &[f64],
) -> Result<Vec<f64>, OdeError> {
    let tau = r.ii;
    // One interval [0, τ): the record at 0 and the past ones at −jτ.
    let admins: Vec<Admin> = (0..=past_intervals(r))
        .map(|j| r.admin(-(j as f64) * tau))
        .collect();
    let mut x = x_init.to_vec();
    let mut prev = x.clone();
    let mut best = f64::INFINITY;
    let mut since_best = 0;
    let mut change = f64::INFINITY;
    for k in 1..=MAX_SS_INTERVALS {
        runner.solver.reset();
        runner.run(&mut x, 0.0, tau, &admins, &[], &mut [])?;
        let big = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        change = x
            .iter()
            .zip(&prev)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1e-6 * big).max(f64::MIN_POSITIVE))
            .fold(0.0, f64::max);
        if k > 1 && (change <= 1e-13 || big == 0.0) {
            return Ok(x);
        }
        if change < best {
            best = change;
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= 20 && best <= 1e-10 {
                return Ok(x);
            }
        }
        prev.copy_from_slice(&x);
    }
    Err(OdeError::SteadyStateNotReached {
        time_h: r.time,
        intervals: MAX_SS_INTERVALS,
        rel_change: change,
    })
}

/// Compartment amounts at each of `times_h` (h, any order) after `doses`, by integrating
/// [`PkOde`] with the engine's DOPRI5 under `opts` (tolerances apply to amounts; `h_max_min` and
/// `max_steps` in minutes/steps per event interval).
///
/// Returns one row per time (in the order given), each with [`PkModel::n_compartments`] amounts
/// in the order `[depot (oral only), central, peripheral 1, peripheral 2]` (the doses' amount
/// unit). A bolus at exactly an output time is included, as in [`PkModel::amounts`].
///
/// Errors: invalid parameters or doses ([`ModelError`], the checks of [`PkModel::amounts`] plus
/// non-finite or negative amounts/rates), a non-finite output time, an integration failure
/// ([`SolveError`]) or a steady state not reached ([`OdeError::SteadyStateNotReached`]).
pub fn simulate_amounts(
    model: &PkModel,
    p: &PkParams,
    doses: &[Dose],
    times_h: &[f64],
    opts: SolverOptions,
) -> Result<Vec<Vec<f64>>, OdeError> {
    let ode = PkOde::new(*model, p)?;
    let x0 = vec![0.0; model.n_compartments()];
    simulate_states(&ode, model, p, doses, times_h, &x0, opts)
}

/// Central concentrations (amount/L) at `times_h` by the ODE path: [`simulate_amounts`]'s
/// central column divided by `V`. Errors as [`simulate_amounts`].
pub fn simulate_concentrations(
    model: &PkModel,
    p: &PkParams,
    doses: &[Dose],
    times_h: &[f64],
    opts: SolverOptions,
) -> Result<Vec<f64>, OdeError> {
    let ci = model.central_index();
    Ok(simulate_amounts(model, p, doses, times_h, opts)?
        .into_iter()
        .map(|row| row[ci] / p.v1_l)
        .collect())
}
