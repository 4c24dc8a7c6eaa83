//! Variable-order (1–5), variable-step backward differentiation formulas for stiff models, in
//! the modified-divided-difference form of the numerical differentiation formulas (NDF) of
//! Shampine & Reichelt 1997 ("The MATLAB ODE Suite", SIAM J. Sci. Comput. 18:1–22): the
//! solution history is kept as backward differences `D` that are rescaled when the step size
//! changes (step and order change only after `order + 1` equal steps), with the NDF κ
//! coefficients for orders 1–4 (order 5 is plain BDF).
//!
//! Newton iterations are *modified*: the Jacobian and the LU factors of `I − c·J`
//! (`c = h / α_k`) are reused over many steps, as in CVODE (Hindmarsh et al. 2005, ACM TOMS
//! 31:363–396): the LU is refactored when `c` changes by more than 30 % (the correction is
//! scaled by `2 / (1 + c/c_LU)` in between), the Jacobian is re-evaluated after a convergence
//! failure with a stale Jacobian or every 50 steps. The Newton convergence test uses CVODE's
//! rate estimate carried across steps, so well-predicted steps need a single right-hand side.
//! The Jacobian comes from the system ([`BdfSystem::jacobian`]: analytic, or column-grouped
//! finite differences with [`SparseJacobian::eval_fd`]) over a fixed structural pattern; the
//! linear algebra is the sparse LU of [`crate::sparse`].
//!
//! Output between steps interpolates the difference polynomial (the solver's own dense
//! output); the integrator steps past the requested end point and is continued by the next
//! call when that starts from the returned state.
//!
//! The stepper integrates any [`BdfSystem`]: a model's own right-hand side (one block), or a
//! model with its forward sensitivities (`dim = n·(1 + parameters)` in blocks of `n`, the
//! Newton matrix block-diagonal with one LU of `I − c·J`, the error test over a leading part
//! of the components; the SBML crate's `simulate_sensitivities`).
//!
//! Failures are [`BdfError`] values, never panics.

#![allow(clippy::needless_range_loop)] // index loops over small coefficient tables

use crate::sparse::{SparseJacobian, SparseLu};
use thiserror::Error;

const MAX_ORDER: usize = 5;
const NEWTON_MAXITER: usize = 4;
/// NDF coefficients κ_k (Shampine & Reichelt 1997, Table 1), index = order.
const KAPPA: [f64; MAX_ORDER + 1] = [0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0];
/// Jacobian age (steps) after which it is re-evaluated (CVODE's MSBJ).
const MAX_JAC_AGE: u64 = 50;

/// γ_k = Σ_{j=1..k} 1/j.
const GAMMA: [f64; MAX_ORDER + 2] = [
    0.0,
    1.0,
    1.5,
    1.5 + 1.0 / 3.0,
    1.5 + 1.0 / 3.0 + 0.25,
    1.5 + 1.0 / 3.0 + 0.25 + 0.2,
    1.5 + 1.0 / 3.0 + 0.25 + 0.2 + 1.0 / 6.0,
];

fn gamma(k: usize) -> f64 {
    GAMMA[k]
}

fn alpha(k: usize) -> f64 {
    (1.0 - KAPPA[k]) * gamma(k)
}

fn error_const(k: usize) -> f64 {
    KAPPA[k] * gamma(k) + 1.0 / (k as f64 + 1.0)
}

/// Solver statistics (for benchmarks), cumulative over the integrator's life.
#[derive(Debug, Clone, Copy, Default)]
pub struct BdfStats {
    /// Right-hand-side evaluations of the stepper (finite-difference Jacobians not included).
    pub rhs: u64,
    /// Accepted steps.
    pub steps: u64,
    /// Rejected steps (error test or Newton failure).
    pub rejected: u64,
    /// Newton iterations that failed to converge.
    pub newton_fails: u64,
    /// Jacobian evaluations.
    pub jacobians: u64,
    /// LU factorisations of `I − c·J`.
    pub factorizations: u64,
    /// Starts from a given state at order 1 (calls that could not continue the history).
    pub starts: u64,
}

