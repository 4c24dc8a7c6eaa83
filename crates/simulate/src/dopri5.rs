//! The adaptive Dormand–Prince 5(4) integrator ([`Dopri5`]); see the crate docs for the method
//! choice and references.

use crate::{state_name, Integrator, SolveError, SolverOptions, SolverStats, ToleranceError};
use medtwin_core::OdeModel;

// The Dormand–Prince 5(4) coefficients (one copy, in `rk_tableau.rs`).
use crate::rk_tableau::{
    A21, A31, A32, A41, A42, A43, A51, A52, A53, A54, A61, A62, A63, A64, A65, A71, A73, A74, A75,
    A76, C2, C3, C4, C5, D1, D3, D4, D5, D6, D7, E1, E3, E4, E5, E6, E7,
};

/// Adaptive Dormand–Prince 5(4) integrator with preallocated work space (no allocation per call).
///
/// The step size carries over from one call to the next; the first call uses Hairer's automatic
/// initial step guess.
#[derive(Debug, Clone)]
pub struct Dopri5 {
    opts: SolverOptions,
    // per-state absolute and relative tolerances: opts' values times the state's factor (1 unless
    // set by `set_tolerance_factors`)
    atol_i: Vec<f64>,
    rtol_i: Vec<f64>,
    k: [Vec<f64>; 7],
    y1: Vec<f64>,
    tmp: Vec<f64>,
    h: f64,
    stats: SolverStats,
    // Dense output of the last accepted step [dense_ta, dense_tb] (Hairer's contd5), computed
    // under inputs `dense_u`; `ys` is the step-end state and k[0] = f(dense_tb, ys) (FSAL).
    // `out_t`/`out_x` is what the last call returned: a call that continues from exactly there
    // with the same inputs reuses the step (interpolating, or stepping on from `dense_tb`).
    dense_valid: bool,
    dense_ta: f64,
    pub(crate) dense_tb: f64,
    rcont: [Vec<f64>; 5],
    ys: Vec<f64>,
    dense_u: Vec<f64>,
    out_t: f64,
    out_x: Vec<f64>,
}

impl Dopri5 {
    /// Work space for a model with `n_states` states.
    pub fn new(n_states: usize, opts: SolverOptions) -> Self {
        let v = || vec![0.0; n_states];
        Dopri5 {
            opts,
            atol_i: vec![opts.atol; n_states],
            rtol_i: vec![opts.rtol; n_states],
            k: [v(), v(), v(), v(), v(), v(), v()],
            y1: v(),
            tmp: v(),
            h: 0.0,
            stats: SolverStats::default(),
            dense_valid: false,
            dense_ta: f64::NAN,
            dense_tb: f64::NAN,
            rcont: [v(), v(), v(), v(), v()],
            ys: v(),
            dense_u: Vec::new(),
            out_t: f64::NAN,
            out_x: v(),
        }
    }

    /// The options in use.
    pub fn options(&self) -> SolverOptions {
        self.opts
    }

    /// Scale the tolerances state by state: state `i`'s error is measured against
    /// `factors[i]·(atol + rtol·|y_i|)` (one factor per state, each finite and > 0; all 1 is the
    /// default and changes nothing). For states whose accuracy matters less to the outputs than
    /// the common tolerance demands (e.g. a fast compartment whose local errors decay within
    /// minutes). Errors: wrong length or a factor that is not finite and positive; the
    /// tolerances are then unchanged.
    pub fn set_tolerance_factors(&mut self, factors: &[f64]) -> Result<(), ToleranceError> {
        if factors.len() != self.atol_i.len() {
            return Err(ToleranceError::Length {
                got: factors.len(),
                states: self.atol_i.len(),
            });
        }
        if let Some(i) = factors.iter().position(|f| !(f.is_finite() && *f > 0.0)) {
            return Err(ToleranceError::Factor {
                index: i,
                value: factors[i],
            });
        }
        for (i, f) in factors.iter().enumerate() {
            self.atol_i[i] = self.opts.atol * f;
            self.rtol_i[i] = self.opts.rtol * f;
        }
        Ok(())
    }

