//! Delay differential equations (`delay()`, SBML L3V2 §3.4.7) by the method of steps: an own
//! DOPRI5 stepper records the dense output (Hairer's 4th-order continuous extension) of every
//! accepted step; a delayed expression at time `t` is evaluated on the state interpolated at
//! `t - d` (the initial state for times before the start, with `time` itself running back),
//! after re-running the derived quantities it reads. Steps never exceed the smallest delay
//! seen, so every lookup falls inside the recorded history.
//!
//! Not `medtwin_simulate::Dopri5`: this stepper records every accepted step's dense output
//! into the history, caps each step at the smallest delay seen so far (which changes during
//! the run), starts from `(t1 − t0)/100`, lands exactly on `t1`, and limits step growth to ×5
//! with `powf`; `Dopri5` has none of the recording hooks, its own initial step, growth limit
//! and fifth root, so sharing its stepping would change the delay models' results.

use crate::math::DelayHook;
use crate::model::SbmlModel;
use crate::SbmlError;
use std::cell::{Cell, RefCell};

/// One recorded piece of the solution on `[ta, tb]`: dense-output coefficients `r` (5·n).
/// A point record (`ta == tb`) marks a state jump (event) and holds the new state in `r[..n]`.
struct Rec {
    ta: f64,
    tb: f64,
    r: Vec<f64>,
}

/// The solution so far.
pub(crate) struct History {
    n: usize,
    start: f64,
    x0: Vec<f64>,
    recs: Vec<Rec>,
}

impl History {
    fn new(start: f64, x0: &[f64]) -> Self {
        History {
            n: x0.len(),
            start,
            x0: x0.to_vec(),
            recs: Vec::new(),
        }
    }

    /// State at time `s` (initial state before the start; the last piece extrapolated beyond
    /// the end).
    pub(crate) fn state_at(&self, s: f64, out: &mut [f64]) {
        let k = self.recs.partition_point(|r| r.ta <= s);
        if s < self.start || k == 0 {
            out.copy_from_slice(&self.x0);
            return;
        }
        let r = &self.recs[k - 1];
        let n = self.n;
        if r.tb <= r.ta {
            out.copy_from_slice(&r.r[..n]);
            return;
        }
        let th = (s - r.ta) / (r.tb - r.ta);
        let th1 = 1.0 - th;
        for (i, o) in out.iter_mut().enumerate() {
            let c = |j: usize| r.r[j * n + i];
            *o = c(0) + th * (c(1) + th1 * (c(2) + th * (c(3) + th1 * c(4))));
        }
    }

    /// Drop everything recorded from `t` on and record the state `x` at `t` (after an event or
    /// a located trigger change).
    pub(crate) fn restart_at(&mut self, t: f64, x: &[f64]) {
        // Records are in time order: cut at the first one starting at or after t.
        let k = self.recs.partition_point(|r| r.ta < t);
        self.recs.truncate(k);
        let mut r = vec![0.0; 5 * self.n];
        r[..self.n].copy_from_slice(x);
        self.recs.push(Rec { ta: t, tb: t, r });
    }
}

/// History plus the model: evaluates delayed expressions.
pub(crate) struct DdeCtx<'a> {
    m: &'a SbmlModel,
    pub(crate) hist: RefCell<History>,
    depth: Cell<u32>,
    /// Smallest positive delay met so far (bounds the step size).
    pub(crate) min_delay: Cell<f64>,
}

impl<'a> DdeCtx<'a> {
    pub(crate) fn new(m: &'a SbmlModel, start: f64, x0: &[f64]) -> Self {
        DdeCtx {
            m,
            hist: RefCell::new(History::new(start, x0)),
            depth: Cell::new(0),
            min_delay: Cell::new(f64::INFINITY),
        }
    }
}

impl DelayHook for DdeCtx<'_> {
    fn delayed(&self, k: usize, d: f64, t: f64) -> f64 {
        let Some(def) = self.m.delays.get(k) else {
            return f64::NAN;
        };
        if d.is_nan() || self.depth.get() > 16 {
            return f64::NAN;
        }
        let d = d.max(0.0);
        if d > 0.0 && d < self.min_delay.get() {
            self.min_delay.set(d);
        }
        let s = t - d;
        let start = self.hist.borrow().start;
        if s < start {
            let mut stack = Vec::new();
            return def.x_before.eval(&self.m.base, s, &mut stack);
        }
        let mut xs = vec![0.0; self.m.state_slots.len()];
        self.hist.borrow().state_at(s, &mut xs);
        let mut vals = self.m.base.clone();
        for (i, &sl) in self.m.state_slots.iter().enumerate() {
            vals[sl] = xs[i];
        }
        let mut stack = Vec::new();
        self.depth.set(self.depth.get() + 1);
        for (sl, code) in &def.prog {
            vals[*sl] = code.eval_h(&vals, s, &mut stack, Some(self));
        }
        let v = def.x.eval_h(&vals, s, &mut stack, Some(self));
        self.depth.set(self.depth.get() - 1);
        v
    }
}

// Dormand–Prince 5(4) coefficients (Hairer, Nørsett & Wanner, Table II.5.2) and Hairer's
// `contd5` dense-output coefficients.
const C: [f64; 5] = [1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0];
const A: [[f64; 5]; 5] = [
    [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0],
    [
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
        0.0,
    ],
    [
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
];
const B: [f64; 6] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
];
const E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];
const D: [f64; 7] = [
    -12715105075.0 / 11282082432.0,
    0.0,
    87487479700.0 / 32700410799.0,
    -10690763975.0 / 1880347072.0,
    701980252875.0 / 199316789632.0,
    -1453857185.0 / 822651844.0,
    69997945.0 / 29380423.0,
];