/// Why a BDF integration failed. The messages are the ones the SBML crate has always shown
/// (it maps them to its own error type unchanged).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BdfError {
    /// [`Bdf::deadline`] passed.
    #[error("time limit exceeded")]
    TimeLimit,
    /// More than [`Bdf::max_steps`] steps in one [`Bdf::integrate`] call.
    #[error("{context}more than {max_steps} BDF steps between t = {t0} and {t1}")]
    TooManySteps {
        /// [`Bdf::context`].
        context: &'static str,
        /// The step budget.
        max_steps: u64,
        /// Start and end of the call.
        t0: f64,
        /// End of the call.
        t1: f64,
    },
    /// The solution at the end of the call is NaN or infinite.
    #[error("{context}BDF: non-finite value in state '{name}' at t = {t}")]
    NonFinite {
        /// [`Bdf::context`].
        context: &'static str,
        /// Name of the first non-finite component ([`BdfSystem::name`]).
        name: String,
        /// End time of the call.
        t: f64,
    },
    /// The step size fell below 10 ulp of `t`.
    #[error("{context}BDF: step size underflow at t = {t}{}", underflow_why(.nonfinite))]
    StepUnderflow {
        /// [`Bdf::context`].
        context: &'static str,
        /// Time reached.
        t: f64,
        /// Component whose derivative was last not finite in a Newton iteration of the
        /// failing step, if any.
        nonfinite: Option<String>,
    },
    /// The sizes given to [`Bdf::new`] or [`Bdf::integrate`] are inconsistent.
    #[error("BDF setup: {0}")]
    Setup(String),
}

fn underflow_why(nonfinite: &Option<String>) -> String {
    match nonfinite {
        Some(name) => format!(" (the derivative of '{name}' is not finite near the solution)"),
        None => String::new(),
    }
}

/// What a [`Bdf`] integrates: `y' = F(t, y)` with `y` of dimension `dim` made of `dim / n`
/// blocks of length `n`, the first block being the model's states `x`. The Newton matrix is
/// taken block-diagonal, one copy of `I − c·J` per block with `J = ∂f/∂x` the `n × n` state
/// Jacobian: exact for the model alone (one block), the simultaneous-corrector approximation
/// (Maly & Petzold 1996) for states plus forward sensitivities (`sens.rs`).
pub trait BdfSystem {
    /// `F(t, y)` into `out` (both of length `dim`).
    fn rhs(&mut self, t: f64, y: &[f64], out: &mut [f64]);
    /// `J = ∂f/∂x` at `(t, y[..n])` into `jac`; `f` holds `F(t, y)` (its first `n` entries
    /// are the state derivatives, the base point of finite differences).
    fn jacobian(&mut self, t: f64, y: &[f64], f: &[f64], jac: &mut SparseJacobian);
    /// Name of component `i` of `y` (for error messages).
    fn name(&self, i: usize) -> String;
}

/// BDF/NDF integrator state (see the module docs): [`Bdf::new`], then [`Bdf::integrate`] of a
/// [`BdfSystem`] over consecutive intervals.
pub struct Bdf {
    /// Block length (the states: order of the Jacobian and LU), full dimension (a multiple of
    /// `n`), and the length of the leading part of `y` in the local error test.
    n: usize,
    dim: usize,
    /// Length of the leading part of `y` in the local error test (default: all of it).
    pub err_len: usize,
    /// Prefix of error messages (e.g. "sensitivities: "; default empty).
    pub context: &'static str,
    /// Steps allowed per `integrate` call (default 10⁶).
    pub max_steps: u64,
    rtol: f64,
    /// Absolute tolerance per component.
    atol: Vec<f64>,
    h_max: f64,
    started: bool,
    /// Current time, step size (> 0), order, steps taken at this step size and order.
    t: f64,
    h: f64,
    order: usize,
    n_equal: usize,
    /// Start of the last accepted step (interpolation is valid on `[t_back, t]`).
    t_back: f64,
    /// Backward differences, `MAX_ORDER + 3` rows of `dim`.
    d: Vec<f64>,
    dbuf: Vec<f64>,
    /// The last output (time, state): a call starting from exactly it continues.
    out_t: f64,
    out_x: Vec<f64>,
    jac: SparseJacobian,
    lu: SparseLu,
    /// `c` of the current LU (NaN: no valid LU), steps since the Jacobian was evaluated,
    /// whether the Jacobian was evaluated during the current step.
    c_lu: f64,
    jac_age: u64,
    have_jac: bool,
    /// Newton convergence-rate estimate (CVODE's `crate`).
    crate_: f64,
    y_pred: Vec<f64>,
    psi: Vec<f64>,
    y: Vec<f64>,
    corr: Vec<f64>,
    f: Vec<f64>,
    dy: Vec<f64>,
    scale: Vec<f64>,
    tmp: Vec<f64>,
    /// Solver statistics.
    pub stats: BdfStats,
    /// Component whose derivative was last not finite in a Newton iteration of the current
    /// step (named when the step size underflows).
    nonfinite: Option<usize>,
    /// Give up (error) once this instant has passed.
    pub deadline: Option<std::time::Instant>,
    /// Why the sizes given to [`Bdf::new`] are inconsistent, if they are.
    invalid: Option<String>,
}

