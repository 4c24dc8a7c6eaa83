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
//! The Jacobian is analytic (sparse forward differentiation of the compiled right-hand side,
//! `ad.rs`) where every construct can be differentiated, otherwise column-grouped finite
//! differences over the structural sparsity pattern (also forced by the environment variable
//! `MEDTWIN_SBML_FD_JACOBIAN`); the linear algebra is the sparse LU of `sparse.rs`.
//!
//! Output between steps interpolates the difference polynomial (the solver's own dense
//! output); the integrator steps past the requested end point and is continued by the next
//! call when that starts from the returned state.
//!
//! The stepper integrates any [`BdfSystem`]: the model's own right-hand side
//! ([`Bdf::new`], [`Bdf::integrate`]), or the model with its forward sensitivities
//! (`sens.rs`: `dim = n·(1 + parameters)` in blocks of `n`, the Newton matrix block-diagonal
//! with one LU of `I − c·J`, the error test over a leading part of the components).

#![allow(clippy::needless_range_loop)] // index loops over small coefficient tables

use crate::ad::AnalyticJac;
use crate::model::SbmlModel;
use crate::sparse::{Jacobian, SparseLu};
use crate::SbmlError;

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

/// What the BDF needs to know about a model's structure: the Jacobian pattern, the sparse LU's
/// ordering and symbolic factorisation, and the analytic Jacobian program (None: finite
/// differences). Built once per model ([`crate::model::SbmlModel`] caches it).
#[derive(Debug, Clone)]
pub(crate) struct StiffStructures {
    jac: Jacobian,
    lu: SparseLu,
    ad: Option<AnalyticJac>,
}

impl StiffStructures {
    /// Build and cache the structures of `m` (no-op when already cached).
    pub(crate) fn prepare(m: &SbmlModel) {
        m.stiff_cache.get_or_init(|| StiffStructures::new(m));
    }

    /// Copies of the cached structures (built on first use).
    pub(crate) fn parts(m: &SbmlModel) -> (Jacobian, SparseLu, Option<AnalyticJac>) {
        let s = m.stiff_cache.get_or_init(|| StiffStructures::new(m));
        (s.jac.clone(), s.lu.clone(), s.ad.clone())
    }

    fn new(m: &SbmlModel) -> Self {
        let jac = crate::sparse::model_pattern(m);
        let lu = SparseLu::new(&jac);
        let ad = AnalyticJac::new(m, &jac);
        StiffStructures { jac, lu, ad }
    }
}

/// Gershgorin bound of the Jacobian's spectral radius at (t, x) (max over rows of Σ|J_ij|,
/// from the analytic or finite-difference sparse Jacobian): an explicit method needs steps
/// below about 3.3 / this for stability. `weights` are the states' absolute-tolerance weights
/// ([`SbmlModel::atol_weights`]): finite-difference increments scale with them.
pub(crate) fn stiffness_bound(m: &SbmlModel, t: f64, x: &[f64], weights: &[f64]) -> f64 {
    let n = x.len();
    if n == 0 {
        return 0.0;
    }
    StiffStructures::prepare(m);
    let Some(st) = m.stiff_cache.get() else {
        return 0.0;
    };
    let mut jac = st.jac.clone();
    match st.ad.clone() {
        Some(mut ad) => ad.eval(m, t, x, &mut jac),
        None => {
            let (mut vals, mut stack) = (Vec::new(), Vec::new());
            let mut f0 = vec![0.0; n];
            m.fill(t, x, &mut vals, &mut stack);
            m.derivs_from(t, &vals, &mut f0, &mut stack);
            let mut rhs = |t: f64, y: &[f64], out: &mut [f64]| {
                m.fill(t, y, &mut vals, &mut stack);
                m.derivs_from(t, &vals, out, &mut stack);
            };
            let floor: Vec<f64> = weights.iter().map(|w| 1e-6 * w).collect();
            jac.eval_fd(t, x, &f0, &floor, &mut rhs);
        }
    }
    let mut best = 0.0f64;
    for i in 0..n {
        let s: f64 = jac.val[jac.ptr[i]..jac.ptr[i + 1]]
            .iter()
            .map(|v| v.abs())
            .sum();
        if s.is_finite() {
            best = best.max(s);
        }
    }
    best
}

/// Solver statistics (for benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BdfStats {
    pub rhs: u64,
    pub steps: u64,
    pub rejected: u64,
    pub newton_fails: u64,
    pub jacobians: u64,
    pub factorizations: u64,
}

