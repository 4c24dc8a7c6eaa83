//! The Dormand–Prince 5(4) tableau and its stage arithmetic, in one place: the coefficients
//! (Dormand & Prince 1980, J Comput Appl Math 6:19–26; Hairer, Nørsett & Wanner, *Solving
//! ODEs I*, §II.5 Table 5.2), one trial step (six new stages, the 5th-order solution and the
//! embedded error estimate), the coefficients of the 4th-order continuous extension (Hairer's
//! `contd5`) and its evaluation.
//!
//! Step-size control is the caller's: [`crate::dde::DdeDopri5`] (method of steps for delay
//! equations) uses these functions with its own controller. [`crate::Dopri5`] shares the coefficients but carries its
//! own copy of the same arithmetic (`dopri5.rs`, being optimised separately); its `try_step`,
//! `accept` and `interpolate` are [`dopri5_try_step`], [`dopri5_dense`] and
//! [`dense_eval`] term for term and can be replaced by them.
//!
//! The expressions are those of `dopri5.rs` (same terms, same order of summation, no fused
//! multiply–add) with one exception: the first stage is `x + h·(a21·k1)` (the delay stepper's
//! association, which this module must reproduce bit for bit), where `dopri5.rs` computes
//! `x + (h·a21)·k1`; `Dopri5` moved onto this module would differ from today's results in the
//! last bit of that stage, i.e. at rounding level. Terms with a zero coefficient (a72, e2, d2)
//! are left out; adding them (as the old delay stepper did) changes at most the sign of an
//! exact zero.

// Dormand–Prince 5(4) coefficients (Hairer, Nørsett & Wanner, Table II.5.2).
pub(crate) const C2: f64 = 1.0 / 5.0;
pub(crate) const C3: f64 = 3.0 / 10.0;
pub(crate) const C4: f64 = 4.0 / 5.0;
pub(crate) const C5: f64 = 8.0 / 9.0;
pub(crate) const A21: f64 = 1.0 / 5.0;
pub(crate) const A31: f64 = 3.0 / 40.0;
pub(crate) const A32: f64 = 9.0 / 40.0;
pub(crate) const A41: f64 = 44.0 / 45.0;
pub(crate) const A42: f64 = -56.0 / 15.0;
pub(crate) const A43: f64 = 32.0 / 9.0;
pub(crate) const A51: f64 = 19372.0 / 6561.0;
pub(crate) const A52: f64 = -25360.0 / 2187.0;
pub(crate) const A53: f64 = 64448.0 / 6561.0;
pub(crate) const A54: f64 = -212.0 / 729.0;
pub(crate) const A61: f64 = 9017.0 / 3168.0;
pub(crate) const A62: f64 = -355.0 / 33.0;
pub(crate) const A63: f64 = 46732.0 / 5247.0;
pub(crate) const A64: f64 = 49.0 / 176.0;
pub(crate) const A65: f64 = -5103.0 / 18656.0;
pub(crate) const A71: f64 = 35.0 / 384.0;
pub(crate) const A73: f64 = 500.0 / 1113.0;
pub(crate) const A74: f64 = 125.0 / 192.0;
pub(crate) const A75: f64 = -2187.0 / 6784.0;
pub(crate) const A76: f64 = 11.0 / 84.0;
pub(crate) const E1: f64 = 71.0 / 57600.0;
pub(crate) const E3: f64 = -71.0 / 16695.0;
pub(crate) const E4: f64 = 71.0 / 1920.0;
pub(crate) const E5: f64 = -17253.0 / 339200.0;
pub(crate) const E6: f64 = 22.0 / 525.0;
pub(crate) const E7: f64 = -1.0 / 40.0;
// Dense-output coefficients (Hairer's DOPRI5 `contd5`).
pub(crate) const D1: f64 = -12715105075.0 / 11282082432.0;
pub(crate) const D3: f64 = 87487479700.0 / 32700410799.0;
pub(crate) const D4: f64 = -10690763975.0 / 1880347072.0;
pub(crate) const D5: f64 = 701980252875.0 / 199316789632.0;
pub(crate) const D6: f64 = -1453857185.0 / 822651844.0;
pub(crate) const D7: f64 = 69997945.0 / 29380423.0;

