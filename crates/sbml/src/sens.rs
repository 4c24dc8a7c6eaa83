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
//! integrated by the variable-order BDF/NDF of `bdf.rs` (same coefficients, step and order
//! control), with the error test over the states, or states *and* sensitivities (CVODES'
//! `errconS`, [`SensOptions::error_test_sensitivities`]), and a block-diagonal Newton matrix `I − c·J` (one sparse LU for every block, the
//! simultaneous-corrector approximation). `J = ∂f/∂x` is the analytic sparse Jacobian of
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
//! Not supported (error [`SbmlError::Options`]): models with events, `delay()` or algebraic
//! rules. Discontinuities written as piecewise functions of time are stepped over as the BDF
//! steps over them (the sensitivities are as accurate as the states there).

#![allow(clippy::needless_range_loop)] // index loops over blocks and coefficient tables

use crate::ad::AnalyticJac;
use crate::bdf::StiffStructures;
use crate::model::SbmlModel;
use crate::sparse::{Jacobian, SparseLu};
use crate::SbmlError;
use std::time::Instant;

/// Relative step of the parameter differences.
const EPS: f64 = 5e-6;
const MAX_ORDER: usize = 5;
const NEWTON_MAXITER: usize = 4;
const KAPPA: [f64; MAX_ORDER + 1] = [0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0];
const MAX_JAC_AGE: u64 = 50;

fn gamma(k: usize) -> f64 {
    (1..=k).map(|j| 1.0 / j as f64).sum()
}

fn alpha(k: usize) -> f64 {
    (1.0 - KAPPA[k]) * gamma(k)
}

fn error_const(k: usize) -> f64 {
    KAPPA[k] * gamma(k) + 1.0 / (k as f64 + 1.0)
}

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
    rhs_calls: u64,
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

    /// Evaluate ∂f/∂x at (t, x) into `jac` (analytic, else finite differences).
    fn jacobian(&mut self, t: f64, x: &[f64], jac: &mut Jacobian) {
        if let Some(ad) = self.ad.as_mut() {
            ad.eval(self.m, t, x, jac);
        } else {
            let n = self.n;
            let mut f0 = vec![0.0; n];
            self.state_rhs(None, t, x, &mut f0);
            let (m, vals, stack) = (self.m, &mut self.vals, &mut self.stack);
            let mut rhs = |t: f64, y: &[f64], out: &mut [f64]| {
                fill_with(m, &m.base, t, y, vals, stack);
                m.derivs_from(t, vals, out, stack);
            };
            jac.eval_fd(t, x, &f0, &self.fd_floor, &mut rhs);
        }
    }

    /// Right-hand side of the augmented system.
    fn rhs(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.rhs_calls += 1;
        let n = self.n;
        let x = &y[..n];
        let (o0, rest) = out.split_at_mut(n);
        self.state_rhs(None, t, x, o0);
        let mut jac = self.jrhs.take().unwrap_or_else(|| self.jac.clone());
        self.jacobian(t, x, &mut jac);
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
                self.state_rhs(Some((k, true)), t, x, &mut f0);
                self.state_rhs(Some((k, false)), t, x, &mut f1);
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
        rhs_calls: 0,
    };
    let t_end = times.last().copied().unwrap_or(opts.start);
    let mut bdf = SensBdf::new(
        n,
        big,
        opts.rtol,
        atol,
        (t_end - opts.start).max(1e-300),
        jac,
        lu,
    );
    bdf.deadline = opts.deadline;
    bdf.errcon_sens = opts.error_test_sensitivities;
    let mut out = SensCourse::default();
    let mut y = y0;
    let mut t = opts.start;
    let mut vbuf = Vec::new();
    for &to in times {
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
    out.steps = bdf.steps;
    Ok(out)
}

fn rms(v: &[f64], scale: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let s: f64 = v.iter().zip(scale).map(|(a, s)| (a / s) * (a / s)).sum();
    (s / v.len() as f64).sqrt()
}

/// The BDF/NDF of `bdf.rs` on the augmented system with the block-diagonal Newton matrix.
struct SensBdf {
    n: usize,
    big: usize,
    rtol: f64,
    atol: Vec<f64>,
    h_max: f64,
    started: bool,
    t: f64,
    h: f64,
    order: usize,
    n_equal: usize,
    d: Vec<f64>,
    jac: Jacobian,
    lu: SparseLu,
    c_lu: f64,
    jac_age: u64,
    have_jac: bool,
    crate_: f64,
    y_pred: Vec<f64>,
    psi: Vec<f64>,
    y: Vec<f64>,
    corr: Vec<f64>,
    f: Vec<f64>,
    dy: Vec<f64>,
    scale: Vec<f64>,
    tmp: Vec<f64>,
    steps: u64,
    deadline: Option<Instant>,
    /// Whether the sensitivities are in the local error test.
    errcon_sens: bool,
}

