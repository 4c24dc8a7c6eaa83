//! Maximum-a-posteriori fitting: Nelder–Mead minimisation and a Laplace approximation.
//!
//! Nelder & Mead, Computer Journal 7:308, 1965, with the standard coefficients (reflection 1,
//! expansion 2, contraction 0.5, shrink 0.5) and the adaptive initial simplex of step `step`.
//! Laplace: the negative log posterior's Hessian by central finite differences at the mode;
//! its inverse is the Gaussian posterior covariance (Tierney & Kadane 1986).

/// Result of a minimisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    /// Minimiser.
    pub x: Vec<f64>,
    /// Objective at `x`.
    pub f: f64,
    /// Objective evaluations used.
    pub evals: usize,
    /// Whether the simplex converged (spread of values < `ftol`) before the budget ran out.
    pub converged: bool,
}

/// Minimise `f` from `x0` with initial simplex steps `step` (one per coordinate).
/// Non-finite objective values are treated as +∞. Stops when the spread of the simplex values
/// is below `ftol` or after `max_evals` evaluations.
pub fn nelder_mead(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x0: &[f64],
    step: &[f64],
    ftol: f64,
    max_evals: usize,
) -> Minimum {
    let n = x0.len();
    let mut evals = 0;
    let mut eval = |x: &[f64], evals: &mut usize| {
        *evals += 1;
        let v = f(x);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let mut simplex: Vec<Vec<f64>> = vec![x0.to_vec()];
    for i in 0..n {
        let mut x = x0.to_vec();
        x[i] += step[i];
        simplex.push(x);
    }
    let mut fv: Vec<f64> = simplex.iter().map(|x| eval(x, &mut evals)).collect();
    let mut converged = false;
    while evals < max_evals {
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|&a, &b| fv[a].total_cmp(&fv[b]));
        simplex = order.iter().map(|&i| simplex[i].clone()).collect();
        fv = order.iter().map(|&i| fv[i]).collect();
        if (fv[n] - fv[0]).abs() < ftol {
            converged = true;
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|j| simplex[..n].iter().map(|x| x[j]).sum::<f64>() / n as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            (0..n)
                .map(|j| centroid[j] + t * (simplex[n][j] - centroid[j]))
                .collect()
        };
        let xr = along(-1.0);
        let fr = eval(&xr, &mut evals);
        if fr < fv[0] {
            let xe = along(-2.0);
            let fe = eval(&xe, &mut evals);
            if fe < fr {
                simplex[n] = xe;
                fv[n] = fe;
            } else {
                simplex[n] = xr;
                fv[n] = fr;
            }
        } else if fr < fv[n - 1] {
            simplex[n] = xr;
            fv[n] = fr;
        } else {
            let (xc, fc) = if fr < fv[n] {
                let x = along(-0.5);
                let v = eval(&x, &mut evals);
                (x, v)
            } else {
                let x = along(0.5);
                let v = eval(&x, &mut evals);
                (x, v)
            };
            if fc < fv[n].min(fr) {
                simplex[n] = xc;
                fv[n] = fc;
            } else {
                for i in 1..=n {
                    let xi: Vec<f64> = (0..n)
                        .map(|j| simplex[0][j] + 0.5 * (simplex[i][j] - simplex[0][j]))
                        .collect();
                    fv[i] = eval(&xi, &mut evals);
                    simplex[i] = xi;
                }
            }
        }
    }
    let best = (0..=n)
        .min_by(|&a, &b| fv[a].total_cmp(&fv[b]))
        .unwrap_or(0);
    Minimum {
        x: simplex[best].clone(),
        f: fv[best],
        evals,
        converged,
    }
}

