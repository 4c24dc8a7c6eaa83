//! Forward parameter sensitivities of a time course by the simultaneous-corrector method
//! (Maly & Petzold 1996, "Numerical methods and software for sensitivity analysis of
//! differential-algebraic systems", Appl. Numer. Math. 20:57–79; CVODES' `CV_SIMULTANEOUS`,
//! Hindmarsh et al. 2005): the states `x` and the scaled sensitivities `σ_k = p̄_k ∂x/∂p_k`
//! form one system
//!
//! ```text
//! ẋ = f(t, x, p),     σ̇_k = J(t, x) σ_k + p̄_k ∂f/∂p_k (t, x, p),     k = 1..np
//! ```
//!
//! integrated by the engine's variable-order BDF/NDF stepper itself (`medtwin_simulate::bdf`:
//! this module only supplies the augmented right-hand side through `BdfSystem`), with the error
//! test over the states, or states *and* sensitivities (CVODES' `errconS`,
//! [`SensOptions::error_test_sensitivities`]), and a block-diagonal Newton matrix `I − c·J`
//! (one sparse LU for every block, the simultaneous-corrector approximation). `J = ∂f/∂x` is the analytic sparse Jacobian of
//! `ad.rs` (finite differences where the model is not differentiable there); `∂f/∂p_k` is a
//! central difference of the right-hand side at fixed state with the model re-initialised at
//! `p_k ± ε p̄_k` (ε = 5·10⁻⁶, so initial assignments that read `p_k` are followed); initial
//! sensitivities `∂x(t₀)/∂p_k` are central differences of the re-initialised initial state
//! (both are algebraic, no ODE is differenced). `p̄_k = |p_k|` (1 when `p_k = 0`).
//!
//! A "parameter" here is a [`SensParam`]: a set of model ids (parameters, compartments,
//! species initial values) that all take one value, as a PEtab parameter mapped to several
//! model entities by a condition table.
//!
//! Switches of conditions on time alone (drug inputs written as piecewise functions of time;
//! `SbmlModel::breakpoints`) are handled as by the state simulation: the right-hand side is
//! evaluated between the two switch times around the current time (`sim::switch_window`), the
//! stepper restarts at each, and where a switch time `T` depends on a parameter the
//! sensitivities jump by `(f⁻ − f⁺)·∂T/∂p_k` (`f∓`: the right-hand sides before and after the
//! switch; `∂T/∂p_k` by central differences of `T`'s expression at the perturbed constants),
//! as for an event at a parameter-dependent time (Hindmarsh et al. 2005, CVODES guide §2.7).
//!
//! Not supported (error [`SbmlError::Options`]): models with events, `delay()` or algebraic
//! rules.

#![allow(clippy::needless_range_loop)] // index loops over blocks and coefficient tables

use crate::ad::AnalyticJac;
use crate::bdf::{Bdf, BdfSystem, StiffStructures};
use crate::model::SbmlModel;
use crate::sparse::Jacobian;
use crate::SbmlError;
use std::time::Instant;

/// Relative step of the parameter differences.
const EPS: f64 = 5e-6;

/// One sensitivity parameter: the model ids it sets (all to `value`). An empty `ids` list is a
/// parameter the model does not read (its sensitivities only carry the initial ones given to
/// [`simulate_sensitivities`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SensParam {
    /// Model ids (parameter, compartment or species) whose value is this parameter.
    pub ids: Vec<String>,
    /// The parameter's value (the current value of every id in `ids`).
    pub value: f64,
}