/// What a [`Bdf`] integrates: `y' = F(t, y)` with `y` of dimension `dim` made of `dim / n`
/// blocks of length `n`, the first block being the model's states `x`. The Newton matrix is
/// taken block-diagonal, one copy of `I − c·J` per block with `J = ∂f/∂x` the `n × n` state
/// Jacobian: exact for the model alone (one block), the simultaneous-corrector approximation
/// (Maly & Petzold 1996) for states plus forward sensitivities (`sens.rs`).
pub(crate) trait BdfSystem {
    /// `F(t, y)` into `out` (both of length `dim`).
    fn rhs(&mut self, t: f64, y: &[f64], out: &mut [f64]);
    /// `J = ∂f/∂x` at `(t, y[..n])` into `jac`; `f` holds `F(t, y)` (its first `n` entries
    /// are the state derivatives, the base point of finite differences).
    fn jacobian(&mut self, t: f64, y: &[f64], f: &[f64], jac: &mut Jacobian);
    /// Name of component `i` of `y` (for error messages).
    fn name(&self, i: usize) -> String;
}

/// The model's own right-hand side (one block): [`Bdf::integrate`].
struct ModelRhs<'a> {
    m: &'a SbmlModel,
    bufs: &'a mut ModelBufs,
}

/// Buffers and Jacobian program of [`ModelRhs`], owned by the plain [`Bdf`].
#[derive(Default)]
struct ModelBufs {
    /// Analytic Jacobian program (None: finite differences).
    ad: Option<AnalyticJac>,
    /// Finite-difference increment floor per state (`atol / rtol`).
    fd_floor: Vec<f64>,
    vals: Vec<f64>,
    stack: Vec<f64>,
}

fn model_rhs(
    m: &SbmlModel,
    vals: &mut Vec<f64>,
    stack: &mut Vec<f64>,
    t: f64,
    y: &[f64],
    dy: &mut [f64],
) {
    m.fill_private(t, y, vals, stack);
    m.derivs_from(t, vals, dy, stack);
}

impl BdfSystem for ModelRhs<'_> {
    fn rhs(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        model_rhs(self.m, &mut self.bufs.vals, &mut self.bufs.stack, t, y, out);
    }

    fn jacobian(&mut self, t: f64, y: &[f64], f: &[f64], jac: &mut Jacobian) {
        let m = self.m;
        let b = &mut *self.bufs;
        if let Some(ad) = b.ad.as_mut() {
            ad.eval(m, t, y, jac);
        } else {
            let (vals, stack) = (&mut b.vals, &mut b.stack);
            let mut rhs = |t: f64, y: &[f64], out: &mut [f64]| {
                model_rhs(m, vals, stack, t, y, out);
            };
            jac.eval_fd(t, y, f, &b.fd_floor, &mut rhs);
        }
    }

    fn name(&self, i: usize) -> String {
        self.m.slots[self.m.state_slots[i]].id.clone()
    }
}

/// BDF/NDF integrator state (see the module docs). [`Bdf::new`] + [`Bdf::integrate`]
/// integrate a model; [`Bdf::blocks`] + [`Bdf::integrate_system`] any [`BdfSystem`] (the
/// forward sensitivities of `sens.rs`).
pub(crate) struct Bdf {
    /// Block length (the states: order of the Jacobian and LU), full dimension (a multiple of
    /// `n`), and the length of the leading part of `y` in the local error test.
    n: usize,
    dim: usize,
    pub(crate) err_len: usize,
    /// Prefix of error messages (e.g. "sensitivities: ").
    pub(crate) context: &'static str,
    /// Steps allowed per `integrate` call.
    pub(crate) max_steps: u64,
    rtol: f64,
    /// Absolute tolerance per component (`atol` × [`SbmlModel::atol_weights`]).
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
    jac: Jacobian,
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
    /// The model's right-hand side buffers (plain integration only).
    model: ModelBufs,
    pub(crate) stats: BdfStats,
    /// Component whose derivative was last not finite in a Newton iteration of the current
    /// step (named when the step size underflows).
    nonfinite: Option<usize>,
    /// Give up (error) once this instant has passed.
    pub(crate) deadline: Option<std::time::Instant>,
}

fn rms(v: &[f64], scale: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let s: f64 = v.iter().zip(scale).map(|(a, s)| (a / s) * (a / s)).sum();
    (s / v.len() as f64).sqrt()
}