    #[allow(clippy::needless_range_loop)]
    fn initial_step<M: OdeModel + ?Sized>(
        &mut self,
        model: &M,
        t: f64,
        x: &[f64],
        u: &[f64],
        span: f64,
    ) -> f64 {
        // Hairer, Nørsett & Wanner II.4 "starting step size" algorithm.
        let n = x.len() as f64;
        let sc = |v: f64, o: &SolverOptions| o.atol + o.rtol * v.abs();
        let (mut d0, mut d1) = (0.0, 0.0);
        for i in 0..x.len() {
            let s = sc(x[i], &self.opts);
            d0 += (x[i] / s).powi(2);
            d1 += (self.k[0][i] / s).powi(2);
        }
        let (d0, d1) = ((d0 / n).sqrt(), (d1 / n).sqrt());
        let mut h0 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        };
        h0 = h0.min(span);
        for i in 0..x.len() {
            self.y1[i] = x[i] + h0 * self.k[0][i];
        }
        let (k0, rest) = self.k.split_at_mut(1);
        model.rhs(t + h0, &self.y1, u, &mut rest[0]);
        self.stats.rhs_evals += 1;
        let mut d2 = 0.0;
        for i in 0..x.len() {
            let s = sc(x[i], &self.opts);
            d2 += ((rest[0][i] - k0[0][i]) / s).powi(2);
        }
        let d2 = (d2 / n).sqrt() / h0;
        let h1 = if d1.max(d2) <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            (0.01 / d1.max(d2)).powf(0.2)
        };
        (100.0 * h0).min(h1).min(span)
    }
}

impl Dopri5 {
    /// Dense-output interpolation of the last accepted step at `t` (Hairer, Nørsett & Wanner,
    /// §II.6, DOPRI5's 4th-order continuous extension).
    fn interpolate(&self, t: f64, out: &mut [f64]) {
        let th = (t - self.dense_ta) / (self.dense_tb - self.dense_ta);
        let th1 = 1.0 - th;
        let n = out.len();
        let [r1, r2, r3, r4, r5] = &self.rcont;
        let (r1, r2, r3, r4, r5) = (&r1[..n], &r2[..n], &r3[..n], &r4[..n], &r5[..n]);
        for i in 0..n {
            out[i] = r1[i] + th * (r2[i] + th1 * (r3[i] + th * (r4[i] + th1 * r5[i])));
        }
    }

    /// One accepted or rejected DOPRI5 step from (t, ys) with k[0] = f(t, ys). Returns the
    /// error norm; on return y1 holds the 5th-order solution and k[6] = f(t+h, y1).
    #[allow(clippy::needless_range_loop)]
    fn try_step<M: OdeModel + ?Sized>(&mut self, model: &M, t: f64, h: f64, u: &[f64]) -> f64 {
        let n = self.ys.len();
        // Every slice re-cut to length n so that the loops below carry no bounds checks and
        // vectorise (the arithmetic, and so the result, is unchanged).
        let [k1, k2, k3, k4, k5, k6, k7] = &mut self.k;
        let (k1, k2, k3, k4, k5, k6, k7) = (
            &mut k1[..n],
            &mut k2[..n],
            &mut k3[..n],
            &mut k4[..n],
            &mut k5[..n],
            &mut k6[..n],
            &mut k7[..n],
        );
        let (x, y1, tmp) = (&self.ys[..n], &mut self.y1[..n], &mut self.tmp[..n]);
        for i in 0..n {
            y1[i] = x[i] + h * A21 * k1[i];
        }
        model.rhs(t + C2 * h, y1, u, k2);
        for i in 0..n {
            y1[i] = x[i] + h * (A31 * k1[i] + A32 * k2[i]);
        }
        model.rhs(t + C3 * h, y1, u, k3);
        for i in 0..n {
            y1[i] = x[i] + h * (A41 * k1[i] + A42 * k2[i] + A43 * k3[i]);
        }
        model.rhs(t + C4 * h, y1, u, k4);
        for i in 0..n {
            y1[i] = x[i] + h * (A51 * k1[i] + A52 * k2[i] + A53 * k3[i] + A54 * k4[i]);
        }
        model.rhs(t + C5 * h, y1, u, k5);
        for i in 0..n {
            y1[i] =
                x[i] + h * (A61 * k1[i] + A62 * k2[i] + A63 * k3[i] + A64 * k4[i] + A65 * k5[i]);
        }
        model.rhs(t + h, y1, u, k6);
        for i in 0..n {
            y1[i] =
                x[i] + h * (A71 * k1[i] + A73 * k3[i] + A74 * k4[i] + A75 * k5[i] + A76 * k6[i]);
        }
        model.rhs(t + h, y1, u, k7);
        for i in 0..n {
            tmp[i] =
                h * (E1 * k1[i] + E3 * k3[i] + E4 * k4[i] + E5 * k5[i] + E6 * k6[i] + E7 * k7[i]);
        }
        self.stats.rhs_evals += 6;
        let (atol, rtol) = (&self.atol_i[..n], &self.rtol_i[..n]);
        let mut s = 0.0;
        for i in 0..n {
            let sc = atol[i] + rtol[i] * x[i].abs().max(y1[i].abs());
            let r = tmp[i] / sc;
            s += r * r;
        }
        (s / n as f64).sqrt()
    }