/// Options of [`simulate_sensitivities`].
#[derive(Debug, Clone, PartialEq)]
pub struct SensOptions {
    /// Start time (model time units), `<=` every output time.
    pub start: f64,
    /// Relative tolerance (states and sensitivities).
    pub rtol: f64,
    /// Absolute tolerance, scaled per state as in [`crate::SimulateOptions::atol`] (the
    /// scaled sensitivities `σ_k` use their state's tolerance).
    pub atol: f64,
    /// Output variables (SBML ids, reported as by [`crate::simulate_course`] with `vars`).
    pub vars: Vec<String>,
    /// Give up with [`SbmlError::Simulation`] ("time limit exceeded") after this instant.
    pub deadline: Option<Instant>,
    /// Whether the sensitivities take part in the local error test (CVODES' `errconS`); false:
    /// only the states do (the sensitivities still converge in the Newton iteration). False
    /// is 2–30× faster on the PEtab benchmarks at the same agreement with finite differences.
    pub error_test_sensitivities: bool,
}

/// Result of [`simulate_sensitivities`]: per output time, the states, the variables, and
/// their derivatives with respect to every parameter (unscaled, `∂/∂p_k`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SensCourse {
    /// State vectors, one per output time (length `n_states`).
    pub states: Vec<Vec<f64>>,
    /// `∂x_i/∂p_k` at index `k * n_states + i`, one vector per output time.
    pub state_sens: Vec<Vec<f64>>,
    /// Values of `vars`, one vector per output time.
    pub vars: Vec<Vec<f64>>,
    /// `∂v_j/∂p_k` at index `k * vars.len() + j`, one vector per output time.
    pub var_sens: Vec<Vec<f64>>,
    /// Accepted BDF steps.
    pub steps: u64,
}

/// Initial state of `model` and its sensitivities `∂x_i(t₀)/∂p_k` (index `k * n + i`), by
/// central differences of the model re-initialised at `p_k (1 ± ε)` (see the module docs).
///
/// Errors: [`SbmlError::Options`] for an unknown id or one set by an initial assignment.
pub fn initial_sensitivities(
    model: &SbmlModel,
    params: &[SensParam],
) -> Result<(Vec<f64>, Vec<f64>), SbmlError> {
    let pert = Perturbed::new(model, params)?;
    Ok((model.initial_state(), pert.s0))
}

/// Bases of the model re-initialised at `p_k ± ε p̄_k`, and the initial sensitivities.
struct Perturbed {
    /// Per parameter: (base at +, base at −), None for parameters without ids.
    bases: Vec<Option<(Vec<f64>, Vec<f64>)>>,
    pbar: Vec<f64>,
    s0: Vec<f64>,
}

impl Perturbed {
    fn new(model: &SbmlModel, params: &[SensParam]) -> Result<Self, SbmlError> {
        let n = model.state_slots.len();
        let mut bases = Vec::with_capacity(params.len());
        let mut pbar = Vec::with_capacity(params.len());
        let mut s0 = vec![0.0; n * params.len()];
        for (k, p) in params.iter().enumerate() {
            if !p.value.is_finite() {
                return Err(SbmlError::Options(format!(
                    "sensitivity parameter {:?}: value {} is not finite",
                    p.ids, p.value
                )));
            }
            let pb = if p.value != 0.0 { p.value.abs() } else { 1.0 };
            pbar.push(pb);
            if p.ids.is_empty() {
                bases.push(None);
                continue;
            }
            let h = EPS * pb;
            let at = |v: f64| -> Result<SbmlModel, SbmlError> {
                let mut m = model.clone();
                for id in &p.ids {
                    m.set_value(id, v)?;
                }
                Ok(m)
            };
            let (mp, mm) = (at(p.value + h)?, at(p.value - h)?);
            let (xp, xm) = (mp.initial_state(), mm.initial_state());
            for i in 0..n {
                s0[k * n + i] = (xp[i] - xm[i]) / (2.0 * h);
            }
            bases.push(Some((mp.base, mm.base)));
        }
        Ok(Perturbed { bases, pbar, s0 })
    }
}