/// Quasi-Newton minimisation of a smooth `f` from `x0` by BFGS with central finite-difference
/// gradients (step `h[i]` per coordinate) and a backtracking Armijo line search (Nocedal &
/// Wright, *Numerical Optimization*, 2nd ed., Algorithm 6.1 and 3.1). The inverse-Hessian update
/// is skipped when the curvature condition `sᵀy > 0` fails, and the approximation is reset to the
/// identity (scaled, eq. 6.20) when a line search fails; two consecutive failures end the run.
/// Stops when the largest gradient component is below `gtol` or the objective decreases by less
/// than `ftol` (relative) over an iteration, or after `max_evals` evaluations. No coordinate
/// moves by more than `max_step` per iteration (a trust bound, e.g. for log-scale parameters).
///
/// Non-finite objective values are treated as +∞ (the line search backs off from them).
pub fn bfgs(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x0: &[f64],
    h: &[f64],
    gtol: f64,
    ftol: f64,
    max_step: f64,
    max_evals: usize,
) -> Minimum {
    let n = x0.len();
    let mut evals = 0usize;
    let mut eval = |x: &[f64], evals: &mut usize| {
        *evals += 1;
        let v = f(x);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let grad = |x: &[f64], eval: &mut dyn FnMut(&[f64], &mut usize) -> f64, evals: &mut usize| {
        let mut g = vec![0.0; n];
        let mut xp = x.to_vec();
        for i in 0..n {
            xp[i] = x[i] + h[i];
            let fp = eval(&xp, evals);
            xp[i] = x[i] - h[i];
            let fm = eval(&xp, evals);
            xp[i] = x[i];
            g[i] = (fp - fm) / (2.0 * h[i]);
        }
        g
    };
    let mut x = x0.to_vec();
    let mut fx = eval(&x, &mut evals);
    let mut g = grad(&x, &mut eval, &mut evals);
    let mut hinv = identity(n);
    let mut converged = false;
    let mut failures = 0;
    while evals < max_evals {
        if !fx.is_finite() || g.iter().any(|v| !v.is_finite()) {
            break;
        }
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < gtol {
            converged = true;
            break;
        }
        let mut d: Vec<f64> = (0..n)
            .map(|i| -(0..n).map(|j| hinv[i * n + j] * g[j]).sum::<f64>())
            .collect();
        let mut slope: f64 = d.iter().zip(&g).map(|(a, b)| a * b).sum();
        if slope >= 0.0 {
            hinv = identity(n);
            d = g.iter().map(|v| -v).collect();
            slope = -g.iter().map(|v| v * v).sum::<f64>();
        }
        // Trust bound: no coordinate moves by more than `max_step` in one iteration.
        let longest = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mut t = if longest > max_step {
            max_step / longest
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..40 {
            let xt: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + t * b).collect();
            let ft = eval(&xt, &mut evals);
            if ft <= fx + 1e-4 * t * slope {
                accepted = Some((xt, ft));
                break;
            }
            t *= 0.5;
        }
        let Some((xn, fnew)) = accepted else {
            failures += 1;
            if failures >= 2 {
                break;
            }
            hinv = identity(n);
            continue;
        };
        failures = 0;
        let gn = grad(&xn, &mut eval, &mut evals);
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        let decrease = fx - fnew;
        if sy > 1e-12 * (s.iter().map(|v| v * v).sum::<f64>()).sqrt() {
            if hinv == identity(n) {
                let yy: f64 = y.iter().map(|v| v * v).sum();
                hinv.iter_mut().for_each(|v| *v *= sy / yy);
            }
            let hy: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| hinv[i * n + j] * y[j]).sum())
                .collect();
            let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    hinv[i * n + j] +=
                        (sy + yhy) * s[i] * s[j] / (sy * sy) - (hy[i] * s[j] + s[i] * hy[j]) / sy;
                }
            }
        }
        x = xn;
        fx = fnew;
        g = gn;
        if decrease.abs() < ftol * (1.0 + fx.abs()) {
            converged = true;
            break;
        }
    }
    Minimum {
        x,
        f: fx,
        evals,
        converged,
    }
}

fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0;
    }
    m
}