    /// Accept the step just tried (from `t`, length `h`, ending at `t_end` = `t + h` up to
    /// rounding): store its dense output and move to its end.
    #[allow(clippy::needless_range_loop)]
    fn accept(&mut self, t: f64, h: f64, t_end: f64) {
        let n = self.ys.len();
        let [k1, _k2, k3, k4, k5, k6, k7] = &self.k;
        let (k1, k3, k4, k5, k6, k7) = (&k1[..n], &k3[..n], &k4[..n], &k5[..n], &k6[..n], &k7[..n]);
        let [r1, r2, r3, r4, r5] = &mut self.rcont;
        let (r1, r2, r3, r4, r5) = (
            &mut r1[..n],
            &mut r2[..n],
            &mut r3[..n],
            &mut r4[..n],
            &mut r5[..n],
        );
        let (ys, y1) = (&self.ys[..n], &self.y1[..n]);
        for i in 0..n {
            let ydiff = y1[i] - ys[i];
            let bspl = h * k1[i] - ydiff;
            r1[i] = ys[i];
            r2[i] = ydiff;
            r3[i] = bspl;
            r4[i] = ydiff - h * k7[i] - bspl;
            r5[i] =
                h * (D1 * k1[i] + D3 * k3[i] + D4 * k4[i] + D5 * k5[i] + D6 * k6[i] + D7 * k7[i]);
        }
        self.dense_ta = t;
        self.dense_tb = t_end;
        self.ys.copy_from_slice(&self.y1);
        let (first, rest) = self.k.split_at_mut(1);
        first[0].copy_from_slice(&rest[5]);
        self.stats.accepted += 1;
    }
}