/// Slot values at (t, x) with constants from `base` (the derived program re-run).
fn fill_with(
    m: &SbmlModel,
    base: &[f64],
    t: f64,
    x: &[f64],
    vals: &mut Vec<f64>,
    stack: &mut Vec<f64>,
) {
    vals.clear();
    vals.extend_from_slice(base);
    for (i, &s) in m.state_slots.iter().enumerate() {
        vals[s] = x[i];
    }
    match &m.tape {
        Some(tape) => tape.run(vals, t),
        None => {
            for (sl, code) in &m.derived {
                vals[*sl] = code.eval(vals, t, stack);
            }
        }
    }
}

/// The augmented system (states and scaled sensitivities).
struct Aug<'a> {
    m: &'a SbmlModel,
    n: usize,
    np: usize,
    pert: Perturbed,
    jac: Jacobian,
    /// Buffer of the Jacobian evaluated in every right-hand side.
    jrhs: Option<Jacobian>,
    ad: Option<AnalyticJac>,
    fd_floor: Vec<f64>,
    vals: Vec<f64>,
    stack: Vec<f64>,
    f0: Vec<f64>,
    f1: Vec<f64>,
    /// Times at which the right-hand side is evaluated (`sim::switch_window`), and those at
    /// which the perturbed right-hand sides of `∂f/∂p` are: narrower by how far the
    /// perturbations move the switch times, so that no perturbed switch flips inside the
    /// window (its effect is the jump of [`Aug::switch_jump`], not a difference quotient).
    window: (f64, f64),
    pert_window: (f64, f64),
}