/// One DOPRI5 trial step of length `h` from `(t, x)` with `k[0] = f(t, x)` on entry.
///
/// `f(t, y, dy)` evaluates the right-hand side (six calls). On return `k[1..7]` hold the
/// stages, `y1` the 5th-order solution at `t + h`, `k[6] = f(t + h, y1)` (FSAL) and `err[i]`
/// the embedded error estimate `h·Σ E_j k_j[i]` (state units). Every slice has the length of
/// `x` (`n`); longer buffers are cut to `n`. Panics only on a caller bug (a buffer shorter
/// than `n`).
#[allow(clippy::needless_range_loop)]
pub(crate) fn dopri5_try_step<F: FnMut(f64, &[f64], &mut [f64])>(
    f: &mut F,
    t: f64,
    h: f64,
    x: &[f64],
    k: &mut [Vec<f64>; 7],
    y1: &mut [f64],
    err: &mut [f64],
) {
    let n = x.len();
    // Every slice re-cut to length n so that the loops below carry no bounds checks and
    // vectorise (the arithmetic, and so the result, is unchanged).
    let [k1, k2, k3, k4, k5, k6, k7] = k;
    let (k1, k2, k3, k4, k5, k6, k7) = (
        &mut k1[..n],
        &mut k2[..n],
        &mut k3[..n],
        &mut k4[..n],
        &mut k5[..n],
        &mut k6[..n],
        &mut k7[..n],
    );
    let (y1, err) = (&mut y1[..n], &mut err[..n]);
    for i in 0..n {
        y1[i] = x[i] + h * (A21 * k1[i]);
    }
    f(t + C2 * h, y1, k2);
    for i in 0..n {
        y1[i] = x[i] + h * (A31 * k1[i] + A32 * k2[i]);
    }
    f(t + C3 * h, y1, k3);
    for i in 0..n {
        y1[i] = x[i] + h * (A41 * k1[i] + A42 * k2[i] + A43 * k3[i]);
    }
    f(t + C4 * h, y1, k4);
    for i in 0..n {
        y1[i] = x[i] + h * (A51 * k1[i] + A52 * k2[i] + A53 * k3[i] + A54 * k4[i]);
    }
    f(t + C5 * h, y1, k5);
    for i in 0..n {
        y1[i] = x[i] + h * (A61 * k1[i] + A62 * k2[i] + A63 * k3[i] + A64 * k4[i] + A65 * k5[i]);
    }
    f(t + h, y1, k6);
    for i in 0..n {
        y1[i] = x[i] + h * (A71 * k1[i] + A73 * k3[i] + A74 * k4[i] + A75 * k5[i] + A76 * k6[i]);
    }
    f(t + h, y1, k7);
    for i in 0..n {
        err[i] = h * (E1 * k1[i] + E3 * k3[i] + E4 * k4[i] + E5 * k5[i] + E6 * k6[i] + E7 * k7[i]);
    }
}

/// The mixed error norm `sqrt(mean((err_i / (atol_i + rtol·max(|x_i|, |y1_i|)))²))` of a
/// trial step from `x` to `y1` with estimate `err` (all of length `n ≥ 1`, `atol` per state).
pub(crate) fn error_norm(err: &[f64], x: &[f64], y1: &[f64], atol: &[f64], rtol: f64) -> f64 {
    let n = x.len();
    let (err, y1, atol) = (&err[..n], &y1[..n], &atol[..n]);
    let mut s = 0.0;
    for i in 0..n {
        let sc = atol[i] + rtol * x[i].abs().max(y1[i].abs());
        let r = err[i] / sc;
        s += r * r;
    }
    (s / n as f64).sqrt()
}