/// DOPRI5 for the delay equations, recording every accepted step in the history.
pub(crate) struct DdeStepper {
    rtol: f64,
    /// Absolute tolerance per state.
    atol: Vec<f64>,
    h_max: f64,
    h: f64,
    vals: Vec<f64>,
    stack: Vec<f64>,
    /// Give up (error) once this instant has passed.
    pub(crate) deadline: Option<std::time::Instant>,
}

impl DdeStepper {
    pub(crate) fn new(rtol: f64, atol: &[f64], h_max: f64) -> Self {
        DdeStepper {
            rtol,
            atol: atol.to_vec(),
            h_max,
            h: 0.0,
            vals: Vec::new(),
            stack: Vec::new(),
            deadline: None,
        }
    }

    /// Forget the step size (after a state jump).
    pub(crate) fn reset(&mut self) {
        self.h = 0.0;
    }

    fn f(&mut self, ctx: &DdeCtx, t: f64, x: &[f64], dx: &mut [f64]) {
        let m = ctx.m;
        m.fill_h(t, x, &mut self.vals, &mut self.stack, Some(ctx));
        m.derivs_from_h(t, &self.vals, dx, &mut self.stack, Some(ctx));
    }

    /// Integrate `x` from `t0` to exactly `t1`, appending the steps to the history.
    pub(crate) fn integrate(
        &mut self,
        ctx: &DdeCtx,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), SbmlError> {
        let n = x.len();
        if n == 0 || t1 <= t0 {
            return Ok(());
        }
        if t1 - t0 < 1e-9 * t0.abs().max(1.0) {
            // Too short for the step-size controller: one explicit Euler step.
            let mut dx = vec![0.0; n];
            self.f(ctx, t0, x, &mut dx);
            for (xi, d) in x.iter_mut().zip(&dx) {
                *xi += (t1 - t0) * d;
            }
            return Ok(());
        }
        let mut k: Vec<Vec<f64>> = vec![vec![0.0; n]; 7];
        let mut y1 = vec![0.0; n];
        let mut ys = x.to_vec();
        self.f(ctx, t0, &ys, &mut k[0]);
        let mut t = t0;
        if self.h <= 0.0 {
            self.h = ((t1 - t0) / 100.0).max(1e-9);
        }
        let mut steps = 0usize;
        while t < t1 {
            steps += 1;
            if steps.is_multiple_of(64) {
                if let Some(d) = self.deadline {
                    if std::time::Instant::now() > d {
                        return Err(SbmlError::Simulation("time limit exceeded".into()));
                    }
                }
            }
            if steps > 200_000 {
                return Err(SbmlError::Simulation(format!(
                    "more than 200000 steps between t = {t0} and {t1}"
                )));
            }
            let mut h = self.h.min(self.h_max).min(ctx.min_delay.get());
            let last = t + h >= t1 || t1 - (t + h) < 1e-12 * t1.abs().max(1.0);
            if last {
                h = t1 - t;
            }
            if h < 1e-13 * t.abs().max(1.0) {
                return Err(SbmlError::Simulation(format!(
                    "step size underflow at t = {t}"
                )));
            }
            for s in 0..6 {
                for i in 0..n {
                    let mut acc = 0.0;
                    for (j, kj) in k.iter().enumerate().take(s + 1) {
                        let a = if s < 5 { A[s][j] } else { B[j] };
                        acc += a * kj[i];
                    }
                    y1[i] = ys[i] + h * acc;
                }
                let tt = if s < 5 { t + C[s] * h } else { t + h };
                let (_, rest) = k.split_at_mut(s + 1);
                self.f(ctx, tt, &y1, &mut rest[0]);
            }
            // k[6] = f(t+h, y1) now holds; error estimate.
            let mut err = 0.0;
            for i in 0..n {
                let mut e = 0.0;
                for (j, kj) in k.iter().enumerate() {
                    e += E[j] * kj[i];
                }
                let sc = self.atol[i] + self.rtol * ys[i].abs().max(y1[i].abs());
                err += (h * e / sc).powi(2);
            }
            let err = (err / n as f64).sqrt();
            if !err.is_finite() {
                if h < 1e-10 * t1.abs().max(1.0) {
                    return Err(SbmlError::Simulation(format!(
                        "non-finite value in the delay equations at t = {t}"
                    )));
                }
                self.h = h * 0.1;
                continue;
            }
            if err <= 1.0 {
                let mut r = vec![0.0; 5 * n];
                for i in 0..n {
                    let ydiff = y1[i] - ys[i];
                    let bspl = h * k[0][i] - ydiff;
                    r[i] = ys[i];
                    r[n + i] = ydiff;
                    r[2 * n + i] = bspl;
                    r[3 * n + i] = ydiff - h * k[6][i] - bspl;
                    let mut dd = 0.0;
                    for (j, kj) in k.iter().enumerate() {
                        dd += D[j] * kj[i];
                    }
                    r[4 * n + i] = h * dd;
                }
                ctx.hist.borrow_mut().recs.push(Rec {
                    ta: t,
                    tb: t + h,
                    r,
                });
                t = if last { t1 } else { t + h };
                ys.copy_from_slice(&y1);
                let k6 = k[6].clone();
                k[0].copy_from_slice(&k6);
                let fac = if err == 0.0 {
                    5.0
                } else {
                    (0.9 * err.powf(-0.2)).clamp(0.2, 5.0)
                };
                if !last {
                    self.h = h * fac;
                }
            } else {
                self.h = h * (0.9 * err.powf(-0.2)).clamp(0.2, 1.0);
            }
        }
        x.copy_from_slice(&ys);
        Ok(())
    }
}