impl Aug<'_> {
    fn state_rhs(&mut self, base: Option<(usize, bool)>, t: f64, x: &[f64], out: &mut [f64]) {
        let b: &[f64] = match base {
            None => &self.m.base,
            Some((k, plus)) => {
                let (p, mi) = self.pert.bases[k].as_ref().expect("perturbed base");
                if plus {
                    p
                } else {
                    mi
                }
            }
        };
        fill_with(self.m, b, t, x, &mut self.vals, &mut self.stack);
        self.m.derivs_from(t, &self.vals, out, &mut self.stack);
    }

    /// Evaluate ∂f/∂x at (t, x) into `jac` (analytic, else finite differences from
    /// `f0 = f(t, x)`).
    fn state_jacobian(&mut self, t: f64, x: &[f64], f0: &[f64], jac: &mut Jacobian) {
        if let Some(ad) = self.ad.as_mut() {
            ad.eval(self.m, t, x, jac);
        } else {
            let (m, vals, stack) = (self.m, &mut self.vals, &mut self.stack);
            let mut rhs = |t: f64, y: &[f64], out: &mut [f64]| {
                fill_with(m, &m.base, t, y, vals, stack);
                m.derivs_from(t, vals, out, stack);
            };
            jac.eval_fd(t, x, f0, &self.fd_floor, &mut rhs);
        }
    }

    /// `p̄_k ∂T/∂p_k` for every parameter of the switch time `T` (index `code` into the
    /// model's `switch_times`), by central differences at the perturbed constants.
    fn switch_slopes(&mut self, t: f64, code: usize, x: &[f64]) -> Vec<f64> {
        let m = self.m;
        let mut dts = vec![0.0; self.np];
        for k in 0..self.np {
            if let Some((bp, bm)) = &self.pert.bases[k] {
                let mut at = |b: &[f64]| {
                    fill_with(m, b, t, x, &mut self.vals, &mut self.stack);
                    m.switch_times[code].eval(&self.vals, t, &mut self.stack)
                };
                // The bases are at p_k ± ε p̄_k.
                let d = (at(bp) - at(bm)) / (2.0 * EPS);
                dts[k] = if d.is_finite() { d } else { 0.0 };
            }
        }
        dts
    }

    /// At the switch time `t` (index `code`), between the windows `before` and `after`: add
    /// `(f⁻ − f⁺)·p̄_k ∂T/∂p_k` to every scaled sensitivity whose parameter moves the switch.
    fn switch_jump(
        &mut self,
        t: f64,
        code: usize,
        before: (f64, f64),
        after: (f64, f64),
        y: &mut [f64],
    ) {
        let n = self.n;
        let x = y[..n].to_vec();
        let dts = self.switch_slopes(t, code, &x);
        if dts.iter().all(|d| *d == 0.0) {
            return;
        }
        let (mut fm, mut fp) = (vec![0.0; n], vec![0.0; n]);
        self.state_rhs(None, t.clamp(before.0, before.1), &x, &mut fm);
        self.state_rhs(None, t.clamp(after.0, after.1), &x, &mut fp);
        for (k, dt) in dts.iter().enumerate() {
            if *dt == 0.0 {
                continue;
            }
            for i in 0..n {
                y[(k + 1) * n + i] += (fm[i] - fp[i]) * dt;
            }
        }
    }

    /// Right-hand side of the augmented system (at time `t` clamped to the window).
    fn aug_rhs(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        let t = t.clamp(self.window.0, self.window.1);
        let n = self.n;
        let x = &y[..n];
        let (o0, rest) = out.split_at_mut(n);
        self.state_rhs(None, t, x, o0);
        let mut jac = self.jrhs.take().unwrap_or_else(|| self.jac.clone());
        self.state_jacobian(t, x, o0, &mut jac);
        let mut f0 = std::mem::take(&mut self.f0);
        let mut f1 = std::mem::take(&mut self.f1);
        for k in 0..self.np {
            let s = &y[(k + 1) * n..(k + 2) * n];
            let o = &mut rest[k * n..(k + 1) * n];
            for i in 0..n {
                let mut v = 0.0;
                for e in jac.ptr[i]..jac.ptr[i + 1] {
                    v += jac.val[e] * s[jac.col[e]];
                }
                o[i] = v;
            }
            if self.pert.bases[k].is_some() {
                let tp = t.clamp(self.pert_window.0, self.pert_window.1);
                self.state_rhs(Some((k, true)), tp, x, &mut f0);
                self.state_rhs(Some((k, false)), tp, x, &mut f1);
                for i in 0..n {
                    o[i] += (f0[i] - f1[i]) / (2.0 * EPS);
                }
            }
        }
        self.f0 = f0;
        self.f1 = f1;
        self.jrhs = Some(jac);
    }

    /// Variables at (t, x) and their scaled sensitivities (index `k * nv + j`).
    fn outputs(&mut self, t: f64, y: &[f64], slots: &[usize], vals_out: &mut Vec<f64>) -> Vec<f64> {
        let n = self.n;
        let nv = slots.len();
        let x = &y[..n];
        fill_with(self.m, &self.m.base, t, x, &mut self.vals, &mut self.stack);
        vals_out.clear();
        vals_out.extend(slots.iter().map(|&s| self.vals[s]));
        let mut sens = vec![0.0; nv * self.np];
        let mut xp = vec![0.0; n];
        for k in 0..self.np {
            let s = &y[(k + 1) * n..(k + 2) * n];
            let mut side = |sign: f64, this: &mut Self| -> Vec<f64> {
                for i in 0..n {
                    xp[i] = x[i] + sign * EPS * s[i];
                }
                let b: &[f64] = match &this.pert.bases[k] {
                    None => &this.m.base,
                    Some((p, mi)) => {
                        if sign > 0.0 {
                            p
                        } else {
                            mi
                        }
                    }
                };
                fill_with(this.m, b, t, &xp, &mut this.vals, &mut this.stack);
                slots.iter().map(|&sl| this.vals[sl]).collect()
            };
            let plus = side(1.0, self);
            let minus = side(-1.0, self);
            for j in 0..nv {
                sens[k * nv + j] = (plus[j] - minus[j]) / (2.0 * EPS);
            }
        }
        sens
    }
}