impl Bdf {
    /// Integrator for model `m` with relative tolerance `rtol`, absolute tolerances `atol` (one
    /// per state) and maximum step `h_max`.
    pub(crate) fn new(m: &SbmlModel, rtol: f64, atol: &[f64], h_max: f64) -> Self {
        let n = m.state_slots.len();
        let StiffStructures { jac, lu, mut ad } = m
            .stiff_cache
            .get_or_init(|| StiffStructures::new(m))
            .clone();
        if std::env::var_os("MEDTWIN_SBML_FD_JACOBIAN").is_some() {
            ad = None;
        }
        let mut b = Bdf::blocks(n, n, rtol, atol.to_vec(), h_max, jac, lu);
        b.model = ModelBufs {
            ad,
            fd_floor: atol.iter().map(|a| a / rtol.max(1e-300)).collect(),
            vals: Vec::new(),
            stack: Vec::new(),
        };
        b
    }

    /// Integrator for a [`BdfSystem`] of dimension `dim` in blocks of `n` (`dim` a multiple of
    /// `n`, `n ≥ 1` when `dim > 0`), with relative tolerance `rtol`, absolute tolerances
    /// `atol` (length `dim`), maximum step `h_max`, and the state Jacobian pattern `jac` and
    /// its LU `lu` (from [`StiffStructures::parts`]). Every component is error-tested until
    /// `err_len` is lowered.
    pub(crate) fn blocks(
        n: usize,
        dim: usize,
        rtol: f64,
        atol: Vec<f64>,
        h_max: f64,
        jac: Jacobian,
        lu: SparseLu,
    ) -> Self {
        debug_assert!(atol.len() == dim && (n == 0 || dim.is_multiple_of(n)));
        let v = || vec![0.0; dim];
        Bdf {
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
            model: ModelBufs::default(),
            stats: BdfStats::default(),
            nonfinite: None,
            deadline: None,
        }
    }

    /// Right-hand sides per finite-difference Jacobian (0 when the Jacobian is analytic), and
    /// the fill of the LU factors.
    pub(crate) fn structure(&self) -> (usize, usize) {
        let g = if self.model.ad.is_some() {
            0
        } else {
            self.jac.n_groups()
        };
        (g, self.lu.fill())
    }