fn rms(v: &[f64], scale: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let s: f64 = v.iter().zip(scale).map(|(a, s)| (a / s) * (a / s)).sum();
    (s / v.len() as f64).sqrt()
}

impl Bdf {
    /// Integrator for a [`BdfSystem`] of dimension `dim` in blocks of `n` (`dim` a multiple of
    /// `n`, `n ≥ 1` when `dim > 0`), with relative tolerance `rtol`, absolute tolerances
    /// `atol` (length `dim`, in the units of each component), maximum step `h_max` (time
    /// units), and the `n × n` state Jacobian pattern `jac` and its LU `lu` (built once per
    /// model with [`SparseLu::new`] and cloned). Every component is error-tested until
    /// [`Bdf::err_len`] is lowered.
    ///
    /// Inconsistent sizes are reported by the first [`Bdf::integrate`] call
    /// ([`BdfError::Setup`]).
    pub fn new(
        n: usize,
        dim: usize,
        rtol: f64,
        atol: Vec<f64>,
        h_max: f64,
        jac: SparseJacobian,
        lu: SparseLu,
    ) -> Self {
        let invalid = if atol.len() != dim {
            Some(format!(
                "{} absolute tolerances for {dim} components",
                atol.len()
            ))
        } else if dim > 0 && (n == 0 || !dim.is_multiple_of(n)) {
            Some(format!(
                "dimension {dim} is not a multiple of the block length {n}"
            ))
        } else if jac.n != n {
            Some(format!(
                "Jacobian pattern of order {} for blocks of {n}",
                jac.n
            ))
        } else if lu.n() != n {
            Some(format!("LU of order {} for blocks of {n}", lu.n()))
        } else {
            None
        };
        let v = || vec![0.0; dim];
        Bdf {
            invalid,
            n,
            dim,
            err_len: dim,
            context: "",
            max_steps: 1_000_000,
            rtol,
            atol,
            h_max,
            started: false,
            t: f64::NAN,
            h: 0.0,
            order: 1,
            n_equal: 0,
            t_back: f64::NAN,
            d: vec![0.0; (MAX_ORDER + 3) * dim],
            dbuf: Vec::new(),
            out_t: f64::NAN,
            out_x: v(),
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
            stats: BdfStats::default(),
            nonfinite: None,
            deadline: None,
        }
    }

    /// The state Jacobian (pattern, last values, finite-difference count).
    pub fn jacobian(&self) -> &SparseJacobian {
        &self.jac
    }

    /// The sparse LU of `I − c·J` (fill, factorisation counts).
    pub fn lu(&self) -> &SparseLu {
        &self.lu
    }

    /// Forget the history (after a state jump): the next call restarts at order 1.
    pub fn reset(&mut self) {
        self.started = false;
    }

    fn f_at<S: BdfSystem>(&mut self, sys: &mut S, t: f64, which: Which) {
        self.stats.rhs += 1;
        let y = match which {
            Which::Pred => &self.y_pred,
            Which::Y => &self.y,
            Which::D0 => &self.d[..self.dim],
        };
        sys.rhs(t, y, &mut self.f);
    }

