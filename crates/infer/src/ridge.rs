//! Ridge regression with standardised features, an unpenalised intercept and exact
//! leave-one-out residuals (Hoerl & Kennard, Technometrics 12:55, 1970; the leave-one-out
//! identity `e₍₋ᵢ₎ = eᵢ / (1 − hᵢᵢ)` for linear smoothers: Hastie, Tibshirani & Friedman,
//! *The Elements of Statistical Learning*, 2nd ed., eq. 7.52), or exact leave-block-out
//! residuals for time-ordered rows whose targets overlap ([`RidgeFit::fit_blocked`]).
//!
//! Model-agnostic: the hybrid twin forecast learns glucose residuals with it, and any model's
//! data-driven correction can use it.

use crate::optim::invert_spd;

/// A fitted ridge regression `y ≈ b₀ + Σⱼ bⱼ (xⱼ − meanⱼ)/sdⱼ`.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeFit {
    /// Feature means, length p.
    pub mean: Vec<f64>,
    /// Feature standard deviations (1 for constant features), length p.
    pub sd: Vec<f64>,
    /// Intercept `b₀` (the mean of y).
    pub intercept: f64,
    /// Coefficients on standardised features, length p.
    pub coef: Vec<f64>,
    /// Exact leave-one-out residuals `yᵢ − ŷ₍₋ᵢ₎`, one per training row (same order); from
    /// [`RidgeFit::fit_blocked`], leave-block-out residuals (the row's whole block left out).
    pub loo_residuals: Vec<f64>,
}

impl RidgeFit {
    /// Fit on rows `x` (n × p, every row of length p) and targets `y` (length n) with penalty
    /// `lambda_per_row · n` on the squared standardised coefficients (the intercept is not
    /// penalised). `None` if n < p + 2, lengths disagree, any value is not finite, or the
    /// system is singular.
    pub fn fit(x: &[Vec<f64>], y: &[f64], lambda_per_row: f64) -> Option<RidgeFit> {
        Self::fit_blocked(x, y, lambda_per_row, 1)
    }