impl SensBdf {
    fn new(
        n: usize,
        big: usize,
        rtol: f64,
        atol: Vec<f64>,
        h_max: f64,
        jac: Jacobian,
        lu: SparseLu,
    ) -> Self {
        let v = || vec![0.0; big];
        SensBdf {
            n,
            big,
            rtol,
            atol,
            h_max,
            started: false,
            t: f64::NAN,
            h: 0.0,
            order: 1,
            n_equal: 0,
            d: vec![0.0; (MAX_ORDER + 3) * big],
            jac,
            lu,
            c_lu: f64::NAN,
            jac_age: u64::MAX,
            have_jac: false,
            crate_: 1.0,
            y_pred: v(),
            psi: v(),
            y: v(),
            corr: v(),
            f: v(),
            dy: v(),
            scale: v(),
            tmp: v(),
            steps: 0,
            deadline: None,
            errcon_sens: false,
        }
    }

    fn interp(&self, t: f64, out: &mut [f64]) {
        let nb = self.big;
        out.copy_from_slice(&self.d[..nb]);
        let mut p = 1.0;
        for j in 0..self.order {
            p *= (t - (self.t - self.h * j as f64)) / (self.h * (j as f64 + 1.0));
            let row = &self.d[(j + 1) * nb..(j + 2) * nb];
            for (o, dj) in out.iter_mut().zip(row) {
                *o += p * dj;
            }
        }
    }

    fn change_d(&mut self, factor: f64) {
        let k = self.order;
        let r = compute_r(k, factor);
        let u = compute_r(k, 1.0);
        let sz = k + 1;
        let mut ru = [[0.0; MAX_ORDER + 1]; MAX_ORDER + 1];
        for a in 0..sz {
            for b in 0..sz {
                ru[a][b] = (0..sz).map(|l| r[a][l] * u[l][b]).sum();
            }
        }
        let nb = self.big;
        let mut newd = vec![0.0; sz * nb];
        for a in 0..sz {
            for b in 0..sz {
                let w = ru[b][a];
                if w != 0.0 {
                    let src = &self.d[b * nb..(b + 1) * nb];
                    for (o, s) in newd[a * nb..(a + 1) * nb].iter_mut().zip(src) {
                        *o += w * s;
                    }
                }
            }
        }
        self.d[..sz * nb].copy_from_slice(&newd);
    }