impl Dopri5 {
    /// As [`Integrator::integrate`], but no step ends after `t_stop_min` (≥ `t1_min`; `f64::INFINITY`
    /// for no limit): pass the next time at which the inputs may change, and the step that
    /// reaches it ends exactly there instead of stepping past it and being discarded by the
    /// restart (SUNDIALS' `tstop`). A pure efficiency hint: the solution agrees with the
    /// unhinted one to within the tolerances, and a hint at which the inputs then do not change
    /// costs one shortened step. A step that would end within 1 % of a step short of `t_stop_min`
    /// is stretched to it (no slivers); a step shortened to reach it does not shrink later steps.
    /// Errors: see [`SolveError`]; a `t_stop_min` below `t1_min` is treated as `t1_min`.
    pub fn integrate_stop<M: OdeModel + ?Sized>(
        &mut self,
        model: &M,
        t0_min: f64,
        t1_min: f64,
        x: &mut [f64],
        u: &[f64],
        t_stop_min: f64,
    ) -> Result<(), SolveError> {
        let span = t1_min - t0_min;
        if span <= 0.0 {
            return Ok(());
        }
        // below t1 (or NaN): t1
        let t_stop = if t_stop_min >= t1_min {
            t_stop_min
        } else {
            t1_min
        };
        let continuing = self.dense_valid
            && self.out_t == t0_min
            && self.dense_ta <= t0_min
            && self.dense_u == u
            && self.out_x == x;
        if !continuing {
            self.ys.copy_from_slice(x);
            model.rhs(t0_min, x, u, &mut self.k[0]);
            self.stats.rhs_evals += 1;
            self.stats.restarts += 1;
            self.dense_ta = t0_min;
            self.dense_tb = t0_min;
            self.dense_u.clear();
            self.dense_u.extend_from_slice(u);
            if self.h <= 0.0 {
                self.h = self.initial_step(model, t0_min, x, u, span);
            }
        }
        self.dense_valid = false;
        let mut steps = 0usize;
        let h_min = 1e-10 * span.max(1.0);
        while self.dense_tb < t1_min {
            if steps >= self.opts.max_steps {
                return Err(SolveError::TooManySteps {
                    t0_min,
                    t1_min,
                    max_steps: self.opts.max_steps,
                });
            }
            steps += 1;
            let t = self.dense_tb;
            let h_free = self.h.min(self.opts.h_max_min);
            // Reach t_stop exactly (its own value, not t + h rounded) when the step would pass
            // it or end within 1 % of a step short of it.
            let (h, t_end) = if t + 1.01 * h_free >= t_stop {
                (t_stop - t, t_stop)
            } else {
                (h_free, t + h_free)
            };
            if h < h_min {
                return Err(SolveError::StepTooSmall { t_min: t, h_min: h });
            }
            let err = self.try_step(model, t, h, u);
            if !err.is_finite() {
                if let Some(i) = self.ys.iter().position(|v| !v.is_finite()) {
                    return Err(SolveError::NonFinite {
                        state: state_name(model, i),
                        t_min: t,
                    });
                }
                self.stats.rejected += 1;
                self.h = h * 0.1;
                continue;
            }
            if err <= 1.0 {
                self.accept(t, h, t_end);
                let fac = (0.9 * inv_fifth_root(err)).clamp(0.2, 10.0);
                // a step cut short to reach t_stop says nothing against the longer one planned
                self.h = (h * fac).max(if h < h_free { h_free } else { 0.0 });
                self.h = self.h.min(self.opts.h_max_min);
            } else {
                self.stats.rejected += 1;
                self.h = h * (0.9 * inv_fifth_root(err)).clamp(0.2, 1.0);
            }
        }
        if self.dense_tb == t1_min {
            x.copy_from_slice(&self.ys);
        } else {
            self.interpolate(t1_min, x);
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(SolveError::NonFinite {
                state: state_name(model, i),
                t_min: t1_min,
            });
        }
        self.dense_valid = true;
        self.out_t = t1_min;
        self.out_x.copy_from_slice(x);
        Ok(())
    }
}

impl Integrator for Dopri5 {
    /// Steps are not clipped at `t1_min`: the solution at `t1_min` comes from the dense output
    /// of the step covering it, and a following call that continues from exactly the returned
    /// state with the same inputs reuses that step (zero-order-hold inputs that stay constant
    /// over many intervals cost no restart). Any change of inputs or state restarts from the
    /// state given, exactly as a fresh integration would. See [`Dopri5::integrate_stop`] to end
    /// steps at a known input change.
    fn integrate<M: OdeModel + ?Sized>(
        &mut self,
        model: &M,
        t0_min: f64,
        t1_min: f64,
        x: &mut [f64],
        u: &[f64],
    ) -> Result<(), SolveError> {
        self.integrate_stop(model, t0_min, t1_min, x, u, f64::INFINITY)
    }

    fn reset(&mut self) {
        self.h = 0.0;
        self.dense_valid = false;
    }

    fn stats(&self) -> SolverStats {
        self.stats
    }
}

/// `x^(-1/5)` for the step-size factor `0.9·err^(-1/5)`, without libm's `pow` (6 % of a
/// UVA/Padova simulation): a bit-level first guess (the exponent divided by −5) refined by five
/// division-free Newton steps `y ← y·(6 − x·y⁵)/5` on `y⁻⁵ = x`; within 1e-14 relative of
/// `powf(-0.2)` on the range where the factor is not clamped. Outside it the clamps decide:
/// `x ≤ 5.9e-6` (incl. 0) gives a value ≥ 11.2 (factor clamped to 10), `x ≥ 1846` gives
/// ≤ 0.2/0.9 (clamped to 0.2); non-finite `x` never reaches here.
#[inline]
pub(crate) fn inv_fifth_root(x: f64) -> f64 {
    if x <= 5.9e-6 {
        return 12.5;
    }
    if x >= 1846.0 {
        return 0.2;
    }
    const ONE: i64 = 0x3FF0_0000_0000_0000;
    let mut y = f64::from_bits((ONE + (ONE - x.to_bits() as i64) / 5) as u64);
    for _ in 0..5 {
        let y2 = y * y;
        y *= (6.0 - x * (y2 * y2 * y)) * 0.2;
    }
    y
}
