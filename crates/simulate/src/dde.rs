//! Delay differential equations by the method of steps: [`DdeDopri5`] advances a
//! [`DdeSystem`] with the Dormand–Prince 5(4) pair of [`crate::rk_tableau`] and records the
//! continuous extension (Hairer's 4th-order `contd5`) of every accepted step in a
//! [`DenseHistory`], from which the system evaluates its delayed terms (Bellen & Zennaro,
//! *Numerical Methods for Delay Differential Equations*, 2003, §3: continuous Runge–Kutta
//! methods for DDEs).
//!
//! Step control differs from [`crate::Dopri5`]'s on purpose (it is the SBML `delay()`
//! stepper, whose results the SBML Test Suite checks): no step exceeds the system's
//! [`DdeSystem::step_cap`] (the smallest delay met so far, so every delayed lookup falls inside
//! the recorded history), the first step is `(t1 − t0)/100`, the last step of a call lands on
//! `t1` exactly (the next call starts there, with the step size carried over), and the step
//! grows by at most ×5 (factor `0.9·err^(−1/5)` by `powf`).
//!
//! Failures are [`SolveError`] values, never panics: [`SolveError::TimeLimit`],
//! [`SolveError::TooManySteps`] (200 000 steps per call), [`SolveError::StepTooSmall`] (the step
//! below `10⁻¹³·max(|t|, 1)`) and [`SolveError::NonFinite`] (the error estimate stays
//! non-finite down to steps of `10⁻¹⁰·max(|t1|, 1)`). Times are in the system's own unit (the
//! `_min` in the error fields is nominal).

use crate::rk_tableau::{dense_eval, dopri5_dense, dopri5_try_step, error_norm};
use crate::SolveError;
use std::time::Instant;

/// The solution so far: the initial state (used for every time before the start) and one
/// record per accepted step `[t_a, t_b]` (the 5 dense-output coefficients per state) or per
/// state jump (a point record `t_a = t_b` holding the new state). Records are in time order.
#[derive(Debug, Clone)]
pub struct DenseHistory {
    n: usize,
    start: f64,
    x0: Vec<f64>,
    /// `(t_a, t_b)` of each record.
    spans: Vec<(f64, f64)>,
    /// `5·n` coefficients per record (a point record: the state in the first `n`).
    coef: Vec<f64>,
}

impl DenseHistory {
    /// History of a solution starting at `start` from `x0` (length `n`, the state count).
    pub fn new(start: f64, x0: &[f64]) -> Self {
        DenseHistory {
            n: x0.len(),
            start,
            x0: x0.to_vec(),
            spans: Vec::new(),
            coef: Vec::new(),
        }
    }

    /// Start time of the solution.
    pub fn start(&self) -> f64 {
        self.start
    }

    /// State at time `s` into `out` (length `n`): the initial state before the start (or
    /// before anything is recorded), a point record's state, else the continuous extension of
    /// the last record starting at or before `s` (extrapolated beyond its end).
    pub fn state_at(&self, s: f64, out: &mut [f64]) {
        let k = self.spans.partition_point(|r| r.0 <= s);
        if s < self.start || k == 0 {
            out.copy_from_slice(&self.x0);
            return;
        }
        let (ta, tb) = self.spans[k - 1];
        let n = self.n;
        let r = &self.coef[(k - 1) * 5 * n..k * 5 * n];
        if tb <= ta {
            out.copy_from_slice(&r[..n]);
            return;
        }
        dense_eval(r, (s - ta) / (tb - ta), out);
    }

    /// Drop every record starting at or after `t` and record the state `x` at `t` (after an
    /// event or a dose: the solution jumps there).
    pub fn restart_at(&mut self, t: f64, x: &[f64]) {
        let k = self.spans.partition_point(|r| r.0 < t);
        self.spans.truncate(k);
        self.coef.truncate(k * 5 * self.n);
        self.spans.push((t, t));
        self.coef.extend_from_slice(&x[..self.n]);
        self.coef.resize((k + 1) * 5 * self.n, 0.0);
    }