/// Laplace approximation at a mode `x` of the negative log posterior `f`: returns the
/// covariance (inverse Hessian, row-major `n×n`) or `None` if the Hessian is not positive
/// definite. `h` are the finite-difference steps.
pub fn laplace(f: &mut dyn FnMut(&[f64]) -> f64, x: &[f64], h: &[f64]) -> Option<Vec<f64>> {
    let n = x.len();
    let f0 = f(x);
    let mut hess = vec![0.0; n * n];
    let mut xp = x.to_vec();
    for i in 0..n {
        for j in i..n {
            let v = if i == j {
                xp[i] = x[i] + h[i];
                let fp = f(&xp);
                xp[i] = x[i] - h[i];
                let fm = f(&xp);
                xp[i] = x[i];
                (fp - 2.0 * f0 + fm) / (h[i] * h[i])
            } else {
                let mut e = |si: f64, sj: f64| {
                    xp[i] = x[i] + si * h[i];
                    xp[j] = x[j] + sj * h[j];
                    let v = f(&xp);
                    xp[i] = x[i];
                    xp[j] = x[j];
                    v
                };
                (e(1.0, 1.0) - e(1.0, -1.0) - e(-1.0, 1.0) + e(-1.0, -1.0)) / (4.0 * h[i] * h[j])
            };
            hess[i * n + j] = v;
            hess[j * n + i] = v;
        }
    }
    invert_spd(&hess, n)
}

/// Inverse of a symmetric positive-definite matrix (row-major) via Cholesky; `None` if not SPD
/// or not finite.
pub fn invert_spd(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, n)?;
    // inverse = L^-T L^-1
    let mut inv = vec![0.0; n * n];
    for col in 0..n {
        let mut e = vec![0.0; n];
        e[col] = 1.0;
        // forward: L y = e
        let mut y = vec![0.0; n];
        for i in 0..n {
            let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
            y[i] = (e[i] - s) / l[i * n + i];
        }
        // backward: L^T x = y
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
            x[i] = (y[i] - s) / l[i * n + i];
        }
        for i in 0..n {
            inv[i * n + col] = x[i];
        }
    }
    inv.iter().all(|v| v.is_finite()).then_some(inv)
}

/// Lower Cholesky factor (row-major) of an SPD matrix; `None` if not positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                if d.is_nan() || d <= 0.0 {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfgs_minimises_rosenbrock() {
        let mut f = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let m = bfgs(&mut f, &[-1.2, 1.0], &[1e-6, 1e-6], 1e-6, 0.0, 1.0, 20_000);
        assert!(
            (m.x[0] - 1.0).abs() < 1e-4 && (m.x[1] - 1.0).abs() < 1e-4,
            "{m:?}"
        );
        assert!(m.converged);
    }

    #[test]
    fn finds_rosenbrock_minimum_and_gaussian_covariance() {
        let mut rb = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let m = nelder_mead(&mut rb, &[-1.2, 1.0], &[0.5, 0.5], 1e-14, 5000);
        assert!(m.converged);
        assert!(
            (m.x[0] - 1.0).abs() < 1e-3 && (m.x[1] - 1.0).abs() < 1e-3,
            "{m:?}"
        );
        // Quadratic with known covariance [[2, 0.5],[0.5, 1]]
        let cov = [2.0, 0.5, 0.5, 1.0];
        let prec = invert_spd(&cov, 2).unwrap();
        let mut q = |x: &[f64]| {
            0.5 * (x[0] * (prec[0] * x[0] + prec[1] * x[1])
                + x[1] * (prec[2] * x[0] + prec[3] * x[1]))
        };
        let c = laplace(&mut q, &[0.0, 0.0], &[1e-3, 1e-3]).unwrap();
        for k in 0..4 {
            assert!((c[k] - cov[k]).abs() < 1e-5, "{c:?}");
        }
        let mut neg = |x: &[f64]| -(x[0] * x[0]);
        assert!(laplace(&mut neg, &[0.0], &[1e-3]).is_none());
    }
}