    /// Interpolate the difference polynomial at `t` into `out`.
    fn interp(&self, t: f64, out: &mut [f64]) {
        let n = self.dim;
        out.copy_from_slice(&self.d[..n]);
        let mut p = 1.0;
        for j in 0..self.order {
            p *= (t - (self.t - self.h * j as f64)) / (self.h * (j as f64 + 1.0));
            let row = &self.d[(j + 1) * n..(j + 2) * n];
            for (o, dj) in out.iter_mut().zip(row) {
                *o += p * dj;
            }
        }
    }

    /// Rescale the differences for a step-size change by `factor` (Shampine & Reichelt 1997,
    /// §2.2: `D ← (R·U)ᵀ D`).
    fn change_d(&mut self, factor: f64) {
        let k = self.order;
        let r = compute_r(k, factor);
        let u = compute_r(k, 1.0);
        let sz = k + 1;
        // ru = r · u
        let mut ru = [[0.0; MAX_ORDER + 1]; MAX_ORDER + 1];
        for a in 0..sz {
            for b in 0..sz {
                ru[a][b] = (0..sz).map(|l| r[a][l] * u[l][b]).sum();
            }
        }
        let n = self.dim;
        let mut newd = std::mem::take(&mut self.dbuf);
        newd.clear();
        newd.resize(sz * n, 0.0);
        for a in 0..sz {
            for b in 0..sz {
                let w = ru[b][a];
                if w != 0.0 {
                    let src = &self.d[b * n..(b + 1) * n];
                    for (o, s) in newd[a * n..(a + 1) * n].iter_mut().zip(src) {
                        *o += w * s;
                    }
                }
            }
        }
        self.d[..sz * n].copy_from_slice(&newd);
        self.dbuf = newd;
    }