    /// Forget the history (after a state jump): the next call restarts at order 1.
    pub(crate) fn reset(&mut self) {
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

    /// Advance the model state `x` from `t0` to `t1` (see the module docs on continuation).
    pub(crate) fn integrate(
        &mut self,
        m: &SbmlModel,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), SbmlError> {
        let mut bufs = std::mem::take(&mut self.model);
        let r = self.integrate_system(&mut ModelRhs { m, bufs: &mut bufs }, t0, t1, x);
        self.model = bufs;
        r
    }

    /// Advance `y` (length `dim`) of `sys` from `t0` to `t1`, continuing the current step
    /// history when `(t0, y)` is the last output (or the interpolated solution at `t0`).
    ///
    /// Errors: [`SbmlError::Simulation`] for step-size underflow, more than `max_steps`
    /// steps, a non-finite result or the deadline passed.
    pub(crate) fn integrate_system<S: BdfSystem>(
        &mut self,
        sys: &mut S,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), SbmlError> {
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
                        return Err(SbmlError::Simulation("time limit exceeded".into()));
                    }
                }
            }
            if guard > self.max_steps {
                return Err(SbmlError::Simulation(format!(
                    "{}more than {} BDF steps between t = {t0} and {t1}",
                    self.context, self.max_steps
                )));
            }
            self.step(sys)?;
        }
        self.interp(t1, x);
        self.out_t = t1;
        self.out_x.copy_from_slice(x);
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(SbmlError::Simulation(format!(
                "{}BDF: non-finite value in state '{}' at t = {t1}",
                self.context,
                sys.name(i)
            )));
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

    fn step<S: BdfSystem>(&mut self, sys: &mut S) -> Result<(), SbmlError> {
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
                let why = match self.nonfinite {
                    Some(i) => format!(
                        " (the derivative of '{}' is not finite near the solution)",
                        sys.name(i)
                    ),
                    None => String::new(),
                };
                return Err(SbmlError::Simulation(format!(
                    "{}BDF: step size underflow at t = {}{why}",
                    self.context, self.t
                )));
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

#[cfg(test)]
mod tests {
    use crate::{parse_sbml, simulate, Method, SimulateOptions};

    fn rate_rule_model(rules: &[(&str, f64, &str)]) -> String {
        let mut params = String::new();
        let mut rr = String::new();
        for (id, v, math) in rules {
            params.push_str(&format!(
                r#"<parameter id="{id}" value="{v}" constant="false"/>"#
            ));
            rr.push_str(&format!(
                r#"<rateRule variable="{id}"><math xmlns="http://www.w3.org/1998/Math/MathML">{math}</math></rateRule>"#
            ));
        }
        format!(
            r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="m"><listOfParameters>{params}</listOfParameters><listOfRules>{rr}</listOfRules></model></sbml>"#
        )
    }

    fn ci(x: &str) -> String {
        format!("<ci>{x}</ci>")
    }
    fn cn(v: f64) -> String {
        format!("<cn>{v:e}</cn>")
    }
    fn ap(op: &str, args: &[String]) -> String {
        format!("<apply><{op}/>{}</apply>", args.concat())
    }

    /// Robertson's stiff chemical kinetics (Robertson 1966; Hairer & Wanner, Solving ODEs II,
    /// §IV.1): y1' = −0.04 y1 + 1e4 y2 y3, y2' = 0.04 y1 − 1e4 y2 y3 − 3e7 y2²,
    /// y3' = 3e7 y2².
    fn robertson() -> String {
        let y2y3 = ap("times", &[cn(1e4), ci("y2"), ci("y3")]);
        let y1 = ap("times", &[cn(0.04), ci("y1")]);
        let y22 = ap("times", &[cn(3e7), ci("y2"), ci("y2")]);
        rate_rule_model(&[
            (
                "y1",
                1.0,
                &ap(
                    "plus",
                    &[ap("minus", std::slice::from_ref(&y1)), y2y3.clone()],
                ),
            ),
            (
                "y2",
                0.0,
                &ap("minus", &[ap("minus", &[y1.clone(), y2y3]), y22.clone()]),
            ),
            ("y3", 0.0, &y22),
        ])
    }

    #[test]
    fn robertson_matches_reference_values() {
        // Reference at t = 40 (Hairer & Wanner's test set, computed with RADAU5 at tolerance
        // 1e-14): y1 = 0.7158270687193, y2 = 9.185534764e-6, y3 = 0.2841637457.
        let m = parse_sbml(&robertson()).unwrap();
        let opts = SimulateOptions {
            end: 40.0,
            steps: 4,
            rtol: 1e-8,
            atol: 1e-14,
            method: Method::Stiff,
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        let last = t.rows.last().unwrap();
        let want = [0.7158270687193, 9.185534764e-6, 0.2841637457];
        for (k, w) in want.iter().enumerate() {
            let got = last[1 + k];
            assert!(
                (got - w).abs() <= 2e-6 * w.abs(),
                "y{}: {got} vs {w}",
                k + 1
            );
        }
        // Long run (to t = 4e5, where y2 ≈ 2e-8): mass is conserved and the solver copes.
        let opts = SimulateOptions {
            end: 4e5,
            steps: 10,
            rtol: 1e-6,
            atol: 1e-12,
            method: Method::Stiff,
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        for row in &t.rows {
            let s = row[1] + row[2] + row[3];
            assert!((s - 1.0).abs() < 1e-6, "{row:?}");
            assert!(row[2] >= -1e-12, "{row:?}");
        }
        let last = t.rows.last().unwrap();
        // Reference at t = 4e5 (libRoadRunner/CVODE at rtol 1e-12, atol 1e-20):
        // y1 = 4.938274521e-3, y2 = 1.984994e-8, y3 = 0.9950617056.
        assert!(
            (last[1] - 4.938274521e-3).abs() < 1e-4 * 4.938274521e-3,
            "{last:?}"
        );
        assert!(
            (last[2] - 1.984994e-8).abs() < 1e-4 * 1.984994e-8,
            "{last:?}"
        );
        assert!((last[3] - 0.9950617056).abs() < 1e-6, "{last:?}");
    }

    #[test]
    fn step_size_underflow_names_a_state_with_non_finite_derivative() {
        // x' = -1 from 1, y' = sqrt(x): no solution past t = 1 (sqrt of a negative).
        let m = parse_sbml(&rate_rule_model(&[
            ("x", 1.0, &cn(-1.0)),
            ("y", 0.0, &ap("root", &[ci("x")])),
        ]))
        .unwrap();
        let opts = SimulateOptions {
            end: 2.0,
            steps: 4,
            method: Method::Stiff,
            ..Default::default()
        };
        match simulate(&m, &opts) {
            Err(crate::SbmlError::Simulation(msg)) => assert!(
                msg.contains("underflow") && msg.contains("derivative of 'y' is not finite"),
                "{msg}"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn finite_difference_jacobian_path_matches_analytic_path() {
        // The fallback (finite-difference Jacobian) on Robertson to t = 40 agrees with the
        // reference as well, and the analytic path needs no right-hand sides for Jacobians.
        let m = parse_sbml(&robertson()).unwrap();
        let want = [0.7158270687193, 9.185534764e-6, 0.2841637457];
        for analytic in [true, false] {
            let mut b = super::Bdf::new(&m, 1e-8, &[1e-14; 3], 40.0);
            assert!(
                b.model.ad.is_some(),
                "Robertson's right-hand side is differentiable"
            );
            if !analytic {
                b.model.ad = None;
            }
            let mut x = m.initial_state();
            b.integrate(&m, 0.0, 40.0, &mut x).unwrap();
            for (k, w) in want.iter().enumerate() {
                assert!(
                    (x[k] - w).abs() <= 2e-6 * w.abs(),
                    "analytic {analytic}: {x:?}"
                );
            }
            assert!(b.stats.jacobians > 0);
            assert_eq!(b.jac.fd_evals == 0, analytic);
        }
    }

    #[test]
    fn bdf_tracks_smooth_and_stiff_components() {
        // y' = −y + 10 sin t, y(0) = 0: y = 5(sin t − cos t + e^{−t}); and a second,
        // stiff component z' = −1000 (z − cos t), z(0) = 1 (tracks cos t).
        let y = ap(
            "plus",
            &[
                ap("minus", &[ci("y")]),
                ap(
                    "times",
                    &[cn(10.0), ap("sin", &["<csymbol definitionURL=\"http://www.sbml.org/sbml/symbols/time\">t</csymbol>".to_string()])],
                ),
            ],
        );
        let z = ap(
            "times",
            &[
                cn(-1000.0),
                ap(
                    "minus",
                    &[ci("z"), ap("cos", &["<csymbol definitionURL=\"http://www.sbml.org/sbml/symbols/time\">t</csymbol>".to_string()])],
                ),
            ],
        );
        let m = parse_sbml(&rate_rule_model(&[("y", 0.0, &y), ("z", 1.0, &z)])).unwrap();
        for (rtol, bound) in [(1e-6, 2e-5), (1e-9, 2e-8)] {
            let opts = SimulateOptions {
                end: 10.0,
                steps: 50,
                rtol,
                atol: rtol * 1e-2,
                method: Method::Stiff,
                ..Default::default()
            };
            let t = simulate(&m, &opts).unwrap();
            for row in &t.rows {
                let s = row[0];
                let ye = 5.0 * (s.sin() - s.cos() + (-s).exp());
                // z = cos t + O(1/1000) lag: the exact solution of the linear equation.
                let (a, w) = (1000.0f64, 1.0f64);
                let ze = a * (a * s.cos() + w * s.sin()) / (a * a + w * w)
                    + (1.0 - a * a / (a * a + w * w)) * (-a * s).exp();
                assert!(
                    (row[1] - ye).abs() < bound * 10.0,
                    "rtol {rtol}: {row:?} y {ye}"
                );
                assert!(
                    (row[2] - ze).abs() < bound * 10.0,
                    "rtol {rtol}: {row:?} z {ze}"
                );
            }
        }
    }

    #[test]
    fn auto_switches_from_dopri5_on_mild_stiffness() {
        // y' = −50 (y − cos t), y(0) = 0, over [0, 150] with 10 outputs: the Jacobian bound ×
        // span is 7500 (below Auto's stiffness threshold), but DOPRI5's steps are limited by
        // stability to ≈ 0.066, i.e. hundreds per output interval, so Auto hands over to the
        // BDF; the result must still match y = k(k cos t + sin t)/(k² + 1) − k²/(k² + 1)·e^{−kt}.
        let time = "<csymbol definitionURL=\"http://www.sbml.org/sbml/symbols/time\">t</csymbol>";
        let y = ap(
            "times",
            &[
                cn(-50.0),
                ap("minus", &[ci("y"), ap("cos", &[time.to_string()])]),
            ],
        );
        let m = parse_sbml(&rate_rule_model(&[("y", 0.0, &y)])).unwrap();
        let opts = SimulateOptions {
            end: 150.0,
            steps: 10,
            rtol: 1e-8,
            atol: 1e-12,
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        let k = 50.0f64;
        for row in &t.rows {
            let s = row[0];
            let exact = k * (k * s.cos() + s.sin()) / (k * k + 1.0)
                - k * k / (k * k + 1.0) * (-k * s).exp();
            assert!((row[1] - exact).abs() < 1e-6, "{row:?} vs {exact}");
        }
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