    fn start(&mut self, sys: &mut Aug<'_>, t0: f64, x: &[f64], t1: f64) {
        let nb = self.big;
        self.t = t0;
        self.d.iter_mut().for_each(|v| *v = 0.0);
        self.d[..nb].copy_from_slice(x);
        sys.rhs(t0, x, &mut self.f);
        for i in 0..nb {
            self.scale[i] = self.atol[i] + self.rtol * x[i].abs();
        }
        let d0 = rms(x, &self.scale);
        let d1 = rms(&self.f, &self.scale);
        let mut h0 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        };
        h0 = h0.min(t1 - t0).min(self.h_max);
        for i in 0..nb {
            self.y[i] = x[i] + h0 * self.f[i];
        }
        self.tmp.copy_from_slice(&self.f);
        let y = self.y.clone();
        sys.rhs(t0 + h0, &y, &mut self.f);
        for i in 0..nb {
            self.dy[i] = (self.f[i] - self.tmp[i]) / h0;
        }
        let d2 = rms(&self.dy, &self.scale);
        let h1 = if d1.max(d2) <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            (0.01 / d1.max(d2)).sqrt()
        };
        let h = (100.0 * h0).min(h1).min(self.h_max).min(t1 - t0);
        self.h = if h.is_finite() && h > 0.0 {
            h
        } else {
            1e-6 * (t1 - t0)
        };
        for i in 0..nb {
            self.d[nb + i] = self.h * self.tmp[i];
        }
        self.order = 1;
        self.n_equal = 0;
        self.c_lu = f64::NAN;
        self.crate_ = 1.0;
        self.started = true;
    }

    fn integrate(
        &mut self,
        sys: &mut Aug<'_>,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), SbmlError> {
        if t1 <= t0 {
            return Ok(());
        }
        if !self.started {
            self.start(sys, t0, x, t1);
        }
        let mut guard = 0u64;
        while self.t < t1 {
            guard += 1;
            if guard.is_multiple_of(8) {
                if let Some(d) = self.deadline {
                    if Instant::now() > d {
                        return Err(SbmlError::Simulation("time limit exceeded".into()));
                    }
                }
            }
            if guard > 50_000 {
                return Err(SbmlError::Simulation(format!(
                    "sensitivities: more than 50000 BDF steps between t = {t0} and {t1}"
                )));
            }
            self.step(sys)?;
        }
        self.interp(t1, x);
        if x.iter().any(|v| !v.is_finite()) {
            return Err(SbmlError::Simulation(format!(
                "sensitivities: non-finite value at t = {t1}"
            )));
        }
        Ok(())
    }

    /// Length of the error-tested part: states and sensitivities, or the states only.
    fn err_len(&self) -> usize {
        if self.errcon_sens {
            self.big
        } else {
            self.n
        }
    }

    fn solve_blocks(&mut self) {
        let n = self.n;
        for b in 0..self.big / n.max(1) {
            self.lu.solve(&mut self.dy[b * n..(b + 1) * n]);
        }
    }

    fn newton(&mut self, sys: &mut Aug<'_>, t_new: f64, c: f64) -> (bool, usize) {
        self.y.copy_from_slice(&self.y_pred);
        self.corr.iter_mut().for_each(|v| *v = 0.0);
        let tol = 0.1 / error_const(self.order);
        let scale_corr = 2.0 / (1.0 + c / self.c_lu);
        let mut del_prev = 0.0;
        for it in 0..NEWTON_MAXITER {
            if it > 0 {
                let y = std::mem::take(&mut self.y);
                sys.rhs(t_new, &y, &mut self.f);
                self.y = y;
            }
            if self.f.iter().any(|v| !v.is_finite()) {
                return (false, it + 1);
            }
            for i in 0..self.big {
                self.dy[i] = c * self.f[i] - self.psi[i] - self.corr[i];
            }
            self.solve_blocks();
            if scale_corr != 1.0 {
                self.dy.iter_mut().for_each(|v| *v *= scale_corr);
            }
            let del = rms(&self.dy, &self.scale);
            if !del.is_finite() {
                return (false, it + 1);
            }
            for i in 0..self.big {
                self.y[i] += self.dy[i];
                self.corr[i] += self.dy[i];
            }
            if it > 0 {
                if del > 2.0 * del_prev {
                    return (false, it + 1);
                }
                self.crate_ = (0.3 * self.crate_).max(del / del_prev);
            }
            if del * self.crate_.min(1.0) <= tol || del == 0.0 {
                return (true, it + 1);
            }
            del_prev = del;
        }
        (false, NEWTON_MAXITER)
    }

    fn step(&mut self, sys: &mut Aug<'_>) -> Result<(), SbmlError> {
        let nb = self.big;
        let n = self.n;
        let mut jac_this_step = false;
        if self.h > self.h_max {
            let f = self.h_max / self.h;
            self.change_d(f);
            self.h = self.h_max;
            self.n_equal = 0;
        }
        loop {
            let h_min = 10.0 * (self.t.abs() * f64::EPSILON).max(f64::MIN_POSITIVE);
            if self.h < h_min || !self.h.is_finite() {
                return Err(SbmlError::Simulation(format!(
                    "sensitivities: BDF step size underflow at t = {}",
                    self.t
                )));
            }
            let k = self.order;
            let t_new = self.t + self.h;
            self.y_pred.copy_from_slice(&self.d[..nb]);
            self.psi.iter_mut().for_each(|v| *v = 0.0);
            let ak = alpha(k);
            for j in 1..=k {
                let g = gamma(j) / ak;
                for i in 0..nb {
                    let dj = self.d[j * nb + i];
                    self.y_pred[i] += dj;
                    self.psi[i] += g * dj;
                }
            }
            for i in 0..nb {
                self.scale[i] = self.atol[i] + self.rtol * self.y_pred[i].abs();
            }
            let c = self.h / ak;
            let mut converged = false;
            let mut iters = 0;
            loop {
                let yp = std::mem::take(&mut self.y_pred);
                sys.rhs(t_new, &yp, &mut self.f);
                if !jac_this_step && (self.jac_age >= MAX_JAC_AGE || !self.have_jac) {
                    let mut jac = std::mem::replace(&mut self.jac, sys.jac.clone());
                    sys.jacobian(t_new, &yp[..n], &mut jac);
                    self.jac = jac;
                    self.jac_age = 0;
                    self.have_jac = true;
                    jac_this_step = true;
                    self.c_lu = f64::NAN;
                }
                self.y_pred = yp;
                if !(self.c_lu.is_finite() && ((c / self.c_lu) - 1.0).abs() <= 0.3) {
                    if !self.lu.factor(&self.jac, c) {
                        self.c_lu = f64::NAN;
                        break;
                    }
                    self.c_lu = c;
                    self.crate_ = 1.0;
                }
                let (conv, it) = self.newton(sys, t_new, c);
                iters = it;
                if conv {
                    converged = true;
                    break;
                }
                if jac_this_step {
                    break;
                }
                self.jac_age = MAX_JAC_AGE;
            }
            if !converged {
                self.h *= 0.25;
                self.change_d(0.25);
                self.n_equal = 0;
                self.c_lu = f64::NAN;
                continue;
            }
            let safety =
                0.9 * (2 * NEWTON_MAXITER + 1) as f64 / (2 * NEWTON_MAXITER + iters) as f64;
            for i in 0..nb {
                self.scale[i] = self.atol[i] + self.rtol * self.y[i].abs();
            }
            let ne = self.err_len();
            let err = error_const(k) * rms(&self.corr[..ne], &self.scale[..ne]);
            if err > 1.0 || !err.is_finite() {
                let factor = if err.is_finite() {
                    (safety * err.powf(-1.0 / (k as f64 + 1.0))).max(0.2)
                } else {
                    0.2
                };
                self.h *= factor;
                self.change_d(factor);
                self.n_equal = 0;
                continue;
            }
            self.steps += 1;
            self.jac_age = self.jac_age.saturating_add(1);
            self.t = t_new;
            self.n_equal += 1;
            for i in 0..nb {
                let c = self.corr[i];
                let a1 = self.d[(k + 1) * nb + i];
                self.d[(k + 2) * nb + i] = c - a1;
                self.d[(k + 1) * nb + i] = c;
            }
            for j in (0..=k).rev() {
                for i in 0..nb {
                    self.d[j * nb + i] += self.d[(j + 1) * nb + i];
                }
            }
            if self.n_equal < k + 1 {
                return Ok(());
            }
            let err_m = if k > 1 {
                self.tmp.copy_from_slice(&self.d[k * nb..(k + 1) * nb]);
                error_const(k - 1) * rms(&self.tmp[..ne], &self.scale[..ne])
            } else {
                f64::INFINITY
            };
            let err_p = if k < MAX_ORDER {
                self.tmp
                    .copy_from_slice(&self.d[(k + 2) * nb..(k + 3) * nb]);
                error_const(k + 1) * rms(&self.tmp[..ne], &self.scale[..ne])
            } else {
                f64::INFINITY
            };
            let fac = |e: f64, p: usize| -> f64 {
                if e == 0.0 {
                    f64::INFINITY
                } else {
                    e.powf(-1.0 / p as f64)
                }
            };
            let cands = [fac(err_m, k), fac(err, k + 1), fac(err_p, k + 2)];
            let mut best = 1;
            for (i, &v) in cands.iter().enumerate() {
                if v > cands[best] {
                    best = i;
                }
            }
            let factor = (safety * cands[best]).min(10.0);
            if best == 1 && (1.0..1.5).contains(&factor) {
                return Ok(());
            }
            self.order = k + best - 1;
            let factor = factor.min(self.h_max / self.h);
            self.h *= factor;
            self.change_d(factor);
            self.n_equal = 0;
            return Ok(());
        }
    }
}

/// Shampine & Reichelt's matrix R(order, factor) (as in `bdf.rs`).
fn compute_r(order: usize, factor: f64) -> [[f64; MAX_ORDER + 1]; MAX_ORDER + 1] {
    let mut m = [[0.0; MAX_ORDER + 1]; MAX_ORDER + 1];
    for v in m[0].iter_mut().take(order + 1) {
        *v = 1.0;
    }
    for i in 1..=order {
        for j in 1..=order {
            m[i][j] = (i as f64 - 1.0 - factor * j as f64) / i as f64;
        }
    }
    for i in 1..=order {
        for j in 0..=order {
            m[i][j] *= m[i - 1][j];
        }
    }
    m
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