/// The engine's BDF/NDF (`medtwin_simulate::bdf`) integrates the augmented system
/// `y = (x, σ_1, …, σ_np)` in blocks of the `n` states, one LU of `I − c·J` for every block.
impl BdfSystem for Aug<'_> {
    fn rhs(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.aug_rhs(t, y, out);
    }

    fn jacobian(&mut self, t: f64, y: &[f64], f: &[f64], jac: &mut Jacobian) {
        let n = self.n;
        let t = t.clamp(self.window.0, self.window.1);
        self.state_jacobian(t, &y[..n], &f[..n], jac);
    }

    fn name(&self, i: usize) -> String {
        let id = &self.m.slots[self.m.state_slots[i % self.n]].id;
        if i < self.n {
            id.clone()
        } else {
            format!("sensitivity of {id} to parameter {}", i / self.n)
        }
    }
}

/// Simulate `model` from `opts.start` to the output `times` with forward sensitivities with
/// respect to `params` (see the module docs). `init`: the initial state and its unscaled
/// sensitivities (index `k * n + i`); None: the model's initial state and
/// [`initial_sensitivities`].
///
/// Errors: [`SbmlError::Options`] (events, `delay()`, algebraic rules, unknown or assigned
/// ids, unknown `vars`, unsorted or early times, wrong `init` lengths),
/// [`SbmlError::Simulation`] (step-size underflow, non-finite values, time limit).
pub fn simulate_sensitivities(
    model: &SbmlModel,
    params: &[SensParam],
    times: &[f64],
    init: Option<(&[f64], &[f64])>,
    opts: &SensOptions,
) -> Result<SensCourse, SbmlError> {
    if !model.events.is_empty() || !model.delays.is_empty() || !model.alg_vars.is_empty() {
        return Err(SbmlError::Options(
            "sensitivities: models with events, delay() or algebraic rules are not supported"
                .into(),
        ));
    }
    if times.windows(2).any(|w| w[1] < w[0]) || times.iter().any(|&t| t.is_nan() || t < opts.start)
    {
        return Err(SbmlError::Options(
            "sensitivities: output times must be sorted and >= the start".into(),
        ));
    }
    let owned;
    let model = if model.init_time != opts.start {
        let mut c = model.clone();
        c.compute_initial(opts.start);
        owned = c;
        &owned
    } else {
        model
    };
    let slots: Vec<usize> =
        opts.vars
            .iter()
            .map(|v| {
                model.ids.get(v).copied().ok_or_else(|| {
                    SbmlError::Options(format!("sensitivities: unknown variable '{v}'"))
                })
            })
            .collect::<Result<_, _>>()?;
    let n = model.state_slots.len();
    let np = params.len();
    let pert = Perturbed::new(model, params)?;
    let big = n * (1 + np);
    let mut y0 = vec![0.0; big];
    match init {
        Some((x0, s0)) => {
            if x0.len() != n || s0.len() != n * np {
                return Err(SbmlError::Options(format!(
                    "sensitivities: initial state needs {n} values and {} sensitivities",
                    n * np
                )));
            }
            y0[..n].copy_from_slice(x0);
            for k in 0..np {
                for i in 0..n {
                    y0[(k + 1) * n + i] = s0[k * n + i] * pert.pbar[k];
                }
            }
        }
        None => {
            y0[..n].copy_from_slice(&model.initial_state());
            for k in 0..np {
                for i in 0..n {
                    y0[(k + 1) * n + i] = pert.s0[k * n + i] * pert.pbar[k];
                }
            }
        }
    }
    let weights = model.atol_weights(&y0[..n]);
    let atol_x: Vec<f64> = weights.iter().map(|w| opts.atol * w).collect();
    let atol: Vec<f64> = (0..big).map(|i| atol_x[i % n.max(1)]).collect();
    let (jac, lu, ad) = StiffStructures::parts(model);
    let pbar = pert.pbar.clone();
    let mut aug = Aug {
        m: model,
        n,
        np,
        pert,
        jac: jac.clone(),
        jrhs: Some(jac.clone()),
        ad,
        fd_floor: atol_x.iter().map(|a| a / opts.rtol.max(1e-300)).collect(),
        vals: Vec::new(),
        stack: Vec::new(),
        f0: vec![0.0; n],
        f1: vec![0.0; n],
        window: (f64::NEG_INFINITY, f64::INFINITY),
        pert_window: (f64::NEG_INFINITY, f64::INFINITY),
    };
    let t_end = times.last().copied().unwrap_or(opts.start);
    // Switch times up to the last output (one at the last output changes nothing after it).
    let switches = model.breakpoints(opts.start, t_end);
    // How far the parameter perturbations move each switch time (twice, for safety).
    let x0 = y0[..n].to_vec();
    let moves: Vec<f64> = switches
        .iter()
        .map(|&(ts, code)| {
            let d = aug.switch_slopes(ts, code, &x0);
            2.0 * EPS * d.iter().fold(0.0f64, |a, v| a.max(v.abs()))
        })
        .collect();
    // The windows of segment `i` (between switches i − 1 and i).
    let window_before = |i: usize| {
        let lo = if i == 0 {
            f64::NEG_INFINITY
        } else {
            switches[i - 1].0
        };
        let hi = switches.get(i).map(|b| b.0).unwrap_or(f64::INFINITY);
        let w = crate::sim::switch_window(lo, hi);
        let shrink = (
            if i == 0 { 0.0 } else { moves[i - 1] },
            moves.get(i).copied().unwrap_or(0.0),
        );
        let pw = (w.0 + shrink.0, w.1 - shrink.1);
        let pw = if pw.0 <= pw.1 {
            pw
        } else {
            let mid = 0.5 * (w.0 + w.1);
            (mid, mid)
        };
        (w, pw)
    };
    (aug.window, aug.pert_window) = window_before(0);
    let mut next_switch = 0;
    let mut bdf = Bdf::new(
        n,
        big,
        opts.rtol,
        atol,
        (t_end - opts.start).max(1e-300),
        jac,
        lu,
    );
    bdf.deadline = opts.deadline;
    bdf.context = "sensitivities: ";
    bdf.max_steps = 50_000;
    if !opts.error_test_sensitivities {
        bdf.err_len = n;
    }
    let mut out = SensCourse::default();
    let mut y = y0;
    let mut t = opts.start;
    let mut vbuf = Vec::new();
    for &to in times {
        // Switch times up to this output: integrate to each, jump, restart after it.
        while let Some(&(ts, code)) = switches.get(next_switch).filter(|b| b.0 <= to) {
            if n > 0 && ts > t {
                bdf.integrate(&mut aug, t, ts, &mut y)?;
            }
            t = ts;
            next_switch += 1;
            let (before, after) = (window_before(next_switch - 1), window_before(next_switch));
            aug.switch_jump(ts, code, before.0, after.0, &mut y);
            (aug.window, aug.pert_window) = after;
            bdf.reset();
        }
        if to > t {
            if n > 0 {
                bdf.integrate(&mut aug, t, to, &mut y)?;
            }
            t = to;
        }
        let vs = aug.outputs(t, &y, &slots, &mut vbuf);
        let nv = slots.len();
        out.states.push(y[..n].to_vec());
        let mut ss = vec![0.0; n * np];
        for k in 0..np {
            for i in 0..n {
                ss[k * n + i] = y[(k + 1) * n + i] / pbar[k];
            }
        }
        out.state_sens.push(ss);
        out.vars.push(vbuf.clone());
        out.var_sens
            .push((0..nv * np).map(|e| vs[e] / pbar[e / nv.max(1)]).collect());
    }
    out.steps = bdf.stats.steps;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_sbml, simulate_course, Course, Method, SimulateOptions};

    const HEAD: &str = r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2"><model id="m">"#;
    const MATH: &str = r#"<math xmlns="http://www.w3.org/1998/Math/MathML">"#;

    /// A ⇌ B in compartment c (size 2), A's initial concentration set by an initial assignment
    /// 2·a0, observable `obs = A + 3 B` by an assignment rule.
    fn reversible() -> String {
        format!(
            r#"{HEAD}<listOfCompartments><compartment id="c" size="2" constant="true"/></listOfCompartments>
<listOfSpecies><species id="A" compartment="c" initialConcentration="1" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
<species id="B" compartment="c" initialConcentration="0.5" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/></listOfSpecies>
<listOfParameters><parameter id="k1" value="0.7" constant="true"/><parameter id="k2" value="0.2" constant="true"/>
<parameter id="a0" value="1.5" constant="true"/><parameter id="obs" value="0" constant="false"/></listOfParameters>
<listOfInitialAssignments><initialAssignment symbol="A">{MATH}<apply><times/><cn>2</cn><ci>a0</ci></apply></math></initialAssignment></listOfInitialAssignments>
<listOfRules><assignmentRule variable="obs">{MATH}<apply><plus/><ci>A</ci><apply><times/><cn>3</cn><ci>B</ci></apply></apply></math></assignmentRule></listOfRules>
<listOfReactions>
<reaction id="r1" reversible="false"><listOfReactants><speciesReference species="A" stoichiometry="1" constant="true"/></listOfReactants><listOfProducts><speciesReference species="B" stoichiometry="1" constant="true"/></listOfProducts>
<kineticLaw>{MATH}<apply><times/><ci>c</ci><ci>k1</ci><ci>A</ci></apply></math></kineticLaw></reaction>
<reaction id="r2" reversible="false"><listOfReactants><speciesReference species="B" stoichiometry="1" constant="true"/></listOfReactants><listOfProducts><speciesReference species="A" stoichiometry="1" constant="true"/></listOfProducts>
<kineticLaw>{MATH}<apply><times/><ci>c</ci><ci>k2</ci><ci>B</ci><ci>B</ci></apply></math></kineticLaw></reaction>
</listOfReactions></model></sbml>"#
        )
    }

    /// Robertson's stiff kinetics with its three rate constants as parameters.
    fn robertson() -> String {
        let rr =
            |v: &str, m: &str| format!(r#"<rateRule variable="{v}">{MATH}{m}</math></rateRule>"#);
        let a = "<apply><times/><ci>k1</ci><ci>y1</ci></apply>";
        let b = "<apply><times/><ci>k2</ci><ci>y2</ci><ci>y3</ci></apply>";
        let c = "<apply><times/><ci>k3</ci><ci>y2</ci><ci>y2</ci></apply>";
        format!(
            r#"{HEAD}<listOfParameters><parameter id="k1" value="0.04" constant="true"/><parameter id="k2" value="1e4" constant="true"/>
<parameter id="k3" value="3e7" constant="true"/><parameter id="y1" value="1" constant="false"/><parameter id="y2" value="0" constant="false"/>
<parameter id="y3" value="0" constant="false"/></listOfParameters><listOfRules>{}{}{}</listOfRules></model></sbml>"#,
            rr(
                "y1",
                &format!("<apply><plus/><apply><minus/>{a}</apply>{b}</apply>")
            ),
            rr(
                "y2",
                &format!("<apply><minus/><apply><minus/>{a}{b}</apply>{c}</apply>")
            ),
            rr("y3", c),
        )
    }

    /// Central differences of `simulate_course` at tight tolerances.
    fn fd(text: &str, ids: &[&str], vars: &[&str], times: &[f64]) -> Vec<Vec<Vec<f64>>> {
        let m = parse_sbml(text).unwrap();
        let opts = SimulateOptions {
            vars: Some(vars.iter().map(|s| s.to_string()).collect()),
            rtol: 1e-12,
            atol: 1e-16,
            method: Method::Stiff,
            ..Default::default()
        };
        let course = Course {
            times: Some(times),
            doses: &[],
        };
        ids.iter()
            .map(|id| {
                let p = m.value(id).unwrap();
                let h = 1e-4 * p.abs();
                let run = |v: f64| {
                    let mut mm = m.clone();
                    mm.set_value(id, v).unwrap();
                    simulate_course(&mm, &opts, &course).unwrap()
                };
                let (a, b) = (run(p + h), run(p - h));
                a.rows
                    .iter()
                    .zip(&b.rows)
                    .map(|(ra, rb)| (1..ra.len()).map(|c| (ra[c] - rb[c]) / (2.0 * h)).collect())
                    .collect()
            })
            .collect()
    }

    fn check(text: &str, ids: &[&str], vars: &[&str], times: &[f64], tol: f64) {
        let m = parse_sbml(text).unwrap();
        let params: Vec<SensParam> = ids
            .iter()
            .map(|id| SensParam {
                ids: vec![id.to_string()],
                value: m.value(id).unwrap(),
            })
            .collect();
        let opts = SensOptions {
            start: 0.0,
            rtol: 1e-10,
            atol: 1e-14,
            vars: vars.iter().map(|s| s.to_string()).collect(),
            deadline: None,
            error_test_sensitivities: true,
        };
        let s = simulate_sensitivities(&m, &params, times, None, &opts).unwrap();
        let want = fd(text, ids, vars, times);
        let nv = vars.len();
        for (k, id) in ids.iter().enumerate() {
            for (r, t) in times.iter().enumerate() {
                for j in 0..nv {
                    let (got, w) = (s.var_sens[r][k * nv + j], want[k][r][j]);
                    let scale = want[k].iter().flatten().fold(0.0f64, |a, v| a.max(v.abs()));
                    assert!(
                        (got - w).abs() <= tol * scale.max(1e-2),
                        "d{}/d{id} at t = {t}: {got} vs finite differences {w}",
                        vars[j]
                    );
                }
            }
        }
    }

    #[test]
    fn sensitivities_match_finite_differences_with_initial_assignment() {
        // Rate constants, the initial-assignment parameter a0 and the compartment size.
        check(
            &reversible(),
            &["k1", "k2", "a0", "c"],
            &["A", "B", "obs"],
            &[0.0, 0.5, 1.0, 3.0, 10.0],
            1e-5,
        );
    }

    #[test]
    fn sensitivities_match_finite_differences_on_stiff_robertson() {
        check(
            &robertson(),
            &["k1", "k2", "k3"],
            &["y1", "y2", "y3"],
            &[0.4, 4.0, 40.0],
            1e-4,
        );
    }

    /// A drug pulse written as piecewise functions of time (switch times `Ton`, `Toff`
    /// parameters): the sensitivities to the rate, the dose and both switch times (the jump
    /// terms) agree with finite differences of the state simulation. Without the jump the
    /// sensitivities to `Ton`, `Toff` would be zero.
    #[test]
    fn sensitivities_across_switch_times_match_finite_differences() {
        let text = crate::sim::tests::pulse_model(3.3, 3.8);
        check(
            &text,
            &["k", "A", "Ton", "Toff"],
            &["x"],
            &[1.0, 3.5, 3.9, 5.0, 10.0],
            1e-5,
        );
    }

    #[test]
    fn events_are_refused_with_a_clear_error() {
        let text = reversible().replace(
            "</listOfReactions>",
            &format!(r#"</listOfReactions><listOfEvents><event id="e" useValuesFromTriggerTime="true"><trigger initialValue="false" persistent="true">{MATH}<apply><gt/><csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">t</csymbol><cn>1</cn></apply></math></trigger><listOfEventAssignments><eventAssignment variable="B">{MATH}<cn>0</cn></math></eventAssignment></listOfEventAssignments></event></listOfEvents>"#),
        );
        let m = parse_sbml(&text).unwrap();
        let e = simulate_sensitivities(
            &m,
            &[],
            &[1.0],
            None,
            &SensOptions {
                start: 0.0,
                rtol: 1e-8,
                atol: 1e-12,
                vars: vec![],
                deadline: None,
                error_test_sensitivities: false,
            },
        );
        assert!(
            matches!(e, Err(SbmlError::Options(ref s)) if s.contains("events")),
            "{e:?}"
        );
    }
}