    /// Append an accepted step `[ta, tb]` with dense-output coefficients `r` (`5·n`).
    pub fn push_step(&mut self, ta: f64, tb: f64, r: &[f64]) {
        self.spans.push((ta, tb));
        self.coef.extend_from_slice(&r[..5 * self.n]);
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether nothing has been recorded yet.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// A delay system as [`DdeDopri5`] integrates it: `x' = f(t, x, history)`.
pub trait DdeSystem {
    /// `f(t, x)` into `dx` (both of length `n`); may read the history for delayed terms.
    fn rhs(&mut self, t: f64, x: &[f64], dx: &mut [f64]);
    /// Largest step allowed from now on (the smallest positive delay met so far; infinite
    /// when none). Read before every step, so it may shrink during the run.
    fn step_cap(&self) -> f64;
    /// An accepted step on `[ta, tb]` with dense-output coefficients `r` (`5·n`; evaluate
    /// with [`DenseHistory::state_at`] after [`DenseHistory::push_step`]).
    fn record_step(&mut self, ta: f64, tb: f64, r: &[f64]);
    /// Name of state `i` for error messages (default `#i`).
    fn name(&self, i: usize) -> String {
        format!("#{i}")
    }
}

/// Most steps per [`DdeDopri5::integrate`] call.
const MAX_STEPS: usize = 200_000;

/// Method-of-steps DOPRI5 for delay equations (see the module docs), with preallocated work
/// space.
#[derive(Debug, Clone)]
pub struct DdeDopri5 {
    rtol: f64,
    /// Absolute tolerance per state.
    atol: Vec<f64>,
    h_max: f64,
    /// Proposed next step (0: choose at the next call).
    h: f64,
    /// Give up ([`SolveError::TimeLimit`]) once this instant has passed (checked every 64 steps).
    pub deadline: Option<Instant>,
    k: [Vec<f64>; 7],
    ys: Vec<f64>,
    y1: Vec<f64>,
    err: Vec<f64>,
    r: Vec<f64>,
}

impl DdeDopri5 {
    /// Integrator with relative tolerance `rtol`, absolute tolerances `atol` (one per state,
    /// state units) and largest step `h_max` (time units).
    pub fn new(rtol: f64, atol: &[f64], h_max: f64) -> Self {
        let n = atol.len();
        DdeDopri5 {
            rtol,
            atol: atol.to_vec(),
            h_max,
            h: 0.0,
            deadline: None,
            k: std::array::from_fn(|_| vec![0.0; n]),
            ys: vec![0.0; n],
            y1: vec![0.0; n],
            err: vec![0.0; n],
            r: vec![0.0; 5 * n],
        }
    }

    /// Forget the step size (after a state jump).
    pub fn reset(&mut self) {
        self.h = 0.0;
    }

    /// Integrate `x` from `t0` to exactly `t1`, passing every accepted step to
    /// [`DdeSystem::record_step`]. An interval shorter than `10⁻⁹·max(|t0|, 1)` is one explicit
    /// Euler step (not recorded). Errors: see the module docs, and [`SolveError::Setup`] when
    /// `x` does not have one entry per absolute tolerance; `x` holds the last accepted state.
    pub fn integrate<S: DdeSystem + ?Sized>(
        &mut self,
        sys: &mut S,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), SolveError> {
        let n = x.len();
        if n != self.atol.len() {
            return Err(SolveError::Setup {
                solver: "delay DOPRI5",
                why: format!("state of length {n} for {} tolerances", self.atol.len()),
            });
        }
        if n == 0 || t1 <= t0 {
            return Ok(());
        }
        if t1 - t0 < 1e-9 * t0.abs().max(1.0) {
            // Too short for the step-size controller: one explicit Euler step.
            sys.rhs(t0, x, &mut self.k[0]);
            for (xi, d) in x.iter_mut().zip(&self.k[0]) {
                *xi += (t1 - t0) * d;
            }
            return Ok(());
        }
        self.ys.copy_from_slice(x);
        sys.rhs(t0, &self.ys, &mut self.k[0]);
        let mut t = t0;
        if self.h <= 0.0 {
            self.h = ((t1 - t0) / 100.0).max(1e-9);
        }
        let mut steps = 0usize;
        let result = loop {
            if t >= t1 {
                break Ok(());
            }
            steps += 1;
            if steps.is_multiple_of(64) && self.deadline.is_some_and(|d| Instant::now() > d) {
                break Err(SolveError::TimeLimit);
            }
            if steps > MAX_STEPS {
                break Err(SolveError::TooManySteps {
                    t0_min: t0,
                    t1_min: t1,
                    max_steps: MAX_STEPS,
                });
            }
            let mut h = self.h.min(self.h_max).min(sys.step_cap());
            let last = t + h >= t1 || t1 - (t + h) < 1e-12 * t1.abs().max(1.0);
            if last {
                h = t1 - t;
            }
            if h < 1e-13 * t.abs().max(1.0) {
                break Err(SolveError::StepTooSmall { t_min: t, h_min: h });
            }
            let mut f = |t: f64, y: &[f64], dy: &mut [f64]| sys.rhs(t, y, dy);
            dopri5_try_step(
                &mut f,
                t,
                h,
                &self.ys,
                &mut self.k,
                &mut self.y1,
                &mut self.err,
            );
            let err = error_norm(&self.err, &self.ys, &self.y1, &self.atol, self.rtol);
            if !err.is_finite() {
                if h < 1e-10 * t1.abs().max(1.0) {
                    let i = self.y1.iter().position(|v| !v.is_finite());
                    break Err(SolveError::NonFinite {
                        state: i.map(|i| sys.name(i)).unwrap_or_default(),
                        t_min: t,
                    });
                }
                self.h = h * 0.1;
                continue;
            }
            if err <= 1.0 {
                dopri5_dense(h, &self.ys, &self.y1, &self.k, &mut self.r);
                sys.record_step(t, t + h, &self.r);
                t = if last { t1 } else { t + h };
                self.ys.copy_from_slice(&self.y1);
                let (first, rest) = self.k.split_at_mut(1);
                first[0].copy_from_slice(&rest[5]);
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
        };
        x.copy_from_slice(&self.ys);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x'(t) = −x(t − 1), x = 1 for t ≤ 0 (Hairer, Nørsett & Wanner, *Solving ODEs I*,
    /// §II.17): x = 1 − t on [0, 1], 1 − t + (t − 1)²/2 on [1, 2], and on [2, 3]
    /// 1 − t + (t − 1)²/2 − (t − 2)³/6.
    struct Lag {
        hist: DenseHistory,
        buf: Vec<f64>,
    }
    impl DdeSystem for Lag {
        fn rhs(&mut self, t: f64, _x: &[f64], dx: &mut [f64]) {
            self.hist.state_at(t - 1.0, &mut self.buf);
            dx[0] = -self.buf[0];
        }
        fn step_cap(&self) -> f64 {
            1.0
        }
        fn record_step(&mut self, ta: f64, tb: f64, r: &[f64]) {
            self.hist.push_step(ta, tb, r);
        }
    }

    fn exact(t: f64) -> f64 {
        1.0 - t + (t - 1.0).max(0.0).powi(2) / 2.0 - (t - 2.0).max(0.0).powi(3) / 6.0
    }

    #[test]
    fn method_of_steps_matches_the_piecewise_polynomial_solution() {
        let mut sys = Lag {
            hist: DenseHistory::new(0.0, &[1.0]),
            buf: vec![0.0],
        };
        let mut s = DdeDopri5::new(1e-10, &[1e-12], 0.5);
        let mut x = [1.0];
        for k in 0..6 {
            let (t0, t1) = (0.5 * k as f64, 0.5 * (k + 1) as f64);
            s.integrate(&mut sys, t0, t1, &mut x).unwrap();
            assert!((x[0] - exact(t1)).abs() < 1e-9, "t {t1}: {}", x[0]);
        }
        // the history reproduces the solution between steps and the initial state before 0
        let mut y = [0.0];
        sys.hist.state_at(1.7, &mut y);
        assert!((y[0] - exact(1.7)).abs() < 1e-8, "{}", y[0]);
        sys.hist.state_at(-3.0, &mut y);
        assert_eq!(y[0], 1.0);
        // a jump: everything after it is forgotten, the point record holds the new state
        sys.hist.restart_at(2.0, &[5.0]);
        sys.hist.state_at(2.5, &mut y);
        assert_eq!(y[0], 5.0);
        sys.hist.state_at(1.7, &mut y);
        assert!((y[0] - exact(1.7)).abs() < 1e-8);
    }

    #[test]
    fn failures_are_errors() {
        let mut sys = Lag {
            hist: DenseHistory::new(0.0, &[1.0]),
            buf: vec![0.0],
        };
        let mut s = DdeDopri5::new(1e-10, &[1e-12], 0.5);
        let e = s
            .integrate(&mut sys, 0.0, 1.0, &mut [1.0, 2.0])
            .unwrap_err();
        assert!(matches!(e, SolveError::Setup { .. }), "{e}");
        s.deadline = Some(Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut s2 = DdeDopri5::new(1e-10, &[1e-12], 1e-4);
        s2.deadline = s.deadline;
        let e = s2.integrate(&mut sys, 0.0, 1.0, &mut [1.0]).unwrap_err();
        assert_eq!(e, SolveError::TimeLimit);
        assert_eq!(e.to_string(), "time limit exceeded");
    }
}