/// Coefficients of the continuous extension of an accepted step of length `h` from `x` to
/// `y1` with stages `k` (as left by [`dopri5_try_step`]) into `r` (`5·n`: coefficient `j` of
/// state `i` at `r[j·n + i]`); evaluate with [`dense_eval`].
#[allow(clippy::needless_range_loop)]
pub(crate) fn dopri5_dense(h: f64, x: &[f64], y1: &[f64], k: &[Vec<f64>; 7], r: &mut [f64]) {
    let n = x.len();
    let [k1, _k2, k3, k4, k5, k6, k7] = k;
    let (k1, k3, k4, k5, k6, k7) = (&k1[..n], &k3[..n], &k4[..n], &k5[..n], &k6[..n], &k7[..n]);
    let y1 = &y1[..n];
    let (r1, rest) = r[..5 * n].split_at_mut(n);
    let (r2, rest) = rest.split_at_mut(n);
    let (r3, rest) = rest.split_at_mut(n);
    let (r4, r5) = rest.split_at_mut(n);
    for i in 0..n {
        let ydiff = y1[i] - x[i];
        let bspl = h * k1[i] - ydiff;
        r1[i] = x[i];
        r2[i] = ydiff;
        r3[i] = bspl;
        r4[i] = ydiff - h * k7[i] - bspl;
        r5[i] = h * (D1 * k1[i] + D3 * k3[i] + D4 * k4[i] + D5 * k5[i] + D6 * k6[i] + D7 * k7[i]);
    }
}

/// The continuous extension with coefficients `r` (`5·n`, from [`dopri5_dense`]) at the
/// fraction `th = (t − t_a)/(t_b − t_a)` of its step, into `out` (length `n`).
pub(crate) fn dense_eval(r: &[f64], th: f64, out: &mut [f64]) {
    let n = out.len();
    let th1 = 1.0 - th;
    let (r1, r2, r3, r4, r5) = (
        &r[..n],
        &r[n..2 * n],
        &r[2 * n..3 * n],
        &r[3 * n..4 * n],
        &r[4 * n..5 * n],
    );
    for (i, o) in out.iter_mut().enumerate() {
        *o = r1[i] + th * (r2[i] + th1 * (r3[i] + th * (r4[i] + th1 * r5[i])));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y' = y: one step of length h reproduces e^h to the method's order, the error estimate
    /// is of order h⁵, and the continuous extension meets both ends and e^{θh} in between.
    #[test]
    fn one_step_of_the_exponential() {
        let mut f = |_t: f64, y: &[f64], dy: &mut [f64]| dy[0] = y[0];
        let x = [1.0];
        let mut k: [Vec<f64>; 7] = std::array::from_fn(|_| vec![0.0]);
        k[0][0] = 1.0;
        let (mut y1, mut err, mut r) = ([0.0], [0.0], [0.0; 5]);
        let h = 0.1;
        dopri5_try_step(&mut f, 0.0, h, &x, &mut k, &mut y1, &mut err);
        let exact = h.exp();
        assert!((y1[0] - exact).abs() < 1e-9, "{} vs {exact}", y1[0]);
        assert!(err[0].abs() < 1e-7 && err[0] != 0.0, "{}", err[0]);
        assert_eq!(k[6][0], y1[0]);
        dopri5_dense(h, &x, &y1, &k, &mut r);
        let mut out = [0.0];
        dense_eval(&r, 0.0, &mut out);
        assert_eq!(out[0], 1.0);
        dense_eval(&r, 1.0, &mut out);
        assert_eq!(out[0], y1[0]);
        dense_eval(&r, 0.5, &mut out);
        assert!((out[0] - (0.5 * h).exp()).abs() < 1e-8, "{}", out[0]);
        let norm = error_norm(&err, &x, &y1, &[1e-12], 1e-6);
        assert!((norm - err[0].abs() / (1e-12 + 1e-6 * exact)).abs() < 1e-9 * norm);
    }
}