    fn start<S: BdfSystem>(&mut self, sys: &mut S, t0: f64, x: &[f64], t1: f64) {
        let n = self.dim;
        self.t = t0;
        self.t_back = t0;
        self.out_t = f64::NAN;
        self.d.iter_mut().for_each(|v| *v = 0.0);
        self.d[..n].copy_from_slice(x);
        self.f_at(sys, t0, Which::D0);
        // Initial step (Hairer, Nørsett & Wanner, Solving ODEs I, §II.4), order 1.
        for i in 0..n {
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
        for i in 0..n {
            self.y[i] = x[i] + h0 * self.f[i];
        }
        self.tmp.copy_from_slice(&self.f);
        self.f_at(sys, t0 + h0, Which::Y);
        for i in 0..n {
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
        for i in 0..n {
            self.d[n + i] = self.h * self.tmp[i];
        }
        self.order = 1;
        self.n_equal = 0;
        self.c_lu = f64::NAN;
        self.crate_ = 1.0;
        self.started = true;
        self.stats.starts += 1;
    }

    /// Whether `x` at `t0` is (to well within the tolerances) the current solution.
    fn continues(&mut self, t0: f64, x: &[f64]) -> bool {
        if !self.started || t0 < self.t_back || t0 > self.t {
            return false;
        }
        if t0 == self.out_t && x == self.out_x.as_slice() {
            return true;
        }
        let mut p = std::mem::take(&mut self.tmp);
        self.interp(t0, &mut p);
        let ok = x
            .iter()
            .zip(&p)
            .zip(&self.atol)
            .all(|((a, b), at)| (a - b).abs() <= 1e-3 * (at + self.rtol * a.abs()));
        self.tmp = p;
        ok
    }

    /// Advance `y` (length `dim`) of `sys` from `t0` to `t1`, continuing the current step
    /// history when `(t0, y)` is the last output (or the interpolated solution at `t0`).
    ///
    /// Errors: [`BdfError`] for step-size underflow, more than `max_steps` steps, a
    /// non-finite result, the deadline passed, or inconsistent sizes ([`BdfError::Setup`],
    /// also when `x` is not of length `dim`).
    pub fn integrate<S: BdfSystem>(
        &mut self,
        sys: &mut S,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), BdfError> {
        if let Some(why) = &self.invalid {
            return Err(BdfError::Setup(why.clone()));
        }
        if x.len() != self.dim {
            return Err(BdfError::Setup(format!(
                "state of length {} for {} components",
                x.len(),
                self.dim
            )));
        }
        if self.dim == 0 || t1 <= t0 {
            return Ok(());
        }
        if !self.continues(t0, x) {
            self.start(sys, t0, x, t1);
        }
        let mut guard = 0u64;
        while self.t < t1 {
            guard += 1;
            if guard.is_multiple_of(8) {
                if let Some(d) = self.deadline {
                    if std::time::Instant::now() > d {
                        return Err(BdfError::TimeLimit);
                    }
                }
            }
            if guard > self.max_steps {
                return Err(BdfError::TooManySteps {
                    context: self.context,
                    max_steps: self.max_steps,
                    t0,
                    t1,
                });
            }
            self.step(sys)?;
        }
        self.interp(t1, x);
        self.out_t = t1;
        self.out_x.copy_from_slice(x);
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(BdfError::NonFinite {
                context: self.context,
                name: sys.name(i),
                t: t1,
            });
        }
        Ok(())
    }

    /// Solve the block-diagonal Newton system in place in `self.dy`.
    fn solve_blocks(&mut self) {
        if self.n == self.dim {
            self.lu.solve(&mut self.dy);
        } else {
            for b in self.dy.chunks_exact_mut(self.n) {
                self.lu.solve(b);
            }
        }
    }

    /// Modified Newton iteration for the corrector; `self.f` holds F(t_new, y_pred) on entry.
    /// Returns (converged, iterations).
    fn newton<S: BdfSystem>(&mut self, sys: &mut S, t_new: f64, c: f64) -> (bool, usize) {
        self.y.copy_from_slice(&self.y_pred);
        self.corr.iter_mut().for_each(|v| *v = 0.0);
        // CVODE's test: the iteration error must stay below 10 % of the local error test.
        let tol = 0.1 / error_const(self.order);
        let scale_corr = 2.0 / (1.0 + c / self.c_lu);
        let mut del_prev = 0.0;
        for it in 0..NEWTON_MAXITER {
            if it > 0 {
                self.f_at(sys, t_new, Which::Y);
            }
            if let Some(i) = self.f.iter().position(|v| !v.is_finite()) {
                self.nonfinite = Some(i);
                return (false, it + 1);
            }
            for (((dy, f), ps), co) in self
                .dy
                .iter_mut()
                .zip(&self.f)
                .zip(&self.psi)
                .zip(&self.corr)
            {
                *dy = c * f - ps - co;
            }
            self.solve_blocks();
            if scale_corr != 1.0 {
                self.dy.iter_mut().for_each(|v| *v *= scale_corr);
            }
            let del = rms(&self.dy, &self.scale);
            if !del.is_finite() {
                return (false, it + 1);
            }
            for ((y, co), dy) in self.y.iter_mut().zip(self.corr.iter_mut()).zip(&self.dy) {
                *y += dy;
                *co += dy;
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

    fn step<S: BdfSystem>(&mut self, sys: &mut S) -> Result<(), BdfError> {
        let n = self.dim;
        let ne = self.err_len;
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
                return Err(BdfError::StepUnderflow {
                    context: self.context,
                    t: self.t,
                    nonfinite: self.nonfinite.map(|i| sys.name(i)),
                });
            }
            let k = self.order;
            let t_new = self.t + self.h;
            self.y_pred.copy_from_slice(&self.d[..n]);
            self.psi.iter_mut().for_each(|v| *v = 0.0);
            let ak = alpha(k);
            for j in 1..=k {
                let row = &self.d[j * n..(j + 1) * n];
                let g = gamma(j) / ak;
                for ((yp, ps), dj) in self.y_pred.iter_mut().zip(self.psi.iter_mut()).zip(row) {
                    *yp += dj;
                    *ps += g * dj;
                }
            }
            for ((sc, yp), at) in self.scale.iter_mut().zip(&self.y_pred).zip(&self.atol) {
                *sc = at + self.rtol * yp.abs();
            }
            let c = self.h / ak;
            let mut converged = false;
            let mut iters = 0;
            loop {
                self.f_at(sys, t_new, Which::Pred);
                if !jac_this_step && (self.jac_age >= MAX_JAC_AGE || !self.have_jac) {
                    sys.jacobian(t_new, &self.y_pred, &self.f, &mut self.jac);
                    self.stats.jacobians += 1;
                    self.jac_age = 0;
                    self.have_jac = true;
                    jac_this_step = true;
                    self.c_lu = f64::NAN;
                }
                if !(self.c_lu.is_finite() && ((c / self.c_lu) - 1.0).abs() <= 0.3) {
                    self.stats.factorizations += 1;
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
                self.stats.newton_fails += 1;
                if jac_this_step {
                    break;
                }
                // Stale Jacobian: re-evaluate it and retry the same step.
                self.jac_age = MAX_JAC_AGE;
            }
            if !converged {
                self.stats.rejected += 1;
                self.h *= 0.25;
                self.change_d(0.25);
                self.n_equal = 0;
                self.c_lu = f64::NAN;
                continue;
            }
            let safety =
                0.9 * (2 * NEWTON_MAXITER + 1) as f64 / (2 * NEWTON_MAXITER + iters) as f64;
            for i in 0..n {
                self.scale[i] = self.atol[i] + self.rtol * self.y[i].abs();
            }
            let ek = error_const(k);
            let err = ek * rms(&self.corr[..ne], &self.scale[..ne]);
            if err > 1.0 || !err.is_finite() {
                self.stats.rejected += 1;
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
            // Accept.
            self.nonfinite = None;
            if std::env::var_os("MEDTWIN_BDF_TRACE").is_some() {
                eprintln!(
                    "step t={t_new:.6e} h={:.3e} k={k} it={iters} err={err:.2e}",
                    self.h
                );
            }
            self.stats.steps += 1;
            self.jac_age = self.jac_age.saturating_add(1);
            self.t_back = self.t;
            self.t = t_new;
            self.n_equal += 1;
            // Update the differences.
            {
                let (d1, d2) = self.d[(k + 1) * n..(k + 3) * n].split_at_mut(n);
                for ((a1, a2), &c) in d1.iter_mut().zip(d2.iter_mut()).zip(&self.corr) {
                    *a2 = c - *a1;
                    *a1 = c;
                }
            }
            for j in (0..=k).rev() {
                let (lo, hi) = self.d[j * n..(j + 2) * n].split_at_mut(n);
                for (a, b) in lo.iter_mut().zip(hi.iter()) {
                    *a += b;
                }
            }
            if self.n_equal < k + 1 {
                return Ok(());
            }
            let err_m = if k > 1 {
                error_const(k - 1) * rms(&self.d[k * n..k * n + ne], &self.scale[..ne])
            } else {
                f64::INFINITY
            };
            let err_p = if k < MAX_ORDER {
                error_const(k + 1) * rms(&self.d[(k + 2) * n..(k + 2) * n + ne], &self.scale[..ne])
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
                // Not worth a new factorisation: keep step and order (CVODE's threshold).
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

#[derive(Clone, Copy)]
enum Which {
    Pred,
    Y,
    D0,
}

/// Shampine & Reichelt's matrix R(order, factor): `R = cumprod(M)` over rows with
/// `M[0][j] = 1`, `M[i][j] = (i − 1 − factor·j) / i` (i, j ≥ 1).
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

/// Robertson's stiff kinetics as a [`BdfSystem`] with a finite-difference Jacobian over the
/// full pattern (shared by the tests of this module and of [`crate::rosenbrock`]).
#[cfg(test)]
pub(crate) mod robertson {
    use super::BdfSystem;
    use crate::sparse::{SparseJacobian, SparseLu};

    /// y1' = −0.04 y1 + 1e4 y2 y3, y2' = 0.04 y1 − 1e4 y2 y3 − 3e7 y2², y3' = 3e7 y2²
    /// (Robertson 1966; Hairer & Wanner, Solving ODEs II, §IV.1).
    pub(crate) struct Robertson {
        pub(crate) floor: Vec<f64>,
    }

    fn f(y: &[f64], out: &mut [f64]) {
        out[0] = -0.04 * y[0] + 1e4 * y[1] * y[2];
        out[1] = 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] * y[1];
        out[2] = 3e7 * y[1] * y[1];
    }

    impl BdfSystem for Robertson {
        fn rhs(&mut self, _t: f64, y: &[f64], out: &mut [f64]) {
            f(y, out);
        }
        fn jacobian(&mut self, t: f64, y: &[f64], fy: &[f64], jac: &mut SparseJacobian) {
            let mut rhs = |_t: f64, y: &[f64], out: &mut [f64]| f(y, out);
            jac.eval_fd(t, y, fy, &self.floor, &mut rhs);
        }
        fn name(&self, i: usize) -> String {
            format!("y{}", i + 1)
        }
    }

    /// Dense pattern and its LU.
    pub(crate) fn structures() -> (SparseJacobian, SparseLu) {
        let jac = SparseJacobian::new(3, None).unwrap();
        let lu = SparseLu::new(&jac);
        (jac, lu)
    }

    /// Reference at t = 40 (RADAU5 at tolerance 1e-14, Hairer & Wanner's test set).
    pub(crate) const AT_40: [f64; 3] = [0.7158270687193, 9.185534764e-6, 0.2841637457];
}

#[cfg(test)]
mod tests {
    use super::robertson::{structures, Robertson, AT_40};
    use super::{Bdf, BdfError};

    #[test]
    fn robertson_with_finite_difference_jacobian_matches_reference() {
        let (jac, lu) = structures();
        let mut b = Bdf::new(3, 3, 1e-8, vec![1e-14; 3], 40.0, jac, lu);
        let mut sys = Robertson {
            floor: vec![1e-6; 3],
        };
        let mut y = [1.0, 0.0, 0.0];
        // Two calls: the second continues the step history from the first's output.
        b.integrate(&mut sys, 0.0, 10.0, &mut y).unwrap();
        b.integrate(&mut sys, 10.0, 40.0, &mut y).unwrap();
        for (k, w) in AT_40.iter().enumerate() {
            assert!((y[k] - w).abs() <= 2e-6 * w.abs(), "{y:?}");
        }
        assert!(b.stats.jacobians > 0 && b.jacobian().fd_evals > 0);
        assert!(b.stats.steps < 2000, "{:?}", b.stats);
    }

    #[test]
    fn inconsistent_sizes_and_step_budget_are_errors() {
        let (jac, lu) = structures();
        let mut sys = Robertson {
            floor: vec![1e-6; 3],
        };
        let mut b = Bdf::new(3, 3, 1e-8, vec![1e-14; 2], 40.0, jac.clone(), lu.clone());
        let e = b.integrate(&mut sys, 0.0, 1.0, &mut [1.0, 0.0, 0.0]);
        assert!(matches!(e, Err(BdfError::Setup(_))), "{e:?}");
        let mut b = Bdf::new(3, 3, 1e-8, vec![1e-14; 3], 40.0, jac, lu);
        let e = b.integrate(&mut sys, 0.0, 1.0, &mut [1.0, 0.0]);
        assert!(matches!(e, Err(BdfError::Setup(_))), "{e:?}");
        b.max_steps = 3;
        b.context = "test: ";
        let e = b
            .integrate(&mut sys, 0.0, 40.0, &mut [1.0, 0.0, 0.0])
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("test: more than 3 BDF steps between t = 0 and 40"),
            "{e}"
        );
    }

    #[test]
    fn compute_r_identity_for_factor_one() {
        // R(k, 1)·U(k, 1) with U = R(k, 1) is the identity (U² = I), so the differences are
        // unchanged when the step size is not.
        for k in 1..=super::MAX_ORDER {
            let r = super::compute_r(k, 1.0);
            for a in 0..=k {
                for b in 0..=k {
                    let v: f64 = (0..=k).map(|l| r[a][l] * r[l][b]).sum();
                    let want = if a == b { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 1e-12, "k {k}: ({a},{b}) = {v}");
                }
            }
        }
    }
}