    /// [`RidgeFit::fit`] with **leave-block-out** residuals: rows are cut into consecutive
    /// blocks of `block` rows (the last may be shorter) and each row's residual is that of the
    /// fit without its whole block, `e₍₋B₎ = (I − H_BB)⁻¹ e_B` (exact for the fixed
    /// standardisation, as the leave-one-out identity; `block = 1` is leave-one-out). For
    /// time-ordered rows whose targets overlap in time (changes over a horizon longer than the
    /// row spacing) leave-one-out residuals are optimistic because a row's neighbours carry
    /// its outcome; leaving out blocks at least the overlap long removes most of that
    /// (h-block cross-validation: Burman, Chow & Nolan, Biometrika 81:351, 1994). Cost
    /// O(n·block²) beyond the fit. `None` as for [`RidgeFit::fit`], or if `block` is 0.
    pub fn fit_blocked(
        x: &[Vec<f64>],
        y: &[f64],
        lambda_per_row: f64,
        block: usize,
    ) -> Option<RidgeFit> {
        if block == 0 {
            return None;
        }
        let n = x.len();
        let p = x.first()?.len();
        if n != y.len() || n < p + 2 || x.iter().any(|r| r.len() != p) {
            return None;
        }
        if !y.iter().all(|v| v.is_finite()) || !x.iter().flatten().all(|v| v.is_finite()) {
            return None;
        }
        let nf = n as f64;
        let mean: Vec<f64> = (0..p)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / nf)
            .collect();
        let sd: Vec<f64> = (0..p)
            .map(|j| {
                let v = x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / nf;
                if v > 1e-18 {
                    v.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|r| (0..p).map(|j| (r[j] - mean[j]) / sd[j]).collect())
            .collect();
        let ym = y.iter().sum::<f64>() / nf;
        let lambda = lambda_per_row.max(0.0) * nf;
        let mut a = vec![0.0; p * p];
        let mut b = vec![0.0; p];
        for (r, yy) in z.iter().zip(y) {
            for i in 0..p {
                b[i] += r[i] * (yy - ym);
                for j in 0..=i {
                    a[i * p + j] += r[i] * r[j];
                }
            }
        }
        for i in 0..p {
            a[i * p + i] += lambda.max(1e-9 * nf);
            for j in 0..i {
                a[j * p + i] = a[i * p + j];
            }
        }
        let inv = invert_spd(&a, p)?;
        let coef: Vec<f64> = (0..p)
            .map(|i| (0..p).map(|j| inv[i * p + j] * b[j]).sum())
            .collect();
        // residuals of the full fit, then per block (I − H_BB)⁻¹ e_B with the hat matrix of
        // the centred design plus the intercept's 1/n
        let resid: Vec<f64> = z
            .iter()
            .zip(y)
            .map(|(r, yy)| yy - ym - (0..p).map(|j| coef[j] * r[j]).sum::<f64>())
            .collect();
        let w: Vec<Vec<f64>> = z
            .iter()
            .map(|r| {
                (0..p)
                    .map(|i| (0..p).map(|j| inv[i * p + j] * r[j]).sum())
                    .collect()
            })
            .collect();
        let mut loo_residuals = vec![0.0; n];
        for start in (0..n).step_by(block) {
            let end = (start + block).min(n);
            let m = end - start;
            let mut a = vec![0.0; m * m];
            for i in 0..m {
                for j in 0..m {
                    let h = 1.0 / nf
                        + (0..p)
                            .map(|k| z[start + i][k] * w[start + j][k])
                            .sum::<f64>();
                    a[i * m + j] = if i == j { 1.0 - h } else { -h };
                }
            }
            if m == 1 {
                loo_residuals[start] = resid[start] / a[0].max(1e-6);
                continue;
            }
            let ainv = invert_spd(&a, m)?;
            for i in 0..m {
                loo_residuals[start + i] = (0..m).map(|j| ainv[i * m + j] * resid[start + j]).sum();
            }
        }
        Some(RidgeFit {
            mean,
            sd,
            intercept: ym,
            coef,
            loo_residuals,
        })
    }

    /// Prediction for one feature row (length p).
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.intercept
            + x.iter()
                .zip(&self.mean)
                .zip(&self.sd)
                .zip(&self.coef)
                .map(|(((v, m), s), c)| c * (v - m) / s)
                .sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_linear_relation_and_exact_loo_residuals() {
        // y = 3 + 2 x0 - x1 + small deterministic noise
        let x: Vec<Vec<f64>> = (0..40)
            .map(|i| vec![i as f64 * 0.1, ((i * 7) % 11) as f64])
            .collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, r)| 3.0 + 2.0 * r[0] - r[1] + 0.01 * ((i % 3) as f64 - 1.0))
            .collect();
        let f = RidgeFit::fit(&x, &y, 1e-8).unwrap();
        assert!((f.predict(&[1.0, 2.0]) - 3.0).abs() < 0.02, "{f:?}");
        // LOO residual of row 5 equals the residual of a refit without row 5
        let k = 5;
        let (xs, ys): (Vec<_>, Vec<_>) = x
            .iter()
            .zip(&y)
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, (a, b))| (a.clone(), *b))
            .unzip();
        // same absolute penalty: lambda_per_row·n is matched by scaling
        let g = RidgeFit::fit(&xs, &ys, 1e-8 * 40.0 / 39.0).unwrap();
        let direct = y[k] - g.predict(&x[k]);
        // standardisation differs slightly without row k: allow a small tolerance
        assert!(
            (direct - f.loo_residuals[k]).abs() < 2e-3,
            "{direct} vs {}",
            f.loo_residuals[k]
        );
        // a strong penalty shrinks to the mean
        let s = RidgeFit::fit(&x, &y, 1e6).unwrap();
        let ym = y.iter().sum::<f64>() / y.len() as f64;
        assert!((s.predict(&[0.0, 0.0]) - ym).abs() < 0.01);
        assert!(RidgeFit::fit(&x[..3], &y[..3], 1.0).is_none());
    }

    #[test]
    fn leave_block_out_residuals_equal_refits_without_the_block() {
        let x: Vec<Vec<f64>> = (0..60)
            .map(|i| {
                vec![
                    (i as f64 * 0.37).sin(),
                    ((i * 7) % 11) as f64,
                    i as f64 * 0.05,
                ]
            })
            .collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, r)| 1.0 + r[0] - 0.5 * r[1] + 2.0 * r[2] + ((i * 13) % 7) as f64 * 0.3)
            .collect();
        let lam = 1e-6;
        let f = RidgeFit::fit_blocked(&x, &y, lam, 8).unwrap();
        let one = RidgeFit::fit_blocked(&x, &y, lam, 1).unwrap();
        assert_eq!(one, RidgeFit::fit(&x, &y, lam).unwrap());
        // block 2 = rows 16..24: refit without it, residuals of the left-out rows
        let keep = |i: &usize| !(16..24).contains(i);
        let xs: Vec<Vec<f64>> = (0..60).filter(keep).map(|i| x[i].clone()).collect();
        let ys: Vec<f64> = (0..60).filter(keep).map(|i| y[i]).collect();
        let g = RidgeFit::fit(&xs, &ys, lam * 60.0 / 52.0).unwrap();
        for i in 16..24 {
            let direct = y[i] - g.predict(&x[i]);
            assert!(
                (direct - f.loo_residuals[i]).abs() < 0.02 * (1.0 + direct.abs()),
                "row {i}: refit {direct} vs block formula {}",
                f.loo_residuals[i]
            );
        }
        assert_ne!(f.loo_residuals[20], one.loo_residuals[20]);
        assert!(RidgeFit::fit_blocked(&x, &y, lam, 0).is_none());
    }
}
